/* moe_exact.cu — the exact router product and the exact weighted sum of a
 * token's experts (moe_exact.cuh has the arithmetic and the launch shapes). */
#include "moe_exact.cuh"

/* One output per half warp: row blockIdx.x·ROWS + threadIdx.x/16 of W
 * against token blockIdx.y of x. Every thread reaches the shuffles (rows
 * past n compute zeros and store nothing), so the full mask is right. */
template <int T>
__global__ void moe_router_exact(const uint8_t *__restrict__ w, size_t row_bytes, int64_t n, int64_t k,
                                 const float *__restrict__ x, float *__restrict__ y)
{
    const int lane = threadIdx.x & 15;
    const int64_t row = (int64_t)blockIdx.x * LRUN_K_MOE_ROUTER_ROWS + (threadIdx.x >> 4);
    const int64_t tok = blockIdx.y;
    const float *xr = x + tok * k;
    float acc = 0.0f;
    if (row < n) {
        const uint8_t *wr = w + (size_t)row * row_bytes;
        for (int64_t i = lane; i < k; i += 16) acc = __fmaf_rn(lrun_k_load_float<T>(wr, i), xr[i], acc);
    }
    acc = __fadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, 8, 16)); /* acc0 + acc1 */
    acc = __fadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, 4, 16)); /* low 128 + high 128 */
    acc = __fadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, 2, 16)); /* + movehl */
    acc = __fadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, 1, 16)); /* + movehdup */
    if (row < n && lane == 0) y[tok * n + row] = acc;
}

extern "C" lrun_status lrun_k_moe_router_exact(lrun_dtype w_dtype, const void *w, size_t row_bytes, int64_t n,
                                               int64_t k, const float *x, int64_t m, float *y, void *stream)
{
    static const char op[] = "lrun_k_moe_router_exact";
    if (!w || !x || !y) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !w ? "w" : !x ? "x" : "y");
    if (w_dtype != LRUN_DTYPE_F32 && w_dtype != LRUN_DTYPE_F16 && w_dtype != LRUN_DTYPE_BF16)
        return lrun_fail(LRUN_E_ARG, "%s: weight dtype %s (f32, f16 or bf16)", op, lrun_dtype_name(w_dtype));
    if (n <= 0 || k <= 0 || m <= 0 || k % 16 != 0 || m > 65535)
        return lrun_fail(LRUN_E_ARG, "%s: shape n %lld, k %lld, m %lld (k a multiple of 16: the CPU's serial tail "
                         "is not reproduced; m at most 65535)", op, (long long)n, (long long)k, (long long)m);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const dim3 grid((unsigned)((n + LRUN_K_MOE_ROUTER_ROWS - 1) / LRUN_K_MOE_ROUTER_ROWS), (unsigned)m);
    const int threads = 16 * LRUN_K_MOE_ROUTER_ROWS;
    cudaStream_t s = (cudaStream_t)stream;
    const uint8_t *wb = (const uint8_t *)w;
    if (w_dtype == LRUN_DTYPE_F32) moe_router_exact<LRUN_DTYPE_F32><<<grid, threads, 0, s>>>(wb, row_bytes, n, k, x, y);
    else if (w_dtype == LRUN_DTYPE_F16)
        moe_router_exact<LRUN_DTYPE_F16><<<grid, threads, 0, s>>>(wb, row_bytes, n, k, x, y);
    else moe_router_exact<LRUN_DTYPE_BF16><<<grid, threads, 0, s>>>(wb, row_bytes, n, k, x, y);
    return lrun_k_launched(op);
}

/* Element t of token blockIdx.y: its k slots' products added in slot order,
 * then into the residual stream. */
__global__ void moe_combine_exact(const float *__restrict__ Y, const int32_t *__restrict__ pos,
                                  const float *__restrict__ w, int64_t k, int64_t d, float *x)
{
    const int64_t tok = blockIdx.y;
    const int32_t *p = pos + tok * k;
    const float *ws = w + tok * k;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < d; t += (int64_t)gridDim.x * blockDim.x) {
        float acc = __fmul_rn(Y[(int64_t)p[0] * d + t], ws[0]);
        for (int64_t s = 1; s < k; s++) acc = __fadd_rn(acc, __fmul_rn(Y[(int64_t)p[s] * d + t], ws[s]));
        x[tok * d + t] = __fadd_rn(x[tok * d + t], acc);
    }
}

extern "C" lrun_status lrun_k_moe_combine_exact(const float *Y, const int32_t *pos, const float *w, int64_t n_tok,
                                                int64_t k, int64_t d, float *x, void *stream)
{
    static const char op[] = "lrun_k_moe_combine_exact";
    if (!Y || !pos || !w || !x)
        return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !Y ? "Y" : !pos ? "pos" : !w ? "w" : "x");
    if (n_tok <= 0 || n_tok > 65535 || k <= 0 || d <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_tok %lld (at most 65535), k %lld, d %lld", op, (long long)n_tok,
                         (long long)k, (long long)d);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const dim3 grid(lrun_k_grid(d, 256, LRUN_K_ELTWISE_BLOCKS), (unsigned)n_tok);
    moe_combine_exact<<<grid, 256, 0, (cudaStream_t)stream>>>(Y, pos, w, k, d, x);
    return lrun_k_launched(op);
}
