/* expert_admit.h — which host-computed experts the hybrid expert cache copies
 * into device slots, and when such a copy becomes usable (docs/moe.md "Hybrid:
 * hits on the GPU, misses on the host"). Backend-free: the CUDA engine
 * (engine_cuda_moe_cache.c) does the copies and answers "has the copy into
 * slot s completed" with cudaEventQuery; tests/c/test_expert_admit.c checks
 * the rules and measures them on synthetic routing streams on any machine.
 *
 * A hybrid step of one block: every chosen expert is looked up (counted for
 * LFU in the lrun_expert_cache book); one in a slot whose copy has completed
 * is a hit and runs on the GPU from the slot; every other one is a miss and
 * the host computes it in the same step. After the step, the misses may be
 * admitted: the most frequent first, each into the victim slot (a free slot
 * first, else the least frequently used one not used since the last settle
 * and not still being filled), when its count beats the victim's
 * (lrun_expert_admit_beats), at most `cap` per block and step. The copy runs
 * in the background; the slot is pending until a later lookup or poll sees
 * the copy done: a step never waits for PCIe. */
#ifndef LRUN_EXPERT_ADMIT_H
#define LRUN_EXPERT_ADMIT_H

#include <stdint.h>

#include "lrun.h"
#include "residency/expert_cache.h"

/* 1 when the copy into slot s has completed (never blocks), else 0. */
typedef int (*lrun_expert_admit_ready_fn)(void *ctx, int64_t s);

typedef struct lrun_expert_admit {
    int64_t n_slots;
    int64_t cap;        /* admissions per block and step (>= 1) */
    uint8_t *pending;   /* (n_slots) 1: a copy into the slot was queued and not yet seen complete */
    int64_t *pend_list; /* (n_slots) the pending slots, n_pending of them */
    int64_t n_pending;
} lrun_expert_admit;

/* Admission state for the slots of cache c, at most cap (>= 1) admissions per block and step. */
lrun_status lrun_expert_admit_init(lrun_expert_admit *a, const lrun_expert_cache *c, int64_t cap);
void lrun_expert_admit_free(lrun_expert_admit *a);
/* Clears the pending mark of every slot whose copy ready() says completed. */
void lrun_expert_admit_poll(lrun_expert_admit *a, lrun_expert_admit_ready_fn ready, void *ctx);
/* One chosen expert x of block layer: 1 a hit (*slot: its slot, filled and
 * usable now), 0 a miss (computed on the host; *slot -1), -1 on bad
 * arguments. Counted in c (lrun_expert_cache_touch). A pending slot is
 * asked ready() first. */
int lrun_expert_admit_lookup(lrun_expert_admit *a, lrun_expert_cache *c, int64_t layer, int64_t x,
                             lrun_expert_admit_ready_fn ready, void *ctx, int64_t *slot);
/* Whether a missed expert whose LFU count is f_miss should replace one whose
 * count is f_victim: f_miss > 2 · f_victim + 1 (see expert_admit.c: a plain
 * f_miss > f_victim admits on sampling noise under uniform routing). */
int lrun_expert_admit_beats(uint32_t f_miss, uint32_t f_victim);
/* The slot an admission would take: the free slot of the lowest index, else
 * the held one with the fewest recent uses (the oldest on a tie) among those
 * neither pending nor used since the last settle; -1 when none may go. */
int64_t lrun_expert_admit_victim(const lrun_expert_admit *a, const lrun_expert_cache *c);
/* After a step of block layer: admits of its n_missed missed experts (distinct
 * ids) at most min(max, cap), the most frequent first (the lower id on a
 * tie), each into lrun_expert_admit_victim's slot when that slot is free or
 * its expert is beaten. The admitted experts and their slots go to xs and
 * slots (each at least cap long), their slots are pending, and c's book says
 * they are held (lrun_expert_cache_assign): the caller queues their copies.
 * Returns how many (0 .. cap), or -1 on bad arguments. */
int64_t lrun_expert_admit_choose(lrun_expert_admit *a, lrun_expert_cache *c, int64_t layer, const int32_t *missed,
                                 int64_t n_missed, int64_t max, int64_t *xs, int64_t *slots);

#endif
