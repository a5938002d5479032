/* SPDX-License-Identifier: Apache-2.0
 * test-envelope.c: unit tests of common/envelope.c and common/seal.c: the
 * seal/parse/open round trip, every rejection with its own code (flipped
 * bits, wrong key, stale and future timestamps, unknown version, truncation,
 * oversize, random and mutated bytes), rejection notices, the replay and
 * reply cache, and peer key derivation. The bus itself is in test-bus.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "envelope.h"
#include "err.h"
#include "seal.h"
#include "util.h"
#include "yun.pb-c.h"

#define MAX_BODY 4096
#define WINDOW_US (5u * 1000000u)
#define SECOND_US 1000000u

static const uint8_t test_secret[YUN_SECRET_SIZE] = "yun-test-secret-0123456789abcdef";

/* Deterministic PRNG (xorshift64*), so a failure reproduces. */
static uint64_t
rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

static void
key_of(const char *peer, uint32_t epoch, struct yun_key *ret)
{
    assert_int_equal(yun_key_derive(test_secret, sizeof test_secret, peer, epoch, ret), 0);
}

static void
fill_pattern(uint8_t *p, size_t size, uint8_t seed)
{
    for (size_t i = 0; i < size; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

static const struct yun_envelope_out sample_out = {
    .sender = "alice",
    .key_id = "alice",
    .key_epoch = 3,
    .request_id = "req-0001",
    .token = "tok",
    .token_size = 3,
};

static void
seal_sample(const struct yun_key *key, const void *body, size_t size, uint8_t **ret,
            size_t *ret_size)
{
    assert_int_equal(yun_envelope_seal(key, &sample_out, body, size, MAX_BODY, ret, ret_size),
                     0);
}

static bool
is_printable(const char *s, size_t max_len)
{
    size_t n = strlen(s);
    if (n > max_len)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* What parse exposes must be safe to log even when it fails: any string it
 * hands out is short and printable. */
static void
assert_in_loggable(const struct yun_envelope_in *in)
{
    if (in->sender)
        assert_true(is_printable(in->sender, YUN_PEER_ID_MAX));
    if (in->key_id)
        assert_true(is_printable(in->key_id, YUN_PEER_ID_MAX));
    if (in->request_id)
        assert_true(is_printable(in->request_id, YUN_REQUEST_ID_MAX));
}

/* Parses and, when that works, opens with 'key' at 'now_us' (0: the
 * message's own timestamp). Returns the first failure, or 0 with the body in
 * '*ret_body' (may be NULL). 'ret_reject' (may be NULL) gets in.reject. */
static int
parse_open(const void *buf, size_t size, size_t max_body, const struct yun_key *key,
           uint64_t now_us, uint8_t **ret_body, size_t *ret_size, int *ret_reject)
{
    struct yun_envelope_in in;
    int r = yun_envelope_parse(buf, size, max_body, &in);
    assert_in_loggable(&in);
    if (ret_reject)
        *ret_reject = in.reject;
    if (r == 0 && in.reject) {
        /* A notice is never a message: it cannot be opened. */
        assert_true(in.reject < _YUN_E_FIRST && in.reject > _YUN_E_LAST);
        uint8_t *b = NULL;
        size_t bs = 0;
        assert_int_equal(yun_envelope_open(&in, key, yun_wall_us(), WINDOW_US, &b, &bs),
                         -EINVAL);
        assert_null(b);
        r = in.reject;
    } else if (r == 0) {
        uint8_t *b = NULL;
        size_t bs = 0;
        r = yun_envelope_open(&in, key, now_us ? now_us : in.timestamp_us, WINDOW_US, &b,
                              &bs);
        if (r == 0 && ret_body) {
            *ret_body = b;
            *ret_size = bs;
        } else {
            if (r < 0)
                assert_null(b);
            free(b);
        }
    }
    yun_envelope_in_done(&in);
    return r;
}

/* Offset of 'needle' in 'hay', which must hold it exactly once. */
static size_t
find_once(const uint8_t *hay, size_t hay_size, const uint8_t *needle, size_t size)
{
    const uint8_t *p = memmem(hay, hay_size, needle, size);
    assert_non_null(p);
    assert_null(memmem(p + 1, hay_size - (size_t)(p - hay) - 1, needle, size));
    return (size_t)(p - hay);
}

/* Where the header and the sealed part sit inside an encoded envelope. */
struct layout {
    size_t header_off, header_size;
    size_t sealed_off, sealed_size;
};

static void
envelope_layout(const uint8_t *buf, size_t size, struct layout *ret)
{
    Yun__Envelope *e = yun__envelope__unpack(NULL, size, buf);
    assert_non_null(e);
    ret->header_off = find_once(buf, size, e->header.data, e->header.len);
    ret->header_size = e->header.len;
    ret->sealed_off = find_once(buf, size, e->sealed.data, e->sealed.len);
    ret->sealed_size = e->sealed.len;
    yun__envelope__free_unpacked(e, NULL);
    assert_true(ret->header_off + ret->header_size <= ret->sealed_off);
}

/* Builds an envelope by hand with the generated API, as another (future or
 * hostile) implementation would: 'h' is packed and used as the AAD. */
static void
forge(const Yun__Header *h, const struct yun_key *key, const void *body, size_t size,
      uint8_t **ret, size_t *ret_size)
{
    size_t hsize = yun__header__get_packed_size(h);
    _cleanup_free_ uint8_t *hbuf = malloc(hsize + 1);
    _cleanup_free_ uint8_t *sbuf = malloc(size + YUN_TAG_SIZE);
    assert_non_null(hbuf);
    assert_non_null(sbuf);
    yun__header__pack(h, hbuf);
    uint8_t nonce[YUN_NONCE_SIZE] = { 0 };
    if (h->nonce.len)
        memcpy(nonce, h->nonce.data,
               h->nonce.len < sizeof nonce ? h->nonce.len : sizeof nonce);
    assert_int_equal(yun_seal(key, nonce, hbuf, hsize, body, size, sbuf), 0);

    Yun__Envelope e = YUN__ENVELOPE__INIT;
    e.header.data = hbuf;
    e.header.len = hsize;
    e.sealed.data = sbuf;
    e.sealed.len = size + YUN_TAG_SIZE;
    *ret_size = yun__envelope__get_packed_size(&e);
    *ret = malloc(*ret_size);
    assert_non_null(*ret);
    yun__envelope__pack(&e, *ret);
}

static uint8_t forge_nonce[YUN_NONCE_SIZE] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };

static void
forge_header(Yun__Header *h, size_t body_size)
{
    Yun__Header init = YUN__HEADER__INIT;
    *h = init;
    h->version = YUN_ENVELOPE_VERSION;
    h->sender = (char *)"alice";
    h->key_id = (char *)"alice";
    h->key_epoch = 3;
    h->timestamp_us = yun_wall_us();
    h->nonce.data = forge_nonce;
    h->nonce.len = sizeof forge_nonce;
    h->request_id = (char *)"forged-1";
    h->body_size = (uint32_t)body_size;
}

/* ---- round trip ---- */

static void
test_round_trip(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    uint8_t body[300];
    fill_pattern(body, sizeof body, 1);

    uint64_t before = yun_wall_us();
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, body, sizeof body, &buf, &size);
    uint64_t after = yun_wall_us();
    assert_true(size > sizeof body + YUN_TAG_SIZE);
    /* The body is encrypted: its bytes do not appear in the clear. */
    assert_null(memmem(buf, size, body, 32));

    struct yun_envelope_in in;
    assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), 0);
    assert_int_equal(in.reject, 0);
    assert_non_null(in.hdr);
    assert_int_equal(in.version, YUN_ENVELOPE_VERSION);
    assert_string_equal(in.sender, "alice");
    assert_string_equal(in.key_id, "alice");
    assert_int_equal(in.key_epoch, 3);
    assert_string_equal(in.request_id, "req-0001");
    assert_int_equal(in.token_size, 3);
    assert_memory_equal(in.token, "tok", 3);
    assert_int_equal(in.body_size, sizeof body);
    assert_non_null(in.nonce);
    assert_in_range(in.timestamp_us, before, after);

    _cleanup_free_ uint8_t *out = NULL;
    size_t out_size = 0;
    assert_int_equal(yun_envelope_open(&in, &key, yun_wall_us(), WINDOW_US, &out, &out_size),
                     0);
    assert_int_equal(out_size, sizeof body);
    assert_memory_equal(out, body, sizeof body);
    assert_int_equal(out[out_size], 0); /* the promised terminating byte */
    yun_envelope_in_done(&in);
    assert_null(in.env);
    assert_null(in.hdr);
}

static void
test_round_trip_empty_body(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    struct yun_envelope_out out = { .sender = "s", .key_id = "k", .request_id = "" };
    assert_int_equal(yun_envelope_seal(&key, &out, NULL, 0, MAX_BODY, &buf, &size), 0);

    struct yun_envelope_in in;
    assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), 0);
    assert_string_equal(in.request_id, "");
    assert_int_equal(in.token_size, 0);
    assert_int_equal(in.key_epoch, 0);
    _cleanup_free_ uint8_t *body = NULL;
    size_t body_size = 99;
    assert_int_equal(yun_envelope_open(&in, &key, in.timestamp_us, WINDOW_US, &body,
                                       &body_size),
                     0);
    assert_non_null(body);
    assert_int_equal(body_size, 0);
    yun_envelope_in_done(&in);
}

static void
test_seal_fresh_nonce(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    _cleanup_free_ uint8_t *a = NULL, *b = NULL;
    size_t as, bs;
    seal_sample(&key, "same", 4, &a, &as);
    seal_sample(&key, "same", 4, &b, &bs);

    struct yun_envelope_in ia, ib;
    assert_int_equal(yun_envelope_parse(a, as, MAX_BODY, &ia), 0);
    assert_int_equal(yun_envelope_parse(b, bs, MAX_BODY, &ib), 0);
    assert_memory_not_equal(ia.nonce, ib.nonce, YUN_NONCE_SIZE);
    yun_envelope_in_done(&ia);
    yun_envelope_in_done(&ib);
}

static void
test_seal_bad_args(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    uint8_t *buf = NULL;
    size_t size = 0;
    char long_id[YUN_REQUEST_ID_MAX + 2];
    memset(long_id, 'r', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;

    struct yun_envelope_out out = sample_out;
    out.request_id = long_id;
    assert_int_equal(yun_envelope_seal(&key, &out, "x", 1, MAX_BODY, &buf, &size), -EINVAL);
    out = sample_out;
    out.sender = NULL;
    assert_int_equal(yun_envelope_seal(&key, &out, "x", 1, MAX_BODY, &buf, &size), -EINVAL);
    out = sample_out;
    out.key_id = NULL;
    assert_int_equal(yun_envelope_seal(&key, &out, "x", 1, MAX_BODY, &buf, &size), -EINVAL);
    assert_null(buf);

    /* The longest allowed request id goes through. */
    long_id[YUN_REQUEST_ID_MAX] = 0;
    out = sample_out;
    out.request_id = long_id;
    assert_int_equal(yun_envelope_seal(&key, &out, "x", 1, MAX_BODY, &buf, &size), 0);
    assert_int_equal(parse_open(buf, size, MAX_BODY, &key, 0, NULL, NULL, NULL), 0);
    free(buf);
}

/* ---- flipped bits ---- */

static void
test_flip_header_bits(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    uint8_t body[40];
    fill_pattern(body, sizeof body, 3);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, body, sizeof body, &buf, &size);
    struct layout l;
    envelope_layout(buf, size, &l);

    _cleanup_free_ uint8_t *copy = malloc(size);
    assert_non_null(copy);
    unsigned seal_count = 0;
    for (size_t bit = 0; bit < l.header_size * 8; bit++) {
        memcpy(copy, buf, size);
        copy[l.header_off + bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int r = parse_open(copy, size, MAX_BODY, &key, 0, NULL, NULL, NULL);
        /* Depending on the field hit the header no longer decodes, names
         * another version or size, or decodes and breaks the seal. */
        if (r != YUN_E_SEAL && r != YUN_E_DECODE && r != YUN_E_VERSION && r != YUN_E_TOOBIG)
            fail_msg("header bit %zu: got %d (%s)", bit, r, yun_errname(r));
        if (r == YUN_E_SEAL)
            seal_count++;
    }
    /* Nonce, timestamp and the strings' letters decode fine: most flips
     * must be caught by the seal itself, not by luck in the decoder. */
    assert_true(seal_count > l.header_size * 8 / 2);
}

static void
test_flip_sealed_bits(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    uint8_t body[40];
    fill_pattern(body, sizeof body, 5);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, body, sizeof body, &buf, &size);
    struct layout l;
    envelope_layout(buf, size, &l);
    assert_int_equal(l.sealed_size, sizeof body + YUN_TAG_SIZE);
    /* The tag is the last YUN_TAG_SIZE bytes: this covers both. */
    _cleanup_free_ uint8_t *copy = malloc(size);
    assert_non_null(copy);
    for (size_t bit = 0; bit < l.sealed_size * 8; bit++) {
        memcpy(copy, buf, size);
        copy[l.sealed_off + bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int r = parse_open(copy, size, MAX_BODY, &key, 0, NULL, NULL, NULL);
        if (r != YUN_E_SEAL)
            fail_msg("sealed bit %zu (%s): got %d (%s)", bit,
                     bit / 8 >= sizeof body ? "tag" : "ciphertext", r, yun_errname(r));
    }
}

static void
test_flip_framing_bits(void **state)
{
    /* The envelope's own tags and lengths: never a success. */
    struct yun_key key;
    key_of("alice", 3, &key);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, "framing", 7, &buf, &size);
    struct layout l;
    envelope_layout(buf, size, &l);

    _cleanup_free_ uint8_t *copy = malloc(size);
    assert_non_null(copy);
    size_t checked = 0;
    for (size_t i = 0; i < size; i++) {
        if ((i >= l.header_off && i < l.header_off + l.header_size) || i >= l.sealed_off)
            continue;
        for (unsigned bit = 0; bit < 8; bit++) {
            memcpy(copy, buf, size);
            copy[i] ^= (uint8_t)(1u << bit);
            int r = parse_open(copy, size, MAX_BODY, &key, 0, NULL, NULL, NULL);
            if (r >= 0)
                fail_msg("framing byte %zu bit %u accepted", i, bit);
            checked++;
        }
    }
    assert_true(checked >= 16);
}

/* ---- keys and time ---- */

static void
test_wrong_key(void **state)
{
    struct yun_key key, other;
    key_of("alice", 3, &key);
    key_of("alice", 4, &other);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, "secret body", 11, &buf, &size);

    struct yun_envelope_in in;
    assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), 0);
    uint8_t *body = NULL;
    size_t body_size = 12345;
    assert_int_equal(yun_envelope_open(&in, &other, in.timestamp_us, WINDOW_US, &body,
                                       &body_size),
                     YUN_E_SEAL);
    assert_null(body);
    assert_int_equal(body_size, 12345);
    /* The seal is checked before the clock: a forger learns nothing from
     * the timestamp. */
    assert_int_equal(yun_envelope_open(&in, &other, in.timestamp_us + 100 * SECOND_US,
                                       WINDOW_US, &body, &body_size),
                     YUN_E_SEAL);
    yun_envelope_in_done(&in);
}

static void
test_timestamp_window(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, "time", 4, &buf, &size);

    struct yun_envelope_in in;
    assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), 0);
    uint64_t ts = in.timestamp_us;
    static const struct {
        int64_t delta_us; /* now = ts + delta */
        int expect;
    } cases[] = {
        { 0, 0 },
        { WINDOW_US, 0 },
        { -(int64_t)WINDOW_US, 0 },
        { WINDOW_US / 2, 0 },
        { WINDOW_US + SECOND_US, YUN_E_STALE },  /* an old message */
        { -(int64_t)(WINDOW_US + SECOND_US), YUN_E_STALE }, /* from the future */
        { WINDOW_US + 1, YUN_E_STALE },
        { -(int64_t)WINDOW_US - 1, YUN_E_STALE },
        { 3600 * (int64_t)SECOND_US, YUN_E_STALE },
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        uint8_t *body = NULL;
        size_t body_size;
        int r = yun_envelope_open(&in, &key, ts + (uint64_t)cases[i].delta_us, WINDOW_US,
                                  &body, &body_size);
        if (r != cases[i].expect)
            fail_msg("delta %lld: got %s, want %s", (long long)cases[i].delta_us,
                     yun_errname(r), yun_errname(cases[i].expect));
        if (r == 0) {
            assert_int_equal(body_size, 4);
            assert_memory_equal(body, "time", 4);
        } else {
            assert_null(body);
        }
        free(body);
    }
    yun_envelope_in_done(&in);
}

/* ---- hand-built envelopes ---- */

static void
test_forged_v1_is_accepted(void **state)
{
    /* Proves forge() builds what seal builds, so the rejections below are
     * about the one field each changes. */
    struct yun_key key;
    key_of("alice", 3, &key);
    Yun__Header h;
    forge_header(&h, 5);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    forge(&h, &key, "hello", 5, &buf, &size);
    uint8_t *body = NULL;
    size_t body_size = 0;
    assert_int_equal(parse_open(buf, size, MAX_BODY, &key, 0, &body, &body_size, NULL), 0);
    assert_int_equal(body_size, 5);
    assert_memory_equal(body, "hello", 5);
    free(body);
}

static void
test_unknown_version(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    static const uint32_t versions[] = { 0, 2, 3, 0xffffffffu };
    for (size_t i = 0; i < ELEMENTSOF(versions); i++) {
        Yun__Header h;
        forge_header(&h, 5);
        h.version = versions[i];
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size;
        forge(&h, &key, "hello", 5, &buf, &size);

        struct yun_envelope_in in;
        assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), YUN_E_VERSION);
        /* Kept for the log line. */
        assert_int_equal(in.version, versions[i]);
        /* Even a caller that opens what failed to parse gets no body. */
        uint8_t *body = NULL;
        size_t body_size;
        assert_true(yun_envelope_open(&in, &key, in.timestamp_us, WINDOW_US, &body,
                                      &body_size) < 0);
        assert_null(body);
        yun_envelope_in_done(&in);
    }
}

static void
test_malformed_header_fields(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    char id64[YUN_PEER_ID_MAX + 1], id65[YUN_PEER_ID_MAX + 2];
    memset(id64, 'a', sizeof id64 - 1);
    id64[sizeof id64 - 1] = 0;
    memset(id65, 'a', sizeof id65 - 1);
    id65[sizeof id65 - 1] = 0;
    uint8_t short_nonce[8] = { 0 };

    enum { SENDER, KEY_ID, REQUEST_ID, NONCE, BODY_SIZE } what;
    static const struct {
        int what;
        const char *value;
        int expect;
    } cases[] = {
        { SENDER, "", YUN_E_DECODE },
        { SENDER, "ev il", YUN_E_DECODE },
        { SENDER, "evil\nERR forged log line", YUN_E_DECODE },
        { SENDER, "\x1b[31m", YUN_E_DECODE },
        { SENDER, "id65", YUN_E_DECODE },
        { SENDER, "id64", 0 },
        { KEY_ID, "", YUN_E_DECODE },
        { KEY_ID, "a\tb", YUN_E_DECODE },
        { KEY_ID, "id65", YUN_E_DECODE },
        { REQUEST_ID, "", 0 },
        { REQUEST_ID, "r\r\n", YUN_E_DECODE },
        { REQUEST_ID, "id65", YUN_E_DECODE },
        { REQUEST_ID, "id64", 0 },
        { NONCE, "short", YUN_E_DECODE },
        { NONCE, "none", YUN_E_DECODE },
        { BODY_SIZE, "4", YUN_E_DECODE },
        { BODY_SIZE, "6", YUN_E_DECODE },
        { BODY_SIZE, "0", YUN_E_DECODE },
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        Yun__Header h;
        forge_header(&h, 5);
        const char *v = cases[i].value;
        char *s = strcmp(v, "id64") == 0 ? id64 : strcmp(v, "id65") == 0 ? id65 : (char *)v;
        what = cases[i].what;
        switch (what) {
        case SENDER:
            h.sender = s;
            break;
        case KEY_ID:
            h.key_id = s;
            break;
        case REQUEST_ID:
            h.request_id = s;
            break;
        case NONCE:
            h.nonce.data = strcmp(v, "none") == 0 ? NULL : short_nonce;
            h.nonce.len = strcmp(v, "none") == 0 ? 0 : sizeof short_nonce;
            break;
        case BODY_SIZE:
            h.body_size = (uint32_t)atoi(v);
            break;
        }
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size;
        forge(&h, &key, "hello", 5, &buf, &size);

        /* A caller that opens what failed to parse must get nothing, and
         * no out-of-bounds read of a short nonce or sealed part. */
        struct yun_envelope_in in;
        if (yun_envelope_parse(buf, size, MAX_BODY, &in) < 0) {
            uint8_t *body = NULL;
            size_t body_size;
            assert_true(yun_envelope_open(&in, &key, in.timestamp_us, WINDOW_US, &body,
                                          &body_size) < 0);
            assert_null(body);
        }
        yun_envelope_in_done(&in);

        int r = parse_open(buf, size, MAX_BODY, &key, 0, NULL, NULL, NULL);
        if (r != cases[i].expect)
            fail_msg("case %zu (%d '%s'): got %s, want %s", i, cases[i].what, v,
                     yun_errname(r), yun_errname(cases[i].expect));
    }
}

static void
test_failed_parse_exposes_no_junk(void **state)
{
    /* A rejected header's fields go to the daemon's log line: control
     * characters in them would forge log lines. */
    struct yun_key key;
    key_of("alice", 3, &key);
    Yun__Header h;
    forge_header(&h, 5);
    h.sender = (char *)"x\n2026-01-01T00:00:00Z yun-scheduler[1] ERR forged";
    h.request_id = (char *)"req\x1b[2J";
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    forge(&h, &key, "hello", 5, &buf, &size);

    struct yun_envelope_in in;
    assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), YUN_E_DECODE);
    assert_null(in.sender);
    assert_null(in.request_id);
    assert_string_equal(in.key_id, "alice"); /* the good field is kept */
    yun_envelope_in_done(&in);

    /* Same for a version failure, checked before the fields. */
    forge_header(&h, 5);
    h.version = 9;
    h.key_id = (char *)"bad key";
    free(buf);
    buf = NULL;
    forge(&h, &key, "hello", 5, &buf, &size);
    assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), YUN_E_VERSION);
    assert_null(in.key_id);
    assert_string_equal(in.sender, "alice");
    yun_envelope_in_done(&in);
}

/* ---- sizes ---- */

/* The in-place parse follows protobuf-c's rules of the wire format:
 * unknown fields are skipped, the last occurrence of a field wins, and a
 * known field of another wire type or a group fails the message. */
static void
test_wire_rules(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    uint8_t body[100];
    fill_pattern(body, sizeof body, 5);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, body, sizeof body, &buf, &size);
    _cleanup_free_ uint8_t *m = malloc(size + 16);
    assert_non_null(m);
    _cleanup_free_ uint8_t *out = NULL;
    size_t out_size = 0;

    /* An unknown varint field before and after: skipped. */
    static const uint8_t unknown[] = { (9 << 3) | 0, 0x96, 0x01 };
    memcpy(m, unknown, sizeof unknown);
    memcpy(m + sizeof unknown, buf, size);
    memcpy(m + sizeof unknown + size, unknown, sizeof unknown);
    assert_int_equal(parse_open(m, size + 2 * sizeof unknown, MAX_BODY, &key, 0, &out,
                                &out_size, NULL), 0);
    assert_int_equal(out_size, sizeof body);
    assert_memory_equal(out, body, sizeof body);

    /* An earlier 'sealed' of junk: the last one wins. */
    static const uint8_t junk[] = { (2 << 3) | 2, 3, 'x', 'y', 'z' };
    memcpy(m, junk, sizeof junk);
    memcpy(m + sizeof junk, buf, size);
    assert_int_equal(parse_open(m, size + sizeof junk, MAX_BODY, &key, 0, NULL, NULL, NULL), 0);

    /* 'sealed' as a varint, a group, a field number 0, a length past the
     * end: no message. */
    static const uint8_t bad[][3] = {
        { (2 << 3) | 0, 0x01, 0 }, { (9 << 3) | 3, 0, 0 }, { 0x00, 0x01, 0 },
        { (9 << 3) | 2, 0x7f, 0 },
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        size_t n = i == 3 ? 2 : (bad[i][0] & 7) == 3 ? 1 : 2;
        memcpy(m, buf, size);
        memcpy(m + size, bad[i], n);
        struct yun_envelope_in in;
        assert_int_equal(yun_envelope_parse(m, size + n, MAX_BODY, &in), YUN_E_DECODE);
        assert_null(in.env);
        yun_envelope_in_done(&in);
    }

    /* Keys past protobuf-c's: an unknown fixed32 whose key takes 6 bytes
     * (protobuf-c refuses it too), and a field number of 2^29 (which
     * protobuf-c reads modulo 2^32: refusing it is the safer side). */
    static const uint8_t bad_keys[][10] = {
        { 0xad, 0xfe, 0xff, 0xff, 0xf8, 0x00, 0, 0, 0, 0 },
        { 0x80, 0x80, 0x80, 0x80, 0x10, 0x00 },
    };
    static const size_t bad_key_sizes[] = { 10, 6 };
    for (size_t i = 0; i < ELEMENTSOF(bad_keys); i++) {
        memcpy(m, buf, size);
        memcpy(m + size, bad_keys[i], bad_key_sizes[i]);
        struct yun_envelope_in in;
        assert_int_equal(yun_envelope_parse(m, size + bad_key_sizes[i], MAX_BODY, &in),
                         YUN_E_DECODE);
        yun_envelope_in_done(&in);
        if (i == 0)
            assert_null(yun__envelope__unpack(NULL, size + bad_key_sizes[i], m));
    }

    /* A length spelt in 6 bytes (0, padded): one more than protobuf-c
     * reads, so no message either. */
    static const uint8_t long_length[] = { (9 << 3) | 2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
    memcpy(m, buf, size);
    memcpy(m + size, long_length, sizeof long_length);
    struct yun_envelope_in in;
    assert_int_equal(yun_envelope_parse(m, size + sizeof long_length, MAX_BODY, &in),
                     YUN_E_DECODE);
    yun_envelope_in_done(&in);
    assert_null(yun__envelope__unpack(NULL, size + sizeof long_length, m));
}

static void
test_truncated(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    uint8_t body[200];
    fill_pattern(body, sizeof body, 9);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, body, sizeof body, &buf, &size);
    for (size_t n = 0; n < size; n++) {
        /* An exact-size heap copy, so that an over-read trips ASan. */
        _cleanup_free_ uint8_t *copy = malloc(n ? n : 1);
        assert_non_null(copy);
        memcpy(copy, buf, n);
        struct yun_envelope_in in;
        int r = yun_envelope_parse(copy, n, MAX_BODY, &in);
        assert_in_loggable(&in);
        yun_envelope_in_done(&in);
        if (r >= 0)
            fail_msg("truncated to %zu of %zu bytes: parsed", n, size);
        assert_int_not_equal(parse_open(copy, n, MAX_BODY, &key, 0, NULL, NULL, NULL), 0);
    }
}

static void
test_oversized(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    size_t limit = MAX_BODY + YUN_ENVELOPE_OVERHEAD;
    _cleanup_free_ uint8_t *big = calloc(1, limit + 1);
    assert_non_null(big);
    struct yun_envelope_in in;
    assert_int_equal(yun_envelope_parse(big, limit + 1, MAX_BODY, &in), YUN_E_TOOBIG);
    yun_envelope_in_done(&in);
    /* At the limit the size passes and the zeros fail to decode. */
    assert_int_equal(yun_envelope_parse(big, limit, MAX_BODY, &in), YUN_E_DECODE);
    yun_envelope_in_done(&in);

    /* A header announcing more than the receiver's limit. */
    uint8_t body[2000];
    fill_pattern(body, sizeof body, 2);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, body, sizeof body, &buf, &size);
    assert_true(size < 1000 + YUN_ENVELOPE_OVERHEAD);
    assert_int_equal(yun_envelope_parse(buf, size, 1000, &in), YUN_E_TOOBIG);
    yun_envelope_in_done(&in);
    assert_int_equal(yun_envelope_parse(buf, size, sizeof body, &in), 0);
    yun_envelope_in_done(&in);

    /* A tiny message claiming a 4 GiB body: refused before any allocation. */
    Yun__Header h;
    forge_header(&h, 0xffffffffu);
    _cleanup_free_ uint8_t *liar = NULL;
    forge(&h, &key, "x", 1, &liar, &size);
    assert_int_equal(yun_envelope_parse(liar, size, MAX_BODY, &in), YUN_E_TOOBIG);
    yun_envelope_in_done(&in);
}

static void
test_sender_refuses_too_big(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    _cleanup_free_ uint8_t *body = calloc(1, 101);
    assert_non_null(body);
    uint8_t *buf = NULL;
    size_t size = 0;
    assert_int_equal(yun_envelope_seal(&key, &sample_out, body, 101, 100, &buf, &size),
                     YUN_E_TOOBIG);
    assert_null(buf);
    assert_int_equal(yun_envelope_seal(&key, &sample_out, body, 100, 100, &buf, &size), 0);
    assert_int_equal(parse_open(buf, size, 100, &key, 0, NULL, NULL, NULL), 0);
    free(buf);
}

/* ---- garbage ---- */

static void
test_random_bytes(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    uint64_t seed = 0x5eed1234abcdULL;
    unsigned errors_by_kind[3] = { 0 }; /* decode, reject notice, other */
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(rng_next(&seed) % 300);
        _cleanup_free_ uint8_t *buf = malloc(n ? n : 1);
        assert_non_null(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rng_next(&seed);
        /* Every other one starts like an envelope, to get past the first
         * tag byte more often. */
        if (n > 2 && iter % 2) {
            buf[0] = 0x0a;
            buf[1] = (uint8_t)(rng_next(&seed) % (n - 1));
        }
        int reject = 0;
        int r = parse_open(buf, n, MAX_BODY, &key, 0, NULL, NULL, &reject);
        if (r >= 0)
            fail_msg("iteration %d: %zu random bytes accepted", iter, n);
        errors_by_kind[r == YUN_E_DECODE ? 0 : reject ? 1 : 2]++;
    }
    assert_true(errors_by_kind[0] > 0);
}

static void
test_mutated_envelopes(void **state)
{
    struct yun_key key;
    key_of("alice", 3, &key);
    uint8_t body[64];
    fill_pattern(body, sizeof body, 4);
    _cleanup_free_ uint8_t *orig = NULL;
    size_t orig_size;
    seal_sample(&key, body, sizeof body, &orig, &orig_size);

    uint64_t seed = 0xfeedfaceULL;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = orig_size;
        unsigned op = (unsigned)(rng_next(&seed) % 4);
        if (op == 1)
            n = orig_size - 1 - (size_t)(rng_next(&seed) % (orig_size - 1));
        else if (op == 2)
            n = orig_size + 1 + (size_t)(rng_next(&seed) % 16);
        _cleanup_free_ uint8_t *buf = malloc(n);
        assert_non_null(buf);
        memcpy(buf, orig, n < orig_size ? n : orig_size);
        for (size_t i = orig_size; i < n; i++)
            buf[i] = (uint8_t)rng_next(&seed);
        unsigned changes = 1 + (unsigned)(rng_next(&seed) % 4);
        for (unsigned c = 0; op != 1 && op != 2 && c < changes; c++) {
            uint8_t x = (uint8_t)(rng_next(&seed) | 1); /* never 0: always a change */
            buf[rng_next(&seed) % n] ^= x;
        }
        uint8_t *got = NULL;
        size_t got_size = 0;
        int r = parse_open(buf, n, MAX_BODY, &key, 0, &got, &got_size, NULL);
        /* Appended bytes may be unknown fields, which protobuf skips: the
         * authenticated parts are untouched, so accepting is right as long
         * as what is delivered is exactly what was sealed. Any other change
         * must be refused. */
        if (r >= 0 && op == 2) {
            assert_int_equal(got_size, sizeof body);
            assert_memory_equal(got, body, sizeof body);
        } else if (r >= 0) {
            fail_msg("iteration %d (op %u, %zu bytes): mutation accepted", iter, op, n);
        }
        free(got);
    }
}

/* ---- rejection notices ---- */

static void
test_reject_notice(void **state)
{
    for (int code = YUN_E_SEAL; code > _YUN_E_LAST; code--) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size;
        assert_int_equal(yun_envelope_reject(code, "req-9", &buf, &size), 0);
        struct yun_envelope_in in;
        assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), 0);
        assert_int_equal(in.reject, code);
        assert_string_equal(in.request_id, "req-9");
        /* A notice cannot be opened as a message, whatever the key. */
        struct yun_key key;
        key_of("alice", 3, &key);
        uint8_t *body = NULL;
        size_t body_size;
        assert_int_equal(yun_envelope_open(&in, &key, yun_wall_us(), WINDOW_US, &body,
                                           &body_size),
                         -EINVAL);
        assert_null(body);
        yun_envelope_in_done(&in);
    }

    /* No request id; and codes outside yun's range read as YUN_E_DECODE. */
    static const int odd[] = { 0, 5, -ENOMEM, _YUN_E_FIRST, _YUN_E_LAST, -20000 };
    for (size_t i = 0; i < ELEMENTSOF(odd); i++) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size;
        assert_int_equal(yun_envelope_reject(odd[i], NULL, &buf, &size), 0);
        struct yun_envelope_in in;
        assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), 0);
        assert_int_equal(in.reject, YUN_E_DECODE);
        assert_string_equal(in.request_id, "");
        yun_envelope_in_done(&in);
    }
}

static void
test_forged_reject_code(void **state)
{
    /* A notice claiming success, or a foreign code, is still an error. */
    static const int32_t codes[] = {
        1, -1, _YUN_E_FIRST, _YUN_E_LAST, INT32_MIN, INT32_MAX,
    };
    for (size_t i = 0; i < ELEMENTSOF(codes); i++) {
        Yun__Envelope e = YUN__ENVELOPE__INIT;
        e.reject = codes[i];
        uint8_t buf[32];
        size_t size = yun__envelope__pack(&e, buf);
        struct yun_envelope_in in;
        assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), 0);
        assert_int_equal(in.reject, YUN_E_DECODE);
        assert_true(!in.request_id || !*in.request_id);
        yun_envelope_in_done(&in);
    }
}

/* ---- replay and reply cache ---- */

static void
nonce_of(uint64_t i, uint8_t nonce[YUN_NONCE_SIZE])
{
    memset(nonce, 0xa5, YUN_NONCE_SIZE);
    memcpy(nonce, &i, sizeof i);
}

/* Checks a nonce from a sender whose clock runs a whole window ahead of
 * ours (the longest open() accepts a message for). */
static int
check_ahead_w(struct yun_replay_cache *c, const uint8_t *nonce, uint64_t now, uint64_t w)
{
    return yun_replay_cache_check_nonce(c, nonce, now + w, now);
}
#define check_ahead(c, nonce, now) check_ahead_w(c, nonce, now, w)

static void
test_replay_nonce(void **state)
{
    struct yun_replay_cache *c = NULL;
    uint64_t w = 1000;
    assert_int_equal(yun_replay_cache_new(w, 8, &c), 0);
    uint8_t a[YUN_NONCE_SIZE], b[YUN_NONCE_SIZE];
    nonce_of(1, a);
    nonce_of(2, b);
    uint64_t t0 = 1000000;
    /* Every message here comes from a sender whose clock is a whole window
     * ahead: open() accepts it for two windows after it arrives. */

    assert_int_equal(check_ahead(c, a, t0), 0);
    assert_int_equal(yun_replay_cache_nonces(c), 1);
    assert_int_equal(check_ahead(c, a, t0), YUN_E_REPLAY);
    assert_int_equal(check_ahead(c, b, t0 + 10), 0);
    assert_int_equal(check_ahead(c, a, t0 + w), YUN_E_REPLAY);
    assert_int_equal(check_ahead(c, a, t0 + 2 * w), YUN_E_REPLAY);
    assert_int_equal(yun_replay_cache_nonces(c), 2);

    /* Long after the window: forgotten, accepted again (and remembered). */
    assert_int_equal(check_ahead(c, a, t0 + 2 * w + 1), 0);
    assert_int_equal(check_ahead(c, a, t0 + 2 * w + 2), YUN_E_REPLAY);
    /* 'b' is still remembered: expiry goes by age. */
    assert_int_equal(check_ahead(c, b, t0 + 2 * w + 3), YUN_E_REPLAY);

    yun_replay_cache_expire(c, t0 + 100 * w);
    assert_int_equal(yun_replay_cache_nonces(c), 0);
    assert_int_equal(check_ahead(c, b, t0 + 100 * w), 0);
    c = yun_replay_cache_free(c);
    assert_null(c);
    assert_null(yun_replay_cache_free(NULL));
}

static void
test_replay_window_edge(void **state)
{
    /* The seal's window and the cache's memory must meet: whenever open()
     * still accepts a message, its nonce must still be remembered. The
     * worst case is a sender whose clock is a whole window ahead. */
    struct yun_key key;
    key_of("alice", 3, &key);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    seal_sample(&key, "edge", 4, &buf, &size);
    struct yun_envelope_in in;
    assert_int_equal(yun_envelope_parse(buf, size, MAX_BODY, &in), 0);
    uint64_t first = in.timestamp_us - WINDOW_US;
    uint64_t last = in.timestamp_us + WINDOW_US;

    struct yun_replay_cache *c = NULL;
    assert_int_equal(yun_replay_cache_new(WINDOW_US, 8, &c), 0);
    static const uint64_t steps[] = { 0, 1, WINDOW_US, 2 * WINDOW_US - 1, 2 * WINDOW_US,
                                      2 * WINDOW_US + 1 };
    bool seen = false;
    for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
        uint64_t now = first + steps[i];
        uint8_t *body = NULL;
        size_t body_size;
        int r = yun_envelope_open(&in, &key, now, WINDOW_US, &body, &body_size);
        free(body);
        if (now <= last)
            assert_int_equal(r, 0);
        else
            assert_int_equal(r, YUN_E_STALE);
        if (r < 0)
            continue;
        r = yun_replay_cache_check_nonce(c, in.nonce, in.timestamp_us, now);
        if (r != (seen ? YUN_E_REPLAY : 0))
            fail_msg("now = first + %llu: got %s", (unsigned long long)steps[i],
                     yun_errname(r));
        seen = true;
    }
    yun_replay_cache_free(c);
    yun_envelope_in_done(&in);
}

static void
test_replay_many_nonces(void **state)
{
    struct yun_replay_cache *c = NULL;
    uint64_t w = 1000000;
    assert_int_equal(yun_replay_cache_new(w, 8, &c), 0);
    const uint64_t n = 200000;
    uint8_t nonce[YUN_NONCE_SIZE];
    /* Half at t0 and half a window later, so expiry can split them. */
    for (uint64_t i = 0; i < n; i++) {
        nonce_of(i * 0x9e3779b97f4a7c15ULL, nonce);
        assert_int_equal(check_ahead(c, nonce, i < n / 2 ? 10 : 10 + w), 0);
    }
    assert_int_equal(yun_replay_cache_nonces(c), n);
    for (uint64_t i = 0; i < n; i += 7) {
        nonce_of(i * 0x9e3779b97f4a7c15ULL, nonce);
        assert_int_equal(check_ahead(c, nonce, 10 + w), YUN_E_REPLAY);
    }
    assert_int_equal(yun_replay_cache_nonces(c), n);

    /* The first half expires, the second stays. */
    yun_replay_cache_expire(c, 10 + 2 * w + 1);
    assert_int_equal(yun_replay_cache_nonces(c), n / 2);
    for (uint64_t i = 0; i < n; i += 5) {
        nonce_of(i * 0x9e3779b97f4a7c15ULL, nonce);
        int r = check_ahead(c, nonce, 10 + 2 * w + 1);
        assert_int_equal(r, i < n / 2 ? 0 : YUN_E_REPLAY);
    }
    yun_replay_cache_expire(c, 100 * w);
    assert_int_equal(yun_replay_cache_nonces(c), 0);
    yun_replay_cache_free(c);
}

static void
test_replay_nonce_on_time(void **state)
{
    /* A sender whose clock agrees with ours: its message is accepted for
     * one window, and its nonce is kept that long, not two. */
    struct yun_replay_cache *c = NULL;
    uint64_t w = 1000, t0 = 5000000;
    assert_int_equal(yun_replay_cache_new(w, 8, &c), 0);
    uint8_t a[YUN_NONCE_SIZE], b[YUN_NONCE_SIZE], d[YUN_NONCE_SIZE];
    nonce_of(11, a);
    nonce_of(12, b);
    nonce_of(13, d);
    assert_int_equal(yun_replay_cache_check_nonce(c, a, t0, t0), 0);
    assert_int_equal(yun_replay_cache_check_nonce(c, a, t0, t0 + w), YUN_E_REPLAY);
    yun_replay_cache_expire(c, t0 + w + 1);
    assert_int_equal(yun_replay_cache_nonces(c), 0);

    /* One sent from a window ahead holds those behind it in the ring:
     * they are kept longer, never shorter. */
    assert_int_equal(yun_replay_cache_check_nonce(c, b, t0 + 3 * w, t0 + 2 * w), 0);
    assert_int_equal(yun_replay_cache_check_nonce(c, d, t0 + 2 * w, t0 + 2 * w), 0);
    assert_int_equal(yun_replay_cache_check_nonce(c, d, t0 + 2 * w, t0 + 3 * w), YUN_E_REPLAY);
    yun_replay_cache_expire(c, t0 + 3 * w + 1);
    assert_int_equal(yun_replay_cache_nonces(c), 2);
    yun_replay_cache_expire(c, t0 + 4 * w + 1);
    assert_int_equal(yun_replay_cache_nonces(c), 0);

    /* A stamp older than the window (open() refuses it) is still kept
     * until now, not dropped at once. */
    assert_int_equal(yun_replay_cache_check_nonce(c, a, t0, t0 + 10 * w), 0);
    assert_int_equal(yun_replay_cache_check_nonce(c, a, t0, t0 + 10 * w), YUN_E_REPLAY);
    yun_replay_cache_free(c);
}

/* The reference the cache must agree with: nonces in arrival order, the
 * head dropped while its time has passed, found by a linear scan. */
struct model_nonce {
    uint64_t id, expire;
};

static void
test_replay_nonce_model(void **state)
{
    /* Random arrivals, repeats, clock skews and pauses, checked step by
     * step against the reference; the ring grows and shrinks many times and
     * the index deletes out of long probe runs (a small id space makes
     * repeats common). */
    struct yun_replay_cache *c = NULL;
    uint64_t w = 2000;
    assert_int_equal(yun_replay_cache_new(w, 8, &c), 0);
    size_t cap = 1 << 20, head = 0, tail = 0;
    struct model_nonce *m = calloc(cap, sizeof *m);
    assert_non_null(m);
    uint64_t now = 1000000, rng = 0x2545f4914f6cdd1dULL;
    for (int step = 0; step < 200000; step++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        /* Mostly steady; now and then a pause that empties the cache. */
        now += (rng % 1000 == 0) ? 3 * w : rng % 4;
        uint64_t id = (rng >> 8) % 30000;
        uint64_t sent = now - w + (rng >> 24) % (2 * w + 1);
        while (head < tail && m[head].expire < now)
            head++;
        bool seen = false;
        for (size_t i = head; i < tail && !seen; i++)
            seen = m[i].id == id;
        uint8_t nonce[YUN_NONCE_SIZE];
        nonce_of(id, nonce);
        int r = yun_replay_cache_check_nonce(c, nonce, sent, now);
        if (r != (seen ? YUN_E_REPLAY : 0))
            fail_msg("step %d: id %llu got %s", step, (unsigned long long)id, yun_errname(r));
        if (!seen) {
            assert_true(tail < cap);
            m[tail++] = (struct model_nonce){ .id = id, .expire = sent + w };
        }
        assert_int_equal(yun_replay_cache_nonces(c), tail - head);
    }
    free(m);
    yun_replay_cache_free(c);
}

static void
assert_reply(struct yun_replay_cache *c, const char *key_id, const char *req,
             const char *want)
{
    const uint8_t *got = NULL;
    size_t size = 0;
    int r = yun_replay_cache_get_reply(c, key_id, req, &got, &size);
    if (!want) {
        assert_int_equal(r, -ENOENT);
        return;
    }
    assert_int_equal(r, 0);
    assert_int_equal(size, strlen(want));
    assert_memory_equal(got, want, size);
}

static void
test_reply_cache(void **state)
{
    struct yun_replay_cache *c = NULL;
    uint64_t w = 1000;
    assert_int_equal(yun_replay_cache_new(w, 3, &c), 0);
    assert_reply(c, "alice", "r1", NULL);

    assert_int_equal(yun_replay_cache_put_reply(c, "alice", "r1", "one", 3, 100), 0);
    assert_reply(c, "alice", "r1", "one");
    /* Keyed by both peer and request id. */
    assert_reply(c, "bob", "r1", NULL);
    assert_reply(c, "alice", "r2", NULL);
    assert_reply(c, "alicer", "1", NULL);
    assert_reply(c, "alic", "er1", NULL);

    /* Replacing keeps one entry. */
    assert_int_equal(yun_replay_cache_put_reply(c, "alice", "r1", "uno", 3, 101), 0);
    assert_reply(c, "alice", "r1", "uno");

    /* The cache holds a copy. */
    char buf[8] = "two";
    assert_int_equal(yun_replay_cache_put_reply(c, "bob", "r1", buf, 3, 102), 0);
    memcpy(buf, "XXX", 3);
    assert_reply(c, "bob", "r1", "two");

    assert_int_equal(yun_replay_cache_put_reply(c, "alice", "r3", "three", 5, 103), 0);
    /* A fourth evicts the oldest, alice/r1. */
    assert_int_equal(yun_replay_cache_put_reply(c, "alice", "r4", "four", 4, 104), 0);
    assert_reply(c, "alice", "r1", NULL);
    assert_reply(c, "bob", "r1", "two");
    assert_reply(c, "alice", "r3", "three");
    assert_reply(c, "alice", "r4", "four");

    /* Empty replies are fine; empty request ids are not cacheable. */
    assert_int_equal(yun_replay_cache_put_reply(c, "bob", "r5", "", 0, 105), 0);
    assert_reply(c, "bob", "r5", "");
    assert_int_equal(yun_replay_cache_put_reply(c, "bob", "", "x", 1, 105), -EINVAL);
    assert_reply(c, "bob", "", NULL);

    /* Expiry: r3 (put at 103) is gone after 103 + 2w, r5 (105) is not. */
    yun_replay_cache_expire(c, 103 + 2 * w);
    assert_reply(c, "alice", "r3", NULL);
    assert_reply(c, "bob", "r5", "");
    yun_replay_cache_expire(c, 106 + 2 * w);
    assert_reply(c, "bob", "r5", NULL);
    yun_replay_cache_free(c);
}

static void
test_reply_cache_limits(void **state)
{
    struct yun_replay_cache *c = NULL;
    assert_int_equal(yun_replay_cache_new(1000, 0, &c), 0); /* 0 means 1 */
    char id[YUN_PEER_ID_MAX + 1];
    memset(id, 'k', sizeof id - 1);
    id[sizeof id - 1] = 0;
    char req[YUN_REQUEST_ID_MAX + 1];
    memset(req, 'r', sizeof req - 1);
    req[sizeof req - 1] = 0;
    assert_int_equal(yun_replay_cache_put_reply(c, id, req, "max", 3, 1), 0);
    assert_reply(c, id, req, "max");
    assert_int_equal(yun_replay_cache_put_reply(c, "a", "b", "ab", 2, 1), 0);
    assert_reply(c, id, req, NULL);
    assert_reply(c, "a", "b", "ab");

    /* Many puts through a small cache stay bounded and correct. */
    yun_replay_cache_free(c);
    assert_int_equal(yun_replay_cache_new(1000, 100, &c), 0);
    for (int i = 0; i < 5000; i++) {
        char r[32], v[32];
        snprintf(r, sizeof r, "req-%d", i);
        snprintf(v, sizeof v, "reply-%d", i);
        assert_int_equal(yun_replay_cache_put_reply(c, "peer", r, v, strlen(v), 10), 0);
    }
    for (int i = 0; i < 5000; i++) {
        char r[32], v[32];
        snprintf(r, sizeof r, "req-%d", i);
        snprintf(v, sizeof v, "reply-%d", i);
        assert_reply(c, "peer", r, i >= 4900 ? v : NULL);
    }
    yun_replay_cache_free(c);
}

/* ---- key derivation ---- */

static void
test_key_derive(void **state)
{
    struct yun_key a1, a1b, a2, b1, ab1;
    key_of("a", 1, &a1);
    key_of("a", 1, &a1b);
    key_of("a", 2, &a2);
    key_of("b", 1, &b1);
    key_of("ab", 1, &ab1);
    assert_memory_equal(a1.bytes, a1b.bytes, YUN_KEY_SIZE);
    assert_memory_not_equal(a1.bytes, a2.bytes, YUN_KEY_SIZE);
    assert_memory_not_equal(a1.bytes, b1.bytes, YUN_KEY_SIZE);
    assert_memory_not_equal(a1.bytes, ab1.bytes, YUN_KEY_SIZE);
    assert_memory_not_equal(a2.bytes, b1.bytes, YUN_KEY_SIZE);

    /* Another secret, another key. */
    uint8_t other[YUN_SECRET_SIZE];
    memcpy(other, test_secret, sizeof other);
    other[31] ^= 1;
    struct yun_key o1;
    assert_int_equal(yun_key_derive(other, sizeof other, "a", 1, &o1), 0);
    assert_memory_not_equal(a1.bytes, o1.bytes, YUN_KEY_SIZE);

    /* Many ids and epochs, all distinct. */
    enum { N = 64 };
    struct yun_key keys[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "host-%d", i / 4);
        key_of(id, (uint32_t)(i % 4) * 0x01010101u, &keys[i]);
        for (int j = 0; j < i; j++)
            assert_memory_not_equal(keys[i].bytes, keys[j].bytes, YUN_KEY_SIZE);
    }
}

static void
test_key_derive_known_answer(void **state)
{
    /* HKDF-SHA256(salt "yun bus peer key v1", ikm 00..1f, info "agent-1" NUL
     * 00 00 00 07), computed independently (Python hmac). Every key in a
     * deployed cluster depends on this staying the same. */
    static const char want[] =
        "fe7d479ab16c8e8a9a8d29575cd31a88a6003ac00bcd5a6f09cbaea7262f2886";
    uint8_t secret[32];
    for (int i = 0; i < 32; i++)
        secret[i] = (uint8_t)i;
    struct yun_key k;
    assert_int_equal(yun_key_derive(secret, sizeof secret, "agent-1", 7, &k), 0);
    char hex[2 * YUN_KEY_SIZE + 1];
    yun_hex_encode(k.bytes, sizeof k.bytes, hex);
    assert_string_equal(hex, want);
}

static void
test_key_derive_bad_args(void **state)
{
    struct yun_key k;
    assert_int_equal(yun_key_derive(test_secret, 15, "a", 1, &k), -EINVAL);
    assert_int_equal(yun_key_derive(NULL, 32, "a", 1, &k), -EINVAL);
    assert_int_equal(yun_key_derive(test_secret, 32, "", 1, &k), -EINVAL);
    assert_int_equal(yun_key_derive(test_secret, 32, NULL, 1, &k), -EINVAL);
    char id[258];
    memset(id, 'i', sizeof id - 1);
    id[257] = 0;
    assert_int_equal(yun_key_derive(test_secret, 32, id, 1, &k), -EINVAL);
    id[256] = 0;
    assert_int_equal(yun_key_derive(test_secret, 32, id, 1, &k), 0);
    assert_int_equal(yun_key_derive(test_secret, 16, "a", 1, &k), 0);
}

static void
test_seal_with_derived_keys(void **state)
{
    struct yun_key alice, bob, alice_old;
    key_of("alice", 1, &alice);
    key_of("bob", 1, &bob);
    key_of("alice", 0, &alice_old);
    _cleanup_free_ uint8_t *buf = NULL;
    size_t size;
    struct yun_envelope_out out = { .sender = "alice", .key_id = "alice", .key_epoch = 1,
                                    .request_id = "k-1" };
    assert_int_equal(yun_envelope_seal(&alice, &out, "hi bob", 6, MAX_BODY, &buf, &size), 0);

    uint8_t *body = NULL;
    size_t body_size = 0;
    assert_int_equal(parse_open(buf, size, MAX_BODY, &alice, 0, &body, &body_size, NULL), 0);
    assert_int_equal(body_size, 6);
    assert_memory_equal(body, "hi bob", 6);
    free(body);
    assert_int_equal(parse_open(buf, size, MAX_BODY, &bob, 0, NULL, NULL, NULL), YUN_E_SEAL);
    assert_int_equal(parse_open(buf, size, MAX_BODY, &alice_old, 0, NULL, NULL, NULL),
                     YUN_E_SEAL);
}

static void
test_raw_seal_open(void **state)
{
    struct yun_key key;
    key_of("raw", 1, &key);
    uint8_t nonce[YUN_NONCE_SIZE];
    assert_int_equal(yun_nonce_new(nonce), 0);
    uint8_t sealed[5 + YUN_TAG_SIZE], plain[5];
    assert_int_equal(yun_seal(&key, nonce, "aad", 3, "plain", 5, sealed), 0);
    assert_int_equal(yun_open(&key, nonce, "aad", 3, sealed, sizeof sealed, plain), 0);
    assert_memory_equal(plain, "plain", 5);
    /* Other AAD: refused and the output wiped. */
    assert_int_equal(yun_open(&key, nonce, "aaD", 3, sealed, sizeof sealed, plain),
                     YUN_E_SEAL);
    assert_memory_equal(plain, "\0\0\0\0\0", 5);
    /* Shorter than a tag. */
    assert_int_equal(yun_open(&key, nonce, NULL, 0, sealed, YUN_TAG_SIZE - 1, plain),
                     YUN_E_SEAL);
    /* Another nonce. */
    nonce[0] ^= 0x80;
    assert_int_equal(yun_open(&key, nonce, "aad", 3, sealed, sizeof sealed, plain),
                     YUN_E_SEAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_round_trip_empty_body),
        cmocka_unit_test(test_seal_fresh_nonce),
        cmocka_unit_test(test_seal_bad_args),
        cmocka_unit_test(test_flip_header_bits),
        cmocka_unit_test(test_flip_sealed_bits),
        cmocka_unit_test(test_flip_framing_bits),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_timestamp_window),
        cmocka_unit_test(test_forged_v1_is_accepted),
        cmocka_unit_test(test_unknown_version),
        cmocka_unit_test(test_malformed_header_fields),
        cmocka_unit_test(test_failed_parse_exposes_no_junk),
        cmocka_unit_test(test_wire_rules),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_sender_refuses_too_big),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_mutated_envelopes),
        cmocka_unit_test(test_reject_notice),
        cmocka_unit_test(test_forged_reject_code),
        cmocka_unit_test(test_replay_nonce),
        cmocka_unit_test(test_replay_window_edge),
        cmocka_unit_test(test_replay_many_nonces),
        cmocka_unit_test(test_replay_nonce_on_time),
        cmocka_unit_test(test_replay_nonce_model),
        cmocka_unit_test(test_reply_cache),
        cmocka_unit_test(test_reply_cache_limits),
        cmocka_unit_test(test_key_derive),
        cmocka_unit_test(test_key_derive_known_answer),
        cmocka_unit_test(test_key_derive_bad_args),
        cmocka_unit_test(test_seal_with_derived_keys),
        cmocka_unit_test(test_raw_seal_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
