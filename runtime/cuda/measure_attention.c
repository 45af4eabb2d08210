/* measure_attention.c — lrun_model_measure_prefill_attention on a CUDA
 * device: how long the engine's attention takes for one layer of a prefill
 * chunk, for the planner's predicted prefill speed (lua/lrun/predict.lua,
 * docs/residency.md "Predicted prefill").
 *
 * Why measure it: the engine's attention ran on the CUDA cores
 * (kernels/attention.cu; prefill chunks now take attention_flash.cu's
 * mma.sync, still not the cuBLAS rate of the GEMMs); costing it at the
 * GEMM's flop rate made it ~0.2 ms of a 7B
 * chunk, while the chunk ran 15-21 ms slower than predicted on every dtype
 * (session 9, H100: prefill predictions +56..121%). So this times
 * the kernel op_attention (engine_cuda_forward.c) picks — lrun_k_attention,
 * or the tensor-core lrun_k_attention_flash for a chunk it takes — as it
 * calls it for one sequence's chunk of
 * n_tok tokens from an empty cache: token i attends to positions [0, i + 1)
 * of an f16 cache (the engine's default KV dtype) of n_tok positions, the
 * model's heads, KV heads and head_dim. Query and cache hold a fixed
 * non-zero pattern (small finite values). A warm-up, then the best of
 * three passes of n_layer launches each (the model's layers one after
 * another, as a chunk runs them), divided by n_layer. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "core/device.h"
#include "core/clock.h"
#include "core/error.h"
#include "cuda/cuda_backend.h"
#include "cuda/engine_cuda.h"
#include "kernels.h"
#include "lrun.h"

lrun_status lrun_cuda_measure_prefill_attention(lrun_device *device, int64_t n_head, int64_t n_head_kv,
                                                int64_t head_dim, int64_t n_layer, int64_t n_tok, double *seconds);

/* The device buffers of one measurement; bytes of each, for the release. */
struct attn_bufs {
    void *q, *k, *v, *out, *work, *base, *n_kv;
    size_t q_bytes, kv_bytes, work_bytes, base_bytes, n_kv_bytes;
};

static void release_bufs(lrun_device *device, struct attn_bufs *b)
{
    if (b->q) lrun_device_release(device, b->q, b->q_bytes);
    if (b->k) lrun_device_release(device, b->k, b->kv_bytes);
    if (b->v) lrun_device_release(device, b->v, b->kv_bytes);
    if (b->out) lrun_device_release(device, b->out, b->q_bytes);
    if (b->work) lrun_device_release(device, b->work, b->work_bytes);
    if (b->base) lrun_device_release(device, b->base, b->base_bytes);
    if (b->n_kv) lrun_device_release(device, b->n_kv, b->n_kv_bytes);
}

static lrun_status alloc_filled(lrun_device *device, size_t bytes, int value, void **out)
{
    lrun_status st = lrun_device_alloc(device, bytes, "attention measurement", out);
    if (st == LRUN_OK) st = lrun_cuda_memset(device, *out, value, bytes);
    return st;
}

/* The step table's columns for one sequence from an empty cache: k_base =
 * v_base = 0 for every token (int64, n_tok), n_kv[i] = i + 1 (int32, n_tok). */
static lrun_status upload_table(lrun_device *device, struct attn_bufs *b, int64_t n_tok)
{
    int32_t *n_kv = malloc(b->n_kv_bytes);
    if (!n_kv) return lrun_fail_oom(b->n_kv_bytes, 0, "measuring prefill attention: the step table");
    for (int64_t i = 0; i < n_tok; i++) n_kv[i] = (int32_t)(i + 1);
    lrun_status st = lrun_cuda_memcpy(device, b->n_kv, n_kv, b->n_kv_bytes, LRUN_COPY_HOST_TO_DEVICE);
    free(n_kv);
    return st;
}

lrun_status lrun_cuda_measure_prefill_attention(lrun_device *device, int64_t n_head, int64_t n_head_kv,
                                                int64_t head_dim, int64_t n_layer, int64_t n_tok, double *seconds)
{
    *seconds = 0;
    /* heads, head_dim <= 1024, n_tok <= 8192 (checked by the caller): no product overflows */
    struct attn_bufs b = {0};
    b.q_bytes = (size_t)(n_tok * n_head * head_dim) * sizeof(float);
    b.kv_bytes = (size_t)(n_tok * n_head_kv * head_dim) * 2; /* f16 */
    b.work_bytes = lrun_k_attention_work_bytes(n_tok, n_head, head_dim, n_tok);
    b.base_bytes = (size_t)n_tok * sizeof(int64_t);
    b.n_kv_bytes = (size_t)n_tok * sizeof(int32_t);
    /* 0x3c3c3c3c: f32 about 0.0115; 0x2e2e: f16 about 0.1; every score and value finite and non-zero */
    lrun_status st = alloc_filled(device, b.q_bytes, 0x3c, &b.q);
    if (st == LRUN_OK) st = alloc_filled(device, b.kv_bytes, 0x2e, &b.k);
    if (st == LRUN_OK) st = alloc_filled(device, b.kv_bytes, 0x2e, &b.v);
    if (st == LRUN_OK) st = lrun_device_alloc(device, b.q_bytes, "attention measurement", &b.out);
    if (st == LRUN_OK && b.work_bytes) st = lrun_device_alloc(device, b.work_bytes, "attention measurement", &b.work);
    if (st == LRUN_OK) st = alloc_filled(device, b.base_bytes, 0, &b.base);
    if (st == LRUN_OK) st = lrun_device_alloc(device, b.n_kv_bytes, "attention measurement", &b.n_kv);
    if (st == LRUN_OK) st = upload_table(device, &b, n_tok);
    void *stream = lrun_cuda_compute_stream(device);
    const float scale = 1.0f / sqrtf((float)head_dim);
    /* the kernel op_attention picks for this chunk (one run of n_tok tokens) */
    const int64_t fmin = lrun_cuda_fattn_min_tokens();
    const int flash = fmin > 0 && n_tok >= fmin && lrun_k_attention_flash_supported(LRUN_DTYPE_F16, head_dim);
    double best = 0;
    for (int pass = 0; pass < 4 && st == LRUN_OK; pass++) { /* a warm-up, then the best of three */
        const double t0 = lrun_now_seconds();
        for (int64_t l = 0; l < n_layer && st == LRUN_OK; l++)
            st = flash ? lrun_k_attention_flash(b.q, b.k, b.v, b.base, b.base, b.n_kv, n_tok, n_head, n_head_kv,
                                                head_dim, n_tok, scale, 0, b.out, stream)
                       : lrun_k_attention(LRUN_DTYPE_F16, b.q, b.k, b.v, b.base, b.base, b.n_kv, n_tok, n_head,
                                          n_head_kv, head_dim, n_tok, scale, b.out, b.work, stream);
        if (st == LRUN_OK) st = lrun_cuda_stream_sync(device, stream);
        const double dt = (lrun_now_seconds() - t0) / (double)n_layer;
        if (st == LRUN_OK && pass > 0 && dt > 0 && (best == 0 || dt < best)) best = dt;
    }
    release_bufs(device, &b);
    lrun_cuda_trim(device); /* the measurement's arenas go back, not into the shared pool */
    if (st == LRUN_OK) *seconds = best;
    else st = lrun_fail_context(st, "measuring prefill attention (%lld tokens, %lld heads, %lld KV heads of %lld) "
                                "on %s", (long long)n_tok, (long long)n_head, (long long)n_head_kv,
                                (long long)head_dim, device->name);
    return st;
}
