/* dequant_split_lane.h — what one thread of the split-row dequantize
 * (gemv_split.cu, lrun_k_dequantize_split: Q8_0/Q4_0 rows in the layout of
 * runtime/quant/quant_split.h into the f16 slot of a prefill GEMM) does with
 * one 32-value block: where the block's quants, its scale and its 32 f16
 * outputs sit, and the block's arithmetic. Shared by the CUDA kernel and a
 * host replay of its grid-stride loop (tests/c/test_dequant_split_emu.c), so
 * `make test` checks on any machine the arithmetic the GPU runs against the
 * CPU dequantize of the GGUF rows.
 *
 * A thread takes whole blocks: the quants in 16-byte words (Q8_0 32 bytes,
 * Q4_0 16), the f16 scale in one 2-byte load, the 32 f16 values out in four
 * 16-byte words. Each value is q·d (Q4_0: (q − 8)·d), one f32 multiply
 * rounded once to f16 (nearest even): lrun_k_dequantize's f16 of the same
 * GGUF block, bit for bit. Words are little-endian; an output word holds two
 * f16 values, the lower element in its low half. */
#ifndef LRUN_KERNELS_DEQUANT_SPLIT_LANE_H
#define LRUN_KERNELS_DEQUANT_SPLIT_LANE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define DS_FN static __device__ __forceinline__
#define DS_HD static __host__ __device__ __forceinline__ /* the launcher's too */
#define DS_UNROLL _Pragma("unroll")
/* q·d rounded once: __fmul_rn, never contracted into an FMA */
DS_FN float ds_mul(float q, float d) { return __fmul_rn(q, d); }
DS_FN float ds_f16(uint32_t h) { return __half2float(__ushort_as_half((unsigned short)h)); }
/* two floats to one word of f16 bits (one F2FP: both rounded to nearest even) */
DS_FN uint32_t ds_pack(float lo, float hi)
{
    const __half2 h = __floats2half2_rn(lo, hi);
    return *(const uint32_t *)&h;
}
#else
#include "quant/quant.h" /* lrun_f32_to_f16, lrun_f16_to_f32: the CPU's conversions */
#define DS_FN static inline
#define DS_HD static inline
#define DS_UNROLL
/* one IEEE f32 multiply (a lone product: nothing to contract) */
DS_FN float ds_mul(float q, float d) { return q * d; }
DS_FN float ds_f16(uint32_t h) { return lrun_f16_to_f32((uint16_t)h); }
DS_FN uint32_t ds_pack(float lo, float hi)
{
    return (uint32_t)lrun_f32_to_f16(lo) | (uint32_t)lrun_f32_to_f16(hi) << 16;
}
#endif

// ---------------------------------------------------------------- where a block's bytes sit

/* Quant bytes of a block: Q8_0 32 (two 16-byte words), Q4_0 16 (one). */
DS_HD uint32_t ds_quant_bytes(int q8) { return q8 ? 32u : 16u; }
/* Byte offset in its row of block b's quants. */
DS_HD size_t ds_quants_at(int q8, uint64_t b) { return (size_t)b * ds_quant_bytes(q8); }
/* Byte offset in its row of block b's f16 scale, nb blocks a row (the scales
 * follow the nb blocks' quants: lrun_quant_split_scales_at). */
DS_HD size_t ds_scale_at(int q8, uint64_t nb, uint64_t b) { return (size_t)nb * ds_quant_bytes(q8) + 2 * (size_t)b; }

/* 1 when every load and store can be 16 bytes wide: the rows' base and
 * stride (each row's quants then are, qb being a multiple of 16) and dst
 * (block i's 32 values start 64·i bytes in) 16-byte aligned. Otherwise the
 * kernel reads 2-byte-aligned words and writes single f16 values. */
DS_HD int ds_vector_ok(const void *w, size_t row_bytes, const void *dst)
{
    return (((uintptr_t)w | (uintptr_t)row_bytes | (uintptr_t)dst) & 15) == 0;
}

// ---------------------------------------------------------------- the block's arithmetic

/* Q8_0: q[0..7] the block's 32 int8 (element j in byte j%4 of word j/4),
 * d its scale; o[0..15] = the 32 f16 values (elements 2i, 2i + 1 in o[i]). */
DS_FN void ds_block_q8(const uint32_t q[8], float d, uint32_t o[16])
{
    DS_UNROLL
    for (int i = 0; i < 8; i++) {
        const uint32_t v = q[i];
        o[2 * i] = ds_pack(ds_mul((float)(int8_t)(v & 0xff), d), ds_mul((float)(int8_t)((v >> 8) & 0xff), d));
        o[2 * i + 1] = ds_pack(ds_mul((float)(int8_t)((v >> 16) & 0xff), d), ds_mul((float)(int8_t)(v >> 24), d));
    }
}

/* Q4_0: q[0..3] the block's 16 bytes (byte j: element j in its low nibble,
 * element j + 16 in its high one, as GGUF), d its scale; o as above. Word i
 * gives elements 4i..4i+3 (o[2i], o[2i+1]) and 16+4i..16+4i+3 (o[8+2i],
 * o[9+2i]). q − 8 is exact in the int and in the float. */
DS_FN void ds_block_q4(const uint32_t q[4], float d, uint32_t o[16])
{
    DS_UNROLL
    for (int i = 0; i < 4; i++) {
        const uint32_t lo = q[i] & 0x0f0f0f0fu, hi = (q[i] >> 4) & 0x0f0f0f0fu;
        float f[8];
        DS_UNROLL
        for (int e = 0; e < 4; e++) {
            f[e] = ds_mul((float)((int)((lo >> (8 * e)) & 0xff) - 8), d);
            f[4 + e] = ds_mul((float)((int)((hi >> (8 * e)) & 0xff) - 8), d);
        }
        o[2 * i] = ds_pack(f[0], f[1]);
        o[2 * i + 1] = ds_pack(f[2], f[3]);
        o[8 + 2 * i] = ds_pack(f[4], f[5]);
        o[9 + 2 * i] = ds_pack(f[6], f[7]);
    }
}

#endif
