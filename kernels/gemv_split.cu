/* gemv_split.cu — Q8_0/Q4_0 weights in the split-row layout
 * (runtime/quant/quant_split.h: a row's quants contiguous and 16-byte
 * aligned, its f16 scales behind them): the layout's conversion in place on
 * the device, its dequantization for the prefill slot, and the m = 1 decode
 * GEMV on it (taken by lrun_k_gemv_multi under LRUN_K_GEMV_SPLIT). The
 * layout is the engine's default for Q8_0/Q4_0 (the decode GEMV of
 * gemv_split_q8x.cu reads it); this file's GEMV runs only with
 * LRUN_CUDA_GEMV_SPLIT=1 (session 15's kernel): tests/bench/gemvq_proto.cu
 * is the study, docs/gpu.md "q8_0 / q4_0 decode GEMV study" the findings.
 *
 * The GEMV is the prototype's "q8s" candidate: a warp owns RW rows and
 * walks them together, lane l taking 16-byte chunks l, l+32, … of each row
 * (one LDG.128: a warp's load is 512 consecutive bytes of a row) and the
 * chunk's scale (one LDG.U16), U chunks a row in flight before any is used;
 * x is quantized to q8 blocks of 32 (gemv_q8x.cuh: the dp4a kernel's rule,
 * so y is the product with the q8-rounded x, fast numerics only) by each
 * CUDA block into shared memory after its first weight loads are out; the
 * grid is persistent (the blocks that fit at once loop over the row
 * groups), so x is quantized once per resident block; integer dots
 * (__dp4a; gemv_split_lane.h, emulated on the host by test_gemv_split_emu),
 * one FMA per chunk and row; a warp-shuffle sum per row and the epilogues
 * of gemv_common.cuh. */
#include "dequant_split_lane.h"
#include "gemv_q8x.cuh"
#include "gemv_split_lane.h"

// ---------------------------------------------------------------- the layout's conversion

/* bytes of one GGUF block and of its quants */
static __host__ __device__ __forceinline__ int split_block_bytes(int q8) { return q8 ? 34 : 18; }
static __host__ __device__ __forceinline__ int split_quant_bytes(int q8) { return q8 ? 32 : 16; }

/* One CUDA block a row: the row's used bytes into shared memory, then back
 * in the other layout (join 0: GGUF to split, 1: split to GGUF). The padding
 * of a stride is not touched. */
__global__ void split_rows_kernel(uint8_t *w, size_t row_bytes, int64_t n, int64_t nb, int q8, int join)
{
    extern __shared__ uint8_t row[];
    const int bb = split_block_bytes(q8), qb = split_quant_bytes(q8);
    const size_t used = (size_t)nb * bb, qoff = (size_t)nb * qb;
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        uint8_t *p = w + (size_t)r * row_bytes;
        for (size_t i = threadIdx.x; i < used; i += blockDim.x) row[i] = p[i];
        __syncthreads();
        for (size_t i = threadIdx.x; i < used; i += blockDim.x) {
            /* byte i of the destination, from where it sits in the source */
            size_t from;
            if (!join) from = i < qoff ? (i / qb) * bb + 2 + i % qb : ((i - qoff) / 2) * bb + (i - qoff) % 2;
            else {
                const size_t b = i / bb, o = i % bb;
                from = o < 2 ? qoff + 2 * b + o : b * qb + (o - 2);
            }
            p[i] = row[from];
        }
        __syncthreads(); /* the next row overwrites row[] */
    }
}

extern "C" lrun_status lrun_k_split_rows(lrun_dtype t, void *w, size_t row_bytes, int64_t n, int64_t k, int join,
                                         void *stream)
{
    static const char op[] = "lrun_k_split_rows";
    if (t != LRUN_DTYPE_Q8_0 && t != LRUN_DTYPE_Q4_0)
        return lrun_fail(LRUN_E_ARG, "%s: dtype %s has no split layout (Q8_0, Q4_0 only)", op, lrun_dtype_name(t));
    if (!w || !stream) return lrun_fail(LRUN_E_ARG, "%s: w or stream is NULL", op);
    if (n < 0 || k <= 0 || k % 32 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: n %lld, k %lld (k a positive multiple of 32)", op, (long long)n,
                         (long long)k);
    const int q8 = t == LRUN_DTYPE_Q8_0;
    const size_t used = (size_t)(k / 32) * (size_t)split_block_bytes(q8);
    if (row_bytes < used)
        return lrun_fail(LRUN_E_ARG, "%s: row_bytes %zu below the %zu bytes of a row of %lld", op, row_bytes, used,
                         (long long)k);
    if (used > 48 * 1024)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: a row of %zu bytes is over the 48 KiB of shared memory", op, used);
    if (n == 0) return LRUN_OK;
    const unsigned g = (unsigned)(n < 65536 ? n : 65536);
    split_rows_kernel<<<g, 256, used, (cudaStream_t)stream>>>((uint8_t *)w, row_bytes, n, k / 32, q8, join);
    return lrun_k_launched(op);
}

// ---------------------------------------------------------------- dequantize (prefill)

/* dst (n, k) f16 = the split rows, each value q·d (Q4_0: (q − 8)·d) in f32
 * rounded once to f16: lrun_k_dequantize's values for the GGUF rows. A
 * thread takes whole blocks of 32 (dequant_split_lane.h), i = its index,
 * then a grid's worth of blocks on: block i is block b = i % nb of row
 * r = i / nb, its values dst[32·i ..]. I is uint32_t whenever the n·nb
 * blocks and a grid stride past them fit (every weight a GPU holds today:
 * 2^32 blocks are 256 GiB of f16), so the division is a 32-bit one, once
 * per block. VEC: 16-byte loads and stores (ds_vector_ok); otherwise
 * 2-byte-aligned word loads and f16 stores, the same values. */
template <int Q8, bool VEC, typename I>
__global__ void dequantize_split_kernel(const uint8_t *__restrict__ w, size_t row_bytes, I nb, I blocks,
                                        uint16_t *__restrict__ dst)
{
    constexpr int NQ = Q8 ? 8 : 4; /* words of a block's quants */
    const I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < blocks; i += stride) {
        const I r = i / nb, b = i - r * nb;
        const uint8_t *row = w + (size_t)r * row_bytes, *qp = row + ds_quants_at(Q8, b);
        uint32_t q[NQ], o[16];
        if (VEC) {
#pragma unroll
            for (int j = 0; j < NQ / 4; j++) {
                const uint4 v = lrun_k_ld128_stream(qp + 16 * j);
                q[4 * j] = v.x, q[4 * j + 1] = v.y, q[4 * j + 2] = v.z, q[4 * j + 3] = v.w;
            }
        } else {
#pragma unroll
            for (int j = 0; j < NQ; j++) q[j] = lrun_k_ld32_a2(qp + 4 * j);
        }
        const float d = ds_f16(lrun_k_ld16(row + ds_scale_at(Q8, nb, b)));
        if (Q8) ds_block_q8(q, d, o);
        else ds_block_q4(q, d, o);
        uint16_t *out = dst + 32 * (size_t)i;
        if (VEC) {
#pragma unroll
            for (int j = 0; j < 4; j++)
                ((uint4 *)out)[j] = make_uint4(o[4 * j], o[4 * j + 1], o[4 * j + 2], o[4 * j + 3]);
        } else {
#pragma unroll
            for (int j = 0; j < 16; j++) out[2 * j] = (uint16_t)o[j], out[2 * j + 1] = (uint16_t)(o[j] >> 16);
        }
    }
}

template <int Q8, bool VEC>
static void launch_dequantize_split(const uint8_t *w, size_t row_bytes, int64_t nb, int64_t blocks, uint16_t *dst,
                                    cudaStream_t st)
{
    const unsigned g = lrun_k_grid(blocks, 256, LRUN_K_ELTWISE_BLOCKS);
    if ((uint64_t)blocks + (uint64_t)g * 256 <= UINT32_MAX)
        dequantize_split_kernel<Q8, VEC, uint32_t>
            <<<g, 256, 0, st>>>(w, row_bytes, (uint32_t)nb, (uint32_t)blocks, dst);
    else
        dequantize_split_kernel<Q8, VEC, uint64_t>
            <<<g, 256, 0, st>>>(w, row_bytes, (uint64_t)nb, (uint64_t)blocks, dst);
}

extern "C" lrun_status lrun_k_dequantize_split(lrun_dtype t, const void *w, size_t row_bytes, int64_t n, int64_t k,
                                               void *dst, void *stream)
{
    static const char op[] = "lrun_k_dequantize_split";
    if (t != LRUN_DTYPE_Q8_0 && t != LRUN_DTYPE_Q4_0)
        return lrun_fail(LRUN_E_ARG, "%s: dtype %s has no split layout (Q8_0, Q4_0 only)", op, lrun_dtype_name(t));
    if (!w || !dst || !stream) return lrun_fail(LRUN_E_ARG, "%s: w, dst or stream is NULL", op);
    if (n < 0 || k <= 0 || k % 32 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: n %lld, k %lld (k a positive multiple of 32)", op, (long long)n,
                         (long long)k);
    /* the scales and the narrow path's words are read 2 bytes at a time, the values written so */
    if ((((uintptr_t)w | (uintptr_t)row_bytes | (uintptr_t)dst) & 1) != 0)
        return lrun_fail(LRUN_E_ARG, "%s: w %p, row_bytes %zu or dst %p is odd (2-byte alignment needed)", op, w,
                         row_bytes, dst);
    const size_t used = (size_t)(k / 32) * (size_t)split_block_bytes(t == LRUN_DTYPE_Q8_0);
    if (row_bytes < used)
        return lrun_fail(LRUN_E_ARG, "%s: row_bytes %zu below the %zu bytes of a row of %lld", op, row_bytes, used,
                         (long long)k);
    int64_t blocks;
    if (__builtin_mul_overflow(n, k / 32, &blocks))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld elements overflow", op, (long long)n, (long long)k);
    if (n == 0) return LRUN_OK;
    const uint8_t *wb = (const uint8_t *)w;
    uint16_t *o = (uint16_t *)dst;
    cudaStream_t st = (cudaStream_t)stream;
    const bool vec = ds_vector_ok(w, row_bytes, dst), q8 = t == LRUN_DTYPE_Q8_0;
    if (q8 && vec) launch_dequantize_split<1, true>(wb, row_bytes, k / 32, blocks, o, st);
    else if (q8) launch_dequantize_split<1, false>(wb, row_bytes, k / 32, blocks, o, st);
    else if (vec) launch_dequantize_split<0, true>(wb, row_bytes, k / 32, blocks, o, st);
    else launch_dequantize_split<0, false>(wb, row_bytes, k / 32, blocks, o, st);
    return lrun_k_launched(op);
}

// ---------------------------------------------------------------- one chunk of RW rows

/* Q8_0: each row's chunk dot (gemv_split_lane.h), one FMA with d·d_x. */
template <int RW>
static __device__ __forceinline__ void split_chunk_q8(const uint4 (&w)[RW], const uint32_t (&s)[RW], uint4 xw,
                                                      float dx, float (&acc)[RW])
{
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int v = gs_dot_q8(w[r].x, w[r].y, w[r].z, w[r].w, xw.x, xw.y, xw.z, xw.w);
        acc[r] = fmaf((float)v, lrun_k_f16((uint16_t)s[r]) * dx, acc[r]);
    }
}

/* Q4_0: Σxq once for the RW rows, then each row's chunk dot, one FMA. */
template <int RW>
static __device__ __forceinline__ void split_chunk_q4(const uint4 (&w)[RW], const uint32_t (&s)[RW], uint4 x0,
                                                      uint4 x1, float dx, float (&acc)[RW])
{
    const uint32_t xl[4] = {x0.x, x0.y, x0.z, x0.w}, xh[4] = {x1.x, x1.y, x1.z, x1.w};
    const int sx = gs_sum_x(xl, xh);
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int v = gs_dot_q4(w[r].x, w[r].y, w[r].z, w[r].w, xl, xh, sx);
        acc[r] = fmaf((float)v, lrun_k_f16((uint16_t)s[r]) * dx, acc[r]);
    }
}

// ---------------------------------------------------------------- the kernel

/* Row groups: a group is NW warps of RO output rows each (RO = RW, or RW/2
 * for a paired mode, whose warps read RO rows of gate then the same RO rows
 * of up); P.b0[p] is part p's first group (gemv_part_blocks with NW·RO rows
 * a group). Rows past n re-read row n − 1 and are not written. Dynamic
 * shared memory: k int8 of x, then k/32 f32 scales. */
template <int T, int RW, int NW, int U>
__global__ void __launch_bounds__(32 * NW)
    gemv_split_kernel(const __grid_constant__ gemv_parts P, int64_t groups, int64_t k, const float *__restrict__ x,
                      bool xvec, int mode)
{
    constexpr bool Q8 = T == LRUN_DTYPE_Q8_0;
    extern __shared__ __align__(16) uint8_t smem[];
    lrun_k_pdl_trigger();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bool sw = PAIRED(mode);
    const int ro = sw ? RW / 2 : RW;
    const int64_t nck = k / gs_chunk_elems(Q8), nb = k / 32; /* 16-byte chunks, blocks */
    const size_t qb = Q8 ? (size_t)k : (size_t)k / 2;        /* the scales' offset in a row */

    const uint8_t *rows[RW];
    uint4 wq[U][RW];
    uint32_t ws[U][RW];
    int p = 0;
    int64_t n = 0, row0 = 0;
    auto set_rows = [&](int64_t g) {
        p = (g >= P.b0[1]) + (g >= P.b0[2]);
        n = SEL3(P.n, p);
        row0 = ((g - SEL3(P.b0, p)) * NW + warp) * ro;
        gemv_block_rows<RW>(P, p, row0, n, sw, rows);
    };
    auto load = [&](int64_t c0) {
#pragma unroll
        for (int j = 0; j < U; j++) {
            const int64_t c = c0 + 32 * j;
            if (c < nck)
#pragma unroll
                for (int r = 0; r < RW; r++) {
                    wq[j][r] = lrun_k_ld128_stream(rows[r] + gs_chunk_at(c));
                    ws[j][r] = lrun_k_ld16(rows[r] + qb + 2 * gs_chunk_block(Q8, c));
                }
        }
    };

    int64_t g = blockIdx.x;
    set_rows(g);
    load(lane); /* the weights are no kernel's output: in flight before x is read */
    lrun_k_pdl_wait();
    int8_t *xq = (int8_t *)smem;
    float *xd = (float *)(smem + k);
    for (int64_t b = threadIdx.x; b < nb; b += 32 * NW) {
        float s_unused;
        dl_quantize(x + 32 * b, xvec, xq + 32 * b, &xd[b], &s_unused);
    }
    __syncthreads();

    for (bool first = true; g < groups; g += gridDim.x, first = false) {
        if (!first) {
            set_rows(g);
            load(lane);
        }
        float acc[RW];
#pragma unroll
        for (int r = 0; r < RW; r++) acc[r] = 0.0f;
        for (int64_t c0 = lane; c0 < nck; c0 += 32 * U) {
            if (c0 != lane) load(c0);
#pragma unroll
            for (int j = 0; j < U; j++) {
                const int64_t c = c0 + 32 * j;
                if (c >= nck) continue;
                const uint4 *xc = (const uint4 *)(xq + gs_chunk_x(Q8, c));
                const float dx = xd[gs_chunk_block(Q8, c)];
                if (Q8) split_chunk_q8<RW>(wq[j], ws[j], xc[0], dx, acc);
                else split_chunk_q4<RW>(wq[j], ws[j], xc[0], xc[1], dx, acc);
            }
        }
        float v[RW];
#pragma unroll
        for (int r = 0; r < RW; r++) v[r] = lrun_k_warp_sum(acc[r]);
        if (lane == 0)
#pragma unroll
            for (int r = 0; r < RW; r++) {
                if (r >= ro) break;
                const int64_t row = row0 + r;
                if (row >= n) break;
                float *y = SEL3(P.y, p) + row;
                if (sw) *y = pair1(v[r], v[r + (RW / 2)], mode);
                else put(y, v[r], mode);
            }
    }
}

// ---------------------------------------------------------------- dispatch

/* The shape: 8 warps of 4 rows, 2 chunks a row in flight (the prototype's
 * "q8s rw4 nw8 u2 P"; 111 registers for Q8_0 and 107 for Q4_0 with the
 * epilogues, no spills: 2 blocks of 256 threads an SM). */
#define SPLIT_RW 4
#define SPLIT_NW 8
#define SPLIT_U 2

template <int T>
static cudaError_t launch_split(gemv_parts P, int n_parts, int64_t k, const float *x, int mode, cudaStream_t st)
{
    auto kern = gemv_split_kernel<T, SPLIT_RW, SPLIT_NW, SPLIT_U>;
    static int per_sm = -1, sms = 0;
    const size_t shm = (size_t)k + 4 * (size_t)(k / 32);
    if (per_sm < 0) {
        int dev;
        cudaError_t e = cudaGetDevice(&dev);
        if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        /* at the largest x it takes, so the grid never asks more than fits */
        if (e == cudaSuccess)
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, 32 * SPLIT_NW,
                                                              LRUN_K_SPLIT_MAX_K * 9 / 8);
        if (e != cudaSuccess) return e;
        if (per_sm < 1) per_sm = 1;
    }
    const int64_t groups = gemv_part_blocks(P, n_parts, (int64_t)SPLIT_NW * SPLIT_RW, mode);
    int64_t grid = (int64_t)per_sm * sms;
    grid = grid < groups ? grid : groups;
    const bool xvec = ((uintptr_t)x & 15) == 0;
    return lrun_k_launch(kern, dim3((unsigned)grid), dim3(32 * SPLIT_NW), shm, st, P, groups, k, x, xvec, mode);
}

int lrun_k_gemv_split(lrun_dtype t, gemv_parts P, int n_parts, int64_t k, const float *x, int64_t m, int mode,
                      cudaStream_t st, cudaError_t *e)
{
    if (t != LRUN_DTYPE_Q8_0 && t != LRUN_DTYPE_Q4_0) return 0;
    if (k % 32 != 0 || k > LRUN_K_SPLIT_MAX_K) return 0;
    for (int p = 0; p < n_parts; p++)
        if (((uintptr_t)P.w[p] & 15) != 0 || (P.rb[p] & 15) != 0) return 0;
    /* x's rows one at a time: the kernel is m = 1 (a batch re-reads the
     * weights once per row; the split layout is for batch-1 decode) */
    *e = cudaSuccess;
    for (int64_t i = 0; i < m && *e == cudaSuccess; i++) {
        gemv_parts Q = P;
        for (int p = 0; p < n_parts; p++) Q.y[p] = P.y[p] ? P.y[p] + i * P.n[p] : NULL;
        *e = t == LRUN_DTYPE_Q8_0 ? launch_split<LRUN_DTYPE_Q8_0>(Q, n_parts, k, x + i * k, mode, st)
                                  : launch_split<LRUN_DTYPE_Q4_0>(Q, n_parts, k, x + i * k, mode, st);
    }
    return 1;
}
