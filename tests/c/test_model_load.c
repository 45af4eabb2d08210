/* test_model_load.c — the streaming loader (residency/loader.c) and the
 * weights' first moves out of the file (model/model_upload.c):
 *   - the loader reads ranges at odd offsets and lengths, with several
 *     threads and pieces smaller than the ranges, byte for byte as the file
 *     has them; a file shorter than a range is LRUN_E_IO naming the file;
 *   - loading a generated HF directory (3 shards, many times the 1 MiB
 *     pieces) reads no weight (RSS grows by less than half a shard), and moving every weight to the host tier
 *     raises peak RSS (VmHWM, reset through /proc/self/clear_refs) by the
 *     weights plus less than one shard: the file is never held beside the
 *     copy (the naive path — prefault, then copy from the mapping — holds
 *     both, twice the weights);
 *   - the moved weights are bit-identical to the file's bytes (the naive
 *     path's), for the HF directory and for a GGUF;
 *   - a move that does not fit the budget leaves every tensor where it was. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "load_fixture.h"
#include "lrun.h"
#include "model/model.h"
#include "residency/loader.h"

static char dir[256];

/* TSan's shadow memory grows with every byte the program touches and counts
 * in RSS, so RSS bounds are skipped under it (ASan's 1/8 shadow fits them). */
#if defined(__SANITIZE_THREAD__)
#define CHECK_RSS(name, cond) printf("ok %d - %s # SKIP RSS under ThreadSanitizer\n", ++check_count, (name))
#else
#define CHECK_RSS(name, cond) CHECK(name, cond)
#endif

// ---------------------------------------------------------------- the loader alone

static void test_loader_ranges(void)
{
    char path[320];
    snprintf(path, sizeof path, "%s/bytes.bin", dir);
    enum { SIZE = 3 << 20 };
    unsigned char *file = malloc(SIZE), *dst = calloc(1, SIZE);
    for (int i = 0; i < SIZE; i++) file[i] = (unsigned char)(i * 131 + (i >> 9));
    FILE *f = fopen(path, "wb");
    const int wrote = f && fwrite(file, 1, SIZE, f) == SIZE;
    if (f) fclose(f);
    CHECK("loader: test file written", wrote);
    /* odd offsets and lengths, out of file order, one empty, some larger than a piece */
    const struct { uint64_t off; size_t len; } want[] = {
        {1, 65537}, {700001, 1000003}, {65538, 3}, {SIZE - 5, 5}, {2000000, 0}, {1800000, 200000},
    };
    const int n = (int)(sizeof want / sizeof want[0]);
    lrun_load_range r[6];
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        r[i] = (lrun_load_range){.offset = want[i].off, .bytes = want[i].len, .dst = dst + at};
        at += want[i].len;
    }
    const char *paths[1] = {path};
    const lrun_loader_opts o = {.n_threads = 3, .chunk_bytes = 64 << 10, .drop_cache = 1};
    lrun_loader_stats stats;
    lrun_status st = lrun_loader_read(paths, 1, r, n, &o, &stats);
    if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
    CHECK("loader: reads every range", st == LRUN_OK);
    int same = 1;
    at = 0;
    for (int i = 0; i < n; i++, at += want[i - 1].len) same &= memcmp(dst + at, file + want[i].off, want[i].len) == 0;
    CHECK("loader: the bytes are the file's", same);
    CHECK("loader: stats count the bytes and the threads", stats.bytes == at && stats.n_threads == 3 &&
                                                               stats.chunk_bytes == (64 << 10) && stats.staging_bytes == 0);

    /* a file shorter than a range: an IO error naming the file */
    r[0] = (lrun_load_range){.offset = SIZE - 10, .bytes = 20, .dst = dst};
    st = lrun_loader_read(paths, 1, r, 1, &o, NULL);
    CHECK("loader: a range past the end is LRUN_E_IO", st == LRUN_E_IO);
    CHECK("loader: ... naming the file", strstr(lrun_last_error(), "bytes.bin") != NULL);
    r[0].file = 1;
    CHECK("loader: a range of an unknown file is LRUN_E_ARG", lrun_loader_read(paths, 1, r, 1, &o, NULL) == LRUN_E_ARG);
    r[0] = (lrun_load_range){.bytes = 16, .dst = dst, .on_device = 1};
    CHECK("loader: a device range without a device is LRUN_E_ARG",
          lrun_loader_read(paths, 1, r, 1, &o, NULL) == LRUN_E_ARG);
    const char *missing[1] = {"/nonexistent/lrun/shard.safetensors"};
    r[0].on_device = 0;
    CHECK("loader: a missing file is LRUN_E_IO", lrun_loader_read(missing, 1, r, 1, &o, NULL) == LRUN_E_IO);
    unlink(path);
    free(file);
    free(dst);
}

// ---------------------------------------------------------------- a model's weights

/* 1 when every tensor of m is in tier and holds the bytes of its file mapping. */
static int weights_match_file(lrun_model *m, lrun_tier tier)
{
    int ok = 1;
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        const lrun_tensor *t = lrun_model_tensor(m, i);
        if (!t->file_data) continue;
        ok &= t->tier == tier && memcmp(t->data, t->file_data, t->nbytes) == 0;
    }
    return ok;
}

static lrun_model_gen_spec spec(void)
{
    /* about 100 MiB of bf16 weights: many times the 1 MiB pieces the test reads */
    return (lrun_model_gen_spec){.n_layer = 6, .n_embd = 768, .n_head = 8, .n_head_kv = 4, .n_ff = 2048,
                                 .n_vocab = 8000, .n_ctx = 64, .weight_dtype = LRUN_DTYPE_BF16,
                                 .embd_dtype = LRUN_DTYPE_BF16, .tied_embeddings = 0, .rope_freq_base = 10000.0,
                                 .rms_eps = 1e-5, .seed = 7, .n_threads = 0};
}

static void test_hf_rss(void)
{
    char hf[320];
    snprintf(hf, sizeof hf, "%s/hf", dir);
    const lrun_model_gen_spec s = spec();
    const int made = lrun_model_generate_hf(hf, &s, 3) == LRUN_OK;
    if (!made) printf("# %s\n", lrun_last_error());
    CHECK("hf: 3 shards generated", made);
    if (!made) return;
    const size_t shard = largest_shard(hf);
    CHECK("hf: the shards are there", shard > 0);

    const long long rss0 = status_bytes("VmRSS");
    lrun_model *m = fixture_load(hf, "cpu", 0, 1, -1);
    CHECK("hf: loads", m != NULL);
    if (!m) return;
    const size_t weights = lrun_model_get_info(m)->weight_bytes;
    const long long rss1 = status_bytes("VmRSS");
    printf("# weights %.1f MiB, largest shard %.1f MiB; RSS after load +%.1f MiB\n", weights / 1048576.0,
           shard / 1048576.0, (rss1 - rss0) / 1048576.0);
    /* the headers, config and tokenizer only (a sanitizer's own memory included) */
    CHECK_RSS("hf: loading reads no weight (RSS grows by less than half a shard)", rss1 - rss0 < (long long)(shard / 2));

    const int reset = reset_hwm();
    const long long base = status_bytes("VmRSS"), hwm0 = status_bytes("VmHWM");
    const lrun_status st = move_all(m, LRUN_TIER_HOST);
    const long long peak = status_bytes("VmHWM") - (reset ? base : hwm0);
    if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
    CHECK("hf: every weight moves to the host tier", st == LRUN_OK);
    printf("# peak RSS while moving: +%.1f MiB (weights %.1f MiB + one shard %.1f MiB allowed)%s\n",
           peak / 1048576.0, weights / 1048576.0, shard / 1048576.0, reset ? "" : " (VmHWM not resettable)");
    CHECK_RSS("hf: peak RSS grows by the weights plus less than one shard", peak < (long long)(weights + shard));
    CHECK("hf: the loader read them in 1 MiB pieces on 3 threads",
          m->load_stats.bytes == weights && m->load_stats.n_threads == 3 && m->load_stats.chunk_bytes == (1 << 20));
    CHECK("hf: the host copies are the file's bytes, bit for bit", weights_match_file(m, LRUN_TIER_HOST));

    /* back to the file, and the moves again: the same bytes */
    CHECK("hf: back to the file", move_all(m, LRUN_TIER_MMAP) == LRUN_OK);
    CHECK("hf: to the pinned tier", move_all(m, LRUN_TIER_PINNED) == LRUN_OK && weights_match_file(m, LRUN_TIER_PINNED));
    CHECK("hf: to the device tier (cpu)", move_all(m, LRUN_TIER_DEVICE) == LRUN_OK && weights_match_file(m, LRUN_TIER_DEVICE));
    const int64_t twice[2] = {0, 0};
    const lrun_tier host2[2] = {LRUN_TIER_HOST, LRUN_TIER_HOST};
    CHECK("hf: a tensor listed twice is LRUN_E_ARG", lrun_model_move_tensors(m, 2, twice, host2) == LRUN_E_ARG);
    lrun_model_free(m);

    /* the naive path, for scale: the mapping faulted in, then copied from */
    m = fixture_load(hf, "cpu", 0, 1, -1);
    if (m && reset) {
        reset_hwm();
        const long long b0 = status_bytes("VmRSS");
        lrun_model_prefault(m);
        int ok = 1;
        for (int64_t i = 0; i < lrun_model_tensor_count(m); i++)
            ok &= lrun_tensor_move(lrun_model_tensor(m, i), NULL, LRUN_TIER_HOST) == LRUN_OK;
        const long long naive = status_bytes("VmHWM") - b0;
        printf("# naive path (prefault, then copy from the mapping): +%.1f MiB\n", naive / 1048576.0);
        /* lrun_tensor_move drops each tensor's mapped pages once copied (the disk
         * tier's change), so the naive peak is the faulted-in file plus about one
         * tensor: what matters here is that VmHWM counts the mapping's pages */
        CHECK_RSS("hf: the naive path's peak counts the mapping it faulted in (the measure sees file pages)",
                  ok && naive >= (long long)weights);
    }
    lrun_model_free(m);

    /* a budget the weights do not fit: nothing moves */
    m = fixture_load(hf, "cpu", weights / 2, 1, -1);
    CHECK("hf: loads under a budget", m != NULL);
    if (!m) return;
    const lrun_status oom = move_all(m, LRUN_TIER_DEVICE);
    CHECK("hf: a move past the budget is LRUN_E_OOM", oom == LRUN_E_OOM);
    CHECK("hf: ... and every tensor is still in the file", lrun_model_tier_bytes(m, LRUN_TIER_MMAP) == weights &&
                                                               lrun_model_tier_bytes(m, LRUN_TIER_DEVICE) == 0);
    CHECK("hf: ... and its device bytes are given back", lrun_device_used(lrun_model_device(m)) == 0);
    lrun_model_free(m);
}

static void test_gguf(void)
{
    char path[320];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    lrun_model_gen_spec s = spec();
    s.n_layer = 2, s.n_vocab = 2000;
    const int made = lrun_model_generate(path, &s) == LRUN_OK;
    CHECK("gguf: generated", made);
    lrun_model *m = made ? fixture_load(path, "cpu", 0, 1, -1) : NULL;
    CHECK("gguf: loads", m != NULL);
    if (!m) return;
    CHECK("gguf: every weight moves to the host tier", move_all(m, LRUN_TIER_HOST) == LRUN_OK);
    CHECK("gguf: read by the loader", m->load_stats.bytes == lrun_model_get_info(m)->weight_bytes);
    CHECK("gguf: the host copies are the file's bytes, bit for bit", weights_match_file(m, LRUN_TIER_HOST));
    const lrun_tensor *t0 = lrun_model_tensor(m, 0);
    const char *where = NULL;
    uint64_t off = 0;
    const int found = lrun_model_tensor_location(m, t0, &where, &off);
    int same = 0;
    FILE *f = found ? fopen(where, "rb") : NULL;
    unsigned char head[64];
    if (f && fseek(f, (long)off, SEEK_SET) == 0 && fread(head, 1, sizeof head, f) == sizeof head)
        same = memcmp(head, t0->file_data, sizeof head) == 0;
    if (f) fclose(f);
    CHECK("gguf: a tensor's location is its file and offset", found && strcmp(where, path) == 0 && same);
    lrun_model_free(m);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/lrun_test_model_load_%d", (int)getpid());
    if (mkdir(dir, 0700) != 0) {
        printf("Bail out! cannot make %s\n", dir);
        return 1;
    }
    /* the model loads read 1 MiB pieces on 3 threads: many pieces per tensor and shard */
    setenv("LRUN_LOAD_CHUNK_MB", "1", 1);
    setenv("LRUN_LOAD_THREADS", "3", 1);
    test_loader_ranges();
    test_hf_rss();
    test_gguf();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return CHECK_DONE();
}
