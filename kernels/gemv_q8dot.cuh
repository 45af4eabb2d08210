/* gemv_q8dot.cuh — y = x · Wᵀ for Q4_0 / Q4_1 / Q8_0 weights against
 * activations already quantized by lrun_k_quantize_q8, in the CPU's exact
 * order (lrun_k_q8dot in kernels.h; docs/numerics.md §4-5).
 *
 * Launch shape: 8 threads per weight row, one per lane of the recipe (lane l
 * owns elements 4l..4l+3 of every block and runs its own fma chain over the
 * blocks in order), LRUN_K_Q8DOT_ROWS rows per thread block; grid.x covers
 * the rows of every part, grid.y tiles the activation rows MT at a time, and
 * each thread keeps MT chains so a weight block is read once per tile. The
 * 4-products are dp4a (exact integers); the 8 lanes meet in hsum8 through
 * shuffles within the group of 8. */
#ifndef LRUN_KERNELS_GEMV_Q8DOT_CUH
#define LRUN_KERNELS_GEMV_Q8DOT_CUH

#include "exact_math.cuh"

#define LRUN_K_Q8DOT_ROWS 16

#endif
