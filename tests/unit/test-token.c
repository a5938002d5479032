/* SPDX-License-Identifier: Apache-2.0
 * test-token.c: unit tests of common/token.c: issue/validate round trips
 * with every field, claim limits, every single-bit flip and truncation of
 * a token refused, another repository's key refused, expiry, the rotation
 * rules (with max_active = 3 a token survives one rotation and is refused
 * after two; generally max_active - 2 and max_active - 1), the staged key
 * of a not yet rotated copy validating, permissions and malformed key
 * files refused. Each test gets a fresh directory under $YUN_TEST_DIR
 * (else /tmp), removed afterwards. Prints validations per second. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base64.h"
#include "cleanup.h"
#include "err.h"
#include "token.h"
#include "util.h"

#define SECOND_US 1000000ull
#define T0 (1780000000ull * SECOND_US) /* a fixed "now" in 2026 */

struct fixture {
    char dir[2048];
    char keys[2100];  /* dir/keys */
    char other[2100]; /* dir/other: a second repository */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct yun_token_keys *, yun_token_keys_free);

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

/* ctest names $YUN_TEST_DIR but does not create it. */
static void
make_base(const char *base)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", base);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            (void)mkdir(p, 0755);
            *s = '/';
        }
    (void)mkdir(p, 0755);
}

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *base = getenv("YUN_TEST_DIR");
    if (!base || !*base)
        base = "/tmp";
    make_base(base);
    int n = snprintf(fx->dir, sizeof fx->dir, "%s/test-token.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof fx->dir || !mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->keys, sizeof fx->keys, "%s/keys", fx->dir);
    snprintf(fx->other, sizeof fx->other, "%s/other", fx->dir);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    /* A test may have left a directory unreadable. */
    (void)chmod(fx->keys, 0700);
    (void)chmod(fx->other, 0700);
    int r = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

static struct yun_token_keys *
load(const char *dir)
{
    struct yun_token_keys *keys = NULL;
    assert_int_equal(yun_token_keys_load(dir, &keys), 0);
    assert_non_null(keys);
    return keys;
}

/* The key file indexes in 'dir' as "0,1,2", ascending. */
static void
assert_indexes(const char *dir, const char *want)
{
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(dir);
    char got[256] = "";
    for (size_t i = 0; i < yun_token_keys_count(keys); i++) {
        uint32_t index;
        assert_int_equal(yun_token_keys_get(keys, i, &index, NULL), 0);
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%u", i ? "," : "", index);
    }
    assert_string_equal(got, want);
}

/* The key id of the key with file index 'index'. */
static uint32_t
id_of_index(const char *dir, uint32_t index)
{
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(dir);
    for (size_t i = 0; i < yun_token_keys_count(keys); i++) {
        uint32_t idx, id;
        assert_int_equal(yun_token_keys_get(keys, i, &idx, &id), 0);
        if (idx == index)
            return id;
    }
    fail_msg("no key with index %u in '%s'", index, dir);
    return 0;
}

static struct yun_token
sample_claims(void)
{
    struct yun_token c = {
        .user_id = "3f2b8c1e-7d4a-4e9b-a1c2-5d6e7f8a9b0c",
        .project_id = "9a8b7c6d-5e4f-4a3b-b2c1-d0e9f8a7b6c5",
        .n_roles = 3,
        .issued_at_us = T0,
        .expires_at_us = T0 + 3600 * SECOND_US,
    };
    strcpy(c.roles[0], "admin");
    strcpy(c.roles[1], "member");
    strcpy(c.roles[2], "reader");
    return c;
}

static char *
issue(const struct yun_token_keys *keys, struct yun_token *ret_issued)
{
    struct yun_token c = sample_claims();
    char *token = NULL;
    assert_int_equal(yun_token_issue(keys, &c, &token, ret_issued), 0);
    assert_non_null(token);
    return token;
}

static void
assert_same_token(const struct yun_token *a, const struct yun_token *b)
{
    assert_string_equal(a->user_id, b->user_id);
    assert_string_equal(a->project_id, b->project_id);
    assert_int_equal(a->n_roles, b->n_roles);
    for (size_t i = 0; i < a->n_roles; i++)
        assert_string_equal(a->roles[i], b->roles[i]);
    assert_int_equal(a->issued_at_us, b->issued_at_us);
    assert_int_equal(a->expires_at_us, b->expires_at_us);
    assert_string_equal(a->audit_id, b->audit_id);
    assert_int_equal(a->key_id, b->key_id);
}

static void
test_roundtrip(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(fx->keys);

    struct yun_token issued, got;
    _cleanup_free_ char *token = issue(keys, &issued);
    struct yun_token want = sample_claims();
    assert_int_equal(yun_token_validate(keys, token, T0 + SECOND_US, &got), 0);
    assert_same_token(&got, &issued);
    /* The claims as given, plus an audit id and the primary's key id. */
    assert_string_equal(got.user_id, want.user_id);
    assert_string_equal(got.project_id, want.project_id);
    assert_int_equal(got.n_roles, 3);
    assert_string_equal(got.roles[0], "admin");
    assert_string_equal(got.roles[1], "member");
    assert_string_equal(got.roles[2], "reader");
    assert_int_equal(got.issued_at_us, want.issued_at_us);
    assert_int_equal(got.expires_at_us, want.expires_at_us);
    assert_int_equal(strlen(yun_token_audit_id(&got)), YUN_TOKEN_AUDIT_ID_LEN);
    assert_int_equal(strspn(got.audit_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                          "0123456789-_"),
                     YUN_TOKEN_AUDIT_ID_LEN);
    assert_int_equal(got.key_id, id_of_index(fx->keys, 1));

    /* The text is base64url without padding. */
    assert_int_equal(strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789-_"),
                     strlen(token));
    printf("token with 3 roles and two 36-character ids: %zu characters\n", strlen(token));

    /* A repository made by create: 0700, keys 0600, staged 0 and primary 1. */
    struct stat st;
    assert_int_equal(stat(fx->keys, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    char path[2200];
    snprintf(path, sizeof path, "%s/1", fx->keys);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, 65);
    assert_indexes(fx->keys, "0,1");
    assert_int_equal(yun_token_keys_create(fx->keys), -EEXIST);
}

static void
test_claims_limits(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(fx->keys);

    /* The largest token: longest ids, most and longest roles. */
    struct yun_token c = sample_claims(), got;
    memset(c.user_id, 'u', YUN_TOKEN_ID_MAX);
    memset(c.project_id, 'p', YUN_TOKEN_ID_MAX);
    c.n_roles = YUN_TOKEN_ROLES_MAX;
    for (size_t i = 0; i < YUN_TOKEN_ROLES_MAX; i++) {
        memset(c.roles[i], 'r', YUN_TOKEN_ROLE_MAX);
        c.roles[i][0] = (char)('a' + i);
    }
    _cleanup_free_ char *big = NULL;
    assert_int_equal(yun_token_issue(keys, &c, &big, NULL), 0);
    assert_true(strlen(big) <= YUN_TOKEN_MAX_LEN);
    assert_int_equal(yun_token_validate(keys, big, T0, &got), 0);
    assert_string_equal(got.user_id, c.user_id);
    assert_int_equal(got.n_roles, YUN_TOKEN_ROLES_MAX);
    assert_string_equal(got.roles[15], c.roles[15]);
    printf("largest token: %zu characters\n", strlen(big));

    /* Unscoped, no roles. */
    struct yun_token u = sample_claims();
    u.project_id[0] = '\0';
    u.n_roles = 0;
    _cleanup_free_ char *unscoped = NULL;
    assert_int_equal(yun_token_issue(keys, &u, &unscoped, NULL), 0);
    assert_int_equal(yun_token_validate(keys, unscoped, T0, &got), 0);
    assert_string_equal(got.project_id, "");
    assert_int_equal(got.n_roles, 0);

    /* Refused claims. */
    struct yun_token bad[10];
    for (size_t i = 0; i < 10; i++)
        bad[i] = sample_claims();
    bad[0].user_id[0] = '\0';
    memset(bad[1].user_id, 'u', sizeof bad[1].user_id); /* no NUL: 65 characters */
    strcpy(bad[2].user_id, "alice smith");
    strcpy(bad[3].project_id, "-p");
    bad[4].n_roles = YUN_TOKEN_ROLES_MAX + 1;
    bad[5].roles[1][0] = '\0';
    strcpy(bad[6].roles[2], "admin\n");
    bad[7].expires_at_us = bad[7].issued_at_us;
    bad[8].expires_at_us = bad[8].issued_at_us - 1;
    memset(bad[9].roles[0], 'r', sizeof bad[9].roles[0]); /* 33 characters */
    for (size_t i = 0; i < 10; i++) {
        char *token = NULL;
        assert_int_equal(yun_token_issue(keys, &bad[i], &token, NULL), -EINVAL);
        assert_null(token);
    }
    char *token = NULL;
    assert_int_equal(yun_token_issue(keys, NULL, &token, NULL), -EINVAL);
    assert_int_equal(yun_token_issue(NULL, &c, &token, NULL), -EINVAL);
}

static void
test_unique_audit_ids(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(fx->keys);
    enum { N = 200 };
    static char audits[N][YUN_TOKEN_AUDIT_ID_LEN + 1];
    static char *tokens[N];
    for (size_t i = 0; i < N; i++) {
        struct yun_token t;
        tokens[i] = issue(keys, &t);
        strcpy(audits[i], t.audit_id);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(audits[i], audits[j]);
            assert_string_not_equal(tokens[i], tokens[j]);
        }
    }
    for (size_t i = 0; i < N; i++)
        free(tokens[i]);
}

static int
validate_bytes(const struct yun_token_keys *keys, const uint8_t *bin, size_t size)
{
    char text[YUN_TOKEN_MAX_LEN + 8];
    yun_base64_encode(bin, size, YUN_BASE64_URL | YUN_BASE64_NOPAD, text);
    struct yun_token t;
    memset(&t, 0x5a, sizeof t);
    int r = yun_token_validate(keys, text, T0, &t);
    /* Nothing is written on failure. */
    if (r < 0)
        for (size_t i = 0; i < sizeof t; i++)
            assert_int_equal(((uint8_t *)&t)[i], 0x5a);
    return r;
}

/* Every single-bit change of the decoded token, every truncation and an
 * extension are refused as invalid (not as expired, not as anything
 * else). */
static void
test_bit_flips(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(fx->keys);
    _cleanup_free_ char *token = issue(keys, NULL);

    uint8_t bin[2048];
    size_t size;
    assert_int_equal(yun_base64_decode(token, strlen(token), YUN_BASE64_URL | YUN_BASE64_NOPAD,
                                       bin, sizeof bin, &size), 0);
    assert_int_equal(bin[0], 1);
    assert_int_equal(validate_bytes(keys, bin, size), 0);
    size_t flips = 0;
    for (size_t i = 0; i < size; i++)
        for (int bit = 0; bit < 8; bit++) {
            bin[i] ^= (uint8_t)(1u << bit);
            /* Bytes 1-4 name the key: changed, they name one we lack. */
            int want = i >= 1 && i <= 4 ? YUN_E_TOKEN_KEY : YUN_E_TOKEN_INVALID;
            assert_int_equal(validate_bytes(keys, bin, size), want);
            bin[i] ^= (uint8_t)(1u << bit);
            flips++;
        }
    for (size_t n = 0; n < size; n++)
        assert_int_equal(validate_bytes(keys, bin, n), YUN_E_TOKEN_INVALID);
    bin[size] = 0;
    assert_int_equal(validate_bytes(keys, bin, size + 1), YUN_E_TOKEN_INVALID);
    assert_int_equal(validate_bytes(keys, bin, size), 0);
    printf("%zu single-bit flips and %zu truncations refused\n", flips, size);

    /* Text that is not base64url, or too long. */
    struct yun_token t;
    static const char *const garbage[] = {
        "", "a", "abc", "!!!!", "Bearer x", "AQAAAAA=", "AQAAAAA", "\xff\xfe",
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++)
        assert_int_equal(yun_token_validate(keys, garbage[i], T0, &t), YUN_E_TOKEN_INVALID);
    char *huge = malloc(YUN_TOKEN_MAX_LEN + 2);
    assert_non_null(huge);
    memset(huge, 'A', YUN_TOKEN_MAX_LEN + 1);
    huge[YUN_TOKEN_MAX_LEN + 1] = '\0';
    assert_int_equal(yun_token_validate(keys, huge, T0, &t), YUN_E_TOKEN_INVALID);
    free(huge);
    /* The token with a character changed or appended at the text level. */
    _cleanup_free_ char *copy = strdup(token);
    copy[strlen(copy) / 2] = copy[strlen(copy) / 2] == 'A' ? 'B' : 'A';
    assert_int_equal(yun_token_validate(keys, copy, T0, &t), YUN_E_TOKEN_INVALID);
    char longer[YUN_TOKEN_MAX_LEN + 8];
    snprintf(longer, sizeof longer, "%sA", token);
    assert_int_equal(yun_token_validate(keys, longer, T0, &t), YUN_E_TOKEN_INVALID);
    assert_int_equal(yun_token_validate(keys, NULL, T0, &t), -EINVAL);
}

static void
test_wrong_repository(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    assert_int_equal(yun_token_keys_create(fx->other), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(fx->keys);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *other = load(fx->other);
    _cleanup_free_ char *token = issue(keys, NULL);
    struct yun_token t;
    assert_int_equal(yun_token_validate(other, token, T0, &t), YUN_E_TOKEN_KEY);
    assert_int_equal(yun_token_validate(keys, token, T0, &t), 0);

    /* Our primary key file replaced by the other repository's: the key
     * the token names is gone. */
    char src[2200], dst[2200];
    snprintf(src, sizeof src, "%s/1", fx->other);
    snprintf(dst, sizeof dst, "%s/1", fx->keys);
    _cleanup_free_ char *text = NULL;
    size_t size;
    assert_int_equal(yun_read_file(src, 4096, &text, &size), 0);
    assert_int_equal(yun_write_file_atomic(dst, text, size, 0600), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *swapped = load(fx->keys);
    assert_int_equal(yun_token_validate(swapped, token, T0, &t), YUN_E_TOKEN_KEY);
}

static void
test_expiry(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(fx->keys);
    struct yun_token c = sample_claims(), t;
    c.expires_at_us = T0 + 60 * SECOND_US;
    _cleanup_free_ char *token = NULL;
    assert_int_equal(yun_token_issue(keys, &c, &token, NULL), 0);
    assert_int_equal(yun_token_validate(keys, token, T0, &t), 0);
    assert_int_equal(yun_token_validate(keys, token, c.expires_at_us - 1, &t), 0);
    assert_int_equal(yun_token_validate(keys, token, c.expires_at_us, &t), YUN_E_TOKEN_EXPIRED);
    assert_int_equal(yun_token_validate(keys, token, c.expires_at_us + 3600 * SECOND_US, &t),
                     YUN_E_TOKEN_EXPIRED);
    /* Authenticity first: an altered expired token is invalid. */
    token[10] = token[10] == 'A' ? 'B' : 'A';
    assert_int_equal(yun_token_validate(keys, token, c.expires_at_us, &t),
                     YUN_E_TOKEN_INVALID);
}

/* The rotation contract of token.h, step by step with max_active = 3. */
static void
test_rotation_max_active_3(void **state)
{
    struct fixture *fx = *state;
    struct yun_token t;
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    assert_indexes(fx->keys, "0,1");
    uint32_t staged_id = id_of_index(fx->keys, 0);

    /* T1 is issued with primary key 1. */
    struct yun_token_keys *keys = load(fx->keys);
    struct yun_token t1_info;
    _cleanup_free_ char *t1 = issue(keys, &t1_info);
    assert_int_equal(t1_info.key_id, id_of_index(fx->keys, 1));
    keys = yun_token_keys_free(keys);

    /* Rotation 1: staged 0 becomes primary 2, a new staged 0; key 1 stays
     * as a secondary, so T1 still validates. */
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), 0);
    assert_indexes(fx->keys, "0,1,2");
    assert_int_equal(id_of_index(fx->keys, 2), staged_id);
    assert_int_not_equal(id_of_index(fx->keys, 0), staged_id);
    keys = load(fx->keys);
    assert_int_equal(yun_token_validate(keys, t1, T0, &t), 0);
    struct yun_token t2_info;
    _cleanup_free_ char *t2 = issue(keys, &t2_info);
    assert_int_equal(t2_info.key_id, staged_id);
    keys = yun_token_keys_free(keys);

    /* Rotation 2: 0 becomes 3; four keys exceed max_active = 3, so the
     * oldest secondary, key 1, is deleted: T1 is refused, T2 validates. */
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), 0);
    assert_indexes(fx->keys, "0,2,3");
    keys = load(fx->keys);
    assert_int_equal(yun_token_validate(keys, t1, T0, &t), YUN_E_TOKEN_KEY);
    assert_int_equal(yun_token_validate(keys, t2, T0, &t), 0);
    keys = yun_token_keys_free(keys);

    /* Rotation 3 retires key 2 and with it T2. */
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), 0);
    assert_indexes(fx->keys, "0,3,4");
    keys = load(fx->keys);
    assert_int_equal(yun_token_validate(keys, t2, T0, &t), YUN_E_TOKEN_KEY);
    keys = yun_token_keys_free(keys);

    assert_int_equal(yun_token_keys_rotate(fx->keys, 1), -EINVAL);
    assert_int_equal(yun_token_keys_rotate(fx->keys, 0), -EINVAL);
}

/* For every max_active: a token survives max_active - 2 rotations and is
 * refused after max_active - 1. */
static void
test_rotation_general(void **state)
{
    struct fixture *fx = *state;
    for (unsigned max_active = 2; max_active <= 6; max_active++) {
        char dir[2100];
        snprintf(dir, sizeof dir, "%s/r%u", fx->dir, max_active);
        assert_int_equal(yun_token_keys_create(dir), 0);
        struct yun_token_keys *keys = load(dir);
        _cleanup_free_ char *token = issue(keys, NULL);
        keys = yun_token_keys_free(keys);
        struct yun_token t;
        for (unsigned rot = 1; rot <= max_active - 1; rot++) {
            assert_int_equal(yun_token_keys_rotate(dir, max_active), 0);
            keys = load(dir);
            assert_true(yun_token_keys_count(keys) <= max_active);
            int want = rot <= max_active - 2 ? 0 : YUN_E_TOKEN_KEY;
            assert_int_equal(yun_token_validate(keys, token, T0, &t), want);
            keys = yun_token_keys_free(keys);
        }
    }
}

/* Another node's copy of the repository, not yet rotated, validates the
 * tokens of the key it still holds as staged key 0: tokens name keys by a
 * content-derived id, not by index. */
static void
test_staged_key_validates(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    assert_int_equal(yun_mkdir_p(fx->other, 0700), 0);
    for (int i = 0; i <= 1; i++) {
        char src[2200], dst[2200];
        snprintf(src, sizeof src, "%s/%d", fx->keys, i);
        snprintf(dst, sizeof dst, "%s/%d", fx->other, i);
        _cleanup_free_ char *text = NULL;
        size_t size;
        assert_int_equal(yun_read_file(src, 4096, &text, &size), 0);
        assert_int_equal(yun_write_file_atomic(dst, text, size, 0600), 0);
    }
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(fx->keys);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *lagging = load(fx->other);
    _cleanup_free_ char *token = issue(keys, NULL);
    struct yun_token t;
    assert_int_equal(yun_token_validate(lagging, token, T0, &t), 0);
    assert_int_equal(t.key_id, id_of_index(fx->other, 0));
}

static void
test_rotation_recovers(void **state)
{
    struct fixture *fx = *state;
    char path[2200];
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), 0);
    assert_indexes(fx->keys, "0,1,2");

    /* A crash between the promotion and the new staged key leaves no key
     * 0: the next rotation only writes one, and primary 2 stays. */
    snprintf(path, sizeof path, "%s/0", fx->keys);
    assert_int_equal(unlink(path), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(fx->keys);
    _cleanup_free_ char *token = issue(keys, NULL);
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), 0);
    assert_indexes(fx->keys, "0,1,2");
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), 0);
    assert_indexes(fx->keys, "0,2,3");
    /* Primary 2 stayed primary through the first rotation, so its token
     * has the usual one more rotation to live. */
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *now = load(fx->keys);
    struct yun_token t;
    assert_int_equal(yun_token_validate(now, token, T0, &t), 0);

    /* Only a staged key: nothing to issue with until it is promoted. */
    char dir[2100];
    snprintf(dir, sizeof dir, "%s/lonely", fx->dir);
    assert_int_equal(yun_token_keys_create(dir), 0);
    snprintf(path, sizeof path, "%s/1", dir);
    assert_int_equal(unlink(path), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *lonely = load(dir);
    struct yun_token c = sample_claims();
    char *none = NULL;
    assert_int_equal(yun_token_issue(lonely, &c, &none, NULL), -ENOKEY);
    assert_null(none);
    assert_int_equal(yun_token_keys_rotate(dir, 3), 0);
    assert_indexes(dir, "0,1");
}

static void
write_text(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[2200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(yun_write_file_atomic(path, text, strlen(text), mode), 0);
}

static void
test_permissions_and_files(void **state)
{
    struct fixture *fx = *state;
    struct yun_token_keys *keys = NULL;
    char path[2200];
    assert_int_equal(yun_token_keys_load(fx->keys, &keys), -ENOENT);
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), -ENOENT);
    assert_int_equal(yun_token_keys_create(fx->keys), 0);

    /* A key file readable by others is refused, by load and rotate. */
    snprintf(path, sizeof path, "%s/1", fx->keys);
    static const mode_t open_modes[] = { 0644, 0640, 0604, 0660, 0602 };
    for (size_t i = 0; i < sizeof open_modes / sizeof open_modes[0]; i++) {
        assert_int_equal(chmod(path, open_modes[i]), 0);
        assert_int_equal(yun_token_keys_load(fx->keys, &keys), -EPERM);
        assert_int_equal(yun_token_keys_rotate(fx->keys, 3), -EPERM);
    }
    assert_int_equal(chmod(path, 0400), 0);
    keys = yun_token_keys_free(load(fx->keys));
    assert_int_equal(chmod(path, 0600), 0);

    /* So is a directory others can enter or list. */
    assert_int_equal(chmod(fx->keys, 0755), 0);
    assert_int_equal(yun_token_keys_load(fx->keys, &keys), -EPERM);
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), -EPERM);
    assert_int_equal(chmod(fx->keys, 0711), 0);
    assert_int_equal(yun_token_keys_load(fx->keys, &keys), -EPERM);
    assert_int_equal(chmod(fx->keys, 0700), 0);
    assert_null(keys);

    /* Other names are ignored. */
    write_text(fx->keys, "README", "not a key\n", 0644);
    write_text(fx->keys, "0.tmp.1234", "junk", 0644);
    write_text(fx->keys, "01", "junk", 0644);
    write_text(fx->keys, ".2", "junk", 0644);
    write_text(fx->keys, "4294967296", "junk", 0644);
    assert_indexes(fx->keys, "0,1");

    /* Malformed key files. */
    static const char *const bad[] = {
        "",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", /* no newline */
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeef\n", /* 63 */
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0\n",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg\n",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(fx->keys, "7", bad[i], 0600);
        assert_int_equal(yun_token_keys_load(fx->keys, &keys), -EBADMSG);
    }
    write_text(fx->keys, "7",
               "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff\n", 0600);
    assert_indexes(fx->keys, "0,1,7");

    /* A symbolic link, and a directory, in place of a key file. */
    snprintf(path, sizeof path, "%s/8", fx->keys);
    assert_int_equal(symlink("1", path), 0);
    assert_int_equal(yun_token_keys_load(fx->keys, &keys), -ELOOP);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(yun_token_keys_load(fx->keys, &keys), -EBADMSG);
    assert_int_equal(rmdir(path), 0);

    /* Too many keys. */
    for (int i = 10; i < 10 + YUN_TOKEN_KEYS_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d", i);
        write_text(fx->keys, name,
                   "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 0600);
    }
    assert_int_equal(yun_token_keys_load(fx->keys, &keys), -E2BIG);
    assert_null(keys);

    /* Not a directory, missing. */
    snprintf(path, sizeof path, "%s/1", fx->keys);
    assert_int_equal(yun_token_keys_load(path, &keys), -ENOTDIR);
    snprintf(path, sizeof path, "%s/missing", fx->dir);
    assert_int_equal(yun_token_keys_load(path, &keys), -ENOENT);
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A figure, not a test: no time is asserted (sanitizers slow this build). */
static void
test_validation_rate(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(yun_token_keys_create(fx->keys), 0);
    assert_int_equal(yun_token_keys_rotate(fx->keys, 3), 0);
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = load(fx->keys);
    _cleanup_free_ char *token = issue(keys, NULL);
    enum { N = 50000 };
    struct yun_token t;
    double t0 = now_s();
    for (int i = 0; i < N; i++)
        assert_int_equal(yun_token_validate(keys, token, T0, &t), 0);
    double dt = now_s() - t0;
    printf("%d validations in %.3f s: %.0f/s, %.2f us each (this build)\n", N, dt, N / dt,
           dt / N * 1e6);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_roundtrip),
        T(test_claims_limits),
        T(test_unique_audit_ids),
        T(test_bit_flips),
        T(test_wrong_repository),
        T(test_expiry),
        T(test_rotation_max_active_3),
        T(test_rotation_general),
        T(test_staged_key_validates),
        T(test_rotation_recovers),
        T(test_permissions_and_files),
        T(test_validation_rate),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
