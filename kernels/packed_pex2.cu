/* packed_pex2.cu — PEX2 packed bf16 weights (runtime/packed/codec_pex2.h)
 * decoded on the GPU (see packed_pex2.cuh): into plain values (a slot, a
 * range, a prefill GEMM's weight), into f32 embedding rows, and on chip
 * inside the fused GEMV of decode. The lane's work: packed_pex2_lane.h. */
#include "packed_pex2.cuh"
#include "packed_gemv_lane.h" /* pg_block_rows, pg_rows_per_block, pg_grid, pg_embed_warps, pg_embed_job_of */
#include "packed_gemv_product.cuh"
#include "packed_pex2_lane.h"

#include <stdlib.h>
#include <string.h>

static_assert(PX_BLOCK == LRUN_PEX2_BLOCK && PX_GROUP == LRUN_PEX2_GROUP, "codec_pex2.h's block and group");
static_assert(PX_BLOCK == PG_BLOCK, "the fused GEMV's row mapping (pg_block_rows) counts codec blocks of 1024");

// ---------------------------------------------------------------- a warp's codec block

/* The kernels' destinations: plain 16-bit values or f32 rows (packed_pex2_lane.h). */
static __device__ __forceinline__ void px_lane_pass(const px_tensor &t, uint64_t b, const px_span &sp, uint16_t *d,
                                                    bool a16, unsigned lane)
{
    px_lane_pass_u16(&t, b, &sp, d, a16, lane);
}
static __device__ __forceinline__ void px_lane_pass(const px_tensor &t, uint64_t b, const px_span &sp, float *d,
                                                    bool a16, unsigned lane)
{
    px_lane_pass_f32(&t, b, &sp, d, a16, lane);
}
static __device__ __forceinline__ void px_patch(uint16_t *v, uint32_t e) { px_patch_u16(v, e); }
static __device__ __forceinline__ void px_patch(float *v, uint32_t e) { px_patch_f32(v, e); }

/* The patch passes of block B (its lanes' stores seen by the warp): lane j
 * takes exception base + j and rewrites d[doff + position] when the
 * position is in [plo, phi); a ballot counts the far ones before it. */
template <typename D>
static __device__ __forceinline__ void px_patch_block(const px_tensor &t, const px_block &B, int plo, int phi, D *d,
                                                      int64_t doff, unsigned lane)
{
    uint32_t run = 0; /* far exceptions of the passes before */
    PX_ASSUME(B.count > 0 && B.count <= 32);
    for (uint32_t base = 0; base < B.count; base += 32) {
        const px_exc x = px_exc_load(&B, base + lane);
        const uint32_t m = __ballot_sync(0xffffffffu, x.act && x.code == 7u);
        PX_ASSUME(m == 0 && (int)x.pos >= plo && (int)x.pos < phi);
        if (x.act && (int)x.pos >= plo && (int)x.pos < phi)
            px_patch(d + (doff + (int64_t)x.pos), px_exc_exp(&t, &B, &x, run + __popc(m & ((1u << lane) - 1))));
        run += __popc(m);
    }
}

/* The whole warp decodes codec block b of t into d[sp.doff + p] for p in
 * [sp.plo, sp.phi) (shared or global memory): the lanes' stores, then, once
 * the warp's stores are seen (__syncwarp orders the warp's memory), the
 * patch passes, lane j taking exception base + j. The block's table entries
 * are read first, so the patch's chain of loads (table, position byte,
 * code) starts while the lanes decode (codec2_proto.cu's order). a16: the
 * destination of the block's element 0 is 16-byte aligned.
 * test_packed_pex2_emu.c replays this loop on the host, lane by lane. */
template <typename D>
static __device__ __forceinline__ void px_decode_block(const px_tensor &t, uint64_t b, const px_span &sp, D *d,
                                                       bool a16, unsigned lane)
{
    const px_block B = px_block_at(&t, b);
    px_lane_pass(t, b, sp, d, a16, lane);
    __syncwarp();
    px_patch_block(t, B, sp.plo, sp.phi, d, sp.doff, lane);
    __syncwarp(); /* the patched values are seen by the warp (and the stage reused) */
}

// ---------------------------------------------------------------- decode a range into global memory

/* Warp w of block i decodes codec block cb0 + 8i + w, keeping [e0, e1) into dst[element - e0]. */
__global__ void __launch_bounds__(LRUN_K_PX_THREADS)
    px_decode_k(px_tensor t, uint64_t e0, uint64_t e1, uint64_t cb0, uint16_t *dst)
{
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint64_t b = cb0 + (uint64_t)blockIdx.x * (LRUN_K_PX_THREADS / 32) + warp;
    if (b * PX_BLOCK >= e1) return; /* the whole warp: no block barrier below */
    const px_span sp = px_span_of(b, e0, e1);
    const bool a16 = (((uintptr_t)dst + 2 * sp.doff) & 15) == 0;
    px_decode_block(t, b, sp, dst, a16, lane);
}

/* The checks every PEX2 launcher shares: LRUN_E_ARG naming op. */
static lrun_status px_check(const char *op, const void *packed, const lrun_packed_layout *lay)
{
    if (!packed || !lay) return lrun_fail(LRUN_E_ARG, "%s: packed or lay is NULL", op);
    if (lay->codec != LRUN_PACKED_CODEC_PEX2 || lay->pex2.n != lay->n || lay->dtype != LRUN_DTYPE_BF16)
        return lrun_fail(LRUN_E_ARG, "%s: the layout is not a validated PEX2 bf16 tensor's", op);
    if ((uintptr_t)packed % 16 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: the packed tensor must start on a 16-byte boundary", op);
    return LRUN_OK;
}

extern "C" lrun_status lrun_k_pex2_decode(uint16_t *dst, const void *packed, const lrun_packed_layout *lay,
                                          uint64_t first, uint64_t count, void *stream)
{
    static const char op[] = "lrun_k_pex2_decode";
    lrun_status s = px_check(op, packed, lay);
    if (s != LRUN_OK) return s;
    if (!dst || ((uintptr_t)dst & 1) != 0) return lrun_fail(LRUN_E_ARG, "%s: dst is NULL or not 2-byte aligned", op);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    if (first > lay->n || count > lay->n - first)
        return lrun_fail(LRUN_E_ARG, "%s: range %llu +%llu is outside the tensor's %llu elements", op,
                         (unsigned long long)first, (unsigned long long)count, (unsigned long long)lay->n);
    if (count == 0) return LRUN_OK;
    const px_tensor t = px_tensor_of(packed, lay);
    const uint64_t e0 = first, e1 = first + count;
    const uint64_t cb_first = e0 / PX_BLOCK, cb_end = (e1 - 1) / PX_BLOCK + 1;
    const uint64_t per = LRUN_K_PX_THREADS / 32, chunk = (uint64_t)LRUN_K_MAX_GRID * per;
    for (uint64_t cb = cb_first; cb < cb_end; cb += chunk) {
        const uint64_t nb = cb_end - cb < chunk ? cb_end - cb : chunk;
        px_decode_k<<<(unsigned)((nb + per - 1) / per), LRUN_K_PX_THREADS, 0, (cudaStream_t)stream>>>(t, e0, e1, cb,
                                                                                                      dst);
        if ((s = lrun_k_launched(op)) != LRUN_OK) return s;
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- the embedding gather

/* Warp w of the grid: token w / nw, the (w % nw)-th codec block of its row
 * ids[token] (pg_embed_job_of: the same mapping as PEX1's gather), decoded
 * straight into that token's row of out as f32. */
__global__ void __launch_bounds__(LRUN_K_PX_THREADS)
    px_embed_k(px_tensor t, int64_t k, int64_t rows, const int32_t *__restrict__ ids, int64_t n_tok, int nw,
               float *__restrict__ out)
{
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t w = (int64_t)blockIdx.x * (LRUN_K_PX_THREADS / 32) + warp;
    if (w >= n_tok * nw) return; /* the whole warp: no block barrier below */
    const int64_t tok = w / nw;
    const int j = (int)(w % nw);
    const pg_embed_job J = pg_embed_job_of(ids[tok], j, rows, k); /* the same id in every lane */
    float *row = out + tok * k;
    if (!J.valid) pg_lane_zero_f32(row, j, k, lane); /* lrun_k_embed's row of zeros */
    else if (J.live) {
        const px_span sp = px_span_of(J.cb, J.e0, J.e1);
        px_decode_block(t, J.cb, sp, row, true, lane); /* row 16-byte aligned, k and doff multiples of 8 */
    }
}

extern "C" lrun_status lrun_k_pex2_embed(const void *packed, const lrun_packed_layout *lay, int64_t k,
                                         const int32_t *tokens, int64_t n_tok, float *out, void *stream)
{
    static const char op[] = "lrun_k_pex2_embed";
    lrun_status s = px_check(op, packed, lay);
    if (s != LRUN_OK) return s;
    if (k <= 0 || lay->n % (uint64_t)k != 0)
        return lrun_fail(LRUN_E_ARG, "%s: k %lld does not divide the table's %llu elements", op, (long long)k,
                         (unsigned long long)lay->n);
    if (k % 8 != 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: rows of %lld elements are not a multiple of 8", op, (long long)k);
    if (!tokens || !out || ((uintptr_t)out & 15) != 0)
        return lrun_fail(LRUN_E_ARG, "%s: tokens or out is NULL, or out is not 16-byte aligned", op);
    if (n_tok <= 0) return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld (must be > 0)", op, (long long)n_tok);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const int64_t rows = (int64_t)(lay->n / (uint64_t)k);
    const int nw = pg_embed_warps(k);
    const int64_t per = LRUN_K_PX_THREADS / 32;
    int64_t warps, total;
    if (__builtin_mul_overflow(n_tok, (int64_t)nw, &warps) || __builtin_mul_overflow(n_tok, k, &total) ||
        (warps + per - 1) / per > LRUN_K_MAX_GRID)
        return lrun_fail(LRUN_E_ARG, "%s: %lld tokens of %lld elements are too many for one launch", op,
                         (long long)n_tok, (long long)k);
    const px_tensor t = px_tensor_of(packed, lay);
    px_embed_k<<<(unsigned)((warps + per - 1) / per), LRUN_K_PX_THREADS, 0, (cudaStream_t)stream>>>(t, k, rows,
                                                                                                    tokens, n_tok, nw,
                                                                                                    out);
    return lrun_k_launched(op);
}

// ---------------------------------------------------------------- fused GEMV

/* The weights of one launch, concatenated by row blocks as lrun_k_gemv_multi's. */
struct px_parts {
    px_tensor t[LRUN_K_GEMV_MAX_PARTS];
    float *y[LRUN_K_GEMV_MAX_PARTS];  /* (m, n[p]) */
    int64_t n[LRUN_K_GEMV_MAX_PARTS]; /* rows */
    int64_t b0[LRUN_K_GEMV_MAX_PARTS + 1];
};

#define PX_SEL3(a, p) ((p) == 0 ? (a)[0] : ((p) == 1 ? (a)[1] : (a)[2]))

/* Blocks per SM the fused kernel is compiled for (__launch_bounds__): a
 * tile of 4 rows of 4096 (32 KiB) or 2 of 11008 (43 KiB) leaves room for 6
 * or 5 blocks in an H100 SM's 228 KiB, so registers must not allow fewer:
 * 65536 / (6 x 256) -> 40 registers at 256 threads (m <= 2; 74 and 64
 * before, 3 blocks), 85 at 128 (m >= 3: 80 already). The prototype's 32
 * registers and 6 blocks are what reached 0.85x of its plain GEMV. */
#define PX_MIN_BLOCKS 6
/* The pipelined decode (variant 2) holds two codec blocks' loads and table
 * entries: 62 registers and no spill at 4 blocks (at 5, 48 registers spill
 * 132-168 bytes), so 4 blocks of two blocks' loads each against 6 of one. */
#define PX_MIN_BLOCKS_PIPE 4

/* The warp's share of a segment's codec blocks in the fused GEMV: block cb
 * of t decoded into the segment's tile seg (rows from element e0 on; the
 * block's elements in [e0, e1) only), lanes' 16-byte stores then patches. */
static __device__ __forceinline__ void px_decode_tile(const px_tensor &t, uint64_t cb, uint64_t e0, uint64_t e1,
                                                      uint16_t *seg, unsigned lane)
{
    const px_block B = px_block_at(&t, cb); /* the patch's chain (table, position, code) starts first */
    const px_span sp = px_span_of(cb, e0, e1);
    uint16_t *bdst = seg + (int)sp.doff; /* doff > -PX_BLOCK: within a tile's reach */
    px_lane_pass_tile(&t, cb, sp.plo, sp.phi, bdst, lane);
    __syncwarp();
    px_patch_block(t, B, sp.plo, sp.phi, bdst, 0, lane);
    __syncwarp();
}

/* Variant 2's decode (px_variant): the warp's codec blocks cb0 + warp,
 * + NW, ... of one tensor's segment, software pipelined: block i + NW's
 * lane loads and table entry leave right after block i's stores, before
 * block i's patch, so the patch's chain of loads (table, position, code)
 * waits together with the next block's loads instead of before them. */
template <int NW>
static __device__ __forceinline__ void px_decode_seg_pipe(const px_tensor &t, uint64_t cb0, int nc, uint64_t e0,
                                                          uint64_t e1, uint16_t *seg, unsigned lane, unsigned warp)
{
    int i = (int)warp;
    if (i >= nc) return; /* the whole warp */
    px_span sp = px_span_of(cb0 + (uint64_t)i, e0, e1);
    px_tile_loads L;
    px_tile_load(&t, cb0 + (uint64_t)i, sp.plo, sp.phi, lane, &L);
    px_block B = px_block_at(&t, cb0 + (uint64_t)i);
    for (; i < nc; i += NW) {
        const px_span cur = sp;
        const px_block Bc = B;
        uint16_t *bdst = seg + (int)cur.doff;
        px_tile_store(&t, &L, cur.plo, cur.phi, bdst, lane);
        if (i + NW < nc) {
            const uint64_t nb = cb0 + (uint64_t)(i + NW);
            sp = px_span_of(nb, e0, e1);
            px_tile_load(&t, nb, sp.plo, sp.phi, lane, &L);
            B = px_block_at(&t, nb);
        }
        __syncwarp();
        px_patch_block(t, Bc, cur.plo, cur.phi, bdst, 0, lane);
        __syncwarp();
    }
}

/* Block i: rows row0 .. row0+rh-1 of part p (swiglu: of gate and of up),
 * decoded into the shared tile (rb rows of k) a codec block per warp at a
 * time, then pg_tile_product: lrun_k_gemv_multi's arithmetic and epilogue
 * on them, so y is bit-identical to it on the decoded weights. What keeps
 * it at 40 registers (docs/packed.md "PEX2 on CUDA"): the tensor of a codec
 * block is picked by a switch, not by selects, so each case reads its
 * layout from the parameters as constant operands instead of holding a
 * selected copy in registers; counters are 32-bit; the tile's lane pass
 * has no element path. V, the variant (px_variant): 0 and 2 take m = 1's
 * product units outermost (pg_tile_rows_bf16), 1 its rows (PEX1's order;
 * the same y); 2 pipelines the decode (px_decode_seg_pipe). */
template <int M, int NT, int V>
__global__ void __launch_bounds__(NT, V == 2 ? PX_MIN_BLOCKS_PIPE : PX_MIN_BLOCKS)
    px_gemv_tiles(const __grid_constant__ px_parts P, int64_t k, int rb, const float *__restrict__ x, bool xvec,
                  int mode)
{
    constexpr int NW = NT / 32;
    extern __shared__ __align__(16) uint8_t px_dyn[];
    uint16_t *tile = (uint16_t *)px_dyn; /* (rb, k) bf16 */
    __shared__ float red[NW][LRUN_K_PG_MAX_RB * M];
    lrun_k_pdl_trigger();

    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bool sw = mode == LRUN_K_GEMV_SWIGLU;
    const int rh = sw ? rb / 2 : rb;
    const pg_rows R = pg_block_rows(P.b0, P.n, blockIdx.x, k, rh);
    const int p = R.p, nc = (int)R.nc; /* nc <= rb·k / 1024 + 1 */
    /* the segments' codec blocks, a warp each */
    for (int s = 0; V == 2 && s < (sw ? 2 : 1); s++) {
        uint16_t *seg = tile + s * rh * (int)k;
        PX_ASSUME(!sw && p == 0); /* the count's build: one part, one case below */
        switch (sw ? s : p) {     /* the same in the whole block */
        case 0: px_decode_seg_pipe<NW>(P.t[0], R.cb0, nc, R.e0, R.e1, seg, lane, warp); break;
        case 1: px_decode_seg_pipe<NW>(P.t[1], R.cb0, nc, R.e0, R.e1, seg, lane, warp); break;
        default: px_decode_seg_pipe<NW>(P.t[2], R.cb0, nc, R.e0, R.e1, seg, lane, warp); break;
        }
    }
    for (int i = (int)warp; V != 2 && i < (sw ? 2 * nc : nc); i += NW) {
        const int s = i >= nc;
        const uint64_t cb = R.cb0 + (uint64_t)(i - s * nc);
        uint16_t *seg = tile + s * rh * (int)k;
        PX_ASSUME(!sw && p == 0); /* the count's build: one part, one case below */
        switch (sw ? s : p) {     /* the same in the whole warp */
        case 0: px_decode_tile(P.t[0], cb, R.e0, R.e1, seg, lane); break;
        case 1: px_decode_tile(P.t[1], cb, R.e0, R.e1, seg, lane); break;
        default: px_decode_tile(P.t[2], cb, R.e0, R.e1, seg, lane); break;
        }
    }
    __syncthreads();
    lrun_k_pdl_wait(); /* x is the previous kernel's output; the decode read only weights */
    pg_tile_product<true, M, NT, M == 1 && V != 1>(tile, rb, rh, sw, R.live, k, x, xvec, red, PX_SEL3(P.n, p),
                                                   PX_SEL3(P.y, p), R.row0, mode);
}

/* Lets px_gemv_tiles<M, NT, V> take the device's opt-in shared memory
 * (pg_smem_optin, with this kernel's cache). */
template <int M, int NT, int V> static cudaError_t px_smem_limit(size_t *limit)
{
    static size_t limits[64];
    return pg_smem_optin((const void *)px_gemv_tiles<M, NT, V>, limits, limit);
}

template <int M, int V>
static cudaError_t px_launch(px_parts P, int n_parts, int64_t k, const float *x, int mode, cudaStream_t st)
{
    constexpr int NT = lrun_k_gemv_shape<LRUN_DTYPE_BF16, M>::NT; /* the plain GEMV's threads: its order of sums */
    const bool sw = mode == LRUN_K_GEMV_SWIGLU;
    const int rb = pg_rows_per_block(k, sw), rows_out = sw ? rb / 2 : rb;
    const int64_t b = pg_grid(P.b0, P.n, n_parts, rows_out, sw);
    if (b > LRUN_K_MAX_GRID) return cudaErrorInvalidConfiguration;
    const size_t smem = (size_t)rb * (size_t)k * 2;
    size_t limit = 48 * 1024 - sizeof(float[NT / 32][LRUN_K_PG_MAX_RB * M]);
    if (smem > limit) {
        const cudaError_t e = px_smem_limit<M, NT, V>(&limit);
        if (e != cudaSuccess) return e;
        if (smem > limit) return cudaErrorNotSupported; /* rows too long for a tile: the caller decodes into a slot */
    }
    const bool xvec = ((uintptr_t)x & 15) == 0;
    return lrun_k_launch(px_gemv_tiles<M, NT, V>, dim3((unsigned)b), dim3(NT), smem, st, P, k, rb, x, xvec, mode);
}

/* The fused GEMV's variant for m <= 2 (lrun_k_pex2_gemv_tune): 0 m = 1's
 * product units outermost; 1 its rows outermost; 2 as 0 with the decode
 * pipelined. -1: not chosen yet, LRUN_PEX2_VARIANT's value (0 where unset
 * or not a variant) at the first launch. */
static int px_variant = -1;

extern "C" const char *lrun_k_pex2_gemv_tune(int variant)
{
    static const char *const names[] =
        {"PEX2 fused: product units outermost (m = 1)", "PEX2 fused: product rows outermost (m = 1, PEX1's order)",
         "PEX2 fused: decode pipelined (next block's loads before the patch), product units outermost (m = 1)"};
    if (variant < 0 || variant > 2) return NULL;
    px_variant = variant;
    return names[variant];
}

static cudaError_t px_launch_m(const px_parts &P, int n_parts, int64_t k, const float *x, int64_t m, int mode,
                               cudaStream_t st)
{
    if (px_variant < 0) {
        const char *v = getenv("LRUN_PEX2_VARIANT");
        px_variant = v && (strcmp(v, "1") == 0 || strcmp(v, "2") == 0) ? v[0] - '0' : 0;
    }
    switch (m) {
    case 1:
        return px_variant == 1   ? px_launch<1, 1>(P, n_parts, k, x, mode, st)
               : px_variant == 2 ? px_launch<1, 2>(P, n_parts, k, x, mode, st)
                                 : px_launch<1, 0>(P, n_parts, k, x, mode, st);
    case 2:
        return px_variant == 2 ? px_launch<2, 2>(P, n_parts, k, x, mode, st)
                               : px_launch<2, 0>(P, n_parts, k, x, mode, st);
    case 3: return px_launch<3, 0>(P, n_parts, k, x, mode, st);
    case 4: return px_launch<4, 0>(P, n_parts, k, x, mode, st);
    case 5: return px_launch<5, 0>(P, n_parts, k, x, mode, st);
    case 6: return px_launch<6, 0>(P, n_parts, k, x, mode, st);
    case 7: return px_launch<7, 0>(P, n_parts, k, x, mode, st);
    case 8: return px_launch<8, 0>(P, n_parts, k, x, mode, st);
    default: return cudaErrorNotSupported;
    }
}

extern "C" lrun_status lrun_k_pex2_gemv_multi(const lrun_k_packed_part *parts, int n_parts, int64_t k, const float *x,
                                              int64_t m, int mode, void *stream)
{
    static const char op[] = "lrun_k_pex2_gemv";
    lrun_status s = pg_fused_check(op, parts, n_parts, k, x, m, mode, stream);
    if (s != LRUN_OK) return s;
    if (k <= 0) return lrun_fail(LRUN_E_ARG, "%s: k %lld (must be > 0)", op, (long long)k);
    if (k % 8 != 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: k %lld is not a multiple of 8 (decode into a slot)", op,
                         (long long)k);
    px_parts P;
    memset(&P, 0, sizeof P);
    for (int p = 0; p < n_parts; p++) {
        const lrun_k_packed_part *q = &parts[p];
        if ((s = px_check(op, q->packed, q->lay)) != LRUN_OK) return lrun_fail_context(s, "weight %d", p);
        int64_t nk;
        if (q->n <= 0 || __builtin_mul_overflow(q->n, k, &nk) || (uint64_t)nk != q->lay->n)
            return lrun_fail(LRUN_E_ARG, "%s: weight %d: %lld x %lld is not the packed tensor's %llu elements", op, p,
                             (long long)q->n, (long long)k, (unsigned long long)q->lay->n);
        if ((s = pg_fused_check_y(op, q, p, m, mode)) != LRUN_OK) return s;
        P.t[p] = px_tensor_of(q->packed, q->lay);
        P.y[p] = q->y;
        P.n[p] = q->n;
    }
    return pg_fused_status(op, px_launch_m(P, n_parts, k, x, m, mode, (cudaStream_t)stream), k);
}
