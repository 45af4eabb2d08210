/* test_sigbus.c — a model file truncated while a CPU engine reads its
 * weights through the mapping (issue 16): the step returns LRUN_E_IO naming
 * the file instead of the process dying with SIGBUS, with one thread and
 * with the pool's workers faulting; later steps and a new engine on that
 * model fail the same way; the process goes on (a model loaded again from
 * a whole file gives the first tokens again); and a fault outside a step
 * still reaches the handler installed before the library's (the
 * launcher's message). Outside steps, the library's other readers of a
 * mapping do the same: the GGUF reader, lrun_model_load (of a GGUF and of
 * a packed file), the tokenizer, lrun_model_move_tensors, lrun_pack and
 * lrun_unpack, and steps on a packed model; the file is cut right after
 * the library maps it (cut_on_map.h) or between two calls.
 * core/mapguard.h says how. Skipped under TSan, and under ASan unless
 * ASAN_OPTIONS has handle_sigbus=0 (make asan's), which keep SIGBUS for
 * their own reports. */
#include "check.h"
#include "core/mapguard.h"
#include "cut_on_map.h"
#include "lrun.h"

#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* TSan keeps SIGBUS; ASan gives it up with handle_sigbus=0 (make asan sets
 * it), and then this test runs with LeakSanitizer watching every error path */
#if defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__SANITIZE_ADDRESS__)
#define UNDER_SANITIZER (!getenv("ASAN_OPTIONS") || !strstr(getenv("ASAN_OPTIONS"), "handle_sigbus=0"))
#else
#define UNDER_SANITIZER 0
#endif

enum { N_PROMPT = 3 };
static const int32_t prompt[N_PROMPT] = {1, 300, 42};

/* f32 weights (about 3 MiB) so that cutting the file at 8 KiB cuts the
 * weights the step reads, not only the header. */
static int make_model_of(const char *path, lrun_dtype dtype)
{
    const lrun_model_gen_spec s = {.n_layer = 2, .n_embd = 256, .n_head = 4, .n_head_kv = 2, .n_ff = 512,
                                   .n_vocab = 512, .n_ctx = 128, .weight_dtype = dtype, .embd_dtype = dtype,
                                   .tied_embeddings = 1, .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 3,
                                   .n_threads = 1};
    return lrun_model_generate(path, &s) == LRUN_OK;
}

static int make_model(const char *path) { return make_model_of(path, LRUN_DTYPE_F32); }

/* Prefills the prompt on a new sequence 0 and returns the argmax token, or
 * -1 with *st the failing status. */
static int32_t step_prompt(lrun_engine *e, float *logits, int64_t n_vocab, lrun_status *st)
{
    const int32_t seq[N_PROMPT] = {0, 0, 0};
    int64_t n_out = 0;
    lrun_engine_seq_truncate(e, 0, 0);
    *st = lrun_engine_step(e, N_PROMPT, prompt, seq, NULL, logits, 1, &n_out);
    return *st == LRUN_OK ? lrun_logits_argmax(logits, n_vocab) : -1;
}

static int32_t first_token(const char *path, int n_threads)
{
    lrun_model *m = NULL;
    lrun_engine *e = NULL;
    const lrun_load_opts lo = {.device = "cpu", .n_threads = n_threads, .rope_style = -1};
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = 64, .n_threads = n_threads};
    int32_t tok = -1;
    if (lrun_model_load(&m, path, &lo) == LRUN_OK && lrun_engine_init(&e, m, &eo) == LRUN_OK) {
        const int64_t nv = lrun_model_get_info(m)->n_vocab;
        float *logits = malloc((size_t)nv * sizeof *logits);
        lrun_status st;
        if (logits) tok = step_prompt(e, logits, nv, &st);
        free(logits);
    }
    lrun_engine_free(e);
    lrun_model_free(m);
    return tok;
}

/* Loads, steps, truncates the file, steps again: the error names the file. */
static void truncated_in_use(const char *path, int n_threads, int32_t want)
{
    char name[200];
    lrun_model *m = NULL;
    lrun_engine *e = NULL;
    const lrun_load_opts lo = {.device = "cpu", .n_threads = n_threads, .rope_style = -1};
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = 64, .n_threads = n_threads};
    if (!make_model(path) || lrun_model_load(&m, path, &lo) != LRUN_OK || lrun_engine_init(&e, m, &eo) != LRUN_OK) {
        CHECK(lrun_last_error(), 0);
        lrun_model_free(m);
        return;
    }
    const int64_t nv = lrun_model_get_info(m)->n_vocab;
    float *logits = malloc((size_t)nv * sizeof *logits);
    lrun_status st = LRUN_OK;
    snprintf(name, sizeof name, "%d thread(s): a step before the truncation gives the tokens", n_threads);
    CHECK(name, logits && step_prompt(e, logits, nv, &st) == want);
    snprintf(name, sizeof name, "%d thread(s): the library's SIGBUS handler is installed", n_threads);
    CHECK(name, lrun_mapguard_installed());

    CHECK("the file is truncated to 8 KiB", truncate(path, 8192) == 0);
    step_prompt(e, logits, nv, &st);
    const char *msg = lrun_last_error();
    snprintf(name, sizeof name, "%d thread(s): the step after it returns LRUN_E_IO naming the file", n_threads);
    CHECK(name, st == LRUN_E_IO && strstr(msg, path) && strstr(msg, "truncated"));
    printf("# %s\n", msg);
    step_prompt(e, logits, nv, &st);
    snprintf(name, sizeof name, "%d thread(s): so does every later step", n_threads);
    CHECK(name, st == LRUN_E_IO);
    lrun_engine *e2 = NULL;
    snprintf(name, sizeof name, "%d thread(s): and a new engine on that model", n_threads);
    CHECK(name, lrun_engine_init(&e2, m, &eo) == LRUN_E_IO && e2 == NULL);
    free(logits);
    lrun_engine_free(e);
    lrun_model_free(m);

    CHECK("the whole file written again", make_model(path));
    snprintf(name, sizeof name, "%d thread(s): loaded again, it gives the same token", n_threads);
    CHECK(name, first_token(path, n_threads) == want);
}

// ---------------------------------------------------------------- outside a step

static sigjmp_buf outside_jmp;
static volatile sig_atomic_t outside_seen;

static void outside_handler(int sig, siginfo_t *info, void *uctx)
{
    (void)sig, (void)info, (void)uctx;
    outside_seen = 1;
    siglongjmp(outside_jmp, 1);
}

/* A handler installed before the library's (as the launcher installs its
 * own) gets the faults outside a step. Run first, before any mapping is
 * registered, so that the library's handler chains to this one. */
static struct sigaction before;
static void install_outside_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = outside_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &before);
}

static void fault_outside_a_step(const char *path)
{
    lrun_gguf *g = NULL;
    if (!make_model(path) || lrun_gguf_open(&g, path) != LRUN_OK) {
        CHECK(lrun_last_error(), 0);
        return;
    }
    const int64_t last = lrun_gguf_tensor_count(g) - 1;
    const volatile uint8_t *p = lrun_gguf_tensor_data(g, last);
    CHECK("outside a step: the file is truncated to 8 KiB", truncate(path, 8192) == 0);
    outside_seen = 0;
    if (sigsetjmp(outside_jmp, 1) == 0) (void)p[0];
    CHECK("outside a step, the fault reaches the handler installed before the library's", outside_seen == 1);
    lrun_gguf_close(g);
}

// ---------------------------------------------------------------- outside a step, taken

static off_t file_bytes(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* An error from a read of a cut file: LRUN_E_IO naming the file and the cut. */
static void check_io(const char *name, lrun_status st, const char *path)
{
    const char *msg = lrun_last_error();
    CHECK(name, st == LRUN_E_IO && strstr(msg, path) && strstr(msg, "truncated"));
    printf("# %s\n", msg);
}

/* lrun_model_load with the file cut right after it is mapped, in the
 * metadata (the GGUF reader's parse) and in the tensor data (a packed
 * file's checks read every packed byte while loading). */
static void load_cut_on_map(const char *path, off_t cut, const char *name)
{
    lrun_model *m = NULL;
    const lrun_load_opts lo = {.device = "cpu", .n_threads = 2, .rope_style = -1};
    cut_on_map_arm(path, cut);
    const lrun_status st = lrun_model_load(&m, path, &lo);
    CHECK("the file was cut after it was mapped", cut_done == 1);
    check_io(name, st, path);
    CHECK("and no model comes back", m == NULL);
    lrun_model_free(m);
}

/* The tokenizer's reads of the metadata arrays, and moving tensors out of
 * the file (the streaming loader, lrun.load's placement), after a cut. */
static void readers_after_cut(const char *path)
{
    lrun_gguf *g = NULL;
    lrun_tokenizer *tok = NULL;
    CHECK("a model is written again", make_model(path));
    CHECK("the GGUF opens", lrun_gguf_open(&g, path) == LRUN_OK);
    CHECK("cut to 4 KiB", truncate(path, 4096) == 0);
    check_io("the tokenizer reading a cut GGUF's vocabulary returns LRUN_E_IO", lrun_tokenizer_init_gguf(&tok, g),
             path);
    CHECK("and no tokenizer", tok == NULL);
    lrun_gguf_close(g);

    lrun_model *m = NULL;
    const lrun_load_opts lo = {.device = "cpu", .n_threads = 2, .rope_style = -1};
    CHECK("a model is written again", make_model(path));
    CHECK("it loads", lrun_model_load(&m, path, &lo) == LRUN_OK);
    enum { MAX_T = 64 };
    int64_t index[MAX_T];
    lrun_tier tier[MAX_T];
    int64_t n = 0;
    while (n < MAX_T && lrun_model_tensor(m, n)) {
        index[n] = n;
        tier[n] = LRUN_TIER_HOST;
        n++;
    }
    CHECK("cut to half its size", truncate(path, file_bytes(path) / 2) == 0);
    check_io("moving its tensors to host memory returns LRUN_E_IO", lrun_model_move_tensors(m, n, index, tier), path);
    lrun_engine *e = NULL;
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = 64, .n_threads = 2};
    CHECK("and an engine on that model fails too", lrun_engine_init(&e, m, &eo) != LRUN_OK && e == NULL);
    lrun_model_free(m);
}

/* lrun_pack and lrun_unpack with their input cut once it is mapped: an
 * error, and no output file. */
static void pack_cut(const char *path, const char *packed, const char *out)
{
    const lrun_pack_opts po = {.n_threads = 2};
    CHECK("an f16 model is written", make_model_of(path, LRUN_DTYPE_F16));
    unlink(out);
    cut_on_map_arm(path, file_bytes(path) / 2);
    check_io("lrun_pack on an input cut once mapped returns LRUN_E_IO", lrun_pack(path, out, &po, NULL), path);
    CHECK("and writes no output", access(out, F_OK) != 0);

    CHECK("an f16 model is written again", make_model_of(path, LRUN_DTYPE_F16));
    CHECK("and packed", lrun_pack(path, packed, &po, NULL) == LRUN_OK);
    cut_on_map_arm(packed, file_bytes(packed) / 2);
    check_io("lrun_unpack on a packed input cut once mapped returns LRUN_E_IO", lrun_unpack(packed, out, &po),
             packed);
    CHECK("and writes no output", access(out, F_OK) != 0);
}

/* A packed model: loading it with its file cut in the entry table and in
 * the packed tensors; a model loaded whole, then cut: its next step
 * fails, and so does every later one. */
static void packed_cut(const char *path, const char *packed)
{
    const lrun_pack_opts po = {.n_threads = 2};
    CHECK("an f16 model is written and packed",
          make_model_of(path, LRUN_DTYPE_F16) && lrun_pack(path, packed, &po, NULL) == LRUN_OK);
    const off_t whole = file_bytes(packed);
    load_cut_on_map(packed, whole - 4096, "a packed file cut at its entry table: lrun_model_load returns LRUN_E_IO");
    CHECK("packed again", lrun_pack(path, packed, &po, NULL) == LRUN_OK);
    load_cut_on_map(packed, whole / 2, "a packed file cut in its tensors: lrun_model_load returns LRUN_E_IO");

    CHECK("packed again", lrun_pack(path, packed, &po, NULL) == LRUN_OK);
    lrun_model *m = NULL;
    lrun_engine *e = NULL;
    const lrun_load_opts lo = {.device = "cpu", .n_threads = 2, .rope_style = -1};
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = 64, .n_threads = 2};
    if (lrun_model_load(&m, packed, &lo) != LRUN_OK || lrun_engine_init(&e, m, &eo) != LRUN_OK) {
        CHECK(lrun_last_error(), 0);
        lrun_model_free(m);
        return;
    }
    const int64_t nv = lrun_model_get_info(m)->n_vocab;
    float *logits = malloc((size_t)nv * sizeof *logits);
    lrun_status st = LRUN_OK;
    CHECK("a packed model steps", logits && step_prompt(e, logits, nv, &st) >= 0);
    CHECK("the packed file is cut to 8 KiB", truncate(packed, 8192) == 0);
    step_prompt(e, logits, nv, &st);
    check_io("a step on the cut packed model returns LRUN_E_IO", st, packed);
    step_prompt(e, logits, nv, &st);
    CHECK("so does the next", st == LRUN_E_IO);
    free(logits);
    lrun_engine_free(e);
    lrun_model_free(m);
}

static void outside_steps(const char *path)
{
    char packed[80], out[80];
    snprintf(packed, sizeof packed, "%s.lrpk", path);
    snprintf(out, sizeof out, "%s.out", path);
    CHECK("a model is written again", make_model(path));
    load_cut_on_map(path, 4096, "a GGUF cut in its metadata once mapped: lrun_model_load returns LRUN_E_IO");
    readers_after_cut(path);
    pack_cut(path, packed, out);
    packed_cut(path, packed);
    unlink(packed);
    unlink(out);
    CHECK("a model is written again", make_model(path));
}

int main(void)
{
    if (UNDER_SANITIZER) {
        printf("ok 1 - # SKIP the sanitizer keeps SIGBUS for its own report\n1..1\n");
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/tmp/lrun-test-sigbus-%d.gguf", (int)getpid());
    install_outside_handler();
    CHECK("a model is generated", make_model(path));
    const int32_t want = first_token(path, 1);
    CHECK("it generates", want >= 0);
    CHECK("two threads give the same token", first_token(path, 2) == want);
    truncated_in_use(path, 1, want);
    truncated_in_use(path, 2, want);
    outside_steps(path);
    CHECK("after all that, a whole model gives the same token", first_token(path, 2) == want);
    fault_outside_a_step(path);
    sigaction(SIGBUS, &before, NULL);
    unlink(path);
    return CHECK_DONE();
}
