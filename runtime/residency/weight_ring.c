/* weight_ring.c — the units and slots of weight_ring.h, filled by the
 * staging ring (ring.h).
 *
 * Ordering: units form a cycle (the staged blocks in order, then the head
 * when it is staged), a CYCLIC ring: fills run ahead across steps, so the
 * first k blocks of the next token are filled while the caller samples.
 * The head has a slot of its own (the ring's own_unit): its size is not a
 * block's.
 *
 * Disk-tier weights (LRUN_TIER_DISK) are filled by direct reads from the
 * model file (disk_reader.h) instead of a copy from the mapping. O_DIRECT
 * reads whole aligned blocks, so such a weight gets an aligned region of
 * lrun_disk_region(bytes) in its unit (room for any offset in the file),
 * its bytes landing `lead` bytes in; units with one are rounded to whole
 * blocks and the slots' memory to a block boundary, so every region is
 * aligned. Sizing reserves the same regions without opening the file.
 *
 * Packed weights (docs/packed.md): a staged packed matrix is decoded into
 * its slot by the fill (the slot holds the plain bytes, so compute is the
 * same); a packed matrix read in place (DEVICE tier, host compute, or any
 * tier when nothing is staged) is multiplied packed where it is, its
 * product decoding it a tile at a time in the threads' tiles taken with the
 * slots (an expert stack only its chosen experts' rows). A packed weight in the
 * disk tier (a packed model file) is read packed: its packed bytes (fewer
 * from the disk) land in its aligned region and the fill decodes them into
 * the plain area that follows the region in the unit. */
#include "residency/weight_ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/device.h"
#include "core/error.h"
#include "core/threadpool.h"
#include "cpu/cpu_matmul_packed.h"
#include "model/model.h"
#include "residency/disk_reader.h"
#include "residency/expert_store.h"
#include "residency/placement.h"
#include "residency/ring.h"

#define SLOT_ALIGN ((size_t)64)

/* A unit holds at most one tensor per id: a block's matrices, or the head. */
#define UNIT_MAX LRUN_ARCH_TENSOR_COUNT

struct unit {
    int64_t layer;                        /* block index, n_layer for the head */
    int n;                                /* staged tensors */
    lrun_arch_tensor id[UNIT_MAX];        /* (n) which, in slot order */
    const struct lrun_tensor *t[UNIT_MAX]; /* (n) their records */
    size_t offset[UNIT_MAX];              /* (n) where each tensor's bytes are in the slot */
    size_t region[UNIT_MAX];              /* (n) disk tier: its aligned region's start (offset - lead) */
    int disk_id[UNIT_MAX];                /* (n) disk tier: the reader's id; -1: copied from memory */
    int any_disk;                         /* 1: some tensor is read from the file */
    size_t bytes;                         /* bytes copied per fill */
};

/* The packed matrices of one layer read in place (not staged): each is
 * multiplied packed where it is (lrun_cpu_matmul_packed; an expert stack's
 * chosen experts by lrun_cpu_matmul_packed_rows, moe_cpu.c), decoded a tile
 * or a chunk at a time, so the layer needs no plain copy of them. */
struct decode_plan {
    int n_direct;
    lrun_arch_tensor direct[UNIT_MAX]; /* (n_direct) which are multiplied packed */
};

struct lrun_weight_ring {
    lrun_device *device;
    const lrun_model *model;
    int64_t n_units;            /* block units, then the head unit if any */
    struct unit *units;         /* (n_units) */
    int64_t *unit_of_layer;     /* (n_layer + 1) index into units, -1 when nothing is staged (or not its block) */
    lrun_ring *ring;            /* NULL when nothing is staged */
    void *memory;               /* the one device allocation all slots (and the tiles) are carved from */
    size_t memory_bytes;
    lrun_disk_reader *disk;     /* direct reads of disk-tier weights; NULL when none */
    lrun_expert_store *experts; /* disk-tier expert stacks, read per chosen expert (expert_store.h); NULL: none */
    int64_t disk_stalls;        /* compute side: acquires of a unit with disk weights that waited */
    int stage;                  /* 0: nothing staged (an ALL_DEVICE engine that only decodes packed weights) */
    lrun_weight_blocks blocks;  /* the engine's */
    struct decode_plan *decode; /* (n_layer + 1) */
    void *tiles;                /* lrun_cpu_matmul_packed's work for the direct packed matrices, in memory, or NULL */
    /* compute side only (the engine's thread) */
    uint64_t rows_bytes, host_compute_bytes;
    uint64_t *host_layer_bytes; /* (n_layer) host_compute_bytes of each block's matrices and expert slices */
};

static int is_host_computed(const struct lrun_tensor *t) { return t->tier != LRUN_TIER_DEVICE && t->host_compute; }

/* Counts bytes multiplied on the host for block layer (the head's, layer n_layer, count in the total only). */
static void count_host_bytes(lrun_weight_ring *wr, int64_t layer, uint64_t bytes)
{
    wr->host_compute_bytes += bytes;
    if (layer >= 0 && layer < wr->model->info.n_layer) wr->host_layer_bytes[layer] += bytes;
}

/* A unit stages the block's matrices (vectors are read where they live). */
static int is_block_matrix(const lrun_arch *a, lrun_arch_tensor id) { return lrun_arch_is_matrix(a, id); }

// ---------------------------------------------------------------- the fill

/* The ring's fill: unit u's tensors into slot, a plain copy (host-addressable
 * on cpu; the CUDA engine fills with cudaMemcpyAsync on its copy stream). */
static lrun_status fill_unit(void *owner, int64_t u, int slot_index, void *slot, size_t *bytes)
{
    (void)slot_index;
    const lrun_weight_ring *wr = owner;
    const struct unit *un = &wr->units[u];
    for (int i = 0; i < un->n; i++) {
        const struct lrun_tensor *t = un->t[i];
        if (un->disk_id[i] >= 0) { /* direct reads from the file into its aligned region */
            size_t lead;
            char *region = (char *)slot + un->region[i];
            const lrun_status st = lrun_disk_reader_read(wr->disk, un->disk_id[i], 0, t->packed ? t->pk.total : t->nbytes,
                                                         region, &lead);
            if (st != LRUN_OK) return st;
            /* packed in the file: decoded from the region into the plain area */
            if (t->packed) lrun_packed_decode_range((uint16_t *)((char *)slot + un->offset[i]), region + lead, &t->pk, 0,
                                                    t->pk.n);
        } else if (t->packed) { /* on the fill thread: the plain bytes into the slot */
            lrun_packed_decode_range((uint16_t *)((char *)slot + un->offset[i]), t->data, &t->pk, 0, t->pk.n);
        } else {
            memcpy((char *)slot + un->offset[i], t->data, t->nbytes);
        }
    }
    *bytes = un->bytes;
    return LRUN_OK;
}

// ---------------------------------------------------------------- layout

/* Lays out the staged tensors of a unit (placement p, NULL: the tensors'
 * own); 0 when nothing is staged, SIZE_MAX on overflow. */
static size_t plan_unit(struct unit *u, const lrun_placement *p, int stage, int64_t layer, const lrun_arch_tensor *ids,
                        const struct lrun_tensor *const *ts, int n)
{
    memset(u, 0, sizeof *u);
    u->layer = layer;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!ts[i] || !stage || !lrun_placement_streamed(p, ts[i])) continue;
        if (lrun_expert_store_takes(p, ids[i], ts[i])) continue; /* read per chosen expert, not with its block */
        const int disk = lrun_placement_tier(p, ts[i]) == LRUN_TIER_DISK;
        size_t end;
        if (disk && !lrun_size_align_up(off, LRUN_DISK_ALIGN, &off)) return SIZE_MAX;
        u->id[u->n] = ids[i];
        u->t[u->n] = ts[i];
        u->offset[u->n] = u->region[u->n] = off; /* a disk tensor's lead is added at init */
        u->disk_id[u->n] = -1;
        u->any_disk |= disk;
        u->bytes += lrun_placement_stored_bytes(p, ts[i]);
        u->n++;
        /* read packed from the file: its region holds the packed bytes, the
         * plain bytes they decode to follow it */
        const int disk_packed = disk && lrun_placement_packed(p, ts[i]);
        const size_t read = disk_packed && ts[i]->pk.total ? ts[i]->pk.total : ts[i]->nbytes;
        const size_t len = disk ? lrun_disk_region(read) : ts[i]->nbytes;
        if (len < read || !lrun_size_align_up(off + len, SLOT_ALIGN, &end)) return SIZE_MAX;
        off = end;
        if (disk_packed) {
            u->offset[u->n - 1] = off;
            size_t plain_end;
            if (!lrun_size_add(off, ts[i]->nbytes, &plain_end) || !lrun_size_align_up(plain_end, SLOT_ALIGN, &end))
                return SIZE_MAX;
            off = end;
        }
    }
    if (u->any_disk && !lrun_size_align_up(off, LRUN_DISK_ALIGN, &off)) return SIZE_MAX;
    return off;
}

/* The packed matrices of a layer that are read in place (not staged), and
 * the longest row among them in *direct_k (their product's tiles). */
static void plan_decode(struct decode_plan *d, const lrun_placement *p, int stage, const lrun_arch_tensor *ids,
                        const struct lrun_tensor *const *ts, int n, int64_t *direct_k)
{
    memset(d, 0, sizeof *d);
    for (int i = 0; i < n; i++) {
        if (!ts[i] || !lrun_placement_packed(p, ts[i]) || (stage && lrun_placement_streamed(p, ts[i]))) continue;
        d->direct[d->n_direct++] = ids[i];
        if (ts[i]->ne[0] > *direct_k) *direct_k = ts[i]->ne[0];
    }
}

/* The tensors a unit of layer may stage, in slot order: the block's
 * matrices by the architecture's description, or the head. */
static int unit_tensors(const lrun_model *m, int64_t layer, lrun_arch_tensor ids[UNIT_MAX],
                        const struct lrun_tensor *ts[UNIT_MAX])
{
    if (layer == m->info.n_layer) {
        ids[0] = LRUN_ARCH_TENSOR_OUTPUT;
        ts[0] = m->output;
        return 1;
    }
    int n = 0;
    for (int id = 0; id < LRUN_ARCH_TENSOR_BLOCK_COUNT; id++) {
        if (!is_block_matrix(m->arch, (lrun_arch_tensor)id)) continue;
        ids[n] = (lrun_arch_tensor)id;
        ts[n++] = m->layers[layer].t[id];
    }
    return n;
}

/* What the slots must hold for a placement. */
struct slot_layout {
    size_t ring_bytes;      /* one ring slot: the largest block unit */
    size_t head_bytes;      /* the head slot, 0 when the head is not staged */
    size_t tile_bytes;      /* lrun_cpu_matmul_packed's tiles for the packed matrices multiplied in place */
    int64_t direct_k;       /* the longest row of those, 0: none */
    int64_t n_block_units;  /* blocks that stage anything */
    int64_t n_units;        /* those and the head */
    int64_t n_ring;         /* ring slots: k + 1, at most n_block_units */
    int k;                  /* the prefetch asked for (or the default) */
    int any_disk;           /* a unit reads from the file: slots aligned to LRUN_DISK_ALIGN */
    size_t tiles_at;        /* where the tiles start in the allocation */
    size_t store_slot;      /* one expert store slot (expert_store.h), 0: no stored experts */
    int64_t n_store;        /* its slots */
    size_t store_at;        /* where its area starts (aligned to LRUN_DISK_ALIGN at init: a block spare) */
    size_t total;           /* n_ring x ring_bytes + head_bytes (+ LRUN_DISK_ALIGN to align them) + tile_bytes
                             * (+ LRUN_DISK_ALIGN + n_store x store_slot) */
};

/* Whether unit layer (n_layer: the head) is one of blocks': a block in
 * [first, end), the head when the range ends at the model's last block. */
static int owns(const lrun_model *model, lrun_weight_blocks blocks, int64_t layer)
{
    const int64_t n_layer = model->info.n_layer;
    return layer < n_layer ? layer >= blocks.first && layer < blocks.end : blocks.end == n_layer;
}

static lrun_status check_blocks(const lrun_model *model, lrun_weight_blocks blocks)
{
    if (blocks.first < 0 || blocks.first >= blocks.end || blocks.end > model->info.n_layer)
        return lrun_fail(LRUN_E_ARG, "engine: weight blocks [%lld, %lld) are not a range of the model's %lld",
                         (long long)blocks.first, (long long)blocks.end, (long long)model->info.n_layer);
    return LRUN_OK;
}

/* The units of model under placement p and the slots they need, for init
 * (units and unit_of_layer: (n_layer + 1) records to fill) and for sizing
 * (both NULL): one layout, so a size is what init then takes. Only blocks'
 * layers have units and decode plans. */
static lrun_status layout_slots(const lrun_model *model, const lrun_placement *p, lrun_weight_blocks blocks,
                                int prefetch_layers, int n_threads, size_t store_room, int stage, struct unit *units,
                                int64_t *unit_of_layer, struct decode_plan *decode, struct slot_layout *out)
{
    memset(out, 0, sizeof *out);
    const int64_t n_layer = model->info.n_layer;
    for (int64_t l = 0; unit_of_layer && l <= n_layer; l++) unit_of_layer[l] = -1;
    for (int64_t l = blocks.first; l <= n_layer; l++) {
        if (!owns(model, blocks, l)) continue;
        lrun_arch_tensor ids[UNIT_MAX];
        const struct lrun_tensor *ts[UNIT_MAX];
        const int n = unit_tensors(model, l, ids, ts);
        struct unit scratch = {0};
        struct decode_plan dscratch;
        plan_decode(decode ? &decode[l] : &dscratch, p, stage, ids, ts, n, &out->direct_k);
        struct unit *u = units ? &units[out->n_units] : &scratch;
        const size_t need = plan_unit(u, p, stage, l, ids, ts, n);
        out->any_disk |= need != SIZE_MAX && u->any_disk;
        if (need == SIZE_MAX)
            return lrun_fail(LRUN_E_OOM, "engine: the staged weights of layer %lld overflow size_t", (long long)l);
        if (need == 0) {
            if (unit_of_layer) unit_of_layer[l] = -1;
            continue;
        }
        if (unit_of_layer) unit_of_layer[l] = out->n_units;
        out->n_units++;
        if (l < n_layer) {
            out->n_block_units++;
            if (need > out->ring_bytes) out->ring_bytes = need;
        } else {
            out->head_bytes = need;
        }
    }
    /* every ring slot starts on a block when any unit reads from the file */
    if (out->any_disk && !lrun_size_align_up(out->ring_bytes, LRUN_DISK_ALIGN, &out->ring_bytes))
        return lrun_fail(LRUN_E_OOM, "engine: weight slots overflow size_t");
    out->k = prefetch_layers ? prefetch_layers : lrun_engine_default_prefetch(LRUN_DEVICE_KIND_CPU);
    out->n_ring = out->n_block_units < out->k + 1 ? out->n_block_units : out->k + 1;
    out->tile_bytes = out->direct_k ? lrun_cpu_matmul_packed_work_bytes(out->direct_k, n_threads) : 0;
    if (out->tile_bytes == SIZE_MAX || !lrun_size_mul(out->ring_bytes, (size_t)out->n_ring, &out->total) ||
        !lrun_size_add(out->total, out->head_bytes, &out->total) ||
        !lrun_size_add(out->total, out->any_disk ? LRUN_DISK_ALIGN : 0, &out->total) ||
        !lrun_size_align_up(out->total, SLOT_ALIGN, &out->total))
        return lrun_fail(LRUN_E_OOM, "engine: weight slots overflow size_t");
    out->tiles_at = out->total;
    if (!lrun_size_add(out->total, out->tile_bytes, &out->total))
        return lrun_fail(LRUN_E_OOM, "engine: weight slots overflow size_t");
    /* the disk tier's expert stacks: slots of one expert each, after the tiles */
    out->store_slot = stage ? lrun_expert_store_slot_bytes(model, p, blocks.first, blocks.end) : 0;
    if (out->store_slot) {
        size_t store;
        out->n_store = lrun_expert_store_default_slots(model);
        out->store_at = out->total;
        /* room to spare (a host budget's, at init): the store keeps that many more experts between steps */
        const size_t head = out->total + LRUN_DISK_ALIGN;
        const int64_t all = (blocks.end - blocks.first) * model->info.n_expert;
        const int64_t fit = store_room > head ? (int64_t)((store_room - head) / out->store_slot) : 0;
        if (fit > out->n_store) out->n_store = fit < all ? fit : all;
        if (!lrun_size_mul(out->store_slot, (size_t)out->n_store, &store) ||
            !lrun_size_add(out->total, LRUN_DISK_ALIGN, &out->total) ||
            !lrun_size_add(out->total, store, &out->total))
            return lrun_fail(LRUN_E_OOM, "engine: expert store slots overflow size_t");
    }
    return LRUN_OK;
}

static lrun_status check_prefetch(int prefetch_layers)
{
    if (prefetch_layers < 0 || prefetch_layers > 64)
        return lrun_fail(LRUN_E_ARG, "engine: prefetch_layers %d must be in [0, 64] (0 = the default, %d)",
                         prefetch_layers, lrun_engine_default_prefetch(LRUN_DEVICE_KIND_CPU));
    return LRUN_OK;
}

lrun_status lrun_weight_ring_size(const lrun_model *model, const lrun_placement *p, lrun_weight_blocks blocks,
                                  int prefetch_layers, int n_threads, size_t *slot_bytes)
{
    *slot_bytes = 0;
    lrun_status st = check_prefetch(prefetch_layers);
    if (st == LRUN_OK) st = check_blocks(model, blocks);
    struct slot_layout L;
    if (st == LRUN_OK) st = layout_slots(model, p, blocks, prefetch_layers, n_threads, 0, 1, NULL, NULL, NULL, &L);
    if (st == LRUN_OK) *slot_bytes = L.total;
    return st;
}

// ---------------------------------------------------------------- init, free

/* Opens the files of the disk-tier weights and puts each one's bytes at its
 * lead inside its region. */
static lrun_status open_disk(lrun_weight_ring *wr)
{
    for (int64_t ui = 0; ui < wr->n_units; ui++) {
        struct unit *u = &wr->units[ui];
        for (int i = 0; i < u->n; i++) {
            if (u->t[i]->tier != LRUN_TIER_DISK) continue;
            if (!wr->disk) {
                const lrun_status st = lrun_disk_reader_init(&wr->disk, 0);
                if (st != LRUN_OK) return st;
            }
            size_t lead;
            const lrun_status st = lrun_disk_reader_add(wr->disk, u->t[i], &u->disk_id[i], &lead);
            if (st != LRUN_OK) return st;
            if (!u->t[i]->packed) u->offset[i] = u->region[i] + lead; /* packed: decoded after the region */
        }
    }
    return LRUN_OK;
}

/* The slots and the packed products' tiles: one allocation from the device budget
 * (and the disk-tier weights' files opened first). */
static lrun_status alloc_slots(lrun_weight_ring *wr, const struct slot_layout *L)
{
    char what[128];
    snprintf(what, sizeof what,
             "weight streaming slots (%lld x ring, k = %d, + head, + %zu bytes of packed products' tiles, + %lld "
             "expert slots)",
             (long long)L->n_ring, L->k, L->tile_bytes, (long long)L->n_store);
    lrun_status st = L->any_disk ? open_disk(wr) : LRUN_OK;
    if (st == LRUN_OK) st = lrun_oom_phase(lrun_device_alloc(wr->device, L->total, what, &wr->memory), "weights");
    if (st != LRUN_OK) return st;
    wr->memory_bytes = L->total;
    wr->tiles = L->tile_bytes ? (char *)wr->memory + L->tiles_at : NULL;
    if (!L->store_slot) return LRUN_OK;
    char *store =
        (char *)(((uintptr_t)wr->memory + L->store_at + LRUN_DISK_ALIGN - 1) & ~(uintptr_t)(LRUN_DISK_ALIGN - 1));
    const int64_t first = wr->blocks.first, end = wr->blocks.end;
    return lrun_expert_store_init(&wr->experts, wr->model, first, end, store, L->store_slot, L->n_store);
}

/* The ring over the slots. */
static lrun_status start_ring(lrun_weight_ring *wr, const struct slot_layout *L)
{
    lrun_status st;
    /* direct reads need block-aligned buffers: the layout kept one block spare for this */
    char *base = L->any_disk ? (char *)(((uintptr_t)wr->memory + LRUN_DISK_ALIGN - 1) & ~(uintptr_t)(LRUN_DISK_ALIGN - 1))
                             : wr->memory;
    void **bases = malloc((size_t)(L->n_ring ? L->n_ring : 1) * sizeof *bases);
    if (!bases) return lrun_fail_oom((size_t)L->n_ring * sizeof *bases, 0, "engine: weight slot records");
    for (int64_t i = 0; i < L->n_ring; i++) bases[i] = base + (size_t)i * L->ring_bytes;
    const int64_t head = wr->unit_of_layer[wr->model->info.n_layer];
    const lrun_ring_opts o = {
        .n_units = wr->n_units,
        /* only the head staged: the ring's one rotating slot is never used */
        .n_ring = L->n_ring ? (int)L->n_ring : 1,
        .ring_slots = L->n_ring ? (void *const *)bases : NULL,
        .own_unit = L->head_bytes ? head : -1,
        .own_slot = L->head_bytes ? base + (size_t)L->n_ring * L->ring_bytes : NULL,
        .order = LRUN_RING_ORDER_CYCLIC,
        .fill = fill_unit,
        .owner = wr,
    };
    st = lrun_ring_init(&wr->ring, &o);
    free(bases);
    return st;
}

lrun_status lrun_weight_ring_init(lrun_weight_ring **out, lrun_model *model, lrun_weight_blocks blocks,
                                  int prefetch_layers, size_t store_room, int stage, struct lrun_threadpool *pool)
{
    *out = NULL;
    lrun_status st = check_prefetch(prefetch_layers);
    if (st == LRUN_OK) st = check_blocks(model, blocks);
    if (st != LRUN_OK) return st;
    const int64_t n_layer = model->info.n_layer;
    lrun_weight_ring *wr = calloc(1, sizeof *wr);
    if (!wr) return lrun_fail_oom(sizeof *wr, 0, "engine: weight ring record");
    wr->device = model->device;
    wr->model = model;
    wr->stage = stage != 0;
    wr->blocks = blocks;
    wr->units = calloc((size_t)n_layer + 1, sizeof *wr->units);
    wr->unit_of_layer = malloc(((size_t)n_layer + 1) * sizeof *wr->unit_of_layer);
    wr->decode = calloc((size_t)n_layer + 1, sizeof *wr->decode);
    wr->host_layer_bytes = calloc((size_t)n_layer, sizeof *wr->host_layer_bytes);
    if (!wr->units || !wr->unit_of_layer || !wr->decode || !wr->host_layer_bytes)
        st = lrun_fail_oom(0, 0, "engine: weight units for %lld layers", (long long)n_layer);
    struct slot_layout L;
    if (st == LRUN_OK)
        st = layout_slots(model, NULL, blocks, prefetch_layers, pool ? lrun_threadpool_size(pool) : 1, store_room,
                          wr->stage, wr->units, wr->unit_of_layer, wr->decode, &L);
    if (st == LRUN_OK) {
        wr->n_units = L.n_units;
        if (L.total > 0) st = alloc_slots(wr, &L);
        /* nothing to stage: decoding and host-compute counting only */
        if (st == LRUN_OK && wr->n_units > 0) st = start_ring(wr, &L);
    }
    if (st != LRUN_OK) {
        lrun_weight_ring_free(wr);
        return st;
    }
    *out = wr;
    return LRUN_OK;
}

int64_t lrun_weight_ring_staged_units(const lrun_weight_ring *wr) { return wr ? wr->n_units : 0; }

lrun_expert_store *lrun_weight_ring_expert_store(const lrun_weight_ring *wr) { return wr ? wr->experts : NULL; }

void *lrun_weight_ring_packed_work(const lrun_weight_ring *wr) { return wr ? wr->tiles : NULL; }

void lrun_weight_ring_free(lrun_weight_ring *wr)
{
    if (!wr) return;
    lrun_ring_free(wr->ring); /* stops the fill thread before its slots go */
    lrun_disk_reader_free(wr->disk);
    lrun_expert_store_free(wr->experts);
    if (wr->memory) lrun_device_release(wr->device, wr->memory, wr->memory_bytes);
    free(wr->units);
    free(wr->unit_of_layer);
    free(wr->host_layer_bytes);
    free(wr->decode);
    free(wr);
}

// ---------------------------------------------------------------- compute side

/* The layer's packed matrices read in place, marked to be multiplied packed where they are. */
static void decode_in_place(lrun_weight_ring *wr, int64_t layer, lrun_weight_view *out)
{
    const struct decode_plan *d = &wr->decode[layer];
    for (int i = 0; i < d->n_direct; i++) out->packed[d->direct[i]] = 1;
}

lrun_status lrun_weight_ring_acquire(lrun_weight_ring *wr, const lrun_model *model, int64_t layer,
                                     lrun_weight_view *out)
{
    memset(out, 0, sizeof *out);
    const int64_t n_layer = model->info.n_layer;
    uint64_t host_bytes = 0;
    if (layer < n_layer) {
        for (int id = 0; id < LRUN_ARCH_TENSOR_BLOCK_COUNT; id++) {
            const struct lrun_tensor *t = model->layers[layer].t[id];
            out->data[id] = t ? t->data : NULL;
            if (t && is_block_matrix(model->arch, (lrun_arch_tensor)id) && is_host_computed(t) &&
                !lrun_arch_is_expert_tensor((lrun_arch_tensor)id)) /* experts: lrun_weight_ring_note_slice */
                host_bytes += t->nbytes;
        }
    } else {
        out->data[LRUN_ARCH_TENSOR_OUTPUT] = model->output->data;
        if (is_host_computed(model->output)) host_bytes += model->output->nbytes;
    }
    if (!wr) return LRUN_OK;
    if (wr->stage) count_host_bytes(wr, layer, host_bytes);
    decode_in_place(wr, layer, out);
    const int64_t ui = wr->unit_of_layer[layer];
    if (ui < 0) return LRUN_OK;
    const struct unit *u = &wr->units[ui];
    lrun_ring_stats before = {0}, after = {0};
    if (u->any_disk) lrun_ring_stats_get(wr->ring, &before);
    void *slot;
    const lrun_status st = lrun_ring_acquire(wr->ring, ui, &slot, NULL);
    if (st != LRUN_OK) return st;
    if (u->any_disk) {
        lrun_ring_stats_get(wr->ring, &after);
        wr->disk_stalls += after.misses - before.misses;
    }
    for (int i = 0; i < u->n; i++) out->data[u->id[i]] = (char *)slot + u->offset[i];
    return LRUN_OK;
}

lrun_status lrun_weight_ring_release(lrun_weight_ring *wr, int64_t layer)
{
    if (!wr || wr->unit_of_layer[layer] < 0) return LRUN_OK;
    return lrun_ring_release(wr->ring, wr->unit_of_layer[layer], NULL);
}

lrun_status lrun_weight_ring_skip(lrun_weight_ring *wr, int64_t layer)
{
    if (!wr || wr->unit_of_layer[layer] < 0) return LRUN_OK;
    /* only the head is skipped, and a staged head has no host-computed part */
    lrun_weight_view unused;
    const lrun_status st = lrun_weight_ring_acquire(wr, wr->model, layer, &unused);
    if (st != LRUN_OK) return st;
    return lrun_weight_ring_release(wr, layer);
}

void lrun_weight_ring_restart(lrun_weight_ring *wr)
{
    if (wr && wr->ring) (void)lrun_ring_begin(wr->ring);
}

void lrun_weight_ring_note_rows(lrun_weight_ring *wr, int64_t n_rows)
{
    const struct lrun_tensor *t = wr && wr->stage ? wr->model->tok_embd : NULL;
    if (!t || t->tier == LRUN_TIER_DEVICE) return;
    if (t->host_compute) wr->host_compute_bytes += (uint64_t)n_rows * t->row_bytes;
    else wr->rows_bytes += (uint64_t)n_rows * t->row_bytes;
}

void lrun_weight_ring_note_slice(lrun_weight_ring *wr, const struct lrun_tensor *t, uint64_t bytes)
{
    if (wr && is_host_computed(t)) count_host_bytes(wr, t->layer, bytes);
}

void lrun_weight_ring_add_host_layer_bytes(const lrun_weight_ring *wr, uint64_t *out)
{
    if (!wr) return;
    for (int64_t l = 0; l < wr->model->info.n_layer; l++) out[l] += wr->host_layer_bytes[l];
}

// ---------------------------------------------------------------- statistics

void lrun_weight_ring_add_stats(lrun_weight_ring *wr, lrun_engine_stats *out)
{
    if (!wr) return;
    lrun_ring_stats s = {0};
    if (wr->ring) lrun_ring_stats_get(wr->ring, &s);
    out->bytes_streamed += s.bytes_filled + wr->rows_bytes;
    out->copy_seconds += s.fill_seconds;
    out->stall_seconds += s.stall_seconds;
    out->prefetch_hits += s.hits;
    out->prefetch_misses += s.misses;
    out->host_compute_bytes += wr->host_compute_bytes;
    out->slot_bytes += wr->memory_bytes;
    if (wr->disk) {
        lrun_disk_stats d;
        lrun_disk_reader_stats(wr->disk, &d);
        out->disk_bytes_read += d.bytes_read;
        out->disk_read_seconds += d.read_seconds;
        out->disk_queue_depth = d.queue_depth;
        out->disk_direct = d.direct;
        out->disk_stalls += wr->disk_stalls;
    }
    if (wr->experts) {
        lrun_expert_store_stats x;
        lrun_expert_store_stats_get(wr->experts, &x);
        out->disk_bytes_read += x.bytes_read;
        out->disk_read_seconds += x.read_seconds;
        if (wr->disk) {
            out->disk_direct = out->disk_direct && x.direct;
        } else {
            out->disk_queue_depth = x.queue_depth;
            out->disk_direct = x.direct;
        }
        out->expert_store_hits += x.hits;
        out->expert_store_misses += x.misses;
    }
}

void lrun_weight_ring_reset_stats(lrun_weight_ring *wr)
{
    if (!wr) return;
    if (wr->ring) lrun_ring_stats_reset(wr->ring);
    lrun_disk_reader_reset_stats(wr->disk);
    lrun_expert_store_reset_stats(wr->experts);
    wr->rows_bytes = wr->host_compute_bytes = 0;
    memset(wr->host_layer_bytes, 0, (size_t)wr->model->info.n_layer * sizeof *wr->host_layer_bytes);
    wr->disk_stalls = 0;
}
