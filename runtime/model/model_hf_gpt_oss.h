/* model_hf_gpt_oss.h — a gpt-oss Hugging Face directory (model_type
 * gpt_oss, GptOssForCausalLM): its config.json's fixed keys and its experts
 * (model_hf.c and model_hf_moe.c call these).
 *
 * Per block L, the experts are four tensors under model.layers.L.mlp.experts.,
 * in one of two layouts (transformers' GptOssExperts and
 * integrations/mxfp4.py):
 *
 *   unquantized (what save_pretrained of a GptOssForCausalLM writes):
 *     gate_up_proj       [E, n_embd, 2 n_ff]  F32/F16/BF16, x · W (input
 *                                               rows); gate = [..., 0::2], up = [..., 1::2]
 *     down_proj          [E, n_ff, n_embd]    likewise x · W
 *   MXFP4 (the released checkpoints, quantization_config.quant_method "mxfp4"):
 *     gate_up_proj_blocks [E, 2 n_ff, n_embd/32, 16] U8: per output row,
 *                          blocks of 32 E2M1 codes, element 2i in the low
 *                          nibble of byte i and 2i + 1 in the high one
 *     gate_up_proj_scales [E, 2 n_ff, n_embd/32]     U8 (or F8_E8M0): 2^(s − 127)
 *     down_proj_blocks    [E, n_embd, n_ff/32, 16], down_proj_scales [E, n_embd, n_ff/32]
 *   and in both:
 *     gate_up_proj_bias  [E, 2 n_ff]  gate and up interleaved as above
 *     down_proj_bias     [E, n_embd]
 *
 * They become the description's stacked tensors (arch/gpt_oss.c):
 * blk.L.ffn_{gate,up,down}_exps.weight ({n_embd, n_ff, E} and {n_ff,
 * n_embd, E}, expert e's rows contiguous) and their biases
 * blk.L.ffn_{gate,up,down}_exps.bias ({n_ff | n_embd, E}, f32). Unquantized
 * experts are transposed and de-interleaved into memory the model owns, in
 * their own dtype. MXFP4 experts stay MXFP4 (no widening): each 32-value
 * block is repacked into ggml's order (the scale byte, then element j in
 * the low nibble of byte j and j + 16 in its high nibble; the E2M1 codes
 * and the scale mean the same values in both: quant_mxfp4.c), rows
 * de-interleaved, into owned memory (17 bytes per 32 values, as in the
 * file), split by rows over the model's thread pool, with a progress bar
 * when the load shows one; the file's pages of the copied bytes are given
 * back. model_gen_hf_gpt_oss.h writes both layouts. */
#ifndef LRUN_MODEL_HF_GPT_OSS_H
#define LRUN_MODEL_HF_GPT_OSS_H

#include <cjson/cJSON.h>

#include "model/model.h"

/* 1 when m's architecture is gpt-oss. */
int lrun_hf_is_gpt_oss(const lrun_model *m);

/* Adds the six stacked expert tensors of every block from m->st as records
 * *n, *n + 1, ... (advancing *n); every expert tensor of the file must be
 * used. Errors name file, the tensor and the rule (a blocks tensor without
 * its scales, a shape that is not the layout's, a dtype). */
lrun_status lrun_hf_gpt_oss_add_experts(lrun_model *m, const char *file, int64_t *n);

/* gpt_oss's config.json keys that lrun's description fixes, checked after
 * the hyper-parameters are read: swiglu_limit 7 and swiglu_alpha 1.702
 * (swiglu_oai's constants), layer_types the window on the even blocks,
 * attention_bias true, tie_word_embeddings false (gpt-oss's head is its
 * own). Each refused by its key. No-op for another architecture. */
lrun_status lrun_hf_gpt_oss_config(const lrun_model *m, const char *file, const cJSON *cfg);

#endif
