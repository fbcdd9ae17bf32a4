#include "manifest.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mapfile.h"

#define MANIFEST_MAX_BYTES (1 << 20)

/* ---- typed field readers: each names the field in its error ---------------------------------- */

static const cJSON *mf_field(const cJSON *obj, const char *sect, const char *key, int *rc) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v && !*rc) *rc = err_set(TV_EFORMAT, "tinyvlm.json: %s%s%s: missing", sect,
                                  sect[0] ? "." : "", key);
    return v;
}

static int mf_int(const cJSON *obj, const char *sect, const char *key, int lo, int hi, int *rc) {
    const cJSON *v = mf_field(obj, sect, key, rc);
    if (!v) return 0;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= lo && d <= hi && d == floor(d))) {
        if (!*rc) *rc = err_set(TV_EFORMAT, "tinyvlm.json: %s.%s: expected an integer in [%d, %d]",
                                sect, key, lo, hi);
        return 0;
    }
    return (int)d;
}

static float mf_float(const cJSON *obj, const char *sect, const char *key, double lo, double hi,
                      int *rc) {
    const cJSON *v = mf_field(obj, sect, key, rc);
    if (!v) return 0;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= lo && d <= hi)) {
        if (!*rc) *rc = err_set(TV_EFORMAT, "tinyvlm.json: %s.%s: expected a number in [%g, %g]",
                                sect, key, lo, hi);
        return 0;
    }
    return (float)d;
}

static int mf_bool(const cJSON *obj, const char *sect, const char *key, int *rc) {
    const cJSON *v = mf_field(obj, sect, key, rc);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) {
        if (!*rc) *rc = err_set(TV_EFORMAT, "tinyvlm.json: %s.%s: expected true or false", sect, key);
        return 0;
    }
    return cJSON_IsTrue(v);
}

/* Returns a malloc'd copy of a non-empty string field (NULL on error). */
static char *mf_str(const cJSON *obj, const char *sect, const char *key, int *rc) {
    const cJSON *v = mf_field(obj, sect, key, rc);
    if (!v) return NULL;
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
        if (!*rc) *rc = err_set(TV_EFORMAT, "tinyvlm.json: %s%s%s: expected a non-empty string",
                                sect, sect[0] ? "." : "", key);
        return NULL;
    }
    char *s = strdup(v->valuestring);
    TV_ASSERT(s);
    return s;
}

static const cJSON *mf_obj(const cJSON *obj, const char *sect, const char *key, int *rc) {
    const cJSON *v = mf_field(obj, sect, key, rc);
    if (v && !cJSON_IsObject(v)) {
        if (!*rc) *rc = err_set(TV_EFORMAT, "tinyvlm.json: %s%s%s: expected an object", sect,
                                sect[0] ? "." : "", key);
        return NULL;
    }
    return v;
}

/* Reads a number array of exactly n (or, when n < 0, 1..-n) entries; returns the count. */
static int mf_numbers(const cJSON *obj, const char *sect, const char *key, double *out, int n,
                      int *rc) {
    const cJSON *v = mf_field(obj, sect, key, rc);
    if (!v) return 0;
    int len = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    int ok = n >= 0 ? len == n : (len >= 1 && len <= -n);
    const cJSON *e;
    int i = 0;
    if (ok) cJSON_ArrayForEach(e, v) {
            if (!cJSON_IsNumber(e)) ok = 0;
            else out[i++] = e->valuedouble;
        }
    if (!ok) {
        if (!*rc) *rc = err_set(TV_EFORMAT, "tinyvlm.json: %s.%s: expected an array of %d numbers",
                                sect, key, n >= 0 ? n : -n);
        return 0;
    }
    return len;
}

static char *mf_join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = tv_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, file);
    return p;
}

/* ---- sections ------------------------------------------------------------------------------ */

static void mf_read_vision(const cJSON *v, manifest *m, int *rc) {
    manifest_vision *o = &m->vision;
    o->image_size = mf_int(v, "vision", "image_size", 14, 4096, rc);
    o->patch_size = mf_int(v, "vision", "patch_size", 1, 64, rc);
    o->width = mf_int(v, "vision", "width", 1, 16384, rc);
    o->layers = mf_int(v, "vision", "layers", 1, 256, rc);
    o->heads = mf_int(v, "vision", "heads", 1, 256, rc);
    o->mlp_hidden = mf_int(v, "vision", "mlp_hidden", 1, 65536, rc);
    o->ln_eps = mf_float(v, "vision", "ln_eps", 0, 1, rc);
    o->ln_vision_eps = mf_float(v, "vision", "ln_vision_eps", 0, 1, rc);
    double mean[3] = {0}, std[3] = {0};
    mf_numbers(v, "vision", "mean", mean, 3, rc);
    mf_numbers(v, "vision", "std", std, 3, rc);
    for (int c = 0; c < 3; c++) {
        o->mean[c] = (float)mean[c];
        o->std[c] = (float)std[c];
        if (!*rc && !(std[c] > 0)) *rc = err_set(TV_EFORMAT, "tinyvlm.json: vision.std must be > 0");
    }
    if (!*rc && (o->image_size % o->patch_size || o->width % o->heads))
        *rc = err_set(TV_EFORMAT, "tinyvlm.json: vision: image_size must be a multiple of "
                                  "patch_size and width a multiple of heads");

    const cJSON *q = mf_obj(v, "vision", "qformer", rc);
    if (q) {
        manifest_qformer *f = &m->qformer;
        f->layers = mf_int(q, "vision.qformer", "layers", 1, 256, rc);
        f->width = mf_int(q, "vision.qformer", "width", 1, 16384, rc);
        f->heads = mf_int(q, "vision.qformer", "heads", 1, 256, rc);
        f->ffn = mf_int(q, "vision.qformer", "ffn", 1, 65536, rc);
        f->queries = mf_int(q, "vision.qformer", "queries", 1, 4096, rc);
        f->cross_every = mf_int(q, "vision.qformer", "cross_every", 1, 256, rc);
        f->ln_eps = mf_float(q, "vision.qformer", "ln_eps", 0, 1, rc);
        if (!*rc && f->width % f->heads)
            *rc = err_set(TV_EFORMAT, "tinyvlm.json: vision.qformer.width must be a multiple of heads");
    }
    double dims[4] = {0};
    m->n_proj_dims = mf_numbers(v, "vision", "proj_dims", dims, -4, rc);
    for (int i = 0; i < m->n_proj_dims; i++) {
        m->proj_dims[i] = (int)dims[i];
        if (!*rc && !(dims[i] >= 1 && dims[i] <= 65536 && dims[i] == floor(dims[i])))
            *rc = err_set(TV_EFORMAT, "tinyvlm.json: vision.proj_dims: expected positive integers");
    }
    if (!*rc && m->n_proj_dims < 2)
        *rc = err_set(TV_EFORMAT, "tinyvlm.json: vision.proj_dims: need at least [in, out]");
    if (!*rc && m->proj_dims[0] != m->qformer.width)
        *rc = err_set(TV_EFORMAT, "tinyvlm.json: vision.proj_dims[0] (%d) must equal "
                                  "qformer.width (%d)", m->proj_dims[0], m->qformer.width);
}

static void mf_read_lm(const cJSON *v, manifest *m, int *rc) {
    manifest_lm *o = &m->lm;
    char *arch = mf_str(v, "lm", "arch", rc);
    if (arch && strcmp(arch, "phi") != 0 && !*rc)
        *rc = err_set(TV_EUNSUPPORTED, "tinyvlm.json: lm.arch '%s' is not supported (known: phi)", arch);
    if (arch) snprintf(o->arch, sizeof o->arch, "%s", arch);
    free(arch);
    o->layers = mf_int(v, "lm", "layers", 1, 512, rc);
    o->width = mf_int(v, "lm", "width", 1, 65536, rc);
    o->heads = mf_int(v, "lm", "heads", 1, 512, rc);
    o->head_dim = mf_int(v, "lm", "head_dim", 1, 1024, rc);
    o->ffn = mf_int(v, "lm", "ffn", 1, 262144, rc);
    o->vocab = mf_int(v, "lm", "vocab", 1, 1 << 22, rc);
    o->rotary_dims = mf_int(v, "lm", "rotary_dims", 0, 1024, rc);
    o->max_context = mf_int(v, "lm", "max_context", 1, 1 << 20, rc);
    o->rope_theta = mf_float(v, "lm", "rope_theta", 1, 1e9, rc);
    o->ln_eps = mf_float(v, "lm", "ln_eps", 0, 1, rc);
    o->rms_eps = mf_float(v, "lm", "rms_eps", 0, 1, rc);
    o->qk_layernorm = mf_bool(v, "lm", "qk_layernorm", rc);
    o->post_attn_rmsnorm = mf_bool(v, "lm", "post_attn_rmsnorm", rc);
    o->lm_head_bias = mf_bool(v, "lm", "lm_head_bias", rc);
    if (!*rc && o->heads * o->head_dim != o->width)
        *rc = err_set(TV_EFORMAT, "tinyvlm.json: lm: heads (%d) x head_dim (%d) != width (%d)",
                      o->heads, o->head_dim, o->width);
    if (!*rc && (o->rotary_dims > o->head_dim || o->rotary_dims % 2))
        *rc = err_set(TV_EFORMAT, "tinyvlm.json: lm.rotary_dims must be even and <= head_dim");
}

static void mf_read_chat(const cJSON *v, manifest *m, int *rc) {
    manifest_chat *c = &m->chat;
    c->first = mf_str(v, "chat", "first", rc);
    c->next = mf_str(v, "chat", "next", rc);
    c->image_token = mf_str(v, "chat", "image_token", rc);
    double ids[MANIFEST_MAX_STOPS];
    c->n_stop_token_ids = mf_numbers(v, "chat", "stop_token_ids", ids, -MANIFEST_MAX_STOPS, rc);
    for (int i = 0; i < c->n_stop_token_ids; i++) {
        c->stop_token_ids[i] = (int32_t)ids[i];
        if (!*rc && !(ids[i] >= 0 && ids[i] < m->lm.vocab))
            *rc = err_set(TV_EFORMAT, "tinyvlm.json: chat.stop_token_ids: %g is not a token id", ids[i]);
    }
    const cJSON *ss = mf_field(v, "chat", "stop_strings", rc), *e;
    if (ss && (!cJSON_IsArray(ss) || cJSON_GetArraySize(ss) > MANIFEST_MAX_STOPS) && !*rc)
        *rc = err_set(TV_EFORMAT, "tinyvlm.json: chat.stop_strings: expected at most %d strings",
                      MANIFEST_MAX_STOPS);
    if (ss && !*rc) cJSON_ArrayForEach(e, ss) {
            if (!cJSON_IsString(e) || !e->valuestring[0]) {
                *rc = err_set(TV_EFORMAT, "tinyvlm.json: chat.stop_strings: expected non-empty strings");
                break;
            }
            c->stop_strings[c->n_stop_strings] = strdup(e->valuestring);
            TV_ASSERT(c->stop_strings[c->n_stop_strings]);
            c->n_stop_strings++;
        }
    const cJSON *d = mf_obj(v, "chat", "defaults", rc);
    if (d) {
        manifest_sampling *s = &c->defaults;
        s->max_new_tokens = mf_int(d, "chat.defaults", "max_new_tokens", 1, 1 << 20, rc);
        s->top_k = mf_int(d, "chat.defaults", "top_k", 0, 1 << 22, rc);
        s->temperature = mf_float(d, "chat.defaults", "temperature", 0, 100, rc);
        s->top_p = mf_float(d, "chat.defaults", "top_p", 0, 1, rc);
        s->repetition_penalty = mf_float(d, "chat.defaults", "repetition_penalty", 0.01, 100, rc);
    }
    if (!*rc && !strstr(c->first, c->image_token))
        *rc = err_set(TV_EFORMAT, "tinyvlm.json: chat.first has no image token '%s'", c->image_token);
}

static void mf_read_top(const cJSON *root, const char *dir, manifest *m, int *rc) {
    char *fmt = mf_str(root, "", "format", rc);
    if (fmt && strcmp(fmt, "tinyvlm-bundle") != 0 && !*rc)
        *rc = err_set(TV_EFORMAT, "tinyvlm.json: format is '%s', expected 'tinyvlm-bundle'", fmt);
    free(fmt);
    m->format_version = mf_int(root, "", "format_version", 0, 1 << 20, rc);
    if (!*rc && m->format_version != MANIFEST_FORMAT_VERSION)
        *rc = err_set(TV_EUNSUPPORTED, "tinyvlm.json: format_version %d; this tinyvlm reads %d "
                      "(re-run tinyvlm convert)", m->format_version, MANIFEST_FORMAT_VERSION);
    m->name = mf_str(root, "", "name", rc);
    m->architecture = mf_str(root, "", "architecture", rc);
    m->dtype = mf_str(root, "", "dtype", rc);
    m->fingerprint = mf_str(root, "", "fingerprint", rc);
    if (!*rc && strlen(m->fingerprint) != 64)
        *rc = err_set(TV_EFORMAT, "tinyvlm.json: fingerprint: expected 64 hex digits");
    const cJSON *files = mf_obj(root, "", "files", rc);
    if (files) {
        char *v = mf_str(files, "files", "vision", rc), *l = mf_str(files, "files", "lm", rc),
             *t = mf_str(files, "files", "tokenizer", rc);
        if (v) m->vision_path = mf_join(dir, v);
        if (l) m->lm_path = mf_join(dir, l);
        if (t) m->tokenizer_path = mf_join(dir, t);
        free(v), free(l), free(t);
    }
}

int manifest_parse(const char *json, const char *dir, manifest **out) {
    *out = NULL;
    cJSON *root = cJSON_Parse(json);
    if (!root || !cJSON_IsObject(root)) {
        const char *where = cJSON_GetErrorPtr();
        int rc = err_set(TV_EFORMAT, "tinyvlm.json: not a JSON object%s%.20s", where ? " near: " : "",
                         where ? where : "");
        cJSON_Delete(root);
        return rc;
    }
    manifest *m = tv_xcalloc(1, sizeof *m);
    m->dir = strdup(dir);
    TV_ASSERT(m->dir);
    int rc = 0;
    mf_read_top(root, dir, m, &rc);
    const cJSON *v = mf_obj(root, "", "vision", &rc), *l = mf_obj(root, "", "lm", &rc),
                *c = mf_obj(root, "", "chat", &rc);
    if (v && !rc) mf_read_vision(v, m, &rc);
    if (l && !rc) mf_read_lm(l, m, &rc);
    if (c && !rc) mf_read_chat(c, m, &rc);
    if (!rc && m->proj_dims[m->n_proj_dims - 1] != m->lm.width)
        rc = err_set(TV_EFORMAT, "tinyvlm.json: the last vision.proj_dims (%d) must equal lm.width (%d)",
                     m->proj_dims[m->n_proj_dims - 1], m->lm.width);
    cJSON_Delete(root);
    if (rc) {
        manifest_free(m);
        return rc;
    }
    *out = m;
    return TV_OK;
}

int manifest_load(const char *dir, manifest **out) {
    *out = NULL;
    char *path = mf_join(dir, "tinyvlm.json"), *text = NULL;
    int rc = mf_read_all(path, MANIFEST_MAX_BYTES, &text, NULL);
    if (!rc) rc = manifest_parse(text, dir, out);
    if (rc) err_wrap(rc, "bundle %s", dir);
    free(text);
    free(path);
    return rc;
}

void manifest_free(manifest *m) {
    if (!m) return;
    free(m->name), free(m->architecture), free(m->dtype), free(m->fingerprint), free(m->dir);
    free(m->vision_path), free(m->lm_path), free(m->tokenizer_path);
    free(m->chat.first), free(m->chat.next), free(m->chat.image_token);
    for (int i = 0; i < m->chat.n_stop_strings; i++) free(m->chat.stop_strings[i]);
    free(m);
}

int manifest_image_tokens(const manifest *m) { return m->qformer.queries; }

int manifest_embed_dim(const manifest *m) { return m->proj_dims[m->n_proj_dims - 1]; }
