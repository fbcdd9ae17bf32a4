/* test_gateway_cancel — a client that leaves: the real gateway (gateway_run on a thread, HTTP on
 * a free loopback port, workers over inproc) in front of scripted workers, one vision and one LM
 * worker with a single slot whose answers never end by themselves (a chunk every 10 ms until it
 * gets Cancel). Checked, each time by what the LM worker itself receives:
 *   - a streaming client that closes the connection mid-answer: the worker gets Cancel for that
 *     request quickly, its slot is free again (metrics: nothing in flight) and the next request
 *     is served;
 *   - a streaming client that leaves before the first token, and a non-streaming client that
 *     leaves mid-answer: the same;
 *   - a request's images go to the vision pool together: the scripted vision worker (2 slots)
 *     holds both encodes of a 2-image request at once before answering either. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "gateway.h"
#include "msg.h"

#define FP "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define EMB_ROWS 2
#define EMB_DIM 4

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- scripted workers ----------------------------------------------------------------------- */

typedef struct {
    msg_ctx *ctx;
    atomic_int stop;
    /* LM: the request being answered (0 = idle), what it was asked, what came back */
    atomic_ullong active;        /* id of the running generation */
    atomic_int silent;           /* the running one sends no chunk (a long prefill) */
    atomic_int generates;        /* GenerateRequests received */
    atomic_ullong cancelled;     /* id of the last Cancel */
    atomic_int busy_refusals;    /* Generate while the slot was taken (the gateway overbooked) */
    double cancel_at;            /* when the last Cancel arrived */
    /* vision: encodes held at once before answering */
    atomic_int max_held;
} script;

static script S;

static void hello(msg_sock *s, msg_worker_kind kind, const char *id, uint32_t cap) {
    msg m = {.type = MSG_HELLO};
    m.u.hello = (msg_hello){kind, (char *)id, (char *)"scripted", (char *)FP, (char *)"cpu",
                            cap, 4096, EMB_ROWS, EMB_DIM};
    msg_send(s, NULL, &m);
}

static void send_chunk(msg_sock *s, uint64_t id, const char *text, const char *finish, uint32_t n) {
    msg m = {.type = MSG_CHUNK};
    m.u.chunk = (msg_chunk){id, (char *)text, NULL, 0, (char *)finish, 3, n};
    msg_send(s, NULL, &m);
}

/* Generation text says how to answer: "short" -> one final chunk; "silent" -> nothing until
 * Cancel; anything else -> a chunk every 10 ms until Cancel. */
static void lm_on_generate(msg_sock *s, const msg_generate *g) {
    atomic_fetch_add(&S.generates, 1);
    const char *text = g->n_messages && g->messages[0].n_parts && g->messages[0].parts[0].text
                           ? g->messages[0].parts[0].text : "";
    if (atomic_load(&S.active)) {
        atomic_fetch_add(&S.busy_refusals, 1);
        msg e = {.type = MSG_ERROR};
        e.u.error = (msg_error){g->id, 503, (char *)"worker_busy", (char *)"slot taken"};
        msg_send(s, NULL, &e);
        return;
    }
    if (strstr(text, "short")) {
        send_chunk(s, g->id, "ok", "stop", 1);
        return;
    }
    atomic_store(&S.silent, strstr(text, "silent") != NULL);
    atomic_store(&S.active, g->id);
}

static void *lm_main(void *arg) {
    (void)arg;
    msg_sock *s = NULL;
    CHECK_OK(msg_connect(S.ctx, "inproc://gwcancel", "l1", &s));
    if (!s) return NULL;
    double next_hb = 0, next_chunk = 0;
    uint32_t n = 0;
    while (!atomic_load(&S.stop)) {
        double t = clk_now_s();
        if (t >= next_hb) {
            hello(s, MSG_WORKER_LM, "l1", 1); /* doubles as the heartbeat: registration is idempotent */
            msg hb = {.type = MSG_HEARTBEAT};
            hb.u.heartbeat.capacity = 1;
            hb.u.heartbeat.load = atomic_load(&S.active) != 0;
            msg_send(s, NULL, &hb);
            next_hb = t + 0.1;
        }
        uint64_t id = atomic_load(&S.active);
        if (id && !atomic_load(&S.silent) && t >= next_chunk) {
            send_chunk(s, id, "tok ", NULL, ++n);
            next_chunk = t + 0.01;
        }
        msg m;
        char peer[MSG_PEER_MAX];
        if (msg_recv(s, 5, &m, peer, sizeof peer)) continue;
        if (m.type == MSG_GENERATE) {
            lm_on_generate(s, &m.u.generate);
            n = 0;
        } else if (m.type == MSG_CANCEL) {
            S.cancel_at = clk_now_s();
            atomic_store(&S.cancelled, m.u.cancel_id);
            if (m.u.cancel_id == atomic_load(&S.active)) { /* as the real worker: a final chunk */
                send_chunk(s, m.u.cancel_id, "", "cancelled", n);
                atomic_store(&S.active, 0);
            }
        }
        msg_clear(&m);
    }
    msg_close(s);
    return NULL;
}

/* Vision: holds encodes until 2 are in hand (or 300 ms passed), then answers them all inline. */
static void *vision_main(void *arg) {
    (void)arg;
    msg_sock *s = NULL;
    CHECK_OK(msg_connect(S.ctx, "inproc://gwcancel", "v1", &s));
    if (!s) return NULL;
    uint64_t held[8];
    int n_held = 0;
    double next_hb = 0, first_at = 0;
    while (!atomic_load(&S.stop)) {
        double t = clk_now_s();
        if (t >= next_hb) {
            hello(s, MSG_WORKER_VISION, "v1", 2);
            msg hb = {.type = MSG_HEARTBEAT};
            hb.u.heartbeat.capacity = 2;
            msg_send(s, NULL, &hb);
            next_hb = t + 0.1;
        }
        if (n_held && (n_held >= 2 || t - first_at > 0.3)) {
            if (n_held > atomic_load(&S.max_held)) atomic_store(&S.max_held, n_held);
            float v[EMB_ROWS * EMB_DIM];
            for (int i = 0; i < EMB_ROWS * EMB_DIM; i++) v[i] = (float)(i + 1);
            for (int i = 0; i < n_held; i++) {
                msg r = {.type = MSG_ENCODED};
                r.u.encoded.id = held[i];
                r.u.encoded.embedding = (msg_embedding){EMB_ROWS, EMB_DIM, MSG_EMB_F32,
                                                        (uint8_t *)v, sizeof v};
                msg_send(s, NULL, &r);
            }
            n_held = 0;
        }
        msg m;
        char peer[MSG_PEER_MAX];
        if (msg_recv(s, 5, &m, peer, sizeof peer)) continue;
        if (m.type == MSG_ENCODE && n_held < 8) {
            if (!n_held) first_at = clk_now_s();
            held[n_held++] = m.u.encode.id;
        }
        msg_clear(&m);
    }
    msg_close(s);
    return NULL;
}

/* ---- a raw HTTP client (closing the socket is the point) ------------------------------------ */

static int http_port;

static int http_open(const char *method, const char *path, const char *body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    char head[512];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     method, path, body ? strlen(body) : 0);
    if (write(fd, head, (size_t)n) != n ||
        (body && write(fd, body, strlen(body)) != (ssize_t)strlen(body))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads from fd into buf (cap) until `until` appears count times, the peer closes, or timeout.
 * Returns the bytes read. */
static size_t http_read(int fd, char *buf, size_t cap, const char *until, int count, double timeout_s) {
    size_t len = 0;
    double end = clk_now_s() + timeout_s;
    buf[0] = 0;
    while (len + 1 < cap && clk_now_s() < end) {
        int seen = 0;
        for (const char *p = buf; until && (p = strstr(p, until)); p++) seen++;
        if (until && seen >= count) break;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
        buf[len] = 0;
    }
    return len;
}

/* A whole request: returns the status (0 on failure), the body's start in out. */
static int http_do(const char *method, const char *path, const char *body, char *out, size_t cap) {
    int fd = http_open(method, path, body);
    if (fd < 0) return 0;
    http_read(fd, out, cap, NULL, 0, 10.0);
    close(fd);
    int st = 0;
    if (sscanf(out, "HTTP/1.1 %d", &st) != 1) st = 0;
    return st;
}

/* The value of the metrics line starting with `name ` (-1 if absent). */
static double metric(const char *name) {
    static char buf[1 << 16];
    if (http_do("GET", "/metrics", NULL, buf, sizeof buf) != 200) return -1;
    char key[160];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(buf, key);
    return p ? atof(p + strlen(key)) : -1;
}

/* Waits until the LM worker's slot is free in the gateway's eyes and in the worker's. */
static int lm_slot_free(double timeout_s) {
    double end = clk_now_s() + timeout_s;
    while (clk_now_s() < end) {
        if (!atomic_load(&S.active) && metric("tinyvlm_worker_inflight{kind=\"lm\"}") == 0) return 1;
        sleep_ms(20);
    }
    return 0;
}

static const char *chat_body(const char *text, int stream) {
    static char b[512];
    snprintf(b, sizeof b, "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"stream\":%s,"
             "\"max_tokens\":4000}", text, stream ? "true" : "false");
    return b;
}

/* The client of `text` leaves after `events` SSE events (0: before any); then the worker must get
 * Cancel for it within a second, the slot must be free, and a short request must be served. */
static void leave_and_check(const char *what, const char *text, int stream, int events) {
    int gen0 = atomic_load(&S.generates);
    int fd = http_open("POST", "/v1/chat/completions", chat_body(text, stream));
    CHECK(fd >= 0);
    if (fd < 0) return;
    static char buf[1 << 16];
    double wait_end = clk_now_s() + 5;
    while (atomic_load(&S.generates) == gen0 && clk_now_s() < wait_end) sleep_ms(5);
    uint64_t id = atomic_load(&S.active);
    CHECK_MSG(id != 0, "%s: the LM worker got the request", what);
    if (events) {
        http_read(fd, buf, sizeof buf, "data: ", events, 5.0);
        int n = 0;
        for (const char *p = buf; (p = strstr(p, "data: ")); p++) n++;
        CHECK_MSG(n >= events, "%s: %d events before leaving", what, n);
    } else {
        sleep_ms(100);
    }
    double t_cut = clk_now_s();
    close(fd);
    double end = t_cut + 3;
    while (atomic_load(&S.cancelled) != id && clk_now_s() < end) sleep_ms(5);
    CHECK_MSG(atomic_load(&S.cancelled) == id, "%s: the LM worker got Cancel for its request", what);
    double took = S.cancel_at - t_cut;
    CHECK_MSG(atomic_load(&S.cancelled) != id || took < 1.5, "%s: Cancel after %.2f s", what, took);
    CHECK_MSG(lm_slot_free(2.0), "%s: the slot is free again", what);
    char out[4096];
    CHECK_EQ_INT(http_do("POST", "/v1/chat/completions", chat_body("short", 0), out, sizeof out), 200);
    CHECK_MSG(strstr(out, "\"content\":\"ok\"") != NULL, "%s: the next request answered: %.300s", what, out);
}

/* ---- the gateway ---------------------------------------------------------------------------- */

static gateway_opts O;
static volatile sig_atomic_t gw_stop;
static volatile int bound;
static int gw_rc;

static void *gw_main(void *arg) {
    (void)arg;
    gw_rc = gateway_run(&O, &gw_stop);
    return NULL;
}

/* Two 1x1 PNGs (red, blue; written by Pillow) as data: URIs. */
static const char *PNG_A =
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
static const char *PNG_B =
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNgYPgPAAEDAQAIicLsAAAAAElFTkSuQmCC";

int main(void) {
    CHECK_OK(msg_ctx_new(&S.ctx));
    gateway_opts_default(&O);
    O.host = "127.0.0.1";
    O.port = 0;
    O.listen = "inproc://gwcancel";
    O.ctx = S.ctx;
    O.heartbeat_ms = 100;
    O.worker_timeout_ms = 3000;
    O.request_timeout_s = 30;
    O.bound_port = &bound;
    pthread_t gt, lt, vt;
    pthread_create(&gt, NULL, gw_main, NULL);
    for (int i = 0; i < 500 && !bound; i++) sleep_ms(10);
    CHECK(bound > 0);
    http_port = bound;
    pthread_create(&lt, NULL, lm_main, NULL);
    pthread_create(&vt, NULL, vision_main, NULL);
    char out[1 << 14];
    int ready = 0;
    for (int i = 0; i < 300 && !ready; i++) {
        ready = http_do("GET", "/readyz", NULL, out, sizeof out) == 200;
        if (!ready) sleep_ms(10);
    }
    CHECK_MSG(ready, "the scripted workers registered");

    if (ready) {
        leave_and_check("stream cut mid-answer", "stream", 1, 4);
        leave_and_check("stream cut before the first token", "silent", 1, 0);
        leave_and_check("non-streaming client gone mid-answer", "stream", 0, 0);
        leave_and_check("stream cut again (slot reused)", "stream", 1, 20);
        CHECK_EQ_INT(atomic_load(&S.busy_refusals), 0); /* never sent beyond the single slot */

        /* two images of one request: both encodes in the vision worker's hands at once */
        char body[1024];
        snprintf(body, sizeof body, "{\"input\":[\"%s\",\"%s\"]}", PNG_A, PNG_B);
        CHECK_EQ_INT(http_do("POST", "/v1/embeddings", body, out, sizeof out), 200);
        CHECK_EQ_INT(atomic_load(&S.max_held), 2);
    }

    gw_stop = 1;
    pthread_join(gt, NULL);
    CHECK_OK(gw_rc);
    atomic_store(&S.stop, 1);
    pthread_join(lt, NULL);
    pthread_join(vt, NULL);
    msg_ctx_free(S.ctx);
    return check_finish("test_gateway_cancel");
}
