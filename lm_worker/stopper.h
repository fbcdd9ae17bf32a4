/* stopper — stop strings over a token stream. Text arrives in pieces (one decoded token at a
 * time); the stopper passes on what can no longer be the start of a stop string and holds back
 * the rest, so a client never sees "##" of a "###" that ends the answer. When a stop string
 * appears, the text is cut right before it (TinyGPT-V cuts at "###", "Assistant:", "[/INST]").
 * One stopper per sequence; not thread-safe. */
#ifndef TV_STOPPER_H
#define TV_STOPPER_H

#include <stddef.h>

typedef struct stopper stopper;

/* Copies the n stop strings (each non-empty). Returns 0 and *out (free with stopper_free), or
 * TV_EINVAL. n may be 0 (then everything passes straight through). */
int stopper_new(const char *const *strings, int n, stopper **out);

/* NULL is a no-op. */
void stopper_free(stopper *s);

/* Appends len bytes. Sets *out and *out_len to the text that is now safe to emit (valid until the
 * next call, never NULL; not NUL-terminated) and returns 1 if a stop string was found (the emitted text ends
 * right before it; later pushes emit nothing), else 0. */
int stopper_push(stopper *s, const char *text, size_t len, const char **out, size_t *out_len);

/* End of generation: emits whatever was held back (nothing after a stop). Same out convention. */
void stopper_flush(stopper *s, const char **out, size_t *out_len);

/* Forgets all text and the stopped state, keeping the strings (reuse for a new sequence). */
void stopper_reset(stopper *s);

#endif
