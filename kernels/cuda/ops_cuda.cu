// ops_cuda — the CUDA backend: creation, memory, and the row/elementwise ops (norms, GELU,
// softmax, rotary, embedding, add/scale). Matmul is in mm_cuda.cu, attention in attn_cuda.cu.
// Every op is queued on the backend's one stream; errors of a launch are reported at once,
// errors of the kernel's execution at the next synchronising call (download, sync).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_be.cuh"

extern "C" {
#include "log.h"
}

int cu_begin(cu_be *c) {
    if (!c->timing) {
        CU_TRY(cudaEventRecord(c->t0, c->stream));
        c->timing = 1;
    }
    return TV_OK;
}

int cu_put_small(cu_be *c, void *dst, const void *src, size_t bytes) {
    if (!c->ring || bytes > CU_RING_BYTES / 4) {
        CU_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
        return TV_OK;
    }
    size_t at = (c->ring_pos + 15) & ~(size_t)15;
    if (at + bytes > CU_RING_BYTES) {   // wrap: the copies queued from the ring must be done
        CU_TRY(cudaStreamSynchronize(c->stream));
        at = 0;
    }
    memcpy(c->ring + at, src, bytes);
    CU_TRY(cudaMemcpyAsync(dst, c->ring + at, bytes, cudaMemcpyHostToDevice, c->stream));
    c->ring_pos = at + bytes;
    return TV_OK;
}

// ============================================================================= reductions ===

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// ============================================================================= elementwise ==

enum { EW_ADD, EW_SCALE, EW_GELU, EW_GELU_TANH };

__global__ void k_elementwise(int op, const float *a, const float *b, float s, float *y,
                              long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = a[i];
        switch (op) {
        case EW_ADD: y[i] = v + b[i]; break;
        case EW_SCALE: y[i] = s * v; break;
        case EW_GELU: {
            // x * Phi(x); the negative side through erfc, as the reference, for its tail
            float z = v * 0.70710678118654752f;
            y[i] = v >= 0 ? 0.5f * v * (1.0f + erff(z)) : 0.5f * v * erfcf(-z);
            break;
        }
        default: {
            // 0.5 x (1 + tanh(u)) written as x / (1 + exp(-2u)): no cancellation
            float u = 0.79788456080286535588f * (v + 0.044715f * v * v * v);
            y[i] = v / (1.0f + expf(-2.0f * u));
            break;
        }
        }
    }
}

static int cu_ew(kern_be *be, int op, const float *a, const float *b, float s, float *y,
                 int64_t n) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    k_elementwise<<<cu_blocks(n, 256), 256, 0, c->stream>>>(op, a, b, s, y, n);
    CU_LAUNCHED("elementwise");
    return TV_OK;
}

static int cu_add(kern_be *be, const float *a, const float *b, float *y, int64_t n) {
    return cu_ew(be, EW_ADD, a, b, 0, y, n);
}
static int cu_scale(kern_be *be, const float *x, float s, float *y, int64_t n) {
    return cu_ew(be, EW_SCALE, x, NULL, s, y, n);
}
static int cu_gelu(kern_be *be, const float *x, float *y, int64_t n) {
    return cu_ew(be, EW_GELU, x, NULL, 0, y, n);
}
static int cu_gelu_tanh(kern_be *be, const float *x, float *y, int64_t n) {
    return cu_ew(be, EW_GELU_TANH, x, NULL, 0, y, n);
}

__global__ void k_add_bias(float *y, long long rows, long long n, const float *bias) {
    long long total = rows * n;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x)
        y[i] += bias[i % n];
}

int cu_add_bias_launch(cu_be *c, float *y, int64_t rows, int64_t n, const float *bias) {
    k_add_bias<<<cu_blocks(rows * n, 256), 256, 0, c->stream>>>(y, rows, n, bias);
    CU_LAUNCHED("add_bias");
    return TV_OK;
}

static int cu_add_bias(kern_be *be, float *y, int64_t rows, int64_t n, const float *bias) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    return cu_add_bias_launch(c, y, rows, n, bias);
}

// ============================================================================= norms ========

// One warp per group of n elements: row r = g / groups, group g % groups. Two passes over the
// group (mean, then squared deviations) in fp32, as torch's LayerNorm; rms = 1 for LayerNorm.
__global__ void k_norm(int rms, const float *x, long long ldx, float *y, long long ldy,
                       long long count, long long groups, long long n, const float *w,
                       const float *b, float eps) {
    long long g = blockIdx.x * (long long)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (g >= count) return;
    long long r = g / groups, gi = g % groups;
    const float *xr = x + r * ldx + gi * n;
    float *yr = y + r * ldy + gi * n;
    float mean = 0;
    if (!rms) {
        float s = 0;
        for (long long i = lane; i < n; i += 32) s += xr[i];
        mean = warp_sum(s) / (float)n;
    }
    float ss = 0;
    for (long long i = lane; i < n; i += 32) {
        float d = xr[i] - mean;
        ss += d * d;
    }
    float rstd = rsqrtf(warp_sum(ss) / (float)n + eps);
    for (long long i = lane; i < n; i += 32) {
        float v = (xr[i] - mean) * rstd;
        yr[i] = v * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
    }
}

static int cu_norm(kern_be *be, int rms, const float *x, int64_t ldx, float *y, int64_t ldy,
                   int64_t rows, int64_t groups, int64_t n, const float *w, const float *b,
                   float eps) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    long long count = rows * groups;
    k_norm<<<cu_blocks(count, 8), 256, 0, c->stream>>>(rms, x, ldx, y, ldy, count, groups, n, w,
                                                        b, eps);
    CU_LAUNCHED("norm");
    return TV_OK;
}

static int cu_layernorm(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy,
                        int64_t rows, int64_t groups, int64_t n, const float *w, const float *b,
                        float eps) {
    return cu_norm(be, 0, x, ldx, y, ldy, rows, groups, n, w, b, eps);
}

static int cu_rmsnorm(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy,
                      int64_t rows, int64_t groups, int64_t n, const float *w, float eps) {
    return cu_norm(be, 1, x, ldx, y, ldy, rows, groups, n, w, NULL, eps);
}

// ============================================================================= softmax ======

__global__ void k_softmax(const float *x, float *y, long long rows, long long n, long long ld) {
    long long r = blockIdx.x * (long long)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const float *xr = x + r * ld;
    float *yr = y + r * ld;
    float m = -INFINITY;
    for (long long i = lane; i < n; i += 32) m = fmaxf(m, xr[i]);
    m = warp_max(m);
    if (m == -INFINITY) {   // everything masked
        for (long long i = lane; i < n; i += 32) yr[i] = 0;
        return;
    }
    float s = 0;
    for (long long i = lane; i < n; i += 32) s += expf(xr[i] - m);
    float inv = 1.0f / warp_sum(s);
    for (long long i = lane; i < n; i += 32) yr[i] = expf(xr[i] - m) * inv;
}

static int cu_softmax(kern_be *be, const float *x, float *y, int64_t rows, int64_t n,
                      int64_t ld) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    k_softmax<<<cu_blocks(rows, 8), 256, 0, c->stream>>>(x, y, rows, n, ld);
    CU_LAUNCHED("softmax");
    return TV_OK;
}

// ============================================================================= rotary =======

// inv_freq is computed on the host exactly as the CPU backend does (fp32 powf), so that the
// angle pos * inv_freq is the same float on both; only cos/sin differ, by an ulp or two.
typedef struct {
    float inv_freq[KERN_MAX_HEAD_DIM / 2];
} rope_freqs;

__global__ void k_rope(float *x, long long ld, long long t, long long heads, long long dim,
                       long long half, const int32_t *pos, const rope_freqs f) {
    long long total = t * heads * half;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long j = i % half, th = i / half, h = th % heads, tok = th / heads;
        float ang = (float)pos[tok] * f.inv_freq[j];
        float cs = cosf(ang), sn = sinf(ang);
        float *v = x + tok * ld + h * dim;
        float a = v[j], b = v[j + half];
        v[j] = a * cs - b * sn;
        v[j + half] = b * cs + a * sn;
    }
}

static int cu_rope(kern_be *be, float *x, int64_t ld, int64_t t, int64_t heads, int64_t dim,
                   int64_t rot_dims, const int32_t *pos, float theta) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    int64_t half = rot_dims / 2;
    rope_freqs f;
    for (int64_t i = 0; i < half; i++)
        f.inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)rot_dims);
    for (int64_t t0 = 0; t0 < t; t0 += CU_IDX_MAX) {
        int64_t nt = t - t0 < CU_IDX_MAX ? t - t0 : CU_IDX_MAX;
        int rc = cu_put_small(c, c->idx, pos + t0, (size_t)nt * sizeof(int32_t));
        if (rc) return rc;
        k_rope<<<cu_blocks(nt * heads * half, 256), 256, 0, c->stream>>>(x + t0 * ld, ld, nt,
                                                                          heads, dim, half,
                                                                          c->idx, f);
        CU_LAUNCHED("rope");
    }
    return TV_OK;
}

// ============================================================================= embedding ====

__global__ void k_embed(const void *table, int dt, long long dim, const int32_t *ids,
                        long long n, float *out) {
    long long total = n * dim;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i / dim, d = i % dim, src = (long long)ids[r] * dim + d;
        float v;
        if (dt == DT_F32) v = ((const float *)table)[src];
        else if (dt == DT_F16) v = __half2float(((const __half *)table)[src]);
        else v = __uint_as_float((unsigned)((const uint16_t *)table)[src] << 16);   // bf16
        out[i] = v;
    }
}

static int cu_embed(kern_be *be, const void *table, dtype_id dt, int64_t vocab, int64_t dim,
                    const int32_t *ids, int64_t n, float *out) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    for (int64_t i0 = 0; i0 < n; i0 += CU_IDX_MAX) {
        int64_t k = n - i0 < CU_IDX_MAX ? n - i0 : CU_IDX_MAX;
        int rc = cu_put_small(c, c->idx, ids + i0, (size_t)k * sizeof(int32_t));
        if (rc) return rc;
        k_embed<<<cu_blocks(k * dim, 256), 256, 0, c->stream>>>(table, (int)dt, dim, c->idx, k,
                                                                 out + i0 * dim);
        CU_LAUNCHED("embed");
    }
    return TV_OK;
}

// ============================================================================= memory =======

static int cu_alloc(kern_be *be, size_t bytes, void **out) {
    cu_be *c = cu_of(be);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return err_set(TV_ENOMEM, "cuda: cannot allocate %.1f MB of GPU memory (%.1f MB free "
                       "of %.1f MB): %s", bytes / 1e6, fr / 1e6, tot / 1e6, cudaGetErrorString(e));
    }
    e = cudaMemsetAsync(p, 0, bytes, c->stream);
    if (e != cudaSuccess) {
        cudaFree(p);
        return err_set(TV_EINTERNAL, "cuda: memset: %s", cudaGetErrorString(e));
    }
    *out = p;
    return TV_OK;
}

static void cu_release(kern_be *be, void *p) {
    cu_be *c = cu_of(be);
    cudaStreamSynchronize(c->stream);   // no queued op may still use it
    cudaFree(p);
}

// Host -> device through the two halves of the pinned staging buffer: the host copies into
// one half while the GPU reads the other (an event per half says when it may be refilled).
static int cu_upload(kern_be *be, void *dst, const void *src, size_t bytes) {
    cu_be *c = cu_of(be);
    if (bytes <= 65536 || !c->stage) {   // small: a plain (stream-ordered) copy
        CU_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
        return TV_OK;
    }
    size_t half = CU_STAGE_BYTES / 2;
    int k = 0;
    for (size_t off = 0; off < bytes; off += half, k ^= 1) {
        size_t n = bytes - off < half ? bytes - off : half;
        unsigned char *st = c->stage + (size_t)k * half;
        CU_TRY(cudaEventSynchronize(c->stage_ev[k]));
        memcpy(st, (const char *)src + off, n);
        CU_TRY(cudaMemcpyAsync((char *)dst + off, st, n, cudaMemcpyHostToDevice, c->stream));
        CU_TRY(cudaEventRecord(c->stage_ev[k], c->stream));
    }
    return TV_OK;
}

static int cu_sync(kern_be *be) {
    cu_be *c = cu_of(be);
    if (c->timing) {
        CU_TRY(cudaEventRecord(c->t1, c->stream));
        CU_TRY(cudaEventSynchronize(c->t1));
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->t0, c->t1) == cudaSuccess) c->busy_ms += ms;
        c->timing = 0;
    }
    CU_TRY(cudaStreamSynchronize(c->stream));
    return TV_OK;
}

static int cu_download(kern_be *be, void *dst, const void *src, size_t bytes) {
    cu_be *c = cu_of(be);
    CU_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    return cu_sync(be);
}

static int cu_copy2d(kern_be *be, void *dst, size_t dpitch, const void *src, size_t spitch,
                     size_t width, size_t height) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    if (height == 1)
        CU_TRY(cudaMemcpyAsync(dst, src, width, cudaMemcpyDeviceToDevice, c->stream));
    else
        CU_TRY(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height,
                                 cudaMemcpyDeviceToDevice, c->stream));
    return TV_OK;
}

// Block r copies row r; 4-byte words when everything is 4-byte aligned.
__global__ void k_copy_rows(void *const *dst, const unsigned char *src, size_t pitch,
                            size_t width, int words) {
    unsigned char *d = (unsigned char *)dst[blockIdx.x];
    const unsigned char *s = src + blockIdx.x * pitch;
    if (words) {
        for (size_t i = threadIdx.x; i < width / 4; i += blockDim.x)
            ((uint32_t *)d)[i] = ((const uint32_t *)s)[i];
    } else {
        for (size_t i = threadIdx.x; i < width; i += blockDim.x) d[i] = s[i];
    }
}

static int cu_copy_rows(kern_be *be, int64_t n, void *const *dst, const void *src,
                        size_t src_pitch, size_t width) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    int words = width % 4 == 0 && src_pitch % 4 == 0 && (uintptr_t)src % 4 == 0;
    for (int64_t r = 0; r < n && words; r++) words = (uintptr_t)dst[r] % 4 == 0;
    for (int64_t r0 = 0; r0 < n; r0 += CU_KV_MAX) {
        int64_t k = n - r0 < CU_KV_MAX ? n - r0 : CU_KV_MAX;
        int rc = cu_put_small(c, c->rows, dst + r0, (size_t)k * sizeof(void *));
        if (rc) return rc;
        k_copy_rows<<<(unsigned)k, 256, 0, c->stream>>>(
            c->rows, (const unsigned char *)src + (size_t)r0 * src_pitch, src_pitch, width,
            words);
        CU_LAUNCHED("copy_rows");
    }
    return TV_OK;
}

static int cu_const_new(kern_be *be, const void *src, size_t bytes, const void **out) {
    void *p = NULL;
    int rc = cu_alloc(be, bytes, &p);
    if (rc) return rc;
    if ((rc = cu_upload(be, p, src, bytes)) || (rc = cu_sync(be))) {
        cudaFree(p);
        return rc;
    }
    *out = p;
    return TV_OK;
}

static void cu_const_free(kern_be *be, const void *p) { cu_release(be, (void *)p); }

static int cu_device_info(kern_be *be, kern_device *out) {
    cu_be *c = cu_of(be);
    size_t fr = 0, tot = 0;
    CU_TRY(cudaMemGetInfo(&fr, &tot));
    snprintf(out->device, sizeof out->device, "%.90s", c->name);
    out->is_gpu = 1;
    out->mem_total = (int64_t)tot;
    out->mem_free = (int64_t)fr;
    out->mem_used = (int64_t)(tot - fr);
    out->busy_ms = c->busy_ms;
    return TV_OK;
}

// ============================================================================= the backend ==

static void cu_destroy(cu_be *c) {
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->blas) cublasDestroy(c->blas);
    cudaFree(c->mm_x);
    cudaFree(c->mm_w);
    cudaFree(c->att);
    cudaFree(c->idx);
    cudaFree(c->kv);
    cudaFree(c->rows);
    if (c->stage) cudaFreeHost(c->stage);
    if (c->ring) cudaFreeHost(c->ring);
    for (int i = 0; i < 2; i++)
        if (c->stage_ev[i]) cudaEventDestroy(c->stage_ev[i]);
    if (c->t0) cudaEventDestroy(c->t0);
    if (c->t1) cudaEventDestroy(c->t1);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static void cu_free(kern_be *be) {
    cu_destroy(cu_of(be));
    free(be);
}

static const kern_ops cu_ops = {
    cu_matmul, cu_add, cu_scale, cu_add_bias, cu_layernorm, cu_rmsnorm, cu_gelu, cu_gelu_tanh,
    cu_softmax, cu_rope, cu_attention, cu_attn_decode, cu_embed, cu_free,
    cu_alloc, cu_release, cu_upload, cu_download, cu_copy2d, cu_copy_rows, cu_sync, cu_const_new,
    cu_const_free, cu_device_info,
};

static int cu_setup(cu_be *c) {
    CU_TRY(cudaSetDevice(c->device));
    cudaDeviceProp p;
    CU_TRY(cudaGetDeviceProperties(&p, c->device));
    snprintf(c->name, sizeof c->name, "%.90s", p.name);
    CU_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CU_TRY(cudaEventCreate(&c->t0));
    CU_TRY(cudaEventCreate(&c->t1));
    for (int i = 0; i < 2; i++) CU_TRY(cudaEventCreateWithFlags(&c->stage_ev[i],
                                                                cudaEventDisableTiming));
    CU_BLAS(cublasCreate(&c->blas));
    CU_BLAS(cublasSetStream(c->blas, c->stream));
    CU_BLAS(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));   // no TF32 for f32 GEMMs
    CU_TRY(cudaMalloc(&c->mm_x, CU_MM_HALVES * 2));
    CU_TRY(cudaMalloc(&c->mm_w, CU_MM_HALVES * 2));
    CU_TRY(cudaMalloc((void **)&c->att, CU_ATT_FLOATS * sizeof(float)));
    CU_TRY(cudaMalloc((void **)&c->idx, CU_IDX_MAX * sizeof(int32_t)));
    CU_TRY(cudaMalloc((void **)&c->kv, CU_KV_MAX * sizeof(cu_kv)));
    CU_TRY(cudaMalloc((void **)&c->rows, CU_KV_MAX * sizeof(void *)));
    if (cudaMallocHost((void **)&c->stage, CU_STAGE_BYTES) != cudaSuccess) {
        cudaGetLastError();   // no pinned memory: uploads go unstaged, slower but correct
        c->stage = NULL;
    }
    if (cudaMallocHost((void **)&c->ring, CU_RING_BYTES) != cudaSuccess) {
        cudaGetLastError();
        c->ring = NULL;
    }
    return cu_attn_init();
}

extern "C" int kern_cuda_new(int device, kern_be **out) {
    *out = NULL;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        cudaGetLastError();
        return err_set(TV_EUNSUPPORTED, "cuda: no CUDA GPU is visible");
    }
    if (device < 0 || device >= n)
        return err_set(TV_EINVAL, "cuda: device %d outside 0..%d", device, n - 1);
    cu_be *c = (cu_be *)tv_xcalloc(1, sizeof *c);
    c->device = device;
    int rc = cu_setup(c);
    if (rc) {
        cu_destroy(c);
        return err_wrap(rc, "cuda: cannot start the backend on GPU %d", device);
    }
    kern_be *be = (kern_be *)tv_xcalloc(1, sizeof *be);
    be->ops = &cu_ops;
    be->impl = c;
    snprintf(be->name, sizeof be->name, "cuda %.58s", c->name);
    log_info("kern", "CUDA backend on GPU %d: %s", device, c->name);
    *out = be;
    return TV_OK;
}
