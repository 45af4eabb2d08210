/* arch_rows.h — the table rows several architectures share, defined once.
 *
 * Only the description files (runtime/arch/<name>.c) include this. Each
 * still lists its own hparams, tensors and ops, in its file's order, but
 * names a shared row (or a run of rows that always come together) by a
 * macro instead of spelling it again; what an architecture has of its own
 * stays spelled out in its file. tests/c/test_arch_tables.c checks that the
 * tables are what they were before the rows moved here. */
#ifndef LRUN_ARCH_ROWS_H
#define LRUN_ARCH_ROWS_H

#include "arch/arch.h"

/* ---------------------------------------------------------------- short names */

#define T(id) LRUN_ARCH_TENSOR_##id
#define NO LRUN_ARCH_TENSOR_NONE
#define BUF(b) LRUN_ARCH_BUF_##b
#define DIM(d) LRUN_ARCH_DIM_##d
#define HP(id) LRUN_ARCH_HPARAM_##id
#define KIND(k) LRUN_ARCH_HPARAM_KIND_##k
#define DEF(d) LRUN_ARCH_DEFAULT_##d

/* A static table and its length, as struct lrun_arch's designated fields. */
#define ARCH_N(t) ((int)(sizeof t / sizeof t[0]))
#define ARCH_TABLES(t, o) .tensors = (t), .n_tensors = ARCH_N(t), .ops = (o), .n_ops = ARCH_N(o)

/* ---------------------------------------------------------------- hyper-parameters */

/* The model's sizes, which every architecture reads first. */
#define ARCH_HPARAM_ROWS_SIZES                                           \
    {HP(CTX_TRAIN), "context_length", KIND(CTX), DEF(REQUIRED), 0, 0},   \
    {HP(EMBD), "embedding_length", KIND(DIM), DEF(REQUIRED), 0, 0},      \
    {HP(LAYER), "block_count", KIND(DIM), DEF(REQUIRED), 0, 0}

/* n_ff from key: "feed_forward_length", or the experts' "expert_feed_forward_length". */
#define ARCH_HPARAM_ROW_FF(key) {HP(FF), key, KIND(DIM), DEF(REQUIRED), 0, 0}

/* The heads, their sizes (defaults from n_embd / n_head), the norm's epsilon, RoPE's base. */
#define ARCH_HPARAM_ROWS_ATTENTION                                                                  \
    {HP(HEAD), "attention.head_count", KIND(DIM), DEF(REQUIRED), 0, 0},                             \
    {HP(HEAD_KV), "attention.head_count_kv", KIND(DIM), DEF(SAME_AS), 0, HP(HEAD)},                 \
    {HP(HEAD_DIM), "attention.key_length", KIND(DIM), DEF(EMBD_PER_HEAD), 0, 0},                    \
    {HP(V_DIM), "attention.value_length", KIND(DIM), DEF(SAME_AS), 0, HP(HEAD_DIM)},                \
    {HP(ROT), "rope.dimension_count", KIND(DIM), DEF(SAME_AS), 0, HP(HEAD_DIM)},                    \
    {HP(RMS_EPS), "attention.layer_norm_rms_epsilon", KIND(POS_FLOAT), DEF(REQUIRED), 0, 0},        \
    {HP(ROPE_BASE), "rope.freq_base", KIND(POS_FLOAT), DEF(VALUE), 10000.0, 0}

/* The sliding window: def DEF(VALUE) with its value, or DEF(REQUIRED) and 0. */
#define ARCH_HPARAM_ROW_SWA(def, value) {HP(SWA), "attention.sliding_window", KIND(COUNT0), def, value, 0}

/* A mixture of experts' counts. */
#define ARCH_HPARAM_ROWS_EXPERTS                                                 \
    {HP(EXPERT), "expert_count", KIND(DIM), DEF(REQUIRED), 0, 0},                \
    {HP(EXPERT_USED), "expert_used_count", KIND(DIM), DEF(REQUIRED), 0, 0}

/* ---------------------------------------------------------------- tensors */

/* The model's own tensors; req: 1 when the output head is required (no tying). */
#define ARCH_ROW_TOKEN_EMBD {T(TOKEN_EMBD), "token_embd.weight", LRUN_ROLE_EMBEDDING, 1, {DIM(EMBD), DIM(VOCAB)}, 0}
#define ARCH_ROW_OUTPUT_NORM \
    {T(OUTPUT_NORM), "output_norm.weight", LRUN_ROLE_OUTPUT_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0}
#define ARCH_ROW_OUTPUT(req) {T(OUTPUT), "output.weight", LRUN_ROLE_LM_HEAD, req, {DIM(EMBD), DIM(VOCAB)}, 0}
#define ARCH_ROWS_MODEL(req) ARCH_ROW_TOKEN_EMBD, ARCH_ROW_OUTPUT_NORM, ARCH_ROW_OUTPUT(req)
#define ARCH_ROW_ROPE_FREQS \
    {T(ROPE_FREQS), "rope_freqs.weight", LRUN_ROLE_ROPE_FREQS, 0, {DIM(ROT_HALF), DIM(NONE)}, 1}

/* Attention: the projections, their biases (req: 0 optional, 1 required), the per-head norms. */
#define ARCH_ROW_ATTN_NORM \
    {T(ATTN_NORM), "blk.%d.attn_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0}
#define ARCH_ROW_Q {T(Q), "blk.%d.attn_q.weight", LRUN_ROLE_ATTN_Q, 1, {DIM(EMBD), DIM(Q)}, 0}
#define ARCH_ROW_K {T(K), "blk.%d.attn_k.weight", LRUN_ROLE_ATTN_K, 1, {DIM(EMBD), DIM(KV)}, 0}
#define ARCH_ROW_V {T(V), "blk.%d.attn_v.weight", LRUN_ROLE_ATTN_V, 1, {DIM(EMBD), DIM(KV)}, 0}
#define ARCH_ROW_O {T(O), "blk.%d.attn_output.weight", LRUN_ROLE_ATTN_OUTPUT, 1, {DIM(Q), DIM(EMBD)}, 0}
#define ARCH_ROW_Q_BIAS(req) {T(Q_BIAS), "blk.%d.attn_q.bias", LRUN_ROLE_BIAS, req, {DIM(Q), DIM(NONE)}, 0}
#define ARCH_ROW_K_BIAS(req) {T(K_BIAS), "blk.%d.attn_k.bias", LRUN_ROLE_BIAS, req, {DIM(KV), DIM(NONE)}, 0}
#define ARCH_ROW_V_BIAS(req) {T(V_BIAS), "blk.%d.attn_v.bias", LRUN_ROLE_BIAS, req, {DIM(KV), DIM(NONE)}, 0}
#define ARCH_ROW_O_BIAS(req) {T(O_BIAS), "blk.%d.attn_output.bias", LRUN_ROLE_BIAS, req, {DIM(EMBD), DIM(NONE)}, 0}
#define ARCH_ROW_Q_NORM \
    {T(Q_NORM), "blk.%d.attn_q_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(HEAD), DIM(NONE)}, 0}
#define ARCH_ROW_K_NORM \
    {T(K_NORM), "blk.%d.attn_k_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(HEAD), DIM(NONE)}, 0}
#define ARCH_ROWS_QKVO ARCH_ROW_Q, ARCH_ROW_K, ARCH_ROW_V, ARCH_ROW_O
/* qwen3's order: each head norm after its projection */
#define ARCH_ROWS_QKVO_HEAD_NORMED ARCH_ROW_Q, ARCH_ROW_Q_NORM, ARCH_ROW_K, ARCH_ROW_K_NORM, ARCH_ROW_V, ARCH_ROW_O
/* qwen2's order: each required bias after its projection */
#define ARCH_ROWS_QKV_BIASED \
    ARCH_ROW_Q, ARCH_ROW_Q_BIAS(1), ARCH_ROW_K, ARCH_ROW_K_BIAS(1), ARCH_ROW_V, ARCH_ROW_V_BIAS(1)

/* Feed-forward: dense (gate, down, up in gguf-py's order), the experts', gemma's sandwich norms. */
#define ARCH_ROW_FFN_NORM \
    {T(FFN_NORM), "blk.%d.ffn_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0}
#define ARCH_ROW_GATE {T(GATE), "blk.%d.ffn_gate.weight", LRUN_ROLE_FFN_GATE, 1, {DIM(EMBD), DIM(FF)}, 0}
#define ARCH_ROW_DOWN {T(DOWN), "blk.%d.ffn_down.weight", LRUN_ROLE_FFN_DOWN, 1, {DIM(FF), DIM(EMBD)}, 0}
#define ARCH_ROW_UP {T(UP), "blk.%d.ffn_up.weight", LRUN_ROLE_FFN_UP, 1, {DIM(EMBD), DIM(FF)}, 0}
#define ARCH_ROWS_GATE_DOWN_UP ARCH_ROW_GATE, ARCH_ROW_DOWN, ARCH_ROW_UP
#define ARCH_ROW_GATE_INP \
    {T(GATE_INP), "blk.%d.ffn_gate_inp.weight", LRUN_ROLE_FFN_GATE_INP, 1, {DIM(EMBD), DIM(EXPERT)}, 0}
#define ARCH_ROW_GATE_EXPS \
    {T(GATE_EXPS), "blk.%d.ffn_gate_exps.weight", LRUN_ROLE_FFN_GATE_EXPS, 1, {DIM(EMBD), DIM(FF), DIM(EXPERT)}, 0}
#define ARCH_ROW_DOWN_EXPS \
    {T(DOWN_EXPS), "blk.%d.ffn_down_exps.weight", LRUN_ROLE_FFN_DOWN_EXPS, 1, {DIM(FF), DIM(EMBD), DIM(EXPERT)}, 0}
#define ARCH_ROW_UP_EXPS \
    {T(UP_EXPS), "blk.%d.ffn_up_exps.weight", LRUN_ROLE_FFN_UP_EXPS, 1, {DIM(EMBD), DIM(FF), DIM(EXPERT)}, 0}
#define ARCH_ROWS_EXPERTS ARCH_ROW_GATE_EXPS, ARCH_ROW_DOWN_EXPS, ARCH_ROW_UP_EXPS
#define ARCH_ROWS_SANDWICH_NORMS                                                                             \
    ARCH_ROW_ATTN_NORM,                                                                                      \
    {T(ATTN_POST_NORM), "blk.%d.post_attention_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0}, \
    ARCH_ROW_FFN_NORM,                                                                                       \
    {T(FFN_POST_NORM), "blk.%d.post_ffw_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0}

/* ---------------------------------------------------------------- ops of a block */

/* The attention sublayer's: xn = norm(x); q, k, v; their biases or per-head norms; RoPE and the
 * cache; attention (sinks: gpt-oss's, or NO); x += the output projection (+ bias, or NO). */
#define ARCH_OP_ATTN_NORM {LRUN_ARCH_OP_NORM, {T(ATTN_NORM), NO, NO}, BUF(X), {BUF(XN)}}
#define ARCH_OP_QKV {LRUN_ARCH_OP_MATMUL, {T(Q), T(K), T(V)}, BUF(XN), {BUF(Q), BUF(K), BUF(V)}}
#define ARCH_OP_QKV_BIAS {LRUN_ARCH_OP_BIAS, {T(Q_BIAS), T(K_BIAS), T(V_BIAS)}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}}
#define ARCH_OP_QK_HEAD_NORM {LRUN_ARCH_OP_HEAD_NORM, {T(Q_NORM), T(K_NORM), NO}, BUF(Q), {BUF(Q), BUF(K)}}
#define ARCH_OP_ROPE_STORE {LRUN_ARCH_OP_ROPE_STORE, {NO, NO, NO}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}}
#define ARCH_OP_ATTENTION(sinks) {LRUN_ARCH_OP_ATTENTION, {sinks, NO, NO}, BUF(Q), {BUF(ATTN)}}
#define ARCH_OP_O_ADD(bias) {LRUN_ARCH_OP_MATMUL_ADD, {T(O), bias, NO}, BUF(ATTN), {BUF(X)}}
#define ARCH_OP_O_NORM_ADD {LRUN_ARCH_OP_MATMUL_NORM_ADD, {T(O), T(ATTN_POST_NORM), NO}, BUF(ATTN), {BUF(X)}}

/* The feed-forward's: xn = norm(x); SwiGLU or GeGLU, then x += the down projection; or the experts'
 * router (bias: gpt-oss's, or NO) and their sum. */
#define ARCH_OP_FFN_NORM {LRUN_ARCH_OP_NORM, {T(FFN_NORM), NO, NO}, BUF(X), {BUF(XN)}}
#define ARCH_OP_SWIGLU {LRUN_ARCH_OP_MATMUL_SWIGLU, {T(GATE), T(UP), NO}, BUF(XN), {BUF(GATE), BUF(UP)}}
#define ARCH_OP_GEGLU {LRUN_ARCH_OP_MATMUL_GEGLU, {T(GATE), T(UP), NO}, BUF(XN), {BUF(GATE), BUF(UP)}}
#define ARCH_OP_DOWN_ADD {LRUN_ARCH_OP_MATMUL_ADD, {T(DOWN), NO, NO}, BUF(GATE), {BUF(X)}}
#define ARCH_OP_DOWN_NORM_ADD \
    {LRUN_ARCH_OP_MATMUL_NORM_ADD, {T(DOWN), T(FFN_POST_NORM), NO}, BUF(GATE), {BUF(X)}}
#define ARCH_OP_MOE_ROUTE(bias) {LRUN_ARCH_OP_MOE_ROUTE, {T(GATE_INP), bias, NO}, BUF(XN), {BUF(ROUTER)}}
#define ARCH_OP_MOE_FFN_ADD \
    {LRUN_ARCH_OP_MOE_FFN_ADD, {T(GATE_EXPS), T(UP_EXPS), T(DOWN_EXPS)}, BUF(XN), {BUF(X)}}

#endif
