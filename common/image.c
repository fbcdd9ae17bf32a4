/* image — see image.h. Sections: format detection and limits, JPEG, PNG, resize, normalise. */
#include "image.h"

#include <limits.h>
#include <math.h>
#include <spng.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "err.h"
#include "log.h"

/* ==== detection and limits ==================================================================== */

static const uint8_t PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

img_format img_detect(const void *buf, size_t len) {
    const uint8_t *p = buf;
    if (!p) return IMG_FMT_UNKNOWN;
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) return IMG_FMT_JPEG;
    if (len >= 8 && memcmp(p, PNG_SIG, 8) == 0) return IMG_FMT_PNG;
    return IMG_FMT_UNKNOWN;
}

const char *img_format_name(img_format fmt) {
    switch (fmt) {
    case IMG_FMT_JPEG: return "JPEG";
    case IMG_FMT_PNG: return "PNG";
    default: return "unknown";
    }
}

/* Names formats we recognise but do not decode, so the refusal says what the client sent. */
static const char *other_format_name(const uint8_t *p, size_t len) {
    if (len >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0)) return "GIF";
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) return "WebP";
    if (len >= 2 && p[0] == 'B' && p[1] == 'M') return "BMP";
    if (len >= 4 && (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0)) return "TIFF";
    if (len >= 12 && memcmp(p + 4, "ftyp", 4) == 0) return "HEIF/AVIF";
    return NULL;
}

/* Format from magic bytes, with the error for everything we do not decode. */
static int detect_checked(const void *buf, size_t len, const img_limits *lim, img_format *fmt) {
    if (!buf || len == 0) return err_set(TV_EFORMAT, "image: empty input (0 bytes)");
    if (len > lim->max_bytes)
        return err_set(TV_ELIMIT, "image: %zu bytes exceeds the limit of %zu bytes", len,
                       lim->max_bytes);
    *fmt = img_detect(buf, len);
    if (*fmt != IMG_FMT_UNKNOWN) return TV_OK;
    const char *other = other_format_name(buf, len);
    if (other)
        return err_set(TV_EUNSUPPORTED, "image: %s is not supported (only JPEG and PNG)", other);
    return err_set(TV_EUNSUPPORTED, "image: unrecognised format (not JPEG or PNG)");
}

static int check_dims(img_format fmt, uint64_t w, uint64_t h, const img_limits *lim) {
    const char *f = img_format_name(fmt);
    if (w == 0 || h == 0)
        return err_set(TV_EFORMAT, "image: %s header has size %llux%llu", f,
                       (unsigned long long)w, (unsigned long long)h);
    if (w > lim->max_width || h > lim->max_height || w * h > lim->max_pixels)
        return err_set(TV_ELIMIT, "image: %s of %llux%llu exceeds the limit (%ux%u, %llu pixels)",
                       f, (unsigned long long)w, (unsigned long long)h, lim->max_width,
                       lim->max_height, (unsigned long long)lim->max_pixels);
    if (w > INT_MAX || h > INT_MAX || w * h > SIZE_MAX / 4)
        return err_set(TV_ELIMIT, "image: %s of %llux%llu is too large", f,
                       (unsigned long long)w, (unsigned long long)h);
    return TV_OK;
}

/* malloc of w*h*c bytes; sizes are already bounded by check_dims, so no overflow. */
static int alloc_pixels(int w, int h, int c, uint8_t **out) {
    *out = malloc((size_t)w * (size_t)h * (size_t)c);
    if (!*out) return err_set(TV_ENOMEM, "image: cannot allocate %dx%dx%d bytes", w, h, c);
    return TV_OK;
}

void img_free(img_rgb *im) {
    if (!im) return;
    free(im->rgb);
    im->rgb = NULL;
    im->width = im->height = 0;
}

/* ==== JPEG (libjpeg-turbo) ==================================================================== */

/* Header of buf: size and colourspace. handle is an open decompressor. */
static int jpeg_header(tjhandle tj, const void *buf, size_t len, const img_limits *lim, int *w,
                       int *h, int *cs) {
    int subsamp = -1;
    *w = *h = 0;
    *cs = -1;
    if (tjDecompressHeader3(tj, buf, (unsigned long)len, w, h, &subsamp, cs) != 0)
        return err_set(TV_EFORMAT, "image: bad JPEG header: %s", tjGetErrorStr2(tj));
    /* A stream that ends before its frame header "succeeds" with the outputs untouched. */
    if (*w < 1 || *h < 1)
        return err_set(TV_EFORMAT, "image: truncated JPEG: no frame header");
    return check_dims(IMG_FMT_JPEG, (uint64_t)*w, (uint64_t)*h, lim);
}

/* Pillow reads every 4-channel JPEG as Adobe's inverted CMYK ("CMYK;I") and then converts with
 * r = 255 - k - (255 - k) * c / 255 in its integer form (Convert.c cmyk2rgb, MULDIV255). Here
 * the samples are still inverted, so 255 - sample is Pillow's c/m/y/k and nk is the raw k. */
static inline uint8_t muldiv255(int a, int b) {
    int t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

static void cmyk_inverted_to_rgb(const uint8_t *cmyk, uint8_t *rgb, size_t npix) {
    for (size_t i = 0; i < npix; i++, cmyk += 4, rgb += 3) {
        int nk = cmyk[3];
        for (int c = 0; c < 3; c++) {
            int v = nk - muldiv255(255 - cmyk[c], nk);
            rgb[c] = (uint8_t)(v < 0 ? 0 : v);
        }
    }
}

/* libjpeg treats a truncated stream as a warning (it pads with an EOI); Pillow refuses it
 * ("image file is truncated"), so we do too. Other warnings (extraneous bytes, a corrupt
 * entropy segment) Pillow decodes through, and so do we. */
static int jpeg_warning_is_fatal(const char *msg) {
    return strstr(msg, "Premature end of JPEG file") != NULL;
}

static int jpeg_decode(const void *buf, size_t len, const img_limits *lim, img_rgb *out) {
    tjhandle tj = tjInitDecompress();
    if (!tj) return err_set(TV_EINTERNAL, "image: tjInitDecompress failed: %s", tjGetErrorStr2(NULL));
    int w, h, cs, rc;
    uint8_t *pix = NULL;
    if ((rc = jpeg_header(tj, buf, len, lim, &w, &h, &cs)) != 0) goto done;
    int cmyk = (cs == TJCS_CMYK || cs == TJCS_YCCK);
    if ((rc = alloc_pixels(w, h, cmyk ? 4 : 3, &pix)) != 0) goto done;
    /* Flags 0 = accurate islow DCT and fancy upsampling, Pillow's settings. LIMITSCANS refuses
     * progressive files with absurd scan counts (a CPU-time bomb). */
    if (tjDecompress2(tj, buf, (unsigned long)len, pix, w, 0, h, cmyk ? TJPF_CMYK : TJPF_RGB,
                      TJFLAG_LIMITSCANS) != 0) {
        const char *msg = tjGetErrorStr2(tj);
        if (tjGetErrorCode(tj) != TJERR_WARNING || jpeg_warning_is_fatal(msg)) {
            rc = err_set(TV_EFORMAT, "image: corrupt JPEG: %s", msg);
            goto done;
        }
        log_debug("image", "JPEG decoded with a warning: %s", msg);
    }
    if (cmyk) {
        uint8_t *rgb = NULL;
        if ((rc = alloc_pixels(w, h, 3, &rgb)) != 0) goto done;
        cmyk_inverted_to_rgb(pix, rgb, (size_t)w * (size_t)h);
        free(pix);
        pix = rgb;
    }
    out->width = w;
    out->height = h;
    out->rgb = pix;
    pix = NULL;
    rc = TV_OK;
done:
    free(pix);
    tjDestroy(tj);
    return rc;
}

/* ==== PNG (libspng) =========================================================================== */

static int png_err(int code, const char *what, int spng_rc) {
    return err_set(code, "image: %s PNG: %s", what, spng_strerror(spng_rc));
}

/* Creates a decoder over buf with spng's own guards set from lim, and reads the header. */
static int png_open(const void *buf, size_t len, const img_limits *lim, spng_ctx **ctxp,
                    struct spng_ihdr *ihdr) {
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return err_set(TV_ENOMEM, "image: spng_ctx_new failed");
    *ctxp = ctx;
    uint32_t mw = lim->max_width > INT32_MAX ? INT32_MAX : lim->max_width;
    uint32_t mh = lim->max_height > INT32_MAX ? INT32_MAX : lim->max_height;
    int rc = spng_set_image_limits(ctx, mw, mh);
    /* Ancillary chunks (text, ICC, ...) are cached in memory: bound them by the input size. */
    if (!rc) rc = spng_set_chunk_limits(ctx, len, len);
    if (!rc) rc = spng_set_png_buffer(ctx, buf, len);
    if (rc) return png_err(TV_EINTERNAL, "setting up", rc);
    rc = spng_get_ihdr(ctx, ihdr);
    if (rc == SPNG_EUSER_WIDTH || rc == SPNG_EUSER_HEIGHT)
        return err_set(TV_ELIMIT, "image: PNG exceeds the size limit (%ux%u): %s", mw, mh,
                       spng_strerror(rc));
    if (rc) return png_err(TV_EFORMAT, "bad", rc);
    return check_dims(IMG_FMT_PNG, ihdr->width, ihdr->height, lim);
}

/* Sample i of a packed row of depth-bit samples (depth 1, 2, 4, 8), MSB first. */
static inline unsigned packed_sample(const uint8_t *row, size_t i, int depth) {
    if (depth == 8) return row[i];
    size_t bit = i * (size_t)depth;
    return (row[bit >> 3] >> (8 - depth - (bit & 7))) & ((1u << depth) - 1);
}

/* One decoded PNG row (SPNG_FMT_RAW: the file's own layout, 16-bit big-endian) to RGB, the way
 * Pillow's PNG modes convert('RGB'). plte has 256 entries (missing ones are black). */
static void png_row_to_rgb(const uint8_t *row, uint8_t *dst, int w, const struct spng_ihdr *ih,
                           const uint8_t plte[256][3]) {
    int d = ih->bit_depth;
    for (int x = 0; x < w; x++, dst += 3) {
        switch (ih->color_type) {
        case SPNG_COLOR_TYPE_GRAYSCALE: {
            unsigned v;
            if (d == 16) /* Pillow mode I;16 -> RGB clips to 255 */
                v = row[2 * x] ? 255 : row[2 * x + 1];
            else /* 1/2/4-bit scale to full range: x255, x85, x17 */
                v = packed_sample(row, (size_t)x, d) * (255u / ((1u << d) - 1));
            dst[0] = dst[1] = dst[2] = (uint8_t)v;
            break;
        }
        case SPNG_COLOR_TYPE_TRUECOLOR: /* 16-bit keeps the high byte */
            for (int c = 0; c < 3; c++) dst[c] = d == 16 ? row[6 * x + 2 * c] : row[3 * x + c];
            break;
        case SPNG_COLOR_TYPE_INDEXED:
            memcpy(dst, plte[packed_sample(row, (size_t)x, d)], 3);
            break;
        case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: /* alpha dropped, not composited */
            dst[0] = dst[1] = dst[2] = d == 16 ? row[4 * x] : row[2 * x];
            break;
        case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA:
            for (int c = 0; c < 3; c++) dst[c] = d == 16 ? row[8 * x + 2 * c] : row[4 * x + c];
            break;
        }
    }
}

static int png_decode(const void *buf, size_t len, const img_limits *lim, img_rgb *out) {
    spng_ctx *ctx = NULL;
    struct spng_ihdr ih;
    uint8_t *raw = NULL, *rgb = NULL;
    uint8_t plte[256][3];
    size_t n = 0;
    int rc = png_open(buf, len, lim, &ctx, &ih);
    if (rc) goto done;
    int w = (int)ih.width, h = (int)ih.height;
    memset(plte, 0, sizeof plte);
    if (ih.color_type == SPNG_COLOR_TYPE_INDEXED) {
        struct spng_plte p;
        int src = spng_get_plte(ctx, &p);
        if (src) {
            rc = png_err(TV_EFORMAT, "palette of", src);
            goto done;
        }
        for (uint32_t i = 0; i < p.n_entries && i < 256; i++) {
            plte[i][0] = p.entries[i].red;
            plte[i][1] = p.entries[i].green;
            plte[i][2] = p.entries[i].blue;
        }
    }
    /* spng 0.7's SPNG_FMT_RAW misplaces samples of interlaced images below 8 bits; for those
     * its own expansion (gray: x255/x85/x17 like Pillow; palette: lookup) is used instead. */
    int fmt = SPNG_FMT_RAW;
    if (ih.interlace_method && ih.bit_depth < 8)
        fmt = ih.color_type == SPNG_COLOR_TYPE_INDEXED ? SPNG_FMT_RGB8 : SPNG_FMT_G8;
    int src = spng_decoded_image_size(ctx, fmt, &n);
    if (src) {
        rc = png_err(TV_EFORMAT, "bad", src);
        goto done;
    }
    size_t stride = n / (size_t)h;
    int channels = ih.color_type == 2 ? 3 : ih.color_type == 4 ? 2 : ih.color_type == 6 ? 4 : 1;
    size_t need = ((size_t)w * (size_t)channels * ih.bit_depth + 7) / 8;
    if (fmt != SPNG_FMT_RAW) need = (size_t)w * (fmt == SPNG_FMT_RGB8 ? 3 : 1);
    /* The row walk below reads `need` bytes per row. */
    if (n % (size_t)h || stride < need) {
        rc = err_set(TV_EINTERNAL, "image: unexpected PNG buffer size %zu for %dx%d", n, w, h);
        goto done;
    }
    raw = malloc(n);
    if (!raw) {
        rc = err_set(TV_ENOMEM, "image: cannot allocate %zu bytes for a PNG", n);
        goto done;
    }
    src = spng_decode_image(ctx, raw, n, fmt, 0);
    if (src) {
        rc = png_err(TV_EFORMAT, "corrupt", src);
        goto done;
    }
    /* spng verifies the last IDAT's CRC only when it reads on past the image data, which a
     * getter for a trailing chunk makes it do. A missing IEND is tolerated, as Pillow does. */
    struct spng_exif exif;
    src = spng_get_exif(ctx, &exif);
    if (src == SPNG_ECHUNK_CRC) {
        rc = png_err(TV_EFORMAT, "corrupt", src);
        goto done;
    }
    if ((rc = alloc_pixels(w, h, 3, &rgb)) != 0) goto done;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = raw + (size_t)y * stride;
        uint8_t *dst = rgb + (size_t)y * (size_t)w * 3;
        if (fmt == SPNG_FMT_RAW)
            png_row_to_rgb(row, dst, w, &ih, plte);
        else if (fmt == SPNG_FMT_RGB8)
            memcpy(dst, row, (size_t)w * 3);
        else
            for (int x = 0; x < w; x++) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = row[x];
    }
    out->width = w;
    out->height = h;
    out->rgb = rgb;
    rgb = NULL;
done:
    free(raw);
    free(rgb);
    spng_ctx_free(ctx);
    return rc;
}

/* ==== public decode =========================================================================== */

int img_probe(const void *buf, size_t len, const img_limits *lim, img_format *fmt, int *width,
              int *height) {
    img_limits dl = IMG_LIMITS_DEFAULT;
    if (!lim) lim = &dl;
    img_format f;
    int w = 0, h = 0, rc = detect_checked(buf, len, lim, &f);
    if (rc) return rc;
    if (f == IMG_FMT_JPEG) {
        tjhandle tj = tjInitDecompress();
        if (!tj) return err_set(TV_EINTERNAL, "image: tjInitDecompress failed");
        int cs;
        rc = jpeg_header(tj, buf, len, lim, &w, &h, &cs);
        tjDestroy(tj);
    } else {
        spng_ctx *ctx = NULL;
        struct spng_ihdr ih = {0};
        rc = png_open(buf, len, lim, &ctx, &ih);
        w = (int)ih.width;
        h = (int)ih.height;
        spng_ctx_free(ctx);
    }
    if (rc) return rc;
    if (fmt) *fmt = f;
    if (width) *width = w;
    if (height) *height = h;
    return TV_OK;
}

int img_decode(const void *buf, size_t len, const img_limits *lim, img_rgb *out) {
    TV_ASSERT(out);
    *out = (img_rgb){0, 0, NULL};
    img_limits dl = IMG_LIMITS_DEFAULT;
    if (!lim) lim = &dl;
    img_format f;
    int rc = detect_checked(buf, len, lim, &f);
    if (rc) return rc;
    return f == IMG_FMT_JPEG ? jpeg_decode(buf, len, lim, out) : png_decode(buf, len, lim, out);
}

/* ==== resize: Pillow's separable bicubic resampling =========================================== */

/* Fixed-point coefficients: 8 bits of pixel, 2 bits of headroom for the negative lobes. */
#define RS_PRECISION 22

/* Bicubic convolution kernel, a = -0.5; written in the same operation order as Pillow so that
 * the double results (and hence the rounded fixed-point weights) are bit-identical. */
static double bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Weights for resampling in_size samples to out_size: for output i, the taps start at
 * first[i], there are count[i] of them, and their weights are w[i * ksize + t]. */
typedef struct {
    int ksize;
    int *first, *count;
    int32_t *w;
} rs_coeffs;

static void rs_coeffs_free(rs_coeffs *c) {
    free(c->first);
    free(c->count);
    free(c->w);
}

static int rs_coeffs_make(int in_size, int out_size, rs_coeffs *c) {
    double scale = (double)in_size / out_size;
    double fscale = scale < 1.0 ? 1.0 : scale; /* widen the kernel when shrinking: antialias */
    double support = 2.0 * fscale, inv = 1.0 / fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    c->ksize = ksize;
    c->first = malloc(sizeof(int) * (size_t)out_size);
    c->count = malloc(sizeof(int) * (size_t)out_size);
    c->w = calloc((size_t)out_size * (size_t)ksize, sizeof(int32_t));
    double *k = malloc(sizeof(double) * (size_t)ksize);
    if (!c->first || !c->count || !c->w || !k) {
        free(k);
        rs_coeffs_free(c);
        return err_set(TV_ENOMEM, "image: cannot allocate resize coefficients (%d x %d)",
                       out_size, ksize);
    }
    for (int i = 0; i < out_size; i++) {
        double center = (i + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        double sum = 0.0;
        for (int t = 0; t < n; t++) {
            k[t] = bicubic((t + lo - center + 0.5) * inv);
            sum += k[t];
        }
        for (int t = 0; t < n; t++) {
            double v = sum != 0.0 ? k[t] / sum : k[t];
            /* round half away from zero, as Pillow's normalize_coeffs_8bpc */
            c->w[(size_t)i * ksize + t] = (int32_t)(v < 0 ? -0.5 + v * (1 << RS_PRECISION)
                                                          : 0.5 + v * (1 << RS_PRECISION));
        }
        c->first[i] = lo;
        c->count[i] = n;
    }
    free(k);
    return TV_OK;
}

static inline uint8_t rs_clip(int32_t acc) {
    int32_t v = acc >> RS_PRECISION; /* arithmetic shift: floor, as Pillow's clip8 lookup */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Horizontal pass over rows [y0, y0 + rows) of src (width sw) into dst (width c->out, rows). */
static void rs_horizontal(const uint8_t *src, int sw, int y0, int rows, uint8_t *dst, int dw,
                          const rs_coeffs *c) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)(y0 + y) * (size_t)sw * 3;
        uint8_t *o = dst + (size_t)y * (size_t)dw * 3;
        for (int x = 0; x < dw; x++, o += 3) {
            const int32_t *k = c->w + (size_t)x * c->ksize;
            const uint8_t *p = in + (size_t)c->first[x] * 3;
            int32_t s0 = 1 << (RS_PRECISION - 1), s1 = s0, s2 = s0;
            for (int t = 0; t < c->count[x]; t++, p += 3) {
                s0 += p[0] * k[t];
                s1 += p[1] * k[t];
                s2 += p[2] * k[t];
            }
            o[0] = rs_clip(s0);
            o[1] = rs_clip(s1);
            o[2] = rs_clip(s2);
        }
    }
}

/* Vertical pass: src has width w; row taps are relative to src's first row (already shifted).
 * Accumulates whole rows (x innermost) so the compiler vectorises it; acc holds w*3 int32. */
static void rs_vertical(const uint8_t *src, int w, uint8_t *dst, int dh, const rs_coeffs *c,
                        int shift, int32_t *acc) {
    size_t rowb = (size_t)w * 3;
    for (int y = 0; y < dh; y++) {
        const int32_t *k = c->w + (size_t)y * c->ksize;
        const uint8_t *base = src + (size_t)(c->first[y] - shift) * rowb;
        for (size_t x = 0; x < rowb; x++) acc[x] = 1 << (RS_PRECISION - 1);
        for (int t = 0; t < c->count[y]; t++) {
            const uint8_t *p = base + (size_t)t * rowb;
            int32_t kt = k[t];
            for (size_t x = 0; x < rowb; x++) acc[x] += p[x] * kt;
        }
        uint8_t *o = dst + (size_t)y * rowb;
        for (size_t x = 0; x < rowb; x++) o[x] = rs_clip(acc[x]);
    }
}

/* Runs the vertical pass with its own accumulator row. */
static int rs_vertical_run(const uint8_t *src, int w, uint8_t *dst, int dh, const rs_coeffs *c,
                           int shift) {
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)w * 3);
    if (!acc) return err_set(TV_ENOMEM, "image: cannot allocate a resize row of width %d", w);
    rs_vertical(src, w, dst, dh, c, shift, acc);
    free(acc);
    return TV_OK;
}

/* Vertical pass over the full width into iw x out_h, then horizontal (out_h < ih here). */
static int resize_vertical_first(const img_rgb *in, int out_w, int out_h, img_rgb *out) {
    int iw = in->width, rc;
    rs_coeffs cv = {0}, ch = {0};
    uint8_t *tmp = NULL, *dst = NULL;
    if ((rc = rs_coeffs_make(in->height, out_h, &cv)) != 0) return rc;
    if ((rc = alloc_pixels(iw, out_h, 3, &tmp)) != 0) goto done;
    if ((rc = rs_vertical_run(in->rgb, iw, tmp, out_h, &cv, 0)) != 0) goto done;
    if ((rc = alloc_pixels(out_w, out_h, 3, &dst)) != 0) goto done;
    if (out_w != iw) {
        if ((rc = rs_coeffs_make(iw, out_w, &ch)) != 0) goto done;
        rs_horizontal(tmp, iw, 0, out_h, dst, out_w, &ch);
    } else {
        memcpy(dst, tmp, (size_t)out_w * (size_t)out_h * 3);
    }
    out->width = out_w;
    out->height = out_h;
    out->rgb = dst;
    dst = NULL;
done:
    free(tmp);
    free(dst);
    rs_coeffs_free(&cv);
    rs_coeffs_free(&ch);
    return rc;
}

int img_resize_bicubic(const img_rgb *in, int out_w, int out_h, img_rgb *out) {
    TV_ASSERT(in && out && in->rgb);
    *out = (img_rgb){0, 0, NULL};
    if (out_w < 1 || out_h < 1 || out_w > 65535 || out_h > 65535 || in->width < 1 ||
        in->height < 1)
        return err_set(TV_EINVAL, "image: cannot resize %dx%d to %dx%d", in->width, in->height,
                       out_w, out_h);
    int iw = in->width, ih = in->height, rc;
    /* Pillow 13 resamples vertically first when the height shrinks by more than twice as many
     * pixels as the width does (found by probing it; results differ by a few levels otherwise). */
    if (out_h < ih && (int64_t)(ih - out_h) > 2 * ((int64_t)iw - out_w))
        return resize_vertical_first(in, out_w, out_h, out);
    rs_coeffs cv = {0}, ch = {0};
    uint8_t *tmp = NULL, *dst = NULL;
    if ((rc = rs_coeffs_make(ih, out_h, &cv)) != 0) return rc;
    /* Like Pillow: only the source rows the vertical pass reads go through the horizontal pass. */
    int y_first = cv.first[0];
    int y_last = cv.first[out_h - 1] + cv.count[out_h - 1];
    const uint8_t *mid = in->rgb;
    int shift = 0;
    if (out_w != iw) {
        if ((rc = rs_coeffs_make(iw, out_w, &ch)) != 0) goto done;
        if ((rc = alloc_pixels(out_w, y_last - y_first, 3, &tmp)) != 0) goto done;
        rs_horizontal(in->rgb, iw, y_first, y_last - y_first, tmp, out_w, &ch);
        mid = tmp;
        shift = y_first;
    }
    if ((rc = alloc_pixels(out_w, out_h, 3, &dst)) != 0) goto done;
    if (out_h != ih) {
        if ((rc = rs_vertical_run(mid, out_w, dst, out_h, &cv, shift)) != 0) goto done;
    } else { /* no vertical change: the rows are the (possibly horizontally resampled) input */
        memcpy(dst, mid, (size_t)out_w * (size_t)out_h * 3);
    }
    out->width = out_w;
    out->height = out_h;
    out->rgb = dst;
    dst = NULL;
done:
    free(tmp);
    free(dst);
    rs_coeffs_free(&cv);
    rs_coeffs_free(&ch);
    return rc;
}

/* ==== normalise =============================================================================== */

void img_normalize(const img_rgb *in, const float mean[3], const float std[3], float *out) {
    TV_ASSERT(in && in->rgb && out);
    size_t n = (size_t)in->width * (size_t)in->height;
    for (int c = 0; c < 3; c++) {
        /* Same float32 operations as torchvision: x.div(255), then sub_(mean).div_(std). */
        float lut[256];
        for (int v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - mean[c]) / std[c];
        const uint8_t *p = in->rgb + c;
        float *o = out + (size_t)c * n;
        for (size_t i = 0; i < n; i++, p += 3) o[i] = lut[*p];
    }
}

int img_preprocess(const void *buf, size_t len, const img_limits *lim, int size,
                   const float mean[3], const float std[3], float *out) {
    img_rgb im, rs;
    int rc = img_decode(buf, len, lim, &im);
    if (rc) return rc;
    if (im.width == size && im.height == size) {
        img_normalize(&im, mean, std, out);
        img_free(&im);
        return TV_OK;
    }
    rc = img_resize_bicubic(&im, size, size, &rs);
    img_free(&im);
    if (rc) return rc;
    img_normalize(&rs, mean, std, out);
    img_free(&rs);
    return TV_OK;
}
