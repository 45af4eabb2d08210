/* model_hf_moe.c — see model_hf_moe.h. */
#include "model/model_hf_moe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"
#include "model/model_hf_gpt_oss.h"

enum { GATE, UP, DOWN, N_PROJ };

/* One matrix per expert: "%d" the block, then the expert. */
static const struct { const char *arch; const char *proj[N_PROJ]; } per_expert[] = {
    {"qwen3moe", {"model.layers.%d.mlp.experts.%d.gate_proj.weight", "model.layers.%d.mlp.experts.%d.up_proj.weight",
                  "model.layers.%d.mlp.experts.%d.down_proj.weight"}},
    /* Mixtral: w1 the gate, w3 up, w2 down */
    {"llama", {"model.layers.%d.block_sparse_moe.experts.%d.w1.weight",
               "model.layers.%d.block_sparse_moe.experts.%d.w3.weight",
               "model.layers.%d.block_sparse_moe.experts.%d.w2.weight"}},
};

/* transformers 5's fused experts of block %d (either family, either module name). */
static const char *const fused_prefix[] = {"model.layers.%d.mlp.experts.", "model.layers.%d.block_sparse_moe.experts."};

static const lrun_arch_tensor stacked_id[N_PROJ] = {LRUN_ARCH_TENSOR_GATE_EXPS, LRUN_ARCH_TENSOR_UP_EXPS,
                                                    LRUN_ARCH_TENSOR_DOWN_EXPS};

int lrun_hf_is_expert_tensor(const lrun_arch *a, const char *name)
{
    return lrun_arch_has_experts(a) && strstr(name, ".experts.") != NULL;
}

int64_t lrun_hf_expert_records(const lrun_arch *a, int64_t n_layer)
{
    /* gpt-oss: the three matrices and their three biases */
    return lrun_arch_has_experts(a) ? (a->moe_oai ? 2 : 1) * N_PROJ * n_layer : 0;
}

int lrun_hf_expert_name(const char *arch, const char *gguf_name, int e, char *out, size_t cap)
{
    static const char *const proj[N_PROJ] = {"gate", "up", "down"};
    int l = -1, end = 0;
    char which[8];
    if (sscanf(gguf_name, "blk.%d.ffn_%7[a-z]_exps.weight%n", &l, which, &end) != 2 || gguf_name[end] || l < 0)
        return 0;
    for (size_t i = 0; arch && i < sizeof per_expert / sizeof per_expert[0]; i++)
        for (int p = 0; strcmp(per_expert[i].arch, arch) == 0 && p < N_PROJ; p++)
            if (strcmp(proj[p], which) == 0) {
                const int n = snprintf(out, cap, per_expert[i].proj[p], l, e);
                return n > 0 && (size_t)n < cap;
            }
    return 0;
}

// ---------------------------------------------------------------- the sources of one stacked tensor

/* Where expert e's matrix of one projection and block lies: n_expert slices
 * of slice_bytes each, in shard files[e] (for telling whether the slices
 * abut in one mapping). */
typedef struct expert_slices {
    const uint8_t **at;         /* (n_expert) each slice's first byte, in a read-only mapping */
    int *files;                 /* (n_expert) its shard */
    size_t slice_bytes;         /* rows · cols · element size */
    lrun_st_dtype dtype;
} expert_slices;

typedef struct stack_ctx {
    lrun_model *m;
    const char *file;           /* the weights' path, for messages */
    unsigned char *used;        /* (lrun_st_set_count) 1: an expert tensor taken */
    expert_slices s;
} stack_ctx;

static size_t elem_bytes(lrun_st_dtype d) { return d == LRUN_ST_F32 ? 4 : 2; }

/* The lrun type of the experts' st type d; name (a tensor) for the message. */
static lrun_status float_dtype(const stack_ctx *c, const char *name, lrun_st_dtype d, lrun_dtype *out)
{
    switch (d) {
    case LRUN_ST_F32: *out = LRUN_DTYPE_F32; return LRUN_OK;
    case LRUN_ST_F16: *out = LRUN_DTYPE_F16; return LRUN_OK;
    case LRUN_ST_BF16: *out = LRUN_DTYPE_BF16; return LRUN_OK;
    default:
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: expert tensor '%s' is %s; experts load from F32, F16 or BF16",
                         c->file, name, lrun_st_dtype_name(d));
    }
}

/* The set's tensor called name, marked used, or NULL. */
static const lrun_st_tensor *take(stack_ctx *c, const char *name)
{
    const int64_t i = lrun_st_set_find(c->m->st, name);
    if (i < 0) return NULL;
    c->used[i] = 1;
    return lrun_st_set_tensor(c->m->st, i);
}

/* transformers 5's fused tensor of block l for projection p, or NULL. */
static const lrun_st_tensor *find_fused(stack_ctx *c, int l, int p)
{
    for (size_t k = 0; k < sizeof fused_prefix / sizeof fused_prefix[0]; k++) {
        char name[160];
        const int n = snprintf(name, sizeof name, fused_prefix[k], l);
        snprintf(name + n, sizeof name - (size_t)n, "%s", p == DOWN ? "down_proj" : "gate_up_proj");
        const lrun_st_tensor *t = take(c, name);
        if (t) return t;
    }
    return NULL;
}

/* Slices from fused t: [E, 2 rows, cols] for gate (first rows) and up, [E, rows, cols] for down. */
static lrun_status slices_fused(stack_ctx *c, const lrun_st_tensor *t, int p, int64_t rows, int64_t cols)
{
    const int64_t E = c->m->info.n_expert, per = p == DOWN ? rows : 2 * rows;
    if (t->ndim != 3 || t->shape[0] != E || t->shape[1] != per || t->shape[2] != cols)
        return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s' must be [%lld, %lld, %lld] (experts, rows, columns)", c->file,
                         t->name, (long long)E, (long long)per, (long long)cols);
    c->s.dtype = t->dtype;
    c->s.slice_bytes = (size_t)(rows * cols) * elem_bytes(t->dtype);
    const uint8_t *base = t->data;
    for (int64_t e = 0; e < E; e++) {
        c->s.at[e] = base + (size_t)e * (size_t)(per * cols) * elem_bytes(t->dtype) + (p == UP ? c->s.slice_bytes : 0);
        c->s.files[e] = t->file;
    }
    return LRUN_OK;
}

/* Slices from one matrix [rows, cols] per expert. */
static lrun_status slices_per_expert(stack_ctx *c, const char *pattern, int l, int64_t rows, int64_t cols)
{
    for (int64_t e = 0; e < c->m->info.n_expert; e++) {
        char name[160];
        snprintf(name, sizeof name, pattern, l, (int)e);
        const lrun_st_tensor *t = take(c, name);
        if (!t)
            return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s' (expert %lld of block %d) is missing", c->file, name,
                             (long long)e, l);
        if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
            return lrun_fail(LRUN_E_FORMAT, "%s: tensor '%s' must be [%lld, %lld]", c->file, name, (long long)rows,
                             (long long)cols);
        if (e > 0 && t->dtype != c->s.dtype)
            return lrun_fail(LRUN_E_UNSUPPORTED, "%s: tensor '%s' is %s, expert 0's is %s (one type per projection)",
                             c->file, name, lrun_st_dtype_name(t->dtype), lrun_st_dtype_name(c->s.dtype));
        c->s.dtype = t->dtype;
        c->s.slice_bytes = t->nbytes;
        c->s.at[e] = t->data;
        c->s.files[e] = t->file;
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- stacking

/* 1 when the slices lie in expert order, back to back, in one shard, and
 * aligned for the element type: the stacked tensor is a view of the file. */
static int abut(const expert_slices *s, int64_t n_expert)
{
    if ((uintptr_t)s->at[0] % elem_bytes(s->dtype) != 0) return 0;
    for (int64_t e = 1; e < n_expert; e++)
        if (s->files[e] != s->files[0] || s->at[e] != s->at[0] + (size_t)e * s->slice_bytes) return 0;
    return 1;
}

void lrun_hf_release_pages(const void *p, size_t len)
{
    const long pg = sysconf(_SC_PAGESIZE);
    const uintptr_t page = pg > 0 ? (uintptr_t)pg : 4096, a = (uintptr_t)p;
    const uintptr_t b = (a + page - 1) / page * page, e = (a + len) / page * page;
    if (e > b) (void)madvise((void *)b, (size_t)(e - b), MADV_DONTNEED);
}

void lrun_hf_huge_pages(void *p, size_t len)
{
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20, a = (uintptr_t)p;
    const uintptr_t b = (a + huge - 1) / huge * huge, e = (a + len) / huge * huge;
    if (e > b) (void)madvise((void *)b, (size_t)(e - b), MADV_HUGEPAGE);
#else
    (void)p, (void)len;
#endif
}

/* The stacked bytes: a view when the slices abut, else a copy the model owns. */
static lrun_status stack_bytes(stack_ctx *c, const char *gguf_name, const void **out)
{
    const int64_t E = c->m->info.n_expert;
    if (abut(&c->s, E)) {
        *out = c->s.at[0];
        return LRUN_OK;
    }
    uint8_t *dst = lrun_model_own(c->m, (size_t)E * c->s.slice_bytes, "experts stacked from an HF directory");
    if (!dst) return lrun_fail_context(LRUN_E_OOM, "%s: tensor '%s'", c->file, gguf_name);
    for (int64_t e = 0; e < E; e++) {
        memcpy(dst + (size_t)e * c->s.slice_bytes, c->s.at[e], c->s.slice_bytes);
        lrun_hf_release_pages(c->s.at[e], c->s.slice_bytes);
    }
    *out = dst;
    return LRUN_OK;
}

/* blk.l.ffn_<p>_exps.weight from the fused tensor when the block has one, else from one matrix per expert. */
static lrun_status stack_one(stack_ctx *c, const char *const *patterns, int l, int p, int64_t *n)
{
    const lrun_model_info *in = &c->m->info;
    const int64_t rows = p == DOWN ? in->n_embd : in->n_ff, cols = p == DOWN ? in->n_ff : in->n_embd;
    const lrun_st_tensor *fused = find_fused(c, l, p);
    lrun_status st = fused ? slices_fused(c, fused, p, rows, cols) : slices_per_expert(c, patterns[p], l, rows, cols);
    char name[96];
    snprintf(name, sizeof name, lrun_arch_tensor_find(c->m->arch, stacked_id[p])->name, l);
    lrun_dtype dtype = LRUN_DTYPE_F32;
    if (st == LRUN_OK) st = float_dtype(c, fused ? fused->name : name, c->s.dtype, &dtype);
    const void *data = NULL;
    if (st == LRUN_OK) st = stack_bytes(c, name, &data);
    const int64_t ne[3] = {cols, rows, in->n_expert}; /* GGUF order: expert e the rows [e rows, (e+1) rows) */
    if (st == LRUN_OK) st = lrun_model_add_tensor(c->m, (*n)++, name, dtype, 3, ne, data);
    return st;
}

/* The first expert tensor of the file no stacked tensor took, named. */
static lrun_status check_all_used(const stack_ctx *c)
{
    const lrun_st_set *s = c->m->st;
    for (int64_t i = 0; i < lrun_st_set_count(s); i++) {
        const lrun_st_tensor *t = lrun_st_set_tensor(s, i);
        if (!c->used[i] && lrun_hf_is_expert_tensor(c->m->arch, t->name))
            return lrun_fail(LRUN_E_UNSUPPORTED, "%s: tensor '%s' is not an expert matrix lrun knows for %s (%lld "
                             "experts, one tensor each or transformers 5's fused gate_up_proj/down_proj)",
                             c->file, t->name, c->m->arch->name, (long long)c->m->info.n_expert);
    }
    return LRUN_OK;
}

lrun_status lrun_hf_add_experts(lrun_model *m, const char *file, int64_t *n)
{
    if (!lrun_arch_has_experts(m->arch)) return LRUN_OK;
    if (lrun_hf_is_gpt_oss(m)) return lrun_hf_gpt_oss_add_experts(m, file, n); /* its own layouts */
    const char *const *patterns = NULL;
    for (size_t i = 0; i < sizeof per_expert / sizeof per_expert[0]; i++)
        if (strcmp(per_expert[i].arch, m->arch->name) == 0) patterns = per_expert[i].proj;
    if (!patterns)
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: no HF expert names for %s in model_hf_moe.c", file, m->arch->name);
    const int64_t E = m->info.n_expert;
    stack_ctx c = {m, file, calloc((size_t)lrun_st_set_count(m->st) + 1, 1),
                   {calloc((size_t)E, sizeof(uint8_t *)), calloc((size_t)E, sizeof(int)), 0, LRUN_ST_F32}};
    lrun_status st = c.used && c.s.at && c.s.files ? LRUN_OK : lrun_fail_oom(0, 0, "%s: expert tables", file);
    for (int l = 0; st == LRUN_OK && l < m->info.n_layer; l++)
        for (int p = 0; st == LRUN_OK && p < N_PROJ; p++) st = stack_one(&c, patterns, l, p, n);
    if (st == LRUN_OK) st = check_all_used(&c);
    free(c.used);
    free(c.s.at);
    free(c.s.files);
    return st;
}

// ---------------------------------------------------------------- config.json

lrun_status lrun_hf_moe_config(const lrun_model *m, const char *file, const cJSON *cfg)
{
    if (!lrun_arch_has_experts(m->arch) || strcmp(m->arch->name, "qwen3moe") != 0) return LRUN_OK;
    /* transformers' Qwen3MoeConfig defaults norm_topk_prob to false; the released models set it */
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "norm_topk_prob")))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"norm_topk_prob\" must be true (lrun renormalises the top-k "
                         "probabilities, as llama.cpp's qwen3moe); it is false or absent", file);
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(cfg, "decoder_sparse_step");
    if (step && !cJSON_IsNull(step) && !(cJSON_IsNumber(step) && step->valuedouble == 1))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"decoder_sparse_step\" must be 1: lrun runs blocks that all "
                         "route to experts", file);
    const cJSON *dense = cJSON_GetObjectItemCaseSensitive(cfg, "mlp_only_layers");
    if (dense && !cJSON_IsNull(dense) && !(cJSON_IsArray(dense) && cJSON_GetArraySize(dense) == 0))
        return lrun_fail(LRUN_E_UNSUPPORTED, "%s: \"mlp_only_layers\" must be empty: lrun runs blocks that all "
                         "route to experts", file);
    return LRUN_OK;
}
