/* pex2_gemv_avx512.c — the decode product (one activation row) of a PEX2
 * weight with the weight decoded in registers: no tile written and read
 * back (cpu_matmul_packed.c's other path decodes a tile into the thread's
 * cache, then multiplies it).
 *
 * Each 64-element chunk is decoded as lrun_pex2_blocks_avx512 does (book1
 * by byte permutes, the block's exceptions blended from book2 by mask), and
 * its bytes go straight to four vectors of 16 f32 (a bf16 is the high half
 * of its f32), each one FMA into the row's accumulator. The accumulator's
 * low 8 lanes are the plain bf16 dot's first chain (elements 16s..16s+7)
 * and its high 8 its second (16s+8..16s+15) (quant_dot_walk_float.h): the
 * same products in the same order in every lane, then the same hsum8, so a
 * row's result is the plain product's bit for bit at the avx512 level
 * (tests/c/test_matmul_packed.c compares them). Rows of k a multiple of 64
 * only: a chunk then lies in one row, and the dot has no tail. A chunk with
 * a far exponent (code 7, ~0.06% of trained-like elements) is written out,
 * patched and read back. */
#include "packed/codec_pex2.h"
#include "quant/quant_dot.h"

#include <string.h>

#if defined(LRUN_HAVE_AVX512)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vbmi,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vbmi,fma")
#endif

#include "packed/pex2_avx512_tables.h"

/* Byte b of dword j: the f32 of element 16q + j from the low (o, index i)
 * and high (h, index 64 + i) bytes of its bf16; bytes 0 and 1 zero (mask). */
#define F32Q(q, j) 0, 0, 16 * (q) + (j), 64 + 16 * (q) + (j)
#define F32Q4(q, j) F32Q(q, j), F32Q(q, j + 1), F32Q(q, j + 2), F32Q(q, j + 3)
static const uint8_t to_f32[4][64] = {
    {F32Q4(0, 0), F32Q4(0, 4), F32Q4(0, 8), F32Q4(0, 12)},
    {F32Q4(1, 0), F32Q4(1, 4), F32Q4(1, 8), F32Q4(1, 12)},
    {F32Q4(2, 0), F32Q4(2, 4), F32Q4(2, 8), F32Q4(2, 12)},
    {F32Q4(3, 0), F32Q4(3, 4), F32Q4(3, 8), F32Q4(3, 12)},
};
#define HIGH_HALVES 0xCCCCCCCCCCCCCCCCull /* bytes 2 and 3 of every dword */

/* quant_dot_avx2.h's hsum8: t[i] = v[i+4] + v[i], then (t0 + t2) + (t1 + t3). */
static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

int lrun_pex2_gemv_fits(int64_t k) { return k > 0 && k % 64 == 0; }

void lrun_pex2_gemv_avx512(const void *src, const lrun_pex2_layout *lay, int64_t k, int64_t row0, int64_t rows,
                           const float *x, float *y)
{
    if (rows <= 0) return;
    const uint8_t *P = src, *rest = P + lay->rest, *code = P + lay->code;
    pex2_books kb;
    pex2_books_init(&kb, lay);
    const __m512i v_first = _mm512_loadu_si512(first), v_second = _mm512_loadu_si512(second);
    const __m512i f0 = _mm512_loadu_si512(to_f32[0]), f1 = _mm512_loadu_si512(to_f32[1]);
    const __m512i f2 = _mm512_loadu_si512(to_f32[2]), f3 = _mm512_loadu_si512(to_f32[3]);
    const uint64_t e0 = (uint64_t)row0 * (uint64_t)k, e1 = e0 + (uint64_t)rows * (uint64_t)k;
    uint64_t row_end = e0 + (uint64_t)k;
    int64_t r = 0;
    __m512 acc = _mm512_setzero_ps();
    uint32_t xs = lrun_pex2_first_exc(P, lay, e0 / LRUN_PEX2_BLOCK); /* then each block's from the one before */
    const uint8_t *far = P + lay->far + lrun_pex2_first_far(P, lay, e0 / LRUN_PEX2_BLOCK);
    for (uint64_t b = e0 / LRUN_PEX2_BLOCK; b * LRUN_PEX2_BLOCK < e1; b++) {
        uint64_t ex[16];
        xs = pex2_block_exceptions(P, lay, b, xs, ex);
        for (unsigned q = 0; q < 16; q++) {
            const uint64_t e = b * LRUN_PEX2_BLOCK + 64 * q;
            if (e >= e1) break;
            __m512i o, h;
            const __mmask64 k7 = pex2_chunk(&kb, code, rest, e, ex[q], &o, &h);
            if (e < e0) { /* before the range: only its far bytes, to keep far in step */
                far += __builtin_popcountll(k7);
                continue;
            }
            __m512 w0, w1, w2, w3;
            if (!k7) {
                w0 = _mm512_castsi512_ps(_mm512_maskz_permutex2var_epi8(HIGH_HALVES, o, f0, h));
                w1 = _mm512_castsi512_ps(_mm512_maskz_permutex2var_epi8(HIGH_HALVES, o, f1, h));
                w2 = _mm512_castsi512_ps(_mm512_maskz_permutex2var_epi8(HIGH_HALVES, o, f2, h));
                w3 = _mm512_castsi512_ps(_mm512_maskz_permutex2var_epi8(HIGH_HALVES, o, f3, h));
            } else { /* a far exponent: the chunk's bf16 written out, patched in element order, read back */
                uint16_t d[64];
                _mm512_storeu_si512(d, _mm512_permutex2var_epi8(o, v_first, h));
                _mm512_storeu_si512(d + 32, _mm512_permutex2var_epi8(o, v_second, h));
                for (__mmask64 m = k7; m; m &= m - 1) {
                    const unsigned i = (unsigned)__builtin_ctzll(m);
                    d[i] = (uint16_t)((d[i] & 0x807fu) | (unsigned)*far++ << 7);
                }
                __m512 *w[4] = {&w0, &w1, &w2, &w3};
                for (int j = 0; j < 4; j++)
                    *w[j] = _mm512_castsi512_ps(
                        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(d + 16 * j))),
                                          16));
            }
            const float *xe = x + (e - (row_end - (uint64_t)k)); /* this row's x at the chunk */
            acc = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xe), acc);
            acc = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xe + 16), acc);
            acc = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xe + 32), acc);
            acc = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xe + 48), acc);
            if (e + 64 == row_end) { /* the row's two chains, summed as the plain dot sums them */
                y[r++] = hsum8(_mm256_add_ps(_mm512_castps512_ps256(acc),
                                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1))));
                acc = _mm512_setzero_ps();
                row_end += (uint64_t)k;
            }
        }
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
int lrun_pex2_gemv_fits(int64_t k)
{
    (void)k;
    return 0;
}
#endif
