/* swiglu.cu — out = gate / (1 + e^-gate) * up, as lrun_cpu_swiglu, with the
 * accurate expf (not __expf): the CPU's vector exp is within 2e-7. out may
 * alias gate or up. */
#include "swiglu.cuh"

__global__ void swiglu_elems(const float *gate, const float *up, float *out, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" lrun_status lrun_k_swiglu(const float *gate, const float *up, float *out, int64_t n, void *stream)
{
    static const char op[] = "lrun_k_swiglu";
    if (!gate || !up || !out) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !gate ? "gate" : (!up ? "up" : "out"));
    if (n <= 0) return lrun_fail(LRUN_E_ARG, "%s: n %lld (must be > 0)", op, (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = lrun_k_grid(n, LRUN_K_SWIGLU_THREADS, LRUN_K_ELTWISE_BLOCKS);
    swiglu_elems<<<g, LRUN_K_SWIGLU_THREADS, 0, (cudaStream_t)stream>>>(gate, up, out, n);
    return lrun_k_launched(op);
}

/* gpt-oss's gate (lrun_k_swiglu_oai1, common.cuh) element by element. */
__global__ void swiglu_oai_elems(const float *gate, const float *up, float *out, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = lrun_k_swiglu_oai1(gate[i], up[i]);
}

extern "C" lrun_status lrun_k_swiglu_oai(const float *gate, const float *up, float *out, int64_t n, void *stream)
{
    static const char op[] = "lrun_k_swiglu_oai";
    if (!gate || !up || !out) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !gate ? "gate" : (!up ? "up" : "out"));
    if (n <= 0) return lrun_fail(LRUN_E_ARG, "%s: n %lld (must be > 0)", op, (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = lrun_k_grid(n, LRUN_K_SWIGLU_THREADS, LRUN_K_ELTWISE_BLOCKS);
    swiglu_oai_elems<<<g, LRUN_K_SWIGLU_THREADS, 0, (cudaStream_t)stream>>>(gate, up, out, n);
    return lrun_k_launched(op);
}
