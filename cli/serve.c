/* tinyvlm serve — the embedded default: the gateway, one vision worker and one LM worker in one
 * process, three threads over one msg_ctx ("inproc://tinyvlm"), sharing one embedding cache (in
 * memory, or Redis with --redis). The same code as the distributed daemons. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "cli.h"
#include "err.h"
#include "gateway.h"
#include "lmworker.h"
#include "log.h"
#include "manifest.h"
#include "msg.h"
#include "vworker.h"
#include "workers_cmd.h"

#define SERVE_ENDPOINT "inproc://tinyvlm"

typedef struct {
    gateway_opts g;
    vworker_opts v;
    lmworker_opts l;
    int cache_mb;
    const char *dtype;
} serve_opts;

/* One role's thread: what it runs, its own stop flag, and how it ended. */
typedef struct {
    const char *name;
    int (*fn)(void *opts, volatile sig_atomic_t *stop);
    void *opts;
    volatile sig_atomic_t stop;
    volatile int done;
    int rc;
    char err[512];
    pthread_t th;
    int started;
} serve_role;

static int run_gateway(void *o, volatile sig_atomic_t *stop) { return gateway_run(o, stop); }
static int run_vision(void *o, volatile sig_atomic_t *stop) { return vworker_run(o, stop); }
static int run_lm(void *o, volatile sig_atomic_t *stop) { return lmworker_run(o, stop); }

static void *role_main(void *arg) {
    serve_role *r = arg;
    r->rc = r->fn(r->opts, &r->stop);
    if (r->rc)
        snprintf(r->err, sizeof r->err, "%s", err_msg());
    r->done = 1;
    return NULL;
}

static int role_start(serve_role *r) {
    if (pthread_create(&r->th, NULL, role_main, r))
        return err_set(TV_EINTERNAL, "cannot start the %s thread", r->name);
    r->started = 1;
    return TV_OK;
}

static void role_stop(serve_role *r) {
    r->stop = 1;
    if (r->started)
        pthread_join(r->th, NULL);
    r->started = 0;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int serve_parse(int argc, char **argv, serve_opts *o) {
    gateway_opts_default(&o->g);
    vworker_opts_default(&o->v);
    lmworker_opts_default(&o->l);
    o->g.host = "127.0.0.1";
    o->g.port = 8080;
    o->cache_mb = 512;
    o->dtype = "f16";
    const char *model = NULL, *device = "auto", *redis = NULL;
    int threads = 0, grace = 20;
    const wopt opts[] = {
        {"--model", WOPT_STR, &model, 0, 0, "DIR", "model bundle folder (required)"},
        {"--host", WOPT_STR, &o->g.host, 0, 0, "ADDR", "HTTP bind address (127.0.0.1)"},
        {"--port", WOPT_INT, &o->g.port, 0, 65535, "N", "HTTP port (8080; 0 = any free port)"},
        {"--threads", WOPT_INT, &threads, 0, 1024, "N", "compute threads per worker (all cores)"},
        {"--device", WOPT_STR, &device, 0, 0, "D", "cpu, cuda or auto (default auto)"},
        {"--redis", WOPT_STR, &redis, 0, 0, "URL",
         "embedding cache in Redis instead of memory (redis://host:port[/db])"},
        {"--cache-mb", WOPT_INT, &o->cache_mb, 1, 1 << 20, "MB", "in-memory cache budget (512)"},
        {"--api-keys", WOPT_STR, &o->g.api_keys_file, 0, 0, "FILE",
         "API keys -> tenants (default: open, with a warning)"},
        {"--queue", WOPT_INT, &o->g.queue, 0, 1 << 20, "N", "requests waiting for a slot (64)"},
        {"--max-batch", WOPT_INT, &o->v.max_batch, 1, 256, "N", "images encoded together (8)"},
        {"--batch-wait-ms", WOPT_INT, &o->v.batch_wait_ms, 0, 10000, "MS", "batch fill wait (5)"},
        {"--emb-dtype", WOPT_STR, &o->dtype, 0, 0, "T", "embedding dtype: f16 or f32 (f16)"},
        {"--max-seqs", WOPT_INT, &o->l.max_seqs, 1, 256, "N", "sequences decoded together (4)"},
        {"--max-context", WOPT_INT, &o->l.max_context, 0, 1 << 20, "N",
         "positions per sequence (the bundle's)"},
        {"--grace-s", WOPT_INT, &grace, 0, 3600, "S", "on SIGTERM, time to finish answers (20)"},
    };
    int code = wopt_parse("serve", "Runs the HTTP API with one vision worker and one LM worker in "
                          "this process (the embedded default).", opts,
                          (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (code >= 0)
        return code;
    if (!model) {
        fprintf(stderr, "tinyvlm serve: --model DIR is required (see --help)\n");
        return 2;
    }
    if ((o->v.emb_dtype = wopt_emb_dtype(o->dtype)) < 0) {
        fprintf(stderr, "tinyvlm serve: --emb-dtype must be f16 or f32\n");
        return 2;
    }
    o->v.model = o->l.model = model;
    o->v.device = o->l.device = device;
    o->v.threads = o->l.threads = threads;
    o->v.grace_s = o->l.grace_s = grace;
    o->g.redis_url = redis;
    return -1;
}

/* Waits until the gateway listens and both workers registered (or a role failed / stop). */
static int serve_wait_ready(serve_role *roles, volatile int *port, volatile int *vready,
                            volatile int *lready, volatile sig_atomic_t *stop) {
    while (!*stop) {
        for (int i = 0; i < 3; i++)
            if (roles[i].done)
                return err_set(roles[i].rc ? roles[i].rc : TV_EINTERNAL, "%s: %s", roles[i].name,
                               roles[i].rc ? roles[i].err : "stopped unexpectedly");
        if (*port && *vready && *lready)
            return TV_OK;
        sleep_ms(20);
    }
    return TV_OK;
}

int cli_serve(int argc, char **argv) {
    serve_opts o;
    int code = serve_parse(argc, argv, &o);
    if (code >= 0)
        return code;
    manifest *mf = NULL;
    msg_ctx *ctx = NULL;
    cache *c = NULL;
    int rc = manifest_load(o.v.model, &mf);
    if (!rc)
        rc = msg_ctx_new(&ctx);
    if (!rc)
        rc = o.g.redis_url ? cache_redis_new(o.g.redis_url, o.g.redis_ttl_s, o.g.redis_timeout_ms, &c)
                           : cache_mem_new((size_t)o.cache_mb << 20, &c);
    if (rc) {
        fprintf(stderr, "tinyvlm serve: %s\n", err_msg());
        manifest_free(mf);
        msg_ctx_free(ctx);
        return 1;
    }
    volatile int port = 0, vready = 0, lready = 0;
    static const char *const endpoint[] = {SERVE_ENDPOINT};
    o.g.listen = SERVE_ENDPOINT, o.g.ctx = ctx, o.g.cache = c, o.g.bound_port = &port;
    o.v.gateways = o.l.gateways = endpoint;
    o.v.n_gateways = o.l.n_gateways = 1;
    o.v.ctx = o.l.ctx = ctx;
    o.v.cache = o.l.cache = c;
    o.v.ready = &vready, o.l.ready = &lready;
    serve_role roles[3] = {{.name = "gateway", .fn = run_gateway, .opts = &o.g},
                           {.name = "vision worker", .fn = run_vision, .opts = &o.v},
                           {.name = "LM worker", .fn = run_lm, .opts = &o.l}};
    volatile sig_atomic_t *stop = wopt_stop_flag();
    rc = role_start(&roles[0]);
    while (!rc && !port && !roles[0].done && !*stop) /* workers connect once it is bound */
        sleep_ms(10);
    for (int i = 1; i < 3 && !rc && port; i++) /* (a gateway that failed: nothing to serve) */
        rc = role_start(&roles[i]);
    if (!rc)
        rc = serve_wait_ready(roles, &port, &vready, &lready, stop);
    if (!rc && !*stop) {
        printf("tinyvlm serving %s at http://%s:%d\n", mf->name, o.g.host, port);
        fflush(stdout);
    }
    while (!rc && !*stop && !roles[0].done && !roles[1].done && !roles[2].done)
        sleep_ms(50);
    if (!rc)
        for (int i = 0; i < 3; i++)
            if (roles[i].done && roles[i].rc)
                rc = err_set(roles[i].rc, "%s: %s", roles[i].name, roles[i].err);
    if (*stop)
        log_info("serve", "stopping: workers finish their answers, then the gateway");
    role_stop(&roles[1]); /* workers first: the gateway forwards their last answers */
    role_stop(&roles[2]);
    role_stop(&roles[0]);
    if (rc)
        fprintf(stderr, "tinyvlm serve: %s\n", err_msg());
    cache_free(c);
    msg_ctx_free(ctx);
    manifest_free(mf);
    return rc ? 1 : 0;
}
