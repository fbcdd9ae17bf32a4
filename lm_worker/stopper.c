#define _GNU_SOURCE /* memmem */
#include "stopper.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

struct stopper {
    char **strings;
    size_t *lens;
    int n;
    size_t max_len;
    char *buf;        /* held-back text followed by the new piece */
    size_t len, cap;
    char *out;        /* what the last call emitted */
    size_t out_cap;
    int stopped;
};

int stopper_new(const char *const *strings, int n, stopper **out) {
    *out = NULL;
    if (n < 0) return err_set(TV_EINVAL, "stopper: negative count");
    for (int i = 0; i < n; i++)
        if (!strings[i] || !strings[i][0]) return err_set(TV_EINVAL, "stopper: empty stop string");
    stopper *s = tv_xcalloc(1, sizeof *s);
    s->n = n;
    s->strings = tv_xcalloc((size_t)n + 1, sizeof(char *));
    s->lens = tv_xcalloc((size_t)n + 1, sizeof(size_t));
    for (int i = 0; i < n; i++) {
        s->lens[i] = strlen(strings[i]);
        s->strings[i] = tv_xmalloc(s->lens[i] + 1);
        memcpy(s->strings[i], strings[i], s->lens[i] + 1);
        if (s->lens[i] > s->max_len) s->max_len = s->lens[i];
    }
    *out = s;
    return TV_OK;
}

void stopper_free(stopper *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->strings[i]);
    free(s->strings), free(s->lens), free(s->buf), free(s->out);
    free(s);
}

void stopper_reset(stopper *s) {
    s->len = 0;
    s->stopped = 0;
}

/* The pointer handed out is never NULL, even before the first allocation. */
static const char *out_ptr(const stopper *s) { return s->out ? s->out : ""; }

static void emit(stopper *s, size_t n, const char **out, size_t *out_len) {
    *out = out_ptr(s);
    *out_len = n;
    if (n == 0) return; /* buffers may still be NULL */
    if (n > s->out_cap) {
        s->out_cap = n * 2;
        s->out = tv_xrealloc(s->out, s->out_cap);
    }
    memcpy(s->out, s->buf, n);
    memmove(s->buf, s->buf + n, s->len - n);
    s->len -= n;
    *out = s->out;
}

/* Earliest position where a stop string starts inside buf, or len if none. */
static size_t first_stop(const stopper *s) {
    size_t best = s->len;
    if (s->len == 0) return 0; /* buf may still be NULL: memmem(NULL, 0, ...) is undefined */
    for (int i = 0; i < s->n; i++) {
        const char *hit = memmem(s->buf, s->len, s->strings[i], s->lens[i]);
        if (hit && (size_t)(hit - s->buf) < best) best = (size_t)(hit - s->buf);
    }
    return best;
}

/* Length of the longest tail of buf that is a proper prefix of some stop string: that much
 * must be held back because the next piece may complete it. */
static size_t held_tail(const stopper *s) {
    size_t longest = 0;
    for (int i = 0; i < s->n; i++)
        for (size_t k = s->lens[i] - 1; k > longest; k--)
            if (k <= s->len && memcmp(s->buf + s->len - k, s->strings[i], k) == 0) {
                longest = k;
                break;
            }
    return longest;
}

int stopper_push(stopper *s, const char *text, size_t len, const char **out, size_t *out_len) {
    *out = out_ptr(s);
    *out_len = 0;
    if (s->stopped) return 1;
    if (s->len + len > s->cap) {
        s->cap = (s->len + len) * 2 + 16;
        s->buf = tv_xrealloc(s->buf, s->cap);
    }
    if (len) memcpy(s->buf + s->len, text, len);
    s->len += len;
    size_t stop_at = first_stop(s);
    if (stop_at < s->len) {
        emit(s, stop_at, out, out_len);
        s->len = 0;
        s->stopped = 1;
        return 1;
    }
    emit(s, s->len - held_tail(s), out, out_len);
    return 0;
}

void stopper_flush(stopper *s, const char **out, size_t *out_len) {
    *out = out_ptr(s);
    *out_len = 0;
    if (!s->stopped) emit(s, s->len, out, out_len);
}
