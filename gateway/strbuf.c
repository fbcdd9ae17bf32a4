/* strbuf — see strbuf.h. */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static void sb_reserve(gw_sb *b, size_t extra) {
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    b->s = tv_xrealloc(b->s, cap);
    b->cap = cap;
}

void gw_sb_append(gw_sb *b, const char *s, size_t n) {
    sb_reserve(b, n);
    if (n) memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void gw_sb_printf(gw_sb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        gw_sb_append(b, small, (size_t)n);
        return;
    }
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *gw_sb_take(gw_sb *b) {
    char *s = b->s ? b->s : strcpy(tv_xmalloc(1), "");
    b->s = NULL, b->len = b->cap = 0;
    return s;
}

void gw_sb_free(gw_sb *b) {
    free(b->s);
    b->s = NULL, b->len = b->cap = 0;
}
