/* llama.c — the llama architecture (Llama 1-3, SmolLM, Mistral with or
 * without a sliding window, TinyLlama …): pre-norm blocks of grouped-query
 * attention and a SwiGLU feed-forward, RMSNorm, RoPE on adjacent pairs
 * (the GGUF converter permuted q and k for it); with
 * llama.attention.sliding_window, each position attends to the last
 * n_swa positions only (itself included). Per block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ, xn Wkᵀ, xn Wvᵀ  (+ biases when the file has them)
 *   rope(q, k); k, v into the cache; a = attention(q, cache)
 *   x += a Woᵀ (+ bo)
 *   xn = rms_norm(x) * ffn_norm
 *   x += (silu(xn Wgᵀ) * (xn Wuᵀ)) Wdᵀ */
#include "arch/arch_rows.h"

/* Also qwen2's, qwen3's and phi3's (all but the window) and Mixtral's (all):
 * the same keys under their own prefix. */
const lrun_arch_hparam_desc lrun_arch_llama_hparams[LRUN_ARCH_LLAMA_MOE_N_HPARAMS] = {
    ARCH_HPARAM_ROWS_SIZES,
    ARCH_HPARAM_ROW_FF("feed_forward_length"),
    ARCH_HPARAM_ROWS_ATTENTION,
    /* last: the others share the entries before it */
    ARCH_HPARAM_ROW_SWA(DEF(VALUE), 0),
    /* Mixtral's (lrun_arch_llama_moe) */
    ARCH_HPARAM_ROWS_EXPERTS,
};

static const lrun_arch_tensor_desc tensors[] = {
    ARCH_ROWS_MODEL(0),
    ARCH_ROW_ROPE_FREQS,
    ARCH_ROW_ATTN_NORM,
    ARCH_ROWS_QKVO,
    ARCH_ROW_Q_BIAS(0), ARCH_ROW_K_BIAS(0), ARCH_ROW_V_BIAS(0), ARCH_ROW_O_BIAS(0), /* optional */
    ARCH_ROW_FFN_NORM,
    ARCH_ROWS_GATE_DOWN_UP,
};

static const lrun_arch_op ops[] = {
    ARCH_OP_ATTN_NORM, ARCH_OP_QKV, ARCH_OP_QKV_BIAS,
    ARCH_OP_ROPE_STORE, ARCH_OP_ATTENTION(NO), ARCH_OP_O_ADD(T(O_BIAS)),
    ARCH_OP_FFN_NORM, ARCH_OP_SWIGLU, ARCH_OP_DOWN_ADD,
};

/* No embedding scale, the window (if any) on every block, 1/sqrt(head_dim), one RoPE base, dense. */
const lrun_arch lrun_arch_llama = {
    .name = "llama",
    .hparams = lrun_arch_llama_hparams, .n_hparams = LRUN_ARCH_LLAMA_N_HPARAMS,
    ARCH_TABLES(tensors, ops),
    .rope_style = LRUN_ROPE_STYLE_ADJACENT,
};
