/* attention_flash.cu — prefill attention on tensor cores (see
 * attention_flash.cuh). Against lrun_k_attention it differs by the f16
 * rounding of q·scale and of P (docs/cuda-kernels.md derives the bound). */
#include "attention_flash.cuh"

#include <cuda_fp16.h>

// ---------------------------------------------------------------- PTX wrappers (sm_80+)

static __device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16 bytes from global to shared, or 16 zero bytes when !valid (no read). */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}

static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

/* All but the N most recent groups of this thread have landed. */
template <int N> static __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Four 8x8 b16 matrices; lane L gives the address of row L % 8 of matrix L / 8. */
static __device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

static __device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

/* d (16x8 f32) += a (16x16 f16, row) · b (16x8 f16, col). Fragments, with
 * g = lane / 4 and c = 2 (lane % 4): a {(g, c..c+1), (g+8, c..), (g, c+8..),
 * (g+8, c+8..)}, b {(k c..c+1, n g), (k c+8.., n g)}, d {(g, c), (g, c+1),
 * (g+8, c), (g+8, c+1)}. */
static __device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t pack_half2(float lo, float hi)
{
    const __half2 h = __floats2half2_rn(lo, hi); /* lo in the low 16 bits: the lower column */
    return *(const uint32_t *)&h;
}

// ---------------------------------------------------------------- tiles

/* Positions [t0, t0 + BN) of one KV head into sh (BN, D + PAD) f16: rows at
 * or past hi are zeros (the masked P is 0, and 0 · garbage could be NaN).
 * base: element offset of position 0 of this head; stride: elements between
 * positions. aligned: base, stride and the cache 16-byte aligned (cp.async),
 * else plain 2-byte loads. */
template <int D, int W>
static __device__ __forceinline__ void load_tile(__half *sh, const __half *__restrict__ cache, int64_t base,
                                                 int64_t stride, int64_t t0, int64_t hi, bool aligned)
{
    constexpr int CH = D / 8, LD = D + LRUN_K_FATTN_PAD; /* 16-byte pieces per row */
    constexpr int NT = 32 * W;
#pragma unroll
    for (int i = threadIdx.x; i < LRUN_K_FATTN_BN * CH; i += NT) {
        const int r = i / CH, c = (i % CH) * 8;
        const bool valid = t0 + r < hi;
        __half *dst = sh + r * LD + c;
        const __half *src = cache + base + (t0 + r) * stride + c;
        if (aligned) {
            cp_async16(dst, valid ? src : cache, valid);
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) dst[j] = valid ? src[j] : __ushort_as_half(0);
        }
    }
}

// ---------------------------------------------------------------- the kernel

/* Block b of W warps: head h = b % n_head, query tile n_qt - 1 - b /
 * n_head of 16·W tokens (the longest rows first, so the short diagonal
 * tiles fill the tail of the launch). q (n_tok, n_head, D) f32, out the
 * same. */
template <int D, int W>
__global__ void __launch_bounds__(32 * W)
    attn_flash(const float *__restrict__ q, const __half *__restrict__ ck, const __half *__restrict__ cv,
               const int64_t *__restrict__ k_base, const int64_t *__restrict__ v_base,
               const int32_t *__restrict__ n_kv, int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t max_kv,
               float qscale, int64_t n_swa, int caches_aligned, float *__restrict__ out)
{
    constexpr int BM = 16 * W, BN = LRUN_K_FATTN_BN, LD = D + LRUN_K_FATTN_PAD;
    constexpr int KD = D / 16, NJ = BN / 8, ND = D / 8; /* k-steps of Q·Kᵀ, n-tiles of S and of O */
    __shared__ __align__(16) __half ks[BN * LD], vs[BN * LD];
    __shared__ int64_t s_kb[BM], s_vb[BM];
    __shared__ int32_t s_lo[BM], s_hi[BM]; /* each row's positions [lo, hi); lo = hi: none */

    lrun_k_pdl_trigger();
    lrun_k_pdl_wait();
    const int64_t n_qt = (n_tok + BM - 1) / BM;
    const int64_t h = blockIdx.x % n_head, tok0 = (n_qt - 1 - blockIdx.x / n_head) * BM;
    const int64_t hk = h / (n_head / n_head_kv), stride = n_head_kv * D;
    const int rows = (int)(n_tok - tok0 < BM ? n_tok - tok0 : BM);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c2 = (lane & 3) * 2;

    for (int r = tid; r < BM; r += 32 * W) {
        int64_t nk = 0, lo = 0, kb = 0, vb = 0;
        if (r < rows) {
            nk = n_kv[tok0 + r];
            nk = nk < 0 ? 0 : (nk > max_kv ? max_kv : nk); /* as lrun_k_attention */
            lo = n_swa > 0 && nk > n_swa ? nk - n_swa : 0;
            kb = k_base[tok0 + r] + hk * D, vb = v_base[tok0 + r] + hk * D;
        }
        s_lo[r] = (int32_t)lo, s_hi[r] = (int32_t)nk, s_kb[r] = kb, s_vb[r] = vb;
    }

    /* this lane's A fragments of q·scale·log2 e for its warp's 16 rows: rows
     * g and g + 8, dims 16 kk + c2 (+1) and + 8 (+1); rows past n_tok zero */
    uint32_t qa[KD][4];
    {
        const int r0 = warp * 16 + g, r1 = r0 + 8;
        const float *q0 = q + ((tok0 + r0) * n_head + h) * D, *q1 = q + ((tok0 + r1) * n_head + h) * D;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            const int d0 = kk * 16 + c2;
            float2 a = make_float2(0.0f, 0.0f), b = a, c = a, e = a;
            if (r0 < rows) a = *(const float2 *)(q0 + d0), c = *(const float2 *)(q0 + d0 + 8);
            if (r1 < rows) b = *(const float2 *)(q1 + d0), e = *(const float2 *)(q1 + d0 + 8);
            qa[kk][0] = pack_half2(a.x * qscale, a.y * qscale);
            qa[kk][1] = pack_half2(b.x * qscale, b.y * qscale);
            qa[kk][2] = pack_half2(c.x * qscale, c.y * qscale);
            qa[kk][3] = pack_half2(e.x * qscale, e.y * qscale);
        }
    }
    __syncthreads(); /* the row table is published */

    float o[ND][4];
#pragma unroll
    for (int j = 0; j < ND; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}; /* rows g, g + 8; l this lane's part */

    /* runs of rows with one (k_base, v_base): every thread reads the same
     * table, so the loops below are uniform and may synchronize */
    for (int sr = 0; sr < rows;) {
        const int64_t kb = s_kb[sr], vb = s_vb[sr];
        int se = sr + 1;
        while (se < rows && s_kb[se] == kb && s_vb[se] == vb) se++;
        int64_t lo = INT64_MAX, hi = 0, wlo = INT64_MAX, whi = 0;
        for (int r = sr; r < se; r++)
            if (s_hi[r] > s_lo[r]) {
                lo = s_lo[r] < lo ? s_lo[r] : lo, hi = s_hi[r] > hi ? s_hi[r] : hi;
                if (r / 16 == warp) wlo = s_lo[r] < wlo ? s_lo[r] : wlo, whi = s_hi[r] > whi ? s_hi[r] : whi;
            }
        /* this lane's rows' ranges in the run (others see nothing here) */
        int rlo[2], rhi[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int r = warp * 16 + g + 8 * i;
            const bool in = r >= sr && r < se;
            rlo[i] = in ? s_lo[r] : 0, rhi[i] = in ? s_hi[r] : 0;
        }
        const bool aligned = caches_aligned && kb % 8 == 0 && vb % 8 == 0;
        if (lo < hi) {
            load_tile<D, W>(ks, ck, kb, stride, lo, hi, aligned);
            cp_async_commit();
        }
        for (int64_t t0 = lo; t0 < hi; t0 += BN) {
            cp_async_wait<0>();
            __syncthreads(); /* K(t0) is in; every warp is done with the last V */
            load_tile<D, W>(vs, cv, vb, stride, t0, hi, aligned);
            cp_async_commit();
            const bool active = t0 < whi && t0 + BN > wlo;
            float s[NJ][4];
            if (active) {
#pragma unroll
                for (int j = 0; j < NJ; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < KD; kk += 2)
#pragma unroll
                    for (int j = 0; j < NJ; j++) {
                        uint32_t b[4]; /* (b0, b1) of k-step kk, then of kk + 1 */
                        ldsm_x4(b, ks + (j * 8 + (lane & 7)) * LD + kk * 16 + (lane >> 3) * 8);
                        mma16816(s[j], qa[kk], b[0], b[1]);
                        mma16816(s[j], qa[kk + 1], b[2], b[3]);
                    }
            }
            __syncthreads(); /* every warp is done with K(t0) */
            if (t0 + BN < hi) load_tile<D, W>(ks, ck, kb, stride, t0 + BN, hi, aligned);
            cp_async_commit(); /* possibly empty: the wait below counts groups */
            uint32_t pa[BN / 16][4];
            if (active) {
                /* online softmax of rows g (i 0: s[j][0..1]) and g + 8 (i 1: s[j][2..3]) */
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    float mx = m[i];
#pragma unroll
                    for (int j = 0; j < NJ; j++)
#pragma unroll
                        for (int u = 0; u < 2; u++) {
                            const int t = (int)t0 + j * 8 + c2 + u; /* max_kv <= INT32_MAX */
                            float &v = s[j][2 * i + u];
                            v = t >= rlo[i] && t < rhi[i] ? v : -INFINITY;
                            mx = fmaxf(mx, v);
                        }
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2)); /* the 4 lanes of the row */
                    const float ref = mx == -INFINITY ? 0.0f : mx;       /* nothing seen yet: p are 0 */
                    const float corr = exp2f(m[i] - ref);                /* 0 while m is -inf */
                    m[i] = mx;
                    float sum = 0.0f;
#pragma unroll
                    for (int j = 0; j < NJ; j++)
#pragma unroll
                        for (int u = 0; u < 2; u++) {
                            float &v = s[j][2 * i + u];
                            v = exp2f(v - ref);
                            sum += v;
                        }
                    l[i] = l[i] * corr + sum;
#pragma unroll
                    for (int j = 0; j < ND; j++) o[j][2 * i] *= corr, o[j][2 * i + 1] *= corr;
                }
                /* S's accumulators of n-tiles 2kk, 2kk + 1 are P's A fragment of k-step kk */
#pragma unroll
                for (int kk = 0; kk < BN / 16; kk++) {
                    pa[kk][0] = pack_half2(s[2 * kk][0], s[2 * kk][1]);
                    pa[kk][1] = pack_half2(s[2 * kk][2], s[2 * kk][3]);
                    pa[kk][2] = pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                    pa[kk][3] = pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
                }
            }
            cp_async_wait<1>();
            __syncthreads(); /* V(t0) is in */
            if (active)
#pragma unroll
                for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
                    for (int j = 0; j < ND; j += 2) {
                        uint32_t b[4]; /* (b0, b1) of n-tile j, then of j + 1 */
                        ldsm_x4_trans(b, vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + j * 8 +
                                             (lane >> 4) * 8);
                        mma16816(o[j], pa[kk], b[0], b[1]);
                        mma16816(o[j + 1], pa[kk], b[2], b[3]);
                    }
        }
        sr = se;
    }
    cp_async_wait<0>();

    /* out = O / l, l summed over the row's 4 lanes; a row that saw nothing is 0 */
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float sum = l[i];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        const int r = warp * 16 + g + 8 * i;
        if (r >= rows) continue;
        float *dst = out + ((tok0 + r) * n_head + h) * D + c2;
#pragma unroll
        for (int j = 0; j < ND; j++) *(float2 *)(dst + j * 8) = make_float2(o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
    }
}

// ---------------------------------------------------------------- launcher

static int fattn_warps = LRUN_K_FATTN_WARPS; /* lrun_k_attention_flash_tune */

extern "C" int lrun_k_attention_flash_tune(int warps)
{
    const int was = fattn_warps;
    if (warps == 4 || warps == 8) fattn_warps = warps;
    return was;
}

extern "C" int lrun_k_attention_flash_supported(lrun_dtype kv_dtype, int64_t head_dim)
{
    return kv_dtype == LRUN_DTYPE_F16 && (head_dim == 64 || head_dim == 128);
}

extern "C" lrun_status lrun_k_attention_flash(const float *q, const void *cache_k, const void *cache_v,
                                              const int64_t *k_base, const int64_t *v_base, const int32_t *n_kv,
                                              int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                                              int64_t max_kv, float scale, int64_t n_swa, float *out, void *stream)
{
    const char *op = "lrun_k_attention_flash";
    if (!q || !cache_k || !cache_v || !k_base || !v_base || !n_kv || !out)
        return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op,
                         !q         ? "q"
                         : !cache_k ? "cache_k"
                         : !cache_v ? "cache_v"
                         : !k_base  ? "k_base"
                         : !v_base  ? "v_base"
                         : !n_kv    ? "n_kv"
                                    : "out");
    if (n_tok <= 0 || n_head <= 0 || n_head_kv <= 0 || head_dim <= 0 || max_kv <= 0)
        return lrun_fail(LRUN_E_ARG,
                         "%s: shape n_tok %lld, n_head %lld, n_head_kv %lld, head_dim %lld, max_kv %lld "
                         "(all must be > 0)",
                         op, (long long)n_tok, (long long)n_head, (long long)n_head_kv, (long long)head_dim,
                         (long long)max_kv);
    if (n_head % n_head_kv != 0)
        return lrun_fail(LRUN_E_ARG, "%s: n_head %lld is not a multiple of n_head_kv %lld", op, (long long)n_head,
                         (long long)n_head_kv);
    if (head_dim != 64 && head_dim != 128)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: head_dim %lld (64 or 128; lrun_k_attention takes the others)", op,
                         (long long)head_dim);
    if (max_kv > INT32_MAX) max_kv = INT32_MAX; /* bounds int32 lengths: the same clamp */
    if (!(scale == scale) || scale == INFINITY || scale == -INFINITY)
        return lrun_fail(LRUN_E_ARG, "%s: scale %g is not finite", op, (double)scale);
    if (n_swa < 0) return lrun_fail(LRUN_E_ARG, "%s: n_swa %lld (0: no window, else > 0)", op, (long long)n_swa);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const int w = fattn_warps, bm = 16 * w;
    const int64_t n_qt = (n_tok + bm - 1) / bm;
    int64_t blocks;
    if (__builtin_mul_overflow(n_qt, n_head, &blocks) || blocks > LRUN_K_MAX_GRID)
        return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld x n_head %lld is too many blocks", op, (long long)n_tok,
                         (long long)n_head);
    const int aligned = ((uintptr_t)cache_k & 15) == 0 && ((uintptr_t)cache_v & 15) == 0;
    const float qscale = scale * 1.4426950408889634f; /* log2 e: the softmax runs in exp2 */
    cudaStream_t st = (cudaStream_t)stream;
    const __half *hk = (const __half *)cache_k, *hv = (const __half *)cache_v;
    auto kern = head_dim == 64 ? (w == 8 ? attn_flash<64, 8> : attn_flash<64, 4>)
                               : (w == 8 ? attn_flash<128, 8> : attn_flash<128, 4>);
    (void)lrun_k_launch(kern, dim3((unsigned)blocks), dim3(32 * w), 0, st, q, hk, hv, k_base, v_base, n_kv, n_tok,
                        n_head, n_head_kv, max_kv, qscale, n_swa, aligned, out);
    return lrun_k_launched(op);
}
