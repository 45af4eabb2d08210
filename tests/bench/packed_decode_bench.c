/* packed_decode_bench.c — speed of the packed codec (runtime/packed/codec.h)
 * on an 11008 x 4096 bf16 matrix shaped like trained weights (synthetic:
 * lrun_random_fill_trained): the ratio, CPU encode and decode MB/s with
 * every core, and with a GPU the decode kernel's GB/s next to a plain
 * device-to-device copy of the same plain bytes. Not part of `make test`:
 *
 *   make CUDA=1 && cc -O2 -march=native -std=c11 -D_GNU_SOURCE -pthread -DLRUN_WITH_CUDA \
 *      -Iruntime -Ikernels -I/usr/local/cuda/include tests/bench/packed_decode_bench.c -o build/packed_decode_bench \
 *      build/liblrun.a -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcudart -lcublas -lstdc++ -lpcre2-8 -lm
 *   build/packed_decode_bench [rows cols]
 *   build/packed_decode_bench --gguf FILE   the ratio over every matrix of FILE,
 *                                           dequantized to bf16 first (for quantized files)
 *
 * (without CUDA: drop -DLRUN_WITH_CUDA and the CUDA flags; CPU figures only.)
 * Every figure is the best of several runs. */
#include "core/device.h"
#include "core/threadpool.h"
#include "model/random_fill.h"
#include "packed/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef LRUN_WITH_CUDA
#include "cuda/cuda_backend.h"
#include "kernels.h"
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#ifdef LRUN_WITH_CUDA
/* Best seconds of reps decodes of the whole tensor, and of a plain copy. */
static void gpu_bench(const uint8_t *packed, size_t bytes, const lrun_packed_layout *lay, const uint16_t *plain)
{
    lrun_device *dev = NULL;
    if (lrun_cuda_device_count() == 0 || lrun_device_open(&dev, "cuda:0", 0) != LRUN_OK) {
        printf("gpu: none\n");
        return;
    }
    void *s = lrun_cuda_compute_stream(dev), *dp = NULL, *dd = NULL, *dc = NULL;
    const size_t plain_bytes = (size_t)lay->n * 2;
    if (lrun_cuda_alloc(dev, bytes, "packed", &dp) != LRUN_OK || lrun_cuda_alloc(dev, plain_bytes, "out", &dd) != LRUN_OK ||
        lrun_cuda_alloc(dev, plain_bytes, "copy", &dc) != LRUN_OK) {
        printf("gpu: %s\n", lrun_last_error());
        return;
    }
    lrun_cuda_memcpy(dev, dp, packed, bytes, LRUN_COPY_HOST_TO_DEVICE);
    lrun_cuda_memcpy(dev, dc, plain, plain_bytes, LRUN_COPY_HOST_TO_DEVICE);
    double best = 1e9, best_copy = 1e9;
    for (int r = 0; r < 20; r++) {
        double t0 = now_s();
        for (int k = 0; k < 10; k++) lrun_k_packed_decode(dd, dp, lay, 0, lay->n, s);
        lrun_cuda_stream_sync(dev, s);
        double t = (now_s() - t0) / 10;
        best = t < best ? t : best;
        t0 = now_s();
        lrun_cuda_memcpy(dev, dd, dc, plain_bytes, LRUN_COPY_DEVICE_TO_DEVICE);
        t = now_s() - t0;
        best_copy = t < best_copy ? t : best_copy;
    }
    uint16_t *back = malloc(plain_bytes);
    lrun_k_packed_decode(dd, dp, lay, 0, lay->n, s);
    lrun_cuda_stream_sync(dev, s);
    lrun_cuda_memcpy(dev, back, dd, plain_bytes, LRUN_COPY_DEVICE_TO_HOST);
    printf("gpu decode: %.3f ms, %.1f GB/s of plain bf16 out (%.1f GB/s packed in); bit-exact: %s\n", best * 1e3,
           plain_bytes / best / 1e9, bytes / best / 1e9, memcmp(back, plain, plain_bytes) ? "NO" : "yes");
    printf("gpu plain copy of the same bytes (device to device): %.3f ms, %.1f GB/s\n", best_copy * 1e3,
           plain_bytes / best_copy / 1e9);
    free(back);
    lrun_cuda_release(dev, dp), lrun_cuda_release(dev, dd), lrun_cuda_release(dev, dc);
    lrun_device_free(dev);
}
#endif

/* The packed/plain ratio of every 2-D tensor of a GGUF file, each converted to bf16. */
static int gguf_ratio(const char *path)
{
    lrun_gguf *g = NULL;
    if (lrun_gguf_open(&g, path) != LRUN_OK) {
        printf("%s\n", lrun_last_error());
        return 1;
    }
    size_t plain = 0, packed = 0;
    for (int64_t t = 0; t < lrun_gguf_tensor_count(g); t++) {
        if (lrun_gguf_tensor_ndim(g, t) < 2) continue;
        const int64_t n = lrun_gguf_tensor_dim(g, t, 0) * lrun_gguf_tensor_dim(g, t, 1);
        float *f = malloc((size_t)n * 4);
        uint16_t *b = malloc((size_t)n * 2);
        size_t cap = lrun_packed_bound(LRUN_DTYPE_BF16, (uint64_t)n), got = 0;
        uint8_t *p = malloc(cap);
        if (!f || !b || !p || lrun_dtype_to_f32(lrun_gguf_tensor_dtype(g, t), lrun_gguf_tensor_data(g, t), f, n) != LRUN_OK ||
            lrun_dtype_from_f32(LRUN_DTYPE_BF16, f, b, n) != LRUN_OK ||
            lrun_packed_encode(p, cap, &got, LRUN_DTYPE_BF16, b, (uint64_t)n, NULL) != LRUN_OK) {
            printf("%s: %s\n", lrun_gguf_tensor_name(g, t), lrun_last_error());
            return 1;
        }
        plain += (size_t)n * 2;
        packed += got;
        free(f), free(b), free(p);
    }
    printf("%s, every matrix as bf16: %.1f MB -> %.1f MB, ratio %.4f\n", path, plain / 1e6, packed / 1e6,
           (double)packed / (double)plain);
    lrun_gguf_close(g);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "--gguf")) return gguf_ratio(argv[2]);
    const int64_t rows = argc > 2 ? atoll(argv[1]) : 11008, cols = argc > 2 ? atoll(argv[2]) : 4096, n = rows * cols;
    uint16_t *plain = malloc((size_t)n * 2), *back = malloc((size_t)n * 2);
    size_t cap = lrun_packed_bound(LRUN_DTYPE_BF16, (uint64_t)n), bytes = 0;
    uint8_t *packed = malloc(cap);
    lrun_threadpool *pool = NULL;
    if (!plain || !back || !packed || lrun_threadpool_init(&pool, 0) != LRUN_OK) return 1;
    lrun_random_fill_trained(LRUN_DTYPE_BF16, plain, 0, n, 0.02f, 1);
    double enc = 1e9, dec = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        lrun_packed_encode(packed, cap, &bytes, LRUN_DTYPE_BF16, plain, (uint64_t)n, pool);
        double t1 = now_s();
        lrun_packed_decode(back, LRUN_DTYPE_BF16, (uint64_t)n, packed, bytes, "bench", pool);
        double t2 = now_s();
        enc = t1 - t0 < enc ? t1 - t0 : enc;
        dec = t2 - t1 < dec ? t2 - t1 : dec;
    }
    printf("%lld x %lld bf16 (trained-like, synthetic): ratio %.4f, bit-exact: %s\n", (long long)rows, (long long)cols,
           (double)bytes / (2.0 * (double)n), memcmp(back, plain, (size_t)n * 2) ? "NO" : "yes");
    printf("cpu (%d threads): encode %.0f MB/s, decode %.0f MB/s of plain bf16\n", lrun_threadpool_size(pool),
           2.0 * (double)n / enc / 1e6, 2.0 * (double)n / dec / 1e6);
#ifdef LRUN_WITH_CUDA
    lrun_packed_layout lay;
    if (lrun_packed_validate(&lay, packed, bytes, "bench") == LRUN_OK) gpu_bench(packed, bytes, &lay, plain);
#endif
    lrun_threadpool_free(pool);
    free(plain), free(back), free(packed);
    return 0;
}
