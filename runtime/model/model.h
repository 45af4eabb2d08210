/* model.h — a loaded model as the engine and the residency layer see it. */
#ifndef LRUN_MODEL_H
#define LRUN_MODEL_H

#include <math.h>

#include "lrun.h"
#include "core/host_account.h"
#include "core/tensor.h"
#include "core/threadpool.h"
#include "arch/arch.h"
#include "formats/safetensors.h"
#include "residency/loader.h"

/* The tensors of one block, by lrun_arch_tensor (t[LRUN_ARCH_TENSOR_Q] is
 * the query projection): what the block holds and their shapes are the
 * architecture's description (runtime/arch/), so no field names a family's
 * tensors. NULL when an optional tensor is absent. */
struct lrun_model_layer {
    struct lrun_tensor *t[LRUN_ARCH_TENSOR_BLOCK_COUNT];
};

struct lrun_model {
    lrun_model_info info;
    const lrun_arch *arch;            /* the description general.architecture named */
    double rope_freq_scale;           /* 1, or 1/factor with linear or YaRN RoPE scaling */
    int rope_yarn;                    /* 1: rope.scaling.type yarn (gpt-oss): lrun_rope_yarn_init_ex with n_ctx_orig
                                       * and the three below */
    double rope_yarn_beta_fast;       /* rope.scaling.yarn_beta_fast: 32 when absent (llama.cpp's default) */
    double rope_yarn_beta_slow;       /* rope.scaling.yarn_beta_slow: 1 when absent */
    int rope_yarn_truncate;           /* rope.scaling.yarn_truncate (lrun's key, 1 when absent): the correction
                                       * dims floored/ceiled as llama.cpp does; 0 as transformers' truncate=false
                                       * (gpt-oss's HF config) */
    int64_t n_swa;                    /* sliding window in positions (the blocks arch->swa_pattern picks), 0: none */
    double attn_softcap;              /* attention scores s → cap·tanh(s/cap) (gemma2); 0: none */
    double final_softcap;             /* and the logits; 0: none */
    int gelu_f32;                     /* 1: GeGLU's GELU in f32 as transformers' gelu_pytorch_tanh (an HF gemma);
                                       * 0: through llama.cpp's f16 table (a GGUF) */
    int mxfp4_float_x;                /* 1: MXFP4 experts multiply f32 activations (an HF gpt-oss, as transformers
                                       * computes its dequantized experts); 0: Q8_0 ones (llama.cpp's, a GGUF) */
    double query_pre_attn_scalar;     /* > 0: the attention scale is its 1/sqrt (an HF gemma's config); 0: the rule
                                       * of lrun_model_attn_scale */
    lrun_gguf *gguf;                  /* owns the mapping every MMAP tensor points into; for an HF
                                       * directory, its config as GGUF metadata (no tensors) */
    lrun_st_set *st;                  /* an HF directory's safetensors: owns the tensors' mappings */
    struct lrun_packed_file *packed_file; /* a packed model file kept packed: owns the packed tensors'
                                       * bytes (file_data of those with file_packed); NULL otherwise */
    void **owned;                     /* (n_owned) buffers the model made itself: an HF directory's
                                       * llama3 RoPE factors, its FP8 weights widened to bf16 */
    int n_owned;
    struct lrun_fp8_weight *fp8;      /* (n_fp8, cap_fp8) an HF checkpoint's F8_E4M3 weights (model_fp8.h) */
    int64_t n_fp8, cap_fp8;
    int fp8_lazy;                     /* 1: they are widened where they are placed, not at load */
    lrun_tensor_maker fp8_maker;      /* widens the pending ones into owned memory (a tensor moved alone) */
    char *weights_path;               /* the path loaded: the GGUF file the streaming loader reads
                                       * (model_upload.c), or an HF model's directory (its shards are
                                       * in st); NULL for a GGUF decoded into memory (a packed file) */
    int progress;                     /* 1: loads draw a progress bar on stderr when it is a terminal */
    int prefaulted;                   /* 1 once lrun_model_prefault ran */
    lrun_loader_stats load_stats;     /* the last streaming load (lrun_model_move_tensors) */
    int load_kept_cache;              /* 1: that load left its pages in the page cache */
    lrun_device *device;              /* its host_account is &host */
    lrun_host_account host;           /* the host memory the model and its engines hold (host_account.h) */
    lrun_tokenizer *tokenizer;        /* NULL when the file carries no tokenizer */
    lrun_threadpool *pool;
    int64_t n_tensors;
    struct lrun_tensor *tensors;      /* (n_tensors), in file order */
    struct lrun_tensor *tok_embd;     /* {n_embd, n_vocab} */
    struct lrun_tensor *output_norm;  /* {n_embd} */
    struct lrun_tensor *output;       /* {n_embd, n_vocab}; tok_embd when tied */
    struct lrun_tensor *rope_freqs;   /* {n_rot/2} frequency divisors, or NULL */
    struct lrun_tensor *rope_long;    /* {n_rot/2} LongRoPE divisors past n_ctx_orig (phi3 128k), or NULL */
    struct lrun_tensor *rope_short;   /* {n_rot/2} and within it, or NULL */
    int64_t n_ctx_orig;               /* rope.scaling.original_context_length; n_ctx_train when absent */
    double rope_attn_factor;          /* rope.scaling.attn_factor: cos and sin times it (q·k times its square); 1 */
    struct lrun_model_layer *layers;  /* (n_layer) */
};

/* The model's tensor id (a block's with layer >= 0), or NULL when absent. */
struct lrun_tensor *lrun_model_arch_tensor(const lrun_model *model, int64_t layer, lrun_arch_tensor id);

/* The RoPE frequency divisors an engine of n_ctx positions uses: rope_freqs,
 * or LongRoPE's long factors past the original context and short ones
 * within it (llama.cpp's choice by context size); NULL when none. */
static inline const struct lrun_tensor *lrun_model_rope_factors(const lrun_model *m, int64_t n_ctx)
{
    if (m->rope_freqs || !m->rope_long || !m->rope_short) return m->rope_freqs;
    return n_ctx > m->n_ctx_orig ? m->rope_long : m->rope_short;
}

/* 1 when the description's swa_pattern makes block l a windowed ("local") one. */
static inline int lrun_model_layer_is_local(const lrun_model *m, int64_t l)
{
    const int p = m->arch->swa_pattern;
    return p > 0 && l % p < p - 1;
}

/* The sliding window of block l: n_swa on the blocks the description's
 * swa_pattern picks (every block when 0), else 0 (all positions). */
static inline int64_t lrun_model_layer_swa(const lrun_model *m, int64_t l)
{
    const int p = m->arch->swa_pattern;
    return p <= 0 || l % p < p - 1 ? m->n_swa : 0;
}

/* The attention's scale of q·k before any LongRoPE factor, as llama.cpp
 * takes it: 1/sqrt(head_dim), or 1/sqrt(n_embd/n_head) at the block count
 * the description names (gemma2 27B); an HF gemma's query_pre_attn_scalar
 * when its config gives one. */
static inline double lrun_model_attn_scale(const lrun_model *m)
{
    const lrun_model_info *in = &m->info;
    const int big = m->arch->big_attn_scale_layers;
    if (m->query_pre_attn_scalar > 0) return 1.0 / sqrt(m->query_pre_attn_scalar);
    return 1.0 / sqrt((double)(big && in->n_layer == big ? in->n_embd / in->n_head : in->head_dim));
}

/* Floats of the f32 vectors an engine keeps converted: norms, biases, RoPE factors. */
size_t lrun_model_vector_floats(const lrun_model *model);

/* The model's thread pool (shared by engines that keep the model's thread count). */
lrun_threadpool *lrun_model_threadpool(lrun_model *model);

// ---------------------------------------------------------------- loading, shared by the formats

/* general.architecture and the description's hyper-parameters from m->gguf. */
lrun_status lrun_model_read_hparams(lrun_model *m);
/* Records for n tensors and m->info.n_layer blocks. */
lrun_status lrun_model_tensors_init(lrun_model *m, int64_t n);
/* Tensor i: GGUF name and shape (ne order), its bytes in a mapping (tier MMAP). */
lrun_status lrun_model_add_tensor(lrun_model *m, int64_t i, const char *name, lrun_dtype dtype, int ndim,
                                  const int64_t *dims, const void *data);
/* Every tensor the architecture needs is there with its shape; ties the head. */
lrun_status lrun_model_check_tensors(lrun_model *m);

/* Where t's bytes are in a model file the streaming loader (or a direct-I/O
 * reader) can open: 1 with *path (owned by the model) and *offset (bytes
 * from the file's start); 0 when they are not in one (FP8 weights widened
 * at load, RoPE factors made at load, a packed GGUF decoded into memory). */
int lrun_model_tensor_location(const lrun_model *m, const lrun_tensor *t, const char **path, uint64_t *offset);

/* Widens the FP8 weights no move has widened yet into host memory the
 * model owns (model_fp8.h), so every tensor has its bytes; the start of an
 * engine that does not move them all itself calls it (engine.c). */
lrun_status lrun_model_settle_weights(lrun_model *m);

/* Touches the pages of the tensors still in the file mapping (tier MMAP),
 * in file order, once per model, so the first forward pass does not stall
 * on page faults; engine init calls it after the weights it moves have
 * moved, so pages of moved weights are never faulted in (model_upload.c). */
void lrun_model_prefault(lrun_model *m);
/* bytes of host memory the model owns (freed with it, m->owned), charged to
 * m->host as weights; or NULL with an OOM error set naming what (the host
 * budget, the host's available memory, or malloc). */
void *lrun_model_own(lrun_model *m, size_t bytes, const char *what);

/* 1 when path is a Hugging Face model: a directory, a .safetensors file or
 * a model.safetensors.index.json (model_hf.c). */
int lrun_model_is_hf(const char *path);
/* Fills m from an HF model at path (model_hf.c). */
lrun_status lrun_model_open_hf(lrun_model *m, const char *path, int progress);

#endif
