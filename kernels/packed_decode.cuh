/* packed_decode.cuh — decoding packed bf16/f16 tensors (runtime/packed/codec.h)
 * into plain 16-bit values in a slot: the building block of mode 2 (packed
 * bytes cross PCIe, a kernel writes the plain weight into the layer's slot).
 *
 * One CUDA block of LRUN_K_PACKED_THREADS threads per codec block of 1024
 * elements; thread t owns elements 4t .. 4t+3 of it: their tier-1 codes are
 * one byte, their kept bytes one 32-bit word. A thread's tier-2 entries
 * start at the count of tier-1 escapes of the threads before it (a block
 * prefix sum), its tier-3 bytes at the count of tier-2 escapes before it (a
 * second one), so no thread walks a bit stream serially. The packed bytes
 * were validated on the host (lrun_packed_validate) before they were
 * uploaded: the kernel trusts their counts. */
#ifndef LRUN_KERNELS_PACKED_DECODE_CUH
#define LRUN_KERNELS_PACKED_DECODE_CUH

#include "common.cuh"

#define LRUN_K_PACKED_BLOCK 1024   /* LRUN_PACKED_BLOCK */
#define LRUN_K_PACKED_THREADS 256  /* 4 elements per thread */

#endif
