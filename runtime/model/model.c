/* model.c — loading a GGUF model through its architecture's description (arch/arch.h).
 *
 * The weights stay in the memory-mapped file (home tier MMAP, zero copy, as
 * llama.cpp's mmap loading): each lrun_tensor points into the mapping. The
 * loader checks every hyper-parameter and every tensor's shape and dtype
 * up front, so the forward pass can trust them. Loading reads no weight:
 * the weights are read when they first move (model_upload.c: the streaming
 * loader, several threads, pinned staging, no second copy) or, for those
 * that stay in the file, prefaulted when an engine is made. */
#include "model/model.h"
#include "packed/packed_file.h"
#include "text/tokjson.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/error.h"
#include "core/mapguard.h"
#include "model/model_fp8.h"

/* Bounds on hyper-parameters: far above any real model, low enough that the
 * products sizing buffers cannot overflow. */
#define MAX_DIM ((int64_t)1 << 24)
#define MAX_CTX ((int64_t)1 << 31)

// ---------------------------------------------------------------- metadata

static int64_t find_key(const lrun_gguf *g, const char *key) { return lrun_gguf_find_key(g, key); }

/* An integer hyper-parameter in [min, max]; def when absent and not required. */
static lrun_status read_int(const lrun_gguf *g, const char *key, int required, int64_t def, int64_t min, int64_t max,
                            int64_t *out)
{
    const int64_t kv = find_key(g, key);
    if (kv < 0) {
        if (required) return lrun_fail(LRUN_E_FORMAT, "missing key '%s'", key);
        *out = def;
        return LRUN_OK;
    }
    if (lrun_gguf_kv_type(g, kv) == LRUN_GGUF_TYPE_ARRAY)
        return lrun_fail(LRUN_E_UNSUPPORTED, "key '%s' is an array (per-layer values are not supported)", key);
    if (lrun_gguf_get_i64(g, kv, out) != LRUN_OK)
        return lrun_fail(LRUN_E_FORMAT, "key '%s' is not an integer (type %d)", key, (int)lrun_gguf_kv_type(g, kv));
    if (*out < min || *out > max)
        return lrun_fail(LRUN_E_FORMAT, "key '%s' = %lld is out of range [%lld, %lld]", key, (long long)*out,
                         (long long)min, (long long)max);
    return LRUN_OK;
}

/* A float hyper-parameter > 0; def when absent and not required. */
static lrun_status read_pos_float(const lrun_gguf *g, const char *key, int required, double def, double *out)
{
    const int64_t kv = find_key(g, key);
    if (kv < 0) {
        if (required) return lrun_fail(LRUN_E_FORMAT, "missing key '%s'", key);
        *out = def;
        return LRUN_OK;
    }
    if (lrun_gguf_get_f64(g, kv, out) != LRUN_OK)
        return lrun_fail(LRUN_E_FORMAT, "key '%s' is not a number (type %d)", key, (int)lrun_gguf_kv_type(g, kv));
    if (!(*out > 0.0) || !isfinite(*out))
        return lrun_fail(LRUN_E_FORMAT, "key '%s' = %g must be a positive number", key, *out);
    return LRUN_OK;
}

/* Copies a string value into buf; "" when absent. */
static lrun_status read_str(const lrun_gguf *g, const char *key, char *buf, size_t cap)
{
    buf[0] = '\0';
    const int64_t kv = find_key(g, key);
    if (kv < 0) return LRUN_OK;
    const char *s;
    size_t len;
    if (lrun_gguf_get_str(g, kv, &s, &len) != LRUN_OK)
        return lrun_fail(LRUN_E_FORMAT, "key '%s' is not a string", key);
    if (len >= cap) len = cap - 1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return LRUN_OK;
}

/* One hyper-parameter of the description, "<arch>.<key>", into iv/fv. */
static lrun_status read_hparam(const lrun_gguf *g, const lrun_arch *a, const lrun_arch_hparam_desc *h,
                               int64_t iv[LRUN_ARCH_HPARAM_COUNT], double fv[LRUN_ARCH_HPARAM_COUNT])
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", a->name, h->key);
    const int required = h->def == LRUN_ARCH_DEFAULT_REQUIRED;
    if (h->kind == LRUN_ARCH_HPARAM_KIND_POS_FLOAT)
        return read_pos_float(g, key, required, h->def == LRUN_ARCH_DEFAULT_SAME_AS ? fv[h->same_as] : h->value,
                              &fv[h->id]);
    int64_t def = (int64_t)h->value;
    if (h->def == LRUN_ARCH_DEFAULT_SAME_AS) def = iv[h->same_as];
    if (h->def == LRUN_ARCH_DEFAULT_EMBD_PER_HEAD) {
        const int64_t embd = iv[LRUN_ARCH_HPARAM_EMBD], head = iv[LRUN_ARCH_HPARAM_HEAD];
        if (find_key(g, key) < 0 && embd % head != 0)
            return lrun_fail(LRUN_E_FORMAT, "head_count %lld does not divide embedding_length %lld", (long long)head,
                             (long long)embd);
        def = embd / head;
    }
    return read_int(g, key, required, def, h->kind == LRUN_ARCH_HPARAM_KIND_COUNT0 ? 0 : 1,
                    h->kind == LRUN_ARCH_HPARAM_KIND_DIM ? MAX_DIM : MAX_CTX, &iv[h->id]);
}

/* The description's hyper-parameters into m->info, then the rules every
 * architecture the engines run must keep. */
static lrun_status read_arch_hparams(lrun_model *m)
{
    const lrun_arch *a = m->arch;
    lrun_model_info *in = &m->info;
    int64_t iv[LRUN_ARCH_HPARAM_COUNT] = {0};
    double fv[LRUN_ARCH_HPARAM_COUNT] = {0};
    for (int i = 0; i < a->n_hparams; i++) {
        lrun_status st = read_hparam(m->gguf, a, &a->hparams[i], iv, fv);
        if (st != LRUN_OK) return st;
    }
    in->n_ctx_train = iv[LRUN_ARCH_HPARAM_CTX_TRAIN];
    in->n_embd = iv[LRUN_ARCH_HPARAM_EMBD];
    in->n_layer = iv[LRUN_ARCH_HPARAM_LAYER];
    in->n_ff = iv[LRUN_ARCH_HPARAM_FF];
    in->n_head = iv[LRUN_ARCH_HPARAM_HEAD];
    in->n_head_kv = iv[LRUN_ARCH_HPARAM_HEAD_KV];
    in->head_dim = iv[LRUN_ARCH_HPARAM_HEAD_DIM];
    in->n_rot = iv[LRUN_ARCH_HPARAM_ROT];
    in->rms_eps = fv[LRUN_ARCH_HPARAM_RMS_EPS];
    in->rope_freq_base = fv[LRUN_ARCH_HPARAM_ROPE_BASE];
    m->n_swa = iv[LRUN_ARCH_HPARAM_SWA]; /* 0 where the description has no such key */
    m->attn_softcap = fv[LRUN_ARCH_HPARAM_ATTN_SOFTCAP]; /* likewise */
    m->final_softcap = fv[LRUN_ARCH_HPARAM_FINAL_SOFTCAP];
    in->n_expert = iv[LRUN_ARCH_HPARAM_EXPERT]; /* 0 for a dense description */
    in->n_expert_used = iv[LRUN_ARCH_HPARAM_EXPERT_USED];
    if (in->n_expert_used > in->n_expert || (in->n_expert > 0) != (in->n_expert_used > 0))
        return lrun_fail(LRUN_E_FORMAT, "%s.expert_used_count %lld must be in 1..expert_count %lld", a->name,
                         (long long)in->n_expert_used, (long long)in->n_expert);
    if (iv[LRUN_ARCH_HPARAM_V_DIM] != in->head_dim)
        return lrun_fail(LRUN_E_UNSUPPORTED, "value_length %lld differs from key_length %lld",
                         (long long)iv[LRUN_ARCH_HPARAM_V_DIM], (long long)in->head_dim);
    if (in->n_head % in->n_head_kv != 0)
        return lrun_fail(LRUN_E_FORMAT, "head_count %lld is not a multiple of head_count_kv %lld",
                         (long long)in->n_head, (long long)in->n_head_kv);
    if (in->n_rot % 2 != 0 || in->n_rot > in->head_dim)
        return lrun_fail(LRUN_E_FORMAT, "rope.dimension_count %lld must be even and at most the head size %lld",
                         (long long)in->n_rot, (long long)in->head_dim);
    return LRUN_OK;
}

/* RoPE scaling: linear is a plain position scale; YaRN (gpt-oss) scales
 * the angles by 1/factor too, and the engines mix in the unscaled ones
 * (lrun_rope_yarn_init); the others are not implemented. */
static lrun_status read_rope_scaling(lrun_model *m)
{
    const lrun_gguf *g = m->gguf;
    const char *arch = m->arch->name;
    char key[128], scaling[32];
    lrun_status st;
    m->rope_freq_scale = 1.0;
    /* LongRoPE (phi3 128k): where its factors switch, and the scale of cos and sin */
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", arch);
    if ((st = read_int(g, key, 0, m->info.n_ctx_train, 1, MAX_CTX, &m->n_ctx_orig)) != LRUN_OK) return st;
    snprintf(key, sizeof key, "%s.rope.scaling.attn_factor", arch);
    if ((st = read_pos_float(g, key, 0, 1.0, &m->rope_attn_factor)) != LRUN_OK) return st;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if ((st = read_str(g, key, scaling, sizeof scaling)) != LRUN_OK) return st;
    double factor;
    if (strcmp(scaling, "linear") == 0) {
        snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
        if ((st = read_pos_float(g, key, 1, 1.0, &factor)) != LRUN_OK) return st;
        m->rope_freq_scale = 1.0 / factor;
        return LRUN_OK;
    }
    if (strcmp(scaling, "yarn") == 0) { /* llama.cpp: a missing factor is 1 (no interpolation) */
        snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
        if ((st = read_pos_float(g, key, 0, 1.0, &factor)) != LRUN_OK) return st;
        m->rope_freq_scale = 1.0 / factor;
        m->rope_yarn = 1;
        snprintf(key, sizeof key, "%s.rope.scaling.yarn_beta_fast", arch);
        if ((st = read_pos_float(g, key, 0, 32.0, &m->rope_yarn_beta_fast)) != LRUN_OK) return st;
        snprintf(key, sizeof key, "%s.rope.scaling.yarn_beta_slow", arch);
        if ((st = read_pos_float(g, key, 0, 1.0, &m->rope_yarn_beta_slow)) != LRUN_OK) return st;
        snprintf(key, sizeof key, "%s.rope.scaling.yarn_truncate", arch);
        const int64_t kv = find_key(g, key);
        m->rope_yarn_truncate = 1;
        if (kv >= 0 && lrun_gguf_get_bool(g, kv, &m->rope_yarn_truncate) != LRUN_OK)
            return lrun_fail(LRUN_E_FORMAT, "key '%s' is not a bool", key);
        return LRUN_OK;
    }
    if (scaling[0] && strcmp(scaling, "none") != 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "rope.scaling.type '%s' is not supported", scaling);
    snprintf(key, sizeof key, "%s.rope.scale_linear", arch);
    if (find_key(g, key) >= 0) {
        if ((st = read_pos_float(g, key, 1, 1.0, &factor)) != LRUN_OK) return st;
        m->rope_freq_scale = 1.0 / factor;
    }
    return LRUN_OK;
}

lrun_status lrun_model_read_hparams(lrun_model *m)
{
    const lrun_gguf *g = m->gguf;
    lrun_model_info *in = &m->info;
    lrun_status st;
    char arch[64], key[128];
    if ((st = read_str(g, "general.architecture", arch, sizeof arch)) != LRUN_OK) return st;
    if (!arch[0]) return lrun_fail(LRUN_E_FORMAT, "missing key 'general.architecture'");
    /* a mixture of experts: llama's file with experts is Mixtral (its own description) */
    int64_t experts = 0;
    snprintf(key, sizeof key, "%s.expert_count", arch);
    const int64_t ekv = find_key(g, key);
    if (ekv >= 0 && lrun_gguf_get_i64(g, ekv, &experts) != LRUN_OK)
        return lrun_fail(LRUN_E_FORMAT, "key '%s' is not an integer", key);
    m->arch = lrun_arch_find_moe(arch, experts);
    if (!m->arch) {
        char known[256];
        return lrun_fail(LRUN_E_UNSUPPORTED, "architecture '%s' is not supported (known: %s)", arch,
                         lrun_arch_known_names(known, sizeof known));
    }
    snprintf(in->arch, sizeof in->arch, "%s", m->arch->name);
    if (experts > 0 && !lrun_arch_has_experts(m->arch))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s with %lld experts (mixture of experts) is not supported", arch,
                         (long long)experts);

    if ((st = read_arch_hparams(m)) != LRUN_OK) return st;
    if ((st = read_rope_scaling(m)) != LRUN_OK) return st;
    in->rope_style = m->arch->rope_style;

    /* vocabulary size: the tokenizer's, as llama.cpp; else the embedding's */
    in->n_vocab = 0;
    const int64_t tok_kv = find_key(g, "tokenizer.ggml.tokens");
    if (tok_kv >= 0) {
        lrun_gguf_type et;
        if (lrun_gguf_get_arr(g, tok_kv, &et, &in->n_vocab) != LRUN_OK || in->n_vocab < 1 || in->n_vocab > MAX_DIM)
            return lrun_fail(LRUN_E_FORMAT, "key 'tokenizer.ggml.tokens' must be a non-empty array of at most %lld "
                             "strings", (long long)MAX_DIM);
    } else {
        const lrun_arch_tensor_desc *te = lrun_arch_tensor_find(m->arch, LRUN_ARCH_TENSOR_TOKEN_EMBD);
        const int64_t t = lrun_gguf_find_tensor(g, te->name);
        if (t >= 0) in->n_vocab = lrun_gguf_tensor_dim(g, t, 1);
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- tensors

/* Where the model keeps tensor id (of block layer, for a block's). */
static struct lrun_tensor **tensor_slot(lrun_model *m, int64_t layer, lrun_arch_tensor id)
{
    if (id >= 0 && id < LRUN_ARCH_TENSOR_BLOCK_COUNT) return &m->layers[layer].t[id];
    switch (id) {
    case LRUN_ARCH_TENSOR_TOKEN_EMBD: return &m->tok_embd;
    case LRUN_ARCH_TENSOR_OUTPUT_NORM: return &m->output_norm;
    case LRUN_ARCH_TENSOR_OUTPUT: return &m->output;
    case LRUN_ARCH_TENSOR_ROPE_FREQS: return &m->rope_freqs;
    case LRUN_ARCH_TENSOR_ROPE_LONG: return &m->rope_long;
    case LRUN_ARCH_TENSOR_ROPE_SHORT: return &m->rope_short;
    default: return NULL;
    }
}

struct lrun_tensor *lrun_model_arch_tensor(const lrun_model *model, int64_t layer, lrun_arch_tensor id)
{
    if (id >= 0 && id < LRUN_ARCH_TENSOR_BLOCK_COUNT)
        return layer >= 0 && layer < model->info.n_layer ? model->layers[layer].t[id] : NULL;
    struct lrun_tensor **slot = tensor_slot((lrun_model *)model, -1, id);
    return slot ? *slot : NULL;
}

/* Whether name fits pattern, a GGUF name with at most one %d (a block
 * index of up to 9 digits, stored in *layer). */
static int name_matches(const char *pattern, const char *name, int *layer)
{
    const char *d = strstr(pattern, "%d");
    if (!d) return strcmp(pattern, name) == 0;
    const size_t pre = (size_t)(d - pattern);
    if (strncmp(pattern, name, pre) != 0) return 0;
    const char *p = name + pre;
    long n = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 9) n = n * 10 + (*p++ - '0'), digits++;
    if (digits == 0 || strcmp(p, d + 2) != 0) return 0;
    *layer = (int)n;
    return 1;
}

/* The description of a tensor from its GGUF name, or NULL for a name the
 * architecture does not use; *layer its block (-1 for the model's own). */
static const lrun_arch_tensor_desc *parse_name(const lrun_arch *a, const char *name, int *layer)
{
    for (int i = 0; i < a->n_tensors; i++) {
        *layer = -1;
        if (name_matches(a->tensors[i].name, name, layer)) return &a->tensors[i];
    }
    return NULL;
}

/* A dimension of the description in this model's numbers (0 for NONE). */
static int64_t dim_value(const lrun_model_info *in, lrun_arch_dim d)
{
    switch (d) {
    case LRUN_ARCH_DIM_EMBD: return in->n_embd;
    case LRUN_ARCH_DIM_Q: return in->n_head * in->head_dim;
    case LRUN_ARCH_DIM_KV: return in->n_head_kv * in->head_dim;
    case LRUN_ARCH_DIM_FF: return in->n_ff;
    case LRUN_ARCH_DIM_VOCAB: return in->n_vocab;
    case LRUN_ARCH_DIM_ROT_HALF: return in->n_rot / 2;
    case LRUN_ARCH_DIM_HEAD: return in->head_dim;
    case LRUN_ARCH_DIM_QKV: return (in->n_head + 2 * in->n_head_kv) * in->head_dim;
    case LRUN_ARCH_DIM_FF2: return 2 * in->n_ff;
    case LRUN_ARCH_DIM_EXPERT: return in->n_expert;
    case LRUN_ARCH_DIM_N_HEAD: return in->n_head;
    default: return 0;
    }
}

static int is_float_dtype(lrun_dtype d) { return d == LRUN_DTYPE_F32 || d == LRUN_DTYPE_F16 || d == LRUN_DTYPE_BF16; }

/* Checks presence, shape {d0} (d1 == 0) or {d0, d1}, and for vectors a float dtype. */
static lrun_status check_tensor(const struct lrun_tensor *t, const char *name, int64_t d0, int64_t d1, int64_t d2,
                                int required)
{
    if (!t) return required ? lrun_fail(LRUN_E_FORMAT, "missing tensor '%s'", name) : LRUN_OK;
    const int64_t want[LRUN_MAX_DIMS] = {d0, d1 ? d1 : 1, d2 ? d2 : 1, 1};
    int ok = 1;
    for (int i = 0; i < LRUN_MAX_DIMS; i++) ok &= t->ne[i] == want[i];
    if (!ok) {
        char have[96], exp[64];
        int n = snprintf(have, sizeof have, "{%lld", (long long)t->ne[0]);
        for (int i = 1; i < t->ndim && n < (int)sizeof have; i++)
            n += snprintf(have + n, sizeof have - (size_t)n, ", %lld", (long long)t->ne[i]);
        if (n < (int)sizeof have) snprintf(have + n, sizeof have - (size_t)n, "}");
        if (d2) snprintf(exp, sizeof exp, "{%lld, %lld, %lld}", (long long)d0, (long long)d1, (long long)d2);
        else if (d1) snprintf(exp, sizeof exp, "{%lld, %lld}", (long long)d0, (long long)d1);
        else snprintf(exp, sizeof exp, "{%lld}", (long long)d0);
        return lrun_fail(LRUN_E_FORMAT, "tensor '%s' has shape %s, expected %s", name, have, exp);
    }
    if (!d1 && !is_float_dtype(t->dtype))
        return lrun_fail(LRUN_E_UNSUPPORTED, "tensor '%s' is %s; vectors must be f32, f16 or bf16", name,
                         lrun_dtype_name(t->dtype));
    return LRUN_OK;
}

/* Records a split adds per block: its parts after the first, which reuses the fused record. */
static int64_t split_extra(const lrun_arch *a)
{
    int64_t n = 0;
    for (int i = 0; i < a->n_splits; i++)
        for (int j = 1; j < LRUN_ARCH_OP_MAX_W && a->splits[i].parts[j] != LRUN_ARCH_TENSOR_NONE; j++) n++;
    return n;
}

/* Block l's fused matrix of split sp, when the file has it, becomes its
 * parts: row ranges of the same file bytes (the fused record turns into the
 * first part, the others are appended to m->tensors). */
static lrun_status split_one(lrun_model *m, int64_t l, const lrun_arch_split *sp)
{
    struct lrun_tensor *f = m->layers[l].t[sp->fused];
    if (!f) return LRUN_OK;
    const lrun_arch *a = m->arch;
    const char *const fused_name = lrun_arch_tensor_find(a, sp->fused)->name;
    char fname[96];
    snprintf(fname, sizeof fname, "%s", f->name);
    int64_t rows = 0;
    int n = 0;
    for (; n < LRUN_ARCH_OP_MAX_W && sp->parts[n] != LRUN_ARCH_TENSOR_NONE; n++) {
        rows += dim_value(&m->info, lrun_arch_tensor_find(a, sp->parts[n])->ne[1]);
        if (m->layers[l].t[sp->parts[n]])
            return lrun_fail(LRUN_E_FORMAT, "block %lld has both the fused '%s' and its part '%s'", (long long)l,
                             fname, m->layers[l].t[sp->parts[n]]->name);
    }
    if (f->ndim != 2 || f->ne[1] != rows || f->ne[0] != m->info.n_embd)
        return lrun_fail(LRUN_E_FORMAT, "tensor '%s' has shape {%lld, %lld}, expected {%lld, %lld} (pattern '%s')", fname,
                         (long long)f->ne[0], (long long)f->ne[1], (long long)m->info.n_embd, (long long)rows,
                         fused_name);
    const char *bytes = f->file_data;
    const struct lrun_tensor whole = *f;
    for (int j = 0; j < n; j++) {
        const lrun_arch_tensor_desc *d = lrun_arch_tensor_find(a, sp->parts[j]);
        struct lrun_tensor *t = j == 0 ? f : &m->tensors[m->n_tensors++];
        *t = whole;
        char name[96];
        snprintf(name, sizeof name, d->name, (int)l);
        const int64_t dims[LRUN_MAX_DIMS] = {whole.ne[0], dim_value(&m->info, d->ne[1]), 1, 1};
        lrun_status st = lrun_tensor_set_shape(t, name, whole.dtype, 2, dims);
        if (st != LRUN_OK) return st;
        t->role = d->role;
        t->file_data = bytes;
        t->data = (void *)bytes;
        bytes += t->nbytes;
        m->layers[l].t[sp->parts[j]] = t;
    }
    m->layers[l].t[sp->fused] = NULL;
    return LRUN_OK;
}

lrun_status lrun_model_tensors_init(lrun_model *m, int64_t n)
{
    /* every block has tensors of its own in the file: a block count beyond the
     * tensor count is a crafted header, refused before it sizes an allocation
     * (fuzz_model: block_count 3e9 asked calloc for 3 GB) */
    if (m->info.n_layer > n)
        return lrun_fail(LRUN_E_FORMAT, "model: block_count %lld exceeds the file's %lld tensors",
                         (long long)m->info.n_layer, (long long)n);
    m->n_tensors = n;
    m->layers = calloc((size_t)m->info.n_layer, sizeof *m->layers);
    /* room for the parts of fused matrices (no later realloc: layers point into it) */
    const size_t cap = (size_t)n + (size_t)m->info.n_layer * (size_t)split_extra(m->arch);
    m->tensors = calloc(cap > 0 ? cap : 1, sizeof *m->tensors);
    if (!m->layers || !m->tensors) return lrun_fail_oom(0, 0, "model: tensor records");
    return LRUN_OK;
}

lrun_status lrun_model_add_tensor(lrun_model *m, int64_t i, const char *name, lrun_dtype dtype, int ndim,
                                  const int64_t *dims, const void *data)
{
    struct lrun_tensor *t = &m->tensors[i];
    if (!lrun_dtype_is_supported((int)dtype))
        return lrun_fail(LRUN_E_UNSUPPORTED, "tensor '%s' has dtype %d, which lrun cannot compute with", name,
                         (int)dtype);
    lrun_status st = lrun_tensor_set_shape(t, name, dtype, ndim, dims);
    if (st != LRUN_OK) return st;
    int layer;
    const lrun_arch_tensor_desc *d = parse_name(m->arch, name, &layer);
    if (!d)
        return lrun_fail(LRUN_E_UNSUPPORTED, "tensor '%s' is not part of the %s architecture", name, m->arch->name);
    if (layer >= m->info.n_layer)
        return lrun_fail(LRUN_E_FORMAT, "tensor '%s' names block %d, but the model has %lld blocks", name, layer,
                         (long long)m->info.n_layer);
    t->role = d->role;
    t->layer = layer;
    t->tier = LRUN_TIER_MMAP;
    t->file_data = data;
    t->data = (void *)t->file_data; /* zero copy: the mapping is read-only, and so are weights */
    t->device = NULL;
    struct lrun_tensor **slot = tensor_slot(m, layer, d->id);
    if (*slot) return lrun_fail(LRUN_E_FORMAT, "tensor '%s' appears twice", name);
    *slot = t;
    m->info.weight_bytes += t->nbytes;
    return LRUN_OK;
}

static lrun_status build_tensors(lrun_model *m)
{
    const lrun_gguf *g = m->gguf;
    lrun_status st = lrun_model_tensors_init(m, lrun_gguf_tensor_count(g));
    for (int64_t i = 0; st == LRUN_OK && i < lrun_gguf_tensor_count(g); i++) {
        int64_t dims[LRUN_MAX_DIMS];
        for (int d = 0; d < LRUN_MAX_DIMS; d++) dims[d] = lrun_gguf_tensor_dim(g, i, d);
        st = lrun_model_add_tensor(m, i, lrun_gguf_tensor_name(g, i), lrun_gguf_tensor_dtype(g, i),
                                   lrun_gguf_tensor_ndim(g, i), dims, lrun_gguf_tensor_data(g, i));
    }
    return st == LRUN_OK ? lrun_model_check_tensors(m) : st;
}

lrun_status lrun_model_check_tensors(lrun_model *m)
{
    const lrun_model_info *in = &m->info;
    for (int64_t l = 0; l < in->n_layer; l++)
        for (int i = 0; i < m->arch->n_splits; i++) {
            lrun_status st = split_one(m, l, &m->arch->splits[i]);
            if (st != LRUN_OK) return st;
        }
    /* every tensor the forward pass reads, with its exact shape: the model's own, then block by block */
    for (int64_t l = -1; l < in->n_layer; l++)
        for (int i = 0; i < m->arch->n_tensors; i++) {
            const lrun_arch_tensor_desc *d = &m->arch->tensors[i];
            const int block = d->id < LRUN_ARCH_TENSOR_BLOCK_COUNT;
            if (block != (l >= 0)) continue;
            char name[96];
            snprintf(name, sizeof name, d->name, (int)l); /* a model tensor's name has no %d */
            const struct lrun_tensor *t = *tensor_slot(m, l, d->id);
            lrun_status st = check_tensor(t, name, dim_value(in, d->ne[0]), dim_value(in, d->ne[1]),
                                          dim_value(in, d->ne[2]), d->required);
            if (st != LRUN_OK) return st;
            if (t && d->f32_only && t->dtype != LRUN_DTYPE_F32)
                return lrun_fail(LRUN_E_UNSUPPORTED, "tensor '%s' must be f32", name);
        }
    m->info.tied_embeddings = m->output == NULL;
    if (!m->output) m->output = m->tok_embd;
    return LRUN_OK;
}

// ---------------------------------------------------------------- packed files

/* 1 when t is a matrix the engines read through the weight interface (a
 * block's matrix, the LM head, the embedding table): those may stay packed. */
static int is_weight_matrix(const lrun_model *m, const struct lrun_tensor *t)
{
    if (t == m->tok_embd || t == m->output) return 1;
    for (int64_t l = 0; l < m->info.n_layer; l++)
        for (int id = 0; id < LRUN_ARCH_TENSOR_BLOCK_COUNT; id++)
            if (m->layers[l].t[id] == t) return lrun_arch_is_matrix(m->arch, (lrun_arch_tensor)id);
    return 0;
}

lrun_status lrun_model_settle_weights(lrun_model *m)
{
    return m->n_fp8 ? lrun_model_fp8_settle(m, 0, "starting an engine") : LRUN_OK;
}

void *lrun_model_own(lrun_model *m, size_t bytes, const char *what)
{
    /* charged as weights first: a host budget sees them, and a copy larger
     * than the host has available (gpt-oss-120b's 61 GB of repacked experts
     * on a 64 GB machine) is an error naming it, not the OOM killer later */
    if (lrun_host_account_charge(&m->host, LRUN_HOST_CATEGORY_WEIGHTS, bytes, what) != LRUN_OK) return NULL;
    void **list = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *list);
    void *p = list ? malloc(bytes ? bytes : 1) : NULL;
    if (list) m->owned = list;
    if (!p) {
        lrun_host_account_credit(&m->host, LRUN_HOST_CATEGORY_WEIGHTS, bytes);
        lrun_fail_oom(bytes, 0, "%s", what);
        return NULL;
    }
    m->owned[m->n_owned++] = p;
    return p;
}

/* The packed bytes of entry e, decoded once into memory the model owns (a
 * tensor that cannot stay packed: a vector, the part of a split matrix). */
static lrun_status decode_entry(lrun_model *m, const lrun_packed_entry *e, const uint8_t **out)
{
    uint16_t *buf = lrun_model_own(m, (size_t)e->plain_bytes, "model: a packed tensor decoded at load");
    if (!buf) return LRUN_E_OOM;
    const lrun_packed_file *f = m->packed_file;
    *out = (const uint8_t *)buf;
    const lrun_status st = lrun_packed_file_check_codec(f, e, "entry");
    if (st != LRUN_OK) return st;
    return lrun_packed_decode(buf, (int)e->dtype, e->plain_bytes / 2, f->packed + e->packed_offset,
                              (size_t)e->packed_size, "entry", m->pool);
}

/* A packed file's tensors: each weight matrix whose entry is exactly it
 * stays packed in the file (file_packed; its bytes checked once, here); any
 * other packed entry is decoded into owned memory. Stored entries are in
 * the head's memory file already. */
static lrun_status keep_packed(lrun_model *m)
{
    const lrun_packed_file *f = m->packed_file;
    const uint8_t *data0 = (const uint8_t *)lrun_gguf_tensor_data(m->gguf, 0) - lrun_gguf_tensor_offset(m->gguf, 0);
    const lrun_packed_entry *last = NULL;
    const uint8_t *decoded = NULL;
    for (int64_t i = 0; i < m->n_tensors; i++) {
        struct lrun_tensor *t = &m->tensors[i];
        const uint64_t off = (uint64_t)((const uint8_t *)t->file_data - data0);
        const lrun_packed_entry *e = lrun_packed_file_entry_at(f, off);
        if (!e || e->codec == LRUN_PACKED_CODEC_RAW) continue;
        lrun_status st;
        if (off == e->plain_offset && e->plain_bytes == t->nbytes && is_weight_matrix(m, t)) {
            const uint8_t *bytes = f->packed + e->packed_offset;
            st = lrun_packed_file_check_codec(f, e, t->name);
            if (st == LRUN_OK) st = lrun_packed_validate_mt(&t->pk, bytes, (size_t)e->packed_size, t->name, m->pool);
            if (st == LRUN_OK && (t->pk.dtype != (int)t->dtype || t->pk.n != (uint64_t)lrun_tensor_nelements(t)))
                st = lrun_fail(LRUN_E_FORMAT, "packed tensor '%s': holds %llu values of dtype %d, expected %lld of %d",
                               t->name, (unsigned long long)t->pk.n, t->pk.dtype,
                               (long long)lrun_tensor_nelements(t), (int)t->dtype);
            if (st != LRUN_OK) return lrun_fail_context(st, "packed file %s", f->path);
            t->file_data = t->data = (void *)bytes;
            t->file_packed = t->packed = 1;
            continue;
        }
        if (e != last) { /* the parts of a split matrix share their entry */
            st = decode_entry(m, e, &decoded);
            if (st != LRUN_OK) return lrun_fail_context(st, "packed file %s, tensor '%s'", f->path, t->name);
            last = e;
        }
        t->file_data = t->data = (void *)(decoded + (off - e->plain_offset));
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- load and free

/* A GGUF written from an HF directory (lrun pack) carries its tokenizer.json
 * and tokenizer_config.json as strings (text/tokjson.h): the tokenizer comes
 * from them when the file has no tokenizer.ggml.* vocabulary. */
static lrun_status tokenizer_from_hf_keys(lrun_model *m, const char *path)
{
    const char *json = NULL, *cfg = NULL;
    size_t len = 0, cfg_len = 0;
    char name[512], cfg_name[512];
    snprintf(name, sizeof name, "%s: key %s", path, LRUN_GGUF_KEY_HF_TOKENIZER);
    snprintf(cfg_name, sizeof cfg_name, "%s: key %s", path, LRUN_GGUF_KEY_HF_TOKENIZER_CONFIG);
    lrun_status st = lrun_gguf_get_str(m->gguf, find_key(m->gguf, LRUN_GGUF_KEY_HF_TOKENIZER), &json, &len);
    const int64_t kc = find_key(m->gguf, LRUN_GGUF_KEY_HF_TOKENIZER_CONFIG);
    if (st == LRUN_OK && kc >= 0) st = lrun_gguf_get_str(m->gguf, kc, &cfg, &cfg_len);
    if (st != LRUN_OK) return lrun_fail_context(st, "loading %s: the tokenizer's keys", path);
    return lrun_tokenizer_load_json_text(&m->tokenizer, name, json, len, cfg_name, cfg, cfg_len);
}

lrun_status lrun_model_load(lrun_model **out, const char *path, const lrun_load_opts *opts)
{
    static const lrun_load_opts defaults = {NULL, 0, 0, 0, -1, 0};
    *out = NULL;
    if (!path) return lrun_fail(LRUN_E_ARG, "lrun_model_load: path is NULL");
    if (!opts) opts = &defaults;
    if (opts->rope_style < -1 || opts->rope_style > LRUN_ROPE_STYLE_HALF)
        return lrun_fail(LRUN_E_ARG, "loading %s: rope_style %d is not -1, %d (adjacent) or %d (half)", path,
                         opts->rope_style, LRUN_ROPE_STYLE_ADJACENT, LRUN_ROPE_STYLE_HALF);
    if (opts->n_threads < 0)
        return lrun_fail(LRUN_E_ARG, "loading %s: n_threads %d is negative", path, opts->n_threads);

    lrun_model *m = calloc(1, sizeof *m);
    if (!m) return lrun_fail_oom(sizeof *m, 0, "loading %s: model record", path);
    lrun_host_account_init(&m->host);
    lrun_host_account_set_budget(&m->host, opts->host_budget);
    /* the header, tokenizer arrays and (packed) checks read the file's
     * mapping: a file truncated meanwhile is an error, not SIGBUS */
    const unsigned long g0 = lrun_mapguard_begin();
    /* the load's own work runs on the model's pool (an HF gpt-oss's MXFP4 repack, a packed file's
     * checks), with the progress bar the caller asked for */
    m->progress = opts->progress;
    lrun_status st = lrun_threadpool_init(&m->pool, opts->n_threads);
    if (st == LRUN_OK && lrun_model_is_hf(path)) {
        m->fp8_lazy = lrun_model_fp8_lazy_wanted(opts->device);
        st = lrun_model_open_hf(m, path, opts->progress);
        if (st == LRUN_OK && !(m->weights_path = strdup(path)))
            st = lrun_fail_oom(strlen(path) + 1, 0, "loading %s: its path", path);
    } else if (st == LRUN_OK) {
        /* a packed file: its matrices stay packed (keep_packed, below), the head is a GGUF */
        st = lrun_packed_file_sniff(path) ? lrun_packed_open_lazy(&m->gguf, &m->packed_file, path)
                                          : lrun_gguf_open(&m->gguf, path);
        if (st == LRUN_OK && !m->packed_file && !(m->weights_path = strdup(path)))
            st = lrun_fail_oom(strlen(path) + 1, 0, "loading %s: its path", path);
        if (st == LRUN_OK) st = lrun_model_read_hparams(m);
        if (st == LRUN_OK) st = build_tensors(m);
        if (st == LRUN_OK && find_key(m->gguf, "tokenizer.ggml.model") >= 0)
            st = lrun_tokenizer_init_gguf(&m->tokenizer, m->gguf);
        else if (st == LRUN_OK && find_key(m->gguf, LRUN_GGUF_KEY_HF_TOKENIZER) >= 0)
            st = tokenizer_from_hf_keys(m, path);
    }
    if (st == LRUN_OK && opts->rope_style >= 0) m->info.rope_style = (lrun_rope_style)opts->rope_style;
    if (st == LRUN_OK) st = lrun_device_open(&m->device, opts->device ? opts->device : "cpu", opts->device_budget);
    if (st == LRUN_OK) m->device->host_account = &m->host;
    if (st == LRUN_OK && m->packed_file) st = keep_packed(m);
    st = lrun_mapguard_end(g0, st, "reading the model file");
    if (st != LRUN_OK) {
        lrun_model_free(m);
        return lrun_fail_context(lrun_oom_phase(st, "load"), "loading %s", path);
    }
    /* the weights are read when they move (lrun_model_move_tensors) or, for
     * those that stay in the file, prefaulted at engine init (not a packed
     * file's: keep_packed read every packed byte while it checked them) */
    *out = m;
    return LRUN_OK;
}

void lrun_model_free(lrun_model *model)
{
    if (!model) return;
    /* copies a residency move made outside the file go back to their tier */
    for (int64_t i = 0; model->tensors && i < model->n_tensors; i++) lrun_tensor_release_data(&model->tensors[i]);
    if (model->pool) lrun_threadpool_free(model->pool);
    if (model->tokenizer) lrun_tokenizer_free(model->tokenizer);
    if (model->device) lrun_device_free(model->device);
    lrun_host_account_destroy(&model->host);
    if (model->gguf) lrun_gguf_close(model->gguf);
    if (model->st) lrun_st_set_close(model->st);
    if (model->packed_file) lrun_packed_file_close(model->packed_file);
    for (int i = 0; i < model->n_owned; i++) free(model->owned[i]);
    free(model->owned);
    free(model->fp8);
    free(model->weights_path);
    free(model->tensors);
    free(model->layers);
    free(model);
}

// ---------------------------------------------------------------- accessors

const lrun_model_info *lrun_model_get_info(const lrun_model *model) { return &model->info; }
lrun_device *lrun_model_device(lrun_model *model) { return model->device; }

lrun_status lrun_model_set_host_budget(lrun_model *model, size_t bytes)
{
    if (!model) return lrun_fail(LRUN_E_ARG, "lrun_model_set_host_budget: model is NULL");
    lrun_host_account_set_budget(&model->host, bytes);
    return LRUN_OK;
}

void lrun_model_host_stats(lrun_model *model, lrun_host_stats *out)
{
    lrun_host_account_get(model ? &model->host : NULL, out);
}

void lrun_model_load_stats(const lrun_model *model, lrun_load_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!model || model->load_stats.bytes == 0) return;
    const lrun_loader_stats *s = &model->load_stats;
    *out = (lrun_load_stats){s->bytes, s->seconds, s->n_threads, s->chunk_bytes, s->cached, s->warm, model->load_kept_cache};
}
const lrun_tokenizer *lrun_model_tokenizer(const lrun_model *model) { return model->tokenizer; }
const lrun_gguf *lrun_model_gguf(const lrun_model *model) { return model->gguf; }
int64_t lrun_model_tensor_count(const lrun_model *model) { return model->n_tensors; }
lrun_threadpool *lrun_model_threadpool(lrun_model *model) { return model->pool; }

lrun_tensor *lrun_model_tensor(lrun_model *model, int64_t i)
{
    return i >= 0 && i < model->n_tensors ? &model->tensors[i] : NULL;
}

lrun_tensor *lrun_model_find_tensor(lrun_model *model, const char *name)
{
    /* tensors are kept in file order, so the file's index is ours; the parts
     * of a split fused matrix (phi3's attn_qkv) have names of their own */
    const int64_t i = name ? lrun_gguf_find_tensor(model->gguf, name) : -1;
    lrun_tensor *t = lrun_model_tensor(model, i);
    if (t && strcmp(t->name, name) == 0) return t;
    for (int64_t j = 0; name && j < model->n_tensors; j++)
        if (strcmp(model->tensors[j].name, name) == 0) return &model->tensors[j];
    return NULL;
}

size_t lrun_model_tier_bytes(const lrun_model *model, lrun_tier tier)
{
    size_t sum = 0;
    for (int64_t i = 0; i < model->n_tensors; i++)
        if (model->tensors[i].tier == tier) sum += lrun_tensor_stored_bytes(&model->tensors[i]);
    return sum;
}

size_t lrun_model_vector_floats(const lrun_model *m)
{
    size_t n = (size_t)m->info.n_embd; /* output_norm */
    const struct lrun_tensor *rf = m->rope_freqs ? m->rope_freqs : m->rope_long; /* long and short: one size */
    if (rf) n += (size_t)rf->ne[0];
    for (int64_t l = 0; l < m->info.n_layer; l++)
        for (int i = 0; i < LRUN_ARCH_N_BLOCK_VECTORS; i++) {
            const struct lrun_tensor *t = m->layers[l].t[lrun_arch_block_vectors[i]];
            if (t) n += (size_t)(t->ne[0] * t->ne[1] * t->ne[2]); /* the experts' biases are 2-D */
        }
    return n;
}
