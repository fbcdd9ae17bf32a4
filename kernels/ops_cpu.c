/* The CPU backend: splits each op into tasks over a thread pool and runs the ISA's inner
 * kernels on them. Every output element is written by exactly one task, and the order of the
 * sums behind it depends only on the op's sizes (the task split may follow the thread count, the
 * K blocking never does), so results are bitwise identical for any number of threads. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "err.h"
#include "ops_backend.h"
#include "ops_cpu.h"
#include "pool.h"
#include "quant.h"

typedef struct {
    const cpu_isa *isa;
    pool *pool;
    int n_threads;
    float *work;            /* n_threads * CPU_WORK_FLOATS, 64-byte aligned */
    int strassen;           /* large f32-activation matmuls may use one level of Strassen */
} cpu_be;

static cpu_be *cpu_of(kern_be *be) { return (cpu_be *)be->impl; }

static float *cpu_work(cpu_be *c, int thread) { return c->work + (int64_t)thread * CPU_WORK_FLOATS; }

static int64_t cpu_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---- matmul ------------------------------------------------------------------------------ */

/* A plain matmul as one "product" of the whole matrices (quadrant 0 = everything). */
static const cpu_mm_product cpu_plain_product = {{1, 0, 0, 0}, {1, 0, 0, 0}, {1, 0, 0, 0}};

/* Strassen's seven products (ops_cpu.h, cpu_mm_product). */
static const cpu_mm_product cpu_strassen[7] = {
    /*        A11 A12 A21 A22      B11 B12 B21 B22      C11 C12 C21 C22 */
    /* M1 */ {{1, 0, 0, 1},      {1, 0, 0, 1},        {1, 0, 0, 1}},
    /* M2 */ {{0, 0, 1, 1},      {1, 0, 0, 0},        {0, 0, 1, -1}},
    /* M3 */ {{1, 0, 0, 0},      {0, 1, 0, -1},       {0, 1, 0, 1}},
    /* M4 */ {{0, 0, 0, 1},      {-1, 0, 1, 0},       {1, 0, 1, 0}},
    /* M5 */ {{1, 1, 0, 0},      {0, 0, 0, 1},        {-1, 1, 0, 0}},
    /* M6 */ {{-1, 0, 1, 0},     {1, 1, 0, 0},        {0, 0, 0, 1}},
    /* M7 */ {{0, 1, 0, -1},     {0, 0, 1, 1},        {1, 0, 0, 0}},
};

/* Strassen only where each quadrant product is still a large GEMM running near peak, so its
 * extra packing and C traffic stay small against the 12.5% of multiply-adds it saves (ViT-g's
 * four matmuls at 224 and 448 px qualify; Phi-2's 128-token prefill does not). */
#define CPU_STRASSEN_MIN_M 200
#define CPU_STRASSEN_MIN_KN 1024

static int cpu_use_strassen(const cpu_be *c, int64_t m, const kern_weight *w) {
    /* quantised weights: each K quadrant must start on a scale block */
    int64_t kalign = w->type == KERN_W_Q8 || w->type == KERN_W_Q4 ? 2 * QUANT_BLOCK : 2;
    return c->strassen && m >= CPU_STRASSEN_MIN_M && w->k >= CPU_STRASSEN_MIN_KN &&
           w->n >= CPU_STRASSEN_MIN_KN && w->k % kalign == 0 && w->n % 2 == 0;
}

/* Large-M tasks: column blocks of at most NC, each over as many rows as still leaves
 * CPU_MM_TASKS tasks per thread (at least CPU_MM_MC rows). A task packs its weight panel once
 * per K block and uses it for all its rows, so fewer, taller tasks pack less. The column blocks
 * come in a multiple of the thread count and have equal widths (whole 16-column panels), so the
 * threads finish together: with fixed 192-wide blocks, ViT-g's 1408 outputs made seven full
 * blocks and a 64-wide one, and the rows were cut in two to even that out (fc2 ran 6-7% slower).
 * The split never changes a result: each y element's sum runs over the same K blocks in the
 * same order whatever the tile. */
static void cpu_mm_split(const cpu_be *c, int64_t rows, int64_t cols, int64_t *mc,
                         int64_t *nc) {
    int64_t nblk = cpu_cdiv(cpu_cdiv(cols, CPU_MM_NC), c->n_threads) * c->n_threads;
    *nc = cpu_cdiv(cpu_cdiv(cols, CPU_MM_NR), nblk) * CPU_MM_NR;    /* <= CPU_MM_NC */
    int64_t m_split = cpu_cdiv((int64_t)CPU_MM_TASKS * c->n_threads, cpu_cdiv(cols, *nc));
    *mc = cpu_cdiv(cpu_cdiv(rows, m_split), CPU_MM_MALIGN) * CPU_MM_MALIGN;
    if (*mc < CPU_MM_MC) *mc = CPU_MM_MC;
    if (*mc > rows) *mc = rows;
}

/* Strassen tasks: all quadrant rows (up to CPU_MM_STRASSEN_MC) by a wide column range that
 * the task walks in NC blocks. Its A sums are formed once per K block for the whole range, so
 * few, wide tasks (CPU_STRASSEN_TASKS per thread) form them least often. */
#define CPU_STRASSEN_TASKS 1

static void cpu_strassen_split(const cpu_be *c, int64_t rows, int64_t cols, int64_t *mc,
                               int64_t *nc) {
    int64_t n_mblk = cpu_cdiv(rows, CPU_MM_STRASSEN_MC);     /* equal heights, whole tiles */
    *mc = cpu_cdiv(cpu_cdiv(rows, n_mblk), CPU_MM_MR) * CPU_MM_MR;
    if (*mc > CPU_MM_STRASSEN_MC) *mc = CPU_MM_STRASSEN_MC;
    int64_t n_split = cpu_cdiv((int64_t)CPU_STRASSEN_TASKS * c->n_threads, cpu_cdiv(rows, *mc));
    *nc = cpu_cdiv(cpu_cdiv(cols, n_split), CPU_MM_NR) * CPU_MM_NR;
}

typedef struct {
    cpu_be *c;
    const float *x, *bias;
    const kern_weight *w;
    float *y;
    cpu_gemm g;
    int64_t m, n, n_mblk, n_nblk, mc, nc;   /* tiles over m x n: y's, or one quadrant's */
} cpu_mm_job;

static void cpu_mm_task(void *ctx, int64_t task, int thread) {
    cpu_mm_job *j = ctx;
    int64_t mb = task / j->n_nblk, nb = task % j->n_nblk;
    int64_t i0 = mb * j->mc, i1 = i0 + j->mc < j->m ? i0 + j->mc : j->m;
    int64_t n0 = nb * j->nc, n1 = n0 + j->nc < j->n ? n0 + j->nc : j->n;
    if (j->g.n_prod)
        j->c->isa->gemm_task(&j->g, i0, i1, n0, n1, cpu_work(j->c, thread));
    else
        j->c->isa->matmul_tile(j->x, j->w, j->bias, j->y, i0, i1, n0, n1,
                               cpu_work(j->c, thread));
}

static int cpu_matmul(kern_be *be, const float *x, int64_t m, const kern_weight *w,
                      const float *bias, float *y) {
    cpu_mm_job j = {.c = cpu_of(be), .x = x, .bias = bias, .w = w, .y = y, .m = m, .n = w->n};
    if (m <= CPU_MM_SMALL_M) {          /* decode: stream W once, split over N */
        j.mc = m;
        j.nc = CPU_MM_NCHUNK;
    } else if (!j.c->isa->gemm_task) {  /* the reference: plain tiles */
        j.mc = CPU_MM_MC;
        j.nc = CPU_MM_NC;
    } else {                            /* prefill / encode: plain, or Strassen's quadrants */
        cpu_gemm *g = &j.g;
        *g = (cpu_gemm){.x = x, .w = w, .bias = bias, .y = y, .m = m, .k = w->k, .n = w->n,
                        .mh = m, .kh = w->k, .nh = w->n, .prod = &cpu_plain_product,
                        .n_prod = 1};
        if (cpu_use_strassen(j.c, m, w)) {
            g->mh = (m + 1) / 2;
            g->kh = w->k / 2;
            g->nh = w->n / 2;
            g->prod = cpu_strassen;
            g->n_prod = 7;
        }
        j.m = g->mh;
        j.n = g->nh;
        if (g->n_prod > 1)
            cpu_strassen_split(j.c, j.m, j.n, &j.mc, &j.nc);
        else
            cpu_mm_split(j.c, j.m, j.n, &j.mc, &j.nc);
    }
    j.n_mblk = cpu_cdiv(j.m, j.mc);
    j.n_nblk = cpu_cdiv(j.n, j.nc);
    pool_run(j.c->pool, j.n_mblk * j.n_nblk, cpu_mm_task, &j);
    return TV_OK;
}

/* ---- elementwise ------------------------------------------------------------------------- */

#define CPU_EW_CHUNK 16384   /* elements per task */

typedef struct {
    cpu_be *c;
    int op;                  /* 0 add, 1 scale, 2 gelu, 3 gelu_tanh */
    const float *a, *b;
    float s;
    float *y;
    int64_t n;
} cpu_ew_job;

static void cpu_ew_task(void *ctx, int64_t task, int thread) {
    cpu_ew_job *j = ctx;
    int64_t o = task * CPU_EW_CHUNK, len = j->n - o < CPU_EW_CHUNK ? j->n - o : CPU_EW_CHUNK;
    const cpu_isa *isa = j->c->isa;
    switch (j->op) {
    case 0: isa->add(j->a + o, j->b + o, j->y + o, len); break;
    case 1: isa->scale(j->a + o, j->s, j->y + o, len); break;
    case 2: isa->gelu(j->a + o, j->y + o, len); break;
    default: isa->gelu_tanh(j->a + o, j->y + o, len); break;
    }
}

static int cpu_ew(kern_be *be, int op, const float *a, const float *b, float s, float *y,
                  int64_t n) {
    cpu_ew_job j = {.c = cpu_of(be), .op = op, .a = a, .b = b, .s = s, .y = y, .n = n};
    pool_run(j.c->pool, cpu_cdiv(n, CPU_EW_CHUNK), cpu_ew_task, &j);
    return TV_OK;
}

static int cpu_add(kern_be *be, const float *a, const float *b, float *y, int64_t n) {
    return cpu_ew(be, 0, a, b, 0, y, n);
}
static int cpu_scale(kern_be *be, const float *x, float s, float *y, int64_t n) {
    return cpu_ew(be, 1, x, NULL, s, y, n);
}
static int cpu_gelu(kern_be *be, const float *x, float *y, int64_t n) {
    return cpu_ew(be, 2, x, NULL, 0, y, n);
}
static int cpu_gelu_tanh(kern_be *be, const float *x, float *y, int64_t n) {
    return cpu_ew(be, 3, x, NULL, 0, y, n);
}

/* ---- row ops: add_bias, norms, softmax ---------------------------------------------------- */

typedef struct {
    cpu_be *c;
    int op;                  /* 0 layernorm, 1 rmsnorm, 2 softmax, 3 add_bias */
    const float *x, *w, *b;
    float *y;
    int64_t ldx, ldy, rows, groups, n, rows_per_task;
    float eps;
} cpu_row_job;

static void cpu_row_task(void *ctx, int64_t task, int thread) {
    cpu_row_job *j = ctx;
    const cpu_isa *isa = j->c->isa;
    int64_t r0 = task * j->rows_per_task;
    int64_t r1 = r0 + j->rows_per_task < j->rows ? r0 + j->rows_per_task : j->rows;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t g = 0; g < j->groups; g++) {
            const float *x = j->x + r * j->ldx + g * j->n;
            float *y = j->y + r * j->ldy + g * j->n;
            switch (j->op) {
            case 0: isa->layernorm_row(x, y, j->n, j->w, j->b, j->eps); break;
            case 1: isa->rmsnorm_row(x, y, j->n, j->w, j->eps); break;
            case 2: isa->softmax_row(x, y, j->n); break;
            default: isa->add(x, j->b, y, j->n); break;
            }
        }
}

static int cpu_rows(cpu_row_job *j) {
    int64_t per_row = j->groups * j->n;
    j->rows_per_task = per_row >= 4096 ? 1 : cpu_cdiv(4096, per_row);
    pool_run(j->c->pool, cpu_cdiv(j->rows, j->rows_per_task), cpu_row_task, j);
    return TV_OK;
}

static int cpu_add_bias(kern_be *be, float *y, int64_t rows, int64_t n, const float *bias) {
    cpu_row_job j = {.c = cpu_of(be), .op = 3, .x = y, .b = bias, .y = y, .ldx = n, .ldy = n,
                     .rows = rows, .groups = 1, .n = n};
    return cpu_rows(&j);
}

static int cpu_layernorm(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy,
                         int64_t rows, int64_t groups, int64_t n, const float *w, const float *b,
                         float eps) {
    cpu_row_job j = {.c = cpu_of(be), .op = 0, .x = x, .w = w, .b = b, .y = y, .ldx = ldx,
                     .ldy = ldy, .rows = rows, .groups = groups, .n = n, .eps = eps};
    return cpu_rows(&j);
}

static int cpu_rmsnorm(kern_be *be, const float *x, int64_t ldx, float *y, int64_t ldy,
                       int64_t rows, int64_t groups, int64_t n, const float *w, float eps) {
    cpu_row_job j = {.c = cpu_of(be), .op = 1, .x = x, .w = w, .y = y, .ldx = ldx, .ldy = ldy,
                     .rows = rows, .groups = groups, .n = n, .eps = eps};
    return cpu_rows(&j);
}

static int cpu_softmax(kern_be *be, const float *x, float *y, int64_t rows, int64_t n,
                       int64_t ld) {
    cpu_row_job j = {.c = cpu_of(be), .op = 2, .x = x, .y = y, .ldx = ld, .ldy = ld,
                     .rows = rows, .groups = 1, .n = n};
    return cpu_rows(&j);
}

/* ---- rope (scalar for every ISA: it is a tiny share of the time) -------------------------- */

static int cpu_rope(kern_be *be, float *x, int64_t ld, int64_t t, int64_t heads, int64_t dim,
                    int64_t rot_dims, const int32_t *pos, float theta) {
    int64_t half = rot_dims / 2;
    float inv_freq[KERN_MAX_HEAD_DIM], cs[KERN_MAX_HEAD_DIM], sn[KERN_MAX_HEAD_DIM];
    /* As torch: inv_freq = 1 / theta ** (arange(0, rot, 2).float() / rot), all in fp32. */
    for (int64_t i = 0; i < half; i++)
        inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)rot_dims);
    for (int64_t tok = 0; tok < t; tok++) {
        for (int64_t i = 0; i < half; i++) {
            float ang = (float)pos[tok] * inv_freq[i];
            cs[i] = cosf(ang);
            sn[i] = sinf(ang);
        }
        for (int64_t h = 0; h < heads; h++) {
            float *v = x + tok * ld + h * dim;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];          /* x*cos + rotate_half(x)*sin */
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
    return TV_OK;
}

/* ---- attention --------------------------------------------------------------------------- */

#define CPU_ATT_QBLK 16      /* query rows per task */

typedef struct {
    cpu_be *c;
    const kern_attn *a;
    int64_t n_qblk;
} cpu_att_job;

static void cpu_att_task(void *ctx, int64_t task, int thread) {
    cpu_att_job *j = ctx;
    const kern_attn *a = j->a;
    int64_t h = task / j->n_qblk, qb = task % j->n_qblk;
    int64_t kh = h / (a->heads / a->kv_heads);
    int64_t i1 = (qb + 1) * CPU_ATT_QBLK < a->tq ? (qb + 1) * CPU_ATT_QBLK : a->tq;
    for (int64_t i = qb * CPU_ATT_QBLK; i < i1; i++) {
        int64_t nk = a->tk;
        if (a->causal) {
            nk = i + (a->tk - a->tq) + 1;
            nk = nk < 0 ? 0 : nk > a->tk ? a->tk : nk;
        }
        j->c->isa->attn_row(a->q + i * a->ldq + h * a->dim, a->k + kh * a->dim, a->ldk,
                            a->v + kh * a->dim, a->ldv, nk, a->dim, a->scale,
                            a->out + i * a->ldo + h * a->dim);
    }
}

/* Blocked attention (the ISA's attn_task): each task one head and a range of its queries, so
 * the head's keys and values are packed once per task; about CPU_ATT_TASKS tasks per thread. */
#define CPU_ATT_TASKS 2

typedef struct {
    cpu_be *c;
    const kern_attn *a;
    int64_t n_split, rows;
} cpu_attb_job;

static void cpu_attb_task(void *ctx, int64_t task, int thread) {
    cpu_attb_job *j = ctx;
    int64_t h = task / j->n_split, i0 = task % j->n_split * j->rows;
    int64_t i1 = i0 + j->rows < j->a->tq ? i0 + j->rows : j->a->tq;
    if (i0 < i1) j->c->isa->attn_task(j->a, h, i0, i1, cpu_work(j->c, thread));
}

static int cpu_attention(kern_be *be, const kern_attn *a) {
    cpu_be *c = cpu_of(be);
    if (c->isa->attn_task && a->tq >= CPU_MM_SMALL_M &&
        cpu_attn_floats(a->tk, a->dim) <= CPU_WORK_FLOATS) {
        cpu_attb_job j = {.c = c, .a = a};
        int64_t want = cpu_cdiv((int64_t)CPU_ATT_TASKS * c->n_threads, a->heads);
        int64_t max_split = cpu_cdiv(a->tq, CPU_ATT_QB);
        j.n_split = want < max_split ? want : max_split;
        j.rows = cpu_cdiv(a->tq, j.n_split);
        pool_run(c->pool, a->heads * j.n_split, cpu_attb_task, &j);
        return TV_OK;
    }
    cpu_att_job j = {.c = c, .a = a, .n_qblk = cpu_cdiv(a->tq, CPU_ATT_QBLK)};
    pool_run(j.c->pool, a->heads * j.n_qblk, cpu_att_task, &j);
    return TV_OK;
}

typedef struct {
    cpu_be *c;
    const float *q;
    const kern_kv *kv;
    float *out;
    int64_t ldq, ldo, heads, kv_heads, dim;
    float scale;
} cpu_dec_job;

static void cpu_dec_task(void *ctx, int64_t task, int thread) {
    cpu_dec_job *j = ctx;
    int64_t s = task / j->heads, h = task % j->heads, kh = h / (j->heads / j->kv_heads);
    const kern_kv *kv = &j->kv[s];
    j->c->isa->attn_row(j->q + s * j->ldq + h * j->dim, kv->k + kh * j->dim, kv->ld,
                        kv->v + kh * j->dim, kv->ld, kv->len, j->dim, j->scale,
                        j->out + s * j->ldo + h * j->dim);
}

static int cpu_attn_decode(kern_be *be, int64_t n_seq, const float *q, int64_t ldq,
                           const kern_kv *kv, int64_t heads, int64_t kv_heads, int64_t dim,
                           float scale, float *out, int64_t ldo) {
    cpu_dec_job j = {.c = cpu_of(be), .q = q, .kv = kv, .out = out, .ldq = ldq, .ldo = ldo,
                     .heads = heads, .kv_heads = kv_heads, .dim = dim, .scale = scale};
    pool_run(j.c->pool, n_seq * heads, cpu_dec_task, &j);
    return TV_OK;
}

/* ---- embedding --------------------------------------------------------------------------- */

static int cpu_embed(kern_be *be, const void *table, dtype_id dt, int64_t vocab, int64_t dim,
                     const int32_t *ids, int64_t n, float *out) {
    size_t es = dtype_size(dt);
    for (int64_t i = 0; i < n; i++)
        dtype_to_f32(dt, (const char *)table + (size_t)ids[i] * (size_t)dim * es, out + i * dim,
                     (size_t)dim);
    return TV_OK;
}

/* ---- the backend ------------------------------------------------------------------------- */

static void cpu_free(kern_be *be) {
    cpu_be *c = cpu_of(be);
    pool_free(c->pool);
    free(c->work);
    free(c);
    free(be);
}

static const kern_ops cpu_ops = {
    .matmul = cpu_matmul, .add = cpu_add, .scale = cpu_scale, .add_bias = cpu_add_bias,
    .layernorm = cpu_layernorm, .rmsnorm = cpu_rmsnorm, .gelu = cpu_gelu,
    .gelu_tanh = cpu_gelu_tanh, .softmax = cpu_softmax, .rope = cpu_rope,
    .attention = cpu_attention, .attn_decode = cpu_attn_decode, .embed = cpu_embed,
    .free = cpu_free,
};

static int cpu_pick_isa(int isa, const cpu_isa **out) {
    const cpu_features *f = cpu_get_features();
    int has_avx2 = f->avx2 && f->fma && f->f16c && cpu_isa_avx2() != NULL;
    switch (isa) {
    case KERN_ISA_AUTO: *out = has_avx2 ? cpu_isa_avx2() : &cpu_isa_ref; return TV_OK;
    case KERN_ISA_REF: *out = &cpu_isa_ref; return TV_OK;
    case KERN_ISA_AVX2:
        if (!has_avx2) return err_set(TV_EUNSUPPORTED, "kern: this CPU has no AVX2+FMA+F16C");
        *out = cpu_isa_avx2();
        return TV_OK;
    }
    return err_set(TV_EINVAL, "kern: unknown ISA %d", isa);
}

int kern_cpu_new(int n_threads, int isa, kern_be **out) {
    *out = NULL;
    const cpu_isa *k = NULL;
    int rc = cpu_pick_isa(isa, &k);
    if (rc) return rc;
    if (n_threads <= 0) n_threads = cpu_get_features()->n_cores;
    if (n_threads > 1024) return err_set(TV_EINVAL, "kern: %d threads is too many", n_threads);
    cpu_be *c = tv_xcalloc(1, sizeof *c);
    c->isa = k;
    c->n_threads = n_threads;
    const char *st = getenv("TINYVLM_STRASSEN");     /* "1": allow Strassen (README) */
    c->strassen = st && strcmp(st, "1") == 0;
    if (n_threads > 1 && !(c->pool = pool_new(n_threads))) {
        free(c);
        return err_wrap(TV_EINTERNAL, "kern");
    }
    size_t bytes = (size_t)n_threads * CPU_WORK_FLOATS * sizeof(float);
    if (posix_memalign((void **)&c->work, 64, bytes) != 0) {
        pool_free(c->pool);
        free(c);
        return err_set(TV_ENOMEM, "kern: cannot allocate %zu bytes of scratch", bytes);
    }
    kern_be *be = tv_xcalloc(1, sizeof *be);
    be->ops = &cpu_ops;
    be->impl = c;
    snprintf(be->name, sizeof be->name, "cpu-%s x%d", k->name, n_threads);
    *out = be;
    return TV_OK;
}
