/* codec_pex2_avx2.c — PEX2's ordinary elements decoded 16 at a time with
 * AVX2 (the exceptions are patched after, by lrun_pex2_decode_range).
 *
 * The scalar lane loop ran at about 1 GB/s of bf16 a thread (15.6 GB/s on
 * the H100 machine's 16 cores, session 19), which made host compute of a
 * packed weight cost more than its product. Here two lanes of 8 take one
 * 24-bit load each, the eight 3-bit codes come out of one variable shift
 * and the codebook's exponents out of one permute, as the GPU lane does
 * (kernels/packed_pex2_lane.h). The same bits as the scalar loop:
 * tests/c/test_packed_pex2.c compares the two levels on every range.
 * Compiled where the build targets AVX2 (LRUN_HAVE_AVX2, as the dot
 * kernels); chosen by the host kernel level (LRUN_CPU_ISA). */
#include "packed/codec_pex2.h"
#include "quant/quant_dot.h"

#if defined(LRUN_HAVE_AVX2)
#include <immintrin.h>

void lrun_pex2_lanes_avx2(uint16_t *dst, const uint8_t *rest, const uint8_t *code, const uint16_t hi[8],
                          uint64_t n_lanes)
{
    const __m256i table = _mm256_setr_epi32(hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7]);
    const __m256i shifts = _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21);
    const __m256i seven = _mm256_set1_epi32(7), sign = _mm256_set1_epi32(0x80), mant = _mm256_set1_epi32(0x7f);
    uint64_t l = 0;
    for (; l + 2 <= n_lanes; l += 2) {
        const uint8_t *c3 = code + 3 * l;
        const uint32_t w0 = c3[0] | (uint32_t)c3[1] << 8 | (uint32_t)c3[2] << 16;
        const uint32_t w1 = c3[3] | (uint32_t)c3[4] << 8 | (uint32_t)c3[5] << 16;
        const __m256i h0 =
            _mm256_permutevar8x32_epi32(table, _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w0), shifts),
                                                                seven));
        const __m256i h1 =
            _mm256_permutevar8x32_epi32(table, _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w1), shifts),
                                                                seven));
        const __m256i r0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(rest + 8 * l)));
        const __m256i r1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(rest + 8 * l + 8)));
        const __m256i v0 = _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(r0, sign), 8), h0),
                                           _mm256_and_si256(r0, mant));
        const __m256i v1 = _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(r1, sign), 8), h1),
                                           _mm256_and_si256(r1, mant));
        /* packus takes 4 of each per 128-bit half: the permute puts lane 0's 8 before lane 1's */
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(v0, v1), 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + 8 * l), p);
    }
    if (l < n_lanes) lrun_pex2_lanes_scalar(dst + 8 * l, rest + 8 * l, code + 3 * l, hi, n_lanes - l);
}
#endif
