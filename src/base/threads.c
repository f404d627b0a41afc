/*
 * threads.c - the persistent thread pool of threads.h.
 *
 * A dispatch bumps a generation counter; workers wait for it to change, run the task and count down `pending`. Every
 * wait (a worker for work, the caller for the workers, a thread at a barrier) spins briefly before sleeping on a
 * condition variable: a forward pass dispatches a few hundred short tasks per token, and a futex round trip per task
 * would cost more than many of the tasks themselves. The spin is short so that an oversubscribed machine (tests
 * running in parallel on two cores) loses little to it.
 *
 * The waker takes the mutex only when someone sleeps. Lost wake-ups are impossible: a sleeper counts itself in
 * (sequentially consistent) and then re-checks the condition with the mutex held, while the waker changes the
 * condition (sequentially consistent) and then reads the count, so at least one of them sees the other, and a
 * broadcast under the mutex cannot fall between a sleeper's check and its wait.
 */
#include "base/threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN_ITERATIONS 4096
#define JOIN_CLOSED     ((uint_least64_t)1 << 31)

struct worker {
    struct ty_threadpool *pool;
    int ith;
    pthread_t thread;
    unsigned seen; /* the generation of the last task the worker took (its own thread only) */
};

struct ty_threadpool {
    int n_threads;          /* the caller included */
    struct worker *workers; /* (n_threads - 1) */
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_cond_t cv_done;
    pthread_cond_t cv_barrier;
    pthread_mutex_t run_mu; /* serialises ty__threadpool_run callers */
    ty_task_fn fn;
    void *arg;
    atomic_uint generation;
    atomic_int pending;
    atomic_bool stop;
    atomic_int work_sleepers;    /* workers asleep on cv_work */
    atomic_int done_sleeping;    /* the caller is asleep on cv_done */
    atomic_int barrier_count;    /* threads arrived at the current barrier */
    atomic_uint barrier_phase;   /* barriers completed */
    atomic_int barrier_sleepers; /* threads asleep on cv_barrier */
    /* ty__threadpool_run_any: workers join the current task while it is open */
    atomic_bool any;                  /* the current task is run_any's */
    atomic_uint_least64_t join_state; /* generation << 32 | CLOSED | workers joined */
    atomic_int any_done;              /* joined workers that have returned */
    int n_started;
    int n_pinned;
    void (*idle)(void *ctx, int ith); /* ty__threadpool_set_idle */
    void *idle_ctx;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

int ty__cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Wakes every sleeper on `cv` if there may be one; the condition has been changed before. */
static void wake_all(struct ty_threadpool *pool, atomic_int *sleepers, pthread_cond_t *cv) {
    if (atomic_load(sleepers) == 0) return;
    pthread_mutex_lock(&pool->mu);
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(&pool->mu);
}

static void *worker_main(void *p) {
    struct worker *w = p;
    struct ty_threadpool *pool = w->pool;
    unsigned seen = 0;
    for (bool ran = false;; ran = true) {
        if (ran && pool->idle) pool->idle(pool->idle_ctx, w->ith);
        unsigned g = atomic_load_explicit(&pool->generation, memory_order_acquire);
        for (int i = 0; g == seen && i < SPIN_ITERATIONS; i++) {
            cpu_relax();
            g = atomic_load_explicit(&pool->generation, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&pool->mu);
            atomic_fetch_add(&pool->work_sleepers, 1);
            while ((g = atomic_load(&pool->generation)) == seen) pthread_cond_wait(&pool->cv_work, &pool->mu);
            atomic_fetch_sub(&pool->work_sleepers, 1);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->stop)) return NULL;
        bool any = atomic_load(&pool->any);
        if (atomic_load(&pool->generation) != g) continue; /* a run_any task closed and another began: take that */
        w->seen = seen = g;
        if (any) {
            /* join only while the caller has not closed the task; a late worker skips it */
            uint_least64_t v = atomic_load(&pool->join_state);
            bool joined = false;
            while (!joined && (uint32_t)(v >> 32) == (uint32_t)g && !(v & JOIN_CLOSED))
                joined = atomic_compare_exchange_weak(&pool->join_state, &v, v + 1);
            if (!joined) continue;
            pool->fn(pool->arg, w->ith, pool->n_threads);
            atomic_fetch_add(&pool->any_done, 1);
            wake_all(pool, &pool->done_sleeping, &pool->cv_done);
            continue;
        }
        pool->fn(pool->arg, w->ith, pool->n_threads);
        if (atomic_fetch_sub(&pool->pending, 1) == 1) wake_all(pool, &pool->done_sleeping, &pool->cv_done);
    }
}

static void wake_workers(struct ty_threadpool *pool) {
    atomic_fetch_add(&pool->generation, 1);
    wake_all(pool, &pool->work_sleepers, &pool->cv_work);
}

static void stop_workers(struct ty_threadpool *pool) {
    atomic_store(&pool->stop, true);
    wake_workers(pool);
    for (int i = 0; i < pool->n_started; i++) pthread_join(pool->workers[i].thread, NULL);
    pool->n_started = 0;
}

/* Pins worker ith to the ith core the process may run on, leaving the first to the caller. Silently does nothing
 * where the OS has no affinity call, refuses it, or there are fewer allowed cores than threads (pinning two threads
 * to one core would only make them wait for each other). */
static bool pin_worker(pthread_t thread, int ith, int n_threads) {
#if defined(__linux__)
    const char *env = getenv("TY_NO_PIN");
    if (env && *env && strcmp(env, "0") != 0) return false;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < n_threads) return false;
    for (int cpu = 0, k = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed)) continue;
        if (k++ != ith) continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        return pthread_setaffinity_np(thread, sizeof one, &one) == 0;
    }
#else
    (void)thread, (void)ith, (void)n_threads;
#endif
    return false;
}

enum ty_status ty__threadpool_init(int n_threads, struct ty_threadpool **out) {
    *out = NULL;
    if (n_threads < 0)
        return ty__error(TY_ERR_INVALID_ARG, "thread count %d is negative; use 0 for one per core", n_threads);
    if (n_threads == 0) n_threads = ty__cpu_count();
    if (n_threads > 1024)
        return ty__error(TY_ERR_INVALID_ARG, "thread count %d is too large (at most 1024)", n_threads);
    struct ty_threadpool *pool = ty__calloc(1, sizeof *pool);
    if (!pool) return ty__error(TY_ERR_NO_MEMORY, "out of memory creating a thread pool");
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_mutex_init(&pool->run_mu, NULL);
    pthread_cond_init(&pool->cv_work, NULL);
    pthread_cond_init(&pool->cv_done, NULL);
    pthread_cond_init(&pool->cv_barrier, NULL);
    if (n_threads > 1) {
        pool->workers = ty__calloc((size_t)n_threads - 1, sizeof *pool->workers);
        if (!pool->workers) {
            ty__threadpool_free(pool);
            return ty__error(TY_ERR_NO_MEMORY, "out of memory creating a thread pool of %d threads", n_threads);
        }
        for (int i = 0; i < n_threads - 1; i++) {
            struct worker *w = &pool->workers[i];
            w->pool = pool;
            w->ith = i + 1;
            int rc = pthread_create(&w->thread, NULL, worker_main, w);
            if (rc != 0) {
                ty__threadpool_free(pool);
                return ty__error(TY_ERR_INTERNAL, "cannot start worker thread %d of %d (%s); try fewer threads", i + 1,
                                 n_threads, strerror(rc));
            }
            pool->n_started++;
        }
    }
    *out = pool;
    return TY_OK;
}

void ty__threadpool_free(struct ty_threadpool *pool) {
    if (!pool) return;
    stop_workers(pool);
    pthread_mutex_destroy(&pool->mu);
    pthread_mutex_destroy(&pool->run_mu);
    pthread_cond_destroy(&pool->cv_work);
    pthread_cond_destroy(&pool->cv_done);
    pthread_cond_destroy(&pool->cv_barrier);
    ty_free(pool->workers);
    ty_free(pool);
}

void ty__threadpool_set_idle(struct ty_threadpool *pool, void (*idle)(void *ctx, int ith), void *ctx) {
    pool->idle_ctx = ctx;
    pool->idle = idle;
}

bool ty__threadpool_task_waiting(const struct ty_threadpool *pool, int ith) {
    return atomic_load_explicit(&((struct ty_threadpool *)pool)->generation, memory_order_relaxed) !=
           pool->workers[ith - 1].seen;
}

int ty__threadpool_size(const struct ty_threadpool *pool) {
    return pool->n_threads;
}

int ty__threadpool_pin(struct ty_threadpool *pool) {
    if (pool->n_pinned == 0)
        for (int i = 0; i < pool->n_started; i++)
            if (pin_worker(pool->workers[i].thread, pool->workers[i].ith, pool->n_threads)) pool->n_pinned++;
    return pool->n_pinned;
}

void ty__threadpool_run(struct ty_threadpool *pool, ty_task_fn fn, void *arg) {
    if (pool->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool->run_mu);
    pool->fn = fn;
    pool->arg = arg;
    atomic_store(&pool->any, false);
    atomic_store(&pool->pending, pool->n_threads - 1);
    wake_workers(pool);
    fn(arg, 0, pool->n_threads);
    for (int i = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) != 0 && i < SPIN_ITERATIONS; i++)
        cpu_relax();
    if (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0) {
        pthread_mutex_lock(&pool->mu);
        atomic_store(&pool->done_sleeping, 1);
        while (atomic_load(&pool->pending) != 0) pthread_cond_wait(&pool->cv_done, &pool->mu);
        atomic_store(&pool->done_sleeping, 0);
        pthread_mutex_unlock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->run_mu);
}

void ty__threadpool_barrier(struct ty_threadpool *pool) {
    if (pool->n_threads == 1) return;
    unsigned phase = atomic_load(&pool->barrier_phase);
    if (atomic_fetch_add(&pool->barrier_count, 1) == pool->n_threads - 1) {
        /* the last to arrive: reset for the next barrier before releasing anyone into it */
        atomic_store(&pool->barrier_count, 0);
        atomic_fetch_add(&pool->barrier_phase, 1);
        wake_all(pool, &pool->barrier_sleepers, &pool->cv_barrier);
        return;
    }
    for (int i = 0; atomic_load_explicit(&pool->barrier_phase, memory_order_acquire) == phase && i < SPIN_ITERATIONS;
         i++)
        cpu_relax();
    if (atomic_load(&pool->barrier_phase) == phase) {
        pthread_mutex_lock(&pool->mu);
        atomic_fetch_add(&pool->barrier_sleepers, 1);
        while (atomic_load(&pool->barrier_phase) == phase) pthread_cond_wait(&pool->cv_barrier, &pool->mu);
        atomic_fetch_sub(&pool->barrier_sleepers, 1);
        pthread_mutex_unlock(&pool->mu);
    }
}

void ty__threadpool_wait_count(const atomic_llong *count, long long target) {
    for (int spins = 0; atomic_load_explicit(count, memory_order_acquire) < target;) {
        if (spins < SPIN_ITERATIONS)
            cpu_relax(), spins++;
        else
            sched_yield(); /* the thread holding the rest may be waiting for this core (an oversubscribed machine) */
    }
}

void ty__threadpool_run_any(struct ty_threadpool *pool, ty_task_fn fn, void *arg) {
    if (pool->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool->run_mu);
    pool->fn = fn;
    pool->arg = arg;
    atomic_store(&pool->any, true);
    atomic_store(&pool->any_done, 0);
    uint32_t g = (uint32_t)atomic_load(&pool->generation) + 1;
    atomic_store(&pool->join_state, (uint_least64_t)g << 32);
    wake_workers(pool);
    fn(arg, 0, pool->n_threads);
    /* close: workers that have not joined by now never will; wait for those that did */
    int joined = (int)(atomic_fetch_or(&pool->join_state, JOIN_CLOSED) & (JOIN_CLOSED - 1));
    for (int i = 0; atomic_load_explicit(&pool->any_done, memory_order_acquire) != joined && i < SPIN_ITERATIONS; i++)
        cpu_relax();
    if (atomic_load(&pool->any_done) != joined) {
        pthread_mutex_lock(&pool->mu);
        atomic_store(&pool->done_sleeping, 1);
        while (atomic_load(&pool->any_done) != joined) pthread_cond_wait(&pool->cv_done, &pool->mu);
        atomic_store(&pool->done_sleeping, 0);
        pthread_mutex_unlock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->run_mu);
}
