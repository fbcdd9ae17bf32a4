/* strbuf — a growing NUL-terminated string for building HTTP bodies and metrics text.
 * Allocation failures abort (sizes come from our own output, not from input). */
#ifndef TV_GW_STRBUF_H
#define TV_GW_STRBUF_H

#include <stddef.h>

typedef struct {
    char *s;     /* always NUL-terminated once anything was appended; NULL before */
    size_t len, cap;
} gw_sb;

/* Appends printf-style text. */
void gw_sb_printf(gw_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends n bytes. */
void gw_sb_append(gw_sb *b, const char *s, size_t n);
/* Hands the string over (malloc'd, "" when empty) and resets b. The caller frees. */
char *gw_sb_take(gw_sb *b);
/* Frees the string and resets b. */
void gw_sb_free(gw_sb *b);

#endif
