/* vit — EVA ViT forward pass and ln_vision (see vit.h for the math). */
#include "vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* Propagates a kern_* failure with the op's context. */
#define KCALL(expr)                                                                      \
    do {                                                                                 \
        int kc_rc_ = (expr);                                                             \
        if (kc_rc_ < 0) return err_wrap(kc_rc_, "vit: %s", #expr);                       \
    } while (0)

/* ============================================================================================
 * configuration
 * ========================================================================================== */

int vit_config_from(const manifest_vision *mv, vit_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    if (mv->patch_size < 1 || mv->image_size < mv->patch_size ||
        mv->image_size % mv->patch_size != 0)
        return err_set(TV_EFORMAT, "vit: image_size %d is not a multiple of patch_size %d",
                       mv->image_size, mv->patch_size);
    if (mv->width < 1 || mv->heads < 1 || mv->width % mv->heads != 0)
        return err_set(TV_EFORMAT, "vit: width %d not divisible by heads %d", mv->width,
                       mv->heads);
    if (mv->width / mv->heads > KERN_MAX_HEAD_DIM)
        return err_set(TV_EUNSUPPORTED, "vit: head_dim %d > %d", mv->width / mv->heads,
                       KERN_MAX_HEAD_DIM);
    if (mv->layers < 0 || mv->mlp_hidden < 1)
        return err_set(TV_EFORMAT, "vit: bad layers %d / mlp_hidden %d", mv->layers,
                       mv->mlp_hidden);
    int g = mv->image_size / mv->patch_size;
    if (g > 4096)
        return err_set(TV_ELIMIT, "vit: grid %d x %d too large", g, g);
    *cfg = (vit_config){.image_size = mv->image_size, .patch = mv->patch_size,
                        .width = mv->width, .layers = mv->layers, .heads = mv->heads,
                        .mlp_hidden = mv->mlp_hidden, .grid = g, .tokens = 1 + g * g,
                        .ln_eps = mv->ln_eps, .ln_vision_eps = mv->ln_vision_eps};
    return TV_OK;
}

/* ============================================================================================
 * weights
 * ========================================================================================== */

static int get_vec(const vision_src *src, const char *prefix, const char *name, int64_t n,
                   const float **out) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return vision_get_vec(src, full, n, out);
}

static int get_mat(const vision_src *src, const char *prefix, const char *name, int64_t n,
                   int64_t k, kern_weight *w) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return vision_get_matrix(src, full, n, k, w);
}

int vit_block_load(const vit_config *cfg, const vision_src *src, const char *p, vit_block *b) {
    int64_t W = cfg->width, M = cfg->mlp_hidden;
    int rc;
    memset(b, 0, sizeof *b);
    if ((rc = get_vec(src, p, "norm1.weight", W, &b->norm1_w)) ||
        (rc = get_vec(src, p, "norm1.bias", W, &b->norm1_b)) ||
        (rc = get_mat(src, p, "attn.qkv.weight", 3 * W, W, &b->qkv)) ||
        (rc = get_vec(src, p, "attn.qkv.bias", 3 * W, &b->qkv_b)) ||
        (rc = get_mat(src, p, "attn.proj.weight", W, W, &b->proj)) ||
        (rc = get_vec(src, p, "attn.proj.bias", W, &b->proj_b)) ||
        (rc = get_vec(src, p, "norm2.weight", W, &b->norm2_w)) ||
        (rc = get_vec(src, p, "norm2.bias", W, &b->norm2_b)) ||
        (rc = get_mat(src, p, "mlp.fc1.weight", M, W, &b->fc1)) ||
        (rc = get_vec(src, p, "mlp.fc1.bias", M, &b->fc1_b)) ||
        (rc = get_mat(src, p, "mlp.fc2.weight", W, M, &b->fc2)) ||
        (rc = get_vec(src, p, "mlp.fc2.bias", W, &b->fc2_b)))
        return rc;
    return TV_OK;
}

int vit_weights_load(const vit_config *cfg, const vision_src *src, vit_weights *w) {
    int64_t W = cfg->width, P = cfg->patch;
    int rc;
    memset(w, 0, sizeof *w);
    if ((rc = vision_get_vec(src, "vit.cls_token", W, &w->cls)) ||
        (rc = vision_get_f32(src, "vit.pos_embed", (int64_t)cfg->tokens * W, &w->pos)) ||
        (rc = vision_get_matrix(src, "vit.patch_embed.weight", W, 3 * P * P, &w->patch)) ||
        (rc = vision_get_vec(src, "vit.patch_embed.bias", W, &w->patch_b)) ||
        (rc = vision_get_vec(src, "ln_vision.weight", W, &w->lnv_w)) ||
        (rc = vision_get_vec(src, "ln_vision.bias", W, &w->lnv_b)))
        return rc;
    w->blocks = tv_xcalloc(cfg->layers > 0 ? (size_t)cfg->layers : 1, sizeof *w->blocks);
    for (int i = 0; i < cfg->layers; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "vit.blocks.%d.", i);
        if ((rc = vit_block_load(cfg, src, prefix, &w->blocks[i])) < 0) {
            vit_weights_free(w);
            return rc;
        }
    }
    return TV_OK;
}

void vit_weights_free(vit_weights *w) {
    if (!w) return;
    free(w->blocks);
    w->blocks = NULL;
}

/* ============================================================================================
 * scratch
 * ========================================================================================== */

int vit_scratch_init_be(vit_scratch *s, kern_be *be, const vit_config *cfg, int max_batch,
                        int tokens) {
    memset(s, 0, sizeof *s);
    if (max_batch < 1) return err_set(TV_EINVAL, "vit: max_batch %d < 1", max_batch);
    int64_t T = tokens > 0 ? tokens : cfg->tokens;
    int64_t rows = (int64_t)max_batch * T;
    if (rows > INT32_MAX) return err_set(TV_ELIMIT, "vit: %lld rows too many", (long long)rows);
    int64_t W = cfg->width, P = cfg->patch, NP = (int64_t)max_batch * cfg->grid * cfg->grid;
    s->be = be;
    s->max_rows = (int)rows;
    s->x = kern_alloc_floats(be, rows, W);
    s->h = kern_alloc_floats(be, rows, W);
    s->qkv = kern_alloc_floats(be, rows, 3 * W);
    s->mlp = kern_alloc_floats(be, rows, cfg->mlp_hidden);
    s->patches = kern_alloc_floats(be, NP, 3 * P * P);
    s->tokens = (int)T;
    int ok = s->x && s->h && s->qkv && s->mlp && s->patches;
    if (be && !kern_is_host(be)) {      /* device: unfold on the host, upload once */
        s->patches_host = kern_alloc_floats(NULL, NP, 3 * P * P);
        ok = ok && s->patches_host;
    }
    if (!ok) {
        vit_scratch_free(s);
        return err_set(TV_ENOMEM, "vit: cannot allocate activations for %d images", max_batch);
    }
    return TV_OK;
}

int vit_scratch_init(vit_scratch *s, const vit_config *cfg, int max_batch, int tokens) {
    return vit_scratch_init_be(s, NULL, cfg, max_batch, tokens);
}

void vit_scratch_free(vit_scratch *s) {
    if (!s) return;
    kern_be *be = s->be;
    float **bufs[] = {&s->x, &s->h, &s->qkv, &s->mlp, &s->patches};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kern_release_floats(be, *bufs[i]);
    free(s->patches_host);
    memset(s, 0, sizeof *s);
}

/* ============================================================================================
 * patch embedding
 * ========================================================================================== */

/* Unfolds B images [3, S, S] into patch vectors [B*G*G, 3*P*P], each ordered (c, row, col) like
 * the conv weight [W, 3, P, P] flattened; patches in raster order (row-major over the grid). */
static void unfold_patches(const vit_config *cfg, const float *pixels, int B, float *out) {
    int S = cfg->image_size, P = cfg->patch, G = cfg->grid;
    for (int b = 0; b < B; b++) {
        const float *img = pixels + (size_t)b * 3 * S * S;
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                float *dst = out + (((size_t)b * G + gy) * G + gx) * 3 * P * P;
                for (int c = 0; c < 3; c++)
                    for (int r = 0; r < P; r++) {
                        const float *src = img + ((size_t)c * S + gy * P + r) * S + gx * P;
                        memcpy(dst, src, (size_t)P * sizeof(float));
                        dst += P;
                    }
            }
    }
}

/* x [B*T, W] = [cls ; patch_embed(pixels)] + pos, per image. */
static int vit_embed(kern_be *be, const vit_config *cfg, const vit_weights *w,
                     const float *pixels, int B, vit_scratch *s) {
    int64_t W = cfg->width, T = cfg->tokens, NP = (int64_t)cfg->grid * cfg->grid;
    if (s->patches_host) {   /* device backend: unfold on the host, one upload */
        unfold_patches(cfg, pixels, B, s->patches_host);
        KCALL(kern_upload(be, s->patches, s->patches_host,
                          (size_t)(B * NP * 3 * cfg->patch * cfg->patch) * sizeof(float)));
    } else {
        unfold_patches(cfg, pixels, B, s->patches);
    }
    /* h [B*G*G, W] = patches · Wpe^T + b */
    KCALL(kern_matmul(be, s->patches, B * NP, &w->patch, w->patch_b, s->h));
    for (int b = 0; b < B; b++) {
        float *xb = s->x + (size_t)b * T * W;
        KCALL(kern_copy(be, xb, w->cls, (size_t)W * sizeof(float)));
        KCALL(kern_copy(be, xb + W, s->h + (size_t)b * NP * W, (size_t)(NP * W) * sizeof(float)));
        KCALL(kern_add(be, xb, w->pos, xb, T * W));
    }
    return TV_OK;
}

/* ============================================================================================
 * transformer block
 * ========================================================================================== */

/* out [B*T, W] = multi-head self-attention of qkv [B*T, 3W] (rows [q|k|v]), per image, all
 * heads in one kern_attention call. */
static int vit_self_attention(kern_be *be, const vit_config *cfg, const float *qkv, float *out,
                              int B, int T, int lowp) {
    int64_t W = cfg->width, Dh = W / cfg->heads;
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * T * 3 * W;
        kern_attn a = {.q = q, .k = q + W, .v = q + 2 * W, .out = out + (size_t)b * T * W,
                       .ldq = 3 * W, .ldk = 3 * W, .ldv = 3 * W, .ldo = W, .tq = T, .tk = T,
                       .heads = cfg->heads, .kv_heads = cfg->heads, .dim = Dh,
                       .scale = 1.0f / sqrtf((float)Dh), .causal = 0, .lowp = lowp};
        KCALL(kern_attention(be, &a));
    }
    return TV_OK;
}

/* x += proj(attn(LN1 x)) */
static int vit_attn_residual(kern_be *be, const vit_config *cfg, const vit_block *b, float *x,
                             int64_t rows, int B, int T, vit_scratch *s) {
    int64_t W = cfg->width;
    KCALL(kern_layernorm(be, x, W, s->h, W, rows, 1, W, b->norm1_w, b->norm1_b, cfg->ln_eps));
    KCALL(kern_matmul(be, s->h, rows, &b->qkv, b->qkv_b, s->qkv));        /* [rows, 3W] */
    /* 16-bit or quantised weights: the attention may use 16-bit operands too */
    int lowp = b->qkv.type != KERN_W_F32;
    int rc = vit_self_attention(be, cfg, s->qkv, s->h, B, T, lowp);       /* [rows, W]  */
    if (rc < 0) return rc;
    float *o = s->qkv;                     /* q/k/v are consumed: [rows, W] fits in [rows, 3W] */
    KCALL(kern_matmul(be, s->h, rows, &b->proj, b->proj_b, o));
    KCALL(kern_add(be, x, o, x, rows * W));
    return TV_OK;
}

/* x += fc2(gelu_erf(fc1(LN2 x))) */
static int vit_mlp_residual(kern_be *be, const vit_config *cfg, const vit_block *b, float *x,
                            int64_t rows, vit_scratch *s) {
    int64_t W = cfg->width, M = cfg->mlp_hidden;
    KCALL(kern_layernorm(be, x, W, s->h, W, rows, 1, W, b->norm2_w, b->norm2_b, cfg->ln_eps));
    KCALL(kern_matmul(be, s->h, rows, &b->fc1, b->fc1_b, s->mlp));        /* [rows, M] */
    KCALL(kern_gelu(be, s->mlp, s->mlp, rows * M));
    KCALL(kern_matmul(be, s->mlp, rows, &b->fc2, b->fc2_b, s->h));        /* [rows, W] */
    KCALL(kern_add(be, x, s->h, x, rows * W));
    return TV_OK;
}

int vit_block_forward(kern_be *be, const vit_config *cfg, const vit_block *b, float *x, int B,
                      int T, vit_scratch *s) {
    int64_t rows = (int64_t)B * T;
    if (B < 1 || T < 1 || T > s->tokens || rows > s->max_rows)
        return err_set(TV_EINVAL, "vit: %d images x %d tokens exceed the scratch (%d rows)", B,
                       T, s->max_rows);
    int rc = vit_attn_residual(be, cfg, b, x, rows, B, T, s);
    if (rc < 0) return rc;
    return vit_mlp_residual(be, cfg, b, x, rows, s);
}

/* ============================================================================================
 * the whole ViT
 * ========================================================================================== */

int vit_forward(kern_be *be, const vit_config *cfg, const vit_weights *w, const float *pixels,
                int B, vit_scratch *s, float *out) {
    int64_t W = cfg->width, T = cfg->tokens, rows = (int64_t)B * T;
    if (B < 1 || rows > s->max_rows)
        return err_set(TV_EINVAL, "vit: batch %d exceeds the scratch (%d rows)", B, s->max_rows);
    int rc = vit_embed(be, cfg, w, pixels, B, s);
    for (int i = 0; rc == 0 && i < cfg->layers; i++)
        rc = vit_block_forward(be, cfg, &w->blocks[i], s->x, B, (int)T, s);
    if (rc < 0) return rc;
    /* ln_vision on every token, CLS included */
    KCALL(kern_layernorm(be, s->x, W, out, W, rows, 1, W, w->lnv_w, w->lnv_b,
                         cfg->ln_vision_eps));
    return TV_OK;
}
