/* test_cuda_ops — every op of the CUDA backend against the CPU plain-C reference backend, on
 * fresh random inputs: all weight types (f32, f16, bf16, q8, q4), the matrix-vector (m <= 8)
 * and cuBLAS paths, odd sizes (k not a multiple of 8, n not a multiple of the 8 columns of a
 * block), head sizes 80 and 88 (and 13, 256), GQA, causal prefill after a cached prefix, and
 * split-KV decode over caches of different lengths. Each op has a stated tolerance on
 * max |cuda - ref| / max |ref|. Outputs are poisoned (NaN) before each run so an unwritten
 * element fails. Without a GPU (or a build without CUDA) it prints "skipped" and passes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dtype.h"
#include "err.h"
#include "ops.h"
#include "quant.h"

static kern_be *gpu, *ref;
static uint64_t rng = 0x1234567887654321ull;

static float frand(void) {   /* U(-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (2.0 / 16777216.0) - 1.0);
}

static float *rnd(int64_t n, float amp) {
    float *p = tv_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = amp * frand();
    return p;
}

/* A device copy of n host floats (NULL stays NULL). */
static float *up(const float *h, int64_t n) {
    if (!h) return NULL;
    void *d = NULL;
    CHECK_OK(kern_alloc(gpu, (size_t)n * sizeof(float), &d));
    if (d) CHECK_OK(kern_upload(gpu, d, h, (size_t)n * sizeof(float)));
    return d;
}

static void *up_bytes(const void *h, size_t n) {
    void *d = NULL;
    CHECK_OK(kern_alloc(gpu, n, &d));
    if (d) CHECK_OK(kern_upload(gpu, d, h, n));
    return d;
}

/* A device buffer of n floats filled with NaN. */
static float *poisoned(int64_t n) {
    float *h = tv_xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) h[i] = NAN;
    float *d = up(h, n);
    free(h);
    return d;
}

static float *down(const float *d, int64_t n) {
    float *h = tv_xmalloc((size_t)n * sizeof(float));
    CHECK_OK(kern_download(gpu, h, d, (size_t)n * sizeof(float)));
    return h;
}

/* max |a - b| / max |b| over n elements, NaN-propagating; prints and checks against tol. */
static void cmp(const char *what, const float *a, const float *b, int64_t n, double tol) {
    double e = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    double rel = m > 0 ? e / m : e;
    printf("  %-44s rel err %.3g (tol %.1g)\n", what, rel, tol);
    CHECK_MSG(rel <= tol, "%s: relative error %g > %g", what, rel, tol);
}

/* ---- matmul -------------------------------------------------------------------------------- */

/* w (host) of type t from f32 values; *store gets the allocations to free. */
static kern_weight make_weight(kern_wtype t, const float *wf, int64_t n, int64_t k, void **data,
                               float **scale) {
    kern_weight w = {t, n, k, NULL, NULL};
    *scale = NULL;
    switch (t) {
    case KERN_W_F32:
        *data = tv_xmalloc((size_t)(n * k) * 4);
        memcpy(*data, wf, (size_t)(n * k) * 4);
        break;
    case KERN_W_F16: case KERN_W_BF16: {
        uint16_t *h = tv_xmalloc((size_t)(n * k) * 2);
        for (int64_t i = 0; i < n * k; i++)
            h[i] = t == KERN_W_F16 ? dtype_f32_to_f16(wf[i]) : dtype_f32_to_bf16(wf[i]);
        *data = h;
        break;
    }
    case KERN_W_Q8:
        *data = tv_xmalloc((size_t)quant_q8_bytes(n, k));
        *scale = tv_xmalloc((size_t)(n * k / 32) * 4);
        CHECK_OK(quant_q8(wf, n, k, *data, *scale));
        break;
    case KERN_W_Q4:
        *data = tv_xmalloc((size_t)quant_q4_bytes(n, k));
        *scale = tv_xmalloc((size_t)(n * k / 32) * 4);
        CHECK_OK(quant_q4(wf, n, k, *data, *scale));
        break;
    }
    w.data = *data;
    w.scale = *scale;
    return w;
}

static void test_matmul_one(kern_wtype t, int64_t m, int64_t n, int64_t k, int with_bias) {
    float *wf = rnd(n * k, 1.0f / sqrtf((float)k)), *x = rnd(m * k, 1), *b = rnd(n, 0.5f);
    void *data = NULL;
    float *scale = NULL;
    kern_weight hw = make_weight(t, wf, n, k, &data, &scale), dw;
    CHECK_OK(kern_weight_upload(gpu, &hw, &dw));
    float *want = tv_xmalloc((size_t)(m * n) * 4);
    CHECK_OK(kern_matmul(ref, x, m, &hw, with_bias ? b : NULL, want));
    float *dx = up(x, m * k), *db = up(b, n), *dy = poisoned(m * n);
    CHECK_OK(kern_matmul(gpu, dx, m, &dw, with_bias ? db : NULL, dy));
    float *got = down(dy, m * n);
    /* m <= 8 keeps x in fp32 (only fp32 rounding); larger m rounds x to the weight's 16-bit
     * type for the tensor cores: ~2^-11 relative for f16 (and q8/q4 through f16), 2^-8 bf16 */
    double tol = m <= 8 || t == KERN_W_F32 ? 2e-5 : t == KERN_W_BF16 ? 2e-2 : 4e-3;
    char what[96];
    snprintf(what, sizeof what, "matmul %s m=%lld n=%lld k=%lld%s", kern_wtype_name(t),
             (long long)m, (long long)n, (long long)k, with_bias ? " +bias" : "");
    cmp(what, got, want, m * n, tol);
    kern_weight_release(gpu, &dw);
    kern_release(gpu, dx), kern_release(gpu, db), kern_release(gpu, dy);
    free(got), free(want), free(wf), free(x), free(b), free(data), free(scale);
}

static void test_matmul(void) {
    const kern_wtype types[] = {KERN_W_F32, KERN_W_F16, KERN_W_BF16, KERN_W_Q8, KERN_W_Q4};
    const int64_t shapes[][3] = {{1, 67, 96}, {3, 130, 160}, {8, 33, 2560}, {9, 70, 96},
                                 {40, 129, 256}, {130, 257, 320}};
    for (int t = 0; t < 5; t++)
        for (int s = 0; s < 6; s++)
            test_matmul_one(types[t], shapes[s][0], shapes[s][1], shapes[s][2], s % 2 == 0);
    /* k not a multiple of 8 (or 32): the unvectorised kernel and cuBLAS */
    const kern_wtype plain[] = {KERN_W_F32, KERN_W_F16, KERN_W_BF16};
    for (int t = 0; t < 3; t++) {
        test_matmul_one(plain[t], 2, 45, 101, 1);
        test_matmul_one(plain[t], 17, 45, 101, 0);
    }
}

/* ---- elementwise, norms, softmax ------------------------------------------------------------ */

static void test_elementwise(void) {
    const int64_t n = 100003;
    float *a = rnd(n, 4), *b = rnd(n, 4), *want = tv_xmalloc(n * 4);
    float *da = up(a, n), *db = up(b, n), *dy = poisoned(n), *got;
    CHECK_OK(kern_add(ref, a, b, want, n));
    CHECK_OK(kern_add(gpu, da, db, dy, n));
    cmp("add", got = down(dy, n), want, n, 1e-7), free(got);
    CHECK_OK(kern_scale(ref, a, -0.37f, want, n));
    CHECK_OK(kern_scale(gpu, da, -0.37f, dy, n));
    cmp("scale", got = down(dy, n), want, n, 1e-7), free(got);
    CHECK_OK(kern_gelu(ref, a, want, n));
    CHECK_OK(kern_gelu(gpu, da, dy, n));
    cmp("gelu (erf)", got = down(dy, n), want, n, 2e-6), free(got);
    CHECK_OK(kern_gelu_tanh(ref, a, want, n));
    CHECK_OK(kern_gelu_tanh(gpu, da, dy, n));
    cmp("gelu (tanh)", got = down(dy, n), want, n, 2e-6), free(got);
    /* in place */
    CHECK_OK(kern_gelu(gpu, da, da, n));
    CHECK_OK(kern_gelu(ref, a, a, n));
    cmp("gelu in place", got = down(da, n), a, n, 2e-6), free(got);
    /* add_bias, 7 rows of 1001 */
    float *bias = rnd(1001, 1);
    float *dbias = up(bias, 1001);
    CHECK_OK(kern_add_bias(ref, b, 7, 1001, bias));
    CHECK_OK(kern_add_bias(gpu, db, 7, 1001, dbias));
    cmp("add_bias 7 x 1001", got = down(db, 7 * 1001), b, 7 * 1001, 1e-7), free(got);
    kern_release(gpu, da), kern_release(gpu, db), kern_release(gpu, dy), kern_release(gpu, dbias);
    free(a), free(b), free(want), free(bias);
}

static void test_norms(void) {
    /* per-head norms inside a wider row: 5 rows x 3 groups of 88, row stride 300 */
    const int64_t rows = 5, groups = 3, n = 88, ld = 300, tot = rows * ld;
    float *x = rnd(tot, 3), *w = rnd(n, 1), *b = rnd(n, 1);
    for (int64_t i = 0; i < tot; i++) x[i] += 1.5f;   /* a mean far from 0 */
    float *want = rnd(tot, 1), *dx = up(x, tot), *dw = up(w, n), *db = up(b, n);
    float *dy = up(want, tot), *got;   /* same untouched gap contents on both sides */
    CHECK_OK(kern_layernorm(ref, x, ld, want, ld, rows, groups, n, w, b, 1e-5f));
    CHECK_OK(kern_layernorm(gpu, dx, ld, dy, ld, rows, groups, n, dw, db, 1e-5f));
    cmp("layernorm 5 x 3 groups of 88, ld 300", got = down(dy, tot), want, tot, 2e-6), free(got);
    CHECK_OK(kern_rmsnorm(ref, x, ld, want, ld, rows, groups, n, NULL, 1e-6f));
    CHECK_OK(kern_rmsnorm(gpu, dx, ld, dy, ld, rows, groups, n, NULL, 1e-6f));
    cmp("rmsnorm (no weight)", got = down(dy, tot), want, tot, 2e-6), free(got);
    /* full-width LayerNorm in place, 2560 */
    float *x2 = rnd(3 * 2560, 2), *w2 = rnd(2560, 1), *b2 = rnd(2560, 1);
    float *dx2 = up(x2, 3 * 2560), *dw2 = up(w2, 2560), *db2 = up(b2, 2560);
    CHECK_OK(kern_layernorm(ref, x2, 2560, x2, 2560, 3, 1, 2560, w2, b2, 1e-5f));
    CHECK_OK(kern_layernorm(gpu, dx2, 2560, dx2, 2560, 3, 1, 2560, dw2, db2, 1e-5f));
    cmp("layernorm 3 x 2560 in place", got = down(dx2, 3 * 2560), x2, 3 * 2560, 2e-6), free(got);
    CHECK_OK(kern_rmsnorm(ref, x2, 2560, x2, 2560, 3, 1, 2560, w2, 1e-5f));
    CHECK_OK(kern_rmsnorm(gpu, dx2, 2560, dx2, 2560, 3, 1, 2560, dw2, 1e-5f));
    cmp("rmsnorm 3 x 2560 in place", got = down(dx2, 3 * 2560), x2, 3 * 2560, 2e-6), free(got);
    float *bufs[] = {dx, dw, db, dy, dx2, dw2, db2};
    for (int i = 0; i < 7; i++) kern_release(gpu, bufs[i]);
    free(x), free(w), free(b), free(want), free(x2), free(w2), free(b2);
}

static void test_softmax(void) {
    const int64_t rows = 9, n = 1025, ld = 1030, tot = rows * ld;
    float *x = rnd(tot, 8);
    for (int64_t i = 0; i < n; i++) x[4 * ld + i] = -INFINITY;   /* a fully masked row */
    x[2 * ld + 5] = -INFINITY;
    float *dx = up(x, tot), *got;
    CHECK_OK(kern_softmax(ref, x, x, rows, n, ld));
    CHECK_OK(kern_softmax(gpu, dx, dx, rows, n, ld));
    cmp("softmax 9 x 1025 (masked row), ld 1030", got = down(dx, tot), x, tot, 2e-6);
    free(got), free(x), kern_release(gpu, dx);
}

/* ---- rotary, embedding ---------------------------------------------------------------------- */

static void test_rope(void) {
    const int64_t t = 7, heads = 4, dim = 80, ld = 330, tot = t * ld;
    int32_t pos[7] = {0, 1, 17, 255, 1000, 2047, 4095};
    float *x = rnd(tot, 2), *dx = up(x, tot), *got;
    CHECK_OK(kern_rope(ref, x, ld, t, heads, dim, 32, pos, 10000.0f));
    CHECK_OK(kern_rope(gpu, dx, ld, t, heads, dim, 32, pos, 10000.0f));
    cmp("rope 7 tok x 4 heads x 80 (rot 32), pos to 4095", got = down(dx, tot), x, tot, 2e-6);
    free(got), free(x), kern_release(gpu, dx);
}

static void test_embed(void) {
    const int64_t V = 50, D = 88, n = 9;
    int32_t ids[9] = {0, 49, 7, 7, 13, 1, 48, 25, 3};
    float *tf = rnd(V * D, 1), *want = tv_xmalloc(n * D * 4), *got;
    uint16_t *th = tv_xmalloc(V * D * 2), *tb = tv_xmalloc(V * D * 2);
    for (int64_t i = 0; i < V * D; i++)
        th[i] = dtype_f32_to_f16(tf[i]), tb[i] = dtype_f32_to_bf16(tf[i]);
    const void *tabs[3] = {tf, th, tb};
    const dtype_id dts[3] = {DT_F32, DT_F16, DT_BF16};
    float *dy = poisoned(n * D);
    for (int i = 0; i < 3; i++) {
        void *dt = up_bytes(tabs[i], (size_t)(V * D) * dtype_size(dts[i]));
        CHECK_OK(kern_embed(ref, tabs[i], dts[i], V, D, ids, n, want));
        CHECK_OK(kern_embed(gpu, dt, dts[i], V, D, ids, n, dy));
        char what[64];
        snprintf(what, sizeof what, "embed %s table 50 x 88", dtype_name(dts[i]));
        cmp(what, got = down(dy, n * D), want, n * D, 0), free(got);
        kern_release(gpu, dt);
    }
    int32_t bad = 50;
    CHECK_FAILS(kern_embed(gpu, dy, DT_F32, V, D, &bad, 1, dy));
    kern_release(gpu, dy);
    free(tf), free(th), free(tb), free(want);
}

/* ---- attention ------------------------------------------------------------------------------ */

static void test_attention_one(int64_t tq, int64_t tk, int64_t heads, int64_t kvh, int64_t dim,
                               int causal, int lowp) {
    int64_t ldq = heads * dim + 3, ldk = kvh * dim + 5, ldo = heads * dim + 1;
    float *q = rnd(tq * ldq, 1), *k = rnd(tk * ldk, 1), *v = rnd(tk * ldk, 1);
    float *want = rnd(tq * ldo, 1), *dq = up(q, tq * ldq), *dk = up(k, tk * ldk);
    float *dv = up(v, tk * ldk), *dout = up(want, tq * ldo), *got;
    kern_attn a = {.q = q, .k = k, .v = v, .out = want, .ldq = ldq, .ldk = ldk, .ldv = ldk,
                   .ldo = ldo, .tq = tq, .tk = tk, .heads = heads, .kv_heads = kvh, .dim = dim,
                   .scale = 1.0f / sqrtf((float)dim), .causal = causal, .lowp = lowp};
    CHECK_OK(kern_attention(ref, &a));
    a.q = dq, a.k = dk, a.v = dv, a.out = dout;
    CHECK_OK(kern_attention(gpu, &a));
    char what[96];
    snprintf(what, sizeof what, "attention tq=%lld tk=%lld h=%lld/%lld d=%lld%s%s", (long long)tq,
             (long long)tk, (long long)heads, (long long)kvh, (long long)dim,
             causal ? " causal" : "", lowp ? " lowp" : "");
    /* lowp: q, k, v and the probabilities in f16 (2^-11 each), fp32 accumulation */
    cmp(what, got = down(dout, tq * ldo), want, tq * ldo, lowp ? 4e-3 : 1e-5);
    free(got), free(q), free(k), free(v), free(want);
    kern_release(gpu, dq), kern_release(gpu, dk), kern_release(gpu, dv), kern_release(gpu, dout);
}

static void test_attention(void) {
    test_attention_one(37, 37, 4, 4, 88, 0, 0);      /* ViT-like, head 88 */
    test_attention_one(19, 50, 6, 2, 80, 1, 0);      /* Phi-like after a cached prefix, GQA */
    test_attention_one(130, 130, 2, 2, 64, 1, 0);
    test_attention_one(8, 77, 3, 3, 256, 0, 0);      /* widest head, cross-attention shape */
    test_attention_one(5, 3, 2, 1, 13, 1, 0);        /* odd dim; early queries see nothing */
    /* lowp: the tensor-core GEMM path where it applies (tq, tk >= 64), the fused one else */
    test_attention_one(257, 257, 4, 4, 88, 0, 1);    /* ViT-like */
    test_attention_one(100, 300, 3, 3, 80, 1, 1);    /* causal after a prefix */
    test_attention_one(32, 300, 4, 4, 64, 0, 1);     /* Q-Former cross: fused kernel */
    test_attention_one(70, 90, 4, 2, 80, 1, 1);      /* GQA: fused kernel */
}

static void test_decode(int64_t dim) {
    const int64_t nseq = 3, heads = 4, kvh = 2, cap = 800, ld = kvh * dim + 2;
    const int64_t lens[3] = {1, 300, 777};
    float *kc = rnd(nseq * cap * ld, 1), *vc = rnd(nseq * cap * ld, 1);
    float *q = rnd(nseq * heads * dim, 1), *want = tv_xmalloc(nseq * heads * dim * 4), *got;
    float *dk = up(kc, nseq * cap * ld), *dv = up(vc, nseq * cap * ld);
    float *dq = up(q, nseq * heads * dim), *dout = poisoned(nseq * heads * dim);
    kern_kv hkv[3], dkv[3];
    for (int s = 0; s < 3; s++) {
        hkv[s] = (kern_kv){kc + s * cap * ld, vc + s * cap * ld, lens[s], ld};
        dkv[s] = (kern_kv){dk + s * cap * ld, dv + s * cap * ld, lens[s], ld};
    }
    float sc = 1.0f / sqrtf((float)dim);
    CHECK_OK(kern_attn_decode(ref, nseq, q, heads * dim, hkv, heads, kvh, dim, sc, want,
                              heads * dim));
    CHECK_OK(kern_attn_decode(gpu, nseq, dq, heads * dim, dkv, heads, kvh, dim, sc, dout,
                              heads * dim));
    char what[80];
    snprintf(what, sizeof what, "attn_decode 3 seqs (1, 300, 777), GQA 4/2, d=%lld",
             (long long)dim);
    cmp(what, got = down(dout, nseq * heads * dim), want, nseq * heads * dim, 1e-5);
    free(got), free(kc), free(vc), free(q), free(want);
    kern_release(gpu, dk), kern_release(gpu, dv), kern_release(gpu, dq), kern_release(gpu, dout);
}

/* ---- memory calls ----------------------------------------------------------------------------- */

static void test_memory(void) {
    float *h = rnd(64, 1), back[64];
    float *a = up(h, 64), *b = poisoned(64);
    CHECK_OK(kern_copy(gpu, b, a, 64 * 4));
    CHECK_OK(kern_download(gpu, back, b, sizeof back));
    CHECK(memcmp(back, h, sizeof back) == 0);
    /* 2-D: rows of 5 floats at pitch 8 -> pitch 5 */
    CHECK_OK(kern_copy2d(gpu, b, 5 * 4, a, 8 * 4, 5 * 4, 4));
    CHECK_OK(kern_download(gpu, back, b, 20 * 4));
    int ok = 1;
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 5; i++) ok &= back[r * 5 + i] == h[r * 8 + i];
    CHECK_MSG(ok, "copy2d");
    /* row scatter: rows 0, 1, 2 of a (pitch 16 floats, 6 wide) to b+40, b+0, b+20 */
    void *dst[3] = {b + 40, b, b + 20};
    CHECK_OK(kern_copy_rows(gpu, 3, dst, a, 16 * 4, 6 * 4));
    CHECK_OK(kern_download(gpu, back, b, sizeof back));
    ok = 1;
    for (int i = 0; i < 6; i++)
        ok &= back[40 + i] == h[i] && back[i] == h[16 + i] && back[20 + i] == h[32 + i];
    CHECK_MSG(ok, "copy_rows");
    kern_device dev;
    CHECK_OK(kern_device_info(gpu, &dev));
    CHECK(dev.is_gpu && dev.mem_total > 0 && dev.mem_used > 0 && dev.device[0]);
    CHECK_OK(kern_sync(gpu));
    CHECK_OK(kern_device_info(gpu, &dev));
    printf("  device %s: %.0f MB used of %.0f MB, busy %.2f ms so far\n", dev.device,
           dev.mem_used / 1e6, dev.mem_total / 1e6, dev.busy_ms);
    CHECK(dev.busy_ms > 0);
    CHECK(!kern_is_host(gpu) && kern_is_host(ref));
    kern_release(gpu, a), kern_release(gpu, b), free(h);
}

/* Without a GPU: what the fallback promises. "cuda" is refused with TV_EUNSUPPORTED and a
 * message, "auto" gives a working CPU backend, an unknown name is refused. */
static void skip_checks(int rc) {
    CHECK_EQ_INT(rc, TV_EUNSUPPORTED);
    CHECK(strstr(err_msg(), "CUDA") != NULL || strstr(err_msg(), "cuda") != NULL);
    kern_be *be = NULL;
    CHECK_OK(kern_new_device("auto", 1, &be));
    CHECK(be && kern_is_host(be));
    float x[3] = {1, 2, 3}, y[3];
    if (be) CHECK_OK(kern_add(be, x, x, y, 3));
    CHECK(y[2] == 6.0f);
    kern_free(be);
    be = NULL;
    CHECK_FAILS(kern_new_device("tpu", 1, &be));
    CHECK(be == NULL);
}

int main(void) {
    CHECK_OK(kern_cpu_new(1, KERN_ISA_REF, &ref));
    int rc = kern_new_device("cuda", 0, &gpu);
    if (rc < 0) {
        printf("test_cuda_ops: skipped: no CUDA GPU (%s)\n", err_msg());
        skip_checks(rc);
        kern_free(ref);
        return check_finish("test_cuda_ops");
    }
    printf("CUDA backend: %s\n", kern_name(gpu));
    test_memory();
    test_elementwise();
    test_norms();
    test_softmax();
    test_rope();
    test_embed();
    test_matmul();
    test_attention();
    test_decode(80);
    test_decode(88);
    kern_free(gpu);
    kern_free(ref);
    return check_finish("test_cuda_ops");
}
