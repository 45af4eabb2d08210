/* test_packed_gpu.c — the CUDA decode of packed tensors (kernels/packed_decode.cu)
 * against the CPU decoder, bit for bit: every 16-bit pattern (NaN payloads,
 * ±0, ±inf, subnormals), all-equal and tiny tensors, sizes not whole
 * blocks, trained-like bf16 and f16 weights, and any element range alone.
 * One TAP SKIP line where no GPU is visible. */
#include "check.h"
#include "core/device.h"
#include "packed/codec.h"
#include "quant/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "cuda/cuda_backend.h"
#include "kernels.h"

static lrun_device *dev;
static void *stream;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* Trained-like values: normal, std 0.02, a few outliers 10x. */
static float normal_value(void)
{
    const double u1 = (rnd() + 1.0) / 4294967297.0, u2 = rnd() / 4294967296.0;
    double z = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2) * 0.02;
    if (rnd() % 1000 == 0) z *= 10;
    return (float)z;
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* Packs src, decodes [first, first+count) on the GPU (the packed bytes odd
 * bytes past an aligned address) and on the CPU; 1 when equal. */
static int gpu_matches_at(int dtype, const uint16_t *src, uint64_t n, uint64_t first, uint64_t count, size_t odd)
{
    size_t cap = lrun_packed_bound(dtype, n), bytes = 0;
    uint8_t *p = malloc(cap);
    uint16_t *cpu = malloc((count ? count : 1) * 2), *gpu = malloc((count ? count : 1) * 2);
    lrun_packed_layout lay;
    void *dp = NULL, *dd = NULL;
    int ok = p && cpu && gpu && lrun_packed_encode(p, cap, &bytes, dtype, src, n, NULL) == LRUN_OK &&
             lrun_packed_validate(&lay, p, bytes, "gpu") == LRUN_OK &&
             lrun_cuda_alloc(dev, bytes + odd, "packed", &dp) == LRUN_OK &&
             lrun_cuda_alloc(dev, (count ? count : 1) * 2, "plain", &dd) == LRUN_OK &&
             lrun_cuda_memcpy(dev, (char *)dp + odd, p, bytes, LRUN_COPY_HOST_TO_DEVICE) == LRUN_OK &&
             lrun_k_packed_decode(dd, (char *)dp + odd, &lay, first, count, stream) == LRUN_OK &&
             lrun_cuda_stream_sync(dev, stream) == LRUN_OK &&
             lrun_cuda_memcpy(dev, gpu, dd, count * 2, LRUN_COPY_DEVICE_TO_HOST) == LRUN_OK;
    if (ok) lrun_packed_decode_range(cpu, p, &lay, first, count);
    ok = ok && !memcmp(cpu, gpu, count * 2) && !memcmp(cpu, src + first, count * 2);
    if (!ok) printf("# n %llu [%llu +%llu]: %s\n", (unsigned long long)n, (unsigned long long)first,
                    (unsigned long long)count, lrun_last_error());
    if (dp) lrun_cuda_release(dev, dp);
    if (dd) lrun_cuda_release(dev, dd);
    free(p), free(cpu), free(gpu);
    return ok;
}

static int gpu_matches(int dtype, const uint16_t *src, uint64_t n, uint64_t first, uint64_t count)
{
    return gpu_matches_at(dtype, src, n, first, count, 0);
}

static void cases(int dtype, const char *name)
{
    char label[96];
    const uint64_t big = 1 << 20;
    uint16_t *v = malloc(big * 2);
    for (uint32_t i = 0; i < 65536; i++) v[i] = (uint16_t)i;
    snprintf(label, sizeof label, "%s: every bit pattern", name);
    CHECK(label, gpu_matches(dtype, v, 65536, 0, 65536));
    for (int i = 0; i < 5000; i++) v[i] = 0x3f80;
    snprintf(label, sizeof label, "%s: all-equal tensor", name);
    CHECK(label, gpu_matches(dtype, v, 5000, 0, 5000));
    int ok = 1;
    const uint64_t sizes[] = {1, 2, 3, 5, 1023, 1025, 3001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (uint64_t i = 0; i < sizes[s]; i++) v[i] = (uint16_t)rnd();
        ok &= gpu_matches(dtype, v, sizes[s], 0, sizes[s]);
    }
    snprintf(label, sizeof label, "%s: tiny tensors and sizes not whole blocks", name);
    CHECK(label, ok);
    for (uint64_t i = 0; i < big; i++) {
        float f = normal_value();
        v[i] = dtype == LRUN_DTYPE_BF16 ? to_bf16(f) : lrun_f32_to_f16(f);
    }
    snprintf(label, sizeof label, "%s: trained-like weights (normal, outliers), 1M elements", name);
    CHECK(label, gpu_matches(dtype, v, big, 0, big));
    ok = 1;
    for (int k = 0; k < 20; k++) {
        uint64_t a = rnd() % big, room = big - a < 50000 ? big - a : 50000, c = 1 + rnd() % room;
        ok &= gpu_matches(dtype, v, big, a, c);
    }
    snprintf(label, sizeof label, "%s: any element range decodes alone", name);
    CHECK(label, ok);
    snprintf(label, sizeof label, "%s: packed bytes at an odd address (no 32-bit loads)", name);
    CHECK(label, gpu_matches_at(dtype, v, 100000, 0, 100000, 1) && gpu_matches_at(dtype, v, 100000, 3, 5000, 3));
    free(v);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok %d - # SKIP no GPU\n", ++check_count);
        return CHECK_DONE();
    }
    if (lrun_device_open(&dev, "cuda:0", 0) != LRUN_OK) {
        printf("Bail out! %s\n", lrun_last_error());
        return 1;
    }
    stream = lrun_cuda_compute_stream(dev);
    cases(LRUN_DTYPE_BF16, "bf16");
    cases(LRUN_DTYPE_F16, "f16");
    lrun_device_free(dev);
    return CHECK_DONE();
}
#endif
