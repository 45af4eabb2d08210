/* progress.h — a one-line progress bar on stderr for long loads.
 * Drawn only when enabled and stderr is a terminal, so logs and pipes stay clean. */
#ifndef LRUN_PROGRESS_H
#define LRUN_PROGRESS_H

#include <stddef.h>

typedef struct lrun_progress {
    int active;          /* 1 when drawing */
    char label[48];      /* what is loading, shown before the bar */
    size_t total;        /* bytes to go through */
    int last_permille;   /* last value drawn, to redraw only on change */
    double t0;           /* start, seconds (monotonic) */
} lrun_progress;

void lrun_progress_begin(lrun_progress *p, int enabled, const char *label, size_t total);
/* done: bytes so far (<= total). Cheap when nothing changes. */
void lrun_progress_update(lrun_progress *p, size_t done);
/* Draws 100% with the elapsed time and ends the line. */
void lrun_progress_end(lrun_progress *p);

#endif
