/* rms_norm_quantize_q8.cu — xn = rms_norm(x)·w and its Q8_0 blocks in one
 * launch, for the decode GEMVs that read x quantized (engine_cuda_split.h).
 * Bits: the sum of squares, its block reduction and s are rms_norm.cu's
 * (same thread layout and order), y = x·s·w as there, and each 32-value
 * block is quantized by lrun_k_q8_block as quantize_q8.cu does, so y, qs
 * and d equal lrun_k_rms_norm followed by lrun_k_quantize_q8 (Q8_0). */
#include "rms_norm_quantize_q8.cuh"

__global__ void __launch_bounds__(LRUN_K_RMS_THREADS)
    rms_norm_quantize_q8_rows(const float *x, const float *__restrict__ w, float *y, int64_t n_rows, int64_t n,
                              float eps, int8_t *__restrict__ qs, float *__restrict__ d)
{
    __shared__ float scratch[32];
    lrun_k_pdl_trigger();
    lrun_k_pdl_wait();
    const int lane = threadIdx.x & 31;
    for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        const float *xr = x + row * n;
        float *yr = y + row * n;
        const float s = lrun_k_rms_scale(xr, n, eps, scratch);
        /* n % 32 == 0: a warp's lanes are one block's 32 values, all in range or all out */
        for (int64_t i = threadIdx.x; i < n; i += LRUN_K_RMS_THREADS) {
            const float v = xr[i] * s * w[i];
            yr[i] = v;
            const int64_t b = (row * n + i) / 32; /* the q8 block, numbered over all rows */
            lrun_k_q8_block(v, lane, qs + b * 32, d + b, NULL);
        }
    }
}

extern "C" lrun_status lrun_k_rms_norm_quantize_q8(const float *x, const float *w, float *y, int64_t n_rows,
                                                   int64_t n, float eps, int8_t *qs, float *d, void *stream)
{
    static const char op[] = "lrun_k_rms_norm_quantize_q8";
    if (!x || !w || !y || !qs || !d)
        return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !x ? "x" : (!w ? "w" : (!y ? "y" : (!qs ? "qs" : "d"))));
    if (n_rows <= 0 || n <= 0 || n % 32 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_rows %lld, n %lld (both > 0, n a multiple of 32)", op,
                         (long long)n_rows, (long long)n);
    if (!(eps >= 0.0f)) return lrun_fail(LRUN_E_ARG, "%s: eps %g (must be >= 0)", op, (double)eps);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t total;
    if (__builtin_mul_overflow(n_rows, n, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld overflow", op, (long long)n_rows, (long long)n);
    const unsigned g = (unsigned)(n_rows < LRUN_K_ELTWISE_BLOCKS ? n_rows : LRUN_K_ELTWISE_BLOCKS);
    (void)lrun_k_launch(rms_norm_quantize_q8_rows, dim3(g), dim3(LRUN_K_RMS_THREADS), 0, (cudaStream_t)stream, x, w,
                        y, n_rows, n, eps, qs, d);
    return lrun_k_launched(op);
}
