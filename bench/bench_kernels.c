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
#include "ops.h"
#include "pool.h"
#include "quant.h"

/* ---- bandwidth: each task sums a 1 MiB slice ------------------------------------------------ */

#define BW_SLICE (1 << 18)   /* floats per task */

typedef struct { const float *buf; double *part; } bw_job;

__attribute__((target("avx2"))) static void bw_task_avx(void *ctx, int64_t task, int thread) {
    bw_job *j = ctx;
    const float *p = j->buf + task * BW_SLICE;
    typedef float v8 __attribute__((vector_size(32)));
    v8 a = {0}, b = {0}, c = {0}, d = {0};
    for (int64_t i = 0; i < BW_SLICE; i += 32) {
        v8 x0, x1, x2, x3;
        memcpy(&x0, p + i, 32); memcpy(&x1, p + i + 8, 32);
        memcpy(&x2, p + i + 16, 32); memcpy(&x3, p + i + 24, 32);
        a += x0; b += x1; c += x2; d += x3;
    }
    a += b + c + d;
    j->part[task] = a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

static double bench_bandwidth(pool *p) {
    const int64_t n = (int64_t)1 << 28, tasks = n / BW_SLICE;   /* 1 GiB */
    float *buf = malloc((size_t)n * sizeof *buf);
    double *part = calloc((size_t)tasks, sizeof *part);
    if (!buf || !part) { fprintf(stderr, "no memory for 1 GiB\n"); exit(1); }
    for (int64_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
    bw_job j = {buf, part};
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t = clk_now_s();
        pool_run(p, tasks, bw_task_avx, &j);
        t = clk_now_s() - t;
        if (t < best) best = t;
    }
    double sink = 0;
    for (int64_t i = 0; i < tasks; i++) sink += part[i];
    free(buf); free(part);
    double gbs = (double)n * 4 / best / 1e9;
    printf("memory read bandwidth: %.1f GB/s (1 GiB streaming sum, %d threads; checksum %.0f)\n",
           gbs, pool_n_threads(p), sink);
    return gbs;
}

/* ---- FMA peak ------------------------------------------------------------------------------- */

#define FMA_ITERS 20000000L

/* Twelve independent accumulators (more than FMA latency x FMA ports on current x86 cores),
 * each updated by one vfmadd per iteration, all in registers. */
__attribute__((target("avx2,fma"))) static void fma_task(void *ctx, int64_t task, int thread) {
    typedef float v8 __attribute__((vector_size(32)));
    v8 m = {1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f,
            1.0000001f};
    v8 a0 = m * 1, a1 = m * 2, a2 = m * 3, a3 = m * 4, a4 = m * 5, a5 = m * 6, a6 = m * 7,
       a7 = m * 8, a8 = m * 9, a9 = m * 10, a10 = m * 11, a11 = m * 12;
    for (long it = 0; it < FMA_ITERS; it++) {
        __asm__ volatile(
            "vfmadd213ps %12, %12, %0\n\tvfmadd213ps %12, %12, %1\n\t"
            "vfmadd213ps %12, %12, %2\n\tvfmadd213ps %12, %12, %3\n\t"
            "vfmadd213ps %12, %12, %4\n\tvfmadd213ps %12, %12, %5\n\t"
            "vfmadd213ps %12, %12, %6\n\tvfmadd213ps %12, %12, %7\n\t"
            "vfmadd213ps %12, %12, %8\n\tvfmadd213ps %12, %12, %9\n\t"
            "vfmadd213ps %12, %12, %10\n\tvfmadd213ps %12, %12, %11"
            : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), "+x"(a7),
              "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11)
            : "x"(m));
    }
    v8 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    ((volatile float *)ctx)[task] = s[0];
}

static double bench_fma(pool *p) {
    int n = pool_n_threads(p);
    float sink[1024];
    double t = clk_now_s();
    pool_run(p, n, fma_task, sink);
    t = clk_now_s() - t;
    double gf = (double)n * FMA_ITERS * 12 * 16 / t / 1e9;
    printf("FMA peak: %.1f GFLOP/s (register-only ymm FMA, 12 chains per thread, %d threads)\n", gf, n);
    return gf;
}

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
    double bw = bench_bandwidth(p), peak = bench_fma(p);
    pool_free(p);
    bench_gemm(be, peak);
    bench_matvec(be, KERN_W_Q8, bw);
    bench_matvec(be, KERN_W_F16, bw);
    kern_free(be);
    return 0;
}
