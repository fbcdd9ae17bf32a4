/* sampler: the distribution after repetition penalty / temperature / top-k / top-p equals HF
 * transformers' logits processors on the golden cases; draws follow that distribution; greedy is
 * argmax; seeds reproduce. */
#include <cjson/cJSON.h>

#include "check.h"
#include "mapfile.h"
#include "sampler.h"

static float *read_f32(const char *rel, size_t want) {
    char *buf = NULL;
    size_t n = 0;
    CHECK_OK(mf_read_all(check_data(rel), 64 << 20, &buf, &n));
    CHECK_EQ_INT(n, want * sizeof(float));
    return (float *)buf;
}

static sampler_params params_of(const cJSON *c) {
    sampler_params p = {0};
    p.temperature = (float)cJSON_GetObjectItem(c, "temperature")->valuedouble;
    p.top_k = cJSON_GetObjectItem(c, "top_k")->valueint;
    p.top_p = (float)cJSON_GetObjectItem(c, "top_p")->valuedouble;
    p.repetition_penalty = (float)cJSON_GetObjectItem(c, "repetition_penalty")->valuedouble;
    p.seed = 7;
    return p;
}

static void test_against_hf(const cJSON *root, const float *logits, const float *probs, int vocab) {
    const cJSON *c;
    int idx = 0;
    float *work = malloc(sizeof(float) * vocab), *ours = malloc(sizeof(float) * vocab);
    int32_t prev[64];
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        sampler_params p = params_of(c);
        int n_prev = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(c, "prev")) prev[n_prev++] = e->valueint;
        sampler *s = NULL;
        CHECK_OK(sampler_new(vocab, &p, &s));
        memcpy(work, logits + (size_t)idx * vocab, sizeof(float) * vocab);
        sampler_probs(s, work, prev, n_prev, ours);
        const float *want = probs + (size_t)idx * vocab;
        double maxdiff = 0;
        int support_mismatch = 0;
        for (int i = 0; i < vocab; i++) {
            maxdiff = fmax(maxdiff, fabs(ours[i] - want[i]));
            support_mismatch += (ours[i] == 0) != (want[i] == 0);
        }
        CHECK_MSG(maxdiff <= 2e-6, "case %d: max |p - p_hf| = %g", idx, maxdiff);
        CHECK_MSG(support_mismatch == 0, "case %d: %d tokens kept/removed differently", idx,
                  support_mismatch);
        sampler_free(s);
        idx++;
    }
    CHECK(idx >= 20);
    free(work);
    free(ours);
}

/* 20000 draws from a top-k=5 case: each token's frequency within 5 sigma of its probability. */
static void test_draws(const float *logits, int vocab) {
    sampler_params p = {.temperature = 0.8f, .top_k = 5, .top_p = 1, .repetition_penalty = 1, .seed = 99};
    sampler *s = NULL;
    CHECK_OK(sampler_new(vocab, &p, &s));
    float *work = malloc(sizeof(float) * vocab), *probs = malloc(sizeof(float) * vocab);
    int *count = calloc((size_t)vocab, sizeof(int));
    memcpy(work, logits, sizeof(float) * vocab);
    sampler_probs(s, work, NULL, 0, probs);
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        memcpy(work, logits, sizeof(float) * vocab);
        int32_t t = sampler_next(s, work, NULL, 0);
        CHECK(t >= 0 && t < vocab);
        if (t >= 0 && t < vocab) count[t]++;
    }
    int bad = 0, outside = 0;
    for (int i = 0; i < vocab; i++) {
        double f = (double)count[i] / N, sd = sqrt(probs[i] * (1 - probs[i]) / N);
        if (fabs(f - probs[i]) > 5 * sd + 1e-4) bad++;
        if (probs[i] == 0 && count[i]) outside++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(outside, 0);
    sampler_free(s);
    free(work), free(probs), free(count);
}

static void test_greedy_and_seeds(const float *logits, int vocab) {
    float *work = malloc(sizeof(float) * vocab);
    int32_t best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i;
    sampler_params g = {.greedy = 1, .top_p = 1, .repetition_penalty = 1};
    sampler *s = NULL;
    CHECK_OK(sampler_new(vocab, &g, &s));
    memcpy(work, logits, sizeof(float) * vocab);
    CHECK_EQ_INT(sampler_next(s, work, NULL, 0), best);
    sampler_free(s);
    /* A strong penalty on the best token moves greedy elsewhere. */
    g.repetition_penalty = 50;
    CHECK_OK(sampler_new(vocab, &g, &s));
    memcpy(work, logits, sizeof(float) * vocab);
    CHECK(sampler_next(s, work, &best, 1) != best);
    sampler_free(s);

    sampler_params p = {.temperature = 1, .top_p = 1, .repetition_penalty = 1, .seed = 5};
    int32_t a[32], b[32], c[32];
    for (int run = 0; run < 3; run++) {
        p.seed = run == 2 ? 6 : 5;
        CHECK_OK(sampler_new(vocab, &p, &s));
        for (int i = 0; i < 32; i++) {
            memcpy(work, logits, sizeof(float) * vocab);
            (run == 0 ? a : run == 1 ? b : c)[i] = sampler_next(s, work, NULL, 0);
        }
        sampler_free(s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    sampler_free(NULL);
    free(work);
}

static void test_bad_params(void) {
    sampler *s = NULL;
    sampler_params p = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    CHECK_FAILS(sampler_new(10, &p, &s));
    p.temperature = 1, p.top_p = 0;
    CHECK_FAILS(sampler_new(10, &p, &s));
    p.top_p = 1, p.top_k = -1;
    CHECK_FAILS(sampler_new(10, &p, &s));
    p.top_k = 0, p.repetition_penalty = 0;
    CHECK_FAILS(sampler_new(10, &p, &s));
    p.repetition_penalty = 1;
    CHECK_FAILS(sampler_new(0, &p, &s));
    CHECK(s == NULL);
}

int main(void) {
    char *text = NULL;
    CHECK_OK(mf_read_all(check_data("sampler/cases.json"), 1 << 20, &text, NULL));
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    CHECK(root != NULL);
    if (root) {
        int vocab = cJSON_GetObjectItem(root, "vocab")->valueint;
        int ncase = cJSON_GetArraySize(cJSON_GetObjectItem(root, "cases"));
        float *logits = read_f32("sampler/logits.f32", (size_t)ncase * vocab);
        float *probs = read_f32("sampler/probs.f32", (size_t)ncase * vocab);
        if (logits && probs) {
            test_against_hf(root, logits, probs, vocab);
            test_draws(logits + 3 * vocab, vocab);
            test_greedy_and_seeds(logits, vocab);
        }
        free(logits), free(probs);
    }
    test_bad_params();
    cJSON_Delete(root);
    free(text);
    return check_finish("test_sampler");
}
