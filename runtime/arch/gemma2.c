/* gemma2.c — the gemma2 architecture (Gemma 2): llama's attention with
 * half-split RoPE, a GeGLU feed-forward (GELU's tanh approximation), an
 * RMSNorm after each sublayer's projection as well as before it (the
 * "sandwich"), the embedding scaled by sqrt(n_embd), attention scores and
 * final logits soft-capped (s → cap·tanh(s/cap)), and a sliding window on
 * the even blocks (llama.cpp's swa pattern 2). llama.cpp's converter adds 1
 * to Gemma's norm weights, so NORM applies them as given. The head is
 * always the embedding (llama.cpp loads no output.weight for gemma2). Per
 * block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ, xn Wkᵀ, xn Wvᵀ
 *   rope_neox(q, k); k, v into the cache; a = attention(q, cache), scores capped
 *   x += rms_norm(a Woᵀ) * post_attention_norm
 *   xn = rms_norm(x) * ffn_norm
 *   x += rms_norm((gelu(xn Wgᵀ) * (xn Wuᵀ)) Wdᵀ) * post_ffw_norm
 *
 * The attention scale is 1/sqrt(head_dim), or 1/sqrt(n_embd/n_head) for
 * the 27B (46 blocks), as llama.cpp chooses it by model size: no GGUF key
 * carries query_pre_attn_scalar. */
#include "arch/arch.h"

#define T(id) LRUN_ARCH_TENSOR_##id
#define NO LRUN_ARCH_TENSOR_NONE
#define BUF(b) LRUN_ARCH_BUF_##b
#define DIM(d) LRUN_ARCH_DIM_##d
#define H(id) LRUN_ARCH_HPARAM_##id
#define KIND(k) LRUN_ARCH_HPARAM_KIND_##k
#define DEF(d) LRUN_ARCH_DEFAULT_##d

/* llama's keys, and gemma2's window and caps with llama.cpp's defaults. */
static const lrun_arch_hparam_desc hparams[] = {
    {H(CTX_TRAIN), "context_length", KIND(CTX), DEF(REQUIRED), 0, 0},
    {H(EMBD), "embedding_length", KIND(DIM), DEF(REQUIRED), 0, 0},
    {H(LAYER), "block_count", KIND(DIM), DEF(REQUIRED), 0, 0},
    {H(FF), "feed_forward_length", KIND(DIM), DEF(REQUIRED), 0, 0},
    {H(HEAD), "attention.head_count", KIND(DIM), DEF(REQUIRED), 0, 0},
    {H(HEAD_KV), "attention.head_count_kv", KIND(DIM), DEF(SAME_AS), 0, H(HEAD)},
    {H(HEAD_DIM), "attention.key_length", KIND(DIM), DEF(EMBD_PER_HEAD), 0, 0},
    {H(V_DIM), "attention.value_length", KIND(DIM), DEF(SAME_AS), 0, H(HEAD_DIM)},
    {H(ROT), "rope.dimension_count", KIND(DIM), DEF(SAME_AS), 0, H(HEAD_DIM)},
    {H(RMS_EPS), "attention.layer_norm_rms_epsilon", KIND(POS_FLOAT), DEF(REQUIRED), 0, 0},
    {H(ROPE_BASE), "rope.freq_base", KIND(POS_FLOAT), DEF(VALUE), 10000.0, 0},
    {H(SWA), "attention.sliding_window", KIND(COUNT0), DEF(VALUE), 4096, 0},
    {H(ATTN_SOFTCAP), "attn_logit_softcapping", KIND(POS_FLOAT), DEF(VALUE), 50.0, 0},
    {H(FINAL_SOFTCAP), "final_logit_softcapping", KIND(POS_FLOAT), DEF(VALUE), 30.0, 0},
};

/* In gguf-py's MODEL_TENSORS order (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    {T(TOKEN_EMBD), "token_embd.weight", LRUN_ROLE_EMBEDDING, 1, {DIM(EMBD), DIM(VOCAB)}, 0},
    {T(OUTPUT_NORM), "output_norm.weight", LRUN_ROLE_OUTPUT_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(Q), "blk.%d.attn_q.weight", LRUN_ROLE_ATTN_Q, 1, {DIM(EMBD), DIM(Q)}, 0},
    {T(K), "blk.%d.attn_k.weight", LRUN_ROLE_ATTN_K, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(V), "blk.%d.attn_v.weight", LRUN_ROLE_ATTN_V, 1, {DIM(EMBD), DIM(KV)}, 0},
    {T(O), "blk.%d.attn_output.weight", LRUN_ROLE_ATTN_OUTPUT, 1, {DIM(Q), DIM(EMBD)}, 0},
    {T(GATE), "blk.%d.ffn_gate.weight", LRUN_ROLE_FFN_GATE, 1, {DIM(EMBD), DIM(FF)}, 0},
    {T(DOWN), "blk.%d.ffn_down.weight", LRUN_ROLE_FFN_DOWN, 1, {DIM(FF), DIM(EMBD)}, 0},
    {T(UP), "blk.%d.ffn_up.weight", LRUN_ROLE_FFN_UP, 1, {DIM(EMBD), DIM(FF)}, 0},
    {T(ATTN_NORM), "blk.%d.attn_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(ATTN_POST_NORM), "blk.%d.post_attention_norm.weight", LRUN_ROLE_ATTN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(FFN_NORM), "blk.%d.ffn_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
    {T(FFN_POST_NORM), "blk.%d.post_ffw_norm.weight", LRUN_ROLE_FFN_NORM, 1, {DIM(EMBD), DIM(NONE)}, 0},
};

static const lrun_arch_op ops[] = {
    {LRUN_ARCH_OP_NORM, {T(ATTN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL, {T(Q), T(K), T(V)}, BUF(XN), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ROPE_STORE, {NO, NO, NO}, BUF(Q), {BUF(Q), BUF(K), BUF(V)}},
    {LRUN_ARCH_OP_ATTENTION, {NO, NO, NO}, BUF(Q), {BUF(ATTN)}},
    {LRUN_ARCH_OP_MATMUL_NORM_ADD, {T(O), T(ATTN_POST_NORM), NO}, BUF(ATTN), {BUF(X)}},
    {LRUN_ARCH_OP_NORM, {T(FFN_NORM), NO, NO}, BUF(X), {BUF(XN)}},
    {LRUN_ARCH_OP_MATMUL_GEGLU, {T(GATE), T(UP), NO}, BUF(XN), {BUF(GATE), BUF(UP)}},
    {LRUN_ARCH_OP_MATMUL_NORM_ADD, {T(DOWN), T(FFN_POST_NORM), NO}, BUF(GATE), {BUF(X)}},
};

const lrun_arch lrun_arch_gemma2 = {
    "gemma2",
    hparams, (int)(sizeof hparams / sizeof hparams[0]),
    tensors, (int)(sizeof tensors / sizeof tensors[0]),
    ops, (int)(sizeof ops / sizeof ops[0]),
    LRUN_ROPE_STYLE_HALF,
    NULL, 0,
    1, /* embedding times sqrt(n_embd) */
    2, /* the window on the even blocks */
    46, /* the 27B's attention scale */
    0,  /* one RoPE base */
    0, /* dense feed-forward */
};
