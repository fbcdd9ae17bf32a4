/* router — the gateway's worker registry and routing policy, without sockets or threads:
 * workers register with Hello, refresh with Heartbeat (or any message), are dropped when silent
 * longer than the timeout; work goes to the worker with the most free capacity
 * (capacity - in flight, counted by the gateway itself), never beyond capacity, and among
 * equally free workers to the one picked least recently (so a restarted or newly added worker
 * shares the work at once, and a long-running one is not starved by it); a model is ready
 * when a vision and an LM worker with the same fingerprint are registered.
 *
 * Not thread-safe: the gateway guards one registry with its own lock. */
#ifndef TV_GW_ROUTER_H
#define TV_GW_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "msg.h"

#define GW_NAME_MAX 128

typedef struct {
    char id[MSG_PEER_MAX];
    msg_worker_kind kind;
    char model[GW_NAME_MAX], fingerprint[65], device[GW_NAME_MAX];
    uint32_t capacity, max_context, emb_rows, emb_dim;
    uint32_t inflight;        /* items the gateway sent and has not seen finish */
    int draining;             /* said Bye or heartbeat.draining: no new work */
    double last_seen;         /* monotonic seconds of its last message */
    uint64_t assigned;        /* items ever sent */
    uint64_t last_pick;       /* registry tick of its last assignment (0 = never): ties go to
                               * the least recently picked */
    msg_heartbeat hb;         /* its last heartbeat figures (held = NULL: not kept) */
    uint64_t sent_seq;        /* msg.seq of the last job sent to it (its heartbeats say this) */
} gw_worker;

typedef struct {
    gw_worker *w;
    size_t n, cap;
    uint64_t tick;            /* counts assignments (gw_reg_assign) */
} gw_registry;

void gw_reg_free(gw_registry *r);

/* Registers (or refreshes, keeping its in-flight count) the worker of a Hello. Returns it, or
 * NULL with a message for a Hello that cannot be used (no id, unknown kind, zero capacity, bad
 * fingerprint). */
gw_worker *gw_reg_hello(gw_registry *r, const msg_hello *h, double now);

/* The worker with this id, or NULL. Pointers stay valid until the next hello/remove. */
gw_worker *gw_reg_find(gw_registry *r, const char *id);

/* Removes the worker (no-op if absent). */
void gw_reg_remove(gw_registry *r, const char *id);

/* Index of the worker to send the next item of kind/fingerprint to: not draining, in flight
 * below capacity, most free slots (ties: the least recently picked, never-picked first). -1 if
 * none has room. */
int gw_reg_pick(const gw_registry *r, msg_worker_kind kind, const char *fingerprint);

/* Records that one item went to worker index k: one more in flight, stamped as picked now. */
void gw_reg_assign(gw_registry *r, int k);

/* Number of non-draining workers of kind/fingerprint (fingerprint NULL = any). */
int gw_reg_count(const gw_registry *r, msg_worker_kind kind, const char *fingerprint);

/* Writes the ids of workers silent for more than timeout_s into ids (up to cap) and returns how
 * many there are (all of them are counted even beyond cap). Does not remove them. */
size_t gw_reg_silent(const gw_registry *r, double now, double timeout_s,
                     char (*ids)[MSG_PEER_MAX], size_t cap);

/* Which fingerprint serves `model` (a model name, a fingerprint, or NULL/"" for any). need_lm:
 * also an LM worker of the same fingerprint must be registered (chat); otherwise a vision worker
 * is enough (embeddings). Fills fingerprint[65] and the vision worker's details; returns 0,
 * TV_ENOTFOUND (no registered worker has that model), or TV_EAGAIN (the model is known but its
 * pool is incomplete right now). */
int gw_reg_resolve(const gw_registry *r, const char *model, int need_lm, char *fingerprint,
                   char *name, uint32_t *emb_rows, uint32_t *emb_dim);

/* Distinct names of models that are ready (vision + LM of one fingerprint), up to cap; returns
 * the number written. */
size_t gw_reg_models(const gw_registry *r, char (*names)[GW_NAME_MAX], size_t cap);

#endif
