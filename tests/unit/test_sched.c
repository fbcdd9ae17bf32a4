/* test_sched — continuous batching on the tiny TinyGPT-V (converted at f32 from
 * tests/data/tinygptv/model): one greedy sequence gives the PyTorch reference's 32 tokens and
 * text (tests/data/tinygptv/tiny.json, from the golden image embeddings in tiny.safetensors);
 * two sequences interleaved (admitted at different steps) give the same tokens as each alone;
 * admission limits, cancel, deadlines, max_tokens, stop tokens and request stop strings. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "convert.h"
#include "manifest.h"
#include "mapfile.h"
#include "ops.h"
#include "phi.h"
#include "prompt.h"
#include "safetensors.h"
#include "sched.h"
#include "tiny_model.h"
#include "tokenizer.h"

#define MAXT 64

typedef struct { /* what the events of one request added up to */
    uint64_t id;
    int32_t tokens[MAXT];
    int n_tokens, n_events, error;
    char text[4096];
    size_t text_len;
    char finish[16];
    uint32_t prompt_tokens, completion_tokens;
} seq_log;

typedef struct {
    seq_log logs[4];
    int n;
} log_set;

static void on_event(void *user, const sched_event *ev) {
    log_set *ls = user;
    seq_log *l = NULL;
    for (int i = 0; i < ls->n; i++)
        if (ls->logs[i].id == ev->id)
            l = &ls->logs[i];
    if (!l) {
        if (ls->n == 4)
            return;
        l = &ls->logs[ls->n++];
        memset(l, 0, sizeof *l);
        l->id = ev->id;
    }
    l->n_events++;
    for (int k = 0; k < ev->n_tokens && l->n_tokens < MAXT; k++)
        l->tokens[l->n_tokens++] = ev->tokens[k];
    if (ev->text_len && l->text_len + ev->text_len < sizeof l->text) {
        memcpy(l->text + l->text_len, ev->text, ev->text_len);
        l->text_len += ev->text_len;
    }
    if (ev->finish)
        snprintf(l->finish, sizeof l->finish, "%s", ev->finish);
    if (ev->error)
        l->error = ev->error;
    l->prompt_tokens = ev->prompt_tokens, l->completion_tokens = ev->completion_tokens;
}

static seq_log *find(log_set *ls, uint64_t id) {
    for (int i = 0; i < ls->n; i++)
        if (ls->logs[i].id == id)
            return &ls->logs[i];
    return NULL;
}

typedef struct {
    manifest *mf;
    tokenizer *tok;
    phi_model *lm;
    float *image;         /* [8, 80] golden image embeddings */
    int32_t gold[32];
    char gold_text[512];
    char question[128];
} tiny;

static int load_golden(tiny *t) {
    char *json = NULL;
    size_t len;
    int rc = mf_read_all(check_data("tinygptv/tiny.json"), 1 << 20, &json, &len);
    cJSON *root = rc ? NULL : cJSON_ParseWithLength(json, len);
    free(json);
    const cJSON *g = cJSON_GetObjectItem(root, "greedy_tokens"),
                *q = cJSON_GetObjectItem(root, "question"),
                *tx = cJSON_GetObjectItem(root, "greedy_text");
    if (cJSON_GetArraySize(g) != 32 || !cJSON_IsString(q) || !cJSON_IsString(tx)) {
        cJSON_Delete(root);
        return err_set(TV_EFORMAT, "tiny.json: no greedy_tokens/question/greedy_text");
    }
    int i = 0;
    for (const cJSON *v = g->child; v; v = v->next)
        t->gold[i++] = (int32_t)v->valuedouble;
    snprintf(t->question, sizeof t->question, "%s", q->valuestring);
    snprintf(t->gold_text, sizeof t->gold_text, "%s", tx->valuestring);
    cJSON_Delete(root);
    st_file *st = NULL;
    if ((rc = st_open(check_data("tinygptv/tiny.safetensors"), &st)))
        return rc;
    const tensor_view *e = st_find(st, "image_embeds");
    if (!e || e->dtype != DT_F32 || tensor_numel(e) != 8 * 80)
        rc = err_set(TV_EFORMAT, "tiny.safetensors: image_embeds [1, 8, 80] F32 expected");
    else {
        t->image = tv_xmalloc(8 * 80 * sizeof(float));
        memcpy(t->image, e->data, 8 * 80 * sizeof(float));
    }
    st_free(st);
    return rc;
}

static int tiny_open(kern_be *be, const char *dir, tiny *t) {
    char out[512];
    snprintf(out, sizeof out, "%s/b", dir);
    conv_opts o;
    tiny_conv_opts(&o, TINY_MODEL_DIR "/phi_fused", out, "f32");
    int rc = conv_run(&o);
    if (!rc)
        rc = manifest_load(out, &t->mf);
    if (!rc)
        rc = tok_load(t->mf->tokenizer_path, &t->tok);
    if (!rc)
        rc = phi_load(t->mf, be, 2, 0, &t->lm);
    if (!rc)
        rc = load_golden(t);
    return rc;
}

static sched_req greedy_req(uint64_t id, const prompt_ids *p, const float *image, int max_tokens) {
    sched_req r = {.id = id, .prompt = p, .images = image, .max_tokens = max_tokens};
    r.sp.greedy = 1, r.sp.temperature = 1, r.sp.top_p = 1, r.sp.repetition_penalty = 1;
    return r;
}

/* Runs steps until nothing is active (at most limit). */
static void drain(sched *s, int limit) {
    for (int i = 0; i < limit && sched_active(s) > 0; i++)
        sched_step(s, 0);
}

/* One greedy sequence = the reference; then two interleaved = each alone. */
static void test_greedy(tiny *t) {
    log_set ls = {0};
    sched *s = NULL;
    CHECK_OK(sched_new(t->lm, t->mf, t->tok, 8, on_event, &ls, &s));
    if (!s)
        return;
    CHECK_EQ_INT(sched_capacity(s), 2);
    prompt_ids pa, pb;
    CHECK_OK(prompt_first(t->mf, t->tok, t->question, &pa));
    CHECK_OK(prompt_first(t->mf, t->tok, "Describe the picture in detail.", &pb));
    float *img_b = tv_xmalloc(8 * 80 * sizeof(float));
    for (int i = 0; i < 8 * 80; i++)
        img_b[i] = t->image[(i * 7) % (8 * 80)] * 0.5f; /* a different "image" */

    sched_req ra = greedy_req(1, &pa, t->image, 32);
    CHECK_OK(sched_admit(s, &ra, 0));
    drain(s, 100);
    seq_log *a = find(&ls, 1);
    CHECK(a != NULL);
    if (!a)
        goto out;
    CHECK_EQ_INT(a->n_tokens, 32);
    CHECK_MSG(memcmp(a->tokens, t->gold, sizeof t->gold) == 0, "greedy tokens differ from PyTorch");
    CHECK_EQ_STR(a->finish, "length");
    CHECK_EQ_INT(a->n_events, 32);
    CHECK_EQ_INT(a->prompt_tokens, 32);
    CHECK_EQ_INT(a->completion_tokens, 32);
    a->text[a->text_len] = 0;
    CHECK_EQ_STR(a->text, t->gold_text);

    sched_req rb = greedy_req(2, &pb, img_b, 40);
    CHECK_OK(sched_admit(s, &rb, 0));
    drain(s, 100);
    seq_log b_alone = *find(&ls, 2);
    CHECK_EQ_INT(b_alone.n_tokens, 40);

    /* interleaved: A starts, runs 5 steps, B joins, A is re-admitted after A finishes... */
    log_set solo = ls;
    memset(&ls, 0, sizeof ls);
    ra.id = 11, rb.id = 12;
    CHECK_OK(sched_admit(s, &ra, 0));
    for (int i = 0; i < 5; i++)
        sched_step(s, 0);
    CHECK_OK(sched_admit(s, &rb, 0));
    CHECK_EQ_INT(sched_active(s), 2);
    sched_req rc3 = greedy_req(13, &pa, t->image, 4);
    CHECK_EQ_INT(sched_admit(s, &rc3, 0), TV_EAGAIN); /* both slots busy */
    drain(s, 200);
    seq_log *a2 = find(&ls, 11), *b2 = find(&ls, 12), *a1 = find(&solo, 1);
    CHECK(a2 && b2 && a1);
    if (a2 && b2 && a1) {
        CHECK_MSG(a2->n_tokens == a1->n_tokens &&
                      !memcmp(a2->tokens, a1->tokens, sizeof(int32_t) * a1->n_tokens),
                  "A interleaved differs from A alone");
        CHECK_MSG(b2->n_tokens == b_alone.n_tokens &&
                      !memcmp(b2->tokens, b_alone.tokens, sizeof(int32_t) * b_alone.n_tokens),
                  "B interleaved differs from B alone");
        CHECK_EQ_STR(b2->finish, "length");
        CHECK(b2->text_len == b_alone.text_len && !memcmp(b2->text, b_alone.text, b2->text_len));
    }
    CHECK_EQ_INT(sched_active(s), 0);
    sched_stats st;
    sched_get_stats(s, &st);
    CHECK_EQ_INT(st.finished, 4);
    CHECK_EQ_INT(st.tokens_out, 32 + 40 + 32 + 40);
    CHECK(st.kernel_seconds > 0);
out:
    free(img_b);
    prompt_ids_free(&pa);
    prompt_ids_free(&pb);
    sched_free(s);
}

/* Cancel, deadline, max_tokens, stop token, request stop string, over-long prompt. */
static void test_finish_rules(tiny *t) {
    log_set ls = {0};
    sched *s = NULL;
    CHECK_OK(sched_new(t->lm, t->mf, t->tok, 8, on_event, &ls, &s));
    if (!s)
        return;
    prompt_ids p;
    CHECK_OK(prompt_first(t->mf, t->tok, t->question, &p));

    sched_req r = greedy_req(1, &p, t->image, 32);
    r.origin = 3;
    CHECK_OK(sched_admit(s, &r, 0));
    sched_step(s, 0);
    CHECK_EQ_INT(sched_cancel(s, 0, 1), 0); /* other origin */
    CHECK_EQ_INT(sched_cancel(s, 3, 1), 1);
    CHECK_EQ_INT(sched_cancel(s, 3, 1), 0);
    seq_log *l = find(&ls, 1);
    CHECK(l && !strcmp(l->finish, "cancelled") && l->n_tokens == 2);
    CHECK_EQ_INT(sched_active(s), 0);

    r = greedy_req(2, &p, t->image, 32);
    r.deadline_ms = 1005;
    CHECK_OK(sched_admit(s, &r, 1000));
    CHECK_EQ_INT(sched_step(s, 1001), 1);
    CHECK_EQ_INT(sched_step(s, 1005), 0);
    l = find(&ls, 2);
    CHECK(l && !strcmp(l->finish, "deadline") && l->n_tokens == 2);
    r.id = 3; /* already past at admission: ends at once */
    CHECK_OK(sched_admit(s, &r, 2000));
    l = find(&ls, 3);
    CHECK(l && !strcmp(l->finish, "deadline") && l->n_tokens == 0 && sched_active(s) == 0);

    memset(&ls, 0, sizeof ls);
    r = greedy_req(4, &p, t->image, 3);
    CHECK_OK(sched_admit(s, &r, 0));
    drain(s, 10);
    l = find(&ls, 4);
    CHECK(l && !strcmp(l->finish, "length") && l->n_tokens == 3 && l->completion_tokens == 3);
    CHECK(l && !memcmp(l->tokens, t->gold, 3 * sizeof(int32_t)));

    /* the 6th greedy token made a stop token: 6 tokens, finish stop, its text left out */
    int keep = t->mf->chat.n_stop_token_ids;
    t->mf->chat.stop_token_ids[t->mf->chat.n_stop_token_ids++] = t->gold[5];
    r = greedy_req(5, &p, t->image, 32);
    CHECK_OK(sched_admit(s, &r, 0));
    drain(s, 40);
    t->mf->chat.n_stop_token_ids = keep;
    l = find(&ls, 5);
    char *want = NULL;
    size_t wn = 0;
    CHECK_OK(tok_decode(t->tok, t->gold, 5, TOK_SKIP_SPECIAL, &want, &wn));
    CHECK(l && !strcmp(l->finish, "stop") && l->n_tokens == 6);
    CHECK(l && want && l->text_len == wn && !memcmp(l->text, want, wn));
    free(want);

    /* a request stop string: the text ends right before its first occurrence in the answer */
    const char *cut = strstr(t->gold_text, "cat");
    CHECK(cut != NULL);
    r = greedy_req(6, &p, t->image, 32);
    const char *stops[] = {"cat"};
    r.stop = stops, r.n_stop = 1;
    CHECK_OK(sched_admit(s, &r, 0));
    drain(s, 40);
    l = find(&ls, 6);
    CHECK(l && !strcmp(l->finish, "stop") && cut && l->text_len == (size_t)(cut - t->gold_text) &&
          !memcmp(l->text, t->gold_text, l->text_len));
    const char *bad[] = {""};
    r.id = 7, r.stop = bad;
    CHECK_FAILS(sched_admit(s, &r, 0));
    r.stop = NULL, r.n_stop = 0, r.sp.greedy = 0, r.sp.temperature = -1;
    CHECK_FAILS(sched_admit(s, &r, 0)); /* sampler refuses the temperature */

    /* over the context: refused, nothing emitted, slot stays free */
    prompt_ids big = {0};
    big.n = (size_t)phi_max_context(t->lm) + 1;
    big.ids = tv_xcalloc(big.n, sizeof(int32_t));
    int before = ls.n;
    r = greedy_req(8, &big, NULL, 4);
    CHECK_EQ_INT(sched_admit(s, &r, 0), TV_ELIMIT);
    CHECK(strstr(err_msg(), "context") != NULL);
    CHECK_EQ_INT(ls.n, before);
    CHECK_EQ_INT(sched_active(s), 0);
    /* exactly the context: prefill fills it, one token, "length" */
    big.n = (size_t)phi_max_context(t->lm);
    r = greedy_req(9, &big, NULL, 4);
    CHECK_OK(sched_admit(s, &r, 0));
    l = find(&ls, 9);
    CHECK(l && !strcmp(l->finish, "length") && l->n_tokens == 1);
    prompt_ids_free(&big);
    prompt_ids_free(&p);
    sched_free(s);
}

static void test_sampling_defaults(tiny *t) {
    sampler_params sp;
    int mt;
    msg_sampling in = {0};
    sched_sampling(t->mf, &in, &sp, &mt); /* temperature 0: greedy, no penalty */
    CHECK(sp.greedy && sp.repetition_penalty == 1.0f && mt == t->mf->chat.defaults.max_new_tokens);
    in.temperature = -1, in.max_tokens = 7, in.seed = 9, in.has_seed = 1;
    sched_sampling(t->mf, &in, &sp, &mt);
    CHECK(!sp.greedy && sp.temperature == t->mf->chat.defaults.temperature &&
          sp.top_p == t->mf->chat.defaults.top_p &&
          sp.repetition_penalty == t->mf->chat.defaults.repetition_penalty && mt == 7 &&
          sp.seed == 9);
    in.temperature = 0.3f, in.top_p = 0.5f, in.top_k = 4, in.repetition_penalty = 1.2f;
    sched_sampling(t->mf, &in, &sp, &mt);
    CHECK(sp.temperature == 0.3f && sp.top_p == 0.5f && sp.top_k == 4 &&
          sp.repetition_penalty == 1.2f);
}

/* sched_defaults, the rule `tinyvlm ask`'s flags go through: unset fields take the bundle's
 * values; only an explicit greedy drops the default penalty to 1. */
static void test_ask_defaults(tiny *t) {
    manifest m = *t->mf; /* shallow copy: only the scalar defaults are changed */
    manifest_sampling *def = &m.chat.defaults;
    def->top_k = 7, def->repetition_penalty = 1.25f, def->temperature = 0.6f;
    sampler_params unset = {.temperature = NAN, .top_p = NAN, .top_k = -1,
                            .repetition_penalty = NAN, .seed = 5};
    sampler_params sp = unset;
    int mt = 0;
    sched_defaults(&m, &sp, &mt);
    CHECK(!sp.greedy && sp.temperature == 0.6f && sp.top_p == def->top_p && sp.top_k == 7 &&
          sp.repetition_penalty == 1.25f && sp.seed == 5 && mt == def->max_new_tokens);
    sp = unset, sp.greedy = 1, mt = 9; /* --greedy --max-tokens 9 */
    sched_defaults(&m, &sp, &mt);
    CHECK(sp.greedy && sp.repetition_penalty == 1.0f && sp.top_k == 7 && mt == 9);
    sp = unset, sp.greedy = 1, sp.repetition_penalty = 1.5f, mt = 0; /* a penalty asked for */
    sched_defaults(&m, &sp, &mt);
    CHECK(sp.greedy && sp.repetition_penalty == 1.5f);
    sp = unset, sp.temperature = 0, sp.top_k = 0; /* --temperature 0 --top-k 0 */
    sched_defaults(&m, &sp, &mt);
    CHECK(sp.greedy && sp.repetition_penalty == 1.25f && sp.top_k == 0);
    def->temperature = 0; /* a bundle whose default is greedy keeps its penalty */
    sp = unset;
    sched_defaults(&m, &sp, &mt);
    CHECK(sp.greedy && sp.repetition_penalty == 1.25f);
    msg_sampling in = {.temperature = -1};
    sched_sampling(&m, &in, &sp, &mt); /* the wire: the same rule */
    CHECK(sp.greedy && sp.repetition_penalty == 1.25f && sp.top_k == 0);
    in.temperature = 0;
    sched_sampling(&m, &in, &sp, &mt);
    CHECK(sp.greedy && sp.repetition_penalty == 1.0f);
}

int main(void) {
    kern_be *be = NULL;
    CHECK_OK(kern_cpu_new(2, KERN_ISA_AUTO, &be));
    char dir[] = "/tmp/tv_sched_XXXXXX";
    tiny t = {0};
    if (be && mkdtemp(dir)) {
        CHECK_OK(tiny_open(be, dir, &t));
        if (t.lm && t.image) {
            test_greedy(&t);
            test_finish_rules(&t);
            test_sampling_defaults(&t);
            test_ask_defaults(&t);
        }
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        CHECK(system(cmd) == 0);
    }
    sched *none = NULL;
    CHECK_FAILS(sched_new(NULL, t.mf, t.tok, 8, on_event, NULL, &none));
    sched_free(NULL);
    free(t.image);
    phi_free(t.lm);
    tok_free(t.tok);
    manifest_free(t.mf);
    kern_free(be);
    return check_finish("test_sched");
}
