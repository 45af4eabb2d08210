/* emu_bytes.h — what the host replays of the GEMV kernels (test_gemv_dp4a_emu,
 * test_gemv_stage_emu) read from a weight row as the kernels do: little-endian
 * 32- and 16-bit words at byte addresses, and an f16 scale widened by
 * lrun_dequantize_row (the runtime's own conversion). */
#ifndef LRUN_TEST_EMU_BYTES_H
#define LRUN_TEST_EMU_BYTES_H

#include <stdint.h>

#include "quant/quant.h"

static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }

static inline float f16(uint32_t h)
{
    float out;
    const uint16_t v = (uint16_t)h;
    lrun_dequantize_row(LRUN_DTYPE_F16, &v, &out, 1);
    return out;
}

#endif
