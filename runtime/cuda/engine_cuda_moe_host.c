/* engine_cuda_moe_host.c — a block's host-computed experts in one host
 * pass. Product by product (engine_cuda_moe.c's run_expert), a decode step
 * of top-8 makes 24 round trips per block, each a copy down, a stream sync,
 * the host product and a copy up: measured on the H100 (session 9) at about
 * 1.05 ms per block where the bytes take 0.34 ms, half llama.cpp's speed on
 * the same blocks. Here the chunk's rows go down once, the host runs every
 * chosen expert (gate, up, SwiGLU, down, the weighted sum: what the CPU
 * engine's moe_cpu.c does, whose decode is level with llama.cpp's) and the
 * sum goes up once. The products are lrun_cpu_matmul_grouped jobs over all
 * chosen experts, gate and up together when alike, then down (2 fork/joins
 * per block, not 3 per expert), bit for bit what lrun_cpu_matmul per expert
 * gives. Fast numerics: SwiGLU is the CPU's and the sum is taken in pair
 * order on the host, so the logits agree with the product-by-product way to
 * rounding, not bits.
 * The default since it ran on a GPU (H200, session 12: n_cpu_moe 29 of the
 * 30B-A3B shape decodes 61.1 tok/s against 30.8 product by product);
 * LRUN_CUDA_MOE_HOST_PASS=0 goes product by product. */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "cpu/cpu_matmul_grouped.h"
#include "cpu/cpu_ops.h"
#include "cuda/engine_cuda_moe_host.h"
#include "cuda/engine_cuda_offload.h"

/* Most chosen experts one grouped product takes (its parts table is on the stack). */
#define HOST_GROUP_MAX 64

struct cuda_moe_host {
    float *x;   /* (GEMV_MAX_ROWS · k, n_embd) the chosen experts' gathered rows, grouped by expert */
    float *g;   /* (GEMV_MAX_ROWS · k, n_ff) their gate products, then SwiGLU */
    float *u;   /* (GEMV_MAX_ROWS · k, n_ff) their up products */
    float *y;   /* (GEMV_MAX_ROWS · k, n_embd) their down products */
    void *work; /* lrun_cpu_matmul_grouped's work for all those rows: 4 bytes an
                 * element bounds every partner type (8-bit blocks plus scales) */
    lrun_device *device; /* whose host account holds the rows (scratch, plain host memory) */
    size_t bytes;
};

static int host_pass_wanted(void)
{
    const char *v = getenv("LRUN_CUDA_MOE_HOST_PASS");
    return !v || strcmp(v, "0") != 0;
}

lrun_status lrun_cuda_moe_host_init(lrun_cuda_engine *e, struct cuda_moe_host **out)
{
    *out = NULL;
    if (!host_pass_wanted() || !e->offload) return LRUN_OK;
    const size_t rows = GEMV_MAX_ROWS * (size_t)e->model->info.n_expert_used;
    const size_t d = (size_t)e->n_embd, f = (size_t)e->n_ff, wide = d > f ? d : f;
    const size_t floats = rows * (2 * d + 2 * f + wide); /* x, g, u, y, then the work */
    struct cuda_moe_host *h = calloc(1, sizeof *h);
    if (!h) return lrun_fail_oom(sizeof *h, 0, "engine: host expert pass");
    void *base = NULL;
    /* on the model's host account like the offload's own host rows: only the
     * host copies the rows in and out of them, so plain memory, not pinned */
    const lrun_status st =
        lrun_oom_phase(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_HOST,
                                              floats * sizeof(float), "engine: host expert pass rows", &base),
                       "scratch");
    if (st != LRUN_OK) {
        free(h);
        return st;
    }
    h->device = e->device;
    h->bytes = floats * sizeof(float);
    h->x = base;
    h->g = h->x + rows * d;
    h->u = h->g + rows * f;
    h->y = h->u + rows * f;
    h->work = h->y + rows * d;
    *out = h;
    return LRUN_OK;
}

void lrun_cuda_moe_host_free(struct cuda_moe_host *h)
{
    if (!h) return;
    lrun_device_host_release(h->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_HOST, h->x,
                             h->bytes); /* the base of all four */
    free(h);
}

int lrun_cuda_moe_host_takes(const lrun_cuda_engine *e, const struct cuda_moe_host *h, const lrun_weight_ref g[3],
                             int64_t n)
{
    lrun_cuda_host_compute hc;
    /* gpt-oss's experts (biases, swiglu_oai) take the per-expert way, whose products the host computes too */
    if (!h || n > GEMV_MAX_ROWS || e->model->arch->moe_oai || !lrun_cuda_offload_host_compute(e, &hc)) return 0;
    for (int i = 0; i < 3; i++)
        if (!g[i].w || !g[i].data || !g[i].on_host || g[i].w->packed) return 0;
    const int64_t d = e->n_embd, f = g[0].w->ne[1];
    if (f > e->n_ff || g[1].w->ne[1] != f || g[2].w->ne[0] != f || g[0].w->ne[0] != d || g[2].w->ne[1] != d) return 0;
    return (size_t)(n * d) <= hc.h_x_floats && (size_t)(n * d) <= hc.h_y_floats;
}

/* Expert x's slice of a stacked host tensor ({k, n, n_expert}): its first row. */
static const void *slice(const lrun_weight_ref *r, int64_t x)
{
    return (const char *)r->data + (size_t)x * (size_t)r->w->ne[1] * r->w->row_bytes;
}

lrun_status lrun_cuda_moe_host_fetch(lrun_cuda_engine *e, int64_t n)
{
    lrun_cuda_host_compute hc;
    if (!lrun_cuda_offload_host_compute(e, &hc))
        return lrun_fail(LRUN_E_INTERNAL, "engine: the host expert pass has no host buffers");
    return cuda_check(cudaMemcpyAsync(hc.h_x, e->xn, (size_t)(n * e->n_embd) * sizeof(float), cudaMemcpyDeviceToHost,
                                      (cudaStream_t)e->stream),
                      "expert rows to the host", e->device);
}

lrun_status lrun_cuda_moe_host_compute(lrun_cuda_engine *e, struct cuda_moe_host *h, const lrun_weight_ref g[3],
                                       int64_t n, const int32_t *pairs, const int64_t *first, const float *w)
{
    lrun_cuda_host_compute hc;
    if (!lrun_cuda_offload_host_compute(e, &hc))
        return lrun_fail(LRUN_E_INTERNAL, "engine: the host expert pass has no host buffers");
    const int64_t d = e->n_embd, f = g[0].w->ne[1], k = e->model->info.n_expert_used;
    const int64_t n_exp = e->model->info.n_expert;
    const size_t rows = (size_t)(n * d) * sizeof(float);
    const double t0 = lrun_now_seconds();
    float *sum = hc.h_y;
    memset(sum, 0, rows);
    /* the chosen experts' rows, grouped by expert: row j is pair pairs[j] */
    const int64_t n_rows = first[n_exp];
    for (int64_t j = 0; j < n_rows; j++) memcpy(h->x + j * d, hc.h_x + (pairs[j] / k) * d, (size_t)d * sizeof(float));
    float *const ins[3] = {h->x, h->x, h->g}, *const outs[3] = {h->g, h->u, h->y};
    /* gate and up in one job when alike: both converted copies of the rows fit
     * h->work (2 · ~1.1 bytes an element against 4) */
    const int fuse = g[0].w->dtype == g[1].w->dtype && g[0].w->row_bytes == g[1].w->row_bytes;
    lrun_cpu_mm_part parts[2 * HOST_GROUP_MAX];
    int np = 0;
    for (int i = 0; i < 3; i++) { /* gate, up, down: one grouped job each over every chosen expert */
        const struct lrun_tensor *t = g[i].w;
        for (int64_t x = 0; x < n_exp; x++) {
            const int64_t cnt = first[x + 1] - first[x];
            if (cnt == 0) continue;
            if (np == 2 * HOST_GROUP_MAX) { /* the table is full: run what it holds */
                lrun_cpu_matmul_grouped(hc.pool, t->dtype, t->row_bytes, t->ne[1], t->ne[0], parts, np, h->work);
                np = 0;
            }
            parts[np++] = (lrun_cpu_mm_part){.w = slice(&g[i], x), .x = ins[i] + first[x] * t->ne[0], .m = cnt,
                                             .y = outs[i] + first[x] * t->ne[1]};
            lrun_cuda_count_host_bytes(e, t->layer, (size_t)t->ne[1] * t->row_bytes);
        }
        if (i == 0 && fuse) continue; /* up's parts join gate's */
        lrun_cpu_matmul_grouped(hc.pool, t->dtype, t->row_bytes, t->ne[1], t->ne[0], parts, np, h->work);
        np = 0;
        if (i == 1)
            for (int64_t j = 0; j < n_rows; j++) lrun_cpu_swiglu(h->g + j * f, h->u + j * f, f);
    }
    for (int64_t j = 0; j < n_rows; j++) { /* each pair's weighted output into its token's row, in pair order */
        const float wt = w[pairs[j]];
        float *dst = sum + (pairs[j] / k) * d;
        const float *src = h->y + j * d;
        for (int64_t c = 0; c < d; c++) dst[c] += wt * src[c];
    }
    e->stats.host_compute_seconds += lrun_now_seconds() - t0;
    return lrun_cuda_offload_host_up(e, e->tmp, sum, rows / sizeof(float));
}
