/* dtype — element types of stored tensors, their sizes and names, and scalar conversions
 * between f32 and the 16-bit floats (round-to-nearest-even, as torch and numpy do). */
#ifndef TV_DTYPE_H
#define TV_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DT_F32 = 0, DT_F16, DT_BF16, DT_F64,
    DT_I8, DT_U8, DT_I16, DT_I32, DT_I64, DT_BOOL,
    DT_COUNT
} dtype_id;

/* Bytes per element (1..8). dt must be valid. */
size_t dtype_size(dtype_id dt);

/* safetensors spelling: "F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL". */
const char *dtype_name(dtype_id dt);

/* Parses a safetensors dtype string; returns 0 and sets *out, or TV_EFORMAT (message set). */
int dtype_parse(const char *s, dtype_id *out);

float dtype_f16_to_f32(uint16_t h);
uint16_t dtype_f32_to_f16(float f);   /* RNE; overflow -> inf; NaN stays NaN */
float dtype_bf16_to_f32(uint16_t b);
uint16_t dtype_f32_to_bf16(float f);  /* RNE; NaN stays NaN */

/* Converts n elements of type dt at src to f32 at dst. Integer and bool types convert by value.
 * src may be unaligned. */
void dtype_to_f32(dtype_id dt, const void *src, float *dst, size_t n);

#endif
