/* gpu_fixture.h — the device side the kernel tests share (test_kernels_gpu.c,
 * test_moe_kernels_gpu.c): one device, its compute stream, and one device
 * block bump-allocated for a test case's buffers, with copies that bail
 * out on failure. Header-only like check.h; include after kernels.h, in a
 * build with LRUN_WITH_CUDA. */
#ifndef LRUN_TEST_GPU_FIXTURE_H
#define LRUN_TEST_GPU_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/device.h"
#include "cuda/cuda_backend.h"
#include "lrun.h"

static lrun_device *dev;
static void *stream;
static uint8_t *arena; /* one device block, bump-allocated; reset between cases */
static size_t arena_cap, arena_used;

/* bytes of the arena, 256-byte aligned; bails out when it is exhausted */
static inline void *dbuf(size_t bytes)
{
    size_t off = (arena_used + 255) & ~(size_t)255;
    if (off + bytes > arena_cap) {
        printf("Bail out! test arena of %zu bytes exhausted\n", arena_cap);
        exit(1);
    }
    arena_used = off + bytes;
    return arena + off;
}

static inline void dreset(void) { arena_used = 0; }

static inline void up(void *d, const void *h, size_t n)
{
    if (lrun_cuda_memcpy(dev, d, h, n, LRUN_COPY_HOST_TO_DEVICE) != LRUN_OK) {
        printf("Bail out! upload: %s\n", lrun_last_error());
        exit(1);
    }
}

static inline void down(void *h, const void *d, size_t n)
{
    if (lrun_cuda_memcpy(dev, h, d, n, LRUN_COPY_DEVICE_TO_HOST) != LRUN_OK) {
        printf("Bail out! download: %s\n", lrun_last_error());
        exit(1);
    }
}

static inline void *dcopy(const void *h, size_t n)
{
    void *d = dbuf(n);
    up(d, h, n);
    return d;
}

/* A kernel call followed by a stream sync: both must succeed. */
static inline int ran(lrun_status st)
{
    if (st != LRUN_OK) {
        printf("# kernel: %s\n", lrun_last_error());
        return 0;
    }
    if (lrun_cuda_stream_sync(dev, stream) != LRUN_OK) {
        printf("# sync: %s\n", lrun_last_error());
        return 0;
    }
    return 1;
}

/* cuda:0, its compute stream and an arena of arena_bytes; 0 after a "Bail
 * out!" line. */
static inline int gpu_fixture_open(size_t arena_bytes)
{
    if (lrun_device_open(&dev, "cuda:0", 0) != LRUN_OK) {
        printf("Bail out! %s\n", lrun_last_error());
        return 0;
    }
    stream = lrun_cuda_compute_stream(dev);
    arena_cap = arena_bytes;
    if (lrun_device_alloc(dev, arena_cap, "test arena", (void **)&arena) != LRUN_OK) {
        printf("Bail out! %s\n", lrun_last_error());
        return 0;
    }
    return 1;
}

static inline void gpu_fixture_close(void)
{
    lrun_device_release(dev, arena, arena_cap);
    lrun_device_free(dev);
}

#endif
