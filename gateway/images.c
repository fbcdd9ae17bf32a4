/* images — a request's images to embedding references: cache keys, cache lookups, encodes by
 * the vision workers (one per key at a time, shared by every request that needs it meanwhile).
 * See gw_http.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "gw_http.h"
#include "log.h"

#define IMG_WAIT_SLICE_S 0.25

void gw_error_from_msg(const msg *m, gw_error *e) {
    if (m->type != MSG_ERROR) {
        gw_api_fail(e, 502, "bad_worker_answer", NULL, "unexpected %s from a worker", msg_type_name(m->type));
        return;
    }
    int st = m->u.error.status >= 400 && m->u.error.status <= 599 ? (int)m->u.error.status : 500;
    gw_api_fail(e, st, m->u.error.code, NULL, "%s", m->u.error.message ? m->u.error.message : "");
}

void gw_refs_free(gw_ref *refs, size_t n) {
    for (size_t i = 0; refs && i < n; i++) {
        free(refs[i].emb.data);
        memset(&refs[i].emb, 0, sizeof refs[i].emb);
    }
}

static void img_count(gw *g, const char *result) {
    char l[48];
    snprintf(l, sizeof l, "result=\"%s\"", result);
    gw_met_add(g->met, "tinyvlm_cache_lookups_total", l, 1);
}

/* Copies an embedding (the box keeps its own). */
static void img_emb_copy(msg_embedding *dst, const msg_embedding *src) {
    *dst = *src;
    dst->data = tv_xmalloc(src->len ? src->len : 1);
    memcpy(dst->data, src->data, src->len);
}

/* Looks the key up. Returns 1 hit (values in ref->emb when need_values), 0 miss, -1 cache down. */
static int img_lookup(gw *g, const char *fp, int need_values, gw_ref *ref) {
    if (!g->cache) {
        img_count(g, "disabled");
        return 0;
    }
    int rc;
    if (need_values) {
        cache_emb ce = {0};
        rc = cache_get(g->cache, ref->key, fp, &ce);
        if (rc == TV_OK) {
            ref->emb = (msg_embedding){ce.rows, ce.dim, ce.dtype, ce.data, ce.len};
            rc = 1;
        }
    } else {
        rc = cache_exists(g->cache, ref->key);
    }
    if (rc == 1) img_count(g, "hit");
    else if (rc == 0 || rc == TV_ENOTFOUND) img_count(g, "miss");
    else img_count(g, "error");
    return rc == 1 ? 1 : rc == 0 || rc == TV_ENOTFOUND ? 0 : -1;
}

/* The shared encode for key: joins one in flight, or prepares one (*job, which the caller
 * submits with the request's other new encodes). Returns the box reference the caller waits on;
 * *owner says whether this caller started it (and must retire the entry). Called with enc_mu
 * held, so a request that joins meanwhile finds the entry before the job is submitted. */
static gw_box *img_encode(gw *g, const gw_image *im, const char *fp, const char *key,
                          int want_inline, int may_join, double deadline, int *owner,
                          gw_job **job) {
    for (gw_enc *e = g->encs; e && may_join; e = e->next)
        if (!strcmp(e->key, key)) {
            gw_met_add(g->met, "tinyvlm_image_encode_joins_total", "", 1);
            *owner = 0;
            return gw_box_ref(e->box);
        }
    msg m = {.type = MSG_ENCODE};
    m.u.encode.image = tv_xmalloc(im->len);
    memcpy(m.u.encode.image, im->data, im->len);
    m.u.encode.image_len = im->len;
    m.u.encode.cache_key = strdup(key);
    TV_ASSERT(m.u.encode.cache_key);
    m.u.encode.want_inline = want_inline;
    uint64_t id;
    gw_box *b;
    *job = gw_job_prepare(g, MSG_WORKER_VISION, fp, &m, deadline, &b, &id);
    gw_enc *e = tv_xcalloc(1, sizeof *e);
    snprintf(e->key, sizeof e->key, "%s", key);
    e->box = gw_box_ref(b);
    e->next = g->encs;
    g->encs = e;
    *owner = 1;
    return b;
}

/* Removes key's in-flight entry (the one on box b) once its answer is in: later requests then
 * use the cache. */
static void img_retire(gw *g, const char *key, gw_box *b) {
    pthread_mutex_lock(&g->enc_mu);
    for (gw_enc **p = &g->encs; *p; p = &(*p)->next)
        if (!strcmp((*p)->key, key) && (*p)->box == b) {
            gw_enc *e = *p;
            *p = e->next;
            gw_box_unref(e->box);
            free(e);
            break;
        }
    pthread_mutex_unlock(&g->enc_mu);
}

/* Waits for the first event of b. Returns it, or NULL with e filled (timeout, client gone,
 * shutdown). */
static const msg *img_wait(gw *g, gw_box *b, double deadline, struct MHD_Connection *c, gw_error *e) {
    for (;;) {
        double now = clk_now_s(), until = now + IMG_WAIT_SLICE_S;
        if (until > deadline) until = deadline;
        const msg *m = gw_box_wait(b, 0, until, NULL);
        if (m) return m;
        if (clk_now_s() >= deadline) {
            gw_api_fail(e, 504, "timeout", NULL, "image encoding took longer than the request's time limit");
            return NULL;
        }
        if (atomic_load(&g->stopping)) {
            gw_api_fail(e, 503, "shutting_down", NULL, "the gateway is shutting down");
            return NULL;
        }
        if (c && gw_client_gone(c)) {
            gw_api_fail(e, 499, "client_gone", NULL, "client closed the connection");
            return NULL;
        }
    }
}

/* Turns the encode answer into ref. Returns 0, 1 (need the values but only the cache has them
 * and it failed: encode again inline), or -1 with e filled. */
static int img_take(gw *g, const msg *m, const char *fp, int need_values, int owner, gw_ref *ref,
                    gw_error *e) {
    if (owner) /* counted once per encode, not per request that waited on it */
        gw_met_add(g->met, "tinyvlm_image_encodes_total",
                   m->type == MSG_ENCODED ? "result=\"ok\"" : "result=\"error\"", 1);
    if (m->type != MSG_ENCODED) {
        gw_error_from_msg(m, e);
        return -1;
    }
    if (m->u.encoded.embedding.data) {
        img_emb_copy(&ref->emb, &m->u.encoded.embedding);
        return 0;
    }
    if (!m->u.encoded.cached) {
        gw_api_fail(e, 502, "bad_worker_answer", NULL, "the vision worker neither cached nor returned the embedding");
        return -1;
    }
    if (!need_values) return 0;
    cache_emb ce = {0};
    if (g->cache && cache_get(g->cache, ref->key, fp, &ce) == TV_OK) {
        ref->emb = (msg_embedding){ce.rows, ce.dim, ce.dtype, ce.data, ce.len};
        return 0;
    }
    return 1;
}

int gw_images(gw *g, const gw_image *ims, size_t n, const char *fp, const char *salt,
              int need_values, int force_encode, double deadline, struct MHD_Connection *c,
              gw_ref *refs, gw_error *e) {
    gw_box **boxes = tv_xcalloc(n ? n : 1, sizeof *boxes);
    int *owner = tv_xcalloc(n ? n : 1, sizeof *owner);
    int *found = tv_xcalloc(n ? n : 1, sizeof *found);
    gw_job **jobs = tv_xcalloc(n ? n : 1, sizeof *jobs);
    size_t n_jobs = 0;
    int rc = 0;
    memset(refs, 0, n * sizeof *refs);
    for (size_t i = 0; i < n; i++) { /* the cache first, outside enc_mu */
        cache_key(refs[i].key, sizeof refs[i].key, fp, ims[i].sha, salt);
        found[i] = force_encode ? -1 : img_lookup(g, fp, need_values, &refs[i]);
        refs[i].hit = found[i] == 1;
    }
    /* Every miss at once: the router spreads them over the vision workers by free slots; then we
     * wait for all of them (the encodes run in parallel, not one after another). */
    pthread_mutex_lock(&g->enc_mu);
    for (size_t i = 0; i < n; i++) {
        if (found[i] == 1) continue;
        int want_inline = force_encode || need_values || found[i] < 0 || !g->cache;
        boxes[i] = img_encode(g, &ims[i], fp, refs[i].key, want_inline, !force_encode, deadline,
                              &owner[i], &jobs[n_jobs]);
        if (owner[i]) n_jobs++;
    }
    pthread_mutex_unlock(&g->enc_mu);
    gw_submit_jobs(g, jobs, n_jobs);
    free(jobs);
    free(found);
    for (size_t i = 0; i < n; i++) {
        if (!boxes[i]) continue;
        const msg *m = rc ? NULL : img_wait(g, boxes[i], deadline, c, e);
        int took = m ? img_take(g, m, fp, need_values, owner[i], &refs[i], e) : -1;
        if (owner[i]) img_retire(g, refs[i].key, boxes[i]);
        gw_box_unref(boxes[i]);
        if (took == 1) /* a joined encode left the values only in a cache we cannot read */
            took = gw_images(g, &ims[i], 1, fp, salt, 1, 1, deadline, c, &refs[i], e);
        if (took && !rc) rc = -1;
    }
    free(boxes);
    free(owner);
    if (rc) gw_refs_free(refs, n);
    return rc;
}
