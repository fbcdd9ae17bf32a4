/* cache — embedding cache: in-memory LRU or Redis behind one interface (see cache.h).
 *
 * Both backends store the same serialized value: an 84-byte header (magic "TVEM", version,
 * dtype, rows, dim as little-endian u32, then the 64-char fingerprint NUL-padded) followed by the
 * rows*dim values. cache_get decodes and checks it the same way for both. */
#include "cache.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "err.h"
#include "hash.h"
#include "log.h"

#define VALUE_MAGIC "TVEM"
#define VALUE_VERSION 1
#define FP_LEN 64
#define KEY_MAX 512
#define VALUE_MAX (CACHE_VALUE_HEADER + MSG_MAX_EMB_BYTES)

_Static_assert(CACHE_VALUE_HEADER == 4 + 4 * 4 + FP_LEN, "value header layout");

/* ---- value encoding ------------------------------------------------------------------------- */

static size_t elem_size(uint32_t dtype) {
    return dtype == MSG_EMB_F16 ? 2 : dtype == MSG_EMB_F32 ? 4 : 0;
}

/* Bytes of data for [rows, dim] of dtype, or 0 if that is not a valid embedding within limits. */
static size_t data_bytes(uint32_t rows, uint32_t dim, uint32_t dtype) {
    size_t es = elem_size(dtype);
    if (!es || rows == 0 || dim == 0 || rows > MSG_MAX_EMB_BYTES || dim > MSG_MAX_EMB_BYTES)
        return 0;
    uint64_t n = (uint64_t)rows * dim * es;
    return n <= MSG_MAX_EMB_BYTES ? (size_t)n : 0;
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Serializes e into a malloc'd value of *len bytes. Returns NULL (message set) for a bad e. */
static uint8_t *value_encode(const cache_emb *e, size_t *len) {
    size_t n = e ? data_bytes(e->rows, e->dim, e->dtype) : 0;
    if (!n || n != e->len || !e->data) {
        err_set(TV_EINVAL, "cache_put: embedding shape, dtype and length disagree");
        return NULL;
    }
    size_t fl = strnlen(e->fingerprint, sizeof e->fingerprint);
    if (fl == 0 || fl > FP_LEN) {
        err_set(TV_EINVAL, "cache_put: embedding without a fingerprint");
        return NULL;
    }
    uint8_t *v = tv_xcalloc(1, CACHE_VALUE_HEADER + n);
    memcpy(v, VALUE_MAGIC, 4);
    put_u32(v + 4, VALUE_VERSION);
    put_u32(v + 8, e->dtype);
    put_u32(v + 12, e->rows);
    put_u32(v + 16, e->dim);
    memcpy(v + 20, e->fingerprint, fl);
    memcpy(v + CACHE_VALUE_HEADER, e->data, n);
    *len = CACHE_VALUE_HEADER + n;
    return v;
}

/* Checks a stored value against the expected fingerprint (NULL/"" = any) and fills out with a
 * copy of its data. Returns 0 or TV_ENOTFOUND with the reason. */
static int value_decode(const uint8_t *v, size_t len, const char *fingerprint, cache_emb *out) {
    if (len < CACHE_VALUE_HEADER || memcmp(v, VALUE_MAGIC, 4) != 0)
        return err_set(TV_ENOTFOUND, "cached value is not an embedding (%zu bytes)", len);
    if (get_u32(v + 4) != VALUE_VERSION)
        return err_set(TV_ENOTFOUND, "cached value has version %" PRIu32, get_u32(v + 4));
    uint32_t dtype = get_u32(v + 8), rows = get_u32(v + 12), dim = get_u32(v + 16);
    size_t n = data_bytes(rows, dim, dtype);
    if (!n || len != CACHE_VALUE_HEADER + n)
        return err_set(TV_ENOTFOUND, "cached value [%" PRIu32 ", %" PRIu32 "] dtype %" PRIu32
                       " has %zu bytes", rows, dim, dtype, len);
    char fp[FP_LEN + 1];
    memcpy(fp, v + 20, FP_LEN);
    fp[FP_LEN] = 0;
    if (fingerprint && *fingerprint && strcmp(fp, fingerprint) != 0)
        return err_set(TV_ENOTFOUND, "cached value is for model %.16s, not %.16s", fp, fingerprint);
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->dim = dim;
    out->dtype = dtype;
    memcpy(out->fingerprint, fp, sizeof fp);
    out->data = tv_xmalloc(n);
    memcpy(out->data, v + CACHE_VALUE_HEADER, n);
    out->len = n;
    return TV_OK;
}

void cache_emb_clear(cache_emb *e) {
    if (!e) return;
    free(e->data);
    memset(e, 0, sizeof *e);
}

void cache_key(char *buf, size_t cap, const char *fingerprint, const uint8_t sha256[32],
               const char *salt) {
    char hex[HASH_SHA256_HEX_LEN + 1];
    hash_to_hex(sha256, HASH_SHA256_LEN, hex);
    if (!salt || !*salt) {
        snprintf(buf, cap, "emb:%s:%s", fingerprint ? fingerprint : "", hex);
        return;
    }
    /* Only a hash of the salt goes into the key: keys may show up in logs and Redis dumps. */
    uint8_t d[HASH_SHA256_LEN];
    char tag[HASH_SHA256_HEX_LEN + 1];
    TV_ASSERT(hash_sha256(salt, strlen(salt), d) == TV_OK);
    hash_to_hex(d, HASH_SHA256_LEN, tag);
    tag[16] = 0;
    snprintf(buf, cap, "emb:%s:%s:%s", fingerprint ? fingerprint : "", tag, hex);
}

/* ---- the cache object ------------------------------------------------------------------------ */

typedef struct mem_entry {
    struct mem_entry *hnext;          /* hash chain */
    struct mem_entry *prev, *next;    /* LRU list: head = most recent */
    uint64_t hash;
    char *key;
    uint8_t *value;
    size_t len;
} mem_entry;

typedef struct {
    mem_entry **buckets;
    size_t n_buckets;
    mem_entry *head, *tail;
    size_t budget;
} mem_backend;

typedef struct {
    char host[256];
    int port, db, ttl_s, timeout_ms;
    char password[256];
    redisContext *ctx;    /* NULL while down */
    double last_attempt;  /* monotonic seconds of the last connect attempt */
    int logged_down;      /* a "down" warning was logged and no "back" since */
} redis_backend;

struct cache {
    pthread_mutex_t lock;
    int is_redis;
    mem_backend mem;
    redis_backend redis;
    cache_stats st;
};

static cache *cache_alloc(int is_redis) {
    cache *c = tv_xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    c->is_redis = is_redis;
    c->st.kind = is_redis ? "redis" : "memory";
    return c;
}

/* ---- memory backend -------------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

int cache_mem_new(size_t budget_bytes, cache **out) {
    cache *c = cache_alloc(0);
    c->mem.n_buckets = 64;
    c->mem.buckets = tv_xcalloc(c->mem.n_buckets, sizeof *c->mem.buckets);
    c->mem.budget = budget_bytes;
    c->st.up = 1;
    *out = c;
    return TV_OK;
}

static size_t entry_bytes(const mem_entry *e) { return e->len + strlen(e->key); }

static mem_entry *mem_find(mem_backend *m, const char *key, uint64_t h) {
    for (mem_entry *e = m->buckets[h % m->n_buckets]; e; e = e->hnext)
        if (e->hash == h && strcmp(e->key, key) == 0) return e;
    return NULL;
}

static void lru_unlink(mem_backend *m, mem_entry *e) {
    if (e->prev) e->prev->next = e->next;
    else m->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else m->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(mem_backend *m, mem_entry *e) {
    e->prev = NULL;
    e->next = m->head;
    if (m->head) m->head->prev = e;
    m->head = e;
    if (!m->tail) m->tail = e;
}

/* Removes e from the table and the list and frees it. */
static void mem_remove(cache *c, mem_entry *e) {
    mem_backend *m = &c->mem;
    mem_entry **pp = &m->buckets[e->hash % m->n_buckets];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(m, e);
    c->st.bytes -= entry_bytes(e);
    c->st.entries--;
    free(e->key);
    free(e->value);
    free(e);
}

/* Doubles the bucket array when the table gets crowded (keeps chains short). */
static void mem_grow(mem_backend *m) {
    size_t nb = m->n_buckets * 2;
    mem_entry **b = tv_xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < m->n_buckets; i++) {
        for (mem_entry *e = m->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash % nb];
            b[e->hash % nb] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = nb;
}

/* Takes ownership of value. */
static int mem_put(cache *c, const char *key, uint8_t *value, size_t len) {
    mem_backend *m = &c->mem;
    uint64_t h = fnv1a(key);
    mem_entry *old = mem_find(m, key, h);
    if (old) mem_remove(c, old);
    size_t need = len + strlen(key);
    if (need > m->budget) {
        free(value);
        return err_set(TV_EIO, "embedding of %zu bytes does not fit the %zu-byte memory cache",
                       need, m->budget);
    }
    while (m->tail && c->st.bytes + need > m->budget) {
        mem_remove(c, m->tail);
        c->st.evictions++;
    }
    if (c->st.entries + 1 > m->n_buckets) mem_grow(m);
    mem_entry *e = tv_xcalloc(1, sizeof *e);
    e->hash = h;
    e->key = strdup(key);
    TV_ASSERT(e->key);
    e->value = value;
    e->len = len;
    e->hnext = m->buckets[h % m->n_buckets];
    m->buckets[h % m->n_buckets] = e;
    lru_push_front(m, e);
    c->st.bytes += need;
    c->st.entries++;
    return TV_OK;
}

/* Looks key up; a hit becomes the most recently used. */
static mem_entry *mem_get(cache *c, const char *key) {
    mem_entry *e = mem_find(&c->mem, key, fnv1a(key));
    if (e) {
        lru_unlink(&c->mem, e);
        lru_push_front(&c->mem, e);
    }
    return e;
}

static void mem_free_all(cache *c) {
    for (mem_entry *e = c->mem.head, *next; e; e = next) {
        next = e->next;
        free(e->key);
        free(e->value);
        free(e);
    }
    free(c->mem.buckets);
}

/* ---- Redis backend --------------------------------------------------------------------------- */

/* Parses "redis://[:password@]host[:port][/db]" or "host:port". Returns 0 or TV_EINVAL. */
static int parse_url(const char *url, redis_backend *r) {
    const char *p = url;
    if (!p || !*p) return err_set(TV_EINVAL, "empty Redis URL");
    if (strncmp(p, "redis://", 8) == 0) p += 8;
    const char *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if ((size_t)(at - pw) >= sizeof r->password) return err_set(TV_EINVAL, "Redis password too long");
        memcpy(r->password, pw, (size_t)(at - pw));
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof r->host) return err_set(TV_EINVAL, "bad Redis URL \"%s\": no host", url);
    memcpy(r->host, p, hl);
    r->host[hl] = 0;
    p += hl;
    r->port = 6379;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535)
            return err_set(TV_EINVAL, "bad Redis URL \"%s\": port", url);
        r->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 1000000)
            return err_set(TV_EINVAL, "bad Redis URL \"%s\": database", url);
        r->db = (int)db;
        p = end;
    } else if (*p == '/') {
        p++;
    }
    if (*p) return err_set(TV_EINVAL, "bad Redis URL \"%s\": trailing \"%s\"", url, p);
    return TV_OK;
}

/* hiredis writes with write(2): writing to a Redis that went away raises SIGPIPE, which would
 * kill the process. Block it on this thread around each Redis call and swallow one we caused
 * (a write-raised SIGPIPE is directed at the writing thread), then restore the mask. */
typedef struct {
    sigset_t old;
    int pending_before;
} pipe_guard;

static void pipe_block(pipe_guard *g) {
    sigset_t set, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pend);
    g->pending_before = sigismember(&pend, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void pipe_unblock(pipe_guard *g) {
    sigset_t set, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pend);
    if (!g->pending_before && sigismember(&pend, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* Marks Redis down: drops the context, logs once per state change. */
static int redis_down(cache *c, const char *what) {
    redis_backend *r = &c->redis;
    char why[160];
    snprintf(why, sizeof why, "%s", r->ctx && r->ctx->err ? r->ctx->errstr : what);
    if (r->ctx) redisFree(r->ctx);
    r->ctx = NULL;
    c->st.up = 0;
    if (!r->logged_down) {
        log_warn("cache", "Redis %s:%d unavailable (%s): embeddings travel inline until it is back",
                 r->host, r->port, why);
        r->logged_down = 1;
    }
    return err_set(TV_EIO, "Redis %s:%d unavailable: %s", r->host, r->port, why);
}

/* One command; NULL on a connection-level failure (the context is then dropped). */
static redisReply *redis_cmd(cache *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c->redis.ctx, fmt, ap);
    va_end(ap);
    if (!rep) redis_down(c, "no reply");
    return rep;
}

/* Makes sure a connection exists, trying at most once per second. Returns 0 or TV_EIO. */
static int redis_ensure(cache *c) {
    redis_backend *r = &c->redis;
    if (r->ctx) return TV_OK;
    double now = clk_now_s();
    if (now - r->last_attempt < 1.0)
        return err_set(TV_EIO, "Redis %s:%d unavailable (next attempt within a second)", r->host,
                       r->port);
    r->last_attempt = now;
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    r->ctx = redisConnectWithTimeout(r->host, r->port, tv);
    if (!r->ctx || r->ctx->err) return redis_down(c, r->ctx ? r->ctx->errstr : "cannot allocate");
    if (redisSetTimeout(r->ctx, tv) != REDIS_OK) return redis_down(c, "cannot set timeout");
    const char *fail = NULL;
    if (r->password[0]) {
        redisReply *rep = redis_cmd(c, "AUTH %s", r->password);
        if (!rep) return TV_EIO;
        if (rep->type == REDIS_REPLY_ERROR) fail = "AUTH refused";
        freeReplyObject(rep);
    }
    if (!fail && r->db) {
        redisReply *rep = redis_cmd(c, "SELECT %d", r->db);
        if (!rep) return TV_EIO;
        if (rep->type == REDIS_REPLY_ERROR) fail = "SELECT refused";
        freeReplyObject(rep);
    }
    if (fail) return redis_down(c, fail);
    c->st.up = 1;
    if (r->logged_down) log_info("cache", "Redis %s:%d is back", r->host, r->port);
    r->logged_down = 0;
    return TV_OK;
}

/* A reply of an unexpected type (e.g. an error reply): the connection stays. */
static int redis_bad_reply(cache *c, redisReply *rep, const char *cmd) {
    int rc = err_set(TV_EIO, "Redis %s: %s", cmd,
                     rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    (void)c;
    return rc;
}

static int redis_put(cache *c, const char *key, const uint8_t *v, size_t len) {
    int rc = redis_ensure(c);
    if (rc) return rc;
    redisReply *rep = c->redis.ttl_s > 0
                          ? redis_cmd(c, "SET %s %b EX %d", key, v, len, c->redis.ttl_s)
                          : redis_cmd(c, "SET %s %b", key, v, len);
    if (!rep) return TV_EIO;
    if (rep->type != REDIS_REPLY_STATUS) return redis_bad_reply(c, rep, "SET");
    freeReplyObject(rep);
    return TV_OK;
}

/* GETRANGE bounds what Redis may send us; a missing key reads as "" (a miss either way). */
static int redis_get(cache *c, const char *key, const char *fingerprint, cache_emb *out) {
    int rc = redis_ensure(c);
    if (rc) return rc;
    redisReply *rep = redis_cmd(c, "GETRANGE %s 0 %d", key, (int)VALUE_MAX);
    if (!rep) return TV_EIO;
    if (rep->type != REDIS_REPLY_STRING && rep->type != REDIS_REPLY_NIL)
        return redis_bad_reply(c, rep, "GETRANGE");
    if (rep->type == REDIS_REPLY_NIL || rep->len == 0) {
        freeReplyObject(rep);
        return err_set(TV_ENOTFOUND, "%s: not cached", key);
    }
    rc = value_decode((const uint8_t *)rep->str, rep->len, fingerprint, out);
    if (rc) c->st.errors++;
    freeReplyObject(rep);
    return rc;
}

static int redis_exists(cache *c, const char *key) {
    int rc = redis_ensure(c);
    if (rc) return rc;
    redisReply *rep = redis_cmd(c, "EXISTS %s", key);
    if (!rep) return TV_EIO;
    if (rep->type != REDIS_REPLY_INTEGER) return redis_bad_reply(c, rep, "EXISTS");
    int n = rep->integer > 0;
    freeReplyObject(rep);
    return n;
}

int cache_redis_new(const char *url, int ttl_s, int timeout_ms, cache **out) {
    *out = NULL;
    redis_backend r;
    memset(&r, 0, sizeof r);
    int rc = parse_url(url, &r);
    if (rc) return rc;
    if (ttl_s < 0 || timeout_ms <= 0)
        return err_set(TV_EINVAL, "Redis cache: ttl %d s, timeout %d ms", ttl_s, timeout_ms);
    r.ttl_s = ttl_s;
    r.timeout_ms = timeout_ms;
    r.last_attempt = -1e9;
    cache *c = cache_alloc(1);
    c->redis = r;
    /* Try once now, so a Redis that is not there is reported at start-up (not an error: the
     * cache connects later by itself). */
    pipe_guard g;
    pipe_block(&g);
    if (redis_ensure(c) != TV_OK) err_clear();
    pipe_unblock(&g);
    *out = c;
    return TV_OK;
}

/* ---- the interface --------------------------------------------------------------------------- */

void cache_free(cache *c) {
    if (!c) return;
    if (c->is_redis) {
        if (c->redis.ctx) redisFree(c->redis.ctx);
    } else {
        mem_free_all(c);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static int key_ok(const char *key) {
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > KEY_MAX) return err_set(TV_EINVAL, "cache key of %zu bytes", n);
    return TV_OK;
}

int cache_put(cache *c, const char *key, const cache_emb *e) {
    if (!c) return err_set(TV_EINVAL, "cache_put: no cache");
    int rc = key_ok(key);
    if (rc) return rc;
    size_t len;
    uint8_t *v = value_encode(e, &len);
    if (!v) return TV_EINVAL;
    pthread_mutex_lock(&c->lock);
    if (c->is_redis) {
        pipe_guard g;
        pipe_block(&g);
        rc = redis_put(c, key, v, len);
        pipe_unblock(&g);
        free(v);
    } else {
        rc = mem_put(c, key, v, len);
    }
    if (rc) c->st.errors++;
    else c->st.puts++;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cache_get(cache *c, const char *key, const char *fingerprint, cache_emb *out) {
    memset(out, 0, sizeof *out);
    if (!c) return err_set(TV_EINVAL, "cache_get: no cache");
    int rc = key_ok(key);
    if (rc) return rc;
    pthread_mutex_lock(&c->lock);
    if (c->is_redis) {
        pipe_guard g;
        pipe_block(&g);
        rc = redis_get(c, key, fingerprint, out);
        pipe_unblock(&g);
    } else {
        mem_entry *e = mem_get(c, key);
        rc = e ? value_decode(e->value, e->len, fingerprint, out)
               : err_set(TV_ENOTFOUND, "%s: not cached", key);
        if (e && rc) c->st.errors++; /* present but not what the caller's model expects */
    }
    if (rc == TV_OK) c->st.hits++;
    else if (rc == TV_ENOTFOUND) c->st.misses++;
    else c->st.errors++;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cache_exists(cache *c, const char *key) {
    if (!c) return err_set(TV_EINVAL, "cache_exists: no cache");
    int rc = key_ok(key);
    if (rc) return rc;
    pthread_mutex_lock(&c->lock);
    if (c->is_redis) {
        pipe_guard g;
        pipe_block(&g);
        rc = redis_exists(c, key);
        pipe_unblock(&g);
        if (rc < 0) c->st.errors++;
    } else {
        rc = mem_find(&c->mem, key, fnv1a(key)) != NULL;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void cache_get_stats(cache *c, cache_stats *s) {
    if (!c) {
        memset(s, 0, sizeof *s);
        return;
    }
    pthread_mutex_lock(&c->lock);
    *s = c->st;
    pthread_mutex_unlock(&c->lock);
}
