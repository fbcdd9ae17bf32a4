#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR_MSG_MAX 1024

static _Thread_local char err_buf[ERR_MSG_MAX];

int err_set(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return code;
}

int err_wrap(int code, const char *fmt, ...) {
    char prefix[ERR_MSG_MAX], old[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    /* "prefix: old", cut at the buffer's end (the message is for people). */
    const char *tail = old[0] ? old : err_name(code);
    size_t np = strlen(prefix), nt = strlen(tail), cap = sizeof err_buf - 1;
    if (np > cap) np = cap;
    memcpy(err_buf, prefix, np);
    size_t off = np;
    for (const char *sep = ": "; *sep && off < cap; sep++) err_buf[off++] = *sep;
    if (nt > cap - off) nt = cap - off;
    memcpy(err_buf + off, tail, nt);
    err_buf[off + nt] = 0;
    return code;
}

const char *err_msg(void) { return err_buf; }

void err_clear(void) { err_buf[0] = 0; }

const char *err_name(int code) {
    switch (code) {
    case TV_OK: return "ok";
    case TV_EINVAL: return "invalid argument";
    case TV_EIO: return "I/O error";
    case TV_ENOMEM: return "out of memory";
    case TV_EFORMAT: return "malformed data";
    case TV_ELIMIT: return "over a limit";
    case TV_ENOTFOUND: return "not found";
    case TV_EUNSUPPORTED: return "unsupported";
    case TV_EINTERNAL: return "internal error";
    case TV_ETIMEOUT: return "timed out";
    case TV_EAGAIN: return "busy, try again";
    default: return "unknown error";
    }
}

_Noreturn void err_abort(const char *file, int line, const char *what) {
    fprintf(stderr, "tinyvlm: fatal: %s:%d: %s\n", file, line, what);
    fflush(stderr);
    abort();
}

void *err_xmalloc(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) err_abort(file, line, "out of memory");
    return p;
}

void *err_xcalloc(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) err_abort(file, line, "out of memory");
    return p;
}

void *err_xrealloc(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) err_abort(file, line, "out of memory");
    return q;
}
