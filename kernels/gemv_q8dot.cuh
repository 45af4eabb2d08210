/* gemv_q8dot.cuh — y = x · Wᵀ for Q4_0 / Q4_1 / Q8_0 weights against
 * activations already quantized by lrun_k_quantize_q8, in the CPU's exact
 * order (lrun_k_q8dot in kernels.h; docs/numerics.md §4-5).
 *
 * Launch shape: one warp per weight row, LRUN_K_Q8DOT_WARPS rows per thread
 * block; grid.x covers the rows of every part, grid.y tiles the activation
 * rows MT (1, 2, 4 or 8) at a time. Per chunk of 32 blocks each thread loads
 * one whole block (the warp reads the row contiguously: coalesced) and
 * computes its 8 exact lane sums (dp4a) and dd per token into shared memory;
 * then the recipe's chains (lane l of token j: acc = fma(dd, lane, acc) over
 * the blocks in order) run from shared memory, one per thread, and meet in
 * hsum8 through shuffles within groups of 8. Integer sums and products are
 * exact, so only the chains' order matters, and it is the CPU's. */
#ifndef LRUN_KERNELS_GEMV_Q8DOT_CUH
#define LRUN_KERNELS_GEMV_Q8DOT_CUH

#include "exact_math.cuh"

#define LRUN_K_Q8DOT_WARPS 4

#endif
