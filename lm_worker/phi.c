/* phi — Phi-2 forward pass over the kernel op table; see phi.h for the math and the contract. */
#include "phi.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "manifest.h"
#include "safetensors.h"

/* Prefill runs in chunks of at most this many tokens, so the activation scratch is bounded
 * whatever the context length; each chunk attends to the cache written by the ones before. */
#define PHI_CHUNK 128

struct phi_model {
    phi_config cfg;
    phi_weights w;
    phi_layer_weights *layers;  /* [layers], owned copy */
    kern_be *be;
    int dev;                    /* 1: a device backend (weights uploaded, outputs downloaded) */
    int uploaded;               /* m->w / m->layers hold device copies (release them) */
    const void *embed_host;     /* the host embedding table (phi_embed_tokens) */
    st_file *file;              /* phi_load's mapping, or NULL */
    int max_seqs, max_context;
    int *len;                   /* [max_seqs] cached positions per slot */
    float *kcache, *vcache;     /* (layers, max_seqs, max_context, d) each */
    /* scratch for up to rows_max rows */
    int rows_max;
    float *x;                   /* (R, d) residual stream */
    float *h;                   /* (R, d) LN(x) */
    float *qkv;                 /* (R, 3d) */
    float *att;                 /* (R, d) attention output */
    float *o;                   /* (R, d) dense output */
    float *mlp;                 /* (R, f) */
    float *logits;              /* device backends: (R, V) before download; NULL on the CPU */
    int32_t *pos;               /* (R) host */
    int *row_slot;              /* (R) host */
    kern_kv *kv;                /* (max_seqs) host descriptors of backend memory */
    void **rowdst;              /* (2R) host: cache row destinations of a decode batch */
};

/* ===================================================================== validation ====== */

static int check_matrix(const kern_weight *w, int64_t n, int64_t k, const char *what) {
    if (!w->data)
        return err_set(TV_EINVAL, "phi: weight %s missing", what);
    if (w->n != n || w->k != k)
        return err_set(TV_EFORMAT, "phi: weight %s is [%lld, %lld], expected [%lld, %lld]", what,
                       (long long)w->n, (long long)w->k, (long long)n, (long long)k);
    if ((w->type == KERN_W_Q8 || w->type == KERN_W_Q4) && !w->scale)
        return err_set(TV_EINVAL, "phi: weight %s is quantised but has no scales", what);
    return TV_OK;
}

static int check_config(const phi_config *c) {
    if (c->layers < 1 || c->width < 1 || c->heads < 1 || c->head_dim < 1 || c->ffn < 1 ||
        c->vocab < 1)
        return err_set(TV_EINVAL, "phi: config dimensions must be >= 1");
    if ((int64_t)c->heads * c->head_dim != c->width)
        return err_set(TV_EINVAL, "phi: heads %d x head_dim %d != width %d", c->heads, c->head_dim,
                       c->width);
    if (c->head_dim > KERN_MAX_HEAD_DIM)
        return err_set(TV_EUNSUPPORTED, "phi: head_dim %d > %d", c->head_dim, KERN_MAX_HEAD_DIM);
    if (c->rotary_dims < 0 || c->rotary_dims > c->head_dim || c->rotary_dims % 2)
        return err_set(TV_EINVAL, "phi: rotary_dims %d must be even and <= head_dim %d",
                       c->rotary_dims, c->head_dim);
    return TV_OK;
}

static int check_layer(const phi_config *c, const phi_layer_weights *L, int i) {
    char what[64];
    int64_t d = c->width, f = c->ffn;
    int rc;
    snprintf(what, sizeof what, "layers.%d.qkv", i);
    if ((rc = check_matrix(&L->qkv, 3 * d, d, what)))
        return rc;
    snprintf(what, sizeof what, "layers.%d.dense", i);
    if ((rc = check_matrix(&L->dense, d, d, what)))
        return rc;
    snprintf(what, sizeof what, "layers.%d.fc1", i);
    if ((rc = check_matrix(&L->fc1, f, d, what)))
        return rc;
    snprintf(what, sizeof what, "layers.%d.fc2", i);
    if ((rc = check_matrix(&L->fc2, d, f, what)))
        return rc;
    if (!L->ln_w || !L->ln_b || !L->qkv_b || !L->dense_b || !L->fc1_b || !L->fc2_b)
        return err_set(TV_EINVAL, "phi: layer %d: a LayerNorm or bias vector is missing", i);
    if (c->qk_layernorm && (!L->q_ln_w || !L->q_ln_b || !L->k_ln_w || !L->k_ln_b))
        return err_set(TV_EINVAL, "phi: layer %d: qk_layernorm set but q_ln/k_ln missing", i);
    if (c->post_attn_rmsnorm && !L->post_ln_w)
        return err_set(TV_EINVAL, "phi: layer %d: post_attn_rmsnorm set but post_ln missing", i);
    return TV_OK;
}

static int check_weights(const phi_config *c, const phi_weights *w) {
    int rc;
    if (!w->embed || !w->layers || !w->final_ln_w || !w->final_ln_b)
        return err_set(TV_EINVAL, "phi: embed_tokens, layers or final_ln missing");
    if (w->embed_dtype != DT_F32 && w->embed_dtype != DT_F16 && w->embed_dtype != DT_BF16)
        return err_set(TV_EUNSUPPORTED, "phi: embed_tokens dtype %s (want F32, F16 or BF16)",
                       dtype_name(w->embed_dtype));
    if ((rc = check_matrix(&w->lm_head, c->vocab, c->width, "lm_head")))
        return rc;
    if (c->lm_head_bias && !w->lm_head_b)
        return err_set(TV_EINVAL, "phi: lm_head_bias set but lm_head.bias missing");
    for (int i = 0; i < c->layers; i++)
        if ((rc = check_layer(c, &w->layers[i], i)))
            return rc;
    return TV_OK;
}

/* ===================================================================== construction ==== */

/* a*b*c zeroed elements of size s in the backend's memory, NULL (not abort) on overflow or
 * refusal: the sizes come from configuration and may be unreasonable. */
static void *alloc3(kern_be *be, size_t a, size_t b, size_t c, size_t s) {
    if (a && b > SIZE_MAX / a)
        return NULL;
    size_t ab = a * b;
    if (ab && c > SIZE_MAX / ab)
        return NULL;
    size_t n = ab * c;
    if (n && s > SIZE_MAX / n)
        return NULL;
    void *p = NULL;
    return kern_alloc(be, n * s, &p) == 0 ? p : NULL;
}

/* ---- device copies of the weights (device backends only) ---- */

static int up_vec(kern_be *be, const float **v, int64_t n) {
    if (!*v)
        return TV_OK;
    const void *p = NULL;
    int rc = kern_const_new(be, *v, (size_t)n * sizeof(float), &p);
    *v = rc ? NULL : p;
    return rc;
}

static int up_layer(kern_be *be, const phi_config *c, phi_layer_weights *L) {
    int64_t d = c->width, f = c->ffn, dh = c->head_dim;
    kern_weight *mats[] = {&L->qkv, &L->dense, &L->fc1, &L->fc2}, host[4];
    int rc = 0;
    for (int i = 0; i < 4; i++) {   /* cleared first: a failure leaves only device copies */
        host[i] = *mats[i];
        memset(mats[i], 0, sizeof *mats[i]);
    }
    for (int i = 0; i < 4 && !rc; i++)
        rc = kern_weight_upload(be, &host[i], mats[i]);
    struct { const float **p; int64_t n; } vecs[] = {
        {&L->ln_w, d}, {&L->ln_b, d}, {&L->qkv_b, 3 * d}, {&L->q_ln_w, dh}, {&L->q_ln_b, dh},
        {&L->k_ln_w, dh}, {&L->k_ln_b, dh}, {&L->dense_b, d}, {&L->post_ln_w, d},
        {&L->fc1_b, f}, {&L->fc2_b, d}};
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) {
        if (rc) *vecs[i].p = NULL;   /* not uploaded: nothing to release */
        else rc = up_vec(be, vecs[i].p, vecs[i].n);
    }
    return rc;
}

static void release_layer(kern_be *be, phi_layer_weights *L) {
    kern_weight_release(be, &L->qkv);
    kern_weight_release(be, &L->dense);
    kern_weight_release(be, &L->fc1);
    kern_weight_release(be, &L->fc2);
    const float *vecs[] = {L->ln_w, L->ln_b, L->qkv_b, L->q_ln_w, L->q_ln_b, L->k_ln_w,
                           L->k_ln_b, L->dense_b, L->post_ln_w, L->fc1_b, L->fc2_b};
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) kern_const_free(be, vecs[i]);
    memset(L, 0, sizeof *L);
}

/* Replaces m->w's and m->layers' host views by device copies, uploaded once. */
static int upload_weights(phi_model *m) {
    const phi_config *c = &m->cfg;
    phi_weights *w = &m->w;
    int rc = 0;
    m->uploaded = 1;
    for (int i = 0; i < c->layers; i++) {
        if (rc) memset(&m->layers[i], 0, sizeof m->layers[i]);
        else rc = up_layer(m->be, c, &m->layers[i]);
    }
    size_t es = dtype_size(w->embed_dtype) * (size_t)c->vocab * (size_t)c->width;
    const void *e = NULL;
    kern_weight lm = w->lm_head;
    memset(&w->lm_head, 0, sizeof w->lm_head);
    if (!rc) rc = kern_const_new(m->be, w->embed, es, &e);
    w->embed = e;
    if (!rc) rc = kern_weight_upload(m->be, &lm, &w->lm_head);
    const float **vecs[] = {&w->final_ln_w, &w->final_ln_b, &w->lm_head_b};
    int64_t lens[] = {c->width, c->width, c->vocab};
    for (int i = 0; i < 3; i++) {
        if (rc) *vecs[i] = NULL;
        else rc = up_vec(m->be, vecs[i], lens[i]);
    }
    return rc;
}

static void release_weights(phi_model *m) {
    for (int i = 0; i < m->cfg.layers; i++) release_layer(m->be, &m->layers[i]);
    kern_const_free(m->be, m->w.embed);
    kern_weight_release(m->be, &m->w.lm_head);
    kern_const_free(m->be, m->w.final_ln_w);
    kern_const_free(m->be, m->w.final_ln_b);
    kern_const_free(m->be, m->w.lm_head_b);
}

int phi_new(const phi_config *cfg, const phi_weights *w, kern_be *be, int max_seqs,
            int max_context, phi_model **out) {
    *out = NULL;
    int rc;
    if (!cfg || !w || !be)
        return err_set(TV_EINVAL, "phi_new: NULL argument");
    if ((rc = check_config(cfg)) || (rc = check_weights(cfg, w)))
        return rc;
    if (max_seqs < 1 || max_context < 1)
        return err_set(TV_EINVAL, "phi_new: max_seqs %d and max_context %d must be >= 1",
                       max_seqs, max_context);

    phi_model *m = tv_xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->w = *w;
    m->layers = tv_xcalloc((size_t)cfg->layers, sizeof *m->layers);
    memcpy(m->layers, w->layers, (size_t)cfg->layers * sizeof *m->layers);
    m->w.layers = m->layers;
    m->be = be;
    m->dev = !kern_is_host(be);
    m->embed_host = w->embed;
    m->max_seqs = max_seqs;
    m->max_context = max_context;
    m->rows_max = max_seqs > PHI_CHUNK ? max_seqs : PHI_CHUNK;

    size_t d = (size_t)cfg->width, R = (size_t)m->rows_max;
    m->len = tv_xcalloc((size_t)max_seqs, sizeof *m->len);
    m->kcache = alloc3(be, (size_t)cfg->layers * (size_t)max_seqs, (size_t)max_context, d,
                       sizeof(float));
    m->vcache = alloc3(be, (size_t)cfg->layers * (size_t)max_seqs, (size_t)max_context, d,
                       sizeof(float));
    m->x = alloc3(be, R, d, 1, sizeof(float));
    m->h = alloc3(be, R, d, 1, sizeof(float));
    m->qkv = alloc3(be, R, d, 3, sizeof(float));
    m->att = alloc3(be, R, d, 1, sizeof(float));
    m->o = alloc3(be, R, d, 1, sizeof(float));
    m->mlp = alloc3(be, R, (size_t)cfg->ffn, 1, sizeof(float));
    m->pos = tv_xcalloc(R, sizeof *m->pos);
    m->row_slot = tv_xcalloc(R, sizeof *m->row_slot);
    m->kv = tv_xcalloc((size_t)max_seqs, sizeof *m->kv);
    m->rowdst = tv_xcalloc(2 * R, sizeof *m->rowdst);
    int ok = m->kcache && m->vcache && m->x && m->h && m->qkv && m->att && m->o && m->mlp;
    if (ok && m->dev) {
        m->logits = alloc3(be, R, (size_t)cfg->vocab, 1, sizeof(float));
        ok = m->logits != NULL;
        if (ok && (rc = upload_weights(m))) {
            phi_free(m);
            return err_wrap(rc, "phi: uploading the weights to %s", kern_name(be));
        }
    }
    if (!ok) {
        double gb = 2.0 * cfg->layers * (double)max_seqs * max_context * (double)d * 4 / 1e9;
        phi_free(m);
        return err_set(TV_ENOMEM, "phi: cannot allocate the KV cache (%.2f GB for %d seqs x %d "
                       "positions) and scratch", gb, max_seqs, max_context);
    }
    *out = m;
    return TV_OK;
}

void phi_free(phi_model *m) {
    if (!m)
        return;
    if (m->uploaded)
        release_weights(m);
    free(m->layers);
    free(m->len);
    void *bufs[] = {m->kcache, m->vcache, m->x, m->h, m->qkv, m->att, m->o, m->mlp, m->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        kern_release(m->be, bufs[i]);
    free(m->pos);
    free(m->row_slot);
    free(m->kv);
    free(m->rowdst);
    st_free(m->file);
    free(m);
}

const phi_config *phi_get_config(const phi_model *m) { return &m->cfg; }
int phi_max_seqs(const phi_model *m) { return m->max_seqs; }
int phi_max_context(const phi_model *m) { return m->max_context; }

int phi_seq_len(const phi_model *m, int slot) {
    return (slot < 0 || slot >= m->max_seqs) ? -1 : m->len[slot];
}

int phi_reset(phi_model *m, int slot) {
    if (slot < 0 || slot >= m->max_seqs)
        return err_set(TV_EINVAL, "phi: slot %d outside 0..%d", slot, m->max_seqs - 1);
    m->len[slot] = 0;
    return TV_OK;
}

int phi_embed_tokens(phi_model *m, const int32_t *ids, int64_t n, float *out) {
    if (!m->dev)
        return kern_embed(m->be, m->w.embed, m->w.embed_dtype, m->cfg.vocab, m->cfg.width, ids,
                          n, out);
    /* out is the caller's host memory: read the host table (the mapping) directly */
    if (!ids || !out || n < 0)
        return err_set(TV_EINVAL, "phi_embed_tokens: NULL argument or negative count");
    size_t d = (size_t)m->cfg.width, es = dtype_size(m->w.embed_dtype);
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab)
            return err_set(TV_EINVAL, "embed: id %d at position %lld is outside [0, %d)",
                           (int)ids[i], (long long)i, m->cfg.vocab);
        dtype_to_f32(m->w.embed_dtype, (const char *)m->embed_host + (size_t)ids[i] * d * es,
                     out + (size_t)i * d, d);
    }
    return TV_OK;
}

/* ===================================================================== forward ========= */

/* Start of position 0 of slot's cache in layer l. */
static float *cache_at(const phi_model *m, float *base, int l, int slot) {
    size_t d = (size_t)m->cfg.width;
    return base + (((size_t)l * (size_t)m->max_seqs + (size_t)slot) * (size_t)m->max_context) * d;
}

/* q/k LayerNorm per head, then RoPE, on the q and k parts of qkv (rows at stride 3d). */
static int qk_norm_rope(phi_model *m, const phi_layer_weights *L, int rows) {
    const phi_config *c = &m->cfg;
    int64_t d = c->width, ld = 3 * d;
    float *q = m->qkv, *k = m->qkv + d;
    int rc;
    if (c->qk_layernorm) {
        if ((rc = kern_layernorm(m->be, q, ld, q, ld, rows, c->heads, c->head_dim, L->q_ln_w,
                                 L->q_ln_b, c->ln_eps)) ||
            (rc = kern_layernorm(m->be, k, ld, k, ld, rows, c->heads, c->head_dim, L->k_ln_w,
                                 L->k_ln_b, c->ln_eps)))
            return rc;
    }
    if (c->rotary_dims > 0) {
        if ((rc = kern_rope(m->be, q, ld, rows, c->heads, c->head_dim, c->rotary_dims, m->pos,
                            c->rope_theta)) ||
            (rc = kern_rope(m->be, k, ld, rows, c->heads, c->head_dim, c->rotary_dims, m->pos,
                            c->rope_theta)))
            return rc;
    }
    return TV_OK;
}

/* Copies each row's k and v into its slot's cache at its position: for a prefill (rows are
 * consecutive positions of one slot) two strided copies, for a decode batch two row scatters. */
static int cache_store(phi_model *m, int l, int rows, int prefill_slot) {
    size_t d = (size_t)m->cfg.width, rb = d * sizeof(float), pitch = 3 * rb;
    int rc;
    if (prefill_slot >= 0) {
        size_t off = (size_t)m->pos[0] * d;
        float *kc = cache_at(m, m->kcache, l, prefill_slot) + off;
        float *vc = cache_at(m, m->vcache, l, prefill_slot) + off;
        if ((rc = kern_copy2d(m->be, kc, rb, m->qkv + d, pitch, rb, (size_t)rows)) ||
            (rc = kern_copy2d(m->be, vc, rb, m->qkv + 2 * d, pitch, rb, (size_t)rows)))
            return rc;
        return TV_OK;
    }
    for (int r = 0; r < rows; r++) {
        size_t off = (size_t)m->pos[r] * d;
        m->rowdst[r] = cache_at(m, m->kcache, l, m->row_slot[r]) + off;
        m->rowdst[rows + r] = cache_at(m, m->vcache, l, m->row_slot[r]) + off;
    }
    if ((rc = kern_copy_rows(m->be, rows, m->rowdst, m->qkv + d, pitch, rb)) ||
        (rc = kern_copy_rows(m->be, rows, m->rowdst + rows, m->qkv + 2 * d, pitch, rb)))
        return rc;
    return TV_OK;
}

/* Attention of rows queries into m->att. prefill_slot >= 0: all rows are consecutive positions
 * of that slot (causal over its cache); < 0: one decode query per row, each its own slot. */
static int attend(phi_model *m, int l, int rows, int prefill_slot) {
    const phi_config *c = &m->cfg;
    int64_t d = c->width;
    float scale = 1.0f / sqrtf((float)c->head_dim);
    if (prefill_slot >= 0) {
        kern_attn a = {
            .q = m->qkv, .ldq = 3 * d,
            .k = cache_at(m, m->kcache, l, prefill_slot), .ldk = d,
            .v = cache_at(m, m->vcache, l, prefill_slot), .ldv = d,
            .out = m->att, .ldo = d,
            .tq = rows, .tk = m->pos[rows - 1] + 1, .heads = c->heads, .kv_heads = 0,
            .dim = c->head_dim, .scale = scale, .causal = 1,
        };
        return kern_attention(m->be, &a);
    }
    for (int r = 0; r < rows; r++) {
        m->kv[r].k = cache_at(m, m->kcache, l, m->row_slot[r]);
        m->kv[r].v = cache_at(m, m->vcache, l, m->row_slot[r]);
        m->kv[r].len = m->pos[r] + 1;
        m->kv[r].ld = d;
    }
    return kern_attn_decode(m->be, rows, m->qkv, 3 * d, m->kv, c->heads, 0, c->head_dim, scale,
                            m->att, d);
}

/* One layer over rows rows of m->x (positions in m->pos, slots in m->row_slot). */
static int layer_forward(phi_model *m, int l, int rows, int prefill_slot) {
    const phi_config *c = &m->cfg;
    const phi_layer_weights *L = &m->layers[l];
    int64_t d = c->width, n = (int64_t)rows * d;
    int rc;
    /* h = LN(x); qkv = h W^T + b */
    if ((rc = kern_layernorm(m->be, m->x, d, m->h, d, rows, 1, d, L->ln_w, L->ln_b, c->ln_eps)) ||
        (rc = kern_matmul(m->be, m->h, rows, &L->qkv, L->qkv_b, m->qkv)) ||
        (rc = qk_norm_rope(m, L, rows)))
        return rc;
    if ((rc = cache_store(m, l, rows, prefill_slot)) || (rc = attend(m, l, rows, prefill_slot)))
        return rc;
    /* o = RMSNorm(dense(att)) */
    if ((rc = kern_matmul(m->be, m->att, rows, &L->dense, L->dense_b, m->o)))
        return rc;
    if (c->post_attn_rmsnorm &&
        (rc = kern_rmsnorm(m->be, m->o, d, m->o, d, rows, 1, d, L->post_ln_w, c->rms_eps)))
        return rc;
    /* m = fc2(gelu_tanh(fc1(h))), reusing att for the fc2 output */
    if ((rc = kern_matmul(m->be, m->h, rows, &L->fc1, L->fc1_b, m->mlp)) ||
        (rc = kern_gelu_tanh(m->be, m->mlp, m->mlp, (int64_t)rows * c->ffn)) ||
        (rc = kern_matmul(m->be, m->mlp, rows, &L->fc2, L->fc2_b, m->att)))
        return rc;
    /* x = x + o + m */
    if ((rc = kern_add(m->be, m->x, m->o, m->x, n)) || (rc = kern_add(m->be, m->x, m->att, m->x, n)))
        return rc;
    return TV_OK;
}

/* Final LN and lm_head of rows rows of m->x starting at row r0 -> logits [rows, V]. */
static int head_forward(phi_model *m, int r0, int rows, float *logits) {
    const phi_config *c = &m->cfg;
    int64_t d = c->width;
    float *x = m->x + (size_t)r0 * (size_t)d;
    int rc = kern_layernorm(m->be, x, d, m->h, d, rows, 1, d, m->w.final_ln_w, m->w.final_ln_b,
                            c->ln_eps);
    if (rc)
        return rc;
    return kern_matmul(m->be, m->h, rows, &m->w.lm_head, c->lm_head_bias ? m->w.lm_head_b : NULL,
                       logits);
}

/* head_forward into the caller's host logits: directly on the CPU, through m->logits on a
 * device. */
static int head_out(phi_model *m, int r0, int rows, float *out) {
    if (!m->dev)
        return head_forward(m, r0, rows, out);
    int rc = head_forward(m, r0, rows, m->logits);
    if (rc)
        return rc;
    return kern_download(m->be, out, m->logits,
                         (size_t)rows * (size_t)m->cfg.vocab * sizeof(float));
}

static int run_layers(phi_model *m, int rows, int prefill_slot) {
    for (int l = 0; l < m->cfg.layers; l++) {
        int rc = layer_forward(m, l, rows, prefill_slot);
        if (rc)
            return err_wrap(rc, "phi: layer %d", l);
    }
    return TV_OK;
}

int phi_prefill(phi_model *m, int slot, const float *emb, int T, int flags, float *out) {
    if (slot < 0 || slot >= m->max_seqs)
        return err_set(TV_EINVAL, "phi_prefill: slot %d outside 0..%d", slot, m->max_seqs - 1);
    if (T < 1 || !emb || !out)
        return err_set(TV_EINVAL, "phi_prefill: need T >= 1 (got %d), emb and out", T);
    int len0 = m->len[slot];
    if ((int64_t)len0 + T > m->max_context)
        return err_set(TV_ELIMIT, "prompt too long: %d cached + %d new tokens > context %d", len0,
                       T, m->max_context);
    size_t d = (size_t)m->cfg.width, V = (size_t)m->cfg.vocab;
    for (int t0 = 0; t0 < T; t0 += PHI_CHUNK) {
        int rows = T - t0 < PHI_CHUNK ? T - t0 : PHI_CHUNK;
        for (int r = 0; r < rows; r++) {
            m->pos[r] = len0 + t0 + r;
            m->row_slot[r] = slot;
        }
        int rc = kern_upload(m->be, m->x, emb + (size_t)t0 * d, (size_t)rows * d * sizeof(float));
        if (!rc)
            rc = run_layers(m, rows, slot);
        if (!rc) {
            if (flags & PHI_HIDDEN)
                rc = kern_download(m->be, out + (size_t)t0 * d, m->x,
                                   (size_t)rows * d * sizeof(float));
            else if (flags & PHI_ALL_LOGITS)
                rc = head_out(m, 0, rows, out + (size_t)t0 * V);
            else if (t0 + rows == T)
                rc = head_out(m, rows - 1, 1, out);
        }
        if (rc) {
            m->len[slot] = 0; /* the cache may be half written */
            return rc;
        }
        m->len[slot] = len0 + t0 + rows;
    }
    return TV_OK;
}

int phi_decode(phi_model *m, int n, const int *slots, const int32_t *tokens, float *logits) {
    if (n < 1 || n > m->max_seqs || !slots || !tokens || !logits)
        return err_set(TV_EINVAL, "phi_decode: batch of %d (want 1..%d) or NULL argument", n,
                       m->max_seqs);
    for (int i = 0; i < n; i++) {
        int s = slots[i];
        if (s < 0 || s >= m->max_seqs)
            return err_set(TV_EINVAL, "phi_decode: slot %d outside 0..%d", s, m->max_seqs - 1);
        for (int j = 0; j < i; j++)
            if (slots[j] == s)
                return err_set(TV_EINVAL, "phi_decode: slot %d appears twice in one batch", s);
        if (m->len[s] >= m->max_context)
            return err_set(TV_ELIMIT, "phi_decode: sequence in slot %d is at the context limit %d",
                           s, m->max_context);
        m->pos[i] = m->len[s];
        m->row_slot[i] = s;
    }
    int rc = kern_embed(m->be, m->w.embed, m->w.embed_dtype, m->cfg.vocab, m->cfg.width, tokens,
                        n, m->x);
    if (rc)
        return rc;
    if ((rc = run_layers(m, n, -1)) || (rc = head_out(m, 0, n, logits)))
        return rc; /* lengths unchanged: the partial cache rows are past len and get rewritten */
    for (int i = 0; i < n; i++)
        m->len[slots[i]]++;
    return TV_OK;
}

/* ===================================================================== loading ========= */

/* A vector tensor: F32 [n]. */
static int get_vec(const st_file *f, const char *name, int64_t n, const float **out) {
    const tensor_view *t;
    int rc = st_get(f, name, &t);
    if (rc)
        return rc;
    if (t->dtype != DT_F32 || t->ndim != 1 || t->shape[0] != n)
        return err_set(TV_EFORMAT, "%s: %s must be F32 [%lld]", st_path(f), name, (long long)n);
    if ((uintptr_t)t->data % sizeof(float))
        return err_set(TV_EFORMAT, "%s: %s is not 4-byte aligned", st_path(f), name);
    *out = (const float *)t->data;
    return TV_OK;
}

static int get_vecf(const st_file *f, int64_t n, const float **out, const char *fmt, int i) {
    char name[128];
    snprintf(name, sizeof name, fmt, i);
    return get_vec(f, name, n, out);
}

/* A matrix [n, k] in any of the bundle's storage types (the tensor's own dtype decides). */
static int get_mat(const st_file *f, const char *name, int64_t n, int64_t k, kern_weight *w) {
    const tensor_view *t;
    int rc = st_get(f, name, &t);
    if (rc)
        return rc;
    int64_t cols = k;
    memset(w, 0, sizeof *w);
    switch (t->dtype) {
    case DT_F32: w->type = KERN_W_F32; break;
    case DT_F16: w->type = KERN_W_F16; break;
    case DT_BF16: w->type = KERN_W_BF16; break;
    case DT_I8: w->type = KERN_W_Q8; break;
    case DT_U8: w->type = KERN_W_Q4; cols = k / 2; break;
    default:
        return err_set(TV_EFORMAT, "%s: %s has dtype %s (want F32/F16/BF16/I8/U8)", st_path(f),
                       name, dtype_name(t->dtype));
    }
    if (t->ndim != 2 || t->shape[0] != n || t->shape[1] != cols)
        return err_set(TV_EFORMAT, "%s: %s (%s) must be [%lld, %lld]", st_path(f), name,
                       dtype_name(t->dtype), (long long)n, (long long)cols);
    if ((uintptr_t)t->data % dtype_size(t->dtype))
        return err_set(TV_EFORMAT, "%s: %s is not aligned", st_path(f), name);
    w->n = n;
    w->k = k;
    w->data = t->data;
    if (w->type == KERN_W_Q8 || w->type == KERN_W_Q4) {
        char sname[160];
        const tensor_view *s;
        if (k % 32)
            return err_set(TV_EFORMAT, "%s: %s is quantised but in=%lld is not a multiple of 32",
                           st_path(f), name, (long long)k);
        snprintf(sname, sizeof sname, "%s.scale", name);
        if ((rc = st_get(f, sname, &s)))
            return rc;
        if (s->dtype != DT_F32 || s->ndim != 2 || s->shape[0] != n || s->shape[1] != k / 32 ||
            (uintptr_t)s->data % sizeof(float))
            return err_set(TV_EFORMAT, "%s: %s must be aligned F32 [%lld, %lld]", st_path(f),
                           sname, (long long)n, (long long)(k / 32));
        w->scale = (const float *)s->data;
    }
    return TV_OK;
}

static int get_matf(const st_file *f, int64_t n, int64_t k, kern_weight *w, const char *fmt,
                    int i) {
    char name[128];
    snprintf(name, sizeof name, fmt, i);
    return get_mat(f, name, n, k, w);
}

static int load_layer(const st_file *f, const phi_config *c, int i, phi_layer_weights *L) {
    int64_t d = c->width, f_ = c->ffn, dh = c->head_dim;
    int rc;
    if ((rc = get_vecf(f, d, &L->ln_w, "layers.%d.ln.weight", i)) ||
        (rc = get_vecf(f, d, &L->ln_b, "layers.%d.ln.bias", i)) ||
        (rc = get_matf(f, 3 * d, d, &L->qkv, "layers.%d.qkv.weight", i)) ||
        (rc = get_vecf(f, 3 * d, &L->qkv_b, "layers.%d.qkv.bias", i)) ||
        (rc = get_matf(f, d, d, &L->dense, "layers.%d.dense.weight", i)) ||
        (rc = get_vecf(f, d, &L->dense_b, "layers.%d.dense.bias", i)) ||
        (rc = get_matf(f, f_, d, &L->fc1, "layers.%d.fc1.weight", i)) ||
        (rc = get_vecf(f, f_, &L->fc1_b, "layers.%d.fc1.bias", i)) ||
        (rc = get_matf(f, d, f_, &L->fc2, "layers.%d.fc2.weight", i)) ||
        (rc = get_vecf(f, d, &L->fc2_b, "layers.%d.fc2.bias", i)))
        return rc;
    if (c->qk_layernorm &&
        ((rc = get_vecf(f, dh, &L->q_ln_w, "layers.%d.q_ln.weight", i)) ||
         (rc = get_vecf(f, dh, &L->q_ln_b, "layers.%d.q_ln.bias", i)) ||
         (rc = get_vecf(f, dh, &L->k_ln_w, "layers.%d.k_ln.weight", i)) ||
         (rc = get_vecf(f, dh, &L->k_ln_b, "layers.%d.k_ln.bias", i))))
        return rc;
    if (c->post_attn_rmsnorm && (rc = get_vecf(f, d, &L->post_ln_w, "layers.%d.post_ln.weight", i)))
        return rc;
    return TV_OK;
}

static void config_from_manifest(const manifest *mf, phi_config *c) {
    const manifest_lm *lm = &mf->lm;
    c->layers = lm->layers;
    c->width = lm->width;
    c->heads = lm->heads;
    c->head_dim = lm->head_dim;
    c->ffn = lm->ffn;
    c->vocab = lm->vocab;
    c->rotary_dims = lm->rotary_dims;
    c->rope_theta = lm->rope_theta;
    c->ln_eps = lm->ln_eps;
    c->rms_eps = lm->rms_eps;
    c->qk_layernorm = lm->qk_layernorm;
    c->post_attn_rmsnorm = lm->post_attn_rmsnorm;
    c->lm_head_bias = lm->lm_head_bias;
}

static int load_weights(const st_file *f, const phi_config *c, phi_layer_weights *layers,
                        phi_weights *w) {
    const tensor_view *e;
    int rc;
    for (int i = 0; i < c->layers; i++)
        if ((rc = load_layer(f, c, i, &layers[i])))
            return rc;
    w->layers = layers;
    if ((rc = st_get(f, "embed_tokens.weight", &e)))
        return rc;
    if (e->ndim != 2 || e->shape[0] != c->vocab || e->shape[1] != c->width ||
        (e->dtype != DT_F32 && e->dtype != DT_F16 && e->dtype != DT_BF16) ||
        (uintptr_t)e->data % dtype_size(e->dtype))
        return err_set(TV_EFORMAT, "%s: embed_tokens.weight must be aligned F32/F16/BF16 [%d, %d]",
                       st_path(f), c->vocab, c->width);
    w->embed = e->data;
    w->embed_dtype = e->dtype;
    if ((rc = get_vec(f, "final_ln.weight", c->width, &w->final_ln_w)) ||
        (rc = get_vec(f, "final_ln.bias", c->width, &w->final_ln_b)) ||
        (rc = get_mat(f, "lm_head.weight", c->vocab, c->width, &w->lm_head)))
        return rc;
    if (c->lm_head_bias && (rc = get_vec(f, "lm_head.bias", c->vocab, &w->lm_head_b)))
        return rc;
    return TV_OK;
}

int phi_load(const manifest *mf, kern_be *be, int max_seqs, int max_context, phi_model **out) {
    *out = NULL;
    if (!mf || !be)
        return err_set(TV_EINVAL, "phi_load: NULL argument");
    if (strcmp(mf->lm.arch, "phi") != 0)
        return err_set(TV_EUNSUPPORTED, "phi_load: lm.arch is \"%s\", not \"phi\"", mf->lm.arch);
    if (max_context <= 0)
        max_context = mf->lm.max_context;
    if (max_context > mf->lm.max_context)
        return err_set(TV_ELIMIT, "phi_load: max_context %d > the manifest's lm.max_context %d",
                       max_context, mf->lm.max_context);
    phi_config c;
    config_from_manifest(mf, &c);
    int rc = check_config(&c);
    if (rc)
        return rc;
    st_file *f;
    if ((rc = st_open(mf->lm_path, &f)))
        return rc;
    phi_layer_weights *layers = tv_xcalloc((size_t)c.layers, sizeof *layers);
    phi_weights w = {0};
    rc = load_weights(f, &c, layers, &w);
    if (!rc)
        rc = phi_new(&c, &w, be, max_seqs, max_context, out);
    free(layers);
    if (rc) {
        st_free(f);
        return rc;
    }
    (*out)->file = f;
    log_info("phi", "loaded %s: %d layers, width %d, vocab %d, bundle dtype %s, cache %d x %d",
             mf->lm_path, c.layers, c.width, c.vocab, mf->dtype, max_seqs, max_context);
    return TV_OK;
}
