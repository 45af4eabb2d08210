/* quantize_q8.cu — x (m, k) f32 to 8-bit blocks of 32, as
 * lrun_quantize_activations (runtime/quant/quant.c): amax = max |x|, d = amax/127,
 * id = 127/amax (a second division), q = rint(x·id) ties to even, d stored
 * f16-rounded, and for Q8_1 s = f16(d·Σq) from the unrounded d. The max and
 * the integer sum do not depend on order, so a warp per block gives the
 * CPU's bytes exactly. */
#include "quantize_q8.cuh"

__global__ void __launch_bounds__(32 * LRUN_K_Q8_WARPS)
    quantize_q8_blocks(const float *__restrict__ x, int64_t n_blocks, int8_t *__restrict__ qs, float *__restrict__ d,
                       float *__restrict__ s)
{
    /* a programmatic dependent (lrun_k_launch): the decode GEMV after it may
     * be scheduled now and issue its weight loads; x is read after the wait */
    lrun_k_pdl_trigger();
    lrun_k_pdl_wait();
    const int lane = threadIdx.x & 31;
    const int64_t step = (int64_t)gridDim.x * LRUN_K_Q8_WARPS;
    for (int64_t b = (int64_t)blockIdx.x * LRUN_K_Q8_WARPS + (threadIdx.x >> 5); b < n_blocks; b += step) {
        lrun_k_q8_block(x[b * 32 + lane], lane, qs + b * 32, d + b, s ? s + b : NULL);
    }
}

extern "C" lrun_status lrun_k_quantize_q8(lrun_dtype partner, const float *x, int64_t m, int64_t k, int8_t *qs,
                                          float *d, float *s, void *stream)
{
    static const char op[] = "lrun_k_quantize_q8";
    if (partner != LRUN_DTYPE_Q8_0 && partner != LRUN_DTYPE_Q8_1)
        return lrun_fail(LRUN_E_ARG, "%s: partner %s is not q8_0 or q8_1", op, lrun_dtype_name(partner));
    if (!x || !qs || !d || (partner == LRUN_DTYPE_Q8_1 && !s))
        return lrun_fail(LRUN_E_ARG, "%s: x, qs, d (and s for q8_1) must not be NULL", op);
    if (m <= 0 || k <= 0 || k % 32 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: shape m %lld, k %lld (both > 0, k a multiple of 32)", op, (long long)m,
                         (long long)k);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t total;
    if (__builtin_mul_overflow(m, k, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld overflow", op, (long long)m, (long long)k);
    const int64_t n_blocks = total / 32;
    const unsigned g = lrun_k_grid(n_blocks, LRUN_K_Q8_WARPS, LRUN_K_ELTWISE_BLOCKS);
    float *sp = partner == LRUN_DTYPE_Q8_1 ? s : NULL;
    (void)lrun_k_launch(quantize_q8_blocks, dim3(g), dim3(32 * LRUN_K_Q8_WARPS), 0, (cudaStream_t)stream, x, n_blocks,
                        qs, d, sp);
    return lrun_k_launched(op);
}
