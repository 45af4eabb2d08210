/* kv_stage.c — two device slots filled ahead of compute by a staging ring
 * (kv_stage.h). On the CPU device the slots are budget-counted device
 * memory and the store is pinned host memory, so the traffic, the budget
 * and the OOMs are those a GPU would see.
 *
 * The ring is a PASS ring of n_layer units (the layers), begun per chunk:
 * a slot's layout (which sequences, where) belongs to one chunk. */
#include "kv/kv_stage.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "residency/ring.h"

static int64_t pad_up(int64_t n, int64_t pad) { return (n + pad - 1) / pad * pad; }

struct lrun_kv_stage {
    lrun_kv_stage_opts o;
    lrun_ring *ring;        /* fills layer l into slot[l % 2] */
    void *slot[2];          /* layer l computes in slot[l % 2] */
    size_t slot_bytes;      /* bytes of each */
    int fixed;              /* static kinds: never regrown */

    /* the chunk: its sequences in order of first token */
    int64_t n_cs;
    int64_t *cs_seq;        /* (n_seq) */
    int64_t *cs_lo, *cs_hi; /* (n_seq) the chunk writes positions [lo, hi) */
    int64_t *cs_cap;        /* (n_seq) hi padded up: positions of the sequence in a slot */
    size_t *cs_off;         /* (n_seq) byte offset of its keys in a slot */
    int64_t *seq_cs;        /* (n_seq) index into cs_*, or -1 */
};

/* Where chunk sequence i's keys and values are in slot base. */
static void seq_in_slot(const lrun_kv_stage *g, char *base, int64_t i, char **k, char **v)
{
    *k = base + g->cs_off[i];
    *v = *k + (size_t)(g->cs_cap[i] * g->o.kv_dim) * g->o.elem_bytes;
}

// ---------------------------------------------------------------- the ring's callbacks

/* Fills slot with layer for every chunk sequence (the fill thread). */
static lrun_status fill_layer(void *owner, int64_t layer, int slot_index, void *slot, size_t *bytes)
{
    const lrun_kv_stage *g = owner;
    (void)slot_index;
    size_t moved = 0;
    for (int64_t i = 0; i < g->n_cs; i++) {
        char *k, *v;
        seq_in_slot(g, slot, i, &k, &v);
        moved += g->o.load(g->o.owner, g->cs_seq[i], layer, g->cs_lo[i], k, v, g->cs_cap[i]);
    }
    *bytes = moved;
    return LRUN_OK;
}

/* The ring's release hook: the chunk's new entries of layer, from slot back
 * to the store (the compute thread). */
static lrun_status write_back_layer(void *owner, int64_t layer, int slot_index, void *slot, size_t *bytes)
{
    const lrun_kv_stage *g = owner;
    (void)slot_index;
    size_t moved = 0;
    for (int64_t i = 0; i < g->n_cs; i++) {
        char *k, *v;
        seq_in_slot(g, slot, i, &k, &v);
        moved += g->o.write_back(g->o.owner, g->cs_seq[i], layer, g->cs_lo[i], g->cs_hi[i], k, v, g->cs_cap[i]);
    }
    *bytes = moved;
    return LRUN_OK;
}

// ---------------------------------------------------------------- lifecycle

lrun_status lrun_kv_stage_init(lrun_kv_stage **out, const lrun_kv_stage_opts *opts)
{
    *out = NULL;
    lrun_kv_stage *g = calloc(1, sizeof *g);
    const size_t n = (size_t)opts->n_seq;
    if (g) {
        g->o = *opts;
        g->cs_seq = malloc(n * sizeof *g->cs_seq);
        g->cs_lo = malloc(n * sizeof *g->cs_lo);
        g->cs_hi = malloc(n * sizeof *g->cs_hi);
        g->cs_cap = malloc(n * sizeof *g->cs_cap);
        g->cs_off = malloc(n * sizeof *g->cs_off);
        g->seq_cs = malloc(n * sizeof *g->seq_cs);
    }
    if (!g || !g->cs_seq || !g->cs_lo || !g->cs_hi || !g->cs_cap || !g->cs_off || !g->seq_cs) {
        lrun_kv_stage_free(g);
        return lrun_fail_oom(sizeof *g + n * 48, 0, "KV cache: slot bookkeeping for %zu sequences", n);
    }
    for (size_t i = 0; i < n; i++) g->seq_cs[i] = -1;
    /* a thread that cannot start leaves the fills to layer_begin: slower, same bytes */
    const lrun_ring_opts ro = {.n_units = opts->n_layer, .n_ring = 2, .own_unit = -1,
                               .order = LRUN_RING_ORDER_PASS, .fill = fill_layer,
                               .release = write_back_layer, .owner = g};
    lrun_status st = lrun_ring_init(&g->ring, &ro);
    if (st == LRUN_OK && opts->fixed_bytes > 0) {
        st = lrun_kv_stage_reserve(g, opts->fixed_bytes);
        g->fixed = 1;
    }
    if (st != LRUN_OK) {
        lrun_kv_stage_free(g);
        return st;
    }
    *out = g;
    return LRUN_OK;
}

void lrun_kv_stage_free(lrun_kv_stage *g)
{
    if (!g) return;
    lrun_ring_free(g->ring); /* no fill runs after this */
    for (int i = 0; i < 2; i++)
        if (g->slot[i]) lrun_device_release(g->o.device, g->slot[i], g->slot_bytes);
    free(g->cs_seq);
    free(g->cs_lo);
    free(g->cs_hi);
    free(g->cs_cap);
    free(g->cs_off);
    free(g->seq_cs);
    free(g);
}

lrun_status lrun_kv_stage_reserve(lrun_kv_stage *g, size_t bytes)
{
    if (bytes <= g->slot_bytes) return LRUN_OK;
    if (g->fixed)
        return lrun_fail(LRUN_E_INTERNAL, "KV cache: a step needs %zu bytes of slot, the static slots hold %zu", bytes,
                         g->slot_bytes);
    /* both new slots first, so a failure leaves the old ones in place */
    void *a, *b;
    lrun_status st = lrun_device_alloc(g->o.device, bytes, "KV cache slot (layer computed)", &a);
    if (st != LRUN_OK) return st;
    st = lrun_device_alloc(g->o.device, bytes, "KV cache slot (layer prefetched)", &b);
    if (st != LRUN_OK) {
        lrun_device_release(g->o.device, a, bytes);
        return st;
    }
    /* between chunks: set_slot waits for any fill still running */
    lrun_ring_set_slot(g->ring, 0, a);
    lrun_ring_set_slot(g->ring, 1, b);
    for (int i = 0; i < 2; i++)
        if (g->slot[i]) lrun_device_release(g->o.device, g->slot[i], g->slot_bytes);
    g->slot[0] = a;
    g->slot[1] = b;
    g->slot_bytes = bytes;
    return LRUN_OK;
}

size_t lrun_kv_stage_bytes(const lrun_kv_stage *g) { return g->slot[0] ? 2 * g->slot_bytes : 0; }

// ---------------------------------------------------------------- a chunk

void lrun_kv_stage_chunk_begin(lrun_kv_stage *g, int64_t n, const int64_t *tok_seq, const int64_t *tok_pos)
{
    lrun_ring_end(g->ring); /* a pass a failed step left: its fills read what is rewritten here */
    g->n_cs = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t s = tok_seq[i];
        if (g->seq_cs[s] < 0) {
            g->seq_cs[s] = g->n_cs;
            g->cs_seq[g->n_cs] = s;
            g->cs_lo[g->n_cs] = tok_pos[i];
            g->cs_hi[g->n_cs] = tok_pos[i] + 1;
            g->n_cs++;
        } else {
            g->cs_hi[g->seq_cs[s]] = tok_pos[i] + 1;
        }
    }
    size_t off = 0;
    for (int64_t i = 0; i < g->n_cs; i++) {
        g->cs_cap[i] = pad_up(g->cs_hi[i], g->o.pad);
        g->cs_off[i] = off;
        off += 2 * (size_t)(g->cs_cap[i] * g->o.kv_dim) * g->o.elem_bytes;
    }
    (void)lrun_ring_begin(g->ring); /* the fill thread fills layers 0 and 1 from here: nothing to fail now */
}

void lrun_kv_stage_layer_begin(lrun_kv_stage *g, int64_t layer)
{
    void *slot;
    size_t moved = 0;
    const lrun_status st = lrun_ring_acquire(g->ring, layer, &slot, &moved);
    assert(st == LRUN_OK && slot == g->slot[layer % 2]); /* the store's fills cannot fail */
    (void)st;
    *g->o.bytes_moved += moved;
}

void lrun_kv_stage_view(const lrun_kv_stage *g, int64_t seq, int64_t layer, void **k, void **v, int64_t *cap)
{
    const int64_t i = g->seq_cs[seq];
    char *kb, *vb;
    seq_in_slot(g, g->slot[layer % 2], i, &kb, &vb);
    *k = kb;
    *v = vb;
    *cap = g->cs_cap[i];
}

void lrun_kv_stage_layer_end(lrun_kv_stage *g, int64_t layer)
{
    size_t moved = 0;
    const lrun_status st = lrun_ring_release(g->ring, layer, &moved);
    assert(st == LRUN_OK);
    (void)st;
    *g->o.bytes_moved += moved;
}

void lrun_kv_stage_chunk_end(lrun_kv_stage *g)
{
    for (int64_t i = 0; i < g->n_cs; i++) {
        g->o.chunk_done(g->o.owner, g->cs_seq[i], g->cs_hi[i]);
        g->seq_cs[g->cs_seq[i]] = -1;
    }
    g->n_cs = 0;
}
