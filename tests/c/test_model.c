/* test_model.c — the model loader: the default model's hyper-parameters,
 * roles and tied embeddings (when LRUN_MODEL is set), and small crafted GGUF
 * files that break one rule each, whose errors must name what is wrong. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lrun.h"

static char path[128];

// ---------------------------------------------------------------- the default model

static void skip(const char *what) { printf("ok %d - %s # SKIP LRUN_MODEL unset\n", ++check_count, what); }

static void test_default_model(void)
{
    const char *file = getenv("LRUN_MODEL");
    if (!file || !*file) {
        skip("default model: hyper-parameters, roles, tied embeddings");
        return;
    }
    lrun_model *m = NULL;
    const lrun_load_opts o = {NULL, 0, 2, 1, -1};
    CHECK("the default model loads", lrun_model_load(&m, file, &o) == LRUN_OK);
    if (!m) {
        printf("# %s\n", lrun_last_error());
        return;
    }
    const lrun_model_info *in = lrun_model_get_info(m);
    CHECK("arch llama", strcmp(in->arch, "llama") == 0);
    CHECK("30 layers, width 576, ff 1536", in->n_layer == 30 && in->n_embd == 576 && in->n_ff == 1536);
    CHECK("9 heads, 3 KV heads, head size 64, 64 rotated dims",
          in->n_head == 9 && in->n_head_kv == 3 && in->head_dim == 64 && in->n_rot == 64);
    CHECK("vocabulary 49152, context 8192", in->n_vocab == 49152 && in->n_ctx_train == 8192);
    CHECK_NEAR("rope base 100000", in->rope_freq_base, 100000.0, 1e-6);
    CHECK_NEAR("rms eps 1e-5", in->rms_eps, 1e-5, 1e-12);
    CHECK("GGUF llama rotates adjacent pairs", in->rope_style == LRUN_ROPE_STYLE_ADJACENT);
    CHECK("tied embeddings: no output.weight", in->tied_embeddings == 1 && !lrun_model_find_tensor(m, "output.weight"));

    const lrun_gguf *g = lrun_model_gguf(m);
    size_t sum = 0;
    int same_order = lrun_model_tensor_count(m) == lrun_gguf_tensor_count(g), zero_copy = 1;
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        sum += lrun_tensor_bytes(t);
        same_order &= strcmp(lrun_tensor_name(t), lrun_gguf_tensor_name(g, i)) == 0;
        zero_copy &= lrun_tensor_host_data(t) == lrun_gguf_tensor_data(g, i) && lrun_tensor_tier(t) == LRUN_TIER_MMAP;
    }
    CHECK("272 tensors in file order", lrun_model_tensor_count(m) == 272 && same_order);
    CHECK("weights stay in the mapped file (tier mmap, zero copy)", zero_copy);
    CHECK("weight_bytes is the sum of tensor bytes", in->weight_bytes == sum && sum > 80u << 20);
    CHECK("all of it counted in the mmap tier", lrun_model_tier_bytes(m, LRUN_TIER_MMAP) == sum &&
                                                   lrun_model_tier_bytes(m, LRUN_TIER_DEVICE) == 0);
    CHECK("tensor index past the end is NULL", lrun_model_tensor(m, 272) == NULL && lrun_model_tensor(m, -1) == NULL);

    lrun_tensor *q = lrun_model_find_tensor(m, "blk.3.attn_q.weight");
    CHECK("blk.3.attn_q.weight: role attn_q, layer 3, q4_1 {576, 576}",
          q && lrun_tensor_role(q) == LRUN_ROLE_ATTN_Q && lrun_tensor_layer(q) == 3 &&
              lrun_tensor_dtype(q) == LRUN_DTYPE_Q4_1 && lrun_tensor_dim(q, 0) == 576 && lrun_tensor_dim(q, 1) == 576);
    lrun_tensor *k = lrun_model_find_tensor(m, "blk.29.attn_k.weight");
    CHECK("blk.29.attn_k.weight: role attn_k, layer 29, {576, 192}",
          k && lrun_tensor_role(k) == LRUN_ROLE_ATTN_K && lrun_tensor_layer(k) == 29 && lrun_tensor_dim(k, 1) == 192);
    lrun_tensor *emb = lrun_model_find_tensor(m, "token_embd.weight");
    CHECK("token_embd.weight: embedding, no layer, q8_0",
          emb && lrun_tensor_role(emb) == LRUN_ROLE_EMBEDDING && lrun_tensor_layer(emb) == -1 &&
              lrun_tensor_dtype(emb) == LRUN_DTYPE_Q8_0);
    lrun_tensor *on = lrun_model_find_tensor(m, "output_norm.weight");
    CHECK("output_norm.weight: output norm, f32",
          on && lrun_tensor_role(on) == LRUN_ROLE_OUTPUT_NORM && lrun_tensor_dtype(on) == LRUN_DTYPE_F32);
    const char *roles[][2] = {{"blk.0.attn_norm.weight", "attn_norm"}, {"blk.0.attn_v.weight", "attn_v"},
                              {"blk.0.attn_output.weight", "attn_output"}, {"blk.0.ffn_norm.weight", "ffn_norm"},
                              {"blk.0.ffn_gate.weight", "ffn_gate"}, {"blk.0.ffn_up.weight", "ffn_up"},
                              {"blk.0.ffn_down.weight", "ffn_down"}};
    int roles_ok = 1;
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        lrun_tensor *t = lrun_model_find_tensor(m, roles[i][0]);
        roles_ok &= t && strcmp(lrun_role_name(lrun_tensor_role(t)), roles[i][1]) == 0;
    }
    CHECK("every block tensor has its role", roles_ok);
    const lrun_tokenizer *tok = lrun_model_tokenizer(m);
    CHECK("the tokenizer comes with the model", tok && lrun_tokenizer_vocab_size(tok) == 49152);
    CHECK("on the cpu device", strcmp(lrun_device_name(lrun_model_device(m)), "cpu") == 0);
    lrun_model_free(m);

    const lrun_load_opts half = {"cpu", 0, 1, 0, LRUN_ROPE_STYLE_HALF};
    CHECK("rope_style can force the half-split rotation",
          lrun_model_load(&m, file, &half) == LRUN_OK && lrun_model_get_info(m)->rope_style == LRUN_ROPE_STYLE_HALF);
    lrun_model_free(m);
}

// ---------------------------------------------------------------- crafted files

enum { L = 2, D = 64, H = 4, HK = 2, F = 96, V = 300 };

/* One rule broken per file; a zero field keeps the good value. */
typedef struct craft {
    const char *arch;          /* general.architecture */
    int u64;                   /* integers as u64 instead of u32 */
    int64_t n_head, n_head_kv, n_rot;
    int omit_embd_len;         /* drop llama.embedding_length */
    int64_t experts;           /* llama.expert_count */
    const char *scaling;       /* llama.rope.scaling.type */
    const char *reshape;       /* this tensor gets {d0, d1} */
    int64_t d0, d1;
    const char *omit;          /* this tensor is left out */
    const char *extra;         /* an extra {D} tensor of this name */
    int with_output;           /* write output.weight (untied) */
} craft;

static lrun_status write_craft(const craft *c)
{
    lrun_gguf_writer *w;
    lrun_status st = lrun_gguf_writer_open(&w, path);
    if (st != LRUN_OK) return st;
    const int64_t nh = c->n_head ? c->n_head : H, nkv = c->n_head_kv ? c->n_head_kv : HK;
#define INT(key, v) (c->u64 ? lrun_gguf_writer_set_u64(w, key, (uint64_t)(v)) : lrun_gguf_writer_set_u32(w, key, (uint32_t)(v)))
    st = lrun_gguf_writer_set_str(w, "general.architecture", c->arch ? c->arch : "llama");
    if (st == LRUN_OK) st = INT("llama.context_length", 256);
    if (st == LRUN_OK && !c->omit_embd_len) st = INT("llama.embedding_length", D);
    if (st == LRUN_OK) st = INT("llama.block_count", L);
    if (st == LRUN_OK) st = INT("llama.feed_forward_length", F);
    if (st == LRUN_OK) st = INT("llama.attention.head_count", nh);
    if (st == LRUN_OK) st = INT("llama.attention.head_count_kv", nkv);
    if (st == LRUN_OK && c->n_rot) st = INT("llama.rope.dimension_count", c->n_rot);
    if (st == LRUN_OK && c->experts) st = INT("llama.expert_count", c->experts);
    if (st == LRUN_OK && c->scaling) st = lrun_gguf_writer_set_str(w, "llama.rope.scaling.type", c->scaling);
    if (st == LRUN_OK) st = lrun_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
#undef INT
    /* the tensors: name, d0, d1 (0 for a vector) */
    struct { char name[64]; int64_t d0, d1; } t[64];
    int n = 0;
#define T(nm, a, b) (snprintf(t[n].name, sizeof t[n].name, "%s", nm), t[n].d0 = (a), t[n].d1 = (b), n++)
    T("token_embd.weight", D, V);
    T("output_norm.weight", D, 0);
    if (c->with_output) T("output.weight", D, V);
    for (int l = 0; l < L; l++) {
        char b[64];
        const int64_t hd = D / H;
#define B(suffix, a, bb) (snprintf(b, sizeof b, "blk.%d.%s", l, suffix), T(b, a, bb))
        B("attn_norm.weight", D, 0), B("attn_q.weight", D, H * hd), B("attn_k.weight", D, HK * hd);
        B("attn_v.weight", D, HK * hd), B("attn_output.weight", H * hd, D), B("ffn_norm.weight", D, 0);
        B("ffn_gate.weight", D, F), B("ffn_up.weight", D, F), B("ffn_down.weight", F, D);
#undef B
    }
    if (c->extra) T(c->extra, D, 0);
#undef T
    static float zeros[D * V];
    for (int i = 0; i < n && st == LRUN_OK; i++) {
        if (c->omit && strcmp(t[i].name, c->omit) == 0) continue;
        if (c->reshape && strcmp(t[i].name, c->reshape) == 0) t[i].d0 = c->d0, t[i].d1 = c->d1;
        const int64_t dims[2] = {t[i].d0, t[i].d1};
        st = lrun_gguf_writer_add_tensor(w, t[i].name, LRUN_DTYPE_F32, t[i].d1 ? 2 : 1, dims);
    }
    for (int i = 0; i < n && st == LRUN_OK; i++) {
        if (c->omit && strcmp(t[i].name, c->omit) == 0) continue;
        st = lrun_gguf_writer_write_data(w, zeros, sizeof(float) * (size_t)(t[i].d0 * (t[i].d1 ? t[i].d1 : 1)));
    }
    if (st == LRUN_OK) st = lrun_gguf_writer_finish(w);
    lrun_gguf_writer_free(w);
    return st;
}

/* Loads a crafted file; checks the status and that the message holds each of needles. */
static void expect(const char *what, const craft *c, lrun_status want, const char *n1, const char *n2, const char *n3)
{
    if (write_craft(c) != LRUN_OK) {
        printf("# writing: %s\n", lrun_last_error());
        CHECK(what, 0);
        return;
    }
    lrun_model *m = (lrun_model *)1;
    const lrun_status st = lrun_model_load(&m, path, NULL);
    const char *msg = lrun_last_error();
    int ok = st == want && (want == LRUN_OK ? m != NULL : m == NULL);
    if (want != LRUN_OK) {
        ok &= strstr(msg, path) != NULL; /* the file is named */
        ok &= !n1 || strstr(msg, n1), ok &= !n2 || strstr(msg, n2), ok &= !n3 || strstr(msg, n3);
        printf("# %s -> %s: %s\n", what, lrun_status_name(st), msg);
    }
    CHECK(what, ok);
    if (st == LRUN_OK) lrun_model_free(m);
}

static void test_crafted(void)
{
    snprintf(path, sizeof path, "/tmp/lrun_test_model_%d.gguf", (int)getpid());
    const craft good = {0};
    expect("a minimal llama file loads", &good, LRUN_OK, NULL, NULL, NULL);
    lrun_model *m = NULL;
    if (lrun_model_load(&m, path, NULL) == LRUN_OK) {
        const lrun_model_info *in = lrun_model_get_info(m);
        CHECK("defaults: head_dim = n_embd/n_head, n_rot = head_dim, rope base 10000",
              in->head_dim == D / H && in->n_rot == D / H && in->rope_freq_base == 10000.0);
        CHECK("no tokenizer keys: n_vocab from token_embd, no tokenizer",
              in->n_vocab == V && lrun_model_tokenizer(m) == NULL);
        CHECK("no output.weight: tied", in->tied_embeddings == 1);
        lrun_model_free(m);
    }
    expect("integers stored as u64 load too", &(craft){.u64 = 1, .n_rot = 8}, LRUN_OK, NULL, NULL, NULL);
    expect("with output.weight the model is untied", &(craft){.with_output = 1}, LRUN_OK, NULL, NULL, NULL);
    if (lrun_model_load(&m, path, NULL) == LRUN_OK) {
        CHECK("untied: tied_embeddings 0, output.weight is the LM head",
              lrun_model_get_info(m)->tied_embeddings == 0 &&
                  lrun_tensor_role(lrun_model_find_tensor(m, "output.weight")) == LRUN_ROLE_LM_HEAD);
        lrun_model_free(m);
    }

    expect("a tensor of the wrong shape names it, expected and actual",
           &(craft){.reshape = "blk.1.attn_k.weight", .d0 = D, .d1 = 48}, LRUN_E_FORMAT, "blk.1.attn_k.weight",
           "{64, 48}", "{64, 32}");
    expect("a vector of the wrong length", &(craft){.reshape = "blk.0.ffn_norm.weight", .d0 = 32},
           LRUN_E_FORMAT, "blk.0.ffn_norm.weight", "{32}", "{64}");
    expect("a wrong-shape output.weight", &(craft){.with_output = 1, .reshape = "output.weight", .d0 = D, .d1 = V - 1},
           LRUN_E_FORMAT, "output.weight", "{64, 299}", NULL);
    expect("a missing tensor is named", &(craft){.omit = "blk.0.ffn_up.weight"}, LRUN_E_FORMAT, "missing",
           "blk.0.ffn_up.weight", NULL);
    expect("a missing output_norm is named", &(craft){.omit = "output_norm.weight"}, LRUN_E_FORMAT,
           "output_norm.weight", NULL, NULL);
    expect("another architecture is unsupported, named", &(craft){.arch = "gpt2"}, LRUN_E_UNSUPPORTED, "gpt2", NULL, NULL);
    expect("n_head must divide n_embd", &(craft){.n_head = 5}, LRUN_E_FORMAT, "head_count", NULL, NULL);
    expect("n_head must be a multiple of n_head_kv", &(craft){.n_head_kv = 3}, LRUN_E_FORMAT, "head_count_kv", NULL, NULL);
    expect("n_rot must be even", &(craft){.n_rot = 7}, LRUN_E_FORMAT, "rope.dimension_count", NULL, NULL);
    expect("n_rot must not exceed head_dim", &(craft){.n_rot = 18}, LRUN_E_FORMAT, "rope.dimension_count", NULL, NULL);
    expect("a missing key is named", &(craft){.omit_embd_len = 1}, LRUN_E_FORMAT, "llama.embedding_length", NULL, NULL);
    /* llama with experts is Mixtral's description (docs/moe.md), which needs the count each token uses */
    expect("llama with experts needs expert_used_count, named", &(craft){.experts = 8}, LRUN_E_FORMAT,
           "llama.expert_used_count", NULL, NULL);
    /* yarn loads (gpt-oss, docs/moe.md); a scaling type lrun has no math for is refused by name */
    expect("longrope as a scaling type is unsupported", &(craft){.scaling = "longrope"}, LRUN_E_UNSUPPORTED, "longrope",
           NULL, NULL);
    expect("a tensor the architecture does not use is named", &(craft){.extra = "blk.0.attn_qkv.weight"},
           LRUN_E_UNSUPPORTED, "blk.0.attn_qkv.weight", NULL, NULL);
    expect("a block past block_count is named", &(craft){.extra = "blk.7.attn_norm.weight"}, LRUN_E_FORMAT,
           "blk.7.attn_norm.weight", NULL, NULL);

    const lrun_load_opts bad = {NULL, 0, 0, 0, 9};
    m = (lrun_model *)1;
    CHECK("rope_style out of range is LRUN_E_ARG", lrun_model_load(&m, path, &bad) == LRUN_E_ARG && m == NULL);
    remove(path);
    CHECK("a missing file fails cleanly", lrun_model_load(&m, path, NULL) != LRUN_OK && m == NULL);
}

int main(void)
{
    test_default_model();
    test_crafted();
    return CHECK_DONE();
}
