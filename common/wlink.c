/* wlink — worker <-> gateways: sockets, Hello, heartbeats, Bye. */
#include "wlink.h"

#include <arpa/inet.h>
#include <errno.h>
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

#include "err.h"
#include "log.h"

struct wlink {
    int n;
    msg_sock **socks;     /* [n] */
    char **endpoints;     /* [n] copies, for logs */
    uint64_t *heard_ms;   /* [n] last message from gateway i (monotonic), 0 = never */
    int *was_registered;  /* [n] for one log line per change */
    int *ready;           /* [n] msg_poll scratch */
    int next;             /* round-robin start of the next receive */
    msg_hello hello;      /* owned copies of the strings */
    msg_heartbeat hb;
    int heartbeat_ms, timeout_ms, bye;
    uint64_t next_tick_ms;
    /* read by the health thread */
    _Atomic uint64_t turn_ms;   /* last wlink_recv */
    _Atomic uint64_t heard_any; /* last message from any gateway */
    atomic_int said_bye;
    atomic_int health_stop;
    int health_fd;
    pthread_t health_th;
    int health_on;
};

uint64_t wlink_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t wlink_unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void wlink_default_id(const char *kind, char *buf, size_t cap) {
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned r = (unsigned)(ts.tv_nsec ^ (ts.tv_sec << 7) ^ ((unsigned)getpid() << 16));
    snprintf(buf, cap, "%s:%s:%d:%06x", kind, host, (int)getpid(), r & 0xffffff);
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

int wlink_new(msg_ctx *ctx, const char *const *endpoints, int n, const msg_hello *hello,
              int heartbeat_ms, int timeout_ms, wlink **out) {
    *out = NULL;
    if (!ctx || !endpoints || n < 1 || !hello || !hello->worker_id || !hello->worker_id[0])
        return err_set(TV_EINVAL, "wlink_new: needs a context, >= 1 gateway and a worker id");
    wlink *l = tv_xcalloc(1, sizeof *l);
    l->n = n;
    l->socks = tv_xcalloc((size_t)n, sizeof *l->socks);
    l->endpoints = tv_xcalloc((size_t)n, sizeof *l->endpoints);
    l->heard_ms = tv_xcalloc((size_t)n, sizeof *l->heard_ms);
    l->was_registered = tv_xcalloc((size_t)n, sizeof *l->was_registered);
    l->ready = tv_xcalloc((size_t)n, sizeof *l->ready);
    l->hello = *hello;
    l->hello.worker_id = dup_or_empty(hello->worker_id);
    l->hello.model = dup_or_empty(hello->model);
    l->hello.fingerprint = dup_or_empty(hello->fingerprint);
    l->hello.device = dup_or_empty(hello->device);
    l->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : 1000;
    l->timeout_ms = timeout_ms > 0 ? timeout_ms : 3000;
    l->hb.capacity = hello->capacity;
    for (int i = 0; i < n; i++) {
        l->endpoints[i] = dup_or_empty(endpoints[i]);
        int rc = msg_connect(ctx, endpoints[i], hello->worker_id, &l->socks[i]);
        if (rc) {
            wlink_free(l);
            return rc;
        }
    }
    *out = l; /* the first tick (in wlink_recv) sends the Hellos */
    return TV_OK;
}

void wlink_free(wlink *l) {
    if (!l)
        return;
    if (l->health_on) {
        atomic_store(&l->health_stop, 1);
        pthread_join(l->health_th, NULL);
        close(l->health_fd);
    }
    for (int i = 0; i < l->n; i++) {
        msg_close(l->socks[i]);
        free(l->endpoints[i]);
    }
    free(l->socks);
    free(l->endpoints);
    free(l->heard_ms);
    free(l->was_registered);
    free(l->ready);
    free(l->hello.worker_id);
    free(l->hello.model);
    free(l->hello.fingerprint);
    free(l->hello.device);
    free(l);
}

void wlink_set_load(wlink *l, const msg_heartbeat *hb) {
    l->hb = *hb;
    l->hb.draining = l->hb.draining || l->bye;
}

int wlink_count(const wlink *l) { return l->n; }

static int is_registered(const wlink *l, int i, uint64_t now) {
    return l->heard_ms[i] && now - l->heard_ms[i] <= (uint64_t)l->timeout_ms;
}

int wlink_registered(const wlink *l) {
    uint64_t now = wlink_now_ms();
    int k = 0;
    for (int i = 0; i < l->n; i++)
        k += is_registered(l, i, now);
    return k;
}

static void send_hello(wlink *l, int i) {
    msg m = {.type = MSG_HELLO};
    m.u.hello = l->hello;
    if (msg_send(l->socks[i], NULL, &m) != TV_OK)
        log_debug("wlink", "hello to %s not sent (%s); will retry", l->endpoints[i], err_msg());
}

/* Heartbeats to every gateway, Hello to those not registered; one log line per change. */
static void tick(wlink *l, uint64_t now) {
    for (int i = 0; i < l->n; i++) {
        int reg = is_registered(l, i, now);
        if (reg != l->was_registered[i]) {
            if (reg)
                log_info("wlink", "registered with the gateway at %s", l->endpoints[i]);
            else if (!l->bye)
                log_warn("wlink", "gateway at %s silent for %d ms; registering again",
                         l->endpoints[i], l->timeout_ms);
            l->was_registered[i] = reg;
        }
        if (!reg && !l->bye)
            send_hello(l, i);
        msg m = {.type = MSG_HEARTBEAT};
        m.u.heartbeat = l->hb;
        msg_send(l->socks[i], NULL, &m); /* a lost heartbeat is not an error */
    }
    l->next_tick_ms = now + (uint64_t)l->heartbeat_ms;
}

/* Link traffic handled here: returns 1 if m was consumed (and cleared). */
static int link_message(wlink *l, int i, msg *m) {
    if (m->type == MSG_HEARTBEAT || m->type == MSG_HELLO || m->type == MSG_BYE) {
        msg_clear(m);
        return 1;
    }
    if (m->type == MSG_ERROR && m->u.error.id == 0) {
        if (!strcmp(m->u.error.code, "unknown_worker")) {
            if (!l->bye)
                send_hello(l, i);
        } else {
            log_warn("wlink", "gateway at %s refused a message: %s: %s", l->endpoints[i],
                     m->u.error.code, m->u.error.message);
        }
        msg_clear(m);
        return 1;
    }
    return 0;
}

/* One message from any ready socket (round robin). TV_ETIMEOUT if none is ready. */
static int take_one(wlink *l, msg *m, int *gw) {
    for (int k = 0; k < l->n; k++) {
        int i = (l->next + k) % l->n;
        if (!l->ready[i])
            continue;
        int rc = msg_recv(l->socks[i], 0, m, NULL, 0);
        if (rc == TV_ETIMEOUT) {
            l->ready[i] = 0;
            continue;
        }
        if (rc == TV_EFORMAT) {
            log_warn("wlink", "dropped a message from %s: %s", l->endpoints[i], err_msg());
            continue;
        }
        if (rc)
            return rc;
        l->heard_ms[i] = wlink_now_ms();
        atomic_store(&l->heard_any, l->heard_ms[i]);
        if (link_message(l, i, m))
            continue;
        *gw = i;
        l->next = (i + 1) % l->n;
        return TV_OK;
    }
    return TV_ETIMEOUT;
}

int wlink_recv(wlink *l, int timeout_ms, msg *m, int *gw) {
    memset(m, 0, sizeof *m);
    atomic_store(&l->turn_ms, wlink_now_ms());
    uint64_t end = wlink_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        uint64_t now = wlink_now_ms();
        if (now >= l->next_tick_ms)
            tick(l, now);
        int64_t wait = (int64_t)(end < l->next_tick_ms ? end : l->next_tick_ms) - (int64_t)now;
        int n = msg_poll(l->socks, l->n, l->ready, NULL, 0, NULL, wait > 0 ? (int)wait : 0);
        if (n < 0)
            return n;
        if (n > 0) {
            int rc = take_one(l, m, gw);
            if (rc != TV_ETIMEOUT)
                return rc;
        }
        if (wlink_now_ms() >= end)
            return err_set(TV_ETIMEOUT, "no message within %d ms", timeout_ms);
    }
}

int wlink_send(wlink *l, int gw, const msg *m) {
    if (gw < 0 || gw >= l->n)
        return err_set(TV_EINVAL, "wlink_send: no gateway %d", gw);
    return msg_send(l->socks[gw], NULL, m);
}

int wlink_send_error(wlink *l, int gw, uint64_t id, uint32_t status, const char *code,
                     const char *message) {
    msg m = {.type = MSG_ERROR};
    m.u.error = (msg_error){.id = id, .status = status, .code = (char *)code,
                            .message = (char *)(message ? message : "")};
    return wlink_send(l, gw, &m);
}

void wlink_bye(wlink *l, const char *reason) {
    l->bye = 1;
    atomic_store(&l->said_bye, 1);
    l->hb.draining = 1;
    for (int i = 0; i < l->n; i++) {
        msg m = {.type = MSG_BYE};
        m.u.bye_reason = (char *)(reason ? reason : "shutdown");
        msg_send(l->socks[i], NULL, &m);
    }
}

/* ---- health probes ------------------------------------------------------------------------- */

#define WLINK_STALL_MS 10000

static void health_answer(wlink *l, int fd) {
    char req[1024];
    size_t n = 0;
    struct pollfd p = {fd, POLLIN, 0};
    while (n < sizeof req - 1 && poll(&p, 1, 1000) > 0) { /* the request line is enough */
        ssize_t k = recv(fd, req + n, sizeof req - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        req[n] = 0;
        if (strstr(req, "\r\n"))
            break;
    }
    req[n] = 0;
    uint64_t now = wlink_now_ms(), turn = atomic_load(&l->turn_ms),
             heard = atomic_load(&l->heard_any);
    int code = 404;
    const char *body = "not found\n";
    if (!strncmp(req, "GET /healthz", 12)) {
        int ok = now - turn <= WLINK_STALL_MS;
        code = ok ? 200 : 503, body = ok ? "ok\n" : "stalled\n";
    } else if (!strncmp(req, "GET /readyz", 11)) {
        int ok = heard && now - heard <= (uint64_t)l->timeout_ms && !atomic_load(&l->said_bye);
        code = ok ? 200 : 503, body = ok ? "ready\n" : "not registered with a gateway\n";
    }
    char out[256];
    int len = snprintf(out, sizeof out,
                       "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s",
                       code, code == 200 ? "OK" : code == 404 ? "Not Found" : "Service Unavailable",
                       strlen(body), body);
    if (send(fd, out, (size_t)len, MSG_NOSIGNAL) < 0)
        log_debug("wlink", "health answer not sent: %s", strerror(errno));
}

static void *health_main(void *arg) {
    wlink *l = arg;
    while (!atomic_load(&l->health_stop)) {
        struct pollfd p = {l->health_fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int fd = accept(l->health_fd, NULL, NULL);
        if (fd < 0)
            continue;
        health_answer(l, fd);
        close(fd);
    }
    return NULL;
}

int wlink_health_start(wlink *l, int port) {
    if (port <= 0 || l->health_on)
        return TV_OK;
    if (port > 65535)
        return err_set(TV_EINVAL, "health port %d out of range", port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (fd < 0)
        return err_set(TV_EIO, "health port %d: socket: %s", port, strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 16)) {
        int e = errno;
        close(fd);
        return err_set(TV_EIO, "health port %d: %s", port, strerror(e));
    }
    l->health_fd = fd;
    if (pthread_create(&l->health_th, NULL, health_main, l)) {
        close(fd);
        return err_set(TV_EINTERNAL, "health port %d: cannot start its thread", port);
    }
    l->health_on = 1;
    log_info("wlink", "health probes on port %d (/healthz, /readyz)", port);
    return TV_OK;
}
