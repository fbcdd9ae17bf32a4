#include "dtype.h"

#include <string.h>

#include "err.h"

static const struct { const char *name; size_t size; } dtype_info[DT_COUNT] = {
    [DT_F32] = {"F32", 4}, [DT_F16] = {"F16", 2}, [DT_BF16] = {"BF16", 2}, [DT_F64] = {"F64", 8},
    [DT_I8] = {"I8", 1},   [DT_U8] = {"U8", 1},   [DT_I16] = {"I16", 2},   [DT_I32] = {"I32", 4},
    [DT_I64] = {"I64", 8}, [DT_BOOL] = {"BOOL", 1},
};

size_t dtype_size(dtype_id dt) {
    TV_ASSERT((unsigned)dt < DT_COUNT);
    return dtype_info[dt].size;
}

const char *dtype_name(dtype_id dt) {
    TV_ASSERT((unsigned)dt < DT_COUNT);
    return dtype_info[dt].name;
}

int dtype_parse(const char *s, dtype_id *out) {
    for (int i = 0; i < DT_COUNT; i++)
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (dtype_id)i;
            return TV_OK;
        }
    return err_set(TV_EFORMAT, "unknown dtype '%s'", s);
}

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float dtype_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));  /* inf / nan */
    if (exp == 0) {                                                        /* zero / subnormal */
        float v = (float)man * (1.0f / 16777216.0f);                       /* man * 2^-24 */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t dtype_f32_to_f16(float f) {
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff)); /* nan */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal or 0 */
        /* value * 2^24 rounded to nearest even gives the subnormal mantissa; float's own RNE
         * does it exactly because the product is exact and the add aligns the binary point. */
        float v = bits_f32(ax) * 16777216.0f;                 /* exact: power-of-two scale */
        uint32_t m = (uint32_t)(v + 8388608.0f) - 8388608u;   /* RNE to integer (v < 2^23) */
        return (uint16_t)(sign | m);
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);             /* RNE on the dropped 13 bits */
    return (uint16_t)(sign | (((r >> 13) - (112u << 10)) & 0x7fff));
}

float dtype_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t dtype_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);  /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

void dtype_to_f32(dtype_id dt, const void *src, float *dst, size_t n) {
    const unsigned char *p = src;
    size_t es = dtype_size(dt);
    for (size_t i = 0; i < n; i++, p += es) {
        union { float f; double d; uint16_t h; int8_t i8; uint8_t u8; int16_t i16; int32_t i32;
                int64_t i64; } v;
        memcpy(&v, p, es);
        switch (dt) {
        case DT_F32: dst[i] = v.f; break;
        case DT_F16: dst[i] = dtype_f16_to_f32(v.h); break;
        case DT_BF16: dst[i] = dtype_bf16_to_f32(v.h); break;
        case DT_F64: dst[i] = (float)v.d; break;
        case DT_I8: dst[i] = v.i8; break;
        case DT_U8: case DT_BOOL: dst[i] = v.u8; break;
        case DT_I16: dst[i] = v.i16; break;
        case DT_I32: dst[i] = (float)v.i32; break;
        case DT_I64: dst[i] = (float)v.i64; break;
        default: TV_ASSERT(0 && "bad dtype");
        }
    }
}
