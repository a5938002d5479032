/* SPDX-License-Identifier: Apache-2.0
 * test-base64.c: unit tests of common/base64.c: the RFC 4648 test vectors
 * in the three spellings, round trips of every length and byte, and the
 * strict decoder's rejections (alphabet, padding, length, unused bits,
 * short output buffer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "base64.h"

static const struct {
    const char *plain, *padded, *unpadded;
} vectors[] = {
    { "", "", "" },
    { "f", "Zg==", "Zg" },
    { "fo", "Zm8=", "Zm8" },
    { "foo", "Zm9v", "Zm9v" },
    { "foob", "Zm9vYg==", "Zm9vYg" },
    { "fooba", "Zm9vYmE=", "Zm9vYmE" },
    { "foobar", "Zm9vYmFy", "Zm9vYmFy" },
};

static int
decode_str(const char *s, unsigned flags, uint8_t *out, size_t out_size, size_t *ret_size)
{
    return yun_base64_decode(s, strlen(s), flags, out, out_size, ret_size);
}

static void
test_rfc4648_vectors(void **state)
{
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        const char *p = vectors[i].plain;
        size_t n = strlen(p);
        char out[32];
        uint8_t back[32];
        size_t size;

        assert_int_equal(yun_base64_encoded_len(n, 0), strlen(vectors[i].padded));
        assert_int_equal(yun_base64_encode(p, n, 0, out), strlen(vectors[i].padded));
        assert_string_equal(out, vectors[i].padded);
        assert_int_equal(yun_base64_encoded_len(n, YUN_BASE64_NOPAD),
                         strlen(vectors[i].unpadded));
        yun_base64_encode(p, n, YUN_BASE64_NOPAD, out);
        assert_string_equal(out, vectors[i].unpadded);

        assert_int_equal(decode_str(vectors[i].padded, 0, back, sizeof back, &size), 0);
        assert_int_equal(size, n);
        assert_memory_equal(back, p, n);
        assert_int_equal(decode_str(vectors[i].unpadded, YUN_BASE64_NOPAD, back, sizeof back,
                                    &size), 0);
        assert_int_equal(size, n);
        assert_memory_equal(back, p, n);
    }
}

static void
test_url_alphabet(void **state)
{
    const uint8_t data[] = { 0xfb, 0xff, 0xbf };
    char out[8];
    yun_base64_encode(data, sizeof data, 0, out);
    assert_string_equal(out, "+/+/");
    yun_base64_encode(data, sizeof data, YUN_BASE64_URL | YUN_BASE64_NOPAD, out);
    assert_string_equal(out, "-_-_");

    uint8_t back[4];
    size_t size;
    assert_int_equal(decode_str("-_-_", YUN_BASE64_URL | YUN_BASE64_NOPAD, back, sizeof back,
                                &size), 0);
    assert_memory_equal(back, data, sizeof data);
    /* Each alphabet refuses the other's two characters. */
    assert_int_equal(decode_str("+/+/", YUN_BASE64_URL | YUN_BASE64_NOPAD, back, sizeof back,
                                &size), -EINVAL);
    assert_int_equal(decode_str("-_-_", YUN_BASE64_NOPAD, back, sizeof back, &size), -EINVAL);
}

static void
test_roundtrip_all_lengths(void **state)
{
    uint8_t data[300], back[300];
    char text[512];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 37 + 11);
    static const unsigned flag_sets[] = { 0, YUN_BASE64_NOPAD, YUN_BASE64_URL,
                                          YUN_BASE64_URL | YUN_BASE64_NOPAD };
    for (size_t f = 0; f < 4; f++)
        for (size_t n = 0; n <= sizeof data; n++) {
            size_t len = yun_base64_encode(data, n, flag_sets[f], text);
            assert_int_equal(len, yun_base64_encoded_len(n, flag_sets[f]));
            assert_int_equal(strlen(text), len);
            size_t size;
            assert_int_equal(yun_base64_decode(text, len, flag_sets[f], back, sizeof back,
                                               &size), 0);
            assert_int_equal(size, n);
            assert_memory_equal(back, data, n);
        }
}

static void
test_strict_rejections(void **state)
{
    uint8_t out[16];
    size_t size;
    static const char *const bad_padded[] = {
        "Zg=",      /* length not a multiple of 4 */
        "Zg",       /* padding missing */
        "Z===",     /* three '=' */
        "Zm9=Zm9v", /* '=' in the middle */
        "Zh==",     /* unused bits set ("Zg==" is canonical) */
        "Zm9=",     /* unused bits set ("Zm8=" is canonical) */
        "Zm8 ",     /* space */
        "Zm8\n",    /* newline */
        "Zm8*",     /* outside the alphabet */
        "=Zm8",
    };
    for (size_t i = 0; i < sizeof bad_padded / sizeof bad_padded[0]; i++)
        assert_int_equal(decode_str(bad_padded[i], 0, out, sizeof out, &size), -EINVAL);
    static const char *const bad_unpadded[] = {
        "Z",      /* a single character carries no whole byte */
        "Zm9vY",  /* 5 = 4 + 1 */
        "Zg==",   /* padding where none is expected */
        "Zh",     /* unused bits */
        "Zm9",    /* unused bits ("Zm8" is canonical) */
    };
    for (size_t i = 0; i < sizeof bad_unpadded / sizeof bad_unpadded[0]; i++)
        assert_int_equal(decode_str(bad_unpadded[i], YUN_BASE64_NOPAD, out, sizeof out, &size),
                         -EINVAL);
    assert_int_equal(decode_str("Zm9vYmFy", 0, out, 5, &size), -ENOBUFS);
    assert_int_equal(decode_str("Zm9vYmFy", 0, out, 6, &size), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_url_alphabet),
        cmocka_unit_test(test_roundtrip_all_lengths),
        cmocka_unit_test(test_strict_rejections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
