/* attention.cu — split-KV attention and the merge of its splits (see
 * attention.cuh). Against the CPU twin (lrun_cpu_attention_head: the whole
 * softmax, then P·V) the online softmax differs only in f32 rounding. */
#include "attention.cuh"

/* Element i of a cache of dtype KV (F16 or F32) as f32. */
template <int KV> static __device__ __forceinline__ float kv_at(const void *base, int64_t i)
{
    if (KV == LRUN_DTYPE_F16) return lrun_k_f16(__ldg((const unsigned short *)base + i));
    return __ldg((const float *)base + i);
}

// ---------------------------------------------------------------- splits

/* One job, positions [t0, t1) of token tok's head h, scalar: one warp per
 * position, lanes over head_dim with element loads. Any head_dim and
 * alignment. sh holds head_dim + LRUN_K_ATTN_TILE + 32 floats. */
template <int KV, bool CAP>
static __device__ __forceinline__ void job_scalar(const float *__restrict__ q, const void *__restrict__ ck,
                                                  const void *__restrict__ cv, int64_t kb, int64_t vb, int64_t t0,
                                                  int64_t t1, int64_t job, int64_t th, int64_t head_dim,
                                                  int64_t stride, int64_t n_split, float scale, float cap,
                                                  float *__restrict__ out, float *__restrict__ part, float *sh,
                                                  float sink)
{
    float *qs = sh;                          /* (head_dim) q * scale */
    float *ps = sh + head_dim;               /* (TILE) scores, then e^(s - m) */
    float *scratch = ps + LRUN_K_ATTN_TILE;  /* (32) block reductions */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nwarps = LRUN_K_ATTN_THREADS / 32;
    for (int64_t d = tid; d < head_dim; d += LRUN_K_ATTN_THREADS) qs[d] = q[th * head_dim + d] * scale;
    __syncthreads();

    float m = -INFINITY, l = 0.0f, acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t tile = t0; tile < t1; tile += LRUN_K_ATTN_TILE) {
        const int len = (int)(t1 - tile < LRUN_K_ATTN_TILE ? t1 - tile : LRUN_K_ATTN_TILE);
        for (int p = warp; p < len; p += nwarps) {
            const int64_t kr = kb + (tile + p) * stride;
            float dot = 0.0f;
            for (int64_t d = lane; d < head_dim; d += 32) dot = fmaf(qs[d], kv_at<KV>(ck, kr + d), dot);
            dot = lrun_k_warp_sum(dot);
            if (CAP) dot = tanhf(dot * (1.0f / cap)) * cap; /* gemma2's soft-cap of the scaled score */
            if (lane == 0) ps[p] = dot;
        }
        __syncthreads();
        float tm = -INFINITY;
        for (int p = tid; p < len; p += LRUN_K_ATTN_THREADS) tm = fmaxf(tm, ps[p]);
        tm = lrun_k_block_reduce<LRUN_K_ATTN_THREADS, 1>(tm, scratch);
        const float mn = fmaxf(m, tm);
        const float corr = m == -INFINITY ? 0.0f : expf(m - mn); /* rescales what earlier tiles summed */
        float ts = 0.0f;
        for (int p = tid; p < len; p += LRUN_K_ATTN_THREADS) {
            const float e = expf(ps[p] - mn);
            ps[p] = e;
            ts += e;
        }
        ts = lrun_k_block_reduce<LRUN_K_ATTN_THREADS, 0>(ts, scratch); /* also publishes ps */
        l = l * corr + ts;
        m = mn;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int64_t d = tid + (int64_t)j * LRUN_K_ATTN_THREADS;
            if (d < head_dim) {
                const int64_t vr = vb + tile * stride + d;
                float a = acc[j] * corr;
#pragma unroll 4
                for (int p = 0; p < len; p++) a = fmaf(ps[p], kv_at<KV>(cv, vr + p * stride), a);
                acc[j] = a;
            }
        }
        __syncthreads(); /* ps is rewritten by the next tile */
    }

    job_finish(job, th, head_dim, n_split, m, l, [&](int j, int64_t) { return acc[j]; }, out, part, sink);
}

/* One job, positions [t0, t1), vectorized: a row of head_dim elements is read
 * by `lanes` = head_dim / E lanes with one 16-byte load each, so a warp
 * scores 32 / lanes positions at once with a reduction of log2(lanes)
 * shuffles. Each group of lanes keeps its own online softmax (m, l, acc)
 * over LRUN_K_ATTN_VEC_UNROLL positions per step, their K and V rows loaded
 * before any is used (many loads in flight per thread, no block barrier per
 * step); the groups are merged in shared memory at the end, in group order.
 * Needs head_dim = lanes * E with lanes a power of two <= 32 and kb, vb,
 * stride multiples of E on 16-byte aligned caches (the caller checks). sh
 * holds LRUN_K_ATTN_VEC_SMEM floats. */
template <int KV, bool CAP>
static __device__ __forceinline__ void job_vec(const float *__restrict__ q, const void *__restrict__ ck,
                                               const void *__restrict__ cv, int64_t kb, int64_t vb, int64_t t0,
                                               int64_t t1, int64_t job, int64_t th, int64_t head_dim, int64_t stride,
                                               int64_t n_split, float scale, float cap, int lanes,
                                               float *__restrict__ out, float *__restrict__ part, float *sh,
                                               float sink)
{
    constexpr int E = KV == LRUN_DTYPE_F16 ? 8 : 4, U = LRUN_K_ATTN_VEC_UNROLL;
    constexpr int64_t ES = KV == LRUN_DTYPE_F16 ? 2 : 4;
    const int tid = threadIdx.x, g = tid / lanes, sub = tid % lanes, ng = LRUN_K_ATTN_THREADS / lanes;
    float qr[E], acc[E];
#pragma unroll
    for (int i = 0; i < E; i++) qr[i] = q[th * head_dim + sub * E + i] * scale, acc[i] = 0.0f;
    const uint8_t *kp = (const uint8_t *)ck + (kb + sub * E) * ES, *vp = (const uint8_t *)cv + (vb + sub * E) * ES;
    const int64_t row = stride * ES;
    float m = -INFINITY, l = 0.0f;
    /* every lane runs every step (the shuffles need the whole warp); a
     * group's positions past t1 are masked */
    for (int64_t base = t0; base < t1; base += (int64_t)ng * U) {
        const int64_t t = base + (int64_t)g * U;
        uint4 kw[U], vw[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (t + u < t1) {
                kw[u] = lrun_k_ld128_stream(kp + (t + u) * row);
                vw[u] = lrun_k_ld128_stream(vp + (t + u) * row);
            } else {
                kw[u] = vw[u] = make_uint4(0, 0, 0, 0);
            }
        }
        float sc[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            float f[E], dot = 0.0f;
            kv_unpack<KV>(kw[u], f);
#pragma unroll
            for (int i = 0; i < E; i++) dot = fmaf(qr[i], f[i], dot);
            sc[u] = dot;
        }
        attn_group_step<U, E, CAP>(sc, t, t1, lanes, m, l, acc, [&](int u, float *f) { kv_unpack<KV>(vw[u], f); },
                                   cap);
    }
    attn_groups_finish<E>(job, th, head_dim, n_split, lanes, m, l, acc, out, part, sh, sink);
}

/* Job j = (tok * n_head + h) * n_split + split. part (jobs, head_dim + 2):
 * m, l, acc[head_dim] of each job when n_split > 1. vec_lanes > 0: the
 * shape allows job_vec with that many lanes per row; a job whose k_base or
 * v_base is not a multiple of 16 bytes still goes the scalar way. */
template <int KV, bool CAP>
__global__ void __launch_bounds__(LRUN_K_ATTN_THREADS)
    attn_split(const float *__restrict__ q, const void *__restrict__ ck, const void *__restrict__ cv,
               const int64_t *__restrict__ k_base, const int64_t *__restrict__ v_base, const int32_t *__restrict__ n_kv,
               int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv, int64_t n_split,
               float scale, float cap, int vec_lanes, int64_t n_swa, const float *__restrict__ sinks,
               float *__restrict__ out, float *__restrict__ part)
{
    extern __shared__ float sh[];
    lrun_k_pdl_trigger();
    lrun_k_pdl_wait();
    constexpr int64_t E = KV == LRUN_DTYPE_F16 ? 8 : 4;
    const int64_t group = n_head / n_head_kv, stride = n_head_kv * head_dim; /* elements between positions */
    const int64_t jobs = n_tok * n_head * n_split;

    for (int64_t job = blockIdx.x; job < jobs; job += gridDim.x) {
        const int64_t sp = job % n_split, th = job / n_split, h = th % n_head, tok = th / n_head, hk = h / group;
        int64_t nk = n_kv[tok];
        nk = nk < 0 ? 0 : (nk > max_kv ? max_kv : nk); /* never past what work and the caches were sized for */
        /* a sliding window (n_swa > 0): only the last n_swa positions, split the same way */
        const int64_t lo = n_swa > 0 && nk > n_swa ? nk - n_swa : 0;
        const int64_t chunk = (nk - lo + n_split - 1) / n_split;
        const int64_t t0 = lo + sp * chunk < nk ? lo + sp * chunk : nk;
        const int64_t t1 = t0 + chunk < nk ? t0 + chunk : nk;
        const int64_t kb = k_base[tok] + hk * head_dim, vb = v_base[tok] + hk * head_dim;
        const float sink = sinks ? sinks[h] : -INFINITY;
        if (vec_lanes > 0 && kb % E == 0 && vb % E == 0)
            job_vec<KV, CAP>(q, ck, cv, kb, vb, t0, t1, job, th, head_dim, stride, n_split, scale, cap, vec_lanes, out,
                             part, sh, sink);
        else
            job_scalar<KV, CAP>(q, ck, cv, kb, vb, t0, t1, job, th, head_dim, stride, n_split, scale, cap, out, part,
                                sh, sink);
        __syncthreads(); /* sh is rewritten by the next job */
    }
}

// ---------------------------------------------------------------- merge

/* out (n_th, head_dim) = Σ_s acc_s e^(m_s - M) / Σ_s l_s e^(m_s - M), M the
 * largest m_s of the splits that saw any position; with sinks, (token, head)
 * th's sinks[th % n_head] joins M and adds e^(sink - M) to the denominator. */
__global__ void __launch_bounds__(LRUN_K_ATTN_THREADS)
    attn_merge(const float *__restrict__ part, int64_t n_th, int64_t n_split, int64_t head_dim,
               const float *__restrict__ sinks, int64_t n_head, float *__restrict__ out)
{
    /* every split's m and l are loaded in one round into shared memory and
     * its weight e^(m - M) computed once: a decode merges 16 splits per
     * head, and a loop of dependent global loads per split was most of the
     * merge's time. Sums run in split order, as before, so the bits are
     * the same. */
    __shared__ float sm[LRUN_K_ATTN_TARGET_BLOCKS], sl[LRUN_K_ATTN_TARGET_BLOCKS], inv_sum;
    lrun_k_pdl_trigger();
    lrun_k_pdl_wait();
    const int64_t w = head_dim + 2;
    for (int64_t th = blockIdx.x; th < n_th; th += gridDim.x) {
        const float *pp = part + th * n_split * w;
        for (int64_t s = threadIdx.x; s < n_split; s += LRUN_K_ATTN_THREADS) sm[s] = pp[s * w], sl[s] = pp[s * w + 1];
        __syncthreads();
        if (threadIdx.x == 0) {
            float mx = -INFINITY, sum = 0.0f;
            for (int64_t s = 0; s < n_split; s++)
                if (sl[s] > 0.0f) mx = fmaxf(mx, sm[s]);
            const float sink = sinks ? sinks[th % n_head] : -INFINITY;
            const bool any = mx != -INFINITY;
            if (sink != -INFINITY) mx = fmaxf(mx, sink);
            for (int64_t s = 0; s < n_split; s++) {
                sm[s] = sl[s] > 0.0f ? expf(sm[s] - mx) : 0.0f; /* m becomes the split's weight */
                if (sl[s] > 0.0f) sum += sl[s] * sm[s];
            }
            if (sink != -INFINITY && any) sum += expf(sink - mx);
            inv_sum = sum > 0.0f ? 1.0f / sum : 0.0f;
        }
        __syncthreads();
        for (int64_t d = threadIdx.x; d < head_dim; d += LRUN_K_ATTN_THREADS) {
            float a = 0.0f;
#pragma unroll 8
            for (int64_t s = 0; s < n_split; s++)
                if (sl[s] > 0.0f) a = fmaf(pp[s * w + 2 + d], sm[s], a);
            out[th * head_dim + d] = a * inv_sum;
        }
        __syncthreads(); /* sm, sl and inv_sum are rewritten for the next job */
    }
}

lrun_status lrun_k_attn_merge_launch(const float *part, int64_t n_th, int64_t n_split, int64_t head_dim, float *out,
                                     cudaStream_t st, const char *op, const float *sinks, int64_t n_head)
{
    const unsigned gm = (unsigned)(n_th < LRUN_K_MAX_GRID ? n_th : LRUN_K_MAX_GRID);
    (void)lrun_k_launch(attn_merge, dim3(gm), dim3(LRUN_K_ATTN_THREADS), 0, st, part, n_th, n_split, head_dim, sinks,
                        n_head, out);
    return lrun_k_launched(op);
}

// ---------------------------------------------------------------- launchers

static lrun_status attention(const char *op, lrun_dtype kv_dtype, const float *q, const void *cache_k,
                             const void *cache_v, const int64_t *k_base, const int64_t *v_base, const int32_t *n_kv,
                             int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv,
                             float scale, int64_t n_swa, float softcap, const float *sinks, float *out, void *work,
                             void *stream);

extern "C" size_t lrun_k_attention_work_bytes(int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t max_kv)
{
    int64_t jobs;
    if (n_tok <= 0 || n_head <= 0 || head_dim <= 0 || max_kv <= 0) return 0;
    if (__builtin_mul_overflow(n_tok, n_head, &jobs)) return SIZE_MAX;
    /* the most any call with n_tok' <= n_tok needs: fewer tokens can mean
     * more splits each (jobs * splits stays below 3/2 of the target) */
    size_t most = 0;
    const int64_t upto = n_tok < LRUN_K_ATTN_TARGET_BLOCKS ? n_tok : LRUN_K_ATTN_TARGET_BLOCKS;
    for (int64_t t = 1; t <= upto; t++) {
        const int64_t s = lrun_k_attn_splits(t, n_head, max_kv);
        if (s <= 1) continue;
        const size_t b = (size_t)(t * n_head * s) * (size_t)(head_dim + 2) * sizeof(float);
        most = b > most ? b : most;
    }
    return most;
}

extern "C" lrun_status lrun_k_attention(lrun_dtype kv_dtype, const float *q, const void *cache_k, const void *cache_v,
                                        const int64_t *k_base, const int64_t *v_base, const int32_t *n_kv,
                                        int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                                        int64_t max_kv, float scale, float *out, void *work, void *stream)
{
    return lrun_k_attention_window(kv_dtype, q, cache_k, cache_v, k_base, v_base, n_kv, n_tok, n_head, n_head_kv,
                                   head_dim, max_kv, scale, 0, out, work, stream);
}

extern "C" lrun_status lrun_k_attention_window(lrun_dtype kv_dtype, const float *q, const void *cache_k,
                                               const void *cache_v, const int64_t *k_base, const int64_t *v_base,
                                               const int32_t *n_kv, int64_t n_tok, int64_t n_head, int64_t n_head_kv,
                                               int64_t head_dim, int64_t max_kv, float scale, int64_t n_swa,
                                               float *out, void *work, void *stream)
{
    return lrun_k_attention_softcap(kv_dtype, q, cache_k, cache_v, k_base, v_base, n_kv, n_tok, n_head, n_head_kv,
                                    head_dim, max_kv, scale, n_swa, 0.0f, out, work, stream);
}

extern "C" lrun_status lrun_k_attention_softcap(lrun_dtype kv_dtype, const float *q, const void *cache_k,
                                                const void *cache_v, const int64_t *k_base, const int64_t *v_base,
                                                const int32_t *n_kv, int64_t n_tok, int64_t n_head, int64_t n_head_kv,
                                                int64_t head_dim, int64_t max_kv, float scale, int64_t n_swa,
                                                float softcap, float *out, void *work, void *stream)
{
    return attention("lrun_k_attention", kv_dtype, q, cache_k, cache_v, k_base, v_base, n_kv, n_tok, n_head,
                     n_head_kv, head_dim, max_kv, scale, n_swa, softcap, NULL, out, work, stream);
}

extern "C" lrun_status lrun_k_attention_sinks(lrun_dtype kv_dtype, const float *q, const void *cache_k,
                                              const void *cache_v, const int64_t *k_base, const int64_t *v_base,
                                              const int32_t *n_kv, int64_t n_tok, int64_t n_head, int64_t n_head_kv,
                                              int64_t head_dim, int64_t max_kv, float scale, int64_t n_swa,
                                              const float *sinks, float *out, void *work, void *stream)
{
    if (!sinks) return lrun_fail(LRUN_E_ARG, "lrun_k_attention_sinks: sinks is NULL");
    return attention("lrun_k_attention_sinks", kv_dtype, q, cache_k, cache_v, k_base, v_base, n_kv, n_tok, n_head,
                     n_head_kv, head_dim, max_kv, scale, n_swa, 0.0f, sinks, out, work, stream);
}

static lrun_status attention(const char *op, lrun_dtype kv_dtype, const float *q, const void *cache_k,
                             const void *cache_v, const int64_t *k_base, const int64_t *v_base, const int32_t *n_kv,
                             int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv,
                             float scale, int64_t n_swa, float softcap, const float *sinks, float *out, void *work,
                             void *stream)
{
    if (!q || !cache_k || !cache_v || !k_base || !v_base || !n_kv || !out)
        return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op,
                         !q ? "q" : !cache_k ? "cache_k" : !cache_v ? "cache_v" : !k_base ? "k_base"
                                  : !v_base ? "v_base" : !n_kv ? "n_kv" : "out");
    if (kv_dtype != LRUN_DTYPE_F16 && kv_dtype != LRUN_DTYPE_F32)
        return lrun_fail(LRUN_E_ARG, "%s: kv_dtype %s (expected f16 or f32)", op, lrun_dtype_name(kv_dtype));
    if (n_tok <= 0 || n_head <= 0 || n_head_kv <= 0 || head_dim <= 0 || max_kv <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_tok %lld, n_head %lld, n_head_kv %lld, head_dim %lld, max_kv %lld "
                         "(all must be > 0)", op, (long long)n_tok, (long long)n_head, (long long)n_head_kv,
                         (long long)head_dim, (long long)max_kv);
    if (n_head % n_head_kv != 0)
        return lrun_fail(LRUN_E_ARG, "%s: n_head %lld is not a multiple of n_head_kv %lld", op, (long long)n_head,
                         (long long)n_head_kv);
    if (head_dim > LRUN_K_ATTN_MAX_HEAD_DIM)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: head_dim %lld (at most %d)", op, (long long)head_dim,
                         LRUN_K_ATTN_MAX_HEAD_DIM);
    if (!(scale == scale) || scale == INFINITY || scale == -INFINITY)
        return lrun_fail(LRUN_E_ARG, "%s: scale %g is not finite", op, (double)scale);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    if (n_swa < 0) return lrun_fail(LRUN_E_ARG, "%s: n_swa %lld (0: no window, else > 0)", op, (long long)n_swa);
    if (!(softcap >= 0.0f) || softcap == INFINITY)
        return lrun_fail(LRUN_E_ARG, "%s: softcap %g (0: none, else finite > 0)", op, (double)softcap);
    int64_t n_th, qn;
    if (__builtin_mul_overflow(n_tok, n_head, &n_th) || __builtin_mul_overflow(n_th, head_dim, &qn))
        return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld x n_head %lld x head_dim %lld overflows", op, (long long)n_tok,
                         (long long)n_head, (long long)head_dim);
    const int64_t n_split = lrun_k_attn_splits(n_tok, n_head, max_kv);
    if (n_split > 1 && !work)
        return lrun_fail(LRUN_E_ARG, "%s: work is NULL (this shape needs %zu bytes: lrun_k_attention_work_bytes)", op,
                         lrun_k_attention_work_bytes(n_tok, n_head, head_dim, max_kv));

    cudaStream_t st = (cudaStream_t)stream;
    const int64_t jobs = n_th * n_split;
    const unsigned g = (unsigned)(jobs < LRUN_K_MAX_GRID ? jobs : LRUN_K_MAX_GRID);
    /* the vector path: a row is a power of two <= 32 of 16-byte pieces, on
     * 16-byte aligned caches (k_base, v_base are checked per job) */
    const int64_t per16 = kv_dtype == LRUN_DTYPE_F16 ? 8 : 4, lanes = head_dim / per16;
    const int vec_lanes = head_dim % per16 == 0 && lanes <= 32 && (lanes & (lanes - 1)) == 0 &&
                                  ((uintptr_t)cache_k & 15) == 0 && ((uintptr_t)cache_v & 15) == 0
                              ? (int)lanes
                              : 0;
    const size_t scalar_sh = (size_t)(head_dim + LRUN_K_ATTN_TILE + 32), vec_sh = LRUN_K_ATTN_VEC_SMEM(per16);
    const size_t shmem = (vec_lanes && vec_sh > scalar_sh ? vec_sh : scalar_sh) * sizeof(float);
    float *part = (float *)work;
    /* the soft-capped kernels are their own instantiations: without a cap the code is what it was */
    const bool f16 = kv_dtype == LRUN_DTYPE_F16;
    auto kern = softcap > 0.0f ? (f16 ? attn_split<LRUN_DTYPE_F16, true> : attn_split<LRUN_DTYPE_F32, true>)
                               : (f16 ? attn_split<LRUN_DTYPE_F16, false> : attn_split<LRUN_DTYPE_F32, false>);
    (void)lrun_k_launch(kern, dim3(g), dim3(LRUN_K_ATTN_THREADS), shmem, st, q, cache_k, cache_v, k_base, v_base, n_kv,
                        n_tok, n_head, n_head_kv, head_dim, max_kv, n_split, scale, softcap, vec_lanes, n_swa, sinks,
                        out, part);
    lrun_status s = lrun_k_launched(op);
    if (s != LRUN_OK || n_split == 1) return s;
    return lrun_k_attn_merge_launch(part, n_th, n_split, head_dim, out, st, op, sinks, n_head);
}
