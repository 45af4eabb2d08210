/* rope_exact.cu — lrun_cpu_rope_apply on q and k with the table of
 * lrun_cpu_rope_cos_sin computed on the host (glibc's cosf/sinf and the f32
 * angle recurrence are not redone here): out0 = fma(a, c, -(b·s)),
 * out1 = fma(a, s, b·c). Then k and v go to the cache rows, rounded to f16
 * for an f16 cache, as lrun_cpu_kv_store. */
#include "rope_exact.cuh"

template <int KV>
__global__ void __launch_bounds__(LRUN_K_ROPEX_THREADS)
    rope_store_exact_tokens(float *q, float *k, const float *__restrict__ v, const float *__restrict__ cs,
                            int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot,
                            int style, void *cache_k, void *cache_v, const int64_t *__restrict__ row_offset)
{
    const int64_t half = n_rot / 2, q_dim = n_head * head_dim, kv_dim = n_head_kv * head_dim;
    for (int64_t t = blockIdx.x; t < n_tok; t += gridDim.x) {
        const float *c = cs + t * n_rot;
        for (int64_t u = threadIdx.x; u < (n_head + n_head_kv) * half; u += LRUN_K_ROPEX_THREADS) {
            const int64_t h = u / half, i = u % half;
            float *xh = h < n_head ? q + t * q_dim + h * head_dim : k + t * kv_dim + (h - n_head) * head_dim;
            const int64_t i0 = style == LRUN_ROPE_STYLE_ADJACENT ? 2 * i : i;
            const int64_t i1 = style == LRUN_ROPE_STYLE_ADJACENT ? 2 * i + 1 : i + half;
            const float cc = c[2 * i], ss = c[2 * i + 1], a = xh[i0], b = xh[i1];
            xh[i0] = __fmaf_rn(a, cc, -__fmul_rn(b, ss));
            xh[i1] = __fmaf_rn(a, ss, __fmul_rn(b, cc));
        }
        __syncthreads();
        const int64_t off = row_offset[t];
        for (int64_t j = threadIdx.x; j < kv_dim; j += LRUN_K_ROPEX_THREADS) {
            lrun_k_store<KV>(cache_k, off + j, k[t * kv_dim + j]);
            lrun_k_store<KV>(cache_v, off + j, v[t * kv_dim + j]);
        }
        __syncthreads();
    }
}

extern "C" lrun_status lrun_k_rope_store_exact(float *q, float *k, const float *v, const float *cs, int64_t n_tok,
                                               int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot,
                                               int style, lrun_dtype kv_dtype, void *cache_k, void *cache_v,
                                               const int64_t *row_offset, void *stream)
{
    static const char op[] = "lrun_k_rope_store_exact";
    if (!q || !k || !v || !cs || !cache_k || !cache_v || !row_offset)
        return lrun_fail(LRUN_E_ARG, "%s: q, k, v, cs, the caches and row_offset must not be NULL", op);
    if (n_tok <= 0 || n_head <= 0 || n_head_kv <= 0 || head_dim <= 0 || n_rot < 0 || n_rot > head_dim ||
        n_rot % 2 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_tok %lld, n_head %lld, n_head_kv %lld, head_dim %lld, n_rot %lld", op,
                         (long long)n_tok, (long long)n_head, (long long)n_head_kv, (long long)head_dim,
                         (long long)n_rot);
    if (style != LRUN_ROPE_STYLE_ADJACENT && style != LRUN_ROPE_STYLE_HALF)
        return lrun_fail(LRUN_E_ARG, "%s: unknown RoPE style %d", op, style);
    if (kv_dtype != LRUN_DTYPE_F16 && kv_dtype != LRUN_DTYPE_F32)
        return lrun_fail(LRUN_E_ARG, "%s: kv_dtype %s is not f16 or f32", op, lrun_dtype_name(kv_dtype));
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = (unsigned)(n_tok < LRUN_K_ELTWISE_BLOCKS ? n_tok : LRUN_K_ELTWISE_BLOCKS);
    cudaStream_t s = (cudaStream_t)stream;
    if (kv_dtype == LRUN_DTYPE_F16)
        rope_store_exact_tokens<LRUN_DTYPE_F16><<<g, LRUN_K_ROPEX_THREADS, 0, s>>>(
            q, k, v, cs, n_tok, n_head, n_head_kv, head_dim, n_rot, style, cache_k, cache_v, row_offset);
    else
        rope_store_exact_tokens<LRUN_DTYPE_F32><<<g, LRUN_K_ROPEX_THREADS, 0, s>>>(
            q, k, v, cs, n_tok, n_head, n_head_kv, head_dim, n_rot, style, cache_k, cache_v, row_offset);
    return lrun_k_launched(op);
}
