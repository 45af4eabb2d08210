/* test_model_hf_moe.c — mixtures of experts from HF directories
 * (model_hf_moe.c). The generator writes the same random qwen3moe (bf16)
 * and Mixtral (f32) weights as a GGUF and as an HF directory (one tensor per
 * expert, in expert order, a skewed router); the directory is also rewritten
 * as transformers writes it (names sorted as strings: experts out of
 * order) and in transformers 5's fused layout (gate_up_proj [E, 2 n_ff,
 * n_embd], down_proj [E, n_embd, n_ff]). Every form stacks each block's
 * experts into the GGUF's tensors with the GGUF's values, as a view of the
 * file where they abut (in expert order; the fused down_proj) and a copy
 * otherwise, and gives logits bit-identical to the GGUF's (qwen3moe: both
 * rotate half-split pairs) or within 1e-5 (Mixtral: the GGUF's q/k are
 * permuted for adjacent pairs, so the attention's sums run in another
 * order). A missing expert, an unknown expert tensor and norm_topk_prob
 * false are refused, named. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "lrun.h"
#include "model/model.h"

/* test_model_hf_moe_gpu.c runs the same cases on cuda:0 (fast numerics: a
 * tolerance where the CPU's logits are bit-identical) */
#ifndef HF_MOE_DEVICE
#define HF_MOE_DEVICE "cpu"
#define HF_MOE_TOL_EXACT 0.0     /* qwen3moe: the same arithmetic in both formats */
#define HF_MOE_TOL_MIXTRAL 1e-5  /* the attention's sums in another order */
#endif

enum { L = 2, D = 64, H = 4, HK = 2, F = 32, V = 300, E = 8, K = 2, N_TOK = 6 };

static char dir[256];

static lrun_model_gen_spec spec(const char *arch, lrun_dtype dt)
{
    const lrun_model_gen_spec s = {.arch = arch, .n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F,
                                   .n_vocab = V, .n_ctx = 64, .weight_dtype = dt, .embd_dtype = dt,
                                   .tied_embeddings = 1, .rope_freq_base = 10000, .rms_eps = 1e-5, .seed = 11,
                                   .n_threads = 1, .n_expert = E, .n_expert_used = K, .router_skew = 1.5};
    return s;
}

/* The last token's logits (V) of a fixed prompt; 0 when the model does not load or run. */
static int logits_of(const char *path, float *out)
{
    static const int32_t tok[N_TOK] = {256, 72, 101, 108, 108, 111};
    return fixture_last_logits(path, HF_MOE_DEVICE, tok, N_TOK, 16, out);
}

static double max_diff(const float *a, const float *b) { return fixture_max_abs_diff(a, b, V); }

/* 1 when every stacked expert tensor of path holds the GGUF's values, and
 * the down projections are (views) or are not (copies) in the file as want_view says. */
static int stacked_as_gguf(const char *path, const char *gguf, int want_down_view, int want_gate_view)
{
    lrun_model *a = fixture_load(gguf, "cpu", 0, 1, -1), *b = fixture_load(path, "cpu", 0, 1, -1);
    int ok = a && b;
    static const char *const proj[3] = {"gate", "up", "down"};
    float *x = malloc((size_t)(D * F * E) * sizeof *x), *y = malloc((size_t)(D * F * E) * sizeof *y);
    for (int l = 0; ok && l < L; l++)
        for (int p = 0; ok && p < 3; p++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.ffn_%s_exps.weight", l, proj[p]);
            lrun_tensor *ta = lrun_model_find_tensor(a, name), *tb = lrun_model_find_tensor(b, name);
            ok = ta && tb && lrun_tensor_read_f32(ta, 0, D * F * E, x) == LRUN_OK &&
                 lrun_tensor_read_f32(tb, 0, D * F * E, y) == LRUN_OK && memcmp(x, y, (size_t)(D * F * E) * 4) == 0;
            const char *file = NULL;
            uint64_t off = 0;
            const int view = lrun_model_tensor_location(b, tb, &file, &off);
            if (ok && view != (p == 2 ? want_down_view : want_gate_view)) {
                printf("# %s: %s %s\n", path, name, view ? "is a view" : "is a copy");
                ok = 0;
            }
        }
    free(x), free(y);
    lrun_model_free(a), lrun_model_free(b);
    return ok;
}

// ---------------------------------------------------------------- rewriting the directory

typedef struct out_tensor {
    char name[128];
    lrun_st_dtype dtype;
    int ndim;
    int64_t shape[3];
    const void *data;
    size_t nbytes;
    void *own;                  /* data when made here */
} out_tensor;

static int by_name(const void *a, const void *b) { return strcmp(((const out_tensor *)a)->name, ((const out_tensor *)b)->name); }

static int write_tensors(const char *path, out_tensor *t, int n)
{
    lrun_st_writer *w = NULL;
    lrun_status st = lrun_st_writer_open(&w, path);
    for (int i = 0; st == LRUN_OK && i < n; i++) st = lrun_st_writer_add(w, t[i].name, t[i].dtype, t[i].ndim, t[i].shape);
    for (int i = 0; st == LRUN_OK && i < n; i++) st = lrun_st_writer_write(w, t[i].data, t[i].nbytes);
    if (st == LRUN_OK) st = lrun_st_writer_finish(w);
    if (st != LRUN_OK) printf("# write %s: %s\n", path, lrun_last_error());
    lrun_st_writer_free(w);
    return st == LRUN_OK;
}

/* qwen3moe's experts of block l fused as transformers 5 keeps them: into t[*n], t[*n + 1]. */
static void fuse_block(lrun_safetensors *f, int l, out_tensor *t, int *n)
{
    const lrun_st_tensor *first =
        lrun_safetensors_tensor(f, lrun_safetensors_find(f, "model.layers.0.mlp.experts.0.up_proj.weight"));
    const size_t es = first->dtype == LRUN_ST_F32 ? 4 : 2;
    static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
    uint8_t *gu = calloc((size_t)(E * 2 * F * D), es), *dn = calloc((size_t)(E * D * F), es);
    const size_t slice = (size_t)(F * D) * es;
    for (int e = 0; e < E; e++)
        for (int p = 0; p < 3; p++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, proj[p]);
            const lrun_st_tensor *s = lrun_safetensors_tensor(f, lrun_safetensors_find(f, name));
            uint8_t *dst = p == 2 ? dn + (size_t)e * slice : gu + (size_t)(2 * e + p) * slice;
            memcpy(dst, s->data, slice);
        }
    out_tensor a = {.dtype = first->dtype, .ndim = 3, .shape = {E, 2 * F, D}, .data = gu,
                    .nbytes = (size_t)(E * 2 * F * D) * es, .own = gu};
    snprintf(a.name, sizeof a.name, "model.layers.%d.mlp.experts.gate_up_proj", l);
    out_tensor b = {.dtype = a.dtype, .ndim = 3, .shape = {E, D, F}, .data = dn, .nbytes = (size_t)(E * D * F) * es,
                    .own = dn};
    snprintf(b.name, sizeof b.name, "model.layers.%d.mlp.experts.down_proj", l);
    t[(*n)++] = a;
    t[(*n)++] = b;
}

enum form { SORTED, FUSED, DROP_ONE, STRAY };

/* dst/model.safetensors from src's in another form; config.json copied. */
static int rewrite(const char *src, const char *dst, enum form form)
{
    char p[400], cmd[1000];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/config.json' '%s/'", dst, src, dst);
    if (system(cmd) != 0) return 0;
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    lrun_safetensors *f = NULL;
    if (lrun_safetensors_open(&f, p) != LRUN_OK) return 0;
    const int64_t n = lrun_safetensors_count(f);
    out_tensor *t = calloc((size_t)n + 2 * L + 1, sizeof *t);
    int k = 0;
    for (int64_t i = 0; i < n; i++) {
        const lrun_st_tensor *s = lrun_safetensors_tensor(f, i);
        if (form == FUSED && strstr(s->name, ".experts.")) continue;
        if (form == DROP_ONE && strcmp(s->name, "model.layers.1.mlp.experts.5.up_proj.weight") == 0) continue;
        out_tensor o = {.dtype = s->dtype, .ndim = s->ndim, .data = s->data, .nbytes = s->nbytes};
        snprintf(o.name, sizeof o.name, "%s", s->name);
        memcpy(o.shape, s->shape, sizeof o.shape);
        t[k++] = o;
    }
    for (int l = 0; form == FUSED && l < L; l++) fuse_block(f, l, t, &k);
    if (form == STRAY) { /* a ninth expert the config does not have */
        t[k] = t[k - 1];
        snprintf(t[k].name, sizeof t[k].name, "model.layers.0.mlp.experts.%d.up_proj.weight", E);
        k++;
    }
    qsort(t, (size_t)k, sizeof *t, by_name); /* as Python's safetensors: "experts.10" before "experts.2" */
    snprintf(p, sizeof p, "%s/model.safetensors", dst);
    const int ok = write_tensors(p, t, k);
    for (int i = 0; i < k; i++) free(t[i].own);
    free(t);
    lrun_safetensors_close(f);
    return ok;
}

/* 1 when loading path fails with a message holding want. */
static int refused(const char *path, const char *want)
{
    lrun_model *m = NULL;
    const lrun_load_opts o = {.device = "cpu", .n_threads = 1, .rope_style = -1};
    const lrun_status st = lrun_model_load(&m, path, &o);
    lrun_model_free(m);
    if (st == LRUN_OK) return 0;
    if (!strstr(lrun_last_error(), want)) printf("# %s: %s\n", path, lrun_last_error());
    return strstr(lrun_last_error(), want) != NULL;
}

// ---------------------------------------------------------------- cases

static void family(const char *arch, lrun_dtype dt, double tol)
{
    char gguf[320], hf[320], name[160];
    snprintf(gguf, sizeof gguf, "%s/%s.gguf", dir, arch);
    snprintf(hf, sizeof hf, "%s/%s", dir, arch);
    const lrun_model_gen_spec s = spec(arch, dt);
    snprintf(name, sizeof name, "%s: the GGUF and the HF directory of the same weights are written", arch);
    CHECK(name, lrun_model_generate(gguf, &s) == LRUN_OK && lrun_model_generate_hf(hf, &s, 1) == LRUN_OK);
    static float a[V], b[V];
    snprintf(name, sizeof name, "%s: experts in expert order are views of the file, with the GGUF's values", arch);
    CHECK(name, stacked_as_gguf(hf, gguf, 1, 1));
    snprintf(name, sizeof name, "%s: the HF directory's logits are the GGUF's (tolerance %g)", arch, tol);
    CHECK(name, logits_of(gguf, a) && logits_of(hf, b) && max_diff(a, b) <= tol);
    char sorted[340];
    snprintf(sorted, sizeof sorted, "%s-sorted", hf);
    snprintf(name, sizeof name, "%s: experts sorted by name (as transformers writes them) are copied, same logits", arch);
    CHECK(name, rewrite(hf, sorted, SORTED) && stacked_as_gguf(sorted, gguf, 0, 0) && logits_of(sorted, b) &&
                    max_diff(a, b) <= tol);
}

static void qwen3moe_forms(void)
{
    char gguf[320], hf[320], path[340];
    snprintf(gguf, sizeof gguf, "%s/qwen3moe.gguf", dir);
    snprintf(hf, sizeof hf, "%s/qwen3moe", dir);
    static float a[V], b[V];
    snprintf(path, sizeof path, "%s-fused", hf);
    CHECK("qwen3moe: transformers 5's fused experts: down_proj a view, gate/up copied, the GGUF's logits",
          rewrite(hf, path, FUSED) && stacked_as_gguf(path, gguf, 1, 0) && logits_of(gguf, a) && logits_of(path, b) &&
              max_diff(a, b) <= HF_MOE_TOL_EXACT);
    snprintf(path, sizeof path, "%s-drop", hf);
    CHECK("qwen3moe: a missing expert is named",
          rewrite(hf, path, DROP_ONE) && refused(path, "model.layers.1.mlp.experts.5.up_proj.weight"));
    snprintf(path, sizeof path, "%s-stray", hf);
    CHECK("qwen3moe: an expert tensor beyond num_experts is named",
          rewrite(hf, path, STRAY) && refused(path, "model.layers.0.mlp.experts.8.up_proj.weight"));
    char cmd[1200];
    snprintf(path, sizeof path, "%s-nonorm", hf);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && sed -i 's/\"norm_topk_prob\":\\s*true/\"norm_topk_prob\": false/' "
             "'%s/config.json'", hf, path, path);
    CHECK("qwen3moe: norm_topk_prob false is refused, named", system(cmd) == 0 && refused(path, "norm_topk_prob"));
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s/lrun_hf_moe_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        printf("not ok 1 - mkdtemp\n1..1\n");
        return 1;
    }
    family("qwen3moe", LRUN_DTYPE_BF16, HF_MOE_TOL_EXACT);
    family("llama", LRUN_DTYPE_F32, HF_MOE_TOL_MIXTRAL);
    qwen3moe_forms();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return CHECK_DONE();
}
