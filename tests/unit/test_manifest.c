/* manifest: the TinyGPT-V stage-4 manifest loads with the numbers of MODELS.md, and every field
 * removed or mistyped in turn is refused with a message naming that field. */
#include <cjson/cJSON.h>

#include "check.h"
#include "manifest.h"
#include "mapfile.h"

static char *good_text;

static void test_good(void) {
    manifest *m = NULL;
    CHECK_OK(manifest_load(TV_TEST_DATA "/manifest", &m));
    if (!m) return;
    CHECK_EQ_INT(m->vision.image_size, 448);
    CHECK_EQ_INT(m->vision.layers, 39);
    CHECK_EQ_INT(m->vision.width / m->vision.heads, 88);
    CHECK_NEAR(m->vision.ln_eps, 1e-6, 1e-12);
    CHECK_NEAR(m->vision.std[2], 0.27577711, 1e-7);
    CHECK_EQ_INT(m->qformer.queries, 32);
    CHECK_NEAR(m->qformer.ln_eps, 1e-12, 1e-15);
    CHECK_EQ_INT(m->n_proj_dims, 3);
    CHECK_EQ_INT(manifest_image_tokens(m), 32);
    CHECK_EQ_INT(manifest_embed_dim(m), 2560);
    CHECK_EQ_INT(m->lm.head_dim, 80);
    CHECK_EQ_INT(m->lm.rotary_dims, 32);
    CHECK(m->lm.qk_layernorm && m->lm.post_attn_rmsnorm && m->lm.lm_head_bias);
    CHECK_EQ_INT(m->chat.n_stop_token_ids, 2);
    CHECK_EQ_INT(m->chat.stop_token_ids[0], 21017);
    CHECK_EQ_INT(m->chat.n_stop_strings, 3);
    CHECK_EQ_STR(m->chat.stop_strings[1], "Assistant:");
    CHECK_NEAR(m->chat.defaults.repetition_penalty, 1.05, 1e-6);
    CHECK_EQ_STR(m->lm_path, TV_TEST_DATA "/manifest/lm.safetensors");
    manifest_free(m);
    manifest_free(NULL);
}

/* Parses the good manifest after edit() changed it; expects failure mentioning `needle`. */
static void expect_refused(const char *sect, const char *key, cJSON *replacement,
                           const char *needle) {
    cJSON *root = cJSON_Parse(good_text);
    cJSON *obj = root;
    if (sect) {
        char path[128];
        snprintf(path, sizeof path, "%s", sect);
        for (char *tok = strtok(path, "."); tok; tok = strtok(NULL, "."))
            obj = cJSON_GetObjectItemCaseSensitive(obj, tok);
    }
    if (replacement)
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, replacement);
    else
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    char *text = cJSON_PrintUnformatted(root);
    manifest *m = NULL;
    err_clear();
    int rc = manifest_parse(text, "/x", &m);
    CHECK_MSG(rc < 0 && m == NULL, "%s.%s accepted", sect ? sect : "", key);
    CHECK_MSG(strstr(err_msg(), needle) != NULL, "message \"%s\" lacks \"%s\"", err_msg(), needle);
    free(text);
    cJSON_Delete(root);
}

static void test_bad(void) {
    static const struct { const char *sect, *key; } required[] = {
        {NULL, "format"}, {NULL, "format_version"}, {NULL, "fingerprint"}, {NULL, "files"},
        {"files", "lm"}, {NULL, "vision"}, {"vision", "patch_size"}, {"vision", "mean"},
        {"vision", "qformer"}, {"vision.qformer", "cross_every"}, {"vision", "proj_dims"},
        {"lm", "head_dim"}, {"lm", "rotary_dims"}, {"lm", "qk_layernorm"}, {"chat", "first"},
        {"chat", "stop_token_ids"}, {"chat.defaults", "top_p"},
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        expect_refused(required[i].sect, required[i].key, NULL, required[i].key);
    expect_refused("lm", "heads", cJSON_CreateString("32"), "lm.heads");
    expect_refused("lm", "heads", cJSON_CreateNumber(31), "heads (31) x head_dim (80)");
    expect_refused("lm", "arch", cJSON_CreateString("mamba"), "not supported");
    expect_refused("vision", "patch_size", cJSON_CreateNumber(13.5), "vision.patch_size");
    expect_refused("vision", "std", cJSON_CreateIntArray((int[]){1, 0, 1}, 3), "std must be > 0");
    expect_refused("vision", "proj_dims", cJSON_CreateIntArray((int[]){768, 2048}, 2), "lm.width");
    expect_refused(NULL, "format_version", cJSON_CreateNumber(2), "format_version 2");
    expect_refused("chat", "first", cJSON_CreateString("no image here {question}"), "image token");
    expect_refused("chat", "stop_token_ids", cJSON_CreateIntArray((int[]){51200}, 1), "not a token id");
    expect_refused("lm", "qk_layernorm", cJSON_CreateNumber(1), "true or false");

    manifest *m = NULL;
    CHECK_FAILS(manifest_parse("{\"format\": ", "/x", &m));
    CHECK_FAILS(manifest_parse("[1,2]", "/x", &m));
    CHECK_FAILS(manifest_load("/nonexistent-bundle", &m));
    CHECK(strstr(err_msg(), "/nonexistent-bundle") != NULL);
}

int main(void) {
    CHECK_OK(mf_read_all(TV_TEST_DATA "/manifest/tinyvlm.json", 1 << 20, &good_text, NULL));
    test_good();
    if (good_text) test_bad();
    free(good_text);
    return check_finish("test_manifest");
}
