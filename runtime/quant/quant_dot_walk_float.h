/* quant_dot_walk_float.h — the float weights' (F32, F16, BF16) dot walk,
 * shared by the AVX2 level (quant_dot.c) and the AVX-512 level
 * (quant_dot_avx512.c, included inside its target pragma), so the
 * arithmetic that fixes the bits exists once.
 *
 * An output (weight row j, activation row r) is two 8-wide f32 FMA chains,
 * acc0 over elements 16s..16s+7 and acc1 over 16s+8..16s+15 for s in order,
 * then hsum8(acc0 + acc1), then the k mod 16 tail added in order (a
 * multiply, then an add: -std=c11 does not contract them into an FMA).
 *
 * dot_float_tile takes NW weight rows against NX activation rows in one
 * pass over k, so each activation vector loaded (from L2 in a prefill
 * tile) feeds NW FMAs and each weight vector (converted once) NX FMAs. Each
 * output keeps its own two chains with the same operands in the same
 * order, so NW and NX change no bits: dot_float_nx (one weight row, the
 * lrun_dot_fn kernels) is the NW = 1 case, and dot_float_gemm tiles any
 * nw × nx block into NW × NX calls.
 *
 * The including file defines ALWAYS_INLINE, UNROLL, ROW(x, r, stride) and
 * hsum8 (AVX's horizontal sum of 8 lanes) first. */
#ifndef LRUN_QUANT_DOT_WALK_FLOAT_H
#define LRUN_QUANT_DOT_WALK_FLOAT_H

/* Most weight rows and activation rows one dot_float_tile call may take:
 * the accumulators, NW·NX·2 ymm registers, must stay in registers. */
#define FLOAT_TILE_MAX_W 4
#define FLOAT_TILE_MAX_X 4

/* 8 weights from element i of a row of kind 0 (f32), 1 (f16), 2 (bf16), as f32 (exact). */
static ALWAYS_INLINE __m256 float_w8(int kind, const void *w, int64_t i)
{
    if (kind == 0) return _mm256_loadu_ps((const float *)w + i);
    if (kind == 1) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}

/* Weight j of a row, as f32 (exact). */
static ALWAYS_INLINE float float_w1(int kind, const void *w, int64_t j)
{
    return kind == 0   ? ((const float *)w)[j]
           : kind == 1 ? _cvtsh_ss(((const uint16_t *)w)[j])
                       : lrun_bf16_to_f32(((const uint16_t *)w)[j]);
}

/* y[r·ldy + j] (NX, NW) = weight row j (w + j·ws bytes) · activation row r
 * (x + r·xs bytes, f32), for j < NW ≤ FLOAT_TILE_MAX_W, r < NX ≤ FLOAT_TILE_MAX_X. */
static ALWAYS_INLINE void dot_float_tile(int kind, int64_t k, const void *w, size_t ws, const int NW, const void *x,
                                         size_t xs, const int NX, float *y, int64_t ldy)
{
    __m256 acc[FLOAT_TILE_MAX_W][FLOAT_TILE_MAX_X][2];
    const void *wr[FLOAT_TILE_MAX_W];
    const float *xr[FLOAT_TILE_MAX_X];
    UNROLL
    for (int j = 0; j < NW; ++j) {
        wr[j] = ROW(w, j, ws);
        UNROLL
        for (int r = 0; r < NX; ++r) acc[j][r][0] = acc[j][r][1] = _mm256_setzero_ps();
    }
    UNROLL
    for (int r = 0; r < NX; ++r) xr[r] = ROW(x, r, xs);
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        /* one half (8 lanes, chain h) at a time: NW weight vectors and one
         * activation vector live besides the accumulators */
        UNROLL
        for (int h = 0; h < 2; ++h) {
            __m256 wv[FLOAT_TILE_MAX_W];
            UNROLL
            for (int j = 0; j < NW; ++j) wv[j] = float_w8(kind, wr[j], i + 8 * h);
            UNROLL
            for (int r = 0; r < NX; ++r) {
                const __m256 xv = _mm256_loadu_ps(xr[r] + i + 8 * h);
                UNROLL
                for (int j = 0; j < NW; ++j) acc[j][r][h] = _mm256_fmadd_ps(wv[j], xv, acc[j][r][h]);
            }
        }
    }
    UNROLL
    for (int j = 0; j < NW; ++j) {
        UNROLL
        for (int r = 0; r < NX; ++r) {
            float s = hsum8(_mm256_add_ps(acc[j][r][0], acc[j][r][1]));
            for (int64_t e = i; e < k; ++e) s += float_w1(kind, wr[j], e) * xr[r][e];
            y[r * ldy + j] = s;
        }
    }
}

/* One weight row against NX ≤ LRUN_DOT_MAX_ROWS activation rows: out[r]. */
static ALWAYS_INLINE void dot_float_nx(int kind, int64_t k, const void *w, const void *x, size_t xs, const int NX,
                                       float *out)
{
    dot_float_tile(kind, k, w, 0, 1, x, xs, NX, out, 1);
}

/* The NW weight rows at w against nx activation rows, TX at a time (the
 * last call takes the nx mod TX left): one weight-row group stays in L1
 * while the activation rows pass. */
static ALWAYS_INLINE void dot_float_rows_x(int kind, int64_t k, const void *w, size_t ws, const int NW, const void *x,
                                           size_t xs, int64_t nx, const int TX, float *y, int64_t ldy)
{
    int64_t r = 0;
    for (; r + TX <= nx; r += TX) dot_float_tile(kind, k, w, ws, NW, ROW(x, r, xs), xs, TX, y + r * ldy, ldy);
    switch (nx - r) { /* TX ≤ FLOAT_TILE_MAX_X, so at most 3 left */
    case 0: break;
    case 1: dot_float_tile(kind, k, w, ws, NW, ROW(x, r, xs), xs, 1, y + r * ldy, ldy); break;
    case 2: dot_float_tile(kind, k, w, ws, NW, ROW(x, r, xs), xs, 2, y + r * ldy, ldy); break;
    default: dot_float_tile(kind, k, w, ws, NW, ROW(x, r, xs), xs, 3, y + r * ldy, ldy); break;
    }
}

/* y[r·ldy + j] (nx, nw) = weight row j · activation row r for all j < nw,
 * r < nx, in TW × TX tiles (TW ≤ FLOAT_TILE_MAX_W, TX ≤ FLOAT_TILE_MAX_X),
 * the nw mod TW rows left one at a time: the lrun_gemm_fn of a level. */
static ALWAYS_INLINE void dot_float_gemm(int kind, int64_t k, const void *w, size_t ws, int64_t nw, const void *x,
                                         size_t xs, int64_t nx, float *y, int64_t ldy, const int TW, const int TX)
{
    int64_t j = 0;
    for (; j + TW <= nw; j += TW) dot_float_rows_x(kind, k, ROW(w, j, ws), ws, TW, x, xs, nx, TX, y + j, ldy);
    for (; j < nw; ++j) dot_float_rows_x(kind, k, ROW(w, j, ws), ws, 1, x, xs, nx, TX, y + j, ldy);
}

#endif
