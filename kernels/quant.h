/* quant — the q8 and q4 weight formats: exact storage layout, quantise and dequantise.
 *
 * Both are symmetric, per-block formats over the K (input) dimension of a weight W[N, K], blocks
 * of QUANT_BLOCK = 32 consecutive elements of one row. K must be a multiple of 32 (every width of
 * the models we serve is). A quantised weight is two tensors, as the bundle stores them:
 *
 *   q8:  values  I8  [N, K]        q = round(w / s), in [-127, 127]
 *        scales  F32 [N, K/32]     s = max|w| / 127 over the block (0 for an all-zero block)
 *        w ~= s * q
 *
 *   q4:  values  U8  [N, K/2]      16 bytes per block; byte j (0..15) of block b holds
 *                                  element 32b + j in its low nibble and element 32b + j + 16 in
 *                                  its high nibble, each as (q + 8) with q in [-8, 7]
 *        scales  F32 [N, K/32]     s = max|w| / 7 over the block; q = round(w / s) in [-7, 7]
 *        w ~= s * q                (the code -8 is never produced but decodes as -8 * s)
 *
 * Rounding is to nearest, ties away from zero (roundf). Scales are f32 so that quantising an
 * f32 checkpoint loses nothing beyond the integer rounding: |w - s*q| <= s/2. */
#ifndef TV_QUANT_H
#define TV_QUANT_H

#include <stdint.h>

#define QUANT_BLOCK 32

/* Bytes of the values tensor of an [n, k] weight: n*k for q8, n*k/2 for q4. */
int64_t quant_q8_bytes(int64_t n, int64_t k);
int64_t quant_q4_bytes(int64_t n, int64_t k);

/* Quantises w[n, k] (f32, row-major) into q (caller-allocated, quant_q*_bytes) and scale
 * (caller-allocated, n * k/32 floats). Returns 0, or TV_EINVAL if k is not a positive multiple of
 * 32, n < 1, or w contains a non-finite value. */
int quant_q8(const float *w, int64_t n, int64_t k, int8_t *q, float *scale);
int quant_q4(const float *w, int64_t n, int64_t k, uint8_t *q, float *scale);

/* Dequantises one row of k elements (k a multiple of 32): q and scale point at the row's start
 * (q8: k bytes, q4: k/2 bytes; k/32 scales). out gets k floats. */
void quant_dequant_q8_row(const int8_t *q, const float *scale, int64_t k, float *out);
void quant_dequant_q4_row(const uint8_t *q, const float *scale, int64_t k, float *out);

/* Element k of a q4 row (the nibble arithmetic above, for scalar code). */
static inline int quant_q4_get(const uint8_t *row, int64_t k) {
    const uint8_t *blk = row + (k / QUANT_BLOCK) * (QUANT_BLOCK / 2);
    int j = (int)(k % QUANT_BLOCK);
    int nib = j < 16 ? (blk[j] & 0x0f) : (blk[j - 16] >> 4);
    return nib - 8;
}

#endif
