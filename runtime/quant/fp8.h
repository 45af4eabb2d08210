/* fp8.h — the 8-bit float weights of FP8 checkpoints (safetensors F8_E4M3,
 * torch.float8_e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no
 * infinities, S.1111.111 is NaN, so the largest finite value is 448.
 * lrun does not compute in FP8: a loader widens such a weight, times its
 * scales, to bf16 once (runtime/model/model_hf.c). */
#ifndef LRUN_FP8_H
#define LRUN_FP8_H

#include <stdint.h>

/* The value of an E4M3FN byte. */
float lrun_fp8_e4m3_to_f32(uint8_t b);

#endif
