/* tokenizer — Hugging Face byte-level BPE (GPT-2 / CodeGen / Phi-2 style), encode and decode.
 *
 * Reproduces what HF `tokenizers` does with such a tokenizer.json, id for id:
 *   1. added tokens are split out first (leftmost-longest; first those with normalized=false,
 *      then in the remaining text those with normalized=true; single_word/lstrip/rstrip honoured
 *      as HF does), special or not;
 *   2. the rest is cut with the GPT-2 regex
 *      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (PCRE2, UTF + UCP, JIT when available; \s is Unicode White_Space, as in Oniguruma);
 *   3. each piece's bytes go through BPE, merging the lowest-ranked adjacent pair first.
 * No BOS/EOS is added. Decoding maps each token back to bytes (GPT-2's byte table; a token with
 * a character outside that table, e.g. an added "   " token, is taken verbatim), joins them and
 * replaces invalid UTF-8 with U+FFFD exactly like Rust's String::from_utf8_lossy, as HF does.
 *
 * Supported tokenizer.json: model.type "BPE" (no byte_fallback, no dropout, no subword prefix or
 * suffix), normalizer null, pre_tokenizer ByteLevel, decoder ByteLevel,
 * post_processor null or ByteLevel. Anything else fails with TV_EUNSUPPORTED.
 *
 * Threads: any number of threads may encode and decode with one tokenizer at once. After loading
 * only its BPE cache of short words changes, and that is sharded behind mutexes; all other
 * scratch memory is per call. A tok_stream belongs to one thread at a time.
 * Limits: ids below 2^21; an rstrip added token swallows the whitespace after it even where HF
 * would also match another added token inside that whitespace (HF then emits overlapping text).
 * Errors: every function returning int gives 0 or a negative TV_E* code with err_msg() set. */
#ifndef TV_TOKENIZER_H
#define TV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tokenizer tokenizer;

/* Flags for tok_decode and tok_stream_new. */
enum { TOK_SKIP_SPECIAL = 1 }; /* drop special added tokens (like HF skip_special_tokens) */

/* Loads a HF tokenizer.json. Returns 0 and *out (free with tok_free); on failure *out is NULL
 * and the message names the problem (missing file, bad JSON, unsupported model, a merge naming
 * a token that is not in the vocabulary, ...). */
int tok_load(const char *path, tokenizer **out);

/* Same from a tokenizer.json already in memory (len bytes; need not be NUL-terminated). */
int tok_load_json(const char *json, size_t len, tokenizer **out);

/* Loads the older file set: vocab.json ({"token": id}), merges.txt ("a b" per line, an optional
 * "#version" first line) and, if added_path is not NULL, added_tokens.json ({"token": id}, which
 * become non-special added tokens with normalized=true, as transformers registers them). Vocab
 * entries that look like "<|...|>" (e.g. "<|endoftext|>") become special added tokens
 * (normalized=false), as GPT-2/CodeGen's tokenizer classes register their eos/bos/unk tokens.
 * Pre-tokenizer and decoder are ByteLevel without a prefix space. Returns as tok_load. */
int tok_load_vocab_merges(const char *vocab_path, const char *merges_path, const char *added_path,
                          tokenizer **out);

/* Frees everything; NULL is a no-op. */
void tok_free(tokenizer *t);

/* Encodes len bytes of UTF-8 text (NUL bytes allowed) into *ids (malloc'd, caller frees; NULL
 * when *n_ids is 0). Fails with TV_EINVAL if text is not valid UTF-8 (HF only takes valid text),
 * and leaves *ids NULL, *n_ids 0. */
int tok_encode(const tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids);

/* Decodes ids into *out (malloc'd, NUL-terminated, caller frees) of *len bytes (the NUL not
 * counted), which is always valid UTF-8 (U+FFFD replaces invalid sequences). flags: 0 or
 * TOK_SKIP_SPECIAL. An id that names no token fails with TV_EINVAL (*out NULL). */
int tok_decode(const tokenizer *t, const int32_t *ids, size_t n, int flags, char **out,
               size_t *len);

/* Number of ids: the largest id + 1 (Phi-2: 50295), added tokens included. */
int32_t tok_vocab_size(const tokenizer *t);

/* Id of a token given as its vocabulary string (e.g. "<|endoftext|>", "###", "Ġthe"); added
 * tokens are looked up first, as HF token_to_id does. Returns -1 if there is none. */
int32_t tok_token_id(const tokenizer *t, const char *piece);

/* The vocabulary string of id (NUL-terminated, owned by t), or NULL if id names no token. */
const char *tok_piece(const tokenizer *t, int32_t id);

/* The bytes id decodes to (owned by t; not NUL-terminated, may be partial UTF-8) in *bytes and
 * *len. Returns 0, or TV_EINVAL if id names no token. */
int tok_token_bytes(const tokenizer *t, int32_t id, const char **bytes, size_t *len);

/* 1 if id is a special added token (like "<|endoftext|>"), else 0. */
int tok_is_special(const tokenizer *t, int32_t id);

/* ---- streaming decode --------------------------------------------------------------------
 * Feeds ids one at a time and gets back only complete UTF-8 characters: bytes that may still
 * become a character are held until the next token completes (or breaks) them. Concatenating
 * every push's output and the final flush's equals tok_decode of all the ids. */
typedef struct tok_stream tok_stream;

/* Returns a new stream over t (which must outlive it), or NULL if t is NULL. flags as tok_decode.
 * Free with tok_stream_free. */
tok_stream *tok_stream_new(const tokenizer *t, int flags);

/* Adds one id. *text and *len receive the newly complete text (possibly empty; NUL-terminated; owned
 * by the stream and valid until its next call). TV_EINVAL for an id that names no token (the
 * stream is left as it was). */
int tok_stream_push(tok_stream *s, int32_t id, const char **text, size_t *len);

/* Ends the stream: held-back bytes come out as U+FFFD (as a full decode would give them), and
 * the stream is ready to start again. Same output contract as tok_stream_push. */
int tok_stream_flush(tok_stream *s, const char **text, size_t *len);

/* NULL is a no-op. */
void tok_stream_free(tok_stream *s);

#endif
