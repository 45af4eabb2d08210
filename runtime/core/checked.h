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

/* Carves n_bytes (rounded up to align, a power of two; 0 counts as 1) off a
 * scratch cursor, adding them to *total; with a NULL cursor it only counts,
 * so one function both sizes a scratch block and lays it out. 0 on overflow. */
static inline int lrun_carve(char **cursor, size_t *total, size_t n_bytes, size_t align, void **out)
{
    size_t aligned;
    if (!lrun_size_align_up(n_bytes ? n_bytes : 1, align, &aligned) || !lrun_size_add(*total, aligned, total))
        return 0;
    if (*cursor) {
        *out = *cursor;
        *cursor += aligned;
    }
    return 1;
}

#endif
