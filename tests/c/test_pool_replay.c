/* test_pool_replay.c — the CUDA pool (core/pool.h, with cuda_backend.c's
 * arena sizes) replaying what auto-fit does on the device for a
 * Qwen3-30B-A3B-shaped Q4_K model under a GPU budget: the bandwidth
 * measurements, the placement's weights, the engine lrun.load makes, its
 * KV cache growing, that engine freed, and the engine the benchmark makes
 * next (static cache, 512-token batches): peer_lrun.lua's sequence, which
 * failed on the H200 at 8 GiB with "engine scratch" 669 MiB refused while
 * 698 MiB of the budget were free (docs/benchmarks.md, docs/residency.md
 * "Fragmentation"). Every request of the replay is within the budget the
 * planner promised (checked here as device.c checks it); the pool must then
 * satisfy it whatever was freed before.
 *
 * The arenas are fake addresses: the pool never touches its arenas' bytes,
 * so 16 GiB of "device" costs nothing here. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "core/error.h"
#include "core/pool.h"
#ifdef LRUN_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

/* cuda_backend.c's pool: shared arenas of 16 MiB, blocks of 1 MiB and more in arenas of their own size */
#define ARENA (16 * MiB)
#define OWN (1 * MiB)
#define ALIGN ((size_t)256)

// ---------------------------------------------------------------- the shape (examples/genmodel.lua's preset)

enum { N_LAYER = 48, N_EMBD = 2048, N_FF = 768, N_EXPERT = 128, Q_DIM = 4096, KV_DIM = 512, N_VOCAB = 151936 };

/* Q4_K: 144 bytes per 256 elements */
static size_t q4k(size_t cols, size_t rows) { return cols / 256 * 144 * rows; }

static const size_t SCRATCH = 701230336;        /* the engine scratch the H200 run asked for (B = 512) */
static const size_t EXPERT = (size_t)113246208; /* one stacked expert tensor: q4k(2048, 768 * 128) */

/* engine_cuda_moe.c's block for B = 512: router, rows x2, ids x2, act, out, counts (each 256-rounded) */
static size_t moe_scratch(void) { return 262144 + 2 * 4194304 + 2 * 256 + 196608 + 524288 + 49664; }

/* engine_cuda_kv.c's layer block: keys and values planes of cap positions, f16, one sequence */
static size_t kv_layer(size_t cap) { return 2 * cap * KV_DIM * 2; }

// ---------------------------------------------------------------- a device: budget + pool

typedef struct {
    uintptr_t next; /* the next fake arena address */
    int reserves;
} fake_src;

static lrun_status fake_reserve(void *ctx, size_t bytes, void **base)
{
    fake_src *s = ctx;
    *base = (void *)s->next;
    s->next += (bytes + 2 * MiB) & ~(MiB - 1); /* a gap: arenas are never adjacent */
    s->reserves++;
    return LRUN_OK;
}

static void fake_unreserve(void *ctx, void *base) { (void)ctx, (void)base; }

typedef struct {
    size_t capacity, used; /* device.c's budget: bytes asked for */
    lrun_pool pool;
    fake_src src;
    int failed;            /* the first refusal is kept in msg */
    char msg[400];
} sim_device;

static void sim_open(sim_device *d, size_t budget)
{
    memset(d, 0, sizeof *d);
    d->src.next = (uintptr_t)1 << 40;
    d->capacity = budget & ~(ALIGN - 1);
    lrun_pool_init(&d->pool, d->capacity, ARENA, ALIGN, fake_reserve, fake_unreserve, &d->src);
    d->pool.own_arena_bytes = OWN;
}

/* lrun_device_alloc: the budget first (a request past it is the plan's fault, not the pool's), then the pool */
static void *sim_alloc(sim_device *d, size_t bytes, const char *what)
{
    if (d->failed) return NULL;
    void *p = NULL;
    if (bytes > d->capacity - d->used) {
        snprintf(d->msg, sizeof d->msg, "budget: %s needs %zu, %zu free (the replay's plan is wrong)", what, bytes,
                 d->capacity - d->used);
        d->failed = 2;
        return NULL;
    }
    if (lrun_pool_alloc(&d->pool, bytes, what, &p) != LRUN_OK) {
        snprintf(d->msg, sizeof d->msg, "%s with %zu of the budget free: %s", what, d->capacity - d->used,
                 lrun_last_error());
        d->failed = 1;
        return NULL;
    }
    d->used += bytes;
    return p;
}

static void sim_release(sim_device *d, void *p, size_t bytes)
{
    if (!p) return;
    lrun_pool_release(&d->pool, p);
    d->used -= bytes;
}

// ---------------------------------------------------------------- the replay

typedef struct {
    size_t budget;
    int streamed;  /* the plan streams blocks through k + 1 = 2 slots instead of computing host experts there */
    int grow;      /* the first engine decodes to n_ctx, growing its KV cache */
} scenario;

enum { N_CTX = 656, MAX_T = 16 + N_LAYER * 12 };

/* The tensors in the generator's order; expert tensors flagged. */
typedef struct {
    size_t bytes[MAX_T];
    int expert[MAX_T];
    int n;
} tensor_list;

static void add(tensor_list *l, size_t bytes, int expert)
{
    l->bytes[l->n] = bytes;
    l->expert[l->n++] = expert;
}

static void model_tensors(tensor_list *l)
{
    l->n = 0;
    add(l, q4k(N_EMBD, N_VOCAB), 0); /* token_embd */
    for (int b = 0; b < N_LAYER; b++) {
        add(l, N_EMBD * 4, 0);                                   /* attn_norm */
        add(l, q4k(N_EMBD, Q_DIM), 0);                           /* attn_q */
        add(l, q4k(N_EMBD, KV_DIM), 0);                          /* attn_k */
        add(l, q4k(N_EMBD, KV_DIM), 0);                          /* attn_v */
        add(l, q4k(Q_DIM, N_EMBD), 0);                           /* attn_output */
        add(l, 128 * 4, 0);                                      /* attn_q_norm */
        add(l, 128 * 4, 0);                                      /* attn_k_norm */
        add(l, N_EMBD * 4, 0);                                   /* ffn_norm */
        add(l, (size_t)N_EMBD * N_EXPERT * 4, 0);                /* ffn_gate_inp, f32 */
        for (int j = 0; j < 3; j++) add(l, EXPERT, 1);           /* gate, up, down experts */
    }
    add(l, N_EMBD * 4, 0);           /* output_norm */
    add(l, q4k(N_EMBD, N_VOCAB), 0); /* output */
}

/* The pool's slack the plan reserves: one shared arena, 1 MiB per shared
 * arena of small blocks (one here), and 255 bytes of rounding per block. */
static size_t slack_of(int n_tensors) { return ARENA + OWN + (size_t)(n_tensors + N_LAYER + 8) * (ALIGN - 1); }

/* The plan: every tensor but the experts on the device, then expert tensors
 * in order while weights + slots + the reserve (scratch, the KV cache at its
 * highest, the MoE scratch, the pool's slack) fit; the rest host-computed
 * or, streamed, through two slots of a block's three expert tensors. */
static void plan(const scenario *s, const tensor_list *l, int *on_device, size_t *slots)
{
    const size_t kv_max = N_LAYER * kv_layer(N_CTX) + kv_layer(512); /* growth to 656: one old layer held */
    const size_t slack = slack_of(l->n);
    size_t used = SCRATCH + kv_max + moe_scratch() + slack;
    *slots = s->streamed ? 2 * 3 * EXPERT : 0;
    used += *slots;
    for (int i = 0; i < l->n; i++)
        if (!l->expert[i]) used += l->bytes[i];
    for (int i = 0; i < l->n; i++) {
        on_device[i] = !l->expert[i];
        if (l->expert[i] && used + l->bytes[i] <= s->budget) {
            on_device[i] = 1;
            used += l->bytes[i];
        }
    }
}

/* One engine's device blocks, in lrun_cuda_engine_init's order. */
typedef struct {
    void *slots, *scratch, *moe, *kv[N_LAYER], *cache;
    size_t slot_bytes, kv_bytes, cache_bytes;
} engine_blocks;


static void engine_init(sim_device *d, engine_blocks *e, size_t slots, int static_cache)
{
    memset(e, 0, sizeof *e);
    e->slot_bytes = slots;
    if (slots) e->slots = sim_alloc(d, slots, "streaming slots");
    if (static_cache) {
        e->kv_bytes = kv_layer(N_CTX);
        for (int l = 0; l < N_LAYER; l++) e->kv[l] = sim_alloc(d, e->kv_bytes, "KV cache");
    }
    e->scratch = sim_alloc(d, SCRATCH, "engine scratch");
    e->moe = sim_alloc(d, moe_scratch(), "mixture-of-experts scratch");
}

/* lrun_cuda_kv_reserve: a new block per layer, then the old one goes. */
static void engine_grow(sim_device *d, engine_blocks *e, size_t cap)
{
    const size_t bytes = kv_layer(cap);
    for (int l = 0; l < N_LAYER; l++) {
        void *grown = sim_alloc(d, bytes, "KV cache");
        sim_release(d, e->kv[l], e->kv_bytes);
        e->kv[l] = grown;
    }
    e->kv_bytes = bytes;
}

/* An expert cache of every byte the budget has left but the slack (what
 * lua/lrun/expert_plan.lua sizes slots from): the slack bound, tested at the budget's edge. */
static void engine_cache(sim_device *d, engine_blocks *e, size_t slack)
{
    e->cache_bytes = d->capacity - d->used > slack ? d->capacity - d->used - slack : 0;
    if (e->cache_bytes) e->cache = sim_alloc(d, e->cache_bytes, "expert cache");
}

/* lrun_cuda_engine_free's order: slots, MoE scratch (and its expert cache), KV cache, scratch */
static void engine_free(sim_device *d, engine_blocks *e)
{
    sim_release(d, e->slots, e->slot_bytes);
    sim_release(d, e->cache, e->cache_bytes);
    sim_release(d, e->moe, moe_scratch());
    for (int l = 0; l < N_LAYER; l++) sim_release(d, e->kv[l], e->kv_bytes);
    sim_release(d, e->scratch, SCRATCH);
}

/* lrun_device_measure_bandwidth: the buffers on the device, then a trim */
static void measure(sim_device *d)
{
    const int device_buffers[3] = {1, 1, 2}; /* pinned→device, host→device, device→device */
    for (int m = 0; m < 3; m++) {
        void *b[2] = {NULL, NULL};
        for (int i = 0; i < device_buffers[m]; i++) b[i] = sim_alloc(d, 16 * MiB, "bandwidth measurement buffer");
        for (int i = 0; i < device_buffers[m]; i++) sim_release(d, b[i], 16 * MiB);
        lrun_pool_trim(&d->pool);
    }
}

static void *weights[MAX_T];

/* Returns 0 when every request was served; prints where it stopped. */
static int replay(const scenario *s)
{
    tensor_list l;
    model_tensors(&l);
    int on_device[MAX_T];
    size_t slots;
    plan(s, &l, on_device, &slots);
    sim_device d;
    sim_open(&d, s->budget);
    measure(&d);
    size_t w = 0;
    for (int i = 0; i < l.n; i++) /* lrun_model_move_tensors: every device tensor, in order */
        if (on_device[i]) weights[i] = sim_alloc(&d, l.bytes[i], "tensor"), w += l.bytes[i];
    engine_blocks e1, e2;
    engine_init(&d, &e1, slots, 0); /* lrun.load's engine: dynamic cache, nothing of it yet */
    if (s->grow) {
        engine_grow(&d, &e1, 256);
        engine_grow(&d, &e1, 512);
        engine_grow(&d, &e1, N_CTX);
    }
    engine_free(&d, &e1);
    engine_init(&d, &e2, slots, 1); /* the benchmark's engine: static cache of n_ctx positions */
    engine_cache(&d, &e2, slack_of(l.n));
    const size_t stranded = lrun_pool_stranded(&d.pool);
    printf("# %zu GiB%s%s: %.2f GiB of weights on the device, %zu arenas reserved (%d cudaMalloc), "
           "%zu free blocks, %zu of the budget free, %zu stranded; %s\n",
           s->budget / GiB, s->streamed ? ", streamed" : "", s->grow ? ", grown" : "", (double)w / (double)GiB,
           lrun_pool_arena_count(&d.pool), d.src.reserves, lrun_pool_free_block_count(&d.pool),
           d.capacity - d.used, stranded, d.failed ? d.msg : "every request served");
    engine_free(&d, &e2);
    const int failed = d.failed ? d.failed : stranded > slack_of(l.n) ? 3 : 0;
    lrun_pool_destroy(&d.pool);
    return failed;
}

int main(void)
{
#ifdef LRUN_WITH_CUDA
    CHECK("the replay's arena sizes are the CUDA pool's", lrun_cuda_pool_arena_bytes() == ARENA &&
                                                              lrun_cuda_pool_own_arena_bytes() == OWN &&
                                                              lrun_cuda_pool_align() == ALIGN);
#endif
    const size_t budgets[] = {4 * GiB, 8 * GiB, 16 * GiB};
    for (int b = 0; b < 3; b++)
        for (int v = 0; v < 4; v++) {
            const scenario s = {budgets[b], v & 1, v >> 1 & 1};
            const int r = replay(&s);
            char name[160];
            snprintf(name, sizeof name, "30B-A3B Q4_K at %zu GiB%s%s: the plan stays in the budget", budgets[b] / GiB,
                     s.streamed ? ", blocks streamed" : "", s.grow ? ", KV cache grown" : "");
            CHECK(name, r != 2);
            snprintf(name, sizeof name, "30B-A3B Q4_K at %zu GiB%s%s: the pool serves every request", budgets[b] / GiB,
                     s.streamed ? ", blocks streamed" : "", s.grow ? ", KV cache grown" : "");
            CHECK(name, r != 1);
            snprintf(name, sizeof name, "30B-A3B Q4_K at %zu GiB%s%s: stranded bytes within the slack", budgets[b] / GiB,
                     s.streamed ? ", blocks streamed" : "", s.grow ? ", KV cache grown" : "");
            CHECK(name, r == 0);
        }
    return CHECK_DONE();
}
