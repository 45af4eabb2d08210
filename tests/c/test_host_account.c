/* test_host_account.c — the host account (core/host_account.c): charges by
 * category, the budget's refusal and its message, the peak; the host's
 * available memory from fake meminfo and cgroup v1/v2 files; a cpu device's
 * allocations charged and refused through lrun_device_alloc. */
#include "check.h"

#include "core/device.h"
#include "core/host_account.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB ((size_t)1 << 20)

static char dir[256];

/* Writes text to dir/rel (its folders made). */
static void put(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    for (char *s = p + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        mkdir(p, 0700);
        *s = '/';
    }
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static const char *at(const char *rel)
{
    static char p[8][512];
    static int i;
    i = (i + 1) % 8;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, rel);
    return p[i];
}

static void test_charges(void)
{
    lrun_host_account a;
    lrun_host_account_init(&a);
    CHECK("no budget: a small charge is taken", lrun_host_account_charge(&a, LRUN_HOST_CATEGORY_WEIGHTS, 1000, "w") == LRUN_OK);
    lrun_host_account_set_budget(&a, 4000);
    CHECK("a charge within the budget", lrun_host_account_charge(&a, LRUN_HOST_CATEGORY_SLOTS, 2000, "s") == LRUN_OK);
    CHECK("a charge past the budget is OOM",
          lrun_host_account_charge(&a, LRUN_HOST_CATEGORY_KV, 1500, "KV cache block") == LRUN_E_OOM);
    const char *msg = lrun_last_error();
    printf("# %s\n", msg);
    CHECK("the refusal names the budget, what was asked and what is held",
          strstr(msg, "host budget 3.9 KiB: KV cache 1.5 KiB asked (KV cache block), 2.9 KiB held (weights 1000 B, "
                      "slots 2.0 KiB)") != NULL);
    lrun_host_stats s;
    lrun_host_account_get(&a, &s);
    CHECK("a refusal charges nothing", s.held == 3000 && s.kv_cache == 0 && s.refused == 1);
    CHECK("an exact fit is taken", lrun_host_account_charge(&a, LRUN_HOST_CATEGORY_KV, 1000, "kv") == LRUN_OK);
    lrun_host_account_credit(&a, LRUN_HOST_CATEGORY_SLOTS, 2000);
    lrun_host_account_credit(&a, LRUN_HOST_CATEGORY_SLOTS, 5);  /* more than held: stays at 0 */
    lrun_host_account_get(&a, &s);
    CHECK("credits give back by category, never below zero", s.held == 2000 && s.slots == 0 && s.weights == 1000);
    CHECK("the peak stays", s.peak == 4000 && s.budget == 4000);
    CHECK("a huge charge does not wrap",
          lrun_host_account_charge(&a, LRUN_HOST_CATEGORY_KV, SIZE_MAX - 10, "huge") == LRUN_E_OOM);
    CHECK("a NULL account takes anything", lrun_host_account_charge(NULL, 0, SIZE_MAX, "x") == LRUN_OK);
    lrun_host_account_destroy(&a);

    CHECK("categories from names", lrun_host_category_of("KV cache block") == LRUN_HOST_CATEGORY_KV &&
                                       lrun_host_category_of("weight streaming slots (x)") == LRUN_HOST_CATEGORY_SLOTS &&
                                       lrun_host_category_of("engine scratch") == LRUN_HOST_CATEGORY_SCRATCH &&
                                       lrun_host_category_of("expert cache") == LRUN_HOST_CATEGORY_EXPERTS &&
                                       lrun_host_category_of("tensor blk.0.attn_q.weight") == LRUN_HOST_CATEGORY_WEIGHTS);
}

static void test_probe(void)
{
    put("meminfo", "MemTotal: 99999999 kB\nMemFree: 10 kB\nMemAvailable: 1000 kB\n");
    put("none", "");
    int cg = -1;
    CHECK("MemAvailable alone", lrun_host_memory_probe(at("meminfo"), at("none"), at("root"), &cg) == 1024000 && cg == 0);

    /* v1: limit 600000, usage 500000 of which 100000 inactive file pages: room 200000 */
    put("self_v1", "12:cpu,cpuacct:/x\n4:memory:/lrun/t\n");
    put("root/memory/lrun/t/memory.limit_in_bytes", "600000\n");
    put("root/memory/lrun/t/memory.usage_in_bytes", "500000\n");
    put("root/memory/lrun/t/memory.stat", "cache 5\ntotal_inactive_file 100000\n");
    put("root/memory/lrun/memory.limit_in_bytes", "9223372036854771712\n"); /* v1's "no limit" */
    CHECK("v1 cgroup room", lrun_host_memory_probe(at("meminfo"), at("self_v1"), at("root"), &cg) == 200000 && cg == 1);
    /* an ancestor with less room wins */
    put("root/memory/lrun/memory.limit_in_bytes", "150000\n");
    put("root/memory/lrun/memory.usage_in_bytes", "50000\n");
    CHECK("v1 ancestor's room", lrun_host_memory_probe(at("meminfo"), at("self_v1"), at("root"), NULL) == 100000);

    /* v2: max 900000, current 300000, inactive_file 100000; the parent unlimited */
    put("self_v2", "0::/a/b\n");
    put("root2/a/b/memory.max", "900000\n");
    put("root2/a/b/memory.current", "300000\n");
    put("root2/a/b/memory.stat", "anon 1\ninactive_file 100000\n");
    put("root2/a/memory.max", "max\n");
    CHECK("v2 cgroup room", lrun_host_memory_probe(at("meminfo"), at("self_v2"), at("root2"), &cg) == 700000 && cg == 1);
    put("root2/a/b/memory.max", "max\n");
    CHECK("v2 unlimited: MemAvailable", lrun_host_memory_probe(at("meminfo"), at("self_v2"), at("root2"), &cg) == 1024000 && cg == 0);
    put("root2/a/b/memory.max", "200000\n");
    CHECK("v2 full cgroup: nothing left", lrun_host_memory_probe(at("meminfo"), at("self_v2"), at("root2"), NULL) == 1);
}

/* A cpu device with an account, the host's memory a fake 10 MiB. */
static void test_device(void)
{
    char text[128];
    snprintf(text, sizeof text, "MemAvailable: %zu kB\n", (size_t)10 * 1024);
    put("meminfo10", text);
    lrun_host_memory_set_paths(at("meminfo10"), at("none"), at("root"));
    CHECK("the fake source is read", lrun_host_memory_available() == 10 * MiB);

    lrun_device *d = NULL;
    CHECK("cpu opens", lrun_device_open(&d, "cpu", 0) == LRUN_OK);
    if (!d) return;
    CHECK("its capacity is the fake available memory", lrun_device_capacity(d) == 10 * MiB);
    lrun_host_account a;
    lrun_host_account_init(&a);
    d->host_account = &a;
    void *p = NULL, *q = NULL;
    CHECK("a block within what is available", lrun_device_alloc(d, 4 * MiB, "KV cache block", &p) == LRUN_OK && p);
    CHECK("64-byte aligned", ((uintptr_t)p & 63) == 0);
    lrun_host_stats s;
    lrun_host_account_get(&a, &s);
    CHECK("charged as KV cache", s.kv_cache == 4 * MiB && s.held == 4 * MiB);
    /* no budget: the account refuses what the host does not have (the device budget would too; the account first names it) */
    d->capacity = SIZE_MAX;
    CHECK("past the host's memory: OOM", lrun_device_alloc(d, 12 * MiB, "engine scratch", &q) == LRUN_E_OOM && !q);
    printf("# %s\n", lrun_last_error());
    CHECK("the message names the host memory and what is held",
          strstr(lrun_last_error(), "host memory (MemAvailable + held) 14.0 MiB: scratch 12.0 MiB asked (engine scratch), "
                                    "4.0 MiB held (KV cache 4.0 MiB)") != NULL);
    CHECK("the device budget gave back its take", lrun_device_used(d) == 4 * MiB);
    lrun_host_account_set_budget(&a, 5 * MiB);
    CHECK("past the host budget: OOM", lrun_device_alloc(d, 2 * MiB, "engine scratch", &q) == LRUN_E_OOM && !q);
    CHECK("the budget's message", strstr(lrun_last_error(), "host budget 5.0 MiB: scratch 2.0 MiB asked") != NULL);
    lrun_device_release(d, p, 4 * MiB);
    lrun_host_account_get(&a, &s);
    CHECK("the release gives the account back", s.held == 0 && s.kv_cache == 0 && lrun_device_used(d) == 0);
    void *h = NULL;
    CHECK("pinned memory is charged", lrun_device_host_alloc(d, LRUN_HOST_CATEGORY_SLOTS, LRUN_TIER_PINNED, 3 * MiB,
                                                             "streaming staging", &h) == LRUN_OK && h);
    CHECK("and refused past the budget", lrun_device_host_alloc(d, LRUN_HOST_CATEGORY_KV, LRUN_TIER_PINNED, 3 * MiB,
                                                                "offloaded KV cache", &q) == LRUN_E_OOM && !q);
    lrun_device_host_release(d, LRUN_HOST_CATEGORY_SLOTS, LRUN_TIER_PINNED, h, 3 * MiB);
    lrun_host_account_get(&a, &s);
    CHECK("its release gives it back", s.held == 0 && s.peak == 4 * MiB && s.refused == 3);
    lrun_device_free(d);
    lrun_host_account_destroy(&a);
    lrun_host_memory_set_paths(NULL, NULL, NULL);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/lrun_host_account_XXXXXX");
    if (!mkdtemp(dir)) {
        printf("not ok 1 - a temporary folder\n1..1\n");
        return 1;
    }
    test_charges();
    test_probe();
    test_device();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return CHECK_DONE();
}
