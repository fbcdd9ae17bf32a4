/* bench_phi — full-size Phi-2 (32 layers, 2560 wide, FFN 10240, vocab 51200, TinyGPT-V flags on)
 * with random weights in memory, per weight type: prefill tokens/s and batch-1 decode tokens/s,
 * and decode as a fraction of the memory roofline (weight bytes read per token / the read
 * bandwidth measured in the same run).
 *
 * Usage: bench_phi [prefill_tokens=128] [decode_steps=16] [types=q8,f16,f32] [threads=0]
 * A type whose weights do not fit in MemAvailable (with 2 GB to spare) is skipped and said so.
 * The weights are random bytes of a sensible magnitude (the timing does not depend on values);
 * each layer has its own matrices so decode really streams every byte from DRAM. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dtype.h"
#include "err.h"
#include "machine_limits.h"
#include "ops.h"
#include "phi.h"
#include "pool.h"

#define L_ 32
#define D_ 2560
#define H_ 32
#define F_ 10240
#define V_ 51200

static uint64_t rng = 0x1234567887654321ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* ---- random weights ----------------------------------------------------------------------- */

typedef struct {
    void **blocks; /* everything malloc'd, for freeing */
    int n, cap;
    double bytes;  /* matrix bytes (values + scales) read per decode token */
} arena;

static void *take(arena *a, size_t bytes) {
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "bench_phi: out of memory\n");
        exit(1);
    }
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->blocks = realloc(a->blocks, (size_t)a->cap * sizeof *a->blocks);
    }
    a->blocks[a->n++] = p;
    return p;
}

/* Fills bytes with random values of the type: q8 any int8, f16/f32 small magnitudes. */
static void fill(void *p, size_t bytes, kern_wtype t) {
    uint64_t *u = p;
    size_t n = bytes / 8;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = next();
        if (t == KERN_W_F16) /* each half: sign + exponent 10..13 (2^-5..2^-2) + mantissa */
            r = (r & 0x83ff83ff83ff83ffull) | 0x2800280028002800ull;
        else if (t == KERN_W_F32) /* each float: exponent 2^-5..2^-2 */
            r = (r & 0x807fffff807fffffull) | 0x3d0000003d000000ull;
        u[i] = r;
    }
}

static float *vec(arena *a, int64_t n, float base) {
    float *v = take(a, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        v[i] = base + 0.01f * (float)((int64_t)(next() % 200) - 100) / 100.0f;
    return v;
}

static kern_weight mat(arena *a, kern_wtype t, int64_t n, int64_t k) {
    kern_weight w = {t, n, k, NULL, NULL};
    size_t esz = t == KERN_W_F32 ? 4 : t == KERN_W_Q8 ? 1 : 2;
    size_t bytes = (size_t)(n * k) * esz;
    void *d = take(a, bytes);
    fill(d, bytes, t);
    w.data = d;
    a->bytes += (double)bytes;
    if (t == KERN_W_Q8) {
        float *s = take(a, (size_t)(n * k / 32) * sizeof(float));
        for (int64_t i = 0; i < n * k / 32; i++)
            s[i] = 1e-3f;
        w.scale = s;
        a->bytes += (double)(n * k / 32) * 4;
    }
    return w;
}

static double model_bytes(kern_wtype t) {
    double p = (double)L_ * (4.0 * D_ * D_ + 2.0 * D_ * F_) + (double)V_ * D_;
    return t == KERN_W_F32 ? 4 * p : t == KERN_W_F16 ? 2 * p : p * (1 + 4.0 / 32);
}

static double mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

static void run_type(kern_be *be, kern_wtype t, int T, int steps, double bw) {
    double need = model_bytes(t) + (double)V_ * D_ * 2;
    if (need + 2e9 > mem_available()) {
        printf("%-4s skipped: needs %.1f GB, %.1f GB available\n", kern_wtype_name(t), need / 1e9,
               mem_available() / 1e9);
        return;
    }
    arena a = {0};
    double t0 = clk_now_s();
    phi_layer_weights layers[L_];
    for (int l = 0; l < L_; l++) {
        phi_layer_weights *Lw = &layers[l];
        Lw->ln_w = vec(&a, D_, 1.0f);
        Lw->ln_b = vec(&a, D_, 0.0f);
        Lw->qkv = mat(&a, t, 3 * D_, D_);
        Lw->qkv_b = vec(&a, 3 * D_, 0.0f);
        Lw->q_ln_w = vec(&a, D_ / H_, 1.0f);
        Lw->q_ln_b = vec(&a, D_ / H_, 0.0f);
        Lw->k_ln_w = vec(&a, D_ / H_, 1.0f);
        Lw->k_ln_b = vec(&a, D_ / H_, 0.0f);
        Lw->dense = mat(&a, t, D_, D_);
        Lw->dense_b = vec(&a, D_, 0.0f);
        Lw->post_ln_w = vec(&a, D_, 1.0f);
        Lw->fc1 = mat(&a, t, F_, D_);
        Lw->fc1_b = vec(&a, F_, 0.0f);
        Lw->fc2 = mat(&a, t, D_, F_);
        Lw->fc2_b = vec(&a, D_, 0.0f);
    }
    uint16_t *embed = take(&a, (size_t)V_ * D_ * 2);
    fill(embed, (size_t)V_ * D_ * 2, KERN_W_F16);
    phi_weights w = {.embed = embed, .embed_dtype = DT_F16, .layers = layers,
                     .final_ln_w = vec(&a, D_, 1.0f), .final_ln_b = vec(&a, D_, 0.0f),
                     .lm_head = mat(&a, t, V_, D_), .lm_head_b = vec(&a, V_, 0.0f)};
    phi_config c = {.layers = L_, .width = D_, .heads = H_, .head_dim = D_ / H_, .ffn = F_,
                    .vocab = V_, .rotary_dims = 32, .rope_theta = 10000.0f, .ln_eps = 1e-5f,
                    .rms_eps = 1e-6f, .qk_layernorm = 1, .post_attn_rmsnorm = 1,
                    .lm_head_bias = 1};
    double t_fill = clk_now_s() - t0;
    phi_model *m = NULL;
    if (phi_new(&c, &w, be, 1, T + steps + 1, &m)) {
        fprintf(stderr, "bench_phi: %s\n", err_msg());
        exit(1);
    }
    float *emb = malloc((size_t)T * D_ * sizeof(float)), *logits = malloc((size_t)V_ * 4);
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int i = 0; i < T; i++)
        ids[i] = (int32_t)(next() % V_);
    phi_embed_tokens(m, ids, T, emb);

    double tp = clk_now_s();
    int rc = phi_prefill(m, 0, emb, T, 0, logits);
    tp = clk_now_s() - tp;
    int slot = 0;
    int32_t tok = 1;
    rc |= phi_decode(m, 1, &slot, &tok, logits); /* warm-up step */
    double td = clk_now_s();
    for (int s = 0; s < steps && !rc; s++)
        rc |= phi_decode(m, 1, &slot, &tok, logits);
    td = (clk_now_s() - td) / steps;
    if (rc)
        fprintf(stderr, "bench_phi: %s\n", err_msg());
    double roof = bw * 1e9 / a.bytes; /* tokens/s if only weight streaming counted */
    printf("%-4s weights %.2f GB (made in %.1f s) | prefill %d tokens: %.1f tok/s (%.2f s) | "
           "decode batch 1: %.2f tok/s (%.0f ms/token) = %.0f%% of roofline %.2f tok/s "
           "(%.2f GB/token at %.1f GB/s)\n",
           kern_wtype_name(t), a.bytes / 1e9, t_fill, T, T / tp, tp, 1 / td, td * 1e3,
           100 * (1 / td) / roof, roof, a.bytes / 1e9, bw);
    fflush(stdout);
    phi_free(m);
    free(emb);
    free(logits);
    free(ids);
    for (int i = 0; i < a.n; i++)
        free(a.blocks[i]);
    free(a.blocks);
}

int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 128, steps = argc > 2 ? atoi(argv[2]) : 16;
    const char *types = argc > 3 ? argv[3] : "q8,f16,f32";
    int threads = argc > 4 ? atoi(argv[4]) : 0;
    if (threads <= 0) /* as kern_cpu_new: one per online core, for the bandwidth pool too */
        threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (T < 1 || steps < 1) {
        fprintf(stderr, "usage: bench_phi [prefill_tokens] [decode_steps] [types] [threads]\n");
        return 2;
    }
    kern_be *be = NULL;
    if (kern_cpu_new(threads, KERN_ISA_AUTO, &be)) {
        fprintf(stderr, "bench_phi: %s\n", err_msg());
        return 1;
    }
    pool *lp = pool_new(threads);
    double bw = lim_bandwidth(lp);
    pool_free(lp);
    printf("backend %s; memory read bandwidth %.1f GB/s; Phi-2 32x2560, FFN 10240, vocab 51200\n",
           kern_name(be), bw);
    const char *names[3] = {"q8", "f16", "f32"};
    const kern_wtype ts[3] = {KERN_W_Q8, KERN_W_F16, KERN_W_F32};
    for (int i = 0; i < 3; i++)
        if (strstr(types, names[i]))
            run_type(be, ts[i], T, steps, bw);
    kern_free(be);
    return 0;
}
