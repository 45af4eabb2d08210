/* test_disk_packed_gpu.c — packed weights (docs/packed.md) in LRUN_TIER_DISK
 * on the CUDA engine (runtime/cuda/engine_cuda_offload.c): a packed model
 * file's matrices are read packed from the file with direct I/O into the
 * pinned staging buffers, copied to the device staging buffer and decoded
 * into their slots by lrun_k_packed_decode. Logits are bit-identical to the
 * resident CUDA run of the plain GGUF at k = 1 and 2, beside packed pinned
 * and mmap matrices, with an LM head larger than one staging buffer, with
 * many small requests; the disk bytes are the packed ones. Skipped without
 * a GPU. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "disk_fixture.h"
#include "fixtures.h"
#include "lrun.h"

/* the bf16 head is V x D x 2 = 40 MiB plain (packed, about 27 MiB: one staging buffer) */
enum { L = 3, D = 512, H = 8, HK = 4, F = 1024, V = 40960, CTX = 64, STEPS = 5 };

static char gguf[256], packed[300];

static lrun_engine *make_engine(lrun_model *m, lrun_weight_mode mode, int k)
{
    return disk_engine(m, mode, k, CTX, 4);
}

/* A 7-token prompt (chunks of 4 and 3), then greedy decode: STEPS + 1 logits rows. */
static int run(lrun_engine *e, float *logits)
{
    static const int32_t prompt[7] = {1, 17, 42, 99, 123, 7, 26000};
    return disk_run(e, 7, prompt, STEPS, V, logits);
}

/* Matrices and the head to tier_of(layer) (the head: L), the rest on the
 * device, each in its file's form, host compute off. */
static void place(lrun_model *m, const lrun_tier tier_of[L + 1], size_t *plain, size_t *stored)
{
    disk_place(m, tier_of, L, 0, plain, stored);
}

static const lrun_tier all_disk[L + 1] = {LRUN_TIER_DISK, LRUN_TIER_DISK, LRUN_TIER_DISK, LRUN_TIER_DISK};

static void test_disk_packed(const float *ref)
{
    static float got[(STEPS + 1) * V];
    lrun_model *m = fixture_load(packed, "cuda:0", 0, 0, -1);
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
        /* passes over the streamed weights: the CUDA engine's prefill and decode
         * steps (7 on the H200 for this run); each streams the packed bytes */
        const uint64_t passes = stored ? s.bytes_streamed / stored : 0;
        printf("# k = %d: %llu bytes read from the disk, %llu streamed (%llu passes)\n", k,
               (unsigned long long)s.disk_bytes_read, (unsigned long long)s.bytes_streamed, (unsigned long long)passes);
        snprintf(name, sizeof name, "k = %d: the packed bytes are streamed and read, fewer than the plain ones", k);
        /* reads round out to the reader's aligned requests (about 0.6-1 MB a pass
         * here on the H200): within 5% of the streamed bytes */
        CHECK(name, passes >= 1 + STEPS && s.bytes_streamed == passes * stored &&
                        s.disk_bytes_read >= s.bytes_streamed &&
                        s.disk_bytes_read <= s.bytes_streamed + s.bytes_streamed / 20 &&
                        s.disk_bytes_read < passes * plain);
        lrun_engine_free(e);
    }
    const lrun_tier mixed[L + 1] = {LRUN_TIER_DISK, LRUN_TIER_PINNED, LRUN_TIER_MMAP, LRUN_TIER_DISK};
    place(m, mixed, &plain, &stored);
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    CHECK("packed on disk beside packed pinned and mmap: bit-identical", e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    lrun_engine_free(e);
    place(m, all_disk, &plain, &stored);
    setenv("LRUN_DISK_REQUEST", "65536", 1);
    setenv("LRUN_DISK_THREADS", "8", 1);
    e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    CHECK("packed on disk, 64 KiB requests over 8 threads: bit-identical",
          e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    unsetenv("LRUN_DISK_REQUEST");
    unsetenv("LRUN_DISK_THREADS");
    lrun_engine_free(e);
    lrun_model_free(m);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* every line out before a crash */
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - packed weights in the disk tier on cuda # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    /* beside the test program (the build directory: a real disk, unlike a tmpfs /tmp) */
    disk_path_beside(gguf, sizeof gguf, argc > 0 ? argv[0] : NULL, "lrun_test_disk_packed_gpu");
    snprintf(packed, sizeof packed, "%s.packed", gguf);
    const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                      .n_ctx = CTX, .weight_dtype = LRUN_DTYPE_BF16, .embd_dtype = LRUN_DTYPE_BF16,
                                      .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 93};
    if (lrun_model_generate(gguf, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    CHECK("pack the model", lrun_pack(gguf, packed, NULL, NULL) == LRUN_OK);
    static float ref[(STEPS + 1) * V];
    lrun_model *m = fixture_load(gguf, "cuda:0", 0, 0, -1);
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_ALL_DEVICE, 0);
    CHECK("resident run of the plain model", e && run(e, ref));
    lrun_engine_free(e);
    lrun_model_free(m);
    test_disk_packed(ref);
    remove(packed);
    remove(gguf);
    return CHECK_DONE();
}
