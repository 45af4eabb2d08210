/* test_measure_cuda_args.c — the CUDA measurements behind the predicted
 * speed (lrun_model_measure_device_gemv, lrun_model_measure_prefill_attention,
 * docs/residency.md) refuse what they cannot measure, without a GPU: a NULL
 * model or output, a bad dtype or shape, and a CPU model (LRUN_E_DEVICE,
 * naming the device); the output is zeroed on every refusal.
 * test_measure_cuda_gpu.c checks the measurements themselves on a GPU. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "lrun.h"

static int error_says(const char *what) { return strstr(lrun_last_error(), what) != NULL; }

static void test_gemv_args(lrun_model *m)
{
    double out = 7;
    const size_t mib = (size_t)1 << 20;
    CHECK("gemv: NULL output", lrun_model_measure_device_gemv(m, LRUN_DTYPE_Q8_0, 512, 512, mib, NULL) == LRUN_E_ARG);
    CHECK("gemv: NULL model", lrun_model_measure_device_gemv(NULL, LRUN_DTYPE_Q8_0, 512, 512, mib, &out) == LRUN_E_ARG);
    CHECK("gemv: output zeroed", out == 0);
    CHECK("gemv: q8_k is not a weight dtype",
          lrun_model_measure_device_gemv(m, LRUN_DTYPE_Q8_K, 512, 512, mib, &out) == LRUN_E_ARG);
    CHECK("gemv: dtype out of range", lrun_model_measure_device_gemv(m, (lrun_dtype)999, 512, 512, mib, &out) ==
                                          LRUN_E_ARG);
    CHECK("gemv: n 0", lrun_model_measure_device_gemv(m, LRUN_DTYPE_Q8_0, 0, 512, mib, &out) == LRUN_E_ARG);
    CHECK("gemv: k 65537", lrun_model_measure_device_gemv(m, LRUN_DTYPE_Q8_0, 512, 65537, mib, &out) == LRUN_E_ARG);
    CHECK("gemv: k not whole blocks", lrun_model_measure_device_gemv(m, LRUN_DTYPE_Q8_0, 512, 100, mib, &out) ==
                                          LRUN_E_ARG && error_says("whole number of q8_0 blocks"));
    CHECK("gemv: bytes under 1 MiB", lrun_model_measure_device_gemv(m, LRUN_DTYPE_Q8_0, 512, 512, 1024, &out) ==
                                         LRUN_E_ARG);
    out = 7;
    CHECK("gemv: a cpu model is refused",
          lrun_model_measure_device_gemv(m, LRUN_DTYPE_Q8_0, 512, 512, mib, &out) == LRUN_E_DEVICE &&
              error_says("not a CUDA device") && error_says("cpu"));
    CHECK("gemv: output zeroed on the refusal", out == 0);
}

static void test_attention_args(lrun_model *m)
{
    double out = 7;
    CHECK("attention: NULL output", lrun_model_measure_prefill_attention(m, 512, NULL) == LRUN_E_ARG);
    CHECK("attention: NULL model", lrun_model_measure_prefill_attention(NULL, 512, &out) == LRUN_E_ARG);
    CHECK("attention: output zeroed", out == 0);
    CHECK("attention: 0 tokens", lrun_model_measure_prefill_attention(m, 0, &out) == LRUN_E_ARG &&
                                     error_says("0 tokens") && error_says("[1, 8192]"));
    CHECK("attention: 8193 tokens", lrun_model_measure_prefill_attention(m, 8193, &out) == LRUN_E_ARG);
    out = 7;
    CHECK("attention: a cpu model is refused", lrun_model_measure_prefill_attention(m, 512, &out) == LRUN_E_DEVICE &&
                                                   error_says("not a CUDA device") && error_says("cpu"));
    CHECK("attention: output zeroed on the refusal", out == 0);
}

int main(void)
{
    char path[] = "/tmp/lrun-test-measure-cuda-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) {
        printf("Bail out! mkstemp\n");
        return 1;
    }
    close(fd);
    const lrun_model_gen_spec spec = {.n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2, .n_ff = 128,
                                      .n_vocab = 1000, .n_ctx = 256, .weight_dtype = LRUN_DTYPE_Q8_0,
                                      .embd_dtype = LRUN_DTYPE_Q8_0, .tied_embeddings = 1, .rope_freq_base = 10000,
                                      .rms_eps = 1e-5f, .seed = 1, .n_threads = 1, .progress = 0};
    lrun_model *m = NULL;
    if (lrun_model_generate(path, &spec) == LRUN_OK) m = fixture_load(path, "cpu", 0, 1, -1);
    CHECK("a generated cpu model loads", m != NULL);
    if (m) {
        test_gemv_args(m);
        test_attention_args(m);
        lrun_model_free(m);
    }
    unlink(path);
    return CHECK_DONE();
}
