/* gpt_oss.c — the gpt-oss architecture (gpt-oss-20b, gpt-oss-120b), as
 * llama.cpp's openai-moe graph computes it. Per block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ + bq, xn Wkᵀ + bk, xn Wvᵀ + bv
 *   rope_neox(q, k) with YaRN scaling; k, v into the cache
 *   a = softmax over [q Kᵀ / sqrt(head_dim), sink_h] of V: each head's learned
 *       sink logit only in the denominator; the even blocks see their last
 *       attention.sliding_window positions, the odd blocks all
 *   x += a Woᵀ + bo
 *   xn = rms_norm(x) * post_attention_norm
 *   l = xn Wrᵀ + br; E = the n_expert_used largest logits
 *   w = softmax(l[E]) over the chosen experts only
 *   x += sum_{e in E} w_e · (swiglu_oai(xn G_eᵀ + bg_e, xn U_eᵀ + bu_e) D_eᵀ + bd_e)
 *   swiglu_oai(g, u) = min(g, 7) · sigmoid(1.702 · min(g, 7)) · (clamp(u, -7, 7) + 1)
 *
 * GGUF names it post_attention_norm; it is the feed-forward's pre-norm
 * (FFN_NORM here). The experts' biases ({n_ff | n_embd, n_expert}, expert e
 * the row e) are read by the MOE_FFN_ADD op of an architecture with
 * moe_oai set. llama.cpp requires the output head (no tying) and reads the
 * q/k/v biases as optional; every gpt-oss file has them, so they are
 * required here too. docs/moe.md has the arithmetic. */
#include "arch/arch.h"

#define T(id) LRUN_ARCH_TENSOR_##id
#define NO LRUN_ARCH_TENSOR_NONE
#define BUF(b) LRUN_ARCH_BUF_##b
#define DIM(d) LRUN_ARCH_DIM_##d
#define HP(id) LRUN_ARCH_HPARAM_##id
#define KIND(k) LRUN_ARCH_HPARAM_KIND_##k
#define DEF(d) LRUN_ARCH_DEFAULT_##d

/* llama.cpp's required keys: the experts' width, the window, the expert counts */
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
    {HP(SWA), "attention.sliding_window", KIND(COUNT0), DEF(REQUIRED), 0, 0},
    {HP(EXPERT), "expert_count", KIND(DIM), DEF(REQUIRED), 0, 0},
    {HP(EXPERT_USED), "expert_used_count", KIND(DIM), DEF(REQUIRED), 0, 0},
};

/* In gguf-py's MODEL_TENSORS[GPT_OSS] order, each weight's bias after it (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    {T(TOKEN_EMBD), "token_embd.weight", LRUN_ROLE_EMBEDDING, 1, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(OUTPUT_NORM), "output_norm.weight", LRUN_ROLE_OUTPUT_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(OUTPUT), "output.weight", LRUN_ROLE_LM_HEAD, 1, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(ATTN_NORM), "blk.%d.attn_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(FFN_NORM), "blk.%d.post_attention_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(Q), "blk.%d.attn_q.weight", LRUN_ROLE_ATTN_Q, 1, {DIM(EMBD), DIM(Q)}, 0},
    {T(Q_BIAS), "blk.%d.attn_q.bias", LRUN_ROLE_BIAS, 1, {DIM(Q), DIM(NONE)}, 0},
    {T(K), "blk.%d.attn_k.weight", LRUN_ROLE_ATTN_K, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(K_BIAS), "blk.%d.attn_k.bias", LRUN_ROLE_BIAS, 1, {DIM(KV), DIM(NONE)}, 0},
    {T(V), "blk.%d.attn_v.weight", LRUN_ROLE_ATTN_V, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(V_BIAS), "blk.%d.attn_v.bias", LRUN_ROLE_BIAS, 1, {DIM(KV), DIM(NONE)}, 0},
    {T(O), "blk.%d.attn_output.weight", LRUN_ROLE_ATTN_OUTPUT, 1, {DIM(Q), DIM(EMBD)}, 0},
    {T(O_BIAS), "blk.%d.attn_output.bias", LRUN_ROLE_BIAS, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(ATTN_SINKS), "blk.%d.attn_sinks.weight", LRUN_ROLE_BIAS, 1, {DIM(N_HEAD), DIM(NONE)}, 0},
    {T(GATE_INP), "blk.%d.ffn_gate_inp.weight", LRUN_ROLE_FFN_GATE_INP, 1, {DIM(EMBD), DIM(EXPERT)}, 0},
    {T(GATE_INP_B), "blk.%d.ffn_gate_inp.bias", LRUN_ROLE_BIAS, 1, {DIM(EXPERT), DIM(NONE)}, 0},
    {T(GATE_EXPS), "blk.%d.ffn_gate_exps.weight", LRUN_ROLE_FFN_GATE_EXPS, 1, {DIM(EMBD), DIM(FF), DIM(EXPERT)}, 0},
    {T(GATE_EXPS_B), "blk.%d.ffn_gate_exps.bias", LRUN_ROLE_BIAS, 1, {DIM(FF), DIM(EXPERT)}, 0},
    {T(DOWN_EXPS), "blk.%d.ffn_down_exps.weight", LRUN_ROLE_FFN_DOWN_EXPS, 1, {DIM(FF), DIM(EMBD), DIM(EXPERT)}, 0},
    {T(DOWN_EXPS_B), "blk.%d.ffn_down_exps.bias", LRUN_ROLE_BIAS, 1, {DIM(EMBD), DIM(EXPERT)}, 0},
    {T(UP_EXPS), "blk.%d.ffn_up_exps.weight", LRUN_ROLE_FFN_UP_EXPS, 1, {DIM(EMBD), DIM(FF), DIM(EXPERT)}, 0},
    {T(UP_EXPS_B), "blk.%d.ffn_up_exps.bias", LRUN_ROLE_BIAS, 1, {DIM(FF), DIM(EXPERT)}, 0},
};

static const lrun_arch_op ops[] = {
    {LRUN_ARCH_OP_NORM, {T(ATTN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL, {T(Q), T(K), T(V)}, BUF(XN), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_BIAS, {T(Q_BIAS), T(K_BIAS), T(V_BIAS)}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ROPE_STORE, {NO, NO, NO}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ATTENTION, {T(ATTN_SINKS), NO, NO}, BUF(Q), {BUF(ATTN)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(O), T(O_BIAS), NO}, BUF(ATTN), {BUF(X)}},
    {LRUN_ARCH_OP_NORM, {T(FFN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MOE_ROUTE, {T(GATE_INP), T(GATE_INP_B), NO}, BUF(XN), {BUF(ROUTER)}},
    {LRUN_ARCH_OP_MOE_FFN_ADD, {T(GATE_EXPS), T(UP_EXPS), T(DOWN_EXPS)}, BUF(XN), {BUF(X)}},
};

const lrun_arch lrun_arch_gpt_oss = {
    "gpt-oss",
    hparams, (int)(sizeof hparams / sizeof hparams[0]),
    tensors, (int)(sizeof tensors / sizeof tensors[0]),
    ops, (int)(sizeof ops / sizeof ops[0]),
    LRUN_ROPE_STYLE_HALF,
    NULL, 0,
    0, /* no embedding scale */
    2, /* the window on the even blocks (llama.cpp's swa pattern 2) */
    0, /* 1/sqrt(head_dim) */
    0, /* one RoPE base */
    1, /* moe_oai: biases, top-k logits then softmax, swiglu_oai */
};
