/* hash.c — SipHash-1-3 under a per-process random key (hash.h says why). */
#include "core/hash.h"

#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static uint64_t key[2];
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* The key: getrandom, or (where it fails) the clock and an address, which a
 * file cannot know either. */
static void key_init(void)
{
    if (getrandom(key, sizeof key, GRND_NONBLOCK) == (ssize_t)sizeof key) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&ts;
    key[1] = (uint64_t)ts.tv_sec * 0xbf58476d1ce4e5b9ull ^ (uint64_t)(uintptr_t)&key;
}

static inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

#define SIPROUND                                                                         \
    do {                                                                                 \
        v0 += v1, v1 = rotl(v1, 13), v1 ^= v0, v0 = rotl(v0, 32);                        \
        v2 += v3, v3 = rotl(v3, 16), v3 ^= v2;                                           \
        v0 += v3, v3 = rotl(v3, 21), v3 ^= v0;                                           \
        v2 += v1, v1 = rotl(v1, 17), v1 ^= v2, v2 = rotl(v2, 32);                        \
    } while (0)

uint64_t lrun_hash_keyed(const void *p, size_t n)
{
    pthread_once(&key_once, key_init);
    const uint8_t *s = p;
    uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { /* one compression round per 8-byte word (the "1" of 1-3) */
        uint64_t m;
        memcpy(&m, s + i, 8); /* little-endian hosts only, as the rest of lrun */
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)n << 56;
    for (size_t j = 0; i + j < n; j++) last |= (uint64_t)s[i + j] << (8 * j);
    v3 ^= last;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND; /* three finalization rounds (the "3" of 1-3) */
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}
