/* kv_stage.cu — what the staged KV caches (runtime/cuda/engine_cuda_kv.c) run on
 * the device besides the attention:
 *   copy_rows     the chunk's new rows from the slot to the offloaded store,
 *                 written straight into pinned host memory (mapped: UVA), so a
 *                 decode step's few rows need no copy call per sequence;
 *   quant_store   the chunk's new rows into int8/int4 codes with a (scale,
 *                 min) pair per group, and their exact bits into the ring of
 *                 recent positions: the record runtime/kv/kv_quant.c writes on
 *                 the CPU (codes, then the pairs as floats);
 *   dequant_fill  a layer's slot from codes (positions below q_lo) and the
 *                 ring (q_lo up to the stored length), per sequence;
 *   fill_uniform  pseudo-random values for benchmark contexts. */
#include "kv_stage.cuh"

// ---------------------------------------------------------------- copy rows

__global__ void kv_copy_rows_u16(uint16_t *dst_k, uint16_t *dst_v, const uint16_t *__restrict__ src_k,
                                 const uint16_t *__restrict__ src_v, const int64_t *__restrict__ row_offset,
                                 int64_t units_per_elem, int64_t n_tok, int64_t row_units)
{
    const int64_t total = n_tok * row_units;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = t / row_units, j = t % row_units, at = row_offset[i] * units_per_elem + j;
        dst_k[at] = src_k[at];
        dst_v[at] = src_v[at];
    }
}

extern "C" lrun_status lrun_k_kv_copy_rows(lrun_dtype kv_dtype, void *dst_k, void *dst_v, const void *src_k,
                                           const void *src_v, const int64_t *row_offset, int64_t n_tok,
                                           int64_t kv_dim, void *stream)
{
    static const char op[] = "lrun_k_kv_copy_rows";
    if (!dst_k || !dst_v || !src_k || !src_v || !row_offset || !stream)
        return lrun_fail(LRUN_E_ARG, "%s: a NULL pointer or stream", op);
    if (n_tok <= 0 || kv_dim <= 0 || (kv_dtype != LRUN_DTYPE_F16 && kv_dtype != LRUN_DTYPE_F32))
        return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld, kv_dim %lld, kv_dtype %s", op, (long long)n_tok,
                         (long long)kv_dim, lrun_dtype_name(kv_dtype));
    const int64_t per = kv_dtype == LRUN_DTYPE_F32 ? 2 : 1, row = kv_dim * per;
    const unsigned g = lrun_k_grid(n_tok * row, LRUN_K_KV_STAGE_THREADS, LRUN_K_ELTWISE_BLOCKS);
    kv_copy_rows_u16<<<g, LRUN_K_KV_STAGE_THREADS, 0, (cudaStream_t)stream>>>(
        (uint16_t *)dst_k, (uint16_t *)dst_v, (const uint16_t *)src_k, (const uint16_t *)src_v, row_offset, per, n_tok,
        row);
    return lrun_k_launched(op);
}

// ---------------------------------------------------------------- quantize

template <int D> static __device__ __forceinline__ float kv_elem(const void *c, int64_t i)
{
    return D == LRUN_DTYPE_F16 ? lrun_k_f16(((const uint16_t *)c)[i]) : ((const float *)c)[i];
}

/* One warp per (token, keys|values, group). Codes as kv_quant.c: q =
 * nearbyint((x - min) / scale) clamped, int4 two per byte, low nibble first. */
template <int D>
__global__ void kv_quant_store_groups(int bits, int64_t group, const void *slot_k, const void *slot_v,
                                      const int64_t *__restrict__ row_offset, const int64_t *__restrict__ kv_base,
                                      const int32_t *__restrict__ pos, const int32_t *__restrict__ chunk_end,
                                      int64_t n_tok, int64_t kv_dim, int64_t cap,
                                      int64_t ring_rows, size_t q_pos_bytes, uint8_t *codes_k, uint8_t *codes_v,
                                      void *ring_k, void *ring_v)
{
    const int lane = threadIdx.x % 32;
    const int64_t n_groups = kv_dim / group, tasks = n_tok * 2 * n_groups;
    const float qmax = bits == 8 ? 255.0f : 15.0f;
    const int64_t warp0 = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int64_t warps = (int64_t)gridDim.x * blockDim.x / 32;
    for (int64_t task = warp0; task < tasks; task += warps) {
        const int64_t i = task / (2 * n_groups), which = (task / n_groups) % 2, gi = task % n_groups;
        const void *slot = which ? slot_v : slot_k;
        const int64_t src = row_offset[i] + gi * group;
        float lo = INFINITY, hi = -INFINITY;
        bool finite = true;
        for (int64_t j = lane; j < group; j += 32) {
            const float x = kv_elem<D>(slot, src + j);
            finite &= isfinite(x);
            lo = fminf(lo, x);
            hi = fmaxf(hi, x);
        }
        lo = -lrun_k_warp_max(-lo);
        hi = lrun_k_warp_max(hi);
        /* a NaN or infinity poisons the group as in kv_quant.c: scale and minimum NaN, codes 0 */
        const bool poison = !__all_sync(0xffffffffu, finite);
        const float scale = poison ? NAN : (hi - lo) / qmax, inv = scale > 0 ? 1.0f / scale : 0.0f;
        if (poison) lo = NAN;
        const int64_t s = kv_base[i] / (cap * kv_dim), p = pos[i];
        uint8_t *rec = (which ? codes_v : codes_k) + ((size_t)s * (size_t)cap + (size_t)p) * q_pos_bytes;
        float *params = (float *)(rec + (bits == 8 ? kv_dim : kv_dim / 2));
        if (lane == 0) {
            params[2 * gi] = scale;
            params[2 * gi + 1] = lo;
        }
        for (int64_t j = 2 * lane; j < group; j += 64) { /* a pair per lane: one int4 byte */
            const float x0 = kv_elem<D>(slot, src + j), x1 = kv_elem<D>(slot, src + j + 1);
            /* fmaxf(NaN, 0) is 0: a poisoned group's codes are 0 */
            const float q0 = fminf(fmaxf(rintf(__fmul_rn(__fsub_rn(x0, lo), inv)), 0.0f), qmax);
            const float q1 = fminf(fmaxf(rintf(__fmul_rn(__fsub_rn(x1, lo), inv)), 0.0f), qmax);
            const int64_t e = gi * group + j;
            if (bits == 8) {
                rec[e] = (uint8_t)q0;
                rec[e + 1] = (uint8_t)q1;
            } else {
                rec[e / 2] = (uint8_t)((unsigned)q0 | ((unsigned)q1 << 4));
            }
        }
        /* the exact bits in the ring, at row pos % ring_rows: only the chunk's last
         * ring_rows positions of the sequence, as a later one takes the same row */
        if (p + ring_rows < chunk_end[s]) continue;
        const int64_t rd = ((int64_t)s * ring_rows + p % ring_rows) * kv_dim + gi * group;
        for (int64_t j = lane; j < group; j += 32) {
            if (D == LRUN_DTYPE_F16) ((uint16_t *)(which ? ring_v : ring_k))[rd + j] = ((const uint16_t *)slot)[src + j];
            else ((float *)(which ? ring_v : ring_k))[rd + j] = ((const float *)slot)[src + j];
        }
    }
}

extern "C" lrun_status lrun_k_kv_quant_store(const lrun_k_kv_quant *qz, const void *slot_k, const void *slot_v,
                                             const int64_t *row_offset, const int64_t *kv_base, const int32_t *pos,
                                             const int32_t *chunk_end, int64_t n_tok, void *codes_k, void *codes_v, void *ring_k, void *ring_v,
                                             void *stream)
{
    static const char op[] = "lrun_k_kv_quant_store";
    if (!qz || !slot_k || !slot_v || !row_offset || !kv_base || !pos || !chunk_end || !codes_k || !codes_v || !ring_k || !ring_v ||
        !stream)
        return lrun_fail(LRUN_E_ARG, "%s: a NULL pointer or stream", op);
    if (n_tok <= 0 || (qz->bits != 8 && qz->bits != 4) || qz->group <= 0 || qz->group % 2 ||
        qz->kv_dim % qz->group || qz->cap <= 0 || qz->ring_rows <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: n_tok %lld, bits %d, group %lld, kv_dim %lld, cap %lld, ring_rows %lld", op,
                         (long long)n_tok, qz->bits, (long long)qz->group, (long long)qz->kv_dim, (long long)qz->cap,
                         (long long)qz->ring_rows);
    const int64_t warps = n_tok * 2 * (qz->kv_dim / qz->group);
    const unsigned g = lrun_k_grid(warps, LRUN_K_KV_QUANT_WARPS, LRUN_K_ELTWISE_BLOCKS);
    cudaStream_t st = (cudaStream_t)stream;
#define QS_ARGS                                                                                                        \
    qz->bits, qz->group, slot_k, slot_v, row_offset, kv_base, pos, chunk_end, n_tok, qz->kv_dim, qz->cap, qz->ring_rows,         \
        qz->pos_bytes, (uint8_t *)codes_k, (uint8_t *)codes_v, ring_k, ring_v
    if (qz->kv_dtype == LRUN_DTYPE_F16)
        kv_quant_store_groups<LRUN_DTYPE_F16><<<g, 32 * LRUN_K_KV_QUANT_WARPS, 0, st>>>(QS_ARGS);
    else
        kv_quant_store_groups<LRUN_DTYPE_F32><<<g, 32 * LRUN_K_KV_QUANT_WARPS, 0, st>>>(QS_ARGS);
#undef QS_ARGS
    return lrun_k_launched(op);
}

// ---------------------------------------------------------------- dequantize into a slot

/* One block per (sequence, position, keys|values) below the sequence's
 * length; threads over the row. */
template <int D>
__global__ void kv_dequant_rows(int bits, int64_t group, void *slot_k, void *slot_v, const uint8_t *codes_k,
                                const uint8_t *codes_v, const void *ring_k, const void *ring_v,
                                const int32_t *__restrict__ seq_len, const int32_t *__restrict__ seq_qlo, int64_t n_seq,
                                int64_t max_len, int64_t kv_dim, int64_t cap, int64_t ring_rows, size_t q_pos_bytes)
{
    const int64_t tasks = n_seq * max_len * 2;
    for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
        const int64_t which = task % 2, p = (task / 2) % max_len, s = task / (2 * max_len);
        if (p >= seq_len[s]) continue;
        void *dst = which ? slot_v : slot_k;
        const int64_t at = (s * cap + p) * kv_dim;
        if (p < seq_qlo[s]) {
            const uint8_t *rec = (which ? codes_v : codes_k) + ((size_t)s * (size_t)cap + (size_t)p) * q_pos_bytes;
            const float *params = (const float *)(rec + (bits == 8 ? kv_dim : kv_dim / 2));
            for (int64_t j = threadIdx.x; j < kv_dim; j += blockDim.x) {
                const unsigned q = bits == 8 ? rec[j] : (rec[j / 2] >> (4 * (j % 2))) & 15u;
                const float x = __fadd_rn(params[2 * (j / group) + 1], __fmul_rn((float)q, params[2 * (j / group)]));
                lrun_k_store<D>(dst, at + j, x);
            }
        } else {
            const int64_t rd = (s * ring_rows + p % ring_rows) * kv_dim;
            for (int64_t j = threadIdx.x; j < kv_dim; j += blockDim.x) {
                if (D == LRUN_DTYPE_F16) ((uint16_t *)dst)[at + j] = ((const uint16_t *)(which ? ring_v : ring_k))[rd + j];
                else ((float *)dst)[at + j] = ((const float *)(which ? ring_v : ring_k))[rd + j];
            }
        }
    }
}

extern "C" lrun_status lrun_k_kv_dequant_fill(const lrun_k_kv_quant *qz, void *slot_k, void *slot_v,
                                              const void *codes_k, const void *codes_v, const void *ring_k,
                                              const void *ring_v, const int32_t *seq_len, const int32_t *seq_qlo,
                                              int64_t n_seq, int64_t max_len, void *stream)
{
    static const char op[] = "lrun_k_kv_dequant_fill";
    if (!qz || !slot_k || !slot_v || !codes_k || !codes_v || !ring_k || !ring_v || !seq_len || !seq_qlo || !stream)
        return lrun_fail(LRUN_E_ARG, "%s: a NULL pointer or stream", op);
    if (n_seq <= 0 || max_len < 0 || max_len > qz->cap || qz->ring_rows <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: n_seq %lld, max_len %lld, cap %lld", op, (long long)n_seq,
                         (long long)max_len, (long long)qz->cap);
    if (max_len == 0) return LRUN_OK;
    const int threads = qz->kv_dim >= 256 ? 256 : 128;
    const unsigned g = lrun_k_grid(n_seq * max_len * 2, 1, LRUN_K_ELTWISE_BLOCKS);
    cudaStream_t st = (cudaStream_t)stream;
#define DQ_ARGS                                                                                                        \
    qz->bits, qz->group, slot_k, slot_v, (const uint8_t *)codes_k, (const uint8_t *)codes_v, ring_k, ring_v, seq_len, \
        seq_qlo, n_seq, max_len, qz->kv_dim, qz->cap, qz->ring_rows, qz->pos_bytes
    if (qz->kv_dtype == LRUN_DTYPE_F16) kv_dequant_rows<LRUN_DTYPE_F16><<<g, threads, 0, st>>>(DQ_ARGS);
    else kv_dequant_rows<LRUN_DTYPE_F32><<<g, threads, 0, st>>>(DQ_ARGS);
#undef DQ_ARGS
    return lrun_k_launched(op);
}

// ---------------------------------------------------------------- uniform values

__global__ void fill_uniform_elems(float *x, int64_t n, uint64_t seed)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1); /* splitmix64 */
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        x[i] = (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
    }
}

extern "C" lrun_status lrun_k_fill_uniform(float *x, int64_t n, uint64_t seed, void *stream)
{
    static const char op[] = "lrun_k_fill_uniform";
    if (!x || n <= 0 || !stream) return lrun_fail(LRUN_E_ARG, "%s: x %p, n %lld, stream %p", op, (void *)x, (long long)n, stream);
    const unsigned g = lrun_k_grid(n, LRUN_K_KV_STAGE_THREADS, LRUN_K_ELTWISE_BLOCKS);
    fill_uniform_elems<<<g, LRUN_K_KV_STAGE_THREADS, 0, (cudaStream_t)stream>>>(x, n, seed);
    return lrun_k_launched(op);
}
