/* vit — the EVA ViT (ViT-g/14 in TinyGPT-V) and ln_vision, any depth/width/heads.
 *
 *   x = [cls ; patches(pixels) · Wpe^T + bpe] + pos          [T, W], T = 1 + G*G, G = S / P
 *   per block:  x += proj(attn(LN1 x))                       qkv bias [q | 0 | v], scale Dh^-0.5
 *               x += fc2(gelu_erf(fc1(LN2 x)))
 *   out = ln_vision(x)                                       no final norm inside the ViT
 *
 * A batch of B images runs every matmul as one [B*T, .] product; attention is per image, all
 * heads in one kern_attention call.
 * Weights are borrowed views (vision.h); scratch is allocated once by vit_scratch_init and the
 * forward functions never allocate. */
#ifndef TV_VIT_H
#define TV_VIT_H

#include <stdint.h>

#include "ops.h"
#include "vision.h"

typedef struct {
    int image_size, patch, width, layers, heads, mlp_hidden;
    int grid, tokens;                   /* G = image_size / patch, T = 1 + G*G */
    float ln_eps, ln_vision_eps;
} vit_config;

typedef struct {
    const float *norm1_w, *norm1_b;     /* [W] */
    kern_weight qkv;                    /* [3W, W], rows [q | k | v], head-major inside */
    const float *qkv_b;                 /* [3W] = cat(q_bias, 0, v_bias) */
    kern_weight proj;                   /* [W, W] */
    const float *proj_b;                /* [W] */
    const float *norm2_w, *norm2_b;     /* [W] */
    kern_weight fc1;                    /* [M, W] */
    const float *fc1_b;                 /* [M] */
    kern_weight fc2;                    /* [W, M] */
    const float *fc2_b;                 /* [W] */
} vit_block;

typedef struct {
    const float *cls;                   /* [W] */
    const float *pos;                   /* [T, W] */
    kern_weight patch;                  /* [W, 3*P*P], patch vector ordered (c, row, col) */
    const float *patch_b;               /* [W] */
    vit_block *blocks;                  /* [layers], owned (vit_weights_free) */
    const float *lnv_w, *lnv_b;         /* ln_vision [W] */
} vit_weights;

/* Activations for up to max_batch images of `tokens` tokens each, in the memory of the backend
 * given to vit_scratch_init_be (host memory for vit_scratch_init). */
typedef struct {
    kern_be *be;                        /* whose memory the buffers are (NULL: host malloc) */
    float *patches_host;                /* device backends: host staging for unfolded pixels */
    int max_rows;                       /* max_batch * tokens */
    float *x;                           /* [rows, W]   residual stream (the ViT output) */
    float *h;                           /* [rows, W]   normed input / attention output */
    float *qkv;                         /* [rows, 3W] */
    float *mlp;                         /* [rows, M] */
    float *patches;                     /* [max_batch * G*G, 3*P*P] unfolded pixels */
    int tokens;                         /* T the scratch was sized for */
} vit_scratch;

/* Fills cfg from the manifest and checks it (divisibility, head_dim <= KERN_MAX_HEAD_DIM).
 * Returns 0 or TV_EFORMAT. */
int vit_config_from(const manifest_vision *mv, vit_config *cfg);

/* Looks up every "vit.*" and "ln_vision.*" tensor of docs/bundle.md. Returns 0, or an error
 * naming the missing/bad tensor (w left empty). Free with vit_weights_free. */
int vit_weights_load(const vit_config *cfg, const vision_src *src, vit_weights *w);
void vit_weights_free(vit_weights *w);

/* Block i's tensors ("<prefix>norm1.weight", ...; prefix e.g. "vit.blocks.3."). */
int vit_block_load(const vit_config *cfg, const vision_src *src, const char *prefix,
                   vit_block *b);

/* Allocates activations for max_batch images of cfg->tokens tokens (or, when tokens > 0, of
 * that many tokens: the block test runs 7). Returns 0 or TV_ENOMEM. vit_scratch_free frees
 * (a zeroed struct is fine). */
int vit_scratch_init(vit_scratch *s, const vit_config *cfg, int max_batch, int tokens);
/* The same in be's memory (kern_alloc), for running on any backend. */
int vit_scratch_init_be(vit_scratch *s, kern_be *be, const vit_config *cfg, int max_batch,
                        int tokens);
void vit_scratch_free(vit_scratch *s);

/* One block in place on x [B*T, W] (B images of T tokens each, contiguous; backend memory). */
int vit_block_forward(kern_be *be, const vit_config *cfg, const vit_block *b, float *x, int B,
                      int T, vit_scratch *s);

/* pixels [B, 3, S, S] (HOST memory) -> s->x [B*T, W] after all blocks, and out [B*T, W] =
 * ln_vision(s->x) (backend memory, like the weights). */
int vit_forward(kern_be *be, const vit_config *cfg, const vit_weights *w, const float *pixels,
                int B, vit_scratch *s, float *out);

#endif
