/* cuda_backend.h — what a CUDA device holds (a memory pool, a compute stream,
 * a cuBLAS handle) and the thin, checked wrappers the rest of the core calls.
 *
 * Only cuda_backend.c includes the CUDA headers; everything here is plain C,
 * so device.c, stream.c and tensor.c compile the same way in every build.
 * In a build without CUDA the lrun_cuda_* calls fail with LRUN_E_DEVICE
 * ("no CUDA device: this build has no CUDA").
 *
 * The pool allocator (lrun_pool_*) is plain C over opaque base addresses:
 * on a GPU its arenas come from cudaMalloc, in tests from host memory. */
#ifndef LRUN_CUDA_BACKEND_H
#define LRUN_CUDA_BACKEND_H

#include "lrun.h"

// ---------------------------------------------------------------- the pool

/* Arena reservations go through these, so the allocator never sees CUDA. */
typedef lrun_status (*lrun_pool_reserve_fn)(void *ctx, size_t bytes, void **base);
typedef void (*lrun_pool_unreserve_fn)(void *ctx, void *base);

typedef struct lrun_pool_arena lrun_pool_arena;

/* First-fit free list over a few large arenas, reserved lazily. Blocks are
 * kept in address order per arena; a released block merges with free
 * neighbours, so long-lived allocations do not splinter the arena. Not
 * thread-safe by itself (the CUDA backend holds a lock around it). */
typedef struct lrun_pool {
    size_t limit;            /* most bytes all arenas may reserve together */
    size_t arena_bytes;      /* size of a fresh shared arena, bytes */
    size_t own_arena_bytes;  /* a request of at least this many bytes gets an arena of exactly its size
                              * when no free block holds it, so large blocks never strand a shared
                              * arena's tail (lrun_pool_init: arena_bytes) */
    size_t align;            /* block alignment and size granule, bytes; a power of two */
    size_t reserved;         /* bytes reserved in arenas now */
    size_t in_use;           /* bytes handed out now, rounded to align */
    size_t n_reserve_calls;  /* arenas reserved so far (a pool should need few) */
    lrun_pool_reserve_fn reserve;
    lrun_pool_unreserve_fn unreserve;
    void *ctx;
    lrun_pool_arena *arenas; /* singly linked, oldest first */
} lrun_pool;

void lrun_pool_init(lrun_pool *pool, size_t limit, size_t arena_bytes, size_t align,
                    lrun_pool_reserve_fn reserve, lrun_pool_unreserve_fn unreserve, void *ctx);
/* The CUDA pool's shared arena size and own-arena threshold, bytes (for
 * placement planning through lrun_engine_estimate). */
size_t lrun_cuda_pool_arena_bytes(void);
size_t lrun_cuda_pool_own_arena_bytes(void);
/* Gives back every arena. Blocks still allocated are lost with them. */
void lrun_pool_destroy(lrun_pool *pool);
/* A block of at least bytes (0 counts as one granule), align-aligned.
 * LRUN_E_OOM when neither a free block nor a new arena within limit fits it. */
lrun_status lrun_pool_alloc(lrun_pool *pool, size_t bytes, const char *what, void **out);
/* LRUN_E_ARG when ptr is not the start of a block in use (a double free). */
lrun_status lrun_pool_release(lrun_pool *pool, void *ptr);
/* Gives back arenas with nothing allocated in them. */
void lrun_pool_trim(lrun_pool *pool);
/* The largest single free block (free room in arenas plus room for a new
 * arena), bytes: what one allocation could get without trimming. */
size_t lrun_pool_largest_free(const lrun_pool *pool);
/* Free blocks across all arenas: 1 per arena when nothing is fragmented. */
size_t lrun_pool_free_block_count(const lrun_pool *pool);
size_t lrun_pool_arena_count(const lrun_pool *pool);

// ---------------------------------------------------------------- devices

struct lrun_device;

/* Opens CUDA device device->cuda_ordinal: checks it exists, sets
 * device->capacity (free memory less headroom, lowered to budget_bytes when
 * that is set) and device->backend (pool, compute stream, cuBLAS handle). */
lrun_status lrun_cuda_open(struct lrun_device *device, size_t budget_bytes);
void lrun_cuda_close(struct lrun_device *device);
/* Total memory of the GPU, bytes (for display). */
size_t lrun_cuda_total_memory(const struct lrun_device *device);

/* Device memory from the pool (no accounting here: device.c keeps the budget). */
lrun_status lrun_cuda_alloc(struct lrun_device *device, size_t bytes, const char *what, void **out);
void lrun_cuda_release(struct lrun_device *device, void *ptr);
/* Gives the pool's idle arenas back (after a transient allocation such as
 * a bandwidth measurement, so its arenas do not become shared ones). */
void lrun_cuda_trim(struct lrun_device *device);
lrun_status lrun_cuda_memset(struct lrun_device *device, void *dst, int value, size_t bytes);

/* Copy directions for lrun_cuda_memcpy. */
typedef enum lrun_copy_kind {
    LRUN_COPY_HOST_TO_DEVICE = 0,
    LRUN_COPY_DEVICE_TO_HOST = 1,
    LRUN_COPY_DEVICE_TO_DEVICE = 2
} lrun_copy_kind;

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

/* The cudaStream_t behind a stream (NULL on cpu), for kernel launches. */
void *lrun_stream_handle(const lrun_stream *stream);
lrun_device *lrun_stream_device(const lrun_stream *stream);

#endif
