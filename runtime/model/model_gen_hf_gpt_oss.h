/* model_gen_hf_gpt_oss.h — the gpt-oss part of the HF-directory generator
 * (model_gen_hf.c): config.json's gpt_oss keys, and the experts written as
 * transformers' GptOssExperts and the released checkpoints hold them, the
 * inverse of what model_hf_gpt_oss.c reads (its header gives the layouts).
 *
 * The generator's list (model_gen.h) has, per block L, the GGUF's six
 * stacked tensors blk.L.ffn_{gate,up,down}_exps.{weight,bias}; the
 * directory has four per block under model.layers.L.mlp.experts.:
 *
 *   gate_exps.weight + up_exps.weight -> gate_up_proj [E, n_embd, 2 n_ff]
 *       (x · W, gate in the even columns, up in the odd), or MXFP4:
 *       gate_up_proj_blocks [E, 2 n_ff, n_embd/32, 16] and _scales
 *       [E, 2 n_ff, n_embd/32] U8, rows interleaved the same way
 *   gate_exps.bias + up_exps.bias     -> gate_up_proj_bias [E, 2 n_ff] f32
 *   down_exps.weight                  -> down_proj [E, n_ff, n_embd], or
 *       down_proj_blocks [E, n_embd, n_ff/32, 16] and _scales
 *   down_exps.bias                    -> down_proj_bias [E, n_embd] f32
 *
 * The values are the GGUF's (same seed, same element index): an unquantized
 * expert's bytes transposed, an MXFP4 block's bytes reordered from ggml's
 * nibble order into the checkpoint's (the scale byte kept), so loading the
 * directory gives the GGUF's tensors byte for byte. up's tensors are
 * written with gate's; they declare nothing of their own. */
#ifndef LRUN_MODEL_GEN_HF_GPT_OSS_H
#define LRUN_MODEL_GEN_HF_GPT_OSS_H

#include <cjson/cJSON.h>

#include "formats/safetensors_writer.h"
#include "model/model_gen.h"

/* One tensor of the directory: its name, dtype and row-major shape. */
typedef struct gen_hf_decl {
    char name[128];
    lrun_st_dtype dtype;
    int ndim;
    int64_t shape[4];
} gen_hf_decl;

/* A JSON number that Python reads as a float (7.0, not 7; %.17g, so the
 * double is exact): transformers 5 checks float fields strictly
 * (GptOssConfig's swiglu_limit, rope_theta, YaRN's factor and betas). NULL
 * when out of memory, as cJSON's constructors. */
cJSON *lrun_gen_hf_float(double v);

/* gpt_oss's own config.json keys (GptOssConfig's, as the released
 * gpt-oss-20b's config names them) into c: layer_types, YaRN's
 * rope_scaling, swiglu_limit, the experts' counts, attention_bias true, and
 * quantization_config mxfp4 when the experts are MXFP4. */
void lrun_gen_hf_gpt_oss_config(cJSON *c, const lrun_model_gen_spec *s);

/* 1 when t is one of gpt-oss's stacked expert tensors (weights or biases),
 * which this file declares and writes; 0 for every other tensor. */
int lrun_gen_hf_gpt_oss_owns(const lrun_model_gen_spec *s, const gen_tensor *t);

/* The k-th directory tensor of owned tensor t into *out (k = 0, 1, ...);
 * 0 when t has no k-th (up's tensors have none: gate's hold them). */
int lrun_gen_hf_gpt_oss_decl(const gen_tensor *t, int k, gen_hf_decl *out);

/* Streams the bytes of owned tensor t's directory tensors, in decl order,
 * to w; l is the whole list (gate's writer reads its partner up's seed). */
lrun_status lrun_gen_hf_gpt_oss_write(lrun_st_writer *w, const gen_list *l, const gen_tensor *t);

#endif
