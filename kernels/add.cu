/* add.cu — y += x and y (rows, n) += bias (n); exact (one f32 add per element). */
#include "add.cuh"

__global__ void add_elems(float *y, const float *x, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

__global__ void add_bias_elems(float *y, const float *__restrict__ bias, int64_t total, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += bias[i % n];
}

extern "C" lrun_status lrun_k_add(float *y, const float *x, int64_t n, void *stream)
{
    static const char op[] = "lrun_k_add";
    if (!y || !x) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !y ? "y" : "x");
    if (n <= 0) return lrun_fail(LRUN_E_ARG, "%s: n %lld (must be > 0)", op, (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = lrun_k_grid(n, LRUN_K_ADD_THREADS, LRUN_K_ELTWISE_BLOCKS);
    add_elems<<<g, LRUN_K_ADD_THREADS, 0, (cudaStream_t)stream>>>(y, x, n);
    return lrun_k_launched(op);
}

extern "C" lrun_status lrun_k_add_bias(float *y, const float *bias, int64_t n_rows, int64_t n, void *stream)
{
    static const char op[] = "lrun_k_add_bias";
    if (!y || !bias) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !y ? "y" : "bias");
    if (n_rows <= 0 || n <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_rows %lld, n %lld (both must be > 0)", op, (long long)n_rows,
                         (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t total;
    if (__builtin_mul_overflow(n_rows, n, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld overflow", op, (long long)n_rows, (long long)n);
    const unsigned g = lrun_k_grid(total, LRUN_K_ADD_THREADS, LRUN_K_ELTWISE_BLOCKS);
    add_bias_elems<<<g, LRUN_K_ADD_THREADS, 0, (cudaStream_t)stream>>>(y, bias, total, n);
    return lrun_k_launched(op);
}
