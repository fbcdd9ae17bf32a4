/* msg — ZeroMQ ROUTER/DEALER sockets carrying protobuf-c Envelopes (see msg.h).
 *
 * Sending converts the caller's C structs into protobuf-c structs that point at the caller's
 * data (no copy), packs straight into a zmq_msg_t and sends it. Receiving unpacks with a
 * budgeted allocator (a hostile frame cannot make protobuf-c allocate much more than its own
 * size), checks every count and length against the MSG_MAX_* limits, then moves the result
 * into the C structs: strings are copied, large byte fields (images, embeddings) are taken over. */
#include "msg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "err.h"
#include "log.h"
#include "tinyvlm.pb-c.h"

struct msg_ctx {
    void *z;
};

struct msg_sock {
    void *z;
    int router; /* 1: listening ROUTER, 0: connected DEALER */
    char endpoint[256];
};

/* Send timeouts: the gateway's one router thread must never stall on one worker, so its sends
 * fail at once when a peer's queue is full; a worker waits a little for its gateway to be
 * reachable (ZMQ_IMMEDIATE: nothing is queued for a gateway that is not connected). */
#define ROUTER_SNDTIMEO_MS 10
#define DEALER_SNDTIMEO_MS 100
#define SOCK_HWM 1000
/* Structure of a legitimate message costs far less than this beyond its byte fields. */
#define UNPACK_SLACK (16u << 20)

/* ---- context and sockets ------------------------------------------------------------------ */

int msg_ctx_new(msg_ctx **out) {
    *out = NULL;
    void *z = zmq_ctx_new();
    if (!z) return err_set(TV_EINTERNAL, "zmq_ctx_new: %s", zmq_strerror(errno));
    zmq_ctx_set(z, ZMQ_BLOCKY, 0); /* closing the context never waits for unsent messages */
    msg_ctx *c = tv_xcalloc(1, sizeof *c);
    c->z = z;
    *out = c;
    return TV_OK;
}

void msg_ctx_free(msg_ctx *c) {
    if (!c) return;
    while (zmq_ctx_term(c->z) != 0 && errno == EINTR) {
    }
    free(c);
}

static int set_int(void *z, int opt, int v, const char *name) {
    if (zmq_setsockopt(z, opt, &v, sizeof v) != 0)
        return err_set(TV_EINTERNAL, "zmq_setsockopt(%s): %s", name, zmq_strerror(errno));
    return TV_OK;
}

#define SET(z, opt, v)                                   \
    do {                                                 \
        int set_rc_ = set_int((z), (opt), (v), #opt);    \
        if (set_rc_) return set_rc_;                     \
    } while (0)

/* Options common to both ends: no lingering, bounded queues and frames, dead TCP peers found by
 * keepalive and ZMTP heartbeats, quick reconnects. */
static int sock_common(void *z) {
    SET(z, ZMQ_LINGER, 0);
    SET(z, ZMQ_SNDHWM, SOCK_HWM);
    SET(z, ZMQ_RCVHWM, SOCK_HWM);
    int64_t max = MSG_FRAME_MAX + 4096; /* the ROUTER's identity frame rides along */
    if (zmq_setsockopt(z, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0)
        return err_set(TV_EINTERNAL, "zmq_setsockopt(ZMQ_MAXMSGSIZE): %s", zmq_strerror(errno));
    SET(z, ZMQ_TCP_KEEPALIVE, 1);
    SET(z, ZMQ_TCP_KEEPALIVE_IDLE, 10);
    SET(z, ZMQ_TCP_KEEPALIVE_INTVL, 5);
    SET(z, ZMQ_TCP_KEEPALIVE_CNT, 3);
    SET(z, ZMQ_HEARTBEAT_IVL, 1000);
    SET(z, ZMQ_HEARTBEAT_TIMEOUT, 3000);
    SET(z, ZMQ_HEARTBEAT_TTL, 3000);
    SET(z, ZMQ_RECONNECT_IVL, 100);
    SET(z, ZMQ_RECONNECT_IVL_MAX, 1000);
    return TV_OK;
}

static int router_opts(void *z) {
    int rc = sock_common(z);
    if (rc) return rc;
    SET(z, ZMQ_ROUTER_MANDATORY, 1); /* a send to a gone peer fails instead of vanishing */
    SET(z, ZMQ_ROUTER_HANDOVER, 1);  /* a worker reconnecting with its id takes over at once */
    SET(z, ZMQ_SNDTIMEO, ROUTER_SNDTIMEO_MS);
    return TV_OK;
}

static int dealer_opts(void *z, const char *identity) {
    int rc = sock_common(z);
    if (rc) return rc;
    SET(z, ZMQ_IMMEDIATE, 1);
    SET(z, ZMQ_SNDTIMEO, DEALER_SNDTIMEO_MS);
    if (zmq_setsockopt(z, ZMQ_ROUTING_ID, identity, strlen(identity)) != 0)
        return err_set(TV_EINTERNAL, "zmq_setsockopt(ZMQ_ROUTING_ID): %s", zmq_strerror(errno));
    return TV_OK;
}

static msg_sock *sock_wrap(void *z, int router, const char *endpoint) {
    msg_sock *s = tv_xcalloc(1, sizeof *s);
    s->z = z;
    s->router = router;
    snprintf(s->endpoint, sizeof s->endpoint, "%s", endpoint);
    return s;
}

int msg_listen(msg_ctx *c, const char *endpoint, msg_sock **out) {
    *out = NULL;
    if (!c || !endpoint || !*endpoint) return err_set(TV_EINVAL, "msg_listen: no endpoint");
    void *z = zmq_socket(c->z, ZMQ_ROUTER);
    if (!z) return err_set(TV_EINTERNAL, "zmq_socket(ROUTER): %s", zmq_strerror(errno));
    int rc = router_opts(z);
    if (!rc && zmq_bind(z, endpoint) != 0)
        rc = err_set(TV_EIO, "cannot listen on %s: %s", endpoint, zmq_strerror(errno));
    if (rc) {
        zmq_close(z);
        return rc;
    }
    *out = sock_wrap(z, 1, endpoint);
    size_t n = sizeof (*out)->endpoint; /* the port actually bound for "tcp://host:*" */
    if (zmq_getsockopt(z, ZMQ_LAST_ENDPOINT, (*out)->endpoint, &n) != 0)
        snprintf((*out)->endpoint, sizeof (*out)->endpoint, "%s", endpoint);
    return TV_OK;
}

int msg_connect(msg_ctx *c, const char *endpoint, const char *identity, msg_sock **out) {
    *out = NULL;
    if (!c || !endpoint || !*endpoint) return err_set(TV_EINVAL, "msg_connect: no endpoint");
    size_t n = identity ? strlen(identity) : 0;
    if (n == 0 || n >= MSG_PEER_MAX)
        return err_set(TV_EINVAL, "worker id must be 1..%d bytes, got %zu", MSG_PEER_MAX - 1, n);
    void *z = zmq_socket(c->z, ZMQ_DEALER);
    if (!z) return err_set(TV_EINTERNAL, "zmq_socket(DEALER): %s", zmq_strerror(errno));
    int rc = dealer_opts(z, identity);
    if (!rc && zmq_connect(z, endpoint) != 0)
        rc = err_set(TV_EIO, "cannot connect to %s: %s", endpoint, zmq_strerror(errno));
    if (rc) {
        zmq_close(z);
        return rc;
    }
    *out = sock_wrap(z, 0, endpoint);
    return TV_OK;
}

void msg_close(msg_sock *s) {
    if (!s) return;
    zmq_close(s->z);
    free(s);
}

const char *msg_endpoint(const msg_sock *s) { return s ? s->endpoint : ""; }

const char *msg_type_name(msg_type t) {
    static const char *names[] = {"none",      "hello", "heartbeat", "encode", "encoded",
                                  "generate", "chunk", "cancel",    "error",  "bye"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* ---- C structs -> protobuf-c (send side) ---------------------------------------------------- */

static char *pstr(const char *s) { return (char *)(s ? s : ""); }

static int check_str(const char *s, const char *what) {
    if (s && strlen(s) > MSG_MAX_STRING)
        return err_set(TV_EINVAL, "%s is longer than %u bytes", what, MSG_MAX_STRING);
    return TV_OK;
}

/* Bytes one value of an embedding dtype takes, 0 for an unknown dtype. */
static size_t emb_elem(uint32_t dtype) {
    return dtype == MSG_EMB_F16 ? 2 : dtype == MSG_EMB_F32 ? 4 : 0;
}

/* Checks that an embedding's shape, dtype and length agree and stay within the limits. */
static int emb_check(uint32_t rows, uint32_t dim, uint32_t dtype, size_t len, int code) {
    size_t es = emb_elem(dtype);
    if (!es) return err_set(code, "embedding dtype %" PRIu32 " is neither f16 (1) nor f32 (2)", dtype);
    if (rows == 0 || dim == 0) return err_set(code, "embedding shape [%" PRIu32 ", %" PRIu32 "]", rows, dim);
    /* rows and dim are bounded first, so the product cannot overflow 64 bits. */
    if (rows > MSG_MAX_EMB_BYTES || dim > MSG_MAX_EMB_BYTES ||
        (uint64_t)rows * dim * es > MSG_MAX_EMB_BYTES)
        return err_set(code, "embedding [%" PRIu32 ", %" PRIu32 "] is over %u bytes", rows, dim,
                       MSG_MAX_EMB_BYTES);
    uint64_t want = (uint64_t)rows * dim * es;
    if (want != len)
        return err_set(code, "embedding [%" PRIu32 ", %" PRIu32 "] needs %" PRIu64 " bytes, has %zu",
                       rows, dim, want, len);
    return TV_OK;
}

/* Points pb at e (which must be present and valid). */
static int emb_to_pb(const msg_embedding *e, Tinyvlm__Embedding *pb) {
    int rc = emb_check(e->rows, e->dim, e->dtype, e->len, TV_EINVAL);
    if (rc) return rc;
    tinyvlm__embedding__init(pb);
    pb->rows = e->rows;
    pb->dim = e->dim;
    pb->dtype = e->dtype;
    pb->data.data = e->data;
    pb->data.len = e->len;
    return TV_OK;
}

/* Everything a GenerateRequest's protobuf-c form borrows besides the caller's data. */
typedef struct {
    Tinyvlm__ChatMessage *msgs, **msgp;
    Tinyvlm__Part **parts, ***partp; /* per message */
    Tinyvlm__ImageRef *imgs, **imgp;
    Tinyvlm__Embedding *embs;
    Tinyvlm__Sampling sampling;
    size_t n_msgs;
} gen_pb;

static void gen_pb_free(gen_pb *g) {
    for (size_t i = 0; i < g->n_msgs; i++) {
        if (g->parts) free(g->parts[i]);
        if (g->partp) free(g->partp[i]);
    }
    free(g->parts);
    free(g->partp);
    free(g->msgs);
    free(g->msgp);
    free(g->imgs);
    free(g->imgp);
    free(g->embs);
}

static int chat_to_pb(const msg_chat *c, size_t n_images, gen_pb *g, size_t i) {
    Tinyvlm__ChatMessage *cm = &g->msgs[i];
    tinyvlm__chat_message__init(cm);
    g->msgp[i] = cm;
    int rc = check_str(c->role, "message role");
    if (rc) return rc;
    cm->role = pstr(c->role);
    if (c->n_parts > MSG_MAX_PARTS)
        return err_set(TV_EINVAL, "message %zu has %zu parts (at most %d)", i, c->n_parts,
                       MSG_MAX_PARTS);
    if (c->n_parts && !c->parts) return err_set(TV_EINVAL, "message %zu: parts is NULL", i);
    g->parts[i] = tv_xcalloc(c->n_parts ? c->n_parts : 1, sizeof(Tinyvlm__Part));
    g->partp[i] = tv_xcalloc(c->n_parts ? c->n_parts : 1, sizeof(Tinyvlm__Part *));
    for (size_t j = 0; j < c->n_parts; j++) {
        const msg_part *p = &c->parts[j];
        Tinyvlm__Part *pp = &g->parts[i][j];
        tinyvlm__part__init(pp);
        if ((rc = check_str(p->text, "message text"))) return rc;
        if (p->image < -1 || (p->image >= 0 && (size_t)p->image >= n_images))
            return err_set(TV_EINVAL, "message %zu part %zu names image %" PRId32 " of %zu", i, j,
                           p->image, n_images);
        pp->text = pstr(p->text);
        pp->image = p->image;
        g->partp[i][j] = pp;
    }
    cm->n_parts = c->n_parts;
    cm->parts = g->partp[i];
    return TV_OK;
}

static int sampling_to_pb(const msg_sampling *s, Tinyvlm__Sampling *pb) {
    tinyvlm__sampling__init(pb);
    if (s->n_stop > MSG_MAX_STOP)
        return err_set(TV_EINVAL, "%zu stop strings (at most %d)", s->n_stop, MSG_MAX_STOP);
    if (s->n_stop && !s->stop) return err_set(TV_EINVAL, "stop is NULL");
    for (size_t i = 0; i < s->n_stop; i++) {
        if (!s->stop[i]) return err_set(TV_EINVAL, "stop string %zu is NULL", i);
        int rc = check_str(s->stop[i], "stop string");
        if (rc) return rc;
    }
    pb->temperature = s->temperature;
    pb->top_p = s->top_p;
    pb->top_k = s->top_k;
    pb->repetition_penalty = s->repetition_penalty;
    pb->seed = s->seed;
    pb->has_seed = s->has_seed != 0;
    pb->max_tokens = s->max_tokens;
    pb->n_stop = s->n_stop;
    pb->stop = s->stop;
    return TV_OK;
}

static int generate_to_pb(const msg_generate *m, Tinyvlm__GenerateRequest *pb, gen_pb *g) {
    tinyvlm__generate_request__init(pb);
    pb->id = m->id;
    if (m->n_messages > MSG_MAX_MESSAGES)
        return err_set(TV_EINVAL, "%zu messages (at most %d)", m->n_messages, MSG_MAX_MESSAGES);
    if (m->n_images > MSG_MAX_IMAGES)
        return err_set(TV_EINVAL, "%zu images (at most %d)", m->n_images, MSG_MAX_IMAGES);
    if ((m->n_messages && !m->messages) || (m->n_images && !m->images))
        return err_set(TV_EINVAL, "generate: NULL messages or images");
    int rc = check_str(m->tenant, "tenant");
    if (rc) return rc;
    size_t nm = m->n_messages ? m->n_messages : 1, ni = m->n_images ? m->n_images : 1;
    g->msgs = tv_xcalloc(nm, sizeof *g->msgs);
    g->msgp = tv_xcalloc(nm, sizeof *g->msgp);
    g->parts = tv_xcalloc(nm, sizeof *g->parts);
    g->partp = tv_xcalloc(nm, sizeof *g->partp);
    g->n_msgs = m->n_messages;
    for (size_t i = 0; i < m->n_messages; i++)
        if ((rc = chat_to_pb(&m->messages[i], m->n_images, g, i))) return rc;
    g->imgs = tv_xcalloc(ni, sizeof *g->imgs);
    g->imgp = tv_xcalloc(ni, sizeof *g->imgp);
    g->embs = tv_xcalloc(ni, sizeof *g->embs);
    for (size_t i = 0; i < m->n_images; i++) {
        const msg_image_ref *r = &m->images[i];
        Tinyvlm__ImageRef *ir = &g->imgs[i];
        tinyvlm__image_ref__init(ir);
        if ((rc = check_str(r->cache_key, "cache key"))) return rc;
        ir->cache_key = pstr(r->cache_key);
        if (r->embedding.data) {
            if ((rc = emb_to_pb(&r->embedding, &g->embs[i]))) return rc;
            ir->embedding = &g->embs[i];
        }
        g->imgp[i] = ir;
    }
    if ((rc = sampling_to_pb(&m->sampling, &g->sampling))) return rc;
    pb->n_messages = m->n_messages;
    pb->messages = g->msgp;
    pb->n_images = m->n_images;
    pb->images = g->imgp;
    pb->sampling = &g->sampling;
    pb->tenant = pstr(m->tenant);
    pb->deadline_unix_ms = m->deadline_unix_ms;
    return TV_OK;
}

/* All the protobuf-c structs one Envelope may point to while it is packed. */
typedef struct {
    Tinyvlm__Envelope env;
    union {
        Tinyvlm__Hello hello;
        Tinyvlm__Heartbeat heartbeat;
        Tinyvlm__EncodeRequest encode;
        Tinyvlm__EncodeResult encoded;
        Tinyvlm__GenerateRequest generate;
        Tinyvlm__TokenChunk chunk;
        Tinyvlm__Cancel cancel;
        Tinyvlm__Error error;
        Tinyvlm__Bye bye;
    } b;
    Tinyvlm__Embedding emb;
    Tinyvlm__Usage usage;
    gen_pb gen;
} env_pb;

static int hello_to_pb(const msg_hello *h, env_pb *e) {
    Tinyvlm__Hello *pb = &e->b.hello;
    tinyvlm__hello__init(pb);
    int rc;
    if ((rc = check_str(h->worker_id, "worker id")) || (rc = check_str(h->model, "model")) ||
        (rc = check_str(h->fingerprint, "fingerprint")) || (rc = check_str(h->device, "device")))
        return rc;
    if (h->kind != MSG_WORKER_UNKNOWN && h->kind != MSG_WORKER_VISION && h->kind != MSG_WORKER_LM)
        return err_set(TV_EINVAL, "hello: worker kind %d", (int)h->kind);
    pb->kind = (Tinyvlm__WorkerKind)h->kind;
    pb->worker_id = pstr(h->worker_id);
    pb->model = pstr(h->model);
    pb->fingerprint = pstr(h->fingerprint);
    pb->device = pstr(h->device);
    pb->capacity = h->capacity;
    pb->max_context = h->max_context;
    pb->emb_rows = h->emb_rows;
    pb->emb_dim = h->emb_dim;
    e->env.hello = pb;
    return TV_OK;
}

static int heartbeat_to_pb(const msg_heartbeat *h, env_pb *e) {
    Tinyvlm__Heartbeat *pb = &e->b.heartbeat;
    tinyvlm__heartbeat__init(pb);
    pb->load = h->load;
    pb->capacity = h->capacity;
    pb->gpu_mem_used = h->gpu_mem_used;
    pb->gpu_mem_total = h->gpu_mem_total;
    pb->kernel_seconds = h->kernel_seconds;
    pb->items_done = h->items_done;
    pb->tokens_out = h->tokens_out;
    pb->draining = h->draining != 0;
    if (h->n_held > MSG_MAX_HELD)
        return err_set(TV_EINVAL, "heartbeat: %zu held jobs (at most %d)", h->n_held, MSG_MAX_HELD);
    pb->last_seq = h->last_seq;
    pb->held = (uint64_t *)h->held;
    pb->n_held = h->held ? h->n_held : 0;
    e->env.heartbeat = pb;
    return TV_OK;
}

static int encode_to_pb(const msg_encode *m, env_pb *e) {
    Tinyvlm__EncodeRequest *pb = &e->b.encode;
    tinyvlm__encode_request__init(pb);
    if (m->image_len > MSG_MAX_IMAGE_BYTES)
        return err_set(TV_EINVAL, "image of %zu bytes (at most %u)", m->image_len,
                       MSG_MAX_IMAGE_BYTES);
    if (m->image_len && !m->image) return err_set(TV_EINVAL, "encode: image is NULL");
    int rc = check_str(m->cache_key, "cache key");
    if (rc) return rc;
    pb->id = m->id;
    pb->image.data = m->image;
    pb->image.len = m->image_len;
    pb->cache_key = pstr(m->cache_key);
    pb->want_inline = m->want_inline != 0;
    e->env.encode = pb;
    return TV_OK;
}

static int encoded_to_pb(const msg_encoded *m, env_pb *e) {
    Tinyvlm__EncodeResult *pb = &e->b.encoded;
    tinyvlm__encode_result__init(pb);
    pb->id = m->id;
    pb->cached = m->cached != 0;
    pb->seconds = m->seconds;
    if (m->embedding.data) {
        int rc = emb_to_pb(&m->embedding, &e->emb);
        if (rc) return rc;
        pb->embedding = &e->emb;
    }
    e->env.encoded = pb;
    return TV_OK;
}

static int chunk_to_pb(const msg_chunk *m, env_pb *e) {
    Tinyvlm__TokenChunk *pb = &e->b.chunk;
    tinyvlm__token_chunk__init(pb);
    int rc;
    if ((rc = check_str(m->text, "chunk text")) || (rc = check_str(m->finish_reason, "finish reason")))
        return rc;
    if (m->n_tokens > MSG_MAX_CHUNK_TOKENS)
        return err_set(TV_EINVAL, "chunk of %zu tokens (at most %d)", m->n_tokens,
                       MSG_MAX_CHUNK_TOKENS);
    if (m->n_tokens && !m->tokens) return err_set(TV_EINVAL, "chunk: tokens is NULL");
    tinyvlm__usage__init(&e->usage);
    e->usage.prompt_tokens = m->prompt_tokens;
    e->usage.completion_tokens = m->completion_tokens;
    pb->id = m->id;
    pb->text = pstr(m->text);
    pb->n_tokens = m->n_tokens;
    pb->tokens = m->tokens;
    pb->finish_reason = pstr(m->finish_reason);
    pb->usage = &e->usage;
    e->env.chunk = pb;
    return TV_OK;
}

static int error_to_pb(const msg_error *m, env_pb *e) {
    Tinyvlm__Error *pb = &e->b.error;
    tinyvlm__error__init(pb);
    int rc;
    if ((rc = check_str(m->code, "error code")) || (rc = check_str(m->message, "error message")))
        return rc;
    pb->id = m->id;
    pb->status = m->status;
    pb->code = pstr(m->code);
    pb->message = pstr(m->message);
    e->env.error = pb;
    return TV_OK;
}

/* Fills e (an Envelope borrowing m's data). Returns 0 or TV_EINVAL; env_pb_free after either. */
static int env_to_pb(const msg *m, env_pb *e) {
    memset(e, 0, sizeof *e);
    tinyvlm__envelope__init(&e->env);
    e->env.version = MSG_VERSION;
    e->env.seq = m->seq;
    switch (m->type) {
    case MSG_HELLO:
        e->env.body_case = TINYVLM__ENVELOPE__BODY_HELLO;
        return hello_to_pb(&m->u.hello, e);
    case MSG_HEARTBEAT:
        e->env.body_case = TINYVLM__ENVELOPE__BODY_HEARTBEAT;
        return heartbeat_to_pb(&m->u.heartbeat, e);
    case MSG_ENCODE:
        e->env.body_case = TINYVLM__ENVELOPE__BODY_ENCODE;
        return encode_to_pb(&m->u.encode, e);
    case MSG_ENCODED:
        e->env.body_case = TINYVLM__ENVELOPE__BODY_ENCODED;
        return encoded_to_pb(&m->u.encoded, e);
    case MSG_GENERATE:
        e->env.body_case = TINYVLM__ENVELOPE__BODY_GENERATE;
        e->env.generate = &e->b.generate;
        return generate_to_pb(&m->u.generate, &e->b.generate, &e->gen);
    case MSG_CHUNK:
        e->env.body_case = TINYVLM__ENVELOPE__BODY_CHUNK;
        return chunk_to_pb(&m->u.chunk, e);
    case MSG_CANCEL:
        e->env.body_case = TINYVLM__ENVELOPE__BODY_CANCEL;
        tinyvlm__cancel__init(&e->b.cancel);
        e->b.cancel.id = m->u.cancel_id;
        e->env.cancel = &e->b.cancel;
        return TV_OK;
    case MSG_ERROR:
        e->env.body_case = TINYVLM__ENVELOPE__BODY_ERROR;
        return error_to_pb(&m->u.error, e);
    case MSG_BYE: {
        e->env.body_case = TINYVLM__ENVELOPE__BODY_BYE;
        int rc = check_str(m->u.bye_reason, "bye reason");
        if (rc) return rc;
        tinyvlm__bye__init(&e->b.bye);
        e->b.bye.reason = pstr(m->u.bye_reason);
        e->env.bye = &e->b.bye;
        return TV_OK;
    }
    default:
        return err_set(TV_EINVAL, "cannot send a message of type %d", (int)m->type);
    }
}

/* ---- sending ---------------------------------------------------------------------------------- */

/* Maps a failed zmq send to our codes: a gone peer, a full queue or a timeout are TV_EAGAIN. */
static int send_errno(const msg_sock *s, const char *peer) {
    int e = errno;
    if (e == EHOSTUNREACH)
        return err_set(TV_EAGAIN, "peer %s is not connected to %s", peer ? peer : "?", s->endpoint);
    if (e == EAGAIN || e == EINTR)
        return err_set(TV_EAGAIN, "%s%s: send queue full or no peer connected",
                       peer ? "peer " : "", peer ? peer : s->endpoint);
    return err_set(TV_EIO, "send on %s: %s", s->endpoint, zmq_strerror(e));
}

int msg_send(msg_sock *s, const char *peer, const msg *m) {
    if (!s || !m) return err_set(TV_EINVAL, "msg_send: NULL socket or message");
    if (s->router && (!peer || !*peer || strlen(peer) >= MSG_PEER_MAX))
        return err_set(TV_EINVAL, "msg_send on a listening socket needs a peer id");
    if (!s->router && peer) return err_set(TV_EINVAL, "msg_send on a connected socket takes no peer");
    env_pb e;
    int rc = env_to_pb(m, &e);
    size_t n = 0;
    if (!rc) {
        n = tinyvlm__envelope__get_packed_size(&e.env);
        if (n > MSG_FRAME_MAX)
            rc = err_set(TV_EINVAL, "%s message of %zu bytes is over the %u-byte frame limit",
                         msg_type_name(m->type), n, MSG_FRAME_MAX);
    }
    zmq_msg_t zm;
    if (!rc && zmq_msg_init_size(&zm, n) != 0)
        rc = err_set(TV_EINTERNAL, "zmq_msg_init_size(%zu): %s", n, zmq_strerror(errno));
    if (!rc) {
        size_t packed = tinyvlm__envelope__pack(&e.env, zmq_msg_data(&zm));
        TV_ASSERT(packed == n);
    }
    gen_pb_free(&e.gen);
    if (rc) return err_wrap(rc, "sending %s", msg_type_name(m->type));
    if (s->router && zmq_send(s->z, peer, strlen(peer), ZMQ_SNDMORE) < 0) {
        rc = send_errno(s, peer);
        zmq_msg_close(&zm);
        return rc;
    }
    if (zmq_msg_send(&zm, s->z, 0) < 0) {
        rc = send_errno(s, peer);
        zmq_msg_close(&zm);
        return rc;
    }
    return TV_OK;
}

/* ---- protobuf-c -> C structs (receive side) -------------------------------------------------- */

/* protobuf-c allocator that refuses to go past a budget: unpack then fails cleanly. */
typedef struct {
    size_t used, budget;
} alloc_budget;

static void *budget_alloc(void *data, size_t size) {
    alloc_budget *b = data;
    if (size > b->budget - b->used) return NULL;
    b->used += size;
    return malloc(size ? size : 1);
}

static void budget_free(void *data, void *p) {
    (void)data;
    free(p);
}

/* Copies a received string (never NULL out). */
static int take_str(const char *src, char **dst, const char *what) {
    if (!src) src = "";
    size_t n = strlen(src);
    if (n > MSG_MAX_STRING)
        return err_set(TV_EFORMAT, "%s is longer than %u bytes", what, MSG_MAX_STRING);
    *dst = tv_xmalloc(n + 1);
    memcpy(*dst, src, n + 1);
    return TV_OK;
}

/* Takes over pb's bytes (the allocator is plain malloc underneath). */
static uint8_t *take_bytes(ProtobufCBinaryData *bd, size_t *len) {
    uint8_t *p = bd->data;
    *len = p ? bd->len : 0;
    bd->data = NULL;
    bd->len = 0;
    return p;
}

static int emb_from_pb(Tinyvlm__Embedding *pb, msg_embedding *e) {
    if (!pb) return TV_OK;
    int rc = emb_check(pb->rows, pb->dim, pb->dtype, pb->data.data ? pb->data.len : 0, TV_EFORMAT);
    if (rc) return rc;
    e->rows = pb->rows;
    e->dim = pb->dim;
    e->dtype = pb->dtype;
    e->data = take_bytes(&pb->data, &e->len);
    return TV_OK;
}

static int hello_from_pb(Tinyvlm__Hello *pb, msg_hello *h) {
    int rc;
    h->kind = pb->kind == TINYVLM__WORKER_KIND__WORKER_VISION ? MSG_WORKER_VISION
              : pb->kind == TINYVLM__WORKER_KIND__WORKER_LM   ? MSG_WORKER_LM
                                                              : MSG_WORKER_UNKNOWN;
    if ((rc = take_str(pb->worker_id, &h->worker_id, "worker id")) ||
        (rc = take_str(pb->model, &h->model, "model")) ||
        (rc = take_str(pb->fingerprint, &h->fingerprint, "fingerprint")) ||
        (rc = take_str(pb->device, &h->device, "device")))
        return rc;
    h->capacity = pb->capacity;
    h->max_context = pb->max_context;
    h->emb_rows = pb->emb_rows;
    h->emb_dim = pb->emb_dim;
    return TV_OK;
}

/* Copies a received array of n items of size bytes (at most max: a peer cannot make us allocate
 * more) into *dst (malloc'd; left NULL when n is 0) and n into *n_dst. Returns 0 or TV_EFORMAT
 * naming what. */
static int take_array(const void *src, size_t n, size_t size, size_t max, const char *what,
                      void **dst, size_t *n_dst) {
    if (n > max) return err_set(TV_EFORMAT, "%zu %s (at most %zu)", n, what, max);
    if (n) {
        *dst = tv_xmalloc(n * size);
        memcpy(*dst, src, n * size);
        *n_dst = n;
    }
    return TV_OK;
}

static int heartbeat_from_pb(const Tinyvlm__Heartbeat *pb, msg_heartbeat *h) {
    h->load = pb->load;
    h->capacity = pb->capacity;
    h->gpu_mem_used = pb->gpu_mem_used;
    h->gpu_mem_total = pb->gpu_mem_total;
    h->kernel_seconds = pb->kernel_seconds;
    h->items_done = pb->items_done;
    h->tokens_out = pb->tokens_out;
    h->draining = pb->draining != 0;
    h->last_seq = pb->last_seq;
    void *held = NULL;
    int rc = take_array(pb->held, pb->n_held, sizeof *h->held, MSG_MAX_HELD,
                        "held jobs in a heartbeat", &held, &h->n_held);
    h->held = held;
    return rc;
}

static int encode_from_pb(Tinyvlm__EncodeRequest *pb, msg_encode *m) {
    m->id = pb->id;
    m->want_inline = pb->want_inline != 0;
    if (pb->image.data && pb->image.len > MSG_MAX_IMAGE_BYTES)
        return err_set(TV_EFORMAT, "image of %zu bytes (at most %u)", pb->image.len,
                       MSG_MAX_IMAGE_BYTES);
    m->image = take_bytes(&pb->image, &m->image_len);
    return take_str(pb->cache_key, &m->cache_key, "cache key");
}

static int chat_from_pb(const Tinyvlm__ChatMessage *pb, size_t n_images, msg_chat *c) {
    int rc = take_str(pb->role, &c->role, "message role");
    if (rc) return rc;
    if (pb->n_parts > MSG_MAX_PARTS)
        return err_set(TV_EFORMAT, "message with %zu parts (at most %d)", pb->n_parts, MSG_MAX_PARTS);
    if (!pb->n_parts) return TV_OK;
    c->parts = tv_xcalloc(pb->n_parts, sizeof *c->parts);
    c->n_parts = pb->n_parts;
    for (size_t j = 0; j < pb->n_parts; j++) {
        const Tinyvlm__Part *p = pb->parts[j];
        if ((rc = take_str(p->text, &c->parts[j].text, "message text"))) return rc;
        if (p->image < -1 || (p->image >= 0 && (size_t)p->image >= n_images))
            return err_set(TV_EFORMAT, "part names image %" PRId32 " of %zu", p->image, n_images);
        c->parts[j].image = p->image;
    }
    return TV_OK;
}

static int sampling_from_pb(const Tinyvlm__Sampling *pb, msg_sampling *s) {
    if (!pb) return TV_OK;
    s->temperature = pb->temperature;
    s->top_p = pb->top_p;
    s->top_k = pb->top_k;
    s->repetition_penalty = pb->repetition_penalty;
    s->seed = pb->seed;
    s->has_seed = pb->has_seed != 0;
    s->max_tokens = pb->max_tokens;
    if (pb->n_stop > MSG_MAX_STOP)
        return err_set(TV_EFORMAT, "%zu stop strings (at most %d)", pb->n_stop, MSG_MAX_STOP);
    if (!pb->n_stop) return TV_OK;
    s->stop = tv_xcalloc(pb->n_stop, sizeof *s->stop);
    s->n_stop = pb->n_stop;
    for (size_t i = 0; i < pb->n_stop; i++) {
        int rc = take_str(pb->stop[i], &s->stop[i], "stop string");
        if (rc) return rc;
    }
    return TV_OK;
}

static int generate_from_pb(Tinyvlm__GenerateRequest *pb, msg_generate *m) {
    m->id = pb->id;
    m->deadline_unix_ms = pb->deadline_unix_ms;
    int rc = take_str(pb->tenant, &m->tenant, "tenant");
    if (rc) return rc;
    if (pb->n_messages > MSG_MAX_MESSAGES)
        return err_set(TV_EFORMAT, "%zu messages (at most %d)", pb->n_messages, MSG_MAX_MESSAGES);
    if (pb->n_images > MSG_MAX_IMAGES)
        return err_set(TV_EFORMAT, "%zu images (at most %d)", pb->n_images, MSG_MAX_IMAGES);
    if (pb->n_images) {
        m->images = tv_xcalloc(pb->n_images, sizeof *m->images);
        m->n_images = pb->n_images;
    }
    for (size_t i = 0; i < pb->n_images; i++) {
        Tinyvlm__ImageRef *r = pb->images[i];
        if ((rc = take_str(r->cache_key, &m->images[i].cache_key, "cache key")) ||
            (rc = emb_from_pb(r->embedding, &m->images[i].embedding)))
            return rc;
    }
    if (pb->n_messages) {
        m->messages = tv_xcalloc(pb->n_messages, sizeof *m->messages);
        m->n_messages = pb->n_messages;
    }
    for (size_t i = 0; i < pb->n_messages; i++)
        if ((rc = chat_from_pb(pb->messages[i], pb->n_images, &m->messages[i]))) return rc;
    return sampling_from_pb(pb->sampling, &m->sampling);
}

static int chunk_from_pb(Tinyvlm__TokenChunk *pb, msg_chunk *m) {
    m->id = pb->id;
    int rc;
    if ((rc = take_str(pb->text, &m->text, "chunk text")) ||
        (rc = take_str(pb->finish_reason, &m->finish_reason, "finish reason")))
        return rc;
    void *tokens = NULL;
    rc = take_array(pb->tokens, pb->n_tokens, sizeof *m->tokens, MSG_MAX_CHUNK_TOKENS,
                    "tokens in a chunk", &tokens, &m->n_tokens);
    m->tokens = tokens;
    if (rc)
        return rc;
    if (pb->usage) {
        m->prompt_tokens = pb->usage->prompt_tokens;
        m->completion_tokens = pb->usage->completion_tokens;
    }
    return TV_OK;
}

/* Moves an unpacked envelope's body into m. On failure m may be half filled (msg_clear it). */
static int env_from_pb(Tinyvlm__Envelope *e, msg *m) {
    memset(m, 0, sizeof *m);
    switch (e->body_case) {
    case TINYVLM__ENVELOPE__BODY_HELLO:
        m->type = MSG_HELLO;
        return hello_from_pb(e->hello, &m->u.hello);
    case TINYVLM__ENVELOPE__BODY_HEARTBEAT:
        m->type = MSG_HEARTBEAT;
        return heartbeat_from_pb(e->heartbeat, &m->u.heartbeat);
    case TINYVLM__ENVELOPE__BODY_ENCODE:
        m->type = MSG_ENCODE;
        return encode_from_pb(e->encode, &m->u.encode);
    case TINYVLM__ENVELOPE__BODY_ENCODED:
        m->type = MSG_ENCODED;
        m->u.encoded.id = e->encoded->id;
        m->u.encoded.cached = e->encoded->cached != 0;
        m->u.encoded.seconds = e->encoded->seconds;
        return emb_from_pb(e->encoded->embedding, &m->u.encoded.embedding);
    case TINYVLM__ENVELOPE__BODY_GENERATE:
        m->type = MSG_GENERATE;
        return generate_from_pb(e->generate, &m->u.generate);
    case TINYVLM__ENVELOPE__BODY_CHUNK:
        m->type = MSG_CHUNK;
        return chunk_from_pb(e->chunk, &m->u.chunk);
    case TINYVLM__ENVELOPE__BODY_CANCEL:
        m->type = MSG_CANCEL;
        m->u.cancel_id = e->cancel->id;
        return TV_OK;
    case TINYVLM__ENVELOPE__BODY_ERROR: {
        m->type = MSG_ERROR;
        msg_error *er = &m->u.error;
        er->id = e->error->id;
        er->status = e->error->status;
        int rc = take_str(e->error->code, &er->code, "error code");
        return rc ? rc : take_str(e->error->message, &er->message, "error message");
    }
    case TINYVLM__ENVELOPE__BODY_BYE:
        m->type = MSG_BYE;
        return take_str(e->bye->reason, &m->u.bye_reason, "bye reason");
    default:
        return err_set(TV_EFORMAT, "envelope without a known body (case %d)", (int)e->body_case);
    }
}

/* ---- receiving -------------------------------------------------------------------------------- */

/* Drops the rest of a multipart message. */
static void drain_more(void *z) {
    int more = 0;
    size_t sz = sizeof more;
    while (zmq_getsockopt(z, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, z, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f);
            return;
        }
        zmq_msg_close(&f);
        sz = sizeof more;
    }
}

static int has_more(void *z) {
    int more = 0;
    size_t sz = sizeof more;
    return zmq_getsockopt(z, ZMQ_RCVMORE, &more, &sz) == 0 && more;
}

/* Answers a wrong-version envelope. Never answers an Error, so two mismatched peers cannot
 * bounce refusals at each other forever. */
static void refuse_version(msg_sock *s, const char *peer, const Tinyvlm__Envelope *e) {
    if (e->body_case == TINYVLM__ENVELOPE__BODY_ERROR) return;
    if (s->router && !*peer) return;
    char text[128];
    snprintf(text, sizeof text, "envelope version %" PRIu32 " is not supported (this is %d)",
             e->version, MSG_VERSION);
    msg r = {.type = MSG_ERROR};
    r.u.error = (msg_error){.id = 0, .status = 400, .code = "bad_version", .message = text};
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", err_msg());
    if (msg_send(s, s->router ? peer : NULL, &r) != TV_OK)
        log_debug("msg", "could not refuse bad version: %s", err_msg());
    err_set(TV_EFORMAT, "%s", keep);
}

/* Unpacks one payload frame into m. */
static int decode(msg_sock *s, const char *peer, const uint8_t *data, size_t len, msg *m) {
    if (len > MSG_FRAME_MAX)
        return err_set(TV_EFORMAT, "frame of %zu bytes over the %u-byte limit", len, MSG_FRAME_MAX);
    alloc_budget b = {0, len + UNPACK_SLACK};
    ProtobufCAllocator a = {budget_alloc, budget_free, &b};
    Tinyvlm__Envelope *e = tinyvlm__envelope__unpack(&a, len, data);
    if (!e)
        return err_set(TV_EFORMAT, "undecodable %zu-byte frame%s%s", len, *peer ? " from " : "",
                       peer);
    int rc;
    if (e->version != MSG_VERSION) {
        rc = err_set(TV_EFORMAT, "envelope version %" PRIu32 " from %s, expected %d", e->version,
                     *peer ? peer : "the gateway", MSG_VERSION);
        refuse_version(s, peer, e);
    } else {
        rc = env_from_pb(e, m);
        m->seq = e->seq;
        if (rc) {
            msg_clear(m);
            err_wrap(rc, "bad message%s%s", *peer ? " from " : "", peer);
        }
    }
    tinyvlm__envelope__free_unpacked(e, &a);
    return rc;
}

/* Reads the identity frame of a ROUTER message into peer. */
static int read_peer(msg_sock *s, char *peer, size_t peer_cap) {
    zmq_msg_t f;
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, s->z, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&f);
        return errno == EAGAIN || errno == EINTR
                   ? err_set(TV_ETIMEOUT, "nothing received on %s", s->endpoint)
                   : err_set(TV_EIO, "recv on %s: %s", s->endpoint, zmq_strerror(errno));
    }
    size_t n = zmq_msg_size(&f);
    const char *d = zmq_msg_data(&f);
    int ok = n > 0 && n < MSG_PEER_MAX && n < peer_cap && !memchr(d, 0, n);
    if (ok) {
        memcpy(peer, d, n);
        peer[n] = 0;
    }
    zmq_msg_close(&f);
    if (!ok) {
        drain_more(s->z);
        return err_set(TV_EFORMAT, "message from a peer without a usable id (%zu bytes)", n);
    }
    if (!has_more(s->z)) return err_set(TV_EFORMAT, "peer %s sent an empty message", peer);
    return TV_OK;
}

int msg_recv(msg_sock *s, int timeout_ms, msg *m, char *peer, size_t peer_cap) {
    char none[1] = "";
    if (!s || !m) return err_set(TV_EINVAL, "msg_recv: NULL socket or message");
    memset(m, 0, sizeof *m);
    if (s->router && (!peer || peer_cap < MSG_PEER_MAX))
        return err_set(TV_EINVAL, "msg_recv on a listening socket needs a peer buffer");
    if (!s->router || !peer) peer = none;
    peer[0] = 0;
    zmq_pollitem_t it = {.socket = s->z, .events = ZMQ_POLLIN};
    int n = zmq_poll(&it, 1, timeout_ms < 0 ? -1 : timeout_ms);
    if (n < 0 && errno != EINTR) return err_set(TV_EIO, "poll on %s: %s", s->endpoint, zmq_strerror(errno));
    if (n <= 0) return err_set(TV_ETIMEOUT, "nothing received on %s within %d ms", s->endpoint, timeout_ms);
    if (s->router) {
        int rc = read_peer(s, peer, peer_cap);
        if (rc) return rc;
    }
    zmq_msg_t f;
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, s->z, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&f);
        return errno == EAGAIN || errno == EINTR
                   ? err_set(TV_ETIMEOUT, "nothing received on %s", s->endpoint)
                   : err_set(TV_EIO, "recv on %s: %s", s->endpoint, zmq_strerror(errno));
    }
    int rc;
    if (has_more(s->z)) {
        drain_more(s->z);
        rc = err_set(TV_EFORMAT, "multipart message%s%s: expected one frame", *peer ? " from " : "",
                     peer);
    } else {
        rc = decode(s, peer, zmq_msg_data(&f), zmq_msg_size(&f), m);
    }
    zmq_msg_close(&f);
    return rc;
}

/* ---- freeing ---------------------------------------------------------------------------------- */

static void generate_clear(msg_generate *g) {
    for (size_t i = 0; i < g->n_messages && g->messages; i++) {
        msg_chat *c = &g->messages[i];
        free(c->role);
        for (size_t j = 0; j < c->n_parts && c->parts; j++) free(c->parts[j].text);
        free(c->parts);
    }
    free(g->messages);
    for (size_t i = 0; i < g->n_images && g->images; i++) {
        free(g->images[i].cache_key);
        free(g->images[i].embedding.data);
    }
    free(g->images);
    for (size_t i = 0; i < g->sampling.n_stop && g->sampling.stop; i++) free(g->sampling.stop[i]);
    free(g->sampling.stop);
    free(g->tenant);
}

void msg_clear(msg *m) {
    if (!m) return;
    switch (m->type) {
    case MSG_HELLO:
        free(m->u.hello.worker_id);
        free(m->u.hello.model);
        free(m->u.hello.fingerprint);
        free(m->u.hello.device);
        break;
    case MSG_HEARTBEAT:
        free(m->u.heartbeat.held);
        break;
    case MSG_ENCODE:
        free(m->u.encode.image);
        free(m->u.encode.cache_key);
        break;
    case MSG_ENCODED:
        free(m->u.encoded.embedding.data);
        break;
    case MSG_GENERATE:
        generate_clear(&m->u.generate);
        break;
    case MSG_CHUNK:
        free(m->u.chunk.text);
        free(m->u.chunk.tokens);
        free(m->u.chunk.finish_reason);
        break;
    case MSG_ERROR:
        free(m->u.error.code);
        free(m->u.error.message);
        break;
    case MSG_BYE:
        free(m->u.bye_reason);
        break;
    default:
        break;
    }
    memset(m, 0, sizeof *m);
}

/* ---- polling ---------------------------------------------------------------------------------- */

int msg_poll(msg_sock **socks, int n_socks, int *ready_socks, const int *fds, int n_fds,
             int *ready_fds, int timeout_ms) {
    if (n_socks < 0 || n_fds < 0 || (n_socks && (!socks || !ready_socks)) ||
        (n_fds && (!fds || !ready_fds)))
        return err_set(TV_EINVAL, "msg_poll: bad arguments");
    zmq_pollitem_t local[32], *it = local;
    int n = n_socks + n_fds;
    if (n > 32) it = tv_xcalloc((size_t)n, sizeof *it);
    for (int i = 0; i < n_socks; i++)
        it[i] = (zmq_pollitem_t){.socket = socks[i]->z, .events = ZMQ_POLLIN};
    for (int j = 0; j < n_fds; j++)
        it[n_socks + j] = (zmq_pollitem_t){.socket = NULL, .fd = fds[j], .events = ZMQ_POLLIN};
    int rc = zmq_poll(it, n, timeout_ms < 0 ? -1 : timeout_ms);
    if (rc < 0 && errno == EINTR) rc = 0; /* a signal: let the caller look at its stop flag */
    if (rc < 0) {
        rc = err_set(TV_EIO, "zmq_poll: %s", zmq_strerror(errno));
    } else {
        rc = 0;
        for (int i = 0; i < n_socks; i++) rc += ready_socks[i] = (it[i].revents & ZMQ_POLLIN) != 0;
        for (int j = 0; j < n_fds; j++)
            rc += ready_fds[j] = (it[n_socks + j].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) != 0;
    }
    if (it != local) free(it);
    return rc;
}
