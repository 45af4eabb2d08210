/* copy_load.h — the copy engine kept busy while something else is measured.
 *
 * On cuda the host's decode products run while the copy engine reads pinned
 * host memory for the streamed weights, and both draw on the host's DRAM: a
 * host matmul measured alone ran 11-22% faster than the engine's products
 * beside the copies (H100, docs/benchmarks.md "Session 24"). A load copies
 * one pinned buffer to the device over and over, on a stream of its own from
 * a thread of its own, from start to stop; that thread sleeps while its
 * copies run rather than spin in CUDA's wait, which would take a core from
 * the products measured (the engine's decode spins no thread beside them). */
#ifndef LRUN_CORE_COPY_LOAD_H
#define LRUN_CORE_COPY_LOAD_H

#include <stddef.h>

#include "lrun.h"

typedef struct lrun_copy_load lrun_copy_load;

/* Starts copying a pinned buffer of bytes to a device buffer of bytes (taken
 * from the budget until stop) in a loop. LRUN_E_UNSUPPORTED on a device
 * without asynchronous copies (the cpu device: nothing to overlap). */
lrun_status lrun_copy_load_start(lrun_device *device, size_t bytes, lrun_copy_load **out);

/* Stops the loop, waits for its last copy and frees everything; *bytes_per_s
 * (may be NULL) is what the loop copied over its running time. Returns the
 * first error a copy met, else LRUN_OK. NULL is a no-op. */
lrun_status lrun_copy_load_stop(lrun_copy_load *load, double *bytes_per_s);

/* A measurement beside copies: checks copy_bytes ([1 MiB, 1 GiB]), starts a
 * load of it, runs measure(ctx), stops the load. An error of the load's
 * fails the measurement (after measure: the caller zeroes its figures), and
 * what names the measurement in the messages. *copy_bytes_per_s (may be
 * NULL) is what the load copied meanwhile, 0 on an error. */
lrun_status lrun_copy_load_beside(lrun_device *device, size_t copy_bytes, const char *what,
                                  lrun_status (*measure)(void *ctx), void *ctx, double *copy_bytes_per_s);

#endif
