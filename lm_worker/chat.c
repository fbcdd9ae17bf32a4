/* chat — conversation -> turns -> filled template -> prompt ids with image markers. */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

/* ---- a growing string ------------------------------------------------------------------------ */

typedef struct {
    char *s;
    size_t n, cap;
} chat_str;

static void str_add(chat_str *b, const char *s, size_t len) {
    if (b->n + len + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64;
        while (c < b->n + len + 1)
            c *= 2;
        b->s = tv_xrealloc(b->s, c);
        b->cap = c;
    }
    if (len)
        memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = '\0';
}

static void str_adds(chat_str *b, const char *s) { str_add(b, s, strlen(s)); }

/* Appends s to b with a space between when b already holds text. */
static void str_join(chat_str *b, const char *s) {
    if (!s || !*s)
        return;
    if (b->n)
        str_add(b, " ", 1);
    str_adds(b, s);
}

/* ---- turns --------------------------------------------------------------------------------- */

typedef struct {
    chat_str q, a;        /* question, and the answer that followed it (if any) */
    int answered;
    int32_t *imgs;        /* request image indices in part order */
    size_t n_imgs;
} chat_turn;

typedef struct {
    chat_turn *t;
    size_t n;
    chat_str system;
} chat_conv;

static void conv_free(chat_conv *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->t[i].q.s);
        free(c->t[i].a.s);
        free(c->t[i].imgs);
    }
    free(c->t);
    free(c->system.s);
    memset(c, 0, sizeof *c);
}

/* Adds one message's parts to the conversation. */
static int conv_add(chat_conv *c, const msg_chat *m, size_t idx, size_t n_images) {
    const char *role = m->role ? m->role : "";
    int user = !strcmp(role, "user"), asst = !strcmp(role, "assistant"),
        sys = !strcmp(role, "system");
    if (!user && !asst && !sys)
        return err_set(TV_EINVAL, "messages[%zu]: unknown role \"%s\" (system, user or assistant)",
                       idx, role);
    if (asst && c->n == 0)
        return err_set(TV_EINVAL, "messages[%zu]: an assistant message before any user message",
                       idx);
    if (user && (c->n == 0 || c->t[c->n - 1].answered)) {
        c->t = tv_xrealloc(c->t, (c->n + 1) * sizeof *c->t);
        memset(&c->t[c->n++], 0, sizeof *c->t);
    }
    chat_turn *t = c->n ? &c->t[c->n - 1] : NULL;
    if (asst)
        t->answered = 1;
    chat_str *dst = sys ? &c->system : asst ? &t->a : &t->q;
    for (size_t j = 0; j < m->n_parts; j++) {
        const msg_part *p = &m->parts[j];
        if (p->image < -1 || (p->image >= 0 && (size_t)p->image >= n_images))
            return err_set(TV_EINVAL, "messages[%zu]: part %zu names image %d of %zu", idx, j,
                           (int)p->image, n_images);
        if (p->image >= 0 && !user)
            return err_set(TV_EINVAL, "messages[%zu]: images are only accepted in user messages",
                           idx);
        if (p->image >= 0) {
            t->imgs = tv_xrealloc(t->imgs, (t->n_imgs + 1) * sizeof *t->imgs);
            t->imgs[t->n_imgs++] = p->image;
        } else {
            str_join(dst, p->text);
        }
    }
    return TV_OK;
}

static int conv_build(const msg_chat *msgs, size_t n, size_t n_images, chat_conv *c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < n; i++) {
        int rc = conv_add(c, &msgs[i], i, n_images);
        if (rc)
            return rc;
    }
    if (c->n == 0)
        return err_set(TV_EINVAL, "messages: no user message");
    if (c->t[c->n - 1].answered)
        return err_set(TV_EINVAL, "messages: the last message must be from the user");
    if (c->system.n) { /* no system slot in the template: in front of the first question */
        chat_str q = {0};
        str_adds(&q, c->system.s);
        str_add(&q, " ", 1);
        if (c->t[0].q.n)
            str_adds(&q, c->t[0].q.s);
        free(c->t[0].q.s);
        c->t[0].q = q;
    }
    return TV_OK;
}

/* ---- templates ----------------------------------------------------------------------------- */

/* The image slot of chat.first: the whitespace-delimited word [*start, *end) holding the image
 * token at *tok. Returns 0, or TV_EINVAL when the template has no (or more than one) slot. */
static int find_slot(const manifest *mf, size_t *start, size_t *tok, size_t *end) {
    const char *f = mf->chat.first, *it = mf->chat.image_token;
    const char *hit = it && *it ? strstr(f, it) : NULL;
    if (!hit)
        return err_set(TV_EINVAL, "this model's chat template has no image slot");
    if (strstr(hit + strlen(it), it))
        return err_set(TV_EINVAL, "this model's chat template has more than one image slot");
    size_t s = (size_t)(hit - f), e = s + strlen(it);
    *tok = s;
    while (s > 0 && f[s - 1] != ' ' && f[s - 1] != '\n' && f[s - 1] != '\t')
        s--;
    while (f[e] && f[e] != ' ' && f[e] != '\n' && f[e] != '\t')
        e++;
    *start = s, *end = e;
    return TV_OK;
}

/* The slot word with the image token repeated n times. */
static void add_slot(chat_str *b, const manifest *mf, size_t start, size_t tok, size_t end,
                     size_t n) {
    const char *f = mf->chat.first;
    size_t itl = strlen(mf->chat.image_token);
    str_add(b, f + start, tok - start);
    for (size_t i = 0; i < n; i++)
        str_add(b, f + tok, itl);
    str_add(b, f + tok + itl, end - tok - itl);
}

/* The template of turn k (0-based) with n_imgs images, into b. */
static int turn_template(const manifest *mf, size_t k, size_t n_imgs, chat_str *b) {
    size_t start = 0, tok = 0, end = 0;
    int has_slot = find_slot(mf, &start, &tok, &end) == TV_OK;
    err_clear();
    if (n_imgs && !has_slot)
        return err_set(TV_EINVAL, "this model's chat template has no (single) image slot");
    if (k == 0) {
        const char *f = mf->chat.first;
        if (!has_slot) {
            str_adds(b, f);
            return TV_OK;
        }
        if (n_imgs == 0) { /* drop the slot word and one space next to it */
            if (f[end] == ' ')
                end++;
            else if (start > 0 && f[start - 1] == ' ')
                start--;
        }
        str_add(b, f, start);
        if (n_imgs)
            add_slot(b, mf, start, tok, end, n_imgs);
        str_adds(b, f + end);
        return TV_OK;
    }
    const char *nx = mf->chat.next, *q = strstr(nx, "{question}");
    if (n_imgs == 0) {
        str_adds(b, nx);
        return TV_OK;
    }
    if (!q)
        return err_set(TV_EINVAL, "this model's follow-up template has no {question}");
    str_add(b, nx, (size_t)(q - nx));
    add_slot(b, mf, start, tok, end, n_imgs);
    str_add(b, " ", 1);
    str_adds(b, q);
    return TV_OK;
}

/* ---- assembly ------------------------------------------------------------------------------ */

typedef struct {
    const tokenizer *tok;
    chat_str text;        /* filled text since the last image marker */
    prompt_ids *out;
    size_t cap;
    int32_t *order;
} chat_asm;

static void asm_push(chat_asm *a, int32_t id) {
    if (a->out->n + 1 > a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->out->ids = tv_xrealloc(a->out->ids, a->cap * sizeof *a->out->ids);
    }
    a->out->ids[a->out->n++] = id;
}

/* Tokenizes the pending text run and appends its ids. */
static int asm_flush(chat_asm *a) {
    if (!a->text.n)
        return TV_OK;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tok_encode(a->tok, a->text.s, a->text.n, &ids, &n);
    a->text.n = 0;
    if (rc)
        return err_wrap(rc, "prompt");
    for (size_t i = 0; i < n; i++)
        asm_push(a, ids[i]);
    free(ids);
    return TV_OK;
}

/* Fills one turn's template (split at the image token first) into the assembly. */
static int asm_turn(chat_asm *a, const char *tmpl, const char *image_token, const char *question,
                    const char *answer, const int32_t *imgs) {
    size_t itl = image_token ? strlen(image_token) : 0, k = 0;
    for (const char *s = tmpl;;) {
        const char *hit = itl ? strstr(s, image_token) : NULL;
        size_t len = hit ? (size_t)(hit - s) : strlen(s);
        char *piece = tv_xmalloc(len + 1), *filled = NULL;
        memcpy(piece, s, len);
        piece[len] = '\0';
        int rc = prompt_format(piece, question, answer, &filled);
        free(piece);
        if (rc)
            return rc;
        str_adds(&a->text, filled);
        free(filled);
        if (!hit)
            return TV_OK;
        if ((rc = asm_flush(a)))
            return rc;
        a->order = tv_xrealloc(a->order, ((size_t)a->out->n_images + 1) * sizeof *a->order);
        a->order[a->out->n_images++] = imgs[k++];
        asm_push(a, PROMPT_IMAGE);
        s = hit + itl;
    }
}

static int chat_assemble(const manifest *mf, const chat_conv *c, chat_asm *a) {
    int rc = TV_OK;
    for (size_t k = 0; !rc && k < c->n; k++) {
        chat_str tmpl = {0};
        rc = turn_template(mf, k, c->t[k].n_imgs, &tmpl);
        const char *answer = k ? c->t[k - 1].a.s : NULL;
        if (!rc)
            rc = asm_turn(a, tmpl.s, mf->chat.image_token, c->t[k].q.s ? c->t[k].q.s : "",
                          answer ? answer : "", c->t[k].imgs);
        free(tmpl.s);
    }
    if (!rc)
        rc = asm_flush(a);
    return rc;
}

int chat_build(const manifest *mf, const tokenizer *tok, const msg_chat *msgs, size_t n,
               size_t n_images, int image_rows, int64_t max_rows, prompt_ids *out,
               int32_t **order) {
    memset(out, 0, sizeof *out);
    *order = NULL;
    if (!mf || !tok || (n && !msgs))
        return err_set(TV_EINVAL, "chat_build: NULL argument");
    chat_conv c;
    chat_asm a = {.tok = tok, .out = out};
    int rc = conv_build(msgs, n, n_images, &c);
    if (!rc)
        rc = chat_assemble(mf, &c, &a);
    int64_t rows = rc ? 0 : prompt_rows(out, image_rows);
    if (!rc && (rows < 0 || rows > max_rows))
        rc = err_set(TV_ELIMIT, "the prompt is %lld positions; the model's context is %lld",
                     (long long)rows, (long long)max_rows);
    conv_free(&c);
    free(a.text.s);
    if (rc) {
        prompt_ids_free(out);
        free(a.order);
        return rc;
    }
    *order = a.order;
    return TV_OK;
}
