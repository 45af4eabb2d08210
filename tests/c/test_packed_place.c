/* test_packed_place.c — packed weights as a residency form on the CPU
 * (docs/packed.md): a packed file loads with its matrices still packed
 * (its mmap tier holds the packed bytes), and for every placement — packed
 * or plain, in every tier, streamed, host-computed, decoded in place, with
 * nothing staged (ALL_DEVICE) — the logits are bit-identical to the plain
 * GGUF's; packing at placement time (lrun_tensor_move_form: bf16 as PEX2,
 * f16 as PEX1, lrun pack's rule) gives the same;
 * the engine's sizes for a proposed packed placement are what init takes;
 * the same for files packed with PEX2 (codec_pex2.h); lrun_tensor_measure_packed
 * learns those sizes without packing. */
#include "check.h"
#include "fixtures.h"
#include "lrun.h"
#include "core/tensor.h" /* the layouts measured and packed, compared field by field */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { V = 300, NEW = 6, CTX = 64 };

static char dir[64];

static const char *path_of(const char *name)
{
    static char buf[4][128];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 128, "%s/%s", dir, name);
    return p;
}

static void make_model(const char *path, lrun_dtype dtype, int tied, const char *arch)
{
    lrun_model_gen_spec s = {.arch = arch, .n_layer = 3, .n_embd = 64, .n_head = 4, .n_head_kv = 2, .n_ff = 160, .n_vocab = V,
                             .n_ctx = CTX, .weight_dtype = dtype, .embd_dtype = dtype, .rope_freq_base = 10000,
                             .rms_eps = 1e-5, .seed = 5, .n_threads = 1, .tied_embeddings = tied, .trained_stats = 1};
    if (lrun_model_generate(path, &s) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
}

/* Greedy decode of NEW tokens after a 4-token prompt; logits (NEW x V). */
static int greedy(lrun_model *m, lrun_weight_mode mode, float *logits, lrun_engine_stats *stats)
{
    lrun_engine *e = NULL;
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = 8, .weight_mode = mode,
                                 .prefetch_layers = 1};
    int ok = lrun_engine_init(&e, m, &eo) == LRUN_OK;
    if (!ok) printf("# engine: %s\n", lrun_last_error());
    int32_t prompt[4] = {1, 50, 120, 7}, seq[4] = {0, 0, 0, 0};
    int64_t n_out = 0;
    ok = ok && lrun_engine_step(e, 4, prompt, seq, NULL, logits, 1, &n_out) == LRUN_OK;
    for (int i = 0; ok && i + 1 < NEW; i++) {
        const float *row = logits + (int64_t)i * V;
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        ok = lrun_engine_step(e, 1, &best, seq, NULL, logits + (int64_t)(i + 1) * V, 1, &n_out) == LRUN_OK;
    }
    if (ok && stats) lrun_engine_get_stats(e, stats);
    lrun_engine_free(e);
    return ok;
}

static int is_matrix(const lrun_tensor *t)
{
    return lrun_tensor_ndim(t) == 2 && lrun_tensor_dim(t, 1) > 1 && lrun_tensor_role(t) != LRUN_ROLE_BIAS;
}

/* A placement: for each matrix, its tier, form and host-compute flag by a rule. */
typedef struct place {
    const char *name;
    lrun_tier block_tier, head_tier, embd_tier;
    int packed;          /* 1: matrices packed, 0: plain, 2: every other block packed */
    int host_compute;    /* off-device matrices computed on the host */
    lrun_weight_mode mode;
} place;

static int apply(lrun_model *m, const place *p)
{
    lrun_device *d = lrun_model_device(m);
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        if (!is_matrix(t)) continue;
        const lrun_role r = lrun_tensor_role(t);
        const lrun_tier tier = r == LRUN_ROLE_EMBEDDING ? p->embd_tier : r == LRUN_ROLE_LM_HEAD ? p->head_tier
                                                                                            : p->block_tier;
        int packed = p->packed == 2 ? lrun_tensor_layer(t) % 2 == 0 : p->packed;
        if (tier == LRUN_TIER_MMAP) packed = lrun_tensor_file_packed(t); /* the mmap tier holds the file's form */
        if (lrun_tensor_move_form(t, d, tier, packed) != LRUN_OK) {
            printf("# %s: %s: %s\n", p->name, lrun_tensor_name(t), lrun_last_error());
            return 0;
        }
        lrun_tensor_set_host_compute(t, p->host_compute);
    }
    return 1;
}

static const place places[] = {
    {"as loaded, ALL_DEVICE", LRUN_TIER_MMAP, LRUN_TIER_MMAP, LRUN_TIER_MMAP, -1, 0, LRUN_WEIGHT_MODE_ALL_DEVICE},
    {"device packed", LRUN_TIER_DEVICE, LRUN_TIER_DEVICE, LRUN_TIER_DEVICE, 1, 0, LRUN_WEIGHT_MODE_AS_PLACED},
    {"pinned packed, streamed (mode 2)", LRUN_TIER_PINNED, LRUN_TIER_PINNED, LRUN_TIER_HOST, 1, 0,
     LRUN_WEIGHT_MODE_AS_PLACED},
    {"host packed, host compute", LRUN_TIER_HOST, LRUN_TIER_HOST, LRUN_TIER_HOST, 1, 1, LRUN_WEIGHT_MODE_AS_PLACED},
    {"mixed forms, streamed", LRUN_TIER_HOST, LRUN_TIER_DEVICE, LRUN_TIER_PINNED, 2, 0, LRUN_WEIGHT_MODE_AS_PLACED},
    {"mixed forms, host compute", LRUN_TIER_PINNED, LRUN_TIER_HOST, LRUN_TIER_DEVICE, 2, 1,
     LRUN_WEIGHT_MODE_AS_PLACED},
    {"plain again", LRUN_TIER_HOST, LRUN_TIER_DEVICE, LRUN_TIER_HOST, 0, 0, LRUN_WEIGHT_MODE_AS_PLACED},
    {"back to the file", LRUN_TIER_MMAP, LRUN_TIER_MMAP, LRUN_TIER_MMAP, -1, 0, LRUN_WEIGHT_MODE_AS_PLACED},
};

/* Every matrix of m packed at placement has lrun pack's codec: PEX2 for
 * bf16 (a multiple of 8 values: all of these), PEX1 for f16. */
static int codecs_as_pack(lrun_model *m)
{
    int n = 0;
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        const lrun_tensor *t = lrun_model_tensor(m, i);
        if (!is_matrix(t) || !lrun_tensor_packed(t)) continue;
        const int want = lrun_tensor_dtype(t) == LRUN_DTYPE_BF16 ? 2 : 1;
        if (lrun_tensor_packed_codec(t) != want) {
            printf("# %s: codec %d, expected %d\n", lrun_tensor_name(t), lrun_tensor_packed_codec(t), want);
            return 0;
        }
        n++;
    }
    return n > 0;
}

/* Every placement of the model at path gives the reference's logits. */
static void every_placement(const char *path, const float *ref, const char *what, int from_packed_file)
{
    static float got[NEW * V];
    char label[160];
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    for (size_t i = 0; m && i < sizeof places / sizeof places[0]; i++) {
        place p = places[i];
        if (p.packed < 0) p.packed = from_packed_file; /* the mmap tier holds the file's form */
        lrun_engine_stats s;
        memset(&s, 0, sizeof s);
        const int ok = apply(m, &p) && greedy(m, p.mode, got, &s);
        snprintf(label, sizeof label, "%s: %s: bit-identical logits", what, p.name);
        CHECK(label, ok && !memcmp(got, ref, sizeof got));
        if (!from_packed_file && p.packed == 1) {
            snprintf(label, sizeof label, "%s: %s: packed as lrun pack would (bf16 PEX2, f16 PEX1)", what, p.name);
            CHECK(label, ok && codecs_as_pack(m));
        }
        if (p.mode == LRUN_WEIGHT_MODE_AS_PLACED && p.block_tier != LRUN_TIER_DEVICE && !p.host_compute &&
            p.packed == 1) {
            snprintf(label, sizeof label, "%s: %s: the streamed bytes are the packed ones", what, p.name);
            size_t packed = 0;
            for (int64_t t = 0; t < lrun_model_tensor_count(m); t++) {
                const lrun_tensor *x = lrun_model_tensor(m, t);
                if (lrun_tensor_layer(x) >= 0 && is_matrix(x)) packed += lrun_tensor_stored_bytes(x);
            }
            /* NEW chunks, each streaming every block's matrices once (the head too when off-device) */
            const uint64_t blocks = (uint64_t)packed * NEW;
            CHECK(label, s.bytes_streamed >= blocks && s.bytes_streamed < blocks + (uint64_t)NEW * 300 * 64 * 2 + 4096);
        }
    }
    lrun_model_free(m);
}

/* Loading a packed file keeps its matrices packed: the mmap tier holds packed bytes. */
static void kept_packed(const char *gg, const char *pk)
{
    lrun_model *a = fixture_load(gg, "cpu", 0, 2, -1), *b = fixture_load(pk, "cpu", 0, 2, -1);
    int n_packed = 0, all = 1;
    for (int64_t i = 0; a && b && i < lrun_model_tensor_count(b); i++) {
        const lrun_tensor *t = lrun_model_tensor(b, i);
        if (is_matrix(t)) {
            n_packed += lrun_tensor_packed(t);
            all = all && lrun_tensor_packed(t) && lrun_tensor_stored_bytes(t) < lrun_tensor_bytes(t);
        } else {
            all = all && !lrun_tensor_packed(t);
        }
    }
    CHECK("a packed file loads with every matrix packed, vectors plain", b && n_packed > 0 && all);
    const size_t pa = a ? lrun_model_tier_bytes(a, LRUN_TIER_MMAP) : 0, pb = b ? lrun_model_tier_bytes(b, LRUN_TIER_MMAP) : 0;
    printf("# mmap tier: plain %zu bytes, packed %zu bytes (%.3f)\n", pa, pb, pa ? (double)pb / (double)pa : 0.0);
    CHECK("its mmap tier counts the packed bytes", pb > 0 && pb < pa * 8 / 10);
    float v[64];
    lrun_tensor *t = b ? lrun_model_tensor(b, 0) : NULL;
    for (int64_t i = 0; b && i < lrun_model_tensor_count(b) && !lrun_tensor_packed(t); i++) t = lrun_model_tensor(b, i);
    lrun_tensor *ta = t && a ? lrun_model_find_tensor(a, lrun_tensor_name(t)) : NULL;
    float w[64];
    CHECK("lrun_tensor_read_f32 decodes a packed tensor",
          ta && lrun_tensor_read_f32(t, 100, 64, v) == LRUN_OK && lrun_tensor_read_f32(ta, 100, 64, w) == LRUN_OK &&
              !memcmp(v, w, sizeof v));
    CHECK("writing a packed tensor is refused",
          t && lrun_tensor_move(t, NULL, LRUN_TIER_HOST) == LRUN_OK && lrun_tensor_packed(t) &&
              lrun_tensor_write_f32(t, 0, 64, v) == LRUN_E_UNSUPPORTED);
    lrun_tensor *norm = b ? lrun_model_find_tensor(b, "output_norm.weight") : NULL;
    CHECK("packing an f32 tensor is LRUN_E_UNSUPPORTED",
          norm && lrun_tensor_move_form(norm, NULL, LRUN_TIER_HOST, 1) == LRUN_E_UNSUPPORTED);
    CHECK("the file's form only in mmap",
          t && lrun_tensor_move_form(t, NULL, LRUN_TIER_MMAP, 0) == LRUN_E_ARG && lrun_tensor_packed(t));
    lrun_model_free(a);
    lrun_model_free(b);
}

/* lrun_engine_size_placement_packed: a proposed packed placement sizes what init then takes. */
static void sizes(const char *gg)
{
    lrun_model *m = fixture_load(gg, "cpu", 0, 2, -1);
    const int64_t n = m ? lrun_model_tensor_count(m) : 0;
    lrun_tier *tiers = calloc((size_t)n + 1, sizeof *tiers);
    int8_t *hc = calloc((size_t)n + 1, 1), *pk = calloc((size_t)n + 1, 1);
    for (int64_t i = 0; m && i < n; i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        tiers[i] = is_matrix(t) && lrun_tensor_layer(t) != 1 ? LRUN_TIER_HOST : LRUN_TIER_DEVICE;
        pk[i] = (int8_t)is_matrix(t);
        hc[i] = (int8_t)(lrun_tensor_role(t) == LRUN_ROLE_LM_HEAD);
    }
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = 8,
                                 .weight_mode = LRUN_WEIGHT_MODE_AS_PLACED, .prefetch_layers = 1};
    lrun_placement_size ps;
    int ok = m && lrun_engine_size_placement_packed(&ps, m, &eo, tiers, hc, pk) == LRUN_OK;
    for (int64_t i = 0; ok && i < n; i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        ok = lrun_tensor_move_form(t, lrun_model_device(m), tiers[i], pk[i]) == LRUN_OK;
        lrun_tensor_set_host_compute(t, hc[i]);
    }
    /* packed sizes are known now: size again, as a planner would after packing */
    ok = ok && lrun_engine_size_placement_packed(&ps, m, &eo, tiers, hc, pk) == LRUN_OK;
    lrun_device *d = m ? lrun_model_device(m) : NULL;
    const size_t before = d ? lrun_device_used(d) : 0;
    lrun_engine *e = NULL;
    ok = ok && lrun_engine_init(&e, m, &eo) == LRUN_OK;
    lrun_engine_stats s;
    if (ok) lrun_engine_get_stats(e, &s);
    printf("# weights %zu, slots %zu (with the decode scratch), init %zu; taken %zu\n", ps.weight_bytes, ps.slot_bytes,
           ps.init_bytes, d ? lrun_device_used(d) - before : 0);
    CHECK("size_placement_packed: the device weights are the packed bytes", ok && ps.weight_bytes == before);
    CHECK("size_placement_packed: slots and decode scratch as init takes them", ok && s.slot_bytes == ps.slot_bytes);
    CHECK("size_placement_packed: init takes init_bytes", ok && lrun_device_used(d) - before == ps.init_bytes);
    lrun_engine_free(e);
    lrun_model_free(m);
    free(tiers);
    free(hc);
    free(pk);
}

/* The layouts a and b, field by field (PEX1's sections and PEX2's). */
static int same_packed_layout(const lrun_packed_layout *a, const lrun_packed_layout *b)
{
    const lrun_pex2_layout *x = &a->pex2, *y = &b->pex2;
    return a->codec == b->codec && a->dtype == b->dtype && a->n == b->n && a->nb == b->nb && a->rest == b->rest &&
           a->hi == b->hi && a->code1 == b->code1 && a->table == b->table && a->code2 == b->code2 &&
           a->esc == b->esc && a->code2_bytes == b->code2_bytes && a->esc_bytes == b->esc_bytes &&
           a->total == b->total && !memcmp(a->book1, b->book1, sizeof a->book1) &&
           !memcmp(a->book2, b->book2, sizeof a->book2) && x->n == y->n && x->nb == y->nb && x->n_exc == y->n_exc &&
           x->n_far == y->n_far && x->rest == y->rest && x->code == y->code && x->table == y->table &&
           x->super == y->super && x->exc == y->exc && x->far == y->far && x->total == y->total &&
           !memcmp(x->book1, y->book1, sizeof x->book1) && !memcmp(x->book2, y->book2, sizeof x->book2);
}

/* lrun_tensor_measure_packed: the packed size and codec packing would give, learned with the tensor left plain
 * (where it was, its bytes unchanged), and the layout packing then validates, field by field (bf16: measured from
 * the exponents, nothing encoded; f16: PEX1, encoded); a non-matrix is refused; sizing with it is what init then
 * takes (the planner's automatic choice, lua/lrun/pack_plan.lua). */
static void measured(const char *gg, lrun_dtype dtype)
{
    lrun_model *m = fixture_load(gg, "cpu", 0, 2, -1);
    lrun_model *b = fixture_load(gg, "cpu", 0, 2, -1);
    const int64_t n = m && b ? lrun_model_tensor_count(m) : 0;
    int ok = n > 0, n_matrix = 0;
    for (int64_t i = 0; ok && i < n; i++) {
        lrun_tensor *t = lrun_model_tensor(m, i), *u = lrun_model_tensor(b, i);
        size_t got = 1;
        if (!is_matrix(t)) {
            ok = lrun_tensor_measure_packed(t, &got) == LRUN_E_UNSUPPORTED && got == 0;
            continue;
        }
        n_matrix++;
        const lrun_tier tier = lrun_tensor_tier(t);
        ok = lrun_tensor_packed_bytes(t) == 0 && lrun_tensor_measure_packed(t, &got) == LRUN_OK && got > 0 &&
             got == lrun_tensor_packed_bytes(t) && !lrun_tensor_packed(t) && lrun_tensor_tier(t) == tier &&
             lrun_tensor_stored_bytes(t) == lrun_tensor_bytes(t) &&
             lrun_tensor_packed_codec(t) == (dtype == LRUN_DTYPE_BF16 ? 2 : 1);
        /* the same tensor packed by a placement: the size measured */
        ok = ok && lrun_tensor_move_form(u, NULL, LRUN_TIER_HOST, 1) == LRUN_OK &&
             lrun_tensor_packed_bytes(u) == got && same_packed_layout(&t->pk, &u->pk);
        size_t again = 0; /* known now: answered without an encode, the same */
        ok = ok && lrun_tensor_measure_packed(t, &again) == LRUN_OK && again == got;
    }
    char label[128];
    snprintf(label, sizeof label,
             "measure_packed, %s: sizes, codecs and layouts of placement's packing, the tensors left plain",
             dtype == LRUN_DTYPE_BF16 ? "bf16 (PEX2, measured)" : "f16 (PEX1, encoded)");
    CHECK(label, ok && n_matrix > 0);
    size_t dummy;
    CHECK("measure_packed: NULL arguments are refused",
          lrun_tensor_measure_packed(NULL, &dummy) == LRUN_E_ARG &&
              (!m || lrun_tensor_measure_packed(lrun_model_tensor(m, 0), NULL) == LRUN_E_ARG));
    /* sizing every matrix packed on the device after measuring: what init takes */
    lrun_tier *tiers = calloc((size_t)n + 1, sizeof *tiers);
    int8_t *pk = calloc((size_t)n + 1, 1);
    for (int64_t i = 0; i < n; i++) {
        tiers[i] = LRUN_TIER_DEVICE;
        pk[i] = (int8_t)is_matrix(lrun_model_tensor(m, i));
    }
    const lrun_engine_opts eo = {.n_seq_max = 1,
                                 .n_ctx_max = CTX,
                                 .n_batch_max = 8,
                                 .weight_mode = LRUN_WEIGHT_MODE_AS_PLACED,
                                 .prefetch_layers = 1};
    lrun_placement_size ps;
    ok = ok && lrun_engine_size_placement_packed(&ps, m, &eo, tiers, NULL, pk) == LRUN_OK;
    for (int64_t i = 0; ok && i < n; i++)
        ok = lrun_tensor_move_form(lrun_model_tensor(m, i), lrun_model_device(m), tiers[i], pk[i]) == LRUN_OK;
    lrun_device *d = m ? lrun_model_device(m) : NULL;
    CHECK("measure_packed: a placement sized from measured sizes takes those bytes",
          ok && lrun_device_used(d) == ps.weight_bytes);
    free(tiers);
    free(pk);
    lrun_model_free(m);
    lrun_model_free(b);
}

/* arch NULL: llama; phi3's fused attn_qkv is split at load, so its parts are
 * decoded at load and packed again at placement; qwen2 has f32 biases.
 * codec LRUN_PACK_CODEC_PEX2: the file's bf16 matrices are PEX2 (decoded by
 * the CPU range decode in every placement; phi3's parts packed again at
 * placement, as PEX2 too). A PEX1 file's phi3 parts are packed again as
 * PEX2: both codecs in one model. */
static void run(lrun_dtype dtype, int tied, const char *what, const char *arch, int codec)
{
    static float ref[NEW * V];
    const char *gg = path_of("m.gguf"), *pk = path_of("m.lrpk");
    make_model(gg, dtype, tied, arch);
    lrun_model *m = fixture_load(gg, "cpu", 0, 2, -1);
    const lrun_pack_opts po = {.n_threads = 2, .codec = codec};
    lrun_pack_stats ps = {0};
    const int ok = m && lrun_pack(gg, pk, &po, &ps) == LRUN_OK && (codec != LRUN_PACK_CODEC_PEX2 || ps.n_pex2 > 0) &&
                   greedy(m, LRUN_WEIGHT_MODE_ALL_DEVICE, ref, NULL);
    lrun_model_free(m);
    char label[128];
    snprintf(label, sizeof label, "%s: reference model and its packed file", what);
    CHECK(label, ok);
    if (!ok) return;
    if (dtype == LRUN_DTYPE_BF16 && !tied && !arch && codec == LRUN_PACK_CODEC_PEX1) kept_packed(gg, pk);
    snprintf(label, sizeof label, "%s packed file", what);
    every_placement(pk, ref, label, 1);
    if (codec == LRUN_PACK_CODEC_PEX2) return; /* packing the GGUF at placement: the PEX1 runs did it */
    snprintf(label, sizeof label, "%s GGUF packed at placement", what);
    every_placement(gg, ref, label, 0);
    if (dtype == LRUN_DTYPE_BF16 && tied && !arch) sizes(gg);
    if (!tied && !arch) measured(gg, dtype);
}

/* lrun pack of an HF directory: written as the GGUF llama.cpp's converter
 * would (Q/K rows back in GGUF order), packed; it loads packed and gives the
 * logits of the GGUF the directory was generated from. */
static void hf_pack(void)
{
    static float ref[NEW * V], got[NEW * V];
    const char *gg = path_of("hf.gguf"), *hf = path_of("hf"), *pk = path_of("hf.lrpk");
    lrun_model_gen_spec s = {.n_layer = 3, .n_embd = 64, .n_head = 4, .n_head_kv = 2, .n_ff = 160, .n_vocab = V,
                             .n_ctx = CTX, .weight_dtype = LRUN_DTYPE_BF16, .embd_dtype = LRUN_DTYPE_BF16,
                             .rope_freq_base = 10000, .rms_eps = 1e-5, .seed = 9, .n_threads = 1, .trained_stats = 1};
    lrun_pack_stats ps;
    memset(&ps, 0, sizeof ps);
    int ok = lrun_model_generate(gg, &s) == LRUN_OK && lrun_model_generate_hf(hf, &s, 2) == LRUN_OK;
    ok = ok && lrun_pack(hf, pk, NULL, &ps) == LRUN_OK;
    if (!ok) printf("# %s\n", lrun_last_error());
    printf("# HF directory packed: %lld tensors packed, %zu -> %zu bytes\n", (long long)ps.n_packed, ps.plain_bytes,
           ps.packed_bytes);
    CHECK("lrun pack of an HF directory writes a packed file, and no temporary file is left", ok && ps.n_packed > 0 &&
          access(path_of("hf.lrpk.hf.gguf.tmp"), F_OK) != 0);
    lrun_model *a = ok ? fixture_load(gg, "cpu", 0, 2, -1) : NULL, *b = ok ? fixture_load(pk, "cpu", 0, 2, -1) : NULL;
    ok = a && b && greedy(a, LRUN_WEIGHT_MODE_ALL_DEVICE, ref, NULL) && greedy(b, LRUN_WEIGHT_MODE_ALL_DEVICE, got, NULL);
    CHECK("it loads packed and gives the logits of the GGUF the directory came from, bit for bit",
          ok && lrun_tensor_packed(lrun_model_find_tensor(b, "blk.0.attn_q.weight")) && !memcmp(ref, got, sizeof ref));
    /* the directory's tokenizer.json travels in the packed file (tokenizer.huggingface.json) */
    lrun_model *c = ok ? fixture_load(hf, "cpu", 0, 2, -1) : NULL;
    const lrun_tokenizer *tb = b ? lrun_model_tokenizer(b) : NULL, *tc = c ? lrun_model_tokenizer(c) : NULL;
    static const char text[] = "Hello world, it's 2026!\n  tabs\tand <|im_end|> ünïcödé 12345";
    int32_t ib[128], ic[128];
    int64_t nb = -1, nc = -2;
    int same = tb && tc && lrun_tokenizer_encode(tb, text, sizeof text - 1, 1, 1, ib, 128, &nb) == LRUN_OK &&
               lrun_tokenizer_encode(tc, text, sizeof text - 1, 1, 1, ic, 128, &nc) == LRUN_OK && nb == nc && nb > 0 &&
               !memcmp(ib, ic, (size_t)nb * sizeof *ib);
    same = same && lrun_tokenizer_vocab_size(tb) == lrun_tokenizer_vocab_size(tc) &&
           lrun_tokenizer_eos(tb) == lrun_tokenizer_eos(tc) && lrun_tokenizer_bos(tb) == lrun_tokenizer_bos(tc);
    if (!same) printf("# tokenizers: %s %s, %lld vs %lld ids\n", tb ? "packed" : "-", tc ? "dir" : "-", (long long)nb,
                      (long long)nc);
    CHECK("the packed file carries the directory's tokenizer: the same ids, vocabulary and special tokens", same);
    lrun_model_free(a);
    lrun_model_free(b);
    lrun_model_free(c);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/lrun_test_packed_place_%d", (int)getpid());
    char cmd[128];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0) return 1;
    run(LRUN_DTYPE_BF16, 0, "bf16", NULL, LRUN_PACK_CODEC_PEX1);
    run(LRUN_DTYPE_BF16, 1, "bf16 tied", NULL, LRUN_PACK_CODEC_PEX1);
    run(LRUN_DTYPE_F16, 0, "f16", NULL, LRUN_PACK_CODEC_PEX1);
    run(LRUN_DTYPE_BF16, 0, "phi3 bf16", "phi3", LRUN_PACK_CODEC_PEX1);
    run(LRUN_DTYPE_BF16, 1, "qwen2 bf16 tied", "qwen2", LRUN_PACK_CODEC_PEX1);
    run(LRUN_DTYPE_BF16, 0, "bf16 PEX2", NULL, LRUN_PACK_CODEC_PEX2);
    run(LRUN_DTYPE_BF16, 0, "phi3 bf16 PEX2", "phi3", LRUN_PACK_CODEC_PEX2);
    run(LRUN_DTYPE_BF16, 1, "qwen2 bf16 tied PEX2", "qwen2", LRUN_PACK_CODEC_PEX2);
    hf_pack();
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return CHECK_DONE();
}
