/*
 * threads.c - the persistent thread pool of threads.h.
 *
 * A dispatch bumps a generation counter; workers wait for it to change, run the task and count down `pending`. Both
 * sides spin briefly before sleeping on a condition variable: a forward pass dispatches a few hundred short tasks per
 * token, and a futex round trip per task would cost more than many of the tasks themselves. The spin is short so that
 * an oversubscribed machine (tests running in parallel on two cores) loses little to it.
 *
 * Lost wake-ups are impossible because the generation is only bumped, and `pending` only checked before sleeping,
 * with the mutex held.
 */
#include "base/threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define SPIN_ITERATIONS 4096

struct worker {
    struct ty_threadpool *pool;
    int ith;
    pthread_t thread;
};

struct ty_threadpool {
    int n_threads;          /* the caller included */
    struct worker *workers; /* (n_threads - 1) */
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_cond_t cv_done;
    pthread_mutex_t run_mu; /* serialises ty__threadpool_run callers */
    ty_task_fn fn;
    void *arg;
    atomic_uint generation;
    atomic_int pending;
    atomic_bool stop;
    int n_started;
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

static void *worker_main(void *p) {
    struct worker *w = p;
    struct ty_threadpool *pool = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load_explicit(&pool->generation, memory_order_acquire);
        for (int i = 0; g == seen && i < SPIN_ITERATIONS; i++) {
            cpu_relax();
            g = atomic_load_explicit(&pool->generation, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&pool->mu);
            while ((g = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&pool->cv_work, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        seen = g;
        if (atomic_load(&pool->stop)) return NULL;
        pool->fn(pool->arg, w->ith, pool->n_threads);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->cv_done);
            pthread_mutex_unlock(&pool->mu);
        }
    }
}

static void wake_workers(struct ty_threadpool *pool) {
    pthread_mutex_lock(&pool->mu);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&pool->cv_work);
    pthread_mutex_unlock(&pool->mu);
}

static void stop_workers(struct ty_threadpool *pool) {
    atomic_store(&pool->stop, true);
    wake_workers(pool);
    for (int i = 0; i < pool->n_started; i++) pthread_join(pool->workers[i].thread, NULL);
    pool->n_started = 0;
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
    ty_free(pool->workers);
    ty_free(pool);
}

int ty__threadpool_size(const struct ty_threadpool *pool) {
    return pool->n_threads;
}

void ty__threadpool_run(struct ty_threadpool *pool, ty_task_fn fn, void *arg) {
    if (pool->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool->run_mu);
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_release);
    wake_workers(pool);
    fn(arg, 0, pool->n_threads);
    for (int i = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) != 0 && i < SPIN_ITERATIONS; i++)
        cpu_relax();
    if (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0) {
        pthread_mutex_lock(&pool->mu);
        while (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0)
            pthread_cond_wait(&pool->cv_done, &pool->mu);
        pthread_mutex_unlock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->run_mu);
}
