/* engine_cuda_moe_exact.h — a mixture of experts on the CUDA engine's exact
 * path (engine_cuda_moe_exact.c, docs/moe.md "Exact numerics on CUDA"):
 * the CPU engine's bits for the router, each chosen expert and their
 * weighted sum. engine_cuda_moe.c routes on the host and walks the experts
 * where the placement put them; this file owns the products and the sum.
 * Internal to runtime/cuda/. */
#ifndef LRUN_ENGINE_CUDA_MOE_EXACT_H
#define LRUN_ENGINE_CUDA_MOE_EXACT_H

#include "cuda/engine_cuda_internal.h"

struct cuda_moe_exact;

/* Why the exact path cannot take this model's experts (a sentence naming
 * the requirement), or NULL when it can (or the model has none). */
const char *lrun_cuda_moe_exact_refusal(const lrun_cuda_engine *e);
/* Device bytes of the state below (0 for a dense model or the fast path). */
size_t lrun_cuda_moe_exact_bytes(const lrun_cuda_engine *e);
/* The state when e->exact is set and the model has experts; *out NULL otherwise. */
lrun_status lrun_cuda_moe_exact_init(lrun_cuda_engine *e, struct cuda_moe_exact **out);
void lrun_cuda_moe_exact_free(lrun_cuda_engine *e, struct cuda_moe_exact *x);

/* logits (n, n_expert) on the device = xn · Wrᵀ as the CPU computes it:
 * float routers through lrun_k_moe_router_exact, Q4_0/Q4_1/Q8_0 ones and
 * host-computed ones through lrun_cuda_exact_matmul. */
lrun_status lrun_cuda_moe_exact_router(lrun_cuda_engine *e, const lrun_weight_ref *r, int64_t n, float *logits);
/* The chunk's pair tables to the device: pairs (n·k) token·k + slot grouped
 * by expert, w (n·k) each pair's weight by token·k + slot. */
lrun_status lrun_cuda_moe_exact_pairs(lrun_cuda_engine *e, struct cuda_moe_exact *x, const int32_t *pairs,
                                      const float *w, int64_t n, int64_t k);
/* One expert over its grouped pairs [at, at + cnt): its tokens' xn rows
 * gathered into rows (cnt, n_embd), gate and up (s[0], s[1]: the expert's
 * slices where this chunk reads them), SwiGLU, down (s[2]) into its rows of
 * the chunk's outputs: all lrun_cuda_exact_matmul and lrun_k_swiglu_exact. */
lrun_status lrun_cuda_moe_exact_expert(lrun_cuda_engine *e, struct cuda_moe_exact *x, const lrun_weight_ref s[3],
                                       float *rows, int64_t at, int64_t cnt);
/* x (n, n_embd) += each token's weighted outputs, summed in slot order. */
lrun_status lrun_cuda_moe_exact_combine(lrun_cuda_engine *e, struct cuda_moe_exact *x, int64_t n, int64_t k);

#endif
