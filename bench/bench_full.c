/* bench_full — issue 3's full-size benchmark: TinyGPT-V at its real shapes with random weights,
 * per weight type (f32, f16, bf16, q8, q4):
 *   vision side: EVA ViT-g/14 (39 blocks, 1408 wide, 16 x 88 heads, MLP 6144) + ln_vision +
 *     Q-Former (12 layers, 768, 32 queries, cross-attention every 2nd layer) + projections
 *     768 -> 4096 -> 2560; one image at 224 and at 448: seconds, GFLOP/s, fraction of FMA peak;
 *   LM side: Phi-2 (32 layers, 2560, 32 x 80 heads, rotary 32, FFN 10240, vocab 51200, the
 *     TinyGPT-V norms): prefill tokens/s (and fraction of FMA peak), batch-1 decode tokens/s and
 *     its fraction of the memory roofline (matrix bytes per token / measured read bandwidth);
 *   peak resident memory (VmHWM) of each side, each side run in its own child process (this
 *     program re-executed), as the vision and LM workers are separate processes.
 * Encodes and prefills are the best of 2, decode the median step: on a shared machine a
 * neighbour's burst only ever slows a run down.
 * The machine's limits — memory read bandwidth (1 GiB streaming sum) and FMA peak (register-only
 * ymm FMA chains) — are measured in the same run, before and after the models.
 *
 * Every layer has its own weights (nothing shared), built in memory in the bundle's storage
 * format (docs/bundle.md: q8/q4 = integer tensor + per-32 f32 scales; patch_embed, whose K = 588
 * is not a multiple of 32, stays F16 in q8/q4 as `tinyvlm convert` writes it; the LM's token
 * embedding is F16 except in f32/bf16 bundles). Values are random with magnitudes of a real
 * model's order (no denormals), since the timing does not depend on them. Resident size equals
 * what a worker that maps the bundle's file holds once every weight page has been touched.
 * The KV cache is sized for the manifest's max_context (2048) as `tinyvlm ask` does; its pages
 * become resident only as positions are used (0.66 MB per position in f32).
 *
 * Usage: bench_full [types=f32,f16,bf16,q8,q4] [threads=0 (one per core)] [prefill=128]
 *                   [decode=8] [sides=vision,lm]
 * A side whose weights do not fit in MemAvailable (2 GB spare) is skipped and said so. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtype.h"
#include "err.h"
#include "machine_limits.h"
#include "manifest.h"
#include "ops.h"
#include "phi.h"
#include "pool.h"
#include "quant.h"
#include "vision.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_full: %s: %s\n", what, err_msg());
    exit(1);
}

/* ---- the machine's limits: machine_limits.h ---------------------------------------------- */

/* Peak resident set of this process (VmHWM), bytes. */
static double vm_hwm(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

static double mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

/* ---- random weights in the bundle's formats ------------------------------------------------ */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* bytes of random values of type t: f32/f16/bf16 with magnitude in [2^-7, 2^-6) and a random
 * sign (no denormals, no inf); q8/q4 any integer code. */
static void fill(void *p, size_t bytes, kern_wtype t) {
    uint64_t *u = p;
    for (size_t i = 0; i < bytes / 8; i++) {
        uint64_t r = next();
        if (t == KERN_W_F32) r = (r & 0x807fffff807fffffull) | 0x3c0000003c000000ull;
        else if (t == KERN_W_F16) r = (r & 0x83ff83ff83ff83ffull) | 0x2000200020002000ull;
        else if (t == KERN_W_BF16) r = (r & 0x807f807f807f807full) | 0x3c003c003c003c00ull;
        u[i] = r;
    }
}

static size_t wt_elem_bytes(kern_wtype t, int64_t n, int64_t k) {
    switch (t) {
    case KERN_W_F32: return (size_t)(n * k) * 4;
    case KERN_W_F16: case KERN_W_BF16: return (size_t)(n * k) * 2;
    case KERN_W_Q8: return (size_t)quant_q8_bytes(n, k);
    case KERN_W_Q4: return (size_t)quant_q4_bytes(n, k);
    }
    return 0;
}

static dtype_id wt_dtype(kern_wtype t) {
    switch (t) {
    case KERN_W_F32: return DT_F32;
    case KERN_W_F16: return DT_F16;
    case KERN_W_BF16: return DT_BF16;
    case KERN_W_Q8: return DT_I8;
    case KERN_W_Q4: return DT_U8;
    }
    return DT_F32;
}

/* A matrix [n, k] of type t (t quantised and k not a multiple of 32: F16, as convert stores it).
 * Its data is 64-byte aligned (posix_memalign), so where malloc happens to put it cannot move
 * the timings; *bytes grows by what one forward pass reads. */
static kern_weight make_matrix(kern_wtype t, int64_t n, int64_t k, double *bytes) {
    if ((t == KERN_W_Q8 || t == KERN_W_Q4) && k % QUANT_BLOCK) t = KERN_W_F16;
    kern_weight w = {.type = t, .n = n, .k = k};
    size_t b = wt_elem_bytes(t, n, k);
    void *d = NULL;
    if (posix_memalign(&d, 64, b) != 0) {
        fprintf(stderr, "bench_full: out of memory (%zu bytes)\n", b);
        exit(1);
    }
    fill(d, b, t);
    w.data = d;
    *bytes += (double)b;
    if (t == KERN_W_Q8 || t == KERN_W_Q4) {
        int64_t ns = n * (k / QUANT_BLOCK);
        float *s = tv_xmalloc((size_t)ns * sizeof(float));
        float v = t == KERN_W_Q8 ? 1.0f / 127 / 64 : 1.0f / 7 / 64;   /* |w| up to 2^-6 */
        for (int64_t i = 0; i < ns; i++) s[i] = v;
        w.scale = s;
        *bytes += (double)ns * sizeof(float);
    }
    return w;
}

/* A vector of n floats: base + a random wiggle of 0.01. */
static float *make_vec(int64_t n, float base) {
    float *v = tv_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        v[i] = base + 0.01f * (float)((int64_t)(next() % 201) - 100) / 100.0f;
    return v;
}

/* ---- vision side: a named tensor store for vision_load_src ------------------------------- */

typedef struct {
    tensor_view *t;
    char **names;
    int n, cap;
    double bytes;   /* matrix bytes (values + scales) */
    int cur_size;   /* image size whose pos_embed "vit.pos_embed" means now */
} vstore;

static void vs_put(vstore *s, const char *name, dtype_id dt, int ndim, int64_t d0, int64_t d1,
                   const void *data, size_t nbytes) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 512;
        s->t = tv_xrealloc(s->t, (size_t)s->cap * sizeof *s->t);
        s->names = tv_xrealloc(s->names, (size_t)s->cap * sizeof *s->names);
    }
    size_t len = strlen(name) + 1;
    s->names[s->n] = memcpy(tv_xmalloc(len), name, len);
    s->t[s->n] = (tensor_view){.name = s->names[s->n], .dtype = dt, .ndim = ndim,
                               .shape = {d0, d1}, .data = (void *)data, .nbytes = nbytes};
    s->n++;
}

static void vs_vec(vstore *s, const char *name, int64_t n, float base) {
    vs_put(s, name, DT_F32, 1, n, 0, make_vec(n, base), (size_t)n * sizeof(float));
}

/* prefix.weight (matrix [n, k] of type t) and prefix.bias ([n] F32). */
static void vs_lin(vstore *s, const char *prefix, int64_t n, int64_t k, kern_wtype t) {
    char name[160];
    kern_weight w = make_matrix(t, n, k, &s->bytes);
    snprintf(name, sizeof name, "%s.weight", prefix);
    int64_t cols = w.type == KERN_W_Q4 ? k / 2 : k;
    vs_put(s, name, wt_dtype(w.type), 2, n, cols, w.data, wt_elem_bytes(w.type, n, k));
    if (w.scale) {
        snprintf(name, sizeof name, "%s.weight.scale", prefix);
        vs_put(s, name, DT_F32, 2, n, k / QUANT_BLOCK, w.scale,
               (size_t)(n * (k / QUANT_BLOCK)) * sizeof(float));
    }
    snprintf(name, sizeof name, "%s.bias", prefix);
    vs_vec(s, name, n, 0);
}

static void vs_ln(vstore *s, const char *prefix, int64_t n) {
    char name[160];
    snprintf(name, sizeof name, "%s.weight", prefix);
    vs_vec(s, name, n, 1);
    snprintf(name, sizeof name, "%s.bias", prefix);
    vs_vec(s, name, n, 0);
}

static const tensor_view *vs_find(void *user, const char *name) {
    vstore *s = user;
    char key[160];
    if (strcmp(name, "vit.pos_embed") == 0) {
        snprintf(key, sizeof key, "vit.pos_embed@%d", s->cur_size);
        name = key;
    }
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0) return &s->t[i];
    return NULL;
}

/* Every tensor of docs/bundle.md's vision.safetensors, each layer its own, plus pos_embed for
 * both image sizes. */
static void vs_build(vstore *s, const manifest *m, kern_wtype t) {
    const int64_t W = m->vision.width, M = m->vision.mlp_hidden, P = m->vision.patch_size;
    const int64_t D = m->qformer.width, F = m->qformer.ffn;
    char p[128];   /* names fit: the longest is 37 characters */
    vs_vec(s, "vit.cls_token", W, 0);
    const int sizes[2] = {224, 448};
    for (int i = 0; i < 2; i++) {
        int64_t G = sizes[i] / P, rows = 1 + G * G;
        float *pe = make_vec(rows * W, 0);
        snprintf(p, sizeof p, "vit.pos_embed@%d", sizes[i]);
        vs_put(s, p, DT_F32, 2, rows, W, pe, (size_t)(rows * W) * sizeof(float));
    }
    vs_lin(s, "vit.patch_embed", W, 3 * P * P, t);
    for (int l = 0; l < m->vision.layers; l++) {
        const char *sub[4] = {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"};
        const int64_t nn[4] = {3 * W, W, M, W}, kk[4] = {W, W, W, M};
        for (int j = 0; j < 2; j++) {
            snprintf(p, sizeof p, "vit.blocks.%d.norm%d", l, j + 1);
            vs_ln(s, p, W);
        }
        for (int j = 0; j < 4; j++) {
            snprintf(p, sizeof p, "vit.blocks.%d.%s", l, sub[j]);
            vs_lin(s, p, nn[j], kk[j], t);
        }
    }
    vs_ln(s, "ln_vision", W);
    vs_put(s, "qformer.query_tokens", DT_F32, 2, m->qformer.queries, D,
           make_vec(m->qformer.queries * D, 0), (size_t)(m->qformer.queries * D) * sizeof(float));
    vs_ln(s, "qformer.ln", D);
    for (int l = 0; l < m->qformer.layers; l++) {
        snprintf(p, sizeof p, "qformer.layers.%d.self.qkv", l);  vs_lin(s, p, 3 * D, D, t);
        snprintf(p, sizeof p, "qformer.layers.%d.self.out", l);  vs_lin(s, p, D, D, t);
        snprintf(p, sizeof p, "qformer.layers.%d.self.ln", l);   vs_ln(s, p, D);
        if (l % m->qformer.cross_every == 0) {
            snprintf(p, sizeof p, "qformer.layers.%d.cross.q", l);   vs_lin(s, p, D, D, t);
            snprintf(p, sizeof p, "qformer.layers.%d.cross.kv", l);  vs_lin(s, p, 2 * D, W, t);
            snprintf(p, sizeof p, "qformer.layers.%d.cross.out", l); vs_lin(s, p, D, D, t);
            snprintf(p, sizeof p, "qformer.layers.%d.cross.ln", l);  vs_ln(s, p, D);
        }
        snprintf(p, sizeof p, "qformer.layers.%d.ffn.fc1", l);  vs_lin(s, p, F, D, t);
        snprintf(p, sizeof p, "qformer.layers.%d.ffn.fc2", l);  vs_lin(s, p, D, F, t);
        snprintf(p, sizeof p, "qformer.layers.%d.ffn.ln", l);   vs_ln(s, p, D);
    }
    for (int j = 0; j + 1 < m->n_proj_dims; j++) {
        snprintf(p, sizeof p, "proj.%d", j);
        vs_lin(s, p, m->proj_dims[j + 1], m->proj_dims[j], t);
    }
}

/* FLOPs of one image (2 per multiply-add; matmuls and attention). */
static double encoder_flops(const manifest *m) {
    double S = m->vision.image_size, P = m->vision.patch_size, W = m->vision.width;
    double G = S / P, T = 1 + G * G, M = m->vision.mlp_hidden;
    double D = m->qformer.width, F = m->qformer.ffn, Q = m->qformer.queries;
    double f = 2 * G * G * 3 * P * P * W;                                      /* patch embed */
    f += m->vision.layers * (2 * T * (4 * W * W + 2 * W * M) + 4 * T * T * W);  /* blocks */
    for (int i = 0; i < m->qformer.layers; i++) {
        f += 2 * Q * 4 * D * D + 4 * Q * Q * D + 2 * Q * 2 * D * F;           /* self + ffn */
        if (i % m->qformer.cross_every == 0)
            f += 2 * Q * 2 * D * D + 2 * T * 2 * D * W + 4 * Q * T * D;         /* cross */
    }
    for (int j = 0; j + 1 < m->n_proj_dims; j++)
        f += 2 * Q * (double)m->proj_dims[j] * m->proj_dims[j + 1];
    return f;
}

/* Seconds for one image at size S (best of reps), the model loaded for S and freed after. */
static double encode_once(kern_be *be, manifest *m, vstore *s, int S, int reps) {
    m->vision.image_size = S;
    s->cur_size = S;
    vision_src src = {vs_find, s};
    vision_model *vm = NULL;
    if (vision_load_src(m, &src, be, 1, &vm)) die("vision_load_src");
    float *px = tv_xmalloc((size_t)3 * S * S * sizeof(float));
    float *emb = tv_xmalloc((size_t)vision_tokens(vm) * vision_dim(vm) * sizeof(float));
    for (int64_t i = 0; i < (int64_t)3 * S * S; i++) px[i] = (float)(next() % 4001) / 1000 - 2;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now();
        if (vision_encode(vm, px, 1, emb)) die("vision_encode");
        t = now() - t;
        best = t < best ? t : best;
    }
    fprintf(stderr, "  vision %d: %.2f s, best of %d (emb[0] = %.4g)\n", S, best, reps, emb[0]);
    free(px);
    free(emb);
    vision_free(vm);
    return best;
}

static int child_vision(kern_wtype t, int threads) {
    manifest *m = NULL;
    if (manifest_load(TV_SOURCE_DIR "/tests/data/manifest", &m)) die("manifest");
    kern_be *be = NULL;
    if (kern_cpu_new(threads, KERN_ISA_AUTO, &be)) die("kern_cpu_new");
    vstore s = {0};
    double t0 = now();
    vs_build(&s, m, t);
    fprintf(stderr, "  vision %s: %d tensors, %.2f GB of matrices, made in %.1f s\n",
            kern_wtype_name(t), s.n, s.bytes / 1e9, now() - t0);
    double e224 = encode_once(be, m, &s, 224, 2);
    m->vision.image_size = 224;
    double f224 = encoder_flops(m);
    double e448 = encode_once(be, m, &s, 448, 2);
    m->vision.image_size = 448;
    double f448 = encoder_flops(m);
    printf("@vision %s %.4f %.4f %.6g %.6g %.6g %.6g\n", kern_wtype_name(t), e224, e448, f224,
           f448, vm_hwm(), s.bytes);
    for (int i = 0; i < s.n; i++) {
        free(s.names[i]);
        /* .scale tensors and vectors are separate buffers; every data pointer is its own */
        free((void *)s.t[i].data);
    }
    free(s.names);
    free(s.t);
    kern_free(be);
    manifest_free(m);
    return 0;
}

/* ---- LM side ------------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int child_lm(kern_wtype t, int threads, int T, int steps) {
    manifest *mf = NULL;
    if (manifest_load(TV_SOURCE_DIR "/tests/data/manifest", &mf)) die("manifest");
    const int L = mf->lm.layers, d = mf->lm.width, f = mf->lm.ffn, V = mf->lm.vocab;
    const int Dh = mf->lm.head_dim;
    kern_be *be = NULL;
    if (kern_cpu_new(threads, KERN_ISA_AUTO, &be)) die("kern_cpu_new");
    double bytes = 0, t0 = now();
    phi_layer_weights *layers = tv_xcalloc((size_t)L, sizeof *layers);
    for (int l = 0; l < L; l++) {
        phi_layer_weights *w = &layers[l];
        w->ln_w = make_vec(d, 1);
        w->ln_b = make_vec(d, 0);
        w->qkv = make_matrix(t, 3 * (int64_t)d, d, &bytes);
        w->qkv_b = make_vec(3 * (int64_t)d, 0);
        w->q_ln_w = make_vec(Dh, 1);
        w->q_ln_b = make_vec(Dh, 0);
        w->k_ln_w = make_vec(Dh, 1);
        w->k_ln_b = make_vec(Dh, 0);
        w->dense = make_matrix(t, d, d, &bytes);
        w->dense_b = make_vec(d, 0);
        w->post_ln_w = make_vec(d, 1);
        w->fc1 = make_matrix(t, f, d, &bytes);
        w->fc1_b = make_vec(f, 0);
        w->fc2 = make_matrix(t, d, f, &bytes);
        w->fc2_b = make_vec(d, 0);
    }
    /* the token embedding: F16 in f16/q8/q4 bundles, else the bundle type */
    kern_wtype et = t == KERN_W_F32 || t == KERN_W_BF16 ? t : KERN_W_F16;
    double ebytes = 0;
    kern_weight emb_t = make_matrix(et, V, d, &ebytes);
    phi_weights w = {.embed = emb_t.data, .embed_dtype = wt_dtype(et), .layers = layers,
                     .final_ln_w = make_vec(d, 1), .final_ln_b = make_vec(d, 0),
                     .lm_head = make_matrix(t, V, d, &bytes), .lm_head_b = make_vec(V, 0)};
    phi_config c = {.layers = L, .width = d, .heads = mf->lm.heads, .head_dim = Dh, .ffn = f,
                    .vocab = V, .rotary_dims = mf->lm.rotary_dims, .rope_theta = mf->lm.rope_theta,
                    .ln_eps = mf->lm.ln_eps, .rms_eps = mf->lm.rms_eps,
                    .qk_layernorm = mf->lm.qk_layernorm,
                    .post_attn_rmsnorm = mf->lm.post_attn_rmsnorm,
                    .lm_head_bias = mf->lm.lm_head_bias};
    fprintf(stderr, "  lm %s: %.2f GB of matrices + %.2f GB embedding, made in %.1f s\n",
            kern_wtype_name(t), bytes / 1e9, ebytes / 1e9, now() - t0);
    int ctx = mf->lm.max_context;
    if (T + steps + 1 > ctx) ctx = T + steps + 1;
    phi_model *m = NULL;
    if (phi_new(&c, &w, be, 1, ctx, &m)) die("phi_new");
    float *emb = tv_xmalloc((size_t)T * d * sizeof(float)), *logits = tv_xmalloc((size_t)V * 4);
    int32_t *ids = tv_xmalloc((size_t)T * sizeof *ids);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)(next() % (uint64_t)V);
    if (phi_embed_tokens(m, ids, T, emb)) die("phi_embed_tokens");
    /* best of two prefills (the slot emptied between), then the median decode step: other
     * processes on a shared machine only ever slow a run down */
    double tp = 1e30;
    for (int r = 0; r < 2; r++) {
        if (phi_reset(m, 0)) die("phi_reset");
        double t = now();
        if (phi_prefill(m, 0, emb, T, 0, logits)) die("phi_prefill");
        t = now() - t;
        tp = t < tp ? t : tp;
    }
    int slot = 0;
    int32_t tok = 1;
    if (phi_decode(m, 1, &slot, &tok, logits)) die("phi_decode");   /* warm-up step */
    double *step = tv_xmalloc((size_t)steps * sizeof *step);
    for (int s = 0; s < steps; s++) {
        double t = now();
        if (phi_decode(m, 1, &slot, &tok, logits)) die("phi_decode");
        step[s] = now() - t;
    }
    qsort(step, (size_t)steps, sizeof *step, cmp_double);
    double td = steps % 2 ? step[steps / 2] : 0.5 * (step[steps / 2 - 1] + step[steps / 2]);
    fprintf(stderr, "  lm %s: decode steps %.1f .. %.1f ms, median %.1f\n", kern_wtype_name(t),
            step[0] * 1e3, step[steps - 1] * 1e3, td * 1e3);
    free(step);
    /* prefill FLOPs: the matrices for T rows, causal attention, lm_head for the last row */
    double pflops = 2.0 * T * L * (4.0 * d * d + 2.0 * d * f) + 2.0 * L * (double)T * T * d +
                    2.0 * V * d;
    fprintf(stderr, "  lm %s: prefill %d tokens %.2f s (best of 2), decode %.1f ms/token (logit %.4g)\n",
            kern_wtype_name(t), T, tp, td * 1e3, logits[0]);
    printf("@lm %s %d %.5f %.5f %.6g %.6g %.6g\n", kern_wtype_name(t), T, tp, td, pflops, bytes,
           vm_hwm());
    phi_free(m);
    kern_free(be);
    manifest_free(mf);
    return 0;   /* the weights die with the process */
}

/* ---- parent: limits, children, table ------------------------------------------------------ */

typedef struct {
    int have_v, have_l;
    double e224, e448, f224, f448, v_rss, v_bytes;
    double tp, td, pflops, l_bytes, l_rss;
    int T;
} result;

static const char *const type_names[5] = {"f32", "f16", "bf16", "q8", "q4"};
static const kern_wtype type_ids[5] = {KERN_W_F32, KERN_W_F16, KERN_W_BF16, KERN_W_Q8,
                                       KERN_W_Q4};

/* Weight bytes a side needs resident, for the MemAvailable check. */
static double need_bytes(int lm, kern_wtype t) {
    double per = t == KERN_W_F32 ? 4 : t == KERN_W_Q8 ? 1.125 : t == KERN_W_Q4 ? 0.625 : 2;
    if (lm) return 2.78e9 * per + 51200.0 * 2560 * (t == KERN_W_F32 ? 4 : 2);
    return 1.10e9 * per;
}

/* Runs this program as a child for one side and type; parses its "@" line into r. */
static int run_child(const char *exe, const char *side, int ti, int threads, int T, int steps,
                     result *r) {
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "'%s' --child %s %s %d %d %d", exe, side, type_names[ti], threads,
             T, steps);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512], ty[16];
    int got = 0;
    while (fgets(line, sizeof line, p)) {
        if (sscanf(line, "@vision %15s %lf %lf %lf %lf %lf %lf", ty, &r->e224, &r->e448,
                   &r->f224, &r->f448, &r->v_rss, &r->v_bytes) == 7)
            got = r->have_v = 1;
        else if (sscanf(line, "@lm %15s %d %lf %lf %lf %lf %lf", ty, &r->T, &r->tp, &r->td,
                        &r->pflops, &r->l_bytes, &r->l_rss) == 7)
            got = r->have_l = 1;
        else fputs(line, stdout);
    }
    int st = pclose(p);
    if (!got || st != 0) {
        fprintf(stderr, "bench_full: the %s %s child failed (status %d)\n", side,
                type_names[ti], st);
        return -1;
    }
    return 0;
}

static void print_table(const result *res, const int *chosen, double bw, double peak) {
    printf("\n| weights | encode 224 | encode 448 | vision peak RSS | prefill | decode, batch 1 "
           "| LM peak RSS |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < 5; i++) {
        if (!chosen[i]) continue;
        const result *r = &res[i];
        printf("| %s ", type_names[i]);
        if (r->have_v)
            printf("| %.2f s (%.0f%% of FMA peak) | %.2f s (%.0f%%) | %.2f GB ", r->e224,
                   100 * r->f224 / r->e224 / 1e9 / peak, r->e448,
                   100 * r->f448 / r->e448 / 1e9 / peak, r->v_rss / 1e9);
        else printf("| — | — | — ");
        if (r->have_l) {
            double roof = bw * 1e9 / r->l_bytes;
            printf("| %.1f tok/s (%.0f%% of FMA peak) | %.2f tok/s = %.0f%% of roofline %.2f "
                   "(%.2f GB/token) | %.2f GB |\n", r->T / r->tp,
                   100 * r->pflops / r->tp / 1e9 / peak, 1 / r->td, 100 / r->td / roof, roof,
                   r->l_bytes / 1e9, r->l_rss / 1e9);
        } else printf("| — | — | — |\n");
    }
}

int main(int argc, char **argv) {
    if (argc == 7 && strcmp(argv[1], "--child") == 0) {
        int ti = -1;
        for (int i = 0; i < 5; i++)
            if (strcmp(argv[3], type_names[i]) == 0) ti = i;
        if (ti < 0) return 2;
        if (strcmp(argv[2], "vision") == 0) return child_vision(type_ids[ti], atoi(argv[4]));
        return child_lm(type_ids[ti], atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    }
    const char *types = argc > 1 ? argv[1] : "f32,f16,bf16,q8,q4";
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    int T = argc > 3 ? atoi(argv[3]) : 128, steps = argc > 4 ? atoi(argv[4]) : 8;
    const char *sides = argc > 5 ? argv[5] : "vision,lm";
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (T < 1 || steps < 1 || T > 4096) {
        fprintf(stderr, "usage: bench_full [types] [threads] [prefill 1..4096] [decode] [sides]\n");
        return 2;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 1;
    exe[n] = 0;
    pool *p = pool_new(threads);
    if (!p) die("pool_new");
    double bw = lim_bandwidth(p), peak = lim_fma_peak(p);
    printf("bench_full: %d threads; memory read bandwidth %.1f GB/s (1 GiB streaming sum, best of "
           "5); FMA peak %.1f GFLOP/s (register-only ymm FMA, best of 5)\n", threads, bw, peak);
    fflush(stdout);
    result res[5];
    int chosen[5] = {0};
    memset(res, 0, sizeof res);
    int rc = 0;
    /* "q4" must not match inside another name: compare whole comma-separated items */
    for (int i = 0; i < 5; i++) {
        char list[256];
        snprintf(list, sizeof list, ",%s,", types);
        char item[16];
        snprintf(item, sizeof item, ",%s,", type_names[i]);
        if (!strstr(list, item)) continue;
        chosen[i] = 1;
        for (int s = 0; s < 2; s++) {
            const char *side = s ? "lm" : "vision";
            if (!strstr(sides, side)) continue;
            double need = need_bytes(s, type_ids[i]);
            if (need + 2e9 > mem_available()) {
                printf("%s %s skipped: needs ~%.1f GB, %.1f GB available\n", side, type_names[i],
                       need / 1e9, mem_available() / 1e9);
                continue;
            }
            rc |= run_child(exe, side, i, threads, T, steps, &res[i]);
            fflush(stdout);
        }
    }
    /* a neighbour's load only ever lowers a measurement: the higher of the two is the limit */
    double bw2 = lim_bandwidth(p), peak2 = lim_fma_peak(p);
    printf("after the runs: memory read bandwidth %.1f GB/s, FMA peak %.1f GFLOP/s\n", bw2, peak2);
    bw = bw2 > bw ? bw2 : bw;
    peak = peak2 > peak ? peak2 : peak;
    printf("limits used below (the higher of the two): %.1f GB/s, %.1f GFLOP/s\n", bw, peak);
    print_table(res, chosen, bw, peak);
    pool_free(p);
    return rc ? 1 : 0;
}
