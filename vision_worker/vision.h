/* vision — the whole image encoder of a bundle: EVA ViT -> ln_vision -> Q-Former -> projections,
 * from preprocessed pixels [B, 3, S, S] to image embeddings [B, Q, d_lm] (MODELS.md, TinyGPT-V).
 *
 * Weights: every matrix and vector is a view into the read-only mapping of the bundle's
 * vision.safetensors (names and shapes: docs/bundle.md, "Tensor names"); matrices become
 * kern_weight of the tensor's own dtype (F32/F16/BF16, or I8/U8 plus "<name>.scale" for q8/q4).
 * Nothing is copied.
 *
 * Memory: all activations and scratch are allocated ONCE by vision_load for max_batch images,
 * in the backend's memory (kern_alloc); vision_encode performs no allocation (neither do the
 * kern_* ops it calls). On a device backend (CUDA) every weight is uploaded once at load; the
 * pixels in and the embeddings out of vision_encode are host memory on every backend.
 *
 * Threading: a vision_model uses its kern_be; one caller at a time (like the backend). */
#ifndef TV_VISION_H
#define TV_VISION_H

#include <stdint.h>

#include "manifest.h"
#include "ops.h"
#include "tensor.h"

/* ---- tensor source (shared by vit.c and qformer.c) --------------------------------------- */

/* Where named weight tensors come from: find(user, name) returns the tensor or NULL when absent.
 * The returned views must stay valid while the model that loaded them lives. */
typedef const tensor_view *(*vision_find_fn)(void *user, const char *name);
typedef struct {
    vision_find_fn find;
    void *user;
} vision_src;

/* *out = the F32 vector `name` of exactly n elements (4-byte aligned). Returns 0, or
 * TV_ENOTFOUND / TV_EFORMAT with a message naming the tensor. */
int vision_get_vec(const vision_src *src, const char *name, int64_t n, const float **out);

/* Same for an F32 tensor of any rank holding exactly n elements (e.g. query_tokens [1, Q, D]). */
int vision_get_f32(const vision_src *src, const char *name, int64_t n, const float **out);

/* *w = the weight matrix `name` of shape [n, k]: F32/F16/BF16 as such; I8 [n, k] (q8) or
 * U8 [n, k/2] (q4) with "<name>.scale" F32 [n, k/32]. Returns 0 or an error naming the tensor. */
int vision_get_matrix(const vision_src *src, const char *name, int64_t n, int64_t k,
                      kern_weight *w);

/* ---- the encoder -------------------------------------------------------------------------- */

typedef struct vision_model vision_model;

/* Opens m->vision_path (mmap), checks every tensor's name, dtype and shape against the
 * manifest's dimensions, and allocates scratch for max_batch images (>= 1). be is borrowed and
 * must outlive the model. Returns 0 and *out (free with vision_free), or an error. */
int vision_load(const manifest *m, kern_be *be, int max_batch, vision_model **out);

/* Same from any tensor source (tests, benchmarks: weights built in memory). The tensors found
 * through src are borrowed and must outlive the model; src itself is not kept. */
int vision_load_src(const manifest *m, const vision_src *src, kern_be *be, int max_batch,
                    vision_model **out);

/* Frees scratch and unmaps the file (if vision_load opened one); NULL is a no-op. */
void vision_free(vision_model *vm);

/* pixels: [B, 3, S, S] preprocessed (image.h's img_preprocess), 1 <= B <= max_batch.
 * emb: caller's [B, Q, d_lm] floats. Returns 0, TV_EINVAL for a bad B, or a kernel error. */
int vision_encode(vision_model *vm, const float *pixels, int B, float *emb);

/* Q (queries), d_lm (last projection width), S (image side), max_batch. */
int vision_tokens(const vision_model *vm);
int vision_dim(const vision_model *vm);
int vision_image_size(const vision_model *vm);
int vision_max_batch(const vision_model *vm);

/* The internal buffers of the last vision_encode, for tests: image b's rows start at
 * b * (rows per image) * width. Pointers owned by vm, in the backend's memory (host memory for
 * the CPU; read device ones with kern_download); contents valid until the next encode. */
typedef struct {
    const float *vit_out;       /* [B, T, W]  after the last ViT block (T = 1 + G*G) */
    const float *ln_vision;     /* [B, T, W] */
    const float *qformer_out;   /* [B, Q, D] */
    const float *proj[3];       /* [B, Q, proj_dims[j+1]] for all but the last projection */
    int tokens, width, queries, qwidth;
} vision_trace;
void vision_get_trace(const vision_model *vm, vision_trace *t);

#endif
