/* qwen3moe.c — the qwen3moe architecture (Qwen3-30B-A3B, Qwen3-235B-A22B):
 * qwen3's attention (GQA, per-head q/k RMSNorm, half-split RoPE, an
 * explicit head size) and a mixture of experts for the feed-forward, with
 * no shared expert. Per block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ, xn Wkᵀ, xn Wvᵀ; q/k heads RMS-normed; rope_neox; attention
 *   x += a Woᵀ
 *   xn = rms_norm(x) * ffn_norm
 *   p = softmax(xn Wrᵀ); E = the top n_expert_used experts
 *   x += sum_{e in E} (p_e / sum_E p) · (silu(xn G_eᵀ) * (xn U_eᵀ)) D_eᵀ
 *
 * The top-k probabilities are always renormalised: Qwen3-MoE's configs set
 * norm_topk_prob, the GGUF has no key for it, and llama.cpp's qwen3moe
 * renormalises unconditionally. The experts' width is
 * qwen3moe.expert_feed_forward_length (read as n_ff: no op of the block
 * uses feed_forward_length, which the converter also writes). */
#include "arch/arch_rows.h"

/* llama's keys (no sliding window), n_ff from expert_feed_forward_length, the expert counts */
static const lrun_arch_hparam_desc hparams[] = {
    ARCH_HPARAM_ROWS_SIZES,
    ARCH_HPARAM_ROW_FF("expert_feed_forward_length"),
    ARCH_HPARAM_ROWS_ATTENTION,
    ARCH_HPARAM_ROWS_EXPERTS,
};

/* In gguf-py's MODEL_TENSORS[QWEN3MOE] order (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    ARCH_ROWS_MODEL(0),
    ARCH_ROW_ATTN_NORM,
    ARCH_ROWS_QKVO_HEAD_NORMED,
    ARCH_ROW_FFN_NORM,
    ARCH_ROW_GATE_INP,
    ARCH_ROWS_EXPERTS,
};

static const lrun_arch_op ops[] = {
    ARCH_OP_ATTN_NORM, ARCH_OP_QKV, ARCH_OP_QK_HEAD_NORM,
    ARCH_OP_ROPE_STORE, ARCH_OP_ATTENTION(NO), ARCH_OP_O_ADD(NO),
    ARCH_OP_FFN_NORM, ARCH_OP_MOE_ROUTE(NO), ARCH_OP_MOE_FFN_ADD,
};

/* No embedding scale, no window, 1/sqrt(head_dim), one RoPE base; experts by softmax routing,
 * renormalised (not gpt-oss's). */
const lrun_arch lrun_arch_qwen3moe = {
    .name = "qwen3moe",
    .hparams = hparams, .n_hparams = ARCH_N(hparams),
    ARCH_TABLES(tensors, ops),
    .rope_style = LRUN_ROPE_STYLE_HALF,
};
