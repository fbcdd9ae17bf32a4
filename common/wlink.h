/* wlink — a worker's links to its gateways: one msg_connect'ed socket per gateway endpoint, the
 * registration (Hello), heartbeats every interval, re-registration, and Bye. The vision and LM
 * worker daemons share it; they only see work messages (encode, generate, cancel, errors about a
 * request).
 *
 * Registration: Hello goes out at start and again, every heartbeat interval, to each gateway that
 * has not been heard from within the gateway timeout (a gateway that is not up yet, restarted, or
 * dropped us), and at once when a gateway answers Error "unknown_worker". Since every registered
 * worker gets the gateway's heartbeats, "heard recently" means "registered".
 *
 * Lost messages: every job (encode, generate) received is "held" until its final answer goes
 * out through wlink_send (Encoded, the chunk with a finish reason, an Error about it), and every
 * heartbeat tells its gateway which of its jobs we hold and the last sequence number it sent us
 * (proto Heartbeat.held, last_seq). From that the gateway sends again a job that never arrived
 * or whose answer never did. A job that arrives while we hold one with its id is dropped.
 *
 * Fault injection, for tests only: the environment variables TINYVLM_TEST_LOSE_JOBS=N and
 * TINYVLM_TEST_LOSE_ANSWERS=N make the link lose the first N jobs it receives / final answers
 * it is asked to send, and TINYVLM_TEST_LOSE_CHUNK=N the N-th non-final chunk it sends, as a
 * network cut would (logged as a warning at start).
 *
 * Threads: a wlink belongs to the thread that created it (its sockets do). */
#ifndef TV_WLINK_H
#define TV_WLINK_H

#include <stdint.h>

#include "msg.h"

typedef struct wlink wlink;

/* Where the gateways are. A fixed endpoint is connected once (ZeroMQ reconnects by itself); a
 * DNS entry "tcp://NAME:PORT" is resolved every dns_interval_ms and the worker connects to EVERY
 * address NAME has (e.g. a Kubernetes headless Service: one per gateway pod), adding new ones and
 * closing those that left the DNS answer once they have also gone silent. */
typedef struct {
    const char *const *endpoints;   /* e.g. "tcp://gw:5555", "inproc://tinyvlm" */
    int n_endpoints;
    const char *const *dns;         /* "tcp://NAME:PORT" */
    int n_dns;
    int dns_interval_ms;            /* default 5000 */
    int heartbeat_ms;               /* default 1000 */
    int timeout_ms;                 /* a gateway silent this long is not registered; 3000 */
} wlink_opts;

/* Connects as the worker described by hello (copied; hello->worker_id is the socket identity) on
 * ctx (borrowed; must outlive the link). At least one endpoint or DNS entry. Returns 0 and *out
 * (free with wlink_free), or TV_EINVAL (no gateway, a DNS entry not "tcp://NAME:PORT") / the msg
 * layer's error naming the endpoint. A DNS name that does not resolve yet is not an error. */
int wlink_new(msg_ctx *ctx, const wlink_opts *o, const msg_hello *hello, wlink **out);

/* Closes the sockets. NULL is a no-op. */
void wlink_free(wlink *l);

/* What the next heartbeats carry (copied). */
void wlink_set_load(wlink *l, const msg_heartbeat *hb);

/* Waits at most timeout_ms (0: only what is already there) for a work message, sending Hello and
 * heartbeats when due and handling link traffic (gateway heartbeats, "unknown_worker", protocol
 * refusals) itself. Returns TV_OK with *m filled (msg_clear it) and *gw the index of the gateway
 * it came from (answer there with wlink_send), TV_ETIMEOUT when nothing came, or TV_EIO. */
int wlink_recv(wlink *l, int timeout_ms, msg *m, int *gw);

/* Sends m to gateway gw (as wlink_recv named it); a final answer ends the job's hold. Returns as
 * msg_send (TV_EAGAIN: that gateway is unreachable now, or its address was dropped). */
int wlink_send(wlink *l, int gw, const msg *m);

/* Sends an Error about request id to gateway gw (status/code/message as in the proto). */
int wlink_send_error(wlink *l, int gw, uint64_t id, uint32_t status, const char *code,
                     const char *message);

/* Runs fn(arg) on a helper thread while this thread keeps the link alive (heartbeats every
 * interval; nothing is received meanwhile), so a long computation — a big prefill, a vision batch
 * on a CPU — does not look like a dead worker to the gateway. fn must not touch the link.
 * Returns fn's result, with its error message carried over to this thread. */
int wlink_busy(wlink *l, int (*fn)(void *arg), void *arg);

/* Sends Bye(reason) to every gateway and stops registering (no more Hello; heartbeats carry
 * draining = 1). */
void wlink_bye(wlink *l, const char *reason);

/* Number of gateway connections open, and how many have been heard from within the timeout
 * (registered). */
int wlink_count(const wlink *l);
int wlink_registered(const wlink *l);

/* Serves plain HTTP on 0.0.0.0:port from a thread of its own, for orchestrators' probes:
 * GET /healthz is 200 while the worker's loop turns (wlink_recv called within the last 10 s),
 * else 503; GET /readyz is 200 while at least one gateway has heard from it within the timeout
 * and it has not said Bye, else 503; anything else 404. Stopped by wlink_free. Returns 0, or
 * TV_EIO naming the port (in use, no permission). port 0 = off (returns 0). */
int wlink_health_start(wlink *l, int port);

/* A default worker id, "host:pid:random" (kind "vision" or "lm" in front), into buf. */
void wlink_default_id(const char *kind, char *buf, size_t cap);

/* Milliseconds on the wall clock (deadlines on the wire); the monotonic clock is clk_now_ms. */
uint64_t wlink_unix_ms(void);

#endif
