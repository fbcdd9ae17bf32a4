/* bench_mkbundle — writes a full-size TinyGPT-V bundle with random weights to a directory, so
 * the service can be benchmarked at the real shapes (bench_serve --model DIR) without the
 * original checkpoints.
 *
 * The bundle follows docs/bundle.md exactly: tinyvlm.json (the full-size dimensions of
 * tests/data/manifest/tinyvlm.json, with this run's dtype, image size, stop ids and a real
 * fingerprint), tokenizer.json (a copy of a small byte-level BPE tokenizer, by default the demo
 * model's), vision.safetensors and lm.safetensors with every tensor of the contract, each layer
 * its own weights. Matrices take the bundle dtype (q8/q4: integer tensor + F32 per-32 scales,
 * patch_embed F16 since its in = 588 is not a multiple of 32; embed_tokens F16 in q8/q4); small
 * vectors are F32. Weight values are random with a real model's magnitude (|w| ~ 0.01-0.03, no
 * denormals, no inf), norm weights near 1 and biases near 0.
 *
 * Benchmark mode, on purpose: lm_head.bias is -1e4 for every id the tokenizer cannot decode
 * (the vocab is 51200 rows, the tokenizer far smaller), for the stop ids, and for every token
 * whose text holds the last character of a stop string. So sampling never leaves the
 * tokenizer's range and every answer runs to max_tokens: requests have equal lengths.
 *
 * Every tensor is produced in chunks inside st_writer's fill callback from a counter-based
 * generator (value = f(seed, tensor, byte offset)), so memory stays small and reruns with the
 * same seed give the same files. q8 at 448 px: about 4.6 GB on disk.
 *
 * Usage: bench_mkbundle OUT_DIR [--dtype q8|q4|f16|bf16|f32] [--image-size 224|448]
 *                               [--tokenizer FILE] [--seed N]
 * Exit status 0, 1 on failure (message on stderr), 2 on a usage error. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dtype.h"
#include "err.h"
#include "hash.h"
#include "manifest.h"
#include "mapfile.h"
#include "quant.h"
#include "safetensors.h"
#include "tokenizer.h"

#define MK_MAX_TOKENIZER (64u << 20)
#define MK_BANNED_LOGIT (-1e4f)

typedef enum { MK_Q8, MK_Q4, MK_F16, MK_BF16, MK_F32 } mk_wtype;

typedef struct {
    const char *out, *tokenizer;
    mk_wtype wt;
    const char *dtype_name;
    int image_size;
    uint64_t seed;
} mk_opts;

/* How one tensor's bytes are made. */
typedef enum {
    MK_RANDOM_BITS, /* a matrix's values: random bits shaped by dtype (see mk_word) */
    MK_CONST,       /* every F32 element = base (quantisation scales) */
    MK_NEAR,        /* F32: base + a uniform wiggle in [-0.01, 0.01] */
    MK_LOGIT_BIAS   /* F32: near 0, or MK_BANNED_LOGIT where banned[i] */
} mk_kind;

typedef struct {
    mk_kind kind;
    dtype_id dt;
    float base;
    uint64_t key;                /* seed mixed with the tensor's index */
    const unsigned char *banned; /* MK_LOGIT_BIAS: one flag per row */
} mk_spec;

/* Everything one safetensors file needs until it is written. */
typedef struct {
    st_writer *w;
    mk_spec **specs;
    int n, cap;
    uint64_t seed;
    mk_wtype wt;
    double bytes;
    int rc;           /* first error while adding; later adds are skipped */
} mk_file;

/* ---- values ------------------------------------------------------------------------------ */

/* splitmix64's finaliser: a good 64-bit mix of a counter, so any chunk can be made alone. */
static uint64_t mk_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* 8 bytes of matrix values of dtype dt from a random word r. Floats keep a random sign, a random
 * mantissa and the exponent's low bit, the rest of the exponent is fixed: magnitudes in
 * [2^-7, 2^-5). I8: any code but -128 (quantisers only produce [-127, 127]). U8 (q4): any. */
static uint64_t mk_word(uint64_t r, dtype_id dt) {
    switch (dt) {
    case DT_F32: return (r & 0x80ffffff80ffffffull) | 0x3c0000003c000000ull;   /* exp 120|121 */
    case DT_F16: return (r & 0x87ff87ff87ff87ffull) | 0x2000200020002000ull;   /* exp 8|9 */
    case DT_BF16: return (r & 0x80ff80ff80ff80ffull) | 0x3c003c003c003c00ull;  /* exp 120|121 */
    case DT_I8: {
        uint64_t hi = r & 0x8080808080808080ull, lo = r & 0x7f7f7f7f7f7f7f7full;
        /* a byte is 0x80 exactly when its high bit is set and its low 7 bits are all 0 */
        uint64_t zero7 = ~(((lo | 0x8080808080808080ull) - 0x0101010101010101ull)) & hi;
        return r | (zero7 >> 7);                                                 /* -> 0x81 */
    }
    default: return r;
    }
}

/* A float in [-1, 1] from a random word. */
static float mk_unit(uint64_t r) {
    return (float)((double)(r >> 11) / (double)(1ull << 52) - 1.0);
}

static int mk_fill(void *user, void *dst, size_t offset, size_t len) {
    const mk_spec *s = user;
    unsigned char *out = dst;
    if (s->kind == MK_RANDOM_BITS) {
        for (size_t p = offset; p < offset + len;) {
            size_t word = p / 8, skip = p % 8, take = 8 - skip;
            if (take > offset + len - p) take = offset + len - p;
            uint64_t v = mk_word(mk_mix(s->key ^ (word * 0xd1342543de82ef95ull)), s->dt);
            memcpy(out + (p - offset), (const unsigned char *)&v + skip, take);
            p += take;
        }
        return 0;
    }
    /* F32 element kinds: the writer's chunks are multiples of 4 bytes for an F32 tensor */
    if (offset % 4 || len % 4) return err_set(TV_EINTERNAL, "unaligned F32 chunk");
    for (size_t i = 0; i < len / 4; i++) {
        size_t e = offset / 4 + i;
        float v = s->base;
        if (s->kind != MK_CONST) v += 0.01f * mk_unit(mk_mix(s->key ^ (e * 0xd1342543de82ef95ull)));
        if (s->kind == MK_LOGIT_BIAS && s->banned[e]) v = MK_BANNED_LOGIT;
        memcpy(out + 4 * i, &v, 4);
    }
    return 0;
}

/* ---- tensors ----------------------------------------------------------------------------- */

static mk_spec *mk_add(mk_file *f, const char *name, dtype_id dt, int ndim, int64_t d0,
                       int64_t d1, mk_kind kind, float base) {
    if (f->rc) return NULL;
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 256;
        f->specs = tv_xrealloc(f->specs, (size_t)f->cap * sizeof *f->specs);
    }
    mk_spec *s = tv_xcalloc(1, sizeof *s);
    *s = (mk_spec){kind, dt, base, mk_mix(f->seed ^ mk_mix((uint64_t)f->n + 1)), NULL};
    f->specs[f->n++] = s;
    const int64_t shape[2] = {d0, d1};
    f->rc = st_writer_add_fn(f->w, name, dt, ndim, shape, mk_fill, s);
    f->bytes += (double)(ndim == 1 ? d0 : d0 * d1) * (double)dtype_size(dt);
    return s;
}

static void mk_vec(mk_file *f, const char *name, int64_t n, float base) {
    mk_add(f, name, DT_F32, 1, n, 0, MK_NEAR, base);
}

/* prefix.weight: a matrix [n, k] in the file's weight type (quantised types: values + .scale,
 * or F16 when k is not a multiple of 32). */
static void mk_matrix(mk_file *f, const char *prefix, int64_t n, int64_t k) {
    char name[160];
    snprintf(name, sizeof name, "%s.weight", prefix);
    mk_wtype t = f->wt;
    if ((t == MK_Q8 || t == MK_Q4) && k % QUANT_BLOCK) t = MK_F16;
    static const dtype_id dts[] = {DT_I8, DT_U8, DT_F16, DT_BF16, DT_F32};
    mk_add(f, name, dts[t], 2, n, t == MK_Q4 ? k / 2 : k, MK_RANDOM_BITS, 0);
    if (t == MK_Q8 || t == MK_Q4) {
        /* uniform codes over [-127, 127] (q8) or [-8, 7] (q4): scale so that |w| stays ~0.03 */
        float scale = t == MK_Q8 ? 0.03f / 127 : 0.03f / 8;
        snprintf(name, sizeof name, "%s.weight.scale", prefix);
        mk_add(f, name, DT_F32, 2, n, k / QUANT_BLOCK, MK_CONST, scale);
    }
}

/* prefix.weight [n, k] and prefix.bias [n]. */
static void mk_linear(mk_file *f, const char *prefix, int64_t n, int64_t k) {
    char name[160];
    mk_matrix(f, prefix, n, k);
    snprintf(name, sizeof name, "%s.bias", prefix);
    mk_vec(f, name, n, 0);
}

/* prefix.weight ~1 and prefix.bias ~0, [n]. */
static void mk_norm(mk_file *f, const char *prefix, int64_t n) {
    char name[160];
    snprintf(name, sizeof name, "%s.weight", prefix);
    mk_vec(f, name, n, 1);
    snprintf(name, sizeof name, "%s.bias", prefix);
    mk_vec(f, name, n, 0);
}

/* vision.safetensors: docs/bundle.md's table, in order. */
static void mk_vision(mk_file *f, const manifest *m) {
    const int64_t W = m->vision.width, M = m->vision.mlp_hidden, P = m->vision.patch_size;
    const int64_t G = m->vision.image_size / P, D = m->qformer.width, F = m->qformer.ffn;
    char p[128];
    mk_vec(f, "vit.cls_token", W, 0);
    mk_add(f, "vit.pos_embed", DT_F32, 2, 1 + G * G, W, MK_NEAR, 0);
    mk_linear(f, "vit.patch_embed", W, 3 * P * P);
    for (int l = 0; l < m->vision.layers; l++) {
        snprintf(p, sizeof p, "vit.blocks.%d.norm1", l), mk_norm(f, p, W);
        snprintf(p, sizeof p, "vit.blocks.%d.norm2", l), mk_norm(f, p, W);
        snprintf(p, sizeof p, "vit.blocks.%d.attn.qkv", l), mk_linear(f, p, 3 * W, W);
        snprintf(p, sizeof p, "vit.blocks.%d.attn.proj", l), mk_linear(f, p, W, W);
        snprintf(p, sizeof p, "vit.blocks.%d.mlp.fc1", l), mk_linear(f, p, M, W);
        snprintf(p, sizeof p, "vit.blocks.%d.mlp.fc2", l), mk_linear(f, p, W, M);
    }
    mk_norm(f, "ln_vision", W);
    mk_add(f, "qformer.query_tokens", DT_F32, 2, m->qformer.queries, D, MK_NEAR, 0);
    mk_norm(f, "qformer.ln", D);
    for (int l = 0; l < m->qformer.layers; l++) {
        snprintf(p, sizeof p, "qformer.layers.%d.self.qkv", l), mk_linear(f, p, 3 * D, D);
        snprintf(p, sizeof p, "qformer.layers.%d.self.out", l), mk_linear(f, p, D, D);
        snprintf(p, sizeof p, "qformer.layers.%d.self.ln", l), mk_norm(f, p, D);
        if (l % m->qformer.cross_every == 0) {
            snprintf(p, sizeof p, "qformer.layers.%d.cross.q", l), mk_linear(f, p, D, D);
            snprintf(p, sizeof p, "qformer.layers.%d.cross.kv", l), mk_linear(f, p, 2 * D, W);
            snprintf(p, sizeof p, "qformer.layers.%d.cross.out", l), mk_linear(f, p, D, D);
            snprintf(p, sizeof p, "qformer.layers.%d.cross.ln", l), mk_norm(f, p, D);
        }
        snprintf(p, sizeof p, "qformer.layers.%d.ffn.fc1", l), mk_linear(f, p, F, D);
        snprintf(p, sizeof p, "qformer.layers.%d.ffn.fc2", l), mk_linear(f, p, D, F);
        snprintf(p, sizeof p, "qformer.layers.%d.ffn.ln", l), mk_norm(f, p, D);
    }
    for (int j = 0; j + 1 < m->n_proj_dims; j++) {
        snprintf(p, sizeof p, "proj.%d", j);
        mk_linear(f, p, m->proj_dims[j + 1], m->proj_dims[j]);
    }
}

/* lm.safetensors: docs/bundle.md's table; banned flags the rows lm_head.bias pushes down. */
static void mk_lm(mk_file *f, const manifest *m, const unsigned char *banned) {
    const int64_t d = m->lm.width, dh = m->lm.head_dim, ff = m->lm.ffn, V = m->lm.vocab;
    char p[128];
    static const dtype_id embed_dt[] = {DT_F16, DT_F16, DT_F16, DT_BF16, DT_F32};
    mk_add(f, "embed_tokens.weight", embed_dt[f->wt], 2, V, d, MK_RANDOM_BITS, 0);
    for (int l = 0; l < m->lm.layers; l++) {
        snprintf(p, sizeof p, "layers.%d.ln", l), mk_norm(f, p, d);
        snprintf(p, sizeof p, "layers.%d.qkv", l), mk_linear(f, p, 3 * d, d);
        if (m->lm.qk_layernorm) {
            snprintf(p, sizeof p, "layers.%d.q_ln", l), mk_norm(f, p, dh);
            snprintf(p, sizeof p, "layers.%d.k_ln", l), mk_norm(f, p, dh);
        }
        snprintf(p, sizeof p, "layers.%d.dense", l), mk_linear(f, p, d, d);
        if (m->lm.post_attn_rmsnorm)
            snprintf(p, sizeof p, "layers.%d.post_ln.weight", l), mk_vec(f, p, d, 1);
        snprintf(p, sizeof p, "layers.%d.fc1", l), mk_linear(f, p, ff, d);
        snprintf(p, sizeof p, "layers.%d.fc2", l), mk_linear(f, p, d, ff);
    }
    mk_norm(f, "final_ln", d);
    mk_matrix(f, "lm_head", V, d);
    if (m->lm.lm_head_bias) {
        mk_spec *s = mk_add(f, "lm_head.bias", DT_F32, 1, V, 0, MK_LOGIT_BIAS, 0);
        if (s) s->banned = banned;
    }
}

static void mk_file_free(mk_file *f) {
    for (int i = 0; i < f->n; i++) free(f->specs[i]);
    free(f->specs);
    st_writer_free(f->w);
}

/* Builds one file's tensor list with build(), then writes it to dir/name. */
static int mk_write(const mk_opts *o, const char *name, uint64_t salt, const manifest *m,
                    const unsigned char *banned) {
    mk_file f = {.w = st_writer_new(), .seed = mk_mix(o->seed ^ salt), .wt = o->wt};
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", o->out, name);
    if (banned) mk_lm(&f, m, banned);
    else mk_vision(&f, m);
    if (!f.rc) f.rc = st_writer_set_meta(f.w, "format", "pt");
    time_t t0 = time(NULL);
    if (!f.rc) f.rc = st_writer_write(f.w, path);
    if (!f.rc)
        fprintf(stderr, "bench_mkbundle: %s: %d tensors, %.2f GB, %lld s\n", path, f.n,
                f.bytes / 1e9, (long long)(time(NULL) - t0));
    int rc = f.rc;
    mk_file_free(&f);
    return rc;
}

/* ---- tokenizer and banned ids -------------------------------------------------------------- */

/* Writes len bytes to path (temp file + rename). */
static int mk_write_bytes(const char *path, const void *data, size_t len) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    int ok = fp && fwrite(data, 1, len, fp) == len;
    if (fp && fclose(fp) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) {
        unlink(tmp);
        return err_set(TV_EIO, "cannot write %s: %s", path, strerror(errno));
    }
    return 0;
}

/* Copies the tokenizer into the bundle; fills stop ids (those of "###" and "<|endoftext|>" the
 * tokenizer has) and *n_live (its vocab size). */
static int mk_tokenizer(const mk_opts *o, int32_t stops[2], int *n_stops, tokenizer **tok) {
    char *text = NULL, path[4096];
    size_t len = 0;
    int rc = mf_read_all(o->tokenizer, MK_MAX_TOKENIZER, &text, &len);
    if (!rc) rc = tok_load_json(text, len, tok);
    if (!rc) {
        snprintf(path, sizeof path, "%s/tokenizer.json", o->out);
        rc = mk_write_bytes(path, text, len);
    }
    free(text);
    if (rc) return err_wrap(rc, "tokenizer %s", o->tokenizer);
    *n_stops = 0;
    static const char *const pieces[] = {"###", "<|endoftext|>"};
    for (int i = 0; i < 2; i++) {
        int32_t id = tok_token_id(*tok, pieces[i]);
        if (id >= 0) stops[(*n_stops)++] = id;
    }
    return 0;
}

/* One flag per LM row: ids the tokenizer cannot decode, the stop ids, and tokens holding the
 * last byte of a stop string (so no stop string can ever appear in an answer). Malloc'd. */
static unsigned char *mk_banned(const manifest *m, const tokenizer *tok) {
    unsigned char *b = tv_xcalloc((size_t)m->lm.vocab, 1);
    int32_t live = tok_vocab_size(tok);
    for (int32_t id = 0; id < m->lm.vocab; id++) {
        const char *bytes;
        size_t len;
        if (id >= live || tok_token_bytes(tok, id, &bytes, &len) || len == 0 ||
            tok_is_special(tok, id)) {
            b[id] = 1;
            continue;
        }
        for (int s = 0; s < m->chat.n_stop_strings && !b[id]; s++) {
            const char *ss = m->chat.stop_strings[s];
            size_t sl = strlen(ss);
            if (sl && memchr(bytes, ss[sl - 1], len)) b[id] = 1;
        }
    }
    for (int i = 0; i < m->chat.n_stop_token_ids; i++) {
        int32_t id = m->chat.stop_token_ids[i];
        if (id >= 0 && id < m->lm.vocab) b[id] = 1;
    }
    return b;
}

/* ---- manifest ------------------------------------------------------------------------------ */

/* The reference full-size manifest with this run's name, dtype, image size and stop ids, and
 * the fingerprint zeroed. Returns the cJSON tree (caller deletes) or NULL with a message. */
static cJSON *mk_manifest_tree(const mk_opts *o, const int32_t *stops, int n_stops) {
    const char *ref = TV_SOURCE_DIR "/tests/data/manifest/tinyvlm.json";
    char *text = NULL, name[64];
    size_t len;
    if (mf_read_all(ref, 1u << 20, &text, &len)) return NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    cJSON *vis = cJSON_GetObjectItemCaseSensitive(root, "vision");
    cJSON *chat = cJSON_GetObjectItemCaseSensitive(root, "chat");
    if (!vis || !chat) {
        cJSON_Delete(root);
        err_set(TV_EFORMAT, "%s: not the expected manifest", ref);
        return NULL;
    }
    snprintf(name, sizeof name, "synthetic-full-%s-%d", o->dtype_name, o->image_size);
    cJSON_ReplaceItemInObjectCaseSensitive(root, "name", cJSON_CreateString(name));
    cJSON_ReplaceItemInObjectCaseSensitive(root, "dtype", cJSON_CreateString(o->dtype_name));
    cJSON_ReplaceItemInObjectCaseSensitive(root, "fingerprint", cJSON_CreateString(
        "0000000000000000000000000000000000000000000000000000000000000000"));
    cJSON_ReplaceItemInObjectCaseSensitive(vis, "image_size", cJSON_CreateNumber(o->image_size));
    cJSON_ReplaceItemInObjectCaseSensitive(chat, "stop_token_ids",
                                           cJSON_CreateIntArray((const int *)stops, n_stops));
    return root;
}

/* SHA-256 over text, then the headers of the two safetensors files (docs/bundle.md). */
static int mk_fingerprint(const mk_opts *o, const char *text, char hex[HASH_SHA256_HEX_LEN + 1]) {
    char vp[4096], lp[4096];
    snprintf(vp, sizeof vp, "%s/vision.safetensors", o->out);
    snprintf(lp, sizeof lp, "%s/lm.safetensors", o->out);
    st_file *v = NULL, *l = NULL;
    hash_sha256_ctx *h = NULL;
    uint8_t dig[HASH_SHA256_LEN];
    int rc = st_open(vp, &v);
    if (!rc) rc = st_open(lp, &l);
    if (!rc && !(h = hash_sha256_new())) rc = TV_EINTERNAL;
    size_t vl = 0, ll = 0;
    const char *vh = rc ? NULL : st_header(v, &vl), *lh = rc ? NULL : st_header(l, &ll);
    if (!rc) rc = hash_sha256_update(h, text, strlen(text));
    if (!rc) rc = hash_sha256_update(h, vh, vl);
    if (!rc) rc = hash_sha256_update(h, lh, ll);
    if (!rc) rc = hash_sha256_final(h, dig);
    if (!rc) hash_to_hex(dig, HASH_SHA256_LEN, hex);
    hash_sha256_free(h);
    st_free(v), st_free(l);
    return rc;
}

/* cJSON's text of root plus the final newline; malloc'd. */
static char *mk_print(const cJSON *root) {
    char *t = cJSON_Print(root);
    size_t n = strlen(t);
    char *s = tv_xmalloc(n + 2);
    memcpy(s, t, n);
    s[n] = '\n', s[n + 1] = 0;
    cJSON_free(t);
    return s;
}

/* Writes tinyvlm.json once both weight files exist (the fingerprint covers their headers). */
static int mk_write_manifest(const mk_opts *o, cJSON *root) {
    char *zeroed = mk_print(root), hex[HASH_SHA256_HEX_LEN + 1], path[4096];
    int rc = mk_fingerprint(o, zeroed, hex);
    free(zeroed);
    if (rc) return rc;
    cJSON_ReplaceItemInObjectCaseSensitive(root, "fingerprint", cJSON_CreateString(hex));
    char *final = mk_print(root);
    snprintf(path, sizeof path, "%s/tinyvlm.json", o->out);
    rc = mk_write_bytes(path, final, strlen(final));
    free(final);
    return rc;
}

/* ---- main ---------------------------------------------------------------------------------- */

static int mk_parse(int argc, char **argv, mk_opts *o) {
    *o = (mk_opts){NULL, TV_SOURCE_DIR "/models/demo/tokenizer.json", MK_Q8, "q8", 224, 1};
    static const char *const names[] = {"q8", "q4", "f16", "bf16", "f32"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-') {
            if (o->out) return -1;
            o->out = a;
            continue;
        }
        if (!v) return -1;
        i++;
        if (!strcmp(a, "--tokenizer")) o->tokenizer = v;
        else if (!strcmp(a, "--image-size")) o->image_size = atoi(v);
        else if (!strcmp(a, "--seed")) o->seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--dtype")) {
            int k = 0;
            while (k < 5 && strcmp(v, names[k])) k++;
            if (k == 5) return -1;
            o->wt = (mk_wtype)k, o->dtype_name = names[k];
        } else return -1;
    }
    /* the ViT's grid: a multiple of the patch size, and no larger than the original 448 */
    return o->out && o->image_size >= 14 && o->image_size <= 448 && o->image_size % 14 == 0
               ? 0 : -1;
}

/* Everything after option parsing; returns 0 or an error code with err_msg set. */
static int mk_run(const mk_opts *o) {
    if (mkdir(o->out, 0755) && errno != EEXIST)
        return err_set(TV_EIO, "cannot create %s: %s", o->out, strerror(errno));
    int32_t stops[2];
    int n_stops = 0;
    tokenizer *tok = NULL;
    manifest *m = NULL;
    cJSON *root = NULL;
    unsigned char *banned = NULL;
    int rc = mk_tokenizer(o, stops, &n_stops, &tok);
    if (!rc && !(root = mk_manifest_tree(o, stops, n_stops))) rc = TV_EFORMAT;
    if (!rc) {
        /* parse our own tree back: the model code sees exactly these numbers */
        char *text = mk_print(root);
        rc = manifest_parse(text, o->out, &m);
        free(text);
    }
    if (!rc) banned = mk_banned(m, tok);
    if (!rc) rc = mk_write(o, "vision.safetensors", 0x7669, m, NULL);
    if (!rc) rc = mk_write(o, "lm.safetensors", 0x6c6d, m, banned);
    if (!rc) rc = mk_write_manifest(o, root);
    manifest_free(m);
    if (!rc && !(rc = manifest_load(o->out, &m))) {
        fprintf(stderr, "bench_mkbundle: %s: %s, fingerprint %.16s...\n", o->out, m->name,
                m->fingerprint);
        manifest_free(m);
    }
    free(banned);
    cJSON_Delete(root);
    tok_free(tok);
    return rc;
}

int main(int argc, char **argv) {
    mk_opts o;
    if (mk_parse(argc, argv, &o)) {
        fprintf(stderr, "usage: bench_mkbundle OUT_DIR [--dtype q8|q4|f16|bf16|f32] "
                        "[--image-size N (multiple of 14, <= 448; 224)] [--tokenizer FILE] "
                        "[--seed N]\n");
        return 2;
    }
    if (mk_run(&o)) {
        fprintf(stderr, "bench_mkbundle: %s\n", err_msg());
        return 1;
    }
    return 0;
}
