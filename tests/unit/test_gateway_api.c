/* test_gateway_api — OpenAI request parsing and response building: base64 (RFC 4648 vectors),
 * data: URIs with real test images (SHA-256 and sizes from Python), the bad-input list with the
 * HTTP status each gets, sampling fields and their "not given" values, embeddings input shapes,
 * response JSON read back with cJSON, pooling by hand-computed numbers. */
#include <cjson/cJSON.h>

#include "api.h"
#include "check.h"
#include "mapfile.h"

static const gw_limits LIM = {4, 40u << 20, 8u << 20, 1000};

static char *b64(const uint8_t *p, size_t n) {
    static const char *A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(4 * ((n + 2) / 3) + 1), *q = o;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *q++ = A[v >> 18 & 63], *q++ = A[v >> 12 & 63];
        *q++ = i + 1 < n ? A[v >> 6 & 63] : '=';
        *q++ = i + 2 < n ? A[v & 63] : '=';
    }
    *q = 0;
    return o;
}

/* "data:MIME;base64,..." of a test image file (malloc'd). */
static char *data_uri(const char *rel, const char *mime) {
    char *buf = NULL;
    size_t len = 0;
    if (mf_read_all(check_data(rel), 64u << 20, &buf, &len)) {
        CHECK_MSG(0, "cannot read %s", rel);
        return strdup("data:,");
    }
    char *enc = b64((const uint8_t *)buf, len);
    char *out = malloc(strlen(enc) + 64);
    sprintf(out, "data:%s;base64,%s", mime, enc);
    free(enc), free(buf);
    return out;
}

static void test_base64(void) {
    static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *dec[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    uint8_t out[16];
    size_t n;
    for (int i = 0; i < 7; i++) {
        CHECK_OK(gw_base64_decode(enc[i], strlen(enc[i]), out, &n));
        CHECK(n == strlen(dec[i]) && !memcmp(out, dec[i], n));
    }
    CHECK_OK(gw_base64_decode("Zm9v\r\nYmE", 9, out, &n)); /* no padding, line breaks */
    CHECK(n == 5 && !memcmp(out, "fooba", 5));
    CHECK_FAILS(gw_base64_decode("Zm9v*mFy", 8, out, &n));
    CHECK_FAILS(gw_base64_decode("Zm9vY", 5, out, &n));      /* 6 stray bits */
    CHECK_FAILS(gw_base64_decode("Zg==Zg==", 8, out, &n));   /* data after padding */
    CHECK_FAILS(gw_base64_decode("Zm8==", 5, out, &n));      /* wrong padding */
    CHECK_FAILS(gw_base64_decode("Zh==", 4, out, &n));       /* non-zero trailing bits */
}

static void test_images(void) {
    gw_image im;
    gw_error e;
    char *png = data_uri("image/p_pal8.png", "image/png");
    CHECK_OK(gw_api_load_image(png, &LIM, "x", &im, &e));
    CHECK_EQ_INT(im.len, 2547);
    CHECK_EQ_INT(im.width, 67);
    CHECK_EQ_INT(im.height, 45);
    CHECK_EQ_STR(im.sha_hex, "6308cade70ef2d5d48c6891aad3f7cab47b89c3b14252e5c08094a126113452e");
    free(im.data);
    char *jpg = data_uri("image/j_641x479.jpg", "image/jpeg");
    CHECK_OK(gw_api_load_image(jpg, &LIM, "x", &im, &e));
    CHECK_EQ_INT(im.width, 641);
    CHECK_EQ_STR(im.sha_hex, "3e9dab125173e4c5a063e4dcd7f994da3c3b1ba2ab8f35f5423b167b703168dd");
    free(im.data);
    gw_limits small = LIM;
    small.max_image_bytes = 1000;
    CHECK(gw_api_load_image(jpg, &small, "x", &im, &e) < 0);
    CHECK_EQ_INT(e.status, 413);
    small = LIM;
    small.max_image_pixels = 641 * 479 - 1;
    CHECK(gw_api_load_image(jpg, &small, "x", &im, &e) < 0);
    CHECK_EQ_INT(e.status, 413);
    CHECK_EQ_STR(e.code, "image_too_large");
    free(png), free(jpg);

    struct { const char *uri_or_file; int status; const char *code; } bad[] = {
        {"http://example.com/cat.png", 400, "invalid_image_url"},
        {"https://example.com/cat.png", 400, "invalid_image_url"},
        {"file:///etc/passwd", 400, "invalid_image_url"},
        {"data:image/png,rawbytes", 400, "invalid_image_url"},
        {"data:image/png;base64", 400, "invalid_image_url"},
        {"data:image/png;base64,!!!notbase64", 400, "invalid_base64"},
        {"data:image/png;base64,", 400, "invalid_image"},
        {"@image/bad.gif", 400, "invalid_image"},
        {"@image/bad_garbage.bin", 400, "invalid_image"},
        {"@image/bad_png_sig_only.png", 400, "invalid_image"},
        {"@image/bad_bomb.png", 413, "image_too_large"},  /* header claims 100000 x 100000 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *u = bad[i].uri_or_file[0] == '@' ? data_uri(bad[i].uri_or_file + 1, "image/png")
                                               : strdup(bad[i].uri_or_file);
        int rc = gw_api_load_image(u, &LIM, "input", &im, &e);
        CHECK_MSG(rc < 0 && e.status == bad[i].status && !strcmp(e.code, bad[i].code),
                  "%s -> %d %s (%s)", bad[i].uri_or_file, e.status, e.code, e.message);
        CHECK(im.data == NULL);
        CHECK_EQ_STR(e.param, "input");
        free(u);
    }
}

static char *chat_body(const char *extra, const char *content) {
    char *b = malloc(strlen(content) + strlen(extra) + 256);
    sprintf(b, "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":%s}]%s}", content, extra);
    return b;
}

static void test_chat(void) {
    char *png = data_uri("image/p_pal8.png", "image/png");
    char *jpg = data_uri("image/j_641x479.jpg", "image/jpeg");
    size_t cap = strlen(png) + strlen(jpg) + 4096;
    char *body = malloc(cap);
    snprintf(body, cap,
             "{\"model\":\"tiny\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
             "\"max_completion_tokens\":64,\"temperature\":0,\"seed\":-1,\"top_k\":5,"
             "\"stop\":[\"###\",\"\\n\\n\"],\"messages\":["
             "{\"role\":\"system\",\"content\":\"be brief\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"compare\"},"
             "{\"type\":\"image_url\",\"image_url\":{\"url\":\"%s\"}},"
             "{\"type\":\"image_url\",\"image_url\":{\"url\":\"%s\",\"detail\":\"low\"}}]},"
             "{\"role\":\"assistant\",\"content\":null},"
             "{\"role\":\"user\",\"content\":\"and?\"}]}", png, jpg);
    gw_chat_req r;
    gw_error e = {0};
    CHECK_OK(gw_api_parse_chat(body, strlen(body), &LIM, &r, &e));
    CHECK_EQ_STR(r.model, "tiny");
    CHECK_EQ_INT(r.stream, 1);
    CHECK_EQ_INT(r.include_usage, 1);
    CHECK_EQ_INT(r.n_messages, 4);
    CHECK_EQ_INT(r.n_images, 2);
    if (r.n_messages == 4 && r.n_images == 2) {
        CHECK_EQ_STR(r.messages[0].role, "system");
        CHECK_EQ_STR(r.messages[0].parts[0].text, "be brief");
        CHECK_EQ_INT(r.messages[0].parts[0].image, -1);
        CHECK_EQ_INT(r.messages[1].n_parts, 3);
        CHECK_EQ_INT(r.messages[1].parts[1].image, 0);
        CHECK(r.messages[1].parts[1].text == NULL);
        CHECK_EQ_INT(r.messages[1].parts[2].image, 1);
        CHECK_EQ_INT(r.messages[2].n_parts, 0);
        CHECK_EQ_STR(r.messages[3].parts[0].text, "and?");
        CHECK_EQ_INT(r.images[1].width, 641);
    }
    CHECK_EQ_INT(r.sampling.max_tokens, 64);
    CHECK_NEAR(r.sampling.temperature, 0, 0);
    CHECK_NEAR(r.sampling.repetition_penalty, 1, 0); /* greedy: plain argmax */
    CHECK(r.sampling.top_p < 0);
    CHECK_EQ_INT(r.sampling.top_k, 5);
    CHECK_EQ_INT(r.sampling.has_seed, 1);
    CHECK(r.sampling.seed == UINT64_MAX);
    CHECK_EQ_INT(r.sampling.n_stop, 2);
    if (r.sampling.n_stop == 2) CHECK_EQ_STR(r.sampling.stop[1], "\n\n");
    gw_chat_req_free(&r);
    gw_chat_req_free(&r); /* idempotent */

    /* defaults: nothing given -> "not given" values */
    char *b = chat_body("", "\"hi\"");
    CHECK_OK(gw_api_parse_chat(b, strlen(b), &LIM, &r, &e));
    CHECK(r.sampling.temperature < 0 && r.sampling.top_p < 0 && r.sampling.repetition_penalty < 0);
    CHECK_EQ_INT(r.sampling.max_tokens, 0);
    CHECK_EQ_INT(r.sampling.has_seed, 0);
    CHECK_EQ_INT(r.stream, 0);
    gw_chat_req_free(&r);
    free(b);
    b = chat_body(",\"stop\":\"END\",\"max_tokens\":1000,\"temperature\":0.7,\"model\":null", "\"hi\"");
    CHECK_OK(gw_api_parse_chat(b, strlen(b), &LIM, &r, &e));
    CHECK_EQ_INT(r.sampling.n_stop, 1);
    CHECK_EQ_INT(r.sampling.max_tokens, 1000);
    CHECK(r.sampling.repetition_penalty < 0);
    gw_chat_req_free(&r);
    free(b);

    /* the bad-input list */


    struct { const char *body; int status; const char *param; } bad[] = {
        {"{\"messages\":[", 400, ""},
        {"[1,2]", 400, ""},
        {"", 400, ""},
        {"{\"model\":\"m\"}", 400, "messages"},
        {"{\"messages\":[]}", 400, "messages"},
        {"{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", 400, "messages"},
        {"{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400, "messages"},
        {"{\"messages\":[{\"content\":\"x\"}]}", 400, "messages"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":7}]}", 400, "messages"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]}", 400, "messages"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400, "messages"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
         "{\"url\":\"https://x/y.png\"}}]}]}", 400, "messages"},
        {"{\"max_tokens\":1000000000,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "max_tokens"},
        {"{\"max_tokens\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "max_tokens"},
        {"{\"max_tokens\":-5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "max_tokens"},
        {"{\"max_tokens\":1.5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "max_tokens"},
        {"{\"max_tokens\":\"9\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "max_tokens"},
        {"{\"max_completion_tokens\":5000,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "max_completion_tokens"},
        {"{\"temperature\":3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "temperature"},
        {"{\"top_p\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "top_p"},
        {"{\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "n"},
        {"{\"stream\":\"yes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "stream"},
        {"{\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "stop"},
        {"{\"stop\":[\"\"],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "stop"},
        {"{\"model\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "model"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        int rc = gw_api_parse_chat(bad[i].body, strlen(bad[i].body), &LIM, &r, &e);
        CHECK_MSG(rc < 0 && e.status == bad[i].status && !strcmp(e.param, bad[i].param) &&
                      e.message[0],
                  "case %zu: %d param '%s' (%s)", i, e.status, e.param, e.message);
        CHECK(r.messages == NULL && r.images == NULL);
    }
    /* five images where four are allowed */
    size_t bcap = 5 * strlen(png) + 1024;
    char *five = malloc(bcap);
    int off = snprintf(five, bcap, "{\"messages\":[{\"role\":\"user\",\"content\":[");
    for (int i = 0; i < 5; i++)
        off += snprintf(five + off, bcap - (size_t)off,
                        "%s{\"type\":\"image_url\",\"image_url\":{\"url\":\"%s\"}}", i ? "," : "", png);
    snprintf(five + off, bcap - (size_t)off, "]}]}");
    CHECK(gw_api_parse_chat(five, strlen(five), &LIM, &r, &e) < 0);
    CHECK_EQ_STR(e.code, "too_many_images");
    free(five), free(body), free(png), free(jpg);

}

static void test_embeddings(void) {
    char *png = data_uri("image/p_pal8.png", "image/png");
    size_t cap = 3 * strlen(png) + 512;
    char *body = malloc(cap);
    gw_embed_req r;
    gw_error e;
    snprintf(body, cap, "{\"input\":\"%s\",\"full\":true}", png);
    CHECK_OK(gw_api_parse_embeddings(body, strlen(body), &LIM, &r, &e));
    CHECK_EQ_INT(r.n_images, 1);
    CHECK_EQ_INT(r.full, 1);
    CHECK(r.model == NULL);
    gw_embed_req_free(&r);
    snprintf(body, cap, "{\"model\":\"m\",\"input\":[\"%s\",{\"image_url\":{\"url\":\"%s\"}},"
                        "{\"type\":\"image_url\",\"image_url\":\"%s\"}]}", png, png, png);
    CHECK_OK(gw_api_parse_embeddings(body, strlen(body), &LIM, &r, &e));
    CHECK_EQ_INT(r.n_images, 3);
    CHECK_EQ_INT(r.full, 0);
    gw_embed_req_free(&r);
    const char *bad[] = {"{}", "{\"input\":[]}", "{\"input\":\"hello world\"}", "{\"input\":[7]}",
                         "{\"input\":\"data:x;base64,@@\"}", "{\"input\":\"x\",\"full\":1}", "nope"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = gw_api_parse_embeddings(bad[i], strlen(bad[i]), &LIM, &r, &e);
        CHECK_MSG(rc < 0 && e.status == 400, "%s -> %d", bad[i], e.status);
    }
    free(body), free(png);
}

static void test_responses(void) {
    char *s = gw_api_completion_json("chatcmpl-1", 1700000000, "tiny", "a \"cat\"\n", "length", 40, 7);
    cJSON *o = cJSON_Parse(s);
    CHECK(o != NULL);
    CHECK_EQ_STR(cJSON_GetObjectItem(o, "object")->valuestring, "chat.completion");
    cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "message"), "content")->valuestring, "a \"cat\"\n");
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "message"), "role")->valuestring, "assistant");
    CHECK_EQ_STR(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "length");
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "total_tokens")->valueint, 47);
    cJSON_Delete(o), free(s);

    s = gw_api_chunk_sse("chatcmpl-1", 1, "tiny", "assistant", "", NULL, 1);
    CHECK(!strncmp(s, "data: {", 7) && !strcmp(s + strlen(s) - 3, "}\n\n"));
    o = cJSON_Parse(s + 6);
    CHECK(o != NULL);
    CHECK_EQ_STR(cJSON_GetObjectItem(o, "object")->valuestring, "chat.completion.chunk");
    c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "delta"), "role")->valuestring, "assistant");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(c0, "finish_reason")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "usage")));
    cJSON_Delete(o), free(s);
    s = gw_api_chunk_sse("chatcmpl-1", 1, "tiny", NULL, NULL, "stop", 0);
    o = cJSON_Parse(s + 6);
    c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "delta"), "content") == NULL);
    CHECK(cJSON_GetObjectItem(o, "usage") == NULL);
    cJSON_Delete(o), free(s);
    s = gw_api_usage_sse("chatcmpl-1", 1, "tiny", 3, 4);
    o = cJSON_Parse(s + 6);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(o, "choices")), 0);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "completion_tokens")->valueint, 4);
    cJSON_Delete(o), free(s);

    gw_error e;
    gw_api_fail(&e, 429, "rate_limit", NULL, "slow down %d", 5);
    s = gw_api_error_json(&e);
    CHECK_EQ_STR(s, "{\"error\":{\"message\":\"slow down 5\",\"type\":\"rate_limit_error\","
                    "\"param\":null,\"code\":\"rate_limit\"}}");
    free(s);
    gw_api_fail(&e, 400, NULL, "model", "unknown model");
    s = gw_api_error_sse(&e);
    CHECK_EQ_STR(s, "data: {\"error\":{\"message\":\"unknown model\",\"type\":\"invalid_request_error\","
                    "\"param\":\"model\",\"code\":null}}\n\n");
    free(s);

    const char *names[] = {"tiny", "demo"};
    s = gw_api_models_json(names, 2, 5);
    o = cJSON_Parse(s);
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "data"), 1), "id")->valuestring, "demo");
    cJSON_Delete(o), free(s);
}

static void test_pool(void) {
    /* [[1,2],[3,4]] -> mean [2,3] -> / sqrt(13) */
    float f32[4] = {1, 2, 3, 4}, out[2];
    msg_embedding emb = {2, 2, MSG_EMB_F32, (uint8_t *)f32, sizeof f32};
    CHECK_OK(gw_api_pool(&emb, out));
    CHECK_NEAR(out[0], 2 / sqrt(13.0), 1e-7);
    CHECK_NEAR(out[1], 3 / sqrt(13.0), 1e-7);
    /* the same in f16: 1.0 = 0x3c00, 2.0 = 0x4000, 3.0 = 0x4200, 4.0 = 0x4400 */
    uint16_t f16[4] = {0x3c00, 0x4000, 0x4200, 0x4400};
    msg_embedding e16 = {2, 2, MSG_EMB_F16, (uint8_t *)f16, sizeof f16};
    CHECK_OK(gw_api_pool(&e16, out));
    CHECK_NEAR(out[1], 3 / sqrt(13.0), 1e-7);
    e16.len = 6;
    CHECK_FAILS(gw_api_pool(&e16, out));
    e16.len = 8, e16.dtype = 9;
    CHECK_FAILS(gw_api_pool(&e16, out));

    /* embeddings answer read back */
    gw_embed_req req = {0};
    gw_image im = {0};
    strcpy(im.sha_hex, "ab");
    req.images = &im, req.n_images = 1;
    float vec[2] = {0.6f, 0.8f};
    float *vecs[1] = {vec};
    const msg_embedding *full[1] = {&emb};
    int cached[1] = {1};
    char *s = gw_api_embeddings_json("m\"x", &req, vecs, full, cached, 2, 2);
    cJSON *o = cJSON_Parse(s);
    CHECK(o != NULL);
    CHECK_EQ_STR(cJSON_GetObjectItem(o, "model")->valuestring, "m\"x");
    cJSON *d0 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "data"), 0);
    CHECK_EQ_STR(cJSON_GetObjectItem(d0, "sha256")->valuestring, "ab");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(d0, "cached")));
    CHECK_NEAR(cJSON_GetArrayItem(cJSON_GetObjectItem(d0, "embedding"), 1)->valuedouble, 0.8, 1e-7);
    cJSON *fr = cJSON_GetArrayItem(cJSON_GetObjectItem(d0, "embedding_full"), 1);
    CHECK_NEAR(cJSON_GetArrayItem(fr, 0)->valuedouble, 3, 0);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "prompt_tokens")->valueint, 2);
    cJSON_Delete(o), free(s);
}

int main(void) {
    test_base64();
    test_images();
    test_chat();
    test_embeddings();
    test_responses();
    test_pool();
    return check_finish("test_gateway_api");
}
