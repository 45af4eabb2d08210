/* quant_mxfp4.c — MXFP4 (GGML type 39), the OCP microscaling FP4 format
 * gpt-oss stores its experts in: blocks of 32 values, each
 *
 *   u8 e        E8M0 scale: 2^(e - 127), used halved (ggml_e8m0_to_fp32_half)
 *   u8 qs[16]   E2M1 codes, element j in the low nibble of qs[j], element
 *               j + 16 in the high nibble (Q4_0's order)
 *
 * y = 2^(e - 128) · kvalues[q], with kvalues the E2M1 values doubled
 * (0, 1, 2, 3, 4, 6, 8, 12 and their negatives), so every value is exact in
 * f32. gguf-py's quants.MXFP4 decodes the same way
 * (tests/golden/quant_blocks.json).
 *
 * The dot product with Q8_0 activations follows llama.cpp's x86 build. Its
 * CPU backend repacks every MXFP4 matrix whose row count is a multiple of
 * 8 (every gpt-oss matrix) into 8-row interleaved blocks, and its AVX2
 * gemv/gemm kernels then compute each output as one f32 chain over the
 * blocks:
 *
 *   acc = fma((float)sumi_b, e8m0_half(e_b) · d_x, acc)
 *
 * with sumi_b the exact integer sum of the block's 32 products. lrun does
 * the same for every MXFP4 row (docs/numerics.md). */
#include "quant/quant_dot.h"

#include <math.h>
#include <string.h>

#if defined(LRUN_HAVE_AVX2)
#include <immintrin.h>
#endif

const int8_t lrun_kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

float lrun_e8m0_to_f32_half(uint8_t e)
{
    /* e < 2: the subnormals 2^-128 and 2^-127; else the normal 2^(e - 128) */
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// ---------------------------------------------------------------- codec

void lrun_dequant_mxfp4(const void *src, float *y, int64_t nb)
{
    const lrun_block_mxfp4 *b = src;
    for (int64_t i = 0; i < nb; ++i, y += 32) {
        const float d = lrun_e8m0_to_f32_half(b[i].e);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * (float)lrun_kvalues_mxfp4[b[i].qs[j] & 0xF];
            y[j + 16] = d * (float)lrun_kvalues_mxfp4[b[i].qs[j] >> 4];
        }
    }
}

/* gguf-py's quantizer (quants.MXFP4.quantize_blocks): e = floor(log2 amax) -
 * 2 + 127 (0 for an all-zero block), then each value takes the code whose
 * value d·k is nearest, the first code among equals. */
void lrun_quant_mxfp4(const float *x, void *dst, int64_t nb)
{
    lrun_block_mxfp4 *b = dst;
    for (int64_t i = 0; i < nb; ++i, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j) amax = fmaxf(amax, fabsf(x[j]));
        int e = 0;
        if (amax > 0.0f && isfinite(amax)) {
            e = (int)floorf(log2f(amax)) - 2 + 127;
            e = e < 0 ? 0 : e > 255 ? 255 : e;
        }
        b[i].e = (uint8_t)e;
        const float d = lrun_e8m0_to_f32_half((uint8_t)e);
        uint8_t q[32];
        for (int j = 0; j < 32; ++j) {
            int best = 0;
            float best_err = fabsf(d * (float)lrun_kvalues_mxfp4[0] - x[j]);
            for (int c = 1; c < 16; ++c) {
                const float err = fabsf(d * (float)lrun_kvalues_mxfp4[c] - x[j]);
                if (err < best_err) best = c, best_err = err;
            }
            q[j] = (uint8_t)best;
        }
        for (int j = 0; j < 16; ++j) b[i].qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
    }
}

// ---------------------------------------------------------------- dot with Q8_0

#define ROW(x, r, xs) ((const lrun_block_q8_0 *)((const char *)(x) + (size_t)(r) * (xs)))

/* One row: the chain over blocks of llama.cpp's repacked kernels. */
static float dot1_mxfp4(int64_t k, const lrun_block_mxfp4 *w, const lrun_block_q8_0 *x)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < k / 32; ++b) {
        int sumi = 0;
        for (int j = 0; j < 16; ++j)
            sumi += lrun_kvalues_mxfp4[w[b].qs[j] & 0xF] * x[b].qs[j] +
                    lrun_kvalues_mxfp4[w[b].qs[j] >> 4] * x[b].qs[j + 16];
        acc = fmaf((float)sumi, lrun_e8m0_to_f32_half(w[b].e) * lrun_f16_to_f32(x[b].d), acc);
    }
    return acc;
}

void lrun_dot_mxfp4_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    for (int r = 0; r < nx; ++r) out[r] = dot1_mxfp4(k, w, ROW(x, r, xs));
}

// ---------------------------------------------------------------- dot with f32 activations

/* An HF gpt-oss's experts (lrun_model.mxfp4_float_x): transformers computes
 * them dequantized, with f32 activations, so x is not rounded to Q8_0. Per
 * block, the doubled E2M1 values times x in 8 lanes (elements l, l + 8,
 * l + 16, l + 24 of lane l, the first a product and the others fused),
 * the lanes summed as (l + 4), (l + 2), (l + 1) pairs, times the block's
 * half scale into one f32 chain: the AVX2 kernel's order, so both give the
 * same bits. */
static float block_f32(const lrun_block_mxfp4 *b, const float *x)
{
    float v[8];
    for (int l = 0; l < 8; ++l) {
        const int8_t q[4] = {lrun_kvalues_mxfp4[b->qs[l] & 0xF], lrun_kvalues_mxfp4[b->qs[l + 8] & 0xF],
                             lrun_kvalues_mxfp4[b->qs[l] >> 4], lrun_kvalues_mxfp4[b->qs[l + 8] >> 4]};
        v[l] = (float)q[0] * x[l];
        v[l] = fmaf((float)q[1], x[l + 8], v[l]);
        v[l] = fmaf((float)q[2], x[l + 16], v[l]);
        v[l] = fmaf((float)q[3], x[l + 24], v[l]);
    }
    for (int l = 0; l < 4; ++l) v[l] += v[l + 4];
    for (int l = 0; l < 2; ++l) v[l] += v[l + 2];
    return v[0] + v[1];
}

void lrun_dot_mxfp4_f32_scalar(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    const lrun_block_mxfp4 *wb = w;
    for (int r = 0; r < nx; ++r) {
        const float *xr = (const float *)((const char *)x + (size_t)r * xs);
        float acc = 0.0f;
        for (int64_t b = 0; b < k / 32; ++b) acc = fmaf(block_f32(&wb[b], xr + 32 * b), lrun_e8m0_to_f32_half(wb[b].e), acc);
        out[r] = acc;
    }
}

#if defined(LRUN_HAVE_AVX2)

/* The 32 codes of a block as bytes in element order: low nibbles, then high. */
static inline __m256i mxfp4_values(const lrun_block_mxfp4 *b, __m256i table)
{
    const __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
    const __m128i lo4 = _mm_set1_epi8(0x0F);
    const __m256i idx = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), lo4), _mm_and_si128(q, lo4));
    return _mm256_shuffle_epi8(table, idx);
}

/* The exact integer sum of 32 int8 products (|w| <= 12, so maddubs's int16
 * pairs never saturate). */
static inline int sum_products(__m256i w, __m256i x)
{
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    const __m256i p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p32), _mm256_extracti128_si256(p32, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

void lrun_dot_mxfp4_avx2(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    const lrun_block_mxfp4 *wb = w;
    const __m128i t = _mm_loadu_si128((const __m128i *)lrun_kvalues_mxfp4);
    const __m256i table = _mm256_set_m128i(t, t);
    const lrun_block_q8_0 *xr[LRUN_DOT_MAX_ROWS];
    float acc[LRUN_DOT_MAX_ROWS] = {0};
    for (int r = 0; r < nx; ++r) xr[r] = ROW(x, r, xs);
    for (int64_t b = 0; b < k / 32; ++b) {
        const __m256i v = mxfp4_values(&wb[b], table);
        const float dw = lrun_e8m0_to_f32_half(wb[b].e);
        for (int r = 0; r < nx; ++r) {
            const int sumi = sum_products(v, _mm256_loadu_si256((const __m256i *)xr[r][b].qs));
            acc[r] = fmaf((float)sumi, dw * _cvtsh_ss(xr[r][b].d), acc[r]);
        }
    }
    for (int r = 0; r < nx; ++r) out[r] = acc[r];
}

/* lrun_dot_mxfp4_f32_scalar's arithmetic, 8 lanes at a time. */
static void dot_mxfp4_f32_avx2(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)
{
    const lrun_block_mxfp4 *wb = w;
    const __m128i t = _mm_loadu_si128((const __m128i *)lrun_kvalues_mxfp4);
    const __m256i table = _mm256_set_m128i(t, t);
    for (int r = 0; r < nx; ++r) {
        const float *xr = (const float *)((const char *)x + (size_t)r * xs);
        float acc = 0.0f;
        for (int64_t b = 0; b < k / 32; ++b, xr += 32) {
            const __m256i v = mxfp4_values(&wb[b], table); /* int8 values in element order */
            const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
            const __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
            const __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
            const __m256 w2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
            const __m256 w3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
            __m256 s = _mm256_mul_ps(w0, _mm256_loadu_ps(xr));
            s = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + 8), s);
            s = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xr + 16), s);
            s = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xr + 24), s);
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)); /* l + 4 */
            h = _mm_add_ps(h, _mm_movehl_ps(h, h));                                        /* l + 2 */
            h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));                                    /* l + 1 */
            acc = fmaf(_mm_cvtss_f32(h), lrun_e8m0_to_f32_half(wb[b].e), acc);
        }
        out[r] = acc;
    }
}

#endif /* LRUN_HAVE_AVX2 */

lrun_dot_fn lrun_dot_mxfp4_f32_kernel(void)
{
#if defined(LRUN_HAVE_AVX2)
    if (lrun_cpu_isa_get() >= LRUN_CPU_ISA_AVX2) return dot_mxfp4_f32_avx2;
#endif
    return lrun_dot_mxfp4_f32_scalar;
}
