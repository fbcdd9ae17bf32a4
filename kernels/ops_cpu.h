/* ops_cpu — internal to the CPU backend: the per-ISA inner kernels that ops_cpu.c's threaded
 * drivers call on one tile / row / range. ops_ref.c is the plain-C reference, ops_avx2.c the
 * AVX2+FMA+F16C version; both must compute the same math (tests compare them op by op). */
#ifndef TV_KERN_OPS_CPU_H
#define TV_KERN_OPS_CPU_H

#include "ops.h"

/* Matmul blocking (shared so the drivers' task split is independent of the ISA):
 * small M (<= CPU_MM_SMALL_M) runs as dot products over N chunks; larger M in tiles of
 * CPU_MM_MC rows x CPU_MM_NC columns, K in blocks of CPU_MM_KC (a multiple of the q block). */
#define CPU_MM_SMALL_M 4
#define CPU_MM_NCHUNK 64      /* columns per task when M is small */
#define CPU_MM_MC 96
#define CPU_MM_NC 256
#define CPU_MM_KC 256
/* Per-thread scratch, in floats: one packed KC x NC weight panel. */
#define CPU_WORK_FLOATS ((int64_t)CPU_MM_KC * CPU_MM_NC)

typedef struct {
    const char *name;
    /* y[i, j] = x[i, :] . W[j, :] (+ bias[j]) for i in [i0, i1), j in [n0, n1); x stride w->k,
     * y stride w->n. work: CPU_WORK_FLOATS floats of this thread's scratch. */
    void (*matmul_tile)(const float *x, const kern_weight *w, const float *bias, float *y,
                        int64_t i0, int64_t i1, int64_t n0, int64_t n1, float *work);
    void (*layernorm_row)(const float *x, float *y, int64_t n, const float *w, const float *b,
                          float eps);
    void (*rmsnorm_row)(const float *x, float *y, int64_t n, const float *w, float eps);
    void (*gelu)(const float *x, float *y, int64_t n);
    void (*gelu_tanh)(const float *x, float *y, int64_t n);
    void (*softmax_row)(const float *x, float *y, int64_t n);
    /* out[d] = softmax_j(scale * q.k_j) . v_j over nk keys (rows at strides ldk, ldv); nk == 0
     * gives zeros. d <= KERN_MAX_HEAD_DIM. */
    void (*attn_row)(const float *q, const float *k, int64_t ldk, const float *v, int64_t ldv,
                     int64_t nk, int64_t d, float scale, float *out);
    void (*add)(const float *a, const float *b, float *y, int64_t n);
    void (*scale)(const float *x, float s, float *y, int64_t n);
} cpu_isa;

extern const cpu_isa cpu_isa_ref;

/* The AVX2 kernels, or NULL when not compiled for x86-64. Callers check the CPU first. */
const cpu_isa *cpu_isa_avx2(void);

#endif
