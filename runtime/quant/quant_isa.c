/* quant_isa.c — the host kernel level (scalar, AVX2, AVX-512), chosen once at
 * run time.
 *
 * The AVX2 kernels are compiled in when the build targets AVX2 (-march=native
 * on such a machine), so a build that has them can run them. The AVX-512
 * kernels are compiled for every x86-64 build (target attributes) and need a
 * check of the CPU (and of the OS saving the zmm registers, which
 * __builtin_cpu_supports includes). Every level gives the same bits for the
 * types that have a kernel at it (docs/cpu-kernels.md), so the level changes
 * speed only; LRUN_CPU_ISA forces one for tests and benchmarks. */
#include "quant/quant_dot.h"

#include "core/error.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int isa_chosen = -1; /* lrun_cpu_isa, or -1 before the first call */

const char *lrun_cpu_isa_name(lrun_cpu_isa isa)
{
    switch (isa) {
    case LRUN_CPU_ISA_AVX512: return "avx512";
    case LRUN_CPU_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

int lrun_cpu_isa_supported(lrun_cpu_isa isa)
{
    switch (isa) {
    case LRUN_CPU_ISA_SCALAR: return 1;
    case LRUN_CPU_ISA_AVX2:
#if defined(LRUN_HAVE_AVX2)
        return 1;
#else
        return 0;
#endif
    case LRUN_CPU_ISA_AVX512:
#if defined(LRUN_HAVE_AVX512)
        /* the kernels use F (zmm), BW (byte/word ops), VL (their 256-bit
         * forms), DQ (32×8 extracts) and VNNI (vpdpbusd, vpdpwssd) */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma");
#else
        return 0;
#endif
    }
    return 0;
}

/* The best supported level at or below want. */
static lrun_cpu_isa best_up_to(lrun_cpu_isa want)
{
    for (int l = (int)want; l > 0; --l)
        if (lrun_cpu_isa_supported((lrun_cpu_isa)l)) return (lrun_cpu_isa)l;
    return LRUN_CPU_ISA_SCALAR;
}

/* LRUN_CPU_ISA, or the best level; a bad request is said once on stderr
 * (the level only changes speed, so a fallback beats failing a load). */
static lrun_cpu_isa choose(void)
{
    const char *env = getenv("LRUN_CPU_ISA");
    if (!env || !*env || strcmp(env, "auto") == 0) return best_up_to(LRUN_CPU_ISA_AVX512);
    lrun_cpu_isa want;
    if (strcmp(env, "avx512") == 0) want = LRUN_CPU_ISA_AVX512;
    else if (strcmp(env, "avx2") == 0) want = LRUN_CPU_ISA_AVX2;
    else if (strcmp(env, "scalar") == 0) want = LRUN_CPU_ISA_SCALAR;
    else {
        lrun_cpu_isa got = best_up_to(LRUN_CPU_ISA_AVX512);
        fprintf(stderr, "lrun: LRUN_CPU_ISA=%s is not one of avx512, avx2, scalar, auto; using %s\n", env,
                lrun_cpu_isa_name(got));
        return got;
    }
    lrun_cpu_isa got = best_up_to(want);
    if (got != want)
        fprintf(stderr, "lrun: LRUN_CPU_ISA=%s: this %s cannot run it; using %s\n", env,
                want == LRUN_CPU_ISA_AVX2 ? "build" : "CPU or build", lrun_cpu_isa_name(got));
    return got;
}

lrun_cpu_isa lrun_cpu_isa_get(void)
{
    int v = atomic_load_explicit(&isa_chosen, memory_order_relaxed);
    if (v < 0) {
        int expected = -1;
        v = (int)choose();
        /* two first callers at once: the first store wins, both choose the same */
        if (!atomic_compare_exchange_strong(&isa_chosen, &expected, v)) v = expected;
    }
    return (lrun_cpu_isa)v;
}

lrun_status lrun_cpu_isa_set(lrun_cpu_isa isa)
{
    if ((int)isa < 0 || (int)isa > (int)LRUN_CPU_ISA_AVX512)
        return lrun_fail(LRUN_E_ARG, "lrun_cpu_isa_set: level %d is not scalar, avx2 or avx512", (int)isa);
    if (!lrun_cpu_isa_supported(isa))
        return lrun_fail(LRUN_E_ARG, "lrun_cpu_isa_set: this CPU or build cannot run %s kernels",
                         lrun_cpu_isa_name(isa));
    atomic_store(&isa_chosen, (int)isa);
    return LRUN_OK;
}

LRUN_API const char *lrun_cpu_kernels(void) { return lrun_cpu_isa_name(lrun_cpu_isa_get()); }
