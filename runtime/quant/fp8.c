/* fp8.c — see fp8.h. */
#include "quant/fp8.h"

#include <math.h>

float lrun_fp8_e4m3_to_f32(uint8_t b)
{
    const int sign = b >> 7, e = (b >> 3) & 0xf, m = b & 7;
    if (e == 0xf && m == 7) return NAN;
    const float v = e == 0 ? ldexpf((float)m / 8.0f, -6) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return sign ? -v : v;
}
