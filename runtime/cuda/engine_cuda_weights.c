/* engine_cuda_weights.c — the CUDA engine's weight source (residency/weights.h):
 * a block's weights as engine_cuda_offload.c stages them (slot views for
 * streamed matrices, host compute for the marked ones), or in place when
 * nothing is off the device. The LM head is unit n_layer. */
#include "cuda/engine_cuda_offload.h"

static lrun_status cuda_begin(void *ctx, int64_t unit)
{
    struct lrun_cuda_weights *c = ctx;
    lrun_cuda_engine *e = c->e;
    if (unit == e->n_layer) return e->offload ? lrun_cuda_offload_head_begin(e, NULL) : LRUN_OK;
    c->layer = &e->model->layers[unit];
    return e->offload ? lrun_cuda_offload_layer_begin(e, unit, &c->layer) : LRUN_OK;
}

static lrun_weight_ref ref(const lrun_cuda_engine *e, const struct lrun_tensor *t)
{
    return (lrun_weight_ref){t, t ? t->data : NULL, t ? lrun_cuda_offload_on_host(e, t) : 0, 0};
}

static lrun_weight_ref cuda_get(void *ctx, int64_t unit, lrun_arch_tensor id)
{
    const struct lrun_cuda_weights *c = ctx;
    const lrun_cuda_engine *e = c->e;
    /* a streamed head stays in its slot until the next chunk: later row blocks of logits read it too */
    if (unit == e->n_layer) return ref(e, e->offload ? lrun_cuda_offload_head(e) : e->model->output);
    return ref(e, c->layer->t[id]);
}

static lrun_status cuda_end(void *ctx, int64_t unit)
{
    lrun_cuda_engine *e = ((struct lrun_cuda_weights *)ctx)->e;
    if (!e->offload) return LRUN_OK;
    return unit == e->n_layer ? lrun_cuda_offload_head_end(e) : lrun_cuda_offload_layer_end(e, unit);
}

static lrun_status cuda_skip(void *ctx, int64_t unit)
{
    TRY(cuda_begin(ctx, unit));
    return cuda_end(ctx, unit);
}

static lrun_weight_ref cuda_peek(void *ctx, int64_t unit, lrun_arch_tensor id)
{
    const lrun_cuda_engine *e = ((const struct lrun_cuda_weights *)ctx)->e;
    lrun_weight_ref r = ref(e, lrun_model_arch_tensor(e->model, unit < e->n_layer ? unit : -1, id));
    r.data = NULL;
    return r;
}

static const lrun_weights_i cuda_iface = {cuda_begin, cuda_get, cuda_end, cuda_skip, cuda_peek};

lrun_weights lrun_cuda_weights_init(struct lrun_cuda_weights *src, lrun_cuda_engine *e)
{
    src->e = e;
    src->layer = NULL;
    return (lrun_weights){&cuda_iface, src};
}
