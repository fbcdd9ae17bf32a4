/* zipread — a minimal, read-only ZIP reader over bytes already in memory (usually a mapfile).
 *
 * Why hand-written: the .pth reader needs zero-copy views of each stored entry at its known
 * offset inside the mmapped checkpoint (tensors are pointers into the mapping), which the
 * streaming/extracting APIs of libzip and minizip do not give; and torch.save archives use only
 * the STORED method, so no decompressor is needed. What it handles: the end-of-central-directory
 * record (found by a bounded backwards scan over a trailing comment), the ZIP64 locator and
 * record, ZIP64 extra fields in central entries, and a check of every local header. Every offset
 * and length read from the file is bounds-checked against the buffer; CRCs are not verified (that
 * would mean reading every byte of multi-GB checkpoints at open). */
#ifndef TV_ZIPREAD_H
#define TV_ZIPREAD_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;          /* NUL-terminated copy, owned by the zipr */
    int method;                /* 0 = stored; anything else cannot be read */
    uint64_t size;             /* uncompressed size */
    uint64_t csize;            /* size as stored */
    uint64_t data_offset;      /* where the stored bytes start in the buffer */
} zipr_entry;

typedef struct zipr zipr;

/* Parses the archive in buf[0..len). buf must outlive the zipr (nothing is copied but names).
 * label names the archive in messages (may be NULL). Returns 0 and *out (free with zipr_free),
 * or TV_EFORMAT / TV_EUNSUPPORTED (multi-disk, encrypted) / TV_ELIMIT with a message. */
int zipr_open_mem(const unsigned char *buf, size_t len, const char *label, zipr **out);

/* Frees the entry table; NULL is a no-op. The buffer is not touched. */
void zipr_free(zipr *z);

/* Number of entries, and entry i (0 <= i < count; NULL otherwise). Entries live as long as z. */
size_t zipr_count(const zipr *z);
const zipr_entry *zipr_entry_at(const zipr *z, size_t i);

/* The first entry with exactly this name, or NULL. */
const zipr_entry *zipr_find(const zipr *z, const char *name);

/* Points *data at the entry's bytes inside the buffer and sets *len. Returns 0, or
 * TV_EUNSUPPORTED naming the entry and its method if it is not stored. */
int zipr_data(const zipr *z, const zipr_entry *e, const unsigned char **data, size_t *len);

#endif
