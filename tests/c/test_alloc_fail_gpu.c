/* test_alloc_fail_gpu.c — test_alloc_fail.c on CUDA: every allocation of
 * loading a model onto cuda:0 and generating may fail — host blocks, device
 * arenas (cudaMalloc), pool grants and page-locked host memory
 * (cudaHostAlloc) — and each failure is a clean error with nothing leaked
 * on the host or the device (issue 16). One TAP SKIP line where no GPU is
 * visible. Linked with ALLOC_WRAP and CUDA_ALLOC_WRAP (Makefile). */
#include "alloc_fail.h"

#ifndef LRUN_WITH_CUDA
int main(void)
{
    printf("ok %d - # SKIP built without CUDA\n", ++check_count);
    return CHECK_DONE();
}
#else
#include "core/error.h"
#include "core/pool.h"
#include "cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

cudaError_t __real_cudaMalloc(void **p, size_t n);
cudaError_t __real_cudaHostAlloc(void **p, size_t n, unsigned int flags);
lrun_status __real_lrun_pool_alloc(lrun_pool *pool, size_t bytes, const char *what, void **out);

cudaError_t __wrap_cudaMalloc(void **p, size_t n)
{
    if (count_and_fail()) return cudaErrorMemoryAllocation;
    return __real_cudaMalloc(p, n);
}

cudaError_t __wrap_cudaHostAlloc(void **p, size_t n, unsigned int flags)
{
    if (count_and_fail()) return cudaErrorMemoryAllocation;
    return __real_cudaHostAlloc(p, n, flags);
}

lrun_status __wrap_lrun_pool_alloc(lrun_pool *pool, size_t bytes, const char *what, void **out)
{
    if (count_and_fail()) return lrun_fail_oom(bytes, 0, "%s: injected device pool failure", what ? what : "a grant");
    return __real_lrun_pool_alloc(pool, bytes, what, out);
}

int main(void)
{
    if (lrun_cuda_device_count() == 0) {
        printf("ok %d - # SKIP no GPU visible\n", ++check_count);
        return CHECK_DONE();
    }
    scenario_device = "cuda:0";
    return alloc_fail_suite();
}
#endif
