/* model.c — loading a llama-architecture GGUF model.
 *
 * The weights stay in the memory-mapped file (home tier MMAP, zero copy, as
 * llama.cpp's mmap loading): each lrun_tensor points into the mapping. The
 * loader checks every hyper-parameter and every tensor's shape and dtype
 * up front, so the forward pass can trust them, then prefaults the mapping
 * so the first token does not pay for page faults. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/device.h"
#include "core/error.h"
#include "core/progress.h"

/* Bounds on hyper-parameters: far above any real model, low enough that the
 * products sizing buffers cannot overflow. */
#define MAX_DIM ((int64_t)1 << 24)
#define MAX_CTX ((int64_t)1 << 31)

// ---------------------------------------------------------------- metadata

static int64_t find_key(const lrun_gguf *g, const char *key) { return lrun_gguf_find_key(g, key); }

/* An integer hyper-parameter in [1, max]; def when absent and not required. */
static lrun_status read_int(const lrun_gguf *g, const char *key, int required, int64_t def, int64_t max,
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
    if (*out < 1 || *out > max)
        return lrun_fail(LRUN_E_FORMAT, "key '%s' = %lld is out of range [1, %lld]", key, (long long)*out,
                         (long long)max);
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

static lrun_status read_hparams(lrun_model *m)
{
    const lrun_gguf *g = m->gguf;
    lrun_model_info *in = &m->info;
    lrun_status st;
    char arch[64];
    if ((st = read_str(g, "general.architecture", arch, sizeof arch)) != LRUN_OK) return st;
    if (!arch[0]) return lrun_fail(LRUN_E_FORMAT, "missing key 'general.architecture'");
    if (strcmp(arch, "llama") != 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "architecture '%s' is not supported (only 'llama')", arch);
    memcpy(in->arch, "llama", sizeof "llama");

    int64_t experts = 0;
    const int64_t ekv = find_key(g, "llama.expert_count");
    if (ekv >= 0 && lrun_gguf_get_i64(g, ekv, &experts) != LRUN_OK)
        return lrun_fail(LRUN_E_FORMAT, "key 'llama.expert_count' is not an integer");
    if (experts > 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "llama with %lld experts (mixture of experts) is not supported",
                         (long long)experts);

    if ((st = read_int(g, "llama.context_length", 1, 0, MAX_CTX, &in->n_ctx_train)) != LRUN_OK) return st;
    if ((st = read_int(g, "llama.embedding_length", 1, 0, MAX_DIM, &in->n_embd)) != LRUN_OK) return st;
    if ((st = read_int(g, "llama.block_count", 1, 0, MAX_DIM, &in->n_layer)) != LRUN_OK) return st;
    if ((st = read_int(g, "llama.feed_forward_length", 1, 0, MAX_DIM, &in->n_ff)) != LRUN_OK) return st;
    if ((st = read_int(g, "llama.attention.head_count", 1, 0, MAX_DIM, &in->n_head)) != LRUN_OK) return st;
    if ((st = read_int(g, "llama.attention.head_count_kv", 0, in->n_head, MAX_DIM, &in->n_head_kv)) != LRUN_OK)
        return st;
    if (find_key(g, "llama.attention.key_length") < 0 && in->n_embd % in->n_head != 0)
        return lrun_fail(LRUN_E_FORMAT, "head_count %lld does not divide embedding_length %lld",
                         (long long)in->n_head, (long long)in->n_embd);
    if ((st = read_int(g, "llama.attention.key_length", 0, in->n_embd / in->n_head, MAX_DIM, &in->head_dim)) !=
        LRUN_OK)
        return st;
    int64_t v_len;
    if ((st = read_int(g, "llama.attention.value_length", 0, in->head_dim, MAX_DIM, &v_len)) != LRUN_OK) return st;
    if (v_len != in->head_dim)
        return lrun_fail(LRUN_E_UNSUPPORTED, "value_length %lld differs from key_length %lld", (long long)v_len,
                         (long long)in->head_dim);
    if (in->n_head % in->n_head_kv != 0)
        return lrun_fail(LRUN_E_FORMAT, "head_count %lld is not a multiple of head_count_kv %lld",
                         (long long)in->n_head, (long long)in->n_head_kv);
    if ((st = read_int(g, "llama.rope.dimension_count", 0, in->head_dim, MAX_DIM, &in->n_rot)) != LRUN_OK) return st;
    if (in->n_rot % 2 != 0 || in->n_rot > in->head_dim)
        return lrun_fail(LRUN_E_FORMAT, "rope.dimension_count %lld must be even and at most the head size %lld",
                         (long long)in->n_rot, (long long)in->head_dim);
    if ((st = read_pos_float(g, "llama.attention.layer_norm_rms_epsilon", 1, 0, &in->rms_eps)) != LRUN_OK) return st;
    if ((st = read_pos_float(g, "llama.rope.freq_base", 0, 10000.0, &in->rope_freq_base)) != LRUN_OK) return st;

    /* RoPE scaling: linear is a plain position scale; the others change the
     * math and are not implemented. */
    char scaling[32];
    m->rope_freq_scale = 1.0;
    if ((st = read_str(g, "llama.rope.scaling.type", scaling, sizeof scaling)) != LRUN_OK) return st;
    if (strcmp(scaling, "linear") == 0) {
        double factor;
        if ((st = read_pos_float(g, "llama.rope.scaling.factor", 1, 1.0, &factor)) != LRUN_OK) return st;
        m->rope_freq_scale = 1.0 / factor;
    } else if (scaling[0] && strcmp(scaling, "none") != 0) {
        return lrun_fail(LRUN_E_UNSUPPORTED, "rope.scaling.type '%s' is not supported", scaling);
    } else if (find_key(g, "llama.rope.scale_linear") >= 0) {
        double factor;
        if ((st = read_pos_float(g, "llama.rope.scale_linear", 1, 1.0, &factor)) != LRUN_OK) return st;
        m->rope_freq_scale = 1.0 / factor;
    }
    in->rope_style = LRUN_ROPE_STYLE_ADJACENT; /* the GGUF converter permuted q/k for it */

    /* vocabulary size: the tokenizer's, as llama.cpp; else the embedding's */
    in->n_vocab = 0;
    const int64_t tok_kv = find_key(g, "tokenizer.ggml.tokens");
    if (tok_kv >= 0) {
        lrun_gguf_type et;
        if (lrun_gguf_get_arr(g, tok_kv, &et, &in->n_vocab) != LRUN_OK || in->n_vocab < 1 || in->n_vocab > MAX_DIM)
            return lrun_fail(LRUN_E_FORMAT, "key 'tokenizer.ggml.tokens' must be a non-empty array of at most %lld "
                             "strings", (long long)MAX_DIM);
    } else {
        const int64_t t = lrun_gguf_find_tensor(g, "token_embd.weight");
        if (t >= 0) in->n_vocab = lrun_gguf_tensor_dim(g, t, 1);
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- tensors

/* The role (an lrun_role) and layer of a tensor from its GGUF name: -1 for a
 * name the llama forward pass does not use, -2 for a block past n_layer.
 * Sets *slot to where the model keeps it. */
static int parse_name(lrun_model *m, const char *name, int *layer, struct lrun_tensor ***slot)
{
    *layer = -1;
    *slot = NULL;
    if (strcmp(name, "token_embd.weight") == 0) return *slot = &m->tok_embd, LRUN_ROLE_EMBEDDING;
    if (strcmp(name, "output_norm.weight") == 0) return *slot = &m->output_norm, LRUN_ROLE_OUTPUT_NORM;
    if (strcmp(name, "output.weight") == 0) return *slot = &m->output, LRUN_ROLE_LM_HEAD;
    if (strcmp(name, "rope_freqs.weight") == 0) return *slot = &m->rope_freqs, LRUN_ROLE_ROPE_FREQS;
    if (strncmp(name, "blk.", 4) != 0) return -1;
    const char *p = name + 4;
    long n = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 9) n = n * 10 + (*p++ - '0'), digits++;
    if (digits == 0 || *p != '.') return -1;
    p++;
    *layer = (int)n;
    if (n >= m->info.n_layer) return -2; /* reported by the caller */
    struct lrun_model_layer *L = &m->layers[n];
    static const struct {
        const char *suffix;
        lrun_role role;
        size_t offset;
    } table[] = {
        {"attn_norm.weight", LRUN_ROLE_ATTN_NORM, offsetof(struct lrun_model_layer, attn_norm)},
        {"attn_q.weight", LRUN_ROLE_ATTN_Q, offsetof(struct lrun_model_layer, wq)},
        {"attn_k.weight", LRUN_ROLE_ATTN_K, offsetof(struct lrun_model_layer, wk)},
        {"attn_v.weight", LRUN_ROLE_ATTN_V, offsetof(struct lrun_model_layer, wv)},
        {"attn_output.weight", LRUN_ROLE_ATTN_OUTPUT, offsetof(struct lrun_model_layer, wo)},
        {"attn_q.bias", LRUN_ROLE_BIAS, offsetof(struct lrun_model_layer, bq)},
        {"attn_k.bias", LRUN_ROLE_BIAS, offsetof(struct lrun_model_layer, bk)},
        {"attn_v.bias", LRUN_ROLE_BIAS, offsetof(struct lrun_model_layer, bv)},
        {"attn_output.bias", LRUN_ROLE_BIAS, offsetof(struct lrun_model_layer, bo)},
        {"ffn_norm.weight", LRUN_ROLE_FFN_NORM, offsetof(struct lrun_model_layer, ffn_norm)},
        {"ffn_gate.weight", LRUN_ROLE_FFN_GATE, offsetof(struct lrun_model_layer, w_gate)},
        {"ffn_up.weight", LRUN_ROLE_FFN_UP, offsetof(struct lrun_model_layer, w_up)},
        {"ffn_down.weight", LRUN_ROLE_FFN_DOWN, offsetof(struct lrun_model_layer, w_down)},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(p, table[i].suffix) == 0) {
            *slot = (struct lrun_tensor **)((char *)L + table[i].offset);
            return table[i].role;
        }
    return -1;
}

static int is_float_dtype(lrun_dtype d) { return d == LRUN_DTYPE_F32 || d == LRUN_DTYPE_F16 || d == LRUN_DTYPE_BF16; }

/* Checks presence, shape {d0} (d1 == 0) or {d0, d1}, and for vectors a float dtype. */
static lrun_status check_tensor(const struct lrun_tensor *t, const char *name, int64_t d0, int64_t d1, int required)
{
    if (!t) return required ? lrun_fail(LRUN_E_FORMAT, "missing tensor '%s'", name) : LRUN_OK;
    const int64_t want[LRUN_MAX_DIMS] = {d0, d1 ? d1 : 1, 1, 1};
    int ok = 1;
    for (int i = 0; i < LRUN_MAX_DIMS; i++) ok &= t->ne[i] == want[i];
    if (!ok) {
        char have[96], exp[64];
        int n = snprintf(have, sizeof have, "{%lld", (long long)t->ne[0]);
        for (int i = 1; i < t->ndim && n < (int)sizeof have; i++)
            n += snprintf(have + n, sizeof have - (size_t)n, ", %lld", (long long)t->ne[i]);
        if (n < (int)sizeof have) snprintf(have + n, sizeof have - (size_t)n, "}");
        if (d1) snprintf(exp, sizeof exp, "{%lld, %lld}", (long long)d0, (long long)d1);
        else snprintf(exp, sizeof exp, "{%lld}", (long long)d0);
        return lrun_fail(LRUN_E_FORMAT, "tensor '%s' has shape %s, expected %s", name, have, exp);
    }
    if (!d1 && !is_float_dtype(t->dtype))
        return lrun_fail(LRUN_E_UNSUPPORTED, "tensor '%s' is %s; vectors must be f32, f16 or bf16", name,
                         lrun_dtype_name(t->dtype));
    return LRUN_OK;
}

static lrun_status build_tensors(lrun_model *m)
{
    const lrun_gguf *g = m->gguf;
    const lrun_model_info *in = &m->info;
    m->n_tensors = lrun_gguf_tensor_count(g);
    m->layers = calloc((size_t)in->n_layer, sizeof *m->layers);
    m->tensors = calloc(m->n_tensors > 0 ? (size_t)m->n_tensors : 1, sizeof *m->tensors);
    if (!m->layers || !m->tensors) return lrun_fail_oom(0, 0, "model: tensor records");

    for (int64_t i = 0; i < m->n_tensors; i++) {
        struct lrun_tensor *t = &m->tensors[i];
        const char *name = lrun_gguf_tensor_name(g, i);
        const lrun_dtype dtype = lrun_gguf_tensor_dtype(g, i);
        if (!lrun_dtype_is_supported((int)dtype))
            return lrun_fail(LRUN_E_UNSUPPORTED, "tensor '%s' has dtype %d, which lrun cannot compute with", name,
                             (int)dtype);
        int64_t dims[LRUN_MAX_DIMS];
        const int ndim = lrun_gguf_tensor_ndim(g, i);
        for (int d = 0; d < LRUN_MAX_DIMS; d++) dims[d] = lrun_gguf_tensor_dim(g, i, d);
        lrun_status st = lrun_tensor_set_shape(t, name, dtype, ndim, dims);
        if (st != LRUN_OK) return st;
        struct lrun_tensor **slot;
        int layer;
        const int role = parse_name(m, name, &layer, &slot);
        if (role == -2)
            return lrun_fail(LRUN_E_FORMAT, "tensor '%s' names block %d, but the model has %lld blocks", name, layer,
                             (long long)in->n_layer);
        if (role < 0) return lrun_fail(LRUN_E_UNSUPPORTED, "tensor '%s' is not part of the llama architecture", name);
        t->role = (lrun_role)role;
        t->layer = layer;
        t->tier = LRUN_TIER_MMAP;
        t->file_data = lrun_gguf_tensor_data(g, i);
        t->data = (void *)t->file_data; /* zero copy: the mapping is read-only, and so are weights */
        t->device = NULL;
        *slot = t;
        m->info.weight_bytes += t->nbytes;
    }

    /* every tensor the forward pass reads, with its exact shape */
    const int64_t q_dim = in->n_head * in->head_dim, kv_dim = in->n_head_kv * in->head_dim;
    lrun_status st;
    if ((st = check_tensor(m->tok_embd, "token_embd.weight", in->n_embd, in->n_vocab, 1)) != LRUN_OK) return st;
    if ((st = check_tensor(m->output_norm, "output_norm.weight", in->n_embd, 0, 1)) != LRUN_OK) return st;
    if ((st = check_tensor(m->output, "output.weight", in->n_embd, in->n_vocab, 0)) != LRUN_OK) return st;
    if ((st = check_tensor(m->rope_freqs, "rope_freqs.weight", in->n_rot / 2, 0, 0)) != LRUN_OK) return st;
    if (m->rope_freqs && m->rope_freqs->dtype != LRUN_DTYPE_F32)
        return lrun_fail(LRUN_E_UNSUPPORTED, "tensor 'rope_freqs.weight' must be f32");
    for (int64_t l = 0; l < in->n_layer; l++) {
        const struct lrun_model_layer *L = &m->layers[l];
        const struct {
            const struct lrun_tensor *t;
            const char *suffix;
            int64_t d0, d1;
            int required;
        } want[] = {
            {L->attn_norm, "attn_norm.weight", in->n_embd, 0, 1},
            {L->wq, "attn_q.weight", in->n_embd, q_dim, 1},
            {L->wk, "attn_k.weight", in->n_embd, kv_dim, 1},
            {L->wv, "attn_v.weight", in->n_embd, kv_dim, 1},
            {L->wo, "attn_output.weight", q_dim, in->n_embd, 1},
            {L->bq, "attn_q.bias", q_dim, 0, 0},
            {L->bk, "attn_k.bias", kv_dim, 0, 0},
            {L->bv, "attn_v.bias", kv_dim, 0, 0},
            {L->bo, "attn_output.bias", in->n_embd, 0, 0},
            {L->ffn_norm, "ffn_norm.weight", in->n_embd, 0, 1},
            {L->w_gate, "ffn_gate.weight", in->n_embd, in->n_ff, 1},
            {L->w_up, "ffn_up.weight", in->n_embd, in->n_ff, 1},
            {L->w_down, "ffn_down.weight", in->n_ff, in->n_embd, 1},
        };
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, want[i].suffix);
            if ((st = check_tensor(want[i].t, name, want[i].d0, want[i].d1, want[i].required)) != LRUN_OK) return st;
        }
    }
    m->info.tied_embeddings = m->output == NULL;
    if (!m->output) m->output = m->tok_embd;
    return LRUN_OK;
}

// ---------------------------------------------------------------- prefault

/* Asks the kernel to read the weights ahead and touches one byte per page,
 * in file order, so the first forward pass does not stall on page faults and
 * the user sees the load happen. Skipped (beyond the hint) when the file is
 * larger than physical memory: touching would only evict earlier pages. */
static void prefault(const lrun_model *m, const char *path, int show)
{
    const lrun_gguf *g = m->gguf;
    if (m->n_tensors == 0) return;
    const char *start = (const char *)lrun_gguf_tensor_data(g, 0) - lrun_gguf_tensor_offset(g, 0);
    const size_t file = lrun_gguf_file_bytes(g), off = lrun_gguf_data_offset(g);
    if (!start || off >= file) return;
    const size_t len = file - off;
    const long page_l = sysconf(_SC_PAGESIZE), phys = sysconf(_SC_PHYS_PAGES);
    const size_t page = page_l > 0 ? (size_t)page_l : 4096;
    const uintptr_t aligned = (uintptr_t)start & ~(uintptr_t)(page - 1);
    (void)madvise((void *)aligned, len + ((uintptr_t)start - aligned), MADV_WILLNEED);
    if (phys > 0 && len / page > (size_t)phys) return;

    lrun_progress bar;
    lrun_progress_begin(&bar, show, path, len);
    volatile unsigned char sink = 0;
    const size_t report_every = (size_t)4 << 20;
    for (size_t o = 0; o < len; o += page) {
        sink ^= (unsigned char)start[o];
        if (o % report_every < page) lrun_progress_update(&bar, o);
    }
    (void)sink;
    lrun_progress_end(&bar);
}

// ---------------------------------------------------------------- load and free

lrun_status lrun_model_load(lrun_model **out, const char *path, const lrun_load_opts *opts)
{
    static const lrun_load_opts defaults = {NULL, 0, 0, 0, -1};
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
    lrun_status st = lrun_gguf_open(&m->gguf, path);
    if (st == LRUN_OK) st = read_hparams(m);
    if (st == LRUN_OK) st = build_tensors(m);
    if (st == LRUN_OK && opts->rope_style >= 0) m->info.rope_style = (lrun_rope_style)opts->rope_style;
    if (st == LRUN_OK && find_key(m->gguf, "tokenizer.ggml.model") >= 0)
        st = lrun_tokenizer_init_gguf(&m->tokenizer, m->gguf);
    if (st == LRUN_OK) st = lrun_device_open(&m->device, opts->device ? opts->device : "cpu", opts->device_budget);
    if (st == LRUN_OK) st = lrun_threadpool_init(&m->pool, opts->n_threads);
    if (st != LRUN_OK) {
        lrun_model_free(m);
        return lrun_fail_context(lrun_oom_phase(st, "load"), "loading %s", path);
    }
    prefault(m, path, opts->progress);
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
    if (model->gguf) lrun_gguf_close(model->gguf);
    free(model->tensors);
    free(model->layers);
    free(model);
}

// ---------------------------------------------------------------- accessors

const lrun_model_info *lrun_model_get_info(const lrun_model *model) { return &model->info; }
lrun_device *lrun_model_device(lrun_model *model) { return model->device; }
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
    /* tensors are kept in file order, so the file's index is ours */
    const int64_t i = name ? lrun_gguf_find_tensor(model->gguf, name) : -1;
    return lrun_model_tensor(model, i);
}

size_t lrun_model_tier_bytes(const lrun_model *model, lrun_tier tier)
{
    size_t sum = 0;
    for (int64_t i = 0; i < model->n_tensors; i++)
        if (model->tensors[i].tier == tier) sum += model->tensors[i].nbytes;
    return sum;
}

size_t lrun_model_vector_floats(const lrun_model *m)
{
    size_t n = (size_t)(2 * m->info.n_layer + 1) * (size_t)m->info.n_embd;
    if (m->rope_freqs) n += (size_t)m->rope_freqs->ne[0];
    for (int64_t l = 0; l < m->info.n_layer; l++) {
        const struct lrun_model_layer *L = &m->layers[l];
        const struct lrun_tensor *b[] = {L->bq, L->bk, L->bv, L->bo};
        for (int i = 0; i < 4; i++)
            if (b[i]) n += (size_t)b[i]->ne[0];
    }
    return n;
}
