/*
 * harness.h - the small unit-test harness every C test links: CHECK macros that record a failure and go on,
 * per-test naming, paths to the source tree and build outputs, and a temp directory per test binary.
 * A test file defines `void ty_tests(void)` and calls TY_RUN(name) for each test function.
 */
#ifndef TY_TEST_HARNESS_H
#define TY_TEST_HARNESS_H

#include "base/base.h"

#include <math.h>
#include <stdio.h>

extern int ty_test_failures;
extern int ty_test_checks;
extern const char *ty_test_current;

void ty_tests(void); /* defined by each test file */

#define TY_RUN(fn)                                                                                                     \
    do {                                                                                                               \
        int before_ = ty_test_failures;                                                                                \
        ty_test_current = #fn;                                                                                         \
        fn();                                                                                                          \
        printf("%s %s\n", ty_test_failures == before_ ? "ok  " : "FAIL", #fn);                                         \
        fflush(stdout);                                                                                                \
    } while (0)

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        ty_test_checks++;                                                                                              \
        if (!(cond)) {                                                                                                 \
            ty_test_failures++;                                                                                        \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, ty_test_current, #cond);              \
        }                                                                                                              \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                                           \
    do {                                                                                                               \
        ty_test_checks++;                                                                                              \
        if (!(cond)) {                                                                                                 \
            ty_test_failures++;                                                                                        \
            fprintf(stderr, "%s:%d: %s: check failed: %s: ", __FILE__, __LINE__, ty_test_current, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
        }                                                                                                              \
    } while (0)

/* A status check that prints ty_last_error() on failure. */
#define CHECK_OK(expr)                                                                                                 \
    do {                                                                                                               \
        enum ty_status st_ = (expr);                                                                                   \
        CHECK_MSG(st_ == TY_OK, "%s -> %s: %s", #expr, ty_status_str(st_), ty_last_error());                           \
    } while (0)

#define CHECK_STATUS(expr, want)                                                                                       \
    do {                                                                                                               \
        enum ty_status st_ = (expr);                                                                                   \
        CHECK_MSG(st_ == (want), "%s -> %s, want %s (%s)", #expr, ty_status_str(st_), ty_status_str(want),             \
                  ty_last_error());                                                                                    \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                                          \
    do {                                                                                                               \
        double a_ = (a), b_ = (b);                                                                                     \
        CHECK_MSG(fabs(a_ - b_) <= (tol), "%s = %.9g, %s = %.9g, tolerance %g", #a, a_, #b, b_, (double)(tol));        \
    } while (0)

/* Path under the source tree ("tests/data/x") in a static buffer per call site ring. */
const char *ty_test_src(const char *rel);
/* A fresh path in this test binary's temp dir (build/tests/tmp-NAME/rel). */
const char *ty_test_tmp(const char *rel);
/* Path of the CLI (build/tongyun). */
const char *ty_test_cli(void);
/* Runs a shell command, returns its exit status, and captures its stdout (ty_free) when `out` is non-NULL. */
int ty_test_sh(const char *cmd, char **out);

/* Deterministic test data: xorshift64 steps *state (never 0) and returns the new state; ty_test_urand maps a step to
 * a uniform double in [-1, 1); ty_test_name_seed hashes a name (FNV-1a) to a nonzero seed. */
uint64_t ty_test_xorshift(uint64_t *state);
double ty_test_urand(uint64_t *state);
uint64_t ty_test_name_seed(const char *name);
/* The largest |a[i] - b[i]|. */
double ty_test_max_diff(const float *a, const float *b, size_t n);

#endif
