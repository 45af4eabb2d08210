/* engine_cuda_split.c — split-row weights in the CUDA engine (engine_cuda_split.h). */
#include "cuda/engine_cuda_split.h"

#include <stdlib.h>

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

lrun_status lrun_cuda_split_init(lrun_cuda_engine *e)
{
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
}
