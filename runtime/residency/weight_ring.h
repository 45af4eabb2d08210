/* weight_ring.h — off-device weights filled into slots just in time for the
 * CPU engine's compute (LRUN_WEIGHT_MODE_AS_PLACED; the contract is in
 * lrun.h and docs/residency.md), over the staging ring of ring.h.
 *
 * A *unit* is what one step of compute needs at once: the staged matrices
 * of one block (the block's matrices in the architecture's description,
 * arch.h, that are neither in the DEVICE tier nor marked host-compute), or
 * the LM head. Units are filled, in the order compute uses them (block 0,
 * 1, …, the head, then block 0 of the next step …), by the ring's fill
 * thread into slots taken once from the device budget at init:
 *
 *   ring   (k + 1) slots of the largest block unit: block i computes from
 *          one while blocks i+1 … i+k are filled into the others;
 *   head   one slot of the LM head's size, when the head is staged.
 *
 * A packed matrix (docs/packed.md) is decoded, not copied, into its slot
 * by the fill when staged; read in place, its product decodes it as it goes
 * (tiles taken with the slots).
 *
 * Compute waits for a slot's fill and releases it after, so it can be
 * filled again; nothing is allocated after init. Matrices marked
 * host-compute are read where they live, never copied. */
#ifndef LRUN_WEIGHT_RING_H
#define LRUN_WEIGHT_RING_H

#include "lrun.h"
#include "arch/arch.h"

/* Where compute reads each weight of a unit this time, by lrun_arch_tensor:
 * a slot, or the tensor's own bytes (NULL when the model has no such
 * tensor). A block's unit sets the block ids, the head's unit
 * data[LRUN_ARCH_TENSOR_OUTPUT]. packed[id] 1: the weight is packed and read
 * in place, its product decodes it as it goes (lrun_cpu_matmul_packed; an
 * expert stack's chosen experts, lrun_cpu_matmul_packed_rows). */
typedef struct lrun_weight_view {
    const void *data[LRUN_ARCH_TENSOR_COUNT];
    unsigned char packed[LRUN_ARCH_TENSOR_COUNT];
} lrun_weight_view;

typedef struct lrun_weight_ring lrun_weight_ring;

/* The blocks an engine computes: [first, end) of the model's, and the LM head
 * when end is n_layer (a layer split's part, docs/multigpu.md, has a range;
 * one engine has [0, n_layer)). Its units, slots and tiles are
 * those of its blocks only, and its cycle runs over them. */
typedef struct lrun_weight_blocks {
    int64_t first, end;
} lrun_weight_blocks;

/* Plans the units of model's current placement for blocks, takes the slots
 * from the device budget (LRUN_E_OOM says how much they need) and starts the
 * fill thread when anything is staged. prefetch_layers 0 = the default
 * (lrun_engine_default_prefetch). stage 0: nothing is staged (an
 * ALL_DEVICE engine, which only needs packed weights decoded). Packed
 * matrices read in place are multiplied packed (lrun_weight_view), in
 * tiles taken with the slots for pool's threads (NULL: the caller's).
 * The expert store (expert_store.h) has its default slots, or, with
 * store_room > 0 bytes for the slots and the store together, as many as fit
 * there (a host budget's room: docs/moe.md "Experts from the disk"), at most
 * every expert of the blocks. */
struct lrun_threadpool;
lrun_status lrun_weight_ring_init(lrun_weight_ring **out, lrun_model *model, lrun_weight_blocks blocks,
                                  int prefetch_layers, size_t store_room, int stage, struct lrun_threadpool *pool);
/* The device bytes init would take for the slots were the weights placed
 * as p says (lrun_engine_size_placement), by init's own layout, with a pool
 * of n_threads, the expert store at its default slots (init may take more
 * from a host budget's room); allocates nothing. */
struct lrun_placement;
lrun_status lrun_weight_ring_size(const lrun_model *model, const struct lrun_placement *p, lrun_weight_blocks blocks,
                                  int prefetch_layers, int n_threads, size_t *slot_bytes);
/* The store of the disk tier's expert stacks (expert_store.h), read per
 * chosen expert instead of with their blocks' units; NULL when no stack is
 * in the disk tier. */
struct lrun_expert_store;
struct lrun_expert_store *lrun_weight_ring_expert_store(const lrun_weight_ring *wr);
/* The decode tiles lrun_cpu_matmul_packed needs for the packed matrices
 * multiplied in place (lrun_weight_view.packed), one a thread of init's
 * pool (lrun_weight_ring_size: n_threads), taken with the slots; NULL when
 * there are none. */
void *lrun_weight_ring_packed_work(const lrun_weight_ring *wr);
void lrun_weight_ring_free(lrun_weight_ring *wr);
/* Units it stages (blocks and the head with off-device weights); 0 for NULL
 * or a ring that only counts and decodes in place. */
int64_t lrun_weight_ring_staged_units(const lrun_weight_ring *wr);

/* The weights of block layer (n_layer: the LM head) for compute, waiting
 * for their fill when they are staged. wr NULL: every weight where it is.
 * Every acquire is followed by a release of the same layer, in the order
 * of the ring's blocks (first … end-1, then the head when it has it), once
 * per chunk. */
lrun_status lrun_weight_ring_acquire(lrun_weight_ring *wr, const lrun_model *model, int64_t layer,
                                     lrun_weight_view *out);
lrun_status lrun_weight_ring_release(lrun_weight_ring *wr, int64_t layer);
/* Passes layer's turn without computing it (the head of a chunk that wants
 * no logits): its fill, if staged, is waited for and counted, then released. */
lrun_status lrun_weight_ring_skip(lrun_weight_ring *wr, int64_t layer);

/* After a failed acquire (a fill failed: its error was returned) or a step
 * abandoned midway: the cycle starts again at block 0, every slot empty. */
void lrun_weight_ring_restart(lrun_weight_ring *wr);

/* Counts n_rows embedding rows gathered from an off-device table. */
void lrun_weight_ring_note_rows(lrun_weight_ring *wr, int64_t n_rows);
/* bytes of t (one expert's slice of a stacked tensor) were read by a
 * product on the host: counted in host_compute_bytes when t is host-computed.
 * Acquire counts the experts' stacked tensors not whole but by this, slice by
 * slice as the forward multiplies them (docs/moe.md). */
void lrun_weight_ring_note_slice(lrun_weight_ring *wr, const struct lrun_tensor *t, uint64_t bytes);

/* Adds the ring's counters to out (lrun.h's names: bytes_streamed = bytes
 * filled into slots, copy_seconds = fill time, stall_seconds, prefetch
 * hits and misses, host_compute_bytes, slot_bytes). */
void lrun_weight_ring_add_stats(lrun_weight_ring *wr, lrun_engine_stats *out);
/* Adds each block's share of host_compute_bytes to out[0..n_layer) (the head's and the embedding's are not a
 * block's). */
void lrun_weight_ring_add_host_layer_bytes(const lrun_weight_ring *wr, uint64_t *out);
void lrun_weight_ring_reset_stats(lrun_weight_ring *wr);

#endif
