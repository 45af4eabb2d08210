/* embed.cuh — the embedding gather: rows of a token table, dequantized to
 * f32 (lrun_k_embed in kernels.h). It reuses the row conversion kernels of
 * dequantize.cuh with the token ids as the row index. */
#ifndef LRUN_KERNELS_EMBED_CUH
#define LRUN_KERNELS_EMBED_CUH

#include "dequantize.cuh"

#endif
