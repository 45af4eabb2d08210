/* softcap.cu — x *= s (lrun_cpu_scale: one rounding, the CPU's bits) and
 * x = tanh(x · (1/cap)) · cap (lrun_cpu_softcap's order; CUDA's tanhf, within
 * 2 ulp of glibc's). */
#include "softcap.cuh"

__global__ void scale_elems(float *x, float s, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

__global__ void softcap_elems(float *x, float inv, float cap, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = tanhf(x[i] * inv) * cap;
}

static lrun_status check(const char *op, const float *x, int64_t n, float v, void *stream)
{
    if (!x) return lrun_fail(LRUN_E_ARG, "%s: x is NULL", op);
    if (n <= 0) return lrun_fail(LRUN_E_ARG, "%s: n %lld (must be > 0)", op, (long long)n);
    if (!(v == v) || v == INFINITY || v == -INFINITY) return lrun_fail(LRUN_E_ARG, "%s: %g is not finite", op, (double)v);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    return LRUN_OK;
}

extern "C" lrun_status lrun_k_scale(float *x, float s, int64_t n, void *stream)
{
    static const char op[] = "lrun_k_scale";
    const lrun_status c = check(op, x, n, s, stream);
    if (c != LRUN_OK) return c;
    const unsigned g = lrun_k_grid(n, LRUN_K_SOFTCAP_THREADS, LRUN_K_ELTWISE_BLOCKS);
    scale_elems<<<g, LRUN_K_SOFTCAP_THREADS, 0, (cudaStream_t)stream>>>(x, s, n);
    return lrun_k_launched(op);
}

extern "C" lrun_status lrun_k_softcap(float *x, int64_t n, float cap, void *stream)
{
    static const char op[] = "lrun_k_softcap";
    const lrun_status c = check(op, x, n, cap, stream);
    if (c != LRUN_OK) return c;
    if (cap <= 0.0f) return lrun_fail(LRUN_E_ARG, "%s: cap %g (must be > 0)", op, (double)cap);
    const unsigned g = lrun_k_grid(n, LRUN_K_SOFTCAP_THREADS, LRUN_K_ELTWISE_BLOCKS);
    softcap_elems<<<g, LRUN_K_SOFTCAP_THREADS, 0, (cudaStream_t)stream>>>(x, 1.0f / cap, cap, n);
    return lrun_k_launched(op);
}
