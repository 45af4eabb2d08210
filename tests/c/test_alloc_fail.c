/* test_alloc_fail.c — every host allocation of loading a model and
 * generating a few tokens on the CPU may fail, and each failure is a clean
 * error (issue 16): a status and a message, no crash, nothing leaked, and a
 * model loaded before keeps working, in every KV cache kind. The wrappers
 * and the stepping are in alloc_fail.h; test_alloc_fail_gpu.c does the same
 * on CUDA with device and pinned allocations failing too. */
#include "alloc_fail.h"

int main(void) { return alloc_fail_suite(); }
