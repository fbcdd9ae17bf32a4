/* cache — the embedding cache: image embeddings keyed by model fingerprint and image SHA-256,
 * in Redis (hiredis; the distributed deployment) or in an in-memory LRU with a byte budget
 * (`tinyvlm serve`), behind one interface. The ONLY module that touches hiredis.
 *
 * Keys: "emb:{fingerprint}:{sha256 hex}", or "emb:{fingerprint}:{salt tag}:{sha256 hex}" for a
 * tenant with a private salt (tenants with different salts never share hits). cache_key builds it.
 *
 * Values: a small header — magic "TVEM", version, dtype, rows, dim, the fingerprint — then the
 * rows*dim values. cache_get checks the header against the caller's expectations; a value that
 * does not match (other model, other version, truncated) is a miss and is counted as an error.
 *
 * Redis down or slow: every call returns within the configured timeout with TV_EIO (counted in
 * the stats, logged as a warning at most once per state change); callers then carry embeddings
 * inline. The cache reconnects by itself (at most one attempt per second), so hits resume when
 * Redis is back. TTL applies to every put (0 = no expiry).
 *
 * Threads: every function is safe to call from several threads (one lock per cache). */
#ifndef TV_CACHE_H
#define TV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "msg.h" /* MSG_EMB_F16 / MSG_EMB_F32 */

typedef struct cache cache;

/* Bytes of the value header in front of the data: "TVEM", version, dtype, rows, dim (u32 LE),
 * the fingerprint (64 bytes, NUL-padded). */
#define CACHE_VALUE_HEADER 84

/* An embedding [rows, dim] of dtype MSG_EMB_F16 or MSG_EMB_F32 for the model `fingerprint`. */
typedef struct {
    uint32_t rows, dim, dtype;
    char fingerprint[65];
    void *data;   /* rows*dim values; owned by whoever filled the struct */
    size_t len;   /* bytes */
} cache_emb;

/* In-memory LRU holding at most budget_bytes (each entry counts its value, header included,
 * plus its key; least recently used evicted first; a get makes an entry the most recent, an
 * exists does not). A put bigger than the whole budget fails with TV_EIO (the caller then
 * carries the embedding inline). Returns 0 and *out (free with cache_free). */
int cache_mem_new(size_t budget_bytes, cache **out);

/* Redis at url ("redis://host:port[/db]" or "host:port"), values expiring after ttl_s seconds
 * (0 = never), each operation given at most timeout_ms. Tries to connect once at once (logging a
 * warning if Redis is not there) but succeeds even when Redis is not up yet (it will connect
 * later); fails only for a malformed url or a bad ttl/timeout (TV_EINVAL). */
int cache_redis_new(const char *url, int ttl_s, int timeout_ms, cache **out);

void cache_free(cache *c);

/* Writes the key for (fingerprint, sha256[32], salt) into buf (cap >= 160; salt NULL or "" =
 * shared). The salt itself never appears in the key, only a hash of it. */
void cache_key(char *buf, size_t cap, const char *fingerprint, const uint8_t sha256[32],
               const char *salt);

/* Stores e under key. Returns 0, TV_EIO (backend unavailable), TV_EINVAL (bad e). */
int cache_put(cache *c, const char *key, const cache_emb *e);

/* Looks key up; expects fingerprint (NULL or "" = any model) (and, for a found value, fills out with a malloc'd data the
 * caller frees with cache_emb_clear). Returns 0 (hit), TV_ENOTFOUND (miss, incl. a value whose
 * header does not match), TV_EIO (backend unavailable). */
int cache_get(cache *c, const char *key, const char *fingerprint, cache_emb *out);

/* 1 if key holds a value, 0 if not, TV_EIO if unavailable. Does not count as hit/miss. */
int cache_exists(cache *c, const char *key);

/* Frees e->data and zeroes e. */
void cache_emb_clear(cache_emb *e);

typedef struct {
    uint64_t hits, misses, errors, puts, evictions;
    uint64_t bytes, entries;   /* memory cache: current; Redis: 0 */
    int up;                    /* 1 if the backend answered last time */
    const char *kind;          /* "memory" | "redis" */
} cache_stats;

void cache_get_stats(cache *c, cache_stats *s);

#endif
