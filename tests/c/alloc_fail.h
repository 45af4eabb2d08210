/* alloc_fail.h — allocation-failure injection for the tests, header-only
 * like check.h: test_alloc_fail.c (CPU) and test_alloc_fail_gpu.c (CUDA).
 *
 * A test including this is linked with -Wl,--wrap for malloc, calloc,
 * realloc, posix_memalign, aligned_alloc, strdup, strndup and free
 * (Makefile: ALLOC_WRAP), so every allocation the library makes comes here
 * first. A count picks the Nth to fail; step_through runs a scenario once
 * with no failure to count its allocations, then once for each N. It tracks
 * the blocks it handed out (a set of pointers), so a block still live after
 * a failed run is a leak found in any build, not only under LeakSanitizer.
 * Allocations made inside other libraries (libc's own, cJSON's, PCRE2's,
 * the CUDA runtime's) are not seen: those are not linked through the
 * wrappers. */
#ifndef LRUN_TEST_ALLOC_FAIL_H
#define LRUN_TEST_ALLOC_FAIL_H

#ifndef ALLOC_FAIL_WRAPPERS_ONLY
#include "check.h"
#endif
#include "lrun.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------- the wrappers

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **out, size_t align, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
void __real_free(void *p);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long calls;    /* allocations seen since the last reset */
static long fail_at;  /* 1-based index of the allocation that fails; 0: none */
static int tracking;  /* record blocks in live[] */

/* The blocks handed out while tracking: an open-addressed set of pointers. */
enum { LIVE_CAP = 1 << 20 };
static void **live;
static long n_live;
#define TOMB ((void *)1)

static size_t slot_of(const void *p) { return ((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull >> 44; }

static void live_add(void *p)
{
    if (!p || !live) return;
    for (size_t i = slot_of(p) & (LIVE_CAP - 1);; i = (i + 1) & (LIVE_CAP - 1))
        if (live[i] == NULL || live[i] == TOMB) {
            live[i] = p;
            n_live++;
            return;
        }
}

static void live_remove(void *p)
{
    if (!p || !live) return;
    for (size_t i = slot_of(p) & (LIVE_CAP - 1);; i = (i + 1) & (LIVE_CAP - 1)) {
        if (live[i] == NULL) return; /* not ours: allocated before tracking or by another library */
        if (live[i] == p) {
            live[i] = TOMB;
            n_live--;
            return;
        }
    }
}

/* 1 when this allocation is the one chosen to fail (wrappers of other
 * allocators, such as the CUDA ones, call it too). */
static int count_and_fail(void)
{
    pthread_mutex_lock(&lock);
    const int fail = ++calls == fail_at;
    pthread_mutex_unlock(&lock);
    return fail;
}

static void track(void *p, void *old)
{
    if (!tracking) return;
    pthread_mutex_lock(&lock);
    if (old) live_remove(old);
    live_add(p);
    pthread_mutex_unlock(&lock);
}

void *__wrap_malloc(size_t n)
{
    if (count_and_fail()) return NULL;
    void *p = __real_malloc(n);
    track(p, NULL);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    if (count_and_fail()) return NULL;
    void *p = __real_calloc(n, size);
    track(p, NULL);
    return p;
}

void *__wrap_realloc(void *old, size_t n)
{
    if (n && count_and_fail()) return NULL; /* a failed realloc leaves the old block as it was */
    void *p = __real_realloc(old, n);
    if (p || !n) track(p, old);
    return p;
}

int __wrap_posix_memalign(void **out, size_t align, size_t n)
{
    if (count_and_fail()) return 12; /* ENOMEM */
    const int err = __real_posix_memalign(out, align, n);
    if (!err) track(*out, NULL);
    return err;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    if (count_and_fail()) return NULL;
    void *p = __real_aligned_alloc(align, n);
    track(p, NULL);
    return p;
}

char *__wrap_strdup(const char *s)
{
    const size_t n = strlen(s) + 1;
    char *p = __wrap_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

char *__wrap_strndup(const char *s, size_t max)
{
    const size_t n = strnlen(s, max);
    char *p = __wrap_malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void __wrap_free(void *p)
{
    if (p && tracking) {
        pthread_mutex_lock(&lock);
        live_remove(p);
        pthread_mutex_unlock(&lock);
    }
    __real_free(p);
}

/* test_alloc_fail_lua.c defines this: it takes the wrappers only, and the
 * Lua driver does the stepping. */
#ifndef ALLOC_FAIL_WRAPPERS_ONLY

static void arm(long n)
{
    pthread_mutex_lock(&lock);
    calls = 0;
    fail_at = n;
    pthread_mutex_unlock(&lock);
}

// ---------------------------------------------------------------- the scenario

enum { N_GEN = 4, MAX_PROMPT = 32 };

/* Loads path on scenario_device (unless given a model), encodes a prompt, prefills
 * it and decodes N_GEN greedy tokens into out. Frees what it made. */
static lrun_cache_kind cache_kind;                /* of the scenario's engine */
static const char *scenario_device = "cpu";       /* where it loads the model */
static const int64_t *scenario_split;             /* (2) blocks of a layer split's parts, or NULL: none */
static int scenario_placed;                       /* 1: AS_PLACED, weights read where they are (on cpu a
                                                   * loaded model's are in the file: every part streams its
                                                   * blocks' through its own slots) */

static lrun_status scenario(const char *path, lrun_model *given, int32_t out[N_GEN])
{
    lrun_model *m = given;
    lrun_engine *e = NULL;
    float *logits = NULL;
    lrun_status st = LRUN_OK;
    if (!m) {
        const lrun_load_opts o = {.device = scenario_device, .n_threads = 2, .rope_style = -1};
        st = lrun_model_load(&m, path, &o);
    }
    int32_t ids[MAX_PROMPT];
    int64_t n = 0;
    if (st == LRUN_OK) {
        static const char prompt[] = "Hello, allocations!";
        st = lrun_tokenizer_encode(lrun_model_tokenizer(m), prompt, sizeof prompt - 1, 1, 0, ids, MAX_PROMPT, &n);
        if (st == LRUN_OK && (n <= 0 || n > MAX_PROMPT)) st = LRUN_E_INTERNAL;
    }
    if (st == LRUN_OK) {
        const lrun_engine_opts eo = {.n_seq_max = 1,
                                     .n_ctx_max = 64,
                                     .n_batch_max = 16,
                                     .n_threads = 2,
                                     .cache_kind = cache_kind,
                                     .kv_residual_len = 2,
                                     .n_split = scenario_split ? 2 : 0,
                                     .split_layers = scenario_split,
                                     .weight_mode =
                                         scenario_placed ? LRUN_WEIGHT_MODE_AS_PLACED : LRUN_WEIGHT_MODE_ALL_DEVICE};
        st = lrun_engine_init(&e, m, &eo);
    }
    const int64_t nv = st == LRUN_OK ? lrun_model_get_info(m)->n_vocab : 0;
    if (st == LRUN_OK) {
        logits = __real_malloc((size_t)nv * sizeof *logits); /* the test's own, never failed */
        if (!logits) st = LRUN_E_OOM;
    }
    int32_t seq[MAX_PROMPT] = {0};
    for (int i = 0; st == LRUN_OK && i < N_GEN; i++) {
        int64_t n_out = 0;
        st = i == 0 ? lrun_engine_step(e, n, ids, seq, NULL, logits, 1, &n_out)
                    : lrun_engine_step(e, 1, &out[i - 1], seq, NULL, logits, 1, &n_out);
        if (st == LRUN_OK) out[i] = lrun_logits_argmax(logits, nv);
    }
    __real_free(logits);
    lrun_engine_free(e);
    if (!given) lrun_model_free(m);
    return st;
}

// ---------------------------------------------------------------- the test

/* Steps N through every allocation of scenario(path, given); returns the
 * allocation count. A run that fails must say so in a status and a message
 * and leave no block behind; a run that succeeds (an allocation whose
 * failure the library absorbed) must give the reference tokens. */
static long step_through(const char *label, const char *path, lrun_model *given, const int32_t want[N_GEN])
{
    int32_t got[N_GEN];
    const int verbose = getenv("LRUN_ALLOC_VERBOSE") != NULL; /* each failure's message */
    arm(0);
    tracking = 1;
    const lrun_status ref = scenario(path, given, got);
    const long total = calls;
    long failed_cleanly = 0, absorbed = 0, bad = 0, leaked = 0;
    char first_bad[200] = "";
    long device_leaks = 0;
    for (long k = 1; k <= total; k++) {
        const long before = n_live;
        const size_t dev_before = given ? lrun_device_used(lrun_model_device(given)) : 0;
        arm(k);
        memset(got, 0xff, sizeof got);
        const lrun_status st = scenario(path, given, got);
        arm(0);
        const char *msg = lrun_last_error();
        if (verbose) printf("# %s, allocation %ld: %s\n", label, k, st == LRUN_OK ? "absorbed" : msg);
        if (st == LRUN_OK) {
            absorbed++;
            if (memcmp(got, want, sizeof got) != 0) {
                if (!bad++) snprintf(first_bad, sizeof first_bad, "allocation %ld: ok but other tokens", k);
            }
        } else if (msg && *msg) {
            failed_cleanly++;
        } else if (!bad++) {
            snprintf(first_bad, sizeof first_bad, "allocation %ld: status %d without a message", k, (int)st);
        }
        if (given && lrun_device_used(lrun_model_device(given)) != dev_before) device_leaks++;
        if (n_live != before) {
            if (!leaked++ && !bad) snprintf(first_bad, sizeof first_bad, "allocation %ld: %ld blocks leaked (%s)", k,
                                            n_live - before, msg ? msg : "");
        }
    }
    tracking = 0;
    printf("# %s: %ld allocations; %ld failed with an error, %ld absorbed, %ld wrong, %ld leaking%s%s\n", label, total,
           failed_cleanly, absorbed, bad, leaked, *first_bad ? "; first: " : "", first_bad);
    char name[160];
    snprintf(name, sizeof name, "%s: the reference run succeeds", label);
    CHECK(name, ref == LRUN_OK && total > 0);
    snprintf(name, sizeof name, "%s: each of the %ld allocations failing gives an error or the same tokens", label, total);
    CHECK(name, bad == 0);
    snprintf(name, sizeof name, "%s: no failure leaks a block", label);
    CHECK(name, leaked == 0);
    if (given) {
        snprintf(name, sizeof name, "%s: no failure leaves device bytes held", label);
        CHECK(name, device_leaks == 0);
    }
    return total;
}

/* A layer split's step that fails part-way (allocation k of a 70-token
 * prompt that grows the paged cache past its first block, in either part)
 * leaves every part's sequence as it was: the same step then gives the
 * logits a fresh split engine gives. Returns the allocations of that step. */
static long split_rollback(lrun_model *m)
{
    static const int64_t halves[2] = {1, 1};
    const lrun_engine_opts eo = {.n_seq_max = 1, .n_ctx_max = 128, .n_batch_max = 32, .n_threads = 2,
                                 .n_split = 2, .split_layers = halves};
    const int64_t nv = lrun_model_get_info(m)->n_vocab;
    enum { N = 70 };
    int32_t tok[N], seq[N] = {0};
    for (int i = 0; i < N; i++) tok[i] = 40 + i;
    float *ref = __real_malloc((size_t)nv * sizeof *ref), *got = __real_malloc((size_t)nv * sizeof *got);
    lrun_engine *e = NULL;
    int64_t n_out = 0;
    int ok = ref && got && lrun_engine_init(&e, m, &eo) == LRUN_OK &&
             lrun_engine_step(e, N, tok, seq, NULL, ref, 1, &n_out) == LRUN_OK;
    lrun_engine_free(e);
    e = NULL;
    CHECK("split rollback: the reference step runs", ok);
    ok = ok && lrun_engine_init(&e, m, &eo) == LRUN_OK;
    arm(0);
    if (ok) ok = lrun_engine_step(e, N, tok, seq, NULL, got, 1, &n_out) == LRUN_OK && lrun_engine_seq_truncate(e, 0, 0) == LRUN_OK;
    const long total = calls;
    long failed = 0, bad = 0;
    for (long k = 1; ok && k <= total; k++) {
        arm(k);
        const lrun_status st = lrun_engine_step(e, N, tok, seq, NULL, got, 1, &n_out);
        arm(0);
        if (st == LRUN_OK) {
            bad += memcmp(got, ref, (size_t)nv * sizeof *got) != 0;
            (void)lrun_engine_seq_truncate(e, 0, 0);
            continue;
        }
        failed++;
        /* nothing changed: the same step again runs and gives the reference logits */
        bad += lrun_engine_seq_len(e, 0) != 0;
        bad += lrun_engine_step(e, N, tok, seq, NULL, got, 1, &n_out) != LRUN_OK ||
               memcmp(got, ref, (size_t)nv * sizeof *got) != 0;
        (void)lrun_engine_seq_truncate(e, 0, 0);
    }
    printf("# split rollback: %ld allocations in the step, %ld failed it, %ld wrong\n", total, failed, bad);
    CHECK("split rollback: a failed step leaves every part as it was, and the step then runs as on a fresh engine",
          ok && total > 0 && failed > 0 && bad == 0);
    lrun_engine_free(e);
    __real_free(ref);
    __real_free(got);
    return total;
}

/* The whole test: a generated model, then every allocation of loading it and
 * generating, and of engine init and generating on a model loaded before, in
 * each KV cache kind. */
static inline int alloc_fail_suite(void) /* inline: test_alloc_fail_gpu without CUDA does not call it */
{
    live = __real_calloc(LIVE_CAP, sizeof *live);
    char path[64];
    snprintf(path, sizeof path, "/tmp/lrun-test-alloc-fail-%d.gguf", (int)getpid());
    printf("# on %s\n", scenario_device);
    const lrun_model_gen_spec spec = {.n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2, .n_ff = 96,
                                      .n_vocab = 320, .n_ctx = 128, .weight_dtype = LRUN_DTYPE_Q8_0,
                                      .embd_dtype = LRUN_DTYPE_F16, .rope_freq_base = 10000.0, .rms_eps = 1e-5,
                                      .seed = 16, .n_threads = 1};
    CHECK("a tiny model is generated", lrun_model_generate(path, &spec) == LRUN_OK);

    int32_t want[N_GEN];
    CHECK("the scenario runs", scenario(path, NULL, want) == LRUN_OK);
    step_through("load, encode, engine, 4 tokens", path, NULL, want);

    /* a model loaded before: each failure inside engine init and the steps
     * leaves it working, with the same tokens as before */
    lrun_model *m = NULL;
    const lrun_load_opts o = {.device = scenario_device, .n_threads = 2, .rope_style = -1};
    if (lrun_model_load(&m, path, &o) == LRUN_OK) {
        step_through("engine and 4 tokens on a loaded model", path, m, want);
        int32_t again[N_GEN];
        CHECK("the loaded model still generates the same tokens", scenario(path, m, again) == LRUN_OK &&
                                                                      memcmp(again, want, sizeof want) == 0);
        /* the other cache kinds allocate their own stores, slots and rings */
        static const lrun_cache_kind kinds[] = {LRUN_CACHE_KIND_STATIC, LRUN_CACHE_KIND_OFFLOADED,
                                                LRUN_CACHE_KIND_OFFLOADED_STATIC, LRUN_CACHE_KIND_QUANTIZED};
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
            cache_kind = kinds[i];
            char label[80];
            snprintf(label, sizeof label, "engine and 4 tokens, %s cache", lrun_cache_kind_name(kinds[i]));
            int32_t ref[N_GEN];
            if (scenario(path, m, ref) == LRUN_OK) step_through(label, path, m, ref);
            else CHECK(lrun_last_error(), 0);
        }
        cache_kind = LRUN_CACHE_KIND_DYNAMIC;
        { /* both backends run a layer split's parts (runs_parts in runtime/backend.h) */
            static const int64_t halves[2] = {1, 1};
            int32_t ref[N_GEN];
            scenario_split = halves;
            if (scenario(path, m, ref) == LRUN_OK && memcmp(ref, want, sizeof ref) == 0)
                step_through("engine and 4 tokens, a layer split in two", path, m, ref);
            else CHECK("a layer split in two generates what one engine does", 0);
            /* the same split AS_PLACED: on cpu each part streams its blocks' weights into its own slots */
            scenario_placed = 1;
            if (scenario(path, m, ref) == LRUN_OK && memcmp(ref, want, sizeof ref) == 0)
                step_through("engine and 4 tokens, a layer split in two, each part streaming its weights", path, m,
                             ref);
            else CHECK("a layer split in two streaming its weights generates what one engine does", 0);
            scenario_placed = 0;
            scenario_split = NULL;
            split_rollback(m);
        }
        lrun_model_free(m);
    } else {
        CHECK(lrun_last_error(), 0);
    }
    unlink(path);
    __real_free(live);
    return CHECK_DONE();
}

#endif /* ALLOC_FAIL_WRAPPERS_ONLY */

#endif
