/* rope.cu — RoPE as lrun_cpu_rope_cos_sin + lrun_cpu_rope_apply
 * (runtime/cpu/cpu_ops.c): theta_i = pos * freq_scale * base^(-2i/n_rot)
 * [/ freq_factors[i]] in double, like the CPU twin (and ggml), then cos and sin
 * rounded to float and the rotation in f32. Double keeps theta exact enough
 * at positions in the hundreds of thousands, where an f32 theta would be off
 * by whole hundredths of a radian; the op is tiny next to the GEMVs. */
#include "rope.cuh"

__global__ void rope_pairs(float *x, const int32_t *__restrict__ pos, int64_t n_tok, int64_t n_head,
                           int64_t head_dim, int64_t n_rot, double base, double freq_scale,
                           const float *__restrict__ freq_factors, int style)
{
    const int64_t half = n_rot / 2, total = n_tok * n_head * half;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = t % half, th = t / half, tok = th / n_head;
        double theta = (double)pos[tok] * freq_scale * pow(base, -2.0 * (double)i / (double)n_rot);
        if (freq_factors) theta /= (double)freq_factors[i];
        double sd, cd;
        sincos(theta, &sd, &cd);
        const float c = (float)cd, s = (float)sd;
        float *xh = x + th * head_dim;
        const int64_t ia = style == LRUN_ROPE_STYLE_ADJACENT ? 2 * i : i;
        const int64_t ib = style == LRUN_ROPE_STYLE_ADJACENT ? 2 * i + 1 : i + half;
        const float a = xh[ia], b = xh[ib];
        /* no contraction into FMAs: the CPU twin rounds each product */
        xh[ia] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        xh[ib] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
}

extern "C" lrun_status lrun_k_rope(float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                                   int64_t n_rot, float base, float freq_scale, const float *freq_factors, int style,
                                   void *stream)
{
    static const char op[] = "lrun_k_rope";
    if (!x || !pos) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !x ? "x" : "pos");
    if (n_tok <= 0 || n_head <= 0 || head_dim <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_tok %lld, n_head %lld, head_dim %lld (all must be > 0)", op,
                         (long long)n_tok, (long long)n_head, (long long)head_dim);
    if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > head_dim)
        return lrun_fail(LRUN_E_ARG, "%s: n_rot %lld (must be even, > 0 and <= head_dim %lld)", op, (long long)n_rot,
                         (long long)head_dim);
    if (style != LRUN_ROPE_STYLE_ADJACENT && style != LRUN_ROPE_STYLE_HALF)
        return lrun_fail(LRUN_E_ARG, "%s: style %d (expected an lrun_rope_style)", op, style);
    if (!(base > 0.0f) || !(freq_scale > 0.0f))
        return lrun_fail(LRUN_E_ARG, "%s: base %g and freq_scale %g must be > 0", op, (double)base,
                         (double)freq_scale);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t rows, total;
    if (__builtin_mul_overflow(n_tok, n_head, &rows) || __builtin_mul_overflow(rows, head_dim, &total))
        return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld x n_head %lld x head_dim %lld overflows", op, (long long)n_tok,
                         (long long)n_head, (long long)head_dim);
    const unsigned g = lrun_k_grid(rows * (n_rot / 2), LRUN_K_ROPE_THREADS, LRUN_K_ELTWISE_BLOCKS);
    rope_pairs<<<g, LRUN_K_ROPE_THREADS, 0, (cudaStream_t)stream>>>(x, pos, n_tok, n_head, head_dim, n_rot,
                                                                     (double)base, (double)freq_scale, freq_factors,
                                                                     style);
    return lrun_k_launched(op);
}
