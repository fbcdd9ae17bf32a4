/* err, log, dtype, tensor, mapfile: the small foundations. */
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "dtype.h"
#include "log.h"
#include "mapfile.h"
#include "tensor.h"

static int fails_deep(void) { return err_set(TV_EFORMAT, "bad byte at %d", 7); }

static void test_err(void) {
    err_clear();
    CHECK_EQ_STR(err_msg(), "");
    int rc = fails_deep();
    CHECK_EQ_INT(rc, TV_EFORMAT);
    CHECK_EQ_STR(err_msg(), "bad byte at 7");
    rc = err_wrap(rc, "reading %s", "x.bin");
    CHECK_EQ_STR(err_msg(), "reading x.bin: bad byte at 7");
    CHECK_EQ_STR(err_name(TV_ELIMIT), "over a limit");
    CHECK_EQ_STR(err_name(12345), "unknown error");
}

static void test_log(void) {
    CHECK_EQ_INT(log_parse_level("DEBUG"), LOG_DEBUG);
    CHECK_EQ_INT(log_parse_level("warn"), LOG_WARN);
    CHECK_EQ_INT(log_parse_level("nonsense"), -1);
    log_set_level(LOG_ERROR);
    CHECK_EQ_INT(log_get_level(), LOG_ERROR);
    log_info("test", "this line is below the threshold and must not appear");
}

/* f16/bf16 conversions against values whose bit patterns are fixed by IEEE 754. */
static void test_dtype(void) {
    CHECK_EQ_INT(dtype_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(dtype_f32_to_f16(-2.0f), 0xc000);
    CHECK_EQ_INT(dtype_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(dtype_f32_to_f16(65520.0f), 0x7c00);        /* rounds up to inf */
    CHECK_EQ_INT(dtype_f32_to_f16(5.9604645e-8f), 0x0001);   /* smallest subnormal */
    CHECK_EQ_INT(dtype_f32_to_f16(2.98e-8f), 0x0000);        /* just under half of it */
    CHECK_EQ_INT(dtype_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie -> even */
    CHECK_EQ_INT(dtype_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02); /* tie -> even (up) */
    CHECK(dtype_f32_to_f16(NAN) & 0x200);
    CHECK_NEAR(dtype_f16_to_f32(0x3555), 0.33325195f, 0);
    CHECK_NEAR(dtype_f16_to_f32(0x0001), 5.9604645e-8f, 0);
    CHECK(isinf(dtype_f16_to_f32(0xfc00)) && dtype_f16_to_f32(0xfc00) < 0);
    /* Every finite f16 survives the round trip through f32. */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        if (dtype_f32_to_f16(dtype_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(dtype_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(dtype_f32_to_bf16(1.00390625f), 0x3f80);    /* tie -> even */
    CHECK_EQ_INT(dtype_f32_to_bf16(1.01171875f), 0x3f82);    /* tie -> even (up) */
    CHECK_NEAR(dtype_bf16_to_f32(0xc0a0), -5.0f, 0);
    dtype_id dt;
    CHECK_OK(dtype_parse("BF16", &dt));
    CHECK_EQ_INT(dt, DT_BF16);
    CHECK_EQ_INT(dtype_size(DT_I64), 8);
    CHECK_FAILS(dtype_parse("F8_E4M3X", &dt));
    int64_t vals[3] = {-3, 0, 1LL << 40};
    float out[3];
    dtype_to_f32(DT_I64, vals, out, 3);
    CHECK(out[0] == -3.0f && out[1] == 0.0f && out[2] == 1099511627776.0f);
}

static void test_tensor(void) {
    tensor_view t = {.name = "w", .dtype = DT_F32, .ndim = 2, .shape = {3, 4}};
    CHECK_EQ_INT(tensor_numel(&t), 12);
    char buf[64];
    CHECK_EQ_STR(tensor_shape_str(&t, buf, sizeof buf), "[3, 4]");
    int64_t good[2] = {3, 4}, bad[2] = {4, 3};
    CHECK_OK(tensor_expect_shape(&t, 2, good));
    CHECK_FAILS(tensor_expect_shape(&t, 2, bad));
    CHECK(strstr(err_msg(), "'w' has shape [3, 4], expected [4, 3]") != NULL);
}

static void test_mapfile(void) {
    char path[] = "/tmp/tv_test_mapfileXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    fputs("hello mapped world", f);
    fclose(f);
    mapfile *mf = NULL;
    CHECK_OK(mf_open(path, &mf));
    CHECK(mf && mf->size == 18 && memcmp(mf->data, "hello", 5) == 0);
    mf_free(mf);
    mf_free(NULL);
    char *s = NULL;
    size_t n = 0;
    CHECK_OK(mf_read_all(path, 100, &s, &n));
    CHECK(n == 18 && s && strcmp(s, "hello mapped world") == 0);
    free(s);
    CHECK_FAILS(mf_read_all(path, 10, &s, &n));
    unlink(path);
    CHECK_FAILS(mf_open("/nonexistent/file", &mf));
    CHECK(mf == NULL);
}

int main(void) {
    test_err();
    test_log();
    test_dtype();
    test_tensor();
    test_mapfile();
    return check_finish("test_err");
}
