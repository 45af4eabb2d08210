/* engine_cuda_moe_host.c — a block's host-computed experts in one host
 * pass. Product by product (engine_cuda_moe.c's run_expert), a decode step
 * of top-8 makes 24 round trips per block, each a copy down, a stream sync,
 * the host product and a copy up: measured on the H100 (session 9) at about
 * 1.05 ms per block where the bytes take 0.34 ms, half llama.cpp's speed on
 * the same blocks. Here the chunk's rows go down once, the host runs every
 * chosen expert (gate, up, SwiGLU, down, the weighted sum: what the CPU
 * engine's moe_cpu.c does, whose decode is level with llama.cpp's) and the
 * sum goes up once. Fast numerics: the products are the same lrun_cpu_matmul
 * calls; SwiGLU is the CPU's and the sum is taken in pair order on the host,
 * so the logits agree with the product-by-product way to rounding, not bits.
 * Opt-in (LRUN_CUDA_MOE_HOST_PASS=1) until it has run on a GPU. */
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_matmul.h"
#include "cpu/cpu_ops.h"
#include "cuda/engine_cuda_moe_host.h"
#include "cuda/engine_cuda_offload.h"

struct cuda_moe_host {
    float *x; /* (GEMV_MAX_ROWS, n_embd) one expert's gathered rows */
    float *g; /* (GEMV_MAX_ROWS, n_ff) its gate products, then SwiGLU */
    float *u; /* (GEMV_MAX_ROWS, n_ff) its up products */
    float *y; /* (GEMV_MAX_ROWS, n_embd) its down products */
};

static int host_pass_asked(void)
{
    const char *v = getenv("LRUN_CUDA_MOE_HOST_PASS");
    return v && strcmp(v, "1") == 0;
}

lrun_status lrun_cuda_moe_host_init(lrun_cuda_engine *e, struct cuda_moe_host **out)
{
    *out = NULL;
    if (!host_pass_asked() || !e->offload) return LRUN_OK;
    const size_t rows = GEMV_MAX_ROWS, d = (size_t)e->n_embd, f = (size_t)e->n_ff;
    struct cuda_moe_host *h = calloc(1, sizeof *h);
    float *base = malloc(rows * (2 * d + 2 * f) * sizeof(float));
    if (!h || !base) {
        free(h);
        free(base);
        return lrun_fail_oom(rows * (2 * d + 2 * f) * sizeof(float), 0, "engine: host expert pass rows");
    }
    h->x = base;
    h->g = h->x + rows * d;
    h->u = h->g + rows * f;
    h->y = h->u + rows * f;
    *out = h;
    return LRUN_OK;
}

void lrun_cuda_moe_host_free(struct cuda_moe_host *h)
{
    if (!h) return;
    free(h->x); /* the base of all four */
    free(h);
}

int lrun_cuda_moe_host_takes(const lrun_cuda_engine *e, const struct cuda_moe_host *h, const lrun_weight_ref g[3],
                             int64_t n)
{
    lrun_cuda_host_compute hc;
    if (!h || n > GEMV_MAX_ROWS || !lrun_cuda_offload_host_compute(e, &hc)) return 0;
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

lrun_status lrun_cuda_moe_host_run(lrun_cuda_engine *e, struct cuda_moe_host *h, const lrun_weight_ref g[3],
                                   int64_t n, const int32_t *pairs, const int64_t *first, const float *w)
{
    lrun_cuda_host_compute hc;
    if (!lrun_cuda_offload_host_compute(e, &hc))
        return lrun_fail(LRUN_E_INTERNAL, "engine: the host expert pass has no host buffers");
    const int64_t d = e->n_embd, f = g[0].w->ne[1], k = e->model->info.n_expert_used;
    const int64_t n_exp = e->model->info.n_expert;
    cudaStream_t s = (cudaStream_t)e->stream;
    const size_t rows = (size_t)(n * d) * sizeof(float);
    TRY(cuda_check(cudaMemcpyAsync(hc.h_x, e->xn, rows, cudaMemcpyDeviceToHost, s), "expert rows to the host",
                   e->device));
    /* also waits for the last host product's copy up, so h_y is free */
    TRY(cuda_check(cudaStreamSynchronize(s), "waiting for the expert rows", e->device));
    float *sum = hc.h_y;
    memset(sum, 0, rows);
    for (int64_t x = 0; x < n_exp; x++) {
        const int64_t cnt = first[x + 1] - first[x];
        if (cnt == 0) continue;
        const int32_t *p = pairs + first[x];
        for (int64_t j = 0; j < cnt; j++) memcpy(h->x + j * d, hc.h_x + (p[j] / k) * d, (size_t)d * sizeof(float));
        lrun_cpu_matmul(hc.pool, g[0].w->dtype, slice(&g[0], x), g[0].w->row_bytes, f, d, h->x, cnt, h->g, hc.work);
        lrun_cpu_matmul(hc.pool, g[1].w->dtype, slice(&g[1], x), g[1].w->row_bytes, f, d, h->x, cnt, h->u, hc.work);
        for (int64_t j = 0; j < cnt; j++) lrun_cpu_swiglu(h->g + j * f, h->u + j * f, f);
        lrun_cpu_matmul(hc.pool, g[2].w->dtype, slice(&g[2], x), g[2].w->row_bytes, d, f, h->g, cnt, h->y, hc.work);
        for (int64_t j = 0; j < cnt; j++) { /* the pair's weighted output into its token's row, in pair order */
            const float wt = w[p[j]];
            float *dst = sum + (p[j] / k) * d;
            const float *src = h->y + j * d;
            for (int64_t c = 0; c < d; c++) dst[c] += wt * src[c];
        }
        for (int i = 0; i < 3; i++) e->stats.host_compute_bytes += (size_t)g[i].w->ne[1] * g[i].w->row_bytes;
    }
    return cuda_check(cudaMemcpyAsync(e->tmp, sum, rows, cudaMemcpyHostToDevice, s), "expert sum to the device",
                      e->device);
}
