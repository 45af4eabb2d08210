/* geglu.cuh — out (n) = gelu_tanh(gate) * up (lrun_k_geglu, gemma2/3's
 * feed-forward): one element per thread, grid-stride in 64-bit. */
#ifndef LRUN_KERNELS_GEGLU_CUH
#define LRUN_KERNELS_GEGLU_CUH

#include "common.cuh"

#define LRUN_K_GEGLU_THREADS 256

#ifdef __CUDACC__
/* gelu(g)·u, GELU's tanh approximation: f16_table as lrun_cpu_geglu (ggml's
 * table: g rounded to f16, its GELU rounded to f16; 0 at <= -10, the
 * identity at >= 10), else in f32 as torch's gelu(approximate="tanh").
 * lrun_k_geglu and the GEMV's GeGLU epilogue (gemv.cu) share it. */
static __device__ __forceinline__ float lrun_k_geglu1(float x, float u, bool f16_table)
{
    const float sqrt_2_over_pi = 0.79788456080286535587989211986876f, coef_a = 0.044715f;
    if (!f16_table) return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * (x + coef_a * x * x * x))) * u;
    if (x <= -10.0f) return 0.0f; /* not 0·u: the CPU writes 0 */
    if (x >= 10.0f) return x * u;
    const float h = __half2float(__float2half_rn(x)); /* ggml_gelu_f32 of the f16 input, as the table holds it */
    const float g = 0.5f * h * (1.0f + tanhf(sqrt_2_over_pi * h * (1.0f + coef_a * h * h)));
    return __half2float(__float2half_rn(g)) * u;
}
#endif

#endif
