/* qformer — BLIP-2 Q-Former forward pass, query branch (see qformer.h for the math). */
#include "qformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define KCALL(expr)                                                                      \
    do {                                                                                 \
        int kc_rc_ = (expr);                                                             \
        if (kc_rc_ < 0) return err_wrap(kc_rc_, "qformer: %s", #expr);                   \
    } while (0)

/* ============================================================================================
 * configuration and weights
 * ========================================================================================== */

int qformer_config_from(const manifest *m, qformer_config *cfg) {
    const manifest_qformer *q = &m->qformer;
    memset(cfg, 0, sizeof *cfg);
    if (q->width < 1 || q->heads < 1 || q->width % q->heads != 0)
        return err_set(TV_EFORMAT, "qformer: width %d not divisible by heads %d", q->width,
                       q->heads);
    if (q->width / q->heads > KERN_MAX_HEAD_DIM)
        return err_set(TV_EUNSUPPORTED, "qformer: head_dim %d > %d", q->width / q->heads,
                       KERN_MAX_HEAD_DIM);
    if (q->layers < 0 || q->ffn < 1 || q->queries < 1 || q->cross_every < 1 ||
        m->vision.width < 1)
        return err_set(TV_EFORMAT, "qformer: bad layers/ffn/queries/cross_every");
    *cfg = (qformer_config){.layers = q->layers, .width = q->width, .heads = q->heads,
                            .ffn = q->ffn, .queries = q->queries,
                            .cross_every = q->cross_every, .vis_width = m->vision.width,
                            .ln_eps = q->ln_eps};
    return TV_OK;
}

static int get_vec(const vision_src *src, int layer, const char *name, int64_t n,
                   const float **out) {
    char full[256];
    snprintf(full, sizeof full, "qformer.layers.%d.%s", layer, name);
    return vision_get_vec(src, full, n, out);
}

static int get_mat(const vision_src *src, int layer, const char *name, int64_t n, int64_t k,
                   kern_weight *w) {
    char full[256];
    snprintf(full, sizeof full, "qformer.layers.%d.%s", layer, name);
    return vision_get_matrix(src, full, n, k, w);
}

static int load_cross(const qformer_config *cfg, const vision_src *src, int i,
                      qformer_layer *l) {
    int64_t D = cfg->width, W = cfg->vis_width;
    int rc;
    l->has_cross = 1;
    if ((rc = get_mat(src, i, "cross.q.weight", D, D, &l->cq)) ||
        (rc = get_vec(src, i, "cross.q.bias", D, &l->cq_b)) ||
        (rc = get_mat(src, i, "cross.kv.weight", 2 * D, W, &l->ckv)) ||
        (rc = get_vec(src, i, "cross.kv.bias", 2 * D, &l->ckv_b)) ||
        (rc = get_mat(src, i, "cross.out.weight", D, D, &l->cout)) ||
        (rc = get_vec(src, i, "cross.out.bias", D, &l->cout_b)) ||
        (rc = get_vec(src, i, "cross.ln.weight", D, &l->cln_w)) ||
        (rc = get_vec(src, i, "cross.ln.bias", D, &l->cln_b)))
        return rc;
    return TV_OK;
}

static int load_layer(const qformer_config *cfg, const vision_src *src, int i,
                      qformer_layer *l) {
    int64_t D = cfg->width, F = cfg->ffn;
    int rc;
    memset(l, 0, sizeof *l);
    if ((rc = get_mat(src, i, "self.qkv.weight", 3 * D, D, &l->qkv)) ||
        (rc = get_vec(src, i, "self.qkv.bias", 3 * D, &l->qkv_b)) ||
        (rc = get_mat(src, i, "self.out.weight", D, D, &l->out)) ||
        (rc = get_vec(src, i, "self.out.bias", D, &l->out_b)) ||
        (rc = get_vec(src, i, "self.ln.weight", D, &l->ln_w)) ||
        (rc = get_vec(src, i, "self.ln.bias", D, &l->ln_b)) ||
        (rc = get_mat(src, i, "ffn.fc1.weight", F, D, &l->fc1)) ||
        (rc = get_vec(src, i, "ffn.fc1.bias", F, &l->fc1_b)) ||
        (rc = get_mat(src, i, "ffn.fc2.weight", D, F, &l->fc2)) ||
        (rc = get_vec(src, i, "ffn.fc2.bias", D, &l->fc2_b)) ||
        (rc = get_vec(src, i, "ffn.ln.weight", D, &l->fln_w)) ||
        (rc = get_vec(src, i, "ffn.ln.bias", D, &l->fln_b)))
        return rc;
    if (i % cfg->cross_every == 0) return load_cross(cfg, src, i, l);
    return TV_OK;
}

int qformer_weights_load(const qformer_config *cfg, const vision_src *src, qformer_weights *w) {
    int64_t D = cfg->width;
    int rc;
    memset(w, 0, sizeof *w);
    if ((rc = vision_get_f32(src, "qformer.query_tokens", (int64_t)cfg->queries * D,
                             &w->query_tokens)) ||
        (rc = vision_get_vec(src, "qformer.ln.weight", D, &w->ln_w)) ||
        (rc = vision_get_vec(src, "qformer.ln.bias", D, &w->ln_b)))
        return rc;
    w->layers = tv_xcalloc(cfg->layers > 0 ? (size_t)cfg->layers : 1, sizeof *w->layers);
    for (int i = 0; i < cfg->layers; i++)
        if ((rc = load_layer(cfg, src, i, &w->layers[i])) < 0) {
            qformer_weights_free(w);
            return rc;
        }
    return TV_OK;
}

void qformer_weights_free(qformer_weights *w) {
    if (!w) return;
    free(w->layers);
    w->layers = NULL;
}

/* ============================================================================================
 * scratch
 * ========================================================================================== */

int qformer_scratch_init_be(qformer_scratch *s, kern_be *be, const qformer_config *cfg,
                            int max_batch, int img_tokens) {
    memset(s, 0, sizeof *s);
    if (max_batch < 1 || img_tokens < 1)
        return err_set(TV_EINVAL, "qformer: bad max_batch %d / tokens %d", max_batch,
                       img_tokens);
    int64_t rows = (int64_t)max_batch * cfg->queries, D = cfg->width;
    s->be = be;
    s->max_batch = max_batch;
    s->img_tokens = img_tokens;
    s->q = kern_alloc_floats(be, rows, D);
    s->qkv = kern_alloc_floats(be, rows, 3 * D);
    s->att = kern_alloc_floats(be, rows, D);
    s->t = kern_alloc_floats(be, rows, D);
    s->ffn = kern_alloc_floats(be, rows, cfg->ffn);
    s->ckv = kern_alloc_floats(be, (int64_t)max_batch * img_tokens, 2 * D);
    if (!s->q || !s->qkv || !s->att || !s->t || !s->ffn || !s->ckv) {
        qformer_scratch_free(s);
        return err_set(TV_ENOMEM, "qformer: cannot allocate activations for %d images",
                       max_batch);
    }
    return TV_OK;
}

int qformer_scratch_init(qformer_scratch *s, const qformer_config *cfg, int max_batch,
                         int img_tokens) {
    return qformer_scratch_init_be(s, NULL, cfg, max_batch, img_tokens);
}

void qformer_scratch_free(qformer_scratch *s) {
    if (!s) return;
    float *bufs[] = {s->q, s->qkv, s->att, s->t, s->ffn, s->ckv};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (s->be) kern_release(s->be, bufs[i]);
        else free(bufs[i]);
    }
    memset(s, 0, sizeof *s);
}

/* ============================================================================================
 * layers
 * ========================================================================================== */

/* out [B*tq, D] = per image softmax(q·k^T / sqrt(Dh))·v; q rows at stride ldq, k/v at ldkv. */
static int qf_attention(kern_be *be, const qformer_config *cfg, int B, const float *q,
                        int64_t ldq, int64_t tq, const float *k, const float *v, int64_t ldkv,
                        int64_t tk, int lowp, float *out) {
    int64_t D = cfg->width, H = cfg->heads, Dh = D / H;
    for (int b = 0; b < B; b++) {
        kern_attn a = {.q = q + (size_t)b * tq * ldq, .k = k + (size_t)b * tk * ldkv,
                       .v = v + (size_t)b * tk * ldkv, .out = out + (size_t)b * tq * D,
                       .ldq = ldq, .ldk = ldkv, .ldv = ldkv, .ldo = D,
                       .tq = tq, .tk = tk, .heads = H, .kv_heads = H, .dim = Dh,
                       .scale = 1.0f / sqrtf((float)Dh), .causal = 0, .lowp = lowp};
        KCALL(kern_attention(be, &a));
    }
    return TV_OK;
}

/* q = LN(q + t), the post-LN residual (t is clobbered). */
static int add_norm(kern_be *be, const qformer_config *cfg, float *q, float *t, int64_t rows,
                    const float *w, const float *b) {
    int64_t D = cfg->width;
    KCALL(kern_add(be, t, q, t, rows * D));
    KCALL(kern_layernorm(be, t, D, q, D, rows, 1, D, w, b, cfg->ln_eps));
    return TV_OK;
}

/* q = LN(q + out(selfattn(q))) */
static int qf_self(kern_be *be, const qformer_config *cfg, const qformer_layer *l, int B,
                   qformer_scratch *s) {
    int64_t D = cfg->width, Q = cfg->queries, rows = (int64_t)B * Q;
    KCALL(kern_matmul(be, s->q, rows, &l->qkv, l->qkv_b, s->qkv));          /* [rows, 3D] */
    int rc = qf_attention(be, cfg, B, s->qkv, 3 * D, Q, s->qkv + D, s->qkv + 2 * D, 3 * D, Q,
                          l->qkv.type != KERN_W_F32, s->att);
    if (rc < 0) return rc;
    KCALL(kern_matmul(be, s->att, rows, &l->out, l->out_b, s->t));          /* [rows, D] */
    return add_norm(be, cfg, s->q, s->t, rows, l->ln_w, l->ln_b);
}

/* q = LN(q + out'(crossattn(Q = q, K,V = Linear(img)))) */
static int qf_cross(kern_be *be, const qformer_config *cfg, const qformer_layer *l,
                    const float *img, int B, qformer_scratch *s) {
    int64_t D = cfg->width, Q = cfg->queries, rows = (int64_t)B * Q, T = s->img_tokens;
    KCALL(kern_matmul(be, s->q, rows, &l->cq, l->cq_b, s->qkv));            /* [rows, D] */
    KCALL(kern_matmul(be, img, B * T, &l->ckv, l->ckv_b, s->ckv));          /* [B*T, 2D] */
    int rc = qf_attention(be, cfg, B, s->qkv, D, Q, s->ckv, s->ckv + D, 2 * D, T,
                          l->ckv.type != KERN_W_F32, s->att);
    if (rc < 0) return rc;
    KCALL(kern_matmul(be, s->att, rows, &l->cout, l->cout_b, s->t));        /* [rows, D] */
    return add_norm(be, cfg, s->q, s->t, rows, l->cln_w, l->cln_b);
}

/* q = LN(q + fc2(gelu_erf(fc1(q)))) */
static int qf_ffn(kern_be *be, const qformer_config *cfg, const qformer_layer *l, int B,
                  qformer_scratch *s) {
    int64_t Q = cfg->queries, rows = (int64_t)B * Q, F = cfg->ffn;
    KCALL(kern_matmul(be, s->q, rows, &l->fc1, l->fc1_b, s->ffn));          /* [rows, F] */
    KCALL(kern_gelu(be, s->ffn, s->ffn, rows * F));
    KCALL(kern_matmul(be, s->ffn, rows, &l->fc2, l->fc2_b, s->t));          /* [rows, D] */
    return add_norm(be, cfg, s->q, s->t, rows, l->fln_w, l->fln_b);
}

/* ============================================================================================
 * the whole Q-Former
 * ========================================================================================== */

int qformer_forward(kern_be *be, const qformer_config *cfg, const qformer_weights *w,
                    const float *img, int B, qformer_scratch *s) {
    int64_t D = cfg->width, Q = cfg->queries;
    if (B < 1 || B > s->max_batch)
        return err_set(TV_EINVAL, "qformer: batch %d outside 1..%d", B, s->max_batch);
    /* q = LN(query_tokens), the same for every image */
    for (int b = 0; b < B; b++)
        KCALL(kern_layernorm(be, w->query_tokens, D, s->q + (size_t)b * Q * D, D, Q, 1, D,
                             w->ln_w, w->ln_b, cfg->ln_eps));
    for (int i = 0; i < cfg->layers; i++) {
        const qformer_layer *l = &w->layers[i];
        int rc = qf_self(be, cfg, l, B, s);
        if (rc == 0 && l->has_cross) rc = qf_cross(be, cfg, l, img, B, s);
        if (rc == 0) rc = qf_ffn(be, cfg, l, B, s);
        if (rc < 0) return err_wrap(rc, "qformer layer %d", i);
    }
    return TV_OK;
}
