/* rope_scaling.h — RoPE scalings that arrive as per-dimension frequency
 * factors (GGUF's rope_freqs.weight, divisors of theta_i). */
#ifndef LRUN_ROPE_SCALING_H
#define LRUN_ROPE_SCALING_H

#include <stdint.h>

/* Llama 3.1's rope_scaling (rope_type "llama3") as llama.cpp's converter
 * turns it into rope_freqs.weight, in f32 as it computes them: for
 * freq_i = base^(-2i/n_rot) and wavelen_i = 2π / freq_i,
 *   factor_i = 1                              wavelen_i < orig_ctx / high
 *            = factor                         wavelen_i > orig_ctx / low
 *            = 1 / ((1 - s) / factor + s)     between, s = (orig_ctx / wavelen_i - low) / (high - low).
 * out (n_rot / 2). Llama 3.1: factor 8, low 1, high 4, orig_ctx 8192. */
void lrun_rope_llama3_factors(float *out, int64_t n_rot, double base, double factor, double low, double high,
                              double orig_ctx);

#endif
