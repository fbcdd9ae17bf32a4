/* The measurements behind machine_limits.h: a plain streaming sum and inline-asm FMA chains
 * (no library offers them; they must do exactly this and nothing the compiler can fold). */
#include "machine_limits.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"

#define LIM_RUNS 5
#define BW_SLICE (1 << 17)   /* uint64 per task: 1 MiB */

typedef struct { const uint64_t *buf; uint64_t *part; } bw_ctx;

static void bw_task(void *ctx, int64_t task, int thread) {
    (void)thread;
    bw_ctx *c = ctx;
    const uint64_t *p = c->buf + task * BW_SLICE;
    uint64_t a = 0, b = 0, d = 0, e = 0;
    for (int64_t i = 0; i < BW_SLICE; i += 4) {
        a += p[i];
        b += p[i + 1];
        d += p[i + 2];
        e += p[i + 3];
    }
    c->part[task] = a + b + d + e;
}

double lim_bandwidth(pool *p) {
    const int64_t n = (int64_t)1 << 27, tasks = n / BW_SLICE;   /* 1 GiB */
    uint64_t *buf = malloc((size_t)n * 8), *part = calloc((size_t)tasks, 8);
    if (!buf || !part) {
        fprintf(stderr, "bench: no memory for the 1 GiB bandwidth buffer\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) buf[i] = (uint64_t)i;
    bw_ctx c = {buf, part};
    double best = 1e30;
    for (int r = 0; r < LIM_RUNS; r++) {
        double t = clk_now_s();
        pool_run(p, tasks, bw_task, &c);
        t = clk_now_s() - t;
        best = t < best ? t : best;
    }
    volatile uint64_t sink = 0;   /* the sums are used, so the reads cannot be dropped */
    for (int64_t i = 0; i < tasks; i++) sink += part[i];
    free(buf);
    free(part);
    return (double)n * 8 / best / 1e9;
}

#define FMA_ITERS 20000000L

__attribute__((target("avx2,fma"))) static void fma_task(void *ctx, int64_t task, int thread) {
    (void)thread;
    typedef float v8 __attribute__((vector_size(32)));
    v8 m = {1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f,
            1.0000001f};
    v8 a0 = m, a1 = m * 2, a2 = m * 3, a3 = m * 4, a4 = m * 5, a5 = m * 6, a6 = m * 7,
       a7 = m * 8, a8 = m * 9, a9 = m * 10;
    for (long it = 0; it < FMA_ITERS; it++)
        __asm__ volatile("vfmadd213ps %10, %10, %0\n\tvfmadd213ps %10, %10, %1\n\t"
                         "vfmadd213ps %10, %10, %2\n\tvfmadd213ps %10, %10, %3\n\t"
                         "vfmadd213ps %10, %10, %4\n\tvfmadd213ps %10, %10, %5\n\t"
                         "vfmadd213ps %10, %10, %6\n\tvfmadd213ps %10, %10, %7\n\t"
                         "vfmadd213ps %10, %10, %8\n\tvfmadd213ps %10, %10, %9"
                         : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5),
                           "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9)
                         : "x"(m));
    v8 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9;
    ((volatile float *)ctx)[task] = s[0];
}

double lim_fma_peak(pool *p) {
    int threads = pool_n_threads(p);
    float *sink = calloc((size_t)threads, sizeof *sink);
    if (!sink) {
        fprintf(stderr, "bench: out of memory\n");
        exit(1);
    }
    double best = 1e30;
    for (int r = 0; r < LIM_RUNS; r++) {
        double t = clk_now_s();
        pool_run(p, threads, fma_task, sink);
        t = clk_now_s() - t;
        best = t < best ? t : best;
    }
    free(sink);
    return (double)threads * FMA_ITERS * 10 * 16 / best / 1e9;
}
