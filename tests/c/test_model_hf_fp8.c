/* test_model_hf_fp8.c — FP8 checkpoints in HF directories (model_fp8.c;
 * widened at open on the cpu device): a generated f32 directory rewritten with its projection
 * matrices as F8_E4M3 and scales per tensor (weight_scale, plus an
 * input_scale to ignore), per row, and per 32×32 block (weight_scale_inv,
 * quantization_config.weight_block_size). Each loads; each weight reads back
 * exactly as bf16(e4m3 value × its scale); the model runs. The widening
 * streams through the loader (residency/loader.h's widen hook, pieces that
 * cut rows: test_loader_pipeline.c); the E4M3 table is checked here against
 * the format's bits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "lrun.h"
#include "quant/fp8.h"
#include "quant/quant.h"

enum { L = 1, D = 64, H = 4, HK = 2, F = 96, V = 300, BLK = 32 };
enum kind { PER_TENSOR, PER_ROW, PER_BLOCK };

static char dir[256];

static uint8_t to_e4m3(float x)
{
    int best = 0;
    float err = INFINITY;
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f) continue; /* NaN */
        const float e = fabsf(lrun_fp8_e4m3_to_f32((uint8_t)c) - x);
        if (e < err) err = e, best = c;
    }
    return (uint8_t)best;
}

typedef struct conv {
    const lrun_st_tensor *t;
    int fp8;
    uint8_t *q;                 /* (rows·cols) codes */
    float *scale;               /* (n_scale) */
    int64_t n_scale, scale_shape[2];
    int scale_ndim;
} conv;

/* Scale index of element (r, c). */
static int64_t scale_index(enum kind k, int64_t r, int64_t c, int64_t cols)
{
    return k == PER_TENSOR ? 0 : k == PER_ROW ? r : r / BLK * ((cols + BLK - 1) / BLK) + c / BLK;
}

static void convert(conv *v, enum kind k)
{
    const int64_t rows = v->t->shape[0], cols = v->t->shape[1];
    const float *x = v->t->data;
    v->n_scale = k == PER_TENSOR ? 1 : k == PER_ROW ? rows : ((rows + BLK - 1) / BLK) * ((cols + BLK - 1) / BLK);
    v->scale = calloc((size_t)v->n_scale, sizeof *v->scale);
    v->q = malloc((size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) {
        float *s = &v->scale[scale_index(k, i / cols, i % cols, cols)];
        *s = fmaxf(*s, fabsf(x[i]) / 448.0f);
    }
    for (int64_t i = 0; i < rows * cols; i++)
        v->q[i] = to_e4m3(x[i] / v->scale[scale_index(k, i / cols, i % cols, cols)]);
    v->scale_ndim = k == PER_TENSOR ? 0 : 2;
    v->scale_shape[0] = k == PER_ROW ? rows : (rows + BLK - 1) / BLK;
    v->scale_shape[1] = k == PER_ROW ? 1 : (cols + BLK - 1) / BLK;
}

/* dst/model.safetensors from src's, the *_proj.weight matrices in FP8. */
static int write_fp8(const char *src, const char *dst, enum kind k)
{
    char p[400];
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    lrun_safetensors *f = NULL;
    if (lrun_safetensors_open(&f, p) != LRUN_OK) return 0;
    const int64_t n = lrun_safetensors_count(f);
    conv *v = calloc((size_t)n, sizeof *v);
    snprintf(p, sizeof p, "%s/model.safetensors", dst);
    lrun_st_writer *w = NULL;
    lrun_status st = lrun_st_writer_open(&w, p);
    const char *suffix = k == PER_BLOCK ? "_scale_inv" : "_scale";
    for (int64_t i = 0; st == LRUN_OK && i < n; i++) {
        v[i].t = lrun_safetensors_tensor(f, i);
        v[i].fp8 = strstr(v[i].t->name, "_proj.weight") != NULL;
        if (!v[i].fp8) {
            st = lrun_st_writer_add(w, v[i].t->name, v[i].t->dtype, v[i].t->ndim, v[i].t->shape);
            continue;
        }
        convert(&v[i], k);
        char name[200];
        st = lrun_st_writer_add(w, v[i].t->name, LRUN_ST_F8_E4M3, 2, v[i].t->shape);
        snprintf(name, sizeof name, "%s%s", v[i].t->name, suffix);
        if (st == LRUN_OK) st = lrun_st_writer_add(w, name, LRUN_ST_F32, v[i].scale_ndim, v[i].scale_shape);
        snprintf(name, sizeof name, "%.*sinput_scale", (int)(strlen(v[i].t->name) - 6), v[i].t->name);
        if (st == LRUN_OK && k == PER_TENSOR) st = lrun_st_writer_add(w, name, LRUN_ST_F32, 0, NULL);
    }
    static const float one = 1.0f;
    for (int64_t i = 0; st == LRUN_OK && i < n; i++) {
        if (!v[i].fp8) {
            st = lrun_st_writer_write(w, v[i].t->data, v[i].t->nbytes);
            continue;
        }
        st = lrun_st_writer_write(w, v[i].q, (size_t)(v[i].t->shape[0] * v[i].t->shape[1]));
        if (st == LRUN_OK) st = lrun_st_writer_write(w, v[i].scale, (size_t)v[i].n_scale * sizeof(float));
        if (st == LRUN_OK && k == PER_TENSOR) st = lrun_st_writer_write(w, &one, sizeof one);
    }
    if (st == LRUN_OK) st = lrun_st_writer_finish(w);
    if (st != LRUN_OK) printf("# write_fp8: %s\n", lrun_last_error());
    lrun_st_writer_free(w);
    /* check the loaded weights against the same decode, while v is here */
    lrun_model *m = st == LRUN_OK ? fixture_load(dst, "cpu", 0, 1, -1) : NULL;
    int exact = m != NULL;
    for (int64_t i = 0; exact && i < n; i++) {
        if (!v[i].fp8) continue;
        /* every FP8 weight: they widen together in one loader run, sorted by offset */
        static const char *const hf[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
        static const char *const gguf[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        char gname[64] = "";
        for (int j = 0; j < 7; j++)
            if (strstr(v[i].t->name, hf[j])) snprintf(gname, sizeof gname, "blk.0.%s.weight", gguf[j]);
        lrun_tensor *t = lrun_model_find_tensor(m, gname);
        if (!t) printf("# no tensor %s for %s\n", gname, v[i].t->name);
        const int64_t rows = v[i].t->shape[0], cols = v[i].t->shape[1];
        float *got = malloc((size_t)(rows * cols) * sizeof *got);
        exact = t && lrun_tensor_dtype(t) == LRUN_DTYPE_BF16 && lrun_tensor_read_f32(t, 0, rows * cols, got) == LRUN_OK;
        for (int64_t e = 0; exact && e < rows * cols; e++) {
            const float want = lrun_bf16_to_f32(lrun_f32_to_bf16(
                lrun_fp8_e4m3_to_f32(v[i].q[e]) * v[i].scale[scale_index(k, e / cols, e % cols, cols)]));
            exact = got[e] == want;
        }
        free(got);
    }
    if (m) {
        const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = 16, .n_batch_max = 4, .n_threads = 1};
        lrun_engine *e = NULL;
        static const int32_t tok[4] = {256, 1, 2, 3}, seq[4] = {0};
        static float logits[V];
        int64_t n_out = 0;
        exact = exact && lrun_engine_init(&e, m, &o) == LRUN_OK &&
                lrun_engine_step(e, 4, tok, seq, NULL, logits, 1, &n_out) == LRUN_OK && isfinite(logits[0]);
        lrun_engine_free(e);
    }
    lrun_model_free(m);
    for (int64_t i = 0; i < n; i++) free(v[i].q), free(v[i].scale);
    free(v);
    lrun_safetensors_close(f);
    return exact;
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s/lrun_fp8_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        printf("not ok 1 - mkdtemp\n1..1\n");
        return 1;
    }
    char src[300], cmd[1200];
    snprintf(src, sizeof src, "%s/f32", dir);
    const lrun_model_gen_spec s = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                   .n_ctx = 64, .weight_dtype = LRUN_DTYPE_F32, .embd_dtype = LRUN_DTYPE_F32,
                                   .tied_embeddings = 1, .rope_freq_base = 10000, .rms_eps = 1e-5, .seed = 5,
                                   .n_threads = 1};
    CHECK("an f32 directory to start from", lrun_model_generate_hf(src, &s, 1) == LRUN_OK);
    const char *names[] = {"per-tensor", "per-row", "per-block"};
    for (int k = 0; k < 3; k++) {
        char dst[320], name[128];
        snprintf(dst, sizeof dst, "%s/%s", dir, names[k]);
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/config.json' '%s/'", dst, src, dst);
        int ok = system(cmd) == 0;
        if (ok && k == PER_BLOCK) {
            snprintf(cmd, sizeof cmd, "sed -i 's/\"model_type\"/\"quantization_config\": {\"quant_method\": \"fp8\", "
                     "\"weight_block_size\": [%d, %d]}, \"model_type\"/' '%s/config.json'", BLK, BLK, dst);
            ok = system(cmd) == 0;
        }
        snprintf(name, sizeof name, "FP8 %s scales: loads, widens exactly to bf16, runs", names[k]);
        CHECK(name, ok && write_fp8(src, dst, (enum kind)k));
    }
    /* the reference above decodes with lrun's table: check that table against the bits, written here */
    int table = 1;
    for (int c = 0; c < 256; c++) {
        const int e = (c >> 3) & 15, mt = c & 7;
        const float v = e ? ldexpf(1.0f + (float)mt / 8.0f, e - 7) : ldexpf((float)mt / 8.0f, -6);
        const float want = (c & 0x80) ? -v : v, got = lrun_fp8_e4m3_to_f32((uint8_t)c);
        table &= (e == 15 && mt == 7) ? isnan(got) : got == want;
    }
    CHECK("lrun's E4M3 values are the format's (sign, exponent bias 7, subnormals, NaN) for all 256 codes", table);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return CHECK_DONE();
}
