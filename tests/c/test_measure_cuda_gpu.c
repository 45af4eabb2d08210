/* test_measure_cuda_gpu.c — the CUDA measurements behind the predicted
 * speed on a GPU (docs/residency.md "Predicted decode on CUDA", "Predicted
 * prefill"): lrun_model_measure_device_gemv per decode dtype, and
 * lrun_model_measure_prefill_attention at a 512-token chunk, on a generated
 * model on cuda:0, give finite figures > 0. No timing is asserted (the benches compare predictions
 * with measured speeds: tests/bench/cuda_peer.py). Every check is skipped
 * (TAP SKIP) where no GPU is visible; test_measure_cuda_args.c checks the
 * refusals without one. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"

static int usable(double v) { return isfinite(v) && v > 0; }

int main(void)
{
    if (lrun_cuda_device_count() < 1) {
        printf("ok %d - # SKIP no GPU visible\n", ++check_count);
        return CHECK_DONE();
    }
    char path[] = "/tmp/lrun-test-measure-cuda-gpu-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) {
        printf("Bail out! mkstemp\n");
        return 1;
    }
    close(fd);
    /* the 7B shape's heads (32 of 128) over two small layers */
    const lrun_model_gen_spec spec = {.n_layer = 2, .n_embd = 4096, .n_head = 32, .n_head_kv = 32, .n_ff = 1024,
                                      .n_vocab = 1000, .n_ctx = 1024, .weight_dtype = LRUN_DTYPE_Q8_0,
                                      .embd_dtype = LRUN_DTYPE_Q8_0, .tied_embeddings = 1, .rope_freq_base = 10000,
                                      .rms_eps = 1e-5f, .seed = 1, .n_threads = 4, .progress = 0};
    lrun_model *m = NULL;
    if (lrun_model_generate(path, &spec) == LRUN_OK) m = fixture_load(path, "cuda:0", 0, 0, -1);
    CHECK("a generated model loads on cuda:0", m != NULL);
    if (m) {
        const lrun_dtype dts[] = {LRUN_DTYPE_Q4_0, LRUN_DTYPE_Q4_1, LRUN_DTYPE_Q4_K, LRUN_DTYPE_Q5_K,
                                  LRUN_DTYPE_Q6_K, LRUN_DTYPE_Q8_0, LRUN_DTYPE_BF16, LRUN_DTYPE_F16};
        for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
            double r = 0;
            const lrun_status st = lrun_model_measure_device_gemv(m, dts[i], 11008, 4096, (size_t)256 << 20, &r);
            if (st != LRUN_OK) printf("# %s: %s\n", lrun_dtype_name(dts[i]), lrun_last_error());
            printf("# decode GEMV %s 11008x4096: %.1f GB/s\n", lrun_dtype_name(dts[i]), r / 1e9);
            CHECK(lrun_dtype_name(dts[i]), st == LRUN_OK && usable(r));
        }
        double s = 0;
        const lrun_status st = lrun_model_measure_prefill_attention(m, 512, &s);
        if (st != LRUN_OK) printf("# attention: %s\n", lrun_last_error());
        printf("# prefill attention, 512 tokens, 32 heads of 128: %.3f ms per layer\n", s * 1e3);
        CHECK("prefill attention at 512 tokens", st == LRUN_OK && usable(s));
        CHECK("prefill attention at 1 token", lrun_model_measure_prefill_attention(m, 1, &s) == LRUN_OK && usable(s));
        lrun_model_free(m);
    }
    unlink(path);
    return CHECK_DONE();
}
