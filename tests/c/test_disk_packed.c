/* test_disk_packed.c — packed weights (docs/packed.md) in LRUN_TIER_DISK on
 * the CPU engine: a packed model file's matrices are read packed from the
 * file (residency/disk_reader.c, fewer bytes than the plain weights) into
 * their slots' aligned regions and decoded there by the fill
 * (residency/weight_ring.c). Logits are bit-identical to the resident run of
 * the plain GGUF at k = 1 and 2, beside packed host and mmap matrices, with
 * reads cut into many small requests; the disk bytes are the packed ones;
 * the planner's slot bytes are what init takes. */
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"

enum { L = 3, D = 256, H = 4, HK = 2, F = 512, V = 500, CTX = 64, STEPS = 5 };

static char gguf[256], packed[300];

static lrun_engine *make_engine(lrun_model *m, lrun_weight_mode mode, int k)
{
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = 4, .weight_mode = mode,
                                .prefetch_layers = k};
    lrun_engine *e = NULL;
    if (lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    return e;
}

/* A 7-token prompt (chunks of 4 and 3), then greedy decode: STEPS + 1 logits rows. */
static int run(lrun_engine *e, float *logits)
{
    const int32_t prompt[7] = {1, 17, 42, 99, 123, 7, 260};
    const int32_t seq[7] = {0};
    int64_t n_out = 0;
    if (lrun_engine_step(e, 7, prompt, seq, NULL, logits, 1, &n_out) != LRUN_OK || n_out != 1) {
        printf("# prompt: %s\n", lrun_last_error());
        return 0;
    }
    for (int s = 0; s < STEPS; s++) {
        int32_t tok = lrun_logits_argmax(logits + (size_t)s * V, V);
        if (lrun_engine_step(e, 1, &tok, seq, NULL, logits + (size_t)(s + 1) * V, 1, &n_out) != LRUN_OK) {
            printf("# step: %s\n", lrun_last_error());
            return 0;
        }
    }
    return 1;
}

static int is_matrix(lrun_role r)
{
    return r == LRUN_ROLE_ATTN_Q || r == LRUN_ROLE_ATTN_K || r == LRUN_ROLE_ATTN_V || r == LRUN_ROLE_ATTN_OUTPUT ||
           r == LRUN_ROLE_FFN_GATE || r == LRUN_ROLE_FFN_UP || r == LRUN_ROLE_FFN_DOWN;
}

/* Matrices and the head to tier_of(layer) (the head: L), the rest on the
 * device, each in its file's form; *plain, *stored: the streamed weights'
 * plain and packed bytes. */
static void place(lrun_model *m, const lrun_tier tier_of[L + 1], size_t *plain, size_t *stored)
{
    *plain = *stored = 0;
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        const lrun_role r = lrun_tensor_role(t);
        lrun_tier tier = LRUN_TIER_DEVICE;
        if (is_matrix(r)) tier = tier_of[lrun_tensor_layer(t)];
        if (r == LRUN_ROLE_LM_HEAD) tier = tier_of[L];
        lrun_tensor_set_host_compute(t, 0);
        if (lrun_tensor_move(t, lrun_model_device(m), tier) != LRUN_OK) printf("# move: %s\n", lrun_last_error());
        if (tier == LRUN_TIER_DEVICE) continue;
        *plain += lrun_tensor_bytes(t);
        *stored += lrun_tensor_stored_bytes(t);
    }
}

static const lrun_tier all_disk[L + 1] = {LRUN_TIER_DISK, LRUN_TIER_DISK, LRUN_TIER_DISK, LRUN_TIER_DISK};

static void test_disk_packed(const float *ref)
{
    float got[(STEPS + 1) * V];
    lrun_model *m = fixture_load(packed, "cpu", 0, 2, -1);
    lrun_tensor *q = m ? lrun_model_find_tensor(m, "blk.0.attn_q.weight") : NULL;
    CHECK("the packed file's matrices are packed in the file", q && lrun_tensor_file_packed(q));
    size_t plain, stored;
    place(m, all_disk, &plain, &stored);
    CHECK("on disk they stay packed", q && lrun_tensor_packed(q) && stored < plain);
    printf("# streamed per chunk: %zu bytes plain, %zu packed\n", plain, stored);
    for (int k = 1; k <= 2; k++) {
        char name[128];
        lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, k);
        snprintf(name, sizeof name, "packed on disk, k = %d: logits bit-identical to the resident plain run", k);
        CHECK(name, e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
        lrun_engine_stats s;
        lrun_engine_get_stats(e, &s);
        const uint64_t chunks = 2 + STEPS;
        printf("# k = %d: %llu bytes read from the disk, %llu streamed\n", k, (unsigned long long)s.disk_bytes_read,
               (unsigned long long)s.bytes_streamed);
        snprintf(name, sizeof name, "k = %d: the packed bytes are streamed and read, fewer than the plain ones", k);
        /* each read rounds out to whole 4 KiB blocks: at most two more per tensor (22 of them) */
        CHECK(name, s.bytes_streamed == chunks * stored && s.disk_bytes_read >= s.bytes_streamed &&
                        s.disk_bytes_read <= chunks * (stored + 22 * 8192) && s.disk_bytes_read < chunks * plain);
        lrun_placement_size size;
        const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = 4, .prefetch_layers = k};
        snprintf(name, sizeof name, "k = %d: the planner's slot bytes are what init took", k);
        CHECK(name, e && lrun_engine_size_placement(&size, m, &o, NULL, NULL) == LRUN_OK &&
                        size.slot_bytes == s.slot_bytes);
        lrun_engine_free(e);
    }
    const lrun_tier mixed[L + 1] = {LRUN_TIER_DISK, LRUN_TIER_HOST, LRUN_TIER_MMAP, LRUN_TIER_DISK};
    place(m, mixed, &plain, &stored);
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    CHECK("packed on disk beside packed host and mmap: bit-identical", e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    lrun_engine_free(e);
    place(m, all_disk, &plain, &stored);
    setenv("LRUN_DISK_REQUEST", "8192", 1);
    setenv("LRUN_DISK_THREADS", "3", 1);
    e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    CHECK("packed on disk, 8 KiB requests over 3 threads: bit-identical",
          e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    unsetenv("LRUN_DISK_REQUEST");
    unsetenv("LRUN_DISK_THREADS");
    lrun_engine_free(e);
    lrun_model_free(m);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* every line out before a crash */
    /* beside the test program (the build directory: a real disk, unlike a tmpfs /tmp) */
    char self[200];
    snprintf(self, sizeof self, "%s", argc > 0 ? argv[0] : "./x");
    snprintf(gguf, sizeof gguf, "%s/lrun_test_disk_packed_%d.gguf", dirname(self), (int)getpid());
    snprintf(packed, sizeof packed, "%s.packed", gguf);
    const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                      .n_ctx = CTX, .weight_dtype = LRUN_DTYPE_BF16, .embd_dtype = LRUN_DTYPE_BF16,
                                      .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 93, .n_threads = 1};
    if (lrun_model_generate(gguf, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    CHECK("pack the model", lrun_pack(gguf, packed, NULL, NULL) == LRUN_OK);
    float ref[(STEPS + 1) * V];
    lrun_model *m = fixture_load(gguf, "cpu", 0, 2, -1);
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_ALL_DEVICE, 0);
    CHECK("resident run of the plain model", e && run(e, ref));
    lrun_engine_free(e);
    lrun_model_free(m);
    test_disk_packed(ref);
    remove(packed);
    remove(gguf);
    return CHECK_DONE();
}
