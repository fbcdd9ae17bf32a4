/* metrics — a small Prometheus registry: counters, gauges and histograms, each family with
 * labelled series, rendered in the Prometheus text exposition format (version 0.0.4).
 *
 * Families are declared once (gw_met_declare) and then addressed by name; a series is created
 * the first time a label set is used. Labels are passed pre-formatted, e.g.
 * `route="/v1/embeddings",status="200"` ("" = no labels); values that come from outside
 * (worker ids) go through gw_met_escape first.
 *
 * Threads: every function is safe to call from several threads (one lock per registry). */
#ifndef TV_GW_METRICS_H
#define TV_GW_METRICS_H

#include <stddef.h>

typedef enum { GW_MET_COUNTER = 0, GW_MET_GAUGE, GW_MET_HISTOGRAM } gw_met_type;

typedef struct gw_metrics gw_metrics;

/* New empty registry (free with gw_met_free). Never NULL (aborts on OOM). */
gw_metrics *gw_met_new(void);
void gw_met_free(gw_metrics *m);

/* Declares a family. For a histogram, buckets are the n_buckets upper bounds in increasing order
 * (+Inf is implicit). Returns 0, or TV_EINVAL (bad name, duplicate, unsorted buckets, too many). */
int gw_met_declare(gw_metrics *m, const char *name, const char *help, gw_met_type type,
                   const double *buckets, int n_buckets);

/* Counter += v (v >= 0). Unknown family or wrong type: ignored (logged once as a bug). */
void gw_met_add(gw_metrics *m, const char *name, const char *labels, double v);
/* Gauge = v. */
void gw_met_set(gw_metrics *m, const char *name, const char *labels, double v);
/* Histogram observation. */
void gw_met_observe(gw_metrics *m, const char *name, const char *labels, double v);
/* Drops every series of a family (gauges describing things that come and go, e.g. workers). */
void gw_met_clear(gw_metrics *m, const char *name);

/* Current value of a counter or gauge series (histogram: its count); 0 when absent. */
double gw_met_get(gw_metrics *m, const char *name, const char *labels);

/* The whole registry as Prometheus text; malloc'd, the caller frees. Never NULL. */
char *gw_met_render(gw_metrics *m);

/* Escapes a label value (backslash, double quote, newline) into out (cap bytes, truncating).
 * Returns out. */
char *gw_met_escape(const char *value, char *out, size_t cap);

#endif
