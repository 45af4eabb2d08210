/* test_disk_tier_gpu.c — disk-tier weights on the CUDA engine
 * (runtime/cuda/engine_cuda_offload.c: direct reads from the model file into
 * the pinned staging buffers, then the same DMA as host and mmap sources)
 * against the fully resident CUDA run: logits of a prompt and of greedy
 * steps bit-identical with every matrix and the head on disk at k = 1 and 2,
 * mixed with pinned and mmap sources, with an LM head larger than one
 * staging buffer (several reads, each landing at its own offset), with many
 * small requests; the stats count the reads and the disk's stalls; a
 * truncated file is an LRUN_E_IO naming the tensor, not a SIGBUS. Skipped
 * without a GPU. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "disk_fixture.h"
#include "fixtures.h"
#include "lrun.h"

/* the bf16 head is V x D x 2 = 40 MiB: more than one 32 MiB staging buffer */
enum { L = 3, D = 512, H = 8, HK = 4, F = 1024, V = 40960, CTX = 128, NP = 12, ND = 6 };

static char path[256];

/* k < 0: the resident reference (ALL_DEVICE: every weight moved to the device at init) */
static lrun_engine *make_engine(lrun_model *m, int k)
{
    return disk_engine(m, k < 0 ? LRUN_WEIGHT_MODE_ALL_DEVICE : LRUN_WEIGHT_MODE_AS_PLACED, k < 0 ? 0 : k, CTX, 16);
}

/* A prompt of NP tokens (last row's logits), then ND greedy steps: ND + 1 rows. */
static int run(lrun_engine *e, float *logits)
{
    int32_t prompt[NP];
    for (int i = 0; i < NP; i++) prompt[i] = 1 + (i * 37) % (V - 1);
    return disk_run(e, NP, prompt, ND, V, logits);
}

/* Matrices and the head to tier_of(layer) (the head: L); the rest on the device. */
static size_t place(lrun_model *m, const lrun_tier tier_of[L + 1])
{
    size_t plain, stored;
    disk_place(m, tier_of, L, -1, &plain, &stored);
    return plain;
}

static const lrun_tier all_disk[L + 1] = {LRUN_TIER_DISK, LRUN_TIER_DISK, LRUN_TIER_DISK, LRUN_TIER_DISK};

static void test_identical(const float *ref)
{
    static float got[(ND + 1) * V];
    lrun_model *m = fixture_load(path, "cuda:0", 0, 0, -1);
    const size_t streamed = place(m, all_disk);
    for (int k = 1; k <= 2; k++) {
        char name[128];
        lrun_engine *e = make_engine(m, k);
        snprintf(name, sizeof name, "cuda, every matrix and the head on disk, k = %d: bit-identical", k);
        CHECK(name, e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
        lrun_engine_stats s;
        lrun_engine_get_stats(e, &s);
        snprintf(name, sizeof name, "k = %d: bytes streamed per the contract, disk bytes cover them, read time", k);
        CHECK(name, s.bytes_streamed == (uint64_t)(1 + ND) * streamed && s.disk_bytes_read >= s.bytes_streamed &&
                        s.disk_read_seconds > 0 && s.disk_queue_depth >= 1 && s.disk_stalls <= s.prefetch_misses);
        printf("# k = %d: %.1f MiB read in %.3f s (%.0f MB/s), %s, depth %d, %lld stalls of %lld misses\n", k,
               (double)s.disk_bytes_read / 1048576, s.disk_read_seconds,
               s.disk_read_seconds > 0 ? (double)s.disk_bytes_read / s.disk_read_seconds / 1e6 : 0,
               s.disk_direct ? "O_DIRECT" : "buffered", s.disk_queue_depth, (long long)s.disk_stalls,
               (long long)s.prefetch_misses);
        lrun_engine_free(e);
    }
    const lrun_tier mixed[L + 1] = {LRUN_TIER_DISK, LRUN_TIER_PINNED, LRUN_TIER_MMAP, LRUN_TIER_DISK};
    place(m, mixed);
    lrun_engine *e = make_engine(m, 1);
    CHECK("cuda, disk beside pinned and mmap sources: bit-identical", e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    lrun_engine_free(e);
    place(m, all_disk);
    setenv("LRUN_DISK_REQUEST", "65536", 1);
    setenv("LRUN_DISK_THREADS", "8", 1);
    e = make_engine(m, 1);
    CHECK("cuda, 64 KiB requests over 8 threads: bit-identical", e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    unsetenv("LRUN_DISK_REQUEST");
    unsetenv("LRUN_DISK_THREADS");
    lrun_engine_free(e);
    lrun_model_free(m);
}

static void test_truncate(void)
{
    static float got[(ND + 1) * V];
    char victim[300];
    snprintf(victim, sizeof victim, "%s.victim", path);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, victim);
    if (system(cmd) != 0) printf("# copy failed\n");
    lrun_model *m = fixture_load(victim, "cuda:0", 0, 0, -1);
    place(m, all_disk);
    lrun_engine *e = make_engine(m, 1);
    CHECK("cuda: before the file changes, runs", e && run(e, got));
    CHECK("cuda: truncate the file while in use", truncate(victim, 4096) == 0);
    lrun_status st = LRUN_OK;
    const int32_t tok = 5, seq = 0;
    int64_t n_out = 0;
    for (int i = 0; i < 3 && st == LRUN_OK; i++) st = lrun_engine_step(e, 1, &tok, &seq, NULL, got, 1, &n_out);
    printf("# %s\n", lrun_last_error());
    CHECK("cuda, truncated: LRUN_E_IO naming a tensor and the offset, not SIGBUS",
          st == LRUN_E_IO && strstr(lrun_last_error(), ".weight") && strstr(lrun_last_error(), "offset"));
    lrun_engine_free(e);
    lrun_model_free(m);
    remove(victim);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - disk tier on cuda # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    disk_path_beside(path, sizeof path, argc > 0 ? argv[0] : NULL, "lrun_test_disk_tier_gpu");
    const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                      .n_ctx = CTX, .weight_dtype = LRUN_DTYPE_BF16, .embd_dtype = LRUN_DTYPE_BF16,
                                      .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 17};
    if (lrun_model_generate(path, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    static float ref[(ND + 1) * V];
    lrun_model *m = fixture_load(path, "cuda:0", 0, 0, -1);
    lrun_engine *e = make_engine(m, -1);
    CHECK("cuda resident run", e && run(e, ref));
    lrun_engine_free(e);
    lrun_model_free(m);
    test_identical(ref);
    test_truncate();
    remove(path);
    return CHECK_DONE();
}
