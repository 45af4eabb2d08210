/* phi3.c — the phi3 architecture (Phi-3 and Phi-3.5 mini/medium, 4k and
 * 128k contexts): llama's block with q, k, v fused in one matrix (attn_qkv,
 * {n_embd, q_dim + 2 kv_dim}, rows [q; k; v]) and gate and up fused in
 * ffn_up ({n_embd, 2 n_ff}, rows [gate; up]), and RoPE on the half-split
 * pairs (LLAMA_ROPE_TYPE_NEOX). The loader splits both by rows (splits[]
 * below), so the block runs llama's ops; a file with separate attn_q/k/v
 * (which llama.cpp accepts too) loads as it is. The keys are llama's under
 * "phi3.". The 128k variants' LongRoPE: rope_factors_long.weight divides
 * theta when the engine's context exceeds rope.scaling.original_context_length,
 * rope_factors_short.weight otherwise, and rope.scaling.attn_factor scales
 * cos and sin (model.h: lrun_model_rope_factors, rope_attn_factor). Per block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   [q; k; v] = xn Wqkvᵀ
 *   rope_neox(q, k); k, v into the cache; a = attention(q, cache)
 *   x += a Woᵀ
 *   xn = rms_norm(x) * ffn_norm
 *   [g; u] = xn Wupᵀ;  x += (silu(g) * u) Wdᵀ */
#include "arch/arch.h"

#define T(id) LRUN_ARCH_TENSOR_##id
#define NO LRUN_ARCH_TENSOR_NONE
#define BUF(b) LRUN_ARCH_BUF_##b
#define DIM(d) LRUN_ARCH_DIM_##d

/* A fused tensor comes before its parts: a file name matches the first
 * description that has it (phi3's ffn_up is the fused [gate; up]). The parts
 * are required after the split; the generator writes the fused ones. */
static const lrun_arch_tensor_desc tensors[] = {
    {T(TOKEN_EMBD), "token_embd.weight", LRUN_ROLE_EMBEDDING, 1, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(OUTPUT_NORM), "output_norm.weight", LRUN_ROLE_OUTPUT_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(OUTPUT), "output.weight", LRUN_ROLE_LM_HEAD, 0, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(ROPE_LONG), "rope_factors_long.weight", LRUN_ROLE_ROPE_FREQS, 0, {DIM(ROT_HALF), DIM(NONE)}, 1},
    {T(ROPE_SHORT), "rope_factors_short.weight", LRUN_ROLE_ROPE_FREQS, 0, {DIM(ROT_HALF), DIM(NONE)}, 1},
    {T(ATTN_NORM), "blk.%d.attn_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(QKV), "blk.%d.attn_qkv.weight", LRUN_ROLE_ATTN_Q, 0, {DIM(EMBD), DIM(QKV)}, 0},
    {T(Q), "blk.%d.attn_q.weight", LRUN_ROLE_ATTN_Q, 1, {DIM(EMBD), DIM(Q)}, 0},
    {T(K), "blk.%d.attn_k.weight", LRUN_ROLE_ATTN_K, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(V), "blk.%d.attn_v.weight", LRUN_ROLE_ATTN_V, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(O), "blk.%d.attn_output.weight", LRUN_ROLE_ATTN_OUTPUT, 1, {DIM(Q), DIM(EMBD)}, 0},
    {T(FFN_NORM), "blk.%d.ffn_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(DOWN), "blk.%d.ffn_down.weight", LRUN_ROLE_FFN_DOWN, 1, {DIM(FF), DIM(EMBD)}, 0},
    {T(GATE_UP), "blk.%d.ffn_up.weight", LRUN_ROLE_FFN_UP, 0, {DIM(EMBD), DIM(FF2)}, 0},
    {T(GATE), "blk.%d.ffn_gate.weight", LRUN_ROLE_FFN_GATE, 1, {DIM(EMBD), DIM(FF)}, 0},
    {T(UP), "blk.%d.ffn_up.weight", LRUN_ROLE_FFN_UP, 1, {DIM(EMBD), DIM(FF)}, 0},
};

static const lrun_arch_split splits[] = {
    {T(QKV), {T(Q), T(K), T(V)}},
    {T(GATE_UP), {T(GATE), T(UP), NO}},
};

static const lrun_arch_op ops[] = {
    {LRUN_ARCH_OP_NORM, {T(ATTN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL, {T(Q), T(K), T(V)}, BUF(XN), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ROPE_STORE, {NO, NO, NO}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ATTENTION, {NO, NO, NO}, BUF(Q), {BUF(ATTN)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(O), NO, NO}, BUF(ATTN), {BUF(X)}},
    {LRUN_ARCH_OP_NORM, {T(FFN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL_SWIGLU, {T(GATE), T(UP), NO}, BUF(XN), {BUF(GATE), BUF(UP)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(DOWN), NO, NO}, BUF(GATE), {BUF(X)}},
};

const lrun_arch lrun_arch_phi3 = {
    "phi3",
    lrun_arch_llama_hparams, LRUN_ARCH_LLAMA_N_HPARAMS - 1, /* no sliding window */
    tensors, (int)(sizeof tensors / sizeof tensors[0]),
    ops, (int)(sizeof ops / sizeof ops[0]),
    LRUN_ROPE_STYLE_HALF,
    splits, (int)(sizeof splits / sizeof splits[0]),
    0, 0, 0, 0, /* no embedding scale, the window (if any) on every block, 1/sqrt(head_dim), one RoPE base */
    0, /* dense feed-forward */
};
