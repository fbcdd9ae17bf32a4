/* wlink — worker <-> gateways: sockets, Hello, heartbeats, Bye. */
#include "wlink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    l->hb.draining = 1;
    for (int i = 0; i < l->n; i++) {
        msg m = {.type = MSG_BYE};
        m.u.bye_reason = (char *)(reason ? reason : "shutdown");
        msg_send(l->socks[i], NULL, &m);
    }
}
