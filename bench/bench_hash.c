/* SHA-256 throughput, the cost the gateway pays per image before any cache lookup.
 * Prints: "sha256: X GB/s (N MiB x R reps, T s) vs memcpy Y GB/s: ratio Z" — memcpy of the same
 * buffer in the same run is the baseline (these machines are noisy). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "hash.h"

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 64;
    int reps = argc > 2 ? atoi(argv[2]) : 8;
    size_t n = mib << 20;
    unsigned char *buf = malloc(n), *dst = malloc(n);
    if (!buf || !dst) return 1;
    for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 2654435761u >> 24);
    memcpy(dst, buf, n); /* fault pages in */
    uint8_t d[32];
    double t0 = clk_now_s();
    for (int r = 0; r < reps; r++)
        if (hash_sha256(buf, n, d)) return 1;
    double th = clk_now_s() - t0;
    t0 = clk_now_s();
    for (int r = 0; r < reps; r++) {
        buf[r] ^= 1;
        memcpy(dst, buf, n);
    }
    double tm = clk_now_s() - t0;
    double gb = (double)n * reps / 1e9;
    printf("sha256: %.2f GB/s (%zu MiB x %d reps, %.2f s) vs memcpy %.2f GB/s: ratio %.3f\n",
           gb / th, mib, reps, th, gb / tm, tm / th);
    free(buf);
    free(dst);
    return 0;
}
