/* gemv_q8dot.cu — the exact Q4_0/Q4_1/Q8_0 matmul (see gemv_q8dot.cuh).
 * Per output, as dot1_q4_0 / dot1_q4_1 / dot1_q8_0 in runtime/quant/quant_dot.c:
 *   for each block b: dd = dw·dx; acc[l] = fma(dd, lane_l, acc[l])
 *                     (Q4_1: summs = fma(mw, s_x, summs))
 *   y = hsum8(acc) (+ summs)
 * The CPU computes every output of a prefill chunk with the same kernel and
 * order as a decode output, so one kernel serves both. Activation rows must
 * start on 16 bytes (xq rows are k bytes apart, k a multiple of 32). */
#include "gemv_q8dot.cuh"

struct q8dot_parts {
    const uint8_t *w[LRUN_K_Q8DOT_MAX_PARTS];
    size_t row_bytes[LRUN_K_Q8DOT_MAX_PARTS];
    int64_t n[LRUN_K_Q8DOT_MAX_PARTS];
    float *y[LRUN_K_Q8DOT_MAX_PARTS];
    int64_t first[LRUN_K_Q8DOT_MAX_PARTS + 1]; /* first concatenated row of each part; [n_parts] = total */
    int n_parts;
};

/* One whole weight block, loaded by one thread: its 8 packed int8 lane
 * words (lane l = elements 4l..4l+3), d, and (Q4_1) m. */
template <int WT> struct q8dot_w;
template <> struct q8dot_w<LRUN_DTYPE_Q8_0> {
    static constexpr int BYTES = 34;
    static __device__ __forceinline__ void load(const uint8_t *blk, int q[8], float *d, float *)
    {
        *d = lrun_k_f16((uint16_t)lrun_k_ld16(blk));
#pragma unroll
        for (int l = 0; l < 8; l++) q[l] = (int)lrun_k_ld32_a2(blk + 2 + 4 * l);
    }
};
template <> struct q8dot_w<LRUN_DTYPE_Q4_0> {
    static constexpr int BYTES = 18;
    static __device__ __forceinline__ void load(const uint8_t *blk, int q[8], float *d, float *)
    {
        *d = lrun_k_f16((uint16_t)lrun_k_ld16(blk));
#pragma unroll
        for (int l = 0; l < 4; l++) { /* low nibbles: elements 0..15, high: 16..31 */
            const uint32_t v = lrun_k_ld32_a2(blk + 2 + 4 * l);
            q[l] = (int)__vsub4(v & 0x0f0f0f0fu, 0x08080808u);
            q[l + 4] = (int)__vsub4((v >> 4) & 0x0f0f0f0fu, 0x08080808u);
        }
    }
};
template <> struct q8dot_w<LRUN_DTYPE_Q4_1> {
    static constexpr int BYTES = 20;
    static __device__ __forceinline__ void load(const uint8_t *blk, int q[8], float *d, float *m)
    {
        const uint32_t dm = lrun_k_ld32(blk);
        *d = lrun_k_f16((uint16_t)(dm & 0xffff));
        *m = lrun_k_f16((uint16_t)(dm >> 16));
#pragma unroll
        for (int l = 0; l < 4; l++) {
            const uint32_t v = lrun_k_ld32(blk + 4 + 4 * l);
            q[l] = (int)(v & 0x0f0f0f0fu);
            q[l + 4] = (int)((v >> 4) & 0x0f0f0f0fu);
        }
    }
};

/* Shared memory of one warp: per block of the chunk and token, the 8 lane
 * sums and dd; per block, Q4_1's m and per token its s. */
template <int MT> struct q8dot_stage {
    float lane[32][MT][9]; /* [8] = dd; 9 floats: the lanes' reads spread over banks */
    float s[32][MT];
    float m[32];
};

/* One warp per weight row. Per chunk of 32 blocks, thread t loads block t
 * (the warp reads the row contiguously) and computes its exact lane sums
 * (dp4a) and dd for each token of the tile into shared memory; then chain
 * c = token·8 + l (threads c, c+32) runs acc = fma(dd, lane, acc) over the
 * chunk's blocks in order, which is the CPU's chain. Q4_1's summs chain of
 * each token runs on the thread of its lane 0. */
template <int WT, int MT>
__global__ void __launch_bounds__(32 * LRUN_K_Q8DOT_WARPS)
    q8dot_rows(const q8dot_parts P, int64_t k, const int8_t *__restrict__ xq, const float *__restrict__ xd,
               const float *__restrict__ xs, int64_t m)
{
    __shared__ q8dot_stage<MT> stage[LRUN_K_Q8DOT_WARPS];
    q8dot_stage<MT> &S = stage[threadIdx.x >> 5];
    const int t = threadIdx.x & 31;
    const int64_t total = P.first[P.n_parts];
    const int64_t grow = (int64_t)blockIdx.x * LRUN_K_Q8DOT_WARPS + (threadIdx.x >> 5);
    if (grow >= total) return; /* a whole warp: nothing below synchronizes across warps */
    int p = 0;
    while (p + 1 < P.n_parts && grow >= P.first[p + 1]) p++;
    const int64_t row = grow - P.first[p];
    const uint8_t *wr = P.w[p] + (size_t)row * P.row_bytes[p];
    const int64_t nb = k / 32;
    constexpr int NCH = MT * 8 > 32 ? 2 : 1; /* chains per thread */
    for (int64_t t0 = (int64_t)blockIdx.y * MT; t0 < m; t0 += (int64_t)gridDim.y * MT) {
        const int mt = m - t0 < MT ? (int)(m - t0) : MT;
        float acc[NCH], summs[NCH];
#pragma unroll
        for (int c = 0; c < NCH; c++) acc[c] = summs[c] = 0.0f;
        for (int64_t c0 = 0; c0 < nb; c0 += 32) {
            const int nc = nb - c0 < 32 ? (int)(nb - c0) : 32;
            if (t < nc) {
                const int64_t b = c0 + t;
                int q[8];
                float dw, mw = 0.0f;
                q8dot_w<WT>::load(wr + (size_t)b * q8dot_w<WT>::BYTES, q, &dw, &mw);
                if (WT == LRUN_DTYPE_Q4_1) S.m[t] = mw;
#pragma unroll
                for (int j = 0; j < MT; j++) {
                    if (j < mt) {
                        const int64_t tok = t0 + j;
                        const int4 *xb = (const int4 *)(xq + tok * k + b * 32);
                        const int4 x0 = __ldg(xb), x1 = __ldg(xb + 1);
                        const int xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
                        for (int l = 0; l < 8; l++) S.lane[t][j][l] = (float)__dp4a(q[l], xv[l], 0);
                        S.lane[t][j][8] = __fmul_rn(dw, __ldg(xd + tok * nb + b));
                        if (WT == LRUN_DTYPE_Q4_1) S.s[t][j] = __ldg(xs + tok * nb + b);
                    }
                }
            }
            __syncwarp();
#pragma unroll
            for (int c = 0; c < NCH; c++) {
                const int ch = t + 32 * c, j = ch >> 3, l = ch & 7;
                if (j < mt) {
                    float a = acc[c], sm = summs[c];
#pragma unroll 8
                    for (int bb = 0; bb < nc; bb++) {
                        a = __fmaf_rn(S.lane[bb][j][8], S.lane[bb][j][l], a);
                        if (WT == LRUN_DTYPE_Q4_1 && l == 0) sm = __fmaf_rn(S.m[bb], S.s[bb][j], sm);
                    }
                    acc[c] = a;
                    summs[c] = sm;
                }
            }
            __syncwarp(); /* the stage is refilled by the next chunk */
        }
#pragma unroll
        for (int c = 0; c < NCH; c++) {
            /* hsum8 over the chains of a token: lane i < 4 gets t_i = a[i] + a[i+4], then (t0 + t2) + (t1 + t3) */
            const int ch = t + 32 * c, j = ch >> 3, l = ch & 7;
            float v = acc[c];
            v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, 4, 8));
            v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, 2, 8));
            v = __fadd_rn(v, __shfl_down_sync(0xffffffffu, v, 1, 8));
            if (WT == LRUN_DTYPE_Q4_1) v = __fadd_rn(v, summs[c]);
            if (l == 0 && j < mt) P.y[p][(t0 + j) * P.n[p] + row] = v;
        }
    }
}

template <int WT>
static void q8dot_launch(const q8dot_parts &P, int64_t k, const int8_t *xq, const float *xd, const float *xs,
                         int64_t m, cudaStream_t s)
{
    const unsigned gx = (unsigned)((P.first[P.n_parts] + LRUN_K_Q8DOT_WARPS - 1) / LRUN_K_Q8DOT_WARPS);
    const int mt = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : 8;
    const int64_t tiles = (m + mt - 1) / mt;
    const dim3 grid(gx, (unsigned)(tiles < 65535 ? tiles : 65535));
    const int nt = 32 * LRUN_K_Q8DOT_WARPS;
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
    if ((P.first[n_parts] + LRUN_K_Q8DOT_WARPS - 1) / LRUN_K_Q8DOT_WARPS > LRUN_K_MAX_GRID)
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows exceed one grid", op, (long long)P.first[n_parts]);
    cudaStream_t s = (cudaStream_t)stream;
    switch (w_dtype) {
    case LRUN_DTYPE_Q8_0: q8dot_launch<LRUN_DTYPE_Q8_0>(P, k, xq, xd, xs, m, s); break;
    case LRUN_DTYPE_Q4_0: q8dot_launch<LRUN_DTYPE_Q4_0>(P, k, xq, xd, xs, m, s); break;
    default: q8dot_launch<LRUN_DTYPE_Q4_1>(P, k, xq, xd, xs, m, s); break;
    }
    return lrun_k_launched(op);
}
