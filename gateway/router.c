/* router — see router.h. A gateway has a handful of workers: linear scans are the right data
 * structure. */
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void gw_reg_free(gw_registry *r) {
    free(r->w);
    memset(r, 0, sizeof *r);
}

gw_worker *gw_reg_find(gw_registry *r, const char *id) {
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->w[i].id, id)) return &r->w[i];
    return NULL;
}

static int reg_hex64(const char *s) {
    if (!s || strlen(s) != 64) return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F')))
            return 0;
    return 1;
}

gw_worker *gw_reg_hello(gw_registry *r, const msg_hello *h, double now) {
    if (!h->worker_id || !h->worker_id[0] || strlen(h->worker_id) >= MSG_PEER_MAX) {
        err_set(TV_EINVAL, "hello without a usable worker id");
        return NULL;
    }
    if (h->kind != MSG_WORKER_VISION && h->kind != MSG_WORKER_LM) {
        err_set(TV_EINVAL, "hello from %s: unknown worker kind %d", h->worker_id, (int)h->kind);
        return NULL;
    }
    if (h->capacity == 0 || h->capacity > 4096) {
        err_set(TV_EINVAL, "hello from %s: capacity %u out of range", h->worker_id, h->capacity);
        return NULL;
    }
    if (!reg_hex64(h->fingerprint)) {
        err_set(TV_EINVAL, "hello from %s: fingerprint is not 64 hex digits", h->worker_id);
        return NULL;
    }
    gw_worker *w = gw_reg_find(r, h->worker_id);
    if (!w) {
        if (r->n == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 8;
            r->w = tv_xrealloc(r->w, r->cap * sizeof *r->w);
        }
        w = &r->w[r->n++];
        memset(w, 0, sizeof *w);
        snprintf(w->id, sizeof w->id, "%s", h->worker_id);
    }
    w->kind = h->kind;
    snprintf(w->model, sizeof w->model, "%s", h->model && h->model[0] ? h->model : "model");
    snprintf(w->fingerprint, sizeof w->fingerprint, "%s", h->fingerprint);
    snprintf(w->device, sizeof w->device, "%s", h->device ? h->device : "");
    w->capacity = h->capacity;
    w->max_context = h->max_context;
    w->emb_rows = h->emb_rows;
    w->emb_dim = h->emb_dim;
    w->draining = 0;
    w->last_seen = now;
    return w;
}

void gw_reg_remove(gw_registry *r, const char *id) {
    gw_worker *w = gw_reg_find(r, id);
    if (!w) return;
    size_t i = (size_t)(w - r->w);
    memmove(&r->w[i], &r->w[i + 1], (r->n - i - 1) * sizeof *r->w);
    r->n--;
}

int gw_reg_pick(const gw_registry *r, msg_worker_kind kind, const char *fingerprint) {
    int best = -1;
    for (size_t i = 0; i < r->n; i++) {
        const gw_worker *w = &r->w[i];
        if (w->kind != kind || w->draining || strcmp(w->fingerprint, fingerprint) ||
            w->inflight >= w->capacity)
            continue;
        if (best < 0) {
            best = (int)i;
            continue;
        }
        const gw_worker *b = &r->w[best];
        uint32_t fw = w->capacity - w->inflight, fb = b->capacity - b->inflight;
        /* Round robin among the most free: "fewest ever assigned" would hand a newcomer every
         * item until it caught up, and picking the first would leave it idle. */
        if (fw > fb || (fw == fb && w->last_pick < b->last_pick)) best = (int)i;
    }
    return best;
}

void gw_reg_assign(gw_registry *r, int k) {
    TV_ASSERT(k >= 0 && (size_t)k < r->n);
    gw_worker *w = &r->w[k];
    w->inflight++;
    w->assigned++;
    w->last_pick = ++r->tick;
}

int gw_reg_count(const gw_registry *r, msg_worker_kind kind, const char *fingerprint) {
    int n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += r->w[i].kind == kind && !r->w[i].draining &&
             (!fingerprint || !strcmp(r->w[i].fingerprint, fingerprint));
    return n;
}

size_t gw_reg_silent(const gw_registry *r, double now, double timeout_s,
                     char (*ids)[MSG_PEER_MAX], size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (now - r->w[i].last_seen <= timeout_s) continue;
        if (n < cap) snprintf(ids[n], MSG_PEER_MAX, "%s", r->w[i].id);
        n++;
    }
    return n;
}

/* Does worker w serve the requested model (name or fingerprint; NULL/"" = any)? */
static int reg_matches(const gw_worker *w, const char *model) {
    return !model || !model[0] || !strcmp(w->model, model) || !strcmp(w->fingerprint, model);
}

int gw_reg_resolve(const gw_registry *r, const char *model, int need_lm, char *fingerprint,
                   char *name, uint32_t *emb_rows, uint32_t *emb_dim) {
    int known = 0;
    for (size_t i = 0; i < r->n; i++) {
        const gw_worker *w = &r->w[i];
        if (!reg_matches(w, model)) continue;
        known = 1;
        if (w->kind != MSG_WORKER_VISION || w->draining) continue;
        if (need_lm && !gw_reg_count(r, MSG_WORKER_LM, w->fingerprint)) continue;
        memcpy(fingerprint, w->fingerprint, 65);
        if (name) snprintf(name, GW_NAME_MAX, "%s", w->model);
        if (emb_rows) *emb_rows = w->emb_rows;
        if (emb_dim) *emb_dim = w->emb_dim;
        return TV_OK;
    }
    if (!known)
        return err_set(TV_ENOTFOUND, "model '%s' is not served here", model && *model ? model : "");
    return err_set(TV_EAGAIN, "model '%s' has no %s worker registered right now",
                   model && *model ? model : "", need_lm ? "vision + language-model" : "vision");
}

size_t gw_reg_models(const gw_registry *r, char (*names)[GW_NAME_MAX], size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < r->n && n < cap; i++) {
        const gw_worker *w = &r->w[i];
        if (w->kind != MSG_WORKER_VISION || w->draining ||
            !gw_reg_count(r, MSG_WORKER_LM, w->fingerprint))
            continue;
        int dup = 0;
        for (size_t j = 0; j < n; j++) dup |= !strcmp(names[j], w->model);
        if (!dup) snprintf(names[n++], GW_NAME_MAX, "%s", w->model);
    }
    return n;
}
