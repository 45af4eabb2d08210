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
#include "arch/arch_rows.h"

/* A fused tensor comes before its parts: a file name matches the first
 * description that has it (phi3's ffn_up is the fused [gate; up]). The parts
 * are required after the split; the generator writes the fused ones. */
static const lrun_arch_tensor_desc tensors[] = {
    ARCH_ROWS_MODEL(0),
    {T(ROPE_LONG), "rope_factors_long.weight", LRUN_ROLE_ROPE_FREQS, 0, {DIM(ROT_HALF), DIM(NONE)}, 1},
    {T(ROPE_SHORT), "rope_factors_short.weight", LRUN_ROLE_ROPE_FREQS, 0, {DIM(ROT_HALF), DIM(NONE)}, 1},
    ARCH_ROW_ATTN_NORM,
    {T(QKV), "blk.%d.attn_qkv.weight", LRUN_ROLE_ATTN_Q, 0, {DIM(EMBD), DIM(QKV)}, 0},
    ARCH_ROWS_QKVO,
    ARCH_ROW_FFN_NORM,
    ARCH_ROW_DOWN,
    {T(GATE_UP), "blk.%d.ffn_up.weight", LRUN_ROLE_FFN_UP, 0, {DIM(EMBD), DIM(FF2)}, 0},
    ARCH_ROW_GATE,
    ARCH_ROW_UP,
};

static const lrun_arch_split splits[] = {
    {T(QKV), {T(Q), T(K), T(V)}},
    {T(GATE_UP), {T(GATE), T(UP), NO}},
};

static const lrun_arch_op ops[] = {
    ARCH_OP_ATTN_NORM, ARCH_OP_QKV,
    ARCH_OP_ROPE_STORE, ARCH_OP_ATTENTION(NO), ARCH_OP_O_ADD(NO),
    ARCH_OP_FFN_NORM, ARCH_OP_SWIGLU, ARCH_OP_DOWN_ADD,
};

/* No embedding scale, 1/sqrt(head_dim), one RoPE base, dense. */
const lrun_arch lrun_arch_phi3 = {
    .name = "phi3",
    .hparams = lrun_arch_llama_hparams, .n_hparams = LRUN_ARCH_LLAMA_N_HPARAMS - 1, /* no sliding window */
    ARCH_TABLES(tensors, ops),
    .rope_style = LRUN_ROPE_STYLE_HALF,
    .splits = splits, .n_splits = ARCH_N(splits),
};
