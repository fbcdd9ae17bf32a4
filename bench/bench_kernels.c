/* bench_kernels — the CPU backend against the machine's physical limits. One line each:
 * memory read bandwidth (streaming sum over 1 GiB, all threads), FMA peak (register-only FMA
 * loop, all threads), f32 matmul at ViT-g's M=1025 K=1408 N=1408 (% of FMA peak), and q8 / f16
 * matvec at Phi-2's fc1 shape M=1 K=2560 N=10240 (weight GB/s, % of bandwidth; weights rotate
 * over copies larger than the last-level cache so they really come from DRAM).
 * Usage: bench_kernels [threads]   (default: one per core) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cpu_features.h"
#include "dtype.h"
#include "err.h"
#include "machine_limits.h"
#include "ops.h"
#include "pool.h"
#include "quant.h"

/* ---- matmul -------------------------------------------------------------------------------- */

static float *rnd(int64_t n) {
    float *p = tv_xmalloc((size_t)n * sizeof *p);
    uint32_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
    return p;
}

static void bench_gemm(kern_be *be, double peak) {
    const int64_t m = 1025, k = 1408, n = 1408;
    float *x = rnd(m * k), *w = rnd(n * k), *b = rnd(n), *y = tv_xmalloc((size_t)(m * n) * 4);
    kern_weight kw = {.type = KERN_W_F32, .n = n, .k = k, .data = w};
    kern_matmul(be, x, m, &kw, b, y);
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t = clk_now_s();
        if (kern_matmul(be, x, m, &kw, b, y)) { fprintf(stderr, "%s\n", err_msg()); exit(1); }
        t = clk_now_s() - t;
        if (t < best) best = t;
    }
    double gf = 2.0 * m * n * k / best / 1e9;
    printf("f32 matmul M=1025 K=1408 N=1408: %.1f GFLOP/s = %.0f%% of FMA peak (%.2f ms, %s)\n",
           gf, 100 * gf / peak, best * 1e3, kern_name(be));
    free(x); free(w); free(b); free(y);
}

static void bench_matvec(kern_be *be, kern_wtype t, double bw) {
    const int64_t k = 2560, n = 10240;
    enum { COPIES = 6 };      /* > 150 MB in all: far beyond any last-level cache here */
    kern_weight ws[COPIES];
    float *f = rnd(n * k), *x = rnd(k), *y = tv_xmalloc((size_t)n * 4);
    size_t bytes = 0;
    for (int c = 0; c < COPIES; c++) {
        ws[c] = (kern_weight){.type = t, .n = n, .k = k};
        if (t == KERN_W_F16) {
            uint16_t *h = tv_xmalloc((size_t)(n * k) * 2);
            for (int64_t i = 0; i < n * k; i++) h[i] = dtype_f32_to_f16(f[i]);
            ws[c].data = h;
            bytes = (size_t)(n * k) * 2;
        } else {
            int8_t *q = tv_xmalloc((size_t)quant_q8_bytes(n, k));
            float *s = tv_xmalloc((size_t)(n * k / 32) * 4);
            quant_q8(f, n, k, q, s);
            ws[c].data = q;
            ws[c].scale = s;
            bytes = (size_t)(n * k) + (size_t)(n * k / 32) * 4;
        }
    }
    double best = 1e30;
    for (int rep = 0; rep < 5 * COPIES; rep++) {
        double tm = clk_now_s();
        kern_matmul(be, x, 1, &ws[rep % COPIES], NULL, y);
        tm = clk_now_s() - tm;
        if (rep >= COPIES && tm < best) best = tm;
    }
    double gbs = (double)bytes / best / 1e9;
    printf("%s matvec M=1 K=2560 N=10240: %.1f GB/s of weights = %.0f%% of read bandwidth "
           "(%.2f ms, %.1f MB)\n", kern_wtype_name(t), gbs, 100 * gbs / bw, best * 1e3,
           (double)bytes / 1e6);
    for (int c = 0; c < COPIES; c++) {
        free((void *)ws[c].data);
        free((void *)ws[c].scale);
    }
    free(f); free(x); free(y);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    const cpu_features *cf = cpu_get_features();
    if (threads <= 0) threads = cf->n_cores;
    char feat[128];
    printf("cpu: %s, %d threads\n", cpu_features_str(feat, sizeof feat), threads);
    if (!(cf->avx2 && cf->fma)) {
        printf("no AVX2+FMA: this benchmark measures the AVX2 path only\n");
        return 0;
    }
    pool *p = pool_new(threads);
    kern_be *be = NULL;
    if (!p || kern_cpu_new(threads, KERN_ISA_AUTO, &be)) {
        fprintf(stderr, "%s\n", err_msg());
        return 1;
    }
    double bw = lim_bandwidth(p), peak = lim_fma_peak(p);
    printf("memory read bandwidth: %.1f GB/s; FMA peak: %.1f GFLOP/s (machine_limits.h, %d "
           "threads)\n", bw, peak, pool_n_threads(p));
    pool_free(p);
    bench_gemm(be, peak);
    bench_matvec(be, KERN_W_Q8, bw);
    bench_matvec(be, KERN_W_F16, bw);
    kern_free(be);
    return 0;
}
