/* pool — a small fixed-size pthread pool for splitting one op into independent tasks.
 *
 * Not OpenMP: one process may host several workers, each with its own thread budget, so each
 * owns its pool. pool_run(p, n, fn, ctx) calls fn(ctx, task, thread) once for every task in
 * [0, n), spread over the pool's threads (the calling thread takes part as thread 0), and returns
 * when all are done. Tasks are handed out dynamically, so callers that want results independent
 * of the thread count must make each task's output depend only on its task index (all kernels
 * here do, so threaded output is bitwise equal to single-threaded output).
 * A NULL pool means "single-threaded": tasks run in order on the calling thread.
 * A pool is used by one caller at a time (pool_run is not re-entrant). */
#ifndef TV_POOL_H
#define TV_POOL_H

#include <stdint.h>

typedef struct pool pool;

typedef void (*pool_fn)(void *ctx, int64_t task, int thread);

/* A pool of n_threads threads in all (n_threads - 1 are started; the caller of pool_run is the
 * last). n_threads <= 1 gives a pool that runs everything on the caller. Returns NULL with
 * TV_EINTERNAL set if threads cannot be started; free with pool_free. */
pool *pool_new(int n_threads);

/* Stops and joins the threads; pool_free(NULL) is a no-op. */
void pool_free(pool *p);

/* Threads in the pool (1 for NULL). Thread indices passed to fn are in [0, this). */
int pool_n_threads(const pool *p);

/* Runs fn for every task in [0, n_tasks) and waits for all of them. n_tasks <= 0 does nothing. */
void pool_run(pool *p, int64_t n_tasks, pool_fn fn, void *ctx);

#endif
