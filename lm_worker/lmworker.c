/* lmworker — GenerateRequests -> chat prompt + image embeddings -> sched -> TokenChunks. */
#include "lmworker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "clock.h"
#include "dtype.h"
#include "err.h"
#include "log.h"
#include "manifest.h"
#include "ops.h"
#include "phi.h"
#include "prompt.h"
#include "sched.h"
#include "tokenizer.h"
#include "wlink.h"

#define LW_MAX_LOST 64

static const char *const lw_default_gateway[] = {"tcp://127.0.0.1:5555"};

void lmworker_opts_default(lmworker_opts *o) {
    memset(o, 0, sizeof *o);
    o->gateways = lw_default_gateway;
    o->n_gateways = 1;
    o->device = "auto";
    o->max_seqs = 4;
    o->redis_ttl_s = 86400;
    o->redis_timeout_ms = 200;
    o->heartbeat_ms = 1000;
    o->gateway_timeout_ms = 3000;
    o->grace_s = 20;
    o->dns_interval_s = 5;
}

typedef struct {
    const lmworker_opts *o;
    manifest *mf;
    tokenizer *tok;
    kern_be *be;
    phi_model *lm;
    sched *s;
    cache *cache;
    int own_cache;
    msg_ctx *ctx;
    int own_ctx;
    wlink *link;
    int Q, d, n_ctx;
    size_t max_token_bytes;      /* the longest token's bytes: a cheap over-length test */
    int shutting_down;           /* "cancelled" finishes are the grace period running out */
    struct { int gw; uint64_t id; } lost[LW_MAX_LOST]; /* chunks that could not be sent */
    int n_lost;
    float *img;                  /* a request's image rows, f32 */
    size_t img_cap;              /* floats */
} lw_state;

/* ---- chunks out ------------------------------------------------------------------------------ */

static void lw_emit(void *user, const sched_event *ev) {
    lw_state *w = user;
    int rc;
    if (ev->error) {
        rc = wlink_send_error(w->link, ev->origin, ev->id, 500, "internal_error", err_msg());
    } else if (w->shutting_down && ev->finish && !strcmp(ev->finish, "cancelled")) {
        rc = wlink_send_error(w->link, ev->origin, ev->id, 503, "worker_shutdown",
                              "the LM worker stopped before the answer was complete");
    } else {
        msg m = {.type = MSG_CHUNK};
        m.u.chunk = (msg_chunk){.id = ev->id, .text = (char *)ev->text,
                                .tokens = (int32_t *)ev->tokens, .n_tokens = (size_t)ev->n_tokens,
                                .finish_reason = (char *)(ev->finish ? ev->finish : ""),
                                .prompt_tokens = ev->prompt_tokens,
                                .completion_tokens = ev->completion_tokens};
        rc = wlink_send(w->link, ev->origin, &m);
    }
    /* the gateway is gone: stop decoding for it (after this step; sched is busy now) */
    if (rc && !ev->finish && !ev->error && w->n_lost < LW_MAX_LOST) {
        w->lost[w->n_lost].gw = ev->origin;
        w->lost[w->n_lost++].id = ev->id;
    }
}

static void lw_cancel_lost(lw_state *w) {
    for (int i = 0; i < w->n_lost; i++) {
        log_warn("lm-worker", "request %llu: its gateway is unreachable; cancelled",
                 (unsigned long long)w->lost[i].id);
        sched_cancel(w->s, w->lost[i].gw, w->lost[i].id);
    }
    w->n_lost = 0;
}

/* Prefills run on a helper thread while this one keeps heartbeating (wlink_busy). */
static int lw_run(void *ctx, int (*fn)(void *arg), void *arg) {
    lw_state *w = ctx;
    return w->link ? wlink_busy(w->link, fn, arg) : fn(arg);
}

/* ---- set-up ----------------------------------------------------------------------------------- */

static int lw_open(lw_state *w) {
    const lmworker_opts *o = w->o;
    if (!o->model || !*o->model)
        return err_set(TV_EINVAL, "LM worker: no model bundle given (--model)");
    if (o->max_seqs < 1 || o->max_seqs > 256 || o->max_context < 0 ||
        o->n_gateways + o->n_gateway_dns < 1)
        return err_set(TV_EINVAL, "LM worker: bad options (max_seqs 1..256, max_context >= 0, "
                                  ">= 1 gateway)");
    int rc = manifest_load(o->model, &w->mf);
    if (!rc)
        rc = tok_load(w->mf->tokenizer_path, &w->tok);
    if (!rc)
        rc = kern_new_device(o->device ? o->device : "auto", o->threads, &w->be);
    if (!rc)
        rc = phi_load(w->mf, w->be, o->max_seqs, o->max_context, &w->lm);
    w->Q = w->mf ? manifest_image_tokens(w->mf) : 0, w->d = w->mf ? manifest_embed_dim(w->mf) : 0;
    if (!rc)
        rc = sched_new(w->lm, w->mf, w->tok, w->Q, lw_emit, w, &w->s);
    if (!rc)
        sched_set_runner(w->s, lw_run, w);
    if (!rc && o->cache) {
        w->cache = o->cache;
    } else if (!rc && o->redis_url && *o->redis_url) {
        w->own_cache = 1;
        rc = cache_redis_new(o->redis_url, o->redis_ttl_s, o->redis_timeout_ms, &w->cache);
    } else if (!rc) {
        log_warn("lm-worker", "no cache (--redis): only inline embeddings can be used");
    }
    if (!rc && o->ctx)
        w->ctx = o->ctx;
    else if (!rc && (rc = msg_ctx_new(&w->ctx)) == 0)
        w->own_ctx = 1;
    if (rc)
        return rc;
    w->n_ctx = phi_max_context(w->lm);
    w->max_token_bytes = 1;
    for (int32_t id = 0; id < tok_vocab_size(w->tok); id++) {
        const char *b;
        size_t n;
        if (tok_token_bytes(w->tok, id, &b, &n) == TV_OK && n > w->max_token_bytes)
            w->max_token_bytes = n;
    }
    char id[MSG_PEER_MAX];
    if (o->worker_id && *o->worker_id)
        snprintf(id, sizeof id, "%s", o->worker_id);
    else
        wlink_default_id("lm", id, sizeof id);
    msg_hello h = {.kind = MSG_WORKER_LM, .worker_id = id, .model = w->mf->name,
                   .fingerprint = w->mf->fingerprint, .device = (char *)kern_name(w->be),
                   .capacity = (uint32_t)o->max_seqs, .max_context = (uint32_t)w->n_ctx,
                   .emb_rows = (uint32_t)w->Q, .emb_dim = (uint32_t)w->d};
    wlink_opts lo = {.endpoints = o->gateways, .n_endpoints = o->n_gateways,
                     .dns = o->gateway_dns, .n_dns = o->n_gateway_dns,
                     .dns_interval_ms = o->dns_interval_s * 1000, .heartbeat_ms = o->heartbeat_ms,
                     .timeout_ms = o->gateway_timeout_ms};
    rc = wlink_new(w->ctx, &lo, &h, &w->link);
    if (!rc)
        rc = wlink_health_start(w->link, o->health_port);
    if (!rc)
        log_info("lm-worker", "%s: model %s, %s, %d sequences x %d positions, cache %s", id,
                 w->mf->name, kern_name(w->be), o->max_seqs, w->n_ctx, w->cache ? "on" : "off");
    return rc;
}

static void lw_close(lw_state *w) {
    wlink_free(w->link);
    if (w->own_ctx)
        msg_ctx_free(w->ctx);
    if (w->own_cache)
        cache_free(w->cache);
    sched_free(w->s);
    phi_free(w->lm);
    kern_free(w->be);
    tok_free(w->tok);
    manifest_free(w->mf);
    free(w->img);
}

/* ---- images ------------------------------------------------------------------------------------ */

/* One embedding [Q, d] of dtype f16/f32 in data[len] -> f32 rows at dst. */
static int lw_convert(const lw_state *w, uint32_t rows, uint32_t dim, uint32_t dtype,
                      const void *data, size_t len, float *dst) {
    size_t n = (size_t)w->Q * w->d, es = dtype == MSG_EMB_F16 ? 2 : dtype == MSG_EMB_F32 ? 4 : 0;
    if (rows != (uint32_t)w->Q || dim != (uint32_t)w->d || !es || len != n * es || !data)
        return err_set(TV_EINVAL, "image embedding is [%u, %u] dtype %u (%zu bytes); this model "
                       "takes [%d, %d] f16 or f32", rows, dim, dtype, len, w->Q, w->d);
    if (es == 4) {
        memcpy(dst, data, n * 4);
    } else {
        const uint8_t *p = data;
        for (size_t i = 0; i < n; i++) /* little-endian on the wire; no alignment assumed */
            dst[i] = dtype_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    }
    return TV_OK;
}

/* Image ref -> f32 rows at dst. On failure sets *status / *code for the Error. */
static int lw_image(lw_state *w, const msg_image_ref *ref, float *dst, uint32_t *status,
                    const char **code) {
    const msg_embedding *e = &ref->embedding;
    if (e->data) {
        *status = 400, *code = "invalid_embedding";
        return lw_convert(w, e->rows, e->dim, e->dtype, e->data, e->len, dst);
    }
    *status = 503, *code = "embedding_unavailable";
    if (!w->cache || !ref->cache_key || !ref->cache_key[0])
        return err_set(TV_ENOTFOUND, "no inline embedding and %s", w->cache ? "no cache key"
                                                                            : "no cache here");
    cache_emb ce = {0};
    int rc = cache_get(w->cache, ref->cache_key, w->mf->fingerprint, &ce);
    if (rc)
        return err_set(rc, "embedding %s not in the cache (%s)", ref->cache_key, err_msg());
    rc = lw_convert(w, ce.rows, ce.dim, ce.dtype, ce.data, ce.len, dst);
    cache_emb_clear(&ce);
    return rc;
}

/* Fills w->img with the rows of every marker in order (a repeated image is fetched once). */
static int lw_images(lw_state *w, const msg_generate *g, const prompt_ids *p, const int32_t *order,
                     uint32_t *status, const char **code) {
    size_t per = (size_t)w->Q * w->d, need = per * (size_t)p->n_images;
    if (need > w->img_cap) {
        w->img = tv_xrealloc(w->img, need * sizeof(float));
        w->img_cap = need;
    }
    for (int k = 0; k < p->n_images; k++) {
        int j = 0;
        while (j < k && order[j] != order[k])
            j++;
        if (j < k) {
            memcpy(w->img + (size_t)k * per, w->img + (size_t)j * per, per * sizeof(float));
            continue;
        }
        int rc = lw_image(w, &g->images[order[k]], w->img + (size_t)k * per, status, code);
        if (rc)
            return err_wrap(rc, "image %d", (int)order[k]);
    }
    return TV_OK;
}

/* 1 if the messages' text alone needs more positions than the context: every token covers at
 * most max_token_bytes of it, so this holds without tokenizing (a huge body is refused at once
 * instead of holding up the running sequences). */
static int lw_surely_too_long(const lw_state *w, const msg_generate *g) {
    size_t bytes = 0;
    for (size_t i = 0; i < g->n_messages; i++)
        for (size_t j = 0; j < g->messages[i].n_parts; j++)
            if (g->messages[i].parts[j].text)
                bytes += strlen(g->messages[i].parts[j].text);
    return bytes / w->max_token_bytes > (size_t)w->n_ctx;
}

/* ---- requests ----------------------------------------------------------------------------------- */

static void lw_generate(lw_state *w, const msg_generate *g, int gw, int draining) {
    uint32_t status = 400;
    const char *code = "invalid_request";
    prompt_ids p = {0};
    int32_t *order = NULL;
    int rc;
    if (draining) {
        status = 503, code = "worker_draining";
        rc = err_set(TV_EAGAIN, "the LM worker is shutting down");
    } else if (sched_active(w->s) >= sched_capacity(w->s)) {
        status = 503, code = "worker_busy";
        rc = err_set(TV_EAGAIN, "all %d sequence slots are busy", sched_capacity(w->s));
    } else if (g->sampling.n_stop > SCHED_MAX_REQ_STOPS) {
        rc = err_set(TV_EINVAL, "at most %d stop strings", SCHED_MAX_REQ_STOPS);
    } else if (lw_surely_too_long(w, g)) {
        code = "context_length_exceeded";
        rc = err_set(TV_ELIMIT, "the prompt is longer than the model's context (%d positions)",
                     w->n_ctx);
    } else {
        rc = chat_build(w->mf, w->tok, g->messages, g->n_messages, g->n_images, w->Q, w->n_ctx,
                        &p, &order);
        if (rc == TV_ELIMIT)
            code = "context_length_exceeded";
    }
    if (!rc)
        rc = lw_images(w, g, &p, order, &status, &code);
    if (!rc) {
        sched_req r = {.id = g->id, .origin = gw, .prompt = &p, .images = w->img,
                       .stop = (const char *const *)g->sampling.stop,
                       .n_stop = (int)g->sampling.n_stop, .deadline_ms = g->deadline_unix_ms};
        sched_sampling(w->mf, &g->sampling, &r.sp, &r.max_tokens);
        rc = sched_admit(w->s, &r, wlink_unix_ms());
        status = rc == TV_EAGAIN ? 503 : rc == TV_ELIMIT || rc == TV_EINVAL ? 400 : 500;
        code = rc == TV_EAGAIN   ? "worker_busy"
               : rc == TV_ELIMIT ? "context_length_exceeded"
               : rc == TV_EINVAL ? "invalid_request"
                                 : "internal_error";
    }
    if (rc) {
        log_debug("lm-worker", "request %llu refused: %s: %s", (unsigned long long)g->id, code,
                  err_msg());
        wlink_send_error(w->link, gw, g->id, status, code, err_msg());
    }
    prompt_ids_free(&p);
    free(order);
}

static void lw_handle(lw_state *w, const msg *m, int gw, int draining) {
    switch (m->type) {
    case MSG_GENERATE:
        lw_generate(w, &m->u.generate, gw, draining);
        break;
    case MSG_CANCEL:
        sched_cancel(w->s, gw, m->u.cancel_id);
        break;
    case MSG_ERROR:
        log_warn("lm-worker", "gateway error for %llu: %s: %s", (unsigned long long)m->u.error.id,
                 m->u.error.code, m->u.error.message);
        break;
    default:
        log_debug("lm-worker", "ignored a %s message", msg_type_name(m->type));
        break;
    }
}

/* ---- the loop ------------------------------------------------------------------------------------ */

static void lw_set_load(lw_state *w, int draining) {
    sched_stats st;
    sched_get_stats(w->s, &st);
    msg_heartbeat hb = {.load = (uint32_t)sched_active(w->s),
                        .capacity = (uint32_t)sched_capacity(w->s),
                        .kernel_seconds = st.kernel_seconds, .items_done = st.finished,
                        .tokens_out = st.tokens_out, .draining = draining};
    kern_gpu_memory(w->be, &hb.gpu_mem_used, &hb.gpu_mem_total);
    wlink_set_load(w->link, &hb);
}

/* Takes every waiting message (waiting up to idle_ms only when nothing runs), then one step. */
static int lw_turn(lw_state *w, int idle_ms, int draining) {
    lw_set_load(w, draining);
    int timeout = sched_active(w->s) ? 0 : idle_ms, gw = 0, rc;
    msg m;
    while ((rc = wlink_recv(w->link, timeout, &m, &gw)) == TV_OK) {
        lw_handle(w, &m, gw, draining);
        msg_clear(&m);
        timeout = 0;
    }
    if (rc != TV_ETIMEOUT)
        return rc;
    lw_cancel_lost(w);
    if (sched_active(w->s) && sched_step(w->s, wlink_unix_ms()) < 0)
        log_error("lm-worker", "decode step failed: %s", err_msg());
    lw_cancel_lost(w);
    return TV_OK;
}

int lmworker_run(const lmworker_opts *o, volatile sig_atomic_t *stop) {
    lw_state w = {.o = o};
    int rc = lw_open(&w), announced = 0;
    while (!rc && !(stop && *stop)) {
        rc = lw_turn(&w, 100, 0);
        if (!announced && wlink_registered(w.link)) {
            announced = 1;
            if (o->ready)
                *o->ready = 1;
        }
    }
    if (!rc) {
        log_info("lm-worker", "stopping: %d sequence(s) running, up to %d s to finish",
                 sched_active(w.s), o->grace_s);
        wlink_bye(w.link, "shutdown");
        /* also answer (refuse) what the gateway sent before it saw the Bye */
        int64_t t0 = clk_now_ms(), end = t0 + (int64_t)o->grace_s * 1000;
        while (!rc && (sched_active(w.s) || clk_now_ms() < t0 + 300) && clk_now_ms() < end)
            rc = lw_turn(&w, 50, 1);
        w.shutting_down = 1;
        sched_cancel_all(w.s, "cancelled");
    }
    lw_close(&w);
    return rc;
}
