/* dequantize.cuh — the weight blocks of every supported dtype, decoded by
 * "units": the piece of a block one thread handles at a time.
 *
 * A unit is RUNS runs of 4 consecutive elements of its block (two runs for
 * most types: a Q4_0 unit is the low nibbles 4u..4u+3 and the high nibbles
 * 16+4u..16+4u+3 of one 4-byte word of qs). Splitting blocks this way lets
 * one code path serve the dequantize kernel (units → a slot), the embedding
 * gather (units → f32 rows) and the fused GEMV (units → registers → FMA),
 * and keeps a warp's 32 threads on 32 consecutive units, so its loads are
 * coalesced.
 *
 * Each type is a struct with
 *   ELEMS, BYTES   elements and bytes of a block (a float type's "block" is
 *                  8 elements: one 16-byte load for f16/bf16);
 *   UNITS, RUNS    units per block and runs of 4 elements per unit;
 *   raw            the bytes of one unit, loaded (load) apart from the
 *                  arithmetic (dequant) so a GEMV can issue many loads before
 *                  it needs any of them;
 *   offset(u, r)   the element of the block where run r of unit u starts.
 *
 * The arithmetic is the CPU twin's (runtime/quant/quant.c), operation for
 * operation, with __fmul_rn/__fadd_rn so that no multiply-add is contracted
 * into an FMA: dequantization to f32 is bit-exact. The block layouts are
 * those of runtime/quant/quant.h (GGUF/ggml). */
#ifndef LRUN_KERNELS_DEQUANTIZE_CUH
#define LRUN_KERNELS_DEQUANTIZE_CUH

#include "common.cuh"

template <int T> struct lrun_k_unit;

// ---------------------------------------------------------------- float types (vector path: 16-byte aligned rows)

template <> struct lrun_k_unit<LRUN_DTYPE_F16> {
    static constexpr int ELEMS = 8, BYTES = 16, UNITS = 1, RUNS = 2;
    struct raw { uint4 v; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int) { return {lrun_k_ld128_stream(blk)}; }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        const uint32_t v[4] = {r.v.x, r.v.y, r.v.z, r.v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[2 * i] = lrun_k_f16((uint16_t)(v[i] & 0xffff));
            w[2 * i + 1] = lrun_k_f16((uint16_t)(v[i] >> 16));
        }
    }
    static __device__ __forceinline__ int offset(int, int run) { return 4 * run; }
};

template <> struct lrun_k_unit<LRUN_DTYPE_BF16> {
    static constexpr int ELEMS = 8, BYTES = 16, UNITS = 1, RUNS = 2;
    struct raw { uint4 v; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int) { return {lrun_k_ld128_stream(blk)}; }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        const uint32_t v[4] = {r.v.x, r.v.y, r.v.z, r.v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[2 * i] = __uint_as_float(v[i] << 16);
            w[2 * i + 1] = __uint_as_float(v[i] & 0xffff0000u);
        }
    }
    static __device__ __forceinline__ int offset(int, int run) { return 4 * run; }
};

template <> struct lrun_k_unit<LRUN_DTYPE_F32> {
    static constexpr int ELEMS = 8, BYTES = 32, UNITS = 1, RUNS = 2;
    struct raw { uint4 a, b; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int)
    {
        return {lrun_k_ld128_stream(blk), lrun_k_ld128_stream(blk + 16)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        w[0] = __uint_as_float(r.a.x), w[1] = __uint_as_float(r.a.y), w[2] = __uint_as_float(r.a.z);
        w[3] = __uint_as_float(r.a.w), w[4] = __uint_as_float(r.b.x), w[5] = __uint_as_float(r.b.y);
        w[6] = __uint_as_float(r.b.z), w[7] = __uint_as_float(r.b.w);
    }
    static __device__ __forceinline__ int offset(int, int run) { return 4 * run; }
};

// ---------------------------------------------------------------- 32-element blocks

/* Q4_0: f16 d; u8 qs[16]. Unit u (0..3): qs[4u..4u+3]; y = (q - 8) * d. */
template <> struct lrun_k_unit<LRUN_DTYPE_Q4_0> {
    static constexpr int ELEMS = 32, BYTES = 18, UNITS = 4, RUNS = 2;
    struct raw { uint32_t q; uint32_t d; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        return {lrun_k_ld32_a2(blk + 2 + 4 * u), lrun_k_ld16(blk)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        const float d = lrun_k_f16((uint16_t)r.d);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int b = (int)((r.q >> (8 * e)) & 0xff);
            w[e] = __fmul_rn((float)((b & 0xf) - 8), d);
            w[4 + e] = __fmul_rn((float)((b >> 4) - 8), d);
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 4 * u + 16 * run; }
};

/* Q4_1: f16 d, m; u8 qs[16]. Unit u (0..3): qs[4u..4u+3]; y = q * d + m. */
template <> struct lrun_k_unit<LRUN_DTYPE_Q4_1> {
    static constexpr int ELEMS = 32, BYTES = 20, UNITS = 4, RUNS = 2;
    struct raw { uint32_t q; uint32_t dm; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        return {lrun_k_ld32(blk + 4 + 4 * u), lrun_k_ld32(blk)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        const float d = lrun_k_f16((uint16_t)(r.dm & 0xffff)), m = lrun_k_f16((uint16_t)(r.dm >> 16));
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int b = (int)((r.q >> (8 * e)) & 0xff);
            w[e] = __fadd_rn(__fmul_rn((float)(b & 0xf), d), m);
            w[4 + e] = __fadd_rn(__fmul_rn((float)(b >> 4), d), m);
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 4 * u + 16 * run; }
};

/* Q8_0: f16 d; i8 qs[32]. Unit u (0..3): qs[8u..8u+7]; y = q * d. */
template <> struct lrun_k_unit<LRUN_DTYPE_Q8_0> {
    static constexpr int ELEMS = 32, BYTES = 34, UNITS = 4, RUNS = 2;
    struct raw { uint32_t q0, q1, d; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        return {lrun_k_ld32_a2(blk + 2 + 8 * u), lrun_k_ld32_a2(blk + 6 + 8 * u), lrun_k_ld16(blk)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        const float d = lrun_k_f16((uint16_t)r.d);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            w[e] = __fmul_rn((float)(int8_t)((r.q0 >> (8 * e)) & 0xff), d);
            w[4 + e] = __fmul_rn((float)(int8_t)((r.q1 >> (8 * e)) & 0xff), d);
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 8 * u + 4 * run; }
};

// ---------------------------------------------------------------- 256-element blocks

/* Byte j of w0..w2 (j 0..11) by selects rather than an indexed array
 * (which would go to local memory). */
static __device__ __forceinline__ int lrun_k_byte12(uint32_t w0, uint32_t w1, uint32_t w2, int j)
{
    const uint32_t word = j < 4 ? w0 : (j < 8 ? w1 : w2);
    return (int)((word >> (8 * (j & 3))) & 0xff);
}

/* The 6-bit scale and min of sub-block j of Q4_K's and Q5_K's 12 scale
 * bytes (w0..w2), as q4_K_scale_min in quant.c. */
static __device__ __forceinline__ void lrun_k_scale_min12(uint32_t w0, uint32_t w1, uint32_t w2, int j, int *sc,
                                                          int *m)
{
    if (j < 4) {
        *sc = lrun_k_byte12(w0, w1, w2, j) & 63;
        *m = lrun_k_byte12(w0, w1, w2, j + 4) & 63;
    } else {
        *sc = (lrun_k_byte12(w0, w1, w2, j + 4) & 0xf) | ((lrun_k_byte12(w0, w1, w2, j - 4) >> 6) << 4);
        *m = (lrun_k_byte12(w0, w1, w2, j + 4) >> 4) | ((lrun_k_byte12(w0, w1, w2, j) >> 6) << 4);
    }
}

/* Q4_K: f16 d, dmin; u8 scales[12]; u8 qs[128]. Unit u (0..31) is word t = u%8
 * of chunk c = u/8 (qs[32c+4t..32c+4t+3]): low nibbles are elements
 * 64c+4t.. with sub-block 2c, high nibbles 64c+32+4t.. with sub-block 2c+1. */
template <> struct lrun_k_unit<LRUN_DTYPE_Q4_K> {
    static constexpr int ELEMS = 256, BYTES = 144, UNITS = 32, RUNS = 2;
    struct raw { uint32_t q, dm, s0, s1, s2; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        return {lrun_k_ld32(blk + 16 + 4 * u), lrun_k_ld32(blk), lrun_k_ld32(blk + 4), lrun_k_ld32(blk + 8),
                lrun_k_ld32(blk + 12)};
    }
    static __device__ __forceinline__ void scale_min(const raw &r, int j, int *sc, int *m)
    {
        lrun_k_scale_min12(r.s0, r.s1, r.s2, j, sc, m);
    }
    static __device__ __forceinline__ void dequant(const raw &r, int u, float *w)
    {
        const int c = u >> 3;
        const float d = lrun_k_f16((uint16_t)(r.dm & 0xffff)), dmin = lrun_k_f16((uint16_t)(r.dm >> 16));
        int sc0, m0, sc1, m1;
        scale_min(r, 2 * c, &sc0, &m0);
        scale_min(r, 2 * c + 1, &sc1, &m1);
        const float d0 = __fmul_rn(d, (float)sc0), mm0 = __fmul_rn(dmin, (float)m0);
        const float d1 = __fmul_rn(d, (float)sc1), mm1 = __fmul_rn(dmin, (float)m1);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int b = (int)((r.q >> (8 * e)) & 0xff);
            w[e] = __fsub_rn(__fmul_rn(d0, (float)(b & 0xf)), mm0);
            w[4 + e] = __fsub_rn(__fmul_rn(d1, (float)(b >> 4)), mm1);
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 64 * (u >> 3) + 4 * (u & 7) + 32 * run; }
};

/* Q6_K: u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d. Unit u (0..15) is word
 * t = u%8 of half h = u/8: l = 4t..4t+3 gives elements 128h + l + {0, 32, 64,
 * 96} from ql[64h+l], ql[64h+32+l], qh[32h+l] and scales[8h + l/16 + {0,2,4,6}]. */
template <> struct lrun_k_unit<LRUN_DTYPE_Q6_K> {
    static constexpr int ELEMS = 256, BYTES = 210, UNITS = 16, RUNS = 4;
    struct raw { uint32_t ql0, ql1, qh, sc, d; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        const int h = u >> 3, t = u & 7;
        const uint8_t *s = blk + 192 + 8 * h + (t >> 2); /* scales[8h + is], is = l/16 = t/4 */
        const uint32_t sc = (uint32_t)__ldg(s) | ((uint32_t)__ldg(s + 2) << 8) | ((uint32_t)__ldg(s + 4) << 16) |
                            ((uint32_t)__ldg(s + 6) << 24);
        return {lrun_k_ld32_a2(blk + 64 * h + 4 * t), lrun_k_ld32_a2(blk + 64 * h + 32 + 4 * t),
                lrun_k_ld32_a2(blk + 128 + 32 * h + 4 * t), sc, lrun_k_ld16(blk + 208)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        const float d = lrun_k_f16((uint16_t)r.d);
        float ds[4];
#pragma unroll
        for (int i = 0; i < 4; i++) ds[i] = __fmul_rn(d, (float)(int8_t)((r.sc >> (8 * i)) & 0xff));
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int a = (int)((r.ql0 >> (8 * e)) & 0xff), b = (int)((r.ql1 >> (8 * e)) & 0xff);
            const int h = (int)((r.qh >> (8 * e)) & 0xff);
            w[e] = __fmul_rn(ds[0], (float)(((a & 0xf) | ((h & 3) << 4)) - 32));
            w[4 + e] = __fmul_rn(ds[1], (float)(((b & 0xf) | (((h >> 2) & 3) << 4)) - 32));
            w[8 + e] = __fmul_rn(ds[2], (float)(((a >> 4) | (((h >> 4) & 3) << 4)) - 32));
            w[12 + e] = __fmul_rn(ds[3], (float)(((b >> 4) | (((h >> 6) & 3) << 4)) - 32));
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 128 * (u >> 3) + 4 * (u & 7) + 32 * run; }
};

// ---------------------------------------------------------------- more 32-element blocks

/* The fifth bit of element i (0..31) of a Q5 block: bit i of qh. */
static __device__ __forceinline__ int lrun_k_q5_bit(uint32_t qh, int i) { return (int)((qh >> i) & 1u) << 4; }

/* Q5_0: f16 d; u8 qh[4]; u8 qs[16] (22 bytes, 2-aligned). Unit u (0..3) as
 * Q4_0's: qs[4u..4u+3], elements 4u.. (low nibbles) and 16+4u.. (high);
 * y = (q − 16)·d with q = nibble | qh bit << 4. */
template <> struct lrun_k_unit<LRUN_DTYPE_Q5_0> {
    static constexpr int ELEMS = 32, BYTES = 22, UNITS = 4, RUNS = 2;
    struct raw { uint32_t q, qh, d; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        return {lrun_k_ld32_a2(blk + 6 + 4 * u), lrun_k_ld32_a2(blk + 2), lrun_k_ld16(blk)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int u, float *w)
    {
        const float d = lrun_k_f16((uint16_t)r.d);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int b = (int)((r.q >> (8 * e)) & 0xff);
            w[e] = __fmul_rn((float)(((b & 0xf) | lrun_k_q5_bit(r.qh, 4 * u + e)) - 16), d);
            w[4 + e] = __fmul_rn((float)(((b >> 4) | lrun_k_q5_bit(r.qh, 16 + 4 * u + e)) - 16), d);
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 4 * u + 16 * run; }
};

/* Q5_1: f16 d, m; u8 qh[4]; u8 qs[16] (24 bytes, 4-aligned). Units as Q5_0; y = q·d + m. */
template <> struct lrun_k_unit<LRUN_DTYPE_Q5_1> {
    static constexpr int ELEMS = 32, BYTES = 24, UNITS = 4, RUNS = 2;
    struct raw { uint32_t q, qh, dm; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        return {lrun_k_ld32(blk + 8 + 4 * u), lrun_k_ld32(blk + 4), lrun_k_ld32(blk)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int u, float *w)
    {
        const float d = lrun_k_f16((uint16_t)(r.dm & 0xffff)), m = lrun_k_f16((uint16_t)(r.dm >> 16));
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int b = (int)((r.q >> (8 * e)) & 0xff);
            w[e] = __fadd_rn(__fmul_rn((float)((b & 0xf) | lrun_k_q5_bit(r.qh, 4 * u + e)), d), m);
            w[4 + e] = __fadd_rn(__fmul_rn((float)((b >> 4) | lrun_k_q5_bit(r.qh, 16 + 4 * u + e)), d), m);
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 4 * u + 16 * run; }
};

/* kvalues_iq4nl[i] (−127 … 113) from registers: the 16 int8 values packed in
 * four words, one byte permute (an indexed array would go to local memory). */
static __device__ __forceinline__ float lrun_k_iq4_val(int i)
{
    const uint32_t lo = i < 8 ? 0xBFAD9881u : 0x26190D01u, hi = i < 8 ? 0xF6EADDCFu : 0x71594535u;
    return (float)(int8_t)(__byte_perm(lo, hi, (unsigned)(i & 7)) & 0xff);
}

/* IQ4_NL: f16 d; u8 qs[16] (18 bytes). Units as Q4_0's; y = d·kvalues[nibble]. */
template <> struct lrun_k_unit<LRUN_DTYPE_IQ4_NL> {
    static constexpr int ELEMS = 32, BYTES = 18, UNITS = 4, RUNS = 2;
    struct raw { uint32_t q, d; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        return {lrun_k_ld32_a2(blk + 2 + 4 * u), lrun_k_ld16(blk)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        const float d = lrun_k_f16((uint16_t)r.d);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int b = (int)((r.q >> (8 * e)) & 0xff);
            w[e] = __fmul_rn(d, lrun_k_iq4_val(b & 0xf));
            w[4 + e] = __fmul_rn(d, lrun_k_iq4_val(b >> 4));
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 4 * u + 16 * run; }
};

/* An E8M0 scale byte halved, as lrun_e8m0_to_f32_half: 2^(e - 128), exact (subnormal for e < 2). */
static __device__ __forceinline__ float lrun_k_e8m0_half(uint32_t e)
{
    return __uint_as_float(e < 2 ? 0x00200000u << e : (e - 1) << 23);
}

/* ggml's kvalues_mxfp4 (the E2M1 values doubled): 0, 1, 2, 3, 4, 6, 8, 12 and their negatives. */
static __device__ __forceinline__ float lrun_k_mxfp4_val(int i)
{
    const uint32_t lo = i < 8 ? 0x03020100u : 0xFDFEFF00u, hi = i < 8 ? 0x0C080604u : 0xF4F8FAFCu;
    return (float)(int8_t)(__byte_perm(lo, hi, (unsigned)(i & 7)) & 0xff);
}

/* MXFP4: u8 e; u8 qs[16] (17 bytes, so only byte-aligned). Units as Q4_0's;
 * y = e8m0_half(e)·kvalues[nibble], exact in f32. */
template <> struct lrun_k_unit<LRUN_DTYPE_MXFP4> {
    static constexpr int ELEMS = 32, BYTES = 17, UNITS = 4, RUNS = 2;
    struct raw { uint32_t q, e; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        const uint8_t *q = blk + 1 + 4 * u;
        return {(uint32_t)__ldg(q) | (uint32_t)__ldg(q + 1) << 8 | (uint32_t)__ldg(q + 2) << 16 |
                    (uint32_t)__ldg(q + 3) << 24,
                (uint32_t)__ldg(blk)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        const float d = lrun_k_e8m0_half(r.e);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int b = (int)((r.q >> (8 * e)) & 0xff);
            w[e] = __fmul_rn(d, lrun_k_mxfp4_val(b & 0xf));
            w[4 + e] = __fmul_rn(d, lrun_k_mxfp4_val(b >> 4));
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 4 * u + 16 * run; }
};

// ---------------------------------------------------------------- more 256-element blocks

/* Q2_K: u8 scales[16]; u8 qs[64]; f16 d, dmin (84 bytes, 4-aligned). Unit u
 * (0..15) is word t = u%8 of half n = u/8 (qs[32n+4t..32n+4t+3]); run j
 * (0..3) is bits 2j of those bytes: elements 128n + 32j + 4t.., sub-block
 * 8n + 2j + t/4, whose scale byte holds scale (low 4 bits) and min (high). */
template <> struct lrun_k_unit<LRUN_DTYPE_Q2_K> {
    static constexpr int ELEMS = 256, BYTES = 84, UNITS = 16, RUNS = 4;
    struct raw { uint32_t q, sc, dm; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        const int n = u >> 3, t = u & 7;
        const uint8_t *s = blk + 8 * n + (t >> 2); /* scales[8n + 2j + t/4], j = 0..3 */
        const uint32_t sc = (uint32_t)__ldg(s) | ((uint32_t)__ldg(s + 2) << 8) | ((uint32_t)__ldg(s + 4) << 16) |
                            ((uint32_t)__ldg(s + 6) << 24);
        return {lrun_k_ld32(blk + 16 + 32 * n + 4 * t), sc, lrun_k_ld32(blk + 80)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int, float *w)
    {
        const float d = lrun_k_f16((uint16_t)(r.dm & 0xffff)), dmin = lrun_k_f16((uint16_t)(r.dm >> 16));
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int sc = (int)((r.sc >> (8 * j)) & 0xff);
            const float dl = __fmul_rn(d, (float)(sc & 0xf)), ml = __fmul_rn(dmin, (float)(sc >> 4));
#pragma unroll
            for (int e = 0; e < 4; e++)
                w[4 * j + e] = __fsub_rn(__fmul_rn(dl, (float)((r.q >> (8 * e + 2 * j)) & 3)), ml);
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 128 * (u >> 3) + 32 * run + 4 * (u & 7); }
};

/* Q3_K: u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d (110 bytes, 2-aligned).
 * Units and runs as Q2_K; the third bit of element 128n + 32j + l is bit
 * 4n + j of hmask[l] (set: no −4); scales as quant_more.c's lrun_q3_K_scale. */
template <> struct lrun_k_unit<LRUN_DTYPE_Q3_K> {
    static constexpr int ELEMS = 256, BYTES = 110, UNITS = 16, RUNS = 4;
    struct raw { uint32_t q, hm, s0, s1, s2, d; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        const int n = u >> 3, t = u & 7;
        return {lrun_k_ld32_a2(blk + 32 + 32 * n + 4 * t), lrun_k_ld32_a2(blk + 4 * t), lrun_k_ld32_a2(blk + 96),
                lrun_k_ld32_a2(blk + 100), lrun_k_ld32_a2(blk + 104), lrun_k_ld16(blk + 108)};
    }
    static __device__ __forceinline__ int scale(const raw &r, int s)
    {
        return ((lrun_k_byte12(r.s0, r.s1, r.s2, s & 7) >> (4 * (s >> 3))) & 0xf) |
               (((lrun_k_byte12(r.s0, r.s1, r.s2, 8 + (s & 3)) >> (2 * (s >> 2))) & 3) << 4);
    }
    static __device__ __forceinline__ void dequant(const raw &r, int u, float *w)
    {
        const int n = u >> 3, t = u & 7;
        const float d = lrun_k_f16((uint16_t)r.d);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float dl = __fmul_rn(d, (float)(scale(r, 8 * n + 2 * j + (t >> 2)) - 32));
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int q = (int)((r.q >> (8 * e + 2 * j)) & 3);
                const int h = (int)((r.hm >> (8 * e + 4 * n + j)) & 1);
                w[4 * j + e] = __fmul_rn(dl, (float)(q - (h ? 0 : 4)));
            }
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 128 * (u >> 3) + 32 * run + 4 * (u & 7); }
};

/* Q5_K: f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] (176 bytes,
 * 4-aligned). Units as Q4_K's (word t of chunk c); the fifth bits are bits
 * 2c (low nibbles) and 2c+1 (high) of qh[4t..4t+3]. */
template <> struct lrun_k_unit<LRUN_DTYPE_Q5_K> {
    static constexpr int ELEMS = 256, BYTES = 176, UNITS = 32, RUNS = 2;
    struct raw { uint32_t q, qh, dm, s0, s1, s2; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        return {lrun_k_ld32(blk + 48 + 4 * u), lrun_k_ld32(blk + 16 + 4 * (u & 7)), lrun_k_ld32(blk),
                lrun_k_ld32(blk + 4), lrun_k_ld32(blk + 8), lrun_k_ld32(blk + 12)};
    }
    static __device__ __forceinline__ void scale_min(const raw &r, int j, int *sc, int *m)
    {
        lrun_k_scale_min12(r.s0, r.s1, r.s2, j, sc, m);
    }
    static __device__ __forceinline__ void dequant(const raw &r, int u, float *w)
    {
        const int c = u >> 3;
        const float d = lrun_k_f16((uint16_t)(r.dm & 0xffff)), dmin = lrun_k_f16((uint16_t)(r.dm >> 16));
        int sc0, m0, sc1, m1;
        scale_min(r, 2 * c, &sc0, &m0);
        scale_min(r, 2 * c + 1, &sc1, &m1);
        const float d0 = __fmul_rn(d, (float)sc0), mm0 = __fmul_rn(dmin, (float)m0);
        const float d1 = __fmul_rn(d, (float)sc1), mm1 = __fmul_rn(dmin, (float)m1);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int b = (int)((r.q >> (8 * e)) & 0xff), h = (int)((r.qh >> (8 * e)) & 0xff);
            w[e] = __fsub_rn(__fmul_rn(d0, (float)((b & 0xf) + ((h >> (2 * c)) & 1) * 16)), mm0);
            w[4 + e] = __fsub_rn(__fmul_rn(d1, (float)((b >> 4) + ((h >> (2 * c + 1)) & 1) * 16)), mm1);
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 64 * (u >> 3) + 4 * (u & 7) + 32 * run; }
};

/* IQ4_XS: f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128] (136 bytes,
 * 4-aligned). Unit u (0..31) is word t = u%4 of sub-block j = u/4
 * (qs[16j+4t..]): low nibbles are elements 32j + 4t.., high 32j + 16 + 4t..;
 * the sub-block's 6-bit scale (−32..31) is scales_l's nibble j and bits 2j of scales_h. */
template <> struct lrun_k_unit<LRUN_DTYPE_IQ4_XS> {
    static constexpr int ELEMS = 256, BYTES = 136, UNITS = 32, RUNS = 2;
    struct raw { uint32_t q, dh, sl; };
    static __device__ __forceinline__ raw load(const uint8_t *blk, int u)
    {
        return {lrun_k_ld32(blk + 8 + 4 * u), lrun_k_ld32(blk), lrun_k_ld32(blk + 4)};
    }
    static __device__ __forceinline__ void dequant(const raw &r, int u, float *w)
    {
        const int j = u >> 2;
        const int ls = (int)(((r.sl >> (4 * j)) & 0xf) | (((r.dh >> (16 + 2 * j)) & 3) << 4)) - 32;
        const float dl = __fmul_rn(lrun_k_f16((uint16_t)(r.dh & 0xffff)), (float)ls);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int b = (int)((r.q >> (8 * e)) & 0xff);
            w[e] = __fmul_rn(dl, lrun_k_iq4_val(b & 0xf));
            w[4 + e] = __fmul_rn(dl, lrun_k_iq4_val(b >> 4));
        }
    }
    static __device__ __forceinline__ int offset(int u, int run) { return 32 * (u >> 2) + 4 * (u & 3) + 16 * run; }
};

// ---------------------------------------------------------------- row conversion kernels

/* dst row i (k elements of dtype D, rows k apart) = row ids[i] of src
 * (rows row_bytes apart), ids NULL meaning row i. One unit per thread,
 * grid-stride over n_rows * units-per-row in 64-bit. A negative id (a token
 * the caller failed to validate) gives a row of zeros rather than a read
 * before the table. */
template <int T, int D>
__global__ void lrun_k_rows_units(const uint8_t *__restrict__ src, size_t row_bytes, const int32_t *__restrict__ ids,
                                  int64_t n_rows, int64_t k, void *__restrict__ dst)
{
    using Q = lrun_k_unit<T>;
    const int64_t upr = k / Q::ELEMS * Q::UNITS; /* units per row */
    const int64_t total = n_rows * upr;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / upr, ur = i % upr, b = ur / Q::UNITS;
        const int u = (int)(ur % Q::UNITS);
        const int64_t srow = ids ? (int64_t)ids[row] : row;
        float w[Q::RUNS * 4];
        if (srow >= 0) {
            Q::dequant(Q::load(src + (size_t)srow * row_bytes + (size_t)b * Q::BYTES, u), u, w);
        } else {
#pragma unroll
            for (int e = 0; e < Q::RUNS * 4; e++) w[e] = 0.0f;
        }
        const int64_t base = row * k + b * Q::ELEMS;
#pragma unroll
        for (int r = 0; r < Q::RUNS; r++)
#pragma unroll
            for (int e = 0; e < 4; e++) lrun_k_store<D>(dst, base + Q::offset(u, r) + e, w[4 * r + e]);
    }
}

/* As lrun_k_rows_units for the float types, one element per thread: any k,
 * any 2-byte (4-byte for f32) alignment. */
template <int T, int D>
__global__ void lrun_k_rows_elems(const uint8_t *__restrict__ src, size_t row_bytes, const int32_t *__restrict__ ids,
                                  int64_t n_rows, int64_t k, void *__restrict__ dst)
{
    const int64_t total = n_rows * k;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = i / k, col = i % k;
        const int64_t srow = ids ? (int64_t)ids[row] : row;
        lrun_k_store<D>(dst, i, srow >= 0 ? lrun_k_load_float<T>(src + (size_t)srow * row_bytes, col) : 0.0f);
    }
}

#define LRUN_K_ROWS_THREADS 256

/* Launches the conversion of n_rows rows of w_dtype (gathered by ids when
 * not NULL) into dst of dtype D; arguments already checked. */
template <int D>
static cudaError_t lrun_k_rows_launch(lrun_dtype t, const void *src, size_t row_bytes, const int32_t *ids,
                                      int64_t n_rows, int64_t k, void *dst, cudaStream_t st)
{
    const uint8_t *s = (const uint8_t *)src;
    const int nt = LRUN_K_ROWS_THREADS;
    const int64_t ue = t == LRUN_DTYPE_Q4_0 || t == LRUN_DTYPE_Q4_1 || t == LRUN_DTYPE_Q8_0 || t == LRUN_DTYPE_Q4_K ||
                               t == LRUN_DTYPE_Q5_0 || t == LRUN_DTYPE_Q5_1 || t == LRUN_DTYPE_IQ4_NL ||
                               t == LRUN_DTYPE_Q5_K || t == LRUN_DTYPE_IQ4_XS || t == LRUN_DTYPE_MXFP4
                           ? 8
                           : (t == LRUN_DTYPE_Q6_K || t == LRUN_DTYPE_Q2_K || t == LRUN_DTYPE_Q3_K ? 16 : 1); /* elements per thread */
    const unsigned g = lrun_k_grid(n_rows * (k / ue), nt, LRUN_K_ELTWISE_BLOCKS);
    switch (t) {
    case LRUN_DTYPE_F32: lrun_k_rows_elems<LRUN_DTYPE_F32, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_F16: lrun_k_rows_elems<LRUN_DTYPE_F16, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_BF16: lrun_k_rows_elems<LRUN_DTYPE_BF16, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q4_0: lrun_k_rows_units<LRUN_DTYPE_Q4_0, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q4_1: lrun_k_rows_units<LRUN_DTYPE_Q4_1, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q8_0: lrun_k_rows_units<LRUN_DTYPE_Q8_0, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q4_K: lrun_k_rows_units<LRUN_DTYPE_Q4_K, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q6_K: lrun_k_rows_units<LRUN_DTYPE_Q6_K, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q5_0: lrun_k_rows_units<LRUN_DTYPE_Q5_0, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q5_1: lrun_k_rows_units<LRUN_DTYPE_Q5_1, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_IQ4_NL: lrun_k_rows_units<LRUN_DTYPE_IQ4_NL, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q2_K: lrun_k_rows_units<LRUN_DTYPE_Q2_K, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q3_K: lrun_k_rows_units<LRUN_DTYPE_Q3_K, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_Q5_K: lrun_k_rows_units<LRUN_DTYPE_Q5_K, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_IQ4_XS: lrun_k_rows_units<LRUN_DTYPE_IQ4_XS, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    case LRUN_DTYPE_MXFP4: lrun_k_rows_units<LRUN_DTYPE_MXFP4, D><<<g, nt, 0, st>>>(s, row_bytes, ids, n_rows, k, dst); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

#endif
