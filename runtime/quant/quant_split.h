/* quant_split.h — the split-row layout of Q8_0 and Q4_0 weights, for a
 * decode GEMV that reads its quants with 16-byte loads (the study of
 * docs/gpu.md "q8_0 / q4_0 decode GEMV study"; tests/bench/gemvq_proto.cu).
 * GGUF's blocks are 34 (Q8_0) and 18 (Q4_0) bytes, so a row's quants sit
 * on 2-byte boundaries only; the split layout keeps each row's byte count
 * and moves the scales behind the quants:
 *
 *   one row of k elements, nb = k/32 blocks (row_bytes apart, as GGUF's):
 *     [0, qb)             the blocks' quants in block order: Q8_0 the 32 int8
 *                         of each block (qb = k), Q4_0 the 16 qs bytes of each
 *                         block (qb = k/2; byte j: low nibble element j, high
 *                         nibble element j+16, as GGUF)
 *     [qb, qb + 2·nb)     the blocks' f16 scales d, in block order
 *     [qb + 2·nb, row_bytes)  the stride's padding, copied unchanged
 *
 * The rows start 16-byte aligned whenever GGUF's would fill whole 16-byte
 * units (row_bytes % 16 == 0 and an aligned base); the quants of a row are
 * then 16-byte aligned too, since qb is a multiple of 16. */
#ifndef LRUN_QUANT_SPLIT_H
#define LRUN_QUANT_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "lrun.h"

/* 1 when dtype has a split layout (Q8_0, Q4_0), else 0. */
int lrun_quant_split_supported(lrun_dtype dtype);

/* Byte offset of a split row's scales (qb above) for k elements. */
size_t lrun_quant_split_scales_at(lrun_dtype dtype, int64_t k);

/* dst = the n GGUF rows of src (k elements, rows row_bytes apart) in the
 * split layout, same stride. src == dst converts in place (one row of
 * scratch); otherwise the two must not overlap. LRUN_E_ARG names what is
 * wrong (dtype, k not a multiple of 32, row_bytes below the row's bytes). */
lrun_status lrun_quant_split_rows(lrun_dtype dtype, const void *src, void *dst, size_t row_bytes, int64_t n,
                                  int64_t k);

/* The inverse: split rows back to GGUF's blocks, bit for bit. */
lrun_status lrun_quant_join_rows(lrun_dtype dtype, const void *src, void *dst, size_t row_bytes, int64_t n,
                                 int64_t k);

#endif
