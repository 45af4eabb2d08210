/* routing_stream.h — synthetic expert routing for the expert cache's tests
 * (test_expert_cache.c, test_expert_admit.c): each token, in each of
 * SIM_LAYERS blocks, SIM_K distinct experts of SIM_EXPERTS drawn by rank with
 * probability ∝ 1/(rank+1)^s (Zipf; s = 0 is uniform, as random routers
 * choose), the ranks permuted per block so that each block has its own
 * popular experts. A deterministic generator (xorshift64*) with a fixed
 * seed, so the measured rates are the same on every machine. Header-only. */
#ifndef LRUN_TEST_ROUTING_STREAM_H
#define LRUN_TEST_ROUTING_STREAM_H

#include <math.h>
#include <stdint.h>

#define SIM_LAYERS 4
#define SIM_EXPERTS 64
#define SIM_K 4

typedef struct routing_stream {
    uint64_t rng;
    double cdf[SIM_EXPERTS];           /* cumulative weight of ranks 0..r */
    int perm[SIM_LAYERS][SIM_EXPERTS]; /* block l's expert at each rank */
} routing_stream;

static inline double routing_uniform01(routing_stream *z)
{
    z->rng ^= z->rng >> 12, z->rng ^= z->rng << 25, z->rng ^= z->rng >> 27;
    return (double)((z->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* A stream of Zipf exponent s, from the fixed seed. */
static inline void routing_stream_init(routing_stream *z, double s)
{
    z->rng = 0x9E3779B97F4A7C15ull;
    double acc = 0;
    for (int r = 0; r < SIM_EXPERTS; r++) z->cdf[r] = acc += pow(r + 1, -s);
    for (int l = 0; l < SIM_LAYERS; l++) {
        for (int x = 0; x < SIM_EXPERTS; x++) z->perm[l][x] = x;
        for (int x = SIM_EXPERTS - 1; x > 0; x--) {
            const int j = (int)(routing_uniform01(z) * (x + 1)), t = z->perm[l][x];
            z->perm[l][x] = z->perm[l][j], z->perm[l][j] = t;
        }
    }
}

/* Block l's SIM_K distinct experts of one token into chosen. */
static inline void routing_stream_draw(routing_stream *z, int l, int32_t chosen[SIM_K])
{
    for (int j = 0; j < SIM_K; j++) {
        int x, dup;
        do {
            const double u = routing_uniform01(z) * z->cdf[SIM_EXPERTS - 1];
            int rank = 0;
            while (rank < SIM_EXPERTS - 1 && z->cdf[rank] < u) rank++;
            x = z->perm[l][rank], dup = 0;
            for (int i = 0; i < j; i++) dup |= chosen[i] == x;
        } while (dup);
        chosen[j] = x;
    }
}

#endif
