/* expert_store.h — a mixture of experts' disk-tier experts on the CPU
 * engine, read one chosen expert at a time (docs/moe.md "Experts from the
 * disk").
 *
 * A block's stacked expert tensors ({k, n, n_expert}: expert e's slice is
 * rows [e·n, (e+1)·n), contiguous in the file) are the largest part of a
 * mixture of experts, and a token uses k of their E experts. Staged whole
 * with their block (weight_ring.c's units) the disk tier would read all E
 * every token and hold (prefetch + 1) whole blocks in slots. The store
 * instead reads, after the router has chosen, only the chosen experts'
 * slices (gate, up, down) with direct I/O, one batch of reads a group
 * (lrun_disk_reader_read_many), into slots of one expert each in host
 * memory; an expert still in a slot from an earlier step is not read again
 * (the least recently used slot is replaced).
 *
 * Which tensors: an expert stack (GATE/UP/DOWN_EXPS) in the disk tier,
 * staged (not host-computed), stored plain in the file (a packed file's
 * stacks stay in the units: their experts' packed bytes are not a slice).
 * The slots are carved from the weight ring's one allocation, so they are
 * charged to the budget with the ring's slots and sized by
 * lrun_weight_ring_size. */
#ifndef LRUN_EXPERT_STORE_H
#define LRUN_EXPERT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "lrun.h"
#include "arch/arch.h"

struct lrun_tensor;
struct lrun_placement;
typedef struct lrun_expert_store lrun_expert_store;

/* Whether tensor t of id is read by the store under placement p (NULL: the tensor's own). */
int lrun_expert_store_takes(const struct lrun_placement *p, lrun_arch_tensor id, const struct lrun_tensor *t);

/* Slots when the caller asks for none: twice the experts a token uses (one
 * token's choice and the next block's), at least 16, at most every expert;
 * $LRUN_EXPERT_STORE_SLOTS overrides (benches, tests). */
int64_t lrun_expert_store_default_slots(const lrun_model *model);

/* Bytes of one slot for the stored experts of blocks [first, end) under
 * placement p: each projection's slice in an aligned region of
 * lrun_disk_region(slice) bytes; 0 when no block has stored experts. */
size_t lrun_expert_store_slot_bytes(const lrun_model *model, const struct lrun_placement *p, int64_t first,
                                    int64_t end);

/* A store of n_slots slots of slot_bytes (lrun_expert_store_slot_bytes)
 * at memory (LRUN_DISK_ALIGN-aligned, n_slots x slot_bytes, the caller's)
 * for blocks [first, end); opens the files of their stored experts. */
lrun_status lrun_expert_store_init(lrun_expert_store **out, const lrun_model *model, int64_t first, int64_t end,
                                   void *memory, size_t slot_bytes, int64_t n_slots);
void lrun_expert_store_free(lrun_expert_store *s);

/* 1 when block layer's experts come from the store (s may be NULL). */
int lrun_expert_store_has(const lrun_expert_store *s, int64_t layer);
/* Experts one fetch may hold at once: the slots. */
int64_t lrun_expert_store_slots(const lrun_expert_store *s);

/* Makes experts xs[0 .. n) of block layer readable (n at most the slots,
 * distinct ids), reading the missing ones in one batch; slices[3 j + i] is
 * where expert xs[j]'s slice of projection i (gate, up, down) starts, NULL
 * for a projection the store does not hold. The pointers stay valid until
 * the next fetch. A failed read (LRUN_E_IO: the file truncated or removed)
 * leaves no slot claiming the experts it was reading. */
lrun_status lrun_expert_store_fetch(lrun_expert_store *s, int64_t layer, const int32_t *xs, int64_t n,
                                    const void **slices);

/* Counters since init or the last reset. */
typedef struct lrun_expert_store_stats {
    uint64_t hits, misses; /* chosen experts found in a slot / read from the disk */
    uint64_t bytes_read;   /* aligned spans read */
    double read_seconds;
    int queue_depth;
    int direct;
} lrun_expert_store_stats;

void lrun_expert_store_stats_get(const lrun_expert_store *s, lrun_expert_store_stats *out);
void lrun_expert_store_reset_stats(lrun_expert_store *s);

#endif
