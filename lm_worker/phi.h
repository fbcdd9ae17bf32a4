/* phi — the Phi-2 language model (with TinyGPT-V's optional changes), CPU/GPU through kernels/ops.h.
 *
 * Per layer (parallel block, MODELS.md):
 *   h = LN(x); qkv = h·Wqkv^T + b (rows [q heads | k heads | v heads], docs/bundle.md)
 *   q,k = LayerNorm over each head's Dh dims            (cfg.qk_layernorm)
 *   q,k = RoPE NeoX on the first rotary_dims of each head, at the token's position
 *   a = causal softmax(q·k^T / sqrt(Dh))·v over the KV cache (which holds k after norm + RoPE)
 *   o = dense(a); o = RMSNorm(o)                         (cfg.post_attn_rmsnorm, eps rms_eps)
 *   m = fc2(gelu_tanh(fc1(h)));  x = x + o + m
 * then final LN and lm_head (+ bias if cfg.lm_head_bias) -> fp32 logits.
 *
 * Memory: weights are borrowed views (normally into the mmapped lm.safetensors); on a device
 * backend (CUDA) phi_new uploads them once. Everything the forward pass writes — the KV cache
 * for (max_seqs, max_context) and the activation scratch — is allocated once by phi_new/phi_load
 * in the backend's memory; phi_prefill/phi_decode never allocate. Their inputs (embeddings,
 * token ids) and outputs (logits, hidden states) are host memory on every backend.
 *
 * Sequences live in slots 0..max_seqs-1. A slot holds a cached prefix of some length; prefill
 * appends T positions to it (so a later turn can continue a conversation), decode appends one.
 * phi_reset empties a slot. A phi_model uses its backend, so it serves one thread at a time. */
#ifndef TV_PHI_H
#define TV_PHI_H

#include <stdint.h>

#include "dtype.h"
#include "manifest.h"
#include "ops.h"

typedef struct {
    int layers, width, heads, head_dim, ffn, vocab, rotary_dims;
    float rope_theta, ln_eps, rms_eps;
    int qk_layernorm, post_attn_rmsnorm, lm_head_bias; /* booleans */
} phi_config;

/* One layer's weights. Matrices are kern_weight [out, in]; vectors are f32. Borrowed. */
typedef struct {
    const float *ln_w, *ln_b;                 /* (d) input LayerNorm */
    kern_weight qkv;                          /* (3d, d) rows [q | k | v], head-major inside */
    const float *qkv_b;                       /* (3d) */
    const float *q_ln_w, *q_ln_b;             /* (Dh) only with qk_layernorm */
    const float *k_ln_w, *k_ln_b;             /* (Dh) */
    kern_weight dense;                        /* (d, d) */
    const float *dense_b;                     /* (d) */
    const float *post_ln_w;                   /* (d) only with post_attn_rmsnorm */
    kern_weight fc1;                          /* (f, d) */
    const float *fc1_b;                       /* (f) */
    kern_weight fc2;                          /* (d, f) */
    const float *fc2_b;                       /* (d) */
} phi_layer_weights;

typedef struct {
    const void *embed;                        /* (V, d) of embed_dtype: F32, F16 or BF16 */
    dtype_id embed_dtype;
    const phi_layer_weights *layers;          /* [cfg.layers]; copied by phi_new */
    const float *final_ln_w, *final_ln_b;     /* (d) */
    kern_weight lm_head;                      /* (V, d) */
    const float *lm_head_b;                   /* (V) only with lm_head_bias */
} phi_weights;

typedef struct phi_model phi_model;

/* Flags for phi_prefill. */
enum {
    PHI_ALL_LOGITS = 1, /* out gets [T, V] logits of every position (default: [V] of the last) */
    PHI_HIDDEN = 2      /* out gets [T, d]: the residual stream after the last layer, before the
                         * final LN (for tests against per-layer goldens); no logits */
};

/* Builds a model over borrowed weights (w->layers is copied; the tensors are not) on backend be
 * (borrowed; must outlive the model). Checks every weight's presence and shape against cfg.
 * Allocates the KV cache for max_seqs sequences of max_context positions and the scratch.
 * Returns 0 and *out (free with phi_free), or TV_EINVAL / TV_EFORMAT / TV_ENOMEM with a message. */
int phi_new(const phi_config *cfg, const phi_weights *w, kern_be *be, int max_seqs,
            int max_context, phi_model **out);

/* Maps mf->lm_path (lm.safetensors), reads the tensors named in docs/bundle.md (any matrix dtype:
 * F32/F16/BF16, q8 = I8 + ".scale", q4 = U8 + ".scale"; each tensor's own dtype decides) and
 * calls phi_new with the manifest's lm config. max_context <= 0 means mf->lm.max_context; larger
 * than it is refused. The mapping is owned by the model. Returns as phi_new, or TV_EIO /
 * TV_ENOTFOUND / TV_EFORMAT naming the tensor. */
int phi_load(const manifest *mf, kern_be *be, int max_seqs, int max_context,
             phi_model **out);

/* Frees the model, its cache and (for phi_load) the mapping. NULL is a no-op. */
void phi_free(phi_model *m);

/* The configuration (owned by m) and the limits given at load. */
const phi_config *phi_get_config(const phi_model *m);
int phi_max_seqs(const phi_model *m);
int phi_max_context(const phi_model *m);

/* Number of positions cached in slot (0 after phi_reset), or -1 for a bad slot. */
int phi_seq_len(const phi_model *m, int slot);

/* Empties slot (its cached positions are forgotten). Returns 0 or TV_EINVAL for a bad slot. */
int phi_reset(phi_model *m, int slot);

/* out[i, :] = embedding of ids[i] for i < n (out [n, d] f32, caller's). Returns 0, or TV_EINVAL
 * naming an id outside [0, vocab). */
int phi_embed_tokens(phi_model *m, const int32_t *ids, int64_t n, float *out);

/* Runs T input embeddings emb [T, d] through the model at positions len..len+T-1 of slot (len =
 * phi_seq_len before the call), appending them to the slot's cache. out: the last position's
 * logits [V]; with PHI_ALL_LOGITS [T, V]; with PHI_HIDDEN [T, d] hidden states. Returns 0, or
 * TV_ELIMIT if len + T > max_context (the slot is then unchanged), TV_EINVAL for a bad slot or
 * T < 1. On a kernel error the slot is reset. */
int phi_prefill(phi_model *m, int slot, const float *emb, int T, int flags, float *out);

/* One batched decode step: for each i < n, token tokens[i] is appended to sequence slots[i] (at
 * position phi_seq_len(slots[i])) and its next-token logits go to logits + i*V. The slots must be
 * distinct and n <= max_seqs; sequences may be at different lengths. Returns 0, TV_EINVAL (bad or
 * repeated slot, bad token id), or TV_ELIMIT when a sequence is full (nothing is changed). */
int phi_decode(phi_model *m, int n, const int *slots, const int32_t *tokens, float *logits);

#endif
