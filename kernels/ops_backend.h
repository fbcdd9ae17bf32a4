/* kern backend interface — what a backend (CPU, CUDA) implements; model code uses ops.h only.
 *
 * A backend fills a kern_ops table and a kern_be. The kern_* wrappers in ops.c have already
 * validated every argument (sizes positive, pointers non-NULL, strides large enough, dims
 * supported) before calling these, so implementations may trust them. Each returns 0 or a
 * negative TV_E* with err_set. */
#ifndef TV_KERN_OPS_BACKEND_H
#define TV_KERN_OPS_BACKEND_H

#include "ops.h"

typedef struct kern_ops {
    int (*matmul)(kern_be *be, const float *x, int64_t m, const kern_weight *w, const float *bias,
                  float *y);
    int (*add)(kern_be *be, const float *a, const float *b, float *y, int64_t n);
    int (*scale)(kern_be *be, const float *x, float s, float *y, int64_t n);
    int (*add_bias)(kern_be *be, float *y, int64_t rows, int64_t n, const float *bias);
    int (*layernorm)(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy,
                     int64_t rows, int64_t groups, int64_t n, const float *w, const float *b,
                     float eps);
    int (*rmsnorm)(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy, int64_t rows,
                   int64_t groups, int64_t n, const float *w, float eps);
    int (*gelu)(kern_be *be, const float *x, float *y, int64_t n);
    int (*gelu_tanh)(kern_be *be, const float *x, float *y, int64_t n);
    int (*softmax)(kern_be *be, const float *x, float *y, int64_t rows, int64_t n, int64_t ld);
    int (*rope)(kern_be *be, float *x, int64_t ld, int64_t t, int64_t heads, int64_t dim,
                int64_t rot_dims, const int32_t *pos, float theta);
    int (*attention)(kern_be *be, const kern_attn *a);      /* a->kv_heads already resolved */
    int (*attn_decode)(kern_be *be, int64_t n_seq, const float *q, int64_t ldq,
                       const kern_kv *kv, int64_t heads, int64_t kv_heads, int64_t dim,
                       float scale, float *out, int64_t ldo);
    int (*embed)(kern_be *be, const void *table, dtype_id dt, int64_t vocab, int64_t dim,
                 const int32_t *ids, int64_t n, float *out);   /* ids already range-checked */
    void (*free)(kern_be *be);
    /* Memory (optional): a backend that leaves these NULL uses host memory, and ops.c does
     * malloc/memcpy for it. Sizes were checked (bytes >= 1, pointers non-NULL). */
    int (*alloc)(kern_be *be, size_t bytes, void **out);
    void (*release)(kern_be *be, void *p);
    int (*upload)(kern_be *be, void *dst, const void *src, size_t bytes);
    int (*download)(kern_be *be, void *dst, const void *src, size_t bytes);
    int (*copy2d)(kern_be *be, void *dst, size_t dpitch, const void *src, size_t spitch,
                  size_t width, size_t height);
    int (*copy_rows)(kern_be *be, int64_t n, void *const *dst, const void *src,
                     size_t src_pitch, size_t width);
    int (*sync)(kern_be *be);
    int (*const_new)(kern_be *be, const void *src, size_t bytes, const void **out);
    void (*const_free)(kern_be *be, const void *p);
    int (*device_info)(kern_be *be, kern_device *out);
} kern_ops;

struct kern_be {
    const kern_ops *ops;
    char name[64];
    void *impl;          /* the backend's own state */
};

#endif
