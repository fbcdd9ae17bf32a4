/* ops_cpu — internal to the CPU backend: the per-ISA inner kernels that ops_cpu.c's threaded
 * drivers call on one tile / row / range. ops_ref.c is the plain-C reference, ops_avx2.c the
 * AVX2+FMA+F16C version; both must compute the same math (tests compare them op by op). */
#ifndef TV_KERN_OPS_CPU_H
#define TV_KERN_OPS_CPU_H

#include "ops.h"

/* Matmul blocking (shared so the drivers' task split is independent of the ISA):
 * small M (<= CPU_MM_SMALL_M) runs as dot products over N chunks; larger M in tasks of
 * CPU_MM_NC columns by at least CPU_MM_MC rows, K in blocks of at most CPU_MM_KC (cpu_mm_kc). */
#define CPU_MM_SMALL_M 4
#define CPU_MM_NCHUNK 64      /* columns per task when M is small */
#define CPU_MM_MC 96          /* fewest rows per large-M task */
#define CPU_MM_MALIGN 24      /* large-M task rows are a multiple of this (of any MR) */
#define CPU_MM_TASKS 4        /* large-M tasks per thread to aim for (load balance) */
#define CPU_MM_MR 6           /* rows of the SIMD micro-kernel's tile */
#define CPU_MM_NR 16          /* large-M column blocks are whole panels of this many */
/* NC and KC can be set at build time (-DCPU_MM_KC=...) to tune for another cache size. The
 * micro-kernel streams its weight panel (kc x 16 floats) from L2 and its 6 rows of x from L1/L2,
 * so long K blocks cost it nothing, while every K block is one more pass over y and one more
 * packing pass. On the 2-core Zen 3 (512 KB L2) ViT-g's matmuls ran fastest with (almost) no K
 * blocking: at 2 threads, against blocks of 768, fc2 (K = 6144, two blocks of 3072) went from
 * 184-187 to 188-190 GFLOP/s and qkv (K = 1408, one block) from 186-187 to 191-192; against the
 * blocks of 384 used before session 5 the four matmuls gained 3-6% (bench/RESULTS.md, session
 * 5). Strassen's seven products keep blocks of at most CPU_MM_STRASSEN_KC: they need four
 * packed quadrant panels and five A sums per block, so their scratch grows with the block. */
#ifndef CPU_MM_NC
#define CPU_MM_NC 192
#endif
#ifndef CPU_MM_KC
#define CPU_MM_KC 3072        /* most K per block; cpu_mm_kc cuts K into equal blocks */
#endif
#define CPU_MM_STRASSEN_KC 768
#define CPU_MM_STRASSEN_MC 264   /* most quadrant rows per Strassen task (scratch below) */
/* Per-thread scratch, in floats: a plain matmul's packed KC x NC weight panel, or what a
 * Strassen task needs: its four packed weight-quadrant panels, one more for their sums (each
 * CPU_STRASSEN_PANEL_FLOATS) and the five A-quadrant sums of its rows for one K block. */
#define CPU_PLAIN_PANEL_FLOATS ((int64_t)CPU_MM_KC * CPU_MM_NC)
#define CPU_STRASSEN_PANEL_FLOATS ((int64_t)CPU_MM_STRASSEN_KC * CPU_MM_NC)
#define CPU_STRASSEN_FLOATS \
    (5 * CPU_STRASSEN_PANEL_FLOATS + 5 * (int64_t)CPU_MM_STRASSEN_MC * CPU_MM_STRASSEN_KC)
#define CPU_WORK_FLOATS \
    (CPU_PLAIN_PANEL_FLOATS > CPU_STRASSEN_FLOATS ? CPU_PLAIN_PANEL_FLOATS : CPU_STRASSEN_FLOATS)

/* The K block for a matmul of inner size k whose blocks may hold at most kmax (CPU_MM_KC, or
 * CPU_MM_STRASSEN_KC for Strassen's half-size products): k cut into the fewest blocks, of equal
 * size rounded up to a multiple of 32 (a q8/q4 block starts every block). Equal blocks avoid a
 * short last one, whose pass over y costs as much as a full one's. */
static inline int64_t cpu_mm_kc(int64_t k, int64_t kmax) {
    int64_t nb = (k + kmax - 1) / kmax;
    int64_t kc = ((k + nb - 1) / nb + 31) / 32 * 32;
    return kc < kmax ? kc : kmax;
}

/* One level of Strassen's algorithm for y = x . W^T, on quadrants indexed 2*row + col (0 = 11,
 * 1 = 12, 2 = 21, 3 = 22) of A = x [M, K], B = W^T [K, N] and C = y [M, N]: product p is
 * (sum_q a[q] A_q) . (sum_q b[q] B_q), and C_q += c[q] * product for each q. Seven products of
 * [M/2, K/2] x [K/2, N/2] replace eight: 12.5% fewer multiply-adds; the sums cost one pass over
 * quadrant-sized panels the kernel packs anyway. Products that first touch a C quadrant come
 * first in the table (C11, C22: M1; C21: M2; C12: M3), so they can store instead of add. */
typedef struct {
    signed char a[4], b[4], c[4];
} cpu_mm_product;

/* One large-M matmul as an ISA's gemm_task sees it: y = x . W^T (+ bias) as n_prod products of
 * [mh, kh] x [kh, nh] quadrants. Plain: one product, mh = m, kh = k, nh = n. Strassen: the seven
 * products (ops_cpu.c), mh = ceil(m / 2) (an odd m's missing last row of the lower quadrants
 * reads as zeros and is never written), kh = k / 2, nh = n / 2 (k and n even). */
typedef struct {
    const float *x;           /* [m, k] */
    const kern_weight *w;     /* [n, k] */
    const float *bias;        /* [n] or NULL */
    float *y;                 /* [m, n] */
    int64_t m, k, n, mh, kh, nh;
    const cpu_mm_product *prod;
    int n_prod;
} cpu_gemm;

/* Blocked attention: queries per score block, and the scratch a task needs (packed keys and
 * values of one head, one block of scores), in floats. */
#define CPU_ATT_QB 48
static inline int64_t cpu_attn_floats(int64_t tk, int64_t dim) {
    int64_t nk = (tk + 15) / 16 * 16, d = (dim + 15) / 16 * 16;
    return dim * nk + tk * d + (int64_t)CPU_ATT_QB * nk;
}

typedef struct {
    const char *name;
    /* y[i, j] = x[i, :] . W[j, :] (+ bias[j]) for i in [i0, i1), j in [n0, n1); x stride w->k,
     * y stride w->n. work: CPU_WORK_FLOATS floats of this thread's scratch. Called for every M
     * when gemm_task is NULL, else only for M <= CPU_MM_SMALL_M. */
    void (*matmul_tile)(const float *x, const kern_weight *w, const float *bias, float *y,
                        int64_t i0, int64_t i1, int64_t n0, int64_t n1, float *work);
    /* The large-M path (NULL: matmul_tile does every M): rows [i0, i1) and columns [n0, n1) of
     * every product of g (quadrant coordinates: i1 <= g->mh, n1 <= g->nh), written into all the
     * C quadrants they touch. work: CPU_WORK_FLOATS floats of this thread's scratch. */
    void (*gemm_task)(const cpu_gemm *g, int64_t i0, int64_t i1, int64_t n0, int64_t n1,
                      float *work);
    /* Attention for query rows [i0, i1) of head h (NULL: attn_row per query). work:
     * CPU_WORK_FLOATS floats, of which it needs cpu_attn_floats(a->tk, a->dim) (the driver
     * checks). */
    void (*attn_task)(const kern_attn *a, int64_t h, int64_t i0, int64_t i1, float *work);
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
