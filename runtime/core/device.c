/* device.c — opening a compute device, its byte budget, the names of the
 * tiers, and the allocation and copy entry points of every tier.
 *
 * The budget is kept here for every kind of device; the bytes come from the
 * device's table (device.h): on cpu 64-byte aligned host memory
 * (device_cpu.c), on cuda the pool of cuda/cuda_backend.c. */
#include "core/device.h"

#include "core/checked.h"
#include "core/format_bytes.h"
#include "core/error.h"
#include "core/host_pages.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------- tier names

/* Tiers are the device layer's vocabulary (where bytes live), so their names
 * are kept here; tensor.c uses them, never the other way round. */
static const char *const tier_names[LRUN_TIER_COUNT] = {"device", "pinned", "host", "mmap", "disk"};

const char *lrun_tier_name(lrun_tier tier)
{
    return (unsigned)tier < LRUN_TIER_COUNT ? tier_names[tier] : "unknown";
}

lrun_status lrun_tier_from_name(const char *name, lrun_tier *out)
{
    if (!name) return lrun_fail(LRUN_E_ARG, "lrun_tier_from_name: name is NULL");
    for (int i = 0; i < LRUN_TIER_COUNT; i++) {
        if (strcasecmp(name, tier_names[i]) == 0) {
            *out = (lrun_tier)i;
            return LRUN_OK;
        }
    }
    return lrun_fail(LRUN_E_ARG, "tier \"%.64s\": unknown (expected device, pinned, host, mmap or disk)", name);
}

// ---------------------------------------------------------------- opening

/* "cpu" → -1, "cuda" → 0, "cuda:N" → N; -2 when spec is none of these. */
static int parse_spec(const char *spec)
{
    if (strcmp(spec, "cpu") == 0) return -1;
    if (strcmp(spec, "cuda") == 0) return 0;
    if (strncmp(spec, "cuda:", 5) != 0) return -2;
    const char *p = spec + 5;
    if (*p == '\0' || strlen(p) > 4) return -2;
    int n = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return -2;
        n = n * 10 + (*p - '0');
    }
    return n;
}

lrun_status lrun_device_open(lrun_device **out, const char *spec, size_t budget_bytes)
{
    *out = NULL;
    if (!spec) return lrun_fail(LRUN_E_ARG, "lrun_device_open: spec is NULL (expected \"cpu\", \"cuda\" or \"cuda:N\")");
    int ordinal = parse_spec(spec);
    if (ordinal == -2)
        return lrun_fail(LRUN_E_ARG, "device \"%.64s\": not a device (expected \"cpu\", \"cuda\" or \"cuda:N\")", spec);

    const lrun_device_kind kind = ordinal < 0 ? LRUN_DEVICE_KIND_CPU : LRUN_DEVICE_KIND_CUDA;
    char name[sizeof ((lrun_device *)0)->name];
    if (ordinal < 0) snprintf(name, sizeof name, "cpu");
    else snprintf(name, sizeof name, "cuda:%d", ordinal);
    /* the registry lists only the kinds this build has */
    const lrun_device_iface *iface = lrun_device_iface_for(kind);
    if (!iface) return lrun_fail(LRUN_E_DEVICE, "opening %s: no CUDA device: this build has no CUDA", name);
    lrun_device *d = calloc(1, sizeof *d);
    if (!d) return lrun_fail_oom(sizeof *d, 0, "opening device %s: host memory for the handle", spec);
    d->iface = iface;
    d->kind = kind;
    d->budget = budget_bytes;
    d->cuda_ordinal = ordinal;
    memcpy(d->name, name, sizeof name);
    lrun_status st = iface->open(d, budget_bytes);
    if (st != LRUN_OK) {
        free(d);
        return st;
    }
    *out = d;
    return LRUN_OK;
}

void lrun_device_free(lrun_device *device)
{
    if (!device) return;
    device->iface->close(device);
    free(device);
}

lrun_device_kind lrun_device_kind_of(const lrun_device *device) { return device->kind; }
const char *lrun_device_name(const lrun_device *device) { return device->name; }
size_t lrun_device_capacity(const lrun_device *device) { return device->capacity; }
size_t lrun_device_used(const lrun_device *device) { return __atomic_load_n(&device->used, __ATOMIC_RELAXED); }
size_t lrun_device_peak(const lrun_device *device) { return __atomic_load_n(&device->peak, __ATOMIC_RELAXED); }

void lrun_device_reset_peak(lrun_device *device)
{
    __atomic_store_n(&device->peak, __atomic_load_n(&device->used, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
}

size_t lrun_device_free_bytes(const lrun_device *device)
{
    return device->capacity - lrun_device_used(device);
}

size_t lrun_device_total_memory(const lrun_device *device)
{
    return device->iface->total_memory(device);
}

// ---------------------------------------------------------------- the budget

/* Takes bytes from the budget, or returns 0 when they do not fit. A CAS loop
 * rather than a lock: allocations may come from a prefetch thread too. */
static int budget_take(lrun_device *d, size_t bytes)
{
    size_t used = __atomic_load_n(&d->used, __ATOMIC_RELAXED);
    do {
        if (bytes > d->capacity - used) return 0;
    } while (!__atomic_compare_exchange_n(&d->used, &used, used + bytes, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    size_t now = used + bytes, peak = __atomic_load_n(&d->peak, __ATOMIC_RELAXED);
    while (now > peak && !__atomic_compare_exchange_n(&d->peak, &peak, now, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return 1;
}

static void budget_give(lrun_device *d, size_t bytes)
{
    size_t used = __atomic_load_n(&d->used, __ATOMIC_RELAXED);
    /* Never below zero, even if a caller releases more than it took. */
    while (!__atomic_compare_exchange_n(&d->used, &used, used > bytes ? used - bytes : 0, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
}

/* "of a 64.0 MiB budget" or "of 79.1 GiB capacity", for OOM messages. */
static const char *limit_text(const lrun_device *d, char *buf, size_t cap)
{
    char b[32];
    if (d->capacity == SIZE_MAX) snprintf(buf, cap, "with no budget set");
    else if (!d->budget && d->kind == LRUN_DEVICE_KIND_CPU)
        snprintf(buf, cap, "of %s host memory available at open", lrun_format_bytes(d->capacity, b, sizeof b));
    else if (d->budget && d->budget == d->capacity)
        snprintf(buf, cap, "of a %s budget", lrun_format_bytes(d->capacity, b, sizeof b));
    else snprintf(buf, cap, "of %s capacity", lrun_format_bytes(d->capacity, b, sizeof b));
    return buf;
}

static lrun_status fail_budget(const lrun_device *d, size_t bytes, const char *what, const char *why)
{
    char need[32], avail[32], limit[64];
    size_t free_b = lrun_device_free_bytes(d);
    lrun_format_bytes(bytes, need, sizeof need);
    lrun_format_bytes(free_b, avail, sizeof avail);
    limit_text(d, limit, sizeof limit);
    if (why)
        return lrun_fail_oom(bytes, free_b, "out of memory on %s: %s needs %s, %s free %s: %s", d->name, what, need,
                             avail, limit, why);
    return lrun_fail_oom(bytes, free_b, "out of memory on %s: %s needs %s, %s free %s", d->name, what, need, avail,
                         limit);
}

// ---------------------------------------------------------------- device memory

/* A cpu device's block starts with this header, so that its release gives
 * the host account back the category and bytes it charged (the release
 * knows neither). 64 bytes keep the block 64-byte aligned. */
typedef struct host_block {
    lrun_host_account *account; /* charged, or NULL */
    size_t bytes;               /* charged */
    int category;               /* lrun_host_category */
    char pad[64 - sizeof(void *) - sizeof(size_t) - sizeof(int)];
} host_block;
_Static_assert(sizeof(host_block) == 64, "the header keeps device blocks 64-byte aligned");

static int is_host_device(const lrun_device *d) { return d->kind == LRUN_DEVICE_KIND_CPU; }

/* The table's allocation; on a cpu device behind a header, charged to the host account. */
static lrun_status device_bytes(lrun_device *device, size_t bytes, const char *what, void **out)
{
    if (!is_host_device(device)) return device->iface->alloc(device, bytes, what, out);
    if (bytes > SIZE_MAX - sizeof(host_block))
        return lrun_fail_oom(bytes, 0, "%s on %s: the size overflows", what, device->name);
    const lrun_host_category c = lrun_host_category_of(what);
    /* a bandwidth measurement's buffers live for a few copies and are sized
     * by the planner to what is free: not the model's memory */
    lrun_host_account *a = strncmp(what, "bandwidth measurement", 21) == 0 ? NULL : device->host_account;
    lrun_status st = lrun_host_account_charge(a, c, bytes, what);
    if (st != LRUN_OK) return st;
    void *block = NULL;
    st = device->iface->alloc(device, bytes + sizeof(host_block), what, &block);
    if (st != LRUN_OK) {
        lrun_host_account_credit(a, c, bytes);
        return st;
    }
    host_block *h = block;
    h->account = a;
    h->bytes = bytes;
    h->category = (int)c;
    *out = h + 1;
    return LRUN_OK;
}

lrun_status lrun_device_alloc(lrun_device *device, size_t bytes, const char *what, void **out)
{
    *out = NULL;
    if (!what) what = "an allocation";
    if (!device) return lrun_fail(LRUN_E_ARG, "%s: device memory needs a device (got NULL)", what);
    if (!budget_take(device, bytes)) return fail_budget(device, bytes, what, NULL);

    lrun_status st = device_bytes(device, bytes, what, out);
    if (st == LRUN_OK) return LRUN_OK;
    *out = NULL;
    budget_give(device, bytes);
    /* the host account's refusal names the budget and what is held: kept as it is */
    if (st != LRUN_E_OOM || strncmp(lrun_last_error(), "host ", 5) == 0)
        return st == LRUN_E_OOM ? st : lrun_fail_context(st, "allocating %s on %s", what, device->name);
    char why[512];
    snprintf(why, sizeof why, "%s", lrun_last_error());
    return fail_budget(device, bytes, what, why);
}

void lrun_device_release(lrun_device *device, void *ptr, size_t bytes)
{
    if (!device || !ptr) return;
    if (is_host_device(device)) {
        host_block *h = (host_block *)ptr - 1;
        lrun_host_account_credit(h->account, (lrun_host_category)h->category, h->bytes);
        ptr = h;
    }
    device->iface->release(device, ptr);
    budget_give(device, bytes);
}

// ---------------------------------------------------------------- host tiers

static pthread_once_t pinned_once = PTHREAD_ONCE_INIT;
static const lrun_device_iface *pinned_iface;

static void pinned_probe(void) { pinned_iface = lrun_device_pinned_iface(); }

/* Pinned memory is page-locked only when there is a GPU to DMA from it;
 * otherwise it is ordinary memory, so the tier still works on a laptop. */
static const lrun_device_iface *pinner(void)
{
    pthread_once(&pinned_once, pinned_probe);
    return pinned_iface;
}

/* Host blocks from this size on are checked against available memory. */
#define HOST_CHECK_BYTES ((size_t)64 << 20)

lrun_status lrun_host_alloc(lrun_tier tier, size_t bytes, const char *what, void **out)
{
    *out = NULL;
    if (!what) what = "an allocation";
    if (tier != LRUN_TIER_PINNED && tier != LRUN_TIER_HOST)
        return lrun_fail(LRUN_E_ARG, "%s: host memory of tier %d: only pinned or host", what, (int)tier);
    char need[32], avail_s[32];
    /* Checked first: a lazily committed block past real memory ends in the
     * kernel's OOM killer, not in an error. Reading /proc/meminfo costs
     * microseconds, so only blocks that could matter pay for it. */
    if (bytes >= HOST_CHECK_BYTES) {
        size_t avail = lrun_host_memory_available();
        if (avail && bytes > avail)
            return lrun_fail_oom(bytes, avail, "out of memory in %s memory: %s needs %s, the host has %s available",
                                 lrun_tier_name(tier), what, lrun_format_bytes(bytes, need, sizeof need),
                                 lrun_format_bytes(avail, avail_s, sizeof avail_s));
    }
    if (tier == LRUN_TIER_PINNED && pinner()) {
        lrun_status st = pinner()->host_alloc(bytes, out);
        if (st != LRUN_OK) {
            *out = NULL;
            return lrun_fail_context(st, "%s (%s of pinned memory)", what,
                                     lrun_format_bytes(bytes, need, sizeof need));
        }
        return LRUN_OK;
    }
    size_t rounded;
    int err =
        lrun_size_align_up(bytes ? bytes : 1, LRUN_HOST_ALIGN, &rounded) ? lrun_host_memalign(out, rounded) : ENOMEM;
    if (err != 0) {
        *out = NULL;
        return lrun_fail_oom(bytes, 0, "out of memory in %s memory: %s needs %s: %s", lrun_tier_name(tier), what,
                             lrun_format_bytes(bytes, need, sizeof need), strerror(err));
    }
    return LRUN_OK;
}

void lrun_host_release(lrun_tier tier, void *ptr)
{
    if (!ptr) return;
    if (tier == LRUN_TIER_PINNED && pinner()) pinner()->host_free(ptr);
    else free(ptr);
}

lrun_status lrun_device_host_alloc(lrun_device *device, lrun_host_category c, lrun_tier tier, size_t bytes,
                                   const char *what, void **out)
{
    *out = NULL;
    lrun_host_account *a = device ? device->host_account : NULL;
    lrun_status st = lrun_host_account_charge(a, c, bytes, what);
    if (st != LRUN_OK) return st;
    st = lrun_host_alloc(tier, bytes, what, out);
    if (st != LRUN_OK) lrun_host_account_credit(a, c, bytes);
    return st;
}

void lrun_device_host_release(lrun_device *device, lrun_host_category c, lrun_tier tier, void *ptr, size_t bytes)
{
    if (!ptr) return;
    lrun_host_release(tier, ptr);
    lrun_host_account_credit(device ? device->host_account : NULL, c, bytes);
}

// ---------------------------------------------------------------- copies

lrun_status lrun_copy_bytes(lrun_device *device, void *dst, lrun_tier dst_tier, const void *src,
                            lrun_tier src_tier, size_t bytes)
{
    if ((unsigned)dst_tier >= LRUN_TIER_COUNT || (unsigned)src_tier >= LRUN_TIER_COUNT)
        return lrun_fail(LRUN_E_ARG, "copy of %zu bytes: tier %d to %d: no such tier", bytes, (int)src_tier,
                         (int)dst_tier);
    if (dst_tier == LRUN_TIER_MMAP || dst_tier == LRUN_TIER_DISK)
        return lrun_fail(LRUN_E_ARG, "copy of %zu bytes: the %s tier is the read-only model file", bytes,
                         lrun_tier_name(dst_tier));
    /* a disk tier's bytes are read through its mapping here (the engines read it with direct I/O) */
    if (src_tier == LRUN_TIER_MMAP || src_tier == LRUN_TIER_DISK) src_tier = LRUN_TIER_HOST;
    if (bytes == 0) return LRUN_OK;
    if (!dst || !src) return lrun_fail(LRUN_E_ARG, "copy of %zu bytes: %s pointer is NULL", bytes, dst ? "source" : "destination");
    int dst_dev = dst_tier == LRUN_TIER_DEVICE, src_dev = src_tier == LRUN_TIER_DEVICE;
    if ((dst_dev || src_dev) && !device)
        return lrun_fail(LRUN_E_ARG, "copy of %zu bytes %s to %s: a device-tier side needs its device", bytes,
                         lrun_tier_name(src_tier), lrun_tier_name(dst_tier));
    if (dst_dev || src_dev) {
        lrun_copy_kind kind = dst_dev && src_dev ? LRUN_COPY_DEVICE_TO_DEVICE
                              : dst_dev          ? LRUN_COPY_HOST_TO_DEVICE
                                                 : LRUN_COPY_DEVICE_TO_HOST;
        lrun_status st = device->iface->memcpy(device, dst, src, bytes, kind);
        if (st != LRUN_OK)
            return lrun_fail_context(st, "copy of %zu bytes %s to %s on %s", bytes, lrun_tier_name(src_tier),
                                     lrun_tier_name(dst_tier), device->name);
        return LRUN_OK;
    }
    memmove(dst, src, bytes);
    return LRUN_OK;
}

// ---------------------------------------------------------------- bandwidth

static double clock_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A buffer of the tier for a measurement: device memory from the budget, or host memory. */
static lrun_status bw_alloc(lrun_device *d, lrun_tier tier, size_t bytes, void **out)
{
    if (tier == LRUN_TIER_DEVICE) return lrun_device_alloc(d, bytes, "bandwidth measurement buffer", out);
    lrun_status st = lrun_host_alloc(tier, bytes, "bandwidth measurement buffer", out);
    if (st == LRUN_OK) memset(*out, 1, bytes); /* touch every page: first-touch faults are not bandwidth */
    return st;
}

static void bw_release(lrun_device *d, lrun_tier tier, void *p, size_t bytes)
{
    if (tier == LRUN_TIER_DEVICE) lrun_device_release(d, p, bytes);
    else lrun_host_release(tier, p);
}

lrun_status lrun_device_measure_bandwidth(lrun_device *device, lrun_tier from_tier, lrun_tier to_tier, size_t bytes,
                                          double *bytes_per_s)
{
    *bytes_per_s = 0;
    if (!device) return lrun_fail(LRUN_E_ARG, "measuring bandwidth: device is NULL");
    if ((unsigned)from_tier >= LRUN_TIER_COUNT || (unsigned)to_tier >= LRUN_TIER_COUNT || to_tier == LRUN_TIER_MMAP ||
        to_tier == LRUN_TIER_DISK)
        return lrun_fail(LRUN_E_ARG, "measuring bandwidth from tier %d to tier %d: the source is any tier, the "
                         "destination device, pinned or host", (int)from_tier, (int)to_tier);
    if (bytes < 4096 || bytes > ((size_t)1 << 34))
        return lrun_fail(LRUN_E_ARG, "measuring bandwidth: %zu bytes is outside [4 KiB, 16 GiB]", bytes);
    /* the mmap tier is page-cache memory once read: measured as host */
    const lrun_tier src_tier = from_tier == LRUN_TIER_MMAP || from_tier == LRUN_TIER_DISK ? LRUN_TIER_HOST : from_tier;
    void *src = NULL, *dst = NULL;
    lrun_status st = bw_alloc(device, src_tier, bytes, &src);
    if (st == LRUN_OK) st = bw_alloc(device, to_tier, bytes, &dst);
    double best = 0;
    /* one warm-up copy, then the best of three */
    for (int i = 0; i < 4 && st == LRUN_OK; i++) {
        const double t0 = clock_seconds();
        st = lrun_copy_bytes(device, dst, to_tier, src, src_tier, bytes);
        const double dt = clock_seconds() - t0;
        if (st == LRUN_OK && i > 0 && dt > 0 && (double)bytes / dt > best) best = (double)bytes / dt;
    }
    if (dst) bw_release(device, to_tier, dst, bytes);
    if (src) bw_release(device, src_tier, src, bytes);
    /* the buffers' arenas would otherwise stay reserved and take small blocks later */
    device->iface->trim(device);
    if (st != LRUN_OK)
        return lrun_fail_context(st, "measuring bandwidth %s to %s on %s", lrun_tier_name(from_tier),
                                 lrun_tier_name(to_tier), device->name);
    *bytes_per_s = best;
    return LRUN_OK;
}
