/* moe_gemv.cu — experts' products from device-side expert ids, and the
 * weighted sum of each token's slots (see moe_gemv.cuh). */
#include "moe_gemv.cuh"

#include "dequantize.cuh"

/* silu(g)·u as lrun_k_swiglu (the accurate expf). */
static __device__ __forceinline__ float swiglu1(float g, float u) { return g / (1.0f + expf(-g)) * u; }

/* The dot of weight row wr (k elements of T) with x, this lane's units, summed over the warp. */
template <int T> static __device__ __forceinline__ float row_dot(const uint8_t *wr, const float *x, int64_t k, int lane)
{
    using Q = lrun_k_unit<T>;
    const int64_t units = k / Q::ELEMS * Q::UNITS;
    float acc = 0.0f;
    for (int64_t u = lane; u < units; u += 32) {
        const int ub = (int)(u % Q::UNITS);
        const int64_t blk = u / Q::UNITS;
        const typename Q::raw r = Q::load(wr + (size_t)blk * Q::BYTES, ub);
        float v[Q::RUNS * 4];
        Q::dequant(r, ub, v);
        const float *xb = x + blk * Q::ELEMS;
#pragma unroll
        for (int run = 0; run < Q::RUNS; run++) {
            const float *xr = xb + Q::offset(ub, run);
#pragma unroll
            for (int j = 0; j < 4; j++) acc = fmaf(v[4 * run + j], xr[j], acc);
        }
    }
    return lrun_k_warp_sum(acc);
}

/* y[pair] (n) = W_e · x[pair / x_div] for e = ids[pair]; swiglu: silu(W_e ·) * (U_e ·).
 * oai (gpt-oss): each product plus its expert's bias row (bw, bu: (n_expert, n)),
 * and swiglu_oai for silu·up. */
template <int T>
__global__ void __launch_bounds__(LRUN_K_MOE_GEMV_WARPS * 32)
    moe_gemv_rows(const uint8_t *__restrict__ w, const uint8_t *__restrict__ u, size_t row_bytes, size_t expert_bytes,
                  int64_t n, int64_t k, const int32_t *__restrict__ ids, const float *__restrict__ x, int x_div,
                  const float *__restrict__ bw, const float *__restrict__ bu, const int32_t *__restrict__ bias_ids,
                  int oai, float *__restrict__ y)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * LRUN_K_MOE_GEMV_WARPS + (threadIdx.x >> 5);
    const int pair = blockIdx.y;
    if (row >= n) return; /* warp-level work only */
    const int64_t e = ids[pair], eb = bias_ids ? bias_ids[pair] : e; /* an expert cache's slot, its expert */
    const size_t off = (size_t)e * expert_bytes + (size_t)row * row_bytes;
    const float *xr = x + (int64_t)(pair / x_div) * k;
    float g = row_dot<T>(w + off, xr, k, lane);
    if (bw) g = __fadd_rn(g, bw[eb * n + row]);
    float out = g;
    if (u) {
        float up = row_dot<T>(u + off, xr, k, lane);
        if (bu) up = __fadd_rn(up, bu[eb * n + row]);
        out = oai ? lrun_k_swiglu_oai1(g, up) : swiglu1(g, up);
    }
    if (lane == 0) y[(int64_t)pair * n + row] = out;
}

template <int T>
static void launch(const uint8_t *w, const uint8_t *u, size_t rb, size_t eb, int64_t n, int64_t k, const int32_t *ids,
                   const float *x, int x_div, int n_pairs, const float *bw, const float *bu, const int32_t *bias_ids,
                   int oai, float *y, cudaStream_t st)
{
    const dim3 grid((unsigned)((n + LRUN_K_MOE_GEMV_WARPS - 1) / LRUN_K_MOE_GEMV_WARPS), (unsigned)n_pairs);
    moe_gemv_rows<T><<<grid, LRUN_K_MOE_GEMV_WARPS * 32, 0, st>>>(w, u, rb, eb, n, k, ids, x, x_div, bw, bu, bias_ids, oai, y);
}

extern "C" int lrun_k_moe_gemv_supported(lrun_dtype t, const void *w, size_t row_bytes, size_t expert_bytes,
                                         int64_t k)
{
    switch (t) {
    case LRUN_DTYPE_F32: /* the float types' units are 16-byte loads of 8 elements */
    case LRUN_DTYPE_F16:
    case LRUN_DTYPE_BF16:
        return k % 8 == 0 && (uintptr_t)w % 16 == 0 && row_bytes % 16 == 0 && expert_bytes % 16 == 0;
    case LRUN_DTYPE_Q4_0:
    case LRUN_DTYPE_Q4_1:
    case LRUN_DTYPE_Q8_0:
    case LRUN_DTYPE_Q4_K:
    case LRUN_DTYPE_Q6_K:
    case LRUN_DTYPE_Q5_0:
    case LRUN_DTYPE_Q5_1:
    case LRUN_DTYPE_IQ4_NL:
    case LRUN_DTYPE_Q2_K:
    case LRUN_DTYPE_Q3_K:
    case LRUN_DTYPE_Q5_K:
    case LRUN_DTYPE_IQ4_XS:
    case LRUN_DTYPE_MXFP4: {
        const size_t a = lrun_k_weight_align(t);
        return (uintptr_t)w % a == 0 && row_bytes % a == 0 && expert_bytes % a == 0;
    }
    default: return 0;
    }
}

static lrun_status moe_gemv(const char *op, lrun_dtype t, const void *w, const void *u, size_t row_bytes,
                            size_t expert_bytes, int64_t n, int64_t k, const int32_t *ids, const float *x,
                            int64_t x_div, int64_t n_pairs, const float *bw, const float *bu, const int32_t *bias_ids,
                            int oai, float *y, void *stream)
{
    const lrun_status chk = lrun_k_check_weight(op, t, w, row_bytes, n, k);
    if (chk != LRUN_OK) return chk;
    if (!lrun_k_moe_gemv_supported(t, w, row_bytes, expert_bytes, k) ||
        (u && !lrun_k_moe_gemv_supported(t, u, row_bytes, expert_bytes, k)))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: %s experts at this alignment (see lrun_k_moe_gemv_supported)", op,
                         lrun_dtype_name(t));
    if (expert_bytes < (size_t)n * row_bytes)
        return lrun_fail(LRUN_E_ARG, "%s: expert_bytes %zu is less than %lld rows of %zu bytes", op, expert_bytes,
                         (long long)n, row_bytes);
    if (!ids || !x || !y) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !ids ? "ids" : (!x ? "x" : "y"));
    if (n_pairs < 1 || n_pairs > 65535 || x_div < 1)
        return lrun_fail(LRUN_E_ARG, "%s: %lld pairs (expected 1..65535), x_div %lld (>= 1)", op, (long long)n_pairs,
                         (long long)x_div);
    if ((n + LRUN_K_MOE_GEMV_WARPS - 1) / LRUN_K_MOE_GEMV_WARPS > LRUN_K_MAX_GRID)
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows need too many blocks", op, (long long)n);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const uint8_t *W = (const uint8_t *)w, *U = (const uint8_t *)u;
    const cudaStream_t st = (cudaStream_t)stream;
    const int xd = (int)x_div, np = (int)n_pairs;
    switch (t) {
    case LRUN_DTYPE_F32: launch<LRUN_DTYPE_F32>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_F16: launch<LRUN_DTYPE_F16>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_BF16: launch<LRUN_DTYPE_BF16>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q4_0: launch<LRUN_DTYPE_Q4_0>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q4_1: launch<LRUN_DTYPE_Q4_1>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q8_0: launch<LRUN_DTYPE_Q8_0>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q4_K: launch<LRUN_DTYPE_Q4_K>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q6_K: launch<LRUN_DTYPE_Q6_K>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q5_0: launch<LRUN_DTYPE_Q5_0>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q5_1: launch<LRUN_DTYPE_Q5_1>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_IQ4_NL: launch<LRUN_DTYPE_IQ4_NL>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q2_K: launch<LRUN_DTYPE_Q2_K>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q3_K: launch<LRUN_DTYPE_Q3_K>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_Q5_K: launch<LRUN_DTYPE_Q5_K>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_IQ4_XS: launch<LRUN_DTYPE_IQ4_XS>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    case LRUN_DTYPE_MXFP4: launch<LRUN_DTYPE_MXFP4>(W, U, row_bytes, expert_bytes, n, k, ids, x, xd, np, bw, bu, bias_ids, oai, y, st); break;
    default: return lrun_fail(LRUN_E_UNSUPPORTED, "%s: no kernel for %s", op, lrun_dtype_name(t));
    }
    return lrun_k_launched(op);
}

extern "C" lrun_status lrun_k_moe_gemv(lrun_dtype t, const void *w, const void *u, size_t row_bytes,
                                       size_t expert_bytes, int64_t n, int64_t k, const int32_t *ids, const float *x,
                                       int64_t x_div, int64_t n_pairs, float *y, void *stream)
{
    return moe_gemv("lrun_k_moe_gemv", t, w, u, row_bytes, expert_bytes, n, k, ids, x, x_div, n_pairs, NULL, NULL,
                    NULL, 0, y, stream);
}

extern "C" lrun_status lrun_k_moe_gemv_oai(lrun_dtype t, const void *w, const void *u, const float *bw,
                                           const float *bu, const int32_t *bias_ids, size_t row_bytes,
                                           size_t expert_bytes, int64_t n, int64_t k, const int32_t *ids,
                                           const float *x, int64_t x_div, int64_t n_pairs, float *y, void *stream)
{
    static const char op[] = "lrun_k_moe_gemv_oai";
    if (!bw || (u && !bu)) return lrun_fail(LRUN_E_ARG, "%s: the experts' bias %s is NULL", op, !bw ? "bw" : "bu");
    return moe_gemv(op, t, w, u, row_bytes, expert_bytes, n, k, ids, x, x_div, n_pairs, bw, bu, bias_ids, 1, y,
                    stream);
}

/* x[t] += ((y[t,0]·w[t,0] + y[t,1]·w[t,1]) + …), a multiply then an add per slot, as the CPU. */
__global__ void moe_combine_elems(const float *__restrict__ y, const float *__restrict__ w, int64_t n_tok, int k,
                                  int64_t d, float *__restrict__ x)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_tok * d; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / d, c = i % d;
        float o = __fmul_rn(y[(t * k) * d + c], w[t * k]);
        for (int s = 1; s < k; s++) o = __fadd_rn(o, __fmul_rn(y[(t * k + s) * d + c], w[t * k + s]));
        x[i] = __fadd_rn(x[i], o);
    }
}

extern "C" lrun_status lrun_k_moe_combine(const float *y, const float *w, int64_t n_tok, int64_t k, int64_t d, float *x,
                                          void *stream)
{
    static const char op[] = "lrun_k_moe_combine";
    if (!y || !w || !x) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !y ? "y" : (!w ? "w" : "x"));
    if (n_tok < 1 || k < 1 || k > LRUN_K_MOE_MAX_K || d < 1)
        return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld, k %lld (1..%d), d %lld", op, (long long)n_tok, (long long)k,
                         LRUN_K_MOE_MAX_K, (long long)d);
    int64_t total;
    if (__builtin_mul_overflow(n_tok, d, &total)) return lrun_fail(LRUN_E_ARG, "%s: n_tok times d overflows", op);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = lrun_k_grid(total, LRUN_K_MOE_COMBINE_THREADS, LRUN_K_ELTWISE_BLOCKS);
    moe_combine_elems<<<g, LRUN_K_MOE_COMBINE_THREADS, 0, (cudaStream_t)stream>>>(y, w, n_tok, (int)k, d, x);
    return lrun_k_launched(op);
}

/* out[tok[j]] += w[j] · y[j] for the cnt rows of one expert, one fmaf per
 * element. An expert takes a token at most once, so no two threads of a
 * launch write the same element; launches in stream order sum a token's
 * experts in the order they are launched. */
__global__ void moe_scatter_add_elems(const float *__restrict__ y, const int32_t *__restrict__ tok,
                                      const float *__restrict__ w, int64_t cnt, int64_t d, float *__restrict__ out)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < cnt * d; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t j = i / d, c = i % d;
        float *o = out + (int64_t)tok[j] * d + c;
        *o = fmaf(w[j], y[i], *o);
    }
}

extern "C" lrun_status lrun_k_moe_scatter_add(const float *y, const int32_t *tok, const float *w, int64_t cnt,
                                              int64_t d, float *out, void *stream)
{
    static const char op[] = "lrun_k_moe_scatter_add";
    if (!y || !tok || !w || !out)
        return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !y ? "y" : (!tok ? "tok" : (!w ? "w" : "out")));
    if (cnt < 1 || d < 1) return lrun_fail(LRUN_E_ARG, "%s: cnt %lld, d %lld (both >= 1)", op, (long long)cnt, (long long)d);
    int64_t total;
    if (__builtin_mul_overflow(cnt, d, &total)) return lrun_fail(LRUN_E_ARG, "%s: cnt times d overflows", op);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const unsigned g = lrun_k_grid(total, LRUN_K_MOE_COMBINE_THREADS, LRUN_K_ELTWISE_BLOCKS);
    moe_scatter_add_elems<<<g, LRUN_K_MOE_COMBINE_THREADS, 0, (cudaStream_t)stream>>>(y, tok, w, cnt, d, out);
    return lrun_k_launched(op);
}
