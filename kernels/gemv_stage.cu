/* gemv_stage.cu — the m = 1 decode GEMV of the 32-element block types (Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) that moves weight bytes the way the bf16
 * kernel does: whole rows' raw bytes in 16-byte, fully coalesced pieces
 * (cp.async.cg: LDGSTS.128, no registers held while in flight) into a ring
 * of GS_NS shared-memory stages, GS_NS - 1 chunks in flight while the
 * block multiplies the oldest; then every thread dots one weight block per
 * chunk from shared memory. Taken only under LRUN_K_GEMV_STAGE in the mode.
 *
 * Why: gemv.cu's and gemv_dp4a.cu's threads load their own blocks with
 * 2- and 4-byte loads (the blocks are 18-34 bytes, 2-aligned), so a byte
 * of weight costs about a quarter to a half of a load instruction and the
 * bytes in flight per SM are what registers hold; they reach 1.1-2.4 TB/s
 * on the H200 where bf16 reaches 3.2-4.0 (docs/benchmarks.md). Here a byte
 * costs 1/16 of an LDGSTS and the bytes in flight are what shared memory
 * holds (Little's law: ~4 TB/s × ~1 µs ≈ 32 KB per SM).
 *
 * Numerics: the dp4a kernel's contract (gemv_dp4a.cu): y is the dot of the
 * dequantized weights with x rounded to q8 blocks of 32 (gemv_q8x.cuh, the
 * same x), within f32 rounding: each weight block's 8 dp4a and
 * d·dx·Σ + m·sx in f32 as there, but Q4_0 and Q5_0 take their zero point
 * on x's block sum (m = −8d, −16d: gs_block) and the blocks' terms are
 * summed in another order, so y is not bit-identical (fast numerics only).
 *
 * Shape: GS_NT threads, GS_RB rows (GS_RB/2 of gate and of up for a paired
 * mode), chunks of GS_CB blocks (gemv_stage_lane.h: the indexing, shared
 * with the host replay test_gemv_stage_emu.c). The first GS_NS - 1
 * chunks' copies are issued before the PDL wait (weights are no kernel's
 * output), x is quantized after it. Rows must start on 16-byte boundaries
 * (base and stride; the engine's pools are 256-aligned and the 7B shapes'
 * rows are multiples of 16 bytes); otherwise lrun_k_gemv_stage declines and
 * the caller's other route runs. */
#include "gemv_common.cuh"
#include "gemv_q8x.cuh"
#include "gemv_stage_lane.h"

#include <stdio.h>

#define GS_MAX_SHARED (96 * 1024) /* opt-in limit asked for beyond 48 KiB (sm_80: 163, sm_90: 227) */

// ---------------------------------------------------------------- cp.async

/* 16 bytes from global src to shared address dst (a .shared window address) */
static __device__ __forceinline__ void gs_cp16(unsigned dst, const void *src)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
#else
    const int4 v = __ldg((const int4 *)src);
    asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};\n" ::"r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
#endif
}
static __device__ __forceinline__ void gs_commit()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
/* every group but the newest N complete (this thread's copies) */
template <int N> static __device__ __forceinline__ void gs_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// ---------------------------------------------------------------- types

/* BS block bytes; ID gs_block's; MIN: an f16 min m; ZP: an m or a zero point (the sx term) */
template <int T> struct gs_type;
template <> struct gs_type<LRUN_DTYPE_Q8_0> { enum { BS = 34, ID = GS_Q8_0, MIN = 0, ZP = 0 }; };
template <> struct gs_type<LRUN_DTYPE_Q4_0> { enum { BS = 18, ID = GS_Q4_0, MIN = 0, ZP = 1 }; };
template <> struct gs_type<LRUN_DTYPE_Q4_1> { enum { BS = 20, ID = GS_Q4_1, MIN = 1, ZP = 1 }; };
template <> struct gs_type<LRUN_DTYPE_Q5_0> { enum { BS = 22, ID = GS_Q5_0, MIN = 0, ZP = 1 }; };
template <> struct gs_type<LRUN_DTYPE_Q5_1> { enum { BS = 24, ID = GS_Q5_1, MIN = 1, ZP = 1 }; };
template <> struct gs_type<LRUN_DTYPE_IQ4_NL> { enum { BS = 18, ID = GS_IQ4_NL, MIN = 0, ZP = 0 }; };

// ---------------------------------------------------------------- kernel

template <int T, int NS>
__global__ void __launch_bounds__(GS_NT)
    gemv_stage(const __grid_constant__ gemv_parts P, int64_t k, const float *__restrict__ x, bool xvec, int mode)
{
    constexpr int BS = gs_type<T>::BS;
    constexpr int SROW = GS_CB * BS + 16, STAGE = GS_RB * SROW; /* gs_srow, gs_stage_bytes */
    constexpr int PIECES = GS_RB * (GS_CB * BS / 16);           /* gs_pieces */
    constexpr int NPT = (PIECES + GS_NT - 1) / GS_NT;           /* pieces per thread per stage */
    constexpr int IPT = GS_RB * GS_CB / GS_NT;                  /* items per thread per chunk */
    constexpr int RH = GS_RB / 2;                                /* output rows of a paired block */
    static_assert(GS_CB % 32 == 0 && (GS_RB * GS_CB) % GS_NT == 0 && GS_NT % GS_CB == 0, "item mapping");
    static_assert(STAGE % 16 == 0, "stages on 16-byte boundaries");

    extern __shared__ int4 gs_smem[]; /* ring (NS stages), xq (k int8), xd, xs (k/32 f32 each) */
    uint8_t *ring = (uint8_t *)gs_smem;
    int8_t *xq = (int8_t *)(ring + NS * STAGE);
    const int nb = (int)(k / 32), nchunks = (nb + GS_CB - 1) / GS_CB; /* k ≤ GS_MAX_SHARED: lrun_k_gemv_stage */
    float *xd = (float *)(xq + k), *xs = xd + nb;
    lrun_k_pdl_trigger();
    const int64_t b = blockIdx.x;
    const int p = (b >= P.b0[1]) + (b >= P.b0[2]);
    const bool sw = PAIRED(mode);
    const int64_t n = SEL3(P.n, p), row0 = (b - P.b0[p]) * (sw ? RH : GS_RB);
    const int t = threadIdx.x;

    /* this thread's piece slots, the same in every stage: global address
     * in chunk 0 and shared offset (-1: no piece; a row's last chunk may
     * also end before a slot's piece, gs_piece with its length decides) */
    const uint8_t *src[NPT];
    int dst[NPT];
#pragma unroll
    for (int i = 0; i < NPT; i++) {
        int r, off, q;
        dst[i] = gs_piece(t + i * GS_NT, BS, GS_CB * BS, &r, &off) ? r * SROW + off : -1;
        const int64_t rr = gs_row(r < GS_RB ? r : GS_RB - 1, sw, p, row0, n, &q);
        src[i] = SEL3(P.w, q) + (size_t)rr * SEL3(P.rb, q) + off;
    }
    const unsigned ring_s = (unsigned)__cvta_generic_to_shared(ring);
    /* chunk c's copies into stage c % NS, one commit group per chunk
     * (empty past the last, so the group count stays c + NS - 1) */
    auto issue = [&](int c) {
        if (c < nchunks) {
            const int so = (c % NS) * STAGE;
            const int len = gs_chunk_blocks(nb, c) * BS;
            const size_t at = (size_t)c * GS_CB * BS;
            if (len == GS_CB * BS) { /* a whole chunk: every slot's piece */
#pragma unroll
                for (int i = 0; i < NPT; i++)
                    if (dst[i] >= 0) gs_cp16(ring_s + (unsigned)(so + dst[i]), src[i] + at);
            } else {
#pragma unroll
                for (int i = 0; i < NPT; i++) {
                    int r, off;
                    if (gs_piece(t + i * GS_NT, BS, len, &r, &off)) gs_cp16(ring_s + (unsigned)(so + dst[i]), src[i] + at);
                }
                if (len & 15) { /* not whole pieces: the rows' tails in 2-byte loads */
                    int r, off, q;
                    for (int L = t; gs_tail(L, len, &r, &off); L += GS_NT) {
                        const int64_t rr = gs_row(r, sw, p, row0, n, &q);
                        const uint8_t *g = SEL3(P.w, q) + (size_t)rr * SEL3(P.rb, q) + at + off;
                        *(uint16_t *)(ring + so + r * SROW + off) = __ldg((const unsigned short *)g);
                    }
                }
            }
        }
        gs_commit();
    };

#pragma unroll
    for (int c = 0; c < NS - 1; c++) issue(c);
    lrun_k_pdl_wait();
    for (int q = t; q < nb; q += GS_NT) dl_quantize(x + q * 32, xvec, xq + q * 32, xd + q, xs + q);

    float acc[IPT];
#pragma unroll
    for (int s = 0; s < IPT; s++) acc[s] = 0.0f;
    for (int c = 0; c < nchunks; c++) {
        /* chunk c landed (this thread's copies, then everyone's: the
         * barrier), and chunk c - 1's stage is free for chunk c + NS - 1 */
        gs_wait<NS - 2>();
        __syncthreads();
        issue(c + NS - 1);
        const uint32_t *st = (const uint32_t *)(ring + (int)(c % NS) * STAGE);
        const int cb = gs_chunk_blocks(nb, c);
#pragma unroll
        for (int s = 0; s < IPT; s++) {
            const int L = t + s * GS_NT, r = L / GS_CB, j = L % GS_CB;
            if (j < cb) {
                uint32_t w[8], d16, m16;
                int z;
                gs_block(gs_type<T>::ID, st + r * (SROW / 4), j, w, &d16, &m16, &z);
                const int u = c * GS_CB + j;
                const int4 *xw4 = (const int4 *)(xq + u * 32);
                const int4 x0 = xw4[0], x1 = xw4[1];
                const uint32_t xw[8] = {(uint32_t)x0.x, (uint32_t)x0.y, (uint32_t)x0.z, (uint32_t)x0.w,
                                        (uint32_t)x1.x, (uint32_t)x1.y, (uint32_t)x1.z, (uint32_t)x1.w};
                int sumi = 0;
#pragma unroll
                for (int l = 0; l < 8; l++) sumi = __dp4a((int)w[l], (int)xw[l], sumi);
                /* d·dx·Σw·xq + (m − z·d)·sx: dl_step's form, the zero point
                 * moved onto x's block sum sx = dx·Σxq (gs_block) */
                const float d = lrun_k_f16((uint16_t)d16);
                const float m = gs_type<T>::MIN ? lrun_k_f16((uint16_t)m16) : -(float)z * d;
                acc[s] = fmaf(d * xd[u], (float)sumi, gs_type<T>::ZP ? fmaf(m, xs[u], acc[s]) : acc[s]);
            }
        }
    }

    /* warps, then the block: every warp's items of slot s are one row
     * (GS_CB % 32 == 0), red[r][h] the sum of the h-th warp of row r */
    __shared__ float red[GS_RB][GS_CB / 32];
    const int lane = t & 31, warp = t >> 5;
#pragma unroll
    for (int s = 0; s < IPT; s++) {
        const float v = lrun_k_warp_sum(acc[s]);
        const int L0 = warp * 32 + s * GS_NT;
        if (lane == 0) red[L0 / GS_CB][(L0 % GS_CB) / 32] = v;
    }
    __syncthreads();
    if (t < (sw ? RH : GS_RB)) {
        float v = 0.0f, g = 0.0f;
#pragma unroll
        for (int h = 0; h < GS_CB / 32; h++) v += red[t][h], g += sw ? red[t + RH][h] : 0.0f;
        const int64_t row = row0 + t;
        if (row < n) {
            float *y = SEL3(P.y, p) + row;
            if (sw) *y = pair1(v, g, mode);
            else put(y, v, mode);
        }
    }
}

// ---------------------------------------------------------------- dispatch

template <int T, int NS>
static cudaError_t gs_launch(gemv_parts P, int n_parts, int64_t k, const float *x, int mode, size_t shared,
                             cudaStream_t st)
{
    const int64_t b = gemv_part_blocks(P, n_parts, GS_RB, mode);
    if (b > LRUN_K_MAX_GRID) return cudaErrorInvalidConfiguration;
    if (shared > 48 * 1024) { /* past the default limit: opt in (per device, so every time) */
        const cudaError_t e =
            cudaFuncSetAttribute(gemv_stage<T, NS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
        if (e != cudaSuccess) return e;
    }
    const bool xvec = ((uintptr_t)x & 15) == 0;
    return lrun_k_launch(gemv_stage<T, NS>, dim3((unsigned)b), dim3(GS_NT), shared, st, P, k, x, xvec, mode);
}

/* Bytes of block of type t, 0 for a type the kernel does not take. */
static int gs_block_bytes(lrun_dtype t)
{
    switch (t) {
    case LRUN_DTYPE_Q8_0: return 34;
    case LRUN_DTYPE_Q4_0: return 18;
    case LRUN_DTYPE_IQ4_NL: return 18;
    case LRUN_DTYPE_Q4_1: return 20;
    case LRUN_DTYPE_Q5_0: return 22;
    case LRUN_DTYPE_Q5_1: return 24;
    default: return 0;
    }
}

/* The ring's depth: GS_NS, or lrun_k_gemv_stage_tune's (bench only). */
static int g_ns = GS_NS;

extern "C" const char *lrun_k_gemv_stage_tune(int ns)
{
    static char desc[64];
    if (ns == 0) ns = GS_NS;
    if (ns != 2 && ns != 3 && ns != 4 && ns != 6 && ns != 8) return NULL;
    g_ns = ns;
    snprintf(desc, sizeof desc, "%d stages (%d chunks of %d blocks in flight)", ns, ns - 1, GS_CB);
    return desc;
}

template <int T>
static cudaError_t gs_depth(const gemv_parts &P, int n_parts, int64_t k, const float *x, int mode, size_t shared,
                            cudaStream_t st)
{
    switch (g_ns) {
    case 2: return gs_launch<T, 2>(P, n_parts, k, x, mode, shared, st);
    case 3: return gs_launch<T, 3>(P, n_parts, k, x, mode, shared, st);
    case 6: return gs_launch<T, 6>(P, n_parts, k, x, mode, shared, st);
    case 8: return gs_launch<T, 8>(P, n_parts, k, x, mode, shared, st);
    default: return gs_launch<T, GS_NS>(P, n_parts, k, x, mode, shared, st);
    }
}

int lrun_k_gemv_stage(lrun_dtype t, gemv_parts P, int n_parts, int64_t k, const float *x, int mode,
                      cudaStream_t st, cudaError_t *e)
{
    const int bs = gs_block_bytes(t);
    if (bs == 0 || k % 32 != 0) return 0;
    const size_t shared = (size_t)gs_ring_bytes(bs, g_ns) + (size_t)k + 8 * (size_t)(k / 32);
    if (shared > GS_MAX_SHARED) return 0;
    /* 16-byte pieces: every row on a 16-byte boundary */
    for (int p = 0; p < n_parts; p++)
        if (((uintptr_t)P.w[p] & 15) != 0 || (P.rb[p] & 15) != 0) return 0;
    switch (t) {
    case LRUN_DTYPE_Q8_0: *e = gs_depth<LRUN_DTYPE_Q8_0>(P, n_parts, k, x, mode, shared, st); return 1;
    case LRUN_DTYPE_Q4_0: *e = gs_depth<LRUN_DTYPE_Q4_0>(P, n_parts, k, x, mode, shared, st); return 1;
    case LRUN_DTYPE_Q4_1: *e = gs_depth<LRUN_DTYPE_Q4_1>(P, n_parts, k, x, mode, shared, st); return 1;
    case LRUN_DTYPE_Q5_0: *e = gs_depth<LRUN_DTYPE_Q5_0>(P, n_parts, k, x, mode, shared, st); return 1;
    case LRUN_DTYPE_Q5_1: *e = gs_depth<LRUN_DTYPE_Q5_1>(P, n_parts, k, x, mode, shared, st); return 1;
    case LRUN_DTYPE_IQ4_NL: *e = gs_depth<LRUN_DTYPE_IQ4_NL>(P, n_parts, k, x, mode, shared, st); return 1;
    default: return 0;
    }
}
