/* quant_dot.h — the row kernels behind lrun_vec_dot, lrun_quantize_row and
 * lrun_cpu_matmul (internal to quant.c, quant_dot*.c and cpu_matmul.c).
 *
 * Each weight dtype has one dot kernel that multiplies one weight row with up
 * to LRUN_DOT_MAX_ROWS activation rows already converted to the partner type
 * (lrun_dot_partner), so prefill decodes each weight block once per group of
 * activation rows. A kernel computes each output in the same order whatever
 * nx is, so a row's result does not depend on how rows were grouped. */
#ifndef LRUN_QUANT_DOT_H
#define LRUN_QUANT_DOT_H

#include "quant/quant.h"

#define LRUN_DOT_MAX_ROWS 4

/* out[r] (nx) = sum over k of w[i]*x_r[i] for r < nx ≤ LRUN_DOT_MAX_ROWS, where
 * w is one row of k weights and x_r = x + r*x_stride (bytes) a partner row. */
typedef void (*lrun_dot_fn)(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);

/* The fastest kernel for weight_dtype at the host kernel level in use
 * (lrun_cpu_isa: AVX-512 where the CPU has it and the type has an AVX-512
 * kernel, else AVX2 when compiled with it, else scalar), or NULL for a dtype
 * that is not a weight type. */
lrun_dot_fn lrun_dot_kernel(lrun_dtype weight_dtype);
/* The portable scalar kernel: the reference the SIMD kernels are tested against. */
lrun_dot_fn lrun_dot_kernel_scalar(lrun_dtype weight_dtype);
/* Every kernel this build has for weight_dtype, the chosen one among them and
 * the scalar one last, with short names ("avx512", "avx2", "avx2-128",
 * "scalar"): fills up to max entries, returns how many there are. For the
 * tests. Only kernels this CPU can run are listed: the "avx512" ones where
 * lrun_cpu_isa_supported(LRUN_CPU_ISA_AVX512) (whatever level is in use),
 * so a test skips them, saying so, on a CPU without AVX-512. */
int lrun_dot_kernels(lrun_dtype weight_dtype, lrun_dot_fn *fns, const char **names, int max);

/* ---- multi-row kernels: several weight rows against the same activation rows */

/* y[r*ldy + j] (nx, nw) = weight row j (w + j*w_stride bytes, k weights) ·
 * activation row r (x + r*x_stride bytes, a partner row), for j < nw and
 * r < nx, any nw, nx ≥ 0. Each output has exactly the arithmetic of the
 * level's lrun_dot_fn for the type (the same bits); only the loads are
 * shared: each activation vector feeds several weight rows' FMAs. The
 * prefill product's (m > 1) kernel where a type has one. */
typedef void (*lrun_gemm_fn)(int64_t k, const void *w, size_t w_stride, int64_t nw, const void *x, size_t x_stride,
                             int64_t nx, float *y, int64_t ldy);

/* The multi-row kernel of weight_dtype at the host kernel level in use, or
 * NULL where there is none (then callers loop over lrun_dot_kernel's): the
 * float types (F32, F16, BF16) at the avx2 and avx512 levels have one. */
lrun_gemm_fn lrun_gemm_kernel(lrun_dtype weight_dtype);
/* Every multi-row kernel this build has for weight_dtype, named by level
 * ("avx512", "avx2") like lrun_dot_kernels, the "avx512" one only where the
 * CPU can run it: fills up to max entries, returns how many there are. */
int lrun_gemm_kernels(lrun_dtype weight_dtype, lrun_gemm_fn *fns, const char **names, int max);
/* The multi-row kernel for one activation row (decode, nx = 1), where taking
 * several weight rows at once beats the dot row by row, else NULL: MXFP4 at
 * the avx512 level (its dot is one dependent FMA chain a row; four rows'
 * chains interleave). The float types have none: their one-row dot streams
 * from DRAM faster than three rows at a time (measured, docs/benchmarks.md). */
lrun_gemm_fn lrun_gemv_kernel(lrun_dtype weight_dtype);

/* ---- host kernel levels (quant_isa.c): which dot kernels run, chosen once at run time */
typedef enum {
    LRUN_CPU_ISA_SCALAR = 0, /* portable C */
    LRUN_CPU_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C (compiled in with -march on such a machine) */
    LRUN_CPU_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ + VNNI (quant_dot_avx512.c, compiled for any x86-64) */
} lrun_cpu_isa;

/* The level in use: the best one this build and CPU support, or what
 * LRUN_CPU_ISA=avx512|avx2|scalar asks for. Decided once; an unknown value,
 * or a level the CPU or build lacks, is reported on stderr once and the best
 * supported level at or below the request is used instead. */
lrun_cpu_isa lrun_cpu_isa_get(void);
/* 1 when this build has the level's kernels and this CPU can run them. */
int lrun_cpu_isa_supported(lrun_cpu_isa isa);
/* Use isa from now on (tests and benchmarks compare levels in one process):
 * LRUN_E_ARG, naming the level, if it is not supported. Not thread-safe with
 * running matmuls: call between them. */
lrun_status lrun_cpu_isa_set(lrun_cpu_isa isa);
/* "scalar", "avx2", "avx512". */
const char *lrun_cpu_isa_name(lrun_cpu_isa isa);

/* As lrun_quantize_row, without SIMD (the SIMD activation quantizers give
 * the same bytes; tests check that). */
void lrun_quantize_row_scalar(lrun_dtype dtype, const float *src, void *dst, int64_t n);

/* dst = the activation row src (n) in partner = lrun_dot_partner(weight
 * dtype), the way llama.cpp's x86 build quantizes matmul inputs
 * (quantize_row_q8_0 / q8_1; docs/numerics.md §3), which the dot kernels
 * below must be fed for llama.cpp's bits. Per block of 32: amax = max |x|,
 * d = amax/127 (f32), id = 127/amax (a second division, not 1/d), q =
 * x·id rounded half to even; Q8_0 stores f16(d); Q8_1 stores f16(d) and
 * s = f16(d·Σq) (from the unrounded d) as floats. This differs from ggml's
 * reference rule (id = 1/d, ties away from zero) that lrun_quantize_row
 * keeps for Q8_0 weights; Q8_1 exists only for activations, so
 * lrun_quantize_row(Q8_1) is this rule too. Q8_K and the float types are
 * as lrun_quantize_row. */
void lrun_quantize_activations(lrun_dtype partner, const float *src, void *dst, int64_t n);
/* The same without SIMD: identical bytes (tests check that). */
void lrun_quantize_activations_scalar(lrun_dtype partner, const float *src, void *dst, int64_t n);

/* The K-quant kernels (quant_dot_k.c). */
void lrun_dot_q4_K_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q6_K_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
/* The kernels and codecs of Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL and IQ4_XS
 * (quant_dot_more.c, quant_more.c); AVX2 forms of some below. */
void lrun_dot_q5_0_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q5_1_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_iq4_nl_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q2_K_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q3_K_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q5_K_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_iq4_xs_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
/* y (nb blocks) = the blocks at src, decoded; dst (nb blocks) = x encoded. */
void lrun_dequant_q5_0(const void *src, float *y, int64_t nb);
void lrun_dequant_q5_1(const void *src, float *y, int64_t nb);
void lrun_dequant_q2_K(const void *src, float *y, int64_t nb);
void lrun_dequant_q3_K(const void *src, float *y, int64_t nb);
void lrun_dequant_q5_K(const void *src, float *y, int64_t nb);
void lrun_dequant_iq4_nl(const void *src, float *y, int64_t nb);
void lrun_dequant_iq4_xs(const void *src, float *y, int64_t nb);
void lrun_quant_q5_0(const float *x, void *dst, int64_t nb);
void lrun_quant_q5_1(const float *x, void *dst, int64_t nb);
void lrun_quant_q2_K(const float *x, void *dst, int64_t nb);
void lrun_quant_q3_K(const float *x, void *dst, int64_t nb);
void lrun_quant_q5_K(const float *x, void *dst, int64_t nb);
void lrun_quant_iq4_nl(const float *x, void *dst, int64_t nb);
void lrun_quant_iq4_xs(const float *x, void *dst, int64_t nb);
/* MXFP4 (quant_mxfp4.c): the codec, and the dot with Q8_0 activations in the
 * order of llama.cpp's repacked x86 kernels (one f32 chain over the blocks). */
void lrun_dequant_mxfp4(const void *src, float *y, int64_t nb);
void lrun_quant_mxfp4(const float *x, void *dst, int64_t nb);
void lrun_dot_mxfp4_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
/* The same weights against f32 activation rows (x_r = x + r*x_stride bytes,
 * k floats), for lrun_cpu_matmul_grouped_float_x: the portable kernel, and
 * the one for the level in use (AVX2 where it runs; the same bits). */
void lrun_dot_mxfp4_f32_scalar(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
lrun_dot_fn lrun_dot_mxfp4_f32_kernel(void);

/* The 6-bit scale and min of sub-block j (0..7) of Q4_K/Q5_K scales: j < 4
 * in the low 6 bits of bytes j and j+4; j ≥ 4 a low nibble in byte j+4 and
 * 2 high bits in the top of bytes j-4 (scale) and j (min). */
static inline void lrun_k4_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q3_K's scale of sub-block j (0..15), −32..31: stored + 32 in 6 bits, the
 * low nibble in byte j%8 (bits 4·(j/8)), the high two bits in byte 8 + j%4
 * (bits 2·(j/4)). */
static inline int lrun_q3_K_scale(const uint8_t s[12], int j)
{
    return (((s[j & 7] >> (4 * (j >> 3))) & 0xF) | (((s[8 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4)) - 32;
}

/* IQ4_XS's scale of sub-block j (0..7), −32..31: nibble j of scales_l, bits 2j of scales_h. */
static inline int lrun_iq4_xs_scale(const lrun_block_iq4_xs *b, int j)
{
    return (((b->scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (((b->scales_h >> (2 * j)) & 3) << 4)) - 32;
}

/* The AVX-512 kernels (quant_dot_avx512.c) are built on every x86-64 gcc or
 * clang, whatever -march says, with target attributes; they run only where
 * lrun_cpu_isa_supported(LRUN_CPU_ISA_AVX512). NULL for a type without one. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LRUN_HAVE_AVX512 1
lrun_dot_fn lrun_dot_kernel_avx512(lrun_dtype weight_dtype);
lrun_gemm_fn lrun_gemm_kernel_avx512(lrun_dtype weight_dtype);
lrun_gemm_fn lrun_gemv_kernel_avx512(lrun_dtype weight_dtype);
#endif

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LRUN_HAVE_AVX2 1
void lrun_dot_q4_K_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q6_K_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q4_K_avx128(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
/* quant_dot_more.c: Q5_0, Q5_1 and IQ4_NL give their scalar kernels' bits */
void lrun_dot_q5_0_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q5_1_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_iq4_nl_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q5_K_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q2_K_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_q3_K_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_iq4_xs_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
void lrun_dot_mxfp4_avx2(int64_t k, const void *w, const void *x, size_t x_stride, int nx, float *out);
#endif

#endif
