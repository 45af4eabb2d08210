/* threadpool.h — a fixed set of worker threads that run one parallel task at a time. */
#ifndef LRUN_THREADPOOL_H
#define LRUN_THREADPOOL_H

#include "lrun.h"

typedef struct lrun_threadpool lrun_threadpool;

/* fn is called once per thread with ith in [0, nth); the caller's thread is ith 0.
 * The other ith may run on any of the pool's threads, several one after
 * another on the same thread when a worker is late: a task must not wait
 * for another ith of the same run (no barriers inside a task). */
typedef void (*lrun_task_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0 means every online core. */
lrun_status lrun_threadpool_init(lrun_threadpool **out, int n_threads);
void lrun_threadpool_free(lrun_threadpool *pool);
int lrun_threadpool_size(const lrun_threadpool *pool);
/* Runs fn on all threads and returns when every one has finished. */
void lrun_threadpool_run(lrun_threadpool *pool, lrun_task_fn fn, void *ctx);
/* memcpy(dst, src, bytes) split over the pool in page-aligned pieces: one
 * thread does not saturate host memory bandwidth (the streaming copies into
 * pinned staging buffers use it). pool may be NULL (one plain memcpy). */
void lrun_threadpool_memcpy(lrun_threadpool *pool, void *dst, const void *src, size_t bytes);

#endif
