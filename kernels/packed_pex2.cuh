/* packed_pex2.cuh — PEX2 packed bf16 weights (runtime/packed/codec_pex2.h)
 * decoded on the GPU (docs/packed.md "PEX2 on CUDA"); ported from the
 * prototype measured on an H100 (tests/bench/codec2_proto.cu).
 *
 * One warp decodes one codec block of 1024 elements: each lane decodes its
 * 8 elements of each of the block's 4 groups of 256 from its index alone
 * (24 code bits, 8 kept bytes, four byte permutes into the codebook) as if
 * every exponent were ordinary, stores them (16 bytes), then the warp
 * patches the block's few exceptions in place (PFOR-style), lane j taking
 * exception j; a ballot counts the far ones before it.
 *
 *   lrun_k_pex2_decode       any element range into global memory (a slot,
 *                            mode 2's staging, prefill's weight slot)
 *   lrun_k_pex2_embed        rows of a table by device token id, as f32
 *   lrun_k_pex2_gemv_multi   the fused decode+GEMV: a block decodes its rows
 *                            into a shared-memory tile, then runs
 *                            lrun_k_gemv_multi's arithmetic on it
 *                            (packed_gemv_product.cuh): y bit for bit
 *
 * lrun_k_packed_decode, _decode_rows, _gemv(_multi), _gemm and _embed call
 * these for a layout whose codec is PEX2, so the engine dispatches on the
 * tensor's codec without knowing it. The bytes were validated on the host
 * (lrun_pex2_validate): the kernels trust the layout and read only inside
 * the tensor (packed_pex2_lane.h says why). */
#ifndef LRUN_KERNELS_PACKED_PEX2_CUH
#define LRUN_KERNELS_PACKED_PEX2_CUH

#include "common.cuh"

#define LRUN_K_PX_THREADS 256 /* decode and embed launches: 8 warps, a codec block each */

#endif
