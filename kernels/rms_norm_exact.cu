/* rms_norm_exact.cu — y = (x·scale)·w, as lrun_cpu_rms_norm: f32 squares
 * summed in order into a double, mean and scale in f32, two roundings. */
#include "rms_norm_exact.cuh"

__global__ void __launch_bounds__(LRUN_K_RMSX_THREADS)
    rms_norm_exact_rows(const float *__restrict__ x, const float *__restrict__ w, float *__restrict__ y,
                        int64_t n_rows, int64_t n, float eps)
{
    extern __shared__ float sq[]; /* (n) squares */
    __shared__ float scale;
    for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        const float *xr = x + row * n;
        for (int64_t i = threadIdx.x; i < n; i += LRUN_K_RMSX_THREADS) sq[i] = __fmul_rn(xr[i], xr[i]);
        __syncthreads();
        if (threadIdx.x == 0) {
            double sum = 0.0;
            for (int64_t i = 0; i < n; i++) sum = __dadd_rn(sum, (double)sq[i]);
            const float mean = __double2float_rn(__ddiv_rn(sum, (double)n));
            scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
        }
        __syncthreads();
        float *yr = y + row * n;
        for (int64_t i = threadIdx.x; i < n; i += LRUN_K_RMSX_THREADS) yr[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
        __syncthreads(); /* sq and scale are reused by the next row */
    }
}

extern "C" lrun_status lrun_k_rms_norm_exact(const float *x, const float *w, float *y, int64_t n_rows, int64_t n,
                                             float eps, void *stream)
{
    static const char op[] = "lrun_k_rms_norm_exact";
    if (!x || !w || !y) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !x ? "x" : (!w ? "w" : "y"));
    if (x == y) return lrun_fail(LRUN_E_ARG, "%s: y must not alias x", op);
    if (n_rows <= 0 || n <= 0 || n > LRUN_K_RMSX_MAX_N)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_rows %lld, n %lld (n_rows > 0, 0 < n <= %d)", op, (long long)n_rows,
                         (long long)n, LRUN_K_RMSX_MAX_N);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = (unsigned)(n_rows < LRUN_K_ELTWISE_BLOCKS ? n_rows : LRUN_K_ELTWISE_BLOCKS);
    rms_norm_exact_rows<<<g, LRUN_K_RMSX_THREADS, (size_t)n * sizeof(float), (cudaStream_t)stream>>>(x, w, y, n_rows,
                                                                                                     n, eps);
    return lrun_k_launched(op);
}
