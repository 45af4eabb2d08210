/* geglu.cu — out = gelu(gate) * up with GELU's tanh approximation. f16_table
 * 0: in f32 as torch's gelu(approximate="tanh") (an HF gemma, as the CPU's
 * geglu_f32); 1: as lrun_cpu_geglu computes it (ggml's GGML_GELU_FP16 table): the input
 * rounded to f16, ggml_gelu_f32 of it rounded to f16; 0 at <= -10 and the
 * identity at >= 10. CUDA's tanhf is not glibc's, so the result may differ
 * from the CPU's in the f16 rounding of an ulp-close tie: the fast path's
 * tolerance, not the exact path's bits. out may alias gate or up. */
#include "geglu.cuh"

__global__ void geglu_elems(const float *gate, const float *up, float *out, int64_t n, int f16_table)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = lrun_k_geglu1(gate[i], up[i], f16_table != 0);
}

extern "C" lrun_status lrun_k_geglu(const float *gate, const float *up, float *out, int64_t n, int f16_table,
                                    void *stream)
{
    static const char op[] = "lrun_k_geglu";
    if (!gate || !up || !out) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !gate ? "gate" : (!up ? "up" : "out"));
    if (n <= 0) return lrun_fail(LRUN_E_ARG, "%s: n %lld (must be > 0)", op, (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = lrun_k_grid(n, LRUN_K_GEGLU_THREADS, LRUN_K_ELTWISE_BLOCKS);
    geglu_elems<<<g, LRUN_K_GEGLU_THREADS, 0, (cudaStream_t)stream>>>(gate, up, out, n, f16_table);
    return lrun_k_launched(op);
}
