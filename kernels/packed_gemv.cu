/* packed_gemv.cu — decode packed bf16/f16 weights on chip inside the GEMV of
 * decode, and into a slot for prefill GEMMs (see packed_gemv.cuh). Layout:
 * runtime/packed/codec.h; per-lane bit work: packed_gemv_lane.h. */
#include "packed_gemv.cuh"
#include "packed_gemv_lane.h"
#include "packed_gemv_product.cuh"

#include <string.h>

static_assert(LRUN_K_PG_BLOCK == LRUN_PACKED_BLOCK && PG_BLOCK == LRUN_PACKED_BLOCK,
              "a warp decodes one codec block of 4 groups of 256");
static_assert(LRUN_K_PG_STAGE == PG_STAGE && LRUN_K_PG_MAX_RB == PG_MAX_RB, "packed_gemv_lane.h's sizes");

// ---------------------------------------------------------------- device helpers

/* One step of an inclusive warp scan of a 32-bit word: x += x of lane -
 * d where that lane exists (shfl.up's own predicate says so: no compare and
 * select of the lane index). */
static __device__ __forceinline__ uint32_t pg_scan_step(uint32_t x, int d)
{
    uint32_t r;
    asm volatile("{\n\t.reg .u32 y;\n\t.reg .pred p;\n\t"
                 "shfl.sync.up.b32 y|p, %1, %2, 0, 0xffffffff;\n\t"
                 "@p add.u32 %1, %1, y;\n\tmov.u32 %0, %1;\n\t}"
                 : "=r"(r), "+r"(x)
                 : "r"(d));
    return r;
}

/* Exclusive prefix sum over the warp of v (four 16-bit counters side by
 * side: one scan for the 4 groups), and the warp's total in *total. No
 * field ever exceeds 16 bits (at most 1024 per block), so no carry crosses
 * bit 32: the 64-bit sums are two independent 32-bit scans, each step one
 * shuffle and one predicated add per half (test_packed_gemv_emu replays the
 * 64-bit sums, which are the same numbers). */
static __device__ __forceinline__ uint64_t pg_scan(uint64_t v, unsigned lane, uint64_t *total)
{
    (void)lane;
    uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) lo = pg_scan_step(lo, d), hi = pg_scan_step(hi, d);
    const uint32_t tlo = __shfl_sync(0xffffffffu, lo, 31), thi = __shfl_sync(0xffffffffu, hi, 31);
    *total = (uint64_t)thi << 32 | tlo;
    return ((uint64_t)hi << 32 | lo) - v;
}

static __device__ __forceinline__ void pg_prefetch(const uint8_t *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* Asks L2 for the 128-byte lines of bytes [a, b) of in, from thread t of nt. */
static __device__ __forceinline__ void pg_prefetch_range(const uint8_t *in, uint64_t a, uint64_t b, unsigned t,
                                                         unsigned nt)
{
    if (b <= a) return;
    const uint64_t l0 = ((uintptr_t)in + a) >> 7, l1 = ((uintptr_t)in + b - 1) >> 7;
    for (uint64_t l = l0 + t; l <= l1; l += nt) pg_prefetch((const uint8_t *)(uintptr_t)(l << 7));
}

/* A lane's values to dst: 16-bit values (a tile, a slot) or f32 (embedding rows). */
static __device__ __forceinline__ void pg_emit(const pg_lane *L, const uint32_t *v2, uint64_t p3, const pg_tensor *t,
                                               const uint8_t *stage, const pg_streams *s, uint64_t cb, uint64_t e0,
                                               uint64_t e1, unsigned lane, int bf16, uint16_t *dst)
{
    pg_lane_emit(L, v2, p3, t, stage, s, cb, e0, e1, lane, bf16, dst);
}
static __device__ __forceinline__ void pg_emit(const pg_lane *L, const uint32_t *v2, uint64_t p3, const pg_tensor *t,
                                               const uint8_t *stage, const pg_streams *s, uint64_t cb, uint64_t e0,
                                               uint64_t e1, unsigned lane, int bf16, float *dst)
{
    pg_lane_emit_f32(L, v2, p3, t, stage, s, cb, e0, e1, lane, bf16, dst);
}

/* The whole warp decodes codec block cb of t and stores its elements in
 * [e0, e1) (multiples of 8, within the tensor) to dst[element - e0] (dst
 * 16-byte aligned: shared or global memory; D uint16_t for plain values,
 * float for f32). stage: the warp's PG_STAGE bytes of shared memory,
 * 16-byte aligned. The lane's steps are packed_gemv_lane.h's, which
 * test_packed_gemv_emu.c replays on the host in this order, with the scans'
 * shuffle steps. */
template <bool BF16, typename D>
static __device__ __forceinline__ void pg_decode_staged(const pg_lane &L, const pg_streams &s, const pg_tensor &t,
                                                        uint64_t cb, uint64_t e0, uint64_t e1, D *dst,
                                                        const uint8_t *stage, unsigned lane);

template <bool BF16, typename D>
static __device__ __forceinline__ void pg_decode_block(const pg_tensor &t, uint64_t cb, uint64_t e0, uint64_t e1,
                                                       D *dst, uint8_t *stage, unsigned lane)
{
    pg_lane L;
    pg_lane_load(&L, &t, cb, e0, e1, lane, BF16);
    const pg_streams s = pg_block_streams(&t, cb);
    pg_stage_fill(stage, &t, &s, lane);
    pg_decode_staged<BF16>(L, s, t, cb, e0, e1, dst, stage, lane);
}

/* The rest of pg_decode_block once the lane's loads are in L, the block's
 * streams in s and the warp's stage filled (the stores not yet fenced). */
template <bool BF16, typename D>
static __device__ __forceinline__ void pg_decode_staged(const pg_lane &L, const pg_streams &s, const pg_tensor &t,
                                                        uint64_t cb, uint64_t e0, uint64_t e1, D *dst,
                                                        const uint8_t *stage, unsigned lane)
{
    uint64_t tot;
    const uint64_t cnt = pg_lane_escapes(&L);
    const uint64_t p2 = pg_group_prefix(pg_scan(cnt, lane, &tot), tot);
    __syncwarp(); /* the stage is written */
    uint32_t v2[4];
    const uint64_t cnt3 = pg_lane_tier2(v2, (const uint32_t *)stage, s.sh, p2, cnt);
    const uint64_t p3 = pg_group_prefix(pg_scan(cnt3, lane, &tot), tot);
    pg_emit(&L, v2, p3, &t, stage, &s, cb, e0, e1, lane, BF16, dst);
    __syncwarp(); /* the stage is refilled by the warp's next block */
}

// ---------------------------------------------------------------- fused GEMV

/* The weights of one launch, concatenated by row blocks as lrun_k_gemv_multi's. */
struct pg_parts {
    pg_tensor t[LRUN_K_GEMV_MAX_PARTS];
    float *y[LRUN_K_GEMV_MAX_PARTS];  /* (m, n[p]) */
    int64_t n[LRUN_K_GEMV_MAX_PARTS]; /* rows */
    int64_t b0[LRUN_K_GEMV_MAX_PARTS + 1];
};

#define PG_SEL3(a, p) ((p) == 0 ? (a)[0] : ((p) == 1 ? (a)[1] : (a)[2]))
/* field f of tensor q by selects (no dynamic index into the parameters) */
#define PG_TF(P, q, f) ((q) == 0 ? (P).t[0].f : ((q) == 1 ? (P).t[1].f : (P).t[2].f))

static __device__ __forceinline__ pg_tensor pg_tensor_at(const pg_parts &P, int q)
{
    pg_tensor t;
    t.in = PG_TF(P, q, in), t.n = PG_TF(P, q, n);
    t.rest = PG_TF(P, q, rest), t.hi = PG_TF(P, q, hi), t.code1 = PG_TF(P, q, code1);
    t.table = PG_TF(P, q, table), t.code2 = PG_TF(P, q, code2), t.esc = PG_TF(P, q, esc);
    t.book1 = PG_TF(P, q, book1), t.book2lo = PG_TF(P, q, book2lo), t.book2hi = PG_TF(P, q, book2hi);
    t.c1_a2 = PG_TF(P, q, c1_a2), t.tab_a8 = PG_TF(P, q, tab_a8), t.total = PG_TF(P, q, total);
    return t;
}

/* The pipelined decode's loads of the warp's codec block i of nb (nothing
 * past them): the lane's (L) and the block's table entries (S). */
template <bool BF16>
static __device__ __forceinline__ void pg_pipe_load(const pg_parts &P, const pg_rows &R, bool sw, int64_t i,
                                                    int64_t nb, pg_lane &L, pg_streams &S, unsigned lane)
{
    if (i >= nb) return;
    const int s = i >= R.nc;
    const pg_tensor t = pg_tensor_at(P, sw ? s : R.p);
    const uint64_t cb = R.cb0 + (uint64_t)(i - s * R.nc);
    pg_lane_load(&L, &t, cb, R.e0, R.e1, lane, BF16);
    S = pg_block_streams(&t, cb);
}

/* One step of the pipelined decode: codec block i, whose loads are in L
 * and S, decoded into the tile, with block i + NW's loads issued into Ln and
 * Sn first, before this block's stage loads (which need S) and bit work. */
template <bool BF16>
static __device__ __forceinline__ void pg_pipe_step(const pg_parts &P, const pg_rows &R, bool sw, int64_t i,
                                                    int64_t nb, const pg_lane &L, const pg_streams &S, pg_lane &Ln,
                                                    pg_streams &Sn, uint16_t *tile, int rh, int64_t k,
                                                    uint8_t *stage, unsigned lane)
{
    pg_pipe_load<BF16>(P, R, sw, i + (int64_t)(blockDim.x / 32), nb, Ln, Sn, lane);
    const int s = i >= R.nc;
    const pg_tensor t = pg_tensor_at(P, sw ? s : R.p);
    const uint64_t cb = R.cb0 + (uint64_t)(i - s * R.nc);
    pg_stage_fill(stage, &t, &S, lane);
    /* the next block's tier-2 code lines on their way to L2 (the start's
     * prefetch could not know where they are): its table entries were asked
     * for before this block's stage loads, whose stores above waited for
     * them, so this waits for nothing, and the next step's stage loads wait
     * for L2 rather than HBM */
    const int64_t j = i + (int64_t)(blockDim.x / 32);
    if (j < nb && Sn.nw) {
        const uint8_t *in = sw ? (j >= R.nc ? P.t[1].in : P.t[0].in) : t.in; /* one part, or gate/up */
        const uint64_t a = (uintptr_t)in + Sn.c2w, l = (a >> 7) + lane;
        /* up to the last word's first byte: at or before the last code byte,
         * so no line past the tensor (its last word may reach 3 bytes past) */
        if (l <= (a + 4u * (Sn.nw - 1)) >> 7) pg_prefetch((const uint8_t *)(uintptr_t)(l << 7));
    }
    pg_decode_staged<BF16>(L, S, t, cb, R.e0, R.e1, tile + (size_t)s * rh * k, stage, lane);
}

/* (The pipelined bf16 forms are held to 3 blocks of 256 threads per SM, 80
 * registers: held to 4 (64 registers) they spilled 90-220 bytes, and a
 * spilled value of the next codec block is stored only once its load
 * returns, which is the wait the pipelining removes. The default loop's
 * bound is 0, "none": an explicit 1 took it from 61 to 122 registers.) */
/* Block b: rows row0 .. row0+rh-1 of part p (swiglu: of gate and of up),
 * decoded into the tile (rb rows of k), then gemv.cu's gemv_tiles arithmetic
 * on them, row by row: the same units per thread in the same order, the
 * same FMA chains, warp sums and block sum. */
template <int T, int M, int NT, bool PIPE>
__global__ void __launch_bounds__(NT, PIPE && T == LRUN_DTYPE_BF16 ? 3 : 0) packed_gemv_tiles(const __grid_constant__ pg_parts P, int64_t k, int rb,
                                                        const float *__restrict__ x, bool xvec, int mode)
{
    constexpr bool BF16 = T == LRUN_DTYPE_BF16;
    constexpr int NW = NT / 32;
    extern __shared__ __align__(16) uint8_t pg_dyn[];
    uint16_t *tile = (uint16_t *)pg_dyn; /* (rb, k) plain values */
    __shared__ __align__(16) uint8_t stage[NW][LRUN_K_PG_STAGE];
    __shared__ float red[NW][LRUN_K_PG_MAX_RB * M];
    lrun_k_pdl_trigger();

    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bool sw = mode == LRUN_K_GEMV_SWIGLU;
    const int rh = sw ? rb / 2 : rb; /* rows of each segment (swiglu: gate rows, then up rows) */
    const int nseg = sw ? 2 : 1;
    /* part p, its rows row0 .. row0+live-1 (of each segment), their
     * elements [e0, e1), codec blocks cb0 .. cb0+nc-1 (packed_gemv_lane.h) */
    const pg_rows R = pg_block_rows(P.b0, P.n, blockIdx.x, k, rh);
    const int p = R.p;
    const int64_t n = PG_SEL3(P.n, p), row0 = R.row0, live = R.live;
    const uint64_t e0 = R.e0, e1 = R.e1;

    /* every line of the block's packed rows on its way to L2 first, so the
     * warps' dependent loads below wait for L2, not for HBM. The tier-2
     * codes' lines are not asked for: their place needs the table entries
     * first, and reading two of them here took the bf16 m = 1 kernel from
     * 61 to 76 registers (3 blocks per SM instead of 4). */
    for (int s = 0; s < nseg; s++) {
        const pg_tensor t = pg_tensor_at(P, sw ? s : p);
        const uint64_t cb0 = R.cb0, cb1 = R.cb0 + (uint64_t)R.nc;
        pg_prefetch_range(t.in, t.rest + e0, t.rest + e1, threadIdx.x, NT);
        pg_prefetch_range(t.in, t.code1 + cb0 * LRUN_K_PG_BLOCK / 4, t.code1 + e1 / 4, threadIdx.x, NT);
        if (!BF16) pg_prefetch_range(t.in, t.hi + e0 / 8 * 3, t.hi + e1 / 8 * 3, threadIdx.x, NT);
        pg_prefetch_range(t.in, t.table + 16 * cb0, t.table + 16 * (cb1 + 1), threadIdx.x, NT);
    }

    /* decode: the codec blocks of segment 0, then of segment 1, a warp each
     * (the tensor is picked per codec block: picked once per segment, in a
     * loop of its own, it stayed live in registers and the kernel took
     * 98-128 registers instead of 61-64) */
    const int64_t nc = R.nc;
    if (!PIPE) {
        for (int64_t i = warp; i < nseg * nc; i += NW) {
            const int s = i >= nc;
            const pg_tensor t = pg_tensor_at(P, sw ? s : p);
            const uint64_t cb = R.cb0 + (uint64_t)(i - s * nc);
            pg_decode_block<BF16>(t, cb, e0, e1, tile + (size_t)s * rh * k, stage[warp], lane);
        }
    } else {
        /* software pipelined (docs/packed.md "Pipelining the decode"): the
         * warp's next codec block's lane loads and table entries are issued
         * before this block's stage is filled and its bit work runs, so of
         * the two dependent L2 round trips of a block (table, then stage)
         * only the stage's is waited for in the loop */
        pg_lane L[2];
        pg_streams S[2];
        const int64_t nb = nseg * nc;
        pg_pipe_load<BF16>(P, R, sw, warp, nb, L[0], S[0], lane);
        /* two codec blocks an iteration, the loads' registers ping-ponged
         * (a copy of the next block's 19 words per block otherwise: ~40 MOVs) */
        for (int64_t i = warp; i < nb; i += 2 * NW) {
            pg_pipe_step<BF16>(P, R, sw, i, nb, L[0], S[0], L[1], S[1], tile, rh, k, stage[warp], lane);
            if (i + NW >= nb) break;
            pg_pipe_step<BF16>(P, R, sw, i + NW, nb, L[1], S[1], L[0], S[0], tile, rh, k, stage[warp], lane);
        }
    }
    __syncthreads();
    lrun_k_pdl_wait(); /* x is the previous kernel's output */

    pg_tile_product<BF16, M, NT>(tile, rb, rh, sw, live, k, x, xvec, red, n, PG_SEL3(P.y, p), row0, mode);
}

/* Lets packed_gemv_tiles<T, M, NT, PIPE> take the device's opt-in shared
 * memory (pg_smem_optin, with this kernel's cache). */
template <int T, int M, int NT, bool PIPE> static cudaError_t pg_smem_limit(size_t *limit)
{
    static size_t limits[64];
    return pg_smem_optin((const void *)packed_gemv_tiles<T, M, NT, PIPE>, limits, limit);
}

template <int T, int M, bool PIPE>
static cudaError_t pg_launch(pg_parts P, int n_parts, int64_t k, const float *x, int mode, cudaStream_t st)
{
    constexpr int NT = lrun_k_gemv_shape<T, M>::NT; /* the plain GEMV's threads: its order of sums */
    const bool sw = mode == LRUN_K_GEMV_SWIGLU;
    const int rb = pg_rows_per_block(k, sw), rows_out = sw ? rb / 2 : rb;
    const int64_t b = pg_grid(P.b0, P.n, n_parts, rows_out, sw);
    if (b > LRUN_K_MAX_GRID) return cudaErrorInvalidConfiguration;
    const size_t smem = (size_t)rb * (size_t)k * 2;
    auto kern = packed_gemv_tiles<T, M, NT, PIPE>;
    size_t limit =
        48 * 1024 - sizeof(uint8_t[NT / 32][LRUN_K_PG_STAGE]) - sizeof(float[NT / 32][LRUN_K_PG_MAX_RB * M]);
    if (smem > limit) {
        const cudaError_t e = pg_smem_limit<T, M, NT, PIPE>(&limit);
        if (e != cudaSuccess) return e;
        if (smem > limit) return cudaErrorNotSupported; /* rows too long for a tile: the caller decodes into a slot */
    }
    const bool xvec = ((uintptr_t)x & 15) == 0;
    return lrun_k_launch(kern, dim3((unsigned)b), dim3(NT), smem, st, P, k, rb, x, xvec, mode);
}

/* The fused GEMV's decode loop (lrun_k_packed_gemv_tune): 0 one codec
 * block after another (session 9's), 1 software pipelined. */
static int pg_variant = 0;

extern "C" const char *lrun_k_packed_gemv_tune(int variant)
{
    static const char *const names[] = {"decode block by block", "decode pipelined (next block's loads first)"};
    if (variant < 0 || variant > 1) return NULL;
    pg_variant = variant;
    return names[variant];
}

template <int T>
static cudaError_t pg_launch_m(const pg_parts &P, int n_parts, int64_t k, const float *x, int64_t m, int mode,
                               cudaStream_t st)
{
    switch (m) {
    /* the pipelined decode for m <= 2 (decode's batch sizes), the bench's
     * switch choosing (lrun_k_packed_gemv_tune) */
    case 1:
        return pg_variant ? pg_launch<T, 1, true>(P, n_parts, k, x, mode, st)
                          : pg_launch<T, 1, false>(P, n_parts, k, x, mode, st);
    case 2:
        return pg_variant ? pg_launch<T, 2, true>(P, n_parts, k, x, mode, st)
                          : pg_launch<T, 2, false>(P, n_parts, k, x, mode, st);
    case 3: return pg_launch<T, 3, false>(P, n_parts, k, x, mode, st);
    case 4: return pg_launch<T, 4, false>(P, n_parts, k, x, mode, st);
    case 5: return pg_launch<T, 5, false>(P, n_parts, k, x, mode, st);
    case 6: return pg_launch<T, 6, false>(P, n_parts, k, x, mode, st);
    case 7: return pg_launch<T, 7, false>(P, n_parts, k, x, mode, st);
    case 8: return pg_launch<T, 8, false>(P, n_parts, k, x, mode, st);
    default: return cudaErrorNotSupported;
    }
}

/* The checks of one packed weight of n rows of k: LRUN_E_ARG (or
 * LRUN_E_UNSUPPORTED for a layout the kernels do not take) naming op. */
static lrun_status pg_check(const char *op, const void *packed, const lrun_packed_layout *lay, int64_t n, int64_t k,
                            int part)
{
    if (!packed || !lay) return lrun_fail(LRUN_E_ARG, "%s: weight %d: packed or lay is NULL", op, part);
    if (n <= 0 || k <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: weight %d: shape n %lld, k %lld (both must be > 0)", op, part, (long long)n,
                         (long long)k);
    if (lay->codec != LRUN_PACKED_CODEC_EXP && lay->codec != LRUN_PACKED_CODEC_PEX2)
        return lrun_fail(LRUN_E_ARG, "%s: weight %d: codec %d is neither PEX1 nor PEX2 (not a validated layout)", op,
                         part, lay->codec);
    if (!lrun_packed_dtype_ok(lay->dtype))
        return lrun_fail(LRUN_E_ARG, "%s: weight %d: dtype %d is not bf16 or f16", op, part, lay->dtype);
    if (k % 8 != 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: weight %d: k %lld is not a multiple of 8 (decode into a slot)", op,
                         part, (long long)k);
    int64_t nk;
    if (__builtin_mul_overflow(n, k, &nk) || (uint64_t)nk != lay->n)
        return lrun_fail(LRUN_E_ARG, "%s: weight %d: %lld x %lld is not the packed tensor's %llu elements", op, part,
                         (long long)n, (long long)k, (unsigned long long)lay->n);
    if ((uintptr_t)packed % 16 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: weight %d: the packed tensor must start on a 16-byte boundary", op, part);
    return LRUN_OK;
}

extern "C" lrun_status lrun_k_packed_gemv_multi(const lrun_k_packed_part *parts, int n_parts, int64_t k,
                                                const float *x, int64_t m, int mode, void *stream)
{
    static const char op[] = "lrun_k_packed_gemv";
    if (!parts || n_parts < 1 || n_parts > LRUN_K_GEMV_MAX_PARTS)
        return lrun_fail(LRUN_E_ARG, "%s: %d weights (expected 1..%d)", op, parts ? n_parts : 0,
                         LRUN_K_GEMV_MAX_PARTS);
    /* PEX2 weights go to their own kernel (packed_pex2.cu). A launch of
     * both codecs (a gate/up pair packed apart) has no kernel: the caller
     * decodes into a slot, as for any shape these kernels refuse */
    for (int p = 0; p < n_parts; p++)
        if (!parts[p].lay) return lrun_fail(LRUN_E_ARG, "%s: weight %d: lay is NULL", op, p);
    for (int p = 1; p < n_parts; p++)
        if (parts[p].lay->codec != parts[0].lay->codec)
            return lrun_fail(LRUN_E_UNSUPPORTED, "%s: weight %d's codec %d is not weight 0's %d (decode into a slot)",
                             op, p, parts[p].lay->codec, parts[0].lay->codec);
    if (parts[0].lay->codec == LRUN_PACKED_CODEC_PEX2)
        return lrun_k_pex2_gemv_multi(parts, n_parts, k, x, m, mode, stream);
    lrun_status s = pg_fused_check(op, parts, n_parts, k, x, m, mode, stream);
    if (s != LRUN_OK) return s;
    pg_parts P;
    memset(&P, 0, sizeof P);
    for (int p = 0; p < n_parts; p++) {
        const lrun_k_packed_part *q = &parts[p];
        if ((s = pg_check(op, q->packed, q->lay, q->n, k, p)) != LRUN_OK) return s;
        if (q->lay->dtype != parts[0].lay->dtype)
            return lrun_fail(LRUN_E_ARG, "%s: weight %d is not of weight 0's dtype", op, p);
        if ((s = pg_fused_check_y(op, q, p, m, mode)) != LRUN_OK) return s;
        P.t[p] = pg_tensor_of(q->packed, q->lay);
        P.y[p] = q->y;
        P.n[p] = q->n;
    }
    const cudaStream_t st = (cudaStream_t)stream;
    const cudaError_t e = parts[0].lay->dtype == LRUN_DTYPE_BF16
                              ? pg_launch_m<LRUN_DTYPE_BF16>(P, n_parts, k, x, m, mode, st)
                              : pg_launch_m<LRUN_DTYPE_F16>(P, n_parts, k, x, m, mode, st);
    return pg_fused_status(op, e, k);
}

extern "C" lrun_status lrun_k_packed_gemv(const void *packed, const lrun_packed_layout *lay, int64_t n, int64_t k,
                                          const float *x, int64_t m, float *y, void *stream)
{
    const lrun_k_packed_part part = {packed, lay, n, y};
    if (!y) return lrun_fail(LRUN_E_ARG, "lrun_k_packed_gemv: y is NULL");
    return lrun_k_packed_gemv_multi(&part, 1, k, x, m, LRUN_K_GEMV_STORE, stream);
}

// ---------------------------------------------------------------- decode into a slot (prefill)

/* Warp w of block b decodes codec block cb0 + 8b + w, keeping [e0, e1). */
template <bool BF16>
__global__ void __launch_bounds__(LRUN_K_PG_DECODE_THREADS)
    packed_decode_rows_k(pg_tensor t, uint64_t e0, uint64_t e1, uint64_t cb0, uint16_t *dst)
{
    __shared__ __align__(16) uint8_t stage[LRUN_K_PG_DECODE_THREADS / 32][LRUN_K_PG_STAGE];
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint64_t cb = cb0 + (uint64_t)blockIdx.x * (LRUN_K_PG_DECODE_THREADS / 32) + warp;
    if (cb * LRUN_K_PG_BLOCK >= e1) return; /* the whole warp: no block barrier below */
    pg_decode_block<BF16>(t, cb, e0, e1, dst, stage[warp], lane);
}

extern "C" lrun_status lrun_k_packed_decode_rows(uint16_t *dst, const void *packed, const lrun_packed_layout *lay,
                                                 int64_t k, int64_t row0, int64_t n_rows, void *stream)
{
    static const char op[] = "lrun_k_packed_decode_rows";
    if (!dst || ((uintptr_t)dst & 15) != 0)
        return lrun_fail(LRUN_E_ARG, "%s: dst is NULL or not 16-byte aligned", op);
    if (!lay) return lrun_fail(LRUN_E_ARG, "%s: lay is NULL", op);
    if (k <= 0 || lay->n % (uint64_t)k != 0)
        return lrun_fail(LRUN_E_ARG, "%s: k %lld does not divide the tensor's %llu elements", op, (long long)k,
                         (unsigned long long)lay->n);
    const int64_t rows = (int64_t)(lay->n / (uint64_t)k);
    lrun_status s = pg_check(op, packed, lay, rows, k, 0);
    if (s != LRUN_OK) return s;
    if (row0 < 0 || n_rows < 0 || row0 > rows || n_rows > rows - row0)
        return lrun_fail(LRUN_E_ARG, "%s: rows %lld +%lld outside the tensor's %lld", op, (long long)row0,
                         (long long)n_rows, (long long)rows);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    if (n_rows == 0) return LRUN_OK;
    if (lay->codec == LRUN_PACKED_CODEC_PEX2) /* one warp per codec block too (packed_pex2.cu) */
        return lrun_k_pex2_decode(dst, packed, lay, (uint64_t)row0 * (uint64_t)k, (uint64_t)n_rows * (uint64_t)k,
                                  stream);
    const pg_tensor t = pg_tensor_of(packed, lay);
    const uint64_t e0 = (uint64_t)row0 * (uint64_t)k, e1 = e0 + (uint64_t)n_rows * (uint64_t)k;
    const uint64_t cb_first = e0 / LRUN_K_PG_BLOCK, cb_end = (e1 - 1) / LRUN_K_PG_BLOCK + 1;
    const uint64_t per = LRUN_K_PG_DECODE_THREADS / 32, chunk = (uint64_t)LRUN_K_MAX_GRID * per;
    for (uint64_t cb = cb_first; cb < cb_end; cb += chunk) {
        const uint64_t nb = cb_end - cb < chunk ? cb_end - cb : chunk;
        const unsigned grid = (unsigned)((nb + per - 1) / per);
        if (lay->dtype == LRUN_DTYPE_BF16)
            packed_decode_rows_k<true>
                <<<grid, LRUN_K_PG_DECODE_THREADS, 0, (cudaStream_t)stream>>>(t, e0, e1, cb, dst);
        else
            packed_decode_rows_k<false>
                <<<grid, LRUN_K_PG_DECODE_THREADS, 0, (cudaStream_t)stream>>>(t, e0, e1, cb, dst);
        if ((s = lrun_k_launched(op)) != LRUN_OK) return s;
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- the embedding gather

/* Warp w of the grid (8 a block): token w / nw of the chunk, the (w % nw)-th
 * codec block of its row ids[token] (packed_gemv_lane.h's pg_embed_job),
 * decoded straight into that token's row of out as f32. The ids are read on
 * the device, so the launch depends on n_tok alone (a CUDA graph replays it). */
template <bool BF16>
__global__ void __launch_bounds__(LRUN_K_PG_DECODE_THREADS)
    packed_embed_k(pg_tensor t, int64_t k, int64_t rows, const int32_t *__restrict__ ids, int64_t n_tok, int nw,
                   float *__restrict__ out)
{
    __shared__ __align__(16) uint8_t stage[LRUN_K_PG_DECODE_THREADS / 32][LRUN_K_PG_STAGE];
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t w = (int64_t)blockIdx.x * (LRUN_K_PG_DECODE_THREADS / 32) + warp;
    if (w >= n_tok * nw) return; /* the whole warp: no block barrier below */
    const int64_t tok = w / nw;
    const int j = (int)(w % nw);
    const pg_embed_job J = pg_embed_job_of(ids[tok], j, rows, k); /* the same id in every lane */
    float *row = out + tok * k;
    if (!J.valid) pg_lane_zero_f32(row, j, k, lane);
    else if (J.live) pg_decode_block<BF16>(t, J.cb, J.e0, J.e1, row, stage[warp], lane);
}

extern "C" lrun_status lrun_k_packed_embed(const void *packed, const lrun_packed_layout *lay, int64_t k,
                                           const int32_t *tokens, int64_t n_tok, float *out, void *stream)
{
    static const char op[] = "lrun_k_packed_embed";
    if (!lay) return lrun_fail(LRUN_E_ARG, "%s: lay is NULL", op);
    if (k <= 0 || lay->n % (uint64_t)k != 0)
        return lrun_fail(LRUN_E_ARG, "%s: k %lld does not divide the table's %llu elements", op, (long long)k,
                         (unsigned long long)lay->n);
    const int64_t rows = (int64_t)(lay->n / (uint64_t)k);
    lrun_status s = pg_check(op, packed, lay, rows, k, 0);
    if (s != LRUN_OK) return s;
    if (!tokens || !out || ((uintptr_t)out & 15) != 0)
        return lrun_fail(LRUN_E_ARG, "%s: tokens or out is NULL, or out is not 16-byte aligned", op);
    if (n_tok <= 0) return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld (must be > 0)", op, (long long)n_tok);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    if (lay->codec == LRUN_PACKED_CODEC_PEX2) return lrun_k_pex2_embed(packed, lay, k, tokens, n_tok, out, stream);
    const int nw = pg_embed_warps(k);
    const int64_t per = LRUN_K_PG_DECODE_THREADS / 32;
    int64_t warps, total;
    if (__builtin_mul_overflow(n_tok, (int64_t)nw, &warps) || __builtin_mul_overflow(n_tok, k, &total) ||
        (warps + per - 1) / per > LRUN_K_MAX_GRID)
        return lrun_fail(LRUN_E_ARG, "%s: %lld tokens of %lld elements are too many for one launch", op,
                         (long long)n_tok, (long long)k);
    const pg_tensor t = pg_tensor_of(packed, lay);
    const unsigned grid = (unsigned)((warps + per - 1) / per);
    if (lay->dtype == LRUN_DTYPE_BF16)
        packed_embed_k<true>
            <<<grid, LRUN_K_PG_DECODE_THREADS, 0, (cudaStream_t)stream>>>(t, k, rows, tokens, n_tok, nw, out);
    else
        packed_embed_k<false>
            <<<grid, LRUN_K_PG_DECODE_THREADS, 0, (cudaStream_t)stream>>>(t, k, rows, tokens, n_tok, nw, out);
    return lrun_k_launched(op);
}

extern "C" lrun_status lrun_k_packed_gemm(void *cublas, const void *packed, const lrun_packed_layout *lay, int64_t n,
                                          int64_t k, const float *x, int64_t m, float *y, void *w_slot, void *x_slot,
                                          void *stream)
{
    static const char op[] = "lrun_k_packed_gemm";
    lrun_status s = pg_check(op, packed, lay, n, k, 0);
    if (s != LRUN_OK) return s;
    if (!w_slot) return lrun_fail(LRUN_E_ARG, "%s: w_slot is NULL", op);
    s = lrun_k_packed_decode_rows((uint16_t *)w_slot, packed, lay, k, 0, n, stream);
    if (s != LRUN_OK) return lrun_fail_context(s, "%s", op);
    /* the slot holds W in its own dtype: lrun_k_gemm uses it in place, the
     * call the plain weight makes (same shapes, same cuBLAS algorithm) */
    const lrun_dtype dt = (lrun_dtype)lay->dtype;
    return lrun_k_gemm(cublas, dt, w_slot, (size_t)k * 2, n, k, x, m, y, dt, w_slot, x_slot, stream);
}
