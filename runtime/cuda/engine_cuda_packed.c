/* engine_cuda_packed.c — packed weights resident on the device: batch-1
 * products through the fused decode+GEMV (kernels/packed_gemv.cu), the rest
 * decoded into the engine's packed scratch, then the plain kernels. Stream order keeps it safe: every
 * decode and the product that reads it run on the compute stream, so the
 * next decode into the scratch starts after the last product read it. */
#include "cuda/engine_cuda_packed.h"
#include "core/clock.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "residency/placement.h"

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* The fused decode+GEMV for batch-1 products of device-packed weights: on
 * unless LRUN_PACKED_FUSED=0. Its first H200 run (2026-12-04) gave wrong
 * values (a tier-3 read, fixed since); in session 7 test_packed_gemv_gpu
 * and test_packed_stream_gpu with it passed bit for bit, and at 76-87 us
 * on 11008x4096 it is 3x faster than decoding the whole weight into the
 * scratch and running the plain GEMV (240 us; docs/packed.md "Mode 3
 * kernels"). FUSED_DEFAULT 0 puts the decode-then-GEMV path back. */
#define FUSED_DEFAULT 1

static int fused_enabled(void)
{
    static int on = -1;
    if (on < 0) {
        const char *v = getenv("LRUN_PACKED_FUSED");
        on = v && *v ? strcmp(v, "0") != 0 : FUSED_DEFAULT;
    }
    return on;
}

/* Default of LRUN_PACKED_EMBED_GATHER: 0 until lrun_k_packed_embed has run
 * on a GPU (test_packed_embed_gpu); then 1. */
#define EMBED_GATHER_DEFAULT 0

int lrun_cuda_packed_embed_gather_on(void)
{
    const char *v = getenv("LRUN_PACKED_EMBED_GATHER");
    return v && *v ? strcmp(v, "0") != 0 : EMBED_GATHER_DEFAULT;
}

/* Rows of te gathered by token (lrun_k_packed_embed takes rows of a multiple of 8). */
static int embed_gathered(const struct lrun_tensor *te, int on) { return on && te->ne[0] % 8 == 0; }

/* Plain bytes t decodes into the scratch, 0 when it is not read packed on the device. */
static size_t need_of(const lrun_placement *p, const struct lrun_tensor *t, int all_device)
{
    if (!t || !lrun_placement_packed(p, t)) return 0;
    if (!all_device && lrun_placement_tier(p, t) != LRUN_TIER_DEVICE) return 0;
    return align256(t->nbytes);
}

/* Every codec the CUDA kernels read: PEX1 and PEX2 (kernels/packed_pex2.cu,
 * reached through the same launchers by the layout's codec). Any other
 * would reach a kernel that refuses it mid-step, or a host decode the engine
 * may later move to the GPU: refused alike in every placement, at init. */
static lrun_status codec_ok(const lrun_cuda_engine *e, const struct lrun_tensor *t)
{
    if (!t || !t->packed || t->pk.codec == LRUN_PACKED_CODEC_EXP || t->pk.codec == LRUN_PACKED_CODEC_PEX2)
        return LRUN_OK;
    return lrun_fail(LRUN_E_UNSUPPORTED,
                     "engine on %s: tensor '%s' is packed with codec %d, which the CUDA engine does not decode (its "
                     "kernels read PEX1 and PEX2): load it plain (packed = false)",
                     e->device->name, t->name, t->pk.codec);
}

lrun_status lrun_cuda_packed_codec_check(const lrun_cuda_engine *e)
{
    const lrun_model *m = e->model;
    lrun_status st = codec_ok(e, m->tok_embd);
    if (st == LRUN_OK) st = codec_ok(e, m->output);
    for (int64_t l = e->layer_first; st == LRUN_OK && l < e->layer_end; l++)
        for (int i = 0; st == LRUN_OK && i < LRUN_ARCH_TENSOR_BLOCK_COUNT; i++) st = codec_ok(e, m->layers[l].t[i]);
    return st;
}

size_t lrun_cuda_packed_scratch_bytes(const lrun_cuda_engine *e, const lrun_placement *p, int all_device)
{
    const lrun_model *m = e->model;
    /* the head always decodes whole (a tied head is the table itself); the
     * table only when its rows are not gathered; a split's part counts the
     * head only when it is the last, the table only when it is the first */
    size_t best = lrun_cuda_gives_rows(e) ? 0 : need_of(p, m->output, all_device);
    const int gathered = embed_gathered(m->tok_embd, lrun_cuda_packed_embed_gather_on());
    const size_t te = gathered || lrun_cuda_takes_rows(e) ? 0 : need_of(p, m->tok_embd, all_device);
    if (te > best) best = te;
    const lrun_arch *a = m->arch;
    for (int64_t l = e->layer_first; l < e->layer_end; l++)
        for (int i = 0; i < a->n_ops; i++) { /* the weights one op reads at once */
            const lrun_arch_op *op = &a->ops[i];
            size_t sum = 0;
            for (int j = 0; j < LRUN_ARCH_OP_MAX_W && op->w[j] != LRUN_ARCH_TENSOR_NONE; j++)
                if (op->w[j] < LRUN_ARCH_TENSOR_BLOCK_COUNT && lrun_arch_is_matrix(a, op->w[j]))
                    sum += need_of(p, m->layers[l].t[op->w[j]], all_device);
            if (sum > best) best = sum;
        }
    return best;
}

lrun_status lrun_cuda_packed_decode_scratch(lrun_cuda_engine *e, const struct lrun_tensor *w, const void *packed,
                                            size_t off, const void **plain)
{
    if (!e->packed_scratch || off > e->packed_scratch_bytes || w->nbytes > e->packed_scratch_bytes - off)
        return lrun_fail(LRUN_E_INTERNAL, "engine on %s: packed weight %s (%zu bytes plain, at %zu) exceeds the "
                         "packed scratch (%zu bytes)", e->device->name, w->name, w->nbytes, off,
                         e->packed_scratch_bytes);
    uint16_t *dst = (uint16_t *)((char *)e->packed_scratch + off);
    TRY(lrun_k_packed_decode(dst, packed, &w->pk, 0, w->pk.n, e->stream));
    *plain = dst;
    return LRUN_OK;
}

lrun_status lrun_cuda_packed_embed(lrun_cuda_engine *e, const struct lrun_tensor *te, int64_t n)
{
    if (embed_gathered(te, e->packed_embed_gather)) /* only the chunk's rows: no scratch, nothing whole */
        return lrun_k_packed_embed(te->data, &te->pk, te->ne[0], e->d_table.tokens, n, e->x, e->stream);
    const void *plain;
    TRY(lrun_cuda_packed_decode_scratch(e, te, te->data, 0, &plain));
    return lrun_k_embed(te->dtype, plain, te->row_bytes, e->n_embd, e->d_table.tokens, n, e->x, e->stream);
}

lrun_status lrun_cuda_packed_gemv(lrun_cuda_engine *e, const lrun_weight_ref *w, float *const *y, int n_w,
                                  const float *x, const float *norm_w, int64_t m, int mode)
{
    /* every weight packed, in a mode and shape the fused kernel takes: decoded
     * on chip (kernels/packed_gemv.cu), bit-identical to the decode and
     * lrun_k_gemv_multi below; LRUN_E_UNSUPPORTED (k not a multiple of 8,
     * rows too long for its tile) falls through to them; it folds no norm */
    int all_packed = !norm_w && fused_enabled() && m <= GEMV_MAX_ROWS &&
                     (mode == LRUN_K_GEMV_STORE || mode == LRUN_K_GEMV_ADD || mode == LRUN_K_GEMV_SWIGLU);
    for (int i = 0; all_packed && i < n_w; i++) all_packed = w[i].w->packed;
    if (all_packed) {
        lrun_k_packed_part pp[LRUN_K_GEMV_MAX_PARTS];
        for (int i = 0; i < n_w; i++) pp[i] = (lrun_k_packed_part){w[i].data, &w[i].w->pk, w[i].w->ne[1], y[i]};
        const lrun_status st = lrun_k_packed_gemv_multi(pp, n_w, w[0].w->ne[0], x, m, mode, e->stream);
        if (st != LRUN_E_UNSUPPORTED) return st;
    }
    lrun_k_gemv_part parts[LRUN_K_GEMV_MAX_PARTS];
    size_t off = 0;
    for (int i = 0; i < n_w; i++) {
        parts[i].w = w[i].data;
        if (w[i].w->packed) {
            TRY(lrun_cuda_packed_decode_scratch(e, w[i].w, w[i].data, off, &parts[i].w));
            off += align256(w[i].w->nbytes);
        }
        parts[i].row_bytes = w[i].w->row_bytes;
        parts[i].n = w[i].w->ne[1];
        parts[i].y = y[i];
    }
    if (norm_w)
        return lrun_k_gemv_norm_multi(w[0].w->dtype, parts, n_w, w[0].w->ne[0], x, norm_w, e->eps, m, mode,
                                      e->stream);
    return lrun_k_gemv_multi(w[0].w->dtype, parts, n_w, w[0].w->ne[0], x, m, mode, e->stream);
}

lrun_status lrun_cuda_packed_matmul(lrun_cuda_engine *e, const struct lrun_tensor *w, const void *packed,
                                    const float *x, int64_t m, float *y)
{
    if (m <= GEMV_MAX_ROWS && m <= GEMV_MAX_ROWS && fused_enabled()) { /* fused, as lrun_cuda_packed_gemv */
        const lrun_status st = lrun_k_packed_gemv(packed, &w->pk, w->ne[1], w->ne[0], x, m, y, e->stream);
        if (st != LRUN_E_UNSUPPORTED) return st;
    }
    const void *plain;
    TRY(lrun_cuda_packed_decode_scratch(e, w, packed, 0, &plain));
    if (m <= GEMV_MAX_ROWS) return lrun_k_gemv(w->dtype, plain, w->row_bytes, w->ne[1], w->ne[0], x, m, y, e->stream);
    return lrun_k_gemm(e->cublas, w->dtype, plain, w->row_bytes, w->ne[1], w->ne[0], x, m, y, slot_dtype(w->dtype),
                       e->w_slot, e->x_slot, e->stream);
}

// ---------------------------------------------------------------- measurement

/* lrun_model_measure_packed_decode on a CUDA device (runtime/packed/measure_decode.c):
 * the packed bytes uploaded once, then the decode kernel into device memory,
 * timed between stream synchronizations: plain bytes per second. */
lrun_status lrun_cuda_measure_packed_decode(lrun_device *device, const void *packed, const lrun_packed_layout *lay,
                                            double *bytes_per_s)
{
    void *d_packed = NULL, *d_plain = NULL;
    cudaStream_t s = NULL;
    const size_t plain_bytes = (size_t)lay->n * 2;
    lrun_status st = cuda_check(cudaSetDevice(device->cuda_ordinal), "cudaSetDevice", device);
    if (st == LRUN_OK) st = lrun_device_alloc(device, lay->total, "packed decode measurement", &d_packed);
    if (st == LRUN_OK) st = lrun_device_alloc(device, plain_bytes, "packed decode measurement", &d_plain);
    if (st == LRUN_OK) st = lrun_copy_bytes(device, d_packed, LRUN_TIER_DEVICE, packed, LRUN_TIER_HOST, lay->total);
    if (st == LRUN_OK) st = cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "creating a stream", device);
    double best = 0;
    for (int i = 0; i < 4 && st == LRUN_OK; i++) {
        const double t0 = lrun_now_seconds();
        st = lrun_k_packed_decode(d_plain, d_packed, lay, 0, lay->n, s);
        if (st == LRUN_OK) st = cuda_check(cudaStreamSynchronize(s), "timing the packed decode", device);
        const double dt = lrun_now_seconds() - t0;
        if (st == LRUN_OK && i > 0 && dt > 0 && (double)plain_bytes / dt > best) best = (double)plain_bytes / dt;
    }
    if (s) cudaStreamDestroy(s);
    if (d_plain) lrun_device_release(device, d_plain, plain_bytes);
    if (d_packed) lrun_device_release(device, d_packed, lay->total);
    if (st == LRUN_OK) *bytes_per_s = best;
    return st;
}
