/* codec2_proto.cu — the GPU side of the codec2 study (docs/packed.md "A
 * faster code for mode 3 (study, session 14)"): the prototype format's
 * decode (codec2_lane.h, A = 8 "pfor-2p" and A = 6 "b6-2p") in two kernels
 * shaped like mode 3's (kernels/packed_gemv.cu), NOT wired into the engine:
 *
 *   c2_decode_rows_k  one warp per codec block of 1024: each lane decodes its 8
 *                     elements of each of the 4 groups of 256 with 16-byte stores,
 *                     then the warp patches the block's exceptions in place
 *   c2_gemv_k         batch-1 fused GEMV: a CUDA block of 8 warps decodes rb rows
 *                     (rb·k ≤ 24576 elements) into a shared-memory tile, patches,
 *                     then gemv_tiles' product (8-element units over 256 threads,
 *                     FMA with x in f32, butterfly, the warps' sums in order)
 *   c2_plain_gemv_k   the same product on plain bf16 weights read from global
 *                     memory: the baseline of the same shape and arithmetic, so
 *                     the fused y must equal it bit for bit
 *
 * Without a GPU: tests/bench/codec2_study.sh compiles this for sm_90 with
 * -DC2_SASS_HOT (C2_ASSUME: the common case, one patch pass) and counts
 * the SASS per element by pipe. On a GPU (one command):
 *   nvcc -O3 -std=c++17 -arch=sm_90 -Itests/bench tests/bench/codec2_proto.cu -o /tmp/codec2_proto && /tmp/codec2_proto
 * prints, for an 11008×4096 and a 4096×11008 trained-like bf16 matrix, A = 8
 * and 6: the ratio, decode_rows bit-exact against the input and its GB/s,
 * the fused GEMV bit-exact against the plain kernel, and both times (µs,
 * weights rotated over copies of ≥ 256 MB so no call finds them in L2). */
#include "codec2_encode.h"

#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>

#define C2_WARPS 8

/* ---------------------------------------------------------------- the warp's decode of one codec block */

/* Block b's elements p in [plo, phi) into bdst[p] (codec2_lane.h's lane
 * functions; the ballot and barriers are the kernel's own): the lanes'
 * 16-byte stores, then, once the warp's stores are seen, the patch passes,
 * lane j taking exception base + j. The block's table entries are asked for
 * first, so the patch's chain of loads (table, position bytes, codes)
 * starts while the lanes decode. */
template <int A>
__device__ __forceinline__ void c2_decode_block(const uint8_t *P, const c2_layout &L, uint64_t b, uint16_t *bdst,
                                                int plo, int phi)
{
    const uint32_t lane = threadIdx.x & 31;
    const c2_block B = c2_block_at(P, &L, A, b);
    c2_lane_block(P, &L, A, b, lane, bdst, plo, phi);
    __syncwarp();
#ifndef C2_COUNT_NO_PATCH /* codec2_study.sh: the lanes' decode counted alone */
    C2_ASSUME(B.count > 0 && B.count <= 32);
    uint32_t run = 0;
    for (uint32_t base = 0; base < B.count; base += 32) {
        const c2_exc x = c2_exc_load(&B, A, base + lane);
        const uint32_t m = __ballot_sync(0xffffffffu, x.act && x.code == A - 1);
        C2_ASSUME(m == 0);
        if (x.act) c2_exc_apply(&L, &B, A, &x, run + __popc(m & ((1u << lane) - 1)), bdst, plo, phi);
        run += __popc(m);
    }
#endif
    __syncwarp();
}

/* ---------------------------------------------------------------- kernels */

template <int A> __global__ void c2_decode_rows_k(const uint8_t *P, c2_layout L, uint16_t *out)
{
    const uint64_t b = (uint64_t)blockIdx.x * C2_WARPS + threadIdx.x / 32;
    if (b * C2_BLOCK >= L.n) return; /* whole warps */
    const uint64_t left = L.n - b * C2_BLOCK;
    c2_decode_block<A>(P, L, b, out + b * C2_BLOCK, 0, left < C2_BLOCK ? (int)left : C2_BLOCK);
}

/* y[0..rb) = the rb rows of k at w (shared tile or global memory) times x,
 * gemv_tiles' arithmetic: thread t takes the 8-element units t, t + 256, …
 * of each row, each unit's chain of 8 FMAs from 0 added to the row's sum,
 * then a butterfly per warp and the 8 warps' sums in order. Both kernels
 * below call it, so the fused y equals the plain one bit for bit when the
 * decode is exact. red: 8·C2_MAX_RB floats of shared memory. */
#define C2_MAX_RB 8
__device__ __forceinline__ void c2_rows_dot(const uint16_t *w, int rb, int k, const float *x, float *red, float *y)
{
    float acc[C2_MAX_RB];
#pragma unroll
    for (int r = 0; r < C2_MAX_RB; r++) acc[r] = 0.f;
    for (int u = (int)threadIdx.x; u < k / 8; u += 256) {
        const float4 x0 = *(const float4 *)(x + 8 * u), x1 = *(const float4 *)(x + 8 * u + 4);
#pragma unroll
        for (int r = 0; r < C2_MAX_RB; r++) {
            if (r >= rb) break;
            const uint4 q = *(const uint4 *)(w + (size_t)r * k + 8 * u);
            float s = 0.f;
            s = fmaf(__uint_as_float(q.x << 16), x0.x, s);
            s = fmaf(__uint_as_float(q.x & 0xffff0000u), x0.y, s);
            s = fmaf(__uint_as_float(q.y << 16), x0.z, s);
            s = fmaf(__uint_as_float(q.y & 0xffff0000u), x0.w, s);
            s = fmaf(__uint_as_float(q.z << 16), x1.x, s);
            s = fmaf(__uint_as_float(q.z & 0xffff0000u), x1.y, s);
            s = fmaf(__uint_as_float(q.w << 16), x1.z, s);
            s = fmaf(__uint_as_float(q.w & 0xffff0000u), x1.w, s);
            acc[r] += s;
        }
    }
#pragma unroll
    for (int r = 0; r < C2_MAX_RB; r++) {
        if (r >= rb) break;
        float v = acc[r];
#pragma unroll
        for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if ((threadIdx.x & 31) == 0) red[(threadIdx.x / 32) * C2_MAX_RB + r] = v;
    }
    __syncthreads();
    if ((int)threadIdx.x < rb) {
        float v = 0.f;
        for (int i = 0; i < C2_WARPS; i++) v += red[i * C2_MAX_RB + threadIdx.x];
        y[threadIdx.x] = v;
    }
}

template <int A>
__global__ void __launch_bounds__(256)
    c2_gemv_k(const uint8_t *P, c2_layout L, int k, int rb, const float *x, float *y)
{
    extern __shared__ uint4 c2_tile_raw[];
    __shared__ float red[C2_WARPS * C2_MAX_RB];
    uint16_t *tile = (uint16_t *)c2_tile_raw; /* (rb, k) bf16 */
    const uint64_t lo = (uint64_t)blockIdx.x * rb * k, hi = lo + (uint64_t)rb * k;
    const uint32_t warp = threadIdx.x / 32;
    for (uint64_t b = lo / C2_BLOCK + warp; b * C2_BLOCK < hi; b += C2_WARPS) {
        const int off = (int)((int64_t)(b * C2_BLOCK) - (int64_t)lo); /* the block's element 0 in the tile */
        c2_decode_block<A>(P, L, b, tile + off, -off, (int)(hi - lo) - off);
    }
    __syncthreads();
    c2_rows_dot(tile, rb, k, x, red, y + (size_t)blockIdx.x * rb);
}

__global__ void __launch_bounds__(256) c2_plain_gemv_k(const uint16_t *w, int k, int rb, const float *x, float *y)
{
    __shared__ float red[C2_WARPS * C2_MAX_RB];
    c2_rows_dot(w + (size_t)blockIdx.x * rb * k, rb, k, x, red, y + (size_t)blockIdx.x * rb);
}

/* ---------------------------------------------------------------- host: checks and times */

#define CK(call)                                                                                                     \
    do {                                                                                                             \
        cudaError_t e_ = (call);                                                                                     \
        if (e_ != cudaSuccess) {                                                                                     \
            fprintf(stderr, "codec2_proto: %s: %s (%s:%d)\n", #call, cudaGetErrorString(e_), __FILE__, __LINE__);    \
            exit(1);                                                                                                 \
        }                                                                                                            \
    } while (0)

template <int A> static int run_shape(int n, int k, int iters)
{
    const uint64_t ne = (uint64_t)n * k;
    uint16_t *v = (uint16_t *)malloc(ne * 2);
    trained(v, (uint64_t)n, (uint64_t)k);
    c2_packed pk;
    if (c2_encode(v, ne, (uint32_t)A, &pk)) return 1;
    const int rb = c2_rows_per_block(k);
    if (n % rb) {
        fprintf(stderr, "codec2_proto: %d rows are not a multiple of %d rows a block\n", n, rb);
        return 1;
    }
    const size_t copies_p = (size_t)(256e6 / (double)pk.bytes) + 1, copies_w = (size_t)(256e6 / (double)(ne * 2)) + 1;
    uint8_t *dP;
    uint16_t *dW, *dOut;
    float *dx, *dy, *dy2;
    const size_t pstride = (pk.bytes + 255) / 256 * 256;
    CK(cudaMalloc(&dP, pstride * copies_p));
    CK(cudaMalloc(&dW, ne * 2 * copies_w));
    CK(cudaMalloc(&dOut, ne * 2));
    CK(cudaMalloc(&dx, (size_t)k * 4));
    CK(cudaMalloc(&dy, (size_t)n * 4));
    CK(cudaMalloc(&dy2, (size_t)n * 4));
    for (size_t c = 0; c < copies_p; c++) CK(cudaMemcpy(dP + c * pstride, pk.buf, pk.bytes, cudaMemcpyHostToDevice));
    for (size_t c = 0; c < copies_w; c++) CK(cudaMemcpy(dW + c * ne, v, ne * 2, cudaMemcpyHostToDevice));
    float *hx = (float *)malloc((size_t)k * 4);
    for (int i = 0; i < k; i++) hx[i] = (float)gauss();
    CK(cudaMemcpy(dx, hx, (size_t)k * 4, cudaMemcpyHostToDevice));
    const uint64_t nb = (ne + C2_BLOCK - 1) / C2_BLOCK;
    const unsigned dgrid = (unsigned)((nb + C2_WARPS - 1) / C2_WARPS), ggrid = (unsigned)(n / rb);
    const size_t smem = (size_t)rb * k * 2;
    if (smem > 48 * 1024)
        CK(cudaFuncSetAttribute(c2_gemv_k<A>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CK(cudaMemset(dOut, 0xff, ne * 2));
    if (A == 8) c2_decode_rows_k<8><<<dgrid, 256>>>(dP, pk.lay, dOut);
    else c2_decode_rows_k<6><<<dgrid, 256>>>(dP, pk.lay, dOut);
    CK(cudaGetLastError());
    uint16_t *back = (uint16_t *)malloc(ne * 2);
    CK(cudaMemcpy(back, dOut, ne * 2, cudaMemcpyDeviceToHost));
    const int dec_ok = !memcmp(back, v, ne * 2);
    c2_gemv_k<A><<<ggrid, 256, smem>>>(dP, pk.lay, k, rb, dx, dy);
    c2_plain_gemv_k<<<ggrid, 256>>>(dW, k, rb, dx, dy2);
    CK(cudaGetLastError());
    float *y1 = (float *)malloc((size_t)n * 4), *y2 = (float *)malloc((size_t)n * 4);
    CK(cudaMemcpy(y1, dy, (size_t)n * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(y2, dy2, (size_t)n * 4, cudaMemcpyDeviceToHost));
    const int gemv_ok = !memcmp(y1, y2, (size_t)n * 4);
    cudaEvent_t t0, t1;
    CK(cudaEventCreate(&t0));
    CK(cudaEventCreate(&t1));
    float ms_plain, ms_fused, ms_dec;
    CK(cudaEventRecord(t0));
    for (int i = 0; i < iters; i++) c2_plain_gemv_k<<<ggrid, 256>>>(dW + (i % copies_w) * ne, k, rb, dx, dy2);
    CK(cudaEventRecord(t1));
    CK(cudaEventSynchronize(t1));
    CK(cudaEventElapsedTime(&ms_plain, t0, t1));
    CK(cudaEventRecord(t0));
    for (int i = 0; i < iters; i++)
        c2_gemv_k<A><<<ggrid, 256, smem>>>(dP + (i % copies_p) * pstride, pk.lay, k, rb, dx, dy);
    CK(cudaEventRecord(t1));
    CK(cudaEventSynchronize(t1));
    CK(cudaEventElapsedTime(&ms_fused, t0, t1));
    CK(cudaEventRecord(t0));
    for (int i = 0; i < iters; i++) {
        if (A == 8) c2_decode_rows_k<8><<<dgrid, 256>>>(dP + (i % copies_p) * pstride, pk.lay, dOut);
        else c2_decode_rows_k<6><<<dgrid, 256>>>(dP + (i % copies_p) * pstride, pk.lay, dOut);
    }
    CK(cudaEventRecord(t1));
    CK(cudaEventSynchronize(t1));
    CK(cudaEventElapsedTime(&ms_dec, t0, t1));
    CK(cudaGetLastError());
    const double up = 1e3 * ms_plain / iters, uf = 1e3 * ms_fused / iters, ud = 1e3 * ms_dec / iters;
    printf("%5d x %-5d %s ratio %.4f | decode_rows %s %7.1f us %6.0f GB/s plain out | plain GEMV (same product) "
           "%6.1f us | "
           "fused %s %6.1f us = %.2fx plain speed\n",
           n, k, A == 8 ? "pfor-2p" : "b6-2p  ", (double)pk.bytes / (2.0 * (double)ne),
           dec_ok ? "bit-exact" : "WRONG", ud, (double)ne * 2 / ud / 1e3, up, gemv_ok ? "bit-exact" : "WRONG", uf,
           up / uf);
    cudaFree(dP), cudaFree(dW), cudaFree(dOut), cudaFree(dx), cudaFree(dy), cudaFree(dy2);
    free(v), free(back), free(hx), free(y1), free(y2), free(pk.buf);
    return dec_ok && gemv_ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    const int iters = argc > 1 ? atoi(argv[1]) : 200;
    int bad = 0;
    bad |= run_shape<8>(11008, 4096, iters);
    bad |= run_shape<8>(4096, 11008, iters);
    bad |= run_shape<6>(11008, 4096, iters);
    bad |= run_shape<6>(4096, 11008, iters);
    printf("%s\n", bad ? "FAIL" : "PASS");
    return bad;
}
