/* SPDX-License-Identifier: Apache-2.0
 * pbwire.h: a reader of the protobuf wire format, for the few messages
 * that carry megabytes in a bytes field (Envelope.sealed, Request.payload,
 * Reply.payload): protobuf-c's unpack copies every bytes field, and these
 * are read in place instead. The rules are protobuf-c's: the last
 * occurrence of a field wins, unknown fields are skipped, a known field
 * with another wire type, a group, a field number 0, a length spelt in
 * more than 5 bytes or anything cut short fails the message. One rule is
 * stricter than protobuf-c's (see the keys in pbwire_next). It also
 * writes varints, for the replies framed in place around their data.
 * Pure code; used by envelope.c, rpc.c and the scheduler's downloads. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    PBWIRE_VARINT = 0,
    PBWIRE_I64 = 1,
    PBWIRE_LEN = 2,
    PBWIRE_I32 = 5,
};

struct pbwire_field {
    uint32_t number;
    int wire_type;
    uint64_t varint;         /* PBWIRE_VARINT */
    const uint8_t *data;     /* PBWIRE_LEN: borrowed from the message */
    size_t size;
};

static inline bool
pbwire_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *ret = v;
            return true;
        }
    }
    return false;
}

/* Reads the field at '*p' and moves '*p' past it. Returns 1 with '*f',
 * 0 at the end of the message, -1 when the message is malformed. */
static inline int
pbwire_next(const uint8_t **p, const uint8_t *end, struct pbwire_field *f)
{
    if (*p >= end)
        return 0;
    /* A key as protobuf-c reads one: at most 5 bytes. Its field number
     * must be 1..2^29-1, which is stricter than protobuf-c on purpose:
     * protobuf-c refuses 0 only when the key's first byte says so, and
     * takes a 0 spelt in more bytes, or a number of 2^29 or more, as an
     * unknown field to skip. No encoder writes either; refusing them is
     * the safer side, and tests/fuzz/fuzz-rpc.c tolerates exactly this. */
    uint64_t key;
    const uint8_t *start = *p;
    if (!pbwire_varint(p, end, &key) || *p - start > 5 || (key >> 3) == 0 ||
        (key >> 3) > 0x1FFFFFFF)
        return -1;
    f->number = (uint32_t)(key >> 3);
    f->wire_type = (int)(key & 7);
    f->data = NULL;
    f->size = 0;
    f->varint = 0;
    switch (f->wire_type) {
    case PBWIRE_VARINT:
        return pbwire_varint(p, end, &f->varint) ? 1 : -1;
    case PBWIRE_I64:
    case PBWIRE_I32: {
        size_t n = f->wire_type == PBWIRE_I64 ? 8 : 4;
        if ((size_t)(end - *p) < n)
            return -1;
        f->data = *p;
        f->size = n;
        *p += n;
        return 1;
    }
    case PBWIRE_LEN: {
        /* A length as protobuf-c reads one: at most 5 bytes, at most
         * INT_MAX. */
        uint64_t n;
        const uint8_t *len_start = *p;
        if (!pbwire_varint(p, end, &n) || *p - len_start > 5 || n > INT_MAX ||
            n > (uint64_t)(end - *p))
            return -1;
        f->data = *p;
        f->size = (size_t)n;
        *p += n;
        return 1;
    }
    default: /* groups and reserved types: protobuf-c refuses them too */
        return -1;
    }
}

/* Bytes the varint 'v' takes on the wire. */
static inline size_t
pbwire_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes the varint 'v' at 'p' (room for pbwire_varint_size(v) bytes);
 * returns the bytes written. */
static inline size_t
pbwire_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}
