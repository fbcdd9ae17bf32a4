/* vworker — the vision worker daemon: registers with its gateways (common/wlink.h), batches the
 * EncodeRequests that arrive within batch_wait_ms (up to max_batch images), decodes and
 * preprocesses each image (a refused image answers Error 400 "invalid_image" with the decoder's
 * message and the rest of the batch goes on), runs vision_encode once per batch, converts the
 * [Q, d] embeddings to emb_dtype, stores them in the cache under the request's cache_key and
 * answers EncodeResult (with the embedding inline when asked to, or when the cache did not take
 * it).
 *
 * `tinyvlm vision-worker` runs it from main; `tinyvlm serve` on a thread, with a borrowed msg_ctx
 * and cache. On *stop it sends Bye, finishes the batch in hand (and whatever the gateway had
 * already sent, for at most grace_s) and returns 0. */
#ifndef TV_VWORKER_H
#define TV_VWORKER_H

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
    const char *worker_id;           /* NULL: "vision:host:pid:random" */
    const char *device;              /* "cpu" | "cuda" | "auto" (default) */
    int threads;                     /* compute threads; 0 = all cores */
    int max_batch;                   /* default 8 */
    int batch_wait_ms;               /* default 5 */
    int emb_dtype;                   /* MSG_EMB_F16 (default) or MSG_EMB_F32 */
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
} vworker_opts;

/* Fills o with the defaults above (everything else zero / NULL). */
void vworker_opts_default(vworker_opts *o);

/* Runs the worker until *stop (NULL: forever). Returns 0 after a clean stop, or a negative TV_E*
 * code with a message (cannot load the bundle, bad options, cannot connect). */
int vworker_run(const vworker_opts *o, volatile sig_atomic_t *stop);

#endif
