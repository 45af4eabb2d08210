/* check.h — the few macros C tests need; each check prints one TAP line. */
#ifndef LRUN_CHECK_H
#define LRUN_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_failures;
static int check_count;

/* CHECK(name, cond): one TAP line named name. */
#define CHECK(name, cond)                                                           \
    do {                                                                            \
        ++check_count;                                                              \
        if (cond) printf("ok %d - %s\n", check_count, (name));                      \
        else {                                                                      \
            ++check_failures;                                                       \
            printf("not ok %d - %s (%s:%d: %s)\n", check_count, (name), __FILE__,   \
                   __LINE__, #cond);                                                \
        }                                                                           \
    } while (0)

/* CHECK_NEAR(name, a, b, tol): |a-b| <= tol. */
#define CHECK_NEAR(name, a, b, tol)                                                 \
    do {                                                                            \
        double check_a_ = (a), check_b_ = (b);                                      \
        ++check_count;                                                              \
        if (fabs(check_a_ - check_b_) <= (tol)) printf("ok %d - %s\n", check_count, (name)); \
        else {                                                                      \
            ++check_failures;                                                       \
            printf("not ok %d - %s (%s:%d: %g vs %g, tol %g)\n", check_count, (name), \
                   __FILE__, __LINE__, check_a_, check_b_, (double)(tol));          \
        }                                                                           \
    } while (0)

/* Ends main(): the TAP plan and the exit code. */
#define CHECK_DONE() (printf("1..%d\n", check_count), check_failures ? 1 : 0)

#endif
