/* model_gen.c — writes random-weight models as GGUF files, of any
 * architecture in runtime/arch/: its description says which tensors (the
 * required ones, and the head when untied or required) and which keys to write.
 *
 * Flow: check the spec; declare metadata, a byte-level BPE vocabulary and
 * every tensor to a gguf writer; then stream the data. Data goes through two
 * buffers: while a writer thread hands one to the kernel, a pool of fill
 * threads produces the next with lrun_random_fill (counter-based, so each
 * thread fills its own slice of every tensor independently). Writes are tens
 * of MB each, sequential.
 */
#include "arch/arch.h"
#include "core/checked.h"
#include "core/error.h"
#include "lrun.h"
#include "model/model_gen.h"
#include "model/random_fill.h"
#include "model/rope_scaling.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GEN_CHUNK_BYTES ((size_t)64 << 20) /* per buffer; two are in flight */
#define GEN_MAX_THREADS 256
#define GEN_N_SPECIAL 3                    /* <|endoftext|>, <|im_start|>, <|im_end|> */
#define GEN_NORM_NOISE 0.02f               /* norms are 1 + U(-noise, noise) */
#define GEN_BIAS_SCALE 0.1f                /* biases are U(-scale, scale) */
#define GEN_SINK_SCALE 2.0f                /* attention sinks are U(-scale, scale) */

// ---------------------------------------------------------------- spec checks

static const lrun_arch *gen_arch(const lrun_model_gen_spec *s)
{
    return lrun_arch_find_moe(s->arch ? s->arch : "llama", s->n_expert);
}

static int64_t gen_head_dim(const lrun_model_gen_spec *s) { return s->head_dim > 0 ? s->head_dim : s->n_embd / s->n_head; }

/* A dimension of the description in the spec's numbers (0 for NONE). */
static int64_t gen_dim(const lrun_model_gen_spec *s, lrun_arch_dim d)
{
    switch (d) {
    case LRUN_ARCH_DIM_EMBD: return s->n_embd;
    case LRUN_ARCH_DIM_Q: return s->n_head * gen_head_dim(s);
    case LRUN_ARCH_DIM_KV: return s->n_head_kv * gen_head_dim(s);
    case LRUN_ARCH_DIM_FF: return s->n_ff;
    case LRUN_ARCH_DIM_VOCAB: return s->n_vocab;
    case LRUN_ARCH_DIM_ROT_HALF: return gen_head_dim(s) / 2;
    case LRUN_ARCH_DIM_HEAD: return gen_head_dim(s);
    case LRUN_ARCH_DIM_QKV: return (s->n_head + 2 * s->n_head_kv) * gen_head_dim(s);
    case LRUN_ARCH_DIM_FF2: return 2 * s->n_ff;
    case LRUN_ARCH_DIM_EXPERT: return s->n_expert;
    case LRUN_ARCH_DIM_N_HEAD: return s->n_head;
    default: return 0;
    }
}

const lrun_arch *lrun_gen_arch(const lrun_model_gen_spec *s) { return gen_arch(s); }
int64_t lrun_gen_head_dim(const lrun_model_gen_spec *s) { return gen_head_dim(s); }

static lrun_status bad_spec(const char *field, long long value, const char *why)
{
    return lrun_fail(LRUN_E_ARG, "lrun_model_generate: spec.%s = %lld: %s", field, value, why);
}

lrun_status lrun_gen_check_spec(const lrun_model_gen_spec *s)
{
    const struct { const char *name; int64_t v; } pos[] = {
        {"n_layer", s->n_layer}, {"n_embd", s->n_embd}, {"n_head", s->n_head}, {"n_head_kv", s->n_head_kv},
        {"n_ff", s->n_ff}, {"n_vocab", s->n_vocab}, {"n_ctx", s->n_ctx}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        /* stored as u32 in the file; token ids are int32 */
        if (pos[i].v <= 0 || pos[i].v > INT32_MAX) return bad_spec(pos[i].name, pos[i].v, "must be in 1..2^31-1");
    }
    if (s->n_layer > 100000) return bad_spec("n_layer", s->n_layer, "must be at most 100000");
    if (!gen_arch(s)) {
        char known[256];
        return lrun_fail(LRUN_E_ARG, "lrun_model_generate: spec.arch = '%s': not a known architecture (%s)", s->arch,
                         lrun_arch_known_names(known, sizeof known));
    }
    if (s->head_dim < 0 || s->head_dim > 65536 || s->head_dim % 2 != 0)
        return bad_spec("head_dim", s->head_dim, "must be 0 (n_embd / n_head) or even, at most 65536 (RoPE)");
    if (s->head_dim == 0 && s->n_embd % s->n_head != 0) return bad_spec("n_embd", s->n_embd, "must be a multiple of n_head");
    if (s->head_dim == 0 && (s->n_embd / s->n_head) % 2 != 0)
        return bad_spec("n_head", s->n_head, "head size n_embd/n_head must be even (RoPE)");
    if (s->n_head % s->n_head_kv != 0) return bad_spec("n_head_kv", s->n_head_kv, "must divide n_head");
    if (s->n_vocab < 256 + GEN_N_SPECIAL)
        return bad_spec("n_vocab", s->n_vocab, "must be at least 259 (256 byte tokens and 3 specials)");
    if (!lrun_dtype_is_supported((int)s->weight_dtype))
        return bad_spec("weight_dtype", (long long)s->weight_dtype, "is not a supported weight type");
    if (!lrun_dtype_is_supported((int)s->embd_dtype))
        return bad_spec("embd_dtype", (long long)s->embd_dtype, "is not a supported weight type");
    if (!lrun_dtype_is_supported((int)s->mix_dtype))
        return bad_spec("mix_dtype", (long long)s->mix_dtype, "is not a supported weight type (0: no mix)");
    if (!(s->rope_freq_base > 0) || !isfinite(s->rope_freq_base))
        return lrun_fail(LRUN_E_ARG, "lrun_model_generate: spec.rope_freq_base = %g: must be > 0", s->rope_freq_base);
    if (!(s->rms_eps > 0) || !(s->rms_eps < 1))
        return lrun_fail(LRUN_E_ARG, "lrun_model_generate: spec.rms_eps = %g: must be in (0, 1)", s->rms_eps);
    if (!(s->rope_llama3_factor == 0 || (s->rope_llama3_factor >= 1 && isfinite(s->rope_llama3_factor))))
        return lrun_fail(LRUN_E_ARG, "lrun_model_generate: spec.rope_llama3_factor = %g: must be 0 (none) or >= 1",
                         s->rope_llama3_factor);
    if (s->rope_orig_ctx < 0 || s->rope_orig_ctx > INT32_MAX ||
        (s->rope_orig_ctx > 0 && !lrun_arch_tensor_find(gen_arch(s), LRUN_ARCH_TENSOR_ROPE_LONG)))
        return bad_spec("rope_orig_ctx", s->rope_orig_ctx, "must be 0, or > 0 for an architecture with LongRoPE (phi3)");
    if (s->sliding_window < 0 || s->sliding_window > INT32_MAX)
        return bad_spec("sliding_window", s->sliding_window, "must be 0 (none) .. 2^31-1");
    if (s->n_expert < 0 || s->n_expert > 4096) return bad_spec("n_expert", s->n_expert, "must be 0 (dense) .. 4096");
    if (!(s->rope_yarn_factor >= 0) || s->rope_yarn_factor > 1e6)
        return bad_spec("rope_yarn_factor", (int64_t)s->rope_yarn_factor, "must be 0 (none) or a factor up to 1e6");
    if (s->expert_dtype != LRUN_DTYPE_F32 && !lrun_dtype_is_supported((int)s->expert_dtype))
        return bad_spec("expert_dtype", (int64_t)s->expert_dtype, "must be F32 (0: weight_dtype) or a weight dtype");
    if (s->n_expert > 0 && (s->n_expert_used < 1 || s->n_expert_used > s->n_expert))
        return bad_spec("n_expert_used", s->n_expert_used, "must be in 1..n_expert");
    if ((s->n_expert > 0) != lrun_arch_has_experts(gen_arch(s)))
        return bad_spec("n_expert", s->n_expert, s->n_expert > 0 ? "this architecture has no experts (qwen3moe, llama)"
                                                                  : "this architecture needs experts (> 0)");
    if (!(s->router_skew >= 0) || !isfinite(s->router_skew))
        return lrun_fail(LRUN_E_ARG, "lrun_model_generate: spec.router_skew = %g: must be >= 0", s->router_skew);
    if (s->n_threads < 0 || s->n_threads > GEN_MAX_THREADS)
        return bad_spec("n_threads", s->n_threads, "must be 0 (all cores) .. 256");
    return LRUN_OK;
}

// ---------------------------------------------------------------- the tensor list

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    while (*s) h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

static lrun_status add(gen_list *l, const lrun_model_gen_spec *s, const char *name, lrun_dtype dtype, int64_t ne0,
                       int64_t ne1, int64_t ne2)
{
    gen_tensor *t = &l->t[l->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->ndim = ne2 > 0 ? 3 : ne1 > 0 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 > 0 ? ne1 : 1;
    t->ne[2] = ne2 > 0 ? ne2 : 1;
    t->block = lrun_dtype_block_elems(dtype);
    t->block_bytes = lrun_dtype_block_bytes(dtype);
    if (ne0 % t->block != 0)
        return lrun_fail(LRUN_E_ARG, "lrun_model_generate: tensor '%s' has rows of %lld elements, not whole %s blocks of %lld",
                         name, (long long)ne0, lrun_dtype_name(dtype), (long long)t->block);
    size_t bytes;
    if (!lrun_i64_mul(ne0, t->ne[1], &t->nelem) || !lrun_i64_mul(t->nelem, t->ne[2], &t->nelem) ||
        !lrun_size_mul((size_t)(t->nelem / t->block), t->block_bytes, &bytes) ||
        !lrun_size_add(l->total_bytes, bytes, &l->total_bytes))
        return lrun_fail(LRUN_E_ARG, "lrun_model_generate: tensor '%s' {%lld, %lld} is too large", name,
                         (long long)ne0, (long long)t->ne[1]);
    t->is_norm = ne1 <= 0;
    t->scale = t->is_norm ? GEN_NORM_NOISE : (float)(1.0 / sqrt((double)ne0)); /* fan_in = ne[0] */
    t->seed = s->seed ^ name_hash(name);
    t->trained = s->trained_stats && !t->is_norm;
    if (t->trained) /* the uniform's deviation, times a per-tensor factor in [0.5, 1.5) */
        t->scale = (float)(t->scale / sqrt(3.0) * (0.5 + (double)(name_hash(name) >> 11) / 9007199254740992.0));
    return LRUN_OK;
}

/* llama.cpp's use_more_bits (llama-quant.cpp): the layers whose attn_v and
 * ffn_down a Q*_K_M recipe keeps in more bits. */
static int more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* Whether the generator writes tensor d: the required ones (fused matrices
 * rather than their parts, as llama.cpp's converter does), the head when
 * untied or required (gpt-oss), the RoPE factors when the spec scales RoPE. */
static int gen_writes(const lrun_model_gen_spec *s, const lrun_arch_tensor_desc *d)
{
    const lrun_arch *a = gen_arch(s);
    if (lrun_arch_split_of(a, d->id)) return 1;
    if (lrun_arch_is_split_part(a, d->id)) return 0;
    if (d->id == LRUN_ARCH_TENSOR_OUTPUT) return !s->tied_embeddings || d->required; /* gpt-oss requires one */
    if (d->id == LRUN_ARCH_TENSOR_ROPE_FREQS) return s->rope_llama3_factor > 0;
    if (d->id == LRUN_ARCH_TENSOR_ROPE_LONG || d->id == LRUN_ARCH_TENSOR_ROPE_SHORT) return s->rope_orig_ctx > 0;
    return d->required;
}

/* An MoE model's factor on tensor id's scale (lrun.h, spec.collapsed_routing):
 * with every matrix U(-1/sqrt(fan_in), ..) the embedding's rows have norm
 * about 0.6 while each block's attention adds about 15, nearly the same
 * vector for every token (random queries and keys attend almost uniformly);
 * past the first block the routers then see one input and pick the same
 * few experts for every token. An embedding of deviation 1 (T5, PaLM) with
 * residual outputs times 1/sqrt(2 n_layer) (GPT-2, Megatron) keeps the
 * token's identity in the stream through every block. Every block reads
 * the stream through an RMSNorm, so only the ratio matters: the embedding
 * takes both factors and every other matrix keeps the dense models' values
 * (and their quantization: outputs 1/sqrt(2 n_layer) smaller would push
 * Q4_K's f16 scales deeper into the subnormals). */
static double routing_factor(const lrun_model_gen_spec *s, lrun_arch_tensor id)
{
    /* U(-b, b) has deviation b/sqrt(3): times sqrt(3 n_embd) makes it 1 */
    if (id == LRUN_ARCH_TENSOR_TOKEN_EMBD) return sqrt(3.0 * (double)s->n_embd) * sqrt(2.0 * (double)s->n_layer);
    return 1.0;
}

/* Tensor d (of block layer, for a block's) in the spec's shape: matrices in
 * weight_dtype (the embedding and head in embd_dtype), vectors f32. */
static lrun_status add_desc(gen_list *l, const lrun_model_gen_spec *s, const lrun_arch_tensor_desc *d, int64_t layer)
{
    char name[64];
    if (layer >= 0) snprintf(name, sizeof name, d->name, (int)layer);
    else snprintf(name, sizeof name, "%s", d->name);
    const int matrix = d->ne[1] != LRUN_ARCH_DIM_NONE;
    const int head = d->id == LRUN_ARCH_TENSOR_TOKEN_EMBD || d->id == LRUN_ARCH_TENSOR_OUTPUT;
    lrun_dtype dt = !matrix ? LRUN_DTYPE_F32 : head ? s->embd_dtype : s->weight_dtype;
    if (d->id == LRUN_ARCH_TENSOR_GATE_INP) dt = LRUN_DTYPE_F32; /* llama.cpp's quantizer never quantizes the router */
    if (d->role == LRUN_ROLE_BIAS) dt = LRUN_DTYPE_F32; /* gpt-oss's experts' biases {n, n_expert} too */
    if (lrun_arch_is_expert_tensor(d->id) && s->expert_dtype != LRUN_DTYPE_F32) dt = s->expert_dtype;
    if (matrix && s->mix_dtype != LRUN_DTYPE_F32 &&
        (d->id == LRUN_ARCH_TENSOR_OUTPUT ||
         ((d->id == LRUN_ARCH_TENSOR_V || d->id == LRUN_ARCH_TENSOR_DOWN) && more_bits(layer, s->n_layer))))
        dt = s->mix_dtype;
    lrun_status st = add(l, s, name, dt, gen_dim(s, d->ne[0]), matrix ? gen_dim(s, d->ne[1]) : 0, gen_dim(s, d->ne[2]));
    if (st == LRUN_OK && d->id == LRUN_ARCH_TENSOR_GATE_INP) l->t[l->n - 1].row_skew = s->router_skew;
    if (st == LRUN_OK && s->n_expert > 0 && !s->collapsed_routing) {
        l->t[l->n - 1].scale *= routing_factor(s, d->id);
        /* a tied head reads the scaled embedding: the final norm's gain takes the scale back out, so the
         * logits keep the dense models' size */
        if (d->id == LRUN_ARCH_TENSOR_OUTPUT_NORM && s->tied_embeddings)
            l->t[l->n - 1].norm_gain = 1.0 / routing_factor(s, LRUN_ARCH_TENSOR_TOKEN_EMBD);
    }
    if (st == LRUN_OK && d->id == LRUN_ARCH_TENSOR_ROPE_FREQS) {
        l->rope_factors = malloc((size_t)gen_head_dim(s) / 2 * sizeof(float));
        if (!l->rope_factors) return lrun_fail_oom(0, 0, "lrun_model_generate: RoPE factors");
        lrun_rope_llama3_factors(l->rope_factors, gen_head_dim(s), s->rope_freq_base, s->rope_llama3_factor, 1.0,
                                 4.0, 8192.0);
        l->t[l->n - 1].values = l->rope_factors;
    }
    if (st == LRUN_OK && (d->id == LRUN_ARCH_TENSOR_ROPE_LONG || d->id == LRUN_ARCH_TENSOR_ROPE_SHORT)) {
        /* ramps as LongRoPE's: 1 for the fastest dims up to 1 + k·(n-1)/n for the slowest */
        const int64_t n = gen_head_dim(s) / 2;
        const int is_long = d->id == LRUN_ARCH_TENSOR_ROPE_LONG;
        float *v = malloc((size_t)n * sizeof *v);
        if (!v) return lrun_fail_oom(0, 0, "lrun_model_generate: LongRoPE factors");
        for (int64_t i = 0; i < n; i++) v[i] = 1.0f + (is_long ? 8.0f : 0.5f) * (float)i / (float)n;
        *(is_long ? &l->rope_long : &l->rope_short) = v;
        l->t[l->n - 1].values = v;
    }
    if (st == LRUN_OK && d->role == LRUN_ROLE_BIAS) {
        l->t[l->n - 1].is_norm = 0;
        /* gpt-oss's sinks: logits of the scores' order, so that they move the softmax */
        l->t[l->n - 1].scale = d->id == LRUN_ARCH_TENSOR_ATTN_SINKS ? GEN_SINK_SCALE : GEN_BIAS_SCALE;
    }
    return st;
}

/* token_embd, the blocks (each in the description's order, which is llama.cpp's
 * converter's), then the model's other tensors. */
lrun_status lrun_gen_build_list(gen_list *l, const lrun_model_gen_spec *s)
{
    const lrun_arch *a = gen_arch(s);
    const size_t cap = (size_t)(s->n_layer + 1) * (size_t)a->n_tensors;
    l->t = calloc(cap, sizeof *l->t);
    if (!l->t) return lrun_fail_oom(cap * sizeof *l->t, 0, "lrun_model_generate: tensor list");
    const lrun_arch_tensor_desc *embd = lrun_arch_tensor_find(a, LRUN_ARCH_TENSOR_TOKEN_EMBD);
    lrun_status st = add_desc(l, s, embd, -1);
    for (int64_t i = 0; st == LRUN_OK && i < s->n_layer; i++)
        for (int j = 0; st == LRUN_OK && j < a->n_tensors; j++) {
            const lrun_arch_tensor_desc *d = &a->tensors[j];
            if (d->id < LRUN_ARCH_TENSOR_BLOCK_COUNT && gen_writes(s, d)) st = add_desc(l, s, d, i);
        }
    for (int j = 0; st == LRUN_OK && j < a->n_tensors; j++) {
        const lrun_arch_tensor_desc *d = &a->tensors[j];
        if (d->id >= LRUN_ARCH_TENSOR_BLOCK_COUNT && d != embd && gen_writes(s, d)) st = add_desc(l, s, d, -1);
    }
    return st;
}

// ---------------------------------------------------------------- vocabulary

/* Byte-level BPE maps each byte to a printable code point (REFERENCE.md):
 * these bytes keep theirs, the other 68 take U+0100 upward in byte order. */
static int byte_is_printable(int b) { return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae; }

static int utf8_put(char *out, unsigned cp)
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2; /* every code point here is below U+0800 */
}

void lrun_gen_vocab_free(gen_vocab *v)
{
    free(v->tokens);
    free(v->types);
    free(v->merges);
    free(v->arena);
}

/* Ids 0..255: the byte tokens in byte order. 256..258: specials. Then
 * fillers: strings of a first symbol from {Ġ, a..z} and then letters, by
 * length (2, 3, …) and in counting order, each with the merge
 * "<all but the last letter> <last letter>"; all shorter strings come
 * before, so every merge joins two tokens that exist, and BPE can reach
 * every filler. */
lrun_status lrun_gen_build_vocab(gen_vocab *v, int64_t n_vocab)
{
    static const char *const specials[GEN_N_SPECIAL] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    const int64_t n_fill = n_vocab - 256 - GEN_N_SPECIAL;
    /* a filler of m symbols takes m+2 bytes as a token (Ġ is 2 bytes, plus
     * the NUL) and m+3 as a merge; m <= 8 for any int32 vocabulary */
    size_t arena_bytes = (size_t)256 * 3 + 64 + (size_t)n_fill * 24;
    v->tokens = calloc((size_t)n_vocab, sizeof *v->tokens);
    v->types = calloc((size_t)n_vocab, sizeof *v->types);
    v->merges = calloc((size_t)n_fill + 1, sizeof *v->merges);
    v->arena = malloc(arena_bytes);
    if (!v->tokens || !v->types || !v->merges || !v->arena)
        return lrun_fail_oom(arena_bytes, 0, "lrun_model_generate: vocabulary of %lld tokens", (long long)n_vocab);
    char *p = v->arena;
    unsigned next_cp = 0x100;
    for (int b = 0; b < 256; b++) {
        v->tokens[b] = p;
        p += utf8_put(p, byte_is_printable(b) ? (unsigned)b : next_cp++);
        *p++ = 0;
        v->types[b] = LRUN_TOKEN_TYPE_NORMAL;
    }
    for (int i = 0; i < GEN_N_SPECIAL; i++) {
        v->tokens[256 + i] = p;
        p += sprintf(p, "%s", specials[i]) + 1;
        v->types[256 + i] = LRUN_TOKEN_TYPE_CONTROL;
    }
    int64_t id = 256 + GEN_N_SPECIAL;
    for (int len = 2; id < n_vocab; len++) {
        int64_t per_level = 27; /* first symbol: Ġ or a letter; then letters */
        for (int k = 1; k < len; k++) per_level *= 26;
        for (int64_t j = 0; j < per_level && id < n_vocab; j++, id++) {
            int digits[32];
            int64_t x = j;
            for (int k = len - 1; k >= 1; k--) { digits[k] = (int)(x % 26); x /= 26; }
            digits[0] = (int)x; /* 0 = Ġ, 1..26 = a..z */
            char text[64];
            int n = 0;
            if (digits[0] == 0) n += utf8_put(text, 0x120);
            else text[n++] = (char)('a' + digits[0] - 1);
            for (int k = 1; k < len; k++) text[n++] = (char)('a' + digits[k]);
            v->tokens[id] = p;
            memcpy(p, text, (size_t)n);
            p[n] = 0;
            p += n + 1;
            v->types[id] = LRUN_TOKEN_TYPE_NORMAL;
            v->merges[v->n_merges++] = p;
            memcpy(p, text, (size_t)n - 1);
            p[n - 1] = ' ';
            p[n] = text[n - 1];
            p[n + 1] = 0;
            p += n + 2;
        }
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- metadata

static uint32_t file_type_of(lrun_dtype d, int mixed)
{
    switch (d) { /* llama_ftype values; a mixed recipe is the _M one */
    case LRUN_DTYPE_F32: return 0;
    case LRUN_DTYPE_F16: return 1;
    case LRUN_DTYPE_Q4_0: return 2;
    case LRUN_DTYPE_Q4_1: return 3;
    case LRUN_DTYPE_Q8_0: return 7;
    case LRUN_DTYPE_Q5_0: return 8;
    case LRUN_DTYPE_Q5_1: return 9;
    case LRUN_DTYPE_Q2_K: return 10;
    case LRUN_DTYPE_Q3_K: return mixed ? 12 : 11;
    case LRUN_DTYPE_Q4_K: return mixed ? 15 : 14; /* Q4_K_S: every matrix q4_K */
    case LRUN_DTYPE_Q5_K: return mixed ? 17 : 16;
    case LRUN_DTYPE_Q6_K: return 18;
    case LRUN_DTYPE_IQ4_NL: return 25;
    case LRUN_DTYPE_IQ4_XS: return 30;
    case LRUN_DTYPE_BF16: return 32;
    default: return 0;
    }
}

const char lrun_gen_chatml_template[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* The spec's value of hyper-parameter h (kind DIM/CTX as an integer). */
static double gen_hparam(const lrun_model_gen_spec *s, lrun_arch_hparam h)
{
    switch (h) {
    case LRUN_ARCH_HPARAM_CTX_TRAIN: return (double)s->n_ctx;
    case LRUN_ARCH_HPARAM_EMBD: return (double)s->n_embd;
    case LRUN_ARCH_HPARAM_LAYER: return (double)s->n_layer;
    case LRUN_ARCH_HPARAM_FF: return (double)s->n_ff;
    case LRUN_ARCH_HPARAM_HEAD: return (double)s->n_head;
    case LRUN_ARCH_HPARAM_HEAD_KV: return (double)s->n_head_kv;
    case LRUN_ARCH_HPARAM_HEAD_DIM:
    case LRUN_ARCH_HPARAM_V_DIM:
    case LRUN_ARCH_HPARAM_ROT: return (double)gen_head_dim(s);
    case LRUN_ARCH_HPARAM_RMS_EPS: return s->rms_eps;
    case LRUN_ARCH_HPARAM_ROPE_BASE: return s->rope_freq_base;
    case LRUN_ARCH_HPARAM_SWA: return (double)s->sliding_window;
    case LRUN_ARCH_HPARAM_ATTN_SOFTCAP: return 50.0; /* Gemma 2's */
    case LRUN_ARCH_HPARAM_FINAL_SOFTCAP: return 30.0;
    case LRUN_ARCH_HPARAM_EXPERT: return (double)s->n_expert;
    case LRUN_ARCH_HPARAM_EXPERT_USED: return (double)s->n_expert_used;
    default: return 0;
    }
}

static lrun_status write_metadata(lrun_gguf_writer *w, const lrun_model_gen_spec *s, const gen_vocab *v)
{
    const lrun_arch *a = gen_arch(s);
    char key[128], name[64];
    /* not "lrun random phi3": llama.cpp's vocabulary loader sets token attributes
     * of Phi-3's own tokens (</s>, <unk>, <s>) for any model name with "phi3" in it */
    snprintf(name, sizeof name, "lrun random model of %s", strcmp(a->name, "phi3") == 0 ? "phi-three" : a->name);
    lrun_status st = lrun_gguf_writer_set_str(w, "general.architecture", a->name);
#define KV(call) if (st == LRUN_OK) st = (call)
    KV(lrun_gguf_writer_set_str(w, "general.name", name));
    KV(lrun_gguf_writer_set_u32(w, "general.file_type", file_type_of(s->weight_dtype, s->mix_dtype != LRUN_DTYPE_F32)));
    KV(lrun_gguf_writer_set_u32(w, "general.quantization_version", 2));
    snprintf(key, sizeof key, "%s.vocab_size", a->name);
    KV(lrun_gguf_writer_set_u32(w, key, (uint32_t)s->n_vocab));
    /* every key of the description, so llama.cpp finds what it requires */
    for (int i = 0; i < a->n_hparams && st == LRUN_OK; i++) {
        const lrun_arch_hparam_desc *h = &a->hparams[i];
        snprintf(key, sizeof key, "%s.%s", a->name, h->key);
        double x = gen_hparam(s, h->id);
        /* none: no key, as converters write; where the key is required (gemma3's window), a window of the
         * whole context, which no position falls out of */
        if (h->kind == LRUN_ARCH_HPARAM_KIND_COUNT0 && x == 0) {
            if (h->def != LRUN_ARCH_DEFAULT_REQUIRED) continue;
            x = (double)s->n_ctx;
        }
        if (h->kind == LRUN_ARCH_HPARAM_KIND_POS_FLOAT) st = lrun_gguf_writer_set_f32(w, key, (float)x);
        else st = lrun_gguf_writer_set_u32(w, key, (uint32_t)x);
    }
    const char *ff_key = "feed_forward_length";
    for (int i = 0; i < a->n_hparams; i++)
        if (a->hparams[i].id == LRUN_ARCH_HPARAM_FF) ff_key = a->hparams[i].key;
    if (s->n_expert > 0 && strcmp(ff_key, "feed_forward_length") != 0) {
        /* qwen3moe reads the experts' width from expert_feed_forward_length; its converter writes
         * feed_forward_length too (the dense width, which no block of an all-MoE model uses) */
        snprintf(key, sizeof key, "%s.feed_forward_length", a->name);
        KV(lrun_gguf_writer_set_u32(w, key, (uint32_t)s->n_ff));
    }
    KV(lrun_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"));
    /* "gpt-2", not "gpt2": the pre-tokenizer name llama.cpp knows (its converter writes it) */
    KV(lrun_gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2"));
    KV(lrun_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, s->n_vocab));
    KV(lrun_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", v->types, s->n_vocab));
    KV(lrun_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, v->n_merges));
    KV(lrun_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 256));
    KV(lrun_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 256));
    KV(lrun_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 0));
    KV(lrun_gguf_writer_set_str(w, "tokenizer.chat_template", lrun_gen_chatml_template));
    if (s->rope_orig_ctx > 0) { /* Phi-3's converter: sqrt(1 + ln(scale) / ln(orig)), scale = n_ctx / orig */
        const double scale = (double)s->n_ctx / (double)s->rope_orig_ctx;
        const double af = scale > 1.0 ? sqrt(1.0 + log(scale) / log((double)s->rope_orig_ctx)) : 1.0;
        snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", a->name);
        KV(lrun_gguf_writer_set_u32(w, key, (uint32_t)s->rope_orig_ctx));
        snprintf(key, sizeof key, "%s.rope.scaling.attn_factor", a->name);
        KV(lrun_gguf_writer_set_f32(w, key, (float)af));
    }
    if (s->rope_yarn_factor > 0) { /* gpt-oss: its converter writes the type, factor and original context */
        const double orig = floor((double)s->n_ctx / s->rope_yarn_factor);
        snprintf(key, sizeof key, "%s.rope.scaling.type", a->name);
        KV(lrun_gguf_writer_set_str(w, key, "yarn"));
        snprintf(key, sizeof key, "%s.rope.scaling.factor", a->name);
        KV(lrun_gguf_writer_set_f32(w, key, (float)s->rope_yarn_factor));
        snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", a->name);
        KV(lrun_gguf_writer_set_u32(w, key, (uint32_t)(orig >= 1 ? orig : 1)));
    }
#undef KV
    return st;
}

// ---------------------------------------------------------------- chunks

/* A run of whole blocks of one tensor, placed in a chunk buffer. */
typedef struct piece {
    int64_t tensor;
    int64_t first, n;           /* elements of the tensor */
    size_t at;                  /* byte offset in the buffer */
} piece;

typedef struct chunk {
    uint8_t *buf;               /* (GEN_CHUNK_BYTES or less) */
    size_t cap, used;           /* bytes */
    piece *pieces;              /* (n_pieces) */
    int64_t n_pieces, cap_pieces;
} chunk;

/* Packs the next tensor data (from tensor *t, element *e onward) into c. */
static lrun_status chunk_pack(chunk *c, const gen_list *l, int64_t *t, int64_t *e)
{
    c->used = 0;
    c->n_pieces = 0;
    while (*t < l->n) {
        const gen_tensor *g = &l->t[*t];
        int64_t fit = (int64_t)((c->cap - c->used) / g->block_bytes) * g->block;
        int64_t n = g->nelem - *e < fit ? g->nelem - *e : fit;
        if (n <= 0) break;
        if (c->n_pieces == c->cap_pieces) {
            int64_t cap = c->cap_pieces ? c->cap_pieces * 2 : 64;
            piece *p = realloc(c->pieces, (size_t)cap * sizeof *p);
            if (!p) return lrun_fail_oom((size_t)cap * sizeof *p, 0, "lrun_model_generate: chunk pieces");
            c->pieces = p;
            c->cap_pieces = cap;
        }
        c->pieces[c->n_pieces++] = (piece){*t, *e, n, c->used};
        c->used += (size_t)(n / g->block) * g->block_bytes;
        *e += n;
        if (*e == g->nelem) {
            ++*t;
            *e = 0;
        }
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- fill and write threads

typedef struct fill_job {
    const gen_list *list;
    const chunk *c;
    int ith, nth;
    lrun_status status;
    char message[256];          /* lrun_last_error is per thread: carried back here */
} fill_job;

/* Worker ith fills its share (blocks [ith/nth, (ith+1)/nth) of every piece). */
static void *fill_main(void *arg)
{
    fill_job *j = arg;
    j->status = LRUN_OK;
    for (int64_t p = 0; p < j->c->n_pieces && j->status == LRUN_OK; p++) {
        const piece *pc = &j->c->pieces[p];
        const gen_tensor *g = &j->list->t[pc->tensor];
        int64_t nb = pc->n / g->block;
        int64_t b0 = nb * j->ith / j->nth, b1 = nb * (j->ith + 1) / j->nth;
        if (b1 <= b0) continue;
        uint8_t *dst = j->c->buf + pc->at + (size_t)b0 * g->block_bytes;
        if (g->values) { /* f32: one element per block */
            memcpy(dst, g->values + pc->first + b0, (size_t)(b1 - b0) * sizeof(float));
            continue;
        }
        j->status = (g->trained ? lrun_random_fill_trained : lrun_random_fill)(g->dtype, dst, pc->first + b0 * g->block,
                                                                               (b1 - b0) * g->block, g->scale, g->seed);
        if (j->status == LRUN_OK && g->is_norm)
            for (int64_t i = 0; i < (b1 - b0) * g->block; i++)
                ((float *)dst)[i] = lrun_gen_norm_value(g, ((float *)dst)[i]);
        if (j->status == LRUN_OK && g->row_skew > 0) /* f32: the skewed router's rows */
            for (int64_t i = 0; i < (b1 - b0) * g->block; i++) {
                const int64_t row = (pc->first + b0 * g->block + i) / g->ne[0];
                ((float *)dst)[i] *= (float)(1.0 + g->row_skew / (double)(row + 1));
            }
    }
    if (j->status != LRUN_OK) snprintf(j->message, sizeof j->message, "%s", lrun_last_error());
    return NULL;
}

static lrun_status fill_chunk(const gen_list *l, const chunk *c, int nth)
{
    fill_job jobs[GEN_MAX_THREADS];
    pthread_t tid[GEN_MAX_THREADS];
    int started[GEN_MAX_THREADS];
    for (int i = 0; i < nth; i++) {
        jobs[i] = (fill_job){.list = l, .c = c, .ith = i, .nth = nth};
        started[i] = i > 0 && pthread_create(&tid[i], NULL, fill_main, &jobs[i]) == 0;
    }
    for (int i = 0; i < nth; i++)
        if (!started[i]) fill_main(&jobs[i]); /* this thread's share, and any a thread could not take */
    for (int i = 1; i < nth; i++)
        if (started[i]) pthread_join(tid[i], NULL);
    for (int i = 0; i < nth; i++)
        if (jobs[i].status != LRUN_OK) return lrun_fail(jobs[i].status, "%s", jobs[i].message);
    return LRUN_OK;
}

typedef struct write_job {
    lrun_gguf_writer *w;
    const chunk *c;
    lrun_status status;
    char message[512];
} write_job;

static void *write_main(void *arg)
{
    write_job *j = arg;
    /* pieces are contiguous in the buffer; one call per piece lets the
     * writer pad between tensors */
    j->status = LRUN_OK;
    for (int64_t p = 0; p < j->c->n_pieces && j->status == LRUN_OK; p++) {
        size_t end = p + 1 < j->c->n_pieces ? j->c->pieces[p + 1].at : j->c->used;
        j->status = lrun_gguf_writer_write_data(j->w, j->c->buf + j->c->pieces[p].at, end - j->c->pieces[p].at);
    }
    if (j->status != LRUN_OK) snprintf(j->message, sizeof j->message, "%s", lrun_last_error());
    return NULL;
}

// ---------------------------------------------------------------- progress

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void progress_draw(size_t done, size_t total, double t0, int last)
{
    double dt = now_s() - t0, gb = (double)done / 1e9;
    fprintf(stderr, "\rgenerating [%3d%%] %.2f / %.2f GB  %.2f GB/s%s", (int)(100.0 * (double)done / (double)total),
            gb, (double)total / 1e9, dt > 0 ? gb / dt : 0.0, last ? "\n" : "");
    fflush(stderr);
}

// ---------------------------------------------------------------- entry point

static lrun_status stream_data(lrun_gguf_writer *w, const gen_list *l, const lrun_model_gen_spec *s)
{
    int nth = s->n_threads > 0 ? s->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nth < 1) nth = 1;
    if (nth > GEN_MAX_THREADS) nth = GEN_MAX_THREADS;
    const int show = s->progress && isatty(2);
    const double t0 = now_s();
    size_t cap = l->total_bytes < GEN_CHUNK_BYTES ? l->total_bytes + 4096 : GEN_CHUNK_BYTES;
    chunk c[2] = {{.cap = cap}, {.cap = cap}};
    lrun_status st = LRUN_OK;
    for (int i = 0; i < 2 && st == LRUN_OK; i++)
        if (posix_memalign((void **)&c[i].buf, 4096, cap) != 0)
            st = lrun_fail_oom(cap, 0, "lrun_model_generate: %zu-byte data buffer", cap);

    int64_t t = 0, e = 0;
    size_t written = 0;
    write_job wj = {.w = w};
    pthread_t writer;
    int writing = 0;            /* a writer thread holds the other buffer */
    for (int cur = 0; st == LRUN_OK; cur ^= 1) {
        if ((st = chunk_pack(&c[cur], l, &t, &e)) != LRUN_OK) break;
        if (c[cur].n_pieces > 0) st = fill_chunk(l, &c[cur], nth);
        if (writing) {
            pthread_join(writer, NULL);
            writing = 0;
            if (st == LRUN_OK && wj.status != LRUN_OK) st = lrun_fail(wj.status, "%s", wj.message);
            written += c[cur ^ 1].used;
            if (show) progress_draw(written, l->total_bytes, t0, 0);
        }
        if (st != LRUN_OK || c[cur].n_pieces == 0) break;
        wj.c = &c[cur];
        if (pthread_create(&writer, NULL, write_main, &wj) == 0) {
            writing = 1;
        } else {
            write_main(&wj); /* no thread: write in this one, without overlap */
            if (wj.status != LRUN_OK) st = lrun_fail(wj.status, "%s", wj.message);
            written += c[cur].used;
        }
    }
    if (writing) pthread_join(writer, NULL);
    if (show) progress_draw(written, l->total_bytes, t0, 1);
    for (int i = 0; i < 2; i++) {
        free(c[i].buf);
        free(c[i].pieces);
    }
    return st;
}

lrun_status lrun_model_generate(const char *path, const lrun_model_gen_spec *spec)
{
    if (!path || !spec) return lrun_fail(LRUN_E_ARG, "lrun_model_generate: path and spec must not be NULL");
    lrun_status st = lrun_gen_check_spec(spec);
    if (st != LRUN_OK) return st;

    gen_list list = {0};
    gen_vocab vocab = {0};
    lrun_gguf_writer *w = NULL;
    st = lrun_gen_build_list(&list, spec);
    if (st == LRUN_OK) st = lrun_gen_build_vocab(&vocab, spec->n_vocab);
    if (st == LRUN_OK) st = lrun_gguf_writer_open(&w, path);
    if (st == LRUN_OK) st = write_metadata(w, spec, &vocab);
    for (int64_t i = 0; st == LRUN_OK && i < list.n; i++) {
        const gen_tensor *g = &list.t[i];
        st = lrun_gguf_writer_add_tensor(w, g->name, g->dtype, g->ndim, g->ne);
    }
    lrun_gen_vocab_free(&vocab); /* the writer holds its own copy */
    if (st == LRUN_OK) st = stream_data(w, &list, spec);
    if (st == LRUN_OK) st = lrun_gguf_writer_finish(w);
    lrun_gguf_writer_free(w); /* removes the file unless finish succeeded */
    free(list.t);
    free(list.rope_factors);
    free(list.rope_long);
    free(list.rope_short);
    if (st != LRUN_OK) return lrun_fail_context(st, "generating %s", path);
    return LRUN_OK;
}
