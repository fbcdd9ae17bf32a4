/* test_chat — conversations -> prompt ids. Expectations are written out by hand from the
 * manifest's template strings ("<s>[INST] <Img><ImageHere></Img> {question} [/INST]" and
 * "{answer}<s>[INST] {question} [/INST]") and tokenized as whole text runs; the single-turn case
 * is also checked against the PyTorch reference's segment ids (tests/data/tinygptv/tiny.json). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "check.h"
#include "manifest.h"
#include "mapfile.h"
#include "prompt.h"
#include "tokenizer.h"

static tokenizer *tok;
static manifest *mf;

#define IMG "\x01" /* marks an image position in an expectation string */

/* ids of expect: text runs tokenized whole, IMG -> PROMPT_IMAGE. */
static int32_t *expect_ids(const char *expect, size_t *n) {
    int32_t *out = NULL;
    *n = 0;
    for (const char *s = expect;;) {
        const char *m = strchr(s, '\x01');
        size_t len = m ? (size_t)(m - s) : strlen(s);
        int32_t *ids = NULL;
        size_t k = 0;
        if (len && tok_encode(tok, s, len, &ids, &k) != 0)
            k = 0;
        out = tv_xrealloc(out, (*n + k + 1) * sizeof *out);
        if (k)
            memcpy(out + *n, ids, k * sizeof *ids);
        *n += k;
        free(ids);
        if (!m)
            return out;
        out[(*n)++] = PROMPT_IMAGE;
        s = m + 1;
    }
}

/* chat_build over msgs must give expect's ids and the image order want_order. */
static void check_prompt(const char *what, const msg_chat *msgs, size_t n, size_t n_images,
                         const char *expect, const int32_t *want_order, int n_want) {
    prompt_ids p;
    int32_t *order = NULL;
    int rc = chat_build(mf, tok, msgs, n, n_images, 8, 2048, &p, &order);
    CHECK_MSG(rc == 0, "%s: %s", what, err_msg());
    size_t ne;
    int32_t *e = expect_ids(expect, &ne);
    CHECK_MSG(p.n == ne && (ne == 0 || memcmp(p.ids, e, ne * sizeof *e) == 0),
              "%s: %zu ids, want %zu", what, p.n, ne);
    CHECK_MSG(p.n_images == n_want, "%s: %d images, want %d", what, p.n_images, n_want);
    for (int i = 0; i < n_want && i < p.n_images; i++)
        CHECK_MSG(order && order[i] == want_order[i], "%s: order[%d]", what, i);
    free(e);
    free(order);
    prompt_ids_free(&p);
}

static msg_part T(const char *s) { return (msg_part){(char *)s, -1}; }
static msg_part I(int k) { return (msg_part){NULL, k}; }

static void test_single_turn(void) {
    msg_part u[] = {I(0), T("What is it?")};
    msg_chat m[] = {{"user", u, 2}};
    check_prompt("one image", m, 1, 1, "<s>[INST] <Img>" IMG "</Img> What is it? [/INST]",
                 (int32_t[]){0}, 1);
    /* same ids as prompt_first, i.e. as `tinyvlm ask` */
    prompt_ids p1, p2;
    int32_t *order = NULL;
    CHECK_OK(prompt_first(mf, tok, "What is it?", &p1));
    CHECK_OK(chat_build(mf, tok, m, 1, 1, 8, 2048, &p2, &order));
    CHECK(p1.n == p2.n && memcmp(p1.ids, p2.ids, p1.n * sizeof *p1.ids) == 0);
    prompt_ids_free(&p1);
    prompt_ids_free(&p2);
    free(order);

    msg_part two[] = {T("Compare"), I(1), T("with"), I(0)};
    msg_chat m2[] = {{"user", two, 4}};
    check_prompt("two images, one slot", m2, 1, 2,
                 "<s>[INST] <Img>" IMG IMG "</Img> Compare with [/INST]", (int32_t[]){1, 0}, 2);

    msg_part none[] = {T("Hello there")};
    msg_chat m3[] = {{"user", none, 1}};
    check_prompt("no image", m3, 1, 0, "<s>[INST] Hello there [/INST]", NULL, 0);

    msg_part lit[] = {T("is <ImageHere> {answer} text?")};
    msg_chat m4[] = {{"user", lit, 1}};
    check_prompt("image token typed by the user stays text", m4, 1, 0,
                 "<s>[INST] is <ImageHere> {answer} text? [/INST]", NULL, 0);

    msg_part sys[] = {T("Be brief.")};
    msg_chat m5[] = {{"system", sys, 1}, {"user", u, 2}};
    check_prompt("system text before the question", m5, 2, 1,
                 "<s>[INST] <Img>" IMG "</Img> Be brief. What is it? [/INST]", (int32_t[]){0}, 1);

    msg_part a[] = {T("A")}, b[] = {I(0), T("B")};
    msg_chat m6[] = {{"user", a, 1}, {"user", b, 2}};
    check_prompt("consecutive user messages merge", m6, 2, 1,
                 "<s>[INST] <Img>" IMG "</Img> A B [/INST]", (int32_t[]){0}, 1);
}

static void test_multi_turn(void) {
    msg_part u1[] = {I(0), T("Q1")}, a1[] = {T("A1")}, u2[] = {T("Q2")};
    msg_chat m[] = {{"user", u1, 2}, {"assistant", a1, 1}, {"user", u2, 1}};
    check_prompt("follow-up", m, 3, 1,
                 "<s>[INST] <Img>" IMG "</Img> Q1 [/INST]A1<s>[INST] Q2 [/INST]", (int32_t[]){0},
                 1);

    msg_part v1[] = {T("Q1")}, v2[] = {I(1), I(0), T("Q2")};
    msg_chat m2[] = {{"user", v1, 1}, {"assistant", a1, 1}, {"user", v2, 3}};
    check_prompt("images in the second turn", m2, 3, 2,
                 "<s>[INST] Q1 [/INST]A1<s>[INST] <Img>" IMG IMG "</Img> Q2 [/INST]",
                 (int32_t[]){1, 0}, 2);

    msg_part w3[] = {I(0), T("Q3")};
    msg_chat m3[] = {{"user", u1, 2}, {"assistant", a1, 1}, {"user", u2, 1},
                     {"assistant", (msg_part[]){T("A2")}, 1}, {"user", w3, 2}};
    check_prompt("the same image twice in three turns", m3, 5, 1,
                 "<s>[INST] <Img>" IMG "</Img> Q1 [/INST]A1<s>[INST] Q2 [/INST]A2<s>[INST] <Img>"
                 IMG "</Img> Q3 [/INST]",
                 (int32_t[]){0, 0}, 2);
}

/* The reference's own split of its prompt (tiny.json "segment_ids"), made by Python. */
static void test_reference(void) {
    char *json = NULL;
    size_t len;
    CHECK_OK(mf_read_all(check_data("tinygptv/tiny.json"), 1 << 20, &json, &len));
    cJSON *root = json ? cJSON_ParseWithLength(json, len) : NULL;
    const cJSON *q = cJSON_GetObjectItem(root, "question"),
                *segs = cJSON_GetObjectItem(root, "segment_ids");
    CHECK(cJSON_IsString(q) && cJSON_GetArraySize(segs) == 2);
    if (cJSON_IsString(q) && cJSON_GetArraySize(segs) == 2) {
        msg_part u[] = {I(0), T(q->valuestring)};
        msg_chat m[] = {{"user", u, 2}};
        prompt_ids p;
        int32_t *order = NULL;
        CHECK_OK(chat_build(mf, tok, m, 1, 1, 8, 2048, &p, &order));
        size_t k = 0, ok = 1;
        for (const cJSON *s = segs->child; s; s = s->next) {
            if (s != segs->child)
                ok &= k < p.n && p.ids[k++] == PROMPT_IMAGE;
            for (const cJSON *v = s->child; v; v = v->next)
                ok &= k < p.n && p.ids[k++] == (int32_t)v->valuedouble;
        }
        CHECK_MSG(ok && k == p.n, "ids differ from the reference's segments");
        prompt_ids_free(&p);
        free(order);
    }
    cJSON_Delete(root);
    free(json);
}

static void test_errors(void) {
    prompt_ids p;
    int32_t *order = NULL;
    msg_part u[] = {I(0), T("What is it?")}, txt[] = {T("x")}, bad_img[] = {I(3)},
             neg[] = {(msg_part){NULL, -2}};
    msg_chat ok[] = {{"user", u, 2}};
    CHECK_FAILS(chat_build(mf, tok, ok, 0, 1, 8, 2048, &p, &order)); /* no messages */
    CHECK_FAILS(chat_build(mf, tok, (msg_chat[]){{"robot", txt, 1}}, 1, 0, 8, 2048, &p, &order));
    CHECK_FAILS(chat_build(mf, tok, (msg_chat[]){{"assistant", txt, 1}}, 1, 0, 8, 2048, &p, &order));
    CHECK_FAILS(chat_build(mf, tok, (msg_chat[]){{"user", txt, 1}, {"assistant", txt, 1}}, 2, 0, 8,
                           2048, &p, &order));
    CHECK_FAILS(chat_build(mf, tok, (msg_chat[]){{"user", bad_img, 1}}, 1, 1, 8, 2048, &p, &order));
    CHECK_FAILS(chat_build(mf, tok, (msg_chat[]){{"user", neg, 1}}, 1, 1, 8, 2048, &p, &order));
    CHECK_FAILS(chat_build(mf, tok, (msg_chat[]){{"user", txt, 1}, {"assistant", u, 2}, {"user", txt, 1}},
                           3, 1, 8, 2048, &p, &order));
    CHECK_FAILS(chat_build(mf, tok, (msg_chat[]){{NULL, txt, 1}}, 1, 0, 8, 2048, &p, &order));
    msg_part bad_utf8[] = {T("caf\xc3")};
    CHECK_FAILS(chat_build(mf, tok, (msg_chat[]){{"user", bad_utf8, 1}}, 1, 0, 8, 2048, &p, &order));
    CHECK(p.n == 0 && p.ids == NULL && order == NULL);

    /* the context limit: exactly its rows pass, one fewer is TV_ELIMIT */
    CHECK_OK(chat_build(mf, tok, ok, 1, 1, 8, 2048, &p, &order));
    int64_t rows = prompt_rows(&p, 8);
    CHECK(rows == (int64_t)p.n - 1 + 8);
    prompt_ids_free(&p);
    free(order);
    CHECK_OK(chat_build(mf, tok, ok, 1, 1, 8, rows, &p, &order));
    prompt_ids_free(&p);
    free(order);
    CHECK_EQ_INT(chat_build(mf, tok, ok, 1, 1, 8, rows - 1, &p, &order), TV_ELIMIT);
    CHECK(strstr(err_msg(), "context") != NULL);
    /* a long question: the image rows count too */
    char *longq = tv_xmalloc(30001);
    for (int i = 0; i < 30000; i++)
        longq[i] = i % 5 == 4 ? ' ' : 'a' + i % 5;
    longq[30000] = 0;
    msg_part lp[] = {I(0), T(longq)};
    CHECK_EQ_INT(chat_build(mf, tok, (msg_chat[]){{"user", lp, 2}}, 1, 1, 32, 2048, &p, &order),
                 TV_ELIMIT);
    CHECK(p.ids == NULL && order == NULL);
    free(longq);
}

int main(void) {
    CHECK_OK(tok_load(check_data("tinygptv/model/tokenizer.json"), &tok));
    CHECK_OK(manifest_load(check_data("manifest"), &mf));
    if (!tok || !mf)
        return check_finish("test_chat");
    test_single_turn();
    test_multi_turn();
    test_reference();
    test_errors();
    tok_free(tok);
    manifest_free(mf);
    return check_finish("test_chat");
}
