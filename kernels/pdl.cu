/* pdl.cu — the per-thread switch for programmatic dependent launch
 * (lrun_k_set_pdl in kernels.h; the launch itself is lrun_k_launch in
 * common.cuh). Thread-local so that two engines stepping on two threads each
 * launch their own way. */
#include "common.cuh"

static thread_local int pdl_on;

extern "C" void lrun_k_set_pdl(int on) { pdl_on = on != 0; }

extern "C" int lrun_k_pdl_enabled(void) { return pdl_on; }

extern "C" int lrun_k_pdl_supported(int cuda_ordinal)
{
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, cuda_ordinal) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return major >= 9;
}
