/* stopper: for many texts split into random pieces, the concatenated output equals the oracle
 * "cut the whole text before the first stop string" (strstr on the full text), and no emitted
 * piece ever ends inside a stop string that later completes. */
#include "check.h"
#include "stopper.h"

static const char *stops[] = {"###", "Assistant:", "[/INST]"};

static size_t oracle_cut(const char *text) {
    size_t cut = strlen(text);
    for (int i = 0; i < 3; i++) {
        const char *h = strstr(text, stops[i]);
        if (h && (size_t)(h - text) < cut) cut = (size_t)(h - text);
    }
    return cut;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t next_rand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)rng;
}

static void run_case(stopper *s, const char *text) {
    stopper_reset(s);
    size_t n = strlen(text), want = oracle_cut(text), got = 0, pos = 0;
    char out[512];
    int stopped = 0;
    while (pos < n) {
        size_t piece = 1 + next_rand() % 5;
        if (pos + piece > n) piece = n - pos;
        const char *o;
        size_t ol;
        stopped |= stopper_push(s, text + pos, piece, &o, &ol);
        CHECK(got + ol <= sizeof out);
        if (got + ol <= sizeof out) memcpy(out + got, o, ol), got += ol;
        pos += piece;
        /* Whatever was emitted so far is a prefix of the final answer. */
        CHECK_MSG(got <= want && memcmp(out, text, got) == 0, "text \"%s\": emitted beyond the cut", text);
    }
    const char *o;
    size_t ol;
    stopper_flush(s, &o, &ol);
    if (got + ol <= sizeof out) memcpy(out + got, o, ol), got += ol;
    CHECK_MSG(got == want && memcmp(out, text, want) == 0, "text \"%s\": got %zu bytes, want %zu",
              text, got, want);
    CHECK_EQ_INT(stopped, want < n);
}

int main(void) {
    stopper *s = NULL;
    CHECK_OK(stopper_new(stops, 3, &s));
    static const char *fixed[] = {
        "A red circle.###Human: next", "no stop at all", "##not quite # ## ", "ends with ##",
        "Assistant: at the start", "x [/INST", "nested [/IN[/INST] y", "#", "", "As", "Assistant",
        "a##b###c", "[/INST]###", "The answer is {<12><40><33><77>}###",
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        for (int rep = 0; rep < 20; rep++) run_case(s, fixed[i]);
    /* Random texts over an alphabet that makes partial matches frequent. */
    const char alphabet[] = "#[/INSTA]sitn: ab";
    char text[64];
    for (int t = 0; t < 3000; t++) {
        size_t n = next_rand() % 40;
        for (size_t i = 0; i < n; i++) text[i] = alphabet[next_rand() % (sizeof alphabet - 1)];
        text[n] = 0;
        run_case(s, text);
    }
    stopper_free(s);
    stopper_free(NULL);

    /* No stop strings: everything passes through at once. */
    CHECK_OK(stopper_new(NULL, 0, &s));
    const char *o;
    size_t ol;
    CHECK_EQ_INT(stopper_push(s, "###", 3, &o, &ol), 0);
    CHECK(ol == 3 && memcmp(o, "###", 3) == 0);
    stopper_free(s);
    const char *bad[] = {"ok", ""};
    CHECK_FAILS(stopper_new(bad, 2, &s));
    return check_finish("test_stopper");
}
