/* topk.cuh — the k largest logits of each row, sorted (lrun_k_topk): one block
 * of LRUN_K_TOPK_THREADS threads per row, grid-stride over rows, no scratch
 * outside shared memory.
 *   1. radix select: 4 passes of 8 bits over order-preserving u32 keys of the
 *      floats, each a 256-bin shared histogram of the keys that still match
 *      the prefix, find the key T of the k-th largest logit;
 *   2. gather in index order (warp ballots and a per-chunk scan): every key
 *      above T, then the first (lowest-index) keys equal to T until k;
 *   3. bitonic sort of the 256 candidate slots in shared memory.
 * The row is read 5 times (from L2 after the first). */
#ifndef LRUN_KERNELS_TOPK_CUH
#define LRUN_KERNELS_TOPK_CUH

#include "common.cuh"

#define LRUN_K_TOPK_THREADS 1024
#define LRUN_K_TOPK_MAX 256

#endif
