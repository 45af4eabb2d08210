/* host_account.h — the host memory a model and its engines hold, by
 * category, charged before each allocation is made.
 *
 * One account per model (model.c embeds it, its device points to it). Every
 * host allocation lrun makes for the model passes through one charge:
 *   - a cpu device's memory (lrun_device_alloc: weights, slots, KV cache,
 *     scratch): it is host memory;
 *   - pinned and host memory of any device (lrun_device_host_alloc: weights
 *     in the pinned and host tiers, staging, offloaded KV stores, host
 *     matmul buffers).
 * With a host budget a charge past it is LRUN_E_OOM naming what was asked
 * and what is held ("host budget 4.0 GiB: KV cache 1.5 GiB asked, 3.1 GiB
 * held (weights 2.9 GiB, slots 0.2 GiB)"); without one, a large charge is
 * checked against the memory the host can still give (MemAvailable, or the
 * memory cgroup's room when smaller), so an impossible request is an error
 * and never the kernel's OOM killer. */
#ifndef LRUN_HOST_ACCOUNT_H
#define LRUN_HOST_ACCOUNT_H

#include "lrun.h"

#include <pthread.h>
#include <stddef.h>

/* What host bytes are for. The order is lrun_host_stats' (lrun.h). */
typedef enum lrun_host_category {
    LRUN_HOST_CATEGORY_WEIGHTS = 0, /* tensors copied off the mapping: device (cpu), pinned, host tiers */
    LRUN_HOST_CATEGORY_KV = 1,      /* KV caches and offloaded KV stores */
    LRUN_HOST_CATEGORY_SLOTS = 2,   /* streaming slots and staging buffers */
    LRUN_HOST_CATEGORY_SCRATCH = 3, /* engine scratch, host matmul buffers, packed decode scratch */
    LRUN_HOST_CATEGORY_EXPERTS = 4, /* expert caches */
    LRUN_HOST_CATEGORY_COUNT = 5
} lrun_host_category;

typedef struct lrun_host_account {
    pthread_mutex_t lock;                        /* charges come from prefetch threads too */
    size_t budget;                               /* bytes; 0 = no budget (physical memory bounds) */
    size_t held[LRUN_HOST_CATEGORY_COUNT];       /* bytes held now, per category */
    size_t total;                                /* sum of held, bytes */
    size_t peak;                                 /* high-water mark of total, bytes */
    size_t refused;                              /* charges refused so far */
} lrun_host_account;

void lrun_host_account_init(lrun_host_account *a);
void lrun_host_account_destroy(lrun_host_account *a);
void lrun_host_account_set_budget(lrun_host_account *a, size_t budget);

/* Charges bytes of category c before they are allocated; what names them
 * ("KV cache block"). LRUN_E_OOM (nothing charged) past the budget, or,
 * without one, past the host's available memory. a NULL: no account, OK. */
lrun_status lrun_host_account_charge(lrun_host_account *a, lrun_host_category c, size_t bytes, const char *what);
/* Gives back a charge (after the free, or when the allocation failed). */
void lrun_host_account_credit(lrun_host_account *a, lrun_host_category c, size_t bytes);
/* Bytes the budget has left (budget − held, 0 when past it); SIZE_MAX
 * without a budget or without an account (a NULL). What temporary buffers
 * (the loader's staging) size themselves from. */
size_t lrun_host_account_room(lrun_host_account *a);

/* The category of a cpu device allocation, from the name its caller gives
 * it (lrun_device_alloc has no other way to say): "KV …" is the KV cache,
 * "… slot…"/"… staging…" slots, "… scratch…" scratch, "expert cache…"
 * experts, anything else weights. */
lrun_host_category lrun_host_category_of(const char *what);
const char *lrun_host_category_name(lrun_host_category c);

/* A snapshot for m:stats() (lrun_model_host_stats). */
void lrun_host_account_get(lrun_host_account *a, lrun_host_stats *out);

// ---------------------------------------------------------------- the host's available memory

/* Bytes of host memory the kernel can still give without swapping or a
 * cgroup OOM kill (lrun_host_memory_probe on the real paths, at most physical
 * memory); 0 when unknown. */
size_t lrun_host_memory_available(void);

/* Bytes the host can still give without swapping or a cgroup OOM kill:
 * MemAvailable of meminfo_path, lowered to the memory cgroup's room
 * (limit − usage + inactive file pages) of the cgroup self_cgroup_path names
 * under cgroup_root (v1 memory.limit_in_bytes/usage_in_bytes or v2
 * memory.max/memory.current); 0 when nothing could be read. *cgroup_limited
 * (may be NULL) is set to 1 when the cgroup gave the figure. Pure in its
 * paths, so tests give it files of their own. */
size_t lrun_host_memory_probe(const char *meminfo_path, const char *self_cgroup_path, const char *cgroup_root,
                              int *cgroup_limited);

/* Tests: makes lrun_host_memory_available read these paths (NULL: the
 * real /proc/meminfo, /proc/self/cgroup, /sys/fs/cgroup). */
void lrun_host_memory_set_paths(const char *meminfo_path, const char *self_cgroup_path, const char *cgroup_root);

#endif
