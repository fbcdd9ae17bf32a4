/* sched — continuous batching for the LM worker: a phi_model's max_seqs slots, requests admitted
 * between decode steps, one batched phi_decode per step over every running sequence, and each
 * sequence's own sampler, stop strings and UTF-8 stream decoder. No sockets: results come out
 * through a callback, so tests drive it directly.
 *
 * Per sequence, these are the one place the sampling and stop rules live (`tinyvlm ask` runs its
 * single sequence through a one-slot sched too): after the prefill and after every decode step,
 * sample a token (repetition penalty over the tokens generated so far); a stop token id or a stop string ends it with "stop" (the text is cut
 * before the stop string; a stop token adds no text); otherwise reaching max_tokens or the
 * context's last position ends it with "length". At the end the held-back text (an unfinished
 * UTF-8 character, a stop-string prefix that never completed) is flushed into the last event.
 * Cancel ends a sequence with "cancelled", a passed deadline with "deadline".
 *
 * Memory: slot state (token buffers, logits, the prefill embedding scratch) is allocated once in
 * sched_new (the prefill embedding scratch is the whole context's, [max_context, width]);
 * admission allocates the sequence's sampler and stopper. One thread at a time. */
#ifndef TV_SCHED_H
#define TV_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "manifest.h"
#include "msg.h"
#include "phi.h"
#include "prompt.h"
#include "sampler.h"
#include "tokenizer.h"

/* Extra stop strings a request may add to the bundle's. */
#define SCHED_MAX_REQ_STOPS 8

typedef struct sched sched;

/* One request to admit. Everything is borrowed for the duration of sched_admit only. */
typedef struct {
    uint64_t id;
    int origin;                    /* the caller's tag (e.g. which gateway), echoed in events */
    const prompt_ids *prompt;      /* with n_images PROMPT_IMAGE markers */
    const float *images;           /* [prompt->n_images * image_rows, d] rows in marker order */
    sampler_params sp;             /* see sched_sampling */
    int max_tokens;                /* >= 1 */
    const char *const *stop;       /* extra stop strings (non-empty), at most SCHED_MAX_REQ_STOPS */
    int n_stop;
    uint64_t deadline_ms;          /* on the clock passed to sched_admit/sched_step; 0 = none */
} sched_req;

/* What a sequence produced: one event per sampled token (the first right after the prefill),
 * the last one with finish set (or error). Pointers are valid during the callback only. */
typedef struct {
    uint64_t id;
    int origin;
    const char *text;              /* text delta: whole UTF-8 characters, NUL-terminated,
                                    * may be empty */
    size_t text_len;
    const int32_t *tokens;         /* the token(s) behind this delta (0 or 1) */
    int n_tokens;
    const char *finish;            /* NULL while running; "stop" | "length" | "cancelled" |
                                    * "deadline"; NULL also when error != 0 */
    int error;                     /* 0, or the TV_E* code that ended the sequence (message:
                                    * err_msg() of the calling thread) */
    uint32_t prompt_tokens;        /* prompt positions, image rows included */
    uint32_t completion_tokens;    /* tokens sampled so far */
} sched_event;

typedef void (*sched_emit_fn)(void *user, const sched_event *ev);

/* A scheduler over lm's slots (lm, mf and tok are borrowed and must outlive it). image_rows is
 * the number of embedding rows one image takes. Returns 0 and *out (free with sched_free). */
int sched_new(phi_model *lm, const manifest *mf, const tokenizer *tok, int image_rows,
              sched_emit_fn emit, void *user, sched **out);

/* Each prefill goes through run(ctx, fn, arg) when set — the LM worker passes wlink_busy, so
 * heartbeats continue during a long prefill; run must call fn(arg) and return its result.
 * NULL (the default) = fn is called directly. */
typedef int (*sched_run_fn)(void *ctx, int (*fn)(void *arg), void *arg);
void sched_set_runner(sched *s, sched_run_fn run, void *ctx);

/* Frees everything (running sequences are dropped without events). NULL is a no-op. */
void sched_free(sched *s);

/* Slots in total, and slots running a sequence. */
int sched_capacity(const sched *s);
int sched_active(const sched *s);

/* Fills the unset fields of *sp and *max_tokens with the bundle's defaults — the one rule both
 * `tinyvlm ask`'s flags and the wire's fields go through. Unset is: temperature NAN, top_p NAN,
 * top_k < 0, repetition_penalty NAN, *max_tokens 0. sp->greedy on input means argmax was asked
 * for explicitly (ask's --greedy, the wire's temperature 0): then an unset repetition penalty is
 * 1 (plain argmax, the benchmark setting) instead of the bundle's. A temperature of 0, given or
 * the bundle's, also means greedy (after the penalty rule: a bundle whose default is greedy keeps
 * its penalty, as HF generate does). Values that are set are kept as given; sampler_new
 * validates them later. Never fails. */
void sched_defaults(const manifest *mf, sampler_params *sp, int *max_tokens);

/* The wire's sampling fields -> sampler params and max_tokens through sched_defaults: temperature
 * 0 = greedy (explicit), < 0 or NAN = unset; top_p <= 0 = unset; top_k as given (0 = off, never
 * unset: the wire cannot tell them apart); repetition_penalty <= 0 = unset; max_tokens 0 = unset
 * (clamped to 2^30); seed 0 unless has_seed. Never fails. */
void sched_sampling(const manifest *mf, const msg_sampling *in, sampler_params *sp,
                    int *max_tokens);

/* Admits r into a free slot: prefill, first sample, first event (which may already be the last).
 * now_ms is the clock deadlines are compared with. Returns 0 (admitted; events emitted), or,
 * with nothing emitted: TV_EAGAIN (no free slot), TV_ELIMIT (the prompt does not fit in the
 * context), TV_EINVAL (bad sampling params, stop strings, image rows), or a kernel error. */
int sched_admit(sched *s, const sched_req *r, uint64_t now_ms);

/* One decode step over every running sequence (nothing to do: returns at once). Sequences whose
 * deadline is <= now_ms end first with "deadline". Returns the number still running, or a
 * negative code after a kernel failure (every running sequence then got an error event). */
int sched_step(sched *s, uint64_t now_ms);

/* Ends (origin, id) with "cancelled". Returns 1 if it was running, else 0. */
int sched_cancel(sched *s, int origin, uint64_t id);

/* Ends every running sequence with finish (e.g. "cancelled" at shutdown). */
void sched_cancel_all(sched *s, const char *finish);

/* Counters since sched_new. */
typedef struct {
    uint64_t finished, tokens_out;
    double kernel_seconds;        /* time in phi_prefill + phi_decode */
} sched_stats;
void sched_get_stats(const sched *s, sched_stats *st);

#endif
