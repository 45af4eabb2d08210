/* kv_store.cu — cache_k[row_offset[i] + j] = k[i][j] (and v), converted to the
 * cache dtype: f16 rounded to nearest even, as the CPU cache writer
 * (lrun_cpu_f16_from_f32), so both caches hold the same bits. */
#include "kv_store.cuh"

template <int D>
__global__ void kv_store_elems(void *cache_k, void *cache_v, const int64_t *__restrict__ row_offset,
                               const float *__restrict__ k, const float *__restrict__ v, int64_t n_tok, int64_t kv_dim)
{
    const int64_t total = n_tok * kv_dim;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = t / kv_dim, j = t % kv_dim, dst = row_offset[i] + j;
        lrun_k_store<D>(cache_k, dst, k[t]);
        lrun_k_store<D>(cache_v, dst, v[t]);
    }
}

extern "C" lrun_status lrun_k_kv_store(lrun_dtype kv_dtype, void *cache_k, void *cache_v, const int64_t *row_offset,
                                       const float *k, const float *v, int64_t n_tok, int64_t kv_dim, void *stream)
{
    static const char op[] = "lrun_k_kv_store";
    if (!cache_k || !cache_v || !row_offset || !k || !v)
        return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op,
                         !cache_k ? "cache_k" : (!cache_v ? "cache_v" : (!row_offset ? "row_offset" : (!k ? "k" : "v"))));
    if (n_tok <= 0 || kv_dim <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_tok %lld, kv_dim %lld (both must be > 0)", op, (long long)n_tok,
                         (long long)kv_dim);
    if (kv_dtype != LRUN_DTYPE_F16 && kv_dtype != LRUN_DTYPE_F32)
        return lrun_fail(LRUN_E_ARG, "%s: kv_dtype %s (expected f16 or f32)", op, lrun_dtype_name(kv_dtype));
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t total;
    if (__builtin_mul_overflow(n_tok, kv_dim, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld overflow", op, (long long)n_tok, (long long)kv_dim);
    const unsigned g = lrun_k_grid(total, LRUN_K_KV_STORE_THREADS, LRUN_K_ELTWISE_BLOCKS);
    cudaStream_t st = (cudaStream_t)stream;
    if (kv_dtype == LRUN_DTYPE_F16)
        kv_store_elems<LRUN_DTYPE_F16><<<g, LRUN_K_KV_STORE_THREADS, 0, st>>>(cache_k, cache_v, row_offset, k, v, n_tok,
                                                                              kv_dim);
    else
        kv_store_elems<LRUN_DTYPE_F32><<<g, LRUN_K_KV_STORE_THREADS, 0, st>>>(cache_k, cache_v, row_offset, k, v, n_tok,
                                                                              kv_dim);
    return lrun_k_launched(op);
}
