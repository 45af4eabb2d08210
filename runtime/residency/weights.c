/* weights.c — the CPU engine's weight source over lrun_weight_stream
 * (weights.h): the stream's view of a unit, by lrun_arch_tensor. */
#include "residency/weights.h"

#include "model/model.h"

/* The stream's matrix of a block tensor, or -1 for one it never streams (norms, biases). */
static int stream_mat(lrun_arch_tensor id)
{
    switch (id) {
    case LRUN_ARCH_TENSOR_Q: return LRUN_WS_Q;
    case LRUN_ARCH_TENSOR_K: return LRUN_WS_K;
    case LRUN_ARCH_TENSOR_V: return LRUN_WS_V;
    case LRUN_ARCH_TENSOR_O: return LRUN_WS_O;
    case LRUN_ARCH_TENSOR_GATE: return LRUN_WS_GATE;
    case LRUN_ARCH_TENSOR_UP: return LRUN_WS_UP;
    case LRUN_ARCH_TENSOR_DOWN: return LRUN_WS_DOWN;
    case LRUN_ARCH_TENSOR_OUTPUT: return 0; /* the head's unit has one matrix */
    default: return -1;
    }
}

static lrun_status cpu_begin(void *ctx, int64_t unit)
{
    lrun_weights_cpu *c = ctx;
    lrun_weight_stream_acquire(c->ws, c->model, unit, &c->view);
    return LRUN_OK;
}

static lrun_weight_ref cpu_get(void *ctx, int64_t unit, lrun_arch_tensor id)
{
    const lrun_weights_cpu *c = ctx;
    const struct lrun_tensor *t = lrun_model_arch_tensor(c->model, unit < c->model->info.n_layer ? unit : -1, id);
    const int mat = stream_mat(id);
    /* every tier is host-addressable on the CPU: a host-compute weight is read where it is, as a resident one */
    return (lrun_weight_ref){t, mat >= 0 ? c->view.data[mat] : t ? t->data : NULL, 0};
}

static lrun_status cpu_end(void *ctx, int64_t unit)
{
    lrun_weight_stream_release(((lrun_weights_cpu *)ctx)->ws, unit);
    return LRUN_OK;
}

static lrun_status cpu_skip(void *ctx, int64_t unit)
{
    lrun_weight_stream_skip(((lrun_weights_cpu *)ctx)->ws, unit);
    return LRUN_OK;
}

static lrun_weight_ref cpu_peek(void *ctx, int64_t unit, lrun_arch_tensor id)
{
    const lrun_weights_cpu *c = ctx;
    return (lrun_weight_ref){lrun_model_arch_tensor(c->model, unit < c->model->info.n_layer ? unit : -1, id), NULL, 0};
}

static const lrun_weights_i cpu_iface = {cpu_begin, cpu_get, cpu_end, cpu_skip, cpu_peek};

lrun_weights lrun_weights_cpu_init(lrun_weights_cpu *src, lrun_weight_stream *ws, const lrun_model *model)
{
    src->ws = ws;
    src->model = model;
    return (lrun_weights){&cpu_iface, src};
}
