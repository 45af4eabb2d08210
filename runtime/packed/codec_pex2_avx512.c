/* codec_pex2_avx512.c — PEX2's ordinary elements decoded 64 at a time with
 * AVX-512 VBMI (the exceptions are patched after, by lrun_pex2_decode_range).
 *
 * Host compute of a packed weight decodes it tile by tile just before its
 * product (cpu_matmul_packed.c), so the decode must run well above the
 * product's rate for packing to pay where DRAM bounds the product: AVX2's
 * two lanes at a time (codec_pex2_avx2.c) decoded 12 GB/s of bf16 a thread
 * from L2 on the build machine's Zen 4, where the bf16 GEMV reads 31.
 * Here eight lanes of 8 take one 24-byte load: a byte permute gives each
 * 64-bit lane its 3 code bytes, a multishift puts element j's code in the
 * low bits of byte j, and byte permutes of a 64-entry table (the 8
 * exponents repeated, so the bits above the code need no mask) give each
 * element its exponent's high 7 and low 1 bits. Two ternary-logic ops join
 * them with the sign and mantissa, two two-source permutes interleave the
 * bf16 halves. The same bits as the scalar loop: tests/c/test_packed_pex2.c
 * compares every level on every range.
 *
 * Compiled for every x86-64 build with target attributes (as
 * quant_dot_avx512.c), chosen at run time where the CPU has AVX-512 F, BW
 * and VBMI and the host kernel level (LRUN_CPU_ISA) is avx512. */
#include "packed/codec_pex2.h"
#include "quant/quant_dot.h"

#include <string.h>

#if defined(LRUN_HAVE_AVX512)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vbmi"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vbmi")
#endif

int lrun_pex2_avx512_supported(void)
{
    static int known = -1; /* decided once, as the ISA level */
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vbmi");
    }
    return known;
}

#include "packed/pex2_avx512_tables.h"

void lrun_pex2_lanes_avx512(uint16_t *dst, const uint8_t *rest, const uint8_t *code, const uint16_t hi[8],
                            uint64_t n_lanes)
{
    uint64_t book = 0; /* book1[c] = hi[c] >> 7 in byte c */
    for (int c = 0; c < 8; c++) book |= (uint64_t)(hi[c] >> 7) << (8 * c);
    __m512i v_ehi, v_elo;
    book_tables(book, &v_ehi, &v_elo);
    const __m512i v_spread = _mm512_loadu_si512(spread), v_shift = _mm512_loadu_si512(shift);
    const __m512i v_first = _mm512_loadu_si512(first), v_second = _mm512_loadu_si512(second);
    const __m512i sign = _mm512_set1_epi8((char)0x80), mant = _mm512_set1_epi8(0x7f);
    uint64_t l = 0;
    for (; l + 8 <= n_lanes; l += 8) {
        const __m512i c24 = _mm512_maskz_loadu_epi8(0xFFFFFFull, code + 3 * l);
        const __m512i codes = _mm512_multishift_epi64_epi8(v_shift, _mm512_permutexvar_epi8(v_spread, c24));
        const __m512i r = _mm512_loadu_si512(rest + 8 * l);
        /* (r & sign) | exponent >> 1, and (r & mant) | exponent's low bit << 7: 0xEA is (A & B) | C */
        const __m512i h = _mm512_ternarylogic_epi32(r, sign, _mm512_permutexvar_epi8(codes, v_ehi), 0xEA);
        const __m512i o = _mm512_ternarylogic_epi32(r, mant, _mm512_permutexvar_epi8(codes, v_elo), 0xEA);
        _mm512_storeu_si512(dst + 8 * l, _mm512_permutex2var_epi8(o, v_first, h));
        _mm512_storeu_si512(dst + 8 * l + 32, _mm512_permutex2var_epi8(o, v_second, h));
    }
    if (l < n_lanes) lrun_pex2_lanes_scalar(dst + 8 * l, rest + 8 * l, code + 3 * l, hi, n_lanes - l);
}

void lrun_pex2_blocks_avx512(uint16_t *dst, const void *src, const lrun_pex2_layout *lay, uint64_t b0, uint64_t b1)
{
    const uint8_t *P = src, *rest = P + lay->rest, *code = P + lay->code;
    pex2_books k;
    pex2_books_init(&k, lay);
    const __m512i v_first = _mm512_loadu_si512(first), v_second = _mm512_loadu_si512(second);
    uint32_t x = lrun_pex2_first_exc(P, lay, b0); /* then each block's from the one before */
    const uint8_t *far = P + lay->far + lrun_pex2_first_far(P, lay, b0);
    for (uint64_t b = b0; b < b1; b++) {
        uint64_t ex[16];
        x = pex2_block_exceptions(P, lay, b, x, ex);
        uint16_t *out = dst + (b - b0) * LRUN_PEX2_BLOCK;
        for (unsigned q = 0; q < 16; q++) {
            __m512i o, h;
            __mmask64 k7 = pex2_chunk(&k, code, rest, b * LRUN_PEX2_BLOCK + 64 * q, ex[q], &o, &h);
            uint16_t *d = out + 64 * q;
            _mm512_storeu_si512(d, _mm512_permutex2var_epi8(o, v_first, h));
            _mm512_storeu_si512(d + 32, _mm512_permutex2var_epi8(o, v_second, h));
            for (; k7; k7 &= k7 - 1) { /* code 7: the next far byte, in element order as the encoder wrote them */
                const unsigned i = (unsigned)__builtin_ctzll(k7);
                d[i] = (uint16_t)((d[i] & 0x807fu) | (unsigned)*far++ << 7);
            }
        }
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
