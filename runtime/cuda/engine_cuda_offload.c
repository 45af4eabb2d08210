/* engine_cuda_offload.c — staged weights, host compute and host embeddings
 * for an AS_PLACED CUDA engine (engine_cuda_offload.h says what and why).
 *
 * Staging runs on a QUEUED staging ring (residency/ring.h), whose hooks
 * below put, per staged unit c (a layer's off-device matrices, or the LM
 * head), with s = c mod (k+1) its slot:
 *
 *   copy stream     [wait: nothing, the CPU waited] start[s] · H2D copies · done[s]   (fill)
 *   compute stream  reach[s] · wait done[s] (on_acquire) · the unit's kernels · free[s] (release)
 *
 * The ring issues unit c's fill at acquire if a cold pipeline has not yet,
 * and at release(c) the fills up to c+k, each after before_refill has seen
 * free[] of the slot it refills (the unit before c). Each slot's fills take
 * two event sets in turn, so a set's times are read (its last use long
 * finished) before it is recorded again.
 *
 * When every source is pinned (the default; LRUN_CUDA_REFILL_QUEUED=0 turns it
 * off) release(c) issues the fills up to c+k+1 instead, the last
 * into c's own slot with the copy stream waiting on the device for free[]
 * of c (before_refill), so the copies of c+1 and c+2 are queued while the
 * host computes c's host products. Without it, with k = 1, a block's copy
 * starts once the host has finished the block before it and the block's
 * host products wait for that copy: copies and host products run in turn
 * (H100, session 19: 71.8 ms of copies and 77.8 ms of host products a
 * token, 152 ms in all). Staged sources (host, mmap, disk) keep the first
 * order: their fill is CPU work (a memcpy or a read into pinned buffers)
 * that would block behind the device's wait.
 *
 * Disk-tier sources (LRUN_TIER_DISK) are read from the model file with
 * direct I/O (residency/disk_reader.h) into the same pinned staging
 * buffers the host and mmap sources are copied into, then sent by the same
 * DMA: only the fill of a buffer differs. Those buffers then get two spare
 * blocks each, since an aligned read starts up to one block before the
 * bytes wanted.
 *
 * A packed weight (docs/packed.md, mode 2) crosses as its packed bytes into
 * one device staging buffer and is decoded from there into its slot by
 * lrun_k_packed_decode, both on the copy stream, so the next weight's copy
 * into that buffer waits for the decode in stream order; its slot holds the
 * plain weight and compute is unchanged. Host compute multiplies a packed
 * weight a tile of rows at a time as the host decodes it
 * (lrun_cpu_matmul_packed: the plain weight is never written out), and a
 * host embedding table decodes the rows it gathers. A packed weight in the disk tier (a
 * packed model file) is read packed: direct reads of its packed bytes through
 * the staging buffers into the device staging buffer, decoded from there the
 * same way, so fewer bytes come from the disk. */
#include "cuda/engine_cuda_offload.h"

#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/clock.h"
#include "cpu/cpu_matmul.h"
#include "cpu/cpu_matmul_packed.h"
#include "core/device.h"
#include "kernels.h"
#include "residency/disk_reader.h"
#include "residency/placement.h"
#include "residency/ring.h"

/* Host and mmap bytes cross through this many pinned buffers of this size:
 * one is filled by the threads while the other is on the bus. */
#define N_STAGING 2
#define N_PSTAGE 2
#define STAGING_CHUNK ((size_t)32 << 20)
#define N_MATS LRUN_ARCH_TENSOR_BLOCK_COUNT /* a block's matrices, at most */
#define N_EVSETS 2                          /* event sets per slot, taken by its fills in turn */

struct offload_weight {
    const struct lrun_tensor *src; /* the model's record: the bytes off the device */
    struct lrun_tensor view;       /* the same weight in its slot (plain); data set by each begin */
    size_t off;                    /* byte offset in the slot */
    int disk_id;                   /* disk tier: the reader's id for src */
    int packed;                    /* 1: its packed bytes cross and are decoded into the slot */
    size_t bytes;                  /* bytes that cross per fill: packed or plain */
};

struct offload_unit {
    int64_t layer;                 /* block index; -1 for the LM head */
    int64_t first, count;          /* its weights in o->w */
    size_t bytes;                  /* bytes copied per use (packed bytes of packed weights) */
    int any_disk;                  /* a weight of it is read from the file */
};

struct cuda_offload {
    int k;                         /* units issued ahead of the one computing */
    int n_slots;                   /* k + 1 (0 when nothing streams) */
    int64_t n_units;
    struct offload_unit *units;    /* (n_units) in the order compute meets them */
    int64_t *unit_of_layer;        /* (n_layer) unit of each layer, -1 when it streams nothing */
    int64_t head_unit;             /* unit of the LM head, or -1 */
    struct offload_weight *w;      /* (n_w) every streamed weight */
    int64_t n_w;
    struct lrun_model_layer *layers; /* (n_layer) the model's layers, streamed weights swapped for views */
    const struct lrun_tensor *head;  /* the LM head as compute sees it */
    size_t slot_bytes;             /* one slot: the largest unit, parts 256-aligned */
    size_t device_bytes;           /* slots + embedding rows + their index, one pool block */
    char *device_block;
    char *slots;                   /* (n_slots, slot_bytes) device */
    /* Packed weights (mode 2) land in one of N_PSTAGE buffers on the copy
     * stream and decode from it into their slot on the decode stream, so the
     * next weight's copy runs while this one decodes (one buffer on one
     * stream left the link idle for every decode: 93.6% of the packed-PCIe
     * limit on the H100, session 19). */
    char *pstage;        /* (N_PSTAGE, pstage_one) device, or NULL */
    size_t pstage_one;   /* the largest streamed packed weight's packed bytes, 256-aligned; 0: none */
    size_t pstage_bytes; /* N_PSTAGE * pstage_one */
    int pstage_next;
    cudaStream_t decode_stream; /* packed decodes; NULL without packed streamed weights */
    cudaEvent_t pstage_copied[N_PSTAGE], pstage_free[N_PSTAGE], fill_copied;
    cudaStream_t copy_stream;
    int n_sets;                                           /* N_EVSETS per slot: slot s's are s·N_EVSETS … */
    int *set_of_slot;                                     /* (n_slots) the set of the slot's last fill */
    cudaEvent_t *ev_start, *ev_done, *ev_reach, *ev_free; /* (n_sets) each */
    int *set_pending;                                     /* (n_sets) released, its times not yet in the stats */
    int refill_queued;             /* a slot refills behind a device wait for its release (every source pinned) */
    lrun_ring *ring;               /* the order of fills and uses (QUEUED); NULL when nothing is staged */

    char *staging;                 /* (N_STAGING, staging_stride) pinned, NULL when every source is pinned */
    size_t staging_stride;         /* STAGING_CHUNK, + 2 LRUN_DISK_ALIGN when a source is on disk */
    cudaEvent_t staging_free[N_STAGING];
    int staging_next;
    lrun_disk_reader *disk;        /* direct reads of disk-tier sources; NULL when none */
    int *set_disk;                 /* (n_sets) the set's last unit read from the file */
    uint64_t disk_bytes_seen;      /* reader bytes already in e->stats */
    double disk_seconds_seen;

    int embd_host;                 /* token_embd off the device */
    size_t embd_row_bytes;
    void *d_rows;                  /* (B, row) device: the step's embedding rows */
    int32_t *d_idx;                /* (B) device: 0, 1, …, B-1 */
    void *h_rows;                  /* (B, row) pinned staging */
    size_t h_rows_bytes;           /* of h_rows */

    int any_host;                  /* a matmul runs on the host */
    float *h_x, *h_y;              /* pinned: (B, max k) activations down, (B, max n) products up */
    size_t h_x_floats, h_y_floats;
    float *h_y_dev;                /* h_y's device address (mapped), or NULL: products go up by copy */
    cudaEvent_t x_down;            /* recorded after the activations' copy down (lrun_cuda_offload_host_begin) */
    int group_host;                /* an op's host products share one trip down (LRUN_CUDA_HOST_GROUP=0: not) */
    void *work;                    /* lrun_cpu_matmul work, host */
    lrun_threadpool *pool;
};

/* Block l's matrices as the architecture describes them, in tensor id
 * order (llama: q, k, v, o, gate, up, down); returns how many. */
static int layer_mats(const lrun_model *m, int64_t l, const struct lrun_tensor *out[N_MATS])
{
    int n = 0;
    for (int id = 0; id < LRUN_ARCH_TENSOR_BLOCK_COUNT; id++)
        if (lrun_arch_is_matrix(m->arch, (lrun_arch_tensor)id) && m->layers[l].t[id]) out[n++] = m->layers[l].t[id];
    return n;
}

/* Off the device under placement p (NULL: where the tensor is). */
static int placed_off(const lrun_placement *p, const struct lrun_tensor *t)
{
    return lrun_placement_tier(p, t) != LRUN_TIER_DEVICE;
}

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

// ---------------------------------------------------------------- plan

/* Counts a host-computed weight's buffer needs: rows up to rows_max. */
static lrun_status plan_host(struct cuda_offload *o, const lrun_placement *p, const struct lrun_tensor *t,
                             int64_t rows_max, size_t *work)
{
    o->any_host = 1;
    const size_t xk = (size_t)rows_max * (size_t)t->ne[0], yn = (size_t)rows_max * (size_t)t->ne[1];
    if (xk > o->h_x_floats) o->h_x_floats = xk;
    if (yn > o->h_y_floats) o->h_y_floats = yn;
    /* a packed weight: its decode tiles (lrun_cpu_matmul_packed), never the whole weight decoded */
    const size_t wb = lrun_placement_packed(p, t)
                          ? lrun_cpu_matmul_packed_work_bytes(t->ne[0], lrun_threadpool_size(o->pool))
                          : lrun_cpu_matmul_work_bytes(t->dtype, rows_max, t->ne[0]);
    if (wb == SIZE_MAX)
        return lrun_fail_oom(SIZE_MAX, 0, "engine: host matmul work for %s overflows size_t", t->name);
    if (wb > *work) *work = wb;
    return LRUN_OK;
}

/* Appends unit (layer, its streamed weights) when it has any. */
static void plan_unit(struct cuda_offload *o, const lrun_placement *p, int64_t layer, const struct lrun_tensor *const *ts,
                      int n)
{
    struct offload_unit *u = &o->units[o->n_units];
    u->layer = layer;
    u->first = o->n_w;
    u->count = 0;
    u->bytes = 0;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        struct offload_weight *w = &o->w[o->n_w++];
        w->src = ts[i];
        w->view = *ts[i];
        w->view.tier = LRUN_TIER_DEVICE;
        w->view.host_compute = 0;
        w->view.packed = 0; /* decoded into the slot */
        w->packed = lrun_placement_packed(p, ts[i]);
        w->bytes = lrun_placement_stored_bytes(p, ts[i]);
        if (w->packed && align256(w->bytes) > o->pstage_one) o->pstage_one = align256(w->bytes);
        w->off = off;
        w->disk_id = -1;
        off += align256(ts[i]->nbytes);
        u->bytes += w->bytes;
        u->any_disk |= ts[i]->tier == LRUN_TIER_DISK;
        u->count++;
    }
    if (u->count == 0) return;
    if (off > o->slot_bytes) o->slot_bytes = off;
    o->n_units++;
}

lrun_status lrun_cuda_offload_plan(lrun_cuda_engine *e, const lrun_placement *p, int prefetch_layers,
                                   size_t *device_bytes)
{
    lrun_model *m = e->model;
    *device_bytes = 0;
    for (int64_t i = 0; !p && i < m->n_tensors; i++) {
        const struct lrun_tensor *t = &m->tensors[i];
        if (t->tier == LRUN_TIER_DEVICE && t->device != e->device)
            return lrun_fail(LRUN_E_ARG, "engine on %s: weight %s is on another device", e->device->name, t->name);
    }
    const int64_t nl = m->info.n_layer, B = e->n_batch_max;
    struct cuda_offload *o = calloc(1, sizeof *o);
    if (!o) return lrun_fail_oom(sizeof *o, 0, "engine: offload record");
    e->offload = o;
    o->units = calloc((size_t)nl + 1, sizeof *o->units);
    o->w = calloc((size_t)(nl + 1) * N_MATS, sizeof *o->w);
    o->unit_of_layer = malloc((size_t)nl * sizeof *o->unit_of_layer);
    o->layers = malloc((size_t)nl * sizeof *o->layers);
    if (!o->units || !o->w || !o->unit_of_layer || !o->layers)
        return lrun_fail_oom(0, 0, "engine: offload tables for %lld layers", (long long)nl);
    o->pool = lrun_model_threadpool(m);
    o->head_unit = -1;
    size_t work = 0;
    /* a layer split's part (engine_split.c) plans its own blocks only, the head only
     * in the last part and the embedding only in the first: its units, slots and
     * host buffers are sized for those, and its cycle runs over them */
    for (int64_t l = 0; l < nl; l++) o->unit_of_layer[l] = -1;
    for (int64_t l = e->layer_first; l < e->layer_end; l++) {
        const struct lrun_tensor *mats[N_MATS], *streamed[N_MATS];
        int n = 0;
        const int n_mats = layer_mats(m, l, mats);
        size_t group = 0; /* the block's host products side by side, for a decode chunk's rows */
        for (int i = 0; i < n_mats; i++) {
            if (!placed_off(p, mats[i])) continue;
            if (lrun_placement_host_compute(p, mats[i])) {
                TRY(plan_host(o, p, mats[i], B, &work));
                group += (size_t)min64(B, GEMV_MAX_ROWS) * (size_t)mats[i]->ne[1];
            } else streamed[n++] = mats[i];
        }
        if (group > o->h_y_floats) o->h_y_floats = group;
        const int64_t before = o->n_units;
        plan_unit(o, p, l, streamed, n);
        o->unit_of_layer[l] = o->n_units > before ? before : -1;
    }
    const struct lrun_tensor *head = m->output;
    o->head = head;
    if (!lrun_cuda_gives_rows(e) && placed_off(p, head)) {
        if (lrun_placement_host_compute(p, head)) TRY(plan_host(o, p, head, min64(B, LOGIT_ROWS), &work));
        else {
            o->head_unit = o->n_units;
            plan_unit(o, p, -1, &head, 1);
        }
    }
    o->embd_host = !lrun_cuda_takes_rows(e) && placed_off(p, m->tok_embd);
    if (o->n_units == 0 && !o->any_host && !o->embd_host) {
        lrun_cuda_offload_free(e); /* every weight is on the device: nothing to do per step */
        return LRUN_OK;
    }
    /* views of every layer, streamed weights swapped in */
    for (int64_t l = 0; l < nl; l++) {
        o->layers[l] = m->layers[l];
        if (o->unit_of_layer[l] < 0) continue;
        const struct offload_unit *u = &o->units[o->unit_of_layer[l]];
        for (int64_t j = u->first; j < u->first + u->count; j++) {
            struct lrun_model_layer *V = &o->layers[l];
            for (int id = 0; id < LRUN_ARCH_TENSOR_BLOCK_COUNT; id++)
                if (V->t[id] == o->w[j].src) V->t[id] = &o->w[j].view;
        }
    }
    if (o->head_unit >= 0) o->head = &o->w[o->units[o->head_unit].first].view;

    int k = prefetch_layers > 0 ? prefetch_layers : lrun_engine_default_prefetch(LRUN_DEVICE_KIND_CUDA);
    if (o->n_units > 0 && k > o->n_units - 1) k = (int)(o->n_units - 1);
    o->k = o->n_units > 0 ? k : 0;
    o->n_slots = o->n_units > 0 ? o->k + 1 : 0;
    size_t bytes = 0, rows = 0;
    if (!lrun_size_mul(N_PSTAGE, o->pstage_one, &o->pstage_bytes) ||
        !lrun_size_mul((size_t)o->n_slots, o->slot_bytes, &bytes) || !lrun_size_add(bytes, o->pstage_bytes, &bytes))
        return lrun_fail_oom(SIZE_MAX, 0, "engine: streaming slots overflow size_t");
    if (o->embd_host) {
        o->embd_row_bytes = m->tok_embd->row_bytes;
        if (!lrun_size_mul((size_t)B, o->embd_row_bytes, &rows) ||
            !lrun_size_add(bytes, align256(rows) + (size_t)B * sizeof(int32_t), &bytes))
            return lrun_fail_oom(SIZE_MAX, 0, "engine: embedding rows overflow size_t");
    }
    o->device_bytes = bytes;
    o->work = NULL;
    if (work && !p) { /* sizing only needs the bytes; 64-byte aligned for the packed products' tiles */
        o->work = aligned_alloc(64, (work + 63) / 64 * 64);
        if (!o->work) return lrun_fail_oom(work, 0, "engine: host matmul work");
    }
    *device_bytes = bytes;
    return LRUN_OK;
}

size_t lrun_cuda_offload_slot_bytes(const lrun_cuda_engine *e)
{
    const struct cuda_offload *o = e->offload;
    return o ? (size_t)o->n_slots * o->slot_bytes + o->pstage_bytes : 0;
}

// ---------------------------------------------------------------- init, free

static lrun_status make_events(lrun_cuda_engine *e, cudaEvent_t **out, int n, unsigned flags)
{
    *out = calloc((size_t)n, sizeof **out);
    if (!*out) return lrun_fail_oom((size_t)n * sizeof **out, 0, "engine: events");
    for (int i = 0; i < n; i++)
        TRY(cuda_check(cudaEventCreateWithFlags(&(*out)[i], flags), "creating a streaming event", e->device));
    return LRUN_OK;
}

static void free_events(cudaEvent_t *ev, int n)
{
    if (!ev) return;
    for (int i = 0; i < n; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    free(ev);
}

static lrun_status make_ring(lrun_cuda_engine *e);

/* The reader for the disk-tier sources, each located in its file. */
static lrun_status open_disk(struct cuda_offload *o)
{
    TRY(lrun_disk_reader_init(&o->disk, 0));
    for (int64_t j = 0; j < o->n_w; j++) {
        if (o->w[j].src->tier != LRUN_TIER_DISK) continue;
        size_t lead;
        TRY(lrun_disk_reader_add(o->disk, o->w[j].src, &o->w[j].disk_id, &lead));
    }
    return LRUN_OK;
}

lrun_status lrun_cuda_offload_init(lrun_cuda_engine *e)
{
    struct cuda_offload *o = e->offload;
    const int64_t B = e->n_batch_max;
    if (o->device_bytes) /* the slots weights stream through: a weights allocation */
        TRY(lrun_oom_phase(lrun_device_alloc(e->device, o->device_bytes, "streaming slots", (void **)&o->device_block),
                           "weights"));
    o->slots = o->device_block;
    if (o->pstage_bytes) o->pstage = o->device_block + (size_t)o->n_slots * o->slot_bytes;
    TRY(cuda_check(cudaStreamCreateWithFlags(&o->copy_stream, cudaStreamNonBlocking), "creating the copy stream",
                   e->device));
    if (o->pstage_one) {
        TRY(cuda_check(cudaStreamCreateWithFlags(&o->decode_stream, cudaStreamNonBlocking),
                       "creating the packed decode stream", e->device));
        for (int i = 0; i < N_PSTAGE; i++) {
            TRY(cuda_check(cudaEventCreateWithFlags(&o->pstage_copied[i], cudaEventDisableTiming),
                           "creating a packed staging event", e->device));
            TRY(cuda_check(cudaEventCreateWithFlags(&o->pstage_free[i], cudaEventDisableTiming),
                           "creating a packed staging event", e->device));
        }
        TRY(cuda_check(cudaEventCreateWithFlags(&o->fill_copied, cudaEventDisableTiming), "creating a fill event",
                       e->device));
    }
    o->n_sets = N_EVSETS * o->n_slots;
    TRY(make_events(e, &o->ev_start, o->n_sets, cudaEventDefault));
    TRY(make_events(e, &o->ev_done, o->n_sets, cudaEventDefault));
    TRY(make_events(e, &o->ev_reach, o->n_sets, cudaEventDefault));
    TRY(make_events(e, &o->ev_free, o->n_sets, cudaEventDisableTiming));
    for (int i = 0; i < N_STAGING; i++)
        TRY(cuda_check(cudaEventCreateWithFlags(&o->staging_free[i], cudaEventDisableTiming),
                       "creating a staging event", e->device));
    o->set_pending = calloc((size_t)o->n_sets + 1, sizeof *o->set_pending);
    o->set_disk = calloc((size_t)o->n_sets + 1, sizeof *o->set_disk);
    o->set_of_slot = calloc((size_t)o->n_slots + 1, sizeof *o->set_of_slot);
    if (!o->set_pending || !o->set_disk || !o->set_of_slot) return lrun_fail_oom(0, 0, "engine: slot records");
    for (int s = 0; s < o->n_slots; s++) o->set_of_slot[s] = s * N_EVSETS;

    int staged = 0, disk = 0;
    for (int64_t j = 0; j < o->n_w; j++) {
        staged |= o->w[j].src->tier != LRUN_TIER_PINNED;
        disk |= o->w[j].src->tier == LRUN_TIER_DISK;
    }
    /* the default since session 24 measured it on the H100 (docs/streaming.md
     * "The pipeline"); LRUN_CUDA_REFILL_QUEUED=0 keeps the CPU-issued order, and
     * lrun.predict_pipeline reads the same switch */
    const char *rq = getenv("LRUN_CUDA_REFILL_QUEUED");
    o->refill_queued = !staged && !(rq && strcmp(rq, "0") == 0);
    if (o->n_slots > 0) TRY(make_ring(e));
    if (disk) TRY(open_disk(o));
    o->staging_stride = STAGING_CHUNK + (disk ? 2 * LRUN_DISK_ALIGN : 0);
    if (staged) TRY(lrun_cuda_offload_need_staging(e));
    if (o->embd_host) {
        const size_t rows = (size_t)B * o->embd_row_bytes;
        o->d_rows = o->device_block + (size_t)o->n_slots * o->slot_bytes + o->pstage_bytes;
        o->d_idx = (int32_t *)((char *)o->d_rows + align256(rows));
        o->h_rows_bytes = rows;
        TRY(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SLOTS, LRUN_TIER_PINNED, rows, "embedding row staging",
                                   &o->h_rows));
        int32_t *idx = malloc((size_t)B * sizeof *idx);
        if (!idx) return lrun_fail_oom((size_t)B * sizeof *idx, 0, "engine: embedding index");
        for (int64_t i = 0; i < B; i++) idx[i] = (int32_t)i;
        const lrun_status st = cuda_check(cudaMemcpy(o->d_idx, idx, (size_t)B * sizeof *idx, cudaMemcpyHostToDevice),
                                          "uploading the embedding index", e->device);
        free(idx);
        TRY(st);
    }
    if (o->any_host) {
        TRY(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, o->h_x_floats * sizeof(float),
                                   "host matmul input", (void **)&o->h_x));
        TRY(lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, o->h_y_floats * sizeof(float),
                                   "host matmul output", (void **)&o->h_y));
        /* under UVA cudaHostAlloc'd memory is mapped; without a mapping (or
         * LRUN_CUDA_MAPPED_UP=0, to compare) products go up by copy */
        void *dev = NULL;
        const char *up = getenv("LRUN_CUDA_MAPPED_UP");
        if (!(up && strcmp(up, "0") == 0) && cudaHostGetDevicePointer(&dev, o->h_y, 0) == cudaSuccess)
            o->h_y_dev = dev;
        (void)cudaGetLastError();
        TRY(cuda_check(cudaEventCreateWithFlags(&o->x_down, cudaEventDisableTiming), "creating a host product event",
                       e->device));
        const char *group = getenv("LRUN_CUDA_HOST_GROUP");
        o->group_host = !(group && strcmp(group, "0") == 0);
    }
    e->stats.slot_bytes = (size_t)o->n_slots * o->slot_bytes + o->pstage_bytes;
    e->stats.prefetch_layers = o->k;
    return LRUN_OK;
}

void lrun_cuda_offload_free(lrun_cuda_engine *e)
{
    struct cuda_offload *o = e->offload;
    if (!o) return;
    if (o->copy_stream) {
        (void)cudaStreamSynchronize(o->copy_stream);
        cudaStreamDestroy(o->copy_stream);
    }
    if (o->decode_stream) {
        (void)cudaStreamSynchronize(o->decode_stream);
        cudaStreamDestroy(o->decode_stream);
    }
    for (int i = 0; i < N_PSTAGE; i++) {
        if (o->pstage_copied[i]) cudaEventDestroy(o->pstage_copied[i]);
        if (o->pstage_free[i]) cudaEventDestroy(o->pstage_free[i]);
    }
    if (o->fill_copied) cudaEventDestroy(o->fill_copied);
    if (o->x_down) cudaEventDestroy(o->x_down);
    free_events(o->ev_start, o->n_sets);
    free_events(o->ev_done, o->n_sets);
    free_events(o->ev_reach, o->n_sets);
    free_events(o->ev_free, o->n_sets);
    for (int i = 0; i < N_STAGING; i++)
        if (o->staging_free[i]) cudaEventDestroy(o->staging_free[i]);
    (void)cudaGetLastError();
    if (o->device_block) lrun_device_release(e->device, o->device_block, o->device_bytes);
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SLOTS, LRUN_TIER_PINNED, o->staging,
                             N_STAGING * o->staging_stride);
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SLOTS, LRUN_TIER_PINNED, o->h_rows, o->h_rows_bytes);
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, o->h_x, o->h_x_floats * sizeof(float));
    lrun_device_host_release(e->device, LRUN_HOST_CATEGORY_SCRATCH, LRUN_TIER_PINNED, o->h_y, o->h_y_floats * sizeof(float));
    free(o->work);
    lrun_ring_free(o->ring);
    lrun_disk_reader_free(o->disk);
    free(o->set_disk);
    free(o->set_pending);
    free(o->set_of_slot);
    free(o->units);
    free(o->w);
    free(o->unit_of_layer);
    free(o->layers);
    free(o);
    e->offload = NULL;
}

// ---------------------------------------------------------------- copies

lrun_status lrun_cuda_offload_need_staging(lrun_cuda_engine *e)
{
    struct cuda_offload *o = e->offload;
    if (o->staging) return LRUN_OK;
    /* pinned memory is page-aligned (cudaHostAlloc), so each buffer is block-aligned */
    return lrun_device_host_alloc(e->device, LRUN_HOST_CATEGORY_SLOTS, LRUN_TIER_PINNED,
                                  N_STAGING * o->staging_stride, "streaming staging", (void **)&o->staging);
}

/* dst (device) = the first bytes of w's bytes at its home (packed or plain),
 * on the copy stream: by DMA from pinned memory, through the staging buffers
 * otherwise (filled by a parallel memcpy, or by direct reads from the file
 * for the disk tier). */
static lrun_status copy_bytes(lrun_cuda_engine *e, char *dst, const struct offload_weight *w, size_t bytes)
{
    struct cuda_offload *o = e->offload;
    const struct lrun_tensor *t = w->src;
    if (t->tier == LRUN_TIER_PINNED)
        return cuda_check(cudaMemcpyAsync(dst, t->data, bytes, cudaMemcpyHostToDevice, o->copy_stream),
                          "streaming a pinned weight", e->device);
    const char *src = t->data;
    for (size_t at = 0; at < bytes; at += STAGING_CHUNK) {
        const size_t len = bytes - at < STAGING_CHUNK ? bytes - at : STAGING_CHUNK;
        const int b = o->staging_next;
        o->staging_next = (b + 1) % N_STAGING;
        char *stage = o->staging + (size_t)b * o->staging_stride;
        size_t lead = 0;
        TRY(cuda_check(cudaEventSynchronize(o->staging_free[b]), "waiting for a staging buffer", e->device));
        if (w->disk_id >= 0) {
            TRY(lrun_disk_reader_read(o->disk, w->disk_id, at, len, stage, &lead));
        } else {
            lrun_threadpool_memcpy(o->pool, stage, src + at, len);
        }
        TRY(cuda_check(cudaMemcpyAsync(dst + at, stage + lead, len, cudaMemcpyHostToDevice, o->copy_stream),
                       "streaming a staged weight", e->device));
        TRY(cuda_check(cudaEventRecord(o->staging_free[b], o->copy_stream), "recording a staging event", e->device));
    }
    return LRUN_OK;
}

/* dst (device, the weight's place in its slot) = w's plain bytes: copied
 * as they are on the copy stream, or (packed) copied into the next packed
 * staging buffer once its last decode has read it, and decoded from there
 * on the decode stream. */
static lrun_status copy_weight(lrun_cuda_engine *e, char *dst, const struct offload_weight *w)
{
    struct cuda_offload *o = e->offload;
    if (!w->packed) return copy_bytes(e, dst, w, w->src->nbytes);
    const int b = o->pstage_next;
    o->pstage_next = (b + 1) % N_PSTAGE;
    char *stage = o->pstage + (size_t)b * o->pstage_one;
    TRY(cuda_check(cudaStreamWaitEvent(o->copy_stream, o->pstage_free[b], 0), "waiting for a packed staging buffer",
                   e->device));
    TRY(copy_bytes(e, stage, w, w->bytes));
    TRY(cuda_check(cudaEventRecord(o->pstage_copied[b], o->copy_stream), "recording a packed copy", e->device));
    TRY(cuda_check(cudaStreamWaitEvent(o->decode_stream, o->pstage_copied[b], 0), "waiting for a packed copy",
                   e->device));
    TRY(lrun_k_packed_decode((uint16_t *)dst, stage, &w->src->pk, 0, w->src->pk.n, o->decode_stream));
    return cuda_check(cudaEventRecord(o->pstage_free[b], o->decode_stream), "recording a packed decode", e->device);
}

lrun_status lrun_cuda_offload_copy_tensor(lrun_cuda_engine *e, char *dst, char *pstage, const struct lrun_tensor *t,
                                          cudaEvent_t after, cudaEvent_t ready)
{
    struct cuda_offload *o = e->offload;
    const struct offload_weight w = {.src = t, .disk_id = -1};
    if (t->tier == LRUN_TIER_DISK || (t->tier != LRUN_TIER_PINNED && !o->staging) || (t->packed && !pstage))
        return lrun_fail(LRUN_E_INTERNAL, "engine on %s: %s cannot be copied from its tier", e->device->name,
                         t->name);
    if (after)
        TRY(cuda_check(cudaStreamWaitEvent(o->copy_stream, after, 0), "waiting for a staging buffer", e->device));
    if (t->packed) { /* its packed bytes cross, decoded behind them in stream order */
        TRY(copy_bytes(e, pstage, &w, t->pk.total));
        TRY(lrun_k_packed_decode((uint16_t *)dst, pstage, &t->pk, 0, t->pk.n, o->copy_stream));
    } else {
        TRY(copy_bytes(e, dst, &w, t->nbytes));
    }
    return cuda_check(cudaEventRecord(ready, o->copy_stream), "recording a staged matrix", e->device);
}

/* Folds event set v's last unit into the stats; its events have completed.
 * A unit whose copy landed after compute reached it is a miss, and the gap
 * is time compute stalled. */
static void account_set(lrun_cuda_engine *e, int v)
{
    struct cuda_offload *o = e->offload;
    if (!o->set_pending[v]) return;
    float copy_ms = 0, gap_ms = 0;
    if (cudaEventElapsedTime(&copy_ms, o->ev_start[v], o->ev_done[v]) == cudaSuccess)
        e->stats.copy_seconds += copy_ms * 1e-3;
    const int timed = cudaEventElapsedTime(&gap_ms, o->ev_reach[v], o->ev_done[v]) == cudaSuccess;
    (void)cudaGetLastError();
    if (timed && gap_ms <= 0) {
        e->stats.prefetch_hits++;
    } else {
        e->stats.prefetch_misses++;
        if (o->set_disk[v]) e->stats.disk_stalls++;
        if (timed) e->stats.stall_seconds += gap_ms * 1e-3;
    }
    o->set_pending[v] = 0;
}

// ---------------------------------------------------------------- the ring's hooks

/* fill: unit u into slot s, on the copy stream, between the timing events
 * of the slot's next set, whose last use is read first. */
static lrun_status ring_fill(void *owner, int64_t unit, int s, void *slot, size_t *bytes)
{
    lrun_cuda_engine *e = owner;
    struct cuda_offload *o = e->offload;
    const struct offload_unit *u = &o->units[unit];
    const int v = s * N_EVSETS + (o->set_of_slot[s] + 1) % N_EVSETS;
    if (o->set_pending[v]) { /* released N_EVSETS fills ago: long done */
        TRY(cuda_check(cudaEventSynchronize(o->ev_free[v]), "waiting for a streaming slot", e->device));
        account_set(e, v);
    }
    o->set_of_slot[s] = v;
    TRY(cuda_check(cudaEventRecord(o->ev_start[v], o->copy_stream), "recording a copy start", e->device));
    for (int64_t j = u->first; j < u->first + u->count; j++)
        TRY(copy_weight(e, (char *)slot + o->w[j].off, &o->w[j]));
    if (o->decode_stream) { /* done once the copies and the decodes are: the end on the decode stream */
        TRY(cuda_check(cudaEventRecord(o->fill_copied, o->copy_stream), "recording a fill's copies", e->device));
        TRY(cuda_check(cudaStreamWaitEvent(o->decode_stream, o->fill_copied, 0), "waiting for a fill's copies",
                       e->device));
        TRY(cuda_check(cudaEventRecord(o->ev_done[v], o->decode_stream), "recording a copy end", e->device));
    } else {
        TRY(cuda_check(cudaEventRecord(o->ev_done[v], o->copy_stream), "recording a copy end", e->device));
    }
    *bytes = u->bytes;
    return LRUN_OK;
}

/* before_refill: the slot's last reader has run before the copy stream
 * writes it again: waited for there (refill_queued), else by the CPU, which
 * then reads its times at once (so the fill finds the other set read too,
 * and the default order keeps one wait a fill). */
static lrun_status ring_before_refill(void *owner, int s)
{
    lrun_cuda_engine *e = owner;
    struct cuda_offload *o = e->offload;
    const int v = o->set_of_slot[s];
    if (o->refill_queued)
        return cuda_check(cudaStreamWaitEvent(o->copy_stream, o->ev_free[v], 0), "queueing a slot's refill",
                          e->device);
    TRY(cuda_check(cudaEventSynchronize(o->ev_free[v]), "waiting for a streaming slot", e->device));
    account_set(e, v);
    return LRUN_OK;
}

/* on_acquire: compute marks its arrival and waits for the slot's copies. */
static lrun_status ring_on_acquire(void *owner, int s)
{
    lrun_cuda_engine *e = owner;
    struct cuda_offload *o = e->offload;
    const int v = o->set_of_slot[s];
    cudaStream_t cs = (cudaStream_t)e->stream;
    TRY(cuda_check(cudaEventRecord(o->ev_reach[v], cs), "recording a compute arrival", e->device));
    return cuda_check(cudaStreamWaitEvent(cs, o->ev_done[v], 0), "waiting for a streamed layer", e->device);
}

/* release: the slot's reader is the compute issued so far. */
static lrun_status ring_release(void *owner, int64_t unit, int s, void *slot, size_t *bytes)
{
    lrun_cuda_engine *e = owner;
    struct cuda_offload *o = e->offload;
    (void)slot, (void)bytes;
    const int v = o->set_of_slot[s];
    TRY(cuda_check(cudaEventRecord(o->ev_free[v], (cudaStream_t)e->stream), "recording a slot release", e->device));
    o->set_pending[v] = 1;
    o->set_disk[v] = o->units[unit].any_disk;
    return LRUN_OK;
}

static lrun_status make_ring(lrun_cuda_engine *e)
{
    struct cuda_offload *o = e->offload;
    void **bases = malloc((size_t)o->n_slots * sizeof *bases);
    if (!bases) return lrun_fail_oom((size_t)o->n_slots * sizeof *bases, 0, "engine: slot records");
    for (int i = 0; i < o->n_slots; i++) bases[i] = o->slots + (size_t)i * o->slot_bytes;
    const lrun_ring_opts ro = {.n_units = o->n_units,
                               .n_ring = o->n_slots,
                               .ring_slots = bases,
                               .own_unit = -1,
                               .order = LRUN_RING_ORDER_CYCLIC,
                               .driver = LRUN_RING_FILL_QUEUED,
                               .ahead = o->refill_queued ? o->n_slots : 0,
                               .fill = ring_fill,
                               .release = ring_release,
                               .on_acquire = ring_on_acquire,
                               .before_refill = ring_before_refill,
                               .owner = e};
    const lrun_status st = lrun_ring_init(&o->ring, &ro);
    free(bases);
    return st;
}

// ---------------------------------------------------------------- units

/* Makes compute wait for unit `unit` (the next of the cycle) and points its
 * views at its slot. */
static lrun_status unit_begin(lrun_cuda_engine *e, int64_t unit)
{
    struct cuda_offload *o = e->offload;
    void *slot;
    TRY(lrun_ring_acquire(o->ring, unit, &slot, NULL));
    const struct offload_unit *u = &o->units[unit];
    for (int64_t j = u->first; j < u->first + u->count; j++) o->w[j].view.data = (char *)slot + o->w[j].off;
    /* counted when compute takes the unit (lrun.h), not when it was issued
     * ahead: a chunk's count is its own units, as on the CPU */
    e->stats.bytes_streamed += u->bytes;
    return LRUN_OK;
}

static lrun_status unit_end(lrun_cuda_engine *e, int64_t unit)
{
    return lrun_ring_release(e->offload->ring, unit, NULL);
}

lrun_status lrun_cuda_offload_layer_begin(lrun_cuda_engine *e, int64_t l, const struct lrun_model_layer **out)
{
    struct cuda_offload *o = e->offload;
    *out = &o->layers[l];
    return o->unit_of_layer[l] >= 0 ? unit_begin(e, o->unit_of_layer[l]) : LRUN_OK;
}

lrun_status lrun_cuda_offload_layer_end(lrun_cuda_engine *e, int64_t l)
{
    const int64_t u = e->offload->unit_of_layer[l];
    return u >= 0 ? unit_end(e, u) : LRUN_OK;
}

lrun_status lrun_cuda_offload_head_begin(lrun_cuda_engine *e, const struct lrun_tensor **out)
{
    struct cuda_offload *o = e->offload;
    if (out) *out = o->head;
    return o->head_unit >= 0 ? unit_begin(e, o->head_unit) : LRUN_OK;
}

lrun_status lrun_cuda_offload_head_end(lrun_cuda_engine *e)
{
    return e->offload->head_unit >= 0 ? unit_end(e, e->offload->head_unit) : LRUN_OK;
}

/* Valid until the next unit of the cycle is issued into the head's slot:
 * that happens in the next chunk, after this one's logits were synchronized. */
const struct lrun_tensor *lrun_cuda_offload_head(const lrun_cuda_engine *e) { return e->offload->head; }

// ---------------------------------------------------------------- embeddings

int lrun_cuda_offload_embeds_on_host(const lrun_cuda_engine *e) { return e->offload->embd_host; }

lrun_status lrun_cuda_offload_embed(lrun_cuda_engine *e, int64_t n)
{
    struct cuda_offload *o = e->offload;
    const struct lrun_tensor *te = e->model->tok_embd;
    const size_t rb = o->embd_row_bytes;
    /* the previous chunk's copy out of h_rows finished: run_chunk synchronized */
    for (int64_t i = 0; i < n; i++) {
        char *row = (char *)o->h_rows + (size_t)i * rb;
        const uint64_t tok = (uint64_t)e->h_table.tokens[i];
        if (te->packed) /* the row decoded from the packed table */
            lrun_packed_decode_range((uint16_t *)row, te->data, &te->pk, tok * (uint64_t)te->ne[0], (uint64_t)te->ne[0]);
        else
            memcpy(row, (const char *)te->data + tok * rb, rb);
    }
    TRY(cuda_check(cudaMemcpyAsync(o->d_rows, o->h_rows, (size_t)n * rb, cudaMemcpyHostToDevice,
                                   (cudaStream_t)e->stream),
                   "sending embedding rows", e->device));
    /* as lrun.h counts gathered rows: host_compute_bytes for a host-compute table */
    if (te->host_compute) e->stats.host_compute_bytes += (uint64_t)n * rb;
    else e->stats.bytes_streamed += (uint64_t)n * rb;
    return lrun_k_embed(te->dtype, o->d_rows, rb, e->n_embd, o->d_idx, n, e->x, e->stream);
}

// ---------------------------------------------------------------- host compute

int lrun_cuda_offload_on_host(const lrun_cuda_engine *e, const struct lrun_tensor *w)
{
    return e->offload && w->host_compute && w->tier != LRUN_TIER_DEVICE;
}

int lrun_cuda_offload_host_compute(const lrun_cuda_engine *e, lrun_cuda_host_compute *out)
{
    const struct cuda_offload *o = e->offload;
    if (!o || !o->any_host || !o->h_x || !o->h_y || !o->pool) return 0;
    *out = (lrun_cuda_host_compute){o->pool, o->work, o->h_x, o->h_y, o->h_x_floats, o->h_y_floats};
    return 1;
}

lrun_status lrun_cuda_offload_host_matmul(lrun_cuda_engine *e, const struct lrun_tensor *w, const float *x,
                                          int64_t m, float *y)
{
    TRY(lrun_cuda_offload_host_begin(e, x, m, w->ne[0]));
    return lrun_cuda_offload_host_finish(e, &w, &y, 1, m);
}

int lrun_cuda_offload_host_group_fits(const lrun_cuda_engine *e, const struct lrun_tensor *const *w, int n, int64_t m)
{
    const struct cuda_offload *o = e->offload;
    if (!o || !o->group_host || m > GEMV_MAX_ROWS) return 0;
    size_t yf = 0;
    for (int i = 0; i < n; i++) {
        if (w[i]->ne[0] != w[0]->ne[0]) return 0;
        yf += (size_t)m * (size_t)w[i]->ne[1];
    }
    return yf <= o->h_y_floats;
}

lrun_status lrun_cuda_offload_host_begin(lrun_cuda_engine *e, const float *x, int64_t m, int64_t k)
{
    struct cuda_offload *o = e->offload;
    const size_t xf = (size_t)m * (size_t)k;
    if (xf > o->h_x_floats)
        return lrun_fail(LRUN_E_INTERNAL, "engine: host matmul input of %lld × %lld exceeds its buffer", (long long)m,
                         (long long)k);
    cudaStream_t s = (cudaStream_t)e->stream;
    TRY(cuda_check(cudaMemcpyAsync(o->h_x, x, xf * sizeof(float), cudaMemcpyDeviceToHost, s),
                   "activations to the host", e->device));
    /* after the last host products' copies up too (one stream), so h_y is free once it is reached */
    return cuda_check(cudaEventRecord(o->x_down, s), "marking the activations' copy", e->device);
}

lrun_status lrun_cuda_offload_host_finish(lrun_cuda_engine *e, const struct lrun_tensor *const *w, float *const *y,
                                          int n, int64_t m)
{
    struct cuda_offload *o = e->offload;
    size_t yf = 0;
    for (int i = 0; i < n; i++) yf += (size_t)m * (size_t)w[i]->ne[1];
    if (yf > o->h_y_floats)
        return lrun_fail(LRUN_E_INTERNAL, "engine: host matmul of %s with %lld rows exceeds its buffers", w[0]->name,
                         (long long)m);
    /* waits for the copy down only: device work enqueued since runs on */
    const double t0 = lrun_now_seconds();
    TRY(cuda_check(cudaEventSynchronize(o->x_down), "waiting for activations", e->device));
    const double t1 = lrun_now_seconds();
    float *h_y = o->h_y;
    for (int i = 0; i < n; i++) {
        const int64_t k = w[i]->ne[0], rows = w[i]->ne[1];
        if (w[i]->packed) { /* decoded a tile at a time before each tile's product: the plain product's bits */
            if (!o->work)
                return lrun_fail(LRUN_E_INTERNAL, "engine: packed host-compute weight %s has no decode tiles",
                                 w[i]->name);
            lrun_cpu_matmul_packed(o->pool, w[i]->data, &w[i]->pk, rows, k, o->h_x, m, h_y, o->work);
        } else {
            lrun_cpu_matmul(o->pool, w[i]->dtype, w[i]->data, w[i]->row_bytes, rows, k, o->h_x, m, h_y, o->work);
        }
        h_y += (size_t)m * (size_t)rows;
    }
    e->stats.host_wait_seconds += t1 - t0;
    e->stats.host_compute_seconds += lrun_now_seconds() - t1;
    h_y = o->h_y;
    for (int i = 0; i < n; i++) {
        const size_t f = (size_t)m * (size_t)w[i]->ne[1];
        TRY(lrun_cuda_offload_host_up(e, y[i], h_y, f));
        lrun_cuda_count_host_bytes(e, w[i]->layer, w[i]->nbytes);
        h_y += f;
    }
    return LRUN_OK;
}

lrun_status lrun_cuda_offload_host_up(lrun_cuda_engine *e, float *dst, const float *src, size_t floats)
{
    const struct cuda_offload *o = e->offload;
    if (floats == 0) return LRUN_OK;
    if (o->h_y_dev && src >= o->h_y && src + floats <= o->h_y + o->h_y_floats)
        return lrun_k_copy_mapped(dst, o->h_y_dev + (src - o->h_y), (int64_t)floats, e->stream);
    return cuda_check(cudaMemcpyAsync(dst, src, floats * sizeof(float), cudaMemcpyHostToDevice,
                                      (cudaStream_t)e->stream),
                      "host product to the device", e->device);
}

// ---------------------------------------------------------------- stats, reset

void lrun_cuda_offload_account(lrun_cuda_engine *e)
{
    struct cuda_offload *o = e->offload;
    for (int v = 0; v < o->n_sets; v++)
        if (o->set_pending[v] && cudaEventQuery(o->ev_free[v]) == cudaSuccess) account_set(e, v);
    (void)cudaGetLastError();
    if (o->disk) { /* the reader's counters run on; the stats take what is new */
        lrun_disk_stats d;
        lrun_disk_reader_stats(o->disk, &d);
        e->stats.disk_bytes_read += d.bytes_read - o->disk_bytes_seen;
        e->stats.disk_read_seconds += d.read_seconds - o->disk_seconds_seen;
        o->disk_bytes_seen = d.bytes_read;
        o->disk_seconds_seen = d.read_seconds;
        e->stats.disk_queue_depth = d.queue_depth;
        e->stats.disk_direct = d.direct;
    }
}

void lrun_cuda_offload_reset(lrun_cuda_engine *e)
{
    struct cuda_offload *o = e->offload;
    (void)cudaStreamSynchronize((cudaStream_t)e->stream);
    (void)cudaStreamSynchronize(o->copy_stream);
    if (o->decode_stream) (void)cudaStreamSynchronize(o->decode_stream);
    (void)cudaGetLastError();
    for (int v = 0; v < o->n_sets; v++) o->set_pending[v] = 0;
    if (o->ring) (void)lrun_ring_begin(o->ring); /* every slot empty, the cycle from its first unit: issues nothing */
}
