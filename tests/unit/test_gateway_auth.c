/* test_gateway_auth — API key file parsing, Bearer checks, per-tenant concurrency and the
 * token-bucket rate limit, the open mode. */
#include "auth.h"
#include "check.h"

static void test_parse_and_check(void) {
    const char *txt =
        "# keys\n"
        "sk-alpha  acme 2 - \n"
        "sk-beta\tacme\n"
        "sk-gamma  solo 0 60 pepper   # private cache\n"
        "\n   \n";
    gw_auth *a = NULL;
    CHECK_OK(gw_auth_parse(txt, "keys.txt", &a));
    if (!a) return;
    CHECK_EQ_INT(gw_auth_required(a), 1);
    CHECK_EQ_INT(gw_auth_n_keys(a), 3);
    CHECK_EQ_INT(gw_auth_n_tenants(a), 2);
    gw_tenant *t = NULL, *t2 = NULL;
    gw_tenant_info info;
    CHECK_OK(gw_auth_check(a, "Bearer sk-alpha", &t));
    CHECK_OK(gw_auth_check(a, "bearer   sk-beta  ", &t2));
    CHECK(t && t == t2);
    gw_auth_info(t, &info);
    CHECK_EQ_STR(info.name, "acme");
    CHECK_EQ_INT(info.max_concurrent, 2);
    CHECK(info.salt == NULL);
    CHECK_OK(gw_auth_check(a, "Bearer sk-gamma", &t));
    gw_auth_info(t, &info);
    CHECK_EQ_STR(info.name, "solo");
    CHECK_EQ_STR(info.salt, "pepper");
    CHECK_NEAR(info.rpm, 60, 0);
    CHECK_FAILS(gw_auth_check(a, NULL, &t));
    CHECK(strstr(err_msg(), "missing") != NULL);
    CHECK(t == NULL);
    CHECK_FAILS(gw_auth_check(a, "", &t));
    CHECK_FAILS(gw_auth_check(a, "Bearer sk-alph", &t));
    CHECK(strstr(err_msg(), "invalid API key") != NULL);
    CHECK_FAILS(gw_auth_check(a, "Bearer sk-alphaX", &t));
    CHECK_FAILS(gw_auth_check(a, "Bearer ", &t));
    CHECK_FAILS(gw_auth_check(a, "Basic c2stYWxwaGE=", &t));
    CHECK_FAILS(gw_auth_check(a, "sk-alpha", &t));
    gw_auth_free(a);
}

static void test_parse_errors(void) {
    gw_auth *a = (gw_auth *)1;
    CHECK_FAILS(gw_auth_parse("lonelykey\n", "k", &a));
    CHECK(a == NULL);
    CHECK(strstr(err_msg(), "k:1") != NULL);
    CHECK_FAILS(gw_auth_parse("a t\nb t x\n", "k", &a));
    CHECK(strstr(err_msg(), "k:2") != NULL);
    CHECK_FAILS(gw_auth_parse("a t 1 -5\n", "k", &a));
    CHECK_FAILS(gw_auth_parse("a t 1 1 s extra\n", "k", &a));
    CHECK_FAILS(gw_auth_parse("a t\na u\n", "k", &a)); /* same key twice */
    CHECK_FAILS(gw_auth_parse("# only comments\n\n", "k", &a));
    CHECK_FAILS(gw_auth_parse("", "k", &a));
    CHECK_FAILS(gw_auth_load("/nonexistent/keys", &a));
    gw_auth_free(NULL);
}

static void test_limits(void) {
    gw_auth *a = NULL;
    CHECK_OK(gw_auth_parse("k1 conc 2\nk2 rate 0 6\n", "k", &a));
    if (!a) return;
    gw_tenant *c = NULL, *r = NULL;
    CHECK_OK(gw_auth_check(a, "Bearer k1", &c));
    CHECK_OK(gw_auth_check(a, "Bearer k2", &r));
    /* concurrency: 2 in flight, the third is refused until one ends */
    CHECK_OK(gw_auth_acquire(a, c, 0));
    CHECK_OK(gw_auth_acquire(a, c, 0));
    CHECK_FAILS(gw_auth_acquire(a, c, 0));
    CHECK(strstr(err_msg(), "in flight") != NULL);
    gw_auth_release(a, c);
    CHECK_OK(gw_auth_acquire(a, c, 0));
    /* rate: 6 per minute = a burst of 6, then one more every 10 s */
    for (int i = 0; i < 6; i++) {
        CHECK_OK(gw_auth_acquire(a, r, 100.0));
        gw_auth_release(a, r);
    }
    CHECK_FAILS(gw_auth_acquire(a, r, 100.0));
    CHECK(strstr(err_msg(), "rate limit") != NULL);
    CHECK_FAILS(gw_auth_acquire(a, r, 105.0));
    CHECK_OK(gw_auth_acquire(a, r, 110.5));
    gw_auth_release(a, r);
    CHECK_FAILS(gw_auth_acquire(a, r, 111.0));
    /* a long pause refills only up to the burst size */
    for (int i = 0; i < 6; i++) {
        CHECK_OK(gw_auth_acquire(a, r, 10000.0));
        gw_auth_release(a, r);
    }
    CHECK_FAILS(gw_auth_acquire(a, r, 10000.0));
    gw_auth_free(a);
}

static void test_open(void) {
    gw_auth *a = gw_auth_open();
    gw_tenant *t = NULL;
    CHECK_EQ_INT(gw_auth_required(a), 0);
    CHECK_OK(gw_auth_check(a, NULL, &t));
    CHECK(t != NULL);
    gw_tenant_info info;
    gw_auth_info(t, &info);
    CHECK_EQ_STR(info.name, "default");
    for (int i = 0; i < 100; i++) CHECK_OK(gw_auth_acquire(a, t, 0));
    gw_auth_free(a);
}

int main(void) {
    test_parse_and_check();
    test_parse_errors();
    test_limits();
    test_open();
    return check_finish("test_gateway_auth");
}
