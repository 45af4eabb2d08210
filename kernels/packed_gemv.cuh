/* packed_gemv.cuh — mode 3 of packed weights (docs/packed.md "Mode 3
 * kernels"): products with packed bf16/f16 weights resident on the device,
 * the weight decoded on chip and never written to global memory.
 *
 * lrun_k_packed_gemv_multi: a block owns rb consecutive rows of one weight
 * (of two for a gate/up pair). Its warps first decode the codec blocks that
 * cover those rows into a shared-memory tile of plain 16-bit values, one
 * codec block of 1024 elements per warp at a time (packed_gemv_lane.h: two
 * warp prefix sums, tier-2 codes staged in shared memory, exponents picked
 * by byte permutes); then its threads run lrun_k_gemv_multi's arithmetic on
 * the tile, unit for unit and in the same order (thread t takes the 8-element
 * units t, t + NT, ... of each row, NT = lrun_k_gemv_shape's), and the same
 * reductions and epilogues: y is bit-identical to lrun_k_gemv_multi on the
 * decoded weights. The decode reads only weights, so under programmatic
 * dependent launch it overlaps the previous kernel; the wait comes before x.
 *
 * lrun_k_packed_decode_rows: the same decode, one warp per codec block,
 * into global memory (the weight slot of a prefill GEMM). */
#ifndef LRUN_KERNELS_PACKED_GEMV_CUH
#define LRUN_KERNELS_PACKED_GEMV_CUH

#include "gemv.cuh"

#define LRUN_K_PG_BLOCK 1024 /* LRUN_PACKED_BLOCK */
/* a warp's staging of a codec block's variable streams in shared memory
 * (packed_gemv_lane.h's PG_STAGE*): the 4-byte words holding its tier-2
 * codes (at most 384 bytes, 97 words) and two zero words, then its first
 * tier-3 bytes (the rest, rare, are read from global memory) */
#define LRUN_K_PG_STAGE2 400
#define LRUN_K_PG_STAGE3 128
#define LRUN_K_PG_STAGE (LRUN_K_PG_STAGE2 + LRUN_K_PG_STAGE3)
#define LRUN_K_PG_MAX_RB 8           /* rows per block at most (PG_MAX_RB) */
#define LRUN_K_PG_DECODE_THREADS 256 /* lrun_k_packed_decode_rows: 8 warps, a codec block each */

#endif
