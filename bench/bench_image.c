/* bench_image — JPEG decode + bicubic resize to 448x448 (the vision worker's preprocessing minus
 * normalisation), in ms per image, single thread. Compare with bench_image_pillow.py on the same
 * files (bench_image.sh runs both and prints the ratio).
 *
 *   bench_image [file.jpg ...]      default: the 1600x1200 and 641x479 goldens
 *
 * Prints one line per file:
 *   bench_image: j_1600x1200.jpg 1600x1200 decode+resize448 12.345 ms/image (decode 9.1, resize 3.2) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "image.h"
#include "mapfile.h"

/* Runs decode + resize until ~1.5 s have passed (at least 5 times); reports the medians. */
static int bench_file(const char *path) {
    char *buf = NULL;
    size_t n = 0;
    if (mf_read_all(path, 64u << 20, &buf, &n) != 0) {
        fprintf(stderr, "bench_image: %s\n", err_msg());
        return 1;
    }
    enum { MAXRUN = 2000 };
    static double td[MAXRUN], tr[MAXRUN];
    int runs = 0, w = 0, h = 0;
    double start = clk_now_s() * 1e3;
    for (int i = -2; runs < MAXRUN && (runs < 5 || clk_now_s() * 1e3 - start < 1500); i++) {
        img_rgb im, rs;
        double t0 = clk_now_s() * 1e3;
        if (img_decode(buf, n, NULL, &im) != 0) {
            fprintf(stderr, "bench_image: %s: %s\n", path, err_msg());
            free(buf);
            return 1;
        }
        double t1 = clk_now_s() * 1e3;
        if (img_resize_bicubic(&im, 448, 448, &rs) != 0) {
            fprintf(stderr, "bench_image: resize: %s\n", err_msg());
            img_free(&im);
            free(buf);
            return 1;
        }
        double t2 = clk_now_s() * 1e3;
        w = im.width;
        h = im.height;
        img_free(&im);
        img_free(&rs);
        if (i < 0) continue; /* warm-up */
        td[runs] = t1 - t0;
        tr[runs] = t2 - t1;
        runs++;
    }
    /* medians: robust on a shared, noisy machine */
    double tot[MAXRUN];
    for (int i = 0; i < runs; i++) tot[i] = td[i] + tr[i];
    int cmp(const void *a, const void *b);
    qsort(td, runs, sizeof(double), cmp);
    qsort(tr, runs, sizeof(double), cmp);
    qsort(tot, runs, sizeof(double), cmp);
    const char *base = strrchr(path, '/');
    printf("bench_image: %s %dx%d decode+resize448 %.3f ms/image (decode %.3f, resize %.3f; "
           "%d runs)\n", base ? base + 1 : path, w, h, tot[runs / 2], td[runs / 2],
           tr[runs / 2], runs);
    free(buf);
    return 0;
}

int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int rc = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) rc |= bench_file(argv[i]);
    } else {
        rc |= bench_file(TV_SOURCE_DIR "/tests/data/image/j_1600x1200.jpg");
        rc |= bench_file(TV_SOURCE_DIR "/tests/data/image/j_641x479.jpg");
    }
    return rc;
}
