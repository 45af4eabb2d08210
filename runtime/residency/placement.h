/* placement.h — a proposed placement as the engines' layout code reads it.
 *
 * lrun_engine_size_placement (lrun.h) sizes an AS_PLACED engine for a
 * placement that is only proposed: the weights have not moved. The layout
 * code both engines run at init (weight_ring.c on the CPU,
 * engine_cuda_offload.c on CUDA) therefore asks this record, not the
 * tensors, where a weight is: at init the record is NULL and the tensors'
 * own tiers and host-compute flags answer; when sizing, the arrays do. */
#ifndef LRUN_PLACEMENT_H
#define LRUN_PLACEMENT_H

#include "lrun.h"
#include "model/model.h"

typedef struct lrun_placement {
    const lrun_model *model;
    const lrun_tier *tier;       /* (n_tensors) indexed like model->tensors; NULL: each tensor's own tier */
    const int8_t *host_compute;  /* (n_tensors) the same; NULL: each tensor's own flag */
    const int8_t *packed;        /* (n_tensors) the same: 1 packed form; NULL: each tensor's own form */
} lrun_placement;

/* The tier of t. With arrays, t must be one of p->model->tensors (the
 * records the model's layer pointers, output and tok_embd point to): its
 * index there is its index in the arrays. */
static inline lrun_tier lrun_placement_tier(const lrun_placement *p, const struct lrun_tensor *t)
{
    return p && p->tier ? p->tier[t - p->model->tensors] : t->tier;
}

/* 1 when t is off the device and computed on the host where it lives. */
static inline int lrun_placement_host_compute(const lrun_placement *p, const struct lrun_tensor *t)
{
    if (lrun_placement_tier(p, t) == LRUN_TIER_DEVICE) return 0;
    return p && p->host_compute ? p->host_compute[t - p->model->tensors] != 0 : t->host_compute != 0;
}

/* 1 when an AS_PLACED engine copies t into a streaming slot before use. */
static inline int lrun_placement_streamed(const lrun_placement *p, const struct lrun_tensor *t)
{
    return lrun_placement_tier(p, t) != LRUN_TIER_DEVICE && !lrun_placement_host_compute(p, t);
}

/* 1 when t is held in its packed form (docs/packed.md). */
static inline int lrun_placement_packed(const lrun_placement *p, const struct lrun_tensor *t)
{
    return p && p->packed ? p->packed[t - p->model->tensors] != 0 : t->packed != 0;
}

/* Bytes t takes in its tier: packed (its known packed size; the plain size,
 * an upper bound in practice, for one never packed yet) or plain. */
static inline size_t lrun_placement_stored_bytes(const lrun_placement *p, const struct lrun_tensor *t)
{
    return lrun_placement_packed(p, t) && t->pk.total ? t->pk.total : t->nbytes;
}

/* LRUN_E_ARG naming the first tier out of range (tiers may be NULL). */
lrun_status lrun_placement_check(const lrun_model *model, const lrun_tier *tiers);
/* Sets out's weight_bytes (what p leaves on the device) and the init and peak
 * totals from the parts a backend filled; LRUN_E_OOM on overflow. */
lrun_status lrun_placement_total(lrun_placement_size *out, const lrun_placement *p);
/* The same for a layer split's part of blocks [first, end): the weights of its
 * blocks, the embedding when first is 0, the tensors outside blocks (output
 * norm, head) when end is n_layer, and a tied head's table there too (the
 * last part reads it). Over [0, n_layer) it is lrun_placement_total. */
lrun_status lrun_placement_total_blocks(lrun_placement_size *out, const lrun_placement *p, int64_t first,
                                        int64_t end);

#endif
