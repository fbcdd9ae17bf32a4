/* bench_vision — one image through the full-size TinyGPT-V vision encoder (EVA ViT-g/14, 39
 * blocks, at 224 and 448; ln_vision; Q-Former 12 layers; projections 768 -> 4096 -> 2560) with
 * random weights built in memory, f32 and f16. Prints the time per image, GFLOP/s, and the
 * fraction of the machine's FMA peak measured in the same run.
 *
 * The 39 ViT blocks share one block's weights (and the 12 Q-Former layers one layer's): the
 * arithmetic and the memory traffic per block are those of the real model (one block's weights,
 * 100 MB in f32, are far larger than any cache), only the resident size is smaller.
 * Usage: bench_vision [threads]   (default: one per core) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dtype.h"
#include "err.h"
#include "machine_limits.h"
#include "manifest.h"
#include "ops.h"
#include "pool.h"
#include "vision.h"

/* ---- FLOPs of one image (2 per multiply-add; matmuls and attention) ---------------------- */

static double encoder_flops(const manifest *m) {
    double S = m->vision.image_size, P = m->vision.patch_size, W = m->vision.width;
    double G = S / P, T = 1 + G * G, M = m->vision.mlp_hidden;
    double D = m->qformer.width, F = m->qformer.ffn, Q = m->qformer.queries;
    double f = 2 * G * G * 3 * P * P * W;                                     /* patch embed */
    f += m->vision.layers * (2 * T * (4 * W * W + 2 * W * M) + 4 * T * T * W); /* blocks */
    for (int i = 0; i < m->qformer.layers; i++) {
        f += 2 * Q * 4 * D * D + 4 * Q * Q * D + 2 * Q * 2 * D * F;          /* self + ffn */
        if (i % m->qformer.cross_every == 0)
            f += 2 * Q * 2 * D * D + 2 * T * 2 * D * W + 4 * Q * T * D;        /* cross */
    }
    for (int j = 0; j + 1 < m->n_proj_dims; j++)
        f += 2 * Q * (double)m->proj_dims[j] * m->proj_dims[j + 1];
    return f;
}

/* ---- random weights in memory ------------------------------------------------------------ */

#define BM_MAX 64
typedef struct {
    char names[BM_MAX][64];       /* with the layer index removed: "vit.blocks.attn.qkv.weight" */
    tensor_view t[BM_MAX];
    void *bufs[BM_MAX];
    int n;
    uint64_t rng;
} bench_model;

static float rnd(bench_model *bm) {
    bm->rng = bm->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((bm->rng >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

/* An [n, k] (k = 0: vector [n]) tensor; matrices in dt, vectors always F32. */
static void bm_add(bench_model *bm, const char *name, int64_t n, int64_t k, dtype_id dt,
                   float amp, float offset) {
    TV_ASSERT(bm->n < BM_MAX);
    int i = bm->n++;
    int64_t numel = k ? n * k : n;
    if (!k) dt = DT_F32;
    void *b = tv_xmalloc((size_t)numel * dtype_size(dt));
    for (int64_t j = 0; j < numel; j++) {
        float v = offset + amp * rnd(bm);
        if (dt == DT_F32) ((float *)b)[j] = v;
        else ((uint16_t *)b)[j] = dtype_f32_to_f16(v);
    }
    snprintf(bm->names[i], sizeof bm->names[i], "%s", name);
    bm->bufs[i] = b;
    bm->t[i] = (tensor_view){.name = bm->names[i], .dtype = dt, .ndim = k ? 2 : 1,
                             .shape = {n, k}, .data = b,
                             .nbytes = (size_t)numel * dtype_size(dt)};
}

static void bm_lin(bench_model *bm, const char *p, int64_t n, int64_t k, dtype_id dt) {
    char name[64];
    snprintf(name, sizeof name, "%s.weight", p);
    bm_add(bm, name, n, k, dt, 2.0f / (float)k, 0);
    snprintf(name, sizeof name, "%s.bias", p);
    bm_add(bm, name, n, 0, dt, 0.1f, 0);
}

static void bm_ln(bench_model *bm, const char *p, int64_t n) {
    char name[64];
    snprintf(name, sizeof name, "%s.weight", p);
    bm_add(bm, name, n, 0, DT_F32, 0.2f, 1);
    snprintf(name, sizeof name, "%s.bias", p);
    bm_add(bm, name, n, 0, DT_F32, 0.1f, 0);
}

static void bm_build(bench_model *bm, const manifest *m, dtype_id dt) {
    int64_t W = m->vision.width, M = m->vision.mlp_hidden, P = m->vision.patch_size;
    int64_t G = m->vision.image_size / P, D = m->qformer.width, F = m->qformer.ffn;
    memset(bm, 0, sizeof *bm);
    bm->rng = 42;
    bm_add(bm, "vit.cls_token", W, 0, dt, 1, 0);
    bm_add(bm, "vit.pos_embed", 1 + G * G, W, DT_F32, 1, 0);
    bm_lin(bm, "vit.patch_embed", W, 3 * P * P, dt);
    bm_ln(bm, "vit.blocks.norm1", W);
    bm_ln(bm, "vit.blocks.norm2", W);
    bm_lin(bm, "vit.blocks.attn.qkv", 3 * W, W, dt);
    bm_lin(bm, "vit.blocks.attn.proj", W, W, dt);
    bm_lin(bm, "vit.blocks.mlp.fc1", M, W, dt);
    bm_lin(bm, "vit.blocks.mlp.fc2", W, M, dt);
    bm_ln(bm, "ln_vision", W);
    bm_add(bm, "qformer.query_tokens", m->qformer.queries, D, DT_F32, 1, 0);
    bm_ln(bm, "qformer.ln", D);
    bm_lin(bm, "qformer.layers.self.qkv", 3 * D, D, dt);
    bm_lin(bm, "qformer.layers.self.out", D, D, dt);
    bm_ln(bm, "qformer.layers.self.ln", D);
    bm_lin(bm, "qformer.layers.cross.q", D, D, dt);
    bm_lin(bm, "qformer.layers.cross.kv", 2 * D, W, dt);
    bm_lin(bm, "qformer.layers.cross.out", D, D, dt);
    bm_ln(bm, "qformer.layers.cross.ln", D);
    bm_lin(bm, "qformer.layers.ffn.fc1", F, D, dt);
    bm_lin(bm, "qformer.layers.ffn.fc2", D, F, dt);
    bm_ln(bm, "qformer.layers.ffn.ln", D);
    for (int j = 0; j + 1 < m->n_proj_dims; j++) {
        char p[32];
        snprintf(p, sizeof p, "proj.%d", j);
        bm_lin(bm, p, m->proj_dims[j + 1], m->proj_dims[j], dt);
    }
}

static void bm_free(bench_model *bm) {
    for (int i = 0; i < bm->n; i++) free(bm->bufs[i]);
}

/* "vit.blocks.17.attn.qkv.weight" -> "vit.blocks.attn.qkv.weight": every layer shares one. */
static const tensor_view *bm_find(void *user, const char *name) {
    bench_model *bm = user;
    char key[128];
    const char *pre[2] = {"vit.blocks.", "qformer.layers."};
    snprintf(key, sizeof key, "%s", name);
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(pre[i]);
        if (strncmp(name, pre[i], n) != 0) continue;
        const char *rest = strchr(name + n, '.');
        if (rest) snprintf(key, sizeof key, "%s%s", pre[i], rest + 1);
    }
    for (int i = 0; i < bm->n; i++)
        if (strcmp(bm->names[i], key) == 0) return &bm->t[i];
    return NULL;
}

/* ---- one configuration ------------------------------------------------------------------- */

static int run(kern_be *be, manifest *m, dtype_id dt, double peak) {
    bench_model bm;
    bm_build(&bm, m, dt);
    vision_src src = {bm_find, &bm};
    vision_model *vm;
    int rc = vision_load_src(m, &src, be, 1, &vm);
    if (rc < 0) {
        fprintf(stderr, "bench_vision: %s\n", err_msg());
        bm_free(&bm);
        return rc;
    }
    int S = m->vision.image_size;
    float *px = tv_xmalloc((size_t)3 * S * S * sizeof(float));
    float *emb = tv_xmalloc((size_t)vision_tokens(vm) * vision_dim(vm) * sizeof(float));
    for (int64_t i = 0; i < (int64_t)3 * S * S; i++) px[i] = 4 * rnd(&bm);
    double t = clk_now_s();
    rc = vision_encode(vm, px, 1, emb);
    t = clk_now_s() - t;
    double gf = encoder_flops(m) / t / 1e9;
    if (rc < 0) fprintf(stderr, "bench_vision: %s\n", err_msg());
    else
        printf("vision encode %dx%d %s weights: %.2f s/image, %.1f GFLOP (%.1f GFLOP/s) = %.0f%% "
               "of FMA peak (%s; emb[0] %.4g)\n",
               S, S, dtype_name(dt), t, encoder_flops(m) / 1e9, gf, 100 * gf / peak,
               kern_name(be), emb[0]);
    free(px);
    free(emb);
    vision_free(vm);
    bm_free(&bm);
    return rc;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    manifest *m;
    if (manifest_load(TV_SOURCE_DIR "/tests/data/manifest", &m) < 0) {
        fprintf(stderr, "bench_vision: %s\n", err_msg());
        return 1;
    }
    kern_be *be;
    if (kern_cpu_new(threads, KERN_ISA_AUTO, &be) < 0) {
        fprintf(stderr, "bench_vision: %s\n", err_msg());
        return 1;
    }
    pool *lp = pool_new(threads);
    double peak = lim_fma_peak(lp);
    printf("FMA peak: %.1f GFLOP/s (register-only ymm FMA, best of 5, %d threads)\n", peak,
           threads);
    int rc = 0;
    const int sizes[2] = {224, 448};
    const dtype_id types[2] = {DT_F32, DT_F16};
    for (int s = 0; s < 2 && rc == 0; s++)
        for (int d = 0; d < 2 && rc == 0; d++) {
            m->vision.image_size = sizes[s];
            rc = run(be, m, types[d], peak);
        }
    /* measured again: if the machine was busier at the start, the fractions above are high */
    printf("FMA peak after the runs: %.1f GFLOP/s\n", lim_fma_peak(lp));
    pool_free(lp);
    kern_free(be);
    manifest_free(m);
    return rc < 0 ? 1 : 0;
}
