/* packed_decode.cu — packed bf16/f16 → plain values (layout: runtime/packed/codec.h). */
#include "packed_decode.cuh"

#include "packed/codec.h"

struct packed_args {
    const uint8_t *in;           /* the packed tensor, from its header */
    uint16_t *dst;               /* (count) values first .. first+count-1 */
    uint64_t n, first, count;
    uint64_t rest, hi, code1, table, code2, esc; /* section offsets, bytes */
    int is_bf16;
    int rest_aligned;            /* 1: in + rest is 4-byte aligned (32-bit loads of kept bytes) */
    int dst_aligned;             /* 1: dst is 8-byte aligned (64-bit stores) */
    uint32_t book1;              /* tier-1 exponents, byte k = code k (shifts, not an indexed array: */
    uint64_t book2;              /* tier-2 exponents    an array in params would be copied to local memory) */
};

__device__ __forceinline__ uint64_t ld64_bytes(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

/* Exclusive prefix sum of v over the block, and the block's total in *total. */
__device__ __forceinline__ unsigned block_scan(unsigned v, unsigned *warp_sums, unsigned *total)
{
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned x = v;
    for (int d = 1; d < 32; d <<= 1) {
        unsigned y = __shfl_up_sync(0xffffffffu, x, d);
        if (lane >= (unsigned)d) x += y;
    }
    if (lane == 31) warp_sums[warp] = x;
    __syncthreads();
    if (warp == 0) {
        unsigned s = lane < LRUN_K_PACKED_THREADS / 32 ? warp_sums[lane] : 0;
        for (int d = 1; d < 32; d <<= 1) {
            unsigned y = __shfl_up_sync(0xffffffffu, s, d);
            if (lane >= (unsigned)d) s += y;
        }
        if (lane < LRUN_K_PACKED_THREADS / 32) warp_sums[lane] = s; /* inclusive per warp */
    }
    __syncthreads();
    const unsigned before = (warp ? warp_sums[warp - 1] : 0) + x - v;
    *total = warp_sums[LRUN_K_PACKED_THREADS / 32 - 1];
    __syncthreads(); /* warp_sums is reused by the next scan */
    return before;
}

__global__ void __launch_bounds__(LRUN_K_PACKED_THREADS) packed_decode_blocks(packed_args a, uint64_t b0)
{
    __shared__ unsigned warp_sums[LRUN_K_PACKED_THREADS / 32];
    const uint64_t b = b0 + blockIdx.x, base = b * LRUN_K_PACKED_BLOCK, i0 = base + 4 * threadIdx.x;
    const uint8_t *in = a.in;
    const int m = i0 >= a.n ? 0 : (a.n - i0 >= 4 ? 4 : (int)(a.n - i0)); /* elements of this thread */

    unsigned c1 = m ? in[a.code1 + (i0 >> 2)] : 0, esc1 = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) esc1 += k < m && ((c1 >> (2 * k)) & 3u) == 3u;
    unsigned n2;
    const unsigned p2 = block_scan(esc1, warp_sums, &n2);
    const uint8_t *tb = in + a.table + 16 * b;
    const uint8_t *code2 = in + a.code2 + ld64_bytes(tb), *esc = in + a.esc + ld64_bytes(tb + 8);
    const unsigned len2 = (n2 * 3 + 7) / 8;

    unsigned c2[4] = {0, 0, 0, 0}, esc2 = 0, j = p2;
#pragma unroll /* constant indices keep c2, rest and out in registers */
    for (int k = 0; k < 4; k++) {
        if (k >= m || ((c1 >> (2 * k)) & 3u) != 3u) continue;
        const unsigned bit = 3 * j++, byte = bit >> 3;
        unsigned v = code2[byte];
        if (byte + 1 < len2) v |= (unsigned)code2[byte + 1] << 8;
        c2[k] = (v >> (bit & 7)) & 7u;
        esc2 += c2[k] == 7u;
    }
    unsigned n3;
    unsigned p3 = block_scan(esc2, warp_sums, &n3);
    if (!m) return;

    unsigned hi = 0;
    if (!a.is_bf16) { /* 12 bits at bit 12t of the block's part of the hi stream */
        const uint64_t bit = 3 * i0, byte = bit >> 3;
        const unsigned last = (unsigned)((3 * a.n + 7) / 8 - 1);
        unsigned v = in[a.hi + byte];
        if (byte + 1 <= last) v |= (unsigned)in[a.hi + byte + 1] << 8;
        hi = v >> (bit & 7);
    }
    uint16_t out[4];
    uint8_t rest[4];
    if (m == 4 && a.rest_aligned) { /* one 32-bit load of the four kept bytes */
        const uchar4 r4 = *(const uchar4 *)(in + a.rest + i0);
        rest[0] = r4.x, rest[1] = r4.y, rest[2] = r4.z, rest[3] = r4.w;
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++) rest[k] = k < m ? in[a.rest + i0 + k] : 0;
    }
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const unsigned c = k < m ? (c1 >> (2 * k)) & 3u : 0u; /* past the tensor's end: any value, never stored */
        unsigned e;
        if (c < 3) e = (a.book1 >> (8 * c)) & 0xffu;
        else if (c2[k] < 7) e = (unsigned)(a.book2 >> (8 * c2[k])) & 0xffu;
        else e = esc[p3++];
        const unsigned r = rest[k];
        if (a.is_bf16) out[k] = (uint16_t)(((r & 0x80u) << 8) | (e << 7) | (r & 0x7fu));
        else {
            const unsigned h = (hi >> (3 * k)) & 7u;
            out[k] = (uint16_t)(((h & 4u) << 13) | (e << 10) | ((h & 3u) << 8) | r);
        }
    }
    if (m == 4 && i0 >= a.first && i0 + 4 <= a.first + a.count && ((i0 - a.first) & 3) == 0 && a.dst_aligned) {
        /* one 8-byte store: dst + (i0 - first) is 8-byte aligned here */
        *(uint2 *)(a.dst + (i0 - a.first)) = make_uint2((uint32_t)out[0] | ((uint32_t)out[1] << 16),
                                                        (uint32_t)out[2] | ((uint32_t)out[3] << 16));
        return;
    }
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const uint64_t i = i0 + k;
        if (k < m && i >= a.first && i < a.first + a.count) a.dst[i - a.first] = out[k];
    }
}

extern "C" lrun_status lrun_k_packed_decode(uint16_t *dst, const void *packed, const lrun_packed_layout *lay,
                                            uint64_t first, uint64_t count, void *stream)
{
    static const char op[] = "lrun_k_packed_decode";
    if (!dst || !packed || !lay) return lrun_fail(LRUN_E_ARG, "%s: dst, packed and lay must not be NULL", op);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    if (first > lay->n || count > lay->n - first)
        return lrun_fail(LRUN_E_ARG, "%s: range %llu +%llu is outside the tensor's %llu elements", op,
                         (unsigned long long)first, (unsigned long long)count, (unsigned long long)lay->n);
    if (lay->codec == LRUN_PACKED_CODEC_PEX2) /* its own kernel (packed_pex2.cu) */
        return lrun_k_pex2_decode(dst, packed, lay, first, count, stream);
    if (lay->codec != LRUN_PACKED_CODEC_EXP)
        return lrun_fail(LRUN_E_ARG, "%s: codec %d is neither PEX1 nor PEX2 (not a validated layout)", op,
                         lay->codec);
    if (!lrun_packed_dtype_ok(lay->dtype)) return lrun_fail(LRUN_E_ARG, "%s: dtype %d is not bf16 or f16", op, lay->dtype);
    if (count == 0) return LRUN_OK;
    packed_args a = {};
    a.in = (const uint8_t *)packed;
    a.dst = dst;
    a.n = lay->n, a.first = first, a.count = count;
    a.rest = lay->rest, a.hi = lay->hi, a.code1 = lay->code1, a.table = lay->table, a.code2 = lay->code2, a.esc = lay->esc;
    a.is_bf16 = lay->dtype == LRUN_DTYPE_BF16;
    a.rest_aligned = ((uintptr_t)packed + lay->rest) % 4 == 0;
    a.dst_aligned = (uintptr_t)dst % 8 == 0;
    for (int k = 0; k < LRUN_PACKED_N1; k++) a.book1 |= (uint32_t)lay->book1[k] << (8 * k);
    for (int k = 0; k < LRUN_PACKED_N2; k++) a.book2 |= (uint64_t)lay->book2[k] << (8 * k);
    /* the codebooks come from the host: no read-back, the launch stays asynchronous */
    const uint64_t b0 = first / LRUN_K_PACKED_BLOCK, b1 = (first + count + LRUN_K_PACKED_BLOCK - 1) / LRUN_K_PACKED_BLOCK;
    for (uint64_t b = b0; b < b1; b += 0x7fffffffull) { /* grid.x is at most 2^31-1 blocks */
        const uint64_t nb = b1 - b < 0x7fffffffull ? b1 - b : 0x7fffffffull;
        packed_decode_blocks<<<(unsigned)nb, LRUN_K_PACKED_THREADS, 0, (cudaStream_t)stream>>>(a, b);
    }
    return lrun_k_launched(op);
}
