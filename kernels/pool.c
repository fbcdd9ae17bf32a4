#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "err.h"

struct pool {
    int n_threads;
    pthread_t *threads;            /* n_threads - 1 helpers */
    pthread_mutex_t mu;
    pthread_cond_t wake;           /* a new job (generation changed) or shutdown */
    pthread_cond_t done;           /* the last helper left the job */
    uint64_t generation;           /* bumped once per pool_run */
    int busy;                      /* helpers still inside the current job */
    int stop;
    /* the current job */
    pool_fn fn;
    void *ctx;
    int64_t n_tasks;
    atomic_int_fast64_t next;      /* next task index to hand out */
};

/* Takes tasks until none are left. */
static void pool_drain(pool *p, int thread) {
    for (;;) {
        int64_t t = atomic_fetch_add(&p->next, 1);
        if (t >= p->n_tasks) return;
        p->fn(p->ctx, t, thread);
    }
}

typedef struct { pool *p; int thread; } pool_arg;

static void *pool_main(void *arg) {
    pool_arg a = *(pool_arg *)arg;
    free(arg);
    pool *p = a.p;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        pool_drain(p, a.thread);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

pool *pool_new(int n_threads) {
    pool *p = tv_xcalloc(1, sizeof *p);
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = tv_xcalloc((size_t)p->n_threads, sizeof *p->threads);
    for (int i = 1; i < p->n_threads; i++) {
        pool_arg *a = tv_xmalloc(sizeof *a);
        a->p = p;
        a->thread = i;
        if (pthread_create(&p->threads[i - 1], NULL, pool_main, a) != 0) {
            free(a);
            p->n_threads = i;   /* pool_free joins the ones that did start */
            pool_free(p);
            err_set(TV_EINTERNAL, "pool: cannot start thread %d", i);
            return NULL;
        }
    }
    return p;
}

void pool_free(pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i - 1], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

int pool_n_threads(const pool *p) { return p ? p->n_threads : 1; }

void pool_run(pool *p, int64_t n_tasks, pool_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    p->busy = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    pool_drain(p, 0);
    /* Wait until every helper has left this job, so the next job cannot race with it. */
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
