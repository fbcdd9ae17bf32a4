/* prompt — turns a chat turn into the LM's input: fill the manifest's template, split it at the
 * image token, tokenize each text piece on its own (no BOS: Phi-2's tokenizer adds none), and
 * build the [T, d] input embeddings with the image embedding rows spliced in where the image
 * token was (TinyGPT-V's get_context_emb).
 *
 * The template is split at the image token BEFORE {question}/{answer} are substituted, so a
 * user who types "<ImageHere>" gets it as text, never as a second image slot.
 *
 * Templates (manifest chat.first / chat.next): "{question}" and "{answer}" are replaced by the
 * given strings (every occurrence; NULL counts as ""); everything else is literal. Task prefixes
 * such as "[vqa] " are simply part of the question. */
#ifndef TV_PROMPT_H
#define TV_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "manifest.h"
#include "phi.h"
#include "tokenizer.h"

/* Marker in prompt_ids.ids: one image's embedding rows go here. */
#define PROMPT_IMAGE ((int32_t)-1)

/* A tokenized prompt: token ids with PROMPT_IMAGE markers (n_images of them). */
typedef struct {
    int32_t *ids;   /* owned; free with prompt_ids_free */
    size_t n;
    int n_images;
} prompt_ids;

/* Fills tmpl with question and answer into *out (malloc'd, NUL-terminated, caller frees).
 * Returns 0 or TV_ELIMIT if the result would exceed 16 MiB. */
int prompt_format(const char *tmpl, const char *question, const char *answer, char **out);

/* Builds ids from tmpl: split at image_token (NULL or "" = no image), substitute, tokenize each
 * piece, PROMPT_IMAGE between pieces. Returns 0 and *out (free with prompt_ids_free), or the
 * tokenizer's error. */
int prompt_tokenize(const tokenizer *tok, const char *tmpl, const char *image_token,
                    const char *question, const char *answer, prompt_ids *out);

/* The first turn (chat.first, with the image token) and a following turn (chat.next: the
 * previous answer, then the new question) of mf's template. As prompt_tokenize. */
int prompt_first(const manifest *mf, const tokenizer *tok, const char *question, prompt_ids *out);
int prompt_next(const manifest *mf, const tokenizer *tok, const char *prev_answer,
                const char *question, prompt_ids *out);

/* Frees p->ids and zeroes p; NULL is a no-op. */
void prompt_ids_free(prompt_ids *p);

/* Rows of input embeddings p makes when each image is image_rows vectors; -1 if it overflows. */
int64_t prompt_rows(const prompt_ids *p, int image_rows);

/* out [prompt_rows(p, image_rows), d] = token embeddings of m with the image rows (image
 * [n_images * image_rows, d], image k's rows at k * image_rows) at each marker. out_rows is the
 * capacity of out in rows. Returns 0, TV_EINVAL (images expected but image NULL, bad token id),
 * or TV_ELIMIT if out is too small. */
int prompt_embed(phi_model *m, const prompt_ids *p, const float *image, int image_rows,
                 float *out, int64_t out_rows);

#endif
