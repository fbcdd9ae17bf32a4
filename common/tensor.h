/* tensor — a read-only view of a stored tensor: dtype, shape, and a pointer to contiguous
 * row-major bytes that someone else owns (a mapped file, or a reader's copy buffer). */
#ifndef TV_TENSOR_H
#define TV_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define TENSOR_MAX_DIMS 8

typedef struct {
    const char *name;                 /* owned by whoever produced the view */
    dtype_id dtype;
    int ndim;                         /* 0 for a scalar */
    int64_t shape[TENSOR_MAX_DIMS];
    const void *data;                 /* contiguous, row-major, nbytes long; not owned */
    size_t nbytes;                    /* numel * dtype_size(dtype) */
} tensor_view;

/* Product of the dims (1 for a scalar). */
int64_t tensor_numel(const tensor_view *t);

/* Formats the shape as "[a, b, c]" into buf (always NUL-terminated); returns buf. */
char *tensor_shape_str(const tensor_view *t, char *buf, size_t len);

/* Checks that t has exactly the dims given (ndim entries); returns 0 or TV_EFORMAT with a
 * message naming the tensor, the expected and the actual shape. */
int tensor_expect_shape(const tensor_view *t, int ndim, const int64_t *dims);

#endif
