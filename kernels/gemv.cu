/* gemv.cu — the fused dequantize-GEMV of decode (see gemv.cuh for the shape).
 * Accuracy: the weights are the values lrun_dequantize_row gives, multiplied
 * with x in f32 (FMA); for Q4_0, Q4_1 and Q8_0 the block's scale is applied
 * once to the block's sum (d·Σq·x rather than Σ(q·d)·x), so y differs from a
 * float reference of the dequantized rows only by f32 rounding. */
#include "gemv.cuh"
#include "gemv_common.cuh"

#include <stdio.h>
#include <string.h>

// ---------------------------------------------------------------- unit · x

/* The values of unit u of a block as v[RUNS*4], and w = scale·v + min: the
 * return value is scale, *min the offset (HAS_MIN) or 0. Scaling the block's
 * sum once (d·Σv·x) instead of every weight saves a multiply per weight. The
 * generic form is the exact dequantization with scale 1. */
template <int T> struct gemv_vals {
    using Q = lrun_k_unit<T>;
    static constexpr bool HAS_MIN = false;
    static __device__ __forceinline__ float vals(const typename Q::raw &r, int u, float *v, float *min)
    {
        Q::dequant(r, u, v);
        *min = 0.0f;
        return 1.0f;
    }
};

/* Q4_0: v = q − 8 = (2^23 + q) − (2^23 + 8) exactly, scale d. */
template <> struct gemv_vals<LRUN_DTYPE_Q4_0> {
    static constexpr bool HAS_MIN = false;
    static __device__ __forceinline__ float vals(const lrun_k_unit<LRUN_DTYPE_Q4_0>::raw &r, int, float *v,
                                                 float *min)
    {
        const float c = 8388616.0f;
        const uint32_t lo = r.q & 0x0f0f0f0fu, hi = (r.q >> 4) & 0x0f0f0f0fu;
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = byte_f(lo, e) - c, v[4 + e] = byte_f(hi, e) - c;
        *min = 0.0f;
        return lrun_k_f16((uint16_t)r.d);
    }
};

/* Q4_1: v = q, scale d, min m. */
template <> struct gemv_vals<LRUN_DTYPE_Q4_1> {
    static constexpr bool HAS_MIN = true;
    static __device__ __forceinline__ float vals(const lrun_k_unit<LRUN_DTYPE_Q4_1>::raw &r, int, float *v,
                                                 float *min)
    {
        const float c = 8388608.0f;
        const uint32_t lo = r.q & 0x0f0f0f0fu, hi = (r.q >> 4) & 0x0f0f0f0fu;
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = byte_f(lo, e) - c, v[4 + e] = byte_f(hi, e) - c;
        *min = lrun_k_f16((uint16_t)(r.dm >> 16));
        return lrun_k_f16((uint16_t)(r.dm & 0xffff));
    }
};

/* Q8_0: the signed byte q is (2^23 + (q ^ 0x80)) − (2^23 + 128), scale d. */
template <> struct gemv_vals<LRUN_DTYPE_Q8_0> {
    static constexpr bool HAS_MIN = false;
    static __device__ __forceinline__ float vals(const lrun_k_unit<LRUN_DTYPE_Q8_0>::raw &r, int, float *v,
                                                 float *min)
    {
        const float c = 8388736.0f;
        const uint32_t a = r.q0 ^ 0x80808080u, b = r.q1 ^ 0x80808080u;
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = byte_f(a, e) - c, v[4 + e] = byte_f(b, e) - c;
        *min = 0.0f;
        return lrun_k_f16((uint16_t)r.d);
    }
};

// ---------------------------------------------------------------- unit kernel

/* NORM (lrun_k_gemv_norm_multi): x is a norm's input. Each x value is
 * multiplied by the norm's weight g as it is loaded and its square summed;
 * the block's threads load every x element of a row once between them, so
 * the block reduction of those sums is row i's Σx², and each output is
 * scaled by s_i = 1/sqrt(Σx²/k + eps) in the epilogue, before the mode's. */
template <int T, int M, int NT, int RB, int U, bool NORM>
__global__ void __launch_bounds__(NT)
    gemv_tiles(const __grid_constant__ gemv_parts P, int64_t k, const float *__restrict__ x, bool xvec, int mode,
               const __grid_constant__ gemv_norm nm)
{
    using Q = lrun_k_unit<T>;
    using V = gemv_vals<T>;
    constexpr int RH = RB >= 2 ? RB / 2 : 1; /* output rows of a swiglu block */
    lrun_k_pdl_trigger();
    const int64_t b = blockIdx.x;
    const int p = (b >= P.b0[1]) + (b >= P.b0[2]);
    const bool sw = PAIRED(mode);
    const int64_t n = SEL3(P.n, p), row0 = (b - P.b0[p]) * (sw ? RH : RB);

    /* rows past n re-read row n-1 (valid memory) and are not written; a
     * swiglu block reads rows row0.. of gate (part 0) then of up (part 1) */
    const uint8_t *rows[RB];
#pragma unroll
    for (int r = 0; r < RB; r++) {
        const int q = sw && r >= RH ? 1 : p;
        int64_t rr = row0 + (sw ? r % RH : r);
        rr = rr < n ? rr : n - 1;
        rows[r] = SEL3(P.w, q) + (size_t)rr * SEL3(P.rb, q);
    }

    const int64_t units = k / Q::ELEMS * Q::UNITS; /* per row */
    float acc[RB][M], ss[M];                       /* ss: NORM's sums of x² */
#pragma unroll
    for (int i = 0; i < M; i++) {
        ss[i] = 0.0f;
#pragma unroll
        for (int r = 0; r < RB; r++) acc[r][i] = 0.0f;
    }

    /* all loads of a step first: they are what the kernel waits for. The
     * first step's are issued before the wait for the previous kernel (the
     * weights are no kernel's output), so under PDL they overlap its tail;
     * for k = 4096 bf16 that first step is the block's whole tile. */
    typename Q::raw raw[U][RB];
    auto load_step = [&](int64_t u0) {
#pragma unroll
        for (int j = 0; j < U; j++) {
            const int64_t u = u0 + NT * j;
            if (u < units) {
                const size_t off = (size_t)(u / Q::UNITS) * Q::BYTES;
#pragma unroll
                for (int r = 0; r < RB; r++) raw[j][r] = Q::load(rows[r] + off, (int)(u % Q::UNITS));
            }
        }
    };
    load_step(threadIdx.x);
    lrun_k_pdl_wait();
    for (int64_t u0 = threadIdx.x; u0 < units; u0 += NT * U) {
        if (u0 != threadIdx.x) load_step(u0);
#pragma unroll
        for (int j = 0; j < U; j++) {
            const int64_t u = u0 + NT * j;
            if (u < units) {
                const int ub = (int)(u % Q::UNITS);
                const int64_t base = u / Q::UNITS * Q::ELEMS; /* element of the block's first weight */
                float v[RB][Q::RUNS * 4], sc[RB], mn[RB];
#pragma unroll
                for (int r = 0; r < RB; r++) sc[r] = V::vals(raw[j][r], ub, v[r], &mn[r]);
                float4 g[NORM ? Q::RUNS : 1]; /* the norm's weights of these x elements */
                if constexpr (NORM)
#pragma unroll
                    for (int run = 0; run < Q::RUNS; run++) g[run] = ldx4(nm.w + base + Q::offset(ub, run), nm.wvec);
#pragma unroll
                for (int i = 0; i < M; i++) {
                    float4 xs[Q::RUNS];
#pragma unroll
                    for (int run = 0; run < Q::RUNS; run++) xs[run] = ldx4(x + i * k + base + Q::offset(ub, run), xvec);
                    if constexpr (NORM)
#pragma unroll
                        for (int run = 0; run < Q::RUNS; run++) xs[run] = norm_load(xs[run], g[run], ss[i]);
                    float sx = 0.0f;
                    if (V::HAS_MIN)
#pragma unroll
                        for (int run = 0; run < Q::RUNS; run++) sx += (xs[run].x + xs[run].y) + (xs[run].z + xs[run].w);
#pragma unroll
                    for (int r = 0; r < RB; r++) {
                        float d = 0.0f;
#pragma unroll
                        for (int run = 0; run < Q::RUNS; run++) {
                            d = fmaf(v[r][4 * run], xs[run].x, d);
                            d = fmaf(v[r][4 * run + 1], xs[run].y, d);
                            d = fmaf(v[r][4 * run + 2], xs[run].z, d);
                            d = fmaf(v[r][4 * run + 3], xs[run].w, d);
                        }
                        acc[r][i] = fmaf(sc[r], d, V::HAS_MIN ? fmaf(mn[r], sx, acc[r][i]) : acc[r][i]);
                    }
                }
            }
        }
    }

    /* warps, then the block: red[w][r*M+i] is warp w's sum of row r, x row
     * i; NORM's Σx² of x row i follow at red[w][RB*M+i] */
    constexpr int COLS = RB * M + (NORM ? M : 0);
    static_assert(COLS <= NT, "one thread per column sums the warps");
    __shared__ float red[NT / 32][COLS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < RB; r++)
#pragma unroll
        for (int i = 0; i < M; i++) {
            const float v = lrun_k_warp_sum(acc[r][i]);
            if (lane == 0) red[warp][r * M + i] = v;
        }
    if constexpr (NORM)
#pragma unroll
        for (int i = 0; i < M; i++) {
            const float v = lrun_k_warp_sum(ss[i]);
            if (lane == 0) red[warp][RB * M + i] = v;
        }
    __syncthreads();
    if (threadIdx.x < COLS) {
        float s = red[0][threadIdx.x];
#pragma unroll
        for (int w = 1; w < NT / 32; w++) s += red[w][threadIdx.x];
        red[0][threadIdx.x] = s; /* each thread reads and writes only its own column */
    }
    __syncthreads();
    if (threadIdx.x < (sw ? RH : RB) * M) {
        const int r = threadIdx.x / M, i = threadIdx.x % M;
        const int64_t row = row0 + r;
        const float s = NORM ? norm_scale(red[0][RB * M + i], k, nm.eps) : 1.0f;
        if (row < n) {
            float *y = SEL3(P.y, p) + i * n + row;
            if (sw) *y = pair1(red[0][threadIdx.x] * s, red[0][(r + RH) * M + i] * s, mode);
            else put(y, red[0][threadIdx.x] * s, mode);
        }
    }
}

// ---------------------------------------------------------------- plain kernel (float types, any k or alignment)

/* One warp per output row of one weight (w2: up of a swiglu pair, else
 * unused). NORM as the unit kernel's: a warp loads all of x, so its own
 * sums of x² give s. */
template <int T, int M, bool NORM>
__global__ void __launch_bounds__(LRUN_K_GEMV_PLAIN_THREADS)
    gemv_plain(const uint8_t *__restrict__ w, const uint8_t *__restrict__ w2, size_t row_bytes, size_t row_bytes2,
               int64_t n, int64_t k, const float *__restrict__ x, float *__restrict__ y, int mode, gemv_norm nm)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (LRUN_K_GEMV_PLAIN_THREADS / 32) + (threadIdx.x >> 5);
    lrun_k_pdl_trigger();
    lrun_k_pdl_wait();
    if (row >= n) return; /* no block-level synchronization below */
    const bool sw = PAIRED(mode);
    const uint8_t *wr = w + (size_t)row * row_bytes, *wr2 = sw ? w2 + (size_t)row * row_bytes2 : wr;
    float acc[M], acc2[M], ss[M];
#pragma unroll
    for (int i = 0; i < M; i++) acc[i] = acc2[i] = ss[i] = 0.0f;
    for (int64_t c = lane; c < k; c += 32) {
        const float wv = lrun_k_load_float<T>(wr, c), wv2 = sw ? lrun_k_load_float<T>(wr2, c) : 0.0f;
        const float g = NORM ? __ldg(nm.w + c) : 1.0f;
#pragma unroll
        for (int i = 0; i < M; i++) {
            float xv = __ldg(x + i * k + c);
            if (NORM) ss[i] = fmaf(xv, xv, ss[i]), xv *= g;
            acc[i] = fmaf(wv, xv, acc[i]);
            acc2[i] = fmaf(wv2, xv, acc2[i]);
        }
    }
#pragma unroll
    for (int i = 0; i < M; i++) {
        acc[i] = lrun_k_warp_sum(acc[i]), acc2[i] = lrun_k_warp_sum(acc2[i]);
        if (NORM) {
            const float s = norm_scale(lrun_k_warp_sum(ss[i]), k, nm.eps);
            acc[i] *= s, acc2[i] *= s;
        }
    }
    if (lane == 0)
#pragma unroll
        for (int i = 0; i < M; i++) {
            if (sw) y[i * n + row] = pair1(acc[i], acc2[i], mode);
            else put(y + i * n + row, acc[i], mode);
        }
}

// ---------------------------------------------------------------- shape variants (tuning)

/* 0: lrun_k_gemv_shape; v >= 1: variants[v-1] for m = 1 (bf16, f16, q8_0,
 * q4_0, q4_1) and gemv_kq.cu's variant v (q4_K, q5_K, q6_K), set by
 * lrun_k_gemv_tune for the bench. */
static int g_variant;
static const struct { int nt, rb, u; } variants[] = {{128, 8, 2}, {128, 8, 1}, {128, 16, 1}, {64, 8, 2},
                                                     {256, 8, 1}, {128, 16, 2}, {64, 16, 1}, {512, 2, 2}};
#define N_VARIANTS ((int)(sizeof variants / sizeof variants[0]))

extern "C" const char *lrun_k_gemv_tune(int variant)
{
    static char desc[96];
    char kq[32];
    if (variant < 0 || variant > N_VARIANTS) return NULL;
    g_variant = variant;
    if (variant == 0) snprintf(desc, sizeof desc, "default");
    else
        snprintf(desc, sizeof desc, "NT %d RB %d U %d; %s", variants[variant - 1].nt, variants[variant - 1].rb,
                 variants[variant - 1].u, lrun_k_gemv_kq_shape(variant, kq, sizeof kq));
    return desc;
}

// ---------------------------------------------------------------- dispatch

template <int T, int M, int NT, int RB, int U, bool NORM>
static cudaError_t launch_tiles(gemv_parts P, int n_parts, int64_t k, const float *x, int mode, const gemv_norm &nm,
                                cudaStream_t st)
{
    if ((PAIRED(mode) ? RB / 2 : RB) < 1) return cudaErrorNotSupported;
    const int64_t b = gemv_part_blocks(P, n_parts, RB, mode);
    if (b > LRUN_K_MAX_GRID) return cudaErrorInvalidConfiguration;
    const bool xvec = ((uintptr_t)x & 15) == 0;
    return lrun_k_launch(gemv_tiles<T, M, NT, RB, U, NORM>, dim3((unsigned)b), dim3(NT), 0, st, P, k, x, xvec, mode,
                         nm);
}

/* A folded norm takes the default shape only (the variants are for the bench). */
template <int T, int M>
static cudaError_t launch_units(const gemv_parts &P, int n_parts, int64_t k, const float *x, int mode,
                                const gemv_norm &nm, cudaStream_t st)
{
    typedef lrun_k_gemv_shape<T, M> S;
    if constexpr (M == 1 && (T == LRUN_DTYPE_BF16 || T == LRUN_DTYPE_F16 || T == LRUN_DTYPE_Q8_0 ||
                             T == LRUN_DTYPE_Q4_0 || T == LRUN_DTYPE_Q4_1)) {
        if (g_variant > 0 && !PAIRED(mode) && !nm.w) switch (g_variant) {
            case 1: return launch_tiles<T, M, 128, 8, 2, false>(P, n_parts, k, x, mode, nm, st);
            case 2: return launch_tiles<T, M, 128, 8, 1, false>(P, n_parts, k, x, mode, nm, st);
            case 3: return launch_tiles<T, M, 128, 16, 1, false>(P, n_parts, k, x, mode, nm, st);
            case 4: return launch_tiles<T, M, 64, 8, 2, false>(P, n_parts, k, x, mode, nm, st);
            case 5: return launch_tiles<T, M, 256, 8, 1, false>(P, n_parts, k, x, mode, nm, st);
            case 6: return launch_tiles<T, M, 128, 16, 2, false>(P, n_parts, k, x, mode, nm, st);
            case 7: return launch_tiles<T, M, 64, 16, 1, false>(P, n_parts, k, x, mode, nm, st);
            case 8: return launch_tiles<T, M, 512, 2, 2, false>(P, n_parts, k, x, mode, nm, st);
            }
    }
    if (nm.w) return launch_tiles<T, M, S::NT, S::RB, S::U, true>(P, n_parts, k, x, mode, nm, st);
    return launch_tiles<T, M, S::NT, S::RB, S::U, false>(P, n_parts, k, x, mode, nm, st);
}

template <int T, int M>
static cudaError_t launch_plain(const gemv_parts &P, int n_parts, int64_t k, const float *x, int mode,
                                const gemv_norm &nm, cudaStream_t st)
{
    const int wpb = LRUN_K_GEMV_PLAIN_THREADS / 32;
    const int launches = PAIRED(mode) ? 1 : n_parts;
    for (int p = 0; p < launches; p++) {
        const int64_t blocks = (P.n[p] + wpb - 1) / wpb;
        if (blocks > LRUN_K_MAX_GRID) return cudaErrorInvalidConfiguration;
        const int q = PAIRED(mode) ? 1 : p;
        const cudaError_t e =
            nm.w ? lrun_k_launch(gemv_plain<T, M, true>, dim3((unsigned)blocks), dim3(LRUN_K_GEMV_PLAIN_THREADS), 0,
                                 st, P.w[p], P.w[q], P.rb[p], P.rb[q], P.n[p], k, x, P.y[p], mode, nm)
                 : lrun_k_launch(gemv_plain<T, M, false>, dim3((unsigned)blocks), dim3(LRUN_K_GEMV_PLAIN_THREADS), 0,
                                 st, P.w[p], P.w[q], P.rb[p], P.rb[q], P.n[p], k, x, P.y[p], mode, nm);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

/* The float types take the unit kernel only when every row of every part is
 * whole 16-byte units on 16-byte boundaries. */
template <int T, int M>
static cudaError_t launch_float(const gemv_parts &P, int n_parts, int64_t k, const float *x, int mode,
                                const gemv_norm &nm, cudaStream_t st)
{
    bool vec = k % 8 == 0;
    for (int p = 0; p < n_parts; p++) vec = vec && ((uintptr_t)P.w[p] & 15) == 0 && (P.rb[p] & 15) == 0;
    if (vec) return launch_units<T, M>(P, n_parts, k, x, mode, nm, st);
    return launch_plain<T, M>(P, n_parts, k, x, mode, nm, st);
}

/* The m = 1 kernels of other files (staged, dp4a, K-quant slices) come
 * first; a folded norm skips the staged and dp4a kernels
 * (lrun_k_gemv_norm_takes says when that changes the kernel). */
template <int M>
static cudaError_t launch_m(lrun_dtype t, const gemv_parts &P, int n_parts, int64_t k, const float *x, int mode,
                            bool dp4a, bool stage, const gemv_norm &nm, cudaStream_t st)
{
    cudaError_t e;
    if (M == 1 && !nm.w && stage && lrun_k_gemv_stage(t, P, n_parts, k, x, mode, st, &e)) return e;
    if (M == 1 && !nm.w && dp4a && lrun_k_gemv_dp4a(t, P, n_parts, k, x, mode, st, &e)) return e;
    if (M == 1 && lrun_k_gemv_kq(t, P, n_parts, k, x, mode, g_variant, nm, st, &e)) return e;
    switch (t) {
    case LRUN_DTYPE_F32: return launch_float<LRUN_DTYPE_F32, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_F16: return launch_float<LRUN_DTYPE_F16, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_BF16: return launch_float<LRUN_DTYPE_BF16, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q4_0: return launch_units<LRUN_DTYPE_Q4_0, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q4_1: return launch_units<LRUN_DTYPE_Q4_1, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q8_0: return launch_units<LRUN_DTYPE_Q8_0, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q4_K: return launch_units<LRUN_DTYPE_Q4_K, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q6_K: return launch_units<LRUN_DTYPE_Q6_K, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q5_0: return launch_units<LRUN_DTYPE_Q5_0, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q5_1: return launch_units<LRUN_DTYPE_Q5_1, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_IQ4_NL: return launch_units<LRUN_DTYPE_IQ4_NL, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q2_K: return launch_units<LRUN_DTYPE_Q2_K, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q3_K: return launch_units<LRUN_DTYPE_Q3_K, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_Q5_K: return launch_units<LRUN_DTYPE_Q5_K, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_IQ4_XS: return launch_units<LRUN_DTYPE_IQ4_XS, M>(P, n_parts, k, x, mode, nm, st);
    case LRUN_DTYPE_MXFP4: return launch_units<LRUN_DTYPE_MXFP4, M>(P, n_parts, k, x, mode, nm, st);
    default: return cudaErrorNotSupported; /* no kernel for t */
    }
}

/* lrun_k_gemv_multi and lrun_k_gemv_norm_multi (nm.w not NULL; op names the caller). */
static lrun_status gemv_multi(const char *op, lrun_dtype w_dtype, const lrun_k_gemv_part *parts, int n_parts,
                              int64_t k, const float *x, int64_t m, int mode, const gemv_norm &nm, void *stream)
{
    const bool dp4a = (mode & LRUN_K_GEMV_DP4A) != 0, stage = (mode & LRUN_K_GEMV_STAGE) != 0;
    const bool split = (mode & LRUN_K_GEMV_SPLIT) != 0;
    mode &= ~(LRUN_K_GEMV_DP4A | LRUN_K_GEMV_STAGE | LRUN_K_GEMV_SPLIT);
    if (nm.w && (dp4a || stage || split))
        return lrun_fail(LRUN_E_ARG, "%s: the flags DP4A, STAGE and SPLIT take no folded norm", op);
    if (!parts || n_parts < 1 || n_parts > LRUN_K_GEMV_MAX_PARTS)
        return lrun_fail(LRUN_E_ARG, "%s: %d weights (expected 1..%d)", op, parts ? n_parts : 0,
                         LRUN_K_GEMV_MAX_PARTS);
    if (mode < LRUN_K_GEMV_STORE || mode > LRUN_K_GEMV_GEGLU_F32)
        return lrun_fail(LRUN_E_ARG, "%s: mode %d (expected an lrun_k_gemv_mode)", op, mode);
    if (PAIRED(mode) && (n_parts != 2 || parts[0].n != parts[1].n))
        return lrun_fail(LRUN_E_ARG, "%s: swiglu takes 2 weights (gate, up) with the same rows", op);
    if (!x) return lrun_fail(LRUN_E_ARG, "%s: x is NULL", op);
    if (m < 1 || m > LRUN_K_GEMV_MAX_M)
        return lrun_fail(LRUN_E_ARG, "%s: m %lld (expected 1..%d; use lrun_k_gemm for more rows)", op, (long long)m,
                         LRUN_K_GEMV_MAX_M);
    if (((uintptr_t)x & 3) != 0) return lrun_fail(LRUN_E_ARG, "%s: x must be 4-byte aligned floats", op);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    gemv_parts P;
    memset(&P, 0, sizeof P);
    int64_t xn;
    if (__builtin_mul_overflow(m, k, &xn))
        return lrun_fail(LRUN_E_ARG, "%s: m %lld times k %lld overflows", op, (long long)m, (long long)k);
    for (int p = 0; p < n_parts; p++) {
        const lrun_k_gemv_part *q = &parts[p];
        lrun_status s = lrun_k_check_weight(op, w_dtype, q->w, q->row_bytes, q->n, k);
        if (s != LRUN_OK) return s;
        const bool needs_y = !PAIRED(mode) || p == 0;
        if (needs_y && (!q->y || ((uintptr_t)q->y & 3) != 0))
            return lrun_fail(LRUN_E_ARG, "%s: y of weight %d is NULL or not 4-byte aligned", op, p);
        int64_t yn;
        if (__builtin_mul_overflow(m, q->n, &yn))
            return lrun_fail(LRUN_E_ARG, "%s: m %lld times n %lld overflows", op, (long long)m, (long long)q->n);
        P.w[p] = (const uint8_t *)q->w;
        P.rb[p] = q->row_bytes;
        P.y[p] = q->y;
        P.n[p] = q->n;
    }
    cudaStream_t st = (cudaStream_t)stream;
    cudaError_t e = cudaErrorNotSupported;
    /* split rows have one reader: no other kernel may take them */
    if (split && !lrun_k_gemv_split(w_dtype, P, n_parts, k, x, m, mode, st, &e))
        return lrun_fail(LRUN_E_ARG,
                         "%s: split rows need Q8_0/Q4_0 (not %s), k a multiple of 32 up to %d (k %lld) "
                         "and rows on 16-byte boundaries",
                         op, lrun_dtype_name(w_dtype), LRUN_K_SPLIT_MAX_K, (long long)k);
    if (!split) switch (m) {
        case 1: e = launch_m<1>(w_dtype, P, n_parts, k, x, mode, dp4a, stage, nm, st); break;
        case 2: e = launch_m<2>(w_dtype, P, n_parts, k, x, mode, dp4a, stage, nm, st); break;
        case 3: e = launch_m<3>(w_dtype, P, n_parts, k, x, mode, dp4a, stage, nm, st); break;
        case 4: e = launch_m<4>(w_dtype, P, n_parts, k, x, mode, dp4a, stage, nm, st); break;
        case 5: e = launch_m<5>(w_dtype, P, n_parts, k, x, mode, dp4a, stage, nm, st); break;
        case 6: e = launch_m<6>(w_dtype, P, n_parts, k, x, mode, dp4a, stage, nm, st); break;
        case 7: e = launch_m<7>(w_dtype, P, n_parts, k, x, mode, dp4a, stage, nm, st); break;
        case 8: e = launch_m<8>(w_dtype, P, n_parts, k, x, mode, dp4a, stage, nm, st); break;
        }
    if (e == cudaErrorNotSupported)
        return lrun_fail(LRUN_E_INTERNAL, "%s: no kernel for %s", op, lrun_dtype_name(w_dtype));
    /* our own grid check returns InvalidConfiguration without launching;
     * a launch the runtime refused left its error pending (peek, not get,
     * so lrun_k_launched still reports it) */
    if (e == cudaErrorInvalidConfiguration && cudaPeekAtLastError() == cudaSuccess)
        return lrun_fail(LRUN_E_ARG, "%s: the rows need more than 2^31-1 blocks", op);
    return lrun_k_launched(op);
}

extern "C" lrun_status lrun_k_gemv_multi(lrun_dtype w_dtype, const lrun_k_gemv_part *parts, int n_parts, int64_t k,
                                         const float *x, int64_t m, int mode, void *stream)
{
    const gemv_norm none = {NULL, 0.0f, false};
    return gemv_multi("lrun_k_gemv", w_dtype, parts, n_parts, k, x, m, mode, none, stream);
}

extern "C" lrun_status lrun_k_gemv_norm_multi(lrun_dtype w_dtype, const lrun_k_gemv_part *parts, int n_parts,
                                              int64_t k, const float *x, const float *norm_w, float eps, int64_t m,
                                              int mode, void *stream)
{
    static const char op[] = "lrun_k_gemv_norm_multi";
    if (!norm_w || ((uintptr_t)norm_w & 3) != 0)
        return lrun_fail(LRUN_E_ARG, "%s: norm_w is NULL or not 4-byte aligned floats", op);
    if (!(eps >= 0.0f)) return lrun_fail(LRUN_E_ARG, "%s: eps %g (must be >= 0)", op, (double)eps);
    if (k <= 0) return lrun_fail(LRUN_E_ARG, "%s: k %lld (must be > 0)", op, (long long)k);
    const gemv_norm nm = {norm_w, eps, ((uintptr_t)norm_w & 15) == 0};
    return gemv_multi(op, w_dtype, parts, n_parts, k, x, m, mode, nm, stream);
}

extern "C" int lrun_k_gemv_norm_takes(lrun_dtype w_dtype, int64_t m, int mode)
{
    if (m < 1 || m > LRUN_K_GEMV_MAX_M || (mode & LRUN_K_GEMV_SPLIT)) return 0;
    /* at m = 1 these flags choose kernels that fold no norm */
    if (m == 1 && (mode & (LRUN_K_GEMV_DP4A | LRUN_K_GEMV_STAGE))) return 0;
    switch (w_dtype) {
    case LRUN_DTYPE_F32:
    case LRUN_DTYPE_F16:
    case LRUN_DTYPE_BF16:
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
    case LRUN_DTYPE_MXFP4: return 1;
    default: return 0;
    }
}

extern "C" lrun_status lrun_k_gemv(lrun_dtype w_dtype, const void *w, size_t row_bytes, int64_t n, int64_t k,
                                   const float *x, int64_t m, float *y, void *stream)
{
    const lrun_k_gemv_part part = {w, row_bytes, n, y};
    if (!y) return lrun_fail(LRUN_E_ARG, "lrun_k_gemv: y is NULL");
    return lrun_k_gemv_multi(w_dtype, &part, 1, k, x, m, LRUN_K_GEMV_STORE, stream);
}
