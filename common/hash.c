#include "hash.h"

#include <openssl/evp.h>
#include <stdlib.h>

#include "err.h"

struct hash_sha256_ctx {
    EVP_MD_CTX *md;
};

int hash_sha256(const void *data, size_t len, uint8_t out[HASH_SHA256_LEN]) {
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != HASH_SHA256_LEN)
        return err_set(TV_EINTERNAL, "SHA-256 failed in libcrypto");
    return TV_OK;
}

char *hash_to_hex(const uint8_t *bin, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bin[i] >> 4];
        out[2 * i + 1] = digits[bin[i] & 15];
    }
    out[2 * n] = 0;
    return out;
}

int hash_sha256_hex(const void *data, size_t len, char out[HASH_SHA256_HEX_LEN + 1]) {
    uint8_t d[HASH_SHA256_LEN];
    int rc = hash_sha256(data, len, d);
    if (rc) return rc;
    hash_to_hex(d, sizeof d, out);
    return TV_OK;
}

static int hash_nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int hash_from_hex(const char *hex, uint8_t *bin, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!hex[2 * i] || !hex[2 * i + 1]) return err_set(TV_EINVAL, "hex string too short");
        int hi = hash_nibble(hex[2 * i]), lo = hash_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return err_set(TV_EINVAL, "bad hex digit at %zu", 2 * i);
        bin[i] = (uint8_t)(hi << 4 | lo);
    }
    if (hex[2 * n]) return err_set(TV_EINVAL, "hex string longer than %zu digits", 2 * n);
    return TV_OK;
}

hash_sha256_ctx *hash_sha256_new(void) {
    hash_sha256_ctx *c = tv_xcalloc(1, sizeof *c);
    c->md = EVP_MD_CTX_new();
    if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
        hash_sha256_free(c);
        err_set(TV_EINTERNAL, "cannot start SHA-256 in libcrypto");
        return NULL;
    }
    return c;
}

int hash_sha256_update(hash_sha256_ctx *c, const void *data, size_t len) {
    if (EVP_DigestUpdate(c->md, data, len) != 1)
        return err_set(TV_EINTERNAL, "SHA-256 update failed in libcrypto");
    return TV_OK;
}

int hash_sha256_final(hash_sha256_ctx *c, uint8_t out[HASH_SHA256_LEN]) {
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(c->md, out, &n) != 1 || n != HASH_SHA256_LEN)
        return err_set(TV_EINTERNAL, "SHA-256 final failed in libcrypto");
    return TV_OK;
}

void hash_sha256_free(hash_sha256_ctx *c) {
    if (!c) return;
    EVP_MD_CTX_free(c->md);
    free(c);
}
