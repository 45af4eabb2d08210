/* test_model_load_gpu.c — the streaming loader onto the GPU
 * (model/model_upload.c, residency/loader.c): every weight of a generated
 * 3-shard HF directory and of a GGUF moved to cuda:0 through the pinned
 * double buffers is bit-identical to the file's bytes; peak host RSS while
 * moving grows by less than one shard plus the staging (the file is never
 * mapped in, nothing is held twice); an engine made on the loaded model
 * (its init moves the weights the same way) runs. Every check is skipped
 * (TAP SKIP) where no GPU is visible. */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/device.h"
#include "fixtures.h"
#include "load_fixture.h"
#include "lrun.h"
#include "model/model.h"

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else

static char dir[256];

/* 1 when every tensor is on the device and its bytes, copied back, are the file's. */
static int device_matches_file(lrun_model *m)
{
    int ok = 1;
    for (int64_t i = 0; ok && i < lrun_model_tensor_count(m); i++) {
        lrun_tensor *t = lrun_model_tensor(m, i);
        if (!t->file_data) continue;
        void *h = malloc(t->nbytes);
        ok = h && t->tier == LRUN_TIER_DEVICE &&
             lrun_copy_bytes(m->device, h, LRUN_TIER_HOST, t->data, LRUN_TIER_DEVICE, t->nbytes) == LRUN_OK &&
             memcmp(h, t->file_data, t->nbytes) == 0;
        if (!ok) printf("# tensor %s differs from the file\n", t->name);
        free(h);
    }
    return ok;
}

static lrun_model_gen_spec spec(void)
{
    /* about 330 MiB of bf16: many times the staging (4 threads x 2 x 4 MiB) */
    return (lrun_model_gen_spec){.n_layer = 6, .n_embd = 1536, .n_head = 12, .n_head_kv = 4, .n_ff = 4096,
                                 .n_vocab = 16000, .n_ctx = 128, .weight_dtype = LRUN_DTYPE_BF16,
                                 .embd_dtype = LRUN_DTYPE_BF16, .tied_embeddings = 0, .rope_freq_base = 10000.0,
                                 .rms_eps = 1e-5, .seed = 11, .n_threads = 0};
}

static void test_hf(void)
{
    char hf[320];
    snprintf(hf, sizeof hf, "%s/hf", dir);
    const lrun_model_gen_spec s = spec();
    const int made = lrun_model_generate_hf(hf, &s, 3) == LRUN_OK;
    CHECK("hf: 3 shards generated", made);
    lrun_model *m = made ? fixture_load(hf, "cuda:0", 0, 0, -1) : NULL;
    CHECK("hf: loads on cuda:0", m != NULL);
    if (!m) return;
    const size_t weights = lrun_model_get_info(m)->weight_bytes, shard = largest_shard(hf);
    const int reset = reset_hwm();
    const long long base = status_bytes("VmRSS"), hwm0 = status_bytes("VmHWM");
    const lrun_status st = move_all(m, LRUN_TIER_DEVICE);
    const long long peak = status_bytes("VmHWM") - (reset ? base : hwm0);
    if (st != LRUN_OK) printf("# %s\n", lrun_last_error());
    CHECK("hf: every weight moves to cuda:0", st == LRUN_OK);
    printf("# %.1f MiB in %.3f s (%.2f GB/s), %d threads, %.1f MiB staging; peak RSS +%.1f MiB (shard %.1f MiB)\n",
           weights / 1048576.0, m->load_stats.seconds, weights / 1e9 / (m->load_stats.seconds + 1e-9),
           m->load_stats.n_threads, m->load_stats.staging_bytes / 1048576.0, peak / 1048576.0, shard / 1048576.0);
    CHECK("hf: through the pinned staging", m->load_stats.staging_bytes > 0 &&
                                                m->load_stats.staging_bytes <= (size_t)4 * 2 * (4 << 20));
    CHECK("hf: peak host RSS grows by less than one shard", peak < (long long)shard);
    CHECK("hf: the device copies are the file's bytes, bit for bit", device_matches_file(m));
    lrun_model_free(m);

    /* the engine's own init moves the weights the same way, and runs */
    m = fixture_load(hf, "cuda:0", 0, 0, -1);
    lrun_engine *e = NULL;
    const lrun_engine_opts o = {.n_seq_max = 1, .n_ctx_max = 64, .n_batch_max = 4};
    CHECK("hf: an engine on the loaded model", m && lrun_engine_init(&e, m, &o) == LRUN_OK);
    CHECK("hf: ... with every weight on the device", m && lrun_model_tier_bytes(m, LRUN_TIER_DEVICE) == weights);
    if (e) {
        const int32_t tok[4] = {1, 2, 3, 4}, seq[4] = {0, 0, 0, 0};
        float *logits = malloc((size_t)s.n_vocab * sizeof *logits);
        int64_t n_out = 0;
        CHECK("hf: ... that runs a step", lrun_engine_step(e, 4, tok, seq, NULL, logits, 1, &n_out) == LRUN_OK &&
                                             n_out == 1);
        free(logits);
    }
    lrun_engine_free(e);
    lrun_model_free(m);
}

static void test_gguf(void)
{
    char path[320];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    lrun_model_gen_spec s = spec();
    s.n_layer = 2;
    const int made = lrun_model_generate(path, &s) == LRUN_OK;
    lrun_model *m = made ? fixture_load(path, "cuda:0", 0, 0, -1) : NULL;
    CHECK("gguf: loads on cuda:0", m != NULL);
    if (!m) return;
    CHECK("gguf: every weight moves to cuda:0", move_all(m, LRUN_TIER_DEVICE) == LRUN_OK);
    CHECK("gguf: read by the loader", m->load_stats.bytes == lrun_model_get_info(m)->weight_bytes);
    CHECK("gguf: the device copies are the file's bytes, bit for bit", device_matches_file(m));
    lrun_model_free(m);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok 1 - streaming loads onto the GPU # SKIP no GPU visible\n1..1\n");
        return 0;
    }
    setenv("LRUN_LOAD_CHUNK_MB", "4", 1);
    setenv("LRUN_LOAD_THREADS", "4", 1);
    snprintf(dir, sizeof dir, "/tmp/lrun_test_model_load_gpu_%d", (int)getpid());
    if (mkdir(dir, 0700) != 0) {
        printf("Bail out! cannot make %s\n", dir);
        return 1;
    }
    test_hf();
    test_gguf();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return CHECK_DONE();
}
#endif
