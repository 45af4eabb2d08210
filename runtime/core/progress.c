/* progress.c — the load progress bar (see progress.h). */
#include "core/progress.h"
#include "core/clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 30

static void draw(const lrun_progress *p, size_t done, int permille)
{
    char bar[BAR_WIDTH + 1];
    const int fill = permille * BAR_WIDTH / 1000;
    for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    const double dt = lrun_now_seconds() - p->t0;
    fprintf(stderr, "\r%s [%s] %3d%% %.1f/%.1f MiB %.0f MiB/s ", p->label, bar, permille / 10,
            (double)done / 1048576.0, (double)p->total / 1048576.0, dt > 0 ? (double)done / 1048576.0 / dt : 0.0);
    fflush(stderr);
}

void lrun_progress_begin(lrun_progress *p, int enabled, const char *label, size_t total)
{
    memset(p, 0, sizeof *p);
    p->active = enabled && isatty(2);
    if (!p->active) return;
    /* the file name, not its directory: the line must fit a terminal */
    const char *slash = strrchr(label, '/');
    snprintf(p->label, sizeof p->label, "loading %s", slash ? slash + 1 : label);
    p->total = total;
    p->last_permille = -1;
    p->t0 = lrun_now_seconds();
    draw(p, 0, 0);
}

void lrun_progress_update(lrun_progress *p, size_t done)
{
    if (!p->active || p->total == 0) return;
    if (done > p->total) done = p->total;
    const int permille = (int)((double)done * 1000.0 / (double)p->total);
    if (permille == p->last_permille) return;
    p->last_permille = permille;
    draw(p, done, permille);
}

void lrun_progress_end(lrun_progress *p)
{
    if (!p->active) return;
    draw(p, p->total, 1000);
    fprintf(stderr, " %.2fs\n", lrun_now_seconds() - p->t0);
    p->active = 0;
}
