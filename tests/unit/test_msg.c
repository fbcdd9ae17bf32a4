/* msg: every message type through a real ROUTER/DEALER pair over inproc and tcp, version
 * refusal, garbage and over-limit frames (hand-encoded protobuf, so the expectations do not come
 * from our own packer), vanished peers, and msg_poll on an eventfd. */
#include <pthread.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "check.h"
#include "clock.h"
#include "log.h"
#include "msg.h"

static int streq(const char *a, const char *b) {
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static int emb_eq(const msg_embedding *a, const msg_embedding *b) {
    if (!a->data || !b->data) return !a->data && !b->data;
    return a->rows == b->rows && a->dim == b->dim && a->dtype == b->dtype && a->len == b->len &&
           memcmp(a->data, b->data, a->len) == 0;
}

static int gen_eq(const msg_generate *a, const msg_generate *b) {
    if (a->id != b->id || a->n_messages != b->n_messages || a->n_images != b->n_images ||
        !streq(a->tenant, b->tenant) || a->deadline_unix_ms != b->deadline_unix_ms)
        return 0;
    for (size_t i = 0; i < a->n_messages; i++) {
        const msg_chat *x = &a->messages[i], *y = &b->messages[i];
        if (!streq(x->role, y->role) || x->n_parts != y->n_parts) return 0;
        for (size_t j = 0; j < x->n_parts; j++)
            if (!streq(x->parts[j].text, y->parts[j].text) || x->parts[j].image != y->parts[j].image)
                return 0;
    }
    for (size_t i = 0; i < a->n_images; i++)
        if (!streq(a->images[i].cache_key, b->images[i].cache_key) ||
            !emb_eq(&a->images[i].embedding, &b->images[i].embedding))
            return 0;
    const msg_sampling *s = &a->sampling, *t = &b->sampling;
    if (s->temperature != t->temperature || s->top_p != t->top_p || s->top_k != t->top_k ||
        s->repetition_penalty != t->repetition_penalty || s->seed != t->seed ||
        s->has_seed != t->has_seed || s->max_tokens != t->max_tokens || s->n_stop != t->n_stop)
        return 0;
    for (size_t i = 0; i < s->n_stop; i++)
        if (!streq(s->stop[i], t->stop[i])) return 0;
    return 1;
}

/* Field-by-field equality of a sent and a received message. */
static int msg_eq(const msg *a, const msg *b) {
    if (a->type != b->type || a->seq != b->seq) return 0;
    switch (a->type) {
    case MSG_HELLO: {
        const msg_hello *x = &a->u.hello, *y = &b->u.hello;
        return x->kind == y->kind && streq(x->worker_id, y->worker_id) && streq(x->model, y->model) &&
               streq(x->fingerprint, y->fingerprint) && streq(x->device, y->device) &&
               x->capacity == y->capacity && x->max_context == y->max_context &&
               x->emb_rows == y->emb_rows && x->emb_dim == y->emb_dim;
    }
    case MSG_HEARTBEAT: {
        const msg_heartbeat *x = &a->u.heartbeat, *y = &b->u.heartbeat;
        return x->load == y->load && x->capacity == y->capacity &&
               x->gpu_mem_used == y->gpu_mem_used && x->gpu_mem_total == y->gpu_mem_total &&
               x->kernel_seconds == y->kernel_seconds && x->items_done == y->items_done &&
               x->tokens_out == y->tokens_out && x->draining == y->draining &&
               x->last_seq == y->last_seq && x->n_held == y->n_held &&
               (!x->n_held || memcmp(x->held, y->held, x->n_held * sizeof *x->held) == 0);
    }
    case MSG_ENCODE: {
        const msg_encode *x = &a->u.encode, *y = &b->u.encode;
        return x->id == y->id && x->image_len == y->image_len &&
               (!x->image_len || memcmp(x->image, y->image, x->image_len) == 0) &&
               streq(x->cache_key, y->cache_key) && x->want_inline == y->want_inline;
    }
    case MSG_ENCODED: {
        const msg_encoded *x = &a->u.encoded, *y = &b->u.encoded;
        return x->id == y->id && x->cached == y->cached && x->seconds == y->seconds &&
               emb_eq(&x->embedding, &y->embedding);
    }
    case MSG_GENERATE: return gen_eq(&a->u.generate, &b->u.generate);
    case MSG_CHUNK: {
        const msg_chunk *x = &a->u.chunk, *y = &b->u.chunk;
        return x->id == y->id && streq(x->text, y->text) && x->n_tokens == y->n_tokens &&
               (!x->n_tokens || memcmp(x->tokens, y->tokens, x->n_tokens * 4) == 0) &&
               streq(x->finish_reason, y->finish_reason) && x->prompt_tokens == y->prompt_tokens &&
               x->completion_tokens == y->completion_tokens;
    }
    case MSG_CANCEL: return a->u.cancel_id == b->u.cancel_id;
    case MSG_ERROR:
        return a->u.error.id == b->u.error.id && a->u.error.status == b->u.error.status &&
               streq(a->u.error.code, b->u.error.code) && streq(a->u.error.message, b->u.error.message);
    case MSG_BYE: return streq(a->u.bye_reason, b->u.bye_reason);
    default: return 0;
    }
}

/* ---- the sample messages: every type, every field set ------------------------------------ */

static uint8_t g_image[300000];
static uint16_t g_emb16[32 * 40];
static float g_emb32[4 * 8];
static int32_t g_tokens[5] = {1, -2, 50256, 7, 0x7fffffff};
static char *g_stop[2] = {"\nUser:", "###"};
static msg_part g_parts_sys[1] = {{"You are terse. ünïcödé ✓", -1}};
static msg_part g_parts_user[4] = {{"", 0}, {"What is in", -1}, {NULL, 1}, {"these images?", -1}};
static msg_chat g_chat[2] = {{"system", g_parts_sys, 1}, {"user", g_parts_user, 4}};
static msg_image_ref g_imgs[2];
static uint64_t g_held[3] = {7, 0xfedcba9876543210ull, 1};

#define N_SAMPLES 10
static msg g_samples[N_SAMPLES];

static void make_samples(void) {
    for (size_t i = 0; i < sizeof g_image; i++) g_image[i] = (uint8_t)(i * 131 + 7);
    for (size_t i = 0; i < 32 * 40; i++) g_emb16[i] = (uint16_t)(i * 977);
    for (size_t i = 0; i < 32; i++) g_emb32[i] = (float)i * 0.25f - 3.0f;
    g_imgs[0] = (msg_image_ref){"emb:abc:0123", {32, 40, MSG_EMB_F16, (uint8_t *)g_emb16, sizeof g_emb16}};
    g_imgs[1] = (msg_image_ref){"emb:abc:4567", {0, 0, 0, NULL, 0}};
    msg *s = g_samples;
    s[0].type = MSG_HELLO;
    s[0].u.hello = (msg_hello){MSG_WORKER_LM, "host:12:abcd", "tinygptv", "f00d", "cpu-avx2 x4", 4, 512, 32, 2560};
    s[1].type = MSG_HEARTBEAT;
    s[1].u.heartbeat = (msg_heartbeat){3, 4, 1ull << 40, 1ull << 41, 12.5, 99, 123456789012ull, 1,
                                       0xabcdef0000000123ull, g_held, 3};
    s[2].type = MSG_ENCODE;
    s[2].u.encode = (msg_encode){0xfedcba9876543210ull, g_image, sizeof g_image, "emb:f00d:aa", 1};
    s[2].seq = 0xabcdef0000000124ull;
    s[3].type = MSG_ENCODED;
    s[3].u.encoded = (msg_encoded){42, 1, {4, 8, MSG_EMB_F32, (uint8_t *)g_emb32, sizeof g_emb32}, 0.125};
    s[4].type = MSG_GENERATE;
    s[4].u.generate = (msg_generate){
        .id = 7, .messages = g_chat, .n_messages = 2, .images = g_imgs, .n_images = 2,
        .sampling = {0.7f, 0.9f, 1.1f, 40, 64, 1234567ull, 1, g_stop, 2},
        .tenant = "acme", .deadline_unix_ms = 1700000000123ull};
    s[4].seq = 5;
    s[5].type = MSG_CHUNK;
    s[5].u.chunk = (msg_chunk){7, "Hello, wörld", g_tokens, 5, "stop", 17, 5};
    s[6].type = MSG_CANCEL;
    s[6].u.cancel_id = 77;
    s[7].type = MSG_ERROR;
    s[7].u.error = (msg_error){8, 503, "embedding_unavailable", "cache said no"};
    s[8].type = MSG_BYE;
    s[8].u.bye_reason = "SIGTERM";
    s[9].type = MSG_ENCODED; /* no inline embedding, empty strings */
    s[9].u.encoded = (msg_encoded){43, 0, {0, 0, 0, NULL, 0}, 0};
}

/* ---- round trips ----------------------------------------------------------------------------- */

static void roundtrip_all(msg_sock *gw, msg_sock *wk, const char *id, const char *what) {
    char peer[MSG_PEER_MAX];
    msg got;
    for (int i = 0; i < N_SAMPLES; i++) {
        /* worker -> gateway */
        CHECK_OK(msg_send(wk, NULL, &g_samples[i]));
        int rc = msg_recv(gw, 2000, &got, peer, sizeof peer);
        CHECK_MSG(rc == 0, "%s: %s up: %s", what, msg_type_name(g_samples[i].type), err_msg());
        CHECK_MSG(msg_eq(&g_samples[i], &got), "%s: %s up differs", what,
                  msg_type_name(g_samples[i].type));
        CHECK_EQ_STR(peer, id);
        msg_clear(&got);
        CHECK_EQ_INT(got.type, MSG_NONE);
        /* gateway -> worker */
        CHECK_OK(msg_send(gw, id, &g_samples[i]));
        rc = msg_recv(wk, 2000, &got, NULL, 0);
        CHECK_MSG(rc == 0, "%s: %s down: %s", what, msg_type_name(g_samples[i].type), err_msg());
        CHECK_MSG(msg_eq(&g_samples[i], &got), "%s: %s down differs", what,
                  msg_type_name(g_samples[i].type));
        msg_clear(&got);
    }
    /* received strings are never NULL */
    CHECK_OK(msg_send(wk, NULL, &g_samples[9]));
    msg bye = {.type = MSG_BYE};
    CHECK_OK(msg_send(wk, NULL, &bye));
    CHECK_OK(msg_recv(gw, 2000, &got, peer, sizeof peer));
    CHECK(got.type == MSG_ENCODED && got.u.encoded.embedding.data == NULL);
    msg_clear(&got);
    CHECK_OK(msg_recv(gw, 2000, &got, peer, sizeof peer));
    CHECK(got.type == MSG_BYE && got.u.bye_reason && got.u.bye_reason[0] == 0);
    msg_clear(&got);
    CHECK_EQ_INT(msg_recv(gw, 0, &got, peer, sizeof peer), TV_ETIMEOUT);
}

static void test_inproc(msg_ctx *c) {
    msg_sock *gw, *wk;
    CHECK_OK(msg_listen(c, "inproc://test-msg", &gw));
    CHECK_OK(msg_connect(c, "inproc://test-msg", "worker-one", &wk));
    roundtrip_all(gw, wk, "worker-one", "inproc");
    msg_close(wk);
    msg_close(gw);
}

/* `tinyvlm serve` may start a worker thread before the gateway binds: over inproc what it
 * sends meanwhile is queued and delivered once the gateway is there. */
static void test_inproc_connect_first(msg_ctx *c) {
    msg_sock *gw, *wk;
    CHECK_OK(msg_connect(c, "inproc://test-early", "early", &wk));
    msg hello = g_samples[0], got;
    CHECK_OK(msg_send(wk, NULL, &hello));
    CHECK_OK(msg_listen(c, "inproc://test-early", &gw));
    CHECK_OK(msg_send(wk, NULL, &g_samples[1]));
    char peer[MSG_PEER_MAX];
    for (int i = 0; i < 2; i++) {
        CHECK_OK(msg_recv(gw, 2000, &got, peer, sizeof peer));
        CHECK(msg_eq(&g_samples[i], &got));
        CHECK_EQ_STR(peer, "early");
        msg_clear(&got);
    }
    CHECK_EQ_INT(msg_recv(gw, 0, &got, peer, sizeof peer), TV_ETIMEOUT);
    msg_close(wk);
    msg_close(gw);
}

static msg_sock *listen_tcp(msg_ctx *c) {
    msg_sock *gw = NULL;
    CHECK_OK(msg_listen(c, "tcp://127.0.0.1:*", &gw));
    CHECK(gw && strncmp(msg_endpoint(gw), "tcp://127.0.0.1:", 16) == 0 &&
          atoi(msg_endpoint(gw) + 16) > 0);
    return gw;
}

static void test_tcp(msg_ctx *c) {
    msg_sock *gw = listen_tcp(c), *wk;
    if (!gw) return;
    CHECK_OK(msg_connect(c, msg_endpoint(gw), "10.0.0.1:4242:xyz", &wk));
    /* the connection is asynchronous: the first send waits for it (DEALER send timeout) */
    msg hb = {.type = MSG_HEARTBEAT};
    int sent = 0;
    for (int i = 0; i < 50 && !sent; i++) sent = msg_send(wk, NULL, &hb) == TV_OK;
    CHECK(sent);
    msg got;
    char peer[MSG_PEER_MAX];
    CHECK_OK(msg_recv(gw, 2000, &got, peer, sizeof peer));
    CHECK_EQ_INT(got.type, MSG_HEARTBEAT);
    msg_clear(&got);
    roundtrip_all(gw, wk, "10.0.0.1:4242:xyz", "tcp");
    /* a large image */
    size_t big = 5u << 20;
    uint8_t *img = tv_xmalloc(big);
    for (size_t i = 0; i < big; i++) img[i] = (uint8_t)(i ^ (i >> 9));
    msg enc = {.type = MSG_ENCODE};
    enc.u.encode = (msg_encode){.id = 1, .image = img, .image_len = big, .cache_key = "k"};
    CHECK_OK(msg_send(gw, "10.0.0.1:4242:xyz", &enc));
    CHECK_OK(msg_recv(wk, 5000, &got, NULL, 0));
    CHECK(msg_eq(&enc, &got));
    msg_clear(&got);
    free(img);
    msg_close(wk);
    msg_close(gw);
}

/* ---- refusals ---------------------------------------------------------------------------------- */

static void test_send_refusals(msg_ctx *c) {
    msg_sock *gw, *wk;
    CHECK_OK(msg_listen(c, "inproc://test-refuse", &gw));
    CHECK_OK(msg_connect(c, "inproc://test-refuse", "w", &wk));
    msg m = {.type = MSG_NONE};
    CHECK_FAILS(msg_send(wk, NULL, &m));
    /* embedding whose length does not match its shape */
    m.type = MSG_ENCODED;
    m.u.encoded = (msg_encoded){1, 0, {4, 8, MSG_EMB_F32, (uint8_t *)g_emb32, sizeof g_emb32 - 4}, 0};
    CHECK_EQ_INT(msg_send(wk, NULL, &m), TV_EINVAL);
    m.u.encoded.embedding = (msg_embedding){4, 8, 3, (uint8_t *)g_emb32, sizeof g_emb32};
    CHECK_EQ_INT(msg_send(wk, NULL, &m), TV_EINVAL);
    /* over the image count limit */
    msg_image_ref refs[MSG_MAX_IMAGES + 1];
    memset(refs, 0, sizeof refs);
    m.type = MSG_GENERATE;
    m.u.generate = (msg_generate){.id = 1, .images = refs, .n_images = MSG_MAX_IMAGES + 1};
    CHECK_EQ_INT(msg_send(gw, "w", &m), TV_EINVAL);
    /* a part naming an image that is not there */
    msg_part bad_part = {"x", 2};
    msg_chat chat = {"user", &bad_part, 1};
    m.u.generate = (msg_generate){.id = 1, .messages = &chat, .n_messages = 1, .images = refs, .n_images = 2};
    CHECK_EQ_INT(msg_send(gw, "w", &m), TV_EINVAL);
    /* a peer argument on the wrong kind of socket */
    m.type = MSG_CANCEL;
    m.u.cancel_id = 1;
    CHECK_EQ_INT(msg_send(gw, NULL, &m), TV_EINVAL);
    CHECK_EQ_INT(msg_send(wk, "x", &m), TV_EINVAL);
    /* a peer that never connected: at once */
    double t0 = clk_now_s() * 1e3;
    CHECK_EQ_INT(msg_send(gw, "nobody", &m), TV_EAGAIN);
    CHECK(clk_now_s() * 1e3 - t0 < 100);
    /* bad identities */
    msg_sock *x = NULL;
    CHECK_EQ_INT(msg_connect(c, "inproc://test-refuse", "", &x), TV_EINVAL);
    char longid[MSG_PEER_MAX + 1];
    memset(longid, 'a', MSG_PEER_MAX);
    longid[MSG_PEER_MAX] = 0;
    CHECK_EQ_INT(msg_connect(c, "inproc://test-refuse", longid, &x), TV_EINVAL);
    CHECK(x == NULL);
    CHECK_EQ_INT(msg_listen(c, "bogus://nowhere", &x), TV_EIO);
    msg_close(wk);
    msg_close(gw);
}

/* Hand-encoded Envelopes (protobuf wire format written out byte by byte). */
static const uint8_t V2_BYE[] = {0x08, 0x02, 0x52, 0x03, 0x0a, 0x01, 'x'};   /* version 2, Bye{"x"} */
static const uint8_t V1_CANCEL[] = {0x08, 0x01, 0x42, 0x02, 0x08, 0x07};      /* version 1, Cancel{7} */
static const uint8_t V2_ERROR[] = {0x08, 0x02, 0x4a, 0x02, 0x10, 0x01};       /* version 2, Error */
static const uint8_t NO_BODY[] = {0x08, 0x01};                                /* version 1, no body */
static const uint8_t GARBAGE[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x34};
static const uint8_t TRUNCATED[] = {0x08, 0x01, 0x52, 0x10, 0x0a, 0x0e, 'a'}; /* length past end */

static int raw_recv(void *z, uint8_t *buf, size_t cap, int timeout_ms) {
    zmq_pollitem_t it = {.socket = z, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return -1;
    return zmq_recv(z, buf, cap, ZMQ_DONTWAIT);
}

static int has_bytes(const uint8_t *buf, int n, const char *s) {
    size_t k = strlen(s);
    for (int i = 0; i + (int)k <= n; i++)
        if (memcmp(buf + i, s, k) == 0) return 1;
    return 0;
}

/* A raw DEALER (plain ZeroMQ) talking to our ROUTER. */
static void test_hostile_worker(msg_ctx *c) {
    msg_sock *gw = listen_tcp(c);
    if (!gw) return;
    void *zc = zmq_ctx_new(), *raw = zmq_socket(zc, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(raw, ZMQ_ROUTING_ID, "raw", 3);
    CHECK_EQ_INT(zmq_connect(raw, msg_endpoint(gw)), 0);
    msg got;
    char peer[MSG_PEER_MAX];

    /* wrong version: refused, and an Error "bad_version" (version 1) comes back */
    zmq_send(raw, V2_BYE, sizeof V2_BYE, 0);
    CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
    CHECK_MSG(strstr(err_msg(), "version") != NULL, "%s", err_msg());
    CHECK_EQ_STR(peer, "raw");
    CHECK_EQ_INT(got.type, MSG_NONE);
    uint8_t buf[512];
    int n = raw_recv(raw, buf, sizeof buf, 2000);
    CHECK_MSG(n > 4 && buf[0] == 0x08 && buf[1] == 0x01 && buf[2] == 0x4a && has_bytes(buf, n, "bad_version"),
              "reply of %d bytes", n);
    /* a wrong-version Error is dropped without an answer (no ping-pong) */
    zmq_send(raw, V2_ERROR, sizeof V2_ERROR, 0);
    CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
    CHECK_EQ_INT(raw_recv(raw, buf, sizeof buf, 200), -1);

    /* garbage, truncated, bodiless, multipart: TV_EFORMAT each, and the socket keeps working */
    const uint8_t *bad[] = {GARBAGE, TRUNCATED, NO_BODY};
    size_t bad_n[] = {sizeof GARBAGE, sizeof TRUNCATED, sizeof NO_BODY};
    for (int i = 0; i < 3; i++) {
        zmq_send(raw, bad[i], bad_n[i], 0);
        CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
        CHECK(err_msg()[0] != 0);
    }
    zmq_send(raw, V1_CANCEL, sizeof V1_CANCEL, ZMQ_SNDMORE);
    zmq_send(raw, V1_CANCEL, sizeof V1_CANCEL, 0);
    CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
    zmq_send(raw, "", 0, 0); /* an empty frame is a valid, bodiless Envelope of version 0 */
    CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
    n = raw_recv(raw, buf, sizeof buf, 2000); /* ... and gets a bad_version answer */
    CHECK(n > 0 && has_bytes(buf, n, "bad_version"));

    /* over the limits: 65 (empty) images, 257 messages, a 4097-token chunk */
    uint8_t big[16384];
    size_t k = 0;
    big[k++] = 0x08, big[k++] = 0x01, big[k++] = 0x32, big[k++] = 0x82, big[k++] = 0x01; /* 130 */
    for (int i = 0; i < MSG_MAX_IMAGES + 1; i++) big[k++] = 0x1a, big[k++] = 0x00;
    zmq_send(raw, big, k, 0);
    CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
    CHECK_MSG(strstr(err_msg(), "images") != NULL, "%s", err_msg());
    k = 0;
    big[k++] = 0x08, big[k++] = 0x01, big[k++] = 0x32, big[k++] = 0x82, big[k++] = 0x04; /* 514 */
    for (int i = 0; i < MSG_MAX_MESSAGES + 1; i++) big[k++] = 0x12, big[k++] = 0x00;
    zmq_send(raw, big, k, 0);
    CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
    CHECK_MSG(strstr(err_msg(), "messages") != NULL, "%s", err_msg());
    k = 0;
    big[k++] = 0x08, big[k++] = 0x01, big[k++] = 0x3a, big[k++] = 0x84, big[k++] = 0x20; /* 4100 */
    big[k++] = 0x1a, big[k++] = 0x81, big[k++] = 0x20; /* packed tokens, 4097 bytes */
    for (int i = 0; i < MSG_MAX_CHUNK_TOKENS + 1; i++) big[k++] = 0x01;
    zmq_send(raw, big, k, 0);
    CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
    CHECK_MSG(strstr(err_msg(), "tokens") != NULL, "%s", err_msg());
    /* an inline embedding whose length disagrees with its shape: rows 2, dim 2, f32, 4 bytes */
    const uint8_t bad_emb[] = {0x08, 0x01, 0x2a, 0x0e, 0x1a, 0x0c, 0x08, 0x02, 0x10,
                               0x02, 0x18, 0x02, 0x22, 0x04, 1, 2, 3, 4};
    zmq_send(raw, bad_emb, sizeof bad_emb, 0);
    CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
    CHECK_MSG(strstr(err_msg(), "embedding") != NULL, "%s", err_msg());

    /* a peer without an id (ZeroMQ makes up a binary one): dropped, we could not answer it */
    void *anon = zmq_socket(zc, ZMQ_DEALER);
    zmq_setsockopt(anon, ZMQ_LINGER, &zero, sizeof zero);
    CHECK_EQ_INT(zmq_connect(anon, msg_endpoint(gw)), 0);
    zmq_send(anon, V1_CANCEL, sizeof V1_CANCEL, 0);
    CHECK_EQ_INT(msg_recv(gw, 3000, &got, peer, sizeof peer), TV_EFORMAT);
    CHECK_MSG(strstr(err_msg(), "id") != NULL, "%s", err_msg());
    zmq_close(anon);

    /* still working */
    zmq_send(raw, V1_CANCEL, sizeof V1_CANCEL, 0);
    CHECK_OK(msg_recv(gw, 3000, &got, peer, sizeof peer));
    CHECK(got.type == MSG_CANCEL && got.u.cancel_id == 7);
    CHECK_EQ_STR(peer, "raw");
    msg_clear(&got);
    zmq_close(raw);
    zmq_ctx_term(zc);
    msg_close(gw);
}

/* A raw ROUTER (plain ZeroMQ) talking to our DEALER: the worker side refuses a bad version too. */
static void test_hostile_gateway(msg_ctx *c) {
    void *zc = zmq_ctx_new(), *raw = zmq_socket(zc, ZMQ_ROUTER);
    int zero = 0, one = 1;
    zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(raw, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    CHECK_EQ_INT(zmq_bind(raw, "tcp://127.0.0.1:*"), 0);
    char ep[256];
    size_t epn = sizeof ep;
    zmq_getsockopt(raw, ZMQ_LAST_ENDPOINT, ep, &epn);
    msg_sock *wk;
    CHECK_OK(msg_connect(c, ep, "wk", &wk));
    msg hb = {.type = MSG_HEARTBEAT};
    int sent = 0;
    for (int i = 0; i < 50 && !sent; i++) sent = msg_send(wk, NULL, &hb) == TV_OK;
    uint8_t buf[512];
    int n = raw_recv(raw, buf, sizeof buf, 2000); /* identity frame */
    CHECK(n == 2 && memcmp(buf, "wk", 2) == 0);
    n = raw_recv(raw, buf, sizeof buf, 2000); /* the heartbeat */
    CHECK(n >= 2 && buf[0] == 0x08 && buf[1] == 0x01);
    zmq_send(raw, "wk", 2, ZMQ_SNDMORE);
    zmq_send(raw, V2_BYE, sizeof V2_BYE, 0);
    msg got;
    CHECK_EQ_INT(msg_recv(wk, 3000, &got, NULL, 0), TV_EFORMAT);
    n = raw_recv(raw, buf, sizeof buf, 2000);
    CHECK(n == 2);
    n = raw_recv(raw, buf, sizeof buf, 2000);
    CHECK(n > 0 && has_bytes(buf, n, "bad_version"));
    zmq_send(raw, "wk", 2, ZMQ_SNDMORE);
    zmq_send(raw, V1_CANCEL, sizeof V1_CANCEL, 0);
    CHECK_OK(msg_recv(wk, 3000, &got, NULL, 0));
    CHECK(got.type == MSG_CANCEL && got.u.cancel_id == 7);
    msg_clear(&got);
    msg_close(wk);
    zmq_close(raw);
    zmq_ctx_term(zc);
}

/* ---- vanished peers ---------------------------------------------------------------------------- */

static void test_vanished(msg_ctx *c) {
    msg_sock *gw = listen_tcp(c), *wk;
    if (!gw) return;
    CHECK_OK(msg_connect(c, msg_endpoint(gw), "short-lived", &wk));
    msg hb = {.type = MSG_HEARTBEAT}, got;
    int sent = 0;
    for (int i = 0; i < 50 && !sent; i++) sent = msg_send(wk, NULL, &hb) == TV_OK;
    char peer[MSG_PEER_MAX];
    CHECK_OK(msg_recv(gw, 2000, &got, peer, sizeof peer));
    CHECK_OK(msg_send(gw, "short-lived", &hb));
    msg_close(wk);
    /* ZeroMQ notices the closed connection asynchronously; within a second every send fails,
     * and each failing send returns at once */
    int rc = TV_OK;
    double worst = 0, t_end = clk_now_s() * 1e3 + 2000;
    while (rc == TV_OK && clk_now_s() * 1e3 < t_end) {
        double t0 = clk_now_s() * 1e3;
        rc = msg_send(gw, "short-lived", &hb);
        double dt = clk_now_s() * 1e3 - t0;
        if (dt > worst) worst = dt;
        if (rc == TV_OK) usleep(10000);
    }
    CHECK_EQ_INT(rc, TV_EAGAIN);
    CHECK_MSG(worst < 100, "a send took %.1f ms", worst);
    printf("test_msg: send to a vanished worker: TV_EAGAIN, slowest send %.2f ms\n", worst);
    /* a worker whose gateway is gone: its sends give up after the short send timeout */
    CHECK_OK(msg_connect(c, msg_endpoint(gw), "orphan", &wk));
    msg_close(gw);
    rc = TV_OK;
    worst = 0;
    t_end = clk_now_s() * 1e3 + 2000;
    while (rc == TV_OK && clk_now_s() * 1e3 < t_end) {
        double t0 = clk_now_s() * 1e3;
        rc = msg_send(wk, NULL, &hb);
        double dt = clk_now_s() * 1e3 - t0;
        if (dt > worst) worst = dt;
    }
    CHECK_EQ_INT(rc, TV_EAGAIN);
    CHECK_MSG(worst < 500, "an orphan send took %.1f ms", worst);
    msg_close(wk);
}

/* ---- polling ----------------------------------------------------------------------------------- */

static void *kick(void *arg) {
    usleep(50000);
    uint64_t one = 1;
    if (write(*(int *)arg, &one, sizeof one) != sizeof one) perror("eventfd write");
    return NULL;
}

static void test_poll(msg_ctx *c) {
    msg_sock *gw, *wk;
    CHECK_OK(msg_listen(c, "inproc://test-poll", &gw));
    CHECK_OK(msg_connect(c, "inproc://test-poll", "p", &wk));
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    CHECK(efd >= 0);
    msg_sock *socks[1] = {gw};
    int rs[1] = {7}, rf[1] = {7};
    /* nothing: times out */
    CHECK_EQ_INT(msg_poll(socks, 1, rs, &efd, 1, rf, 20), 0);
    CHECK(rs[0] == 0 && rf[0] == 0);
    /* another thread writes the eventfd: wakes well before the timeout */
    pthread_t th;
    pthread_create(&th, NULL, kick, &efd);
    double t0 = clk_now_s() * 1e3;
    int n = msg_poll(socks, 1, rs, &efd, 1, rf, 5000);
    double dt = clk_now_s() * 1e3 - t0;
    pthread_join(th, NULL);
    CHECK_EQ_INT(n, 1);
    CHECK(rf[0] == 1 && rs[0] == 0);
    CHECK_MSG(dt >= 40 && dt < 2000, "woke after %.1f ms", dt);
    uint64_t v;
    CHECK(read(efd, &v, sizeof v) == sizeof v && v == 1);
    /* a message: the socket is ready */
    msg hb = {.type = MSG_HEARTBEAT}, got;
    CHECK_OK(msg_send(wk, NULL, &hb));
    n = msg_poll(socks, 1, rs, &efd, 1, rf, 2000);
    CHECK_EQ_INT(n, 1);
    CHECK(rs[0] == 1 && rf[0] == 0);
    char peer[MSG_PEER_MAX];
    CHECK_OK(msg_recv(gw, 0, &got, peer, sizeof peer));
    /* sockets only, fds only */
    CHECK_EQ_INT(msg_poll(socks, 1, rs, NULL, 0, NULL, 0), 0);
    CHECK_EQ_INT(msg_poll(NULL, 0, NULL, &efd, 1, rf, 0), 0);
    close(efd);
    msg_close(wk);
    msg_close(gw);
}

int main(void) {
    log_set_level(LOG_ERROR);
    make_samples();
    msg_ctx *c;
    CHECK_OK(msg_ctx_new(&c));
    test_inproc(c);
    test_inproc_connect_first(c);
    test_tcp(c);
    test_send_refusals(c);
    test_hostile_worker(c);
    test_hostile_gateway(c);
    test_vanished(c);
    test_poll(c);
    msg_ctx_free(c);
    msg_clear(NULL);
    msg_close(NULL);
    msg_ctx_free(NULL);
    CHECK_EQ_STR(msg_type_name(MSG_CHUNK), "chunk");
    return check_finish("test_msg");
}
