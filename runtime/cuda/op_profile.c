/* op_profile.c — op-by-op CUDA event brackets for LRUN_CUDA_PROFILE=1 (op_profile.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "arch/arch.h"
#include "core/clock.h"
#include "core/error.h"
#include "cuda/op_profile.h"

/* Brackets recorded before their times are read: the events are reused once
 * the last one completed, so a long run costs one wait per this many ops. */
#define RING 2048
#define CLASSES 2 /* 0 decode (n <= 8), 1 prefill */

_Static_assert((int)LRUN_ARCH_OP_KIND_COUNT <= (int)LRUN_PROF_EMBED,
               "op kinds and the engine's own brackets overlap");

struct bracket {
    int kind, cls;
    int fresh; /* starts at its own event (a chunk's first, or the ring's); else at the previous bracket's end */
    double host_s;
};

struct lrun_cuda_op_profile {
    cudaStream_t stream;
    char device[32];
    /* bracket i ends at end[i] and starts at start[i] when fresh, else at end[i - 1]: the launch gaps
     * between a chunk's ops count to the op after them, the host's time between chunks to none */
    cudaEvent_t start[RING], end[RING];
    struct bracket b[RING];
    int used, open;
    double t0;
    int64_t calls[CLASSES][LRUN_PROF_KINDS], chunks[CLASSES];
    double gpu_ms[CLASSES][LRUN_PROF_KINDS], host_ms[CLASSES][LRUN_PROF_KINDS];
};

static const char *kind_name(int k)
{
    static const char *const ops[LRUN_ARCH_OP_KIND_COUNT] = {
        [LRUN_ARCH_OP_NORM] = "norm",
        [LRUN_ARCH_OP_MATMUL] = "matmul",
        [LRUN_ARCH_OP_BIAS] = "bias",
        [LRUN_ARCH_OP_ROPE_STORE] = "rope+kv store",
        [LRUN_ARCH_OP_ATTENTION] = "attention",
        [LRUN_ARCH_OP_MATMUL_ADD] = "matmul+add",
        [LRUN_ARCH_OP_MATMUL_SWIGLU] = "matmul swiglu",
        [LRUN_ARCH_OP_HEAD_NORM] = "head norm",
        [LRUN_ARCH_OP_MATMUL_GEGLU] = "matmul geglu",
        [LRUN_ARCH_OP_MATMUL_NORM_ADD] = "matmul norm add",
        [LRUN_ARCH_OP_MOE_ROUTE] = "moe route",
        [LRUN_ARCH_OP_MOE_FFN_ADD] = "moe experts",
    };
    switch (k) {
    case LRUN_PROF_EMBED: return "embedding";
    case LRUN_PROF_WEIGHTS: return "weights wait";
    case LRUN_PROF_KV: return "kv slot";
    case LRUN_PROF_HEAD: return "norm+lm head";
    default: return k >= 0 && k < LRUN_ARCH_OP_KIND_COUNT && ops[k] ? ops[k] : "?";
    }
}

static lrun_status check(cudaError_t r, const char *what)
{
    return r == cudaSuccess ? LRUN_OK : lrun_fail(LRUN_E_DEVICE, "profiler: %s: %s", what, cudaGetErrorString(r));
}

lrun_status lrun_cuda_op_profile_make(void *stream, const char *device_name, lrun_cuda_op_profile **out)
{
    *out = NULL;
    const char *v = getenv("LRUN_CUDA_PROFILE");
    if (!v || strcmp(v, "1") != 0) return LRUN_OK;
    lrun_cuda_op_profile *p = calloc(1, sizeof *p);
    if (!p) return lrun_fail_oom(sizeof *p, 0, "engine: the op profiler");
    p->stream = (cudaStream_t)stream;
    snprintf(p->device, sizeof p->device, "%s", device_name ? device_name : "cuda");
    for (int i = 0; i < RING; i++) {
        lrun_status st = check(cudaEventCreate(&p->start[i]), "creating an event");
        if (st == LRUN_OK) {
            st = check(cudaEventCreate(&p->end[i]), "creating an event");
            if (st != LRUN_OK) cudaEventDestroy(p->start[i]);
        }
        if (st != LRUN_OK) {
            while (i-- > 0) cudaEventDestroy(p->start[i]), cudaEventDestroy(p->end[i]);
            free(p);
            return st;
        }
    }
    *out = p;
    return LRUN_OK;
}

/* Reads the recorded brackets' times (waiting for the last) and empties the ring. */
static lrun_status drain(lrun_cuda_op_profile *p)
{
    if (p->used == 0) return LRUN_OK;
    lrun_status st = check(cudaEventSynchronize(p->end[p->used - 1]), "waiting for the last bracket");
    for (int i = 0; st == LRUN_OK && i < p->used; i++) {
        float ms = 0;
        st = check(cudaEventElapsedTime(&ms, p->b[i].fresh ? p->start[i] : p->end[i - 1], p->end[i]),
                   "reading a bracket");
        p->gpu_ms[p->b[i].cls][p->b[i].kind] += ms;
        p->host_ms[p->b[i].cls][p->b[i].kind] += p->b[i].host_s * 1e3;
        p->calls[p->b[i].cls][p->b[i].kind]++;
    }
    p->used = 0;
    return st;
}

lrun_status lrun_cuda_op_profile_begin(lrun_cuda_op_profile *p, int kind, int64_t n)
{
    if (!p) return LRUN_OK;
    p->open = 0; /* a bracket still open is an op that failed: dropped, so the engine's next step still profiles */
    if (p->used == RING) {
        const lrun_status st = drain(p);
        if (st != LRUN_OK) return st;
    }
    if (kind < 0 || kind >= LRUN_PROF_KINDS) kind = 0;
    const int cls = n > 8;
    if (kind == LRUN_PROF_EMBED) p->chunks[cls]++; /* every chunk starts with its rows (or a split part's) */
    const int fresh = p->used == 0 || kind == LRUN_PROF_EMBED;
    p->b[p->used] = (struct bracket){kind, cls, fresh, 0};
    p->open = 1;
    p->t0 = lrun_now_seconds();
    return fresh ? check(cudaEventRecord(p->start[p->used], p->stream), "recording a bracket's start") : LRUN_OK;
}

lrun_status lrun_cuda_op_profile_end(lrun_cuda_op_profile *p)
{
    if (!p || !p->open) return LRUN_OK;
    p->open = 0;
    p->b[p->used].host_s = lrun_now_seconds() - p->t0;
    return check(cudaEventRecord(p->end[p->used++], p->stream), "recording a bracket's end");
}

void lrun_cuda_op_profile_free(lrun_cuda_op_profile *p)
{
    if (!p) return;
    if (drain(p) != LRUN_OK) fprintf(stderr, "lrun profile: %s\n", lrun_last_error());
    for (int c = 0; c < CLASSES; c++) {
        double total = 0;
        for (int k = 0; k < LRUN_PROF_KINDS; k++) total += p->gpu_ms[c][k];
        if (total <= 0) continue;
        fprintf(stderr, "lrun profile (%s, %s chunks: %lld): GPU time between op brackets, host time inside them\n",
                p->device, c ? "prefill" : "decode", (long long)p->chunks[c]);
        fprintf(stderr, "  %-16s %8s %10s %6s %10s %10s\n", "op", "calls", "GPU ms", "share", "host ms", "ms/chunk");
        for (int k = 0; k < LRUN_PROF_KINDS; k++) {
            if (!p->calls[c][k]) continue;
            fprintf(stderr, "  %-16s %8lld %10.3f %5.1f%% %10.3f %10.4f\n", kind_name(k), (long long)p->calls[c][k],
                    p->gpu_ms[c][k], 100.0 * p->gpu_ms[c][k] / total, p->host_ms[c][k],
                    p->chunks[c] ? p->gpu_ms[c][k] / (double)p->chunks[c] : 0.0);
        }
        fprintf(stderr, "  %-16s %8s %10.3f\n", "total", "", total);
    }
    for (int i = 0; i < RING; i++) cudaEventDestroy(p->start[i]), cudaEventDestroy(p->end[i]);
    free(p);
}
