/* test_loader_widen_gpu.c — the streaming loader's widened ranges onto
 * cuda:0 (residency/loader.c: the file bytes read into a per-thread scratch
 * chunk, widened into the pinned chunk, copied with cudaMemcpyAsync while
 * the next piece is read): a 12 MiB file of E4M3 codes widened to bf16 times
 * a per-row scale, in 1 MiB chunks (pieces that cut rows), with 1 and 4
 * reader threads; the device bytes, copied back, equal bf16(e4m3 × scale)
 * computed here; pinned staging = staging threads × 2 × chunk, at most.
 * Then once more under a host account whose budget leaves room for one
 * thread of 512 KiB chunks (2 pinned, 1 scratch) when 4 threads of 1 MiB
 * are asked: the staging shrinks to that, the bytes are the same, the
 * account's peak stays under the budget and the staging is given back.
 * Also prints the rate (file bytes per second). Skipped (TAP SKIP) where no
 * GPU is visible. The CPU twin on a mock copy engine is test_loader_pipeline.c. */
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/device.h"
#include "core/host_account.h"
#include "lrun.h"
#include "residency/loader.h"

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else

enum { SIZE = 12 << 20, CHUNK = 1 << 20, COLS = 4096 + 3 };

#define WIDEN_COLS COLS
#include "widen_ref.h" /* e4m3, bf16, widen_rows: the test's own decode */

int main(void)
{
    if (lrun_cuda_device_count() < 1) {
        printf("ok %d - # SKIP no CUDA device\n", ++check_count);
        return CHECK_DONE();
    }
    char path[256];
    snprintf(path, sizeof path, "%s/lrun_widen_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    const int fd = mkstemp(path);
    uint8_t *file = malloc(SIZE);
    const size_t rows = (SIZE + COLS - 1) / COLS;
    float *scale = malloc(rows * sizeof *scale);
    uint16_t *back = malloc((size_t)SIZE * 2);
    uint32_t x = 99;
    for (size_t i = 0; file && i < SIZE; i++) {
        x = x * 1664525u + 1013904223u;
        file[i] = (uint8_t)(x >> 24);
        if ((file[i] & 0x7f) == 0x7f) file[i] = 0x41;
    }
    for (size_t i = 0; scale && i < rows; i++) scale[i] = 0.0005f * (float)(i % 31 + 1);
    const int ok = fd >= 0 && file && scale && back && write(fd, file, SIZE) == SIZE;
    if (fd >= 0) close(fd);
    CHECK("a file of E4M3 codes", ok);
    lrun_device *dev = NULL;
    CHECK("cuda:0 opens", ok && lrun_device_open(&dev, "cuda:0", 0) == LRUN_OK);
    void *d = NULL;
    CHECK("device memory for the widened bytes",
          dev && lrun_device_alloc(dev, (size_t)SIZE * 2, "widened test range", &d) == LRUN_OK);
    const int threads[2] = {1, 4};
    for (int k = 0; d && k < 2; k++) {
        const lrun_load_range r = {.offset = 0, .bytes = SIZE, .dst = d, .on_device = 1, .widen = widen_rows,
                                   .widen_ctx = scale, .widen_ratio = 2};
        const char *paths[1] = {path};
        const lrun_loader_opts o = {.device = dev, .n_threads = threads[k], .chunk_bytes = CHUNK};
        lrun_loader_stats s = {0};
        /* zeros first: the second run must write every byte itself */
        lrun_status st = dev->iface->memset(dev, d, 0, (size_t)SIZE * 2);
        if (st == LRUN_OK) st = lrun_loader_read(paths, 1, &r, 1, &o, &s);
        if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
        if (st == LRUN_OK) st = lrun_copy_bytes(dev, back, LRUN_TIER_HOST, d, LRUN_TIER_DEVICE, (size_t)SIZE * 2);
        int same = st == LRUN_OK;
        for (size_t i = 0; same && i < SIZE; i++) same = back[i] == bf16(e4m3(file[i]) * scale[i / COLS]);
        printf("# %d threads: %.2f GB/s of file bytes widened to the device, staging %zu bytes, scratch %zu\n",
               threads[k], s.seconds > 0 ? 1e-9 * SIZE / s.seconds : 0.0, s.staging_bytes, s.scratch_bytes);
        char name[128];
        snprintf(name, sizeof name, "%d threads: the device holds bf16(e4m3 x row scale) at every element", threads[k]);
        CHECK(name, same);
        snprintf(name, sizeof name, "%d threads: pinned staging a multiple of 2 x chunk, at most threads x 2 x chunk",
                 threads[k]);
        CHECK(name, st == LRUN_OK && s.staging_bytes >= 2 * (size_t)CHUNK && s.staging_bytes % (2 * CHUNK) == 0 &&
                        s.staging_bytes <= (size_t)threads[k] * 2 * CHUNK);
    }
    if (d) {
        lrun_host_account a;
        lrun_host_account_init(&a);
        lrun_host_account_set_budget(&a, 3 * (512 << 10) + (100 << 10)); /* 1.5 MiB of staging and a little */
        const lrun_load_range r = {.offset = 0, .bytes = SIZE, .dst = d, .on_device = 1, .widen = widen_rows,
                                   .widen_ctx = scale, .widen_ratio = 2};
        const char *paths[1] = {path};
        const lrun_loader_opts o = {.device = dev, .n_threads = 4, .chunk_bytes = CHUNK, .account = &a,
                                    .chunk_min = 256 << 10};
        lrun_loader_stats s = {0};
        lrun_status st = dev->iface->memset(dev, d, 0, (size_t)SIZE * 2);
        if (st == LRUN_OK) st = lrun_loader_read(paths, 1, &r, 1, &o, &s);
        if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
        if (st == LRUN_OK) st = lrun_copy_bytes(dev, back, LRUN_TIER_HOST, d, LRUN_TIER_DEVICE, (size_t)SIZE * 2);
        int same = st == LRUN_OK;
        for (size_t i = 0; same && i < SIZE; i++) same = back[i] == bf16(e4m3(file[i]) * scale[i / COLS]);
        lrun_host_stats h;
        lrun_host_account_get(&a, &h);
        printf("# under a 1.6 MiB host budget: %d thread(s) of %zu KiB, %.2f GB/s, %zu KiB charged, peak %zu KiB\n",
               s.n_threads, s.chunk_bytes >> 10, s.seconds > 0 ? 1e-9 * SIZE / s.seconds : 0.0,
               s.charged_bytes >> 10, h.peak >> 10);
        CHECK("under a host budget: the device holds bf16(e4m3 x row scale) at every element", same);
        CHECK("under a host budget: 1 thread of 512 KiB chunks, charged for the run, the peak under the budget, "
              "given back",
              st == LRUN_OK && s.n_threads == 1 && s.chunk_bytes == 512 << 10 && s.shrunk &&
                  s.charged_bytes == 3 * (512 << 10) && h.peak == s.charged_bytes && h.peak <= h.budget &&
                  h.held == 0 && s.staging_bytes + s.scratch_bytes <= s.charged_bytes);
        lrun_host_account_destroy(&a);
        lrun_device_release(dev, d, (size_t)SIZE * 2);
    }
    lrun_device_free(dev);
    unlink(path);
    free(file);
    free(scale);
    free(back);
    return CHECK_DONE();
}
#endif
