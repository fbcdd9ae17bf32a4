/* safetensors — read and write the HF safetensors format, zero copy.
 *
 * File layout: 8-byte little-endian header length N, N bytes of JSON (an object: tensor name ->
 * {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional "__metadata__" string->string
 * map), then the data section; offsets are relative to its start.
 *
 * Reading (st_file): the file is mapped once; every field of the header is validated (known
 * dtype, non-negative integer dims, rank <= TENSOR_MAX_DIMS, no numel overflow, offsets inside
 * the data section and matching numel * dtype size, no overlapping tensors, no duplicate names,
 * metadata string->string). Tensors come out as tensor_view pointing into the mapping: they live
 * as long as the st_file. Gaps between tensors are accepted; overlaps are not. An opened
 * st_file/st_model is read-only, so any number of threads may read it at once.
 *
 * Alignment: in files written by the package or by st_writer, every tensor's data is naturally
 * aligned (header padded to 8, tensors ordered by element size descending, the mapping page
 * aligned). A foreign file may place a tensor at any byte; callers that need typed access
 * should check ((uintptr_t)t->data % dtype_size(t->dtype)) or use dtype_to_f32, which accepts
 * unaligned input.
 *
 * Models (st_model): "a model's tensors, wherever they are": one .safetensors file, a
 * model.safetensors.index.json (HF sharded layout: {"metadata": {...}, "weight_map": {tensor:
 * shard file}}), or a directory holding either (the index is preferred). Every shard is opened
 * once; every name in weight_map must be in the shard it names. One lookup over all shards.
 *
 * Writing (st_writer): collect tensors (borrowed pointers, or a callback that produces the bytes
 * in chunks so a multi-GB bundle is never held twice) and string metadata, then write the file
 * atomically (temp file in the same directory + rename). The bytes are identical to what the
 * Python `safetensors` package writes for the same tensors: tensors ordered by dtype (the
 * package's Dtype enum, descending: I64 F64 F32 I32 BF16 F16 I16 I8 U8 BOOL) then by name
 * (bytewise), compact JSON with "__metadata__" first, the header padded with spaces to a
 * multiple of 8, data packed in that order. One difference: the package writes several metadata
 * keys in random (HashMap) order; we sort them, so our output is reproducible.
 *
 * All functions returning int give TV_OK or a negative TV_E* code with err_msg() set. Malformed
 * files give TV_EFORMAT; open/read/write failures TV_EIO; missing names TV_ENOTFOUND. */
#ifndef TV_SAFETENSORS_H
#define TV_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

/* Largest JSON header accepted (the reference implementation also caps it at 100 MB). */
#define ST_MAX_HEADER_BYTES (100u * 1000u * 1000u)

/* ---- one file ------------------------------------------------------------------------------ */

typedef struct st_file st_file;

/* Maps and validates path. Returns 0 and *out (free with st_free), or an error with *out NULL. */
int st_open(const char *path, st_file **out);

/* Validates a safetensors image already in memory. data is borrowed, not copied: it must stay
 * valid and unchanged until st_free. label names the buffer in messages (may be NULL). */
int st_open_buffer(const void *data, size_t size, const char *label, st_file **out);

/* Unmaps and frees; every view and string obtained from f dies with it. NULL is a no-op. */
void st_free(st_file *f);

/* The path given to st_open (or the label); never NULL, owned by f. */
const char *st_path(const st_file *f);

/* Number of tensors. */
size_t st_count(const st_file *f);

/* The i-th tensor in header order (i < st_count), owned by f. */
const tensor_view *st_tensor_at(const st_file *f, size_t i);

/* The tensor called name, or NULL when there is none (no message set). Owned by f. */
const tensor_view *st_find(const st_file *f, const char *name);

/* Like st_find but returns TV_ENOTFOUND with a message naming the tensor and the file. */
int st_get(const st_file *f, const char *name, const tensor_view **out);

/* __metadata__ entries, in header order. Keys and values are NUL-terminated, owned by f. */
size_t st_meta_count(const st_file *f);
const char *st_meta_key(const st_file *f, size_t i);
const char *st_meta_value(const st_file *f, size_t i);
/* Value for key, or NULL when absent. */
const char *st_meta_get(const st_file *f, const char *key);

/* The raw header JSON bytes (not NUL-terminated, trailing padding included) and their length;
 * points into the mapping. For fingerprints. */
const char *st_header(const st_file *f, size_t *len);

/* ---- a model: one file, a sharded index, or a directory ------------------------------------ */

typedef struct st_model st_model;

/* Opens path: a .safetensors file, a *.index.json, or a directory containing
 * model.safetensors.index.json or model.safetensors. Returns 0 and *out (free with
 * st_model_free), or an error (TV_ENOTFOUND when a directory holds neither). */
int st_model_open(const char *path, st_model **out);

/* Frees the model and unmaps every shard; NULL is a no-op. */
void st_model_free(st_model *m);

/* All tensors: for an index, the weight_map's names in its order; for one file, header order. */
size_t st_model_count(const st_model *m);
const tensor_view *st_model_tensor_at(const st_model *m, size_t i);
const tensor_view *st_model_find(const st_model *m, const char *name);   /* NULL if absent */
int st_model_get(const st_model *m, const char *name, const tensor_view **out);

/* The shard files (1 for an unsharded model), owned by m. */
size_t st_model_nfiles(const st_model *m);
const st_file *st_model_file(const st_model *m, size_t i);

/* Model metadata: the index's "metadata" object (string values as is, numbers as integer
 * text, e.g. "total_size"), or the single file's __metadata__. NULL when absent; owned by m. */
const char *st_model_meta_get(const st_model *m, const char *key);

/* ---- writer -------------------------------------------------------------------------------- */

typedef struct st_writer st_writer;

/* Produces bytes [offset, offset + len) of a tensor's data into dst (row-major, little-endian).
 * Called in increasing offset order, each tensor once from 0 to its end. Returns 0, or a
 * negative TV_E* code with err_set (the write is then abandoned and the temp file removed). */
typedef int (*st_fill_fn)(void *user, void *dst, size_t offset, size_t len);

/* A new empty writer (free with st_writer_free). */
st_writer *st_writer_new(void);
void st_writer_free(st_writer *w);   /* NULL is a no-op; frees copies, never the data */

/* Adds a tensor whose nbytes = numel * dtype_size bytes are at data (borrowed: must stay valid
 * until st_writer_write returns). name and shape are copied. Refuses (TV_EINVAL) an empty or
 * duplicate name, "__metadata__", a bad dtype, ndim outside 0..TENSOR_MAX_DIMS, a negative dim,
 * or a size that overflows. data may be NULL only when nbytes is 0. */
int st_writer_add(st_writer *w, const char *name, dtype_id dt, int ndim, const int64_t *shape,
                  const void *data);

/* Same, but the bytes come from fill(user, ...) at write time, in chunks. */
int st_writer_add_fn(st_writer *w, const char *name, dtype_id dt, int ndim, const int64_t *shape,
                     st_fill_fn fill, void *user);

/* Sets (or replaces) a metadata entry; both strings are copied. */
int st_writer_set_meta(st_writer *w, const char *key, const char *value);

/* Largest chunk passed to a fill callback (default 4 MiB; >= 1). Mostly for tests. */
void st_writer_set_chunk(st_writer *w, size_t bytes);

/* Writes everything to path atomically: a temp file next to it, every write checked, fsync,
 * then rename over path. On failure path is untouched and the temp file removed. The writer
 * can be written again or freed afterwards. */
int st_writer_write(st_writer *w, const char *path);

#endif
