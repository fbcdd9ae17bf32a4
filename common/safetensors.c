/* safetensors — reader (one mmap, validated header, zero-copy views), sharded models, and a
 * writer byte-identical to the Python package. See safetensors.h for the format and contract. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "mapfile.h"

/* JSON numbers arrive as doubles: above 2^53 they are no longer exact integers, and no real
 * dim or offset comes near it. */
#define ST_MAX_JSON_INT 9007199254740992.0
#define ST_MAX_INDEX_BYTES (64u * 1024u * 1024u)
#define ST_DEFAULT_CHUNK (4u * 1024u * 1024u)

/* ============================================================================================
 * Small helpers: checked allocation for input-sized buffers, strdup, a name -> index table.
 * ========================================================================================== */

/* calloc for sizes derived from input: NULL (not abort) on failure, so callers can refuse. */
static void *st_calloc(size_t n, size_t size) { return calloc(n ? n : 1, size ? size : 1); }

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static void free_strings(char **v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Open-addressing hash table of indices 0..n-1 keyed by name; slot holds index + 1, 0 = empty.
 * Names live in the caller's array, reached through name_of. */
typedef const char *(*name_of_fn)(const void *ctx, size_t i);
typedef struct {
    uint32_t *slot;
    size_t mask;
} name_index;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Builds the table. Returns 0; TV_ENOMEM; or TV_EFORMAT with *dup the index of the second
 * occurrence of a repeated name (caller writes the message). */
static int nidx_build(name_index *ix, size_t n, name_of_fn name_of, const void *ctx, size_t *dup) {
    size_t cap = 8;
    while (cap < 2 * n) cap *= 2;
    ix->slot = st_calloc(cap, sizeof *ix->slot);
    if (!ix->slot || n >= UINT32_MAX) return err_set(TV_ENOMEM, "no memory for %zu names", n);
    ix->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        const char *name = name_of(ctx, i);
        size_t h = (size_t)fnv1a(name) & ix->mask;
        for (; ix->slot[h]; h = (h + 1) & ix->mask) {
            if (strcmp(name_of(ctx, ix->slot[h] - 1), name) == 0) {
                *dup = i;
                return TV_EFORMAT;
            }
        }
        ix->slot[h] = (uint32_t)(i + 1);
    }
    return TV_OK;
}

/* Index of name, or -1. */
static long nidx_find(const name_index *ix, const char *name, name_of_fn name_of, const void *ctx) {
    if (!ix->slot || !name) return -1;
    for (size_t h = (size_t)fnv1a(name) & ix->mask; ix->slot[h]; h = (h + 1) & ix->mask)
        if (strcmp(name_of(ctx, ix->slot[h] - 1), name) == 0) return (long)ix->slot[h] - 1;
    return -1;
}

/* A JSON number that must be an exact non-negative integer (dims, offsets). */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > ST_MAX_JSON_INT || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* ============================================================================================
 * st_file: parsing and validating one header.
 * ========================================================================================== */

struct st_file {
    mapfile *mf;                /* NULL when opened on a caller's buffer */
    char *path;                 /* path or label, for messages */
    const char *header;         /* JSON bytes inside the image */
    size_t header_len;
    const unsigned char *data;  /* data section */
    size_t data_len;
    size_t n;
    tensor_view *t;             /* header order; t[i].name points into names[i] */
    char **names;
    size_t nmeta;
    char **mkey, **mval;
    name_index ix;              /* tensor names */
    name_index mix;             /* metadata keys */
};

static const char *file_name_of(const void *ctx, size_t i) {
    return ((const st_file *)ctx)->t[i].name;
}

static const char *meta_key_of(const void *ctx, size_t i) {
    return ((const st_file *)ctx)->mkey[i];
}

/* The "__metadata__" object: string values only, no repeated keys. */
static int parse_metadata(st_file *f, const cJSON *meta) {
    if (f->mkey) return err_set(TV_EFORMAT, "%s: __metadata__ appears twice", f->path);
    if (!cJSON_IsObject(meta))
        return err_set(TV_EFORMAT, "%s: __metadata__ is not an object", f->path);
    size_t n = (size_t)cJSON_GetArraySize(meta);
    f->mkey = st_calloc(n, sizeof *f->mkey);
    f->mval = st_calloc(n, sizeof *f->mval);
    if (!f->mkey || !f->mval) return err_set(TV_ENOMEM, "%s: no memory for metadata", f->path);
    for (const cJSON *e = meta->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return err_set(TV_EFORMAT, "%s: __metadata__ value for '%s' is not a string",
                           f->path, e->string);
        f->mkey[f->nmeta] = st_strdup(e->string);
        f->mval[f->nmeta] = st_strdup(e->valuestring);
        if (!f->mkey[f->nmeta] || !f->mval[f->nmeta++])
            return err_set(TV_ENOMEM, "%s: no memory for metadata", f->path);
    }
    /* A hash table, not a pairwise scan: a hostile header may hold millions of keys. */
    size_t dup = 0;
    int rc = nidx_build(&f->mix, f->nmeta, meta_key_of, f, &dup);
    if (rc == TV_EFORMAT)
        return err_set(rc, "%s: __metadata__ key '%s' appears twice", f->path, f->mkey[dup]);
    return rc;
}

/* "shape": array of at most TENSOR_MAX_DIMS exact non-negative integers; sets ndim, shape and
 * nbytes (numel * element size, overflow checked). */
static int parse_shape(const st_file *f, const char *name, const cJSON *shape, tensor_view *t) {
    if (!cJSON_IsArray(shape))
        return err_set(TV_EFORMAT, "%s: tensor '%s': shape missing or not an array", f->path,
                       name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > TENSOR_MAX_DIMS)
        return err_set(TV_EFORMAT, "%s: tensor '%s': rank %d exceeds %d", f->path, name, ndim,
                       TENSOR_MAX_DIMS);
    uint64_t nbytes = dtype_size(t->dtype);
    int d = 0;
    for (const cJSON *e = shape->child; e; e = e->next, d++) {
        uint64_t dim;
        if (json_uint(e, &dim) != 0)
            return err_set(TV_EFORMAT, "%s: tensor '%s': dim %d is not a non-negative integer",
                           f->path, name, d);
        if (__builtin_mul_overflow(nbytes, dim, &nbytes) || nbytes > (uint64_t)INT64_MAX)
            return err_set(TV_EFORMAT, "%s: tensor '%s': shape overflows the addressable size",
                           f->path, name);
        t->shape[d] = (int64_t)dim;
    }
    t->ndim = ndim;
    t->nbytes = (size_t)nbytes;
    return TV_OK;
}

/* "data_offsets": [begin, end], begin <= end <= data section, end - begin == nbytes. */
static int parse_offsets(const st_file *f, const char *name, const cJSON *off, tensor_view *t) {
    uint64_t b, e;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        json_uint(off->child, &b) != 0 || json_uint(off->child->next, &e) != 0)
        return err_set(TV_EFORMAT,
                       "%s: tensor '%s': data_offsets is not [begin, end] of non-negative integers",
                       f->path, name);
    if (b > e)
        return err_set(TV_EFORMAT, "%s: tensor '%s': data_offsets begin %" PRIu64 " > end %" PRIu64,
                       f->path, name, b, e);
    if (e > f->data_len)
        return err_set(TV_EFORMAT,
                       "%s: tensor '%s': data_offsets end %" PRIu64
                       " is past the data section (%zu bytes)",
                       f->path, name, e, f->data_len);
    if (e - b != t->nbytes)
        return err_set(TV_EFORMAT,
                       "%s: tensor '%s': %" PRIu64 " bytes in data_offsets but shape and dtype "
                       "need %zu",
                       f->path, name, e - b, t->nbytes);
    t->data = f->data + b;
    return TV_OK;
}

static int parse_tensor(st_file *f, const cJSON *e, tensor_view *t) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return err_set(TV_EFORMAT, "%s: entry '%s' is not an object", f->path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dt))
        return err_set(TV_EFORMAT, "%s: tensor '%s': dtype missing or not a string", f->path,
                       name);
    int rc = dtype_parse(dt->valuestring, &t->dtype);
    if (rc) return err_wrap(rc, "%s: tensor '%s'", f->path, name);
    rc = parse_shape(f, name, cJSON_GetObjectItemCaseSensitive(e, "shape"), t);
    if (rc) return rc;
    return parse_offsets(f, name, cJSON_GetObjectItemCaseSensitive(e, "data_offsets"), t);
}

/* Order for the overlap check: by begin, then end. */
static int cmp_by_offset(const void *a, const void *b) {
    const tensor_view *x = *(tensor_view *const *)a, *y = *(tensor_view *const *)b;
    const unsigned char *xe = (const unsigned char *)x->data + x->nbytes;
    const unsigned char *ye = (const unsigned char *)y->data + y->nbytes;
    if (x->data != y->data) return (const unsigned char *)x->data < (const unsigned char *)y->data ? -1 : 1;
    return xe < ye ? -1 : xe > ye;
}

/* No two non-empty tensors may share a byte (empty ones occupy nothing). */
static int check_overlaps(st_file *f) {
    tensor_view **v = st_calloc(f->n, sizeof *v);
    if (!v) return err_set(TV_ENOMEM, "%s: no memory for %zu tensors", f->path, f->n);
    size_t m = 0;
    for (size_t i = 0; i < f->n; i++)
        if (f->t[i].nbytes) v[m++] = &f->t[i];
    qsort(v, m, sizeof *v, cmp_by_offset);
    int rc = TV_OK;
    for (size_t i = 1; i < m && !rc; i++) {
        const unsigned char *prev_end = (const unsigned char *)v[i - 1]->data + v[i - 1]->nbytes;
        if ((const unsigned char *)v[i]->data < prev_end)
            rc = err_set(TV_EFORMAT, "%s: tensors '%s' and '%s' overlap in the data section",
                         f->path, v[i - 1]->name, v[i]->name);
    }
    free(v);
    return rc;
}

/* Walks the parsed header object: metadata and tensors, then duplicates and overlaps. */
static int parse_entries(st_file *f, const cJSON *root) {
    size_t total = (size_t)cJSON_GetArraySize(root);
    f->t = st_calloc(total, sizeof *f->t);
    f->names = st_calloc(total, sizeof *f->names);
    if (!f->t || !f->names) return err_set(TV_ENOMEM, "%s: no memory for %zu entries", f->path, total);
    for (const cJSON *e = root->child; e; e = e->next) {
        int rc;
        if (strcmp(e->string, "__metadata__") == 0) {
            rc = parse_metadata(f, e);
        } else {
            f->names[f->n] = st_strdup(e->string);
            if (!f->names[f->n]) return err_set(TV_ENOMEM, "%s: no memory", f->path);
            f->t[f->n].name = f->names[f->n];
            rc = parse_tensor(f, e, &f->t[f->n]);
            f->n++;
        }
        if (rc) return rc;
    }
    size_t dup = 0;
    int rc = nidx_build(&f->ix, f->n, file_name_of, f, &dup);
    if (rc == TV_EFORMAT)
        return err_set(rc, "%s: tensor '%s' appears twice in the header", f->path, f->t[dup].name);
    return rc ? rc : check_overlaps(f);
}

/* Header length, JSON parse, trailing padding; then the entries. */
static int parse_image(st_file *f, const unsigned char *base, size_t size) {
    if (size < 8)
        return err_set(TV_EFORMAT, "%s: %zu bytes is too short for the 8-byte header length",
                       f->path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    if (hlen < 2 || hlen > ST_MAX_HEADER_BYTES)
        return err_set(TV_EFORMAT, "%s: header length %" PRIu64 " is outside 2..%u", f->path,
                       hlen, ST_MAX_HEADER_BYTES);
    if (hlen > size - 8)
        return err_set(TV_EFORMAT, "%s: header length %" PRIu64 " runs past the end of the file "
                       "(%zu bytes)", f->path, hlen, size);
    f->header = (const char *)base + 8;
    f->header_len = (size_t)hlen;
    f->data = base + 8 + hlen;
    f->data_len = size - 8 - (size_t)hlen;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(f->header, f->header_len, &end, 0);
    if (!root) {
        size_t at = end && end >= f->header ? (size_t)(end - f->header) : 0;
        return err_set(TV_EFORMAT, "%s: header is not valid JSON (near byte %zu of %zu)",
                       f->path, at, f->header_len);
    }
    int rc = TV_OK;
    for (const char *p = end; p < f->header + f->header_len && !rc; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            rc = err_set(TV_EFORMAT, "%s: junk after the header JSON at byte %zu", f->path,
                         (size_t)(p - f->header));
    if (!rc && !cJSON_IsObject(root))
        rc = err_set(TV_EFORMAT, "%s: header JSON is not an object", f->path);
    if (!rc) rc = parse_entries(f, root);
    cJSON_Delete(root);
    return rc;
}

int st_open_buffer(const void *data, size_t size, const char *label, st_file **out) {
    TV_ASSERT(out && (data || size == 0));
    *out = NULL;
    st_file *f = tv_xcalloc(1, sizeof *f);
    f->path = st_strdup(label ? label : "(buffer)");
    if (!f->path) {
        st_free(f);
        return err_set(TV_ENOMEM, "no memory");
    }
    int rc = parse_image(f, data, size);
    if (rc) {
        st_free(f);
        return rc;
    }
    *out = f;
    return TV_OK;
}

int st_open(const char *path, st_file **out) {
    TV_ASSERT(path && out);
    *out = NULL;
    mapfile *mf = NULL;
    int rc = mf_open(path, &mf);
    if (rc) return rc;
    st_file *f = NULL;
    rc = st_open_buffer(mf->data, mf->size, path, &f);
    if (rc) {
        mf_free(mf);
        return rc;
    }
    f->mf = mf;
    *out = f;
    return TV_OK;
}

void st_free(st_file *f) {
    if (!f) return;
    free_strings(f->names, f->n);
    free_strings(f->mkey, f->nmeta);
    free_strings(f->mval, f->nmeta);
    free(f->t);
    free(f->ix.slot);
    free(f->mix.slot);
    free(f->path);
    mf_free(f->mf);
    free(f);
}

const char *st_path(const st_file *f) { return f->path; }
size_t st_count(const st_file *f) { return f->n; }

const tensor_view *st_tensor_at(const st_file *f, size_t i) {
    TV_ASSERT(i < f->n);
    return &f->t[i];
}

const tensor_view *st_find(const st_file *f, const char *name) {
    long i = nidx_find(&f->ix, name, file_name_of, f);
    return i < 0 ? NULL : &f->t[i];
}

int st_get(const st_file *f, const char *name, const tensor_view **out) {
    *out = st_find(f, name);
    if (!*out) return err_set(TV_ENOTFOUND, "%s: no tensor named '%s'", f->path, name);
    return TV_OK;
}

size_t st_meta_count(const st_file *f) { return f->nmeta; }

const char *st_meta_key(const st_file *f, size_t i) {
    TV_ASSERT(i < f->nmeta);
    return f->mkey[i];
}

const char *st_meta_value(const st_file *f, size_t i) {
    TV_ASSERT(i < f->nmeta);
    return f->mval[i];
}

const char *st_meta_get(const st_file *f, const char *key) {
    long i = nidx_find(&f->mix, key, meta_key_of, f);
    return i < 0 ? NULL : f->mval[i];
}

const char *st_header(const st_file *f, size_t *len) {
    *len = f->header_len;
    return f->header;
}

/* ============================================================================================
 * st_model: one file, or shards through an HF index.
 * ========================================================================================== */

struct st_model {
    st_file **files;
    size_t nfiles;
    char **shard_names;          /* as written in the index, parallel to files */
    const tensor_view **t;
    size_t n;
    name_index ix;
    size_t nmeta;                /* the index's metadata; a single file uses its own */
    char **mkey, **mval;
};

static const char *model_name_of(const void *ctx, size_t i) {
    return ((const st_model *)ctx)->t[i]->name;
}

void st_model_free(st_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->nfiles; i++) st_free(m->files[i]);
    free(m->files);
    free_strings(m->shard_names, m->nfiles);
    free(m->t);
    free(m->ix.slot);
    free_strings(m->mkey, m->nmeta);
    free_strings(m->mval, m->nmeta);
    free(m);
}

static int model_from_file(const char *path, st_model *m) {
    m->files = tv_xcalloc(1, sizeof *m->files);
    int rc = st_open(path, &m->files[0]);
    if (rc) return rc;
    m->nfiles = 1;
    const st_file *f = m->files[0];
    m->t = tv_xcalloc(f->n ? f->n : 1, sizeof *m->t);
    for (size_t i = 0; i < f->n; i++) m->t[i] = &f->t[i];
    m->n = f->n;
    size_t dup;
    return nidx_build(&m->ix, m->n, model_name_of, m, &dup);  /* no dups: st_open checked */
}

/* A shard name from the index must stay inside the index's directory. */
static int shard_name_ok(const char *s) {
    if (!s[0] || s[0] == '/') return 0;
    for (const char *p = s; *p;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return 0;
        p += len + (slash ? 1 : 0);
    }
    return 1;
}

/* The shard named s, opened on first use (dir is the index's directory with a trailing '/'). */
static int model_shard(st_model *m, const char *dir, const char *s, st_file **out) {
    for (size_t i = 0; i < m->nfiles; i++)
        if (strcmp(m->shard_names[i], s) == 0) {
            *out = m->files[i];
            return TV_OK;
        }
    size_t plen = strlen(dir) + strlen(s) + 1;
    char *path = tv_xmalloc(plen);
    snprintf(path, plen, "%s%s", dir, s);
    m->files = tv_xrealloc(m->files, (m->nfiles + 1) * sizeof *m->files);
    m->shard_names = tv_xrealloc(m->shard_names, (m->nfiles + 1) * sizeof *m->shard_names);
    int rc = st_open(path, &m->files[m->nfiles]);
    free(path);
    if (rc) return rc;
    m->shard_names[m->nfiles] = st_strdup(s);
    *out = m->files[m->nfiles++];
    if (!m->shard_names[m->nfiles - 1]) return err_set(TV_ENOMEM, "no memory");
    return TV_OK;
}

/* The index's "metadata": strings kept, numbers as integer (or %.17g) text, others skipped. */
static int index_metadata(st_model *m, const cJSON *meta, const char *path) {
    if (!meta) return TV_OK;
    if (!cJSON_IsObject(meta)) return err_set(TV_EFORMAT, "%s: \"metadata\" is not an object", path);
    size_t n = (size_t)cJSON_GetArraySize(meta);
    m->mkey = tv_xcalloc(n ? n : 1, sizeof *m->mkey);
    m->mval = tv_xcalloc(n ? n : 1, sizeof *m->mval);
    for (const cJSON *e = meta->child; e; e = e->next) {
        char num[40];
        const char *v = NULL;
        if (cJSON_IsString(e)) {
            v = e->valuestring;
        } else if (cJSON_IsNumber(e) && isfinite(e->valuedouble)) {
            double d = e->valuedouble;
            if (d == floor(d) && fabs(d) <= ST_MAX_JSON_INT)
                snprintf(num, sizeof num, "%" PRId64, (int64_t)d);
            else
                snprintf(num, sizeof num, "%.17g", d);
            v = num;
        }
        if (!v) continue;
        m->mkey[m->nmeta] = st_strdup(e->string);
        m->mval[m->nmeta] = st_strdup(v);
        if (!m->mkey[m->nmeta] || !m->mval[m->nmeta++]) return err_set(TV_ENOMEM, "no memory");
    }
    return TV_OK;
}

/* Resolves every weight_map entry to a tensor in its shard. */
static int index_weight_map(st_model *m, const cJSON *wm, const char *path, const char *dir) {
    if (!cJSON_IsObject(wm))
        return err_set(TV_EFORMAT, "%s: \"weight_map\" missing or not an object", path);
    size_t n = (size_t)cJSON_GetArraySize(wm);
    m->t = tv_xcalloc(n ? n : 1, sizeof *m->t);
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring))
            return err_set(TV_EFORMAT, "%s: weight_map entry '%s' does not name a shard file "
                           "in the index's directory", path, e->string);
        st_file *f = NULL;
        int rc = model_shard(m, dir, e->valuestring, &f);
        if (rc) return err_wrap(rc, "%s: shard for '%s'", path, e->string);
        const tensor_view *t = st_find(f, e->string);
        if (!t)
            return err_set(TV_EFORMAT, "%s: tensor '%s' is not in its shard %s", path, e->string,
                           e->valuestring);
        m->t[m->n++] = t;
    }
    size_t dup = 0;
    int rc = nidx_build(&m->ix, m->n, model_name_of, m, &dup);
    if (rc == TV_EFORMAT)
        return err_set(rc, "%s: tensor '%s' appears twice in weight_map", path, m->t[dup]->name);
    return rc;
}

static int model_from_index(const char *path, st_model *m) {
    char *text = NULL;
    size_t len = 0;
    int rc = mf_read_all(path, ST_MAX_INDEX_BYTES, &text, &len);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set(TV_EFORMAT, "%s: not a JSON object", path);
    }
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    char *dir = tv_xmalloc(dlen + 1);
    memcpy(dir, path, dlen);
    dir[dlen] = 0;
    rc = index_metadata(m, cJSON_GetObjectItemCaseSensitive(root, "metadata"), path);
    if (!rc) rc = index_weight_map(m, cJSON_GetObjectItemCaseSensitive(root, "weight_map"), path, dir);
    free(dir);
    cJSON_Delete(root);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A directory: its index if present, else its model.safetensors. */
static int model_from_dir(const char *dir, st_model *m) {
    static const char *const names[] = {"model.safetensors.index.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        size_t plen = strlen(dir) + strlen(names[i]) + 2;
        char *p = tv_xmalloc(plen);
        snprintf(p, plen, "%s/%s", dir, names[i]);
        struct stat st;
        int rc = TV_ENOTFOUND;
        if (stat(p, &st) == 0) rc = i == 0 ? model_from_index(p, m) : model_from_file(p, m);
        free(p);
        if (rc != TV_ENOTFOUND) return rc;
    }
    return err_set(TV_ENOTFOUND, "%s: holds neither model.safetensors.index.json nor "
                   "model.safetensors", dir);
}

int st_model_open(const char *path, st_model **out) {
    TV_ASSERT(path && out);
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return err_set(TV_EIO, "%s: %s", path, strerror(errno));
    st_model *m = tv_xcalloc(1, sizeof *m);
    int rc;
    if (S_ISDIR(st.st_mode)) rc = model_from_dir(path, m);
    else if (ends_with(path, ".json")) rc = model_from_index(path, m);
    else rc = model_from_file(path, m);
    if (rc) {
        st_model_free(m);
        return rc;
    }
    *out = m;
    return TV_OK;
}

size_t st_model_count(const st_model *m) { return m->n; }

const tensor_view *st_model_tensor_at(const st_model *m, size_t i) {
    TV_ASSERT(i < m->n);
    return m->t[i];
}

const tensor_view *st_model_find(const st_model *m, const char *name) {
    long i = nidx_find(&m->ix, name, model_name_of, m);
    return i < 0 ? NULL : m->t[i];
}

int st_model_get(const st_model *m, const char *name, const tensor_view **out) {
    *out = st_model_find(m, name);
    if (!*out)
        return err_set(TV_ENOTFOUND, "no tensor named '%s' in %s%s", name,
                       m->nfiles ? m->files[0]->path : "model", m->nfiles > 1 ? " and its shards" : "");
    return TV_OK;
}

size_t st_model_nfiles(const st_model *m) { return m->nfiles; }

const st_file *st_model_file(const st_model *m, size_t i) {
    TV_ASSERT(i < m->nfiles);
    return m->files[i];
}

const char *st_model_meta_get(const st_model *m, const char *key) {
    if (!m->mkey) return m->nfiles == 1 ? st_meta_get(m->files[0], key) : NULL;
    for (size_t i = 0; i < m->nmeta; i++)
        if (strcmp(m->mkey[i], key) == 0) return m->mval[i];
    return NULL;
}

/* ============================================================================================
 * Writer: the Python package's layout, byte for byte.
 * ========================================================================================== */

typedef struct {
    char *name;
    dtype_id dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    size_t nbytes;
    const void *data;     /* borrowed, or NULL when fill is set */
    st_fill_fn fill;
    void *user;
} st_entry;

struct st_writer {
    st_entry *e;
    size_t n, cap;
    char **mkey, **mval;
    size_t nmeta, metacap;
    size_t chunk;
};

st_writer *st_writer_new(void) {
    st_writer *w = tv_xcalloc(1, sizeof *w);
    w->chunk = ST_DEFAULT_CHUNK;
    return w;
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    free_strings(w->mkey, w->nmeta);
    free_strings(w->mval, w->nmeta);
    free(w);
}

void st_writer_set_chunk(st_writer *w, size_t bytes) { w->chunk = bytes ? bytes : 1; }

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF): the reference reader refuses
 * anything else, so the writer must not produce it. */
static int utf8_ok(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s++;
        int more = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (more < 0 || (more == 1 && c < 0xc2)) return 0;
        uint32_t cp = c & (0x3f >> more);
        for (int i = 0; i < more; i++, s++) {
            if ((*s & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (*s & 0x3f);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
    }
    return 1;
}

static int add_entry(st_writer *w, const char *name, dtype_id dt, int ndim, const int64_t *shape,
                     st_entry *proto) {
    if (!name || !name[0] || strcmp(name, "__metadata__") == 0 || !utf8_ok(name))
        return err_set(TV_EINVAL, "safetensors writer: bad tensor name '%s'", name ? name : "");
    if ((unsigned)dt >= DT_COUNT || ndim < 0 || ndim > TENSOR_MAX_DIMS || (ndim && !shape))
        return err_set(TV_EINVAL, "safetensors writer: tensor '%s': bad dtype or rank", name);
    uint64_t nbytes = dtype_size(dt);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0 || __builtin_mul_overflow(nbytes, (uint64_t)shape[d], &nbytes) ||
            nbytes > (uint64_t)INT64_MAX || nbytes > SIZE_MAX)
            return err_set(TV_EINVAL, "safetensors writer: tensor '%s': bad shape", name);
    if (nbytes && !proto->data && !proto->fill)
        return err_set(TV_EINVAL, "safetensors writer: tensor '%s': no data", name);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0)
            return err_set(TV_EINVAL, "safetensors writer: tensor '%s' added twice", name);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->e = tv_xrealloc(w->e, w->cap * sizeof *w->e);
    }
    st_entry *e = &w->e[w->n++];
    *e = *proto;
    e->name = tv_xmalloc(strlen(name) + 1);
    strcpy(e->name, name);
    e->dtype = dt;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->nbytes = (size_t)nbytes;
    return TV_OK;
}

int st_writer_add(st_writer *w, const char *name, dtype_id dt, int ndim, const int64_t *shape,
                  const void *data) {
    st_entry proto = {.data = data};
    return add_entry(w, name, dt, ndim, shape, &proto);
}

int st_writer_add_fn(st_writer *w, const char *name, dtype_id dt, int ndim, const int64_t *shape,
                     st_fill_fn fill, void *user) {
    if (!fill) return err_set(TV_EINVAL, "safetensors writer: tensor '%s': no fill function", name);
    st_entry proto = {.fill = fill, .user = user};
    return add_entry(w, name, dt, ndim, shape, &proto);
}

int st_writer_set_meta(st_writer *w, const char *key, const char *value) {
    if (!key || !value || !utf8_ok(key) || !utf8_ok(value))
        return err_set(TV_EINVAL, "safetensors writer: metadata must be UTF-8 strings");
    for (size_t i = 0; i < w->nmeta; i++)
        if (strcmp(w->mkey[i], key) == 0) {
            free(w->mval[i]);
            w->mval[i] = tv_xmalloc(strlen(value) + 1);
            strcpy(w->mval[i], value);
            return TV_OK;
        }
    if (w->nmeta == w->metacap) {
        w->metacap = w->metacap ? 2 * w->metacap : 8;
        w->mkey = tv_xrealloc(w->mkey, w->metacap * sizeof *w->mkey);
        w->mval = tv_xrealloc(w->mval, w->metacap * sizeof *w->mval);
    }
    w->mkey[w->nmeta] = tv_xmalloc(strlen(key) + 1);
    strcpy(w->mkey[w->nmeta], key);
    w->mval[w->nmeta] = tv_xmalloc(strlen(value) + 1);
    strcpy(w->mval[w->nmeta++], value);
    return TV_OK;
}

/* ---- header text: serde_json's compact output ---------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 4096;
        b->p = tv_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* A JSON string as serde_json writes it: '"' and '\\' escaped, \b \f \n \r \t by name, other
 * control bytes as \u00xx (lowercase hex), everything else (UTF-8, DEL, '/') raw. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        const char *named = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b"
                          : c == '\f' ? "\\f" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                          : c == '\t' ? "\\t" : NULL;
        if (named) {
            sb_str(b, named);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_str(b, esc);
        } else {
            sb_put(b, s, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static void sb_u64(sbuf *b, uint64_t v) {
    char num[24];
    snprintf(num, sizeof num, "%" PRIu64, v);
    sb_str(b, num);
}

/* Position of each dtype in the package's Dtype enum (its sort key, descending). */
static int dtype_rank(dtype_id dt) {
    static const int rank[DT_COUNT] = {[DT_BOOL] = 0, [DT_U8] = 1, [DT_I8] = 2, [DT_I16] = 3,
                                       [DT_F16] = 4, [DT_BF16] = 5, [DT_I32] = 6, [DT_F32] = 7,
                                       [DT_F64] = 8, [DT_I64] = 9};
    return rank[dt];
}

static int cmp_entry(const void *a, const void *b) {
    const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
    int rx = dtype_rank(x->dtype), ry = dtype_rank(y->dtype);
    if (rx != ry) return ry - rx;
    return strcmp(x->name, y->name);   /* strcmp compares as unsigned char: bytewise */
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(**(char **const *)a, **(char **const *)b);
}

/* Header JSON for the entries in order, padded with spaces to a multiple of 8. */
static void build_header(const st_writer *w, st_entry **order, sbuf *b) {
    sb_put(b, "{", 1);
    if (w->nmeta) {
        char ***keys = tv_xmalloc(w->nmeta * sizeof *keys);
        for (size_t i = 0; i < w->nmeta; i++) keys[i] = &w->mkey[i];
        qsort(keys, w->nmeta, sizeof *keys, cmp_cstr);
        sb_str(b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            size_t k = (size_t)(keys[i] - w->mkey);
            if (i) sb_put(b, ",", 1);
            sb_json_str(b, w->mkey[k]);
            sb_put(b, ":", 1);
            sb_json_str(b, w->mval[k]);
        }
        sb_put(b, "}", 1);
        free(keys);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const st_entry *e = order[i];
        if (i || w->nmeta) sb_put(b, ",", 1);
        sb_json_str(b, e->name);
        sb_str(b, ":{\"dtype\":");
        sb_json_str(b, dtype_name(e->dtype));
        sb_str(b, ",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) sb_put(b, ",", 1);
            sb_u64(b, (uint64_t)e->shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, off);
        sb_put(b, ",", 1);
        off += e->nbytes;
        sb_u64(b, off);
        sb_str(b, "]}");
    }
    sb_put(b, "}", 1);
    while (b->len % 8) sb_put(b, " ", 1);
}

/* ---- writing ------------------------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t n, const char *path) {
    const unsigned char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return err_set(TV_EIO, "%s: write failed: %s", path, k < 0 ? strerror(errno) : "wrote nothing");
        p += k;
        n -= (size_t)k;
    }
    return TV_OK;
}

/* One tensor's bytes: straight from its pointer, or chunk by chunk from its fill callback. */
static int write_entry(int fd, const st_entry *e, unsigned char *chunk, size_t chunk_len,
                       const char *path) {
    if (!e->fill) return e->nbytes ? write_all(fd, e->data, e->nbytes, path) : TV_OK;
    for (size_t off = 0; off < e->nbytes; off += chunk_len) {
        size_t len = e->nbytes - off < chunk_len ? e->nbytes - off : chunk_len;
        int rc = e->fill(e->user, chunk, off, len);
        if (rc) return err_wrap(rc < 0 ? rc : TV_EINTERNAL, "%s: producing tensor '%s'", path, e->name);
        rc = write_all(fd, chunk, len, path);
        if (rc) return rc;
    }
    return TV_OK;
}

static int write_body(int fd, const st_writer *w, st_entry **order, const char *path) {
    sbuf hdr = {0};
    build_header(w, order, &hdr);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));
    int rc = write_all(fd, len8, 8, path);
    if (!rc) rc = write_all(fd, hdr.p, hdr.len, path);
    free(hdr.p);
    size_t need = 0;
    for (size_t i = 0; i < w->n; i++)
        if (w->e[i].fill && w->e[i].nbytes > need) need = w->e[i].nbytes;
    size_t chunk_len = need < w->chunk ? need : w->chunk;
    unsigned char *chunk = chunk_len ? malloc(chunk_len) : NULL;
    if (!rc && chunk_len && !chunk) rc = err_set(TV_ENOMEM, "%s: no memory for a %zu-byte chunk", path, chunk_len);
    for (size_t i = 0; i < w->n && !rc; i++) rc = write_entry(fd, order[i], chunk, chunk_len, path);
    free(chunk);
    if (!rc && fsync(fd) != 0) rc = err_set(TV_EIO, "%s: fsync failed: %s", path, strerror(errno));
    return rc;
}

int st_writer_write(st_writer *w, const char *path) {
    TV_ASSERT(w && path);
    st_entry **order = tv_xmalloc((w->n ? w->n : 1) * sizeof *order);
    for (size_t i = 0; i < w->n; i++) order[i] = &w->e[i];
    qsort(order, w->n, sizeof *order, cmp_entry);
    size_t tlen = strlen(path) + 16;
    char *tmp = tv_xmalloc(tlen);
    snprintf(tmp, tlen, "%s.tmp.XXXXXX", path);
    int rc = TV_OK, fd = mkstemp(tmp);
    if (fd < 0) {
        rc = err_set(TV_EIO, "%s: cannot create a temp file: %s", tmp, strerror(errno));
    } else {
        rc = write_body(fd, w, order, path);
        if (!rc && fchmod(fd, 0644) != 0)
            rc = err_set(TV_EIO, "%s: chmod failed: %s", tmp, strerror(errno));
        if (close(fd) != 0 && !rc) rc = err_set(TV_EIO, "%s: close failed: %s", tmp, strerror(errno));
        if (!rc && rename(tmp, path) != 0)
            rc = err_set(TV_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        if (rc) unlink(tmp);
    }
    free(tmp);
    free(order);
    return rc;
}
