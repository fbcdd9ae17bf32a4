/* vision — the image encoder: bundle loading, the ViT -> Q-Former -> projections pipeline, and
 * the tensor lookups shared by vit.c and qformer.c. */
#include "vision.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "qformer.h"
#include "quant.h"
#include "safetensors.h"
#include "vit.h"

/* ============================================================================================
 * tensor lookups
 * ========================================================================================== */

static int find(const vision_src *src, const char *name, const tensor_view **out) {
    *out = src->find(src->user, name);
    if (!*out) return err_set(TV_ENOTFOUND, "vision: tensor %s is missing", name);
    return TV_OK;
}

static int check_aligned(const tensor_view *t) {
    size_t sz = dtype_size(t->dtype);
    if (sz > 1 && (uintptr_t)t->data % sz != 0)
        return err_set(TV_EFORMAT, "vision: tensor %s is not %zu-byte aligned", t->name, sz);
    return TV_OK;
}

int vision_get_f32(const vision_src *src, const char *name, int64_t n, const float **out) {
    const tensor_view *t;
    int rc = find(src, name, &t);
    if (rc < 0) return rc;
    if (t->dtype != DT_F32)
        return err_set(TV_EFORMAT, "vision: tensor %s is %s, expected F32", name,
                       dtype_name(t->dtype));
    if (tensor_numel(t) != n) {
        char buf[96];
        return err_set(TV_EFORMAT, "vision: tensor %s has shape %s, expected %lld elements",
                       name, tensor_shape_str(t, buf, sizeof buf), (long long)n);
    }
    if ((rc = check_aligned(t)) < 0) return rc;
    *out = t->data;
    return TV_OK;
}

int vision_get_vec(const vision_src *src, const char *name, int64_t n, const float **out) {
    const tensor_view *t;
    int rc = find(src, name, &t);
    if (rc < 0) return rc;
    if ((rc = tensor_expect_shape(t, 1, &n)) < 0) return rc;
    return vision_get_f32(src, name, n, out);
}

/* q8/q4: the integer tensor (already shape-checked) plus "<name>.scale" F32 [n, k/32]. */
static int get_scale(const vision_src *src, const char *name, int64_t n, int64_t k,
                     kern_weight *w) {
    if (k % QUANT_BLOCK != 0)
        return err_set(TV_EFORMAT, "vision: tensor %s is quantised but k = %lld is not a "
                       "multiple of %d", name, (long long)k, QUANT_BLOCK);
    char sname[256];
    int len = snprintf(sname, sizeof sname, "%s.scale", name);
    if (len < 0 || (size_t)len >= sizeof sname)
        return err_set(TV_EINVAL, "vision: tensor name too long: %s", name);
    const tensor_view *t;
    int rc = find(src, sname, &t);
    if (rc < 0) return rc;
    int64_t dims[2] = {n, k / QUANT_BLOCK};
    if ((rc = tensor_expect_shape(t, 2, dims)) < 0) return rc;
    if (t->dtype != DT_F32)
        return err_set(TV_EFORMAT, "vision: tensor %s is %s, expected F32", sname,
                       dtype_name(t->dtype));
    if ((rc = check_aligned(t)) < 0) return rc;
    w->scale = t->data;
    return TV_OK;
}

int vision_get_matrix(const vision_src *src, const char *name, int64_t n, int64_t k,
                      kern_weight *w) {
    const tensor_view *t;
    int rc = find(src, name, &t);
    if (rc < 0) return rc;
    memset(w, 0, sizeof *w);
    w->n = n;
    w->k = k;
    int64_t dims[2] = {n, k};
    switch (t->dtype) {
    case DT_F32: w->type = KERN_W_F32; break;
    case DT_F16: w->type = KERN_W_F16; break;
    case DT_BF16: w->type = KERN_W_BF16; break;
    case DT_I8: w->type = KERN_W_Q8; break;
    case DT_U8: w->type = KERN_W_Q4; dims[1] = k / 2; break;
    default:
        return err_set(TV_EFORMAT, "vision: matrix %s has dtype %s (expected F32, F16, BF16, "
                       "I8 or U8)", name, dtype_name(t->dtype));
    }
    if ((rc = tensor_expect_shape(t, 2, dims)) < 0) return rc;
    if ((rc = check_aligned(t)) < 0) return rc;
    w->data = t->data;
    if (w->type == KERN_W_Q8 || w->type == KERN_W_Q4) return get_scale(src, name, n, k, w);
    return TV_OK;
}

/* ============================================================================================
 * the model
 * ========================================================================================== */

#define VISION_MAX_PROJ 3

/* A tensor source that hands out backend copies of another source's tensors: each tensor is
 * uploaded once (kern_const_new) on first lookup, and released with the model. On the CPU
 * backend it is not used at all (the views into the mapping are used as they are). */
typedef struct dev_tensor {
    const tensor_view *host;
    tensor_view dev;
    struct dev_tensor *next;
} dev_tensor;

typedef struct {
    const vision_src *inner;
    kern_be *be;
    dev_tensor *list;
    int failed;
    char why[256];
} dev_src;

static const tensor_view *dev_find(void *user, const char *name) {
    dev_src *d = user;
    const tensor_view *h = d->inner->find(d->inner->user, name);
    if (!h || d->failed) return NULL;
    for (dev_tensor *t = d->list; t; t = t->next)
        if (t->host == h) return &t->dev;
    dev_tensor *t = tv_xcalloc(1, sizeof *t);
    t->host = h;
    t->dev = *h;
    const void *p = NULL;
    if (kern_const_new(d->be, h->data, h->nbytes, &p) < 0) {
        d->failed = 1;
        snprintf(d->why, sizeof d->why, "%s: %s", name, err_msg());
        free(t);
        return NULL;
    }
    t->dev.data = (void *)p;
    t->next = d->list;
    d->list = t;
    return &t->dev;
}

static void dev_src_free(kern_be *be, dev_tensor *list) {
    while (list) {
        dev_tensor *n = list->next;
        kern_const_free(be, list->dev.data);
        free(list);
        list = n;
    }
}

struct vision_model {
    kern_be *be;
    st_file *file;                      /* NULL when loaded from a caller's source */
    int max_batch;
    vit_config vit;
    vit_weights vw;
    vit_scratch vs;
    float *img;                         /* [max_batch*T, W] ln_vision output */
    qformer_config qf;
    qformer_weights qw;
    qformer_scratch qs;
    int n_proj;                         /* projections: dims[0] -> dims[1] -> ... */
    int dims[VISION_MAX_PROJ + 1];
    kern_weight proj[VISION_MAX_PROJ];  /* [dims[j+1], dims[j]] */
    const float *proj_b[VISION_MAX_PROJ];
    float *pbuf[VISION_MAX_PROJ];       /* [max_batch*Q, dims[j+1]], all but the last */
    float *emb_dev;                     /* device backends: [max_batch*Q, d_lm] before download */
    dev_tensor *uploaded;               /* device backends: the weights' backend copies */
};

static int load_proj(vision_model *vm, const manifest *m, const vision_src *src) {
    vm->n_proj = m->n_proj_dims - 1;
    if (vm->n_proj < 1 || vm->n_proj > VISION_MAX_PROJ)
        return err_set(TV_EFORMAT, "vision: proj_dims has %d entries (2..%d)", m->n_proj_dims,
                       VISION_MAX_PROJ + 1);
    if (m->proj_dims[0] != vm->qf.width)
        return err_set(TV_EFORMAT, "vision: proj_dims[0] = %d != qformer.width %d",
                       m->proj_dims[0], vm->qf.width);
    for (int j = 0; j <= vm->n_proj; j++) {
        if (m->proj_dims[j] < 1) return err_set(TV_EFORMAT, "vision: proj_dims[%d] < 1", j);
        vm->dims[j] = m->proj_dims[j];
    }
    for (int j = 0; j < vm->n_proj; j++) {
        char name[64];
        snprintf(name, sizeof name, "proj.%d.weight", j);
        int rc = vision_get_matrix(src, name, vm->dims[j + 1], vm->dims[j], &vm->proj[j]);
        if (rc < 0) return rc;
        snprintf(name, sizeof name, "proj.%d.bias", j);
        if ((rc = vision_get_vec(src, name, vm->dims[j + 1], &vm->proj_b[j])) < 0) return rc;
    }
    return TV_OK;
}

static int alloc_buffers(vision_model *vm) {
    int64_t rows = (int64_t)vm->max_batch * vm->vit.tokens;
    int64_t qrows = (int64_t)vm->max_batch * vm->qf.queries;
    kern_be *be = vm->be;
    int rc = vit_scratch_init_be(&vm->vs, be, &vm->vit, vm->max_batch, 0);
    if (rc < 0) return rc;
    if ((rc = qformer_scratch_init_be(&vm->qs, be, &vm->qf, vm->max_batch, vm->vit.tokens)) < 0)
        return rc;
    if ((rc = kern_alloc(be, (size_t)(rows * vm->vit.width) * sizeof(float),
                         (void **)&vm->img)) < 0)
        return err_wrap(rc, "vision: the ln_vision buffer");
    for (int j = 0; j + 1 < vm->n_proj; j++)
        if ((rc = kern_alloc(be, (size_t)(qrows * vm->dims[j + 1]) * sizeof(float),
                             (void **)&vm->pbuf[j])) < 0)
            return err_wrap(rc, "vision: projections");
    if (!kern_is_host(be) &&
        (rc = kern_alloc(be, (size_t)(qrows * vm->dims[vm->n_proj]) * sizeof(float),
                         (void **)&vm->emb_dev)) < 0)
        return err_wrap(rc, "vision: embeddings");
    return TV_OK;
}

int vision_load_src(const manifest *m, const vision_src *src, kern_be *be, int max_batch,
                    vision_model **out) {
    *out = NULL;
    if (max_batch < 1 || max_batch > 4096)
        return err_set(TV_EINVAL, "vision: max_batch %d outside 1..4096", max_batch);
    if (!be) return err_set(TV_EINVAL, "vision: NULL backend");
    vision_model *vm = tv_xcalloc(1, sizeof *vm);
    vm->be = be;
    vm->max_batch = max_batch;
    /* a device backend gets one upload of every tensor the loaders look up */
    dev_src ds = {.inner = src, .be = be};
    vision_src up = {dev_find, &ds};
    if (!kern_is_host(be)) src = &up;
    int rc = vit_config_from(&m->vision, &vm->vit);
    if (rc == 0) rc = qformer_config_from(m, &vm->qf);
    if (rc == 0) rc = vit_weights_load(&vm->vit, src, &vm->vw);
    if (rc == 0) rc = qformer_weights_load(&vm->qf, src, &vm->qw);
    if (rc == 0) rc = load_proj(vm, m, src);
    if (rc == 0) rc = alloc_buffers(vm);
    vm->uploaded = ds.list;
    if (rc < 0) {
        if (ds.failed) rc = err_set(TV_ENOMEM, "vision: uploading %s", ds.why);
        vision_free(vm);
        return rc;
    }
    *out = vm;
    return TV_OK;
}

static const tensor_view *find_in_file(void *user, const char *name) {
    return st_find(user, name);
}

int vision_load(const manifest *m, kern_be *be, int max_batch, vision_model **out) {
    *out = NULL;
    st_file *f;
    int rc = st_open(m->vision_path, &f);
    if (rc < 0) return err_wrap(rc, "vision");
    vision_src src = {find_in_file, f};
    if ((rc = vision_load_src(m, &src, be, max_batch, out)) < 0) {
        st_free(f);
        return err_wrap(rc, "%s", m->vision_path);
    }
    (*out)->file = f;
    return TV_OK;
}

void vision_free(vision_model *vm) {
    if (!vm) return;
    vit_weights_free(&vm->vw);
    vit_scratch_free(&vm->vs);
    qformer_weights_free(&vm->qw);
    qformer_scratch_free(&vm->qs);
    kern_release(vm->be, vm->img);
    for (int j = 0; j < VISION_MAX_PROJ; j++) kern_release(vm->be, vm->pbuf[j]);
    kern_release(vm->be, vm->emb_dev);
    dev_src_free(vm->be, vm->uploaded);
    st_free(vm->file);
    free(vm);
}

/* ============================================================================================
 * encode: pixels -> ViT -> ln_vision -> Q-Former -> projections
 * ========================================================================================== */

/* emb [B*Q, dims[n]] = proj_{n-1}( ... proj_0(q)), no activation between. */
static int run_projections(vision_model *vm, int B, float *emb) {
    int64_t rows = (int64_t)B * vm->qf.queries;
    const float *x = vm->qs.q;
    for (int j = 0; j < vm->n_proj; j++) {
        float *y = j + 1 < vm->n_proj ? vm->pbuf[j] : emb;
        int rc = kern_matmul(vm->be, x, rows, &vm->proj[j], vm->proj_b[j], y);
        if (rc < 0) return err_wrap(rc, "vision: projection %d", j);
        x = y;
    }
    return TV_OK;
}

int vision_encode(vision_model *vm, const float *pixels, int B, float *emb) {
    if (B < 1 || B > vm->max_batch)
        return err_set(TV_EINVAL, "vision: batch of %d images outside 1..%d", B, vm->max_batch);
    if (!pixels || !emb) return err_set(TV_EINVAL, "vision: NULL pixels or embeddings");
    float *out = vm->emb_dev ? vm->emb_dev : emb;
    int rc = vit_forward(vm->be, &vm->vit, &vm->vw, pixels, B, &vm->vs, vm->img);
    if (rc == 0) rc = qformer_forward(vm->be, &vm->qf, &vm->qw, vm->img, B, &vm->qs);
    if (rc == 0) rc = run_projections(vm, B, out);
    if (rc == 0 && vm->emb_dev)
        rc = kern_download(vm->be, emb, vm->emb_dev, (size_t)B * (size_t)vm->qf.queries *
                                                         (size_t)vision_dim(vm) * sizeof(float));
    return rc;
}

int vision_tokens(const vision_model *vm) { return vm->qf.queries; }
int vision_dim(const vision_model *vm) { return vm->dims[vm->n_proj]; }
int vision_image_size(const vision_model *vm) { return vm->vit.image_size; }
int vision_max_batch(const vision_model *vm) { return vm->max_batch; }

void vision_get_trace(const vision_model *vm, vision_trace *t) {
    memset(t, 0, sizeof *t);
    t->vit_out = vm->vs.x;
    t->ln_vision = vm->img;
    t->qformer_out = vm->qs.q;
    for (int j = 0; j + 1 < vm->n_proj; j++) t->proj[j] = vm->pbuf[j];
    t->tokens = vm->vit.tokens;
    t->width = vm->vit.width;
    t->queries = vm->qf.queries;
    t->qwidth = vm->qf.width;
}
