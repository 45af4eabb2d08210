/* cuda_backend.c — the device pool allocator (plain C) and the CUDA side of
 * devices, streams and events. Compiled by the C compiler in every build; the
 * CUDA calls are under LRUN_WITH_CUDA and each one is checked. */
#include "cuda/cuda_backend.h"

#include "core/checked.h"
#include "core/device.h"
#include "core/error.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LRUN_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

// ---------------------------------------------------------------- the pool

/* One block of an arena, free or handed out. Host-side bookkeeping: the
 * arena itself may be device memory the CPU cannot touch. */
typedef struct pool_block {
    size_t offset;            /* from the arena base, bytes */
    size_t size;              /* bytes, a multiple of the pool's align */
    int used;
    struct pool_block *prev;  /* neighbours in address order */
    struct pool_block *next;
} pool_block;

struct lrun_pool_arena {
    uintptr_t base;           /* start address (device or host), align-aligned */
    size_t bytes;             /* size of the arena */
    size_t in_use;            /* bytes of used blocks */
    pool_block *first;        /* lowest address */
    lrun_pool_arena *next;
};

void lrun_pool_init(lrun_pool *pool, size_t limit, size_t arena_bytes, size_t align,
                    lrun_pool_reserve_fn reserve, lrun_pool_unreserve_fn unreserve, void *ctx)
{
    memset(pool, 0, sizeof *pool);
    pool->limit = limit;
    pool->align = align;
    /* An arena smaller than a granule could never hold a block. */
    pool->arena_bytes = arena_bytes < align ? align : arena_bytes & ~(align - 1);
    pool->own_arena_bytes = pool->arena_bytes;
    pool->reserve = reserve;
    pool->unreserve = unreserve;
    pool->ctx = ctx;
}

static void arena_free(lrun_pool *pool, lrun_pool_arena *a)
{
    pool_block *b = a->first;
    while (b) {
        pool_block *n = b->next;
        free(b);
        b = n;
    }
    pool->unreserve(pool->ctx, (void *)a->base);
    pool->reserved -= a->bytes;
    free(a);
}

void lrun_pool_destroy(lrun_pool *pool)
{
    while (pool->arenas) {
        lrun_pool_arena *a = pool->arenas;
        pool->arenas = a->next;
        pool->in_use -= a->in_use;
        arena_free(pool, a);
    }
}

void lrun_pool_trim(lrun_pool *pool)
{
    lrun_pool_arena **link = &pool->arenas;
    while (*link) {
        lrun_pool_arena *a = *link;
        if (a->in_use == 0) {
            *link = a->next;
            arena_free(pool, a);
        } else {
            link = &a->next;
        }
    }
}

/* Carves need bytes from the front of free block b (need <= b->size). */
static lrun_status block_take(lrun_pool *pool, lrun_pool_arena *a, pool_block *b, size_t need)
{
    if (b->size > need) {
        pool_block *rest = malloc(sizeof *rest);
        if (!rest) return lrun_fail_oom(sizeof *rest, 0, "pool: host memory for block bookkeeping");
        rest->offset = b->offset + need;
        rest->size = b->size - need;
        rest->used = 0;
        rest->prev = b;
        rest->next = b->next;
        if (b->next) b->next->prev = rest;
        b->next = rest;
        b->size = need;
    }
    b->used = 1;
    a->in_use += need;
    pool->in_use += need;
    return LRUN_OK;
}

static lrun_status first_fit(lrun_pool *pool, size_t need, void **out, int *found)
{
    *found = 0;
    for (lrun_pool_arena *a = pool->arenas; a; a = a->next) {
        if (a->bytes - a->in_use < need) continue;
        for (pool_block *b = a->first; b; b = b->next) {
            if (b->used || b->size < need) continue;
            lrun_status st = block_take(pool, a, b, need);
            if (st != LRUN_OK) return st;
            *out = (void *)(a->base + b->offset);
            *found = 1;
            return LRUN_OK;
        }
    }
    return LRUN_OK;
}

static lrun_status arena_add(lrun_pool *pool, size_t bytes)
{
    lrun_pool_arena *a = calloc(1, sizeof *a);
    pool_block *b = calloc(1, sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return lrun_fail_oom(sizeof *a + sizeof *b, 0, "pool: host memory for arena bookkeeping");
    }
    void *base = NULL;
    lrun_status st = pool->reserve(pool->ctx, bytes, &base);
    if (st != LRUN_OK) {
        free(a);
        free(b);
        return st;
    }
    if ((uintptr_t)base & (pool->align - 1)) {
        pool->unreserve(pool->ctx, base);
        free(a);
        free(b);
        return lrun_fail(LRUN_E_INTERNAL, "pool: an arena came back at %p, not %zu-byte aligned", base,
                         pool->align);
    }
    a->base = (uintptr_t)base;
    a->bytes = bytes;
    b->size = bytes;
    a->first = b;
    /* Oldest first, so first fit fills the holes of old arenas before the
     * fresh one: fewer arenas stay pinned by a few small blocks. */
    lrun_pool_arena **link = &pool->arenas;
    while (*link) link = &(*link)->next;
    *link = a;
    pool->reserved += bytes;
    pool->n_reserve_calls++;
    return LRUN_OK;
}

/* Size of the arena to reserve for a request of need bytes; 0 when the limit
 * leaves no room for it. */
static size_t arena_size_for(const lrun_pool *pool, size_t need)
{
    size_t room = pool->limit - pool->reserved;
    size_t want = need >= pool->own_arena_bytes || need > pool->arena_bytes ? need : pool->arena_bytes;
    if (want > room) want = room & ~(pool->align - 1);
    return want >= need ? want : 0;
}

lrun_status lrun_pool_alloc(lrun_pool *pool, size_t bytes, const char *what, void **out)
{
    size_t need;
    if (!lrun_size_align_up(bytes ? bytes : 1, pool->align, &need))
        return lrun_fail_oom(bytes, lrun_pool_largest_free(pool), "pool: %s: %zu bytes is too large",
                             what, bytes);
    int found;
    lrun_status st = first_fit(pool, need, out, &found);
    if (st != LRUN_OK || found) return st;

    size_t size = arena_size_for(pool, need);
    if (size == 0) {
        /* Empty arenas may be in the way of one that fits the request. */
        lrun_pool_trim(pool);
        size = arena_size_for(pool, need);
    }
    if (size == 0)
        return lrun_fail_oom(bytes, lrun_pool_largest_free(pool),
                             "pool: no free block of %zu bytes for %s (largest free %zu bytes; "
                             "%zu of %zu bytes reserved, %zu in use)",
                             need, what, lrun_pool_largest_free(pool), pool->reserved, pool->limit,
                             pool->in_use);
    st = arena_add(pool, size);
    if (st == LRUN_E_OOM && pool->arenas) {
        /* The device refused: hand back idle arenas and try once more. */
        lrun_pool_trim(pool);
        size = arena_size_for(pool, need);
        st = size ? arena_add(pool, size) : st;
    }
    if (st != LRUN_OK) return lrun_fail_context(st, "pool: %s", what);
    return first_fit(pool, need, out, &found);
}

lrun_status lrun_pool_release(lrun_pool *pool, void *ptr)
{
    uintptr_t p = (uintptr_t)ptr;
    for (lrun_pool_arena *a = pool->arenas; a; a = a->next) {
        if (p < a->base || p >= a->base + a->bytes) continue;
        for (pool_block *b = a->first; b; b = b->next) {
            if (a->base + b->offset != p) continue;
            if (!b->used) break;
            b->used = 0;
            a->in_use -= b->size;
            pool->in_use -= b->size;
            /* Coalesce with free neighbours so the arena heals. */
            pool_block *n = b->next;
            if (n && !n->used) {
                b->size += n->size;
                b->next = n->next;
                if (n->next) n->next->prev = b;
                free(n);
            }
            pool_block *q = b->prev;
            if (q && !q->used) {
                q->size += b->size;
                q->next = b->next;
                if (b->next) b->next->prev = q;
                free(b);
            }
            return LRUN_OK;
        }
        break;
    }
    return lrun_fail(LRUN_E_ARG, "pool: release of %p: not a block in use (double free or foreign pointer)",
                     ptr);
}

size_t lrun_pool_largest_free(const lrun_pool *pool)
{
    size_t best = (pool->limit - pool->reserved) & ~(pool->align - 1);
    for (const lrun_pool_arena *a = pool->arenas; a; a = a->next)
        for (const pool_block *b = a->first; b; b = b->next)
            if (!b->used && b->size > best) best = b->size;
    return best;
}

size_t lrun_pool_free_block_count(const lrun_pool *pool)
{
    size_t n = 0;
    for (const lrun_pool_arena *a = pool->arenas; a; a = a->next)
        for (const pool_block *b = a->first; b; b = b->next) n += !b->used;
    return n;
}

size_t lrun_pool_arena_count(const lrun_pool *pool)
{
    size_t n = 0;
    for (const lrun_pool_arena *a = pool->arenas; a; a = a->next) n++;
    return n;
}

// ---------------------------------------------------------------- CUDA pool sizes

/* Blocks below OWN_ARENA_BYTES (norms, small weights and tables) share
 * arenas of ARENA_BYTES; larger blocks (weight matrices, scratch, KV cache,
 * streaming slots) get an arena of their own size when no free block holds
 * them. With one size for all (256 MiB), 86 MiB matrices left 84 MiB holes
 * that no later matrix fitted (docs/streaming.md), so a budget lost layers
 * to fragmentation. Now a closed shared arena strands less than
 * OWN_ARENA_BYTES and the open one at most ARENA_BYTES (none when the
 * capacity is at most one arena: then the arena is all of it), which is the
 * bound placement reserves (docs/residency.md "Fragmentation"). Small
 * shared arenas keep that bound small; the price is one cudaMalloc per
 * large block, paid once at load. */
#define ARENA_BYTES ((size_t)16 << 20)
#define OWN_ARENA_BYTES ((size_t)1 << 20)

size_t lrun_cuda_pool_arena_bytes(void) { return ARENA_BYTES; }
size_t lrun_cuda_pool_own_arena_bytes(void) { return OWN_ARENA_BYTES; }

#ifdef LRUN_WITH_CUDA
// ---------------------------------------------------------------- CUDA: errors

/* Left free on the GPU for the CUDA context, cuBLAS workspaces and kernels. */
#define HEADROOM_BYTES ((size_t)256 << 20)
/* cudaMalloc returns 256-byte aligned memory; blocks keep that alignment. */
#define POOL_ALIGN ((size_t)256)

typedef struct cuda_state {
    int ordinal;
    size_t total;             /* GPU memory, bytes */
    cudaStream_t compute;     /* default compute stream, non-blocking */
    cublasHandle_t cublas;    /* bound to compute */
    pthread_mutex_t lock;     /* guards pool */
    lrun_pool pool;
} cuda_state;

static lrun_status cuda_fail(cudaError_t err, const char *call, int ordinal)
{
    (void)cudaGetLastError(); /* clear a non-sticky error so later calls start clean */
    lrun_status st = err == cudaErrorMemoryAllocation ? LRUN_E_OOM : LRUN_E_DEVICE;
    return lrun_fail(st, "%s on cuda:%d: %s (%s)", call, ordinal, cudaGetErrorString(err),
                     cudaGetErrorName(err));
}

#define CUDA_CHECK(call, ordinal)                                                \
    do {                                                                         \
        cudaError_t cuda_err_ = (call);                                          \
        if (cuda_err_ != cudaSuccess) return cuda_fail(cuda_err_, #call, (ordinal)); \
    } while (0)

static cuda_state *state_of(const lrun_device *device) { return (cuda_state *)device->backend; }

// ---------------------------------------------------------------- CUDA: devices

int lrun_built_with_cuda(void) { return 1; }

int lrun_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

static lrun_status pool_reserve(void *ctx, size_t bytes, void **base)
{
    cuda_state *s = ctx;
    CUDA_CHECK(cudaSetDevice(s->ordinal), s->ordinal);
    cudaError_t err = cudaMalloc(base, bytes);
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
        return lrun_fail_oom(bytes, free_b, "cudaMalloc of a %zu-byte arena on cuda:%d: out of memory (%zu bytes free)",
                             bytes, s->ordinal, free_b);
    }
    if (err != cudaSuccess) return cuda_fail(err, "cudaMalloc", s->ordinal);
    return LRUN_OK;
}

static void pool_unreserve(void *ctx, void *base)
{
    cuda_state *s = ctx;
    if (cudaSetDevice(s->ordinal) != cudaSuccess || cudaFree(base) != cudaSuccess) (void)cudaGetLastError();
}

lrun_status lrun_cuda_open(lrun_device *device, size_t budget_bytes)
{
    int n = 0, ord = device->cuda_ordinal;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        /* No GPU or no driver: say so first, the CUDA wording after. */
        const int absent = err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver;
        return lrun_fail(LRUN_E_DEVICE, "opening %s: %scudaGetDeviceCount: %s (%s)", device->name,
                         absent ? "no CUDA device (no GPU, or no usable NVIDIA driver; use --device cpu): " : "",
                         cudaGetErrorString(err), cudaGetErrorName(err));
    }
    if (n == 0) return lrun_fail(LRUN_E_DEVICE, "opening %s: no CUDA device: none is visible", device->name);
    if (ord >= n)
        return lrun_fail(LRUN_E_DEVICE, "opening %s: no CUDA device %d: %d visible (cuda:0..cuda:%d)",
                         device->name, ord, n, n - 1);

    cuda_state *s = calloc(1, sizeof *s);
    if (!s) return lrun_fail_oom(sizeof *s, 0, "opening %s: host memory for its state", device->name);
    s->ordinal = ord;
    lrun_status st = LRUN_OK;
    size_t free_b = 0;
    if ((err = cudaSetDevice(ord)) != cudaSuccess ||
        (err = cudaMemGetInfo(&free_b, &s->total)) != cudaSuccess ||
        (err = cudaStreamCreateWithFlags(&s->compute, cudaStreamNonBlocking)) != cudaSuccess) {
        st = cuda_fail(err, "opening the device", ord);
        goto fail;
    }
    cublasStatus_t cb = cublasCreate(&s->cublas);
    if (cb == CUBLAS_STATUS_SUCCESS) cb = cublasSetStream(s->cublas, s->compute);
    if (cb != CUBLAS_STATUS_SUCCESS) {
        st = lrun_fail(cb == CUBLAS_STATUS_ALLOC_FAILED ? LRUN_E_OOM : LRUN_E_DEVICE,
                       "opening %s: cuBLAS handle: %s", device->name, cublasGetStatusString(cb));
        goto fail;
    }
    /* Measured after the context and cuBLAS took their share. */
    if ((err = cudaMemGetInfo(&free_b, &s->total)) != cudaSuccess) {
        st = cuda_fail(err, "cudaMemGetInfo", ord);
        goto fail;
    }
    size_t cap = free_b > HEADROOM_BYTES ? free_b - HEADROOM_BYTES : 0;
    if (budget_bytes && budget_bytes < cap) cap = budget_bytes;
    device->capacity = cap & ~(POOL_ALIGN - 1);
    pthread_mutex_init(&s->lock, NULL);
    lrun_pool_init(&s->pool, device->capacity, ARENA_BYTES, POOL_ALIGN, pool_reserve, pool_unreserve, s);
    s->pool.own_arena_bytes = OWN_ARENA_BYTES;
    device->backend = s;
    return LRUN_OK;
fail:
    if (s->cublas) cublasDestroy(s->cublas);
    if (s->compute) cudaStreamDestroy(s->compute);
    free(s);
    return st;
}

void lrun_cuda_close(lrun_device *device)
{
    cuda_state *s = state_of(device);
    if (!s) return;
    if (cudaSetDevice(s->ordinal) == cudaSuccess) (void)cudaStreamSynchronize(s->compute);
    lrun_pool_destroy(&s->pool);
    cublasDestroy(s->cublas);
    cudaStreamDestroy(s->compute);
    (void)cudaGetLastError();
    pthread_mutex_destroy(&s->lock);
    free(s);
    device->backend = NULL;
}

size_t lrun_cuda_total_memory(const lrun_device *device) { return state_of(device)->total; }

lrun_status lrun_cuda_alloc(lrun_device *device, size_t bytes, const char *what, void **out)
{
    cuda_state *s = state_of(device);
    pthread_mutex_lock(&s->lock);
    lrun_status st = lrun_pool_alloc(&s->pool, bytes, what, out);
    pthread_mutex_unlock(&s->lock);
    return st;
}

void lrun_cuda_release(lrun_device *device, void *ptr)
{
    cuda_state *s = state_of(device);
    pthread_mutex_lock(&s->lock);
    /* A bad pointer is a caller bug; the message stays in lrun_last_error. */
    (void)lrun_pool_release(&s->pool, ptr);
    pthread_mutex_unlock(&s->lock);
}

void lrun_cuda_trim(lrun_device *device)
{
    cuda_state *s = state_of(device);
    pthread_mutex_lock(&s->lock);
    lrun_pool_trim(&s->pool);
    pthread_mutex_unlock(&s->lock);
}

const lrun_pool *lrun_cuda_pool(const lrun_device *device) { return &state_of(device)->pool; }

lrun_status lrun_cuda_memset(lrun_device *device, void *dst, int value, size_t bytes)
{
    cuda_state *s = state_of(device);
    CUDA_CHECK(cudaSetDevice(s->ordinal), s->ordinal);
    CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, s->compute), s->ordinal);
    CUDA_CHECK(cudaStreamSynchronize(s->compute), s->ordinal);
    return LRUN_OK;
}

lrun_status lrun_cuda_memcpy(lrun_device *device, void *dst, const void *src, size_t bytes, lrun_copy_kind kind)
{
    static const enum cudaMemcpyKind kinds[] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                                cudaMemcpyDeviceToDevice};
    cuda_state *s = state_of(device);
    CUDA_CHECK(cudaSetDevice(s->ordinal), s->ordinal);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kinds[kind], s->compute), s->ordinal);
    CUDA_CHECK(cudaStreamSynchronize(s->compute), s->ordinal);
    return LRUN_OK;
}

lrun_status lrun_cuda_host_alloc(size_t bytes, void **out)
{
    /* Portable: the pages are pinned for every GPU, not just the current one. */
    cudaError_t err = cudaHostAlloc(out, bytes ? bytes : 1, cudaHostAllocPortable);
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        return lrun_fail_oom(bytes, 0, "cudaHostAlloc of %zu bytes: out of page-locked memory", bytes);
    }
    if (err != cudaSuccess) return cuda_fail(err, "cudaHostAlloc", 0);
    return LRUN_OK;
}

void lrun_cuda_host_free(void *ptr)
{
    if (ptr && cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError();
}

void *lrun_cuda_compute_stream(const lrun_device *device) { return state_of(device)->compute; }
void *lrun_cuda_cublas(const lrun_device *device) { return state_of(device)->cublas; }

// ---------------------------------------------------------------- CUDA: streams and events

lrun_status lrun_cuda_stream_create(lrun_device *device, void **out)
{
    cudaStream_t st;
    CUDA_CHECK(cudaSetDevice(device->cuda_ordinal), device->cuda_ordinal);
    /* Non-blocking: a copy stream must not serialise with the legacy default stream. */
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), device->cuda_ordinal);
    *out = st;
    return LRUN_OK;
}

void lrun_cuda_stream_destroy(lrun_device *device, void *stream)
{
    if (cudaSetDevice(device->cuda_ordinal) != cudaSuccess || cudaStreamDestroy(stream) != cudaSuccess)
        (void)cudaGetLastError();
}

lrun_status lrun_cuda_stream_sync(lrun_device *device, void *stream)
{
    CUDA_CHECK(cudaSetDevice(device->cuda_ordinal), device->cuda_ordinal);
    CUDA_CHECK(cudaStreamSynchronize(stream), device->cuda_ordinal);
    return LRUN_OK;
}

lrun_status lrun_cuda_event_create(lrun_device *device, void **out)
{
    cudaEvent_t ev;
    CUDA_CHECK(cudaSetDevice(device->cuda_ordinal), device->cuda_ordinal);
    /* Ordering only: events without timing are cheaper to record and wait on. */
    CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), device->cuda_ordinal);
    *out = ev;
    return LRUN_OK;
}

void lrun_cuda_event_destroy(lrun_device *device, void *event)
{
    if (cudaSetDevice(device->cuda_ordinal) != cudaSuccess || cudaEventDestroy(event) != cudaSuccess)
        (void)cudaGetLastError();
}

lrun_status lrun_cuda_event_record(lrun_device *device, void *event, void *stream)
{
    CUDA_CHECK(cudaSetDevice(device->cuda_ordinal), device->cuda_ordinal);
    CUDA_CHECK(cudaEventRecord(event, stream), device->cuda_ordinal);
    return LRUN_OK;
}

lrun_status lrun_cuda_stream_wait_event(lrun_device *device, void *stream, void *event)
{
    CUDA_CHECK(cudaSetDevice(device->cuda_ordinal), device->cuda_ordinal);
    CUDA_CHECK(cudaStreamWaitEvent(stream, event, 0), device->cuda_ordinal);
    return LRUN_OK;
}

lrun_status lrun_cuda_event_sync(lrun_device *device, void *event)
{
    CUDA_CHECK(cudaSetDevice(device->cuda_ordinal), device->cuda_ordinal);
    CUDA_CHECK(cudaEventSynchronize(event), device->cuda_ordinal);
    return LRUN_OK;
}

#else
// ---------------------------------------------------------------- without CUDA

/* Every entry point fails the same way, so callers need no #ifdef. */
static lrun_status no_cuda(const char *what)
{
    return lrun_fail(LRUN_E_DEVICE, "%s: no CUDA device: this build has no CUDA", what);
}

int lrun_built_with_cuda(void) { return 0; }
int lrun_cuda_device_count(void) { return 0; }

lrun_status lrun_cuda_open(lrun_device *device, size_t budget_bytes)
{
    (void)budget_bytes;
    char what[48];
    snprintf(what, sizeof what, "opening %s", device->name);
    return no_cuda(what);
}

void lrun_cuda_close(lrun_device *device) { (void)device; }
size_t lrun_cuda_total_memory(const lrun_device *device) { (void)device; return 0; }

lrun_status lrun_cuda_alloc(lrun_device *device, size_t bytes, const char *what, void **out)
{
    (void)device, (void)bytes, (void)out;
    return no_cuda(what);
}

void lrun_cuda_release(lrun_device *device, void *ptr) { (void)device, (void)ptr; }
void lrun_cuda_trim(lrun_device *device) { (void)device; }

lrun_status lrun_cuda_memset(lrun_device *device, void *dst, int value, size_t bytes)
{
    (void)device, (void)dst, (void)value, (void)bytes;
    return no_cuda("cuda memset");
}

lrun_status lrun_cuda_memcpy(lrun_device *device, void *dst, const void *src, size_t bytes, lrun_copy_kind kind)
{
    (void)device, (void)dst, (void)src, (void)bytes, (void)kind;
    return no_cuda("cuda memcpy");
}

lrun_status lrun_cuda_host_alloc(size_t bytes, void **out)
{
    (void)bytes, (void)out;
    return no_cuda("pinned host memory");
}

void lrun_cuda_host_free(void *ptr) { (void)ptr; }
void *lrun_cuda_compute_stream(const lrun_device *device) { (void)device; return NULL; }
void *lrun_cuda_cublas(const lrun_device *device) { (void)device; return NULL; }
const lrun_pool *lrun_cuda_pool(const lrun_device *device) { (void)device; return NULL; }

lrun_status lrun_cuda_stream_create(lrun_device *device, void **out)
{
    (void)device, (void)out;
    return no_cuda("cuda stream");
}

void lrun_cuda_stream_destroy(lrun_device *device, void *stream) { (void)device, (void)stream; }

lrun_status lrun_cuda_stream_sync(lrun_device *device, void *stream)
{
    (void)device, (void)stream;
    return no_cuda("cuda stream sync");
}

lrun_status lrun_cuda_event_create(lrun_device *device, void **out)
{
    (void)device, (void)out;
    return no_cuda("cuda event");
}

void lrun_cuda_event_destroy(lrun_device *device, void *event) { (void)device, (void)event; }

lrun_status lrun_cuda_event_record(lrun_device *device, void *event, void *stream)
{
    (void)device, (void)event, (void)stream;
    return no_cuda("cuda event record");
}

lrun_status lrun_cuda_stream_wait_event(lrun_device *device, void *stream, void *event)
{
    (void)device, (void)stream, (void)event;
    return no_cuda("cuda stream wait");
}

lrun_status lrun_cuda_event_sync(lrun_device *device, void *event)
{
    (void)device, (void)event;
    return no_cuda("cuda event sync");
}
#endif
