/* auth — API keys, tenants and their limits.
 *
 * The key file has one key per line: "KEY TENANT [MAX_CONCURRENT] [REQUESTS_PER_MINUTE] [SALT]"
 * separated by spaces or tabs; '#' starts a comment; 0 or "-" for a limit means unlimited; SALT
 * (or "-") gives the tenant a private embedding-cache namespace. Several keys may name the same
 * tenant: they share its limits (the first line that names a limit or salt sets it).
 * Requests carry "Authorization: Bearer KEY". Without a key file every request belongs to the
 * tenant "default" with no limits.
 *
 * Limits: MAX_CONCURRENT requests in flight per tenant; REQUESTS_PER_MINUTE as a token bucket
 * (capacity = one minute's worth, refilled continuously), so short bursts pass.
 *
 * Threads: gw_auth_check / _acquire / _release are safe from several threads. */
#ifndef TV_GW_AUTH_H
#define TV_GW_AUTH_H

typedef struct gw_auth gw_auth;

typedef struct {
    const char *name;     /* tenant name */
    const char *salt;     /* NULL = shares the cache with everybody */
    int max_concurrent;   /* 0 = unlimited */
    double rpm;           /* 0 = unlimited */
} gw_tenant_info;

typedef struct gw_tenant gw_tenant;

/* Parses key-file text (path is only for messages). Returns 0 and *out, or TV_EFORMAT naming
 * the line. */
int gw_auth_parse(const char *text, const char *path, gw_auth **out);
/* Reads and parses the file at path. TV_EIO when it cannot be read. */
int gw_auth_load(const char *path, gw_auth **out);
/* The open mode: one tenant "default", no limits, no keys needed. */
gw_auth *gw_auth_open(void);
void gw_auth_free(gw_auth *a);

/* 1 if keys are required (a key file was loaded). */
int gw_auth_required(const gw_auth *a);
/* Number of keys and of tenants loaded. */
int gw_auth_n_keys(const gw_auth *a);
int gw_auth_n_tenants(const gw_auth *a);

/* Finds the tenant for an Authorization header value (NULL when the header is absent).
 * Returns 0 and *t, or TV_ENOTFOUND with a message ("missing API key" / "invalid API key").
 * The key comparison takes the same time whichever key (if any) matches. */
int gw_auth_check(gw_auth *a, const char *authorization, gw_tenant **t);

/* Reserves one request slot for t at time now_s (monotonic seconds). Returns 0, or TV_EAGAIN
 * with a message saying which limit was hit. Each success is paired with one gw_auth_release. */
int gw_auth_acquire(gw_auth *a, gw_tenant *t, double now_s);
void gw_auth_release(gw_auth *a, gw_tenant *t);

/* The tenant's settings (pointers valid while a lives). */
void gw_auth_info(const gw_tenant *t, gw_tenant_info *out);

#endif
