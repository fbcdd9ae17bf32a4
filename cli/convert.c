/* convert — maps TinyGPT-V's original checkpoints onto the bundle's tensor names (docs/bundle.md)
 * and writes the bundle. The rows themselves are made in convert_rows.c; the manifest, the
 * fingerprint and the command line are in convert_out.c. */
#include "convert.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert_map.h"
#include "err.h"
#include "log.h"
#include "quant.h"

/* ---- inputs -------------------------------------------------------------------------------- */

const tensor_view *conv_in_at(const conv_in *in, size_t i) {
    return in->pth ? pth_get(in->pth, i) : st_model_tensor_at(in->st, i);
}

static void in_setup(conv_in *in, const char *what) {
    in->what = what;
    in->n = in->pth ? pth_count(in->pth) : st_model_count(in->st);
    in->used = tv_xcalloc(in->n + 1, 1);
    in->prefix = "";
    /* torch checkpoints written by a training runner wrap the state dict as {'model': ...} */
    for (size_t i = 0; in->pth && i < in->n; i++)
        if (!strncmp(conv_in_at(in, i)->name, "model.", 6)) {
            in->prefix = "model.";
            break;
        }
}

int conv_in_open_pth(conv_in *in, const char *path, const char *what) {
    memset(in, 0, sizeof *in);
    in->label = path;
    int rc = pth_open(path, &in->pth);
    if (rc) return err_wrap(rc, "%s", what);
    in_setup(in, what);
    return 0;
}

int conv_in_open_st(conv_in *in, const char *path, const char *what) {
    memset(in, 0, sizeof *in);
    in->label = path;
    int rc = st_model_open(path, &in->st);
    if (rc) return err_wrap(rc, "%s", what);
    in_setup(in, what);
    return 0;
}

void conv_in_close(conv_in *in) {
    pth_free(in->pth), st_model_free(in->st), free(in->used), free(in->missing);
    memset(in, 0, sizeof *in);
}

/* The tensor called prefix+name, marked used; NULL when absent (nothing recorded). */
const tensor_view *conv_find(conv_in *in, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", in->prefix, name);
    const tensor_view *v = in->pth ? pth_find(in->pth, full) : st_model_find(in->st, full);
    if (!v) return NULL;
    for (size_t i = 0; i < in->n; i++)
        if (conv_in_at(in, i) == v) in->used[i] = 1;
    return v;
}

/* ---- error collection ---------------------------------------------------------------------- */

void conv_sb_add(char **s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    size_t old = *s ? strlen(*s) : 0;
    *s = tv_xrealloc(*s, old + (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(*s + old, (size_t)n + 1, fmt, ap);
    va_end(ap);
}

void conv_missing(conv_ctx *c, conv_in *in, const char *name) {
    conv_sb_add(&in->missing, "%s%s%s", in->nmissing ? ", " : "", in->prefix, name);
    in->nmissing++;
    c->nmissing++;
}

void conv_bad(conv_ctx *c, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    conv_sb_add(&c->bad, "%s%s", c->nbad ? "; " : "", buf);
    c->nbad++;
}

/* Looks up name and checks its shape against dims (a dim < 0 matches anything). Records a
 * missing name or a wrong shape and returns NULL on either. */
const tensor_view *conv_need_(conv_ctx *c, conv_in *in, const char *name, const int64_t *dims,
                              int ndim) {
    const tensor_view *v = conv_find(in, name);
    if (!v) {
        conv_missing(c, in, name);
        return NULL;
    }
    int ok = v->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = dims[i] < 0 || v->shape[i] == dims[i];
    if (!ok) {
        char got[128], want[128] = "[";
        tensor_shape_str(v, got, sizeof got);
        for (int i = 0; i < ndim; i++) {
            size_t l = strlen(want);
            if (dims[i] < 0) snprintf(want + l, sizeof want - l, "%s*", i ? ", " : "");
            else snprintf(want + l, sizeof want - l, "%s%lld", i ? ", " : "", (long long)dims[i]);
        }
        strncat(want, "]", sizeof want - strlen(want) - 1);
        conv_bad(c, "%s in %s: shape %s, expected %s", v->name, in->label, got, want);
        return NULL;
    }
    if (v->dtype != DT_F32 && v->dtype != DT_F16 && v->dtype != DT_BF16) {
        conv_bad(c, "%s in %s: dtype %s, expected F32, F16 or BF16", v->name, in->label,
                 dtype_name(v->dtype));
        return NULL;
    }
    return v;
}

/* Number of layers under prefix ("blocks." -> 1 + the largest N of "blocks.N.*"). */
int conv_count_layers(const conv_in *in, const char *prefix) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", in->prefix, prefix);
    size_t pl = strlen(full);
    long n = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *name = conv_in_at(in, i)->name;
        if (strncmp(name, full, pl) != 0) continue;
        char *end;
        long k = strtol(name + pl, &end, 10);
        if (end != name + pl && *end == '.' && k >= 0 && k < CONV_MAX_LAYERS && k + 1 > n)
            n = k + 1;
    }
    return (int)n;
}

/* ---- outputs ------------------------------------------------------------------------------- */

const char *conv_name(conv_ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->namebuf[c->nameidx], sizeof c->namebuf[0], fmt, ap);
    va_end(ap);
    const char *s = c->namebuf[c->nameidx];
    c->nameidx = (c->nameidx + 1) % CONV_NAMEBUFS;
    return s;
}

static int emit_job(conv_ctx *c, st_writer *w, const char *name, conv_enc enc, int64_t d0,
                    int64_t d1, int ndim, const conv_src *s) {
    int64_t shape[2] = {d0, d1};
    int rc = conv_job_add(w, &c->jobs, &c->njobs, name, enc, ndim, shape, s);
    if (rc && !c->rc) c->rc = rc;
    return rc;
}

/* A source over one tensor seen as [rows, cols]. */
conv_src conv_view(const tensor_view *t, int64_t rows, int64_t cols) {
    conv_src s = {.kind = CS_VIEW, .rows = rows, .cols = cols, .nparts = 1, .part_rows = rows};
    s.part[0] = t;
    return s;
}

conv_src conv_const(int64_t n, float value) {
    conv_src s = {.kind = CS_CONST, .rows = n, .cols = 1, .value = value};
    return s;
}

/* Emits nothing once an error is recorded: the run will fail, so only the checks go on. */
static int emitting(const conv_ctx *c) { return !c->nmissing && !c->nbad && !c->rc; }

void conv_emit_vec(conv_ctx *c, st_writer *w, const char *name, conv_src s) {
    if (!emitting(c)) return;
    emit_job(c, w, name, CE_F32, s.rows * s.cols, 0, 1, &s);
}

void conv_emit_f32(conv_ctx *c, st_writer *w, const char *name, conv_src s) {
    if (!emitting(c)) return;
    emit_job(c, w, name, CE_F32, s.rows, s.cols, 2, &s);
}

void conv_emit_matrix(conv_ctx *c, st_writer *w, const char *name, conv_src s, int embedding) {
    if (!emitting(c)) return;
    conv_enc e = c->enc;
    int quant = e == CE_Q8 || e == CE_Q4;
    /* embeddings are gathered by row, never multiplied: no block quantisation for them */
    if (quant && (embedding || s.cols % QUANT_BLOCK != 0)) e = CE_F16;
    if (e == CE_Q8 || e == CE_Q4) {
        emit_job(c, w, name, e, s.rows, e == CE_Q8 ? s.cols : s.cols / 2, 2, &s);
        emit_job(c, w, conv_name(c, "%s.scale", name), e == CE_Q8 ? CE_Q8SCALE : CE_Q4SCALE, s.rows,
                 s.cols / QUANT_BLOCK, 2, &s);
        return;
    }
    emit_job(c, w, name, e, s.rows, s.cols, 2, &s);
}

/* ---- the run ------------------------------------------------------------------------------- */

void conv_opts_init(conv_opts *o) {
    memset(o, 0, sizeof *o);
}

/* Known tensors TinyGPT-V does not use: optimizer state, BLIP-2's text branch and T5 glue. */
static int ignorable(const char *name) {
    static const char *const skip[] = {"word_embeddings", "position_embeddings", "position_ids",
                                       "t5_proj", "t5_model", ".intermediate.dense.",
                                       ".output.dense.", ".output.LayerNorm.", "Qformer.cls.",
                                       "rotary_emb.inv_freq", "masked_bias", ".attn.bias"};
    if (!strncmp(name, "optimizer.", 10) || !strncmp(name, "scaler.", 7)) return 1;
    for (size_t i = 0; i < sizeof skip / sizeof *skip; i++)
        if (strstr(name, skip[i])) return 1;
    return 0;
}

static void warn_unused(const conv_in *in) {
    char *list = NULL;
    size_t n = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *name = conv_in_at(in, i)->name;
        if (in->used[i] || ignorable(name)) continue;
        if (n < 20) conv_sb_add(&list, "%s%s", n ? ", " : "", name);
        n++;
    }
    if (n)
        log_warn("convert", "%s: %zu tensor(s) look like weights but are not used: %s%s", in->label,
                 n, list, n > 20 ? ", ..." : "");
    free(list);
}

/* One error naming every missing tensor (grouped by file) and every wrong shape. */
static int report_errors(conv_ctx *c) {
    if (!c->nmissing && !c->nbad) return 0;
    char *msg = NULL;
    conv_in *ins[4] = {&c->eva, &c->blip, &c->s4, &c->phi};
    if (c->nmissing) conv_sb_add(&msg, "%d tensor(s) missing", c->nmissing);
    for (int i = 0; i < 4; i++)
        if (ins[i]->nmissing)
            conv_sb_add(&msg, "; in %s (%s): %s", ins[i]->label, ins[i]->what, ins[i]->missing);
    if (c->nbad) conv_sb_add(&msg, "%s%d tensor(s) malformed: %s", msg ? "; " : "", c->nbad, c->bad);
    /* err_set keeps 1 KiB: the full list goes to the log when it is longer */
    if (strlen(msg) > 900) log_error("convert", "%s", msg);
    int rc = err_set(c->nmissing ? TV_ENOTFOUND : TV_EFORMAT, "%s", msg);
    free(msg);
    return rc;
}

static int parse_dtype(const char *s, conv_enc *e) {
    static const struct { const char *name; conv_enc e; } t[] = {
        {"f32", CE_F32}, {"f16", CE_F16}, {"bf16", CE_BF16}, {"q8", CE_Q8}, {"q4", CE_Q4}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!strcmp(s, t[i].name)) {
            *e = t[i].e;
            return 0;
        }
    return err_set(TV_EINVAL, "dtype '%s': expected f32, f16, bf16, q8 or q4", s);
}

static int open_inputs(conv_ctx *c) {
    const conv_opts *o = c->o;
    int rc;
    if ((rc = conv_in_open_pth(&c->eva, o->eva_path, "EVA ViT checkpoint"))) return rc;
    if ((rc = conv_in_open_pth(&c->blip, o->blip2_path, "BLIP-2 checkpoint"))) return rc;
    if ((rc = conv_in_open_pth(&c->s4, o->stage4_path, "TinyGPT-V stage-4 checkpoint"))) return rc;
    if ((rc = conv_in_open_st(&c->phi, o->phi_dir, "Phi-2 folder"))) return rc;
    return 0;
}

static void close_all(conv_ctx *c) {
    conv_jobs_free(c->jobs, c->njobs);
    st_writer_free(c->wv), st_writer_free(c->wl);
    conv_in_close(&c->eva), conv_in_close(&c->blip), conv_in_close(&c->s4), conv_in_close(&c->phi);
    free(c->bad);
    free(c->tok_path);
}

int conv_run(const conv_opts *o) {
    if (!o->phi_dir || !o->eva_path || !o->blip2_path || !o->stage4_path || !o->out_dir)
        return err_set(TV_EINVAL, "convert: the Phi-2 folder, the three .pth files and the output "
                                  "directory are required");
    conv_ctx c;
    memset(&c, 0, sizeof c);
    c.o = o;
    int rc = parse_dtype(o->dtype ? o->dtype : "f16", &c.enc);
    if (rc) return rc;
    c.wv = st_writer_new(), c.wl = st_writer_new();
    if (!(rc = open_inputs(&c)) && !(rc = conv_lm_config(&c)) && !(rc = conv_map_vision(&c)) &&
        !(rc = conv_map_lm(&c))) {
        rc = report_errors(&c);
        if (!rc) rc = c.rc;
        if (!rc) {
            warn_unused(&c.eva), warn_unused(&c.blip), warn_unused(&c.s4), warn_unused(&c.phi);
            rc = conv_write_bundle(&c);
        }
    }
    close_all(&c);
    return rc;
}
