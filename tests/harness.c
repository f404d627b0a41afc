/*
 * harness.c - main() for every C unit test: runs ty_tests(), prints a summary, and exits non-zero on any failure.
 */
#include "harness.h"

/* Paths here are bounded by PATH_MAX-sized buffers; a truncated test path would only fail the test that used it. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

int ty_test_failures;
int ty_test_checks;
const char *ty_test_current = "";
static const char *test_name = "test";

static const char *ring_path(const char *a, const char *b, const char *c) {
    static char ring[16][4096];
    static int next;
    char *p = ring[next++ % 16];
    snprintf(p, sizeof ring[0], "%s%s%s", a, b, c);
    return p;
}

const char *ty_test_src(const char *rel) {
    const char *src = getenv("TY_SOURCE_DIR");
#ifdef TY_SOURCE_DIR
    if (!src) src = TY_SOURCE_DIR;
#endif
    return ring_path(src ? src : ".", "/", rel);
}

static char exe_build_dir[4096] = "build";

static const char *build_dir(void) {
    const char *b = getenv("TY_BUILD_DIR");
    return b ? b : exe_build_dir;
}

const char *ty_test_tmp(const char *rel) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests", build_dir());
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/tests/tmp-%s", build_dir(), test_name);
    mkdir(dir, 0755);
    return ring_path(dir, "/", rel);
}

const char *ty_test_cli(void) {
    const char *c = getenv("TONGYUN");
    return c ? c : ring_path(build_dir(), "/tongyun", "");
}

int ty_test_sh(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    struct ty_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0) ty__buf_append(&b, chunk, n);
    int st = pclose(p);
    if (out) {
        if (!b.data) ty__buf_append(&b, "", 0);
        ty__buf_finish(&b, out);
    } else {
        ty__buf_free(&b);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

uint64_t ty_test_xorshift(uint64_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

double ty_test_urand(uint64_t *state) {
    return (double)(ty_test_xorshift(state) >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}

uint64_t ty_test_name_seed(const char *name) {
    uint64_t h = 1469598103934665603ull;
    for (; *name; name++) h = (h ^ (unsigned char)*name) * 1099511628211ull;
    return h | 1;
}

double ty_test_max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

int main(int argc, char **argv) {
    (void)argc;
    const char *slash = strrchr(argv[0], '/');
    test_name = slash ? slash + 1 : argv[0];
    /* Binaries live in BUILD/tests/: without TY_BUILD_DIR, BUILD is two levels up from argv[0]. */
    if (slash) {
        snprintf(exe_build_dir, sizeof exe_build_dir, "%.*s/..", (int)(slash - argv[0]), argv[0]);
    }
    ty_tests();
    printf("%s: %d checks, %d failed\n", test_name, ty_test_checks, ty_test_failures);
    if (ty_test_checks == 0) {
        fprintf(stderr, "%s: no checks ran\n", test_name);
        return 1;
    }
    return ty_test_failures ? 1 : 0;
}
