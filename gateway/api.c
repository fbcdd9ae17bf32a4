/* api — see api.h. Request fields follow OpenAI's chat completions and embeddings APIs; the
 * extensions (top_k, repetition_penalty, "full") are documented in api.h and gateway.h. */
#include "api.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "err.h"
#include "hash.h"
#include "image.h"
#include "strbuf.h"

#define API_MAX_STOP 4
#define API_MAX_STOP_LEN 256
#define API_MAX_MESSAGES 256

/* ---- errors --------------------------------------------------------------------------------- */

int gw_api_fail(gw_error *e, int status, const char *code, const char *param, const char *fmt,
                ...) {
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return TV_EINVAL;
}

static const char *api_error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    case 504: return "timeout";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static cJSON *api_error_obj(const gw_error *e) {
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "message", e->message);
    cJSON_AddStringToObject(err, "type", api_error_type(e->status));
    if (e->param[0]) cJSON_AddStringToObject(err, "param", e->param);
    else cJSON_AddNullToObject(err, "param");
    if (e->code[0]) cJSON_AddStringToObject(err, "code", e->code);
    else cJSON_AddNullToObject(err, "code");
    return root;
}

/* cJSON_Print* result, or abort: it only fails on OOM. */
static char *api_print(cJSON *root) {
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    TV_ASSERT(s);
    return s;
}

char *gw_api_error_json(const gw_error *e) { return api_print(api_error_obj(e)); }

char *gw_api_error_sse(const gw_error *e) {
    char *j = gw_api_error_json(e);
    gw_sb b = {0};
    gw_sb_printf(&b, "data: %s\n\n", j);
    free(j);
    return gw_sb_take(&b);
}

/* ---- base64 and data: URIs ------------------------------------------------------------------ */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int gw_base64_decode(const char *s, size_t n, uint8_t *out, size_t *out_len) {
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0) return err_set(TV_EFORMAT, "invalid base64 character at offset %zu", i);
        if (pad) return err_set(TV_EFORMAT, "base64 data after '=' padding");
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* leftover bits: 0 (complete), 4 (last group had 2 chars: "=="), 2 (3 chars: "="); 6: a lone char */
    int want_pad = bits == 4 ? 2 : bits == 2 ? 1 : 0;
    if (bits == 6 || (pad && pad != want_pad))
        return err_set(TV_EFORMAT, "truncated base64 data");
    if (bits && (acc & ((1u << bits) - 1)))
        return err_set(TV_EFORMAT, "base64 data with stray trailing bits");
    *out_len = o;
    return TV_OK;
}

int gw_api_load_image(const char *url, const gw_limits *lim, const char *param, gw_image *out,
                      gw_error *e) {
    memset(out, 0, sizeof *out);
    if (!strncmp(url, "http://", 7) || !strncmp(url, "https://", 8))
        return gw_api_fail(e, 400, "invalid_image_url", param,
                           "image URLs are not fetched: send the image inline as a "
                           "data:image/...;base64,... URI");
    if (strncmp(url, "data:", 5) != 0)
        return gw_api_fail(e, 400, "invalid_image_url", param,
                           "image_url must be a data: URI (data:image/png;base64,...)");
    const char *comma = strchr(url, ',');
    if (!comma) return gw_api_fail(e, 400, "invalid_image_url", param, "data: URI without ','");
    size_t meta = (size_t)(comma - url);
    if (meta < 12 || strncmp(comma - 7, ";base64", 7) != 0)
        return gw_api_fail(e, 400, "invalid_image_url", param,
                           "data: URI must be base64-encoded (data:image/png;base64,...)");
    size_t n = strlen(comma + 1);
    if (n / 4 * 3 > lim->max_image_bytes + 3)
        return gw_api_fail(e, 413, "image_too_large", param,
                           "image is larger than the limit of %zu bytes", lim->max_image_bytes);
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf) return gw_api_fail(e, 503, "out_of_memory", param, "out of memory");
    size_t len = 0;
    if (gw_base64_decode(comma + 1, n, buf, &len)) {
        free(buf);
        return gw_api_fail(e, 400, "invalid_base64", param, "bad base64 in data: URI: %s",
                           err_msg());
    }
    if (len > lim->max_image_bytes) {
        free(buf);
        return gw_api_fail(e, 413, "image_too_large", param,
                           "image is larger than the limit of %zu bytes", lim->max_image_bytes);
    }
    img_limits il = {len + 1, 1u << 20, 1u << 20, lim->max_image_pixels};
    int rc = img_probe(buf, len, &il, NULL, &out->width, &out->height);
    if (rc) {
        int st = rc == TV_ELIMIT ? 413 : 400;
        gw_api_fail(e, st, st == 413 ? "image_too_large" : "invalid_image", param, "%s",
                    err_msg());
        free(buf);
        return TV_EINVAL;
    }
    if (hash_sha256(buf, len, out->sha)) {
        free(buf);
        return gw_api_fail(e, 500, "internal_error", param, "sha256: %s", err_msg());
    }
    hash_to_hex(out->sha, 32, out->sha_hex);
    out->data = buf;
    out->len = len;
    return TV_OK;
}

static void api_images_free(gw_image *im, size_t n) {
    for (size_t i = 0; i < n; i++) free(im[i].data);
    free(im);
}

/* ---- request helpers ------------------------------------------------------------------------ */

static cJSON *api_parse_root(const char *body, size_t len, gw_error *e) {
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) {
        gw_api_fail(e, 400, "invalid_json", NULL,
                    "the request body is not valid JSON (near byte %zu)",
                    cJSON_GetErrorPtr() && cJSON_GetErrorPtr() >= body
                        ? (size_t)(cJSON_GetErrorPtr() - body) : (size_t)0);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        gw_api_fail(e, 400, "invalid_json", NULL, "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

static cJSON *api_get(const cJSON *o, const char *k) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* Optional number field within [lo, hi]; absent leaves *out. integral: must be a whole number. */
static int api_number(const cJSON *o, const char *k, double lo, double hi, int integral,
                      double *out, gw_error *e) {
    cJSON *v = api_get(o, k);
    if (!v) return TV_OK;
    if (!cJSON_IsNumber(v) || isnan(v->valuedouble))
        return gw_api_fail(e, 400, "invalid_type", k, "'%s' must be a number", k);
    double d = v->valuedouble;
    if (integral && d != floor(d))
        return gw_api_fail(e, 400, "invalid_value", k, "'%s' must be an integer", k);
    if (d < lo || d > hi)
        return gw_api_fail(e, 400, "invalid_value", k, "'%s' must be between %g and %g", k, lo, hi);
    *out = d;
    return TV_OK;
}

static int api_bool(const cJSON *o, const char *k, int *out, gw_error *e) {
    cJSON *v = api_get(o, k);
    if (!v) return TV_OK;
    if (!cJSON_IsBool(v)) return gw_api_fail(e, 400, "invalid_type", k, "'%s' must be a boolean", k);
    *out = cJSON_IsTrue(v);
    return TV_OK;
}

static char *api_strdup(const char *s) {
    char *d = strdup(s ? s : "");
    TV_ASSERT(d);
    return d;
}

static int api_model(const cJSON *root, char **out, gw_error *e) {
    cJSON *m = api_get(root, "model");
    if (!m) return TV_OK;
    if (!cJSON_IsString(m)) return gw_api_fail(e, 400, "invalid_type", "model", "'model' must be a string");
    *out = api_strdup(m->valuestring);
    return TV_OK;
}

/* An image_url value: a string, or {"url": string}. */
static const char *api_image_url(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    cJSON *u = cJSON_IsObject(v) ? api_get(v, "url") : NULL;
    return cJSON_IsString(u) ? u->valuestring : NULL;
}

/* Appends the image at url to *images (growing it). */
static int api_add_image(const char *url, const gw_limits *lim, const char *param,
                         gw_image **images, size_t *n, gw_error *e) {
    if (*n >= lim->max_images)
        return gw_api_fail(e, 400, "too_many_images", param,
                           "at most %zu images per request", lim->max_images);
    gw_image im;
    if (gw_api_load_image(url, lim, param, &im, e)) return TV_EINVAL;
    *images = tv_xrealloc(*images, (*n + 1) * sizeof **images);
    (*images)[(*n)++] = im;
    return TV_OK;
}

/* ---- chat ----------------------------------------------------------------------------------- */

static void api_part_add(msg_chat *m, const char *text, int32_t image) {
    m->parts = tv_xrealloc(m->parts, (m->n_parts + 1) * sizeof *m->parts);
    m->parts[m->n_parts].text = text ? api_strdup(text) : NULL;
    m->parts[m->n_parts].image = image;
    m->n_parts++;
}

static int api_content_part(const cJSON *part, const gw_limits *lim, gw_chat_req *r,
                            msg_chat *m, gw_error *e) {
    cJSON *type = api_get(part, "type");
    if (!cJSON_IsObject(part) || !cJSON_IsString(type))
        return gw_api_fail(e, 400, "invalid_type", "messages",
                           "each content part must be an object with a \"type\"");
    if (!strcmp(type->valuestring, "text")) {
        cJSON *t = api_get(part, "text");
        if (!cJSON_IsString(t))
            return gw_api_fail(e, 400, "invalid_type", "messages", "text part without \"text\" string");
        api_part_add(m, t->valuestring, -1);
        return TV_OK;
    }
    if (!strcmp(type->valuestring, "image_url")) {
        const char *url = api_image_url(api_get(part, "image_url"));
        if (!url)
            return gw_api_fail(e, 400, "invalid_type", "messages",
                               "image_url part without {\"image_url\": {\"url\": ...}}");
        if (api_add_image(url, lim, "messages", &r->images, &r->n_images, e)) return TV_EINVAL;
        api_part_add(m, NULL, (int32_t)(r->n_images - 1));
        return TV_OK;
    }
    return gw_api_fail(e, 400, "invalid_value", "messages",
                       "content part type \"%.40s\" is not supported (text, image_url)",
                       type->valuestring);
}

static int api_message(const cJSON *jm, const gw_limits *lim, gw_chat_req *r, gw_error *e) {
    cJSON *role = api_get(jm, "role"), *content = api_get(jm, "content");
    if (!cJSON_IsObject(jm) || !cJSON_IsString(role))
        return gw_api_fail(e, 400, "invalid_type", "messages", "each message needs a \"role\" string");
    const char *rs = role->valuestring;
    if (!strcmp(rs, "developer")) rs = "system";
    if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))
        return gw_api_fail(e, 400, "invalid_value", "messages",
                           "role \"%.40s\" is not supported (system, user, assistant)", rs);
    msg_chat *m = &r->messages[r->n_messages++];
    m->role = api_strdup(rs);
    if (!content) {
        if (strcmp(rs, "assistant"))
            return gw_api_fail(e, 400, "invalid_value", "messages", "a %s message needs content", rs);
        return TV_OK;
    }
    if (cJSON_IsString(content)) {
        api_part_add(m, content->valuestring, -1);
        return TV_OK;
    }
    if (!cJSON_IsArray(content))
        return gw_api_fail(e, 400, "invalid_type", "messages",
                           "content must be a string or an array of parts");
    const cJSON *p;
    cJSON_ArrayForEach(p, content) {
        if (api_content_part(p, lim, r, m, e)) return TV_EINVAL;
    }
    return TV_OK;
}

static int api_messages(const cJSON *root, const gw_limits *lim, gw_chat_req *r, gw_error *e) {
    cJSON *ms = api_get(root, "messages");
    if (!cJSON_IsArray(ms) || cJSON_GetArraySize(ms) == 0)
        return gw_api_fail(e, 400, "invalid_value", "messages",
                           "'messages' must be a non-empty array");
    int n = cJSON_GetArraySize(ms);
    if (n > API_MAX_MESSAGES)
        return gw_api_fail(e, 400, "invalid_value", "messages", "at most %d messages", API_MAX_MESSAGES);
    r->messages = tv_xcalloc((size_t)n, sizeof *r->messages);
    const cJSON *jm;
    int users = 0;
    cJSON_ArrayForEach(jm, ms) {
        if (api_message(jm, lim, r, e)) return TV_EINVAL;
        users += !strcmp(r->messages[r->n_messages - 1].role, "user");
    }
    if (!users) return gw_api_fail(e, 400, "invalid_value", "messages", "no user message");
    return TV_OK;
}

static int api_stop(const cJSON *root, msg_sampling *s, gw_error *e) {
    cJSON *st = api_get(root, "stop");
    if (!st) return TV_OK;
    const cJSON *one = cJSON_IsString(st) ? st : NULL;
    if (!one && !cJSON_IsArray(st))
        return gw_api_fail(e, 400, "invalid_type", "stop", "'stop' must be a string or an array of strings");
    int n = one ? 1 : cJSON_GetArraySize(st);
    if (n > API_MAX_STOP) return gw_api_fail(e, 400, "invalid_value", "stop", "at most %d stop strings", API_MAX_STOP);
    s->stop = tv_xcalloc((size_t)(n ? n : 1), sizeof *s->stop);
    for (int i = 0; i < n; i++) {
        const cJSON *v = one ? one : cJSON_GetArrayItem(st, i);
        if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) > API_MAX_STOP_LEN)
            return gw_api_fail(e, 400, "invalid_value", "stop",
                               "stop strings must be non-empty strings of at most %d bytes",
                               API_MAX_STOP_LEN);
        s->stop[s->n_stop++] = api_strdup(v->valuestring);
    }
    return TV_OK;
}

static int api_sampling(const cJSON *root, const gw_limits *lim, msg_sampling *s, gw_error *e) {
    double temp = -1, top_p = -1, top_k = 0, rep = -1, seed = NAN, mt = 0, n = 1;
    double mt_limit = lim->max_tokens_limit;
    if (api_number(root, "temperature", 0, 2, 0, &temp, e) ||
        api_number(root, "top_p", 0, 1, 0, &top_p, e) ||
        api_number(root, "top_k", 0, 1e6, 1, &top_k, e) ||
        api_number(root, "repetition_penalty", 0.01, 10, 0, &rep, e) ||
        api_number(root, "seed", -9.2e18, 1.8e19, 1, &seed, e) ||
        api_number(root, "n", 1, 1, 1, &n, e))
        return TV_EINVAL;
    const char *mt_key = api_get(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (api_number(root, mt_key, -1e18, 1e18, 1, &mt, e)) return TV_EINVAL;
    if (api_get(root, mt_key) && (mt < 1 || mt > mt_limit))
        return gw_api_fail(e, 400, "invalid_value", mt_key,
                           "'%s' must be between 1 and %u", mt_key, lim->max_tokens_limit);
    if (api_get(root, "top_p") && top_p <= 0)
        return gw_api_fail(e, 400, "invalid_value", "top_p", "'top_p' must be > 0");
    s->temperature = (float)temp;
    s->top_p = (float)top_p;
    s->top_k = (uint32_t)top_k;
    /* greedy without an explicit penalty is plain argmax, as `tinyvlm ask --greedy` */
    s->repetition_penalty = (float)(rep < 0 && temp == 0 ? 1.0 : rep);
    s->max_tokens = (uint32_t)mt;
    if (!isnan(seed)) {
        s->has_seed = 1;
        s->seed = seed < 0 ? (uint64_t)(int64_t)seed : (uint64_t)seed;
    }
    return api_stop(root, s, e);
}

int gw_api_parse_chat(const char *body, size_t len, const gw_limits *lim, gw_chat_req *out,
                      gw_error *e) {
    memset(out, 0, sizeof *out);
    cJSON *root = api_parse_root(body, len, e);
    if (!root) return TV_EINVAL;
    int rc = api_model(root, &out->model, e);
    if (!rc) rc = api_sampling(root, lim, &out->sampling, e);
    if (!rc) rc = api_bool(root, "stream", &out->stream, e);
    cJSON *so = api_get(root, "stream_options");
    if (!rc && so && !cJSON_IsObject(so))
        rc = gw_api_fail(e, 400, "invalid_type", "stream_options", "'stream_options' must be an object");
    if (!rc && so) rc = api_bool(so, "include_usage", &out->include_usage, e);
    if (!rc) rc = api_messages(root, lim, out, e);
    cJSON_Delete(root);
    if (rc) gw_chat_req_free(out);
    return rc;
}

void gw_chat_req_free(gw_chat_req *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_messages; i++) {
        for (size_t j = 0; j < r->messages[i].n_parts; j++) free(r->messages[i].parts[j].text);
        free(r->messages[i].parts);
        free(r->messages[i].role);
    }
    free(r->messages);
    for (size_t i = 0; i < r->sampling.n_stop; i++) free(r->sampling.stop[i]);
    free(r->sampling.stop);
    api_images_free(r->images, r->n_images);
    free(r->model);
    memset(r, 0, sizeof *r);
}

/* ---- embeddings ----------------------------------------------------------------------------- */

int gw_api_parse_embeddings(const char *body, size_t len, const gw_limits *lim,
                            gw_embed_req *out, gw_error *e) {
    memset(out, 0, sizeof *out);
    cJSON *root = api_parse_root(body, len, e);
    if (!root) return TV_EINVAL;
    int rc = api_model(root, &out->model, e);
    if (!rc) rc = api_bool(root, "full", &out->full, e);
    cJSON *in = api_get(root, "input");
    if (!rc && !in)
        rc = gw_api_fail(e, 400, "invalid_value", "input", "'input' is required (image data: URIs)");
    if (!rc && cJSON_IsArray(in) && cJSON_GetArraySize(in) == 0)
        rc = gw_api_fail(e, 400, "invalid_value", "input", "'input' is an empty array");
    const cJSON *item = cJSON_IsArray(in) ? in->child : in;
    for (; !rc && item; item = cJSON_IsArray(in) ? item->next : NULL) {
        const char *url = cJSON_IsString(item) ? item->valuestring
                          : cJSON_IsObject(item) ? api_image_url(api_get(item, "image_url")) : NULL;
        if (!url) {
            rc = gw_api_fail(e, 400, "invalid_type", "input",
                             "each input must be an image data: URI or {\"image_url\": {\"url\": ...}}");
            break;
        }
        if (cJSON_IsString(item) && strncmp(url, "data:", 5) && strncmp(url, "http", 4)) {
            rc = gw_api_fail(e, 400, "invalid_value", "input",
                             "this model embeds images: input must be image data: URIs, not text");
            break;
        }
        rc = api_add_image(url, lim, "input", &out->images, &out->n_images, e);
    }
    cJSON_Delete(root);
    if (rc) gw_embed_req_free(out);
    return rc;
}

void gw_embed_req_free(gw_embed_req *r) {
    if (!r) return;
    api_images_free(r->images, r->n_images);
    free(r->model);
    memset(r, 0, sizeof *r);
}

/* ---- responses ------------------------------------------------------------------------------ */

static void api_usage(cJSON *o, uint32_t p, uint32_t c) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", p);
    cJSON_AddNumberToObject(u, "completion_tokens", c);
    cJSON_AddNumberToObject(u, "total_tokens", (double)p + c);
}

static cJSON *api_head(const char *id, const char *object, long long created, const char *model) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    return o;
}

char *gw_api_completion_json(const char *id, long long created, const char *model,
                             const char *text, const char *finish, uint32_t prompt_tokens,
                             uint32_t completion_tokens) {
    cJSON *o = api_head(id, "chat.completion", created, model);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON *m = cJSON_AddObjectToObject(c, "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "content", text ? text : "");
    cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddStringToObject(c, "finish_reason", finish && *finish ? finish : "stop");
    api_usage(o, prompt_tokens, completion_tokens);
    return api_print(o);
}

static char *api_sse(cJSON *o) {
    char *j = api_print(o);
    gw_sb b = {0};
    gw_sb_printf(&b, "data: %s\n\n", j);
    free(j);
    return gw_sb_take(&b);
}

char *gw_api_chunk_sse(const char *id, long long created, const char *model, const char *role,
                       const char *content, const char *finish, int with_usage_null) {
    cJSON *o = api_head(id, "chat.completion.chunk", created, model);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON *d = cJSON_AddObjectToObject(c, "delta");
    if (role) cJSON_AddStringToObject(d, "role", role);
    if (content) cJSON_AddStringToObject(d, "content", content);
    cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    if (with_usage_null) cJSON_AddNullToObject(o, "usage");
    return api_sse(o);
}

char *gw_api_usage_sse(const char *id, long long created, const char *model,
                       uint32_t prompt_tokens, uint32_t completion_tokens) {
    cJSON *o = api_head(id, "chat.completion.chunk", created, model);
    cJSON_AddArrayToObject(o, "choices");
    api_usage(o, prompt_tokens, completion_tokens);
    return api_sse(o);
}

static float api_value(const msg_embedding *emb, size_t i) {
    if (emb->dtype == MSG_EMB_F32) {
        float f;
        memcpy(&f, emb->data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, emb->data + 2 * i, 2);
    return dtype_f16_to_f32(h);
}

static int api_emb_ok(const msg_embedding *emb) {
    size_t es = emb->dtype == MSG_EMB_F32 ? 4 : emb->dtype == MSG_EMB_F16 ? 2 : 0;
    return es && emb->data && emb->rows && emb->dim &&
           (uint64_t)emb->rows * emb->dim * es == emb->len;
}

int gw_api_pool(const msg_embedding *emb, float *out) {
    if (!api_emb_ok(emb))
        return err_set(TV_EINVAL, "embedding [%u, %u] dtype %u has %zu bytes", emb->rows,
                       emb->dim, emb->dtype, emb->len);
    double norm = 0;
    for (uint32_t d = 0; d < emb->dim; d++) {
        double s = 0;
        for (uint32_t r = 0; r < emb->rows; r++) s += api_value(emb, (size_t)r * emb->dim + d);
        out[d] = (float)(s / emb->rows);
        norm += (double)out[d] * out[d];
    }
    norm = sqrt(norm);
    for (uint32_t d = 0; d < emb->dim && norm > 0; d++) out[d] = (float)(out[d] / norm);
    return TV_OK;
}

/* A float array as JSON, %.9g (round-trips a float) and finite only. */
static void api_floats(gw_sb *b, const float *v, size_t n) {
    gw_sb_append(b, "[", 1);
    for (size_t i = 0; i < n; i++)
        gw_sb_printf(b, "%s%.9g", i ? "," : "", isfinite(v[i]) ? (double)v[i] : 0.0);
    gw_sb_append(b, "]", 1);
}

char *gw_api_embeddings_json(const char *model, const gw_embed_req *req, float *const *vectors,
                             const msg_embedding *const *full, const int *cached, uint32_t dim,
                             uint32_t rows) {
    gw_sb b = {0};
    char *mj = api_print(cJSON_CreateString(model ? model : "")); /* JSON-escaped name */
    gw_sb_printf(&b, "{\"object\":\"list\",\"data\":[");
    uint32_t row_cap = dim;
    for (size_t i = 0; full && i < req->n_images; i++)
        if (full[i] && full[i]->dim > row_cap) row_cap = full[i]->dim;
    float *row = tv_xmalloc((size_t)(row_cap ? row_cap : 1) * sizeof *row);
    for (size_t i = 0; i < req->n_images; i++) {
        gw_sb_printf(&b, "%s{\"object\":\"embedding\",\"index\":%zu,\"sha256\":\"%s\"",
                     i ? "," : "", i, req->images[i].sha_hex);
        if (cached) gw_sb_printf(&b, ",\"cached\":%s", cached[i] ? "true" : "false");
        gw_sb_printf(&b, ",\"embedding\":");
        api_floats(&b, vectors[i], dim);
        if (full && full[i] && api_emb_ok(full[i])) {
            gw_sb_printf(&b, ",\"embedding_full\":[");
            for (uint32_t r = 0; r < full[i]->rows; r++) {
                for (uint32_t d = 0; d < full[i]->dim; d++)
                    row[d] = api_value(full[i], (size_t)r * full[i]->dim + d);
                if (r) gw_sb_append(&b, ",", 1);
                api_floats(&b, row, full[i]->dim);
            }
            gw_sb_append(&b, "]", 1);
        }
        gw_sb_append(&b, "}", 1);
    }
    free(row);
    size_t toks = (size_t)rows * req->n_images;
    gw_sb_printf(&b, "],\"model\":%s,\"usage\":{\"prompt_tokens\":%zu,\"total_tokens\":%zu}}",
                 mj, toks, toks);
    free(mj);
    return gw_sb_take(&b);
}

char *gw_api_models_json(const char *const *names, size_t n, long long created) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    for (size_t i = 0; i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", names[i]);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", (double)created);
        cJSON_AddStringToObject(m, "owned_by", "tinyvlm");
        cJSON_AddItemToArray(data, m);
    }
    return api_print(o);
}
