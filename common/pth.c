/* pth — see pth.h. Sections: objects, the unpickler (opcodes, whitelisted callables), then
 * flattening the result into named tensors and scalar leaves, then the public API. */
#include "pth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mapfile.h"
#include "zipread.h"

/* Safety limits against hostile pickles. A real checkpoint (EVA ViT-g: ~1k tensors, a 100 kB
 * pickle; a training checkpoint with optimizer state: a few times more) is far below each. */
#define MAX_PICKLE_BYTES ((size_t)256 << 20)
#define MAX_STACK ((size_t)1 << 20)   /* live stack entries */
#define MAX_MARKS ((size_t)1 << 12)   /* nested MARKs = nesting depth while unpickling */
#define MAX_OBJECTS ((size_t)1 << 22) /* objects created */
#define MAX_MEMO ((size_t)1 << 22)    /* highest memo index + 1 */
#define MAX_DEPTH 64                  /* dict/list nesting when naming leaves */
#define MAX_VISITS ((size_t)1 << 22)  /* nodes visited when naming (shared subtrees repeat) */
#define MAX_NAME 4096                 /* a flattened name */
/* Gathered (non-contiguous) tensors may take at most this much beyond twice the file size:
 * real views are transposes or slices of storages in the file; an expand to petabytes is not. */
#define GATHER_SLACK ((uint64_t)16 << 20)

/* ================================ objects ================================ */

typedef enum { O_NONE, O_BOOL, O_INT, O_FLOAT, O_STR, O_TUPLE, O_LIST, O_DICT, O_GLOBAL,
               O_STORAGE, O_TENSOR } okind;

typedef enum { G_ODICT, G_REBUILD_V2, G_PARAM, G_PARAM_STATE, G_STORAGE_TYPE } gkind;

typedef struct {
    const unsigned char *data; /* storage bytes inside the archive */
    uint64_t numel;
    dtype_id dt;
} pstorage;

typedef struct {
    const unsigned char *sdata; /* the storage's first byte */
    uint64_t snumel;
    dtype_id dt;
    int64_t offset; /* in elements */
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS], stride[TENSOR_MAX_DIMS];
    uint64_t numel;
    const void *out; /* contiguous bytes once materialized (shared by every name of it) */
    int done;
} ptensor;

typedef struct obj obj;
struct obj {
    okind kind;
    union {
        int64_t i;                                   /* O_INT, O_BOOL */
        double f;                                    /* O_FLOAT */
        struct { char *p; size_t len; } s;           /* O_STR (NUL-terminated copy) */
        struct { obj **v; size_t n, cap; } seq;      /* O_TUPLE, O_LIST, O_DICT (k,v pairs) */
        struct { gkind id; dtype_id dt; } g;         /* O_GLOBAL */
        pstorage st;                                 /* O_STORAGE */
        ptensor *t;                                  /* O_TENSOR */
    } u;
};

typedef struct {
    char *name;
    okind kind; /* O_INT, O_BOOL, O_FLOAT or O_STR */
    int64_t i;
    double f;
    char *s;
} pscalar;

typedef struct named {
    const char *name;
    size_t i;
} named;

struct pth_file {
    mapfile *mf;
    const unsigned char *buf;
    size_t len;
    char *label;
    char *prefix;
    tensor_view *tensors;
    size_t ntensors, tcap;
    pscalar *scalars;
    size_t nscalars, scap;
    named *tsorted, *ssorted;       /* (name, index) sorted by name, for lookups */
    void **owned;              /* gathered buffers */
    size_t nowned, ocap;
    uint64_t gathered;
};

/* The unpickler's state. */
typedef struct {
    const unsigned char *p;
    size_t len, pos, op_pos;
    const char *label;
    const zipr *zip;
    const char *prefix;
    obj **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    obj **memo;
    size_t nmemo, memo_set; /* slots allocated; slots set (MEMOIZE's next index) */
    obj **all; /* every object, for freeing */
    size_t nall, acap;
} upk;

static void grow(void **v, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    *v = tv_xrealloc(*v, c * elem);
    *cap = c;
}

static int new_obj(upk *u, okind k, obj **out) {
    if (u->nall >= MAX_OBJECTS)
        return err_set(TV_ELIMIT, "%s: pickle creates more than %zu objects", u->label,
                       MAX_OBJECTS);
    grow((void **)&u->all, &u->acap, u->nall + 1, sizeof *u->all);
    obj *o = tv_xcalloc(1, sizeof *o);
    o->kind = k;
    u->all[u->nall++] = o;
    *out = o;
    return TV_OK;
}

static void free_obj(obj *o) {
    switch (o->kind) {
    case O_STR: free(o->u.s.p); break;
    case O_TUPLE: case O_LIST: case O_DICT: free(o->u.seq.v); break;
    case O_TENSOR: free(o->u.t); break;
    default: break;
    }
    free(o);
}

static void seq_push(obj *o, obj *item) {
    grow((void **)&o->u.seq.v, &o->u.seq.cap, o->u.seq.n + 1, sizeof *o->u.seq.v);
    o->u.seq.v[o->u.seq.n++] = item;
}

static const char *kind_name(okind k) {
    static const char *names[] = {"None", "bool", "int", "float", "str", "tuple", "list",
                                  "dict", "global", "storage", "tensor"};
    return names[k];
}

/* ================================ unpickler ================================ */

static int fail(upk *u, int code, const char *what) {
    return err_set(code, "%s: pickle offset %zu: %s", u->label, u->op_pos, what);
}

static int take(upk *u, size_t n, const unsigned char **out) {
    if (n > u->len - u->pos) return fail(u, TV_EFORMAT, "truncated pickle");
    *out = u->p + u->pos;
    u->pos += n;
    return TV_OK;
}

static uint64_t le(const unsigned char *b, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* Entries above the innermost MARK: the only ones an opcode may pop. */
static size_t avail(const upk *u) { return u->sp - (u->nmarks ? u->marks[u->nmarks - 1] : 0); }

static int push(upk *u, obj *o) {
    if (u->sp >= MAX_STACK) return fail(u, TV_ELIMIT, "pickle stack too deep");
    grow((void **)&u->stack, &u->scap, u->sp + 1, sizeof *u->stack);
    u->stack[u->sp++] = o;
    return TV_OK;
}

static int pop(upk *u, obj **out) {
    if (avail(u) < 1) return fail(u, TV_EFORMAT, "pickle stack underflow");
    *out = u->stack[--u->sp];
    return TV_OK;
}

static int top(upk *u, obj **out) {
    if (avail(u) < 1) return fail(u, TV_EFORMAT, "pickle stack underflow");
    *out = u->stack[u->sp - 1];
    return TV_OK;
}

static int push_new(upk *u, okind k, obj **out) {
    obj *o = NULL;
    int rc = new_obj(u, k, &o);
    if (rc) return rc;
    if (out) *out = o;
    return push(u, o);
}

static int push_int(upk *u, okind k, int64_t v) {
    obj *o = NULL;
    int rc = push_new(u, k, &o);
    if (!rc) o->u.i = v;
    return rc;
}

static int push_str(upk *u, const unsigned char *b, size_t n) {
    obj *o = NULL;
    int rc = push_new(u, O_STR, &o);
    if (rc) return rc;
    o->u.s.p = tv_xmalloc(n + 1);
    memcpy(o->u.s.p, b, n);
    o->u.s.p[n] = 0;
    o->u.s.len = n;
    return TV_OK;
}

/* Pops the items above the innermost MARK (and the mark) into *first and *n: they stay readable at
 * stack slots sp .. sp+n-1 until the next push. */
static int pop_mark(upk *u, obj ***first, size_t *n) {
    if (!u->nmarks) return fail(u, TV_EFORMAT, "no MARK on the pickle stack");
    size_t m = u->marks[--u->nmarks];
    *first = u->stack + m;
    *n = u->sp - m;
    u->sp = m;
    return TV_OK;
}

static int make_tuple(upk *u, obj **items, size_t n) {
    obj *t = NULL;
    int rc = new_obj(u, O_TUPLE, &t);
    if (rc) return rc;
    /* items may alias the stack slots push() is about to reuse: copy them first. */
    for (size_t i = 0; i < n; i++) seq_push(t, items[i]);
    return push(u, t);
}

static int op_tuple_n(upk *u, size_t n) {
    if (avail(u) < n) return fail(u, TV_EFORMAT, "pickle stack underflow");
    u->sp -= n;
    return make_tuple(u, u->stack + u->sp, n);
}

static int append_items(upk *u, obj *list, obj **items, size_t n) {
    if (list->kind != O_LIST) return fail(u, TV_EFORMAT, "APPEND to something not a list");
    for (size_t i = 0; i < n; i++) seq_push(list, items[i]);
    return TV_OK;
}

static int set_items(upk *u, obj *dict, obj **items, size_t n) {
    if (dict->kind != O_DICT) return fail(u, TV_EFORMAT, "SETITEM on something not a dict");
    if (n % 2) return fail(u, TV_EFORMAT, "SETITEMS with an odd number of items");
    for (size_t i = 0; i < n; i++) seq_push(dict, items[i]);
    return TV_OK;
}

/* ---- globals: the whitelist ---- */

static const struct {
    const char *name;
    dtype_id dt;
} storage_types[] = {
    {"FloatStorage", DT_F32}, {"HalfStorage", DT_F16},  {"BFloat16Storage", DT_BF16},
    {"DoubleStorage", DT_F64}, {"LongStorage", DT_I64}, {"IntStorage", DT_I32},
    {"ShortStorage", DT_I16}, {"CharStorage", DT_I8},   {"ByteStorage", DT_U8},
    {"BoolStorage", DT_BOOL},
};

static int resolve_global(upk *u, const char *mod, const char *name) {
    obj *g = NULL;
    int rc = new_obj(u, O_GLOBAL, &g);
    if (rc) return rc;
    int ok = 1;
    if (!strcmp(mod, "collections") && !strcmp(name, "OrderedDict")) g->u.g.id = G_ODICT;
    else if (!strcmp(mod, "torch._utils") && !strcmp(name, "_rebuild_tensor_v2"))
        g->u.g.id = G_REBUILD_V2;
    else if (!strcmp(mod, "torch._utils") && !strcmp(name, "_rebuild_parameter"))
        g->u.g.id = G_PARAM;
    else if (!strcmp(mod, "torch._utils") && !strcmp(name, "_rebuild_parameter_with_state"))
        g->u.g.id = G_PARAM_STATE;
    else {
        ok = 0;
        for (size_t i = 0; !strcmp(mod, "torch") && i < sizeof storage_types / sizeof *storage_types; i++)
            if (!strcmp(name, storage_types[i].name)) {
                g->u.g.id = G_STORAGE_TYPE;
                g->u.g.dt = storage_types[i].dt;
                ok = 1;
            }
    }
    if (!ok)
        return err_set(TV_EUNSUPPORTED,
                       "%s: pickle offset %zu: refusing global '%s.%s' (not on the whitelist of "
                       "torch.save state-dict types; this reader never executes code)",
                       u->label, u->op_pos, mod, name);
    return push(u, g);
}

/* GLOBAL: "module\nname\n" as text. */
static int op_global(upk *u) {
    char part[2][256];
    for (int k = 0; k < 2; k++) {
        const unsigned char *s = u->p + u->pos;
        const unsigned char *nl = memchr(s, '\n', u->len - u->pos);
        size_t n = nl ? (size_t)(nl - s) : 0;
        if (!nl || n >= sizeof part[k] || memchr(s, 0, n))
            return fail(u, TV_EFORMAT, "bad GLOBAL operand");
        memcpy(part[k], s, n);
        part[k][n] = 0;
        u->pos += n + 1;
    }
    return resolve_global(u, part[0], part[1]);
}

static int op_stack_global(upk *u) {
    obj *name = NULL, *mod = NULL;
    int rc = pop(u, &name);
    if (!rc) rc = pop(u, &mod);
    if (rc) return rc;
    if (name->kind != O_STR || mod->kind != O_STR || strlen(name->u.s.p) != name->u.s.len ||
        strlen(mod->u.s.p) != mod->u.s.len)
        return fail(u, TV_EFORMAT, "STACK_GLOBAL needs two strings");
    return resolve_global(u, mod->u.s.p, name->u.s.p);
}

/* BINPERSID: torch's persistent id ('storage', torch.XStorage, key, location, numel) names the
 * archive entry <prefix>/data/<key> holding the storage's bytes. */
static int op_persid(upk *u) {
    obj *pid = NULL;
    int rc = pop(u, &pid);
    if (rc) return rc;
    obj **v = pid->u.seq.v;
    if (pid->kind != O_TUPLE || pid->u.seq.n != 5 || v[0]->kind != O_STR ||
        strcmp(v[0]->u.s.p, "storage") || v[1]->kind != O_GLOBAL ||
        v[1]->u.g.id != G_STORAGE_TYPE || v[2]->kind != O_STR || v[3]->kind != O_STR ||
        v[4]->kind != O_INT || v[4]->u.i < 0)
        return fail(u, TV_EFORMAT,
                    "persistent id is not ('storage', torch.<Type>Storage, key, location, "
                    "numel)");
    dtype_id dt = v[1]->u.g.dt;
    uint64_t numel = (uint64_t)v[4]->u.i, esz = dtype_size(dt);
    char ename[MAX_NAME];
    int n = snprintf(ename, sizeof ename, "%s/data/%s", u->prefix, v[2]->u.s.p);
    if (n < 0 || (size_t)n >= sizeof ename) return fail(u, TV_EFORMAT, "storage key too long");
    const zipr_entry *e = zipr_find(u->zip, ename);
    if (!e)
        return err_set(TV_EFORMAT, "%s: pickle offset %zu: storage '%s' is not in the archive",
                       u->label, u->op_pos, ename);
    const unsigned char *data;
    size_t len;
    rc = zipr_data(u->zip, e, &data, &len);
    if (rc) return err_wrap(rc, "%s: storage '%s'", u->label, ename);
    if (numel > UINT64_MAX / esz || numel * esz != len)
        return err_set(TV_EFORMAT,
                       "%s: storage '%s' holds %zu bytes but %llu elements of %s need %llu",
                       u->label, ename, len, (unsigned long long)numel, dtype_name(dt),
                       numel > UINT64_MAX / esz ? 0ull : (unsigned long long)(numel * esz));
    obj *s = NULL;
    rc = push_new(u, O_STORAGE, &s);
    if (rc) return rc;
    s->u.st.data = data;
    s->u.st.numel = numel;
    s->u.st.dt = dt;
    return TV_OK;
}

/* Reads a tuple of ndim non-negative ints into dims. */
static int int_tuple(upk *u, const obj *t, int64_t *dims, int *ndim, const char *what) {
    char msg[96];
    if (t->kind != O_TUPLE || t->u.seq.n > TENSOR_MAX_DIMS) {
        snprintf(msg, sizeof msg, "tensor %s is not a tuple of at most %d ints", what,
                 TENSOR_MAX_DIMS);
        return fail(u, t->kind == O_TUPLE ? TV_EUNSUPPORTED : TV_EFORMAT, msg);
    }
    for (size_t i = 0; i < t->u.seq.n; i++) {
        const obj *d = t->u.seq.v[i];
        if (d->kind != O_INT || d->u.i < 0) {
            snprintf(msg, sizeof msg, "tensor %s holds a %s or a negative value", what,
                     kind_name(d->kind));
            return fail(u, TV_EFORMAT, msg);
        }
        dims[i] = d->u.i;
    }
    *ndim = (int)t->u.seq.n;
    return TV_OK;
}

/* Checks that the view (offset, shape, stride) stays inside its storage, with overflow checks. */
static int check_view(upk *u, ptensor *t) {
    uint64_t numel = 1, last = (uint64_t)t->offset;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d = (uint64_t)t->shape[i];
        if (d && numel > INT64_MAX / d) return fail(u, TV_EFORMAT, "tensor size overflows");
        numel *= d;
    }
    t->numel = numel;
    if (numel > SIZE_MAX / dtype_size(t->dt)) return fail(u, TV_EFORMAT, "tensor too large");
    if (numel == 0) {
        if ((uint64_t)t->offset > t->snumel)
            return fail(u, TV_EFORMAT, "empty tensor's offset lies outside its storage");
        return TV_OK;
    }
    for (int i = 0; i < t->ndim; i++) {
        uint64_t span = (uint64_t)(t->shape[i] - 1), st = (uint64_t)t->stride[i];
        if (st && span > (UINT64_MAX - last) / st)
            return fail(u, TV_EFORMAT, "tensor strides overflow");
        last += span * st;
    }
    if (last >= t->snumel) {
        char msg[160];
        snprintf(msg, sizeof msg, "tensor view reaches element %llu of a %llu-element storage",
                 (unsigned long long)last, (unsigned long long)t->snumel);
        return fail(u, TV_EFORMAT, msg);
    }
    return TV_OK;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
 * [, metadata]). requires_grad, hooks and metadata do not matter for inference. */
static int call_rebuild_v2(upk *u, obj *args) {
    obj **a = args->u.seq.v;
    size_t n = args->u.seq.n;
    if (n < 6 || n > 7 || a[0]->kind != O_STORAGE || a[1]->kind != O_INT || a[1]->u.i < 0)
        return fail(u, TV_EFORMAT, "_rebuild_tensor_v2 needs (storage, offset, size, stride, "
                                   "requires_grad, hooks[, metadata])");
    ptensor *t = tv_xcalloc(1, sizeof *t);
    obj *o = NULL;
    int rc = new_obj(u, O_TENSOR, &o);
    if (rc) {
        free(t);
        return rc;
    }
    o->u.t = t;
    t->sdata = a[0]->u.st.data;
    t->snumel = a[0]->u.st.numel;
    t->dt = a[0]->u.st.dt;
    t->offset = a[1]->u.i;
    int sdim;
    rc = int_tuple(u, a[2], t->shape, &t->ndim, "size");
    if (!rc) rc = int_tuple(u, a[3], t->stride, &sdim, "stride");
    if (!rc && sdim != t->ndim) rc = fail(u, TV_EFORMAT, "tensor size and stride differ in length");
    if (!rc) rc = check_view(u, t);
    return rc ? rc : push(u, o);
}

static int call_global(upk *u, const obj *fn, obj *args) {
    if (args->kind != O_TUPLE) return fail(u, TV_EFORMAT, "REDUCE arguments are not a tuple");
    size_t n = args->u.seq.n;
    obj **a = args->u.seq.v;
    switch (fn->u.g.id) {
    case G_ODICT:
        if (n != 0) return fail(u, TV_EUNSUPPORTED, "OrderedDict called with arguments");
        return push_new(u, O_DICT, NULL);
    case G_REBUILD_V2:
        return call_rebuild_v2(u, args);
    case G_PARAM:
    case G_PARAM_STATE:
        /* (data, requires_grad, backward_hooks[, state]): the parameter is its data. */
        if (n != (fn->u.g.id == G_PARAM ? 3u : 4u) || a[0]->kind != O_TENSOR)
            return fail(u, TV_EFORMAT, "_rebuild_parameter needs (tensor, requires_grad, hooks)");
        return push(u, a[0]);
    case G_STORAGE_TYPE:
        break;
    }
    return fail(u, TV_EUNSUPPORTED, "a storage type is called, which torch.save never does");
}

static int op_reduce(upk *u) {
    obj *args = NULL, *fn = NULL;
    int rc = pop(u, &args);
    if (!rc) rc = pop(u, &fn);
    if (rc) return rc;
    if (fn->kind != O_GLOBAL) return fail(u, TV_EFORMAT, "REDUCE on something not callable");
    return call_global(u, fn, args);
}

/* BUILD sets state on the object below it: state_dict()'s OrderedDict carries _metadata this
 * way. Accepted (and ignored) on dicts and tensors only. */
static int op_build(upk *u) {
    obj *state = NULL, *target = NULL;
    int rc = pop(u, &state);
    if (!rc) rc = top(u, &target);
    if (rc) return rc;
    if (target->kind != O_DICT && target->kind != O_TENSOR)
        return fail(u, TV_EUNSUPPORTED, "BUILD on something other than a dict or tensor");
    return TV_OK;
}

static int memo_put(upk *u, uint64_t idx) {
    obj *o = NULL;
    int rc = top(u, &o);
    if (rc) return rc;
    if (idx >= MAX_MEMO) return fail(u, TV_ELIMIT, "memo index too large");
    if (idx >= u->nmemo) {
        size_t old = u->nmemo, cap = u->nmemo;
        grow((void **)&u->memo, &cap, (size_t)idx + 1, sizeof *u->memo);
        memset(u->memo + old, 0, (cap - old) * sizeof *u->memo);
        u->nmemo = cap;
    }
    if (!u->memo[idx]) u->memo_set++;
    u->memo[idx] = o;
    return TV_OK;
}

static int memo_get(upk *u, uint64_t idx) {
    if (idx >= u->nmemo || !u->memo[idx]) return fail(u, TV_EFORMAT, "memo index not set");
    return push(u, u->memo[idx]);
}

static int op_string(upk *u, int lenbytes) {
    const unsigned char *b = NULL;
    int rc = take(u, (size_t)lenbytes, &b);
    if (rc) return rc;
    uint64_t n = le(b, lenbytes);
    if (n > u->len - u->pos) return fail(u, TV_EFORMAT, "string runs past the pickle");
    rc = take(u, (size_t)n, &b);
    return rc ? rc : push_str(u, b, (size_t)n);
}

/* LONG1: little-endian two's complement of n <= 8 bytes. */
static int op_long1(upk *u) {
    const unsigned char *b = NULL;
    int rc = take(u, 1, &b);
    size_t n = rc ? 0 : b[0];
    if (!rc) rc = take(u, n, &b);
    if (rc) return rc;
    if (n > 8) return fail(u, TV_EUNSUPPORTED, "integer wider than 64 bits");
    uint64_t v = n ? le(b, (int)n) : 0;
    if (n && n < 8 && (b[n - 1] & 0x80)) v |= UINT64_MAX << (8 * n);
    return push_int(u, O_INT, (int64_t)v);
}

static int op_float(upk *u) {
    const unsigned char *b = NULL;
    int rc = take(u, 8, &b);
    if (rc) return rc;
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++) bits = bits << 8 | b[i]; /* big-endian */
    obj *o = NULL;
    rc = push_new(u, O_FLOAT, &o);
    if (!rc) memcpy(&o->u.f, &bits, 8);
    return rc;
}

static int op_mark(upk *u) {
    if (u->nmarks >= MAX_MARKS) return fail(u, TV_ELIMIT, "pickle nests too deeply");
    grow((void **)&u->marks, &u->mcap, u->nmarks + 1, sizeof *u->marks);
    u->marks[u->nmarks++] = u->sp;
    return TV_OK;
}

/* Ops that take the items above a MARK. */
static int op_marked(upk *u, unsigned char op) {
    obj **items = NULL, *target = NULL;
    size_t n = 0;
    int rc = pop_mark(u, &items, &n);
    if (rc) return rc;
    switch (op) {
    case 't': return make_tuple(u, items, n);
    case 'l': {
        obj *l = NULL;
        rc = new_obj(u, O_LIST, &l);
        if (!rc) rc = append_items(u, l, items, n);
        return rc ? rc : push(u, l);
    }
    case 'd': {
        obj *d = NULL;
        rc = new_obj(u, O_DICT, &d);
        if (!rc) rc = set_items(u, d, items, n);
        return rc ? rc : push(u, d);
    }
    case 'e':
        rc = top(u, &target);
        return rc ? rc : append_items(u, target, items, n);
    case 'u':
        rc = top(u, &target);
        return rc ? rc : set_items(u, target, items, n);
    default: /* '1' POP_MARK */
        return TV_OK;
    }
}

static int op_fixed_int(upk *u, int nbytes, int is_signed) {
    const unsigned char *b = NULL;
    int rc = take(u, (size_t)nbytes, &b);
    if (rc) return rc;
    uint64_t v = le(b, nbytes);
    int64_t s = is_signed ? (int64_t)(int32_t)(uint32_t)v : (int64_t)v;
    return push_int(u, O_INT, s);
}

static int op_index(upk *u, int nbytes, int put) {
    const unsigned char *b = NULL;
    int rc = take(u, (size_t)nbytes, &b);
    if (rc) return rc;
    uint64_t idx = le(b, nbytes);
    return put ? memo_put(u, idx) : memo_get(u, idx);
}

static int op_two(upk *u, unsigned char op) {
    obj *a = NULL, *b = NULL, *c = NULL;
    int rc;
    switch (op) {
    case 'a': /* APPEND */
        rc = pop(u, &a);
        if (!rc) rc = top(u, &b);
        return rc ? rc : append_items(u, b, &a, 1);
    case 's': { /* SETITEM */
        obj *kv[2];
        rc = pop(u, &b);
        if (!rc) rc = pop(u, &a);
        if (!rc) rc = top(u, &c);
        if (rc) return rc;
        kv[0] = a;
        kv[1] = b;
        return set_items(u, c, kv, 2);
    }
    default: /* '0' POP */
        return pop(u, &a);
    }
}

/* One opcode. Sets *stop at STOP. */
static int step(upk *u, int *stop) {
    const unsigned char *b = NULL;
    u->op_pos = u->pos;
    int rc = take(u, 1, &b);
    if (rc) return fail(u, TV_EFORMAT, "pickle ends without STOP");
    unsigned char op = b[0];
    switch (op) {
    case 0x80: /* PROTO */
        rc = take(u, 1, &b);
        if (!rc && (b[0] < 2 || b[0] > 5))
            return fail(u, TV_EUNSUPPORTED, "pickle protocol outside 2..5");
        return rc;
    case 0x95: /* FRAME: a length hint only */
        return take(u, 8, &b);
    case '.': *stop = 1; return TV_OK;
    case '}': return push_new(u, O_DICT, NULL);
    case ']': return push_new(u, O_LIST, NULL);
    case ')': return make_tuple(u, NULL, 0);
    case '(': return op_mark(u);
    case 't': case 'l': case 'd': case 'e': case 'u': case '1': return op_marked(u, op);
    case 0x85: return op_tuple_n(u, 1);
    case 0x86: return op_tuple_n(u, 2);
    case 0x87: return op_tuple_n(u, 3);
    case 'a': case 's': case '0': return op_two(u, op);
    case 'X': return op_string(u, 4);
    case 0x8c: return op_string(u, 1);
    case 0x8d: return op_string(u, 8);
    case 'J': return op_fixed_int(u, 4, 1);
    case 'K': return op_fixed_int(u, 1, 0);
    case 'M': return op_fixed_int(u, 2, 0);
    case 0x8a: return op_long1(u);
    case 'G': return op_float(u);
    case 'N': return push_new(u, O_NONE, NULL);
    case 0x88: return push_int(u, O_BOOL, 1);
    case 0x89: return push_int(u, O_BOOL, 0);
    case 'q': return op_index(u, 1, 1);
    case 'r': return op_index(u, 4, 1);
    case 0x94: return memo_put(u, u->memo_set); /* MEMOIZE: the next free index */
    case 'h': return op_index(u, 1, 0);
    case 'j': return op_index(u, 4, 0);
    case 'c': return op_global(u);
    case 0x93: return op_stack_global(u);
    case 'R': return op_reduce(u);
    case 'b': return op_build(u);
    case 'Q': return op_persid(u);
    default: {
        char msg[96];
        if (op >= 0x20 && op < 0x7f)
            snprintf(msg, sizeof msg, "unsupported pickle opcode 0x%02x ('%c')", op, op);
        else
            snprintf(msg, sizeof msg, "unsupported pickle opcode 0x%02x", op);
        return fail(u, TV_EUNSUPPORTED, msg);
    }
    }
}

static int unpickle(upk *u, obj **root) {
    int stop = 0, rc = TV_OK;
    while (!stop && !rc) rc = step(u, &stop);
    if (rc) return rc;
    if (u->sp != 1 || u->nmarks) return fail(u, TV_EFORMAT, "pickle stack not balanced at STOP");
    *root = u->stack[0];
    return TV_OK;
}

static void upk_free(upk *u) {
    for (size_t i = 0; i < u->nall; i++) free_obj(u->all[i]);
    free(u->all);
    free(u->stack);
    free(u->marks);
    free(u->memo);
}

/* ================================ flattening ================================ */

typedef struct {
    pth_file *p;
    char name[MAX_NAME];
    size_t visits;
} flat;

static int is_contig(const ptensor *t) {
    int64_t want = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != want) return 0;
        want *= t->shape[i];
    }
    return 1;
}

/* Copies a strided view into a fresh contiguous buffer owned by p. */
static int gather(pth_file *p, ptensor *t, const char *name) {
    size_t esz = dtype_size(t->dt), nbytes = (size_t)t->numel * esz;
    if (nbytes > 2 * (uint64_t)p->len + GATHER_SLACK - p->gathered)
        return err_set(TV_ELIMIT, "%s: non-contiguous tensor '%s' would need %zu more bytes "
                       "than this file can justify", p->label, name, nbytes);
    unsigned char *dst = malloc(nbytes ? nbytes : 1);
    if (!dst) return err_set(TV_ENOMEM, "%s: cannot allocate %zu bytes for '%s'", p->label,
                             nbytes, name);
    p->gathered += nbytes;
    grow((void **)&p->owned, &p->ocap, p->nowned + 1, sizeof *p->owned);
    p->owned[p->nowned++] = dst;
    int64_t idx[TENSOR_MAX_DIMS] = {0};
    for (uint64_t k = 0; k < t->numel; k++) {
        uint64_t off = (uint64_t)t->offset;
        for (int d = 0; d < t->ndim; d++) off += (uint64_t)idx[d] * (uint64_t)t->stride[d];
        memcpy(dst + k * esz, t->sdata + off * esz, esz);
        for (int d = t->ndim - 1; d >= 0 && ++idx[d] == t->shape[d]; d--) idx[d] = 0;
    }
    t->out = dst;
    return TV_OK;
}

static int add_tensor(flat *f, ptensor *t) {
    pth_file *p = f->p;
    size_t esz = dtype_size(t->dt);
    if (!t->done) {
        const unsigned char *src = t->sdata + (uint64_t)t->offset * esz;
        if (t->numel == 0) t->out = t->sdata;
        else if (is_contig(t) && (uintptr_t)src % esz == 0) t->out = src;
        else {
            /* Also reached for misaligned data (a zip not written by torch), so consumers can
             * always read elements through typed pointers. */
            int rc = gather(p, t, f->name);
            if (rc) return rc;
        }
        t->done = 1;
    }
    grow((void **)&p->tensors, &p->tcap, p->ntensors + 1, sizeof *p->tensors);
    tensor_view *v = &p->tensors[p->ntensors++];
    memset(v, 0, sizeof *v);
    v->name = strdup(f->name);
    TV_ASSERT(v->name);
    v->dtype = t->dt;
    v->ndim = t->ndim;
    memcpy(v->shape, t->shape, sizeof v->shape);
    v->data = t->out;
    v->nbytes = (size_t)t->numel * esz;
    return TV_OK;
}

static void add_scalar(flat *f, const obj *o) {
    pth_file *p = f->p;
    grow((void **)&p->scalars, &p->scap, p->nscalars + 1, sizeof *p->scalars);
    pscalar *s = &p->scalars[p->nscalars++];
    memset(s, 0, sizeof *s);
    s->name = strdup(f->name);
    TV_ASSERT(s->name);
    s->kind = o->kind;
    if (o->kind == O_FLOAT) s->f = o->u.f;
    else if (o->kind == O_STR) {
        s->s = strdup(o->u.s.p);
        TV_ASSERT(s->s);
    } else s->i = o->u.i;
}

static int visit(flat *f, const obj *o, int depth);

/* Appends ".key" (or "key" at the top) to f->name; returns the old length to restore, or -1
 * when the key cannot name anything (its subtree is skipped). */
static int push_name(flat *f, const char *key, size_t *old) {
    size_t n = strlen(f->name), k = strlen(key);
    *old = n;
    if (n + (n ? 1 : 0) + k >= MAX_NAME)
        return err_set(TV_ELIMIT, "%s: a name under '%.64s' is longer than %d bytes",
                       f->p->label, f->name, MAX_NAME);
    if (n) f->name[n++] = '.';
    memcpy(f->name + n, key, k + 1);
    return TV_OK;
}

static int visit_child(flat *f, const char *key, const obj *o, int depth) {
    size_t old;
    int rc = push_name(f, key, &old);
    if (!rc) rc = visit(f, o, depth + 1);
    f->name[old] = 0;
    return rc;
}

static int visit(flat *f, const obj *o, int depth) {
    if (depth > MAX_DEPTH)
        return err_set(TV_ELIMIT, "%s: containers nest deeper than %d (at '%.64s')",
                       f->p->label, MAX_DEPTH, f->name);
    if (++f->visits > MAX_VISITS)
        return err_set(TV_ELIMIT, "%s: more than %zu values to name", f->p->label, MAX_VISITS);
    char key[32];
    int rc = TV_OK;
    switch (o->kind) {
    case O_TENSOR: return add_tensor(f, o->u.t);
    case O_INT: case O_BOOL: case O_FLOAT: case O_STR: add_scalar(f, o); return TV_OK;
    case O_DICT:
        for (size_t i = 0; i + 1 < o->u.seq.n && !rc; i += 2) {
            const obj *k = o->u.seq.v[i];
            if (k->kind == O_STR) rc = visit_child(f, k->u.s.p, o->u.seq.v[i + 1], depth);
            else if (k->kind == O_INT) {
                snprintf(key, sizeof key, "%lld", (long long)k->u.i);
                rc = visit_child(f, key, o->u.seq.v[i + 1], depth);
            } /* other key types name nothing we can look up: skipped */
        }
        return rc;
    case O_LIST: case O_TUPLE:
        for (size_t i = 0; i < o->u.seq.n && !rc; i++) {
            snprintf(key, sizeof key, "%zu", i);
            rc = visit_child(f, key, o->u.seq.v[i], depth);
        }
        return rc;
    default: return TV_OK; /* None, globals, bare storages */
    }
}

/* ================================ lookup index ================================ */

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* Sorts names[0..n) into *out; a duplicate name is an error (lookups would be ambiguous). */
static int build_index(const pth_file *p, named *ix, size_t n, named **out) {
    *out = ix;
    qsort(ix, n, sizeof *ix, cmp_named);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(ix[i - 1].name, ix[i].name))
            return err_set(TV_EFORMAT, "%s: two entries are both named '%s'", p->label,
                           ix[i].name);
    return TV_OK;
}

static int build_indexes(pth_file *p) {
    named *t = tv_xmalloc((p->ntensors ? p->ntensors : 1) * sizeof *t);
    for (size_t i = 0; i < p->ntensors; i++) t[i] = (named){p->tensors[i].name, i};
    int rc = build_index(p, t, p->ntensors, &p->tsorted);
    if (rc) return rc;
    named *s = tv_xmalloc((p->nscalars ? p->nscalars : 1) * sizeof *s);
    for (size_t i = 0; i < p->nscalars; i++) s[i] = (named){p->scalars[i].name, i};
    return build_index(p, s, p->nscalars, &p->ssorted);
}

/* Binary search of a sorted index; returns the entry index or SIZE_MAX. */
static size_t lookup(const named *ix, size_t n, const char *name) {
    const named key = {name, 0};
    const named *hit = bsearch(&key, ix, n, sizeof *ix, cmp_named);
    return hit ? hit->i : SIZE_MAX;
}

/* ================================ open ================================ */

/* Finds "<prefix>/data.pkl" with a one-level prefix (torch uses the file's stem, or "archive"). */
static int find_pickle(pth_file *p, const zipr *z, const zipr_entry **pkl) {
    for (size_t i = 0; i < zipr_count(z); i++) {
        const zipr_entry *e = zipr_entry_at(z, i);
        const char *slash = strchr(e->name, '/');
        if (slash && slash != e->name && !strcmp(slash, "/data.pkl")) {
            p->prefix = strndup(e->name, (size_t)(slash - e->name));
            TV_ASSERT(p->prefix);
            *pkl = e;
            return TV_OK;
        }
    }
    return err_set(TV_EFORMAT, "%s: zip archive without <prefix>/data.pkl: not a torch.save file",
                   p->label);
}

static int check_byteorder(const pth_file *p, const zipr *z) {
    char name[MAX_NAME];
    snprintf(name, sizeof name, "%s/byteorder", p->prefix);
    const zipr_entry *e = zipr_find(z, name);
    if (!e) return TV_OK; /* older writers: little-endian implied */
    const unsigned char *d;
    size_t n = 0;
    int rc = zipr_data(z, e, &d, &n);
    if (rc) return rc;
    if (n == 6 && !memcmp(d, "little", 6)) return TV_OK;
    if (n == 3 && !memcmp(d, "big", 3))
        return err_set(TV_EUNSUPPORTED, "%s: checkpoint saved on a big-endian machine",
                       p->label);
    return err_set(TV_EFORMAT, "%s: unrecognised byteorder record", p->label);
}

static int check_legacy(const pth_file *p) {
    /* Pre-1.6 torch.save wrote a bare pickle stream (PROTO opcode first) or, before that, a tar. */
    int pickle = p->len >= 2 && p->buf[0] == 0x80 && p->buf[1] <= 5;
    int tar = p->len >= 262 && !memcmp(p->buf + 257, "ustar", 5);
    if (pickle || tar)
        return err_set(TV_EUNSUPPORTED,
                       "%s: legacy (pre-1.6, non-zip) torch.save format; load it with torch and "
                       "re-save it with a recent torch: torch.save(torch.load(f), f2)",
                       p->label);
    return TV_OK;
}

static int read_all(pth_file *p) {
    int rc = check_legacy(p);
    if (rc) return rc;
    zipr *z = NULL;
    rc = zipr_open_mem(p->buf, p->len, p->label, &z);
    if (rc) return rc;
    const zipr_entry *pkl = NULL;
    const unsigned char *pdata = NULL;
    size_t plen = 0;
    upk u = {0};
    rc = find_pickle(p, z, &pkl);
    if (!rc) rc = check_byteorder(p, z);
    if (!rc) rc = zipr_data(z, pkl, &pdata, &plen);
    if (!rc && plen > MAX_PICKLE_BYTES)
        rc = err_set(TV_ELIMIT, "%s: data.pkl is %zu bytes (limit %zu)", p->label, plen,
                     MAX_PICKLE_BYTES);
    obj *root = NULL;
    if (!rc) {
        u.p = pdata;
        u.len = plen;
        u.label = p->label;
        u.zip = z;
        u.prefix = p->prefix;
        rc = unpickle(&u, &root);
    }
    if (!rc) {
        flat *f = tv_xcalloc(1, sizeof *f);
        f->p = p;
        rc = visit(f, root, 0);
        free(f);
    }
    if (!rc) rc = build_indexes(p);
    upk_free(&u);
    zipr_free(z);
    return rc;
}

int pth_open_mem(const void *buf, size_t len, const char *label, pth_file **out) {
    TV_ASSERT(out);
    *out = NULL;
    pth_file *p = tv_xcalloc(1, sizeof *p);
    p->buf = buf;
    p->len = buf ? len : 0;
    p->label = strdup(label ? label : "checkpoint");
    TV_ASSERT(p->label);
    int rc = read_all(p);
    if (rc) {
        pth_free(p);
        return rc;
    }
    *out = p;
    return TV_OK;
}

int pth_open(const char *path, pth_file **out) {
    TV_ASSERT(path && out);
    *out = NULL;
    mapfile *mf;
    int rc = mf_open(path, &mf);
    if (rc) return rc;
    rc = pth_open_mem(mf->data, mf->size, path, out);
    if (rc) {
        mf_free(mf);
        return rc;
    }
    (*out)->mf = mf;
    return TV_OK;
}

void pth_free(pth_file *p) {
    if (!p) return;
    for (size_t i = 0; i < p->ntensors; i++) free((char *)p->tensors[i].name);
    for (size_t i = 0; i < p->nscalars; i++) {
        free(p->scalars[i].name);
        free(p->scalars[i].s);
    }
    for (size_t i = 0; i < p->nowned; i++) free(p->owned[i]);
    free(p->tensors);
    free(p->scalars);
    free(p->tsorted);
    free(p->ssorted);
    free(p->owned);
    free(p->prefix);
    free(p->label);
    mf_free(p->mf);
    free(p);
}

/* ================================ queries ================================ */

size_t pth_count(const pth_file *p) { return p ? p->ntensors : 0; }

const tensor_view *pth_get(const pth_file *p, size_t i) {
    return p && i < p->ntensors ? &p->tensors[i] : NULL;
}

const tensor_view *pth_find(const pth_file *p, const char *name) {
    if (!p || !name) return NULL;
    size_t i = lookup(p->tsorted, p->ntensors, name);
    return i == SIZE_MAX ? NULL : &p->tensors[i];
}

static int find_scalar(const pth_file *p, const char *name, const pscalar **out) {
    TV_ASSERT(p && name);
    size_t i = lookup(p->ssorted, p->nscalars, name);
    if (i == SIZE_MAX)
        return err_set(TV_ENOTFOUND, "%s: no int/float/str value named '%s'", p->label, name);
    *out = &p->scalars[i];
    return TV_OK;
}

static int wrong_type(const pth_file *p, const pscalar *s, const char *want) {
    return err_set(TV_EINVAL, "%s: '%s' is a %s, not %s", p->label, s->name, kind_name(s->kind),
                   want);
}

int pth_get_int(const pth_file *p, const char *name, int64_t *v) {
    const pscalar *s = NULL;
    int rc = find_scalar(p, name, &s);
    if (rc) return rc;
    if (s->kind != O_INT && s->kind != O_BOOL) return wrong_type(p, s, "an int");
    *v = s->i;
    return TV_OK;
}

int pth_get_float(const pth_file *p, const char *name, double *v) {
    const pscalar *s = NULL;
    int rc = find_scalar(p, name, &s);
    if (rc) return rc;
    if (s->kind == O_FLOAT) *v = s->f;
    else if (s->kind == O_INT) *v = (double)s->i;
    else return wrong_type(p, s, "a number");
    return TV_OK;
}

int pth_get_str(const pth_file *p, const char *name, const char **v) {
    const pscalar *s = NULL;
    int rc = find_scalar(p, name, &s);
    if (rc) return rc;
    if (s->kind != O_STR) return wrong_type(p, s, "a string");
    *v = s->s;
    return TV_OK;
}

const void *pth_base(const pth_file *p, size_t *len) {
    if (len) *len = p ? p->len : 0;
    return p ? p->buf : NULL;
}

const char *pth_prefix(const pth_file *p) { return p ? p->prefix : NULL; }
