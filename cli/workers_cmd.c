/* tinyvlm vision-worker / lm-worker — the worker daemons of the distributed deployment, and the
 * option parser they share with `tinyvlm serve`. */
#include "workers_cmd.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "lmworker.h"
#include "msg.h"
#include "vworker.h"

/* ---- options ------------------------------------------------------------------------------- */

/* "--max-batch" -> "TINYVLM_MAX_BATCH" */
static void env_name(const char *flag, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "TINYVLM_");
    for (const char *p = flag + 2; *p && k + 1 < cap; p++)
        buf[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[k] = 0;
}

void wopt_usage(FILE *f, const char *cmd, const char *intro, const wopt *opts, int n) {
    fprintf(f, "usage: tinyvlm %s [options]\n\n%s\n\noptions (each also read from the environment "
               "variable shown; flags win):\n", cmd, intro);
    for (int i = 0; i < n; i++) {
        char env[96], left[64];
        env_name(opts[i].name, env, sizeof env);
        snprintf(left, sizeof left, "%s%s%s", opts[i].name, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        fprintf(f, "  %-24s %s  [%s]\n", left, opts[i].help, env);
    }
    fprintf(f, "  %-24s %s\n", "--help", "this text");
    fprintf(f, "\nexit status: 0 stopped cleanly, 1 runtime failure, 2 usage error. "
               "TINYVLM_LOG=debug|info|warn|error sets the log level.\n");
}

static int set_int(const char *cmd, const wopt *o, const char *v, const char *from) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < o->lo || x > o->hi) {
        fprintf(stderr, "tinyvlm %s: %s%s: expected an integer in [%d, %d], got \"%s\"\n", cmd,
                o->name, from, o->lo, o->hi, v);
        return 2;
    }
    *(int *)o->dst = (int)x;
    return -1;
}

static int list_add(const char *cmd, const wopt *o, wopt_list *l, const char *v) {
    if (l->n == WOPT_LIST_MAX) {
        fprintf(stderr, "tinyvlm %s: %s: at most %d values\n", cmd, o->name, WOPT_LIST_MAX);
        return 2;
    }
    l->items[l->n++] = v;
    return -1;
}

/* One value from the environment or the command line into o->dst. */
static int set_value(const char *cmd, const wopt *o, const char *v, int from_env) {
    const char *from = from_env ? " (environment)" : "";
    switch (o->kind) {
    case WOPT_STR:
        *(const char **)o->dst = v;
        return -1;
    case WOPT_INT:
        return set_int(cmd, o, v, from);
    case WOPT_FLAG:
        *(int *)o->dst = !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes");
        return -1;
    case WOPT_LIST: {
        wopt_list *l = o->dst;
        if (!from_env)
            return list_add(cmd, o, l, v);
        l->env_copy = strdup(v);
        for (char *save = NULL, *t = strtok_r(l->env_copy, ",", &save); t;
             t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            if (*t && list_add(cmd, o, l, t) >= 0)
                return 2;
        }
        return -1;
    }
    }
    return 2;
}

static int apply_env(const char *cmd, const wopt *opts, int n) {
    for (int i = 0; i < n; i++) {
        char env[96];
        env_name(opts[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (v && *v) {
            int code = set_value(cmd, &opts[i], v, 1);
            if (code >= 0)
                return code;
        }
    }
    return -1;
}

int wopt_parse(const char *cmd, const char *intro, const wopt *opts, int n, int argc,
               char **argv) {
    int code = apply_env(cmd, opts, n);
    if (code >= 0)
        return code;
    char seen_list[64] = {0}; /* a list flag on the command line replaces the env list */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            wopt_usage(stdout, cmd, intro, opts, n);
            return 0;
        }
        int k = 0;
        while (k < n && strcmp(a, opts[k].name))
            k++;
        if (k == n) {
            fprintf(stderr, "tinyvlm %s: unknown option \"%s\" (see --help)\n", cmd, a);
            return 2;
        }
        if (opts[k].kind == WOPT_FLAG) {
            *(int *)opts[k].dst = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tinyvlm %s: %s needs a value\n", cmd, a);
            return 2;
        }
        if (opts[k].kind == WOPT_LIST && k < 64 && !seen_list[k]) {
            seen_list[k] = 1;
            ((wopt_list *)opts[k].dst)->n = 0;
        }
        if ((code = set_value(cmd, &opts[k], argv[++i], 0)) >= 0)
            return code;
    }
    return -1;
}

void wopt_list_free(wopt_list *l) {
    free(l->env_copy);
    memset(l, 0, sizeof *l);
}

int wopt_emb_dtype(const char *s) {
    return !s ? -1 : !strcmp(s, "f16") ? MSG_EMB_F16 : !strcmp(s, "f32") ? MSG_EMB_F32 : -1;
}

/* ---- signals ---------------------------------------------------------------------------------- */

static volatile sig_atomic_t wopt_stop;

static void on_signal(int sig) {
    if (wopt_stop) /* second signal: the user means it */
        _exit(130);
    wopt_stop = 1;
    (void)sig;
}

volatile sig_atomic_t *wopt_stop_flag(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return &wopt_stop;
}

/* ---- the two commands -------------------------------------------------------------------------- */

/* The options both workers take, pointing into the given fields. */
#define WORKER_COMMON_OPTS(o, gws, dns)                                           \
    {"--model", WOPT_STR, &(o).model, 0, 0, "DIR", "model bundle folder (required)"},               \
    {"--gateway", WOPT_LIST, &(gws), 0, 0, "URL",                                                  \
     "gateway endpoint, repeatable (default tcp://127.0.0.1:5555)"},                               \
    {"--gateway-dns", WOPT_LIST, &(dns), 0, 0, "URL",                                              \
     "tcp://NAME:PORT: connect to every address NAME resolves to, re-resolved (repeatable)"},      \
    {"--dns-interval-s", WOPT_INT, &(o).dns_interval_s, 1, 3600, "S",                             \
     "how often --gateway-dns names are resolved again (5)"},                                      \
    {"--worker-id", WOPT_STR, &(o).worker_id, 0, 0, "ID", "worker id (default kind:host:pid:random)"}, \
    {"--device", WOPT_STR, &(o).device, 0, 0, "D", "cpu, cuda or auto (default auto)"},            \
    {"--threads", WOPT_INT, &(o).threads, 0, 1024, "N", "compute threads (default: all cores)"},   \
    {"--redis", WOPT_STR, &(o).redis_url, 0, 0, "URL",                                             \
     "embedding cache, redis://host:port[/db] (default: none)"},                                    \
    {"--redis-ttl-s", WOPT_INT, &(o).redis_ttl_s, 0, INT_MAX, "S", "cache entry lifetime (86400)"}, \
    {"--redis-timeout-ms", WOPT_INT, &(o).redis_timeout_ms, 1, 60000, "MS",                       \
     "per cache operation (200)"},                                                                  \
    {"--heartbeat-ms", WOPT_INT, &(o).heartbeat_ms, 10, 60000, "MS", "heartbeat interval (1000)"}, \
    {"--gateway-timeout-ms", WOPT_INT, &(o).gateway_timeout_ms, 10, 600000, "MS",                 \
     "a gateway silent this long is registered with again (3000)"},                                 \
    {"--grace-s", WOPT_INT, &(o).grace_s, 0, 3600, "S",                                            \
     "on SIGTERM, time to finish in-flight work (20)"},                                             \
    {"--health-port", WOPT_INT, &(o).health_port, 0, 65535, "N",                                   \
     "serve GET /healthz and /readyz on this port (0 = off)"}

/* --gateway values, else none when --gateway-dns names the gateways, else the default. */
static void gateways_or_default(wopt_list *gws, const wopt_list *dns, const char *const **out,
                                int *n, const char *const **dns_out, int *n_dns) {
    if (gws->n || dns->n) {
        *out = gws->items;
        *n = gws->n;
    }
    *dns_out = dns->items;
    *n_dns = dns->n;
}

static int run_result(const char *cmd, int rc) {
    if (rc) {
        fprintf(stderr, "tinyvlm %s: %s\n", cmd, err_msg());
        return 1;
    }
    return 0;
}

int cli_vision_worker(int argc, char **argv) {
    vworker_opts o;
    vworker_opts_default(&o);
    wopt_list gws = {0}, dns = {0};
    const char *dtype = "f16";
    const wopt opts[] = {
        WORKER_COMMON_OPTS(o, gws, dns),
        {"--max-batch", WOPT_INT, &o.max_batch, 1, 256, "N", "images encoded together (8)"},
        {"--batch-wait-ms", WOPT_INT, &o.batch_wait_ms, 0, 10000, "MS",
         "wait this long for a batch to fill (5)"},
        {"--emb-dtype", WOPT_STR, &dtype, 0, 0, "T", "embedding dtype in cache and answers: f16 or f32"},
    };
    int code = wopt_parse("vision-worker", "Encodes images to embeddings for the gateway(s).", opts,
                          (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (code < 0 && (o.emb_dtype = wopt_emb_dtype(dtype)) < 0) {
        fprintf(stderr, "tinyvlm vision-worker: --emb-dtype must be f16 or f32\n");
        code = 2;
    }
    if (code < 0 && !o.model) {
        fprintf(stderr, "tinyvlm vision-worker: --model DIR is required (see --help)\n");
        code = 2;
    }
    if (code >= 0) {
        wopt_list_free(&gws);
        wopt_list_free(&dns);
        return code;
    }
    gateways_or_default(&gws, &dns, &o.gateways, &o.n_gateways, &o.gateway_dns,
                        &o.n_gateway_dns);
    code = run_result("vision-worker", vworker_run(&o, wopt_stop_flag()));
    wopt_list_free(&gws);
    wopt_list_free(&dns);
    return code;
}

int cli_lm_worker(int argc, char **argv) {
    lmworker_opts o;
    lmworker_opts_default(&o);
    wopt_list gws = {0}, dns = {0};
    const wopt opts[] = {
        WORKER_COMMON_OPTS(o, gws, dns),
        {"--max-seqs", WOPT_INT, &o.max_seqs, 1, 256, "N", "sequences decoded together (4)"},
        {"--max-context", WOPT_INT, &o.max_context, 0, 1 << 20, "N",
         "positions per sequence (default: the bundle's)"},
    };
    int code = wopt_parse("lm-worker", "Generates answers from prompts and image embeddings for the "
                          "gateway(s), with continuous batching.", opts,
                          (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (code < 0 && !o.model) {
        fprintf(stderr, "tinyvlm lm-worker: --model DIR is required (see --help)\n");
        code = 2;
    }
    if (code >= 0) {
        wopt_list_free(&gws);
        wopt_list_free(&dns);
        return code;
    }
    gateways_or_default(&gws, &dns, &o.gateways, &o.n_gateways, &o.gateway_dns,
                        &o.n_gateway_dns);
    code = run_result("lm-worker", lmworker_run(&o, wopt_stop_flag()));
    wopt_list_free(&gws);
    wopt_list_free(&dns);
    return code;
}
