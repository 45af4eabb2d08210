/* attention_flash.cuh — prefill attention on tensor cores
 * (lrun_k_attention_flash in kernels.h), FlashAttention-2 style.
 *
 * A block of W warps (LRUN_K_FATTN_WARPS) owns 16·W consecutive query
 * tokens of one head (16 rows a warp) and walks their KV range in
 * tiles of LRUN_K_FATTN_BN positions:
 *   load     K and V tiles (BN, head_dim) f16 into shared memory with
 *            cp.async, rows padded by 8 halves (ldmatrix is then free of
 *            bank conflicts); K of the next tile loads during this tile's
 *            softmax and P·V, V of this tile during S = Q·Kᵀ;
 *   S = Q·Kᵀ mma.sync m16n8k16 f16 → f32, q converted to f16 once per block
 *            (times scale·log2 e, so the softmax runs in exp2);
 *   softmax  online, per row in registers: running max m and sum l, earlier
 *            sums rescaled by 2^(m - m'); each token's own range
 *            [n_kv - n_swa, n_kv) masks its row (causal from the length);
 *   O += P·V P rounded to f16 in registers (the S accumulators are already
 *            in the A-operand layout), V through ldmatrix.trans.
 * No score matrix is materialized. Tokens of several sequences in one chunk:
 * the block's rows are cut into runs of equal (k_base, v_base) and each run
 * walks its own sequence's range with the other rows masked, so K/V tiles
 * are shared by all rows of a run. A warp whose rows see none of a tile
 * skips its MMAs (the diagonal of a causal prefill).
 *
 * Scope: f16 cache, head_dim 64 or 128, no soft-cap, no sinks (the engine
 * routes those to lrun_k_attention_*). Rows whose k_base or v_base is not a
 * multiple of 8 elements (16 bytes) load their tiles with plain loads. */
#ifndef LRUN_KERNELS_ATTENTION_FLASH_CUH
#define LRUN_KERNELS_ATTENTION_FLASH_CUH

#include "common.cuh"

/* Warps of a block (16 query rows each): 4 by default, 241 registers a
 * thread at head_dim 128, two blocks per SM; 8 (128 rows, one block per SM)
 * halves the K/V bytes per FLOP. lrun_k_attention_flash_tune picks either
 * for measurements (test_attention_flash_gpu --bench). */
#define LRUN_K_FATTN_WARPS LRUN_K_FATTN_DEFAULT_WARPS /* kernels.h */
#define LRUN_K_FATTN_BN 64                            /* KV positions per tile */
#define LRUN_K_FATTN_PAD 8                            /* halves after each shared row */

#endif
