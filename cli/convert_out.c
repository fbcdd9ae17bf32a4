/* convert_out — the bundle on disk: the two safetensors files, the tokenizer copy, then
 * tinyvlm.json with the fingerprint of docs/bundle.md; and the `tinyvlm convert` command line. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert_map.h"
#include "err.h"
#include "hash.h"
#include "log.h"
#include "mapfile.h"
#include "tokenizer.h"

#define CONV_MAX_TOKENIZER_BYTES (512u << 20)

/* Writes len bytes to path through a temp file and a rename, so readers never see half a file. */
static int write_atomic(const char *path, const void *data, size_t len) {
    size_t pl = strlen(path);
    char *tmp = tv_xmalloc(pl + 8);
    snprintf(tmp, pl + 8, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(data, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    int rc = ok ? 0 : err_set(TV_EIO, "cannot write %s: %s", path, strerror(errno));
    if (!ok) unlink(tmp);
    free(tmp);
    return rc;
}

static char *join(const char *dir, const char *file) {
    char *s = tv_xmalloc(strlen(dir) + strlen(file) + 2);
    sprintf(s, "%s/%s", dir, file);
    return s;
}

/* ---- manifest ------------------------------------------------------------------------------ */

typedef struct {
    int32_t stop_ids[2];
    int nstop;
} conv_tok_info;

static cJSON *num_array(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static cJSON *vision_json(const conv_ctx *c) {
    static const double mean[3] = {0.48145466, 0.4578275, 0.40821073};
    static const double std[3] = {0.26862954, 0.26130258, 0.27577711};
    cJSON *v = cJSON_CreateObject();
    cJSON_AddNumberToObject(v, "image_size", c->vit.image_size);
    cJSON_AddNumberToObject(v, "patch_size", c->vit.patch);
    cJSON_AddNumberToObject(v, "width", c->vit.width);
    cJSON_AddNumberToObject(v, "layers", c->vit.layers);
    cJSON_AddNumberToObject(v, "heads", c->vit.heads);
    cJSON_AddNumberToObject(v, "mlp_hidden", c->vit.mlp);
    cJSON_AddNumberToObject(v, "ln_eps", 1e-6);
    cJSON_AddNumberToObject(v, "ln_vision_eps", 1e-5);
    cJSON_AddItemToObject(v, "mean", num_array(mean, 3));
    cJSON_AddItemToObject(v, "std", num_array(std, 3));
    cJSON *q = cJSON_AddObjectToObject(v, "qformer");
    cJSON_AddNumberToObject(q, "layers", c->qf.layers);
    cJSON_AddNumberToObject(q, "width", c->qf.width);
    cJSON_AddNumberToObject(q, "heads", c->qf.heads);
    cJSON_AddNumberToObject(q, "ffn", c->qf.ffn);
    cJSON_AddNumberToObject(q, "queries", c->qf.queries);
    cJSON_AddNumberToObject(q, "cross_every", c->qf.cross_every);
    cJSON_AddNumberToObject(q, "ln_eps", 1e-12);
    double pd[3] = {c->proj_dims[0], c->proj_dims[1], c->proj_dims[2]};
    cJSON_AddItemToObject(v, "proj_dims", num_array(pd, 3));
    return v;
}

static cJSON *lm_json(const conv_ctx *c) {
    cJSON *l = cJSON_CreateObject();
    cJSON_AddStringToObject(l, "arch", "phi");
    cJSON_AddNumberToObject(l, "layers", c->lm.layers);
    cJSON_AddNumberToObject(l, "width", c->lm.width);
    cJSON_AddNumberToObject(l, "heads", c->lm.heads);
    cJSON_AddNumberToObject(l, "head_dim", c->lm.head_dim);
    cJSON_AddNumberToObject(l, "ffn", c->lm.ffn);
    cJSON_AddNumberToObject(l, "vocab", c->lm.vocab);
    cJSON_AddNumberToObject(l, "rotary_dims", c->lm.rotary_dims);
    cJSON_AddNumberToObject(l, "rope_theta", c->lm.rope_theta);
    cJSON_AddNumberToObject(l, "ln_eps", c->lm.ln_eps);
    cJSON_AddNumberToObject(l, "rms_eps", 1e-6);
    cJSON_AddBoolToObject(l, "qk_layernorm", c->lm.qk_ln);
    cJSON_AddBoolToObject(l, "post_attn_rmsnorm", c->lm.post_rms);
    cJSON_AddBoolToObject(l, "lm_head_bias", c->lm.head_bias);
    cJSON_AddNumberToObject(l, "max_context", c->lm.max_context);
    return l;
}

/* TinyGPT-V stage 4's chat (MODELS.md "Prompt and generation"). */
static cJSON *chat_json(const conv_tok_info *t) {
    static const char *const stops[] = {"###", "Assistant:", "[/INST]"};
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddStringToObject(ch, "first", "<s>[INST] <Img><ImageHere></Img> {question} [/INST]");
    cJSON_AddStringToObject(ch, "next", "{answer}<s>[INST] {question} [/INST]");
    cJSON_AddStringToObject(ch, "image_token", "<ImageHere>");
    cJSON *ids = cJSON_AddArrayToObject(ch, "stop_token_ids");
    for (int i = 0; i < t->nstop; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(t->stop_ids[i]));
    cJSON_AddItemToObject(ch, "stop_strings", cJSON_CreateStringArray(stops, 3));
    cJSON *d = cJSON_AddObjectToObject(ch, "defaults");
    cJSON_AddNumberToObject(d, "max_new_tokens", 500);
    cJSON_AddNumberToObject(d, "temperature", 0.6);
    cJSON_AddNumberToObject(d, "top_p", 0.9);
    cJSON_AddNumberToObject(d, "top_k", 0);
    cJSON_AddNumberToObject(d, "repetition_penalty", 1.05);
    return ch;
}

static cJSON *manifest_json(const conv_ctx *c, const conv_tok_info *t) {
    const conv_opts *o = c->o;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", "tinyvlm-bundle");
    cJSON_AddNumberToObject(m, "format_version", 1);
    cJSON_AddStringToObject(m, "name", o->name ? o->name : "tinygpt-v");
    cJSON_AddStringToObject(m, "architecture", "tinygptv");
    cJSON_AddStringToObject(m, "dtype", o->dtype ? o->dtype : "f16");
    cJSON_AddStringToObject(m, "fingerprint",
                            "0000000000000000000000000000000000000000000000000000000000000000");
    cJSON *f = cJSON_AddObjectToObject(m, "files");
    cJSON_AddStringToObject(f, "vision", "vision.safetensors");
    cJSON_AddStringToObject(f, "lm", "lm.safetensors");
    cJSON_AddStringToObject(f, "tokenizer", "tokenizer.json");
    cJSON_AddItemToObject(m, "vision", vision_json(c));
    cJSON_AddItemToObject(m, "lm", lm_json(c));
    cJSON_AddItemToObject(m, "chat", chat_json(t));
    return m;
}

/* SHA-256 over the manifest text (fingerprint = 64 zeros), then the JSON headers of
 * vision.safetensors and lm.safetensors as written (docs/bundle.md). */
static int fingerprint(const char *json, const char *vision_path, const char *lm_path,
                       char hex[HASH_SHA256_HEX_LEN + 1]) {
    st_file *v = NULL, *l = NULL;
    hash_sha256_ctx *h = NULL;
    uint8_t dig[HASH_SHA256_LEN];
    int rc = st_open(vision_path, &v);
    if (!rc) rc = st_open(lm_path, &l);
    if (!rc && !(h = hash_sha256_new())) rc = TV_EINTERNAL;
    if (!rc) {
        size_t vl, ll;
        const char *vh = st_header(v, &vl), *lh = st_header(l, &ll);
        if (!(rc = hash_sha256_update(h, json, strlen(json))) &&
            !(rc = hash_sha256_update(h, vh, vl)) && !(rc = hash_sha256_update(h, lh, ll)) &&
            !(rc = hash_sha256_final(h, dig)))
            hash_to_hex(dig, HASH_SHA256_LEN, hex);
    }
    hash_sha256_free(h);
    st_free(v), st_free(l);
    return rc;
}

static int write_manifest(const conv_ctx *c, const conv_tok_info *t, const char *vpath,
                          const char *lpath) {
    cJSON *m = manifest_json(c, t);
    char *text = cJSON_Print(m), *final = NULL;
    /* the file's exact bytes are hashed: cJSON's text plus the final newline */
    char *zeroed = tv_xmalloc(strlen(text) + 2);
    sprintf(zeroed, "%s\n", text);
    cJSON_free(text);
    char hex[HASH_SHA256_HEX_LEN + 1];
    int rc = fingerprint(zeroed, vpath, lpath, hex);
    if (!rc) {
        /* same printer, same tree: only the fingerprint's 64 characters differ */
        cJSON_ReplaceItemInObjectCaseSensitive(m, "fingerprint", cJSON_CreateString(hex));
        final = cJSON_Print(m);
        char *path = join(c->o->out_dir, "tinyvlm.json");
        size_t n = strlen(final);
        final[n] = '\n'; /* cJSON's text has no final newline; the NUL is not written */
        rc = write_atomic(path, final, n + 1);
        free(path);
    }
    free(zeroed), cJSON_free(final);
    cJSON_Delete(m);
    return rc;
}

/* ---- the files ----------------------------------------------------------------------------- */

static int tokenizer_info(const conv_ctx *c, const char *path, conv_tok_info *t) {
    tokenizer *tok;
    int rc = tok_load(path, &tok);
    if (rc) return err_wrap(rc, "tokenizer");
    if (tok_vocab_size(tok) > c->lm.vocab)
        rc = err_set(TV_EFORMAT, "%s has %d ids but the model's vocab_size is %d", path,
                     tok_vocab_size(tok), c->lm.vocab);
    static const char *const stops[] = {"###", "<|endoftext|>"};
    t->nstop = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        int32_t id = tok_token_id(tok, stops[i]);
        if (id >= 0) t->stop_ids[t->nstop++] = id;
        else log_warn("convert", "%s has no token \"%s\": it will not stop generation", path, stops[i]);
    }
    tok_free(tok);
    return rc;
}

static int copy_file(const char *from, const char *to) {
    char *data = NULL;
    size_t len;
    int rc = mf_read_all(from, CONV_MAX_TOKENIZER_BYTES, &data, &len);
    if (!rc) rc = write_atomic(to, data, len);
    free(data);
    return rc;
}

static int make_dir(const char *dir) {
    struct stat st;
    if (mkdir(dir, 0755) == 0) return 0;
    if (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    return err_set(TV_EIO, "cannot create directory %s: %s", dir, strerror(errno));
}

int conv_write_bundle(conv_ctx *c) {
    const conv_opts *o = c->o;
    conv_tok_info t;
    char *tok_src = o->tokenizer_path ? NULL : conv_sibling(o->phi_dir, "tokenizer.json");
    const char *tpath = o->tokenizer_path ? o->tokenizer_path : tok_src;
    char *man = join(o->out_dir, "tinyvlm.json"), *vp = join(o->out_dir, "vision.safetensors"),
         *lp = join(o->out_dir, "lm.safetensors"), *tp = join(o->out_dir, "tokenizer.json");
    int rc = tokenizer_info(c, tpath, &t);
    if (!rc) rc = make_dir(o->out_dir);
    /* an old manifest must never describe new files: it goes first, the new one comes last */
    if (!rc && unlink(man) != 0 && errno != ENOENT)
        rc = err_set(TV_EIO, "cannot remove %s: %s", man, strerror(errno));
    if (!rc) log_info("convert", "writing %s (%zu jobs in all)", vp, c->njobs);
    if (!rc && (rc = st_writer_write(c->wv, vp))) err_wrap(rc, "vision.safetensors");
    if (!rc) log_info("convert", "writing %s", lp);
    if (!rc && (rc = st_writer_write(c->wl, lp))) err_wrap(rc, "lm.safetensors");
    if (!rc) rc = copy_file(tpath, tp);
    if (!rc) rc = write_manifest(c, &t, vp, lp);
    if (!rc) log_info("convert", "bundle written to %s", o->out_dir);
    free(tok_src), free(man), free(vp), free(lp), free(tp);
    return rc;
}

/* ---- command line -------------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: tinyvlm convert --phi DIR --eva FILE --blip2 FILE --stage4 FILE --out DIR\n"
            "                       [--dtype f32|f16|bf16|q8|q4] [options]\n\n"
            "Converts TinyGPT-V's original checkpoints into a tinyvlm bundle (docs/convert.md).\n\n"
            "  --phi DIR          Phi-2 HF folder: config.json + model.safetensors (or a sharded\n"
            "                     index); fused query_key_value or split q/k/v_proj\n"
            "  --eva FILE         eva_vit_g.pth\n"
            "  --blip2 FILE       blip2_pretrained_flant5xxl.pth\n"
            "  --stage4 FILE      TinyGPT-V_for_Stage4.pth\n"
            "  --tokenizer FILE   tokenizer.json (default: the one in the Phi folder)\n"
            "  --out DIR          output bundle directory (created; files in it are replaced)\n"
            "  --dtype T          matrices' storage: f32, f16 (default), bf16, q8, q4\n"
            "  --name STR         model name in the manifest (default tinygpt-v)\n"
            "  --image-size N     input resolution (default: the checkpoint's config, else 448)\n"
            "  --lora-r N         LoRA rank (default: the checkpoint's, else lora_A's rows)\n"
            "  --lora-alpha X     LoRA alpha (default: the checkpoint's, else 16)\n"
            "  --vit-heads N      ViT attention heads (default width/88: 16 for EVA ViT-g)\n"
            "  --qformer-heads N  Q-Former heads (default width/64: 12)\n"
            "  --max-context N    KV cache length (default: config.json's max_position_embeddings)\n");
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* Applies one "--flag value" pair; returns 0, or -1 for an unknown flag or a bad value. */
static int set_opt(conv_opts *o, const char *flag, const char *val) {
    static const struct { const char *flag; size_t off; } paths[] = {
        {"--phi", offsetof(conv_opts, phi_dir)},       {"--eva", offsetof(conv_opts, eva_path)},
        {"--blip2", offsetof(conv_opts, blip2_path)},  {"--stage4", offsetof(conv_opts, stage4_path)},
        {"--tokenizer", offsetof(conv_opts, tokenizer_path)},
        {"--out", offsetof(conv_opts, out_dir)},       {"-o", offsetof(conv_opts, out_dir)},
        {"--name", offsetof(conv_opts, name)},         {"--dtype", offsetof(conv_opts, dtype)}};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
        if (!strcmp(flag, paths[i].flag)) {
            *(const char **)((char *)o + paths[i].off) = val;
            return 0;
        }
    if (!strcmp(flag, "--image-size")) return parse_int(val, 1, 16384, &o->image_size);
    if (!strcmp(flag, "--lora-r")) return parse_int(val, 1, 1 << 16, &o->lora_r);
    if (!strcmp(flag, "--vit-heads")) return parse_int(val, 1, 4096, &o->vit_heads);
    if (!strcmp(flag, "--qformer-heads")) return parse_int(val, 1, 4096, &o->qformer_heads);
    if (!strcmp(flag, "--max-context")) return parse_int(val, 1, 1 << 20, &o->max_context);
    if (!strcmp(flag, "--lora-alpha")) {
        char *end;
        o->lora_alpha = strtod(val, &end);
        return end != val && !*end && o->lora_alpha > 0 ? 0 : -1;
    }
    return -1;
}

int cli_convert(int argc, char **argv) {
    conv_opts o;
    conv_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc || set_opt(&o, argv[i], argv[i + 1])) {
            fprintf(stderr, "tinyvlm convert: %s %s\n\n",
                    i + 1 >= argc ? "missing value for" : "unknown option or bad value:", argv[i]);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!o.phi_dir || !o.eva_path || !o.blip2_path || !o.stage4_path || !o.out_dir) {
        fprintf(stderr, "tinyvlm convert: --phi, --eva, --blip2, --stage4 and --out are required\n\n");
        usage(stderr);
        return 2;
    }
    if (o.dtype && strcmp(o.dtype, "f32") && strcmp(o.dtype, "f16") && strcmp(o.dtype, "bf16") &&
        strcmp(o.dtype, "q8") && strcmp(o.dtype, "q4")) {
        fprintf(stderr, "tinyvlm convert: --dtype '%s': expected f32, f16, bf16, q8 or q4\n", o.dtype);
        return 2;
    }
    int rc = conv_run(&o);
    if (rc) {
        fprintf(stderr, "tinyvlm convert: %s\n", err_msg());
        return 1;
    }
    printf("%s: tinyvlm bundle written (%s)\n", o.out_dir, o.dtype ? o.dtype : "f16");
    return 0;
}
