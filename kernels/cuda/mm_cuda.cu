// mm_cuda — y[m, n] = x[m, k] . W[n, k]^T (+ bias) on the GPU, for every weight storage type.
//
//   m <= CU_SMALL_M (decode): a matrix-vector kernel, one warp per output column j, that streams
//     W's row j once with 16-byte loads, dequantises in registers (f16/bf16/q8/q4) and
//     accumulates all m rows of x in fp32. This is memory-bound: W is read exactly once.
//   larger m: cuBLAS. f32 weights: SGEMM (fp32 throughout). f16/bf16: x is rounded to the
//     weight's type in bounded row chunks and GemmEx multiplies with fp32 accumulation and an
//     fp32 output. q8/q4: W is dequantised to f16 in bounded row chunks first.
// Column-major view for cuBLAS: y^T [n, m] = W [k, n]^T . x^T [k, m].
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_be.cuh"

extern "C" {
#include "quant.h"
}

// ============================================================================= loads ========

// 8 consecutive weights W[j, k0 .. k0+7] as floats; k0 is a multiple of 8, rows 16-byte aligned.
template <int WT> struct wload;

template <> struct wload<KERN_W_F16> {
    static __device__ __forceinline__ void get(const void *d, const float *, long long k,
                                               long long j, long long k0, float f[8]) {
        uint4 u = *(const uint4 *)((const __half *)d + j * k + k0);
        const __half2 *h = (const __half2 *)&u;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 t = __half22float2(h[i]);
            f[2 * i] = t.x;
            f[2 * i + 1] = t.y;
        }
    }
};

template <> struct wload<KERN_W_BF16> {
    static __device__ __forceinline__ void get(const void *d, const float *, long long k,
                                               long long j, long long k0, float f[8]) {
        uint4 u = *(const uint4 *)((const uint16_t *)d + j * k + k0);
        const unsigned *w = (const unsigned *)&u;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            f[2 * i] = __uint_as_float(w[i] << 16);
            f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
};

template <> struct wload<KERN_W_F32> {
    static __device__ __forceinline__ void get(const void *d, const float *, long long k,
                                               long long j, long long k0, float f[8]) {
        const float4 *p = (const float4 *)((const float *)d + j * k + k0);
        float4 a = p[0], b = p[1];
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z,
        f[7] = b.w;
    }
};

template <> struct wload<KERN_W_Q8> {
    static __device__ __forceinline__ void get(const void *d, const float *sc, long long k,
                                               long long j, long long k0, float f[8]) {
        uint2 u = *(const uint2 *)((const int8_t *)d + j * k + k0);
        float s = sc[j * (k / QUANT_BLOCK) + k0 / QUANT_BLOCK];
        const int8_t *q = (const int8_t *)&u;
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = s * (float)q[i];
    }
};

// q4 block: byte b (0..15) holds element b (low nibble) and b + 16 (high nibble), each + 8.
template <> struct wload<KERN_W_Q4> {
    static __device__ __forceinline__ void get(const void *d, const float *sc, long long k,
                                               long long j, long long k0, float f[8]) {
        long long blk = k0 / QUANT_BLOCK;
        int off = (int)(k0 % QUANT_BLOCK);
        const uint8_t *row = (const uint8_t *)d + j * (k / 2) + blk * 16;
        int hi = off >= 16;
        uint2 u = *(const uint2 *)(row + (hi ? off - 16 : off));
        float s = sc[j * (k / QUANT_BLOCK) + blk];
        const uint8_t *q = (const uint8_t *)&u;
#pragma unroll
        for (int i = 0; i < 8; i++)
            f[i] = s * (float)((int)(hi ? q[i] >> 4 : q[i] & 15) - 8);
    }
};

// ============================================================================= small m =====

__device__ __forceinline__ float mm_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per output column j; lane l handles k chunks l, l+32, ... of 8 elements.
// Needs k % 8 == 0 and x 16-byte aligned (checked by the caller; else the generic kernel).
template <int WT, int M>
__global__ void __launch_bounds__(256) k_gemv(const float *x, long long k, const void *wd,
                                              const float *sc, long long n, const float *bias,
                                              float *y) {
    long long j = blockIdx.x * 8LL + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (j >= n) return;
    float acc[M];
#pragma unroll
    for (int i = 0; i < M; i++) acc[i] = 0;
    long long chunks = k / 8;
#pragma unroll 2
    for (long long c = lane; c < chunks; c += 32) {
        float w[8];
        wload<WT>::get(wd, sc, k, j, c * 8, w);
#pragma unroll
        for (int i = 0; i < M; i++) {
            const float4 *xp = (const float4 *)(x + i * k + c * 8);
            float4 a = __ldg(xp), b = __ldg(xp + 1);
            acc[i] += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x +
                      w[5] * b.y + w[6] * b.z + w[7] * b.w;
        }
    }
#pragma unroll
    for (int i = 0; i < M; i++) {
        float s = mm_warp_sum(acc[i]);
        if (lane == 0) y[i * n + j] = s + (bias ? bias[j] : 0.0f);
    }
}

// Any k, any alignment: one element at a time (odd shapes in tests, never a model's hot path).
__device__ __forceinline__ float w_at(int wt, const void *d, const float *sc, long long k,
                                      long long j, long long kk) {
    long long i = j * k + kk;
    switch (wt) {
    case KERN_W_F32: return ((const float *)d)[i];
    case KERN_W_F16: return __half2float(((const __half *)d)[i]);
    case KERN_W_BF16: return __uint_as_float((unsigned)((const uint16_t *)d)[i] << 16);
    case KERN_W_Q8: return sc[i / QUANT_BLOCK] * (float)((const int8_t *)d)[i];
    default: {
        const uint8_t *blk = (const uint8_t *)d + j * (k / 2) + (kk / QUANT_BLOCK) * 16;
        int o = (int)(kk % QUANT_BLOCK);
        int nib = o < 16 ? (blk[o] & 15) : (blk[o - 16] >> 4);
        return sc[i / QUANT_BLOCK] * (float)(nib - 8);
    }
    }
}

__global__ void k_gemv_any(int wt, const float *x, long long m, long long k, const void *wd,
                           const float *sc, long long n, const float *bias, float *y) {
    long long j = blockIdx.x * 8LL + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (j >= n) return;
    for (long long i = 0; i < m; i++) {
        float acc = 0;
        for (long long kk = lane; kk < k; kk += 32) acc += w_at(wt, wd, sc, k, j, kk) * x[i * k + kk];
        acc = mm_warp_sum(acc);
        if (lane == 0) y[i * n + j] = acc + (bias ? bias[j] : 0.0f);
    }
}

template <int WT>
static void launch_gemv(cu_be *c, const float *x, int m, long long k, const kern_weight *w,
                        const float *bias, float *y) {
    unsigned g = (unsigned)((w->n + 7) / 8);
    const void *d = w->data;
    const float *s = w->scale;
    switch (m) {
    case 1: k_gemv<WT, 1><<<g, 256, 0, c->stream>>>(x, k, d, s, w->n, bias, y); break;
    case 2: k_gemv<WT, 2><<<g, 256, 0, c->stream>>>(x, k, d, s, w->n, bias, y); break;
    case 3: k_gemv<WT, 3><<<g, 256, 0, c->stream>>>(x, k, d, s, w->n, bias, y); break;
    case 4: k_gemv<WT, 4><<<g, 256, 0, c->stream>>>(x, k, d, s, w->n, bias, y); break;
    case 5: k_gemv<WT, 5><<<g, 256, 0, c->stream>>>(x, k, d, s, w->n, bias, y); break;
    case 6: k_gemv<WT, 6><<<g, 256, 0, c->stream>>>(x, k, d, s, w->n, bias, y); break;
    case 7: k_gemv<WT, 7><<<g, 256, 0, c->stream>>>(x, k, d, s, w->n, bias, y); break;
    default: k_gemv<WT, 8><<<g, 256, 0, c->stream>>>(x, k, d, s, w->n, bias, y); break;
    }
}

static int mm_small(cu_be *c, const float *x, int64_t m, const kern_weight *w, const float *bias,
                    float *y) {
    long long k = w->k;
    int vec = k % 8 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)w->data % 16 == 0;
    if (!vec) {
        k_gemv_any<<<(unsigned)((w->n + 7) / 8), 256, 0, c->stream>>>(
            (int)w->type, x, m, k, w->data, w->scale, w->n, bias, y);
    } else {
        switch (w->type) {
        case KERN_W_F32: launch_gemv<KERN_W_F32>(c, x, (int)m, k, w, bias, y); break;
        case KERN_W_F16: launch_gemv<KERN_W_F16>(c, x, (int)m, k, w, bias, y); break;
        case KERN_W_BF16: launch_gemv<KERN_W_BF16>(c, x, (int)m, k, w, bias, y); break;
        case KERN_W_Q8: launch_gemv<KERN_W_Q8>(c, x, (int)m, k, w, bias, y); break;
        case KERN_W_Q4: launch_gemv<KERN_W_Q4>(c, x, (int)m, k, w, bias, y); break;
        }
    }
    CU_LAUNCHED("gemv");
    return TV_OK;
}

// ============================================================================= large m =====

// out[i] = x[i] rounded to f16 (bf16 = 1) for n elements.
__global__ void k_to_half(const float *x, void *out, long long n, int bf16) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        if (bf16) ((__nv_bfloat16 *)out)[i] = __float2bfloat16_rn(x[i]);
        else ((__half *)out)[i] = __float2half_rn(x[i]);
    }
}

// Rows [j0, j0 + rows) of a q8/q4 weight dequantised to f16 [rows, k].
__global__ void k_dequant(int wt, const void *d, const float *sc, long long k, long long j0,
                          long long rows, __half *out) {
    long long total = rows * k;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = __float2half_rn(w_at(wt, d, sc, k, j0 + i / k, i % k));
}

static int gemm_ex(cu_be *c, const void *w, cudaDataType wt, const void *xh, long long m,
                   long long n, long long k, float *y, long long ldy) {
    const float one = 1.0f, zero = 0.0f;
    CU_BLAS(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, w, wt,
                         (int)k, xh, wt, (int)k, &zero, y, CUDA_R_32F, (int)ldy,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return TV_OK;
}

static int mm_large(cu_be *c, const float *x, int64_t m, const kern_weight *w, float *y) {
    long long n = w->n, k = w->k;
    if (n > INT32_MAX || k > INT32_MAX || m > INT32_MAX)
        return err_set(TV_EUNSUPPORTED, "cuda matmul: sizes beyond cuBLAS's int range");
    if (w->type == KERN_W_F32) {
        const float one = 1.0f, zero = 0.0f;
        CU_BLAS(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one,
                            (const float *)w->data, (int)k, x, (int)k, &zero, y, (int)n));
        return TV_OK;
    }
    int bf16 = w->type == KERN_W_BF16;
    cudaDataType dt = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    long long xrows = (long long)(CU_MM_HALVES / (size_t)k);
    if (xrows < 1) return err_set(TV_EUNSUPPORTED, "cuda matmul: k = %lld too large", k);
    // weights: f16/bf16 as stored; q8/q4 dequantised in chunks of wrows rows
    long long wrows = w->type == KERN_W_F16 || bf16 ? n : (long long)(CU_MM_HALVES / (size_t)k);
    for (long long j0 = 0; j0 < n; j0 += wrows) {
        long long nj = n - j0 < wrows ? n - j0 : wrows;
        const void *wp;
        if (w->type == KERN_W_F16 || bf16) {
            wp = (const uint16_t *)w->data + j0 * k;
        } else {
            k_dequant<<<cu_blocks(nj * k, 256), 256, 0, c->stream>>>((int)w->type, w->data,
                                                                      w->scale, k, j0, nj,
                                                                      (__half *)c->mm_w);
            CU_LAUNCHED("dequant");
            wp = c->mm_w;
        }
        for (long long i0 = 0; i0 < m; i0 += xrows) {
            long long mi = m - i0 < xrows ? m - i0 : xrows;
            k_to_half<<<cu_blocks(mi * k, 256), 256, 0, c->stream>>>(x + i0 * k, c->mm_x,
                                                                      mi * k, bf16);
            CU_LAUNCHED("to_half");
            int rc = gemm_ex(c, wp, dt, c->mm_x, mi, nj, k, y + i0 * n + j0, n);
            if (rc) return rc;
        }
    }
    return TV_OK;
}

int cu_matmul(kern_be *be, const float *x, int64_t m, const kern_weight *w, const float *bias,
              float *y) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    if (m <= CU_SMALL_M) return mm_small(c, x, m, w, bias, y);
    int rc = mm_large(c, x, m, w, y);
    if (rc || !bias) return rc;
    return cu_add_bias_launch(c, y, m, w->n, bias);
}
