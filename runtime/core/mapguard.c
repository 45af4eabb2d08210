/* mapguard.c — SIGBUS from a model file truncated in use, inside an engine
 * step, becomes an error (mapguard.h says how and why this way). */
#include "core/mapguard.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

/* One registered mapping. The handler reads lo, len and lost_at; the rest
 * is written before lo is published (release) and read after it (acquire). */
typedef struct {
    _Atomic uintptr_t lo;   /* first byte of the mapping; 0: a free slot */
    size_t len;             /* bytes mapped: the file's size when it was opened */
    _Atomic size_t lost_at; /* byte offset of the first page replaced by zeros; SIZE_MAX: none */
    atomic_ulong lost_gen;  /* loss_gen when it last lost pages; 0: never */
    char path[512];         /* the file, as it was opened (truncated past 511 bytes) */
} entry;

/* 64 files: an HF model's shards, a few models, and the files tools open. */
enum { N_ENTRIES = 64 };
static entry entries[N_ENTRIES];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* add/remove; never taken by the handler */
static atomic_int guarded;       /* guarded windows open now, in every thread */
static atomic_int any_lost;      /* 1 once some mapping lost pages: lets checks return at once */
static atomic_ulong loss_gen;    /* losses so far, every mapping: a window's start and end compare it */
/* The last mapping that lost pages and was then removed (a reader closed
 * on its error before the window ended): lets the window name it. Written
 * under lock. */
static struct {
    unsigned long gen; /* its lost_gen; 0: none */
    size_t at, len;
    char path[512];
} removed_loss;
static atomic_int installed;     /* 1 when sigaction took our handler */
static struct sigaction previous; /* what SIGBUS did before: the launcher's handler or the default */
static uintptr_t page_bytes;
static pthread_once_t once = PTHREAD_ONCE_INIT;

// ---------------------------------------------------------------- the handler

/* Hands the signal to what was installed before us. For SIG_DFL (or
 * SIG_IGN, which cannot hold for a fault) the default action comes back
 * and the faulting read, run again, ends the process as it always did. */
static void chain(int sig, siginfo_t *info, void *uctx)
{
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) previous.sa_sigaction(sig, info, uctx);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    signal(SIGBUS, SIG_DFL);
}

/* Zero pages over [page, end of the mapping): 1 when mmap took them. */
static int replace_with_zeros(entry *e, uintptr_t lo, uintptr_t addr)
{
    const uintptr_t page = addr & ~(page_bytes - 1);
    const uintptr_t end = (lo + e->len + page_bytes - 1) & ~(page_bytes - 1);
    void *r = mmap((void *)page, end - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (r == MAP_FAILED) return 0;
    size_t none = SIZE_MAX;
    atomic_compare_exchange_strong(&e->lost_at, &none, (size_t)(page - lo));
    atomic_store(&e->lost_gen, atomic_fetch_add(&loss_gen, 1) + 1);
    atomic_store(&any_lost, 1);
    return 1;
}

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    const uintptr_t addr = (uintptr_t)info->si_addr;
    if (info->si_code == BUS_ADRERR && atomic_load(&guarded) > 0) {
        for (int i = 0; i < N_ENTRIES; i++) {
            entry *e = &entries[i];
            const uintptr_t lo = atomic_load_explicit(&e->lo, memory_order_acquire);
            if (lo && addr >= lo && addr - lo < e->len) {
                if (replace_with_zeros(e, lo, addr)) return; /* the read runs again, on zeros */
                break;
            }
        }
    }
    chain(sig, info, uctx);
}

static void install(void)
{
    const long p = sysconf(_SC_PAGESIZE);
    page_bytes = p > 0 ? (uintptr_t)p : 4096;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &previous) == 0) atomic_store(&installed, 1);
}

int lrun_mapguard_installed(void)
{
    struct sigaction now;
    return atomic_load(&installed) && sigaction(SIGBUS, NULL, &now) == 0 && (now.sa_flags & SA_SIGINFO) &&
           now.sa_sigaction == on_sigbus;
}

// ---------------------------------------------------------------- the table

void lrun_mapguard_add(const void *base, size_t len, const char *path)
{
    if (!base || !len) return;
    pthread_once(&once, install);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < N_ENTRIES; i++) {
        entry *e = &entries[i];
        if (atomic_load(&e->lo)) continue;
        e->len = len;
        atomic_store(&e->lost_at, SIZE_MAX);
        atomic_store(&e->lost_gen, 0);
        snprintf(e->path, sizeof e->path, "%s", path ? path : "");
        atomic_store_explicit(&e->lo, (uintptr_t)base, memory_order_release);
        break;
    }
    pthread_mutex_unlock(&lock);
}

void lrun_mapguard_remove(const void *base)
{
    if (!base) return;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < N_ENTRIES; i++)
        if (atomic_load(&entries[i].lo) == (uintptr_t)base) {
            entry *e = &entries[i];
            const unsigned long gen = atomic_load(&e->lost_gen);
            if (gen) { /* kept for a window that ends after its reader closed */
                removed_loss.gen = gen;
                removed_loss.at = atomic_load(&e->lost_at);
                removed_loss.len = e->len;
                memcpy(removed_loss.path, e->path, sizeof removed_loss.path);
            }
            atomic_store(&e->lo, 0);
            break;
        }
    pthread_mutex_unlock(&lock);
}

void lrun_mapguard_enter(void) { atomic_fetch_add(&guarded, 1); }
void lrun_mapguard_leave(void) { atomic_fetch_sub(&guarded, 1); }

int lrun_mapguard_any_lost(void) { return atomic_load(&any_lost); }

lrun_status lrun_mapguard_check(const char *prefix, size_t prefix_len, const char *who)
{
    if (!atomic_load(&any_lost) || !prefix) return LRUN_OK;
    for (int i = 0; i < N_ENTRIES; i++) {
        const entry *e = &entries[i];
        if (!atomic_load_explicit(&e->lo, memory_order_acquire)) continue;
        const size_t at = atomic_load(&e->lost_at);
        if (at == SIZE_MAX || strncmp(e->path, prefix, prefix_len) != 0) continue;
        if (e->path[prefix_len] != '\0' && e->path[prefix_len] != '/') continue;
        return lrun_fail(LRUN_E_IO, "%s: model file %s was truncated while in use (a weight read at byte %zu of the "
                         "%zu it had when loaded lies past its end now); the weights read since are zeros, not the "
                         "file's: load the model again", who, e->path, at, e->len);
    }
    return LRUN_OK;
}

// ---------------------------------------------------------------- windows with a verdict

unsigned long lrun_mapguard_begin(void)
{
    lrun_mapguard_enter();
    return atomic_load(&loss_gen);
}

/* The newest loss after since: a live mapping's, else the one removed last. */
static int loss_since(unsigned long since, char *path, size_t path_cap, size_t *at, size_t *len)
{
    unsigned long best = since;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < N_ENTRIES; i++) {
        const entry *e = &entries[i];
        const unsigned long gen = atomic_load(&e->lost_gen);
        if (!atomic_load(&e->lo) || gen <= best) continue;
        best = gen;
        snprintf(path, path_cap, "%s", e->path);
        *at = atomic_load(&e->lost_at);
        *len = e->len;
    }
    if (best == since && removed_loss.gen > since) {
        best = removed_loss.gen;
        snprintf(path, path_cap, "%s", removed_loss.path);
        *at = removed_loss.at;
        *len = removed_loss.len;
    }
    pthread_mutex_unlock(&lock);
    return best != since;
}

/* A registered file now shorter than its mapping: a write or pread from
 * the mapping meets the cut as EFAULT, not SIGBUS, and fails with its own
 * I/O error, which this names. */
static int shrunk_file(char *path, size_t path_cap, size_t *now, size_t *len)
{
    int found = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < N_ENTRIES && !found; i++) {
        const entry *e = &entries[i];
        struct stat sb;
        if (!atomic_load(&e->lo) || stat(e->path, &sb) != 0 || (size_t)sb.st_size >= e->len) continue;
        snprintf(path, path_cap, "%s", e->path);
        *now = (size_t)sb.st_size;
        *len = e->len;
        found = 1;
    }
    pthread_mutex_unlock(&lock);
    return found;
}

lrun_status lrun_mapguard_end(unsigned long since, lrun_status st, const char *what)
{
    lrun_mapguard_leave();
    if (atomic_load(&loss_gen) == since) {
        char path[512];
        size_t now = 0, len = 0;
        if (st == LRUN_E_IO && shrunk_file(path, sizeof path, &now, &len))
            return lrun_fail_context(st, "%s: file %s was truncated while it was read (%zu bytes now, %zu when "
                                     "mapped): make the file whole and open it again", what ? what : "reading",
                                     path, now, len);
        return st;
    }
    char path[512] = "(a mapped file)";
    size_t at = 0, len = 0;
    loss_since(since, path, sizeof path, &at, &len);
    return lrun_fail(LRUN_E_IO, "%s: file %s was truncated while it was read (a read at byte %zu of the %zu it had "
                     "when mapped lies past its end now); what was read since is zeros, not the file's: make the "
                     "file whole and open it again", what ? what : "reading", path, at, len);
}

lrun_status lrun_mapguard_check_map(const void *base, const char *who)
{
    if (!atomic_load(&any_lost) || !base) return LRUN_OK;
    for (int i = 0; i < N_ENTRIES; i++) {
        const entry *e = &entries[i];
        if (atomic_load_explicit(&e->lo, memory_order_acquire) != (uintptr_t)base) continue;
        const size_t at = atomic_load(&e->lost_at);
        if (at == SIZE_MAX) return LRUN_OK;
        return lrun_fail(LRUN_E_IO, "%s: model file %s was truncated while in use (a weight read at byte %zu of the "
                         "%zu it had when loaded lies past its end now); the weights read since are zeros, not the "
                         "file's: load the model again", who, e->path, at, e->len);
    }
    return LRUN_OK;
}
