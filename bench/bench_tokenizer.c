/* Tokenizer encode throughput on the golden corpus (tests/data/tokenizer: 10,503 strings of
 * prose, code, whitespace runs, many scripts and emoji), one tok_encode call per string, as the
 * LM worker tokenizes prompts. Repeats the corpus until at least min_s seconds have passed.
 * Prints: "tokenizer encode: X MB/s (N bytes, N tokens, T s)".
 * bench/bench_tokenizer_hf.py times HF tokenizers on the same strings for the ratio.
 *   usage: bench_tokenizer [tokenizer.json [cases.bin [min_s]]] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "mapfile.h"
#include "tokenizer.h"

static uint32_t rd_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct {
    const char *text;
    size_t len;
} item;

/* The texts of a cases.bin (layout in tools/goldens/tokenizer.py); returns the count or -1. */
static long read_texts(const char *buf, size_t len, item **out) {
    const unsigned char *p = (const unsigned char *)buf, *end = p + len;
    if (len < 8 || memcmp(p, "TVTK", 4)) return -1;
    uint32_t n = rd_u32(p + 4);
    item *items = calloc(n ? n : 1, sizeof *items);
    p += 8;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k;
        if (end - p < 4 || (k = rd_u32(p), (size_t)(end - p - 4) < k)) goto bad;
        items[i] = (item){(const char *)p + 4, k};
        p += 4 + k;
        if (end - p < 4 || (k = rd_u32(p), (size_t)(end - p - 4) / 2 < k)) goto bad;
        p += 4 + 2 * (size_t)k;
        if (end - p < 4) goto bad;
        k = rd_u32(p);
        p += 4;
        if (k != 0xFFFFFFFFu) {
            if ((size_t)(end - p) < k) goto bad;
            p += k;
        }
    }
    *out = items;
    return n;
bad:
    free(items);
    return -1;
}

int main(int argc, char **argv) {
    const char *tj = argc > 1 ? argv[1] : TV_SOURCE_DIR "/tests/data/tokenizer/tokenizer.json";
    const char *cb = argc > 2 ? argv[2] : TV_SOURCE_DIR "/tests/data/tokenizer/cases.bin";
    double min_s = argc > 3 ? atof(argv[3]) : 2.0;
    tokenizer *t = NULL;
    char *buf = NULL;
    size_t len = 0;
    item *items = NULL;
    long n;
    if (tok_load(tj, &t) || mf_read_all(cb, (size_t)1 << 30, &buf, &len)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err_msg());
        return 1;
    }
    if ((n = read_texts(buf, len, &items)) < 0) {
        fprintf(stderr, "bench_tokenizer: %s is not a cases file\n", cb);
        return 1;
    }
    size_t bytes = 0, tokens = 0;
    int reps = 0;
    double t0 = clk_now_s(), el = 0;
    do {
        for (long i = 0; i < n; i++) {
            int32_t *ids;
            size_t m;
            if (tok_encode(t, items[i].text, items[i].len, &ids, &m)) {
                fprintf(stderr, "bench_tokenizer: %s\n", err_msg());
                return 1;
            }
            bytes += items[i].len;
            tokens += m;
            free(ids);
        }
        reps++;
        el = clk_now_s() - t0;
    } while (el < min_s);
    printf("tokenizer encode: %.2f MB/s (%zu bytes, %zu tokens, %.2f s; %ld strings x %d)\n",
           bytes / el / 1e6, bytes, tokens, el, n, reps);
    free(items);
    free(buf);
    tok_free(t);
    return 0;
}
