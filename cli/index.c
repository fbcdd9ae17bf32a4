/* tinyvlm index — sends every JPEG/PNG under a folder through the gateway's POST /v1/embeddings
 * and appends one JSON line per image, {"path", "sha256", "embedding"}, to a JSONL file.
 *
 * Why it looks the way it does:
 * - one thread, libcurl's multi interface, at most --concurrency requests in flight: the work is
 *   waiting on the network, so threads would only add locking;
 * - each line is written and flushed as soon as its answer arrives, so a run that is killed
 *   loses at most the requests in flight; on start the existing file is read and every path
 *   already in it is skipped (resume); a torn last line is ignored and a newline is put after it;
 * - a file that cannot be read, or that the gateway refuses (4xx), is recorded and reported at
 *   the end; the run goes on. Busy answers (429/503), 5xx and network errors are retried with
 *   backoff (honouring Retry-After) before they count as failures. If the gateway cannot be
 *   reached at all before anything succeeded, or refuses the API key (401), the run stops
 *   instead of failing every file; a rerun picks up the rest.
 * Exit: 0 all images indexed (or already there), 1 some failed or the run stopped, 2 usage. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "err.h"
#include "hash.h"
#include "mapfile.h"

#define IX_MAX_DEPTH 64               /* folder nesting we follow */
#define IX_MAX_RESPONSE (64u << 20)   /* an answer larger than this is refused */
#define IX_MAX_RETRY_WAIT_S 30.0

typedef struct {
    const char *dir, *url, *out, *api_key, *model;
    int concurrency, retries, timeout_s, quiet;
    size_t max_bytes;
} ix_opts;

typedef struct {   /* a growable list of malloc'd strings */
    char **v;
    size_t n, cap;
} ix_strs;

typedef struct {   /* a failure to report at the end */
    char *path, *why;
} ix_fail;

typedef struct {
    char *data;
    size_t len, cap;
    int overflow;
} ix_buf;

typedef struct {   /* one request slot; its easy handle is reused from image to image */
    CURL *h;
    const char *path;          /* borrowed from the file list; NULL = slot free */
    char sha[HASH_SHA256_HEX_LEN + 1];
    char *body;                /* the request JSON */
    ix_buf resp;
    int cache_hdr;             /* X-TinyVLM-Cache: -1 absent, 0 miss, 1 hit */
    double retry_after;        /* seconds from the Retry-After header, 0 if none */
    int attempts;
    double due;                /* > 0: waiting to be retried at this time */
    char errbuf[CURL_ERROR_SIZE];
} ix_job;

typedef struct {
    ix_opts o;
    char *endpoint;
    struct curl_slist *headers;
    FILE *out;
    ix_strs files, done;       /* done: paths already in the output file, sorted */
    ix_fail *fails;
    size_t n_fails, cap_fails;
    size_t next, n_ok, n_hits, n_skipped, n_todo;
    int n_unreachable;         /* requests in a row that found no gateway (after retries) */
    int stop_all;              /* gateway unreachable: dispatch nothing more */
    double t_start, t_shown;
    int tty;
} ix_run;

static volatile sig_atomic_t ix_interrupted;

static void ix_on_signal(int sig) {
    (void)sig;
    ix_interrupted = 1;
}

static void ix_strs_push(ix_strs *s, char *str) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->v = tv_xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = str;
}

static void ix_strs_free(ix_strs *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

static int ix_cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *ix_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(tv_xmalloc(n), s, n);
}

static char *ix_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *ix_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = tv_xmalloc((size_t)(n < 0 ? 0 : n) + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void ix_fail_add(ix_run *r, const char *path, char *why /* taken */) {
    if (r->n_fails == r->cap_fails) {
        r->cap_fails = r->cap_fails ? 2 * r->cap_fails : 16;
        r->fails = tv_xrealloc(r->fails, r->cap_fails * sizeof *r->fails);
    }
    r->fails[r->n_fails++] = (ix_fail){ix_strdup(path), why};
}

/* ---- options ------------------------------------------------------------------------------ */

static void ix_usage(FILE *f) {
    fprintf(f,
            "usage: tinyvlm index DIR --url URL [options]\n\n"
            "Sends every *.jpg, *.jpeg and *.png under DIR (recursively) through the gateway's\n"
            "POST /v1/embeddings and appends {\"path\", \"sha256\", \"embedding\"} lines to a JSONL\n"
            "file. Paths already in that file are skipped, so a stopped run resumes where it was.\n"
            "Unreadable files and refused images are listed at the end; the run goes on.\n\n"
            "  --url URL            gateway base URL, e.g. http://127.0.0.1:8080 (or the full\n"
            "                       .../v1/embeddings URL)\n"
            "  --out FILE           JSONL output, appended to (default: index.jsonl)\n"
            "  --concurrency N      requests in flight at most (default 4)\n"
            "  --api-key KEY        sent as 'Authorization: Bearer KEY' (prefer TINYVLM_API_KEY:\n"
            "                       a flag shows in the process list)\n"
            "  --model NAME         model name sent with each request (default: the gateway's)\n"
            "  --retries N          retries of busy answers and network errors (default 3)\n"
            "  --timeout-s S        per request (default 300)\n"
            "  --max-mb M           larger files are reported, not sent (default 24)\n"
            "  --quiet              no progress, only the summary\n\n"
            "environment: TINYVLM_URL, TINYVLM_OUT, TINYVLM_CONCURRENCY, TINYVLM_API_KEY,\n"
            "TINYVLM_MODEL (flags win)\n"
            "exit: 0 all images indexed, 1 some failed (listed), or the gateway was unreachable or\n"
            "refused the API key (the run stops; rerun to go on), 2 usage error\n");
}

/* Parses a positive integer flag value in [lo, hi]; returns 0 or -1 (message printed). */
static int ix_parse_int(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "tinyvlm index: %s wants an integer in [%d, %d], got '%s'\n", flag, lo,
                hi, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static void ix_defaults(ix_opts *o) {
    const char *e;
    memset(o, 0, sizeof *o);
    o->url = getenv("TINYVLM_URL");
    o->out = (e = getenv("TINYVLM_OUT")) ? e : "index.jsonl";
    o->api_key = getenv("TINYVLM_API_KEY");
    o->model = getenv("TINYVLM_MODEL");
    o->concurrency = 4, o->retries = 3, o->timeout_s = 300;
    o->max_bytes = (size_t)24 << 20;
    if ((e = getenv("TINYVLM_CONCURRENCY")) && ix_parse_int("TINYVLM_CONCURRENCY", e, 1, 256,
                                                            &o->concurrency))
        o->concurrency = 4;
}

/* Parses argv into o; returns -1 on success, else the exit code to return (0 for --help). */
static int ix_parse(int argc, char **argv, ix_opts *o) {
    ix_defaults(o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ix_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (a[0] != '-') {
            if (o->dir) {
                fprintf(stderr, "tinyvlm index: one DIR only (got '%s' and '%s')\n", o->dir, a);
                return 2;
            }
            o->dir = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tinyvlm index: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int mb = 0, bad = 0;
        if (!strcmp(a, "--url")) o->url = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--api-key")) o->api_key = v;
        else if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--concurrency")) bad = ix_parse_int(a, v, 1, 256, &o->concurrency);
        else if (!strcmp(a, "--retries")) bad = ix_parse_int(a, v, 0, 100, &o->retries);
        else if (!strcmp(a, "--timeout-s")) bad = ix_parse_int(a, v, 1, 86400, &o->timeout_s);
        else if (!strcmp(a, "--max-mb")) {
            bad = ix_parse_int(a, v, 1, 1024, &mb);  /* base64 length stays an int */
            o->max_bytes = (size_t)mb << 20;
        } else {
            fprintf(stderr, "tinyvlm index: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    if (!o->dir || !o->url || !*o->url) {
        fprintf(stderr, "tinyvlm index: %s\n", !o->dir ? "DIR is missing" : "--url is missing");
        ix_usage(stderr);
        return 2;
    }
    return -1;
}

/* ---- finding the images ------------------------------------------------------------------- */

static int ix_is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
                   !strcasecmp(dot, ".png"));
}

/* Adds the images under dir to r->files. Symbolic links to folders are not followed (no loops);
 * links to files are. A folder that cannot be opened is a failure to report, not a stop. */
static void ix_walk(ix_run *r, const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) {
        ix_fail_add(r, dir, ix_printf("cannot open folder: %s", strerror(errno)));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = ix_printf("%s/%s", dir, e->d_name);
        struct stat ls, st;
        int lok = lstat(p, &ls) == 0, sok = stat(p, &st) == 0;
        if (lok && S_ISDIR(ls.st_mode)) {
            if (depth < IX_MAX_DEPTH) ix_walk(r, p, depth + 1);
            else ix_fail_add(r, p, ix_strdup("folder nested too deep; not entered"));
            free(p);
        } else if (!ix_is_image_name(e->d_name) || (sok && S_ISDIR(st.st_mode))) {
            free(p);
        } else if (sok && !S_ISREG(st.st_mode)) {
            ix_fail_add(r, p, ix_strdup("not a regular file"));  /* a FIFO would block a read */
            free(p);
        } else {
            ix_strs_push(&r->files, p);  /* a dangling link fails when read, and is reported */
        }
    }
    closedir(d);
}

/* ---- resume: the paths already in the output file ------------------------------------------ */

/* The path of one JSONL line, malloc'd, or NULL for a line that is not a complete record (torn
 * by a kill, or not ours). Lines as index writes them ({"path":"..." first, "]}" last, no escapes
 * in the path) are recognised without parsing their embedding: resuming a large index should not
 * cost a full JSON parse of every vector. Anything else goes through cJSON. */
static char *ix_line_path(const char *line, size_t n) {
    static const char head[] = "{\"path\":\"";
    size_t k = sizeof head - 1;
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    if (n > k + 2 && !memcmp(line, head, k) && !memcmp(line + n - 2, "]}", 2)) {
        const char *q = memchr(line + k, '"', n - k), *bs = memchr(line + k, '\\', n - k);
        if (q && (!bs || bs > q) && (size_t)(q - line) + 14 < n && !memcmp(q, "\",\"sha256\":", 11)) {
            size_t len = (size_t)(q - line) - k;
            char *p = memcpy(tv_xmalloc(len + 1), line + k, len);
            p[len] = 0;
            return p;
        }
    }
    char *p = NULL;
    cJSON *j = cJSON_ParseWithLength(line, n);
    const cJSON *jp = cJSON_GetObjectItemCaseSensitive(j, "path");
    if (cJSON_IsString(jp) && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "embedding")))
        p = ix_strdup(jp->valuestring);
    cJSON_Delete(j);
    return p;
}

/* Reads the existing JSONL (if any) into r->done (sorted). Lines that do not parse (a line torn
 * by a kill) are ignored. Sets *needs_nl when the file does not end with a newline. Returns 0,
 * or TV_EIO with a message when the file exists but cannot be read. */
static int ix_load_done(ix_run *r, const char *path, int *needs_nl) {
    *needs_nl = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : err_set(TV_EIO, "cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int last = '\n';
    while ((n = getline(&line, &cap, f)) > 0) {
        last = line[n - 1];
        char *p = ix_line_path(line, (size_t)n);
        if (p) ix_strs_push(&r->done, p);
    }
    int bad = ferror(f);
    free(line);
    fclose(f);
    if (bad) return err_set(TV_EIO, "cannot read %s", path);
    *needs_nl = last != '\n';
    qsort(r->done.v, r->done.n, sizeof *r->done.v, ix_cmp_str);
    return 0;
}

static int ix_is_done(const ix_run *r, const char *path) {
    return r->done.n && bsearch(&path, r->done.v, r->done.n, sizeof *r->done.v, ix_cmp_str);
}

/* ---- one request ---------------------------------------------------------------------------- */

static size_t ix_on_body(char *ptr, size_t size, size_t nmemb, void *ud) {
    ix_buf *b = ud;
    size_t n = size * nmemb;
    if (b->overflow || n > IX_MAX_RESPONSE - b->len) {
        b->overflow = 1;
        return n;  /* keep reading, drop the bytes: the status still tells what happened */
    }
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = tv_xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = 0;
    return n;
}

/* Header "Name: value" with name matched case-insensitively; returns the value or NULL. */
static const char *ix_header_value(const char *line, size_t n, const char *name, char *val,
                                   size_t cap) {
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) || line[k] != ':') return NULL;
    const char *v = line + k + 1;
    size_t m = n - k - 1;
    while (m && (*v == ' ' || *v == '\t')) v++, m--;
    while (m && (v[m - 1] == '\r' || v[m - 1] == '\n' || v[m - 1] == ' ')) m--;
    if (m >= cap) m = cap - 1;
    memcpy(val, v, m);
    val[m] = 0;
    return val;
}

static size_t ix_on_header(char *ptr, size_t size, size_t nmemb, void *ud) {
    ix_job *j = ud;
    size_t n = size * nmemb;
    char v[64];
    if (ix_header_value(ptr, n, "X-TinyVLM-Cache", v, sizeof v))
        j->cache_hdr = !strcasecmp(v, "hit");
    else if (ix_header_value(ptr, n, "Retry-After", v, sizeof v))
        j->retry_after = atof(v);
    return n;
}

static const char *ix_mime(const unsigned char *p, size_t n, const char *path) {
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return "image/jpeg";
    if (n >= 4 && !memcmp(p, "\x89PNG", 4)) return "image/png";
    const char *dot = strrchr(path, '.');  /* unknown bytes: let the gateway judge them */
    return dot && !strcasecmp(dot, ".png") ? "image/png" : "image/jpeg";
}

/* Reads the image, hashes it and builds the request body into j. Returns 0, or a failure
 * (message set) for a file that cannot be read or is too large. */
static int ix_job_prepare(ix_run *r, ix_job *j) {
    char *bytes;
    size_t n;
    int rc = mf_read_all(j->path, r->o.max_bytes, &bytes, &n);
    if (rc) return rc;
    rc = hash_sha256_hex(bytes, n, j->sha);
    if (rc) {
        free(bytes);
        return rc;
    }
    const char *mime = ix_mime((const unsigned char *)bytes, n, j->path);
    size_t prefix = strlen("data:;base64,") + strlen(mime);
    char *uri = tv_xmalloc(prefix + 4 * ((n + 2) / 3) + 1);
    sprintf(uri, "data:%s;base64,", mime);
    EVP_EncodeBlock((unsigned char *)uri + prefix, (const unsigned char *)bytes, (int)n);
    free(bytes);
    cJSON *req = cJSON_CreateObject(), *in = cJSON_AddArrayToObject(req, "input");
    if (r->o.model) cJSON_AddStringToObject(req, "model", r->o.model);
    cJSON_AddItemToArray(in, cJSON_CreateString(uri));
    free(uri);
    j->body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    TV_ASSERT(j->body);
    return 0;
}

/* (Re)sends j's request. */
static void ix_job_send(ix_run *r, ix_job *j, CURLM *m) {
    j->resp.len = 0, j->resp.overflow = 0;
    j->cache_hdr = -1, j->retry_after = 0, j->due = 0, j->errbuf[0] = 0;
    j->attempts++;
    curl_easy_setopt(j->h, CURLOPT_URL, r->endpoint);
    curl_easy_setopt(j->h, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(j->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(j->body));
    curl_easy_setopt(j->h, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(j->h, CURLOPT_WRITEFUNCTION, ix_on_body);
    curl_easy_setopt(j->h, CURLOPT_WRITEDATA, &j->resp);
    curl_easy_setopt(j->h, CURLOPT_HEADERFUNCTION, ix_on_header);
    curl_easy_setopt(j->h, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(j->h, CURLOPT_TIMEOUT, (long)r->o.timeout_s);
    curl_easy_setopt(j->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(j->h, CURLOPT_ERRORBUFFER, j->errbuf);
    curl_easy_setopt(j->h, CURLOPT_PRIVATE, j);
    curl_multi_add_handle(m, j->h);
}

static void ix_job_release(ix_job *j) {
    free(j->body);
    j->body = NULL;
    j->path = NULL;
    j->attempts = 0;
}

/* Takes the next file not yet done into the free slot j; a file that cannot be read is
 * recorded and the next one tried. */
static void ix_job_fill(ix_run *r, ix_job *j, CURLM *m) {
    while (!j->path && !r->stop_all && r->next < r->files.n) {
        const char *p = r->files.v[r->next++];
        if (ix_is_done(r, p)) continue;
        j->path = p;
        if (ix_job_prepare(r, j)) {
            ix_fail_add(r, p, ix_strdup(err_msg()));
            ix_job_release(j);
            continue;
        }
        ix_job_send(r, j, m);
    }
}

/* The error message of an answer: error.message from the OpenAI error JSON, else the start of
 * the body. Malloc'd. */
static char *ix_answer_error(long status, const ix_buf *b) {
    cJSON *j = b->data ? cJSON_ParseWithLength(b->data, b->len) : NULL;
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "error"), "message");
    char *s = cJSON_IsString(msg) ? ix_printf("HTTP %ld: %s", status, msg->valuestring)
                                  : ix_printf("HTTP %ld: %.200s", status, b->data ? b->data : "");
    cJSON_Delete(j);
    for (char *c = s; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    return s;
}

/* Checks a 200 answer and appends the JSONL line. Returns 0, or TV_EFORMAT (message set) for
 * an answer without a usable embedding, or TV_EIO when the output cannot be written. */
static int ix_write_line(ix_run *r, ix_job *j) {
    if (j->resp.overflow) return err_set(TV_EFORMAT, "answer larger than %u bytes", IX_MAX_RESPONSE);
    cJSON *a = cJSON_ParseWithLength(j->resp.data ? j->resp.data : "", j->resp.len);
    cJSON *d0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(a, "data"), 0);
    cJSON *emb = cJSON_GetObjectItemCaseSensitive(d0, "embedding");
    int ok = cJSON_IsArray(emb) && cJSON_GetArraySize(emb) > 0;
    for (const cJSON *x = ok ? emb->child : NULL; x; x = x->next)
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble)) ok = 0;
    if (!ok) {
        cJSON_Delete(a);
        return err_set(TV_EFORMAT, "the answer has no data[0].embedding array of numbers");
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d0, "cached")) || j->cache_hdr == 1)
        r->n_hits++;
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "path", j->path);
    cJSON_AddStringToObject(line, "sha256", j->sha);
    cJSON_AddItemToObject(line, "embedding", cJSON_DetachItemViaPointer(d0, emb));
    cJSON_Delete(a);
    char *s = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    TV_ASSERT(s);
    int bad = fputs(s, r->out) < 0 || fputc('\n', r->out) == EOF || fflush(r->out) != 0;
    free(s);
    if (bad) return err_set(TV_EIO, "cannot write %s: %s", r->o.out, strerror(errno));
    r->n_ok++;
    return 0;
}

static int ix_retryable(CURLcode res, long status) {
    if (res != CURLE_OK) return 1;
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

/* Handles a finished transfer of job j: writes its line, schedules a retry, or records the
 * failure. */
static void ix_job_finish(ix_run *r, ix_job *j, CURLM *m, CURLcode res) {
    long status = 0;
    curl_multi_remove_handle(m, j->h);
    curl_easy_getinfo(j->h, CURLINFO_RESPONSE_CODE, &status);
    if (res == CURLE_OK) r->n_unreachable = 0;
    if (res == CURLE_OK && status == 200) {
        int wrc = ix_write_line(r, j);
        if (wrc == TV_EIO) r->stop_all = 1;  /* the disk is full or gone: stop, keep what we have */
        if (wrc) ix_fail_add(r, j->path, ix_strdup(err_msg()));
        ix_job_release(j);
        return;
    }
    if (ix_retryable(res, status) && j->attempts <= r->o.retries) {
        int k = j->attempts - 1 < 6 ? j->attempts - 1 : 6;  /* 0.5, 1, 2 ... 32 s */
        double wait = j->retry_after > 0 ? j->retry_after : 0.5 * (double)(1 << k);
        j->due = clk_now_s() + (wait < IX_MAX_RETRY_WAIT_S ? wait : IX_MAX_RETRY_WAIT_S);
        return;
    }
    char *why = res != CURLE_OK
                    ? ix_printf("%s", j->errbuf[0] ? j->errbuf : curl_easy_strerror(res))
                    : ix_answer_error(status, &j->resp);
    int gone = res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST;
    r->n_unreachable = gone ? r->n_unreachable + 1 : 0;
    if (gone && !r->stop_all && (r->n_ok == 0 || r->n_unreachable > r->o.concurrency)) {
        r->stop_all = 1;  /* never reached, or gone for good: failing every file wastes time */
        fprintf(stderr, "tinyvlm index: cannot reach %s: %s\n", r->endpoint, why);
    }
    if (status == 401 && !r->stop_all) {
        r->stop_all = 1;  /* every other request would be refused the same way */
        fprintf(stderr, "tinyvlm index: the gateway refused the API key (%s): %s\n",
                r->o.api_key && *r->o.api_key ? "check --api-key / TINYVLM_API_KEY"
                                              : "give one with --api-key or TINYVLM_API_KEY",
                why);
    }
    ix_fail_add(r, j->path, why);
    ix_job_release(j);
}

/* ---- progress --------------------------------------------------------------------------------- */

static void ix_show(ix_run *r, size_t file_fails, int final) {
    double now = clk_now_s(), el = now - r->t_start;
    if (r->o.quiet || (!final && now - r->t_shown < (r->tty ? 0.1 : 2.0))) return;
    r->t_shown = now;
    size_t done = r->n_ok + file_fails, total = r->n_todo;
    double rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 && total > done ? (double)(total - done) / rate : 0;
    if (r->tty) {
        char bar[21];
        size_t fill = total ? 20 * done / total : 20;
        for (int i = 0; i < 20; i++) bar[i] = (size_t)i < fill ? '#' : '.';
        bar[20] = 0;
        fprintf(stderr, "\r[%s] %zu/%zu  %.1f img/s  %zu cache hits  %zu failed  ETA %d:%02d\x1b[K%s",
                bar, done, total, rate, r->n_hits, file_fails, (int)eta / 60, (int)eta % 60,
                final ? "\n" : "");
    } else if (!final) {
        fprintf(stderr, "index: %zu/%zu images, %.1f img/s, %zu cache hits, %zu failed, ETA %.0f s\n",
                done, total, rate, r->n_hits, file_fails, eta);
    }
}

/* ---- the run ---------------------------------------------------------------------------------- */

static int ix_setup(ix_run *r) {
    size_t ul = strlen(r->o.url);
    while (ul > 1 && r->o.url[ul - 1] == '/') ul--;
    int full = ul >= 14 && !strncmp(r->o.url + ul - 14, "/v1/embeddings", 14);
    r->endpoint = ix_printf("%.*s%s", (int)ul, r->o.url, full ? "" : "/v1/embeddings");
    r->headers = curl_slist_append(NULL, "Content-Type: application/json");
    r->headers = curl_slist_append(r->headers, "Expect:");  /* no 100-continue round trip */
    if (r->o.api_key && *r->o.api_key) {
        char *h = ix_printf("Authorization: Bearer %s", r->o.api_key);
        r->headers = curl_slist_append(r->headers, h);
        free(h);
    }
    int needs_nl;
    if (ix_load_done(r, r->o.out, &needs_nl)) return 1;
    r->out = fopen(r->o.out, "ab");
    if (!r->out) return err_set(TV_EIO, "cannot open %s: %s", r->o.out, strerror(errno)), 1;
    if (needs_nl && (fputc('\n', r->out) == EOF || fflush(r->out)))
        return err_set(TV_EIO, "cannot write %s: %s", r->o.out, strerror(errno)), 1;
    return 0;
}

static void ix_loop(ix_run *r, ix_job *jobs, CURLM *m, size_t walk_fails) {
    for (;;) {
        int active = 0;
        double now = clk_now_s();
        for (int i = 0; i < r->o.concurrency && !ix_interrupted; i++) {
            ix_job *j = &jobs[i];
            ix_job_fill(r, j, m);
            if (j->path && j->due > 0 && now >= j->due) ix_job_send(r, j, m);
            active += j->path != NULL;
        }
        if (!active || ix_interrupted) break;
        int running, q, finished = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &q))) {
            if (msg->msg != CURLMSG_DONE) continue;
            ix_job *j;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            ix_job_finish(r, j, m, msg->data.result);
            finished++;
        }
        ix_show(r, r->n_fails - walk_fails, 0);
        if (!finished) curl_multi_poll(m, NULL, 0, 50, NULL);  /* else refill the slots first */
    }
}

static void ix_report(ix_run *r, size_t walk_fails, size_t not_tried) {
    double el = clk_now_s() - r->t_start;
    ix_show(r, r->n_fails - walk_fails, 1);
    for (size_t i = 0; i < r->n_fails; i++)
        fprintf(stderr, "failed: %s: %s\n", r->fails[i].path, r->fails[i].why);
    printf("indexed %zu image%s (%zu cache hit%s) in %.1f s, %.1f images/s; %zu already in %s; "
           "%zu failed",
           r->n_ok, r->n_ok == 1 ? "" : "s", r->n_hits, r->n_hits == 1 ? "" : "s", el,
           el > 0 ? (double)r->n_ok / el : 0.0, r->n_skipped, r->o.out, r->n_fails);
    if (not_tried) printf("; %zu not attempted (rerun to resume)", not_tried);
    printf("\n");
}

static void ix_free(ix_run *r, ix_job *jobs, CURLM *m) {
    for (int i = 0; jobs && i < r->o.concurrency; i++) {
        if (jobs[i].path && !jobs[i].due) curl_multi_remove_handle(m, jobs[i].h);
        curl_easy_cleanup(jobs[i].h);
        free(jobs[i].body);
        free(jobs[i].resp.data);
    }
    free(jobs);
    if (m) curl_multi_cleanup(m);
    for (size_t i = 0; i < r->n_fails; i++) free(r->fails[i].path), free(r->fails[i].why);
    free(r->fails);
    ix_strs_free(&r->files);
    ix_strs_free(&r->done);
    curl_slist_free_all(r->headers);
    free(r->endpoint);
    if (r->out) fclose(r->out);
}

int cli_index(int argc, char **argv) {
    ix_run r = {0};
    int rc = ix_parse(argc, argv, &r.o);
    if (rc >= 0) return rc;
    char *dir = ix_strdup(r.o.dir);  /* "imgs/" and "imgs" give the same paths (resume) */
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/'; n--) dir[n - 1] = 0;
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "tinyvlm index: %s is not a folder\n", dir);
        free(dir);
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        fprintf(stderr, "tinyvlm index: libcurl cannot start\n");
        free(dir);
        return 1;
    }
    CURLM *m = NULL;
    ix_job *jobs = NULL;
    if (ix_setup(&r)) {
        fprintf(stderr, "tinyvlm index: %s\n", err_msg());
        rc = 1;
        goto out;
    }
    ix_walk(&r, dir, 0);
    qsort(r.files.v, r.files.n, sizeof *r.files.v, ix_cmp_str);
    size_t walk_fails = r.n_fails;
    for (size_t i = 0; i < r.files.n; i++) r.n_skipped += ix_is_done(&r, r.files.v[i]);
    r.n_todo = r.files.n - r.n_skipped;
    m = curl_multi_init();
    jobs = tv_xcalloc((size_t)r.o.concurrency, sizeof *jobs);
    for (int i = 0; i < r.o.concurrency; i++) TV_ASSERT((jobs[i].h = curl_easy_init()));
    r.tty = !r.o.quiet && isatty(STDERR_FILENO);
    r.t_start = r.t_shown = clk_now_s();
    void (*old_int)(int) = signal(SIGINT, ix_on_signal);
    void (*old_term)(int) = signal(SIGTERM, ix_on_signal);
    ix_loop(&r, jobs, m, walk_fails);
    signal(SIGINT, old_int);
    signal(SIGTERM, old_term);
    size_t attempted = r.n_ok + (r.n_fails - walk_fails);
    size_t not_tried = r.n_todo > attempted ? r.n_todo - attempted : 0;
    if (ix_interrupted) fprintf(stderr, "\ntinyvlm index: interrupted\n");
    ix_report(&r, walk_fails, not_tried);
    rc = r.n_fails || not_tried ? 1 : 0;
out:
    ix_free(&r, jobs, m);
    curl_global_cleanup();
    free(dir);
    return rc;
}
