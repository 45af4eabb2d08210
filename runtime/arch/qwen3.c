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
#include "arch/arch.h"

#define T(id) LRUN_ARCH_TENSOR_##id
#define NO LRUN_ARCH_TENSOR_NONE
#define BUF(b) LRUN_ARCH_BUF_##b
#define DIM(d) LRUN_ARCH_DIM_##d

/* In gguf-py's MODEL_TENSORS order (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    {T(TOKEN_EMBD), "token_embd.weight", LRUN_ROLE_EMBEDDING, 1, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(OUTPUT_NORM), "output_norm.weight", LRUN_ROLE_OUTPUT_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(OUTPUT), "output.weight", LRUN_ROLE_LM_HEAD, 0, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(ROPE_FREQS), "rope_freqs.weight", LRUN_ROLE_ROPE_FREQS, 0, {DIM(ROT_HALF), DIM(NONE)}, 1},
    {T(ATTN_NORM), "blk.%d.attn_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(Q), "blk.%d.attn_q.weight", LRUN_ROLE_ATTN_Q, 1, {DIM(EMBD), DIM(Q)}, 0},
    {T(Q_NORM), "blk.%d.attn_q_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(HEAD), DIM(NONE)}, 0},
    {T(K), "blk.%d.attn_k.weight", LRUN_ROLE_ATTN_K, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(K_NORM), "blk.%d.attn_k_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(HEAD), DIM(NONE)}, 0},
    {T(V), "blk.%d.attn_v.weight", LRUN_ROLE_ATTN_V, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(O), "blk.%d.attn_output.weight", LRUN_ROLE_ATTN_OUTPUT, 1, {DIM(Q), DIM(EMBD)}, 0},
    {T(FFN_NORM), "blk.%d.ffn_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(GATE), "blk.%d.ffn_gate.weight", LRUN_ROLE_FFN_GATE, 1, {DIM(EMBD), DIM(FF)}, 0},
    {T(DOWN), "blk.%d.ffn_down.weight", LRUN_ROLE_FFN_DOWN, 1, {DIM(FF), DIM(EMBD)}, 0},
    {T(UP), "blk.%d.ffn_up.weight", LRUN_ROLE_FFN_UP, 1, {DIM(EMBD), DIM(FF)}, 0},
};

static const lrun_arch_op ops[] = {
    {LRUN_ARCH_OP_NORM, {T(ATTN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL, {T(Q), T(K), T(V)}, BUF(XN), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_HEAD_NORM, {T(Q_NORM), T(K_NORM), NO}, BUF(Q), {BUF(Q), BUF(K)}},
    {LRUN_ARCH_OP_ROPE_STORE, {NO, NO, NO}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ATTENTION, {NO, NO, NO}, BUF(Q), {BUF(ATTN)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(O), NO, NO}, BUF(ATTN), {BUF(X)}},
    {LRUN_ARCH_OP_NORM, {T(FFN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL_SWIGLU, {T(GATE), T(UP), NO}, BUF(XN), {BUF(GATE), BUF(UP)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(DOWN), NO, NO}, BUF(GATE), {BUF(X)}},
};

const lrun_arch lrun_arch_qwen3 = {
    "qwen3",
    lrun_arch_llama_hparams, LRUN_ARCH_LLAMA_N_HPARAMS - 1, /* no sliding window */
    tensors, (int)(sizeof tensors / sizeof tensors[0]),
    ops, (int)(sizeof ops / sizeof ops[0]),
    LRUN_ROPE_STYLE_HALF,
    NULL, 0,
    0, 0, 0, 0, /* no embedding scale, the window (if any) on every block, 1/sqrt(head_dim), one RoPE base */
    0, /* dense feed-forward */
};
