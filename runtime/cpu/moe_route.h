/* moe_route.h — a mixture of experts' routing of one token, as llama.cpp's
 * build_moe_ffn computes it with softmax gating and normalised weights
 * (docs/moe.md): shared by the CPU forward (moe_cpu.c) and the CUDA one,
 * which routes on the host from the device's router logits. */
#ifndef LRUN_MOE_ROUTE_H
#define LRUN_MOE_ROUTE_H

#include <stdint.h>

/* p (n_expert): the token's router logits, turned in place into
 * softmax(p) (lrun_cpu_softmax); ids (k) = the k most probable experts in
 * descending order, equal probabilities by the lower index first; w (k) =
 * their probabilities over max(their sum, 2^-14), the sum in double. */
void lrun_moe_route(float *p, int64_t n_expert, int64_t k, int32_t *ids, float *w);

#endif
