/* hf.c — the name tables of hf.h: HF model_type, config.json keys and
 * tensor names, against the GGUF names of the architecture descriptions
 * (llama.cpp's convert_hf_to_gguf.py and gguf-py tensor_mapping use the
 * same pairs). Rows for one architecture come before the rows for all, and
 * the first match wins. */
#include "arch/hf.h"

#include <stdio.h>
#include <string.h>

// ---------------------------------------------------------------- model_type

static const struct { const char *model_type, *arch; } model_types[] = {
    {"llama", "llama"},
    {"mistral", "llama"},     /* llama with (optional) sliding-window attention */
    {"qwen2", "qwen2"},
    {"qwen3", "qwen3"},
    {"phi3", "phi3"},
    {"gemma2", "gemma2"},
    {"gemma3_text", "gemma3"},
    {"qwen3_moe", "qwen3moe"},
    {"mixtral", "llama"},     /* llama with experts (num_local_experts): lrun_arch_find_moe */
    {"gpt_oss", "gpt-oss"},   /* its experts: model/model_hf_gpt_oss.h */
};

const char *lrun_hf_arch_for_model_type(const char *model_type)
{
    for (size_t i = 0; model_type && i < sizeof model_types / sizeof model_types[0]; i++)
        if (strcmp(model_types[i].model_type, model_type) == 0) return model_types[i].arch;
    return NULL;
}

int lrun_hf_norm_shift(const char *arch)
{
    return arch && (strcmp(arch, "gemma2") == 0 || strcmp(arch, "gemma3") == 0);
}

const char *lrun_hf_model_type_for_arch(const char *arch)
{
    for (size_t i = 0; arch && i < sizeof model_types / sizeof model_types[0]; i++)
        if (strcmp(model_types[i].arch, arch) == 0) return model_types[i].model_type;
    return NULL;
}

// ---------------------------------------------------------------- config.json keys

static const lrun_hf_key keys[] = {
    {NULL, "max_position_embeddings", "context_length", LRUN_HF_INT},
    {NULL, "hidden_size", "embedding_length", LRUN_HF_INT},
    {NULL, "num_hidden_layers", "block_count", LRUN_HF_INT},
    {NULL, "intermediate_size", "feed_forward_length", LRUN_HF_INT},
    {NULL, "num_attention_heads", "attention.head_count", LRUN_HF_INT},
    {NULL, "num_key_value_heads", "attention.head_count_kv", LRUN_HF_INT},
    {NULL, "head_dim", "attention.key_length", LRUN_HF_INT},
    {NULL, "head_dim", "attention.value_length", LRUN_HF_INT},
    {NULL, "rms_norm_eps", "attention.layer_norm_rms_epsilon", LRUN_HF_FLOAT},
    {NULL, "rope_theta", "rope.freq_base", LRUN_HF_FLOAT},
    {NULL, "vocab_size", "vocab_size", LRUN_HF_INT},
    {NULL, "sliding_window", "attention.sliding_window", LRUN_HF_INT},
    {NULL, "attn_logit_softcapping", "attn_logit_softcapping", LRUN_HF_FLOAT},
    {NULL, "final_logit_softcapping", "final_logit_softcapping", LRUN_HF_FLOAT},
    {NULL, "num_local_experts", "expert_count", LRUN_HF_INT},   /* mixtral */
    {NULL, "num_experts", "expert_count", LRUN_HF_INT},         /* qwen3moe */
    {NULL, "num_experts_per_tok", "expert_used_count", LRUN_HF_INT},
    {"qwen3moe", "moe_intermediate_size", "expert_feed_forward_length", LRUN_HF_INT},
    {"gpt-oss", "intermediate_size", "expert_feed_forward_length", LRUN_HF_INT}, /* every block routes */
};

const lrun_hf_key *lrun_hf_key_at(int i)
{
    return i >= 0 && i < (int)(sizeof keys / sizeof keys[0]) ? &keys[i] : NULL;
}

// ---------------------------------------------------------------- tensor names

/* Patterns have at most one %d, a block index. hf NULL: ignored. */
static const struct { const char *arch, *gguf, *hf; } tensors[] = {
    /* gemma2/3: four norms per block, named differently from llama's two */
    {"gemma2", "blk.%d.post_attention_norm.weight", "model.layers.%d.post_attention_layernorm.weight"},
    {"gemma2", "blk.%d.ffn_norm.weight", "model.layers.%d.pre_feedforward_layernorm.weight"},
    {"gemma2", "blk.%d.post_ffw_norm.weight", "model.layers.%d.post_feedforward_layernorm.weight"},
    {"gemma3", "blk.%d.post_attention_norm.weight", "model.layers.%d.post_attention_layernorm.weight"},
    {"gemma3", "blk.%d.ffn_norm.weight", "model.layers.%d.pre_feedforward_layernorm.weight"},
    {"gemma3", "blk.%d.post_ffw_norm.weight", "model.layers.%d.post_feedforward_layernorm.weight"},
    /* the router of a mixture of experts (the experts themselves, one tensor each or transformers 5's
     * fused 3-D ones, are stacked by model/model_hf_moe.c); the first row is what writers use */
    {"qwen3moe", "blk.%d.ffn_gate_inp.weight", "model.layers.%d.mlp.gate.weight"},
    {"llama", "blk.%d.ffn_gate_inp.weight", "model.layers.%d.block_sparse_moe.gate.weight"},
    {"llama", "blk.%d.ffn_gate_inp.weight", "model.layers.%d.mlp.gate.weight"}, /* transformers 5's mixtral */
    /* gpt-oss: llama.cpp's converter's names; the experts are model/model_hf_gpt_oss.c's */
    {"gpt-oss", "blk.%d.post_attention_norm.weight", "model.layers.%d.post_attention_layernorm.weight"},
    {"gpt-oss", "blk.%d.attn_sinks.weight", "model.layers.%d.self_attn.sinks"},
    {"gpt-oss", "blk.%d.ffn_gate_inp.weight", "model.layers.%d.mlp.router.weight"},
    {"gpt-oss", "blk.%d.ffn_gate_inp.bias", "model.layers.%d.mlp.router.bias"},
    /* phi3: fused projections ([q; k; v] and [gate; up] rows) */
    {"phi3", "blk.%d.ffn_up.weight", "model.layers.%d.mlp.gate_up_proj.weight"},
    {NULL, "blk.%d.attn_qkv.weight", "model.layers.%d.self_attn.qkv_proj.weight"},
    /* every architecture */
    {NULL, "token_embd.weight", "model.embed_tokens.weight"},
    {NULL, "output_norm.weight", "model.norm.weight"},
    {NULL, "output.weight", "lm_head.weight"},
    {NULL, "blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight"},
    {NULL, "blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight"},
    {NULL, "blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight"},
    {NULL, "blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight"},
    {NULL, "blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight"},
    {NULL, "blk.%d.attn_q.bias", "model.layers.%d.self_attn.q_proj.bias"},
    {NULL, "blk.%d.attn_k.bias", "model.layers.%d.self_attn.k_proj.bias"},
    {NULL, "blk.%d.attn_v.bias", "model.layers.%d.self_attn.v_proj.bias"},
    {NULL, "blk.%d.attn_output.bias", "model.layers.%d.self_attn.o_proj.bias"},
    {NULL, "blk.%d.attn_q_norm.weight", "model.layers.%d.self_attn.q_norm.weight"},
    {NULL, "blk.%d.attn_k_norm.weight", "model.layers.%d.self_attn.k_norm.weight"},
    {NULL, "blk.%d.ffn_norm.weight", "model.layers.%d.post_attention_layernorm.weight"},
    {NULL, "blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight"},
    {NULL, "blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight"},
    {NULL, "blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight"},
    /* older checkpoints save RoPE's inverse frequencies; they follow from the config */
    {NULL, NULL, "model.layers.%d.self_attn.rotary_emb.inv_freq"},
};
#define N_TENSORS ((int)(sizeof tensors / sizeof tensors[0]))

/* Whether name fits pattern (at most one %d: 1 to 9 digits, into *index). */
static int fits(const char *pattern, const char *name, int *index)
{
    const char *d = strstr(pattern, "%d");
    *index = -1;
    if (!d) return strcmp(pattern, name) == 0;
    const size_t pre = (size_t)(d - pattern);
    if (strncmp(pattern, name, pre) != 0) return 0;
    const char *p = name + pre;
    int n = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 9) n = n * 10 + (*p++ - '0'), digits++;
    if (digits == 0 || strcmp(p, d + 2) != 0) return 0;
    *index = n;
    return 1;
}

static int applies(int row, const char *arch)
{
    return !tensors[row].arch || (arch && strcmp(tensors[row].arch, arch) == 0);
}

/* Writes pattern with index into out; 1 when it fits. */
static int put(const char *pattern, int index, char *out, size_t cap)
{
    const int n = strstr(pattern, "%d") ? snprintf(out, cap, pattern, index) : snprintf(out, cap, "%s", pattern);
    return n > 0 && (size_t)n < cap;
}

int lrun_hf_tensor_to_gguf(const char *arch, const char *hf_name, char *out, size_t cap)
{
    int index;
    for (int i = 0; i < N_TENSORS; i++)
        if (applies(i, arch) && fits(tensors[i].hf, hf_name, &index))
            return tensors[i].gguf ? put(tensors[i].gguf, index, out, cap) : -1;
    return 0;
}

int lrun_hf_tensor_from_gguf(const char *arch, const char *gguf_name, char *out, size_t cap)
{
    int index;
    for (int i = 0; i < N_TENSORS; i++)
        if (applies(i, arch) && tensors[i].gguf && fits(tensors[i].gguf, gguf_name, &index))
            return put(tensors[i].hf, index, out, cap);
    return 0;
}
