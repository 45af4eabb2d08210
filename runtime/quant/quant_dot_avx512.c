/* quant_dot_avx512.c — AVX-512 (F/BW/VL/DQ + VNNI) forms of the dot kernels
 * for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, MXFP4 and Q2_K, Q3_K, Q4_K,
 * Q5_K, Q6_K, IQ4_XS, giving the AVX2 kernels' bits exactly (hence
 * llama.cpp's; docs/numerics.md §3-6). The 32-element types and Q2_K, Q3_K,
 * IQ4_XS share the AVX2 kernels' walks (quant_dot_walk.h,
 * quant_dot_walk_k.h), only their integer-sum helpers being this file's.
 * The float types
 * (F32, F16, BF16) keep AVX2: their bits fix one FMA chain per 8 lanes and
 * 16 elements, which bounds them (and DRAM does at m = 1) whatever the
 * width; a 16-lane form measured 0.85-1.05x on Zen 4 and was dropped.
 *
 * Compiled for every x86-64 build with target attributes (not -march), and
 * chosen at run time (quant_isa.c) where the CPU has these extensions.
 *
 * What may change and what may not. The bits of a result are decided by its
 * float arithmetic: each of the 8 lanes is one FMA chain over the blocks in
 * order, and the final hsum8. Those stay exactly the AVX2 kernels'. What
 * feeds each FMA is an exact integer (a lane's sum of products), and integer
 * sums do not depend on how they are formed, so here:
 *   - VNNI's vpdpbusd (u8·s8, four products into an int32, no saturation)
 *     replaces maddubs + madd(ones) where maddubs cannot saturate either
 *     (checked per kernel below), and vpdpwssd fuses madd + add;
 *   - a K-quant's two 32-element chunks share one 512-bit register; its
 *     halves fold by an exact integer add into the AVX2 lanes before the
 *     one conversion and FMA per super-block;
 *   - the 32-element types stay on 256-bit lanes (AVX2's kernels with
 *     vpdpbusd), measured faster on Zen 4 than two rows per 512-bit register;
 *   - MXFP4's per-block integer sums come 8 at a time out of one
 *     transpose-and-add, ahead of the same per-row f32 chain.
 * Zen 4 runs 512-bit operations as two 256-bit halves, so what gains there
 * is fewer instructions (VNNI, one 512-bit operation for two 256-bit
 * ones), not wider arithmetic; measured in docs/cpu-kernels.md. */
#include "quant/quant_dot.h"
#include "quant/quant_dot_nx.h"
#include "quant/quant_k_scales.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(LRUN_HAVE_AVX512)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#endif

#define ALWAYS_INLINE inline __attribute__((always_inline))
/* Loops over the NX rows (and the few blocks of a step) must be unrolled so
 * their accumulators live in registers. */
#define UNROLL _Pragma("GCC unroll 8")
#define ROW(x, r, stride) ((const void *)((const char *)(x) + (size_t)(r) * (stride)))

// ---------------------------------------------------------------- 32-element blocks

/* quant_dot_walk.h's walks (the AVX2 kernels' own) over these lane helpers.
 * lanes_us is VNNI's vpdpbusd where AVX2 takes maddubs + madd(ones): every
 * walk keeps u ≤ 128 against an int8 (Q8_0/Q4_0/IQ4_NL/Q5_0 as |w| against
 * sign(x, w), −(−128) wrapping to −128 in both; Q4_1's nibbles ≤ 15 and
 * Q5_1's quants ≤ 31 against x), so maddubs's pairs lie in [−32768, 32512]
 * and never saturate: the lane sums, hence the bits, are the same. The
 * rows stay on 256-bit lanes: pairs of rows in one 512-bit register (one
 * FMA for both rows' chains) gave the same bits but ran 5-10 % slower on
 * Zen 4, whose 512-bit operations are two 256-bit halves. */

/* AVX's horizontal sum of 8 lanes, as quant_dot_avx2.h's. */
static ALWAYS_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 32 nibbles of qs[16] in element order (low nibbles 0..15, high 16..31). */
static ALWAYS_INLINE __m256i nibbles32(const uint8_t *qs)
{
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* lane l = Σ of the 4 products of elements 4l..4l+3 (u unsigned), one vpdpbusd. */
static ALWAYS_INLINE __m256 lanes_us(__m256i u, __m256i s)
{
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s));
}

/* Q5 quants (0..31) of a block: the fifth bits from a mask register
 * (AVX-512BW: bit i of qh selects byte i), one instruction where AVX2 takes five. */
static ALWAYS_INLINE __m256i q5_quants(const uint8_t *qs, const uint8_t *qh)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    return _mm256_or_si256(nibbles32(qs), _mm256_maskz_mov_epi8((__mmask32)h, _mm256_set1_epi8(16)));
}

#include "quant/quant_dot_walk.h"

static DOT_NX_FN_KIND(dot_q4_0_avx512, dot_q8x_nx, 1)
static DOT_NX_FN_KIND(dot_q8_0_avx512, dot_q8x_nx, 0)
static DOT_NX_FN(dot_q4_1_avx512, dot_q4_1_nx)
static DOT_NX_FN(dot_q5_0_avx512, dot_q5_0_nx)
static DOT_NX_FN(dot_q5_1_avx512, dot_q5_1_nx)
static DOT_NX_FN(dot_iq4_nl_avx512, dot_iq4_nl_nx)

// ---------------------------------------------------------------- MXFP4 · Q8_0

/* llama.cpp's repacked order (quant_mxfp4.c): per row one f32 chain
 * acc = fma((float)Σ_b, dw_b·dx_b, acc) over the blocks, Σ_b the exact
 * integer sum of block b's 32 products (|value| ≤ 12: no saturation). The
 * AVX2 kernel forms each Σ_b with its own horizontal sum; here the 8-lane
 * vpdpbusd partials of 8 blocks go through one transpose-and-add, their
 * scales come from two gathers and one multiply (the same f32 products),
 * and then the same chain, block after block. */

/* The 32 values of a block (bytes in element order) through the code table. */
static ALWAYS_INLINE __m256i mxfp4_values(const lrun_block_mxfp4 *b, __m256i table)
{
    return _mm256_shuffle_epi8(table, nibbles32(b->qs));
}

/* Lane j of the result = the sum of the 8 lanes of p[j]. */
static ALWAYS_INLINE __m256i sums_8x8(const __m256i p[8])
{
    __m256i a[4], c[2];
    UNROLL
    for (int i = 0; i < 4; ++i) /* per 128-bit half: [p2i 0+2, p2i+1 0+2, p2i 1+3, p2i+1 1+3] */
        a[i] = _mm256_add_epi32(_mm256_unpacklo_epi32(p[2 * i], p[2 * i + 1]),
                                _mm256_unpackhi_epi32(p[2 * i], p[2 * i + 1]));
    UNROLL
    for (int i = 0; i < 2; ++i) /* per half: the sums of p4i .. p4i+3 */
        c[i] = _mm256_add_epi32(_mm256_unpacklo_epi64(a[2 * i], a[2 * i + 1]),
                                _mm256_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(c[0], c[1], 0x20), _mm256_permute2x128_si256(c[0], c[1], 0x31));
}

/* Each lane's E8M0 byte e (0..255) as lrun_e8m0_to_f32_half: 2^(e−128), subnormal for e < 2. */
static ALWAYS_INLINE __m256 e8m0_half_lanes(__m256i e)
{
    const __m256i sub = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
    const __m256i norm = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
    return _mm256_castsi256_ps(_mm256_mask_blend_epi32(_mm256_cmplt_epu32_mask(e, _mm256_set1_epi32(2)), norm, sub));
}

/* dw of blocks w[0..7]. The gather reads 4 bytes at each block's start (e and 3 code bytes). */
static ALWAYS_INLINE __m256 mxfp4_scales_8(const lrun_block_mxfp4 *w)
{
    const __m256i idx = _mm256_setr_epi32(0, 17, 34, 51, 68, 85, 102, 119);
    return e8m0_half_lanes(
        _mm256_and_si256(_mm256_i32gather_epi32((const int *)(const void *)w, idx, 1), _mm256_set1_epi32(0xFF)));
}

/* dx of Q8_0 blocks x[0..7] (f16 d at each block's start, 34 bytes apart). */
static ALWAYS_INLINE __m256 q8_0_scales_8(const lrun_block_q8_0 *x)
{
    const __m256i idx = _mm256_setr_epi32(0, 34, 68, 102, 136, 170, 204, 238);
    return _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_i32gather_epi32((const int *)(const void *)x, idx, 1)));
}

static ALWAYS_INLINE int hsum_epi32(__m256i p)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* Four chains (lanes) over a pair of blocks: p the 8 (block, chain) integer
 * partials in lane order (b: chains 0-3, b + 1: chains 0-3), dw and dx in
 * the same order; each lane takes fma(Σ, dw·dx, acc) for b, then for b + 1
 * when two (the chains' order, llama.cpp's per-block f32 products). */
static ALWAYS_INLINE __m128 mxfp4_chains_step(const __m256i p[8], __m256 dw, __m256 dx, __m128 acc, int two)
{
    const __m256 sums = _mm256_cvtepi32_ps(sums_8x8(p));
    const __m256 sc = _mm256_mul_ps(dw, dx);
    acc = _mm_fmadd_ps(_mm256_castps256_ps128(sums), _mm256_castps256_ps128(sc), acc);
    return two ? _mm_fmadd_ps(_mm256_extractf128_ps(sums, 1), _mm256_extractf128_ps(sc, 1), acc) : acc;
}

/* Four activation rows (prefill's products): the same four chains, one a
 * row, kept as the four lanes of one vector. Per pair of blocks, one
 * sums_8x8 gives the 8 (block, row) sums in lane order (b: rows 0-3, b + 1:
 * rows 0-3), one conversion their rows' dx (8 halves loaded one by one: a
 * gather was slower on Zen 4), and each lane takes fma(Σ, dw·dx, acc)
 * for block b, then for b + 1: each row's chain in block order with the same
 * f32 operations as the loop below, without its store and 16 scalar loads per
 * 8 blocks and row (that round trip was most of gpt-oss's prefill on the
 * CPU). An odd last block takes the low half alone. */
static ALWAYS_INLINE void dot_mxfp4_4(int64_t k, const lrun_block_mxfp4 *w, const void *x, size_t xs, float *out)
{
    const __m128i t = _mm_loadu_si128((const __m128i *)lrun_kvalues_mxfp4);
    const __m256i table = _mm256_set_m128i(t, t);
    const int64_t nb = k / 32;
    const lrun_block_q8_0 *xr[4];
    UNROLL
    for (int r = 0; r < 4; ++r) xr[r] = ROW(x, r, xs);
    __m128 acc = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        __m256i p[8];
        UNROLL
        for (int j = 0; j < 2; ++j) {
            if (j == 1 && !two) {
                p[4] = p[5] = p[6] = p[7] = _mm256_setzero_si256();
                break;
            }
            const __m256i v = mxfp4_values(&w[b + j], table), av = _mm256_sign_epi8(v, v);
            UNROLL
            for (int r = 0; r < 4; ++r)
                p[4 * j + r] =
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), av,
                                        _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xr[r][b + j].qs), v));
        }
        const int64_t b1 = two ? b + 1 : b; /* an odd last block: lanes 4-7 repeat b, never added */
        const __m256 dx = _mm256_cvtph_ps(_mm_setr_epi16((short)xr[0][b].d, (short)xr[1][b].d, (short)xr[2][b].d,
                                                         (short)xr[3][b].d, (short)xr[0][b1].d, (short)xr[1][b1].d,
                                                         (short)xr[2][b1].d, (short)xr[3][b1].d));
        const __m256i e = _mm256_set_m128i(_mm_set1_epi32(w[b1].e), _mm_set1_epi32(w[b].e));
        acc = mxfp4_chains_step(p, e8m0_half_lanes(e), dx, acc, two);
    }
    _mm_storeu_ps(out, acc);
}

static ALWAYS_INLINE void dot_mxfp4_nx(int64_t k, const lrun_block_mxfp4 *w, const void *x, size_t xs, const int NX,
                                       float *out)
{
    if (NX == 4) {
        dot_mxfp4_4(k, w, x, xs, out);
        return;
    }
    const __m128i t = _mm_loadu_si128((const __m128i *)lrun_kvalues_mxfp4);
    const __m256i table = _mm256_set_m128i(t, t);
    const int64_t nb = k / 32;
    const lrun_block_q8_0 *xr[LRUN_DOT_MAX_ROWS];
    float acc[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) {
        xr[r] = ROW(x, r, xs);
        acc[r] = 0.0f;
    }
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        __m256i v[8], av[8];
        UNROLL
        for (int j = 0; j < 8; ++j) {
            v[j] = mxfp4_values(&w[b + j], table);
            av[j] = _mm256_sign_epi8(v[j], v[j]);
        }
        const __m256 dw = mxfp4_scales_8(&w[b]);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            __m256i p[8];
            UNROLL
            for (int j = 0; j < 8; ++j)
                p[j] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), av[j],
                                           _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xr[r][b + j].qs), v[j]));
            float sf[8], sc[8];
            _mm256_storeu_ps(sf, _mm256_cvtepi32_ps(sums_8x8(p)));
            _mm256_storeu_ps(sc, _mm256_mul_ps(dw, q8_0_scales_8(&xr[r][b])));
            UNROLL
            for (int j = 0; j < 8; ++j) acc[r] = fmaf(sf[j], sc[j], acc[r]);
        }
    }
    for (; b < nb; ++b) {
        const __m256i v = mxfp4_values(&w[b], table), av = _mm256_sign_epi8(v, v);
        const float dw = lrun_e8m0_to_f32_half(w[b].e);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xr[r][b].qs), v);
            const int sumi = hsum_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), av, sx));
            acc[r] = fmaf((float)sumi, dw * _cvtsh_ss(xr[r][b].d), acc[r]);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) out[r] = acc[r];
}

static DOT_NX_FN(dot_mxfp4_avx512, dot_mxfp4_nx)

    /* Four weight rows against one activation row (decode): the rows' chains as
 * the four lanes of one vector, as dot_mxfp4_4 keeps four activation rows'.
 * One row's chain is one dependent FMA per block, so row by row the decode
 * dot waits on it (about 8 GB/s a core of MXFP4 on Zen 4, a third of gpt-oss's
 * CPU decode at 13% of its bytes); four rows interleave four chains. Per pair
 * of blocks the 8 (block, row) sums come from one sums_8x8 in lane order
 * (b: rows 0-3, b + 1: rows 0-3), dw from the 8 E8M0 bytes, dx from the
 * activation row's two f16 scales, and each lane takes fma(Σ, dw·dx, acc)
 * for b, then b + 1: each row's operations in its order (the same bits). */
static ALWAYS_INLINE void dot_mxfp4_w4(int64_t k, const lrun_block_mxfp4 *w, size_t ws, const lrun_block_q8_0 *x,
                                       float *y)
{
    const __m128i t = _mm_loadu_si128((const __m128i *)lrun_kvalues_mxfp4);
    const __m256i table = _mm256_set_m128i(t, t);
    const int64_t nb = k / 32;
    const lrun_block_mxfp4 *wr[4];
    UNROLL
    for (int r = 0; r < 4; ++r) wr[r] = ROW(w, r, ws);
    __m128 acc = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        const int64_t b1 = two ? b + 1 : b; /* an odd last block: lanes 4-7 repeat b, never added */
        __m256i p[8];
        UNROLL
        for (int j = 0; j < 2; ++j) {
            const lrun_block_q8_0 *xb = &x[j ? b1 : b];
            const __m256i xv = _mm256_loadu_si256((const __m256i *)xb->qs);
            UNROLL
            for (int r = 0; r < 4; ++r) {
                const __m256i v = mxfp4_values(&wr[r][j ? b1 : b], table);
                p[4 * j + r] =
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(v, v), _mm256_sign_epi8(xv, v));
            }
        }
        const __m256i e = _mm256_setr_epi32(wr[0][b].e, wr[1][b].e, wr[2][b].e, wr[3][b].e, wr[0][b1].e, wr[1][b1].e,
                                            wr[2][b1].e, wr[3][b1].e);
        const __m256 dx = _mm256_set_m128(_mm_set1_ps(_cvtsh_ss(x[b1].d)), _mm_set1_ps(_cvtsh_ss(x[b].d)));
        acc = mxfp4_chains_step(p, e8m0_half_lanes(e), dx, acc, two);
    }
    _mm_storeu_ps(y, acc);
}

/* lrun_gemv_kernel's MXFP4 form (quant_dot.h): nx must be 1 (decode); more
 * activation rows go through the dot, as the caller would. */
static void gemv_mxfp4_avx512(int64_t k, const void *w, size_t ws, int64_t nw, const void *x, size_t xs, int64_t nx,
                              float *y, int64_t ldy)
{
    if (nx != 1) {
        for (int64_t j = 0; j < nw; ++j)
            for (int64_t r = 0; r < nx; ++r) dot_mxfp4_avx512(k, ROW(w, j, ws), ROW(x, r, xs), 0, 1, y + r * ldy + j);
        return;
    }
    int64_t j = 0;
    for (; j + 4 <= nw; j += 4) dot_mxfp4_w4(k, ROW(w, j, ws), ws, x, y + j);
    for (; j < nw; ++j) dot_mxfp4_avx512(k, ROW(w, j, ws), x, 0, 1, y + j);
}

// ---------------------------------------------------------------- super-blocks (Q8_K activations)

/* The K-quants' walks are quant_dot_walk_k456.h's and quant_dot_walk_k.h's
 * (the AVX2 kernels' own); only their lane sums (q45_K_sums, q6_K_sums,
 * q2_K_sums, …) are this file's, each giving AVX2's 8 int32 lanes exactly. */

/* Lanes l and l+8 of the 16 int32 sums added: AVX2's 8 lanes. */
static ALWAYS_INLINE __m256i fold_16(__m512i s)
{
    return _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
}

// ---------------------------------------------------------------- Q4_K · Q8_K

/* int16 lanes: the first 16 = element i of v, the last 16 = element j. */
static ALWAYS_INLINE __m512i words_2(__m512i v, int i, int j)
{
    return _mm512_permutexvar_epi16(_mm512_inserti64x4(_mm512_set1_epi16((short)i), _mm256_set1_epi16((short)j), 1), v);
}

/* Chunk c (64 elements) of a super-block is 32 bytes of qs: low nibbles
 * (sub-block 2c) against y[64c..64c+31], high ones (2c+1) against the next
 * 32: one register, one 64-byte load of y. maddubs (nibble ≤ 15 · int8)
 * cannot saturate; vpdpwssd applies the scale and adds, exactly. Lanes l
 * and l+8 of the 16 int32 sums add into AVX2's lane l, then the same FMAs.
 * Q5_K (is5) is the same with the fifth bits from qh: bit 2c of qh[l] for
 * the low nibbles of chunk c, bit 2c+1 for the high ones (quant_dot_k.c's
 * AVX2 form); its quants ≤ 31 cannot saturate maddubs either. The two
 * types share the header (d, dmin, scales) and differ in where qs is. */
static ALWAYS_INLINE void q45_K_sums(int is5, const void *blk, const uint8_t sc[8], const lrun_block_q8_K *const *xr,
                                     int64_t b, const int NX, __m256i *sumi)
{
    const uint8_t *qs = (const uint8_t *)blk + (is5 ? offsetof(lrun_block_q5_K, qs) : offsetof(lrun_block_q4_K, qs));
    const __m512i one = _mm512_set1_epi8(1), low4 = _mm512_set1_epi8(0x0F);
    const __m512i qh = is5 ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)((const lrun_block_q5_K *)blk)->qh))
                           : _mm512_setzero_si512();
    const __m512i sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
    __m512i s16[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) s16[r] = _mm512_setzero_si512();
    UNROLL
    for (int c = 0; c < 4; ++c) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m512i qq = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1), low4);
        if (is5) { /* bit 2c (low half) or 2c+1 (high half) of each qh byte, as bit 4 */
            const __m512i sh = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * c)), _mm256_set1_epi16((short)(2 * c + 1)), 1);
            qq = _mm512_or_si512(qq, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh), one), 4));
        }
        __m512i s = words_2(sc16, 2 * c, 2 * c + 1);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            __m512i p = _mm512_maddubs_epi16(qq, _mm512_loadu_si512((const void *)(xr[r][b].qs + 64 * c)));
            s16[r] = _mm512_dpwssd_epi32(s16[r], p, s);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) sumi[r] = fold_16(s16[r]);
}

// ---------------------------------------------------------------- Q6_K · Q8_K

/* int16 lanes: 128-bit lane L (8 words) = element base + L of v. */
static ALWAYS_INLINE __m512i words_4(__m512i v, int base)
{
    const __m512i idx = _mm512_add_epi16(_mm512_set1_epi16((short)base),
                                         _mm512_set_epi64(0x0003000300030003, 0x0003000300030003, 0x0002000200020002,
                                                          0x0002000200020002, 0x0001000100010001, 0x0001000100010001,
                                                          0, 0));
    return _mm512_permutexvar_epi16(idx, v);
}

/* A half h of a super-block is 64 bytes of ql and 32 of qh, making four
 * 32-element chunks q[0..3] against y[128h + 32c ..]; chunks 0, 1 share one
 * register and one 64-byte load of y, chunks 2, 3 the next. Each 16
 * elements have their own scale (a 128-bit lane of the scale register).
 * maddubs (q ≤ 63 · int8, pairs ≤ 16128) cannot saturate. The −32 offset is
 * taken out through bsums as in AVX2; lanes l and l+8 add into AVX2's lane l. */
static ALWAYS_INLINE void q6_K_sums(const lrun_block_q6_K *wb, __m256i sc, const lrun_block_q8_K *const *xr, int64_t b,
                                    const int NX, __m256i *sumi)
{
    const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
    /* qh's shifts per 16-bit element: chunk 0 by 4 left, 1 by 2 left (then 2: 0, 3: 2 right) */
    const __m512i shl01 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr23 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i scz = _mm512_castsi256_si512(sc);
    __m512i s16[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) s16[r] = _mm512_setzero_si512();
    UNROLL
    for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512((const void *)(wb->ql + 64 * h)); /* qla | qlb */
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wb->qh + 32 * h)));
        const __m512i q01 = _mm512_or_si512(_mm512_and_si512(ql, low4),
                                            _mm512_and_si512(_mm512_sllv_epi16(qh, shl01), bits45));
        const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                            _mm512_and_si512(_mm512_srlv_epi16(qh, shr23), bits45));
        const __m512i s01 = words_4(scz, 8 * h), s23 = words_4(scz, 8 * h + 4);
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const int8_t *y = xr[r][b].qs + 128 * h;
            __m512i p01 = _mm512_maddubs_epi16(q01, _mm512_loadu_si512((const void *)y));
            __m512i p23 = _mm512_maddubs_epi16(q23, _mm512_loadu_si512((const void *)(y + 64)));
            s16[r] = _mm512_dpwssd_epi32(s16[r], p01, s01);
            s16[r] = _mm512_dpwssd_epi32(s16[r], p23, s23);
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) sumi[r] = fold_16(s16[r]);
}

#include "quant/quant_dot_walk_k456.h"

static DOT_NX_FN(dot_q4_K_avx512, dot_q4_K_nx)
static DOT_NX_FN(dot_q5_K_avx512, dot_q5_K_nx)
static DOT_NX_FN(dot_q6_K_avx512, dot_q6_K_nx)

// ---------------------------------------------------------------- Q2_K, Q3_K, IQ4_XS · Q8_K

/* quant_dot_walk_k.h's walks (the AVX2 kernels' own) over these lane sums.
 * Q2_K and Q3_K: AVX2 takes each 32-element chunk j of a 128-element group
 * on its own (maddubs, then madd with its two 16-element scales); here
 * chunks 2i and 2i+1 share one 512-bit register and one 64-byte load of y,
 * the scales of their four 16-element sub-blocks in its four 128-bit lanes
 * (words_4), and vpdpwssd fuses madd + add. The same maddubs on the same
 * bytes (Q2_K's q ≤ 3, Q3_K's q' ≤ 7 against int8: no pair saturates), and
 * lanes l and l+8 fold by an exact integer add into AVX2's lane l: the same
 * sums, hence the same bits. */

/* Q2_K and Q3_K: chunk j of group n is bits 2j of the group's 32 bytes;
 * the low half of the register takes j = 2i, the high half 2i + 1 (shifts
 * 4i, 4i + 2). Q3_K (hmask set; NULL for Q2_K, folded away when inlined)
 * adds the high bit of chunk 4n + j (bit 4n + j of every hmask byte) as 4
 * through a mask register. Q3_K's AVX2 256-bit form with vpdpwssd measured
 * 0.98x of AVX2 at 1 row and 1.14x at 4, this one 1.05x and 1.09x: this one
 * is kept, decode (1 row) being where host compute runs. */
static ALWAYS_INLINE void q23_K_sums(const uint8_t *qs, const uint8_t *hmask, __m256i sc,
                                     const lrun_block_q8_K *const *xr, int64_t b, const int NX, __m256i *sumi)
{
    const __m512i three = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4), scz = _mm512_castsi256_si512(sc);
    const __m512i hm =
        hmask ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)hmask)) : _mm512_setzero_si512();
    __m512i s16[LRUN_DOT_MAX_ROWS];
    UNROLL
    for (int r = 0; r < NX; ++r) s16[r] = _mm512_setzero_si512();
    UNROLL
    for (int n = 0; n < 2; ++n) {
        const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * n)));
        UNROLL
        for (int i = 0; i < 2; ++i) {
            const __m512i sh = _mm512_inserti64x4(_mm512_set1_epi16((short)(4 * i)), _mm256_set1_epi16((short)(4 * i + 2)), 1);
            __m512i v = _mm512_and_si512(_mm512_srlv_epi16(q, sh), three);
            if (hmask) {
                const __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (4 * n + 2 * i))),
                                                       _mm256_set1_epi8((char)(1 << (4 * n + 2 * i + 1))), 1);
                v = _mm512_or_si512(v, _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(hm, bit), four));
            }
            const __m512i s = words_4(scz, 8 * n + 4 * i);
            UNROLL
            for (int r = 0; r < NX; ++r) {
                const __m512i y = _mm512_loadu_si512((const void *)(xr[r][b].qs + 128 * n + 64 * i));
                s16[r] = _mm512_dpwssd_epi32(s16[r], _mm512_maddubs_epi16(v, y), s);
            }
        }
    }
    UNROLL
    for (int r = 0; r < NX; ++r) sumi[r] = fold_16(s16[r]);
}

static ALWAYS_INLINE void q2_K_sums(const lrun_block_q2_K *wb, __m256i sc, const lrun_block_q8_K *const *xr,
                                    int64_t b, const int NX, __m256i *sumi)
{
    q23_K_sums(wb->qs, NULL, sc, xr, b, NX, sumi);
}

static ALWAYS_INLINE void q3_K_sums(const lrun_block_q3_K *wb, __m256i sc, const lrun_block_q8_K *const *xr,
                                    int64_t b, const int NX, __m256i *sumi)
{
    q23_K_sums(wb->qs, wb->hmask, sc, xr, b, NX, sumi);
}

/* IQ4_XS: AVX2's lane sums with vpdpwssd fusing madd + add, on 256-bit
 * lanes (|value| ≤ 127 against sign(y, value): no pair saturates). A 512-bit
 * form (two sub-blocks per register; vpabsb and a masked subtract, as
 * AVX-512 has no vpsignb) gave the same bits but measured 0.93x of AVX2 at
 * 1 row and 1.07x at 4, against 1.03x and 1.16x for this one (Zen 4,
 * docs/cpu-kernels.md). */
static ALWAYS_INLINE void iq4_xs_sums(const lrun_block_iq4_xs *wb, const lrun_block_q8_K *const *xr, int64_t b,
                                      const int NX, __m256i *sumi)
{
    const __m256i table = iq4_table();
    UNROLL
    for (int r = 0; r < NX; ++r) sumi[r] = _mm256_setzero_si256();
    UNROLL
    for (int j = 0; j < 8; ++j) {
        const __m256i v = _mm256_shuffle_epi8(table, nibbles32(wb->qs + 16 * j));
        const __m256i av = _mm256_sign_epi8(v, v), s = _mm256_set1_epi16((int16_t)lrun_iq4_xs_scale(wb, j));
        UNROLL
        for (int r = 0; r < NX; ++r) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)(xr[r][b].qs + 32 * j));
            sumi[r] = _mm256_dpwssd_epi32(sumi[r], _mm256_maddubs_epi16(av, _mm256_sign_epi8(y, v)), s);
        }
    }
}

#include "quant/quant_dot_walk_k.h"

static DOT_NX_FN(dot_q2_K_avx512, dot_q2_K_nx) static DOT_NX_FN(dot_q3_K_avx512,
                                                                dot_q3_K_nx) static DOT_NX_FN(dot_iq4_xs_avx512,
                                                                                              dot_iq4_xs_nx)

// ---------------------------------------------------------------- dispatch

// ---------------------------------------------------------------- float weights, several rows

/* The AVX2 level's float walk (quant_dot_walk_float.h), compiled here so
 * that its multi-row form may use AVX-512VL's 32 ymm registers: f16 and
 * bf16 take 3 weight rows × 4 activation rows (24 accumulators, 3 weight
 * vectors, one activation vector); f32, whose rows are twice as long in
 * L1, keeps AVX2's 2 × 3 (wider tiles measured slower on Zen 4:
 * docs/cpu-kernels.md). The lanes, chains and sums are AVX2's
 * (EVEX-encoded, the same operations), so are the bits. The one-row
 * lrun_dot_fn kernels stay AVX2's (a 16-lane form gained nothing). */
#include "quant/quant_dot_walk_float.h"

#ifndef FLOAT_GEMM512_TW
#define FLOAT_GEMM512_TW 3
#endif
#ifndef FLOAT_GEMM512_TX
#define FLOAT_GEMM512_TX 4
#endif
#ifndef FLOAT_GEMM512_F32_TW
#define FLOAT_GEMM512_F32_TW 2
#endif
#ifndef FLOAT_GEMM512_F32_TX
#define FLOAT_GEMM512_F32_TX 3
#endif

#define FLOAT_GEMM_FN(name, kind, TW, TX)                                                                    \
    static void name(int64_t k, const void *w, size_t ws, int64_t nw, const void *x, size_t xs, int64_t nx,  \
                     float *y, int64_t ldy)                                                                  \
    {                                                                                                        \
        dot_float_gemm(kind, k, w, ws, nw, x, xs, nx, y, ldy, TW, TX);                                       \
    }
    FLOAT_GEMM_FN(gemm_f32_avx512, 0, FLOAT_GEMM512_F32_TW, FLOAT_GEMM512_F32_TX)
        FLOAT_GEMM_FN(gemm_f16_avx512, 1, FLOAT_GEMM512_TW, FLOAT_GEMM512_TX)
            FLOAT_GEMM_FN(gemm_bf16_avx512, 2, FLOAT_GEMM512_TW, FLOAT_GEMM512_TX)

                lrun_gemm_fn lrun_gemv_kernel_avx512(lrun_dtype weight_dtype)
{
    return weight_dtype == LRUN_DTYPE_MXFP4 ? gemv_mxfp4_avx512 : NULL;
}

lrun_gemm_fn lrun_gemm_kernel_avx512(lrun_dtype weight_dtype)
{
    switch (weight_dtype) {
    case LRUN_DTYPE_F32: return gemm_f32_avx512;
    case LRUN_DTYPE_F16: return gemm_f16_avx512;
    case LRUN_DTYPE_BF16: return gemm_bf16_avx512;
    default: return NULL;
    }
}

lrun_dot_fn lrun_dot_kernel_avx512(lrun_dtype weight_dtype)
{
    switch (weight_dtype) {
    case LRUN_DTYPE_Q8_0: return dot_q8_0_avx512;
    case LRUN_DTYPE_Q4_0: return dot_q4_0_avx512;
    case LRUN_DTYPE_Q4_1: return dot_q4_1_avx512;
    case LRUN_DTYPE_Q5_0: return dot_q5_0_avx512;
    case LRUN_DTYPE_Q5_1: return dot_q5_1_avx512;
    case LRUN_DTYPE_IQ4_NL: return dot_iq4_nl_avx512;
    case LRUN_DTYPE_MXFP4: return dot_mxfp4_avx512;
    case LRUN_DTYPE_Q4_K: return dot_q4_K_avx512;
    case LRUN_DTYPE_Q5_K: return dot_q5_K_avx512;
    case LRUN_DTYPE_Q6_K: return dot_q6_K_avx512;
    case LRUN_DTYPE_Q2_K: return dot_q2_K_avx512;
    case LRUN_DTYPE_Q3_K: return dot_q3_K_avx512;
    case LRUN_DTYPE_IQ4_XS: return dot_iq4_xs_avx512;
    default: return NULL;
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif /* LRUN_HAVE_AVX512 */
