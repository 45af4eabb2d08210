/* weights.h — one way for an op to reach a weight.
 *
 * Every matmul of a forward pass asks this interface for its weight, by the
 * unit it belongs to (block l, or the LM head: unit n_layer) and its
 * lrun_arch_tensor id. The answer says where to read the bytes this time:
 *
 *   resident      the tensor's own bytes (on the device, or host-addressable on the CPU);
 *   staged        a slot of the backend's staging ring, filled ahead of compute
 *                 (residency/weight_ring.c on the CPU, cuda/engine_cuda_offload.c on CUDA);
 *   host compute  a device backend runs this product on the host, where the bytes live.
 *
 * Architectures and ops never see tiers: they ask, read `data`, and run
 * `on_host` products on the host. A unit's weights are valid from begin to
 * end; units are met in the fixed cycle block 0 … n_layer-1, head, once per
 * chunk, and a chunk that computes no logits skips the head's turn. Each
 * backend makes its source from its own staging code (lrun_weights_cpu
 * below; lrun_cuda_weights_init in cuda/engine_cuda_weights.c). */
#ifndef LRUN_WEIGHTS_H
#define LRUN_WEIGHTS_H

#include "lrun.h"
#include "arch/arch.h"
#include "core/tensor.h"
#include "residency/weight_ring.h"

typedef struct lrun_weight_ref {
    const struct lrun_tensor *w; /* dtype, shape {k, n}, row_bytes, name; NULL when the file has no such tensor */
    const void *data;            /* where to read its bytes this time: its home, or its staging slot */
    int on_host;                 /* 1: the product runs on the host, reading data there */
    int packed;                  /* CPU: 1 when data are w's packed bytes (w->pk), decoded by its product */
} lrun_weight_ref;

typedef struct lrun_weights_i {
    /* Makes unit's weights readable (waits for a staged copy). */
    lrun_status (*begin)(void *ctx, int64_t unit);
    /* Weight id of the unit begun last (LRUN_ARCH_TENSOR_OUTPUT for the head). */
    lrun_weight_ref (*get)(void *ctx, int64_t unit, lrun_arch_tensor id);
    /* Compute of the unit is issued: its slot may be refilled once it ran. */
    lrun_status (*end)(void *ctx, int64_t unit);
    /* Passes the unit's turn without computing it (the head of a chunk that wants no logits). */
    lrun_status (*skip)(void *ctx, int64_t unit);
    /* A weight of any unit as it will be computed (w, on_host), data NULL:
     * for ops that prepare their output for the next op's weights. */
    lrun_weight_ref (*peek)(void *ctx, int64_t unit, lrun_arch_tensor id);
} lrun_weights_i;

typedef struct lrun_weights {
    const lrun_weights_i *iface;
    void *ctx;
} lrun_weights;

static inline lrun_status lrun_weights_begin(const lrun_weights *w, int64_t unit) { return w->iface->begin(w->ctx, unit); }
static inline lrun_weight_ref lrun_weights_get(const lrun_weights *w, int64_t unit, lrun_arch_tensor id)
{
    return w->iface->get(w->ctx, unit, id);
}
static inline lrun_status lrun_weights_end(const lrun_weights *w, int64_t unit) { return w->iface->end(w->ctx, unit); }
static inline lrun_status lrun_weights_skip(const lrun_weights *w, int64_t unit) { return w->iface->skip(w->ctx, unit); }
static inline lrun_weight_ref lrun_weights_peek(const lrun_weights *w, int64_t unit, lrun_arch_tensor id)
{
    return w->iface->peek(w->ctx, unit, id);
}

/* ---------------------------------------------------------------- the CPU's source */

/* The CPU engine's weights: staged by wr (AS_PLACED), or with wr NULL
 * every weight where it lives. The record lives as long as the chunk. */
typedef struct lrun_weights_cpu {
    lrun_weight_ring *wr;
    const lrun_model *model;
    lrun_weight_view view;       /* the unit begun last: a slot or the tensors' own bytes, by lrun_arch_tensor */
} lrun_weights_cpu;

lrun_weights lrun_weights_cpu_init(lrun_weights_cpu *src, lrun_weight_ring *wr, const lrun_model *model);

#endif
