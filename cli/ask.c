/* tinyvlm ask — one process, one answer: bundle + image + question -> streamed answer.
 * The same path the service takes (preprocess, vision encode, prompt splice, then the LM worker's
 * scheduler with one slot: Phi-2 prefill and decode, sampler, stop tokens and strings, the
 * bundle's defaults for unset flags), without the network in between. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "clock.h"
#include "err.h"
#include "image.h"
#include "log.h"
#include "manifest.h"
#include "mapfile.h"
#include "ops.h"
#include "phi.h"
#include "prompt.h"
#include "sampler.h"
#include "sched.h"
#include "tokenizer.h"
#include "vision.h"

#define ASK_MAX_IMAGE_BYTES (64u << 20)

typedef struct {
    const char *model, *image, *question;
    sampler_params sp;
    int max_tokens;   /* 0: the manifest default (sched_defaults) */
    int threads;
    const char *device;      /* "cpu" | "cuda" | "auto" */
    int json;
} ask_opts;

typedef struct {             /* everything ask loads; ask_free releases it */
    manifest *mf;
    tokenizer *tok;
    kern_be *be;
    vision_model *vm;
    phi_model *lm;
} ask_engine;

typedef struct {
    int32_t *tokens;
    int n_tokens, prompt_rows;
    char finish[16];         /* "stop" or "length" */
    char *text;              /* the answer as printed (after stop-string cutting) */
    size_t text_len;
    double load_s, vision_s, prefill_s, decode_s;
} ask_result;

static void ask_usage(FILE *f) {
    fprintf(f,
            "usage: tinyvlm ask --model BUNDLE --image FILE [options] \"question\"\n\n"
            "Answers one question about one image and streams the answer to stdout.\n\n"
            "  --model DIR             bundle folder (tinyvlm convert writes one)\n"
            "  --image FILE            JPEG or PNG\n"
            "  --greedy                argmax decoding, no repetition penalty unless given\n"
            "  --temperature T         default: the bundle's (TinyGPT-V: 0.6)\n"
            "  --top-p P               default: the bundle's (0.9)\n"
            "  --top-k K               default: the bundle's (0 = off)\n"
            "  --repetition-penalty R  over generated tokens; default: the bundle's (1.05)\n"
            "  --seed N                sampling seed (default 0)\n"
            "  --max-tokens N          new tokens at most; default: the bundle's (500)\n"
            "  --threads N             compute threads (default: all cores)\n"
            "  --device D              cpu, cuda or auto (default auto: the GPU when there is\n"
            "                          one, else the CPU)\n"
            "  --json                  print one JSON object (answer, tokens, timings) instead\n"
            "environment: TINYVLM_THREADS, TINYVLM_LOG\n");
}

/* Parses argv into o; returns -1 on success, else the exit code to return (0 for --help). */
static int ask_parse(int argc, char **argv, ask_opts *o) {
    const char *env = getenv("TINYVLM_THREADS");
    o->threads = env ? atoi(env) : 0;
    o->sp.temperature = NAN, o->sp.top_p = NAN, o->sp.top_k = -1, o->sp.repetition_penalty = NAN; /* unset */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { ask_usage(stdout); return 0; }
        else if (!strcmp(a, "--greedy")) { o->sp.greedy = 1; takes = 0; }
        else if (!strcmp(a, "--json")) { o->json = 1; takes = 0; }
        else if (a[0] == '-' && a[1] == '-' && !v) {
            fprintf(stderr, "tinyvlm ask: %s needs a value\n", a);
            return 2;
        } else if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--image")) o->image = v;
        else if (!strcmp(a, "--temperature")) o->sp.temperature = (float)atof(v);
        else if (!strcmp(a, "--top-p")) o->sp.top_p = (float)atof(v);
        else if (!strcmp(a, "--top-k")) {
            if ((o->sp.top_k = atoi(v)) < 0) {
                fprintf(stderr, "tinyvlm ask: --top-k must be >= 0\n");
                return 2;
            }
        }
        else if (!strcmp(a, "--repetition-penalty")) o->sp.repetition_penalty = (float)atof(v);
        else if (!strcmp(a, "--seed")) o->sp.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--max-tokens")) o->max_tokens = atoi(v);
        else if (!strcmp(a, "--threads")) o->threads = atoi(v);
        else if (!strcmp(a, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) {
                fprintf(stderr, "tinyvlm ask: --device must be cpu, cuda or auto\n");
                return 2;
            }
            o->device = v;
        }
        else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "tinyvlm ask: unknown option %s\n", a);
            return 2;
        } else if (!o->question) { o->question = a; takes = 0; }
        else { fprintf(stderr, "tinyvlm ask: one question only (quote it)\n"); return 2; }
        i += takes;
    }
    if (!o->model || !o->image || !o->question) {
        ask_usage(stderr);
        return 2;
    }
    if (o->max_tokens < 0 || o->threads < 0) {
        fprintf(stderr, "tinyvlm ask: --max-tokens and --threads must be >= 0\n");
        return 2;
    }
    return -1;
}

static void ask_free(ask_engine *e) {
    phi_free(e->lm);
    vision_free(e->vm);
    kern_free(e->be);
    tok_free(e->tok);
    manifest_free(e->mf);
}

static int ask_load(const ask_opts *o, ask_engine *e) {
    int rc = manifest_load(o->model, &e->mf);
    if (!rc) rc = tok_load(e->mf->tokenizer_path, &e->tok);
    if (!rc) rc = kern_new_device(o->device ? o->device : "auto", o->threads, &e->be);
    if (!rc) rc = vision_load(e->mf, e->be, 1, &e->vm);
    if (!rc) rc = phi_load(e->mf, e->be, 1, 0, &e->lm);
    return rc;
}

/* Image file -> [Q, d] embeddings (emb is the caller's). */
static int ask_encode_image(ask_engine *e, const char *path, float *emb) {
    char *bytes = NULL;
    size_t len = 0;
    int rc = mf_read_all(path, ASK_MAX_IMAGE_BYTES, &bytes, &len);
    if (rc) return rc;
    int S = vision_image_size(e->vm);
    float *pixels = tv_xmalloc(sizeof(float) * 3 * (size_t)S * S);
    rc = img_preprocess(bytes, len, NULL, S, e->mf->vision.mean, e->mf->vision.std, pixels);
    if (rc) err_wrap(rc, "%s", path);
    if (!rc) rc = vision_encode(e->vm, pixels, 1, emb);
    free(pixels);
    free(bytes);
    return rc;
}

static void ask_emit(ask_result *r, const char *s, size_t n, int stream) {
    if (!n) return;
    r->text = tv_xrealloc(r->text, r->text_len + n + 1);
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    r->text[r->text_len] = 0;
    if (stream) {
        fwrite(s, 1, n, stdout);
        fflush(stdout);
    }
}

typedef struct {             /* what the scheduler's callbacks write into */
    ask_result *r;
    int stream, cap, done;   /* cap: r->tokens' size */
    double prefill_end;
} ask_sink;

/* sched's event callback: one sampled token and its text delta; the last one has finish set. */
static void ask_on_event(void *user, const sched_event *ev) {
    ask_sink *k = user;
    for (int i = 0; i < ev->n_tokens && k->r->n_tokens < k->cap; i++)
        k->r->tokens[k->r->n_tokens++] = ev->tokens[i];
    ask_emit(k->r, ev->text, ev->text_len, k->stream);
    if (ev->finish) snprintf(k->r->finish, sizeof k->r->finish, "%s", ev->finish);
    if (ev->finish || ev->error) k->done = 1;
}

/* sched's prefill runner: times the prefill alone, as --json reports it. */
static int ask_time_prefill(void *ctx, int (*fn)(void *arg), void *arg) {
    ask_sink *k = ctx;
    double t0 = clk_now_s();
    int rc = fn(arg);
    k->prefill_end = clk_now_s();
    k->r->prefill_s = k->prefill_end - t0;
    return rc;
}

/* Admits the question as the only sequence of a one-slot scheduler, then steps it until it ends
 * (stop token or string, max_tokens, or the context is full). The sampling defaults and the stop
 * rules are sched's: the same as the service's. */
static int ask_generate(ask_engine *e, const ask_opts *o, const float *image, ask_result *r) {
    sched_req req = {.sp = o->sp, .max_tokens = o->max_tokens};
    sched_defaults(e->mf, &req.sp, &req.max_tokens);
    /* a sequence ends at the context's end, whatever --max-tokens says */
    int cap = req.max_tokens < phi_max_context(e->lm) ? req.max_tokens : phi_max_context(e->lm);
    ask_sink k = {.r = r, .stream = !o->json, .cap = cap > 0 ? cap : 1};
    prompt_ids p = {0};
    sched *s = NULL;
    int rc = prompt_first(e->mf, e->tok, o->question, &p);
    if (!rc) rc = sched_new(e->lm, e->mf, e->tok, vision_tokens(e->vm), ask_on_event, &k, &s);
    if (!rc) {
        sched_set_runner(s, ask_time_prefill, &k);
        r->tokens = tv_xmalloc(sizeof(int32_t) * (size_t)k.cap);
        req.prompt = &p, req.images = image;
        r->prompt_rows = (int)prompt_rows(&p, vision_tokens(e->vm));
        rc = sched_admit(s, &req, 0);
    }
    while (!rc && !k.done) {
        int n = sched_step(s, 0);
        if (n < 0) rc = n;
    }
    if (!rc) r->decode_s = clk_now_s() - k.prefill_end;
    sched_free(s);
    prompt_ids_free(&p);
    return rc;
}

static void ask_print_json(const ask_result *r) {
    cJSON *o = cJSON_CreateObject(), *t = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "answer", r->text ? r->text : "");
    cJSON_AddItemToObject(o, "tokens", cJSON_CreateIntArray(r->tokens, r->n_tokens));
    cJSON_AddStringToObject(o, "finish_reason", r->finish);
    cJSON_AddNumberToObject(o, "prompt_positions", r->prompt_rows);
    cJSON_AddNumberToObject(t, "load_s", r->load_s);
    cJSON_AddNumberToObject(t, "vision_s", r->vision_s);
    cJSON_AddNumberToObject(t, "prefill_s", r->prefill_s);
    cJSON_AddNumberToObject(t, "decode_s", r->decode_s);
    cJSON_AddNumberToObject(t, "decode_tokens_per_s", r->decode_s > 0 ? r->n_tokens / r->decode_s : 0);
    cJSON_AddItemToObject(o, "timings", t);
    char *s = cJSON_Print(o);
    puts(s);
    free(s);
    cJSON_Delete(o);
}

int cli_ask(int argc, char **argv) {
    ask_opts o = {0};
    int code = ask_parse(argc, argv, &o);
    if (code >= 0) return code;
    ask_engine e = {0};
    ask_result r = {0};
    double t0 = clk_now_s();
    int rc = ask_load(&o, &e);
    r.load_s = clk_now_s() - t0;
    float *image = NULL;
    if (!rc) {
        image = tv_xmalloc(sizeof(float) * (size_t)vision_tokens(e.vm) * vision_dim(e.vm));
        t0 = clk_now_s();
        rc = ask_encode_image(&e, o.image, image);
        r.vision_s = clk_now_s() - t0;
    }
    if (!rc) rc = ask_generate(&e, &o, image, &r);
    if (!rc && o.json) ask_print_json(&r);
    else if (!rc) putchar('\n');
    if (rc) fprintf(stderr, "tinyvlm ask: %s\n", err_msg());
    free(image);
    free(r.tokens);
    free(r.text);
    ask_free(&e);
    return rc ? 1 : 0;
}
