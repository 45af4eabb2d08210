/* widen_ref.h — the loader tests' own E4M3 → bf16 widening (test_loader_pipeline.c,
 * test_loader_widen_gpu.c), written from the format's bits rather than taken from
 * runtime/quant/fp8.c, so the loader is checked against an independent decode.
 * Header-only like check.h; define WIDEN_COLS (elements per row) before including. */
#ifndef LRUN_TEST_WIDEN_REF_H
#define LRUN_TEST_WIDEN_REF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The value of an E4M3FN byte from its bits (1 sign, 4 exponent bias 7, 3 mantissa; S.1111.111 NaN). */
static inline float e4m3(uint8_t b)
{
    const int e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return NAN;
    const float v = e ? ldexpf(1.0f + (float)m / 8.0f, e - 7) : ldexpf((float)m / 8.0f, -6);
    return (b & 0x80) ? -v : v;
}

/* f32 to bf16, round to nearest even (finite inputs). */
static inline uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* The widening under test: byte e of the range is element (e / WIDEN_COLS, e % WIDEN_COLS),
 * scaled per row by ctx (float[rows]). */
static inline void widen_rows(const void *ctx, uint64_t at, const void *src, size_t n, void *dst)
{
    const float *scale = ctx;
    const uint8_t *q = src;
    uint16_t *out = dst;
    for (size_t i = 0; i < n; i++) out[i] = bf16(e4m3(q[i]) * scale[(at + i) / WIDEN_COLS]);
}

#endif
