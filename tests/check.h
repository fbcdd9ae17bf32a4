/* check — the unit-test harness: CHECK macros count failures and print file:line; a test's main
 * ends with `return check_finish("name");`, which prints "name: N checks, M failed" and returns
 * the exit status ctest reads. Header-only so every test is one .c file. */
#ifndef TV_CHECK_H
#define TV_CHECK_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static long check_count, check_failed;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        check_count++;                                                                   \
        if (!(cond)) {                                                                   \
            check_failed++;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                                \
    } while (0)

#define CHECK_MSG(cond, ...)                                                             \
    do {                                                                                 \
        check_count++;                                                                   \
        if (!(cond)) {                                                                   \
            check_failed++;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                               \
    do {                                                                                 \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                  \
        CHECK_MSG(check_a_ == check_b_, "%lld != %lld", check_a_, check_b_);             \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                               \
    do {                                                                                 \
        const char *check_a_ = (a), *check_b_ = (b);                                     \
        CHECK_MSG(check_a_ && check_b_ && strcmp(check_a_, check_b_) == 0,               \
                  "\"%s\" != \"%s\"", check_a_ ? check_a_ : "(null)",                    \
                  check_b_ ? check_b_ : "(null)");                                       \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                            \
    do {                                                                                 \
        double check_a_ = (a), check_b_ = (b);                                           \
        CHECK_MSG(fabs(check_a_ - check_b_) <= (tol), "%.9g vs %.9g (tol %g)", check_a_, \
                  check_b_, (double)(tol));                                              \
    } while (0)

/* expr returns a status: passes when it is 0; prints err_msg() otherwise. */
#define CHECK_OK(expr)                                                                   \
    do {                                                                                 \
        int check_rc_ = (expr);                                                          \
        CHECK_MSG(check_rc_ == 0, "%s -> %d (%s)", #expr, check_rc_, err_msg());         \
    } while (0)

/* expr must fail (non-zero) and leave a non-empty message. */
#define CHECK_FAILS(expr)                                                                \
    do {                                                                                 \
        err_clear();                                                                     \
        int check_rc_ = (expr);                                                          \
        CHECK_MSG(check_rc_ < 0 && err_msg()[0], "%s -> %d, message \"%s\"", #expr,      \
                  check_rc_, err_msg());                                                 \
    } while (0)

static inline int check_finish(const char *name) {
    printf("%s: %ld checks, %ld failed\n", name, check_count, check_failed);
    if (check_count == 0) {
        printf("%s: no checks ran\n", name);
        return 1;
    }
    return check_failed ? 1 : 0;
}

/* Path of a file under tests/data; returns a static buffer. */
static inline const char *check_data(const char *rel) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", TV_TEST_DATA, rel);
    return buf;
}

#endif
