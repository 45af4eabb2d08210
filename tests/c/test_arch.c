/* test_arch.c — architecture descriptions (runtime/arch/): every known
 * description's tables agree with each other; broken tables are caught
 * naming what is wrong; and a GGUF file written from a description loads
 * through it, while an unknown architecture or a missing required tensor
 * is refused naming it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch/arch.h"
#include "check.h"
#include "lrun.h"
#include "model/model.h"

static char path[128];

// ---------------------------------------------------------------- the llama description

static int op_uses(const lrun_arch_op *op, lrun_arch_tensor t)
{
    for (int i = 0; i < lrun_arch_op_n_w(op); i++)
        if (op->w[i] == t) return 1;
    return 0;
}

static void test_known(void)
{
    int ok = 1, n = 0;
    for (const lrun_arch *a; (a = lrun_arch_known(n)) != NULL; n++)
        if (lrun_arch_validate(a) != LRUN_OK || lrun_arch_find(a->name) != a) {
            printf("# %s\n", lrun_last_error());
            ok = 0;
        }
    CHECK("every known architecture's tables agree, and each is found by its name", ok && n >= 1);
}

/* Mixtral: llama's name with experts, found by the expert count (docs/moe.md). */
static void test_moe_descriptions(void)
{
    const lrun_status st = lrun_arch_validate(&lrun_arch_llama_moe);
    if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
    CHECK("llama's mixture-of-experts description (Mixtral) agrees", st == LRUN_OK);
    CHECK("a llama file with experts takes it, without them llama's",
          lrun_arch_find_moe("llama", 8) == &lrun_arch_llama_moe && lrun_arch_find_moe("llama", 0) == &lrun_arch_llama &&
              lrun_arch_find_moe("qwen3moe", 128) == &lrun_arch_qwen3moe && lrun_arch_find_moe("qwen2", 8) == &lrun_arch_qwen2);
    CHECK("qwen3moe and Mixtral route to experts, llama and qwen3 do not",
          lrun_arch_has_experts(&lrun_arch_qwen3moe) && lrun_arch_has_experts(&lrun_arch_llama_moe) &&
              !lrun_arch_has_experts(&lrun_arch_llama) && !lrun_arch_has_experts(&lrun_arch_qwen3));
    const lrun_arch_tensor_desc *g = lrun_arch_tensor_find(&lrun_arch_qwen3moe, LRUN_ARCH_TENSOR_GATE_EXPS);
    const lrun_arch_tensor_desc *d = lrun_arch_tensor_find(&lrun_arch_qwen3moe, LRUN_ARCH_TENSOR_DOWN_EXPS);
    CHECK("the experts' tensors are 3-D: {n_embd, n_ff, n_expert} and {n_ff, n_embd, n_expert}",
          g && d && g->ne[0] == LRUN_ARCH_DIM_EMBD && g->ne[1] == LRUN_ARCH_DIM_FF && g->ne[2] == LRUN_ARCH_DIM_EXPERT &&
              d->ne[0] == LRUN_ARCH_DIM_FF && d->ne[1] == LRUN_ARCH_DIM_EMBD && d->ne[2] == LRUN_ARCH_DIM_EXPERT &&
              lrun_arch_is_matrix(&lrun_arch_qwen3moe, LRUN_ARCH_TENSOR_GATE_EXPS) &&
              lrun_arch_is_expert_tensor(LRUN_ARCH_TENSOR_UP_EXPS) && !lrun_arch_is_expert_tensor(LRUN_ARCH_TENSOR_GATE_INP));

    /* the experts read the router's logits of the op right before them */
    lrun_arch_op ops[16];
    memcpy(ops, lrun_arch_qwen3moe.ops, (size_t)lrun_arch_qwen3moe.n_ops * sizeof *ops);
    lrun_arch a = lrun_arch_qwen3moe;
    a.ops = ops;
    const int n = a.n_ops;
    const lrun_arch_op route = ops[n - 2];
    ops[n - 2] = ops[n - 1], ops[n - 1] = route; /* experts before their router */
    const lrun_status st2 = lrun_arch_validate(&a);
    printf("# experts before the router -> %s\n", lrun_last_error());
    CHECK("experts without a router right before them are refused", st2 == LRUN_E_INTERNAL &&
          strstr(lrun_last_error(), "moe_") != NULL);
}

static void test_llama_description(void)
{
    const lrun_arch *a = lrun_arch_find("llama");
    CHECK("llama is known", a == &lrun_arch_llama);
    CHECK("an unknown name finds nothing", lrun_arch_find("qwen9") == NULL && lrun_arch_find(NULL) == NULL);
    char names[256];
    CHECK("the known names list llama", strstr(lrun_arch_known_names(names, sizeof names), "llama") != NULL);
    const lrun_status st = lrun_arch_validate(a);
    if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
    CHECK("llama's tables agree (shapes, every block tensor used once, hyper-parameters)", st == LRUN_OK);

    /* the order of a pre-norm block, as the fused kernels expect it */
    const lrun_arch_op_kind want[] = {LRUN_ARCH_OP_NORM,       LRUN_ARCH_OP_MATMUL,     LRUN_ARCH_OP_BIAS,
                                      LRUN_ARCH_OP_ROPE_STORE, LRUN_ARCH_OP_ATTENTION,  LRUN_ARCH_OP_MATMUL_ADD,
                                      LRUN_ARCH_OP_NORM,       LRUN_ARCH_OP_MATMUL_SWIGLU, LRUN_ARCH_OP_MATMUL_ADD};
    int same = a->n_ops == (int)(sizeof want / sizeof want[0]);
    for (int i = 0; same && i < a->n_ops; i++) same = a->ops[i].kind == want[i];
    CHECK("llama's block: norm, qkv, bias, rope+store, attention, Wo+residual, norm, gate/up SwiGLU, down+residual",
          same);
    CHECK("Q, K and V are one matmul op (one launch for decode)",
          same && op_uses(&a->ops[1], LRUN_ARCH_TENSOR_Q) && op_uses(&a->ops[1], LRUN_ARCH_TENSOR_K) &&
              op_uses(&a->ops[1], LRUN_ARCH_TENSOR_V));
    CHECK("each residual projection writes the residual stream",
          same && a->ops[5].out[0] == LRUN_ARCH_BUF_X && a->ops[8].out[0] == LRUN_ARCH_BUF_X);
    CHECK("the biases are optional, the matrices and norms required",
          !lrun_arch_tensor_find(a, LRUN_ARCH_TENSOR_Q_BIAS)->required &&
              !lrun_arch_tensor_find(a, LRUN_ARCH_TENSOR_O_BIAS)->required &&
              lrun_arch_tensor_find(a, LRUN_ARCH_TENSOR_DOWN)->required &&
              lrun_arch_tensor_find(a, LRUN_ARCH_TENSOR_FFN_NORM)->required &&
              !lrun_arch_tensor_find(a, LRUN_ARCH_TENSOR_OUTPUT)->required);
    CHECK("llama rotates adjacent pairs", a->rope_style == LRUN_ROPE_STYLE_ADJACENT);
}

/* A copy of llama with one table changed must fail validation, naming needle. */
static void expect_invalid(const char *what, const lrun_arch *a, const char *needle)
{
    const lrun_status st = lrun_arch_validate(a);
    const char *msg = lrun_last_error();
    printf("# %s -> %s\n", what, msg);
    CHECK(what, st == LRUN_E_INTERNAL && strstr(msg, needle) != NULL);
}

static void test_broken_descriptions(void)
{
    const lrun_arch *l = &lrun_arch_llama;
    lrun_arch_op ops[16];
    memcpy(ops, l->ops, (size_t)l->n_ops * sizeof *ops);
    lrun_arch a = *l;
    a.ops = ops;

    ops[1].w[2] = LRUN_ARCH_TENSOR_O; /* Wo {q_dim, n_embd} where V {n_embd, kv_dim} belongs */
    expect_invalid("a weight whose shape does not fit the op's buffers is named", &a,
                   "'blk.%d.attn_output.weight' has shape {q_dim, n_embd}, the op's buffers need {n_embd, kv_dim}");
    memcpy(ops, l->ops, (size_t)l->n_ops * sizeof *ops);
    ops[6].w[0] = LRUN_ARCH_TENSOR_ATTN_NORM; /* the ffn norm reading the attention norm's weight */
    expect_invalid("a tensor used by two ops is named", &a, "'blk.%d.attn_norm.weight', which an earlier op uses");
    memcpy(ops, l->ops, (size_t)l->n_ops * sizeof *ops);
    a.n_ops = l->n_ops - 1; /* no down projection */
    expect_invalid("a block tensor no op uses is named", &a, "ffn_down.weight");
    a.n_ops = l->n_ops;

    lrun_arch_hparam_desc hp[LRUN_ARCH_HPARAM_COUNT];
    memcpy(hp, l->hparams, (size_t)l->n_hparams * sizeof *hp);
    a.hparams = hp;
    a.n_hparams = l->n_hparams - 2; /* no rope.freq_base (the sliding window after it is optional) */
    expect_invalid("a hyper-parameter without a key is caught", &a, "hyper-parameter");
}

// ---------------------------------------------------------------- files written from a description

enum { L = 2, D = 64, H = 4, HK = 2, F = 96, V = 300 };

static int64_t dim(lrun_arch_dim d)
{
    switch (d) {
    case LRUN_ARCH_DIM_EMBD: return D;
    case LRUN_ARCH_DIM_Q: return D;
    case LRUN_ARCH_DIM_KV: return HK * (D / H);
    case LRUN_ARCH_DIM_FF: return F;
    case LRUN_ARCH_DIM_VOCAB: return V;
    case LRUN_ARCH_DIM_ROT_HALF: return D / H / 2;
    case LRUN_ARCH_DIM_HEAD: return D / H;
    default: return 0;
    }
}

/* Writes a model of architecture a with every tensor of the description
 * (optional ones too, all f32, zeros), under the name `name`, leaving out
 * the tensor named omit. */
static lrun_status write_from(const lrun_arch *a, const char *name, const char *omit)
{
    lrun_gguf_writer *w;
    lrun_status st = lrun_gguf_writer_open(&w, path);
    if (st != LRUN_OK) return st;
    char key[128];
    st = lrun_gguf_writer_set_str(w, "general.architecture", name);
    const int64_t value[LRUN_ARCH_HPARAM_COUNT] = {256, D, L, F, H, HK, D / H, D / H, D / H, 0, 0};
    for (int i = 0; i < a->n_hparams && st == LRUN_OK; i++) {
        const lrun_arch_hparam_desc *h = &a->hparams[i];
        snprintf(key, sizeof key, "%s.%s", a->name, h->key);
        st = h->kind == LRUN_ARCH_HPARAM_KIND_POS_FLOAT
                 ? lrun_gguf_writer_set_f32(w, key, h->id == LRUN_ARCH_HPARAM_RMS_EPS ? 1e-5f : 10000.0f)
                 : lrun_gguf_writer_set_u32(w, key, (uint32_t)value[h->id]);
    }
    struct { char name[96]; int64_t d0, d1; } t[128];
    memset(t, 0, sizeof t);
    int n = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const lrun_arch_tensor_desc *d = &a->tensors[i];
        const int block = d->id < LRUN_ARCH_TENSOR_BLOCK_COUNT;
        for (int l = 0; l < (block ? L : 1); l++) {
            snprintf(t[n].name, sizeof t[n].name, d->name, l);
            if (omit && strcmp(t[n].name, omit) == 0) continue;
            t[n].d0 = dim(d->ne[0]), t[n].d1 = dim(d->ne[1]);
            n++;
        }
    }
    static float zeros[D * V];
    for (int i = 0; i < n && st == LRUN_OK; i++) {
        const int64_t dims[2] = {t[i].d0, t[i].d1};
        st = lrun_gguf_writer_add_tensor(w, t[i].name, LRUN_DTYPE_F32, t[i].d1 ? 2 : 1, dims);
    }
    for (int i = 0; i < n && st == LRUN_OK; i++)
        st = lrun_gguf_writer_write_data(w, zeros, sizeof(float) * (size_t)(t[i].d0 * (t[i].d1 ? t[i].d1 : 1)));
    if (st == LRUN_OK) st = lrun_gguf_writer_finish(w);
    lrun_gguf_writer_free(w);
    return st;
}

/* Writes then loads; checks the status and that the message holds n1 and n2. */
static lrun_model *expect_load(const char *what, const lrun_arch *a, const char *name, const char *omit,
                               lrun_status want, const char *n1, const char *n2)
{
    if (write_from(a, name, omit) != LRUN_OK) {
        printf("# writing: %s\n", lrun_last_error());
        CHECK(what, 0);
        return NULL;
    }
    lrun_model *m = NULL;
    const lrun_status st = lrun_model_load(&m, path, NULL);
    const char *msg = lrun_last_error();
    if (st != LRUN_OK) printf("# %s -> %s: %s\n", what, lrun_status_name(st), msg);
    CHECK(what, st == want && (st != LRUN_OK || (m != NULL)) && (st == LRUN_OK || m == NULL) &&
                    (st == LRUN_OK || ((!n1 || strstr(msg, n1)) && (!n2 || strstr(msg, n2)))));
    return m;
}

static void test_files(void)
{
    snprintf(path, sizeof path, "/tmp/lrun_test_arch_%d.gguf", (int)getpid());
    const lrun_arch *a = &lrun_arch_llama;
    lrun_model *m = expect_load("a file written from the llama description loads", a, "llama", NULL, LRUN_OK, 0, 0);
    if (m) {
        int found = 1, roles = 1;
        for (int i = 0; i < a->n_tensors; i++) {
            const lrun_arch_tensor_desc *d = &a->tensors[i];
            const int block = d->id < LRUN_ARCH_TENSOR_BLOCK_COUNT;
            for (int l = 0; l < (block ? L : 1); l++) {
                const struct lrun_tensor *t = lrun_model_arch_tensor(m, block ? l : -1, d->id);
                char name[96];
                snprintf(name, sizeof name, d->name, l);
                found &= t != NULL && strcmp(lrun_tensor_name(t), name) == 0;
                roles &= t != NULL && lrun_tensor_role(t) == d->role && lrun_tensor_layer(t) == (block ? l : -1);
            }
        }
        CHECK("every described tensor is reachable by its id, under its name", found);
        CHECK("each has the description's role and block", roles);
        CHECK("the model keeps its description", m->arch == a && strcmp(lrun_model_get_info(m)->arch, "llama") == 0);
        lrun_model_free(m);
    }
    expect_load("an unknown architecture is LRUN_E_UNSUPPORTED, naming it and the known ones", a, "qwen9", NULL,
                LRUN_E_UNSUPPORTED, "'qwen9'", "llama");
    expect_load("a missing required block tensor is named", a, "llama", "blk.1.attn_output.weight", LRUN_E_FORMAT,
                "missing", "blk.1.attn_output.weight");
    expect_load("a missing required model tensor is named", a, "llama", "token_embd.weight", LRUN_E_FORMAT,
                "missing", "token_embd.weight");
    m = expect_load("a missing optional tensor (a bias) is fine", a, "llama", "blk.0.attn_q.bias", LRUN_OK, 0, 0);
    if (m) {
        CHECK("and reads as NULL", lrun_model_arch_tensor(m, 0, LRUN_ARCH_TENSOR_Q_BIAS) == NULL &&
                                       lrun_model_arch_tensor(m, 1, LRUN_ARCH_TENSOR_Q_BIAS) != NULL);
        lrun_model_free(m);
    }
    remove(path);
}

/* gemma2: its keys land where the engines read them; the window is on the even blocks. */
static void test_gemma2(void)
{
    snprintf(path, sizeof path, "/tmp/lrun_test_arch_%d.gguf", (int)getpid());
    const lrun_arch *a = &lrun_arch_gemma2;
    CHECK("gemma2 is known", lrun_arch_find("gemma2") == a);
    lrun_model *m = expect_load("a file written from the gemma2 description loads", a, "gemma2", NULL, LRUN_OK, 0, 0);
    if (m) {
        CHECK("its soft-caps are read (attn_logit_softcapping, final_logit_softcapping)",
              m->attn_softcap == 10000.0 && m->final_softcap == 10000.0);
        CHECK("its head is the embedding", m->output == m->tok_embd);
        CHECK("the post-norms are block tensors",
              lrun_model_arch_tensor(m, 1, LRUN_ARCH_TENSOR_ATTN_POST_NORM) != NULL &&
                  lrun_model_arch_tensor(m, 1, LRUN_ARCH_TENSOR_FFN_POST_NORM) != NULL);
        m->n_swa = 7;
        CHECK("the window is on the even blocks only (llama.cpp's pattern 2)",
              lrun_model_layer_swa(m, 0) == 7 && lrun_model_layer_swa(m, 1) == 0 && lrun_model_layer_swa(m, 2) == 7);
        CHECK("the attention scale is 1/sqrt(head_dim) below 46 blocks",
              lrun_model_attn_scale(m) == 1.0 / sqrt((double)(D / H)));
        lrun_model_free(m);
    }
    m = expect_load("a file written from the gemma3 description loads", &lrun_arch_gemma3, "gemma3", NULL, LRUN_OK, 0,
                    0);
    if (m) {
        CHECK("gemma3: no soft-caps", m->attn_softcap == 0 && m->final_softcap == 0);
        CHECK("gemma3: 5 local blocks to 1 global", lrun_model_layer_is_local(m, 0) && lrun_model_layer_is_local(m, 4) &&
                                                        !lrun_model_layer_is_local(m, 5) &&
                                                        lrun_model_layer_is_local(m, 6));
        lrun_model_free(m);
    }
    m = expect_load("llama's window covers every block", &lrun_arch_llama, "llama", NULL, LRUN_OK, 0, 0);
    if (m) {
        m->n_swa = 7;
        CHECK("(llama: every block)", lrun_model_layer_swa(m, 0) == 7 && lrun_model_layer_swa(m, 1) == 7);
        CHECK("and no soft-caps", m->attn_softcap == 0 && m->final_softcap == 0);
        lrun_model_free(m);
    }
    remove(path);
}

// ---------------------------------------------------------------- norm folding

/* The ops of each known description whose norm folds into the next product, as "i,j": */
static void folds_of(const lrun_arch *a, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (int i = 0; i < a->n_ops; i++)
        if (lrun_arch_norm_folds(a, i)) snprintf(buf + strlen(buf), cap - strlen(buf), "%s%d", buf[0] ? "," : "", i);
}

static void test_norm_folds(void)
{
    static const struct {
        const lrun_arch *a;
        const char *want; /* the attention's norm (op 0) and the feed-forward's, where a product follows */
    } cases[] = {
        {&lrun_arch_llama, "0,6"},   {&lrun_arch_qwen2, "0,6"},  {&lrun_arch_qwen3, "0,6"},
        {&lrun_arch_phi3, "0,5"},    {&lrun_arch_gemma2, "0,5"}, {&lrun_arch_gemma3, "0,6"},
        {&lrun_arch_llama_moe, "0"}, {&lrun_arch_qwen3moe, "0"}, {&lrun_arch_gpt_oss, "0"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char got[64], name[160];
        folds_of(cases[c].a, got, sizeof got);
        snprintf(name, sizeof name, "%s: the norms that fold into the product after them are ops %s (got %s)",
                 cases[c].a->name, cases[c].want, got);
        CHECK(name, strcmp(got, cases[c].want) == 0);
    }
    CHECK("a mixture of experts' feed-forward norm feeds the router: it does not fold",
          !lrun_arch_norm_folds(&lrun_arch_qwen3moe, 6) && !lrun_arch_norm_folds(&lrun_arch_llama_moe, 5));
    CHECK("ops that are no norm, and indices out of range, do not fold",
          !lrun_arch_norm_folds(&lrun_arch_llama, 1) && !lrun_arch_norm_folds(&lrun_arch_llama, -1) &&
              !lrun_arch_norm_folds(&lrun_arch_llama, lrun_arch_llama.n_ops) && !lrun_arch_norm_folds(NULL, 0));

    /* llama's table, changed one way at a time */
    const lrun_arch *l = &lrun_arch_llama;
    lrun_arch_op ops[16];
    lrun_arch a = *l;
    a.ops = ops;
    memcpy(ops, l->ops, (size_t)l->n_ops * sizeof *ops);
    ops[3].in = LRUN_ARCH_BUF_XN; /* RoPE reading xn (an invented second reader) */
    CHECK("a second reader of the norm's output before it is written again: no fold", !lrun_arch_norm_folds(&a, 0));
    CHECK("... while the feed-forward's norm, after the next write, still folds", lrun_arch_norm_folds(&a, 6));
    memcpy(ops, l->ops, (size_t)l->n_ops * sizeof *ops);
    ops[2] = (lrun_arch_op){LRUN_ARCH_OP_BIAS,
                            {LRUN_ARCH_TENSOR_Q_BIAS, LRUN_ARCH_TENSOR_NONE, LRUN_ARCH_TENSOR_NONE},
                            LRUN_ARCH_BUF_XN,
                            {LRUN_ARCH_BUF_XN}};
    CHECK("an op updating the norm's output in place counts as a reader", !lrun_arch_norm_folds(&a, 0));
    memcpy(ops, l->ops, (size_t)l->n_ops * sizeof *ops);
    ops[0].out[0] = LRUN_ARCH_BUF_X;
    ops[1].in = LRUN_ARCH_BUF_X;
    CHECK("a norm in place (x itself normed) does not fold", !lrun_arch_norm_folds(&a, 0));
    memcpy(ops, l->ops, (size_t)l->n_ops * sizeof *ops);
    ops[7] = (lrun_arch_op){LRUN_ARCH_OP_MATMUL_ADD,
                            {LRUN_ARCH_TENSOR_DOWN, LRUN_ARCH_TENSOR_NONE, LRUN_ARCH_TENSOR_NONE},
                            LRUN_ARCH_BUF_XN,
                            {LRUN_ARCH_BUF_X}};
    CHECK("a product writing the norm's input (x += W·norm(x)) does not fold", !lrun_arch_norm_folds(&a, 6));
    memcpy(ops, l->ops, (size_t)l->n_ops * sizeof *ops);
    a.n_ops = 7; /* the feed-forward's norm last: its reader is the next block's first op */
    CHECK("the table's last op does not fold", !lrun_arch_norm_folds(&a, 6));
}

int main(void)
{
    test_known();
    test_moe_descriptions();
    test_llama_description();
    test_broken_descriptions();
    test_files();
    test_gemma2();
    test_norm_folds();
    return CHECK_DONE();
}
