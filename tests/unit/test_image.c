/* image: decode, resize and normalise against Pillow's outputs (tools/goldens/image.py writes
 * tests/data/image/ and its cases.txt), plus refusal of malformed and oversized inputs. */
#include <openssl/evp.h>

#include "check.h"
#include "clock.h"
#include "image.h"
#include "log.h"
#include "mapfile.h"

static const float MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

/* Totals over all resize cases, for the summary line. */
static long rs_total, rs_equal;
static int rs_maxdiff;

static char *load(const char *name, size_t *len) {
    char rel[512];
    snprintf(rel, sizeof rel, "image/%s", name);
    char *buf = NULL;
    int rc = mf_read_all(check_data(rel), 64u << 20, &buf, len);
    CHECK_MSG(rc == 0, "cannot read %s: %s", rel, err_msg());
    return rc == 0 ? buf : NULL;
}

static int decode_file(const char *name, img_rgb *im) {
    size_t n;
    char *buf = load(name, &n);
    if (!buf) return -1;
    int rc = img_decode(buf, n, NULL, im);
    CHECK_MSG(rc == 0, "decode %s: %s", name, err_msg());
    free(buf);
    return rc;
}

static void sha256_hex(const uint8_t *p, size_t n, char hex[65]) {
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* Pixels of an expected-value token: raw .rgb, lossless .png; NULL for sha256 tokens. */
static uint8_t *expected_pixels(const char *tok, size_t want) {
    if (strncmp(tok, "sha256:", 7) == 0) return NULL;
    size_t n = strlen(tok);
    if (n > 4 && strcmp(tok + n - 4, ".png") == 0) {
        img_rgb e;
        if (decode_file(tok, &e)) return NULL;
        CHECK_MSG((size_t)e.width * e.height * 3 == want, "%s has the wrong size", tok);
        return e.rgb;
    }
    size_t len;
    char *buf = load(tok, &len);
    CHECK_MSG(buf && len == want, "%s: %zu bytes, want %zu", tok, len, want);
    return (uint8_t *)buf;
}

static void case_decode(const char *in, int w, int h, const char *exp) {
    img_rgb im;
    if (decode_file(in, &im)) return;
    CHECK_MSG(im.width == w && im.height == h, "%s: %dx%d, want %dx%d", in, im.width, im.height,
              w, h);
    size_t n = (size_t)w * h * 3;
    if (strncmp(exp, "sha256:", 7) == 0) {
        char hex[65];
        sha256_hex(im.rgb, n, hex);
        CHECK_MSG(strcmp(hex, exp + 7) == 0, "%s: pixels differ from Pillow's (sha256)", in);
    } else {
        uint8_t *e = expected_pixels(exp, n);
        if (e && im.width == w && im.height == h) {
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < n; i++)
                if (im.rgb[i] != e[i] && bad++ == 0) first = i;
            CHECK_MSG(bad == 0, "%s: %zu of %zu bytes differ from Pillow's, first at pixel %zu "
                      "(ours %d, Pillow %d)", in, bad, n, first / 3, im.rgb[first], e[first]);
        }
        free(e);
    }
    img_free(&im);
}

static void case_resize(const char *in, int w, int h, const char *exp) {
    img_rgb im, rs;
    if (decode_file(in, &im)) return;
    CHECK_OK(img_resize_bicubic(&im, w, h, &rs));
    img_free(&im);
    if (!rs.rgb) return;
    size_t n = (size_t)w * h * 3, equal = 0;
    int maxd = 0;
    uint8_t *e = expected_pixels(exp, n);
    if (e) {
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)rs.rgb[i] - (int)e[i]);
            equal += d == 0;
            if (d > maxd) maxd = d;
        }
        CHECK_MSG(maxd <= 1, "resize %s to %dx%d: max difference %d", in, w, h, maxd);
        CHECK_MSG(equal * 100 >= n * 99, "resize %s to %dx%d: only %zu of %zu equal", in, w, h,
                  equal, n);
        rs_total += (long)n;
        rs_equal += (long)equal;
        if (maxd > rs_maxdiff) rs_maxdiff = maxd;
    }
    free(e);
    img_free(&rs);
}

static void case_norm(const char *in, int s, const char *exp) {
    size_t n, elen;
    char *buf = load(in, &n);
    char *ebuf = load(exp, &elen);
    size_t count = (size_t)3 * s * s;
    if (!buf || !ebuf || elen != count * 4) {
        CHECK_MSG(0, "norm %s: missing data or %s has %zu bytes", in, exp, elen);
        free(buf);
        free(ebuf);
        return;
    }
    float *out = malloc(count * sizeof(float));
    CHECK_OK(img_preprocess(buf, n, NULL, s, MEAN, STD, out));
    double maxd = 0;
    for (size_t i = 0; i < count; i++) {
        float e;
        memcpy(&e, ebuf + 4 * i, 4); /* little-endian float32, as the host */
        double d = fabs((double)out[i] - e);
        if (d > maxd) maxd = d;
    }
    CHECK_MSG(maxd <= 1e-6, "norm %s: max difference %g", in, maxd);
    free(out);
    free(buf);
    free(ebuf);
}

static int code_of(const char *name) {
    if (strcmp(name, "EFORMAT") == 0) return TV_EFORMAT;
    if (strcmp(name, "ELIMIT") == 0) return TV_ELIMIT;
    if (strcmp(name, "EUNSUPPORTED") == 0) return TV_EUNSUPPORTED;
    return 1;
}

static void case_bad(const char *in, const char *code) {
    size_t n;
    char *buf = load(in, &n);
    if (!buf) return;
    img_rgb im = {1, 1, (uint8_t *)"x"};
    err_clear();
    int rc = img_decode(buf, n, NULL, &im);
    CHECK_MSG(rc == code_of(code) && err_msg()[0], "%s: got %d (%s), want %s", in, rc,
              err_msg(), code);
    CHECK(im.rgb == NULL && im.width == 0);
    printf("  refused %-22s %s\n", in, err_msg());
    free(buf);
}

static void run_cases(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s", check_data("image/cases.txt"));
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot open %s (run tools/make_goldens.py image)", path);
    if (!f) return;
    char line[512], kind[16], a[128], b[128], c[128], d[128];
    int ncase = 0;
    while (fgets(line, sizeof line, f)) {
        int k = sscanf(line, "%15s %127s %127s %127s %127s", kind, a, b, c, d);
        if (k < 3) continue;
        ncase++;
        if (strcmp(kind, "decode") == 0 && k == 5)
            case_decode(a, atoi(b), atoi(c), d);
        else if (strcmp(kind, "resize") == 0 && k == 5)
            case_resize(a, atoi(b), atoi(c), d);
        else if (strcmp(kind, "norm") == 0 && k == 4)
            case_norm(a, atoi(b), c);
        else if (strcmp(kind, "bad") == 0 && k == 3)
            case_bad(a, b);
        else
            CHECK_MSG(0, "bad line in cases.txt: %s", line);
    }
    fclose(f);
    CHECK_MSG(ncase >= 60, "only %d cases in cases.txt", ncase);
}

/* Limits are enforced from the header: the bomb is refused at once, without the 30 GB. */
static void test_limits(void) {
    size_t n;
    char *bomb = load("bad_bomb.png", &n);
    img_rgb im;
    if (bomb) {
        double t0 = clk_now_s();
        int rc = img_decode(bomb, n, NULL, &im);
        double dt = clk_now_s() - t0;
        CHECK_EQ_INT(rc, TV_ELIMIT);
        CHECK(strstr(err_msg(), "limit") != NULL);
        CHECK_MSG(dt < 0.05, "bomb took %.3f s to refuse", dt);
        CHECK_EQ_INT(img_probe(bomb, n, NULL, NULL, NULL, NULL), TV_ELIMIT);
        /* With limits wide enough for the header, the pixel cap still refuses it. */
        img_limits wide = {1u << 20, 200000, 200000, 1ull << 20};
        CHECK_EQ_INT(img_decode(bomb, n, &wide, &im), TV_ELIMIT);
        CHECK(strstr(err_msg(), "100000x100000") != NULL);
        free(bomb);
    }
    char *jpg = load("j_641x479.jpg", &n);
    if (jpg) {
        img_format fmt;
        int w = 0, h = 0;
        CHECK_OK(img_probe(jpg, n, NULL, &fmt, &w, &h));
        CHECK(fmt == IMG_FMT_JPEG && w == 641 && h == 479);
        img_limits lim = IMG_LIMITS_DEFAULT;
        lim.max_pixels = 641 * 479 - 1;
        CHECK_EQ_INT(img_decode(jpg, n, &lim, &im), TV_ELIMIT);
        lim = IMG_LIMITS_DEFAULT;
        lim.max_width = 640;
        CHECK_EQ_INT(img_decode(jpg, n, &lim, &im), TV_ELIMIT);
        lim = IMG_LIMITS_DEFAULT;
        lim.max_bytes = n - 1;
        CHECK_EQ_INT(img_decode(jpg, n, &lim, &im), TV_ELIMIT);
        CHECK(strstr(err_msg(), "bytes") != NULL);
        lim.max_bytes = n;
        CHECK_OK(img_decode(jpg, n, &lim, &im));
        img_free(&im);
        free(jpg);
    }
    char *png = load("p_rgb8.png", &n);
    if (png) {
        img_limits lim = IMG_LIMITS_DEFAULT;
        lim.max_height = 44;
        CHECK_EQ_INT(img_decode(png, n, &lim, &im), TV_ELIMIT);
        img_format fmt;
        int w = 0, h = 0;
        CHECK_OK(img_probe(png, n, NULL, &fmt, &w, &h));
        CHECK(fmt == IMG_FMT_PNG && w == 67 && h == 45);
        free(png);
    }
}

/* Every prefix and many random corruptions of small valid files: refused or decoded, never a
 * crash or a leak (this test also runs under ASan/UBSan). */
static void test_robustness(void) {
    const char *files[] = {"j_420.jpg", "j_prog.jpg", "j_ycck.jpg", "p_pal4_adam7.png",
                           "p_rgb16.png", "p_rgb8.png"};
    long refused = 0, decoded = 0;
    uint32_t seed = 12345;
    for (size_t fi = 0; fi < sizeof files / sizeof *files; fi++) {
        size_t n;
        char *buf = load(files[fi], &n);
        if (!buf) continue;
        size_t step = n / 300 + 1;
        for (size_t cut = 0; cut < n; cut += step) {
            img_rgb im;
            int rc = img_decode(buf, cut, NULL, &im);
            if (rc == 0) {
                decoded++;
                img_free(&im);
            } else {
                refused++;
                CHECK(err_msg()[0] != 0);
            }
        }
        uint8_t *copy = malloc(n);
        for (int it = 0; it < 300; it++) {
            memcpy(copy, buf, n);
            for (int j = 0; j < 1 + it % 4; j++) {
                seed = seed * 1664525u + 1013904223u;
                copy[(seed >> 8) % n] ^= (uint8_t)(1u << (seed & 7));
            }
            img_rgb im;
            int rc = img_decode(copy, n, NULL, &im);
            if (rc == 0) {
                decoded++;
                img_free(&im);
            } else {
                refused++;
                CHECK(err_msg()[0] != 0);
            }
        }
        free(copy);
        free(buf);
    }
    printf("  robustness: %ld corrupted inputs refused, %ld decoded anyway, no crash\n", refused,
           decoded);
    CHECK(refused > 1000);
}

static void test_api(void) {
    CHECK_EQ_INT(img_detect("\xff\xd8\xff\xe0", 4), IMG_FMT_JPEG);
    CHECK_EQ_INT(img_detect("\x89PNG\r\n\x1a\n", 8), IMG_FMT_PNG);
    CHECK_EQ_INT(img_detect("\x89PNG", 4), IMG_FMT_UNKNOWN);
    CHECK_EQ_INT(img_detect(NULL, 0), IMG_FMT_UNKNOWN);
    CHECK_EQ_STR(img_format_name(IMG_FMT_PNG), "PNG");
    img_rgb im = {0, 0, NULL};
    img_free(&im);
    img_free(NULL);
    CHECK_FAILS(img_decode(NULL, 0, NULL, &im));
    CHECK_FAILS(img_decode("RIFF\0\0\0\0WEBPVP8 ", 16, NULL, &im));
    CHECK(strstr(err_msg(), "WebP") != NULL);
    CHECK_FAILS(img_decode("GIF89a\1\0\1\0", 10, NULL, &im));
    CHECK(strstr(err_msg(), "GIF") != NULL);
    uint8_t px[3] = {10, 20, 30};
    img_rgb one = {1, 1, px}, out;
    CHECK_FAILS(img_resize_bicubic(&one, 0, 5, &out));
    CHECK_FAILS(img_resize_bicubic(&one, 5, 70000, &out));
    /* Same size is a copy (Pillow returns im.copy()). */
    CHECK_OK(img_resize_bicubic(&one, 1, 1, &out));
    CHECK(out.rgb && memcmp(out.rgb, px, 3) == 0 && out.rgb != px);
    img_free(&out);
    /* Normalisation of known values, written out by hand from the formula. */
    float f[3];
    img_normalize(&one, MEAN, STD, f);
    CHECK_NEAR(f[0], (10 / 255.0 - 0.48145466) / 0.26862954, 1e-6);
    CHECK_NEAR(f[2], (30 / 255.0 - 0.40821073) / 0.27577711, 1e-6);
}

int main(void) {
    log_set_level(LOG_WARN);
    test_api();
    run_cases();
    if (rs_total)
        printf("  resize: %ld of %ld channel values equal to Pillow's (%.4f%%), max diff %d\n",
               rs_equal, rs_total, 100.0 * rs_equal / rs_total, rs_maxdiff);
    test_limits();
    test_robustness();
    return check_finish("test_image");
}
