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
#include "arch/arch.h"

#define T(id) LRUN_ARCH_TENSOR_##id
#define NO LRUN_ARCH_TENSOR_NONE
#define BUF(b) LRUN_ARCH_BUF_##b
#define DIM(d) LRUN_ARCH_DIM_##d
#define HP(id) LRUN_ARCH_HPARAM_##id
#define KIND(k) LRUN_ARCH_HPARAM_KIND_##k
#define DEF(d) LRUN_ARCH_DEFAULT_##d

/* llama's keys (no sliding window), n_ff from expert_feed_forward_length, the expert counts */
static const lrun_arch_hparam_desc hparams[] = {
    {HP(CTX_TRAIN), "context_length", KIND(CTX), DEF(REQUIRED), 0, 0},
    {HP(EMBD), "embedding_length", KIND(DIM), DEF(REQUIRED), 0, 0},
    {HP(LAYER), "block_count", KIND(DIM), DEF(REQUIRED), 0, 0},
    {HP(FF), "expert_feed_forward_length", KIND(DIM), DEF(REQUIRED), 0, 0},
    {HP(HEAD), "attention.head_count", KIND(DIM), DEF(REQUIRED), 0, 0},
    {HP(HEAD_KV), "attention.head_count_kv", KIND(DIM), DEF(SAME_AS), 0, HP(HEAD)},
    {HP(HEAD_DIM), "attention.key_length", KIND(DIM), DEF(EMBD_PER_HEAD), 0, 0},
    {HP(V_DIM), "attention.value_length", KIND(DIM), DEF(SAME_AS), 0, HP(HEAD_DIM)},
    {HP(ROT), "rope.dimension_count", KIND(DIM), DEF(SAME_AS), 0, HP(HEAD_DIM)},
    {HP(RMS_EPS), "attention.layer_norm_rms_epsilon", KIND(POS_FLOAT), DEF(REQUIRED), 0, 0},
    {HP(ROPE_BASE), "rope.freq_base", KIND(POS_FLOAT), DEF(VALUE), 10000.0, 0},
    {HP(EXPERT), "expert_count", KIND(DIM), DEF(REQUIRED), 0, 0},
    {HP(EXPERT_USED), "expert_used_count", KIND(DIM), DEF(REQUIRED), 0, 0},
};

/* In gguf-py's MODEL_TENSORS[QWEN3MOE] order (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    {T(TOKEN_EMBD), "token_embd.weight", LRUN_ROLE_EMBEDDING, 1, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(OUTPUT_NORM), "output_norm.weight", LRUN_ROLE_OUTPUT_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(OUTPUT), "output.weight", LRUN_ROLE_LM_HEAD, 0, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(ATTN_NORM), "blk.%d.attn_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(Q), "blk.%d.attn_q.weight", LRUN_ROLE_ATTN_Q, 1, {DIM(EMBD), DIM(Q)}, 0},
    {T(Q_NORM), "blk.%d.attn_q_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(HEAD), DIM(NONE)}, 0},
    {T(K), "blk.%d.attn_k.weight", LRUN_ROLE_ATTN_K, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(K_NORM), "blk.%d.attn_k_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(HEAD), DIM(NONE)}, 0},
    {T(V), "blk.%d.attn_v.weight", LRUN_ROLE_ATTN_V, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(O), "blk.%d.attn_output.weight", LRUN_ROLE_ATTN_OUTPUT, 1, {DIM(Q), DIM(EMBD)}, 0},
    {T(FFN_NORM), "blk.%d.ffn_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(GATE_INP), "blk.%d.ffn_gate_inp.weight", LRUN_ROLE_FFN_GATE_INP, 1, {DIM(EMBD), DIM(EXPERT)}, 0},
    {T(GATE_EXPS), "blk.%d.ffn_gate_exps.weight", LRUN_ROLE_FFN_GATE_EXPS, 1, {DIM(EMBD), DIM(FF), DIM(EXPERT)}, 0},
    {T(DOWN_EXPS), "blk.%d.ffn_down_exps.weight", LRUN_ROLE_FFN_DOWN_EXPS, 1, {DIM(FF), DIM(EMBD), DIM(EXPERT)}, 0},
    {T(UP_EXPS), "blk.%d.ffn_up_exps.weight", LRUN_ROLE_FFN_UP_EXPS, 1, {DIM(EMBD), DIM(FF), DIM(EXPERT)}, 0},
};

static const lrun_arch_op ops[] = {
    {LRUN_ARCH_OP_NORM, {T(ATTN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL, {T(Q), T(K), T(V)}, BUF(XN), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_HEAD_NORM, {T(Q_NORM), T(K_NORM), NO}, BUF(Q), {BUF(Q), BUF(K)}},
    {LRUN_ARCH_OP_ROPE_STORE, {NO, NO, NO}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ATTENTION, {NO, NO, NO}, BUF(Q), {BUF(ATTN)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(O), NO, NO}, BUF(ATTN), {BUF(X)}},
    {LRUN_ARCH_OP_NORM, {T(FFN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MOE_ROUTE, {T(GATE_INP), NO, NO}, BUF(XN), {BUF(ROUTER)}},
    {LRUN_ARCH_OP_MOE_FFN_ADD, {T(GATE_EXPS), T(UP_EXPS), T(DOWN_EXPS)}, BUF(XN), {BUF(X)}},
};

const lrun_arch lrun_arch_qwen3moe = {
    "qwen3moe",
    hparams, (int)(sizeof hparams / sizeof hparams[0]),
    tensors, (int)(sizeof tensors / sizeof tensors[0]),
    ops, (int)(sizeof ops / sizeof ops[0]),
    LRUN_ROPE_STYLE_HALF,
    NULL, 0,
    0, 0, 0, 0, /* no embedding scale, no window, 1/sqrt(head_dim), one RoPE base */
    0, /* experts by softmax routing, renormalised (not gpt-oss's) */
};
