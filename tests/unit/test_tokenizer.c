/* tokenizer: encode/decode against HF `tokenizers` goldens (tools/goldens/tokenizer.py), the
 * streaming decoder against the full decode, both loaders, threads, and refusals. */
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "mapfile.h"
#include "tokenizer.h"

/* ---- golden files ------------------------------------------------------------------------ */

typedef struct {
    const char *text;
    uint32_t text_len, n_ids;
    int32_t *ids;
    const char *dec; /* HF decode (skip_special_tokens=False) */
    uint32_t dec_len;
    const char *dec_skip; /* decode.bin only: with skip_special_tokens=True */
    uint32_t dec_skip_len;
} gcase;

typedef struct {
    char *buf;
    size_t len, off;
    gcase *c;
    size_t n;
    int bad;
} gfile;

static uint32_t rd_u32(gfile *g) {
    if (g->bad || g->len - g->off < 4) return g->bad = 1, 0;
    const uint8_t *p = (const uint8_t *)g->buf + g->off;
    g->off += 4;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static const char *rd_bytes(gfile *g, uint32_t n) {
    if (g->bad || g->len - g->off < n) return g->bad = 1, "";
    const char *p = g->buf + g->off;
    g->off += n;
    return p;
}

static int32_t *rd_ids(gfile *g, uint32_t n) {
    const uint8_t *p = (const uint8_t *)rd_bytes(g, n * 2);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (uint32_t i = 0; i < n && !g->bad; i++) ids[i] = p[2 * i] | p[2 * i + 1] << 8;
    return ids;
}

/* cases*.bin ("TVTK") or decode.bin ("TVTD"); see tools/goldens/tokenizer.py for the layout. */
static int gfile_load(gfile *g, const char *rel) {
    memset(g, 0, sizeof *g);
    if (mf_read_all(check_data(rel), 64u << 20, &g->buf, &g->len)) return -1;
    const char *magic = rd_bytes(g, 4);
    if (g->bad) return -1; /* shorter than its magic */
    int dec_only = memcmp(magic, "TVTD", 4) == 0;
    if (!dec_only && memcmp(magic, "TVTK", 4) != 0) return -1;
    uint32_t n = rd_u32(g);
    if (n > 1000000) return -1;
    g->c = calloc(n ? n : 1, sizeof *g->c);
    for (g->n = 0; g->n < n && !g->bad; g->n++) {
        gcase *c = &g->c[g->n];
        if (!dec_only) {
            c->text_len = rd_u32(g);
            c->text = rd_bytes(g, c->text_len);
        }
        c->n_ids = rd_u32(g);
        c->ids = rd_ids(g, c->n_ids);
        c->dec_len = rd_u32(g);
        if (!dec_only && c->dec_len == 0xFFFFFFFFu) c->dec = c->text, c->dec_len = c->text_len;
        else c->dec = rd_bytes(g, c->dec_len);
        if (dec_only) {
            c->dec_skip_len = rd_u32(g);
            c->dec_skip = rd_bytes(g, c->dec_skip_len);
        }
    }
    return g->bad || g->off != g->len ? -1 : 0;
}

static void gfile_free(gfile *g) {
    for (size_t i = 0; i < g->n; i++) free(g->c[i].ids);
    free(g->c);
    free(g->buf);
}

/* ---- helpers ----------------------------------------------------------------------------- */

/* Strict UTF-8 check written independently of the module (RFC 3629 table). */
static int valid_utf8(const char *str, size_t n) {
    const uint8_t *s = (const uint8_t *)str;
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        size_t k;
        uint32_t cp;
        if (b < 0x80) { i++; continue; }
        else if ((b & 0xE0) == 0xC0) k = 1, cp = b & 0x1F;
        else if ((b & 0xF0) == 0xE0) k = 2, cp = b & 0x0F;
        else if ((b & 0xF8) == 0xF0) k = 3, cp = b & 0x07;
        else return 0;
        if (n - i <= k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void show(const char *what, size_t i, const char *s, size_t n) {
    fprintf(stderr, "  case %zu %s: \"", i, what);
    for (size_t k = 0; k < n && k < 120; k++) {
        uint8_t c = (uint8_t)s[k];
        if (c >= 0x20 && c < 0x7f && c != '"') fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "%s\"\n", n > 120 ? "..." : "");
}

static int ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* Streams ids through tok_stream; returns 1 if every chunk was valid UTF-8 and the whole
 * equals want. */
static int stream_matches(const tokenizer *t, const int32_t *ids, size_t n, int flags,
                          const char *want, size_t want_len) {
    tok_stream *s = tok_stream_new(t, flags);
    char *all = malloc(want_len + 64);
    size_t got = 0;
    int ok = s != NULL;
    for (size_t i = 0; i <= n && ok; i++) {
        const char *chunk;
        size_t len;
        int rc = i < n ? tok_stream_push(s, ids[i], &chunk, &len) : tok_stream_flush(s, &chunk, &len);
        ok = rc == 0 && valid_utf8(chunk, len) && strlen(chunk) <= len && got + len <= want_len;
        if (ok) memcpy(all + got, chunk, len), got += len;
    }
    ok = ok && got == want_len && memcmp(all, want, want_len) == 0;
    free(all);
    tok_stream_free(s);
    return ok;
}

/* Encodes and decodes every case; returns the number of failed cases (first few printed). */
static int run_cases(const tokenizer *t, const gfile *g, const char *name, int verbose) {
    int bad_enc = 0, bad_dec = 0, bad_stream = 0;
    for (size_t i = 0; i < g->n; i++) {
        const gcase *c = &g->c[i];
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = tok_encode(t, c->text, c->text_len, &ids, &n);
        if (rc || !ids_equal(ids, n, c->ids, c->n_ids)) {
            if (verbose && bad_enc++ < 5) {
                show("encode differs", i, c->text, c->text_len);
                fprintf(stderr, "   got  (%zu):", n);
                for (size_t k = 0; k < n && k < 40; k++) fprintf(stderr, " %d", ids[k]);
                fprintf(stderr, "\n   want (%u):", c->n_ids);
                for (size_t k = 0; k < c->n_ids && k < 40; k++) fprintf(stderr, " %d", c->ids[k]);
                fprintf(stderr, "\n");
            } else if (!verbose) bad_enc++;
        }
        free(ids);
        char *dec = NULL;
        size_t dn = 0;
        rc = tok_decode(t, c->ids, c->n_ids, 0, &dec, &dn);
        if (rc || dn != c->dec_len || memcmp(dec, c->dec, dn) != 0 || dec[dn] != 0) {
            if (bad_dec++ < 5 && verbose) show("decode differs", i, dec ? dec : "", dn);
        }
        free(dec);
        if (!stream_matches(t, c->ids, c->n_ids, 0, c->dec, c->dec_len)) {
            if (bad_stream++ < 5 && verbose) show("stream differs", i, c->text, c->text_len);
        }
    }
    if (verbose)
        printf("%s: %zu cases, %d encode / %d decode / %d stream mismatches\n", name, g->n,
               bad_enc, bad_dec, bad_stream);
    return bad_enc + bad_dec + bad_stream;
}

static void test_golden_file(const tokenizer *t, const char *rel) {
    gfile g;
    int rc = gfile_load(&g, rel);
    CHECK_MSG(rc == 0, "cannot read %s", rel);
    if (rc == 0) {
        CHECK(g.n >= 100);
        CHECK_EQ_INT(run_cases(t, &g, rel, 1), 0);
    }
    gfile_free(&g);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_lookups(const tokenizer *t) {
    CHECK_EQ_INT(tok_vocab_size(t), 8192 + 1 + 30 + 8);
    CHECK_EQ_INT(tok_token_id(t, "<|endoftext|>"), 8192);
    CHECK(tok_is_special(t, 8192));
    CHECK(!tok_is_special(t, 8193));
    CHECK_EQ_INT(tok_token_id(t, "                               "), 8193); /* 31 spaces */
    CHECK_EQ_INT(tok_token_id(t, "  "), 8222);
    CHECK_EQ_INT(tok_token_id(t, "\t\t\t\t\t\t\t\t\t"), 8223);
    CHECK_EQ_INT(tok_token_id(t, "\t\t"), 8230);
    CHECK(tok_token_id(t, "###") >= 0);
    CHECK_EQ_STR(tok_piece(t, tok_token_id(t, "###")), "###");
    CHECK_EQ_INT(tok_token_id(t, "!"), 0); /* byte-level alphabet starts at '!' */
    CHECK_EQ_INT(tok_token_id(t, "no such token at all"), -1);
    CHECK_EQ_STR(tok_piece(t, 8192), "<|endoftext|>");
    CHECK(tok_piece(t, -1) == NULL && tok_piece(t, 8231) == NULL);
    const char *b;
    size_t n;
    int32_t sp = tok_token_id(t, "\xc4\xa0"); /* "Ġ" = the space byte */
    CHECK_OK(tok_token_bytes(t, sp, &b, &n));
    CHECK(n == 1 && b[0] == ' ');
    CHECK_FAILS(tok_token_bytes(t, 99999, &b, &n));
}

static void test_decode_goldens(const tokenizer *t) {
    gfile g;
    int rc = gfile_load(&g, "tokenizer/decode.bin");
    CHECK_MSG(rc == 0, "cannot read decode.bin");
    int bad = 0;
    for (size_t i = 0; rc == 0 && i < g.n; i++) {
        const gcase *c = &g.c[i];
        for (int skip = 0; skip < 2; skip++) {
            const char *want = skip ? c->dec_skip : c->dec;
            size_t wn = skip ? c->dec_skip_len : c->dec_len;
            char *dec = NULL;
            size_t dn = 0;
            int r = tok_decode(t, c->ids, c->n_ids, skip ? TOK_SKIP_SPECIAL : 0, &dec, &dn);
            int ok = r == 0 && dn == wn && memcmp(dec, want, wn) == 0;
            ok = ok && stream_matches(t, c->ids, c->n_ids, skip ? TOK_SKIP_SPECIAL : 0, want, wn);
            if (!ok && bad++ < 5) {
                show("odd-id decode differs, got", i, dec ? dec : "", dn);
                show("                      want", i, want, wn);
            }
            free(dec);
        }
    }
    CHECK(g.n >= 300);
    CHECK_EQ_INT(bad, 0);
    gfile_free(&g);
    /* The lone lead byte 0xE2 then 'a': one U+FFFD, then 'a' (checked by hand too). */
    char key[4] = {(char)0xC3, (char)0xA2, 0, 0}; /* "â" is byte 0xE2's character */
    int32_t ids[2] = {tok_token_id(t, key), tok_token_id(t, "a")};
    char *dec = NULL;
    size_t dn = 0;
    CHECK_OK(tok_decode(t, ids, 2, 0, &dec, &dn));
    CHECK(dn == 4 && dec && memcmp(dec, "\xEF\xBF\xBD" "a", 4) == 0);
    free(dec);
}

static void test_stream_holds_back(const tokenizer *t) {
    /* "€" is E2 82 AC: nothing comes out until the third byte arrives. */
    const char *names[3] = {"\xc3\xa2", "\xc4\xa4", "\xc2\xac"}; /* â Ĥ ¬ */
    tok_stream *s = tok_stream_new(t, 0);
    const char *out;
    size_t n;
    for (int i = 0; i < 3; i++) {
        int32_t id = tok_token_id(t, names[i]);
        CHECK(id >= 0);
        CHECK_OK(tok_stream_push(s, id, &out, &n));
        if (i < 2) CHECK_EQ_INT(n, 0);
        else CHECK(n == 3 && memcmp(out, "\xE2\x82\xAC", 3) == 0);
    }
    CHECK_FAILS(tok_stream_push(s, -5, &out, &n));
    CHECK_OK(tok_stream_push(s, tok_token_id(t, names[0]), &out, &n));
    CHECK_EQ_INT(n, 0);
    CHECK_OK(tok_stream_flush(s, &out, &n));
    CHECK(n == 3 && memcmp(out, "\xEF\xBF\xBD", 3) == 0);
    CHECK_OK(tok_stream_flush(s, &out, &n));
    CHECK_EQ_INT(n, 0);
    tok_stream_free(s);
    tok_stream_free(NULL);
    CHECK(tok_stream_new(NULL, 0) == NULL);
}

static void test_big_inputs(const tokenizer *t) {
    /* Long runs must not blow PCRE2's stack nor take quadratic time. */
    size_t n = 200000;
    char *s = malloc(n);
    const char fill[3] = {' ', 'a', '\n'};
    for (int k = 0; k < 3; k++) {
        memset(s, fill[k], n);
        int32_t *ids = NULL;
        size_t m = 0;
        CHECK_OK(tok_encode(t, s, n, &ids, &m));
        char *dec = NULL;
        size_t dn = 0;
        CHECK_OK(tok_decode(t, ids, m, 0, &dec, &dn));
        CHECK(dn == n && memcmp(dec, s, n) == 0);
        free(dec);
        free(ids);
    }
    free(s);
}

static void test_errors(const tokenizer *t) {
    tokenizer *x = (tokenizer *)1;
    CHECK_FAILS(tok_load("/nonexistent/tokenizer.json", &x));
    CHECK(x == NULL);
/* Byte-level pre-tokenizer and decoder, so that the model part is what gets judged. */
#define BL "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"}, "
    const char *good = "{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, "
                       "\"ab\": 2}, \"merges\": [\"a b\"]}}";
    CHECK_OK(tok_load_json(good, strlen(good), &x));
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(tok_encode(x, "abab", 4, &ids, &n));
    CHECK(n == 2 && ids[0] == 2 && ids[1] == 2);
    free(ids);
    tok_free(x);
    /* Each must fail, with a message that contains the given words. */
    static const struct { const char *json, *why; } bad[] = {
        {"{\"model\": ", "not valid JSON"},
        {"[1, 2]", "not a JSON object"},
        {"{" BL "\"version\": \"1.0\"}", "no \"model\""},
        {"{" BL "\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", "WordPiece"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2},"
         " \"merges\": [\"a c\"]}}", "'c' is not in the vocabulary"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1},"
         " \"merges\": [[\"a\", \"b\"]]}}", "merged token is not in the vocabulary"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1},"
         " \"merges\": [\"a b c\"]}}", "one space"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}", "id -3"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1e12}, \"merges\": []}}", "id 1e+12"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0.5}, \"merges\": []}}", "id 0.5"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}",
         "id 0 given to both"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}",
         "not a number"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": {}}}",
         "not an array"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\xff\": 0}, \"merges\": []}}",
         "not valid UTF-8"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", "empty vocab"},
        {"{" BL "\"normalizer\": {\"type\": \"NFC\"}, \"model\": {\"type\": \"BPE\", \"vocab\":"
         " {\"a\": 0}, \"merges\": []}}", "normalizer 'NFC'"},
        {"{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"decoder\": {\"type\": \"ByteLevel\"},"
         " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", "Whitespace"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\":"
         " {\"a\": 0}, \"merges\": []}}", "decoder"},
        {"{" BL "\"post_processor\": {\"type\": \"TemplateProcessing\"}, \"model\": {\"type\":"
         " \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", "TemplateProcessing"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"a\": 0},"
         " \"merges\": []}}", "byte_fallback"},
        {"{" BL "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": {\"a\": 0},"
         " \"merges\": []}}", "unk_token"},
        {"{" BL "\"added_tokens\": [{\"content\": \"x\"}], \"model\": {\"type\": \"BPE\","
         " \"vocab\": {\"a\": 0}, \"merges\": []}}", "numeric id"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        x = (tokenizer *)1;
        err_clear();
        int rc = tok_load_json(bad[i].json, strlen(bad[i].json), &x);
        CHECK_MSG(rc < 0 && x == NULL && strstr(err_msg(), bad[i].why),
                  "bad json %zu: rc %d, message \"%s\", wanted \"%s\"", i, rc, err_msg(),
                  bad[i].why);
    }
    CHECK_FAILS(tok_load_vocab_merges("/nonexistent/vocab.json", "/nonexistent/merges.txt", NULL,
                                      &x));
    /* A merges.txt that names an unknown token fails with its line number. */
    char path[] = "/tmp/tv_test_mergesXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        FILE *f = fdopen(fd, "wb");
        fputs("#version: 0.2\n\xc4\xa0 t\nq \xe2\x98\x83\n", f);
        fclose(f);
        CHECK_FAILS(tok_load_vocab_merges(check_data("tokenizer/vocab.json"), path, NULL, &x));
        CHECK(strstr(err_msg(), ":3") != NULL);
        unlink(path);
    }
    /* Encode refuses invalid UTF-8; decode refuses ids that name nothing. */
    ids = (int32_t *)1;
    n = 5;
    const char *inv[] = {"\xff", "ab\xc3", "\xed\xa0\x80", "\xc0\xaf", "x\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof inv / sizeof *inv; i++) {
        CHECK_FAILS(tok_encode(t, inv[i], strlen(inv[i]), &ids, &n));
        CHECK(ids == NULL && n == 0);
    }
    int32_t bad_ids[3][2] = {{1, -1}, {1, 8231}, {INT32_MAX, 2}};
    for (int i = 0; i < 3; i++) {
        char *out = (char *)1;
        size_t len = 7;
        CHECK_FAILS(tok_decode(t, bad_ids[i], 2, 0, &out, &len));
        CHECK(out == NULL && len == 0);
    }
    CHECK_OK(tok_encode(t, "", 0, &ids, &n));
    CHECK(n == 0);
    free(ids);
    tok_free(NULL);
}

/* ---- robustness -------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(uint32_t n) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33) % n;
}

/* Damaged tokenizer files must load or fail cleanly (ASan build: no crash, no leak). */
static void test_mutated_json(void) {
    char *src = NULL;
    size_t len = 0;
    CHECK_OK(mf_read_all(check_data("tokenizer/legacy.json"), 1 << 20, &src, &len));
    if (!src) return;
    char *buf = malloc(len + 1);
    int loaded = 0, failed = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(buf, src, len);
        size_t n = len;
        int k = 1 + (int)rnd(4);
        for (int j = 0; j < k; j++) {
            size_t at = rnd((uint32_t)n);
            switch (rnd(4)) {
            case 0: buf[at] = (char)rnd(256); break;
            case 1: n = at; break;                           /* truncate */
            case 2: buf[at] = "{}[]\\\"0:,- "[rnd(10)]; break; /* structure */
            default: buf[at] = (char)(0x80 + rnd(64)); break; /* stray UTF-8 */
            }
            if (n == 0) n = 1;
        }
        tokenizer *t = NULL;
        err_clear();
        if (tok_load_json(buf, n, &t) == 0) {
            loaded++;
            int32_t *ids = NULL;
            size_t m = 0;
            const char *text = "the cat <mask> [SEP] caf\xc3\xa9 123 \xf0\x9f\x98\x80";
            if (tok_encode(t, text, strlen(text), &ids, &m) == 0) {
                char *dec = NULL;
                size_t dn;
                if (tok_decode(t, ids, m, 0, &dec, &dn) == 0) CHECK(valid_utf8(dec, dn));
                free(dec);
            }
            free(ids);
            tok_free(t);
        } else {
            failed++;
            CHECK(t == NULL && err_msg()[0]);
        }
    }
    CHECK(failed > 100); /* the mutations did hit something */
    printf("mutated tokenizer.json: %d loaded, %d refused\n", loaded, failed);
    free(buf);
    free(src);
}

/* Random valid UTF-8 from all planes: decode(encode(s)) == s (no normalizer, byte-level);
 * random bytes: encode either refuses (invalid UTF-8) or round-trips. */
static void test_random_roundtrip(const tokenizer *t) {
    int bad = 0;
    char s[512];
    for (int it = 0; it < 2000; it++) {
        size_t n = 0;
        int raw = it % 4 == 0;
        size_t want = rnd(120);
        while (n < want) {
            if (raw) {
                s[n++] = (char)rnd(256);
                continue;
            }
            uint32_t r = rnd(10), cp;
            if (r < 4) cp = rnd(0x80);
            else if (r < 6) cp = 0x80 + rnd(0x780);
            else if (r < 8) cp = 0x800 + rnd(0xF800);
            else cp = 0x10000 + rnd(0x100000);
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            if (cp < 0x80) s[n++] = (char)cp;
            else if (cp < 0x800) s[n++] = (char)(0xC0 | cp >> 6), s[n++] = (char)(0x80 | (cp & 63));
            else if (cp < 0x10000) {
                s[n++] = (char)(0xE0 | cp >> 12);
                s[n++] = (char)(0x80 | (cp >> 6 & 63));
                s[n++] = (char)(0x80 | (cp & 63));
            } else {
                s[n++] = (char)(0xF0 | cp >> 18);
                s[n++] = (char)(0x80 | (cp >> 12 & 63));
                s[n++] = (char)(0x80 | (cp >> 6 & 63));
                s[n++] = (char)(0x80 | (cp & 63));
            }
        }
        int32_t *ids = NULL;
        size_t m = 0;
        int rc = tok_encode(t, s, n, &ids, &m);
        if (rc) {
            if (!raw || valid_utf8(s, n)) bad++;
            continue;
        }
        if (!valid_utf8(s, n)) bad++;
        char *dec = NULL;
        size_t dn = 0;
        if (tok_decode(t, ids, m, 0, &dec, &dn) || dn != n || memcmp(dec, s, n) != 0) bad++;
        free(dec);
        free(ids);
    }
    CHECK_EQ_INT(bad, 0);
}

/* ---- threads ----------------------------------------------------------------------------- */

typedef struct {
    const tokenizer *t;
    const gfile *g;
    int failures;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    a->failures = run_cases(a->t, a->g, "thread", 0);
    return NULL;
}

static void test_threads(const tokenizer *t) {
    gfile g;
    if (gfile_load(&g, "tokenizer/cases_files.bin") != 0) {
        CHECK_MSG(0, "cannot read cases_files.bin");
        gfile_free(&g);
        return;
    }
    enum { NT = 4 };
    pthread_t th[NT];
    worker_arg args[NT];
    for (int i = 0; i < NT; i++) {
        args[i] = (worker_arg){t, &g, -1};
        CHECK(pthread_create(&th[i], NULL, worker, &args[i]) == 0);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(args[i].failures, 0);
    }
    gfile_free(&g);
}

int main(void) {
    tokenizer *t = NULL;
    CHECK_OK(tok_load(check_data("tokenizer/tokenizer.json"), &t));
    if (!t) return check_finish("test_tokenizer");
    test_lookups(t);
    test_golden_file(t, "tokenizer/cases.bin");
    test_decode_goldens(t);
    test_stream_holds_back(t);
    test_big_inputs(t);
    test_errors(t);
    test_mutated_json();
    test_random_roundtrip(t);
    test_threads(t);

    tokenizer *f = NULL;
    char vocab[4096], merges[4096], added[4096]; /* check_data reuses one buffer */
    snprintf(vocab, sizeof vocab, "%s", check_data("tokenizer/vocab.json"));
    snprintf(merges, sizeof merges, "%s", check_data("tokenizer/merges.txt"));
    snprintf(added, sizeof added, "%s", check_data("tokenizer/added_tokens.json"));
    CHECK_OK(tok_load_vocab_merges(vocab, merges, added, &f));
    if (f) {
        CHECK_EQ_INT(tok_vocab_size(f), tok_vocab_size(t));
        CHECK(tok_is_special(f, 8192));
        test_golden_file(f, "tokenizer/cases_files.bin");
    }
    tok_free(f);

    tokenizer *l = NULL;
    CHECK_OK(tok_load(check_data("tokenizer/legacy.json"), &l));
    if (l) test_golden_file(l, "tokenizer/cases_legacy.bin");
    tok_free(l);

    tok_free(t);
    return check_finish("test_tokenizer");
}
