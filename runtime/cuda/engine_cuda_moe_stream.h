/* engine_cuda_moe_stream.h — prefill chunks of the CUDA engine stream their
 * host experts to the device (engine_cuda_moe_stream.c, docs/moe.md
 * "Prefill: streaming host experts"). Internal to runtime/cuda/. */
#ifndef LRUN_ENGINE_CUDA_MOE_STREAM_H
#define LRUN_ENGINE_CUDA_MOE_STREAM_H

#include "cuda/engine_cuda_internal.h"

struct cuda_moe_stream;
struct cuda_moe_cache;

/* The engine's mode: the option, or for DEFAULT the environment variable
 * LRUN_CUDA_MOE_PREFILL_STREAM (on, off, auto), else OFF. Never DEFAULT. */
lrun_moe_prefill_stream lrun_cuda_moe_stream_mode(const lrun_cuda_engine *e);
/* The staging for an AS_PLACED engine whose mode is ON or AUTO and some
 * block's experts are host-computed; *out NULL otherwise, or when the device
 * has no room for two staging buffers of one expert (then prefill computes
 * those experts on the host, as with OFF). */
lrun_status lrun_cuda_moe_stream_init(lrun_cuda_engine *e, struct cuda_moe_stream **out);
void lrun_cuda_moe_stream_free(lrun_cuda_engine *e, struct cuda_moe_stream *s);
/* Whether block layer's prefill chunks stream its experts. */
int lrun_cuda_moe_stream_covers(const struct cuda_moe_stream *s, int64_t layer);
/* Block layer's experts over a prefill chunk whose pairs are grouped by
 * expert (first: (n_expert + 1) offsets into the pair tables, already on the
 * device): those the expert cache c (NULL: none) holds in slots run from
 * there (only read: nothing admitted or evicted); of the rest, the streamed
 * ones (ON: all touched; AUTO: from the block's token threshold) copied group
 * by group into the two staging buffers and run from there, the others on the
 * host; every output weighted into e->tmp (cleared by the caller) in
 * ascending expert order when none is left to the host. */
lrun_status lrun_cuda_moe_stream_run(lrun_cuda_engine *e, struct cuda_moe_stream *s, const lrun_weight_ref g[3],
                                     int64_t layer, const int64_t *first, int64_t n_expert, struct cuda_moe_cache *c);

#endif
