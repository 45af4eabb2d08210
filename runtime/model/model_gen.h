/* model_gen.h — the random model's tensor list and vocabulary, shared by
 * the GGUF generator (model_gen.c) and the HF-directory one
 * (model_gen_hf.c), so both write the same weights: each tensor's values
 * follow from the run's seed, its GGUF name and the element index
 * (lrun_random_fill). */
#ifndef LRUN_MODEL_GEN_H
#define LRUN_MODEL_GEN_H

#include "arch/arch.h"
#include "lrun.h"

typedef struct gen_tensor {
    char name[64];
    lrun_dtype dtype;
    int ndim;
    int64_t ne[3];              /* ne[0] innermost: a weight [out, in] is {in, out}; experts' {in, out, n_expert} */
    int64_t nelem;
    int64_t block;              /* elements per block of dtype */
    size_t block_bytes;
    float scale;                /* values U(-scale, scale) */
    int is_norm;                /* 1: f32 values (1 + noise) · norm_gain */
    double norm_gain;           /* a norm's gain; 0: 1 */
    int trained;                /* 1: trained-like values of deviation scale (lrun_random_fill_trained) */
    const float *values;        /* (nelem) f32 values to write as they are (RoPE factors), or NULL */
    uint64_t seed;              /* from the run's seed and the tensor's name */
    double row_skew;            /* > 0: row r (f32) times 1 + row_skew / (r + 1): the skewed router */
} gen_tensor;

typedef struct gen_list {
    gen_tensor *t;              /* (n) in file order */
    float *rope_factors;        /* (head_dim / 2) values of rope_freqs.weight, or NULL */
    float *rope_long, *rope_short; /* (head_dim / 2) LongRoPE factors, or NULL */
    int64_t n;
    size_t total_bytes;         /* sum of tensor bytes, without padding */
} gen_list;

/* tokens (n_vocab), token types (n_vocab) and merges (n_merges), all
 * pointing into one arena. */
typedef struct gen_vocab {
    char **tokens;
    int32_t *types;
    char **merges;
    int64_t n_merges;
    char *arena;
} gen_vocab;

/* The description spec.arch names (llama when NULL), or NULL. */
const lrun_arch *lrun_gen_arch(const lrun_model_gen_spec *s);
/* spec.head_dim, or n_embd / n_head. */
int64_t lrun_gen_head_dim(const lrun_model_gen_spec *s);
/* Checks the spec; LRUN_E_ARG naming the field. */
lrun_status lrun_gen_check_spec(const lrun_model_gen_spec *s);
/* token_embd, the blocks (the description's order), the model's other
 * tensors; l->rope_factors (when set) is the caller's to free. */
lrun_status lrun_gen_build_list(gen_list *l, const lrun_model_gen_spec *s);
/* The byte-level BPE vocabulary of the random models: ids 0..255 the bytes
 * (in GPT-2's printable mapping), 256..258 <|endoftext|>, <|im_start|>,
 * <|im_end|> (control), then letter fillers each with its merge. */
lrun_status lrun_gen_build_vocab(gen_vocab *v, int64_t n_vocab);
void lrun_gen_vocab_free(gen_vocab *v);
/* A norm's value from its noise: (1 + noise) · t->norm_gain (no gain: 1 + noise, as always). */
static inline float lrun_gen_norm_value(const gen_tensor *t, float noise)
{
    return t->norm_gain > 0 ? (float)((double)(noise + 1.0f) * t->norm_gain) : noise + 1.0f;
}
/* The ChatML template both formats carry. */
extern const char lrun_gen_chatml_template[];

#endif
