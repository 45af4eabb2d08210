/* test_expert_store.c — a mixture of experts' disk-tier experts on the CPU
 * engine, read per chosen expert (residency/expert_store.c, docs/moe.md
 * "Experts from the disk"): the store's slots hold the file's bytes of the
 * experts asked for, a second fetch finds them, the least recently used
 * slot is the one replaced, bad requests are refused; the engine gives the
 * resident run's logits bit for bit at k = 1 and 2, with one slot (a
 * prompt's experts fetched one at a time) and with a host budget's room as
 * slots (each expert read once), reads only the chosen experts
 * (never a whole stack), the planner's slot bytes are what init takes,
 * and a truncated file is an LRUN_E_IO naming the tensor. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/tensor.h"
#include "disk_fixture.h"
#include "fixtures.h"
#include "lrun.h"
#include "residency/disk_reader.h"
#include "residency/expert_store.h"

enum { L = 2, D = 256, H = 4, HK = 2, F = 128, E = 8, K = 2, V = 300, CTX = 64, STEPS = 5 };

static char path[256];

static const char *proj[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};

static lrun_tensor *expert_tensor(lrun_model *m, int layer, int p)
{
    char name[64];
    snprintf(name, sizeof name, "blk.%d.%s.weight", layer, proj[p]);
    return lrun_model_find_tensor(m, name);
}

/* Every expert stack to tier, everything else on the device; returns the stacks' bytes. */
static size_t place_experts(lrun_model *m, lrun_tier tier)
{
    size_t bytes = 0;
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        lrun_tensor_set_host_compute(t, 0);
        if (lrun_tensor_move(t, lrun_model_device(m), LRUN_TIER_DEVICE) != LRUN_OK)
            printf("# %s\n", lrun_last_error());
    }
    for (int l = 0; l < L; l++)
        for (int p = 0; p < 3; p++) {
            lrun_tensor *t = expert_tensor(m, l, p);
            if (lrun_tensor_move(t, lrun_model_device(m), tier) != LRUN_OK) printf("# move: %s\n", lrun_last_error());
            bytes += lrun_tensor_bytes(t);
        }
    return bytes;
}

static int run(lrun_engine *e, float *logits)
{
    static const int32_t prompt[7] = {1, 17, 42, 99, 123, 7, 260};
    return disk_run(e, 7, prompt, STEPS, V, logits);
}

/* Whether slices[3 j + p] hold expert xs[j]'s bytes of block layer as the file has them. */
static int slices_match(lrun_model *m, int layer, const int32_t *xs, int n, const void **slices)
{
    for (int j = 0; j < n; j++)
        for (int p = 0; p < 3; p++) {
            const lrun_tensor *t = expert_tensor(m, layer, p);
            const size_t slice = (size_t)t->ne[1] * t->row_bytes;
            if (!slices[3 * j + p] || memcmp(slices[3 * j + p], (const char *)t->file_data + xs[j] * slice, slice))
                return 0;
        }
    return 1;
}

static void test_store(void)
{
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    place_experts(m, LRUN_TIER_DISK);
    const size_t slot = lrun_expert_store_slot_bytes(m, NULL, 0, L);
    const lrun_tensor *g = expert_tensor(m, 0, 0);
    const size_t slice = (size_t)g->ne[1] * g->row_bytes;
    CHECK("a slot holds three slices in aligned regions", slot >= 3 * slice && slot % LRUN_DISK_ALIGN == 0);
    enum { SLOTS = 3 };
    void *mem = aligned_alloc(LRUN_DISK_ALIGN, SLOTS * slot);
    lrun_expert_store *s = NULL;
    CHECK("init", mem && lrun_expert_store_init(&s, m, 0, L, mem, slot, SLOTS) == LRUN_OK);
    CHECK("both blocks are stored; a block out of range is not",
          lrun_expert_store_has(s, 0) && lrun_expert_store_has(s, 1) && !lrun_expert_store_has(s, L));
    const void *sl[3 * SLOTS];
    lrun_expert_store_stats st;
    const int32_t a[2] = {1, 5};
    CHECK("two experts of block 0: the file's bytes",
          lrun_expert_store_fetch(s, 0, a, 2, sl) == LRUN_OK && slices_match(m, 0, a, 2, sl));
    lrun_expert_store_stats_get(s, &st);
    CHECK("two misses, their aligned spans read", st.misses == 2 && st.hits == 0 && st.bytes_read >= 6 * slice &&
                                                      st.bytes_read <= 6 * (slice + 2 * LRUN_DISK_ALIGN));
    const int32_t b[2] = {5, 6};
    CHECK("5 again and 6: the file's bytes",
          lrun_expert_store_fetch(s, 0, b, 2, sl) == LRUN_OK && slices_match(m, 0, b, 2, sl));
    lrun_expert_store_stats_get(s, &st);
    CHECK("5 is a hit, 6 a miss", st.hits == 1 && st.misses == 3);
    /* slots now hold (0,1) used first, (0,5) and (0,6) last: block 1's expert replaces (0,1) */
    const int32_t c[1] = {3};
    CHECK("block 1's expert 3", lrun_expert_store_fetch(s, 1, c, 1, sl) == LRUN_OK && slices_match(m, 1, c, 1, sl));
    const int32_t d[2] = {6, 5};
    CHECK("6 and 5 still held", lrun_expert_store_fetch(s, 0, d, 2, sl) == LRUN_OK && slices_match(m, 0, d, 2, sl));
    lrun_expert_store_stats_get(s, &st);
    CHECK("the least recently used slot was replaced", st.hits == 3 && st.misses == 4);
    const int32_t too_many[4] = {0, 1, 2, 3}, bad[1] = {E};
    CHECK("more experts than slots: refused", lrun_expert_store_fetch(s, 0, too_many, 4, sl) == LRUN_E_ARG);
    CHECK("an expert id out of range: refused", lrun_expert_store_fetch(s, 0, bad, 1, sl) == LRUN_E_ARG);
    CHECK("a block without stored experts: refused", lrun_expert_store_fetch(s, L, c, 1, sl) == LRUN_E_ARG);
    lrun_expert_store_reset_stats(s);
    lrun_expert_store_stats_get(s, &st);
    CHECK("reset clears the counters", st.hits == 0 && st.misses == 0 && st.bytes_read == 0);
    lrun_expert_store_free(s);
    s = NULL;
    CHECK("a slot size not of whole blocks: refused",
          lrun_expert_store_init(&s, m, 0, L, mem, slot + 8, 1) == LRUN_E_ARG);
    free(mem);
    lrun_model_free(m);
}

static void test_engine(const float *ref)
{
    float got[(STEPS + 1) * V];
    char name[160];
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    const size_t stacks = place_experts(m, LRUN_TIER_DISK);
    for (int k = 1; k <= 2; k++) {
        lrun_engine *e = disk_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, k, CTX, 8);
        snprintf(name, sizeof name, "experts on disk, k = %d: logits bit-identical to the resident run", k);
        CHECK(name, e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
        lrun_engine_stats s;
        lrun_engine_get_stats(e, &s);
        /* the prompt's chunk touches at most E experts of a block, each step at most K */
        snprintf(name, sizeof name, "k = %d: every chosen expert fetched, only those read", k);
        CHECK(name, s.expert_store_misses > 0 && s.expert_store_hits + s.expert_store_misses <= L * (E + STEPS * K) &&
                        s.disk_bytes_read < stacks * (1 + STEPS) && s.bytes_streamed == 0);
        lrun_placement_size size;
        const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = 8, .prefetch_layers = k};
        snprintf(name, sizeof name, "k = %d: the planner's slot bytes are what init took", k);
        CHECK(name,
              lrun_engine_size_placement(&size, m, &o, NULL, NULL) == LRUN_OK && size.slot_bytes == s.slot_bytes);
        lrun_engine_free(e);
    }
    /* under a host budget the store takes three quarters of the room left at init: here every expert, each
     * read once, then found in its slot */
    lrun_host_stats hs;
    lrun_model_host_stats(m, &hs);
    lrun_model_set_host_budget(m, hs.held + ((size_t)64 << 20));
    lrun_engine *eb = disk_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1, CTX, 8);
    CHECK("a host budget's room as slots: bit-identical", eb && run(eb, got) && memcmp(ref, got, sizeof got) == 0);
    lrun_engine_stats sb;
    lrun_engine_get_stats(eb, &sb);
    CHECK("every expert read at most once, the rest found in slots",
          sb.expert_store_misses <= L * E && sb.expert_store_hits > 0);
    lrun_engine_free(eb);
    lrun_model_set_host_budget(m, 0);
    setenv("LRUN_EXPERT_STORE_SLOTS", "1", 1); /* the prompt's experts one at a time */
    lrun_engine *e = disk_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1, CTX, 8);
    CHECK("one slot: bit-identical", e && run(e, got) && memcmp(ref, got, sizeof got) == 0);
    unsetenv("LRUN_EXPERT_STORE_SLOTS");
    lrun_engine_free(e);
    lrun_model_free(m);
}

static void test_truncate(void)
{
    char copy[300];
    snprintf(copy, sizeof copy, "%s.cut", path);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, copy);
    CHECK("copy", system(cmd) == 0);
    lrun_model *m = fixture_load(copy, "cpu", 0, 2, -1);
    place_experts(m, LRUN_TIER_DISK);
    lrun_engine *e = disk_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1, CTX, 8);
    CHECK("truncate to 4 KiB before the first step", e && truncate(copy, 4096) == 0);
    float got[(STEPS + 1) * V];
    const int ok = run(e, got);
    CHECK("the step fails with LRUN_E_IO naming an expert tensor and the file",
          !ok && strstr(lrun_last_error(), "short read of tensor blk.") &&
              strstr(lrun_last_error(), "_exps.weight") &&
              strstr(lrun_last_error(), strrchr(copy, '/') ? strrchr(copy, '/') + 1 : copy));
    CHECK("and again, not a crash", !run(e, got));
    lrun_engine_free(e);
    lrun_model_free(m);
    remove(copy);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    disk_path_beside(path, sizeof path, argc > 0 ? argv[0] : NULL, "lrun_test_expert_store");
    const lrun_model_gen_spec spec = {.arch = "qwen3moe",
                                      .n_layer = L,
                                      .n_embd = D,
                                      .n_head = H,
                                      .n_head_kv = HK,
                                      .n_ff = F,
                                      .n_vocab = V,
                                      .n_ctx = CTX,
                                      .weight_dtype = LRUN_DTYPE_Q8_0,
                                      .embd_dtype = LRUN_DTYPE_F16,
                                      .rope_freq_base = 10000.0,
                                      .rms_eps = 1e-6,
                                      .seed = 23,
                                      .n_threads = 1,
                                      .n_expert = E,
                                      .n_expert_used = K};
    if (lrun_model_generate(path, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    float ref[(STEPS + 1) * V];
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = disk_engine(m, LRUN_WEIGHT_MODE_ALL_DEVICE, 0, CTX, 8);
    CHECK("resident run", e && run(e, ref));
    lrun_engine_free(e);
    lrun_model_free(m);
    test_store();
    test_engine(ref);
    test_truncate();
    remove(path);
    return CHECK_DONE();
}
