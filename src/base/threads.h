/*
 * threads.h - a small persistent thread pool for data-parallel kernels. A caller hands the pool one function; every
 * thread (the caller included) runs it with its own index, and the call returns when all have finished. Workers
 * live as long as the pool, so a forward pass pays a wake-up per op, never a thread creation.
 *
 * A compute backend pins the workers to distinct cores where the OS allows (ty__threadpool_pin), and a task may
 * synchronise its threads with ty__threadpool_barrier, so one dispatch can run several dependent phases.
 *
 * Splitting work is the task's business: `ith` of `nth` takes its share (see ty__split_range). Results must not
 * depend on the number of threads, so kernels split whole output elements, never a reduction.
 */
#ifndef TY_THREADS_H
#define TY_THREADS_H

#include "base/base.h"

#include <stdatomic.h>

struct ty_threadpool;

/* One share of a parallel task: called with ith in [0, nth); ith 0 runs on the calling thread. */
typedef void (*ty_task_fn)(void *arg, int ith, int nth);

/* The number of online CPU cores (at least 1). */
int ty__cpu_count(void);

/* Starts a pool of `n_threads` threads in total, counting the caller (so n_threads - 1 workers); 0 means one per
 * core. Free with ty__threadpool_free(). */
enum ty_status ty__threadpool_init(int n_threads, struct ty_threadpool **out);
/* Stops and joins the workers. NULL is allowed. Must not be called while a ty__threadpool_run is in progress. */
void ty__threadpool_free(struct ty_threadpool *pool);
/* Threads in the pool, the caller included. */
int ty__threadpool_size(const struct ty_threadpool *pool);
/* Runs fn(arg, ith, nth) on every thread and returns when all calls have returned. Concurrent callers are
 * serialised. `fn` must not call ty__threadpool_run on the same pool. */
void ty__threadpool_run(struct ty_threadpool *pool, ty_task_fn fn, void *arg);
/* Runs fn(arg, ith, nth) on the calling thread and on the workers that are free to join before it returns, then
 * waits for those. For tasks whose threads take work from a shared counter until none is left, so any subset of
 * threads (the caller alone included) completes them: on a busy machine a worker the OS has not scheduled in time is
 * left out instead of being waited for. Each thread still gets its own ith. fn must not use the barrier. */
void ty__threadpool_run_any(struct ty_threadpool *pool, ty_task_fn fn, void *arg);
/* Inside a task of ty__threadpool_run: returns once every thread of the pool has reached the barrier (each of the
 * nth calls must reach it the same number of times). Spins briefly, then sleeps. Memory written before the barrier
 * by any thread is visible to every thread after it. A no-op on a pool of one thread. */
void ty__threadpool_barrier(struct ty_threadpool *pool);
/* Inside a task: returns once *count >= target (read with acquire, so what the threads that counted wrote before
 * counting is visible). Spins, then yields the core between checks. For a phase that must wait for work other threads
 * took (a completion count): unlike the barrier it waits only for work, never for a thread that did not join a
 * ty__threadpool_run_any task. */
void ty__threadpool_wait_count(const atomic_llong *count, long long target);
/* Work for the workers between tasks: after each task it ran, once its end is signalled (no caller waits for it), a
 * worker calls idle(ctx, ith). idle must return soon after ty__threadpool_task_waiting turns true, and may not
 * dispatch. Set it before the first run (NULL: none). */
void ty__threadpool_set_idle(struct ty_threadpool *pool, void (*idle)(void *ctx, int ith), void *ctx);
/* Inside an idle call on worker ith: whether a task has been dispatched since the worker's last one. */
bool ty__threadpool_task_waiting(const struct ty_threadpool *pool, int ith);

/* Pins worker i (i = 1 .. n - 1) to the i-th core the process may run on, so a compute backend's threads stream from
 * cores of their own and keep their caches; the calling thread, which belongs to the application, is left alone.
 * Returns the workers pinned: 0 where the OS has no affinity call or refuses it, where there are more threads than
 * allowed cores, or with TY_NO_PIN=1 in the environment. Call once, before the first run; later calls return the
 * first call's count. Not done by ty__threadpool_init: short-lived pools (tests, conversion) run many at once. */
int ty__threadpool_pin(struct ty_threadpool *pool);

/* The share [*begin, *end) of n items that thread ith of nth takes: contiguous, sizes differing by at most one. */
static inline void ty__split_range(int64_t n, int ith, int nth, int64_t *begin, int64_t *end) {
    int64_t per = n / nth, rest = n % nth;
    *begin = ith * per + (ith < rest ? ith : rest);
    *end = *begin + per + (ith < rest ? 1 : 0);
}

#endif /* TY_THREADS_H */
