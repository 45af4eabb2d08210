/* test_disk_packed_gpu.c — packed weights (docs/packed.md) in LRUN_TIER_DISK
 * on the CUDA engine (runtime/cuda/engine_cuda_offload.c): a packed model
 * file's matrices are read packed from the file with direct I/O into the
 * pinned staging buffers, copied to the device staging buffer and decoded
 * into their slots by lrun_k_packed_decode. Logits are bit-identical to the
 * resident CUDA run of the plain GGUF at k = 1 and 2, beside packed pinned
 * and mmap matrices, with an LM head larger than one staging buffer, with
 * many small requests; the disk bytes are the packed ones. Skipped without
 * a GPU. */
#include <stdio.h>

#include "check.h"
#include "disk_packed_fixture.h"
#include "lrun.h"

/* the bf16 head is V x D x 2 = 40 MiB plain (packed, about 27 MiB: one staging buffer) */
enum { L = 3, D = 512, H = 8, HK = 4, F = 1024, V = 40960, CTX = 64, STEPS = 5 };

/* The CUDA engine streams the weights once a pass (its prefill and decode
 * steps: 7 on the H200 for this run), the packed bytes each time. */
static int bytes_ok(const disk_packed_env *env, const lrun_engine_stats *s, int k, size_t plain, size_t stored)
{
    (void)env;
    const uint64_t passes = stored ? s->bytes_streamed / stored : 0;
    printf("# k = %d: %llu bytes read from the disk, %llu streamed (%llu passes)\n", k,
           (unsigned long long)s->disk_bytes_read, (unsigned long long)s->bytes_streamed, (unsigned long long)passes);
    /* reads round out to the reader's aligned requests (about 0.6-1 MB a pass
     * here on the H200): within 5% of the streamed bytes */
    return passes >= 1 + STEPS && s->bytes_streamed == passes * stored && s->disk_bytes_read >= s->bytes_streamed &&
           s->disk_bytes_read <= s->bytes_streamed + s->bytes_streamed / 20 && s->disk_bytes_read < passes * plain;
}

/* A 7-token prompt (chunks of 4 and 3), then greedy decode: STEPS + 1 logits rows. */
static const int32_t prompt[7] = {1, 17, 42, 99, 123, 7, 26000};

static const disk_packed_env env = {
    .device = "cuda:0",
    .n_threads = 0,
    .stem = "lrun_test_disk_packed_gpu",
    .model = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V, .n_ctx = CTX},
    .gen_threads = 0,
    .n_prompt = 7,
    .prompt = prompt,
    .n_steps = STEPS,
    .beside = LRUN_TIER_PINNED,
    .beside_name = "pinned",
    .request_kib = 64,
    .request_threads = 8,
    .bytes_ok = bytes_ok,
    .check_planner = 0,
};

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* every line out before a crash */
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - packed weights in the disk tier on cuda # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    disk_packed_test(&env, argc > 0 ? argv[0] : NULL);
    return CHECK_DONE();
}
