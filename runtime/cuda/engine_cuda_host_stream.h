/* engine_cuda_host_stream.h — a chunk of many rows multiplies a
 * host-computed matrix on the device: the matrix is copied into one of two
 * staging buffers and the product runs from there (engine_cuda_host_stream.c,
 * docs/streaming.md "Prefill over host-computed matrices"). Internal to
 * runtime/cuda/. */
#ifndef LRUN_ENGINE_CUDA_HOST_STREAM_H
#define LRUN_ENGINE_CUDA_HOST_STREAM_H

#include "cuda/engine_cuda_internal.h"

struct cuda_host_stream;
struct lrun_placement;

/* The rows from which a product streams its host-computed matrix: the
 * option (> 0), none (< 0: never, as before), or for 0 the environment
 * variable LRUN_CUDA_HOST_STREAM_ROWS, else LRUN_CUDA_HOST_STREAM_ROWS_DEFAULT.
 * Never at or below GEMV_MAX_ROWS: a decode step's host products are the
 * planner's balance of the two links, not a choice made here. */
#define LRUN_CUDA_HOST_STREAM_ROWS_DEFAULT 32
int64_t lrun_cuda_host_stream_rows(const lrun_cuda_engine *e);
/* Device bytes of the two staging buffers for placement p (NULL: where the
 * tensors are): each holds the largest block matrix that p computes on the
 * host from memory (not packed, not the disk tier, not stacked experts,
 * which engine_cuda_moe_stream.c streams); 0 when there is none, the rows
 * threshold is off or above the engine's chunk. */
size_t lrun_cuda_host_stream_bytes(const lrun_cuda_engine *e, const struct lrun_placement *p);
/* The staging for an AS_PLACED engine with such matrices; *out NULL when
 * there is none, or when the device budget has no room for its buffers
 * (then every product stays on the host, as before). */
lrun_status lrun_cuda_host_stream_init(lrun_cuda_engine *e, struct cuda_host_stream **out);
void lrun_cuda_host_stream_free(lrun_cuda_engine *e, struct cuda_host_stream *s);
/* The device bytes s holds (its two buffers; 0 for NULL): scratch in the engine's stats, as the placement's
 * size counted them. */
size_t lrun_cuda_host_stream_device_bytes(const struct cuda_host_stream *s);
/* Whether the product of host-computed t over m rows streams t. */
int lrun_cuda_host_stream_takes(const struct cuda_host_stream *s, const struct lrun_tensor *t, int64_t m);
/* Copies t into the next staging buffer (once the products that read it
 * last have run) and makes the compute stream wait for the copy; *data is
 * then t's bytes on the device, for the products queued before
 * lrun_cuda_host_stream_done. */
lrun_status lrun_cuda_host_stream_take(lrun_cuda_engine *e, struct cuda_host_stream *s, const struct lrun_tensor *t,
                                       const void **data);
/* The products that read the buffer of the last take are queued: it may be refilled after them (each take is
 * followed by its done before the next take). */
lrun_status lrun_cuda_host_stream_done(lrun_cuda_engine *e, struct cuda_host_stream *s);

#endif
