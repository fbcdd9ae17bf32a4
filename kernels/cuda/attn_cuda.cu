// attn_cuda — attention on the GPU, fp32, head sizes of any value up to KERN_MAX_HEAD_DIM
// (80 and 88 run unpadded: each lane owns dims lane, lane+32, ... and the last is masked).
//
// Prefill (k_attn_prefill): flash-attention style. A block of 4 warps takes 16 queries of one
// head; K/V tiles of 32 keys go through shared memory once for all 16; every query keeps a
// running max, sum and output in registers (online softmax), so the T x T scores never exist.
// Scores: lane j scores key j of the tile against 4 queries at once (K row j read from shared
// memory once per 4 queries); output: lane owns dims, p_j is broadcast by shuffle.
//
// Decode (k_attn_split + k_attn_combine): split-KV. The cache of each (sequence, head) is cut
// into splits of `split` keys, one warp each, so that a single sequence still fills the GPU;
// every split writes (max, sum, unnormalised output) and a second kernel combines them.
#include <math.h>

#include "cuda_be.cuh"

#define AT_NW 4          // warps per prefill block
#define AT_QW 4          // queries per warp
#define AT_KT 32         // keys per tile (one per lane)

typedef struct {
    const float *q, *k, *v;
    float *out;
    long long ldq, ldk, ldv, ldo, tq, tk, heads, group, dim;
    float scale;
    int causal;
} at_args;

static size_t prefill_smem(long long dim) {
    return sizeof(float) * (size_t)(AT_KT * (dim + 1) + AT_KT * dim + AT_NW * AT_QW * dim);
}

// Loads keys [t0, t0 + AT_KT) of kv head kh into Ks [AT_KT][dim+1] and Vs [AT_KT][dim] (rows
// past tk are zero), all threads of the block cooperating.
__device__ __forceinline__ void load_kv_tile(const float *k, long long ldk, const float *v,
                                             long long ldv, long long tk, long long t0,
                                             long long dim, float *Ks, float *Vs) {
    long long total = (long long)AT_KT * dim;
    for (long long i = threadIdx.x; i < total; i += blockDim.x) {
        long long r = i / dim, d = i % dim, t = t0 + r;
        float kv = 0, vv = 0;
        if (t < tk) {
            kv = k[t * ldk + d];
            vv = v[t * ldv + d];
        }
        Ks[r * (dim + 1) + d] = kv;
        Vs[r * dim + d] = vv;
    }
}

template <int DPL>
__global__ void __launch_bounds__(AT_NW * 32) k_attn_prefill(const at_args a) {
    extern __shared__ float sm[];
    const long long dim = a.dim;
    float *Ks = sm, *Vs = Ks + AT_KT * (dim + 1), *Qs = Vs + AT_KT * dim;
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
    const long long h = blockIdx.y, kh = h / a.group;
    const long long qbase = (long long)blockIdx.x * AT_NW * AT_QW;
    const float *kp = a.k + kh * dim, *vp = a.v + kh * dim;

    // this block's queries, pre-scaled, into shared memory
    for (long long i = threadIdx.x; i < (long long)AT_NW * AT_QW * dim; i += blockDim.x) {
        long long r = i / dim, d = i % dim, t = qbase + r;
        Qs[i] = t < a.tq ? a.q[t * a.ldq + h * dim + d] * a.scale : 0.0f;
    }
    const long long shift = a.tk - a.tq;   // causal: query i sees keys <= i + shift
    long long q0 = qbase + warp * AT_QW;
    long long kend[AT_QW];
#pragma unroll
    for (int qq = 0; qq < AT_QW; qq++) {
        long long e = a.tk;
        if (a.causal) {
            e = q0 + qq + shift + 1;
            e = e < 0 ? 0 : e > a.tk ? a.tk : e;
        }
        kend[qq] = q0 + qq < a.tq ? e : 0;
    }
    long long blk_end = a.tk;   // keys any query of the block needs
    if (a.causal) {
        long long last = qbase + AT_NW * AT_QW - 1;
        if (last > a.tq - 1) last = a.tq - 1;
        blk_end = last + shift + 1;
        blk_end = blk_end < 0 ? 0 : blk_end > a.tk ? a.tk : blk_end;
    }
    float m[AT_QW], l[AT_QW], acc[AT_QW][DPL];
#pragma unroll
    for (int qq = 0; qq < AT_QW; qq++) {
        m[qq] = -INFINITY;
        l[qq] = 0;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[qq][i] = 0;
    }
    const float *Qw = Qs + (long long)warp * AT_QW * dim;
    for (long long t0 = 0; t0 < blk_end; t0 += AT_KT) {
        __syncthreads();
        load_kv_tile(kp, a.ldk, vp, a.ldv, a.tk, t0, dim, Ks, Vs);
        __syncthreads();
        // scores of key t0 + lane against the warp's queries
        float s[AT_QW];
#pragma unroll
        for (int qq = 0; qq < AT_QW; qq++) s[qq] = 0;
        const float *kr = Ks + lane * (dim + 1);
        for (long long d = 0; d < dim; d++) {
            float kv = kr[d];
#pragma unroll
            for (int qq = 0; qq < AT_QW; qq++) s[qq] += Qw[qq * dim + d] * kv;
        }
        float p[AT_QW];
#pragma unroll
        for (int qq = 0; qq < AT_QW; qq++) {
            int valid = t0 + lane < kend[qq];
            float sv = valid ? s[qq] : -INFINITY;
            float tmax = sv;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
            float mn = fmaxf(m[qq], tmax);
            if (mn == -INFINITY) {   // nothing visible yet for this query
                p[qq] = 0;
                continue;
            }
            p[qq] = valid ? expf(sv - mn) : 0.0f;
            float corr = expf(m[qq] - mn);   // 0 when m was -inf
            float ps = p[qq];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
            l[qq] = l[qq] * corr + ps;
#pragma unroll
            for (int i = 0; i < DPL; i++) acc[qq][i] *= corr;
            m[qq] = mn;
        }
        long long nk = blk_end - t0 < AT_KT ? blk_end - t0 : AT_KT;
        for (int j = 0; j < nk; j++) {
            float pj[AT_QW];
#pragma unroll
            for (int qq = 0; qq < AT_QW; qq++) pj[qq] = __shfl_sync(0xffffffffu, p[qq], j);
            const float *vr = Vs + j * dim;
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                long long d = lane + 32 * i;
                float vv = d < dim ? vr[d] : 0.0f;
#pragma unroll
                for (int qq = 0; qq < AT_QW; qq++) acc[qq][i] += pj[qq] * vv;
            }
        }
    }
#pragma unroll
    for (int qq = 0; qq < AT_QW; qq++) {
        long long t = q0 + qq;
        if (t >= a.tq) continue;
        float inv = l[qq] > 0 ? 1.0f / l[qq] : 0.0f;
        float *o = a.out + t * a.ldo + h * dim;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            long long d = lane + 32 * i;
            if (d < dim) o[d] = acc[qq][i] * inv;
        }
    }
}

// ============================================================================= decode ========

typedef struct {
    const float *q;
    const cu_kv *kv;
    float *part;            // [(s*heads + h) * nsplit + sp] * (dim + 2): m, l, acc[dim]
    long long ldq, heads, group, dim, split, nsplit;
    float scale;
} dec_args;

static size_t decode_smem(long long dim) {
    return sizeof(float) * (size_t)(AT_KT * (dim + 1) + AT_KT * dim + dim);
}

template <int DPL>
__global__ void __launch_bounds__(32) k_attn_split(const dec_args a) {
    extern __shared__ float sm[];
    const long long dim = a.dim;
    float *Ks = sm, *Vs = Ks + AT_KT * (dim + 1), *qs = Vs + AT_KT * dim;
    const int lane = threadIdx.x;
    const long long sh = blockIdx.x, s = sh / a.heads, h = sh % a.heads, kh = h / a.group;
    const long long sp = blockIdx.y;
    const cu_kv kv = a.kv[s];
    long long k0 = sp * a.split, k1 = k0 + a.split < kv.len ? k0 + a.split : kv.len;
    for (long long d = lane; d < dim; d += 32) qs[d] = a.q[s * a.ldq + h * dim + d] * a.scale;
    float m = -INFINITY, l = 0, acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0;
    for (long long t0 = k0; t0 < k1; t0 += AT_KT) {
        __syncwarp();
        load_kv_tile(kv.k + kh * dim, kv.ld, kv.v + kh * dim, kv.ld, k1, t0, dim, Ks, Vs);
        __syncwarp();
        float sc = 0;
        const float *kr = Ks + lane * (dim + 1);
        for (long long d = 0; d < dim; d++) sc += qs[d] * kr[d];
        int valid = t0 + lane < k1;
        float sv = valid ? sc : -INFINITY, tmax = sv;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
        float mn = fmaxf(m, tmax);
        float p = valid ? expf(sv - mn) : 0.0f, corr = expf(m - mn), ps = p;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
        l = l * corr + ps;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] *= corr;
        m = mn;
        long long nk = k1 - t0 < AT_KT ? k1 - t0 : AT_KT;
        for (int j = 0; j < nk; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j);
            const float *vr = Vs + j * dim;
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                long long d = lane + 32 * i;
                if (d < dim) acc[i] += pj * vr[d];
            }
        }
    }
    float *o = a.part + (sh * a.nsplit + sp) * (dim + 2);
    if (lane == 0) {
        o[0] = m;
        o[1] = l;
    }
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        long long d = lane + 32 * i;
        if (d < dim) o[2 + d] = acc[i];
    }
}

__global__ void k_attn_combine(const float *part, long long nsplit, long long heads,
                               long long dim, float *out, long long ldo) {
    const long long sh = blockIdx.x, s = sh / heads, h = sh % heads;
    const float *p = part + sh * nsplit * (dim + 2);
    float M = -INFINITY;
    for (long long i = 0; i < nsplit; i++) M = fmaxf(M, p[i * (dim + 2)]);
    float L = 0;
    for (long long i = 0; i < nsplit; i++) {
        float mi = p[i * (dim + 2)];
        if (mi != -INFINITY) L += p[i * (dim + 2) + 1] * expf(mi - M);
    }
    float *o = out + s * ldo + h * dim;
    for (long long d = threadIdx.x; d < dim; d += blockDim.x) {
        float acc = 0;
        for (long long i = 0; i < nsplit; i++) {
            float mi = p[i * (dim + 2)];
            if (mi != -INFINITY) acc += p[i * (dim + 2) + 2 + d] * expf(mi - M);
        }
        o[d] = L > 0 ? acc / L : 0.0f;
    }
}

// ============================================================================= launchers =====

#define AT_SMEM_MAX ((int)prefill_smem(KERN_MAX_HEAD_DIM))

template <int DPL> static int attn_init_one(void) {
    CU_TRY(cudaFuncSetAttribute(k_attn_prefill<DPL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                AT_SMEM_MAX));
    CU_TRY(cudaFuncSetAttribute(k_attn_split<DPL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                AT_SMEM_MAX));
    return TV_OK;
}

int cu_attn_init(void) {
    int rc;
    if ((rc = attn_init_one<1>()) || (rc = attn_init_one<2>()) || (rc = attn_init_one<3>()) ||
        (rc = attn_init_one<4>()) || (rc = attn_init_one<5>()) || (rc = attn_init_one<6>()) ||
        (rc = attn_init_one<7>()) || (rc = attn_init_one<8>()))
        return rc;
    return TV_OK;
}

#define AT_DISPATCH(KERNEL, GRID, BLOCK, SMEM, STREAM, ARGS, DIM)                            \
    switch ((int)(((DIM) + 31) / 32)) {                                                      \
    case 1: KERNEL<1><<<GRID, BLOCK, SMEM, STREAM>>>(ARGS); break;                           \
    case 2: KERNEL<2><<<GRID, BLOCK, SMEM, STREAM>>>(ARGS); break;                           \
    case 3: KERNEL<3><<<GRID, BLOCK, SMEM, STREAM>>>(ARGS); break;                           \
    case 4: KERNEL<4><<<GRID, BLOCK, SMEM, STREAM>>>(ARGS); break;                           \
    case 5: KERNEL<5><<<GRID, BLOCK, SMEM, STREAM>>>(ARGS); break;                           \
    case 6: KERNEL<6><<<GRID, BLOCK, SMEM, STREAM>>>(ARGS); break;                           \
    case 7: KERNEL<7><<<GRID, BLOCK, SMEM, STREAM>>>(ARGS); break;                           \
    default: KERNEL<8><<<GRID, BLOCK, SMEM, STREAM>>>(ARGS); break;                          \
    }

int cu_attention(kern_be *be, const kern_attn *k) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    at_args a = {k->q, k->k, k->v, k->out, k->ldq, k->ldk, k->ldv, k->ldo, k->tq, k->tk,
                 k->heads, k->heads / k->kv_heads, k->dim, k->scale, k->causal};
    if (k->heads > 65535) return err_set(TV_EUNSUPPORTED, "cuda attention: > 65535 heads");
    dim3 grid((unsigned)((k->tq + AT_NW * AT_QW - 1) / (AT_NW * AT_QW)), (unsigned)k->heads);
    AT_DISPATCH(k_attn_prefill, grid, AT_NW * 32, prefill_smem(k->dim), c->stream, a, k->dim);
    CU_LAUNCHED("attention");
    return TV_OK;
}

int cu_attn_decode(kern_be *be, int64_t n_seq, const float *q, int64_t ldq, const kern_kv *kv,
                   int64_t heads, int64_t kv_heads, int64_t dim, float scale, float *out,
                   int64_t ldo) {
    cu_be *c = cu_of(be);
    cu_begin(c);
    cu_kv host[256];
    for (int64_t s0 = 0; s0 < n_seq; s0 += 256) {
        int64_t ns = n_seq - s0 < 256 ? n_seq - s0 : 256;
        long long maxlen = 1;
        for (int64_t i = 0; i < ns; i++) {
            host[i] = (cu_kv){kv[s0 + i].k, kv[s0 + i].v, kv[s0 + i].len, kv[s0 + i].ld};
            if (kv[s0 + i].len > maxlen) maxlen = kv[s0 + i].len;
        }
        // splits of 256 keys (fewer, longer ones if the partials would not fit the scratch)
        long long split = 256, per = (long long)ns * heads * (dim + 2);
        while ((maxlen + split - 1) / split * per > (long long)CU_ATT_FLOATS) split *= 2;
        long long nsplit = (maxlen + split - 1) / split;
        if (nsplit > 65535 || per > (long long)CU_ATT_FLOATS)
            return err_set(TV_EUNSUPPORTED, "cuda attn_decode: cache too long for the scratch");
        cu_kv *dkv = c->kv + (s0 / 256 % (CU_KV_MAX / 256)) * 256;
        int rc = cu_put_small(c, dkv, host, (size_t)ns * sizeof(cu_kv));
        if (rc) return rc;
        dec_args a = {q + s0 * ldq, dkv, c->att, ldq, heads, heads / kv_heads, dim, split,
                      nsplit, scale};
        dim3 grid((unsigned)(ns * heads), (unsigned)nsplit);
        AT_DISPATCH(k_attn_split, grid, 32, decode_smem(dim), c->stream, a, dim);
        CU_LAUNCHED("attn_decode split");
        k_attn_combine<<<(unsigned)(ns * heads), 32, 0, c->stream>>>(c->att, nsplit, heads, dim,
                                                                     out + s0 * ldo, ldo);
        CU_LAUNCHED("attn_decode combine");
    }
    return TV_OK;
}
