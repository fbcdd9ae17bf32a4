/* test_noalloc — the forward pass allocates nothing (DESIGN.md §5: "the forward pass does not
 * malloc"). This executable replaces malloc, calloc, realloc, free, posix_memalign,
 * aligned_alloc and memalign with wrappers that forward to glibc's __libc_* functions and, while
 * a window is open, count every call (from any thread: the backend's pool threads too). The tiny
 * TinyGPT-V is converted (f32 and q8) into a temp bundle and loaded, outside the window; then
 * vision_encode, phi_embed_tokens, phi_prefill and phi_decode run inside it, twice (the first
 * call is not allowed a lazy allocation either), and each must count 0.
 *
 * Under AddressSanitizer the allocator belongs to ASan, so the test skips with a message. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "convert.h"
#include "manifest.h"
#include "ops.h"
#include "phi.h"
#include "safetensors.h"
#include "tiny_model.h"
#include "vision.h"

#if defined(__SANITIZE_ADDRESS__)
#define NOALLOC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NOALLOC_ASAN 1
#endif
#endif

#ifndef NOALLOC_ASAN

/* ---- counting allocator ------------------------------------------------------------------- */

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t n);
void *memalign(size_t align, size_t n);

static atomic_int counting;      /* 1 while a window is open */
static atomic_long n_calls;      /* allocator calls seen in the window */

static void seen(void) {
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&n_calls, 1, memory_order_relaxed);
}

void *malloc(size_t n) {
    seen();
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t size) {
    seen();
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t n) {
    seen();
    return __libc_realloc(p, n);
}
void free(void *p) {
    if (p) seen();   /* free(NULL) is no allocator work */
    __libc_free(p);
}
void *memalign(size_t align, size_t n) {
    seen();
    return __libc_memalign(align, n);
}
void *aligned_alloc(size_t align, size_t n) {
    seen();
    return __libc_memalign(align, n);
}
int posix_memalign(void **out, size_t align, size_t n) {
    seen();
    if (align < sizeof(void *) || (align & (align - 1))) return 22;   /* EINVAL */
    void *p = __libc_memalign(align, n);
    if (!p && n) return 12;                                            /* ENOMEM */
    *out = p;
    return 0;
}

static void window_open(void) {
    atomic_store(&n_calls, 0);
    atomic_store(&counting, 1);
}
static long window_close(void) {
    atomic_store(&counting, 0);
    return atomic_load(&n_calls);
}

/* The wrappers must see calls, or a 0 below would prove nothing. */
static void test_counter_works(void) {
    window_open();
    void *p = malloc(100);
    p = realloc(p, 200);
    free(p);
    void *q = NULL;
    CHECK_EQ_INT(posix_memalign(&q, 64, 256), 0);
    free(q);
    long n = window_close();
    CHECK_EQ_INT(n, 5);
}

/* A pool helper thread frees its start-up argument when it first runs, which may be after
 * kern_cpu_new returns (during the first op). That free belongs to the backend's creation, not
 * to the forward pass: one op split over several tasks makes every helper start (pool_run waits
 * for all of them) before a window opens. */
static int pool_warm(kern_be *be) {
    enum { N = 4 * 16384 };
    float *a = tv_xcalloc(N, sizeof *a);
    int rc = kern_add(be, a, a, a, N);
    free(a);
    return rc;
}

/* ---- the forward pass of the tiny model ----------------------------------------------------- */

static void forward_check(const char *dir, const char *dtype, const float *pixels) {
    char out[600];
    snprintf(out, sizeof out, "%s/%s", dir, dtype);
    conv_opts o;
    tiny_conv_opts(&o, TINY_MODEL_DIR "/phi_fused", out, dtype);
    manifest *mf = NULL;
    kern_be *be = NULL;
    vision_model *vm = NULL;
    phi_model *pm = NULL;
    int rc = conv_run(&o);
    if (!rc) rc = manifest_load(out, &mf);
    if (!rc) rc = kern_cpu_new(2, KERN_ISA_AUTO, &be);
    if (!rc) rc = pool_warm(be);
    if (!rc) rc = vision_load(mf, be, 1, &vm);
    if (!rc) rc = phi_load(mf, be, 1, 0, &pm);
    CHECK_MSG(rc == 0, "tiny %s: %s", dtype, err_msg());
    if (!rc) {
        const int S = vision_image_size(vm), Q = vision_tokens(vm), d = vision_dim(vm);
        const int V = phi_get_config(pm)->vocab, T = Q + 4;
        CHECK_EQ_INT(d, phi_get_config(pm)->width);
        CHECK_EQ_INT(S, 84);   /* the pixels below are the golden 84 x 84 image */
        float *emb = tv_xmalloc((size_t)T * d * sizeof(float));
        float *logits = tv_xmalloc((size_t)V * sizeof(float));
        const int32_t ids[4] = {1, 2, 3, 4};
        int slot = 0;
        for (int round = 0; round < 2; round++) {
            CHECK_OK(phi_reset(pm, 0));
            int32_t tok = 5;
            long counts[4];
            window_open();
            int r = vision_encode(vm, pixels, 1, emb);
            counts[0] = window_close();
            window_open();
            r |= phi_embed_tokens(pm, ids, 4, emb + (size_t)Q * d);
            counts[1] = window_close();
            window_open();
            r |= phi_prefill(pm, 0, emb, T, 0, logits);
            counts[2] = window_close();
            window_open();
            for (int s = 0; s < 4; s++) r |= phi_decode(pm, 1, &slot, &tok, logits);
            counts[3] = window_close();
            CHECK_MSG(r == 0, "tiny %s forward: %s", dtype, err_msg());
            printf("tiny %s, call %d: allocator calls in vision_encode %ld, phi_embed_tokens %ld, "
                   "phi_prefill %ld, 4 x phi_decode %ld\n",
                   dtype, round + 1, counts[0], counts[1], counts[2], counts[3]);
            CHECK_EQ_INT(counts[0], 0);
            CHECK_EQ_INT(counts[1], 0);
            CHECK_EQ_INT(counts[2], 0);
            CHECK_EQ_INT(counts[3], 0);
        }
        free(emb);
        free(logits);
    }
    phi_free(pm);
    vision_free(vm);
    kern_free(be);
    manifest_free(mf);
}

int main(void) {
    /* stdout's buffer is allocated on first use: do it before any window */
    printf("test_noalloc: counting allocator calls during the forward pass\n");
    fflush(stdout);
    test_counter_works();
    st_file *g = NULL;
    CHECK_OK(st_open(check_data("tinygptv/tiny.safetensors"), &g));
    const tensor_view *px = g ? st_find(g, "pixels") : NULL;
    CHECK(px && px->dtype == DT_F32 && tensor_numel(px) == 3 * 84 * 84);
    char dir[] = "/tmp/tv_noalloc_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    if (px && px->dtype == DT_F32 && tensor_numel(px) == 3 * 84 * 84) {
        forward_check(dir, "f32", (const float *)px->data);
        forward_check(dir, "q8", (const float *)px->data);
    }
    st_free(g);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return check_finish("test_noalloc");
}

#else

int main(void) {
    printf("test_noalloc: skipped under AddressSanitizer (it owns malloc; the Release build runs "
           "this test)\n");
    (void)check_count;   /* nothing was checked, and that is not a failure here */
    (void)check_failed;
    return 0;
}

#endif
