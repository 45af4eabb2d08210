/* mapguard.h — a model file truncated while its mapping is read (issue 16).
 *
 * Weights in the mmap tier are read through a read-only MAP_PRIVATE mapping
 * of the model file; a read past the end of a file that was truncated in use
 * raises SIGBUS. Inside a guarded window (an engine step, engine init, and
 * the windows with a verdict below: loading, placing, packing) the
 * library's handler does not let that kill the process: it replaces the
 * mapping from the faulting page to its end with zero pages (mmap
 * MAP_FIXED | MAP_ANONYMOUS), records that the mapping lost its file, and
 * returns, so the faulting read, in whichever thread it ran (the caller or a
 * pool worker), reads zeros and the step runs to its end. The step then
 * fails with LRUN_E_IO naming the file (lrun_mapguard_check), and so does
 * every later step on that model: its weights are no longer the file's. No
 * frame is skipped (no siglongjmp), so no lock, allocation or pool barrier
 * is left half-done.
 *
 * Mappings registered: GGUF files, safetensors shards and packed files.
 * A SIGBUS outside a guarded window, outside every registered mapping, or
 * not raised by a fault (BUS_ADRERR) goes to the handler installed before
 * (the launcher's message, app/sigbus.h) or the default action. The handler
 * is installed when the first mapping is registered; its state is static
 * memory read with atomics, and it calls only mmap and signal-safe code. */
#ifndef LRUN_MAPGUARD_H
#define LRUN_MAPGUARD_H

#include <stddef.h>

#include "lrun.h"

/* Registers [base, base + len), a read-only mapping of the file path from
 * offset 0. Unregistered mappings (more than the table holds) are simply
 * not guarded. */
void lrun_mapguard_add(const void *base, size_t len, const char *path);
/* Forgets the mapping at base (before it is unmapped). */
void lrun_mapguard_remove(const void *base);

/* Bracket code that reads registered mappings and checks afterwards; they
 * nest and may run in several threads at once (a process-wide count). */
void lrun_mapguard_enter(void);
void lrun_mapguard_leave(void);

/* LRUN_E_IO naming the file and the offset when a registered mapping of a
 * file whose path is prefix (prefix_len bytes; with a '/' or the end after
 * it) lost its pages; LRUN_OK otherwise. who starts the message. */
lrun_status lrun_mapguard_check(const char *prefix, size_t prefix_len, const char *who);

/* A window with a verdict, for readers outside an engine step (loading,
 * placing, packing, a packed file's checks): begin opens a guarded window
 * and returns the count of losses so far; end closes it and returns st
 * unless some registered mapping lost pages in between, in any thread (the
 * window is process-wide), and then LRUN_E_IO naming that file, the
 * offset, and what (e.g. "loading m.gguf") was reading. The mapping may
 * have been removed by then (a reader closed on the error zeros caused).
 *     unsigned long g = lrun_mapguard_begin();
 *     st = read_things(...);
 *     st = lrun_mapguard_end(g, st, "loading x");   */
unsigned long lrun_mapguard_begin(void);
lrun_status lrun_mapguard_end(unsigned long since, lrun_status st, const char *what);

/* LRUN_E_IO when the registered mapping at base lost its pages (a packed
 * file, whose model has no weights_path); LRUN_OK otherwise. */
lrun_status lrun_mapguard_check_map(const void *base, const char *who);

/* 1 once any registered mapping lost pages (one atomic load: the engine
 * asks after every step). */
int lrun_mapguard_any_lost(void);

/* 1 when the handler is the process's SIGBUS action (a sanitizer may keep
 * SIGBUS for itself); for the tests. */
int lrun_mapguard_installed(void);

#endif
