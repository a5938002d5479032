/* SPDX-License-Identifier: Apache-2.0
 * fuzz-rpc.c: libFuzzer target for the in-place protobuf readers built on
 * common/pbwire.h, which see bytes from the network: yun_rpc_scan_request
 * (the scheduler's decode of every request body), yun_rpc_scan_reply (a
 * client's decode of every reply body, through yun_rpc_unpack_reply) and
 * the Envelope scan inside yun_envelope_parse. Each promises to read its
 * message as protobuf-c would, so each is run on the input next to
 * protobuf-c's unpack of the same bytes, and the two must agree:
 *
 *   Request   both refuse, or both accept with the same op, deadline_ms
 *             and payload (which the scan leaves in place, in the input);
 *             and yun_rpc_pack_request packs what protobuf-c read (when
 *             its payload is a PingRequest) into protobuf-c's bytes;
 *   Reply     both refuse, or the scan says "error" exactly when
 *             protobuf-c's error is not 0, and on a success finds the
 *             same payload in place; yun_rpc_unpack_reply (with a
 *             PingReply payload) returns what protobuf-c's reading says;
 *   Envelope  yun_envelope_parse refuses the envelope (no header kept)
 *             exactly when protobuf-c does, and otherwise keeps its
 *             header bytes and its reject code; when the header unpacks
 *             too, the sealed part of an accepted parse is protobuf-c's.
 *
 * The one difference tolerated is pbwire's on purpose (pbwire.h): a key
 * whose field number is 0 (spelt in more than one byte) or 2^29 or more
 * is refused, where protobuf-c skips it as an unknown field. A refusal is
 * excused only when such a key is really there and the fields before it
 * pass on their own (check_refusal). Any other disagreement aborts.
 *
 * Seeds: the empty input (which libFuzzer always runs first) also checks a
 * few valid messages packed by protobuf-c and by rpc.c; and when the first
 * corpus directory on the command line is missing or empty, they are
 * written there as the starting corpus.
 *
 * Built by tests/fuzz/CMakeLists.txt; by hand, from the source root, after
 * a build in build-z (for the generated yun.pb-c.c):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icommon \
 *     -Ibuild-z/proto common/rpc.c common/bus.c common/loop.c \
 *     common/envelope.c common/seal.c common/util.c common/err.c \
 *     build-z/proto/yun.pb-c.c tests/fuzz/fuzz-rpc.c \
 *     -lprotobuf-c -lnanomsg -lcrypto -o /tmp/fuzz-rpc &&
 *   /tmp/fuzz-rpc -max_total_time=60 -dict=tests/fuzz/fuzz-rpc.dict \
 *     /tmp/fuzz-rpc.corpus */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "envelope.h"
#include "err.h"
#include "pbwire.h"
#include "rpc-priv.h"
#include "rpc.h"
#include "seal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz-rpc: disagreement: %s\n", what);
        abort();
    }
}

static bool
same_bytes(const uint8_t *a, size_t a_size, const uint8_t *b, size_t b_size)
{
    return a_size == b_size && (a_size == 0 || memcmp(a, b, a_size) == 0);
}

/* 'p' (with 'size' bytes) lies within the input: read in place. */
static bool
within(const uint8_t *p, size_t size, const uint8_t *buf, size_t buf_size)
{
    return size == 0 || (p >= buf && p <= buf + buf_size && size <= (size_t)(buf + buf_size - p));
}

/* Where in 'buf', a message protobuf-c accepted, the first key that pbwire
 * refuses on purpose starts (field number 0, or above 2^29-1), or -1. The
 * walk follows protobuf-c 1.4's reading (parse_tag_and_wiretype: a key of
 * at most 5 bytes, its number taken from all 32 bits it can spell, and
 * only a first byte without number bits refused; scan_length_prefixed_data:
 * a length of at most 5 bytes); it gives up (-1) on anything else, which a
 * message protobuf-c accepted does not hold. */
static ptrdiff_t
first_refused_key(const uint8_t *buf, size_t size)
{
    const uint8_t *p = buf, *end = buf + size;
    while (p < end) {
        const uint8_t *key_start = p;
        uint64_t key = 0;
        unsigned i;
        for (i = 0; i < 5 && p + i < end; i++) {
            key |= (uint64_t)(p[i] & 0x7f) << (7 * i);
            if (!(p[i] & 0x80))
                break;
        }
        if (i == 5 || p + i >= end)
            return -1;
        p += i + 1;
        if ((key >> 3) == 0 || (key >> 3) > 0x1FFFFFFF)
            return key_start - buf;
        uint64_t n = 0;
        switch (key & 7) {
        case PBWIRE_VARINT:
            for (i = 0; i < 10 && p + i < end && (p[i] & 0x80); i++)
                ;
            if (i == 10 || p + i >= end)
                return -1;
            p += i + 1;
            break;
        case PBWIRE_I64:
        case PBWIRE_I32:
            n = (key & 7) == PBWIRE_I64 ? 8 : 4;
            if ((size_t)(end - p) < n)
                return -1;
            p += n;
            break;
        case PBWIRE_LEN:
            for (i = 0; i < 5 && p + i < end; i++) {
                n |= (uint64_t)(p[i] & 0x7f) << (7 * i);
                if (!(p[i] & 0x80))
                    break;
            }
            if (i == 5 || p + i >= end)
                return -1;
            p += i + 1;
            if (n > (uint64_t)(end - p))
                return -1;
            p += n;
            break;
        default:
            return -1;
        }
    }
    return -1;
}

/* A refusal by a scan of what protobuf-c took is a bug, but for pbwire's
 * deliberate refusals. One is excused when such a key is there and the
 * fields before it pass the same comparison, 'again', on their own: then
 * the scan got as far as the key, and refused the input for it. */
static void
check_refusal(const uint8_t *buf, size_t size, const char *what,
              void (*again)(const uint8_t *buf, size_t size))
{
    ptrdiff_t at = first_refused_key(buf, size);
    check(at >= 0, what);
    /* An exact-size heap copy, so that an over-read trips ASan. */
    uint8_t *prefix = malloc((size_t)at + 1);
    if (!prefix)
        abort();
    memcpy(prefix, buf, (size_t)at);
    again(prefix, (size_t)at);
    free(prefix);
}

/* ---- Request ---- */

/* The other way: yun_rpc_pack_request, which lays a Request out by hand,
 * must give protobuf-c's bytes for what protobuf-c read, when the payload
 * is a message (a PingRequest) that packs back to itself. */
static void
check_repack(const Yun__Request *u)
{
    Yun__PingRequest *ping = yun__ping_request__unpack(NULL, u->payload.len, u->payload.data);
    if (!ping)
        return;
    size_t ping_size = yun__ping_request__get_packed_size(ping);
    uint8_t *ping_buf = malloc(ping_size + 1);
    if (!ping_buf)
        abort();
    yun__ping_request__pack(ping, ping_buf);
    Yun__Request want = YUN__REQUEST__INIT;
    want.op = u->op;
    want.payload.data = ping_buf;
    want.payload.len = ping_size;
    want.deadline_ms = u->deadline_ms;
    size_t want_size = yun__request__get_packed_size(&want);
    uint8_t *want_buf = malloc(want_size + 1);
    if (!want_buf)
        abort();
    yun__request__pack(&want, want_buf);

    uint8_t *got = NULL;
    size_t got_size = 0;
    check(yun_rpc_pack_request(u->op, &ping->base, u->deadline_ms, &got, &got_size) == 0,
          "yun_rpc_pack_request packs");
    check(same_bytes(got, got_size, want_buf, want_size), "yun_rpc_pack_request's bytes");
    free(got);
    free(want_buf);
    free(ping_buf);
    yun__ping_request__free_unpacked(ping, NULL);
}

static void
fuzz_request(const uint8_t *buf, size_t size)
{
    Yun__Request *u = yun__request__unpack(NULL, size, buf);
    Yun__Request q;
    memset(&q, 0xa5, sizeof q);
    int r = yun_rpc_scan_request(buf, size, &q);
    check(r == 0 || r == YUN_E_DECODE, "request scan returns 0 or YUN_E_DECODE");
    if (r < 0) {
        Yun__Request untouched;
        memset(&untouched, 0xa5, sizeof untouched);
        check(memcmp(&q, &untouched, sizeof q) == 0, "a refused request leaves '*ret' alone");
        if (u) {
            check_refusal(buf, size, "request scan refuses what protobuf-c accepts",
                          fuzz_request);
            yun__request__free_unpacked(u, NULL);
        }
        return;
    }
    check(u != NULL, "request scan accepts what protobuf-c refuses");
    check(q.base.descriptor == &yun__request__descriptor, "scanned request is a Request");
    check(q.op == u->op, "request op");
    check(q.deadline_ms == u->deadline_ms, "request deadline_ms");
    check(same_bytes(q.payload.data, q.payload.len, u->payload.data, u->payload.len),
          "request payload");
    check(within(q.payload.data, q.payload.len, buf, size), "request payload is in place");
    check_repack(u);
    yun__request__free_unpacked(u, NULL);
}

/* ---- Reply ---- */

/* What yun_rpc_unpack_reply must return for 'y' (protobuf-c's reading of
 * the reply, or NULL), with the PingReply it must give on success. */
static int
expected_unpack(const Yun__Reply *y, Yun__PingReply **ret_ping)
{
    *ret_ping = NULL;
    if (!y || y->error > 0)
        return YUN_E_DECODE;
    if (y->error < 0)
        return y->error;
    *ret_ping = yun__ping_reply__unpack(NULL, y->payload.len, y->payload.data);
    return *ret_ping ? 0 : YUN_E_DECODE;
}

static bool
same_message(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t a_size = protobuf_c_message_get_packed_size(a);
    size_t b_size = protobuf_c_message_get_packed_size(b);
    if (a_size != b_size)
        return false;
    uint8_t *x = malloc(a_size + 1), *z = malloc(b_size + 1);
    if (!x || !z)
        abort();
    protobuf_c_message_pack(a, x);
    protobuf_c_message_pack(b, z);
    bool same = memcmp(x, z, a_size) == 0;
    free(x);
    free(z);
    return same;
}

static void
fuzz_reply(const uint8_t *buf, size_t size)
{
    Yun__Reply *y = yun__reply__unpack(NULL, size, buf);
    static const uint8_t sentinel[1];
    const uint8_t *payload = sentinel;
    size_t payload_size = 12345;
    int k = yun_rpc_scan_reply(buf, size, &payload, &payload_size);
    check(k >= -1 && k <= 1, "reply scan returns -1, 0 or 1");
    if (k != 1)
        check(payload == sentinel && payload_size == 12345,
              "only a successful reply scan writes '*ret'");
    if (k < 0) {
        if (y)
            check_refusal(buf, size, "reply scan refuses what protobuf-c accepts", fuzz_reply);
    } else {
        check(y != NULL, "reply scan accepts what protobuf-c refuses");
        /* rpc-priv.h would allow 0 for more than an error, but a success
         * left to protobuf-c would be copied: hold it to exactly this. */
        check((k == 1) == (y->error == 0), "reply scan's error verdict");
        if (k == 1) {
            check(same_bytes(payload, payload_size, y->payload.data, y->payload.len),
                  "reply payload");
            check(within(payload, payload_size, buf, size), "reply payload is in place");
        }
    }

    /* The whole of yun_rpc_unpack_reply, whichever way it goes. When the
     * scan refused on purpose, protobuf-c's reading does not apply. */
    if (k < 0 && y) {
        yun__reply__free_unpacked(y, NULL);
        return;
    }
    Yun__PingReply *want = NULL;
    int want_r = expected_unpack(y, &want);
    ProtobufCMessage *got = NULL;
    char *errmsg = NULL;
    int r = yun_rpc_unpack_reply(buf, size, &yun__ping_reply__descriptor, &got, &errmsg);
    check(r == want_r, "yun_rpc_unpack_reply's result");
    if (r == 0) {
        check(got && same_message(got, &want->base), "yun_rpc_unpack_reply's message");
        check(!errmsg, "a success has no error message");
    } else {
        check(!got, "a failure returns no message");
        if (y && y->error < 0)
            check(errmsg && strcmp(errmsg, *y->error_message ? y->error_message
                                                             : yun_strerror(y->error)) == 0,
                  "yun_rpc_unpack_reply's error message");
    }
    if (got)
        protobuf_c_message_free_unpacked(got, NULL);
    free(errmsg);
    if (want)
        yun__ping_reply__free_unpacked(want, NULL);
    if (y)
        yun__reply__free_unpacked(y, NULL);
}

/* ---- Envelope ---- */

static void
fuzz_envelope(const uint8_t *buf, size_t size)
{
    /* A limit above any input, so that only the decode is judged. */
    size_t max_body = 16u << 20;
    Yun__Envelope *e = yun__envelope__unpack(NULL, size, buf);
    struct yun_envelope_in in;
    int r = yun_envelope_parse(buf, size, max_body, &in);
    if (!e) {
        check(r == YUN_E_DECODE && !in.header && !in.hdr,
              "envelope scan accepts what protobuf-c refuses");
        yun_envelope_in_done(&in);
        return;
    }
    Yun__Header *h = e->reject ? NULL : yun__header__unpack(NULL, e->header.len, e->header.data);
    if (r == YUN_E_DECODE && !in.header) {
        /* Refused by the scan, or by protobuf-c on the header (which
         * clears 'in' the same way). */
        if (e->reject || h)
            check_refusal(buf, size, "envelope scan refuses what protobuf-c accepts",
                          fuzz_envelope);
    } else {
        check(same_bytes(in.header, in.header_size, e->header.data, e->header.len),
              "envelope header");
        if (e->reject) {
            int want = e->reject > _YUN_E_LAST && e->reject < _YUN_E_FIRST ? e->reject
                                                                           : YUN_E_DECODE;
            check(r == 0 && in.reject == want, "envelope reject");
        } else {
            check(h && in.hdr && in.reject == 0, "envelope header decodes");
            if (r == 0)
                check(same_bytes(in.sealed, in.sealed_size, e->sealed.data, e->sealed.len),
                      "envelope sealed part");
        }
    }
    if (h)
        yun__header__free_unpacked(h, NULL);
    yun__envelope__free_unpacked(e, NULL);
    yun_envelope_in_done(&in);
}

/* ---- seeds ---- */

struct seed {
    uint8_t *data;
    size_t size;
};

#define MAX_SEEDS 16
static struct seed seeds[MAX_SEEDS];
static size_t n_seeds;

static void
add_seed(uint8_t *data, size_t size)
{
    if (!data || n_seeds == MAX_SEEDS)
        abort();
    seeds[n_seeds++] = (struct seed){ data, size };
}

static void
add_packed(const ProtobufCMessage *m)
{
    size_t size = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(size + 1);
    if (!buf)
        abort();
    protobuf_c_message_pack(m, buf);
    add_seed(buf, size);
}

static void
make_seeds(void)
{
    uint8_t *buf;
    size_t size;

    Yun__PingRequest ping = YUN__PING_REQUEST__INIT;
    ping.data.data = (uint8_t *)"hello";
    ping.data.len = 5;
    if (yun_rpc_pack_request(YUN__OP__OP_PING, &ping.base, 30000, &buf, &size) < 0)
        abort();
    add_seed(buf, size);
    if (yun_rpc_pack_request(YUN__OP__OP_HOST_LIST, NULL, 0, &buf, &size) < 0)
        abort();
    add_seed(buf, size);

    /* An unknown op (a negative enum is ten bytes) and a payload, as
     * protobuf-c packs them. */
    static uint8_t chunk[300];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (uint8_t)(i * 7);
    Yun__Request q = YUN__REQUEST__INIT;
    q.op = (Yun__Op)-3;
    q.payload.data = chunk;
    q.payload.len = sizeof chunk;
    q.deadline_ms = UINT64_MAX;
    add_packed(&q.base);

    Yun__PingReply pong = YUN__PING_REPLY__INIT;
    pong.data = ping.data;
    pong.server = (char *)"scheduler";
    pong.time_us = 1787000000000000ull;
    if (yun_rpc_pack_reply(0, NULL, &pong.base, &buf, &size) < 0)
        abort();
    add_seed(buf, size);
    if (yun_rpc_pack_reply(YUN_E_DECODE, "The request body does not decode.", NULL, &buf,
                           &size) < 0)
        abort();
    add_seed(buf, size);
    /* An error that carries a payload (an upload's offset). */
    Yun__Reply y = YUN__REPLY__INIT;
    y.error = -ENOSPC;
    y.error_message = (char *)"";
    y.payload.data = chunk;
    y.payload.len = 16;
    add_packed(&y.base);

    static const uint8_t secret[YUN_SECRET_SIZE] = "fuzz-rpc-secret-0123456789abcdef";
    struct yun_key key;
    if (yun_key_derive(secret, sizeof secret, "alice", 1, &key) < 0)
        abort();
    struct yun_envelope_out out = {
        .sender = "alice", .key_id = "alice", .key_epoch = 1, .request_id = "req-1",
    };
    if (yun_envelope_seal(&key, &out, seeds[0].data, seeds[0].size, 1u << 20, &buf, &size) < 0)
        abort();
    add_seed(buf, size);
    if (yun_envelope_reject(YUN_E_SEAL, "req-2", &buf, &size) < 0)
        abort();
    add_seed(buf, size);
}

/* The first argument that is not a flag, as libFuzzer takes corpus
 * directories. */
static const char *
corpus_dir(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (argv[i][0] != '-')
            return argv[i];
    return NULL;
}

static bool
dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT;
    struct dirent *de;
    bool empty = true;
    while (empty && (de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            empty = false;
    closedir(d);
    return empty;
}

static void
write_seeds(const char *dir)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return;
    for (size_t i = 0; i < n_seeds; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%02zu", dir, i);
        FILE *f = fopen(path, "wbx");
        if (!f)
            continue;
        (void)fwrite(seeds[i].data, 1, seeds[i].size, f);
        fclose(f);
    }
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    make_seeds();
    const char *dir = corpus_dir(*argc, *argv);
    if (dir && dir_is_empty(dir))
        write_seeds(dir);
    return 0;
}

static void
fuzz_one(const uint8_t *data, size_t size)
{
    fuzz_request(data, size);
    fuzz_reply(data, size);
    fuzz_envelope(data, size);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        for (size_t i = 0; i < n_seeds; i++) {
            /* An exact-size heap copy, so that an over-read trips ASan. */
            uint8_t *copy = malloc(seeds[i].size + !seeds[i].size);
            if (!copy)
                abort();
            memcpy(copy, seeds[i].data, seeds[i].size);
            fuzz_one(copy, seeds[i].size);
            free(copy);
        }
    }
    fuzz_one(data, size);
    return 0;
}
