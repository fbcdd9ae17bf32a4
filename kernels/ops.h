/* kern — the compute op table: the contract between model code and backends.
 *
 * Model code creates one backend (kern_cpu_new, later a CUDA one) per worker and calls
 * kern_matmul(be, ...), kern_layernorm(be, ...) ...; it never sees which backend or ISA runs.
 * Every kern_* call checks its arguments the same way for all backends (returns TV_EINVAL /
 * TV_EUNSUPPORTED with a message, never crashes on bad sizes), then dispatches through the
 * backend's kern_ops (ops_backend.h).
 *
 * Memory: all pointers are in the backend's memory space (host memory for the CPU backend).
 * Outputs are caller-provided; ops never allocate: the scratch a backend needs (matmul packing
 * panels, attention blocks) is allocated once when the backend is created, for any size.
 * Hence a backend serves one caller thread at a time (it owns its thread pool and scratch).
 * All tensors are row-major f32 unless said otherwise; "ld" is a row stride in elements.
 * Outputs must not overlap inputs unless the op says "in place allowed". */
#ifndef TV_KERN_OPS_H
#define TV_KERN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

typedef struct kern_be kern_be;

/* How a weight matrix is stored. */
typedef enum { KERN_W_F32, KERN_W_F16, KERN_W_BF16, KERN_W_Q8, KERN_W_Q4 } kern_wtype;

/* A weight W[n, k] (n outputs, k inputs), e.g. a Linear's weight as torch stores it.
 * data: f32/f16/bf16 [n, k]; q8: int8 [n, k]; q4: uint8 [n, k/2] (layout in quant.h).
 * scale: q8/q4 only, f32 [n, k/32]. Nothing is owned (typically points into a mapped file). */
typedef struct {
    kern_wtype type;
    int64_t n, k;
    const void *data;
    const float *scale;
} kern_weight;

/* "f32", "f16", "bf16", "q8", "q4" (or "?"). */
const char *kern_wtype_name(kern_wtype t);

/* ---- backends --------------------------------------------------------------------------- */

enum { KERN_ISA_AUTO = 0, KERN_ISA_REF = 1, KERN_ISA_AVX2 = 2 };

/* A CPU backend with n_threads threads (<= 0: one per online core; 1: no helper threads).
 * isa: KERN_ISA_AUTO picks the best this CPU runs (AVX2+FMA+F16C, else plain C), KERN_ISA_REF
 * forces the plain-C reference, KERN_ISA_AVX2 asks for AVX2 and fails with TV_EUNSUPPORTED if
 * the CPU lacks it. Returns 0 and *out (free with kern_free), or an error. */
int kern_cpu_new(int n_threads, int isa, kern_be **out);

/* Frees the backend and its threads/scratch; kern_free(NULL) is a no-op. */
void kern_free(kern_be *be);

/* e.g. "cpu-avx2 x2" (backend, ISA, threads); static storage owned by be. */
const char *kern_name(const kern_be *be);

/* The backend for a device name: "cpu" (threads as kern_cpu_new), "cuda" (the first GPU; no GPU
 * or a build without CUDA is TV_EUNSUPPORTED with a message) or "auto" / NULL (CUDA when this
 * binary has it and a GPU is present, else the CPU with one log line saying why). Returns 0 and
 * *out (free with kern_free), or an error. */
int kern_new_device(const char *device, int threads, kern_be **out);

/* ---- memory ------------------------------------------------------------------------------
 * Activations, caches and weights live in the backend's memory space: host memory for the CPU
 * backend (every call below is then malloc/memcpy/free, or nothing at all), device memory for
 * CUDA. Model code allocates everything once with kern_alloc, moves data only with these calls,
 * and never dereferences a backend pointer on the host unless kern_is_host(be).
 * Exceptions, for every backend: index arrays (kern_rope's pos, kern_embed's ids) and the
 * kern_kv descriptor array are HOST memory (the backend copies what it needs; they are small). */

/* 1 if the backend's memory is the host's (plain pointers), 0 for a device backend. */
int kern_is_host(const kern_be *be);

/* *out = bytes (>= 1) of zeroed backend memory, aligned for any element type. Returns 0, or
 * TV_ENOMEM with a message (the size is given). Free with kern_release (NULL is a no-op). */
int kern_alloc(kern_be *be, size_t bytes, void **out);
void kern_release(kern_be *be, void *p);

/* Host -> backend, backend -> host, backend -> backend copies of bytes. kern_download returns
 * once the data is on the host (it waits for the work queued before it). */
int kern_upload(kern_be *be, void *dst, const void *src, size_t bytes);
int kern_download(kern_be *be, void *dst, const void *src, size_t bytes);
int kern_copy(kern_be *be, void *dst, const void *src, size_t bytes);

/* 2-D backend -> backend copy: height rows of width bytes, row r from src + r*spitch to
 * dst + r*dpitch (pitches >= width). */
int kern_copy2d(kern_be *be, void *dst, size_t dpitch, const void *src, size_t spitch,
                size_t width, size_t height);

/* Row scatter (a KV-cache store of a decode batch): for r < n, width bytes from
 * src + r*src_pitch go to dst[r]. dst is a HOST array of n backend pointers. */
int kern_copy_rows(kern_be *be, int64_t n, void *const *dst, const void *src, size_t src_pitch,
                   size_t width);

/* Waits until all queued work is done (a no-op on the CPU); returns the first asynchronous
 * error, if any. */
int kern_sync(kern_be *be);

/* Read-only constant data (a weight vector, a table) for the backend: the CPU backend sets
 * *out = src (borrowed: src must outlive its use, nothing is allocated); a device backend
 * allocates and uploads once (through pinned staging). Release with kern_const_free. */
int kern_const_new(kern_be *be, const void *src, size_t bytes, const void **out);
void kern_const_free(kern_be *be, const void *p);

/* Bytes of a weight's storage (data; scale separately: n * k/32 floats for q8/q4). */
size_t kern_weight_bytes(const kern_weight *w);

/* dev = host with data and scale made backend-visible by kern_const_new (a plain copy of the
 * view on the CPU). Release with kern_weight_release, which zeroes *dev. */
int kern_weight_upload(kern_be *be, const kern_weight *host, kern_weight *dev);
void kern_weight_release(kern_be *be, kern_weight *dev);

/* What a worker reports in /metrics: the device's name ("cpu" for the CPU backend), its memory
 * (bytes; 0 where unknown), and the accumulated time the device spent on queued work since the
 * backend was created, in milliseconds (0 on the CPU, where the caller's wall time is it). */
typedef struct {
    char device[96];
    int is_gpu;
    int64_t mem_total, mem_free, mem_used;
    double busy_ms;
} kern_device;
int kern_device_info(kern_be *be, kern_device *out);

/* GPU memory used and total in bytes, for heartbeats and metrics; both 0 on the CPU or when
 * the device does not say. */
void kern_gpu_memory(kern_be *be, uint64_t *used, uint64_t *total);

/* rows * cols floats of be's memory (host malloc when be is NULL), the product checked: NULL on
 * overflow or refusal. Free with kern_release_floats(be, p) (same be; NULL p is a no-op). */
float *kern_alloc_floats(kern_be *be, int64_t rows, int64_t cols);
void kern_release_floats(kern_be *be, float *p);

/* ---- linear algebra ---------------------------------------------------------------------- */

/* y[m, n] = x[m, k] · W[n, k]^T (+ bias[n] if bias != NULL). x row stride k, y row stride n. */
int kern_matmul(kern_be *be, const float *x, int64_t m, const kern_weight *w, const float *bias,
                float *y);

/* y[i] = a[i] + b[i], n elements (in place allowed: y may be a or b). */
int kern_add(kern_be *be, const float *a, const float *b, float *y, int64_t n);

/* y[i] = s * x[i] (in place allowed). */
int kern_scale(kern_be *be, const float *x, float s, float *y, int64_t n);

/* y[r, :] += bias for each of rows rows of n (in place by definition). */
int kern_add_bias(kern_be *be, float *y, int64_t rows, int64_t n, const float *bias);

/* ---- norms and activations --------------------------------------------------------------- */

/* Normalises groups of n elements. Row r (of rows) starts at x + r*ldx and holds `groups`
 * contiguous groups of n (ldx >= groups*n); each group is normalised on its own, with the same
 * weight/bias [n] (NULL = 1 / 0). groups = 1 is the usual LayerNorm over the last dim; groups =
 * heads gives per-head q/k LayerNorm inside a fused [T, 3*H*D] buffer. y is laid out the same with
 * stride ldy. In place allowed (y == x with ldy == ldx).
 * LayerNorm: (x - mean) / sqrt(var + eps) * w + b, biased variance, as torch. */
int kern_layernorm(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy, int64_t rows,
                   int64_t groups, int64_t n, const float *w, const float *b, float eps);

/* RMSNorm: x / sqrt(mean(x^2) + eps) * w (w may be NULL). Same layout rules as LayerNorm. */
int kern_rmsnorm(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy, int64_t rows,
                 int64_t groups, int64_t n, const float *w, float eps);

/* Exact GELU, as torch's default: 0.5*x*(1 + erf(x/sqrt 2)). In place allowed. */
int kern_gelu(kern_be *be, const float *x, float *y, int64_t n);

/* gelu_new / torch's approximate='tanh': 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715 x^3))). */
int kern_gelu_tanh(kern_be *be, const float *x, float *y, int64_t n);

/* Softmax over each row of n (rows at stride ld, in place allowed), fp32 with the row max
 * subtracted first. A row of all -inf gives zeros. */
int kern_softmax(kern_be *be, const float *x, float *y, int64_t rows, int64_t n, int64_t ld);

/* ---- positions and attention ------------------------------------------------------------- */

/* Partial rotary embedding, NeoX style, in place on x [t, heads, dim]: head h of token i starts
 * at x + i*ld + h*dim. Over the first rot_dims dims of each head (even, <= dim), pairs
 * (j, j + rot_dims/2) rotate by angle pos[i] * inv_freq[j], inv_freq[j] = 1 / theta^(2j/rot_dims),
 * computed in fp32 as torch does; the other dims are untouched. pos: t positions (>= 0). */
int kern_rope(kern_be *be, float *x, int64_t ld, int64_t t, int64_t heads, int64_t dim,
              int64_t rot_dims, const int32_t *pos, float theta);

/* Prefill / encoder / cross attention.
 * q [tq, heads, dim] at stride ldq; k, v [tk, kv_heads, dim] at strides ldk, ldv (kv_heads must
 * divide heads; query head h uses kv head h / (heads / kv_heads)); out [tq, heads*dim] at stride
 * ldo. out = softmax(scale * q·k^T [+ causal mask]) · v per head, fp32.
 * causal: query i sees keys j <= i + (tk - tq) (the queries are the last tq positions); a query
 * that sees no key gets zeros. tk may differ from tq (cross-attention, or a prefill after a
 * cached prefix). dim <= KERN_MAX_HEAD_DIM. */
#define KERN_MAX_HEAD_DIM 256
typedef struct {
    const float *q, *k, *v;
    float *out;
    int64_t ldq, ldk, ldv, ldo;
    int64_t tq, tk, heads, kv_heads, dim;   /* kv_heads 0 means heads */
    float scale;
    int causal;
    int lowp;   /* 1: the backend may round q, k, v and the probabilities to 16-bit floats (fp32
                 * accumulation) to use matrix units; for models whose weights are 16-bit or
                 * quantised anyway. The CPU ignores it; 0 keeps fp32 throughout. */
} kern_attn;
int kern_attention(kern_be *be, const kern_attn *a);

/* One sequence's KV cache for decode: k, v [len, kv_heads, dim] at row stride ld. */
typedef struct {
    const float *k, *v;
    int64_t len, ld;
} kern_kv;

/* Decode attention: for each of n_seq sequences s, one new query q + s*ldq [heads, dim] attends
 * to all len positions of kv[s] (the cache already holds the new token's k/v); output
 * out + s*ldo [heads*dim]. kv_heads 0 means heads. */
int kern_attn_decode(kern_be *be, int64_t n_seq, const float *q, int64_t ldq, const kern_kv *kv,
                     int64_t heads, int64_t kv_heads, int64_t dim, float scale, float *out,
                     int64_t ldo);

/* ---- embeddings -------------------------------------------------------------------------- */

/* out[i, :] = table[ids[i], :] as f32, for n ids; table [vocab, dim] of dtype dt (F32, F16 or
 * BF16). Returns TV_EINVAL (naming the position) if an id is outside [0, vocab). */
int kern_embed(kern_be *be, const void *table, dtype_id dt, int64_t vocab, int64_t dim,
               const int32_t *ids, int64_t n, float *out);

#endif
