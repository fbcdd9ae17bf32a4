/* test_gateway_metrics — the Prometheus registry: exact exposition text for counters, gauges and
 * histograms (cumulative buckets, +Inf, _sum, _count), label escaping, declaration errors. */
#include "check.h"
#include "metrics.h"

static void test_render(void) {
    gw_metrics *m = gw_met_new();
    static const double b[] = {0.1, 0.5, 2.5};
    CHECK_OK(gw_met_declare(m, "req_total", "Requests.", GW_MET_COUNTER, NULL, 0));
    CHECK_OK(gw_met_declare(m, "depth", "Queue depth.", GW_MET_GAUGE, NULL, 0));
    CHECK_OK(gw_met_declare(m, "lat_seconds", "Latency.", GW_MET_HISTOGRAM, b, 3));
    gw_met_add(m, "req_total", "route=\"/a\",status=\"200\"", 1);
    gw_met_add(m, "req_total", "route=\"/a\",status=\"200\"", 2);
    gw_met_add(m, "req_total", "route=\"/b\",status=\"404\"", 1);
    gw_met_add(m, "req_total", "route=\"/b\",status=\"404\"", -5); /* counters never go down */
    gw_met_set(m, "depth", "", 7);
    gw_met_set(m, "depth", "", 3);
    gw_met_observe(m, "lat_seconds", "", 0.05);
    gw_met_observe(m, "lat_seconds", "", 0.5);  /* le is inclusive */
    gw_met_observe(m, "lat_seconds", "", 1.25);
    gw_met_observe(m, "lat_seconds", "", 100);
    CHECK_NEAR(gw_met_get(m, "req_total", "route=\"/a\",status=\"200\""), 3, 0);
    CHECK_NEAR(gw_met_get(m, "lat_seconds", ""), 4, 0);
    CHECK_NEAR(gw_met_get(m, "nothing", ""), 0, 0);
    char *txt = gw_met_render(m);
    const char *want =
        "# HELP req_total Requests.\n# TYPE req_total counter\n"
        "req_total{route=\"/a\",status=\"200\"} 3\n"
        "req_total{route=\"/b\",status=\"404\"} 1\n"
        "# HELP depth Queue depth.\n# TYPE depth gauge\n"
        "depth 3\n"
        "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
        "lat_seconds_bucket{le=\"0.10000000000000001\"} 1\n"
        "lat_seconds_bucket{le=\"0.5\"} 2\n"
        "lat_seconds_bucket{le=\"2.5\"} 3\n"
        "lat_seconds_bucket{le=\"+Inf\"} 4\n"
        "lat_seconds_sum 101.8\n"
        "lat_seconds_count 4\n";
    CHECK_EQ_STR(txt, want);
    free(txt);

    gw_met_clear(m, "depth");
    txt = gw_met_render(m);
    CHECK(strstr(txt, "# TYPE depth gauge\n# HELP lat_seconds") != NULL);
    free(txt);
    gw_met_free(m);
}

static void test_labels_histogram(void) {
    gw_metrics *m = gw_met_new();
    static const double b[] = {1, 2};
    CHECK_OK(gw_met_declare(m, "h", "H.", GW_MET_HISTOGRAM, b, 2));
    gw_met_observe(m, "h", "route=\"/x\"", 1.5);
    char *txt = gw_met_render(m);
    CHECK(strstr(txt, "h_bucket{route=\"/x\",le=\"1\"} 0\n") != NULL);
    CHECK(strstr(txt, "h_bucket{route=\"/x\",le=\"2\"} 1\n") != NULL);
    CHECK(strstr(txt, "h_sum{route=\"/x\"} 1.5\n") != NULL);
    CHECK(strstr(txt, "h_count{route=\"/x\"} 1\n") != NULL);
    free(txt);
    gw_met_free(m);
}

static void test_errors_and_escape(void) {
    gw_metrics *m = gw_met_new();
    static const double bad[] = {1, 1};
    CHECK_FAILS(gw_met_declare(m, "9bad", "x", GW_MET_COUNTER, NULL, 0));
    CHECK_FAILS(gw_met_declare(m, "has space", "x", GW_MET_COUNTER, NULL, 0));
    CHECK_FAILS(gw_met_declare(m, "h", "x", GW_MET_HISTOGRAM, bad, 2));
    CHECK_FAILS(gw_met_declare(m, "h", "x", GW_MET_HISTOGRAM, NULL, 0));
    CHECK_OK(gw_met_declare(m, "c", "x", GW_MET_COUNTER, NULL, 0));
    CHECK_FAILS(gw_met_declare(m, "c", "x", GW_MET_GAUGE, NULL, 0));
    gw_met_set(m, "c", "", 5); /* wrong type: ignored */
    CHECK_NEAR(gw_met_get(m, "c", ""), 0, 0);
    gw_met_free(m);
    gw_met_free(NULL);

    char out[32];
    CHECK_EQ_STR(gw_met_escape("a\"b\\c\nd", out, sizeof out), "a\\\"b\\\\c\\nd");
    CHECK_EQ_STR(gw_met_escape("abcdef", out, 4), "abc");
    CHECK_EQ_STR(gw_met_escape("ab\"", out, 4), "ab"); /* never splits an escape */
}

int main(void) {
    test_render();
    test_labels_histogram();
    test_errors_and_escape();
    return check_finish("test_gateway_metrics");
}
