/* SPDX-License-Identifier: Apache-2.0
 * test-password.c: unit tests of common/password.c: round trips, wrong
 * passwords, salts, malformed encodings, cost bounds, needs_rehash, the
 * RFC 7914 known answer read through the encoded form, and one hash at the
 * real default cost (its time is printed, not asserted). Most tests use a
 * cheap cost through yun_password_hash_with so that the suite runs fast. */
/* GCC 12 at -O2 takes pointers into a _cleanup_free_ buffer for dangling
 * ones (its -Wdangling-pointer does not model the cleanup attribute). */
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base64.h"
#include "cleanup.h"
#include "err.h"
#include "password.h"

static const struct yun_password_params cheap = { .ln = 6, .r = 4, .p = 1 };

static char *
hash_cheap(const char *password)
{
    char *enc = NULL;
    assert_int_equal(yun_password_hash_with(password, &cheap, &enc), 0);
    assert_non_null(enc);
    return enc;
}

static void
test_roundtrip(void **state)
{
    static const char *const passwords[] = {
        "correct horse battery staple", "x", "pässwörd ✓", "with\ttab and $dollar$ signs",
    };
    for (size_t i = 0; i < sizeof passwords / sizeof passwords[0]; i++) {
        _cleanup_free_ char *enc = hash_cheap(passwords[i]);
        assert_int_equal(strncmp(enc, "$yun-scrypt$ln=6,r=4,p=1$", 25), 0);
        /* prefix, 22 characters of salt, '$', 43 of hash */
        assert_int_equal(strlen(enc), 25 + 22 + 1 + 43);
        if (strlen(passwords[i]) >= 8)
            assert_null(strstr(enc, passwords[i]));
        assert_int_equal(yun_password_verify(passwords[i], enc), 0);
    }
}

static void
test_wrong_password(void **state)
{
    _cleanup_free_ char *enc = hash_cheap("secret-password");
    static const char *const wrong[] = {
        "secret-passwore", "Secret-password", "secret-password ", "secret-passwor",
        "secret-password\n", "x",
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++)
        assert_int_equal(yun_password_verify(wrong[i], enc), YUN_E_AUTH);
    assert_int_equal(yun_password_verify("", enc), -EINVAL);
    assert_int_equal(yun_password_verify(NULL, enc), -EINVAL);
    assert_int_equal(yun_password_verify("secret-password", enc), 0);
}

/* Two hashes of one password differ (fresh salts) and both verify. */
static void
test_salts_differ(void **state)
{
    _cleanup_free_ char *a = hash_cheap("same password");
    _cleanup_free_ char *b = hash_cheap("same password");
    assert_string_not_equal(a, b);
    const char *salt_a = strrchr(a, '$') - 22, *salt_b = strrchr(b, '$') - 22;
    assert_false(memcmp(salt_a, salt_b, 22) == 0);
    assert_int_equal(yun_password_verify("same password", a), 0);
    assert_int_equal(yun_password_verify("same password", b), 0);
}

static void
test_malformed(void **state)
{
    /* A valid cheap hash of "pw", and variations of it. */
    _cleanup_free_ char *good = hash_cheap("pw");
    const char *tail = strchr(good + 12, '$'); /* "$<salt>$<hash>" */
    char buf[512];
    static const char *const bad_params[] = {
        "ln=0,r=4,p=1", "ln=21,r=4,p=1", "ln=06,r=4,p=1", "ln=6,r=0,p=1", "ln=6,r=33,p=1",
        "ln=6,r=4,p=0", "ln=6,r=4,p=17", "r=4,ln=6,p=1", "ln=6,r=4", "ln=6;r=4;p=1",
        "ln=6,r=4,p=1,x=1", "ln=,r=4,p=1", "ln=-6,r=4,p=1", "ln=99999,r=4,p=1",
        "ln=20,r=8,p=1",  /* 1 GiB of memory */
        "ln=16,r=32,p=16", /* work far above the bound */
    };
    for (size_t i = 0; i < sizeof bad_params / sizeof bad_params[0]; i++) {
        snprintf(buf, sizeof buf, "$yun-scrypt$%s%s", bad_params[i], tail);
        assert_int_equal(yun_password_verify("pw", buf), -EINVAL);
        assert_true(yun_password_needs_rehash(buf));
    }

    const char *salt = tail + 1, *hash = strrchr(good, '$') + 1;
    int salt_len = (int)(hash - 1 - salt);
    static const char *const bad_whole[] = {
        "", "$", "$yun-scrypt$", "$yun-pbkdf2$ln=6,r=4,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAA",
        "$2b$12$PnUTkUvsnvITiMfCiOaQQwaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "plaintext",
    };
    for (size_t i = 0; i < sizeof bad_whole / sizeof bad_whole[0]; i++)
        assert_int_equal(yun_password_verify("pw", bad_whole[i]), -EINVAL);
    assert_int_equal(yun_password_verify("pw", NULL), -EINVAL);

    /* Salt and hash: missing, not base64, padded, too short, trailing bytes. */
    const char *variants[][2] = {
        { "", hash },             /* empty salt */
        { "AAAAAAAAAA", hash },   /* 7-byte salt: below the 8-byte floor */
        { "A*AAAAAAAAAAAAAAAAAAAA", hash },
        { "AAAAAAAAAAAAAAAAAAAAAA==", hash },
        { NULL, "" },
        { NULL, "AAAAAAAAAAAAAAAAAAAA" }, /* 15-byte hash: below the 16-byte floor */
        { NULL, "not base64!" },
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        if (variants[i][0])
            snprintf(buf, sizeof buf, "$yun-scrypt$ln=6,r=4,p=1$%s$%s", variants[i][0],
                     variants[i][1]);
        else
            snprintf(buf, sizeof buf, "$yun-scrypt$ln=6,r=4,p=1$%.*s$%s", salt_len, salt,
                     variants[i][1]);
        assert_int_equal(yun_password_verify("pw", buf), -EINVAL);
    }
    snprintf(buf, sizeof buf, "%s\n", good);
    assert_int_equal(yun_password_verify("pw", buf), -EINVAL);
    snprintf(buf, sizeof buf, "%s$", good);
    assert_int_equal(yun_password_verify("pw", buf), -EINVAL);
    /* Cut two characters: 41 base64 characters never decode (41 % 4 == 1). A
     * single cut leaves a valid 31-byte hash whenever the new last
     * character's four spare bits happen to be zero (1 in 16). */
    assert_int_equal(strlen(hash) % 4, 3);
    snprintf(buf, sizeof buf, "%.*s", (int)strlen(good) - 2, good);
    assert_int_equal(yun_password_verify("pw", buf), -EINVAL);

    /* A changed hash character is a mismatch, not a malformed string. */
    snprintf(buf, sizeof buf, "%s", good);
    buf[strlen(buf) - 5] = buf[strlen(buf) - 5] == 'A' ? 'B' : 'A';
    assert_int_equal(yun_password_verify("pw", buf), YUN_E_AUTH);
    assert_int_equal(yun_password_verify("pw", good), 0);
}

static void
test_password_length(void **state)
{
    char pw[YUN_PASSWORD_MAX_SIZE + 2];
    memset(pw, 'a', sizeof pw - 1);
    pw[YUN_PASSWORD_MAX_SIZE] = '\0';
    _cleanup_free_ char *enc = hash_cheap(pw);
    assert_int_equal(yun_password_verify(pw, enc), 0);

    pw[YUN_PASSWORD_MAX_SIZE] = 'a';
    pw[YUN_PASSWORD_MAX_SIZE + 1] = '\0';
    char *none = NULL;
    assert_int_equal(yun_password_hash_with(pw, &cheap, &none), -EINVAL);
    assert_int_equal(yun_password_verify(pw, enc), -EINVAL);
    assert_int_equal(yun_password_hash_with("", &cheap, &none), -EINVAL);
    assert_int_equal(yun_password_hash_with(NULL, &cheap, &none), -EINVAL);
    assert_int_equal(yun_password_verify_dummy(""), -EINVAL);
    assert_null(none);
}

static void
test_bad_params(void **state)
{
    static const struct yun_password_params bad[] = {
        { 0, 8, 1 }, { 21, 1, 1 }, { 10, 0, 1 }, { 10, 33, 1 }, { 10, 8, 0 }, { 10, 8, 17 },
        { 18, 16, 1 }, /* 512 MiB */
        { 17, 8, 16 }, /* work 2^24 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *enc = NULL;
        assert_int_equal(yun_password_hash_with("pw", &bad[i], &enc), -EINVAL);
        assert_null(enc);
    }
    char *enc = NULL;
    assert_int_equal(yun_password_hash_with("pw", NULL, &enc), -EINVAL);
}

/* RFC 7914 section 12, second vector, written in yun's encoded form: the
 * salt and the 64-byte key are taken as they are and verify reads the
 * cost from the string. */
static void
test_rfc7914_vector(void **state)
{
    static const uint8_t key[64] = {
        0x70, 0x23, 0xbd, 0xcb, 0x3a, 0xfd, 0x73, 0x48, 0x46, 0x1c, 0x06, 0xcd, 0x81,
        0xfd, 0x38, 0xeb, 0xfd, 0xa8, 0xfb, 0xba, 0x90, 0x4f, 0x8e, 0x3e, 0xa9, 0xb5,
        0x43, 0xf6, 0x54, 0x5d, 0xa1, 0xf2, 0xd5, 0x43, 0x29, 0x55, 0x61, 0x3f, 0x0f,
        0xcf, 0x62, 0xd4, 0x97, 0x05, 0x24, 0x2a, 0x9a, 0xf9, 0xe6, 0x1e, 0x85, 0xdc,
        0x0d, 0x65, 0x1e, 0x40, 0xdf, 0xcf, 0x01, 0x7b, 0x45, 0x57, 0x58, 0x87,
    };
    char salt_b64[32], key_b64[96], enc[256];
    yun_base64_encode("SodiumChloride", 14, YUN_BASE64_NOPAD, salt_b64);
    yun_base64_encode(key, sizeof key, YUN_BASE64_NOPAD, key_b64);
    snprintf(enc, sizeof enc, "$yun-scrypt$ln=14,r=8,p=1$%s$%s", salt_b64, key_b64);
    assert_int_equal(yun_password_verify("pleaseletmein", enc), 0);
    assert_int_equal(yun_password_verify("pleaseletmeout", enc), YUN_E_AUTH);
    /* Below the default cost and with a short salt. */
    assert_true(yun_password_needs_rehash(enc));
}

static void
test_needs_rehash(void **state)
{
    _cleanup_free_ char *enc = hash_cheap("pw");
    assert_true(yun_password_needs_rehash(enc));
    assert_false(yun_password_needs_rehash_with(enc, &cheap));

    /* Any one parameter below the current cost asks for a rehash. */
    static const struct yun_password_params higher[] = {
        { 7, 4, 1 }, { 6, 5, 1 }, { 6, 4, 2 },
    };
    for (size_t i = 0; i < sizeof higher / sizeof higher[0]; i++)
        assert_true(yun_password_needs_rehash_with(enc, &higher[i]));
    /* A hash stronger on every parameter is kept. */
    static const struct yun_password_params lower = { 5, 2, 1 };
    assert_false(yun_password_needs_rehash_with(enc, &lower));

    static const struct yun_password_params strong = { 8, 8, 2 };
    _cleanup_free_ char *enc2 = NULL;
    assert_int_equal(yun_password_hash_with("pw", &strong, &enc2), 0);
    assert_false(yun_password_needs_rehash_with(enc2, &cheap));

    assert_true(yun_password_needs_rehash(NULL));
    assert_true(yun_password_needs_rehash("garbage"));
}

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One hash at the real default cost. The time is printed, not asserted:
 * it depends on the machine (and sanitizers do not slow OpenSSL down). */
static void
test_real_cost(void **state)
{
    const struct yun_password_params *d = &yun_password_default_params;
    _cleanup_free_ char *enc = NULL;
    double t0 = now_ms();
    assert_int_equal(yun_password_hash("a real password", &enc), 0);
    double t1 = now_ms();
    assert_int_equal(yun_password_verify("a real password", enc), 0);
    double t2 = now_ms();
    assert_int_equal(yun_password_verify_dummy("a real password"), YUN_E_AUTH);
    double t3 = now_ms();
    char want[64];
    snprintf(want, sizeof want, "$yun-scrypt$ln=%u,r=%u,p=%u$", d->ln, d->r, d->p);
    assert_int_equal(strncmp(enc, want, strlen(want)), 0);
    assert_false(yun_password_needs_rehash(enc));
    printf("scrypt ln=%u r=%u p=%u (%u MiB): hash %.0f ms, verify %.0f ms, dummy verify %.0f "
           "ms, %.1f logins/s per core\n",
           d->ln, d->r, d->p, (128u * d->r << d->ln) >> 20, t1 - t0, t2 - t1, t3 - t2,
           1e3 / (t2 - t1));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_salts_differ),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_password_length),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_rfc7914_vector),
        cmocka_unit_test(test_needs_rehash),
        cmocka_unit_test(test_real_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
