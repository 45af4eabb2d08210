/* gemv_common.cuh — what the decode GEMV kernels share (gemv.cu: the unit
 * kernel for every dtype; gemv_kq.cu: the K-quant slice kernel of m = 1;
 * gemv_dp4a.cu: the dp4a kernel of m = 1): the parts of one launch, the
 * epilogues, the row blocks' reduction and the byte-to-float trick. */
#ifndef LRUN_KERNELS_GEMV_COMMON_CUH
#define LRUN_KERNELS_GEMV_COMMON_CUH

#include "gemv.cuh"
#include "geglu.cuh"

// ---------------------------------------------------------------- x

/* 4 consecutive floats of x at p: one 16-byte load when x is 16-byte
 * aligned (xvec, the same for the whole launch), else 4 scalar loads. */
static __device__ __forceinline__ float4 ldx4(const float *p, bool xvec)
{
    if (xvec) return __ldg((const float4 *)p);
    return make_float4(__ldg(p), __ldg(p + 1), __ldg(p + 2), __ldg(p + 3));
}

// ---------------------------------------------------------------- a folded norm

/* The RMSNorm a GEMV folds in (lrun_k_gemv_norm_multi): x is the norm's
 * input, w (k) its weights; w NULL: no norm. */
struct gemv_norm {
    const float *w;
    float eps;
    bool wvec; /* w on a 16-byte boundary (ldx4) */
};

/* Four x values as loaded: their squares added to ss (in order, as
 * lrun_k_rms_norm's per-thread sum), the values times the norm's weights
 * returned. */
static __device__ __forceinline__ float4 norm_load(float4 x, float4 g, float &ss)
{
    ss = fmaf(x.x, x.x, ss);
    ss = fmaf(x.y, x.y, ss);
    ss = fmaf(x.z, x.z, ss);
    ss = fmaf(x.w, x.w, ss);
    return make_float4(x.x * g.x, x.y * g.y, x.z * g.z, x.w * g.w);
}

/* s = 1/sqrt(Σx²/k + eps), in double as lrun_k_rms_norm. */
static __device__ __forceinline__ float norm_scale(float ss, int64_t k, float eps)
{
    return (float)(1.0 / sqrt((double)ss / (double)k + (double)eps));
}

// ---------------------------------------------------------------- bytes

/* 2^23 + byte e of v, as a float: the byte's integer value without an
 * int-to-float conversion (I2F issues at a quarter of the FMA rate, and the
 * small-quant GEMVs are otherwise bound by it). */
static __device__ __forceinline__ float byte_f(uint32_t v, int e)
{
    return __uint_as_float(__byte_perm(v, 0x4B000000u, 0x7440u + (unsigned)e));
}

// ---------------------------------------------------------------- epilogue

/* The weights of one launch, concatenated by row blocks: block b belongs to
 * part p when b0[p] <= b < b0[p+1] (unused parts start at the grid's end). */
static_assert(LRUN_K_GEMV_MAX_PARTS == 3, "sel3 and the part lookup assume 3 parts");
struct gemv_parts {
    const uint8_t *w[LRUN_K_GEMV_MAX_PARTS];
    size_t rb[LRUN_K_GEMV_MAX_PARTS]; /* row stride, bytes */
    float *y[LRUN_K_GEMV_MAX_PARTS];  /* (m, n[p]) */
    int64_t n[LRUN_K_GEMV_MAX_PARTS];
    int64_t b0[LRUN_K_GEMV_MAX_PARTS + 1];
};

/* a[p] by selects: a dynamic index into (or a reference to) the kernel's
 * parameter struct would copy the struct to local memory. */
#define SEL3(a, p) ((p) == 0 ? (a)[0] : ((p) == 1 ? (a)[1] : (a)[2]))

/* silu(g)·u as lrun_k_swiglu (the accurate expf). */
static __device__ __forceinline__ float swiglu1(float g, float u) { return g / (1.0f + expf(-g)) * u; }

/* A mode whose two parts (gate, up) make one output: SwiGLU or GeGLU. */
#define PAIRED(mode) ((mode) >= LRUN_K_GEMV_SWIGLU)

/* Fills P.b0 for a launch of rb rows a block (a paired mode's up shares
 * gate's blocks, rb / 2 outputs each) and returns the grid's block count. */
static inline int64_t gemv_part_blocks(gemv_parts &P, int n_parts, int64_t rb, int mode)
{
    const int64_t rows_out = PAIRED(mode) ? rb / 2 : rb;
    const int grid_parts = PAIRED(mode) ? 1 : n_parts;
    int64_t b = 0;
    for (int p = 0; p < LRUN_K_GEMV_MAX_PARTS + 1; p++) {
        P.b0[p] = b;
        if (p < grid_parts) b += (P.n[p] + rows_out - 1) / rows_out;
    }
    return b;
}

/* The pair's epilogue: silu or gelu (as lrun_k_geglu, f16 table or f32). */
static __device__ __forceinline__ float pair1(float g, float u, int mode)
{
    return mode == LRUN_K_GEMV_SWIGLU ? swiglu1(g, u) : lrun_k_geglu1(g, u, mode == LRUN_K_GEMV_GEGLU);
}

static __device__ __forceinline__ void put(float *y, float v, int mode)
{
    if (mode == LRUN_K_GEMV_ADD) *y += v;
    else *y = v;
}

// ---------------------------------------------------------------- row block

/* The weight rows of the m = 1 row-block kernels (gemv_kq.cu,
 * gemv_dp4a.cu; their SASS is the same as with the loop written out):
 * rows[r] is where the block's accumulator r reads, for a block of part p
 * whose first output row is row0 (of the part's n). Rows past n re-read
 * row n-1 (valid memory) and are not written; a paired block (sw) reads
 * rows row0.. of gate (part 0) then of up (part 1). gemv.cu's unit kernel
 * keeps its own copy: through this helper its 16-row shapes came out
 * longer. */
template <int RB>
static __device__ __forceinline__ void gemv_block_rows(const gemv_parts &P, int p, int64_t row0, int64_t n, bool sw,
                                                       const uint8_t *(&rows)[RB])
{
    constexpr int RH = RB >= 2 ? RB / 2 : 1; /* output rows of a paired block */
#pragma unroll
    for (int r = 0; r < RB; r++) {
        const int q = sw && r >= RH ? 1 : p;
        int64_t rr = row0 + (sw ? r % RH : r);
        rr = rr < n ? rr : n - 1;
        rows[r] = SEL3(P.w, q) + (size_t)rr * SEL3(P.rb, q);
    }
}

// ---------------------------------------------------------------- reduction

/* The end of the m = 1 row-block kernels (gemv_kq.cu, gemv_dp4a.cu): each
 * thread's acc[RB] (its share of the block's RB rows) summed over the warp,
 * then over the block's NT / 32 warps in warp order, and the rows < n
 * written through the mode's epilogue into part p's y (row0 the block's
 * first row); a paired block (sw) sums rows r and RH + r (gate and up) into
 * output row r. P is the kernel's __grid_constant__ parameter (a reference
 * to it copies nothing). */
template <int NT, int RB>
static __device__ __forceinline__ void gemv_block_out(const float (&acc)[RB], const gemv_parts &P, int p,
                                                      int64_t row0, int64_t n, bool sw, int mode)
{
    constexpr int RH = RB >= 2 ? RB / 2 : 1; /* output rows of a paired block */
    /* warps, then the block: red[w][r] is warp w's sum of row r */
    __shared__ float red[NT / 32][RB];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < RB; r++) {
        const float v = lrun_k_warp_sum(acc[r]);
        if (lane == 0) red[warp][r] = v;
    }
    __syncthreads();
    if (threadIdx.x < (sw ? RH : RB)) {
        const int r = threadIdx.x;
        float v = red[0][r], u = sw ? red[0][r + RH] : 0.0f;
#pragma unroll
        for (int w = 1; w < NT / 32; w++) v += red[w][r], u += sw ? red[w][r + RH] : 0.0f;
        const int64_t row = row0 + r;
        if (row < n) {
            float *y = SEL3(P.y, p) + row;
            if (sw) *y = pair1(v, u, mode);
            else put(y, v, mode);
        }
    }
}

/* The K-quant slice kernel of m = 1 (gemv_kq.cu) for Q4_K, Q5_K and Q6_K:
 * returns 0 when it does not take these weights (another dtype, or Q4_K/Q5_K
 * rows not on 16-byte boundaries), else 1 with the launch's status in *e.
 * variant: lrun_k_gemv_tune's (0 the default shape; a folded norm, nm.w not
 * NULL, always takes the default). */
int lrun_k_gemv_kq(lrun_dtype t, gemv_parts P, int n_parts, int64_t k, const float *x, int mode, int variant,
                   const gemv_norm &nm, cudaStream_t st, cudaError_t *e);
/* The shape of its variant v (0 the default) as text in buf. */
const char *lrun_k_gemv_kq_shape(int v, char *buf, size_t size);

/* The dp4a kernel of m = 1 (gemv_dp4a.cu) for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * IQ4_NL and IQ4_XS, taken only under LRUN_K_GEMV_DP4A: returns 0 when it
 * does not take these weights (another dtype, k beyond its shared memory,
 * rows not aligned for its word loads), else 1 with the launch's status in *e. */
int lrun_k_gemv_dp4a(lrun_dtype t, gemv_parts P, int n_parts, int64_t k, const float *x, int mode, cudaStream_t st,
                     cudaError_t *e);

/* The staged kernel of m = 1 (gemv_stage.cu) for Q8_0, Q4_0, Q4_1, Q5_0,
 * Q5_1 and IQ4_NL, taken only under LRUN_K_GEMV_STAGE, with the dp4a
 * kernel's numerics: returns 0 when it does not take these weights (another
 * dtype, k beyond its shared memory, rows not on 16-byte boundaries), else
 * 1 with the launch's status in *e. */
int lrun_k_gemv_stage(lrun_dtype t, gemv_parts P, int n_parts, int64_t k, const float *x, int mode,
                      cudaStream_t st, cudaError_t *e);

/* The split-row kernel (gemv_split.cu) for Q8_0 and Q4_0 under
 * LRUN_K_GEMV_SPLIT, any m (one launch per row of x): returns 0 when it
 * does not take these weights (another dtype, k not a multiple of 32 or
 * above LRUN_K_SPLIT_MAX_K, rows off 16-byte boundaries), else 1 with the
 * launches' status in *e. */
int lrun_k_gemv_split(lrun_dtype t, gemv_parts P, int n_parts, int64_t k, const float *x, int64_t m, int mode,
                      cudaStream_t st, cudaError_t *e);

#endif
