/* gemv.cu — the fused dequantize-GEMV of decode (see gemv.cuh for the shape).
 * Accuracy: the weights are dequantized exactly as lrun_dequantize_row does
 * and multiplied with x in f32 (FMA), so y differs from a float reference of
 * the dequantized rows only by the order of f32 additions. */
#include "gemv.cuh"

// ---------------------------------------------------------------- x

/* 4 consecutive floats of x at p: one 16-byte load when x is 16-byte
 * aligned (xvec, the same for the whole launch), else 4 scalar loads. */
static __device__ __forceinline__ float4 ldx4(const float *p, bool xvec)
{
    if (xvec) return __ldg((const float4 *)p);
    return make_float4(__ldg(p), __ldg(p + 1), __ldg(p + 2), __ldg(p + 3));
}

// ---------------------------------------------------------------- unit kernel

template <int T, int M, int R, int U>
__global__ void __launch_bounds__(LRUN_K_GEMV_THREADS)
    gemv_units(const uint8_t *__restrict__ w, size_t row_bytes, int64_t n, int64_t k, const float *__restrict__ x,
               bool xvec, float *__restrict__ y)
{
    using Q = lrun_k_unit<T>;
    const int lane = threadIdx.x & 31;
    const int64_t row0 = ((int64_t)blockIdx.x * (LRUN_K_GEMV_THREADS / 32) + (threadIdx.x >> 5)) * R;
    if (row0 >= n) return; /* no block-level synchronization below */

    /* rows past n re-read row n-1 (valid memory) and are not written */
    const uint8_t *rows[R];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r] = w + (size_t)(row0 + r < n ? row0 + r : n - 1) * row_bytes;

    const int64_t units = k / Q::ELEMS * Q::UNITS; /* per row */
    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int i = 0; i < M; i++) acc[r][i] = 0.0f;

    for (int64_t u0 = lane; u0 < units; u0 += 32 * U) {
        typename Q::raw raw[U][R];
        /* all loads of the step first: they are what the kernel waits for */
#pragma unroll
        for (int j = 0; j < U; j++) {
            const int64_t u = u0 + 32 * j;
            if (u < units) {
                const size_t off = (size_t)(u / Q::UNITS) * Q::BYTES;
#pragma unroll
                for (int r = 0; r < R; r++) raw[j][r] = Q::load(rows[r] + off, (int)(u % Q::UNITS));
            }
        }
#pragma unroll
        for (int j = 0; j < U; j++) {
            const int64_t u = u0 + 32 * j;
            if (u < units) {
                const int ub = (int)(u % Q::UNITS);
                const int64_t base = u / Q::UNITS * Q::ELEMS; /* element of the block's first weight */
                float wv[R][Q::RUNS * 4];
#pragma unroll
                for (int r = 0; r < R; r++) Q::dequant(raw[j][r], ub, wv[r]);
#pragma unroll
                for (int i = 0; i < M; i++) {
                    const float *xr = x + i * k + base;
#pragma unroll
                    for (int run = 0; run < Q::RUNS; run++) {
                        const float4 xv = ldx4(xr + Q::offset(ub, run), xvec);
#pragma unroll
                        for (int r = 0; r < R; r++) {
                            float a = acc[r][i];
                            a = fmaf(wv[r][4 * run + 0], xv.x, a);
                            a = fmaf(wv[r][4 * run + 1], xv.y, a);
                            a = fmaf(wv[r][4 * run + 2], xv.z, a);
                            a = fmaf(wv[r][4 * run + 3], xv.w, a);
                            acc[r][i] = a;
                        }
                    }
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int i = 0; i < M; i++) acc[r][i] = lrun_k_warp_sum(acc[r][i]);
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; r++)
            if (row0 + r < n)
#pragma unroll
                for (int i = 0; i < M; i++) y[i * n + row0 + r] = acc[r][i];
    }
}

// ---------------------------------------------------------------- plain kernel (float types, any k or alignment)

template <int T, int M>
__global__ void __launch_bounds__(LRUN_K_GEMV_THREADS)
    gemv_elems(const uint8_t *__restrict__ w, size_t row_bytes, int64_t n, int64_t k, const float *__restrict__ x,
               float *__restrict__ y)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (LRUN_K_GEMV_THREADS / 32) + (threadIdx.x >> 5);
    if (row >= n) return;
    const uint8_t *wr = w + (size_t)row * row_bytes;
    float acc[M];
#pragma unroll
    for (int i = 0; i < M; i++) acc[i] = 0.0f;
    for (int64_t c = lane; c < k; c += 32) {
        const float wv = lrun_k_load_float<T>(wr, c);
#pragma unroll
        for (int i = 0; i < M; i++) acc[i] = fmaf(wv, __ldg(x + i * k + c), acc[i]);
    }
#pragma unroll
    for (int i = 0; i < M; i++) acc[i] = lrun_k_warp_sum(acc[i]);
    if (lane == 0)
#pragma unroll
        for (int i = 0; i < M; i++) y[i * n + row] = acc[i];
}

// ---------------------------------------------------------------- dispatch

template <int T, int M>
static cudaError_t launch_units(const uint8_t *w, size_t row_bytes, int64_t n, int64_t k, const float *x, float *y,
                                cudaStream_t st)
{
    typedef lrun_k_gemv_shape<T, M> S;
    const int64_t rows_per_block = (LRUN_K_GEMV_THREADS / 32) * S::R;
    const int64_t blocks = (n + rows_per_block - 1) / rows_per_block;
    if (blocks > LRUN_K_MAX_GRID) return cudaErrorInvalidConfiguration;
    const bool xvec = ((uintptr_t)x & 15) == 0;
    gemv_units<T, M, S::R, S::U><<<(unsigned)blocks, LRUN_K_GEMV_THREADS, 0, st>>>(w, row_bytes, n, k, x, xvec, y);
    return cudaSuccess;
}

template <int T, int M>
static cudaError_t launch_elems(const uint8_t *w, size_t row_bytes, int64_t n, int64_t k, const float *x, float *y,
                                cudaStream_t st)
{
    const int64_t blocks = (n + LRUN_K_GEMV_THREADS / 32 - 1) / (LRUN_K_GEMV_THREADS / 32);
    if (blocks > LRUN_K_MAX_GRID) return cudaErrorInvalidConfiguration;
    gemv_elems<T, M><<<(unsigned)blocks, LRUN_K_GEMV_THREADS, 0, st>>>(w, row_bytes, n, k, x, y);
    return cudaSuccess;
}

/* The float types take the unit kernel only when every row is whole 16-byte
 * units on 16-byte boundaries. */
template <int T, int M>
static cudaError_t launch_float(const uint8_t *w, size_t row_bytes, int64_t n, int64_t k, const float *x, float *y,
                                cudaStream_t st)
{
    if (k % 8 == 0 && ((uintptr_t)w & 15) == 0 && (row_bytes & 15) == 0)
        return launch_units<T, M>(w, row_bytes, n, k, x, y, st);
    return launch_elems<T, M>(w, row_bytes, n, k, x, y, st);
}

template <int M>
static cudaError_t launch_m(lrun_dtype t, const uint8_t *w, size_t row_bytes, int64_t n, int64_t k, const float *x,
                            float *y, cudaStream_t st)
{
    switch (t) {
    case LRUN_DTYPE_F32: return launch_float<LRUN_DTYPE_F32, M>(w, row_bytes, n, k, x, y, st);
    case LRUN_DTYPE_F16: return launch_float<LRUN_DTYPE_F16, M>(w, row_bytes, n, k, x, y, st);
    case LRUN_DTYPE_BF16: return launch_float<LRUN_DTYPE_BF16, M>(w, row_bytes, n, k, x, y, st);
    case LRUN_DTYPE_Q4_0: return launch_units<LRUN_DTYPE_Q4_0, M>(w, row_bytes, n, k, x, y, st);
    case LRUN_DTYPE_Q4_1: return launch_units<LRUN_DTYPE_Q4_1, M>(w, row_bytes, n, k, x, y, st);
    case LRUN_DTYPE_Q8_0: return launch_units<LRUN_DTYPE_Q8_0, M>(w, row_bytes, n, k, x, y, st);
    case LRUN_DTYPE_Q4_K: return launch_units<LRUN_DTYPE_Q4_K, M>(w, row_bytes, n, k, x, y, st);
    case LRUN_DTYPE_Q6_K: return launch_units<LRUN_DTYPE_Q6_K, M>(w, row_bytes, n, k, x, y, st);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" lrun_status lrun_k_gemv(lrun_dtype w_dtype, const void *w, size_t row_bytes, int64_t n, int64_t k,
                                   const float *x, int64_t m, float *y, void *stream)
{
    static const char op[] = "lrun_k_gemv";
    lrun_status s = lrun_k_check_weight(op, w_dtype, w, row_bytes, n, k);
    if (s != LRUN_OK) return s;
    if (!x || !y) return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !x ? "x" : "y");
    if (m < 1 || m > LRUN_K_GEMV_MAX_M)
        return lrun_fail(LRUN_E_ARG, "%s: m %lld (expected 1..%d; use lrun_k_gemm for more rows)", op, (long long)m,
                         LRUN_K_GEMV_MAX_M);
    if (((uintptr_t)x & 3) != 0 || ((uintptr_t)y & 3) != 0)
        return lrun_fail(LRUN_E_ARG, "%s: x and y must be 4-byte aligned floats", op);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    int64_t xn, yn;
    if (__builtin_mul_overflow(m, k, &xn) || __builtin_mul_overflow(m, n, &yn))
        return lrun_fail(LRUN_E_ARG, "%s: m %lld times n %lld or k %lld overflows", op, (long long)m, (long long)n,
                         (long long)k);
    const uint8_t *wb = (const uint8_t *)w;
    cudaStream_t st = (cudaStream_t)stream;
    cudaError_t e = cudaErrorInvalidValue;
    switch (m) {
    case 1: e = launch_m<1>(w_dtype, wb, row_bytes, n, k, x, y, st); break;
    case 2: e = launch_m<2>(w_dtype, wb, row_bytes, n, k, x, y, st); break;
    case 3: e = launch_m<3>(w_dtype, wb, row_bytes, n, k, x, y, st); break;
    case 4: e = launch_m<4>(w_dtype, wb, row_bytes, n, k, x, y, st); break;
    case 5: e = launch_m<5>(w_dtype, wb, row_bytes, n, k, x, y, st); break;
    case 6: e = launch_m<6>(w_dtype, wb, row_bytes, n, k, x, y, st); break;
    case 7: e = launch_m<7>(w_dtype, wb, row_bytes, n, k, x, y, st); break;
    case 8: e = launch_m<8>(w_dtype, wb, row_bytes, n, k, x, y, st); break;
    }
    if (e == cudaErrorInvalidConfiguration)
        return lrun_fail(LRUN_E_ARG, "%s: n %lld rows need more than 2^31-1 blocks", op, (long long)n);
    if (e != cudaSuccess) return lrun_fail(LRUN_E_INTERNAL, "%s: no kernel for %s", op, lrun_dtype_name(w_dtype));
    return lrun_k_launched(op);
}
