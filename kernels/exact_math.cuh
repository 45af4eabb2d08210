/* exact_math.cuh — the arithmetic the exact ops share with the CPU recipe
 * (docs/numerics.md), written with explicit rounding intrinsics so nvcc can
 * never contract a multiply and an add: ggml's v_expf, AVX's hsum8 and
 * ggml_vec_dot_f32's 4x8 reduction. Device helpers only, force-inlined. */
#ifndef LRUN_KERNELS_EXACT_MATH_CUH
#define LRUN_KERNELS_EXACT_MATH_CUH

#include "common.cuh"

/* ggml_v_expf (its AVX2+FMA form) on one float, as v_expf1 in runtime/cpu/cpu_ops.c. */
static __device__ __forceinline__ float lrun_k_v_expf(float x)
{
    const float r = 0x1.8p23f;
    const float z = __fmaf_rn(x, 0x1.715476p+0f, r);
    const float n = __fsub_rn(z, r);
    const float b = __fmaf_rn(-n, 0x1.7f7d1cp-20f, __fmaf_rn(-n, 0x1.62e4p-1f, x));
    const uint32_t e = __float_as_uint(z) << 23;
    const float k = __uint_as_float(e + __float_as_uint(1.0f));
    const float u = __fmul_rn(b, b);
    const float j = __fmaf_rn(__fmaf_rn(__fmaf_rn(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                        __fmaf_rn(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                              u, __fmul_rn(0x1.ffffecp-1f, b));
    if (!(fabsf(n) > 126.0f)) return __fmaf_rn(j, k, k);
    const uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
    const float s1 = __uint_as_float(g + 0x7f000000u), s2 = __uint_as_float(e - g);
    return fabsf(n) > 192.0f ? __fmul_rn(s1, s1) : __fmul_rn(__fmaf_rn(s2, j, s2), s1);
}

/* AVX's horizontal sum of 8 lanes: t[i] = a[i+4] + a[i], then (t0 + t2) + (t1 + t3). */
static __device__ __forceinline__ float lrun_k_hsum8(const float a[8])
{
    const float t0 = __fadd_rn(a[4], a[0]), t1 = __fadd_rn(a[5], a[1]), t2 = __fadd_rn(a[6], a[2]),
                t3 = __fadd_rn(a[7], a[3]);
    return __fadd_rn(__fadd_rn(t0, t2), __fadd_rn(t1, t3));
}

/* ggml_vec_dot_f32's reduction of 4 accumulators of 8 lanes: a0 += a2,
 * a1 += a3, a0 += a1 lane-wise, t[i] = a0[i] + a0[i+4], (t0 + t1) + (t2 + t3). */
static __device__ __forceinline__ float lrun_k_reduce4x8(float a[4][8])
{
    float t[4];
#pragma unroll
    for (int l = 0; l < 8; l++) {
        a[0][l] = __fadd_rn(a[0][l], a[2][l]);
        a[1][l] = __fadd_rn(a[1][l], a[3][l]);
        a[0][l] = __fadd_rn(a[0][l], a[1][l]);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) t[i] = __fadd_rn(a[0][i], a[0][i + 4]);
    return __fadd_rn(__fadd_rn(t[0], t[1]), __fadd_rn(t[2], t[3]));
}

/* x rounded to f16 and back (what llama.cpp's f16 cache does to q and p). */
static __device__ __forceinline__ float lrun_k_round_f16(float x) { return __half2float(__float2half_rn(x)); }

/* One block of 32 activations quantized by the warp that holds it (lane j
 * has element j), as lrun_quantize_activations: amax = max |x|, d = amax/127,
 * id = 127/amax (a second division), q = rint(x·id); lane 0 stores d rounded
 * to f16 (as a float) and, when s is not NULL (Q8_1), s = f16(d·Σq). The max
 * and the integer sum do not depend on order. */
static __device__ __forceinline__ void lrun_k_q8_block(float v, int lane, int8_t *qs, float *d, float *s)
{
    float amax = fabsf(v);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float db = __fdiv_rn(amax, 127.0f), id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    const int q = (int)rintf(__fmul_rn(v, id));
    qs[lane] = (int8_t)q;
    int sum = q;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) {
        *d = lrun_k_round_f16(db);
        if (s) *s = lrun_k_round_f16(__fmul_rn(db, (float)sum));
    }
}

#endif
