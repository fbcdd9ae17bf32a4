/* test_cuda_model — the engine's golden tests on the CUDA backend: the tiny TinyGPT-V
 * (tests/data/tinygptv) converted by `tinyvlm convert`, then
 *   vision: ViT out, ln_vision, Q-Former out, proj1 and the image embeddings against the
 *     PyTorch goldens (f32 within 1e-4 of each output's magnitude, f16 within 3e-3), and a batch
 *     of 2 equal to two single runs;
 *   LM: f32 — logits of the golden prompt within 1e-3 and all 32 greedy tokens; f16 and bf16 —
 *     >= 99% top-1 agreement (32 prompt positions + 31 teacher-forced steps) and the same first
 *     8 greedy tokens; a batched decode of two slots equal to the single-slot runs.
 * Without a GPU (or a build without CUDA) it prints "skipped" and passes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "convert.h"
#include "manifest.h"
#include "ops.h"
#include "phi.h"
#include "safetensors.h"
#include "tiny_model.h"
#include "vision.h"

static kern_be *gpu;

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static double maxdiff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;   /* NaN propagates */
    }
    return m;
}

static const float *golden(const st_file *f, const char *name, int64_t numel) {
    const tensor_view *t = st_find(f, name);
    CHECK_MSG(t && t->dtype == DT_F32 && tensor_numel(t) == numel, "golden %s", name);
    return t && t->dtype == DT_F32 && tensor_numel(t) == numel ? t->data : NULL;
}

/* Converts the tiny model at dtype into dir/dtype; returns 0 and the manifest. */
static int convert(const char *dir, const char *dtype, const char *phi_folder, manifest **mf) {
    char out[512], phi[512];
    snprintf(out, sizeof out, "%s/%s", dir, dtype);
    snprintf(phi, sizeof phi, "%s/%s", TINY_MODEL_DIR, phi_folder);
    conv_opts o;
    tiny_conv_opts(&o, phi, out, dtype);
    o.image_size = 84;
    int rc = conv_run(&o);
    if (!rc) rc = manifest_load(out, mf);
    return rc;
}

/* ---- vision ----------------------------------------------------------------------------- */

/* Downloads n floats of a trace buffer (device memory) and compares with the golden. */
static void cmp_trace(const char *dtype, const char *what, const float *dev, const st_file *g,
                      int64_t n, double tol) {
    const float *ref = golden(g, what, n);
    if (!ref || !dev) return;
    float *h = tv_xmalloc((size_t)n * sizeof(float));
    CHECK_OK(kern_download(gpu, h, dev, (size_t)n * sizeof(float)));
    double e = maxdiff(h, ref, n), m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(ref[i]));
    printf("cuda tiny %-4s %-12s max abs err %.3g, relative %.3g\n", dtype, what, e, e / m);
    CHECK_MSG(e / m <= tol, "%s %s rel err %g > %g", dtype, what, e / m, tol);
    free(h);
}

static void test_vision(const char *dir, const char *dtype, double tol) {
    manifest *m = NULL;
    vision_model *vm = NULL;
    st_file *g = NULL;
    CHECK_OK(convert(dir, dtype, "phi_fused", &m));
    if (m) CHECK_OK(vision_load(m, gpu, 2, &vm));
    CHECK_OK(st_open(check_data("tinygptv/tiny.safetensors"), &g));
    const float *px = g ? golden(g, "pixels", 3 * 84 * 84) : NULL;
    if (vm && px) {
        float emb[2 * 8 * 80];
        CHECK_OK(vision_encode(vm, px, 1, emb));
        vision_trace t;
        vision_get_trace(vm, &t);
        cmp_trace(dtype, "vit_out", t.vit_out, g, 37 * 88, tol);
        cmp_trace(dtype, "ln_vision", t.ln_vision, g, 37 * 88, tol);
        cmp_trace(dtype, "qformer_out", t.qformer_out, g, 8 * 48, tol);
        cmp_trace(dtype, "proj1", t.proj[0], g, 8 * 112, tol);
        const float *ref = golden(g, "image_embeds", 8 * 80);
        if (ref) {
            double e = maxdiff(emb, ref, 8 * 80), mx = 0;
            for (int i = 0; i < 8 * 80; i++) mx = fmax(mx, fabs(ref[i]));
            printf("cuda tiny %-4s image_embeds max abs err %.3g, relative %.3g\n", dtype, e,
                   e / mx);
            CHECK_MSG(e / mx <= tol, "%s image_embeds rel err %g", dtype, e / mx);
        }
        /* a batch of the same image twice: each equal to the single run */
        float *px2 = tv_xmalloc(2 * 3 * 84 * 84 * sizeof(float)), emb2[2 * 8 * 80];
        memcpy(px2, px, 3 * 84 * 84 * sizeof(float));
        memcpy(px2 + 3 * 84 * 84, px, 3 * 84 * 84 * sizeof(float));
        CHECK_OK(vision_encode(vm, px2, 2, emb2));
        /* f32: the same arithmetic; f16: the Q-Former's 8 rows per image go through the fp32
         * matrix-vector kernel alone but through cuBLAS (x rounded to f16) in a batch */
        double d = fmax(maxdiff(emb2, emb, 8 * 80), maxdiff(emb2 + 8 * 80, emb, 8 * 80)), mx = 0;
        for (int i = 0; i < 8 * 80; i++) mx = fmax(mx, fabs(emb[i]));
        double btol = strcmp(dtype, "f32") ? tol : 1e-5;
        printf("cuda tiny %-4s batch of 2 vs single: relative %.3g\n", dtype, d / mx);
        CHECK_MSG(d / mx <= btol, "batch of 2 differs from single runs by %g", d / mx);
        CHECK_FAILS(vision_encode(vm, px2, 3, emb2));
        free(px2);
    }
    st_free(g);
    vision_free(vm);
    manifest_free(m);
}

/* ---- language model ------------------------------------------------------------------------ */

static void test_lm(const char *dir, const char *dtype, const char *folder, int exact,
                    double min_agree) {
    manifest *mf = NULL;
    phi_model *m = NULL;
    st_file *gold = NULL;
    int rc = convert(dir, dtype, folder, &mf);
    if (!rc) rc = phi_load(mf, gpu, 2, 0, &m);
    CHECK_MSG(rc == 0, "cuda tiny %s: %s", dtype, err_msg());
    if (rc || st_open(check_data("tinygptv/tiny.safetensors"), &gold)) {
        phi_free(m);
        manifest_free(mf);
        return;
    }
    const tensor_view *emb = st_find(gold, "inputs_embeds"), *gl = st_find(gold, "logits"),
                      *gt = st_find(gold, "greedy_tokens");
    const int V = phi_get_config(m)->vocab, T = 32, N = 32;
    CHECK(emb && gl && gt && tensor_numel(gl) == (int64_t)T * V && tensor_numel(gt) == N);
    if (!emb || !gl || !gt || tensor_numel(gl) != (int64_t)T * V || tensor_numel(gt) != N) {
        st_free(gold), phi_free(m), manifest_free(mf);
        return;
    }
    const float *glog = gl->data;
    int32_t gtok[32];
    for (int i = 0; i < N; i++) gtok[i] = (int32_t)((const int64_t *)gt->data)[i];
    float *logits = tv_xmalloc((size_t)T * V * sizeof(float));
    CHECK_OK(phi_prefill(m, 0, emb->data, T, PHI_ALL_LOGITS, logits));
    double dmax = maxdiff(logits, glog, (int64_t)T * V);
    int agree = 0, total = 0;
    for (int t = 0; t < T; t++, total++)
        agree += argmax(logits + (size_t)t * V, V) == argmax(glog + (size_t)t * V, V);
    int slot = 0, free_ok = 1, nfree = exact ? N : 8;
    int32_t tok = argmax(logits + (size_t)(T - 1) * V, V);
    for (int k = 0; k < nfree; k++) {
        free_ok &= tok == gtok[k];
        if (k + 1 < nfree) {
            CHECK_OK(phi_decode(m, 1, &slot, &tok, logits));
            tok = argmax(logits, V);
        }
    }
    CHECK_MSG(free_ok, "cuda tiny %s: greedy tokens differ from the golden ones", dtype);
    if (!exact) {   /* teacher-forced agreement */
        CHECK_OK(phi_reset(m, 0));
        CHECK_OK(phi_prefill(m, 0, emb->data, T, 0, logits));
        for (int k = 0; k + 1 < N; k++, total++) {
            CHECK_OK(phi_decode(m, 1, &slot, &gtok[k], logits));
            agree += argmax(logits, V) == gtok[k + 1];
        }
    }
    double frac = (double)agree / total;
    printf("cuda tiny %s: max |logits - golden| %.3g, top-1 agreement %d/%d, greedy %s\n", dtype,
           dmax, agree, total, free_ok ? "same" : "DIFFERENT");
    if (exact) CHECK_MSG(dmax <= 1e-3, "cuda tiny %s: logits differ by %g", dtype, dmax);
    CHECK_MSG(frac >= min_agree, "cuda tiny %s: top-1 agreement %.3f < %.3f", dtype, frac,
              min_agree);

    /* batched decode: slots 1 and 0 together (different lengths) == one at a time */
    float *b2 = tv_xmalloc(2 * (size_t)V * sizeof(float)), *s0 = tv_xmalloc((size_t)V * 4),
          *s1 = tv_xmalloc((size_t)V * 4);
    CHECK_OK(phi_reset(m, 0));
    CHECK_OK(phi_reset(m, 1));
    CHECK_OK(phi_prefill(m, 0, emb->data, T, 0, logits));
    CHECK_OK(phi_prefill(m, 1, emb->data, T - 5, 0, logits));
    int slots[2] = {1, 0}, one = 1, zero = 0;
    int32_t toks[2] = {gtok[3], gtok[0]};
    CHECK_OK(phi_decode(m, 2, slots, toks, b2));
    CHECK_OK(phi_reset(m, 0));
    CHECK_OK(phi_reset(m, 1));
    CHECK_OK(phi_prefill(m, 0, emb->data, T, 0, logits));
    CHECK_OK(phi_prefill(m, 1, emb->data, T - 5, 0, logits));
    CHECK_OK(phi_decode(m, 1, &one, &toks[0], s1));
    CHECK_OK(phi_decode(m, 1, &zero, &toks[1], s0));
    double bd = fmax(maxdiff(b2, s1, V), maxdiff(b2 + V, s0, V));
    printf("cuda tiny %s: batched decode vs single: max diff %.3g\n", dtype, bd);
    CHECK_MSG(bd <= 1e-4, "cuda tiny %s: batched decode differs by %g", dtype, bd);
    free(b2), free(s0), free(s1), free(logits);
    st_free(gold);
    phi_free(m);
    manifest_free(mf);
}

/* Without a GPU: what the fallback promises. "cuda" is refused with TV_EUNSUPPORTED and a
 * message, "auto" gives a working CPU backend, an unknown name is refused. */
static void skip_checks(int rc) {
    CHECK_EQ_INT(rc, TV_EUNSUPPORTED);
    CHECK(strstr(err_msg(), "CUDA") != NULL || strstr(err_msg(), "cuda") != NULL);
    kern_be *be = NULL;
    CHECK_OK(kern_new_device("auto", 1, &be));
    CHECK(be && kern_is_host(be));
    float x[3] = {1, 2, 3}, y[3];
    if (be) CHECK_OK(kern_add(be, x, x, y, 3));
    CHECK(y[2] == 6.0f);
    kern_free(be);
    be = NULL;
    CHECK_FAILS(kern_new_device("tpu", 1, &be));
    CHECK(be == NULL);
}

int main(void) {
    int rc = kern_new_device("cuda", 0, &gpu);
    if (rc < 0) {
        printf("test_cuda_model: skipped: no CUDA GPU (%s)\n", err_msg());
        skip_checks(rc);
        return check_finish("test_cuda_model");
    }
    char dir[] = "/tmp/tv_cuda_model_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    test_vision(dir, "f32", 1e-4);
    test_vision(dir, "f16", 3e-3);
    test_lm(dir, "f32", "phi_fused", 1, 1.0);
    test_lm(dir, "f16", "phi_split", 0, 0.99);
    test_lm(dir, "bf16", "phi_fused", 0, 0.99);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    kern_device d;
    if (kern_device_info(gpu, &d) == 0)
        printf("device %s: %.0f MB used, busy %.1f ms\n", d.device, d.mem_used / 1e6, d.busy_ms);
    kern_free(gpu);
    return check_finish("test_cuda_model");
}
