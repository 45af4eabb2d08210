/* model_gen_hf_gpt_oss.c — see model_gen_hf_gpt_oss.h. */
#include "model/model_gen_hf_gpt_oss.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "lrun.h"
#include "model/random_fill.h"
#include "quant/quant.h"

#define OUT_BYTES ((size_t)4 << 20) /* directory bytes gathered per write */

// ---------------------------------------------------------------- config.json

cJSON *lrun_gen_hf_float(double v)
{
    char text[40];
    snprintf(text, sizeof text, "%.17g", v);
    if (!strpbrk(text, ".eEn")) strcat(text, ".0"); /* integral: make it read as a float ("n": nan/inf) */
    return cJSON_CreateRaw(text);
}

void lrun_gen_hf_gpt_oss_config(cJSON *c, const lrun_model_gen_spec *s)
{
    /* num_local_experts and num_experts_per_tok are model_gen_hf.c's (Mixtral's names too) */
    cJSON_AddNumberToObject(c, "experts_per_token", (double)s->n_expert_used); /* the released config has both */
    cJSON_AddItemToObject(c, "swiglu_limit", lrun_gen_hf_float(7.0));
    cJSON_AddNumberToObject(c, "router_aux_loss_coef", 0.9);
    cJSON_AddBoolToObject(c, "output_router_logits", 0);
    /* the GGUF's window on the even blocks (lrun_model_layer_is_local, swa_pattern 2); a spec without a
     * window gets the whole context, which no position falls out of (as the GGUF generator's key) */
    if (s->sliding_window <= 0) cJSON_AddNumberToObject(c, "sliding_window", (double)s->n_ctx);
    cJSON *types = cJSON_AddArrayToObject(c, "layer_types");
    for (int64_t l = 0; l < s->n_layer; l++)
        cJSON_AddItemToArray(types, cJSON_CreateString(l % 2 == 0 ? "sliding_attention" : "full_attention"));
    if (s->rope_yarn_factor > 0) {
        /* the GGUF generator's keys (model_gen.c): original context n_ctx / factor; beta_fast/slow are
         * llama.cpp's and transformers' defaults. truncate true: the GGUF (as llama.cpp) floors and ceils
         * YaRN's ramp, and this directory must compute what the GGUF of the same seed computes; the
         * released gpt-oss config says false (lrun reads either: hf_gpt_oss_spec) */
        const double orig = (double)(s->n_ctx / (int64_t)s->rope_yarn_factor);
        cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "yarn");
        cJSON_AddItemToObject(rs, "factor", lrun_gen_hf_float(s->rope_yarn_factor));
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", orig >= 1 ? orig : 1);
        cJSON_AddItemToObject(rs, "beta_fast", lrun_gen_hf_float(32.0));
        cJSON_AddItemToObject(rs, "beta_slow", lrun_gen_hf_float(1.0));
        cJSON_AddBoolToObject(rs, "truncate", 1);
        cJSON_AddNumberToObject(c, "initial_context_length", orig >= 1 ? orig : 1);
    }
    if (s->expert_dtype == LRUN_DTYPE_MXFP4) { /* the released checkpoints': everything else unquantized */
        cJSON *q = cJSON_AddObjectToObject(c, "quantization_config");
        cJSON_AddStringToObject(q, "quant_method", "mxfp4");
        cJSON *keep = cJSON_AddArrayToObject(q, "modules_to_not_convert");
        static const char *const kept[] = {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"};
        for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
            cJSON_AddItemToArray(keep, cJSON_CreateString(kept[i]));
    }
}

// ---------------------------------------------------------------- which tensor

enum { GATE, UP, DOWN };

/* Block, projection and kind (1: bias) of an expert tensor's GGUF name; 0 when it is none. */
static int parse(const gen_tensor *t, int *layer, int *proj, int *bias)
{
    char p[8], kind[8];
    int n = 0;
    if (sscanf(t->name, "blk.%d.ffn_%7[a-z]_exps.%7[a-z]%n", layer, p, kind, &n) != 3 || t->name[n] != '\0') return 0;
    *proj = strcmp(p, "gate") == 0 ? GATE : strcmp(p, "up") == 0 ? UP : strcmp(p, "down") == 0 ? DOWN : -1;
    *bias = strcmp(kind, "bias") == 0;
    return *proj >= 0 && (*bias || strcmp(kind, "weight") == 0);
}

int lrun_gen_hf_gpt_oss_owns(const lrun_model_gen_spec *s, const gen_tensor *t)
{
    int l, p, b;
    return lrun_gen_arch(s)->moe_oai && parse(t, &l, &p, &b);
}

static lrun_st_dtype st_float(lrun_dtype d)
{
    return d == LRUN_DTYPE_BF16 ? LRUN_ST_BF16 : d == LRUN_DTYPE_F16 ? LRUN_ST_F16 : LRUN_ST_F32;
}

int lrun_gen_hf_gpt_oss_decl(const gen_tensor *t, int k, gen_hf_decl *out)
{
    int l, p, bias;
    if (!parse(t, &l, &p, &bias) || p == UP) return 0;
    const char *proj = p == GATE ? "gate_up_proj" : "down_proj";
    const int64_t parts = p == GATE ? 2 : 1, E = bias ? t->ne[1] : t->ne[2];
    const int64_t rows = parts * (bias ? t->ne[0] : t->ne[1]), cols = t->ne[0]; /* HF's outputs, inputs */
    const int mx = !bias && t->dtype == LRUN_DTYPE_MXFP4;
    if (k > (mx ? 1 : 0)) return 0;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "model.layers.%d.mlp.experts.%s%s", l, proj,
             bias ? "_bias"
             : mx ? (k == 0 ? "_blocks" : "_scales")
                  : "");
    if (bias) {
        out->dtype = LRUN_ST_F32, out->ndim = 2, out->shape[0] = E, out->shape[1] = rows;
    } else if (mx) { /* per output row: the inputs' blocks of 32 */
        out->dtype = LRUN_ST_U8, out->ndim = k == 0 ? 4 : 3;
        out->shape[0] = E, out->shape[1] = rows, out->shape[2] = cols / LRUN_QK_MXFP4, out->shape[3] = 16;
    } else { /* GptOssExperts' x · W: inputs × outputs */
        out->dtype = st_float(t->dtype), out->ndim = 3, out->shape[0] = E, out->shape[1] = cols, out->shape[2] = rows;
    }
    return 1;
}

// ---------------------------------------------------------------- values

/* Elements [first, first + n) of t, as the GGUF generator writes them. */
static lrun_status fill(const gen_tensor *t, void *dst, int64_t first, int64_t n)
{
    return (t->trained ? lrun_random_fill_trained : lrun_random_fill)(t->dtype, dst, first, n, t->scale, t->seed);
}

/* The list's tensor named like t with "_gate_" replaced by "_up_" (gate's partner). */
static const gen_tensor *partner_up(const gen_list *l, const gen_tensor *t)
{
    char name[sizeof t->name];
    const char *at = strstr(t->name, "_gate_");
    snprintf(name, sizeof name, "%.*s_up_%s", (int)(at - t->name), t->name, at + 6);
    for (int64_t i = 0; i < l->n; i++)
        if (strcmp(l->t[i].name, name) == 0) return &l->t[i];
    return NULL;
}

/* Buffered writes of the directory's bytes. */
typedef struct out_buf {
    lrun_st_writer *w;
    uint8_t *p; /* (cap) */
    size_t cap, used;
} out_buf;

static lrun_status flush(out_buf *o)
{
    const lrun_status st = o->used ? lrun_st_writer_write(o->w, o->p, o->used) : LRUN_OK;
    o->used = 0;
    return st;
}

/* Room for n more bytes (n <= cap), flushing first when needed. */
static uint8_t *room(out_buf *o, size_t n, lrun_status *st)
{
    if (o->used + n > o->cap && (*st = flush(o)) != LRUN_OK) return NULL;
    uint8_t *p = o->p + o->used;
    o->used += n;
    return p;
}

/* One ggml block (scale byte, then element j low and j + 16 high in byte j)
 * into the checkpoint's (byte i: element 2i low, 2i + 1 high) and its scale:
 * the inverse of model_hf_gpt_oss.c's repack_block. */
static void unpack_block(uint8_t *dst16, uint8_t *scale, const uint8_t *src)
{
    uint8_t code[LRUN_QK_MXFP4];
    *scale = src[0];
    for (int j = 0; j < 16; j++) code[j] = src[1 + j] & 0xF, code[j + 16] = (uint8_t)(src[1 + j] >> 4);
    for (int i = 0; i < 16; i++) dst16[i] = (uint8_t)(code[2 * i] | code[2 * i + 1] << 4);
}

/* MXFP4: _blocks row by row (HF row parts·r + q is part q's row r), the scales gathered and written after. */
static lrun_status write_mxfp4(out_buf *o, const gen_tensor *const part[2], int parts)
{
    const int64_t cols = part[0]->ne[0], rows = part[0]->ne[1], E = part[0]->ne[2], G = cols / LRUN_QK_MXFP4;
    const size_t row_bytes = (size_t)G * sizeof(lrun_block_mxfp4);
    uint8_t *row = malloc(row_bytes), *scales = malloc((size_t)(E * parts * rows * G));
    lrun_status st = row && scales ? LRUN_OK : lrun_fail_oom(row_bytes, 0, "lrun_model_generate_hf: MXFP4 rows");
    size_t k = 0;
    for (int64_t e = 0; st == LRUN_OK && e < E; e++)
        for (int64_t r = 0; st == LRUN_OK && r < rows; r++)
            for (int q = 0; st == LRUN_OK && q < parts; q++) {
                st = fill(part[q], row, (e * rows + r) * cols, cols);
                uint8_t *d = st == LRUN_OK ? room(o, (size_t)G * 16, &st) : NULL;
                for (int64_t g = 0; d && g < G; g++)
                    unpack_block(d + g * 16, &scales[k++], row + (size_t)g * sizeof(lrun_block_mxfp4));
            }
    if (st == LRUN_OK) st = flush(o);
    if (st == LRUN_OK) st = lrun_st_writer_write(o->w, scales, (size_t)(E * parts * rows * G));
    free(row);
    free(scales);
    return st;
}

/* Unquantized: per expert, the parts' [rows, cols] matrices transposed into [cols, parts · rows]. */
static lrun_status write_plain(out_buf *o, const gen_tensor *const part[2], int parts)
{
    const int64_t cols = part[0]->ne[0], rows = part[0]->ne[1], E = part[0]->ne[2];
    const size_t eb = lrun_dtype_block_bytes(part[0]->dtype), m = (size_t)(rows * cols) * eb;
    uint8_t *src = malloc((size_t)parts * m), *dst = malloc((size_t)parts * m);
    lrun_status st = src && dst ? LRUN_OK : lrun_fail_oom((size_t)parts * m, 0, "lrun_model_generate_hf: an expert");
    for (int64_t e = 0; st == LRUN_OK && e < E; e++) {
        for (int q = 0; st == LRUN_OK && q < parts; q++)
            st = fill(part[q], src + (size_t)q * m, e * rows * cols, rows * cols);
        /* dst[i][parts·r + q] = part q's [r][i] */
        for (int q = 0; st == LRUN_OK && q < parts; q++)
            for (int64_t r = 0; r < rows; r++)
                for (int64_t i = 0; i < cols; i++)
                    memcpy(dst + ((size_t)(i * parts * rows + parts * r + q)) * eb,
                           src + (size_t)q * m + (size_t)(r * cols + i) * eb, eb);
        if (st == LRUN_OK) st = lrun_st_writer_write(o->w, dst, (size_t)parts * m);
    }
    free(src);
    free(dst);
    return st;
}

/* Biases (f32 {rows, E}, expert e the row e): [E, parts · rows], part q in the columns ≡ q (mod parts). */
static lrun_status write_bias(out_buf *o, const gen_tensor *const part[2], int parts)
{
    const int64_t rows = part[0]->ne[0], E = part[0]->ne[1];
    float *v = malloc((size_t)(parts * rows * E) * sizeof *v), *d = malloc((size_t)(parts * rows * E) * sizeof *d);
    lrun_status st = v && d ? LRUN_OK : lrun_fail_oom(0, 0, "lrun_model_generate_hf: expert biases");
    for (int q = 0; st == LRUN_OK && q < parts; q++) st = fill(part[q], v + q * rows * E, 0, rows * E);
    for (int q = 0; st == LRUN_OK && q < parts; q++)
        for (int64_t e = 0; e < E; e++)
            for (int64_t r = 0; r < rows; r++) d[e * parts * rows + parts * r + q] = v[q * rows * E + e * rows + r];
    if (st == LRUN_OK) st = lrun_st_writer_write(o->w, d, (size_t)(parts * rows * E) * sizeof *d);
    free(v);
    free(d);
    return st;
}

lrun_status lrun_gen_hf_gpt_oss_write(lrun_st_writer *w, const gen_list *l, const gen_tensor *t)
{
    int layer, p, bias;
    if (!parse(t, &layer, &p, &bias))
        return lrun_fail(LRUN_E_INTERNAL, "lrun_model_generate_hf: '%s' is not a gpt-oss experts tensor", t->name);
    if (p == UP) return LRUN_OK; /* written with gate's */
    const gen_tensor *part[2] = {t, p == GATE ? partner_up(l, t) : NULL};
    const int parts = p == GATE ? 2 : 1;
    if (parts == 2 && (!part[1] || part[1]->dtype != t->dtype || memcmp(part[1]->ne, t->ne, sizeof t->ne) != 0))
        return lrun_fail(LRUN_E_INTERNAL, "lrun_model_generate_hf: '%s' has no up tensor of its shape and dtype",
                         t->name);
    const size_t row = (size_t)(t->ne[0] / LRUN_QK_MXFP4) * 16, cap = row > OUT_BYTES ? row : OUT_BYTES;
    out_buf o = {w, malloc(cap), cap, 0}; /* an MXFP4 row's blocks fit */
    if (!o.p) return lrun_fail_oom(cap, 0, "lrun_model_generate_hf: write buffer");
    const lrun_status st = bias                           ? write_bias(&o, part, parts)
                           : t->dtype == LRUN_DTYPE_MXFP4 ? write_mxfp4(&o, part, parts)
                                                          : write_plain(&o, part, parts);
    free(o.p);
    return st;
}
