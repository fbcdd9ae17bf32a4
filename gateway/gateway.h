/* gateway — the HTTP API in front of the workers: OpenAI-compatible chat completions (with SSE
 * streaming) and image embeddings, models, health, readiness and Prometheus metrics; API keys and
 * per-tenant limits; the worker registry (heartbeats, routing by free capacity, rerouting the
 * work of a worker that went silent) over the message layer (common/msg.h); the embedding cache
 * lookups (common/cache.h) that let a known image skip the vision workers.
 *
 * One gateway_run call is one gateway: libmicrohttpd serves HTTP on its own threads, and one
 * router thread owns the listening msg_sock. `tinyvlm gateway` calls it from main; `tinyvlm serve`
 * calls it on a thread with a borrowed msg_ctx, "inproc://tinyvlm" and a borrowed cache. */
#ifndef TV_GATEWAY_H
#define TV_GATEWAY_H

#include <signal.h>
#include <stdint.h>

#include "cache.h"
#include "msg.h"

typedef struct {
    /* HTTP */
    const char *host;            /* bind address; default "0.0.0.0" ("127.0.0.1" for serve) */
    int port;                    /* default 8080; 0 = any free port (see bound_port) */
    int max_connections;         /* HTTP connections at once (one thread each); default 512 */
    /* workers */
    const char *listen;          /* msg endpoint to bind; default "tcp://0.0.0.0:5555" */
    msg_ctx *ctx;                /* borrowed (serve); NULL = the gateway makes its own */
    int heartbeat_ms;            /* interval of heartbeats sent to workers; default 1000 */
    int worker_timeout_ms;       /* a worker silent this long is dropped; default 3000 */
    /* cache */
    cache *cache;                /* borrowed (serve); NULL = open redis_url, or no cache */
    const char *redis_url;       /* NULL = no cache (unless cache is given) */
    int redis_ttl_s;             /* default 86400 */
    int redis_timeout_ms;        /* default 200 */
    /* auth */
    const char *api_keys_file;   /* NULL = open (a warning is logged at start) */
    /* limits */
    double max_body_mb;          /* default 32 */
    int max_images;              /* per request; default 8 */
    uint64_t max_image_pixels;   /* width*height from the header; default 40 Mpx */
    int max_tokens_limit;        /* largest max_tokens accepted; default 4096 */
    int queue;                   /* requests waiting for a worker slot at most; default 64 */
    int request_timeout_s;       /* whole request, default 300 */
    /* out: set by gateway_run once HTTP is listening (useful with port 0); may be NULL */
    volatile int *bound_port;
} gateway_opts;

/* Fills o with the defaults above (zeroes everything else). */
void gateway_opts_default(gateway_opts *o);

/* Runs the gateway until *stop becomes non-zero (SIGINT/SIGTERM handlers set it; NULL = run
 * forever). Returns 0 after a clean stop, or a negative TV_E* code with a message (cannot bind
 * the HTTP port or the msg endpoint, cannot open the API key file, ...). Borrowed ctx and cache
 * stay the caller's. */
int gateway_run(const gateway_opts *o, volatile sig_atomic_t *stop);

#endif
