/* argmax.cu — as lrun_logits_argmax (runtime/sampling.c): the first index of
 * the largest value; NaNs are never the largest; a row of NaNs gives 0. */
#include "argmax.cuh"

#include <limits.h>

/* (v, i) beats (bv, bi): larger, or equal and earlier. An index of INT_MAX
 * means "nothing yet", beaten by any non-NaN value, -inf included. */
static __device__ __forceinline__ bool beats(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(LRUN_K_ARGMAX_THREADS)
    argmax_rows(const float *__restrict__ logits, int64_t n_rows, int64_t n_vocab, int32_t *__restrict__ out)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        const float *l = logits + row * n_vocab;
        float bv = -INFINITY;
        int bi = INT_MAX;
        for (int64_t i = threadIdx.x; i < n_vocab; i += LRUN_K_ARGMAX_THREADS) {
            const float v = l[i];
            if (beats(v, (int)i, bv, bi)) bv = v, bi = (int)i;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (beats(ov, oi, bv, bi)) bv = ov, bi = oi;
        }
        if (lane == 0) sv[warp] = bv, si[warp] = bi;
        __syncthreads();
        if (warp == 0) {
            bv = lane < LRUN_K_ARGMAX_THREADS / 32 ? sv[lane] : -INFINITY;
            bi = lane < LRUN_K_ARGMAX_THREADS / 32 ? si[lane] : INT_MAX;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (beats(ov, oi, bv, bi)) bv = ov, bi = oi;
            }
            if (lane == 0) out[row] = bi == INT_MAX ? 0 : bi;
        }
        __syncthreads(); /* sv, si are reused by the next row */
    }
}

extern "C" lrun_status lrun_k_argmax(const float *logits, int64_t n_rows, int64_t n_vocab, int32_t *out, void *stream)
{
    static const char op[] = "lrun_k_argmax";
    if (!logits || !out) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !logits ? "logits" : "out");
    if (n_rows <= 0 || n_vocab <= 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape n_rows %lld, n_vocab %lld (both must be > 0)", op, (long long)n_rows,
                         (long long)n_vocab);
    if (n_vocab >= INT_MAX)
        return lrun_fail(LRUN_E_ARG, "%s: n_vocab %lld does not fit an int32 token id", op, (long long)n_vocab);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t total;
    if (__builtin_mul_overflow(n_rows, n_vocab, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld overflow", op, (long long)n_rows, (long long)n_vocab);
    const unsigned g = (unsigned)(n_rows < LRUN_K_ELTWISE_BLOCKS ? n_rows : LRUN_K_ELTWISE_BLOCKS);
    argmax_rows<<<g, LRUN_K_ARGMAX_THREADS, 0, (cudaStream_t)stream>>>(logits, n_rows, n_vocab, out);
    return lrun_k_launched(op);
}
