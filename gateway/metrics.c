/* metrics — see metrics.h. Families and series are small arrays searched linearly: a gateway
 * has a few dozen series, and a lookup is far cheaper than the request it measures. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "strbuf.h"

#define MET_MAX_BUCKETS 24

typedef struct {
    char *labels;
    double value;                       /* counter / gauge; histogram: sum */
    unsigned long long count;           /* histogram */
    unsigned long long bucket[MET_MAX_BUCKETS]; /* histogram: per-bucket (not cumulative) */
} met_series;

typedef struct {
    char *name, *help;
    gw_met_type type;
    double bounds[MET_MAX_BUCKETS];
    int n_bounds;
    met_series *series;
    size_t n_series, cap_series;
} met_family;

struct gw_metrics {
    pthread_mutex_t mu;
    met_family *fam;
    size_t n_fam, cap_fam;
};

gw_metrics *gw_met_new(void) {
    gw_metrics *m = tv_xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void gw_met_free(gw_metrics *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_fam; i++) {
        met_family *f = &m->fam[i];
        for (size_t j = 0; j < f->n_series; j++) free(f->series[j].labels);
        free(f->series), free(f->name), free(f->help);
    }
    free(m->fam);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int met_valid_name(const char *s) {
    if (!s || !*s || (*s >= '0' && *s <= '9')) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == ':'))
            return 0;
    return 1;
}

static met_family *met_find(gw_metrics *m, const char *name) {
    for (size_t i = 0; i < m->n_fam; i++)
        if (!strcmp(m->fam[i].name, name)) return &m->fam[i];
    return NULL;
}

int gw_met_declare(gw_metrics *m, const char *name, const char *help, gw_met_type type,
                   const double *buckets, int n_buckets) {
    if (!met_valid_name(name)) return err_set(TV_EINVAL, "metrics: bad metric name '%s'", name ? name : "");
    if (type == GW_MET_HISTOGRAM && (n_buckets < 1 || n_buckets > MET_MAX_BUCKETS))
        return err_set(TV_EINVAL, "metrics: %s needs 1..%d buckets", name, MET_MAX_BUCKETS);
    for (int i = 1; type == GW_MET_HISTOGRAM && i < n_buckets; i++)
        if (!(buckets[i] > buckets[i - 1]))
            return err_set(TV_EINVAL, "metrics: %s buckets not increasing", name);
    pthread_mutex_lock(&m->mu);
    int rc = TV_OK;
    if (met_find(m, name)) {
        rc = err_set(TV_EINVAL, "metrics: %s declared twice", name);
    } else {
        if (m->n_fam == m->cap_fam) {
            m->cap_fam = m->cap_fam ? 2 * m->cap_fam : 16;
            m->fam = tv_xrealloc(m->fam, m->cap_fam * sizeof *m->fam);
        }
        met_family *f = &m->fam[m->n_fam++];
        memset(f, 0, sizeof *f);
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
        TV_ASSERT(f->name && f->help);
        f->type = type;
        if (type == GW_MET_HISTOGRAM) {
            memcpy(f->bounds, buckets, (size_t)n_buckets * sizeof *buckets);
            f->n_bounds = n_buckets;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* The series for labels, created on first use. Called with the lock held. */
static met_series *met_series_get(met_family *f, const char *labels) {
    if (!labels) labels = "";
    for (size_t i = 0; i < f->n_series; i++)
        if (!strcmp(f->series[i].labels, labels)) return &f->series[i];
    if (f->n_series == f->cap_series) {
        f->cap_series = f->cap_series ? 2 * f->cap_series : 8;
        f->series = tv_xrealloc(f->series, f->cap_series * sizeof *f->series);
    }
    met_series *s = &f->series[f->n_series++];
    memset(s, 0, sizeof *s);
    s->labels = strdup(labels);
    TV_ASSERT(s->labels);
    return s;
}

/* Looks up name with the expected type; logs a programming error once per process if wrong. */
static met_family *met_expect(gw_metrics *m, const char *name, gw_met_type type) {
    met_family *f = met_find(m, name);
    if (f && f->type == type) return f;
    static int warned;
    if (!warned) {
        warned = 1;
        log_error("metrics", "bug: metric %s not declared with this type", name);
    }
    return NULL;
}

void gw_met_add(gw_metrics *m, const char *name, const char *labels, double v) {
    pthread_mutex_lock(&m->mu);
    met_family *f = met_expect(m, name, GW_MET_COUNTER);
    if (f && v >= 0) met_series_get(f, labels)->value += v;
    pthread_mutex_unlock(&m->mu);
}

void gw_met_set(gw_metrics *m, const char *name, const char *labels, double v) {
    pthread_mutex_lock(&m->mu);
    met_family *f = met_expect(m, name, GW_MET_GAUGE);
    if (f) met_series_get(f, labels)->value = v;
    pthread_mutex_unlock(&m->mu);
}

void gw_met_observe(gw_metrics *m, const char *name, const char *labels, double v) {
    pthread_mutex_lock(&m->mu);
    met_family *f = met_expect(m, name, GW_MET_HISTOGRAM);
    if (f && !isnan(v)) {
        met_series *s = met_series_get(f, labels);
        s->count++;
        s->value += v;
        for (int i = 0; i < f->n_bounds; i++)
            if (v <= f->bounds[i]) {
                s->bucket[i]++;
                break;
            }
    }
    pthread_mutex_unlock(&m->mu);
}

void gw_met_clear(gw_metrics *m, const char *name) {
    pthread_mutex_lock(&m->mu);
    met_family *f = met_find(m, name);
    if (f) {
        for (size_t j = 0; j < f->n_series; j++) free(f->series[j].labels);
        f->n_series = 0;
    }
    pthread_mutex_unlock(&m->mu);
}

double gw_met_get(gw_metrics *m, const char *name, const char *labels) {
    double v = 0;
    pthread_mutex_lock(&m->mu);
    met_family *f = met_find(m, name);
    for (size_t j = 0; f && j < f->n_series; j++)
        if (!strcmp(f->series[j].labels, labels ? labels : ""))
            v = f->type == GW_MET_HISTOGRAM ? (double)f->series[j].count : f->series[j].value;
    pthread_mutex_unlock(&m->mu);
    return v;
}

/* Prometheus number spelling: integers without exponent noise, +Inf/-Inf/NaN by name. */
static void met_number(gw_sb *b, double v) {
    if (isnan(v)) gw_sb_printf(b, "NaN");
    else if (isinf(v)) gw_sb_printf(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15) gw_sb_printf(b, "%.0f", v);
    else gw_sb_printf(b, "%.17g", v);
}

/* name{labels} or name{labels,extra} or name; extra is e.g. le="0.5". */
static void met_head(gw_sb *b, const char *name, const char *suffix, const char *labels,
                     const char *extra) {
    int has_l = labels && *labels, has_e = extra && *extra;
    gw_sb_printf(b, "%s%s", name, suffix);
    if (has_l || has_e)
        gw_sb_printf(b, "{%s%s%s}", has_l ? labels : "", has_l && has_e ? "," : "",
                     has_e ? extra : "");
    gw_sb_printf(b, " ");
}

static void met_render_histogram(gw_sb *b, const met_family *f, const met_series *s) {
    unsigned long long cum = 0;
    char le[64];
    for (int i = 0; i < f->n_bounds; i++) {
        cum += s->bucket[i];
        gw_sb b2 = {0};
        met_number(&b2, f->bounds[i]);
        snprintf(le, sizeof le, "le=\"%s\"", b2.s);
        gw_sb_free(&b2);
        met_head(b, f->name, "_bucket", s->labels, le);
        gw_sb_printf(b, "%llu\n", cum);
    }
    met_head(b, f->name, "_bucket", s->labels, "le=\"+Inf\"");
    gw_sb_printf(b, "%llu\n", s->count);
    met_head(b, f->name, "_sum", s->labels, NULL);
    met_number(b, s->value);
    gw_sb_printf(b, "\n");
    met_head(b, f->name, "_count", s->labels, NULL);
    gw_sb_printf(b, "%llu\n", s->count);
}

char *gw_met_render(gw_metrics *m) {
    static const char *type_name[] = {"counter", "gauge", "histogram"};
    gw_sb b = {0};
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_fam; i++) {
        const met_family *f = &m->fam[i];
        gw_sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                     type_name[f->type]);
        for (size_t j = 0; j < f->n_series; j++) {
            const met_series *s = &f->series[j];
            if (f->type == GW_MET_HISTOGRAM) {
                met_render_histogram(&b, f, s);
                continue;
            }
            met_head(&b, f->name, "", s->labels, NULL);
            met_number(&b, s->value);
            gw_sb_printf(&b, "\n");
        }
    }
    pthread_mutex_unlock(&m->mu);
    return gw_sb_take(&b);
}

char *gw_met_escape(const char *value, char *out, size_t cap) {
    size_t n = 0;
    if (!cap) return out;
    for (const char *p = value ? value : ""; *p; p++) {
        const char *rep = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
        size_t k = rep ? 2 : 1;
        if (n + k >= cap) break;
        if (rep) memcpy(out + n, rep, 2);
        else out[n] = *p;
        n += k;
    }
    out[n] = 0;
    return out;
}
