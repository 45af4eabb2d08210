/* gemvq_proto.cu — the batch-1 decode GEMV of Q8_0 and Q4_0 weights: the
 * current kernels against candidates on the split-row layout (issue #15;
 * docs/gpu.md "q8_0 / q4_0 decode GEMV study"). The candidates are not
 * wired into the engine; the winner is, as kernels/gemv_split_q8x.cu
 * ("lib q8x" rows, and an m = 2, 4, 8 comparison with the GGUF kernel).
 *
 * The current kernels are called through their real entry point,
 * lrun_k_gemv_multi (linked from build/liblrun.a): "cur" is what
 * gemv_choice picks on sm_90 by default for these two types (gemv.cu's
 * unit kernel: 2- and 4-byte loads of GGUF's 34/18-byte blocks, f32 x),
 * "cur-dp4a" the LRUN_K_GEMV_DP4A kernel (gemv_dp4a.cu, x rounded to q8),
 * and "lib split" the library's split-row kernel (gemv_split.cu, under
 * LRUN_K_GEMV_SPLIT: the candidate "q8s rw4 nw8 u2 P" below as the engine
 * runs it with LRUN_CUDA_GEMV_SPLIT=1).
 *
 * The candidates read the split-row layout (runtime/quant/quant_split.h:
 * the same bytes per row, a row's quants contiguous and 16-byte aligned,
 * its f16 scales behind them), made on the host by lrun_quant_split_rows:
 *   - a warp owns RW rows and walks them together, lane l taking the
 *     16-byte chunks l, l+32, … of each row (a warp's load is 512
 *     consecutive bytes of one row: one LDG.128 a lane), U chunks a row in
 *     flight per lane before any is used; the chunk's f16 scale is one
 *     LDG.U16 (a warp's 32 scales are 32 or 64 consecutive bytes);
 *   - x in one of three forms (XM):
 *       f32  x as floats through L1, FMA per weight (the byte-to-float trick
 *            of gemv.cu): y is the product with x itself, as "cur";
 *       q8g  x quantized once per call by lrun_k_quantize_q8 (a separate
 *            launch, as llama.cpp's quantize_q8_1) into int8 + f32 scales in
 *            global memory, read through L1; integer dots (__dp4a), one FMA
 *            per chunk: y is the product with the q8-rounded x, as cur-dp4a;
 *            timed alone and with the quantize launch ("+q");
 *       q8s  the same numerics, x quantized by each CUDA block into shared
 *            memory first (gemv_q8x.cuh's dl_quantize, cur-dp4a's), after the
 *            block's first weight loads are issued; "P" grids are persistent
 *            (at most the blocks that fit the GPU at once, each looping over
 *            row groups), so x is quantized once per resident block.
 *
 * Printed per type (q8_0, q4_0) and shape (n x k: 4096x4096, 11008x4096,
 * 4096x11008, 32000x4096): µs per call, GB/s of weight bytes (n·row_bytes,
 * the same for both layouts), % of the read rate measured in the same run,
 * and the largest |y − ref| over the rows relative to max |ref|, against an
 * f64 CPU dot with x ("vs x"), with the q8-rounded x that lrun_k_quantize_q8
 * gives ("vs xq"), and against cur's y ("vs cur"). Weights are rotated over
 * copies of >= 256 MB per layout, so no call finds its weights in L2. Calls
 * are back-to-back launches on one stream without PDL, best of 3 runs of
 * >= 200 calls, timed twice: launched one by one from the host, and
 * replayed from a CUDA graph (the engine's decode; a 4096x4096 q4_0 call
 * at HBM speed is ~3.5 µs, near the host's launch rate). % of read is the
 * graph's GB/s over the read rate.
 *
 * On a GPU (one command, from the repository root):
 *   make -j16 CUDA=1 build/liblrun.a && nvcc -O3 -std=c++17 -arch=sm_90 -Iruntime -Ikernels -DLRUN_WITH_CUDA \
 *     tests/bench/gemvq_proto.cu build/liblrun.a -lcublas -lcjson -lpcre2-8 -lm -o /tmp/gemvq_proto && /tmp/gemvq_proto
 * Without one: tests/bench/gemvq_sass.sh compiles it for sm_90 and counts the
 * SASS of each candidate's main loop per weight byte. */
#include "gemv_q8x.cuh" /* dl_quantize, ldx4, byte_f; common.cuh, kernels.h */

extern "C" {
#include "quant/quant.h"
#include "quant/quant_split.h"
}

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#define CK(call)                                                                                           \
    do {                                                                                                   \
        cudaError_t e_ = (call);                                                                           \
        if (e_ != cudaSuccess) {                                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));          \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

enum { XM_F32 = 0, XM_Q8G = 1, XM_Q8S = 2 };

struct gq_args {
    const uint8_t *w;  /* (n, row_bytes) split rows, 16-byte aligned base and stride */
    size_t rb;         /* row stride, bytes */
    int64_t n, k;      /* rows, elements a row (k % 32 == 0) */
    const float *x;    /* (k) f32, 16-byte aligned (XM_F32, XM_Q8S) */
    const int8_t *xq;  /* (k) int8, 16-byte aligned (XM_Q8G) */
    const float *xd;   /* (k/32) f16-rounded scales of xq (XM_Q8G) */
    float *y;          /* (n) */
    int64_t groups;    /* row groups of NW·RW rows: the grid loops over them */
};

// ---------------------------------------------------------------- one chunk of RW rows

/* Q8_0, f32 x: chunk c is elements 16c..16c+15; q as float by byte_f
 * (2^23 + (q ^ 0x80)) − (2^23 + 128), exactly; one FMA per weight, the
 * block's scale once per chunk. */
template <int RW>
static __device__ __forceinline__ void chunk_q8_f32(const uint4 (&w)[RW], const uint32_t (&s)[RW], const float *x,
                                                    int64_t c, float (&acc)[RW])
{
    const float4 *xp = (const float4 *)(x + 16 * c);
    float xs[16];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float4 f = __ldg(xp + i);
        xs[4 * i] = f.x, xs[4 * i + 1] = f.y, xs[4 * i + 2] = f.z, xs[4 * i + 3] = f.w;
    }
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const uint32_t a[4] = {w[r].x ^ 0x80808080u, w[r].y ^ 0x80808080u, w[r].z ^ 0x80808080u,
                               w[r].w ^ 0x80808080u};
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) d = fmaf(byte_f(a[i], e) - 8388736.0f, xs[4 * i + e], d);
        acc[r] = fmaf(lrun_k_f16((uint16_t)s[r]), d, acc[r]);
    }
}

/* Q4_0, f32 x: chunk c is block c; byte j's low nibble is element j, its
 * high nibble element j + 16; q − 8 = byte_f(nibble) − (2^23 + 8). */
template <int RW>
static __device__ __forceinline__ void chunk_q4_f32(const uint4 (&w)[RW], const uint32_t (&s)[RW], const float *x,
                                                    int64_t c, float (&acc)[RW])
{
    const float4 *xp = (const float4 *)(x + 32 * c);
    float xs[32];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const float4 f = __ldg(xp + i);
        xs[4 * i] = f.x, xs[4 * i + 1] = f.y, xs[4 * i + 2] = f.z, xs[4 * i + 3] = f.w;
    }
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const uint32_t q[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t lo = q[i] & 0x0f0f0f0fu, hi = (q[i] >> 4) & 0x0f0f0f0fu;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                d = fmaf(byte_f(lo, e) - 8388616.0f, xs[4 * i + e], d);
                d = fmaf(byte_f(hi, e) - 8388616.0f, xs[16 + 4 * i + e], d);
            }
        }
        acc[r] = fmaf(lrun_k_f16((uint16_t)s[r]), d, acc[r]);
    }
}

/* Q8_0, int8 x: 4 dp4a a chunk, one FMA with d·d_x (d_x: block c/2 of x).
 * |Σ| ≤ 16·127·128 < 2^24, so the int-to-float is exact. */
template <int RW>
static __device__ __forceinline__ void chunk_q8_i8(const uint4 (&w)[RW], const uint32_t (&s)[RW], uint4 xw,
                                                   float dx, float (&acc)[RW])
{
#pragma unroll
    for (int r = 0; r < RW; r++) {
        int v = __dp4a((int)w[r].x, (int)xw.x, 0);
        v = __dp4a((int)w[r].y, (int)xw.y, v);
        v = __dp4a((int)w[r].z, (int)xw.z, v);
        v = __dp4a((int)w[r].w, (int)xw.w, v);
        acc[r] = fmaf((float)v, lrun_k_f16((uint16_t)s[r]) * dx, acc[r]);
    }
}

/* Q4_0, int8 x: Σ(q − 8)·xq = Σq·xq − 8·Σxq, the nibbles as unsigned bytes
 * (0..15) into dp4a; sx = Σxq of the block, shared by the RW rows. */
template <int RW>
static __device__ __forceinline__ void chunk_q4_i8(const uint4 (&w)[RW], const uint32_t (&s)[RW], uint4 x0, uint4 x1,
                                                   int sx, float dx, float (&acc)[RW])
{
    const int xl[4] = {(int)x0.x, (int)x0.y, (int)x0.z, (int)x0.w}, xh[4] = {(int)x1.x, (int)x1.y, (int)x1.z,
                                                                              (int)x1.w};
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const uint32_t q[4] = {w[r].x, w[r].y, w[r].z, w[r].w};
        int v = -8 * sx;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v = __dp4a((int)(q[i] & 0x0f0f0f0fu), xl[i], v);
            v = __dp4a((int)((q[i] >> 4) & 0x0f0f0f0fu), xh[i], v);
        }
        acc[r] = fmaf((float)v, lrun_k_f16((uint16_t)s[r]) * dx, acc[r]);
    }
}

// ---------------------------------------------------------------- the candidate kernel

/* y = W·x for split rows of T (Q8_0 or Q4_0). Block: NW warps; row group g
 * (NW·RW rows) gives warp w rows (g·NW + w)·RW + r; rows past n re-read row
 * n−1 and are not written. The grid loops over the groups (persistent when
 * it is smaller than their count). XM_Q8S needs k + 4·k/32 bytes of dynamic
 * shared memory. */
template <int T, int XM, int RW, int NW, int U, int PF>
__global__ void __launch_bounds__(32 * NW) gq_kernel(const __grid_constant__ gq_args A)
{
    constexpr bool Q8 = T == LRUN_DTYPE_Q8_0;
    constexpr int EPC = Q8 ? 16 : 32; /* elements a 16-byte chunk */
    extern __shared__ __align__(16) uint8_t smem[];
    lrun_k_pdl_trigger();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t nck = A.k / EPC, nb = A.k / 32;
    const size_t qb = Q8 ? (size_t)A.k : (size_t)A.k / 2; /* the scales' offset in a row */

    const uint8_t *rows[RW];
    uint4 wq[U][RW];
    uint32_t ws[U][RW];
    auto set_rows = [&](int64_t g) {
#pragma unroll
        for (int r = 0; r < RW; r++) {
            int64_t rr = (g * NW + warp) * RW + r;
            rr = rr < A.n ? rr : A.n - 1;
            rows[r] = A.w + (size_t)rr * A.rb;
        }
    };
    /* the U chunks c0, c0 + 32, … of the RW rows into (q, sc) */
    auto load_to = [&](uint4 (&q)[U][RW], uint32_t (&sc)[U][RW], int64_t c0) {
#pragma unroll
        for (int j = 0; j < U; j++) {
            const int64_t c = c0 + 32 * j;
            if (c < nck)
#pragma unroll
                for (int r = 0; r < RW; r++) {
                    q[j][r] = lrun_k_ld128_stream(rows[r] + 16 * c);
                    sc[j][r] = lrun_k_ld16(rows[r] + qb + 2 * (Q8 ? c >> 1 : c));
                }
        }
    };
    auto load = [&](int64_t c0) { load_to(wq, ws, c0); };

    int64_t g = blockIdx.x;
    set_rows(g);
    load(lane); /* the weights are no kernel's output: in flight before x is read */
    lrun_k_pdl_wait();

    const int8_t *xq = A.xq;
    const float *xd = A.xd;
    if (XM == XM_Q8S) {
        int8_t *sq = (int8_t *)smem;
        float *sd = (float *)(smem + A.k);
        for (int64_t b = threadIdx.x; b < nb; b += 32 * NW) {
            float sdummy;
            dl_quantize(A.x + 32 * b, true, sq + 32 * b, &sd[b], &sdummy);
        }
        __syncthreads();
        xq = sq, xd = sd;
    }

    for (bool first = true; g < A.groups; g += gridDim.x, first = false) {
        if (!first) {
            set_rows(g);
            load(lane);
        }
        float acc[RW];
#pragma unroll
        for (int r = 0; r < RW; r++) acc[r] = 0.0f;
        for (int64_t c0 = lane; c0 < nck; c0 += 32 * U) {
            /* PF: the next step's loads go out before this step's math (twice
             * the registers); else they wait for the loop's next turn */
            uint4 nq[U][RW];
            uint32_t ns[U][RW];
            if (PF) load_to(nq, ns, c0 + 32 * U);
            else if (c0 != lane) load(c0);
#pragma unroll
            for (int j = 0; j < U; j++) {
                const int64_t c = c0 + 32 * j;
                if (c >= nck) continue;
                if (XM == XM_F32) {
                    if (Q8) chunk_q8_f32<RW>(wq[j], ws[j], A.x, c, acc);
                    else chunk_q4_f32<RW>(wq[j], ws[j], A.x, c, acc);
                } else if (Q8) {
                    const uint4 xw = XM == XM_Q8S ? ((const uint4 *)xq)[c] : __ldg((const uint4 *)xq + c);
                    const float dx = XM == XM_Q8S ? xd[c >> 1] : __ldg(xd + (c >> 1));
                    chunk_q8_i8<RW>(wq[j], ws[j], xw, dx, acc);
                } else {
                    const uint4 x0 = XM == XM_Q8S ? ((const uint4 *)xq)[2 * c] : __ldg((const uint4 *)xq + 2 * c);
                    const uint4 x1 =
                        XM == XM_Q8S ? ((const uint4 *)xq)[2 * c + 1] : __ldg((const uint4 *)xq + 2 * c + 1);
                    const float dx = XM == XM_Q8S ? xd[c] : __ldg(xd + c);
                    int sx = __dp4a((int)x0.x, 0x01010101, 0);
                    sx = __dp4a((int)x0.y, 0x01010101, sx), sx = __dp4a((int)x0.z, 0x01010101, sx);
                    sx = __dp4a((int)x0.w, 0x01010101, sx), sx = __dp4a((int)x1.x, 0x01010101, sx);
                    sx = __dp4a((int)x1.y, 0x01010101, sx), sx = __dp4a((int)x1.z, 0x01010101, sx);
                    sx = __dp4a((int)x1.w, 0x01010101, sx);
                    chunk_q4_i8<RW>(wq[j], ws[j], x0, x1, sx, dx, acc);
                }
            }
            if (PF)
#pragma unroll
                for (int j = 0; j < U; j++)
#pragma unroll
                    for (int r = 0; r < RW; r++) wq[j][r] = nq[j][r], ws[j][r] = ns[j][r];
        }
#pragma unroll
        for (int r = 0; r < RW; r++) {
            const float v = lrun_k_warp_sum(acc[r]);
            const int64_t row = (g * NW + warp) * RW + r;
            if (lane == 0 && row < A.n) A.y[row] = v;
        }
    }
}

// ---------------------------------------------------------------- candidates

struct cand {
    const char *name;
    int xm, rw, nw, u, pf, persist;
    int (*launch)(const gq_args &, int persist, cudaStream_t);
};

template <int T, int XM, int RW, int NW, int U, int PF> static int launch_gq(const gq_args &a0, int persist, cudaStream_t st)
{
    static int blocks_per_sm = -1, sms = 0;
    const size_t shm = XM == XM_Q8S ? (size_t)a0.k + 4 * (size_t)(a0.k / 32) : 0;
    if (blocks_per_sm < 0) {
        int dev;
        CK(cudaGetDevice(&dev));
        CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, gq_kernel<T, XM, RW, NW, U, PF>, 32 * NW,
                                                         XM == XM_Q8S ? (size_t)11008 + 4 * 344 : 0));
    }
    gq_args a = a0;
    a.groups = (a.n + NW * RW - 1) / (NW * RW);
    int64_t grid = a.groups;
    if (persist && grid > (int64_t)blocks_per_sm * sms) grid = (int64_t)blocks_per_sm * sms;
    gq_kernel<T, XM, RW, NW, U, PF><<<(unsigned)grid, 32 * NW, shm, st>>>(a);
    return cudaPeekAtLastError() == cudaSuccess;
}

#define CAND(T, XM, RW, NW, U, PF, P, NAME) {NAME, XM, RW, NW, U, PF, P, launch_gq<T, XM, RW, NW, U, PF>}

static const cand cands_q8[] = {
    CAND(LRUN_DTYPE_Q8_0, XM_F32, 2, 4, 2, 0, 0, "f32 rw2 nw4 u2"),
    CAND(LRUN_DTYPE_Q8_0, XM_F32, 4, 4, 2, 0, 0, "f32 rw4 nw4 u2"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8G, 1, 4, 4, 0, 0, "q8g rw1 nw4 u4"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8G, 2, 4, 2, 0, 0, "q8g rw2 nw4 u2"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8G, 4, 4, 2, 0, 0, "q8g rw4 nw4 u2"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8G, 2, 8, 4, 0, 0, "q8g rw2 nw8 u4"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8S, 2, 4, 2, 0, 0, "q8s rw2 nw4 u2"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8S, 2, 4, 2, 0, 1, "q8s rw2 nw4 u2 P"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8S, 4, 8, 2, 0, 1, "q8s rw4 nw8 u2 P"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8S, 2, 8, 4, 0, 1, "q8s rw2 nw8 u4 P"),
    CAND(LRUN_DTYPE_Q8_0, XM_F32, 2, 4, 2, 1, 0, "f32 rw2 nw4 u2 PF"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8G, 2, 4, 2, 1, 0, "q8g rw2 nw4 u2 PF"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8G, 4, 4, 1, 1, 0, "q8g rw4 nw4 u1 PF"),
    CAND(LRUN_DTYPE_Q8_0, XM_Q8S, 2, 4, 2, 1, 1, "q8s rw2 nw4 u2 PF P"),
};
static const cand cands_q4[] = {
    CAND(LRUN_DTYPE_Q4_0, XM_F32, 2, 4, 2, 0, 0, "f32 rw2 nw4 u2"),
    CAND(LRUN_DTYPE_Q4_0, XM_F32, 4, 4, 2, 0, 0, "f32 rw4 nw4 u2"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8G, 2, 4, 2, 0, 0, "q8g rw2 nw4 u2"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8G, 4, 4, 2, 0, 0, "q8g rw4 nw4 u2"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8G, 2, 4, 4, 0, 0, "q8g rw2 nw4 u4"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8G, 4, 8, 4, 0, 0, "q8g rw4 nw8 u4"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8S, 2, 4, 2, 0, 0, "q8s rw2 nw4 u2"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8S, 2, 4, 4, 0, 1, "q8s rw2 nw4 u4 P"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8S, 4, 8, 2, 0, 1, "q8s rw4 nw8 u2 P"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8S, 4, 8, 4, 0, 1, "q8s rw4 nw8 u4 P"),
    CAND(LRUN_DTYPE_Q4_0, XM_F32, 2, 4, 2, 1, 0, "f32 rw2 nw4 u2 PF"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8G, 2, 4, 2, 1, 0, "q8g rw2 nw4 u2 PF"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8G, 4, 4, 2, 1, 0, "q8g rw4 nw4 u2 PF"),
    CAND(LRUN_DTYPE_Q4_0, XM_Q8S, 2, 4, 4, 1, 1, "q8s rw2 nw4 u4 PF P"),
};

// ---------------------------------------------------------------- the read rate

__global__ void read_kernel(const uint4 *__restrict__ p, size_t n, unsigned *out)
{
    uint32_t s = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint4 v = __ldg(p + i);
        s ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (s == 0x12345678u) *out = s; /* keeps the loads */
}

/* GB/s of a plain 16-byte-load read of 1 GiB (far beyond L2), best of 5 */
static double read_rate(cudaStream_t st)
{
    const size_t bytes = (size_t)1 << 30;
    void *p;
    unsigned *o;
    CK(cudaMalloc(&p, bytes));
    CK(cudaMalloc(&o, 4));
    CK(cudaMemsetAsync(p, 1, bytes, st));
    int dev, sms;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float best = 1e30f;
    for (int i = 0; i < 6; i++) {
        CK(cudaEventRecord(e0, st));
        read_kernel<<<sms * 8, 256, 0, st>>>((const uint4 *)p, bytes / 16, o);
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (i > 0 && ms < best) best = ms;
    }
    CK(cudaFree(p));
    CK(cudaFree(o));
    return bytes / (best * 1e-3) / 1e9;
}

// ---------------------------------------------------------------- host side

static uint32_t rng_state = 2463534242u;
static float frand(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 17, rng_state ^= rng_state << 5;
    return (float)(rng_state >> 8) / 16777216.0f * 2.0f - 1.0f;
}

/* largest |a − b| over n, relative to the largest |b| */
static double rel_diff(const float *a, const double *b, int64_t n)
{
    double m = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY; /* a row never written (y was NaN-filled) */
        m = fmax(m, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return mb > 0 ? m / mb : m;
}

struct timing {
    cudaEvent_t e0, e1;
};

/* µs per call of f(copy) over >= 200 calls rotating the copies, best of 3:
 * graph 0 launched from the host one by one, graph 1 captured once into a
 * CUDA graph and replayed (no host launch cost, as the engine's decode) */
template <class F> static double time_calls(timing &tm, cudaStream_t st, int copies, int graph, F f)
{
    const int iters = copies * (1 + 200 / copies);
    cudaGraphExec_t exec = NULL;
    if (graph) {
        cudaGraph_t gr;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
        bool ok = true;
        for (int i = 0; i < iters; i++) ok = ok && f(i % copies);
        CK(cudaStreamEndCapture(st, &gr));
        if (!ok) return -1;
        CK(cudaGraphInstantiate(&exec, gr, 0));
        CK(cudaGraphDestroy(gr));
        CK(cudaGraphLaunch(exec, st)); /* warm */
        CK(cudaStreamSynchronize(st));
    }
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        CK(cudaEventRecord(tm.e0, st));
        if (graph) CK(cudaGraphLaunch(exec, st));
        else
            for (int i = 0; i < iters; i++)
                if (!f(i % copies)) return -1;
        CK(cudaEventRecord(tm.e1, st));
        CK(cudaEventSynchronize(tm.e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, tm.e0, tm.e1));
        best = fmin(best, ms * 1e3 / iters);
    }
    if (exec) CK(cudaGraphExecDestroy(exec));
    return best;
}

static void bench_shape(lrun_dtype t, int64_t n, int64_t k, double read_gbs, cudaStream_t st, timing &tm)
{
    size_t rb;
    if (lrun_dtype_row_bytes(t, k, &rb) != LRUN_OK || rb % 16) {
        printf("# %s %lldx%lld: rows are not whole 16-byte units, skipped\n", lrun_dtype_name(t), (long long)n,
               (long long)k);
        return;
    }
    const size_t bytes = (size_t)n * rb;
    const int copies = (int)(((size_t)256 << 20) / bytes) + 2;
    /* the weights: random rows quantized by lrun_quantize_row, and their split form */
    std::vector<uint8_t> g(bytes), s(bytes);
    std::vector<float> row(k), x(k);
    for (int64_t r = 0; r < n; r++) {
        const float amp = 0.5f + 0.5f * fabsf(frand());
        for (int64_t j = 0; j < k; j++) row[j] = amp * frand();
        lrun_quantize_row(t, row.data(), g.data() + (size_t)r * rb, k);
    }
    if (lrun_quant_split_rows(t, g.data(), s.data(), rb, n, k) != LRUN_OK) {
        fprintf(stderr, "split: %s\n", lrun_last_error());
        exit(1);
    }
    for (int64_t j = 0; j < k; j++) x[j] = frand() * (j % 7 == 0 ? 3.0f : 1.0f);
    std::vector<uint8_t *> dg(copies), ds(copies);
    for (int c = 0; c < copies; c++) {
        CK(cudaMalloc(&dg[c], bytes));
        CK(cudaMalloc(&ds[c], bytes));
        CK(cudaMemcpy(dg[c], g.data(), bytes, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(ds[c], s.data(), bytes, cudaMemcpyHostToDevice));
    }
    float *dx, *dy, *dxd;
    int8_t *dxq;
    CK(cudaMalloc(&dx, k * 4));
    CK(cudaMalloc(&dy, n * 4));
    CK(cudaMalloc(&dxq, k));
    CK(cudaMalloc(&dxd, k / 32 * 4));
    CK(cudaMemcpy(dx, x.data(), k * 4, cudaMemcpyHostToDevice));
    if (lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, dx, 1, k, dxq, dxd, NULL, st) != LRUN_OK) {
        fprintf(stderr, "quantize: %s\n", lrun_last_error());
        exit(1);
    }
    std::vector<int8_t> xq(k);
    std::vector<float> xd(k / 32);
    CK(cudaMemcpy(xq.data(), dxq, k, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(xd.data(), dxd, k / 32 * 4, cudaMemcpyDeviceToHost));

    /* f64 references: with x, and with the q8-rounded x */
    std::vector<double> ref(n), refq(n);
    for (int64_t r = 0; r < n; r++) {
        lrun_dequantize_row(t, g.data() + (size_t)r * rb, row.data(), k);
        double a = 0, b = 0;
        for (int64_t j = 0; j < k; j++) {
            a += (double)row[j] * x[j];
            b += (double)row[j] * ((double)xq[j] * xd[j / 32]);
        }
        ref[r] = a, refq[r] = b;
    }

    std::vector<float> y(n), ycur(n);
    std::vector<double> ycur_d(n);
    const double gb = bytes / 1e9;
    auto report = [&](const char *name, double us, double usg, int numerics_q8) {
        CK(cudaMemcpy(y.data(), dy, n * 4, cudaMemcpyDeviceToHost));
        const double gbs = us > 0 ? gb / (us * 1e-6) : 0, gbsg = usg > 0 ? gb / (usg * 1e-6) : 0;
        printf("%-6s %11s  %-20s %8.2f %7.1f %8.2f %7.1f %5.1f%%   %.2e  %.2e  %.2e%s\n", lrun_dtype_name(t),
               (std::to_string(n) + "x" + std::to_string(k)).c_str(), name, us, gbs, usg, gbsg, 100 * gbsg / read_gbs,
               rel_diff(y.data(), ref.data(), n), rel_diff(y.data(), refq.data(), n),
               rel_diff(y.data(), ycur_d.data(), n),
               us < 0 || usg < 0 ? "  FAILED" : (numerics_q8 ? "  (q8 x)" : ""));
        fflush(stdout);
    };

    /* the current kernels, through lrun_k_gemv_multi */
    for (int dp4a = 0; dp4a < 2; dp4a++) {
        const int mode = LRUN_K_GEMV_STORE | (dp4a ? LRUN_K_GEMV_DP4A : 0);
        auto call = [&](int c) {
            lrun_k_gemv_part part = {dg[c], rb, n, dy};
            return lrun_k_gemv_multi(t, &part, 1, k, dx, 1, mode, st) == LRUN_OK;
        };
        CK(cudaMemset(dy, 0xff, n * 4));
        if (!call(0)) {
            printf("# cur%s: %s\n", dp4a ? "-dp4a" : "", lrun_last_error());
            continue;
        }
        CK(cudaStreamSynchronize(st));
        if (!dp4a) {
            CK(cudaMemcpy(ycur.data(), dy, n * 4, cudaMemcpyDeviceToHost));
            for (int64_t i = 0; i < n; i++) ycur_d[i] = ycur[i];
        }
        const double us = time_calls(tm, st, copies, 0, call), usg = time_calls(tm, st, copies, 1, call);
        /* y of the last call (every copy holds the same weights) */
        report(dp4a ? "cur-dp4a (GGUF)" : "cur (GGUF)", us, usg, dp4a);
    }

    /* the same bytes through the library's split kernel (kernels/gemv_split.cu,
     * LRUN_K_GEMV_SPLIT: the candidate "q8s rw4 nw8 u2 P" as the engine runs
     * it under LRUN_CUDA_GEMV_SPLIT=1) */
    {
        auto call = [&](int c) {
            lrun_k_gemv_part part = {ds[c], rb, n, dy};
            return lrun_k_gemv_multi(t, &part, 1, k, dx, 1, LRUN_K_GEMV_STORE | LRUN_K_GEMV_SPLIT, st) == LRUN_OK;
        };
        CK(cudaMemset(dy, 0xff, n * 4));
        if (!call(0)) printf("# lib split: %s\n", lrun_last_error());
        else {
            const double us = time_calls(tm, st, copies, 0, call), usg = time_calls(tm, st, copies, 1, call);
            report("lib split (q8s)", us, usg, 1);
        }
    }

    /* the library's q8x kernel (kernels/gemv_split_q8x.cu: the candidate
     * "q8g rw2 nw4 u2 PF" as the engine runs it by default), on the split
     * rows and on GGUF's (the engine's streamed weights), alone and with
     * lrun_k_quantize_q8 ("+q") */
    for (int layout = 1; layout >= 0; layout--)
        for (int with_q = 0; with_q < 2; with_q++) {
            auto call = [&](int c) {
                if (with_q && lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, dx, 1, k, dxq, dxd, NULL, st) != LRUN_OK)
                    return false;
                lrun_k_gemv_part part = {layout ? ds[c] : dg[c], rb, n, dy};
                return lrun_k_gemv_q8x(t, &part, 1, k, dxq, dxd, 1, LRUN_K_GEMV_STORE, layout, st) == LRUN_OK;
            };
            CK(cudaMemset(dy, 0xff, n * 4));
            if (!call(0)) {
                printf("# lib q8x: %s\n", lrun_last_error());
                continue;
            }
            const double us = time_calls(tm, st, copies, 0, call), usg = time_calls(tm, st, copies, 1, call);
            report(layout ? (with_q ? "lib q8x split +q" : "lib q8x split")
                          : (with_q ? "lib q8x GGUF +q" : "lib q8x GGUF"),
                   us, usg, 1);
        }

    /* m > 1 (small batches): the default kernel on GGUF rows (f32 x, the
     * engine's choice before q8x) against the q8x kernel on split rows
     * with its quantize launch, graph-replayed µs per call; y not checked here
     * (test_gemv_split_q8x_gpu does) */
    {
        const int64_t m_max = 8;
        float *dxm, *dym;
        int8_t *dxqm;
        float *dxdm;
        CK(cudaMalloc(&dxm, m_max * k * 4));
        CK(cudaMalloc(&dym, m_max * n * 4));
        CK(cudaMalloc(&dxqm, m_max * k));
        CK(cudaMalloc(&dxdm, m_max * (k / 32) * 4));
        for (int64_t i = 0; i < m_max; i++) CK(cudaMemcpy(dxm + i * k, dx, k * 4, cudaMemcpyDeviceToDevice));
        static const int64_t ms[] = {2, 4, 8};
        for (int mi = 0; mi < 3; mi++) {
            const int64_t m = ms[mi];
            auto cur = [&](int c) {
                lrun_k_gemv_part part = {dg[c], rb, n, dym};
                return lrun_k_gemv_multi(t, &part, 1, k, dxm, m, LRUN_K_GEMV_STORE, st) == LRUN_OK;
            };
            auto q8x = [&](int c) {
                if (lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, dxm, m, k, dxqm, dxdm, NULL, st) != LRUN_OK) return false;
                lrun_k_gemv_part part = {ds[c], rb, n, dym};
                return lrun_k_gemv_q8x(t, &part, 1, k, dxqm, dxdm, m, LRUN_K_GEMV_STORE, 1, st) == LRUN_OK;
            };
            const double uc = cur(0) ? time_calls(tm, st, copies, 1, cur) : -1;
            const double uq = q8x(0) ? time_calls(tm, st, copies, 1, q8x) : -1;
            printf("%-6s %11s  m %lld: graph us/call cur (GGUF) %8.2f, lib q8x split +q %8.2f (%.2fx)\n",
                   lrun_dtype_name(t), (std::to_string(n) + "x" + std::to_string(k)).c_str(), (long long)m, uc, uq,
                   uq > 0 ? uc / uq : 0.0);
        }
        CK(cudaFree(dxm));
        CK(cudaFree(dym));
        CK(cudaFree(dxqm));
        CK(cudaFree(dxdm));
    }

    const cand *cs = t == LRUN_DTYPE_Q8_0 ? cands_q8 : cands_q4;
    const int nc = t == LRUN_DTYPE_Q8_0 ? (int)(sizeof cands_q8 / sizeof *cands_q8)
                                        : (int)(sizeof cands_q4 / sizeof *cands_q4);
    for (int i = 0; i < nc; i++) {
        const cand &cd = cs[i];
        gq_args a = {};
        a.rb = rb, a.n = n, a.k = k, a.x = dx, a.xq = dxq, a.xd = dxd, a.y = dy;
        for (int with_q = 0; with_q < (cd.xm == XM_Q8G ? 2 : 1); with_q++) {
            auto call = [&](int c) {
                if (with_q && lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, dx, 1, k, dxq, dxd, NULL, st) != LRUN_OK) return false;
                gq_args ac = a;
                ac.w = ds[c];
                return cd.launch(ac, cd.persist, st) != 0;
            };
            CK(cudaMemset(dy, 0xff, n * 4));
            if (!call(0)) { /* checked apart from the timed runs, and outside a capture */
                printf("# %s: launch failed: %s\n", cd.name, cudaGetErrorString(cudaGetLastError()));
                continue;
            }
            const double us = time_calls(tm, st, copies, 0, call), usg = time_calls(tm, st, copies, 1, call);
            CK(cudaStreamSynchronize(st));
            char name[48];
            snprintf(name, sizeof name, "%s%s", cd.name, with_q ? " +q" : "");
            report(name, us, usg, cd.xm != XM_F32);
        }
    }
    for (int c = 0; c < copies; c++) {
        CK(cudaFree(dg[c]));
        CK(cudaFree(ds[c]));
    }
    CK(cudaFree(dx));
    CK(cudaFree(dy));
    CK(cudaFree(dxq));
    CK(cudaFree(dxd));
}

int main(int argc, char **argv)
{
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    timing tm;
    CK(cudaEventCreate(&tm.e0));
    CK(cudaEventCreate(&tm.e1));
    const double rd = read_rate(st);
    printf("# %s, %d SMs; read rate %.1f GB/s (1 GiB, 16-byte loads); GB/s = weight bytes / time per call\n",
           prop.name, prop.multiProcessorCount, rd);
    printf("# rel diff = max|y - ref| / max|ref|: vs x (f64 with x), vs xq (f64 with the q8-rounded x), vs cur\n");
    printf("# us/call, GB/s: launched one by one from the host; graph: the same calls replayed from a CUDA graph\n");
    printf("# %-4s %11s  %-20s %8s %7s %8s %7s %6s   %-8s  %-8s  %-8s\n", "type", "n x k", "kernel", "us/call", "GB/s",
           "graph us", "GB/s", "%read", "vs x", "vs xq", "vs cur");
    static const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {32000, 4096}};
    const char *only = argc > 1 ? argv[1] : NULL; /* "q8_0" or "q4_0": one type */
    for (int ti = 0; ti < 2; ti++) {
        const lrun_dtype t = ti == 0 ? LRUN_DTYPE_Q8_0 : LRUN_DTYPE_Q4_0;
        if (only && strcmp(only, lrun_dtype_name(t)) != 0) continue;
        for (int si = 0; si < 4; si++) bench_shape(t, shapes[si][0], shapes[si][1], rd, st, tm);
    }
    return 0;
}
