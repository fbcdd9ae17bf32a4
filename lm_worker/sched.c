/* sched — slots, admission, batched decode steps, per-sequence sampling and stops. */
#include "sched.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "stopper.h"

typedef struct {
    int active;
    uint64_t id;
    int origin;
    sampler *smp;
    stopper *st;
    tok_stream *ts;
    int32_t *gen;          /* [max_context] tokens sampled so far */
    int n_gen, max_new;
    int32_t pending;       /* the last sampled token, fed to the next decode step */
    uint64_t deadline;
    uint32_t prompt_rows;
} sched_seq;

struct sched {
    phi_model *lm;
    const manifest *mf;
    const tokenizer *tok;
    int image_rows, V, d, n_ctx, n_slots;
    sched_emit_fn emit;
    void *user;
    sched_seq *seq;        /* [n_slots]; index = phi slot */
    float *logits;         /* [n_slots, V] */
    float *emb;            /* [n_ctx, d] prefill input */
    int *slots;            /* [n_slots] decode batch */
    int32_t *toks;         /* [n_slots] */
    sched_run_fn run;      /* prefill runner (NULL: direct) */
    void *run_ctx;
    char *text;            /* event text scratch */
    size_t text_n, text_cap;
    sched_stats stats;
};

int sched_new(phi_model *lm, const manifest *mf, const tokenizer *tok, int image_rows,
              sched_emit_fn emit, void *user, sched **out) {
    *out = NULL;
    if (!lm || !mf || !tok || !emit || image_rows < 1)
        return err_set(TV_EINVAL, "sched_new: missing model, manifest, tokenizer or callback");
    sched *s = tv_xcalloc(1, sizeof *s);
    s->lm = lm, s->mf = mf, s->tok = tok, s->image_rows = image_rows;
    s->emit = emit, s->user = user;
    s->V = phi_get_config(lm)->vocab, s->d = phi_get_config(lm)->width;
    s->n_ctx = phi_max_context(lm), s->n_slots = phi_max_seqs(lm);
    s->seq = tv_xcalloc((size_t)s->n_slots, sizeof *s->seq);
    s->logits = tv_xmalloc(sizeof(float) * (size_t)s->n_slots * s->V);
    s->emb = tv_xmalloc(sizeof(float) * (size_t)s->n_ctx * s->d);
    s->slots = tv_xmalloc(sizeof(int) * (size_t)s->n_slots);
    s->toks = tv_xmalloc(sizeof(int32_t) * (size_t)s->n_slots);
    for (int i = 0; i < s->n_slots; i++) {
        s->seq[i].gen = tv_xmalloc(sizeof(int32_t) * (size_t)s->n_ctx);
        if (!(s->seq[i].ts = tok_stream_new(tok, TOK_SKIP_SPECIAL))) {
            sched_free(s);
            return err_set(TV_EINTERNAL, "sched_new: cannot create a token stream");
        }
    }
    *out = s;
    return TV_OK;
}

void sched_free(sched *s) {
    if (!s)
        return;
    for (int i = 0; i < s->n_slots; i++) {
        sampler_free(s->seq[i].smp);
        stopper_free(s->seq[i].st);
        tok_stream_free(s->seq[i].ts);
        free(s->seq[i].gen);
    }
    free(s->seq);
    free(s->logits);
    free(s->emb);
    free(s->slots);
    free(s->toks);
    free(s->text);
    free(s);
}

void sched_set_runner(sched *s, sched_run_fn run, void *ctx) {
    s->run = run;
    s->run_ctx = ctx;
}

int sched_capacity(const sched *s) { return s->n_slots; }

int sched_active(const sched *s) {
    int n = 0;
    for (int i = 0; i < s->n_slots; i++)
        n += s->seq[i].active;
    return n;
}

void sched_get_stats(const sched *s, sched_stats *st) { *st = s->stats; }

void sched_defaults(const manifest *mf, sampler_params *sp, int *max_tokens) {
    const manifest_sampling *def = &mf->chat.defaults;
    if (isnan(sp->temperature))
        sp->temperature = def->temperature;
    if (isnan(sp->top_p))
        sp->top_p = def->top_p;
    if (sp->top_k < 0)
        sp->top_k = def->top_k;
    if (isnan(sp->repetition_penalty))
        sp->repetition_penalty = sp->greedy ? 1.0f : def->repetition_penalty;
    if (sp->temperature == 0)
        sp->greedy = 1;
    if (*max_tokens == 0)
        *max_tokens = def->max_new_tokens;
}

void sched_sampling(const manifest *mf, const msg_sampling *in, sampler_params *sp,
                    int *max_tokens) {
    memset(sp, 0, sizeof *sp);
    sp->greedy = in->temperature == 0;
    sp->temperature = in->temperature < 0 ? NAN : in->temperature; /* NAN stays NAN */
    sp->top_p = in->top_p > 0 ? in->top_p : NAN;
    sp->top_k = (int)(in->top_k > (uint32_t)1 << 30 ? 1u << 30 : in->top_k);
    sp->repetition_penalty = in->repetition_penalty > 0 ? in->repetition_penalty : NAN;
    sp->seed = in->has_seed ? in->seed : 0;
    *max_tokens = (int)(in->max_tokens > 1u << 30 ? 1u << 30 : in->max_tokens);
    sched_defaults(mf, sp, max_tokens);
}

/* ---- events ---------------------------------------------------------------------------------- */

static void text_add(sched *s, const char *p, size_t n) {
    if (!n)
        return;
    if (s->text_n + n + 1 > s->text_cap) {
        s->text_cap = (s->text_n + n + 1) * 2;
        s->text = tv_xrealloc(s->text, s->text_cap);
    }
    memcpy(s->text + s->text_n, p, n);
    s->text_n += n;
    s->text[s->text_n] = '\0';
}

/* Frees a slot's per-request state and resets the model slot. */
static void seq_end(sched *s, int i) {
    sched_seq *q = &s->seq[i];
    const char *t;
    size_t n;
    tok_stream_flush(q->ts, &t, &n); /* resets the stream for the next user */
    sampler_free(q->smp);
    stopper_free(q->st);
    q->smp = NULL, q->st = NULL;
    q->active = 0;
    phi_reset(s->lm, i);
    s->stats.finished++;
}

/* Emits the event of slot i with the text gathered in s->text; finish/err end the sequence. */
static void seq_emit(sched *s, int i, const int32_t *tok, const char *finish, int err) {
    sched_seq *q = &s->seq[i];
    sched_event ev = {.id = q->id, .origin = q->origin, .text = s->text_n ? s->text : "",
                      .text_len = s->text_n, .tokens = tok, .n_tokens = tok ? 1 : 0,
                      .finish = err ? NULL : finish, .error = err,
                      .prompt_tokens = q->prompt_rows, .completion_tokens = (uint32_t)q->n_gen};
    if (finish || err)
        seq_end(s, i);
    s->text_n = 0;
    s->emit(s->user, &ev);
}

/* The held-back tail (as ask: an unfinished character or stop-string prefix), into s->text. */
static void seq_flush_text(sched *s, sched_seq *q) {
    const char *tail, *out;
    size_t n, on;
    tok_stream_flush(q->ts, &tail, &n);
    /* (empty pieces skip stopper_push: it would memmem a NULL buffer before its first text) */
    int stopped = n > 0 && stopper_push(q->st, tail, n, &out, &on);
    if (n > 0)
        text_add(s, out, on);
    if (!stopped) {
        stopper_flush(q->st, &out, &on);
        text_add(s, out, on);
    }
}

static int is_stop_token(const manifest *mf, int32_t t) {
    for (int i = 0; i < mf->chat.n_stop_token_ids; i++)
        if (mf->chat.stop_token_ids[i] == t)
            return 1;
    return 0;
}

/* Samples slot i's next token from logits and emits it; ends the sequence on a stop or limit. */
static void seq_sample(sched *s, int i, float *logits) {
    sched_seq *q = &s->seq[i];
    int32_t t = sampler_next(q->smp, logits, q->gen, q->n_gen);
    q->gen[q->n_gen++] = t;
    s->stats.tokens_out++;
    s->text_n = 0;
    const char *finish = NULL;
    if (is_stop_token(s->mf, t)) {
        finish = "stop";
    } else {
        const char *piece = "", *out;
        size_t n = 0, on;
        if (tok_stream_push(q->ts, t, &piece, &n) != 0)
            n = 0; /* a padding row of the vocabulary: no text */
        if (n > 0 && stopper_push(q->st, piece, n, &out, &on)) {
            text_add(s, out, on);
            finish = "stop";
        } else if (n > 0) {
            text_add(s, out, on);
        }
    }
    if (!finish && (q->n_gen >= q->max_new || phi_seq_len(s->lm, i) >= s->n_ctx))
        finish = "length";
    if (finish)
        seq_flush_text(s, q);
    q->pending = t;
    seq_emit(s, i, &q->gen[q->n_gen - 1], finish, 0);
}

/* ---- admission ------------------------------------------------------------------------------ */

/* The stopper of a request: the bundle's stop strings plus the request's. */
static int make_stopper(const sched *s, const sched_req *r, stopper **out) {
    const char *all[MANIFEST_MAX_STOPS + SCHED_MAX_REQ_STOPS];
    int n = 0;
    if (r->n_stop < 0 || r->n_stop > SCHED_MAX_REQ_STOPS)
        return err_set(TV_EINVAL, "at most %d stop strings", SCHED_MAX_REQ_STOPS);
    for (int i = 0; i < s->mf->chat.n_stop_strings; i++)
        all[n++] = s->mf->chat.stop_strings[i];
    for (int i = 0; i < r->n_stop; i++) {
        if (!r->stop[i] || !r->stop[i][0] || strlen(r->stop[i]) > 256)
            return err_set(TV_EINVAL, "stop strings must be 1 to 256 bytes");
        all[n++] = r->stop[i];
    }
    return stopper_new(all, n, out);
}

typedef struct {
    sched *s;
    int slot, rows;
} sched_prefill_job;

static int prefill_job(void *arg) {
    sched_prefill_job *j = arg;
    return phi_prefill(j->s->lm, j->slot, j->s->emb, j->rows, 0,
                       j->s->logits + (size_t)j->slot * j->s->V);
}

static int free_slot(const sched *s) {
    for (int i = 0; i < s->n_slots; i++)
        if (!s->seq[i].active)
            return i;
    return -1;
}

int sched_admit(sched *s, const sched_req *r, uint64_t now_ms) {
    int i = free_slot(s);
    if (i < 0)
        return err_set(TV_EAGAIN, "all %d sequence slots are busy", s->n_slots);
    if (!r->prompt || r->max_tokens < 1)
        return err_set(TV_EINVAL, "max_tokens must be >= 1");
    int64_t rows = prompt_rows(r->prompt, s->image_rows);
    if (rows < 1 || rows > s->n_ctx)
        return err_set(TV_ELIMIT, "the prompt is %lld positions; the model's context is %d",
                       (long long)rows, s->n_ctx);
    sched_seq *q = &s->seq[i];
    int rc = sampler_new(s->V, &r->sp, &q->smp);
    if (!rc)
        rc = make_stopper(s, r, &q->st);
    if (!rc)
        rc = prompt_embed(s->lm, r->prompt, r->images, s->image_rows, s->emb, rows);
    if (!rc && r->deadline_ms && now_ms >= r->deadline_ms) { /* expired while queued */
        q->active = 1, q->id = r->id, q->origin = r->origin, q->n_gen = 0;
        q->prompt_rows = (uint32_t)rows;
        s->text_n = 0;
        seq_emit(s, i, NULL, "deadline", 0);
        return TV_OK;
    }
    double t0 = clk_now_s();
    if (!rc && (rc = phi_reset(s->lm, i)) == 0) {
        sched_prefill_job job = {s, i, (int)rows};
        rc = s->run ? s->run(s->run_ctx, prefill_job, &job) : prefill_job(&job);
    }
    s->stats.kernel_seconds += clk_now_s() - t0;
    if (rc) {
        sampler_free(q->smp);
        stopper_free(q->st);
        q->smp = NULL, q->st = NULL;
        phi_reset(s->lm, i);
        return rc;
    }
    q->active = 1, q->id = r->id, q->origin = r->origin, q->n_gen = 0;
    q->max_new = r->max_tokens, q->deadline = r->deadline_ms, q->prompt_rows = (uint32_t)rows;
    seq_sample(s, i, s->logits + (size_t)i * s->V);
    return TV_OK;
}

/* ---- steps ---------------------------------------------------------------------------------- */

int sched_step(sched *s, uint64_t now_ms) {
    int n = 0;
    for (int i = 0; i < s->n_slots; i++) {
        sched_seq *q = &s->seq[i];
        if (!q->active)
            continue;
        if (q->deadline && now_ms >= q->deadline) {
            s->text_n = 0;
            seq_flush_text(s, q);
            seq_emit(s, i, NULL, "deadline", 0);
            continue;
        }
        s->slots[n] = i;
        s->toks[n++] = q->pending;
    }
    if (n == 0)
        return 0;
    double t0 = clk_now_s();
    int rc = phi_decode(s->lm, n, s->slots, s->toks, s->logits);
    s->stats.kernel_seconds += clk_now_s() - t0;
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", err_msg());
        for (int k = 0; k < n; k++) {
            s->text_n = 0;
            err_set(rc, "%s", why); /* each event's reader sees the message */
            seq_emit(s, s->slots[k], NULL, NULL, rc);
        }
        return err_set(rc, "%s", why);
    }
    for (int k = 0; k < n; k++)
        seq_sample(s, s->slots[k], s->logits + (size_t)k * s->V);
    return sched_active(s);
}

int sched_cancel(sched *s, int origin, uint64_t id) {
    for (int i = 0; i < s->n_slots; i++) {
        sched_seq *q = &s->seq[i];
        if (q->active && q->id == id && q->origin == origin) {
            s->text_n = 0;
            seq_emit(s, i, NULL, "cancelled", 0);
            return 1;
        }
    }
    return 0;
}

void sched_cancel_all(sched *s, const char *finish) {
    for (int i = 0; i < s->n_slots; i++) {
        if (s->seq[i].active) {
            s->text_n = 0;
            seq_emit(s, i, NULL, finish, 0);
        }
    }
}
