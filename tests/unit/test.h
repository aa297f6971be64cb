/*
 * A minimal unit-test harness: a test file includes this, defines test functions, and lists
 * them in main() with RUN(). Each failed CHECK prints file:line and the expression. The
 * process prints "name: N passed, N failed" and exits 1 on any failure. A test may include a
 * .c file directly to reach its statics (STYLE.md 9).
 */
#ifndef LL_TEST_H
#define LL_TEST_H

#include <stdio.h>
#include <string.h>

static int test_passed, test_failed, test_cur_failed;

#define CHECK(e)                                                                                   \
    do {                                                                                           \
        if (!(e)) {                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #e);                 \
            test_cur_failed = 1;                                                                   \
        }                                                                                          \
    } while (0)
#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, #a, #b, a_, b_); \
            test_cur_failed = 1;                                                                   \
        }                                                                                          \
    } while (0)
#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" vs \"%s\")\n", __FILE__, __LINE__, #a, #b, \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                       \
            test_cur_failed = 1;                                                                   \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        test_cur_failed = 0;                                                                       \
        fn();                                                                                      \
        if (test_cur_failed) {                                                                     \
            fprintf(stderr, "FAIL %s\n", #fn);                                                     \
            test_failed++;                                                                         \
        } else {                                                                                   \
            test_passed++;                                                                         \
        }                                                                                          \
    } while (0)

#define TEST_DONE(name)                                                                            \
    (printf("%s: %d passed, %d failed\n", (name), test_passed, test_failed), test_failed ? 1 : 0)

#endif
