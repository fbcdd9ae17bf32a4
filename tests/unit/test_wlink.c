/* test_wlink — a worker's link to its gateways, against a scripted ROUTER over tcp: Hello at
 * start (found through --gateway-dns "tcp://localhost:PORT" and through a fixed endpoint),
 * heartbeats carrying the load, Hello again on "unknown_worker", heartbeats continuing while
 * wlink_busy runs a long job (and its error message coming back), work messages passed up with
 * the right gateway index, the jobs held and the last sequence number in heartbeats (a copy of a
 * held job dropped, final answers ending the hold), Bye, and refused configurations. */
#include <string.h>
#include <time.h>

#include "check.h"
#include "clock.h"
#include "msg.h"
#include "wlink.h"

static msg_sock *gw;

/* Counts the gateway's received messages of type t within ms. */
static int count_within(msg_type t, int ms, wlink *l) { /* l: also turn the worker side */
    int n = 0;
    int64_t end = clk_now_ms() + ms;
    while (clk_now_ms() < end) {
        msg m;
        char peer[MSG_PEER_MAX];
        if (l) {
            msg w;
            int g;
            if (wlink_recv(l, 5, &w, &g) == TV_OK)
                msg_clear(&w);
        }
        if (msg_recv(gw, l ? 0 : 20, &m, peer, sizeof peer) == TV_OK) {
            n += m.type == t;
            msg_clear(&m);
        }
    }
    return n;
}

/* The next heartbeat the gateway gets after `after` ms (turning the worker meanwhile) into *hb
 * (msg_clear it). Returns 1, or 0 if none came within a second. */
static int next_heartbeat(wlink *l, int after, msg *hb) {
    char peer[MSG_PEER_MAX];
    while (msg_recv(gw, 0, hb, peer, sizeof peer) == TV_OK) /* older ones, queued meanwhile */
        msg_clear(hb);
    count_within(MSG_NONE, after, l);
    int64_t end = clk_now_ms() + 1000;
    while (clk_now_ms() < end) {
        msg w;
        int g;
        if (wlink_recv(l, 5, &w, &g) == TV_OK)
            msg_clear(&w);
        if (msg_recv(gw, 0, hb, peer, sizeof peer) == TV_OK) {
            if (hb->type == MSG_HEARTBEAT) return 1;
            msg_clear(hb);
        }
    }
    return 0;
}

static int holds(const msg *hb, uint64_t id) {
    for (size_t i = 0; i < hb->u.heartbeat.n_held; i++)
        if (hb->u.heartbeat.held[i] == id) return 1;
    return 0;
}

/* Jobs 501 (encode) and 502 (generate) arrive and are held; a copy of 501 is dropped; the
 * answers end the holds (a chunk without a finish reason does not); heartbeats say the last seq
 * seen, a gateway heartbeat's included. */
static void check_held(wlink *l) {
    const uint64_t s0 = 0xabc0000000000000ull;
    msg enc = {.type = MSG_ENCODE, .seq = s0 + 1}, gen = {.type = MSG_GENERATE, .seq = s0 + 2};
    enc.u.encode.id = 501;
    gen.u.generate.id = 502;
    CHECK_OK(msg_send(gw, "w1", &enc));
    CHECK_OK(msg_send(gw, "w1", &gen));
    enc.seq = s0 + 3;                       /* the same job again */
    CHECK_OK(msg_send(gw, "w1", &enc));
    int n501 = 0, n502 = 0, gi = -1;
    int64_t end = clk_now_ms() + 500;
    msg m;
    while (clk_now_ms() < end)
        if (wlink_recv(l, 10, &m, &gi) == TV_OK) {
            n501 += m.type == MSG_ENCODE && m.u.encode.id == 501;
            n502 += m.type == MSG_GENERATE && m.u.generate.id == 502;
            msg_clear(&m);
        }
    CHECK_EQ_INT(n501, 1);
    CHECK_EQ_INT(n502, 1);
    msg hb;
    int ok = next_heartbeat(l, 150, &hb);
    CHECK(ok);
    if (ok) {
        CHECK(hb.u.heartbeat.last_seq == s0 + 3);
        CHECK(hb.u.heartbeat.n_held == 2 && holds(&hb, 501) && holds(&hb, 502));
        msg_clear(&hb);
    }
    msg done = {.type = MSG_ENCODED}, part = {.type = MSG_CHUNK}, last = {.type = MSG_CHUNK};
    done.u.encoded.id = 501;
    part.u.chunk = (msg_chunk){.id = 502, .text = "a", .finish_reason = ""};
    last.u.chunk = (msg_chunk){.id = 502, .text = "b", .finish_reason = "stop"};
    CHECK_OK(wlink_send(l, gi, &done));
    CHECK_OK(wlink_send(l, gi, &part));
    msg gbeat = {.type = MSG_HEARTBEAT, .seq = s0 + 9};
    CHECK_OK(msg_send(gw, "w1", &gbeat));
    ok = next_heartbeat(l, 150, &hb);
    CHECK(ok);
    if (ok) {
        CHECK(hb.u.heartbeat.last_seq == s0 + 9);
        CHECK(hb.u.heartbeat.n_held == 1 && holds(&hb, 502));
        msg_clear(&hb);
    }
    CHECK_OK(wlink_send(l, gi, &last));
    ok = next_heartbeat(l, 150, &hb);
    CHECK(ok);
    if (ok) {
        CHECK(hb.u.heartbeat.n_held == 0);
        msg_clear(&hb);
    }
}

static int slow_job(void *arg) {
    struct timespec ts = {0, 400 * 1000000L};
    nanosleep(&ts, NULL);
    *(int *)arg = 42;
    return TV_OK;
}

static int failing_job(void *arg) {
    return err_set(TV_EIO, "boom %d", *(int *)arg);
}

int main(void) {
    msg_ctx *ctx = NULL;
    CHECK_OK(msg_ctx_new(&ctx));
    if (ctx)
        CHECK_OK(msg_listen(ctx, "tcp://127.0.0.1:*", &gw));
    if (!gw) {
        msg_ctx_free(ctx);
        return check_finish("test_wlink");
    }
    const char *ep = msg_endpoint(gw), *port = strrchr(ep, ':') + 1;
    char dns[64];
    snprintf(dns, sizeof dns, "tcp://localhost:%s", port);
    const char *const dnss[] = {dns};
    msg_hello h = {.kind = MSG_WORKER_LM, .worker_id = "w1", .model = "m", .fingerprint = "f",
                   .device = "cpu", .capacity = 3};
    wlink_opts o = {.dns = dnss, .n_dns = 1, .heartbeat_ms = 50, .timeout_ms = 400};
    wlink *l = NULL;
    CHECK_OK(wlink_new(ctx, &o, &h, &l));
    if (!l)
        return check_finish("test_wlink");
    CHECK_EQ_INT(wlink_count(l), 1); /* localhost resolved to one address at least */

    /* Hello (and heartbeats with the load) arrive */
    msg_heartbeat hb = {.load = 2, .capacity = 3, .tokens_out = 7};
    wlink_set_load(l, &hb);
    msg m;
    char peer[MSG_PEER_MAX];
    int hello = 0, beats = 0;
    for (int i = 0; i < 100 && (!hello || !beats); i++) {
        msg w;
        int g;
        if (wlink_recv(l, 10, &w, &g) == TV_OK)
            msg_clear(&w);
        if (msg_recv(gw, 10, &m, peer, sizeof peer) == TV_OK) {
            if (m.type == MSG_HELLO) {
                hello = 1;
                CHECK_EQ_STR(peer, "w1");
                CHECK_EQ_INT(m.u.hello.capacity, 3);
                CHECK_EQ_STR(m.u.hello.device, "cpu");
            }
            if (m.type == MSG_HEARTBEAT) {
                beats = 1;
                CHECK(m.u.heartbeat.load == 2 && m.u.heartbeat.tokens_out == 7 &&
                      !m.u.heartbeat.draining);
            }
            msg_clear(&m);
        }
    }
    CHECK(hello && beats);
    CHECK_EQ_INT(wlink_registered(l), 0); /* the gateway has said nothing yet */

    /* the gateway answers: registered; a work message comes up with its gateway index */
    msg g1 = {.type = MSG_HEARTBEAT};
    CHECK_OK(msg_send(gw, "w1", &g1));
    msg c = {.type = MSG_CANCEL};
    c.u.cancel_id = 99;
    CHECK_OK(msg_send(gw, "w1", &c));
    int got = 0, gi = -1;
    for (int i = 0; i < 100 && !got; i++) {
        if (wlink_recv(l, 10, &m, &gi) == TV_OK) {
            got = m.type == MSG_CANCEL && m.u.cancel_id == 99;
            msg_clear(&m);
        }
    }
    CHECK(got && gi >= 0);
    CHECK_EQ_INT(wlink_registered(l), 1);

    /* "unknown_worker" -> Hello again */
    msg e = {.type = MSG_ERROR};
    e.u.error = (msg_error){0, 400, "unknown_worker", "?"};
    CHECK_OK(msg_send(gw, "w1", &e));
    CHECK(count_within(MSG_HELLO, 300, l) >= 1);

    /* a 400 ms job: heartbeats keep coming (every 50 ms) */
    int out = 0;
    int64_t t0 = clk_now_ms();
    CHECK_OK(wlink_busy(l, slow_job, &out));
    CHECK(out == 42 && clk_now_ms() - t0 >= 390);
    CHECK_MSG(count_within(MSG_HEARTBEAT, 50, NULL) >= 4, "too few heartbeats during a busy job");
    int arg = 7;
    CHECK_EQ_INT(wlink_busy(l, failing_job, &arg), TV_EIO);
    CHECK_EQ_STR(err_msg(), "boom 7");

    check_held(l);

    /* Bye; later heartbeats say draining */
    wlink_bye(l, "test");
    int bye = 0, draining = 0;
    for (int i = 0; i < 60; i++) {
        msg w;
        int g;
        if (wlink_recv(l, 10, &w, &g) == TV_OK)
            msg_clear(&w);
        if (msg_recv(gw, 5, &m, peer, sizeof peer) == TV_OK) {
            bye |= m.type == MSG_BYE && !strcmp(m.u.bye_reason, "test");
            draining |= m.type == MSG_HEARTBEAT && bye && m.u.heartbeat.draining;
            msg_clear(&m);
        }
    }
    CHECK(bye && draining);
    wlink_free(l);
    wlink_free(NULL);

    /* refusals */
    const char *const bad[] = {"localhost:5555"}, *const none[] = {"tcp://:5"};
    wlink_opts ob = {.dns = bad, .n_dns = 1};
    CHECK_FAILS(wlink_new(ctx, &ob, &h, &l));
    ob.dns = none;
    CHECK_FAILS(wlink_new(ctx, &ob, &h, &l));
    wlink_opts empty = {0};
    CHECK_FAILS(wlink_new(ctx, &empty, &h, &l));
    msg_hello noid = h;
    noid.worker_id = "";
    const char *const fixed[] = {ep};
    wlink_opts of = {.endpoints = fixed, .n_endpoints = 1};
    CHECK_FAILS(wlink_new(ctx, &of, &noid, &l));
    msg_close(gw);
    msg_ctx_free(ctx);
    return check_finish("test_wlink");
}
