/* qwen2.c — the qwen2 architecture (Qwen1.5, Qwen2, Qwen2.5): llama's
 * block with biases on q, k and v (none on the output projection), and RoPE
 * on the half-split pairs (i, i + n_rot/2), as llama.cpp runs it
 * (LLAMA_ROPE_TYPE_NEOX: its converter does not permute q and k for qwen2).
 * The keys are llama's under "qwen2.". Per block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ + bq, xn Wkᵀ + bk, xn Wvᵀ + bv
 *   rope_neox(q, k); k, v into the cache; a = attention(q, cache)
 *   x += a Woᵀ
 *   xn = rms_norm(x) * ffn_norm
 *   x += (silu(xn Wgᵀ) * (xn Wuᵀ)) Wdᵀ */
#include "arch/arch.h"

#define T(id) LRUN_ARCH_TENSOR_##id
#define NO LRUN_ARCH_TENSOR_NONE
#define BUF(b) LRUN_ARCH_BUF_##b
#define DIM(d) LRUN_ARCH_DIM_##d

/* In llama.cpp's converter order (the generator writes them so). The biases
 * are required: llama.cpp's qwen2 loader requires them. */
static const lrun_arch_tensor_desc tensors[] = {
    {T(TOKEN_EMBD), "token_embd.weight", LRUN_ROLE_EMBEDDING, 1, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(OUTPUT_NORM), "output_norm.weight", LRUN_ROLE_OUTPUT_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(OUTPUT), "output.weight", LRUN_ROLE_LM_HEAD, 0, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(ROPE_FREQS), "rope_freqs.weight", LRUN_ROLE_ROPE_FREQS, 0, {DIM(ROT_HALF), DIM(NONE)}, 1},
    {T(ATTN_NORM), "blk.%d.attn_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(Q), "blk.%d.attn_q.weight", LRUN_ROLE_ATTN_Q, 1, {DIM(EMBD), DIM(Q)}, 0},
    {T(Q_BIAS), "blk.%d.attn_q.bias", LRUN_ROLE_BIAS, 1, {DIM(Q), DIM(NONE)}, 0},
    {T(K), "blk.%d.attn_k.weight", LRUN_ROLE_ATTN_K, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(K_BIAS), "blk.%d.attn_k.bias", LRUN_ROLE_BIAS, 1, {DIM(KV), DIM(NONE)}, 0},
    {T(V), "blk.%d.attn_v.weight", LRUN_ROLE_ATTN_V, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(V_BIAS), "blk.%d.attn_v.bias", LRUN_ROLE_BIAS, 1, {DIM(KV), DIM(NONE)}, 0},
    {T(O), "blk.%d.attn_output.weight", LRUN_ROLE_ATTN_OUTPUT, 1, {DIM(Q), DIM(EMBD)}, 0},
    {T(FFN_NORM), "blk.%d.ffn_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(GATE), "blk.%d.ffn_gate.weight", LRUN_ROLE_FFN_GATE, 1, {DIM(EMBD), DIM(FF)}, 0},
    {T(DOWN), "blk.%d.ffn_down.weight", LRUN_ROLE_FFN_DOWN, 1, {DIM(FF), DIM(EMBD)}, 0},
    {T(UP), "blk.%d.ffn_up.weight", LRUN_ROLE_FFN_UP, 1, {DIM(EMBD), DIM(FF)}, 0},
};

static const lrun_arch_op ops[] = {
    {LRUN_ARCH_OP_NORM, {T(ATTN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL, {T(Q), T(K), T(V)}, BUF(XN), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_BIAS, {T(Q_BIAS), T(K_BIAS), T(V_BIAS)}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ROPE_STORE, {NO, NO, NO}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ATTENTION, {NO, NO, NO}, BUF(Q), {BUF(ATTN)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(O), NO, NO}, BUF(ATTN), {BUF(X)}},
    {LRUN_ARCH_OP_NORM, {T(FFN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL_SWIGLU, {T(GATE), T(UP), NO}, BUF(XN), {BUF(GATE), BUF(UP)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(DOWN), NO, NO}, BUF(GATE), {BUF(X)}},
};

const lrun_arch lrun_arch_qwen2 = {
    "qwen2",
    lrun_arch_llama_hparams, LRUN_ARCH_LLAMA_N_HPARAMS - 1, /* no sliding window */
    tensors, (int)(sizeof tensors / sizeof tensors[0]),
    ops, (int)(sizeof ops / sizeof ops[0]),
    LRUN_ROPE_STYLE_HALF,
    NULL, 0,
    0, 0, 0, 0, /* no embedding scale, the window (if any) on every block, 1/sqrt(head_dim), one RoPE base */
    0, /* dense feed-forward */
};
