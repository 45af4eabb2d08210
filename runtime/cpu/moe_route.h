/* moe_route.h — a mixture of experts' routing of one token, as llama.cpp's
 * build_moe_ffn computes it with softmax gating and normalised weights
 * (docs/moe.md): shared by the CPU forward (moe_cpu.c) and the CUDA one,
 * which routes on the host from the device's router logits. */
#ifndef LRUN_MOE_ROUTE_H
#define LRUN_MOE_ROUTE_H

#include <stdint.h>

#include "lrun.h"

/* p (n_expert): the token's router logits, turned in place into
 * softmax(p) (lrun_cpu_softmax); ids (k) = the k most probable experts in
 * descending order, equal probabilities by the lower index first; w (k) =
 * their probabilities over max(their sum, 2^-14), the sum in double. */
void lrun_moe_route(float *p, int64_t n_expert, int64_t k, int32_t *ids, float *w);
/* gpt-oss's routing (llama.cpp's SOFTMAX_WEIGHT gating): l (n_expert) the
 * token's (biased) router logits, left as they are; ids (k) = the k largest
 * logits in descending order, equal ones by the lower index first; w (k) =
 * softmax of those k logits (lrun_cpu_softmax). */
void lrun_moe_route_oai(float *l, int64_t n_expert, int64_t k, int32_t *ids, float *w);

/* How often each expert was chosen, per block, since the engine was made
 * or its stats reset: both backends count where they route (host code), so
 * m:stats().experts reads the same table on either. */
typedef struct lrun_moe_counts {
    int64_t n_layer, n_expert;
    int64_t *counts; /* (n_layer, n_expert) selections: tokens that chose expert x in block l */
    int64_t *tokens; /* (n_layer) tokens routed through block l's router */
} lrun_moe_counts;

/* Zeroed tables for n_layer blocks of n_expert experts (nothing when n_expert is 0). */
lrun_status lrun_moe_counts_init(lrun_moe_counts *c, int64_t n_layer, int64_t n_expert);
void lrun_moe_counts_free(lrun_moe_counts *c);
void lrun_moe_counts_reset(lrun_moe_counts *c);
/* Adds a chunk of n tokens routed in block layer, from its grouping: expert
 * x was chosen first[x + 1] - first[x] times (first: n_expert + 1 offsets). */
void lrun_moe_counts_add(lrun_moe_counts *c, int64_t layer, const int64_t *first, int64_t n);

#endif
