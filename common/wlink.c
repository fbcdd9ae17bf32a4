/* wlink — worker <-> gateways: sockets, Hello, heartbeats, Bye. */
#include "wlink.h"

#include <arpa/inet.h>
#include <netdb.h>
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

#include "clock.h"
#include "err.h"
#include "log.h"

#define WLINK_MAX 64            /* gateway connections at once */
#define WLINK_REUSE_MS 10000    /* a closed slot is reused only after this long */

typedef struct {
    msg_sock *sock;             /* NULL: a closed slot */
    char *endpoint;
    int dns;                    /* the DNS entry it came from; -1 for a fixed endpoint */
    int in_dns;                 /* in that entry's latest answer */
    uint64_t heard_ms;          /* last message from it (monotonic), 0 = never */
    uint64_t closed_ms;
    int was_registered;         /* for one log line per change */
    uint64_t last_seq;          /* the last msg.seq it sent us (its heartbeats and jobs) */
    uint64_t *held;             /* ids of its jobs we hold: received, final answer not sent */
    size_t n_held, cap_held;
} wlink_gw;

typedef struct {
    char *name, *port;          /* from "tcp://NAME:PORT" */
    int failing;                /* last resolution failed (logged once) */
} wlink_dns;

struct wlink {
    msg_ctx *ctx;
    wlink_gw gw[WLINK_MAX];
    int n;                      /* slots in use, open or closed */
    msg_sock *poll_socks[WLINK_MAX];
    int poll_slot[WLINK_MAX], ready[WLINK_MAX], n_poll;
    int next;                   /* round-robin start of the next receive */
    wlink_dns *dns;
    int n_dns, dns_interval_ms;
    uint64_t next_dns_ms;
    msg_hello hello;            /* owned copies of the strings */
    msg_heartbeat hb;
    int heartbeat_ms, timeout_ms, bye;
    uint64_t next_tick_ms;
    long lose_jobs, lose_answers, lose_chunk, chunks_sent; /* fault injection (wlink.h) */
    /* read by the health thread */
    _Atomic uint64_t turn_ms;   /* last wlink_recv */
    _Atomic uint64_t heard_any; /* last message from any gateway */
    atomic_int said_bye;
    atomic_int health_stop;
    int health_fd;
    pthread_t health_th;
    int health_on;
};

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

/* The sockets msg_poll watches: the open slots. */
static void poll_rebuild(wlink *l) {
    l->n_poll = 0;
    for (int i = 0; i < l->n; i++)
        if (l->gw[i].sock) {
            l->poll_socks[l->n_poll] = l->gw[i].sock;
            l->poll_slot[l->n_poll++] = i;
        }
}

/* Connects endpoint into a free slot. Returns the slot, or a negative code. */
static int slot_open(wlink *l, const char *endpoint, int dns) {
    uint64_t now = (uint64_t)clk_now_ms();
    int i = 0;
    while (i < l->n && (l->gw[i].sock || now - l->gw[i].closed_ms < WLINK_REUSE_MS))
        i++;
    if (i == WLINK_MAX)
        return err_set(TV_ELIMIT, "more than %d gateway connections", WLINK_MAX);
    msg_sock *sock = NULL;
    int rc = msg_connect(l->ctx, endpoint, l->hello.worker_id, &sock);
    if (rc)
        return rc;
    wlink_gw *g = &l->gw[i];
    free(g->endpoint);
    free(g->held);
    *g = (wlink_gw){.sock = sock, .endpoint = strdup(endpoint), .dns = dns, .in_dns = 1};
    if (i == l->n)
        l->n++;
    poll_rebuild(l);
    return i;
}

static void slot_close(wlink *l, int i) {
    msg_close(l->gw[i].sock);
    l->gw[i].sock = NULL;
    l->gw[i].closed_ms = (uint64_t)clk_now_ms();
    l->gw[i].heard_ms = 0;
    l->gw[i].was_registered = 0;
    l->gw[i].n_held = 0;
    l->gw[i].last_seq = 0;
    poll_rebuild(l);
}

/* "tcp://NAME:PORT" -> d. */
static int dns_parse(const char *spec, wlink_dns *d) {
    const char *h = spec && !strncmp(spec, "tcp://", 6) ? spec + 6 : NULL;
    const char *colon = h ? strrchr(h, ':') : NULL;
    if (!colon || colon == h || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return err_set(TV_EINVAL, "gateway DNS entry \"%s\": expected tcp://NAME:PORT",
                       spec ? spec : "");
    d->name = strndup(h, (size_t)(colon - h));
    d->port = strdup(colon + 1);
    return TV_OK;
}

/* Resolves DNS entry k and connects to its new addresses. */
static void dns_refresh(wlink *l, int k) {
    wlink_dns *d = &l->dns[k];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int e = getaddrinfo(d->name, d->port, &hints, &res);
    if (e) {
        if (!d->failing)
            log_warn("wlink", "gateway name %s does not resolve (%s); trying again", d->name,
                     gai_strerror(e));
        d->failing = 1;
        return;
    }
    d->failing = 0;
    for (int i = 0; i < l->n; i++)
        if (l->gw[i].sock && l->gw[i].dns == k)
            l->gw[i].in_dns = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN], ep[INET6_ADDRSTRLEN + 32];
        const void *src = a->ai_family == AF_INET6
                              ? (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr
                              : (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr;
        if (!inet_ntop(a->ai_family, src, ip, sizeof ip))
            continue;
        snprintf(ep, sizeof ep, a->ai_family == AF_INET6 ? "tcp://[%s]:%s" : "tcp://%s:%s", ip,
                 d->port);
        int i = 0;
        while (i < l->n && !(l->gw[i].sock && !strcmp(l->gw[i].endpoint, ep)))
            i++;
        if (i < l->n) {
            l->gw[i].in_dns = 1;
        } else if (slot_open(l, ep, k) >= 0) {
            log_info("wlink", "gateway %s:%s -> %s added", d->name, d->port, ep);
        } else {
            log_warn("wlink", "gateway %s: %s", ep, err_msg());
        }
    }
    freeaddrinfo(res);
}

static void dns_all(wlink *l, uint64_t now) {
    for (int k = 0; k < l->n_dns; k++)
        dns_refresh(l, k);
    l->next_dns_ms = now + (uint64_t)l->dns_interval_ms;
}

int wlink_new(msg_ctx *ctx, const wlink_opts *o, const msg_hello *hello, wlink **out) {
    *out = NULL;
    if (!ctx || !o || o->n_endpoints + o->n_dns < 1 || o->n_endpoints + o->n_dns > WLINK_MAX ||
        !hello || !hello->worker_id || !hello->worker_id[0])
        return err_set(TV_EINVAL, "wlink_new: needs a context, 1 to %d gateways and a worker id",
                       WLINK_MAX);
    wlink *l = tv_xcalloc(1, sizeof *l);
    l->ctx = ctx;
    l->hello = *hello;
    l->hello.worker_id = dup_or_empty(hello->worker_id);
    l->hello.model = dup_or_empty(hello->model);
    l->hello.fingerprint = dup_or_empty(hello->fingerprint);
    l->hello.device = dup_or_empty(hello->device);
    l->heartbeat_ms = o->heartbeat_ms > 0 ? o->heartbeat_ms : 1000;
    l->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 3000;
    l->dns_interval_ms = o->dns_interval_ms > 0 ? o->dns_interval_ms : 5000;
    l->hb.capacity = hello->capacity;
    const char *lj = getenv("TINYVLM_TEST_LOSE_JOBS"), *la = getenv("TINYVLM_TEST_LOSE_ANSWERS"),
               *lc = getenv("TINYVLM_TEST_LOSE_CHUNK");
    l->lose_jobs = lj ? strtol(lj, NULL, 10) : 0;
    l->lose_answers = la ? strtol(la, NULL, 10) : 0;
    l->lose_chunk = lc ? strtol(lc, NULL, 10) : 0;
    if (l->lose_jobs > 0 || l->lose_answers > 0 || l->lose_chunk > 0)
        log_warn("wlink", "fault injection: the first %ld jobs and %ld answers are lost, and "
                 "non-final chunk number %ld", l->lose_jobs, l->lose_answers, l->lose_chunk);
    int rc = TV_OK;
    for (int i = 0; !rc && i < o->n_endpoints; i++)
        rc = slot_open(l, o->endpoints[i], -1) < 0 ? err_wrap(TV_EIO, "gateway %s", o->endpoints[i])
                                                    : TV_OK;
    l->dns = tv_xcalloc((size_t)(o->n_dns > 0 ? o->n_dns : 1), sizeof *l->dns);
    for (int k = 0; !rc && k < o->n_dns; k++)
        if ((rc = dns_parse(o->dns[k], &l->dns[k])) == TV_OK)
            l->n_dns++;
    if (rc) {
        wlink_free(l);
        return rc;
    }
    dns_all(l, (uint64_t)clk_now_ms());
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
        msg_close(l->gw[i].sock);
        free(l->gw[i].endpoint);
        free(l->gw[i].held);
    }
    for (int k = 0; k < l->n_dns; k++) {
        free(l->dns[k].name);
        free(l->dns[k].port);
    }
    free(l->dns);
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

int wlink_count(const wlink *l) {
    return l->n_poll;
}

static int is_registered(const wlink *l, int i, uint64_t now) {
    const wlink_gw *g = &l->gw[i];
    return g->sock && g->heard_ms && now - g->heard_ms <= (uint64_t)l->timeout_ms;
}

int wlink_registered(const wlink *l) {
    uint64_t now = (uint64_t)clk_now_ms();
    int k = 0;
    for (int i = 0; i < l->n; i++)
        k += is_registered(l, i, now);
    return k;
}

/* ---- the jobs we hold, per gateway (see proto Heartbeat.held) ---------------------------- */

/* The id of a job message (encode, generate), or 0. */
static uint64_t job_id(const msg *m) {
    return m->type == MSG_ENCODE ? m->u.encode.id : m->type == MSG_GENERATE ? m->u.generate.id : 0;
}

/* The id a final answer ends (encoded, the last chunk, an error about a job), or 0. */
static uint64_t final_id(const msg *m) {
    switch (m->type) {
    case MSG_ENCODED: return m->u.encoded.id;
    case MSG_CHUNK: return m->u.chunk.finish_reason && m->u.chunk.finish_reason[0] ? m->u.chunk.id : 0;
    case MSG_ERROR: return m->u.error.id;
    default: return 0;
    }
}

static int held_find(const wlink_gw *g, uint64_t id) {
    for (size_t k = 0; k < g->n_held; k++)
        if (g->held[k] == id)
            return (int)k;
    return -1;
}

static void held_add(wlink_gw *g, uint64_t id) {
    if (g->n_held == g->cap_held) {
        g->cap_held = g->cap_held ? 2 * g->cap_held : 16;
        g->held = tv_xrealloc(g->held, g->cap_held * sizeof *g->held);
    }
    g->held[g->n_held++] = id;
}

static void held_remove(wlink_gw *g, uint64_t id) {
    int k = held_find(g, id);
    if (k >= 0)
        g->held[k] = g->held[--g->n_held];
}

/* Our heartbeat to gateway i: the load figures, and what we hold of its jobs. */
static void send_heartbeat(wlink *l, int i) {
    wlink_gw *g = &l->gw[i];
    msg m = {.type = MSG_HEARTBEAT};
    m.u.heartbeat = l->hb;
    m.u.heartbeat.last_seq = g->last_seq;
    m.u.heartbeat.n_held = g->n_held < MSG_MAX_HELD ? g->n_held : MSG_MAX_HELD;
    m.u.heartbeat.held = g->held;
    msg_send(g->sock, NULL, &m); /* a lost heartbeat is not an error */
}

static void send_hello(wlink *l, int i) {
    msg m = {.type = MSG_HELLO};
    m.u.hello = l->hello;
    if (msg_send(l->gw[i].sock, NULL, &m) != TV_OK)
        log_debug("wlink", "hello to %s not sent (%s); will retry", l->gw[i].endpoint, err_msg());
}

/* Heartbeats to every gateway, Hello to those not registered; one log line per change; DNS
 * addresses that left the answer are closed once silent. */
static void tick(wlink *l, uint64_t now) {
    for (int i = 0; i < l->n; i++) {
        wlink_gw *g = &l->gw[i];
        if (!g->sock)
            continue;
        int reg = is_registered(l, i, now);
        if (!reg && g->dns >= 0 && !g->in_dns) {
            log_info("wlink", "gateway %s left the DNS answer and is silent: closed", g->endpoint);
            slot_close(l, i);
            continue;
        }
        if (reg != g->was_registered) {
            if (reg)
                log_info("wlink", "registered with the gateway at %s", g->endpoint);
            else if (!l->bye)
                log_warn("wlink", "gateway at %s silent for %d ms; registering again",
                         g->endpoint, l->timeout_ms);
            g->was_registered = reg;
        }
        if (!reg && !l->bye)
            send_hello(l, i);
        send_heartbeat(l, i);
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
            log_warn("wlink", "gateway at %s refused a message: %s: %s", l->gw[i].endpoint,
                     m->u.error.code, m->u.error.message);
        }
        msg_clear(m);
        return 1;
    }
    return 0;
}

/* A job from gateway i: held until its final answer goes out (wlink_send). Returns 0 if it is
 * dropped (and cleared) instead: a test's injected loss, or a copy of a job we already hold
 * (the gateway only sends again what we did not hold, so this is a safety net: two runs of
 * one generation would interleave their chunks). */
static int take_job(wlink *l, int i, msg *m) {
    uint64_t id = job_id(m);
    if (!id)
        return 1;
    if (l->lose_jobs > 0) {
        l->lose_jobs--;
        log_warn("wlink", "fault injection: job %llu from %s lost", (unsigned long long)id,
                 l->gw[i].endpoint);
    } else if (held_find(&l->gw[i], id) >= 0) {
        log_warn("wlink", "job %llu from %s arrived twice: the copy is dropped",
                 (unsigned long long)id, l->gw[i].endpoint);
    } else {
        held_add(&l->gw[i], id);
        return 1;
    }
    msg_clear(m);
    return 0;
}

/* One message from any ready socket (round robin over the poll list). TV_ETIMEOUT if none. */
static int take_one(wlink *l, msg *m, int *gw) {
    for (int k = 0; k < l->n_poll; k++) {
        int p = (l->next + k) % l->n_poll, i = l->poll_slot[p];
        if (!l->ready[p])
            continue;
        int rc = msg_recv(l->gw[i].sock, 0, m, NULL, 0);
        if (rc == TV_ETIMEOUT) {
            l->ready[p] = 0;
            continue;
        }
        if (rc == TV_EFORMAT) {
            log_warn("wlink", "dropped a message from %s: %s", l->gw[i].endpoint, err_msg());
            continue;
        }
        if (rc)
            return rc;
        l->gw[i].heard_ms = (uint64_t)clk_now_ms();
        atomic_store(&l->heard_any, l->gw[i].heard_ms);
        if (m->seq)
            l->gw[i].last_seq = m->seq;
        if (link_message(l, i, m) || !take_job(l, i, m))
            continue;
        *gw = i;
        l->next = (p + 1) % l->n_poll;
        return TV_OK;
    }
    return TV_ETIMEOUT;
}

int wlink_recv(wlink *l, int timeout_ms, msg *m, int *gw) {
    memset(m, 0, sizeof *m);
    atomic_store(&l->turn_ms, (uint64_t)clk_now_ms());
    uint64_t end = (uint64_t)clk_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        uint64_t now = (uint64_t)clk_now_ms();
        if (l->n_dns && now >= l->next_dns_ms && !l->bye)
            dns_all(l, now);
        if (now >= l->next_tick_ms)
            tick(l, now);
        int64_t wait = (int64_t)(end < l->next_tick_ms ? end : l->next_tick_ms) - (int64_t)now;
        int n = 0;
        if (l->n_poll) {
            n = msg_poll(l->poll_socks, l->n_poll, l->ready, NULL, 0, NULL, wait > 0 ? (int)wait : 0);
        } else if (wait > 0) { /* no gateway address yet (DNS): just wait */
            struct timespec ts = {wait / 1000, (long)(wait % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (n < 0)
            return n;
        if (n > 0) {
            int rc = take_one(l, m, gw);
            if (rc != TV_ETIMEOUT)
                return rc;
        }
        if ((uint64_t)clk_now_ms() >= end)
            return err_set(TV_ETIMEOUT, "no message within %d ms", timeout_ms);
    }
}

int wlink_send(wlink *l, int gw, const msg *m) {
    if (gw < 0 || gw >= l->n)
        return err_set(TV_EINVAL, "wlink_send: no gateway %d", gw);
    if (!l->gw[gw].sock)
        return err_set(TV_EAGAIN, "gateway %s was dropped", l->gw[gw].endpoint);
    uint64_t id = final_id(m);
    if (!id && m->type == MSG_CHUNK && ++l->chunks_sent == l->lose_chunk) {
        log_warn("wlink", "fault injection: a chunk of job %llu lost", (unsigned long long)m->u.chunk.id);
        return TV_OK;
    }
    if (id) { /* sent or not, we no longer hold it: if the answer is lost the gateway resends */
        held_remove(&l->gw[gw], id);
        if (l->lose_answers > 0) {
            l->lose_answers--;
            log_warn("wlink", "fault injection: the answer to job %llu lost", (unsigned long long)id);
            return TV_OK;
        }
    }
    return msg_send(l->gw[gw].sock, NULL, m);
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
        if (!l->gw[i].sock)
            continue;
        msg m = {.type = MSG_BYE};
        m.u.bye_reason = (char *)(reason ? reason : "shutdown");
        msg_send(l->gw[i].sock, NULL, &m);
    }
}

/* ---- long computations ------------------------------------------------------------------- */

typedef struct {
    int (*fn)(void *);
    void *arg;
    int rc, done;
    char msg[1024];
    pthread_mutex_t mu;
    pthread_cond_t cv;
} wlink_job;

static void *busy_main(void *p) {
    wlink_job *j = p;
    int rc = j->fn(j->arg);
    pthread_mutex_lock(&j->mu);
    j->rc = rc;
    if (rc)
        snprintf(j->msg, sizeof j->msg, "%s", err_msg());
    j->done = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* Heartbeats only: no Hello (the gateway has not been silent, we were) and no receiving. */
static void busy_tick(wlink *l, uint64_t now) {
    for (int i = 0; i < l->n; i++)
        if (l->gw[i].sock)
            send_heartbeat(l, i);
    l->next_tick_ms = now + (uint64_t)l->heartbeat_ms;
}

int wlink_busy(wlink *l, int (*fn)(void *arg), void *arg) {
    wlink_job j = {.fn = fn, .arg = arg};
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, busy_main, &j)) { /* no thread: run it here */
        pthread_mutex_destroy(&j.mu);
        pthread_cond_destroy(&j.cv);
        return fn(arg);
    }
    pthread_mutex_lock(&j.mu);
    while (!j.done) {
        uint64_t now = (uint64_t)clk_now_ms();
        if (now >= l->next_tick_ms) {
            pthread_mutex_unlock(&j.mu);
            busy_tick(l, now);
            atomic_store(&l->turn_ms, now); /* busy is alive too */
            pthread_mutex_lock(&j.mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t wait_ns = (l->next_tick_ms - now) * 1000000u + (uint64_t)ts.tv_nsec;
        ts.tv_sec += (time_t)(wait_ns / 1000000000u);
        ts.tv_nsec = (long)(wait_ns % 1000000000u);
        pthread_cond_timedwait(&j.cv, &j.mu, &ts);
    }
    pthread_mutex_unlock(&j.mu);
    pthread_join(th, NULL);
    pthread_mutex_destroy(&j.mu);
    pthread_cond_destroy(&j.cv);
    if (j.rc)
        return err_set(j.rc, "%s", j.msg);
    return TV_OK;
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
    uint64_t now = (uint64_t)clk_now_ms(), turn = atomic_load(&l->turn_ms),
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
