/* test_disk_tier.c — weights in LRUN_TIER_DISK on the CPU engine
 * (residency/disk_reader.c through residency/weight_ring.c): read from the
 * model file with direct I/O into the staging slots, they give logits
 * bit-identical to the resident run at k = 1 and 2, mixed with every other
 * tier, with reads cut into many small requests over the pool, and on
 * tmpfs (which refuses O_DIRECT: buffered reads); the stats count the
 * reads; the planner's size is what init takes; truncating the file while
 * in use is an LRUN_E_IO naming the file, the tensor and the offset (no
 * SIGBUS); a removed file keeps serving the open engine and is named at
 * the next init. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "disk_fixture.h"
#include "fixtures.h"
#include "lrun.h"

enum { L = 3, D = 256, H = 4, HK = 2, F = 512, V = 500, CTX = 64, STEPS = 5 };

static char path[256];
static int fs_direct; /* the test directory's filesystem takes O_DIRECT */

static lrun_engine *make_engine(lrun_model *m, lrun_weight_mode mode, int k)
{
    return disk_engine(m, mode, k, CTX, 4);
}

/* A 7-token prompt (chunks of 4 and 3), then greedy decode: STEPS + 1 logits rows. */
static int run(lrun_engine *e, float *logits)
{
    static const int32_t prompt[7] = {1, 17, 42, 99, 123, 7, 260};
    return disk_run(e, 7, prompt, STEPS, V, logits);
}

static lrun_tensor *find(lrun_model *m, const char *name) { return lrun_model_find_tensor(m, name); }

static void move(lrun_model *m, const char *name, lrun_tier tier)
{
    lrun_tensor *t = find(m, name);
    if (!t || lrun_tensor_move(t, lrun_model_device(m), tier) != LRUN_OK) printf("# move %s: %s\n", name, lrun_last_error());
}

static const char *mats[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

/* Blocks' matrices and the head to tier_of(block) (the head: block L);
 * everything else on the device. Returns the bytes streamed per chunk. */
static size_t place(lrun_model *m, const lrun_tier tier_of[L + 1])
{
    char name[64];
    size_t streamed = 0;
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        lrun_tensor_set_host_compute(t, 0);
        if (lrun_tensor_move(t, lrun_model_device(m), LRUN_TIER_DEVICE) != LRUN_OK) printf("# %s\n", lrun_last_error());
    }
    for (int b = 0; b < L; b++)
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", b, mats[i]);
            move(m, name, tier_of[b]);
            if (tier_of[b] != LRUN_TIER_DEVICE) streamed += lrun_tensor_bytes(find(m, name));
        }
    move(m, "output.weight", tier_of[L]);
    if (tier_of[L] != LRUN_TIER_DEVICE) streamed += lrun_tensor_bytes(find(m, "output.weight"));
    return streamed;
}

static int copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[1 << 16];
    size_t n;
    int ok = a && b;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (a) fclose(a);
    if (b && fclose(b) != 0) ok = 0;
    return ok;
}

static const lrun_tier all_disk[L + 1] = {LRUN_TIER_DISK, LRUN_TIER_DISK, LRUN_TIER_DISK, LRUN_TIER_DISK};

static void test_identical(const float *ref)
{
    float got[(STEPS + 1) * V];
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    const size_t streamed = place(m, all_disk);
    for (int k = 1; k <= 2; k++) {
        char name[128];
        lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, k);
        snprintf(name, sizeof name, "every matrix on disk, k = %d: logits bit-identical to the resident run", k);
        CHECK(name, e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
        lrun_engine_stats s;
        lrun_engine_get_stats(e, &s);
        const int64_t chunks = 2 + STEPS;
        snprintf(name, sizeof name, "k = %d: bytes streamed per the contract; disk bytes cover them", k);
        CHECK(name, s.bytes_streamed == (uint64_t)chunks * streamed && s.disk_bytes_read >= s.bytes_streamed);
        snprintf(name, sizeof name, "k = %d: direct I/O, a queue depth, read time, stalls counted", k);
        CHECK(name, s.disk_direct == fs_direct && s.disk_queue_depth >= 1 && s.disk_read_seconds > 0 &&
                        s.disk_stalls <= s.prefetch_misses);
        lrun_engine_reset_stats(e);
        lrun_engine_get_stats(e, &s);
        /* the cyclic ring's fill may be reading the next pass's blocks at the reset: those reads count after it,
         * at most a pass (whole 4 KiB blocks, two more per tensor at most) */
        CHECK("reset clears the disk counters", s.disk_bytes_read <= streamed + 22 * 8192 && s.disk_stalls == 0);
        lrun_placement_size size;
        const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = 4, .prefetch_layers = k};
        snprintf(name, sizeof name, "k = %d: the planner's slot bytes are what init took", k);
        CHECK(name, lrun_engine_size_placement(&size, m, &o, NULL, NULL) == LRUN_OK && size.slot_bytes == s.slot_bytes);
        lrun_engine_free(e);
    }
    /* every tier at once: disk, host, mmap with a host-computed disk matrix, pinned head */
    const lrun_tier mixed[L + 1] = {LRUN_TIER_DISK, LRUN_TIER_HOST, LRUN_TIER_MMAP, LRUN_TIER_PINNED};
    place(m, mixed);
    move(m, "blk.1.ffn_up.weight", LRUN_TIER_DISK);
    move(m, "blk.2.ffn_down.weight", LRUN_TIER_DISK);
    lrun_tensor_set_host_compute(find(m, "blk.2.ffn_down.weight"), 1);
    move(m, "token_embd.weight", LRUN_TIER_DISK);
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 2);
    CHECK("disk beside host, mmap, pinned and host compute; disk table gathered: bit-identical",
          e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    lrun_engine_free(e);

    /* many small requests in flight: every piece lands where it belongs */
    place(m, all_disk);
    setenv("LRUN_DISK_REQUEST", "8192", 1);
    setenv("LRUN_DISK_THREADS", "3", 1);
    e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    lrun_engine_stats s;
    CHECK("8 KiB requests over 3 threads: bit-identical", e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    lrun_engine_get_stats(e, &s);
    CHECK("queue depth is the reader's threads", s.disk_queue_depth == 3);
    unsetenv("LRUN_DISK_REQUEST");
    unsetenv("LRUN_DISK_THREADS");
    lrun_engine_free(e);
    CHECK("moving to disk keeps file-backed tensors only",
          lrun_tensor_move(find(m, "output_norm.weight"), NULL, LRUN_TIER_DISK) == LRUN_OK);
    lrun_model_free(m);

    lrun_tensor *t = NULL;
    const int64_t dims[1] = {16};
    CHECK("a new tensor cannot live in the disk tier",
          lrun_tensor_init(&t, NULL, "x", LRUN_DTYPE_F32, 1, dims, LRUN_TIER_DISK) == LRUN_E_ARG);
    lrun_tier tier;
    CHECK("tier names: disk", strcmp(lrun_tier_name(LRUN_TIER_DISK), "disk") == 0 &&
                                  lrun_tier_from_name("disk", &tier) == LRUN_OK && tier == LRUN_TIER_DISK);
}

/* tmpfs refuses O_DIRECT: buffered reads, same bytes. */
static void test_tmpfs(const float *ref)
{
    char shm[128];
    snprintf(shm, sizeof shm, "/dev/shm/lrun_test_disk_%d.gguf", (int)getpid());
    if (access("/dev/shm", W_OK) != 0 || !copy_file(path, shm)) {
        printf("ok %d - # SKIP no writable /dev/shm\n", ++check_count);
        return;
    }
    float got[(STEPS + 1) * V];
    lrun_model *m = fixture_load(shm, "cpu", 0, 2, -1);
    place(m, all_disk);
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    /* tmpfs takes O_DIRECT since Linux 6.6; older kernels refuse it */
    const int fd = open(shm, O_RDONLY | O_DIRECT);
    const int shm_direct = fd >= 0;
    if (fd >= 0) close(fd);
    printf("# %s: O_DIRECT %s\n", shm, shm_direct ? "taken" : "refused (buffered fallback)");
    CHECK("tmpfs: bit-identical", e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    lrun_engine_stats s;
    lrun_engine_get_stats(e, &s);
    CHECK("tmpfs: the stats say how the reads went", s.disk_direct == shm_direct && s.disk_bytes_read > 0);
    lrun_engine_free(e);
    lrun_model_free(m);
    remove(shm);
}

/* The file shrinks or goes away under a running engine. */
static void test_truncate_remove(const float *ref)
{
    char victim[300];
    snprintf(victim, sizeof victim, "%s.victim", path);
    if (!copy_file(path, victim)) printf("# copy failed\n");
    float got[(STEPS + 1) * V];
    lrun_model *m = fixture_load(victim, "cpu", 0, 2, -1);
    place(m, all_disk); /* the table, norms and the rest are copies on the device: only the disk reads the file */
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    CHECK("before the file changes: bit-identical", e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    CHECK("truncate the file while in use", truncate(victim, 4096) == 0);
    const int32_t tok = 5, seq = 0;
    int64_t n_out = 0;
    lrun_status st = LRUN_OK;
    for (int i = 0; i < 3 && st == LRUN_OK; i++) st = lrun_engine_step(e, 1, &tok, &seq, NULL, got, 1, &n_out);
    const char *msg = lrun_last_error();
    printf("# %s\n", msg);
    CHECK("truncated: LRUN_E_IO, not SIGBUS", st == LRUN_E_IO);
    CHECK("the error names the file, a tensor and the offset",
          strstr(msg, strrchr(victim, '/') + 1) && strstr(msg, ".weight") && strstr(msg, "offset") && strstr(msg, "short read"));
    lrun_engine_free(e);
    lrun_model_free(m);

    /* removal: the open descriptor keeps the inode, reads go on; the next init names it */
    if (!copy_file(path, victim)) printf("# copy failed\n");
    m = fixture_load(victim, "cpu", 0, 2, -1);
    place(m, all_disk);
    e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    CHECK("remove the file while in use", remove(victim) == 0);
    CHECK("removed while open: still bit-identical", e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    lrun_engine_free(e);
    e = NULL;
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = CTX, .weight_mode = LRUN_WEIGHT_MODE_AS_PLACED};
    st = lrun_engine_init(&e, m, &o);
    printf("# %s\n", lrun_last_error());
    CHECK("an engine made after the removal: LRUN_E_IO saying so", st == LRUN_E_IO && !e &&
                                                                      strstr(lrun_last_error(), "removed"));
    lrun_model_free(m);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* every line out before a crash */
    /* beside the test program (the build directory: a real disk, unlike a tmpfs /tmp) */
    disk_path_beside(path, sizeof path, argc > 0 ? argv[0] : NULL, "lrun_test_disk_tier");
    const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                      .n_ctx = CTX, .weight_dtype = LRUN_DTYPE_Q8_0, .embd_dtype = LRUN_DTYPE_F16,
                                      .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 91, .n_threads = 1};
    if (lrun_model_generate(path, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    const int fd = open(path, O_RDONLY | O_DIRECT);
    fs_direct = fd >= 0;
    if (fd >= 0) close(fd);
    printf("# %s: O_DIRECT %s\n", path, fs_direct ? "taken" : "refused");
    float ref[(STEPS + 1) * V];
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_ALL_DEVICE, 0);
    CHECK("resident run", e && run(e, ref));
    lrun_engine_free(e);
    lrun_model_free(m);
    test_identical(ref);
    test_tmpfs(ref);
    test_truncate_remove(ref);
    remove(path);
    return CHECK_DONE();
}
