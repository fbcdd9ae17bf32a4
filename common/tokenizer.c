/* tokenizer — HF byte-level BPE. See tokenizer.h for what is reproduced and what is refused. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mapfile.h"

#define TOK_MAX_ID (1 << 21) /* real vocabularies stay under 300k; this caps the id table */
#define TOK_MAX_FILE ((size_t)512 << 20)      /* tokenizer.json / vocab.json / merges.txt */

/* =============================================================================================
 * Small containers: a byte buffer, a string arena, two open-addressing hash maps.
 * ============================================================================================= */

typedef struct {
    char *p;
    size_t n, cap;
} bbuf;

static void bbuf_reserve(bbuf *b, size_t extra) {
    if (b->cap - b->n > extra) return; /* keeps room for a NUL */
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n <= extra) {
        TV_ASSERT(cap < SIZE_MAX / 2);
        cap *= 2;
    }
    b->p = tv_xrealloc(b->p, cap);
    b->cap = cap;
}

static void bbuf_put(bbuf *b, const void *src, size_t n) {
    bbuf_reserve(b, n);
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* Strings that live as long as the tokenizer: vocabulary pieces and their decoded bytes. */
typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    char data[];
} arena_blk;

static char *arena_dup(arena_blk **head, const char *s, size_t n) {
    arena_blk *b = *head;
    if (!b || b->cap - b->used < n + 1) {
        size_t cap = n + 1 > 65536 ? n + 1 : 65536;
        b = tv_xmalloc(sizeof *b + cap);
        b->next = *head;
        b->used = 0;
        b->cap = cap;
        *head = b;
    }
    char *p = b->data + b->used;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    b->used += n + 1;
    return p;
}

static void arena_free(arena_blk *b) {
    while (b) {
        arena_blk *next = b->next;
        free(b);
        b = next;
    }
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

/* string -> id; keys point into the arena. */
typedef struct {
    const char *key;
    uint32_t len;
    int32_t val;
} smap_slot;

typedef struct {
    smap_slot *slots;
    size_t cap, n; /* cap is a power of two, kept at most half full */
} smap;

static int32_t smap_get(const smap *m, const char *s, size_t n) {
    if (!m->cap) return -1;
    for (size_t i = hash_bytes(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const smap_slot *e = &m->slots[i];
        if (!e->key) return -1;
        if (e->len == n && memcmp(e->key, s, n) == 0) return e->val;
    }
}

static void smap_grow(smap *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    smap_slot *slots = tv_xcalloc(cap, sizeof *slots);
    for (size_t i = 0; i < m->cap; i++) {
        smap_slot *e = &m->slots[i];
        if (!e->key) continue;
        size_t j = hash_bytes(e->key, e->len) & (cap - 1);
        while (slots[j].key) j = (j + 1) & (cap - 1);
        slots[j] = *e;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
}

/* Inserts key -> val; returns 0, or 1 if the key was already there (left unchanged). */
static int smap_put(smap *m, const char *key, size_t n, int32_t val) {
    if ((m->n + 1) * 2 > m->cap) smap_grow(m);
    size_t i = hash_bytes(key, n) & (m->cap - 1);
    for (; m->slots[i].key; i = (i + 1) & (m->cap - 1))
        if (m->slots[i].len == n && memcmp(m->slots[i].key, key, n) == 0) return 1;
    m->slots[i] = (smap_slot){key, (uint32_t)n, val};
    m->n++;
    return 0;
}

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t key; /* PAIR_EMPTY when free */
    int32_t rank, id;
} pmap_slot;

typedef struct {
    pmap_slot *slots;
    size_t cap, n;
} pmap;

#define PAIR_EMPTY UINT64_MAX

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static size_t pair_hash(uint64_t k) {
    k ^= k >> 31;
    k *= 0x9e3779b97f4a7c15ULL;
    return (size_t)(k ^ (k >> 29));
}

static const pmap_slot *pmap_get(const pmap *m, int32_t a, int32_t b) {
    if (!m->cap) return NULL;
    uint64_t k = pair_key(a, b);
    for (size_t i = pair_hash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == k) return &m->slots[i];
        if (m->slots[i].key == PAIR_EMPTY) return NULL;
    }
}

static void pmap_grow(pmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    pmap_slot *slots = tv_xmalloc(cap * sizeof *slots);
    for (size_t i = 0; i < cap; i++) slots[i].key = PAIR_EMPTY;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key == PAIR_EMPTY) continue;
        size_t j = pair_hash(m->slots[i].key) & (cap - 1);
        while (slots[j].key != PAIR_EMPTY) j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
}

/* A repeated pair takes the later rank, as HF's HashMap collect does. */
static void pmap_put(pmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((m->n + 1) * 2 > m->cap) pmap_grow(m);
    uint64_t k = pair_key(a, b);
    size_t i = pair_hash(k) & (m->cap - 1);
    while (m->slots[i].key != PAIR_EMPTY && m->slots[i].key != k) i = (i + 1) & (m->cap - 1);
    if (m->slots[i].key == PAIR_EMPTY) m->n++;
    m->slots[i] = (pmap_slot){k, rank, id};
}

/* =============================================================================================
 * UTF-8 and GPT-2's byte table.
 * ============================================================================================= */

enum { U8_OK, U8_BAD, U8_SHORT };

/* Classifies the sequence at s[0..n): U8_OK with *len its length; U8_BAD with *len the length
 * of the maximal ill-formed subpart (what one U+FFFD replaces, as Rust and Unicode's recommended
 * practice do); U8_SHORT if s is a valid but unfinished prefix. */
static int u8_class(const uint8_t *s, size_t n, size_t *len) {
    uint8_t b = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (b < 0x80) return *len = 1, U8_OK;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else
        return *len = 1, U8_BAD;
    for (size_t k = 1; k <= need; k++) {
        if (k >= n) return U8_SHORT;
        if (s[k] < lo || s[k] > hi) return *len = k, U8_BAD;
        lo = 0x80, hi = 0xBF;
    }
    return *len = need + 1, U8_OK;
}

/* Code point of a valid sequence of length len. */
static uint32_t u8_cp(const uint8_t *s, size_t len) {
    if (len == 1) return s[0];
    uint32_t cp = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) cp = cp << 6 | (s[i] & 0x3F);
    return cp;
}

static size_t u8_put(uint32_t cp, char *out) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Appends the lossy decode of s[0..n) to b. Unless final, a trailing unfinished sequence is
 * left alone; returns how many bytes were consumed. */
static size_t u8_lossy(bbuf *b, const uint8_t *s, size_t n, int final) {
    size_t i = 0, len = 0;
    while (i < n) {
        int c = u8_class(s + i, n - i, &len);
        if (c == U8_SHORT) {
            if (!final) break;
            len = n - i;
            c = U8_BAD;
        }
        if (c == U8_OK) bbuf_put(b, s + i, len);
        else bbuf_put(b, "\xEF\xBF\xBD", 3);
        i += len;
    }
    return i;
}

/* Offset of the first invalid byte, or n if s is valid UTF-8. */
static size_t u8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0, len = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if (u8_class(s + i, n - i, &len) != U8_OK) return i;
        i += len;
    }
    return n;
}

/* Unicode White_Space, what Rust's char::is_whitespace and Oniguruma's \s mean. */
static int is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* GPT-2's table: bytes that are printable Latin-1 stand for themselves, the other 68 are moved
 * to U+0100.. in order, so every byte is a visible character in vocab strings. */
static uint32_t byte_to_cp(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    uint32_t n = 0;
    for (uint32_t x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) n++;
    return 256 + n;
}

/* =============================================================================================
 * The tokenizer.
 * ============================================================================================= */

#define WS "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}" \
           "\\x{202F}\\x{205F}\\x{3000}"
static const char TOK_REGEX[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                                "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";
/* What HF's single_word calls a word character (regex crate's Unicode \w). */
static const char TOK_WORD_REGEX[] = "^[\\p{L}\\p{N}\\p{M}\\p{Pc}\\x{200C}\\x{200D}]";

typedef struct {
    const char *piece;  /* vocabulary string (arena), NULL if the id is unused */
    const char *bytes;  /* what it decodes to (arena) */
    uint32_t piece_len, nbytes;
    uint8_t in_model, special;
} tok_entry;

typedef struct {
    const char *content;
    uint32_t len;
    int32_t id;
    uint8_t single_word, lstrip, rstrip, normalized, special;
} tok_added;

typedef struct {
    int32_t child, sibling, added; /* added: index into t->added, or -1 */
    uint8_t byte;
} trie_node;

typedef struct {
    trie_node *nodes; /* nodes[0] is the root; empty trie when n <= 1 */
    size_t n, cap;
    uint8_t first[256]; /* bytes some token starts with: most positions are skipped with this */
} trie;

/* BPE results of short words, shared by all threads: HF keeps such a cache too, and most words
 * of a text repeat. Sharded, each shard a direct-mapped table behind its own mutex, so threads
 * rarely wait and the memory is fixed (about 4.5 MB, touched only as it fills). */
#define CACHE_SHARDS 64
#define CACHE_SLOTS 1024 /* per shard */
#define CACHE_KEY 24     /* longest word cached, in bytes */
#define CACHE_IDS 8      /* most ids a cached result has */

typedef struct {
    uint64_t hash;
    uint8_t klen, nids; /* klen 0: empty slot */
    char key[CACHE_KEY];
    int32_t ids[CACHE_IDS];
} cache_slot;

typedef struct {
    pthread_mutex_t mu;
    cache_slot *slots;
} cache_shard;

struct tokenizer {
    tok_entry *ent; /* [n_ids] */
    int32_t n_ids;
    smap model_vocab, added_vocab;
    pmap merges;
    tok_added *added;
    size_t n_added;
    trie tries[2];            /* [0]: normalized=false tokens, [1]: normalized=true */
    int32_t byte_id[256];     /* id of each single byte's token, -1 if missing */
    int32_t unk_id;           /* -1: unknown bytes are dropped, as HF does without unk_token */
    uint8_t fuse_unk, ignore_merges, add_prefix_space, use_regex, any_single_word;
    pcre2_code *re, *word_re;
    arena_blk *arena;
    cache_shard *cache; /* [CACHE_SHARDS]; the one thing that changes after loading */
};

static tokenizer *tok_alloc(void) {
    tokenizer *t = tv_xcalloc(1, sizeof *t);
    t->unk_id = -1;
    t->use_regex = 1;
    return t;
}

void tok_free(tokenizer *t) {
    if (!t) return;
    free(t->ent);
    free(t->model_vocab.slots);
    free(t->added_vocab.slots);
    free(t->merges.slots);
    free(t->added);
    free(t->tries[0].nodes);
    free(t->tries[1].nodes);
    pcre2_code_free(t->re);
    pcre2_code_free(t->word_re);
    arena_free(t->arena);
    for (int i = 0; t->cache && i < CACHE_SHARDS; i++) {
        pthread_mutex_destroy(&t->cache[i].mu);
        free(t->cache[i].slots);
    }
    free(t->cache);
    free(t);
}

static int check_id(double v, const char *what, const char *name) {
    if (!(v >= 0 && v < TOK_MAX_ID) || v != (double)(int32_t)v)
        return err_set(TV_EFORMAT, "%s '%s' has id %g (must be an integer in 0..%d)", what, name,
                       v, TOK_MAX_ID - 1);
    return 0;
}

static void ensure_ids(tokenizer *t, int32_t id) {
    if (id < t->n_ids) return;
    int32_t n = id + 1;
    t->ent = tv_xrealloc(t->ent, (size_t)n * sizeof *t->ent);
    memset(t->ent + t->n_ids, 0, (size_t)(n - t->n_ids) * sizeof *t->ent);
    t->n_ids = n;
}

/* Every string we match against text must be valid UTF-8: the regex runs without re-checking. */
static int check_utf8(const char *s, size_t n, const char *what) {
    size_t bad = u8_invalid_at((const uint8_t *)s, n);
    if (bad < n) return err_set(TV_EFORMAT, "%s '%s' is not valid UTF-8 (byte %zu)", what, s, bad);
    return 0;
}

static int vocab_add(tokenizer *t, const char *piece, double idv) {
    size_t n = strlen(piece);
    int rc = check_id(idv, "vocab token", piece);
    if (!rc) rc = check_utf8(piece, n, "vocab token");
    if (rc) return rc;
    int32_t id = (int32_t)idv;
    ensure_ids(t, id);
    if (t->ent[id].in_model)
        return err_set(TV_EFORMAT, "vocab: id %d given to both '%s' and '%s'", id,
                       t->ent[id].piece, piece);
    const char *p = arena_dup(&t->arena, piece, n);
    if (smap_put(&t->model_vocab, p, n, id))
        return err_set(TV_EFORMAT, "vocab: token '%s' appears twice", piece);
    t->ent[id] = (tok_entry){.piece = p, .piece_len = (uint32_t)n, .in_model = 1};
    return 0;
}

static int merge_add(tokenizer *t, const char *a, size_t na, const char *b, size_t nb,
                     int32_t rank) {
    int32_t ia = smap_get(&t->model_vocab, a, na), ib = smap_get(&t->model_vocab, b, nb);
    if (ia < 0 || ib < 0)
        return err_set(TV_EFORMAT, "merge %d ('%.*s' '%.*s'): '%.*s' is not in the vocabulary",
                       rank, (int)na, a, (int)nb, b, ia < 0 ? (int)na : (int)nb, ia < 0 ? a : b);
    char stack[256];
    char *cat = na + nb <= sizeof stack ? stack : tv_xmalloc(na + nb);
    memcpy(cat, a, na);
    memcpy(cat + na, b, nb);
    int32_t id = smap_get(&t->model_vocab, cat, na + nb);
    if (cat != stack) free(cat);
    if (id < 0)
        return err_set(TV_EFORMAT, "merge %d ('%.*s' '%.*s'): the merged token is not in the "
                       "vocabulary", rank, (int)na, a, (int)nb, b);
    pmap_put(&t->merges, ia, ib, rank, id);
    return 0;
}

static int added_add(tokenizer *t, const char *content, double idv, const tok_added *flags) {
    size_t n = strlen(content);
    int rc = check_id(idv, "added token", content);
    if (!rc) rc = check_utf8(content, n, "added token");
    if (rc) return rc;
    int32_t id = (int32_t)idv;
    if (n == 0) return 0; /* HF ignores empty added tokens */
    const char *p = arena_dup(&t->arena, content, n);
    if (smap_put(&t->added_vocab, p, n, id)) return 0; /* listed twice: the first one stands */
    if (t->n_added % 64 == 0)
        t->added = tv_xrealloc(t->added, (t->n_added + 64) * sizeof *t->added);
    tok_added *a = &t->added[t->n_added++];
    *a = *flags;
    a->content = p;
    a->len = (uint32_t)n;
    a->id = id;
    ensure_ids(t, id);
    /* HF's id_to_token asks the added vocabulary first. */
    t->ent[id].piece = p;
    t->ent[id].piece_len = (uint32_t)n;
    t->ent[id].special = flags->special;
    return 0;
}

static void trie_insert(trie *tr, const char *s, size_t n, int32_t added) {
    if (tr->n == 0) {
        tr->cap = 64;
        tr->nodes = tv_xmalloc(tr->cap * sizeof *tr->nodes);
        tr->nodes[0] = (trie_node){-1, -1, -1, 0};
        tr->n = 1;
    }
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t k = tr->nodes[cur].child;
        while (k >= 0 && tr->nodes[k].byte != c) k = tr->nodes[k].sibling;
        if (k < 0) {
            if (tr->n == tr->cap) {
                tr->cap *= 2;
                tr->nodes = tv_xrealloc(tr->nodes, tr->cap * sizeof *tr->nodes);
            }
            k = (int32_t)tr->n++;
            tr->nodes[k] = (trie_node){-1, tr->nodes[cur].child, -1, c};
            tr->nodes[cur].child = k;
        }
        cur = k;
    }
    if (tr->nodes[cur].added < 0) tr->nodes[cur].added = added;
    if (n) tr->first[(uint8_t)s[0]] = 1;
}

/* Longest added token that starts at s[0..n); returns its index in t->added or -1. */
static int32_t trie_longest(const trie *tr, const char *s, size_t n, size_t *len) {
    int32_t cur = 0, best = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t k = tr->nodes[cur].child;
        while (k >= 0 && tr->nodes[k].byte != (uint8_t)s[i]) k = tr->nodes[k].sibling;
        if (k < 0) break;
        cur = k;
        if (tr->nodes[k].added >= 0) best = tr->nodes[k].added, *len = i + 1;
    }
    return best;
}

static pcre2_code *compile_re(const char *pattern) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        err_set(TV_EINTERNAL, "PCRE2 refused the pre-tokenizer regex at %zu: %s", (size_t)eo,
                (const char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    return re;
}

/* What id decodes to, as HF's ByteLevel decoder does it: every character mapped back through
 * the byte table, or, if any character is outside it, the string's own UTF-8. */
static void entry_bytes(tokenizer *t, tok_entry *e, const int16_t *cp_to_byte) {
    const uint8_t *s = (const uint8_t *)e->piece;
    char tmp[256];
    char *out = e->piece_len <= sizeof tmp ? tmp : tv_xmalloc(e->piece_len);
    size_t n = 0, i = 0, len = 0;
    while (i < e->piece_len) {
        if (u8_class(s + i, e->piece_len - i, &len) != U8_OK) break;
        uint32_t cp = u8_cp(s + i, len);
        if (cp >= 324 || cp_to_byte[cp] < 0) break;
        out[n++] = (char)cp_to_byte[cp];
        i += len;
    }
    if (i < e->piece_len) e->bytes = e->piece, e->nbytes = e->piece_len;
    else e->bytes = arena_dup(&t->arena, out, n), e->nbytes = (uint32_t)n;
    if (out != tmp) free(out);
}

/* After vocab, merges and added tokens are in: byte ids, decode bytes, tries, regexes. */
static int finish(tokenizer *t) {
    int16_t cp_to_byte[324];
    for (int i = 0; i < 324; i++) cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = byte_to_cp((uint8_t)b);
        cp_to_byte[cp] = (int16_t)b;
        char s[4];
        size_t n = u8_put(cp, s);
        t->byte_id[b] = smap_get(&t->model_vocab, s, n);
    }
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->ent[id].piece) entry_bytes(t, &t->ent[id], cp_to_byte);
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        trie_insert(&t->tries[a->normalized ? 1 : 0], a->content, a->len, (int32_t)i);
        if (a->single_word) t->any_single_word = 1;
    }
    if (t->use_regex && !(t->re = compile_re(TOK_REGEX))) return TV_EINTERNAL;
    if (t->any_single_word && !(t->word_re = compile_re(TOK_WORD_REGEX))) return TV_EINTERNAL;
    t->cache = tv_xcalloc(CACHE_SHARDS, sizeof *t->cache);
    for (int i = 0; i < CACHE_SHARDS; i++) {
        TV_ASSERT(pthread_mutex_init(&t->cache[i].mu, NULL) == 0);
        t->cache[i].slots = tv_xcalloc(CACHE_SLOTS, sizeof(cache_slot));
    }
    return 0;
}

/* =============================================================================================
 * Loading tokenizer.json.
 * ============================================================================================= */

static int json_bool(const cJSON *obj, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static int json_is_absent(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return !v || cJSON_IsNull(v);
}

/* The type of component `key` ("" when null or absent); NULL if it is not an object with one. */
static const char *json_type(const cJSON *root, const char *key) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!c || cJSON_IsNull(c)) return "";
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "type"));
    return s ? s : NULL;
}

static int json_check_components(tokenizer *t, const cJSON *root) {
    const char *norm = json_type(root, "normalizer"), *pre = json_type(root, "pre_tokenizer");
    const char *dec = json_type(root, "decoder"), *post = json_type(root, "post_processor");
    if (!norm || *norm)
        return err_set(TV_EUNSUPPORTED, "normalizer '%s' is not supported (only null)",
                       norm ? norm : "?");
    /* Without ByteLevel on both sides the vocabulary is not byte-level: a different tokenizer. */
    if (!pre || strcmp(pre, "ByteLevel"))
        return err_set(TV_EUNSUPPORTED, "pre_tokenizer '%s' is not supported (only ByteLevel)",
                       pre ? pre : "?");
    if (!dec || strcmp(dec, "ByteLevel"))
        return err_set(TV_EUNSUPPORTED, "decoder '%s' is not supported (only ByteLevel)",
                       dec ? dec : "?");
    if (!post || (*post && strcmp(post, "ByteLevel")))
        return err_set(TV_EUNSUPPORTED, "post_processor '%s' is not supported (null or ByteLevel)",
                       post ? post : "?");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    t->add_prefix_space = (uint8_t)json_bool(p, "add_prefix_space", 1);
    t->use_regex = (uint8_t)json_bool(p, "use_regex", 1);
    return 0;
}

static int json_check_model(tokenizer *t, const cJSON *model) {
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "type"));
    if (type && strcmp(type, "BPE"))
        return err_set(TV_EUNSUPPORTED, "model type '%s' is not supported (only BPE)", type);
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(drop) && drop->valuedouble != 0)
        return err_set(TV_EUNSUPPORTED, "BPE dropout is not supported");
    if (json_bool(model, "byte_fallback", 0))
        return err_set(TV_EUNSUPPORTED, "BPE byte_fallback is not supported");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, affixes[i]));
        if (!json_is_absent(model, affixes[i]) && (!s || *s))
            return err_set(TV_EUNSUPPORTED, "BPE %s is not supported", affixes[i]);
    }
    t->fuse_unk = (uint8_t)json_bool(model, "fuse_unk", 0);
    t->ignore_merges = (uint8_t)json_bool(model, "ignore_merges", 0);
    return 0;
}

static int json_vocab(tokenizer *t, const cJSON *vocab, const char *where) {
    if (!cJSON_IsObject(vocab)) return err_set(TV_EFORMAT, "%s: vocab is not an object", where);
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it))
            return err_set(TV_EFORMAT, "%s: id of '%s' is not a number", where, it->string);
        int rc = vocab_add(t, it->string, it->valuedouble);
        if (rc) return err_wrap(rc, "%s", where);
    }
    if (t->model_vocab.n == 0) return err_set(TV_EFORMAT, "%s: empty vocab", where);
    return 0;
}

/* One merge: "a b" (older files) or ["a", "b"] (tokenizers >= 0.20). */
static int json_merge(tokenizer *t, const cJSON *m, int32_t rank) {
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return err_set(TV_EFORMAT, "merge %d '%s' is not two tokens split by one space",
                           rank, s);
        return merge_add(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), rank);
    }
    const cJSON *a = cJSON_GetArrayItem(m, 0), *b = cJSON_GetArrayItem(m, 1);
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2 || !cJSON_IsString(a) ||
        !cJSON_IsString(b))
        return err_set(TV_EFORMAT, "merge %d is neither \"a b\" nor [\"a\", \"b\"]", rank);
    return merge_add(t, a->valuestring, strlen(a->valuestring), b->valuestring,
                     strlen(b->valuestring), rank);
}

static int json_added(tokenizer *t, const cJSON *list) {
    if (!list || cJSON_IsNull(list)) return 0;
    if (!cJSON_IsArray(list)) return err_set(TV_EFORMAT, "added_tokens is not an array");
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const char *content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "content"));
        if (!cJSON_IsNumber(id) || !content)
            return err_set(TV_EFORMAT, "added_tokens: an entry lacks a numeric id or a content");
        tok_added f = {.single_word = (uint8_t)json_bool(it, "single_word", 0),
                       .lstrip = (uint8_t)json_bool(it, "lstrip", 0),
                       .rstrip = (uint8_t)json_bool(it, "rstrip", 0),
                       .normalized = (uint8_t)json_bool(it, "normalized", 1),
                       .special = (uint8_t)json_bool(it, "special", 0)};
        int rc = added_add(t, content, id->valuedouble, &f);
        if (rc) return rc;
    }
    return 0;
}

static int json_fill(tokenizer *t, const cJSON *root) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return err_set(TV_EFORMAT, "no \"model\" object");
    int rc = json_check_components(t, root);
    if (!rc) rc = json_check_model(t, model);
    if (!rc) rc = json_vocab(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), "model.vocab");
    if (rc) return rc;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges"), *m;
    if (!cJSON_IsArray(merges)) return err_set(TV_EFORMAT, "model.merges is not an array");
    int32_t rank = 0;
    cJSON_ArrayForEach(m, merges) {
        if ((rc = json_merge(t, m, rank++))) return rc;
    }
    const char *unk = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "unk_token"));
    if (unk && (t->unk_id = smap_get(&t->model_vocab, unk, strlen(unk))) < 0)
        return err_set(TV_EFORMAT, "unk_token '%s' is not in the vocabulary", unk);
    if ((rc = json_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens")))) return rc;
    return finish(t);
}

int tok_load_json(const char *json, size_t len, tokenizer **out) {
    *out = NULL;
    if (!json) return err_set(TV_EINVAL, "tokenizer JSON is NULL");
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return err_set(TV_EFORMAT, "tokenizer.json is not valid JSON");
    tokenizer *t = tok_alloc();
    int rc = cJSON_IsObject(root) ? json_fill(t, root)
                                  : err_set(TV_EFORMAT, "tokenizer.json is not a JSON object");
    cJSON_Delete(root);
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int tok_load(const char *path, tokenizer **out) {
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc = mf_read_all(path, TOK_MAX_FILE, &buf, &len);
    if (rc) return rc;
    rc = tok_load_json(buf, len, out);
    free(buf);
    return rc ? err_wrap(rc, "%s", path) : 0;
}

/* =============================================================================================
 * Loading vocab.json + merges.txt (+ added_tokens.json).
 * ============================================================================================= */

static int read_json_file(const char *path, cJSON **out) {
    char *buf = NULL;
    size_t len = 0;
    int rc = mf_read_all(path, TOK_MAX_FILE, &buf, &len);
    if (rc) return rc;
    *out = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!*out) return err_set(TV_EFORMAT, "%s is not valid JSON", path);
    return 0;
}

static int merges_txt(tokenizer *t, const char *path) {
    char *buf = NULL;
    size_t len = 0;
    int rc = mf_read_all(path, TOK_MAX_FILE, &buf, &len);
    if (rc) return rc;
    int32_t rank = 0;
    size_t line_no = 0;
    for (char *s = buf; s < buf + len && !rc;) {
        char *nl = memchr(s, '\n', (size_t)(buf + len - s));
        char *end = nl ? nl : buf + len;
        line_no++;
        size_t n = (size_t)(end - s);
        if (n && s[n - 1] == '\r') n--;
        char *sp = memchr(s, ' ', n);
        if (n >= 8 && memcmp(s, "#version", 8) == 0) {
            /* header line, not a merge */
        } else if (!sp || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1)) || memchr(s, 0, n)) {
            rc = err_set(TV_EFORMAT, "%s:%zu: not two tokens split by one space", path, line_no);
        } else {
            rc = merge_add(t, s, (size_t)(sp - s), sp + 1, (size_t)(s + n - sp - 1), rank++);
            if (rc) rc = err_wrap(rc, "%s:%zu", path, line_no);
        }
        s = end + 1;
    }
    free(buf);
    return rc;
}

/* "<|endoftext|>" and its kind: what GPT-2/CodeGen tokenizers register as special tokens. */
static int looks_special(const char *s) {
    size_t n = strlen(s);
    return n >= 4 && memcmp(s, "<|", 2) == 0 && memcmp(s + n - 2, "|>", 2) == 0;
}

static int files_fill(tokenizer *t, const char *vocab_path, const char *merges_path,
                      const char *added_path) {
    cJSON *vocab = NULL, *added = NULL;
    int rc = read_json_file(vocab_path, &vocab);
    if (!rc) rc = json_vocab(t, vocab, vocab_path);
    if (!rc) rc = merges_txt(t, merges_path);
    const tok_added special = {.special = 1}, plain = {.normalized = 1};
    const cJSON *it;
    if (!rc) {
        cJSON_ArrayForEach(it, vocab) {
            if (looks_special(it->string) &&
                (rc = added_add(t, it->string, it->valuedouble, &special)))
                break;
        }
    }
    if (!rc && added_path && !(rc = read_json_file(added_path, &added))) {
        const cJSON *obj = added;
        if (!cJSON_IsObject(obj)) {
            rc = err_set(TV_EFORMAT, "%s is not an object", added_path);
            obj = NULL;
        }
        cJSON_ArrayForEach(it, obj) {
            if (!cJSON_IsNumber(it)) {
                rc = err_set(TV_EFORMAT, "%s: id of '%s' is not a number", added_path, it->string);
                break;
            }
            if ((rc = added_add(t, it->string, it->valuedouble, &plain))) break;
        }
    }
    cJSON_Delete(vocab);
    cJSON_Delete(added);
    return rc ? rc : finish(t);
}

int tok_load_vocab_merges(const char *vocab_path, const char *merges_path, const char *added_path,
                          tokenizer **out) {
    *out = NULL;
    if (!vocab_path || !merges_path) return err_set(TV_EINVAL, "vocab and merges paths needed");
    tokenizer *t = tok_alloc();
    t->add_prefix_space = 0;
    int rc = files_fill(t, vocab_path, merges_path, added_path);
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* =============================================================================================
 * Encoding.
 * ============================================================================================= */

typedef struct {
    int32_t id, prev, next;
    uint32_t len; /* bytes covered; 0 once merged into its left neighbour */
} bpe_sym;

typedef struct {
    int32_t rank, pos, id;
} bpe_item;

typedef struct {
    const tokenizer *t;
    int32_t *ids;
    size_t n, cap;
    bpe_sym *sym;
    size_t sym_cap;
    bpe_item *heap;
    size_t heap_n, heap_cap;
    pcre2_match_data *md, *word_md;
    bbuf tmp;
} enc_state;

static void emit(enc_state *st, int32_t id) {
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 64;
        st->ids = tv_xrealloc(st->ids, st->cap * sizeof *st->ids);
    }
    st->ids[st->n++] = id;
}

static int item_less(const bpe_item *a, const bpe_item *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(enc_state *st, bpe_item it) {
    if (st->heap_n == st->heap_cap) {
        st->heap_cap = st->heap_cap ? st->heap_cap * 2 : 64;
        st->heap = tv_xrealloc(st->heap, st->heap_cap * sizeof *st->heap);
    }
    size_t i = st->heap_n++;
    while (i > 0 && item_less(&it, &st->heap[(i - 1) / 2])) {
        st->heap[i] = st->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    st->heap[i] = it;
}

static bpe_item heap_pop(enc_state *st) {
    bpe_item top = st->heap[0], last = st->heap[--st->heap_n];
    size_t i = 0, n = st->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && item_less(&st->heap[c + 1], &st->heap[c])) c++;
        if (!item_less(&st->heap[c], &last)) break;
        st->heap[i] = st->heap[c];
        i = c;
    }
    if (n) st->heap[i] = last;
    return top;
}

static void push_pair(enc_state *st, int32_t pos) {
    const bpe_sym *s = st->sym;
    if (pos < 0 || s[pos].next < 0) return;
    const pmap_slot *m = pmap_get(&st->t->merges, s[pos].id, s[s[pos].next].id);
    if (m) heap_push(st, (bpe_item){m->rank, pos, m->id});
}

/* One symbol per byte (HF drops a byte with no token unless there is an unk token). */
static size_t bpe_symbols(enc_state *st, const uint8_t *w, size_t n) {
    const tokenizer *t = st->t;
    if (n > st->sym_cap) {
        st->sym_cap = n;
        st->sym = tv_xrealloc(st->sym, n * sizeof *st->sym);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0) {
            if (t->unk_id < 0) continue;
            if (t->fuse_unk && k && st->sym[k - 1].id == t->unk_id) {
                st->sym[k - 1].len++;
                continue;
            }
            id = t->unk_id;
        }
        st->sym[k] = (bpe_sym){id, (int32_t)k - 1, (int32_t)k + 1, 1};
        k++;
    }
    if (k) st->sym[k - 1].next = -1;
    return k;
}

/* ignore_merges: a word that is a whole vocabulary entry is taken as it is. */
static int32_t whole_word_id(enc_state *st, const uint8_t *w, size_t n) {
    st->tmp.n = 0;
    for (size_t i = 0; i < n; i++) {
        char c[4];
        bbuf_put(&st->tmp, c, u8_put(byte_to_cp(w[i]), c));
    }
    return smap_get(&st->t->model_vocab, st->tmp.p, st->tmp.n);
}

/* BPE on one pre-token: repeatedly merges the adjacent pair of lowest rank (leftmost first),
 * which is the order HF's priority queue gives. */
static void bpe_merge(enc_state *st, const uint8_t *w, size_t n) {
    if (st->t->ignore_merges) {
        int32_t id = whole_word_id(st, w, n);
        if (id >= 0) {
            emit(st, id);
            return;
        }
    }
    size_t k = bpe_symbols(st, w, n);
    st->heap_n = 0;
    for (size_t i = 0; i + 1 < k; i++) push_pair(st, (int32_t)i);
    bpe_sym *s = st->sym;
    while (st->heap_n) {
        bpe_item it = heap_pop(st);
        bpe_sym *a = &s[it.pos];
        if (a->len == 0 || a->next < 0) continue;
        const pmap_slot *m = pmap_get(&st->t->merges, a->id, s[a->next].id);
        if (!m || m->id != it.id) continue; /* stale: a neighbour changed since it was queued */
        bpe_sym *b = &s[a->next];
        a->id = it.id;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0) s[a->next].prev = it.pos;
        push_pair(st, a->prev);
        push_pair(st, it.pos);
    }
    for (int32_t i = k ? 0 : -1; i >= 0; i = s[i].next) emit(st, s[i].id);
}

/* bpe_merge through the shared cache (words of 2..CACHE_KEY bytes). */
static void bpe_word(enc_state *st, const uint8_t *w, size_t n) {
    if (n < 2 || n > CACHE_KEY) {
        if (n) bpe_merge(st, w, n);
        return;
    }
    uint64_t h = hash_bytes((const char *)w, n);
    cache_shard *sh = &st->t->cache[h % CACHE_SHARDS];
    cache_slot *slot = &sh->slots[(h / CACHE_SHARDS) % CACHE_SLOTS];
    int32_t ids[CACHE_IDS];
    int nids = -1;
    pthread_mutex_lock(&sh->mu);
    if (slot->hash == h && slot->klen == n && memcmp(slot->key, w, n) == 0) {
        nids = slot->nids;
        memcpy(ids, slot->ids, (size_t)nids * sizeof *ids);
    }
    pthread_mutex_unlock(&sh->mu);
    if (nids >= 0) {
        for (int i = 0; i < nids; i++) emit(st, ids[i]);
        return;
    }
    size_t before = st->n;
    bpe_merge(st, w, n);
    size_t got = st->n - before;
    if (got > CACHE_IDS) return;
    pthread_mutex_lock(&sh->mu);
    slot->hash = h;
    slot->klen = (uint8_t)n;
    slot->nids = (uint8_t)got;
    memcpy(slot->key, w, n);
    memcpy(slot->ids, st->ids + before, got * sizeof *st->ids);
    pthread_mutex_unlock(&sh->mu);
}

/* The GPT-2 regex over one stretch of text free of added tokens; each piece goes through BPE. */
static int pretok_regex(enc_state *st, const char *s, size_t n) {
    const tokenizer *t = st->t;
    if (!t->re) {
        bpe_word(st, (const uint8_t *)s, n);
        return 0;
    }
    size_t off = 0;
    while (off < n) {
        /* NO_UTF_CHECK: tok_encode validated the text once (a check per call is quadratic). */
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, st->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return err_set(TV_EINTERNAL, "pre-tokenizer regex failed at byte %zu: %s", off,
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
        if (ov[1] <= ov[0]) break; /* cannot happen: no alternative matches empty */
        if (ov[0] > off) bpe_word(st, (const uint8_t *)s + off, ov[0] - off);
        bpe_word(st, (const uint8_t *)s + ov[0], ov[1] - ov[0]);
        off = ov[1];
    }
    if (off < n) bpe_word(st, (const uint8_t *)s + off, n - off);
    return 0;
}

/* HF's ByteLevel add_prefix_space puts a space before every stretch that lacks one. */
static int pretokenize(enc_state *st, const char *s, size_t n) {
    if (n == 0) return 0;
    if (!st->t->add_prefix_space || s[0] == ' ') return pretok_regex(st, s, n);
    bbuf pre = {0};
    bbuf_put(&pre, " ", 1);
    bbuf_put(&pre, s, n);
    int rc = pretok_regex(st, pre.p, pre.n);
    free(pre.p);
    return rc;
}

/* Code point that ends at s[end) (s valid UTF-8, end > 0), and where it starts. */
static uint32_t cp_before(const char *s, size_t end, size_t *start) {
    size_t i = end - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80) i--;
    *start = i;
    return u8_cp((const uint8_t *)s + i, end - i);
}

static uint32_t cp_at(const char *s, size_t n, size_t *len) {
    u8_class((const uint8_t *)s, n, len);
    return u8_cp((const uint8_t *)s, *len);
}

static int is_word_char(enc_state *st, const char *c, size_t len) {
    if (!st->word_md) st->word_md = pcre2_match_data_create_from_pattern(st->t->word_re, NULL);
    return pcre2_match(st->t->word_re, (PCRE2_SPTR)c, len, 0, PCRE2_NO_UTF_CHECK, st->word_md,
                       NULL) >= 0;
}

/* HF's single_word: the match must not touch a word character on either side. */
static int single_word_ok(enc_state *st, const char *s, size_t n, size_t start, size_t stop) {
    size_t at, len;
    if (start > 0) {
        cp_before(s, start, &at);
        if (is_word_char(st, s + at, start - at)) return 0;
    }
    if (stop < n) {
        cp_at(s + stop, n - stop, &len);
        if (is_word_char(st, s + stop, len)) return 0;
    }
    return 1;
}

/* Splits s[0..n) on the added tokens of tries[pass] (leftmost-longest, like HF's aho-corasick),
 * handing the stretches between them to the next pass (pass 2 is the pre-tokenizer). */
static int split_added(enc_state *st, const char *s, size_t n, int pass) {
    if (pass == 2) return pretokenize(st, s, n);
    const trie *tr = &st->t->tries[pass];
    if (tr->n <= 1) return split_added(st, s, n, pass + 1);
    size_t done = 0, i = 0;
    int rc = 0;
    while (i < n && !rc) {
        while (i < n && !tr->first[(uint8_t)s[i]]) i++;
        if (i == n) break;
        size_t mlen = 0;
        int32_t k = trie_longest(tr, s + i, n - i, &mlen);
        if (k < 0) {
            i++;
            continue;
        }
        const tok_added *a = &st->t->added[k];
        size_t start = i, stop = i + mlen, at, len;
        i = stop;
        if (a->single_word && !single_word_ok(st, s, n, start, stop)) continue;
        while (a->lstrip && start > done && is_white_space(cp_before(s, start, &at))) start = at;
        while (a->rstrip && stop < n && is_white_space(cp_at(s + stop, n - stop, &len)))
            stop += len;
        i = stop;
        if (start > done) rc = split_added(st, s + done, start - done, pass + 1);
        emit(st, a->id);
        done = stop;
    }
    if (!rc && done < n) rc = split_added(st, s + done, n - done, pass + 1);
    return rc;
}

int tok_encode(const tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len)) return err_set(TV_EINVAL, "tok_encode: NULL tokenizer or text");
    size_t bad = u8_invalid_at((const uint8_t *)text, len);
    if (bad < len) return err_set(TV_EINVAL, "text is not valid UTF-8 (byte %zu)", bad);
    enc_state st = {.t = t};
    if (t->re && !(st.md = pcre2_match_data_create_from_pattern(t->re, NULL)))
        return err_set(TV_ENOMEM, "PCRE2 match data");
    int rc = split_added(&st, text, len, 0);
    pcre2_match_data_free(st.md);
    pcre2_match_data_free(st.word_md);
    free(st.sym);
    free(st.heap);
    free(st.tmp.p);
    if (rc) {
        free(st.ids);
        return rc;
    }
    *ids = st.ids;
    *n_ids = st.n;
    return 0;
}

/* =============================================================================================
 * Lookups and decoding.
 * ============================================================================================= */

int32_t tok_vocab_size(const tokenizer *t) { return t ? t->n_ids : 0; }

int32_t tok_token_id(const tokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    size_t n = strlen(piece);
    int32_t id = smap_get(&t->added_vocab, piece, n);
    return id >= 0 ? id : smap_get(&t->model_vocab, piece, n);
}

static const tok_entry *entry(const tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_ids || !t->ent[id].piece) return NULL;
    return &t->ent[id];
}

const char *tok_piece(const tokenizer *t, int32_t id) {
    const tok_entry *e = entry(t, id);
    return e ? e->piece : NULL;
}

int tok_is_special(const tokenizer *t, int32_t id) {
    const tok_entry *e = entry(t, id);
    return e && e->special;
}

int tok_token_bytes(const tokenizer *t, int32_t id, const char **bytes, size_t *len) {
    const tok_entry *e = entry(t, id);
    if (!e) return err_set(TV_EINVAL, "token id %d is not in the vocabulary (size %d)", id,
                           tok_vocab_size(t));
    *bytes = e->bytes;
    *len = e->nbytes;
    return 0;
}

int tok_decode(const tokenizer *t, const int32_t *ids, size_t n, int flags, char **out,
               size_t *len) {
    *out = NULL;
    *len = 0;
    if (!t || (!ids && n)) return err_set(TV_EINVAL, "tok_decode: NULL tokenizer or ids");
    bbuf raw = {0}, text = {0};
    for (size_t i = 0; i < n; i++) {
        const char *b = "";
        size_t nb = 0;
        if (tok_token_bytes(t, ids[i], &b, &nb)) {
            free(raw.p);
            return err_wrap(TV_EINVAL, "decode: position %zu", i);
        }
        if (!((flags & TOK_SKIP_SPECIAL) && t->ent[ids[i]].special)) bbuf_put(&raw, b, nb);
    }
    bbuf_reserve(&text, raw.n);
    u8_lossy(&text, (const uint8_t *)raw.p, raw.n, 1);
    text.p[text.n] = 0;
    free(raw.p);
    *out = text.p;
    *len = text.n;
    return 0;
}

struct tok_stream {
    const tokenizer *t;
    int flags;
    uint8_t held[4]; /* an unfinished UTF-8 sequence (at most 3 bytes) */
    size_t n_held;
    bbuf work, out;
};

tok_stream *tok_stream_new(const tokenizer *t, int flags) {
    if (!t) return NULL;
    tok_stream *s = tv_xcalloc(1, sizeof *s);
    s->t = t;
    s->flags = flags;
    return s;
}

void tok_stream_free(tok_stream *s) {
    if (!s) return;
    free(s->work.p);
    free(s->out.p);
    free(s);
}

/* Decodes held bytes + b[0..n), keeping an unfinished tail unless final. */
static void stream_run(tok_stream *s, const char *b, size_t n, int final, const char **text,
                       size_t *len) {
    s->work.n = 0;
    bbuf_put(&s->work, s->held, s->n_held);
    bbuf_put(&s->work, b, n);
    s->out.n = 0;
    bbuf_reserve(&s->out, s->work.n);
    size_t used = u8_lossy(&s->out, (const uint8_t *)s->work.p, s->work.n, final);
    s->n_held = s->work.n - used;
    TV_ASSERT(s->n_held < sizeof s->held);
    memcpy(s->held, s->work.p + used, s->n_held);
    s->out.p[s->out.n] = 0;
    *text = s->out.p;
    *len = s->out.n;
}

int tok_stream_push(tok_stream *s, int32_t id, const char **text, size_t *len) {
    *text = "";
    *len = 0;
    if (!s) return err_set(TV_EINVAL, "tok_stream_push: NULL stream");
    const char *b = "";
    size_t nb = 0;
    int rc = tok_token_bytes(s->t, id, &b, &nb);
    if (rc) return rc;
    if ((s->flags & TOK_SKIP_SPECIAL) && s->t->ent[id].special) nb = 0;
    stream_run(s, b, nb, 0, text, len);
    return 0;
}

int tok_stream_flush(tok_stream *s, const char **text, size_t *len) {
    *text = "";
    *len = 0;
    if (!s) return err_set(TV_EINVAL, "tok_stream_flush: NULL stream");
    stream_run(s, "", 0, 1, text, len);
    return 0;
}
