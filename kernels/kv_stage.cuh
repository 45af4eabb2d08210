/* kv_stage.cuh — the staged KV caches' kernels (lrun_k_kv_copy_rows,
 * lrun_k_kv_quant_store, lrun_k_kv_dequant_fill, lrun_k_fill_uniform):
 * copies and quantization rows between a device slot and a store. */
#ifndef LRUN_KERNELS_KV_STAGE_CUH
#define LRUN_KERNELS_KV_STAGE_CUH

#include "common.cuh"

#define LRUN_K_KV_STAGE_THREADS 256
/* one warp per (token, keys|values, group) when quantizing */
#define LRUN_K_KV_QUANT_WARPS 8

#endif
