/* qformer — the BLIP-2 Q-Former (BERT-shaped, post-LN) over the ln_vision output, query branch
 * only (as TinyGPT-V uses it):
 *
 *   q = LN(query_tokens)                                        [Q, D]
 *   per layer i:  a = LN(q + out(selfattn(q)))                  bidirectional over the queries
 *                 if i % cross_every == 0:
 *                     a = LN(a + out'(crossattn(Q = a, K,V = Linear(W -> D)(image))))
 *                 q = LN(a + fc2(gelu_erf(fc1(a))))
 *   out: q [Q, D], no extra norm.
 *
 * Scores are scaled by (D/heads)^-0.5. Batches of B images run the matmuls as [B*Q, .] and
 * [B*T, .] products; attention is per image. Scratch is allocated once (qformer_scratch_init);
 * qformer_forward never allocates. */
#ifndef TV_QFORMER_H
#define TV_QFORMER_H

#include <stdint.h>

#include "ops.h"
#include "vision.h"

typedef struct {
    int layers, width, heads, ffn, queries, cross_every;
    int vis_width;                      /* W of the image tokens (ViT width) */
    float ln_eps;
} qformer_config;

typedef struct {
    kern_weight qkv;                    /* [3D, D], rows [q | k | v] */
    const float *qkv_b;                 /* [3D] */
    kern_weight out;                    /* [D, D] */
    const float *out_b, *ln_w, *ln_b;   /* [D] */
    int has_cross;
    kern_weight cq;                     /* [D, D] */
    const float *cq_b;                  /* [D] */
    kern_weight ckv;                    /* [2D, W], rows [k | v] */
    const float *ckv_b;                 /* [2D] */
    kern_weight cout;                   /* [D, D] */
    const float *cout_b, *cln_w, *cln_b;/* [D] */
    kern_weight fc1;                    /* [F, D] */
    const float *fc1_b;                 /* [F] */
    kern_weight fc2;                    /* [D, F] */
    const float *fc2_b, *fln_w, *fln_b; /* [D] */
} qformer_layer;

typedef struct {
    const float *query_tokens;          /* [Q, D] */
    const float *ln_w, *ln_b;           /* [D] embeddings LayerNorm */
    qformer_layer *layers;              /* [layers], owned (qformer_weights_free) */
} qformer_weights;

typedef struct {
    kern_be *be;                        /* whose memory the buffers are (NULL: host malloc) */
    int max_batch, img_tokens;
    float *q;                           /* [B*Q, D]  the state (the output after the last layer) */
    float *qkv;                         /* [B*Q, 3D] */
    float *att;                         /* [B*Q, D] */
    float *t;                           /* [B*Q, D] */
    float *ffn;                         /* [B*Q, F] */
    float *ckv;                         /* [B*T, 2D] cross-attention keys/values of the image */
} qformer_scratch;

/* Fills cfg from the manifest (vis_width = the ViT width) and checks it. 0 or TV_EFORMAT. */
int qformer_config_from(const manifest *m, qformer_config *cfg);

/* Looks up every "qformer.*" tensor of docs/bundle.md. 0 or an error naming the tensor. */
int qformer_weights_load(const qformer_config *cfg, const vision_src *src, qformer_weights *w);
void qformer_weights_free(qformer_weights *w);

/* Scratch for max_batch images of img_tokens image tokens. 0 or TV_ENOMEM. */
int qformer_scratch_init(qformer_scratch *s, const qformer_config *cfg, int max_batch,
                         int img_tokens);
/* The same in be's memory (kern_alloc), for running on any backend. */
int qformer_scratch_init_be(qformer_scratch *s, kern_be *be, const qformer_config *cfg,
                            int max_batch, int img_tokens);
void qformer_scratch_free(qformer_scratch *s);

/* img [B*T, W] (ln_vision output) -> s->q [B*Q, D]. T must equal s->img_tokens. */
int qformer_forward(kern_be *be, const qformer_config *cfg, const qformer_weights *w,
                    const float *img, int B, qformer_scratch *s);

#endif
