/* clock: clk_now_s / clk_now_ms read CLOCK_MONOTONIC, agree with each other, never go back, and
 * measure a sleep. The reference is clock_gettime itself, read around each call. */
#include <time.h>

#include "check.h"
#include "clock.h"

static double ref_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Bracketed by two direct reads: catches a wrong clock (REALTIME is ~1.7e9 s, not uptime) and a
 * wrong unit (ns or ms where seconds are due). */
static void test_same_clock(void) {
    double a = ref_s(), s = clk_now_s(), b = ref_s();
    CHECK_MSG(a <= s && s <= b, "clk_now_s %.9f not within [%.9f, %.9f]", s, a, b);
    a = ref_s();
    int64_t ms = clk_now_ms();
    b = ref_s();
    /* truncation to whole ms may put the reading up to 1 ms below a */
    CHECK_MSG((double)ms >= a * 1e3 - 1.0 && (double)ms <= b * 1e3,
              "clk_now_ms %lld not within [%.3f, %.3f] ms", (long long)ms, a * 1e3, b * 1e3);
    CHECK(ms >= 0);
}

static void test_monotonic(void) {
    double prev_s = clk_now_s();
    int64_t prev_ms = clk_now_ms();
    int back = 0;
    for (int i = 0; i < 100000; i++) {
        double s = clk_now_s();
        int64_t ms = clk_now_ms();
        back += s < prev_s || ms < prev_ms;
        prev_s = s;
        prev_ms = ms;
    }
    CHECK_EQ_INT(back, 0);
}

/* A 50 ms sleep reads as at least 50 ms on both, and not absurdly more (a loaded CI box may
 * stall, hence the generous upper bound). */
static void test_sleep(void) {
    double s0 = clk_now_s();
    int64_t m0 = clk_now_ms();
    sleep_ms(50);
    double ds = clk_now_s() - s0;
    int64_t dm = clk_now_ms() - m0;
    CHECK_MSG(ds >= 0.050 && ds < 10.0, "slept 50 ms, clk_now_s says %.6f s", ds);
    CHECK_MSG(dm >= 49 && dm < 10000, "slept 50 ms, clk_now_ms says %lld ms", (long long)dm);
}

int main(void) {
    test_same_clock();
    test_monotonic();
    test_sleep();
    return check_finish("clock");
}
