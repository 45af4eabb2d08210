/* threadpool.c — n−1 worker threads plus the caller, running one task at a time.
 *
 * Decode calls lrun_threadpool_run a few hundred times per token, so a run
 * must start and finish in about a microsecond. The caller publishes a task
 * by bumping a generation counter that idle workers spin on, and runs ith 0
 * itself. The other ith slots (1 … n−1) are not tied to threads: whoever
 * comes first claims the next one from a shared counter, the caller included
 * once it is done with ith 0. So a worker that the OS has not scheduled (the
 * machine busy with other processes, more threads than cores) never holds a
 * run up: the caller runs its slot instead, and the late worker finds nothing
 * left. fn is still called exactly once per ith.
 *
 * Threads that see no new task for LRUN_SPIN_NS sleep on a futex, so an idle
 * pool costs no CPU. Nothing is allocated per run. */
#include "core/threadpool.h"

#include "core/error.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* How long a thread spins before sleeping, in nanoseconds: longer than the
 * gaps between the matmuls of one decode step (tens of microseconds), much
 * shorter than the gaps between tokens seen by a user. After the first
 * LRUN_SPIN_PURE_NS the spinning thread yields its core between polls. */
#define LRUN_SPIN_NS 200000
#define LRUN_SPIN_PURE_NS 20000

#define CACHE_LINE 64

struct lrun_threadpool {
    int n_threads;      /* workers + the caller */
    pthread_t *threads; /* (n_threads − 1) workers */
    lrun_task_fn fn;    /* the current task: written by the caller before it publishes */
    void *ctx;
    /* Each word in its own cache line: workers poll generation and claim
     * while finishers bump finished. */
    _Alignas(CACHE_LINE) _Atomic uint32_t generation; /* bumped once per run; futex word of sleeping workers */
    _Atomic int sleepers;                             /* workers asleep (or about to be) on generation */
    _Atomic int stop;                                 /* 1: workers exit */
    _Alignas(CACHE_LINE) _Atomic uint64_t claim;      /* (generation << 32) | next unclaimed ith */
    _Alignas(CACHE_LINE) _Atomic uint32_t finished;   /* slots 1 … n−1 finished this run; the caller's futex word */
    _Atomic int caller_sleeping;
};

// ---------------------------------------------------------------- waiting

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected)
{
    /* returns at once with EAGAIN when *addr is no longer expected */
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins until *word differs from old, or until the spin budget is spent:
 * returns 1 when it changed. Yields the core between polls after the pure
 * spin phase, since the thread being waited for may need this very core.
 * Reads the clock only every 64 polls. */
static int spin_until_changed(_Atomic uint32_t *word, uint32_t old)
{
    uint64_t start = 0;
    int yielding = 0;
    for (unsigned i = 1;; ++i) {
        if (atomic_load_explicit(word, memory_order_acquire) != old) return 1;
        if (yielding) sched_yield();
        else cpu_relax();
        if ((i & 63) == 0) {
            uint64_t t = now_ns();
            if (!start) start = t;
            else if (t - start > LRUN_SPIN_NS) return 0;
            else if (t - start > LRUN_SPIN_PURE_NS) yielding = 1;
        }
    }
}

// ---------------------------------------------------------------- claiming slots

/* Claims and runs slots of generation gen until none is left; returns how
 * many it ran. The acquire of a successful claim pairs with the caller's
 * release of the claim word, so fn and ctx are those of gen; and the caller
 * does not start another run before every claimed slot has finished. */
static uint32_t run_slots(lrun_threadpool *pool, uint32_t gen)
{
    const uint32_t n = (uint32_t)pool->n_threads;
    uint32_t ran = 0;
    uint64_t c = atomic_load_explicit(&pool->claim, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(c >> 32) != gen || (uint32_t)c >= n) return ran;
        if (!atomic_compare_exchange_weak_explicit(&pool->claim, &c, c + 1, memory_order_acquire,
                                                   memory_order_acquire))
            continue;
        pool->fn(pool->ctx, (int)(uint32_t)c, pool->n_threads);
        ++ran;
        c = atomic_load_explicit(&pool->claim, memory_order_acquire);
    }
}

// ---------------------------------------------------------------- workers

static void *worker_main(void *p)
{
    lrun_threadpool *pool = p;
    uint32_t seen = 0;
    for (;;) {
        if (!spin_until_changed(&pool->generation, seen)) {
            /* announce the nap before the last look, so that the caller
             * either sees the sleeper or we see its new generation */
            atomic_fetch_add(&pool->sleepers, 1);
            while (atomic_load(&pool->generation) == seen) futex_wait(&pool->generation, seen);
            atomic_fetch_sub(&pool->sleepers, 1);
        }
        seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) break;
        uint32_t ran = run_slots(pool, seen);
        if (ran) {
            uint32_t done = atomic_fetch_add(&pool->finished, ran) + ran;
            if (done == (uint32_t)pool->n_threads - 1 && atomic_load(&pool->caller_sleeping))
                futex_wake(&pool->finished, 1);
        }
    }
    return NULL;
}

/* Publishes a new generation and wakes sleeping workers. */
static void publish(lrun_threadpool *pool)
{
    uint32_t gen = atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool->finished, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->claim, ((uint64_t)gen << 32) | 1u, memory_order_release); /* ith 0 is the caller's */
    atomic_store(&pool->generation, gen); /* seq_cst: ordered before the sleepers check */
    if (atomic_load(&pool->sleepers) > 0) futex_wake(&pool->generation, INT_MAX);
}

// ---------------------------------------------------------------- lifecycle

static void stop_workers(lrun_threadpool *pool, int n_started)
{
    atomic_store(&pool->stop, 1);
    publish(pool);
    for (int i = 0; i < n_started; ++i) pthread_join(pool->threads[i], NULL);
}

lrun_status lrun_threadpool_init(lrun_threadpool **out, int n_threads)
{
    if (!out) return lrun_fail(LRUN_E_ARG, "lrun_threadpool_init: out must not be NULL");
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 1024)
        return lrun_fail(LRUN_E_ARG, "lrun_threadpool_init: %d threads is more than the 1024 supported", n_threads);
    lrun_threadpool *pool = aligned_alloc(CACHE_LINE, sizeof *pool);
    if (!pool) return lrun_fail_oom(sizeof *pool, 0, "lrun_threadpool_init: cannot allocate the pool");
    memset(pool, 0, sizeof *pool);
    pool->n_threads = n_threads;
    if (n_threads > 1) {
        pool->threads = calloc((size_t)(n_threads - 1), sizeof *pool->threads);
        if (!pool->threads) {
            free(pool);
            return lrun_fail_oom((size_t)(n_threads - 1) * sizeof(pthread_t), 0,
                                 "lrun_threadpool_init: cannot allocate %d thread handles", n_threads - 1);
        }
    }
    for (int i = 0; i < n_threads - 1; ++i) {
        int rc = pthread_create(&pool->threads[i], NULL, worker_main, pool);
        if (rc) {
            stop_workers(pool, i);
            free(pool->threads);
            free(pool);
            return lrun_fail(rc == EAGAIN ? LRUN_E_OOM : LRUN_E_INTERNAL,
                             "lrun_threadpool_init: cannot start worker thread %d of %d: %s", i + 1, n_threads - 1,
                             strerror(rc));
        }
    }
    *out = pool;
    return LRUN_OK;
}

void lrun_threadpool_free(lrun_threadpool *pool)
{
    if (!pool) return;
    stop_workers(pool, pool->n_threads - 1);
    free(pool->threads);
    free(pool);
}

int lrun_threadpool_size(const lrun_threadpool *pool) { return pool ? pool->n_threads : 1; }

// ---------------------------------------------------------------- running

void lrun_threadpool_run(lrun_threadpool *pool, lrun_task_fn fn, void *ctx)
{
    if (!pool || pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    const uint32_t others = (uint32_t)pool->n_threads - 1;
    pool->fn = fn;
    pool->ctx = ctx;
    publish(pool);
    fn(ctx, 0, pool->n_threads);
    /* slots no worker has taken yet are the caller's too */
    uint32_t ran = run_slots(pool, atomic_load_explicit(&pool->generation, memory_order_relaxed));
    if (ran && atomic_fetch_add(&pool->finished, ran) + ran == others) return;
    /* Wait for the slots workers took: spin while they finish, sleep when
     * one takes longer than the spin budget (descheduled, or a long task). */
    for (;;) {
        uint32_t f = atomic_load_explicit(&pool->finished, memory_order_acquire);
        if (f == others) return;
        if (spin_until_changed(&pool->finished, f)) continue;
        atomic_store(&pool->caller_sleeping, 1);
        while ((f = atomic_load(&pool->finished)) != others) futex_wait(&pool->finished, f);
        atomic_store(&pool->caller_sleeping, 0);
    }
}

struct pool_copy {
    char *dst;
    const char *src;
    size_t bytes;
};

static void pool_copy_task(void *ctx, int ith, int nth)
{
    const struct pool_copy *c = ctx;
    /* ceil(bytes / nth) rounded up to a page; the floor lost copies shorter than nth bytes */
    const size_t per = ((c->bytes + (size_t)nth - 1) / (size_t)nth + 4095) & ~(size_t)4095;
    const size_t a = per * (size_t)ith, b = a + per < c->bytes ? a + per : c->bytes;
    if (a < b) memcpy(c->dst + a, c->src + a, b - a);
}

void lrun_threadpool_memcpy(lrun_threadpool *pool, void *dst, const void *src, size_t bytes)
{
    struct pool_copy c = {dst, src, bytes};
    lrun_threadpool_run(pool, pool_copy_task, &c);
}
