#include "quant.h"

#include <math.h>

#include "err.h"

int64_t quant_q8_bytes(int64_t n, int64_t k) { return n * k; }
int64_t quant_q4_bytes(int64_t n, int64_t k) { return n * k / 2; }

static int quant_check(const float *w, int64_t n, int64_t k, const char *fmt) {
    if (n < 1 || k < 1 || k % QUANT_BLOCK != 0)
        return err_set(TV_EINVAL, "%s: weight [%lld, %lld] needs K a positive multiple of %d", fmt,
                       (long long)n, (long long)k, QUANT_BLOCK);
    for (int64_t i = 0; i < n * k; i++)
        if (!isfinite(w[i]))
            return err_set(TV_EINVAL, "%s: non-finite weight at row %lld, column %lld", fmt,
                           (long long)(i / k), (long long)(i % k));
    return TV_OK;
}

static float quant_amax(const float *x) {
    float m = 0;
    for (int j = 0; j < QUANT_BLOCK; j++) m = fmaxf(m, fabsf(x[j]));
    return m;
}

int quant_q8(const float *w, int64_t n, int64_t k, int8_t *q, float *scale) {
    int rc = quant_check(w, n, k, "q8");
    if (rc) return rc;
    for (int64_t b = 0; b < n * k / QUANT_BLOCK; b++) {
        const float *x = w + b * QUANT_BLOCK;
        float s = quant_amax(x) / 127.0f;
        float inv = s > 0 ? 1.0f / s : 0;
        scale[b] = s;
        for (int j = 0; j < QUANT_BLOCK; j++) {
            float v = roundf(x[j] * inv);   /* |v| <= 127 up to rounding of inv: clamp anyway */
            q[b * QUANT_BLOCK + j] = (int8_t)fminf(127.0f, fmaxf(-127.0f, v));
        }
    }
    return TV_OK;
}

int quant_q4(const float *w, int64_t n, int64_t k, uint8_t *q, float *scale) {
    int rc = quant_check(w, n, k, "q4");
    if (rc) return rc;
    for (int64_t b = 0; b < n * k / QUANT_BLOCK; b++) {
        const float *x = w + b * QUANT_BLOCK;
        float s = quant_amax(x) / 7.0f;
        float inv = s > 0 ? 1.0f / s : 0;
        scale[b] = s;
        uint8_t *out = q + b * (QUANT_BLOCK / 2);
        for (int j = 0; j < QUANT_BLOCK / 2; j++) {
            int lo = (int)fminf(7.0f, fmaxf(-7.0f, roundf(x[j] * inv)));
            int hi = (int)fminf(7.0f, fmaxf(-7.0f, roundf(x[j + 16] * inv)));
            out[j] = (uint8_t)((lo + 8) | ((hi + 8) << 4));
        }
    }
    return TV_OK;
}

void quant_dequant_q8_row(const int8_t *q, const float *scale, int64_t k, float *out) {
    for (int64_t i = 0; i < k; i++) out[i] = scale[i / QUANT_BLOCK] * (float)q[i];
}

void quant_dequant_q4_row(const uint8_t *q, const float *scale, int64_t k, float *out) {
    for (int64_t i = 0; i < k; i++) out[i] = scale[i / QUANT_BLOCK] * (float)quant_q4_get(q, i);
}
