/* msg — the message layer between the gateway and the workers: ZeroMQ sockets carrying the
 * protobuf-c Envelope of proto/tinyvlm.proto. This is the ONLY module that touches ZeroMQ frames
 * or protobuf-c; everyone else uses the plain C structs below.
 *
 * Topology: the gateway msg_listen()s (a ROUTER socket) on e.g. "tcp://0.0.0.0:5555" or
 * "inproc://tinyvlm" (for `tinyvlm serve`); every worker msg_connect()s (a DEALER socket whose
 * ZeroMQ identity is its worker id) once per gateway. On a listening socket every received
 * message says which peer (worker id) sent it, and msg_send names the peer to send to.
 *
 * Threads: a msg_sock belongs to the thread that uses it (ZeroMQ sockets are not thread-safe).
 * msg_ctx is thread-safe and shared by all sockets of a process; inproc endpoints only connect
 * sockets of the same msg_ctx. Other threads wake a socket's owner through an fd (eventfd/pipe)
 * passed to msg_poll.
 *
 * Memory: a msg filled by msg_recv owns all its strings and arrays; msg_clear frees them. Its
 * strings are never NULL ("" when absent); an absent embedding has data == NULL. A msg
 * built by the caller for msg_send is only read (msg_send copies into the wire buffer); never
 * msg_clear a caller-built msg unless its pointers are malloc'd. */
#ifndef TV_MSG_H
#define TV_MSG_H

#include <stddef.h>
#include <stdint.h>

#define MSG_VERSION 1

/* Peer ids (worker ids) are at most this long, NUL included. */
#define MSG_PEER_MAX 128

/* Limits: msg_send refuses (TV_EINVAL) and msg_recv drops (TV_EFORMAT) anything beyond them, so a
 * hostile or broken peer cannot make us allocate without bound. */
#define MSG_FRAME_MAX (66u << 20)       /* one packed Envelope, bytes */
#define MSG_MAX_IMAGE_BYTES (64u << 20) /* msg_encode.image_len */
#define MSG_MAX_IMAGES 64               /* msg_generate.n_images */
#define MSG_MAX_MESSAGES 256            /* msg_generate.n_messages */
#define MSG_MAX_PARTS 256               /* msg_chat.n_parts */
#define MSG_MAX_STOP 16                 /* msg_sampling.n_stop */
#define MSG_MAX_STRING (1u << 20)       /* any string, bytes */
#define MSG_MAX_CHUNK_TOKENS 4096       /* msg_chunk.n_tokens */
#define MSG_MAX_EMB_BYTES (16u << 20)   /* msg_embedding.len */
#define MSG_MAX_HELD 65536             /* msg_heartbeat.n_held */

typedef enum {
    MSG_NONE = 0,
    MSG_HELLO,
    MSG_HEARTBEAT,
    MSG_ENCODE,     /* gateway -> vision worker */
    MSG_ENCODED,    /* vision worker -> gateway */
    MSG_GENERATE,   /* gateway -> LM worker */
    MSG_CHUNK,      /* LM worker -> gateway */
    MSG_CANCEL,
    MSG_ERROR,
    MSG_BYE
} msg_type;

typedef enum { MSG_WORKER_UNKNOWN = 0, MSG_WORKER_VISION = 1, MSG_WORKER_LM = 2 } msg_worker_kind;

enum { MSG_EMB_F16 = 1, MSG_EMB_F32 = 2 };

typedef struct {
    msg_worker_kind kind;
    char *worker_id, *model, *fingerprint, *device;
    uint32_t capacity, max_context, emb_rows, emb_dim;
} msg_hello;

typedef struct {
    uint32_t load, capacity;
    uint64_t gpu_mem_used, gpu_mem_total;
    double kernel_seconds;
    uint64_t items_done, tokens_out;
    int draining;
    uint64_t last_seq;        /* worker -> gateway: the last msg.seq received from it */
    uint64_t *held;           /* the ids of its jobs the worker holds (n_held of them) */
    size_t n_held;
} msg_heartbeat;

/* An image embedding [rows, dim]; present when data != NULL. */
typedef struct {
    uint32_t rows, dim, dtype; /* MSG_EMB_F16 | MSG_EMB_F32 */
    uint8_t *data;
    size_t len;                /* rows * dim * (2 or 4) */
} msg_embedding;

typedef struct {
    uint64_t id;
    uint8_t *image;
    size_t image_len;
    char *cache_key;
    int want_inline;
} msg_encode;

typedef struct {
    uint64_t id;
    int cached;
    msg_embedding embedding;
    double seconds;
} msg_encoded;

typedef struct {
    char *cache_key;
    msg_embedding embedding;
} msg_image_ref;

typedef struct {
    char *text;   /* NULL or "" for an image part */
    int32_t image; /* index into msg_generate.images, -1 for text */
} msg_part;

typedef struct {
    char *role;
    msg_part *parts;
    size_t n_parts;
} msg_chat;

typedef struct {
    float temperature, top_p, repetition_penalty;
    uint32_t top_k, max_tokens;
    uint64_t seed;
    int has_seed;
    char **stop;
    size_t n_stop;
} msg_sampling;

typedef struct {
    uint64_t id;
    msg_chat *messages;
    size_t n_messages;
    msg_image_ref *images;
    size_t n_images;
    msg_sampling sampling;
    char *tenant;
    uint64_t deadline_unix_ms;
} msg_generate;

typedef struct {
    uint64_t id;
    char *text;
    int32_t *tokens;
    size_t n_tokens;
    char *finish_reason; /* NULL or "" while running */
    uint32_t prompt_tokens, completion_tokens;
} msg_chunk;

typedef struct {
    uint64_t id;
    uint32_t status;
    char *code, *message;
} msg_error;

/* One message: type says which member is valid. */
typedef struct {
    msg_type type;
    uint64_t seq;                /* gateway -> worker: job sequence number (proto Envelope.seq) */
    union {
        msg_hello hello;
        msg_heartbeat heartbeat;
        msg_encode encode;
        msg_encoded encoded;
        msg_generate generate;
        msg_chunk chunk;
        uint64_t cancel_id;      /* MSG_CANCEL */
        msg_error error;
        char *bye_reason;        /* MSG_BYE */
    } u;
} msg;

/* ---- context and sockets ------------------------------------------------------------------ */

typedef struct msg_ctx msg_ctx;
typedef struct msg_sock msg_sock;

/* A ZeroMQ context. Returns 0 and *out (free with msg_ctx_free after closing its sockets). */
int msg_ctx_new(msg_ctx **out);
void msg_ctx_free(msg_ctx *c);

/* Gateway side: binds endpoint. Returns 0 and *out, or TV_EIO naming the endpoint (in use,
 * bad address). */
int msg_listen(msg_ctx *c, const char *endpoint, msg_sock **out);

/* Worker side: connects to endpoint with identity (< MSG_PEER_MAX bytes). Connecting never
 * waits for the peer: ZeroMQ reconnects by itself; over tcp, messages sent while no peer is
 * connected are dropped after the socket's send timeout (TV_EAGAIN) rather than queued forever;
 * over inproc, messages sent before the gateway binds are queued and delivered once it does. */
int msg_connect(msg_ctx *c, const char *endpoint, const char *identity, msg_sock **out);

/* The endpoint s was bound or connected to; for a listening "tcp://HOST:*" the port actually
 * bound (e.g. "tcp://127.0.0.1:41234"), which tests use to pick a free port. Points into s. */
const char *msg_endpoint(const msg_sock *s);

/* Closes the socket without lingering (pending outgoing messages are dropped). NULL: no-op. */
void msg_close(msg_sock *s);

/* ---- sending and receiving ---------------------------------------------------------------- */

/* Sends m. On a listening socket peer names the worker; on a connected socket peer must be NULL.
 * Never blocks for long: returns TV_OK, TV_EAGAIN if the peer is gone or its queue is full (the
 * message is dropped: the caller treats the peer as failed), or TV_EINVAL for a bad msg (one
 * over a MSG_MAX_* limit, an embedding whose len disagrees with its shape, a part naming a
 * missing image). Timing: a listening socket fails at once for an unknown/gone peer or a full
 * queue; a connected socket waits up to 100 ms for its gateway to be connected, then drops. */
int msg_send(msg_sock *s, const char *peer, const msg *m);

/* Receives one message, waiting at most timeout_ms (0 = do not wait, -1 = forever).
 * Returns TV_OK with *m filled (msg_clear it) and, on a listening socket, the sender's id in
 * peer (peer_cap >= MSG_PEER_MAX); TV_ETIMEOUT when nothing came (or a signal interrupted the
 * wait: check your stop flag); TV_EFORMAT for an undecodable frame, content over a MSG_MAX_*
 * limit, or a wrong Envelope.version (the message is consumed and dropped, *m is left empty, peer
 * names the sender when known; err_msg says why, and for a version mismatch an Error
 * "bad_version" has already been sent back to the sender unless the refused message was itself
 * an Error). */
int msg_recv(msg_sock *s, int timeout_ms, msg *m, char *peer, size_t peer_cap);

/* Frees everything msg_recv allocated in m and zeroes it. NULL or MSG_NONE: no-op. */
void msg_clear(msg *m);

/* Waits until one of the sockets has a message or one of the fds is readable, at most
 * timeout_ms (-1 = forever). Sets ready_socks[i] / ready_fds[j] to 1 for those ready (either
 * array may be NULL when its count is 0). Returns the number ready (0 on timeout) or TV_EIO. */
int msg_poll(msg_sock **socks, int n_socks, int *ready_socks, const int *fds, int n_fds,
             int *ready_fds, int timeout_ms);

/* "hello", "heartbeat", ... for logs. */
const char *msg_type_name(msg_type t);

#endif
