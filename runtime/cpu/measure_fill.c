/* measure_fill.c — the contents of the host measurements' synthetic weights.
 *
 * A zeroed (or constant) 1 GiB weight read at 230-290 GB/s on the H100
 * machine's 16-core VM where the model's own bf16 matrices, and the
 * engine's host products, read at 60-78 GB/s (session 19): memory whose
 * pages are all alike is not read from DRAM as a model's is, so a zeroed
 * weight measured a cache, and smart planned a 4 GiB hybrid for 26-34
 * tok/s that ran 7-12. Every 16-bit word here differs from page to page,
 * and is a normal number in f16 and bf16 (and makes normal f32 high
 * halves), so block scales are finite and no float kernel meets a
 * subnormal: the kernels' speed is the one they have on real weights. */
#include "cpu/measure.h"

#include <stdint.h>
#include <string.h>

void lrun_measure_fill(void *p, size_t bytes, uint64_t seed)
{
    uint64_t s = seed ? seed : 0x9e3779b97f4a7c15ull;
    unsigned char *b = p;
    size_t at = 0;
    for (; at + 8 <= bytes; at += 8) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64 */
        /* four words of 0x3800 | 10 random bits: f16 exponent 14, bf16 exponent 112..119 */
        const uint64_t w = (s & 0x03ff03ff03ff03ffull) | 0x3800380038003800ull;
        memcpy(b + at, &w, 8);
    }
    for (; at < bytes; at++) b[at] = 0x38;
}
