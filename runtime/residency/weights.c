/* weights.c — the CPU engine's weight source over lrun_weight_ring
 * (weights.h): the ring's view of a unit, by lrun_arch_tensor. */
#include "residency/weights.h"

#include <string.h>

#include "model/model.h"

static lrun_status cpu_begin(void *ctx, int64_t unit)
{
    lrun_weights_cpu *c = ctx;
    return lrun_weight_ring_acquire(c->wr, c->model, unit, &c->view);
}

static lrun_weight_ref cpu_get(void *ctx, int64_t unit, lrun_arch_tensor id)
{
    const lrun_weights_cpu *c = ctx;
    const struct lrun_tensor *t = lrun_model_arch_tensor(c->model, unit < c->model->info.n_layer ? unit : -1, id);
    /* every tier is host-addressable on the CPU: a host-compute weight is read where it is, as a resident one */
    const void *data = c->view.data[id] ? c->view.data[id] : t ? t->data : NULL;
    return (lrun_weight_ref){t, data, 0, c->view.packed[id]};
}

static lrun_status cpu_end(void *ctx, int64_t unit)
{
    return lrun_weight_ring_release(((lrun_weights_cpu *)ctx)->wr, unit);
}

static lrun_status cpu_skip(void *ctx, int64_t unit)
{
    return lrun_weight_ring_skip(((lrun_weights_cpu *)ctx)->wr, unit);
}

static lrun_weight_ref cpu_peek(void *ctx, int64_t unit, lrun_arch_tensor id)
{
    const lrun_weights_cpu *c = ctx;
    return (lrun_weight_ref){lrun_model_arch_tensor(c->model, unit < c->model->info.n_layer ? unit : -1, id), NULL, 0,
                             0};
}

static const lrun_weights_i cpu_iface = {cpu_begin, cpu_get, cpu_end, cpu_skip, cpu_peek};

lrun_weights lrun_weights_cpu_init(lrun_weights_cpu *src, lrun_weight_ring *wr, const lrun_model *model)
{
    src->wr = wr;
    memset(&src->view, 0, sizeof src->view);
    src->model = model;
    return (lrun_weights){&cpu_iface, src};
}
