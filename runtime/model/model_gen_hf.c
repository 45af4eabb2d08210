/* model_gen_hf.c — writes the random model of model_gen.c (any architecture
 * with an HF model_type in arch/hf.c) as a
 * Hugging Face directory: config.json, generation_config.json and the
 * weights as model.safetensors, or n shards with model.safetensors.index.json.
 *
 * The values are the GGUF generator's (model_gen.h: same seed, same name,
 * same element index), in HF names and layout: shapes row-major [out, in],
 * and, for llama, q/k rows un-permuted. A GGUF llama's q/k rows are permuted for RoPE on
 * adjacent pairs (convert_hf_to_gguf.py): GGUF row h·hd + 2i + j holds HF
 * row h·hd + j·hd/2 + i (head h, i < hd/2, j ∈ {0, 1}). Writing HF row r
 * from GGUF row perm(r) gives a directory whose half-split RoPE computes
 * what the GGUF computes, so tests can compare the two loads. Architectures
 * whose GGUF already uses the half-split RoPE (qwen2, qwen3, phi3) keep
 * their rows. RoPE factors are not a tensor in HF: config.json's
 * rope_scaling says them.
 *
 * gpt-oss (model_gen_hf_gpt_oss.h) writes its experts as transformers'
 * GptOssExperts holds them: unquantized gate_up_proj/down_proj, or MXFP4
 * _blocks/_scales as the released checkpoints, with their biases.
 *
 * tokenizer.json holds the GGUF's byte-level BPE vocabulary as the HF
 * `tokenizers` library reads it (model BPE with vocab and merges,
 * pre-tokenizer and decoder ByteLevel, the three specials as added
 * tokens), and tokenizer_config.json its ChatML template. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "arch/hf.h"
#include "core/error.h"
#include "core/threadpool.h"
#include "formats/safetensors_writer.h"
#include "lrun.h"
#include "model/model_gen.h"
#include "model/model_gen_hf_gpt_oss.h"
#include "model/model_hf_moe.h"
#include "model/random_fill.h"

#define ROWS_BYTES ((size_t)4 << 20) /* rows a thread fills per write */

/* Where rows are filled before each write, and the threads that fill them. */
typedef struct {
    uint8_t *buf;
    lrun_threadpool *pool;
} gen_hf_out;

static lrun_status st_dtype(lrun_dtype d, lrun_st_dtype *out)
{
    switch (d) {
    case LRUN_DTYPE_F32: *out = LRUN_ST_F32; return LRUN_OK;
    case LRUN_DTYPE_F16: *out = LRUN_ST_F16; return LRUN_OK;
    case LRUN_DTYPE_BF16: *out = LRUN_ST_BF16; return LRUN_OK;
    default:
        return lrun_fail(LRUN_E_ARG, "lrun_model_generate_hf: %s weights: an HF directory holds f32, f16 or bf16",
                         lrun_dtype_name(d));
    }
}

// ---------------------------------------------------------------- JSON files

static lrun_status write_json(const char *dir, const char *name, const cJSON *j)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = cJSON_Print(j);
    if (!text) return lrun_fail_oom(0, 0, "lrun_model_generate_hf: %s", path);
    FILE *f = fopen(path, "wb");
    const int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    const int closed = f && fclose(f) == 0;
    free(text);
    if (!ok || !closed) return lrun_fail(LRUN_E_IO, "lrun_model_generate_hf: %s: cannot write: %s", path, strerror(errno));
    return LRUN_OK;
}

static const char *torch_dtype(lrun_dtype d)
{
    return d == LRUN_DTYPE_BF16 ? "bfloat16" : d == LRUN_DTYPE_F16 ? "float16" : "float32";
}

/* A list of n floats (LongRoPE factors) as JSON numbers: each f32 exactly, so
 * the loader's (float) of the parsed double is the GGUF's value. */
static cJSON *float_list(const float *v, int64_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
    return a;
}

/* Gemma's keys as transformers' Gemma2Config / Gemma3TextConfig name them,
 * with the values the GGUF generator gives the description (model_gen.c). */
static void gemma_config(cJSON *c, const lrun_model_gen_spec *s)
{
    const lrun_arch *a = lrun_gen_arch(s);
    const int64_t hd = lrun_gen_head_dim(s);
    /* llama.cpp's attention scale (lrun_model_attn_scale) as transformers' query_pre_attn_scalar */
    const int big = a->big_attn_scale_layers && s->n_layer == a->big_attn_scale_layers;
    cJSON_AddNumberToObject(c, "query_pre_attn_scalar", (double)(big ? s->n_embd / s->n_head : hd));
    cJSON_AddStringToObject(c, "hidden_activation", "gelu_pytorch_tanh");
    if (strcmp(a->name, "gemma2") == 0) {
        cJSON_AddNumberToObject(c, "attn_logit_softcapping", 50.0); /* model_gen.c's gen_hparam */
        cJSON_AddNumberToObject(c, "final_logit_softcapping", 30.0);
        /* the GGUF's default window when the spec has none */
        if (s->sliding_window <= 0) cJSON_AddNumberToObject(c, "sliding_window", 4096);
    } else {
        cJSON_AddNullToObject(c, "attn_logit_softcapping");
        cJSON_AddNullToObject(c, "final_logit_softcapping");
        cJSON_AddNumberToObject(c, "rope_local_base_freq", a->rope_base_local);
        cJSON_AddNumberToObject(c, "sliding_window_pattern", a->swa_pattern);
        if (s->sliding_window <= 0) cJSON_AddNumberToObject(c, "sliding_window", (double)s->n_ctx); /* required */
    }
    cJSON *types = cJSON_AddArrayToObject(c, "layer_types");
    for (int64_t l = 0; l < s->n_layer; l++) /* lrun_model_layer_is_local's pattern */
        cJSON_AddItemToArray(types, cJSON_CreateString(l % a->swa_pattern < a->swa_pattern - 1 ? "sliding_attention"
                                                                                              : "full_attention"));
}

/* A mixture of experts' keys as transformers' Qwen3MoeConfig / MixtralConfig
 * name them. qwen3_moe: every block sparse, the top-k renormalised (what
 * lrun and llama.cpp compute; the released models' settings); its dense
 * intermediate_size, which no block uses, is the experts' width. The
 * router's skew (spec.router_skew) is in its weights, not a key. */
static void moe_config(cJSON *c, const lrun_model_gen_spec *s)
{
    cJSON_AddNumberToObject(c, "num_experts_per_tok", (double)s->n_expert_used);
    if (strcmp(lrun_gen_arch(s)->name, "qwen3moe") != 0) {
        cJSON_AddNumberToObject(c, "num_local_experts", (double)s->n_expert);
        return;
    }
    cJSON_AddNumberToObject(c, "num_experts", (double)s->n_expert);
    cJSON_AddNumberToObject(c, "moe_intermediate_size", (double)s->n_ff);
    cJSON_AddBoolToObject(c, "norm_topk_prob", 1);
    cJSON_AddNumberToObject(c, "decoder_sparse_step", 1);
    cJSON_AddItemToObject(c, "mlp_only_layers", cJSON_CreateArray());
}

/* The model_type and transformers class an HF directory of spec's architecture
 * names, or NULL when the generator writes none. */
static const char *hf_class(const lrun_model_gen_spec *s, const char **model_type_out)
{
    static const struct {
        const char *model_type, *cls;
    } classes[] = {{"llama", "LlamaForCausalLM"},        {"qwen2", "Qwen2ForCausalLM"},
                   {"qwen3", "Qwen3ForCausalLM"},        {"phi3", "Phi3ForCausalLM"},
                   {"gemma2", "Gemma2ForCausalLM"},      {"gemma3_text", "Gemma3ForCausalLM"},
                   {"qwen3_moe", "Qwen3MoeForCausalLM"}, {"mixtral", "MixtralForCausalLM"},
                   {"gpt_oss", "GptOssForCausalLM"}};
    const char *name = lrun_gen_arch(s)->name, *model_type = lrun_hf_model_type_for_arch(name);
    if (s->n_expert > 0 && strcmp(name, "llama") == 0) model_type = "mixtral"; /* llama with experts */
    *model_type_out = model_type;
    for (size_t i = 0; model_type && i < sizeof classes / sizeof classes[0]; i++)
        if (strcmp(classes[i].model_type, model_type) == 0) return classes[i].cls;
    return NULL;
}

static lrun_status write_configs(const char *dir, const lrun_model_gen_spec *s, const gen_list *l)
{
    cJSON *c = cJSON_CreateObject(), *arch = cJSON_CreateArray(), *g = cJSON_CreateObject();
    if (!c || !arch || !g) {
        cJSON_Delete(c), cJSON_Delete(arch), cJSON_Delete(g);
        return lrun_fail_oom(0, 0, "lrun_model_generate_hf: config");
    }
    const int moe = s->n_expert > 0;
    const char *model_type = NULL, *cls = hf_class(s, &model_type); /* checked by the caller */
    cJSON_AddItemToArray(arch, cJSON_CreateString(cls));
    cJSON_AddItemToObject(c, "architectures", arch);
    cJSON_AddStringToObject(c, "model_type", model_type);
    cJSON_AddNumberToObject(c, "hidden_size", (double)s->n_embd);
    cJSON_AddNumberToObject(c, "intermediate_size", (double)s->n_ff);
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)s->n_layer);
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)s->n_head);
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)s->n_head_kv);
    cJSON_AddNumberToObject(c, "head_dim", (double)lrun_gen_head_dim(s));
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)s->n_ctx);
    cJSON_AddNumberToObject(c, "vocab_size", (double)s->n_vocab);
    cJSON_AddNumberToObject(c, "rms_norm_eps", s->rms_eps);
    cJSON_AddItemToObject(c, "rope_theta", lrun_gen_hf_float(s->rope_freq_base));
    /* tied when the list has no head (gemma2 never has one; gpt-oss always) */
    int head = 0;
    for (int64_t i = 0; i < l->n; i++) head |= strcmp(l->t[i].name, "output.weight") == 0;
    cJSON_AddBoolToObject(c, "tie_word_embeddings", !head);
    if (s->sliding_window > 0) cJSON_AddNumberToObject(c, "sliding_window", (double)s->sliding_window);
    if (s->rope_llama3_factor > 0) { /* the values model_gen.c gives lrun_rope_llama3_factors */
        cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
        cJSON_AddNumberToObject(rs, "factor", s->rope_llama3_factor);
        cJSON_AddNumberToObject(rs, "low_freq_factor", 1.0);
        cJSON_AddNumberToObject(rs, "high_freq_factor", 4.0);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", 8192);
    }
    if (s->rope_orig_ctx > 0 && l->rope_long && l->rope_short) { /* Phi-3 128k's LongRoPE */
        cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
        cJSON_AddStringToObject(rs, "type", "longrope");
        cJSON_AddItemToObject(rs, "long_factor", float_list(l->rope_long, lrun_gen_head_dim(s) / 2));
        cJSON_AddItemToObject(rs, "short_factor", float_list(l->rope_short, lrun_gen_head_dim(s) / 2));
        cJSON_AddNumberToObject(c, "original_max_position_embeddings", (double)s->rope_orig_ctx);
    }
    if (lrun_gen_arch(s)->embd_scale) gemma_config(c, s);
    if (moe) moe_config(c, s);
    const int oss = lrun_gen_arch(s)->moe_oai;
    if (oss) lrun_gen_hf_gpt_oss_config(c, s);
    cJSON_AddStringToObject(c, "hidden_act", lrun_gen_arch(s)->embd_scale ? "gelu_pytorch_tanh" : "silu");
    cJSON_AddBoolToObject(c, "attention_bias", oss); /* gpt-oss's q/k/v/o are biased */
    cJSON_AddBoolToObject(c, "mlp_bias", 0);
    cJSON_AddNumberToObject(c, "bos_token_id", 256); /* <|endoftext|>, as the GGUF's */
    cJSON_AddNumberToObject(c, "eos_token_id", 256);
    cJSON_AddStringToObject(c, "torch_dtype", torch_dtype(s->weight_dtype));
    cJSON_AddNumberToObject(g, "bos_token_id", 256);
    cJSON_AddNumberToObject(g, "eos_token_id", 256);
    lrun_status st = write_json(dir, "config.json", c);
    if (st == LRUN_OK) st = write_json(dir, "generation_config.json", g);
    cJSON_Delete(c);
    cJSON_Delete(g);
    return st;
}

// ---------------------------------------------------------------- tokenizer

static cJSON *byte_level(const char *type)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", type);
    cJSON_AddBoolToObject(b, "add_prefix_space", 0);
    cJSON_AddBoolToObject(b, "trim_offsets", 1);
    cJSON_AddBoolToObject(b, "use_regex", 1);
    return b;
}

static cJSON *bpe_model(const gen_vocab *v, int64_t n_vocab)
{
    cJSON *m = cJSON_CreateObject(), *vocab = cJSON_CreateObject(), *merges = cJSON_CreateArray();
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddNullToObject(m, "dropout");
    cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddBoolToObject(m, "fuse_unk", 0);
    cJSON_AddBoolToObject(m, "byte_fallback", 0);
    cJSON_AddBoolToObject(m, "ignore_merges", 0);
    for (int64_t i = 0; i < n_vocab; i++) cJSON_AddNumberToObject(vocab, v->tokens[i], (double)i);
    for (int64_t i = 0; i < v->n_merges; i++) cJSON_AddItemToArray(merges, cJSON_CreateString(v->merges[i]));
    cJSON_AddItemToObject(m, "vocab", vocab);
    cJSON_AddItemToObject(m, "merges", merges);
    return m;
}

static lrun_status write_tokenizer(const char *dir, const lrun_model_gen_spec *s)
{
    gen_vocab v = {0};
    lrun_status st = lrun_gen_build_vocab(&v, s->n_vocab);
    cJSON *t = st == LRUN_OK ? cJSON_CreateObject() : NULL, *added = cJSON_CreateArray();
    cJSON *tc = cJSON_CreateObject();
    if (st == LRUN_OK && (!t || !added || !tc)) st = lrun_fail_oom(0, 0, "lrun_model_generate_hf: tokenizer.json");
    if (st == LRUN_OK) {
        cJSON_AddStringToObject(t, "version", "1.0");
        cJSON_AddNullToObject(t, "truncation");
        cJSON_AddNullToObject(t, "padding");
        for (int64_t i = 0; i < s->n_vocab; i++) {
            if (v.types[i] != LRUN_TOKEN_TYPE_CONTROL) continue;
            cJSON *a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "id", (double)i);
            cJSON_AddStringToObject(a, "content", v.tokens[i]);
            cJSON_AddBoolToObject(a, "single_word", 0);
            cJSON_AddBoolToObject(a, "lstrip", 0);
            cJSON_AddBoolToObject(a, "rstrip", 0);
            cJSON_AddBoolToObject(a, "normalized", 0);
            cJSON_AddBoolToObject(a, "special", 1);
            cJSON_AddItemToArray(added, a);
        }
        cJSON_AddItemToObject(t, "added_tokens", added);
        added = NULL;
        cJSON_AddNullToObject(t, "normalizer");
        cJSON_AddItemToObject(t, "pre_tokenizer", byte_level("ByteLevel"));
        cJSON_AddNullToObject(t, "post_processor");
        cJSON_AddItemToObject(t, "decoder", byte_level("ByteLevel"));
        cJSON_AddItemToObject(t, "model", bpe_model(&v, s->n_vocab));
        st = write_json(dir, "tokenizer.json", t);
    }
    if (st == LRUN_OK) {
        cJSON_AddStringToObject(tc, "tokenizer_class", "PreTrainedTokenizerFast");
        cJSON_AddStringToObject(tc, "bos_token", v.tokens[256]);
        cJSON_AddStringToObject(tc, "eos_token", v.tokens[256]);
        cJSON_AddBoolToObject(tc, "add_bos_token", 0);
        cJSON_AddStringToObject(tc, "chat_template", lrun_gen_chatml_template);
        st = write_json(dir, "tokenizer_config.json", tc);
    }
    cJSON_Delete(t);
    cJSON_Delete(added);
    cJSON_Delete(tc);
    lrun_gen_vocab_free(&v);
    return st;
}

// ---------------------------------------------------------------- tensor data

/* The GGUF row HF row r of t comes from: perm for q and k of an
 * architecture whose GGUF rotates adjacent pairs, else r. */
static int64_t source_row(const gen_tensor *t, const lrun_model_gen_spec *s, int64_t r)
{
    const int is_q = strstr(t->name, ".attn_q.weight") != NULL, is_k = strstr(t->name, ".attn_k.weight") != NULL;
    if ((!is_q && !is_k) || lrun_gen_arch(s)->rope_style != LRUN_ROPE_STYLE_ADJACENT) return r;
    const int64_t hd = lrun_gen_head_dim(s), half = hd / 2;
    const int64_t h = r / hd, rem = r % hd, j = rem / half, i = rem % half;
    return h * hd + 2 * i + j;
}

/* Rows [r0, r0 + n) of t into buf, a row each, filled across the pool (the
 * trained-like values cost ~30 ns each: one thread wrote a 7B in 290 s). */
typedef struct {
    const gen_tensor *t;
    const lrun_model_gen_spec *s;
    uint8_t *buf;
    size_t row_bytes;
    int64_t r0, n;
    _Atomic int failed;
    char message[256]; /* lrun_last_error is per thread: the failing one's, carried back */
} rows_task;

static lrun_status fill_row(const gen_tensor *t, const lrun_model_gen_spec *s, int64_t row, uint8_t *dst)
{
    lrun_status st =
        (t->trained ? lrun_random_fill_trained : lrun_random_fill)(t->dtype, dst, source_row(t, s, row) * t->ne[0],
                                                                   t->ne[0], t->scale, t->seed);
    if (st != LRUN_OK) return st;
    /* the GGUF's norms are (noise + 1) · gain; HF gemma keeps w of (1 + w): that value less 1,
     * the noise itself when there is no gain */
    const int shift = lrun_hf_norm_shift(lrun_gen_arch(s)->name);
    if (t->is_norm && (!shift || t->norm_gain > 0))
        for (int64_t i = 0; i < t->ne[0]; i++)
            ((float *)dst)[i] = lrun_gen_norm_value(t, ((float *)dst)[i]) - (shift ? 1.0f : 0.0f);
    if (t->row_skew > 0) { /* f32: the skewed router, as model_gen.c */
        const float k = (float)(1.0 + t->row_skew / (double)(row + 1));
        for (int64_t i = 0; i < t->ne[0]; i++) ((float *)dst)[i] *= k;
    }
    return LRUN_OK;
}

static void rows_run(void *p, int ith, int nth)
{
    rows_task *j = p;
    const int64_t a = j->n * ith / nth, b = j->n * (ith + 1) / nth;
    for (int64_t r = a; r < b && !atomic_load_explicit(&j->failed, memory_order_relaxed); r++)
        if (fill_row(j->t, j->s, j->r0 + r, j->buf + (size_t)r * j->row_bytes) != LRUN_OK) {
            int was = 0;
            if (atomic_compare_exchange_strong(&j->failed, &was, 1))
                snprintf(j->message, sizeof j->message, "%s", lrun_last_error());
        }
}

/* Streams t's rows (ne[1] rows of ne[0]; the experts' ne[1] · ne[2], expert
 * by expert, each its own HF tensor) in HF order, ROWS_BYTES a thread per write. */
static lrun_status write_tensor(lrun_st_writer *w, const gen_tensor *t, const lrun_model_gen_spec *s,
                                const gen_hf_out *out)
{
    const size_t row_bytes = (size_t)t->ne[0] * t->block_bytes / (size_t)t->block;
    const size_t batch = ROWS_BYTES * (size_t)lrun_threadpool_size(out->pool);
    const int64_t per = row_bytes >= batch ? 1 : (int64_t)(batch / row_bytes);
    const int64_t rows = t->ne[1] * (t->ndim == 3 ? t->ne[2] : 1);
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        rows_task j = {.t = t,
                       .s = s,
                       .buf = out->buf,
                       .row_bytes = row_bytes,
                       .r0 = r0,
                       .n = rows - r0 < per ? rows - r0 : per};
        atomic_init(&j.failed, 0);
        lrun_threadpool_run(out->pool, rows_run, &j);
        if (atomic_load(&j.failed)) return lrun_fail(LRUN_E_INTERNAL, "%s", j.message);
        lrun_status st = lrun_st_writer_write(w, out->buf, (size_t)j.n * row_bytes);
        if (st != LRUN_OK) return st;
    }
    return LRUN_OK;
}

/* The HF name of t (expert e's matrix, for the experts' stacked tensors: one
 * HF tensor each, in expert order, so the loader's stacked tensor is a view). */
static int hf_name(const lrun_model_gen_spec *s, const gen_tensor *t, int e, char *out, size_t cap)
{
    const char *arch = lrun_gen_arch(s)->name;
    if (t->ndim == 3) return lrun_hf_expert_name(arch, t->name, e, out, cap);
    return lrun_hf_tensor_from_gguf(arch, t->name, out, cap);
}

/* The k-th directory tensor of list tensor t (k = 0, 1, ...: an expert
 * each for stacked experts; gpt-oss's, model_gen_hf_gpt_oss.h) into *out:
 * 1, or 0 when t has no k-th, or -1 (error set) when it has no HF name. */
static int hf_decl(const lrun_model_gen_spec *s, const gen_tensor *t, int k, gen_hf_decl *out)
{
    if (lrun_gen_hf_gpt_oss_owns(s, t)) return lrun_gen_hf_gpt_oss_decl(t, k, out);
    if (k >= (t->ndim == 3 ? t->ne[2] : 1)) return 0;
    if (!hf_name(s, t, k, out->name, sizeof out->name)) {
        lrun_fail(LRUN_E_INTERNAL, "lrun_model_generate_hf: no HF name for '%s'", t->name);
        return -1;
    }
    if (st_dtype(t->dtype, &out->dtype) != LRUN_OK) return -1; /* checked before anything was written */
    out->ndim = t->ndim == 1 ? 1 : 2;
    out->shape[0] = t->ndim == 1 ? t->ne[0] : t->ne[1], out->shape[1] = t->ne[0];
    return 1;
}

/* One safetensors file with tensors [first, last) of the list. */
static lrun_status write_shard(const char *path, const gen_list *l, int64_t first, int64_t last,
                               const lrun_model_gen_spec *s, const gen_hf_out *out)
{
    lrun_st_writer *w = NULL;
    lrun_status st = lrun_st_writer_open(&w, path);
    if (st == LRUN_OK) st = lrun_st_writer_set_metadata(w, "format", "pt");
    for (int64_t i = first; st == LRUN_OK && i < last; i++) {
        gen_hf_decl d;
        int got = 1;
        for (int k = 0; st == LRUN_OK && (got = hf_decl(s, &l->t[i], k, &d)) > 0; k++)
            st = lrun_st_writer_add(w, d.name, d.dtype, d.ndim, d.shape);
        if (st == LRUN_OK && got < 0) st = LRUN_E_INTERNAL; /* the message is hf_decl's */
    }
    for (int64_t i = first; st == LRUN_OK && i < last; i++)
        st = lrun_gen_hf_gpt_oss_owns(s, &l->t[i]) ? lrun_gen_hf_gpt_oss_write(w, l, &l->t[i])
                                                   : write_tensor(w, &l->t[i], s, out);
    if (st == LRUN_OK) st = lrun_st_writer_finish(w);
    lrun_st_writer_free(w);
    return st;
}

static void shard_name(char *out, size_t cap, int k, int n)
{
    if (n <= 1) snprintf(out, cap, "model.safetensors");
    else snprintf(out, cap, "model-%05d-of-%05d.safetensors", k + 1, n);
}

/* Tensor i goes to shard i·n/N: every shard gets one at least. l has no
 * rope_freqs (lrun_model_generate_hf drops it). */
static lrun_status write_weights(const char *dir, const gen_list *l, const lrun_model_gen_spec *s, int n,
                                 const gen_hf_out *out)
{
    cJSON *index = cJSON_CreateObject(), *map = cJSON_CreateObject(), *meta = cJSON_CreateObject();
    lrun_status st = index && map && meta ? LRUN_OK : lrun_fail_oom(0, 0, "lrun_model_generate_hf: index");
    for (int k = 0; st == LRUN_OK && k < n; k++) {
        const int64_t first = (l->n * k + n - 1) / n, last = (l->n * (k + 1) + n - 1) / n;
        char file[64], path[4200];
        shard_name(file, sizeof file, k, n);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        st = write_shard(path, l, first, last, s, out);
        for (int64_t i = first; st == LRUN_OK && i < last; i++) {
            gen_hf_decl d;
            for (int k = 0; hf_decl(s, &l->t[i], k, &d) > 0; k++) cJSON_AddStringToObject(map, d.name, file);
        }
    }
    if (st == LRUN_OK && n > 1) {
        cJSON_AddNumberToObject(meta, "total_size", (double)l->total_bytes);
        cJSON_AddItemToObject(index, "metadata", meta);
        cJSON_AddItemToObject(index, "weight_map", map);
        meta = map = NULL;
        st = write_json(dir, "model.safetensors.index.json", index);
    }
    cJSON_Delete(index);
    cJSON_Delete(map);
    cJSON_Delete(meta);
    return st;
}

/* RoPE factors (llama3's, LongRoPE's) are config.json's rope_scaling in HF, not tensors. */
static void drop_rope_freqs(gen_list *l)
{
    int64_t k = 0;
    for (int64_t i = 0; i < l->n; i++) {
        if (strncmp(l->t[i].name, "rope_f", 6) == 0) { /* rope_freqs, rope_factors_long/short */
            l->total_bytes -= (size_t)(l->t[i].nelem / l->t[i].block) * l->t[i].block_bytes;
            continue;
        }
        l->t[k++] = l->t[i];
    }
    l->n = k;
}

lrun_status lrun_model_generate_hf(const char *dir, const lrun_model_gen_spec *spec, int n_shards)
{
    if (!dir || !spec) return lrun_fail(LRUN_E_ARG, "lrun_model_generate_hf: dir and spec must not be NULL");
    lrun_status st = lrun_gen_check_spec(spec);
    if (st != LRUN_OK) return st;
    lrun_st_dtype dt;
    if ((st = st_dtype(spec->weight_dtype, &dt)) != LRUN_OK || (st = st_dtype(spec->embd_dtype, &dt)) != LRUN_OK)
        return st;
    const char *model_type = NULL;
    if (!hf_class(spec, &model_type))
        return lrun_fail(LRUN_E_UNSUPPORTED, "lrun_model_generate_hf: %s: the generator writes no HF directory of "
                         "this architecture%s (write a GGUF file)", lrun_gen_arch(spec)->name,
                         model_type ? "" : " (it has no HF model_type)");
    gen_list list = {0};
    st = lrun_gen_build_list(&list, spec);
    if (st == LRUN_OK) drop_rope_freqs(&list);
    /* every tensor's dtype before anything is written: a refusal leaves no partial directory (gpt-oss's
     * MXFP4 experts are the checkpoints' _blocks/_scales) */
    for (int64_t i = 0; st == LRUN_OK && i < list.n; i++)
        if (!(list.t[i].dtype == LRUN_DTYPE_MXFP4 && lrun_gen_hf_gpt_oss_owns(spec, &list.t[i])))
            st = st_dtype(list.t[i].dtype, &dt);
    if (st == LRUN_OK && (n_shards < 1 || n_shards > list.n))
        st = lrun_fail(LRUN_E_ARG, "lrun_model_generate_hf: n_shards = %d: must be in 1..%lld (the tensor count)",
                       n_shards, (long long)list.n);
    if (st == LRUN_OK && mkdir(dir, 0755) != 0 && errno != EEXIST)
        st = lrun_fail(LRUN_E_IO, "lrun_model_generate_hf: %s: cannot create: %s", dir, strerror(errno));
    gen_hf_out out = {0};
    if (st == LRUN_OK) st = lrun_threadpool_init(&out.pool, spec->n_threads);
    size_t cap = ROWS_BYTES * (size_t)(out.pool ? lrun_threadpool_size(out.pool) : 1);
    for (int64_t i = 0; st == LRUN_OK && i < list.n; i++) {
        const size_t row = (size_t)list.t[i].ne[0] * list.t[i].block_bytes / (size_t)list.t[i].block;
        if (row > cap) cap = row;
    }
    if (st == LRUN_OK && !(out.buf = malloc(cap))) st = lrun_fail_oom(cap, 0, "lrun_model_generate_hf: row buffer");
    if (st == LRUN_OK) st = write_configs(dir, spec, &list);
    if (st == LRUN_OK) st = write_tokenizer(dir, spec);
    if (st == LRUN_OK) st = write_weights(dir, &list, spec, n_shards, &out);
    free(out.buf);
    lrun_threadpool_free(out.pool);
    free(list.t);
    free(list.rope_factors);
    free(list.rope_long);
    free(list.rope_short);
    if (st != LRUN_OK) return lrun_fail_context(st, "generating %s", dir);
    return LRUN_OK;
}
