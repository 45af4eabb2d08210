/* engine_cuda_step.c — one lrun_engine_step on the CUDA engine (the facade
 * has checked the tokens): grow the cache, fill the pinned token table per
 * chunk, send it in one copy, run the chunk (replaying a CUDA graph for
 * static decode shapes) and bring back the wanted logits. */
#include <string.h>

#include "core/device.h"
#include "cuda/engine_cuda_host_stream.h"
#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"

static int graph_capture(lrun_cuda_engine *e, int64_t n)
{
    cudaStream_t s = (cudaStream_t)e->stream;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    int ok = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
    if (ok) {
        const lrun_status st = lrun_cuda_enqueue_chunk(e, n, n, 1, e->kv.cap);
        /* Always ended, even after a failed launch, so the stream is usable again. */
        ok = cudaStreamEndCapture(s, &graph) == cudaSuccess && st == LRUN_OK && graph;
    }
    ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    if (graph) cudaGraphDestroy(graph);
    if (!ok) {
        (void)cudaGetLastError();
        e->graphs_enabled = 0;
        return 0;
    }
    e->graph_exec[n] = exec;
    e->stats.graph_captures++;
    return 1;
}

/* Runs one chunk whose table is filled on the host: sends the table, runs
 * the layers (from a graph when the shape allows) and copies the n_want
 * wanted rows of logits to logits (n_want, n_vocab). A layer split's part
 * (engine_split.c) takes the residual stream entering its first block from
 * hidden_in (n, n_embd, host) instead of embedding, and when it ends before
 * the last block gives the stream leaving it to hidden_out (n, n_embd, host)
 * instead of logits (n_want 0); the rows cross through the host, outside any
 * graph, so a captured decode step is the same kernels either way. */
static lrun_status run_chunk(lrun_cuda_engine *e, int64_t n, int64_t n_want, int identity, int64_t max_kv,
                             float *logits, const float *hidden_in, float *hidden_out)
{
    cudaStream_t s = (cudaStream_t)e->stream;
    const size_t rows_bytes = (size_t)n * (size_t)e->n_embd * sizeof(float);
    TRY(cuda_check(cudaMemcpyAsync(e->d_table_base, e->h_table_base, e->table_bytes, cudaMemcpyHostToDevice, s),
                   "sending the token table", e->device));
    if (lrun_cuda_takes_rows(e))
        TRY(cuda_check(cudaMemcpyAsync(e->x, hidden_in, rows_bytes, cudaMemcpyHostToDevice, s),
                       "copying the layer split's rows in", e->device));
    TRY(lrun_cuda_kv_chunk_begin(e, 1, n)); /* a staged cache starts loading layers 0 and 1 */
    /* a graph holds the head of all n rows, or (a part before the last) no head */
    const int graph_shape = e->graphs_enabled && n <= LRUN_CUDA_GRAPH_MAX_TOKENS &&
                            (lrun_cuda_gives_rows(e) || (n_want == n && identity));
    if (graph_shape && !e->graph_exec[n] && e->graph_seen[n] > 0) (void)graph_capture(e, n);
    if (graph_shape && e->graph_exec[n]) {
        TRY(cuda_check(cudaGraphLaunch(e->graph_exec[n], s), "cudaGraphLaunch", e->device));
        e->stats.graph_launches++;
    } else {
        /* The first run of a shape is eager: kernels are loaded and checked
         * before a capture depends on them. */
        if (graph_shape) e->graph_seen[n]++;
        TRY(lrun_cuda_enqueue_chunk(e, n, n_want, identity, max_kv));
    }
    e->stats.steps++;
    for (int64_t r0 = 0; r0 < n_want; r0 += LOGIT_ROWS) {
        const int64_t rows = min64(n_want - r0, LOGIT_ROWS);
        const size_t bytes = (size_t)rows * (size_t)e->n_vocab * sizeof(float);
        if (r0 > 0) TRY(lrun_cuda_lm_head(e, r0, rows));
        TRY(cuda_check(cudaMemcpyAsync(e->h_logits, e->logits, bytes, cudaMemcpyDeviceToHost, s), "copying logits",
                       e->device));
        TRY(cuda_check(cudaStreamSynchronize(s), "forward step", e->device));
        memcpy(logits + r0 * e->n_vocab, e->h_logits, bytes);
    }
    if (lrun_cuda_gives_rows(e))
        TRY(cuda_check(cudaMemcpyAsync(hidden_out, e->x, rows_bytes, cudaMemcpyDeviceToHost, s),
                       "copying the layer split's rows out", e->device));
    /* Also where no logits were wanted: the host table is refilled next (and the rows are out). */
    if (!n_want) TRY(cuda_check(cudaStreamSynchronize(s), "forward step", e->device));
    if (e->offload) lrun_cuda_offload_account(e);
    return LRUN_OK;
}

lrun_status lrun_cuda_engine_step(void *ctx, const lrun_step_args *a)
{
    lrun_cuda_engine *e = ctx;
    const int64_t n_tokens = a->n_tokens, need = a->need;
    const int32_t *tokens = a->tokens, *seq = a->seq;
    const int8_t *want_logits = a->want_logits;
    float *logits = a->logits;
    const int gives_rows = lrun_cuda_gives_rows(e); /* a split's part before the last: no logits */
    if ((lrun_cuda_takes_rows(e) && !a->hidden_in) || (gives_rows && !a->hidden_out))
        return lrun_fail(LRUN_E_INTERNAL, "engine step on %s: a layer split's part (blocks %lld-%lld) needs the "
                         "split's %s rows", e->device->name, (long long)e->layer_first, (long long)(e->layer_end - 1),
                         gives_rows && !a->hidden_out ? "hidden_out" : "hidden_in");
    TRY(lrun_cuda_engine_current(e));

    // ---- grow the cache first, so a failure changes nothing
    lrun_status st = lrun_cuda_kv_reserve(e, need);
    if (st != LRUN_OK) return lrun_fail_context(st, "engine step");

    // ---- chunks of n_batch_max tokens, in token order
    memset(e->seq_done, 0, (size_t)e->n_seq_max * sizeof *e->seq_done);
    int64_t rows_out = 0;
    const struct step_table *h = &e->h_table;
    for (int64_t c0 = 0; c0 < n_tokens; c0 += e->n_batch_max) {
        const int64_t n = min64(n_tokens - c0, e->n_batch_max);
        int64_t want = 0, longest = 0;
        int identity = 1;
        e->chunk_runs = 0;
        for (int64_t i = 0; i < n; i++) e->chunk_runs += i == 0 || seq[c0 + i] != seq[c0 + i - 1];
        if (e->kv.staged) /* what the chunk's layers load from the store */
            for (int64_t s = 0; s < e->n_seq_max; s++) e->kv.stored[e->kv.phys[s]] = e->seq_len[s] + e->seq_done[s];
        for (int64_t i = 0; i < n; i++) {
            const int64_t s = seq[c0 + i], pos = e->seq_len[s] + e->seq_done[s]++;
            const int64_t base = e->kv.phys[s] * e->kv.cap * e->kv_dim;
            h->tokens[i] = tokens[c0 + i];
            h->pos[i] = (int32_t)pos;
            h->n_kv[i] = (int32_t)(pos + 1);
            h->kv_base[i] = base;
            h->row_off[i] = base + pos * e->kv_dim;
            longest = pos + 1 > longest ? pos + 1 : longest;
            const int wanted = want_logits ? want_logits[c0 + i] != 0 : e->seq_done[s] == a->seq_count[s];
            if (wanted && !gives_rows) {
                identity &= want == i;
                e->out_rows[want++] = i;
            }
        }
        if (e->kv.staged)
            for (int64_t s = 0; s < e->n_seq_max; s++) e->kv.chunk_end[e->kv.phys[s]] = e->seq_len[s] + e->seq_done[s];
        /* Every kind gives the attention n_ctx_max as the bound (a static
         * cache's capacity, what its captured graphs see): the number of
         * KV splits follows from it, so all kinds and graph replays split
         * each length the same way and agree to the bit. The exact path does
         * not split (its bits never depend on the bound), and sizes its shared
         * memory by it: it gets the chunk's longest sequence, or a static
         * cache's capacity. */
        const int64_t max_kv = !e->exact ? e->n_ctx_max
                               : e->cache_kind == LRUN_CACHE_KIND_STATIC ? e->kv.cap : longest;
        st = e->exact ? lrun_cuda_exact_table(e, seq + c0, n) : LRUN_OK; /* the exact path's RoPE table */
        if (st == LRUN_OK)
            st = run_chunk(e, n, want, identity, max_kv, want ? logits + rows_out * e->n_vocab : NULL,
                           lrun_cuda_takes_rows(e) ? a->hidden_in + c0 * e->n_embd : NULL,
                           gives_rows ? a->hidden_out + c0 * e->n_embd : NULL);
        if (st != LRUN_OK && e->offload) lrun_cuda_offload_reset(e);
        if (st != LRUN_OK) return lrun_fail_context(st, "engine step (tokens %lld..%lld)", (long long)c0,
                                                    (long long)(c0 + n - 1));
        rows_out += want;
    }
    for (int64_t s = 0; s < e->n_seq_max; s++) e->seq_len[s] += a->seq_count[s];
    lrun_cuda_kv_step_end(e);
    (void)rows_out; /* == a->n_want: the facade reports it */
    return LRUN_OK;
}

/* The table of positions [from, from + n) of seq (tokens 0): offsets only. */
static void fill_table_positions(lrun_cuda_engine *e, int64_t seq, int64_t from, int64_t n)
{
    const struct step_table *h = &e->h_table;
    const int64_t base = e->kv.phys[seq] * e->kv.cap * e->kv_dim;
    for (int64_t i = 0; i < n; i++) {
        h->tokens[i] = 0;
        h->pos[i] = (int32_t)(from + i);
        h->n_kv[i] = (int32_t)(from + i + 1);
        h->kv_base[i] = base;
        h->row_off[i] = base + (from + i) * e->kv_dim;
    }
}

lrun_status lrun_cuda_engine_seq_fill_random(void *ctx, int64_t seq, int64_t n_pos, uint64_t seed)
{
    lrun_cuda_engine *e = ctx;
    if (seq < 0 || seq >= e->n_seq_max || n_pos < 0 || e->seq_len[seq] + n_pos > e->n_ctx_max)
        return lrun_fail(LRUN_E_ARG, "engine fill: sequence %lld (of %lld) with %lld + %lld positions (n_ctx_max %lld)",
                         (long long)seq, (long long)e->n_seq_max, (long long)(seq >= 0 && seq < e->n_seq_max ?
                         e->seq_len[seq] : 0), (long long)n_pos, (long long)e->n_ctx_max);
    if (n_pos == 0) return LRUN_OK;
    TRY(lrun_cuda_engine_current(e));
    int64_t need = 0;
    for (int64_t s = 0; s < e->n_seq_max; s++) need = e->seq_len[s] > need ? e->seq_len[s] : need;
    need = e->seq_len[seq] + n_pos > need ? e->seq_len[seq] + n_pos : need;
    lrun_status st = lrun_cuda_kv_reserve(e, need);
    if (st != LRUN_OK) return lrun_fail_context(st, "engine fill");
    cudaStream_t s = (cudaStream_t)e->stream;
    lrun_k_set_pdl(0);
    const int64_t len = e->seq_len[seq];
    for (int64_t c0 = 0; c0 < n_pos && st == LRUN_OK; c0 += e->n_batch_max) {
        const int64_t n = min64(n_pos - c0, e->n_batch_max);
        fill_table_positions(e, seq, len + c0, n);
        if (e->kv.staged)
            for (int64_t s = 0; s < e->n_seq_max; s++)
                e->kv.chunk_end[e->kv.phys[s]] = s == seq ? len + c0 + n : e->seq_len[s];
        st = cuda_check(cudaMemcpyAsync(e->d_table_base, e->h_table_base, e->table_bytes, cudaMemcpyHostToDevice, s),
                        "sending the fill table", e->device);
        if (st == LRUN_OK) st = lrun_cuda_kv_chunk_begin(e, 0, n); /* nothing stored is read */
        for (int64_t l = e->layer_first; l < e->layer_end && st == LRUN_OK; l++) {
            const uint64_t at = seed + 0x9e3779b97f4a7c15ull * (uint64_t)((len + c0) * e->n_layer + l + 1);
            char *kc, *vc;
            st = lrun_k_fill_uniform(e->k, n * e->kv_dim, at, s);
            if (st == LRUN_OK) st = lrun_k_fill_uniform(e->v, n * e->kv_dim, ~at, s);
            if (st == LRUN_OK) st = lrun_cuda_kv_layer(e, l, &kc, &vc);
            if (st == LRUN_OK) st = lrun_k_kv_store(e->kv_dtype, kc, vc, e->d_table.row_off, e->k, e->v, n, e->kv_dim, s);
            if (st == LRUN_OK) st = lrun_cuda_kv_layer_end(e, l, n);
        }
        /* the host table is refilled next */
        if (st == LRUN_OK) st = cuda_check(cudaStreamSynchronize(s), "engine fill", e->device);
    }
    if (st != LRUN_OK) {
        (void)cudaStreamSynchronize(s);
        return lrun_fail_context(st, "engine fill of sequence %lld", (long long)seq);
    }
    e->seq_len[seq] += n_pos;
    lrun_cuda_kv_step_end(e);
    return LRUN_OK;
}

void lrun_cuda_engine_get_stats(const void *ctx, lrun_engine_stats *out)
{
    const lrun_cuda_engine *e = ctx;
    *out = e->stats;
    out->graphs_enabled = e->graphs_enabled;
    out->pdl_enabled = e->pdl_enabled;
    out->kv_dtype = e->kv_dtype == LRUN_DTYPE_F32 ? LRUN_KV_DTYPE_F32 : LRUN_KV_DTYPE_F16;
    out->kv_bytes = lrun_cuda_kv_device_bytes(e);
    out->kv_bytes_moved = e->kv.bytes_moved - e->kv_moved_base;
    out->kv_bytes_copied = e->kv.bytes_copied - e->kv_copied_base;
    out->exact = e->exact != NULL;
    out->scratch_bytes = e->scratch_bytes + lrun_cuda_exact_scratch_bytes(e) +
                         (e->moe ? lrun_cuda_moe_scratch_bytes(e) : 0) + e->q8x.bytes +
                         lrun_cuda_host_stream_device_bytes(e->host_stream);
}

/* Reads the device-routed counters on the engine's device (where that fails, the host-routed ones alone). */
const struct lrun_moe_counts *lrun_cuda_engine_moe_counts(const void *ctx)
{
    (void)lrun_cuda_engine_current(ctx);
    return lrun_cuda_moe_counts(ctx);
}
const struct lrun_expert_cache *lrun_cuda_engine_expert_cache(const void *ctx) { return lrun_cuda_moe_cache_counts(ctx); }

void lrun_cuda_engine_host_layer_bytes(const void *ctx, uint64_t *out)
{
    const lrun_cuda_engine *e = ctx;
    for (int64_t l = 0; l < e->model->info.n_layer; l++) out[l] += e->host_layer_bytes[l];
}

void lrun_cuda_engine_reset_stats(void *ctx)
{
    lrun_cuda_engine *e = ctx;
    (void)lrun_cuda_engine_current(e); /* the MoE counters are cleared on the device; a failure shows at the next step */
    e->stats.steps = e->stats.graph_captures = e->stats.graph_launches = 0;
    e->stats.bytes_streamed = e->stats.host_compute_bytes = 0;
    memset(e->host_layer_bytes, 0, (size_t)e->model->info.n_layer * sizeof *e->host_layer_bytes);
    e->stats.copy_seconds = e->stats.stall_seconds = 0;
    e->stats.host_compute_seconds = e->stats.host_wait_seconds = 0;
    e->stats.prefetch_hits = e->stats.prefetch_misses = 0;
    e->stats.disk_bytes_read = 0;
    e->stats.disk_read_seconds = 0;
    e->stats.disk_stalls = 0;
    e->stats.prefill_stream_bytes = 0;
    e->stats.prefill_stream_experts = 0;
    e->stats.prefill_slot_bytes = 0;
    e->stats.prefill_slot_experts = 0;
    e->stats.host_stream_bytes = 0;
    e->stats.host_stream_products = 0;
    e->kv_moved_base = e->kv.bytes_moved;
    e->kv_copied_base = e->kv.bytes_copied;
    lrun_cuda_moe_reset_counts(e);
}
