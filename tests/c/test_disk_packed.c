/* test_disk_packed.c — packed weights (docs/packed.md) in LRUN_TIER_DISK on
 * the CPU engine: a packed model file's matrices are read packed from the
 * file (residency/disk_reader.c, fewer bytes than the plain weights) into
 * their slots' aligned regions and decoded there by the fill
 * (residency/weight_ring.c). Logits are bit-identical to the resident run of
 * the plain GGUF at k = 1 and 2, beside packed host and mmap matrices, with
 * reads cut into many small requests; the disk bytes are the packed ones;
 * the planner's slot bytes are what init takes. All of it twice: the file
 * packed with PEX1, then with PEX2 (codec_pex2.h). */
#include <stdio.h>

#include "check.h"
#include "disk_packed_fixture.h"
#include "lrun.h"

enum { L = 3, D = 256, H = 4, HK = 2, F = 512, V = 500, CTX = 64, STEPS = 5 };

/* The CPU engine streams the weights once a chunk (2 of the prompt, then
 * one a step): the packed bytes each time, read in whole 4 KiB blocks. Its
 * ring is cyclic: after the last chunk the fill goes on reading the next
 * pass's first blocks into the k + 1 rotating slots, and how many of those
 * reads are done when the stats are read is up to the threads' timing (CI
 * once saw one more under ASan with PEX2's slower decode). */
static int bytes_ok(const disk_packed_env *env, const lrun_engine_stats *s, int k, size_t plain, size_t stored)
{
    const uint64_t chunks = 2 + STEPS;
    printf("# k = %d: %llu bytes read from the disk, %llu streamed\n", k, (unsigned long long)s->disk_bytes_read,
           (unsigned long long)s->bytes_streamed);
    /* each read rounds out to whole 4 KiB blocks: at most two more per tensor (22 of them); a block's unit
     * is under stored / n_layer (the pass's packed bytes hold the head too) and 7 tensors */
    const uint64_t read_ahead = (uint64_t)(k + 1) * (stored / (size_t)env->model.n_layer + 7 * 8192);
    return s->bytes_streamed == chunks * stored && s->disk_bytes_read >= s->bytes_streamed &&
           s->disk_bytes_read <= chunks * (stored + 22 * 8192) + read_ahead && s->disk_bytes_read < chunks * plain;
}

/* A 7-token prompt (chunks of 4 and 3), then greedy decode: STEPS + 1 logits rows. */
static const int32_t prompt[7] = {1, 17, 42, 99, 123, 7, 260};

static const disk_packed_env env = {
    .device = "cpu",
    .n_threads = 2,
    .stem = "lrun_test_disk_packed",
    .model = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V, .n_ctx = CTX},
    .gen_threads = 1,
    .n_prompt = 7,
    .prompt = prompt,
    .n_steps = STEPS,
    .beside = LRUN_TIER_HOST,
    .beside_name = "host",
    .request_kib = 8,
    .request_threads = 3,
    .bytes_ok = bytes_ok,
    .check_planner = 1,
};

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* every line out before a crash */
    disk_packed_test(&env, argc > 0 ? argv[0] : NULL);
    disk_packed_env pex2 = env; /* the same with the file's matrices in PEX2: the CPU range decode */
    pex2.codec = LRUN_PACK_CODEC_PEX2;
    pex2.stem = "lrun_test_disk_packed_pex2";
    disk_packed_test(&pex2, argc > 0 ? argv[0] : NULL);
    return CHECK_DONE();
}
