/* test_gateway_router — the worker registry: Hello validation, routing by free capacity (never
 * beyond capacity, draining workers skipped; ties in round robin, so a restarted worker shares
 * the work at once under light load and does not take all of it either), silence detection,
 * model resolution and readiness (a vision and an LM worker of one fingerprint). */
#include "check.h"
#include "router.h"

#define FP_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define FP_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static gw_worker *hello(gw_registry *r, const char *id, msg_worker_kind k, const char *model,
                        const char *fp, uint32_t cap, double now) {
    msg_hello h = {k, (char *)id, (char *)model, (char *)fp, (char *)"cpu", cap, 64, 32, 16};
    return gw_reg_hello(r, &h, now);
}

/* Light load: n items one after another, each finished before the next; writes the picked ids'
 * first letters after their number ("v1v2..." -> "12..."). */
static void light_load(gw_registry *r, int n, char *out) {
    for (int i = 0; i < n; i++) {
        int k = gw_reg_pick(r, MSG_WORKER_VISION, FP_A);
        out[i] = k >= 0 ? r->w[k].id[1] : '-';
        if (k >= 0) {
            gw_reg_assign(r, k);
            r->w[k].inflight--;
        }
    }
    out[n] = 0;
}

/* Ties between equally free workers go round robin, also to a worker that just (re)joined. */
static void check_ties(void) {
    gw_registry r = {0};
    char seq[16];
    CHECK(hello(&r, "v1", MSG_WORKER_VISION, "tiny", FP_A, 2, 0) != NULL);
    CHECK(hello(&r, "v2", MSG_WORKER_VISION, "tiny", FP_A, 2, 0) != NULL);
    light_load(&r, 6, seq);
    CHECK_EQ_STR(seq, "121212");
    /* v2 restarts (dropped, registers again with no history): it gets the next item and then
     * its turn, not every item until it has caught up with v1's count, nor none */
    gw_reg_remove(&r, "v2");
    CHECK(hello(&r, "v2", MSG_WORKER_VISION, "tiny", FP_A, 2, 1) != NULL);
    light_load(&r, 6, seq);
    CHECK_EQ_STR(seq, "212121");
    /* a third one scaled out joins the rotation at once */
    CHECK(hello(&r, "v3", MSG_WORKER_VISION, "tiny", FP_A, 2, 2) != NULL);
    light_load(&r, 6, seq);
    CHECK_EQ_STR(seq, "321321");
    /* more free capacity still wins over the rotation: v3 busy with one item -> v2, v1 only */
    gw_reg_assign(&r, (int)(gw_reg_find(&r, "v3") - r.w));
    light_load(&r, 4, seq);
    CHECK_EQ_STR(seq, "2121");
    /* a re-Hello of a known worker keeps its place in the rotation */
    CHECK(hello(&r, "v1", MSG_WORKER_VISION, "tiny", FP_A, 2, 3) != NULL);
    gw_reg_find(&r, "v3")->inflight = 0;
    light_load(&r, 3, seq);
    CHECK_EQ_STR(seq, "321");
    gw_reg_free(&r);
}

int main(void) {
    check_ties();
    gw_registry r = {0};
    CHECK(hello(&r, "", MSG_WORKER_VISION, "m", FP_A, 1, 0) == NULL);
    CHECK(hello(&r, "x", MSG_WORKER_UNKNOWN, "m", FP_A, 1, 0) == NULL);
    CHECK(hello(&r, "x", MSG_WORKER_VISION, "m", FP_A, 0, 0) == NULL);
    CHECK(hello(&r, "x", MSG_WORKER_VISION, "m", "abc", 1, 0) == NULL);
    CHECK_EQ_INT(r.n, 0);

    char fp[65], name[GW_NAME_MAX];
    uint32_t rows = 0, dim = 0;
    CHECK_EQ_INT(gw_reg_resolve(&r, NULL, 1, fp, name, &rows, &dim), TV_ENOTFOUND);

    CHECK(hello(&r, "v1", MSG_WORKER_VISION, "tiny", FP_A, 2, 0) != NULL);
    CHECK(hello(&r, "v2", MSG_WORKER_VISION, "tiny", FP_A, 4, 0) != NULL);
    /* vision only: embeddings can resolve, chat cannot yet */
    CHECK_OK(gw_reg_resolve(&r, "tiny", 0, fp, name, &rows, &dim));
    CHECK_EQ_STR(fp, FP_A);
    CHECK_EQ_INT(rows, 32);
    CHECK_EQ_INT(gw_reg_resolve(&r, "tiny", 1, fp, name, NULL, NULL), TV_EAGAIN);
    CHECK_EQ_INT(gw_reg_resolve(&r, "other", 0, fp, name, NULL, NULL), TV_ENOTFOUND);
    char names[4][GW_NAME_MAX];
    CHECK_EQ_INT(gw_reg_models(&r, names, 4), 0);
    CHECK(hello(&r, "l1", MSG_WORKER_LM, "tiny", FP_A, 1, 0) != NULL);
    CHECK(hello(&r, "l2", MSG_WORKER_LM, "big", FP_B, 1, 0) != NULL);
    CHECK_OK(gw_reg_resolve(&r, NULL, 1, fp, name, NULL, NULL));
    CHECK_EQ_STR(name, "tiny");
    CHECK_OK(gw_reg_resolve(&r, FP_A, 1, fp, name, NULL, NULL)); /* by fingerprint */
    CHECK_EQ_INT(gw_reg_resolve(&r, "big", 1, fp, name, NULL, NULL), TV_EAGAIN);
    CHECK_EQ_INT(gw_reg_models(&r, names, 4), 1);
    CHECK_EQ_STR(names[0], "tiny");

    /* routing by free capacity: v2 (4 free) before v1 (2 free) */
    int order[6];
    for (int i = 0; i < 6; i++) {
        int k = gw_reg_pick(&r, MSG_WORKER_VISION, FP_A);
        order[i] = k;
        CHECK(k >= 0);
        if (k >= 0) gw_reg_assign(&r, k);
    }
    CHECK_EQ_STR(r.w[order[0]].id, "v2");
    CHECK_EQ_STR(r.w[order[1]].id, "v2");
    CHECK_EQ_STR(r.w[order[2]].id, "v1"); /* 2 free each: the tie goes to the less used v1 */
    CHECK_EQ_INT(gw_reg_pick(&r, MSG_WORKER_VISION, FP_A), -1); /* 2 + 4 slots all taken */
    CHECK_EQ_INT(gw_reg_find(&r, "v1")->inflight, 2);
    CHECK_EQ_INT(gw_reg_find(&r, "v2")->inflight, 4);
    gw_reg_find(&r, "v1")->inflight = 0;
    gw_reg_find(&r, "v1")->draining = 1;
    CHECK_EQ_INT(gw_reg_pick(&r, MSG_WORKER_VISION, FP_A), -1); /* draining gets nothing */
    CHECK_EQ_INT(gw_reg_count(&r, MSG_WORKER_VISION, FP_A), 1);
    CHECK_EQ_INT(gw_reg_pick(&r, MSG_WORKER_LM, FP_B), (int)(gw_reg_find(&r, "l2") - r.w));
    /* a re-Hello keeps the in-flight count and clears draining */
    CHECK(hello(&r, "v2", MSG_WORKER_VISION, "tiny", FP_A, 4, 1) != NULL);
    CHECK_EQ_INT(gw_reg_find(&r, "v2")->inflight, 4);
    CHECK(hello(&r, "v1", MSG_WORKER_VISION, "tiny", FP_A, 2, 5) != NULL);
    CHECK_EQ_INT(gw_reg_find(&r, "v1")->draining, 0);

    /* silence: at now = 5.5 with timeout 3 -> v2 (1), l1 (0), l2 (0) silent; v1 (5) not */
    char ids[2][MSG_PEER_MAX];
    CHECK_EQ_INT(gw_reg_silent(&r, 5.5, 3.0, ids, 2), 3);
    CHECK_EQ_STR(ids[0], "v2");
    CHECK_EQ_STR(ids[1], "l1");
    gw_reg_remove(&r, "v2");
    gw_reg_remove(&r, "nobody");
    CHECK_EQ_INT(r.n, 3);
    CHECK(gw_reg_find(&r, "v2") == NULL);
    CHECK_EQ_STR(r.w[0].id, "v1");
    gw_reg_free(&r);
    return check_finish("test_gateway_router");
}
