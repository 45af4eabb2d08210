/* checked.h — overflow-checked size arithmetic. Every product that sizes a
 * buffer or bounds a read goes through these (hostile files, REFERENCE.md). */
#ifndef LRUN_CHECKED_H
#define LRUN_CHECKED_H

#include <stddef.h>
#include <stdint.h>

/* Each returns 1 when the result fits, 0 on overflow (*out is then unspecified). */
static inline int lrun_size_mul(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline int lrun_size_add(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }
static inline int lrun_i64_mul(int64_t a, int64_t b, int64_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* Rounds n up to a multiple of align (a power of two); 0 on overflow. */
static inline int lrun_size_align_up(size_t n, size_t align, size_t *out)
{
    size_t t;
    if (!lrun_size_add(n, align - 1, &t)) return 0;
    *out = t & ~(align - 1);
    return 1;
}

#endif
