/* engine_cuda_packed.h — packed weights (docs/packed.md) in the CUDA engine.
 *
 * Where a packed weight lives decides how it is computed:
 *
 *   streamed (pinned/host/mmap, mode 2)  its packed bytes cross into a device
 *       staging buffer and lrun_k_packed_decode writes the plain weight into
 *       its slot, both on the copy stream, k units ahead (engine_cuda_offload.c);
 *       compute then reads a plain slot, as for any streamed weight;
 *   host compute                          decoded into host memory per product
 *       (engine_cuda_offload.c, lrun_cuda_offload_host_matmul);
 *   DEVICE tier (mode 3)                  lrun_cuda_packed_matvec below.
 *
 * lrun_cuda_packed_matvec is the one seam for mode 3's fused decode+GEMV
 * kernel (the "fused" branch of issue 12): today it decodes the whole weight
 * into the engine's packed scratch on the compute stream and runs the plain
 * kernel on it (bit-exact, as the decode is); the fused kernel replaces the
 * m <= GEMV_MAX_ROWS branch and nothing else changes: callers, scratch size
 * (still needed for prefill GEMMs) and tests stay. */
#ifndef LRUN_ENGINE_CUDA_PACKED_H
#define LRUN_ENGINE_CUDA_PACKED_H

#include "cuda/engine_cuda_internal.h"

struct lrun_placement;

/* Bytes of the packed scratch: the plain size of the largest packed weight
 * matrix that compute reads on the device (placement p, NULL: the tensors'
 * own; all_device: every weight, as an ALL_DEVICE engine moves them all). */
size_t lrun_cuda_packed_scratch_bytes(const lrun_model *model, const struct lrun_placement *p, int all_device);

/* y (m, n) = x (m, k) · Wᵀ for w packed in device memory at packed (its
 * DEVICE-tier bytes), x and y on the device, on the compute stream. */
lrun_status lrun_cuda_packed_matvec(lrun_cuda_engine *e, const struct lrun_tensor *w, const void *packed,
                                    const float *x, int64_t m, float *y);

/* The plain bytes of w (packed on the device) decoded into the packed
 * scratch on the compute stream: valid until the next decode there. */
lrun_status lrun_cuda_packed_decode_scratch(lrun_cuda_engine *e, const struct lrun_tensor *w, const void *packed,
                                            const void **plain);

#endif
