/* convert_int — internals of `tinyvlm convert` shared by cli/convert*.c (not a public API).
 *
 * An output tensor is a conv_job: a conv_src that makes its rows in f32 on demand, and an
 * encoding that turns each row into the stored bytes. Jobs are registered with an st_writer
 * through conv_job_add; the writer's fill callback (conv_job_fill) builds one row at a time, so
 * nothing bigger than a row (and a LoRA A matrix) is ever held in memory. */
#ifndef TV_CONVERT_INT_H
#define TV_CONVERT_INT_H

#include <stdint.h>

#include "safetensors.h"
#include "tensor.h"

/* How a row is stored. */
typedef enum {
    CE_F32, CE_F16, CE_BF16,
    CE_Q8,      /* I8 values of a q8 matrix (kernels/quant.h) */
    CE_Q4,      /* U8 packed values of a q4 matrix */
    CE_Q8SCALE, /* F32 block scales of a q8 matrix */
    CE_Q4SCALE, /* F32 block scales of a q4 matrix */
} conv_enc;

typedef enum {
    CS_VIEW,  /* rows stacked from up to 3 parts (NULL part = zeros), optional LoRA */
    CS_CONST, /* every element = value */
    CS_POS,   /* pos_embed bicubic resize: part[0] is [1, 1+gin*gin, cols] */
} conv_src_kind;

/* The f32 source of an output tensor seen as [rows, cols] (a vector [n] is [n, 1]). */
typedef struct {
    conv_src_kind kind;
    int64_t rows, cols;
    const tensor_view *part[3]; /* CS_VIEW: parts stacked along rows, part_rows rows each; a
                                   part with fewer rows (an embedding to pad) reads zeros past
                                   its end */
    int nparts;
    int64_t part_rows;
    /* LM qkv: output row r = which*d + h*Dh + i comes from fused row h*3*Dh + which*Dh + i,
     * which is the row of part[0] when nparts == 1 (fused), or row h*Dh + i of part[which]
     * (split). LoRA rows are always indexed in the fused layout. 0 = no reordering. */
    int64_t heads, head_dim;
    const tensor_view *lora_a, *lora_b; /* [r, cols], [rows, r]; NULL = none */
    float lora_scale;
    float value;                        /* CS_CONST */
    int grid_in, grid_out;              /* CS_POS */
} conv_src;

typedef struct conv_job conv_job;

/* Registers tensor `name` (shape ndim/shape, stored with enc) with w; its bytes come from src
 * at write time. The job is appended to *jobs (grown as needed; free all with conv_jobs_free).
 * Returns 0 or the writer's error. */
int conv_job_add(st_writer *w, conv_job ***jobs, size_t *njobs, const char *name, conv_enc enc,
                 int ndim, const int64_t *shape, const conv_src *src);

/* Frees n jobs and the array; NULL is a no-op. */
void conv_jobs_free(conv_job **jobs, size_t n);

/* Computes row r of src (cols floats) into out; tmp is scratch of src->lora_a rows floats and
 * a32 is lora_a as f32 (both unused without LoRA). Exposed for tests. */
void conv_src_row(const conv_src *s, int64_t r, const float *a32, float *tmp, float *out);

/* torch's bicubic (A = -0.75) 1-D coefficients for fraction t, as upsample_bicubic2d uses. */
void conv_cubic_coeffs(float t, float c[4]);

#endif
