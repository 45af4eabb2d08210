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
#include "arch/arch.h"

#define T(id) LRUN_ARCH_TENSOR_##id
#define NO LRUN_ARCH_TENSOR_NONE
#define BUF(b) LRUN_ARCH_BUF_##b
#define DIM(d) LRUN_ARCH_DIM_##d

/* In gguf-py's MODEL_TENSORS[LLAMA] order (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    {T(TOKEN_EMBD), "token_embd.weight", LRUN_ROLE_EMBEDDING, 1, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(OUTPUT_NORM), "output_norm.weight", LRUN_ROLE_OUTPUT_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(OUTPUT), "output.weight", LRUN_ROLE_LM_HEAD, 0, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(ROPE_FREQS), "rope_freqs.weight", LRUN_ROLE_ROPE_FREQS, 0, {DIM(ROT_HALF), DIM(NONE)}, 1},
    {T(ATTN_NORM), "blk.%d.attn_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(Q), "blk.%d.attn_q.weight", LRUN_ROLE_ATTN_Q, 1, {DIM(EMBD), DIM(Q)}, 0},
    {T(K), "blk.%d.attn_k.weight", LRUN_ROLE_ATTN_K, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(V), "blk.%d.attn_v.weight", LRUN_ROLE_ATTN_V, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(O), "blk.%d.attn_output.weight", LRUN_ROLE_ATTN_OUTPUT, 1, {DIM(Q), DIM(EMBD)}, 0},
    {T(GATE_INP), "blk.%d.ffn_gate_inp.weight", LRUN_ROLE_FFN_GATE_INP, 1, {DIM(EMBD), DIM(EXPERT)}, 0},
    {T(FFN_NORM), "blk.%d.ffn_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(GATE_EXPS), "blk.%d.ffn_gate_exps.weight", LRUN_ROLE_FFN_GATE_EXPS, 1, {DIM(EMBD), DIM(FF), DIM(EXPERT)}, 0},
    {T(DOWN_EXPS), "blk.%d.ffn_down_exps.weight", LRUN_ROLE_FFN_DOWN_EXPS, 1, {DIM(FF), DIM(EMBD), DIM(EXPERT)}, 0},
    {T(UP_EXPS), "blk.%d.ffn_up_exps.weight", LRUN_ROLE_FFN_UP_EXPS, 1, {DIM(EMBD), DIM(FF), DIM(EXPERT)}, 0},
};

static const lrun_arch_op ops[] = {
    {LRUN_ARCH_OP_NORM, {T(ATTN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL, {T(Q), T(K), T(V)}, BUF(XN), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ROPE_STORE, {NO, NO, NO}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ATTENTION, {NO, NO, NO}, BUF(Q), {BUF(ATTN)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(O), NO, NO}, BUF(ATTN), {BUF(X)}},
    {LRUN_ARCH_OP_NORM, {T(FFN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MOE_ROUTE, {T(GATE_INP), NO, NO}, BUF(XN), {BUF(ROUTER)}},
    {LRUN_ARCH_OP_MOE_FFN_ADD, {T(GATE_EXPS), T(UP_EXPS), T(DOWN_EXPS)}, BUF(XN), {BUF(X)}},
};

const lrun_arch lrun_arch_llama_moe = {
    "llama",
    lrun_arch_llama_hparams, LRUN_ARCH_LLAMA_MOE_N_HPARAMS,
    tensors, (int)(sizeof tensors / sizeof tensors[0]),
    ops, (int)(sizeof ops / sizeof ops[0]),
    LRUN_ROPE_STYLE_ADJACENT,
    NULL, 0,
    0, 0, 0, 0, /* no embedding scale, the window (if any) on every block, 1/sqrt(head_dim), one RoPE base */
    0, /* experts by softmax routing, renormalised (not gpt-oss's) */
};
