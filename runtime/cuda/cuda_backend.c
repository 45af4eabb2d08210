/* cuda_backend.c — the CUDA device table (core/device.h): devices, their
 * memory pools (core/pool.h over cudaMalloc'd arenas), copies, streams and
 * events, every CUDA call checked. Compiled only when CUDA=1. */
#include "cuda/cuda_backend.h"

#include "core/checked.h"
#include "core/device.h"
#include "core/error.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

// ---------------------------------------------------------------- CUDA pool sizes

/* Blocks below OWN_ARENA_BYTES (norms, small weights and tables) share
 * arenas of ARENA_BYTES; larger blocks (weight matrices, scratch, KV cache,
 * streaming slots) get an arena of their own size when no free block holds
 * them. With one size for all (256 MiB), 86 MiB matrices left 84 MiB holes
 * that no later matrix fitted (docs/streaming.md), so a budget lost layers
 * to fragmentation. Now a closed shared arena strands less than
 * OWN_ARENA_BYTES and the open one at most ARENA_BYTES (when the capacity
 * is at most one arena, the arena is all of it and only holes among its
 * blocks are stranded), which is the bound placement reserves
 * (docs/residency.md "Fragmentation"). Small shared arenas keep that bound
 * small; the price is one cudaMalloc per large block, paid once at load. */
#define ARENA_BYTES ((size_t)16 << 20)
#define OWN_ARENA_BYTES ((size_t)1 << 20)

size_t lrun_cuda_pool_arena_bytes(void) { return ARENA_BYTES; }
size_t lrun_cuda_pool_own_arena_bytes(void) { return OWN_ARENA_BYTES; }

// ---------------------------------------------------------------- CUDA: errors

/* Left free on the GPU for the CUDA context, cuBLAS workspaces and kernels. */
#define HEADROOM_BYTES ((size_t)256 << 20)
/* cudaMalloc returns 256-byte aligned memory; blocks keep that alignment. */
#define POOL_ALIGN ((size_t)256)

size_t lrun_cuda_pool_align(void) { return POOL_ALIGN; }

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

static int cuda_device_count(void)
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

size_t lrun_cuda_l2_bytes(const lrun_device *device)
{
    int l2 = 0;
    if (cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device->cuda_ordinal) != cudaSuccess || l2 < 0) return 0;
    return (size_t)l2;
}

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

static lrun_status lrun_cuda_memcpy_async(lrun_device *device, void *dst, const void *src, size_t bytes,
                                          lrun_copy_kind kind, void *stream)
{
    static const enum cudaMemcpyKind kinds[] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                                cudaMemcpyDeviceToDevice};
    CUDA_CHECK(cudaSetDevice(device->cuda_ordinal), device->cuda_ordinal);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kinds[kind], (cudaStream_t)stream), device->cuda_ordinal);
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

// ---------------------------------------------------------------- the table

const lrun_device_iface lrun_cuda_device_iface = {
    .name = "cuda",
    .device_count = cuda_device_count,
    .open = lrun_cuda_open,
    .close = lrun_cuda_close,
    .total_memory = lrun_cuda_total_memory,
    .alloc = lrun_cuda_alloc,
    .release = lrun_cuda_release,
    .trim = lrun_cuda_trim,
    .memset = lrun_cuda_memset,
    .memcpy = lrun_cuda_memcpy,
    .memcpy_async = lrun_cuda_memcpy_async,
    .host_alloc = lrun_cuda_host_alloc,
    .host_free = lrun_cuda_host_free,
    .compute_stream = lrun_cuda_compute_stream,
    .stream_create = lrun_cuda_stream_create,
    .stream_destroy = lrun_cuda_stream_destroy,
    .stream_sync = lrun_cuda_stream_sync,
    .event_create = lrun_cuda_event_create,
    .event_destroy = lrun_cuda_event_destroy,
    .event_record = lrun_cuda_event_record,
    .stream_wait_event = lrun_cuda_stream_wait_event,
    .event_sync = lrun_cuda_event_sync,
};
