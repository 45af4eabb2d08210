/* placement.c — the parts of lrun_engine_size_placement (engine.c) that are
 * the same for every backend: checking a proposed placement, and the
 * weights it leaves on the device plus the totals. Each backend sizes the
 * rest with its own init's layout code (backend.h, size_placement):
 *
 *   scratch   each engine's layout_scratch
 *   slots     cpu: lrun_weight_ring_size (weight_ring.c's init layout);
 *             cuda: lrun_cuda_offload_plan run for the proposed tiers
 *   KV cache  cpu: lrun_kv_cache_size; cuda: lrun_cuda_kv_size
 *   slack     cuda: the pool's fragmentation bound (cuda/engine_cuda.c)
 *
 * Nothing moves and no device memory is taken, so a policy search may call
 * it for every candidate (lrun.h says what each field holds;
 * docs/residency.md how lrun.residency plans with it). */
#include "residency/placement.h"

#include "core/checked.h"
#include "core/error.h"

lrun_status lrun_placement_check(const lrun_model *model, const lrun_tier *tiers)
{
    for (int64_t i = 0; tiers && i < model->n_tensors; i++)
        if ((int)tiers[i] < 0 || (int)tiers[i] >= LRUN_TIER_COUNT)
            return lrun_fail(LRUN_E_ARG, "engine size: tiers[%lld] (%s) is %d, not an lrun_tier", (long long)i,
                             model->tensors[i].name, (int)tiers[i]);
    return LRUN_OK;
}

/* Whether blocks [first, end) read t: its block's, the embedding in the first
 * part, what lies outside blocks (and a tied head's table) in the last. */
static int reads(const lrun_model *model, const struct lrun_tensor *t, int64_t first, int64_t end)
{
    const int last = end == model->info.n_layer;
    if (t->layer >= 0) return t->layer >= first && t->layer < end;
    if (t == model->tok_embd) return first == 0 || (last && model->info.tied_embeddings);
    return last;
}

lrun_status lrun_placement_total(lrun_placement_size *out, const lrun_placement *p)
{
    return lrun_placement_total_blocks(out, p, 0, p->model->info.n_layer);
}

lrun_status lrun_placement_total_blocks(lrun_placement_size *out, const lrun_placement *p, int64_t first, int64_t end)
{
    const lrun_model *model = p->model;
    out->weight_bytes = 0;
    for (int64_t i = 0; i < model->n_tensors; i++) {
        const struct lrun_tensor *t = &model->tensors[i];
        if (reads(model, t, first, end) && lrun_placement_tier(p, t) == LRUN_TIER_DEVICE)
            out->weight_bytes += lrun_placement_stored_bytes(p, t);
    }
    const size_t init[] = {out->slot_bytes, out->embd_rows_bytes, out->scratch_bytes, out->kv_init_bytes};
    const size_t peak[] = {out->weight_bytes, out->slot_bytes, out->embd_rows_bytes, out->scratch_bytes,
                           out->kv_max_bytes, out->pool_slack_bytes};
    int ok = 1;
    out->init_bytes = out->peak_bytes = 0;
    for (size_t i = 0; i < sizeof init / sizeof init[0]; i++)
        ok = ok && lrun_size_add(out->init_bytes, init[i], &out->init_bytes);
    for (size_t i = 0; i < sizeof peak / sizeof peak[0]; i++)
        ok = ok && lrun_size_add(out->peak_bytes, peak[i], &out->peak_bytes);
    return ok ? LRUN_OK : lrun_fail(LRUN_E_OOM, "engine size: the placement's bytes overflow size_t");
}
