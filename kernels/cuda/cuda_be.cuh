// cuda_be — internal to the CUDA backend: its state, the error-check macros, and the entry
// points that ops_cuda.cu's op table calls in mm_cuda.cu (matmul) and attn_cuda.cu (attention).
#ifndef TV_CUDA_BE_CUH
#define TV_CUDA_BE_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

// err.h is C11: its _Noreturn is spelled differently in C++.
#ifndef _Noreturn
#define _Noreturn __attribute__((noreturn))
#endif
extern "C" {
#include "err.h"
#include "ops_backend.h"
#include "ops_cuda.h"
}

// Scratch sizes, fixed at creation; ops whose work is larger are split into chunks that fit.
#define CU_MM_HALVES ((size_t)16 << 20)      // per region (activations, dequantised weights)
#define CU_ATT_FLOATS ((size_t)8 << 20)      // split-KV decode partials
#define CU_IDX_MAX 65536                     // positions / ids per launch
#define CU_KV_MAX 4096                       // decode sequences per launch
#define CU_STAGE_BYTES ((size_t)32 << 20)    // pinned upload staging (two halves)
#define CU_RING_BYTES ((size_t)1 << 20)      // pinned ring for index uploads (pos, ids, kv)
#define CU_SMALL_M 8                         // matmul rows served by the matrix-vector kernel

typedef struct {
    const float *k, *v;
    long long len, ld;
} cu_kv;

typedef struct {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *mm_x, *mm_w;                       // CU_MM_HALVES halves each
    float *att;                              // CU_ATT_FLOATS
    int32_t *idx;                            // CU_IDX_MAX
    cu_kv *kv;                               // CU_KV_MAX
    void **rows;                             // CU_KV_MAX destination pointers (copy_rows)
    unsigned char *stage;                    // pinned, CU_STAGE_BYTES
    unsigned char *ring;                     // pinned, CU_RING_BYTES: small per-op uploads
    size_t ring_pos;
    cudaEvent_t stage_ev[2];
    cudaEvent_t t0, t1;                      // busy time: first op after a sync .. the sync
    int timing;
    double busy_ms;
    char name[96];
} cu_be;

static inline cu_be *cu_of(kern_be *be) { return (cu_be *)be->impl; }

#define CU_TRY(expr)                                                                       \
    do {                                                                                   \
        cudaError_t cu_e_ = (expr);                                                        \
        if (cu_e_ != cudaSuccess)                                                          \
            return err_set(TV_EINTERNAL, "cuda: %s: %s", #expr, cudaGetErrorString(cu_e_));\
    } while (0)

#define CU_BLAS(expr)                                                                      \
    do {                                                                                   \
        cublasStatus_t cb_s_ = (expr);                                                     \
        if (cb_s_ != CUBLAS_STATUS_SUCCESS)                                                \
            return err_set(TV_EINTERNAL, "cublas: %s: status %d", #expr, (int)cb_s_);      \
    } while (0)

// After a kernel launch: the launch error, if any.
#define CU_LAUNCHED(what) CU_TRY(cudaPeekAtLastError())

// Marks the start of queued work for the busy-time counter.
int cu_begin(cu_be *c);

static inline unsigned cu_blocks(long long n, int per) {
    long long b = (n + per - 1) / per;
    return (unsigned)(b > 65535LL * 16 ? 65535LL * 16 : b);
}

// Queues a host -> device copy of a small host array (positions, ids, descriptors) through the
// pinned ring, so that it neither blocks the host nor waits for the stream.
int cu_put_small(cu_be *c, void *dst, const void *src, size_t bytes);

// mm_cuda.cu
int cu_matmul(kern_be *be, const float *x, int64_t m, const kern_weight *w, const float *bias,
              float *y);
int cu_add_bias_launch(cu_be *c, float *y, int64_t rows, int64_t n, const float *bias);

// attn_cuda.cu
int cu_attention(kern_be *be, const kern_attn *a);
int cu_attn_decode(kern_be *be, int64_t n_seq, const float *q, int64_t ldq, const kern_kv *kv,
                   int64_t heads, int64_t kv_heads, int64_t dim, float scale, float *out,
                   int64_t ldo);
int cu_attn_init(void);

#endif
