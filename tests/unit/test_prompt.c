/* test_prompt — chat template, split at the image token, per-piece tokenization and the embedding
 * splice, against the PyTorch reference (tests/data/tinygptv/tiny.json segment ids and
 * tiny.safetensors' inputs_embeds, built by TinyGPT-V's get_context_emb). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "manifest.h"
#include "mapfile.h"
#include "ops.h"
#include "phi.h"
#include "prompt.h"
#include "safetensors.h"
#include "tokenizer.h"

static void test_format(void) {
    char *s = NULL;
    CHECK_OK(prompt_format("{answer}<s>[INST] {question} [/INST]", "Why?", "A cat.", &s));
    CHECK_EQ_STR(s, "A cat.<s>[INST] Why? [/INST]");
    free(s);
    /* placeholders inside the substituted text are not expanded again; stray braces kept */
    CHECK_OK(prompt_format("{x} {question}{", "{answer}", "NO", &s));
    CHECK_EQ_STR(s, "{x} {answer}{");
    free(s);
    CHECK_OK(prompt_format("{question}{question}", NULL, NULL, &s));
    CHECK_EQ_STR(s, "");
    free(s);
    CHECK_FAILS(prompt_format(NULL, "q", "a", &s));
}

/* tiny.json's expected ids: segment 0, the image marker, segment 1. */
static int32_t *golden_ids(const cJSON *root, size_t *n) {
    const cJSON *segs = cJSON_GetObjectItem(root, "segment_ids");
    size_t cap = 0;
    for (const cJSON *s = segs ? segs->child : NULL; s; s = s->next)
        cap += (size_t)cJSON_GetArraySize(s) + 1;
    int32_t *ids = tv_xmalloc((cap + 1) * sizeof *ids);
    *n = 0;
    for (const cJSON *s = segs ? segs->child : NULL; s; s = s->next) {
        if (s != segs->child)
            ids[(*n)++] = PROMPT_IMAGE;
        for (const cJSON *v = s->child; v; v = v->next)
            ids[(*n)++] = (int32_t)v->valuedouble;
    }
    return ids;
}

/* A phi model whose only real weights are the tiny model's embedding table (F16 [448, 80] from
 * phi_split/model.safetensors); the rest are zeros of the right shapes, as prompt_embed only
 * embeds. */
static int embed_model(kern_be *be, const st_file *phi, float *zeros, phi_layer_weights *L,
                       phi_model **m) {
    const tensor_view *e = st_find(phi, "model.embed_tokens.weight");
    if (!e || e->ndim != 2)
        return err_set(TV_ENOTFOUND, "no embed_tokens in phi_split");
    int V = (int)e->shape[0], d = (int)e->shape[1];
    phi_config c = {.layers = 1, .width = d, .heads = 1, .head_dim = d, .ffn = d, .vocab = V,
                    .rotary_dims = 0, .rope_theta = 10000.0f, .ln_eps = 1e-5f, .rms_eps = 1e-6f};
    kern_weight dd = {KERN_W_F32, d, d, zeros, NULL}, qkv = {KERN_W_F32, 3 * d, d, zeros, NULL},
                head = {KERN_W_F32, V, d, zeros, NULL};
    *L = (phi_layer_weights){.ln_w = zeros, .ln_b = zeros, .qkv = qkv, .qkv_b = zeros,
                             .dense = dd, .dense_b = zeros, .fc1 = dd, .fc1_b = zeros,
                             .fc2 = dd, .fc2_b = zeros};
    phi_weights w = {.embed = e->data, .embed_dtype = e->dtype, .layers = L, .final_ln_w = zeros,
                     .final_ln_b = zeros, .lm_head = head};
    return phi_new(&c, &w, be, 1, 4, m);
}

static void test_tiny_prompt(void) {
    tokenizer *tok = NULL;
    manifest *mf = NULL;
    char *json = NULL;
    size_t jlen;
    cJSON *root = NULL;
    CHECK_OK(tok_load(check_data("tinygptv/model/tokenizer.json"), &tok));
    CHECK_OK(manifest_load(check_data("manifest"), &mf));
    CHECK_OK(mf_read_all(check_data("tinygptv/tiny.json"), 1 << 20, &json, &jlen));
    if (json)
        root = cJSON_ParseWithLength(json, jlen);
    CHECK(root != NULL);
    if (!tok || !mf || !root)
        goto out;
    const char *question = cJSON_GetObjectItem(root, "question")->valuestring;

    /* the template text itself, then the ids */
    char *text = NULL;
    CHECK_OK(prompt_format(mf->chat.first, question, NULL, &text));
    CHECK_EQ_STR(text, cJSON_GetObjectItem(root, "prompt")->valuestring);
    free(text);

    size_t ng;
    int32_t *gold = golden_ids(root, &ng);
    prompt_ids p;
    CHECK_OK(prompt_first(mf, tok, question, &p));
    CHECK_EQ_INT(p.n, ng);
    CHECK_EQ_INT(p.n_images, 1);
    CHECK(p.n == ng && memcmp(p.ids, gold, ng * sizeof *gold) == 0);
    int n_img = cJSON_GetObjectItem(root, "n_image_tokens")->valueint;
    CHECK_EQ_INT(prompt_rows(&p, n_img), cJSON_GetObjectItem(root, "sequence_length")->valueint);
    /* the image sits at image_position */
    int img_pos = cJSON_GetObjectItem(root, "image_position")->valueint;
    CHECK(img_pos >= 0 && (size_t)img_pos < p.n && p.ids[img_pos] == PROMPT_IMAGE);

    /* the embedding splice == the reference's inputs_embeds, exactly (f16 -> f32 is exact) */
    st_file *phi = NULL, *gt = NULL;
    kern_be *be = NULL;
    phi_model *m = NULL;
    phi_layer_weights L;
    float *zeros = tv_xcalloc(448 * 80 * 3, sizeof(float));
    CHECK_OK(st_open(check_data("tinygptv/model/phi_split/model.safetensors"), &phi));
    CHECK_OK(st_open(check_data("tinygptv/tiny.safetensors"), &gt));
    CHECK_OK(kern_cpu_new(1, KERN_ISA_AUTO, &be));
    if (phi && gt && be)
        CHECK_OK(embed_model(be, phi, zeros, &L, &m));
    const tensor_view *img = gt ? st_find(gt, "image_embeds") : NULL;
    const tensor_view *emb = gt ? st_find(gt, "inputs_embeds") : NULL;
    CHECK(img && emb);
    if (m && img && emb) {
        int64_t rows = prompt_rows(&p, n_img), d = phi_get_config(m)->width;
        CHECK_EQ_INT(tensor_numel(emb), rows * d);
        float *out = tv_xmalloc((size_t)(rows * d) * sizeof(float));
        CHECK_OK(prompt_embed(m, &p, (const float *)img->data, n_img, out, rows));
        CHECK(memcmp(out, emb->data, (size_t)(rows * d) * sizeof(float)) == 0);
        CHECK_FAILS(prompt_embed(m, &p, NULL, n_img, out, rows));
        CHECK_EQ_INT(prompt_embed(m, &p, (const float *)img->data, n_img, out, rows - 1),
                     TV_ELIMIT);
        free(out);
    }
    prompt_ids_free(&p);

    /* a question holding the image token stays text: still one image slot */
    CHECK_OK(prompt_first(mf, tok, "what is <ImageHere>?", &p));
    CHECK_EQ_INT(p.n_images, 1);
    prompt_ids_free(&p);

    /* the next turn: the previous answer, then the question; no image; ids == encoding the
     * formatted text in one piece */
    CHECK_OK(prompt_next(mf, tok, "It is black.", "[caption] And the dog?", &p));
    CHECK_EQ_INT(p.n_images, 0);
    CHECK_OK(prompt_format(mf->chat.next, "[caption] And the dog?", "It is black.", &text));
    CHECK_EQ_STR(text, "It is black.<s>[INST] [caption] And the dog? [/INST]");
    int32_t *ids = NULL;
    size_t n = 0;
    if (text)
        CHECK_OK(tok_encode(tok, text, strlen(text), &ids, &n));
    CHECK(n == p.n && n > 0 && memcmp(ids, p.ids, n * sizeof *ids) == 0);
    if (m) /* no image needed for a text-only turn */
    {
        float *out = tv_xmalloc(p.n * 80 * sizeof(float));
        CHECK_OK(prompt_embed(m, &p, NULL, 0, out, (int64_t)p.n));
        free(out);
    }
    free(ids);
    free(text);
    prompt_ids_free(&p);
    prompt_ids_free(NULL);

    /* invalid UTF-8 in the question is the tokenizer's error, passed on */
    CHECK_FAILS(prompt_first(mf, tok, "bad \xff byte", &p));
    CHECK(p.ids == NULL && p.n == 0);

    phi_free(m);
    kern_free(be);
    st_free(phi);
    st_free(gt);
    free(zeros);
    free(gold);
out:
    cJSON_Delete(root);
    free(json);
    manifest_free(mf);
    tok_free(tok);
}

int main(void) {
    test_format();
    test_tiny_prompt();
    return check_finish("test_prompt");
}
