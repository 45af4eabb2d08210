/* gemv_q8x.cuh — x (f32) to q8 blocks of 32 in shared memory, one thread a
 * block, for the integer-dot GEMVs of m = 1 (gemv_dp4a.cu, gemv_stage.cu):
 * the rule of lrun_quantize_activations and llama.cpp's quantize_q8_1, so
 * both kernels compute y against the same q8-rounded x. */
#ifndef LRUN_KERNELS_GEMV_Q8X_CUH
#define LRUN_KERNELS_GEMV_Q8X_CUH

#include "exact_math.cuh"
#include "gemv_common.cuh"

/* x block b (32 floats at xb) to xq (32 int8, 16-byte aligned shared), d
 * (f16-rounded) and s = d·Σq: the rule of lrun_k_q8_block, one thread a block. */
static __device__ __forceinline__ void dl_quantize(const float *xb, bool xvec, int8_t *xq, float *d, float *s)
{
    float v[32];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const float4 f = ldx4(xb + 4 * i, xvec);
        v[4 * i] = f.x, v[4 * i + 1] = f.y, v[4 * i + 2] = f.z, v[4 * i + 3] = f.w;
    }
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
    const float db = __fdiv_rn(amax, 127.0f), id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    uint32_t w[8];
    int sum = 0;
#pragma unroll
    for (int l = 0; l < 8; l++) {
        uint32_t word = 0;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int q = (int)rintf(__fmul_rn(v[4 * l + e], id));
            sum += q;
            word |= ((uint32_t)q & 0xffu) << (8 * e);
        }
        w[l] = word;
    }
    int4 *dst = (int4 *)xq;
    dst[0] = make_int4((int)w[0], (int)w[1], (int)w[2], (int)w[3]);
    dst[1] = make_int4((int)w[4], (int)w[5], (int)w[6], (int)w[7]);
    const float dr = lrun_k_round_f16(db);
    *d = dr;
    *s = dr * (float)sum;
}

#endif
