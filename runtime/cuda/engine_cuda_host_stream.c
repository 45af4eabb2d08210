/* engine_cuda_host_stream.c — products of host-computed matrices over a
 * chunk of many rows, run on the device (see engine_cuda_host_stream.h and
 * docs/streaming.md "Prefill over host-computed matrices").
 *
 * The planner computes a matrix on the host when, at a decode step's few
 * rows, reading it from DRAM beside the streamed copies beats sending it
 * over PCIe. A prompt chunk of 512 rows turns that around: the host's
 * product costs 512 times the flops (7B bf16 at a 4 GiB budget: 64 tok/s of
 * prefill on the H100, session 18), while a copy costs the same bytes as at
 * one row and the GPU's product next to nothing. So from
 * lrun_cuda_host_stream_rows rows on, the matrix is copied into one of two
 * device staging buffers, on the offload's copy stream, and multiplied from
 * there, as llama.cpp sends a CPU layer's weights to the GPU for a large
 * batch:
 *
 *   copy stream     wait done[b] · the matrix into buffer b · ready[b]
 *   compute stream  wait ready[b] · its product (the resident weight's kernel) · done[b]
 *
 * with b alternating: a matrix's copy runs while the one before it is
 * multiplied, and a buffer is refilled only after the products that read it.
 * Pinned sources go by DMA; host and mmap ones through the offload's pinned
 * staging buffers, copied by the model's threads (engine_cuda_offload.c's
 * copy_bytes), which the host does while the device works on what is queued.
 * The product is the resident run's own (cuBLAS on the same bytes), so a
 * streamed chunk's logits are the resident run's bits.
 *
 * A packed matrix (docs/packed.md) crosses packed into the buffer's packed
 * part and is decoded from there into its plain part on the copy stream
 * (lrun_k_packed_decode): 0.70 of the bytes over the link, the same plain
 * bytes multiplied.
 *
 * Staging memory: both buffers from the device budget at init, each the
 * largest covered matrix (256-aligned) and, where any is packed, the
 * largest packed one's packed bytes; the planner counts them as scratch
 * (lrun_cuda_engine_size_placement). Without room the engine keeps every
 * product on the host rather than fail. */
#include "cuda/engine_cuda_host_stream.h"

#include <stdlib.h>
#include <string.h>

#include "cuda/engine_cuda_offload.h"
#include "residency/placement.h"

#define NB 2

struct cuda_host_stream {
    int64_t min_rows; /* a product of at least this many rows streams its matrix */
    size_t buf_bytes; /* one buffer: the largest covered matrix, 256-aligned, then plain_bytes on the packed part */
    size_t plain_bytes; /* a buffer's plain part */
    char *dev;        /* (NB, buf_bytes) device staging */
    cudaEvent_t ready[NB], done[NB];
    int next; /* the buffer the next take fills (the one before it: the last take's) */
};

static size_t round256(size_t b) { return (b + 255) / 256 * 256; }

int64_t lrun_cuda_host_stream_rows(const lrun_cuda_engine *e)
{
    int64_t r = e->host_stream_rows;
    if (r == 0) {
        const char *v = getenv("LRUN_CUDA_HOST_STREAM_ROWS");
        r = v && *v ? atoll(v) : LRUN_CUDA_HOST_STREAM_ROWS_DEFAULT;
        if (r == 0) r = -1; /* LRUN_CUDA_HOST_STREAM_ROWS=0: off */
    }
    if (r < 0) return -1;
    return r > GEMV_MAX_ROWS ? r : GEMV_MAX_ROWS + 1;
}

/* Whether t, computed on the host under p, is one a chunk can stream: a
 * 2-D block matrix in memory, plain or packed. */
static int coverable(const struct lrun_placement *p, const struct lrun_tensor *t)
{
    const lrun_tier tier = lrun_placement_tier(p, t);
    return t && t->layer >= 0 && t->ne[2] <= 1 && lrun_placement_host_compute(p, t) && !t->split &&
           tier != LRUN_TIER_DISK && tier != LRUN_TIER_DEVICE;
}

/* The staging both buffers take under p (0: none) as *plain (a buffer's
 * plain part) and the packed part after it, and whether a covered matrix
 * is pageable (its copies go through the offload's pinned staging). */
static size_t staging_bytes(const lrun_cuda_engine *e, const struct lrun_placement *p, size_t *plain, int *pageable)
{
    *pageable = 0;
    *plain = 0;
    const int64_t rows = lrun_cuda_host_stream_rows(e);
    if (rows < 0 || e->n_batch_max < rows || lrun_cuda_exact_eligible(e)) return 0;
    const lrun_model *m = e->model;
    size_t packed = 0;
    for (int64_t l = e->layer_first; l < e->layer_end; l++)
        for (int id = 0; id < LRUN_ARCH_TENSOR_BLOCK_COUNT; id++) {
            const struct lrun_tensor *t = m->layers[l].t[id];
            if (!t || !lrun_arch_is_matrix(m->arch, (lrun_arch_tensor)id) || !coverable(p, t)) continue;
            if (round256(t->nbytes) > *plain) *plain = round256(t->nbytes);
            if (lrun_placement_packed(p, t) && round256(lrun_placement_stored_bytes(p, t)) > packed)
                packed = round256(lrun_placement_stored_bytes(p, t));
            *pageable |= lrun_placement_tier(p, t) != LRUN_TIER_PINNED;
        }
    return NB * (*plain + packed);
}

size_t lrun_cuda_host_stream_bytes(const lrun_cuda_engine *e, const struct lrun_placement *p)
{
    int pageable;
    size_t plain;
    return staging_bytes(e, p, &plain, &pageable);
}

lrun_status lrun_cuda_host_stream_init(lrun_cuda_engine *e, struct cuda_host_stream **out)
{
    *out = NULL;
    if (!e->offload) return LRUN_OK;
    int pageable;
    size_t plain;
    const size_t bytes = staging_bytes(e, NULL, &plain, &pageable);
    if (bytes == 0) return LRUN_OK;
    struct cuda_host_stream *s = calloc(1, sizeof *s);
    if (!s) return lrun_fail_oom(sizeof *s, 0, "engine: host stream record");
    s->min_rows = lrun_cuda_host_stream_rows(e);
    s->buf_bytes = bytes / NB;
    s->plain_bytes = plain;
    if (lrun_device_alloc(e->device, bytes, "host matrix staging", (void **)&s->dev) != LRUN_OK) {
        free(s); /* no room in the budget or the pool: the host's products, as before */
        return LRUN_OK;
    }
    lrun_status st = LRUN_OK;
    for (int b = 0; st == LRUN_OK && b < NB; b++) {
        st = cuda_check(cudaEventCreateWithFlags(&s->ready[b], cudaEventDisableTiming), "host stream: an event",
                        e->device);
        if (st == LRUN_OK)
            st = cuda_check(cudaEventCreateWithFlags(&s->done[b], cudaEventDisableTiming), "host stream: an event",
                            e->device);
    }
    /* host and mmap sources cross through the offload's pinned staging */
    if (st == LRUN_OK && pageable && lrun_cuda_offload_need_staging(e) != LRUN_OK) {
        lrun_cuda_host_stream_free(e, s); /* no pinned room (a host budget): the host's products, as before */
        return LRUN_OK;
    }
    if (st != LRUN_OK) {
        lrun_cuda_host_stream_free(e, s);
        return st;
    }
    *out = s;
    return LRUN_OK;
}

void lrun_cuda_host_stream_free(lrun_cuda_engine *e, struct cuda_host_stream *s)
{
    if (!s) return;
    (void)cudaStreamSynchronize((cudaStream_t)e->stream); /* the products reading the buffers */
    for (int b = 0; b < NB; b++) {
        if (s->ready[b]) cudaEventDestroy(s->ready[b]);
        if (s->done[b]) cudaEventDestroy(s->done[b]);
    }
    (void)cudaGetLastError();
    if (s->dev) lrun_device_release(e->device, s->dev, NB * s->buf_bytes);
    free(s);
}

size_t lrun_cuda_host_stream_device_bytes(const struct cuda_host_stream *s) { return s ? NB * s->buf_bytes : 0; }

int lrun_cuda_host_stream_takes(const struct cuda_host_stream *s, const struct lrun_tensor *t, int64_t m)
{
    return s && m >= s->min_rows && coverable(NULL, t) && t->nbytes <= s->plain_bytes &&
           (!t->packed || t->pk.total <= s->buf_bytes - s->plain_bytes);
}

lrun_status lrun_cuda_host_stream_take(lrun_cuda_engine *e, struct cuda_host_stream *s, const struct lrun_tensor *t,
                                       const void **data)
{
    const int b = s->next;
    char *dst = s->dev + (size_t)b * s->buf_bytes;
    /* a wait on done[b] before its first record returns at once: nothing has read the buffer yet */
    TRY(lrun_cuda_offload_copy_tensor(e, dst, dst + s->plain_bytes, t, s->done[b], s->ready[b]));
    TRY(cuda_check(cudaStreamWaitEvent((cudaStream_t)e->stream, s->ready[b], 0), "waiting for a staged matrix",
                   e->device));
    s->next = (b + 1) % NB;
    e->stats.host_stream_bytes += t->packed ? t->pk.total : t->nbytes;
    e->stats.host_stream_products++;
    *data = dst;
    return LRUN_OK;
}

lrun_status lrun_cuda_host_stream_done(lrun_cuda_engine *e, struct cuda_host_stream *s)
{
    const int b = (s->next + NB - 1) % NB; /* the last take's */
    return cuda_check(cudaEventRecord(s->done[b], (cudaStream_t)e->stream), "host stream: releasing a buffer",
                      e->device);
}
