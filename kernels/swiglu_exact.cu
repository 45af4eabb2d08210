/* swiglu_exact.cu — g = (g / (1 + v_expf(0 - g))) · u, as lrun_cpu_swiglu on
 * rows whose width is a multiple of 8 (the CPU sends a row's tail past its
 * last group of 8 through glibc's expf, which is not redone here; the
 * launcher refuses such widths). Optionally fused with the quantization of
 * g for the down projection: then a warp owns each block of 32. */
#include "swiglu_exact.cuh"

static __device__ __forceinline__ float swiglu1(float a, float u)
{
    return __fmul_rn(__fdiv_rn(a, __fadd_rn(1.0f, lrun_k_v_expf(__fsub_rn(0.0f, a)))), u);
}

__global__ void swiglu_exact_elems(float *g, const float *__restrict__ u, int64_t total)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        g[i] = swiglu1(g[i], u[i]);
}

/* one warp per block of 32 of the (n_rows, n) matrix; n a multiple of 32 */
__global__ void swiglu_exact_quant(float *g, const float *__restrict__ u, int64_t n_blocks, int8_t *__restrict__ qs,
                                   float *__restrict__ qd, float *__restrict__ qsum)
{
    const int lane = threadIdx.x & 31;
    const int64_t step = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t b = (int64_t)blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5); b < n_blocks; b += step) {
        const int64_t i = b * 32 + lane;
        const float v = swiglu1(g[i], u[i]);
        g[i] = v;
        lrun_k_q8_block(v, lane, qs + b * 32, qd + b, qsum ? qsum + b : NULL);
    }
}

extern "C" lrun_status lrun_k_swiglu_exact(float *g, const float *u, int64_t n_rows, int64_t n, lrun_dtype partner,
                                           int8_t *qs, float *qd, float *qsum, void *stream)
{
    static const char op[] = "lrun_k_swiglu_exact";
    if (!g || !u) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !g ? "g" : "u");
    if (n_rows <= 0 || n <= 0 || n % 8 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_rows %lld, n %lld (n a multiple of 8: the CPU's expf tail is not "
                         "reproduced)", op, (long long)n_rows, (long long)n);
    if (qs && (n % 32 != 0 || !qd || (partner != LRUN_DTYPE_Q8_0 && partner != LRUN_DTYPE_Q8_1) ||
               (partner == LRUN_DTYPE_Q8_1 && !qsum)))
        return lrun_fail(LRUN_E_ARG, "%s: quantizing g needs n a multiple of 32 (%lld), qd, and partner q8_0 or q8_1 "
                         "(with qsum)", op, (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t total;
    if (__builtin_mul_overflow(n_rows, n, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld overflow", op, (long long)n_rows, (long long)n);
    cudaStream_t s = (cudaStream_t)stream;
    if (qs)
        swiglu_exact_quant<<<lrun_k_grid(total / 32, 8, LRUN_K_ELTWISE_BLOCKS), 256, 0, s>>>(
            g, u, total / 32, qs, qd, partner == LRUN_DTYPE_Q8_1 ? qsum : NULL);
    else
        swiglu_exact_elems<<<lrun_k_grid(total, 256, LRUN_K_ELTWISE_BLOCKS), 256, 0, s>>>(g, u, total);
    return lrun_k_launched(op);
}
