/* SPDX-License-Identifier: Apache-2.0
 * test-rpc.c: unit tests of common/rpc.c's wire code without a bus: the
 * in-place scans of a Request (yun_rpc_scan_request) and of a Reply
 * (yun_rpc_scan_reply, under yun_rpc_unpack_reply) against protobuf-c's
 * unpack of the same bytes, on messages written byte by byte. Calls over
 * a real socket are in test-bus.c; tests/fuzz/fuzz-rpc.c compares the
 * scans with protobuf-c on arbitrary bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "rpc-priv.h"
#include "rpc.h"
#include "yun.pb-c.h"

/* An exact-size heap copy of 'bytes', so that an over-read trips ASan. */
static uint8_t *
copy_of(const uint8_t *bytes, size_t size)
{
    uint8_t *m = malloc(size ? size : 1);
    assert_non_null(m);
    memcpy(m, bytes, size);
    return m;
}

/* Whether protobuf-c takes 'bytes' as a Request, and the scan agrees. */
static bool
request_decodes(const uint8_t *bytes, size_t size)
{
    _cleanup_free_ uint8_t *m = copy_of(bytes, size);
    Yun__Request *u = yun__request__unpack(NULL, size, m);
    Yun__Request q;
    int r = yun_rpc_scan_request(m, size, &q);
    if (!u) {
        assert_int_equal(r, YUN_E_DECODE);
        return false;
    }
    assert_int_equal(r, 0);
    assert_int_equal(q.op, u->op);
    assert_int_equal(q.deadline_ms, u->deadline_ms);
    assert_int_equal(q.payload.len, u->payload.len);
    if (q.payload.len)
        assert_memory_equal(q.payload.data, u->payload.data, q.payload.len);
    yun__request__free_unpacked(u, NULL);
    return true;
}

/* Whether protobuf-c takes 'bytes' as a Reply, and the scan agrees. */
static bool
reply_decodes(const uint8_t *bytes, size_t size)
{
    _cleanup_free_ uint8_t *m = copy_of(bytes, size);
    Yun__Reply *y = yun__reply__unpack(NULL, size, m);
    const uint8_t *payload = NULL;
    size_t payload_size = 0;
    int k = yun_rpc_scan_reply(m, size, &payload, &payload_size);
    if (!y) {
        assert_int_equal(k, -1);
        assert_int_equal(yun_rpc_unpack_reply(m, size, NULL, NULL, NULL), YUN_E_DECODE);
        return false;
    }
    assert_int_equal(k, y->error == 0 ? 1 : 0);
    if (k == 1) {
        assert_int_equal(payload_size, y->payload.len);
        if (payload_size)
            assert_memory_equal(payload, y->payload.data, payload_size);
    }
    yun__reply__free_unpacked(y, NULL);
    return true;
}

/* The last occurrence of a field wins; unknown fields are skipped; a
 * known field with another wire type fails the message. */
static void
test_scan_request(void **state)
{
    static const uint8_t twice[] = {
        (1 << 3) | 0, 64,                      /* op */
        (2 << 3) | 2, 3, 'a', 'b', 'c',        /* payload */
        (9 << 3) | 5, 1, 2, 3, 4,              /* unknown fixed32 */
        (1 << 3) | 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, /* op -1 */
        (2 << 3) | 2, 2, 'd', 'e',             /* payload again */
        (3 << 3) | 0, 0x80, 0x01,              /* deadline_ms 128 */
    };
    assert_true(request_decodes(twice, sizeof twice));
    Yun__Request q;
    assert_int_equal(yun_rpc_scan_request(twice, sizeof twice, &q), 0);
    assert_int_equal((int)q.op, -1);
    assert_int_equal(q.payload.len, 2);
    assert_ptr_equal(q.payload.data, twice + sizeof twice - 5);
    assert_int_equal(q.deadline_ms, 128);

    static const uint8_t op_as_bytes[] = { (1 << 3) | 2, 1, 0 };
    assert_false(request_decodes(op_as_bytes, sizeof op_as_bytes));
    static const uint8_t empty[1];
    assert_true(request_decodes(empty, 0));
}

/* A length is at most 5 bytes long for protobuf-c (its
 * scan_length_prefixed_data): a longer one fails the message, even when
 * its value is small, and so it must fail the scans (pbwire read lengths
 * of up to 10 bytes, as any varint). */
static void
test_scan_long_length(void **state)
{
    /* Request.payload and an unknown field, with a padded 5-byte length
     * of 0: fine for all. */
    static const uint8_t five[] = { (2 << 3) | 2, 0x80, 0x80, 0x80, 0x80, 0x00 };
    assert_true(request_decodes(five, sizeof five));
    assert_true(reply_decodes(five, sizeof five));
    static const uint8_t five_unknown[] = { (7 << 3) | 2, 0x81, 0x80, 0x80, 0x80, 0x00, 'x' };
    assert_true(request_decodes(five_unknown, sizeof five_unknown));

    /* The same padded to 6 and 10 bytes: no message. */
    static const uint8_t six[] = { (2 << 3) | 2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
    assert_false(request_decodes(six, sizeof six));
    static const uint8_t six_unknown[] = { (7 << 3) | 2, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00,
                                           'x' };
    assert_false(request_decodes(six_unknown, sizeof six_unknown));
    static const uint8_t ten[] = { (3 << 3) | 2, 0x80, 0x80, 0x80, 0x80, 0x80,
                                   0x80, 0x80, 0x80, 0x80, 0x00 };
    assert_false(reply_decodes(ten, sizeof ten));
    static const uint8_t reply_six[] = { (1 << 3) | 0, 0,
                                         (3 << 3) | 2, 0x82, 0x80, 0x80, 0x80, 0x80, 0x00,
                                         'o', 'k' };
    assert_false(reply_decodes(reply_six, sizeof reply_six));
}

/* pbwire refuses two keys that protobuf-c skips as unknown fields, on
 * purpose (pbwire.h): a field number 0 spelt in two bytes, and one of
 * 2^29. tests/fuzz/fuzz-rpc.c tolerates exactly these. */
static void
test_scan_stricter_keys(void **state)
{
    static const uint8_t keys[][8] = {
        { 0x80, 0x00, 0x05, (1 << 3) | 0, 1 },
        { 0x80, 0x80, 0x80, 0x80, 0x10, 0x05, (1 << 3) | 0, 1 },
    };
    static const size_t sizes[] = { 5, 8 };
    for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
        Yun__Request *u = yun__request__unpack(NULL, sizes[i], keys[i]);
        assert_non_null(u);
        assert_int_equal(u->base.n_unknown_fields, 1);
        yun__request__free_unpacked(u, NULL);
        Yun__Request q;
        assert_int_equal(yun_rpc_scan_request(keys[i], sizes[i], &q), YUN_E_DECODE);
        const uint8_t *payload;
        size_t payload_size;
        assert_int_equal(yun_rpc_scan_reply(keys[i], sizes[i], &payload, &payload_size), -1);
    }
}

/* Reply.error is a sint32: zigzag, read from the low 32 bits of its
 * varint, so that only those decide between a success and an error. */
static void
test_scan_reply_error(void **state)
{
    static const uint8_t ok_then_payload[] = { (1 << 3) | 0, 0x00, (3 << 3) | 2, 2, 'o', 'k' };
    assert_true(reply_decodes(ok_then_payload, sizeof ok_then_payload));
    static const uint8_t error_then_ok[] = { (1 << 3) | 0, 0x01, (1 << 3) | 0, 0x00 };
    assert_true(reply_decodes(error_then_ok, sizeof error_then_ok));
    /* 2^32 in a varint: 0 in 32 bits, a success. */
    static const uint8_t high_bits[] = { (1 << 3) | 0, 0x80, 0x80, 0x80, 0x80, 0x10 };
    assert_true(reply_decodes(high_bits, sizeof high_bits));
    static const uint8_t error[] = { (1 << 3) | 0, 0x0b, (2 << 3) | 2, 1, '!' };
    assert_true(reply_decodes(error, sizeof error));
    char *msg = NULL;
    assert_int_equal(yun_rpc_unpack_reply(error, sizeof error, NULL, NULL, &msg), -6);
    assert_string_equal(msg, "!");
    free(msg);
    static const uint8_t message_as_varint[] = { (2 << 3) | 0, 1 };
    assert_false(reply_decodes(message_as_varint, sizeof message_as_varint));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_request),
        cmocka_unit_test(test_scan_long_length),
        cmocka_unit_test(test_scan_stricter_keys),
        cmocka_unit_test(test_scan_reply_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
