/* image — decode JPEG/PNG bytes to RGB8, resize, normalise: the vision preprocessing.
 *
 * The reference is Python: Image.open(io.BytesIO(buf)).convert('RGB'), then
 * .resize((W, H), Image.BICUBIC), then torchvision ToTensor + Normalize. Each step here gives the
 * same numbers (see tests/unit/test_image.c and tools/goldens/image.py):
 *   - JPEG through libjpeg-turbo (accurate integer DCT, fancy upsampling, as Pillow); CMYK/YCCK
 *     JPEGs are read with Adobe's inverted polarity and converted with Pillow's cmyk->rgb formula.
 *   - PNG through libspng, samples converted as Pillow's modes do: alpha dropped (no
 *     compositing), tRNS ignored, 16-bit colour keeps the high byte, 16-bit gray (Pillow's
 *     mode I;16) becomes min(value, 255), 1/2/4-bit gray scaled to 0..255, palettes looked up.
 *   - Resize is Pillow's separable resampling (bicubic a = -0.5, antialiased when shrinking,
 *     22-bit fixed-point coefficients, 8-bit rounding between the passes), with Pillow 13's
 *     pass order: horizontal first, unless the height shrinks by more than twice as many
 *     pixels as the width (then vertical first).
 * EXIF orientation is not applied (Pillow's open/convert does not either).
 * This is the only module that calls libturbojpeg and libspng.
 * Everything is reentrant: no global state; safe from many threads at once. */
#ifndef TV_IMAGE_H
#define TV_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Refusal thresholds, all checked from the header before any pixel memory is allocated. */
typedef struct {
    size_t max_bytes;    /* encoded input size */
    uint32_t max_width;
    uint32_t max_height;
    uint64_t max_pixels; /* width * height */
} img_limits;

/* 20 MB, 16384 x 16384, 64 Mpx. */
#define IMG_LIMITS_DEFAULT ((img_limits){20u << 20, 16384, 16384, 64ull << 20})

typedef enum { IMG_FMT_UNKNOWN = 0, IMG_FMT_JPEG, IMG_FMT_PNG } img_format;

/* An RGB8 image: width*height pixels, 3 bytes each, interleaved, rows top to bottom with no
 * padding. Owns rgb (malloc'd); release with img_free. */
typedef struct {
    int width;
    int height;
    uint8_t *rgb;
} img_rgb;

/* Format from the magic bytes (never fails; IMG_FMT_UNKNOWN when not JPEG/PNG). */
img_format img_detect(const void *buf, size_t len);

/* "JPEG", "PNG" or "unknown". Static string. */
const char *img_format_name(img_format fmt);

/* Reads only the header: format and size, checked against lim (NULL = defaults). Returns 0, or
 * TV_EUNSUPPORTED (not JPEG/PNG), TV_EFORMAT (bad header), TV_ELIMIT, with a message.
 * Any of fmt, width, height may be NULL. */
int img_probe(const void *buf, size_t len, const img_limits *lim, img_format *fmt, int *width,
              int *height);

/* Decodes buf to RGB8 as Pillow's open().convert('RGB'). lim NULL = IMG_LIMITS_DEFAULT.
 * Returns 0 and fills *out (caller calls img_free), or a negative code with a message:
 * TV_EUNSUPPORTED (GIF, WebP, ...), TV_EFORMAT (corrupt or truncated), TV_ELIMIT (too large;
 * refused before decoding), TV_ENOMEM. On failure *out is {0, 0, NULL}. */
int img_decode(const void *buf, size_t len, const img_limits *lim, img_rgb *out);

/* Frees the pixels and zeroes *im. NULL or an already-freed image is a no-op. */
void img_free(img_rgb *im);

/* Resizes in to out_w x out_h as Pillow's resize((out_w, out_h), Image.BICUBIC). in is not
 * changed. Returns 0 and fills *out (caller calls img_free), or TV_EINVAL (sizes < 1 or above
 * 65535) / TV_ENOMEM with a message. */
int img_resize_bicubic(const img_rgb *in, int out_w, int out_h, img_rgb *out);

/* Writes (x / 255 - mean[c]) / std[c] in float32 as (3, height, width) planes, channel-major
 * (torchvision ToTensor + Normalize). out holds 3 * width * height floats. */
void img_normalize(const img_rgb *in, const float mean[3], const float std[3], float *out);

/* The vision worker's whole preprocessing: decode, resize to size x size (bicubic), normalise.
 * out is caller-owned, 3 * size * size floats (CHW). Returns 0 or the decode/resize error. */
int img_preprocess(const void *buf, size_t len, const img_limits *lim, int size,
                   const float mean[3], const float std[3], float *out);

#endif
