/* test_packed_file.c — the packed model file: pack then unpack gives the GGUF
 * back byte for byte; a packed model loads (mode 1) and gives the same
 * greedy tokens and bit-identical logits; one crafted bad file per rule of
 * the format is rejected with LRUN_E_FORMAT, never a crash. */
#include "check.h"
#include "fixtures.h"
#include "lrun.h"
#include "packed/packed_file.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dir_files.h" /* dir, path_of, slurp, spit */

static void make_model(const char *path, lrun_dtype dtype)
{
    lrun_model_gen_spec s = {.n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2, .n_ff = 160, .n_vocab = 300,
                             .n_ctx = 64, .weight_dtype = dtype, .embd_dtype = dtype, .rope_freq_base = 10000,
                             .rms_eps = 1e-5, .seed = 11, .n_threads = 1};
    if (lrun_model_generate(path, &s) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
}

// ---------------------------------------------------------------- round trip of the file

static void round_trip(lrun_dtype dtype, const char *name)
{
    char label[96];
    const char *gg = path_of("m.gguf"), *pk = path_of("m.lrpk"), *back = path_of("back.gguf");
    make_model(gg, dtype);
    lrun_pack_stats st = {0};
    const lrun_pack_opts o = {.n_threads = 2};
    snprintf(label, sizeof label, "%s: lrun_pack writes a packed file", name);
    CHECK(label, lrun_pack(gg, pk, &o, &st) == LRUN_OK && st.n_packed == 16 && st.n_raw == 5);
    printf("# %s: %zu -> %zu bytes, tensors %.4f of plain\n", name, st.in_bytes, st.out_bytes,
           st.plain_bytes ? (double)st.packed_bytes / (double)st.plain_bytes : 0.0);
    snprintf(label, sizeof label, "%s: unpack gives the GGUF back byte for byte", name);
    size_t na = 0, nb = 0;
    int ok = lrun_unpack(pk, back, &o) == LRUN_OK;
    uint8_t *a = slurp(gg, &na), *b = ok ? slurp(back, &nb) : NULL;
    CHECK(label, ok && a && b && na == nb && !memcmp(a, b, na));
    free(a);
    free(b);
}

// ---------------------------------------------------------------- mode 1: same tokens, same logits

static int greedy(const char *path, int32_t *tokens, float *logits, int64_t n_vocab, int n_new)
{
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = NULL;
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = 64, .n_batch_max = 64};
    int ok = m && lrun_engine_init(&e, m, &eo) == LRUN_OK;
    int32_t prompt[4] = {1, 50, 120, 7}, seq[4] = {0, 0, 0, 0};
    int64_t n_out = 0;
    ok = ok && lrun_engine_step(e, 4, prompt, seq, NULL, logits, 1, &n_out) == LRUN_OK;
    for (int i = 0; ok && i < n_new; i++) {
        const float *row = logits + (int64_t)i * n_vocab;
        int32_t best = 0;
        for (int64_t v = 1; v < n_vocab; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        tokens[i] = best;
        if (i + 1 < n_new) ok = lrun_engine_step(e, 1, &best, seq, NULL, logits + (int64_t)(i + 1) * n_vocab, 1, &n_out) == LRUN_OK;
    }
    lrun_engine_free(e);
    lrun_model_free(m);
    return ok;
}

static void mode1(lrun_dtype dtype, const char *name)
{
    enum { V = 300, NEW = 8 };
    static float la[NEW * V], lb[NEW * V];
    int32_t ta[NEW], tb[NEW];
    char label[96];
    const char *gg = path_of("m1.gguf"), *pk = path_of("m1.lrpk");
    make_model(gg, dtype);
    int ok = lrun_pack(gg, pk, NULL, NULL) == LRUN_OK && greedy(gg, ta, la, V, NEW) && greedy(pk, tb, lb, V, NEW);
    snprintf(label, sizeof label, "%s: a packed model loads and gives the same greedy tokens", name);
    CHECK(label, ok && !memcmp(ta, tb, sizeof ta));
    snprintf(label, sizeof label, "%s: and bit-identical logits", name);
    CHECK(label, ok && !memcmp(la, lb, sizeof la));
}

// ---------------------------------------------------------------- crafted bad files, one per rule

static const uint8_t *good;
static size_t good_n;

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

#define ENTRY(i) (LRUN_PACKED_FILE_HEADER + (size_t)(i) * LRUN_PACKED_ENTRY_BYTES)

/* The file with edit applied must fail to open, or fail to load when at_load. */
static void bad_rule(const char *rule, void (*edit)(uint8_t *b, size_t *n), int at_load)
{
    size_t n = good_n;
    uint8_t *b = malloc(good_n + 64);
    memcpy(b, good, good_n);
    edit(b, &n);
    const char *p = path_of("bad.lrpk");
    spit(p, b, n);
    lrun_packed_file *f = NULL;
    lrun_status st = lrun_packed_file_open(&f, p);
    if (at_load) {
        CHECK("(the frame of that file is fine)", st == LRUN_OK);
        lrun_packed_file_close(f);
        lrun_model *m = NULL;
        st = lrun_model_load(&m, p, NULL);
        lrun_model_free(m);
    }
    printf("# %s: %s\n", rule, lrun_last_error());
    CHECK(rule, st == LRUN_E_FORMAT && strstr(lrun_last_error(), "bad.lrpk"));
    free(b);
}

static uint64_t n_entries(const uint8_t *b) { return get64(b + 32); }
static size_t packed_start(const uint8_t *b) { return ENTRY(n_entries(b)) + (size_t)get64(b + 16); }

static void e_short(uint8_t *b, size_t *n) { (void)b; *n = 20; }
static void e_magic(uint8_t *b, size_t *n) { (void)n; b[3] ^= 0x20; }
static void e_version(uint8_t *b, size_t *n) { (void)n, put32(b + 8, LRUN_PACKED_FILE_VERSION + 1); }
static void e_version0(uint8_t *b, size_t *n) { (void)n, put32(b + 8, 0); }
static void e_reserved(uint8_t *b, size_t *n) { (void)n; put32(b + 12, 1); }
static void e_longer(uint8_t *b, size_t *n) { b[(*n)++] = 0; }
static void e_count(uint8_t *b, size_t *n) { (void)n; put64(b + 32, (uint64_t)1 << 62); }
static void e_head(uint8_t *b, size_t *n) { (void)n; put64(b + 16, get64(b + 16) + 8); }
static void e_plain_out(uint8_t *b, size_t *n) { (void)n; put64(b + ENTRY(0) + 8, get64(b + 24) + 1); }
static void e_plain_overlap(uint8_t *b, size_t *n) { (void)n; put64(b + ENTRY(1), get64(b + ENTRY(0))); }
static void e_packed_out(uint8_t *b, size_t *n) { (void)n; put64(b + ENTRY(2) + 16, get64(b + 40)); }
static void e_packed_align(uint8_t *b, size_t *n) { (void)n; put64(b + ENTRY(2) + 16, get64(b + ENTRY(2) + 16) + 8); }
static void e_packed_overlap(uint8_t *b, size_t *n) { (void)n; put64(b + ENTRY(1) + 16, get64(b + ENTRY(0) + 16)); }
static void e_dtype(uint8_t *b, size_t *n) { (void)n; put32(b + ENTRY(1) + 36, 77); }
static void e_raw_size(uint8_t *b, size_t *n) { (void)n; put64(b + ENTRY(1) + 24, get64(b + ENTRY(1) + 24) - 4); }
static void e_codec_dtype(uint8_t *b, size_t *n) { (void)n; put32(b + ENTRY(1) + 32, 1); } /* an f32 norm "packed" */
static void e_codec(uint8_t *b, size_t *n) { (void)n; put32(b + ENTRY(0) + 32, 9); }
static void e_plain_odd(uint8_t *b, size_t *n)
{
    (void)n;
    put64(b + ENTRY(0), get64(b + ENTRY(0)) + 1);
} /* packed: 16-bit values at an odd byte */
static void e_data_tail(uint8_t *b, size_t *n) { (void)n; put64(b + 24, get64(b + 24) + ((uint64_t)1 << 21)); }
static void e_plain_gap(uint8_t *b, size_t *n)
{
    (void)n; /* the last tensor 2 MiB further, the data section as much longer */
    const size_t last = ENTRY(n_entries(b) - 1);
    put64(b + last, get64(b + last) + ((uint64_t)1 << 21));
    put64(b + 24, get64(b + 24) + ((uint64_t)1 << 21));
}
static void e_gap(uint8_t *b, size_t *n)
{
    (void)n; /* the byte after the first tensor, before the second (aligned) */
    b[packed_start(b) + get64(b + ENTRY(0) + 16) + get64(b + ENTRY(0) + 24)] = 1;
}
static void e_codebook(uint8_t *b, size_t *n)
{
    (void)n; /* tensor 0's book1[1] = book1[0] */
    uint8_t *t = b + packed_start(b) + get64(b + ENTRY(0) + 16);
    t[17] = t[16];
}
static void e_gguf_head(uint8_t *b, size_t *n) { (void)n; b[ENTRY(n_entries(b)) + 0] = 'X'; }
static void e_entry_dtype(uint8_t *b, size_t *n) { (void)n; put32(b + ENTRY(1) + 36, LRUN_DTYPE_F16); put64(b + ENTRY(1) + 8, get64(b + ENTRY(1) + 8)); }

static void bad_files(void)
{
    char gg[128], pk[128]; /* path_of's buffers are reused by the rules */
    snprintf(gg, sizeof gg, "%s", path_of("b.gguf"));
    snprintf(pk, sizeof pk, "%s", path_of("b.lrpk"));
    make_model(gg, LRUN_DTYPE_BF16);
    size_t n = 0;
    uint8_t *b = lrun_pack(gg, pk, NULL, NULL) == LRUN_OK ? slurp(pk, &n) : NULL;
    if (!b) {
        CHECK("the good file for the bad ones", 0);
        return;
    }
    good = b;
    good_n = n;
    bad_rule("shorter than the header", e_short, 0);
    bad_rule("bad magic", e_magic, 0);
    bad_rule("unknown version", e_version, 0);
    bad_rule("version 0", e_version0, 0);
    bad_rule("reserved field not zero", e_reserved, 0);
    bad_rule("a byte past the sections", e_longer, 0);
    bad_rule("entry count overflows", e_count, 0);
    bad_rule("head size off", e_head, 0);
    bad_rule("plain range outside the data", e_plain_out, 0);
    bad_rule("plain ranges overlap", e_plain_overlap, 0);
    bad_rule("packed values at an odd byte of the unpacked file", e_plain_odd, 0);
    CHECK("(that rule is the alignment's)", strstr(lrun_last_error(), "not 2-byte aligned") != NULL);
    bad_rule("a gap of 2 MiB between plain ranges", e_plain_gap, 0);
    bad_rule("data section 2 MiB longer than its tensors", e_data_tail, 0);
    bad_rule("packed range outside the section", e_packed_out, 0);
    bad_rule("packed offset not aligned", e_packed_align, 0);
    bad_rule("packed ranges overlap", e_packed_overlap, 0);
    bad_rule("unknown dtype", e_dtype, 0);
    bad_rule("raw entry of the wrong size", e_raw_size, 0);
    bad_rule("packed codec on an f32 tensor", e_codec_dtype, 0);
    bad_rule("unknown codec", e_codec, 0);
    bad_rule("padding byte not zero", e_gap, 0);
    bad_rule("packed tensor with a bad codebook", e_codebook, 1);
    bad_rule("embedded GGUF head is bad", e_gguf_head, 1);
    bad_rule("entry dtype differs from the GGUF tensor", e_entry_dtype, 1);
    lrun_model *m = NULL;
    CHECK("the good file still loads", lrun_model_load(&m, pk, NULL) == LRUN_OK);
    lrun_model_free(m);
    free(b);
}

// ---------------------------------------------------------------- files of version 1

/* The file at pk with its version field made 1, at old. */
static void as_version1(const char *pk, const char *old)
{
    size_t n = 0;
    uint8_t *b = slurp(pk, &n);
    if (b && n >= LRUN_PACKED_FILE_HEADER) put32(b + 8, 1), spit(old, b, n);
    free(b);
}

/* A version-1 file (PEX2's block table was 12 bytes a block then) of stored
 * and PEX1 tensors loads and unpacks as ever; one with a PEX2 tensor is
 * refused at open, by load and by unpack, naming the file and the tensor
 * and saying to pack again. */
static void version1(void)
{
    enum { V = 300, NEW = 4 };
    static float la[NEW * V], lb[NEW * V];
    int32_t ta[NEW], tb[NEW];
    char gg[128], pk[128], old[128], back[128];
    snprintf(gg, sizeof gg, "%s", path_of("v1.gguf"));
    snprintf(pk, sizeof pk, "%s", path_of("v1.lrpk"));
    snprintf(old, sizeof old, "%s", path_of("v1_old.lrpk"));
    snprintf(back, sizeof back, "%s", path_of("v1_back.gguf"));
    make_model(gg, LRUN_DTYPE_BF16);
    const lrun_pack_opts pex1 = {.n_threads = 2}, pex2 = {.n_threads = 2, .codec = LRUN_PACK_CODEC_PEX2};
    int ok = lrun_pack(gg, pk, &pex1, NULL) == LRUN_OK;
    as_version1(pk, old);
    lrun_packed_file *f = NULL;
    ok = ok && lrun_packed_file_open(&f, old) == LRUN_OK && f->version == 1;
    lrun_packed_file_close(f);
    size_t na = 0, nb = 0;
    const int un = ok && lrun_unpack(old, back, &pex1) == LRUN_OK;
    uint8_t *a = slurp(gg, &na), *b = un ? slurp(back, &nb) : NULL;
    CHECK("a version-1 file of PEX1 and stored tensors opens and unpacks to the GGUF byte for byte",
          ok && a && b && na == nb && !memcmp(a, b, na));
    free(a), free(b);
    CHECK("and loads with the plain file's tokens and logits",
          greedy(gg, ta, la, V, NEW) && greedy(old, tb, lb, V, NEW) && !memcmp(ta, tb, sizeof ta) &&
              !memcmp(la, lb, sizeof la));

    ok = lrun_pack(gg, pk, &pex2, NULL) == LRUN_OK;
    as_version1(pk, old);
    lrun_model *m = NULL;
    const lrun_status st = lrun_model_load(&m, old, NULL);
    lrun_model_free(m);
    printf("# %s\n", lrun_last_error());
    CHECK("a version-1 file with a PEX2 tensor is refused at load, naming the file and the tensor, saying to repack",
          ok && st == LRUN_E_FORMAT && strstr(lrun_last_error(), old) &&
              strstr(lrun_last_error(), "tensor 'token_embd.weight'") && strstr(lrun_last_error(), "version-1") &&
              strstr(lrun_last_error(), "lrun pack"));
    CHECK("and by unpack", lrun_unpack(old, back, &pex2) == LRUN_E_FORMAT && strstr(lrun_last_error(), "lrun pack"));
    f = NULL;
    CHECK("and by lrun_packed_file_open", lrun_packed_file_open(&f, old) == LRUN_E_FORMAT && !f);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/lrun_test_packed_file_%d", (int)getpid());
    char cmd[128];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0) return 1;
    round_trip(LRUN_DTYPE_BF16, "bf16");
    round_trip(LRUN_DTYPE_F16, "f16");
    mode1(LRUN_DTYPE_BF16, "bf16");
    mode1(LRUN_DTYPE_F16, "f16");
    bad_files();
    version1();
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return CHECK_DONE();
}
