/* topk.cu — top-k by radix select (see topk.cuh). Order: value descending,
 * ties by lower index first, exactly k entries (the CPU sampler's select_top_k
 * additionally keeps everything tied with the k-th; a caller that wants that
 * compares values[k-1] itself). NaNs rank below -inf; -0 is taken as +0. */
#include "topk.cuh"

#include <limits.h>

/* Larger float ↔ larger key: flip all bits of negatives, the sign bit of
 * positives. NaN gets 0, below every number. */
static __device__ __forceinline__ uint32_t fkey(float f)
{
    if (f != f) return 0;
    const uint32_t u = __float_as_uint(f + 0.0f); /* -0 + 0 = +0 */
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ float fval(uint32_t key)
{
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

__global__ void __launch_bounds__(LRUN_K_TOPK_THREADS)
    topk_rows(const float *__restrict__ logits, int64_t n_rows, int64_t n_vocab, int k, float *__restrict__ values,
              int32_t *__restrict__ ids)
{
    __shared__ unsigned hist[256];
    __shared__ uint32_t ckey[LRUN_K_TOPK_MAX]; /* candidates: keys */
    __shared__ int32_t cidx[LRUN_K_TOPK_MAX];  /* candidates: token ids */
    __shared__ int wg[32], we[32];             /* per-warp counts of > T and == T in a chunk */
    __shared__ uint32_t s_prefix;
    __shared__ int s_krem;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int NT = LRUN_K_TOPK_THREADS;

    for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        const float *l = logits + row * n_vocab;

        /* 1. the key T of the k-th largest; krem = how many keys equal to T make k */
        uint32_t prefix = 0, mask = 0;
        int krem = k;
        for (int pass = 0; pass < 4; pass++) {
            const int shift = 24 - 8 * pass;
            if (tid < 256) hist[tid] = 0;
            __syncthreads();
            for (int64_t i = tid; i < n_vocab; i += NT) {
                const uint32_t key = fkey(l[i]);
                if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                unsigned cum = 0; /* keys in bins above b */
                int b = 255;
                for (; b > 0; b--) {
                    if (cum + hist[b] >= (unsigned)krem) break;
                    cum += hist[b];
                }
                s_prefix = prefix | ((uint32_t)b << shift);
                s_krem = krem - (int)cum;
            }
            __syncthreads();
            prefix = s_prefix;
            krem = s_krem;
            mask |= 255u << shift;
        }

        /* 2. gather, in index order so that ties keep the lowest ids */
        const int n_gt = k - krem;
        int base_g = 0, base_e = 0;
        const unsigned lt = (1u << lane) - 1u;
        for (int64_t c0 = 0; c0 < n_vocab; c0 += NT) {
            const int64_t i = c0 + tid;
            uint32_t key = 0;
            bool gt = false, eq = false;
            if (i < n_vocab) {
                key = fkey(l[i]);
                gt = key > prefix;
                eq = key == prefix;
            }
            const unsigned bg = __ballot_sync(0xffffffffu, gt), be = __ballot_sync(0xffffffffu, eq);
            if (lane == 0) wg[warp] = __popc(bg), we[warp] = __popc(be);
            __syncthreads();
            int pg = 0, pe = 0, tg = 0, te = 0;
            for (int w = 0; w < NT / 32; w++) {
                const int a = wg[w], b = we[w];
                if (w < warp) pg += a, pe += b;
                tg += a, te += b;
            }
            if (gt) {
                const int r = base_g + pg + __popc(bg & lt);
                if (r < n_gt) ckey[r] = key, cidx[r] = (int32_t)i;
            }
            if (eq) {
                const int r = base_e + pe + __popc(be & lt);
                if (r < krem) ckey[n_gt + r] = key, cidx[n_gt + r] = (int32_t)i;
            }
            base_g += tg, base_e += te;
            __syncthreads(); /* wg, we are rewritten by the next chunk */
            if (base_g >= n_gt && base_e >= krem) break; /* the same for every thread */
        }

        /* 3. sort the candidates, padding sorting last */
        if (tid >= k && tid < LRUN_K_TOPK_MAX) ckey[tid] = 0, cidx[tid] = INT_MAX;
        __syncthreads();
        for (int size = 2; size <= LRUN_K_TOPK_MAX; size <<= 1) {
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                if (tid < LRUN_K_TOPK_MAX) {
                    const int j = tid ^ stride;
                    if (j > tid) {
                        const uint32_t ka = ckey[tid], kb = ckey[j];
                        const int32_t ia = cidx[tid], ib = cidx[j];
                        const bool b_first = kb > ka || (kb == ka && ib < ia);
                        const bool ascending = (tid & size) == 0; /* this run in output order */
                        if (ascending == b_first) ckey[tid] = kb, ckey[j] = ka, cidx[tid] = ib, cidx[j] = ia;
                    }
                }
                __syncthreads();
            }
        }
        if (tid < k) {
            values[row * k + tid] = fval(ckey[tid]);
            ids[row * k + tid] = cidx[tid];
        }
        __syncthreads(); /* the candidates are rewritten by the next row */
    }
}

extern "C" lrun_status lrun_k_topk(const float *logits, int64_t n_rows, int64_t n_vocab, int64_t k, float *values,
                                   int32_t *ids, void *stream)
{
    static const char op[] = "lrun_k_topk";
    if (!logits || !values || !ids)
        return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !logits ? "logits" : (!values ? "values" : "ids"));
    if (n_rows <= 0 || n_vocab <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_rows %lld, n_vocab %lld (both must be > 0)", op, (long long)n_rows,
                         (long long)n_vocab);
    if (n_vocab >= INT_MAX)
        return lrun_fail(LRUN_E_ARG, "%s: n_vocab %lld does not fit an int32 token id", op, (long long)n_vocab);
    if (k < 1 || k > LRUN_K_TOPK_MAX || k > n_vocab)
        return lrun_fail(LRUN_E_ARG, "%s: k %lld (expected 1..%d and <= n_vocab %lld)", op, (long long)k,
                         LRUN_K_TOPK_MAX, (long long)n_vocab);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t total;
    if (__builtin_mul_overflow(n_rows, n_vocab, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld overflow", op, (long long)n_rows, (long long)n_vocab);
    const unsigned g = (unsigned)(n_rows < LRUN_K_ELTWISE_BLOCKS ? n_rows : LRUN_K_ELTWISE_BLOCKS);
    topk_rows<<<g, LRUN_K_TOPK_THREADS, 0, (cudaStream_t)stream>>>(logits, n_rows, n_vocab, (int)k, values, ids);
    return lrun_k_launched(op);
}
