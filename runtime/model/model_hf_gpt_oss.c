/* model_hf_gpt_oss.c — see model_hf_gpt_oss.h. */
#include "model/model_hf_gpt_oss.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/progress.h"
#include "core/threadpool.h"
#include "model/model_hf_moe.h"
#include "quant/quant.h"

#define PREFIX "model.layers.%d.mlp.experts."

enum { GATE_UP, DOWN, N_PAIR };
static const char *const proj_name[N_PAIR] = {"gate_up_proj", "down_proj"};

int lrun_hf_is_gpt_oss(const lrun_model *m)
{
    return m->arch && m->arch->moe_oai;
}

// ---------------------------------------------------------------- finding a block's tensors

typedef struct oss_ctx {
    lrun_model *m;
    const char *file;       /* the weights' path, for messages */
    unsigned char *used;    /* (lrun_st_set_count) 1: taken */
    lrun_progress bar;      /* over the MXFP4 bytes repacked */
    size_t repacked;        /* bytes of _blocks and _scales done */
} oss_ctx;

/* Block l's experts tensor "<proj><suffix>", marked used, or NULL. */
static const lrun_st_tensor *take(oss_ctx *c, int l, int p, const char *suffix)
{
    char name[160];
    snprintf(name, sizeof name, PREFIX "%s%s", l, proj_name[p], suffix);
    const int64_t i = lrun_st_set_find(c->m->st, name);
    if (i < 0) return NULL;
    c->used[i] = 1;
    return lrun_st_set_tensor(c->m->st, i);
}

static int is_float(lrun_st_dtype d) { return d == LRUN_ST_F32 || d == LRUN_ST_F16 || d == LRUN_ST_BF16; }

/* Element i of a float tensor's bytes as f32. */
static float load_f32(const uint8_t *p, lrun_st_dtype d, size_t i)
{
    if (d == LRUN_ST_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return d == LRUN_ST_BF16 ? lrun_bf16_to_f32(h) : lrun_f16_to_f32(h);
}

static size_t elem_bytes(lrun_st_dtype d) { return d == LRUN_ST_F32 ? 4 : 2; }

static lrun_dtype lrun_type(lrun_st_dtype d)
{
    return d == LRUN_ST_F32 ? LRUN_DTYPE_F32 : d == LRUN_ST_F16 ? LRUN_DTYPE_F16 : LRUN_DTYPE_BF16;
}

/* 1 when t has shape {d0, d1, ...} (n dims). */
static int has_shape(const lrun_st_tensor *t, int n, const int64_t *dims)
{
    if (t->ndim != n) return 0;
    for (int i = 0; i < n; i++)
        if (t->shape[i] != dims[i]) return 0;
    return 1;
}

static char *shape_str(char *buf, size_t cap, int n, const int64_t *dims)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static lrun_status bad_shape(const oss_ctx *c, const lrun_st_tensor *t, int n, const int64_t *dims, const char *what)
{
    char want[96], got[96];
    return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s' is %s %s; gpt-oss's %s must be %s", c->file, t->name,
                     lrun_st_dtype_name(t->dtype), shape_str(got, sizeof got, t->ndim, t->shape), what,
                     shape_str(want, sizeof want, n, dims));
}

/* The GGUF name of block l's stacked tensor id, into out. */
static void gguf_name(const lrun_model *m, lrun_arch_tensor id, int l, char *out, size_t cap)
{
    snprintf(out, cap, lrun_arch_tensor_find(m->arch, id)->name, l);
}

// ---------------------------------------------------------------- unquantized experts

/* Inputs [first, last) of the E · cols (expert, input) pairs of one part, on one thread of the pool. */
typedef struct transpose_task {
    uint8_t *dst;          /* (E, rows, cols) elements of eb bytes */
    const uint8_t *src;    /* the file's (E, cols, parts · rows) */
    int64_t rows, cols, n; /* n = E · cols */
    int parts, q;
    size_t eb;
} transpose_task;

static void transpose_inputs(void *ctx, int ith, int nth)
{
    const transpose_task *t = ctx;
    const size_t eb = t->eb, slice = (size_t)(t->rows * t->cols) * eb;
    /* dst[e][r][i] = src[e][i][parts·r + q]: lrun's rows are the outputs */
    for (int64_t k = t->n * ith / nth; k < t->n * (ith + 1) / nth; k++) {
        const int64_t e = k / t->cols, i = k % t->cols;
        const uint8_t *s = t->src + ((size_t)k * (size_t)(t->parts * t->rows) + (size_t)t->q) * eb;
        uint8_t *d = t->dst + (size_t)e * slice + (size_t)i * eb;
        for (int64_t r = 0; r < t->rows; r++)
            memcpy(d + (size_t)(r * t->cols) * eb, s + (size_t)(t->parts * r) * eb, eb);
    }
}

/* The weights of one projection pair from the unquantized [E, in, out] tensor t
 * (x · W): out parts (1 for down, 2 for gate_up, de-interleaved: part q is
 * columns q, q + 2, ...), each stacked {in, rows, E} in t's dtype. */
static lrun_status add_plain(oss_ctx *c, const lrun_st_tensor *t, int l, int p, int64_t *n)
{
    const lrun_model_info *in = &c->m->info;
    const int64_t E = in->n_expert, cols = p == DOWN ? in->n_ff : in->n_embd, rows = p == DOWN ? in->n_embd : in->n_ff;
    const int parts = p == DOWN ? 1 : 2;
    const int64_t want[3] = {E, cols, parts * rows};
    if (!is_float(t->dtype) || !has_shape(t, 3, want))
        return bad_shape(c, t, 3, want, "unquantized experts (F32, F16 or BF16, experts × inputs × outputs)");
    const size_t eb = elem_bytes(t->dtype), slice = (size_t)(rows * cols) * eb;
    static const lrun_arch_tensor ids[N_PAIR][2] = {{LRUN_ARCH_TENSOR_GATE_EXPS, LRUN_ARCH_TENSOR_UP_EXPS},
                                                    {LRUN_ARCH_TENSOR_DOWN_EXPS, LRUN_ARCH_TENSOR_DOWN_EXPS}};
    const uint8_t *src = t->data;
    for (int q = 0; q < parts; q++) {
        char name[96];
        gguf_name(c->m, ids[p][q], l, name, sizeof name);
        uint8_t *dst = lrun_model_own(c->m, (size_t)E * slice, "gpt-oss experts transposed from an HF directory");
        if (!dst) return lrun_fail_context(LRUN_E_OOM, "%s: tensor '%s'", c->file, name);
        transpose_task task = {dst, src, rows, cols, E * cols, parts, q, eb}; /* split as add_mxfp4's */
        if (c->m->pool) lrun_threadpool_run(c->m->pool, transpose_inputs, &task);
        else transpose_inputs(&task, 0, 1);
        const int64_t ne[3] = {cols, rows, E};
        const lrun_status st = lrun_model_add_tensor(c->m, (*n)++, name, lrun_type(t->dtype), 3, ne, dst);
        if (st != LRUN_OK) return lrun_fail_context(st, "%s (HF tensor '%s')", c->file, t->name);
    }
    lrun_hf_release_pages(t->data, t->nbytes);
    return LRUN_OK;
}

// ---------------------------------------------------------------- MXFP4 experts

/* One 32-value block from the checkpoint's order (byte i: element 2i low,
 * 2i + 1 high) into ggml's (byte j: element j low, j + 16 high). */
static void repack_block(uint8_t *dst, uint8_t scale, const uint8_t *src)
{
    /* byte 2i of ggml's is element 2i (src[i] low) | element 2i + 16 (src[8 + i] low) << 4, byte 2i + 1
     * element 2i + 1 (src[i] high) | element 2i + 17 (src[8 + i] high): eight bytes at a time, each
     * operation within its byte (any endianness), then interleaved. A byte at a time this loop was 68% of
     * a gpt-oss load (0.5 GB/s a thread); this way the compiler makes a few vector operations of it. */
    const uint64_t nib = 0x0F0F0F0F0F0F0F0Full;
    uint64_t a, b;
    memcpy(&a, src, 8);
    memcpy(&b, src + 8, 8);
    const uint64_t even = (a & nib) | (b & nib) << 4, odd = (a >> 4 & nib) | (b & ~nib);
    uint8_t e[8], o[8];
    memcpy(e, &even, 8);
    memcpy(o, &odd, 8);
    dst[0] = scale;
    for (int i = 0; i < 8; i++) dst[1 + 2 * i] = e[i], dst[2 + 2 * i] = o[i];
}

/* Rows [first, last) of one part's [E · rows] output rows, on one thread of the pool. */
typedef struct repack_task {
    uint8_t *dst;         /* (E · rows, G) ggml blocks */
    const uint8_t *b, *s; /* the file's _blocks (E · parts · rows, G, 16) and _scales (E · parts · rows, G) */
    int64_t rows, G, n;   /* rows per expert, blocks per row, E · rows */
    int parts, q;         /* 2 for gate_up (part q: rows q, q + 2, ...), 1 for down */
} repack_task;

static void repack_rows(void *ctx, int ith, int nth)
{
    const repack_task *t = ctx;
    const size_t row_bytes = (size_t)t->G * sizeof(lrun_block_mxfp4);
    for (int64_t k = t->n * ith / nth; k < t->n * (ith + 1) / nth; k++) {
        const int64_t e = k / t->rows, r = k % t->rows;
        const size_t src_row = (size_t)(e * t->parts * t->rows + t->parts * r + t->q); /* of the [E · outputs] rows */
        uint8_t *d = t->dst + (size_t)k * row_bytes;
        for (int64_t g = 0; g < t->G; g++)
            repack_block(d + (size_t)g * sizeof(lrun_block_mxfp4), t->s[src_row * (size_t)t->G + (size_t)g],
                         t->b + (src_row * (size_t)t->G + (size_t)g) * 16);
    }
}

/* The weights of one projection pair from its _blocks and _scales tensors
 * ([E, outputs, inputs/32, 16] and [E, outputs, inputs/32], U8): parts
 * as add_plain's (gate_up's rows interleaved), each stacked MXFP4. */
static lrun_status add_mxfp4(oss_ctx *c, const lrun_st_tensor *blocks, const lrun_st_tensor *scales, int l, int p,
                             int64_t *n)
{
    const lrun_model_info *in = &c->m->info;
    const int64_t E = in->n_expert, cols = p == DOWN ? in->n_ff : in->n_embd, rows = p == DOWN ? in->n_embd : in->n_ff;
    const int parts = p == DOWN ? 1 : 2;
    if (cols % LRUN_QK_MXFP4 != 0)
        return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s': MXFP4 experts need their input width (%lld) to be a "
                         "multiple of 32", c->file, blocks->name, (long long)cols);
    const int64_t G = cols / LRUN_QK_MXFP4;
    const int64_t want_b[4] = {E, parts * rows, G, 16}, want_s[3] = {E, parts * rows, G};
    if (blocks->dtype != LRUN_ST_U8 || !has_shape(blocks, 4, want_b))
        return bad_shape(c, blocks, 4, want_b, "MXFP4 blocks (U8, experts × outputs × inputs/32 × 16)");
    /* the released files say U8; F8_E8M0 names the same bytes */
    if ((scales->dtype != LRUN_ST_U8 && scales->dtype != LRUN_ST_F8_E8M0) || !has_shape(scales, 3, want_s))
        return bad_shape(c, scales, 3, want_s, "MXFP4 scales (U8 or F8_E8M0, experts × outputs × inputs/32)");
    static const lrun_arch_tensor ids[N_PAIR][2] = {{LRUN_ARCH_TENSOR_GATE_EXPS, LRUN_ARCH_TENSOR_UP_EXPS},
                                                    {LRUN_ARCH_TENSOR_DOWN_EXPS, LRUN_ARCH_TENSOR_DOWN_EXPS}};
    const size_t row_bytes = (size_t)G * sizeof(lrun_block_mxfp4);
    const uint8_t *b = blocks->data, *s = scales->data;
    for (int q = 0; q < parts; q++) {
        char name[96];
        gguf_name(c->m, ids[p][q], l, name, sizeof name);
        uint8_t *dst = lrun_model_own(c->m, (size_t)(E * rows) * row_bytes, "gpt-oss MXFP4 experts repacked");
        if (!dst) return lrun_fail_context(LRUN_E_OOM, "%s: tensor '%s'", c->file, name);
        lrun_hf_huge_pages(dst, (size_t)(E * rows) * row_bytes); /* the faults were 40% of the repack's time */
        /* split by rows over the model's pool: every row is its own bytes, in and out */
        repack_task t = {dst, b, s, rows, G, E * rows, parts, q};
        if (c->m->pool) lrun_threadpool_run(c->m->pool, repack_rows, &t);
        else repack_rows(&t, 0, 1);
        c->repacked += (blocks->nbytes + scales->nbytes) / (size_t)parts;
        lrun_progress_update(&c->bar, c->repacked);
        const int64_t ne[3] = {cols, rows, E};
        const lrun_status st = lrun_model_add_tensor(c->m, (*n)++, name, LRUN_DTYPE_MXFP4, 3, ne, dst);
        if (st != LRUN_OK) return lrun_fail_context(st, "%s (HF tensor '%s')", c->file, blocks->name);
    }
    lrun_hf_release_pages(blocks->data, blocks->nbytes);
    lrun_hf_release_pages(scales->data, scales->nbytes);
    return LRUN_OK;
}

// ---------------------------------------------------------------- biases

/* The bias of one projection pair ([E, parts · rows], gate_up's interleaved)
 * as f32 {rows, E} per part. */
static lrun_status add_bias(oss_ctx *c, const lrun_st_tensor *t, int l, int p, int64_t *n)
{
    const lrun_model_info *in = &c->m->info;
    const int64_t E = in->n_expert, rows = p == DOWN ? in->n_embd : in->n_ff;
    const int parts = p == DOWN ? 1 : 2;
    const int64_t want[2] = {E, parts * rows};
    if (!is_float(t->dtype) || !has_shape(t, 2, want))
        return bad_shape(c, t, 2, want, "expert biases (F32, F16 or BF16, experts × outputs)");
    static const lrun_arch_tensor ids[N_PAIR][2] = {{LRUN_ARCH_TENSOR_GATE_EXPS_B, LRUN_ARCH_TENSOR_UP_EXPS_B},
                                                    {LRUN_ARCH_TENSOR_DOWN_EXPS_B, LRUN_ARCH_TENSOR_DOWN_EXPS_B}};
    for (int q = 0; q < parts; q++) {
        char name[96];
        gguf_name(c->m, ids[p][q], l, name, sizeof name);
        float *dst = lrun_model_own(c->m, (size_t)(E * rows) * sizeof *dst, "gpt-oss expert biases");
        if (!dst) return lrun_fail_context(LRUN_E_OOM, "%s: tensor '%s'", c->file, name);
        for (int64_t e = 0; e < E; e++)
            for (int64_t r = 0; r < rows; r++)
                dst[e * rows + r] = load_f32(t->data, t->dtype, (size_t)(e * parts * rows + parts * r + q));
        const int64_t ne[2] = {rows, E};
        const lrun_status st = lrun_model_add_tensor(c->m, (*n)++, name, LRUN_DTYPE_F32, 2, ne, dst);
        if (st != LRUN_OK) return lrun_fail_context(st, "%s (HF tensor '%s')", c->file, t->name);
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- a block

/* One projection pair of block l: its weights in either layout, and its bias. */
static lrun_status add_pair(oss_ctx *c, int l, int p, int64_t *n)
{
    const lrun_st_tensor *plain = take(c, l, p, ""), *blocks = take(c, l, p, "_blocks");
    const lrun_st_tensor *scales = take(c, l, p, "_scales"), *bias = take(c, l, p, "_bias");
    char base[160];
    snprintf(base, sizeof base, PREFIX "%s", l, proj_name[p]);
    if (blocks && !scales)
        return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s' has no '%s_scales': MXFP4 blocks need their scales",
                         c->file, blocks->name, base);
    if (scales && !blocks)
        return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s' has no '%s_blocks': MXFP4 scales need their blocks",
                         c->file, scales->name, base);
    if (plain && blocks)
        return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s' and '%s' both hold block %d's %s (one layout per "
                         "projection)", c->file, plain->name, blocks->name, l, proj_name[p]);
    if (!plain && !blocks)
        return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s' is missing (or its MXFP4 '%s_blocks' and '_scales')",
                         c->file, base, base);
    if (!bias) return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s_bias' is missing (gpt-oss's experts are biased)",
                                c->file, base);
    const lrun_status st = plain ? add_plain(c, plain, l, p, n) : add_mxfp4(c, blocks, scales, l, p, n);
    return st == LRUN_OK ? add_bias(c, bias, l, p, n) : st;
}

lrun_status lrun_hf_gpt_oss_add_experts(lrun_model *m, const char *file, int64_t *n)
{
    m->mxfp4_float_x = 1; /* transformers multiplies the dequantized experts with f32 activations */
    oss_ctx c = {m, file, calloc((size_t)lrun_st_set_count(m->st) + 1, 1), {0}, 0};
    if (!c.used) return lrun_fail_oom(0, 0, "%s: expert tables", file);
    size_t mx = 0; /* the bar's total: every expert _blocks and _scales tensor */
    for (int64_t i = 0; i < lrun_st_set_count(m->st); i++) {
        const lrun_st_tensor *t = lrun_st_set_tensor(m->st, i);
        const size_t len = strlen(t->name);
        if (lrun_hf_is_expert_tensor(m->arch, t->name) && len > 7 &&
            (strcmp(t->name + len - 7, "_blocks") == 0 || strcmp(t->name + len - 7, "_scales") == 0))
            mx += t->nbytes;
    }
    lrun_progress_begin(&c.bar, m->progress && mx > 0, "gpt-oss MXFP4 experts", mx); /* "loading gpt-oss ..." */
    lrun_status st = LRUN_OK;
    for (int l = 0; st == LRUN_OK && l < m->info.n_layer; l++)
        for (int p = 0; st == LRUN_OK && p < N_PAIR; p++) st = add_pair(&c, l, p, n);
    for (int64_t i = 0; st == LRUN_OK && i < lrun_st_set_count(m->st); i++) {
        const lrun_st_tensor *t = lrun_st_set_tensor(m->st, i);
        if (!c.used[i] && lrun_hf_is_expert_tensor(m->arch, t->name))
            st = lrun_fail(LRUN_E_UNSUPPORTED, "%s: tensor '%s' is not a gpt-oss experts tensor lrun knows (per "
                           "block: gate_up_proj and down_proj, or their _blocks and _scales, each with its _bias)",
                           file, t->name);
    }
    if (c.bar.active && st == LRUN_OK) lrun_progress_end(&c.bar);
    else if (c.bar.active) fputc('\n', stderr); /* the bar's line ends where the load failed */
    free(c.used);
    return st;
}

// ---------------------------------------------------------------- config.json

/* A number key that must be value when present (transformers' default is value). */
static lrun_status fixed_number(const char *file, const cJSON *cfg, const char *key, double value, const char *why)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) return LRUN_OK;
    if (!cJSON_IsNumber(v) || fabs(v->valuedouble - value) > 1e-9 * fabs(value))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"%s\" must be %g (%s); it is %s%g", file, key, value, why,
                         cJSON_IsNumber(v) ? "" : "not a number: ", cJSON_IsNumber(v) ? v->valuedouble : 0.0);
    return LRUN_OK;
}

lrun_status lrun_hf_gpt_oss_config(const lrun_model *m, const char *file, const cJSON *cfg)
{
    if (!lrun_hf_is_gpt_oss(m)) return LRUN_OK;
    lrun_status st = fixed_number(file, cfg, "swiglu_limit", 7.0, "lrun's swiglu_oai clamps at 7, as llama.cpp's");
    if (st == LRUN_OK) st = fixed_number(file, cfg, "swiglu_alpha", 1.702, "lrun's swiglu_oai's sigmoid gain");
    if (st != LRUN_OK) return st;
    if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(cfg, "attention_bias")))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"attention_bias\" must be true: lrun's gpt-oss has q/k/v/o biases",
                         file);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings")))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"tie_word_embeddings\" must be false: lrun's gpt-oss reads its "
                         "own lm_head.weight (as llama.cpp's)", file);
    /* transformers' default: sliding_attention on the even blocks, lrun's swa_pattern 2 */
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(cfg, "layer_types");
    if (types && !cJSON_IsNull(types) && cJSON_GetArraySize(types) != m->info.n_layer)
        return lrun_fail(LRUN_E_FORMAT, "%s: \"layer_types\" must list %lld blocks", file, (long long)m->info.n_layer);
    int64_t l = 0;
    for (const cJSON *t = cJSON_IsArray(types) ? types->child : NULL; t; t = t->next, l++) {
        const int sliding = cJSON_IsString(t) && strcmp(t->valuestring, "sliding_attention") == 0;
        const int full = cJSON_IsString(t) && strcmp(t->valuestring, "full_attention") == 0;
        if ((!sliding && !full) || sliding != lrun_model_layer_is_local(m, l))
            return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"layer_types\"[%lld] is not gpt-oss's pattern "
                             "(sliding_attention on the even blocks, full_attention on the odd)", file, (long long)l);
    }
    return LRUN_OK;
}
