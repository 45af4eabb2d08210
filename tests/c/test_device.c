/* test_device.c — device budgets and OOM reports, host tiers, copies, cpu
 * streams and events, and the pool's free-list allocator on a host arena. */
#include "check.h"
#include "core/pool.h"
#include "core/device.h"
#include "core/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MiB ((size_t)1 << 20)
#define KiB ((size_t)1 << 10)

// ---------------------------------------------------------------- devices and budgets

static void test_open(void)
{
    lrun_device *d = NULL;
    CHECK("open cpu", lrun_device_open(&d, "cpu", 0) == LRUN_OK && d);
    CHECK("cpu kind and name", lrun_device_kind_of(d) == LRUN_DEVICE_KIND_CPU && !strcmp(lrun_device_name(d), "cpu"));
    CHECK("unbudgeted cpu capacity is the host's available memory, not unlimited (issue 16)",
          lrun_device_capacity(d) < SIZE_MAX && lrun_device_capacity(d) <= lrun_device_total_memory(d));
    CHECK("cpu physical memory is reported", lrun_device_total_memory(d) > 64 * MiB);
    CHECK("fresh device holds nothing", lrun_device_used(d) == 0 && lrun_device_peak(d) == 0);
    void *p = NULL;
    CHECK("unbudgeted alloc", lrun_device_alloc(d, 1000, "scratch", &p) == LRUN_OK && p);
    CHECK("cpu device memory is 64-byte aligned", ((uintptr_t)p & 63) == 0);
    if (p) memset(p, 0xab, 1000);
    CHECK("used counts the bytes asked for", lrun_device_used(d) == 1000);
    lrun_device_release(d, p, 1000);
    CHECK("release gives the bytes back", lrun_device_used(d) == 0 && lrun_device_peak(d) == 1000);
    lrun_device_free(d);

    static const char *const bad[] = {"cuda:x", "tpu", "cuda:", "cuda:-1", "", "CPU0", "cuda:12345"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d = (lrun_device *)1;
        lrun_status st = lrun_device_open(&d, bad[i], 0);
        char name[64];
        snprintf(name, sizeof name, "spec \"%s\" is LRUN_E_ARG naming it", bad[i]);
        char quoted[32];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
        CHECK(name, st == LRUN_E_ARG && d == NULL && strstr(lrun_last_error(), quoted));
    }
}

static void test_cuda_absent(void)
{
    if (lrun_cuda_device_count() > 0) {
        printf("ok %d - cuda open without a GPU # SKIP a GPU is present\n", ++check_count);
        return;
    }
    lrun_device *d = (lrun_device *)1;
    lrun_status st = lrun_device_open(&d, "cuda", 0);
    CHECK("cuda without a GPU is LRUN_E_DEVICE", st == LRUN_E_DEVICE && d == NULL);
    const char *msg = lrun_last_error();
    CHECK("message says why (no CUDA device / cudaGetDeviceCount)",
          strstr(msg, "no CUDA device") || strstr(msg, "cudaGetDeviceCount"));
    CHECK("message names the device", strstr(msg, "cuda:0") != NULL);
    st = lrun_device_open(&d, "cuda:1", 1 << 20);
    CHECK("cuda:1 without a GPU is LRUN_E_DEVICE", st == LRUN_E_DEVICE && d == NULL);
    if (!lrun_built_with_cuda())
        CHECK("CPU-only build says so", strstr(lrun_last_error(), "this build has no CUDA") != NULL);
}

static void test_budget(void)
{
    lrun_device *d = NULL;
    CHECK("open cpu with a 64 MiB budget", lrun_device_open(&d, "cpu", 64 * MiB) == LRUN_OK);
    CHECK("budget is the capacity", lrun_device_capacity(d) == 64 * MiB && lrun_device_free_bytes(d) == 64 * MiB);
    /* Leave 3.1 MiB free: 3,250,586 bytes print as 3.1 MiB. */
    size_t big = 64 * MiB - 3250586;
    void *w = NULL, *kv = (void *)1, *tail = NULL;
    CHECK("weights fit", lrun_device_alloc(d, big, "weights", &w) == LRUN_OK && w);
    lrun_status st = lrun_device_alloc(d, 24 * MiB, "KV cache", &kv);
    CHECK("beyond the budget is LRUN_E_OOM", st == LRUN_E_OOM && kv == NULL);
    CHECK("OOM message names what, the device, sizes and the budget",
          !strcmp(lrun_last_error(), "out of memory on cpu: KV cache needs 24.0 MiB, 3.1 MiB free of a 64.0 MiB budget"));
    if (strcmp(lrun_last_error(), "out of memory on cpu: KV cache needs 24.0 MiB, 3.1 MiB free of a 64.0 MiB budget"))
        printf("# message: %s\n", lrun_last_error());
    CHECK("OOM records the bytes requested", lrun_last_oom_requested() == 24 * MiB);
    CHECK("OOM records the bytes free", lrun_last_oom_free() == 3250586);
    CHECK("a failed alloc takes nothing", lrun_device_used(d) == big);
    CHECK("exactly the rest fits", lrun_device_alloc(d, 3250586, "tail", &tail) == LRUN_OK);
    CHECK("budget full", lrun_device_free_bytes(d) == 0 && lrun_device_peak(d) == 64 * MiB);
    CHECK("one more byte does not", lrun_device_alloc(d, 1, "one byte", &kv) == LRUN_E_OOM);
    lrun_device_release(d, w, big);
    lrun_device_release(d, tail, 3250586);
    CHECK("all given back, peak kept", lrun_device_used(d) == 0 && lrun_device_peak(d) == 64 * MiB);
    void *z = NULL;
    CHECK("zero bytes gives a pointer", lrun_device_alloc(d, 0, "empty", &z) == LRUN_OK && z);
    lrun_device_release(d, z, 0);
    lrun_device_release(d, NULL, 0); /* a no-op */
    lrun_device_free(d);
    lrun_device_free(NULL);
}

// ---------------------------------------------------------------- host tiers and copies

static void test_host_and_copy(void)
{
    void *a = NULL, *b = NULL, *m = (void *)1;
    CHECK("pinned alloc", lrun_host_alloc(LRUN_TIER_PINNED, 4096, "staging", &a) == LRUN_OK && a);
    CHECK("host alloc", lrun_host_alloc(LRUN_TIER_HOST, 4096, "buffer", &b) == LRUN_OK && b);
    CHECK("host memory is 64-byte aligned", ((uintptr_t)a & 63) == 0 && ((uintptr_t)b & 63) == 0);
    CHECK("mmap is not an allocatable tier", lrun_host_alloc(LRUN_TIER_MMAP, 16, "x", &m) == LRUN_E_ARG && !m);
    CHECK("device is not a host tier", lrun_host_alloc(LRUN_TIER_DEVICE, 16, "x", &m) == LRUN_E_ARG);
    for (int i = 0; i < 4096; i++) ((unsigned char *)a)[i] = (unsigned char)(i * 7);
    CHECK("pinned to host copy", lrun_copy_bytes(NULL, b, LRUN_TIER_HOST, a, LRUN_TIER_PINNED, 4096) == LRUN_OK &&
                                     !memcmp(a, b, 4096));
    CHECK("copy into mmap is refused", lrun_copy_bytes(NULL, b, LRUN_TIER_MMAP, a, LRUN_TIER_HOST, 16) == LRUN_E_ARG);
    CHECK("device side without a device is refused",
          lrun_copy_bytes(NULL, b, LRUN_TIER_DEVICE, a, LRUN_TIER_HOST, 16) == LRUN_E_ARG);
    lrun_device *d = NULL;
    void *dv = NULL;
    lrun_device_open(&d, "cpu", 1 * MiB);
    lrun_device_alloc(d, 4096, "dev", &dv);
    memset(b, 0, 4096);
    CHECK("host to cpu-device and back",
          lrun_copy_bytes(d, dv, LRUN_TIER_DEVICE, a, LRUN_TIER_HOST, 4096) == LRUN_OK &&
              lrun_copy_bytes(d, b, LRUN_TIER_HOST, dv, LRUN_TIER_DEVICE, 4096) == LRUN_OK && !memcmp(a, b, 4096));
    CHECK("zero-byte copy is fine", lrun_copy_bytes(NULL, b, LRUN_TIER_HOST, a, LRUN_TIER_HOST, 0) == LRUN_OK);
    lrun_device_release(d, dv, 4096);
    lrun_device_free(d);
    lrun_host_release(LRUN_TIER_PINNED, a);
    lrun_host_release(LRUN_TIER_HOST, b);
}

// ---------------------------------------------------------------- streams and events (cpu)

static void test_streams(void)
{
    lrun_device *d = NULL, *d2 = NULL;
    lrun_stream *s = NULL, *s2 = NULL;
    lrun_event *e = NULL;
    lrun_device_open(&d, "cpu", 0);
    lrun_device_open(&d2, "cpu", 0);
    CHECK("stream init", lrun_stream_init(&s, d) == LRUN_OK && s);
    CHECK("event init", lrun_event_init(&e, d) == LRUN_OK && e);
    CHECK("stream init without a device is LRUN_E_ARG", lrun_stream_init(&s2, NULL) == LRUN_E_ARG && !s2);
    CHECK("cpu stream sync", lrun_stream_sync(s) == LRUN_OK);
    CHECK("waiting on a never-recorded event is LRUN_E_ARG", lrun_stream_wait_event(s, e) == LRUN_E_ARG &&
                                                                  strstr(lrun_last_error(), "never recorded"));
    CHECK("syncing a never-recorded event is LRUN_E_ARG", lrun_event_sync(e) == LRUN_E_ARG);
    CHECK("record", lrun_event_record(e, s) == LRUN_OK);
    CHECK("wait after record", lrun_stream_wait_event(s, e) == LRUN_OK);
    CHECK("event sync after record", lrun_event_sync(e) == LRUN_OK);
    CHECK("NULL stream is the default stream", lrun_event_record(e, NULL) == LRUN_OK &&
                                                   lrun_stream_wait_event(NULL, e) == LRUN_OK);
    lrun_stream_init(&s2, d2);
    CHECK("recording on another device's stream is LRUN_E_ARG", lrun_event_record(e, s2) == LRUN_E_ARG);
    CHECK("a cpu stream has no CUDA handle", lrun_stream_handle(s) == NULL && lrun_stream_device(s) == d);
    CHECK("NULL stream sync is LRUN_E_ARG", lrun_stream_sync(NULL) == LRUN_E_ARG);
    lrun_event_free(e);
    lrun_stream_free(s);
    lrun_stream_free(s2);
    lrun_device_free(d);
    lrun_device_free(d2);
}

// ---------------------------------------------------------------- the pool on host arenas

typedef struct {
    int reserves, unreserves, fail;
} arena_src;

static lrun_status host_reserve(void *ctx, size_t bytes, void **base)
{
    arena_src *src = ctx;
    if (src->fail) return lrun_fail_oom(bytes, 0, "test arena refused");
    *base = aligned_alloc(256, bytes);
    if (!*base) return lrun_fail_oom(bytes, 0, "test arena: aligned_alloc");
    src->reserves++;
    return LRUN_OK;
}

static void host_unreserve(void *ctx, void *base)
{
    ((arena_src *)ctx)->unreserves++;
    free(base);
}

static void test_pool_basic(void)
{
    arena_src src = {0};
    lrun_pool pool;
    lrun_pool_init(&pool, 1 * MiB, 256 * KiB, 256, host_reserve, host_unreserve, &src);
    CHECK("pool reserves lazily", pool.reserved == 0 && src.reserves == 0);
    void *p[4];
    int ok = 1;
    for (int i = 0; i < 4; i++) ok &= lrun_pool_alloc(&pool, 64 * KiB, "quarter", &p[i]) == LRUN_OK;
    CHECK("four quarters of one arena", ok && src.reserves == 1 && pool.reserved == 256 * KiB);
    CHECK("first fit packs them in address order", (char *)p[1] == (char *)p[0] + 64 * KiB &&
                                                       (char *)p[3] == (char *)p[0] + 192 * KiB);
    CHECK("arena full: no free block", lrun_pool_free_block_count(&pool) == 0);
    lrun_pool_release(&pool, p[0]);
    lrun_pool_release(&pool, p[2]);
    CHECK("two holes", lrun_pool_free_block_count(&pool) == 2 && pool.in_use == 128 * KiB);
    void *half = NULL;
    CHECK("128 KiB does not fit a 64 KiB hole: a second arena",
          lrun_pool_alloc(&pool, 128 * KiB, "half", &half) == LRUN_OK && lrun_pool_arena_count(&pool) == 2);
    void *small = NULL;
    CHECK("a small block takes the first hole", lrun_pool_alloc(&pool, 100, "small", &small) == LRUN_OK &&
                                                    (small == p[0] || small == p[2]));
    CHECK("blocks are 256-byte aligned", ((uintptr_t)small & 255) == 0 && ((uintptr_t)half & 255) == 0);
    CHECK("size rounds up to the granule", pool.in_use == 128 * KiB + 128 * KiB + 256);
    lrun_pool_release(&pool, small);
    lrun_pool_release(&pool, p[1]);
    /* p[0], p[1], p[2] now one free run; p[3] still used. */
    CHECK("neighbours coalesce on release", lrun_pool_largest_free(&pool) >= 192 * KiB);
    void *three = NULL;
    CHECK("a 192 KiB block fits the healed run",
          lrun_pool_alloc(&pool, 192 * KiB, "three quarters", &three) == LRUN_OK && three == p[0]);
    CHECK("double free is LRUN_E_ARG", lrun_pool_release(&pool, p[1]) == LRUN_E_ARG);
    int x;
    CHECK("foreign pointer is LRUN_E_ARG", lrun_pool_release(&pool, &x) == LRUN_E_ARG);
    CHECK("interior pointer is LRUN_E_ARG", lrun_pool_release(&pool, (char *)three + 256) == LRUN_E_ARG);
    lrun_pool_release(&pool, three);
    lrun_pool_release(&pool, p[3]);
    lrun_pool_release(&pool, half);
    CHECK("all free: one block per arena", lrun_pool_free_block_count(&pool) == lrun_pool_arena_count(&pool) &&
                                               pool.in_use == 0);
    lrun_pool_trim(&pool);
    CHECK("trim gives every idle arena back", pool.reserved == 0 && src.unreserves == 2 &&
                                                  lrun_pool_arena_count(&pool) == 0);
    lrun_pool_destroy(&pool);
}

static void test_pool_limits(void)
{
    arena_src src = {0};
    lrun_pool pool;
    lrun_pool_init(&pool, 1 * MiB, 256 * KiB, 256, host_reserve, host_unreserve, &src);
    void *big = NULL;
    CHECK("a request above the arena size gets its own arena",
          lrun_pool_alloc(&pool, 600 * KiB, "big", &big) == LRUN_OK && pool.reserved == 600 * KiB);
    void *q[8];
    int n = 0;
    lrun_status st;
    while ((st = lrun_pool_alloc(&pool, 100 * KiB, "chunk", &q[n])) == LRUN_OK && n < 7) n++;
    CHECK("exhaustion is LRUN_E_OOM", st == LRUN_E_OOM);
    CHECK("the limit holds", pool.reserved <= 1 * MiB);
    CHECK("arena granularity: 256 KiB + 168 KiB arenas hold three 100 KiB chunks", n == 3);
    CHECK("OOM records the request", lrun_last_oom_requested() == 100 * KiB);
    CHECK("OOM message names the purpose", strstr(lrun_last_error(), "chunk") != NULL);
    for (int i = 0; i < n; i++) lrun_pool_release(&pool, q[i]);
    lrun_pool_release(&pool, big);
    void *all = NULL;
    CHECK("idle arenas are trimmed to make room for a larger one",
          lrun_pool_alloc(&pool, 1 * MiB, "everything", &all) == LRUN_OK && lrun_pool_arena_count(&pool) == 1);
    lrun_pool_release(&pool, all);
    lrun_pool_destroy(&pool);
    CHECK("destroy gives back everything", pool.reserved == 0 && src.reserves == src.unreserves);

    lrun_pool_init(&pool, 1 * MiB, 256 * KiB, 256, host_reserve, host_unreserve, &src);
    src.fail = 1;
    void *p = (void *)1;
    CHECK("a refused reservation is LRUN_E_OOM", lrun_pool_alloc(&pool, 1000, "refused", &p) == LRUN_E_OOM);
    lrun_pool_destroy(&pool);
}

/* Large blocks own their arenas: a released one is not split by a smaller
 * request (which would strand the rest), an equal one takes it again, and
 * idle arenas go back when a request needs their room. */
static void test_pool_own_arenas(void)
{
    arena_src src = {0};
    lrun_pool pool;
    lrun_pool_init(&pool, 4 * MiB, 256 * KiB, 256, host_reserve, host_unreserve, &src);
    pool.own_arena_bytes = 64 * KiB;
    void *a = NULL, *b = NULL, *c = NULL, *small = NULL, *big = NULL;
    CHECK("two large blocks", lrun_pool_alloc(&pool, 1 * MiB, "a", &a) == LRUN_OK &&
                                  lrun_pool_alloc(&pool, 1 * MiB, "b", &b) == LRUN_OK && pool.reserved == 2 * MiB);
    lrun_pool_release(&pool, a);
    CHECK("a smaller large block does not split the idle arena",
          lrun_pool_alloc(&pool, 512 * KiB, "c", &c) == LRUN_OK && c != a && pool.reserved == 2 * MiB + 512 * KiB);
    CHECK("a small block does not either", lrun_pool_alloc(&pool, 4 * KiB, "small", &small) == LRUN_OK &&
                                              small != a && lrun_pool_arena_count(&pool) == 4);
    CHECK("idle room counts as free", lrun_pool_largest_free(&pool) == 4 * MiB - pool.reserved + 1 * MiB);
    CHECK("only shared arenas strand bytes", lrun_pool_stranded(&pool) == 256 * KiB - 4 * KiB);
    void *again = NULL;
    CHECK("an equal request takes the idle arena", lrun_pool_alloc(&pool, 1 * MiB, "again", &again) == LRUN_OK &&
                                                       again == a && src.reserves == 4);
    lrun_pool_release(&pool, again);
    lrun_pool_release(&pool, c);
    CHECK("idle arenas go back for a request that needs their room",
          lrun_pool_alloc(&pool, 2 * MiB + 512 * KiB, "big", &big) == LRUN_OK && lrun_pool_arena_count(&pool) == 3);
    lrun_pool_release(&pool, big);
    lrun_pool_release(&pool, b);
    lrun_pool_release(&pool, small);
    lrun_pool_destroy(&pool);

    /* a limit of one shared arena: one arena of all of it holds every block */
    lrun_pool_init(&pool, 256 * KiB, 256 * KiB, 256, host_reserve, host_unreserve, &src);
    pool.own_arena_bytes = 64 * KiB;
    CHECK("one arena: large then small share it", lrun_pool_alloc(&pool, 128 * KiB, "large", &big) == LRUN_OK &&
                                                      lrun_pool_alloc(&pool, 4 * KiB, "small", &small) == LRUN_OK &&
                                                      lrun_pool_arena_count(&pool) == 1);
    lrun_pool_destroy(&pool);

    /* the budget's last bytes in a shared arena: a large block takes a free run of it */
    lrun_pool_init(&pool, 1 * MiB, 256 * KiB, 256, host_reserve, host_unreserve, &src);
    pool.own_arena_bytes = 64 * KiB;
    CHECK("the last room: a shared arena, then a large block in it",
          lrun_pool_alloc(&pool, 768 * KiB, "large", &big) == LRUN_OK &&
              lrun_pool_alloc(&pool, 4 * KiB, "small", &small) == LRUN_OK &&
              lrun_pool_alloc(&pool, 128 * KiB, "large", &c) == LRUN_OK && lrun_pool_arena_count(&pool) == 2);
    lrun_pool_destroy(&pool);
}

/* Random allocations and releases: blocks never overlap, stay aligned, the
 * accounting matches, and releasing everything heals each arena to one block. */
static void test_pool_random(void)
{
    enum { N = 64, ROUNDS = 4000 };
    arena_src src = {0};
    lrun_pool pool;
    lrun_pool_init(&pool, 4 * MiB, 512 * KiB, 256, host_reserve, host_unreserve, &src);
    char *ptr[N] = {0};
    size_t size[N] = {0};
    uint64_t x = 12345;
    int overlap = 0, misaligned = 0, accounting = 1, ooms = 0;
    for (int r = 0; r < ROUNDS; r++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int i = (int)((x >> 33) % N);
        if (ptr[i]) {
            lrun_pool_release(&pool, ptr[i]);
            ptr[i] = NULL;
        } else {
            size_t want = 1 + (size_t)((x >> 13) % (96 * KiB));
            void *p;
            if (lrun_pool_alloc(&pool, want, "random", &p) != LRUN_OK) {
                ooms++;
                continue;
            }
            ptr[i] = p;
            size[i] = (want + 255) & ~(size_t)255;
            misaligned |= ((uintptr_t)p & 255) != 0;
            memset(p, i, want); /* the arena is host memory here: touch it all */
        }
        size_t sum = 0;
        for (int a = 0; a < N; a++) {
            if (!ptr[a]) continue;
            sum += size[a];
            for (int b = a + 1; b < N; b++)
                if (ptr[b] && ptr[a] < ptr[b] + size[b] && ptr[b] < ptr[a] + size[a]) overlap = 1;
        }
        accounting &= sum == pool.in_use;
    }
    CHECK("random: no two blocks overlap", !overlap);
    CHECK("random: every block aligned", !misaligned);
    CHECK("random: in_use equals the live blocks", accounting);
    CHECK("random: few arenas for thousands of allocations", src.reserves <= 8);
    for (int i = 0; i < N; i++)
        if (ptr[i]) lrun_pool_release(&pool, ptr[i]);
    CHECK("random: everything released coalesces to one block per arena",
          pool.in_use == 0 && lrun_pool_free_block_count(&pool) == lrun_pool_arena_count(&pool));
    printf("# random pool: %d OOMs, %d arenas reserved\n", ooms, src.reserves);
    lrun_pool_destroy(&pool);
}

int main(void)
{
    test_open();
    test_cuda_absent();
    test_budget();
    test_host_and_copy();
    test_streams();
    test_pool_basic();
    test_pool_limits();
    test_pool_own_arenas();
    test_pool_random();
    return CHECK_DONE();
}
