/* gw_int — what the gateway's own files share (not a public interface): the gateway state, the
 * job the router thread routes, and the hub functions handler threads call.
 *
 * Threads: HTTP handler threads build a job and hand it to the router thread through the
 * command queue (gw_submit / gw_cancel, which write the eventfd the router polls); from then on
 * only the router thread touches the job, and answers flow back through the job's gw_box.
 * The registry (g->reg) and the queue counters are guarded by g->mu: the router writes them,
 * handlers read them (readiness, models, metrics, model resolution). */
#ifndef TV_GW_INT_H
#define TV_GW_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "api.h"
#include "auth.h"
#include "box.h"
#include "cache.h"
#include "gateway.h"
#include "metrics.h"
#include "msg.h"
#include "router.h"

typedef struct gw_job {
    uint64_t id;
    msg_worker_kind kind;
    char fingerprint[65];
    msg m;                    /* the request; every pointer malloc'd (msg_clear frees it) */
    gw_box *box;              /* the router's reference */
    char worker[MSG_PEER_MAX]; /* "" while waiting for a slot */
    int streamed;             /* a non-final chunk went to the client: cannot be retried */
    uint32_t tokens;          /* completion tokens its chunks have counted so far */
    int reroutes;
    uint64_t seq;             /* msg.seq it was last sent with (0 = not sent yet) */
    double deadline;          /* monotonic seconds */
    double orphan_since;      /* waiting with no eligible worker registered since (0 = not) */
    double cancel_at;         /* > 0: cancelled at; the slot is freed when the worker confirms */
    struct gw_job *next;
} gw_job;

typedef struct gw_cmd {
    gw_job *job;              /* submit (job != NULL: a chain linked by next, one request) ... */
    uint64_t cancel_id;       /* ... or cancel */
    struct gw_cmd *next;
} gw_cmd;

/* An image encode in flight, shared by every request that needs the same key meanwhile. */
typedef struct gw_enc {
    char key[160];
    gw_box *box;
    struct gw_enc *next;
} gw_enc;

/* Job sequence numbers (proto Envelope.seq): the top bits are a random nonce per gateway
 * process, so a worker's last_seq from before a gateway restart is never taken for ours. */
#define GW_SEQ_NONCE_BITS 24
#define GW_SEQ_SAME_GATEWAY(a, b) ((a) >> (64 - GW_SEQ_NONCE_BITS) == (b) >> (64 - GW_SEQ_NONCE_BITS))

typedef struct gw {
    gateway_opts o;
    gw_limits lim;
    gw_metrics *met;
    gw_auth *auth;
    cache *cache;
    int own_cache;
    msg_ctx *ctx;
    int own_ctx;
    msg_sock *sock;           /* the router thread's */
    volatile sig_atomic_t *stop;
    atomic_int quit;          /* tells the router thread to return */
    atomic_int stopping;      /* handler threads stop waiting and answer 503 */

    pthread_mutex_t mu;       /* reg, queued[] */
    gw_registry reg;
    int queued[3];            /* jobs waiting for a slot, by msg_worker_kind */

    pthread_mutex_t cmd_mu;
    gw_cmd *cmd_head, *cmd_tail;
    int efd;                  /* eventfd: wakes the router thread */

    gw_job *jobs;             /* router thread only: every live job, oldest first */
    uint64_t seq;             /* router thread only: the last job seq handed out; its top
                               * GW_SEQ_NONCE_BITS bits name this gateway process */

    pthread_mutex_t enc_mu;
    gw_enc *encs;

    atomic_uint_fast64_t next_id;
    atomic_int inflight_http;
    pthread_t router;
    int router_started;
} gw;

/* ---- hub.c: the router thread --------------------------------------------------------------- */

/* Binds the msg endpoint (g->sock), then starts the router thread. Returns 0 or TV_EIO. */
int gw_hub_start(gw *g);
/* Stops and joins the router thread; fails every job still alive; closes the socket. */
void gw_hub_stop(gw *g);

/* Hands a job to the router: m (MSG_ENCODE or MSG_GENERATE, pointers malloc'd) moves into it;
 * its id is set by the hub. Returns the handler's reference to the job's box (unref when done)
 * and the id in *id. Every job ends with exactly one final event in the box: the worker's
 * answer, or an MSG_ERROR the hub made (503 no worker / queue full, 504 deadline, ...). */
gw_box *gw_submit(gw *g, msg_worker_kind kind, const char *fingerprint, msg *m, double deadline,
                  uint64_t *id);

/* The same in two steps, so that several jobs reach the router in one command (a request's
 * images): gw_job_prepare makes the job (its box and id exist at once; nothing is sent) and
 * gw_submit_jobs hands jobs[0..n) over together. The router admits them as one request: the
 * first is refused (503 queue_full) only when it cannot be placed and the queue is full, the
 * others follow its fate, and all are placed on the workers with the most free slots in the
 * same pass (what does not fit waits in the queue). A prepared job must be submitted. */
gw_job *gw_job_prepare(gw *g, msg_worker_kind kind, const char *fingerprint, msg *m,
                       double deadline, gw_box **box, uint64_t *id);
void gw_submit_jobs(gw *g, gw_job **jobs, size_t n);

/* Asks the router to cancel job id (no-op if it already ended). */
void gw_cancel(gw *g, uint64_t id);

/* An MSG_ERROR msg with malloc'd strings (for gw_box_push). */
void gw_error_msg(msg *m, uint64_t id, uint32_t status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
