/* kern_* wrappers: one place that validates arguments for every backend, then dispatches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_info.h"
#include "err.h"
#include "log.h"
#include "ops_backend.h"
#include "ops_cuda.h"
#include "quant.h"

const char *kern_wtype_name(kern_wtype t) {
    switch (t) {
    case KERN_W_F32: return "f32";
    case KERN_W_F16: return "f16";
    case KERN_W_BF16: return "bf16";
    case KERN_W_Q8: return "q8";
    case KERN_W_Q4: return "q4";
    }
    return "?";
}

void kern_free(kern_be *be) {
    if (be) be->ops->free(be);
}

const char *kern_name(const kern_be *be) { return be ? be->name : "(none)"; }

/* Sizes are int64 so that products of two of them cannot overflow before we check; this bound
 * keeps any rows*ld product far below 2^63. */
#define KERN_DIM_MAX ((int64_t)1 << 31)

static int kern_bad(const char *op, const char *what) {
    return err_set(TV_EINVAL, "%s: %s", op, what);
}

static int kern_dim_ok(int64_t v) { return v >= 1 && v <= KERN_DIM_MAX; }

#define KERN_REQ(op, cond, what)                          \
    do {                                                  \
        if (!(cond)) return kern_bad(op, what);           \
    } while (0)

int kern_matmul(kern_be *be, const float *x, int64_t m, const kern_weight *w, const float *bias,
                float *y) {
    KERN_REQ("matmul", be && x && w && y && w->data, "NULL argument");
    KERN_REQ("matmul", kern_dim_ok(m) && kern_dim_ok(w->n) && kern_dim_ok(w->k),
             "sizes must be in [1, 2^31]");
    switch (w->type) {
    case KERN_W_F32: case KERN_W_F16: case KERN_W_BF16: break;
    case KERN_W_Q8: case KERN_W_Q4:
        if (!w->scale) return kern_bad("matmul", "quantised weight without scales");
        if (w->k % QUANT_BLOCK)
            return err_set(TV_EINVAL, "matmul: %s weight needs K a multiple of %d, got %lld",
                           kern_wtype_name(w->type), QUANT_BLOCK, (long long)w->k);
        break;
    default: return err_set(TV_EINVAL, "matmul: unknown weight type %d", (int)w->type);
    }
    return be->ops->matmul(be, x, m, w, bias, y);
}

int kern_add(kern_be *be, const float *a, const float *b, float *y, int64_t n) {
    KERN_REQ("add", be && a && b && y, "NULL argument");
    KERN_REQ("add", n >= 0, "negative size");
    return n ? be->ops->add(be, a, b, y, n) : TV_OK;
}

int kern_scale(kern_be *be, const float *x, float s, float *y, int64_t n) {
    KERN_REQ("scale", be && x && y, "NULL argument");
    KERN_REQ("scale", n >= 0, "negative size");
    return n ? be->ops->scale(be, x, s, y, n) : TV_OK;
}

int kern_add_bias(kern_be *be, float *y, int64_t rows, int64_t n, const float *bias) {
    KERN_REQ("add_bias", be && y && bias, "NULL argument");
    KERN_REQ("add_bias", kern_dim_ok(rows) && kern_dim_ok(n), "sizes must be in [1, 2^31]");
    return be->ops->add_bias(be, y, rows, n, bias);
}

static int kern_norm_check(const char *op, const float *x, int64_t ldx, const float *y,
                           int64_t ldy, int64_t rows, int64_t groups, int64_t n) {
    KERN_REQ(op, x && y, "NULL argument");
    KERN_REQ(op, kern_dim_ok(rows) && kern_dim_ok(groups) && kern_dim_ok(n),
             "sizes must be in [1, 2^31]");
    KERN_REQ(op, groups * n <= KERN_DIM_MAX, "groups * n too large");
    KERN_REQ(op, ldx >= groups * n && ldy >= groups * n && ldx <= KERN_DIM_MAX &&
                     ldy <= KERN_DIM_MAX, "row stride smaller than groups * n");
    return TV_OK;
}

int kern_layernorm(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy, int64_t rows,
                   int64_t groups, int64_t n, const float *w, const float *b, float eps) {
    KERN_REQ("layernorm", be, "NULL backend");
    int rc = kern_norm_check("layernorm", x, ldx, y, ldy, rows, groups, n);
    if (rc) return rc;
    KERN_REQ("layernorm", eps >= 0, "eps must be >= 0");
    return be->ops->layernorm(be, x, ldx, y, ldy, rows, groups, n, w, b, eps);
}

int kern_rmsnorm(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy, int64_t rows,
                 int64_t groups, int64_t n, const float *w, float eps) {
    KERN_REQ("rmsnorm", be, "NULL backend");
    int rc = kern_norm_check("rmsnorm", x, ldx, y, ldy, rows, groups, n);
    if (rc) return rc;
    KERN_REQ("rmsnorm", eps >= 0, "eps must be >= 0");
    return be->ops->rmsnorm(be, x, ldx, y, ldy, rows, groups, n, w, eps);
}

int kern_gelu(kern_be *be, const float *x, float *y, int64_t n) {
    KERN_REQ("gelu", be && x && y, "NULL argument");
    KERN_REQ("gelu", n >= 0, "negative size");
    return n ? be->ops->gelu(be, x, y, n) : TV_OK;
}

int kern_gelu_tanh(kern_be *be, const float *x, float *y, int64_t n) {
    KERN_REQ("gelu_tanh", be && x && y, "NULL argument");
    KERN_REQ("gelu_tanh", n >= 0, "negative size");
    return n ? be->ops->gelu_tanh(be, x, y, n) : TV_OK;
}

int kern_softmax(kern_be *be, const float *x, float *y, int64_t rows, int64_t n, int64_t ld) {
    KERN_REQ("softmax", be && x && y, "NULL argument");
    KERN_REQ("softmax", kern_dim_ok(rows) && kern_dim_ok(n), "sizes must be in [1, 2^31]");
    KERN_REQ("softmax", ld >= n && ld <= KERN_DIM_MAX, "row stride smaller than n");
    return be->ops->softmax(be, x, y, rows, n, ld);
}

int kern_rope(kern_be *be, float *x, int64_t ld, int64_t t, int64_t heads, int64_t dim,
              int64_t rot_dims, const int32_t *pos, float theta) {
    KERN_REQ("rope", be && x && pos, "NULL argument");
    KERN_REQ("rope", kern_dim_ok(t) && kern_dim_ok(heads) && kern_dim_ok(dim),
             "sizes must be in [1, 2^31]");
    KERN_REQ("rope", heads * dim <= KERN_DIM_MAX && ld >= heads * dim && ld <= KERN_DIM_MAX,
             "row stride smaller than heads * dim");
    KERN_REQ("rope", rot_dims >= 2 && rot_dims % 2 == 0 && rot_dims <= dim &&
                         rot_dims <= 2 * KERN_MAX_HEAD_DIM,
             "rot_dims must be even, >= 2 and <= dim");
    KERN_REQ("rope", theta > 0, "theta must be > 0");
    for (int64_t i = 0; i < t; i++)
        if (pos[i] < 0) return err_set(TV_EINVAL, "rope: negative position at %lld", (long long)i);
    return be->ops->rope(be, x, ld, t, heads, dim, rot_dims, pos, theta);
}

static int kern_heads_check(const char *op, int64_t heads, int64_t *kv_heads, int64_t dim) {
    if (*kv_heads == 0) *kv_heads = heads;
    KERN_REQ(op, kern_dim_ok(heads) && kern_dim_ok(*kv_heads) && kern_dim_ok(dim),
             "heads, kv_heads and dim must be >= 1");
    KERN_REQ(op, heads % *kv_heads == 0, "kv_heads must divide heads");
    if (dim > KERN_MAX_HEAD_DIM)
        return err_set(TV_EUNSUPPORTED, "%s: head dim %lld > %d", op, (long long)dim,
                       KERN_MAX_HEAD_DIM);
    return TV_OK;
}

int kern_attention(kern_be *be, const kern_attn *a) {
    KERN_REQ("attention", be && a && a->q && a->k && a->v && a->out, "NULL argument");
    kern_attn c = *a;
    int rc = kern_heads_check("attention", c.heads, &c.kv_heads, c.dim);
    if (rc) return rc;
    KERN_REQ("attention", kern_dim_ok(c.tq) && kern_dim_ok(c.tk), "tq and tk must be >= 1");
    KERN_REQ("attention", c.ldq >= c.heads * c.dim && c.ldo >= c.heads * c.dim &&
                              c.ldk >= c.kv_heads * c.dim && c.ldv >= c.kv_heads * c.dim,
             "a row stride is smaller than heads * dim");
    KERN_REQ("attention", c.ldq <= KERN_DIM_MAX && c.ldk <= KERN_DIM_MAX &&
                              c.ldv <= KERN_DIM_MAX && c.ldo <= KERN_DIM_MAX,
             "row stride too large");
    return be->ops->attention(be, &c);
}

int kern_attn_decode(kern_be *be, int64_t n_seq, const float *q, int64_t ldq, const kern_kv *kv,
                     int64_t heads, int64_t kv_heads, int64_t dim, float scale, float *out,
                     int64_t ldo) {
    KERN_REQ("attn_decode", be && q && kv && out, "NULL argument");
    int rc = kern_heads_check("attn_decode", heads, &kv_heads, dim);
    if (rc) return rc;
    KERN_REQ("attn_decode", kern_dim_ok(n_seq), "n_seq must be >= 1");
    KERN_REQ("attn_decode", ldq >= heads * dim && ldo >= heads * dim && ldq <= KERN_DIM_MAX &&
                                ldo <= KERN_DIM_MAX,
             "a row stride is smaller than heads * dim");
    for (int64_t s = 0; s < n_seq; s++) {
        if (!kv[s].k || !kv[s].v || !kern_dim_ok(kv[s].len) || kv[s].ld < kv_heads * dim ||
            kv[s].ld > KERN_DIM_MAX)
            return err_set(TV_EINVAL, "attn_decode: sequence %lld has a bad cache (NULL, "
                           "len < 1 or ld < kv_heads*dim)", (long long)s);
    }
    return be->ops->attn_decode(be, n_seq, q, ldq, kv, heads, kv_heads, dim, scale, out, ldo);
}

int kern_embed(kern_be *be, const void *table, dtype_id dt, int64_t vocab, int64_t dim,
               const int32_t *ids, int64_t n, float *out) {
    KERN_REQ("embed", be && table && ids && out, "NULL argument");
    KERN_REQ("embed", kern_dim_ok(vocab) && kern_dim_ok(dim) && n >= 0, "bad sizes");
    if (dt != DT_F32 && dt != DT_F16 && dt != DT_BF16)
        return err_set(TV_EUNSUPPORTED, "embed: table dtype %s (want F32, F16 or BF16)",
                       (unsigned)dt < DT_COUNT ? dtype_name(dt) : "invalid");
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return err_set(TV_EINVAL, "embed: id %d at position %lld is outside [0, %lld)",
                           (int)ids[i], (long long)i, (long long)vocab);
    return n ? be->ops->embed(be, table, dt, vocab, dim, ids, n, out) : TV_OK;
}

/* ---- device choice ----------------------------------------------------------------------- */

int kern_new_device(const char *device, int threads, kern_be **out) {
    if (!out) return err_set(TV_EINVAL, "kern_new_device: NULL out");
    *out = NULL;
    if (!device || !strcmp(device, "auto")) {
        char name[96];
        if (!cuda_info_built()) {
            log_info("kern", "device auto: this binary has no CUDA backend, using the CPU");
        } else if (cuda_info_devices(name, sizeof name) < 1) {
            log_info("kern", "device auto: no CUDA GPU found, using the CPU");
        } else {
            int rc = kern_cuda_new(0, out);
            if (rc == 0) return TV_OK;
            log_warn("kern", "device auto: CUDA GPU %s failed to start (%s), using the CPU",
                     name, err_msg());
        }
        return kern_cpu_new(threads, KERN_ISA_AUTO, out);
    }
    if (!strcmp(device, "cpu")) return kern_cpu_new(threads, KERN_ISA_AUTO, out);
    if (!strcmp(device, "cuda")) {
        if (!cuda_info_built()) return kern_cuda_new(0, out);   /* the stub's message */
        if (cuda_info_devices(NULL, 0) < 1)
            return err_set(TV_EUNSUPPORTED, "device cuda: no CUDA GPU is visible (driver "
                           "missing, or CUDA_VISIBLE_DEVICES empty)");
        return kern_cuda_new(0, out);
    }
    return err_set(TV_EINVAL, "unknown device \"%s\" (want cpu, cuda or auto)", device);
}

/* ---- memory: host defaults for backends without their own -------------------------------- */

int kern_is_host(const kern_be *be) { return be && be->ops->alloc == NULL; }

int kern_alloc(kern_be *be, size_t bytes, void **out) {
    KERN_REQ("alloc", be && out, "NULL argument");
    *out = NULL;
    if (bytes == 0) bytes = 1;
    if (be->ops->alloc) return be->ops->alloc(be, bytes, out);
    /* calloc: large zeroed blocks (a KV cache) stay untouched pages until used */
    void *p = calloc(1, bytes);
    if (!p) return err_set(TV_ENOMEM, "alloc: cannot allocate %zu bytes", bytes);
    *out = p;
    return TV_OK;
}

void kern_release(kern_be *be, void *p) {
    if (!be || !p) return;
    if (be->ops->release) be->ops->release(be, p);
    else free(p);
}

int kern_upload(kern_be *be, void *dst, const void *src, size_t bytes) {
    KERN_REQ("upload", be && dst && src, "NULL argument");
    if (!bytes) return TV_OK;
    if (be->ops->upload) return be->ops->upload(be, dst, src, bytes);
    memmove(dst, src, bytes);
    return TV_OK;
}

int kern_download(kern_be *be, void *dst, const void *src, size_t bytes) {
    KERN_REQ("download", be && dst && src, "NULL argument");
    if (!bytes) return TV_OK;
    if (be->ops->download) return be->ops->download(be, dst, src, bytes);
    memmove(dst, src, bytes);
    return TV_OK;
}

int kern_copy(kern_be *be, void *dst, const void *src, size_t bytes) {
    return kern_copy2d(be, dst, bytes, src, bytes, bytes, 1);
}

int kern_copy2d(kern_be *be, void *dst, size_t dpitch, const void *src, size_t spitch,
                size_t width, size_t height) {
    KERN_REQ("copy", be && dst && src, "NULL argument");
    KERN_REQ("copy", dpitch >= width && spitch >= width, "pitch smaller than width");
    if (!width || !height) return TV_OK;
    if (be->ops->copy2d) return be->ops->copy2d(be, dst, dpitch, src, spitch, width, height);
    for (size_t r = 0; r < height; r++)
        memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    return TV_OK;
}

int kern_copy_rows(kern_be *be, int64_t n, void *const *dst, const void *src, size_t src_pitch,
                   size_t width) {
    KERN_REQ("copy_rows", be && (n == 0 || (dst && src)), "NULL argument");
    KERN_REQ("copy_rows", n >= 0 && n <= KERN_DIM_MAX && src_pitch >= width, "bad sizes");
    for (int64_t r = 0; r < n; r++)
        if (!dst[r]) return err_set(TV_EINVAL, "copy_rows: destination %lld is NULL", (long long)r);
    if (!n || !width) return TV_OK;
    if (be->ops->copy_rows) return be->ops->copy_rows(be, n, dst, src, src_pitch, width);
    for (int64_t r = 0; r < n; r++)
        memmove(dst[r], (const char *)src + (size_t)r * src_pitch, width);
    return TV_OK;
}

int kern_sync(kern_be *be) {
    KERN_REQ("sync", be, "NULL backend");
    return be->ops->sync ? be->ops->sync(be) : TV_OK;
}

int kern_const_new(kern_be *be, const void *src, size_t bytes, const void **out) {
    KERN_REQ("const_new", be && src && out, "NULL argument");
    if (!be->ops->const_new) {
        *out = src;
        return TV_OK;
    }
    *out = NULL;
    return be->ops->const_new(be, src, bytes ? bytes : 1, out);
}

void kern_const_free(kern_be *be, const void *p) {
    if (be && p && be->ops->const_free) be->ops->const_free(be, p);
}

size_t kern_weight_bytes(const kern_weight *w) {
    size_t nk = (size_t)w->n * (size_t)w->k;
    switch (w->type) {
    case KERN_W_F32: return nk * 4;
    case KERN_W_F16: case KERN_W_BF16: return nk * 2;
    case KERN_W_Q8: return nk;
    case KERN_W_Q4: return nk / 2;
    }
    return 0;
}

int kern_weight_upload(kern_be *be, const kern_weight *host, kern_weight *dev) {
    KERN_REQ("weight_upload", be && host && dev && host->data, "NULL argument");
    KERN_REQ("weight_upload", kern_dim_ok(host->n) && kern_dim_ok(host->k), "bad sizes");
    int quant = host->type == KERN_W_Q8 || host->type == KERN_W_Q4;
    KERN_REQ("weight_upload", !quant || host->scale, "quantised weight without scales");
    kern_weight w = *host;
    w.scale = NULL;
    int rc = kern_const_new(be, host->data, kern_weight_bytes(host), &w.data);
    if (!rc && quant) {
        const void *s = NULL;
        size_t sb = (size_t)host->n * (size_t)(host->k / QUANT_BLOCK) * sizeof(float);
        rc = kern_const_new(be, host->scale, sb, &s);
        w.scale = s;
    }
    if (rc) {
        kern_weight_release(be, &w);
        memset(dev, 0, sizeof *dev);
        return rc;
    }
    *dev = w;
    return TV_OK;
}

void kern_weight_release(kern_be *be, kern_weight *dev) {
    if (!dev) return;
    kern_const_free(be, dev->data);
    kern_const_free(be, dev->scale);
    memset(dev, 0, sizeof *dev);
}

int kern_device_info(kern_be *be, kern_device *out) {
    KERN_REQ("device_info", be && out, "NULL argument");
    memset(out, 0, sizeof *out);
    if (be->ops->device_info) return be->ops->device_info(be, out);
    snprintf(out->device, sizeof out->device, "cpu");
    return TV_OK;
}

void kern_gpu_memory(kern_be *be, uint64_t *used, uint64_t *total) {
    kern_device dev;
    *used = *total = 0;
    if (kern_device_info(be, &dev) != TV_OK || !dev.is_gpu) return;
    *used = (uint64_t)(dev.mem_used > 0 ? dev.mem_used : 0);
    *total = (uint64_t)(dev.mem_total > 0 ? dev.mem_total : 0);
}

float *kern_alloc_floats(kern_be *be, int64_t rows, int64_t cols) {
    if (rows < 1 || cols < 1 || rows > INT64_MAX / cols ||
        rows * cols > (INT64_MAX / 4) / (int64_t)sizeof(float))
        return NULL;
    size_t bytes = (size_t)(rows * cols) * sizeof(float);
    if (!be) return malloc(bytes);
    void *p = NULL;
    return kern_alloc(be, bytes, &p) == 0 ? p : NULL;
}

void kern_release_floats(kern_be *be, float *p) {
    if (!p) return;
    if (be) kern_release(be, p);
    else free(p);
}
