#define _GNU_SOURCE /* qsort_r */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>

#include "err.h"

struct sampler {
    int vocab;
    sampler_params p;
    uint64_t rng[4];   /* xoshiro256** state */
    int32_t *order;    /* (vocab) token ids sorted by logit */
    float *probs;      /* (vocab) */
};

/* ---- random numbers: xoshiro256**, seeded through splitmix64 (reproducible per seed) ------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* ---- processors ---------------------------------------------------------------------------- */

int sampler_new(int vocab, const sampler_params *p, sampler **out) {
    *out = NULL;
    if (vocab < 1) return err_set(TV_EINVAL, "sampler: vocab must be >= 1");
    if (!p->greedy && !(p->temperature > 0 && p->temperature <= 100))
        return err_set(TV_EINVAL, "sampler: temperature must be in (0, 100] (use greedy for 0)");
    if (!(p->top_p > 0 && p->top_p <= 1)) return err_set(TV_EINVAL, "sampler: top_p must be in (0, 1]");
    if (p->top_k < 0) return err_set(TV_EINVAL, "sampler: top_k must be >= 0");
    if (!(p->repetition_penalty > 0 && p->repetition_penalty <= 100))
        return err_set(TV_EINVAL, "sampler: repetition_penalty must be in (0, 100]");
    sampler *s = tv_xcalloc(1, sizeof *s);
    s->vocab = vocab;
    s->p = *p;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    s->order = tv_xmalloc(sizeof(int32_t) * (size_t)vocab);
    s->probs = tv_xmalloc(sizeof(float) * (size_t)vocab);
    *out = s;
    return TV_OK;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->order);
    free(s->probs);
    free(s);
}

/* Each distinct previous token once: the sign test makes a second application visible, so
 * duplicates are skipped by scanning the earlier entries (n_prev is at most max_new_tokens). */
static void apply_repetition_penalty(const sampler *s, float *logits, const int32_t *prev, int n) {
    float pen = s->p.repetition_penalty;
    if (pen == 1.0f) return;
    for (int i = 0; i < n; i++) {
        int32_t t = prev[i];
        if (t < 0 || t >= s->vocab) continue;
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = prev[j] == t;
        if (seen) continue;
        logits[t] = logits[t] < 0 ? logits[t] * pen : logits[t] / pen;
    }
}

/* Ascending by logit, ties by id, like a stable sort of the vocabulary. */
static int cmp_ascending(const void *a, const void *b, void *keys) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = ((const float *)keys)[i], y = ((const float *)keys)[j];
    if (x < y) return -1;
    if (x > y) return 1;
    return (i > j) - (i < j);
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Temperature, top-k (ties with the k-th are kept, as HF's `scores < kth` test does), top-p on
 * the ascending cumulative distribution (HF removes tokens while cumsum <= 1 - top_p, always
 * keeping the most likely), then the softmax into s->probs. */
static void filter_and_softmax(sampler *s, float *logits) {
    int n = s->vocab;
    if (s->p.temperature != 1.0f)
        for (int i = 0; i < n; i++) logits[i] /= s->p.temperature;
    for (int i = 0; i < n; i++) s->order[i] = i;
    qsort_r(s->order, (size_t)n, sizeof(int32_t), cmp_ascending, logits);
    if (s->p.top_k > 0 && s->p.top_k < n) {
        float kth = logits[s->order[n - s->p.top_k]];
        for (int i = 0; i < n; i++)
            if (logits[i] < kth) logits[i] = -INFINITY;
    }
    float mx = logits[s->order[n - 1]];
    if (s->p.top_p < 1.0f) {
        double sum = 0, cum = 0;
        for (int i = 0; i < n; i++) sum += expf(logits[i] - mx);
        for (int r = 0; r < n - 1; r++) {
            int32_t t = s->order[r];
            cum += expf(logits[t] - mx) / sum;  /* torch's CPU cumsum accumulates in double */
            if ((float)cum <= 1.0f - s->p.top_p) logits[t] = -INFINITY;
            else break;
        }
    }
    double sum = 0;
    for (int i = 0; i < n; i++) sum += (s->probs[i] = expf(logits[i] - mx));
    for (int i = 0; i < n; i++) s->probs[i] = (float)(s->probs[i] / sum);
}

void sampler_probs(sampler *s, float *logits, const int32_t *prev, int n_prev, float *probs) {
    apply_repetition_penalty(s, logits, prev, n_prev);
    if (s->p.greedy) {
        for (int i = 0; i < s->vocab; i++) probs[i] = 0;
        probs[argmax(logits, s->vocab)] = 1;
        return;
    }
    filter_and_softmax(s, logits);
    for (int i = 0; i < s->vocab; i++) probs[i] = s->probs[i];
}

int32_t sampler_next(sampler *s, float *logits, const int32_t *prev, int n_prev) {
    apply_repetition_penalty(s, logits, prev, n_prev);
    if (s->p.greedy) return argmax(logits, s->vocab);
    filter_and_softmax(s, logits);
    double u = rng_uniform(s->rng), cum = 0;
    /* Walk from the most likely down: most of the mass is met in the first few steps. */
    for (int r = s->vocab - 1; r >= 0; r--) {
        int32_t t = s->order[r];
        cum += s->probs[t];
        if (u < cum) return t;
    }
    return s->order[s->vocab - 1]; /* rounding left u above the total: the most likely token */
}
