/* test_gemv_choice.c — which decode GEMV the CUDA engine's choice
 * (runtime/cuda/gemv_choice.c) gives Q8_0/Q4_0 and the dp4a types under
 * each setting of LRUN_CUDA_GEMV_Q8X, LRUN_CUDA_GEMV_SPLIT and
 * LRUN_CUDA_GEMV_DP4A, in fast and exact numerics, and whether decode
 * norms fold into the next product (LRUN_CUDA_NORM_FUSE,
 * lrun_k_gemv_norm_takes): host logic only, run by `make test` in a CUDA
 * build (one SKIP line without CUDA). */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "cuda/gemv_choice.h"
#include "kernels.h"

/* the choice with the three variables set (NULL: unset) */
static lrun_cuda_gemv_choice choice(int exact, const char *q8x, const char *split, const char *dp4a)
{
    const char *names[3] = {"LRUN_CUDA_GEMV_Q8X", "LRUN_CUDA_GEMV_SPLIT", "LRUN_CUDA_GEMV_DP4A"};
    const char *values[3] = {q8x, split, dp4a};
    for (int i = 0; i < 3; i++) {
        if (values[i]) setenv(names[i], values[i], 1);
        else unsetenv(names[i]);
    }
    lrun_cuda_gemv_choice c;
    lrun_cuda_gemv_choice_from_env(exact, &c);
    for (int i = 0; i < 3; i++) unsetenv(names[i]);
    return c;
}

int main(void)
{
    unsetenv("LRUN_CUDA_GEMV_STAGE");
    lrun_cuda_gemv_choice c = choice(0, NULL, NULL, NULL);
    CHECK("fast, nothing set: split layout and q8x for Q8_0/Q4_0", c.split == 1 && c.q8x == 1);
    CHECK("fast, nothing set: q4_1 still takes the dp4a kernel",
          lrun_cuda_gemv_choice_flags(&c, LRUN_DTYPE_Q4_1) == LRUN_K_GEMV_DP4A);
    c = choice(1, NULL, NULL, NULL);
    CHECK("exact: no split, no q8x, no flags",
          c.split == 0 && c.q8x == 0 && lrun_cuda_gemv_choice_flags(&c, LRUN_DTYPE_Q8_0) == 0);
    c = choice(1, NULL, "1", NULL);
    CHECK("exact with LRUN_CUDA_GEMV_SPLIT=1: still no split", c.split == 0 && c.q8x == 0);
    c = choice(0, "0", NULL, NULL);
    CHECK("LRUN_CUDA_GEMV_Q8X=0: GGUF's layout and kernels", c.split == 0 && c.q8x == 0);
    c = choice(0, NULL, "0", NULL);
    CHECK("LRUN_CUDA_GEMV_SPLIT=0: GGUF's layout and kernels", c.split == 0 && c.q8x == 0);
    c = choice(0, NULL, "1", NULL);
    CHECK("LRUN_CUDA_GEMV_SPLIT=1: the split layout with gemv_split.cu (no q8x)", c.split == 1 && c.q8x == 0);
    c = choice(0, "1", NULL, NULL);
    CHECK("LRUN_CUDA_GEMV_Q8X=1: the default", c.split == 1 && c.q8x == 1);
    c = choice(0, "0", NULL, "1");
    CHECK("LRUN_CUDA_GEMV_Q8X=0 with LRUN_CUDA_GEMV_DP4A=1: Q8_0 takes the dp4a kernel again",
          c.q8x == 0 && lrun_cuda_gemv_choice_flags(&c, LRUN_DTYPE_Q8_0) == LRUN_K_GEMV_DP4A);
    /* the folded norm: opt-in (LRUN_CUDA_NORM_FUSE=1) in fast numerics, never in exact */
    unsetenv("LRUN_CUDA_NORM_FUSE");
    c = choice(0, NULL, NULL, NULL);
    CHECK("fast, LRUN_CUDA_NORM_FUSE unset: every norm its own kernel (opt-in)", c.norm_fuse == 0);
    setenv("LRUN_CUDA_NORM_FUSE", "1", 1);
    c = choice(1, NULL, NULL, NULL);
    CHECK("exact under LRUN_CUDA_NORM_FUSE=1: no folded norm", c.norm_fuse == 0);
    c = choice(0, NULL, NULL, NULL);
    CHECK("fast, LRUN_CUDA_NORM_FUSE=1: decode norms fold into the next product", c.norm_fuse == 1);
    setenv("LRUN_CUDA_NORM_FUSE", "0", 1);
    c = choice(0, NULL, NULL, NULL);
    CHECK("LRUN_CUDA_NORM_FUSE=0: every norm its own kernel", c.norm_fuse == 0);
    setenv("LRUN_CUDA_NORM_FUSE", "1", 1);
    c = choice(0, "0", NULL, NULL);
    CHECK("LRUN_CUDA_NORM_FUSE=1 with LRUN_CUDA_GEMV_Q8X=0: still folded (the GEMV folds it)",
          c.norm_fuse == 1 && c.q8x == 0);
    unsetenv("LRUN_CUDA_NORM_FUSE");
    /* which GEMVs fold a norm without changing kernel (kernels.h) */
    CHECK("bf16, f16 and f32 fold a norm at m = 1 and 8", lrun_k_gemv_norm_takes(LRUN_DTYPE_BF16, 1, 0) &&
                                                              lrun_k_gemv_norm_takes(LRUN_DTYPE_F16, 1, 0) &&
                                                              lrun_k_gemv_norm_takes(LRUN_DTYPE_F32, 8, 0));
    CHECK("Q4_K, Q5_K and Q6_K fold it at m = 1 (the K-quant slice kernel) and beyond (the unit kernel)",
          lrun_k_gemv_norm_takes(LRUN_DTYPE_Q4_K, 1, 0) && lrun_k_gemv_norm_takes(LRUN_DTYPE_Q5_K, 1, 0) &&
              lrun_k_gemv_norm_takes(LRUN_DTYPE_Q6_K, 1, 0) && lrun_k_gemv_norm_takes(LRUN_DTYPE_Q4_K, 2, 0) &&
              lrun_k_gemv_norm_takes(LRUN_DTYPE_Q6_K, 8, 0));
    CHECK("the dp4a or staged kernel at m = 1 and split rows do not fold it",
          !lrun_k_gemv_norm_takes(LRUN_DTYPE_Q4_1, 1, LRUN_K_GEMV_DP4A) &&
              !lrun_k_gemv_norm_takes(LRUN_DTYPE_Q8_0, 1, LRUN_K_GEMV_STAGE | LRUN_K_GEMV_DP4A) &&
              lrun_k_gemv_norm_takes(LRUN_DTYPE_Q4_1, 2, LRUN_K_GEMV_DP4A) &&
              !lrun_k_gemv_norm_takes(LRUN_DTYPE_Q8_0, 2, LRUN_K_GEMV_SPLIT));
    CHECK("m outside 1..8 and Q8_1 (activations only, no GEMV kernel) do not fold it",
          !lrun_k_gemv_norm_takes(LRUN_DTYPE_BF16, 0, 0) && !lrun_k_gemv_norm_takes(LRUN_DTYPE_BF16, 9, 0) &&
              !lrun_k_gemv_norm_takes(LRUN_DTYPE_Q8_1, 1, 0));
    return CHECK_DONE();
}
#endif
