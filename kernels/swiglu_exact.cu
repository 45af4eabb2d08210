/* swiglu_exact.cu — g = (g / (1 + v_expf(0 - g))) · u, as lrun_cpu_swiglu on
 * rows whose width is a multiple of 8 (the CPU sends a row's tail past its
 * last group of 8 through glibc's expf, which is not redone here; the
 * launcher refuses such widths). */
#include "swiglu_exact.cuh"

__global__ void swiglu_exact_elems(float *g, const float *__restrict__ u, int64_t total)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const float a = g[i];
        g[i] = __fmul_rn(__fdiv_rn(a, __fadd_rn(1.0f, lrun_k_v_expf(__fsub_rn(0.0f, a)))), u[i]);
    }
}

extern "C" lrun_status lrun_k_swiglu_exact(float *g, const float *u, int64_t n_rows, int64_t n, void *stream)
{
    static const char op[] = "lrun_k_swiglu_exact";
    if (!g || !u) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !g ? "g" : "u");
    if (n_rows <= 0 || n <= 0 || n % 8 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_rows %lld, n %lld (n a multiple of 8: the CPU's expf tail is not "
                         "reproduced)", op, (long long)n_rows, (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t total;
    if (__builtin_mul_overflow(n_rows, n, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld overflow", op, (long long)n_rows, (long long)n);
    swiglu_exact_elems<<<lrun_k_grid(total, 256, LRUN_K_ELTWISE_BLOCKS), 256, 0, (cudaStream_t)stream>>>(g, u, total);
    return lrun_k_launched(op);
}
