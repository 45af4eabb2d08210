/* test_model_hf_moe_gpu.c — test_model_hf_moe.c's cases with the engines on
 * cuda:0: HF mixtures of experts (views of the file, copies made at load,
 * transformers 5's fused layout) give their GGUF twin's logits on the GPU
 * (fast numerics: within 1e-3, where the CPU's are bit-identical or within
 * 1e-5). TAP SKIP without CUDA or a GPU. */
#include <stdio.h>

#include "check.h"
#include "lrun.h"

#if !defined(LRUN_WITH_CUDA)
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#define HF_MOE_DEVICE "cuda:0"
#define HF_MOE_TOL_EXACT 1e-3
#define HF_MOE_TOL_MIXTRAL 1e-3
#define main hf_moe_main
#include "test_model_hf_moe.c"
#undef main

int main(void)
{
    if (lrun_cuda_device_count() < 1) {
        printf("ok %d - # SKIP no GPU\n", ++check_count);
        return CHECK_DONE();
    }
    return hf_moe_main();
}
#endif
