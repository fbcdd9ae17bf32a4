/* manifest — the bundle's tinyvlm.json: architecture, dimensions, files, chat template, special
 * tokens, dtype and fingerprint (DESIGN.md §3). Parsed with cJSON and validated once, so model
 * code can trust every number in it. docs/bundle.md describes the format.
 *
 * A minimal manifest:
 * { "format": "tinyvlm-bundle", "format_version": 1, "name": "demo", "architecture": "tinygptv",
 *   "dtype": "f16", "fingerprint": "<64 hex>",
 *   "files": {"vision": "vision.safetensors", "lm": "lm.safetensors", "tokenizer": "tokenizer.json"},
 *   "vision": {"image_size": 448, "patch_size": 14, "width": 1408, "layers": 39, "heads": 16,
 *              "mlp_hidden": 6144, "ln_eps": 1e-6, "ln_vision_eps": 1e-5,
 *              "mean": [..3], "std": [..3],
 *              "qformer": {"layers": 12, "width": 768, "heads": 12, "ffn": 3072, "queries": 32,
 *                          "cross_every": 2, "ln_eps": 1e-12},
 *              "proj_dims": [768, 4096, 2560]},
 *   "lm": {"arch": "phi", "layers": 32, "width": 2560, "heads": 32, "head_dim": 80, "ffn": 10240,
 *          "vocab": 51200, "rotary_dims": 32, "rope_theta": 10000, "ln_eps": 1e-5,
 *          "rms_eps": 1e-6, "qk_layernorm": true, "post_attn_rmsnorm": true,
 *          "lm_head_bias": true, "max_context": 2048},
 *   "chat": {"first": "<s>[INST] <Img><ImageHere></Img> {question} [/INST]",
 *            "next": "{answer}<s>[INST] {question} [/INST]", "image_token": "<ImageHere>",
 *            "stop_token_ids": [21017, 50256], "stop_strings": ["###", "Assistant:", "[/INST]"],
 *            "defaults": {"max_new_tokens": 500, "temperature": 0.6, "top_p": 0.9, "top_k": 0,
 *                         "repetition_penalty": 1.05}} }
 */
#ifndef TV_MANIFEST_H
#define TV_MANIFEST_H

#include <stdint.h>

#define MANIFEST_FORMAT_VERSION 1
#define MANIFEST_MAX_STOPS 16

typedef struct {
    int image_size, patch_size, width, layers, heads, mlp_hidden;
    float ln_eps, ln_vision_eps;
    float mean[3], std[3];
} manifest_vision;

typedef struct {
    int layers, width, heads, ffn, queries, cross_every;
    float ln_eps;
} manifest_qformer;

typedef struct {
    char arch[16];          /* "phi" */
    int layers, width, heads, head_dim, ffn, vocab, rotary_dims, max_context;
    float rope_theta, ln_eps, rms_eps;
    int qk_layernorm, post_attn_rmsnorm, lm_head_bias;  /* booleans */
} manifest_lm;

typedef struct {
    int max_new_tokens, top_k;
    float temperature, top_p, repetition_penalty;
} manifest_sampling;

typedef struct {
    char *first, *next, *image_token;          /* templates with {question} / {answer} */
    int32_t stop_token_ids[MANIFEST_MAX_STOPS];
    int n_stop_token_ids;
    char *stop_strings[MANIFEST_MAX_STOPS];
    int n_stop_strings;
    manifest_sampling defaults;
} manifest_chat;

typedef struct {
    int format_version;
    char *name, *architecture, *dtype, *fingerprint;
    char *dir;                                  /* the bundle directory */
    char *vision_path, *lm_path, *tokenizer_path; /* dir + the "files" entries */
    manifest_vision vision;
    manifest_qformer qformer;
    int proj_dims[4], n_proj_dims;              /* e.g. 768 -> 4096 -> 2560 */
    manifest_lm lm;
    manifest_chat chat;
} manifest;

/* Reads dir/tinyvlm.json. Returns 0 and *out (free with manifest_free), or TV_EIO/TV_EFORMAT
 * with a message naming the bad field, e.g. "tinyvlm.json: lm.heads: expected an integer >= 1". */
int manifest_load(const char *dir, manifest **out);

/* Same from JSON text already in memory; dir is used only to build the file paths. */
int manifest_parse(const char *json, const char *dir, manifest **out);

/* NULL is a no-op. */
void manifest_free(manifest *m);

/* Number of image embedding vectors a picture becomes (qformer.queries) and their width
 * (the last proj dim). */
int manifest_image_tokens(const manifest *m);
int manifest_embed_dim(const manifest *m);

#endif
