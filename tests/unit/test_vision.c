/* test_vision — the vision encoder against the PyTorch reference (tools/tinygptv/):
 *   (a) one EVA block at the real width (1408, 16 x 88, MLP 6144), weights regenerated with a C
 *       port of tools/tinygptv/detrand.py, against blocks.safetensors;
 *   (b) the tiny TinyGPT-V end to end: `tinyvlm convert` (conv_run) into a temp bundle, then
 *       ViT out, ln_vision, Q-Former out, proj1 and the image embeddings against
 *       tiny.safetensors: f32 within 1e-4 of the output's magnitude, f16/q8/q4 bundles looser;
 *   (c) a batch of 3 different images gives per image what 3 single-image runs give;
 *   plus loader errors (missing tensor, wrong shape, wrong dtype) on a model built in memory. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "tiny_model.h"
#include "detrand.h"
#include "convert.h"
#include "manifest.h"
#include "ops.h"
#include "qformer.h"
#include "safetensors.h"
#include "vision.h"
#include "vit.h"


/* ---- comparison ------------------------------------------------------------------------- */

/* max |a - ref| / max |ref|: the error relative to the output's magnitude. */
static double rel_err(const float *a, const float *ref, int64_t n, double *max_abs) {
    double e = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= e)) e = d;  /* NaN propagates */
        if (fabs(ref[i]) > m) m = fabs(ref[i]);
    }
    if (max_abs) *max_abs = e;
    return m > 0 ? e / m : e;
}

static const float *golden(const st_file *f, const char *name, int64_t numel) {
    const tensor_view *t = st_find(f, name);
    CHECK_MSG(t && t->dtype == DT_F32 && tensor_numel(t) == numel, "golden %s", name);
    return t && t->dtype == DT_F32 && tensor_numel(t) == numel ? t->data : NULL;
}

/* ---- detrand (tools/tinygptv/detrand.py, ported) ------------------------------------------ */

static float *detrand(uint64_t seed, int id, int64_t n, int e, float offset) {
    float *out = tv_xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) out[i] = detrand_at(seed, (uint64_t)id, (uint64_t)i, e, offset);
    return out;
}

static void test_detrand_known_answers(void) {
    /* python3 tools/tinygptv/detrand.py */
    const double a[4] = {0.4613330364227295, 0.18577969074249268, -0.5957343578338623,
                         -0.3876265287399292};
    for (int i = 0; i < 4; i++) CHECK(detrand_at(1234, 0, (uint64_t)i, 0, 0) == (float)a[i]);
    CHECK(detrand_at(1234, 7, 0, -5, 1.0f) == (float)0.980726420879364);
    CHECK(detrand_at(1234, 7, 1, -5, 1.0f) == (float)0.985669732093811);
}

/* ---- (a) one EVA block at the real width ------------------------------------------------- */

#define BLOCK_SEED 0x7417C0DEull
enum { EVA_W = 1408, EVA_H = 16, EVA_M = 6144, EVA_T = 7 };

typedef struct {
    const char *name;
    int id, e;
    float offset;
    int64_t n;
} eva_tensor;

/* blocks.json "eva.tensors" (ids, exponents, offsets). */
static const eva_tensor EVA_TENSORS[] = {
    {"x", 0, 0, 0, (int64_t)EVA_T * EVA_W},
    {"norm1.weight", 1, -3, 1, EVA_W},         {"norm1.bias", 2, -4, 0, EVA_W},
    {"attn.qkv.weight", 3, -5, 0, (int64_t)3 * EVA_W * EVA_W},
    {"attn.q_bias", 4, -4, 0, EVA_W},          {"attn.v_bias", 5, -4, 0, EVA_W},
    {"attn.proj.weight", 6, -5, 0, (int64_t)EVA_W * EVA_W},
    {"attn.proj.bias", 7, -4, 0, EVA_W},
    {"norm2.weight", 8, -3, 1, EVA_W},         {"norm2.bias", 9, -4, 0, EVA_W},
    {"mlp.fc1.weight", 10, -5, 0, (int64_t)EVA_M * EVA_W},
    {"mlp.fc1.bias", 11, -4, 0, EVA_M},
    {"mlp.fc2.weight", 12, -6, 0, (int64_t)EVA_W * EVA_M},
    {"mlp.fc2.bias", 13, -4, 0, EVA_W},
};
enum { EVA_N = sizeof EVA_TENSORS / sizeof EVA_TENSORS[0] };

static void test_eva_block(kern_be *be) {
    st_file *g;
    CHECK_OK(st_open(check_data("tinygptv/blocks.safetensors"), &g));
    if (!g) return;
    float *t[EVA_N];
    for (int i = 0; i < EVA_N; i++) {
        const eva_tensor *d = &EVA_TENSORS[i];
        t[i] = detrand(BLOCK_SEED, d->id, d->n, d->e, d->offset);
        char probe[64];
        snprintf(probe, sizeof probe, "eva.probe.%s", d->name);
        const float *p = i == 0 ? golden(g, "eva.x", d->n) : golden(g, probe, 16);
        if (p) CHECK_MSG(memcmp(p, t[i], 16 * sizeof(float)) == 0, "detrand %s", d->name);
    }
    /* qkv bias = cat(q_bias, zeros, v_bias) as the converter stores it */
    float *qkv_b = tv_xcalloc(3 * EVA_W, sizeof(float));
    memcpy(qkv_b, t[4], EVA_W * sizeof(float));
    memcpy(qkv_b + 2 * EVA_W, t[5], EVA_W * sizeof(float));
    vit_block b = {
        .norm1_w = t[1], .norm1_b = t[2],
        .qkv = {KERN_W_F32, 3 * EVA_W, EVA_W, t[3], NULL}, .qkv_b = qkv_b,
        .proj = {KERN_W_F32, EVA_W, EVA_W, t[6], NULL}, .proj_b = t[7],
        .norm2_w = t[8], .norm2_b = t[9],
        .fc1 = {KERN_W_F32, EVA_M, EVA_W, t[10], NULL}, .fc1_b = t[11],
        .fc2 = {KERN_W_F32, EVA_W, EVA_M, t[12], NULL}, .fc2_b = t[13]};
    manifest_vision mv = {.image_size = 14, .patch_size = 14, .width = EVA_W, .layers = 1,
                          .heads = EVA_H, .mlp_hidden = EVA_M, .ln_eps = 1e-6f,
                          .ln_vision_eps = 1e-5f};
    vit_config cfg;
    vit_scratch s;
    CHECK_OK(vit_config_from(&mv, &cfg));
    CHECK_OK(vit_scratch_init(&s, &cfg, 1, EVA_T));
    CHECK_OK(vit_block_forward(be, &cfg, &b, t[0], 1, EVA_T, &s));
    const float *y = golden(g, "eva.y", (int64_t)EVA_T * EVA_W);
    if (y) {
        double abs_e, rel = rel_err(t[0], y, (int64_t)EVA_T * EVA_W, &abs_e);
        printf("eva block (1408, 16x88, 7 tokens, %s): max abs err %.3g, relative to max|y| "
               "%.3g\n", kern_name(be), abs_e, rel);
        CHECK_MSG(rel <= 1e-4, "eva block rel err %g", rel);
    }
    /* a batch larger than the scratch is refused, not overrun */
    CHECK_FAILS(vit_block_forward(be, &cfg, &b, t[0], 2, EVA_T, &s));
    vit_scratch_free(&s);
    free(qkv_b);
    for (int i = 0; i < EVA_N; i++) free(t[i]);
    st_free(g);
}

/* ---- (b) the tiny model end to end through `tinyvlm convert` ----------------------------- */

static void compare(const char *dtype, const char *what, const float *got, const st_file *g,
                    const char *name, int64_t n, double tol) {
    const float *ref = golden(g, name, n);
    if (!ref || !got) return;
    double abs_e, rel = rel_err(got, ref, n, &abs_e);
    printf("tiny %-4s %-12s max abs err %.3g, relative %.3g\n", dtype, what, abs_e, rel);
    CHECK_MSG(rel <= tol, "%s %s rel err %g > %g", dtype, what, rel, tol);
}

/* Converts the tiny model at dtype and compares every stage with the f32 reference: within
 * tol (relative to each output's magnitude). */
static void test_tiny_end_to_end(kern_be *be, const char *dtype, double tol) {
    char dir[] = "/tmp/tv_vision_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    conv_opts o;
    tiny_conv_opts(&o, TINY_MODEL_DIR "/phi_fused", dir, dtype);
    o.image_size = 84;
    CHECK_OK(conv_run(&o));

    manifest *m = NULL;
    vision_model *vm = NULL;
    st_file *g = NULL;
    CHECK_OK(manifest_load(dir, &m));
    if (m) CHECK_OK(vision_load(m, be, 2, &vm));
    CHECK_OK(st_open(check_data("tinygptv/tiny.safetensors"), &g));
    if (vm && g) {
        const float *px = golden(g, "pixels", 3 * 84 * 84);
        float emb[8 * 80];
        CHECK_EQ_INT(vision_tokens(vm), 8);
        CHECK_EQ_INT(vision_dim(vm), 80);
        if (px) CHECK_OK(vision_encode(vm, px, 1, emb));
        vision_trace t;
        vision_get_trace(vm, &t);
        compare(dtype, "vit_out", t.vit_out, g, "vit_out", 37 * 88, tol);
        compare(dtype, "ln_vision", t.ln_vision, g, "ln_vision", 37 * 88, tol);
        compare(dtype, "qformer_out", t.qformer_out, g, "qformer_out", 8 * 48, tol);
        compare(dtype, "proj1", t.proj[0], g, "proj1", 8 * 112, tol);
        compare(dtype, "image_embeds", emb, g, "image_embeds", 8 * 80, tol);
        CHECK_FAILS(vision_encode(vm, px, 3, emb));   /* over max_batch */
    }
    st_free(g);
    vision_free(vm);
    manifest_free(m);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* ---- a random model in memory (batch and loader tests) ----------------------------------- */

#define MEM_MAX 128
typedef struct {
    tensor_view t[MEM_MAX];
    char names[MEM_MAX][80]; /* prefix (< 64) + ".weight" */
    float *bufs[MEM_MAX];
    int n;
    uint64_t seed;
} mem_model;

static const tensor_view *mem_find(void *user, const char *name) {
    mem_model *mm = user;
    for (int i = 0; i < mm->n; i++)
        if (strcmp(mm->names[i], name) == 0) return &mm->t[i];
    return NULL;
}

/* Adds an F32 tensor of random values ~ U(-amp, amp) + offset. */
static void mem_add(mem_model *mm, const char *name, int ndim, int64_t d0, int64_t d1,
                    float amp, float offset) {
    TV_ASSERT(mm->n < MEM_MAX);
    int i = mm->n++;
    int64_t n = ndim == 1 ? d0 : d0 * d1;
    float *b = tv_xmalloc((size_t)n * sizeof(float));
    for (int64_t j = 0; j < n; j++)
        b[j] = offset + amp * 2 * detrand_at(mm->seed, (uint64_t)i, (uint64_t)j, -1, 0);
    snprintf(mm->names[i], sizeof mm->names[i], "%s", name);
    mm->bufs[i] = b;
    mm->t[i] = (tensor_view){.name = mm->names[i], .dtype = DT_F32, .ndim = ndim,
                             .shape = {d0, d1}, .data = b, .nbytes = (size_t)n * 4};
}

static void mem_lin(mem_model *mm, const char *p, int64_t n, int64_t k) {
    char name[80];
    snprintf(name, sizeof name, "%s.weight", p);
    mem_add(mm, name, 2, n, k, 1.0f / sqrtf((float)k), 0);
    snprintf(name, sizeof name, "%s.bias", p);
    mem_add(mm, name, 1, n, 0, 0.1f, 0);
}

static void mem_ln(mem_model *mm, const char *p, int64_t n) {
    char name[80];
    snprintf(name, sizeof name, "%s.weight", p);
    mem_add(mm, name, 1, n, 0, 0.2f, 1);
    snprintf(name, sizeof name, "%s.bias", p);
    mem_add(mm, name, 1, n, 0, 0.1f, 0);
}

/* Sets small dimensions on m (a copy of the full manifest) and builds matching weights. */
static void mem_build(mem_model *mm, manifest *m) {
    m->vision = (manifest_vision){.image_size = 28, .patch_size = 14, .width = 64, .layers = 2,
                                  .heads = 2, .mlp_hidden = 96, .ln_eps = 1e-6f,
                                  .ln_vision_eps = 1e-5f};
    m->qformer = (manifest_qformer){.layers = 3, .width = 32, .heads = 2, .ffn = 64,
                                    .queries = 4, .cross_every = 2, .ln_eps = 1e-12f};
    m->n_proj_dims = 3;
    m->proj_dims[0] = 32, m->proj_dims[1] = 48, m->proj_dims[2] = 40;
    const int W = 64, T = 5, D = 32;
    char p[64];
    memset(mm, 0, sizeof *mm);
    mm->seed = 99;
    mem_add(mm, "vit.cls_token", 1, W, 0, 1, 0);
    mem_add(mm, "vit.pos_embed", 2, T, W, 1, 0);
    mem_lin(mm, "vit.patch_embed", W, 3 * 14 * 14);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "vit.blocks.%d.norm1", i), mem_ln(mm, p, W);
        snprintf(p, sizeof p, "vit.blocks.%d.norm2", i), mem_ln(mm, p, W);
        snprintf(p, sizeof p, "vit.blocks.%d.attn.qkv", i), mem_lin(mm, p, 3 * W, W);
        snprintf(p, sizeof p, "vit.blocks.%d.attn.proj", i), mem_lin(mm, p, W, W);
        snprintf(p, sizeof p, "vit.blocks.%d.mlp.fc1", i), mem_lin(mm, p, 96, W);
        snprintf(p, sizeof p, "vit.blocks.%d.mlp.fc2", i), mem_lin(mm, p, W, 96);
    }
    mem_ln(mm, "ln_vision", W);
    mem_add(mm, "qformer.query_tokens", 2, 4, D, 1, 0);
    mem_ln(mm, "qformer.ln", D);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "qformer.layers.%d.self.qkv", i), mem_lin(mm, p, 3 * D, D);
        snprintf(p, sizeof p, "qformer.layers.%d.self.out", i), mem_lin(mm, p, D, D);
        snprintf(p, sizeof p, "qformer.layers.%d.self.ln", i), mem_ln(mm, p, D);
        snprintf(p, sizeof p, "qformer.layers.%d.ffn.fc1", i), mem_lin(mm, p, 64, D);
        snprintf(p, sizeof p, "qformer.layers.%d.ffn.fc2", i), mem_lin(mm, p, D, 64);
        snprintf(p, sizeof p, "qformer.layers.%d.ffn.ln", i), mem_ln(mm, p, D);
        if (i % 2) continue;
        snprintf(p, sizeof p, "qformer.layers.%d.cross.q", i), mem_lin(mm, p, D, D);
        snprintf(p, sizeof p, "qformer.layers.%d.cross.kv", i), mem_lin(mm, p, 2 * D, W);
        snprintf(p, sizeof p, "qformer.layers.%d.cross.out", i), mem_lin(mm, p, D, D);
        snprintf(p, sizeof p, "qformer.layers.%d.cross.ln", i), mem_ln(mm, p, D);
    }
    mem_lin(mm, "proj.0", 48, 32);
    mem_lin(mm, "proj.1", 40, 48);
}

static void mem_free(mem_model *mm) {
    for (int i = 0; i < mm->n; i++) free(mm->bufs[i]);
}

/* ---- (c) batch of 3 == 3 single runs ----------------------------------------------------- */

static void test_batch(kern_be *be, manifest *m) {
    mem_model mm;
    mem_build(&mm, m);
    vision_src src = {mem_find, &mm};
    vision_model *vm = NULL;
    CHECK_OK(vision_load_src(m, &src, be, 3, &vm));
    if (!vm) {
        mem_free(&mm);
        return;
    }
    enum { S = 28, NPX = 3 * S * S, E = 4 * 40 };
    float *px = tv_xmalloc(3 * NPX * sizeof(float)), emb3[3 * E], emb1[E];
    for (int i = 0; i < 3 * NPX; i++)
        px[i] = 2 * detrand_at(7, 1000 + (uint64_t)(i / NPX), (uint64_t)(i % NPX), 0, 0);
    CHECK_OK(vision_encode(vm, px, 3, emb3));
    /* the three images differ, so their embeddings must too */
    CHECK(rel_err(emb3, emb3 + E, E, NULL) > 1e-3);
    for (int b = 0; b < 3; b++) {
        CHECK_OK(vision_encode(vm, px + b * NPX, 1, emb1));
        double rel = rel_err(emb3 + b * E, emb1, E, NULL);
        CHECK_MSG(rel <= 1e-5, "batch image %d differs from its single run: %g", b, rel);
    }
    CHECK_FAILS(vision_encode(vm, px, 4, emb3));
    CHECK_FAILS(vision_encode(vm, px, 0, emb3));
    vision_free(vm);
    free(px);

    /* loader errors name the tensor: missing, wrong shape, wrong dtype */
    tensor_view *fc1 = (tensor_view *)mem_find(&mm, "vit.blocks.1.mlp.fc1.weight");
    fc1->shape[0] = 95;
    CHECK_FAILS(vision_load_src(m, &src, be, 1, &vm));
    CHECK(strstr(err_msg(), "vit.blocks.1.mlp.fc1.weight") != NULL);
    fc1->shape[0] = 96;
    tensor_view *qt = (tensor_view *)mem_find(&mm, "qformer.ln.bias");
    qt->dtype = DT_I32;
    CHECK_FAILS(vision_load_src(m, &src, be, 1, &vm));
    qt->dtype = DT_F32;
    snprintf(mm.names[mm.n - 1], sizeof mm.names[0], "proj.1.bias_renamed");
    CHECK_FAILS(vision_load_src(m, &src, be, 1, &vm));
    CHECK(strstr(err_msg(), "proj.1.bias") != NULL);
    CHECK(vm == NULL);
    mem_free(&mm);
}

int main(void) {
    kern_be *be = NULL;
    CHECK_OK(kern_cpu_new(2, KERN_ISA_AUTO, &be));
    if (!be) return check_finish("test_vision");
    test_detrand_known_answers();
    test_eva_block(be);
    test_tiny_end_to_end(be, "f32", 1e-4);
    /* the other storage types: looser, but each still far below a wrong model's error (~1) */
    test_tiny_end_to_end(be, "f16", 3e-3);
    test_tiny_end_to_end(be, "q8", 2e-2);
    test_tiny_end_to_end(be, "q4", 2.5e-1);
    manifest *m = NULL;
    CHECK_OK(manifest_load(check_data("manifest"), &m));
    if (m) test_batch(be, m);
    manifest_free(m);
    kern_free(be);
    return check_finish("test_vision");
}
