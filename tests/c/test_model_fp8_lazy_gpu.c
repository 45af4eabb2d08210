/* test_model_fp8_lazy_gpu.c — an FP8 checkpoint onto cuda:0 without a bf16
 * host copy (model/model_fp8.h): loaded lazily (the default on cuda), an
 * engine's start moves every weight to the GPU and the loader widens each
 * FP8 piece into a pinned chunk just before its copy. Against the same
 * checkpoint widened at load (LRUN_FP8_LAZY=0): the weights (read back from
 * the GPU) and the logits of one step are bit-identical; the host holds no
 * FP8 weight; the host peak drops by the bf16 bytes, less one staging chunk.
 * Also the residency path: lrun_model_move_tensors to the device before the
 * engine, same logits; then back to mmap (pending again) and up again. Prints the peaks. Skipped (TAP SKIP) where no GPU is
 * visible or python3 lacks numpy. The CPU twin is test_model_fp8_lazy.c. */
#include "check.h"
#include "fp8_lazy_fixture.h"

#include <string.h>

int main(void)
{
    if (lrun_cuda_device_count() < 1) {
        printf("ok %d - # SKIP no CUDA device\n", ++check_count);
        return CHECK_DONE();
    }
    char dir[256] = "", fp8[320];
    const int made = fx_begin(dir, sizeof dir, fp8, sizeof fp8);
    if (made == 0) return CHECK_DONE();
    const size_t H = fx_fp8_bf16_bytes();
    static float la[FX_V], lb[FX_V], lc[FX_V];

    lrun_model *a = made == 1 ? fx_load(fp8, "cuda:0", 0) : NULL;
    lrun_host_stats ha = {0}, hb0 = {0}, hb = {0};
    CHECK("widened at load: an engine on cuda:0 runs a step", a && fx_logits(a, la));
    if (a) lrun_model_host_stats(a, &ha);

    /* the default on cuda: lazy (LRUN_FP8_LAZY unset) */
    lrun_model *b = made == 1 ? fx_load(fp8, "cuda:0", -1) : NULL;
    if (b) lrun_model_host_stats(b, &hb0);
    CHECK("default on cuda: lazy, nothing of the FP8 weights held after the load", b && hb0.weights == 0);
    CHECK("lazy: an engine on cuda:0 runs a step", b && fx_logits(b, lb));
    if (b) lrun_model_host_stats(b, &hb);
    printf("# bf16 of the FP8 weights %zu KiB; host peak widened at load %zu KiB, lazy %zu KiB; held %zu / %zu KiB\n",
           H >> 10, ha.peak >> 10, hb.peak >> 10, ha.held >> 10, hb.held >> 10);
    CHECK("lazy: the logits are bit-identical to those widened at load", a && b && memcmp(la, lb, sizeof la) == 0);
    CHECK("lazy: the weights on the GPU are bit-identical", a && b && fx_same_weights(a, b));
    CHECK("lazy: no FP8 weight is held on the host (widened at load: its bf16 copy is)",
          a && b && ha.weights == hb.weights + H);
    CHECK("lazy: the host peak drops by the bf16 copy, less one staging chunk",
          a && b && ha.peak >= hb.peak + H - FX_CHUNK);
    lrun_model_free(b);

    /* the residency path: moved to the device first, then the engine */
    lrun_model *c = made == 1 ? fx_load(fp8, "cuda:0", 1) : NULL;
    lrun_host_stats hc = {0};
    CHECK("lazy, moved to the device before the engine: same logits",
          c && fx_move_all(c, LRUN_TIER_DEVICE) == LRUN_OK && fx_logits(c, lc) && memcmp(la, lc, sizeof la) == 0);
    if (c) lrun_model_host_stats(c, &hc);
    CHECK("lazy, moved to the device before the engine: no FP8 weight held on the host",
          a && c && ha.weights == hc.weights + H);
    /* back to the file (released, pending again), then an engine's start widens them onto the GPU anew */
    static float lc2[FX_V];
    CHECK("lazy, moved back to mmap and up again by an engine: same logits",
          c && fx_move_all(c, LRUN_TIER_MMAP) == LRUN_OK && fx_logits(c, lc2) && memcmp(la, lc2, sizeof la) == 0);
    lrun_model_free(c);
    lrun_model_free(a);
    fx_end(dir);
    return CHECK_DONE();
}
