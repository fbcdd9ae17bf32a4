/* box — a request's mailbox: the router thread appends the worker's answers (msgs it received)
 * and handler threads wait for them. Events stay in the box until it is freed, and each reader
 * keeps its own index, so several requests waiting on one shared image encode all read the same
 * answer. Reference-counted: the router holds one reference while the job is alive, each
 * waiting handler one more.
 *
 * Threads: every function is safe from any thread. */
#ifndef TV_GW_BOX_H
#define TV_GW_BOX_H

#include <stddef.h>

#include "msg.h"

typedef struct gw_box gw_box;

/* New box with one reference. Never NULL. */
gw_box *gw_box_new(void);
gw_box *gw_box_ref(gw_box *b);
/* Drops a reference; the last one frees the box and msg_clears its events. NULL: no-op. */
void gw_box_unref(gw_box *b);

/* Appends *m (ownership moves into the box; *m is zeroed). final: no more events will come.
 * Events pushed after the final one are dropped (msg_clear'd). */
void gw_box_push(gw_box *b, msg *m, int final);

/* Waits until event idx exists or until deadline (clk_now_s() seconds; < 0 = no wait).
 * Returns a pointer to the event (valid while the caller holds its reference), or NULL on
 * timeout. *final (may be NULL) tells whether it is the last event. */
const msg *gw_box_wait(gw_box *b, size_t idx, double deadline, int *final);

/* 1 once the final event has been pushed. */
int gw_box_done(gw_box *b);

#endif
