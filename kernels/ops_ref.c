/* The plain-C reference kernels: the simplest correct code, written to be read and trusted,
 * not to be fast. Every other ISA (and later every other backend) is tested against these.
 * Reductions accumulate in double where that makes the reference more accurate than any
 * optimised version, so a comparison measures the optimised kernel's error. */
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "ops_cpu.h"
#include "quant.h"

/* W[j, kk] as f32, whatever its storage. */
static float ref_wget(const kern_weight *w, int64_t j, int64_t kk) {
    int64_t i = j * w->k + kk;
    switch (w->type) {
    case KERN_W_F32: return ((const float *)w->data)[i];
    case KERN_W_F16: return dtype_f16_to_f32(((const uint16_t *)w->data)[i]);
    case KERN_W_BF16: return dtype_bf16_to_f32(((const uint16_t *)w->data)[i]);
    case KERN_W_Q8: return w->scale[i / QUANT_BLOCK] * (float)((const int8_t *)w->data)[i];
    case KERN_W_Q4: {
        const uint8_t *row = (const uint8_t *)w->data + j * (w->k / 2);
        return w->scale[i / QUANT_BLOCK] * (float)quant_q4_get(row, kk);
    }
    }
    return 0;
}

static void ref_matmul_tile(const float *x, const kern_weight *w, const float *bias, float *y,
                            int64_t i0, int64_t i1, int64_t n0, int64_t n1, float *work) {
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = n0; j < n1; j++) {
            double acc = 0;
            for (int64_t kk = 0; kk < w->k; kk++)
                acc += (double)x[i * w->k + kk] * (double)ref_wget(w, j, kk);
            y[i * w->n + j] = (float)acc + (bias ? bias[j] : 0.0f);
        }
}

static void ref_layernorm_row(const float *x, float *y, int64_t n, const float *w,
                              const float *b, float eps) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= (double)n;
    double rstd = 1.0 / sqrt(var + eps);
    for (int64_t i = 0; i < n; i++) {
        double v = (x[i] - mean) * rstd;
        y[i] = (float)(v * (w ? w[i] : 1.0) + (b ? b[i] : 0.0));
    }
}

static void ref_rmsnorm_row(const float *x, float *y, int64_t n, const float *w, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (float)(x[i] * r * (w ? w[i] : 1.0));
}

/* x * Phi(x); for x < 0 through erfc so the tail keeps its relative precision (1 + erf(z)
 * cancels there). Same function as torch's, more accurate in the far negative tail. */
static void ref_gelu(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double v = x[i], z = v * 0.70710678118654752440;
        y[i] = (float)(v >= 0 ? 0.5 * v * (1.0 + erf(z)) : 0.5 * v * erfc(-z));
    }
}

/* 0.5 x (1 + tanh(u)) == x / (1 + exp(-2u)): the same function without cancellation. */
static void ref_gelu_tanh(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double v = x[i], u = 0.79788456080286535588 * (v + 0.044715 * v * v * v);
        y[i] = (float)(v / (1.0 + exp(-2.0 * u)));
    }
}

static void ref_softmax_row(const float *x, float *y, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = fmaxf(m, x[i]);
    if (m == -INFINITY) {   /* everything masked */
        memset(y, 0, (size_t)n * sizeof *y);
        return;
    }
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += exp((double)x[i] - m);
    for (int64_t i = 0; i < n; i++) y[i] = (float)(exp((double)x[i] - m) / sum);
}

static double ref_dot(const float *a, const float *b, int64_t d) {
    double s = 0;
    for (int64_t i = 0; i < d; i++) s += (double)a[i] * b[i];
    return s;
}

/* Three passes (max, then weights and sum), recomputing the scores: no scratch at all. */
static void ref_attn_row(const float *q, const float *k, int64_t ldk, const float *v,
                         int64_t ldv, int64_t nk, int64_t d, float scale, float *out) {
    double acc[KERN_MAX_HEAD_DIM] = {0}, m = -INFINITY, sum = 0;
    for (int64_t j = 0; j < nk; j++) m = fmax(m, scale * ref_dot(q, k + j * ldk, d));
    for (int64_t j = 0; j < nk; j++) {
        double p = exp(scale * ref_dot(q, k + j * ldk, d) - m);
        sum += p;
        for (int64_t i = 0; i < d; i++) acc[i] += p * v[j * ldv + i];
    }
    for (int64_t i = 0; i < d; i++) out[i] = nk ? (float)(acc[i] / sum) : 0.0f;
}

static void ref_add(const float *a, const float *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void ref_scale(const float *x, float s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = s * x[i];
}

const cpu_isa cpu_isa_ref = {
    .name = "ref", .matmul_tile = ref_matmul_tile, .layernorm_row = ref_layernorm_row,
    .rmsnorm_row = ref_rmsnorm_row, .gelu = ref_gelu, .gelu_tanh = ref_gelu_tanh,
    .softmax_row = ref_softmax_row, .attn_row = ref_attn_row, .add = ref_add,
    .scale = ref_scale,
};
