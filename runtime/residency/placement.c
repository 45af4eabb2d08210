/* placement.c — lrun_engine_size_placement: the device bytes an AS_PLACED
 * engine would take for a proposed placement, by the engines' own layout
 * code (lrun.h says what each field holds; docs/residency.md how
 * lrun.residency plans with it).
 *
 *   weights   the tensors the placement leaves in the DEVICE tier
 *   scratch   lrun_engine_estimate (each engine's layout_scratch)
 *   slots     cpu: lrun_weight_stream_size (weight_stream.c's init layout);
 *             cuda: lrun_cuda_offload_plan run for the proposed tiers
 *   KV cache  cpu: lrun_kv_cache_size; cuda: lrun_cuda_kv_size
 *   slack     cuda: the pool's fragmentation bound, below
 *
 * Nothing moves and no device memory is taken, so a policy search may call
 * this for every candidate. */
#include "residency/placement.h"

#include <string.h>

#include "core/checked.h"
#include "core/device.h"
#include "core/error.h"
#include "cuda/cuda_backend.h"
#include "cuda/engine_cuda.h"
#include "kv/kv_cache.h"
#include "residency/weight_stream.h"

/* The CPU engine's parts besides the scratch (which the estimate gave). The
 * shape defaults are lrun_engine_init's: 1 sequence, n_ctx_train positions. */
static lrun_status size_cpu(lrun_model *model, const lrun_engine_opts *opts, const lrun_placement *p,
                            lrun_placement_size *out)
{
    const lrun_model_info *in = &model->info;
    const lrun_kv_quant_opts q = {opts->kv_quant_bits, opts->kv_quant_group, opts->kv_residual_len};
    lrun_status st = lrun_weight_stream_size(model, p, opts->prefetch_layers, &out->slot_bytes);
    if (st == LRUN_OK)
        st = lrun_kv_cache_size(opts->cache_kind, opts->kv_dtype == LRUN_KV_DTYPE_F32 ? LRUN_DTYPE_F32 : LRUN_DTYPE_F16,
                                in->n_layer, in->n_head_kv, in->head_dim, opts->n_seq_max ? opts->n_seq_max : 1,
                                opts->n_ctx_max ? opts->n_ctx_max : in->n_ctx_train, &q, &out->kv_init_bytes,
                                &out->kv_max_bytes);
    return st;
}

/* The pool's fragmentation bound (docs/residency.md "Fragmentation"):
 * blocks of at least own_arena bytes get arenas of their own size and leave
 * no hole; smaller ones share arenas of arena bytes, so what can be stranded
 * is the free tail of the open shared arena (at most one arena) and less
 * than own_arena per closed one. None when the capacity is at most one
 * arena, which then holds every block. */
static size_t pool_slack(const lrun_model *model, const lrun_placement *p, const lrun_placement_size *s)
{
    const size_t arena = lrun_cuda_pool_arena_bytes(), own = lrun_cuda_pool_own_arena_bytes();
    if (lrun_device_capacity(model->device) <= arena) return 0;
    size_t small = 0;
    for (int64_t i = 0; i < model->n_tensors; i++) {
        const struct lrun_tensor *t = &model->tensors[i];
        if (lrun_placement_tier(p, t) == LRUN_TIER_DEVICE && t->nbytes < own) small += t->nbytes;
    }
    /* the engine's own blocks: scratch, slots with rows, the KV cache */
    const size_t blocks[] = {s->scratch_bytes, s->slot_bytes + s->embd_rows_bytes, s->kv_max_bytes};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
        if (blocks[i] < own) small += blocks[i];
    return arena + (small + arena - 1) / arena * own;
}

static lrun_status check_tiers(const lrun_model *model, const lrun_tier *tiers)
{
    for (int64_t i = 0; tiers && i < model->n_tensors; i++)
        if ((int)tiers[i] < 0 || (int)tiers[i] >= LRUN_TIER_COUNT)
            return lrun_fail(LRUN_E_ARG, "engine size: tiers[%lld] (%s) is %d, not an lrun_tier", (long long)i,
                             model->tensors[i].name, (int)tiers[i]);
    return LRUN_OK;
}

lrun_status lrun_engine_size_placement(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                       const lrun_tier *tiers, const int8_t *host_compute)
{
    static const lrun_engine_opts defaults = {.n_seq_max = 1};
    if (!out) return lrun_fail(LRUN_E_ARG, "engine size: out is NULL");
    memset(out, 0, sizeof *out);
    if (!model) return lrun_fail(LRUN_E_ARG, "engine size: model is NULL");
    if (!opts) opts = &defaults;
    lrun_status st = check_tiers(model, tiers);
    if (st != LRUN_OK) return st;
    /* the options checked as init checks them, the scratch and k from the engine's own estimate */
    lrun_engine_needs needs;
    if ((st = lrun_engine_estimate(&needs, model, opts)) != LRUN_OK) return st;
    const lrun_placement p = {model, tiers, host_compute};
    const int cuda = lrun_device_kind_of(model->device) == LRUN_DEVICE_KIND_CUDA;
    if (cuda) {
        st = lrun_cuda_engine_size_placement(model, opts, &p, out);
    } else {
        out->scratch_bytes = needs.scratch_bytes;
        st = size_cpu(model, opts, &p, out);
    }
    if (st != LRUN_OK) {
        memset(out, 0, sizeof *out);
        return st;
    }
    out->prefetch_layers = needs.prefetch_layers;
    for (int64_t i = 0; i < model->n_tensors; i++) {
        const struct lrun_tensor *t = &model->tensors[i];
        if (lrun_placement_tier(&p, t) == LRUN_TIER_DEVICE) out->weight_bytes += t->nbytes;
    }
    if (cuda) out->pool_slack_bytes = pool_slack(model, &p, out);
    const size_t init[] = {out->slot_bytes, out->embd_rows_bytes, out->scratch_bytes, out->kv_init_bytes};
    const size_t peak[] = {out->weight_bytes, out->slot_bytes, out->embd_rows_bytes, out->scratch_bytes,
                           out->kv_max_bytes, out->pool_slack_bytes};
    int ok = 1;
    for (size_t i = 0; i < sizeof init / sizeof init[0]; i++)
        ok = ok && lrun_size_add(out->init_bytes, init[i], &out->init_bytes);
    for (size_t i = 0; i < sizeof peak / sizeof peak[0]; i++)
        ok = ok && lrun_size_add(out->peak_bytes, peak[i], &out->peak_bytes);
    if (!ok) {
        memset(out, 0, sizeof *out);
        return lrun_fail(LRUN_E_OOM, "engine size: the placement's bytes overflow size_t");
    }
    return LRUN_OK;
}
