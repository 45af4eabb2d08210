/* expert_stream.h — the schedule of a prefill chunk's streamed host experts
 * (docs/moe.md "Prefill: streaming host experts"): which of a block's
 * experts the chunk copies to the device, in which groups (one group fills
 * one of two device staging buffers while the other's experts compute),
 * and which copies a group makes (a run of consecutive experts is one copy
 * per projection, as their slices lie back to back in the stacked tensor
 * and in the staging buffer). Backend-free, so tests/c/test_expert_stream.c
 * checks it on any machine; runtime/cuda/engine_cuda_moe_stream.c runs it. */
#ifndef LRUN_EXPERT_STREAM_H
#define LRUN_EXPERT_STREAM_H

#include <stdint.h>

/* Staging buffers: group g fills buffer g % LRUN_EXPERT_STREAM_BUFFERS. */
#define LRUN_EXPERT_STREAM_BUFFERS 2

/* A run of consecutive experts of one group: experts x0 .. x0+len-1 go to
 * staging places slot0 .. slot0+len-1 of the group's buffer. */
typedef struct lrun_expert_run {
    int32_t x0;    /* first expert id */
    int32_t len;   /* experts in the run, >= 1 */
    int32_t slot0; /* its place in the group's buffer, 0-based */
} lrun_expert_run;

/* The experts of a chunk that stream: those with at least min_tokens tokens
 * routed to them (first: (n_expert + 1) where each expert's (token, slot)
 * pairs start, as the engine groups them; expert x has first[x+1] - first[x]
 * tokens) and not held: held (n_expert) is each expert's slot in the expert
 * cache or -1, NULL when the block has no cache; a held expert runs from its
 * slot whatever its tokens, so it is never streamed. min_tokens <= 1: every
 * touched expert. out (n_expert) receives their ids ascending; returns how
 * many. */
int64_t lrun_expert_stream_select(const int64_t *first, int64_t n_expert, int64_t min_tokens, const int64_t *held,
                                  int32_t *out);

/* The held experts with tokens among experts [from, to), ascending, into out
 * (room for to - from); returns how many. A chunk runs them from their slots
 * just before streamed expert `to` (and, with to = n_expert, after the last
 * group), so that with every expert streamed or held the products add into
 * the sum in ascending expert order, as a resident block's do: the same bits. */
int64_t lrun_expert_stream_held(const int64_t *first, const int64_t *held, int64_t from, int64_t to, int32_t *out);

/* What a chunk does, in order, to run streamed group [a, end) of sel (the
 * selected experts) and the held experts among them: the held ones below
 * sel[a] (they need no copy, so they run before the wait for the group's
 * copies), the wait, then for each streamed expert the held ones below it
 * and the expert itself. *from is the first expert not yet run (0 before
 * the first group; after the last group the engine runs the held ones in
 * [*from, n_expert)); held NULL: no cache. The callbacks return 0 to go on,
 * anything else stops the walk and is returned. hsel has room for n_expert. */
typedef struct lrun_expert_stream_walk {
    int (*held)(void *ctx, int64_t x);                /* expert x from its slot */
    int (*wait)(void *ctx);                           /* the group's copies landed */
    int (*streamed)(void *ctx, int64_t i, int64_t x); /* expert x = sel[i] from the group's buffer */
} lrun_expert_stream_walk;

int lrun_expert_stream_walk_group(const int64_t *first, const int64_t *held, const int32_t *sel, int64_t a,
                                  int64_t end, int64_t *from, int32_t *hsel, const lrun_expert_stream_walk *cb,
                                  void *ctx);

/* Groups of at most group_max of the n selected experts (in order): group g
 * is experts [g · group_max, min(n, (g+1) · group_max)). Returns the number
 * of groups (0 when n is 0; group_max < 1 counts as 1). */
int64_t lrun_expert_stream_groups(int64_t n, int64_t group_max);

/* The staging buffer group g fills. */
static inline int lrun_expert_stream_buffer(int64_t g) { return (int)(g % LRUN_EXPERT_STREAM_BUFFERS); }

/* The copies of experts[a .. b): maximal runs of consecutive ids, slots from
 * 0 in order. runs has room for b - a entries; returns how many. */
int64_t lrun_expert_stream_runs(const int32_t *experts, int64_t a, int64_t b, lrun_expert_run *runs);

#endif
