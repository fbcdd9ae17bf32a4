/* convert_map — internals of `tinyvlm convert`: the conversion context, input lookups that
 * collect every missing or misshapen tensor, and the emitters that register output tensors.
 * Shared by cli/convert*.c only. */
#ifndef TV_CONVERT_MAP_H
#define TV_CONVERT_MAP_H

#include <stdint.h>

#include "convert.h"
#include "convert_int.h"
#include "pth.h"
#include "safetensors.h"

#define CONV_MAX_LAYERS 4096
#define CONV_NAMEBUFS 32
#define CONV_MAX_DIM (1 << 20) /* widths read from tensor shapes must fit an int with room */

/* One input: a .pth checkpoint or a safetensors model, with a used-flag per tensor. */
typedef struct {
    const char *label, *what; /* path, and what it is ("EVA ViT checkpoint") */
    pth_file *pth;
    st_model *st;
    size_t n;
    unsigned char *used;
    const char *prefix;       /* "model." when the state dict is wrapped in {'model': ...} */
    char *missing;            /* ", "-separated names not found */
    int nmissing;
} conv_in;

typedef struct {
    const conv_opts *o;
    conv_enc enc;                 /* matrices' encoding (bundle dtype) */
    conv_in eva, blip, s4, phi;
    int nmissing, nbad;
    char *bad;                    /* "; "-separated shape/dtype problems */
    int rc;                       /* first writer error */
    st_writer *wv, *wl;           /* vision.safetensors, lm.safetensors */
    conv_job **jobs;
    size_t njobs;
    char namebuf[CONV_NAMEBUFS][256];
    int nameidx;
    const char *s4pre;            /* stage-4 LM prefix, e.g. "llama_model.base_model.model." */

    struct { int image_size, patch, grid, width, layers, heads, mlp; } vit;
    struct { int layers, width, heads, ffn, queries, cross_every; } qf;
    int proj_dims[3];
    struct {
        int layers, width, heads, head_dim, ffn, vocab, rotary_dims, max_context;
        double rope_theta, ln_eps, partial_rotary;
        int qk_ln, post_rms, head_bias, fused;
    } lm;
    int lora_r;
    double lora_alpha;
    char *tok_path;
} conv_ctx;

int conv_in_open_pth(conv_in *in, const char *path, const char *what);
int conv_in_open_st(conv_in *in, const char *path, const char *what);
void conv_in_close(conv_in *in);
const tensor_view *conv_in_at(const conv_in *in, size_t i);
const tensor_view *conv_find(conv_in *in, const char *name);
int conv_count_layers(const conv_in *in, const char *prefix);

const tensor_view *conv_need_(conv_ctx *c, conv_in *in, const char *name, const int64_t *dims,
                              int ndim);
/* conv_need(c, in, name, d0, d1, ...): the tensor with that exact shape (-1 = any), or NULL
 * with the problem recorded. */
#define conv_need(c, in, name, ...)                                                      \
    conv_need_((c), (in), (name), (const int64_t[]){__VA_ARGS__},                        \
               (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))

void conv_missing(conv_ctx *c, conv_in *in, const char *name);
void conv_bad(conv_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conv_sb_add(char **s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* printf into one of CONV_NAMEBUFS rotating buffers (use the result right away). */
const char *conv_name(conv_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

conv_src conv_view(const tensor_view *t, int64_t rows, int64_t cols);
conv_src conv_const(int64_t n, float value);
/* Output tensors; nothing is emitted once an error is recorded. */
void conv_emit_vec(conv_ctx *c, st_writer *w, const char *name, conv_src s);  /* F32 [rows*cols] */
void conv_emit_f32(conv_ctx *c, st_writer *w, const char *name, conv_src s);  /* F32 [rows, cols] */
void conv_emit_matrix(conv_ctx *c, st_writer *w, const char *name, conv_src s, int embedding);

/* convert_vision.c / convert_lm.c: the tensor maps. Return 0 unless something other than a
 * missing/misshapen tensor went wrong (those are recorded in c and reported together). */
int conv_map_vision(conv_ctx *c);
int conv_lm_config(conv_ctx *c);
int conv_map_lm(conv_ctx *c);

/* dir/file when path is a directory, else file next to path (convert_lm.c). Caller frees. */
char *conv_sibling(const char *path, const char *file);

/* convert_out.c: writes the safetensors files, the tokenizer, then the manifest. */
int conv_write_bundle(conv_ctx *c);

#endif
