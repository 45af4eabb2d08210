/* arch.h — what an architecture is, written once for every backend.
 *
 * An architecture (general.architecture in a GGUF file) is a description:
 *
 *   hparams   the GGUF keys of its hyper-parameters ("<arch>.<key>"), with
 *             their defaults and bounds;
 *   tensors   its tensors: GGUF name (a pattern with %d for a block's
 *             index), role, required or optional, and the expected shape in
 *             terms of the hyper-parameters;
 *   ops       the order of operations in one block, as a short table.
 *
 * The model loader (model/model.c) reads hyper-parameters and tensors
 * through the description that general.architecture names. Each backend
 * (cpu/forward_cpu.c, cuda/engine_cuda_forward.c) runs the op table with
 * its own implementation of each op kind, and may fuse neighbouring ops
 * (a projection's residual add with the next norm; Q, K and V in one
 * launch; SwiGLU in the gate/up epilogue) as long as it computes what the
 * ops say. docs/architectures.md says how to add one. */
#ifndef LRUN_ARCH_H
#define LRUN_ARCH_H

#include <stddef.h>

#include "lrun.h"

/* ---------------------------------------------------------------- tensors */

/* A tensor by what the ops use it for. Block tensors come first: a block of
 * the model is an array of them (struct lrun_model_layer); the model's own
 * tensors follow. */
typedef enum lrun_arch_tensor {
    LRUN_ARCH_TENSOR_ATTN_NORM,  /* {n_embd} */
    LRUN_ARCH_TENSOR_Q,          /* {n_embd, q_dim} */
    LRUN_ARCH_TENSOR_K,          /* {n_embd, kv_dim} */
    LRUN_ARCH_TENSOR_V,          /* {n_embd, kv_dim} */
    LRUN_ARCH_TENSOR_O,          /* {q_dim, n_embd} */
    LRUN_ARCH_TENSOR_Q_BIAS,     /* {q_dim} */
    LRUN_ARCH_TENSOR_K_BIAS,     /* {kv_dim} */
    LRUN_ARCH_TENSOR_V_BIAS,     /* {kv_dim} */
    LRUN_ARCH_TENSOR_O_BIAS,     /* {n_embd} */
    LRUN_ARCH_TENSOR_FFN_NORM,   /* {n_embd} */
    LRUN_ARCH_TENSOR_GATE,       /* {n_embd, n_ff} */
    LRUN_ARCH_TENSOR_UP,         /* {n_embd, n_ff} */
    LRUN_ARCH_TENSOR_DOWN,       /* {n_ff, n_embd} */
    LRUN_ARCH_TENSOR_Q_NORM,     /* {head_dim} qwen3, gemma3: RMSNorm of each query head */
    LRUN_ARCH_TENSOR_K_NORM,     /* {head_dim} and of each key head */
    LRUN_ARCH_TENSOR_QKV,        /* {n_embd, q_dim + 2 kv_dim} phi3's fused [q; k; v], split at load */
    LRUN_ARCH_TENSOR_GATE_UP,    /* {n_embd, 2 n_ff} phi3's fused [gate; up] (its ffn_up), split at load */
    LRUN_ARCH_TENSOR_ATTN_POST_NORM, /* {n_embd} gemma2/3: RMSNorm of the attention's projection, before the add */
    LRUN_ARCH_TENSOR_FFN_POST_NORM,  /* {n_embd} and of the feed-forward's */
    LRUN_ARCH_TENSOR_GATE_INP,   /* {n_embd, n_expert} the router of a mixture of experts (ffn_gate_inp) */
    LRUN_ARCH_TENSOR_GATE_EXPS,  /* {n_embd, n_ff, n_expert} each expert's gate, expert e the rows [e n_ff, (e+1) n_ff) */
    LRUN_ARCH_TENSOR_UP_EXPS,    /* {n_embd, n_ff, n_expert} and up */
    LRUN_ARCH_TENSOR_DOWN_EXPS,  /* {n_ff, n_embd, n_expert} and down */
    LRUN_ARCH_TENSOR_ATTN_SINKS, /* {n_head} gpt-oss: each head's sink logit, in the softmax's denominator only */
    LRUN_ARCH_TENSOR_GATE_INP_B, /* {n_expert} gpt-oss: the router's bias */
    LRUN_ARCH_TENSOR_GATE_EXPS_B, /* {n_ff, n_expert} gpt-oss: each expert's gate bias, expert e the row e */
    LRUN_ARCH_TENSOR_UP_EXPS_B,  /* {n_ff, n_expert} and up */
    LRUN_ARCH_TENSOR_DOWN_EXPS_B, /* {n_embd, n_expert} and down */
    LRUN_ARCH_TENSOR_BLOCK_COUNT,
    LRUN_ARCH_TENSOR_TOKEN_EMBD = LRUN_ARCH_TENSOR_BLOCK_COUNT, /* {n_embd, n_vocab} */
    LRUN_ARCH_TENSOR_OUTPUT_NORM,  /* {n_embd} */
    LRUN_ARCH_TENSOR_OUTPUT,       /* {n_embd, n_vocab}; absent: tied to the embedding */
    LRUN_ARCH_TENSOR_ROPE_FREQS,   /* {n_rot/2} */
    LRUN_ARCH_TENSOR_ROPE_LONG,    /* {n_rot/2} phi3 LongRoPE factors past the original context */
    LRUN_ARCH_TENSOR_ROPE_SHORT,   /* {n_rot/2} and within it */
    LRUN_ARCH_TENSOR_COUNT,
    LRUN_ARCH_TENSOR_NONE = -1     /* an unused weight slot of an op */
} lrun_arch_tensor;

/* A dimension in terms of the hyper-parameters. */
typedef enum lrun_arch_dim {
    LRUN_ARCH_DIM_NONE,      /* no such dimension: a vector's second */
    LRUN_ARCH_DIM_EMBD,      /* n_embd */
    LRUN_ARCH_DIM_Q,         /* n_head · head_dim */
    LRUN_ARCH_DIM_KV,        /* n_head_kv · head_dim */
    LRUN_ARCH_DIM_FF,        /* n_ff */
    LRUN_ARCH_DIM_VOCAB,     /* n_vocab */
    LRUN_ARCH_DIM_ROT_HALF,  /* n_rot / 2 */
    LRUN_ARCH_DIM_HEAD,      /* head_dim */
    LRUN_ARCH_DIM_QKV,       /* q_dim + 2 kv_dim */
    LRUN_ARCH_DIM_FF2,       /* 2 n_ff */
    LRUN_ARCH_DIM_EXPERT,    /* n_expert (a mixture of experts) */
    LRUN_ARCH_DIM_N_HEAD,    /* n_head (gpt-oss's attention sinks) */
} lrun_arch_dim;

typedef struct lrun_arch_tensor_desc {
    lrun_arch_tensor id;
    const char *name;        /* GGUF name; a block's has one %d, its index: "blk.%d.attn_q.weight" */
    lrun_role role;
    int required;            /* 0: optional (biases, an untied head, RoPE factors) */
    lrun_arch_dim ne[3];     /* shape, GGUF ne order (innermost first); ne[1] NONE for a vector, ne[2] NONE
                              * but for the experts' 3-D tensors ({.., .., n_expert}); a BIAS with ne[1]
                              * (gpt-oss's experts' {n, n_expert}) is a vector per expert, not a matrix */
    int f32_only;            /* 1: must be f32 (vectors are otherwise f32, f16 or bf16) */
} lrun_arch_tensor_desc;

/* ---------------------------------------------------------------- hyper-parameters */

/* Where a hyper-parameter lands (the fields of lrun_model_info). */
typedef enum lrun_arch_hparam {
    LRUN_ARCH_HPARAM_CTX_TRAIN,   /* n_ctx_train */
    LRUN_ARCH_HPARAM_EMBD,        /* n_embd */
    LRUN_ARCH_HPARAM_LAYER,       /* n_layer */
    LRUN_ARCH_HPARAM_FF,          /* n_ff */
    LRUN_ARCH_HPARAM_HEAD,        /* n_head */
    LRUN_ARCH_HPARAM_HEAD_KV,     /* n_head_kv */
    LRUN_ARCH_HPARAM_HEAD_DIM,    /* head_dim (the key length) */
    LRUN_ARCH_HPARAM_V_DIM,       /* the value length: must equal head_dim */
    LRUN_ARCH_HPARAM_ROT,         /* n_rot: rotated dims per head */
    LRUN_ARCH_HPARAM_RMS_EPS,     /* rms_eps */
    LRUN_ARCH_HPARAM_ROPE_BASE,   /* rope_freq_base */
    LRUN_ARCH_HPARAM_SWA,         /* sliding window in positions (Mistral), 0: none; optional in a description
                                   * (absent: 0), as llama.cpp reads the key only for some architectures */
    LRUN_ARCH_HPARAM_ATTN_SOFTCAP, /* gemma2: attention scores s become cap·tanh(s/cap); optional (absent: 0, none) */
    LRUN_ARCH_HPARAM_FINAL_SOFTCAP, /* gemma2: and the logits; optional (absent: 0, none) */
    LRUN_ARCH_HPARAM_EXPERT,      /* n_expert: experts per block (expert_count); optional (absent: 0, dense) */
    LRUN_ARCH_HPARAM_EXPERT_USED, /* n_expert_used: experts each token takes (expert_used_count); optional */
    LRUN_ARCH_HPARAM_COUNT
} lrun_arch_hparam;

/* What an absent key takes. */
typedef enum lrun_arch_default {
    LRUN_ARCH_DEFAULT_REQUIRED,   /* none: the key must be there */
    LRUN_ARCH_DEFAULT_VALUE,      /* the constant value */
    LRUN_ARCH_DEFAULT_SAME_AS,    /* the value of hyper-parameter same_as (read before) */
    LRUN_ARCH_DEFAULT_EMBD_PER_HEAD, /* n_embd / n_head, which must divide */
} lrun_arch_default;

typedef enum lrun_arch_hparam_kind {
    LRUN_ARCH_HPARAM_KIND_DIM,    /* an integer in [1, 2^24] */
    LRUN_ARCH_HPARAM_KIND_CTX,    /* an integer in [1, 2^31] */
    LRUN_ARCH_HPARAM_KIND_POS_FLOAT, /* a finite number > 0 */
    LRUN_ARCH_HPARAM_KIND_COUNT0, /* an integer in [0, 2^31] */
} lrun_arch_hparam_kind;

typedef struct lrun_arch_hparam_desc {
    lrun_arch_hparam id;
    const char *key;              /* after "<arch>.": "attention.head_count" */
    lrun_arch_hparam_kind kind;
    lrun_arch_default def;
    double value;                 /* DEFAULT_VALUE */
    lrun_arch_hparam same_as;     /* DEFAULT_SAME_AS */
} lrun_arch_hparam_desc;

/* ---------------------------------------------------------------- ops of a block */

/* Per-token activation buffers the ops read and write; widths in lrun_arch_buf_dim. */
typedef enum lrun_arch_buf {
    LRUN_ARCH_BUF_X,      /* (n_tok, n_embd) the residual stream */
    LRUN_ARCH_BUF_XN,     /* (n_tok, n_embd) a sublayer's normed input */
    LRUN_ARCH_BUF_Q,      /* (n_tok, q_dim) */
    LRUN_ARCH_BUF_K,      /* (n_tok, kv_dim) */
    LRUN_ARCH_BUF_V,      /* (n_tok, kv_dim) */
    LRUN_ARCH_BUF_ATTN,   /* (n_tok, q_dim) attention output */
    LRUN_ARCH_BUF_GATE,   /* (n_tok, n_ff) */
    LRUN_ARCH_BUF_UP,     /* (n_tok, n_ff) */
    LRUN_ARCH_BUF_ROUTER, /* (n_tok, n_expert) the router's logits */
    LRUN_ARCH_BUF_COUNT
} lrun_arch_buf;

/* The op vocabulary. Each says what it computes; how (which kernel, what
 * fusion with its neighbours, which numerics) is the backend's. */
typedef enum lrun_arch_op_kind {
    LRUN_ARCH_OP_NORM,          /* out[0] = rms_norm(in) * w[0] */
    LRUN_ARCH_OP_MATMUL,        /* out[i] = in · w[i]ᵀ, for each weight: one input, so one launch */
    LRUN_ARCH_OP_BIAS,          /* out[i] += w[i], for each (optional) bias the file has */
    LRUN_ARCH_OP_ROPE_STORE,    /* out[0], out[1] (q, k) rotated at each token's position; out[1], out[2]
                                 * (k, v) appended to the token's sequence in the KV cache */
    LRUN_ARCH_OP_ATTENTION,     /* out[0] = softmax(q Kᵀ / sqrt(head_dim)) V over the positions the token
                                 * sees, in = q; GQA by n_head / n_head_kv; w[0] (optional, gpt-oss) each
                                 * head's sink logit, which joins the softmax's max and denominator only */
    LRUN_ARCH_OP_MATMUL_ADD,    /* out[0] += in · w[0]ᵀ, then += w[1] (optional bias): a projection
                                 * into the residual stream */
    LRUN_ARCH_OP_MATMUL_SWIGLU, /* out[0] = silu(in · w[0]ᵀ) * (in · w[1]ᵀ), out[1] scratch for the latter */
    LRUN_ARCH_OP_HEAD_NORM,     /* out[i] = rms_norm(each head_dim-long head of out[i]) * w[i], in place,
                                 * for each weight (qwen3's q/k norms, before RoPE) */
    LRUN_ARCH_OP_MATMUL_GEGLU,  /* out[0] = gelu(in · w[0]ᵀ) * (in · w[1]ᵀ), GELU's tanh approximation
                                 * (gemma2/3), out[1] scratch for the latter */
    LRUN_ARCH_OP_MATMUL_NORM_ADD, /* out[0] += rms_norm(in · w[0]ᵀ) * w[1]: a projection normed before the
                                   * residual add (gemma2/3's post-attention and post-FFN norms) */
    LRUN_ARCH_OP_MOE_ROUTE,     /* out[0] = in · w[0]ᵀ (+ w[1], an optional bias): the router's logits
                                 * (n_tok, n_expert), kept for the next MOE_FFN_ADD */
    LRUN_ARCH_OP_MOE_FFN_ADD,   /* out[0] += sum over the token's top n_expert_used experts e (by
                                 * softmax(router logits), renormalised over the chosen ones) of
                                 * p_e · (silu(in · G_eᵀ) * (in · U_eᵀ)) · D_eᵀ; w = the experts' gate, up,
                                 * down (3-D, expert e the slice e); docs/moe.md. With the description's
                                 * moe_oai (gpt-oss): E = the top experts by logit, p = softmax over E's
                                 * logits only, each product plus the expert's bias (GATE/UP/DOWN_EXPS_B),
                                 * and swiglu_oai for silu·up */
    LRUN_ARCH_OP_KIND_COUNT
} lrun_arch_op_kind;

#define LRUN_ARCH_OP_MAX_W 3

typedef struct lrun_arch_op {
    lrun_arch_op_kind kind;
    lrun_arch_tensor w[LRUN_ARCH_OP_MAX_W];  /* block tensors; LRUN_ARCH_TENSOR_NONE after the last */
    lrun_arch_buf in;
    lrun_arch_buf out[LRUN_ARCH_OP_MAX_W];   /* as many as the kind uses */
} lrun_arch_op;

/* ---------------------------------------------------------------- fused matrices */

/* A matrix the file stores fused, which the loader splits by rows into the
 * parts the ops use (phi3's attn_qkv into q, k, v): the parts' rows are
 * contiguous in the file, so each part is a view of the file's bytes and
 * every backend, placement and staging path sees ordinary matrices. */
typedef struct lrun_arch_split {
    lrun_arch_tensor fused;                      /* a block tensor no op uses; optional in the file */
    lrun_arch_tensor parts[LRUN_ARCH_OP_MAX_W];  /* in row order; NONE after the last */
} lrun_arch_split;

/* ---------------------------------------------------------------- an architecture */

typedef struct lrun_arch {
    const char *name;                      /* general.architecture, and the prefix of its keys */
    const lrun_arch_hparam_desc *hparams;  /* (n_hparams), read in this order */
    int n_hparams;
    const lrun_arch_tensor_desc *tensors;  /* (n_tensors) */
    int n_tensors;
    const lrun_arch_op *ops;               /* (n_ops) one block, in order */
    int n_ops;
    lrun_rope_style rope_style;            /* the pairs RoPE rotates in this format's q/k layout: ADJACENT
                                            * where llama.cpp's converter permuted q/k (llama), HALF (NeoX)
                                            * where llama.cpp uses LLAMA_ROPE_TYPE_NEOX (qwen2, qwen3, phi3,
                                            * gemma2, gemma3) */
    const lrun_arch_split *splits;         /* (n_splits) fused matrices the loader splits, or NULL */
    int n_splits;
    int embd_scale;                        /* 1: the embedding rows times sqrt(n_embd) (gemma2/3) */
    int swa_pattern;                       /* 0: the sliding window (if any) on every block; p > 0: only on
                                            * block l with l % p < p - 1 (gemma2: 2, the even blocks) */
    int big_attn_scale_layers;             /* n_layer at which llama.cpp takes 1/sqrt(n_embd/n_head) for the
                                            * attention scale (gemma2 27B: 46); 0: never, 1/sqrt(head_dim) */
    double rope_base_local;                /* > 0: the RoPE base of the windowed blocks (gemma3: 10000), which
                                            * take no linear scaling either; 0: one base for all */
    int moe_oai;                           /* 1: gpt-oss's experts (MOE_FFN_ADD above): routing by the top
                                            * logits and a softmax over them, per-expert biases, swiglu_oai */
} lrun_arch;

/* The known architectures (arch.c lists them). */
extern const lrun_arch lrun_arch_llama;
extern const lrun_arch lrun_arch_qwen2;
extern const lrun_arch lrun_arch_qwen3;
extern const lrun_arch lrun_arch_phi3;
extern const lrun_arch lrun_arch_gemma2;
extern const lrun_arch lrun_arch_gemma3;
extern const lrun_arch lrun_arch_qwen3moe;
extern const lrun_arch lrun_arch_llama_moe; /* "llama" with <arch>.expert_count > 0: Mixtral */
extern const lrun_arch lrun_arch_gpt_oss;

/* llama's hyper-parameter keys, which qwen2, qwen3 and phi3 share (under
 * their own prefix) but for the last, llama's attention.sliding_window;
 * after those, the expert counts, which only llama's mixture-of-experts
 * description (Mixtral) reads. */
#define LRUN_ARCH_LLAMA_N_HPARAMS 12
#define LRUN_ARCH_LLAMA_MOE_N_HPARAMS (LRUN_ARCH_LLAMA_N_HPARAMS + 2)
extern const lrun_arch_hparam_desc lrun_arch_llama_hparams[LRUN_ARCH_LLAMA_MOE_N_HPARAMS];

/* The block vectors (norms, biases), in the order the engines convert them
 * to f32 at init: llama's first, in the order they always had. */
#define LRUN_ARCH_N_BLOCK_VECTORS 15
extern const lrun_arch_tensor lrun_arch_block_vectors[LRUN_ARCH_N_BLOCK_VECTORS];

/* The description for general.architecture name, or NULL. */
const lrun_arch *lrun_arch_find(const char *name);
/* The same, for a file whose <name>.expert_count is n_expert: llama's
 * mixture-of-experts description (Mixtral) when n_expert > 0. */
const lrun_arch *lrun_arch_find_moe(const char *name, int64_t n_expert);
/* 1 when a's block routes tokens to experts (a MOE_FFN_ADD op). */
int lrun_arch_has_experts(const lrun_arch *a);
/* The i-th known architecture, NULL past the last. */
const lrun_arch *lrun_arch_known(int i);
/* "llama, …": the known names, for messages, into buf (cap bytes); returns buf. */
const char *lrun_arch_known_names(char *buf, size_t cap);

/* The width of a buffer's rows. */
lrun_arch_dim lrun_arch_buf_dim(lrun_arch_buf buf);
/* The description of tensor id in a, or NULL when a has none. */
const lrun_arch_tensor_desc *lrun_arch_tensor_find(const lrun_arch *a, lrun_arch_tensor id);
/* 1 when a describes tensor id as a matrix (a second dimension): what a
 * block's staged unit holds (residency/weight_ring.c, cuda/engine_cuda_offload.c).
 * The experts' 3-D tensors are matrices too (n_expert of them, stacked). */
int lrun_arch_is_matrix(const lrun_arch *a, lrun_arch_tensor id);
/* 1 for the experts' stacked tensors (gate/up/down_exps). */
int lrun_arch_is_expert_tensor(lrun_arch_tensor id);
/* The split of a whose fused tensor is id, or NULL. */
const lrun_arch_split *lrun_arch_split_of(const lrun_arch *a, lrun_arch_tensor id);
/* 1 when id is a part of one of a's splits. */
int lrun_arch_is_split_part(const lrun_arch *a, lrun_arch_tensor id);

/* The number of weights op uses (up to the first NONE). */
int lrun_arch_op_n_w(const lrun_arch_op *op);

/* 1 when NORM op i may be folded into the product after it: op i + 1 is a
 * product (MATMUL, MATMUL_ADD, MATMUL_SWIGLU, MATMUL_GEGLU) of the norm's
 * output that does not write the norm's input, and no other op reads that
 * output before an op writes it again (scanning on through the next
 * block's ops, as blocks repeat). A backend may then compute the product
 * from the norm's input, normalizing as it loads, and never write the
 * norm's output (cuda/engine_cuda_forward.c, docs/gpu.md "Fused norm").
 * 0 for any other op, an in-place norm or the table's last op. */
int lrun_arch_norm_folds(const lrun_arch *a, int i);

/* Checks that a's tables agree: every op's weights are block tensors of a,
 * with shapes matching the op's buffers; every block tensor is used by one
 * op; every hyper-parameter and model tensor the engines need is there.
 * LRUN_E_INTERNAL naming the first disagreement. */
lrun_status lrun_arch_validate(const lrun_arch *a);

#endif
