/* gemv_choice.c — the decode GEMV kernel per weight dtype (gemv_choice.h). */
#include "cuda/gemv_choice.h"

#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* The dtypes named in a comma-separated list ("q2_k,q3_k") as bits by dtype
 * id; names lrun does not know are skipped (an environment variable for
 * measurements, not a user's input the engine must reject). */
static uint64_t dtype_bits_of(const char *list)
{
    uint64_t bits = 0;
    char name[16];
    while (*list) {
        const size_t n = strcspn(list, ",");
        lrun_dtype t;
        if (n < sizeof name) {
            memcpy(name, list, n);
            name[n] = '\0';
            if (lrun_dtype_from_name(name, &t) == LRUN_OK && (int)t >= 0 && (int)t < 64) bits |= (uint64_t)1 << t;
        }
        list += n + (list[n] == ',');
    }
    return bits;
}

void lrun_cuda_gemv_choice_from_env(int exact, lrun_cuda_gemv_choice *c)
{
    memset(c, 0, sizeof *c);
    if (exact) return; /* the exact path's own kernels: no x rounding */
    const char *dp4a = getenv("LRUN_CUDA_GEMV_DP4A");
    c->flags = dp4a && strcmp(dp4a, "1") == 0 ? LRUN_K_GEMV_DP4A : 0;
    c->dp4a_auto = !dp4a;
    c->dp4a_types = dp4a && !c->flags ? dtype_bits_of(dp4a) : 0;
    /* Q8_0/Q4_0 decode: the split layout with x quantized once per input
     * (docs/gpu.md "q8_0 / q4_0 decode GEMV study": 1.2-1.4x the GGUF kernel
     * per layer on H100); LRUN_CUDA_GEMV_SPLIT=1 keeps the older split
     * kernel that quantizes x itself, LRUN_CUDA_GEMV_Q8X=0 (or
     * LRUN_CUDA_GEMV_SPLIT=0) the GGUF layout and its kernels */
    const char *split = getenv("LRUN_CUDA_GEMV_SPLIT"), *q8x = getenv("LRUN_CUDA_GEMV_Q8X");
    const int split_old = split && strcmp(split, "1") == 0, split_off = split && strcmp(split, "0") == 0;
    c->q8x = !split_old && !split_off && !(q8x && strcmp(q8x, "0") == 0);
    c->split = split_old || c->q8x;
    /* decode norms folded into the product after them (issue #15): opt-in
     * with LRUN_CUDA_NORM_FUSE=1, since on the H100 it did not pay (bf16
     * decode unchanged, q8_0 -2%, q4_0 -3%: docs/gpu.md "Fused norm") */
    const char *norm_fuse = getenv("LRUN_CUDA_NORM_FUSE");
    c->norm_fuse = norm_fuse && strcmp(norm_fuse, "1") == 0;
    const char *stage = getenv("LRUN_CUDA_GEMV_STAGE");
    if (stage) {
        const uint64_t six = (uint64_t)1 << LRUN_DTYPE_Q8_0 | (uint64_t)1 << LRUN_DTYPE_Q4_0 |
                             (uint64_t)1 << LRUN_DTYPE_Q4_1 | (uint64_t)1 << LRUN_DTYPE_Q5_0 |
                             (uint64_t)1 << LRUN_DTYPE_Q5_1 | (uint64_t)1 << LRUN_DTYPE_IQ4_NL;
        c->stage_types = strcmp(stage, "1") == 0 ? six : dtype_bits_of(stage) & six;
    }
}

int lrun_cuda_gemv_choice_flags(const lrun_cuda_gemv_choice *c, lrun_dtype t)
{
    const int bit = (int)t >= 0 && (int)t < 64;
    /* the staged kernel first (with DP4A: weights it declines, rows off
     * 16-byte boundaries, take the dp4a kernel of the same numerics) */
    if (bit && ((c->stage_types >> (int)t) & 1)) return LRUN_K_GEMV_STAGE | LRUN_K_GEMV_DP4A;
    if (c->flags) return c->flags;
    if (c->dp4a_types) return bit && ((c->dp4a_types >> (int)t) & 1) ? LRUN_K_GEMV_DP4A : 0;
    return c->dp4a_auto &&
                   (t == LRUN_DTYPE_Q4_1 || t == LRUN_DTYPE_Q5_0 || t == LRUN_DTYPE_Q5_1 || t == LRUN_DTYPE_IQ4_NL ||
                    t == LRUN_DTYPE_IQ4_XS || t == LRUN_DTYPE_Q2_K || t == LRUN_DTYPE_Q3_K)
               ? LRUN_K_GEMV_DP4A
               : 0;
}
