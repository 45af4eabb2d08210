/* op_profile.h — where a CUDA engine's time goes, op by op (LRUN_CUDA_PROFILE=1).
 *
 * Predictions (lrun.predict) and the comparisons with llama.cpp need to know
 * which of a chunk's ops take its time: the GEMMs, the elementwise kernels
 * between them, attention, the waits for streamed weights, the host's share
 * of a MoE block. With LRUN_CUDA_PROFILE=1 in the environment when the
 * engine is made, each op of the forward is bracketed by two CUDA events on
 * the compute stream and by the host's clock, and the engine prints, when it
 * is freed, a table per chunk class (decode: at most 8 tokens; prefill: more)
 * of calls, GPU milliseconds, their share and host milliseconds per op kind.
 * Events between every op cost a few microseconds each and graphs are off
 * while profiling (an event inside a capture would be a graph node), so the
 * totals are for finding shares, not for quoting speeds. */
#ifndef LRUN_CUDA_OP_PROFILE_H
#define LRUN_CUDA_OP_PROFILE_H

#include <stdint.h>

#include "core/error.h"

/* What a bracket is: the arch's op kinds, then the engine's own steps. */
enum {
    LRUN_PROF_EMBED = 64, /* the token rows into x */
    LRUN_PROF_WEIGHTS,    /* lrun_weights_begin: the wait for a streamed block's slot */
    LRUN_PROF_KV,         /* a staged KV cache's layer into its slot */
    LRUN_PROF_HEAD,       /* output norm and LM head */
    LRUN_PROF_KINDS
};

typedef struct lrun_cuda_op_profile lrun_cuda_op_profile;

/* *out = a profiler for the stream when LRUN_CUDA_PROFILE=1, else NULL (every call below takes NULL). */
lrun_status lrun_cuda_op_profile_make(void *stream, const char *device_name, lrun_cuda_op_profile **out);

/* Opens a bracket of kind for a chunk of n tokens (brackets do not nest: one left open by a failed op is dropped). */
lrun_status lrun_cuda_op_profile_begin(lrun_cuda_op_profile *p, int kind, int64_t n);
lrun_status lrun_cuda_op_profile_end(lrun_cuda_op_profile *p);

/* Prints the table to stderr and frees p (the stream still valid). */
void lrun_cuda_op_profile_free(lrun_cuda_op_profile *p);

#endif
