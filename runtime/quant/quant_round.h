/* quant_round.h — the float-to-integer conversions of the quantizers,
 * defined for every float.
 *
 * C leaves (int)f undefined when f is NaN or outside the target's range, and
 * ggml's quantizers cast as they go, so a NaN or infinite weight or
 * activation was undefined behaviour there and here (issue #16). These give
 * the cast's own result wherever the cast is defined (so every finite block
 * quantizes to the same bytes as before and as llama.cpp), lo or hi past the
 * ends, and nan_as for NaN: the code of zero in the symmetric types, the
 * lowest code in the affine ones (docs/reliability.md). */
#ifndef LRUN_QUANT_ROUND_H
#define LRUN_QUANT_ROUND_H

#include <math.h>

/* (int)f, truncating, for f in [lo, hi]; lo below, hi above; nan_as for NaN. */
static inline int lrun_trunc_sat(float f, int lo, int hi, int nan_as)
{
    if (f >= (float)lo && f <= (float)hi) return (int)f;
    if (f != f) return nan_as;
    return f < (float)lo ? lo : hi;
}

/* f rounded to nearest, ties to even (ggml's nearest_int), then as lrun_trunc_sat. */
static inline int lrun_nearest_sat(float f, int lo, int hi, int nan_as)
{
    return lrun_trunc_sat(nearbyintf(f), lo, hi, nan_as);
}

#endif
