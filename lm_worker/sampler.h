/* sampler — picks the next token from the LM's logits, the way HF transformers' generate() does
 * with do_sample: repetition penalty over the tokens generated so far, then temperature, top-k,
 * top-p, softmax and a seeded draw; or greedy (argmax).
 *
 * A sampler owns its scratch (vocab-sized) and its random state, both allocated once at
 * sampler_new: sampling allocates nothing. One sampler per sequence; not thread-safe. */
#ifndef TV_SAMPLER_H
#define TV_SAMPLER_H

#include <stdint.h>

typedef struct {
    int greedy;               /* 1: argmax after the repetition penalty; the rest is ignored */
    float temperature;        /* > 0; 1 = unchanged (0 means greedy) */
    int top_k;                /* 0 = off */
    float top_p;              /* (0, 1]; 1 = off */
    float repetition_penalty; /* 1 = off; HF semantics: logit<0 ? logit*p : logit/p */
    uint64_t seed;
} sampler_params;

typedef struct sampler sampler;

/* Checks params (TV_EINVAL with a message naming the bad one) and allocates. Free with
 * sampler_free. */
int sampler_new(int vocab, const sampler_params *p, sampler **out);

/* NULL is a no-op. */
void sampler_free(sampler *s);

/* Applies the processors to logits[vocab] IN PLACE (removed tokens become -inf), given the n_prev
 * tokens generated so far (each distinct token is penalised once), and returns the chosen id. */
int32_t sampler_next(sampler *s, float *logits, const int32_t *prev, int n_prev);

/* The distribution sampler_next draws from: probs[vocab] after all processors (zeros for removed
 * tokens). logits is modified as in sampler_next. For tests and for logprobs. */
void sampler_probs(sampler *s, float *logits, const int32_t *prev, int n_prev, float *probs);

#endif
