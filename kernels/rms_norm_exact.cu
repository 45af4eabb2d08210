/* rms_norm_exact.cu — y = (x·scale)·w, as lrun_cpu_rms_norm: f32 squares
 * summed in order into a double, mean and scale in f32, two roundings.
 * Fused on request, in engine.c's order: the residual add before (x += add,
 * then x += bias, written back to x) and the quantization of y for the next
 * matmul after (lrun_k_q8_block per block of 32), so a layer's sublayer
 * boundary is one launch. */
#include "rms_norm_exact.cuh"

__global__ void __launch_bounds__(LRUN_K_RMSX_THREADS)
    rms_norm_exact_rows(float *x, const float *__restrict__ add, const float *__restrict__ bias,
                        const float *__restrict__ w, float *__restrict__ y, int64_t n_rows, int64_t n, float eps,
                        int8_t *__restrict__ qs, float *__restrict__ qd, float *__restrict__ qsum)
{
    extern __shared__ double sq[]; /* (n) squares, already widened: the ordered sum is only dependent adds */
    __shared__ float scale;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        float *xr = x + row * n;
        for (int64_t i = threadIdx.x; i < n; i += LRUN_K_RMSX_THREADS) {
            float v = xr[i];
            if (add) v = __fadd_rn(v, add[row * n + i]);
            if (bias) v = __fadd_rn(v, bias[i]);
            if (add || bias) xr[i] = v;
            sq[i] = (double)__fmul_rn(v, v);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            double sum = 0.0;
#pragma unroll 16
            for (int64_t i = 0; i < n; i++) sum = __dadd_rn(sum, sq[i]);
            const float mean = __double2float_rn(__ddiv_rn(sum, (double)n));
            scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
        }
        __syncthreads();
        float *yr = y + row * n;
        for (int64_t i = threadIdx.x; i < n; i += LRUN_K_RMSX_THREADS) yr[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
        if (qs) {
            __syncthreads(); /* the row of y is the block's: visible to every warp now */
            const int64_t nb = n / 32;
            for (int64_t b = warp; b < nb; b += LRUN_K_RMSX_THREADS / 32)
                lrun_k_q8_block(yr[b * 32 + lane], lane, qs + row * n + b * 32, qd + row * nb + b,
                                qsum ? qsum + row * nb + b : NULL);
        }
        __syncthreads(); /* sq and scale are reused by the next row */
    }
}

extern "C" lrun_status lrun_k_add_rms_norm_exact(float *x, const float *add, const float *bias, const float *w,
                                                 float *y, int64_t n_rows, int64_t n, float eps, lrun_dtype partner,
                                                 int8_t *qs, float *qd, float *qsum, void *stream)
{
    static const char op[] = "lrun_k_add_rms_norm_exact";
    if (!x || !w || !y) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !x ? "x" : (!w ? "w" : "y"));
    if (x == y || (add && (add == x || add == y)))
        return lrun_fail(LRUN_E_ARG, "%s: y and add must not alias x or each other", op);
    if (n_rows <= 0 || n <= 0 || n > LRUN_K_RMSX_MAX_N)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_rows %lld, n %lld (n_rows > 0, 0 < n <= %d)", op, (long long)n_rows,
                         (long long)n, LRUN_K_RMSX_MAX_N);
    if (qs && (n % 32 != 0 || !qd || (partner != LRUN_DTYPE_Q8_0 && partner != LRUN_DTYPE_Q8_1) ||
               (partner == LRUN_DTYPE_Q8_1 && !qsum)))
        return lrun_fail(LRUN_E_ARG, "%s: quantizing y needs n a multiple of 32 (%lld), qd, and partner q8_0 or q8_1 "
                         "(with qsum)", op, (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = (unsigned)(n_rows < LRUN_K_ELTWISE_BLOCKS ? n_rows : LRUN_K_ELTWISE_BLOCKS);
    const size_t smem = (size_t)n * sizeof(double);
    if (smem > 48 * 1024)
        (void)cudaFuncSetAttribute(rms_norm_exact_rows, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    rms_norm_exact_rows<<<g, LRUN_K_RMSX_THREADS, smem, (cudaStream_t)stream>>>(
        x, add, bias, w, y, n_rows, n, eps, qs, qs ? qd : NULL, qs && partner == LRUN_DTYPE_Q8_1 ? qsum : NULL);
    return lrun_k_launched(op);
}

extern "C" lrun_status lrun_k_rms_norm_exact(const float *x, const float *w, float *y, int64_t n_rows, int64_t n,
                                             float eps, void *stream)
{
    /* with no add and no bias the kernel never writes x */
    return lrun_k_add_rms_norm_exact((float *)x, NULL, NULL, w, y, n_rows, n, eps, LRUN_DTYPE_F32, NULL, NULL, NULL,
                                     stream);
}
