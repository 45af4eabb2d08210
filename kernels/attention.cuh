/* attention.cuh — attention of query tokens against their caches
 * (lrun_k_attention in kernels.h), flash-decoding style.
 *
 * Each (token, head) job's KV range [0, n_kv) is cut into S splits; one block
 * of LRUN_K_ATTN_THREADS threads per (token, head, split), grid-stride over
 * jobs. Where a cache row is 2..32 16-byte pieces (head_dim 16..256 as a
 * power of two for f16, 8..128 for f32) on 16-byte aligned bases, a block
 * runs the vector path: a group of head_dim/8 (f16) lanes per position,
 * one 16-byte load of K and of V per lane, LRUN_K_ATTN_VEC_UNROLL positions
 * per group loaded before use, an online softmax per group, and the groups
 * merged in shared memory at the end. Otherwise (any head_dim, any
 * alignment) the scalar path walks the split in tiles of LRUN_K_ATTN_TILE:
 *   scores   one warp per position, lanes over head_dim, shuffle reduction;
 *   softmax  online: running max m and sum l, earlier sums rescaled by e^(m-m');
 *   P·V      one thread per output dim (≤ 4 per thread), positions in order.
 * With S = 1 the block writes the normalized output; with S > 1 it writes
 * (m, l, acc[head_dim]) to work and a second kernel (one block per (token,
 * head)) merges the splits.
 *
 * S is chosen from the shape alone (lrun_k_attn_splits) so that the caller
 * can size work beforehand: decode (few jobs) gets up to ~512 blocks, one
 * split per LRUN_K_ATTN_MIN_SPLIT positions of max_kv; prefill (many
 * jobs) gets S = 1 and needs no work. Inside a launch, each token divides
 * its own n_kv among the S splits. */
#ifndef LRUN_KERNELS_ATTENTION_CUH
#define LRUN_KERNELS_ATTENTION_CUH

#include "common.cuh"

#define LRUN_K_ATTN_THREADS 128
#define LRUN_K_ATTN_TILE 128          /* positions scored per step */
#define LRUN_K_ATTN_MAX_HEAD_DIM 512  /* 4 output dims per thread */
#define LRUN_K_ATTN_TARGET_BLOCKS 512 /* about 4 blocks per SM of an H100 */
/* Fewest positions of max_kv worth a split of their own. A block walks its
 * positions one load latency after another, so at decode the longest split
 * sets the kernel's time: with 32 (16 splits per head on a 1024-position
 * cache, the grid target) 7B bf16 decode went from 174 to 181 tok/s on the
 * H100 against 256 (4 splits per head); with the vector path the kernel
 * takes 9.6 µs at n_kv 192 and 14 µs at 1000 (test_kernels_gpu --bench,
 * docs/cuda-kernels.md). */
#define LRUN_K_ATTN_MIN_SPLIT 32
/* Positions each group of lanes of the vector path loads per step (K and
 * V rows of all of them before any is used). 7B decode at n_kv 4096 /
 * 16384 / 32768 on the H100: 4 gives 33.3 / 103 / 198 µs, 8 gives 34.0 /
 * 102 / 189, 2 gives 35.6 / 111 / 212 (test_kernels_gpu --bench). */
#ifndef LRUN_K_ATTN_VEC_UNROLL
#define LRUN_K_ATTN_VEC_UNROLL 4
#endif
/* Shared floats of the vector path for E elements per 16 bytes: per group
 * m, l and weight, and (groups, head_dim) = THREADS * E partial sums. */
#define LRUN_K_ATTN_VEC_SMEM(E) ((size_t)LRUN_K_ATTN_THREADS * (3 + (E)))

/* Splits per (token, head) job for this shape (1 when there are enough jobs
 * to fill the GPU, or the cache is short). n_tok * n_head must not overflow. */
static inline int64_t lrun_k_attn_splits(int64_t n_tok, int64_t n_head, int64_t max_kv)
{
    const int64_t jobs = n_tok * n_head;
    if (jobs <= 0 || max_kv <= 0 || jobs >= LRUN_K_ATTN_TARGET_BLOCKS / 2) return 1;
    const int64_t by_len = (max_kv + LRUN_K_ATTN_MIN_SPLIT - 1) / LRUN_K_ATTN_MIN_SPLIT;
    const int64_t by_grid = (LRUN_K_ATTN_TARGET_BLOCKS + jobs - 1) / jobs;
    const int64_t s = by_len < by_grid ? by_len : by_grid;
    return s < 1 ? 1 : s;
}

#ifdef __CUDACC__
// ---------------------------------------------------------------- shared by attention.cu and attention_quant.cu

/* 16 bytes of a cache row as E = 8 (f16) or 4 (f32) floats. */
template <int KV> static __device__ __forceinline__ void kv_unpack(uint4 w, float *f)
{
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (KV == LRUN_DTYPE_F16) {
            const float2 two = __half22float2(*(const __half2 *)&u[i]);
            f[2 * i] = two.x, f[2 * i + 1] = two.y;
        } else {
            f[i] = __uint_as_float(u[i]);
        }
    }
}

/* The end of a job: with one split the normalized output, else (m, l,
 * acc[head_dim]) into part for attn_merge. acc(j, d) gives the sum of dim
 * d = threadIdx.x + j * LRUN_K_ATTN_THREADS (j < 4: head_dim <= 512).
 * sink (gpt-oss; -INFINITY: none) is the head's sink logit, which joins the
 * softmax's max and denominator and weighs no value: with one split the
 * output is acc·e^(m-M) / (l·e^(m-M) + e^(sink-M)), M = max(m, sink); with
 * several, attn_merge adds it. */
template <typename Acc>
static __device__ __forceinline__ void job_finish(int64_t job, int64_t th, int64_t head_dim, int64_t n_split, float m,
                                                  float l, Acc acc, float *__restrict__ out, float *__restrict__ part,
                                                  float sink = -INFINITY)
{
    const int tid = threadIdx.x;
    float inv = l > 0.0f ? 1.0f / l : 0.0f; /* n_kv 0: zeros */
    if (sink != -INFINITY && l > 0.0f) {
        const float mx = fmaxf(m, sink), wm = expf(m - mx);
        inv = wm / (l * wm + expf(sink - mx));
    }
    float *pp = part + job * (head_dim + 2);
    if (n_split > 1 && tid == 0) pp[0] = m, pp[1] = l;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int64_t d = tid + (int64_t)j * LRUN_K_ATTN_THREADS;
        if (d >= head_dim) break;
        if (n_split == 1) out[th * head_dim + d] = acc(j, d) * inv;
        else pp[2 + d] = acc(j, d);
    }
}

/* One step of a lane group's online softmax over U positions t .. t+U-1 (those
 * below t1 count): sc holds each lane's part of the U dot products, summed
 * here over the group's lanes; v_of(u, f) unpacks position u's part of its
 * value row into f[E]. m, l and acc carry the group's softmax from step to
 * step. Both vector jobs (attention.cu, attention_quant.cu) run it, so they
 * sum in the same order. */
template <int U, int E, bool CAP = false, typename ValueOf>
static __device__ __forceinline__ void attn_group_step(float (&sc)[U], int64_t t, int64_t t1, int lanes, float &m,
                                                       float &l, float (&acc)[E], ValueOf v_of, float cap = 0.0f)
{
    for (int o = lanes >> 1; o > 0; o >>= 1)
#pragma unroll
        for (int u = 0; u < U; u++) sc[u] += __shfl_xor_sync(0xffffffffu, sc[u], o);
    if (CAP) /* gemma2's soft-cap of the summed, scaled scores (compiled out without one) */
#pragma unroll
        for (int u = 0; u < U; u++) sc[u] = tanhf(sc[u] * (1.0f / cap)) * cap;
    float mx = m;
#pragma unroll
    for (int u = 0; u < U; u++) {
        sc[u] = t + u < t1 ? sc[u] : -INFINITY;
        mx = fmaxf(mx, sc[u]);
    }
    if (mx == -INFINITY) return; /* nothing of this group's here yet */
    const float corr = m == -INFINITY ? 0.0f : expf(m - mx); /* rescales what earlier steps summed */
    l *= corr;
#pragma unroll
    for (int i = 0; i < E; i++) acc[i] *= corr;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const float e = t + u < t1 ? expf(sc[u] - mx) : 0.0f;
        float f[E];
        v_of(u, f);
        l += e;
#pragma unroll
        for (int i = 0; i < E; i++) acc[i] = fmaf(e, f[i], acc[i]);
    }
    m = mx;
}

/* The end of a vector job (job_vec, attention_quant.cu): each group of
 * `lanes` lanes kept its own online softmax (m, l, acc[E] for dims sub·E..);
 * the groups are merged in shared memory, in group order, and the job
 * finished. sh holds LRUN_K_ATTN_VEC_SMEM(E) floats. */
template <int E>
static __device__ __forceinline__ void attn_groups_finish(int64_t job, int64_t th, int64_t head_dim, int64_t n_split,
                                                          int lanes, float m, float l, const float *acc,
                                                          float *__restrict__ out, float *__restrict__ part, float *sh,
                                                          float sink = -INFINITY)
{
    const int tid = threadIdx.x, g = tid / lanes, sub = tid % lanes, ng = LRUN_K_ATTN_THREADS / lanes;
    float *gm = sh, *gl = gm + LRUN_K_ATTN_THREADS, *gw = gl + LRUN_K_ATTN_THREADS; /* per group m, l, weight */
    float *gacc = gw + LRUN_K_ATTN_THREADS;                                         /* (ng, head_dim) */
    if (sub == 0) gm[g] = m, gl[g] = l;
#pragma unroll
    for (int i = 0; i < E; i++) gacc[g * head_dim + sub * E + i] = acc[i];
    __syncthreads();
    float mall = -INFINITY;
    for (int k = 0; k < ng; k++)
        if (gl[k] > 0.0f) mall = fmaxf(mall, gm[k]);
    if (tid < ng) gw[tid] = gl[tid] > 0.0f ? expf(gm[tid] - mall) : 0.0f;
    __syncthreads();
    float lall = 0.0f;
    for (int k = 0; k < ng; k++) lall = fmaf(gl[k], gw[k], lall);
    job_finish(job, th, head_dim, n_split, mall, lall,
               [&](int, int64_t d) {
                   float a = 0.0f;
                   for (int k = 0; k < ng; k++) a = fmaf(gacc[k * head_dim + d], gw[k], a);
                   return a;
               },
               out, part, sink);
}


/* The merge of a launch's splits (attention.cu): out from part's (m, l, acc);
 * sinks (n_head, or NULL) each head's sink logit in the max and denominator. */
lrun_status lrun_k_attn_merge_launch(const float *part, int64_t n_th, int64_t n_split, int64_t head_dim, float *out,
                                     cudaStream_t st, const char *op, const float *sinks = NULL, int64_t n_head = 1);
#endif

#endif
