/* model_hf_arch.h — what some architectures' config.json and weights need
 * beyond the name tables of arch/hf.c when loading an HF directory
 * (model_hf.c calls these): Gemma's (1 + w) norms, query_pre_attn_scalar,
 * its null soft-caps and local RoPE base; Phi-3's LongRoPE rope_scaling;
 * YaRN's keys (gpt-oss). */
#ifndef LRUN_MODEL_HF_ARCH_H
#define LRUN_MODEL_HF_ARCH_H

#include <cjson/cJSON.h>

#include "model/model.h"

/* 1 when rope_scaling object rs is LongRoPE (type or rope_type "longrope"
 * or "su", Phi-3's 128k variants). */
int lrun_hf_is_longrope(const cJSON *rs);

/* LongRoPE's keys as llama.cpp's converter writes them:
 * <arch>.rope.scaling.original_context_length (config's
 * original_max_position_embeddings, top level or in rs) and
 * .attn_factor (rs's attention_factor, else sqrt(1 + ln(s) / ln(orig)) with
 * s = max_position_embeddings / orig when s > 1, else 1). */
lrun_status lrun_hf_put_longrope_keys(lrun_gguf_writer *w, const char *file, const char *arch, const cJSON *cfg,
                                      const cJSON *rs);

/* YaRN's keys (rope_scaling type "yarn", gpt-oss) as the GGUF loader reads
 * them (model.c): <arch>.rope.scaling.type "yarn", .factor,
 * .original_context_length (rs's original_max_position_embeddings, else
 * config's), .yarn_beta_fast and .yarn_beta_slow (32 and 1 when absent, as
 * transformers), .yarn_truncate (rs's truncate, true when absent). An
 * attention_factor, or mscale with mscale_all_dim, is refused by name. */
lrun_status lrun_hf_put_yarn_keys(lrun_gguf_writer *w, const char *file, const char *arch, const cJSON *cfg,
                                  const cJSON *rs);

/* rope_factors_long/short.weight (n_rot/2 f32 each, owned by m) from rs's
 * long_factor and short_factor lists, when rs is LongRoPE; else nothing. */
lrun_status lrun_hf_add_longrope(lrun_model *m, const char *file, const cJSON *rs);

/* Gemma's config after the hyper-parameters are read: GELU in f32 as
 * transformers (m->gelu_f32), query_pre_attn_scalar
 * (m->query_pre_attn_scalar), soft-caps given as null (none, as
 * transformers), and a rope_local_base_freq or layer pattern the
 * description does not have (refused, naming the key). No-op for other
 * architectures. */
lrun_status lrun_hf_gemma_config(lrun_model *m, const char *file, const cJSON *cfg);

/* Gemma's norm weights: HF keeps w and computes x·(1 + w) in f32; llama.cpp's
 * converter stores 1 + w, which NORM and HEAD_NORM apply as given. For an
 * architecture whose HF norms are shifted (lrun_hf_norm_shift) and a tensor
 * whose GGUF name ends in "norm.weight", *data becomes an f32 copy of 1 + w
 * owned by m and *dtype F32; otherwise both are left as they are. */
lrun_status lrun_hf_shift_norm(lrun_model *m, const char *file, const lrun_st_tensor *t, const char *gguf_name,
                               lrun_dtype *dtype, const void **data);

#endif
