/* attention_exact.cu — lrun_cpu_attention_head on the GPU, to the bit:
 *   scores: ggml_vec_dot_f32's 4x8 accumulators (the part past the last
 *     whole 32 added in double), or, for an f16 cache in a step of >= 2
 *     tokens, tinyBLAS's 8-lane chain; then times scale;
 *   softmax: scores padded with -inf to a multiple of 8, v_expf(w - max),
 *     each group's hsum8 added into a double in order, p = e·(float)(1/sum);
 *   values: out[d] = Σ_j p[j]·v[j][d] over the positions rounded up to 8, in
 *     tinyBLAS's 8-lane chain (steps of >= 2 tokens) or the 4x8 order.
 * With an f16 cache q and p are rounded to f16 first, as llama.cpp converts
 * them. The CPU's sums read the values of the padding positions: a later
 * position of the same step where one is stored (token i sees n_valid[i]
 * stored positions), zero past that (its cache keeps unused cells zero);
 * this kernel reads the same values so even the sign of a zero agrees. */
#include "attention_exact.cuh"

template <int F16> static __device__ __forceinline__ float kv_load(const void *c, int64_t i)
{
    return F16 ? lrun_k_f16(((const uint16_t *)c)[i]) : ((const float *)c)[i];
}

template <int F16>
__global__ void __launch_bounds__(LRUN_K_ATTNX_THREADS)
    attention_exact_heads(const float *__restrict__ q, const void *cache_k, const void *cache_v,
                          const int64_t *__restrict__ kv_base, const int32_t *__restrict__ n_kv,
                          const int32_t *__restrict__ n_valid, int64_t n_tok, int64_t n_head, int64_t group,
                          int64_t head_dim, float scale, int chain8, int64_t n_swa, float *__restrict__ out)
{
    extern __shared__ float sh[];
    __shared__ float red[32];
    __shared__ float inv_sum;
    float *qs = sh, *p = sh + head_dim;
    const int64_t kv_dim = n_head / group * head_dim;
    const int tid = threadIdx.x;
    for (int64_t task = blockIdx.x; task < n_tok * n_head; task += gridDim.x) {
        const int64_t i = task / n_head, h = task % n_head;
        const int64_t n_pos = n_kv[i], n_val = n_valid[i], n8 = (n_pos + 7) / 8 * 8;
        const int64_t lo = n_swa > 0 && n_pos > n_swa ? n_pos - n_swa : 0; /* a sliding window's first position */
        const float *qh = q + task * head_dim;
        for (int64_t d = tid; d < head_dim; d += LRUN_K_ATTNX_THREADS) qs[d] = F16 ? lrun_k_round_f16(qh[d]) : qh[d];
        __syncthreads();
        const int64_t base = kv_base[i] + (h / group) * head_dim;

        // scores
        const int64_t np = head_dim & ~(int64_t)31;
        const bool score_chain8 = F16 && chain8 && head_dim % 8 == 0;
        for (int64_t j = tid; j < n_pos; j += LRUN_K_ATTNX_THREADS) {
            const int64_t kj = base + j * kv_dim;
            float sc;
            if (score_chain8) {
                float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                for (int64_t e = 0; e < head_dim; e += 8)
#pragma unroll
                    for (int l = 0; l < 8; l++) a[l] = __fmaf_rn(kv_load<F16>(cache_k, kj + e + l), qs[e + l], a[l]);
                sc = lrun_k_hsum8(a);
            } else {
                float a[4][8];
#pragma unroll
                for (int r = 0; r < 4; r++)
#pragma unroll
                    for (int l = 0; l < 8; l++) a[r][l] = 0.0f;
                for (int64_t e = 0; e < np; e += 32)
#pragma unroll
                    for (int r = 0; r < 4; r++)
#pragma unroll
                        for (int l = 0; l < 8; l++)
                            a[r][l] = __fmaf_rn(kv_load<F16>(cache_k, kj + e + 8 * r + l), qs[e + 8 * r + l], a[r][l]);
                double s = (double)lrun_k_reduce4x8(a);
                for (int64_t e = np; e < head_dim; e++) s = __dadd_rn(s, (double)__fmul_rn(kv_load<F16>(cache_k, kj + e), qs[e]));
                sc = __double2float_rn(s);
            }
            p[j] = j < lo ? -INFINITY : __fmul_rn(sc, scale); /* masked as the CPU does: e = 0, same sums */
        }
        for (int64_t j = n_pos + tid; j < n8; j += LRUN_K_ATTNX_THREADS) p[j] = -INFINITY;
        __syncthreads();

        // softmax
        float mx = -INFINITY;
        for (int64_t j = tid; j < n8; j += LRUN_K_ATTNX_THREADS) mx = fmaxf(mx, p[j]);
        mx = lrun_k_block_reduce<LRUN_K_ATTNX_THREADS, 1>(mx, red);
        for (int64_t j = tid; j < n8; j += LRUN_K_ATTNX_THREADS) p[j] = lrun_k_v_expf(__fsub_rn(p[j], mx));
        __syncthreads();
        if (tid == 0) {
            double sum = 0.0;
            for (int64_t g = 0; g < n8; g += 8) sum = __dadd_rn(sum, (double)lrun_k_hsum8(p + g));
            inv_sum = __double2float_rn(__ddiv_rn(1.0, sum));
        }
        __syncthreads();
        for (int64_t j = tid; j < n8; j += LRUN_K_ATTNX_THREADS) {
            const float v = __fmul_rn(p[j], inv_sum);
            p[j] = F16 && j < n_pos ? lrun_k_round_f16(v) : v;
        }
        __syncthreads();

        // values
        for (int64_t d = tid; d < head_dim; d += LRUN_K_ATTNX_THREADS) {
            const int64_t vd = base + d;
            float r;
            if (chain8) {
                float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                for (int64_t j0 = 0; j0 < n8; j0 += 8)
#pragma unroll
                    for (int l = 0; l < 8; l++) {
                        const int64_t j = j0 + l;
                        const float v = j < n_val ? kv_load<F16>(cache_v, vd + j * kv_dim) : 0.0f;
                        a[l] = __fmaf_rn(v, p[j], a[l]);
                    }
                r = lrun_k_hsum8(a);
            } else {
                float a[4][8];
#pragma unroll
                for (int g = 0; g < 4; g++)
#pragma unroll
                    for (int l = 0; l < 8; l++) a[g][l] = 0.0f;
                for (int64_t j0 = 0; j0 < n8; j0 += 32)
#pragma unroll
                    for (int g = 0; g < 4; g++) {
                        if (j0 + 8 * g >= n8) break; /* group g of 8 goes to accumulator g: zero padding to 32 */
#pragma unroll
                        for (int l = 0; l < 8; l++) {
                            const int64_t j = j0 + 8 * g + l;
                            const float v = j < n_val ? kv_load<F16>(cache_v, vd + j * kv_dim) : 0.0f;
                            a[g][l] = __fmaf_rn(v, p[j], a[g][l]);
                        }
                    }
                r = lrun_k_reduce4x8(a);
            }
            out[task * head_dim + d] = r;
        }
        __syncthreads(); /* qs and p are reused by the next task */
    }
}

extern "C" size_t lrun_k_attention_exact_smem(int64_t head_dim, int64_t max_kv)
{
    return (size_t)(head_dim + (max_kv + 31) / 32 * 32) * sizeof(float);
}

extern "C" lrun_status lrun_k_attention_exact(lrun_dtype kv_dtype, const float *q, const void *cache_k,
                                              const void *cache_v, const int64_t *kv_base, const int32_t *n_kv,
                                              const int32_t *n_valid, int64_t n_tok, int64_t n_head, int64_t n_head_kv,
                                              int64_t head_dim, int64_t max_kv, float scale, int chain8, float *out,
                                              void *stream)
{
    return lrun_k_attention_exact_window(kv_dtype, q, cache_k, cache_v, kv_base, n_kv, n_valid, n_tok, n_head,
                                         n_head_kv, head_dim, max_kv, scale, chain8, 0, out, stream);
}

extern "C" lrun_status lrun_k_attention_exact_window(lrun_dtype kv_dtype, const float *q, const void *cache_k,
                                                     const void *cache_v, const int64_t *kv_base, const int32_t *n_kv,
                                                     const int32_t *n_valid, int64_t n_tok, int64_t n_head,
                                                     int64_t n_head_kv, int64_t head_dim, int64_t max_kv, float scale,
                                                     int chain8, int64_t n_swa, float *out, void *stream)
{
    static const char op[] = "lrun_k_attention_exact";
    if (!q || !cache_k || !cache_v || !kv_base || !n_kv || !n_valid || !out)
        return lrun_fail(LRUN_E_ARG, "%s: q, the caches, kv_base, n_kv, n_valid and out must not be NULL", op);
    if (kv_dtype != LRUN_DTYPE_F16 && kv_dtype != LRUN_DTYPE_F32)
        return lrun_fail(LRUN_E_ARG, "%s: kv_dtype %s is not f16 or f32", op, lrun_dtype_name(kv_dtype));
    if (n_tok <= 0 || n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0 || head_dim <= 0 || max_kv <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_tok %lld, n_head %lld, n_head_kv %lld, head_dim %lld, max_kv %lld",
                         op, (long long)n_tok, (long long)n_head, (long long)n_head_kv, (long long)head_dim,
                         (long long)max_kv);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    if (n_swa < 0) return lrun_fail(LRUN_E_ARG, "%s: n_swa %lld (0: no window, else > 0)", op, (long long)n_swa);
    const size_t smem = lrun_k_attention_exact_smem(head_dim, max_kv);
    const int64_t tasks = n_tok * n_head;
    const unsigned g = (unsigned)(tasks < LRUN_K_ELTWISE_BLOCKS ? tasks : LRUN_K_ELTWISE_BLOCKS);
    cudaStream_t s = (cudaStream_t)stream;
    const int64_t group = n_head / n_head_kv;
    if (kv_dtype == LRUN_DTYPE_F16) {
        if (smem > 48 * 1024)
            (void)cudaFuncSetAttribute(attention_exact_heads<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attention_exact_heads<1><<<g, LRUN_K_ATTNX_THREADS, smem, s>>>(q, cache_k, cache_v, kv_base, n_kv, n_valid,
                                                                       n_tok, n_head, group, head_dim, scale, chain8,
                                                                       n_swa, out);
    } else {
        if (smem > 48 * 1024)
            (void)cudaFuncSetAttribute(attention_exact_heads<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attention_exact_heads<0><<<g, LRUN_K_ATTNX_THREADS, smem, s>>>(q, cache_k, cache_v, kv_base, n_kv, n_valid,
                                                                       n_tok, n_head, group, head_dim, scale, chain8,
                                                                       n_swa, out);
    }
    return lrun_k_launched(op);
}
