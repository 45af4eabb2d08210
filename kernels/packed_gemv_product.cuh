/* packed_gemv_product.cuh — the product half of the fused packed GEMVs
 * (packed_gemv.cu: PEX1, packed_pex2.cu: PEX2): gemv.cu's gemv_tiles
 * arithmetic on rows already decoded into a shared-memory tile, then
 * lrun_k_gemv_multi's STORE / ADD / SwiGLU epilogue. One copy for both
 * codecs, because "y is bit-identical to lrun_k_gemv_multi on the decoded
 * weights" holds only while the units, the FMA chains, the warp sums and the
 * in-order sum of the warps are exactly the plain kernel's. Then the host
 * side both launchers share: their argument checks, the launch's status
 * and the opt-in of shared memory. */
#ifndef LRUN_KERNELS_PACKED_GEMV_PRODUCT_CUH
#define LRUN_KERNELS_PACKED_GEMV_PRODUCT_CUH

#include "packed_gemv.cuh"

static __device__ __forceinline__ float pg_swiglu(float g, float u) { return g / (1.0f + expf(-g)) * u; }

static __device__ __forceinline__ float4 pg_ldx4(const float *p, bool xvec)
{
    if (xvec) return __ldg((const float4 *)p);
    return make_float4(__ldg(p), __ldg(p + 1), __ldg(p + 2), __ldg(p + 3));
}

/* One 8-element unit of bf16 row values (raw: 16 bytes of the tile) times
 * x[0..8) (x0, x1): gemv_vals' chain of 8 FMAs from 0. */
static __device__ __forceinline__ float pg_unit_dot_bf16(uint4 raw, float4 x0, float4 x1)
{
    float d = 0.0f;
    d = fmaf(__uint_as_float(raw.x << 16), x0.x, d);
    d = fmaf(__uint_as_float(raw.x & 0xffff0000u), x0.y, d);
    d = fmaf(__uint_as_float(raw.y << 16), x0.z, d);
    d = fmaf(__uint_as_float(raw.y & 0xffff0000u), x0.w, d);
    d = fmaf(__uint_as_float(raw.z << 16), x1.x, d);
    d = fmaf(__uint_as_float(raw.z & 0xffff0000u), x1.y, d);
    d = fmaf(__uint_as_float(raw.w << 16), x1.z, d);
    d = fmaf(__uint_as_float(raw.w & 0xffff0000u), x1.w, d);
    return d;
}

/* The row sums of a bf16 tile of RB rows for one x (M = 1), the units
 * outermost: x's two loads of a unit serve every row, and the rows' tile
 * loads are issued together, as the PEX2 prototype's product
 * (tests/bench/codec2_proto.cu c2_rows_dot). Each row's sum is the same
 * chain as pg_tile_sums' (its units in order, each unit's 8 FMAs from 0
 * added by fmaf(1, d, acc)), so y is unchanged bit for bit. A row past live
 * is read (the tile holds RB rows) but not added: its acc stays 0. */
template <int RB>
static __device__ __forceinline__ void pg_tile_rows_bf16(const uint16_t *tile, int rh, bool sw, int live, int k,
                                                         const float *__restrict__ x, bool xvec, int nt,
                                                         float acc[LRUN_K_PG_MAX_RB])
{
#pragma unroll
    for (int r = 0; r < LRUN_K_PG_MAX_RB; r++) acc[r] = 0.0f;
    const int units = k / 8;
    for (int u = threadIdx.x; u < units; u += nt) {
        const float4 x0 = pg_ldx4(x + 8 * u, xvec), x1 = pg_ldx4(x + 8 * u + 4, xvec);
        constexpr int RL = RB < 4 ? RB : 4; /* rows loaded at once: 8 would spill at 40 registers */
#pragma unroll
        for (int r0 = 0; r0 < RB; r0 += RL) {
            uint4 raw[RL];
#pragma unroll
            for (int j = 0; j < RL; j++) raw[j] = *(const uint4 *)(tile + (r0 + j) * k + 8 * u);
#pragma unroll
            for (int j = 0; j < RL; j++) {
                const int r = r0 + j, rr = sw && r >= rh ? r - rh : r; /* row within its segment */
                const float d = pg_unit_dot_bf16(raw[j], x0, x1);
                if (rr < live) acc[r] = fmaf(1.0f, d, acc[r]);
            }
        }
    }
}

/* The rows-outer sums (gemv_tiles on the tile: thread t, units t, t+NT,
 * ...; each unit's 8-term chain from 0, added to the row's sum, gemv_vals'
 * scale 1), each row's warp sum into red[warp][r * M + i]. */
template <bool BF16, int M, int NT>
static __device__ __forceinline__ void pg_tile_sums(const uint16_t *tile, int rb, int rh, bool sw, int64_t live,
                                                    int64_t k, const float *__restrict__ x, bool xvec,
                                                    float (*red)[LRUN_K_PG_MAX_RB * M])
{
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t units = k / 8;
    for (int r = 0; r < rb; r++) {
        const int rr = sw && r >= rh ? r - rh : r; /* row within its segment */
        float acc[M];
#pragma unroll
        for (int i = 0; i < M; i++) acc[i] = 0.0f;
        if (rr < live) {
            const uint16_t *trow = tile + (size_t)r * k;
            for (int64_t u = threadIdx.x; u < units; u += NT) {
                const uint4 raw = *(const uint4 *)(trow + 8 * u);
                const uint32_t wv[4] = {raw.x, raw.y, raw.z, raw.w};
                float v[8];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    if (BF16)
                        v[2 * j] = __uint_as_float(wv[j] << 16), v[2 * j + 1] = __uint_as_float(wv[j] & 0xffff0000u);
                    else
                        v[2 * j] = lrun_k_f16((uint16_t)(wv[j] & 0xffff)),
                              v[2 * j + 1] = lrun_k_f16((uint16_t)(wv[j] >> 16));
                }
#pragma unroll
                for (int i = 0; i < M; i++) {
                    const float4 x0 = pg_ldx4(x + i * k + 8 * u, xvec), x1 = pg_ldx4(x + i * k + 8 * u + 4, xvec);
                    float d = 0.0f;
                    d = fmaf(v[0], x0.x, d);
                    d = fmaf(v[1], x0.y, d);
                    d = fmaf(v[2], x0.z, d);
                    d = fmaf(v[3], x0.w, d);
                    d = fmaf(v[4], x1.x, d);
                    d = fmaf(v[5], x1.y, d);
                    d = fmaf(v[6], x1.z, d);
                    d = fmaf(v[7], x1.w, d);
                    acc[i] = fmaf(1.0f, d, acc[i]);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < M; i++) {
            const float v = lrun_k_warp_sum(acc[i]);
            if (lane == 0) red[warp][r * M + i] = v;
        }
    }
}

/* tile: (rb, k) plain values (swiglu: rh gate rows, then rh up rows); live:
 * rows of each segment that exist (row0 + live <= n); x (M, k) f32; red:
 * the block's NT/32 x (LRUN_K_PG_MAX_RB * M) floats of shared memory; yp:
 * the part's y (M, n). Every thread of the block calls it (two barriers).
 * UNITS_OUTER (bf16, M = 1 only: pg_tile_rows_bf16): the same sums with
 * the loops swapped (PEX2's kernel; PEX1's keeps the rows outermost). */
template <bool BF16, int M, int NT, bool UNITS_OUTER = false>
static __device__ __forceinline__ void
pg_tile_product(const uint16_t *tile, int rb, int rh, bool sw, int64_t live, int64_t k, const float *__restrict__ x,
                bool xvec, float (*red)[LRUN_K_PG_MAX_RB * M], int64_t n, float *yp, int64_t row0, int mode)
{
    static_assert(!UNITS_OUTER || (BF16 && M == 1), "the units-outer product is bf16 and M = 1");
    constexpr int NW = NT / 32;
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (UNITS_OUTER) {
        float acc[LRUN_K_PG_MAX_RB];
        switch (rb) { /* pg_rows_per_block: a power of two up to 8 */
        case 1: pg_tile_rows_bf16<1>(tile, rh, sw, (int)live, (int)k, x, xvec, NT, acc); break;
        case 2: pg_tile_rows_bf16<2>(tile, rh, sw, (int)live, (int)k, x, xvec, NT, acc); break;
        case 4: pg_tile_rows_bf16<4>(tile, rh, sw, (int)live, (int)k, x, xvec, NT, acc); break;
        default: pg_tile_rows_bf16<8>(tile, rh, sw, (int)live, (int)k, x, xvec, NT, acc); break;
        }
#pragma unroll
        for (int r = 0; r < LRUN_K_PG_MAX_RB; r++) {
            if (r >= rb) break;
            const float v = lrun_k_warp_sum(acc[r]);
            if (lane == 0) red[warp][r] = v;
        }
    } else {
        pg_tile_sums<BF16, M, NT>(tile, rb, rh, sw, live, k, x, xvec, red);
    }
    __syncthreads();
    if (threadIdx.x < rb * M) {
        float s = red[0][threadIdx.x];
#pragma unroll
        for (int w = 1; w < NW; w++) s += red[w][threadIdx.x];
        red[0][threadIdx.x] = s; /* each thread reads and writes only its own column */
    }
    __syncthreads();
    if ((int)threadIdx.x < rh * M) {
        const int r = threadIdx.x / M, i = threadIdx.x % M;
        const int64_t row = row0 + r;
        if (row < n) {
            float *y = yp + i * n + row;
            if (sw) *y = pg_swiglu(red[0][threadIdx.x], red[0][(r + rh) * M + i]);
            else if (mode == LRUN_K_GEMV_ADD) *y += red[0][threadIdx.x];
            else *y = red[0][threadIdx.x];
        }
    }
}

// ---------------------------------------------------------------- the launchers' shared host side

/* The checks of a fused launch both codecs' launchers make before their
 * weights' own (codec, shape): LRUN_E_ARG naming op. */
static inline lrun_status pg_fused_check(const char *op, const lrun_k_packed_part *parts, int n_parts, int64_t k,
                                         const float *x, int64_t m, int mode, const void *stream)
{
    if (!parts || n_parts < 1 || n_parts > LRUN_K_GEMV_MAX_PARTS)
        return lrun_fail(LRUN_E_ARG, "%s: %d weights (expected 1..%d)", op, parts ? n_parts : 0,
                         LRUN_K_GEMV_MAX_PARTS);
    if (mode != LRUN_K_GEMV_STORE && mode != LRUN_K_GEMV_ADD && mode != LRUN_K_GEMV_SWIGLU)
        return lrun_fail(LRUN_E_ARG, "%s: mode %d (expected an lrun_k_gemv_mode)", op, mode);
    if (mode == LRUN_K_GEMV_SWIGLU && (n_parts != 2 || parts[0].n != parts[1].n))
        return lrun_fail(LRUN_E_ARG, "%s: swiglu takes 2 weights (gate, up) with the same rows", op);
    if (!x || ((uintptr_t)x & 3) != 0) return lrun_fail(LRUN_E_ARG, "%s: x is NULL or not 4-byte aligned", op);
    if (m < 1 || m > LRUN_K_GEMV_MAX_M)
        return lrun_fail(LRUN_E_ARG, "%s: m %lld (expected 1..%d; use lrun_k_packed_gemm for more rows)", op,
                         (long long)m, LRUN_K_GEMV_MAX_M);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t xn;
    if (__builtin_mul_overflow(m, k, &xn))
        return lrun_fail(LRUN_E_ARG, "%s: m %lld times k %lld overflows", op, (long long)m, (long long)k);
    return LRUN_OK;
}

/* Weight p's output of a fused launch: y (m, n) where the mode writes one
 * (SwiGLU: only gate's), 4-byte aligned, m x n not overflowing. */
static inline lrun_status pg_fused_check_y(const char *op, const lrun_k_packed_part *q, int p, int64_t m, int mode)
{
    const bool needs_y = mode != LRUN_K_GEMV_SWIGLU || p == 0;
    if (needs_y && (!q->y || ((uintptr_t)q->y & 3) != 0))
        return lrun_fail(LRUN_E_ARG, "%s: y of weight %d is NULL or not 4-byte aligned", op, p);
    int64_t yn;
    if (__builtin_mul_overflow(m, q->n, &yn))
        return lrun_fail(LRUN_E_ARG, "%s: m %lld times n %lld overflows", op, (long long)m, (long long)q->n);
    return LRUN_OK;
}

/* A fused launcher's result e as a status: cudaErrorNotSupported is a tile
 * the rows of k do not fit (LRUN_E_UNSUPPORTED: the caller decodes into a
 * slot), cudaErrorInvalidConfiguration a grid too large; a launch error is
 * lrun_k_launched's. */
static inline lrun_status pg_fused_status(const char *op, cudaError_t e, int64_t k)
{
    if (e == cudaErrorNotSupported)
        return lrun_fail(LRUN_E_UNSUPPORTED,
                         "%s: rows of %lld elements do not fit a shared-memory tile (decode into a slot)", op,
                         (long long)k);
    if (e == cudaErrorInvalidConfiguration && cudaPeekAtLastError() == cudaSuccess)
        return lrun_fail(LRUN_E_ARG, "%s: the rows need more than 2^31-1 blocks", op);
    if (e != cudaSuccess && cudaPeekAtLastError() == cudaSuccess)
        return lrun_fail(LRUN_E_DEVICE, "%s: %s (%s)", op, cudaGetErrorString(e), cudaGetErrorName(e));
    return lrun_k_launched(op);
}

/* Lets the fused kernel fn take the device's opt-in shared memory, asked
 * once per device: limits is fn's own cache (per device ordinal; 0: not
 * asked yet). Tiles of long rows need more than the default 48 KiB.
 * *limit: the dynamic bytes fn may then take. */
static inline cudaError_t pg_smem_optin(const void *fn, size_t limits[64], size_t *limit)
{
    int dev = 0, optin = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    const bool cached = dev >= 0 && dev < 64;
    if (cached && limits[dev]) {
        *limit = limits[dev];
        return cudaSuccess;
    }
    cudaFuncAttributes fa;
    if ((e = cudaFuncGetAttributes(&fa, fn)) != cudaSuccess) return e;
    if ((e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess) return e;
    const size_t dyn = (size_t)optin > fa.sharedSizeBytes ? (size_t)optin - fa.sharedSizeBytes : 0;
    e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dyn);
    if (e != cudaSuccess) return e;
    if (cached) limits[dev] = dyn;
    *limit = dyn;
    return cudaSuccess;
}

#endif
