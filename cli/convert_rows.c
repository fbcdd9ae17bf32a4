/* convert_rows — the row producers and the st_writer fill callback of `tinyvlm convert`
 * (see convert_int.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "convert_int.h"
#include "dtype.h"
#include "err.h"
#include "quant.h"

struct conv_job {
    conv_src src;
    conv_enc enc;
    char *name;
    int64_t row_bytes;  /* stored bytes per row */
    int64_t cur_row;    /* row held in out, -1 when none */
    float *row, *tmp, *a32;
    unsigned char *out;
    float *scale;       /* q8/q4 block scales of the current row */
};

/* ---- f32 rows ------------------------------------------------------------------------------ */

static int64_t view_rows(const tensor_view *t, int64_t cols) {
    return tensor_numel(t) / cols;
}

static void view_row(const tensor_view *t, int64_t r, int64_t cols, float *out) {
    if (!t || r >= view_rows(t, cols)) {
        memset(out, 0, (size_t)cols * sizeof *out);
        return;
    }
    size_t es = dtype_size(t->dtype);
    dtype_to_f32(t->dtype, (const unsigned char *)t->data + (size_t)(r * cols) * es, out,
                 (size_t)cols);
}

void conv_cubic_coeffs(float t, float c[4]) {
    const float A = -0.75f; /* torch's choice (PIL uses -0.5) */
    float x1 = t + 1.0f, x2 = 1.0f - t, x3 = 2.0f - t;
    c[0] = ((A * x1 - 5.0f * A) * x1 + 8.0f * A) * x1 - 4.0f * A;
    c[1] = ((A + 2.0f) * t - (A + 3.0f)) * t * t + 1.0f;
    c[2] = ((A + 2.0f) * x2 - (A + 3.0f)) * x2 * x2 + 1.0f;
    c[3] = ((A * x3 - 5.0f * A) * x3 + 8.0f * A) * x3 - 4.0f * A;
}

/* Source index and fraction of output index o for torch's upsample_bicubic2d with
 * align_corners=False: real = in/out * (o + 0.5) - 0.5 (not clamped for cubic), index =
 * min(floor(real), in - 1), fraction clamped to [0, 1]. */
static void cubic_index(int in, int outn, int o, int *idx, float *t) {
    float scale = (float)in / (float)outn;
    float real = scale * ((float)o + 0.5f) - 0.5f;
    int i = (int)floorf(real);
    if (i > in - 1) i = in - 1;
    float f = real - (float)i;
    *idx = i;
    *t = f < 0.0f ? 0.0f : f > 1.0f ? 1.0f : f;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Row r of the resized position embedding: 0 is the CLS row, 1 + y*G + x the grid. Each of the
 * 4 source rows is interpolated along x first, then the 4 results along y, as torch does. */
static void pos_row(const conv_src *s, int64_t r, float *tmp, float *out) {
    int64_t C = s->cols;
    if (r == 0) {
        view_row(s->part[0], 0, C, out);
        return;
    }
    int gi = s->grid_in, go = s->grid_out;
    int oy = (int)((r - 1) / go), ox = (int)((r - 1) % go);
    int iy, ix;
    float ty, tx, cy[4], cx[4];
    cubic_index(gi, go, oy, &iy, &ty);
    cubic_index(gi, go, ox, &ix, &tx);
    conv_cubic_coeffs(ty, cy);
    conv_cubic_coeffs(tx, cx);
    memset(out, 0, (size_t)C * sizeof *out);
    float *src = tmp, *line = tmp + C; /* tmp holds 2*C floats */
    for (int a = 0; a < 4; a++) {
        int y = clampi(iy - 1 + a, 0, gi - 1);
        memset(line, 0, (size_t)C * sizeof *line);
        for (int b = 0; b < 4; b++) {
            int x = clampi(ix - 1 + b, 0, gi - 1);
            view_row(s->part[0], 1 + (int64_t)y * gi + x, C, src);
            for (int64_t c = 0; c < C; c++) line[c] += src[c] * cx[b];
        }
        for (int64_t c = 0; c < C; c++) out[c] += line[c] * cy[a];
    }
}

void conv_src_row(const conv_src *s, int64_t r, const float *a32, float *tmp, float *out) {
    if (s->kind == CS_CONST) {
        for (int64_t c = 0; c < s->cols; c++) out[c] = s->value;
        return;
    }
    if (s->kind == CS_POS) {
        pos_row(s, r, tmp, out);
        return;
    }
    int64_t lrow = r; /* the row's index in the LoRA (fused) layout */
    const tensor_view *t;
    int64_t trow;
    if (s->heads > 0) {
        int64_t d = s->heads * s->head_dim, which = r / d, h = (r % d) / s->head_dim,
                i = r % s->head_dim;
        lrow = h * 3 * s->head_dim + which * s->head_dim + i;
        if (s->nparts == 1) t = s->part[0], trow = lrow;
        else t = s->part[which], trow = r % d;
    } else {
        int64_t p = r / s->part_rows;
        t = s->part[p], trow = r % s->part_rows;
    }
    view_row(t, trow, s->cols, out);
    if (!s->lora_a) return;
    /* delta = B[lrow, :] · A, then W += scale * delta (torch's order: B@A first, then scale) */
    int64_t rank = s->lora_a->shape[0];
    float *b = tmp, *delta = tmp + rank;
    view_row(s->lora_b, lrow, rank, b);
    memset(delta, 0, (size_t)s->cols * sizeof *delta);
    for (int64_t k = 0; k < rank; k++) {
        const float *ak = a32 + k * s->cols;
        float bk = b[k];
        for (int64_t c = 0; c < s->cols; c++) delta[c] += bk * ak[c];
    }
    for (int64_t c = 0; c < s->cols; c++) out[c] += s->lora_scale * delta[c];
}

/* ---- encoding ------------------------------------------------------------------------------ */

static int64_t enc_row_bytes(conv_enc e, int64_t cols) {
    switch (e) {
    case CE_F32: return cols * 4;
    case CE_F16:
    case CE_BF16: return cols * 2;
    case CE_Q8: return cols;
    case CE_Q4: return cols / 2;
    case CE_Q8SCALE:
    case CE_Q4SCALE: return cols / QUANT_BLOCK * 4;
    }
    return 0;
}

static dtype_id enc_dtype(conv_enc e) {
    switch (e) {
    case CE_F16: return DT_F16;
    case CE_BF16: return DT_BF16;
    case CE_Q8: return DT_I8;
    case CE_Q4: return DT_U8;
    default: return DT_F32;
    }
}

static void job_release(conv_job *j) {
    free(j->row), free(j->tmp), free(j->a32), free(j->out), free(j->scale);
    j->row = j->tmp = j->a32 = j->scale = NULL;
    j->out = NULL;
    j->cur_row = -1;
}

static void job_alloc(conv_job *j) {
    const conv_src *s = &j->src;
    int64_t rank = s->lora_a ? s->lora_a->shape[0] : 0;
    j->row = tv_xmalloc((size_t)s->cols * sizeof(float));
    j->tmp = tv_xmalloc((size_t)(2 * s->cols + rank) * sizeof(float));
    j->out = tv_xmalloc((size_t)j->row_bytes);
    j->scale = tv_xmalloc((size_t)(s->cols / QUANT_BLOCK + 1) * sizeof(float));
    if (rank) { /* A is read once per output row: convert it to f32 once */
        j->a32 = tv_xmalloc((size_t)(rank * s->cols) * sizeof(float));
        dtype_to_f32(s->lora_a->dtype, s->lora_a->data, j->a32, (size_t)(rank * s->cols));
    }
}

static int job_make_row(conv_job *j, int64_t r) {
    int64_t cols = j->src.cols;
    conv_src_row(&j->src, r, j->a32, j->tmp, j->row);
    int rc = 0;
    switch (j->enc) {
    case CE_F32: memcpy(j->out, j->row, (size_t)cols * 4); break;
    case CE_F16:
    case CE_BF16: {
        uint16_t *o = (uint16_t *)j->out;
        for (int64_t c = 0; c < cols; c++)
            o[c] = j->enc == CE_F16 ? dtype_f32_to_f16(j->row[c]) : dtype_f32_to_bf16(j->row[c]);
        break;
    }
    case CE_Q8:
    case CE_Q8SCALE: { /* a scales job quantises too, keeping the values in scratch */
        int8_t *q = j->enc == CE_Q8 ? (int8_t *)j->out : (int8_t *)j->tmp;
        float *sc = j->enc == CE_Q8 ? j->scale : (float *)j->out;
        rc = quant_q8(j->row, 1, cols, q, sc);
        break;
    }
    case CE_Q4:
    case CE_Q4SCALE: {
        uint8_t *q = j->enc == CE_Q4 ? j->out : (uint8_t *)j->tmp;
        float *sc = j->enc == CE_Q4 ? j->scale : (float *)j->out;
        rc = quant_q4(j->row, 1, cols, q, sc);
        break;
    }
    }
    if (rc) return err_wrap(rc, "%s row %lld", j->name, (long long)r);
    j->cur_row = r;
    return 0;
}

static int conv_job_fill(void *user, void *dst, size_t offset, size_t len) {
    conv_job *j = user;
    if (!j->row) job_alloc(j);
    unsigned char *d = dst;
    size_t rb = (size_t)j->row_bytes, total = rb * (size_t)j->src.rows;
    while (len > 0) {
        int64_t r = (int64_t)(offset / rb);
        size_t in = offset % rb, n = rb - in < len ? rb - in : len;
        if (r != j->cur_row) {
            int rc = job_make_row(j, r);
            if (rc) {
                job_release(j);
                return rc;
            }
        }
        memcpy(d, j->out + in, n);
        d += n, offset += n, len -= n;
    }
    if (offset >= total) job_release(j); /* each tensor is filled once, front to back */
    return 0;
}

int conv_job_add(st_writer *w, conv_job ***jobs, size_t *njobs, const char *name, conv_enc enc,
                 int ndim, const int64_t *shape, const conv_src *src) {
    conv_job *j = tv_xcalloc(1, sizeof *j);
    j->src = *src;
    j->enc = enc;
    j->name = tv_xmalloc(strlen(name) + 1);
    strcpy(j->name, name);
    j->row_bytes = enc_row_bytes(enc, src->cols);
    j->cur_row = -1;
    *jobs = tv_xrealloc(*jobs, (*njobs + 1) * sizeof **jobs);
    (*jobs)[(*njobs)++] = j;
    if (src->rows == 0 || j->row_bytes == 0) /* an empty tensor has no rows to fill */
        return st_writer_add(w, name, enc_dtype(enc), ndim, shape, NULL);
    return st_writer_add_fn(w, name, enc_dtype(enc), ndim, shape, conv_job_fill, j);
}

void conv_jobs_free(conv_job **jobs, size_t n) {
    if (!jobs) return;
    for (size_t i = 0; i < n; i++) {
        job_release(jobs[i]);
        free(jobs[i]->name);
        free(jobs[i]);
    }
    free(jobs);
}
