/* rms_norm.cu — RMSNorm, as lrun_cpu_rms_norm (runtime/cpu/cpu_ops.c): the CPU
 * sums squares in double; here each thread sums ~n/1024 squares in f32 and the
 * partial sums are combined in a tree, which keeps the relative error of the
 * mean near 1e-7. y may alias x: every element is read and written by the
 * same thread. */
#include "rms_norm.cuh"

__global__ void __launch_bounds__(LRUN_K_RMS_THREADS)
    rms_norm_rows(const float *x, const float *__restrict__ w, float *y, int64_t n_rows, int64_t n, float eps)
{
    __shared__ float scratch[32];
    lrun_k_pdl_trigger();
    lrun_k_pdl_wait();
    for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        const float *xr = x + row * n;
        float *yr = y + row * n;
        const float s = lrun_k_rms_scale(xr, n, eps, scratch);
        for (int64_t i = threadIdx.x; i < n; i += LRUN_K_RMS_THREADS) yr[i] = xr[i] * s * w[i];
    }
}

extern "C" lrun_status lrun_k_rms_norm(const float *x, const float *w, float *y, int64_t n_rows, int64_t n, float eps,
                                       void *stream)
{
    static const char op[] = "lrun_k_rms_norm";
    if (!x || !w || !y) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !x ? "x" : (!w ? "w" : "y"));
    if (n_rows <= 0 || n <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_rows %lld, n %lld (both must be > 0)", op, (long long)n_rows,
                         (long long)n);
    if (!(eps >= 0.0f)) return lrun_fail(LRUN_E_ARG, "%s: eps %g (must be >= 0)", op, (double)eps);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t total;
    if (__builtin_mul_overflow(n_rows, n, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld overflow", op, (long long)n_rows, (long long)n);
    const unsigned g = (unsigned)(n_rows < LRUN_K_ELTWISE_BLOCKS ? n_rows : LRUN_K_ELTWISE_BLOCKS);
    (void)lrun_k_launch(rms_norm_rows, dim3(g), dim3(LRUN_K_RMS_THREADS), 0, (cudaStream_t)stream, x, w, y, n_rows,
                        n, eps);
    return lrun_k_launched(op);
}
