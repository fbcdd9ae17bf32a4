/* pth — reads PyTorch checkpoints written by torch.save (zip format, torch >= 1.6) without
 * executing anything: a restricted unpickler interprets only the opcodes torch.save emits and
 * "calls" only a whitelist of globals (collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 * _rebuild_parameter, _rebuild_parameter_with_state, and the torch.*Storage types), each by our
 * own C code. Any other global (os.system, builtins.eval, ...) or opcode is refused with a
 * message naming it; hostile pickles are further bounded by limits on stack, memo, objects and
 * nesting.
 *
 * Tensors come out as tensor_views named by their path through nested dicts joined with '.'
 * ({'model': {'query_tokens': T}} -> "model.query_tokens"; list/tuple items by index). A
 * contiguous, aligned tensor points straight into the mapped file; a non-contiguous view (a
 * transpose, an expand) is gathered once at open into a buffer the pth_file owns. Int, float,
 * bool and string leaves ("epoch") can be read by name; other leaves are ignored. The legacy
 * (pre-1.6) torch.save format is refused with a message saying to re-save it. */
#ifndef TV_PTH_H
#define TV_PTH_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

typedef struct pth_file pth_file;

/* Maps path and reads its whole structure (tensors' bytes stay in the mapping). Returns 0 and
 * *out (free with pth_free), or a negative TV_E* code with a message: TV_EIO (cannot open),
 * TV_EFORMAT (malformed), TV_EUNSUPPORTED (legacy format, forbidden global or opcode, big-endian,
 * compressed entry), TV_ELIMIT (a safety limit was hit). */
int pth_open(const char *path, pth_file **out);

/* Same, over bytes in memory that the caller keeps alive (and unchanged) until pth_free.
 * label names the data in messages (may be NULL). */
int pth_open_mem(const void *buf, size_t len, const char *label, pth_file **out);

/* Frees everything, unmapping the file if pth_open mapped it; NULL is a no-op. Every view and
 * name obtained from p dies with it. */
void pth_free(pth_file *p);

/* Number of tensors, in the order the checkpoint lists them. */
size_t pth_count(const pth_file *p);

/* Tensor i (NULL when out of range), or the tensor with this flattened name (NULL when absent).
 * The view and its name are owned by p. */
const tensor_view *pth_get(const pth_file *p, size_t i);
const tensor_view *pth_find(const pth_file *p, const char *name);

/* Non-tensor leaves by flattened name. pth_get_int accepts int and bool leaves; pth_get_float
 * accepts float and int leaves; pth_get_str gives a NUL-terminated string owned by p. Each
 * returns 0, TV_ENOTFOUND (no such leaf) or TV_EINVAL (a leaf of another type), with a message. */
int pth_get_int(const pth_file *p, const char *name, int64_t *v);
int pth_get_float(const pth_file *p, const char *name, double *v);
int pth_get_str(const pth_file *p, const char *name, const char **v);

/* The bytes the checkpoint was read from (the mapping for pth_open), so callers can tell whether
 * a view is zero-copy: data lies inside [base, base + len). */
const void *pth_base(const pth_file *p, size_t *len);

/* The archive's top folder name (torch writes the file's stem, often "archive"). Owned by p. */
const char *pth_prefix(const pth_file *p);

#endif
