/* cpu_ops.h — the element-wise and attention ops of the CPU forward pass.
 *
 * All compute is f32, in llama.cpp's x86 order of operations, to the bit
 * (docs/numerics.md). The KV cache holds f16 (llama.cpp's default) or f32,
 * so the attention reads either and the cache writer converts. Each op
 * states its math; shapes are (rows, cols) with cols contiguous. */
#ifndef LRUN_CPU_OPS_H
#define LRUN_CPU_OPS_H

#include "lrun.h"
#include "core/tensor.h"
#include "core/threadpool.h"

/* ---------------------------------------------------------------- f16 rows */

/* dst (n) = src (n) rounded to IEEE half (round to nearest even). */
void lrun_cpu_f16_from_f32(uint16_t *dst, const float *src, int64_t n);
/* dst (n) = src (n) widened to f32. */
void lrun_cpu_f32_from_f16(float *dst, const uint16_t *src, int64_t n);

/* ---------------------------------------------------------------- norms and activations */

/* y (n) = x / sqrt(mean(x²) + eps) * w; y may alias x. As ggml: the f32
 * squares summed in order in double, then y = (x * scale) * w. */
void lrun_cpu_rms_norm(float *y, const float *x, const float *w, int64_t n, float eps);
/* g (n) = silu(g) * u, silu(a) = a / (1 + e^-a), as ggml_vec_swiglu_f32:
 * e^-a by ggml_v_expf for each whole group of 8, by expf for the rest. */
void lrun_cpu_swiglu(float *g, const float *u, int64_t n);
/* g (n) = gelu(g) * u, GELU's tanh approximation through ggml's f16 table
 * (GGML_GELU_FP16, ggml_vec_geglu_f32): g rounded to f16, its GELU in f32
 * rounded to f16; 0 at g <= -10, g·u at g >= 10. */
void lrun_cpu_geglu(float *g, const float *u, int64_t n);
/* x (n) = cap·tanh(x/cap), as ggml: x·(1/cap), tanhf, ·cap. */
void lrun_cpu_softcap(float *x, int64_t n, float cap);
/* x (n) = e^(x - max) / sum e^(x - max), in place, as ggml_vec_soft_max_f32
 * and its caller: ggml_v_expf per group of 8, each group's sum added into a
 * double, expf for the rest; then x times (float)(1/sum). -inf gives 0. */
void lrun_cpu_softmax(float *x, int64_t n);
/* The same with a sink logit in the denominator only, as ggml_soft_max_ext
 * with sinks (gpt-oss's attention): max = max(x, sink), and the double sum
 * gains expf(sink - max) after the row's. */
void lrun_cpu_softmax_sink(float *x, int64_t n, float sink);
/* y (n) += x (n). */
void lrun_cpu_add(float *y, const float *x, int64_t n);
/* y (n) *= s, as ggml_scale (f32 products). */
void lrun_cpu_scale(float *y, float s, int64_t n);

/* ---------------------------------------------------------------- embedding */

/* dst (ne[0]) = row `row` of a 2-D tensor of any supported dtype, dequantized.
 * LRUN_E_ARG when row is out of range or the tensor has no host bytes. */
lrun_status lrun_cpu_embedding_row(const struct lrun_tensor *table, int64_t row, float *dst);

/* ---------------------------------------------------------------- RoPE */

/* Rotary position embedding of the first n_rot dims of each head.
 * theta_i = pos * freq_scale * base^(-2i/n_rot) / freq_factor[i], i < n_rot/2,
 * computed as ggml does in f32: theta_0 = pos, theta_{i+1} = theta_i ·
 * powf(base, -2/n_rot), and cosf/sinf. ADJACENT rotates the pairs (2i, 2i+1)
 * (GGUF llama); HALF rotates (i, i + n_rot/2) (HF Llama, NeoX); both as
 * (fmaf(a, c, -(b·s)), fmaf(a, s, b·c)). */
typedef struct lrun_rope {
    int64_t n_rot;               /* rotated dims per head, even */
    lrun_rope_style style;
    double freq_base;
    double freq_scale;           /* 1, or 1/factor of linear scaling */
    const float *freq_factors;   /* (n_rot/2) divisors of theta, or NULL */
    /* YaRN (gpt-oss; ggml's rope_yarn) when yarn_ext != 0: pair i's angle mixes theta·freq_scale and
     * theta by a ramp between the correction dims, and cos/sin are scaled (lrun_rope_yarn_init) */
    float yarn_ext;              /* ext_factor: 1 with YaRN, 0 without */
    float yarn_corr[2];          /* the low and high correction dims */
    float yarn_attn_factor;      /* llama.cpp's attn_factor, which the ramp's 1 + 0.1 ln(1/freq_scale) multiplies */
} lrun_rope;

/* Sets rope's YaRN fields as llama.cpp does for rope.scaling.type yarn:
 * factor = 1/freq_scale, n_ctx_orig the original context, beta_fast 32 and
 * beta_slow 1 (ggml_rope_yarn_corr_dims), attn_factor = get_mscale(factor)
 * / (1 + 0.1 ln factor) (llama_context's cancellation, so cos and sin end up
 * times 0.1 ln factor + 1 once). */
void lrun_rope_yarn_init(lrun_rope *rope, int64_t n_ctx_orig);
/* The same with the ramp's β_fast and β_slow given, and truncate 0 leaving
 * the correction dims unrounded (transformers' yarn with truncate=false, as
 * gpt-oss's HF config sets it; llama.cpp always floors the low dim and
 * ceils the high one, truncate 1). lrun_rope_yarn_init is (32, 1, 1). */
void lrun_rope_yarn_init_ex(lrun_rope *rope, int64_t n_ctx_orig, double beta_fast, double beta_slow, int truncate);

/* cs (n_rot/2, 2) = (cos theta_i, sin theta_i) at position pos. */
void lrun_cpu_rope_cos_sin(const lrun_rope *rope, int64_t pos, float *cs);
/* x (n_head, head_dim) rotated in place with the table of lrun_cpu_rope_cos_sin. */
void lrun_cpu_rope_apply(const lrun_rope *rope, const float *cs, float *x, int64_t n_head, int64_t head_dim);

/* ---------------------------------------------------------------- attention */

/* One query head against n_pos cached positions (causal by construction: the
 * caller passes only the positions the query may see):
 *   out (head_dim) = softmax(scale * K q) · V
 * in llama.cpp's order (no flash attention; docs/numerics.md §7): each score
 * a ggml_vec_dot_f32 times scale, the softmax of lrun_cpu_softmax over the
 * scores padded with -inf to a multiple of 8, and each out[d] a dot over the
 * positions padded with zeros to a multiple of 32: ggml_vec_dot_f32's 4x8
 * accumulators when chain8 is 0 (llama.cpp's order for a one-token step),
 * tinyBLAS's single 8-lane chain when chain8 is 1 (its order for steps of ≥ 2
 * tokens). Keys and values are kv_dtype (LRUN_DTYPE_F32 or LRUN_DTYPE_F16):
 * key t is k + t*k_stride; values are transposed, value dim d of position t
 * is v[d*v_stride + t], read up to position n_pos rounded up to 32: those
 * past n_pos must be finite (the KV cache keeps them zero, as llama.cpp's
 * cleared cells). With an f16 cache, as llama.cpp, q and p are rounded to f16
 * for their dots, and when chain8 is 1 the scores take tinyBLAS's chain too.
 * scores holds n_pos rounded up to 32, plus head_dim, floats of scratch. */
void lrun_cpu_attention_head(float *out, const float *q, const void *k, int64_t k_stride, const void *v,
                             int64_t v_stride, lrun_dtype kv_dtype, int64_t n_pos, int64_t head_dim, float scale,
                             int chain8, float *scores);

/* A batch of query tokens, each against its own sequence's cache. */
typedef struct lrun_attention_batch {
    int64_t n_tok, n_head, n_head_kv, head_dim;
    float scale;
    lrun_dtype kv_dtype;       /* LRUN_DTYPE_F32 or LRUN_DTYPE_F16 */
    int pv_chain8;             /* 1: the p·V order of a step of ≥ 2 tokens; 0: of a one-token step */
    const float *q;            /* (n_tok, n_head, head_dim) */
    float *out;                /* (n_tok, n_head, head_dim) */
    const void *const *k;      /* (n_tok) → that token's keys (cap, n_head_kv, head_dim) */
    const void *const *v;      /* (n_tok) → that token's values, transposed (n_head_kv, head_dim, cap) */
    const int64_t *v_stride;   /* (n_tok) that token's cap: elements between value dims */
    const int64_t *n_pos;      /* (n_tok) positions the token sees (its own included) */
    float *scores;             /* (n_threads, scores_stride) scratch */
    int64_t scores_stride;     /* >= max n_pos rounded up to 32, plus head_dim */
    /* A paged cache, when blocks is not NULL (k, v and v_stride are then
     * unused): token i's positions [b·block_pos, (b+1)·block_pos) are in the
     * block blocks[i][b], this layer's keys at +k_off bytes as
     * (block_pos, n_head_kv, head_dim), values at +v_off as
     * (n_head_kv, head_dim, block_pos). block_pos is a multiple of 32; the
     * sums run across blocks in the contiguous order, to the same bits. */
    const void *const *const *blocks; /* (n_tok) → that token's block table */
    int64_t block_pos;
    size_t k_off, v_off;
    int64_t n_swa;             /* a sliding window: each token sees only its last n_swa positions; 0: all */
    float softcap;             /* scores s (scaled) become cap·tanh(s/cap) before the softmax (gemma2); 0: none */
    const float *sinks;        /* (n_head) a learned logit per head, in the softmax's denominator only
                                * (gpt-oss; lrun_cpu_softmax_sink); NULL: none */
} lrun_attention_batch;

/* Runs every (token, head) of the batch, spread over the pool's threads.
 * GQA: query head h reads KV head h / (n_head / n_head_kv). Each output is
 * computed by one thread in a fixed order: the thread count changes nothing. */
void lrun_cpu_attention(lrun_threadpool *pool, const lrun_attention_batch *batch);

/* Stores one position's n keys or values into a cache of dtype (f32 or
 * f16): dst[i*stride] = src[i] (stride 1 for keys, the cap for the
 * transposed values). */
void lrun_cpu_kv_store(void *dst, lrun_dtype dtype, int64_t stride, const float *src, int64_t n);

/* ---------------------------------------------------------------- fused matrix-vector products */

/* One product of a fused decode step: y (n) = W x, W n rows of k elements. */
typedef struct lrun_matvec {
    lrun_dtype dtype;    /* of W */
    const void *w;       /* n rows, row_bytes apart */
    size_t row_bytes;
    int64_t n, k;
    const float *x;      /* (k) */
    float *y;            /* (n) */
} lrun_matvec;

#define LRUN_MATVEC_MAX_PARTS 4

/* Bytes of work lrun_cpu_matvec_multi needs for these parts. */
size_t lrun_cpu_matvec_work_bytes(const lrun_matvec *parts, int n_parts);
/* Runs up to LRUN_MATVEC_MAX_PARTS products (q, k and v; gate and up) in one
 * parallel region: one dispatch and one tail wait instead of one per matrix,
 * which is what decode (one token) pays for. x is converted to the dot
 * partner type once per distinct (x, partner). Every y element comes from the
 * same kernel as lrun_cpu_matmul with m = 1, so the results are identical. */
void lrun_cpu_matvec_multi(lrun_threadpool *pool, const lrun_matvec *parts, int n_parts, void *work);

/* ---------------------------------------------------------------- parallel rows */

/* Calls fn(ctx, first, last) over [0, n) split into contiguous ranges, one per
 * thread; runs inline when n < min_parallel (dispatch would cost more). */
typedef void (*lrun_range_fn)(void *ctx, int64_t first, int64_t last);
void lrun_cpu_parallel_for(lrun_threadpool *pool, int64_t n, int64_t min_parallel, lrun_range_fn fn, void *ctx);

#endif
