#include "tensor.h"

#include <stdio.h>

#include "err.h"

int64_t tensor_numel(const tensor_view *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

char *tensor_shape_str(const tensor_view *t, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%lld", i ? ", " : "",
                                (long long)t->shape[i]);
    if (off < len) snprintf(buf + off, len - off, "]");
    return buf;
}

int tensor_expect_shape(const tensor_view *t, int ndim, const int64_t *dims) {
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == dims[i];
    if (ok) return TV_OK;
    tensor_view want = {.ndim = ndim};
    for (int i = 0; i < ndim && i < TENSOR_MAX_DIMS; i++) want.shape[i] = dims[i];
    char a[128], b[128];
    return err_set(TV_EFORMAT, "tensor '%s' has shape %s, expected %s",
                   t->name ? t->name : "?", tensor_shape_str(t, a, sizeof a),
                   tensor_shape_str(&want, b, sizeof b));
}
