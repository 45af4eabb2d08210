/* engine_cuda_moe_host.h — a block's host-computed experts for a decode
 * chunk in one host pass (engine_cuda_moe_host.c, docs/moe.md "One host
 * pass per block"). Internal to runtime/cuda/. */
#ifndef LRUN_ENGINE_CUDA_MOE_HOST_H
#define LRUN_ENGINE_CUDA_MOE_HOST_H

#include "cuda/engine_cuda_internal.h"

struct cuda_moe_host;

/* The pass's host rows (GEMV_MAX_ROWS tokens), unless LRUN_CUDA_MOE_HOST_PASS=0
 * turns it off; *out NULL then (the experts go product by product). */
lrun_status lrun_cuda_moe_host_init(lrun_cuda_engine *e, struct cuda_moe_host **out);
void lrun_cuda_moe_host_free(struct cuda_moe_host *h);
/* Whether a chunk of n tokens of the block whose expert tensors are g takes
 * the pass: h made, n <= GEMV_MAX_ROWS, all three computed on the host,
 * plain (not packed), experts no wider than the model's n_ff, and the
 * engine's host buffers wide enough. */
int lrun_cuda_moe_host_takes(const lrun_cuda_engine *e, const struct cuda_moe_host *h, const lrun_weight_ref g[3],
                             int64_t n);
/* The chunk's experts on the host, in two halves around the caller's own
 * stream sync (the router's: the logits and the rows come down together,
 * one sync a block): fetch queues e->xn's n rows' copy down; compute, once
 * the stream has synced after the fetch, runs each expert with pairs
 * (first[x] .. first[x+1] of pairs, grouped by expert; an expert x with
 * first[x + 1] == first[x] is skipped; a pair is token·k + slot, its
 * weight w[pair]: all the chunk's pairs, or the hybrid cache's misses)
 * through gate, up, SwiGLU and down with lrun_cpu_matmul, weighted into the
 * host sum in pair order, and queues the sum's copy up into e->tmp (n
 * rows); the caller adds it to x. */
lrun_status lrun_cuda_moe_host_fetch(lrun_cuda_engine *e, int64_t n);
lrun_status lrun_cuda_moe_host_compute(lrun_cuda_engine *e, struct cuda_moe_host *h, const lrun_weight_ref g[3],
                                       int64_t n, const int32_t *pairs, const int64_t *first, const float *w);

#endif
