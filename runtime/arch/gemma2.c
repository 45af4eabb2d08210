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
#include "arch/arch_rows.h"

/* llama's keys, and gemma2's window and caps with llama.cpp's defaults. */
static const lrun_arch_hparam_desc hparams[] = {
    ARCH_HPARAM_ROWS_SIZES,
    ARCH_HPARAM_ROW_FF("feed_forward_length"),
    ARCH_HPARAM_ROWS_ATTENTION,
    ARCH_HPARAM_ROW_SWA(DEF(VALUE), 4096),
    {HP(ATTN_SOFTCAP), "attn_logit_softcapping", KIND(POS_FLOAT), DEF(VALUE), 50.0, 0},
    {HP(FINAL_SOFTCAP), "final_logit_softcapping", KIND(POS_FLOAT), DEF(VALUE), 30.0, 0},
};

/* In gguf-py's MODEL_TENSORS order (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    ARCH_ROW_TOKEN_EMBD,
    ARCH_ROW_OUTPUT_NORM,
    ARCH_ROWS_QKVO,
    ARCH_ROWS_GATE_DOWN_UP,
    ARCH_ROWS_SANDWICH_NORMS,
};

static const lrun_arch_op ops[] = {
    ARCH_OP_ATTN_NORM, ARCH_OP_QKV,
    ARCH_OP_ROPE_STORE, ARCH_OP_ATTENTION(NO), ARCH_OP_O_NORM_ADD,
    ARCH_OP_FFN_NORM, ARCH_OP_GEGLU, ARCH_OP_DOWN_NORM_ADD,
};

/* One RoPE base, dense. */
const lrun_arch lrun_arch_gemma2 = {
    .name = "gemma2",
    .hparams = hparams, .n_hparams = ARCH_N(hparams),
    ARCH_TABLES(tensors, ops),
    .rope_style = LRUN_ROPE_STYLE_HALF,
    .embd_scale = 1,             /* embedding times sqrt(n_embd) */
    .swa_pattern = 2,            /* the window on the even blocks */
    .big_attn_scale_layers = 46, /* the 27B's attention scale */
};
