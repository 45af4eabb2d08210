/* engine_cuda_split.c — split-row weights in the CUDA engine (engine_cuda_split.h). */
#include "cuda/engine_cuda_split.h"

#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* The engine's own matrices: its blocks' and, unless it hands its rows to
 * another part, the head; eligible for the split layout. */
static int eligible(const lrun_cuda_engine *e, const struct lrun_tensor *t)
{
    return t && (t->dtype == LRUN_DTYPE_Q8_0 || t->dtype == LRUN_DTYPE_Q4_0) && !t->split && !t->packed &&
           !t->host_compute && t->ndim == 2 && t->tier == LRUN_TIER_DEVICE && t->device == e->device &&
           t->role != LRUN_ROLE_EMBEDDING && t->ne[0] % 32 == 0 && t->ne[0] <= LRUN_K_SPLIT_MAX_K &&
           t->row_bytes % 16 == 0 && ((uintptr_t)t->data & 15) == 0 && t->row_bytes <= 48 * 1024;
}

/* 1 when the device is sm_80 or later: the default split path's measured
 * range (an explicit LRUN_CUDA_GEMV_SPLIT=1 is taken on any device) */
static int sm80(const lrun_cuda_engine *e)
{
    int major = 0;
    return cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, e->device->cuda_ordinal) ==
               cudaSuccess &&
           major >= 8;
}

/* 1 when this engine takes the q8 x path: q8x chosen, fast numerics, no
 * mixture of experts (its expert GEMVs have kernels of their own), sm_80+. */
static int q8x_on(const lrun_cuda_engine *e)
{
    return e->gemv.q8x && !lrun_cuda_exact_eligible(e) && e->model->info.n_expert == 0 && sm80(e);
}

/* The q8 x scratch for m <= GEMV_MAX_ROWS rows of the widest decode GEMV
 * input (the width, the attention output or the feed-forward width): xq
 * (rows, max_k) int8, then xd (rows, max_k/32) f32 on a 256-byte boundary. */
static int64_t q8x_max_k(const lrun_cuda_engine *e)
{
    int64_t max_k = e->n_embd > e->q_dim ? e->n_embd : e->q_dim;
    max_k = max_k > e->n_ff ? max_k : e->n_ff;
    return (max_k + 31) / 32 * 32;
}
static size_t q8x_xq_bytes(int64_t max_k) { return ((size_t)GEMV_MAX_ROWS * (size_t)max_k + 255) / 256 * 256; }

size_t lrun_cuda_q8x_scratch_bytes(const lrun_cuda_engine *e)
{
    if (!q8x_on(e)) return 0;
    const int64_t max_k = q8x_max_k(e);
    return q8x_xq_bytes(max_k) + (size_t)GEMV_MAX_ROWS * (size_t)(max_k / 32) * sizeof(float);
}

static lrun_status q8x_alloc(lrun_cuda_engine *e)
{
    const size_t bytes = lrun_cuda_q8x_scratch_bytes(e);
    TRY(lrun_oom_phase(lrun_device_alloc(e->device, bytes, "engine q8 x", &e->q8x.base), "scratch"));
    e->q8x.bytes = bytes;
    e->q8x.max_k = q8x_max_k(e);
    e->q8x.xq = (int8_t *)e->q8x.base;
    e->q8x.xd = (float *)((char *)e->q8x.base + q8x_xq_bytes(e->q8x.max_k));
    e->q8x.src = NULL;
    return LRUN_OK;
}

lrun_status lrun_cuda_split_init(lrun_cuda_engine *e)
{
    const int split_old = e->gemv.split && !e->gemv.q8x; /* LRUN_CUDA_GEMV_SPLIT=1 */
    if (e->gemv.q8x && !q8x_on(e)) {
        /* a mixture of experts, exact numerics, before sm_80: the GGUF kernels */
        e->gemv.q8x = 0;
        e->gemv.split = split_old;
    }
    if (e->gemv.q8x) TRY(q8x_alloc(e));
    if (!e->gemv.split || e->offload || e->moe || e->exact) return LRUN_OK;
    lrun_model *m = e->model;
    const int64_t cap = (e->layer_end - e->layer_first) * LRUN_ARCH_TENSOR_BLOCK_COUNT + 1;
    e->split_t = calloc((size_t)cap, sizeof *e->split_t);
    if (!e->split_t) return lrun_fail_oom((size_t)cap * sizeof *e->split_t, 0, "engine: split weight records");
    struct lrun_tensor *head = lrun_cuda_gives_rows(e) ? NULL : m->output;
    for (int64_t l = e->layer_first - 1; l < e->layer_end; l++)
        for (int id = 0; id < (l < e->layer_first ? 1 : LRUN_ARCH_TENSOR_BLOCK_COUNT); id++) {
            struct lrun_tensor *t = l < e->layer_first ? head : m->layers[l].t[id];
            if (l >= e->layer_first && !lrun_arch_is_matrix(m->arch, (lrun_arch_tensor)id)) continue;
            if (!eligible(e, t)) continue; /* also a tensor listed twice: split already */
            TRY(lrun_k_split_rows(t->dtype, t->data, t->row_bytes, t->ne[1], t->ne[0], 0, e->stream));
            t->split = 1;
            e->split_t[e->n_split++] = t;
        }
    return LRUN_OK;
}

int lrun_cuda_q8x_takes(const lrun_cuda_engine *e, const struct lrun_tensor *t)
{
    return t->split || (e->gemv.q8x && (t->dtype == LRUN_DTYPE_Q8_0 || t->dtype == LRUN_DTYPE_Q4_0));
}

/* 1 when a GEMV of m rows of k through the q8 scratch can hold its x there. */
static int scratch_holds(const lrun_cuda_engine *e, int64_t m, int64_t k)
{
    return e->gemv.q8x && e->q8x.base && m <= GEMV_MAX_ROWS && k <= e->q8x.max_k && k % 32 == 0;
}

lrun_status lrun_cuda_q8x_norm(lrun_cuda_engine *e, const struct lrun_tensor *t, const float *x, const float *w,
                               float *xn, int64_t m, int *done)
{
    const int64_t k = t->ne[0];
    *done = 0;
    if (!lrun_cuda_q8x_takes(e, t) || !scratch_holds(e, m, k)) return LRUN_OK;
    TRY(lrun_k_rms_norm_quantize_q8(x, w, xn, m, k, e->eps, e->q8x.xq, e->q8x.xd, e->stream));
    e->q8x.src = xn, e->q8x.m = m, e->q8x.k = k;
    *done = 1;
    return LRUN_OK;
}

lrun_status lrun_cuda_q8x_gemv(lrun_cuda_engine *e, const struct lrun_tensor *t, const lrun_k_gemv_part *parts,
                               int n_parts, const float *x, int64_t m, int mode)
{
    const int64_t k = t->ne[0];
    if (!scratch_holds(e, m, k)) {
        const int flags = t->split ? LRUN_K_GEMV_SPLIT : lrun_cuda_gemv_flags(e, t->dtype);
        return lrun_k_gemv_multi(t->dtype, parts, n_parts, k, x, m, mode | flags, e->stream);
    }
    if (e->q8x.src != x || e->q8x.m != m || e->q8x.k != k) {
        TRY(lrun_k_quantize_q8(LRUN_DTYPE_Q8_0, x, m, k, e->q8x.xq, e->q8x.xd, NULL, e->stream));
        e->q8x.src = x, e->q8x.m = m, e->q8x.k = k;
    }
    return lrun_k_gemv_q8x(t->dtype, parts, n_parts, k, e->q8x.xq, e->q8x.xd, m, mode, t->split, e->stream);
}

void lrun_cuda_split_free(lrun_cuda_engine *e)
{
    for (int64_t i = 0; i < e->n_split; i++) {
        struct lrun_tensor *t = e->split_t[i];
        /* on failure the bytes stay split and marked: every reader then refuses them rather than misread */
        if (lrun_k_split_rows(t->dtype, t->data, t->row_bytes, t->ne[1], t->ne[0], 1, e->stream) == LRUN_OK &&
            cudaStreamSynchronize((cudaStream_t)e->stream) == cudaSuccess)
            t->split = 0;
    }
    free(e->split_t);
    e->split_t = NULL;
    e->n_split = 0;
    if (e->q8x.base) lrun_device_release(e->device, e->q8x.base, e->q8x.bytes);
    memset(&e->q8x, 0, sizeof e->q8x);
}
