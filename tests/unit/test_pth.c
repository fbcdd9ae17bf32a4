/* pth + zipread: torch.save goldens (tools/goldens/pth.py) read back byte for byte, hostile and
 * legacy files refused, and a malformed corpus (truncations, corrupted zip fields, mutated
 * pickles, hand-built pickles with bad views) that must be refused cleanly or parsed, never
 * crash (run under ASan/UBSan). */
#include <cjson/cJSON.h>
#include <stdint.h>

#include "check.h"
#include "mapfile.h"
#include "pth.h"
#include "zipread.h"

/* ---- helpers ---- */

static unsigned char *slurp(const char *rel, size_t *len) {
    char *buf = NULL;
    int rc = mf_read_all(check_data(rel), (size_t)64 << 20, &buf, len);
    CHECK_OK(rc);
    if (rc) exit(1);
    return (unsigned char *)buf;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) { /* xorshift64*: fixed seed, so every run mutates the same bytes */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* Opens a private exact-size copy (so ASan sees any overread); returns the status. */
static int open_copy(const unsigned char *buf, size_t len, int expect_ok) {
    unsigned char *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    pth_file *p = NULL;
    err_clear();
    int rc = pth_open_mem(copy, len, "mutant", &p);
    if (rc == 0) {
        /* Touch every byte of every view: a bad pointer shows up here under ASan. */
        unsigned sum = 0;
        for (size_t i = 0; i < pth_count(p); i++) {
            const tensor_view *t = pth_get(p, i);
            for (size_t k = 0; k < t->nbytes; k++) sum += ((const unsigned char *)t->data)[k];
        }
        (void)sum;
    } else {
        CHECK_MSG(rc < 0 && err_msg()[0], "failure without a message (rc %d)", rc);
    }
    if (expect_ok >= 0) CHECK_MSG((rc == 0) == expect_ok, "len %zu: rc %d: %s", len, rc, err_msg());
    pth_free(p);
    free(copy);
    return rc;
}

/* ---- goldens ---- */

static void check_file(const char *fname, const cJSON *exp, const unsigned char *blob,
                       size_t bloblen) {
    char rel[256];
    snprintf(rel, sizeof rel, "pth/%s", fname);
    pth_file *p = NULL;
    int rc = pth_open(check_data(rel), &p);
    CHECK_MSG(rc == 0, "%s: %s", fname, err_msg());
    if (rc) return;
    size_t maplen;
    const unsigned char *base = pth_base(p, &maplen);
    const cJSON *tensors = cJSON_GetObjectItem(exp, "tensors");
    CHECK_EQ_INT(pth_count(p), cJSON_GetArraySize(tensors));
    int i = 0, torch_written = strcmp(fname, "zip64.pth") != 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tensors) {
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        const tensor_view *v = pth_find(p, name);
        CHECK_MSG(v != NULL, "%s: tensor '%s' missing", fname, name);
        if (!v) continue;
        const tensor_view *vi = pth_get(p, (size_t)i++);
        CHECK_MSG(vi == v, "%s: '%s' out of order", fname, name); /* checkpoint order kept */
        CHECK_EQ_STR(dtype_name(v->dtype), cJSON_GetObjectItem(t, "dtype")->valuestring);
        const cJSON *shape = cJSON_GetObjectItem(t, "shape");
        CHECK_EQ_INT(v->ndim, cJSON_GetArraySize(shape));
        for (int d = 0; d < v->ndim && d < cJSON_GetArraySize(shape); d++)
            CHECK_EQ_INT(v->shape[d], cJSON_GetArrayItem(shape, d)->valuedouble);
        size_t off = (size_t)cJSON_GetObjectItem(t, "offset")->valuedouble;
        size_t nb = (size_t)cJSON_GetObjectItem(t, "nbytes")->valuedouble;
        CHECK_EQ_INT(v->nbytes, nb);
        CHECK(off + nb <= bloblen);
        if (v->nbytes == nb && off + nb <= bloblen)
            CHECK_MSG(nb == 0 || memcmp(v->data, blob + off, nb) == 0, "%s: '%s' bytes differ",
                      fname, name);
        const unsigned char *d = v->data;
        int inside = d >= base && d + v->nbytes <= base + maplen;
        int contig = cJSON_IsTrue(cJSON_GetObjectItem(t, "contiguous"));
        if (!contig) CHECK_MSG(!inside, "%s: strided '%s' not gathered", fname, name);
        else if (torch_written) CHECK_MSG(inside, "%s: '%s' not zero-copy", fname, name);
        if (nb) CHECK_MSG((uintptr_t)d % dtype_size(v->dtype) == 0, "%s: '%s' misaligned",
                          fname, name);
    }
    const cJSON *kv;
    cJSON_ArrayForEach(kv, cJSON_GetObjectItem(exp, "ints")) {
        int64_t x = 0;
        CHECK_OK(pth_get_int(p, kv->string, &x));
        CHECK_EQ_INT(x, kv->valuedouble);
    }
    cJSON_ArrayForEach(kv, cJSON_GetObjectItem(exp, "floats")) {
        double x = 0;
        CHECK_OK(pth_get_float(p, kv->string, &x));
        CHECK_NEAR(x, kv->valuedouble, 0);
    }
    cJSON_ArrayForEach(kv, cJSON_GetObjectItem(exp, "strs")) {
        const char *s = NULL;
        CHECK_OK(pth_get_str(p, kv->string, &s));
        CHECK_EQ_STR(s, kv->valuestring);
    }
    pth_free(p);
}

static void test_goldens(void) {
    size_t jlen, blen;
    char *json = (char *)slurp("pth/expected.json", &jlen);
    unsigned char *blob = slurp("pth/expected.bin", &blen);
    cJSON *root = cJSON_Parse(json);
    CHECK(root != NULL);
    const cJSON *f;
    int files = 0;
    cJSON_ArrayForEach(f, root) {
        check_file(f->string, f, blob, blen);
        files++;
    }
    CHECK_EQ_INT(files, 4);
    cJSON_Delete(root);
    free(json);
    free(blob);
}

/* Names, scalar leaves and lookups on the training-style checkpoint. */
static void test_nested(void) {
    pth_file *p = NULL;
    CHECK_OK(pth_open(check_data("pth/nested.pth"), &p));
    if (!p) return;
    CHECK_EQ_STR(pth_prefix(p), "nested"); /* torch uses the file's stem, not "archive" */
    const tensor_view *t = pth_find(p, "model.deep.nest.leaf");
    CHECK(t && t->dtype == DT_I64 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    if (t) CHECK_EQ_INT(((const int64_t *)t->data)[5], 5);
    CHECK(pth_find(p, "optimizer.state.0.exp_avg") != NULL); /* int dict keys */
    t = pth_find(p, "model.scalar");
    CHECK(t && t->ndim == 0 && t->nbytes == 4 && *(const float *)t->data == 2.5f);
    t = pth_find(p, "model.empty");
    CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->nbytes == 0);
    /* Shared storage: shared_mid points 5 floats into shared_all, both zero-copy. */
    const tensor_view *all = pth_find(p, "model.shared_all"), *mid = pth_find(p, "model.shared_mid");
    CHECK(all && mid && (const float *)mid->data == (const float *)all->data + 5);
    int64_t v = 0;
    CHECK_OK(pth_get_int(p, "epoch", &v));
    CHECK_EQ_INT(v, 3);
    CHECK_OK(pth_get_int(p, "config.big", &v));
    CHECK_EQ_INT(v, 1099511627776ll);
    CHECK_OK(pth_get_int(p, "config.neg", &v));
    CHECK_EQ_INT(v, -7);
    double d = 0;
    CHECK_OK(pth_get_float(p, "epoch", &d)); /* an int reads as a float too */
    CHECK_NEAR(d, 3, 0);
    CHECK_EQ_INT(pth_get_int(p, "config.lr", &v), TV_EINVAL);
    CHECK(strstr(err_msg(), "config.lr") != NULL);
    CHECK_EQ_INT(pth_get_int(p, "nope", &v), TV_ENOTFOUND);
    CHECK_EQ_INT(pth_get_int(p, "config.none", &v), TV_ENOTFOUND); /* None is not a value */
    CHECK(pth_find(p, "epoch") == NULL);
    CHECK(pth_find(p, "model") == NULL);
    CHECK(pth_get(p, pth_count(p)) == NULL);
    pth_free(p);
    pth_free(NULL);
    CHECK_EQ_INT(pth_open(check_data("pth/does-not-exist.pth"), &p), TV_EIO);
}

/* Refused with a code and a message naming the reason. */
static void expect_refused(const char *rel, int code, const char *needle) {
    pth_file *p = NULL;
    err_clear();
    int rc = pth_open(check_data(rel), &p);
    CHECK_MSG(rc == code, "%s: rc %d, want %d (%s)", rel, rc, code, err_msg());
    CHECK_MSG(strstr(err_msg(), needle) != NULL, "%s: message \"%s\" lacks \"%s\"", rel,
              err_msg(), needle);
    CHECK(p == NULL);
}

static void test_refused(void) {
    expect_refused("pth/evil_system.pth", TV_EUNSUPPORTED, "'posix.system'");
    expect_refused("pth/evil_eval.pth", TV_EUNSUPPORTED, "'__builtin__.eval'");
    expect_refused("pth/evil_module.pth", TV_EUNSUPPORTED, "torch.nn.modules.container.Sequential");
    expect_refused("pth/legacy.pth", TV_EUNSUPPORTED, "re-save");
    expect_refused("pth/deflated.pth", TV_EUNSUPPORTED, "compressed");
    expect_refused("pth/expected.json", TV_EFORMAT, "end-of-central-directory");
}

/* ---- hand-built archives ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put8(buf *b, unsigned v) { unsigned char c = (unsigned char)v; put(b, &c, 1); }
static void put16(buf *b, unsigned v) { put8(b, v & 255); put8(b, v >> 8); }
static void put32(buf *b, uint32_t v) { put16(b, v & 0xffff); put16(b, v >> 16); }

/* Pickle pieces. */
static void pk_str(buf *b, const char *s) { put8(b, 'X'); put32(b, (uint32_t)strlen(s)); put(b, s, strlen(s)); }
static void pk_global(buf *b, const char *m, const char *n) {
    put8(b, 'c'); put(b, m, strlen(m)); put8(b, '\n'); put(b, n, strlen(n)); put8(b, '\n');
}
static void pk_int(buf *b, int64_t v) { /* LONG1 with 8 bytes covers every int64 */
    put8(b, 0x8a); put8(b, 8);
    for (int i = 0; i < 8; i++) put8(b, (unsigned)((uint64_t)v >> (8 * i)) & 255);
}

/* {'x': _rebuild_tensor_v2(storage('0', FloatStorage, numel), off, sizes, strides, False, {})} */
static void pk_tensor_dict(buf *b, int64_t numel, int64_t off, int nd, const int64_t *sz,
                           const int64_t *st) {
    put8(b, 0x80); put8(b, 2); put8(b, '}'); pk_str(b, "x");
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    put8(b, '(');
    put8(b, '('); pk_str(b, "storage"); pk_global(b, "torch", "FloatStorage"); pk_str(b, "0");
    pk_str(b, "cpu"); pk_int(b, numel); put8(b, 't'); put8(b, 'Q');
    pk_int(b, off);
    put8(b, '('); for (int i = 0; i < nd; i++) pk_int(b, sz[i]); put8(b, 't');
    put8(b, '('); for (int i = 0; i < nd; i++) pk_int(b, st[i]); put8(b, 't');
    put8(b, 0x89); pk_global(b, "collections", "OrderedDict"); put8(b, ')'); put8(b, 'R');
    put8(b, 't'); put8(b, 'R'); put8(b, 's'); put8(b, '.');
}

/* A stored zip of "a/data.pkl" = pkl, "a/data/0" = storage, "a/byteorder" = order. */
static buf make_zip(const buf *pkl, const void *storage, size_t slen, const char *order) {
    const char *names[3] = {"a/data.pkl", "a/data/0", "a/byteorder"};
    const void *datas[3] = {pkl->p, storage, order};
    size_t lens[3] = {pkl->n, slen, order ? strlen(order) : 0};
    uint32_t offs[3];
    int n = order ? 3 : 2;
    buf z = {0}, cd = {0};
    for (int i = 0; i < n; i++) {
        offs[i] = (uint32_t)z.n;
        put32(&z, 0x04034b50); put16(&z, 20); put16(&z, 0); put16(&z, 0); put32(&z, 0);
        put32(&z, 0); put32(&z, (uint32_t)lens[i]); put32(&z, (uint32_t)lens[i]);
        put16(&z, (unsigned)strlen(names[i])); put16(&z, 0);
        put(&z, names[i], strlen(names[i]));
        put(&z, datas[i], lens[i]);
    }
    for (int i = 0; i < n; i++) {
        put32(&cd, 0x02014b50); put16(&cd, 20); put16(&cd, 20); put16(&cd, 0); put16(&cd, 0);
        put32(&cd, 0); put32(&cd, 0); put32(&cd, (uint32_t)lens[i]); put32(&cd, (uint32_t)lens[i]);
        put16(&cd, (unsigned)strlen(names[i])); put16(&cd, 0); put16(&cd, 0); put16(&cd, 0);
        put16(&cd, 0); put32(&cd, 0); put32(&cd, offs[i]);
        put(&cd, names[i], strlen(names[i]));
    }
    uint32_t cdoff = (uint32_t)z.n;
    put(&z, cd.p, cd.n);
    put32(&z, 0x06054b50); put16(&z, 0); put16(&z, 0); put16(&z, (unsigned)n);
    put16(&z, (unsigned)n); put32(&z, (uint32_t)cd.n); put32(&z, cdoff); put16(&z, 0);
    free(cd.p);
    return z;
}

/* Builds the one-tensor archive and opens it; returns the status (message in err_msg). */
static int try_view(int64_t numel, size_t storage_bytes, int64_t off, int nd, const int64_t *sz,
                    const int64_t *st, float *first) {
    float storage[64];
    for (int i = 0; i < 64; i++) storage[i] = (float)i;
    buf pkl = {0};
    pk_tensor_dict(&pkl, numel, off, nd, sz, st);
    buf z = make_zip(&pkl, storage, storage_bytes, "little");
    pth_file *p = NULL;
    err_clear();
    int rc = pth_open_mem(z.p, z.n, "crafted", &p);
    if (!rc && first) *first = pth_count(p) ? *(const float *)pth_get(p, 0)->data : -1;
    pth_free(p);
    free(pkl.p);
    free(z.p);
    return rc;
}

static void test_crafted_views(void) {
    int64_t sz[2] = {4, 4}, st[2] = {1, 4};
    float first = -1;
    /* Positive control: a transposed 4x4 view of 16 floats at offset 3. */
    CHECK_OK(try_view(19, 19 * 4, 3, 2, sz, st, &first));
    CHECK_NEAR(first, 3, 0);
    /* Storage entry shorter than numel says. */
    CHECK_EQ_INT(try_view(19, 18 * 4, 3, 2, sz, st, NULL), TV_EFORMAT);
    CHECK(strstr(err_msg(), "bytes") != NULL);
    /* View reaching one element past the storage. */
    CHECK_EQ_INT(try_view(18, 18 * 4, 3, 2, sz, st, NULL), TV_EFORMAT);
    CHECK(strstr(err_msg(), "reaches element 18") != NULL);
    /* Absurd sizes: the element count overflows. */
    int64_t big[2] = {INT64_MAX / 2, 16};
    CHECK_EQ_INT(try_view(16, 64, 0, 2, big, st, NULL), TV_EFORMAT);
    /* Strides whose span overflows 64 bits. */
    int64_t sz2[2] = {3, 2}, st2[2] = {INT64_MAX, INT64_MAX};
    CHECK_EQ_INT(try_view(16, 64, 0, 2, sz2, st2, NULL), TV_EFORMAT);
    /* Negative sizes / strides, offset. */
    int64_t neg[2] = {-1, 4};
    CHECK_EQ_INT(try_view(16, 64, 0, 2, neg, st, NULL), TV_EFORMAT);
    CHECK_EQ_INT(try_view(16, 64, -1, 2, sz, st, NULL), TV_EFORMAT);
    /* An expand of one element to 2^40 elements: within the storage, but over the gather limit. */
    int64_t huge[2] = {1 << 20, 1 << 20}, zero[2] = {0, 0};
    CHECK_EQ_INT(try_view(1, 4, 0, 2, huge, zero, NULL), TV_ELIMIT);
    /* Offset of an empty tensor outside its storage. */
    int64_t empty[2] = {0, 4};
    CHECK_EQ_INT(try_view(16, 64, 17, 2, empty, st, NULL), TV_EFORMAT);
    CHECK_OK(try_view(16, 64, 16, 2, empty, st, NULL));
}

/* Archives whose pickle is given whole. */
static int try_pickle(const buf *pkl, const char *order) {
    float storage[1] = {0};
    buf z = make_zip(pkl, storage, sizeof storage, order);
    pth_file *p = NULL;
    err_clear();
    int rc = pth_open_mem(z.p, z.n, "crafted", &p);
    pth_free(p);
    free(z.p);
    return rc;
}

static void test_crafted_pickles(void) {
    buf b = {0};
    /* Big-endian archives are refused. */
    int64_t one = 1;
    pk_tensor_dict(&b, 1, 0, 1, &one, &one);
    CHECK_OK(try_pickle(&b, "little"));
    CHECK_OK(try_pickle(&b, NULL)); /* old writers: no byteorder record */
    CHECK_EQ_INT(try_pickle(&b, "big"), TV_EUNSUPPORTED);
    /* Nesting: 100000 MARKs. */
    b.n = 0;
    put8(&b, 0x80); put8(&b, 2);
    for (int i = 0; i < 100000; i++) put8(&b, '(');
    put8(&b, '.');
    CHECK_EQ_INT(try_pickle(&b, NULL), TV_ELIMIT);
    /* A memo index of 4 billion. */
    b.n = 0;
    put8(&b, 0x80); put8(&b, 2); put8(&b, 'N'); put8(&b, 'r'); put32(&b, 0xffffffffu); put8(&b, '.');
    CHECK_EQ_INT(try_pickle(&b, NULL), TV_ELIMIT);
    /* BINGET of an unset memo slot. */
    b.n = 0;
    put8(&b, 0x80); put8(&b, 2); put8(&b, 'h'); put8(&b, 7); put8(&b, '.');
    CHECK_EQ_INT(try_pickle(&b, NULL), TV_EFORMAT);
    /* A list that contains itself: naming its leaves must stop at the depth limit. */
    b.n = 0;
    put8(&b, 0x80); put8(&b, 2); put8(&b, ']'); put8(&b, 'q'); put8(&b, 0); put8(&b, 'h');
    put8(&b, 0); put8(&b, 'a'); put8(&b, '.');
    CHECK_EQ_INT(try_pickle(&b, NULL), TV_ELIMIT);
    /* Exponential sharing: 60 levels of [x, x] must hit the visit limit, not run for ages. */
    b.n = 0;
    put8(&b, 0x80); put8(&b, 2); put8(&b, 'N');
    for (int i = 0; i < 60; i++) { put8(&b, 'q'); put8(&b, 0); put8(&b, 'h'); put8(&b, 0); put8(&b, 0x86); }
    put8(&b, '.');
    CHECK_EQ_INT(try_pickle(&b, NULL), TV_ELIMIT);
    /* Stack underflow, unknown opcode, missing STOP, SETITEM on a list. */
    const char *bad[] = {"\x80\x02R.", "\x80\x02\xff.", "\x80\x02N", "\x80\x02]NNs.", "\x80\x02(N)R.",
                         "\x80\x02\x81.", "\x80\x02NN."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        b.n = 0;
        put(&b, bad[i], strlen(bad[i]));
        int rc = try_pickle(&b, NULL);
        CHECK_MSG(rc < 0 && err_msg()[0], "bad pickle %zu: rc %d", i, rc);
    }
    /* Globals by STACK_GLOBAL are checked the same way. */
    b.n = 0;
    put8(&b, 0x80); put8(&b, 4); put8(&b, 0x8c); put8(&b, 2); put(&b, "os", 2);
    put8(&b, 0x8c); put8(&b, 6); put(&b, "system", 6); put8(&b, 0x93); put8(&b, '.');
    CHECK_EQ_INT(try_pickle(&b, NULL), TV_EUNSUPPORTED);
    CHECK(strstr(err_msg(), "os.system") != NULL);
    free(b.p);
}

/* ---- the malformed corpus from real files ---- */

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void test_truncations(void) {
    size_t len;
    unsigned char *f = slurp("pth/flat.pth", &len);
    open_copy(f, len, 1);
    for (size_t n = 0; n < len; n++) open_copy(f, n, 0); /* no prefix is a valid archive */
    free(f);
    /* Cut inside the ZIP64 archive too (every 97th length: it is 138 kB). */
    unsigned char *g = slurp("pth/zip64.pth", &len);
    for (size_t n = 0; n < len; n += 97) open_copy(g, n, 0);
    for (size_t n = len - 200; n < len; n++) open_copy(g, n, 0);
    free(g);
}

static void test_zip_fields(void) {
    size_t len;
    unsigned char *f = slurp("pth/flat.pth", &len);
    unsigned char *m = malloc(len);
    size_t eocd = len - 22;
    CHECK_EQ_INT(rd32(f + eocd), 0x06054b50);
    size_t loc = eocd - 20, z64 = (size_t)rd32(f + loc + 8);
    CHECK_EQ_INT(rd32(f + loc), 0x07064b50); /* torch always writes the ZIP64 records */
    uint64_t cdoff64;
    memcpy(&cdoff64, f + z64 + 48, 8);
    uint32_t cdoff = (uint32_t)cdoff64;
    /* The central directory offset and size, in the ZIP64 record, pointing anywhere. */
    const uint64_t bad_off[] = {0, 1, cdoff - 1, cdoff + 1, len, len + 1, UINT64_MAX, 1ull << 63};
    for (size_t i = 0; i < sizeof bad_off / sizeof *bad_off; i++) {
        for (int field = 40; field <= 48; field += 8) {
            memcpy(m, f, len);
            memcpy(m + z64 + field, &bad_off[i], 8);
            open_copy(m, len, 0);
        }
        memcpy(m, f, len);
        memcpy(m + loc + 8, &bad_off[i], 8); /* the locator's pointer to the record */
        open_copy(m, len, 0);
        memcpy(m, f, len);
        memcpy(m + z64 + 32, &bad_off[i], 8); /* entry count */
        if (bad_off[i] != 12) open_copy(m, len, -1);
    }
    /* Every central entry's local header offset, sizes and name length, corrupted. */
    for (size_t p = cdoff; p + 46 <= eocd && rd32(f + p) == 0x02014b50;) {
        size_t next = p + 46 + (f[p + 28] | f[p + 29] << 8) + (f[p + 30] | f[p + 31] << 8) +
                      (f[p + 32] | f[p + 33] << 8);
        const uint32_t vals[] = {1, 0x7fffffff, 0xffffffffu, (uint32_t)len, rd32(f + p + 42) + 1};
        for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
            memcpy(m, f, len);
            wr32(m + p + 42, vals[i]);
            open_copy(m, len, 0);
            if (vals[i] == rd32(f + p + 20)) continue;
            memcpy(m, f, len);
            wr32(m + p + 20, vals[i]); /* csize */
            open_copy(m, len, 0);
        }
        memcpy(m, f, len);
        m[p + 28] ^= 0x40; /* name length */
        open_copy(m, len, 0);
        /* Local header mismatch: a different byte in the local copy of the name. */
        uint32_t lho = rd32(f + p + 42);
        memcpy(m, f, len);
        m[lho + 30 + 2] ^= 1;
        open_copy(m, len, 0);
        CHECK(strstr(err_msg(), "local header") != NULL);
        /* A compressed entry: method 8 in both headers. */
        memcpy(m, f, len);
        m[p + 10] = 8;
        m[lho + 8] = 8;
        int rc = open_copy(m, len, -1);
        CHECK_MSG(rc == TV_EUNSUPPORTED || rc == 0, "method 8 -> %d %s", rc, err_msg());
        if (rc) CHECK(strstr(err_msg(), "compressed") != NULL);
        p = next;
    }
    free(m);
    free(f);
}

/* An archive comment (holding a fake end record) is skipped by the backwards scan. */
static void test_comment(void) {
    size_t len;
    unsigned char *f = slurp("pth/flat.pth", &len);
    const char comment[] = "PK\x05\x06 a fake end record inside the comment";
    size_t clen = sizeof comment - 1;
    unsigned char *m = malloc(len + clen);
    memcpy(m, f, len);
    memcpy(m + len, comment, clen);
    m[len - 2] = (unsigned char)clen;
    open_copy(m, len + clen, 1);
    m[len - 2] = (unsigned char)(clen + 1); /* claims one byte more than there is */
    open_copy(m, len + clen, 0);
    /* zipr directly: entries, lookups, and the data view of a stored entry. */
    zipr *z = NULL;
    CHECK_OK(zipr_open_mem(f, len, "flat", &z));
    CHECK_EQ_INT(zipr_count(z), 11); /* as Python's zipfile lists it */
    const zipr_entry *e = zipr_find(z, "flat/byteorder");
    const unsigned char *d = NULL;
    size_t n = 0;
    CHECK(e && zipr_data(z, e, &d, &n) == 0 && n == 6 && !memcmp(d, "little", 6));
    CHECK(zipr_find(z, "flat/nope") == NULL && zipr_entry_at(z, 11) == NULL);
    zipr_free(z);
    zipr_free(NULL);
    free(m);
    free(f);
}

/* Flips bytes at seeded-random places and checks every outcome is clean. */
static void mutate(const char *rel, int rounds, int pickle_only) {
    size_t len;
    unsigned char *f = slurp(rel, &len);
    size_t lo = 0, hi = len;
    if (pickle_only) {
        zipr *z = NULL;
        CHECK_OK(zipr_open_mem(f, len, rel, &z));
        for (size_t i = 0; z && i < zipr_count(z); i++) {
            const zipr_entry *e = zipr_entry_at(z, i);
            if (strstr(e->name, "/data.pkl")) lo = e->data_offset, hi = lo + e->size;
        }
        zipr_free(z);
        CHECK(hi > lo && hi - lo < len);
    }
    unsigned char *m = malloc(len);
    int ok = 0, refused = 0;
    for (int r = 0; r < rounds; r++) {
        memcpy(m, f, len);
        int flips = 1 + (int)(rng() % 3);
        for (int k = 0; k < flips; k++) {
            size_t at = lo + (size_t)(rng() % (hi - lo));
            m[at] = (rng() & 1) ? (unsigned char)rng() : (unsigned char)(m[at] ^ (1u << (rng() % 8)));
        }
        if (open_copy(m, len, -1) == 0) ok++;
        else refused++;
    }
    printf("mutations of %s (%s): %d parsed, %d refused\n", rel, pickle_only ? "pickle" : "any byte",
           ok, refused);
    CHECK(refused > 0);
    free(m);
    free(f);
}

int main(void) {
    test_goldens();
    test_nested();
    test_refused();
    test_crafted_views();
    test_crafted_pickles();
    test_truncations();
    test_zip_fields();
    test_comment();
    mutate("pth/flat.pth", 3000, 1);
    mutate("pth/proto4.pth", 1000, 1);
    mutate("pth/flat.pth", 2000, 0);
    mutate("pth/nested.pth", 300, 1);
    return check_finish("pth");
}
