/* weight_stream.h — off-device weights brought to the CPU engine's compute
 * just in time (LRUN_WEIGHT_MODE_AS_PLACED; the contract is in lrun.h and
 * docs/residency.md).
 *
 * A *unit* is what one step of compute needs at once: the streamed matrices
 * of one block (those not in the DEVICE tier and not marked host-compute),
 * or the LM head. Units are copied, in the order compute uses them (block 0,
 * 1, …, the head, then block 0 of the next step …), by a copy thread into
 * slots taken once from the device budget at init:
 *
 *   ring   (k + 1) slots of the largest block unit: block i computes from
 *          one while blocks i+1 … i+k are copied into the others;
 *   head   one slot of the LM head's size, when the head is streamed.
 *
 * Compute waits on a slot's "ready" (a condition variable here; a CUDA
 * event on the GPU) and hands it back on release, so the copy thread can
 * refill it; nothing is allocated after init. Matrices marked host-compute
 * are read where they live, never copied. */
#ifndef LRUN_WEIGHT_STREAM_H
#define LRUN_WEIGHT_STREAM_H

#include "lrun.h"

/* The matrices of a block, in a fixed order. */
enum lrun_ws_mat { LRUN_WS_Q, LRUN_WS_K, LRUN_WS_V, LRUN_WS_O, LRUN_WS_GATE, LRUN_WS_UP, LRUN_WS_DOWN, LRUN_WS_N_MATS };

/* Where compute reads each weight this time: a slot, or the tensor's own
 * bytes. For the LM head (layer n_layer) only data[0] is used. */
typedef struct lrun_weight_view {
    const void *data[LRUN_WS_N_MATS];
} lrun_weight_view;

typedef struct lrun_weight_stream lrun_weight_stream;

/* Plans the units of model's current placement, takes the slots from the
 * device budget (LRUN_E_OOM says how much they need) and starts the copy
 * thread when anything is streamed. prefetch_layers 0 = the default
 * (lrun_engine_default_prefetch). */
lrun_status lrun_weight_stream_init(lrun_weight_stream **out, lrun_model *model, int prefetch_layers);
/* The device bytes init would take for the slots were the weights placed
 * as p says (lrun_engine_size_placement), by init's own layout; allocates
 * nothing. */
struct lrun_placement;
lrun_status lrun_weight_stream_size(const lrun_model *model, const struct lrun_placement *p, int prefetch_layers,
                                    size_t *slot_bytes);
void lrun_weight_stream_free(lrun_weight_stream *ws);

/* The weights of block layer (n_layer: the LM head) for compute, waiting
 * for their copy when they are streamed. ws NULL: every weight where it is.
 * Every acquire is followed by a release of the same layer, in the order
 * block 0 … n_layer-1, then the head, once per chunk. */
void lrun_weight_stream_acquire(lrun_weight_stream *ws, const lrun_model *model, int64_t layer,
                                lrun_weight_view *out);
void lrun_weight_stream_release(lrun_weight_stream *ws, int64_t layer);
/* Passes layer's turn without computing it (the head of a chunk that wants
 * no logits): its copy, if streamed, is waited for and counted, then freed. */
void lrun_weight_stream_skip(lrun_weight_stream *ws, int64_t layer);

/* Counts n_rows embedding rows gathered from an off-device table. */
void lrun_weight_stream_note_rows(lrun_weight_stream *ws, int64_t n_rows);

/* Adds the stream's counters to out (bytes_streamed, copy/stall seconds,
 * hits, misses, host_compute_bytes, slot_bytes). */
void lrun_weight_stream_add_stats(lrun_weight_stream *ws, lrun_engine_stats *out);
void lrun_weight_stream_reset_stats(lrun_weight_stream *ws);

#endif
