/* AVX2 + FMA + F16C kernels. Compiled for those instructions with a target pragma (no special
 * build flags), and only ever called after cpu_get_features() said the CPU has them, so the
 * binary still runs on older CPUs (which get the plain-C reference).
 *
 * matmul: small M (decode) streams each weight row once, converting 8 weights at a time to f32
 * in registers and doing dot products with the (few) activation rows; q8/q4 rows are widened a
 * 32-block at a time and scaled once per block; the next rows are software-prefetched (decode is
 * a stream of short rows the hardware prefetcher ramps up on too late). Large M (prefill, the
 * vision encoder) packs a KC x NC block of W, converted to f32, into 16-column panels in the
 * per-thread scratch, once for all of a task's (many) rows, then runs a 6x16 register-tiled FMA
 * micro-kernel over it that adds into y in registers; the same task code runs the seven
 * quadrant products of Strassen's algorithm (ops_cpu.h). Attention over many queries runs on
 * the same micro-kernel: scores against packed keys, then probabilities against packed values. */
#include <stddef.h>
#include <stdint.h>

#include "ops_cpu.h"

#if defined(__x86_64__)

extern const cpu_isa cpu_isa_avx2_table;
const cpu_isa *cpu_isa_avx2(void) { return &cpu_isa_avx2_table; }

#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "quant.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Lanes [0, r) set, r in [0, 8]. */
static inline __m256i tail_mask(int64_t r) {
    static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(bits + 8 - r));
}

/* e^x to ~1 ulp: x = n ln2 + r, |r| <= ln2/2, e^r by its Taylor series to r^7 (error < 6e-9),
 * times 2^n built in the exponent bits. Below -87.3 the result is 0 (so -inf gives 0); above
 * 88.3 it saturates near 2e38. */
static inline __m256 vexp(__m256 x) {
    __m256 zero_mask = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* ln2 split in two so n*ln2_hi is exact */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(zero_mask, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* ---- weight loads: 8 consecutive weights of one row, as f32 ------------------------------- */
/* row: the row's first stored byte; srow: its scales (q8/q4); kk: a multiple of 8. */

static inline __m256 ld_f32(const void *row, const float *srow, int64_t kk) {
    return _mm256_loadu_ps((const float *)row + kk);
}
static inline __m256 ld_f16(const void *row, const float *srow, int64_t kk) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + kk)));
}
static inline __m256 ld_bf16(const void *row, const float *srow, int64_t kk) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + kk)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
static inline __m256 ld_q8(const void *row, const float *srow, int64_t kk) {
    __m128i b = _mm_loadl_epi64((const __m128i *)((const int8_t *)row + kk));
    __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    return _mm256_mul_ps(v, _mm256_broadcast_ss(srow + kk / QUANT_BLOCK));
}
/* q4: chunk c = (kk % 32) / 8 of a block is bytes (c & 1)*8 .. +8, low nibbles for c < 2. */
static inline __m256 ld_q4(const void *row, const float *srow, int64_t kk) {
    const uint8_t *blk = (const uint8_t *)row + (kk / QUANT_BLOCK) * (QUANT_BLOCK / 2);
    int c = (int)(kk % QUANT_BLOCK) / 8;
    __m128i b = _mm_loadl_epi64((const __m128i *)(blk + (c & 1) * 8));
    b = _mm_srl_epi16(b, _mm_cvtsi32_si128((c >> 1) * 4));
    b = _mm_sub_epi8(_mm_and_si128(b, _mm_set1_epi8(0x0f)), _mm_set1_epi8(8));
    __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    return _mm256_mul_ps(v, _mm256_broadcast_ss(srow + kk / QUANT_BLOCK));
}

/* Start of row j's stored bytes, and one weight as f32 (for K tails; f32/f16/bf16 only, since
 * quantised K is a multiple of 32). */
static inline const void *w_row(const kern_weight *w, int64_t j) {
    switch (w->type) {
    case KERN_W_F32: return (const float *)w->data + j * w->k;
    case KERN_W_F16: case KERN_W_BF16: return (const uint16_t *)w->data + j * w->k;
    case KERN_W_Q8: return (const int8_t *)w->data + j * w->k;
    case KERN_W_Q4: return (const uint8_t *)w->data + j * (w->k / 2);
    }
    return NULL;
}
static inline const float *w_srow(const kern_weight *w, int64_t j) {
    return w->scale ? w->scale + j * (w->k / QUANT_BLOCK) : NULL;
}
static inline float w_get(kern_wtype t, const void *row, int64_t kk) {
    switch (t) {
    case KERN_W_F32: return ((const float *)row)[kk];
    case KERN_W_F16: return dtype_f16_to_f32(((const uint16_t *)row)[kk]);
    case KERN_W_BF16: return dtype_bf16_to_f32(((const uint16_t *)row)[kk]);
    default: return 0;   /* quantised rows have no tail */
    }
}

/* ---- matmul, small M: dot products --------------------------------------------------------- */

/* x: row i0 (mr rows at stride K); y: row i0 (stride N). Columns [n0, n1). For M == 1 four
 * weight rows go at once (four independent FMA chains); otherwise one weight row against up to
 * four activation rows (spare rows duplicate the last one and are not stored). */
#define DEF_ROWDOT(NAME, LD, ESZ)                                                             \
    static void NAME(const float *x, int64_t mr, const kern_weight *w, const float *bias,      \
                     float *y, int64_t n0, int64_t n1) {                                       \
        const int64_t K = w->k, N = w->n, K8 = K & ~(int64_t)7;                                \
        const uintptr_t pf = (uintptr_t)(4 * K * (ESZ));   /* 4 rows on: the next group */     \
        int64_t j = n0;                                                                        \
        if (mr == 1)                                                                           \
            for (; j + 4 <= n1; j += 4) {                                                      \
                const void *r0 = w_row(w, j), *r1 = w_row(w, j + 1), *r2 = w_row(w, j + 2),    \
                           *r3 = w_row(w, j + 3);                                              \
                const float *s0 = w_srow(w, j), *s1 = w_srow(w, j + 1),                        \
                            *s2 = w_srow(w, j + 2), *s3 = w_srow(w, j + 3);                    \
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                    \
                for (int64_t kk = 0; kk < K8; kk += 8) {                                       \
                    if (((kk * (ESZ)) & 63) == 0) {                                            \
                        _mm_prefetch((const char *)((uintptr_t)r0 + pf + (uintptr_t)(kk * (ESZ))), _MM_HINT_T0); \
                        _mm_prefetch((const char *)((uintptr_t)r1 + pf + (uintptr_t)(kk * (ESZ))), _MM_HINT_T0); \
                        _mm_prefetch((const char *)((uintptr_t)r2 + pf + (uintptr_t)(kk * (ESZ))), _MM_HINT_T0); \
                        _mm_prefetch((const char *)((uintptr_t)r3 + pf + (uintptr_t)(kk * (ESZ))), _MM_HINT_T0); \
                    }                                                                          \
                    __m256 xv = _mm256_loadu_ps(x + kk);                                       \
                    a0 = _mm256_fmadd_ps(xv, LD(r0, s0, kk), a0);                              \
                    a1 = _mm256_fmadd_ps(xv, LD(r1, s1, kk), a1);                              \
                    a2 = _mm256_fmadd_ps(xv, LD(r2, s2, kk), a2);                              \
                    a3 = _mm256_fmadd_ps(xv, LD(r3, s3, kk), a3);                              \
                }                                                                              \
                float t0 = hsum(a0), t1 = hsum(a1), t2 = hsum(a2), t3 = hsum(a3);              \
                for (int64_t kk = K8; kk < K; kk++) {                                          \
                    t0 += x[kk] * w_get(w->type, r0, kk);                                      \
                    t1 += x[kk] * w_get(w->type, r1, kk);                                      \
                    t2 += x[kk] * w_get(w->type, r2, kk);                                      \
                    t3 += x[kk] * w_get(w->type, r3, kk);                                      \
                }                                                                              \
                y[j] = t0 + (bias ? bias[j] : 0.0f);                                           \
                y[j + 1] = t1 + (bias ? bias[j + 1] : 0.0f);                                   \
                y[j + 2] = t2 + (bias ? bias[j + 2] : 0.0f);                                   \
                y[j + 3] = t3 + (bias ? bias[j + 3] : 0.0f);                                   \
            }                                                                                  \
        const float *x0 = x, *x1 = x + (mr > 1 ? 1 : 0) * K, *x2 = x + (mr > 2 ? 2 : 0) * K,   \
                    *x3 = x + (mr > 3 ? 3 : 0) * K;                                            \
        for (; j < n1; j++) {                                                                  \
            const void *r = w_row(w, j);                                                       \
            const float *s = w_srow(w, j);                                                     \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                        \
            for (int64_t kk = 0; kk < K8; kk += 8) {                                           \
                __m256 wv = LD(r, s, kk);                                                      \
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + kk), wv, a0);                        \
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + kk), wv, a1);                        \
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + kk), wv, a2);                        \
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x3 + kk), wv, a3);                        \
            }                                                                                  \
            float t[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};                             \
            const float *xs[4] = {x0, x1, x2, x3};                                             \
            for (int64_t r_ = 0; r_ < mr; r_++) {                                              \
                for (int64_t kk = K8; kk < K; kk++) t[r_] += xs[r_][kk] * w_get(w->type, r, kk); \
                y[r_ * N + j] = t[r_] + (bias ? bias[j] : 0.0f);                               \
            }                                                                                  \
        }                                                                                      \
    }

/* ---- matmul, M == 1 on quantised weights: scale once per block ---------------------------- */

/* Decode is bound by streaming the weights, and on q8/q4 the per-8-weight work (widen, convert,
 * multiply by the block scale, FMA) used to be the limit rather than memory. Here the four rows'
 * 32 products of a block are summed unscaled in f32 and multiplied by the block's scale once:
 * y = sum_b s_b * (sum_{k in b} x_k q_k). Same math as the reference up to f32 rounding order
 * (a relative error of a few K * 2^-24 of sum |x_k w_k|, inside the test's 1e-5). */

/* The 32 weights of block b as integers in f32: v[0..3] hold elements 8i .. 8i+7. */
static inline void blk_q8(const void *row, int64_t b, __m256 v[4]) {
    const int8_t *p = (const int8_t *)row + b * QUANT_BLOCK;
    for (int i = 0; i < 4; i++)
        v[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8 * i))));
}
static inline void blk_q4(const void *row, int64_t b, __m256 v[4]) {
    __m128i raw = _mm_loadu_si128((const __m128i *)((const uint8_t *)row + b * (QUANT_BLOCK / 2)));
    const __m128i low = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, low), eight);                      /* 0..15 */
    __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), low), eight);   /* 16..31 */
    v[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    v[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    v[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    v[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}

/* sum over the block of x * v, as a vector (two chains to shorten the dependency). */
static inline __m256 blk_dot(const __m256 xv[4], const __m256 v[4]) {
    __m256 a = _mm256_mul_ps(xv[0], v[0]), b = _mm256_mul_ps(xv[1], v[1]);
    a = _mm256_fmadd_ps(xv[2], v[2], a);
    b = _mm256_fmadd_ps(xv[3], v[3], b);
    return _mm256_add_ps(a, b);
}

/* Rows are only K bytes long (2560 for Phi-2), too short for the hardware prefetcher to ramp up
 * on each of the four streams, so each 64-byte line of the next group of QROWS rows (the rows
 * are contiguous: the same offset PFDIST rows further on) is prefetched while this group runs.
 * On the 2-core EPYC this took the K=2560 N=10240 q8 matvec from ~70% to ~90% of the measured
 * read bandwidth. A prefetch past the end of the matrix is harmless (it never faults). */
#define QROWS 4
#define PFDIST QROWS
enum { blk_q8_bytes = 32, blk_q4_bytes = 16 };   /* stored bytes per 32-weight block */
#define PF_EVERY(BLK) (64 / BLK##_bytes - 1)      /* prefetch when (b & this) == 0 */
#define DEF_QDOT1(NAME, BLK)                                                                   \
    static void NAME(const float *x, const kern_weight *w, const float *bias, float *y,        \
                     int64_t n0, int64_t n1) {                                                 \
        const int64_t nb = w->k / QUANT_BLOCK;                                                 \
        const uintptr_t pf = (uintptr_t)(PFDIST * (w->k / QUANT_BLOCK) * BLK##_bytes);         \
        for (int64_t j = n0; j < n1; j += QROWS) {                                             \
            int64_t nr = n1 - j < QROWS ? n1 - j : QROWS;                                      \
            const void *r[QROWS];                                                              \
            const float *s[QROWS];                                                             \
            for (int i = 0; i < QROWS; i++) {                                                  \
                r[i] = w_row(w, j + (i < nr ? i : 0));                                         \
                s[i] = w_srow(w, j + (i < nr ? i : 0));                                        \
            }                                                                                  \
            __m256 acc[QROWS];                                                                 \
            for (int i = 0; i < QROWS; i++) acc[i] = _mm256_setzero_ps();                      \
            for (int64_t b = 0; b < nb; b++) {                                                 \
                __m256 xv[4], v[4];                                                            \
                for (int i = 0; i < 4; i++) xv[i] = _mm256_loadu_ps(x + b * QUANT_BLOCK + 8 * i); \
                if ((b & PF_EVERY(BLK)) == 0)                                                  \
                    for (int i = 0; i < QROWS; i++)                                            \
                        _mm_prefetch((const char *)((uintptr_t)r[i] + (uintptr_t)(b * BLK##_bytes) + pf), \
                                     _MM_HINT_T0);                                             \
                for (int i = 0; i < QROWS; i++) {                                              \
                    BLK(r[i], b, v);                                                           \
                    acc[i] = _mm256_fmadd_ps(blk_dot(xv, v), _mm256_broadcast_ss(s[i] + b),    \
                                             acc[i]);                                          \
                }                                                                              \
            }                                                                                  \
            for (int i = 0; i < nr; i++) y[j + i] = hsum(acc[i]) + (bias ? bias[j + i] : 0.0f); \
        }                                                                                      \
    }

DEF_QDOT1(qdot1_q8, blk_q8)
DEF_QDOT1(qdot1_q4, blk_q4)

/* The same for 2..4 activation rows (a decode batch): each weight block is widened once and
 * used for every row; two weight rows at a time keep the 2 x MRX accumulators in registers.
 * MRX is a compile-time constant at each call (always_inline), so nothing spills. */
#define DEF_QDOTM(NAME, BLK)                                                                   \
    static inline __attribute__((always_inline)) void NAME##_mr(                               \
        const float *x, const int MRX, const kern_weight *w, const float *bias, float *y,      \
        int64_t n0, int64_t n1) {                                                              \
        const int64_t K = w->k, N = w->n, nb = K / QUANT_BLOCK;                                \
        const uintptr_t pf = (uintptr_t)(PFDIST * nb * BLK##_bytes);                           \
        for (int64_t j = n0; j < n1; j += 2) {                                                 \
            const int two = n1 - j >= 2;                                                       \
            const void *r[2] = {w_row(w, j), w_row(w, j + two)};                               \
            const float *s[2] = {w_srow(w, j), w_srow(w, j + two)};                            \
            __m256 acc[2][4];                                                                  \
            for (int i = 0; i < 2; i++)                                                        \
                for (int m = 0; m < MRX; m++) acc[i][m] = _mm256_setzero_ps();                 \
            for (int64_t b = 0; b < nb; b++) {                                                 \
                if ((b & PF_EVERY(BLK)) == 0)                                                  \
                    for (int i = 0; i < 2; i++)                                                \
                        _mm_prefetch((const char *)((uintptr_t)r[i] +                          \
                                                    (uintptr_t)(b * BLK##_bytes) + pf),        \
                                     _MM_HINT_T0);                                             \
                for (int i = 0; i < 2; i++) {                                                  \
                    __m256 v[4], sc = _mm256_broadcast_ss(s[i] + b);                           \
                    BLK(r[i], b, v);                                                           \
                    for (int m = 0; m < MRX; m++) {                                            \
                        const float *xb = x + m * K + b * QUANT_BLOCK;                         \
                        __m256 xv[4] = {_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8),          \
                                        _mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24)};   \
                        acc[i][m] = _mm256_fmadd_ps(blk_dot(xv, v), sc, acc[i][m]);            \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
            for (int i = 0; i < 1 + two; i++)                                                  \
                for (int m = 0; m < MRX; m++)                                                  \
                    y[m * N + j + i] = hsum(acc[i][m]) + (bias ? bias[j + i] : 0.0f);          \
        }                                                                                      \
    }                                                                                          \
    static void NAME(const float *x, int64_t mr, const kern_weight *w, const float *bias,      \
                     float *y, int64_t n0, int64_t n1) {                                       \
        switch (mr) {                                                                          \
        case 2: NAME##_mr(x, 2, w, bias, y, n0, n1); break;                                    \
        case 3: NAME##_mr(x, 3, w, bias, y, n0, n1); break;                                    \
        default: NAME##_mr(x, 4, w, bias, y, n0, n1); break;                                   \
        }                                                                                      \
    }

DEF_QDOTM(qdotm_q8, blk_q8)
DEF_QDOTM(qdotm_q4, blk_q4)

/* ESZ: bytes per weight, for the prefetch of the M == 1 loop (q8/q4 have qdot1/qdotm below) */
DEF_ROWDOT(rowdot_f32, ld_f32, 4)
DEF_ROWDOT(rowdot_f16, ld_f16, 2)
DEF_ROWDOT(rowdot_bf16, ld_bf16, 2)

/* ---- matmul, large M: pack W, 6x16 micro-kernel -------------------------------------------- */

#define MR 6
#define NR 16
_Static_assert(MR == CPU_MM_MR && NR == CPU_MM_NR, "the drivers cut tasks in whole tiles");
_Static_assert(CPU_MM_KC % QUANT_BLOCK == 0 && CPU_MM_STRASSEN_KC % QUANT_BLOCK == 0 &&
                   32 % QUANT_BLOCK == 0,
               "every K block (cpu_mm_kc) starts on a q8/q4 scale block");

/* Transposes the 8x8 block in r[0..7] (r[i] = row i) so that r[c] holds column c. */
static inline void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Packs W[n0:n1, k0:k0+kc] as f32 into panels of NR columns: panel p, element (kk, c) at
 * out[p*kc*NR + kk*NR + c] = W[n0 + p*NR + c, k0 + kk]; columns past n1 are zero. Eight weight
 * rows at a time are loaded 8 k's wide and transposed in registers. */
#define DEF_PACK(NAME, LD, ESZ2)                                                               \
    static void NAME(const kern_weight *w, int64_t n0, int64_t n1, int64_t k0, int64_t kc,      \
                     float *out) {                                                             \
        int64_t kc8 = kc & ~(int64_t)7;                                                        \
        const uintptr_t rowb = (uintptr_t)(w->k * (ESZ2) / 2);                                 \
        for (int64_t jb = n0; jb < n1; jb += 8) {                                              \
            int64_t p = (jb - n0) / NR, c0 = (jb - n0) % NR, nv = n1 - jb < 8 ? n1 - jb : 8;    \
            float *panel = out + p * kc * NR + c0;                                             \
            const void *rows[8];                                                               \
            const float *srows[8];                                                             \
            for (int r = 0; r < 8; r++) {                                                      \
                rows[r] = w_row(w, jb + (r < nv ? r : 0));                                     \
                srows[r] = w_srow(w, jb + (r < nv ? r : 0));                                   \
            }                                                                                  \
            __m256i keep = tail_mask(nv);                                                      \
            /* the next 8 rows' lines of this K block, one line per row per 64 bytes */        \
            const uintptr_t next = (uintptr_t)w_row(w, jb) + 8 * rowb;                         \
            for (int64_t kk = 0; kk < kc8; kk += 8) {                                          \
                __m256 v[8];                                                                   \
                uintptr_t off = (uintptr_t)((k0 + kk) * (ESZ2) / 2);                           \
                if ((off & 63) < (uintptr_t)(4 * (ESZ2)))                                      \
                    for (int r = 0; r < 8; r++)                                                \
                        _mm_prefetch((const char *)(next + r * rowb + off), _MM_HINT_T0);      \
                for (int r = 0; r < 8; r++) v[r] = LD(rows[r], srows[r], k0 + kk);             \
                transpose8(v);                                                                 \
                for (int c = 0; c < 8; c++)                                                    \
                    _mm256_storeu_ps(panel + (kk + c) * NR,                                    \
                                     _mm256_and_ps(v[c], _mm256_castsi256_ps(keep)));          \
            }                                                                                  \
            for (int64_t kk = kc8; kk < kc; kk++)                                              \
                for (int r = 0; r < 8; r++)                                                    \
                    panel[kk * NR + r] = r < nv ? w_get(w->type, rows[r], k0 + kk) : 0.0f;     \
        }                                                                                      \
        /* a last half-empty panel: zero its upper 8 columns */                                \
        int64_t cols = n1 - n0;                                                                \
        if (cols % NR && cols % NR <= 8) {                                                     \
            float *panel = out + (cols / NR) * kc * NR + 8;                                    \
            for (int64_t kk = 0; kk < kc; kk++) memset(panel + kk * NR, 0, 8 * sizeof(float)); \
        }                                                                                      \
    }

/* ESZ2: stored bytes per two weights (q4 has half a byte each) */
DEF_PACK(pack_f32, ld_f32, 8)
DEF_PACK(pack_f16, ld_f16, 4)
DEF_PACK(pack_bf16, ld_bf16, 4)
DEF_PACK(pack_q8, ld_q8, 2)
DEF_PACK(pack_q4, ld_q4, 1)

/* Where one micro-kernel tile goes: y (row stride ldy) = (init ? bias : y) + sign * tile, for
 * its first rows x cols (bias NULL reads as 0). Strassen sends a tile to one or two C quadrants. */
typedef struct {
    float *y;
    const float *bias;
    float sign;               /* +1 or -1 */
    int init;
    int64_t rows, cols;
} mm_dst;

static inline void tile_store(const __m256 acc[MR][2], const mm_dst *d, int64_t ldy) {
    if (d->rows == MR && d->cols == NR) {   /* the common case: in registers */
        __m256 s = _mm256_set1_ps(d->sign), z = _mm256_setzero_ps();
        __m256 b0 = d->init && d->bias ? _mm256_loadu_ps(d->bias) : z;
        __m256 b1 = d->init && d->bias ? _mm256_loadu_ps(d->bias + 8) : z;
        for (int r = 0; r < MR; r++) {
            float *yr = d->y + r * ldy;
            __m256 p0 = d->init ? b0 : _mm256_loadu_ps(yr);
            __m256 p1 = d->init ? b1 : _mm256_loadu_ps(yr + 8);
            _mm256_storeu_ps(yr, _mm256_fmadd_ps(acc[r][0], s, p0));
            _mm256_storeu_ps(yr + 8, _mm256_fmadd_ps(acc[r][1], s, p1));
        }
        return;
    }
    float c[MR][NR];
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_ps(c[r], acc[r][0]);
        _mm256_storeu_ps(c[r] + 8, acc[r][1]);
    }
    for (int64_t r = 0; r < d->rows; r++)
        for (int64_t cc = 0; cc < d->cols; cc++) {
            float *yp = d->y + r * ldy + cc;
            float prev = d->init ? (d->bias ? d->bias[cc] : 0.0f) : *yp;
            *yp = prev + d->sign * c[r][cc];       /* sign * c is exact: one rounding, as fma */
        }
}

/* One MR x NR tile: sum over kk of a[r][kk] * b[kk][:] (a: MR row pointers, b: one packed
 * panel), stored to the nd destinations. Out of line on purpose: inlined into avx2_attn_task,
 * GCC kept one of the twelve accumulators on the stack (a store-to-load chain in the inner loop:
 * attention ran at 84 GFLOP/s instead of ~130); one instance has the same code at every caller. */
__attribute__((noinline)) static void micro_6x16(const float *const a[MR], const float *b,
                                                 int64_t kc, const mm_dst *d, int nd,
                                                 int64_t ldy) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    for (int64_t kk = 0; kk < kc; kk++, b += NR) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), av;
        av = _mm256_broadcast_ss(a0 + kk);
        c00 = _mm256_fmadd_ps(av, b0, c00); c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(a1 + kk);
        c10 = _mm256_fmadd_ps(av, b0, c10); c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(a2 + kk);
        c20 = _mm256_fmadd_ps(av, b0, c20); c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(a3 + kk);
        c30 = _mm256_fmadd_ps(av, b0, c30); c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(a4 + kk);
        c40 = _mm256_fmadd_ps(av, b0, c40); c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(a5 + kk);
        c50 = _mm256_fmadd_ps(av, b0, c50); c51 = _mm256_fmadd_ps(av, b1, c51);
    }
    const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                               {c30, c31}, {c40, c41}, {c50, c51}};
    for (int t = 0; t < nd; t++) tile_store(acc, &d[t], ldy);
}

/* Packs K rows [k0, k0 + kc) and columns [n0, n1) of the B = W^T quadrant q (K half q >> 1,
 * N half q & 1) into NR-column panels, as pack_* lay them out. */
static void pack_quadrant(const cpu_gemm *g, int q, int64_t n0, int64_t n1, int64_t k0,
                          int64_t kc, float *out) {
    const kern_weight *w = g->w;
    int64_t wn = (q & 1) * g->nh, wk = (q >> 1) * g->kh + k0;
    switch (w->type) {
    case KERN_W_F32: pack_f32(w, wn + n0, wn + n1, wk, kc, out); break;
    case KERN_W_F16: pack_f16(w, wn + n0, wn + n1, wk, kc, out); break;
    case KERN_W_BF16: pack_bf16(w, wn + n0, wn + n1, wk, kc, out); break;
    case KERN_W_Q8: pack_q8(w, wn + n0, wn + n1, wk, kc, out); break;
    case KERN_W_Q4: pack_q4(w, wn + n0, wn + n1, wk, kc, out); break;
    }
}

/* y = s1 * x1 + s2 * x2 (x2 may be NULL: y = s1 * x1) for n floats: one pass, since every
 * Strassen operand is a sum of at most two quadrants. */
static void lincomb(float *y, float s1, const float *x1, float s2, const float *x2, int64_t n) {
    __m256 v1 = _mm256_set1_ps(s1), v2 = _mm256_set1_ps(s2);
    int64_t i = 0;
    if (x2)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(v2, _mm256_loadu_ps(x2 + i),
                                                    _mm256_mul_ps(v1, _mm256_loadu_ps(x1 + i))));
    else
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_mul_ps(v1, _mm256_loadu_ps(x1 + i)));
    for (; i < n; i++) y[i] = s1 * x1[i] + (x2 ? s2 * x2[i] : 0.0f);
}

/* The terms of an operand's coefficients (at most two in Strassen's products): their quadrants
 * and signs.
 * Returns the number of terms. */
static int terms_of(const signed char coef[4], int q[2], float s[2]) {
    int n = 0;
    for (int i = 0; i < 4 && n < 2; i++)
        if (coef[i]) q[n] = i, s[n++] = (float)coef[i];
    return n;
}

/* The B operand sum_q coef[q] * panel[q] (n floats each): one of the panels itself when it is a
 * single +1 term, else formed into sum. */
static const float *b_operand(const signed char coef[4], float *const panel[4], int64_t n,
                              float *sum) {
    int q[2];
    float sg[2];
    int t = terms_of(coef, q, sg);
    if (t == 1 && sg[0] == 1.0f) return panel[q[0]];
    lincomb(sum, sg[0], panel[q[0]], sg[1], t > 1 ? panel[q[1]] : NULL, n);
    return sum;
}

static const float mm_zeros[CPU_MM_KC];   /* rows past x's end (a last short tile, an odd m) */

/* x's row `row` of A quadrant q at K column k0 of the quadrant, or NULL past x's last row. */
static inline const float *a_row(const cpu_gemm *g, int q, int64_t row, int64_t k0) {
    row += (q >> 1) * g->mh;
    return row < g->m ? g->x + row * g->k + (q & 1) * g->kh + k0 : NULL;
}

/* The A operands sum_q coef[q] * A_q of the products with more than one term (or a -1), for
 * quadrant rows [i0, i1) rounded up to MR and K columns [k0, k0 + kc): formed once per K block
 * into buf (rows x kc each, in product order) so every column block of the task reuses them.
 * base[p] is product p's sum, or NULL where its operand is a single quadrant of x. */
static void a_sums(const cpu_gemm *g, int64_t i0, int64_t i1, int64_t k0, int64_t kc,
                   float *buf, float *base[]) {
    int64_t rows = (i1 - i0 + MR - 1) / MR * MR;
    for (int p = 0; p < g->n_prod; p++) {
        int q[2];
        float sg[2];
        int t = terms_of(g->prod[p].a, q, sg);
        base[p] = NULL;
        if (t == 1 && sg[0] == 1.0f) continue;
        base[p] = buf;
        for (int64_t r = 0; r < rows; r++, buf += kc) {
            const float *x1 = a_row(g, q[0], i0 + r, k0);
            const float *x2 = t > 1 ? a_row(g, q[1], i0 + r, k0) : NULL;
            float s1 = sg[0], s2 = sg[1];
            if (!x1) x1 = x2, s1 = s2, x2 = NULL;       /* the first term's row is past x */
            if (x1)
                lincomb(buf, s1, x1, s2, x2, kc);
            else
                memset(buf, 0, (size_t)kc * sizeof(float));
        }
    }
}

/* Row pointers to product p's A operand for quadrant rows [i, i + MR): into its sum (sum: the
 * rows from i0), or into x for a single quadrant, rows past x's end reading as zeros. */
static void a_operand(const cpu_gemm *g, const signed char coef[4], const float *sum, int64_t i,
                      int64_t i0, int64_t k0, int64_t kc, const float *a[MR]) {
    int q = 0;
    while (!coef[q]) q++;
    for (int r = 0; r < MR; r++) {
        if (sum) {
            a[r] = sum + (i - i0 + r) * kc;
        } else {
            const float *src = a_row(g, q, i + r, k0);
            a[r] = src ? src : mm_zeros;
        }
    }
}

/* Quadrant rows [i0, i1) x columns [n0, n1) of every product of g. For each K block the B
 * quadrant panels and the A sums it needs are formed once and used for all the task's rows and
 * columns; each product's MR x NR tiles then go to the C quadrants it feeds, the first product
 * to touch a quadrant storing (plus the bias) on the first K block and every other adding. */
static void avx2_gemm_task(const cpu_gemm *g, int64_t i0, int64_t i1, int64_t n0, int64_t n1,
                           float *work) {
    /* scratch: one KC x NC panel (plain), or Strassen's four quadrant panels, their sum and
     * the A sums (ops_cpu.h) */
    float *panel[4], *bsum = work + 4 * CPU_STRASSEN_PANEL_FLOATS, *asum[7];
    int need[4] = {0}, first[4] = {-1, -1, -1, -1};
    for (int q = 0; q < 4; q++) panel[q] = work + q * CPU_STRASSEN_PANEL_FLOATS;
    for (int p = 0; p < g->n_prod; p++)
        for (int q = 0; q < 4; q++) {
            if (g->prod[p].b[q]) need[q] = 1;
            if (g->prod[p].c[q] && first[q] < 0) first[q] = p;
        }
    int64_t N = g->n;
    const int64_t kblk = cpu_mm_kc(g->kh, g->n_prod > 1 ? CPU_MM_STRASSEN_KC : CPU_MM_KC);
    for (int64_t k0 = 0; k0 < g->kh; k0 += kblk) {
        int64_t kc = g->kh - k0 < kblk ? g->kh - k0 : kblk;
        a_sums(g, i0, i1, k0, kc, work + 5 * CPU_STRASSEN_PANEL_FLOATS, asum);
        for (int64_t c0 = n0; c0 < n1; c0 += CPU_MM_NC) {     /* column blocks of the range */
            int64_t c1 = c0 + CPU_MM_NC < n1 ? c0 + CPU_MM_NC : n1;
            int64_t panel_cols = (c1 - c0 + NR - 1) / NR * NR;
            for (int q = 0; q < 4; q++)
                if (need[q]) pack_quadrant(g, q, c0, c1, k0, kc, panel[q]);
            for (int p = 0; p < g->n_prod; p++) {
                const cpu_mm_product *pr = &g->prod[p];
                const float *bp = b_operand(pr->b, panel, panel_cols * kc, bsum);
                for (int64_t i = i0; i < i1; i += MR) {
                    const float *a[MR];
                    a_operand(g, pr->a, asum[p], i, i0, k0, kc, a);
                    mm_dst d[4];
                    int nd = 0;
                    for (int q = 0; q < 4; q++) {
                        if (!pr->c[q]) continue;
                        int64_t row = (q >> 1) * g->mh + i, rows = i1 - i < MR ? i1 - i : MR;
                        if (g->m - row < rows) rows = g->m - row;
                        if (rows <= 0) continue;
                        d[nd++] = (mm_dst){.y = g->y + row * N + (q & 1) * g->nh,
                                           .bias = g->bias ? g->bias + (q & 1) * g->nh : NULL,
                                           .sign = (float)pr->c[q],
                                           .init = k0 == 0 && first[q] == p, .rows = rows};
                    }
                    for (int64_t jp = c0; jp < c1; jp += NR) {
                        mm_dst dj[4];
                        for (int t = 0; t < nd; t++) {
                            dj[t] = d[t];
                            dj[t].y += jp;
                            if (dj[t].bias) dj[t].bias += jp;
                            dj[t].cols = c1 - jp < NR ? c1 - jp : NR;
                        }
                        micro_6x16(a, bp + ((jp - c0) / NR) * kc * NR, kc, dj, nd, N);
                    }
                }
            }
        }
    }
}

/* Small M only (the driver sends larger M to avx2_gemm_task). */
static void avx2_matmul_tile(const float *x, const kern_weight *w, const float *bias, float *y,
                             int64_t i0, int64_t i1, int64_t n0, int64_t n1, float *work) {
    (void)work;
    const float *xr = x + i0 * w->k;
    float *yr = y + i0 * w->n;
    switch (w->type) {
    case KERN_W_F32: rowdot_f32(xr, i1 - i0, w, bias, yr, n0, n1); break;
    case KERN_W_F16: rowdot_f16(xr, i1 - i0, w, bias, yr, n0, n1); break;
    case KERN_W_BF16: rowdot_bf16(xr, i1 - i0, w, bias, yr, n0, n1); break;
    case KERN_W_Q8:
        if (i1 - i0 == 1) qdot1_q8(xr, w, bias, yr, n0, n1);
        else qdotm_q8(xr, i1 - i0, w, bias, yr, n0, n1);
        break;
    case KERN_W_Q4:
        if (i1 - i0 == 1) qdot1_q4(xr, w, bias, yr, n0, n1);
        else qdotm_q4(xr, i1 - i0, w, bias, yr, n0, n1);
        break;
    }
}

/* ---- elementwise ----------------------------------------------------------------------------- */

static void avx2_add(const float *a, const float *b, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; i++) y[i] = a[i] + b[i];
}

static void avx2_scale(const float *x, float s, float *y, int64_t n) {
    __m256 sv = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(sv, _mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = s * x[i];
}

/* x * Phi(x) with Phi from erfc(|x|/sqrt2) = t exp(-z^2 + P(t)), t = 1/(1 + z/2): the
 * Chebyshev fit of Numerical Recipes' erfcc, relative error < 1.2e-7 everywhere, so the
 * negative tail keeps its relative precision (no 1 + erf cancellation). */
static inline __m256 gelu8(__m256 x) {
    __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x),
                             _mm256_set1_ps(0.70710678118654752f));
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                             _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
    static const float c[10] = {-1.26551223f, 1.00002368f, 0.37409196f, 0.09678418f,
                                -0.18628806f, 0.27886807f, -1.13520398f, 1.48851587f,
                                -0.82215223f, 0.17087277f};
    __m256 p = _mm256_set1_ps(c[9]);
    for (int i = 8; i >= 0; i--) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c[i]));
    __m256 erfc = _mm256_mul_ps(t, vexp(_mm256_fnmadd_ps(z, z, p)));
    __m256 half = _mm256_mul_ps(_mm256_set1_ps(0.5f), erfc);              /* Phi(-|x|) */
    __m256 phi = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), half), half, x);
    return _mm256_mul_ps(x, phi);
}

static void avx2_gelu(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        __m256i m = tail_mask(n - i);
        _mm256_maskstore_ps(y + i, m, gelu8(_mm256_maskload_ps(x + i, m)));
    }
}

/* 0.5 x (1 + tanh u) == x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3). */
static inline __m256 gelu_tanh8(__m256 x) {
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                             _mm256_fmadd_ps(x3, _mm256_set1_ps(0.044715f), x));
    __m256 e = vexp(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static void avx2_gelu_tanh(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu_tanh8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        __m256i m = tail_mask(n - i);
        _mm256_maskstore_ps(y + i, m, gelu_tanh8(_mm256_maskload_ps(x + i, m)));
    }
}

/* ---- row ops ------------------------------------------------------------------------------- */

static float sum_row(const float *x, int64_t n) {
    __m256 a = _mm256_setzero_ps(), b = a;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(x + i + 8));
    }
    for (; i + 8 <= n; i += 8) a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
    if (i < n) b = _mm256_add_ps(b, _mm256_maskload_ps(x + i, tail_mask(n - i)));
    return hsum(_mm256_add_ps(a, b));
}

/* sum over i of (x[i] - c)^2 */
static float sumsq_row(const float *x, int64_t n, float c) {
    __m256 a = _mm256_setzero_ps(), b = a, cv = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), cv);
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), cv);
        a = _mm256_fmadd_ps(d0, d0, a);
        b = _mm256_fmadd_ps(d1, d1, b);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), cv);
        a = _mm256_fmadd_ps(d, d, a);
    }
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), cv),
                                 _mm256_castsi256_ps(m));
        b = _mm256_fmadd_ps(d, d, b);
    }
    return hsum(_mm256_add_ps(a, b));
}

/* y = (x - shift) * mul * w + b, w/b optional (NULL = 1/0). */
static void norm_apply(const float *x, float *y, int64_t n, float shift, float mul,
                       const float *w, const float *b) {
    __m256 sv = _mm256_set1_ps(shift), mv = _mm256_set1_ps(mul), one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), sv), mv);
        __m256 wv = w ? _mm256_loadu_ps(w + i) : one;
        __m256 bv = b ? _mm256_loadu_ps(b + i) : _mm256_setzero_ps();
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(v, wv, bv));
    }
    if (i < n) {            /* masked stores are slow (microcoded on AMD): the tail only */
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), sv), mv);
        __m256 wv = w ? _mm256_maskload_ps(w + i, m) : one;
        __m256 bv = b ? _mm256_maskload_ps(b + i, m) : _mm256_setzero_ps();
        _mm256_maskstore_ps(y + i, m, _mm256_fmadd_ps(v, wv, bv));
    }
}

static void avx2_layernorm_row(const float *x, float *y, int64_t n, const float *w,
                               const float *b, float eps) {
    float mean = sum_row(x, n) / (float)n;
    float var = sumsq_row(x, n, mean) / (float)n;
    norm_apply(x, y, n, mean, 1.0f / sqrtf(var + eps), w, b);
}

static void avx2_rmsnorm_row(const float *x, float *y, int64_t n, const float *w, float eps) {
    float ms = sumsq_row(x, n, 0.0f) / (float)n;
    norm_apply(x, y, n, 0.0f, 1.0f / sqrtf(ms + eps), w, NULL);
}

static float max_row(const float *x, int64_t n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    float r = hmax(m);
    for (; i < n; i++) r = fmaxf(r, x[i]);
    return r;
}

/* y = exp(x - mx) for n elements; returns their sum. */
static float exp_row(const float *x, float *y, int64_t n, float mx) {
    __m256 mv = _mm256_set1_ps(mx), s = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = vexp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(y + i, e);
        s = _mm256_add_ps(s, e);
    }
    if (i < n) {            /* masked stores are slow (microcoded on AMD): the tail only */
        __m256i m = tail_mask(n - i);
        __m256 e = _mm256_and_ps(vexp(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), mv)),
                                 _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(y + i, m, e);
        s = _mm256_add_ps(s, e);
    }
    return hsum(s);
}

static void avx2_softmax_row(const float *x, float *y, int64_t n) {
    float mx = max_row(x, n);
    if (mx == -INFINITY) {
        memset(y, 0, (size_t)n * sizeof *y);
        return;
    }
    float sum = exp_row(x, y, n, mx);
    avx2_scale(y, 1.0f / sum, y, n);
}

/* ---- attention ----------------------------------------------------------------------------- */

static inline float dot_d(const float *a, const float *b, int64_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i < d; i += 8) {
        __m256i m = tail_mask(d - i < 8 ? d - i : 8);
        s0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s0);
    }
    return hsum(_mm256_add_ps(s0, s1));
}

/* acc[0:d] = acc * c + p * v (masked at the tail; acc has room for a whole last vector). */
static inline void axpby_d(float *acc, float c, float p, const float *v, int64_t d) {
    __m256 cv = _mm256_set1_ps(c), pv = _mm256_set1_ps(p);
    for (int64_t i = 0; i < d; i += 8) {
        __m256i m = tail_mask(d - i < 8 ? d - i : 8);
        __m256 a = _mm256_mul_ps(_mm256_load_ps(acc + i), cv);
        _mm256_store_ps(acc + i, _mm256_fmadd_ps(pv, _mm256_maskload_ps(v + i, m), a));
    }
}

#define ATT_KBLK 64

/* One query row: online softmax over blocks of ATT_KBLK keys (running max m and sum l; the
 * accumulator is rescaled when the max grows), so no scratch proportional to nk. */
static void avx2_attn_row(const float *q, const float *k, int64_t ldk, const float *v,
                          int64_t ldv, int64_t nk, int64_t d, float scale, float *out) {
    _Alignas(32) float acc[KERN_MAX_HEAD_DIM + 8];
    _Alignas(32) float s[ATT_KBLK];
    memset(acc, 0, sizeof acc);
    float m = -INFINITY, l = 0;
    for (int64_t j0 = 0; j0 < nk; j0 += ATT_KBLK) {
        int64_t b = nk - j0 < ATT_KBLK ? nk - j0 : ATT_KBLK;
        for (int64_t j = 0; j < b; j++) s[j] = scale * dot_d(q, k + (j0 + j) * ldk, d);
        float bm = max_row(s, b);
        float corr = 1.0f;
        if (bm > m) {
            corr = m == -INFINITY ? 0.0f : expf(m - bm);
            m = bm;
        }
        l = l * corr + exp_row(s, s, b, m);
        for (int64_t j = 0; j < b; j++) {
            axpby_d(acc, corr, s[j], v + (j0 + j) * ldv, d);
            corr = 1.0f;
        }
    }
    float inv = nk > 0 && l > 0 ? 1.0f / l : 0.0f;
    for (int64_t i = 0; i < d; i += 8) {
        __m256i msk = tail_mask(d - i < 8 ? d - i : 8);
        _mm256_maskstore_ps(out + i, msk, _mm256_mul_ps(_mm256_load_ps(acc + i), _mm256_set1_ps(inv)));
    }
}

/* ---- attention over many queries: blocked, on the matmul micro-kernel ----------------------- */

/* Keys as the "weight" of S = q . k^T: NR-key panels, out[p*d*NR + kk*NR + c] = k_(p*NR+c)[kk],
 * keys past nk zero. A scalar transpose: it is paid once per head per task, against the
 * tq x nk x d multiply-adds that reuse it. */
static void pack_keys(const float *k, int64_t ldk, int64_t nk, int64_t d, float *out) {
    int64_t np = (nk + NR - 1) / NR;
    for (int64_t p = 0; p < np; p++)
        for (int64_t c = 0; c < NR; c++) {
            int64_t j = p * NR + c;
            float *o = out + p * d * NR + c;
            if (j < nk)
                for (int64_t kk = 0; kk < d; kk++) o[kk * NR] = k[j * ldk + kk];
            else
                for (int64_t kk = 0; kk < d; kk++) o[kk * NR] = 0.0f;
        }
}

/* Values as the "weight" of o = p . v: NR-dimension panels, out[p*nk*NR + j*NR + c] =
 * v_j[p*NR + c], dimensions past d zero. */
static void pack_values(const float *v, int64_t ldv, int64_t nk, int64_t d, float *out) {
    int64_t np = (d + NR - 1) / NR;
    for (int64_t p = 0; p < np; p++) {
        int64_t c0 = p * NR, w = d - c0 < NR ? d - c0 : NR;
        for (int64_t j = 0; j < nk; j++) {
            float *o = out + (p * nk + j) * NR;
            memcpy(o, v + j * ldv + c0, (size_t)w * sizeof(float));
            for (int64_t c = w; c < NR; c++) o[c] = 0.0f;
        }
    }
}

/* Query rows [i0, i1) of head h: S = scale * q . k^T for a block of CPU_ATT_QB queries at a
 * time (into work, after the packed keys and values), exact row softmax as the reference
 * (max, exp, sum, divide), then out = P . v. Keys and values are packed once for all the
 * task's queries. */
static void avx2_attn_task(const kern_attn *a, int64_t h, int64_t i0, int64_t i1, float *work) {
    int64_t d = a->dim, kh = h / (a->heads / a->kv_heads), shift = a->tk - a->tq;
    int64_t nk_task = a->tk;                  /* keys any of the task's queries sees */
    if (a->causal) nk_task = i1 + shift < a->tk ? i1 + shift : a->tk;
    if (nk_task < 0) nk_task = 0;
    int64_t nk_pad = (nk_task + NR - 1) / NR * NR, d_pad = (d + NR - 1) / NR * NR;
    float *kp = work, *vp = kp + d * nk_pad, *S = vp + nk_task * d_pad;
    pack_keys(a->k + kh * d, a->ldk, nk_task, d, kp);
    pack_values(a->v + kh * d, a->ldv, nk_task, d, vp);
    for (int64_t b0 = i0; b0 < i1; b0 += CPU_ATT_QB) {
        int64_t b1 = b0 + CPU_ATT_QB < i1 ? b0 + CPU_ATT_QB : i1;
        int64_t nk = nk_task;                 /* keys the block's last query sees */
        if (a->causal) nk = b1 + shift < a->tk ? b1 + shift : a->tk;
        if (nk < 0) nk = 0;
        int64_t ldS = (nk + NR - 1) / NR * NR;
        for (int64_t jp = 0; jp < nk; jp += NR)           /* S [b1-b0, nk] */
            for (int64_t i = b0; i < b1; i += MR) {
                const float *qr[MR];
                for (int r = 0; r < MR; r++)
                    qr[r] = a->q + (i + r < b1 ? i + r : b1 - 1) * a->ldq + h * d;
                mm_dst dst = {.y = S + (i - b0) * ldS + jp, .sign = a->scale, .init = 1,
                              .rows = b1 - i < MR ? b1 - i : MR, .cols = NR};
                micro_6x16(qr, kp + (jp / NR) * d * NR, d, &dst, 1, ldS);
            }
        for (int64_t i = b0; i < b1; i++) {               /* P = softmax rows, in place */
            float *row = S + (i - b0) * ldS;
            int64_t n = a->causal ? i + shift + 1 : nk;
            n = n < 0 ? 0 : n > nk ? nk : n;
            avx2_softmax_row(row, row, n);                /* the keys this query sees */
            memset(row + n, 0, (size_t)(ldS - n) * sizeof(float));
        }
        for (int64_t dp = 0; dp < d; dp += NR)            /* out = P . v */
            for (int64_t i = b0; i < b1; i += MR) {
                const float *pr[MR];
                for (int r = 0; r < MR; r++) pr[r] = S + ((i + r < b1 ? i + r : b1 - 1) - b0) * ldS;
                mm_dst dst = {.y = a->out + i * a->ldo + h * d + dp, .sign = 1.0f, .init = 1,
                              .rows = b1 - i < MR ? b1 - i : MR, .cols = d - dp < NR ? d - dp : NR};
                micro_6x16(pr, vp + (dp / NR) * nk_task * NR, nk, &dst, 1, a->ldo);
            }
    }
}

const cpu_isa cpu_isa_avx2_table = {
    .name = "avx2", .matmul_tile = avx2_matmul_tile, .gemm_task = avx2_gemm_task,
    .attn_task = avx2_attn_task, .layernorm_row = avx2_layernorm_row,
    .rmsnorm_row = avx2_rmsnorm_row, .gelu = avx2_gelu, .gelu_tanh = avx2_gelu_tanh,
    .softmax_row = avx2_softmax_row, .attn_row = avx2_attn_row, .add = avx2_add,
    .scale = avx2_scale,
};

#else  /* not x86-64: no AVX2 kernels */

const cpu_isa *cpu_isa_avx2(void) { return NULL; }

#endif
