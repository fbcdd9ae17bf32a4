/* chat — an OpenAI-style conversation (system / user / assistant messages whose parts are text or
 * images) -> the LM's prompt ids, through the bundle's chat template (manifest chat.first /
 * chat.next, see prompt.h). The LM worker calls this for every GenerateRequest.
 *
 * How the conversation maps onto the template:
 *   - Turns: each user message opens a turn; the assistant message after it is that turn's
 *     answer. Consecutive messages of the same role are merged (texts joined by a space). The
 *     last message must be from the user (its turn is the one to answer).
 *   - Turn 1 uses chat.first with its question; turn k > 1 uses chat.next with the previous
 *     turn's answer and its own question.
 *   - System messages: the model has no system slot, so their text (joined by spaces) is put in
 *     front of the first question, followed by one space.
 *   - Images: a turn's images (in the order its parts hold them) go into one image slot. In turn
 *     1 that is chat.first's slot, with the image token repeated once per image (so
 *     "<Img><ImageHere></Img>" holds them back to back); a turn 1 without images drops the
 *     whitespace-delimited word holding the image token (and one space next to it). A later turn
 *     with images gets that same word, image token repeated, and a space in front of its
 *     question. Images in system or assistant messages are refused.
 *   - The whole prompt is filled in first and then split at the image markers; each text run
 *     between two images is tokenized as one string (as TinyGPT-V's get_context_emb does), and
 *     the template is split before substitution, so user text containing the image token stays
 *     text. */
#ifndef TV_CHAT_H
#define TV_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "manifest.h"
#include "msg.h"
#include "prompt.h"
#include "tokenizer.h"

/* Builds the prompt of msgs[0..n) for mf's template. Parts name images by index into the
 * request's n_images images. On success *out holds the ids with one PROMPT_IMAGE marker per image
 * occurrence (free with prompt_ids_free) and *order (malloc'd, out->n_images entries, caller
 * frees; NULL when there are no markers) gives the request image index of each marker in prompt
 * order. max_rows: the most positions the prompt may take, each image being image_rows of them.
 * Returns 0; TV_EINVAL (unknown role, no user message, last message not from the user, an image
 * index out of range, an image outside a user message, a template without an image slot for
 * images, text that is not UTF-8), or TV_ELIMIT (the prompt needs more than max_rows positions),
 * each with a message. On failure *out is empty and *order NULL. */
int chat_build(const manifest *mf, const tokenizer *tok, const msg_chat *msgs, size_t n,
               size_t n_images, int image_rows, int64_t max_rows, prompt_ids *out,
               int32_t **order);

#endif
