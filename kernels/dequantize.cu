/* dequantize.cu — weight rows of any supported dtype into an f32, f16 or
 * bf16 slot: the first half of a prefill GEMM (the slot then goes to cuBLAS).
 * The decoders are in dequantize.cuh; f32 output is bit-exact with
 * lrun_dequantize_row, f16/bf16 output is that value rounded to nearest even. */
#include "dequantize.cuh"

extern "C" lrun_status lrun_k_dequantize(lrun_dtype w_dtype, const void *w, size_t row_bytes, int64_t n_rows,
                                         int64_t k, lrun_dtype dst_dtype, void *dst, void *stream)
{
    static const char op[] = "lrun_k_dequantize";
    lrun_status st = lrun_k_check_weight(op, w_dtype, w, row_bytes, n_rows, k);
    if (st != LRUN_OK) return st;
    int64_t total;
    if (!dst) return lrun_fail(LRUN_E_ARG, "%s: dst is NULL", op);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    if (__builtin_mul_overflow(n_rows, k, &total))
        return lrun_fail(LRUN_E_ARG, "%s: %lld rows of %lld elements overflow", op, (long long)n_rows, (long long)k);
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t e;
    switch (dst_dtype) {
    case LRUN_DTYPE_F32: e = lrun_k_rows_launch<LRUN_DTYPE_F32>(w_dtype, w, row_bytes, NULL, n_rows, k, dst, s); break;
    case LRUN_DTYPE_F16: e = lrun_k_rows_launch<LRUN_DTYPE_F16>(w_dtype, w, row_bytes, NULL, n_rows, k, dst, s); break;
    case LRUN_DTYPE_BF16: e = lrun_k_rows_launch<LRUN_DTYPE_BF16>(w_dtype, w, row_bytes, NULL, n_rows, k, dst, s); break;
    default:
        return lrun_fail(LRUN_E_ARG, "%s: dst_dtype %s (expected f32, f16 or bf16)", op, lrun_dtype_name(dst_dtype));
    }
    if (e != cudaSuccess) return lrun_fail(LRUN_E_INTERNAL, "%s: no kernel for %s", op, lrun_dtype_name(w_dtype));
    return lrun_k_launched(op);
}
