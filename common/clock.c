/* clock — see clock.h. */
#include "clock.h"

#include <time.h>

/* CLOCK_MONOTONIC is always present on Linux, so clock_gettime cannot fail here; its only
 * errors are a bad clock id or a bad pointer. */
static struct timespec clk_read(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

double clk_now_s(void) {
    struct timespec ts = clk_read();
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t clk_now_ms(void) {
    struct timespec ts = clk_read();
    return (int64_t)ts.tv_sec * 1000 + (int64_t)ts.tv_nsec / 1000000;
}
