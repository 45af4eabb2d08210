/* engine_cuda_packed.c — packed weights resident on the device: decode into
 * the engine's packed scratch, then the plain kernels (engine_cuda_packed.h
 * says where the fused kernel goes). Stream order keeps it safe: every
 * decode and the product that reads it run on the compute stream, so the
 * next decode into the scratch starts after the last product read it. */
#include "cuda/engine_cuda_packed.h"

#include "residency/placement.h"

/* The weight matrices compute reads: the blocks' matrices, the head and the table. */
static size_t need_of(const lrun_placement *p, const struct lrun_tensor *t, int all_device)
{
    if (!t || !lrun_placement_packed(p, t)) return 0;
    if (!all_device && lrun_placement_tier(p, t) != LRUN_TIER_DEVICE) return 0;
    return t->nbytes;
}

size_t lrun_cuda_packed_scratch_bytes(const lrun_model *m, const lrun_placement *p, int all_device)
{
    size_t best = need_of(p, m->output, all_device);
    const size_t te = need_of(p, m->tok_embd, all_device);
    if (te > best) best = te;
    for (int64_t l = 0; l < m->info.n_layer; l++)
        for (int id = 0; id < LRUN_ARCH_TENSOR_BLOCK_COUNT; id++) {
            if (!lrun_arch_is_matrix(m->arch, (lrun_arch_tensor)id)) continue;
            const size_t b = need_of(p, m->layers[l].t[id], all_device);
            if (b > best) best = b;
        }
    return best;
}

lrun_status lrun_cuda_packed_decode_scratch(lrun_cuda_engine *e, const struct lrun_tensor *w, const void *packed,
                                            const void **plain)
{
    if (!e->packed_scratch || w->nbytes > e->packed_scratch_bytes)
        return lrun_fail(LRUN_E_INTERNAL, "engine on %s: packed weight %s (%zu bytes plain) exceeds the packed "
                         "scratch (%zu bytes)", e->device->name, w->name, w->nbytes, e->packed_scratch_bytes);
    TRY(lrun_k_packed_decode((uint16_t *)e->packed_scratch, packed, &w->pk, 0, w->pk.n, e->stream));
    *plain = e->packed_scratch;
    return LRUN_OK;
}

lrun_status lrun_cuda_packed_matvec(lrun_cuda_engine *e, const struct lrun_tensor *w, const void *packed,
                                    const float *x, int64_t m, float *y)
{
    const void *plain;
    TRY(lrun_cuda_packed_decode_scratch(e, w, packed, &plain));
    /* the fused decode+GEMV kernel replaces this branch (mode 3) */
    if (m <= GEMV_MAX_ROWS) return lrun_k_gemv(w->dtype, plain, w->row_bytes, w->ne[1], w->ne[0], x, m, y, e->stream);
    return lrun_k_gemm(e->cublas, w->dtype, plain, w->row_bytes, w->ne[1], w->ne[0], x, m, y, slot_dtype(w->dtype),
                       e->w_slot, e->x_slot, e->stream);
}
