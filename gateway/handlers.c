/* handlers — POST /v1/chat/completions (one JSON answer, or SSE) and POST /v1/embeddings.
 * See gw_http.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "err.h"
#include "gw_http.h"
#include "log.h"

#define H_SLICE_S 0.25
#define H_SLACK_S 2.0   /* the worker enforces the deadline; we wait a little longer */

static char *h_strdup(const char *s) {
    char *d = strdup(s ? s : "");
    TV_ASSERT(d);
    return d;
}

static uint64_t h_unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Resolves the request's model to a fingerprint: 0, or -1 with e (400 unknown, 503 none). */
static int h_model(gw *g, const char *model, int need_lm, char *fp, char *name, uint32_t *rows,
                   uint32_t *dim, gw_error *e) {
    pthread_mutex_lock(&g->mu);
    int rc = gw_reg_resolve(&g->reg, model, need_lm, fp, name, rows, dim);
    int any = g->reg.n > 0;
    pthread_mutex_unlock(&g->mu);
    if (rc == TV_OK) return 0;
    if (rc == TV_ENOTFOUND && any && model && *model) {
        gw_api_fail(e, 400, "model_not_found", "model", "the model '%s' does not exist here (see GET /v1/models)", model);
        return -1;
    }
    gw_api_fail(e, 503, "no_worker", NULL, "no %s worker is registered%s%s",
                need_lm ? "vision + language-model" : "vision", model && *model ? " for " : "",
                model && *model ? model : "");
    return -1;
}

/* ---- the GenerateRequest ----------------------------------------------------------------------- */

/* A msg_generate with every pointer malloc'd (the hub msg_clears it). Takes the refs' inline
 * embeddings (refs keep their keys). */
static void h_generate(msg *m, const gw_chat_req *q, gw_ref *refs, const char *tenant,
                       uint64_t deadline_ms) {
    memset(m, 0, sizeof *m);
    m->type = MSG_GENERATE;
    msg_generate *gq = &m->u.generate;
    gq->messages = tv_xcalloc(q->n_messages ? q->n_messages : 1, sizeof *gq->messages);
    gq->n_messages = q->n_messages;
    for (size_t i = 0; i < q->n_messages; i++) {
        const msg_chat *s = &q->messages[i];
        msg_chat *d = &gq->messages[i];
        d->role = h_strdup(s->role);
        d->parts = tv_xcalloc(s->n_parts ? s->n_parts : 1, sizeof *d->parts);
        d->n_parts = s->n_parts;
        for (size_t k = 0; k < s->n_parts; k++) {
            d->parts[k].image = s->parts[k].image;
            d->parts[k].text = s->parts[k].text ? h_strdup(s->parts[k].text) : NULL;
        }
    }
    gq->images = tv_xcalloc(q->n_images ? q->n_images : 1, sizeof *gq->images);
    gq->n_images = q->n_images;
    for (size_t i = 0; i < q->n_images; i++) {
        gq->images[i].cache_key = h_strdup(refs[i].key);
        gq->images[i].embedding = refs[i].emb;
        memset(&refs[i].emb, 0, sizeof refs[i].emb);
    }
    gq->sampling = q->sampling;
    gq->sampling.stop = tv_xcalloc(q->sampling.n_stop ? q->sampling.n_stop : 1, sizeof(char *));
    for (size_t i = 0; i < q->sampling.n_stop; i++) gq->sampling.stop[i] = h_strdup(q->sampling.stop[i]);
    gq->tenant = h_strdup(tenant);
    gq->deadline_unix_ms = deadline_ms;
}

/* ---- chat state shared by the JSON and SSE paths ---------------------------------------------- */

typedef struct {
    gw *g;
    gw_tenant *tenant;
    gw_box *box;
    uint64_t job;
    size_t idx;                 /* next event to read */
    double t0, deadline;
    char id[40], model[GW_NAME_MAX];
    long long created;
    int include_usage, first_seen, ended;
    double next_gone_check;     /* when h_next next asks whether the client is still there */
    uint32_t prompt_tokens, completion_tokens;
    struct MHD_Connection *conn;
    gw_sb out;                  /* SSE bytes not yet handed to MHD */
    size_t out_off;
} h_chat;

static void h_chat_free(h_chat *s) {
    if (!s) return;
    if (s->box && !gw_box_done(s->box)) gw_cancel(s->g, s->job);
    gw_box_unref(s->box);
    if (s->tenant) gw_auth_release(s->g->auth, s->tenant);
    gw_sb_free(&s->out);
    free(s);
}

/* Next event, or NULL with e filled (504 timeout, 499 client gone, 503 shutdown). */
static const msg *h_next(h_chat *s, int *final, gw_error *e) {
    for (;;) {
        double until = clk_now_s() + H_SLICE_S;
        if (until > s->deadline + H_SLACK_S) until = s->deadline + H_SLACK_S;
        const msg *m = gw_box_wait(s->box, s->idx, until, final);
        if (m && s->conn && clk_now_s() >= s->next_gone_check) {
            /* also while tokens keep coming: a JSON answer writes nothing until the end, and a
             * stream of held-back (empty) chunks neither, so a write error would never tell */
            s->next_gone_check = clk_now_s() + H_SLICE_S;
            if (gw_client_gone(s->conn)) m = NULL;
        }
        if (m) {
            s->idx++;
            return m;
        }
        if (clk_now_s() >= s->deadline + H_SLACK_S) {
            gw_api_fail(e, 504, "timeout", NULL, "the answer took longer than the request's time limit");
            return NULL;
        }
        if (atomic_load(&s->g->stopping)) {
            gw_api_fail(e, 503, "shutting_down", NULL, "the gateway is shutting down");
            return NULL;
        }
        if (s->conn && gw_client_gone(s->conn)) {
            gw_api_fail(e, 499, "client_gone", NULL, "client closed the connection");
            return NULL;
        }
    }
}

/* Bookkeeping for a chunk: TTFT at the first one, token totals. */
static void h_on_chunk(h_chat *s, const msg_chunk *ch) {
    if (!s->first_seen) {
        s->first_seen = 1;
        gw_met_observe(s->g->met, "tinyvlm_ttft_seconds", "", clk_now_s() - s->t0);
    }
    s->prompt_tokens = ch->prompt_tokens;
    s->completion_tokens = ch->completion_tokens;
}

static void h_count_tokens(h_chat *s) {
    gw_met_add(s->g->met, "tinyvlm_tokens_generated_total", "", s->completion_tokens);
    gw_met_add(s->g->met, "tinyvlm_prompt_tokens_total", "", s->prompt_tokens);
}

/* ---- SSE ---------------------------------------------------------------------------------------- */

static void h_sse_take(h_chat *s, char *ev) {
    gw_sb_append(&s->out, ev, strlen(ev));
    free(ev);
}

/* Formats the next event(s) into s->out. */
static void h_sse_step(h_chat *s) {
    gw_error e;
    int final = 0;
    const msg *m = h_next(s, &final, &e);
    if (m && m->type == MSG_CHUNK) {
        const msg_chunk *ch = &m->u.chunk;
        int first = !s->first_seen;
        h_on_chunk(s, ch);
        if (first) h_sse_take(s, gw_api_chunk_sse(s->id, s->created, s->model, "assistant", "", NULL, s->include_usage));
        if (ch->text && ch->text[0])
            h_sse_take(s, gw_api_chunk_sse(s->id, s->created, s->model, NULL, ch->text, NULL, s->include_usage));
        if (!final) return;
        h_sse_take(s, gw_api_chunk_sse(s->id, s->created, s->model, NULL, NULL, ch->finish_reason, s->include_usage));
        if (s->include_usage)
            h_sse_take(s, gw_api_usage_sse(s->id, s->created, s->model, s->prompt_tokens, s->completion_tokens));
        h_count_tokens(s);
    } else {
        if (m) gw_error_from_msg(m, &e);
        if (e.status == 499) { /* nobody to tell */
            s->ended = 1;
            return;
        }
        log_warn("gateway", "stream %s ended with %d %s: %s", s->id, e.status, e.code, e.message);
        h_sse_take(s, gw_api_error_sse(&e));
    }
    gw_sb_printf(&s->out, "data: [DONE]\n\n");
    s->ended = 1;
}

static ssize_t h_sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    h_chat *s = cls;
    while (s->out_off >= s->out.len) {
        if (s->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        s->out.len = 0, s->out_off = 0;
        h_sse_step(s);
    }
    size_t n = s->out.len - s->out_off;
    if (n > max) n = max;
    memcpy(buf, s->out.s + s->out_off, n);
    s->out_off += n;
    return (ssize_t)n;
}

static void h_sse_free(void *cls) {
    h_chat *s = cls;
    gw_record(s->g, "/v1/chat/completions", 200, s->t0);
    h_chat_free(s);
}

static enum MHD_Result h_stream(gw *g, struct MHD_Connection *c, gw_req *r, h_chat *s) {
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                  h_sse_read, s, h_sse_free);
    if (!resp) {
        h_chat_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    r->responded = 1; /* h_sse_free records the metrics when the stream ends */
    enum MHD_Result ok = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* ---- non-streaming answer ----------------------------------------------------------------------- */

static enum MHD_Result h_whole(gw *g, struct MHD_Connection *c, gw_req *r, h_chat *s) {
    gw_sb text = {0};
    gw_error e;
    const char *finish = "stop";
    char finish_buf[32];
    s->idx = 0;
    for (;;) {
        int final = 0;
        const msg *m = h_next(s, &final, &e);
        if (!m || m->type != MSG_CHUNK) {
            if (m) gw_error_from_msg(m, &e);
            gw_sb_free(&text);
            enum MHD_Result ok = e.status == 499 ? MHD_NO : gw_send_error(g, c, r, &e);
            h_chat_free(s);
            return ok;
        }
        h_on_chunk(s, &m->u.chunk);
        if (m->u.chunk.text) gw_sb_append(&text, m->u.chunk.text, strlen(m->u.chunk.text));
        if (final) {
            snprintf(finish_buf, sizeof finish_buf, "%s", m->u.chunk.finish_reason);
            finish = finish_buf;
            break;
        }
    }
    h_count_tokens(s);
    char *body = gw_api_completion_json(s->id, s->created, s->model, text.s ? text.s : "", finish,
                                        s->prompt_tokens, s->completion_tokens);
    gw_sb_free(&text);
    h_chat_free(s);
    return gw_send(g, c, r, 200, "application/json", body, NULL);
}

/* ---- POST /v1/chat/completions ----------------------------------------------------------------- */

/* Images -> refs -> GenerateRequest -> first event. Retries once (images encoded inline) when the
 * LM worker could not read an embedding. Returns 0 with s->box holding a first event that is a
 * chunk, or -1 with e filled. */
static int h_start(gw *g, struct MHD_Connection *c, const gw_chat_req *q, const char *fp,
                   const gw_tenant_info *ti, h_chat *s, gw_error *e) {
    uint64_t deadline_ms = h_unix_ms() + (uint64_t)g->o.request_timeout_s * 1000u;
    for (int attempt = 0; attempt < 2; attempt++) {
        gw_ref *refs = tv_xcalloc(q->n_images ? q->n_images : 1, sizeof *refs);
        if (gw_images(g, q->images, q->n_images, fp, ti->salt, 0, attempt > 0, s->deadline, c, refs, e)) {
            free(refs);
            return -1;
        }
        msg m;
        h_generate(&m, q, refs, ti->name, deadline_ms);
        gw_refs_free(refs, q->n_images);
        free(refs);
        s->box = gw_submit(g, MSG_WORKER_LM, fp, &m, s->deadline, &s->job);
        s->idx = 0;
        int final;
        const msg *first = h_next(s, &final, e);
        if (first && first->type == MSG_CHUNK) {
            s->idx = 0; /* the JSON/SSE path reads it again */
            return 0;
        }
        if (first) gw_error_from_msg(first, e);
        else gw_cancel(g, s->job); /* client gone, timeout or shutdown before the first token: the
                                    * worker must free the slot (h_chat_free no longer sees the box) */
        gw_box_unref(s->box);
        s->box = NULL;
        if (!first || strcmp(e->code, "embedding_unavailable") != 0) return -1;
        gw_met_add(g->met, "tinyvlm_embedding_retries_total", "", 1);
        log_info("gateway", "LM worker could not read an embedding; encoding again inline");
    }
    return -1;
}

enum MHD_Result gw_chat(gw *g, struct MHD_Connection *c, gw_req *r) {
    enum MHD_Result sent;
    gw_tenant *t;
    gw_error e;
    if (gw_admit(g, c, r, &t, &sent)) return sent;
    h_chat *s = tv_xcalloc(1, sizeof *s);
    s->g = g, s->tenant = t, s->t0 = r->t0, s->conn = c;
    s->deadline = r->t0 + g->o.request_timeout_s;
    if (!gw_json_content(c)) {
        h_chat_free(s);
        gw_api_fail(&e, 415, "unsupported_media_type", NULL, "send the request as Content-Type: application/json");
        return gw_send_error(g, c, r, &e);
    }
    gw_chat_req q;
    if (gw_api_parse_chat(r->body.s ? r->body.s : "", r->body.len, &g->lim, &q, &e)) {
        h_chat_free(s);
        return gw_send_error(g, c, r, &e);
    }
    char fp[65];
    gw_tenant_info ti;
    gw_auth_info(t, &ti);
    int rc = h_model(g, q.model, 1, fp, s->model, NULL, NULL, &e);
    if (!rc) rc = h_start(g, c, &q, fp, &ti, s, &e);
    int stream = q.stream;
    s->include_usage = q.include_usage;
    gw_chat_req_free(&q);
    if (rc) {
        h_chat_free(s);
        return e.status == 499 ? MHD_NO : gw_send_error(g, c, r, &e);
    }
    snprintf(s->id, sizeof s->id, "chatcmpl-%016llx", (unsigned long long)s->job ^ 0x9e3779b97f4a7c15ull);
    s->created = (long long)time(NULL);
    if (stream) return h_stream(g, c, r, s);
    return h_whole(g, c, r, s);
}

/* ---- POST /v1/embeddings ------------------------------------------------------------------------ */

enum MHD_Result gw_embeddings(gw *g, struct MHD_Connection *c, gw_req *r) {
    enum MHD_Result sent;
    gw_tenant *t;
    gw_error e;
    if (gw_admit(g, c, r, &t, &sent)) return sent;
    gw_embed_req q = {0};
    int rc = -1;
    if (!gw_json_content(c))
        gw_api_fail(&e, 415, "unsupported_media_type", NULL, "send the request as Content-Type: application/json");
    else
        rc = gw_api_parse_embeddings(r->body.s ? r->body.s : "", r->body.len, &g->lim, &q, &e);
    char fp[65], name[GW_NAME_MAX];
    uint32_t rows = 0, dim = 0;
    if (!rc) rc = h_model(g, q.model, 0, fp, name, &rows, &dim, &e);
    gw_ref *refs = tv_xcalloc(q.n_images ? q.n_images : 1, sizeof *refs);
    gw_tenant_info ti;
    gw_auth_info(t, &ti);
    int have_refs = 0;
    if (!rc) {
        rc = gw_images(g, q.images, q.n_images, fp, ti.salt, 1, 0, r->t0 + g->o.request_timeout_s, c, refs, &e);
        have_refs = !rc;
    }
    float **vec = tv_xcalloc(q.n_images ? q.n_images : 1, sizeof *vec);
    const msg_embedding **full = tv_xcalloc(q.n_images ? q.n_images : 1, sizeof *full);
    int hits = 0, *cached = tv_xcalloc(q.n_images ? q.n_images : 1, sizeof *cached);
    for (size_t i = 0; !rc && i < q.n_images; i++) {
        dim = refs[i].emb.dim;
        vec[i] = tv_xmalloc((dim ? dim : 1) * sizeof(float));
        if (gw_api_pool(&refs[i].emb, vec[i]) || (i && refs[i].emb.dim != refs[0].emb.dim)) {
            rc = -1;
            gw_api_fail(&e, 502, "bad_embedding", NULL, "a worker returned a malformed embedding");
        }
        full[i] = q.full ? &refs[i].emb : NULL;
        hits += cached[i] = refs[i].hit;
    }
    enum MHD_Result ok;
    if (rc) {
        ok = e.status == 499 ? MHD_NO : gw_send_error(g, c, r, &e);
    } else {
        char *body = gw_api_embeddings_json(name, &q, vec, full, cached, dim, q.n_images ? refs[0].emb.rows : 0);
        char nhits[16];
        snprintf(nhits, sizeof nhits, "%d", hits);
        const char *hdr[] = {"X-TinyVLM-Cache", refs[0].hit ? "hit" : "miss", "X-TinyVLM-Cache-Hits", nhits, NULL};
        ok = gw_send(g, c, r, 200, "application/json", body, hdr);
    }
    for (size_t i = 0; i < q.n_images; i++) free(vec[i]);
    free(vec);
    free(full);
    free(cached);
    if (have_refs) gw_refs_free(refs, q.n_images);
    free(refs);
    gw_embed_req_free(&q);
    gw_auth_release(g->auth, t);
    return ok;
}
