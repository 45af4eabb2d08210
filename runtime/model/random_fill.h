/* random_fill.h — the generator's value streams beyond lrun_random_fill (lrun.h). */
#ifndef LRUN_RANDOM_FILL_H
#define LRUN_RANDOM_FILL_H

#include "lrun.h"

/* Fills dst with n elements of dtype shaped like trained weights (synthetic):
 * normal with deviation std, about one element in 1024 an outlier 8..15 std
 * times larger; counter-based like lrun_random_fill (any range, any thread,
 * same bytes). first and n must be whole blocks. */
lrun_status lrun_random_fill_trained(lrun_dtype dtype, void *dst, int64_t first, int64_t n, float std, uint64_t seed);

#endif
