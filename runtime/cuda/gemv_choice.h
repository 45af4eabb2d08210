/* gemv_choice.h — which decode GEMV kernel each weight dtype takes
 * (kernels/gemv*.cu through the flags of lrun_k_gemv_multi), chosen once
 * from the numerics and the environment. The engine keeps one choice per
 * engine (engine_cuda.c); the planner's decode measurement
 * (measure_gemv.c) makes the same choice, so it times the kernels the
 * engine will run. */
#ifndef LRUN_CUDA_GEMV_CHOICE_H
#define LRUN_CUDA_GEMV_CHOICE_H

#include <stdint.h>

#include "lrun.h"

typedef struct lrun_cuda_gemv_choice {
    int flags;            /* OR'd into every decode GEMV's mode: LRUN_K_GEMV_DP4A under
                             LRUN_CUDA_GEMV_DP4A=1 (fast numerics only), else 0 */
    int dp4a_auto;        /* fast numerics, LRUN_CUDA_GEMV_DP4A unset: the dp4a GEMV for the
                             types where it measured faster (lrun_cuda_gemv_choice_flags) */
    uint64_t dp4a_types;  /* bit t: dtype t named in LRUN_CUDA_GEMV_DP4A=<list> (fast
                             numerics only) takes the dp4a GEMV; 0 without a list */
    uint64_t stage_types; /* bit t: dtype t takes the staged GEMV (kernels/gemv_stage.cu)
                             under LRUN_CUDA_GEMV_STAGE=1 (its six types) or =<list> (fast
                             numerics only); 0 by default, until measured faster on a GPU */
    int split;            /* 1 (fast numerics, unless LRUN_CUDA_GEMV_Q8X=0 without
                             LRUN_CUDA_GEMV_SPLIT=1): the engine rewrites its device-resident
                             Q8_0/Q4_0 matrices into the split-row layout (engine_cuda_split.h) */
    int q8x;              /* 1 (fast numerics by default): Q8_0/Q4_0 decode GEMVs take
                             gemv_split_q8x.cu, x quantized once per distinct input into the
                             engine's q8 scratch, on split rows (or GGUF's where the engine does
                             not split: streamed weights); LRUN_CUDA_GEMV_DP4A and _STAGE then
                             do not apply to these two types. 0 under LRUN_CUDA_GEMV_SPLIT=1
                             (split weights take gemv_split.cu, x quantized in each kernel, as
                             before) or LRUN_CUDA_GEMV_Q8X=0 (GGUF's layout and kernels) */
    int norm_fuse;        /* 1 under LRUN_CUDA_NORM_FUSE=1 in fast numerics (opt-in: measured no
                             faster): a decode norm whose output only the next product reads
                             (lrun_arch_norm_folds) is folded into that product's GEMV, or into
                             the quantization of its q8 x; 0 by default and in exact numerics
                             (docs/gpu.md "Fused norm") */
} lrun_cuda_gemv_choice;

/* The choice for exact (1: numerics EXACT, no dp4a, staged or split kernel,
 * no folded norm) or fast numerics, from LRUN_CUDA_GEMV_DP4A,
 * LRUN_CUDA_GEMV_STAGE, LRUN_CUDA_GEMV_SPLIT, LRUN_CUDA_GEMV_Q8X and
 * LRUN_CUDA_NORM_FUSE. */
void lrun_cuda_gemv_choice_from_env(int exact, lrun_cuda_gemv_choice *c);

/* The mode flags of a decode GEMV of dtype t. By default the dp4a kernel
 * (kernels/gemv_dp4a.cu: x rounded to 8 bits, as llama.cpp) runs the types
 * where test_gemv_dp4a_gpu --bench measured it ahead of the default kernel
 * on the 7B shapes (H200, docs/benchmarks.md: q4_1 +26%/-3%/+34%, q5_0
 * +12-29%, q5_1 +41-59%, iq4_nl +39-65%, iq4_xs +15-34%; H100, session 9:
 * q2_k and q3_k 1.2-1.4x); Q8_0 (-15-24%) and Q4_0 (+17%/-16%/+11%, about
 * even per layer) keep theirs. LRUN_CUDA_GEMV_DP4A=1 sends all nine types
 * to it, =0 none, a list of dtype names ("q2_k,q3_k") only those.
 * LRUN_CUDA_GEMV_STAGE=1 (or a list) sends Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and
 * IQ4_NL (or those named) to the staged kernel (gemv_stage.cu), ahead of
 * the rest (docs/benchmarks.md: correct, not faster). */
int lrun_cuda_gemv_choice_flags(const lrun_cuda_gemv_choice *c, lrun_dtype t);

#endif
