/* test_weight_stream.c — the CPU engine with LRUN_WEIGHT_MODE_AS_PLACED
 * (runtime/residency/weight_ring.c): weights placed in every tier, staged into
 * slots k = 1, 2, 4 blocks ahead or computed on the host, give logits
 * bit-identical to the resident run; the stats count exactly the bytes the
 * contract in lrun.h says; slots come from the device budget; and
 * lrun_device_measure_bandwidth measures. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"

enum { L = 3, D = 64, H = 4, HK = 2, F = 96, V = 300, CTX = 64, STEPS = 6 };

static char path[128];

static lrun_engine *make_engine(lrun_model *m, lrun_weight_mode mode, int k)
{
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = 4, .weight_mode = mode,
                                .prefetch_layers = k};
    lrun_engine *e = NULL;
    if (lrun_engine_init(&e, m, &o) != LRUN_OK) printf("# engine: %s\n", lrun_last_error());
    return e;
}

/* A 7-token prompt (two chunks of 4: the first wants no logits), then
 * greedy decode; all logits rows and tokens into out (STEPS + 1 rows). */
static int run(lrun_engine *e, float *logits, int32_t *tokens)
{
    const int32_t prompt[7] = {1, 17, 42, 99, 123, 7, 260};
    const int32_t seq[7] = {0};
    int64_t n_out = 0;
    if (lrun_engine_step(e, 7, prompt, seq, NULL, logits, 1, &n_out) != LRUN_OK || n_out != 1) return 0;
    for (int s = 0; s < STEPS; s++) {
        tokens[s] = lrun_logits_argmax(logits + (size_t)s * V, V);
        if (lrun_engine_step(e, 1, &tokens[s], seq, NULL, logits + (size_t)(s + 1) * V, 1, &n_out) != LRUN_OK)
            return 0;
    }
    return 1;
}

static lrun_tensor *find(lrun_model *m, const char *name) { return lrun_model_find_tensor(m, name); }

static int move(lrun_model *m, const char *name, lrun_tier tier)
{
    lrun_tensor *t = find(m, name);
    if (!t || lrun_tensor_move(t, lrun_model_device(m), tier) != LRUN_OK) {
        printf("# move %s: %s\n", name, lrun_last_error());
        return 0;
    }
    return 1;
}

static const char *mats[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

/* Every weight on the device, then block 1 streamed from host, block 2 from
 * mmap with its ffn_down host-compute, the head pinned and streamed. */
static size_t place(lrun_model *m, int host_compute_head)
{
    char name[64];
    size_t streamed = 0;
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++)
        if (lrun_tensor_move(lrun_model_tensor(m, i), lrun_model_device(m), LRUN_TIER_DEVICE) != LRUN_OK)
            printf("# to device: %s\n", lrun_last_error());
    for (int b = 1; b <= 2; b++)
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", b, mats[i]);
            move(m, name, b == 1 ? LRUN_TIER_HOST : LRUN_TIER_MMAP);
            if (b == 2 && i == 6) lrun_tensor_set_host_compute(find(m, name), 1);
            else streamed += lrun_tensor_bytes(find(m, name));
        }
    move(m, "output.weight", LRUN_TIER_PINNED);
    if (host_compute_head) lrun_tensor_set_host_compute(find(m, "output.weight"), 1);
    else streamed += lrun_tensor_bytes(find(m, "output.weight"));
    move(m, "token_embd.weight", LRUN_TIER_HOST);
    move(m, "blk.0.attn_norm.weight", LRUN_TIER_HOST);
    return streamed;
}

static void test_identical(void)
{
    float ref[(STEPS + 1) * V], got[(STEPS + 1) * V];
    int32_t ref_tok[STEPS], got_tok[STEPS];
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_ALL_DEVICE, 0);
    CHECK("resident run", e && run(e, ref, ref_tok));
    lrun_engine_free(e);

    const size_t streamed = place(m, 0);
    const size_t row = lrun_tensor_bytes(find(m, "token_embd.weight")) / V;
    const size_t down2 = lrun_tensor_bytes(find(m, "blk.2.ffn_down.weight"));
    const int ks[] = {1, 2, 4};
    for (int i = 0; i < 3; i++) {
        char name[128];
        e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, ks[i]);
        snprintf(name, sizeof name, "k = %d: tokens and logits bit-identical to the resident run", ks[i]);
        CHECK(name, e && run(e, got, got_tok) && memcmp(ref, got, sizeof ref) == 0 &&
                        memcmp(ref_tok, got_tok, sizeof ref_tok) == 0);
        lrun_engine_stats s;
        lrun_engine_get_stats(e, &s);
        /* chunks: 4 + 3 prompt tokens, then STEPS tokens of 1 */
        const int64_t chunks = 2 + STEPS, tokens = 7 + STEPS;
        snprintf(name, sizeof name, "k = %d: bytes streamed = streamed weights per chunk + gathered rows", ks[i]);
        CHECK(name, s.steps == chunks && s.bytes_streamed == (uint64_t)(chunks * streamed + tokens * row));
        snprintf(name, sizeof name, "k = %d: a hit or a miss per streamed unit (2 blocks + head) per chunk", ks[i]);
        CHECK(name, s.prefetch_hits + s.prefetch_misses == 3 * chunks);
        snprintf(name, sizeof name, "k = %d: host compute counted per chunk", ks[i]);
        CHECK(name, s.host_compute_bytes == (uint64_t)(chunks * down2));
        snprintf(name, sizeof name, "k = %d: slots are on the device budget", ks[i]);
        CHECK(name, s.slot_bytes > 0 && s.weight_device_bytes == lrun_model_tier_bytes(m, LRUN_TIER_DEVICE));
        CHECK("times are not negative", s.copy_seconds >= 0 && s.stall_seconds >= 0);
        lrun_engine_reset_stats(e);
        lrun_engine_get_stats(e, &s);
        CHECK("reset clears the counters", s.bytes_streamed == 0 && s.prefetch_hits == 0 && s.slot_bytes > 0);
        lrun_engine_free(e);
    }

    /* host-compute head: never copied */
    lrun_tensor_set_host_compute(find(m, "output.weight"), 1);
    e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 2);
    CHECK("host-compute LM head: bit-identical", e && run(e, got, got_tok) && memcmp(ref, got, sizeof ref) == 0);
    lrun_engine_stats s;
    lrun_engine_get_stats(e, &s);
    CHECK("host-compute LM head: only the blocks stream", s.prefetch_hits + s.prefetch_misses == 2 * (2 + STEPS));
    lrun_engine_free(e);

    /* everything off the device: every block and the head stream */
    for (int64_t i = 0; i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        lrun_tensor_set_host_compute(t, 0);
        lrun_tensor_move(t, lrun_model_device(m), LRUN_TIER_MMAP);
    }
    e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    CHECK("all weights in mmap, k = 1: bit-identical", e && run(e, got, got_tok) && memcmp(ref, got, sizeof ref) == 0);
    lrun_engine_free(e);
    lrun_model_free(m);
}

static void test_budget_and_args(void)
{
    /* slots need the largest block's matrices twice (k = 1) + the head */
    lrun_model *m = fixture_load(path, "cpu", 0, 2, -1);
    lrun_engine *e = make_engine(m, LRUN_WEIGHT_MODE_AS_PLACED, 1);
    lrun_engine_stats s;
    lrun_engine_get_stats(e, &s);
    const size_t need = s.scratch_bytes + s.kv_bytes + s.slot_bytes / 2; /* room for all but the slots */
    lrun_engine_free(e);
    lrun_model_free(m);

    m = fixture_load(path, "cpu", need, 2, -1);
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = CTX, .n_batch_max = 4, .weight_mode = LRUN_WEIGHT_MODE_AS_PLACED,
                                .prefetch_layers = 1};
    e = NULL;
    lrun_status st = lrun_engine_init(&e, m, &o);
    if (st != LRUN_E_OOM) printf("# %s\n", lrun_last_error());
    CHECK("slots beyond the budget: LRUN_E_OOM naming the slots",
          st == LRUN_E_OOM && !e && strstr(lrun_last_error(), "slots") != NULL);
    CHECK("a failed init gives the budget back", lrun_device_used(lrun_model_device(m)) == 0);
    const lrun_engine_opts bad_k = {.weight_mode = LRUN_WEIGHT_MODE_AS_PLACED, .prefetch_layers = -1};
    CHECK("prefetch_layers -1: LRUN_E_ARG", lrun_engine_init(&e, m, &bad_k) == LRUN_E_ARG);
    const lrun_engine_opts bad_mode = {.weight_mode = (lrun_weight_mode)7};
    CHECK("unknown weight_mode: LRUN_E_ARG", lrun_engine_init(&e, m, &bad_mode) == LRUN_E_ARG);
    lrun_model_free(m);
}

static void test_bandwidth(void)
{
    lrun_device *d = NULL;
    lrun_device_open(&d, "cpu", (size_t)8 << 20);
    double bw = 0;
    CHECK("host to device bandwidth is measured",
          lrun_device_measure_bandwidth(d, LRUN_TIER_HOST, LRUN_TIER_DEVICE, 1 << 20, &bw) == LRUN_OK && bw > 0);
    CHECK("mmap source is measured as host",
          lrun_device_measure_bandwidth(d, LRUN_TIER_MMAP, LRUN_TIER_HOST, 1 << 20, &bw) == LRUN_OK && bw > 0);
    CHECK("the budget is given back", lrun_device_used(d) == 0);
    CHECK("device buffers beyond the budget: LRUN_E_OOM",
          lrun_device_measure_bandwidth(d, LRUN_TIER_DEVICE, LRUN_TIER_DEVICE, 6 << 20, &bw) == LRUN_E_OOM);
    CHECK("mmap destination: LRUN_E_ARG",
          lrun_device_measure_bandwidth(d, LRUN_TIER_HOST, LRUN_TIER_MMAP, 1 << 20, &bw) == LRUN_E_ARG);
    CHECK("too few bytes: LRUN_E_ARG", lrun_device_measure_bandwidth(d, LRUN_TIER_HOST, LRUN_TIER_HOST, 16, &bw) == LRUN_E_ARG);
    lrun_device_free(d);
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/lrun_test_weight_stream_%d.gguf", (int)getpid());
    const lrun_model_gen_spec spec = {.n_layer = L, .n_embd = D, .n_head = H, .n_head_kv = HK, .n_ff = F, .n_vocab = V,
                                      .n_ctx = CTX, .weight_dtype = LRUN_DTYPE_Q8_0, .embd_dtype = LRUN_DTYPE_F16,
                                      .rope_freq_base = 10000.0, .rms_eps = 1e-5, .seed = 77, .n_threads = 1};
    if (lrun_model_generate(path, &spec) != LRUN_OK) printf("# generate: %s\n", lrun_last_error());
    test_identical();
    test_budget_and_args();
    test_bandwidth();
    remove(path);
    return CHECK_DONE();
}
