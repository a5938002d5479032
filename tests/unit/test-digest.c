/* SPDX-License-Identifier: Apache-2.0
 * test-digest.c: unit tests for common/digest.c, streaming MD5 + SHA-512.
 * Known vectors, the same digest however the stream is cut (small chunks
 * hashed in turn, large ones on the helper thread), files, and misuse. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "cleanup.h"
#include "digest.h"
#include "util.h"

static const char abc_md5[] = "900150983cd24fb0d6963f7d28e17f72";
static const char abc_sha512[] =
    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
static const char empty_md5[] = "d41d8cd98f00b204e9800998ecf8427e";

static void
fill(uint8_t *buf, size_t size, uint64_t seed)
{
    for (size_t i = 0; i < size; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (uint8_t)(seed >> 33);
    }
}

static void
oneshot(const void *data, size_t size, const EVP_MD *md, char *hex)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n;
    assert_int_equal(EVP_Digest(data, size, out, &n, md, NULL), 1);
    yun_hex_encode(out, n, hex);
}

static void
test_vectors(void **state)
{
    struct yun_digest *d = NULL;
    struct yun_digest_result res;
    assert_int_equal(yun_digest_new(YUN_DIGEST_ALL, &d), 0);
    assert_int_equal(yun_digest_update(d, "a", 1), 0);
    assert_int_equal(yun_digest_update(d, "", 0), 0);
    assert_int_equal(yun_digest_update(d, "bc", 2), 0);
    assert_int_equal(yun_digest_final(d, &res), 0);
    assert_string_equal(res.md5, abc_md5);
    assert_string_equal(res.sha512, abc_sha512);
    assert_int_equal(res.size, 3);
    /* Finished: no more updates, no second final. */
    assert_int_equal(yun_digest_update(d, "x", 1), -EINVAL);
    assert_int_equal(yun_digest_final(d, &res), -EINVAL);
    d = yun_digest_free(d);

    assert_int_equal(yun_digest_new(YUN_DIGEST_MD5, &d), 0);
    assert_int_equal(yun_digest_final(d, &res), 0);
    assert_string_equal(res.md5, empty_md5);
    assert_string_equal(res.sha512, "");
    d = yun_digest_free(d);

    assert_int_equal(yun_digest_new(0, &d), -EINVAL);
    assert_int_equal(yun_digest_new(8, &d), -EINVAL);
    assert_null(yun_digest_free(NULL));
}

/* Large chunks take the helper thread, small ones do not: every way of
 * cutting the stream gives the one-shot digests. */
static void
test_chunking(void **state)
{
    size_t size = (5u << 20) + 12345;
    _cleanup_free_ uint8_t *buf = malloc(size);
    assert_non_null(buf);
    fill(buf, size, 42);
    char md5[YUN_MD5_HEX_SIZE], sha512[YUN_SHA512_HEX_SIZE];
    oneshot(buf, size, EVP_md5(), md5);
    oneshot(buf, size, EVP_sha512(), sha512);

    static const size_t chunks[] = { 1u << 20, 65536, 65535, 4096, 1000003, 7 << 20 };
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        struct yun_digest *d = NULL;
        struct yun_digest_result res;
        assert_int_equal(yun_digest_new(YUN_DIGEST_ALL, &d), 0);
        for (size_t off = 0; off < size;) {
            size_t n = size - off < chunks[c] ? size - off : chunks[c];
            /* Alternate small and large steps inside one stream too. */
            if (c == 3 && (off / n) % 3 == 0 && n > 100)
                n = 100;
            assert_int_equal(yun_digest_update(d, buf + off, n), 0);
            off += n;
        }
        assert_int_equal(yun_digest_final(d, &res), 0);
        assert_string_equal(res.md5, md5);
        assert_string_equal(res.sha512, sha512);
        assert_int_equal(res.size, size);
        yun_digest_free(d);
    }

    /* Only one algorithm: no helper, same values. */
    struct yun_digest *d = NULL;
    struct yun_digest_result res;
    assert_int_equal(yun_digest_new(YUN_DIGEST_SHA512, &d), 0);
    assert_int_equal(yun_digest_update(d, buf, size), 0);
    assert_int_equal(yun_digest_final(d, &res), 0);
    assert_string_equal(res.sha512, sha512);
    assert_string_equal(res.md5, "");
    yun_digest_free(d);

    /* start/wait: the caller works while the helpers hash; a second start
     * before the wait is refused; final waits for nothing left. */
    assert_int_equal(yun_digest_new(YUN_DIGEST_ALL, &d), 0);
    for (size_t off = 0; off < size;) {
        size_t n = size - off < (1u << 20) ? size - off : (1u << 20);
        assert_int_equal(yun_digest_update_start(d, buf + off, n), 0);
        if (n >= 65536) {
            assert_int_equal(yun_digest_update_start(d, buf + off, n), -EINVAL);
            assert_int_equal(yun_digest_final(d, &res), -EINVAL);
        }
        assert_int_equal(yun_digest_update_wait(d), 0);
        assert_int_equal(yun_digest_update_wait(d), 0);
        off += n;
    }
    assert_int_equal(yun_digest_final(d, &res), 0);
    assert_string_equal(res.md5, md5);
    assert_string_equal(res.sha512, sha512);
    assert_int_equal(res.size, size);
    yun_digest_free(d);

    /* Freed with a chunk in flight: waits, no leak, no hang. */
    assert_int_equal(yun_digest_new(YUN_DIGEST_ALL, &d), 0);
    assert_int_equal(yun_digest_update_start(d, buf, 1u << 20), 0);
    yun_digest_free(d);

    /* Freed before final, with the helper started: no leak, no hang. */
    assert_int_equal(yun_digest_new(YUN_DIGEST_ALL, &d), 0);
    assert_int_equal(yun_digest_update(d, buf, 1u << 20), 0);
    yun_digest_free(d);
}

static void
test_fd(void **state)
{
    const char *base = getenv("YUN_TEST_DIR");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", base && *base ? base : "/tmp");
    (void)yun_mkdir_p(dir, 0755);
    char path[1100];
    snprintf(path, sizeof path, "%s/digest.XXXXXX", dir);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t size = 3u << 20;
    _cleanup_free_ uint8_t *buf = malloc(size);
    assert_non_null(buf);
    fill(buf, size, 7);
    assert_int_equal(write(fd, buf, size), (ssize_t)size);
    char md5[YUN_MD5_HEX_SIZE], sha512[YUN_SHA512_HEX_SIZE];
    oneshot(buf, size, EVP_md5(), md5);
    oneshot(buf, size, EVP_sha512(), sha512);

    struct yun_digest_result res;
    assert_int_equal(yun_digest_fd(fd, YUN_DIGEST_ALL, &res), 0);
    assert_string_equal(res.md5, md5);
    assert_string_equal(res.sha512, sha512);
    assert_int_equal(res.size, size);
    /* The file offset is not used: it stays at the end. */
    assert_int_equal(lseek(fd, 0, SEEK_CUR), (off_t)size);
    close(fd);
    unlink(path);
    assert_int_equal(yun_digest_fd(-1, YUN_DIGEST_ALL, &res), -EINVAL);
}

static void
test_hex(void **state)
{
    assert_true(yun_digest_hex_is_valid(abc_md5, 32));
    assert_true(yun_digest_hex_is_valid("900150983CD24FB0D6963F7D28E17F72", 32));
    assert_false(yun_digest_hex_is_valid(abc_md5, 128));
    assert_false(yun_digest_hex_is_valid("900150983cd24fb0d6963f7d28e17f7g", 32));
    assert_false(yun_digest_hex_is_valid("", 32));
    assert_false(yun_digest_hex_is_valid(NULL, 32));
    assert_true(yun_digest_hex_equal(abc_md5, "900150983CD24FB0D6963F7D28E17F72"));
    assert_false(yun_digest_hex_equal(abc_md5, empty_md5));
    assert_false(yun_digest_hex_equal(abc_md5, NULL));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_chunking),
        cmocka_unit_test(test_fd),
        cmocka_unit_test(test_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
