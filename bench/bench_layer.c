/* bench_layer — one EVA ViT-g block (1408 wide, 16 x 88 heads, MLP 6144), f32 weights, op by
 * op, as vit.c runs it: LN1, qkv, attention, proj, residual add, LN2, fc1, GELU (erf), fc2,
 * residual add. Each op's time is its best over the repetitions, so a neighbour's burst on a
 * shared machine does not land in one op's figure; the sum is one layer, and x layers (39 for
 * ViT-g) the whole encoder's blocks. bench/bench_layer_torch.py times the same ops in PyTorch,
 * so the two tables show where the encoders differ.
 * Usage: bench_layer [threads=0 (one per core)] [tokens=1025 (448 px; 257 = 224 px)] [reps=3] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "err.h"
#include "ops.h"

enum { WIDTH = 1408, HEADS = 16, HEAD_DIM = 88, MLP = 6144, LAYERS = 39 };
enum { OP_LN1, OP_QKV, OP_ATTN, OP_PROJ, OP_ADD1, OP_LN2, OP_FC1, OP_GELU, OP_FC2, OP_ADD2, N_OPS };
static const char *const op_name[N_OPS] = {"ln1", "qkv", "attention", "proj", "add1",
                                           "ln2", "fc1", "gelu", "fc2", "add2"};

/* n floats, uniform in [-scale, scale) (a fixed LCG: the timing does not depend on values, but
 * they stay normal numbers). Freed by the caller. */
static float *rnd(int64_t n, float scale) {
    float *p = tv_xmalloc((size_t)n * sizeof *p);
    uint32_t s = (uint32_t)n;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
    }
    return p;
}

static kern_weight weight(int64_t n, int64_t k) {
    return (kern_weight){.type = KERN_W_F32, .n = n, .k = k, .data = rnd(n * k, 0.03f)};
}

static void check(int rc, const char *what) {
    if (rc == 0) return;
    fprintf(stderr, "bench_layer: %s: %s\n", what, err_msg());
    exit(1);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    int64_t T = argc > 2 ? atoll(argv[2]) : 1025;
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    if (threads < 0 || T < 1 || reps < 1) {
        fprintf(stderr, "usage: bench_layer [threads>=0] [tokens>=1] [reps>=1]\n");
        return 2;
    }
    kern_be *be = NULL;
    check(kern_cpu_new(threads, 0, &be), "CPU backend");
    const int64_t W = WIDTH, M = MLP;
    kern_weight qkv = weight(3 * W, W), proj = weight(W, W), fc1 = weight(M, W), fc2 = weight(W, M);
    float *bq = rnd(3 * W, .1f), *bp = rnd(W, .1f), *b1 = rnd(M, .1f), *b2 = rnd(W, .1f);
    float *lnw = rnd(W, 1), *lnb = rnd(W, 1);
    /* x: residual stream [T, W]; h: LN out / attention out [T, W]; q: qkv [T, 3W]; mlp [T, M] */
    float *x = rnd(T * W, 1), *h = rnd(T * W, 1), *q = rnd(T * 3 * W, 1), *o = rnd(T * W, 1);
    float *mlp = rnd(T * M, 1);
    kern_attn att = {.q = q, .k = q + W, .v = q + 2 * W, .out = o, .ldq = 3 * W, .ldk = 3 * W,
                     .ldv = 3 * W, .ldo = W, .tq = T, .tk = T, .heads = HEADS,
                     .kv_heads = HEADS, .dim = HEAD_DIM, .scale = 1.0f / sqrtf(HEAD_DIM)};
    double best[N_OPS];
    for (int i = 0; i < N_OPS; i++) best[i] = INFINITY;
    for (int r = 0; r < reps; r++)
        for (int op = 0; op < N_OPS; op++) {
            double t = clk_now_s();
            int rc = 0;
            switch (op) {
            case OP_LN1:
            case OP_LN2: rc = kern_layernorm(be, x, W, h, W, T, 1, W, lnw, lnb, 1e-6f); break;
            case OP_QKV: rc = kern_matmul(be, h, T, &qkv, bq, q); break;
            case OP_ATTN: rc = kern_attention(be, &att); break;
            case OP_PROJ: rc = kern_matmul(be, o, T, &proj, bp, h); break;
            case OP_ADD1:
            case OP_ADD2: rc = kern_add(be, x, h, x, T * W); break;
            case OP_FC1: rc = kern_matmul(be, h, T, &fc1, b1, mlp); break;
            case OP_GELU: rc = kern_gelu(be, mlp, mlp, T * M); break;
            case OP_FC2: rc = kern_matmul(be, mlp, T, &fc2, b2, h); break;
            }
            check(rc, op_name[op]);
            t = clk_now_s() - t;
            if (t < best[op]) best[op] = t;
        }
    /* multiply-adds x 2 of the four linears and the attention's two products */
    double flops[N_OPS] = {[OP_QKV] = 2.0 * T * W * 3 * W, [OP_ATTN] = 4.0 * T * T * W,
                           [OP_PROJ] = 2.0 * T * W * W, [OP_FC1] = 2.0 * T * W * M,
                           [OP_FC2] = 2.0 * T * M * W};
    printf("bench_layer: ViT-g block, T = %lld, f32, %s, best of %d per op\n", (long long)T,
           kern_name(be), reps);
    double total = 0;
    for (int op = 0; op < N_OPS; op++) {
        total += best[op];
        if (flops[op] > 0)
            printf("%-10s %8.2f ms  %6.1f GFLOP/s\n", op_name[op], best[op] * 1e3,
                   flops[op] / best[op] / 1e9);
        else
            printf("%-10s %8.2f ms\n", op_name[op], best[op] * 1e3);
    }
    printf("layer      %8.2f ms  (x %d layers = %.2f s)\n", total * 1e3, LAYERS, total * LAYERS);
    kern_free(be);
    return 0;
}
