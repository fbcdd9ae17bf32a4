/* kernels: the op table. The plain-C reference is checked against closed forms and numbers
 * computed by torch; every SIMD kernel is checked against the reference at awkward sizes;
 * threaded results must equal single-threaded ones bitwise. */
#include <stdint.h>

#include "check.h"
#include "cpu_features.h"
#include "dtype.h"
#include "ops.h"
#include "pool.h"
#include "quant.h"

static kern_be *be_ref, *be_ref_mt, *be_simd, *be_simd_mt;   /* be_simd may be NULL */
static kern_be *be_strassen, *be_strassen_mt;   /* AVX2 with TINYVLM_STRASSEN=1 */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float rnd(void) {   /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (2.0 / 16777216.0) - 1.0);
}
static float *rnd_buf(int64_t n, float amp) {
    float *p = tv_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = amp * rnd();
    return p;
}

/* max over i of |a-b| / (abs_tol + rel * |scale_i|); <= 1 passes */
static double worst(const float *a, const float *b, const float *scale, int64_t n, double rel,
                    double abs_tol) {
    double w = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (abs_tol + rel * fabs(scale ? scale[i] : b[i]));
        if (!(e <= w)) w = e;   /* NaN counts as worst */
    }
    return w;
}

/* ---- matmul ------------------------------------------------------------------------------ */

typedef struct {
    kern_weight w;
    float *deq;     /* the weight as f32 [n, k], what the stored form decodes to */
    void *data;
    float *scale;
} test_w;

static test_w make_w(kern_wtype t, int64_t n, int64_t k) {
    test_w r = {.w = {.type = t, .n = n, .k = k}};
    float *f = rnd_buf(n * k, 1.0f);
    r.deq = tv_xmalloc((size_t)(n * k) * sizeof(float));
    switch (t) {
    case KERN_W_F32: r.data = f; memcpy(r.deq, f, (size_t)(n * k) * sizeof(float)); f = NULL; break;
    case KERN_W_F16: case KERN_W_BF16: {
        uint16_t *h = tv_xmalloc((size_t)(n * k) * 2);
        for (int64_t i = 0; i < n * k; i++) {
            h[i] = t == KERN_W_F16 ? dtype_f32_to_f16(f[i]) : dtype_f32_to_bf16(f[i]);
            r.deq[i] = t == KERN_W_F16 ? dtype_f16_to_f32(h[i]) : dtype_bf16_to_f32(h[i]);
        }
        r.data = h;
        break;
    }
    case KERN_W_Q8: case KERN_W_Q4:
        r.scale = tv_xmalloc((size_t)(n * k / 32) * sizeof(float));
        r.data = tv_xmalloc((size_t)(t == KERN_W_Q8 ? quant_q8_bytes(n, k) : quant_q4_bytes(n, k)));
        if (t == KERN_W_Q8) {
            CHECK_OK(quant_q8(f, n, k, r.data, r.scale));
            for (int64_t j = 0; j < n; j++)
                quant_dequant_q8_row((int8_t *)r.data + j * k, r.scale + j * k / 32, k, r.deq + j * k);
        } else {
            CHECK_OK(quant_q4(f, n, k, r.data, r.scale));
            for (int64_t j = 0; j < n; j++)
                quant_dequant_q4_row((uint8_t *)r.data + j * k / 2, r.scale + j * k / 32, k,
                                     r.deq + j * k);
        }
        break;
    }
    free(f);
    r.w.data = r.data;
    r.w.scale = r.scale;
    return r;
}

static void free_w(test_w *w) {
    free(w->deq);
    free(w->data);
    free(w->scale);
}

/* One case: the reference with the stored weight == the reference with its f32 decoding (to
 * float rounding), the SIMD kernel == the reference, threaded == single-threaded bitwise. */
static void matmul_case(kern_wtype t, int64_t m, int64_t n, int64_t k, int with_bias) {
    test_w w = make_w(t, n, k);
    float *x = rnd_buf(m * k, 1.0f), *bias = with_bias ? rnd_buf(n, 1.0f) : NULL;
    float *y_ref = rnd_buf(m * n, 9), *y_deq = rnd_buf(m * n, 9), *y = rnd_buf(m * n, 9),
          *y_mt = rnd_buf(m * n, 9), *mag = tv_xmalloc((size_t)(m * n) * sizeof(float));
    kern_weight wf = {.type = KERN_W_F32, .n = n, .k = k, .data = w.deq};
    CHECK_OK(kern_matmul(be_ref, x, m, &w.w, bias, y_ref));
    CHECK_OK(kern_matmul(be_ref_mt, x, m, &wf, bias, y_deq));
    /* error scale of each output: sum |x_k w_k| + |bias| */
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = bias ? fabs(bias[j]) : 0;
            for (int64_t kk = 0; kk < k; kk++) s += fabs(x[i * k + kk] * w.deq[j * k + kk]);
            mag[i * n + j] = (float)s;
        }
    double e = worst(y_deq, y_ref, mag, m * n, 1e-6, 1e-30);
    CHECK_MSG(e <= 1, "ref %s vs dequantised f32, m=%lld n=%lld k=%lld: %.3g", kern_wtype_name(t),
              (long long)m, (long long)n, (long long)k, e);
    if (be_simd) {
        CHECK_OK(kern_matmul(be_simd, x, m, &w.w, bias, y));
        CHECK_OK(kern_matmul(be_simd_mt, x, m, &w.w, bias, y_mt));
        e = worst(y, y_ref, mag, m * n, 1e-5, 1e-30);
        CHECK_MSG(e <= 1, "simd %s matmul m=%lld n=%lld k=%lld bias=%d: %.3g", kern_wtype_name(t),
                  (long long)m, (long long)n, (long long)k, with_bias, e);
        CHECK_MSG(memcmp(y, y_mt, (size_t)(m * n) * sizeof(float)) == 0,
                  "threaded simd %s matmul m=%lld differs", kern_wtype_name(t), (long long)m);
        /* the same with Strassen allowed (it applies to the large cases only) */
        CHECK_OK(kern_matmul(be_strassen, x, m, &w.w, bias, y));
        CHECK_OK(kern_matmul(be_strassen_mt, x, m, &w.w, bias, y_mt));
        e = worst(y, y_ref, mag, m * n, 1e-5, 1e-30);
        CHECK_MSG(e <= 1, "strassen %s matmul m=%lld n=%lld k=%lld bias=%d: %.3g",
                  kern_wtype_name(t), (long long)m, (long long)n, (long long)k, with_bias, e);
        CHECK_MSG(memcmp(y, y_mt, (size_t)(m * n) * sizeof(float)) == 0,
                  "threaded strassen %s matmul m=%lld differs", kern_wtype_name(t), (long long)m);
    }
    free_w(&w);
    free(x); free(bias); free(y_ref); free(y_deq); free(y); free(y_mt); free(mag);
}

static void test_matmul(void) {
    const int64_t ks[] = {1, 7, 33, 80, 88, 1413}, ms[] = {1, 2, 3, 4, 5, 67}, ns[] = {1, 3, 17, 33};
    const kern_wtype fts[] = {KERN_W_F32, KERN_W_F16, KERN_W_BF16};
    for (int t = 0; t < 3; t++)
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 4; b++)
                for (int c = 0; c < 4; c++) matmul_case(fts[t], ms[b], ns[c], ks[a], (a + c) % 2);
    const int64_t qks[] = {32, 96, 1408};
    for (int t = 0; t < 2; t++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 4; b++)
                for (int c = 0; c < 4; c++)
                    matmul_case(t ? KERN_W_Q4 : KERN_W_Q8, ms[b], ns[c], qks[a], c % 2);
    /* several M and N blocks, K split into blocks (cpu_mm_kc: 4000 -> 2016 + 1984, a shorter
     * last block; q4's 6400 -> 2144 + 2144 + 2112, each starting on a scale block), bias */
    matmul_case(KERN_W_F32, 203, 300, 4000, 1);
    matmul_case(KERN_W_Q4, 101, 270, 6400, 1);
    matmul_case(KERN_W_F16, 4, 301, 61, 0);
    /* large enough for one level of Strassen (ops_cpu.c): odd and even M (an odd M's lower
     * quadrants end a row short), N not a multiple of the column block, K halves in one block
     * and in two (1664 -> 832 -> 416 + 416) */
    matmul_case(KERN_W_F32, 201, 1056, 1024, 1);
    matmul_case(KERN_W_F16, 202, 1024, 1088, 0);
    matmul_case(KERN_W_Q8, 205, 1088, 1024, 1);
    matmul_case(KERN_W_F32, 201, 1024, 1664, 0);
}

static void test_matmul_known(void) {
    /* [[1,2],[3,4]] . [[1,0],[1,1],[0,2]]^T + [0.5,0,-1] */
    float x[4] = {1, 2, 3, 4}, w[6] = {1, 0, 1, 1, 0, 2}, b[3] = {0.5f, 0, -1}, y[6];
    kern_weight kw = {.type = KERN_W_F32, .n = 3, .k = 2, .data = w};
    const float want[6] = {1.5f, 3, 3, 3.5f, 7, 7};
    kern_be *bes[2] = {be_ref, be_simd};
    for (int i = 0; i < 2; i++) {
        if (!bes[i]) continue;
        CHECK_OK(kern_matmul(bes[i], x, 2, &kw, b, y));
        for (int j = 0; j < 6; j++) CHECK_NEAR(y[j], want[j], 0);
    }
    kw.type = KERN_W_Q8;
    CHECK_FAILS(kern_matmul(be_ref, x, 2, &kw, b, y));         /* no scales */
    float sc[1] = {1};
    kw.scale = sc;
    CHECK_FAILS(kern_matmul(be_ref, x, 2, &kw, b, y));         /* K = 2 is not a block */
    kw.type = KERN_W_F32;
    CHECK_FAILS(kern_matmul(be_ref, x, 0, &kw, b, y));
    CHECK_FAILS(kern_matmul(be_ref, NULL, 2, &kw, b, y));
}

/* ---- quantisation -------------------------------------------------------------------------- */

static void test_quant(void) {
    const int64_t n = 5, k = 96;
    float *w = rnd_buf(n * k, 3.0f), *deq = tv_xmalloc(sizeof(float) * (size_t)(n * k)),
          *s = tv_xmalloc(sizeof(float) * (size_t)(n * k / 32));
    w[40] = 0;                              /* block 1 of row 0 all zero: scale 0, values 0 */
    for (int i = 32; i < 64; i++) w[i] = 0;
    int8_t *q8 = tv_xmalloc((size_t)quant_q8_bytes(n, k));
    uint8_t *q4 = tv_xmalloc((size_t)quant_q4_bytes(n, k));
    for (int fmt = 0; fmt < 2; fmt++) {
        CHECK_OK(fmt ? quant_q4(w, n, k, q4, s) : quant_q8(w, n, k, q8, s));
        int bad = 0;
        for (int64_t j = 0; j < n; j++) {
            if (fmt) quant_dequant_q4_row(q4 + j * k / 2, s + j * k / 32, k, deq + j * k);
            else quant_dequant_q8_row(q8 + j * k, s + j * k / 32, k, deq + j * k);
        }
        for (int64_t b = 0; b < n * k / 32; b++) {
            float amax = 0;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(w[b * 32 + i]));
            if (fabsf(s[b] - amax / (fmt ? 7.0f : 127.0f)) > 1e-7f * amax) bad++;
            for (int i = 0; i < 32; i++)   /* |w - s q| <= s/2 (plus rounding of s*q) */
                if (fabsf(w[b * 32 + i] - deq[b * 32 + i]) > s[b] * 0.5f * (1 + 1e-5f) + 1e-12f) bad++;
        }
        CHECK_EQ_INT(bad, 0);
        CHECK_NEAR(s[1], 0, 0);
        for (int i = 32; i < 64; i++) CHECK_NEAR(deq[i], 0, 0);
    }
    /* the q4 nibble layout: element j low nibble of byte j, element j+16 high nibble */
    float v[32] = {0};
    v[0] = 7; v[16] = -7; v[1] = 3; v[17] = 1;
    float sc;
    uint8_t p[16];
    CHECK_OK(quant_q4(v, 1, 32, p, &sc));
    CHECK_NEAR(sc, 1, 0);
    CHECK_EQ_INT(p[0], (7 + 8) | ((-7 + 8) << 4));
    CHECK_EQ_INT(p[1], (3 + 8) | ((1 + 8) << 4));
    CHECK_EQ_INT(p[2], 0x88);
    int8_t p8[32];
    CHECK_OK(quant_q8(v, 1, 32, p8, &sc));
    CHECK_NEAR(sc, 7.0f / 127, 1e-9);
    CHECK_EQ_INT(p8[0], 127);
    CHECK_EQ_INT(p8[16], -127);
    CHECK_EQ_INT(p8[1], 54);    /* round(3 * 127 / 7) = round(54.43) */
    CHECK_FAILS(quant_q8(v, 1, 31, p8, &sc));
    v[3] = NAN;
    CHECK_FAILS(quant_q4(v, 1, 32, p, &sc));
    free(w); free(deq); free(s); free(q8); free(q4);
}

/* ---- norms, activations, softmax ------------------------------------------------------------- */

static void test_norms(void) {
    float x[4] = {1, 2, 3, 4}, y[4], w[4] = {1, 2, 1, 1}, b[4] = {0, 0, 1, 0};
    kern_be *bes[2] = {be_ref, be_simd};
    for (int i = 0; i < 2; i++) {
        if (!bes[i]) continue;
        /* mean 2.5, biased variance 1.25 */
        CHECK_OK(kern_layernorm(bes[i], x, 4, y, 4, 1, 1, 4, w, b, 0.0f));
        CHECK_NEAR(y[0], -1.34164079, 1e-6);
        CHECK_NEAR(y[1], -0.89442719, 1e-6);
        CHECK_NEAR(y[2], 1.44721360, 1e-6);
        CHECK_NEAR(y[3], 1.34164079, 1e-6);
        float z[2] = {3, 4};
        CHECK_OK(kern_rmsnorm(bes[i], z, 2, z, 2, 1, 1, 2, NULL, 0.0f));   /* rms = sqrt(12.5) */
        CHECK_NEAR(z[0], 0.84852814, 1e-6);
        CHECK_NEAR(z[1], 1.13137085, 1e-6);
    }
    CHECK_FAILS(kern_layernorm(be_ref, x, 3, y, 4, 1, 1, 4, NULL, NULL, 1e-5f));   /* ld < n */
    if (!be_simd) return;
    /* grouped + strided layout, sizes around the vector width, simd vs ref, threads bitwise */
    const int64_t ns[] = {1, 7, 8, 9, 33, 80, 88, 1413};
    for (int a = 0; a < 8; a++) {
        int64_t n = ns[a], rows = 9, groups = 3, ld = groups * n + 5;
        float *src = rnd_buf(rows * ld, 2.0f), *wt = rnd_buf(n, 1.0f), *bs = rnd_buf(n, 1.0f);
        for (int64_t i = 0; i < rows * ld; i++) src[i] += 0.5f;   /* a non-zero mean */
        float *r = rnd_buf(rows * ld, 1), *s = tv_xmalloc(sizeof(float) * (size_t)(rows * ld)),
              *s_mt = tv_xmalloc(sizeof(float) * (size_t)(rows * ld));
        for (int op = 0; op < 2; op++) {
            memcpy(s, r, sizeof(float) * (size_t)(rows * ld));   /* gaps must stay untouched */
            memcpy(s_mt, r, sizeof(float) * (size_t)(rows * ld));
            float *r2 = tv_xmalloc(sizeof(float) * (size_t)(rows * ld));
            memcpy(r2, r, sizeof(float) * (size_t)(rows * ld));
            if (op == 0) {
                CHECK_OK(kern_layernorm(be_ref, src, ld, r2, ld, rows, groups, n, wt, bs, 1e-5f));
                CHECK_OK(kern_layernorm(be_simd, src, ld, s, ld, rows, groups, n, wt, bs, 1e-5f));
                CHECK_OK(kern_layernorm(be_simd_mt, src, ld, s_mt, ld, rows, groups, n, wt, bs, 1e-5f));
            } else {
                CHECK_OK(kern_rmsnorm(be_ref, src, ld, r2, ld, rows, groups, n, wt, 1e-6f));
                CHECK_OK(kern_rmsnorm(be_simd, src, ld, s, ld, rows, groups, n, wt, 1e-6f));
                CHECK_OK(kern_rmsnorm(be_simd_mt, src, ld, s_mt, ld, rows, groups, n, wt, 1e-6f));
            }
            /* error relative to |w| * normalised magnitude: use 1 + |ref| as the scale */
            double e = 0;
            for (int64_t i = 0; i < rows * ld; i++) {
                double d = fabs(s[i] - r2[i]) / (1e-5 * (1 + fabs(r2[i])));
                if (!(d <= e)) e = d;
            }
            CHECK_MSG(e <= 1, "%s n=%lld: %.3g", op ? "rmsnorm" : "layernorm", (long long)n, e);
            CHECK(memcmp(s, s_mt, sizeof(float) * (size_t)(rows * ld)) == 0);
            free(r2);
        }
        free(src); free(wt); free(bs); free(r); free(s); free(s_mt);
    }
}

static void test_gelu(void) {
    /* torch.nn.functional.gelu in float64 at these points (approximate='none' and 'tanh') */
    const float x[10] = {-6, -3, -1, -0.5f, 0, 0.1f, 0.5f, 1, 2, 3};
    const double erf_t[10] = {-5.91952587e-09, -0.00404969409, -0.158655254, -0.154268769, 0.0,
                              0.0539827837, 0.345731231, 0.841344746, 1.95449974, 2.99595031};
    const double tanh_t[10] = {-8.43964898e-11, -0.00363739208, -0.158808009, -0.15428599, 0.0,
                               0.053982751, 0.34571401, 0.841191991, 1.95459769, 2.99636261};
    kern_be *bes[2] = {be_ref, be_simd};
    for (int b = 0; b < 2; b++) {
        if (!bes[b]) continue;
        float y[10], z[10];
        CHECK_OK(kern_gelu(bes[b], x, y, 10));
        CHECK_OK(kern_gelu_tanh(bes[b], x, z, 10));
        for (int i = 0; i < 10; i++) {
            CHECK_MSG(fabs(y[i] - erf_t[i]) <= 1e-6 * fabs(erf_t[i]) + 1e-12,
                      "%s gelu(%g) = %.9g, torch %.9g", kern_name(bes[b]), x[i], y[i], erf_t[i]);
            CHECK_MSG(fabs(z[i] - tanh_t[i]) <= 1e-6 * fabs(tanh_t[i]) + 1e-12,
                      "%s gelu_tanh(%g) = %.9g, torch %.9g", kern_name(bes[b]), x[i], z[i], tanh_t[i]);
        }
    }
    if (!be_simd) return;
    /* a dense sweep over [-12, 12], n not a multiple of 8 */
    const int64_t n = 24001 + 5;
    float *in = tv_xmalloc(sizeof(float) * n), *r = tv_xmalloc(sizeof(float) * n),
          *s = tv_xmalloc(sizeof(float) * n), *s_mt = tv_xmalloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) in[i] = -12.0f + 0.001f * (float)i;
    for (int op = 0; op < 2; op++) {
        CHECK_OK((op ? kern_gelu_tanh : kern_gelu)(be_ref, in, r, n));
        CHECK_OK((op ? kern_gelu_tanh : kern_gelu)(be_simd, in, s, n));
        CHECK_OK((op ? kern_gelu_tanh : kern_gelu)(be_simd_mt, in, s_mt, n));
        /* The SIMD exp's argument (-x^2/2 + ...) is rounded in fp32, so relative precision falls to
         * ~1e-5 in the far negative tail where |gelu| < 1e-30 (torch's fp32 gelu returns 0
         * there); elsewhere it is within 2e-6. */
        double e = worst(s, r, NULL, n, 2e-6, 1e-12);
        CHECK_MSG(e <= 1, "%s sweep: %.3g", op ? "gelu_tanh" : "gelu", e);
        CHECK(memcmp(s, s_mt, sizeof(float) * n) == 0);
    }
    CHECK_OK(kern_gelu(be_simd, in, r, n));
    memcpy(s, in, sizeof(float) * n);
    CHECK_OK(kern_gelu(be_simd, s, s, n));                     /* in place */
    CHECK(memcmp(s, r, sizeof(float) * n) == 0);
    free(in); free(r); free(s); free(s_mt);
}

static void test_softmax(void) {
    kern_be *bes[2] = {be_ref, be_simd};
    for (int b = 0; b < 2; b++) {
        if (!bes[b]) continue;
        float x[3] = {1, 2, 3}, y[3];
        CHECK_OK(kern_softmax(bes[b], x, y, 1, 3, 3));
        CHECK_NEAR(y[0], 0.0900305733, 1e-7);   /* torch.softmax([1,2,3]) */
        CHECK_NEAR(y[1], 0.2447284758, 1e-7);
        CHECK_NEAR(y[2], 0.6652409434, 1e-7);
        float m[4] = {0.5f, -INFINITY, 0.5f, -INFINITY}, all[3] = {-INFINITY, -INFINITY, -INFINITY};
        CHECK_OK(kern_softmax(bes[b], m, m, 1, 4, 4));
        CHECK(m[0] == 0.5f && m[1] == 0 && m[2] == 0.5f && m[3] == 0);
        CHECK_OK(kern_softmax(bes[b], all, all, 1, 3, 3));
        CHECK(all[0] == 0 && all[1] == 0 && all[2] == 0);
        float big[2] = {1000, 0};                 /* max-subtract keeps this finite */
        CHECK_OK(kern_softmax(bes[b], big, big, 1, 2, 2));
        CHECK(big[0] == 1 && big[1] == 0);
    }
    if (!be_simd) return;
    for (int64_t n = 1; n <= 70; n += 3) {
        int64_t rows = 5, ld = n + 2;
        float *x = rnd_buf(rows * ld, 20), *r = rnd_buf(rows * ld, 1),
              *s = tv_xmalloc(sizeof(float) * rows * ld), *s_mt = tv_xmalloc(sizeof(float) * rows * ld);
        memcpy(s, r, sizeof(float) * rows * ld);
        memcpy(s_mt, r, sizeof(float) * rows * ld);
        CHECK_OK(kern_softmax(be_ref, x, r, rows, n, ld));
        CHECK_OK(kern_softmax(be_simd, x, s, rows, n, ld));
        CHECK_OK(kern_softmax(be_simd_mt, x, s_mt, rows, n, ld));
        /* x - max is rounded in fp32 (as torch does; the reference uses double): up to half an
         * ulp of |x - max| <= 40, i.e. 2e-6 relative after exp */
        CHECK_MSG(worst(s, r, NULL, rows * ld, 3e-6, 1e-37) <= 1, "softmax n=%lld", (long long)n);
        CHECK(memcmp(s, s_mt, sizeof(float) * rows * ld) == 0);
        for (int64_t i = 0; i < rows; i++) {
            double sum = 0;
            for (int64_t j = 0; j < n; j++) sum += s[i * ld + j];
            CHECK_NEAR(sum, 1, 1e-6);
        }
        free(x); free(r); free(s); free(s_mt);
    }
}

/* ---- rope ------------------------------------------------------------------------------------ */

static void test_rope(void) {
    /* torch (HF apply_rotary_pos_emb, rotate_half) on x = (arange(64)+1)/10 as [T=4, H=2, D=8],
     * rot_dims 4, theta 10000, positions 0, 1, 7, 1000 */
    const double want[64] = {
        0.100000001, 0.200000003, 0.300000012, 0.400000006, 0.5, 0.600000024, 0.699999988,
        0.800000012, 0.899999976, 1.0, 1.10000002, 1.20000005, 1.29999995, 1.39999998, 1.5,
        1.60000002, -0.680280805, 1.77991033, 2.45707512, 2.01789975, 2.0999999, 2.20000005,
        2.29999995, 2.4000001, -0.921215892, 2.57187033, 3.56249356, 2.82585955, 2.9000001, 3.0,
        3.0999999, 3.20000005, 0.188424349, 3.13987923, 4.80671358, 3.82898927, 3.70000005,
        3.79999995, 3.9000001, 4.0, 0.26595664, 3.8819654, 5.9354248, 4.68298435, 4.5, 4.5999999,
        4.69999981, 4.80000019, -1.4614284, -1.36644745, 6.9198432, -7.08327723, 5.30000019,
        5.4000001, 5.5, 5.5999999, -1.67302918, -1.60248804, 8.03125, -8.18975163, 6.0999999,
        6.19999981, 6.30000019, 6.4000001};
    const int32_t pos[4] = {0, 1, 7, 1000};
    kern_be *bes[2] = {be_ref, be_simd};
    for (int b = 0; b < 2; b++) {
        if (!bes[b]) continue;
        float x[64];
        for (int i = 0; i < 64; i++) x[i] = (float)(i + 1) / 10.0f;
        CHECK_OK(kern_rope(bes[b], x, 16, 4, 2, 8, 4, pos, 10000.0f));
        for (int i = 0; i < 64; i++)
            CHECK_MSG(fabs(x[i] - want[i]) <= 2e-6 * fabs(want[i]) + 1e-7, "rope[%d] %.9g vs %.9g",
                      i, x[i], want[i]);
    }
    /* position 0 is the identity, bitwise; a strided Phi-2 shaped buffer (80 dims, rot 32) */
    float *q = rnd_buf(3 * 1000, 1), *q0 = tv_xmalloc(sizeof(float) * 3000);
    memcpy(q0, q, sizeof(float) * 3000);
    int32_t zeros[3] = {0, 0, 0}, bad[3] = {0, -1, 2};
    CHECK_OK(kern_rope(be_ref, q, 1000, 3, 12, 80, 32, zeros, 10000.0f));
    CHECK(memcmp(q, q0, sizeof(float) * 3000) == 0);
    CHECK_FAILS(kern_rope(be_ref, q, 1000, 3, 12, 80, 31, zeros, 10000.0f));
    CHECK_FAILS(kern_rope(be_ref, q, 1000, 3, 12, 80, 32, bad, 10000.0f));
    CHECK_FAILS(kern_rope(be_ref, q, 900, 3, 12, 80, 32, zeros, 10000.0f));
    /* norms preserved per pair */
    int32_t p[3] = {5, 17, 2047};
    CHECK_OK(kern_rope(be_ref, q, 1000, 3, 12, 80, 32, p, 10000.0f));
    int bad_pairs = 0;
    for (int t = 0; t < 3; t++)
        for (int h = 0; h < 12; h++) {
            const float *a = q + t * 1000 + h * 80, *o = q0 + t * 1000 + h * 80;
            for (int i = 0; i < 16; i++)
                if (fabsf(a[i] * a[i] + a[i + 16] * a[i + 16] - o[i] * o[i] - o[i + 16] * o[i + 16]) > 1e-5f)
                    bad_pairs++;
            if (memcmp(a + 32, o + 32, 48 * sizeof(float))) bad_pairs++;
        }
    CHECK_EQ_INT(bad_pairs, 0);
    free(q); free(q0);
}

/* ---- attention ------------------------------------------------------------------------------- */

/* The naive triple loop in double: out[i, h, :] = softmax_j(scale q.k) v. */
/* The reference in double; mag (optional, out's layout): each output's error scale,
 * sum_j p_j |v_j| (an fp32 weighted sum's rounding is relative to this, not to the sum). */
static void naive_attn(const kern_attn *a, float *out, float *mag) {
    int64_t grp = a->heads / (a->kv_heads ? a->kv_heads : a->heads);
    double *p = tv_xmalloc(sizeof(double) * (size_t)a->tk);
    for (int64_t i = 0; i < a->tq; i++)
        for (int64_t h = 0; h < a->heads; h++) {
            int64_t kh = h / grp, nk = a->causal ? i + a->tk - a->tq + 1 : a->tk;
            if (nk > a->tk) nk = a->tk;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < nk; j++) {
                double s = 0;
                for (int64_t d = 0; d < a->dim; d++)
                    s += (double)a->q[i * a->ldq + h * a->dim + d] * a->k[j * a->ldk + kh * a->dim + d];
                p[j] = s * a->scale;
                if (p[j] > mx) mx = p[j];
            }
            for (int64_t j = 0; j < nk; j++) sum += (p[j] = exp(p[j] - mx));
            for (int64_t d = 0; d < a->dim; d++) {
                double o = 0;
                double m = 0;
                for (int64_t j = 0; j < nk; j++) {
                    o += p[j] * a->v[j * a->ldv + kh * a->dim + d];
                    m += p[j] * fabs(a->v[j * a->ldv + kh * a->dim + d]);
                }
                out[i * a->ldo + h * a->dim + d] = nk > 0 ? (float)(o / sum) : 0.0f;
                if (mag) mag[i * a->ldo + h * a->dim + d] = nk > 0 ? (float)(m / sum) : 0.0f;
            }
        }
    free(p);
}

static void attn_case(int64_t tq, int64_t tk, int64_t heads, int64_t kv_heads, int64_t dim,
                      int causal, int64_t pad) {
    int64_t kvh = kv_heads ? kv_heads : heads;
    kern_attn a = {.tq = tq, .tk = tk, .heads = heads, .kv_heads = kv_heads, .dim = dim,
                   .scale = 1.0f / sqrtf((float)dim), .causal = causal,
                   .ldq = heads * dim + pad, .ldk = kvh * dim + 2 * pad, .ldv = kvh * dim + pad,
                   .ldo = heads * dim + pad};
    float *q = rnd_buf(tq * a.ldq, 3), *k = rnd_buf(tk * a.ldk, 3), *v = rnd_buf(tk * a.ldv, 1);
    float *want = rnd_buf(tq * a.ldo, 1), *mag = rnd_buf(tq * a.ldo, 1), *got[3];
    a.q = q; a.k = k; a.v = v;
    naive_attn(&a, want, mag);
    kern_be *bes[3] = {be_ref, be_simd, be_simd_mt};
    for (int b = 0; b < 3; b++) {
        got[b] = tv_xmalloc(sizeof(float) * (size_t)(tq * a.ldo));
        memcpy(got[b], want, sizeof(float) * (size_t)(tq * a.ldo));   /* same gaps */
        if (!bes[b]) continue;
        a.out = got[b];
        CHECK_OK(kern_attention(bes[b], &a));
        double e = worst(got[b], want, mag, tq * a.ldo, 1e-5, 1e-6);
        CHECK_MSG(e <= 1, "%s attention tq=%lld tk=%lld h=%lld/%lld d=%lld causal=%d: %.3g",
                  kern_name(bes[b]), (long long)tq, (long long)tk, (long long)heads,
                  (long long)kvh, (long long)dim, causal, e);
    }
    if (be_simd) CHECK(memcmp(got[1], got[2], sizeof(float) * (size_t)(tq * a.ldo)) == 0);
    free(q); free(k); free(v); free(want); free(mag);
    for (int b = 0; b < 3; b++) free(got[b]);
}

static void test_attention(void) {
    const int64_t dims[] = {64, 80, 88, 7, 33};
    for (int d = 0; d < 5; d++) {
        attn_case(7, 7, 3, 0, dims[d], 0, 0);            /* bidirectional (ViT, Q-Former self) */
        attn_case(19, 19, 2, 0, dims[d], 1, 5);          /* causal prefill, fused-row strides */
    }
    attn_case(32, 257, 2, 0, 64, 0, 3);                  /* Q-Former cross-attention */
    attn_case(5, 150, 4, 2, 80, 1, 0);                   /* prefill after a cached prefix, GQA */
    attn_case(9, 4, 1, 0, 16, 1, 0);                     /* more queries than keys: some see none */
    /* several score blocks per task and several tasks per head (the blocked CPU kernel) */
    attn_case(257, 257, 2, 0, 88, 0, 0);                 /* ViT at 224 px, two heads */
    attn_case(130, 290, 3, 0, 80, 1, 4);                 /* long causal prefill after a prefix */
    /* decode == the last row of a causal prefill over the same cache */
    const int64_t heads = 4, dim = 80, lens[3] = {1, 70, 130}, ld = heads * dim;
    float *q = rnd_buf(3 * ld, 3), *out = rnd_buf(3 * ld, 1), *want = rnd_buf(ld, 1);
    float *kc[3], *vc[3];
    kern_kv kv[3];
    for (int s = 0; s < 3; s++) {
        kc[s] = rnd_buf(lens[s] * ld, 3);
        vc[s] = rnd_buf(lens[s] * ld, 1);
        kv[s] = (kern_kv){.k = kc[s], .v = vc[s], .len = lens[s], .ld = ld};
    }
    kern_be *bes[3] = {be_ref, be_simd, be_simd_mt};
    for (int b = 0; b < 3; b++) {
        if (!bes[b]) continue;
        CHECK_OK(kern_attn_decode(bes[b], 3, q, ld, kv, heads, 0, dim, 0.1118f, out, ld));
        for (int s = 0; s < 3; s++) {
            kern_attn a = {.q = q + s * ld, .k = kc[s], .v = vc[s], .out = want, .ldq = ld,
                           .ldk = ld, .ldv = ld, .ldo = ld, .tq = 1, .tk = lens[s],
                           .heads = heads, .dim = dim, .scale = 0.1118f, .causal = 1};
            naive_attn(&a, want, NULL);
            CHECK_MSG(worst(out + s * ld, want, NULL, ld, 1e-5, 1e-6) <= 1, "%s decode seq %d",
                      kern_name(bes[b]), s);
        }
    }
    kv[1].len = 0;
    CHECK_FAILS(kern_attn_decode(be_ref, 3, q, ld, kv, heads, 0, dim, 0.1f, out, ld));
    CHECK_FAILS(kern_attn_decode(be_ref, 3, q, ld, kv, heads, 3, dim, 0.1f, out, ld));
    kern_attn big = {.q = q, .k = q, .v = q, .out = out, .ldq = 300, .ldk = 300, .ldv = 300,
                     .ldo = 300, .tq = 1, .tk = 1, .heads = 1, .dim = 300};
    CHECK_FAILS(kern_attention(be_ref, &big));
    free(q); free(out); free(want);
    for (int s = 0; s < 3; s++) { free(kc[s]); free(vc[s]); }
}

/* ---- embedding, add, scale, bias ------------------------------------------------------------- */

static void test_embed_misc(void) {
    const int64_t vocab = 11, dim = 13;
    float *tf = rnd_buf(vocab * dim, 2);
    uint16_t th[11 * 13], tb[11 * 13];
    for (int i = 0; i < vocab * dim; i++) {
        th[i] = dtype_f32_to_f16(tf[i]);
        tb[i] = dtype_f32_to_bf16(tf[i]);
    }
    int32_t ids[4] = {10, 0, 3, 10};
    float out[4 * 13];
    const void *tabs[3] = {tf, th, tb};
    const dtype_id dts[3] = {DT_F32, DT_F16, DT_BF16};
    for (int t = 0; t < 3; t++) {
        CHECK_OK(kern_embed(be_ref, tabs[t], dts[t], vocab, dim, ids, 4, out));
        int bad = 0;
        for (int i = 0; i < 4; i++)
            for (int d = 0; d < dim; d++) {
                int64_t e = ids[i] * dim + d;
                float w = t == 0 ? tf[e] : t == 1 ? dtype_f16_to_f32(th[e]) : dtype_bf16_to_f32(tb[e]);
                if (out[i * dim + d] != w) bad++;
            }
        CHECK_EQ_INT(bad, 0);
    }
    int32_t bad_ids[2] = {3, 11};
    CHECK_FAILS(kern_embed(be_ref, tf, DT_F32, vocab, dim, bad_ids, 2, out));
    CHECK(strstr(err_msg(), "position 1") != NULL);
    bad_ids[1] = -1;
    CHECK_FAILS(kern_embed(be_ref, tf, DT_F32, vocab, dim, bad_ids, 2, out));
    CHECK_FAILS(kern_embed(be_ref, tf, DT_I32, vocab, dim, ids, 2, out));
    free(tf);

    const int64_t n = 40003;
    float *a = rnd_buf(n, 1), *b = rnd_buf(n, 1), *y0 = rnd_buf(n, 1), *y1 = rnd_buf(n, 1);
    kern_be *bes[2] = {be_ref, be_simd_mt ? be_simd_mt : be_ref_mt};
    for (int i = 0; i < 2; i++) {
        float *y = i ? y1 : y0;
        CHECK_OK(kern_add(bes[i], a, b, y, n));
        CHECK(y[12345] == a[12345] + b[12345] && y[n - 1] == a[n - 1] + b[n - 1]);
        CHECK_OK(kern_scale(bes[i], y, 0.25f, y, n));
        CHECK(y[7] == 0.25f * (a[7] + b[7]));
        CHECK_OK(kern_add_bias(bes[i], y, 1, 7, b));
        CHECK_OK(kern_add_bias(bes[i], y + 7, 3, 1000, b));
    }
    CHECK(memcmp(y0, y1, sizeof(float) * n) == 0);        /* exact ops: bitwise everywhere */
    CHECK(y0[7 + 2 * 1000 + 5] == 0.25f * (a[2012] + b[2012]) + b[5]);
    free(a); free(b); free(y0); free(y1);
}

static int pool_hits[1000];
static void pool_probe(void *ctx, int64_t task, int thread) {
    pool_hits[task] += 1 + thread * 0;
    (void)ctx;
}

static void test_pool(void) {
    pool *p = pool_new(3);
    CHECK(p != NULL);
    CHECK_EQ_INT(pool_n_threads(p), 3);
    for (int round = 0; round < 50; round++) pool_run(p, 1000, pool_probe, NULL);
    pool_run(NULL, 1000, pool_probe, NULL);
    int bad = 0;
    for (int i = 0; i < 1000; i++) bad += pool_hits[i] != 51;
    CHECK_EQ_INT(bad, 0);
    pool_free(p);
    pool_free(NULL);
    CHECK_EQ_INT(pool_n_threads(NULL), 1);
}

int main(void) {
    char feat[128];
    printf("cpu: %s\n", cpu_features_str(feat, sizeof feat));
    CHECK_OK(kern_cpu_new(1, KERN_ISA_REF, &be_ref));
    CHECK_OK(kern_cpu_new(3, KERN_ISA_REF, &be_ref_mt));
    const cpu_features *f = cpu_get_features();
    if (f->avx2 && f->fma && f->f16c) {
        CHECK_OK(kern_cpu_new(1, KERN_ISA_AVX2, &be_simd));
        CHECK_OK(kern_cpu_new(3, KERN_ISA_AVX2, &be_simd_mt));
        setenv("TINYVLM_STRASSEN", "1", 1);
        CHECK_OK(kern_cpu_new(1, KERN_ISA_AVX2, &be_strassen));
        CHECK_OK(kern_cpu_new(3, KERN_ISA_AVX2, &be_strassen_mt));
        unsetenv("TINYVLM_STRASSEN");
    } else {
        printf("no AVX2+FMA+F16C here: SIMD kernels not tested\n");
        kern_be *x = NULL;
        CHECK_FAILS(kern_cpu_new(1, KERN_ISA_AVX2, &x));
    }
    test_pool();
    test_quant();
    test_matmul_known();
    test_matmul();
    test_norms();
    test_gelu();
    test_softmax();
    test_rope();
    test_attention();
    test_embed_misc();
    kern_free(be_ref);
    kern_free(be_ref_mt);
    kern_free(be_simd);
    kern_free(be_simd_mt);
    kern_free(be_strassen);
    kern_free(be_strassen_mt);
    kern_free(NULL);
    return check_finish("test_kernels");
}
