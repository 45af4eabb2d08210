/* gemm.cu — prefill and batched products through cuBLAS (see gemm.cuh).
 * Tolerance against an f32 reference: the rounding of x and W to 16 bits
 * (normalized MSE about 1e-5 for bf16, 1e-7 for f16 on random data). */
#include "gemm.cuh"

#include <cublas_v2.h>
#include <limits.h>

// ---------------------------------------------------------------- x into the slot

/* dst (n) = src (n) f32 rounded to D (F16 or BF16), nearest even. */
template <int D> __global__ void f32_to_slot(const float *__restrict__ src, void *__restrict__ dst, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        lrun_k_store<D>(dst, i, src[i]);
}

// ---------------------------------------------------------------- the product

static lrun_status cublas_failed(const char *op, cublasStatus_t cs)
{
    return lrun_fail(LRUN_E_DEVICE, "%s: cublasGemmEx failed: %s (%s)", op, cublasGetStatusString(cs),
                     cublasGetStatusName(cs));
}

extern "C" lrun_status lrun_k_gemm(void *cublas, lrun_dtype w_dtype, const void *w, size_t row_bytes, int64_t n,
                                   int64_t k, const float *x, int64_t m, float *y, lrun_dtype slot_dtype, void *w_slot,
                                   void *x_slot, void *stream)
{
    static const char op[] = "lrun_k_gemm";
    lrun_status s = lrun_k_check_weight(op, w_dtype, w, row_bytes, n, k);
    if (s != LRUN_OK) return s;
    if (!cublas) return lrun_fail(LRUN_E_ARG, "%s: the cuBLAS handle is NULL", op);
    if (!x || !y || !x_slot)
        return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !x ? "x" : (!y ? "y" : "x_slot"));
    if (m <= 0) return lrun_fail(LRUN_E_ARG, "%s: m %lld (must be > 0)", op, (long long)m);
    if (slot_dtype != LRUN_DTYPE_F16 && slot_dtype != LRUN_DTYPE_BF16)
        return lrun_fail(LRUN_E_ARG, "%s: slot_dtype %s (expected f16 or bf16)", op, lrun_dtype_name(slot_dtype));
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    /* W is used in place when it already is the slot dtype: lda is its row
     * stride in elements (cuBLAS allows lda >= k) */
    const bool in_place = w_dtype == slot_dtype;
    const int64_t lda = in_place ? (int64_t)(row_bytes / 2) : k;
    if (!in_place && !w_slot)
        return lrun_fail(LRUN_E_ARG, "%s: w_slot is NULL and W (%s) is not the slot dtype %s", op,
                         lrun_dtype_name(w_dtype), lrun_dtype_name(slot_dtype));
    if (n > INT_MAX || m > INT_MAX || k > INT_MAX || lda > INT_MAX)
        return lrun_fail(LRUN_E_ARG, "%s: m %lld, n %lld, k %lld or the row stride exceed cuBLAS's int dimensions", op,
                         (long long)m, (long long)n, (long long)k);
    int64_t xn;
    if (__builtin_mul_overflow(m, k, &xn))
        return lrun_fail(LRUN_E_ARG, "%s: m %lld times k %lld overflows", op, (long long)m, (long long)k);

    cudaStream_t st = (cudaStream_t)stream;
    cublasHandle_t h = (cublasHandle_t)cublas;
    /* bind the handle to the stream only when it is not already: setting it
     * resets the handle's workspace to cuBLAS's default */
    cudaStream_t bound = NULL;
    cublasStatus_t cs = cublasGetStream(h, &bound);
    if (cs == CUBLAS_STATUS_SUCCESS && bound != st) cs = cublasSetStream(h, st);
    if (cs != CUBLAS_STATUS_SUCCESS)
        return lrun_fail(LRUN_E_DEVICE, "%s: binding cuBLAS to the stream failed: %s", op, cublasGetStatusString(cs));

    if (!in_place) {
        s = lrun_k_dequantize(w_dtype, w, row_bytes, n, k, slot_dtype, w_slot, stream);
        if (s != LRUN_OK) return lrun_fail_context(s, "%s", op);
    }
    const unsigned g = lrun_k_grid(xn, LRUN_K_CONVERT_THREADS, LRUN_K_ELTWISE_BLOCKS);
    if (slot_dtype == LRUN_DTYPE_F16) f32_to_slot<LRUN_DTYPE_F16><<<g, LRUN_K_CONVERT_THREADS, 0, st>>>(x, x_slot, xn);
    else f32_to_slot<LRUN_DTYPE_BF16><<<g, LRUN_K_CONVERT_THREADS, 0, st>>>(x, x_slot, xn);
    s = lrun_k_launched(op);
    if (s != LRUN_OK) return s;

    const cudaDataType_t dt = slot_dtype == LRUN_DTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF;
    const float alpha = 1.0f, beta = 0.0f;
    cs = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, in_place ? w : w_slot, dt, (int)lda,
                      x_slot, dt, (int)k, &beta, y, CUDA_R_32F, (int)n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (cs != CUBLAS_STATUS_SUCCESS) return cublas_failed(op, cs);
    return lrun_k_launched(op);
}
