/* prompt — chat template, split at the image token, per-piece tokenization, embedding splice. */
#include "prompt.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

#define PROMPT_MAX_BYTES (16u << 20)

/* Appends len bytes to the growing buffer (*buf, *n, *cap); TV_ELIMIT past the cap. */
static int append(char **buf, size_t *n, size_t *cap, const char *s, size_t len) {
    if (len > PROMPT_MAX_BYTES - *n)
        return err_set(TV_ELIMIT, "prompt: longer than %u bytes", PROMPT_MAX_BYTES);
    if (*n + len + 1 > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *n + len + 1)
            c *= 2;
        *buf = tv_xrealloc(*buf, c);
        *cap = c;
    }
    memcpy(*buf + *n, s, len);
    *n += len;
    (*buf)[*n] = '\0';
    return TV_OK;
}

/* Substitutes into tmpl[0..len): "{question}" and "{answer}". */
static int format_n(const char *tmpl, size_t len, const char *question, const char *answer,
                    char **out) {
    static const char kq[] = "{question}", ka[] = "{answer}";
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = append(&buf, &n, &cap, "", 0);
    for (size_t i = 0; !rc && i < len;) {
        if (len - i >= sizeof kq - 1 && memcmp(tmpl + i, kq, sizeof kq - 1) == 0) {
            rc = append(&buf, &n, &cap, question ? question : "", question ? strlen(question) : 0);
            i += sizeof kq - 1;
        } else if (len - i >= sizeof ka - 1 && memcmp(tmpl + i, ka, sizeof ka - 1) == 0) {
            rc = append(&buf, &n, &cap, answer ? answer : "", answer ? strlen(answer) : 0);
            i += sizeof ka - 1;
        } else {
            /* copy up to the next '{' in one go */
            const char *brace = memchr(tmpl + i + 1, '{', len - i - 1);
            size_t run = brace ? (size_t)(brace - (tmpl + i)) : len - i;
            rc = append(&buf, &n, &cap, tmpl + i, run);
            i += run;
        }
    }
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    return TV_OK;
}

int prompt_format(const char *tmpl, const char *question, const char *answer, char **out) {
    *out = NULL;
    if (!tmpl)
        return err_set(TV_EINVAL, "prompt_format: NULL template");
    return format_n(tmpl, strlen(tmpl), question, answer, out);
}

/* Appends the ids of one template piece (substituted, tokenized) to p. */
static int add_piece(const tokenizer *tok, const char *piece, size_t len, const char *question,
                     const char *answer, prompt_ids *p, size_t *cap) {
    char *text;
    int32_t *ids;
    size_t n;
    int rc = format_n(piece, len, question, answer, &text);
    if (rc)
        return rc;
    rc = tok_encode(tok, text, strlen(text), &ids, &n);
    free(text);
    if (rc)
        return rc;
    if (p->n + n > *cap) {
        while (p->n + n > *cap)
            *cap = *cap ? *cap * 2 : 64;
        p->ids = tv_xrealloc(p->ids, *cap * sizeof *p->ids);
    }
    if (n)
        memcpy(p->ids + p->n, ids, n * sizeof *ids);
    p->n += n;
    free(ids);
    return TV_OK;
}

int prompt_tokenize(const tokenizer *tok, const char *tmpl, const char *image_token,
                    const char *question, const char *answer, prompt_ids *out) {
    memset(out, 0, sizeof *out);
    if (!tok || !tmpl)
        return err_set(TV_EINVAL, "prompt_tokenize: NULL tokenizer or template");
    size_t cap = 0, itl = image_token ? strlen(image_token) : 0;
    const char *s = tmpl;
    int rc = TV_OK;
    for (;;) {
        const char *hit = itl ? strstr(s, image_token) : NULL;
        size_t len = hit ? (size_t)(hit - s) : strlen(s);
        if ((rc = add_piece(tok, s, len, question, answer, out, &cap)))
            break;
        if (!hit)
            break;
        /* the image marker */
        if (out->n + 1 > cap) {
            cap = cap ? cap * 2 : 64;
            out->ids = tv_xrealloc(out->ids, cap * sizeof *out->ids);
        }
        out->ids[out->n++] = PROMPT_IMAGE;
        out->n_images++;
        s = hit + itl;
    }
    if (rc)
        prompt_ids_free(out);
    return rc;
}

int prompt_first(const manifest *mf, const tokenizer *tok, const char *question, prompt_ids *out) {
    return prompt_tokenize(tok, mf->chat.first, mf->chat.image_token, question, NULL, out);
}

int prompt_next(const manifest *mf, const tokenizer *tok, const char *prev_answer,
                const char *question, prompt_ids *out) {
    return prompt_tokenize(tok, mf->chat.next, mf->chat.image_token, question, prev_answer, out);
}

void prompt_ids_free(prompt_ids *p) {
    if (!p)
        return;
    free(p->ids);
    memset(p, 0, sizeof *p);
}

int64_t prompt_rows(const prompt_ids *p, int image_rows) {
    if (image_rows < 0)
        return -1;
    int64_t text = (int64_t)p->n - p->n_images;
    if (p->n_images > 0 && image_rows > (INT64_MAX - text) / p->n_images)
        return -1;
    return text + (int64_t)p->n_images * image_rows;
}

int prompt_embed(phi_model *m, const prompt_ids *p, const float *image, int image_rows,
                 float *out, int64_t out_rows) {
    int64_t rows = prompt_rows(p, image_rows);
    if (rows < 0 || rows > out_rows)
        return err_set(TV_ELIMIT, "prompt_embed: %lld rows do not fit in %lld", (long long)rows,
                       (long long)out_rows);
    if (p->n_images > 0 && (!image || image_rows < 1))
        return err_set(TV_EINVAL, "prompt_embed: the prompt has %d image slot(s) but no image "
                       "embeddings were given", p->n_images);
    size_t d = (size_t)phi_get_config(m)->width;
    int64_t r = 0;
    int img = 0;
    for (size_t i = 0; i < p->n;) {
        if (p->ids[i] == PROMPT_IMAGE) {
            memcpy(out + (size_t)r * d, image + (size_t)img * (size_t)image_rows * d,
                   (size_t)image_rows * d * sizeof(float));
            r += image_rows;
            img++;
            i++;
            continue;
        }
        size_t j = i; /* a run of text ids */
        while (j < p->n && p->ids[j] != PROMPT_IMAGE)
            j++;
        int rc = phi_embed_tokens(m, p->ids + i, (int64_t)(j - i), out + (size_t)r * d);
        if (rc)
            return rc;
        r += (int64_t)(j - i);
        i = j;
    }
    return TV_OK;
}
