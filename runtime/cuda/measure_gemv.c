/* measure_gemv.c — lrun_model_measure_device_gemv on a CUDA device: how fast
 * the engine's batch-1 decode GEMV reads weights of a dtype from device
 * memory, for the planner's predicted decode speed (lua/lrun/predict.lua,
 * docs/residency.md "Predicted decode on CUDA").
 *
 * Why not the device's copy bandwidth: the GEMV kernels reach 40-85% of
 * the memory's read rate depending on the dtype (session 9, H100), and a
 * copy small enough to sit in L2 measures the cache. So this times the
 * kernel itself: lrun_k_gemv_multi at m = 1 with the flags the engine
 * chooses (gemv_choice.h), or the q8 x kernel the engine takes for Q8_0
 * and Q4_0 (engine_cuda_split.h), over copies of one (n, k) weight laid end to end
 * across at least 4x the L2 cache, one launch per copy in turn, the way a
 * decode step walks its layers. The bytes hold a fixed non-zero pattern
 * (0x11: small finite scales and values in every dtype) so neither the
 * memory nor the arithmetic sees all zeros. A warm-up pass, then the best
 * of three. */
#include <stdint.h>
#include <time.h>

#include "core/device.h"
#include "core/clock.h"
#include "core/error.h"
#include "cuda/cuda_backend.h"
#include "cuda/gemv_choice.h"
#include "kernels.h"
#include "lrun.h"

lrun_status lrun_cuda_measure_gemv(lrun_device *device, int exact, lrun_dtype dtype, int64_t n, int64_t k,
                                   size_t bytes, double *bytes_per_s);

/* How many copies of a matrix of mat bytes to walk: bytes' worth, at least
 * 4x the L2 cache, at most half the device's free budget; at least one. */
static size_t copies_for(const lrun_device *device, size_t mat, size_t bytes)
{
    const size_t l2 = lrun_cuda_l2_bytes(device);
    if (bytes < 4 * l2) bytes = 4 * l2;
    const size_t cap = lrun_device_capacity(device), used = lrun_device_used(device);
    const size_t room = cap > used ? (cap - used) / 2 : 0;
    if (bytes > room) bytes = room;
    const size_t c = (bytes + mat - 1) / mat;
    return c ? c : 1;
}

lrun_status lrun_cuda_measure_gemv(lrun_device *device, int exact, lrun_dtype dtype, int64_t n, int64_t k,
                                   size_t bytes, double *bytes_per_s)
{
    *bytes_per_s = 0;
    size_t row_bytes = 0;
    lrun_status st = lrun_dtype_row_bytes(dtype, k, &row_bytes);
    if (st != LRUN_OK) return lrun_fail_context(st, "measuring the decode GEMV on %s", device->name);
    /* n, k <= 65536 (checked by the caller): n · row_bytes fits a size_t */
    const size_t mat = (size_t)n * row_bytes, copies = copies_for(device, mat, bytes);
    const size_t w_bytes = copies * mat, x_bytes = (size_t)k * sizeof(float), y_bytes = (size_t)n * sizeof(float);
    void *w = NULL, *x = NULL, *y = NULL;
    st = lrun_device_alloc(device, w_bytes, "GEMV measurement", &w);
    if (st == LRUN_OK) st = lrun_cuda_memset(device, w, 0x11, w_bytes);
    if (st == LRUN_OK) st = lrun_device_alloc(device, x_bytes, "GEMV measurement", &x);
    if (st == LRUN_OK) st = lrun_cuda_memset(device, x, 0x3c, x_bytes); /* 0x3c3c3c3c: about 0.0115 */
    if (st == LRUN_OK) st = lrun_device_alloc(device, y_bytes, "GEMV measurement", &y);
    lrun_cuda_gemv_choice choice;
    lrun_cuda_gemv_choice_from_env(exact, &choice);
    const int mode = LRUN_K_GEMV_STORE | lrun_cuda_gemv_choice_flags(&choice, dtype);
    void *stream = lrun_cuda_compute_stream(device);
    /* the engine's q8 x path (engine_cuda_split.h) for Q8_0/Q4_0: x quantized
     * once (a decode step shares it over several weights), then the kernel
     * on the layout the engine would give these rows (any bytes are valid
     * split rows) */
    const int q8x = choice.q8x && (dtype == LRUN_DTYPE_Q8_0 || dtype == LRUN_DTYPE_Q4_0) && k % 32 == 0,
              split = row_bytes % 16 == 0;
    void *xq = NULL;
    const size_t xq_bytes = (size_t)k + 256 + (size_t)(k / 32) * sizeof(float);
    if (st == LRUN_OK && q8x) st = lrun_device_alloc(device, xq_bytes, "GEMV measurement", &xq);
    float *xd = xq ? (float *)((char *)xq + ((size_t)k + 255) / 256 * 256) : NULL;
    if (st == LRUN_OK && q8x) st = lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, x, 1, k, xq, xd, NULL, stream);
    double best = 0;
    for (int pass = 0; pass < 4 && st == LRUN_OK; pass++) { /* a warm-up, then the best of three */
        const double t0 = lrun_now_seconds();
        for (size_t c = 0; c < copies && st == LRUN_OK; c++) {
            const lrun_k_gemv_part part = {(const char *)w + c * mat, row_bytes, n, y};
            st = q8x ? lrun_k_gemv_q8x(dtype, &part, 1, k, xq, xd, 1, LRUN_K_GEMV_STORE, split, stream)
                     : lrun_k_gemv_multi(dtype, &part, 1, k, x, 1, mode, stream);
        }
        if (st == LRUN_OK) st = lrun_cuda_stream_sync(device, stream);
        const double dt = lrun_now_seconds() - t0;
        if (st == LRUN_OK && pass > 0 && dt > 0 && (double)w_bytes / dt > best) best = (double)w_bytes / dt;
    }
    if (w) lrun_device_release(device, w, w_bytes);
    if (x) lrun_device_release(device, x, x_bytes);
    if (y) lrun_device_release(device, y, y_bytes);
    if (xq) lrun_device_release(device, xq, xq_bytes);
    lrun_cuda_trim(device); /* the measurement's arenas go back, not into the shared pool */
    if (st == LRUN_OK) *bytes_per_s = best;
    else st = lrun_fail_context(st, "measuring the decode GEMV (%s, %lld x %lld) on %s", lrun_dtype_name(dtype),
                                (long long)n, (long long)k, device->name);
    return st;
}
