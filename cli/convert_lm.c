/* convert_lm — lm.safetensors: Phi-2 from the HF folder (fused query_key_value or split
 * q/k/v_proj), with the stage-4 file's LoRA merged and its trained norm weights taking over. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert_map.h"
#include "err.h"
#include "log.h"
#include "mapfile.h"

/* dir/file when path is a directory, else file next to path. Caller frees. */
char *conv_sibling(const char *path, const char *file) {
    struct stat st;
    size_t dl;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        dl = strlen(path);
    } else {
        const char *slash = strrchr(path, '/');
        dl = slash ? (size_t)(slash - path) : 0;
        if (!slash) path = ".", dl = 1;
    }
    char *s = tv_xmalloc(dl + strlen(file) + 2);
    memcpy(s, path, dl);
    s[dl] = '/';
    strcpy(s + dl + 1, file);
    return s;
}

/* ---- config.json --------------------------------------------------------------------------- */

static int cfg_num(const cJSON *root, const char *key, double dflt, int required, const char *path,
                   double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return err_set(TV_EFORMAT, "%s: '%s' is missing", path, key);
        *out = dflt;
        return 0;
    }
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v);
        return 0;
    }
    if (!cJSON_IsNumber(v)) return err_set(TV_EFORMAT, "%s: '%s' is not a number", path, key);
    *out = v->valuedouble;
    return 0;
}

static int cfg_int(const cJSON *root, const char *key, int lo, int hi, const char *path, int *out) {
    double v = 0;
    int rc = cfg_num(root, key, 0, 1, path, &v);
    if (rc) return rc;
    if (v != (double)(long long)v || v < lo || v > hi)
        return err_set(TV_EFORMAT, "%s: '%s' = %g, expected an integer in [%d, %d]", path, key, v, lo, hi);
    *out = (int)v;
    return 0;
}

static int parse_config(conv_ctx *c, const cJSON *root, const char *path) {
    int rc;
    double qk = 0;
    if ((rc = cfg_int(root, "hidden_size", 1, 1 << 20, path, &c->lm.width)) ||
        (rc = cfg_int(root, "num_attention_heads", 1, 4096, path, &c->lm.heads)) ||
        (rc = cfg_int(root, "num_hidden_layers", 1, CONV_MAX_LAYERS, path, &c->lm.layers)) ||
        (rc = cfg_int(root, "intermediate_size", 1, 1 << 22, path, &c->lm.ffn)) ||
        (rc = cfg_int(root, "vocab_size", 1, 1 << 24, path, &c->lm.vocab)) ||
        (rc = cfg_num(root, "partial_rotary_factor", 0.5, 0, path, &c->lm.partial_rotary)) ||
        (rc = cfg_num(root, "rope_theta", 10000.0, 0, path, &c->lm.rope_theta)) ||
        (rc = cfg_num(root, "layer_norm_eps", 1e-5, 0, path, &c->lm.ln_eps)) ||
        (rc = cfg_num(root, "qk_layernorm", 0, 0, path, &qk)))
        return rc;
    double mpe;
    if ((rc = cfg_num(root, "max_position_embeddings", 2048, 0, path, &mpe))) return rc;
    c->lm.qk_ln = qk != 0;
    c->lm.max_context = c->o->max_context > 0 ? c->o->max_context : (int)mpe;
    if (c->lm.max_context < 1 || c->lm.max_context > (1 << 20))
        return err_set(TV_EFORMAT, "%s: max_position_embeddings %g out of range", path, mpe);
    if (c->lm.width % c->lm.heads)
        return err_set(TV_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                       path, c->lm.width, c->lm.heads);
    c->lm.head_dim = c->lm.width / c->lm.heads;
    if (!(c->lm.partial_rotary >= 0 && c->lm.partial_rotary <= 1))
        return err_set(TV_EFORMAT, "%s: partial_rotary_factor %g not in [0, 1]", path,
                       c->lm.partial_rotary);
    c->lm.rotary_dims = (int)(c->lm.partial_rotary * c->lm.head_dim); /* HF: int(factor * Dh) */
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(root, "num_key_value_heads");
    if (cJSON_IsNumber(kv) && kv->valueint != c->lm.heads)
        return err_set(TV_EUNSUPPORTED, "%s: grouped-query attention (num_key_value_heads %d) is "
                       "not supported", path, kv->valueint);
    return 0;
}

int conv_lm_config(conv_ctx *c) {
    char *path = conv_sibling(c->o->phi_dir, "config.json"), *txt = NULL;
    size_t len;
    int rc = mf_read_all(path, 1 << 20, &txt, &len);
    if (!rc) {
        cJSON *root = cJSON_ParseWithLength(txt, len);
        if (!cJSON_IsObject(root)) rc = err_set(TV_EFORMAT, "%s: not a JSON object", path);
        else rc = parse_config(c, root, path);
        cJSON_Delete(root);
    }
    free(txt);
    free(path);
    return rc;
}

/* ---- tensors ------------------------------------------------------------------------------- */

static int has(const conv_in *in, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", in->prefix, name);
    return (in->pth ? pth_find(in->pth, full) : st_model_find(in->st, full)) != NULL;
}

/* A norm weight the stage-4 file may override: from s4 when use_s4 (then it must be there),
 * else from the Phi folder when it has it (or must have it: required), else NULL. */
static const tensor_view *pick(conv_ctx *c, int use_s4, const char *s4name, const char *phiname,
                               int64_t n, int required) {
    if (use_s4) {
        conv_find(&c->phi, phiname); /* overridden on purpose: not "unused" */
        return conv_need(c, &c->s4, conv_name(c, "%s%s", c->s4pre, s4name), n);
    }
    if (required || has(&c->phi, phiname)) return conv_need(c, &c->phi, phiname, n);
    return NULL;
}

static void lm_vec(conv_ctx *c, const tensor_view *t, const char *to, int64_t n, float dflt) {
    conv_emit_vec(c, c->wl, to, t ? conv_view(t, n, 1) : conv_const(n, dflt));
}

static void lm_linear(conv_ctx *c, const char *from, const char *to, int64_t out, int64_t in,
                      const tensor_view *la, const tensor_view *lb, float scale) {
    const tensor_view *w = conv_need(c, &c->phi, conv_name(c, "%s.weight", from), out, in);
    const tensor_view *b = conv_need(c, &c->phi, conv_name(c, "%s.bias", from), out);
    if (!w || !b) return;
    conv_src s = conv_view(w, out, in);
    s.lora_a = la, s.lora_b = lb, s.lora_scale = scale;
    conv_emit_matrix(c, c->wl, conv_name(c, "%s.weight", to), s, 0);
    lm_vec(c, b, conv_name(c, "%s.bias", to), out, 0);
}

typedef struct {
    int s4_in_ln, s4_qk, s4_post, s4_final; /* which norm weights the stage-4 file holds */
    const char *lora_infix;                 /* ".lora_A.default.weight" style, or NULL */
    float scale;
} lm_plan;

static void lora_pair(conv_ctx *c, const lm_plan *p, int i, const char *mod, int64_t out,
                      const tensor_view **a, const tensor_view **b) {
    *a = *b = NULL;
    if (!p->lora_infix) return;
    int64_t d = c->lm.width, r = c->lora_r;
    *a = conv_need(c, &c->s4, conv_name(c, "%smodel.layers.%d.self_attn.%s.lora_A%s", c->s4pre, i,
                                        mod, p->lora_infix), r, d);
    *b = conv_need(c, &c->s4, conv_name(c, "%smodel.layers.%d.self_attn.%s.lora_B%s", c->s4pre, i,
                                        mod, p->lora_infix), out, r);
}

static void map_qkv(conv_ctx *c, const lm_plan *p, int i) {
    int64_t d = c->lm.width;
    const tensor_view *w[3] = {0}, *b[3] = {0}, *la, *lb;
    int n = c->lm.fused ? 1 : 3, ok = 1;
    static const char *const split[] = {"q_proj", "k_proj", "v_proj"};
    for (int k = 0; k < n; k++) {
        const char *m = c->lm.fused ? "query_key_value" : split[k];
        int64_t rows = c->lm.fused ? 3 * d : d;
        w[k] = conv_need(c, &c->phi, conv_name(c, "model.layers.%d.self_attn.%s.weight", i, m), rows, d);
        b[k] = conv_need(c, &c->phi, conv_name(c, "model.layers.%d.self_attn.%s.bias", i, m), rows);
        ok = ok && w[k] && b[k];
    }
    lora_pair(c, p, i, "query_key_value", 3 * d, &la, &lb);
    if (!ok) return;
    /* LoRA is merged in the fused layout (the row map in conv_src_row), then reordered */
    conv_src sw = {.kind = CS_VIEW, .rows = 3 * d, .cols = d, .nparts = n, .part_rows = n == 1 ? 3 * d : d,
                   .heads = c->lm.heads, .head_dim = c->lm.head_dim, .lora_a = la, .lora_b = lb,
                   .lora_scale = p->scale};
    conv_src sb = sw;
    sb.cols = 1, sb.lora_a = sb.lora_b = NULL;
    for (int k = 0; k < n; k++) sw.part[k] = w[k], sb.part[k] = b[k];
    conv_emit_matrix(c, c->wl, conv_name(c, "layers.%d.qkv.weight", i), sw, 0);
    conv_emit_vec(c, c->wl, conv_name(c, "layers.%d.qkv.bias", i), sb);
}

static void map_layer(conv_ctx *c, const lm_plan *p, int i) {
    int64_t d = c->lm.width, Dh = c->lm.head_dim, f = c->lm.ffn;
    char P[64];
    snprintf(P, sizeof P, "model.layers.%d.", i);
    const tensor_view *t, *la, *lb;
    t = pick(c, p->s4_in_ln, conv_name(c, "%sinput_layernorm.weight", P),
             conv_name(c, "%sinput_layernorm.weight", P), d, 1);
    lm_vec(c, t, conv_name(c, "layers.%d.ln.weight", i), d, 1);
    t = conv_need(c, &c->phi, conv_name(c, "%sinput_layernorm.bias", P), d);
    lm_vec(c, t, conv_name(c, "layers.%d.ln.bias", i), d, 0);
    map_qkv(c, p, i);
    if (c->lm.qk_ln) {
        static const char *const qk[] = {"q", "k"};
        for (int k = 0; k < 2; k++) {
            const char *n = conv_name(c, "%sself_attn.%s_layernorm.weight", P, qk[k]);
            t = pick(c, p->s4_qk, n, n, Dh, 0); /* absent everywhere: nn.LayerNorm's init, 1 */
            lm_vec(c, t, conv_name(c, "layers.%d.%s_ln.weight", i, qk[k]), Dh, 1);
            n = conv_name(c, "%sself_attn.%s_layernorm.bias", P, qk[k]);
            t = pick(c, 0, n, n, Dh, 0);        /* TinyGPT-V never trains it: 0 */
            lm_vec(c, t, conv_name(c, "layers.%d.%s_ln.bias", i, qk[k]), Dh, 0);
        }
    }
    lora_pair(c, p, i, "dense", d, &la, &lb);
    lm_linear(c, conv_name(c, "%sself_attn.dense", P), conv_name(c, "layers.%d.dense", i), d, d,
              la, lb, p->scale);
    if (c->lm.post_rms) {
        const char *n = conv_name(c, "%spost_layernorm.weight", P);
        t = pick(c, p->s4_post, n, n, d, 0);
        lm_vec(c, t, conv_name(c, "layers.%d.post_ln.weight", i), d, 1);
    }
    lm_linear(c, conv_name(c, "%smlp.fc1", P), conv_name(c, "layers.%d.fc1", i), f, d, NULL, NULL, 0);
    lm_linear(c, conv_name(c, "%smlp.fc2", P), conv_name(c, "layers.%d.fc2", i), d, f, NULL, NULL, 0);
}

/* LoRA rank and alpha: the options, else the checkpoint's config, else lora_A's rows / 16. */
static void lora_params(conv_ctx *c, lm_plan *p) {
    const tensor_view *a = conv_need(c, &c->s4, conv_name(c, "%smodel.layers.0.self_attn."
                                     "query_key_value.lora_A%s", c->s4pre, p->lora_infix), -1, c->lm.width);
    int64_t ra = a ? a->shape[0] : -1, r = c->o->lora_r;
    double alpha = c->o->lora_alpha;
    if (r <= 0 && pth_get_int(c->s4.pth, "config.model.lora_r", &r)) r = ra;
    if (alpha <= 0 && pth_get_float(c->s4.pth, "config.model.lora_alpha", &alpha)) alpha = 16;
    err_clear();
    if (a && r != ra)
        conv_bad(c, "LoRA r is %lld but lora_A has %lld rows", (long long)r, (long long)ra);
    if (!(alpha > 0)) conv_bad(c, "LoRA alpha %g must be > 0", alpha);
    c->lora_r = (int)ra, c->lora_alpha = alpha;
    p->scale = ra > 0 ? (float)(alpha / (double)ra) : 0;
}

static lm_plan plan_lm(conv_ctx *c) {
    lm_plan p = {0};
    conv_in *s4 = &c->s4;
    c->s4pre = "llama_model.base_model.model."; /* peft: model.state_dict() of a PeftModel */
    if (!has(s4, "llama_model.base_model.model.model.final_layernorm.weight") &&
        has(s4, "llama_model.model.final_layernorm.weight"))
        c->s4pre = "llama_model.";
#define S4(n) has(s4, conv_name(c, "%smodel." n, c->s4pre))
    p.s4_in_ln = S4("layers.0.input_layernorm.weight");
    p.s4_qk = S4("layers.0.self_attn.q_layernorm.weight");
    p.s4_post = S4("layers.0.post_layernorm.weight");
    p.s4_final = S4("final_layernorm.weight");
    if (S4("layers.0.self_attn.query_key_value.lora_A.default.weight")) p.lora_infix = ".default.weight";
    else if (S4("layers.0.self_attn.query_key_value.lora_A.weight")) p.lora_infix = ".weight";
#undef S4
    c->lm.fused = !has(&c->phi, "model.layers.0.self_attn.q_proj.weight");
    c->lm.qk_ln = c->lm.qk_ln || p.s4_qk || has(&c->phi, "model.layers.0.self_attn.q_layernorm.weight");
    c->lm.post_rms = p.s4_post || has(&c->phi, "model.layers.0.post_layernorm.weight");
    c->lm.head_bias = has(&c->phi, "lm_head.bias");
    if (p.lora_infix) lora_params(c, &p);
    else log_warn("convert", "%s has no LoRA weights: the Phi-2 weights are used as they are",
                  s4->label);
    return p;
}

int conv_map_lm(conv_ctx *c) {
    int64_t d = c->lm.width, V = c->lm.vocab;
    lm_plan p = plan_lm(c);
    int found = conv_count_layers(&c->phi, "model.layers.");
    if (found != c->lm.layers)
        conv_bad(c, "%s holds %d layers but config.json says num_hidden_layers = %d", c->phi.label,
                 found, c->lm.layers);
    const tensor_view *emb = conv_need(c, &c->phi, "model.embed_tokens.weight", -1, d);
    if (emb && emb->shape[0] > V)
        conv_bad(c, "model.embed_tokens.weight has %lld rows, more than vocab_size %lld",
                 (long long)emb->shape[0], (long long)V);
    else if (emb) /* rows past the checkpoint's are padding: zeros */
        conv_emit_matrix(c, c->wl, "embed_tokens.weight", conv_view(emb, V, d), 1);
    for (int i = 0; i < c->lm.layers; i++) map_layer(c, &p, i);
    const tensor_view *t = pick(c, p.s4_final, "model.final_layernorm.weight",
                                "model.final_layernorm.weight", d, 1);
    lm_vec(c, t, "final_ln.weight", d, 1);
    t = conv_need(c, &c->phi, "model.final_layernorm.bias", d);
    lm_vec(c, t, "final_ln.bias", d, 0);
    t = conv_need(c, &c->phi, "lm_head.weight", V, d);
    if (t) conv_emit_matrix(c, c->wl, "lm_head.weight", conv_view(t, V, d), 0);
    if (c->lm.head_bias) lm_vec(c, conv_need(c, &c->phi, "lm_head.bias", V), "lm_head.bias", V, 0);
    return 0;
}
