/* launch_trace/offload_main.c — the CUDA weight staging's runtime calls
 * (engine_cuda_offload.c), logged without a GPU (offload.sh): every CUDA
 * runtime call it makes is a stub that prints the call with its stream,
 * event and pointer arguments as small ids, and a driver runs the
 * engine's order of layer/head begin and end, stats accounting and a reset
 * over placements with pinned, host and mmap weights, host compute, a
 * host embedding table and k = 1, 2, 3, 8. Compiled once against the
 * tree and once against a base commit; the logs must be identical. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/engine_cuda_internal.h"
#include "cuda/engine_cuda_offload.h"
#include "cpu/cpu_matmul.h"
#include "model/model.h"

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

int main(void)
{
    const int ks[] = {1, 2, 3, 8};
    for (int i = 0; i < 4; i++) {
        scenario("all pinned", all_pinned, ks[i]);
        scenario("mixed tiers, host compute, host table", mixed, ks[i]);
        scenario("head only", head_only, ks[i]);
        scenario("odd layers from host memory", odd_layers, ks[i]);
    }
    return 0;
}
