/* hub — the gateway's router thread: owns the listening msg socket, keeps the worker registry,
 * routes jobs to the worker with the most free capacity, relays answers into the jobs' boxes,
 * heartbeats both ways, drops silent workers and reroutes their work. See gw_int.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "gw_int.h"
#include "log.h"

#define HUB_COMP "gateway"
#define HUB_CANCEL_GRACE_S 5.0  /* a cancelled job's slot is freed after this even if unconfirmed */
#define HUB_MAX_REROUTES 2

/* ---- helpers -------------------------------------------------------------------------------- */

static char *hub_strdup(const char *s) {
    char *d = strdup(s ? s : "");
    TV_ASSERT(d);
    return d;
}

void gw_error_msg(msg *m, uint64_t id, uint32_t status, const char *code, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memset(m, 0, sizeof *m);
    m->type = MSG_ERROR;
    m->u.error.id = id;
    m->u.error.status = status;
    m->u.error.code = hub_strdup(code);
    m->u.error.message = hub_strdup(buf);
}

static const char *hub_kind_name(msg_worker_kind k) {
    return k == MSG_WORKER_VISION ? "vision" : k == MSG_WORKER_LM ? "lm" : "unknown";
}

static uint64_t hub_msg_id(const msg *m) {
    switch (m->type) {
    case MSG_ENCODED: return m->u.encoded.id;
    case MSG_CHUNK: return m->u.chunk.id;
    case MSG_ERROR: return m->u.error.id;
    default: return 0;
    }
}

static void hub_wake(gw *g) {
    uint64_t one = 1;
    ssize_t w = write(g->efd, &one, sizeof one);
    (void)w; /* a full counter still wakes the poll */
}

/* ---- commands from handler threads ---------------------------------------------------------- */

static void hub_push_cmd(gw *g, gw_cmd *c) {
    pthread_mutex_lock(&g->cmd_mu);
    if (g->cmd_tail) g->cmd_tail->next = c;
    else g->cmd_head = c;
    g->cmd_tail = c;
    pthread_mutex_unlock(&g->cmd_mu);
    hub_wake(g);
}

gw_job *gw_job_prepare(gw *g, msg_worker_kind kind, const char *fingerprint, msg *m,
                       double deadline, gw_box **box, uint64_t *id) {
    gw_job *j = tv_xcalloc(1, sizeof *j);
    j->id = atomic_fetch_add(&g->next_id, 1);
    j->kind = kind;
    snprintf(j->fingerprint, sizeof j->fingerprint, "%s", fingerprint);
    j->m = *m;
    memset(m, 0, sizeof *m);
    if (j->m.type == MSG_ENCODE) j->m.u.encode.id = j->id;
    else if (j->m.type == MSG_GENERATE) j->m.u.generate.id = j->id;
    j->box = gw_box_new();
    j->deadline = deadline;
    *box = gw_box_ref(j->box);
    *id = j->id;
    return j;
}

void gw_submit_jobs(gw *g, gw_job **jobs, size_t n) {
    if (!n) return;
    for (size_t i = 0; i + 1 < n; i++) jobs[i]->next = jobs[i + 1];
    jobs[n - 1]->next = NULL;
    gw_cmd *c = tv_xcalloc(1, sizeof *c);
    c->job = jobs[0];
    hub_push_cmd(g, c);
}

gw_box *gw_submit(gw *g, msg_worker_kind kind, const char *fingerprint, msg *m, double deadline,
                  uint64_t *id) {
    gw_box *mine;
    gw_job *j = gw_job_prepare(g, kind, fingerprint, m, deadline, &mine, id);
    gw_submit_jobs(g, &j, 1);
    return mine;
}

void gw_cancel(gw *g, uint64_t id) {
    gw_cmd *c = tv_xcalloc(1, sizeof *c);
    c->cancel_id = id;
    hub_push_cmd(g, c);
}

/* ---- jobs (router thread only) -------------------------------------------------------------- */

static gw_job *hub_job(gw *g, uint64_t id) {
    for (gw_job *j = g->jobs; j; j = j->next)
        if (j->id == id) return j;
    return NULL;
}

static void hub_count_queued(gw *g, gw_job *j, int delta) {
    pthread_mutex_lock(&g->mu);
    g->queued[j->kind] += delta;
    pthread_mutex_unlock(&g->mu);
}

/* Unlinks and frees j, giving back its worker slot. */
static void hub_job_end(gw *g, gw_job *j) {
    for (gw_job **p = &g->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    pthread_mutex_lock(&g->mu);
    if (j->worker[0]) {
        gw_worker *w = gw_reg_find(&g->reg, j->worker);
        if (w && w->inflight) w->inflight--;
    } else {
        g->queued[j->kind]--;
    }
    pthread_mutex_unlock(&g->mu);
    gw_box_unref(j->box);
    msg_clear(&j->m);
    free(j);
}

/* Ends j with an error event the client will see. */
static void hub_job_fail(gw *g, gw_job *j, uint32_t status, const char *code, const char *fmt,
                         ...) __attribute__((format(printf, 5, 6)));
static void hub_job_fail(gw *g, gw_job *j, uint32_t status, const char *code, const char *fmt,
                         ...) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    msg e;
    gw_error_msg(&e, j->id, status, code, "%s", buf);
    gw_box_push(j->box, &e, 1);
    hub_job_end(g, j);
}

/* Sends j to worker index k with the next sequence number. Returns 0, or the msg_send error (the
 * caller handles the worker). */
static int hub_send_job(gw *g, gw_job *j, int k) {
    gw_worker *w = &g->reg.w[k];
    j->m.seq = ++g->seq;
    int rc = msg_send(g->sock, w->id, &j->m);
    if (rc) return rc;
    j->seq = j->m.seq;
    j->tokens = 0; /* a new run counts from the start */
    pthread_mutex_lock(&g->mu);
    gw_reg_assign(&g->reg, k);
    g->reg.w[k].sent_seq = j->seq;
    g->queued[j->kind]--;
    pthread_mutex_unlock(&g->mu);
    snprintf(j->worker, sizeof j->worker, "%s", w->id);
    j->orphan_since = 0;
    return TV_OK;
}

static void hub_drop_worker(gw *g, const char *id, const char *why);

/* Tries to place every waiting job (oldest first). */
static void hub_dispatch(gw *g) {
    for (gw_job *j = g->jobs, *next; j; j = next) {
        next = j->next;
        if (j->worker[0] || j->cancel_at > 0) continue;
        for (;;) {
            pthread_mutex_lock(&g->mu);
            int k = gw_reg_pick(&g->reg, j->kind, j->fingerprint);
            char wid[MSG_PEER_MAX] = "";
            if (k >= 0) snprintf(wid, sizeof wid, "%s", g->reg.w[k].id);
            pthread_mutex_unlock(&g->mu);
            if (k < 0) break;
            int rc = hub_send_job(g, j, k);
            if (rc == TV_OK) break;
            if (rc == TV_EINVAL) { /* the message itself is refused (limits): not the worker's fault */
                hub_job_fail(g, j, 413, "request_too_large", "request refused: %s", err_msg());
                break;
            }
            hub_drop_worker(g, wid, "send failed");
            next = j->next; /* dropping may have rerouted or ended other jobs, not j (not placed) */
        }
    }
}

/* ---- workers -------------------------------------------------------------------------------- */

/* j's worker is gone, or j or its answer was lost on the way; the caller has given back its
 * slot. Puts j back in the queue for hub_dispatch and counts it in metric, or ends it: a
 * cancelled job, a generation that already streamed (why_streamed: it cannot start over), a job
 * out of reroutes. Returns 1 if j waits again, 0 if it ended (j is freed). */
static int hub_job_again(gw *g, gw_job *j, const char *metric, const char *why_streamed) {
    j->worker[0] = 0;
    hub_count_queued(g, j, 1);
    if (j->cancel_at > 0) {
        hub_job_fail(g, j, 499, "cancelled", "cancelled");
    } else if (j->kind == MSG_WORKER_LM && j->streamed) {
        hub_job_fail(g, j, 503, "worker_lost", "%s", why_streamed);
    } else if (++j->reroutes > HUB_MAX_REROUTES) {
        hub_job_fail(g, j, 503, "worker_lost", "workers kept failing on this request");
    } else {
        gw_met_add(g->met, metric, "", 1);
        return 1;
    }
    return 0;
}

/* Removes a worker and reroutes its jobs: encodes are retried elsewhere, generations that have
 * not streamed yet too, the others end with an error event. */
static void hub_drop_worker(gw *g, const char *id, const char *why) {
    char wid[MSG_PEER_MAX];
    snprintf(wid, sizeof wid, "%s", id);
    pthread_mutex_lock(&g->mu);
    gw_worker *w = gw_reg_find(&g->reg, wid);
    msg_worker_kind kind = w ? w->kind : MSG_WORKER_UNKNOWN;
    if (w) gw_reg_remove(&g->reg, wid);
    pthread_mutex_unlock(&g->mu);
    if (!w) return;
    log_warn(HUB_COMP, "%s worker %s dropped (%s)", hub_kind_name(kind), wid, why);
    gw_met_add(g->met, "tinyvlm_workers_dropped_total", kind == MSG_WORKER_LM ? "kind=\"lm\"" : "kind=\"vision\"", 1);
    for (gw_job *j = g->jobs, *next; j; j = next) {
        next = j->next;
        if (strcmp(j->worker, wid) != 0) continue; /* its slot went with the worker */
        if (hub_job_again(g, j, "tinyvlm_jobs_rerouted_total",
                          "the language-model worker serving this request went away mid-answer"))
            log_info(HUB_COMP, "job %llu rerouted after losing worker %s",
                     (unsigned long long)j->id, wid);
    }
}

static int hub_held(const msg_heartbeat *hb, uint64_t id) {
    for (size_t i = 0; i < hb->n_held; i++)
        if (hb->held[i] == id) return 1;
    return 0;
}

/* A worker's heartbeat says which of our jobs it holds, and the last job seq it has received.
 * Messages on one connection arrive in order, so a job sent to it before that seq which it
 * neither holds nor has answered (its final answer would have come before this heartbeat) was
 * lost on the way, or its answer was: ZeroMQ drops what was queued on a connection that a
 * reconnect replaces (a network cut and restore). Such a job is placed again, as if its worker
 * had been dropped; a generation that already streamed to the client cannot be, and ends with
 * an error. Workers that do not track (last_seq 0) and heartbeats from before a gateway
 * restart (another nonce) are not judged. */
static void hub_check_lost(gw *g, const char *peer, const msg_heartbeat *hb) {
    if (!hb->last_seq || !GW_SEQ_SAME_GATEWAY(hb->last_seq, g->seq)) return;
    for (gw_job *j = g->jobs, *next; j; j = next) {
        next = j->next;
        if (strcmp(j->worker, peer) != 0 || j->cancel_at > 0 || j->seq > hb->last_seq ||
            hub_held(hb, j->id))
            continue;
        log_warn(HUB_COMP, "job %llu: worker %s never got it or its answer was lost (sent as %llu, "
                 "the worker is at %llu and does not hold it)", (unsigned long long)j->id, peer,
                 (unsigned long long)j->seq, (unsigned long long)hb->last_seq);
        pthread_mutex_lock(&g->mu);
        gw_worker *w = gw_reg_find(&g->reg, peer);
        if (w && w->inflight) w->inflight--;
        pthread_mutex_unlock(&g->mu);
        hub_job_again(g, j, "tinyvlm_jobs_resent_total",
                      "the end of this answer was lost between the worker and the gateway");
    }
}

/* A chunk carrying tokens counts the job's completion tokens so far (proto TokenChunk usage):
 * each must add exactly its own tokens to the previous count, or one went missing in between.
 * Resending is no answer here (the worker may still be running that generation, and would
 * stream it twice); hub_on_worker_msg ends the job with an error instead. Chunks without tokens
 * or without a count are not judged. Returns 1 if c follows on. */
static int hub_chunk_continues(gw_job *j, const msg_chunk *c) {
    if (!c->n_tokens || !c->completion_tokens) return 1;
    if (c->completion_tokens != j->tokens + c->n_tokens) return 0;
    j->tokens = c->completion_tokens;
    return 1;
}

static void hub_on_hello(gw *g, const char *peer, const msg_hello *h) {
    if (strcmp(peer, h->worker_id) != 0) {
        log_warn(HUB_COMP, "hello from %s claims id %s: ignored", peer, h->worker_id);
        return;
    }
    pthread_mutex_lock(&g->mu);
    int known = gw_reg_find(&g->reg, peer) != NULL;
    gw_worker *w = gw_reg_hello(&g->reg, h, clk_now_s());
    pthread_mutex_unlock(&g->mu);
    if (!w) {
        log_warn(HUB_COMP, "refused worker: %s", err_msg());
        msg e;
        gw_error_msg(&e, 0, 400, "bad_hello", "%s", err_msg());
        msg_send(g->sock, peer, &e);
        msg_clear(&e);
        return;
    }
    if (!known)
        log_info(HUB_COMP, "%s worker %s registered: model %s (%.12s), capacity %u, %s",
                 hub_kind_name(h->kind), peer, h->model, h->fingerprint, h->capacity, h->device);
}

static void hub_on_worker_msg(gw *g, const char *peer, msg *m) {
    pthread_mutex_lock(&g->mu);
    gw_worker *w = gw_reg_find(&g->reg, peer);
    if (w) {
        w->last_seen = clk_now_s();
        if (m->type == MSG_HEARTBEAT) {
            w->hb = m->u.heartbeat;
            w->hb.held = NULL, w->hb.n_held = 0; /* m owns the list */
            w->draining = m->u.heartbeat.draining;
        } else if (m->type == MSG_BYE) {
            w->draining = 1;
        }
    }
    pthread_mutex_unlock(&g->mu);
    if (!w) {
        if (m->type == MSG_HEARTBEAT) { /* a worker from before a gateway restart */
            msg e;
            gw_error_msg(&e, 0, 400, "unknown_worker", "unknown worker %s: send Hello", peer);
            msg_send(g->sock, peer, &e);
            msg_clear(&e);
        }
        if (m->type != MSG_ENCODED && m->type != MSG_CHUNK && m->type != MSG_ERROR) return;
    }
    if (m->type == MSG_BYE) {
        log_info(HUB_COMP, "worker %s says bye (%s): no new work for it", peer, m->u.bye_reason);
        return;
    }
    if (m->type == MSG_HEARTBEAT) {
        hub_check_lost(g, peer, &m->u.heartbeat);
        return;
    }
    if (m->type == MSG_ERROR && m->u.error.id == 0) {
        log_warn(HUB_COMP, "worker %s: error %u %s: %s", peer, m->u.error.status,
                 m->u.error.code, m->u.error.message);
        return;
    }
    uint64_t id = hub_msg_id(m);
    gw_job *j = id ? hub_job(g, id) : NULL;
    if (!j || strcmp(j->worker, peer) != 0) return; /* late answer for a job that ended */
    int final = m->type != MSG_CHUNK || (m->u.chunk.finish_reason && m->u.chunk.finish_reason[0]);
    if (m->type == MSG_CHUNK && !hub_chunk_continues(j, &m->u.chunk)) {
        /* a chunk went missing (see hub_check_lost): the answer would have a hole in it */
        log_warn(HUB_COMP, "job %llu: worker %s skipped from %u to %u completion tokens: a chunk "
                 "was lost", (unsigned long long)j->id, peer, j->tokens,
                 m->u.chunk.completion_tokens);
        if (!final) {
            msg c = {.type = MSG_CANCEL, .u.cancel_id = j->id};
            msg_send(g->sock, peer, &c);
        }
        hub_job_fail(g, j, 503, "worker_lost",
                     "part of this answer was lost between the worker and the gateway");
        return;
    }
    if (!final) j->streamed = 1;
    gw_box_push(j->box, m, final);
    if (final) hub_job_end(g, j);
}

static void hub_heartbeat(gw *g, double now) {
    char ids[64][MSG_PEER_MAX];
    pthread_mutex_lock(&g->mu);
    size_t n = gw_reg_silent(&g->reg, now, g->o.worker_timeout_ms / 1000.0, ids, 64);
    pthread_mutex_unlock(&g->mu);
    for (size_t i = 0; i < n && i < 64; i++) hub_drop_worker(g, ids[i], "silent");
    msg hb = {.type = MSG_HEARTBEAT};
    for (size_t i = 0;; i++) {
        char wid[MSG_PEER_MAX];
        pthread_mutex_lock(&g->mu);
        int more = i < g->reg.n;
        if (more) {
            snprintf(wid, sizeof wid, "%s", g->reg.w[i].id);
            hb.seq = g->reg.w[i].sent_seq; /* everything before it should have arrived */
        }
        pthread_mutex_unlock(&g->mu);
        if (!more) break;
        if (msg_send(g->sock, wid, &hb) == TV_EAGAIN) {
            hub_drop_worker(g, wid, "unreachable");
            i--;
        }
    }
}

/* Deadlines, cancelled jobs whose worker never confirmed, and waiting jobs without any worker. */
static void hub_timeouts(gw *g, double now) {
    double orphan_limit = g->o.worker_timeout_ms / 1000.0 + 1.0;
    for (gw_job *j = g->jobs, *next; j; j = next) {
        next = j->next;
        if (j->cancel_at > 0) {
            if (!j->worker[0] || now - j->cancel_at > HUB_CANCEL_GRACE_S)
                hub_job_fail(g, j, 499, "cancelled", "cancelled");
            continue;
        }
        if (now > j->deadline) {
            if (j->worker[0]) {
                msg c = {.type = MSG_CANCEL, .u.cancel_id = j->id};
                msg_send(g->sock, j->worker, &c);
            }
            hub_job_fail(g, j, 504, "timeout", "the request took longer than its time limit");
            continue;
        }
        if (j->worker[0]) continue;
        pthread_mutex_lock(&g->mu);
        int any = gw_reg_count(&g->reg, j->kind, j->fingerprint) > 0;
        pthread_mutex_unlock(&g->mu);
        if (any) j->orphan_since = 0;
        else if (j->orphan_since == 0) j->orphan_since = now;
        else if (now - j->orphan_since > orphan_limit)
            hub_job_fail(g, j, 503, "no_worker", "no %s worker is available for this model",
                         hub_kind_name(j->kind));
    }
}

static int hub_queued_total(gw *g) {
    pthread_mutex_lock(&g->mu);
    int n = g->queued[1] + g->queued[2];
    pthread_mutex_unlock(&g->mu);
    return n;
}

/* A new job: placed at once, queued, or refused (no worker at all / queue full). follower: a
 * later job of a request whose first job was admitted (1: it needs no queue room of its own)
 * or refused (-1: refused the same way). Returns 1 if j was refused for a full queue. */
static int hub_on_submit(gw *g, gw_job *j, int follower) {
    j->next = NULL;
    gw_job **p = &g->jobs;
    while (*p) p = &(*p)->next;
    *p = j;
    pthread_mutex_lock(&g->mu);
    int k = gw_reg_pick(&g->reg, j->kind, j->fingerprint);
    int any = gw_reg_count(&g->reg, j->kind, j->fingerprint);
    g->queued[j->kind]++;
    pthread_mutex_unlock(&g->mu);
    if (!any) {
        hub_job_fail(g, j, 503, "no_worker", "no %s worker is registered for this model",
                     hub_kind_name(j->kind));
        return 0;
    }
    if (follower < 0 || (!follower && k < 0 && hub_queued_total(g) > g->o.queue)) {
        hub_job_fail(g, j, 503, "queue_full",
                     "all workers are busy and %d requests are already waiting", g->o.queue);
        return 1;
    }
    hub_dispatch(g);
    return 0;
}

static void hub_on_cancel(gw *g, uint64_t id) {
    gw_job *j = hub_job(g, id);
    if (!j || j->cancel_at > 0) return;
    j->cancel_at = clk_now_s();
    if (!j->worker[0]) {
        hub_job_fail(g, j, 499, "cancelled", "cancelled");
        return;
    }
    msg c = {.type = MSG_CANCEL, .u.cancel_id = id};
    msg_send(g->sock, j->worker, &c);
}

static void hub_drain_cmds(gw *g) {
    uint64_t v;
    ssize_t r = read(g->efd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&g->cmd_mu);
    gw_cmd *c = g->cmd_head;
    g->cmd_head = g->cmd_tail = NULL;
    pthread_mutex_unlock(&g->cmd_mu);
    while (c) {
        gw_cmd *next = c->next;
        int follower = 0;
        for (gw_job *j = c->job, *jn; j; j = jn) { /* one request's jobs, admitted together */
            jn = j->next;
            int refused = hub_on_submit(g, j, follower);
            if (!follower) follower = refused ? -1 : 1;
        }
        if (!c->job) hub_on_cancel(g, c->cancel_id);
        free(c);
        c = next;
    }
}

static void hub_drain_socket(gw *g) {
    for (int i = 0; i < 1000; i++) {
        msg m;
        char peer[MSG_PEER_MAX];
        int rc = msg_recv(g->sock, 0, &m, peer, sizeof peer);
        if (rc == TV_ETIMEOUT) return;
        if (rc) {
            log_warn(HUB_COMP, "dropped a message: %s", err_msg());
            continue;
        }
        if (m.type == MSG_HELLO) hub_on_hello(g, peer, &m.u.hello);
        else hub_on_worker_msg(g, peer, &m);
        msg_clear(&m);
    }
}

static void *hub_main(void *arg) {
    gw *g = arg;
    double next_hb = clk_now_s();
    while (!atomic_load(&g->quit)) {
        int ready_s = 0, ready_f = 0;
        int rc = msg_poll(&g->sock, 1, &ready_s, &g->efd, 1, &ready_f, 100);
        if (rc < 0) log_warn(HUB_COMP, "poll: %s", err_msg());
        hub_drain_cmds(g);
        hub_drain_socket(g);
        double now = clk_now_s();
        if (now >= next_hb) {
            hub_heartbeat(g, now);
            next_hb = now + g->o.heartbeat_ms / 1000.0;
        }
        hub_timeouts(g, now);
        hub_dispatch(g);
    }
    return NULL;
}

int gw_hub_start(gw *g) {
    g->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g->efd < 0) return err_set(TV_EIO, "eventfd: %s", strerror(errno));
    int rc = msg_listen(g->ctx, g->o.listen, &g->sock);
    if (rc) return err_wrap(rc, "workers endpoint");
    if (pthread_create(&g->router, NULL, hub_main, g) != 0)
        return err_set(TV_EINTERNAL, "cannot start the router thread");
    g->router_started = 1;
    return TV_OK;
}

void gw_hub_stop(gw *g) {
    if (g->router_started) {
        atomic_store(&g->quit, 1);
        hub_wake(g);
        pthread_join(g->router, NULL);
        g->router_started = 0;
    }
    if (g->efd >= 0 && g->sock) hub_drain_cmds(g);
    while (g->jobs) hub_job_fail(g, g->jobs, 503, "shutting_down", "the gateway is shutting down");
    msg_close(g->sock);
    g->sock = NULL;
    if (g->efd >= 0) close(g->efd);
    g->efd = -1;
}
