/* model_hf_moe.h — the experts of a mixture of experts from an HF directory
 * (model_hf.c calls these).
 *
 * HF checkpoints keep one matrix per expert and projection:
 *
 *   qwen3_moe  model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight
 *   mixtral    model.layers.L.block_sparse_moe.experts.E.{w1,w3,w2}.weight
 *
 * or, written by transformers 5 with save_pretrained(save_original_format=
 * False), two 3-D tensors per block (its runtime layout):
 *
 *   model.layers.L.{mlp,block_sparse_moe}.experts.gate_up_proj  [E, 2 n_ff, n_embd]  (gate rows, then up)
 *   model.layers.L.{mlp,block_sparse_moe}.experts.down_proj     [E, n_embd, n_ff]
 *
 * The engines read the GGUF layout: per block and projection one stacked
 * tensor (blk.L.ffn_{gate,up,down}_exps.weight, expert e the slice e,
 * contiguous: the residency unit). A stacked tensor is a view of the file
 * where its experts' bytes already lie in order in one shard (a fused
 * down_proj always; per-expert matrices when written in expert order, as
 * lrun's generator writes them), else a copy into memory the model owns,
 * made once at load, after which the file's pages of the copied experts are
 * given back (safetensors sorts names as strings, so "experts.10" comes
 * before "experts.2" in files transformers writes: their experts are
 * copied). */
#ifndef LRUN_MODEL_HF_MOE_H
#define LRUN_MODEL_HF_MOE_H

#include <cjson/cJSON.h>

#include "model/model.h"

/* 1 when HF tensor name is one of the experts' matrices (per expert or
 * fused) of architecture a, which lrun_hf_add_experts stacks; 0 otherwise
 * (0 for every name of a dense architecture). */
int lrun_hf_is_expert_tensor(const lrun_arch *a, const char *name);

/* How many tensor records lrun_hf_add_experts adds: 3 per block for an
 * architecture with experts (6 for gpt-oss: and their biases), else 0. */
int64_t lrun_hf_expert_records(const lrun_arch *a, int64_t n_layer);

/* Adds blk.L.ffn_{gate,up,down}_exps.weight for every block L from m->st,
 * as records *n, *n + 1, ... (advancing *n); every expert tensor of the
 * file must be used (a stray one is named). F32, F16 or BF16 experts; file
 * is the weights' path, for messages. No-op for a dense architecture.
 * gpt-oss's experts (and their biases, MXFP4 or not) are
 * model_hf_gpt_oss.h's. */
lrun_status lrun_hf_add_experts(lrun_model *m, const char *file, int64_t *n);

/* Gives back the whole pages inside [p, p + len) of a file mapping: a
 * copied expert is not read from the file again. */
void lrun_hf_release_pages(const void *p, size_t len);

/* Asks for transparent huge pages over the whole 2 MiB pages inside
 * [p, p + len) of fresh anonymous memory a load is about to fill (a copy of
 * experts): one fault per 2 MiB instead of 512. Advice only: where THP is
 * off, nothing changes. */
void lrun_hf_huge_pages(void *p, size_t len);

/* Writers: the HF name of expert e's matrix of stacked GGUF tensor
 * gguf_name ("blk.3.ffn_up_exps.weight" → qwen3moe's
 * "model.layers.3.mlp.experts.<e>.up_proj.weight"), into out (cap bytes);
 * 1 when gguf_name is an experts' tensor of arch, else 0. */
int lrun_hf_expert_name(const char *arch, const char *gguf_name, int e, char *out, size_t cap);

/* The config.json keys of a mixture of experts that lrun's description
 * fixes, checked: qwen3_moe's norm_topk_prob (true: the top-k
 * probabilities renormalised, as llama.cpp's qwen3moe always does),
 * decoder_sparse_step (1) and mlp_only_layers (empty): every block routes.
 * No-op for a dense architecture. */
lrun_status lrun_hf_moe_config(const lrun_model *m, const char *file, const cJSON *cfg);

#endif
