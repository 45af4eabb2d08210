/* quant.h — block layouts of the quantized types and the row-level codecs
 * (dequantize, quantize, dot products). Layouts follow ggml-common.h
 * (REFERENCE.md); every block starts with the fields listed here, packed. */
#ifndef LRUN_QUANT_H
#define LRUN_QUANT_H

#include "lrun.h"

#define LRUN_QK4_0 32
#define LRUN_QK4_1 32
#define LRUN_QK8_0 32
#define LRUN_QK8_1 32
#define LRUN_QK5_0 32
#define LRUN_QK5_1 32
#define LRUN_QK4_NL 32
#define LRUN_QK_K 256
#define LRUN_QK_MXFP4 32

typedef struct { uint16_t d; uint8_t qs[16]; } lrun_block_q4_0;            /* 18 bytes; y = (q-8)*d */
typedef struct { uint16_t d, m; uint8_t qs[16]; } lrun_block_q4_1;         /* 20 bytes; y = q*d + m */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } lrun_block_q5_0; /* 22 bytes; q = nibble | bit<<4, y = (q-16)*d */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } lrun_block_q5_1; /* 24 bytes; y = q*d + m */
typedef struct { uint16_t d; uint8_t qs[16]; } lrun_block_iq4_nl;          /* 18 bytes; y = d*kvalues[q] */
typedef struct { uint16_t d; int8_t qs[32]; } lrun_block_q8_0;             /* 34 bytes; y = q*d */
typedef struct { float d, s; int8_t qs[32]; } lrun_block_q8_1;             /* 40 bytes (activations); d = f16(amax/127), s = f16(unrounded d * sum(q)), as llama.cpp */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } lrun_block_q4_K; /* 144 bytes */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } lrun_block_q6_K; /* 210 bytes */
/* 84 bytes; 16 sub-blocks of 16: scales[j] = scale (low 4 bits) | min << 4; 2-bit quants */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } lrun_block_q2_K;
/* 110 bytes; 16 sub-blocks of 16 with 6-bit scales (biased by 32); 3-bit quants: 2 in qs, 1 in hmask */
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } lrun_block_q3_K;
/* 176 bytes; Q4_K's scales and mins, 5-bit quants: low 4 in qs, the 5th in qh */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } lrun_block_q5_K;
/* 136 bytes; 8 sub-blocks of 32 with 6-bit scales (biased by 32: low 4 in scales_l, high 2 in scales_h) */
typedef struct { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } lrun_block_iq4_xs;

/* 17 bytes; y = e8m0_half(e) * kvalues_mxfp4[q]: the low nibble of qs[j] is element j, the high one
 * element j + 16 (as Q4_0); the E2M1 values are stored doubled, so the scale is half of 2^(e - 127) */
typedef struct { uint8_t e; uint8_t qs[16]; } lrun_block_mxfp4;

/* The 16 values an IQ4_NL/IQ4_XS nibble indexes (ggml's kvalues_iq4nl). */
extern const int8_t lrun_kvalues_iq4nl[16];
/* The 16 doubled E2M1 values an MXFP4 nibble indexes (ggml's kvalues_mxfp4): 0, ±0.5 … ±6 times 2. */
extern const int8_t lrun_kvalues_mxfp4[16];
/* An E8M0 scale byte as ggml_e8m0_to_fp32_half: 2^(e - 128), exact (subnormal for e < 2). */
float lrun_e8m0_to_f32_half(uint8_t e);
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } lrun_block_q8_K; /* 292 bytes (activations) */

/* IEEE half and bfloat16 from/to float. */
float lrun_f16_to_f32(uint16_t h);
uint16_t lrun_f32_to_f16(float f);
float lrun_bf16_to_f32(uint16_t h);
uint16_t lrun_f32_to_bf16(float f); /* round to nearest even */

/* dst (n) = the n elements of src; n a multiple of the block size. */
void lrun_dequantize_row(lrun_dtype dtype, const void *src, float *dst, int64_t n);
/* dst = src encoded in dtype (round-to-nearest quantizers, as ggml's reference ones). */
void lrun_quantize_row(lrun_dtype dtype, const float *src, void *dst, int64_t n);

/* The type activations are converted to before a dot product with weights of
 * dtype, as llama.cpp's vec_dot_type: Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1
 * for Q4_1/Q5_1, Q8_K for the K-quants and IQ4_XS, F32 for the float types. */
lrun_dtype lrun_dot_partner(lrun_dtype weight_dtype);
/* sum over n of w[i]*x[i], w a row of weight_dtype, x a row of lrun_dot_partner(weight_dtype). */
float lrun_vec_dot(lrun_dtype weight_dtype, int64_t n, const void *w, const void *x);

#endif
