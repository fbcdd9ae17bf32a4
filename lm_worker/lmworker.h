/* lmworker — the LM worker daemon: registers with its gateways (common/wlink.h) and runs
 * continuous batching (sched.h) over one phi_model with max_seqs slots of max_context positions.
 *
 * For each GenerateRequest: the chat messages become the prompt (chat.h); each image's embedding
 * comes inline or from the cache under its key (a miss or a cache that is down answers Error 503
 * "embedding_unavailable", so the gateway re-encodes and retries); the request is admitted
 * between decode steps (prefill + first token = its first TokenChunk), then every step runs one
 * batched decode over all running sequences and sends one chunk per sequence. Cancel and
 * deadlines end a sequence early. The loop never blocks on the sockets while sequences run.
 *
 * `tinyvlm lm-worker` runs it from main; `tinyvlm serve` on a thread with a borrowed msg_ctx and
 * cache. On *stop it sends Bye, refuses new work, lets running sequences finish for at most
 * grace_s (then ends them with Error 503 "worker_shutdown") and returns 0. */
#ifndef TV_LMWORKER_H
#define TV_LMWORKER_H

#include <signal.h>

#include "cache.h"
#include "msg.h"

typedef struct {
    const char *model;               /* bundle folder (required) */
    const char *const *gateways;     /* endpoints to connect to; default tcp://127.0.0.1:5555
                                      * (unless gateway_dns is given) */
    int n_gateways;
    const char *const *gateway_dns;  /* "tcp://NAME:PORT": connect to every address of NAME */
    int n_gateway_dns;
    int dns_interval_s;              /* re-resolve gateway_dns this often; default 5 */
    const char *worker_id;           /* NULL: "lm:host:pid:random" */
    const char *device;              /* "cpu" | "cuda" | "auto" (default) */
    int threads;                     /* compute threads; 0 = all cores */
    int max_seqs;                    /* sequences decoded together; default 4 */
    int max_context;                 /* positions per sequence; 0 = the bundle's */
    msg_ctx *ctx;                    /* borrowed; NULL = own one */
    cache *cache;                    /* borrowed; NULL = open redis_url, or no cache */
    const char *redis_url;
    int redis_ttl_s;                 /* default 86400 */
    int redis_timeout_ms;            /* default 200 */
    int heartbeat_ms;                /* default 1000 */
    int gateway_timeout_ms;          /* default 3000 */
    int grace_s;                     /* default 20 */
    int health_port;                 /* HTTP /healthz and /readyz on this port; 0 = off */
    volatile int *ready;             /* optional out: 1 once loaded and registered */
} lmworker_opts;

/* Fills o with the defaults above (everything else zero / NULL). */
void lmworker_opts_default(lmworker_opts *o);

/* Runs the worker until *stop (NULL: forever). Returns 0 after a clean stop, or a negative TV_E*
 * code with a message (cannot load the bundle, bad options, cannot connect). */
int lmworker_run(const lmworker_opts *o, volatile sig_atomic_t *stop);

#endif
