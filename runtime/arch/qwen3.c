/* qwen3.c — the qwen3 architecture (Qwen3 dense models): llama's block
 * without biases, an explicit head size (attention.key_length, often not
 * n_embd / n_head), an RMSNorm over each query and key head before RoPE
 * (attn_q_norm, attn_k_norm: {head_dim}), and RoPE on the half-split pairs
 * (LLAMA_ROPE_TYPE_NEOX in llama.cpp). The keys are llama's under "qwen3.".
 * Per block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ, xn Wkᵀ, xn Wvᵀ
 *   q_h = rms_norm(q_h) * q_norm, k_h = rms_norm(k_h) * k_norm, for each head h
 *   rope_neox(q, k); k, v into the cache; a = attention(q, cache)
 *   x += a Woᵀ
 *   xn = rms_norm(x) * ffn_norm
 *   x += (silu(xn Wgᵀ) * (xn Wuᵀ)) Wdᵀ */
#include "arch/arch_rows.h"

/* In gguf-py's MODEL_TENSORS order (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    ARCH_ROWS_MODEL(0),
    ARCH_ROW_ROPE_FREQS,
    ARCH_ROW_ATTN_NORM,
    ARCH_ROWS_QKVO_HEAD_NORMED,
    ARCH_ROW_FFN_NORM,
    ARCH_ROWS_GATE_DOWN_UP,
};

static const lrun_arch_op ops[] = {
    ARCH_OP_ATTN_NORM, ARCH_OP_QKV, ARCH_OP_QK_HEAD_NORM,
    ARCH_OP_ROPE_STORE, ARCH_OP_ATTENTION(NO), ARCH_OP_O_ADD(NO),
    ARCH_OP_FFN_NORM, ARCH_OP_SWIGLU, ARCH_OP_DOWN_ADD,
};

/* No embedding scale, 1/sqrt(head_dim), one RoPE base, dense. */
const lrun_arch lrun_arch_qwen3 = {
    .name = "qwen3",
    .hparams = lrun_arch_llama_hparams, .n_hparams = LRUN_ARCH_LLAMA_N_HPARAMS - 1, /* no sliding window */
    ARCH_TABLES(tensors, ops),
    .rope_style = LRUN_ROPE_STYLE_HALF,
};
