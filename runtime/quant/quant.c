/* quant.c — half/bfloat16 conversions and the block codecs: the scalar
 * reference dequantizers of every type, and round-to-nearest quantizers
 * (ggml's reference rules where ggml has a simple one: Q4_0, Q4_1, Q8_0,
 * Q8_K; plain round-to-nearest with 6/8-bit scales for Q4_K and Q6_K),
 * plus the activation quantizers of the matmuls, which follow llama.cpp's
 * x86 build instead (Q8_0, Q8_1: docs/numerics.md). The codecs of Q5_0,
 * Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL and IQ4_XS are in quant_more.c.
 * Block layouts: quant.h and REFERENCE.md. */
#include "core/bits.h"
#include "quant/quant_dot.h"
#include "quant/quant_round.h"

#include <math.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

// ---------------------------------------------------------------- half and bfloat16

float lrun_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: mant · 2^-24, exact in f32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13)); /* inf, nan (payload kept) */
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t lrun_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((x >> 13) & 0x3ff)); /* nan stays a quiet nan */
    /* 0x477ff000 is halfway between 65504 (the largest half) and 65536: with
     * ties to even (65504 is odd) it and everything above round to inf. */
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);
    if (x < 0x38800000u) { /* below 2^-14: a subnormal half, round(|f|·2^24) to even */
        float t = bits_f32(x) * 0x1p24f; /* exact: a power-of-two scaling */
        return (uint16_t)(sign | (uint16_t)nearbyintf(t)); /* 1024 is the smallest normal: still right */
    }
    uint32_t mant = x & 0x7fffff;
    uint32_t h = ((((x >> 23) - 112) << 10) | (mant >> 13));
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h; /* a carry into the exponent is still right */
    return (uint16_t)(sign | h);
}

float lrun_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t lrun_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet the nan */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

// ---------------------------------------------------------------- dequantize

static void dequant_q4_0(const lrun_block_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, y += 32) {
        float d = lrun_f16_to_f32(b[i].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = (float)((b[i].qs[j] & 0xF) - 8) * d;
            y[j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const lrun_block_q4_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, y += 32) {
        float d = lrun_f16_to_f32(b[i].d), m = lrun_f16_to_f32(b[i].m);
        for (int j = 0; j < 16; ++j) {
            y[j] = (float)(b[i].qs[j] & 0xF) * d + m;
            y[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

static void dequant_q8_0(const lrun_block_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, y += 32) {
        float d = lrun_f16_to_f32(b[i].d);
        for (int j = 0; j < 32; ++j) y[j] = (float)b[i].qs[j] * d;
    }
}

static void dequant_q8_1(const lrun_block_q8_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, y += 32)
        for (int j = 0; j < 32; ++j) y[j] = (float)b[i].qs[j] * b[i].d;
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K block: j < 4 in
 * the low 6 bits of bytes j and j+4; j ≥ 4 split into a low nibble in byte
 * j+4 and 2 high bits in the top of bytes j-4 (scale) and j (min). */
static inline void q4_K_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void dequant_q4_K(const lrun_block_q4_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i) {
        float d = lrun_f16_to_f32(b[i].d), dmin = lrun_f16_to_f32(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int c = 0; c < 4; ++c, q += 32, y += 64) {
            int sc0, m0, sc1, m1;
            q4_K_scale_min(b[i].scales, 2 * c, &sc0, &m0);
            q4_K_scale_min(b[i].scales, 2 * c + 1, &sc1, &m1);
            float d0 = d * (float)sc0, mm0 = dmin * (float)m0, d1 = d * (float)sc1, mm1 = dmin * (float)m1;
            for (int l = 0; l < 32; ++l) {
                y[l] = d0 * (float)(q[l] & 0xF) - mm0;
                y[l + 32] = d1 * (float)(q[l] >> 4) - mm1;
            }
        }
    }
}

static void dequant_q6_K(const lrun_block_q6_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i) {
        float d = lrun_f16_to_f32(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        for (int h = 0; h < 2; ++h, ql += 64, qh += 32, sc += 8, y += 128) {
            for (int l = 0; l < 32; ++l) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

static void dequant_q8_K(const lrun_block_q8_K *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, y += 256)
        for (int j = 0; j < 256; ++j) y[j] = (float)b[i].qs[j] * b[i].d;
}

void lrun_dequantize_row(lrun_dtype dtype, const void *src, float *dst, int64_t n)
{
    switch (dtype) {
    case LRUN_DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case LRUN_DTYPE_F16:
        for (int64_t i = 0; i < n; ++i) dst[i] = lrun_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case LRUN_DTYPE_BF16:
        for (int64_t i = 0; i < n; ++i) dst[i] = lrun_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case LRUN_DTYPE_Q4_0: dequant_q4_0(src, dst, n / LRUN_QK4_0); break;
    case LRUN_DTYPE_Q4_1: dequant_q4_1(src, dst, n / LRUN_QK4_1); break;
    case LRUN_DTYPE_Q8_0: dequant_q8_0(src, dst, n / LRUN_QK8_0); break;
    case LRUN_DTYPE_Q8_1: dequant_q8_1(src, dst, n / LRUN_QK8_1); break;
    case LRUN_DTYPE_Q4_K: dequant_q4_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q6_K: dequant_q6_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q8_K: dequant_q8_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q5_0: lrun_dequant_q5_0(src, dst, n / LRUN_QK5_0); break;
    case LRUN_DTYPE_Q5_1: lrun_dequant_q5_1(src, dst, n / LRUN_QK5_1); break;
    case LRUN_DTYPE_Q2_K: lrun_dequant_q2_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q3_K: lrun_dequant_q3_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q5_K: lrun_dequant_q5_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_IQ4_NL: lrun_dequant_iq4_nl(src, dst, n / LRUN_QK4_NL); break;
    case LRUN_DTYPE_IQ4_XS: lrun_dequant_iq4_xs(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_MXFP4: lrun_dequant_mxfp4(src, dst, n / LRUN_QK_MXFP4); break;
    }
}

// ---------------------------------------------------------------- quantize: 32-element types

/* ggml's reference quantizers, step for step, so that the bytes equal those
 * of ggml and gguf-py (tests/golden/quant_blocks.json). */

static void quant_q4_0(const float *x, lrun_block_q4_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        float amax = 0.0f, max = 0.0f; /* the value of largest magnitude maps to -8 */
        for (int j = 0; j < 32; ++j)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = lrun_f32_to_f16(d);
        for (int j = 0; j < 16; ++j) {
            /* ggml: MIN(15, (int8_t)v), v >= 0.5 for finite x */
            const int q0 = lrun_trunc_sat(x[j] * id + 8.5f, 0, 15, 8), q1 = lrun_trunc_sat(x[j + 16] * id + 8.5f, 0, 15, 8);
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quant_q4_1(const float *x, lrun_block_q4_1 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < 32; ++j) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        float d = (max - min) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = lrun_f32_to_f16(d);
        b[i].m = lrun_f32_to_f16(min);
        for (int j = 0; j < 16; ++j) {
            const int q0 = lrun_trunc_sat((x[j] - min) * id + 0.5f, 0, 15, 0),
                      q1 = lrun_trunc_sat((x[j + 16] - min) * id + 0.5f, 0, 15, 0);
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static float absmax(const float *x, int n)
{
    float amax = 0.0f;
    for (int j = 0; j < n; ++j) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

static void quant_q8_0(const float *x, lrun_block_q8_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        float d = absmax(x, 32) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = lrun_f32_to_f16(d);
        for (int j = 0; j < 32; ++j) b[i].qs[j] = (int8_t)lrun_trunc_sat(roundf(x[j] * id), -128, 127, 0);
    }
}

// ---------------------------------------------------------------- quantize: activations

/* The activations of every matmul, as llama.cpp's x86 build quantizes them
 * (quantize_row_q8_0 / q8_1, docs/numerics.md §3), which is not ggml's
 * reference rule above: id is a second division 127/amax rather than 1/d,
 * ties round to even, and d is rounded to f16 only when stored. Q8_1's s
 * is the f16 rounding of the unrounded d times the sum of the quants; our
 * Q8_1 block keeps d and s as floats holding those f16 values. */

/* One 32-element block: returns the unrounded d, writes the quants, *sum gets their sum. */
static float q8_act_block(const float *x, int8_t *qs, int *sum)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int s = 0;
    for (int j = 0; j < 32; ++j) {
        qs[j] = (int8_t)lrun_nearest_sat(x[j] * id, -128, 127, 0); /* the default rounding mode: ties to even */
        s += qs[j];
    }
    *sum = s;
    return d;
}

static void quant_act_q8_0(const float *x, lrun_block_q8_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        int sum;
        b[i].d = lrun_f32_to_f16(q8_act_block(x, b[i].qs, &sum));
    }
}

static void quant_act_q8_1(const float *x, lrun_block_q8_1 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        int sum;
        const float d = q8_act_block(x, b[i].qs, &sum);
        b[i].d = lrun_f16_to_f32(lrun_f32_to_f16(d));
        b[i].s = lrun_f16_to_f32(lrun_f32_to_f16(d * (float)sum));
    }
}

// ---------------------------------------------------------------- quantize: K types

/* Q4_K: each 32-element sub-block gets an affine range [−min, −min + 15·scale]
 * with min ≤ 0 clamped so zero is representable; the 8 scales and 8 mins are
 * then rounded to 6 bits against the block's d and dmin, and the values are
 * rounded against the scales as stored. */
static void quant_q4_K(const float *x, lrun_block_q4_K *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 256) {
        float scale[8], mins[8], max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 8; ++j) {
            float lo = 0.0f, hi = 0.0f;
            for (int l = 0; l < 32; ++l) {
                lo = fminf(lo, x[32 * j + l]);
                hi = fmaxf(hi, x[32 * j + l]);
            }
            scale[j] = (hi - lo) / 15.0f;
            mins[j] = -lo;
            max_scale = fmaxf(max_scale, scale[j]);
            max_min = fmaxf(max_min, mins[j]);
        }
        b[i].d = lrun_f32_to_f16(max_scale / 63.0f);
        b[i].dmin = lrun_f32_to_f16(max_min / 63.0f);
        float d = lrun_f16_to_f32(b[i].d), dmin = lrun_f16_to_f32(b[i].dmin);
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; ++j) {
            sc[j] = (uint8_t)(d > 0.0f ? lrun_nearest_sat(scale[j] / d, 0, 63, 0) : 0);
            mn[j] = (uint8_t)(dmin > 0.0f ? lrun_nearest_sat(mins[j] / dmin, 0, 63, 0) : 0);
        }
        memset(b[i].scales, 0, sizeof b[i].scales);
        for (int j = 0; j < 8; ++j) {
            if (j < 4) {
                b[i].scales[j] = sc[j];
                b[i].scales[j + 4] = mn[j];
            } else {
                b[i].scales[j + 4] = (uint8_t)((sc[j] & 0xF) | ((mn[j] & 0xF) << 4));
                b[i].scales[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
                b[i].scales[j] |= (uint8_t)((mn[j] >> 4) << 6);
            }
        }
        uint8_t q[256];
        for (int j = 0; j < 8; ++j) {
            float ds = d * (float)sc[j], dm = dmin * (float)mn[j];
            for (int l = 0; l < 32; ++l)
                q[32 * j + l] = (uint8_t)(ds > 0.0f ? lrun_nearest_sat((x[32 * j + l] + dm) / ds, 0, 15, 0) : 0);
        }
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l) b[i].qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
}

/* Q6_K: each 16-element sub-block maps its value of largest magnitude to −32
 * (range −32..31); the 16 scales are rounded to int8 against d, the scale of
 * largest magnitude mapping to −128. */
static void quant_q6_K(const float *x, lrun_block_q6_K *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 256) {
        float scale[16], max_scale = 0.0f, amax_scale = 0.0f;
        for (int j = 0; j < 16; ++j) {
            float amax = 0.0f, max = 0.0f;
            for (int l = 0; l < 16; ++l)
                if (fabsf(x[16 * j + l]) > amax) {
                    amax = fabsf(x[16 * j + l]);
                    max = x[16 * j + l];
                }
            scale[j] = max / -32.0f;
            if (fabsf(scale[j]) > amax_scale) {
                amax_scale = fabsf(scale[j]);
                max_scale = scale[j];
            }
        }
        memset(b[i].ql, 0, sizeof b[i].ql);
        memset(b[i].qh, 0, sizeof b[i].qh);
        if (amax_scale == 0.0f) {
            memset(b[i].scales, 0, sizeof b[i].scales);
            b[i].d = 0;
            memset(b[i].qh, 0xAA, sizeof b[i].qh); /* every q = 32 (zero): low nibbles 0, high bits 2 */
            continue;
        }
        float iscale = -128.0f / max_scale;
        b[i].d = lrun_f32_to_f16(1.0f / iscale);
        float d = lrun_f16_to_f32(b[i].d);
        uint8_t q[256];
        for (int j = 0; j < 16; ++j) {
            b[i].scales[j] = (int8_t)lrun_nearest_sat(iscale * scale[j], -128, 127, 0);
            float ds = d * (float)b[i].scales[j];
            for (int l = 0; l < 16; ++l)
                q[16 * j + l] = (uint8_t)(ds != 0.0f ? lrun_nearest_sat(x[16 * j + l] / ds, -32, 31, 0) + 32 : 32);
        }
        for (int h = 0; h < 2; ++h) {
            uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const uint8_t *qq = q + 128 * h;
            for (int l = 0; l < 32; ++l) {
                ql[l] = (uint8_t)((qq[l] & 0xF) | ((qq[l + 64] & 0xF) << 4));
                ql[l + 32] = (uint8_t)((qq[l + 32] & 0xF) | ((qq[l + 96] & 0xF) << 4));
                qh[l] = (uint8_t)((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) |
                                  ((qq[l + 96] >> 4) << 6));
            }
        }
    }
}

/* Q8_K (activations of the K-quant dots): as ggml, the value of largest
 * magnitude maps to −127, plus the sums of each 16 quants. */
static void quant_q8_K(const float *x, lrun_block_q8_K *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 256) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; ++j)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < 256; ++j) {
            b[i].qs[j] = (int8_t)lrun_nearest_sat(iscale * x[j], -128, 127, 0);
        }
        for (int j = 0; j < 16; ++j) {
            int s = 0;
            for (int l = 0; l < 16; ++l) s += b[i].qs[16 * j + l];
            b[i].bsums[j] = (int16_t)s;
        }
        b[i].d = 1.0f / iscale;
    }
}

void lrun_quantize_row_scalar(lrun_dtype dtype, const float *src, void *dst, int64_t n)
{
    switch (dtype) {
    case LRUN_DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case LRUN_DTYPE_F16:
        for (int64_t i = 0; i < n; ++i) ((uint16_t *)dst)[i] = lrun_f32_to_f16(src[i]);
        break;
    case LRUN_DTYPE_BF16:
        for (int64_t i = 0; i < n; ++i) ((uint16_t *)dst)[i] = lrun_f32_to_bf16(src[i]);
        break;
    case LRUN_DTYPE_Q4_0: quant_q4_0(src, dst, n / LRUN_QK4_0); break;
    case LRUN_DTYPE_Q4_1: quant_q4_1(src, dst, n / LRUN_QK4_1); break;
    case LRUN_DTYPE_Q8_0: quant_q8_0(src, dst, n / LRUN_QK8_0); break;
    case LRUN_DTYPE_Q8_1: quant_act_q8_1(src, dst, n / LRUN_QK8_1); break; /* activations only */
    case LRUN_DTYPE_Q4_K: quant_q4_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q6_K: quant_q6_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q8_K: quant_q8_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q5_0: lrun_quant_q5_0(src, dst, n / LRUN_QK5_0); break;
    case LRUN_DTYPE_Q5_1: lrun_quant_q5_1(src, dst, n / LRUN_QK5_1); break;
    case LRUN_DTYPE_Q2_K: lrun_quant_q2_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q3_K: lrun_quant_q3_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_Q5_K: lrun_quant_q5_K(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_IQ4_NL: lrun_quant_iq4_nl(src, dst, n / LRUN_QK4_NL); break;
    case LRUN_DTYPE_IQ4_XS: lrun_quant_iq4_xs(src, dst, n / LRUN_QK_K); break;
    case LRUN_DTYPE_MXFP4: lrun_quant_mxfp4(src, dst, n / LRUN_QK_MXFP4); break;
    }
}

void lrun_quantize_activations_scalar(lrun_dtype partner, const float *src, void *dst, int64_t n)
{
    if (partner == LRUN_DTYPE_Q8_0) quant_act_q8_0(src, dst, n / LRUN_QK8_0);
    else lrun_quantize_row_scalar(partner, src, dst, n);
}

// ---------------------------------------------------------------- quantize: activations with AVX2

/* The quantizers that run on activations before every matmul get SIMD
 * versions: the activation rule for Q8_0/Q8_1, the reference rule for Q8_0
 * weights (lrun_quantize_row), and Q8_K. Each gives the bytes of its scalar
 * twin exactly (ties included), so bytes never depend on the build. */
#if defined(__AVX2__)

static inline float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* roundf (ties away from zero) of 8 floats: truncate, then step away from
 * zero where the dropped fraction is at least a half (x − trunc(x) is exact). */
static inline __m256 roundf8(__m256 v)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    __m256 step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
    __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm256_add_ps(t, _mm256_and_ps(up, step));
}

/* 32 floats, already scaled and rounded to integers in [−127, 127], to 32 int8. */
static inline __m256i pack32(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256i ab = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
    __m256i cd = _mm256_packs_epi32(_mm256_cvtps_epi32(c), _mm256_cvtps_epi32(d));
    __m256i v = _mm256_packs_epi16(ab, cd);
    /* the packs work within 128-bit lanes: put the 8 dwords back in order */
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline int hsum_i8x32(__m256i v)
{
    __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), v);
    __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* The absolute maximum of a 32-element block and its 4 vectors. */
static inline float q8_amax(const float *x, __m256 v[4])
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int u = 0; u < 4; ++u) v[u] = _mm256_loadu_ps(x + 8 * u);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    return hmax8(m);
}

/* Q8_0 weights, ggml's reference rule (as quant_q8_0): id = 1/d, roundf. */
static void quant_q8_0_avx2(const float *x, lrun_block_q8_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        __m256 v[4];
        float d = q8_amax(x, v) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i q = pack32(roundf8(_mm256_mul_ps(v[0], vid)), roundf8(_mm256_mul_ps(v[1], vid)),
                           roundf8(_mm256_mul_ps(v[2], vid)), roundf8(_mm256_mul_ps(v[3], vid)));
        _mm256_storeu_si256((__m256i *)b[i].qs, q);
        b[i].d = lrun_f32_to_f16(d);
    }
}

/* Activations (as q8_act_block): returns the unrounded d, writes the quants,
 * *sum gets their sum. */
static inline float q8_act_block_avx2(const float *x, int8_t *qs, int *sum)
{
    __m256 v[4];
    const float amax = q8_amax(x, v);
    const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    __m256 r[4];
    for (int u = 0; u < 4; ++u)
        r[u] = _mm256_round_ps(_mm256_mul_ps(v[u], vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256i q = pack32(r[0], r[1], r[2], r[3]);
    _mm256_storeu_si256((__m256i *)qs, q);
    *sum = hsum_i8x32(q);
    return d;
}

static void quant_act_q8_0_avx2(const float *x, lrun_block_q8_0 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        int sum;
        b[i].d = lrun_f32_to_f16(q8_act_block_avx2(x, b[i].qs, &sum));
    }
}

static void quant_act_q8_1_avx2(const float *x, lrun_block_q8_1 *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        int sum;
        const float d = q8_act_block_avx2(x, b[i].qs, &sum);
#if defined(__F16C__)
        /* both f16 roundings (to nearest even, as lrun_f32_to_f16) in one conversion each way */
        const __m128i h = _mm_cvtps_ph(_mm_setr_ps(d, d * (float)sum, 0.0f, 0.0f), _MM_FROUND_TO_NEAREST_INT);
        const __m128 f = _mm_cvtph_ps(h);
        b[i].d = _mm_cvtss_f32(f);
        b[i].s = _mm_cvtss_f32(_mm_movehdup_ps(f));
#else
        b[i].d = lrun_f16_to_f32(lrun_f32_to_f16(d));
        b[i].s = lrun_f16_to_f32(lrun_f32_to_f16(d * (float)sum));
#endif
    }
}

static void quant_q8_K_avx2(const float *x, lrun_block_q8_K *b, int64_t nb)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < nb; ++i, x += 256) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 256; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
        float amax = hmax8(m), max = 0.0f;
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        for (int j = 0; j < 256; ++j) /* the first value of that magnitude, as the scalar loop finds */
            if (fabsf(x[j]) == amax) {
                max = x[j];
                break;
            }
        float iscale = -127.0f / max;
        __m256 vis = _mm256_set1_ps(iscale), top = _mm256_set1_ps(127.0f);
        for (int j = 0; j < 256; j += 32) {
            __m256 r[4];
            for (int u = 0; u < 4; ++u)
                r[u] = _mm256_min_ps(top, _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * u), vis),
                                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i q = pack32(r[0], r[1], r[2], r[3]);
            _mm256_storeu_si256((__m256i *)(b[i].qs + j), q);
            /* sums of each 16 quants */
            __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
            __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1)); /* 8 sums of 4 */
            __m128i s = _mm_hadd_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s = _mm_hadd_epi32(s, s); /* sums of 16: [0..15], [16..31] */
            b[i].bsums[j / 16] = (int16_t)_mm_extract_epi32(s, 0);
            b[i].bsums[j / 16 + 1] = (int16_t)_mm_extract_epi32(s, 1);
        }
        b[i].d = 1.0f / iscale;
    }
}

#endif

void lrun_quantize_row(lrun_dtype dtype, const float *src, void *dst, int64_t n)
{
#if defined(__AVX2__)
    switch (dtype) {
    case LRUN_DTYPE_Q8_0: quant_q8_0_avx2(src, dst, n / LRUN_QK8_0); return;
    case LRUN_DTYPE_Q8_1: quant_act_q8_1_avx2(src, dst, n / LRUN_QK8_1); return;
    case LRUN_DTYPE_Q8_K: quant_q8_K_avx2(src, dst, n / LRUN_QK_K); return;
    default: break;
    }
#endif
    lrun_quantize_row_scalar(dtype, src, dst, n);
}

void lrun_quantize_activations(lrun_dtype partner, const float *src, void *dst, int64_t n)
{
#if defined(__AVX2__)
    if (partner == LRUN_DTYPE_Q8_0) {
        quant_act_q8_0_avx2(src, dst, n / LRUN_QK8_0);
        return;
    }
#endif
    if (partner == LRUN_DTYPE_Q8_0) lrun_quantize_activations_scalar(partner, src, dst, n);
    else lrun_quantize_row(partner, src, dst, n);
}
