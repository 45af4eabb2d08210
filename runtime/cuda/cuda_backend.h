/* cuda_backend.h — the CUDA device table and what a CUDA device holds (a
 * memory pool, a compute stream, a cuBLAS handle).
 *
 * The core reaches a CUDA device only through lrun_cuda_device_iface (the
 * table of core/device.h, listed by the registry in backend.c); the CUDA
 * engine and the GPU tests also call the checked wrappers below directly.
 * Only cuda_backend.c includes the CUDA headers; everything here is plain C.
 * Compiled only in a CUDA build: a CPU build has none of these symbols. */
#ifndef LRUN_CUDA_BACKEND_H
#define LRUN_CUDA_BACKEND_H

#include "lrun.h"
#include "core/device.h"
#include "core/pool.h"

/* The table the registry lists for LRUN_DEVICE_KIND_CUDA. */
extern const lrun_device_iface lrun_cuda_device_iface;

/* The CUDA pool's shared arena size, own-arena threshold and block granule,
 * bytes (for placement planning through lrun_engine_size_placement). */
size_t lrun_cuda_pool_arena_bytes(void);
size_t lrun_cuda_pool_own_arena_bytes(void);
size_t lrun_cuda_pool_align(void);

// ---------------------------------------------------------------- devices

/* Opens CUDA device device->cuda_ordinal: checks it exists, sets
 * device->capacity (free memory less headroom, lowered to budget_bytes when
 * that is set) and device->backend (pool, compute stream, cuBLAS handle). */
lrun_status lrun_cuda_open(struct lrun_device *device, size_t budget_bytes);
void lrun_cuda_close(struct lrun_device *device);
/* Total memory of the GPU, bytes (for display). */
size_t lrun_cuda_total_memory(const struct lrun_device *device);
/* Bytes of the GPU's L2 cache (0 when the driver does not say): what a
 * bandwidth measurement must exceed to time the memory, not the cache. */
size_t lrun_cuda_l2_bytes(const struct lrun_device *device);

/* Device memory from the pool (no accounting here: device.c keeps the budget). */
lrun_status lrun_cuda_alloc(struct lrun_device *device, size_t bytes, const char *what, void **out);
void lrun_cuda_release(struct lrun_device *device, void *ptr);
/* Gives the pool's idle arenas back (after a transient allocation such as
 * a bandwidth measurement, so its arenas do not become shared ones). */
void lrun_cuda_trim(struct lrun_device *device);
lrun_status lrun_cuda_memset(struct lrun_device *device, void *dst, int value, size_t bytes);

/* Copies on the device's compute stream and waits, so the bytes are in
 * place on return and ordered after the work already queued there. */
lrun_status lrun_cuda_memcpy(struct lrun_device *device, void *dst, const void *src, size_t bytes,
                             lrun_copy_kind kind);

/* Page-locked host memory (cudaHostAlloc); only when a GPU is present. */
lrun_status lrun_cuda_host_alloc(size_t bytes, void **out);
void lrun_cuda_host_free(void *ptr);

/* The device's default compute stream (a cudaStream_t) and cuBLAS handle
 * (a cublasHandle_t bound to that stream), for kernels and GEMMs. */
void *lrun_cuda_compute_stream(const struct lrun_device *device);
void *lrun_cuda_cublas(const struct lrun_device *device);

/* The pool, for statistics and tests. */
const lrun_pool *lrun_cuda_pool(const struct lrun_device *device);

// ---------------------------------------------------------------- streams and events

/* Handles are cudaStream_t / cudaEvent_t, passed as void *. */
lrun_status lrun_cuda_stream_create(struct lrun_device *device, void **out);
void lrun_cuda_stream_destroy(struct lrun_device *device, void *stream);
lrun_status lrun_cuda_stream_sync(struct lrun_device *device, void *stream);
lrun_status lrun_cuda_event_create(struct lrun_device *device, void **out);
void lrun_cuda_event_destroy(struct lrun_device *device, void *event);
lrun_status lrun_cuda_event_record(struct lrun_device *device, void *event, void *stream);
lrun_status lrun_cuda_stream_wait_event(struct lrun_device *device, void *stream, void *event);
lrun_status lrun_cuda_event_sync(struct lrun_device *device, void *event);

#endif
