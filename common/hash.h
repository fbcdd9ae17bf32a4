/* hash — SHA-256 through OpenSSL's libcrypto (EVP), one-shot and incremental, and hex output.
 * The embedding cache keys images by the SHA-256 of their encoded bytes. */
#ifndef TV_HASH_H
#define TV_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_SHA256_LEN 32
#define HASH_SHA256_HEX_LEN 64 /* plus the NUL: buffers are 65 bytes */

/* SHA-256 of len bytes at data into out. Returns 0, or TV_EINTERNAL if libcrypto fails. */
int hash_sha256(const void *data, size_t len, uint8_t out[HASH_SHA256_LEN]);

/* Same, as 64 lowercase hex digits plus NUL in out. */
int hash_sha256_hex(const void *data, size_t len, char out[HASH_SHA256_HEX_LEN + 1]);

/* Lowercase hex of n bytes into out (2n+1 bytes, NUL-terminated). Returns out. */
char *hash_to_hex(const uint8_t *bin, size_t n, char *out);

/* Parses 2n hex digits (either case) into n bytes. Returns 0, or TV_EINVAL on a bad digit or
 * length. */
int hash_from_hex(const char *hex, uint8_t *bin, size_t n);

/* Incremental hashing (for large files and streams). */
typedef struct hash_sha256_ctx hash_sha256_ctx;

/* New context; NULL only if libcrypto cannot allocate one (message set). Free with
 * hash_sha256_free. */
hash_sha256_ctx *hash_sha256_new(void);
int hash_sha256_update(hash_sha256_ctx *c, const void *data, size_t len);
/* Writes the digest; the context may then be freed (not reused). */
int hash_sha256_final(hash_sha256_ctx *c, uint8_t out[HASH_SHA256_LEN]);
void hash_sha256_free(hash_sha256_ctx *c);

#endif
