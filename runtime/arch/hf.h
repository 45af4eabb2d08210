/* hf.h — how Hugging Face checkpoints name what an architecture description
 * (arch.h) names in GGUF terms: config.json's model_type, its keys, and the
 * tensor names of model.safetensors.
 *
 * One table per kind, in hf.c, keyed by the GGUF names the descriptions
 * already use ("blk.%d.attn_q.weight", "attention.head_count"), so a new
 * architecture whose tensors and keys have the usual llama.cpp names loads
 * from an HF directory with no change here, and one that brings new names
 * adds a row each (docs/models.md). */
#ifndef LRUN_ARCH_HF_H
#define LRUN_ARCH_HF_H

#include <stddef.h>

/* The architecture (arch.h name) for config.json's model_type, or NULL. */
const char *lrun_hf_arch_for_model_type(const char *model_type);

/* 1 when arch's HF checkpoints keep norm weights as w of x·(1 + w) (gemma2,
 * gemma3), which llama.cpp's converter stores as 1 + w. */
int lrun_hf_norm_shift(const char *arch);

/* The first model_type that names arch ("llama" for llama), or NULL: for writers. */
const char *lrun_hf_model_type_for_arch(const char *arch);

/* A config.json key and the GGUF key it becomes ("<arch>." + gguf_suffix). */
typedef enum lrun_hf_kind {
    LRUN_HF_INT,      /* a whole number */
    LRUN_HF_FLOAT,    /* a number, kept as f32 like llama.cpp's converter */
    LRUN_HF_BOOL,
} lrun_hf_kind;

typedef struct lrun_hf_key {
    const char *arch;         /* NULL: every architecture */
    const char *hf;           /* "num_attention_heads" */
    const char *gguf_suffix;  /* "attention.head_count" */
    lrun_hf_kind kind;
} lrun_hf_key;

/* The i-th row of the key table, NULL past the last. */
const lrun_hf_key *lrun_hf_key_at(int i);

/* The GGUF name of HF tensor hf_name under architecture arch, into out (cap
 * bytes): "model.layers.3.self_attn.q_proj.weight" → "blk.3.attn_q.weight".
 * Returns 1 when mapped, 0 for a name the table does not know, -1 for a
 * tensor checkpoints carry that no computation reads (rotary inv_freq). */
int lrun_hf_tensor_to_gguf(const char *arch, const char *hf_name, char *out, size_t cap);

/* The HF name of GGUF tensor gguf_name (the inverse; for writers), 1 or 0. */
int lrun_hf_tensor_from_gguf(const char *arch, const char *gguf_name, char *out, size_t cap);

#endif
