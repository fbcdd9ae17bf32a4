/* safetensors: goldens written by the Python package read back byte-exactly, sharded models,
 * the writer's output byte-identical to the package's, and a malformed corpus that must be
 * refused with a message (never a crash: run under ASan/UBSan too). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "mapfile.h"
#include "safetensors.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static char *slurp(const char *path, size_t *len) {
    char *s = NULL;
    *len = 0;
    int rc = mf_read_all(path, 1u << 24, &s, len);
    CHECK_MSG(rc == 0, "reading %s: %s", path, err_msg());
    return s;
}

/* An expected-tensor list as tools/goldens/safetensors.py writes it (<stem>.json + .bin). */
typedef struct {
    cJSON *root;
    char *bin;
    size_t bin_len;
} expected;

static void expected_load(expected *ex, const char *stem) {
    char rel[256];
    size_t len;
    snprintf(rel, sizeof rel, "safetensors/%s.json", stem);
    char *json = slurp(check_data(rel), &len);
    ex->root = json ? cJSON_Parse(json) : NULL;
    free(json);
    CHECK(ex->root != NULL);
    snprintf(rel, sizeof rel, "safetensors/%s.bin", stem);
    ex->bin = slurp(check_data(rel), &ex->bin_len);
}

static void expected_free(expected *ex) {
    cJSON_Delete(ex->root);
    free(ex->bin);
}

/* One expected entry unpacked. */
typedef struct {
    const char *name, *dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    const void *bytes;
    size_t nbytes;
} exp_tensor;

static int exp_get(const expected *ex, const cJSON *e, exp_tensor *t) {
    t->name = cJSON_GetObjectItem(e, "name")->valuestring;
    t->dtype = cJSON_GetObjectItem(e, "dtype")->valuestring;
    const cJSON *shape = cJSON_GetObjectItem(e, "shape");
    t->ndim = 0;
    for (const cJSON *d = shape->child; d && t->ndim < TENSOR_MAX_DIMS; d = d->next)
        t->shape[t->ndim++] = (int64_t)d->valuedouble;
    size_t off = (size_t)cJSON_GetObjectItem(e, "offset")->valuedouble;
    t->nbytes = (size_t)cJSON_GetObjectItem(e, "nbytes")->valuedouble;
    t->bytes = ex->bin + off;
    return off + t->nbytes <= ex->bin_len;
}

/* v must be exactly the expected tensor: name, dtype, shape, bytes. */
static void check_tensor(const tensor_view *v, const exp_tensor *t) {
    CHECK_MSG(v != NULL, "tensor '%s' missing", t->name);
    if (!v) return;
    CHECK_EQ_STR(v->name, t->name);
    CHECK_EQ_STR(dtype_name(v->dtype), t->dtype);
    CHECK_EQ_INT(v->ndim, t->ndim);
    for (int d = 0; d < t->ndim && d < v->ndim; d++) CHECK_EQ_INT(v->shape[d], t->shape[d]);
    CHECK_EQ_INT(v->nbytes, t->nbytes);
    CHECK_MSG(v->nbytes == t->nbytes && memcmp(v->data, t->bytes, t->nbytes) == 0,
              "bytes of '%s' differ", t->name);
}

static int files_equal(const char *a, const char *b) {
    size_t la, lb;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    int eq = x && y && la == lb && memcmp(x, y, la) == 0;
    if (!eq && x && y) {
        size_t i = 0;
        while (i < la && i < lb && x[i] == y[i]) i++;
        fprintf(stderr, "%s vs %s: sizes %zu/%zu, first difference at byte %zu\n", a, b, la, lb, i);
    }
    free(x);
    free(y);
    return eq;
}

static char tmpdir[] = "/tmp/tv_test_stXXXXXX";

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* ---- reading goldens ----------------------------------------------------------------------- */

static void test_read_all_dtypes(void) {
    expected ex;
    expected_load(&ex, "all_dtypes");
    st_file *f = NULL;
    CHECK_OK(st_open(check_data("safetensors/all_dtypes.safetensors"), &f));
    if (!f || !ex.root) return;
    const cJSON *list = cJSON_GetObjectItem(ex.root, "tensors");
    CHECK_EQ_INT(st_count(f), cJSON_GetArraySize(list));
    for (const cJSON *e = list->child; e; e = e->next) {
        exp_tensor t;
        CHECK(exp_get(&ex, e, &t));
        check_tensor(st_find(f, t.name), &t);
        const tensor_view *v = NULL;
        CHECK_OK(st_get(f, t.name, &v));
    }
    /* Iteration is header order, which the package writes in data order. */
    for (size_t i = 1; i < st_count(f); i++)
        CHECK((const char *)st_tensor_at(f, i)->data >= (const char *)st_tensor_at(f, i - 1)->data);
    const cJSON *meta = cJSON_GetObjectItem(ex.root, "metadata");
    CHECK_EQ_INT(st_meta_count(f), cJSON_GetArraySize(meta));
    for (const cJSON *m = meta->child; m; m = m->next) CHECK_EQ_STR(st_meta_get(f, m->string), m->valuestring);
    CHECK_EQ_STR(st_meta_key(f, 0), "note");
    CHECK(st_find(f, "nope") == NULL);
    const tensor_view *v = NULL;
    CHECK_EQ_INT(st_get(f, "nope", &v), TV_ENOTFOUND);
    CHECK(strstr(err_msg(), "nope") != NULL);
    size_t hlen = 0;
    const char *h = st_header(f, &hlen);
    CHECK(hlen % 8 == 0 && h[0] == '{');
    /* A value through the dtype conversion, as a model would use it. */
    const tensor_view *sp = st_find(f, "f32.special");
    if (sp) {
        float vals[7];
        dtype_to_f32(sp->dtype, sp->data, vals, 7);
        CHECK(vals[0] == 0.0f && signbit(vals[1]) && isinf(vals[2]) && isnan(vals[4]));
    }
    st_free(f);
    st_free(NULL);
    expected_free(&ex);
}

static void test_read_small(void) {
    st_file *f = NULL;
    CHECK_OK(st_open(check_data("safetensors/empty.safetensors"), &f));
    if (f) CHECK_EQ_INT(st_count(f) + st_meta_count(f), 0);
    st_free(f);
    CHECK_OK(st_open(check_data("safetensors/multimeta.safetensors"), &f));
    if (f) {
        CHECK_EQ_INT(st_meta_count(f), 4);
        CHECK_EQ_STR(st_meta_get(f, "a"), "1");
        CHECK_EQ_STR(st_meta_get(f, "b"), "2");
        CHECK_EQ_STR(st_meta_get(f, "empty"), "");
        CHECK_EQ_STR(st_meta_get(f, "format"), "pt");
        CHECK(st_meta_get(f, "zz") == NULL);
        CHECK_EQ_INT(st_count(f), 1);
    }
    st_free(f);
    CHECK_FAILS(st_open("/nonexistent/x.safetensors", &f));
    CHECK(f == NULL);
}

/* ---- models -------------------------------------------------------------------------------- */

static void check_sharded(const st_model *m) {
    expected ex;
    expected_load(&ex, "sharded");
    if (!ex.root) return;
    const cJSON *list = cJSON_GetObjectItem(ex.root, "tensors");
    CHECK_EQ_INT(st_model_count(m), cJSON_GetArraySize(list));
    CHECK_EQ_INT(st_model_nfiles(m), 3);
    for (const cJSON *e = list->child; e; e = e->next) {
        exp_tensor t;
        CHECK(exp_get(&ex, e, &t));
        check_tensor(st_model_find(m, t.name), &t);
    }
    CHECK_EQ_STR(st_model_meta_get(m, "total_size"), "5536");
    CHECK_EQ_STR(st_model_meta_get(m, "format"), "pt");
    /* Each tensor is found in the shard the index names. */
    const tensor_view *v = st_model_find(m, "model.embed.weight");
    const st_file *last = st_model_file(m, 2);
    CHECK(strstr(st_path(last), "model-00003-of-00003") != NULL);
    CHECK(v && st_find(last, "model.embed.weight") == v);
    CHECK_EQ_INT(st_model_get(m, "model.layers.9.attn.bias", &v), TV_ENOTFOUND);
    expected_free(&ex);
}

static void test_models(void) {
    st_model *m = NULL;
    CHECK_OK(st_model_open(check_data("safetensors/sharded"), &m));
    if (m) check_sharded(m);
    st_model_free(m);
    CHECK_OK(st_model_open(check_data("safetensors/sharded/model.safetensors.index.json"), &m));
    if (m) check_sharded(m);
    st_model_free(m);
    st_model_free(NULL);

    static const char *single[] = {"safetensors/single", "safetensors/single/model.safetensors"};
    for (int i = 0; i < 2; i++) {
        CHECK_OK(st_model_open(check_data(single[i]), &m));
        if (!m) continue;
        CHECK_EQ_INT(st_model_count(m), 1);
        CHECK_EQ_INT(st_model_nfiles(m), 1);
        CHECK_EQ_STR(st_model_meta_get(m, "format"), "pt");
        const tensor_view *v = NULL;
        CHECK_OK(st_model_get(m, "only", &v));
        if (v) {
            int64_t dims[2] = {2, 3};
            CHECK_OK(tensor_expect_shape(v, 2, dims));
            const int32_t *x = v->data;
            CHECK(v->dtype == DT_I32 && x[0] == 0 && x[5] == 5);
        }
        st_model_free(m);
    }
    CHECK_EQ_INT(st_model_open(check_data("safetensors"), &m), TV_ENOTFOUND);  /* neither file */
    CHECK(m == NULL);
}

/* ---- writer -------------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *src;
    size_t size;
    int calls;
} fill_ctx;

static int fill_copy(void *user, void *dst, size_t offset, size_t len) {
    fill_ctx *c = user;
    c->calls++;
    if (offset + len > c->size) return err_set(TV_EINTERNAL, "fill out of range");
    memcpy(dst, c->src + offset, len);
    return 0;
}

static int fill_fail(void *user, void *dst, size_t offset, size_t len) {
    return err_set(TV_EIO, "source went away");
}

static int dtype_of(const char *s) {
    dtype_id dt = DT_F32;
    dtype_parse(s, &dt);
    return dt;
}

/* Adds the expected tensors in the JSON's order (not the file's), every third via a callback
 * producing 7-byte chunks. */
static void add_expected(st_writer *w, const expected *ex, fill_ctx *ctx, size_t nctx) {
    size_t k = 0;
    for (const cJSON *e = cJSON_GetObjectItem(ex->root, "tensors")->child; e; e = e->next, k++) {
        exp_tensor t;
        exp_get(ex, e, &t);
        if (k % 3 == 2 && k < nctx) {
            ctx[k] = (fill_ctx){t.bytes, t.nbytes, 0};
            CHECK_OK(st_writer_add_fn(w, t.name, dtype_of(t.dtype), t.ndim, t.shape, fill_copy, &ctx[k]));
        } else {
            CHECK_OK(st_writer_add(w, t.name, dtype_of(t.dtype), t.ndim, t.shape, t.bytes));
        }
    }
}

static void test_writer_identical(void) {
    expected ex;
    expected_load(&ex, "all_dtypes");
    if (!ex.root) return;
    st_writer *w = st_writer_new();
    st_writer_set_chunk(w, 7);
    fill_ctx ctx[64] = {{0}};
    add_expected(w, &ex, ctx, 64);
    CHECK_OK(st_writer_set_meta(w, "note", "placeholder, replaced below"));
    for (const cJSON *m = cJSON_GetObjectItem(ex.root, "metadata")->child; m; m = m->next)
        CHECK_OK(st_writer_set_meta(w, m->string, m->valuestring));
    const char *out = tmp_path("all_dtypes.safetensors");
    CHECK_OK(st_writer_write(w, out));
    CHECK(files_equal(out, check_data("safetensors/all_dtypes.safetensors")));
    CHECK(ctx[2].calls == (int)((ctx[2].size + 6) / 7));   /* chunked as asked */
    st_writer_free(w);
    expected_free(&ex);

    /* Several metadata keys, set out of order: we sort them (the golden was sorted too). */
    w = st_writer_new();
    st_file *src = NULL;
    CHECK_OK(st_open(check_data("safetensors/multimeta.safetensors"), &src));
    if (src) {
        const tensor_view *x = st_tensor_at(src, 0);
        CHECK_OK(st_writer_add(w, x->name, x->dtype, x->ndim, x->shape, x->data));
        static const char *kv[] = {"format", "pt", "b", "2", "empty", "", "a", "1"};
        for (int i = 0; i < 8; i += 2) CHECK_OK(st_writer_set_meta(w, kv[i], kv[i + 1]));
        CHECK_OK(st_writer_write(w, tmp_path("multimeta.safetensors")));
        CHECK(files_equal(tmp_path("multimeta.safetensors"),
                          check_data("safetensors/multimeta.safetensors")));
    }
    st_free(src);
    st_writer_free(w);

    /* No metadata; and no tensors at all. */
    w = st_writer_new();
    CHECK_OK(st_open(check_data("safetensors/nometa.safetensors"), &src));
    for (size_t i = 0; src && i < st_count(src); i++) {
        const tensor_view *x = st_tensor_at(src, st_count(src) - 1 - i);
        CHECK_OK(st_writer_add(w, x->name, x->dtype, x->ndim, x->shape, x->data));
    }
    CHECK_OK(st_writer_write(w, tmp_path("nometa.safetensors")));
    CHECK(files_equal(tmp_path("nometa.safetensors"), check_data("safetensors/nometa.safetensors")));
    st_free(src);
    st_writer_free(w);
    w = st_writer_new();
    CHECK_OK(st_writer_write(w, tmp_path("empty.safetensors")));
    CHECK(files_equal(tmp_path("empty.safetensors"), check_data("safetensors/empty.safetensors")));
    st_writer_free(w);
    st_writer_free(NULL);
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static void test_writer_errors(void) {
    st_writer *w = st_writer_new();
    int64_t shape[2] = {2, 2}, neg[1] = {-1}, huge[3] = {1LL << 40, 1LL << 40, 1LL << 40};
    float data[4] = {1, 2, 3, 4};
    CHECK_OK(st_writer_add(w, "w", DT_F32, 2, shape, data));
    CHECK_FAILS(st_writer_add(w, "w", DT_F32, 2, shape, data));
    CHECK_FAILS(st_writer_add(w, "__metadata__", DT_F32, 2, shape, data));
    CHECK_FAILS(st_writer_add(w, "", DT_F32, 2, shape, data));
    CHECK_FAILS(st_writer_add(w, "bad\xc3", DT_F32, 2, shape, data));
    CHECK_FAILS(st_writer_add(w, "n", DT_F32, 1, neg, data));
    CHECK_FAILS(st_writer_add(w, "h", DT_F32, 3, huge, data));
    CHECK_FAILS(st_writer_add(w, "r", DT_F32, 9, huge, data));
    CHECK_FAILS(st_writer_add(w, "d", DT_COUNT, 2, shape, data));
    CHECK_FAILS(st_writer_add(w, "z", DT_F32, 2, shape, NULL));
    CHECK_FAILS(st_writer_set_meta(w, "k", "\xff"));
    /* Round trip through our own reader. */
    const char *p = tmp_path("rt.safetensors");
    CHECK_OK(st_writer_write(w, p));
    st_file *f = NULL;
    CHECK_OK(st_open(p, &f));
    if (f) {
        const tensor_view *v = st_find(f, "w");
        CHECK(v && v->dtype == DT_F32 && v->ndim == 2 && memcmp(v->data, data, 16) == 0);
    }
    st_free(f);
    /* A failing producer: nothing at the target, no temp file left behind. */
    int before = count_dir_entries(tmpdir);
    CHECK_OK(st_writer_add_fn(w, "late", DT_I8, 2, shape, fill_fail, NULL));
    CHECK_FAILS(st_writer_write(w, tmp_path("never.safetensors")));
    CHECK(strstr(err_msg(), "source went away") != NULL);
    CHECK(access(tmp_path("never.safetensors"), F_OK) != 0);
    CHECK_EQ_INT(count_dir_entries(tmpdir), before);
    CHECK_EQ_INT(st_writer_write(w, "/nonexistent/dir/x.safetensors"), TV_EIO);
    st_writer_free(w);
}

/* ---- malformed corpus ---------------------------------------------------------------------- */

/* Opens an exact-size heap copy (so ASan sees any over-read) and expects a refusal. */
static int open_copy(const void *bytes, size_t n) {
    unsigned char *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, bytes, n);
    st_file *f = NULL;
    err_clear();
    int rc = st_open_buffer(copy, n, "corpus", &f);
    st_free(f);
    free(copy);
    return rc;
}

#define REFUSED(rc)                                                                       \
    CHECK_MSG(((rc) == TV_EFORMAT || (rc) == TV_EIO) && err_msg()[0], "rc %d msg \"%s\"", \
              (rc), err_msg())

/* A file image: 8-byte length of json, json, then ndata zero bytes. hlen overrides the length
 * field when non-zero. */
static int open_header(const char *json, size_t ndata, uint64_t hlen) {
    size_t jl = strlen(json), n = 8 + jl + ndata;
    unsigned char *buf = calloc(1, n);
    uint64_t len = hlen ? hlen : jl;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, json, jl);
    int rc = open_copy(buf, n);
    free(buf);
    return rc;
}

static void test_malformed(void) {
    size_t n = 0;
    char *good = slurp(check_data("safetensors/nometa.safetensors"), &n);
    if (!good) return;
    CHECK_OK(open_copy(good, n));
    int all_refused = 1;
    for (size_t len = 0; len < n; len++) {
        int rc = open_copy(good, len);
        if (!((rc == TV_EFORMAT || rc == TV_EIO) && err_msg()[0])) {
            fprintf(stderr, "truncation at %zu: rc %d \"%s\"\n", len, rc, err_msg());
            all_refused = 0;
        }
    }
    CHECK(all_refused);
    /* Truncated on disk too, through the mmap path. */
    for (size_t len = 0; len < n; len += 37) {
        const char *p = tmp_path("trunc.safetensors");
        FILE *fp = fopen(p, "wb");
        if (len) fwrite(good, 1, len, fp);
        fclose(fp);
        st_file *f = NULL;
        int rc = st_open(p, &f);
        REFUSED(rc);
        CHECK(f == NULL);
    }
    free(good);

    /* Positive controls: the builder itself makes acceptable files. */
    CHECK_OK(open_header("{}", 0, 0));
    CHECK_OK(open_header("{}      ", 0, 0));
    CHECK_OK(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                         "\"e\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[5,5]}}", 16, 0));

    REFUSED(open_header("{}", 0, 1000));                 /* header longer than the file */
    REFUSED(open_header("{}", 0, 1ull << 62));           /* absurd */
    REFUSED(open_header("{}", 0, UINT64_MAX));
    REFUSED(open_header("{}", 8, 200u * 1000 * 1000));   /* over the cap */
    {   /* length 0 (the builder treats 0 as "use the real length") */
        unsigned char zero[16] = {0};
        REFUSED(open_copy(zero, 16));
    }
    static const char *bad[] = {
        "{\"a\":",                                                    /* not JSON */
        "hello, world",
        "{} x",                                                       /* junk after */
        "[1, 2]",                                                     /* array */
        "\"str\"",
        "{\"a\":[]}",                                                 /* entry not an object */
        "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}",             /* no dtype */
        "{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F8_E4M3X\",\"shape\":[1],\"data_offsets\":[0,1]}}",
        "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}",          /* no shape */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",  /* numel*size */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,0]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648,4],\"data_offsets\":[0,0]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",  /* past the end */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}",   /* begin > end */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551620]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"       /* overlap */
        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"       /* same bytes */
        "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"       /* duplicate */
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
        "{\"__metadata__\":{\"k\":1}}",                                      /* meta not str */
        "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}",
        "{\"__metadata__\":[\"k\"]}",
        "{\"__metadata__\":\"k\"}",
        "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}",
        "{\"__metadata__\":{},\"__metadata__\":{}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = open_header(bad[i], 16, 0);
        CHECK_MSG((rc == TV_EFORMAT || rc == TV_EIO) && err_msg()[0], "case %zu (%s): rc %d \"%s\"",
                  i, bad[i], rc, err_msg());
    }
    /* Messages say what is wrong. */
    open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16, 0);
    CHECK(strstr(err_msg(), "'a'") && strstr(err_msg(), "need 12"));
    open_header("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 16, 0);
    CHECK(strstr(err_msg(), "'x' appears twice") != NULL);
}

/* Every header byte replaced by a few troublesome values: never a crash, and whatever is
 * accepted keeps every tensor inside the buffer, non-overlapping. */
static void test_mutations(void) {
    size_t n = 0;
    char *good = slurp(check_data("safetensors/nometa.safetensors"), &n);
    if (!good) return;
    static const unsigned char vals[] = {0, '"', '9', '0', '-', '[', ']', '{', '}', ',', 0xff};
    int bad = 0, accepted = 0;
    unsigned char *copy = malloc(n);
    for (size_t pos = 0; pos < n && pos < 8 + 300; pos++) {
        for (size_t k = 0; k < sizeof vals; k++) {
            memcpy(copy, good, n);
            copy[pos] = vals[k];
            st_file *f = NULL;
            err_clear();
            int rc = st_open_buffer(copy, n, "mutant", &f);
            if (rc && !err_msg()[0]) bad++;
            if (rc) continue;
            accepted++;
            for (size_t i = 0; i < st_count(f); i++) {
                const tensor_view *t = st_tensor_at(f, i);
                const unsigned char *d = t->data;
                if (d < copy || d + t->nbytes > copy + n) bad++;
            }
            st_free(f);
        }
    }
    free(copy);
    free(good);
    CHECK_EQ_INT(bad, 0);
    CHECK(accepted > 0);   /* e.g. a digit inside a name still parses */
}

/* Many tensors and metadata keys: every lookup through the hash tables finds its own entry. */
static void test_many(void) {
    enum { N = 5000 };
    size_t cap = (size_t)N * 160 + 64, len = 0;
    char *json = malloc(cap);
    len += (size_t)snprintf(json + len, cap - len, "{\"__metadata__\":{");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(json + len, cap - len, "%s\"key%d\":\"v%d\"", i ? "," : "", i, i);
    len += (size_t)snprintf(json + len, cap - len, "}");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(json + len, cap - len,
                                ",\"layer.%d.w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%d,%d]}",
                                i, i, i + 1);
    snprintf(json + len, cap - len, "}");
    len = strlen(json);
    unsigned char *buf = malloc(8 + len + N);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)len >> (8 * i));
    memcpy(buf + 8, json, len);
    for (int i = 0; i < N; i++) buf[8 + len + i] = (unsigned char)(i * 7);
    st_file *f = NULL;
    CHECK_OK(st_open_buffer(buf, 8 + len + N, "many", &f));
    int bad = 0;
    for (int i = 0; f && i < N; i++) {
        char name[32], val[32];
        snprintf(name, sizeof name, "layer.%d.w", i);
        const tensor_view *t = st_find(f, name);
        if (!t || *(const unsigned char *)t->data != (unsigned char)(i * 7)) bad++;
        snprintf(name, sizeof name, "key%d", i);
        snprintf(val, sizeof val, "v%d", i);
        const char *v = st_meta_get(f, name);
        if (!v || strcmp(v, val) != 0) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(f && st_find(f, "layer.5000.w") == NULL && st_meta_get(f, "key5000") == NULL);
    st_free(f);
    free(buf);
    free(json);
}

/* Index files that lie: missing shard, tensor not in its shard, duplicate names, escapes. */
static void test_bad_index(void) {
    st_writer *w = st_writer_new();
    float data[2] = {1, 2};
    int64_t shape[1] = {2};
    CHECK_OK(st_writer_add(w, "a", DT_F32, 1, shape, data));
    CHECK_OK(st_writer_write(w, tmp_path("shard1.safetensors")));
    st_writer_free(w);
    static const char *bad[] = {
        "{\"weight_map\":{\"a\":\"missing.safetensors\"}}",
        "{\"weight_map\":{\"a\":\"shard1.safetensors\",\"b\":\"shard1.safetensors\"}}",
        "{\"weight_map\":{\"a\":\"shard1.safetensors\",\"a\":\"shard1.safetensors\"}}",
        "{\"weight_map\":{\"a\":\"../shard1.safetensors\"}}",
        "{\"weight_map\":{\"a\":\"/etc/passwd\"}}",
        "{\"weight_map\":{\"a\":3}}",
        "{\"weight_map\":[\"a\"]}",
        "{\"metadata\":{}}",
        "{\"metadata\":[],\"weight_map\":{}}",
        "[]",
        "{\"weight_map\":{\"a\":\"shard1.safetensors\"}",
        "{\"weight_map\":{\"a\":\"trunc.safetensors\"}}",           /* a malformed shard */
    };
    const char *index = tmp_path("model.safetensors.index.json");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(index, bad[i]);
        st_model *m = NULL;
        err_clear();
        int rc = st_model_open(index, &m);
        CHECK_MSG((rc == TV_EFORMAT || rc == TV_EIO) && err_msg()[0] && !m,
                  "index case %zu (%s): rc %d \"%s\"", i, bad[i], rc, err_msg());
        st_model_free(m);
    }
    write_text(index, "{\"metadata\":{\"total_size\":8,\"x\":[1]},"
                      "\"weight_map\":{\"a\":\"shard1.safetensors\"}}");
    st_model *m = NULL;
    CHECK_OK(st_model_open(tmpdir, &m));   /* the directory prefers the index */
    if (m) {
        CHECK_EQ_INT(st_model_count(m), 1);
        CHECK_EQ_STR(st_model_meta_get(m, "total_size"), "8");
        CHECK(st_model_meta_get(m, "x") == NULL);
    }
    st_model_free(m);
}

static void cleanup_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(tmp_path(e->d_name));
    if (d) closedir(d);
    rmdir(tmpdir);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_read_all_dtypes();
    test_read_small();
    test_models();
    test_writer_identical();
    test_writer_errors();
    test_malformed();
    test_mutations();
    test_many();
    test_bad_index();
    cleanup_tmpdir();
    return check_finish("test_safetensors");
}
