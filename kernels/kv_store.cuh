/* kv_store.cuh — writes new K and V rows into the caches (lrun_k_kv_store):
 * one element per thread over (n_tok, kv_dim), grid-stride in 64-bit. */
#ifndef LRUN_KERNELS_KV_STORE_CUH
#define LRUN_KERNELS_KV_STORE_CUH

#include "common.cuh"

#define LRUN_K_KV_STORE_THREADS 256

#endif
