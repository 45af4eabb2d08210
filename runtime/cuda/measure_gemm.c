/* measure_gemm.c — lrun_model_measure_matmul on a CUDA device: how fast the
 * engine's batched product runs (prefill), for the planner's predicted
 * prefill speed (lua/lrun/predict.lua, docs/residency.md "Predicted
 * prefill").
 *
 * The product is the one the engine runs for more than GEMV_MAX_ROWS rows
 * (engine_cuda_forward.c's matmul): lrun_k_gemm, the weight dequantized into
 * an f16/bf16 slot unless it already is that dtype, the activations rounded
 * into a slot, one cublasGemmEx. Weights and activations hold a fixed
 * non-zero pattern (weights 0x11 bytes: small finite scales and values in
 * every dtype; activations about 0.0115), not zeros: tensor cores multiply
 * zeros at less power and so at higher sustained clocks, which flattered
 * the rate. Timed on the device's compute stream (the stream its cuBLAS
 * handle is bound to) between synchronizations, GEMM_REPS products back to
 * back per pass (a chunk runs seven per layer, one after another; one
 * product alone is ~0.1 ms on an H100, so a single launch would also time
 * the synchronization): a warm-up, then the best of three. */
#include <stdint.h>
#include <time.h>

#include "core/device.h"
#include "core/clock.h"
#include "core/error.h"
#include "cuda/cuda_backend.h"
#include "kernels.h"
#include "lrun.h"

lrun_status lrun_cuda_measure_gemm(lrun_device *device, lrun_dtype dtype, int64_t n, int64_t k, int64_t rows,
                                   double *flops_per_s);

/* The engine's slot dtype for a weight dtype (engine_cuda_internal.h's slot_dtype). */
static lrun_dtype gemm_slot_dtype(lrun_dtype w) { return w == LRUN_DTYPE_BF16 ? LRUN_DTYPE_BF16 : LRUN_DTYPE_F16; }

/* The device buffers of one measurement; bytes of each, for the release. */
struct gemm_bufs {
    void *w, *x, *y, *w_slot, *x_slot;
    size_t w_bytes, x_bytes, y_bytes, w_slot_bytes, x_slot_bytes;
};

/* Products per timed pass. */
#define GEMM_REPS 8

static lrun_status alloc_filled(lrun_device *device, size_t bytes, int value, void **out)
{
    lrun_status st = lrun_device_alloc(device, bytes, "matmul measurement", out);
    if (st == LRUN_OK) st = lrun_cuda_memset(device, *out, value, bytes);
    return st;
}

static void release_bufs(lrun_device *device, struct gemm_bufs *b)
{
    if (b->w) lrun_device_release(device, b->w, b->w_bytes);
    if (b->x) lrun_device_release(device, b->x, b->x_bytes);
    if (b->y) lrun_device_release(device, b->y, b->y_bytes);
    if (b->w_slot) lrun_device_release(device, b->w_slot, b->w_slot_bytes);
    if (b->x_slot) lrun_device_release(device, b->x_slot, b->x_slot_bytes);
}

lrun_status lrun_cuda_measure_gemm(lrun_device *device, lrun_dtype dtype, int64_t n, int64_t k, int64_t rows,
                                   double *flops_per_s)
{
    *flops_per_s = 0;
    size_t row_bytes = 0;
    lrun_status st = lrun_dtype_row_bytes(dtype, k, &row_bytes);
    if (st != LRUN_OK) return lrun_fail_context(st, "measuring matmul on %s", device->name);
    const lrun_dtype slot = gemm_slot_dtype(dtype);
    /* n, k <= 65536 and rows <= 8192 (checked by the caller): no product overflows */
    struct gemm_bufs b = {0};
    b.w_bytes = (size_t)n * row_bytes;
    b.x_bytes = (size_t)rows * (size_t)k * sizeof(float);
    b.y_bytes = (size_t)rows * (size_t)n * sizeof(float);
    b.w_slot_bytes = dtype == slot ? 0 : (size_t)n * (size_t)k * 2;
    b.x_slot_bytes = (size_t)rows * (size_t)k * 2;
    st = alloc_filled(device, b.w_bytes, 0x11, &b.w);
    if (st == LRUN_OK) st = alloc_filled(device, b.x_bytes, 0x3c, &b.x); /* 0x3c3c3c3c: about 0.0115 */
    if (st == LRUN_OK) st = lrun_device_alloc(device, b.y_bytes, "matmul measurement", &b.y);
    if (st == LRUN_OK && b.w_slot_bytes) st = lrun_device_alloc(device, b.w_slot_bytes, "matmul measurement", &b.w_slot);
    if (st == LRUN_OK) st = lrun_device_alloc(device, b.x_slot_bytes, "matmul measurement", &b.x_slot);
    void *stream = lrun_cuda_compute_stream(device), *cublas = lrun_cuda_cublas(device);
    const double flops = 2.0 * (double)n * (double)k * (double)rows * GEMM_REPS;
    double best = 0;
    for (int i = 0; i < 4 && st == LRUN_OK; i++) { /* a warm-up, then the best of three */
        const double t0 = lrun_now_seconds();
        for (int r = 0; r < GEMM_REPS && st == LRUN_OK; r++)
            st = lrun_k_gemm(cublas, dtype, b.w, row_bytes, n, k, b.x, rows, b.y, slot, b.w_slot, b.x_slot, stream);
        if (st == LRUN_OK) st = lrun_cuda_stream_sync(device, stream);
        const double dt = lrun_now_seconds() - t0;
        if (st == LRUN_OK && i > 0 && dt > 0 && flops / dt > best) best = flops / dt;
    }
    release_bufs(device, &b);
    if (st == LRUN_OK) *flops_per_s = best;
    else st = lrun_fail_context(st, "measuring matmul (%s, %lld x %lld, %lld rows) on %s", lrun_dtype_name(dtype),
                                (long long)n, (long long)k, (long long)rows, device->name);
    return st;
}
