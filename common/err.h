/* err — status codes, the per-thread error message, and the one assert macro.
 *
 * Convention for the whole project: a function that can fail returns int, 0 (TV_OK) on success
 * and a negative TV_E* code on failure; before returning the failure it records a human-readable
 * message with err_set(), which the caller may print with err_msg(). exit() happens only in main.
 * Programmer errors and out-of-memory abort with file:line through TV_ASSERT / tv_xmalloc. */
#ifndef TV_ERR_H
#define TV_ERR_H

#include <stddef.h>

enum {
    TV_OK = 0,
    TV_EINVAL = -1,       /* bad argument or bad input value */
    TV_EIO = -2,          /* open/read/write/mmap failed */
    TV_ENOMEM = -3,       /* allocation refused (recoverable: a size from input was too big) */
    TV_EFORMAT = -4,      /* malformed file or data */
    TV_ELIMIT = -5,       /* input exceeds a configured limit (size, pixels, tokens) */
    TV_ENOTFOUND = -6,    /* a named thing (tensor, key, file) does not exist */
    TV_EUNSUPPORTED = -7, /* well-formed but not something we handle */
    TV_EINTERNAL = -8,    /* a bug or an external library failed unexpectedly */
    TV_ETIMEOUT = -9,     /* nothing arrived within the time allowed */
    TV_EAGAIN = -10,      /* busy or full right now; retrying later may work */
};

/* Records "msg" (printf-style) as this thread's last error and returns code, so callers write
 * `return err_set(TV_EFORMAT, "bad header in %s", path);`. The message is truncated at 1 KiB. */
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to this thread's message (adds context on the way up); returns code. */
int err_wrap(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* This thread's last message; "" if none. Points to thread-local storage: valid until the next
 * err_set/err_wrap/err_clear on this thread. Never NULL, never to be freed. */
const char *err_msg(void);

/* Static name of a TV_E* code ("invalid argument", ...). Never NULL. */
const char *err_name(int code);

/* Forgets this thread's message. */
void err_clear(void);

/* Aborts with file:line and the failed condition. For programmer errors only; never for input. */
#define TV_ASSERT(cond)                                                                  \
    do {                                                                                 \
        if (!(cond)) err_abort(__FILE__, __LINE__, #cond);                               \
    } while (0)

_Noreturn void err_abort(const char *file, int line, const char *what);

/* malloc/calloc/realloc that abort with file:line on failure (sizes that come from our own
 * configuration, not from untrusted input). Free with free(). */
#define tv_xmalloc(n) err_xmalloc((n), __FILE__, __LINE__)
#define tv_xcalloc(n, s) err_xcalloc((n), (s), __FILE__, __LINE__)
#define tv_xrealloc(p, n) err_xrealloc((p), (n), __FILE__, __LINE__)
void *err_xmalloc(size_t n, const char *file, int line);
void *err_xcalloc(size_t n, size_t size, const char *file, int line);
void *err_xrealloc(void *p, size_t n, const char *file, int line);

#endif
