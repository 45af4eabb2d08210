/* gemma3.c — the gemma3 architecture (Gemma 3 text models): gemma2's block
 * (GeGLU, the sandwich norms, the embedding times sqrt(n_embd)) with an
 * RMSNorm over each query and key head before RoPE (attn_q_norm,
 * attn_k_norm: {head_dim}), no soft-capping, and 5 local blocks to 1
 * global: blocks l with l % 6 < 5 attend within the sliding window
 * (gemma3.attention.sliding_window, required as in llama.cpp) and rotate
 * with RoPE base 10000 and no linear scaling; the others (5, 11, …) see
 * every position and take rope.freq_base and the file's scaling
 * (llama.cpp's set_swa_pattern(6), rope_freq_base_train_swa). llama.cpp's
 * converter adds 1 to every Gemma 3 norm weight (norm_shift), so NORM and
 * HEAD_NORM apply them as given. Per block:
 *
 *   xn = rms_norm(x) * attn_norm
 *   q, k, v = xn Wqᵀ, xn Wkᵀ, xn Wvᵀ
 *   q_h = rms_norm(q_h) * q_norm, k_h = rms_norm(k_h) * k_norm, for each head h
 *   rope_neox(q, k) at the block's base; k, v into the cache; a = attention(q, cache)
 *   x += rms_norm(a Woᵀ) * post_attention_norm
 *   xn = rms_norm(x) * ffn_norm
 *   x += rms_norm((gelu(xn Wgᵀ) * (xn Wuᵀ)) Wdᵀ) * post_ffw_norm
 *
 * The attention scale is 1/sqrt(head_dim), or 1/sqrt(n_embd/n_head) for
 * the 27B (62 blocks), as llama.cpp chooses it. */
#include "arch/arch_rows.h"

/* llama's keys, and the window, which llama.cpp requires for gemma3. */
static const lrun_arch_hparam_desc hparams[] = {
    ARCH_HPARAM_ROWS_SIZES,
    ARCH_HPARAM_ROW_FF("feed_forward_length"),
    ARCH_HPARAM_ROWS_ATTENTION,
    ARCH_HPARAM_ROW_SWA(DEF(REQUIRED), 0),
};

/* In gguf-py's MODEL_TENSORS order (the generator writes them so). */
static const lrun_arch_tensor_desc tensors[] = {
    ARCH_ROW_TOKEN_EMBD,
    ARCH_ROW_OUTPUT(0),
    ARCH_ROW_OUTPUT_NORM,
    ARCH_ROWS_QKVO_HEAD_NORMED,
    ARCH_ROWS_GATE_DOWN_UP,
    ARCH_ROWS_SANDWICH_NORMS,
};

static const lrun_arch_op ops[] = {
    ARCH_OP_ATTN_NORM, ARCH_OP_QKV, ARCH_OP_QK_HEAD_NORM,
    ARCH_OP_ROPE_STORE, ARCH_OP_ATTENTION(NO), ARCH_OP_O_NORM_ADD,
    ARCH_OP_FFN_NORM, ARCH_OP_GEGLU, ARCH_OP_DOWN_NORM_ADD,
};

/* Dense. */
const lrun_arch lrun_arch_gemma3 = {
    .name = "gemma3",
    .hparams = hparams, .n_hparams = ARCH_N(hparams),
    ARCH_TABLES(tensors, ops),
    .rope_style = LRUN_ROPE_STYLE_HALF,
    .embd_scale = 1,             /* embedding times sqrt(n_embd) */
    .swa_pattern = 6,            /* 5 windowed blocks, then 1 global */
    .big_attn_scale_layers = 62, /* the 27B's attention scale */
    .rope_base_local = 10000.0,  /* the windowed blocks' RoPE base */
};
