/* machine_limits — the machine's physical limits, measured the same way by every CPU benchmark
 * so that their fractions ("% of FMA peak", "% of the memory roofline") are comparable. Each is
 * the best of 5 runs: on a shared machine a neighbour's burst only ever slows a run down. */
#ifndef TV_BENCH_MACHINE_LIMITS_H
#define TV_BENCH_MACHINE_LIMITS_H

#include "pool.h"

/* Memory read bandwidth, GB/s: every thread of p sums 1 MiB slices of a 1 GiB buffer. Exits
 * the program with a message when 1 GiB cannot be allocated. */
double lim_bandwidth(pool *p);

/* FMA peak, GFLOP/s: ten independent register-only ymm FMA chains on every thread of p (enough
 * to cover FMA latency x ports on current x86 cores). Needs AVX2+FMA: callers check first. */
double lim_fma_peak(pool *p);

#endif
