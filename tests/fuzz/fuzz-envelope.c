/* SPDX-License-Identifier: Apache-2.0
 * fuzz-envelope.c: libFuzzer target for common/envelope.c, which reads
 * every bus message before anything is trusted.
 *
 * The first byte picks a mode:
 *   even  the rest is a received message: yun_envelope_parse() with a
 *         64 KiB limit and, when that works, yun_envelope_open() with a
 *         fixed key, at the message's own time and at the wall clock;
 *   odd   the rest describes a message to seal with the fixed key (sender
 *         and request id lengths, their bytes, a bit to flip, the body):
 *         sealed, it must parse and open to the same body; with the bit
 *         flipped inside its sealed part it must not open.
 * Any broken promise aborts. Everything is freed, so that LeakSanitizer
 * sees leaks on the error paths. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "err.h"
#include "seal.h"
#include "util.h"

#define MAX_BODY (64u * 1024)
#define WINDOW_US (60u * 1000000u)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct yun_key *
fixed_key(void)
{
    static struct yun_key key;
    static bool ready;
    if (!ready) {
        static const uint8_t secret[YUN_SECRET_SIZE] = "fuzz-envelope-secret-0123456789";
        if (yun_key_derive(secret, sizeof secret, "alice", 1, &key) < 0)
            abort();
        ready = true;
    }
    return &key;
}

static void
check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz-envelope: broken promise: %s\n", what);
        abort();
    }
}

static bool
loggable(const char *s, size_t max_len)
{
    if (!s)
        return true;
    size_t n = strlen(s);
    if (n > max_len)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* Parses and opens; returns 0 with the body, or the first error. */
static int
receive(const uint8_t *buf, size_t size, uint64_t now_us, uint8_t **ret, size_t *ret_size)
{
    struct yun_envelope_in in;
    int r = yun_envelope_parse(buf, size, MAX_BODY, &in);
    check(loggable(in.sender, YUN_PEER_ID_MAX) && loggable(in.key_id, YUN_PEER_ID_MAX) &&
              loggable(in.request_id, YUN_REQUEST_ID_MAX),
          "parse exposes only short printable strings");
    if (r < 0) {
        /* Even a caller that ignores the failure gets no body. */
        uint8_t *body = NULL;
        size_t body_size;
        check(yun_envelope_open(&in, fixed_key(), in.timestamp_us, WINDOW_US, &body,
                                &body_size) < 0 && !body,
              "open refuses what parse refused");
        yun_envelope_in_done(&in);
        return r;
    }
    if (in.reject) {
        check(in.reject < _YUN_E_FIRST && in.reject > _YUN_E_LAST,
              "a notice carries a yun code");
        yun_envelope_in_done(&in);
        return in.reject;
    }
    check(in.body_size <= MAX_BODY, "parse enforces the body limit");
    uint8_t *body = NULL;
    size_t body_size = 0;
    r = yun_envelope_open(&in, fixed_key(), now_us ? now_us : in.timestamp_us, WINDOW_US,
                          &body, &body_size);
    if (r == 0) {
        check(body_size == in.body_size && body[body_size] == 0, "open returns body_size");
        *ret = body;
        *ret_size = body_size;
    } else {
        check(!body, "a failed open returns no body");
    }
    yun_envelope_in_done(&in);
    return r;
}

static void
fuzz_received(const uint8_t *data, size_t size)
{
    uint8_t *body = NULL;
    size_t body_size;
    if (receive(data, size, 0, &body, &body_size) == 0) {
        free(body);
        body = NULL;
        /* The same at the wall clock: mostly stale, never a crash. */
        if (receive(data, size, yun_wall_us(), &body, &body_size) == 0)
            free(body);
    }
}

static bool
valid_id(const char *s, size_t max_len, bool may_be_empty)
{
    return (may_be_empty || *s) && loggable(s, max_len);
}

static void
fuzz_sealed(const uint8_t *data, size_t size)
{
    if (size < 7)
        return;
    size_t sender_len = data[0] % 70, request_len = data[1] % 70;
    uint32_t flip = (uint32_t)data[2] << 24 | (uint32_t)data[3] << 16 |
                    (uint32_t)data[4] << 8 | data[5];
    data += 6;
    size -= 6;
    if (size < sender_len + request_len)
        return;
    char sender[72], request_id[72];
    memcpy(sender, data, sender_len);
    sender[sender_len] = 0;
    memcpy(request_id, data + sender_len, request_len);
    request_id[request_len] = 0;
    const uint8_t *body = data + sender_len + request_len;
    size_t body_size = size - sender_len - request_len;

    struct yun_envelope_out out = {
        .sender = sender,
        .key_id = "alice",
        .key_epoch = 1,
        .request_id = request_id,
    };
    uint8_t *msg = NULL;
    size_t msg_size;
    int r = yun_envelope_seal(fixed_key(), &out, body, body_size, MAX_BODY, &msg, &msg_size);
    if (r < 0) {
        check(!msg, "a failed seal returns nothing");
        return;
    }
    bool valid = valid_id(sender, YUN_PEER_ID_MAX, false) &&
                 valid_id(request_id, YUN_REQUEST_ID_MAX, true);
    uint8_t *got = NULL;
    size_t got_size = 0;
    r = receive(msg, msg_size, 0, &got, &got_size);
    if (valid) {
        check(r == 0, "a valid sealed message opens");
        check(got_size == body_size && memcmp(got, body, body_size) == 0,
              "the body comes back unchanged");
    } else {
        check(r == YUN_E_DECODE, "a malformed sender or request id is YUN_E_DECODE");
    }
    free(got);
    got = NULL;

    /* One flipped bit in the sealed part (the envelope's tail: ciphertext
     * then tag) must break the seal. */
    size_t sealed_size = body_size + YUN_TAG_SIZE;
    size_t bit = flip % (sealed_size * 8);
    msg[msg_size - sealed_size + bit / 8] ^= (uint8_t)(1u << (bit % 8));
    r = receive(msg, msg_size, 0, &got, &got_size);
    check(r < 0 && !got, "a flipped bit never opens");
    if (valid)
        check(r == YUN_E_SEAL, "a flipped bit in the sealed part is YUN_E_SEAL");
    free(msg);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        fuzz_sealed(data + 1, size - 1);
    else
        fuzz_received(data + 1, size - 1);
    return 0;
}
