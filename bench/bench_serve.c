/* bench_serve — the service under load, as a client sees it: streaming chat requests through
 * `tinyvlm serve` (or any gateway at --url) at concurrency 1, 4 and 16: requests/s, time to
 * first token and inter-token latency (p50/p99), cache-miss versus cache-hit latency (images
 * made unique by a JPEG comment segment, so their SHA-256 differs but the pixels do not), and
 * the gateway's own overhead: the same image and question through `tinyvlm ask --json` (the
 * engine called directly, no network, no workers) against the service at concurrency 1.
 *
 * Usage: bench_serve [--model BUNDLE | --url URL] [--requests N] [--max-tokens K]
 *                    [--image FILE] [--question Q] [--conc 1,4,16]
 * Without --model or --url it converts the tiny test model (tests/data/tinygptv) and serves it.
 * With --model the bundle is served by `tinyvlm serve` (the binary next to this one).
 * Prints one line per figure: "serve <label> <figure> <value...>". Inter-token gaps are as the
 * client receives them: chunks that arrive in one read count as 0 ms, so the per-request mean
 * (last token - first token) / (tokens - 1) is printed too and used for the overhead. The engine
 * figures come from separate `tinyvlm ask` processes (load excluded), so they include a cold
 * start's cache misses that the long-running service does not pay. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "err.h"
#include "mapfile.h"

#define BS_MAX_CONC 64

typedef struct {
    const char *model, *url, *image, *question, *conc;
    int requests, max_tokens;
} bs_opts;

typedef struct {          /* one streaming request */
    CURL *h;
    char *body;
    char *sse;            /* bytes not yet split into events */
    size_t sse_len;
    double t0, t_first, t_last, t_end;
    double *gaps;         /* inter-token gaps, seconds */
    int n_gaps, cap_gaps, n_tokens, failed;
    long status;
} bs_req;

typedef struct {          /* what one batch of requests measured */
    double wall, *ttft, *itl, *total;
    double *itl_req;      /* per request: (last token - first token) / (tokens - 1) */
    int n_ttft, n_itl, n_total, n_failed, tokens, n_itl_req;
} bs_stats;

static int bs_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (nearest rank) of v[0..n) in milliseconds, sorting v; NAN when empty. */
static double bs_pct_ms(double *v, int n, double q) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, bs_cmp);
    int k = (int)ceil(q * n) - 1;
    return 1e3 * v[k < 0 ? 0 : k];
}

/* ---- images: the same pixels under a different SHA-256 ------------------------------------- */

/* base64 of the JPEG jpg[0..n) with a COM segment carrying tag inserted after SOI; "" tag =
 * the file as is. Malloc'd "data:image/jpeg;base64,...". */
static char *bs_data_uri(const unsigned char *jpg, size_t n, const char *tag) {
    size_t tl = strlen(tag), extra = tl ? 4 + tl : 0, len = n + extra;
    unsigned char *b = tv_xmalloc(len);
    memcpy(b, jpg, 2);
    if (tl) {
        b[2] = 0xFF, b[3] = 0xFE, b[4] = (unsigned char)((tl + 2) >> 8), b[5] = (unsigned char)(tl + 2);
        memcpy(b + 6, tag, tl);
    }
    memcpy(b + 2 + extra, jpg + 2, n - 2);
    char *s = tv_xmalloc(32 + 4 * (len / 3 + 1));
    int k = sprintf(s, "data:image/jpeg;base64,");
    EVP_EncodeBlock((unsigned char *)s + k, b, (int)len);
    free(b);
    return s;
}

static char *bs_chat_body(const char *uri, const char *question, int max_tokens) {
    cJSON *r = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(r, "messages");
    cJSON_AddTrueToObject(r, "stream");
    cJSON_AddNumberToObject(r, "max_tokens", max_tokens);
    cJSON_AddNumberToObject(r, "temperature", 0);
    cJSON *m = cJSON_CreateObject(), *parts = cJSON_AddArrayToObject(m, "content");
    cJSON_AddStringToObject(m, "role", "user");
    cJSON *img = cJSON_CreateObject(), *iu = cJSON_AddObjectToObject(img, "image_url");
    cJSON_AddStringToObject(img, "type", "image_url");
    cJSON_AddStringToObject(iu, "url", uri);
    cJSON *txt = cJSON_CreateObject();
    cJSON_AddStringToObject(txt, "type", "text");
    cJSON_AddStringToObject(txt, "text", question);
    cJSON_AddItemToArray(parts, img);
    cJSON_AddItemToArray(parts, txt);
    cJSON_AddItemToArray(msgs, m);
    char *s = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return s;
}

/* ---- one streaming request ---------------------------------------------------------------- */

/* One SSE event's data: a content delta is a token (the gateway sends one per chunk). */
static void bs_event(bs_req *q, const char *data, size_t n) {
    if (n >= 6 && !memcmp(data, "[DONE]", 6)) return;
    cJSON *j = cJSON_ParseWithLength(data, n);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(
            cJSON_GetObjectItemCaseSensitive(j, "choices"), 0), "delta"), "content");
    if (cJSON_GetObjectItemCaseSensitive(j, "error")) q->failed = 1;
    if (cJSON_IsString(c) && c->valuestring[0]) {
        double t = clk_now_s();
        if (!q->n_tokens) q->t_first = t;
        else {
            if (q->n_gaps == q->cap_gaps) {
                q->cap_gaps = q->cap_gaps ? 2 * q->cap_gaps : 64;
                q->gaps = tv_xrealloc(q->gaps, (size_t)q->cap_gaps * sizeof *q->gaps);
            }
            q->gaps[q->n_gaps++] = t - q->t_last;
        }
        q->t_last = t;
        q->n_tokens++;
    }
    cJSON_Delete(j);
}

static size_t bs_on_body(char *p, size_t size, size_t nmemb, void *ud) {
    bs_req *q = ud;
    size_t n = size * nmemb;
    q->sse = tv_xrealloc(q->sse, q->sse_len + n + 1);
    memcpy(q->sse + q->sse_len, p, n);
    q->sse_len += n;
    q->sse[q->sse_len] = 0;
    char *ev;
    while ((ev = strstr(q->sse, "\n\n"))) {
        if (!strncmp(q->sse, "data: ", 6)) bs_event(q, q->sse + 6, (size_t)(ev - q->sse) - 6);
        size_t used = (size_t)(ev + 2 - q->sse);
        memmove(q->sse, ev + 2, q->sse_len - used + 1);
        q->sse_len -= used;
    }
    return n;
}

static void bs_req_start(bs_req *q, CURLM *m, const char *url, struct curl_slist *hdr, char *body) {
    free(q->body);
    free(q->gaps);
    free(q->sse);
    CURL *h = q->h;
    memset(q, 0, sizeof *q);
    q->h = h, q->body = body, q->t0 = clk_now_s();
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, bs_on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(h, CURLOPT_PRIVATE, q);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 600L);
    curl_multi_add_handle(m, h);
}

static void bs_stats_add(bs_stats *s, const bs_req *q) {
    if (q->failed || q->status != 200 || !q->n_tokens) {
        s->n_failed++;
        return;
    }
    s->ttft[s->n_ttft++] = q->t_first - q->t0;
    if (q->n_tokens > 1) s->itl_req[s->n_itl_req++] = (q->t_last - q->t_first) / (q->n_tokens - 1);
    s->total[s->n_total++] = q->t_end - q->t0;
    s->itl = tv_xrealloc(s->itl, (size_t)(s->n_itl + q->n_gaps + 1) * sizeof *s->itl);
    memcpy(s->itl + s->n_itl, q->gaps, (size_t)q->n_gaps * sizeof *q->gaps);
    s->n_itl += q->n_gaps;
    s->tokens += q->n_tokens;
}

/* Runs n requests, conc at a time; body(i) gives request i's body (malloc'd). */
static void bs_run(const char *url, int n, int conc, char *(*body)(int, void *), void *ud,
                   bs_stats *s) {
    memset(s, 0, sizeof *s);
    s->ttft = tv_xcalloc((size_t)n, sizeof(double));
    s->total = tv_xcalloc((size_t)n, sizeof(double));
    s->itl_req = tv_xcalloc((size_t)n, sizeof(double));
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    CURLM *m = curl_multi_init();
    bs_req q[BS_MAX_CONC] = {0};
    int next = 0, active = 0;
    double t0 = clk_now_s();
    for (int i = 0; i < conc && next < n; i++, active++) {
        q[i].h = curl_easy_init();
        bs_req_start(&q[i], m, url, hdr, body(next++, ud));
    }
    while (active > 0) {
        int running, left;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            bs_req *r;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->status);
            r->t_end = clk_now_s();
            if (msg->data.result != CURLE_OK) r->failed = 1;
            curl_multi_remove_handle(m, r->h);
            bs_stats_add(s, r);
            if (next < n) bs_req_start(r, m, url, hdr, body(next++, ud));
            else active--;
        }
        curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    s->wall = clk_now_s() - t0;
    for (int i = 0; i < conc && i < n; i++) {
        curl_easy_cleanup(q[i].h);
        free(q[i].body), free(q[i].gaps), free(q[i].sse);
    }
    curl_multi_cleanup(m);
    curl_slist_free_all(hdr);
}

static void bs_stats_free(bs_stats *s) {
    free(s->ttft), free(s->itl), free(s->total), free(s->itl_req);
}

/* ---- the workloads ----------------------------------------------------------------------- */

typedef struct {
    const unsigned char *jpg;
    size_t n;
    const bs_opts *o;
    int unique;    /* every request its own image (cache misses) */
    int epoch;     /* keeps unique images unique across runs */
} bs_work;

static char *bs_body(int i, void *ud) {
    bs_work *w = ud;
    char tag[48] = "";
    if (w->unique) snprintf(tag, sizeof tag, "bench_serve %d %d %ld", w->epoch, i, (long)getpid());
    char *uri = bs_data_uri(w->jpg, w->n, tag);
    char *b = bs_chat_body(uri, w->o->question, w->o->max_tokens);
    free(uri);
    return b;
}

static void bs_print(const char *label, const bs_stats *s0) {
    bs_stats s = *s0;
    printf("serve %s requests/s %.2f (%d ok, %d failed, %.1f tokens/req, %.1f tokens/s)\n", label,
           s.n_total / s.wall, s.n_total, s.n_failed, s.n_total ? (double)s.tokens / s.n_total : 0,
           s.tokens / s.wall);
    printf("serve %s ttft_ms p50 %.2f p99 %.2f\n", label, bs_pct_ms(s.ttft, s.n_ttft, .5),
           bs_pct_ms(s.ttft, s.n_ttft, .99));
    printf("serve %s itl_ms p50 %.2f p99 %.2f (gaps as received; per-request mean p50 %.2f)\n",
           label, bs_pct_ms(s.itl, s.n_itl, .5), bs_pct_ms(s.itl, s.n_itl, .99),
           bs_pct_ms(s.itl_req, s.n_itl_req, .5));
    fflush(stdout);
}

/* ---- the engine called directly: tinyvlm ask --json ---------------------------------------- */

typedef struct {
    double first_s;   /* vision + prefill: what a client waits for before the first token */
    double per_tok_s; /* decode time per token */
    double total_s;   /* vision + prefill + decode (load excluded) */
} bs_engine;

static int bs_cmp_first(const void *a, const void *b) {
    return bs_cmp(&((const bs_engine *)a)->first_s, &((const bs_engine *)b)->first_s);
}

/* Median over runs of `tinyvlm ask --json` on the same image and question. Returns 0 or -1. */
static int bs_engine_direct(const char *tv, const bs_opts *o, const char *image, int runs,
                            bs_engine *out) {
    bs_engine e[16];
    int n = 0;
    for (int r = 0; r < runs && r < 16; r++) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "'%s' ask --model '%s' --image '%s' --greedy --max-tokens %d --json '%s' 2>/dev/null",
                 tv, o->model, image, o->max_tokens, o->question);
        FILE *p = popen(cmd, "r");
        if (!p) return -1;
        char buf[1 << 16];
        size_t len = fread(buf, 1, sizeof buf - 1, p);
        buf[len] = 0;
        if (pclose(p) != 0) return -1;
        cJSON *j = cJSON_Parse(buf), *t = cJSON_GetObjectItemCaseSensitive(j, "timings");
        double v = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(t, "vision_s"));
        double pf = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(t, "prefill_s"));
        double d = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(t, "decode_s"));
        int nt = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "tokens"));
        cJSON_Delete(j);
        if (isnan(v) || isnan(pf) || isnan(d) || nt < 1) return -1;
        e[n++] = (bs_engine){v + pf, d / nt, v + pf + d};
    }
    qsort(e, (size_t)n, sizeof *e, bs_cmp_first);
    *out = e[n / 2];
    return n ? 0 : -1;
}

/* ---- the service: tinyvlm serve as a child process ----------------------------------------- */

static int bs_ready(const char *base) {
    char u[600];
    snprintf(u, sizeof u, "%s/readyz", base);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, u);
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 2L);
    long st = 0;
    int ok = curl_easy_perform(h) == CURLE_OK &&
             curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st) == CURLE_OK && st == 200;
    curl_easy_cleanup(h);
    return ok;
}

/* Starts `tv serve --model M` on a free-ish port; fills base; returns the pid, or -1. */
static pid_t bs_serve(const char *tv, const char *model, char *base, size_t cap) {
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    for (int attempt = 0; attempt < 5; attempt++) {
        char port[16];
        snprintf(port, sizeof port, "%d", 20000 + rand() % 40000);
        snprintf(base, cap, "http://127.0.0.1:%s", port);
        pid_t pid = fork();
        if (pid == 0) {
            if (!freopen("/dev/null", "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(127);
            execl(tv, tv, "serve", "--model", model, "--host", "127.0.0.1", "--port", port, (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 600; i++) {  /* 60 s */
            if (bs_ready(base)) return pid;
            if (waitpid(pid, NULL, WNOHANG) == pid) break;
            usleep(100000);
        }
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

/* ---- main -------------------------------------------------------------------------------------- */

static int bs_parse(int argc, char **argv, bs_opts *o) {
    *o = (bs_opts){NULL, NULL, TV_SOURCE_DIR "/examples/sample.jpg",
                   "What is in this picture?", "1,4,16", 48, 32};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--url")) o->url = v;
        else if (!strcmp(a, "--image")) o->image = v;
        else if (!strcmp(a, "--question")) o->question = v;
        else if (!strcmp(a, "--conc")) o->conc = v;
        else if (!strcmp(a, "--requests")) o->requests = atoi(v);
        else if (!strcmp(a, "--max-tokens")) o->max_tokens = atoi(v);
        else return -1;
    }
    return (argc % 2 == 1 && o->requests > 0 && o->max_tokens > 0) ? 0 : -1;
}

/* Converts the tiny test model into dir (in-process: bench links tvcli). */
static int bs_tiny_bundle(const char *dir) {
    const char *M = TV_SOURCE_DIR "/tests/data/tinygptv/model";
    char phi[512], eva[512], blip[512], st4[512];
    snprintf(phi, sizeof phi, "%s/phi_fused", M);
    snprintf(eva, sizeof eva, "%s/eva_vit_g.pth", M);
    snprintf(blip, sizeof blip, "%s/blip2_pretrained_flant5xxl.pth", M);
    snprintf(st4, sizeof st4, "%s/TinyGPT-V_for_Stage4.pth", M);
    char *args[] = {"convert", "--phi", phi, "--eva", eva, "--blip2", blip, "--stage4", st4,
                    "--out", (char *)dir, "--dtype", "f32", "--vit-heads", "2",
                    "--qformer-heads", "2", NULL};
    return cli_convert(17, args);
}

static void bs_overhead(const char *tv, const bs_opts *o, const bs_stats *miss) {
    bs_engine e;
    if (!o->model || bs_engine_direct(tv, o, o->image, 5, &e)) {
        printf("serve overhead skipped (needs --model or the tiny bundle, and tinyvlm ask)\n");
        return;
    }
    bs_stats s = *miss;
    double ttft = bs_pct_ms(s.ttft, s.n_ttft, .5), itl = bs_pct_ms(s.itl_req, s.n_itl_req, .5);
    double tot = bs_pct_ms(s.total, s.n_total, .5);
    printf("serve engine-direct first_token_ms %.2f per_token_ms %.3f total_ms %.2f (tinyvlm ask, median of 5)\n",
           1e3 * e.first_s, 1e3 * e.per_tok_s, 1e3 * e.total_s);
    printf("serve overhead ttft_ms %+.2f (gateway miss p50 %.2f vs engine %.2f)\n",
           ttft - 1e3 * e.first_s, ttft, 1e3 * e.first_s);
    printf("serve overhead itl_ms %+.3f (gateway per-request mean, p50 %.3f, vs engine %.3f)\n",
           itl - 1e3 * e.per_tok_s, itl, 1e3 * e.per_tok_s);
    printf("serve overhead total_ms %+.2f (%+.1f%%)\n", tot - 1e3 * e.total_s,
           100 * (tot / (1e3 * e.total_s) - 1));
}

int main(int argc, char **argv) {
    bs_opts o;
    if (bs_parse(argc, argv, &o)) {
        fprintf(stderr, "usage: bench_serve [--model BUNDLE | --url URL] [--requests N] "
                        "[--max-tokens K] [--image FILE.jpg] [--question Q] [--conc 1,4,16]\n");
        return 2;
    }
    char self[1024], tv[1100], tmp[] = "/tmp/bench_serve.XXXXXX", bundle[1100] = "", base[512];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    self[sl > 0 ? sl : 0] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    snprintf(tv, sizeof tv, "%s/tinyvlm", self);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *label = "tiny";
    if (!o.model && !o.url) {
        if (!mkdtemp(tmp) || (snprintf(bundle, sizeof bundle, "%s/b", tmp), bs_tiny_bundle(bundle))) {
            fprintf(stderr, "bench_serve: cannot build the tiny bundle\n");
            return 1;
        }
        o.model = bundle;
    } else if (o.model) {
        label = strrchr(o.model, '/') ? strrchr(o.model, '/') + 1 : o.model;
    }
    pid_t pid = -1;
    if (o.url) snprintf(base, sizeof base, "%s", o.url), label = "url";
    else if ((pid = bs_serve(tv, o.model, base, sizeof base)) < 0) {
        fprintf(stderr, "bench_serve: tinyvlm serve did not become ready\n");
        return 1;
    }
    char *img;
    size_t img_n;
    if (mf_read_all(o.image, 64u << 20, &img, &img_n) || img_n < 4 ||
        (unsigned char)img[0] != 0xFF || (unsigned char)img[1] != 0xD8) {
        fprintf(stderr, "bench_serve: %s must be a JPEG\n", o.image);
        return 1;
    }
    char url[600];
    snprintf(url, sizeof url, "%s/v1/chat/completions", base);
    printf("serve %s target %s, %d requests per level, %d new tokens, image %s (%zu bytes)\n",
           label, base, o.requests, o.max_tokens, o.image, img_n);
    bs_work w = {(unsigned char *)img, img_n, &o, 0, 0};
    bs_stats s;
    bs_run(url, 2, 1, bs_body, &w, &s);  /* warm-up; puts the shared image in the cache */
    bs_stats_free(&s);
    /* cache misses versus hits, one request at a time */
    w.unique = 1, w.epoch = 1;
    bs_stats miss;
    bs_run(url, o.requests, 1, bs_body, &w, &miss);
    char l2[160];
    snprintf(l2, sizeof l2, "%s c=1 miss", label);
    bs_print(l2, &miss);
    w.unique = 0;
    for (const char *c = o.conc; c && *c; c = strchr(c, ',') ? strchr(c, ',') + 1 : NULL) {
        int conc = atoi(c);
        if (conc < 1 || conc > BS_MAX_CONC) continue;
        int n = o.requests > 4 * conc ? o.requests : 4 * conc;
        bs_run(url, n, conc, bs_body, &w, &s);
        snprintf(l2, sizeof l2, "%s c=%d hit", label, conc);
        bs_print(l2, &s);
        if (conc == 1)
            printf("serve %s cache ttft_ms p50 miss %.2f hit %.2f (vision skipped: %.2f)\n", label,
                   bs_pct_ms(miss.ttft, miss.n_ttft, .5), bs_pct_ms(s.ttft, s.n_ttft, .5),
                   bs_pct_ms(miss.ttft, miss.n_ttft, .5) - bs_pct_ms(s.ttft, s.n_ttft, .5));
        bs_stats_free(&s);
    }
    bs_overhead(tv, &o, &miss);
    bs_stats_free(&miss);
    free(img);
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    curl_global_cleanup();
    if (bundle[0]) {  /* the tiny bundle this run converted */
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "bench_serve: could not remove %s\n", tmp);
    }
    return 0;
}
