/* host_account.c — a model's host memory account (host_account.h) and the
 * host's available memory (MemAvailable, memory cgroups v1 and v2). */
#include "core/host_account.h"

#include "core/format_bytes.h"
#include "core/error.h"

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Charges from this size on are checked against the host's available memory
 * when there is no budget: reading /proc and the cgroup files costs tens of
 * microseconds, so only blocks that could matter pay for it. */
#define AVAILABLE_CHECK_BYTES ((size_t)1 << 20)

static const char *const category_names[LRUN_HOST_CATEGORY_COUNT] = {"weights", "KV cache", "slots", "scratch",
                                                                      "expert cache"};

const char *lrun_host_category_name(lrun_host_category c)
{
    return (unsigned)c < LRUN_HOST_CATEGORY_COUNT ? category_names[c] : "other";
}

lrun_host_category lrun_host_category_of(const char *what)
{
    if (!what) return LRUN_HOST_CATEGORY_WEIGHTS;
    if (strstr(what, "KV")) return LRUN_HOST_CATEGORY_KV;
    if (strstr(what, "expert cache")) return LRUN_HOST_CATEGORY_EXPERTS;
    if (strstr(what, "slot") || strstr(what, "staging")) return LRUN_HOST_CATEGORY_SLOTS;
    if (strstr(what, "scratch")) return LRUN_HOST_CATEGORY_SCRATCH;
    return LRUN_HOST_CATEGORY_WEIGHTS;
}

// ---------------------------------------------------------------- the account

void lrun_host_account_init(lrun_host_account *a)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->lock, NULL);
}

void lrun_host_account_destroy(lrun_host_account *a) { pthread_mutex_destroy(&a->lock); }

void lrun_host_account_set_budget(lrun_host_account *a, size_t budget)
{
    pthread_mutex_lock(&a->lock);
    a->budget = budget;
    pthread_mutex_unlock(&a->lock);
}

/* "weights 2.9 GiB, slots 0.2 GiB" (categories holding bytes) into buf. */
static void format_held(const lrun_host_account *a, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int c = 0; c < LRUN_HOST_CATEGORY_COUNT && n < cap; c++) {
        if (!a->held[c]) continue;
        char b[32];
        int w = snprintf(buf + n, cap - n, "%s%s %s", n ? ", " : "", category_names[c],
                         lrun_format_bytes(a->held[c], b, sizeof b));
        if (w < 0) break;
        n += (size_t)w;
    }
    if (!n) snprintf(buf, cap, "nothing");
}

/* The refusal, with the account's lock held. */
static lrun_status refuse(lrun_host_account *a, lrun_host_category c, size_t bytes, const char *what, size_t limit,
                          const char *limit_name)
{
    char lim[32], ask[32], held[32], parts[256];
    lrun_format_bytes(limit, lim, sizeof lim);
    lrun_format_bytes(bytes, ask, sizeof ask);
    lrun_format_bytes(a->total, held, sizeof held);
    format_held(a, parts, sizeof parts);
    a->refused++;
    const size_t free_b = limit > a->total ? limit - a->total : 0;
    return lrun_fail_oom(bytes, free_b, "%s %s: %s %s asked (%s), %s held (%s)", limit_name, lim,
                         category_names[c], ask, what ? what : "an allocation", held, parts);
}

lrun_status lrun_host_account_charge(lrun_host_account *a, lrun_host_category c, size_t bytes, const char *what)
{
    if (!a || !bytes) return LRUN_OK;
    if ((unsigned)c >= LRUN_HOST_CATEGORY_COUNT) c = LRUN_HOST_CATEGORY_WEIGHTS;
    /* the host's memory is read outside the lock: it is slow and needs none */
    size_t avail = 0;
    int cgroup = 0;
    pthread_mutex_lock(&a->lock);
    const size_t budget = a->budget;
    pthread_mutex_unlock(&a->lock);
    if (!budget && bytes >= AVAILABLE_CHECK_BYTES) avail = lrun_host_memory_probe(NULL, NULL, NULL, &cgroup);

    pthread_mutex_lock(&a->lock);
    lrun_status st = LRUN_OK;
    if (a->budget && (bytes > a->budget || a->total > a->budget - bytes))
        st = refuse(a, c, bytes, what, a->budget, "host budget");
    else if (!a->budget && avail && bytes > avail)
        /* what the host can give is what is left: the held bytes are already out of it */
        st = refuse(a, c, bytes, what, a->total + avail,
                    cgroup ? "host memory (memory cgroup's room + held)" : "host memory (MemAvailable + held)");
    if (st == LRUN_OK) {
        a->held[c] += bytes;
        a->total += bytes;
        if (a->total > a->peak) a->peak = a->total;
    }
    pthread_mutex_unlock(&a->lock);
    return st;
}

void lrun_host_account_credit(lrun_host_account *a, lrun_host_category c, size_t bytes)
{
    if (!a || !bytes) return;
    if ((unsigned)c >= LRUN_HOST_CATEGORY_COUNT) c = LRUN_HOST_CATEGORY_WEIGHTS;
    pthread_mutex_lock(&a->lock);
    /* never below zero, even if a caller gives back more than it took */
    const size_t give = bytes < a->held[c] ? bytes : a->held[c];
    a->held[c] -= give;
    a->total -= give;
    pthread_mutex_unlock(&a->lock);
}

size_t lrun_host_account_room(lrun_host_account *a)
{
    if (!a) return SIZE_MAX;
    pthread_mutex_lock(&a->lock);
    const size_t room = !a->budget ? SIZE_MAX : a->budget > a->total ? a->budget - a->total : 0;
    pthread_mutex_unlock(&a->lock);
    return room;
}

void lrun_host_account_get(lrun_host_account *a, lrun_host_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!a) return;
    pthread_mutex_lock(&a->lock);
    out->budget = a->budget;
    out->held = a->total;
    out->peak = a->peak;
    out->refused = a->refused;
    out->weights = a->held[LRUN_HOST_CATEGORY_WEIGHTS];
    out->kv_cache = a->held[LRUN_HOST_CATEGORY_KV];
    out->slots = a->held[LRUN_HOST_CATEGORY_SLOTS];
    out->scratch = a->held[LRUN_HOST_CATEGORY_SCRATCH];
    out->expert_cache = a->held[LRUN_HOST_CATEGORY_EXPERTS];
    pthread_mutex_unlock(&a->lock);
    out->available = lrun_host_memory_available();
}

// ---------------------------------------------------------------- the host's available memory

/* Test overrides of the files read (NULL: the real ones). Set before
 * threads use them (tests), read without a lock. */
static const char *path_meminfo, *path_self_cgroup, *path_cgroup_root;

void lrun_host_memory_set_paths(const char *meminfo_path, const char *self_cgroup_path, const char *cgroup_root)
{
    path_meminfo = meminfo_path;
    path_self_cgroup = self_cgroup_path;
    path_cgroup_root = cgroup_root;
}

/* The first number in a file ("max" and unreadable files: SIZE_MAX). */
static size_t read_number(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return SIZE_MAX;
    unsigned long long v;
    const int ok = fscanf(f, "%llu", &v) == 1;
    fclose(f);
    return ok && v < SIZE_MAX ? (size_t)v : SIZE_MAX;
}

/* The value of key in a "key value" file (memory.stat, /proc/meminfo), 0 when absent. */
static size_t read_key(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    size_t out = 0, klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (strncmp(line, key, klen) == 0 && sscanf(line + klen, " %llu", &v) == 1) {
            out = (size_t)v;
            break;
        }
    }
    fclose(f);
    return out;
}

/* The room of one cgroup directory: limit − (usage − inactive file pages,
 * which the kernel reclaims before it kills), SIZE_MAX when unlimited. */
static size_t cgroup_room(const char *dir, int v2)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, v2 ? "memory.max" : "memory.limit_in_bytes");
    const size_t limit = read_number(p);
    /* v1 writes "no limit" as a page-rounded LONG_MAX */
    if (limit == SIZE_MAX || limit >= ((size_t)1 << 62)) return SIZE_MAX;
    snprintf(p, sizeof p, "%s/%s", dir, v2 ? "memory.current" : "memory.usage_in_bytes");
    size_t usage = read_number(p);
    if (usage == SIZE_MAX) usage = 0;
    snprintf(p, sizeof p, "%s/memory.stat", dir);
    const size_t inactive = read_key(p, v2 ? "inactive_file" : "total_inactive_file");
    usage = inactive < usage ? usage - inactive : 0;
    return limit > usage ? limit - usage : 0;
}

/* The smallest room of the cgroup at rel (under root) and its ancestors. */
static size_t cgroup_path_room(const char *root, const char *rel, int v2)
{
    char dir[4096];
    size_t best = SIZE_MAX;
    snprintf(dir, sizeof dir, "%s%s", root, rel);
    for (;;) {
        size_t len = strlen(dir);
        while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';
        const size_t room = cgroup_room(dir, v2);
        if (room < best) best = room;
        if (len <= strlen(root)) break;
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < strlen(root)) break;
        *slash = '\0';
    }
    return best;
}

/* The memory cgroup's room from /proc/self/cgroup's lines ("N:memory:/p"
 * for v1, "0::/p" for v2), SIZE_MAX when none limits. */
static size_t cgroup_available(const char *self_cgroup, const char *root)
{
    FILE *f = fopen(self_cgroup, "r");
    if (!f) return SIZE_MAX;
    char line[4096], base[4096];
    size_t best = SIZE_MAX;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = '\0';
        const char *ctrl = c1 + 1, *rel = c2 + 1;
        size_t room = SIZE_MAX;
        if (*ctrl == '\0') room = cgroup_path_room(root, rel, 1);
        else if (strstr(ctrl, "memory")) {
            snprintf(base, sizeof base, "%s/memory", root);
            room = cgroup_path_room(base, rel, 0);
        }
        if (room < best) best = room;
    }
    fclose(f);
    return best;
}

size_t lrun_host_memory_probe(const char *meminfo_path, const char *self_cgroup_path, const char *cgroup_root,
                              int *cgroup_limited)
{
    if (!meminfo_path) meminfo_path = path_meminfo ? path_meminfo : "/proc/meminfo";
    if (!self_cgroup_path) self_cgroup_path = path_self_cgroup ? path_self_cgroup : "/proc/self/cgroup";
    if (!cgroup_root) cgroup_root = path_cgroup_root ? path_cgroup_root : "/sys/fs/cgroup";
    if (cgroup_limited) *cgroup_limited = 0;
    size_t avail = read_key(meminfo_path, "MemAvailable:") * 1024;
    const size_t room = cgroup_available(self_cgroup_path, cgroup_root);
    if (room != SIZE_MAX && (!avail || room < avail)) {
        avail = room ? room : 1; /* a full cgroup has 0 left: still "known" */
        if (cgroup_limited) *cgroup_limited = 1;
    }
    return avail;
}

/* Physical memory in bytes (sysconf), 0 when unknown. */
static size_t physical_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
}

size_t lrun_host_memory_available(void)
{
    const size_t avail = lrun_host_memory_probe(NULL, NULL, NULL, NULL);
    /* tests' fake files are not bounded by the machine */
    if (path_meminfo) return avail;
    const size_t phys = physical_bytes();
    return avail && (!phys || avail < phys) ? avail : phys;
}
