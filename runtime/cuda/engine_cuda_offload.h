/* engine_cuda_offload.h — weights that stay off the device in a CUDA engine
 * made with LRUN_WEIGHT_MODE_AS_PLACED.
 *
 * A policy gave every weight a tier; the engine leaves it there:
 *
 *   DEVICE tier        used in place;
 *   pinned/host/mmap   streamed: each layer's off-device matrices form one
 *                      "unit", copied into one of k+1 reusable device slots
 *                      on a copy stream, k units ahead of compute (the LM
 *                      head is a unit too). Pinned bytes go straight by DMA;
 *                      host and mmap bytes go through two pinned staging
 *                      buffers, filled by the model's threads while the
 *                      other one is on the bus;
 *   host compute       (lrun_tensor_set_host_compute) the matmul runs on the
 *                      CPU where the bytes are: activations down, product up;
 *   token_embd         off the device: only the rows of the step's tokens
 *                      cross, gathered on the host into pinned staging.
 *
 * Units are consumed in a fixed cyclic order (layers, then the head), so
 * the copies for the next step start while this one finishes. Events order
 * every unit's compute after its copy and every slot's refill after the
 * compute that read it. Slots, staging and events are made at init; the
 * step allocates nothing. Steps that use any of this run eagerly (no CUDA
 * graphs: the staged copies are host work). */
#ifndef LRUN_ENGINE_CUDA_OFFLOAD_H
#define LRUN_ENGINE_CUDA_OFFLOAD_H

#include "cuda/engine_cuda_internal.h"

/* Classifies the model's weights for an AS_PLACED engine and sizes what the
 * offload needs on the device (*device_bytes, before check_fits). Leaves
 * e->offload NULL when every weight is already on the device. p: NULL at
 * init (the tensors' tiers); a proposed placement when
 * lrun_engine_size_placement sizes one with this same plan (then nothing
 * is allocated but the plan's host tables, freed by lrun_cuda_offload_free). */
struct lrun_placement;
lrun_status lrun_cuda_offload_plan(lrun_cuda_engine *e, const struct lrun_placement *p, int prefetch_layers,
                                   size_t *device_bytes);
/* The planned slots' device bytes (k+1 of the largest unit); the rest of
 * *device_bytes are the embedding rows and their index. */
size_t lrun_cuda_offload_slot_bytes(const lrun_cuda_engine *e);
/* Takes the slots from the device pool, the staging and the events. */
lrun_status lrun_cuda_offload_init(lrun_cuda_engine *e);
void lrun_cuda_offload_free(lrun_cuda_engine *e);

/* The weights of layer l as this step sees them: the model's layer, with
 * streamed matrices pointing into their slot. Issues the copies k units
 * ahead and makes compute wait for this layer's copy. */
lrun_status lrun_cuda_offload_layer_begin(lrun_cuda_engine *e, int64_t l, const struct lrun_model_layer **out);
/* After the layer's last kernel: its slot may be refilled once they ran. */
lrun_status lrun_cuda_offload_layer_end(lrun_cuda_engine *e, int64_t l);
/* The same for the LM head (layer index -1); head_begin gives the tensor. */
lrun_status lrun_cuda_offload_head_begin(lrun_cuda_engine *e, const struct lrun_tensor **out);
lrun_status lrun_cuda_offload_head_end(lrun_cuda_engine *e);
/* The head tensor the last head_begin gave (for later row blocks of logits). */
const struct lrun_tensor *lrun_cuda_offload_head(const lrun_cuda_engine *e);

/* 1 when token_embd is off the device, and then: x (n, n_embd) = the rows
 * of the n tokens of the host table, gathered on the host, one copy. */
int lrun_cuda_offload_embeds_on_host(const lrun_cuda_engine *e);
lrun_status lrun_cuda_offload_embed(lrun_cuda_engine *e, int64_t n);

/* 1 when w's matmul runs on the host. */
int lrun_cuda_offload_on_host(const lrun_cuda_engine *e, const struct lrun_tensor *w);
/* y (m, n) = x (m, k) · Wᵀ on the CPU, x and y on the device. */
lrun_status lrun_cuda_offload_host_matmul(lrun_cuda_engine *e, const struct lrun_tensor *w, const float *x,
                                          int64_t m, float *y);
/* The host products of one op's weights w[0..n) (one input x of m rows, k
 * wide) in one trip: begin copies x down and marks the copy; the op's
 * device products enqueued after it run while finish waits for that copy
 * alone (not for them, as a stream wait would), multiplies each weight into
 * its own stretch of h_y and sends each up to y[i]. host_matmul is the two
 * for one weight. group_fits: 1 when a decode chunk's products of w fit h_y
 * side by side (the plan sizes it for a block's host products) and
 * LRUN_CUDA_HOST_GROUP=0 did not turn grouping off. */
int lrun_cuda_offload_host_group_fits(const lrun_cuda_engine *e, const struct lrun_tensor *const *w, int n,
                                      int64_t m);
lrun_status lrun_cuda_offload_host_begin(lrun_cuda_engine *e, const float *x, int64_t m, int64_t k);
lrun_status lrun_cuda_offload_host_finish(lrun_cuda_engine *e, const struct lrun_tensor *const *w, float *const *y,
                                          int n, int64_t m);
/* What a host pass of several products stages through (engine_cuda_moe_host.c):
 * the model's threads, lrun_cpu_matmul's work memory (for B rows of the
 * widest host-computed weight) and the pinned buffers host products copy
 * activations down into (h_x) and products up from (h_y). 0 when nothing
 * is computed on the host. */
typedef struct lrun_cuda_host_compute {
    struct lrun_threadpool *pool;
    void *work;
    float *h_x, *h_y;
    size_t h_x_floats, h_y_floats;
} lrun_cuda_host_compute;
int lrun_cuda_offload_host_compute(const lrun_cuda_engine *e, lrun_cuda_host_compute *out);
/* dst (floats, device) = src (in h_y, pinned) on the compute stream, read by
 * a kernel through the mapping rather than by a copy engine busy streaming
 * weights (kernels/copy_mapped.cu); by cudaMemcpyAsync where the buffer has
 * no device address. */
lrun_status lrun_cuda_offload_host_up(lrun_cuda_engine *e, float *dst, const float *src, size_t floats);

/* dst (device) = t's plain bytes from its home (pinned: by DMA; host,
 * mmap: through the pinned staging buffers, filled by the model's threads)
 * on the copy stream, after that stream waited for after; ready recorded
 * once they landed (engine_cuda_host_stream.c). A packed t crosses packed
 * into pstage (device, its packed bytes) and is decoded from there into dst
 * on the copy stream. Not for the disk tier. */
lrun_status lrun_cuda_offload_copy_tensor(lrun_cuda_engine *e, char *dst, char *pstage, const struct lrun_tensor *t,
                                          cudaEvent_t after, cudaEvent_t ready);
/* Makes the pinned staging buffers that copies from pageable memory go
 * through, when the streamed units did not already need them. */
lrun_status lrun_cuda_offload_need_staging(lrun_cuda_engine *e);

/* The engine's weights for its forward (residency/weights.h), over the
 * streaming above when e->offload is set, else every weight in place
 * (engine_cuda_weights.c). src lives as long as the chunk. */
struct lrun_cuda_weights {
    lrun_cuda_engine *e;
    const struct lrun_model_layer *layer; /* the block begun last, streamed weights as their slot views */
};
lrun_weights lrun_cuda_weights_init(struct lrun_cuda_weights *src, lrun_cuda_engine *e);

/* After the compute stream was synchronized: folds the finished units'
 * event times into the stats. */
void lrun_cuda_offload_account(lrun_cuda_engine *e);
/* After a failed step: waits for both streams and forgets what was in
 * flight, so the next step starts from an empty pipeline. */
void lrun_cuda_offload_reset(lrun_cuda_engine *e);

#endif
