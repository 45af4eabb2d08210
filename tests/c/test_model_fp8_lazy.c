/* test_model_fp8_lazy.c — FP8 weights widened where they are placed
 * (model/model_fp8.h), on the CPU: the cpu device's "device" tier is host
 * memory, so a lazy load moved there takes the same path a cuda load takes
 * to the GPU (the loader widens each piece into its destination) with host
 * memory the account can see. Against the same checkpoint widened at load
 * (LRUN_FP8_LAZY=0): the weights and logits are bit-identical; after the
 * move, the host holds exactly the bf16 copy less; the peak drops by it
 * (less one staging chunk); nothing FP8 is charged before the move; a
 * pending weight refuses to be read alone, naming why; an engine started
 * without any move widens what is pending; the disk tier settles first; a
 * weight moved alone (lrun_tensor_move, as a change of form) settles first;
 * weights widened into the device tier and moved back to mmap are widened anew.
 * Skipped where python3 lacks numpy (tests/fp8_hf_dir.py writes the FP8
 * directory). The GPU twin is test_model_fp8_lazy_gpu.c. */
#include "check.h"
#include "fp8_lazy_fixture.h"

#include <string.h>

int main(void)
{
    char dir[256] = "", fp8[320];
    const int made = fx_begin(dir, sizeof dir, fp8, sizeof fp8);
    if (made == 0) return CHECK_DONE();
    const size_t H = fx_fp8_bf16_bytes();
    static float la[FX_V], lb[FX_V], lc[FX_V];

    /* widened at load, then every weight to the cpu device */
    lrun_model *a = made == 1 ? fx_load(fp8, "cpu", 0) : NULL;
    lrun_host_stats a0 = {0}, a1 = {0};
    if (a) lrun_model_host_stats(a, &a0);
    CHECK("widened at load: the bf16 copy is held as weights at once", a && a0.weights == H);
    CHECK("widened at load: every weight moves to the device tier", a && fx_move_all(a, LRUN_TIER_DEVICE) == LRUN_OK);
    if (a) lrun_model_host_stats(a, &a1);

    /* lazy, then the same move */
    lrun_model *b = made == 1 ? fx_load(fp8, "cpu", 1) : NULL;
    lrun_host_stats b0 = {0}, b1 = {0};
    if (b) lrun_model_host_stats(b, &b0);
    CHECK("lazy: nothing of the FP8 weights is held after the load", b && b0.weights == 0);
    lrun_tensor *q = b ? lrun_model_find_tensor(b, "blk.0.attn_q.weight") : NULL;
    float one;
    const lrun_status rs = q ? lrun_tensor_read_f32(q, 0, 1, &one) : LRUN_OK;
    CHECK("lazy: a pending weight refuses to be read alone, saying why",
          q && rs == LRUN_E_ARG && strstr(lrun_last_error(), "FP8 weight not widened yet"));
    CHECK("lazy: every weight moves to the device tier", b && fx_move_all(b, LRUN_TIER_DEVICE) == LRUN_OK);
    if (b) lrun_model_host_stats(b, &b1);
    printf("# bf16 of the FP8 weights %zu KiB; held after the move: at load %zu KiB, lazy %zu KiB; peak: at load "
           "%zu KiB, lazy %zu KiB\n", H >> 10, a1.held >> 10, b1.held >> 10, a1.peak >> 10, b1.peak >> 10);
    CHECK("lazy: the weights read back bit-identical to those widened at load", a && b && fx_same_weights(a, b));
    CHECK("lazy: the host holds the bf16 copy less after the move", a && b && a1.held == b1.held + H);
    CHECK("lazy: the peak drops by the bf16 copy, less one staging chunk",
          a && b && a1.peak >= b1.peak + H - FX_CHUNK && b1.peak <= b1.held + FX_CHUNK);
    CHECK("lazy: the logits of one step are bit-identical",
          a && b && fx_logits(a, la) && fx_logits(b, lb) && memcmp(la, lb, sizeof la) == 0);
    /* back to the file: those widened straight into the device tier are widened anew at the engine's start */
    lrun_host_stats b2 = {0};
    static float lb2[FX_V];
    const int back = b && fx_move_all(b, LRUN_TIER_MMAP) == LRUN_OK && fx_logits(b, lb2);
    if (b) lrun_model_host_stats(b, &b2);
    CHECK("lazy, moved back to mmap: widened anew into host memory (charged as weights), same logits",
          back && b2.weights == H && memcmp(la, lb2, sizeof la) == 0);
    lrun_model_free(b);

    /* lazy, no move: the engine widens what is pending into the model's own memory */
    lrun_model *c = made == 1 ? fx_load(fp8, "cpu", 1) : NULL;
    lrun_host_stats c1 = {0};
    const int ran = c && fx_logits(c, lc);
    if (c) lrun_model_host_stats(c, &c1);
    CHECK("lazy, no move: an engine starts, widens them (charged as weights) and its logits are identical",
          ran && c1.weights == H && memcmp(la, lc, sizeof la) == 0);
    lrun_model_free(c);

    /* lazy, to the disk tier: settled first, as a load that is not lazy */
    lrun_model *d = made == 1 ? fx_load(fp8, "cpu", 1) : NULL;
    lrun_host_stats d1 = {0};
    const int moved = d && fx_move_all(d, LRUN_TIER_DISK) == LRUN_OK;
    if (d) lrun_model_host_stats(d, &d1);
    CHECK("lazy, to the disk tier: widened into host memory first, then moved", moved && d1.weights == H);
    CHECK("lazy, to the disk tier: the weights are those widened at load", moved && a && fx_same_weights(a, d));
    lrun_model_free(d);

    /* lazy, one weight moved alone (as a change of form is): its maker widens the pending ones first */
    lrun_model *e = made == 1 ? fx_load(fp8, "cpu", 1) : NULL;
    lrun_tensor *eq = e ? lrun_model_find_tensor(e, "blk.1.ffn_down.weight") : NULL;
    lrun_host_stats e1 = {0};
    const int alone = eq && lrun_tensor_move(eq, lrun_model_device(e), LRUN_TIER_HOST) == LRUN_OK;
    if (e) lrun_model_host_stats(e, &e1);
    CHECK("lazy, one weight moved alone: widened first (all of them, as at open), then moved",
          alone && e1.weights == H + lrun_tensor_bytes(eq) && a && fx_same_weights(a, e));
    lrun_model_free(e);
    lrun_model_free(a);
    fx_end(dir);
    return CHECK_DONE();
}
