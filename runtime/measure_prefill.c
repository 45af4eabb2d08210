/* measure_prefill.c — lrun_model_measure_prefill_attention: the argument
 * checks, then the model's device's measurement (CUDA only: the CPU's
 * prefill attention is costed from its matmul rate, docs/residency.md
 * "Predicted prefill"). */
#include "lrun.h"

#include <stdint.h>

#include "core/device.h"
#include "core/error.h"
#include "model/model.h"

#ifdef LRUN_WITH_CUDA
/* runtime/cuda/measure_attention.c */
lrun_status lrun_cuda_measure_prefill_attention(lrun_device *device, int64_t n_head, int64_t n_head_kv,
                                                int64_t head_dim, int64_t n_layer, int64_t n_tok, double *seconds);
#endif

/* The layers timed back to back per pass: the model's, at most this many
 * (a pass of a deeper model would only take longer, not differ). */
#define ATTN_LAYERS_MAX 64

lrun_status lrun_model_measure_prefill_attention(lrun_model *model, int64_t n_tok, double *seconds)
{
    if (!seconds) return lrun_fail(LRUN_E_ARG, "measuring prefill attention: seconds is NULL");
    *seconds = 0;
    if (!model) return lrun_fail(LRUN_E_ARG, "measuring prefill attention: model is NULL");
    if (n_tok < 1 || n_tok > 8192)
        return lrun_fail(LRUN_E_ARG, "measuring prefill attention: %lld tokens is outside [1, 8192]",
                         (long long)n_tok);
    const lrun_model_info *in = &model->info;
    const int64_t nh = in->n_head, nkv = in->n_head_kv, hd = in->head_dim;
    if (nh < 1 || nh > 1024 || nkv < 1 || nh % nkv != 0 || hd < 1 || hd > 1024)
        return lrun_fail(LRUN_E_ARG, "measuring prefill attention: model has %lld heads, %lld KV heads of %lld",
                         (long long)nh, (long long)nkv, (long long)hd);
    lrun_device *dev = lrun_model_device(model);
    if (lrun_device_kind_of(dev) != LRUN_DEVICE_KIND_CUDA)
        return lrun_fail(LRUN_E_DEVICE, "measuring prefill attention: the model's device %s is not a CUDA device",
                         lrun_device_name(dev));
#ifdef LRUN_WITH_CUDA
    const int64_t layers = in->n_layer < 1 ? 1 : in->n_layer > ATTN_LAYERS_MAX ? ATTN_LAYERS_MAX : in->n_layer;
    return lrun_cuda_measure_prefill_attention(dev, nh, nkv, hd, layers, n_tok, seconds);
#else
    return lrun_fail(LRUN_E_DEVICE, "measuring prefill attention: this build has no CUDA");
#endif
}
