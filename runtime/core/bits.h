/* bits.h — a float's bit pattern and back, without breaking aliasing rules. */
#ifndef LRUN_BITS_H
#define LRUN_BITS_H

#include <stdint.h>
#include <string.h>

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
