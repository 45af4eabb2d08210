/* gemv_kq.cu — the m = 1 decode GEMV of Q4_K, Q5_K and Q6_K (fast numerics;
 * the exact path never comes here).
 *
 * The unit kernel of gemv.cu decodes these types 8 or 16 weights at a time:
 * per unit it reloads the block's header words and recomputes the 6-bit
 * scales, and turns every nibble into a float with an I2F (a quarter of the
 * FMA rate), so it ran at 11-32% of HBM bandwidth. Here a thread takes a
 * "slice" of 32 weights of one 256-element block (8 slices a block):
 *   - Q4_K / Q5_K: one 16-byte load of the header (d, dmin, scales), one of
 *     qs (Q5_K: and one of qh), all 16-byte aligned when the rows are
 *     (144 and 176 are multiples of 16); the slice is 16 bytes of qs =
 *     elements l0..l0+15 of sub-block 2c (low nibbles) and of 2c+1 (high);
 *   - Q6_K (210-byte blocks, 2-aligned): 8 bytes each of ql (two runs) and
 *     qh by aligned words and funnel shifts, 4 scale bytes and d; the slice
 *     is elements l0..l0+7 of the four 32-element runs of one half.
 * Quantized values become floats by a mask alone (denormals, kq_dn); each
 * sub-block's scale is applied once to its sum (Q4_K/Q5_K: d·sc·Σq·x −
 * dmin·m·Σx; Q6_K: d·sc·(Σq·x − 32·Σx), the x sums shared by the block's
 * rows), so a weight costs about a LOP and an FFMA. Weights stream past L1 (no_allocate), x stays
 * in it. A block owns RB rows (RB/2 of gate and of up for a pair), its NT
 * threads walk the rows' slices side by side, the next slice's loads issued
 * before the current one's arithmetic. The result differs from the unit
 * kernel's only by f32 rounding order. */
#include "gemv_common.cuh"

#include <stdio.h>

// ---------------------------------------------------------------- loads

/* A 32-bit word of weights, past L1; p 4-byte aligned. */
static __device__ __forceinline__ uint32_t kq_ld32(const uint8_t *p)
{
    uint32_t v;
    asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

/* 8 bytes at a 2-byte aligned p as 2 words: 3 aligned words and funnel
 * shifts (a shift of 0 when p is 4-aligned). The third word lies inside the
 * Q6_K block for every field read with this (see kq_slice<Q6_K>::load). */
static __device__ __forceinline__ uint2 kq_ld64_a2(const uint8_t *p)
{
    const uint8_t *p4 = (const uint8_t *)((uintptr_t)p & ~(uintptr_t)3);
    const unsigned sh = ((unsigned)(uintptr_t)p & 2u) * 8u;
    const uint32_t w0 = kq_ld32(p4), w1 = kq_ld32(p4 + 4), w2 = kq_ld32(p4 + 8);
    return make_uint2(__funnelshift_r(w0, w1, sh), __funnelshift_r(w1, w2, sh));
}

// ---------------------------------------------------------------- slices

/* Each type: BYTES of a block; raw, the bytes of one slice; load(blk, j) of
 * slice j (0..7); xoff(j, r), the element of the block where run r (0..7)
 * of 4 x values starts, xv[4r..4r+3] in dot; NS: the x sums dot takes
 * (sx[g] of xv's g-th NS-th); dot, the slice's contribution to its row. */
template <int T> struct kq_slice;

/* The weights of a slice are turned into floats without a conversion or an
 * offset subtract: a value q < 128 at bits 8e.. of a word (e < 3), masked
 * out, is the denormal float q·2^(8e−149); byte 3 is shifted down to bit 0
 * (q·2^−149). The x that value meets was scaled by 2^(KQ_C − 8e) (2^KQ_C
 * for byte 3), both powers of two and exact, so every product is q·x·2^−49
 * and the slice's sums are rescaled once by 2^49. FFMA takes denormal
 * operands at full rate; this needs denormals kept (no -ftz / fast math,
 * which this tree never uses). |x| must stay below 2^28 (x·2^100 finite);
 * only |q·x| below ~2^−77 loses bits, far below f32 rounding of the sum. */
#define KQ_C 100
#define KQ_UNSCALE 562949953421312.0f /* 2^(149 − KQ_C) = 2^49 */

/* byte e (0..3) of v, whose bytes are < 128, as the denormal above */
static __device__ __forceinline__ float kq_dn(uint32_t v, int e)
{
    return __uint_as_float(e < 3 ? v & (0xffu << (8 * e)) : v >> 24);
}

/* the factor of xv[i], the partner of byte i % 4 of its word */
static __device__ __forceinline__ float kq_xscale(int i)
{
    const int e = i & 3;
    return __uint_as_float((uint32_t)(127 + KQ_C - (e < 3 ? 8 * e : 0)) << 23);
}

/* byte b (0..3) of v as a float, exactly (2^23 + byte − 2^23) */
static __device__ __forceinline__ float kq_bytef(uint32_t v, int b) { return byte_f(v, b) - 8388608.0f; }

/* Σ (lo bytes)·xv[0..15] and Σ (hi bytes)·xv[16..31] of 4 words of values
 * below 64, then the scales and mins of sub-blocks 2c and 2c+1: all eight
 * 6-bit scales (and mins) of q4_K_scale_min at once, 4 to a word. */
static __device__ __forceinline__ float kq_dot_min(const uint32_t lo[4], const uint32_t hi[4], const uint4 &h,
                                                   int c, const float *xv, const float *sx)
{
    float dl = 0.0f, dh = 0.0f;
#pragma unroll
    for (int w = 0; w < 4; w++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            dl = fmaf(kq_dn(lo[w], e), xv[4 * w + e], dl);
            dh = fmaf(kq_dn(hi[w], e), xv[16 + 4 * w + e], dh);
        }
    const bool low = c < 2; /* sub-blocks 0..3: plain 6-bit bytes; 4..7: split */
    const uint32_t scw = low ? h.y & 0x3f3f3f3fu : (h.w & 0x0f0f0f0fu) | ((h.y >> 2) & 0x30303030u);
    const uint32_t mw = low ? h.z & 0x3f3f3f3fu : ((h.w >> 4) & 0x0f0f0f0fu) | ((h.z >> 2) & 0x30303030u);
    const int b = 2 * (c & 1);
    const float d = lrun_k_f16((uint16_t)(h.x & 0xffff)) * KQ_UNSCALE, dmin = lrun_k_f16((uint16_t)(h.x >> 16));
    const float sdot = fmaf(kq_bytef(scw, b), dl, kq_bytef(scw, b + 1) * dh);
    return fmaf(d, sdot, -dmin * fmaf(kq_bytef(mw, b), sx[0], kq_bytef(mw, b + 1) * sx[1]));
}

/* Q4_K: slice j is qs[16j..16j+15]: chunk c = j/2, l0 = 16(j%2); low
 * nibbles are elements 64c+l0.., high 64c+32+l0.. */
template <> struct kq_slice<LRUN_DTYPE_Q4_K> {
    static constexpr int BYTES = 144;
    static constexpr int NS = 2; /* x sums: of xv[0..15], xv[16..31] */
    struct raw { uint4 h, q; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int j)
    {
        return {lrun_k_ld128_stream(blk), lrun_k_ld128_stream(blk + 16 + 16 * j)};
    }
    static __device__ __forceinline__ int xoff(int j, int r)
    {
        return 64 * (j >> 1) + 16 * (j & 1) + (r < 4 ? 4 * r : 32 + 4 * (r - 4));
    }
    static __device__ __forceinline__ float dot(const raw &r, int j, const float *xv, const float *sx)
    {
        const uint32_t q[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
        uint32_t lo[4], hi[4];
#pragma unroll
        for (int w = 0; w < 4; w++) lo[w] = q[w] & 0x0f0f0f0fu, hi[w] = (q[w] >> 4) & 0x0f0f0f0fu;
        return kq_dot_min(lo, hi, r.h, j >> 1, xv, sx);
    }
};

/* Q5_K: as Q4_K (qs at 48), the fifth bits from qh[l0..l0+15] (at 16):
 * bit 2c for the low nibbles, 2c+1 for the high. */
template <> struct kq_slice<LRUN_DTYPE_Q5_K> {
    static constexpr int BYTES = 176;
    static constexpr int NS = 2;
    struct raw { uint4 h, qh, q; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int j)
    {
        return {lrun_k_ld128_stream(blk), lrun_k_ld128_stream(blk + 16 + 16 * (j & 1)),
                lrun_k_ld128_stream(blk + 48 + 16 * j)};
    }
    static __device__ __forceinline__ int xoff(int j, int r) { return kq_slice<LRUN_DTYPE_Q4_K>::xoff(j, r); }
    static __device__ __forceinline__ float dot(const raw &r, int j, const float *xv, const float *sx)
    {
        const int c = j >> 1;
        const uint32_t q[4] = {r.q.x, r.q.y, r.q.z, r.q.w}, qh[4] = {r.qh.x, r.qh.y, r.qh.z, r.qh.w};
        uint32_t lo[4], hi[4];
#pragma unroll
        for (int w = 0; w < 4; w++) {
            lo[w] = (q[w] & 0x0f0f0f0fu) | (((qh[w] >> (2 * c)) & 0x01010101u) << 4);
            hi[w] = ((q[w] >> 4) & 0x0f0f0f0fu) | (((qh[w] >> (2 * c + 1)) & 0x01010101u) << 4);
        }
        return kq_dot_min(lo, hi, r.h, c, xv, sx);
    }
};

/* Q6_K: slice j is half h = j/4, l0 = 8(j%4): ql[64h+l0..+7] (a), ql[64h+32+
 * l0..+7] (b), qh[32h+l0..+7] and scales[8h + l0/16 + {0,2,4,6}] give
 * elements 128h + l0 + {0, 32, 64, 96} + 0..7 as in lrun_k_unit<Q6_K>. The
 * 8-byte reads end at most at byte 196 of the 210. Σ(q − 32)·x of group g is
 * Σq·x − 32·Σx (sx[g] holds 32·Σx). */
template <> struct kq_slice<LRUN_DTYPE_Q6_K> {
    static constexpr int BYTES = 210;
    static constexpr int NS = 4; /* x sums of xv[8g..8g+7], times 32 */
    struct raw { uint2 a, b, qh; uint32_t sc, d; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int j)
    {
        const int h = j >> 2, l0 = 8 * (j & 3);
        const uint8_t *s = blk + 192 + 8 * h + (l0 >> 4);
        const uint32_t sc = (uint32_t)__ldg(s) | ((uint32_t)__ldg(s + 2) << 8) | ((uint32_t)__ldg(s + 4) << 16) |
                            ((uint32_t)__ldg(s + 6) << 24);
        return {kq_ld64_a2(blk + 64 * h + l0), kq_ld64_a2(blk + 64 * h + 32 + l0), kq_ld64_a2(blk + 128 + 32 * h + l0),
                sc, lrun_k_ld16(blk + 208)};
    }
    static __device__ __forceinline__ int xoff(int j, int r) { return 128 * (j >> 2) + 8 * (j & 3) + 32 * (r >> 1) + 4 * (r & 1); }
    static __device__ __forceinline__ float dot(const raw &r, int, const float *xv, const float *sx)
    {
        const uint32_t a[2] = {r.a.x, r.a.y}, b[2] = {r.b.x, r.b.y}, qh[2] = {r.qh.x, r.qh.y};
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int w = 0; w < 2; w++) {
            const uint32_t q[4] = {(a[w] & 0x0f0f0f0fu) | ((qh[w] << 4) & 0x30303030u),
                                   (b[w] & 0x0f0f0f0fu) | ((qh[w] << 2) & 0x30303030u),
                                   ((a[w] >> 4) & 0x0f0f0f0fu) | (qh[w] & 0x30303030u),
                                   ((b[w] >> 4) & 0x0f0f0f0fu) | ((qh[w] >> 2) & 0x30303030u)};
#pragma unroll
            for (int g = 0; g < 4; g++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[g] = fmaf(kq_dn(q[g], e), xv[8 * g + 4 * w + e], s[g]);
        }
        float t = 0.0f;
#pragma unroll
        for (int g = 0; g < 4; g++)
            t = fmaf((float)(int8_t)((r.sc >> (8 * g)) & 0xff), fmaf(s[g], KQ_UNSCALE, -sx[g]), t);
        return lrun_k_f16((uint16_t)r.d) * t;
    }
};

// ---------------------------------------------------------------- kernel

/* NORM (lrun_k_gemv_norm_multi): x is a norm's input, each value times the
 * norm's weight as loaded and its square summed; the block's slices cover
 * every x element of the row once, so the block's sum is Σx², and each
 * thread's sums are scaled by s before the reduction (as gemv.cu's
 * NORM, up to the rounding order). */
template <int T, int NT, int RB, bool NORM>
__global__ void __launch_bounds__(NT)
    gemv_kq(const __grid_constant__ gemv_parts P, int64_t k, const float *__restrict__ x, bool xvec, int mode,
            const __grid_constant__ gemv_norm nm)
{
    using S = kq_slice<T>;
    constexpr int RH = RB >= 2 ? RB / 2 : 1; /* output rows of a paired block */
    lrun_k_pdl_trigger();
    const int64_t b = blockIdx.x;
    const int p = (b >= P.b0[1]) + (b >= P.b0[2]);
    const bool sw = PAIRED(mode);
    const int64_t n = SEL3(P.n, p), row0 = (b - P.b0[p]) * (sw ? RH : RB);
    const uint8_t *rows[RB];
    gemv_block_rows<RB>(P, p, row0, n, sw, rows);

    const int64_t slices = k / 256 * 8; /* per row */
    float acc[RB], ss = 0.0f;           /* ss: NORM's sum of x² */
#pragma unroll
    for (int r = 0; r < RB; r++) acc[r] = 0.0f;
    /* the first slice's loads before the wait for the previous kernel (the
     * weights are no kernel's output); then each slice's loads one step ahead */
    typename S::raw raw[RB];
    int64_t s = threadIdx.x;
    if (s < slices)
#pragma unroll
        for (int r = 0; r < RB; r++) raw[r] = S::load(rows[r] + (size_t)(s >> 3) * S::BYTES, (int)(s & 7));
    lrun_k_pdl_wait();
    for (; s < slices; s += NT) {
        const int j = (int)(s & 7);
        const float *xb = x + (s >> 3) * 256;
        float xv[32];
#pragma unroll
        for (int r = 0; r < 8; r++) {
            float4 f = ldx4(xb + S::xoff(j, r), xvec);
            if constexpr (NORM) f = norm_load(f, ldx4(nm.w + (s >> 3) * 256 + S::xoff(j, r), nm.wvec), ss);
            xv[4 * r] = f.x, xv[4 * r + 1] = f.y, xv[4 * r + 2] = f.z, xv[4 * r + 3] = f.w;
        }
        typename S::raw cur[RB];
#pragma unroll
        for (int r = 0; r < RB; r++) cur[r] = raw[r];
        const int64_t sn = s + NT;
        if (sn < slices)
#pragma unroll
            for (int r = 0; r < RB; r++) raw[r] = S::load(rows[r] + (size_t)(sn >> 3) * S::BYTES, (int)(sn & 7));
        /* the x sums (Q6_K: times 32), then x scaled for kq_dn's floats */
        float sx[S::NS];
#pragma unroll
        for (int g = 0; g < S::NS; g++) {
            float t = 0.0f;
#pragma unroll
            for (int e = 0; e < 32 / S::NS; e++) t += xv[32 / S::NS * g + e];
            sx[g] = S::NS == 4 ? 32.0f * t : t;
        }
#pragma unroll
        for (int i = 0; i < 32; i++) xv[i] *= kq_xscale(i);
#pragma unroll
        for (int r = 0; r < RB; r++) acc[r] += S::dot(cur[r], j, xv, sx);
    }

    if constexpr (NORM) {
        __shared__ float scratch[32];
        const float sc = norm_scale(lrun_k_block_reduce<NT, 0>(ss, scratch), k, nm.eps);
#pragma unroll
        for (int r = 0; r < RB; r++) acc[r] *= sc;
    }
    gemv_block_out<NT, RB>(acc, P, p, row0, n, sw, mode);
}

// ---------------------------------------------------------------- dispatch

/* Threads and rows per block: variant 0 is the default (Q6_K takes 128
 * threads x 4 rows instead: its fewer, smaller loads per row want more rows
 * per block), then lrun_k_gemv_tune's variants 1..8 (bench only). Measured
 * on the H200 with test_kernels_gpu --sweep (docs/benchmarks.md). */
static const struct { int nt, rb; } kq_shapes[] = {{64, 8}, {128, 4},  {128, 2}, {256, 2},
                                                   {64, 4},  {128, 8}, {256, 4}, {32, 4}, {64, 2}};

template <int T, int NT, int RB, bool NORM = false>
static cudaError_t kq_launch(gemv_parts P, int n_parts, int64_t k, const float *x, int mode, const gemv_norm &nm,
                             cudaStream_t st)
{
    const int64_t b = gemv_part_blocks(P, n_parts, RB, mode);
    if (b > LRUN_K_MAX_GRID) return cudaErrorInvalidConfiguration;
    const bool xvec = ((uintptr_t)x & 15) == 0;
    return lrun_k_launch(gemv_kq<T, NT, RB, NORM>, dim3((unsigned)b), dim3(NT), 0, st, P, k, x, xvec, mode, nm);
}

/* A folded norm takes the default shape (the variants are for the bench). */
template <int T>
static cudaError_t kq_shape(int v, const gemv_parts &P, int n_parts, int64_t k, const float *x, int mode,
                            const gemv_norm &nm, cudaStream_t st)
{
    constexpr int NT = T == LRUN_DTYPE_Q6_K ? 128 : 64, RB = T == LRUN_DTYPE_Q6_K ? 4 : 8;
    if (nm.w) return kq_launch<T, NT, RB, true>(P, n_parts, k, x, mode, nm, st);
    switch (v) {
    case 1: return kq_launch<T, 128, 4>(P, n_parts, k, x, mode, nm, st);
    case 2: return kq_launch<T, 128, 2>(P, n_parts, k, x, mode, nm, st);
    case 3: return kq_launch<T, 256, 2>(P, n_parts, k, x, mode, nm, st);
    case 4: return kq_launch<T, 64, 4>(P, n_parts, k, x, mode, nm, st);
    case 5: return kq_launch<T, 128, 8>(P, n_parts, k, x, mode, nm, st);
    case 6: return kq_launch<T, 256, 4>(P, n_parts, k, x, mode, nm, st);
    case 7: return kq_launch<T, 32, 4>(P, n_parts, k, x, mode, nm, st);
    case 8: return kq_launch<T, 64, 2>(P, n_parts, k, x, mode, nm, st);
    default: return kq_launch<T, NT, RB>(P, n_parts, k, x, mode, nm, st);
    }
}

int lrun_k_gemv_kq(lrun_dtype t, gemv_parts P, int n_parts, int64_t k, const float *x, int mode, int variant,
                   const gemv_norm &nm, cudaStream_t st, cudaError_t *e)
{
    static_assert(sizeof kq_shapes / sizeof kq_shapes[0] == 9, "kq_shape's cases");
    if (t != LRUN_DTYPE_Q4_K && t != LRUN_DTYPE_Q5_K && t != LRUN_DTYPE_Q6_K) return 0;
    if (t != LRUN_DTYPE_Q6_K) /* 16-byte loads of whole blocks */
        for (int p = 0; p < n_parts; p++)
            if (((uintptr_t)P.w[p] & 15) != 0 || (P.rb[p] & 15) != 0) return 0;
    if (t == LRUN_DTYPE_Q4_K) *e = kq_shape<LRUN_DTYPE_Q4_K>(variant, P, n_parts, k, x, mode, nm, st);
    else if (t == LRUN_DTYPE_Q5_K) *e = kq_shape<LRUN_DTYPE_Q5_K>(variant, P, n_parts, k, x, mode, nm, st);
    else *e = kq_shape<LRUN_DTYPE_Q6_K>(variant, P, n_parts, k, x, mode, nm, st);
    return 1;
}

/* lrun_k_gemv_tune's description of variant v for these kernels. */
const char *lrun_k_gemv_kq_shape(int v, char *buf, size_t size)
{
    if (v <= 0 || v >= (int)(sizeof kq_shapes / sizeof kq_shapes[0])) snprintf(buf, size, "kq default");
    else snprintf(buf, size, "kq NT %d RB %d", kq_shapes[v].nt, kq_shapes[v].rb);
    return buf;
}
