/*
 * test_threads.c - the persistent thread pool (src/base/threads.c): every thread runs each task exactly once with
 * its own index, many dispatches in a row (the spin and the sleep paths both), concurrent callers are serialised,
 * ty__split_range covers a range exactly, and ty__threadpool_barrier separates the phases of a task (no thread reads
 * a phase's data before every thread has written it, none runs ahead into the next phase early), and run_any does
 * shared-counter work exactly once with whichever workers join in time, and ty__threadpool_wait_count holds a thread
 * until a completion count is reached, the counted work's writes visible after it; the idle hook runs on each worker
 * after each task it ran, never before its first, is not waited for by the caller, and returns when the next task
 * comes.
 */
#include "harness.h"
#include "base/threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
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

/* Phases separated by barriers: in phase p every thread writes its slot, and after the barrier every thread must see
 * every slot of phase p (a thread running ahead into phase p + 1 would overwrite a slot someone still has to read).
 * Many rounds, with sleeps now and then so some threads reach the barrier's sleeping path. */
struct phase_task {
    struct ty_threadpool *pool;
    int slot[8];
    atomic_int errors;
    int phases;
};

static void phase_fn(void *arg, int ith, int nth) {
    struct phase_task *p = arg;
    for (int ph = 1; ph <= p->phases; ph++) {
        p->slot[ith] = ph;
        if (ith == ph % nth && ph % 50 == 0) usleep(1000);
        ty__threadpool_barrier(p->pool);
        for (int i = 0; i < nth; i++)
            if (p->slot[i] != ph) atomic_fetch_add(&p->errors, 1);
        ty__threadpool_barrier(p->pool);
    }
}

static void test_barrier(void) {
    for (int n = 1; n <= 4; n++) {
        struct phase_task p = {0};
        CHECK_OK(ty__threadpool_init(n, &p.pool));
        p.phases = 200;
        for (int r = 0; r < 5; r++) ty__threadpool_run(p.pool, phase_fn, &p);
        CHECK_MSG(atomic_load(&p.errors) == 0, "%d threads: %d stale reads across a barrier", n,
                  atomic_load(&p.errors));
        ty__threadpool_free(p.pool);
    }
    /* pinned or not (the OS decides), a pool still runs every thread; TY_NO_PIN turns pinning off */
    struct ty_threadpool *pool;
    CHECK_OK(ty__threadpool_init(2, &pool));
    int pinned = ty__threadpool_pin(pool);
    CHECK(pinned >= 0 && pinned <= 1 && ty__threadpool_pin(pool) == pinned);
    struct count_task c = {0};
    for (int r = 0; r < 50; r++) ty__threadpool_run(pool, count_fn, &c);
    CHECK(atomic_load(&c.total) == 100);
    ty__threadpool_free(pool);
    setenv("TY_NO_PIN", "1", 1);
    CHECK_OK(ty__threadpool_init(2, &pool));
    CHECK(ty__threadpool_pin(pool) == 0);
    ty__threadpool_free(pool);
    unsetenv("TY_NO_PIN");
}

/* run_any: items taken from a shared counter are each done exactly once whoever joins, the caller always takes part,
 * and run_any and run alternate safely (a late worker must neither run a closed task nor miss a plain one). */
struct any_task {
    atomic_int next;
    int n_items;
    atomic_int done[512];
    atomic_int callers;
    atomic_int by_thread[8];
};

static void any_fn(void *arg, int ith, int nth) {
    struct any_task *a = arg;
    if (ith == 0) atomic_fetch_add(&a->callers, 1);
    atomic_fetch_add(&a->by_thread[ith], 1);
    for (int i; (i = atomic_fetch_add(&a->next, 1)) < a->n_items;) {
        atomic_fetch_add(&a->done[i], 1);
        if (i % 97 == 0 && ith == nth - 1) usleep(200); /* a slow worker now and then */
    }
}

static void test_run_any(void) {
    for (int n = 1; n <= 3; n++) {
        struct ty_threadpool *pool;
        CHECK_OK(ty__threadpool_init(n, &pool));
        bool exact = true;
        int rounds = 300;
        for (int r = 0; r < rounds; r++) {
            struct any_task *a = ty__calloc(1, sizeof *a);
            a->n_items = 1 + r % 500;
            ty__threadpool_run_any(pool, any_fn, a);
            for (int i = 0; i < a->n_items; i++) exact = exact && atomic_load(&a->done[i]) == 1;
            exact = exact && atomic_load(&a->callers) == 1;
            for (int t = 0; t < n; t++) exact = exact && atomic_load(&a->by_thread[t]) <= 1;
            ty_free(a);       /* freed at once: no late worker may still look at it */
            if (r % 3 == 0) { /* a plain run in between must still reach every thread */
                struct count_task c = {0};
                ty__threadpool_run(pool, count_fn, &c);
                exact = exact && atomic_load(&c.total) == n;
            }
            if (r % 50 == 0) usleep(2000);
        }
        CHECK_MSG(exact, "%d threads: run_any lost, repeated or misrouted work", n);
        ty__threadpool_free(pool);
    }
}

/* wait_count inside run_any: two phases of shared-counter work, the second reading every item of the first; a thread
 * enters the second only once the first's count is complete, and sees every value written before the counting (plain
 * stores, published by the count's release and acquire), whoever joined. */
struct phased_task {
    atomic_int next1, next2;
    atomic_llong done1;
    int n_items;
    int value[512];   /* phase 1: value[i] = i + 1, plain stores */
    int sum[512];     /* phase 2: sum[i] = value[i] + value[n - 1 - i] */
    atomic_int early; /* phase-2 reads of a value not yet written */
};

static void phased_fn(void *arg, int ith, int nth) {
    struct phased_task *a = arg;
    for (int i; (i = atomic_fetch_add(&a->next1, 1)) < a->n_items;) {
        if (i % 61 == 0 && ith == nth - 1) usleep(100); /* a slow thread holding an item */
        a->value[i] = i + 1;
        atomic_fetch_add_explicit(&a->done1, 1, memory_order_release);
    }
    ty__threadpool_wait_count(&a->done1, a->n_items);
    for (int i; (i = atomic_fetch_add(&a->next2, 1)) < a->n_items;) {
        const int x = a->value[i], y = a->value[a->n_items - 1 - i];
        if (x == 0 || y == 0) atomic_fetch_add(&a->early, 1);
        a->sum[i] = x + y;
    }
}

static void test_wait_count(void) {
    for (int n = 1; n <= 3; n++) {
        struct ty_threadpool *pool;
        CHECK_OK(ty__threadpool_init(n, &pool));
        bool exact = true;
        for (int r = 0; r < 200; r++) {
            struct phased_task *a = ty__calloc(1, sizeof *a);
            a->n_items = 1 + (r * 37) % 512;
            ty__threadpool_run_any(pool, phased_fn, a);
            for (int i = 0; i < a->n_items; i++) exact = exact && a->sum[i] == a->n_items + 1;
            exact = exact && atomic_load(&a->early) == 0;
            ty_free(a);
        }
        CHECK_MSG(exact, "%d threads: a thread passed wait_count before the first phase was complete", n);
        ty__threadpool_free(pool);
    }
}

/* An idle hook that counts its calls per worker and then stays until the next task is dispatched. */
struct idle_state {
    struct ty_threadpool *pool;
    atomic_int calls[4];
};

static void idle_until_task(void *ctx, int ith) {
    struct idle_state *s = ctx;
    atomic_fetch_add(&s->calls[ith], 1);
    while (!ty__threadpool_task_waiting(s->pool, ith)) usleep(50);
}

static void test_idle_hook(void) {
    enum { N = 3, ROUNDS = 20 };
    static struct idle_state s;
    CHECK_OK(ty__threadpool_init(N, &s.pool));
    ty__threadpool_set_idle(s.pool, idle_until_task, &s);
    usleep(20000);
    CHECK_MSG(atomic_load(&s.calls[1]) == 0 && atomic_load(&s.calls[2]) == 0, "the hook ran before any task");
    bool all_ran = true;
    for (int r = 0; r < ROUNDS; r++) {
        /* each worker is still inside the hook of the last task: the dispatch must bring it out to run this one, and
         * the call returns while the hook of this one holds the worker */
        struct count_task c = {0};
        if (r % 2)
            ty__threadpool_run(s.pool, count_fn, &c);
        else
            ty__threadpool_run_any(s.pool, count_fn, &c);
        all_ran = all_ran && (r % 2 == 0 || atomic_load(&c.total) == N);
        for (int i = 0; i < 2000 && (atomic_load(&s.calls[1]) <= r || atomic_load(&s.calls[2]) <= r); i++) usleep(100);
    }
    CHECK_MSG(all_ran, "a plain run missed a worker that sat in its idle hook");
    /* a run_any worker that did not join still counts a pass of its loop; each ran the hook at least once a round */
    for (int w = 1; w < N; w++)
        CHECK_MSG(atomic_load(&s.calls[w]) >= ROUNDS, "worker %d: %d idle calls after %d tasks", w,
                  atomic_load(&s.calls[w]), ROUNDS);
    ty__threadpool_free(s.pool); /* the stop is a dispatch too: the hooks return */
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
    TY_RUN(test_barrier);
    TY_RUN(test_run_any);
    TY_RUN(test_wait_count);
    TY_RUN(test_idle_hook);
    TY_RUN(test_bad_counts);
}
