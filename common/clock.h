/* clock — "now" on the monotonic clock, for durations, timeouts and deadlines.
 *
 * CLOCK_MONOTONIC never jumps when the wall clock is set, so differences of two readings are
 * true elapsed time; its zero is arbitrary (usually boot), so a reading means nothing on its own
 * and must never go on the wire or into a log as a date (wall-clock time is CLOCK_REALTIME).
 * One helper for the whole project instead of a copy in every file that times something. */
#ifndef TV_CLOCK_H
#define TV_CLOCK_H

#include <stdint.h>

/* Seconds on the monotonic clock, with nanosecond resolution (tv_sec + tv_nsec * 1e-9). */
double clk_now_s(void);

/* Whole milliseconds on the monotonic clock (tv_sec * 1000 + tv_nsec / 1000000, truncated);
 * always >= 0. */
int64_t clk_now_ms(void);

#endif
