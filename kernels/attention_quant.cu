/* attention_quant.cu — decode attention straight from the quantized KV cache
 * (lrun_k_attention_quant in kernels.h; docs/kv-cache.md "On the GPU").
 *
 * The slot path dequantizes every stored position of a layer into an f16
 * slot and lrun_k_attention reads the slot back: codes read, f16 written,
 * f16 read. Here the attention reads the codes themselves. It is
 * lrun_k_attention's vector path (attention.cuh: the same splits, the same
 * work layout, the same merge) with another loader:
 *   positions below q_lo   one 16-byte load of codes per lane (16 int8 or
 *                          32 int4 values), the lane's group (scale, min),
 *                          each value min + q·scale rounded to the cache
 *                          dtype, as lrun_k_kv_dequant_fill stores it;
 *   positions from q_lo    the ring's exact rows, E·esize bytes per lane.
 * So a lane holds E = 16 (int8) or 32 (int4) elements of a head's row and
 * a row of head_dim takes head_dim / E lanes: 8 for int8 and 4 for int4 at
 * head_dim 128. Each group of lanes keeps its own online softmax over
 * LRUN_K_ATTN_QUANT_UNROLL positions per step, merged at the end
 * (attn_groups_finish). Shapes it does not take: see
 * lrun_k_attention_quant_supported. */
#include "attention.cuh"

/* Positions whose codes each group of lanes loads per step. */
#ifndef LRUN_K_ATTN_QUANT_UNROLL
#define LRUN_K_ATTN_QUANT_UNROLL 4
#endif

/* 16 bytes of codes at p, aligned to al (16, 8 or 4: uniform per launch). */
static __device__ __forceinline__ uint4 codes_load(const uint8_t *p, int al)
{
    if (al >= 16) return lrun_k_ld128_stream(p);
    if (al >= 8) {
        const uint2 a = __ldg((const uint2 *)p), b = __ldg((const uint2 *)p + 1);
        return make_uint4(a.x, a.y, b.x, b.y);
    }
    const uint32_t *w = (const uint32_t *)p;
    return make_uint4(__ldg(w), __ldg(w + 1), __ldg(w + 2), __ldg(w + 3));
}

/* One value as the slot holds it: min + q·scale in f32 (the rounding of
 * kv_dequant_rows), then rounded to the cache dtype. */
template <int KV> static __device__ __forceinline__ float dq(unsigned q, float scale, float mn)
{
    const float x = __fadd_rn(mn, __fmul_rn((float)q, scale));
    return KV == LRUN_DTYPE_F16 ? __half2float(__float2half_rn(x)) : x;
}

/* 16 bytes of codes as 16 (int8) or 32 (int4, low nibble first) values. */
template <int KV, int BITS> static __device__ __forceinline__ void codes_unpack(uint4 w, float2 sm, float *f)
{
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const unsigned byte = (u[i] >> (8 * b)) & 255u;
            if (BITS == 8) {
                f[4 * i + b] = dq<KV>(byte, sm.x, sm.y);
            } else {
                f[8 * i + 2 * b] = dq<KV>(byte & 15u, sm.x, sm.y);
                f[8 * i + 2 * b + 1] = dq<KV>(byte >> 4, sm.x, sm.y);
            }
        }
}

/* A lane's (scale, min): the pair of its group, 4-byte aligned. */
static __device__ __forceinline__ float2 params_load(const uint8_t *p)
{
    return make_float2(__ldg((const float *)p), __ldg((const float *)p + 1));
}

/* E elements of a ring row (16-byte aligned) as floats. */
template <int KV, int E> static __device__ __forceinline__ void ring_load(const uint8_t *p, float *f)
{
    constexpr int PER = KV == LRUN_DTYPE_F16 ? 8 : 4; /* elements per 16 bytes */
#pragma unroll
    for (int c = 0; c < E / PER; c++) kv_unpack<KV>(lrun_k_ld128_stream(p + 16 * c), f + PER * c);
}

/* Where job_quant finds its rows. Byte offsets are of the lane's pieces. */
struct quant_rows {
    const uint8_t *ck, *cv; /* codes of the sequence's position 0 + the lane's code bytes */
    const uint8_t *pk, *pv; /* the same records' (scale, min) of the lane's group */
    const uint8_t *rk, *rv; /* ring row 0 of the sequence + the lane's elements */
    size_t pos_bytes, ring_row_bytes;
    int64_t ring_rows;
    int al; /* alignment of the code loads */
};

/* One job: positions [t0, t1) of token th's head, those below qlo from
 * codes, the rest from the ring; see the file comment. */
template <int KV, int BITS>
static __device__ __forceinline__ void job_quant(const float *__restrict__ q, const quant_rows &r, int64_t qlo,
                                                 int64_t t0, int64_t t1, int64_t job, int64_t th, int64_t head_dim,
                                                 int64_t n_split, float scale, int lanes, float *__restrict__ out,
                                                 float *__restrict__ part, float *sh)
{
    constexpr int E = BITS == 8 ? 16 : 32, U = LRUN_K_ATTN_QUANT_UNROLL;
    const int tid = threadIdx.x, g = tid / lanes, sub = tid % lanes, ng = LRUN_K_ATTN_THREADS / lanes;
    float qr[E], acc[E];
#pragma unroll
    for (int i = 0; i < E; i++) qr[i] = q[th * head_dim + sub * E + i] * scale, acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int64_t c1 = qlo < t0 ? t0 : (qlo > t1 ? t1 : qlo); /* codes: [t0, c1); ring: [c1, t1) */

    /* every lane runs every step (the shuffles need the whole warp); a
     * group's positions past the end are masked */
    for (int64_t base = t0; base < c1; base += (int64_t)ng * U) {
        const int64_t t = base + (int64_t)g * U;
        uint4 kw[U], vw[U];
        float2 kp[U], vp[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (t + u < c1) {
                const size_t at = (size_t)(t + u) * r.pos_bytes;
                kw[u] = codes_load(r.ck + at, r.al), vw[u] = codes_load(r.cv + at, r.al);
                kp[u] = params_load(r.pk + at), vp[u] = params_load(r.pv + at);
            } else {
                kw[u] = vw[u] = make_uint4(0, 0, 0, 0);
                kp[u] = vp[u] = make_float2(0.0f, 0.0f);
            }
        }
        float sc[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            float f[E], dot = 0.0f;
            codes_unpack<KV, BITS>(kw[u], kp[u], f);
#pragma unroll
            for (int i = 0; i < E; i++) dot = fmaf(qr[i], f[i], dot);
            sc[u] = dot;
        }
        attn_group_step<U, E>(sc, t, c1, lanes, m, l, acc,
                              [&](int u, float *f) { codes_unpack<KV, BITS>(vw[u], vp[u], f); });
    }

    /* the ring: at most residual + a chunk's positions, one per group and step */
    for (int64_t base = c1; base < t1; base += ng) {
        const int64_t t = base + g;
        const bool in = t < t1;
        const size_t at = in ? (size_t)(t % r.ring_rows) * r.ring_row_bytes : 0;
        float f[E], dot = 0.0f;
        if (in) ring_load<KV, E>(r.rk + at, f);
        else
#pragma unroll
            for (int i = 0; i < E; i++) f[i] = 0.0f;
#pragma unroll
        for (int i = 0; i < E; i++) dot = fmaf(qr[i], f[i], dot);
        for (int o = lanes >> 1; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        if (!in) continue;
        const float mx = fmaxf(m, dot);
        const float corr = m == -INFINITY ? 0.0f : expf(m - mx);
        const float e = expf(dot - mx);
        ring_load<KV, E>(r.rv + at, f);
        l = l * corr + e;
#pragma unroll
        for (int i = 0; i < E; i++) acc[i] = fmaf(e, f[i], acc[i] * corr);
        m = mx;
    }
    attn_groups_finish<E>(job, th, head_dim, n_split, lanes, m, l, acc, out, part, sh);
}

/* Job j = (tok * n_head + h) * n_split + split, as attn_split. */
template <int KV, int BITS>
__global__ void __launch_bounds__(LRUN_K_ATTN_THREADS)
    attn_quant_split(const float *__restrict__ q, const uint8_t *__restrict__ codes_k,
                     const uint8_t *__restrict__ codes_v, const uint8_t *__restrict__ ring_k,
                     const uint8_t *__restrict__ ring_v, const int64_t *__restrict__ kv_base,
                     const int32_t *__restrict__ n_kv, const int32_t *__restrict__ seq_qlo, int64_t n_tok,
                     int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t kv_dim, int64_t cap,
                     int64_t ring_rows, int64_t group, size_t pos_bytes, int64_t max_kv, int64_t n_split, float scale,
                     int lanes, int al, float *__restrict__ out, float *__restrict__ part)
{
    extern __shared__ float sh[];
    lrun_k_pdl_trigger();
    lrun_k_pdl_wait();
    constexpr int64_t E = BITS == 8 ? 16 : 32, ES = KV == LRUN_DTYPE_F16 ? 2 : 4;
    const int64_t per_kv = n_head / n_head_kv, jobs = n_tok * n_head * n_split;
    const int64_t code_bytes = BITS == 8 ? kv_dim : kv_dim / 2, sub = threadIdx.x % lanes;
    for (int64_t job = blockIdx.x; job < jobs; job += gridDim.x) {
        const int64_t sp = job % n_split, th = job / n_split, h = th % n_head, tok = th / n_head, hk = h / per_kv;
        int64_t nk = n_kv[tok];
        nk = nk < 0 ? 0 : (nk > max_kv ? max_kv : nk);
        const int64_t chunk = (nk + n_split - 1) / n_split;
        const int64_t t0 = sp * chunk < nk ? sp * chunk : nk;
        const int64_t t1 = t0 + chunk < nk ? t0 + chunk : nk;
        const int64_t s = kv_base[tok] / (cap * kv_dim), e0 = hk * head_dim + sub * E; /* the lane's first element */
        const size_t rec0 = (size_t)s * (size_t)cap * pos_bytes;
        const size_t code0 = rec0 + (size_t)(BITS == 8 ? e0 : e0 / 2);
        const size_t par0 = rec0 + (size_t)code_bytes + (size_t)(e0 / group) * 2 * sizeof(float);
        const size_t ring0 = ((size_t)s * (size_t)ring_rows * (size_t)kv_dim + (size_t)e0) * ES;
        const quant_rows r = {codes_k + code0, codes_v + code0, codes_k + par0, codes_v + par0,
                              ring_k + ring0, ring_v + ring0, pos_bytes, (size_t)kv_dim * ES, ring_rows, al};
        job_quant<KV, BITS>(q, r, seq_qlo[s], t0, t1, job, th, head_dim, n_split, scale, lanes, out, part, sh);
        __syncthreads(); /* sh is rewritten by the next job */
    }
}

// ---------------------------------------------------------------- launcher

extern "C" int lrun_k_attention_quant_supported(const lrun_k_kv_quant *qz, int64_t head_dim)
{
    if (!qz || (qz->bits != 8 && qz->bits != 4) || head_dim <= 0 || head_dim > LRUN_K_ATTN_MAX_HEAD_DIM) return 0;
    if (qz->kv_dtype != LRUN_DTYPE_F16 && qz->kv_dtype != LRUN_DTYPE_F32) return 0;
    const int64_t E = qz->bits == 8 ? 16 : 32, lanes = head_dim / E;
    const size_t code_bytes = qz->bits == 8 ? (size_t)qz->kv_dim : (size_t)qz->kv_dim / 2;
    /* a lane's E elements: one 16-byte piece of codes within one group, in a
     * power of two of lanes per row; params and code rows 4-byte aligned,
     * ring rows 16-byte aligned */
    return head_dim % E == 0 && lanes <= 32 && (lanes & (lanes - 1)) == 0 && qz->group > 0 && qz->group % E == 0 &&
           qz->kv_dim % head_dim == 0 && qz->kv_dim % 8 == 0 && code_bytes % 4 == 0 && qz->pos_bytes % 4 == 0;
}

extern "C" lrun_status lrun_k_attention_quant(const lrun_k_kv_quant *qz, const float *q, const void *codes_k,
                                              const void *codes_v, const void *ring_k, const void *ring_v,
                                              const int64_t *kv_base, const int32_t *n_kv, const int32_t *seq_qlo,
                                              int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                                              int64_t max_kv, float scale, float *out, void *work, void *stream)
{
    static const char op[] = "lrun_k_attention_quant";
    if (!qz || !q || !codes_k || !codes_v || !ring_k || !ring_v || !kv_base || !n_kv || !seq_qlo || !out || !stream)
        return lrun_fail(LRUN_E_ARG, "%s: a NULL pointer or stream", op);
    if (n_tok <= 0 || n_head <= 0 || n_head_kv <= 0 || head_dim <= 0 || max_kv <= 0 || n_head % n_head_kv ||
        n_head_kv * head_dim != qz->kv_dim || qz->cap <= 0 || qz->ring_rows <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld, heads %lld/%lld, head_dim %lld, kv_dim %lld, max_kv %lld, cap "
                         "%lld, ring_rows %lld", op, (long long)n_tok, (long long)n_head, (long long)n_head_kv,
                         (long long)head_dim, (long long)qz->kv_dim, (long long)max_kv, (long long)qz->cap,
                         (long long)qz->ring_rows);
    if (!(scale == scale) || scale == INFINITY || scale == -INFINITY)
        return lrun_fail(LRUN_E_ARG, "%s: scale %g is not finite", op, (double)scale);
    /* the widest load every lane's code piece allows: pointers, records and
     * a head's codes all aligned to it */
    const uintptr_t mix = (uintptr_t)codes_k | (uintptr_t)codes_v | (uintptr_t)qz->pos_bytes |
                          (uintptr_t)(qz->bits == 8 ? head_dim : head_dim / 2);
    const int al = mix % 16 == 0 ? 16 : mix % 8 == 0 ? 8 : mix % 4 == 0 ? 4 : 0;
    if (!lrun_k_attention_quant_supported(qz, head_dim) || !al || ((uintptr_t)ring_k | (uintptr_t)ring_v) % 16)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: bits %d, group %lld, head_dim %lld, kv_dim %lld, record %zu bytes, "
                         "%s (the slot path takes it)", op, qz->bits, (long long)qz->group, (long long)head_dim,
                         (long long)qz->kv_dim, qz->pos_bytes, lrun_dtype_name(qz->kv_dtype));
    const int64_t n_split = lrun_k_attn_splits(n_tok, n_head, max_kv), n_th = n_tok * n_head;
    if (n_split > 1 && !work)
        return lrun_fail(LRUN_E_ARG, "%s: work is NULL (this shape needs %zu bytes: lrun_k_attention_work_bytes)", op,
                         lrun_k_attention_work_bytes(n_tok, n_head, head_dim, max_kv));
    cudaStream_t st = (cudaStream_t)stream;
    const int64_t jobs = n_th * n_split, E = qz->bits == 8 ? 16 : 32;
    const unsigned g = (unsigned)(jobs < LRUN_K_MAX_GRID ? jobs : LRUN_K_MAX_GRID);
    const size_t shmem = LRUN_K_ATTN_VEC_SMEM(E) * sizeof(float);
    const int f16 = qz->kv_dtype == LRUN_DTYPE_F16;
    void (*kernel)(const float *, const uint8_t *, const uint8_t *, const uint8_t *, const uint8_t *, const int64_t *,
                   const int32_t *, const int32_t *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                   int64_t, size_t, int64_t, int64_t, float, int, int, float *, float *) =
        qz->bits == 8 ? (f16 ? attn_quant_split<LRUN_DTYPE_F16, 8> : attn_quant_split<LRUN_DTYPE_F32, 8>)
                      : (f16 ? attn_quant_split<LRUN_DTYPE_F16, 4> : attn_quant_split<LRUN_DTYPE_F32, 4>);
    (void)lrun_k_launch(kernel, dim3(g), dim3(LRUN_K_ATTN_THREADS), shmem, st, q, (const uint8_t *)codes_k,
                        (const uint8_t *)codes_v, (const uint8_t *)ring_k, (const uint8_t *)ring_v, kv_base, n_kv,
                        seq_qlo, n_tok, n_head, n_head_kv, head_dim, qz->kv_dim, qz->cap, qz->ring_rows, qz->group,
                        qz->pos_bytes, max_kv, n_split, scale, (int)(head_dim / E), al, out, (float *)work);
    lrun_status s = lrun_k_launched(op);
    if (s != LRUN_OK || n_split == 1) return s;
    return lrun_k_attn_merge_launch((const float *)work, n_th, n_split, head_dim, out, st, op);
}
