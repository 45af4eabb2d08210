/* quant_dot_nx.h — the one shape of every vectorised dot's entry point,
 * for quant_dot.c, quant_dot_k.c and quant_dot_more.c.
 *
 * A kernel body takes its row count NX as an argument and is inlined per
 * case, so a switch that passes NX as a constant gets each case unrolled
 * with its accumulators in registers. DOT_NX_FN defines the entry point
 * (lrun_dot_fn's signature: nx rows of x, nx outputs) around such a body:
 *
 *   DOT_NX_FN(lrun_dot_q4_K_avx2, dot_q4_K_nx)             calls dot_q4_K_nx(k, w, x, xs, N, out)
 *   static DOT_NX_FN_KIND(dot_f16_avx2, dot_float_nx, 1)   calls dot_float_nx(1, k, w, x, xs, N, out)
 *
 * with N = nx for nx in 1..3, N = 4 otherwise. */
#ifndef LRUN_QUANT_DOT_NX_H
#define LRUN_QUANT_DOT_NX_H

#include <stddef.h>
#include <stdint.h>

/* The switch over nx; kernel's arguments before N are the rest. */
#define DOT_NX_SWITCH(kernel, ...)                                                                          \
    switch (nx) {                                                                                           \
    case 1: kernel(__VA_ARGS__, 1, out); break;                                                             \
    case 2: kernel(__VA_ARGS__, 2, out); break;                                                             \
    case 3: kernel(__VA_ARGS__, 3, out); break;                                                             \
    default: kernel(__VA_ARGS__, 4, out); break;                                                            \
    }

#define DOT_NX_FN(name, kernel)                                                                             \
    void name(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)                      \
    {                                                                                                       \
        DOT_NX_SWITCH(kernel, k, w, x, xs)                                                                  \
    }

/* The same for a kernel whose first argument picks a variant (a weight format). */
#define DOT_NX_FN_KIND(name, kernel, kind)                                                                  \
    void name(int64_t k, const void *w, const void *x, size_t xs, int nx, float *out)                      \
    {                                                                                                       \
        DOT_NX_SWITCH(kernel, kind, k, w, x, xs)                                                            \
    }

#endif
