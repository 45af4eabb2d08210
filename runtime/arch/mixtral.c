/* mixtral.c — llama with a mixture of experts (Mixtral 8x7B, 8x22B): GGUF
 * architecture "llama" with llama.expert_count > 0, which llama.cpp runs
 * as llama with its feed-forward replaced by experts
 * (lrun_arch_find_moe picks this description for such a file). Per block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ, xn Wkᵀ, xn Wvᵀ; rope(q, k) (adjacent pairs); attention
 *   x += a Woᵀ
 *   xn = rms_norm(x) * ffn_norm
 *   p = softmax(xn Wrᵀ) over the n_expert experts; E = the top n_expert_used
 *   x += sum_{e in E} (p_e / sum_E p) · (silu(xn G_eᵀ) * (xn U_eᵀ)) D_eᵀ
 *
 * The experts' FFN width is llama.feed_forward_length (n_ff), as in
 * llama.cpp. docs/moe.md has the routing's exact arithmetic. */
#include "arch/arch_rows.h"

/* In gguf-py's MODEL_TENSORS[LLAMA] order (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    ARCH_ROWS_MODEL(0),
    ARCH_ROW_ROPE_FREQS,
    ARCH_ROW_ATTN_NORM,
    ARCH_ROWS_QKVO,
    ARCH_ROW_GATE_INP,
    ARCH_ROW_FFN_NORM,
    ARCH_ROWS_EXPERTS,
};

static const lrun_arch_op ops[] = {
    ARCH_OP_ATTN_NORM, ARCH_OP_QKV,
    ARCH_OP_ROPE_STORE, ARCH_OP_ATTENTION(NO), ARCH_OP_O_ADD(NO),
    ARCH_OP_FFN_NORM, ARCH_OP_MOE_ROUTE(NO), ARCH_OP_MOE_FFN_ADD,
};

/* llama's keys with the expert counts. No embedding scale, the window (if any) on every block,
 * 1/sqrt(head_dim), one RoPE base; experts by softmax routing, renormalised (not gpt-oss's). */
const lrun_arch lrun_arch_llama_moe = {
    .name = "llama",
    .hparams = lrun_arch_llama_hparams, .n_hparams = LRUN_ARCH_LLAMA_MOE_N_HPARAMS,
    ARCH_TABLES(tensors, ops),
    .rope_style = LRUN_ROPE_STYLE_ADJACENT,
};
