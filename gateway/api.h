/* api — the OpenAI-compatible JSON of the gateway, without any networking: parsing
 * /v1/chat/completions and /v1/embeddings request bodies into checked C structs (images decoded
 * from data: URIs, hashed, their headers probed against the limits), and building the response
 * bodies (completion, stream chunks, embeddings, models, errors).
 *
 * Every parse failure fills a gw_error with the HTTP status and OpenAI error fields, so the
 * caller only sends gw_api_error_json(err) with err->status. */
#ifndef TV_GW_API_H
#define TV_GW_API_H

#include <stddef.h>
#include <stdint.h>

#include "msg.h"

/* An OpenAI error: {"error":{"message","type","param","code"}} sent with HTTP status. */
typedef struct {
    int status;          /* 400, 401, 404, 405, 413, 415, 429, 500, 503, 504 */
    char code[48];       /* e.g. "invalid_image"; "" = null */
    char param[48];      /* the request field at fault; "" = null */
    char message[512];
} gw_error;

/* Fills e and returns TV_EINVAL (so parsers can `return gw_api_fail(...)`). param may be NULL. */
int gw_api_fail(gw_error *e, int status, const char *code, const char *param, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));
/* The error object as JSON (malloc'd; caller frees). type follows from the status. */
char *gw_api_error_json(const gw_error *e);

/* Limits applied while parsing. */
typedef struct {
    size_t max_images;          /* per request */
    uint64_t max_image_pixels;  /* from the image header */
    size_t max_image_bytes;     /* decoded size of one image */
    uint32_t max_tokens_limit;  /* max_tokens above this is refused */
} gw_limits;

/* One image of a request: its bytes (malloc'd), SHA-256 and header size. */
typedef struct {
    uint8_t *data;
    size_t len;
    uint8_t sha[32];
    char sha_hex[65];
    int width, height;
} gw_image;

typedef struct {
    char *model;              /* NULL when the request named none */
    msg_chat *messages;       /* roles and parts, strings owned; image parts index images */
    size_t n_messages;
    gw_image *images;         /* in the order the parts hold them */
    size_t n_images;
    msg_sampling sampling;    /* unset floats < 0, max_tokens 0 = the model's default */
    int stream, include_usage;
} gw_chat_req;

typedef struct {
    char *model;
    gw_image *images;
    size_t n_images;
    int full;                 /* "full": true -> embedding_full in the answer */
} gw_embed_req;

/* Strict base64 (standard alphabet; whitespace skipped; padding optional). out needs
 * 3 * (n / 4) + 3 bytes. Returns 0 and *out_len, or TV_EFORMAT. */
int gw_base64_decode(const char *s, size_t n, uint8_t *out, size_t *out_len);

/* Decodes "data:<mime>;base64,<payload>" into a malloc'd buffer and probes the image header.
 * Returns 0 or TV_EINVAL with e filled (400 not a data: URI / bad base64 / not an image,
 * 413 too many bytes or pixels). */
int gw_api_load_image(const char *url, const gw_limits *lim, const char *param, gw_image *out,
                      gw_error *e);

/* Parses a chat completion request. Returns 0 and *out (free with gw_chat_req_free), or
 * TV_EINVAL with e filled. */
int gw_api_parse_chat(const char *body, size_t len, const gw_limits *lim, gw_chat_req *out,
                      gw_error *e);
void gw_chat_req_free(gw_chat_req *r);

/* Parses an embeddings request: input is one data: URI, an array of them, or objects
 * {"image_url": {"url": ...}} / {"image_url": "..."}. */
int gw_api_parse_embeddings(const char *body, size_t len, const gw_limits *lim,
                            gw_embed_req *out, gw_error *e);
void gw_embed_req_free(gw_embed_req *r);

/* ---- responses (all malloc'd strings; the caller frees) ------------------------------------ */

/* A chat.completion object. finish is the worker's reason ("stop", "length", ...). */
char *gw_api_completion_json(const char *id, long long created, const char *model,
                             const char *text, const char *finish, uint32_t prompt_tokens,
                             uint32_t completion_tokens);

/* One SSE event "data: {chat.completion.chunk}\n\n". role and content may be NULL (left out of
 * the delta), finish NULL = null. with_usage_null adds "usage": null (include_usage streams). */
char *gw_api_chunk_sse(const char *id, long long created, const char *model, const char *role,
                       const char *content, const char *finish, int with_usage_null);
/* The final usage chunk of an include_usage stream (choices: []), as one SSE event. */
char *gw_api_usage_sse(const char *id, long long created, const char *model,
                       uint32_t prompt_tokens, uint32_t completion_tokens);
/* "data: {\"error\":{...}}\n\n". */
char *gw_api_error_sse(const gw_error *e);

/* Mean over rows of an embedding [rows, dim] (f16 or f32 data), then L2-normalised, into
 * out[dim]. Returns 0, or TV_EINVAL for a size that does not match. */
int gw_api_pool(const msg_embedding *emb, float *out);

/* One embeddings answer: vectors[i] is dim floats for image i; full[i] (NULL unless the request
 * asked) the whole embedding; cached[i] (cached NULL = left out) whether the cache had it. */
char *gw_api_embeddings_json(const char *model, const gw_embed_req *req, float *const *vectors,
                             const msg_embedding *const *full, const int *cached, uint32_t dim,
                             uint32_t rows);

/* {"object":"list","data":[{"id":name,"object":"model","created":...,"owned_by":"tinyvlm"}...]}. */
char *gw_api_models_json(const char *const *names, size_t n, long long created);

#endif
