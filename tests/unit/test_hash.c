/* hash: SHA-256 against the FIPS 180-2 / NIST CAVP test vectors. */
#include "check.h"
#include "hash.h"

static void expect_hex(const void *data, size_t len, const char *want) {
    char hex[65];
    CHECK_OK(hash_sha256_hex(data, len, hex));
    CHECK_EQ_STR(hex, want);
}

int main(void) {
    expect_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect_hex(two, strlen(two), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

    /* One million 'a', in one shot and in uneven pieces through the incremental API. */
    size_t n = 1000000;
    char *a = malloc(n);
    memset(a, 'a', n);
    const char *million = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    expect_hex(a, n, million);
    hash_sha256_ctx *c = hash_sha256_new();
    CHECK(c != NULL);
    for (size_t off = 0, step = 1; off < n; off += step, step = step * 3 + 1) {
        if (off + step > n) step = n - off;
        CHECK_OK(hash_sha256_update(c, a + off, step));
    }
    uint8_t d[32];
    char hex[65];
    CHECK_OK(hash_sha256_final(c, d));
    CHECK_EQ_STR(hash_to_hex(d, 32, hex), million);
    hash_sha256_free(c);
    hash_sha256_free(NULL);
    free(a);

    uint8_t back[32];
    CHECK_OK(hash_from_hex(million, back, 32));
    CHECK(memcmp(back, d, 32) == 0);
    CHECK_FAILS(hash_from_hex("zz", back, 1));
    CHECK_FAILS(hash_from_hex("abc", back, 1));
    CHECK_FAILS(hash_from_hex("a", back, 1));
    return check_finish("test_hash");
}
