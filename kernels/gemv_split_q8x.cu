/* gemv_split_q8x.cu — the decode GEMV of Q8_0/Q4_0 weights with x already
 * quantized: y_p (m, n_p) = xq (m, k) · W_pᵀ, xq the int8 + f32-scale form
 * that lrun_k_quantize_q8 (partner Q8_0) writes into global memory once per
 * distinct input, so the GEMVs that share an input (Q, K, V; gate and up)
 * share its quantization (the engine's default in fast numerics,
 * engine_cuda_split.h). Built for weights in the split-row layout
 * (runtime/quant/quant_split.h); it also reads GGUF's blocks (2-byte loads,
 * slower) with the same arithmetic, so weights the engine cannot split
 * (streamed into a slot each step) give the bits split ones give. The
 * prototype's "q8g rw2 nw4 u2 PF" (tests/bench/gemvq_proto.cu; docs/gpu.md
 * "q8_0 / q4_0 decode GEMV study"):
 *
 *   - a warp owns RW = 2 rows (a paired mode: one row of gate, the same row
 *     of up) and walks them together, lane l taking the 16-byte chunks l,
 *     l+32, … of each row (split rows: one LDG.128, a warp's load is 512
 *     consecutive bytes of a row) and the chunk's f16 scale (one LDG.U16);
 *   - U = 2 chunks a row in flight, and PF: the next step's loads are issued
 *     before this step's math (twice the weight registers, no stall at the
 *     top of each step);
 *   - x read through L1 (every warp reads all of it), integer dots by
 *     __dp4a (gemv_split_lane.h, emulated on the host by
 *     test_gemv_split_emu), one FMA per chunk and row: per row and lane the
 *     same operations in the same order as gemv_split.cu, whose x is
 *     quantized by the same rule in shared memory, so the two kernels give
 *     the same bits;
 *   - NW = 4 warps a block, one block per NW·RW rows (no persistent loop:
 *     nothing to amortise once x is quantized outside);
 *   - m > 1 (small batches): M rows of x against each weight chunk loaded
 *     once, M·RW accumulators, so the weights are still read once per call
 *     and each row of y has the bits of an m = 1 call.
 * y is the product with the q8-rounded x (llama.cpp's MMVQ numerics): fast
 * numerics only. */
#include "gemv_common.cuh"
#include "gemv_split_lane.h"

#include <string.h>

#define Q8X_RW 2
#define Q8X_NW 4
#define Q8X_U 2

// ---------------------------------------------------------------- the kernel

/* Row groups: a group is NW warps of RO output rows each (RO = RW, or RW/2
 * for a paired mode); P.b0[p] is part p's first group (gemv_part_blocks with
 * NW·RW rows a group). Rows past n re-read row n − 1 and are not written.
 * xq (M, k) int8 on 16-byte boundaries (k % 32 == 0), xd (M, k/32). */
template <int T, int M, int RW, int NW, int U, bool SPLIT>
__global__ void __launch_bounds__(32 * NW)
    gemv_q8x_kernel(const __grid_constant__ gemv_parts P, int64_t k, const int8_t *__restrict__ xq,
                    const float *__restrict__ xd, int mode)
{
    constexpr bool Q8 = T == LRUN_DTYPE_Q8_0;
    lrun_k_pdl_trigger();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bool sw = PAIRED(mode);
    const int ro = sw ? RW / 2 : RW;
    const int64_t nck = k / gs_chunk_elems(Q8), nb = k / 32; /* 16-byte chunks, x scales a row */
    const size_t qb = Q8 ? (size_t)k : (size_t)k / 2;        /* the scales' offset in a row */

    const int64_t g = blockIdx.x;
    const int p = (g >= P.b0[1]) + (g >= P.b0[2]);
    const int64_t n = SEL3(P.n, p), row0 = ((g - SEL3(P.b0, p)) * NW + warp) * ro;
    const uint8_t *rows[RW];
    gemv_block_rows<RW>(P, p, row0, n, sw, rows);

    /* the U chunks c0, c0 + 32, … of the RW rows into (q, s) */
    auto load_to = [&](uint4(&q)[U][RW], uint32_t(&s)[U][RW], int64_t c0) {
#pragma unroll
        for (int j = 0; j < U; j++) {
            const int64_t c = c0 + 32 * j;
            if (c < nck)
#pragma unroll
                for (int r = 0; r < RW; r++) {
                    if (SPLIT) {
                        q[j][r] = lrun_k_ld128_stream(rows[r] + gs_chunk_at(c));
                        s[j][r] = lrun_k_ld16(rows[r] + qb + 2 * gs_chunk_block(Q8, c));
                    } else { /* GGUF's blocks: the chunk's 16 quant bytes on a 2-byte boundary */
                        const uint8_t *qp = rows[r] + gs_gguf_chunk_at(Q8, c);
                        q[j][r] = make_uint4(lrun_k_ld32_a2(qp), lrun_k_ld32_a2(qp + 4), lrun_k_ld32_a2(qp + 8),
                                             lrun_k_ld32_a2(qp + 12));
                        s[j][r] = lrun_k_ld16(rows[r] + gs_gguf_scale_at(Q8, c));
                    }
                }
        }
    };

    uint4 wq[U][RW];
    uint32_t ws[U][RW];
    load_to(wq, ws, lane); /* the weights are no kernel's output: in flight before x is ready */
    lrun_k_pdl_wait();

    float acc[M][RW];
#pragma unroll
    for (int i = 0; i < M; i++)
#pragma unroll
        for (int r = 0; r < RW; r++) acc[i][r] = 0.0f;
    for (int64_t c0 = lane; c0 < nck; c0 += 32 * U) {
        uint4 nq[U][RW];
        uint32_t ns[U][RW];
        load_to(nq, ns, c0 + 32 * U); /* PF: the next step's weights before this step's math */
#pragma unroll
        for (int j = 0; j < U; j++) {
            const int64_t c = c0 + 32 * j;
            if (c >= nck) continue;
            const int64_t blk = gs_chunk_block(Q8, c);
#pragma unroll
            for (int i = 0; i < M; i++) {
                const uint4 *xc = (const uint4 *)(xq + (size_t)i * (size_t)k + gs_chunk_x(Q8, c));
                const float dx = __ldg(xd + i * nb + blk);
                const uint4 x0 = __ldg(xc);
                if (Q8) {
#pragma unroll
                    for (int r = 0; r < RW; r++) {
                        const uint4 w = wq[j][r];
                        const int v = gs_dot_q8(w.x, w.y, w.z, w.w, x0.x, x0.y, x0.z, x0.w);
                        acc[i][r] = fmaf((float)v, lrun_k_f16((uint16_t)ws[j][r]) * dx, acc[i][r]);
                    }
                } else {
                    const uint4 x1 = __ldg(xc + 1);
                    const uint32_t xl[4] = {x0.x, x0.y, x0.z, x0.w}, xh[4] = {x1.x, x1.y, x1.z, x1.w};
                    const int sx = gs_sum_x(xl, xh); /* Σxq once for the RW rows */
#pragma unroll
                    for (int r = 0; r < RW; r++) {
                        const uint4 w = wq[j][r];
                        const int v = gs_dot_q4(w.x, w.y, w.z, w.w, xl, xh, sx);
                        acc[i][r] = fmaf((float)v, lrun_k_f16((uint16_t)ws[j][r]) * dx, acc[i][r]);
                    }
                }
            }
        }
#pragma unroll
        for (int j = 0; j < U; j++)
#pragma unroll
            for (int r = 0; r < RW; r++) wq[j][r] = nq[j][r], ws[j][r] = ns[j][r];
    }

#pragma unroll
    for (int i = 0; i < M; i++) {
        float v[RW];
#pragma unroll
        for (int r = 0; r < RW; r++) v[r] = lrun_k_warp_sum(acc[i][r]);
        if (lane == 0)
#pragma unroll
            for (int r = 0; r < RW; r++) {
                if (r >= ro) break;
                const int64_t row = row0 + r;
                if (row >= n) break;
                float *y = SEL3(P.y, p) + i * n + row;
                if (sw) *y = pair1(v[r], v[r + (RW / 2)], mode);
                else put(y, v[r], mode);
            }
    }
}

// ---------------------------------------------------------------- dispatch

template <int T, int M, bool SPLIT>
static cudaError_t launch_q8x(gemv_parts P, int n_parts, int64_t k, const int8_t *xq, const float *xd, int mode,
                              cudaStream_t st)
{
    const int64_t groups = gemv_part_blocks(P, n_parts, (int64_t)Q8X_NW * Q8X_RW, mode);
    if (groups > 0x7fffffff) return cudaErrorInvalidConfiguration;
    return lrun_k_launch(gemv_q8x_kernel<T, M, Q8X_RW, Q8X_NW, Q8X_U, SPLIT>, dim3((unsigned)groups),
                         dim3(32 * Q8X_NW), 0, st, P, k, xq, xd, mode);
}

template <int T, bool SPLIT>
static cudaError_t launch_q8x_m(gemv_parts P, int n_parts, int64_t k, const int8_t *xq, const float *xd, int64_t m,
                                int mode, cudaStream_t st)
{
    switch (m) {
    case 1: return launch_q8x<T, 1, SPLIT>(P, n_parts, k, xq, xd, mode, st);
    case 2: return launch_q8x<T, 2, SPLIT>(P, n_parts, k, xq, xd, mode, st);
    case 3: return launch_q8x<T, 3, SPLIT>(P, n_parts, k, xq, xd, mode, st);
    case 4: return launch_q8x<T, 4, SPLIT>(P, n_parts, k, xq, xd, mode, st);
    case 5: return launch_q8x<T, 5, SPLIT>(P, n_parts, k, xq, xd, mode, st);
    case 6: return launch_q8x<T, 6, SPLIT>(P, n_parts, k, xq, xd, mode, st);
    case 7: return launch_q8x<T, 7, SPLIT>(P, n_parts, k, xq, xd, mode, st);
    default: return launch_q8x<T, 8, SPLIT>(P, n_parts, k, xq, xd, mode, st);
    }
}

extern "C" lrun_status lrun_k_gemv_q8x(lrun_dtype t, const lrun_k_gemv_part *parts, int n_parts, int64_t k,
                                       const int8_t *xq, const float *xd, int64_t m, int mode, int split,
                                       void *stream)
{
    static const char op[] = "lrun_k_gemv_q8x";
    if (t != LRUN_DTYPE_Q8_0 && t != LRUN_DTYPE_Q4_0)
        return lrun_fail(LRUN_E_ARG, "%s: dtype %s (Q8_0, Q4_0 only)", op, lrun_dtype_name(t));
    if (!parts || n_parts < 1 || n_parts > LRUN_K_GEMV_MAX_PARTS)
        return lrun_fail(LRUN_E_ARG, "%s: %d weights (expected 1..%d)", op, parts ? n_parts : 0,
                         LRUN_K_GEMV_MAX_PARTS);
    if (mode < LRUN_K_GEMV_STORE || mode > LRUN_K_GEMV_GEGLU_F32)
        return lrun_fail(LRUN_E_ARG, "%s: mode %d (expected an lrun_k_gemv_mode, no flags)", op, mode);
    if (PAIRED(mode) && (n_parts != 2 || parts[0].n != parts[1].n))
        return lrun_fail(LRUN_E_ARG, "%s: a paired mode takes 2 weights (gate, up) with the same rows", op);
    if (k <= 0 || k % 32 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: k %lld (a positive multiple of 32)", op, (long long)k);
    if (m < 1 || m > LRUN_K_GEMV_MAX_M)
        return lrun_fail(LRUN_E_ARG, "%s: m %lld (expected 1..%d)", op, (long long)m, LRUN_K_GEMV_MAX_M);
    if (!xq || !xd || ((uintptr_t)xq & 15) != 0 || ((uintptr_t)xd & 3) != 0)
        return lrun_fail(LRUN_E_ARG, "%s: xq (16-byte aligned) or xd (4-byte aligned) is NULL or misaligned", op);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    gemv_parts P;
    memset(&P, 0, sizeof P);
    for (int p = 0; p < n_parts; p++) {
        const lrun_k_gemv_part *q = &parts[p];
        lrun_status s = lrun_k_check_weight(op, t, q->w, q->row_bytes, q->n, k);
        if (s != LRUN_OK) return s;
        if (split && (((uintptr_t)q->w & 15) != 0 || (q->row_bytes & 15) != 0))
            return lrun_fail(LRUN_E_ARG, "%s: weight %d: split rows must start and stride on 16-byte boundaries", op,
                             p);
        const bool needs_y = !PAIRED(mode) || p == 0;
        if (needs_y && (!q->y || ((uintptr_t)q->y & 3) != 0))
            return lrun_fail(LRUN_E_ARG, "%s: y of weight %d is NULL or not 4-byte aligned", op, p);
        P.w[p] = (const uint8_t *)q->w;
        P.rb[p] = q->row_bytes;
        P.y[p] = q->y;
        P.n[p] = q->n;
    }
    const cudaStream_t st = (cudaStream_t)stream;
    const bool q8 = t == LRUN_DTYPE_Q8_0;
    const cudaError_t e = split ? (q8 ? launch_q8x_m<LRUN_DTYPE_Q8_0, true>(P, n_parts, k, xq, xd, m, mode, st)
                                      : launch_q8x_m<LRUN_DTYPE_Q4_0, true>(P, n_parts, k, xq, xd, m, mode, st))
                                : (q8 ? launch_q8x_m<LRUN_DTYPE_Q8_0, false>(P, n_parts, k, xq, xd, m, mode, st)
                                      : launch_q8x_m<LRUN_DTYPE_Q4_0, false>(P, n_parts, k, xq, xd, m, mode, st));
    if (e == cudaErrorInvalidConfiguration && cudaPeekAtLastError() == cudaSuccess)
        return lrun_fail(LRUN_E_ARG, "%s: the rows need more than 2^31-1 blocks", op);
    return lrun_k_launched(op);
}
