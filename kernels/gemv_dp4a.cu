/* gemv_dp4a.cu — the m = 1 decode GEMV of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * IQ4_NL, IQ4_XS, Q2_K and Q3_K with integer dot products, as llama.cpp's mmvq: x is
 * quantized to int8 blocks of 32 (llama.cpp's and lrun_quantize_activations'
 * rule: d = amax/127, q = rint(x·127/amax), d rounded to f16) and each weight
 * block meets it through 8 __dp4a, one float FMA per block and row.
 * Fast numerics only, and only when the caller asks (LRUN_K_GEMV_DP4A in
 * the mode; the engine sets it from LRUN_CUDA_GEMV_DP4A=1): y is the dot of
 * the dequantized weights with the q8-rounded x (what llama.cpp computes),
 * not with x itself as gemv.cu's kernels do.
 *
 * Why: gemv.cu's unit kernel turns every weight into a float (a LOP or
 * two, an I2F-free add and an FFMA per weight) and reached 0.4-1.8 TB/s on
 * these types; here a weight costs a quarter of a dp4a plus its unpacking
 * (gemv_dp4a_lane.h, shared with the host emulation test).
 *
 * Shape (gemv_kq.cu's): a block owns RB rows (RB/2 of gate and of up for a
 * paired mode); its first step's weight loads are issued, then (after the
 * PDL wait: x is the previous kernel's output) the block's NT threads
 * quantize all of x into shared memory, one 32-element block per thread
 * (x is L2-resident; k + 8·k/32 bytes of shared memory, so k ≤ 39321);
 * then thread t takes weight blocks t, t + NT, ... of every row, the next
 * block's loads issued before the current one's arithmetic; warp and block
 * reductions and the epilogues as gemv_kq. */
#include "exact_math.cuh"
#include "gemv_common.cuh"
#include "gemv_dp4a_lane.h"
#include "gemv_q8x.cuh"

#define DL_MAX_SHARED (48 * 1024) /* without the opt-in attribute */

// ---------------------------------------------------------------- blocks

/* Each type: unit u of a row (32 elements) at load(row, u); raw's words;
 * unpack(raw, u, w, &d, &m) as gemv_dp4a_lane.h. */
template <int T> struct dl_blk;

template <> struct dl_blk<LRUN_DTYPE_Q8_0> { /* d, qs[32]: 34 bytes, 2-aligned */
    struct raw { uint32_t d, q[8]; };
    static __device__ __forceinline__ raw load(const uint8_t *row, int64_t u)
    {
        const uint8_t *b = row + (size_t)u * 34;
        raw r;
        r.d = lrun_k_ld16(b);
#pragma unroll
        for (int l = 0; l < 8; l++) r.q[l] = lrun_k_ld32_a2(b + 2 + 4 * l);
        return r;
    }
    static __device__ __forceinline__ void unpack(const raw &r, int64_t, uint32_t w[8], float *d, float *m)
    {
#pragma unroll
        for (int l = 0; l < 8; l++) w[l] = r.q[l];
        *d = lrun_k_f16((uint16_t)r.d), *m = 0.0f;
    }
};

/* d, qs[16]: 18 bytes, 2-aligned (Q4_0 and IQ4_NL) */
struct dl_raw18 { uint32_t d, q[4]; };
static __device__ __forceinline__ dl_raw18 dl_load18(const uint8_t *row, int64_t u)
{
    const uint8_t *b = row + (size_t)u * 18;
    dl_raw18 r;
    r.d = lrun_k_ld16(b);
#pragma unroll
    for (int l = 0; l < 4; l++) r.q[l] = lrun_k_ld32_a2(b + 2 + 4 * l);
    return r;
}
template <> struct dl_blk<LRUN_DTYPE_Q4_0> {
    typedef dl_raw18 raw;
    static __device__ __forceinline__ raw load(const uint8_t *row, int64_t u) { return dl_load18(row, u); }
    static __device__ __forceinline__ void unpack(const raw &r, int64_t, uint32_t w[8], float *d, float *m)
    {
        dl_q4_0(r.q, w);
        *d = lrun_k_f16((uint16_t)r.d), *m = 0.0f;
    }
};
template <> struct dl_blk<LRUN_DTYPE_IQ4_NL> {
    typedef dl_raw18 raw;
    static __device__ __forceinline__ raw load(const uint8_t *row, int64_t u) { return dl_load18(row, u); }
    static __device__ __forceinline__ void unpack(const raw &r, int64_t, uint32_t w[8], float *d, float *m)
    {
        dl_iq4nl(r.q, w);
        *d = lrun_k_f16((uint16_t)r.d), *m = 0.0f;
    }
};

template <> struct dl_blk<LRUN_DTYPE_Q4_1> { /* d, m, qs[16]: 20 bytes, 4-aligned */
    struct raw { uint32_t dm, q[4]; };
    static __device__ __forceinline__ raw load(const uint8_t *row, int64_t u)
    {
        const uint8_t *b = row + (size_t)u * 20;
        raw r;
        r.dm = lrun_k_ld32(b);
#pragma unroll
        for (int l = 0; l < 4; l++) r.q[l] = lrun_k_ld32(b + 4 + 4 * l);
        return r;
    }
    static __device__ __forceinline__ void unpack(const raw &r, int64_t, uint32_t w[8], float *d, float *m)
    {
        dl_q4_1(r.q, w);
        *d = lrun_k_f16((uint16_t)(r.dm & 0xffff)), *m = lrun_k_f16((uint16_t)(r.dm >> 16));
    }
};

template <> struct dl_blk<LRUN_DTYPE_Q5_0> { /* d, qh[4], qs[16]: 22 bytes, 2-aligned */
    struct raw { uint32_t d, qh, q[4]; };
    static __device__ __forceinline__ raw load(const uint8_t *row, int64_t u)
    {
        const uint8_t *b = row + (size_t)u * 22;
        raw r;
        r.d = lrun_k_ld16(b);
        r.qh = lrun_k_ld32_a2(b + 2);
#pragma unroll
        for (int l = 0; l < 4; l++) r.q[l] = lrun_k_ld32_a2(b + 6 + 4 * l);
        return r;
    }
    static __device__ __forceinline__ void unpack(const raw &r, int64_t, uint32_t w[8], float *d, float *m)
    {
        dl_q5(r.q, r.qh, 0x10101010u, w);
        *d = lrun_k_f16((uint16_t)r.d), *m = 0.0f;
    }
};

template <> struct dl_blk<LRUN_DTYPE_Q5_1> { /* d, m, qh[4], qs[16]: 24 bytes, 4-aligned */
    struct raw { uint32_t dm, qh, q[4]; };
    static __device__ __forceinline__ raw load(const uint8_t *row, int64_t u)
    {
        const uint8_t *b = row + (size_t)u * 24;
        raw r;
        r.dm = lrun_k_ld32(b);
        r.qh = lrun_k_ld32(b + 4);
#pragma unroll
        for (int l = 0; l < 4; l++) r.q[l] = lrun_k_ld32(b + 8 + 4 * l);
        return r;
    }
    static __device__ __forceinline__ void unpack(const raw &r, int64_t, uint32_t w[8], float *d, float *m)
    {
        dl_q5(r.q, r.qh, 0u, w);
        *d = lrun_k_f16((uint16_t)(r.dm & 0xffff)), *m = lrun_k_f16((uint16_t)(r.dm >> 16));
    }
};

/* IQ4_XS super-blocks of 256: d, scales_h (one word at 0), scales_l[4] (at
 * 4), qs[128] (at 8): 136 bytes, 8-aligned. Unit u is sub-block u % 8 of
 * super-block u / 8: 16 bytes of qs at 8 + 16(u % 8), nibbles as IQ4_NL. */
template <> struct dl_blk<LRUN_DTYPE_IQ4_XS> {
    struct raw { uint32_t dh, sl, q[4]; };
    static __device__ __forceinline__ raw load(const uint8_t *row, int64_t u)
    {
        const int j = (int)(u & 7);
        const uint8_t *b = row + (size_t)(u >> 3) * 136;
        raw r;
        r.dh = lrun_k_ld32(b);
        r.sl = __ldg(b + 4 + (j >> 1));
#pragma unroll
        for (int l = 0; l < 4; l++) r.q[l] = lrun_k_ld32(b + 8 + 16 * j + 4 * l);
        return r;
    }
    static __device__ __forceinline__ void unpack(const raw &r, int64_t u, uint32_t w[8], float *d, float *m)
    {
        dl_iq4nl(r.q, w);
        const int ls = dl_iq4xs_ls(r.dh >> 16, r.sl, (int)(u & 7));
        *d = lrun_k_f16((uint16_t)(r.dh & 0xffff)) * (float)ls, *m = 0.0f;
    }
};

/* Q2_K super-blocks of 256: scales[16] (a scale nibble low, a min nibble
 * high per 16-element sub-block), qs[64] (at 16), d, dmin (one word at 80):
 * 84 bytes, 4-aligned. Unit u is unit u % 8 of super-block u / 8
 * (gemv_dp4a_lane.h): the 8 qs words of half (u % 8) / 4, the 16 bits of
 * scales[2(u % 8)..], d and dmin. */
template <> struct dl_blk<LRUN_DTYPE_Q2_K> {
    struct raw { uint32_t q[8], sc, dm; };
    static __device__ __forceinline__ raw load(const uint8_t *row, int64_t u)
    {
        const int j = (int)(u & 7);
        const uint8_t *b = row + (size_t)(u >> 3) * 84;
        raw r;
#pragma unroll
        for (int l = 0; l < 8; l++) r.q[l] = lrun_k_ld32(b + 16 + 32 * (j >> 2) + 4 * l);
        r.sc = lrun_k_ld16(b + 2 * j);
        r.dm = lrun_k_ld32(b + 80);
        return r;
    }
    /* d·dx·Σ_s sc_s Σ q·xq − dmin·dx·Σ_s m_s Σ xq over the unit's two sub-blocks */
    static __device__ __forceinline__ float step(const raw &r, int64_t u, const uint32_t xw[8], float dx, float,
                                                 float acc)
    {
        uint32_t w[8];
        dl_q2k(r.q, (int)(u & 7), w);
        const int sumi = dl_dot2(w, xw, (int)(r.sc & 15), (int)((r.sc >> 8) & 15));
        const int summ = dl_sum2(xw, (int)((r.sc >> 4) & 15), (int)((r.sc >> 12) & 15));
        const float d = lrun_k_f16((uint16_t)(r.dm & 0xffff)), dmin = lrun_k_f16((uint16_t)(r.dm >> 16));
        return fmaf(d * dx, (float)sumi, fmaf(-dmin * dx, (float)summ, acc));
    }
};

/* Q3_K super-blocks of 256: hmask[32], qs[64] (at 32), scales[12] (at 96),
 * d (at 108): 110 bytes, 2-aligned. Unit u (j = u % 8): all 8 hmask words
 * (bit j of each byte), the 8 qs words of half j / 4, the scale bytes of
 * dl_q3k_scale and d. */
template <> struct dl_blk<LRUN_DTYPE_Q3_K> {
    struct raw { uint32_t hm[8], q[8], sl, sh, d; };
    static __device__ __forceinline__ raw load(const uint8_t *row, int64_t u)
    {
        const int j = (int)(u & 7);
        const uint8_t *b = row + (size_t)(u >> 3) * 110;
        raw r;
#pragma unroll
        for (int l = 0; l < 8; l++) r.hm[l] = lrun_k_ld32_a2(b + 4 * l);
#pragma unroll
        for (int l = 0; l < 8; l++) r.q[l] = lrun_k_ld32_a2(b + 32 + 32 * (j >> 2) + 4 * l);
        r.sl = lrun_k_ld16(b + 96 + (2 * j & 7));
        r.sh = lrun_k_ld16(b + 104 + (2 * j & 3));
        r.d = lrun_k_ld16(b + 108);
        return r;
    }
    /* d·dx·Σ_s sc_s Σ q·xq over the unit's two sub-blocks */
    static __device__ __forceinline__ float step(const raw &r, int64_t u, const uint32_t xw[8], float dx, float,
                                                 float acc)
    {
        const int j = (int)(u & 7);
        uint32_t w[8];
        dl_q3k(r.q, r.hm, j, w);
        const int sumi = dl_dot2(w, xw, dl_q3k_scale(r.sl, r.sh, j, 0), dl_q3k_scale(r.sl, r.sh, j, 1));
        return fmaf(lrun_k_f16((uint16_t)r.d) * dx, (float)sumi, acc);
    }
};

// ---------------------------------------------------------------- steps

/* One unit of one row into acc: unpack to words, d and m (the types of
 * 32-element blocks and IQ4_XS), 8 dp4a, one FMA on the unit's s = dx·Σxq;
 * Q2_K and Q3_K, whose units have two sub-block scales, take their own
 * step (dl_blk<T>::step). */
template <int T>
static __device__ __forceinline__ float dl_step(const typename dl_blk<T>::raw &r, int64_t u, const uint32_t xw[8],
                                                float dx, float sx, float acc)
{
    uint32_t w[8];
    float d, m;
    dl_blk<T>::unpack(r, u, w, &d, &m);
    int sumi = 0;
#pragma unroll
    for (int l = 0; l < 8; l++) sumi = __dp4a((int)w[l], (int)xw[l], sumi);
    return fmaf(d * dx, (float)sumi, fmaf(m, sx, acc));
}
template <>
__device__ __forceinline__ float dl_step<LRUN_DTYPE_Q2_K>(const dl_blk<LRUN_DTYPE_Q2_K>::raw &r, int64_t u,
                                                          const uint32_t xw[8], float dx, float sx, float acc)
{
    return dl_blk<LRUN_DTYPE_Q2_K>::step(r, u, xw, dx, sx, acc);
}
template <>
__device__ __forceinline__ float dl_step<LRUN_DTYPE_Q3_K>(const dl_blk<LRUN_DTYPE_Q3_K>::raw &r, int64_t u,
                                                          const uint32_t xw[8], float dx, float sx, float acc)
{
    return dl_blk<LRUN_DTYPE_Q3_K>::step(r, u, xw, dx, sx, acc);
}

// ---------------------------------------------------------------- kernel

template <int T, int NT, int RB>
__global__ void __launch_bounds__(NT)
    gemv_dp4a(const __grid_constant__ gemv_parts P, int64_t k, const float *__restrict__ x, bool xvec, int mode)
{
    using B = dl_blk<T>;
    constexpr int RH = RB >= 2 ? RB / 2 : 1; /* output rows of a paired block */
    extern __shared__ int4 dl_smem[];       /* xq (k int8), xd (k/32 f32), xs (k/32 f32) */
    int8_t *xq = (int8_t *)dl_smem;
    const int64_t nb = k / 32; /* units per row */
    float *xd = (float *)(xq + k), *xs = xd + nb;
    lrun_k_pdl_trigger();
    const int64_t b = blockIdx.x;
    const int p = (b >= P.b0[1]) + (b >= P.b0[2]);
    const bool sw = PAIRED(mode);
    const int64_t n = SEL3(P.n, p), row0 = (b - P.b0[p]) * (sw ? RH : RB);
    const uint8_t *rows[RB];
    gemv_block_rows<RB>(P, p, row0, n, sw, rows);

    float acc[RB];
#pragma unroll
    for (int r = 0; r < RB; r++) acc[r] = 0.0f;
    /* the first unit's loads before the wait (the weights are no kernel's
     * output), x quantized after it */
    typename B::raw raw[RB];
    int64_t u = threadIdx.x;
    if (u < nb)
#pragma unroll
        for (int r = 0; r < RB; r++) raw[r] = B::load(rows[r], u);
    lrun_k_pdl_wait();
    for (int64_t q = threadIdx.x; q < nb; q += NT) dl_quantize(x + q * 32, xvec, xq + q * 32, xd + q, xs + q);
    __syncthreads();

    for (; u < nb; u += NT) {
        const int4 *xw4 = (const int4 *)(xq + u * 32);
        const int4 x0 = xw4[0], x1 = xw4[1];
        const uint32_t xw[8] = {(uint32_t)x0.x, (uint32_t)x0.y, (uint32_t)x0.z, (uint32_t)x0.w,
                                (uint32_t)x1.x, (uint32_t)x1.y, (uint32_t)x1.z, (uint32_t)x1.w};
        const float dx = xd[u], sx = xs[u];
        typename B::raw cur[RB];
#pragma unroll
        for (int r = 0; r < RB; r++) cur[r] = raw[r];
        const int64_t un = u + NT;
        if (un < nb)
#pragma unroll
            for (int r = 0; r < RB; r++) raw[r] = B::load(rows[r], un);
#pragma unroll
        for (int r = 0; r < RB; r++) acc[r] = dl_step<T>(cur[r], u, xw, dx, sx, acc[r]);
    }

    gemv_block_out<NT, RB>(acc, P, p, row0, n, sw, mode);
}

// ---------------------------------------------------------------- dispatch

template <int T, int NT, int RB>
static cudaError_t dl_launch(gemv_parts P, int n_parts, int64_t k, const float *x, int mode, cudaStream_t st)
{
    const int64_t b = gemv_part_blocks(P, n_parts, RB, mode);
    if (b > LRUN_K_MAX_GRID) return cudaErrorInvalidConfiguration;
    const bool xvec = ((uintptr_t)x & 15) == 0;
    const size_t shared = (size_t)k + 8 * (size_t)(k / 32);
    return lrun_k_launch(gemv_dp4a<T, NT, RB>, dim3((unsigned)b), dim3(NT), shared, st, P, k, x, xvec, mode);
}

/* 128 threads x 8 rows: 8 rows amortize the block's quantization of x over
 * more weight bytes (16 x the x bytes at k = 4096 for Q4_0); to be tuned on
 * the H200 (docs/benchmarks.md, "Quantized GEMV kernels (#15)"). */
template <int T>
static cudaError_t dl_shape(const gemv_parts &P, int n_parts, int64_t k, const float *x, int mode, cudaStream_t st)
{
    return dl_launch<T, 128, 8>(P, n_parts, k, x, mode, st);
}

int lrun_k_gemv_dp4a(lrun_dtype t, gemv_parts P, int n_parts, int64_t k, const float *x, int mode, cudaStream_t st,
                     cudaError_t *e)
{
    if (k % 32 != 0 || (size_t)k + 8 * (size_t)(k / 32) > DL_MAX_SHARED) return 0;
    if ((t == LRUN_DTYPE_Q2_K || t == LRUN_DTYPE_Q3_K) && k % 256 != 0) return 0; /* whole super-blocks */
    /* 4-byte word loads: the 4-aligned layouts need 4-aligned rows */
    const bool a4 = t == LRUN_DTYPE_Q4_1 || t == LRUN_DTYPE_Q5_1 || t == LRUN_DTYPE_IQ4_XS || t == LRUN_DTYPE_Q2_K;
    for (int p = 0; p < n_parts; p++)
        if (((uintptr_t)P.w[p] & (a4 ? 3 : 1)) != 0 || (P.rb[p] & (a4 ? 3 : 1)) != 0) return 0;
    switch (t) {
    case LRUN_DTYPE_Q8_0: *e = dl_shape<LRUN_DTYPE_Q8_0>(P, n_parts, k, x, mode, st); return 1;
    case LRUN_DTYPE_Q4_0: *e = dl_shape<LRUN_DTYPE_Q4_0>(P, n_parts, k, x, mode, st); return 1;
    case LRUN_DTYPE_Q4_1: *e = dl_shape<LRUN_DTYPE_Q4_1>(P, n_parts, k, x, mode, st); return 1;
    case LRUN_DTYPE_Q5_0: *e = dl_shape<LRUN_DTYPE_Q5_0>(P, n_parts, k, x, mode, st); return 1;
    case LRUN_DTYPE_Q5_1: *e = dl_shape<LRUN_DTYPE_Q5_1>(P, n_parts, k, x, mode, st); return 1;
    case LRUN_DTYPE_IQ4_NL: *e = dl_shape<LRUN_DTYPE_IQ4_NL>(P, n_parts, k, x, mode, st); return 1;
    case LRUN_DTYPE_IQ4_XS: *e = dl_shape<LRUN_DTYPE_IQ4_XS>(P, n_parts, k, x, mode, st); return 1;
    case LRUN_DTYPE_Q2_K: *e = dl_shape<LRUN_DTYPE_Q2_K>(P, n_parts, k, x, mode, st); return 1;
    case LRUN_DTYPE_Q3_K: *e = dl_shape<LRUN_DTYPE_Q3_K>(P, n_parts, k, x, mode, st); return 1;
    default: return 0;
    }
}
