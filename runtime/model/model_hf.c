/* model_hf.c — loading a Hugging Face model directory:
 *
 *   dir/config.json                     model_type and hyper-parameters
 *   dir/model.safetensors               the weights, or
 *   dir/model.safetensors.index.json    + the shards it names
 *   dir/generation_config.json          generate() defaults (optional)
 *   dir/tokenizer_config.json           chat_template (optional)
 *   dir/tokenizer.json                  the tokenizer (load_tokenizer, below)
 *
 * A .safetensors file (or an index) with a config.json beside it loads too.
 *
 * The config becomes GGUF metadata: config.json's keys are translated by
 * the table of arch/hf.c into the keys the GGUF loader reads ("hidden_size"
 * → "llama.embedding_length"), written as a small in-memory GGUF with no
 * tensors, and read by the same code as a GGUF file's (model.c), so every
 * hyper-parameter, default and check is the same for both formats, and
 * model:metadata() answers for both. The tensors come from the safetensors
 * mapping, zero copy: an HF weight [out, in] row-major is GGUF's {in, out}.
 * HF checkpoints keep q/k in the half-split RoPE layout (the GGUF converter
 * permutes them for adjacent pairs), so the model rotates half-split pairs. */
#include "model/model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h> /* memfd_create */
#include <sys/stat.h>
#include <unistd.h>

#include "arch/hf.h"
#include "core/error.h"
#include "core/progress.h"
#include "model/model_hf_arch.h"
#include "model/model_hf_gpt_oss.h"
#include "model/model_fp8.h"
#include "model/model_hf_moe.h"
#include "model/rope_scaling.h"
#include "quant/quant.h"
#include "residency/loader.h"

#define MAX_JSON_BYTES ((size_t)64 << 20)
#define PATH_CAP 4096

/* Where the parts of the model are. */
typedef struct hf_paths {
    char dir[PATH_CAP];
    char weights[PATH_CAP];     /* a .safetensors file or an index */
    int sharded;                /* weights is an index */
} hf_paths;

// ---------------------------------------------------------------- paths

static int ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int lrun_model_is_hf(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return 1;
    return ends_with(path, ".safetensors") || ends_with(path, ".safetensors.index.json");
}

static lrun_status resolve(hf_paths *p, const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return lrun_fail(LRUN_E_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        snprintf(p->dir, sizeof p->dir, "%s", path);
        snprintf(p->weights, sizeof p->weights, "%s/model.safetensors.index.json", path);
        p->sharded = is_file(p->weights);
        if (!p->sharded) snprintf(p->weights, sizeof p->weights, "%s/model.safetensors", path);
        if (!is_file(p->weights))
            return lrun_fail(LRUN_E_IO, "%s: a model directory needs model.safetensors or "
                             "model.safetensors.index.json", path);
        return LRUN_OK;
    }
    const char *slash = strrchr(path, '/');
    snprintf(p->dir, sizeof p->dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    snprintf(p->weights, sizeof p->weights, "%s", path);
    p->sharded = ends_with(path, ".json");
    return LRUN_OK;
}

/* The parsed JSON file dir/name; NULL with *st = OK when absent. */
static cJSON *read_json(const char *dir, const char *name, lrun_status *st)
{
    char path[PATH_CAP + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *st = LRUN_OK;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *text = NULL;
    size_t len = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        const long n = ftell(f);
        if (n >= 0 && (size_t)n <= MAX_JSON_BYTES && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)n + 1)))
            len = fread(text, 1, (size_t)n, f);
    }
    fclose(f);
    if (!text) {
        *st = lrun_fail(LRUN_E_IO, "%s: cannot read it (or larger than %zu bytes)", path, MAX_JSON_BYTES);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *st = lrun_fail(LRUN_E_FORMAT, "%s: not a JSON object", path);
        return NULL;
    }
    return j;
}

// ---------------------------------------------------------------- config → GGUF metadata

/* A JSON number that is a whole number >= 0. */
static int json_whole(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0) || j->valuedouble > 9007199254740992.0 ||
        j->valuedouble != floor(j->valuedouble))
        return 0;
    *out = (uint64_t)j->valuedouble;
    return 1;
}

static lrun_status set_int(lrun_gguf_writer *w, const char *key, uint64_t v)
{
    return v <= UINT32_MAX ? lrun_gguf_writer_set_u32(w, key, (uint32_t)v) : lrun_gguf_writer_set_u64(w, key, v);
}

/* One row of the key table, when config has the key (null counts as absent). */
static lrun_status put_key(lrun_gguf_writer *w, const char *file, const char *arch, const cJSON *cfg,
                           const lrun_hf_key *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, k->hf);
    if (!v || cJSON_IsNull(v) || (k->arch && strcmp(k->arch, arch) != 0)) return LRUN_OK;
    /* Qwen2 configs carry a sliding_window they do not use */
    if (strcmp(k->hf, "sliding_window") == 0 && cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(cfg, "use_sliding_window")))
        return LRUN_OK;
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, k->gguf_suffix);
    uint64_t u;
    switch (k->kind) {
    case LRUN_HF_INT:
        if (json_whole(v, &u)) return set_int(w, key, u);
        if (cJSON_IsNumber(v))
            return lrun_fail(LRUN_E_FORMAT, "%s: \"%s\" must be a whole number from 0 to 2^53, got %g", file, k->hf,
                             v->valuedouble);
        return lrun_fail(LRUN_E_FORMAT, "%s: \"%s\" must be a whole number from 0 to 2^53", file, k->hf);
    case LRUN_HF_FLOAT:
        if (!cJSON_IsNumber(v)) return lrun_fail(LRUN_E_FORMAT, "%s: \"%s\" must be a number", file, k->hf);
        return lrun_gguf_writer_set_f32(w, key, (float)v->valuedouble);
    case LRUN_HF_BOOL:
        if (!cJSON_IsBool(v)) return lrun_fail(LRUN_E_FORMAT, "%s: \"%s\" must be true or false", file, k->hf);
        return lrun_gguf_writer_set_bool(w, key, cJSON_IsTrue(v));
    }
    return LRUN_OK;
}

/* rope.dimension_count: head_dim (or hidden/heads) × partial_rotary_factor, when that is given. */
static lrun_status put_rotary(lrun_gguf_writer *w, const char *file, const char *arch, const cJSON *cfg)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(cfg, "partial_rotary_factor");
    if (!f || cJSON_IsNull(f)) return LRUN_OK;
    uint64_t hd = 0, embd = 0, heads = 0;
    if (!json_whole(cJSON_GetObjectItemCaseSensitive(cfg, "head_dim"), &hd) &&
        json_whole(cJSON_GetObjectItemCaseSensitive(cfg, "hidden_size"), &embd) &&
        json_whole(cJSON_GetObjectItemCaseSensitive(cfg, "num_attention_heads"), &heads) && heads)
        hd = embd / heads;
    if (!cJSON_IsNumber(f) || !(f->valuedouble > 0 && f->valuedouble <= 1) || hd == 0)
        return lrun_fail(LRUN_E_FORMAT, "%s: \"partial_rotary_factor\" must be in (0, 1] with a known head size", file);
    char key[128];
    snprintf(key, sizeof key, "%s.rope.dimension_count", arch);
    return set_int(w, key, (uint64_t)((double)hd * f->valuedouble));
}

/* The RoPE settings object: rope_scaling, or transformers 5's rope_parameters
 * (which also carries rope_theta); NULL when neither. */
static const cJSON *rope_object(const cJSON *cfg)
{
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_parameters");
    if (!rs || cJSON_IsNull(rs)) return NULL;
    /* transformers 5's gemma3 keeps one per layer type: the global blocks' is
     * the model's RoPE (model_hf_arch.c checks the local one) */
    const cJSON *full = cJSON_GetObjectItemCaseSensitive(rs, "full_attention");
    return cJSON_IsObject(full) ? full : rs;
}

/* rope_theta inside rope_parameters, when the top level has none. */
static lrun_status put_rope_theta(lrun_gguf_writer *w, const char *arch, const cJSON *cfg)
{
    const cJSON *rs = rope_object(cfg);
    const cJSON *theta = rs ? cJSON_GetObjectItemCaseSensitive(rs, "rope_theta") : NULL;
    if (cJSON_GetObjectItemCaseSensitive(cfg, "rope_theta") || !cJSON_IsNumber(theta)) return LRUN_OK;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    return lrun_gguf_writer_set_f32(w, key, (float)theta->valuedouble);
}

/* rope_scaling: linear is a key; llama3 becomes RoPE factors (hf_rope_llama3);
 * any other type is passed on so the loader names it as unsupported. */
static lrun_status put_rope_scaling(lrun_gguf_writer *w, const char *file, const char *arch, const cJSON *cfg)
{
    const cJSON *rs = rope_object(cfg);
    if (!rs) return LRUN_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(type)) type = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsObject(rs) || !cJSON_IsString(type))
        return lrun_fail(LRUN_E_FORMAT, "%s: \"rope_scaling\" must be an object with a \"rope_type\"", file);
    if (strcmp(type->valuestring, "llama3") == 0 || strcmp(type->valuestring, "default") == 0) return LRUN_OK;
    if (lrun_hf_is_longrope(rs)) return lrun_hf_put_longrope_keys(w, file, arch, cfg, rs); /* factors: tensors */
    if (strcmp(type->valuestring, "yarn") == 0) return lrun_hf_put_yarn_keys(w, file, arch, cfg, rs);
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    lrun_status st = lrun_gguf_writer_set_str(w, key, type->valuestring);
    const cJSON *factor = cJSON_GetObjectItemCaseSensitive(rs, "factor");
    if (st == LRUN_OK && cJSON_IsNumber(factor)) {
        snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
        st = lrun_gguf_writer_set_f32(w, key, (float)factor->valuedouble);
    }
    return st;
}

/* An id or a list of ids as an i32 array under key. */
static lrun_status put_ids(lrun_gguf_writer *w, const char *file, const char *key, const cJSON *v)
{
    int32_t ids[64];
    int n = 0;
    uint64_t u;
    if (json_whole(v, &u) && u <= INT32_MAX) ids[n++] = (int32_t)u;
    else if (cJSON_IsArray(v))
        for (const cJSON *c = v->child; c && n < 64; c = c->next) {
            if (!json_whole(c, &u) || u > INT32_MAX)
                return lrun_fail(LRUN_E_FORMAT, "%s: \"%s\" must hold token ids", file, key);
            ids[n++] = (int32_t)u;
        }
    else return lrun_fail(LRUN_E_FORMAT, "%s: \"%s\" must be a token id or a list of them", file, key);
    return lrun_gguf_writer_set_arr_i32(w, key, ids, n);
}

/* config.json: bos/eos ids as the tokenizer keys a GGUF would carry. */
static lrun_status put_special_ids(lrun_gguf_writer *w, const cJSON *cfg)
{
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(cfg, "bos_token_id");
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id");
    uint64_t u;
    lrun_status st = LRUN_OK;
    if (json_whole(bos, &u) && u <= INT32_MAX) st = lrun_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)u);
    if (st == LRUN_OK && cJSON_IsArray(eos)) eos = eos->child; /* the first; the list goes to generation.* */
    if (st == LRUN_OK && json_whole(eos, &u) && u <= INT32_MAX)
        st = lrun_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)u);
    return st;
}

/* generation_config.json → "generation.<key>", read by lua/lrun/generate.lua
 * as generate()'s defaults, as transformers' GenerationConfig supplies them. */
static lrun_status put_generation(lrun_gguf_writer *w, const char *file, const cJSON *gen, const cJSON *cfg)
{
    static const struct { const char *key; lrun_hf_kind kind; } keys[] = {
        {"temperature", LRUN_HF_FLOAT}, {"top_p", LRUN_HF_FLOAT}, {"top_k", LRUN_HF_INT},
        {"min_p", LRUN_HF_FLOAT}, {"do_sample", LRUN_HF_BOOL}, {"max_new_tokens", LRUN_HF_INT},
        {"repetition_penalty", LRUN_HF_FLOAT},
    };
    lrun_status st = LRUN_OK;
    for (size_t i = 0; gen && st == LRUN_OK && i < sizeof keys / sizeof keys[0]; i++) {
        const lrun_hf_key k = {NULL, keys[i].key, keys[i].key, keys[i].kind};
        st = put_key(w, file, "generation", gen, &k);
    }
    /* eos ids: generation_config's, else config.json's (transformers does the same) */
    const cJSON *eos = gen ? cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id") : NULL;
    if (!eos || cJSON_IsNull(eos)) eos = cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id");
    if (st == LRUN_OK && eos && !cJSON_IsNull(eos)) st = put_ids(w, file, "generation.eos_token_id", eos);
    return st;
}

/* chat_template from tokenizer_config.json (a string; the list form names templates). */
static lrun_status put_chat_template(lrun_gguf_writer *w, const cJSON *tcfg)
{
    const cJSON *t = tcfg ? cJSON_GetObjectItemCaseSensitive(tcfg, "chat_template") : NULL;
    if (cJSON_IsString(t)) return lrun_gguf_writer_set_str(w, "tokenizer.chat_template", t->valuestring);
    for (const cJSON *c = cJSON_IsArray(t) ? t->child : NULL; c; c = c->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        const cJSON *body = cJSON_GetObjectItemCaseSensitive(c, "template");
        if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0 && cJSON_IsString(body))
            return lrun_gguf_writer_set_str(w, "tokenizer.chat_template", body->valuestring);
    }
    return LRUN_OK;
}

/* Every key the model's metadata gets from the directory's JSON files. */
static lrun_status put_all(lrun_gguf_writer *w, const char *file, const char *arch, const cJSON *cfg,
                           const cJSON *gen, const cJSON *tcfg)
{
    lrun_status st = lrun_gguf_writer_set_str(w, "general.architecture", arch);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_str(w, "general.file_type_hf", "safetensors");
    for (int i = 0; st == LRUN_OK && lrun_hf_key_at(i); i++) st = put_key(w, file, arch, cfg, lrun_hf_key_at(i));
    if (st == LRUN_OK) st = put_rotary(w, file, arch, cfg);
    if (st == LRUN_OK) st = put_rope_theta(w, arch, cfg);
    if (st == LRUN_OK) st = put_rope_scaling(w, file, arch, cfg);
    if (st == LRUN_OK) st = put_special_ids(w, cfg);
    if (st == LRUN_OK) st = put_generation(w, file, gen, cfg);
    if (st == LRUN_OK) st = put_chat_template(w, tcfg);
    return st;
}

/* Writes the metadata as a GGUF of no tensors into an anonymous memory file
 * and opens it as m->gguf. */
static lrun_status write_metadata(lrun_model *m, const char *file, const char *arch, const cJSON *cfg,
                                  const cJSON *gen, const cJSON *tcfg)
{
    const int fd = memfd_create("lrun-hf-config", MFD_CLOEXEC);
    if (fd < 0) return lrun_fail(LRUN_E_IO, "%s: cannot make a memory file for the metadata: %s", file, strerror(errno));
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd); /* the writer and the reader take paths */
    lrun_gguf_writer *w = NULL;
    lrun_status st = lrun_gguf_writer_open(&w, path);
    if (st == LRUN_OK) st = put_all(w, file, arch, cfg, gen, tcfg);
    if (st == LRUN_OK) st = lrun_gguf_writer_finish(w);
    lrun_gguf_writer_free(w);
    if (st == LRUN_OK) st = lrun_gguf_open(&m->gguf, path);
    close(fd); /* the reader's mapping keeps the bytes */
    return st;
}

// ---------------------------------------------------------------- weights


// ---------------------------------------------------------------- FP8 weights

/* 1 when GGUF tensor name is a fused matrix the loader splits (phi3's
 * attn_qkv): its parts are row ranges of its bytes, so an FP8 one is
 * widened at load (model_fp8.h). */
static int is_split_source(const lrun_arch *a, const char *name)
{
    int layer;
    if (sscanf(name, "blk.%d.", &layer) != 1) return 0;
    for (int i = 0; i < a->n_splits; i++) {
        char full[96];
        snprintf(full, sizeof full, lrun_arch_tensor_find(a, a->splits[i].fused)->name, layer);
        if (strcmp(full, name) == 0) return 1;
    }
    return 0;
}

static lrun_status dtype_of(const lrun_st_tensor *t, const char *file, lrun_dtype *out)
{
    switch (t->dtype) {
    case LRUN_ST_F32: *out = LRUN_DTYPE_F32; return LRUN_OK;
    case LRUN_ST_F16: *out = LRUN_DTYPE_F16; return LRUN_OK;
    case LRUN_ST_BF16: *out = LRUN_DTYPE_BF16; return LRUN_OK;
    case LRUN_ST_F8_E4M3: *out = LRUN_DTYPE_BF16; return LRUN_OK; /* widened to bf16 (model_fp8.h) */
    default:
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: tensor '%s' is %s; lrun computes with F32, F16 and BF16 weights "
                         "(and widens F8_E4M3)",
                         file, t->name, lrun_st_dtype_name(t->dtype));
    }
}

/* 1 when the element type's alignment holds (safetensors does not promise it;
 * the CPU kernels read whole floats). */
static int aligned_for(const void *p, lrun_dtype d)
{
    return ((uintptr_t)p % (d == LRUN_DTYPE_F32 ? 4u : 2u)) == 0;
}

/* The HF tensors under their GGUF names, shapes reversed (row-major [out,
 * in] is ne {in, out}), pointing into the shards' mappings. lm_head is left
 * out when config ties it to the embedding (transformers ignores it then). */
static lrun_status add_each(lrun_model *m, const char *file, int tied, int extra, const int block[2])
{
    const lrun_st_set *s = m->st;
    lrun_status st = lrun_model_tensors_init(m, lrun_st_set_count(s) + extra +
                                                    lrun_hf_expert_records(m->arch, m->info.n_layer));
    int64_t n = 0;
    for (int64_t i = 0; st == LRUN_OK && i < lrun_st_set_count(s); i++) {
        const lrun_st_tensor *t = lrun_st_set_tensor(s, i);
        if (lrun_hf_is_expert_tensor(m->arch, t->name)) continue; /* stacked below */
        char name[96];
        const int mapped = lrun_hf_tensor_to_gguf(m->arch->name, t->name, name, sizeof name);
        if (mapped < 0 || (tied && mapped > 0 && strcmp(name, "output.weight") == 0)) continue;
        if (mapped == 0 && lrun_fp8_is_companion(s, t->name)) continue;
        if (mapped == 0)
            return lrun_fail(LRUN_E_UNSUPPORTED, "%s: tensor '%s' has no GGUF name for %s in arch/hf.c", file,
                             t->name, m->arch->name);
        lrun_dtype dtype;
        if ((st = dtype_of(t, file, &dtype)) != LRUN_OK) return st;
        const void *data = t->data;
        if (t->dtype == LRUN_ST_F8_E4M3 && strstr(name, "norm"))
            return lrun_fail(LRUN_E_UNSUPPORTED, "%s: tensor '%s' is an F8_E4M3 norm; FP8 checkpoints quantize "
                             "the linear layers only", file, t->name);
        /* no bytes yet: widened at the end of add_tensors, or where it is placed (model_fp8.h) */
        const int fp8 = t->dtype == LRUN_ST_F8_E4M3;
        if (fp8 && (st = lrun_model_fp8_add(m, file, t, block, n, is_split_source(m->arch, name))) != LRUN_OK)
            return st;
        if (fp8) data = NULL;
        if ((st = lrun_hf_shift_norm(m, file, t, name, &dtype, &data)) != LRUN_OK) return st; /* gemma's 1 + w */
        if (!aligned_for(data, dtype))
            return lrun_fail(LRUN_E_UNSUPPORTED, "%s: tensor '%s' starts at a byte not aligned for %s", file,
                             t->name, lrun_dtype_name(dtype));
        if (t->ndim < 1 || t->ndim > LRUN_MAX_DIMS)
            return lrun_fail(LRUN_E_UNSUPPORTED, "%s: tensor '%s' has %d dimensions (1 to %d)", file, t->name,
                             t->ndim, LRUN_MAX_DIMS);
        int64_t ne[LRUN_MAX_DIMS] = {1, 1, 1, 1};
        for (int d = 0; d < t->ndim; d++) ne[d] = t->shape[t->ndim - 1 - d];
        st = lrun_model_add_tensor(m, n, name, dtype, t->ndim, ne, data);
        if (st != LRUN_OK) return lrun_fail_context(st, "%s (HF tensor '%s')", file, t->name);
        m->tensors[n].fp8_pending = fp8;
        m->tensors[n++].maker = fp8 ? &m->fp8_maker : NULL;
    }
    if (st == LRUN_OK) st = lrun_hf_add_experts(m, file, &n); /* the GGUF's stacked experts (model_hf_moe.h) */
    m->n_tensors = n;
    return st;
}

/* add_each, then the FP8 weights widened at load, in one loader run. */
static lrun_status add_tensors(lrun_model *m, const char *file, int tied, int extra, const int block[2])
{
    const lrun_status st = add_each(m, file, tied, extra, block);
    return st == LRUN_OK ? lrun_model_fp8_settle(m, 1, file) : st;
}

/* Llama 3's rope_scaling as per-frequency divisors: the rope_freqs tensor
 * llama.cpp's converter writes (model/rope_scaling.h). */
static lrun_status add_rope_llama3(lrun_model *m, const char *file, const cJSON *cfg)
{
    const cJSON *rs = rope_object(cfg);
    const cJSON *type = rs ? cJSON_GetObjectItemCaseSensitive(rs, "rope_type") : NULL;
    if (!cJSON_IsString(type)) type = rs ? cJSON_GetObjectItemCaseSensitive(rs, "type") : NULL;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "llama3") != 0) return LRUN_OK;
    const char *names[] = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"};
    double v[4];
    for (int i = 0; i < 4; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(rs, names[i]);
        if (!cJSON_IsNumber(x) || !(x->valuedouble > 0))
            return lrun_fail(LRUN_E_FORMAT, "%s: rope_scaling llama3 needs \"%s\" > 0", file, names[i]);
        v[i] = x->valuedouble;
    }
    if (!(v[2] > v[1])) return lrun_fail(LRUN_E_FORMAT, "%s: rope_scaling: high_freq_factor must exceed low_freq_factor", file);
    const int64_t half = m->info.n_rot / 2;
    float *f = lrun_model_own(m, (size_t)half * sizeof *f, "RoPE factors");
    if (!f) return lrun_fail_context(LRUN_E_OOM, "%s", file);
    lrun_rope_llama3_factors(f, m->info.n_rot, m->info.rope_freq_base, v[0], v[1], v[2], v[3]);
    const int64_t ne[1] = {half};
    return lrun_model_add_tensor(m, m->n_tensors++, "rope_freqs.weight", LRUN_DTYPE_F32, 1, ne, f);
}

// ---------------------------------------------------------------- tokenizer

/* The tokenizer of an HF directory: tokenizer.json, with
 * tokenizer_config.json for bos/eos and add_bos when present (the reader is
 * runtime/text/tokjson.c). A directory without tokenizer.json loads without
 * a tokenizer: ids still generate, and lua/lrun/model.lua says so when asked
 * to encode. */
static lrun_status load_tokenizer(lrun_model *m, const char *dir)
{
    char tok[4096], cfg[4096];
    if (snprintf(tok, sizeof tok, "%s/tokenizer.json", dir) >= (int)sizeof tok ||
        snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir) >= (int)sizeof cfg)
        return lrun_fail(LRUN_E_ARG, "loading %s: the directory's path is too long", dir);
    struct stat st;
    if (stat(tok, &st) != 0) return LRUN_OK;
    return lrun_tokenizer_load_json(&m->tokenizer, tok, stat(cfg, &st) == 0 ? cfg : NULL);
}

// ---------------------------------------------------------------- progress over shards

typedef struct open_progress {
    int show;
    const char *what;
} open_progress;

static void on_shard(void *ctx, int i, int n, const char *path, size_t bytes)
{
    const open_progress *p = ctx;
    if (!p->show || !isatty(2) || n < 2) return;
    const char *slash = strrchr(path, '/');
    fprintf(stderr, "\rchecked %s shard %d/%d (%s, %.1f MiB)%s", p->what, i + 1, n, slash ? slash + 1 : path,
            (double)bytes / 1048576.0, i + 1 == n ? "\n" : "");
    fflush(stderr);
}

// ---------------------------------------------------------------- load

static lrun_status open_weights(lrun_model *m, const hf_paths *p, int progress)
{
    open_progress op = {progress, p->dir};
    if (p->sharded) return lrun_st_set_open_index(&m->st, p->weights, on_shard, &op);
    return lrun_st_set_open_file(&m->st, p->weights);
}

/* The architecture config.json names (model_type, through arch/hf.c). */
static lrun_status find_arch(const char *file, const cJSON *cfg, const char **arch)
{
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    if (!cJSON_IsString(mt)) return lrun_fail(LRUN_E_FORMAT, "%s: no \"model_type\" string", file);
    *arch = lrun_hf_arch_for_model_type(mt->valuestring);
    if (!*arch || !lrun_arch_find(*arch)) {
        char known[256];
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: model_type '%s' is not supported (architectures: %s)", file,
                         mt->valuestring, lrun_arch_known_names(known, sizeof known));
    }
    return LRUN_OK;
}

/* quantization_config.quant_method, when present: "fp8" (block-scaled FP8
 * linear layers, model_fp8.h) or, for gpt-oss, "mxfp4" (its experts,
 * model_hf_gpt_oss.h); any other method's tensors lrun cannot read. */
static lrun_status check_quant_method(const lrun_model *m, const char *file, const cJSON *cfg)
{
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
    if (!qc || cJSON_IsNull(qc)) return LRUN_OK;
    const cJSON *qm = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
    if (!cJSON_IsObject(qc) || !cJSON_IsString(qm))
        return lrun_fail(LRUN_E_FORMAT, "%s: \"quantization_config\" must be an object with a \"quant_method\" string",
                         file);
    if (strcmp(qm->valuestring, "fp8") == 0 || (strcmp(qm->valuestring, "mxfp4") == 0 && lrun_hf_is_gpt_oss(m)))
        return LRUN_OK;
    return lrun_fail(LRUN_E_UNSUPPORTED, "%s: quantization_config.quant_method '%s' is not supported for %s "
                     "(lrun reads \"fp8\"%s)", file, qm->valuestring, m->arch->name,
                     lrun_hf_is_gpt_oss(m) ? " and \"mxfp4\"" : "");
}

lrun_status lrun_model_open_hf(lrun_model *m, const char *path, int progress)
{
    hf_paths p;
    lrun_status st = resolve(&p, path);
    if (st != LRUN_OK) return st;
    char file[PATH_CAP + 16];
    snprintf(file, sizeof file, "%s/config.json", p.dir);
    cJSON *cfg = read_json(p.dir, "config.json", &st), *gen = NULL, *tcfg = NULL;
    if (!cfg && st == LRUN_OK) st = lrun_fail(LRUN_E_IO, "%s: missing (an HF model needs its config)", file);
    if (st == LRUN_OK) gen = read_json(p.dir, "generation_config.json", &st);
    if (st == LRUN_OK) tcfg = read_json(p.dir, "tokenizer_config.json", &st);
    const char *arch = NULL;
    if (st == LRUN_OK) st = find_arch(file, cfg, &arch);
    if (st == LRUN_OK) st = write_metadata(m, file, arch, cfg, gen, tcfg);
    if (st == LRUN_OK) st = lrun_model_read_hparams(m);
    if (st == LRUN_OK) st = lrun_hf_gemma_config(m, file, cfg);
    if (st == LRUN_OK) st = lrun_hf_moe_config(m, file, cfg);
    if (st == LRUN_OK) st = lrun_hf_gpt_oss_config(m, file, cfg);
    if (st == LRUN_OK) st = check_quant_method(m, file, cfg);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(cfg, "vocab_size");
    uint64_t n_vocab = 0;
    if (st == LRUN_OK && (!json_whole(vocab, &n_vocab) || n_vocab < 1 || n_vocab > INT32_MAX))
        st = lrun_fail(LRUN_E_FORMAT, "%s: \"vocab_size\" must be a whole number in [1, 2^31)", file);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings");
    const int tied = !tie || cJSON_IsTrue(tie); /* transformers' default is tied */
    if (st == LRUN_OK) {
        m->info.n_vocab = (int64_t)n_vocab;
        m->info.rope_style = LRUN_ROPE_STYLE_HALF; /* HF layout: q/k not permuted */
        st = open_weights(m, &p, progress);
    }
    int block[2] = {128, 128}; /* quantization_config.weight_block_size of block-scaled FP8 */
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
    const cJSON *wbs = qc ? cJSON_GetObjectItemCaseSensitive(qc, "weight_block_size") : NULL;
    if (cJSON_GetArraySize(wbs) == 2 && cJSON_IsNumber(wbs->child) && cJSON_IsNumber(wbs->child->next) &&
        wbs->child->valuedouble >= 1 && wbs->child->next->valuedouble >= 1 && wbs->child->valuedouble < 1e6 &&
        wbs->child->next->valuedouble < 1e6)
        block[0] = (int)wbs->child->valuedouble, block[1] = (int)wbs->child->next->valuedouble;
    if (st == LRUN_OK) st = add_tensors(m, p.weights, tied, 3, block); /* room for RoPE factors */
    if (st == LRUN_OK) st = add_rope_llama3(m, file, cfg);
    if (st == LRUN_OK) st = lrun_hf_add_longrope(m, file, rope_object(cfg));
    if (st == LRUN_OK && !tied && !m->output)
        st = lrun_fail(LRUN_E_FORMAT, "%s: tie_word_embeddings is false but the weights have no lm_head.weight", file);
    if (st == LRUN_OK) st = lrun_model_check_tensors(m);
    if (st == LRUN_OK) st = load_tokenizer(m, p.dir);
    cJSON_Delete(cfg);
    cJSON_Delete(gen);
    cJSON_Delete(tcfg);
    return st;
}
