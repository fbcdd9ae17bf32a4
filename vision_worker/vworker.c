/* vworker — batches of EncodeRequests -> preprocess -> vision_encode -> cache + EncodeResult. */
#include "vworker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dtype.h"
#include "err.h"
#include "image.h"
#include "log.h"
#include "manifest.h"
#include "ops.h"
#include "vision.h"
#include "wlink.h"

static const char *const vw_default_gateway[] = {"tcp://127.0.0.1:5555"};

void vworker_opts_default(vworker_opts *o) {
    memset(o, 0, sizeof *o);
    o->gateways = vw_default_gateway;
    o->n_gateways = 1;
    o->device = "auto";
    o->max_batch = 8;
    o->batch_wait_ms = 5;
    o->emb_dtype = MSG_EMB_F16;
    o->redis_ttl_s = 86400;
    o->redis_timeout_ms = 200;
    o->heartbeat_ms = 1000;
    o->gateway_timeout_ms = 3000;
    o->grace_s = 20;
    o->dns_interval_s = 5;
}

typedef struct {
    msg m;      /* an MSG_ENCODE */
    int gw;     /* the gateway it came from */
    int ok;     /* preprocessed into its pixel slot */
} vw_item;

typedef struct {
    const vworker_opts *o;
    manifest *mf;
    kern_be *be;
    vision_model *vm;
    cache *cache;          /* borrowed or owned (own_cache) */
    int own_cache;
    msg_ctx *ctx;
    int own_ctx;
    wlink *link;
    int S, Q, d, max_batch;
    float *pixels;         /* [max_batch, 3, S, S] */
    float *emb;            /* [max_batch, Q, d] */
    uint8_t *out;          /* one embedding in emb_dtype */
    vw_item *batch;        /* [max_batch] */
    int n_batch;
    uint64_t first_ms;     /* arrival of the batch's first item */
    uint64_t items_done;
    double kernel_seconds;
} vw_state;

/* ---- set-up --------------------------------------------------------------------------------- */

static int vw_open_cache(vw_state *w) {
    const vworker_opts *o = w->o;
    if (o->cache) {
        w->cache = o->cache;
        return TV_OK;
    }
    if (!o->redis_url || !*o->redis_url) {
        log_warn("vision-worker", "no cache (--redis): every embedding travels inline");
        return TV_OK;
    }
    w->own_cache = 1;
    return cache_redis_new(o->redis_url, o->redis_ttl_s, o->redis_timeout_ms, &w->cache);
}

static int vw_open(vw_state *w) {
    const vworker_opts *o = w->o;
    if (!o->model || !*o->model)
        return err_set(TV_EINVAL, "vision worker: no model bundle given (--model)");
    if (o->max_batch < 1 || o->max_batch > 256 || o->batch_wait_ms < 0 ||
        (o->emb_dtype != MSG_EMB_F16 && o->emb_dtype != MSG_EMB_F32) ||
        o->n_gateways + o->n_gateway_dns < 1)
        return err_set(TV_EINVAL, "vision worker: bad options (max_batch 1..256, batch_wait_ms >= 0, "
                                  "emb dtype f16|f32, >= 1 gateway)");
    int rc = manifest_load(o->model, &w->mf);
    if (!rc)
        rc = kern_new_device(o->device ? o->device : "auto", o->threads, &w->be);
    if (!rc)
        rc = vision_load(w->mf, w->be, o->max_batch, &w->vm);
    if (!rc)
        rc = vw_open_cache(w);
    if (rc)
        return rc;
    w->S = vision_image_size(w->vm), w->Q = vision_tokens(w->vm), w->d = vision_dim(w->vm);
    w->max_batch = o->max_batch;
    size_t px = (size_t)3 * w->S * w->S, e = (size_t)w->Q * w->d;
    w->pixels = tv_xmalloc(sizeof(float) * px * (size_t)w->max_batch);
    w->emb = tv_xmalloc(sizeof(float) * e * (size_t)w->max_batch);
    w->out = tv_xmalloc(e * 4);
    w->batch = tv_xcalloc((size_t)w->max_batch, sizeof *w->batch);
    if (o->ctx) {
        w->ctx = o->ctx;
    } else if ((rc = msg_ctx_new(&w->ctx)) == 0) {
        w->own_ctx = 1;
    }
    if (rc)
        return rc;
    char id[MSG_PEER_MAX];
    if (o->worker_id && *o->worker_id)
        snprintf(id, sizeof id, "%s", o->worker_id);
    else
        wlink_default_id("vision", id, sizeof id);
    msg_hello h = {.kind = MSG_WORKER_VISION, .worker_id = id, .model = w->mf->name,
                   .fingerprint = w->mf->fingerprint, .device = (char *)kern_name(w->be),
                   .capacity = (uint32_t)w->max_batch, .emb_rows = (uint32_t)w->Q,
                   .emb_dim = (uint32_t)w->d};
    wlink_opts lo = {.endpoints = o->gateways, .n_endpoints = o->n_gateways,
                     .dns = o->gateway_dns, .n_dns = o->n_gateway_dns,
                     .dns_interval_ms = o->dns_interval_s * 1000, .heartbeat_ms = o->heartbeat_ms,
                     .timeout_ms = o->gateway_timeout_ms};
    rc = wlink_new(w->ctx, &lo, &h, &w->link);
    if (!rc)
        rc = wlink_health_start(w->link, o->health_port);
    if (!rc)
        log_info("vision-worker", "%s: model %s (%dx%d -> %d x %d), %s, batch %d, wait %d ms, "
                 "embeddings %s, cache %s", id, w->mf->name, w->S, w->S, w->Q, w->d,
                 kern_name(w->be), w->max_batch, o->batch_wait_ms,
                 o->emb_dtype == MSG_EMB_F16 ? "f16" : "f32", w->cache ? "on" : "off");
    return rc;
}

static void vw_close(vw_state *w) {
    for (int i = 0; i < w->n_batch; i++)
        msg_clear(&w->batch[i].m);
    wlink_free(w->link);
    if (w->own_ctx)
        msg_ctx_free(w->ctx);
    if (w->own_cache)
        cache_free(w->cache);
    vision_free(w->vm);
    kern_free(w->be);
    manifest_free(w->mf);
    free(w->pixels);
    free(w->emb);
    free(w->out);
    free(w->batch);
}

/* ---- one batch -------------------------------------------------------------------------------- */

/* Converts image k's [Q, d] floats to the wire dtype in w->out; returns the byte count. */
static size_t vw_convert(vw_state *w, const float *e) {
    size_t n = (size_t)w->Q * w->d;
    if (w->o->emb_dtype == MSG_EMB_F32) {
        memcpy(w->out, e, n * 4);
        return n * 4;
    }
    uint16_t *h = (uint16_t *)w->out;
    for (size_t i = 0; i < n; i++)
        h[i] = dtype_f32_to_f16(e[i]);
    return n * 2;
}

/* Stores and answers one encoded image. */
static void vw_answer(vw_state *w, vw_item *it, const float *e, double secs) {
    const msg_encode *rq = &it->m.u.encode;
    size_t len = vw_convert(w, e);
    int cached = 0;
    if (w->cache && rq->cache_key[0]) {
        cache_emb ce = {.rows = (uint32_t)w->Q, .dim = (uint32_t)w->d,
                        .dtype = (uint32_t)w->o->emb_dtype, .data = w->out, .len = len};
        snprintf(ce.fingerprint, sizeof ce.fingerprint, "%s", w->mf->fingerprint);
        int rc = cache_put(w->cache, rq->cache_key, &ce);
        cached = rc == TV_OK;
        if (rc)
            log_debug("vision-worker", "cache_put %s: %s", rq->cache_key, err_msg());
    }
    msg m = {.type = MSG_ENCODED};
    m.u.encoded = (msg_encoded){.id = rq->id, .cached = cached, .seconds = secs};
    if (rq->want_inline || !cached)
        m.u.encoded.embedding = (msg_embedding){(uint32_t)w->Q, (uint32_t)w->d,
                                                (uint32_t)w->o->emb_dtype, w->out, len};
    if (wlink_send(w->link, it->gw, &m))
        log_warn("vision-worker", "answer to request %llu lost: %s", (unsigned long long)rq->id,
                 err_msg());
}

typedef struct {
    vw_state *w;
    int B;
} vw_job;

static int vw_encode_job(void *arg) {
    vw_job *j = arg;
    return vision_encode(j->w->vm, j->w->pixels, j->B, j->w->emb);
}

static void vw_run_batch(vw_state *w) {
    size_t px = (size_t)3 * w->S * w->S, e = (size_t)w->Q * w->d;
    const float *mean = w->mf->vision.mean, *std = w->mf->vision.std;
    int B = 0;
    for (int i = 0; i < w->n_batch; i++) { /* decode into consecutive slots; refuse the bad */
        vw_item *it = &w->batch[i];
        const msg_encode *rq = &it->m.u.encode;
        int rc = img_preprocess(rq->image, rq->image_len, NULL, w->S, mean, std,
                                w->pixels + (size_t)B * px);
        it->ok = rc == TV_OK;
        if (it->ok)
            B++;
        else
            wlink_send_error(w->link, it->gw, rq->id, 400, "invalid_image", err_msg());
    }
    if (B > 0) {
        double t0 = clk_now_s();
        vw_job job = {w, B};
        int rc = wlink_busy(w->link, vw_encode_job, &job); /* heartbeats go on meanwhile */
        double secs = clk_now_s() - t0;
        w->kernel_seconds += secs;
        for (int i = 0, k = 0; i < w->n_batch; i++) {
            vw_item *it = &w->batch[i];
            if (!it->ok)
                continue;
            if (rc)
                wlink_send_error(w->link, it->gw, it->m.u.encode.id, 500, "internal_error",
                                 err_msg());
            else
                vw_answer(w, it, w->emb + (size_t)k * e, secs);
            k++;
        }
        w->items_done += (uint64_t)B;
        log_debug("vision-worker", "batch of %d image(s) in %.3f s", B, secs);
    }
    for (int i = 0; i < w->n_batch; i++)
        msg_clear(&w->batch[i].m);
    w->n_batch = 0;
}

/* ---- the loop ---------------------------------------------------------------------------------- */

static void vw_take(vw_state *w, msg *m, int gw) {
    if (m->type == MSG_ENCODE && w->n_batch < w->max_batch) {
        if (w->n_batch == 0)
            w->first_ms = (uint64_t)clk_now_ms();
        w->batch[w->n_batch++] = (vw_item){*m, gw, 0};
        memset(m, 0, sizeof *m); /* the batch owns it now */
        return;
    }
    if (m->type == MSG_ENCODE) /* the gateway sent more than our capacity */
        wlink_send_error(w->link, gw, m->u.encode.id, 503, "worker_busy",
                         "the vision worker's batch is full");
    else if (m->type == MSG_ERROR)
        log_warn("vision-worker", "gateway error for %llu: %s: %s",
                 (unsigned long long)m->u.error.id, m->u.error.code, m->u.error.message);
    /* MSG_CANCEL: encodes are short; the answer is simply not used */
    msg_clear(m);
}

static void vw_set_load(vw_state *w, int draining) {
    msg_heartbeat hb = {.load = (uint32_t)w->n_batch, .capacity = (uint32_t)w->max_batch,
                        .kernel_seconds = w->kernel_seconds, .items_done = w->items_done,
                        .draining = draining};
    kern_gpu_memory(w->be, &hb.gpu_mem_used, &hb.gpu_mem_total);
    wlink_set_load(w->link, &hb);
}

/* Receives until the batch is due, then runs it. wait_ms bounds an idle wait. */
static int vw_turn(vw_state *w, int idle_wait_ms, int draining) {
    vw_set_load(w, draining);
    int timeout = idle_wait_ms;
    if (w->n_batch) {
        int64_t left = (int64_t)(w->first_ms + (uint64_t)w->o->batch_wait_ms) - clk_now_ms();
        timeout = left > 0 ? (int)left : 0;
    }
    msg m;
    int gw = 0, rc = wlink_recv(w->link, timeout, &m, &gw);
    if (rc == TV_OK)
        vw_take(w, &m, gw);
    else if (rc != TV_ETIMEOUT)
        return rc;
    if (w->n_batch && (w->n_batch == w->max_batch ||
                       (uint64_t)clk_now_ms() >= w->first_ms + (uint64_t)w->o->batch_wait_ms))
        vw_run_batch(w);
    return TV_OK;
}

int vworker_run(const vworker_opts *o, volatile sig_atomic_t *stop) {
    vw_state w = {.o = o};
    int rc = vw_open(&w);
    int announced = 0;
    while (!rc && !(stop && *stop)) {
        rc = vw_turn(&w, 100, 0);
        if (!announced && wlink_registered(w.link)) {
            announced = 1;
            if (o->ready)
                *o->ready = 1;
        }
    }
    if (!rc) { /* Bye, then finish what the gateway had already sent */
        log_info("vision-worker", "stopping: finishing in-flight images");
        wlink_bye(w.link, "shutdown");
        int64_t end = clk_now_ms() + 300, hard = clk_now_ms() + (int64_t)o->grace_s * 1000;
        while (!rc && (w.n_batch || clk_now_ms() < end) && clk_now_ms() < hard)
            rc = vw_turn(&w, 50, 1);
        if (w.n_batch)
            vw_run_batch(&w);
    }
    vw_close(&w);
    return rc;
}
