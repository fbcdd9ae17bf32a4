/* convert_vision — vision.safetensors: EVA ViT (eva_vit_g.pth), ln_vision and the Q-Former
 * (blip2_pretrained_flant5xxl.pth), llama_proj/llama_proj2 (the stage-4 file). Names and shapes
 * as docs/bundle.md's table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert_map.h"
#include "err.h"
#include "log.h"
#include "pth.h"

static int64_t dim(const tensor_view *t, int i) { return t ? t->shape[i] : -1; }

/* Copies a small vector (F32 in every bundle). */
static void vec(conv_ctx *c, conv_in *in, const char *from, const char *to, int64_t n) {
    const tensor_view *t = conv_need(c, in, from, n);
    if (t) conv_emit_vec(c, c->wv, to, conv_view(t, n, 1));
}

static void mat(conv_ctx *c, conv_in *in, const char *from, const char *to, int64_t rows,
                int64_t cols) {
    const tensor_view *t = conv_need(c, in, from, rows, cols);
    if (t) conv_emit_matrix(c, c->wv, to, conv_view(t, rows, cols), 0);
}

/* The image size to run at: the option, else the stage-4 config's, else 448. */
static int image_size(conv_ctx *c) {
    if (c->o->image_size > 0) return c->o->image_size;
    int64_t v;
    if (!pth_get_int(c->s4.pth, "config.model.image_size", &v) && v > 0 && v <= 8192) return (int)v;
    err_clear();
    return 448;
}

static int map_vit_embed(conv_ctx *c) {
    conv_in *in = &c->eva;
    const tensor_view *cls = conv_need(c, in, "cls_token", 1, 1, -1);
    int64_t W = dim(cls, 2);
    const tensor_view *pe = conv_need(c, in, "patch_embed.proj.weight", W, 3, -1, -1);
    const tensor_view *pos = conv_need(c, in, "pos_embed", 1, -1, W);
    const tensor_view *peb = conv_need(c, in, "patch_embed.proj.bias", W);
    if (!cls || !pe || !pos) return 0;
    int64_t P = pe->shape[2], npos = pos->shape[1] - 1;
    if (W > CONV_MAX_DIM || P > CONV_MAX_DIM || npos > CONV_MAX_DIM * 16) {
        conv_bad(c, "cls_token/patch_embed/pos_embed: dims out of range");
        return 0;
    }
    int64_t g = (int64_t)llround(sqrt((double)npos));
    if (P != pe->shape[3] || P < 1) conv_bad(c, "patch_embed.proj.weight: patches are not square");
    if (g < 1 || g * g != npos)
        conv_bad(c, "pos_embed: %lld positions after CLS is not a square grid", (long long)npos);
    int size = image_size(c);
    if (P < 1 || size % P != 0)
        return err_set(TV_EINVAL, "image size %d is not a multiple of the patch size %lld", size,
                       (long long)P);
    int heads = c->o->vit_heads > 0 ? c->o->vit_heads : (int)(W / 88);
    if (heads < 1 || W % heads != 0)
        return err_set(TV_EINVAL, "ViT width %lld cannot be split into %d heads%s", (long long)W,
                       heads, c->o->vit_heads > 0 ? "" : " of 88 (EVA's head size): set --vit-heads");
    c->vit.image_size = size, c->vit.patch = (int)P, c->vit.grid = size / (int)P;
    c->vit.width = (int)W, c->vit.heads = heads;

    conv_emit_vec(c, c->wv, "vit.cls_token", conv_view(cls, W, 1));
    int G = c->vit.grid;
    conv_src s = conv_view(pos, 1 + (int64_t)G * G, W);
    s.kind = CS_POS, s.grid_in = (int)g, s.grid_out = G;
    conv_emit_f32(c, c->wv, "vit.pos_embed", s);
    /* the conv kernel [W, 3, P, P] is a matrix over the (channel, row, col) patch vector */
    conv_emit_matrix(c, c->wv, "vit.patch_embed.weight", conv_view(pe, W, 3 * P * P), 0);
    if (peb) conv_emit_vec(c, c->wv, "vit.patch_embed.bias", conv_view(peb, W, 1));
    return 0;
}

static void map_vit_block(conv_ctx *c, int i) {
    conv_in *in = &c->eva;
    int64_t W = c->vit.width, M = c->vit.mlp;
    static const char *const norms[] = {"norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"};
    for (int k = 0; k < 4; k++)
        vec(c, in, conv_name(c, "blocks.%d.%s", i, norms[k]),
            conv_name(c, "vit.blocks.%d.%s", i, norms[k]), W);
    mat(c, in, conv_name(c, "blocks.%d.attn.qkv.weight", i),
        conv_name(c, "vit.blocks.%d.attn.qkv.weight", i), 3 * W, W);
    /* EVA has no k bias: the fused bias is cat(q_bias, zeros, v_bias) */
    const tensor_view *qb = conv_need(c, in, conv_name(c, "blocks.%d.attn.q_bias", i), W);
    const tensor_view *vb = conv_need(c, in, conv_name(c, "blocks.%d.attn.v_bias", i), W);
    conv_src s = {.kind = CS_VIEW, .rows = 3 * W, .cols = 1, .nparts = 3, .part_rows = W};
    s.part[0] = qb, s.part[2] = vb;
    if (qb && vb) conv_emit_vec(c, c->wv, conv_name(c, "vit.blocks.%d.attn.qkv.bias", i), s);
    mat(c, in, conv_name(c, "blocks.%d.attn.proj.weight", i),
        conv_name(c, "vit.blocks.%d.attn.proj.weight", i), W, W);
    vec(c, in, conv_name(c, "blocks.%d.attn.proj.bias", i),
        conv_name(c, "vit.blocks.%d.attn.proj.bias", i), W);
    mat(c, in, conv_name(c, "blocks.%d.mlp.fc1.weight", i),
        conv_name(c, "vit.blocks.%d.mlp.fc1.weight", i), M, W);
    vec(c, in, conv_name(c, "blocks.%d.mlp.fc1.bias", i),
        conv_name(c, "vit.blocks.%d.mlp.fc1.bias", i), M);
    mat(c, in, conv_name(c, "blocks.%d.mlp.fc2.weight", i),
        conv_name(c, "vit.blocks.%d.mlp.fc2.weight", i), W, M);
    vec(c, in, conv_name(c, "blocks.%d.mlp.fc2.bias", i),
        conv_name(c, "vit.blocks.%d.mlp.fc2.bias", i), W);
}

static int map_vit(conv_ctx *c) {
    int rc = map_vit_embed(c);
    if (rc) return rc;
    c->vit.layers = conv_count_layers(&c->eva, "blocks.");
    if (c->vit.layers == 0) {
        conv_missing(c, &c->eva, "blocks.0.* (no ViT blocks)");
        return 0;
    }
    const tensor_view *fc1 = conv_need(c, &c->eva, "blocks.0.mlp.fc1.weight", -1, c->vit.width);
    if (!fc1) return 0;
    if (fc1->shape[0] > CONV_MAX_DIM) {
        conv_bad(c, "blocks.0.mlp.fc1.weight: %lld rows is out of range", (long long)fc1->shape[0]);
        return 0;
    }
    c->vit.mlp = (int)fc1->shape[0];
    for (int i = 0; i < c->vit.layers; i++) map_vit_block(c, i);
    return 0;
}

/* ---- ln_vision, Q-Former ------------------------------------------------------------------- */

#define QL "Qformer.bert.encoder.layer.%d."

/* BERT's attention.self.{query,key,value} (or a subset) stacked along rows into one matrix
 * and one bias. */
static void stacked(conv_ctx *c, int i, const char *from, const char *const *names, int n,
                    int64_t D, int64_t in_w, const char *to) {
    const tensor_view *w[3] = {0}, *b[3] = {0};
    int ok = 1;
    for (int k = 0; k < n; k++) {
        w[k] = conv_need(c, &c->blip, conv_name(c, QL "%s.%s.weight", i, from, names[k]), D, in_w);
        b[k] = conv_need(c, &c->blip, conv_name(c, QL "%s.%s.bias", i, from, names[k]), D);
        ok = ok && w[k] && b[k];
    }
    if (!ok) return;
    conv_src sw = {.kind = CS_VIEW, .rows = n * D, .cols = in_w, .nparts = n, .part_rows = D};
    conv_src sb = {.kind = CS_VIEW, .rows = n * D, .cols = 1, .nparts = n, .part_rows = D};
    for (int k = 0; k < n; k++) sw.part[k] = w[k], sb.part[k] = b[k];
    conv_emit_matrix(c, c->wv, conv_name(c, "%s.weight", to), sw, 0);
    conv_emit_vec(c, c->wv, conv_name(c, "%s.bias", to), sb);
}

/* A Linear (+ LayerNorm) pair: from.{weight,bias} -> to.{weight,bias}. */
static void linear(conv_ctx *c, conv_in *in, const char *from, const char *to, int64_t out,
                   int64_t inw) {
    mat(c, in, conv_name(c, "%s.weight", from), conv_name(c, "%s.weight", to), out, inw);
    vec(c, in, conv_name(c, "%s.bias", from), conv_name(c, "%s.bias", to), out);
}

static void norm(conv_ctx *c, conv_in *in, const char *from, const char *to, int64_t n) {
    vec(c, in, conv_name(c, "%s.weight", from), conv_name(c, "%s.weight", to), n);
    vec(c, in, conv_name(c, "%s.bias", from), conv_name(c, "%s.bias", to), n);
}

static void map_qformer_layer(conv_ctx *c, int i, int cross) {
    static const char *const qkv[] = {"query", "key", "value"};
    int64_t D = c->qf.width, F = c->qf.ffn, W = c->vit.width;
    conv_in *in = &c->blip;
    char to[64], from[96];
    snprintf(to, sizeof to, "qformer.layers.%d.", i);
    snprintf(from, sizeof from, QL, i);
    stacked(c, i, "attention.self", qkv, 3, D, D, conv_name(c, "%sself.qkv", to));
    linear(c, in, conv_name(c, "%sattention.output.dense", from), conv_name(c, "%sself.out", to), D, D);
    norm(c, in, conv_name(c, "%sattention.output.LayerNorm", from), conv_name(c, "%sself.ln", to), D);
    if (cross) {
        linear(c, in, conv_name(c, "%scrossattention.self.query", from),
               conv_name(c, "%scross.q", to), D, D);
        stacked(c, i, "crossattention.self", qkv + 1, 2, D, W, conv_name(c, "%scross.kv", to));
        linear(c, in, conv_name(c, "%scrossattention.output.dense", from),
               conv_name(c, "%scross.out", to), D, D);
        norm(c, in, conv_name(c, "%scrossattention.output.LayerNorm", from),
             conv_name(c, "%scross.ln", to), D);
    }
    linear(c, in, conv_name(c, "%sintermediate_query.dense", from), conv_name(c, "%sffn.fc1", to), F, D);
    linear(c, in, conv_name(c, "%soutput_query.dense", from), conv_name(c, "%sffn.fc2", to), D, F);
    norm(c, in, conv_name(c, "%soutput_query.LayerNorm", from), conv_name(c, "%sffn.ln", to), D);
}

/* Cross-attention sits on layers i % cross_every == 0 (BLIP-2: every 2nd). Found from which
 * layers have it; a single cross layer (layer 0) means the BLIP-2 default 2. */
static int cross_every(conv_ctx *c, char *has, int L) {
    int every = 0;
    for (int i = 0; i < L; i++) {
        const char *n = conv_name(c, "%s" QL "crossattention.self.query.weight", c->blip.prefix, i);
        has[i] = c->blip.pth && pth_find(c->blip.pth, n) != NULL;
        if (has[i] && i > 0 && !every) every = i;
    }
    if (!every) every = 2;
    for (int i = 0; i < L; i++)
        if (has[i] != (i % every == 0) && has[0])
            conv_bad(c, "Q-Former layer %d %s cross-attention, but the layers with it are not "
                        "every %d-th", i, has[i] ? "has" : "lacks", every);
    return every;
}

static void map_qformer(conv_ctx *c) {
    conv_in *in = &c->blip;
    int64_t W = c->vit.width > 0 ? c->vit.width : -1;
    norm(c, in, "ln_vision", "ln_vision", W);
    const tensor_view *qt = conv_need(c, in, "query_tokens", 1, -1, -1);
    int64_t Q = dim(qt, 1), D = dim(qt, 2);
    if (qt) conv_emit_f32(c, c->wv, "qformer.query_tokens", conv_view(qt, Q, D));
    norm(c, in, "Qformer.bert.embeddings.LayerNorm", "qformer.ln", D);
    int L = conv_count_layers(in, "Qformer.bert.encoder.layer.");
    if (L == 0) {
        conv_missing(c, in, "Qformer.bert.encoder.layer.0.* (no Q-Former layers)");
        return;
    }
    const tensor_view *fc1 =
        conv_need(c, in, "Qformer.bert.encoder.layer.0.intermediate_query.dense.weight", -1, D);
    if (!qt || !fc1) return;
    if (Q > CONV_MAX_DIM || D > CONV_MAX_DIM || fc1->shape[0] > CONV_MAX_DIM) {
        conv_bad(c, "query_tokens/intermediate_query: dims out of range");
        return;
    }
    c->qf.layers = L, c->qf.width = (int)D, c->qf.queries = (int)Q, c->qf.ffn = (int)fc1->shape[0];
    c->qf.heads = c->o->qformer_heads > 0 ? c->o->qformer_heads : (int)(D / 64);
    if (c->qf.heads < 1 || D % c->qf.heads != 0) {
        conv_bad(c, "Q-Former width %lld cannot be split into %d heads%s", (long long)D,
                 c->qf.heads, c->o->qformer_heads > 0 ? "" : " of 64 (BERT's head size): set --qformer-heads");
        return;
    }
    char *has = tv_xcalloc((size_t)L, 1);
    c->qf.cross_every = cross_every(c, has, L);
    for (int i = 0; i < L; i++) map_qformer_layer(c, i, i % c->qf.cross_every == 0);
    free(has);
}

static void map_proj(conv_ctx *c) {
    conv_in *in = &c->s4;
    int64_t D = c->qf.width > 0 ? c->qf.width : -1, d = c->lm.width;
    const tensor_view *p1 = conv_need(c, in, "llama_proj.weight", -1, D);
    int64_t H = dim(p1, 0);
    if (H > CONV_MAX_DIM) {
        conv_bad(c, "llama_proj.weight: %lld rows is out of range", (long long)H);
        return;
    }
    c->proj_dims[0] = (int)D, c->proj_dims[1] = (int)H, c->proj_dims[2] = (int)d;
    if (p1) conv_emit_matrix(c, c->wv, "proj.0.weight", conv_view(p1, H, D), 0);
    vec(c, in, "llama_proj.bias", "proj.0.bias", H);
    linear(c, in, "llama_proj2", "proj.1", d, H);
}

int conv_map_vision(conv_ctx *c) {
    int rc = map_vit(c);
    if (rc) return rc;
    map_qformer(c);
    map_proj(c);
    return 0;
}
