/* detrand — the C side of tools/tinygptv/detrand.py: a counter-based splitmix64 generator whose
 * float32 values are exact, so tests regenerate the real-width block weights bit for bit instead
 * of storing hundreds of MB. Header-only, for tests. */
#ifndef TV_TEST_DETRAND_H
#define TV_TEST_DETRAND_H

#include <math.h>
#include <stdint.h>

/* Element i of tensor `id`: uniform in [-2^e, 2^e), exact in f32, plus offset in one f32 add. */
static inline float detrand_at(uint64_t seed, uint64_t id, uint64_t i, int e, float offset) {
    uint64_t z = seed + ((id << 40) + i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    int64_t k = (int64_t)(z >> 40) - (1 << 23);
    float v = (float)k * ldexpf(1.0f, e - 23);
    return offset != 0.0f ? v + offset : v;
}

/* out[0..n) = elements 0..n-1 of tensor id. */
static inline void detrand_fill(uint64_t seed, uint64_t id, int64_t n, int e, float offset,
                                float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = detrand_at(seed, id, (uint64_t)i, e, offset);
}

#endif
