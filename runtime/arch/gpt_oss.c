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
#include "arch/arch_rows.h"

/* llama.cpp's required keys: the experts' width, the window, the expert counts */
static const lrun_arch_hparam_desc hparams[] = {
    ARCH_HPARAM_ROWS_SIZES,
    ARCH_HPARAM_ROW_FF("expert_feed_forward_length"),
    ARCH_HPARAM_ROWS_ATTENTION,
    ARCH_HPARAM_ROW_SWA(DEF(REQUIRED), 0),
    ARCH_HPARAM_ROWS_EXPERTS,
};

/* In gguf-py's MODEL_TENSORS[GPT_OSS] order, each weight's bias after it (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    ARCH_ROWS_MODEL(1),
    ARCH_ROW_ATTN_NORM,
    {T(FFN_NORM), "blk.%d.post_attention_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    ARCH_ROWS_QKV_BIASED,
    ARCH_ROW_O,
    ARCH_ROW_O_BIAS(1),
    {T(ATTN_SINKS), "blk.%d.attn_sinks.weight", LRUN_ROLE_BIAS, 1, {DIM(N_HEAD), DIM(NONE)}, 0},
    ARCH_ROW_GATE_INP,
    {T(GATE_INP_B), "blk.%d.ffn_gate_inp.bias", LRUN_ROLE_BIAS, 1, {DIM(EXPERT), DIM(NONE)}, 0},
    ARCH_ROW_GATE_EXPS,
    {T(GATE_EXPS_B), "blk.%d.ffn_gate_exps.bias", LRUN_ROLE_BIAS, 1, {DIM(FF), DIM(EXPERT)}, 0},
    ARCH_ROW_DOWN_EXPS,
    {T(DOWN_EXPS_B), "blk.%d.ffn_down_exps.bias", LRUN_ROLE_BIAS, 1, {DIM(EMBD), DIM(EXPERT)}, 0},
    ARCH_ROW_UP_EXPS,
    {T(UP_EXPS_B), "blk.%d.ffn_up_exps.bias", LRUN_ROLE_BIAS, 1, {DIM(FF), DIM(EXPERT)}, 0},
};

static const lrun_arch_op ops[] = {
    ARCH_OP_ATTN_NORM, ARCH_OP_QKV, ARCH_OP_QKV_BIAS,
    ARCH_OP_ROPE_STORE, ARCH_OP_ATTENTION(T(ATTN_SINKS)), ARCH_OP_O_ADD(T(O_BIAS)),
    ARCH_OP_FFN_NORM, ARCH_OP_MOE_ROUTE(T(GATE_INP_B)), ARCH_OP_MOE_FFN_ADD,
};

/* No embedding scale, 1/sqrt(head_dim), one RoPE base. */
const lrun_arch lrun_arch_gpt_oss = {
    .name = "gpt-oss",
    .hparams = hparams, .n_hparams = ARCH_N(hparams),
    ARCH_TABLES(tensors, ops),
    .rope_style = LRUN_ROPE_STYLE_HALF,
    .swa_pattern = 2, /* the window on the even blocks (llama.cpp's swa pattern 2) */
    .moe_oai = 1,     /* biases, top-k logits then softmax, swiglu_oai */
};
