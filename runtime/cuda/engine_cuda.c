/* engine_cuda.c — the forward pass of a llama model on a CUDA device.
 *
 * The same math as engine.c, step for step, with every op a kernel of
 * kernels/ on the device's compute stream:
 *
 *   x = embed(tokens)
 *   per layer: xn = rms_norm(x) * attn_norm
 *              q, k, v = xn Wqᵀ, xn Wkᵀ, xn Wvᵀ (+ biases)    gemv (m ≤ 8) or cuBLAS gemm
 *              rope(q, k); k, v stored in the cache at each token's row
 *              x += attention(q, cache) Woᵀ (+ bo)
 *              xn = rms_norm(x) * ffn_norm
 *              x += (silu(xn Wgᵀ) * (xn Wuᵀ)) Wdᵀ
 *   logits = rms_norm(x[wanted rows]) * output_norm · Wheadᵀ, copied to the host
 *
 * Per chunk the host sends one table (token ids, positions, cache offsets,
 * lengths) in one copy and reads back the logits of the wanted rows; nothing
 * else crosses the bus. Everything on the device is allocated at init (and
 * when a DYNAMIC cache grows), never per step. See engine_cuda.h for what
 * lives where and for the CUDA graph of the decode step. */
#include "cuda/engine_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/device.h"
#include "core/format_bytes.h"
#include "core/error.h"
#include "model/model.h"
#include "cpu/cpu_ops.h"
#include "cuda/cuda_backend.h"
#include "cuda/engine_cuda_moe_exact.h"
#include "cuda/engine_cuda_split.h"
#include "cuda/engine_cuda_host_stream.h"
#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"
#include "cuda/engine_cuda_packed.h"
#include "cuda/op_profile.h"
#include "residency/placement.h"
#include "kernels.h"
#include "step_tokens.h"

// ---------------------------------------------------------------- sizes

/* Scratch buffers are aligned like the pool's blocks (256), so vector loads stay aligned. */
static int carve(char **cursor, size_t *total, size_t n_bytes, void **out)
{
    return lrun_carve(cursor, total, n_bytes, 256, out);
}


/* Bytes of the gemm weight slot: the largest weight the engine multiplies by that must be
 * converted (a split's part: its blocks', and the head only in the last part). */
static size_t w_slot_bytes(const lrun_cuda_engine *e)
{
    const lrun_model *m = e->model;
    size_t best = 0;
    const struct lrun_tensor *head = lrun_cuda_gives_rows(e) ? NULL : m->output;
    /* the head, then every matrix of each block the description names */
    for (int64_t l = e->layer_first - 1; l < e->layer_end; l++)
        for (int id = 0; id < (l < e->layer_first ? 1 : LRUN_ARCH_TENSOR_BLOCK_COUNT); id++) {
            const struct lrun_tensor *w = l < e->layer_first ? head : m->layers[l].t[id];
            if (!w || (l >= e->layer_first && !lrun_arch_is_matrix(m->arch, (lrun_arch_tensor)id))) continue;
            if (w->dtype == slot_dtype(w->dtype)) continue;
            size_t b = (size_t)w->ne[0] * (size_t)w->ne[1] * 2; /* fits: the tensor's bytes did */
            if (b > best) best = b;
        }
    return best;
}

/* Lays out (or, with base NULL, only sizes) the device scratch block. */
static int layout_scratch(lrun_cuda_engine *e, void *base, size_t *total)
{
    const lrun_model *m = e->model;
    const lrun_model_info *in = &m->info;
    const size_t B = (size_t)e->n_batch_max, f = sizeof(float);
    char *c = base;
    size_t sz, max_k = (size_t)(e->n_ff > e->n_embd ? e->n_ff : e->n_embd);
    if ((size_t)e->q_dim > max_k) max_k = (size_t)e->q_dim;
    const size_t work = lrun_k_attention_work_bytes(e->n_batch_max, in->n_head, in->head_dim, e->n_ctx_max);
    /* the exact path (engine_cuda_exact.c) has its own matmul for every size */
    const int gemm = e->n_batch_max > GEMV_MAX_ROWS && !lrun_cuda_exact_eligible(e);
    /* a split's part before the last hands its rows on: no logits */
    const size_t logit_rows = lrun_cuda_gives_rows(e) ? 0 : LOGIT_ROWS;
    *total = 0;
    int ok = lrun_size_mul(B * f, (size_t)e->n_embd, &sz) && carve(&c, total, sz, (void **)&e->x) &&
             carve(&c, total, sz, (void **)&e->xn) && carve(&c, total, sz, (void **)&e->tmp) &&
             lrun_size_mul(B * f, (size_t)e->q_dim, &sz) && carve(&c, total, sz, (void **)&e->q) &&
             carve(&c, total, sz, (void **)&e->attn) && lrun_size_mul(B * f, (size_t)e->kv_dim, &sz) &&
             carve(&c, total, sz, (void **)&e->k) && carve(&c, total, sz, (void **)&e->v) &&
             lrun_size_mul(B * f, (size_t)e->n_ff, &sz) && carve(&c, total, sz, (void **)&e->gate) &&
             carve(&c, total, sz, (void **)&e->up) && lrun_size_mul(logit_rows * f, (size_t)e->n_vocab, &sz) &&
             carve(&c, total, sz, (void **)&e->logits) && lrun_size_mul(lrun_model_vector_floats(m), f, &sz) &&
             carve(&c, total, sz, (void **)&e->vectors) && carve(&c, total, work, &e->attn_work) &&
             carve(&c, total, e->table_bytes, &e->d_table_base);
    if (ok && gemm) {
        const size_t ws = w_slot_bytes(e);
        if (ws) ok = carve(&c, total, ws, &e->w_slot);
        ok = ok && lrun_size_mul(B * 2, max_k, &sz) && carve(&c, total, sz, &e->x_slot);
    }
    /* last, and only with packed weights on the device: the plain layout above is unchanged */
    if (ok && e->packed_scratch_bytes) ok = carve(&c, total, e->packed_scratch_bytes, &e->packed_scratch);
    return ok;
}

/* Points the five arrays of a table at base (B entries each). */
static void table_at(struct step_table *t, void *base, int64_t B)
{
    char *p = base;
    t->row_off = (int64_t *)p;
    t->kv_base = (int64_t *)(p + 8 * B);
    t->tokens = (int32_t *)(p + 16 * B);
    t->pos = (int32_t *)(p + 20 * B);
    t->n_kv = (int32_t *)(p + 24 * B);
}

// ---------------------------------------------------------------- init

/* Moves every tensor of the model to the device: those still in the file
 * through the streaming loader (model_upload.c: reader threads, pinned
 * chunks, no second host copy). On failure nothing has moved. */
static lrun_status move_weights(lrun_cuda_engine *e)
{
    lrun_model *m = e->model;
    const int64_t n = m->n_tensors;
    int64_t *index = malloc((size_t)(n ? n : 1) * sizeof *index);
    lrun_tier *tier = malloc((size_t)(n ? n : 1) * sizeof *tier);
    lrun_status st = index && tier ? LRUN_OK : lrun_fail_oom((size_t)n * sizeof *index, 0, "engine: tier records");
    for (int64_t i = 0; st == LRUN_OK && i < n; i++) index[i] = i, tier[i] = LRUN_TIER_DEVICE;
    if (st == LRUN_OK) st = lrun_model_move_tensors(m, n, index, tier);
    free(index);
    free(tier);
    return st;
}

/* Converts the vector tensors to f32 on the host and uploads them at once. */
static lrun_status load_vectors(lrun_cuda_engine *e)
{
    const lrun_model *m = e->model;
    const size_t n = lrun_model_vector_floats(m);
    float *h = malloc(n * sizeof *h);
    if (!h) return lrun_fail_oom(n * sizeof *h, 0, "engine: %zu floats of host staging for the norms", n);
    size_t at = 0;
    lrun_status st = LRUN_OK;
#define VEC(tensor, dst)                                                                          \
    do {                                                                                          \
        const struct lrun_tensor *t_ = (tensor);                                                  \
        (dst) = NULL;                                                                             \
        if (!t_ || st != LRUN_OK) break;                                                          \
        const int64_t n_ = t_->ne[0] * t_->ne[1] * t_->ne[2]; /* gpt-oss's expert biases: 2-D */  \
        st = lrun_tensor_read_f32(t_, 0, n_, h + at);                                             \
        (dst) = e->vectors + at;                                                                  \
        at += (size_t)n_;                                                                         \
    } while (0)
    VEC(m->output_norm, e->output_norm);
    VEC(lrun_model_rope_factors(m, e->n_ctx_max), e->freq_factors);
    for (int64_t l = e->layer_first; l < e->layer_end; l++) { /* a split's part: its own blocks' */
        const struct lrun_model_layer *L = &m->layers[l];
        struct cuda_layer *E = &e->layers[l];
        for (int i = 0; i < LRUN_ARCH_N_BLOCK_VECTORS; i++)
            VEC(L->t[lrun_arch_block_vectors[i]], E->vec[lrun_arch_block_vectors[i]]);
    }
#undef VEC
    if (st == LRUN_OK)
        st = lrun_copy_bytes(e->device, e->vectors, LRUN_TIER_DEVICE, h, LRUN_TIER_HOST, at * sizeof *h);
    free(h);
    return st == LRUN_OK ? st : lrun_fail_context(st, "engine on %s: norms", e->device->name);
}

/* Fails with the structured OOM error, before anything moves, when the
 * weights still to move (none when as placed), a static cache, the scratch
 * and the streaming slots cannot all fit. */
static lrun_status check_fits(lrun_cuda_engine *e, size_t kv_bytes, size_t slot_bytes, int as_placed)
{
    size_t weights = 0, need = 0;
    for (int64_t i = 0; i < e->model->n_tensors && !as_placed; i++) {
        const struct lrun_tensor *t = &e->model->tensors[i];
        if (!(t->tier == LRUN_TIER_DEVICE && t->device == e->device)) weights += lrun_tensor_stored_bytes(t);
    }
    const size_t free_b = lrun_device_free_bytes(e->device),
                 scratch = e->scratch_bytes + lrun_cuda_moe_scratch_bytes(e) + lrun_cuda_q8x_scratch_bytes(e);
    if (lrun_size_add(weights, kv_bytes, &need) && lrun_size_add(need, scratch, &need) &&
        lrun_size_add(need, slot_bytes, &need) && need <= free_b)
        return LRUN_OK;
    char a[32], b[32], c[32], d[32], g[32], f[32], cap[32];
    return lrun_fail_oom(need, free_b, "out of memory on %s: the engine needs %s (weights %s, KV cache %s, "
                         "scratch %s, streaming slots %s), %s free of %s capacity; lower n_ctx, n_seq or n_batch, "
                         "raise --gpu-budget, or place some weights off the device",
                         e->device->name, lrun_format_bytes(need, a, sizeof a), lrun_format_bytes(weights, b, sizeof b),
                         lrun_format_bytes(kv_bytes, c, sizeof c), lrun_format_bytes(scratch, d, sizeof d),
                         lrun_format_bytes(slot_bytes, g, sizeof g), lrun_format_bytes(free_b, f, sizeof f),
                         lrun_format_bytes(lrun_device_capacity(e->device), cap, sizeof cap));
}

static lrun_dtype kv_dtype_of(const lrun_engine_opts *opts)
{
    return opts->kv_dtype == LRUN_KV_DTYPE_F32 ? LRUN_DTYPE_F32 : LRUN_DTYPE_F16;
}

/* numerics EXACT, or LRUN_CUDA_EXACT=1 in the environment (a process-wide default, for benchmarks) */
static int want_exact_of(const lrun_engine_opts *opts)
{
    const char *env = getenv("LRUN_CUDA_EXACT");
    return opts->numerics == LRUN_NUMERICS_EXACT || (env && strcmp(env, "1") == 0);
}

int64_t lrun_cuda_fattn_min_tokens(void)
{
    /* LRUN_CUDA_FATTN=0/1 forces it off/on for comparisons */
    const char *fa = getenv("LRUN_CUDA_FATTN"), *fa_min = getenv("LRUN_CUDA_FATTN_MIN");
    if (fa && strcmp(fa, "0") == 0) return 0;
    if (fa && strcmp(fa, "1") == 0) return 1;
    const long long n = fa_min ? atoll(fa_min) : 0;
    return n > 0 ? (int64_t)n : LRUN_CUDA_FATTN_MIN_TOKENS;
}

/* The sizes init and lrun_cuda_engine_estimate derive from the model and options. */
static void set_dims(lrun_cuda_engine *e, lrun_model *model, const lrun_engine_opts *opts)
{
    const lrun_model_info *in = &model->info;
    lrun_device *dev = model->device;
    e->model = model;
    e->device = dev;
    e->want_exact = want_exact_of(opts);
    /* the decode GEMV kernel per dtype (gemv_choice.h: dp4a by default for the types where it
     * measured faster; LRUN_CUDA_GEMV_DP4A and LRUN_CUDA_GEMV_STAGE for measurements) */
    lrun_cuda_gemv_choice_from_env(e->want_exact, &e->gemv);
    e->packed_embed_gather = lrun_cuda_packed_embed_gather_on(); /* read with the scratch's size */
    e->stream = lrun_cuda_compute_stream(dev);
    e->cublas = lrun_cuda_cublas(dev);
    e->n_seq_max = opts->n_seq_max ? opts->n_seq_max : 1;
    e->n_ctx_max = opts->n_ctx_max ? opts->n_ctx_max : in->n_ctx_train;
    e->n_batch_max = opts->n_batch_max ? opts->n_batch_max : DEFAULT_BATCH;
    e->n_layer = in->n_layer;
    e->layer_first = opts->layer_first; /* layer_count 0: every block (only the split sets them) */
    e->layer_end = opts->layer_first + (opts->layer_count ? opts->layer_count : in->n_layer);
    e->n_embd = in->n_embd;
    e->q_dim = in->n_head * in->head_dim;
    e->kv_dim = in->n_head_kv * in->head_dim;
    e->n_ff = in->n_ff;
    e->n_vocab = in->n_vocab;
    e->eps = (float)in->rms_eps;
    e->attn_scale = (float)lrun_model_attn_scale(model); /* 1/sqrt(head_dim) but for gemma's exceptions */
    if (model->rope_attn_factor != 1.0) /* LongRoPE's scale of cos and sin, on q and k: q·k times its square */
        e->attn_scale *= (float)(model->rope_attn_factor * model->rope_attn_factor);
    if (model->rope_yarn) { /* gpt-oss: the CPU engine's YaRN parameters (lrun_rope_yarn_init_ex), for the RoPE kernel */
        lrun_rope r = {in->n_rot, in->rope_style, in->rope_freq_base, model->rope_freq_scale, NULL, 0, {0, 0}, 0};
        lrun_rope_yarn_init_ex(&r, model->n_ctx_orig, model->rope_yarn_beta_fast, model->rope_yarn_beta_slow,
                               model->rope_yarn_truncate); /* an HF directory's betas and truncate, as engine_cpu.c */
        const float mscale = r.yarn_attn_factor * fmaf(0.1f, logf(1.0f / (float)r.freq_scale), 1.0f);
        e->yarn = (lrun_k_yarn){r.yarn_corr[0], r.yarn_corr[1], mscale};
    }
    e->cache_kind = opts->cache_kind;
    e->kv_dtype = kv_dtype_of(opts);
    e->kv_esize = e->kv_dtype == LRUN_DTYPE_F32 ? 4 : 2;
    const char *g = getenv("LRUN_CUDA_GRAPHS");
    e->graphs_enabled = e->cache_kind == LRUN_CACHE_KIND_STATIC && !(g && strcmp(g, "0") == 0);
    /* programmatic dependent launch: Hopper and later; LRUN_CUDA_PDL=0 for comparisons */
    const char *pdl = getenv("LRUN_CUDA_PDL");
    e->pdl_enabled = lrun_k_pdl_supported(dev->cuda_ordinal) && !(pdl && strcmp(pdl, "0") == 0);
    e->fattn_min = lrun_cuda_fattn_min_tokens(); /* tensor-core prefill attention; 0: off */
    e->table_bytes = (size_t)e->n_batch_max * LRUN_CUDA_TABLE_TOKEN_BYTES;
    e->expert_cache_slots = opts->expert_cache_slots;
    e->expert_cache_lru = opts->expert_cache_policy == LRUN_EXPERT_CACHE_REPLACE_LRU;
    e->expert_cache_hybrid = opts->expert_cache_mode == LRUN_EXPERT_CACHE_MODE_HYBRID;
    e->moe_prefill_stream = opts->moe_prefill_stream;
    e->moe_prefill_stream_tokens = opts->moe_prefill_stream_tokens;
    e->moe_prefill_stream_block_tokens = opts->moe_prefill_stream_block_tokens;
    e->host_stream_rows = opts->host_stream_rows;
}

lrun_status lrun_cuda_engine_estimate(lrun_engine_needs *out, lrun_model *model, const lrun_engine_opts *opts)
{
    lrun_cuda_engine e;
    memset(&e, 0, sizeof e);
    set_dims(&e, model, opts);
    TRY(lrun_cuda_kv_setup(&e, opts));
    e.packed_scratch_bytes = lrun_cuda_packed_scratch_bytes(&e, NULL, 1);
    const size_t per = lrun_cuda_kv_bytes_per_position(&e), fixed = lrun_cuda_kv_fixed_bytes(&e);
    if (!layout_scratch(&e, NULL, &out->scratch_bytes) || per == SIZE_MAX || fixed == SIZE_MAX)
        return lrun_fail_oom(SIZE_MAX, 0, "engine estimate: scratch or KV cache size overflows size_t");
    /* the exact path's own block counts as scratch: estimate and stats agree; so
     * does the quantized cache's ring, a fixed size whatever the length */
    out->scratch_bytes +=
        lrun_cuda_exact_scratch_bytes(&e) + lrun_cuda_moe_scratch_bytes(&e) + lrun_cuda_q8x_scratch_bytes(&e) + fixed;
    out->kv_bytes_per_position = per;
    return LRUN_OK;
}

/* The pool's fragmentation bound (docs/residency.md "Fragmentation"):
 * blocks of at least own_arena bytes have arenas of their own size to
 * themselves (core/pool.h), so a released one leaves an idle arena the pool
 * gives back, never a hole; smaller ones share arenas of arena bytes, and
 * what can be stranded is the free room of those: the open one (at most an
 * arena) and less than own_arena per other one. Besides, every block is
 * rounded up to the pool's granule. When the capacity is at most one arena,
 * that arena is all of it and holds every block: what can be stranded there
 * is the rounding and the holes blocks released after load leave among the
 * others (a KV layer's, on growth): two KV layers' worth bounds those in
 * practice (docs/residency.md "Fragmentation" says where it fell short). */
static size_t pool_slack(const lrun_cuda_engine *e, const struct lrun_placement *p, const lrun_placement_size *s)
{
    const lrun_model *model = e->model;
    const size_t arena = lrun_cuda_pool_arena_bytes(), own = lrun_cuda_pool_own_arena_bytes();
    const int one_arena = lrun_device_capacity(model->device) <= arena;
    size_t small = 0, n_blocks = 0;
    for (int64_t i = 0; i < model->n_tensors; i++) {
        const struct lrun_tensor *t = &model->tensors[i];
        const size_t b = lrun_placement_stored_bytes(p, t);
        if (lrun_placement_tier(p, t) != LRUN_TIER_DEVICE) continue;
        /* a layer split's part counts its blocks' tensors; the first part those outside blocks */
        if (t->layer >= 0 ? t->layer < e->layer_first || t->layer >= e->layer_end : lrun_cuda_takes_rows(e)) continue;
        n_blocks++;
        if (b < own) small += b;
    }
    /* the engine's own blocks: scratch, slots with rows, the KV cache (a block per layer), a few more */
    const size_t layers = (size_t)(lrun_cuda_blocks(e) > 0 ? lrun_cuda_blocks(e) : 1);
    const size_t blocks[] = {s->scratch_bytes, s->slot_bytes + s->embd_rows_bytes};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
        if (blocks[i] < own) small += blocks[i];
    if (s->kv_max_bytes / layers < own) small += s->kv_max_bytes;
    n_blocks += 2 * layers + 16;
    const size_t rounding = n_blocks * (lrun_cuda_pool_align() - 1);
    if (one_arena) return rounding + 2 * (s->kv_max_bytes / layers);
    return arena + (small + arena - 1) / arena * own + rounding;
}

/* The table's size_placement: init's own scratch layout, KV sizing and slot
 * plan for the proposed tiers, plus the pool's slack. */
lrun_status lrun_cuda_engine_size_placement(lrun_placement_size *out, lrun_model *model, const lrun_engine_opts *opts,
                                            const struct lrun_placement *p)
{
    lrun_cuda_engine e;
    memset(&e, 0, sizeof e);
    set_dims(&e, model, opts);
    TRY(lrun_cuda_kv_setup(&e, opts));
    e.packed_scratch_bytes = lrun_cuda_packed_scratch_bytes(&e, p, 0);
    if (!layout_scratch(&e, NULL, &out->scratch_bytes) ||
        !lrun_cuda_kv_size(&e, &out->kv_init_bytes, &out->kv_max_bytes))
        return lrun_fail_oom(SIZE_MAX, 0, "engine size: scratch or KV cache size overflows size_t");
    /* the MoE routing state's block is scratch too (engine_cuda_moe.c), from init's own arithmetic */
    out->scratch_bytes += lrun_cuda_exact_scratch_bytes(&e) + lrun_cuda_moe_scratch_bytes(&e) +
                          lrun_cuda_q8x_scratch_bytes(&e) + lrun_cuda_host_stream_bytes(&e, p);
    size_t block = 0;
    lrun_status st = lrun_cuda_offload_plan(&e, p, opts->prefetch_layers, &block);
    if (st == LRUN_OK) {
        out->slot_bytes = lrun_cuda_offload_slot_bytes(&e);
        out->embd_rows_bytes = block - out->slot_bytes;
        out->pool_slack_bytes = pool_slack(&e, p, out);
    }
    lrun_cuda_offload_free(&e);
    return st;
}

/* What the CUDA ops cannot compute is refused here, by name, rather than
 * computed wrong or failing at the first launch that meets it: YaRN RoPE
 * (gpt-oss) lives in the fused RoPE-and-store kernel, which takes even
 * head dims only; attention sinks have no soft-capped variant. */
static lrun_status check_supported(const lrun_model *model)
{
    if (model->rope_yarn && model->info.head_dim % 2 != 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "engine on cuda: %s: YaRN RoPE with an odd head_dim (%lld) has no CUDA "
                         "kernel; run it with device = \"cpu\"", model->arch->name, (long long)model->info.head_dim);
    if (lrun_arch_tensor_find(model->arch, LRUN_ARCH_TENSOR_ATTN_SINKS) && model->attn_softcap > 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "engine on cuda: %s: attention sinks with a soft-cap have no CUDA kernel",
                         model->arch->name);
    return LRUN_OK;
}

lrun_status lrun_cuda_engine_init(void **out, lrun_model *model, const lrun_engine_opts *opts)
{
    const int as_placed = opts->weight_mode == LRUN_WEIGHT_MODE_AS_PLACED;
    const lrun_model_info *in = &model->info;
    lrun_device *dev = model->device;
    lrun_status st = check_supported(model);
    if (st != LRUN_OK) return st;
    st = cuda_check(cudaSetDevice(dev->cuda_ordinal), "cudaSetDevice", dev);
    if (st != LRUN_OK) return st;

    lrun_cuda_engine *e = calloc(1, sizeof *e);
    if (!e) return lrun_fail_oom(sizeof *e, 0, "engine: record");
    set_dims(e, model, opts);
    st = lrun_cuda_packed_codec_check(e); /* a codec with no kernel: refused here, not in one */
    if (st == LRUN_OK) st = lrun_cuda_kv_setup(e, opts);

    const size_t B = (size_t)e->n_batch_max;
    e->layers = calloc((size_t)in->n_layer, sizeof *e->layers);
    e->seq_len = calloc((size_t)e->n_seq_max, sizeof *e->seq_len);
    e->seq_done = calloc((size_t)e->n_seq_max, sizeof *e->seq_done);
    e->out_rows = malloc(B * sizeof *e->out_rows);
    e->host_layer_bytes = calloc((size_t)in->n_layer, sizeof *e->host_layer_bytes);
    if (st == LRUN_OK && (!e->layers || !e->seq_len || !e->seq_done || !e->out_rows || !e->host_layer_bytes))
        st = lrun_fail_oom(0, 0, "engine: bookkeeping for %zu tokens", B);

    size_t kv_bytes = 0;
    e->packed_scratch_bytes = lrun_cuda_packed_scratch_bytes(e, NULL, !as_placed);
    if (st == LRUN_OK && !layout_scratch(e, NULL, &e->scratch_bytes))
        st = lrun_fail_oom(SIZE_MAX, 0, "engine: scratch for %zu tokens overflows size_t", B);
    if (st == LRUN_OK && !lrun_cuda_kv_init_bytes(e, &kv_bytes))
        st = lrun_fail_oom(SIZE_MAX, 0, "engine: a KV cache of %lld positions overflows size_t",
                           (long long)e->n_ctx_max);
    size_t slot_bytes = 0;
    if (st == LRUN_OK && as_placed) st = lrun_cuda_offload_plan(e, NULL, opts->prefetch_layers, &slot_bytes);
    if (st == LRUN_OK) st = check_fits(e, kv_bytes, slot_bytes, as_placed);
    if (st == LRUN_OK && !as_placed) st = move_weights(e);
    if (st == LRUN_OK && e->offload) {
        st = lrun_cuda_offload_init(e);
        e->graphs_enabled = 0; /* staged copies and host matmuls are host work: steps run eagerly */
    }
    if (st == LRUN_OK) st = lrun_cuda_kv_init(e);
    if (st == LRUN_OK)
        st = lrun_oom_phase(lrun_device_alloc(dev, e->scratch_bytes, "engine scratch", &e->scratch), "scratch");
    if (st == LRUN_OK) {
        layout_scratch(e, e->scratch, &e->scratch_bytes);
        table_at(&e->d_table, e->d_table_base, e->n_batch_max);
        st = load_vectors(e);
    }
    if (st == LRUN_OK) st = lrun_cuda_exact_init(e);
    if (st == LRUN_OK) st = lrun_cuda_moe_init(e); /* a mixture of experts' routing state; none when dense */
    if (st == LRUN_OK) st = lrun_cuda_host_stream_init(e, &e->host_stream); /* prompts over host-computed matrices */
    if (st == LRUN_OK) st = lrun_cuda_split_init(e); /* LRUN_CUDA_GEMV_SPLIT=1: after moe_init (dense only) */
    if (st == LRUN_OK) st = lrun_cuda_op_profile_make(e->stream, dev->name, &e->prof);
    if (e->prof) e->graphs_enabled = 0;        /* an event recorded inside a capture would be a node of the graph */
    e->moe_prefill_stream_block_tokens = NULL; /* the caller's array: read by moe_init only */
    const char *moe_why = st == LRUN_OK && e->want_exact && !e->exact ? lrun_cuda_moe_exact_refusal(e) : NULL;
    if (moe_why) st = lrun_fail(LRUN_E_UNSUPPORTED, "engine on cuda: %s", moe_why);
    if (st == LRUN_OK && e->want_exact && !e->exact)
        st = lrun_fail(LRUN_E_UNSUPPORTED, "engine on cuda: exact numerics need Q4_0/Q4_1/Q8_0 matrices and head, "
                       "a feed-forward width that is a multiple of 8, a width of at most 12288 and attention scores "
                       "of n_ctx_max %lld in shared memory; this model or context does not qualify",
                       (long long)e->n_ctx_max);
    if (st == LRUN_OK) {
        size_t hb = lrun_cuda_engine_staging_bytes(e->n_batch_max, e->n_vocab); /* table_bytes first, then logits */
        st = lrun_oom_phase(lrun_device_host_alloc(dev, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, hb, "engine staging",
                                                   &e->h_table_base),
                            "scratch");
        if (st == LRUN_OK) {
            table_at(&e->h_table, e->h_table_base, e->n_batch_max);
            e->h_logits = (float *)((char *)e->h_table_base + e->table_bytes);
        }
    }
    if (st != LRUN_OK) {
        lrun_cuda_engine_free(e);
        return st;
    }
    for (int64_t i = 0; i < model->n_tensors; i++)
        if (model->tensors[i].tier == LRUN_TIER_DEVICE)
            e->stats.weight_device_bytes += lrun_tensor_stored_bytes(&model->tensors[i]);
    *out = e;
    return LRUN_OK;
}

void lrun_cuda_engine_free(void *ctx)
{
    lrun_cuda_engine *e = ctx;
    if (!e) return;
    if (cudaSetDevice(e->device->cuda_ordinal) == cudaSuccess && e->stream)
        (void)cudaStreamSynchronize((cudaStream_t)e->stream);
    for (int n = 0; n <= LRUN_CUDA_GRAPH_MAX_TOKENS; n++)
        if (e->graph_exec[n]) cudaGraphExecDestroy(e->graph_exec[n]);
    (void)cudaGetLastError();
    lrun_cuda_split_free(e);            /* the model gets GGUF's bytes back */
    lrun_cuda_op_profile_free(e->prof); /* prints the table */
    lrun_cuda_host_stream_free(e, e->host_stream);
    lrun_cuda_offload_free(e);
    lrun_cuda_exact_free(e);
    lrun_cuda_moe_free(e);
    lrun_cuda_kv_free(e);
    if (e->scratch) lrun_device_release(e->device, e->scratch, e->scratch_bytes);
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, e->h_table_base,
                             lrun_cuda_engine_staging_bytes(e->n_batch_max, e->n_vocab));
    free(e->layers);
    free(e->seq_len);
    free(e->seq_done);
    free(e->out_rows);
    free(e->host_layer_bytes);
    free(e);
}

// ---------------------------------------------------------------- sequences

int64_t lrun_cuda_engine_n_seq_max(const void *ctx) { return ((const lrun_cuda_engine *)ctx)->n_seq_max; }
int64_t lrun_cuda_engine_n_ctx_max(const void *ctx) { return ((const lrun_cuda_engine *)ctx)->n_ctx_max; }
int64_t lrun_cuda_engine_n_vocab(const void *ctx) { return ((const lrun_cuda_engine *)ctx)->n_vocab; }

int64_t lrun_cuda_engine_seq_len(const void *ctx, int64_t seq)
{
    const lrun_cuda_engine *e = ctx;
    return seq >= 0 && seq < e->n_seq_max ? e->seq_len[seq] : -1;
}

lrun_status lrun_cuda_engine_seq_truncate(void *ctx, int64_t seq, int64_t len)
{
    lrun_cuda_engine *e = ctx;
    if (seq < 0 || seq >= e->n_seq_max)
        return lrun_fail(LRUN_E_ARG, "KV cache: sequence %lld out of range [0, %lld)", (long long)seq,
                         (long long)e->n_seq_max);
    if (len < 0 || len > e->seq_len[seq])
        return lrun_fail(LRUN_E_ARG, "KV cache: cannot truncate sequence %lld of %lld positions to %lld",
                         (long long)seq, (long long)e->seq_len[seq], (long long)len);
    TRY(lrun_cuda_engine_current(e));
    e->seq_len[seq] = len;
    return lrun_cuda_kv_truncate(e, seq, len);
}

lrun_status lrun_cuda_engine_seq_copy(void *ctx, int64_t dst, int64_t src)
{
    lrun_cuda_engine *e = ctx;
    if (src < 0 || src >= e->n_seq_max || dst < 0 || dst >= e->n_seq_max)
        return lrun_fail(LRUN_E_ARG, "KV cache: copy %lld -> %lld: sequences are [0, %lld)", (long long)src,
                         (long long)dst, (long long)e->n_seq_max);
    if (src == dst) return LRUN_OK;
    TRY(lrun_cuda_engine_current(e));
    TRY(lrun_cuda_kv_copy(e, dst, src));
    e->seq_len[dst] = e->seq_len[src];
    return LRUN_OK;
}

lrun_status lrun_cuda_engine_seq_reorder(void *ctx, const int64_t *src_of_dst, int64_t n)
{
    lrun_cuda_engine *e = ctx;
    TRY(lrun_reorder_check(src_of_dst, n, e->n_seq_max));
    TRY(lrun_cuda_engine_current(e));
    int64_t *len = malloc(((size_t)n + 1) * sizeof *len);
    if (!len) return lrun_fail_oom(((size_t)n + 1) * sizeof *len, 0, "KV cache reorder: lengths");
    const lrun_status st = lrun_cuda_kv_reorder(e, src_of_dst, n, len);
    if (st == LRUN_OK) memcpy(e->seq_len, len, (size_t)n * sizeof *len);
    free(len);
    return st;
}

// ---------------------------------------------------------------- the table

const lrun_backend_iface lrun_cuda_backend = {
    .name = "cuda",
    .estimate = lrun_cuda_engine_estimate,
    .size_placement = lrun_cuda_engine_size_placement,
    .init = lrun_cuda_engine_init,
    .free = lrun_cuda_engine_free,
    .n_seq_max = lrun_cuda_engine_n_seq_max,
    .n_ctx_max = lrun_cuda_engine_n_ctx_max,
    .n_vocab = lrun_cuda_engine_n_vocab,
    .seq_len = lrun_cuda_engine_seq_len,
    .seq_truncate = lrun_cuda_engine_seq_truncate,
    .seq_copy = lrun_cuda_engine_seq_copy,
    .seq_reorder = lrun_cuda_engine_seq_reorder,
    .seq_fill_random = lrun_cuda_engine_seq_fill_random,
    .step = lrun_cuda_engine_step,
    .get_stats = lrun_cuda_engine_get_stats,
    .reset_stats = lrun_cuda_engine_reset_stats,
    .moe_counts = lrun_cuda_engine_moe_counts,
    .expert_cache = lrun_cuda_engine_expert_cache,
    .host_layer_bytes = lrun_cuda_engine_host_layer_bytes,
    .runs_parts = 1, /* a block range (layer_first/layer_count) with the rows in and out */
};
