/* quant_split.c — GGUF Q8_0/Q4_0 rows to and from the split-row layout
 * (quant_split.h). */
#include "quant/quant_split.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* bytes of one block (2-byte scale first) and of its quants */
static int split_block(lrun_dtype dtype, size_t *block, size_t *quants)
{
    switch (dtype) {
    case LRUN_DTYPE_Q8_0: *block = 34, *quants = 32; return 1;
    case LRUN_DTYPE_Q4_0: *block = 18, *quants = 16; return 1;
    default: return 0;
    }
}

int lrun_quant_split_supported(lrun_dtype dtype)
{
    size_t b, q;
    return split_block(dtype, &b, &q);
}

size_t lrun_quant_split_scales_at(lrun_dtype dtype, int64_t k)
{
    size_t b, q;
    if (!split_block(dtype, &b, &q) || k < 0) return 0;
    return (size_t)(k / 32) * q;
}

/* one row: join = 0 GGUF (src) to split (dst), 1 the reverse; src != dst */
static void split_row(const uint8_t *src, uint8_t *dst, int64_t nb, size_t block, size_t quants, int join)
{
    const size_t qb = (size_t)nb * quants;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *g = join ? NULL : src + (size_t)b * block;
        uint8_t *gd = join ? dst + (size_t)b * block : NULL;
        if (!join) {
            memcpy(dst + qb + 2 * (size_t)b, g, 2);
            memcpy(dst + (size_t)b * quants, g + 2, quants);
        } else {
            memcpy(gd, src + qb + 2 * (size_t)b, 2);
            memcpy(gd + 2, src + (size_t)b * quants, quants);
        }
    }
}

static lrun_status split_rows(const char *op, lrun_dtype dtype, const void *src, void *dst, size_t row_bytes,
                              int64_t n, int64_t k, int join)
{
    size_t block, quants;
    if (!split_block(dtype, &block, &quants))
        return lrun_fail(LRUN_E_ARG, "%s: dtype %s has no split layout (Q8_0, Q4_0 only)", op,
                         lrun_dtype_name(dtype));
    if (!src || !dst) return lrun_fail(LRUN_E_ARG, "%s: src or dst is NULL", op);
    if (n < 0 || k <= 0 || k % 32 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: n %lld, k %lld (k a positive multiple of 32)", op, (long long)n,
                         (long long)k);
    const int64_t nb = k / 32;
    const size_t used = (size_t)nb * block;
    if (row_bytes < used)
        return lrun_fail(LRUN_E_ARG, "%s: row_bytes %zu below the %zu bytes of a %s row of %lld", op, row_bytes, used,
                         lrun_dtype_name(dtype), (long long)k);
    const uint8_t *s = src;
    uint8_t *d = dst;
    if (s != d && s < d + (size_t)n * row_bytes && d < s + (size_t)n * row_bytes)
        return lrun_fail(LRUN_E_ARG, "%s: src and dst overlap without being the same rows", op);
    uint8_t *tmp = NULL;
    if (s == d && n > 0 && !(tmp = malloc(used))) return lrun_fail_oom(used, 0, "%s: a row of scratch", op);
    for (int64_t r = 0; r < n; r++) {
        const uint8_t *sr = s + (size_t)r * row_bytes;
        uint8_t *dr = d + (size_t)r * row_bytes;
        if (tmp) {
            memcpy(tmp, sr, used);
            sr = tmp;
        } else {
            memcpy(dr + used, sr + used, row_bytes - used); /* the stride's padding */
        }
        split_row(sr, dr, nb, block, quants, join);
    }
    free(tmp);
    return LRUN_OK;
}

lrun_status lrun_quant_split_rows(lrun_dtype dtype, const void *src, void *dst, size_t row_bytes, int64_t n,
                                  int64_t k)
{
    return split_rows("lrun_quant_split_rows", dtype, src, dst, row_bytes, n, k, 0);
}

lrun_status lrun_quant_join_rows(lrun_dtype dtype, const void *src, void *dst, size_t row_bytes, int64_t n, int64_t k)
{
    return split_rows("lrun_quant_join_rows", dtype, src, dst, row_bytes, n, k, 1);
}
