/* bench_cuda — full-size TinyGPT-V on the GPU with random weights built in memory (no files):
 *   - device memory bandwidth, measured in the same run (a 1 GiB device-to-device copy, bytes
 *     read + written), the denominator of the decode figure;
 *   - ViT-g/14 at 448 (39 blocks, 1408 wide, 16 x 88 heads, MLP 6144) + ln_vision + Q-Former
 *     (12 layers, 768) + projections, f16 weights: images/s at batch 1, 8, 32;
 *   - Phi-2 (32 layers, 2560, 32 x 80, rotary 32, FFN 10240, vocab 51200), f16 weights: decode
 *     tokens/s at batch 1 (and weight bytes per token / time as a fraction of the bandwidth), and
 *     aggregate tokens/s at 8 and 32 concurrent sequences;
 *   - GPU memory of a vision worker (max batch 1) and of an LM worker with 8 sequences of 2048.
 * Every layer has its own device copy of the weights (one host buffer per tensor is shared, but
 * each layer is uploaded separately), so the memory traffic and residency are the real model's.
 * Usage: bench_cuda [--quick]    (--quick: fewer repetitions) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dtype.h"
#include "err.h"
#include "manifest.h"
#include "ops.h"
#include "phi.h"
#include "vision.h"

static uint64_t rng = 42;
static float rnd(void) {   /* U(-0.5, 0.5) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

static void *rand_buf(int64_t numel, dtype_id dt, float amp, float offset) {
    void *b = tv_xmalloc((size_t)numel * dtype_size(dt));
    for (int64_t j = 0; j < numel; j++) {
        float v = offset + amp * rnd();
        if (dt == DT_F32) ((float *)b)[j] = v;
        else ((uint16_t *)b)[j] = dtype_f32_to_f16(v);
    }
    return b;
}

static double mem_used(kern_be *be) {
    kern_device d;
    return kern_device_info(be, &d) == 0 ? (double)d.mem_used : 0;
}

/* ---- bandwidth ------------------------------------------------------------------------------ */

static double bandwidth(kern_be *be) {
    size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    if (kern_alloc(be, bytes, &a) || kern_alloc(be, bytes, &b)) {
        fprintf(stderr, "bench_cuda: %s\n", err_msg());
        kern_release(be, a);
        return 0;
    }
    kern_copy(be, b, a, bytes);
    kern_sync(be);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t = clk_now_s();
        for (int i = 0; i < 10; i++) kern_copy(be, i % 2 ? a : b, i % 2 ? b : a, bytes);
        kern_sync(be);
        t = (clk_now_s() - t) / 10;
        if (t < best) best = t;
    }
    kern_release(be, a);
    kern_release(be, b);
    return 2.0 * (double)bytes / best;   /* read + write */
}

/* ---- vision: tensors in memory, one view per layer ------------------------------------------ */

#define VT_MAX 2048
typedef struct {
    char shared[64][64];                /* names with the layer index removed */
    tensor_view proto[64];
    int n_proto;
    char names[VT_MAX][64];
    tensor_view views[VT_MAX];          /* per full name: its own view (so its own upload) */
    int n_views;
} vbench;

static void vb_add(vbench *vb, const char *name, int64_t n, int64_t k, dtype_id dt, float amp,
                   float off) {
    TV_ASSERT(vb->n_proto < 64);
    int i = vb->n_proto++;
    if (!k) dt = DT_F32;
    int64_t numel = k ? n * k : n;
    snprintf(vb->shared[i], sizeof vb->shared[i], "%s", name);
    vb->proto[i] = (tensor_view){.name = vb->shared[i], .dtype = dt, .ndim = k ? 2 : 1,
                                 .shape = {n, k}, .data = rand_buf(numel, dt, amp, off),
                                 .nbytes = (size_t)numel * dtype_size(dt)};
}

static void vb_lin(vbench *vb, const char *p, int64_t n, int64_t k) {
    char name[64];
    snprintf(name, sizeof name, "%s.weight", p);
    vb_add(vb, name, n, k, DT_F16, 2.0f / (float)k, 0);
    snprintf(name, sizeof name, "%s.bias", p);
    vb_add(vb, name, n, 0, DT_F32, 0.1f, 0);
}

static void vb_ln(vbench *vb, const char *p, int64_t n) {
    char name[64];
    snprintf(name, sizeof name, "%s.weight", p);
    vb_add(vb, name, n, 0, DT_F32, 0.2f, 1);
    snprintf(name, sizeof name, "%s.bias", p);
    vb_add(vb, name, n, 0, DT_F32, 0.1f, 0);
}

static void vb_build(vbench *vb, const manifest *m) {
    int64_t W = m->vision.width, M = m->vision.mlp_hidden, P = m->vision.patch_size;
    int64_t G = m->vision.image_size / P, D = m->qformer.width, F = m->qformer.ffn;
    memset(vb, 0, sizeof *vb);
    vb_add(vb, "vit.cls_token", W, 0, DT_F32, 1, 0);
    vb_add(vb, "vit.pos_embed", 1 + G * G, W, DT_F32, 1, 0);
    vb_lin(vb, "vit.patch_embed", W, 3 * P * P);
    vb_ln(vb, "vit.blocks.norm1", W);
    vb_ln(vb, "vit.blocks.norm2", W);
    vb_lin(vb, "vit.blocks.attn.qkv", 3 * W, W);
    vb_lin(vb, "vit.blocks.attn.proj", W, W);
    vb_lin(vb, "vit.blocks.mlp.fc1", M, W);
    vb_lin(vb, "vit.blocks.mlp.fc2", W, M);
    vb_ln(vb, "ln_vision", W);
    vb_add(vb, "qformer.query_tokens", m->qformer.queries, D, DT_F32, 1, 0);
    vb_ln(vb, "qformer.ln", D);
    vb_lin(vb, "qformer.layers.self.qkv", 3 * D, D);
    vb_lin(vb, "qformer.layers.self.out", D, D);
    vb_ln(vb, "qformer.layers.self.ln", D);
    vb_lin(vb, "qformer.layers.cross.q", D, D);
    vb_lin(vb, "qformer.layers.cross.kv", 2 * D, W);
    vb_lin(vb, "qformer.layers.cross.out", D, D);
    vb_ln(vb, "qformer.layers.cross.ln", D);
    vb_lin(vb, "qformer.layers.ffn.fc1", F, D);
    vb_lin(vb, "qformer.layers.ffn.fc2", D, F);
    vb_ln(vb, "qformer.layers.ffn.ln", D);
    for (int j = 0; j + 1 < m->n_proj_dims; j++) {
        char p[32];
        snprintf(p, sizeof p, "proj.%d", j);
        vb_lin(vb, p, m->proj_dims[j + 1], m->proj_dims[j]);
    }
}

static const tensor_view *vb_find(void *user, const char *name) {
    vbench *vb = user;
    for (int i = 0; i < vb->n_views; i++)
        if (!strcmp(vb->names[i], name)) return &vb->views[i];
    char key[128];
    snprintf(key, sizeof key, "%s", name);
    const char *pre[2] = {"vit.blocks.", "qformer.layers."};
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(pre[i]);
        const char *rest = strncmp(name, pre[i], n) ? NULL : strchr(name + n, '.');
        if (rest) snprintf(key, sizeof key, "%s%s", pre[i], rest + 1);
    }
    for (int i = 0; i < vb->n_proto; i++)
        if (!strcmp(vb->shared[i], key) && vb->n_views < VT_MAX) {
            int v = vb->n_views++;
            snprintf(vb->names[v], sizeof vb->names[v], "%s", name);
            vb->views[v] = vb->proto[i];
            vb->views[v].name = vb->names[v];
            return &vb->views[v];
        }
    return NULL;
}

static void bench_vision(kern_be *be, manifest *m, int quick) {
    vbench *vb = tv_xcalloc(1, sizeof *vb);
    vb_build(vb, m);
    vision_src src = {vb_find, vb};
    int S = m->vision.image_size;
    float *px = rand_buf((int64_t)32 * 3 * S * S, DT_F32, 4, 0);
    float *emb = tv_xmalloc((size_t)32 * 32 * 2560 * sizeof(float));
    /* memory of a vision worker: max batch 1 */
    double base = mem_used(be);
    vision_model *vm = NULL;
    if (vision_load_src(m, &src, be, 1, &vm) < 0) {
        fprintf(stderr, "bench_cuda vision: %s\n", err_msg());
    } else {
        vision_encode(vm, px, 1, emb);
        printf("vision worker f16, %dpx, max batch 1: GPU memory %.2f GB (weights + activations "
               "+ backend scratch)\n", S, (mem_used(be) - base) / 1e9);
        vision_free(vm);
    }
    if (vision_load_src(m, &src, be, 32, &vm) < 0) {
        fprintf(stderr, "bench_cuda vision: %s\n", err_msg());
    } else {
        const int batches[3] = {1, 8, 32};
        for (int i = 0; i < 3; i++) {
            int B = batches[i], reps = quick ? 2 : (B == 32 ? 3 : 6);
            vision_encode(vm, px, B, emb);   /* warm-up */
            double best = 1e30;
            for (int r = 0; r < reps; r++) {
                double t = clk_now_s();
                if (vision_encode(vm, px, B, emb) < 0) fprintf(stderr, "%s\n", err_msg());
                t = clk_now_s() - t;
                if (t < best) best = t;
            }
            printf("vision ViT-g %dpx f16 batch %2d: %.2f ms/batch, %.1f images/s (best of %d)\n",
                   S, B, best * 1e3, B / best, reps);
        }
        printf("  (vision max batch 32: GPU memory %.2f GB)\n", (mem_used(be) - base) / 1e9);
        vision_free(vm);
    }
    for (int i = 0; i < vb->n_proto; i++) free((void *)vb->proto[i].data);
    free(vb);
    free(px);
    free(emb);
}

/* ---- Phi-2 ----------------------------------------------------------------------------------- */

typedef struct {
    phi_config cfg;
    phi_weights w;
    phi_layer_weights *layers;
    void *bufs[32];
    int nb;
} pbench;

static void *pb_buf(pbench *pb, int64_t numel, dtype_id dt, float amp, float off) {
    return pb->bufs[pb->nb++] = rand_buf(numel, dt, amp, off);
}

static kern_weight pb_mat(pbench *pb, int64_t n, int64_t k) {
    return (kern_weight){KERN_W_F16, n, k, pb_buf(pb, n * k, DT_F16, 2.0f / (float)k, 0), NULL};
}

static void pb_build(pbench *pb, const manifest *m) {
    const manifest_lm *lm = &m->lm;
    memset(pb, 0, sizeof *pb);
    pb->cfg = (phi_config){lm->layers, lm->width, lm->heads, lm->head_dim, lm->ffn, lm->vocab,
                           lm->rotary_dims, lm->rope_theta, lm->ln_eps, lm->rms_eps,
                           lm->qk_layernorm, lm->post_attn_rmsnorm, lm->lm_head_bias};
    int64_t d = lm->width, f = lm->ffn, dh = lm->head_dim, V = lm->vocab;
    phi_layer_weights L = {
        .ln_w = pb_buf(pb, d, DT_F32, 0.2f, 1), .ln_b = pb_buf(pb, d, DT_F32, 0.1f, 0),
        .qkv = pb_mat(pb, 3 * d, d), .qkv_b = pb_buf(pb, 3 * d, DT_F32, 0.1f, 0),
        .q_ln_w = pb_buf(pb, dh, DT_F32, 0.2f, 1), .q_ln_b = pb_buf(pb, dh, DT_F32, 0.1f, 0),
        .k_ln_w = pb_buf(pb, dh, DT_F32, 0.2f, 1), .k_ln_b = pb_buf(pb, dh, DT_F32, 0.1f, 0),
        .dense = pb_mat(pb, d, d), .dense_b = pb_buf(pb, d, DT_F32, 0.1f, 0),
        .post_ln_w = pb_buf(pb, d, DT_F32, 0.2f, 1),
        .fc1 = pb_mat(pb, f, d), .fc1_b = pb_buf(pb, f, DT_F32, 0.1f, 0),
        .fc2 = pb_mat(pb, d, f), .fc2_b = pb_buf(pb, d, DT_F32, 0.1f, 0)};
    pb->layers = tv_xcalloc((size_t)lm->layers, sizeof *pb->layers);
    for (int i = 0; i < lm->layers; i++) pb->layers[i] = L;   /* phi_new uploads each */
    pb->w = (phi_weights){.embed = pb_buf(pb, V * d, DT_F16, 0.5f, 0), .embed_dtype = DT_F16,
                          .layers = pb->layers, .final_ln_w = pb_buf(pb, d, DT_F32, 0.2f, 1),
                          .final_ln_b = pb_buf(pb, d, DT_F32, 0.1f, 0),
                          .lm_head = pb_mat(pb, V, d),
                          .lm_head_b = pb_buf(pb, V, DT_F32, 0.1f, 0)};
}

/* Bytes of weights one decode step reads (every matrix once, f16; vectors are negligible). */
static double pb_weight_bytes(const phi_config *c) {
    double d = c->width, f = c->ffn;
    return 2.0 * (c->layers * (3 * d * d + d * d + 2 * d * f) + (double)c->vocab * d);
}

/* n sequences decoding together: steps steps after a 64-token prefill each. */
static double decode_rate(phi_model *pm, int n, int steps, float *emb, float *logits) {
    int slots[32];
    int32_t toks[32];
    for (int s = 0; s < n; s++) {
        slots[s] = s;
        toks[s] = (int32_t)(s * 7 + 1);
        phi_reset(pm, s);
        if (phi_prefill(pm, s, emb, 64, 0, logits) < 0) fprintf(stderr, "%s\n", err_msg());
    }
    phi_decode(pm, n, slots, toks, logits);   /* warm-up */
    double t = clk_now_s();
    for (int k = 0; k < steps; k++)
        if (phi_decode(pm, n, slots, toks, logits) < 0) fprintf(stderr, "%s\n", err_msg());
    return (double)n * steps / (clk_now_s() - t);
}

static void bench_phi(kern_be *be, manifest *m, double bw, int quick) {
    pbench pb;
    pb_build(&pb, m);
    const phi_config *c = &pb.cfg;
    float *emb = rand_buf((int64_t)64 * c->width, DT_F32, 1, 0);
    float *logits = tv_xmalloc((size_t)32 * c->vocab * sizeof(float));
    double base = mem_used(be);
    phi_model *pm = NULL;
    /* an LM worker with 8 sequences of 2k */
    if (phi_new(c, &pb.w, be, 8, 2048, &pm) < 0) {
        fprintf(stderr, "bench_cuda phi (8 x 2048): %s\n", err_msg());
    } else {
        printf("LM worker f16, 8 seqs x 2048 (f32 KV cache): GPU memory %.2f GB\n",
               (mem_used(be) - base) / 1e9);
        phi_free(pm);
        pm = NULL;
    }
    if (phi_new(c, &pb.w, be, 32, 256, &pm) < 0) {
        fprintf(stderr, "bench_cuda phi: %s\n", err_msg());
    } else {
        int steps = quick ? 16 : 64;
        double r1 = decode_rate(pm, 1, steps, emb, logits);
        double wb = pb_weight_bytes(c);
        printf("Phi-2 f16 decode batch 1: %.1f tok/s, %.2f ms/token; %.2f GB weights/token = "
               "%.0f GB/s = %.0f%% of the measured %.0f GB/s\n", r1, 1e3 / r1, wb / 1e9,
               wb * r1 / 1e9, 100 * wb * r1 / bw, bw / 1e9);
        double r8 = decode_rate(pm, 8, steps / 2, emb, logits);
        double r32 = decode_rate(pm, 32, steps / 2, emb, logits);
        printf("Phi-2 f16 decode aggregate: 8 seqs %.1f tok/s (%.1fx b1), 32 seqs %.1f tok/s "
               "(%.1fx b1)\n", r8, r8 / r1, r32, r32 / r1);
        double t = clk_now_s();
        phi_reset(pm, 0);
        phi_prefill(pm, 0, emb, 64, 0, logits);
        printf("Phi-2 f16 prefill 64 tokens: %.1f ms\n", (clk_now_s() - t) * 1e3);
        phi_free(pm);
    }
    for (int i = 0; i < pb.nb; i++) free(pb.bufs[i]);
    free(pb.layers);
    free(emb);
    free(logits);
}

/* ---- single ops of a decode step (where the time of a step goes) ---------------------------- */

static double op_us(kern_be *be, int reps, int (*fn)(kern_be *, void *), void *ctx) {
    fn(be, ctx);
    kern_sync(be);
    double t = clk_now_s();
    for (int i = 0; i < reps; i++) fn(be, ctx);
    kern_sync(be);
    return (clk_now_s() - t) / reps * 1e6;
}

typedef struct {
    kern_weight w;
    float *x, *y, *bias;
    kern_kv kv;
    int32_t pos;
} op_ctx;

static int op_gemv(kern_be *be, void *c) {
    op_ctx *o = c;
    return kern_matmul(be, o->x, 1, &o->w, o->bias, o->y);
}
static int op_add(kern_be *be, void *c) {
    op_ctx *o = c;
    return kern_add(be, o->x, o->x, o->y, 2560);
}
static int op_rope(kern_be *be, void *c) {
    op_ctx *o = c;
    return kern_rope(be, o->y, 7680, 1, 32, 80, 32, &o->pos, 10000.0f);
}
static int op_dec(kern_be *be, void *c) {
    op_ctx *o = c;
    return kern_attn_decode(be, 1, o->x, 2560, &o->kv, 32, 0, 80, 0.1f, o->y, 2560);
}

static void bench_ops(kern_be *be, double bw) {
    op_ctx o = {.pos = 100};
    int64_t big = (int64_t)2048 * 2560 * 2;
    void *wd = NULL, *x = NULL, *y = NULL, *kc = NULL;
    if (kern_alloc(be, (size_t)10240 * 2560 * 2, &wd) || kern_alloc(be, 10240 * 4, &x) ||
        kern_alloc(be, 10240 * 4 * 3, &y) || kern_alloc(be, (size_t)big * 4, &kc)) {
        fprintf(stderr, "bench_cuda ops: %s\n", err_msg());
        return;
    }
    o.x = x, o.y = y, o.bias = (float *)x;
    o.w = (kern_weight){KERN_W_F16, 10240, 2560, wd, NULL};
    double t = op_us(be, 200, op_gemv, &o);
    printf("op: f16 matvec 10240 x 2560 (fc1): %.1f us = %.0f GB/s (%.0f%%)\n", t,
           10240.0 * 2560 * 2 / t / 1e3, 100 * 10240.0 * 2560 * 2 / (t * 1e-6) / bw);
    o.w = (kern_weight){KERN_W_F16, 2560, 10240, wd, NULL};
    t = op_us(be, 200, op_gemv, &o);
    printf("op: f16 matvec 2560 x 10240 (fc2): %.1f us = %.0f GB/s\n", t,
           10240.0 * 2560 * 2 / t / 1e3);
    o.w = (kern_weight){KERN_W_F16, 2560, 2560, wd, NULL};
    t = op_us(be, 200, op_gemv, &o);
    printf("op: f16 matvec 2560 x 2560 (dense): %.1f us = %.0f GB/s\n", t,
           2560.0 * 2560 * 2 / t / 1e3);
    printf("op: add of 2560 floats (launch cost): %.1f us\n", op_us(be, 500, op_add, &o));
    printf("op: rope 1 token x 32 heads (with its position upload): %.1f us\n",
           op_us(be, 500, op_rope, &o));
    const int lens[3] = {128, 512, 2048};
    for (int i = 0; i < 3; i++) {
        o.kv = (kern_kv){kc, (float *)kc + big / 2, lens[i], 2560};
        printf("op: decode attention 1 seq x 32 heads x 80, len %d: %.1f us\n", lens[i],
               op_us(be, 200, op_dec, &o));
    }
    kern_release(be, wd), kern_release(be, x), kern_release(be, y), kern_release(be, kc);
}

int main(int argc, char **argv) {
    int quick = argc > 1 && !strcmp(argv[1], "--quick");
    manifest *m;
    if (manifest_load(TV_SOURCE_DIR "/tests/data/manifest", &m) < 0) {
        fprintf(stderr, "bench_cuda: %s\n", err_msg());
        return 1;
    }
    kern_be *be;
    if (kern_new_device("cuda", 0, &be) < 0) {
        printf("bench_cuda: no CUDA GPU (%s): nothing to measure\n", err_msg());
        manifest_free(m);
        return 0;
    }
    kern_device d;
    kern_device_info(be, &d);
    printf("device: %s, %.1f GB\n", d.device, d.mem_total / 1e9);
    double bw = bandwidth(be);
    printf("device memory bandwidth (1 GiB copy, read + write): %.0f GB/s\n", bw / 1e9);
    bench_ops(be, bw);
    bench_phi(be, m, bw, quick);
    bench_vision(be, m, quick);
    kern_device_info(be, &d);
    printf("busy time on the device over the run: %.0f ms\n", d.busy_ms);
    kern_free(be);
    manifest_free(m);
    return 0;
}
