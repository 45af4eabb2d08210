/* gemv_q8dot.cu — the exact Q4_0/Q4_1/Q8_0 matmul (see gemv_q8dot.cuh).
 * Per output, as dot1_q4_0 / dot1_q4_1 / dot1_q8_0 in runtime/quant_dot.c:
 *   for each block b: dd = dw·dx; acc[l] = fma(dd, lane_l, acc[l])
 *                     (Q4_1: summs = fma(mw, s_x, summs))
 *   y = hsum8(acc) (+ summs)
 * The CPU computes every output of a prefill chunk with the same kernel and
 * order as a decode output, so one kernel serves both. */
#include "gemv_q8dot.cuh"

struct q8dot_parts {
    const uint8_t *w[LRUN_K_Q8DOT_MAX_PARTS];
    size_t row_bytes[LRUN_K_Q8DOT_MAX_PARTS];
    int64_t n[LRUN_K_Q8DOT_MAX_PARTS];
    float *y[LRUN_K_Q8DOT_MAX_PARTS];
    int64_t first[LRUN_K_Q8DOT_MAX_PARTS + 1]; /* first concatenated row of each part; [n_parts] = total */
    int n_parts;
};

/* The packed int8 weights of lane l of block blk, its d, and (Q4_1) its m. */
template <int WT> struct q8dot_w;
template <> struct q8dot_w<LRUN_DTYPE_Q8_0> {
    static constexpr int BYTES = 34;
    static __device__ __forceinline__ int load(const uint8_t *blk, int l, float *d, float *)
    {
        *d = lrun_k_f16((uint16_t)lrun_k_ld16(blk));
        return (int)lrun_k_ld32_a2(blk + 2 + 4 * l);
    }
};
template <> struct q8dot_w<LRUN_DTYPE_Q4_0> {
    static constexpr int BYTES = 18;
    static __device__ __forceinline__ int load(const uint8_t *blk, int l, float *d, float *)
    {
        *d = lrun_k_f16((uint16_t)lrun_k_ld16(blk));
        const uint32_t v = lrun_k_ld32_a2(blk + 2 + 4 * (l & 3)); /* low nibbles: elements 0..15, high: 16..31 */
        return (int)__vsub4((l < 4 ? v : v >> 4) & 0x0f0f0f0fu, 0x08080808u);
    }
};
template <> struct q8dot_w<LRUN_DTYPE_Q4_1> {
    static constexpr int BYTES = 20;
    static __device__ __forceinline__ int load(const uint8_t *blk, int l, float *d, float *m)
    {
        const uint32_t dm = lrun_k_ld32(blk);
        *d = lrun_k_f16((uint16_t)(dm & 0xffff));
        *m = lrun_k_f16((uint16_t)(dm >> 16));
        const uint32_t v = lrun_k_ld32(blk + 4 + 4 * (l & 3));
        return (int)((l < 4 ? v : v >> 4) & 0x0f0f0f0fu);
    }
};

template <int WT, int MT>
__global__ void __launch_bounds__(8 * LRUN_K_Q8DOT_ROWS)
    q8dot_rows(const q8dot_parts P, int64_t k, const int8_t *__restrict__ xq, const float *__restrict__ xd,
               const float *__restrict__ xs, int64_t m)
{
    const int l = threadIdx.x & 7;
    const int64_t total = P.first[P.n_parts];
    int64_t grow = (int64_t)blockIdx.x * LRUN_K_Q8DOT_ROWS + (threadIdx.x >> 3);
    const bool valid = grow < total;
    if (!valid) grow = total - 1; /* computes a row again so the group's shuffles stay whole; writes nothing */
    int p = 0;
    while (p + 1 < P.n_parts && grow >= P.first[p + 1]) p++;
    const int64_t row = grow - P.first[p];
    const uint8_t *wr = P.w[p] + (size_t)row * P.row_bytes[p];
    const int64_t nb = k / 32;
    for (int64_t t0 = (int64_t)blockIdx.y * MT; t0 < m; t0 += (int64_t)gridDim.y * MT) {
        const int mt = m - t0 < MT ? (int)(m - t0) : MT;
        float acc[MT], summs[MT];
#pragma unroll
        for (int t = 0; t < MT; t++) acc[t] = summs[t] = 0.0f;
        const int8_t *xt = xq + t0 * k + 4 * l;
        const float *dt = xd + t0 * nb;
        const float *st = WT == LRUN_DTYPE_Q4_1 ? xs + t0 * nb : NULL;
        /* decode tiles: many blocks' weight loads in flight per thread (the
         * chains themselves are short: 4 cycles per block) */
        constexpr int UNROLL = MT <= 2 ? 16 : 4;
#pragma unroll UNROLL
        for (int64_t b = 0; b < nb; b++) {
            float dw, mw = 0.0f;
            const int wv = q8dot_w<WT>::load(wr + (size_t)b * q8dot_w<WT>::BYTES, l, &dw, &mw);
#pragma unroll
            for (int t = 0; t < MT; t++) {
                if (t < mt) {
                    const int xv = __ldg((const int *)(xt + t * k + b * 32));
                    const float dd = __fmul_rn(dw, __ldg(dt + t * nb + b));
                    acc[t] = __fmaf_rn(dd, (float)__dp4a(wv, xv, 0), acc[t]);
                    if (WT == LRUN_DTYPE_Q4_1) summs[t] = __fmaf_rn(mw, __ldg(st + t * nb + b), summs[t]);
                }
            }
        }
#pragma unroll
        for (int t = 0; t < MT; t++) {
            /* hsum8 over the group: lane i < 4 gets t_i = a[i] + a[i+4], then (t0 + t2) + (t1 + t3) */
            float v = acc[t];
            v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, 4, 8));
            v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, 2, 8));
            v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, 1, 8));
            if (WT == LRUN_DTYPE_Q4_1) v = __fadd_rn(v, summs[t]);
            if (l == 0 && valid && t < mt) P.y[p][(t0 + t) * P.n[p] + row] = v;
        }
    }
}

template <int WT>
static void q8dot_launch(const q8dot_parts &P, int64_t k, const int8_t *xq, const float *xd, const float *xs,
                         int64_t m, cudaStream_t s)
{
    const unsigned gx = (unsigned)((P.first[P.n_parts] + LRUN_K_Q8DOT_ROWS - 1) / LRUN_K_Q8DOT_ROWS);
    const int mt = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : 8;
    const int64_t tiles = (m + mt - 1) / mt;
    const dim3 grid(gx, (unsigned)(tiles < 65535 ? tiles : 65535));
    const int nt = 8 * LRUN_K_Q8DOT_ROWS;
    switch (mt) {
    case 1: q8dot_rows<WT, 1><<<grid, nt, 0, s>>>(P, k, xq, xd, xs, m); break;
    case 2: q8dot_rows<WT, 2><<<grid, nt, 0, s>>>(P, k, xq, xd, xs, m); break;
    case 4: q8dot_rows<WT, 4><<<grid, nt, 0, s>>>(P, k, xq, xd, xs, m); break;
    default: q8dot_rows<WT, 8><<<grid, nt, 0, s>>>(P, k, xq, xd, xs, m); break;
    }
}

extern "C" lrun_status lrun_k_q8dot(lrun_dtype w_dtype, const lrun_k_q8dot_part *parts, int n_parts, int64_t k,
                                    const int8_t *xq, const float *xd, const float *xs, int64_t m, void *stream)
{
    static const char op[] = "lrun_k_q8dot";
    if (w_dtype != LRUN_DTYPE_Q4_0 && w_dtype != LRUN_DTYPE_Q4_1 && w_dtype != LRUN_DTYPE_Q8_0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: weight dtype %s is not q4_0, q4_1 or q8_0", op,
                         lrun_dtype_name(w_dtype));
    if (!parts || n_parts < 1 || n_parts > LRUN_K_Q8DOT_MAX_PARTS)
        return lrun_fail(LRUN_E_ARG, "%s: %d parts (1 to %d)", op, n_parts, LRUN_K_Q8DOT_MAX_PARTS);
    if (!xq || !xd || (w_dtype == LRUN_DTYPE_Q4_1 && !xs))
        return lrun_fail(LRUN_E_ARG, "%s: xq, xd (and xs for q4_1) must not be NULL", op);
    if (m <= 0) return lrun_fail(LRUN_E_ARG, "%s: m %lld (must be > 0)", op, (long long)m);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    q8dot_parts P;
    memset(&P, 0, sizeof P);
    P.n_parts = n_parts;
    for (int i = 0; i < n_parts; i++) {
        lrun_status st = lrun_k_check_weight(op, w_dtype, parts[i].w, parts[i].row_bytes, parts[i].n, k);
        if (st != LRUN_OK) return st;
        if (!parts[i].y) return lrun_fail(LRUN_E_ARG, "%s: part %d has no y", op, i);
        P.w[i] = (const uint8_t *)parts[i].w;
        P.row_bytes[i] = parts[i].row_bytes;
        P.n[i] = parts[i].n;
        P.y[i] = parts[i].y;
        P.first[i + 1] = P.first[i] + parts[i].n;
    }
    if ((P.first[n_parts] + LRUN_K_Q8DOT_ROWS - 1) / LRUN_K_Q8DOT_ROWS > LRUN_K_MAX_GRID)
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows exceed one grid", op, (long long)P.first[n_parts]);
    cudaStream_t s = (cudaStream_t)stream;
    switch (w_dtype) {
    case LRUN_DTYPE_Q8_0: q8dot_launch<LRUN_DTYPE_Q8_0>(P, k, xq, xd, xs, m, s); break;
    case LRUN_DTYPE_Q4_0: q8dot_launch<LRUN_DTYPE_Q4_0>(P, k, xq, xd, xs, m, s); break;
    default: q8dot_launch<LRUN_DTYPE_Q4_1>(P, k, xq, xd, xs, m, s); break;
    }
    return lrun_k_launched(op);
}
