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
#include "arch/arch_rows.h"

/* In llama.cpp's converter order (the generator writes them so). The biases
 * are required: llama.cpp's qwen2 loader requires them. */
static const lrun_arch_tensor_desc tensors[] = {
    ARCH_ROWS_MODEL(0),
    ARCH_ROW_ROPE_FREQS,
    ARCH_ROW_ATTN_NORM,
    ARCH_ROWS_QKV_BIASED,
    ARCH_ROW_O,
    ARCH_ROW_FFN_NORM,
    ARCH_ROWS_GATE_DOWN_UP,
};

static const lrun_arch_op ops[] = {
    ARCH_OP_ATTN_NORM, ARCH_OP_QKV, ARCH_OP_QKV_BIAS,
    ARCH_OP_ROPE_STORE, ARCH_OP_ATTENTION(NO), ARCH_OP_O_ADD(NO),
    ARCH_OP_FFN_NORM, ARCH_OP_SWIGLU, ARCH_OP_DOWN_ADD,
};

/* No embedding scale, 1/sqrt(head_dim), one RoPE base, dense. */
const lrun_arch lrun_arch_qwen2 = {
    .name = "qwen2",
    .hparams = lrun_arch_llama_hparams, .n_hparams = LRUN_ARCH_LLAMA_N_HPARAMS - 1, /* no sliding window */
    ARCH_TABLES(tensors, ops),
    .rope_style = LRUN_ROPE_STYLE_HALF,
};
