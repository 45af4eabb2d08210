/* load_fixture.h — what the streaming-loader tests share
 * (test_model_load.c on the host tier, test_model_load_gpu.c on cuda:0):
 * the process's memory from /proc/self/status with its peak reset, every
 * weight moved to one tier, and the largest shard of a generated 3-shard HF
 * directory (the bound their RSS checks allow). Header-only like check.h;
 * each test keeps its own model sizes. */
#ifndef LRUN_TEST_LOAD_FIXTURE_H
#define LRUN_TEST_LOAD_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lrun.h"

/* /proc/self/status field (kB) as bytes; -1 when absent. */
static inline long long status_bytes(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long long v = -1;
    const size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') v = atoll(line + n + 1) * 1024;
    fclose(f);
    return v;
}

/* Resets VmHWM to the current RSS; 0 where the kernel does not allow it. */
static inline int reset_hwm(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    const int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

/* Moves every tensor of m to tier; the status. */
static inline lrun_status move_all(lrun_model *m, lrun_tier tier)
{
    const int64_t n = lrun_model_tensor_count(m);
    int64_t *index = malloc((size_t)n * sizeof *index);
    lrun_tier *tiers = malloc((size_t)n * sizeof *tiers);
    for (int64_t i = 0; i < n; i++) index[i] = i, tiers[i] = tier;
    const lrun_status st = lrun_model_move_tensors(m, n, index, tiers);
    free(index);
    free(tiers);
    return st;
}

/* The largest shard's bytes of the 3-shard HF directory hf; 0 when none is there. */
static inline size_t largest_shard(const char *hf)
{
    size_t big = 0;
    for (int i = 1; i <= 3; i++) {
        char p[400];
        struct stat sb;
        snprintf(p, sizeof p, "%s/model-%05d-of-%05d.safetensors", hf, i, 3);
        if (stat(p, &sb) == 0 && (size_t)sb.st_size > big) big = (size_t)sb.st_size;
    }
    return big;
}

#endif
