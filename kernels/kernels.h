/* kernels.h — the CUDA kernels of lrun, as C-callable launchers.
 *
 * One op per kernels/<op>.cu + <op>.cuh pair; this header is the catalogue
 * the C core (runtime/cuda/engine_cuda.c) calls. Every launcher:
 *   - takes its cudaStream_t as `void *stream` (never the legacy default stream);
 *   - checks the launch (cudaGetLastError) and returns LRUN_E_DEVICE with the
 *     op name and the CUDA error string through lrun_fail;
 *   - computes sizes and offsets in 64-bit (int64_t / size_t) everywhere: a
 *     real advisory against vLLM was a GPU heap overflow from truncated dims;
 *   - never allocates: scratch comes from the caller (the device pool).
 * Matrices are row-major; a weight W of GGUF shape {k, n} is n rows of k
 * elements, each row_bytes apart, in its storage dtype (blocks for quantized
 * types, exactly as in the GGUF file).
 *
 * Only built when CUDA=1 (LRUN_WITH_CUDA); the CPU twins of every op live in
 * runtime/quant/quant.c, runtime/cpu/cpu_matmul.c and runtime/cpu/cpu_ops.c, and
 * tests/c/test_kernels_gpu.c checks each kernel against its twin. */
#ifndef LRUN_KERNELS_H
#define LRUN_KERNELS_H

#include "lrun.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- launch mode

/* Programmatic dependent launch (sm_90 and later only) for the launches this
 * thread makes from now on: on (1) or off (0, the default). The decode-path
 * kernels (RMSNorm, GEMV, RoPE+cache store, attention) then start while the
 * kernel before them drains and wait for its results inside (common.cuh).
 * Results are the same bits either way. The CUDA engine sets it per step
 * (LRUN_CUDA_PDL=0 turns it off). */
void lrun_k_set_pdl(int on);
int lrun_k_pdl_enabled(void);
/* 1 when CUDA device cuda_ordinal can launch programmatic dependents (sm_90+). */
int lrun_k_pdl_supported(int cuda_ordinal);

// ---------------------------------------------------------------- weights

/* dst (n_rows, k) = the rows of W converted to f16 (dst_dtype F16), bf16
 * (BF16) or f32 (F32). For prefill GEMMs: dequantize a weight into a slot,
 * then cuBLAS. */
lrun_status lrun_k_dequantize(lrun_dtype w_dtype, const void *w, size_t row_bytes, int64_t n_rows, int64_t k,
                              lrun_dtype dst_dtype, void *dst, void *stream);

/* y (m, n) = x (m, k) · Wᵀ for small m (1 ≤ m ≤ 8: batch-1 decode and small
 * batches), reading each weight byte once: dequantization fused into the
 * product, f32 accumulation. x and y are f32 on the device. */
lrun_status lrun_k_gemv(lrun_dtype w_dtype, const void *w, size_t row_bytes, int64_t n, int64_t k,
                        const float *x, int64_t m, float *y, void *stream);

/* Several products of one x in one launch (Q, K and V; gate and up), with
 * an epilogue: part p is y_p (m, n_p) = x (m, k) · W_pᵀ, all W_p of w_dtype
 * and k wide. mode STORE writes y_p; ADD adds into y_p (a residual stream);
 * SWIGLU takes exactly 2 parts (gate, up) of equal n and writes
 * silu(x·W_0ᵀ) · (x·W_1ᵀ) into parts[0].y (parts[1].y is unused). No y may
 * overlap x. 1 ≤ m ≤ 8, as lrun_k_gemv. GEGLU and GEGLU_F32 are SWIGLU's
launches with gelu(x·W_0ᵀ) · (x·W_1ᵀ) as lrun_k_geglu computes it. */
#define LRUN_K_GEMV_MAX_PARTS 3
typedef struct lrun_k_gemv_part {
    const void *w;    /* (n, k) in w_dtype, rows row_bytes apart */
    size_t row_bytes;
    int64_t n;
    float *y;         /* (m, n) f32 */
} lrun_k_gemv_part;
typedef enum {
    LRUN_K_GEMV_STORE = 0,
    LRUN_K_GEMV_ADD = 1,
    LRUN_K_GEMV_SWIGLU = 2,
    LRUN_K_GEMV_GEGLU = 3,     /* as SWIGLU with gelu (lrun_k_geglu's f16 table: a GGUF gemma) */
    LRUN_K_GEMV_GEGLU_F32 = 4, /* and with lrun_k_geglu's f32 GELU (an HF gemma) */
} lrun_k_gemv_mode;
/* OR'd into a mode: m = 1 products of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL
 * and IQ4_XS weights take the dp4a kernel (gemv_dp4a.cu): x quantized to
 * q8 blocks of 32 in the kernel, integer dots, so y is the product with the
 * q8-rounded x (llama.cpp's numerics), not with x. Other types and m > 1
 * ignore it. Fast numerics only (the engine's LRUN_CUDA_GEMV_DP4A=1). */
#define LRUN_K_GEMV_DP4A 0x100
/* OR'd into a mode: m = 1 products of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and
 * IQ4_NL weights whose rows start on 16-byte boundaries take the staged
 * kernel (gemv_stage.cu: 16-byte coalesced copies into shared memory), with
 * the dp4a kernel's numerics (x rounded to q8); weights it does not take go
 * on to the route the other flags choose. Fast numerics only (the engine's
 * LRUN_CUDA_GEMV_STAGE, which sets LRUN_K_GEMV_DP4A with it). */
#define LRUN_K_GEMV_STAGE 0x200
/* OR'd into a mode: the weights are Q8_0 or Q4_0 rows in the split layout
 * (runtime/quant/quant_split.h, made on the device by lrun_k_split_rows),
 * which only gemv_split.cu reads: x quantized to q8 in the kernel, integer
 * dots (the dp4a kernel's numerics; fast numerics only); m > 1 runs it once
 * per row of x. LRUN_E_ARG when the weights do not qualify (another dtype,
 * k not a multiple of 32 or above LRUN_K_SPLIT_MAX_K, rows off 16-byte
 * boundaries). The engine's LRUN_CUDA_GEMV_SPLIT=1. */
#define LRUN_K_GEMV_SPLIT 0x400
/* The largest k of a split GEMV: x's k int8 and k/32 f32 scales in 48 KiB
 * of shared memory. */
#define LRUN_K_SPLIT_MAX_K 43680
lrun_status lrun_k_gemv_multi(lrun_dtype w_dtype, const lrun_k_gemv_part *parts, int n_parts, int64_t k,
                              const float *x, int64_t m, int mode, void *stream);

/* lrun_k_gemv_multi of xn = rms_norm(x)·norm_w (as lrun_k_rms_norm: norm_w
 * (k), eps) instead of x, the norm folded into the product (decode: no norm
 * launch, xn never written): each x value is multiplied by its norm weight
 * as it is loaded, the kernel sums the squares of the x it loads, and each
 * product is scaled by s = 1/sqrt(mean(x²) + eps) before the mode's
 * epilogue. y differs from lrun_k_rms_norm then lrun_k_gemv_multi by f32
 * rounding (s·Σw·(x·g) against Σw·((x·s)·g), and Σx² summed in another
 * order), not bit for bit. The unit or plain kernel of gemv.cu, or at
 * m = 1 the K-quant slice kernel (gemv_kq.cu, default shape): LRUN_E_ARG
 * with the DP4A, STAGE or SPLIT flag (lrun_k_gemv_norm_takes says when
 * plain flags would have chosen the same kernel). */
lrun_status lrun_k_gemv_norm_multi(lrun_dtype w_dtype, const lrun_k_gemv_part *parts, int n_parts, int64_t k,
                                   const float *x, const float *norm_w, float eps, int64_t m, int mode, void *stream);
/* 1 when lrun_k_gemv_multi with this dtype, m and mode (flags included)
 * runs a kernel lrun_k_gemv_norm_multi folds the norm into, so folding
 * keeps the product's kernel: not the split kernel, nor at m = 1 the dp4a
 * or staged kernels (any DP4A or STAGE flag). */
int lrun_k_gemv_norm_takes(lrun_dtype w_dtype, int64_t m, int mode);

/* y_p (m, n_p) = x (m, k) · W_pᵀ for Q8_0/Q4_0 weights with x already
 * quantized by lrun_k_quantize_q8 (partner Q8_0): xq (m, k) int8 on a
 * 16-byte boundary, xd (m, k/32) its scales. One quantized x serves every
 * GEMV of that input (Q, K and V; gate and up), so y is the product with
 * the q8-rounded x, the same bits as LRUN_K_GEMV_SPLIT's kernel gives for x
 * (fast numerics only; kernels/gemv_split_q8x.cu). split 1: rows in the
 * split layout (runtime/quant/quant_split.h) on 16-byte boundaries; 0:
 * GGUF's blocks, the same bits from slower loads. parts and mode as
 * lrun_k_gemv_multi (no flags), k a multiple of 32, 1 <= m <= 8 (the
 * weights read once for all m rows, each row of y the bits of an m = 1
 * call); LRUN_E_ARG naming what does not qualify. The engine's default for
 * Q8_0/Q4_0 decode (engine_cuda_split.h). */
lrun_status lrun_k_gemv_q8x(lrun_dtype w_dtype, const lrun_k_gemv_part *parts, int n_parts, int64_t k,
                            const int8_t *xq, const float *xd, int64_t m, int mode, int split, void *stream);

/* Q8_0/Q4_0 rows (n of k elements, row_bytes apart, on the device) from
 * GGUF's blocks to the split layout of runtime/quant/quant_split.h in place
 * (join 0), or back (join 1), bit for bit as lrun_quant_split_rows and
 * lrun_quant_join_rows; the stride's padding is not touched. A row's bytes
 * pass through shared memory: LRUN_E_UNSUPPORTED above 48 KiB a row. */
lrun_status lrun_k_split_rows(lrun_dtype t, void *w, size_t row_bytes, int64_t n, int64_t k, int join, void *stream);
/* dst (n, k) f16 = split rows dequantized: the values lrun_k_dequantize
 * gives for the same rows in GGUF's layout (the prefill slot of a split
 * weight; lrun_k_gemm then takes dst as an f16 weight in place). w,
 * row_bytes and dst even (LRUN_E_ARG otherwise); 16-byte loads and stores
 * when all three are 16-byte aligned (kernels/dequant_split_lane.h). */
lrun_status lrun_k_dequantize_split(lrun_dtype t, const void *w, size_t row_bytes, int64_t n, int64_t k, void *dst,
                                    void *stream);

/* Bench only: the m = 1 GEMV of bf16, f16, q8_0, q4_0, q4_1, q4_K, q5_K and
 * q6_K weights takes shape variant v (1..8) from then on, 0 the tuned default; returns the
 * variant's description, NULL past the last. Not thread-safe. */
const char *lrun_k_gemv_tune(int variant);

/* Bench only: the staged GEMV (LRUN_K_GEMV_STAGE) keeps ns stages in its
 * ring (2, 3, 4, 6 or 8; 0 the default, 4) from then on; returns the
 * depth's description, NULL for another ns. Not thread-safe. */
const char *lrun_k_gemv_stage_tune(int ns);

/* y (m, n) = x (m, k) · Wᵀ for any m through cuBLAS (cublasGemmEx, f16 or
 * bf16 inputs, f32 accumulation): W is dequantized into w_slot (n*k
 * elements of slot_dtype, F16 or BF16) unless it already is that dtype; x is
 * converted into x_slot (m*k elements of slot_dtype). cublas is a
 * cublasHandle_t bound to stream. */
lrun_status lrun_k_gemm(void *cublas, lrun_dtype w_dtype, const void *w, size_t row_bytes, int64_t n, int64_t k,
                        const float *x, int64_t m, float *y, lrun_dtype slot_dtype, void *w_slot, void *x_slot,
                        void *stream);

/* out (n_tok, n_embd) f32 = rows tokens[i] of the embedding table (dequantized). */
lrun_status lrun_k_embed(lrun_dtype dtype, const void *table, size_t row_bytes, int64_t n_embd,
                         const int32_t *tokens, int64_t n_tok, float *out, void *stream);

// ---------------------------------------------------------------- elementwise and norms

/* y (n_rows, n) = x / sqrt(mean(x²) + eps) * w; y may alias x. */
lrun_status lrun_k_rms_norm(const float *x, const float *w, float *y, int64_t n_rows, int64_t n, float eps,
                            void *stream);

/* Rotates the first n_rot dims of each head of x (n_tok, n_head, head_dim) in
 * place at positions pos (n_tok). style: lrun_rope_style (ADJACENT pairs
 * (2i, 2i+1) or HALF (i, i+n_rot/2)); theta_i = pos * freq_scale * base^(-2i/n_rot),
 * divided by freq_factors[i] when that is not NULL. */
lrun_status lrun_k_rope(float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                        int64_t n_rot, float base, float freq_scale, const float *freq_factors, int style,
                        void *stream);

/* out (n) = silu(gate) * up. */
lrun_status lrun_k_swiglu(const float *gate, const float *up, float *out, int64_t n, void *stream);

/* out (n) = swiglu_oai(gate, up) (gpt-oss's experts): min(g, 7) ·
 * sigmoid(1.702 · min(g, 7)) · (clamp(u, -7, 7) + 1), as the CPU's moe_cpu.c;
 * out may alias gate or up. */
lrun_status lrun_k_swiglu_oai(const float *gate, const float *up, float *out, int64_t n, void *stream);

/* out (n) = gelu(gate) * up, GELU's tanh approximation: f16_table 1 as
 * lrun_cpu_geglu (ggml's f16 table: the input and the GELU rounded to f16, a
 * GGUF gemma), 0 in f32 as transformers (an HF gemma); out may alias gate or
 * up (gemma2/3). */
lrun_status lrun_k_geglu(const float *gate, const float *up, float *out, int64_t n, int f16_table, void *stream);

/* x (n) *= s (gemma's embedding scale). */
lrun_status lrun_k_scale(float *x, float s, int64_t n, void *stream);

/* x (n) = tanh(x / cap) * cap, cap > 0 (gemma2's final logit soft-cap). */
lrun_status lrun_k_softcap(float *x, int64_t n, float cap, void *stream);

/* y (n) += x (n). */
lrun_status lrun_k_add(float *y, const float *x, int64_t n, void *stream);

/* dst (n, device) = src (n, pinned host memory, read by the kernel through
 * its mapping, not by a copy engine: copy_mapped.cu says why). */
lrun_status lrun_k_copy_mapped(float *dst, const float *src, int64_t n, void *stream);

/* y (n_rows, n) += bias (n) broadcast over rows. */
lrun_status lrun_k_add_bias(float *y, const float *bias, int64_t n_rows, int64_t n, void *stream);

// ---------------------------------------------------------------- KV cache and attention

/* lrun_k_rope of q (n_tok, n_head, head_dim) and of k (n_tok, n_head_kv,
 * head_dim), then lrun_k_kv_store of the rotated k and of v: one launch,
 * the same bits as the three calls. head_dim must be even. */
lrun_status lrun_k_rope_kv_store(float *q, float *k, const float *v, const int32_t *pos, int64_t n_tok,
                                 int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot, float base,
                                 float freq_scale, const float *freq_factors, int style, lrun_dtype kv_dtype,
                                 void *cache_k, void *cache_v, const int64_t *row_offset, void *stream);

/* YaRN (gpt-oss; lrun_rope_yarn_init on the CPU): pair i's angle is
 * theta·freq_scale·(1 - r) + theta·r with the ramp r = 1 - clamp((i - low) /
 * max(0.001, high - low), 0, 1) and theta the unscaled angle, and cos and sin
 * are times mscale (the CPU's yarn_attn_factor · (1 + 0.1 ln(1/freq_scale))).
 * mscale 0: no YaRN (lrun_k_rope_kv_store). */
typedef struct lrun_k_yarn {
    float low, high;  /* the correction dims (lrun_rope.yarn_corr) */
    float mscale;     /* the factor of cos and sin; 0: off */
} lrun_k_yarn;
lrun_status lrun_k_rope_kv_store_yarn(float *q, float *k, const float *v, const int32_t *pos, int64_t n_tok,
                                      int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot, float base,
                                      float freq_scale, const float *freq_factors, int style, const lrun_k_yarn *yarn,
                                      lrun_dtype kv_dtype, void *cache_k, void *cache_v, const int64_t *row_offset,
                                      void *stream);

/* Writes k and v rows (n_tok, kv_dim) f32 into the caches at the given
 * element offsets: cache_k[row_offset[i] + j] = k[i][j] (converted to
 * kv_dtype F16 or F32). row_offset (n_tok) is in elements. */
lrun_status lrun_k_kv_store(lrun_dtype kv_dtype, void *cache_k, void *cache_v, const int64_t *row_offset,
                            const float *k, const float *v, int64_t n_tok, int64_t kv_dim, void *stream);

/* Attention of n_tok query tokens, each against its own sequence's cache.
 * q (n_tok, n_head, head_dim) f32; token i attends to positions [0, n_kv[i])
 * of the cache whose keys start at k_base[i] and values at v_base[i]
 * (element offsets into cache_k / cache_v, layout (pos, n_head_kv, head_dim)).
 * GQA: query head h uses KV head h / (n_head / n_head_kv). out (n_tok,
 * n_head, head_dim) f32. scale = 1/sqrt(head_dim). work: split-KV partials,
 * lrun_k_attention_work_bytes bytes. Decode (one token per sequence) splits
 * the KV length over blocks (flash-decoding); prefill tiles queries. */
size_t lrun_k_attention_work_bytes(int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t max_kv);
lrun_status lrun_k_attention(lrun_dtype kv_dtype, const float *q, const void *cache_k, const void *cache_v,
                             const int64_t *k_base, const int64_t *v_base, const int32_t *n_kv, int64_t n_tok,
                             int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv, float scale,
                             float *out, void *work, void *stream);
/* The same with a sliding window: token i attends to its last n_swa
 * positions only, [n_kv[i] - n_swa, n_kv[i]) (Mistral); n_swa 0: all. */
lrun_status lrun_k_attention_window(lrun_dtype kv_dtype, const float *q, const void *cache_k, const void *cache_v,
                                    const int64_t *k_base, const int64_t *v_base, const int32_t *n_kv, int64_t n_tok,
                                    int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv, float scale,
                                    int64_t n_swa, float *out, void *work, void *stream);

/* The same with the scaled scores s soft-capped first, s → cap·tanh(s/cap)
 * (gemma2; lrun_attention_batch.softcap), before the window; softcap 0:
 * none, exactly lrun_k_attention_window's kernels. */
lrun_status lrun_k_attention_softcap(lrun_dtype kv_dtype, const float *q, const void *cache_k, const void *cache_v,
                                     const int64_t *k_base, const int64_t *v_base, const int32_t *n_kv, int64_t n_tok,
                                     int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv, float scale,
                                     int64_t n_swa, float softcap, float *out, void *work, void *stream);

/* The same with each head's sink logit (gpt-oss): sinks (n_head) f32 on the
 * device; the sink of head h joins the softmax's max and denominator of
 * every token's head h and weighs no value (lrun_cpu_softmax_sink). n_swa as
 * lrun_k_attention_window (0: all positions). */
lrun_status lrun_k_attention_sinks(lrun_dtype kv_dtype, const float *q, const void *cache_k, const void *cache_v,
                                   const int64_t *k_base, const int64_t *v_base, const int32_t *n_kv, int64_t n_tok,
                                   int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv, float scale,
                                   int64_t n_swa, const float *sinks, float *out, void *work, void *stream);

/* Prefill attention on tensor cores (attention_flash.cu): the contract of
 * lrun_k_attention_window (q, caches, k_base, v_base, n_kv, GQA, n_swa 0:
 * all positions, out) for an f16 cache and head_dim 64 or 128
 * (lrun_k_attention_flash_supported), without work. q·scale and the softmax
 * weights are rounded to f16 for the MMAs, so it differs from
 * lrun_k_attention by up to the bound derived in docs/cuda-kernels.md. Built
 * for chunks of many tokens per sequence: the engine picks it for prefill
 * (engine_cuda_forward.c, LRUN_CUDA_FATTN). */
int lrun_k_attention_flash_supported(lrun_dtype kv_dtype, int64_t head_dim);
lrun_status lrun_k_attention_flash(const float *q, const void *cache_k, const void *cache_v, const int64_t *k_base,
                                   const int64_t *v_base, const int32_t *n_kv, int64_t n_tok, int64_t n_head,
                                   int64_t n_head_kv, int64_t head_dim, int64_t max_kv, float scale, int64_t n_swa,
                                   float *out, void *stream);
/* Warps per block of the flash kernel from now on, 4 (the default) or 8
 * (other values leave it): for measurements. Returns the previous value. */
#define LRUN_K_FATTN_DEFAULT_WARPS 4
int lrun_k_attention_flash_tune(int warps);

// ---------------------------------------------------------------- staged KV caches (kv_stage.cu)

/* Copies rows (n_tok, kv_dim) of kv_dtype from src to dst at the same element
 * offsets row_offset: the offloaded cache's write-back, dst being pinned host
 * memory the kernel writes through its mapping. */
lrun_status lrun_k_kv_copy_rows(lrun_dtype kv_dtype, void *dst_k, void *dst_v, const void *src_k, const void *src_v,
                                const int64_t *row_offset, int64_t n_tok, int64_t kv_dim, void *stream);

/* The quantized cache's layout (runtime/cuda/engine_cuda_kv.c). A position's
 * record, pos_bytes: kv_dim codes (bits 8) or kv_dim/2 bytes (bits 4, low
 * nibble first), then a (scale, min) float pair per group of `group`
 * elements: x ≈ min + q·scale, the record runtime/kv/kv_quant.c writes. Records
 * of sequence s at (s·cap + pos)·pos_bytes; exact recent positions in a ring
 * of ring_rows rows per sequence, row (s·ring_rows + pos % ring_rows). The
 * ring holds `residual` positions the cache keeps exact plus room for a
 * decode chunk's new rows, so that during one all positions attention reads
 * exact are in it at once (lrun_k_attention_quant). */
typedef struct lrun_k_kv_quant {
    int bits;
    int64_t group, kv_dim, cap, residual, ring_rows; /* ring_rows >= residual */
    size_t pos_bytes;
    lrun_dtype kv_dtype; /* of slots and ring: F16 or F32 */
} lrun_k_kv_quant;

/* The n_tok new rows of a slot (at row_offset; sequence s = kv_base /
 * (cap·kv_dim), position pos) into codes, and into the ring those with
 * pos + ring_rows >= chunk_end[s] (the position after s's last in the chunk:
 * earlier ones would share a ring row with a later one). */
lrun_status lrun_k_kv_quant_store(const lrun_k_kv_quant *qz, const void *slot_k, const void *slot_v,
                                  const int64_t *row_offset, const int64_t *kv_base, const int32_t *pos,
                                  const int32_t *chunk_end, int64_t n_tok, void *codes_k, void *codes_v, void *ring_k, void *ring_v,
                                  void *stream);
/* Fills slot rows [0, seq_len[s]) of each of n_seq sequences (s·cap·kv_dim
 * apart): below seq_qlo[s] dequantized from codes, from there the ring's
 * exact bits. max_len bounds seq_len. */
lrun_status lrun_k_kv_dequant_fill(const lrun_k_kv_quant *qz, void *slot_k, void *slot_v, const void *codes_k,
                                   const void *codes_v, const void *ring_k, const void *ring_v, const int32_t *seq_len,
                                   const int32_t *seq_qlo, int64_t n_seq, int64_t max_len, void *stream);

/* Decode attention straight from a quantized cache (attention_quant.cu):
 * as lrun_k_attention (q (n_tok, n_head, head_dim) f32, GQA, the same
 * splits, work of lrun_k_attention_work_bytes, out (n_tok, n_head,
 * head_dim)), where token i of physical sequence s = kv_base[i] /
 * (cap·kv_dim) reads position j < seq_qlo[s] dequantized from its record and
 * rounded to qz->kv_dtype (the value lrun_k_kv_dequant_fill would have put
 * in the slot), and j >= seq_qlo[s] from ring row j % ring_rows. The caller
 * keeps [seq_qlo[s], n_kv[i]) in the ring. Shapes it does not take
 * (lrun_k_attention_quant_supported false) are LRUN_E_UNSUPPORTED. */
int lrun_k_attention_quant_supported(const lrun_k_kv_quant *qz, int64_t head_dim);
lrun_status lrun_k_attention_quant(const lrun_k_kv_quant *qz, const float *q, const void *codes_k,
                                   const void *codes_v, const void *ring_k, const void *ring_v,
                                   const int64_t *kv_base, const int32_t *n_kv, const int32_t *seq_qlo, int64_t n_tok,
                                   int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t max_kv, float scale,
                                   float *out, void *work, void *stream);

/* x[i] = a pseudo-random value in [-1, 1), a function of (seed, i). */
lrun_status lrun_k_fill_uniform(float *x, int64_t n, uint64_t seed, void *stream);

// ---------------------------------------------------------------- the exact path (docs/numerics.md "On the GPU")

/* The ops below compute, to the bit, what the CPU engine computes for
 * Q4_0/Q4_1/Q8_0 models (runtime/cuda/engine_cuda_exact.c uses them); each
 * follows one section of docs/numerics.md with explicit rounding intrinsics. */

/* x (m, k) f32 to llama.cpp's x86 activation blocks (lrun_quantize_activations):
 * qs (m, k) int8, d (m, k/32) the f16-rounded scales as floats, and for
 * partner Q8_1 s (m, k/32) = f16(d·Σq) as floats (NULL for Q8_0). k a multiple of 32. */
lrun_status lrun_k_quantize_q8(lrun_dtype partner, const float *x, int64_t m, int64_t k, int8_t *qs, float *d,
                               float *s, void *stream);

/* y (n_rows, n) = lrun_k_rms_norm(x, w), and y quantized for partner Q8_0
 * into qs (n_rows, n) int8 and d (n_rows, n/32), in one launch (the norm
 * before a q8 x GEMV, engine_cuda_split.h; fast numerics). y, qs and d are
 * the bits lrun_k_rms_norm then lrun_k_quantize_q8 (Q8_0) give: the same
 * per-thread sums, block reduction and rounding. n a multiple of 32; y may
 * alias x. */
lrun_status lrun_k_rms_norm_quantize_q8(const float *x, const float *w, float *y, int64_t n_rows, int64_t n,
                                        float eps, int8_t *qs, float *d, void *stream);

/* y_p (m, n_p) = x · W_pᵀ for Q4_0, Q4_1 or Q8_0 weights (all parts one
 * dtype and k wide), x quantized by lrun_k_quantize_q8 to the dtype's partner
 * (Q8_1 for Q4_1, else Q8_0): each output is the CPU's block dot, lane for
 * lane. Any m (decode and prefill). */
#define LRUN_K_Q8DOT_MAX_PARTS 3
typedef struct lrun_k_q8dot_part {
    const void *w;    /* (n, k) blocks, rows row_bytes apart */
    size_t row_bytes;
    int64_t n;
    float *y;         /* (m, n) f32 */
} lrun_k_q8dot_part;
lrun_status lrun_k_q8dot(lrun_dtype w_dtype, const lrun_k_q8dot_part *parts, int n_parts, int64_t k,
                         const int8_t *xq, const float *xd, const float *xs, int64_t m, void *stream);

/* y (n_rows, n) = lrun_cpu_rms_norm of each row of x; y must not alias x; n <= 12288. */
lrun_status lrun_k_rms_norm_exact(const float *x, const float *w, float *y, int64_t n_rows, int64_t n, float eps,
                                  void *stream);
/* The same after x += add (when not NULL), then x += bias (when not NULL,
 * broadcast over rows), x written back; then, when qs is not NULL, y
 * quantized as lrun_k_quantize_q8 for partner (Q8_0 or Q8_1) into qs, qd
 * and qsum (n a multiple of 32). One launch per sublayer boundary. */
lrun_status lrun_k_add_rms_norm_exact(float *x, const float *add, const float *bias, const float *w, float *y,
                                      int64_t n_rows, int64_t n, float eps, lrun_dtype partner, int8_t *qs,
                                      float *qd, float *qsum, void *stream);

/* lrun_cpu_rope_apply on q (n_tok, n_head, head_dim) and k (n_tok,
 * n_head_kv, head_dim) in place with cs (n_tok, n_rot): the (cos, sin) pairs
 * of lrun_cpu_rope_cos_sin, made on the host; then the rows of k and v stored
 * at cache_k/cache_v[row_offset[i] + j] in kv_dtype (F16 or F32). */
lrun_status lrun_k_rope_store_exact(float *q, float *k, const float *v, const float *cs, int64_t n_tok,
                                    int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot, int style,
                                    lrun_dtype kv_dtype, void *cache_k, void *cache_v, const int64_t *row_offset,
                                    void *stream);

/* g (n_rows, n) = lrun_cpu_swiglu(g, u) row by row; n a multiple of 8. When
 * qs is not NULL, g is also quantized as lrun_k_quantize_q8 for partner into
 * qs, qd and qsum (n a multiple of 32). */
lrun_status lrun_k_swiglu_exact(float *g, const float *u, int64_t n_rows, int64_t n, lrun_dtype partner, int8_t *qs,
                                float *qd, float *qsum, void *stream);

/* lrun_cpu_attention_head for each token and query head: q (n_tok, n_head,
 * head_dim); token i attends to positions [0, n_kv[i]) of the cache at
 * element offset kv_base[i] (layout (pos, n_head_kv, head_dim) for K and V),
 * whose first n_valid[i] positions are stored (the rest read as zeros, as
 * the CPU's cache). chain8: the step has >= 2 tokens (tinyBLAS's orders).
 * max_kv bounds n_kv; lrun_k_attention_exact_smem gives the shared memory a
 * launch takes (more than 48 KiB is requested from the device). */
size_t lrun_k_attention_exact_smem(int64_t head_dim, int64_t max_kv);
lrun_status lrun_k_attention_exact(lrun_dtype kv_dtype, const float *q, const void *cache_k, const void *cache_v,
                                   const int64_t *kv_base, const int32_t *n_kv, const int32_t *n_valid,
                                   int64_t n_tok, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                                   int64_t max_kv, float scale, int chain8, float *out, void *stream);
/* The same with a sliding window as lrun_cpu_attention's n_swa: the scores
 * of positions before n_kv[i] - n_swa masked to -inf in place, so the sums
 * keep the CPU's order and bits; n_swa 0: none. */
lrun_status lrun_k_attention_exact_window(lrun_dtype kv_dtype, const float *q, const void *cache_k,
                                          const void *cache_v, const int64_t *kv_base, const int32_t *n_kv,
                                          const int32_t *n_valid, int64_t n_tok, int64_t n_head, int64_t n_head_kv,
                                          int64_t head_dim, int64_t max_kv, float scale, int chain8, int64_t n_swa,
                                          float *out, void *stream);

// ---------------------------------------------------------------- sampling helpers

/* out[r] = index of the largest of logits[r] (n_rows, n_vocab); the first of equals. */
lrun_status lrun_k_argmax(const float *logits, int64_t n_rows, int64_t n_vocab, int32_t *out, void *stream);

/* The k largest logits of each row, sorted descending: values (n_rows, k) and
 * ids (n_rows, k); 1 ≤ k ≤ 256. */
lrun_status lrun_k_topk(const float *logits, int64_t n_rows, int64_t n_vocab, int64_t k, float *values,
                        int32_t *ids, void *stream);

// ---------------------------------------------------------------- mixture of experts

/* Routing limits of the device kernels (a model beyond them routes on the host). */
#define LRUN_K_MOE_MAX_EXPERTS 512
#define LRUN_K_MOE_MAX_K 32

/* Each token's routing from its router logits (n_rows, n_expert), with the
 * CPU's bits (lrun_moe_route): ids (n_rows, k) the k most probable experts,
 * descending, equal probabilities by the lower index first; w (n_rows, k)
 * their probabilities over max(their sum, 2^-14). n_expert a multiple of 8
 * up to LRUN_K_MOE_MAX_EXPERTS, 1 <= k <= LRUN_K_MOE_MAX_K. counts, when
 * not NULL: (n_expert + 1) u64 on the device, counts[x] += the selections
 * of expert x and counts[n_expert] += n_rows (m:stats().experts). */
lrun_status lrun_k_moe_route(const float *logits, int64_t n_rows, int64_t n_expert, int64_t k, int32_t *ids,
                             float *w, unsigned long long *counts, void *stream);

/* gpt-oss's routing (the CPU's lrun_moe_route_oai): ids the k largest
 * logits, descending, the lower index first among equals; w the softmax of
 * those k logits only. Limits and counts as lrun_k_moe_route. */
lrun_status lrun_k_moe_route_oai(const float *logits, int64_t n_rows, int64_t n_expert, int64_t k, int32_t *ids,
                                 float *w, unsigned long long *counts, void *stream);

/* The exact path's router product (moe_exact.cuh): y (m, n) = x (m, k) · Wᵀ
 * for F32, F16 or BF16 weights (n rows, row_bytes apart), each output the
 * CPU's AVX2 float dot to the bit; k a multiple of 16, m <= 65535. */
lrun_status lrun_k_moe_router_exact(lrun_dtype w_dtype, const void *w, size_t row_bytes, int64_t n, int64_t k,
                                    const float *x, int64_t m, float *y, void *stream);
/* The exact path's weighted sum of each token's experts (moe_exact.cuh):
 * x[i] (d) += ((Y[pos[i·k]]·w[i·k] + Y[pos[i·k+1]]·w[i·k+1]) + …) in slot
 * order, as the CPU's slots and their sum; Y (rows, d) the experts' down
 * projections, pos and w (n_tok, k) on the device. n_tok <= 65535. */
lrun_status lrun_k_moe_combine_exact(const float *Y, const int32_t *pos, const float *w, int64_t n_tok, int64_t k,
                                     int64_t d, float *x, void *stream);

/* Whether lrun_k_moe_gemv has a kernel for experts of dtype t stacked at w
 * (row_bytes per row, expert_bytes per expert, k elements per row). */
int lrun_k_moe_gemv_supported(lrun_dtype t, const void *w, size_t row_bytes, size_t expert_bytes, int64_t k);

/* y (n_pairs, n) = for each pair p: W_e · x[p / x_div] with e = ids[p] (device)
 * and W_e the n rows of k at w + e·expert_bytes; with u (the up
 * projection, same layout) not NULL: silu(W_e ·) · (U_e ·), the CPU's SwiGLU
 * formula. x (n_pairs / x_div rows of k), f32 on the device. */
lrun_status lrun_k_moe_gemv(lrun_dtype t, const void *w, const void *u, size_t row_bytes, size_t expert_bytes,
                            int64_t n, int64_t k, const int32_t *ids, const float *x, int64_t x_div, int64_t n_pairs,
                            float *y, void *stream);

/* lrun_k_moe_gemv for gpt-oss's experts: each product plus its expert's bias
 * (bw for w, bu for u: (n_expert, n) f32 on the device, row e expert e's),
 * and with u, swiglu_oai(W_e · + bw_e, U_e · + bu_e) in place of SwiGLU.
 * bias_ids (n_pairs, device), when not NULL, names the expert whose bias
 * rows pair p adds where ids[p] is an expert cache's slot; NULL: ids. */
lrun_status lrun_k_moe_gemv_oai(lrun_dtype t, const void *w, const void *u, const float *bw, const float *bu,
                                const int32_t *bias_ids, size_t row_bytes, size_t expert_bytes, int64_t n, int64_t k,
                                const int32_t *ids, const float *x, int64_t x_div, int64_t n_pairs, float *y,
                                void *stream);

/* x (n_tok, d) += Σ_s y[t·k + s] · w[t·k + s], per element a multiply then an
 * add per slot in slot order (the CPU's scatter and sum of slots). */
lrun_status lrun_k_moe_combine(const float *y, const float *w, int64_t n_tok, int64_t k, int64_t d, float *x,
                               void *stream);

/* out (·, d) rows tok[j] += w[j] · y[j] (y: (cnt, d)) for one expert's cnt
 * tokens (distinct), one fmaf per element: a streamed prefill chunk's
 * expert outputs weighted into the sublayer's sum (tok, w on the device). */
lrun_status lrun_k_moe_scatter_add(const float *y, const int32_t *tok, const float *w, int64_t cnt, int64_t d,
                                   float *out, void *stream);

// ---------------------------------------------------------------- packed weights

/* dst (count) = elements first .. first+count-1 of a packed bf16/f16 tensor
 * (runtime/packed/codec.h) at packed in device memory, whose layout lay was
 * filled on the host by lrun_packed_validate (or lrun_packed_encode): the
 * kernel trusts it. Bit-exact with lrun_packed_decode_range. */
struct lrun_packed_layout;
lrun_status lrun_k_packed_decode(uint16_t *dst, const void *packed, const struct lrun_packed_layout *lay, uint64_t first,
                                 uint64_t count, void *stream);

/* Mode 3 (kernels/packed_gemv.cu, docs/packed.md "Mode 3 kernels"): products
 * with packed bf16/f16 weights resident on the device. A weight of n rows of
 * k (k a multiple of 8, lay->n = n*k) is packed in device memory on a
 * 16-byte boundary, with the layout lrun_packed_validate filled on the host.
 *
 * lrun_k_packed_gemv_multi is lrun_k_gemv_multi (same parts, modes STORE,
 * ADD and SWIGLU, 1 <= m <= 8) on packed weights, decoded on chip and never
 * written to global memory: y is bit-identical to lrun_k_gemv_multi on the
 * decoded weights (contiguous rows). Rows too long for a shared-memory tile
 * (k above ~100k) are LRUN_E_UNSUPPORTED, as is k % 8 != 0: the caller then
 * decodes into a slot (lrun_k_packed_decode) and calls lrun_k_gemv_multi. */
typedef struct lrun_k_packed_part {
    const void *packed;                   /* the packed tensor, device memory */
    const struct lrun_packed_layout *lay; /* its layout (host memory) */
    int64_t n;                            /* rows */
    float *y;                             /* (m, n) f32 */
} lrun_k_packed_part;
lrun_status lrun_k_packed_gemv_multi(const lrun_k_packed_part *parts, int n_parts, int64_t k, const float *x,
                                     int64_t m, int mode, void *stream);
lrun_status lrun_k_packed_gemv(const void *packed, const struct lrun_packed_layout *lay, int64_t n, int64_t k,
                               const float *x, int64_t m, float *y, void *stream);
/* Bench and test only: the fused GEMV's decode loop for m <= 2 from then on:
 * 0 the default (codec blocks one after another), 1 software pipelined (a
 * warp's next codec block's loads issued before this block's bit work; the
 * same y bit for bit). Returns the variant's description, NULL past the
 * last. Not thread-safe. */
const char *lrun_k_packed_gemv_tune(int variant);
/* Bench and test only: PEX2's fused GEMV for m <= 2 from then on: 0 the
 * default (m = 1's product units outermost: x's loads shared by the tile's
 * rows), 1 m = 1's product rows outermost (PEX1's order), 2 as 0 with the
 * decode software pipelined (a warp's next codec block's loads before this
 * block's patch; 4 blocks per SM instead of 6); the same y bit for bit.
 * Until called, the first launch takes LRUN_PEX2_VARIANT (0, 1 or 2; 0
 * where unset). Returns the variant's description, NULL past the last.
 * Not thread-safe. */
const char *lrun_k_pex2_gemv_tune(int variant);

/* dst (n_rows, k) = rows row0 .. row0+n_rows-1 of a packed matrix of rows of
 * k (k a multiple of 8, dst 16-byte aligned), one warp per codec block:
 * the same values as lrun_k_packed_decode of that range. */
lrun_status lrun_k_packed_decode_rows(uint16_t *dst, const void *packed, const struct lrun_packed_layout *lay,
                                      int64_t k, int64_t row0, int64_t n_rows, void *stream);

/* out (n_tok, k) f32 = rows tokens[i] of a packed table of rows of k (k a
 * multiple of 8, packed on a 16-byte boundary, out 16-byte aligned): only
 * the codec blocks of those rows are decoded, a warp each, and the values
 * widened to f32 as lrun_k_embed does, so out is bit-identical to decoding
 * the table whole and calling lrun_k_embed. tokens are device memory (read
 * by the kernel: the launch depends on n_tok alone, graph-safe); an id
 * outside the table gives a row of zeros. LRUN_E_UNSUPPORTED when k is not a
 * multiple of 8. */
lrun_status lrun_k_packed_embed(const void *packed, const struct lrun_packed_layout *lay, int64_t k,
                                const int32_t *tokens, int64_t n_tok, float *out, void *stream);

/* Prefill: y (m, n) = x (m, k) · Wᵀ for a packed W: decoded into w_slot (n*k
 * values of its own dtype) by lrun_k_packed_decode_rows, then lrun_k_gemm
 * on the slot in place, the call the plain weight makes with slot_dtype =
 * its dtype: the same bits. x_slot as lrun_k_gemm's. */
lrun_status lrun_k_packed_gemm(void *cublas, const void *packed, const struct lrun_packed_layout *lay, int64_t n,
                               int64_t k, const float *x, int64_t m, float *y, void *w_slot, void *x_slot,
                               void *stream);

/* PEX2 (kernels/packed_pex2.cu, runtime/packed/codec_pex2.h): the launchers
 * above call these for a layout whose codec is LRUN_PACKED_CODEC_PEX2 (bf16,
 * the packed tensor on a 16-byte boundary), with the same contracts:
 * lrun_k_pex2_decode = lrun_k_packed_decode (any range, dst 2-byte aligned;
 * 16-byte stores where aligned), lrun_k_pex2_embed = lrun_k_packed_embed,
 * lrun_k_pex2_gemv_multi = lrun_k_packed_gemv_multi (y bit-identical to
 * lrun_k_gemv_multi on the decoded weights; k % 8 != 0 and rows too long
 * for a tile are LRUN_E_UNSUPPORTED). */
lrun_status lrun_k_pex2_decode(uint16_t *dst, const void *packed, const struct lrun_packed_layout *lay,
                               uint64_t first, uint64_t count, void *stream);
lrun_status lrun_k_pex2_embed(const void *packed, const struct lrun_packed_layout *lay, int64_t k,
                              const int32_t *tokens, int64_t n_tok, float *out, void *stream);
lrun_status lrun_k_pex2_gemv_multi(const lrun_k_packed_part *parts, int n_parts, int64_t k, const float *x, int64_t m,
                                   int mode, void *stream);

#ifdef __cplusplus
}
#endif

#endif
