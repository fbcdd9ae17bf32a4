/* box — see box.h. */
#include "box.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"

struct gw_box {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* timed on CLOCK_MONOTONIC: deadlines are clk_now_s() values */
    msg **ev;              /* each event malloc'd: pointers stay valid as the array grows */
    size_t n, cap;
    int done, refs;
};

gw_box *gw_box_new(void) {
    gw_box *b = tv_xcalloc(1, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    b->refs = 1;
    return b;
}

gw_box *gw_box_ref(gw_box *b) {
    pthread_mutex_lock(&b->mu);
    b->refs++;
    pthread_mutex_unlock(&b->mu);
    return b;
}

void gw_box_unref(gw_box *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    int last = --b->refs == 0;
    pthread_mutex_unlock(&b->mu);
    if (!last) return;
    for (size_t i = 0; i < b->n; i++) {
        msg_clear(b->ev[i]);
        free(b->ev[i]);
    }
    free(b->ev);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void gw_box_push(gw_box *b, msg *m, int final) {
    pthread_mutex_lock(&b->mu);
    if (b->done) {
        pthread_mutex_unlock(&b->mu);
        msg_clear(m);
        return;
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 8;
        b->ev = tv_xrealloc(b->ev, b->cap * sizeof *b->ev);
    }
    msg *copy = tv_xmalloc(sizeof *copy);
    *copy = *m;
    b->ev[b->n++] = copy;
    memset(m, 0, sizeof *m);
    if (final) b->done = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

const msg *gw_box_wait(gw_box *b, size_t idx, double deadline, int *final) {
    struct timespec ts;
    double whole = floor(deadline);
    ts.tv_sec = (time_t)whole;
    ts.tv_nsec = (long)((deadline - whole) * 1e9);
    pthread_mutex_lock(&b->mu);
    while (idx >= b->n && deadline >= 0) {
        if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT) break;
    }
    const msg *m = idx < b->n ? b->ev[idx] : NULL;
    if (final) *final = m && b->done && idx + 1 == b->n;
    pthread_mutex_unlock(&b->mu);
    return m;
}

int gw_box_done(gw_box *b) {
    pthread_mutex_lock(&b->mu);
    int d = b->done;
    pthread_mutex_unlock(&b->mu);
    return d;
}
