/* auth — see auth.h. */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mapfile.h"

#define AUTH_MAX_KEY 256
#define AUTH_MAX_TOKENS 5

struct gw_tenant {
    char *name, *salt;
    int max_concurrent;
    double rpm;
    int in_flight;      /* guarded by gw_auth.mu */
    double bucket;      /* tokens left */
    double last_s;      /* last refill time; < 0 = never */
};

typedef struct {
    char *key;
    size_t len;
    gw_tenant *tenant;
} auth_key;

struct gw_auth {
    pthread_mutex_t mu;
    int required;
    auth_key *keys;
    int n_keys;
    gw_tenant **tenants;
    int n_tenants;
};

static gw_auth *auth_alloc(void) {
    gw_auth *a = tv_xcalloc(1, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

static gw_tenant *auth_tenant(gw_auth *a, const char *name) {
    for (int i = 0; i < a->n_tenants; i++)
        if (!strcmp(a->tenants[i]->name, name)) return a->tenants[i];
    gw_tenant *t = tv_xcalloc(1, sizeof *t);
    t->name = strdup(name);
    TV_ASSERT(t->name);
    t->last_s = -1;
    a->tenants = tv_xrealloc(a->tenants, (size_t)(a->n_tenants + 1) * sizeof *a->tenants);
    a->tenants[a->n_tenants++] = t;
    return t;
}

gw_auth *gw_auth_open(void) {
    gw_auth *a = auth_alloc();
    auth_tenant(a, "default");
    return a;
}

void gw_auth_free(gw_auth *a) {
    if (!a) return;
    for (int i = 0; i < a->n_keys; i++) free(a->keys[i].key);
    for (int i = 0; i < a->n_tenants; i++) {
        free(a->tenants[i]->name), free(a->tenants[i]->salt);
        free(a->tenants[i]);
    }
    free(a->keys), free(a->tenants);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* A limit field: "-" or a non-negative number. Returns 0 or -1. */
static int auth_limit(const char *s, double *out) {
    if (!strcmp(s, "-")) {
        *out = 0;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !(v >= 0) || v > 1e9) return -1;
    *out = v;
    return 0;
}

/* Applies one non-empty, comment-free line split into tok[n]. */
static int auth_line(gw_auth *a, char **tok, int n, const char *path, int lineno) {
    if (n < 2) return err_set(TV_EFORMAT, "%s:%d: expected \"KEY TENANT [MAX_CONCURRENT] "
                                          "[REQUESTS_PER_MINUTE] [SALT]\"", path, lineno);
    if (n > AUTH_MAX_TOKENS) return err_set(TV_EFORMAT, "%s:%d: too many fields", path, lineno);
    if (strlen(tok[0]) > AUTH_MAX_KEY)
        return err_set(TV_EFORMAT, "%s:%d: key longer than %d bytes", path, lineno, AUTH_MAX_KEY);
    for (int i = 0; i < a->n_keys; i++)
        if (!strcmp(a->keys[i].key, tok[0]))
            return err_set(TV_EFORMAT, "%s:%d: key listed twice", path, lineno);
    double conc = 0, rpm = 0;
    if ((n > 2 && auth_limit(tok[2], &conc)) || (n > 3 && auth_limit(tok[3], &rpm)))
        return err_set(TV_EFORMAT, "%s:%d: limits must be numbers >= 0 or \"-\"", path, lineno);
    gw_tenant *t = auth_tenant(a, tok[1]);
    if (n > 2 && !t->max_concurrent) t->max_concurrent = (int)conc;
    if (n > 3 && !t->rpm) t->rpm = rpm;
    if (n > 4 && strcmp(tok[4], "-") && !t->salt) {
        t->salt = strdup(tok[4]);
        TV_ASSERT(t->salt);
    }
    a->keys = tv_xrealloc(a->keys, (size_t)(a->n_keys + 1) * sizeof *a->keys);
    auth_key *k = &a->keys[a->n_keys++];
    k->key = strdup(tok[0]);
    TV_ASSERT(k->key);
    k->len = strlen(k->key);
    k->tenant = t;
    return TV_OK;
}

int gw_auth_parse(const char *text, const char *path, gw_auth **out) {
    *out = NULL;
    gw_auth *a = auth_alloc();
    a->required = 1;
    char *copy = strdup(text ? text : "");
    TV_ASSERT(copy);
    int rc = TV_OK, lineno = 0;
    for (char *line = copy, *next; line && rc == TV_OK; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *tok[AUTH_MAX_TOKENS + 1];
        int n = 0;
        for (char *p = strtok(line, " \t\r"); p; p = strtok(NULL, " \t\r"))
            if (n <= AUTH_MAX_TOKENS) tok[n++] = p;
        if (n) rc = auth_line(a, tok, n, path, lineno);
    }
    free(copy);
    if (rc == TV_OK && a->n_keys == 0) rc = err_set(TV_EFORMAT, "%s: no keys in the file", path);
    if (rc) {
        gw_auth_free(a);
        return rc;
    }
    *out = a;
    return TV_OK;
}

int gw_auth_load(const char *path, gw_auth **out) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = mf_read_all(path, 1u << 20, &text, &len);
    if (rc) return err_wrap(rc, "API key file");
    if (strlen(text) != len) {
        free(text);
        return err_set(TV_EFORMAT, "%s: NUL byte in the API key file", path);
    }
    rc = gw_auth_parse(text, path, out);
    free(text);
    return rc;
}

int gw_auth_required(const gw_auth *a) { return a->required; }
int gw_auth_n_keys(const gw_auth *a) { return a->n_keys; }
int gw_auth_n_tenants(const gw_auth *a) { return a->n_tenants; }

/* Compares without an early exit, so timing does not reveal how many bytes matched. */
static int auth_equal(const char *a, size_t alen, const char *b, size_t blen) {
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++) diff |= (unsigned char)(a[i % (alen ? alen : 1)] ^ b[i]);
    return diff == 0 && alen == blen;
}

int gw_auth_check(gw_auth *a, const char *authorization, gw_tenant **t) {
    *t = NULL;
    if (!a->required) {
        *t = a->tenants[0];
        return TV_OK;
    }
    if (!authorization || !*authorization)
        return err_set(TV_ENOTFOUND, "missing API key: send \"Authorization: Bearer KEY\"");
    if (strncasecmp(authorization, "Bearer ", 7) != 0)
        return err_set(TV_ENOTFOUND, "invalid Authorization header: expected \"Bearer KEY\"");
    const char *key = authorization + 7;
    while (*key == ' ') key++;
    size_t len = strlen(key);
    while (len && isspace((unsigned char)key[len - 1])) len--;
    gw_tenant *found = NULL;
    for (int i = 0; i < a->n_keys; i++)
        if (auth_equal(key, len, a->keys[i].key, a->keys[i].len)) found = a->keys[i].tenant;
    if (!found) return err_set(TV_ENOTFOUND, "invalid API key");
    *t = found;
    return TV_OK;
}

int gw_auth_acquire(gw_auth *a, gw_tenant *t, double now_s) {
    int rc = TV_OK;
    pthread_mutex_lock(&a->mu);
    if (t->rpm > 0) {
        double cap = t->rpm; /* one minute's worth */
        if (t->last_s < 0) t->bucket = cap;
        else if (now_s > t->last_s) t->bucket += (now_s - t->last_s) * t->rpm / 60.0;
        if (t->bucket > cap) t->bucket = cap;
        t->last_s = now_s;
    }
    if (t->max_concurrent > 0 && t->in_flight >= t->max_concurrent)
        rc = err_set(TV_EAGAIN, "tenant '%s' has %d requests in flight (its limit)", t->name,
                     t->in_flight);
    else if (t->rpm > 0 && t->bucket < 1)
        rc = err_set(TV_EAGAIN, "tenant '%s' is over its rate limit of %g requests per minute",
                     t->name, t->rpm);
    if (rc == TV_OK) {
        t->in_flight++;
        if (t->rpm > 0) t->bucket -= 1;
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

void gw_auth_release(gw_auth *a, gw_tenant *t) {
    pthread_mutex_lock(&a->mu);
    if (t->in_flight > 0) t->in_flight--;
    pthread_mutex_unlock(&a->mu);
}

void gw_auth_info(const gw_tenant *t, gw_tenant_info *out) {
    out->name = t->name;
    out->salt = t->salt;
    out->max_concurrent = t->max_concurrent;
    out->rpm = t->rpm;
}
