/* arch.c — the list of known architectures, and the checks that keep a
 * description's tables in agreement with each other. */
#include "arch/arch.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"

/* Every architecture lrun can run: a new one is a file in this folder and a line here. */
static const lrun_arch *const known[] = {
    &lrun_arch_llama,
    &lrun_arch_qwen2,
    &lrun_arch_qwen3,
    &lrun_arch_phi3,
    &lrun_arch_gemma2,
    &lrun_arch_gemma3,
    &lrun_arch_qwen3moe,
    &lrun_arch_gpt_oss,
};
#define N_KNOWN ((int)(sizeof known / sizeof known[0]))

const lrun_arch_tensor lrun_arch_block_vectors[LRUN_ARCH_N_BLOCK_VECTORS] = {
    LRUN_ARCH_TENSOR_ATTN_NORM, LRUN_ARCH_TENSOR_FFN_NORM, LRUN_ARCH_TENSOR_Q_BIAS, LRUN_ARCH_TENSOR_K_BIAS,
    LRUN_ARCH_TENSOR_V_BIAS,    LRUN_ARCH_TENSOR_O_BIAS,   LRUN_ARCH_TENSOR_Q_NORM, LRUN_ARCH_TENSOR_K_NORM,
    LRUN_ARCH_TENSOR_ATTN_POST_NORM, LRUN_ARCH_TENSOR_FFN_POST_NORM,
    /* gpt-oss's, after the others so theirs keep their places */
    LRUN_ARCH_TENSOR_ATTN_SINKS, LRUN_ARCH_TENSOR_GATE_INP_B, LRUN_ARCH_TENSOR_GATE_EXPS_B,
    LRUN_ARCH_TENSOR_UP_EXPS_B, LRUN_ARCH_TENSOR_DOWN_EXPS_B,
};

const lrun_arch *lrun_arch_find(const char *name)
{
    for (int i = 0; name && i < N_KNOWN; i++)
        if (strcmp(known[i]->name, name) == 0) return known[i];
    return NULL;
}

const lrun_arch *lrun_arch_find_moe(const char *name, int64_t n_expert)
{
    /* llama.cpp's llama architecture takes experts when the file has them (Mixtral) */
    if (n_expert > 0 && name && strcmp(name, "llama") == 0) return &lrun_arch_llama_moe;
    return lrun_arch_find(name);
}

int lrun_arch_has_experts(const lrun_arch *a)
{
    for (int i = 0; a && i < a->n_ops; i++)
        if (a->ops[i].kind == LRUN_ARCH_OP_MOE_FFN_ADD) return 1;
    return 0;
}

int lrun_arch_is_expert_tensor(lrun_arch_tensor id)
{
    return id == LRUN_ARCH_TENSOR_GATE_EXPS || id == LRUN_ARCH_TENSOR_UP_EXPS || id == LRUN_ARCH_TENSOR_DOWN_EXPS;
}

const lrun_arch *lrun_arch_known(int i) { return i >= 0 && i < N_KNOWN ? known[i] : NULL; }

const char *lrun_arch_known_names(char *buf, size_t cap)
{
    size_t n = 0;
    if (cap) buf[0] = '\0';
    for (int i = 0; i < N_KNOWN; i++) {
        const size_t len = strlen(known[i]->name);
        if (n + len + 3 > cap) break;
        if (i) memcpy(buf + n, ", ", 2), n += 2;
        memcpy(buf + n, known[i]->name, len + 1);
        n += len;
    }
    return buf;
}

lrun_arch_dim lrun_arch_buf_dim(lrun_arch_buf buf)
{
    switch (buf) {
    case LRUN_ARCH_BUF_X:
    case LRUN_ARCH_BUF_XN: return LRUN_ARCH_DIM_EMBD;
    case LRUN_ARCH_BUF_Q:
    case LRUN_ARCH_BUF_ATTN: return LRUN_ARCH_DIM_Q;
    case LRUN_ARCH_BUF_K:
    case LRUN_ARCH_BUF_V: return LRUN_ARCH_DIM_KV;
    case LRUN_ARCH_BUF_GATE:
    case LRUN_ARCH_BUF_UP: return LRUN_ARCH_DIM_FF;
    case LRUN_ARCH_BUF_ROUTER: return LRUN_ARCH_DIM_EXPERT;
    default: return LRUN_ARCH_DIM_NONE;
    }
}

const lrun_arch_tensor_desc *lrun_arch_tensor_find(const lrun_arch *a, lrun_arch_tensor id)
{
    for (int i = 0; i < a->n_tensors; i++)
        if (a->tensors[i].id == id) return &a->tensors[i];
    return NULL;
}

int lrun_arch_is_matrix(const lrun_arch *a, lrun_arch_tensor id)
{
    const lrun_arch_tensor_desc *d = lrun_arch_tensor_find(a, id);
    return d && d->ne[1] != LRUN_ARCH_DIM_NONE && d->role != LRUN_ROLE_BIAS;
}

/* gpt-oss's per-expert biases, which its MOE_FFN_ADD reads (moe_oai) without naming them. */
static int is_expert_bias(lrun_arch_tensor id)
{
    return id == LRUN_ARCH_TENSOR_GATE_EXPS_B || id == LRUN_ARCH_TENSOR_UP_EXPS_B || id == LRUN_ARCH_TENSOR_DOWN_EXPS_B;
}

const lrun_arch_split *lrun_arch_split_of(const lrun_arch *a, lrun_arch_tensor id)
{
    for (int i = 0; i < a->n_splits; i++)
        if (a->splits[i].fused == id) return &a->splits[i];
    return NULL;
}

int lrun_arch_is_split_part(const lrun_arch *a, lrun_arch_tensor id)
{
    for (int i = 0; i < a->n_splits; i++)
        for (int j = 0; j < LRUN_ARCH_OP_MAX_W && a->splits[i].parts[j] != LRUN_ARCH_TENSOR_NONE; j++)
            if (a->splits[i].parts[j] == id) return 1;
    return 0;
}

int lrun_arch_op_n_w(const lrun_arch_op *op)
{
    int n = 0;
    while (n < LRUN_ARCH_OP_MAX_W && op->w[n] != LRUN_ARCH_TENSOR_NONE) n++;
    return n;
}

// ---------------------------------------------------------------- norm folding

/* The outputs op writes (as many as its kind has: unused out[] slots are 0,
 * which is also the residual stream's buffer). */
static int op_n_out(const lrun_arch_op *op)
{
    switch (op->kind) {
    case LRUN_ARCH_OP_MATMUL:
    case LRUN_ARCH_OP_BIAS:
    case LRUN_ARCH_OP_HEAD_NORM: return lrun_arch_op_n_w(op);
    case LRUN_ARCH_OP_ROPE_STORE: return 3;
    case LRUN_ARCH_OP_MATMUL_SWIGLU:
    case LRUN_ARCH_OP_MATMUL_GEGLU: return 2;
    default: return 1;
    }
}

/* 1 when op reads buffer b: its input, and the outputs of the kinds that
 * update theirs in place (a bias, a head norm, RoPE, a residual add). The
 * experts' sum also reads the router's logits, which no field names: it
 * counts as reading every buffer. */
static int op_reads(const lrun_arch_op *op, lrun_arch_buf b)
{
    if (op->in == b || op->kind == LRUN_ARCH_OP_MOE_FFN_ADD) return 1;
    const int in_place = op->kind == LRUN_ARCH_OP_BIAS || op->kind == LRUN_ARCH_OP_HEAD_NORM ||
                         op->kind == LRUN_ARCH_OP_ROPE_STORE || op->kind == LRUN_ARCH_OP_MATMUL_ADD ||
                         op->kind == LRUN_ARCH_OP_MATMUL_NORM_ADD;
    for (int j = 0; in_place && j < op_n_out(op); j++)
        if (op->out[j] == b) return 1;
    return 0;
}

static int op_writes(const lrun_arch_op *op, lrun_arch_buf b)
{
    for (int j = 0; j < op_n_out(op); j++)
        if (op->out[j] == b) return 1;
    return 0;
}

static int is_product(lrun_arch_op_kind k)
{
    return k == LRUN_ARCH_OP_MATMUL || k == LRUN_ARCH_OP_MATMUL_ADD || k == LRUN_ARCH_OP_MATMUL_SWIGLU ||
           k == LRUN_ARCH_OP_MATMUL_GEGLU;
}

int lrun_arch_norm_folds(const lrun_arch *a, int i)
{
    if (!a || i < 0 || i + 1 >= a->n_ops) return 0; /* the last op's reader is another block's */
    const lrun_arch_op *norm = &a->ops[i], *next = &a->ops[i + 1];
    const lrun_arch_buf out = norm->out[0];
    if (norm->kind != LRUN_ARCH_OP_NORM || out == norm->in) return 0; /* in place: x itself changes */
    /* the product reads the norm's input instead, so it must not write it (x += W·norm(x)) */
    if (!is_product(next->kind) || next->in != out || op_writes(next, norm->in)) return 0;
    /* every later op until out is written again, on through the next block's ops up to this norm */
    for (int s = 2; s <= a->n_ops; s++) {
        const lrun_arch_op *op = &a->ops[(i + s) % a->n_ops];
        if (op_reads(op, out)) return 0;
        if (op_writes(op, out)) return 1;
    }
    return 1; /* not reached: the norm itself writes out */
}

// ---------------------------------------------------------------- validation

/* What each op kind takes: weights (min, max), outputs, and whether its
 * weights are matrices (in → out[i]), vectors of out[i]'s width, or a
 * matrix then an optional bias (MATMUL_ADD). */
enum w_form { W_NONE, W_VECTOR_IN, W_MATRICES, W_VECTORS_OUT, W_MATRIX_BIAS, W_VECTORS_HEAD, W_EXPERTS, W_SINKS };
static const struct {
    const char *name;
    int w_min, w_max, n_out;
    enum w_form form;
} kinds[LRUN_ARCH_OP_KIND_COUNT] = {
    [LRUN_ARCH_OP_NORM] = {"norm", 1, 1, 1, W_VECTOR_IN},
    [LRUN_ARCH_OP_MATMUL] = {"matmul", 1, 3, 0, W_MATRICES}, /* n_out: one per weight */
    [LRUN_ARCH_OP_BIAS] = {"bias", 1, 3, 0, W_VECTORS_OUT},
    [LRUN_ARCH_OP_ROPE_STORE] = {"rope_store", 0, 0, 3, W_NONE},
    [LRUN_ARCH_OP_ATTENTION] = {"attention", 0, 1, 1, W_SINKS}, /* gpt-oss's sinks {n_head} */
    [LRUN_ARCH_OP_MATMUL_ADD] = {"matmul_add", 1, 2, 1, W_MATRIX_BIAS},
    [LRUN_ARCH_OP_MATMUL_SWIGLU] = {"matmul_swiglu", 2, 2, 2, W_MATRICES},
    [LRUN_ARCH_OP_HEAD_NORM] = {"head_norm", 1, 3, 0, W_VECTORS_HEAD}, /* n_out: one per weight */
    [LRUN_ARCH_OP_MATMUL_GEGLU] = {"matmul_geglu", 2, 2, 2, W_MATRICES},
    [LRUN_ARCH_OP_MATMUL_NORM_ADD] = {"matmul_norm_add", 2, 2, 1, W_MATRIX_BIAS}, /* the norm's weight: out's width */
    [LRUN_ARCH_OP_MOE_ROUTE] = {"moe_route", 1, 2, 1, W_MATRIX_BIAS}, /* the router, its bias (gpt-oss) */
    [LRUN_ARCH_OP_MOE_FFN_ADD] = {"moe_ffn_add", 3, 3, 1, W_EXPERTS}, /* gate, up {in, n_ff, n_expert}; down */
};

static const char *dim_name(lrun_arch_dim d)
{
    static const char *const names[] = {"-",       "n_embd",   "q_dim",           "kv_dim", "n_ff",
                                        "n_vocab", "n_rot/2", "head_dim", "q_dim+2*kv_dim", "2*n_ff", "n_expert",
                                        "n_head"};
    return d >= 0 && d < (int)(sizeof names / sizeof names[0]) ? names[d] : "?";
}

static int is_block_tensor(lrun_arch_tensor t) { return t >= 0 && t < LRUN_ARCH_TENSOR_BLOCK_COUNT; }

/* Checks that weight t of op i exists in a with shape {d0, d1} (2-D or less). */
static lrun_status check_weight3(const lrun_arch *a, int i, lrun_arch_tensor t, lrun_arch_dim d0, lrun_arch_dim d1,
                                 lrun_arch_dim d2);
static lrun_status check_weight(const lrun_arch *a, int i, lrun_arch_tensor t, lrun_arch_dim d0, lrun_arch_dim d1)
{
    return check_weight3(a, i, t, d0, d1, LRUN_ARCH_DIM_NONE);
}

/* The same with a third dimension (the experts' stacked tensors). */
static lrun_status check_weight3(const lrun_arch *a, int i, lrun_arch_tensor t, lrun_arch_dim d0, lrun_arch_dim d1,
                                 lrun_arch_dim d2)
{
    const lrun_arch_tensor_desc *d = lrun_arch_tensor_find(a, t);
    if (!is_block_tensor(t) || !d)
        return lrun_fail(LRUN_E_INTERNAL, "arch %s: op %d (%s) uses tensor %d, not a block tensor of the description",
                         a->name, i, kinds[a->ops[i].kind].name, (int)t);
    if (d->ne[0] != d0 || d->ne[1] != d1 || d->ne[2] != d2) {
        char have[64], need[64]; /* the third dimension only where one of them is 3-D */
        const int three = d->ne[2] != LRUN_ARCH_DIM_NONE || d2 != LRUN_ARCH_DIM_NONE;
        snprintf(have, sizeof have, "{%s, %s%s%s}", dim_name(d->ne[0]), dim_name(d->ne[1]), three ? ", " : "",
                 three ? dim_name(d->ne[2]) : "");
        snprintf(need, sizeof need, "{%s, %s%s%s}", dim_name(d0), dim_name(d1), three ? ", " : "",
                 three ? dim_name(d2) : "");
        return lrun_fail(LRUN_E_INTERNAL, "arch %s: op %d (%s): '%s' has shape %s, the op's buffers need %s", a->name,
                         i, kinds[a->ops[i].kind].name, d->name, have, need);
    }
    return LRUN_OK;
}

static lrun_status check_op(const lrun_arch *a, int i, int used[LRUN_ARCH_TENSOR_COUNT])
{
    const lrun_arch_op *op = &a->ops[i];
    if (op->kind < 0 || op->kind >= LRUN_ARCH_OP_KIND_COUNT)
        return lrun_fail(LRUN_E_INTERNAL, "arch %s: op %d has kind %d", a->name, i, (int)op->kind);
    const int n_w = lrun_arch_op_n_w(op);
    if (n_w < kinds[op->kind].w_min || n_w > kinds[op->kind].w_max)
        return lrun_fail(LRUN_E_INTERNAL, "arch %s: op %d (%s) has %d weights, expected %d to %d", a->name, i,
                         kinds[op->kind].name, n_w, kinds[op->kind].w_min, kinds[op->kind].w_max);
    const lrun_arch_dim in = lrun_arch_buf_dim(op->in);
    for (int j = 0; j < n_w; j++) {
        const enum w_form form = kinds[op->kind].form;
        const lrun_arch_dim out = lrun_arch_buf_dim(op->out[form == W_MATRIX_BIAS || form == W_EXPERTS ? 0 : j]);
        lrun_status st = LRUN_OK;
        switch (kinds[op->kind].form) {
        case W_VECTOR_IN: st = check_weight(a, i, op->w[j], in, LRUN_ARCH_DIM_NONE); break;
        case W_VECTORS_OUT: st = check_weight(a, i, op->w[j], out, LRUN_ARCH_DIM_NONE); break;
        case W_VECTORS_HEAD: st = check_weight(a, i, op->w[j], LRUN_ARCH_DIM_HEAD, LRUN_ARCH_DIM_NONE); break;
        case W_MATRICES: st = check_weight(a, i, op->w[j], in, out); break;
        case W_MATRIX_BIAS:
            st = check_weight(a, i, op->w[j], j == 0 ? in : out, j == 0 ? out : LRUN_ARCH_DIM_NONE);
            break;
        case W_EXPERTS: /* gate and up: in → n_ff per expert; down: n_ff → out */
            st = j < 2 ? check_weight3(a, i, op->w[j], in, LRUN_ARCH_DIM_FF, LRUN_ARCH_DIM_EXPERT)
                       : check_weight3(a, i, op->w[j], LRUN_ARCH_DIM_FF, out, LRUN_ARCH_DIM_EXPERT);
            break;
        case W_SINKS: st = check_weight(a, i, op->w[j], LRUN_ARCH_DIM_N_HEAD, LRUN_ARCH_DIM_NONE); break;
        case W_NONE: break;
        }
        if (st != LRUN_OK) return st;
        if (used[op->w[j]]++)
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: op %d (%s) uses '%s', which an earlier op uses too", a->name,
                             i, kinds[op->kind].name, lrun_arch_tensor_find(a, op->w[j])->name);
    }
    const int n_out = kinds[op->kind].n_out ? kinds[op->kind].n_out : n_w;
    for (int j = 0; j < n_out; j++)
        if (op->out[j] < 0 || op->out[j] >= LRUN_ARCH_BUF_COUNT)
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: op %d (%s) output %d is buffer %d", a->name, i,
                             kinds[op->kind].name, j, (int)op->out[j]);
    return LRUN_OK;
}

lrun_status lrun_arch_validate(const lrun_arch *a)
{
    int used[LRUN_ARCH_TENSOR_COUNT] = {0};
    for (int i = 0; i < a->n_ops; i++) {
        lrun_status st = check_op(a, i, used);
        if (st != LRUN_OK) return st;
    }
    for (int i = 0; i < a->n_tensors; i++) {
        const lrun_arch_tensor_desc *d = &a->tensors[i];
        if (d->id < 0 || d->id >= LRUN_ARCH_TENSOR_COUNT || lrun_arch_tensor_find(a, d->id) != d)
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: tensor '%s' has id %d, out of range or listed twice",
                             a->name, d->name, (int)d->id);
        const int block = is_block_tensor(d->id), pattern = strstr(d->name, "%d") != NULL;
        if (block != pattern)
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: tensor '%s' %s a block index (%%d) in its name", a->name,
                             d->name, block ? "lacks" : "has");
        const lrun_arch_split *sp = lrun_arch_split_of(a, d->id);
        if (block && !used[d->id] && !sp && !(a->moe_oai && is_expert_bias(d->id)))
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: no op uses block tensor '%s'", a->name, d->name);
        if (sp && (used[d->id] || d->required || d->ne[1] == LRUN_ARCH_DIM_NONE))
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: fused '%s' must be an optional matrix no op uses", a->name,
                             d->name);
        for (int j = 0; sp && j < LRUN_ARCH_OP_MAX_W && sp->parts[j] != LRUN_ARCH_TENSOR_NONE; j++) {
            const lrun_arch_tensor_desc *pd = lrun_arch_tensor_find(a, sp->parts[j]);
            if (!pd || !used[pd->id] || pd->ne[0] != d->ne[0])
                return lrun_fail(LRUN_E_INTERNAL, "arch %s: a part of fused '%s' is no used matrix of its width",
                                 a->name, d->name);
        }
    }
    /* the engines' own steps around the blocks */
    const lrun_arch_tensor model[] = {LRUN_ARCH_TENSOR_TOKEN_EMBD, LRUN_ARCH_TENSOR_OUTPUT_NORM};
    for (size_t i = 0; i < sizeof model / sizeof model[0]; i++) {
        const lrun_arch_tensor_desc *d = lrun_arch_tensor_find(a, model[i]);
        if (!d || !d->required)
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: the embedding and the output norm must be required tensors",
                             a->name);
    }
    int have[LRUN_ARCH_HPARAM_COUNT] = {0};
    for (int i = 0; i < a->n_hparams; i++) {
        const lrun_arch_hparam_desc *h = &a->hparams[i];
        if (h->id < 0 || h->id >= LRUN_ARCH_HPARAM_COUNT || have[h->id])
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: key '%s' has hyper-parameter %d, out of range or read twice",
                             a->name, h->key, (int)h->id);
        if (h->def == LRUN_ARCH_DEFAULT_SAME_AS && !have[h->same_as])
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: key '%s' defaults to a hyper-parameter read after it",
                             a->name, h->key);
        if (h->def == LRUN_ARCH_DEFAULT_EMBD_PER_HEAD && (!have[LRUN_ARCH_HPARAM_EMBD] || !have[LRUN_ARCH_HPARAM_HEAD]))
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: key '%s' defaults to n_embd/n_head, read after it", a->name,
                             h->key);
        have[h->id] = 1;
    }
    const int moe = lrun_arch_has_experts(a); /* experts need their counts; a dense block has none */
    for (int i = 0; i < LRUN_ARCH_HPARAM_COUNT; i++) {
        const int expert = i == LRUN_ARCH_HPARAM_EXPERT || i == LRUN_ARCH_HPARAM_EXPERT_USED;
        if (!have[i] && i != LRUN_ARCH_HPARAM_SWA && i != LRUN_ARCH_HPARAM_ATTN_SOFTCAP &&
            i != LRUN_ARCH_HPARAM_FINAL_SOFTCAP && !(expert && !moe))
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: hyper-parameter %d has no key", a->name, i);
    }
    for (int i = 0; i + 1 < a->n_ops; i++) /* the experts read the router's logits of the op before */
        if (a->ops[i + 1].kind == LRUN_ARCH_OP_MOE_FFN_ADD &&
            (a->ops[i].kind != LRUN_ARCH_OP_MOE_ROUTE || a->ops[i].in != a->ops[i + 1].in))
            return lrun_fail(LRUN_E_INTERNAL, "arch %s: op %d (moe_ffn_add) must follow a moe_route of its input",
                             a->name, i + 1);
    return LRUN_OK;
}
