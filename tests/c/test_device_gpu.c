/* test_device_gpu.c — the CUDA side of devices, tensors and streams: the pool
 * under a budget, OOM, tier moves through GPU memory with the values intact,
 * element access on the GPU, pinned memory, and stream/event ordering.
 * Every check is skipped (TAP SKIP) where no GPU is visible. */
#include "check.h"
#include "core/device.h"
#include "core/tensor.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "cuda/cuda_backend.h"

#define MiB ((size_t)1 << 20)

static void test_open_and_pool(void)
{
    lrun_device *d = NULL;
    CHECK("open cuda:0 with a 512 MiB budget", lrun_device_open(&d, "cuda:0", 512 * MiB) == LRUN_OK && d);
    if (!d) return;
    CHECK("kind and name", lrun_device_kind_of(d) == LRUN_DEVICE_KIND_CUDA && !strcmp(lrun_device_name(d), "cuda:0"));
    CHECK("capacity is the budget", lrun_device_capacity(d) == 512 * MiB);
    CHECK("total memory is the GPU's", lrun_device_total_memory(d) > 1024 * MiB);
    CHECK("compute stream and cuBLAS handle exist", lrun_cuda_compute_stream(d) && lrun_cuda_cublas(d));
    const lrun_pool *pool = lrun_cuda_pool(d);
    CHECK("nothing reserved before the first allocation", pool->reserved == 0);
    void *p[64];
    int ok = 1;
    /* below the own-arena size, and 64 of them fit one shared arena */
    const size_t each = lrun_cuda_pool_arena_bytes() / 64 - 256;
    for (int i = 0; i < 64; i++) ok &= lrun_device_alloc(d, each, "layer", &p[i]) == LRUN_OK;
    CHECK("64 allocations", ok && lrun_device_used(d) == 64 * each);
    CHECK("from one arena (no cudaMalloc per allocation)", pool->n_reserve_calls == 1);
    CHECK("256-byte aligned", ((uintptr_t)p[7] & 255) == 0);
    for (int i = 0; i < 64; i += 2) lrun_device_release(d, p[i], each);
    for (int i = 1; i < 64; i += 2) lrun_device_release(d, p[i], each);
    CHECK("released: nothing used, arena healed", lrun_device_used(d) == 0 && lrun_pool_free_block_count(pool) == 1);
    void *big = (void *)1;
    CHECK("beyond the budget is LRUN_E_OOM", lrun_device_alloc(d, 600 * MiB, "KV cache", &big) == LRUN_E_OOM &&
                                                 big == NULL && strstr(lrun_last_error(), "KV cache") &&
                                                 strstr(lrun_last_error(), "cuda:0"));
    printf("# %s\n", lrun_last_error());
    CHECK("OOM records the request", lrun_last_oom_requested() == 600 * MiB);
    void *most = NULL;
    CHECK("a 500 MiB block fits (its own arena, idle ones trimmed)",
          lrun_device_alloc(d, 500 * MiB, "weights", &most) == LRUN_OK);
    lrun_device_release(d, most, 500 * MiB);
    lrun_device_free(d);

    CHECK("cuda:99 is LRUN_E_DEVICE", lrun_device_open(&d, "cuda:99", 0) == LRUN_E_DEVICE &&
                                          strstr(lrun_last_error(), "cuda:99"));
    CHECK("an unbudgeted device takes free memory less headroom",
          lrun_device_open(&d, "cuda", 0) == LRUN_OK && lrun_device_capacity(d) > 1024 * MiB &&
              lrun_device_capacity(d) < lrun_device_total_memory(d));
    lrun_device_free(d);
}

static void test_tensors(void)
{
    lrun_device *d = NULL;
    if (lrun_device_open(&d, "cuda:0", 64 * MiB) != LRUN_OK) return;
    int64_t dims[2] = {256, 64};
    lrun_tensor *t = NULL;
    CHECK("tensor in GPU memory", lrun_tensor_init(&t, d, "blk.0.ffn_up.weight", LRUN_DTYPE_F32, 2, dims,
                                                   LRUN_TIER_DEVICE) == LRUN_OK);
    CHECK("not host-addressable", lrun_tensor_host_data(t) == NULL && lrun_device_used(d) == 256 * 64 * 4);
    float *v = malloc(256 * 64 * sizeof *v), *back = malloc(256 * 64 * sizeof *back);
    int zeros = lrun_tensor_read_f32(t, 0, 256 * 64, back) == LRUN_OK;
    for (int i = 0; i < 256 * 64; i++) zeros &= back[i] == 0;
    CHECK("a fresh GPU tensor reads zeros", zeros);
    for (int i = 0; i < 256 * 64; i++) v[i] = (float)i * 0.5f - 77.0f;
    CHECK("write and read through the GPU", lrun_tensor_write_f32(t, 0, 256 * 64, v) == LRUN_OK &&
                                                lrun_tensor_read_f32(t, 256, 512, back) == LRUN_OK &&
                                                !memcmp(back, v + 256, 512 * sizeof *v));
    static const lrun_tier path[] = {LRUN_TIER_PINNED, LRUN_TIER_DEVICE, LRUN_TIER_HOST, LRUN_TIER_DEVICE};
    for (size_t i = 0; i < sizeof path / sizeof path[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "GPU move %zu to %s keeps the values", i, lrun_tier_name(path[i]));
        memset(back, 0, 256 * 64 * sizeof *back);
        CHECK(name, lrun_tensor_move(t, d, path[i]) == LRUN_OK && lrun_tensor_tier(t) == path[i] &&
                        lrun_tensor_read_f32(t, 0, 256 * 64, back) == LRUN_OK &&
                        !memcmp(back, v, 256 * 64 * sizeof *v) &&
                        lrun_device_used(d) == (path[i] == LRUN_TIER_DEVICE ? 256 * 64 * 4 : 0));
    }
    lrun_tensor *q = NULL;
    int64_t qd[1] = {4096};
    lrun_tensor_init(&q, d, "q", LRUN_DTYPE_Q8_0, 1, qd, LRUN_TIER_DEVICE);
    float src[4096], got[4096];
    for (int i = 0; i < 4096; i++) src[i] = (float)((i * 13) % 255 - 127) / 127.0f;
    double err = 0;
    if (lrun_tensor_write_f32(q, 0, 4096, src) == LRUN_OK && lrun_tensor_read_f32(q, 0, 4096, got) == LRUN_OK)
        for (int i = 0; i < 4096; i++) err = fmax(err, fabs(got[i] - src[i]));
    else err = 1e9;
    CHECK_NEAR("q8_0 on the GPU round-trips", err, 0, 0.01);
    lrun_tensor_free(q);

    lrun_tensor *huge = NULL;
    int64_t hd[2] = {4096, 8192}; /* 128 MiB of f32 > 64 MiB */
    lrun_tensor_init(&huge, d, "blk.9.ffn_down.weight", LRUN_DTYPE_F32, 2, hd, LRUN_TIER_HOST);
    size_t used = lrun_device_used(d);
    CHECK("GPU OOM on move leaves the tensor", lrun_tensor_move(huge, d, LRUN_TIER_DEVICE) == LRUN_E_OOM &&
                                                   lrun_tensor_tier(huge) == LRUN_TIER_HOST &&
                                                   lrun_device_used(d) == used);
    lrun_tensor_free(huge);
    lrun_tensor_free(t);
    CHECK("all given back", lrun_device_used(d) == 0);
    free(v);
    free(back);
    lrun_device_free(d);
}

static void test_streams(void)
{
    lrun_device *d = NULL;
    if (lrun_device_open(&d, "cuda:0", 256 * MiB) != LRUN_OK) return;
    lrun_stream *copy = NULL;
    lrun_event *e = NULL, *never = NULL;
    CHECK("stream and events", lrun_stream_init(&copy, d) == LRUN_OK && lrun_event_init(&e, d) == LRUN_OK &&
                                   lrun_event_init(&never, d) == LRUN_OK && lrun_stream_handle(copy) != NULL);
    CHECK("never-recorded wait is LRUN_E_ARG on cuda too", lrun_stream_wait_event(copy, never) == LRUN_E_ARG);
    /* A transfer queued on the copy stream, then the compute stream waits for it. */
    void *dev = NULL, *pin = NULL;
    lrun_device_alloc(d, 64 * MiB, "staging slot", &dev);
    lrun_host_alloc(LRUN_TIER_PINNED, 64 * MiB, "pinned staging", &pin);
    memset(pin, 0x5a, 64 * MiB);
    CHECK("copy, record on the copy stream", lrun_copy_bytes(d, dev, LRUN_TIER_DEVICE, pin, LRUN_TIER_PINNED,
                                                             64 * MiB) == LRUN_OK &&
                                                 lrun_event_record(e, copy) == LRUN_OK);
    CHECK("compute stream waits on the event", lrun_stream_wait_event(NULL, e) == LRUN_OK);
    CHECK("event and stream sync", lrun_event_sync(e) == LRUN_OK && lrun_stream_sync(copy) == LRUN_OK);
    memset(pin, 0, 64 * MiB);
    CHECK("device to pinned copy brings the bytes back",
          lrun_copy_bytes(d, pin, LRUN_TIER_PINNED, dev, LRUN_TIER_DEVICE, 64 * MiB) == LRUN_OK &&
              ((unsigned char *)pin)[12345] == 0x5a && ((unsigned char *)pin)[64 * MiB - 1] == 0x5a);
    lrun_device *cpu = NULL;
    lrun_stream *cs = NULL;
    lrun_device_open(&cpu, "cpu", 0);
    lrun_stream_init(&cs, cpu);
    CHECK("a cpu stream waiting on a cuda event syncs it", lrun_stream_wait_event(cs, e) == LRUN_OK);
    CHECK("recording a cuda event on a cpu stream is LRUN_E_ARG", lrun_event_record(e, cs) == LRUN_E_ARG);
    lrun_stream_free(cs);
    lrun_device_free(cpu);
    lrun_host_release(LRUN_TIER_PINNED, pin);
    lrun_device_release(d, dev, 64 * MiB);
    lrun_event_free(e);
    lrun_event_free(never);
    lrun_stream_free(copy);
    lrun_device_free(d);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GB/s of lrun_copy_bytes host→device from a buffer of tier src_tier. */
static double h2d_rate(lrun_device *d, lrun_tier src_tier, size_t bytes)
{
    void *dev = NULL, *host = NULL;
    if (lrun_device_alloc(d, bytes, "bandwidth probe", &dev) != LRUN_OK) return 0;
    if (lrun_host_alloc(src_tier, bytes, "bandwidth probe", &host) != LRUN_OK) return 0;
    memset(host, 1, bytes);
    lrun_copy_bytes(d, dev, LRUN_TIER_DEVICE, host, src_tier, bytes); /* warm-up */
    double t0 = now();
    for (int i = 0; i < 4; i++) lrun_copy_bytes(d, dev, LRUN_TIER_DEVICE, host, src_tier, bytes);
    double rate = 4.0 * (double)bytes / (now() - t0) / 1e9;
    lrun_host_release(src_tier, host);
    lrun_device_release(d, dev, bytes);
    return rate;
}

static void test_rates(void)
{
    lrun_device *d = NULL;
    if (lrun_device_open(&d, "cuda:0", 0) != LRUN_OK) return;
    double pinned = h2d_rate(d, LRUN_TIER_PINNED, 256 * MiB), pageable = h2d_rate(d, LRUN_TIER_HOST, 256 * MiB);
    printf("# host to device: pinned %.1f GB/s, pageable %.1f GB/s\n", pinned, pageable);
    CHECK("pinned memory is really page-locked (faster than pageable)", pinned > 1.2 * pageable);
    /* The pool: allocations after the first arena cost no CUDA call. */
    void *p;
    double t0 = now();
    int ok = 1;
    for (int i = 0; i < 20000; i++) {
        ok &= lrun_device_alloc(d, 4096 + (size_t)(i % 7) * 1000, "churn", &p) == LRUN_OK;
        lrun_device_release(d, p, 4096 + (size_t)(i % 7) * 1000);
    }
    double us = (now() - t0) / 20000 * 1e6;
    printf("# pool alloc+release: %.2f us\n", us);
    CHECK("pool alloc+release churn", ok && lrun_device_used(d) == 0);
    lrun_device_free(d);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - CUDA device tests # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    test_open_and_pool();
    test_tensors();
    test_streams();
    test_rates();
    return CHECK_DONE();
}
#endif
