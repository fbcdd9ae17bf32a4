/* zipread — see zipread.h for why this exists. Layout references: PKWARE APPNOTE.TXT 4.3. */
#include "zipread.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_Z64_LOCATOR 0x07064b50u
#define SIG_Z64_EOCD 0x06064b50u

#define EOCD_LEN 22
#define Z64_LOCATOR_LEN 20
#define Z64_EOCD_LEN 56
#define CENTRAL_LEN 46
#define LOCAL_LEN 30
#define MAX_COMMENT 0xffff
#define MAX_ENTRIES (1u << 24) /* far beyond any checkpoint; bounds the table we allocate */

typedef struct {
    const char *name;
    size_t i;
} zname;

struct zipr {
    zname *sorted; /* (name, index) by name then index: lookups are O(log n) per storage */
    const unsigned char *buf;
    size_t len;
    const char *label;
    zipr_entry *entries;
    char *names;  /* all names, NUL-separated; entries[i].name points in here */
    size_t count;
};

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* True when [off, off+n) lies inside the buffer (overflow-safe). */
static int in_buf(const zipr *z, uint64_t off, uint64_t n) {
    return off <= z->len && n <= z->len - off;
}

static const char *lbl(const zipr *z) { return z->label ? z->label : "zip"; }

typedef struct {
    uint64_t count, cd_size, cd_offset;
} cd_info;

/* Finds the EOCD record: scans back from the end over at most a 64 KiB comment; the record must
 * account exactly for the bytes after it, which rejects signatures that occur inside a comment. */
static int find_eocd(const zipr *z, size_t *pos) {
    if (z->len < EOCD_LEN) return err_set(TV_EFORMAT, "%s: too short to be a zip archive", lbl(z));
    size_t last = z->len - EOCD_LEN;
    size_t stop = last > MAX_COMMENT ? last - MAX_COMMENT : 0;
    for (size_t p = last + 1; p-- > stop;) {
        const unsigned char *e = z->buf + p;
        if (rd32(e) == SIG_EOCD && p + EOCD_LEN + rd16(e + 20) == z->len) {
            *pos = p;
            return TV_OK;
        }
    }
    return err_set(TV_EFORMAT, "%s: no end-of-central-directory record (not a zip, or truncated)",
                   lbl(z));
}

/* Reads the ZIP64 locator right before the EOCD (if any) and the ZIP64 record it points to. */
static int read_zip64(const zipr *z, size_t eocd, cd_info *cd, int *found) {
    *found = 0;
    if (eocd < Z64_LOCATOR_LEN) return TV_OK;
    const unsigned char *loc = z->buf + eocd - Z64_LOCATOR_LEN;
    if (rd32(loc) != SIG_Z64_LOCATOR) return TV_OK;
    if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
        return err_set(TV_EUNSUPPORTED, "%s: multi-disk zip archives are not supported", lbl(z));
    uint64_t off = rd64(loc + 8);
    if (!in_buf(z, off, Z64_EOCD_LEN) || off + Z64_EOCD_LEN > eocd - Z64_LOCATOR_LEN)
        return err_set(TV_EFORMAT, "%s: ZIP64 end record offset %llu out of range", lbl(z),
                       (unsigned long long)off);
    const unsigned char *r = z->buf + off;
    if (rd32(r) != SIG_Z64_EOCD)
        return err_set(TV_EFORMAT, "%s: bad ZIP64 end record signature", lbl(z));
    if (rd32(r + 16) != 0 || rd32(r + 20) != 0 || rd64(r + 24) != rd64(r + 32))
        return err_set(TV_EUNSUPPORTED, "%s: multi-disk zip archives are not supported", lbl(z));
    cd->count = rd64(r + 32);
    cd->cd_size = rd64(r + 40);
    cd->cd_offset = rd64(r + 48);
    *found = 1;
    return TV_OK;
}

static int read_cd_info(const zipr *z, cd_info *cd) {
    size_t eocd = 0;
    int rc = find_eocd(z, &eocd);
    if (rc) return rc;
    const unsigned char *e = z->buf + eocd;
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0 || rd16(e + 8) != rd16(e + 10))
        return err_set(TV_EUNSUPPORTED, "%s: multi-disk zip archives are not supported", lbl(z));
    cd->count = rd16(e + 10);
    cd->cd_size = rd32(e + 12);
    cd->cd_offset = rd32(e + 16);
    int z64;
    rc = read_zip64(z, eocd, cd, &z64);
    if (rc) return rc;
    if (!z64 && (cd->count == 0xffff || cd->cd_size == 0xffffffffu ||
                 cd->cd_offset == 0xffffffffu))
        return err_set(TV_EFORMAT, "%s: ZIP64 sizes flagged but no ZIP64 locator", lbl(z));
    if (!in_buf(z, cd->cd_offset, cd->cd_size) || cd->cd_offset + cd->cd_size > eocd)
        return err_set(TV_EFORMAT, "%s: central directory (offset %llu, size %llu) out of range",
                       lbl(z), (unsigned long long)cd->cd_offset, (unsigned long long)cd->cd_size);
    if (cd->count > MAX_ENTRIES || cd->count > cd->cd_size / CENTRAL_LEN)
        return err_set(TV_EFORMAT, "%s: %llu entries cannot fit a %llu-byte central directory",
                       lbl(z), (unsigned long long)cd->count, (unsigned long long)cd->cd_size);
    return TV_OK;
}

/* Replaces the 0xffffffff placeholders with the values from the ZIP64 extra field (id 1), which
 * holds, in this order, only those that were saturated: size, csize, local header offset. */
static int apply_zip64_extra(const zipr *z, const unsigned char *ex, size_t exlen, uint64_t *size,
                             uint64_t *csize, uint64_t *lho, const char *name) {
    int need_size = *size == 0xffffffffu, need_csize = *csize == 0xffffffffu,
        need_lho = *lho == 0xffffffffu;
    if (!need_size && !need_csize && !need_lho) return TV_OK;
    size_t p = 0;
    while (exlen - p >= 4) {
        uint16_t id = rd16(ex + p), n = rd16(ex + p + 2);
        if (n > exlen - p - 4) break;
        if (id == 1) {
            const unsigned char *f = ex + p + 4;
            size_t want = 8u * (size_t)(need_size + need_csize + need_lho);
            if (n < want)
                return err_set(TV_EFORMAT, "%s: entry '%s': ZIP64 extra field too short", lbl(z),
                               name);
            if (need_size) *size = rd64(f), f += 8;
            if (need_csize) *csize = rd64(f), f += 8;
            if (need_lho) *lho = rd64(f);
            return TV_OK;
        }
        p += 4 + (size_t)n;
    }
    return err_set(TV_EFORMAT, "%s: entry '%s' has saturated sizes but no ZIP64 extra field",
                   lbl(z), name);
}

/* Checks the local header at lho against the central entry and sets e->data_offset. */
static int check_local(const zipr *z, zipr_entry *e, uint64_t lho, size_t name_len) {
    if (!in_buf(z, lho, LOCAL_LEN))
        return err_set(TV_EFORMAT, "%s: entry '%s': local header offset %llu out of range",
                       lbl(z), e->name, (unsigned long long)lho);
    const unsigned char *h = z->buf + lho;
    if (rd32(h) != SIG_LOCAL)
        return err_set(TV_EFORMAT, "%s: entry '%s': bad local header signature", lbl(z),
                       e->name);
    uint64_t start = lho + LOCAL_LEN + rd16(h + 26) + (uint64_t)rd16(h + 28);
    if (rd16(h + 26) != name_len || !in_buf(z, lho + LOCAL_LEN, name_len) ||
        memcmp(h + LOCAL_LEN, e->name, name_len) != 0)
        return err_set(TV_EFORMAT, "%s: entry '%s': local header names a different file",
                       lbl(z), e->name);
    if (rd16(h + 8) != e->method)
        return err_set(TV_EFORMAT, "%s: entry '%s': local and central methods differ", lbl(z),
                       e->name);
    if (!in_buf(z, start, e->csize))
        return err_set(TV_EFORMAT, "%s: entry '%s': data (%llu bytes at %llu) runs past the end",
                       lbl(z), e->name, (unsigned long long)e->csize,
                       (unsigned long long)start);
    if (e->method == 0 && e->size != e->csize)
        return err_set(TV_EFORMAT, "%s: stored entry '%s' has size %llu but %llu stored bytes",
                       lbl(z), e->name, (unsigned long long)e->size,
                       (unsigned long long)e->csize);
    e->data_offset = start;
    return TV_OK;
}

/* Parses central entry i at *pos (inside the directory [pos, end)) and advances *pos. */
static int read_entry(zipr *z, size_t i, uint64_t *pos, uint64_t end, char **name_out) {
    if (end - *pos < CENTRAL_LEN || rd32(z->buf + *pos) != SIG_CENTRAL)
        return err_set(TV_EFORMAT, "%s: central directory entry %zu is malformed", lbl(z), i);
    const unsigned char *c = z->buf + *pos;
    size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
    if (end - *pos - CENTRAL_LEN < (uint64_t)nlen + xlen + clen)
        return err_set(TV_EFORMAT, "%s: central directory entry %zu runs past the directory",
                       lbl(z), i);
    const unsigned char *nm = c + CENTRAL_LEN;
    if (memchr(nm, 0, nlen))
        return err_set(TV_EFORMAT, "%s: entry %zu has a NUL byte in its name", lbl(z), i);
    zipr_entry *e = &z->entries[i];
    memcpy(*name_out, nm, nlen);
    (*name_out)[nlen] = 0;
    e->name = *name_out;
    *name_out += nlen + 1;
    if (rd16(c + 8) & 1)
        return err_set(TV_EUNSUPPORTED, "%s: entry '%s' is encrypted", lbl(z), e->name);
    e->method = rd16(c + 10);
    e->csize = rd32(c + 20);
    e->size = rd32(c + 24);
    uint64_t lho = rd32(c + 42);
    int rc = apply_zip64_extra(z, nm + nlen, xlen, &e->size, &e->csize, &lho, e->name);
    if (rc) return rc;
    rc = check_local(z, e, lho, nlen);
    if (rc) return rc;
    *pos += CENTRAL_LEN + nlen + xlen + clen;
    return TV_OK;
}

static int cmp_zname(const void *a, const void *b) {
    const zname *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

int zipr_open_mem(const unsigned char *buf, size_t len, const char *label, zipr **out) {
    TV_ASSERT(out);
    *out = NULL;
    zipr *z = tv_xcalloc(1, sizeof *z);
    z->buf = buf;
    z->len = buf ? len : 0;
    z->label = label;
    cd_info cd = {0};
    int rc = read_cd_info(z, &cd);
    if (rc) goto fail;
    /* Names total at most cd_size bytes, plus one NUL each. */
    z->entries = tv_xcalloc(cd.count ? cd.count : 1, sizeof *z->entries);
    z->names = tv_xmalloc(cd.cd_size + cd.count + 1);
    char *np = z->names;
    uint64_t pos = cd.cd_offset, end = cd.cd_offset + cd.cd_size;
    for (z->count = 0; z->count < cd.count; z->count++) {
        rc = read_entry(z, z->count, &pos, end, &np);
        if (rc) goto fail;
    }
    z->sorted = tv_xmalloc((z->count ? z->count : 1) * sizeof *z->sorted);
    for (size_t i = 0; i < z->count; i++) z->sorted[i] = (zname){z->entries[i].name, i};
    qsort(z->sorted, z->count, sizeof *z->sorted, cmp_zname);
    *out = z;
    return TV_OK;
fail:
    zipr_free(z);
    return rc;
}

void zipr_free(zipr *z) {
    if (!z) return;
    free(z->entries);
    free(z->names);
    free(z->sorted);
    free(z);
}

size_t zipr_count(const zipr *z) { return z ? z->count : 0; }

const zipr_entry *zipr_entry_at(const zipr *z, size_t i) {
    return z && i < z->count ? &z->entries[i] : NULL;
}

const zipr_entry *zipr_find(const zipr *z, const char *name) {
    if (!z || !name) return NULL;
    size_t lo = 0, hi = z->count; /* lower bound: the first of equal names is the lowest index */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(z->sorted[mid].name, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < z->count && strcmp(z->sorted[lo].name, name) == 0)
        return &z->entries[z->sorted[lo].i];
    return NULL;
}

int zipr_data(const zipr *z, const zipr_entry *e, const unsigned char **data, size_t *len) {
    TV_ASSERT(z && e && data && len);
    if (e->method != 0)
        return err_set(TV_EUNSUPPORTED,
                       "%s: entry '%s' is compressed (method %d); only stored entries can be "
                       "read (torch.save writes them stored)",
                       lbl(z), e->name, e->method);
    *data = z->buf + e->data_offset;
    *len = (size_t)e->size;
    return TV_OK;
}
