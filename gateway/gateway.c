/* gateway — HTTP front (libmicrohttpd, one thread per connection) and gateway_run. The router
 * thread lives in hub.c; request parsing and JSON in api.c; images and their cache lookups in
 * images.c. See gateway.h and gw_int.h. */

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "gw_http.h"
#include "log.h"
#include "web.h"

#define GW_COMP "gateway"
#ifndef POLLRDHUP
#define POLLRDHUP 0x2000 /* Linux: peer closed its writing end (a _GNU_SOURCE name) */
#endif

void gateway_opts_default(gateway_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "0.0.0.0";
    o->port = 8080;
    o->max_connections = 512;
    o->listen = "tcp://0.0.0.0:5555";
    o->heartbeat_ms = 1000;
    o->worker_timeout_ms = 3000;
    o->redis_ttl_s = 86400;
    o->redis_timeout_ms = 200;
    o->max_body_mb = 32;
    o->max_images = 8;
    o->max_image_pixels = 40ull << 20;
    o->max_tokens_limit = 4096;
    o->queue = 64;
    o->request_timeout_s = 300;
}

/* ---- routes and responses ------------------------------------------------------------------- */

static const char *const gw_routes[] = {"/", "/healthz", "/readyz", "/metrics", "/v1/models",
                                        "/v1/chat/completions", "/v1/embeddings"};

const char *gw_route_label(const char *url) {
    for (size_t i = 0; i < sizeof gw_routes / sizeof gw_routes[0]; i++)
        if (!strcmp(url, gw_routes[i])) return gw_routes[i];
    return "other";
}

void gw_record(gw *g, const char *route, int status, double t0) {
    char labels[128];
    snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", route, status);
    gw_met_add(g->met, "tinyvlm_http_requests_total", labels, 1);
    snprintf(labels, sizeof labels, "route=\"%s\"", route);
    gw_met_observe(g->met, "tinyvlm_http_request_duration_seconds", labels, clk_now_s() - t0);
}

enum MHD_Result gw_send(gw *g, struct MHD_Connection *c, gw_req *r, int status,
                        const char *ctype, char *body, const char *const *headers) {
    size_t len = strlen(body);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    for (int i = 0; headers && headers[i]; i += 2) MHD_add_response_header(resp, headers[i], headers[i + 1]);
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    gw_record(g, r->route, status, r->t0);
    return ok;
}

enum MHD_Result gw_send_error(gw *g, struct MHD_Connection *c, gw_req *r, const gw_error *e) {
    static const char *const retry[] = {"Retry-After", "1", NULL};
    int busy = e->status == 429 || e->status == 503;
    if (e->status >= 500) log_warn(GW_COMP, "%s -> %d %s: %s", r->route, e->status, e->code, e->message);
    else log_debug(GW_COMP, "%s -> %d %s: %s", r->route, e->status, e->code, e->message);
    return gw_send(g, c, r, e->status, "application/json", gw_api_error_json(e), busy ? retry : NULL);
}

static enum MHD_Result gw_fail(gw *g, struct MHD_Connection *c, gw_req *r, int status,
                               const char *code, const char *fmt, const char *arg) {
    gw_error e;
    gw_api_fail(&e, status, code, NULL, fmt, arg);
    return gw_send_error(g, c, r, &e);
}

int gw_client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {ci->connect_fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Authorises the request and reserves the tenant's slot. Returns 0 and *t, or sends the error
 * and returns -1 (with *sent holding MHD's answer). */
int gw_admit(gw *g, struct MHD_Connection *c, gw_req *r, gw_tenant **t, enum MHD_Result *sent) {
    const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (gw_auth_check(g->auth, hdr, t)) {
        *sent = gw_fail(g, c, r, 401, "invalid_api_key", "%s", err_msg());
        return -1;
    }
    if (gw_auth_acquire(g->auth, *t, clk_now_s())) {
        *sent = gw_fail(g, c, r, 429, "rate_limit_exceeded", "%s", err_msg());
        return -1;
    }
    return 0;
}

/* ---- small routes ---------------------------------------------------------------------------- */

static char *gw_strdup(const char *s) {
    char *d = strdup(s);
    TV_ASSERT(d);
    return d;
}

static enum MHD_Result gw_readyz(gw *g, struct MHD_Connection *c, gw_req *r) {
    char names[1][GW_NAME_MAX];
    pthread_mutex_lock(&g->mu);
    size_t n = gw_reg_models(&g->reg, names, 1);
    int nv = gw_reg_count(&g->reg, MSG_WORKER_VISION, NULL), nl = gw_reg_count(&g->reg, MSG_WORKER_LM, NULL);
    pthread_mutex_unlock(&g->mu);
    char buf[256];
    snprintf(buf, sizeof buf, "{\"ready\":%s,\"vision_workers\":%d,\"lm_workers\":%d}\n",
             n ? "true" : "false", nv, nl);
    return gw_send(g, c, r, n ? 200 : 503, "application/json", gw_strdup(buf), NULL);
}

static enum MHD_Result gw_models(gw *g, struct MHD_Connection *c, gw_req *r) {
    enum MHD_Result sent;
    gw_tenant *t;
    if (gw_admit(g, c, r, &t, &sent)) return sent;
    gw_auth_release(g->auth, t);
    char names[32][GW_NAME_MAX];
    const char *ptrs[32];
    pthread_mutex_lock(&g->mu);
    size_t n = gw_reg_models(&g->reg, names, 32);
    pthread_mutex_unlock(&g->mu);
    for (size_t i = 0; i < n; i++) ptrs[i] = names[i];
    return gw_send(g, c, r, 200, "application/json", gw_api_models_json(ptrs, n, (long long)time(NULL)), NULL);
}

static const char *gw_kind_label(msg_worker_kind k) {
    return k == MSG_WORKER_VISION ? "vision" : "lm";
}

/* Copies the registry's figures into the gauges just before rendering. */
static void gw_metrics_refresh(gw *g) {
    static const char *per_worker[] = {"tinyvlm_worker_load", "tinyvlm_worker_slots",
                                       "tinyvlm_worker_gpu_memory_used_bytes",
                                       "tinyvlm_worker_gpu_memory_total_bytes",
                                       "tinyvlm_worker_kernel_seconds", "tinyvlm_worker_items_done",
                                       "tinyvlm_worker_tokens_out"};
    for (size_t i = 0; i < sizeof per_worker / sizeof *per_worker; i++) gw_met_clear(g->met, per_worker[i]);
    double nw[3] = {0}, cap[3] = {0}, infl[3] = {0};
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->reg.n; i++) {
        const gw_worker *w = &g->reg.w[i];
        char id[2 * MSG_PEER_MAX], l[3 * MSG_PEER_MAX];
        snprintf(l, sizeof l, "kind=\"%s\",worker=\"%s\"", gw_kind_label(w->kind),
                 gw_met_escape(w->id, id, sizeof id));
        gw_met_set(g->met, "tinyvlm_worker_load", l, w->hb.load);
        gw_met_set(g->met, "tinyvlm_worker_slots", l, w->capacity);
        gw_met_set(g->met, "tinyvlm_worker_gpu_memory_used_bytes", l, (double)w->hb.gpu_mem_used);
        gw_met_set(g->met, "tinyvlm_worker_gpu_memory_total_bytes", l, (double)w->hb.gpu_mem_total);
        gw_met_set(g->met, "tinyvlm_worker_kernel_seconds", l, w->hb.kernel_seconds);
        gw_met_set(g->met, "tinyvlm_worker_items_done", l, (double)w->hb.items_done);
        gw_met_set(g->met, "tinyvlm_worker_tokens_out", l, (double)w->hb.tokens_out);
        if (w->draining) continue;
        nw[w->kind]++, cap[w->kind] += w->capacity, infl[w->kind] += w->inflight;
    }
    int q[3] = {0, g->queued[1], g->queued[2]};
    pthread_mutex_unlock(&g->mu);
    for (int k = 1; k <= 2; k++) {
        char l[32];
        snprintf(l, sizeof l, "kind=\"%s\"", gw_kind_label((msg_worker_kind)k));
        gw_met_set(g->met, "tinyvlm_workers", l, nw[k]);
        gw_met_set(g->met, "tinyvlm_worker_capacity", l, cap[k]);
        gw_met_set(g->met, "tinyvlm_worker_inflight", l, infl[k]);
        gw_met_set(g->met, "tinyvlm_queue_depth", l, q[k]);
    }
    gw_met_set(g->met, "tinyvlm_http_requests_in_flight", "", atomic_load(&g->inflight_http));
    if (g->cache) {
        cache_stats st;
        cache_get_stats(g->cache, &st);
        char l[48];
        snprintf(l, sizeof l, "backend=\"%s\"", st.kind ? st.kind : "?");
        gw_met_set(g->met, "tinyvlm_cache_backend_up", l, st.up);
        gw_met_set(g->met, "tinyvlm_cache_backend_entries", l, (double)st.entries);
        gw_met_set(g->met, "tinyvlm_cache_backend_bytes", l, (double)st.bytes);
        gw_met_set(g->met, "tinyvlm_cache_backend_errors", l, (double)st.errors);
        gw_met_set(g->met, "tinyvlm_cache_backend_evictions", l, (double)st.evictions);
    }
}

static enum MHD_Result gw_metrics_route(gw *g, struct MHD_Connection *c, gw_req *r) {
    gw_metrics_refresh(g);
    return gw_send(g, c, r, 200, "text/plain; version=0.0.4; charset=utf-8", gw_met_render(g->met), NULL);
}

static enum MHD_Result gw_index(gw *g, struct MHD_Connection *c, gw_req *r) {
    char *page = tv_xmalloc(gw_web_index_html_len + 1);
    memcpy(page, gw_web_index_html, gw_web_index_html_len);
    page[gw_web_index_html_len] = 0;
    return gw_send(g, c, r, 200, "text/html; charset=utf-8", page, NULL);
}

/* ---- dispatch --------------------------------------------------------------------------------- */

int gw_json_content(struct MHD_Connection *c) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    return ct && !strncasecmp(ct, "application/json", 16) && (ct[16] == 0 || ct[16] == ';' || ct[16] == ' ');
}

static enum MHD_Result gw_route(gw *g, struct MHD_Connection *c, gw_req *r, const char *url,
                                const char *method) {
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    int is_post_route = !strcmp(r->route, "/v1/chat/completions") || !strcmp(r->route, "/v1/embeddings");
    if (!strcmp(r->route, "other"))
        return gw_fail(g, c, r, 404, "not_found", "no such route: %s", url);
    if ((is_post_route && !post) || (!is_post_route && !get)) {
        static const char *const allow_post[] = {"Allow", "POST", NULL}, *const allow_get[] = {"Allow", "GET, HEAD", NULL};
        gw_error e;
        gw_api_fail(&e, 405, "method_not_allowed", NULL, "%s is not allowed on %s", method, r->route);
        return gw_send(g, c, r, 405, "application/json", gw_api_error_json(&e), is_post_route ? allow_post : allow_get);
    }
    if (!strcmp(r->route, "/healthz")) return gw_send(g, c, r, 200, "application/json", gw_strdup("{\"status\":\"ok\"}\n"), NULL);
    if (!strcmp(r->route, "/readyz")) return gw_readyz(g, c, r);
    if (!strcmp(r->route, "/metrics")) return gw_metrics_route(g, c, r);
    if (!strcmp(r->route, "/v1/models")) return gw_models(g, c, r);
    if (!strcmp(r->route, "/")) return gw_index(g, c, r);
    if (r->too_big)
        return gw_fail(g, c, r, 413, "request_too_large", "the request body is larger than %s",
                       r->limit_text);
    if (!strcmp(r->route, "/v1/chat/completions")) return gw_chat(g, c, r);
    return gw_embeddings(g, c, r);
}

static enum MHD_Result gw_http(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls) {
    gw *g = cls;
    gw_req *r = *con_cls;
    if (!r) {
        r = tv_xcalloc(1, sizeof *r);
        r->t0 = clk_now_s();
        r->route = gw_route_label(url);
        r->max_body = (size_t)(g->o.max_body_mb * 1048576.0);
        snprintf(r->limit_text, sizeof r->limit_text, "%g MB", g->o.max_body_mb);
        *con_cls = r;
        atomic_fetch_add(&g->inflight_http, 1);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > r->max_body) {
            r->too_big = 1;
            return gw_fail(g, c, r, 413, "request_too_large", "the request body is larger than %s",
                           r->limit_text);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->too_big && r->body.len + *upload_size > r->max_body) {
            r->too_big = 1;
            gw_sb_free(&r->body);
        }
        if (!r->too_big) gw_sb_append(&r->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->responded) return MHD_YES;
    return gw_route(g, c, r, url, method);
}

static void gw_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    gw *g = cls;
    gw_req *r = *con_cls;
    if (!r) return;
    if (!r->responded) gw_record(g, r->route, 499, r->t0); /* the client left first */
    gw_sb_free(&r->body);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&g->inflight_http, 1);
}

/* ---- gateway_run ------------------------------------------------------------------------------ */

static void gw_declare_metrics(gw *g) {
    static const double lat[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
    struct { const char *name, *help; gw_met_type t; } fam[] = {
        {"tinyvlm_http_requests_total", "HTTP requests by route and status.", GW_MET_COUNTER},
        {"tinyvlm_http_request_duration_seconds", "HTTP request latency (streams: until the last byte).", GW_MET_HISTOGRAM},
        {"tinyvlm_ttft_seconds", "Time from request arrival to the first generated token.", GW_MET_HISTOGRAM},
        {"tinyvlm_tokens_generated_total", "Completion tokens generated (tokens/s is rate()).", GW_MET_COUNTER},
        {"tinyvlm_prompt_tokens_total", "Prompt tokens processed.", GW_MET_COUNTER},
        {"tinyvlm_cache_lookups_total", "Gateway embedding-cache lookups by result (hit, miss, error, disabled).", GW_MET_COUNTER},
        {"tinyvlm_image_encodes_total", "Images sent to vision workers, by result.", GW_MET_COUNTER},
        {"tinyvlm_image_encode_joins_total", "Images that waited for an identical encode already in flight.", GW_MET_COUNTER},
        {"tinyvlm_embedding_retries_total", "Generations retried because the LM worker could not read an embedding.", GW_MET_COUNTER},
        {"tinyvlm_jobs_rerouted_total", "Jobs moved to another worker after theirs was lost.", GW_MET_COUNTER},
        {"tinyvlm_jobs_resent_total", "Jobs sent again because the worker never got them, or their answer never came (its heartbeat said so).", GW_MET_COUNTER},
        {"tinyvlm_workers_dropped_total", "Workers dropped (silent or unreachable).", GW_MET_COUNTER},
        {"tinyvlm_queue_depth", "Jobs waiting for a worker slot, by pool.", GW_MET_GAUGE},
        {"tinyvlm_workers", "Registered workers taking work, by pool.", GW_MET_GAUGE},
        {"tinyvlm_worker_capacity", "Slots of the pool (sum over its workers).", GW_MET_GAUGE},
        {"tinyvlm_worker_inflight", "Items in flight in the pool (the gateway's count).", GW_MET_GAUGE},
        {"tinyvlm_worker_load", "Items in flight, as the worker's heartbeat reports.", GW_MET_GAUGE},
        {"tinyvlm_worker_slots", "Capacity the worker registered with.", GW_MET_GAUGE},
        {"tinyvlm_worker_gpu_memory_used_bytes", "GPU memory in use on the worker (0 on CPU).", GW_MET_GAUGE},
        {"tinyvlm_worker_gpu_memory_total_bytes", "GPU memory of the worker's device.", GW_MET_GAUGE},
        {"tinyvlm_worker_kernel_seconds", "Compute seconds the worker has spent since start.", GW_MET_GAUGE},
        {"tinyvlm_worker_items_done", "Images encoded / sequences finished by the worker since start.", GW_MET_GAUGE},
        {"tinyvlm_worker_tokens_out", "Tokens the worker generated since start.", GW_MET_GAUGE},
        {"tinyvlm_http_requests_in_flight", "HTTP requests being served.", GW_MET_GAUGE},
        {"tinyvlm_cache_backend_up", "1 when the cache backend answered last time.", GW_MET_GAUGE},
        {"tinyvlm_cache_backend_entries", "Entries in the memory cache (0 for Redis).", GW_MET_GAUGE},
        {"tinyvlm_cache_backend_bytes", "Bytes in the memory cache (0 for Redis).", GW_MET_GAUGE},
        {"tinyvlm_cache_backend_errors", "Cache backend errors since start (this process).", GW_MET_GAUGE},
        {"tinyvlm_cache_backend_evictions", "Memory-cache evictions since start.", GW_MET_GAUGE},
    };
    for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) {
        int nb = fam[i].t == GW_MET_HISTOGRAM ? (int)(sizeof lat / sizeof lat[0]) : 0;
        TV_ASSERT(gw_met_declare(g->met, fam[i].name, fam[i].help, fam[i].t, nb ? lat : NULL, nb) == 0);
    }
}

/* Resolves host:port into addr; returns the address family or -1 with a message. */
static int gw_resolve(const char *host, int port, struct sockaddr_storage *addr, socklen_t *len) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, ps, &hints, &res);
    if (rc || !res) {
        err_set(TV_EINVAL, "cannot resolve HTTP host '%s': %s", host ? host : "", gai_strerror(rc));
        return -1;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    int fam = res->ai_family;
    freeaddrinfo(res);
    return fam;
}

static int gw_http_start(gw *g, struct MHD_Daemon **out) {
    struct sockaddr_storage addr;
    socklen_t alen;
    int fam = gw_resolve(g->o.host, g->o.port, &addr, &alen);
    if (fam < 0) return TV_EINVAL;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC;
    if (fam == AF_INET6) flags |= MHD_USE_IPv6;
    *out = MHD_start_daemon(flags, (uint16_t)g->o.port, NULL, NULL, gw_http, g,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_NOTIFY_COMPLETED, gw_completed, g,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)g->o.max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(g->o.request_timeout_s + 60),
                            MHD_OPTION_THREAD_STACK_SIZE, (size_t)(1u << 20),
                            MHD_OPTION_END);
    if (!*out)
        return err_set(TV_EIO, "cannot listen for HTTP on %s:%d (address in use?)", g->o.host, g->o.port);
    return TV_OK;
}

static int gw_setup(gw *g) {
    g->met = gw_met_new();
    gw_declare_metrics(g);
    if (g->o.api_keys_file && *g->o.api_keys_file) {
        int rc = gw_auth_load(g->o.api_keys_file, &g->auth);
        if (rc) return rc;
        log_info(GW_COMP, "API keys: %d keys for %d tenants from %s", gw_auth_n_keys(g->auth),
                 gw_auth_n_tenants(g->auth), g->o.api_keys_file);
    } else {
        g->auth = gw_auth_open();
        log_warn(GW_COMP, "no --api-keys file: the API is OPEN to anyone who can reach it, "
                          "without per-tenant limits");
    }
    g->cache = g->o.cache;
    if (!g->cache && g->o.redis_url && *g->o.redis_url) {
        int rc = cache_redis_new(g->o.redis_url, g->o.redis_ttl_s, g->o.redis_timeout_ms, &g->cache);
        if (rc) return rc;
        g->own_cache = 1;
    }
    if (!g->cache) log_info(GW_COMP, "no embedding cache: every image is encoded");
    g->ctx = g->o.ctx;
    if (!g->ctx) {
        int rc = msg_ctx_new(&g->ctx);
        if (rc) return rc;
        g->own_ctx = 1;
    }
    return gw_hub_start(g);
}

static void gw_teardown(gw *g) {
    gw_hub_stop(g);
    if (g->own_ctx) msg_ctx_free(g->ctx);
    if (g->own_cache) cache_free(g->cache);
    gw_auth_free(g->auth);
    gw_met_free(g->met);
    gw_reg_free(&g->reg);
    for (gw_enc *e = g->encs, *n; e; e = n) {
        n = e->next;
        gw_box_unref(e->box);
        free(e);
    }
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->cmd_mu);
    pthread_mutex_destroy(&g->enc_mu);
}

static int gw_check_opts(const gateway_opts *o) {
    if (o->port < 0 || o->port > 65535) return err_set(TV_EINVAL, "--port must be 0..65535");
    if (!o->listen || !*o->listen) return err_set(TV_EINVAL, "--listen needs an endpoint");
    if (o->max_body_mb <= 0 || o->max_images < 1 || o->max_image_pixels < 1 ||
        o->max_tokens_limit < 1 || o->queue < 0 || o->request_timeout_s < 1 ||
        o->heartbeat_ms < 10 || o->worker_timeout_ms < o->heartbeat_ms || o->max_connections < 1)
        return err_set(TV_EINVAL, "gateway limits must be positive (and worker timeout >= heartbeat)");
    return TV_OK;
}

static void gw_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int gateway_run(const gateway_opts *o, volatile sig_atomic_t *stop) {
    int rc = gw_check_opts(o);
    if (rc) return rc;
    gw *g = tv_xcalloc(1, sizeof *g);
    g->o = *o;
    g->efd = -1;
    g->stop = stop;
    g->lim = (gw_limits){(size_t)o->max_images, o->max_image_pixels,
                         (size_t)(o->max_body_mb * 1048576.0), (uint32_t)o->max_tokens_limit};
    if (g->lim.max_image_bytes > MSG_MAX_IMAGE_BYTES) g->lim.max_image_bytes = MSG_MAX_IMAGE_BYTES;
    if (g->lim.max_images > MSG_MAX_IMAGES) g->lim.max_images = MSG_MAX_IMAGES;
    /* Job ids and sequence numbers start at a random point so they do not repeat across gateway
     * restarts: a worker still finishing an old job of ours never mistakes a new job for it. */
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        nonce = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    nonce &= (1ull << GW_SEQ_NONCE_BITS) - 1;
    atomic_init(&g->next_id, (nonce << 28) + 1);   /* < 2^52: exact as a JSON number too */
    g->seq = nonce << (64 - GW_SEQ_NONCE_BITS);
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->cmd_mu, NULL);
    pthread_mutex_init(&g->enc_mu, NULL);
    struct MHD_Daemon *d = NULL;
    rc = gw_setup(g);
    if (!rc) rc = gw_http_start(g, &d);
    if (!rc) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        int port = di ? di->port : o->port;
        log_info(GW_COMP, "listening on http://%s:%d, workers connect to %s", o->host, port, o->listen);
        if (o->bound_port) *o->bound_port = port;
        while (!stop || !*stop) gw_sleep_ms(100);
        log_info(GW_COMP, "stopping: no new connections; waiting for %d requests in flight",
                 atomic_load(&g->inflight_http));
        MHD_quiesce_daemon(d);
        for (int i = 0; i < 100 && atomic_load(&g->inflight_http) > 0; i++) gw_sleep_ms(100);
        atomic_store(&g->stopping, 1);
        MHD_stop_daemon(d);
    }
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", err_msg());
    gw_teardown(g);
    free(g);
    if (rc) err_set(rc, "%s", keep);
    return rc;
}
