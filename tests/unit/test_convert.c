/* convert: the tiny TinyGPT-V (tests/data/tinygptv/model, original formats) becomes a bundle
 * whose manifest loads with the tiny model's dims, whose tensors are all there with the
 * contract's shapes (docs/bundle.md), whose pos_embed equals torch's resize (the golden from
 * tools/tinygptv), whose LM qkv/dense equal an independent re-derivation from the inputs (LoRA
 * merged in the fused layout, then de-interleaved), and whose fingerprint is recomputed here
 * from the files. Fused and split Phi folders give the same lm.safetensors; f16/bf16/q8/q4 work
 * and q8/q4 stay within the quantisation bound; a wrong input lists the missing tensors; a
 * truncated checkpoint fails cleanly. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "tiny_model.h"
#include "convert.h"
#include "convert_int.h"
#include "hash.h"
#include "manifest.h"
#include "mapfile.h"
#include "pth.h"
#include "quant.h"
#include "safetensors.h"

#define MODEL TINY_MODEL_DIR
/* tests/data/tinygptv/tiny.json: the tiny model's settings */
#define W 88      /* ViT width, 2 heads */
#define D 48      /* Q-Former width, 2 heads */
#define DL 80     /* Phi width */
#define HL 2      /* Phi heads */
#define DH 40     /* Phi head_dim */
#define FF 320
#define VOC 448
#define LORA_SCALE 0.5f /* alpha 4 / r 8 */

static char tmpdir[256];

static char *path_in(const char *sub, const char *file) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s%s%s", tmpdir, sub, file ? "/" : "", file ? file : "");
    return buf[k];
}

static float at_f32(const tensor_view *t, int64_t i) {
    float v;
    dtype_to_f32(t->dtype, (const unsigned char *)t->data + i * (int64_t)dtype_size(t->dtype), &v, 1);
    return v;
}

/* ---- manifest -------------------------------------------------------------------------------- */

static void check_manifest(const char *dir, const char *dtype) {
    manifest *m = NULL;
    CHECK_OK(manifest_load(dir, &m));
    if (!m) return;
    CHECK_EQ_STR(m->dtype, dtype);
    CHECK_EQ_INT(m->vision.image_size, 84); /* the stage-4 config's image_size */
    CHECK_EQ_INT(m->vision.patch_size, 14);
    CHECK_EQ_INT(m->vision.width, W);
    CHECK_EQ_INT(m->vision.layers, 2);
    CHECK_EQ_INT(m->vision.heads, 2);
    CHECK_EQ_INT(m->vision.mlp_hidden, 384);
    CHECK_EQ_INT(m->qformer.layers, 2);
    CHECK_EQ_INT(m->qformer.width, D);
    CHECK_EQ_INT(m->qformer.heads, 2);
    CHECK_EQ_INT(m->qformer.ffn, 192);
    CHECK_EQ_INT(m->qformer.queries, 8);
    CHECK_EQ_INT(m->qformer.cross_every, 2);
    CHECK_EQ_INT(m->n_proj_dims, 3);
    CHECK(m->proj_dims[0] == D && m->proj_dims[1] == 112 && m->proj_dims[2] == DL);
    CHECK_EQ_INT(m->lm.layers, 2);
    CHECK_EQ_INT(m->lm.width, DL);
    CHECK_EQ_INT(m->lm.heads, HL);
    CHECK_EQ_INT(m->lm.head_dim, DH);
    CHECK_EQ_INT(m->lm.ffn, FF);
    CHECK_EQ_INT(m->lm.vocab, VOC);
    CHECK_EQ_INT(m->lm.rotary_dims, 16);
    CHECK_EQ_INT(m->lm.max_context, 2048);
    CHECK_NEAR(m->lm.ln_eps, 1e-5, 1e-12);
    CHECK(m->lm.qk_layernorm && m->lm.post_attn_rmsnorm && m->lm.lm_head_bias);
    CHECK_EQ_INT(m->chat.n_stop_token_ids, 2); /* tiny.json stop_ids: ### 282, eot 420 */
    CHECK_EQ_INT(m->chat.stop_token_ids[0], 282);
    CHECK_EQ_INT(m->chat.stop_token_ids[1], 420);
    CHECK_EQ_STR(m->chat.first, "<s>[INST] <Img><ImageHere></Img> {question} [/INST]");
    CHECK_NEAR(m->chat.defaults.temperature, 0.6, 1e-6);

    /* fingerprint = SHA-256(manifest text with 64 zeros, vision header, lm header) */
    char *text = NULL;
    size_t len = 0;
    char mpath[600];
    snprintf(mpath, sizeof mpath, "%s/tinyvlm.json", dir);
    CHECK_OK(mf_read_all(mpath, 1 << 20, &text, &len));
    char *fp = text ? strstr(text, m->fingerprint) : NULL;
    CHECK(fp != NULL);
    st_file *v = NULL, *l = NULL;
    CHECK_OK(st_open(m->vision_path, &v));
    CHECK_OK(st_open(m->lm_path, &l));
    if (fp && v && l) {
        memset(fp, '0', 64);
        size_t vl, ll;
        const char *vh = st_header(v, &vl), *lh = st_header(l, &ll);
        char *all = malloc(len + vl + ll);
        memcpy(all, text, len), memcpy(all + len, vh, vl), memcpy(all + len + vl, lh, ll);
        char hex[65];
        CHECK_OK(hash_sha256_hex(all, len + vl + ll, hex));
        CHECK_EQ_STR(hex, m->fingerprint);
        free(all);
    }
    st_free(v), st_free(l);
    free(text);
    manifest_free(m);
}

/* ---- the tensor-name contract ------------------------------------------------------------- */

static const char *cur_dtype; /* the bundle dtype check_contract is looking at */

/* A contract entry. Vectors (d1 == 0), pos_embed and query_tokens are F32 in every bundle;
 * matrices are the bundle dtype (F16 where q8/q4 cannot block them; q4 halves the columns). */
static void expect(const st_file *f, const char *name, int64_t d0, int64_t d1) {
    const tensor_view *t = st_find(f, name);
    CHECK_MSG(t != NULL, "%s missing in %s", name, st_path(f));
    if (!t) return;
    int ndim = d1 ? 2 : 1;
    int small = !d1 || !strcmp(name, "vit.pos_embed") || !strcmp(name, "qformer.query_tokens");
    dtype_id want = DT_F32;
    if (!small && !strcmp(cur_dtype, "f16")) want = DT_F16;
    if (!small && !strcmp(cur_dtype, "bf16")) want = DT_BF16;
    int quant = !small && (!strcmp(cur_dtype, "q8") || !strcmp(cur_dtype, "q4"));
    if (quant) want = d1 % 32 || !strcmp(name, "embed_tokens.weight") ? DT_F16
                      : !strcmp(cur_dtype, "q8") ? DT_I8 : DT_U8;
    int64_t cols = want == DT_U8 ? d1 / 2 : d1;
    CHECK_MSG(t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == cols),
              "%s: shape", name);
    CHECK_MSG(t->dtype == want, "%s: dtype %s, expected %s", name, dtype_name(t->dtype),
              dtype_name(want));
    if (want == DT_I8 || want == DT_U8) { /* plus its block scales */
        char sn[160];
        snprintf(sn, sizeof sn, "%s.scale", name);
        const tensor_view *s = st_find(f, sn);
        CHECK_MSG(s && s->dtype == DT_F32 && s->ndim == 2 && s->shape[0] == d0 &&
                      s->shape[1] == d1 / 32, "%s", sn);
    }
}

/* Number of tensors a contract entry adds to the file. */
static size_t entries(const st_file *f, const char *name) {
    char sn[160];
    snprintf(sn, sizeof sn, "%s.scale", name);
    return 1 + (st_find(f, sn) != NULL);
}

static void check_contract(const char *dir, const char *dtype) {
    cur_dtype = dtype;
    st_file *v = NULL, *l = NULL;
    CHECK_OK(st_open(path_in(dir, "vision.safetensors"), &v));
    CHECK_OK(st_open(path_in(dir, "lm.safetensors"), &l));
    if (!v || !l) goto out;
    char n[128];
    size_t nv = 0, nl = 0;
#define E(f, cnt, d0, d1, ...) \
    (snprintf(n, sizeof n, __VA_ARGS__), expect(f, n, d0, d1), cnt += entries(f, n))
    E(v, nv, W, 0, "vit.cls_token");
    E(v, nv, 37, W, "vit.pos_embed");
    E(v, nv, W, 3 * 14 * 14, "vit.patch_embed.weight");
    E(v, nv, W, 0, "vit.patch_embed.bias");
    for (int i = 0; i < 2; i++) {
        E(v, nv, W, 0, "vit.blocks.%d.norm1.weight", i);
        E(v, nv, W, 0, "vit.blocks.%d.norm1.bias", i);
        E(v, nv, W, 0, "vit.blocks.%d.norm2.weight", i);
        E(v, nv, W, 0, "vit.blocks.%d.norm2.bias", i);
        E(v, nv, 3 * W, W, "vit.blocks.%d.attn.qkv.weight", i);
        E(v, nv, 3 * W, 0, "vit.blocks.%d.attn.qkv.bias", i);
        E(v, nv, W, W, "vit.blocks.%d.attn.proj.weight", i);
        E(v, nv, W, 0, "vit.blocks.%d.attn.proj.bias", i);
        E(v, nv, 384, W, "vit.blocks.%d.mlp.fc1.weight", i);
        E(v, nv, 384, 0, "vit.blocks.%d.mlp.fc1.bias", i);
        E(v, nv, W, 384, "vit.blocks.%d.mlp.fc2.weight", i);
        E(v, nv, W, 0, "vit.blocks.%d.mlp.fc2.bias", i);
    }
    E(v, nv, W, 0, "ln_vision.weight");
    E(v, nv, W, 0, "ln_vision.bias");
    E(v, nv, 8, D, "qformer.query_tokens");
    E(v, nv, D, 0, "qformer.ln.weight");
    E(v, nv, D, 0, "qformer.ln.bias");
    for (int i = 0; i < 2; i++) {
        E(v, nv, 3 * D, D, "qformer.layers.%d.self.qkv.weight", i);
        E(v, nv, 3 * D, 0, "qformer.layers.%d.self.qkv.bias", i);
        E(v, nv, D, D, "qformer.layers.%d.self.out.weight", i);
        E(v, nv, D, 0, "qformer.layers.%d.self.out.bias", i);
        E(v, nv, D, 0, "qformer.layers.%d.self.ln.weight", i);
        E(v, nv, D, 0, "qformer.layers.%d.self.ln.bias", i);
        if (i == 0) { /* cross-attention on even layers only */
            E(v, nv, D, D, "qformer.layers.%d.cross.q.weight", i);
            E(v, nv, D, 0, "qformer.layers.%d.cross.q.bias", i);
            E(v, nv, 2 * D, W, "qformer.layers.%d.cross.kv.weight", i);
            E(v, nv, 2 * D, 0, "qformer.layers.%d.cross.kv.bias", i);
            E(v, nv, D, D, "qformer.layers.%d.cross.out.weight", i);
            E(v, nv, D, 0, "qformer.layers.%d.cross.out.bias", i);
            E(v, nv, D, 0, "qformer.layers.%d.cross.ln.weight", i);
            E(v, nv, D, 0, "qformer.layers.%d.cross.ln.bias", i);
        }
        E(v, nv, 192, D, "qformer.layers.%d.ffn.fc1.weight", i);
        E(v, nv, 192, 0, "qformer.layers.%d.ffn.fc1.bias", i);
        E(v, nv, D, 192, "qformer.layers.%d.ffn.fc2.weight", i);
        E(v, nv, D, 0, "qformer.layers.%d.ffn.fc2.bias", i);
        E(v, nv, D, 0, "qformer.layers.%d.ffn.ln.weight", i);
        E(v, nv, D, 0, "qformer.layers.%d.ffn.ln.bias", i);
    }
    E(v, nv, 112, D, "proj.0.weight");
    E(v, nv, 112, 0, "proj.0.bias");
    E(v, nv, DL, 112, "proj.1.weight");
    E(v, nv, DL, 0, "proj.1.bias");
    CHECK_EQ_INT(st_count(v), nv); /* nothing else */

    E(l, nl, VOC, DL, "embed_tokens.weight");
    for (int i = 0; i < 2; i++) {
        E(l, nl, DL, 0, "layers.%d.ln.weight", i);
        E(l, nl, DL, 0, "layers.%d.ln.bias", i);
        E(l, nl, 3 * DL, DL, "layers.%d.qkv.weight", i);
        E(l, nl, 3 * DL, 0, "layers.%d.qkv.bias", i);
        E(l, nl, DH, 0, "layers.%d.q_ln.weight", i);
        E(l, nl, DH, 0, "layers.%d.q_ln.bias", i);
        E(l, nl, DH, 0, "layers.%d.k_ln.weight", i);
        E(l, nl, DH, 0, "layers.%d.k_ln.bias", i);
        E(l, nl, DL, DL, "layers.%d.dense.weight", i);
        E(l, nl, DL, 0, "layers.%d.dense.bias", i);
        E(l, nl, DL, 0, "layers.%d.post_ln.weight", i);
        E(l, nl, FF, DL, "layers.%d.fc1.weight", i);
        E(l, nl, FF, 0, "layers.%d.fc1.bias", i);
        E(l, nl, DL, FF, "layers.%d.fc2.weight", i);
        E(l, nl, DL, 0, "layers.%d.fc2.bias", i);
    }
    E(l, nl, DL, 0, "final_ln.weight");
    E(l, nl, DL, 0, "final_ln.bias");
    E(l, nl, VOC, DL, "lm_head.weight");
    E(l, nl, VOC, 0, "lm_head.bias");
    CHECK_EQ_INT(st_count(l), nl);
#undef E
out:
    st_free(v), st_free(l);
}

/* ---- values against the golden and the inputs ------------------------------------------------ */

static void check_pos_embed(const char *dir) {
    st_file *b = NULL, *g = NULL;
    CHECK_OK(st_open(path_in(dir, "vision.safetensors"), &b));
    CHECK_OK(st_open(TV_TEST_DATA "/tinygptv/tiny.safetensors", &g));
    const tensor_view *x = b ? st_find(b, "vit.pos_embed") : NULL, *y = g ? st_find(g, "vit.pos_embed") : NULL;
    CHECK(x && y && tensor_numel(x) == tensor_numel(y) && tensor_numel(y) == 37 * W);
    if (x && y && tensor_numel(x) == tensor_numel(y)) {
        double worst = 0;
        for (int64_t i = 0; i < tensor_numel(x); i++) {
            double e = fabs((double)at_f32(x, i) - at_f32(y, i));
            if (e > worst) worst = e;
        }
        CHECK_MSG(worst <= 1e-6, "pos_embed max abs err %g", worst);
    }
    st_free(b), st_free(g);
}

/* Recomputes qkv/dense rows from the fused Phi folder and the stage-4 LoRA, here, by the
 * formula (W + s·B·A in the fused layout, row h*3*Dh + j*Dh + i -> j*d + h*Dh + i). */
static void check_lm_values(const char *dir) {
    st_file *b = NULL, *phi = NULL;
    pth_file *s4 = NULL;
    CHECK_OK(st_open(path_in(dir, "lm.safetensors"), &b));
    CHECK_OK(st_open(MODEL "/phi_fused/model.safetensors", &phi));
    CHECK_OK(pth_open(MODEL "/TinyGPT-V_for_Stage4.pth", &s4));
    if (!b || !phi || !s4) goto out;
    const char *P = "model.llama_model.base_model.model.model.layers";
    char n[256];
    for (int L = 0; L < 2; L++) {
        snprintf(n, sizeof n, "layers.%d.qkv.weight", L);
        const tensor_view *q = st_find(b, n);
        snprintf(n, sizeof n, "layers.%d.qkv.bias", L);
        const tensor_view *qb = st_find(b, n);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.query_key_value.weight", L);
        const tensor_view *fw = st_find(phi, n);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.query_key_value.bias", L);
        const tensor_view *fb = st_find(phi, n);
        snprintf(n, sizeof n, "%s.%d.self_attn.query_key_value.lora_A.default.weight", P, L);
        const tensor_view *A = pth_find(s4, n);
        snprintf(n, sizeof n, "%s.%d.self_attn.query_key_value.lora_B.default.weight", P, L);
        const tensor_view *B = pth_find(s4, n);
        CHECK(q && qb && fw && fb && A && B);
        if (!(q && qb && fw && fb && A && B)) continue;
        static const int spots[][3] = {{0, 0, 0}, {1, 1, 7}, {2, 0, 39}, {2, 1, 20}, {0, 1, 39}, {1, 0, 1}};
        for (size_t s = 0; s < sizeof spots / sizeof *spots; s++) {
            int j = spots[s][0], h = spots[s][1], i = spots[s][2];
            int64_t fr = (int64_t)h * 3 * DH + j * DH + i, orow = (int64_t)j * DL + h * DH + i;
            double worst = 0;
            for (int c = 0; c < DL; c++) {
                double acc = 0;
                for (int k = 0; k < 8; k++) acc += (double)at_f32(B, fr * 8 + k) * at_f32(A, k * DL + c);
                double want = at_f32(fw, fr * DL + c) + LORA_SCALE * acc;
                double e = fabs(want - at_f32(q, orow * DL + c));
                if (e > worst) worst = e;
            }
            CHECK_MSG(worst <= 1e-6, "layer %d qkv (j%d h%d i%d) err %g", L, j, h, i, worst);
            CHECK_NEAR(at_f32(qb, orow), at_f32(fb, fr), 0);
        }
        /* dense: W += s·B·A in place (no reordering) */
        snprintf(n, sizeof n, "layers.%d.dense.weight", L);
        const tensor_view *dn = st_find(b, n);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.dense.weight", L);
        const tensor_view *dw = st_find(phi, n);
        snprintf(n, sizeof n, "%s.%d.self_attn.dense.lora_A.default.weight", P, L);
        const tensor_view *dA = pth_find(s4, n);
        snprintf(n, sizeof n, "%s.%d.self_attn.dense.lora_B.default.weight", P, L);
        const tensor_view *dB = pth_find(s4, n);
        CHECK(dn && dw && dA && dB);
        if (dn && dw && dA && dB) {
            double worst = 0;
            for (int r = 0; r < DL; r += 13)
                for (int c = 0; c < DL; c++) {
                    double acc = 0;
                    for (int k = 0; k < 8; k++) acc += (double)at_f32(dB, r * 8 + k) * at_f32(dA, k * DL + c);
                    double e = fabs(at_f32(dw, r * DL + c) + LORA_SCALE * acc - at_f32(dn, r * DL + c));
                    if (e > worst) worst = e;
                }
            CHECK_MSG(worst <= 1e-6, "layer %d dense err %g", L, worst);
        }
        /* norms: trained weights from the stage-4 file, biases from Phi, q/k bias 0 */
        snprintf(n, sizeof n, "layers.%d.ln.weight", L);
        const tensor_view *lw = st_find(b, n);
        snprintf(n, sizeof n, "%s.%d.input_layernorm.weight", P, L);
        const tensor_view *sw = pth_find(s4, n);
        snprintf(n, sizeof n, "layers.%d.ln.bias", L);
        const tensor_view *lb = st_find(b, n);
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.bias", L);
        const tensor_view *pb = st_find(phi, n);
        snprintf(n, sizeof n, "layers.%d.k_ln.weight", L);
        const tensor_view *kw = st_find(b, n);
        snprintf(n, sizeof n, "%s.%d.self_attn.k_layernorm.weight", P, L);
        const tensor_view *skw = pth_find(s4, n);
        snprintf(n, sizeof n, "layers.%d.q_ln.bias", L);
        const tensor_view *qlb = st_find(b, n);
        CHECK(lw && sw && lb && pb && kw && skw && qlb);
        if (lw && sw && lb && pb && kw && skw && qlb) {
            int same = 1;
            for (int c = 0; c < DL; c++)
                same &= at_f32(lw, c) == at_f32(sw, c) && at_f32(lb, c) == at_f32(pb, c);
            for (int c = 0; c < DH; c++) same &= at_f32(kw, c) == at_f32(skw, c) && at_f32(qlb, c) == 0;
            CHECK_MSG(same, "layer %d norms", L);
        }
    }
out:
    st_free(b), st_free(phi), pth_free(s4);
}

/* Every tensor of two lm.safetensors files within tol (same names, shapes and dtypes). */
static void check_same_lm(const char *a_dir, const char *b_dir, double tol) {
    st_file *a = NULL, *b = NULL;
    CHECK_OK(st_open(path_in(a_dir, "lm.safetensors"), &a));
    CHECK_OK(st_open(path_in(b_dir, "lm.safetensors"), &b));
    if (!a || !b) goto out;
    CHECK_EQ_INT(st_count(a), st_count(b));
    for (size_t i = 0; i < st_count(a); i++) {
        const tensor_view *x = st_tensor_at(a, i), *y = st_find(b, x->name);
        CHECK_MSG(y && y->dtype == x->dtype && tensor_numel(y) == tensor_numel(x), "%s", x->name);
        if (!y || tensor_numel(y) != tensor_numel(x)) continue;
        double worst = 0;
        for (int64_t k = 0; k < tensor_numel(x); k++) {
            double e = fabs((double)at_f32(x, k) - at_f32(y, k));
            if (e > worst) worst = e;
        }
        CHECK_MSG(worst <= tol, "%s differs by %g", x->name, worst);
    }
out:
    st_free(a), st_free(b);
}

/* q8/q4 matrices dequantise to within half a step of the f32 bundle's; matrices whose input
 * width is not a multiple of 32 and the embedding are F16 (docs/bundle.md). */
static void check_quant(const char *f32_dir, const char *q_dir, int q4) {
    st_file *a = NULL, *b = NULL;
    CHECK_OK(st_open(path_in(f32_dir, "lm.safetensors"), &a));
    CHECK_OK(st_open(path_in(q_dir, "lm.safetensors"), &b));
    if (!a || !b) goto out;
    const tensor_view *w = st_find(a, "layers.1.fc2.weight"), *q = st_find(b, "layers.1.fc2.weight"),
                      *s = st_find(b, "layers.1.fc2.weight.scale");
    CHECK(w && q && s);
    if (w && q && s) {
        CHECK_EQ_INT(q->dtype, q4 ? DT_U8 : DT_I8);
        CHECK(q->shape[0] == DL && q->shape[1] == (q4 ? FF / 2 : FF));
        CHECK(s->dtype == DT_F32 && s->shape[0] == DL && s->shape[1] == FF / 32);
        float row[FF];
        int ok = 1, nonzero = 0;
        for (int r = 0; r < DL; r++) {
            const float *sc = (const float *)s->data + r * (FF / 32);
            if (q4) quant_dequant_q4_row((const uint8_t *)q->data + r * FF / 2, sc, FF, row);
            else quant_dequant_q8_row((const int8_t *)q->data + r * FF, sc, FF, row);
            for (int c = 0; c < FF; c++) {
                float want = at_f32(w, (int64_t)r * FF + c), step = sc[c / 32];
                ok &= fabsf(row[c] - want) <= step * 0.5f + 1e-7f;
                nonzero |= row[c] != 0;
            }
        }
        CHECK_MSG(ok && nonzero, "dequantised fc2 outside the quantisation bound");
    }
    const tensor_view *qkv = st_find(b, "layers.0.qkv.weight"), *emb = st_find(b, "embed_tokens.weight");
    CHECK(qkv && qkv->dtype == DT_F16 && !st_find(b, "layers.0.qkv.weight.scale"));
    CHECK(emb && emb->dtype == DT_F16);
    CHECK(st_find(b, "layers.0.qkv.bias") && st_find(b, "layers.0.qkv.bias")->dtype == DT_F32);
out:
    st_free(a), st_free(b);
}

static void check_dtype_of(const char *dir, const char *name, dtype_id dt) {
    st_file *f = NULL;
    CHECK_OK(st_open(path_in(dir, "lm.safetensors"), &f));
    const tensor_view *t = f ? st_find(f, name) : NULL;
    CHECK_MSG(t && t->dtype == dt, "%s in %s", name, dir);
    st_free(f);
}

/* ---- a sharded Phi folder ------------------------------------------------------------------ */

static int copy_to(const char *from, const char *to) {
    char *data = NULL;
    size_t len = 0;
    int rc = mf_read_all(from, 1 << 24, &data, &len);
    FILE *f = rc ? NULL : fopen(to, "wb");
    if (!rc && (!f || fwrite(data, 1, len, f) != len)) rc = TV_EIO;
    if (f) fclose(f);
    free(data);
    return rc;
}

/* phi_fused re-written as two shards + model.safetensors.index.json (HF's sharded layout). */
static void make_sharded(const char *dir) {
    st_file *src = NULL;
    CHECK_OK(st_open(MODEL "/phi_fused/model.safetensors", &src));
    if (!src) return;
    mkdir(dir, 0755);
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    CHECK_OK(copy_to(MODEL "/phi_fused/config.json", p));
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    CHECK_OK(copy_to(MODEL "/phi_fused/tokenizer.json", p));
    st_writer *w[2] = {st_writer_new(), st_writer_new()};
    char *index = NULL;
    size_t cap = 1 << 16, used = 0;
    index = malloc(cap);
    used += (size_t)snprintf(index, cap, "{\"metadata\": {}, \"weight_map\": {");
    for (size_t i = 0; i < st_count(src); i++) {
        const tensor_view *t = st_tensor_at(src, i);
        int k = (int)(i % 2);
        CHECK_OK(st_writer_add(w[k], t->name, t->dtype, t->ndim, t->shape, t->data));
        used += (size_t)snprintf(index + used, cap - used, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                                 i ? ", " : "", t->name, k + 1);
    }
    snprintf(index + used, cap - used, "}}");
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/model-0000%d-of-00002.safetensors", dir, k + 1);
        CHECK_OK(st_writer_write(w[k], p));
        st_writer_free(w[k]);
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(p, "wb");
    CHECK(f && fputs(index, f) >= 0);
    if (f) fclose(f);
    free(index);
    st_free(src);
}

/* ---- failures ------------------------------------------------------------------------------ */

static void check_failures(void) {
    conv_opts o;
    /* the EVA file where the BLIP-2 file belongs: every BLIP-2 tensor is missing, listed */
    tiny_conv_opts(&o, MODEL "/phi_fused", path_in("bad", NULL), "f32");
    o.blip2_path = MODEL "/eva_vit_g.pth";
    err_clear();
    int rc = conv_run(&o);
    CHECK_EQ_INT(rc, TV_ENOTFOUND);
    const char *msg = err_msg();
    CHECK_MSG(strstr(msg, "query_tokens") && strstr(msg, "ln_vision.weight") &&
                  strstr(msg, "Qformer.bert.embeddings.LayerNorm.weight") &&
                  strstr(msg, "eva_vit_g.pth"),
              "message: %s", msg);
    struct stat st;
    CHECK(stat(path_in("bad", "tinyvlm.json"), &st) != 0);

    /* a truncated checkpoint */
    mapfile *mf = NULL;
    CHECK_OK(mf_open(MODEL "/TinyGPT-V_for_Stage4.pth", &mf));
    if (mf) {
        FILE *f = fopen(path_in("trunc.pth", NULL), "wb");
        CHECK(f && fwrite(mf->data, 1, mf->size / 2, f) == mf->size / 2);
        if (f) fclose(f);
        mf_free(mf);
    }
    tiny_conv_opts(&o, MODEL "/phi_fused", path_in("bad", NULL), "f32");
    o.stage4_path = path_in("trunc.pth", NULL);
    CHECK_FAILS(conv_run(&o));

    /* missing files, bad options */
    tiny_conv_opts(&o, MODEL "/phi_fused", path_in("bad", NULL), "f32");
    o.eva_path = MODEL "/nonexistent.pth";
    CHECK_FAILS(conv_run(&o));
    tiny_conv_opts(&o, MODEL, path_in("bad", NULL), "f32"); /* no config.json there */
    CHECK_FAILS(conv_run(&o));
    tiny_conv_opts(&o, MODEL "/phi_fused", path_in("bad", NULL), "f8");
    CHECK_FAILS(conv_run(&o));
    tiny_conv_opts(&o, MODEL "/phi_fused", path_in("bad", NULL), "f32");
    o.image_size = 90; /* not a multiple of 14 */
    CHECK_FAILS(conv_run(&o));
    tiny_conv_opts(&o, MODEL "/phi_fused", path_in("bad", NULL), "f32");
    o.vit_heads = 3; /* 88 is not divisible by 3 */
    CHECK_FAILS(conv_run(&o));
    CHECK(stat(path_in("bad", "tinyvlm.json"), &st) != 0);
}

/* ---- pieces ---------------------------------------------------------------------------------- */

/* torch's bicubic weights at A = -0.75 sum to 1 and interpolate (t = 0 -> [0, 1, 0, 0]). */
static void check_cubic(void) {
    float c[4];
    conv_cubic_coeffs(0.0f, c);
    CHECK(c[0] == 0 && c[1] == 1 && c[2] == 0 && c[3] == 0);
    conv_cubic_coeffs(0.25f, c);
    CHECK_NEAR(c[0] + c[1] + c[2] + c[3], 1.0, 1e-6);
    CHECK_NEAR(c[0], -0.10546875, 1e-7); /* ((A*1.25 - 5A)*1.25 + 8A)*1.25 - 4A, A = -0.75 */
}

static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tv_convert_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    check_cubic();
    conv_opts o;
    tiny_conv_opts(&o, MODEL "/phi_fused", path_in("f32", NULL), "f32");
    CHECK_OK(conv_run(&o));
    check_manifest(path_in("f32", NULL), "f32");
    check_contract("f32", "f32");
    check_pos_embed("f32");
    check_lm_values("f32");

    tiny_conv_opts(&o, MODEL "/phi_split", path_in("split", NULL), "f32");
    CHECK_OK(conv_run(&o));
    check_same_lm("f32", "split", 1e-6);

    make_sharded(path_in("phi_sharded", NULL));
    tiny_conv_opts(&o, path_in("phi_sharded", NULL), path_in("sharded", NULL), "f32");
    CHECK_OK(conv_run(&o));
    check_same_lm("f32", "sharded", 0);

    static const char *const dts[] = {"f16", "bf16", "q8", "q4"};
    for (int i = 0; i < 4; i++) {
        tiny_conv_opts(&o, MODEL "/phi_fused", path_in(dts[i], NULL), dts[i]);
        CHECK_OK(conv_run(&o));
        check_manifest(path_in(dts[i], NULL), dts[i]);
        check_contract(dts[i], dts[i]);
    }
    check_dtype_of("f16", "layers.0.qkv.weight", DT_F16);
    check_dtype_of("bf16", "lm_head.weight", DT_BF16);
    check_dtype_of("bf16", "layers.0.ln.weight", DT_F32);
    check_quant("f32", "q8", 0);
    check_quant("f32", "q4", 1);
    check_failures();
    rm_tree(tmpdir);
    return check_finish("test_convert");
}
