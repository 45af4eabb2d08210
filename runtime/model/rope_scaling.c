/* rope_scaling.c — per-dimension RoPE frequency factors (rope_scaling.h). */
#include "model/rope_scaling.h"

#include <math.h>

void lrun_rope_llama3_factors(float *out, int64_t n_rot, double base, double factor, double low, double high,
                              double orig_ctx)
{
    /* torch f32, as convert_hf_to_gguf.py: freqs = 1 / base^(arange(0, dim, 2) / dim) */
    const float f = (float)factor, lo = (float)low, hi = (float)high, ctx = (float)orig_ctx;
    const float low_wavelen = ctx / lo, high_wavelen = ctx / hi;
    for (int64_t i = 0; i < n_rot / 2; i++) {
        const float freq = 1.0f / powf((float)base, (float)(2 * i) / (float)n_rot);
        const float wavelen = (float)(2.0 * M_PI) / freq;
        if (wavelen < high_wavelen) out[i] = 1.0f;
        else if (wavelen > low_wavelen) out[i] = f;
        else {
            const float s = (ctx / wavelen - lo) / (hi - lo);
            out[i] = 1.0f / ((1.0f - s) / f + s);
        }
    }
}
