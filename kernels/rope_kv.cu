/* rope_kv.cu — RoPE of q and k and the store of k and v into the cache, in
 * one launch (lrun_k_rope_kv_store in kernels.h): per layer of decode this
 * replaces three small kernels (lrun_k_rope twice, lrun_k_kv_store) whose
 * launch and ramp cost more than their work. The arithmetic is rope.cu's and
 * kv_store.cu's, operation for operation, so the bits are the same.
 *
 * One thread per (token, head, pair) over the n_head query heads then the
 * n_head_kv key heads, head_dim/2 pairs each: pairs i < n_rot/2 are RoPE's
 * rotated pairs (2i, 2i+1 or i, i+n_rot/2), the rest cover the unrotated
 * dims n_rot.. two at a time, so a key head's thread also stores its two
 * elements of k and of v. */
#include "common.cuh"

#define LRUN_K_ROPE_KV_THREADS 256

template <int D>
__global__ void rope_kv_pairs(float *q, float *k, const float *__restrict__ v, const int32_t *__restrict__ pos,
                              int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot,
                              double base, double freq_scale, const float *__restrict__ freq_factors, int style,
                              void *cache_k, void *cache_v, const int64_t *__restrict__ row_offset,
                              lrun_k_yarn yarn)
{
    lrun_k_pdl_trigger();
    lrun_k_pdl_wait();
    const int64_t pairs = head_dim / 2, half = n_rot / 2, heads = n_head + n_head_kv;
    const int64_t total = n_tok * heads * pairs;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = t % pairs, th = t / pairs, tok = th / heads, h = th % heads;
        const bool is_k = h >= n_head;
        float *xh = is_k ? k + (tok * n_head_kv + (h - n_head)) * head_dim : q + (tok * n_head + h) * head_dim;
        int64_t ia, ib;
        if (i < half) {
            ia = style == LRUN_ROPE_STYLE_ADJACENT ? 2 * i : i;
            ib = style == LRUN_ROPE_STYLE_ADJACENT ? 2 * i + 1 : i + half;
            double sd, cd, mscale = 1.0;
            if (yarn.mscale > 0.0f) { /* YaRN (lrun_k_yarn in kernels.h), theta in double as below */
                double te = (double)pos[tok] * pow(base, -2.0 * (double)i / (double)n_rot);
                if (freq_factors) te /= (double)freq_factors[i];
                const double y = ((double)i - yarn.low) / fmax(0.001, (double)yarn.high - yarn.low);
                const double ramp = 1.0 - fmin(1.0, fmax(0.0, y));
                sincos(freq_scale * te * (1.0 - ramp) + te * ramp, &sd, &cd);
                mscale = yarn.mscale;
            } else {
                double theta = (double)pos[tok] * freq_scale * pow(base, -2.0 * (double)i / (double)n_rot);
                if (freq_factors) theta /= (double)freq_factors[i];
                sincos(theta, &sd, &cd);
            }
            const float c = (float)(cd * mscale), s = (float)(sd * mscale);
            const float a = xh[ia], b = xh[ib];
            /* no contraction into FMAs: the CPU twin rounds each product */
            xh[ia] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
            xh[ib] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
        } else {
            ia = n_rot + 2 * (i - half);
            ib = ia + 1;
        }
        if (is_k) {
            const int64_t j = (h - n_head) * head_dim, dst = row_offset[tok] + j;
            const float *vh = v + tok * n_head_kv * head_dim + j;
            lrun_k_store<D>(cache_k, dst + ia, xh[ia]);
            lrun_k_store<D>(cache_k, dst + ib, xh[ib]);
            lrun_k_store<D>(cache_v, dst + ia, vh[ia]);
            lrun_k_store<D>(cache_v, dst + ib, vh[ib]);
        }
    }
}

extern "C" lrun_status lrun_k_rope_kv_store(float *q, float *k, const float *v, const int32_t *pos, int64_t n_tok,
                                            int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot,
                                            float base, float freq_scale, const float *freq_factors, int style,
                                            lrun_dtype kv_dtype, void *cache_k, void *cache_v,
                                            const int64_t *row_offset, void *stream)
{
    const lrun_k_yarn none = {0.0f, 0.0f, 0.0f};
    return lrun_k_rope_kv_store_yarn(q, k, v, pos, n_tok, n_head, n_head_kv, head_dim, n_rot, base, freq_scale,
                                     freq_factors, style, &none, kv_dtype, cache_k, cache_v, row_offset, stream);
}

extern "C" lrun_status lrun_k_rope_kv_store_yarn(float *q, float *k, const float *v, const int32_t *pos,
                                                 int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                                                 int64_t n_rot, float base, float freq_scale,
                                                 const float *freq_factors, int style, const lrun_k_yarn *yarn,
                                                 lrun_dtype kv_dtype, void *cache_k, void *cache_v,
                                                 const int64_t *row_offset, void *stream)
{
    static const char op[] = "lrun_k_rope_kv_store";
    if (!yarn || !(yarn->mscale >= 0.0f) || !(yarn->high >= yarn->low))
        return lrun_fail(LRUN_E_ARG, "%s: yarn is NULL or its mscale < 0 or high < low", op);
    if (!q || !k || !v || !pos || !cache_k || !cache_v || !row_offset)
        return lrun_fail(LRUN_E_ARG, "%s: a NULL pointer (q %p, k %p, v %p, pos %p, caches %p %p, rows %p)", op,
                         (void *)q, (void *)k, (const void *)v, (const void *)pos, cache_k, cache_v,
                         (const void *)row_offset);
    if (n_tok <= 0 || n_head <= 0 || n_head_kv <= 0 || head_dim <= 0 || head_dim % 2 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_tok %lld, n_head %lld, n_head_kv %lld, head_dim %lld (all > 0, "
                         "head_dim even)", op, (long long)n_tok, (long long)n_head, (long long)n_head_kv,
                         (long long)head_dim);
    if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > head_dim)
        return lrun_fail(LRUN_E_ARG, "%s: n_rot %lld (must be even, > 0 and <= head_dim %lld)", op, (long long)n_rot,
                         (long long)head_dim);
    if (style != LRUN_ROPE_STYLE_ADJACENT && style != LRUN_ROPE_STYLE_HALF)
        return lrun_fail(LRUN_E_ARG, "%s: style %d (expected an lrun_rope_style)", op, style);
    if (!(base > 0.0f) || !(freq_scale > 0.0f))
        return lrun_fail(LRUN_E_ARG, "%s: base %g and freq_scale %g must be > 0", op, (double)base,
                         (double)freq_scale);
    if (kv_dtype != LRUN_DTYPE_F16 && kv_dtype != LRUN_DTYPE_F32)
        return lrun_fail(LRUN_E_ARG, "%s: kv_dtype %s (expected f16 or f32)", op, lrun_dtype_name(kv_dtype));
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t heads, rows, total;
    if (__builtin_add_overflow(n_head, n_head_kv, &heads) || __builtin_mul_overflow(n_tok, heads, &rows) ||
        __builtin_mul_overflow(rows, head_dim, &total))
        return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld x heads %lld x head_dim %lld overflows", op, (long long)n_tok,
                         (long long)(n_head + n_head_kv), (long long)head_dim);
    const unsigned g = lrun_k_grid(total / 2, LRUN_K_ROPE_KV_THREADS, LRUN_K_ELTWISE_BLOCKS);
    cudaStream_t st = (cudaStream_t)stream;
    (void)lrun_k_launch(kv_dtype == LRUN_DTYPE_F16 ? rope_kv_pairs<LRUN_DTYPE_F16> : rope_kv_pairs<LRUN_DTYPE_F32>,
                        dim3(g), dim3(LRUN_K_ROPE_KV_THREADS), 0, st, q, k, v, pos, n_tok, n_head, n_head_kv,
                        head_dim, n_rot, (double)base, (double)freq_scale, freq_factors, style, cache_k, cache_v,
                        row_offset, *yarn);
    return lrun_k_launched(op);
}
