/* quant_k_scales.h — the 8 six-bit scales and mins of a Q4_K/Q5_K block
 * (layout: quant.c's q4_K_scale_min), unpacked four at a time from 32-bit
 * words: plain C, shared by the AVX2 (quant_dot_k.c) and AVX-512
 * (quant_dot_avx512.c) kernels so that both read the scales the same way. */
#ifndef LRUN_QUANT_K_SCALES_H
#define LRUN_QUANT_K_SCALES_H

#include <stdint.h>
#include <string.h>

static inline __attribute__((always_inline)) void q4_K_unpack_scales(const uint8_t s[12], uint8_t sc[8], uint8_t m[8])
{
    uint32_t u0, u1, u2, w[4];
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    w[0] = u0 & 0x3f3f3f3fu;                                      /* scales 0..3 */
    w[1] = (u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u);        /* scales 4..7 */
    w[2] = u1 & 0x3f3f3f3fu;                                      /* mins 0..3 */
    w[3] = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u); /* mins 4..7 */
    memcpy(sc, w, 8);
    memcpy(m, w + 2, 8);
}

#endif
