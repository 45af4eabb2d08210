/* llama.c — the llama architecture (Llama 1-3, SmolLM, Mistral with or
 * without a sliding window, TinyLlama …): pre-norm blocks of grouped-query
 * attention and a SwiGLU feed-forward, RMSNorm, RoPE on adjacent pairs
 * (the GGUF converter permuted q and k for it); with
 * llama.attention.sliding_window, each position attends to the last
 * n_swa positions only (itself included). Per block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ, xn Wkᵀ, xn Wvᵀ  (+ biases when the file has them)
 *   rope(q, k); k, v into the cache; a = attention(q, cache)
 *   x += a Woᵀ (+ bo)
 *   xn = rms_norm(x) * ffn_norm
 *   x += (silu(xn Wgᵀ) * (xn Wuᵀ)) Wdᵀ */
#include "arch/arch.h"

#define T(id) LRUN_ARCH_TENSOR_##id
#define NO LRUN_ARCH_TENSOR_NONE
#define BUF(b) LRUN_ARCH_BUF_##b
#define DIM(d) LRUN_ARCH_DIM_##d

/* Also qwen2's and qwen3's: the same keys under their own prefix. */
const lrun_arch_hparam_desc lrun_arch_llama_hparams[LRUN_ARCH_LLAMA_MOE_N_HPARAMS] = {
    {LRUN_ARCH_HPARAM_CTX_TRAIN, "context_length", LRUN_ARCH_HPARAM_KIND_CTX, LRUN_ARCH_DEFAULT_REQUIRED, 0, 0},
    {LRUN_ARCH_HPARAM_EMBD, "embedding_length", LRUN_ARCH_HPARAM_KIND_DIM, LRUN_ARCH_DEFAULT_REQUIRED, 0, 0},
    {LRUN_ARCH_HPARAM_LAYER, "block_count", LRUN_ARCH_HPARAM_KIND_DIM, LRUN_ARCH_DEFAULT_REQUIRED, 0, 0},
    {LRUN_ARCH_HPARAM_FF, "feed_forward_length", LRUN_ARCH_HPARAM_KIND_DIM, LRUN_ARCH_DEFAULT_REQUIRED, 0, 0},
    {LRUN_ARCH_HPARAM_HEAD, "attention.head_count", LRUN_ARCH_HPARAM_KIND_DIM, LRUN_ARCH_DEFAULT_REQUIRED, 0, 0},
    {LRUN_ARCH_HPARAM_HEAD_KV, "attention.head_count_kv", LRUN_ARCH_HPARAM_KIND_DIM, LRUN_ARCH_DEFAULT_SAME_AS, 0,
     LRUN_ARCH_HPARAM_HEAD},
    {LRUN_ARCH_HPARAM_HEAD_DIM, "attention.key_length", LRUN_ARCH_HPARAM_KIND_DIM,
     LRUN_ARCH_DEFAULT_EMBD_PER_HEAD, 0, 0},
    {LRUN_ARCH_HPARAM_V_DIM, "attention.value_length", LRUN_ARCH_HPARAM_KIND_DIM, LRUN_ARCH_DEFAULT_SAME_AS, 0,
     LRUN_ARCH_HPARAM_HEAD_DIM},
    {LRUN_ARCH_HPARAM_ROT, "rope.dimension_count", LRUN_ARCH_HPARAM_KIND_DIM, LRUN_ARCH_DEFAULT_SAME_AS, 0,
     LRUN_ARCH_HPARAM_HEAD_DIM},
    {LRUN_ARCH_HPARAM_RMS_EPS, "attention.layer_norm_rms_epsilon", LRUN_ARCH_HPARAM_KIND_POS_FLOAT,
     LRUN_ARCH_DEFAULT_REQUIRED, 0, 0},
    {LRUN_ARCH_HPARAM_ROPE_BASE, "rope.freq_base", LRUN_ARCH_HPARAM_KIND_POS_FLOAT, LRUN_ARCH_DEFAULT_VALUE, 10000.0,
     0},
    /* last: the others share the entries before it */
    {LRUN_ARCH_HPARAM_SWA, "attention.sliding_window", LRUN_ARCH_HPARAM_KIND_COUNT0, LRUN_ARCH_DEFAULT_VALUE, 0, 0},
    /* Mixtral's (lrun_arch_llama_moe) */
    {LRUN_ARCH_HPARAM_EXPERT, "expert_count", LRUN_ARCH_HPARAM_KIND_DIM, LRUN_ARCH_DEFAULT_REQUIRED, 0, 0},
    {LRUN_ARCH_HPARAM_EXPERT_USED, "expert_used_count", LRUN_ARCH_HPARAM_KIND_DIM, LRUN_ARCH_DEFAULT_REQUIRED, 0, 0},
};

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
    {T(Q_BIAS), "blk.%d.attn_q.bias", LRUN_ROLE_BIAS, 0, {DIM(Q), DIM(NONE)}, 0},
    {T(K_BIAS), "blk.%d.attn_k.bias", LRUN_ROLE_BIAS, 0, {DIM(KV), DIM(NONE)}, 0},
    {T(V_BIAS), "blk.%d.attn_v.bias", LRUN_ROLE_BIAS, 0, {DIM(KV), DIM(NONE)}, 0},
    {T(O_BIAS), "blk.%d.attn_output.bias", LRUN_ROLE_BIAS, 0, {DIM(EMBD), DIM(NONE)}, 0},
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
    {LRUN_ARCH_OP_MATMUL_ADD, {T(O), T(O_BIAS), NO}, BUF(ATTN), {BUF(X)}},
    {LRUN_ARCH_OP_NORM, {T(FFN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL_SWIGLU, {T(GATE), T(UP), NO}, BUF(XN), {BUF(GATE), BUF(UP)}},
    {LRUN_ARCH_OP_MATMUL_ADD, {T(DOWN), NO, NO}, BUF(GATE), {BUF(X)}},
};

const lrun_arch lrun_arch_llama = {
    "llama",
    lrun_arch_llama_hparams, LRUN_ARCH_LLAMA_N_HPARAMS,
    tensors, (int)(sizeof tensors / sizeof tensors[0]),
    ops, (int)(sizeof ops / sizeof ops[0]),
    LRUN_ROPE_STYLE_ADJACENT,
    NULL, 0,
    0, 0, 0, 0, /* no embedding scale, the window (if any) on every block, 1/sqrt(head_dim), one RoPE base */
    0, /* dense feed-forward */
};
