/*
 * test_threads.c - the persistent thread pool (src/base/threads.c): every thread runs each task exactly once with
 * its own index, many dispatches in a row (the spin and the sleep paths both), concurrent callers are serialised,
 * and ty__split_range covers a range exactly.
 */
#include "harness.h"
#include "base/threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

struct count_task {
    atomic_int calls[16];
    atomic_int total;
    int nth_seen;
};

static void count_fn(void *arg, int ith, int nth) {
    struct count_task *c = arg;
    atomic_fetch_add(&c->calls[ith], 1);
    atomic_fetch_add(&c->total, 1);
    c->nth_seen = nth;
}

static void test_runs_each_thread_once(void) {
    for (int n = 1; n <= 5; n++) {
        struct ty_threadpool *pool;
        CHECK_OK(ty__threadpool_init(n, &pool));
        CHECK(ty__threadpool_size(pool) == n);
        struct count_task c = {0};
        const int rounds = 400;
        for (int r = 0; r < rounds; r++) {
            ty__threadpool_run(pool, count_fn, &c);
            if (r % 100 == 0) usleep(2000); /* let the workers fall asleep now and then */
        }
        CHECK(atomic_load(&c.total) == rounds * n);
        for (int i = 0; i < n; i++) CHECK(atomic_load(&c.calls[i]) == rounds);
        CHECK(c.nth_seen == n);
        ty__threadpool_free(pool);
    }
}

/* Each thread sums its share; the shares must add up to the whole. */
struct sum_task {
    const int *data;
    int64_t n;
    int64_t partial[8];
};

static void sum_fn(void *arg, int ith, int nth) {
    struct sum_task *s = arg;
    int64_t b, e;
    ty__split_range(s->n, ith, nth, &b, &e);
    int64_t acc = 0;
    for (int64_t i = b; i < e; i++) acc += s->data[i];
    s->partial[ith] = acc;
}

static void test_split_and_sum(void) {
    int data[1003];
    int64_t want = 0;
    for (int i = 0; i < 1003; i++) want += (data[i] = i * 3 + 1);
    struct ty_threadpool *pool;
    CHECK_OK(ty__threadpool_init(4, &pool));
    struct sum_task s = {data, 1003, {0}};
    ty__threadpool_run(pool, sum_fn, &s);
    CHECK(s.partial[0] + s.partial[1] + s.partial[2] + s.partial[3] == want);
    ty__threadpool_free(pool);

    /* split_range: contiguous, complete, balanced */
    for (int nth = 1; nth <= 7; nth++)
        for (int64_t n = 0; n < 20; n++) {
            int64_t next = 0;
            for (int i = 0; i < nth; i++) {
                int64_t b, e;
                ty__split_range(n, i, nth, &b, &e);
                CHECK(b == next && e >= b && e - b <= n / nth + 1 && e - b >= n / nth);
                next = e;
            }
            CHECK(next == n);
        }
}

static struct ty_threadpool *shared_pool;
static void *caller_main(void *arg) {
    struct count_task *c = arg;
    for (int r = 0; r < 300; r++) ty__threadpool_run(shared_pool, count_fn, c);
    return NULL;
}

static void test_concurrent_callers(void) {
    CHECK_OK(ty__threadpool_init(3, &shared_pool));
    struct count_task c = {0};
    pthread_t a, b;
    pthread_create(&a, NULL, caller_main, &c);
    pthread_create(&b, NULL, caller_main, &c);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK(atomic_load(&c.total) == 2 * 300 * 3);
    ty__threadpool_free(shared_pool);
}

static void test_bad_counts(void) {
    struct ty_threadpool *pool = (struct ty_threadpool *)1;
    CHECK_STATUS(ty__threadpool_init(-1, &pool), TY_ERR_INVALID_ARG);
    CHECK(pool == NULL);
    CHECK_OK(ty__threadpool_init(0, &pool));
    CHECK(ty__threadpool_size(pool) == ty__cpu_count());
    ty__threadpool_free(pool);
    ty__threadpool_free(NULL);
}

void ty_tests(void) {
    TY_RUN(test_runs_each_thread_once);
    TY_RUN(test_split_and_sum);
    TY_RUN(test_concurrent_callers);
    TY_RUN(test_bad_counts);
}
