/* moe_route.cu — softmax, top-k and normalised weights of each token's
 * router logits, the CPU's bits (see moe_route.cuh). */
#include "moe_route.cuh"

#include "exact_math.cuh"

/* ggml's clamp of the chosen probabilities' sum: the smallest normal f16 (MOE_MIN_WEIGHT_SUM in moe_cpu.c) */
#define MIN_WEIGHT_SUM 6.103515625e-5f

/* The better of two candidates: the larger probability, the lower index among equals. */
static __device__ __forceinline__ void better(float &v, int &i, float v2, int i2)
{
    if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

/* sid[0..k) = the k largest of p[0..n_exp), descending, the lower index first among equals. */
static __device__ __forceinline__ void route_oai(const float *p, int n_exp, int k, int32_t *sid, int lane)
{
    for (int s = 0; s < k; s++) {
        float bv = -INFINITY;
        int bi = INT_MAX;
        for (int i = lane; i < n_exp; i += 32) {
            bool taken = false;
            for (int t = 0; t < s; t++) taken = taken || sid[t] == i;
            if (!taken) better(bv, bi, p[i], i);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
            const int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            better(bv, bi, v2, i2);
        }
        if (lane == 0) sid[s] = bi;
        __syncwarp();
    }
}

__global__ void __launch_bounds__(LRUN_K_MOE_ROUTE_WARPS * 32)
    moe_route_rows(const float *__restrict__ logits, int64_t n_rows, int n_exp, int k, int oai,
                   int32_t *__restrict__ ids, float *__restrict__ w, unsigned long long *__restrict__ counts)
{
    __shared__ float sp[LRUN_K_MOE_ROUTE_WARPS][LRUN_K_MOE_MAX_EXPERTS];    /* the row's probabilities */
    __shared__ float sg[LRUN_K_MOE_ROUTE_WARPS][LRUN_K_MOE_MAX_EXPERTS / 8]; /* each group's hsum8 */
    __shared__ int32_t sid[LRUN_K_MOE_ROUTE_WARPS][LRUN_K_MOE_MAX_K];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t row = (int64_t)blockIdx.x * LRUN_K_MOE_ROUTE_WARPS + warp;
    if (row >= n_rows) return; /* only warp-level synchronization below */
    const float *l = logits + row * n_exp;
    float *p = sp[warp];
    if (oai) { /* gpt-oss: the top k logits themselves, then a softmax over those k only */
        for (int i = lane; i < n_exp; i += 32) p[i] = l[i];
        __syncwarp();
        route_oai(p, n_exp, k, sid[warp], lane);
        if (lane == 0) {
            float mx = -INFINITY;
            for (int s = 0; s < k; s++) mx = fmaxf(mx, p[sid[warp][s]]);
            double sum = 0.0; /* lrun_cpu_softmax: the double sum of expf, then every e times (float)(1/sum) */
            float e[LRUN_K_MOE_MAX_K];
            for (int s = 0; s < k; s++) e[s] = expf(__fsub_rn(p[sid[warp][s]], mx)), sum = __dadd_rn(sum, (double)e[s]);
            const float inv = __double2float_rn(__drcp_rn(sum));
            for (int s = 0; s < k; s++) {
                const int x = sid[warp][s];
                ids[row * k + s] = x;
                w[row * k + s] = __fmul_rn(e[s], inv);
                if (counts) atomicAdd(counts + x, 1ull);
            }
            if (counts) atomicAdd(counts + n_exp, 1ull);
        }
        return;
    }

    /* max (the same value in any order; NaNs are not ordered: routing assumes finite logits) */
    float mx = -INFINITY;
    for (int i = lane; i < n_exp; i += 32) mx = fmaxf(mx, l[i]);
    mx = lrun_k_warp_max(mx);

    /* e = v_expf(l - max), a group of 8 per lane at a time, and each group's hsum8 */
    const int n_groups = n_exp / 8;
    for (int g = lane; g < n_groups; g += 32) {
        float e[8];
#pragma unroll
        for (int j = 0; j < 8; j++) e[j] = lrun_k_v_expf(__fsub_rn(l[8 * g + j], mx)), p[8 * g + j] = e[j];
        sg[warp][g] = lrun_k_hsum8(e);
    }
    __syncwarp();
    float inv = 0.0f;
    if (lane == 0) {
        double sum = 0.0;
        for (int g = 0; g < n_groups; g++) sum = __dadd_rn(sum, (double)sg[warp][g]);
        inv = __double2float_rn(__drcp_rn(sum)); /* 1.0 / sum, correctly rounded, as the CPU's division */
    }
    inv = __shfl_sync(0xffffffffu, inv, 0);
    for (int i = lane; i < n_exp; i += 32) p[i] = __fmul_rn(p[i], inv);
    __syncwarp();

    /* top-k: k rounds of a warp arg-max over the experts not yet taken */
    for (int s = 0; s < k; s++) {
        float bv = -1.0f; /* probabilities are >= 0 */
        int bi = INT_MAX;
        for (int i = lane; i < n_exp; i += 32) {
            bool taken = false;
            for (int t = 0; t < s; t++) taken = taken || sid[warp][t] == i;
            if (!taken) better(bv, bi, p[i], i);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
            const int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            better(bv, bi, v2, i2);
        }
        if (lane == 0) sid[warp][s] = bi;
        __syncwarp();
    }

    /* the weights: over the chosen probabilities' sum, in double, in slot order */
    if (lane == 0) {
        double sum = 0.0;
        for (int s = 0; s < k; s++) sum = __dadd_rn(sum, (double)p[sid[warp][s]]);
        float fsum = __double2float_rn(sum);
        if (fsum < MIN_WEIGHT_SUM) fsum = MIN_WEIGHT_SUM;
        for (int s = 0; s < k; s++) {
            const int x = sid[warp][s];
            ids[row * k + s] = x;
            w[row * k + s] = __fdiv_rn(p[x], fsum);
            if (counts) atomicAdd(counts + x, 1ull);
        }
        if (counts) atomicAdd(counts + n_exp, 1ull);
    }
}

static lrun_status route(const char *op, const float *logits, int64_t n_rows, int64_t n_expert, int64_t k, int oai,
                         int32_t *ids, float *w, unsigned long long *counts, void *stream)
{
    if (!logits || !ids || !w)
        return lrun_fail(LRUN_E_ARG, "%s: %s is NULL", op, !logits ? "logits" : (!ids ? "ids" : "w"));
    if (n_rows <= 0) return lrun_fail(LRUN_E_ARG, "%s: n_rows %lld (must be > 0)", op, (long long)n_rows);
    if (n_expert < 8 || n_expert > LRUN_K_MOE_MAX_EXPERTS || n_expert % 8 != 0)
        return lrun_fail(LRUN_E_ARG, "%s: n_expert %lld (expected a multiple of 8 in 8..%d)", op, (long long)n_expert,
                         LRUN_K_MOE_MAX_EXPERTS);
    if (k < 1 || k > LRUN_K_MOE_MAX_K || k > n_expert)
        return lrun_fail(LRUN_E_ARG, "%s: k %lld (expected 1..%d and <= n_expert %lld)", op, (long long)k,
                         LRUN_K_MOE_MAX_K, (long long)n_expert);
    if (!stream) return lrun_fail(LRUN_E_ARG, "%s: stream is NULL (kernels run on an explicit stream)", op);
    const int64_t blocks = (n_rows + LRUN_K_MOE_ROUTE_WARPS - 1) / LRUN_K_MOE_ROUTE_WARPS;
    if (blocks > LRUN_K_MAX_GRID) return lrun_fail(LRUN_E_ARG, "%s: %lld rows need too many blocks", op, (long long)n_rows);
    moe_route_rows<<<(unsigned)blocks, LRUN_K_MOE_ROUTE_WARPS * 32, 0, (cudaStream_t)stream>>>(
        logits, n_rows, (int)n_expert, (int)k, oai, ids, w, counts);
    return lrun_k_launched(op);
}

extern "C" lrun_status lrun_k_moe_route(const float *logits, int64_t n_rows, int64_t n_expert, int64_t k,
                                        int32_t *ids, float *w, unsigned long long *counts, void *stream)
{
    return route("lrun_k_moe_route", logits, n_rows, n_expert, k, 0, ids, w, counts, stream);
}

extern "C" lrun_status lrun_k_moe_route_oai(const float *logits, int64_t n_rows, int64_t n_expert, int64_t k,
                                            int32_t *ids, float *w, unsigned long long *counts, void *stream)
{
    return route("lrun_k_moe_route_oai", logits, n_rows, n_expert, k, 1, ids, w, counts, stream);
}
