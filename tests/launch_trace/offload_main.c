/* launch_trace/offload_main.c — the CUDA staging's runtime calls, logged
 * without a GPU (offload.sh): weights (engine_cuda_offload.c) and the KV
 * cache's slots (engine_cuda_kv.c). Every CUDA runtime call and kernel they
 * make is a stub that prints the call with its stream, event and pointer
 * arguments as small ids. One driver runs the engine's order of layer/head
 * begin and end, stats accounting and a reset over weight placements with
 * pinned, host and mmap weights, host compute, a host embedding table and
 * k = 1, 2, 3, 8; another runs chunks (prefill, decode, no-read, a failed
 * chunk, dense copies) through the offloaded, offloaded_static and
 * quantized caches (fused and slot decode) with 1, 2 and 5 layers.
 * Compiled once against the tree and once against a base commit; the logs
 * must be identical. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"
#include "cpu/cpu_matmul.h"
#include "model/model.h"
/* model.h without the named block fields (e02a51d on): the names as ids */
#ifdef LRUN_TRACE_IDS
#define wq t[LRUN_ARCH_TENSOR_Q]
#define wk t[LRUN_ARCH_TENSOR_K]
#define wv t[LRUN_ARCH_TENSOR_V]
#define wo t[LRUN_ARCH_TENSOR_O]
#define w_gate t[LRUN_ARCH_TENSOR_GATE]
#define w_up t[LRUN_ARCH_TENSOR_UP]
#define w_down t[LRUN_ARCH_TENSOR_DOWN]
#endif

#define L printf

static char arena[1 << 27];   /* device and pinned memory handed out (staging: 64 MiB) */
static size_t arena_used;
static char host_bytes[1 << 22]; /* the weights' own bytes */

static long P(const void *p)
{
    const char *c = p;
    if (!p) return -1;
    if (c >= arena && c < arena + sizeof arena) return (long)(c - arena);
    if (c >= host_bytes && c < host_bytes + sizeof host_bytes) return 100000000L + (long)(c - host_bytes);
    return -2;
}

/* ---------------------------------------------------------------- handles: small ids */
static long H(const void *h) { return (long)(intptr_t)h; }
static intptr_t next_handle = 1;

/* ---------------------------------------------------------------- CUDA runtime stubs */
static int elapsed_calls;

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned f)
{
    *s = (cudaStream_t)next_handle++;
    L("cudaStreamCreateWithFlags -> s%ld %u\n", H(*s), f);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) { L("cudaStreamDestroy s%ld\n", H(s)); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t s) { L("cudaStreamSynchronize s%ld\n", H(s)); return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned f)
{
    *e = (cudaEvent_t)next_handle++;
    L("cudaEventCreateWithFlags -> e%ld %u\n", H(*e), f);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) { L("cudaEventDestroy e%ld\n", H(e)); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) { L("cudaEventRecord e%ld s%ld\n", H(e), H(s)); return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned f)
{
    L("cudaStreamWaitEvent s%ld e%ld %u\n", H(s), H(e), f);
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) { L("cudaEventSynchronize e%ld\n", H(e)); return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t e) { L("cudaEventQuery e%ld\n", H(e)); return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    /* alternating early and late copies: hits and misses both counted */
    *ms = (elapsed_calls++ % 3 == 0) ? 0.5f : -0.25f;
    L("cudaEventElapsedTime e%ld e%ld -> %g\n", H(a), H(b), *ms);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k, cudaStream_t st)
{
    L("cudaMemcpyAsync %ld %ld %zu %d s%ld\n", P(d), P(s), n, (int)k, H(st));
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind k)
{
    L("cudaMemcpy %ld %zu %d\n", P(d), n, (int)k);
    (void)s;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { L("cudaGetLastError\n"); return cudaSuccess; }
const char *cudaGetErrorName(cudaError_t e) { (void)e; return "stub"; }
const char *cudaGetErrorString(cudaError_t e) { (void)e; return "stub"; }

/* ---------------------------------------------------------------- lrun stubs */
static char last_error[256];
lrun_status lrun_fail(lrun_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    L("FAIL %d\n", st);
    return st;
}
lrun_status lrun_fail_oom(size_t r, size_t f, const char *fmt, ...) { (void)r, (void)f, (void)fmt; return LRUN_E_OOM; }
lrun_status lrun_oom_phase(lrun_status st, const char *phase) { (void)phase; return st; }
const char *lrun_last_error(void) { return last_error; }
static void *take(size_t bytes)
{
    void *p = arena + arena_used;
    arena_used += (bytes + 255) & ~(size_t)255;
    return p;
}
lrun_status lrun_device_alloc(lrun_device *d, size_t bytes, const char *what, void **out)
{
    (void)d;
    *out = take(bytes);
    L("device_alloc %zu '%s' -> %ld\n", bytes, what, P(*out));
    return LRUN_OK;
}
void lrun_device_release(lrun_device *d, void *p, size_t bytes) { (void)d; L("device_release %ld %zu\n", P(p), bytes); }
lrun_status lrun_host_alloc(lrun_tier tier, size_t bytes, const char *what, void **out)
{
    *out = take(bytes);
    L("host_alloc %d %zu '%s' -> %ld\n", (int)tier, bytes, what, P(*out));
    return LRUN_OK;
}
void lrun_host_release(lrun_tier tier, void *p) { L("host_release %d %ld\n", (int)tier, P(p)); }
#ifdef LRUN_TRACE_NEW
/* the device's host allocations (host account, after 80be426): logged as lrun_host_alloc's were, so a
 * placement's staging reads the same in both logs */
lrun_status lrun_device_host_alloc(lrun_device *d, lrun_host_category c, lrun_tier tier, size_t bytes,
                                   const char *what, void **out)
{
    (void)d, (void)c;
    return lrun_host_alloc(tier, bytes, what, out);
}
void lrun_device_host_release(lrun_device *d, lrun_host_category c, lrun_tier tier, void *p, size_t bytes)
{
    (void)d, (void)c, (void)bytes;
    lrun_host_release(tier, p);
}
/* no mapping: host products come up by copy, the path both commits have */
cudaError_t cudaHostGetDevicePointer(void **dev, void *host, unsigned flags)
{
    (void)dev, (void)flags;
    L("cudaHostGetDevicePointer %ld -> none\n", P(host));
    return cudaErrorInvalidValue;
}
void lrun_threadpool_memcpy(lrun_threadpool *pool, void *dst, const void *src, size_t bytes)
{
    (void)pool;
    L("threadpool_memcpy %ld %ld %zu\n", P(dst), P(src), bytes);
}
#endif
int lrun_engine_default_prefetch(lrun_device_kind kind) { (void)kind; return 1; }
lrun_threadpool *lrun_model_threadpool(lrun_model *m) { (void)m; return NULL; }
void lrun_threadpool_run(lrun_threadpool *pool, lrun_task_fn fn, void *ctx)
{
    (void)pool;
    fn(ctx, 0, 1);
}
size_t lrun_cpu_matmul_work_bytes(lrun_dtype d, int64_t m, int64_t k) { (void)d; return (size_t)(m * k); }
void lrun_cpu_matmul(lrun_threadpool *pool, lrun_dtype d, const void *w, size_t rb, int64_t n, int64_t k,
                     const float *x, int64_t m, float *y, void *work)
{
    (void)pool, (void)work;
    L("cpu_matmul %d %ld %zu %ld %ld %ld %ld %ld\n", (int)d, P(w), rb, (long)n, (long)k, P(x), (long)m, P(y));
}
lrun_status lrun_k_embed(lrun_dtype d, const void *t, size_t rb, int64_t ne, const int32_t *tok, int64_t n,
                         float *out, void *s)
{
    L("embed %d %ld %zu %ld %ld %ld %ld s%ld\n", (int)d, P(t), rb, (long)ne, P(tok), (long)n, P(out), H(s));
    return LRUN_OK;
}

/* ---------------------------------------------------------------- stubs engine_cuda_kv.c needs */
cudaError_t cudaSetDevice(int d) { L("cudaSetDevice %d\n", d); return cudaSuccess; }
cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h, enum cudaMemcpyKind k,
                              cudaStream_t st)
{
    L("cudaMemcpy2DAsync %ld %zu %ld %zu %zu %zu %d s%ld\n", P(d), dp, P(s), sp, w, h, (int)k, H(st));
    return cudaSuccess;
}
lrun_status lrun_fail_context(lrun_status st, const char *fmt, ...) { (void)fmt; return st; }
size_t lrun_device_free_bytes(const lrun_device *d) { (void)d; return (size_t)1 << 40; }
const char *lrun_format_bytes(size_t b, char *buf, size_t cap) { snprintf(buf, cap, "%zu", b); return buf; }
int lrun_k_attention_quant_supported(const lrun_k_kv_quant *qz, int64_t hd) { (void)qz, (void)hd; return 1; }
lrun_status lrun_k_attention_quant(const lrun_k_kv_quant *qz, const float *q, const void *ck, const void *cv,
                                   const void *rk, const void *rv, const int64_t *kb, const int32_t *nkv,
                                   const int32_t *qlo, int64_t nt, int64_t nh, int64_t nhk, int64_t hd, int64_t mk,
                                   float sc, float *o, void *w, void *s)
{
    (void)qz, (void)q, (void)kb, (void)nkv, (void)qlo, (void)nh, (void)nhk, (void)hd, (void)mk, (void)sc, (void)o, (void)w;
    L("attention_quant %ld %ld %ld %ld %ld s%ld\n", P(ck), P(cv), P(rk), P(rv), (long)nt, H(s));
    return LRUN_OK;
}
lrun_status lrun_k_kv_copy_rows(lrun_dtype d, void *dk, void *dv, const void *sk, const void *sv, const int64_t *ro,
                                int64_t n, int64_t kvd, void *s)
{
    L("kv_copy_rows %d %ld %ld %ld %ld %ld %ld %ld s%ld\n", (int)d, P(dk), P(dv), P(sk), P(sv), P(ro), (long)n,
      (long)kvd, H(s));
    return LRUN_OK;
}
lrun_status lrun_k_kv_quant_store(const lrun_k_kv_quant *qz, const void *sk, const void *sv, const int64_t *ro,
                                  const int64_t *kb, const int32_t *pos, const int32_t *ce, int64_t n, void *ck,
                                  void *cv, void *rk, void *rv, void *s)
{
    L("kv_quant_store cap=%ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld s%ld\n", (long)qz->cap, P(sk), P(sv), P(ro),
      P(kb), P(pos), P(ce), (long)n, P(ck), P(cv), P(rk), P(rv), H(s));
    return LRUN_OK;
}
lrun_status lrun_k_kv_dequant_fill(const lrun_k_kv_quant *qz, void *sk, void *sv, const void *ck, const void *cv,
                                   const void *rk, const void *rv, const int32_t *len, const int32_t *qlo, int64_t n,
                                   int64_t ml, void *s)
{
    L("kv_dequant_fill cap=%ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld s%ld\n", (long)qz->cap, P(sk), P(sv), P(ck),
      P(cv), P(rk), P(rv), P(len), P(qlo), (long)n, (long)ml, H(s));
    return LRUN_OK;
}

/* ---------------------------------------------------------------- a model */
enum { NL = 4, NMAT = 7 };
static struct lrun_tensor tensors[NL * NMAT + 2];
static struct lrun_model_layer layers[NL];
static lrun_model model;
static lrun_device device = {.name = "cuda:0"};

/* tier of layer l's matrix i (l == NL: the head, l == NL+1: the table) per scenario */
typedef lrun_tier (*tier_fn)(int l, int i, int *host_compute);

static void make_model(tier_fn tf)
{
    memset(tensors, 0, sizeof tensors);
    size_t off = 0;
    const size_t sizes[NMAT] = {4096, 1024, 1024, 4096, 11008, 11008, 11008};
    for (int t = 0; t < NL * NMAT + 2; t++) {
        struct lrun_tensor *x = &tensors[t];
        const int l = t < NL * NMAT ? t / NMAT : NL + (t - NL * NMAT), i = t < NL * NMAT ? t % NMAT : 0;
        snprintf(x->name, sizeof x->name, "t%d", t);
        x->dtype = LRUN_DTYPE_F16;
        x->nbytes = t < NL * NMAT ? sizes[i] + 64 * (size_t)l : 32000;
        x->ne[0] = 64;
        x->ne[1] = (int64_t)(x->nbytes / 128);
        x->row_bytes = 128;
        x->tier = tf(l, i, &x->host_compute);
        x->device = &device;
        x->data = x->tier == LRUN_TIER_DEVICE ? arena + (1 << 26) + (1 << 25) + off : host_bytes + off;
        off += (x->nbytes + 255) & ~(size_t)255;
    }
    for (int l = 0; l < NL; l++) {
        memset(&layers[l], 0, sizeof layers[l]);
        struct lrun_tensor *b = &tensors[l * NMAT];
        layers[l].wq = &b[0], layers[l].wk = &b[1], layers[l].wv = &b[2], layers[l].wo = &b[3];
        layers[l].w_gate = &b[4], layers[l].w_up = &b[5], layers[l].w_down = &b[6];
    }
    memset(&model, 0, sizeof model);
    model.info.n_layer = NL;
    model.arch = &lrun_arch_llama;
    model.n_tensors = NL * NMAT + 2;
    model.tensors = tensors;
    model.layers = layers;
    model.output = &tensors[NL * NMAT];
    model.tok_embd = &tensors[NL * NMAT + 1];
}

static lrun_tier all_pinned(int l, int i, int *hc) { (void)l, (void)i; *hc = 0; return LRUN_TIER_PINNED; }
static lrun_tier mixed(int l, int i, int *hc)
{
    *hc = (l == 2 && i == 4) || l == NL;
    if (l == 0) return LRUN_TIER_DEVICE;
    if (l == NL + 1) return LRUN_TIER_HOST;
    return (l + i) % 3 == 0 ? LRUN_TIER_HOST : (l + i) % 3 == 1 ? LRUN_TIER_MMAP : LRUN_TIER_PINNED;
}
static lrun_tier head_only(int l, int i, int *hc) { (void)i; *hc = 0; return l == NL ? LRUN_TIER_PINNED : LRUN_TIER_DEVICE; }
static lrun_tier odd_layers(int l, int i, int *hc)
{
    (void)i;
    *hc = 0;
    return l < NL && l % 2 ? LRUN_TIER_HOST : LRUN_TIER_DEVICE;
}

static void print_stats(const lrun_cuda_engine *e)
{
    L("stats streamed=%llu host=%llu hits=%lld misses=%lld copy=%.6f stall=%.6f slot=%zu k=%d\n",
      (unsigned long long)e->stats.bytes_streamed, (unsigned long long)e->stats.host_compute_bytes,
      (long long)e->stats.prefetch_hits, (long long)e->stats.prefetch_misses, e->stats.copy_seconds,
      e->stats.stall_seconds, e->stats.slot_bytes, e->stats.prefetch_layers);
}

/* One step as the forward drives it: every layer, then the head (or its skip: begin + end). */
static void step(lrun_cuda_engine *e, int n_tok, int fail_at)
{
    static int32_t tokens[8] = {3, 1, 4, 1, 5, 9, 2, 6};
    e->h_table.tokens = tokens;
    if (lrun_cuda_offload_embeds_on_host(e)) L("embed -> %d\n", lrun_cuda_offload_embed(e, n_tok));
    for (int64_t l = 0; l < NL; l++) {
        const struct lrun_model_layer *V = NULL;
        L("layer_begin %lld -> %d\n", (long long)l, lrun_cuda_offload_layer_begin(e, l, &V));
        L("view %ld %ld %ld %ld %ld %ld %ld\n", P(V->wq->data), P(V->wk->data), P(V->wv->data), P(V->wo->data),
          P(V->w_gate->data), P(V->w_up->data), P(V->w_down->data));
        for (int i = 0; i < NMAT; i++) {
            const struct lrun_tensor *w = layers[l].t[LRUN_ARCH_TENSOR_Q + (i < 4 ? i : i + 5)];
            if (lrun_cuda_offload_on_host(e, w))
                L("host_matmul -> %d\n", lrun_cuda_offload_host_matmul(e, w, (float *)arena, n_tok, (float *)arena));
        }
        if (l == fail_at) {
            L("step fails in layer %lld\n", (long long)l);
            lrun_cuda_offload_reset(e);
            return;
        }
        L("layer_end %lld -> %d\n", (long long)l, lrun_cuda_offload_layer_end(e, l));
    }
    const struct lrun_tensor *head = NULL;
    L("head_begin -> %d\n", lrun_cuda_offload_head_begin(e, &head));
    L("head %ld\n", P(head->data));
    if (lrun_cuda_offload_on_host(e, head))
        L("host_matmul -> %d\n", lrun_cuda_offload_host_matmul(e, head, (float *)arena, 1, (float *)arena));
    L("head_end -> %d\n", lrun_cuda_offload_head_end(e));
    L("synchronized\n");
    lrun_cuda_offload_account(e);
    print_stats(e);
}

static void scenario(const char *name, tier_fn tf, int k)
{
    L("=== %s k=%d\n", name, k);
    arena_used = 0;
    next_handle = 1;
    elapsed_calls = 0;
    make_model(tf);
    lrun_cuda_engine e;
    memset(&e, 0, sizeof e);
    e.model = &model;
    e.device = &device;
    e.stream = (void *)(intptr_t)9999;
    e.n_batch_max = 4;
    size_t bytes = 0;
    L("plan -> %d bytes=%zu\n", lrun_cuda_offload_plan(&e, NULL, k, &bytes), bytes);
    if (!e.offload) {
        L("nothing staged\n");
        return;
    }
    L("slot_bytes %zu\n", lrun_cuda_offload_slot_bytes(&e));
    L("init -> %d\n", lrun_cuda_offload_init(&e));
    step(&e, 4, -1);
    step(&e, 1, -1);
    step(&e, 1, 1);   /* a failed step, then the pipeline from empty */
    step(&e, 1, -1);
    step(&e, 3, -1);
    lrun_cuda_offload_free(&e);
}

/* ---------------------------------------------------------------- the KV cache's staging */

static int64_t row_off[8], kv_base[8], seq_len[3];
static int32_t pos32[8];

/* One chunk as the forward drives the cache: chunk_begin, then per layer
 * the slot (wait), the attention's write-back and the release. */
static void kv_chunk(lrun_cuda_engine *e, int load, int64_t n, const int64_t *stored, int fail_at)
{
    for (int64_t s = 0; s < e->n_seq_max; s++) {
        seq_len[s] = stored[s];
        e->kv.stored[s] = stored[s];
        e->kv.chunk_end[s] = stored[s] + (s < n ? 1 : 0);
    }
    L("kv_reserve -> %d\n", lrun_cuda_kv_reserve(e, stored[0] + n + 1));
    const lrun_status st = lrun_cuda_kv_chunk_begin(e, load, n);
    L("chunk_begin load=%d n=%lld -> %d fused=%d\n", load, (long long)n, st, e->kv.fused_chunk);
    for (int64_t l = 0; l < e->n_layer; l++) {
        char *k = NULL, *v = NULL;
        const lrun_status st = lrun_cuda_kv_layer(e, l, &k, &v);
        L("kv_layer %lld -> %d %ld %ld\n", (long long)l, st, P(k), P(v));
        if (l == fail_at) {
            L("chunk fails in layer %lld\n", (long long)l);
            return;
        }
        L("kv_layer_end %lld -> %d\n", (long long)l, lrun_cuda_kv_layer_end(e, l, n));
    }
    L("moved %llu\n", (unsigned long long)e->kv.bytes_moved);
}

static void kv_scenario(const char *name, lrun_cache_kind kind, int64_t n_layer, int quant_fused)
{
    L("=== kv %s layers=%lld fused=%d\n", name, (long long)n_layer, quant_fused);
    arena_used = 0;
    next_handle = 1;
    static lrun_model km;
    memset(&km, 0, sizeof km);
    km.info.head_dim = 64;
    km.info.n_layer = n_layer;
#ifdef LRUN_TRACE_NEW
    km.arch = &lrun_arch_llama; /* the fused quantized chunk asks the architecture (attention sinks) */
#endif
    lrun_cuda_engine e;
    memset(&e, 0, sizeof e);
    e.model = &km;
    e.device = &device;
    e.stream = (void *)(intptr_t)9999;
    e.n_layer = n_layer;
#ifdef LRUN_TRACE_NEW
    e.layer_end = n_layer; /* one part holding every block (the layer split came after 80be426) */
#endif
    e.n_seq_max = 3;
    e.n_ctx_max = 512;
    e.n_batch_max = 8;
    e.kv_dim = 128;
    e.kv_dtype = LRUN_DTYPE_F16;
    e.kv_esize = 2;
    e.seq_len = seq_len;
    e.d_table.row_off = row_off;
    e.d_table.kv_base = kv_base;
    e.d_table.pos = pos32;
    const lrun_engine_opts o = {.cache_kind = kind, .n_ctx_max = 512, .n_seq_max = 3};
    setenv("LRUN_CUDA_QUANT_FUSED", quant_fused ? "1" : "0", 1);
    const lrun_status st = lrun_cuda_kv_setup(&e, &o);
    L("kv_setup -> %d staged=%d fused=%d\n", st, e.kv.staged, e.kv.fused);
    L("kv_init -> %d\n", lrun_cuda_kv_init(&e));
    const int64_t none[3] = {0, 0, 0}, some[3] = {5, 0, 3}, more[3] = {40, 7, 3}, dense[3] = {40, 39, 38};
    kv_chunk(&e, 1, 3, none, -1);  /* prefill of three sequences */
    kv_chunk(&e, 1, 1, some, -1);  /* decode */
    kv_chunk(&e, 0, 2, some, -1);  /* a chunk that reads nothing stored */
    kv_chunk(&e, 1, 1, more, 1);   /* fails after layer 1's slot */
    kv_chunk(&e, 1, 1, dense, -1); /* the next chunk starts clean; one dense copy */
    kv_chunk(&e, 1, 8, more, -1);  /* a prefill chunk: no fused path */
    lrun_cuda_kv_free(&e);
}

int main(void)
{
    const int ks[] = {1, 2, 3, 8};
    for (int i = 0; i < 4; i++) {
        scenario("all pinned", all_pinned, ks[i]);
        scenario("mixed tiers, host compute, host table", mixed, ks[i]);
        scenario("head only", head_only, ks[i]);
        scenario("odd layers from host memory", odd_layers, ks[i]);
    }
    const int64_t nls[] = {1, 2, 5};
    for (int i = 0; i < 3; i++) {
        kv_scenario("offloaded", LRUN_CACHE_KIND_OFFLOADED, nls[i], 0);
        kv_scenario("offloaded_static", LRUN_CACHE_KIND_OFFLOADED_STATIC, nls[i], 0);
        kv_scenario("quantized", LRUN_CACHE_KIND_QUANTIZED, nls[i], 0);
        kv_scenario("quantized", LRUN_CACHE_KIND_QUANTIZED, nls[i], 1);
    }
    return 0;
}
