/* model.h — a loaded model as the engine and the residency layer see it. */
#ifndef LRUN_MODEL_H
#define LRUN_MODEL_H

#include "lrun.h"
#include "core/tensor.h"
#include "core/threadpool.h"

/* The weights of one block; shapes are GGUF ne (innermost first). */
struct lrun_model_layer {
    struct lrun_tensor *attn_norm;    /* {n_embd} */
    struct lrun_tensor *wq;           /* {n_embd, n_head*head_dim} */
    struct lrun_tensor *wk;           /* {n_embd, n_head_kv*head_dim} */
    struct lrun_tensor *wv;           /* {n_embd, n_head_kv*head_dim} */
    struct lrun_tensor *wo;           /* {n_head*head_dim, n_embd} */
    struct lrun_tensor *bq, *bk, *bv, *bo; /* optional biases of those four, NULL when absent */
    struct lrun_tensor *ffn_norm;     /* {n_embd} */
    struct lrun_tensor *w_gate;       /* {n_embd, n_ff} */
    struct lrun_tensor *w_up;         /* {n_embd, n_ff} */
    struct lrun_tensor *w_down;       /* {n_ff, n_embd} */
};

struct lrun_model {
    lrun_model_info info;
    double rope_freq_scale;           /* 1, or 1/factor with linear RoPE scaling */
    lrun_gguf *gguf;                  /* owns the mapping every MMAP tensor points into */
    lrun_device *device;
    lrun_tokenizer *tokenizer;        /* NULL when the file carries no tokenizer */
    lrun_threadpool *pool;
    int64_t n_tensors;
    struct lrun_tensor *tensors;      /* (n_tensors), in file order */
    struct lrun_tensor *tok_embd;     /* {n_embd, n_vocab} */
    struct lrun_tensor *output_norm;  /* {n_embd} */
    struct lrun_tensor *output;       /* {n_embd, n_vocab}; tok_embd when tied */
    struct lrun_tensor *rope_freqs;   /* {n_rot/2} frequency divisors, or NULL */
    struct lrun_model_layer *layers;  /* (n_layer) */
};

/* Floats of the f32 vectors an engine keeps converted: norms, biases, RoPE factors. */
size_t lrun_model_vector_floats(const lrun_model *model);

/* The model's thread pool (shared by engines that keep the model's thread count). */
lrun_threadpool *lrun_model_threadpool(lrun_model *model);

#endif
