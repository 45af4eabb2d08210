/* model_hf_arch.c — see model_hf_arch.h. */
#include "model/model_hf_arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/hf.h"
#include "core/error.h"
#include "quant/quant.h"


// ---------------------------------------------------------------- Phi-3 LongRoPE

static const char *rope_type(const cJSON *rs)
{
    const cJSON *t = rs ? cJSON_GetObjectItemCaseSensitive(rs, "rope_type") : NULL;
    if (!cJSON_IsString(t)) t = rs ? cJSON_GetObjectItemCaseSensitive(rs, "type") : NULL;
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

int lrun_hf_is_longrope(const cJSON *rs)
{
    const char *t = rope_type(rs);
    return t && (strcmp(t, "longrope") == 0 || strcmp(t, "su") == 0);
}

/* A positive number under key in rs, else at cfg's top level; 0 when neither. */
static double number_in(const cJSON *rs, const cJSON *cfg, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rs, key);
    if (!cJSON_IsNumber(v)) v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    return cJSON_IsNumber(v) && v->valuedouble > 0 ? v->valuedouble : 0;
}

lrun_status lrun_hf_put_longrope_keys(lrun_gguf_writer *w, const char *file, const char *arch, const cJSON *cfg,
                                      const cJSON *rs)
{
    const double orig = number_in(rs, cfg, "original_max_position_embeddings");
    const double max_pos = number_in(NULL, cfg, "max_position_embeddings");
    if (orig < 1 || orig > 2147483647.0 || orig != floor(orig) || max_pos < 1)
        return lrun_fail(LRUN_E_FORMAT, "%s: rope_scaling %s needs \"original_max_position_embeddings\" and "
                         "\"max_position_embeddings\" (whole numbers > 0)", file, rope_type(rs));
    /* Phi-3's converter (and transformers when attention_factor is absent) */
    const double scale = max_pos / orig;
    double af = number_in(rs, NULL, "attention_factor");
    if (af == 0) af = scale > 1.0 ? sqrt(1.0 + log(scale) / log(orig)) : 1.0;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", arch);
    lrun_status st = lrun_gguf_writer_set_u32(w, key, (uint32_t)orig);
    snprintf(key, sizeof key, "%s.rope.scaling.attn_factor", arch);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_f32(w, key, (float)af);
    return st;
}

// ---------------------------------------------------------------- YaRN

lrun_status lrun_hf_put_yarn_keys(lrun_gguf_writer *w, const char *file, const char *arch, const cJSON *cfg,
                                  const cJSON *rs)
{
    /* what transformers' _compute_yarn_parameters would read and lrun does not compute */
    const cJSON *af = cJSON_GetObjectItemCaseSensitive(rs, "attention_factor");
    if (af && !cJSON_IsNull(af))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: rope_scaling yarn: \"attention_factor\" is not supported (lrun "
                         "scales cos and sin by 0.1 ln(factor) + 1)", file);
    if (number_in(rs, NULL, "mscale") > 0 && number_in(rs, NULL, "mscale_all_dim") > 0)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: rope_scaling yarn: \"mscale\" with \"mscale_all_dim\" is not "
                         "supported", file);
    const double factor = number_in(rs, NULL, "factor"), orig = number_in(rs, cfg, "original_max_position_embeddings");
    if (factor == 0)
        return lrun_fail(LRUN_E_FORMAT, "%s: rope_scaling yarn needs \"factor\" (a number > 0)", file);
    if (orig < 1 || orig > 2147483647.0 || orig != floor(orig))
        return lrun_fail(LRUN_E_FORMAT, "%s: rope_scaling yarn needs \"original_max_position_embeddings\" (a whole "
                         "number > 0)", file);
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(rs, "truncate");
    if (tr && !cJSON_IsNull(tr) && !cJSON_IsBool(tr))
        return lrun_fail(LRUN_E_FORMAT, "%s: rope_scaling yarn: \"truncate\" must be true or false", file);
    /* transformers: beta_fast/beta_slow "or" 32/1 (absent, null or 0 take the default), truncate defaults true */
    const double fast = number_in(rs, NULL, "beta_fast"), slow = number_in(rs, NULL, "beta_slow");
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    lrun_status st = lrun_gguf_writer_set_str(w, key, "yarn");
    snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_f32(w, key, (float)factor);
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", arch);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_u32(w, key, (uint32_t)orig);
    snprintf(key, sizeof key, "%s.rope.scaling.yarn_beta_fast", arch);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_f32(w, key, (float)(fast > 0 ? fast : 32.0));
    snprintf(key, sizeof key, "%s.rope.scaling.yarn_beta_slow", arch);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_f32(w, key, (float)(slow > 0 ? slow : 1.0));
    snprintf(key, sizeof key, "%s.rope.scaling.yarn_truncate", arch);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_bool(w, key, !cJSON_IsFalse(tr));
    return st;
}

/* rs's list `key` of n positive numbers as f32 (owned by m) into *out. */
static lrun_status factor_list(lrun_model *m, const char *file, const cJSON *rs, const char *key, int64_t n,
                               float **out)
{
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(rs, key);
    if (!cJSON_IsArray(l) || cJSON_GetArraySize(l) != n)
        return lrun_fail(LRUN_E_FORMAT, "%s: rope_scaling \"%s\" must be a list of %lld numbers (n_rot / 2)", file,
                         key, (long long)n);
    float *f = lrun_model_own(m, (size_t)n * sizeof *f, "LongRoPE factors");
    if (!f) return lrun_fail_context(LRUN_E_OOM, "%s", file);
    int64_t i = 0;
    for (const cJSON *c = l->child; c; c = c->next, i++) {
        if (!cJSON_IsNumber(c) || !(c->valuedouble > 0) || !isfinite(c->valuedouble))
            return lrun_fail(LRUN_E_FORMAT, "%s: rope_scaling \"%s\"[%lld] must be a number > 0", file, key,
                             (long long)i);
        f[i] = (float)c->valuedouble; /* torch.tensor(..., dtype=float32), as the converter */
    }
    *out = f;
    return LRUN_OK;
}

lrun_status lrun_hf_add_longrope(lrun_model *m, const char *file, const cJSON *rs)
{
    if (!lrun_hf_is_longrope(rs)) return LRUN_OK;
    const int64_t half = m->info.n_rot / 2;
    float *lf = NULL, *sf = NULL;
    lrun_status st = factor_list(m, file, rs, "long_factor", half, &lf);
    if (st == LRUN_OK) st = factor_list(m, file, rs, "short_factor", half, &sf);
    const int64_t ne[1] = {half};
    if (st == LRUN_OK) st = lrun_model_add_tensor(m, m->n_tensors++, "rope_factors_long.weight", LRUN_DTYPE_F32, 1, ne, lf);
    if (st == LRUN_OK) st = lrun_model_add_tensor(m, m->n_tensors++, "rope_factors_short.weight", LRUN_DTYPE_F32, 1, ne, sf);
    return st;
}

// ---------------------------------------------------------------- Gemma

lrun_status lrun_hf_gemma_config(lrun_model *m, const char *file, const cJSON *cfg)
{
    const lrun_arch *a = m->arch;
    if (!a->embd_scale) return LRUN_OK;
    m->gelu_f32 = 1; /* transformers' GELU, not llama.cpp's f16 table */
    /* transformers scales q by query_pre_attn_scalar^-0.5 (GGUF has no key: llama.cpp's rule by size) */
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(cfg, "query_pre_attn_scalar");
    if (q && !cJSON_IsNull(q)) {
        if (!cJSON_IsNumber(q) || !(q->valuedouble > 0) || !isfinite(q->valuedouble))
            return lrun_fail(LRUN_E_FORMAT, "%s: \"query_pre_attn_scalar\" must be a number > 0", file);
        m->query_pre_attn_scalar = q->valuedouble;
    }
    /* a soft-cap of null is none in transformers (the description's defaults are for an absent GGUF key) */
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cfg, "attn_logit_softcapping"))) m->attn_softcap = 0;
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cfg, "final_logit_softcapping"))) m->final_softcap = 0;
    /* what the description fixes: the local blocks' RoPE base and which blocks are local */
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(cfg, "rope_local_base_freq");
    if (!lb) { /* transformers 5: rope_parameters.sliding_attention.rope_theta */
        const cJSON *rp = cJSON_GetObjectItemCaseSensitive(cfg, "rope_parameters");
        const cJSON *sl = rp ? cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention") : NULL;
        lb = sl ? cJSON_GetObjectItemCaseSensitive(sl, "rope_theta") : NULL;
    }
    if (cJSON_IsNumber(lb) && a->rope_base_local > 0 && lb->valuedouble != a->rope_base_local)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"rope_local_base_freq\" %g (%s's local blocks rotate at %g)", file,
                         lb->valuedouble, a->name, a->rope_base_local);
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(cfg, "sliding_window_pattern");
    if (cJSON_IsNumber(pat) && a->swa_pattern > 0 && pat->valuedouble != a->swa_pattern)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"sliding_window_pattern\" %g (%s's is %d)", file, pat->valuedouble,
                         a->name, a->swa_pattern);
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(cfg, "layer_types");
    int64_t l = 0;
    for (const cJSON *c = cJSON_IsArray(types) ? types->child : NULL; c; c = c->next, l++) {
        const int local = cJSON_IsString(c) && strcmp(c->valuestring, "sliding_attention") == 0;
        if (l >= m->info.n_layer || local != lrun_model_layer_is_local(m, l))
            return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"layer_types\"[%lld] is not %s's pattern (every %d-th block "
                             "global)", file, (long long)l, a->name, a->swa_pattern);
    }
    return LRUN_OK;
}

lrun_status lrun_hf_shift_norm(lrun_model *m, const char *file, const lrun_st_tensor *t, const char *gguf_name,
                               lrun_dtype *dtype, const void **data)
{
    const size_t n = strlen(gguf_name), k = strlen("norm.weight");
    if (!lrun_hf_norm_shift(m->arch->name) || n < k || strcmp(gguf_name + n - k, "norm.weight") != 0) return LRUN_OK;
    if (t->ndim != 1 || (t->dtype != LRUN_ST_F32 && t->dtype != LRUN_ST_F16 && t->dtype != LRUN_ST_BF16))
        return lrun_fail(LRUN_E_FORMAT, "%s: norm '%s' must be a vector of F32, F16 or BF16", file, t->name);
    const int64_t len = t->shape[0];
    float *f = lrun_model_own(m, (size_t)len * sizeof *f, "norm weights (1 + w)");
    if (!f) return lrun_fail_context(LRUN_E_OOM, "%s: tensor '%s'", file, t->name);
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < len; i++) {
        float w;
        uint16_t h;
        if (t->dtype == LRUN_ST_F32) memcpy(&w, p + 4 * i, 4);
        else memcpy(&h, p + 2 * i, 2), w = t->dtype == LRUN_ST_BF16 ? lrun_bf16_to_f32(h) : lrun_f16_to_f32(h);
        f[i] = 1.0f + w; /* Gemma*RMSNorm: (1.0 + self.weight.float()) */
    }
    *dtype = LRUN_DTYPE_F32;
    *data = f;
    return LRUN_OK;
}
