/* SPDX-License-Identifier: Apache-2.0
 * rpc.c: typed calls on the bus (see rpc.h). */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "loop.h"
#include "pbwire.h"
#include "rpc-priv.h"
#include "rpc.h"

static int
pack_message(const ProtobufCMessage *m, uint8_t **ret, size_t *ret_size)
{
    size_t size = m ? protobuf_c_message_get_packed_size(m) : 0;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    if (m)
        protobuf_c_message_pack(m, buf);
    *ret = buf;
    *ret_size = size;
    return 0;
}

int
yun_rpc_pack_request(Yun__Op op, const ProtobufCMessage *req, uint64_t deadline_ms,
                     uint8_t **ret, size_t *ret_size)
{
    /* Request{op, payload, deadline_ms} is laid out by hand, the payload
     * packed in place: packing it apart and then into the Request would
     * copy an upload chunk once more. Field order and proto3's absent
     * defaults, as protobuf-c packs it. */
    size_t psize = req ? protobuf_c_message_get_packed_size(req) : 0;
    uint8_t *buf = malloc(11 + 11 + psize + 11);
    if (!buf)
        return -ENOMEM;
    uint8_t *p = buf;
    if (op != 0) {
        *p++ = (1 << 3) | 0;
        p += pbwire_varint_put(p, (uint64_t)(int64_t)(int32_t)op); /* an enum is an int32 */
    }
    if (psize) {
        *p++ = (2 << 3) | 2;
        p += pbwire_varint_put(p, psize);
        p += protobuf_c_message_pack(req, p);
    }
    if (deadline_ms) {
        *p++ = (3 << 3) | 0;
        p += pbwire_varint_put(p, deadline_ms);
    }
    *ret = buf;
    *ret_size = (size_t)(p - buf);
    return 0;
}

int
yun_rpc_pack_reply(int error, const char *message, const ProtobufCMessage *payload,
                   uint8_t **ret, size_t *ret_size)
{
    _cleanup_free_ uint8_t *p = NULL;
    size_t psize = 0;
    if (error == 0 && payload) {
        int r = pack_message(payload, &p, &psize);
        if (r < 0)
            return r;
    }
    Yun__Reply y = YUN__REPLY__INIT;
    y.error = error;
    y.error_message = (char *)(message ? message : "");
    y.payload.data = p;
    y.payload.len = psize;
    return pack_message(&y.base, ret, ret_size);
}

int
yun_rpc_scan_request(const uint8_t *body, size_t size, Yun__Request *ret)
{
    Yun__Request q = YUN__REQUEST__INIT;
    const uint8_t *p = body, *end = body + size;
    struct pbwire_field f;
    int n;
    while ((n = pbwire_next(&p, end, &f)) > 0) {
        if (f.number == 1 || f.number == 3) {
            if (f.wire_type != PBWIRE_VARINT)
                return YUN_E_DECODE;
            if (f.number == 1)
                q.op = (Yun__Op)(int32_t)(uint32_t)f.varint; /* an enum is an int32 */
            else
                q.deadline_ms = f.varint;
        } else if (f.number == 2) {
            if (f.wire_type != PBWIRE_LEN)
                return YUN_E_DECODE;
            q.payload.data = (uint8_t *)f.data;
            q.payload.len = f.size;
        }
    }
    if (n < 0)
        return YUN_E_DECODE;
    *ret = q;
    return 0;
}

/* A successful Reply's payload, in place (see rpc-priv.h). */
int
yun_rpc_scan_reply(const uint8_t *body, size_t size, const uint8_t **ret, size_t *ret_size)
{
    const uint8_t *p = body, *end = body + size;
    const uint8_t *payload = NULL;
    size_t payload_size = 0;
    uint64_t error = 0;
    struct pbwire_field f;
    int n;
    while ((n = pbwire_next(&p, end, &f)) > 0) {
        if (f.number == 1) {
            if (f.wire_type != PBWIRE_VARINT)
                return -1;
            error = (uint32_t)f.varint;
        } else if (f.number == 2 || f.number == 3) {
            if (f.wire_type != PBWIRE_LEN)
                return -1;
            if (f.number == 3) {
                payload = f.data;
                payload_size = f.size;
            }
        }
    }
    if (n < 0)
        return -1;
    if (error != 0)
        return 0;
    *ret = payload;
    *ret_size = payload_size;
    return 1;
}

int
yun_rpc_unpack_reply(const uint8_t *body, size_t size, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **ret, char **ret_errmsg)
{
    /* A success (an image chunk) is decoded from its place in 'body';
     * protobuf-c would copy its payload first. */
    const uint8_t *payload = NULL;
    size_t payload_size = 0;
    int k = yun_rpc_scan_reply(body, size, &payload, &payload_size);
    if (k < 0)
        return YUN_E_DECODE;
    if (k > 0) {
        if (desc && ret) {
            static const uint8_t empty[1];
            ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, payload_size,
                                                            payload ? payload : empty);
            if (!m)
                return YUN_E_DECODE;
            *ret = m;
        }
        return 0;
    }
    Yun__Reply *y = yun__reply__unpack(NULL, size, body);
    if (!y)
        return YUN_E_DECODE;
    int r = y->error;
    if (r > 0)
        r = YUN_E_DECODE;
    if (r < 0) {
        if (ret_errmsg)
            *ret_errmsg = strdup(*y->error_message ? y->error_message : yun_strerror(r));
        yun__reply__free_unpacked(y, NULL);
        return r;
    }
    if (desc && ret) {
        ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, y->payload.len,
                                                        y->payload.data);
        if (!m) {
            yun__reply__free_unpacked(y, NULL);
            return YUN_E_DECODE;
        }
        *ret = m;
    }
    yun__reply__free_unpacked(y, NULL);
    return 0;
}

int
yun_rpc_call_full(struct yun_bus_client *c, const char *request_id, const void *token,
                  size_t token_size, Yun__Op op, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret_reply,
                  char **ret_errmsg)
{
    _cleanup_free_ uint8_t *body = NULL;
    size_t size;
    int r = yun_rpc_pack_request(op, req, 0, &body, &size);
    if (r < 0)
        return r;
    _cleanup_free_ uint8_t *reply = NULL;
    size_t reply_size;
    r = yun_bus_client_call(c, request_id, token, token_size, body, size, &reply, &reply_size);
    if (r < 0) {
        if (ret_errmsg)
            *ret_errmsg = strdup(yun_strerror(r));
        return r;
    }
    return yun_rpc_unpack_reply(reply, reply_size, reply_desc, ret_reply, ret_errmsg);
}

int
yun_rpc_call(struct yun_bus_client *c, Yun__Op op, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret_reply,
             char **ret_errmsg)
{
    return yun_rpc_call_full(c, NULL, NULL, 0, op, req, reply_desc, ret_reply, ret_errmsg);
}

/* ---- a window of calls in flight ---- */

struct rpc_slot {
    struct yun_bus_client *client;
    bool busy;              /* a call was sent and its reply not taken */
    int64_t deadline_ms;
};

struct yun_rpc_window {
    unsigned depth;
    int timeout_ms;
    struct rpc_slot slots[];
};

int
yun_rpc_window_new(const struct yun_bus_client *c, unsigned depth, int timeout_ms,
                   struct yun_rpc_window **ret)
{
    if (!c || depth == 0 || depth > 64 || timeout_ms <= 0 || !ret)
        return -EINVAL;
    struct yun_rpc_window *w = calloc(1, sizeof *w + depth * sizeof w->slots[0]);
    if (!w)
        return -ENOMEM;
    w->depth = depth;
    w->timeout_ms = timeout_ms;
    for (unsigned i = 0; i < depth; i++) {
        int r = yun_bus_client_dup(c, &w->slots[i].client);
        if (r < 0) {
            yun_rpc_window_free(w);
            return r;
        }
    }
    *ret = w;
    return 0;
}

struct yun_rpc_window *
yun_rpc_window_free(struct yun_rpc_window *w)
{
    if (!w)
        return NULL;
    for (unsigned i = 0; i < w->depth; i++)
        yun_bus_client_free(w->slots[i].client);
    free(w);
    return NULL;
}

unsigned
yun_rpc_window_depth(const struct yun_rpc_window *w)
{
    return w->depth;
}

/* Waits until 'fd' is readable or 'deadline_ms' passes. */
static int
wait_readable(int fd, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - yun_now_ms();
        if (left <= 0)
            return YUN_E_UNREACHABLE;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n > 0)
            return 0;
    }
}

int
yun_rpc_window_send(struct yun_rpc_window *w, unsigned slot, const void *token,
                    size_t token_size, Yun__Op op, const ProtobufCMessage *req)
{
    if (slot >= w->depth)
        return -EINVAL;
    struct rpc_slot *s = &w->slots[slot];
    if (s->busy)
        return -EBUSY;
    _cleanup_free_ uint8_t *body = NULL;
    size_t size;
    int r = yun_rpc_pack_request(op, req, 0, &body, &size);
    if (r < 0)
        return r;
    s->deadline_ms = yun_now_ms() + w->timeout_ms;
    for (;;) {
        /* -EAGAIN only while a new socket is still connecting. */
        r = yun_bus_client_send(s->client, NULL, token, token_size, body, size);
        if (r != -EAGAIN)
            break;
        if (yun_now_ms() >= s->deadline_ms)
            return YUN_E_UNREACHABLE;
        (void)poll(NULL, 0, 1);
    }
    if (r < 0)
        return r;
    s->busy = true;
    return 0;
}

int
yun_rpc_window_recv(struct yun_rpc_window *w, unsigned slot,
                    const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret_reply,
                    char **ret_errmsg)
{
    if (slot >= w->depth || !w->slots[slot].busy)
        return -EINVAL;
    struct rpc_slot *s = &w->slots[slot];
    int fd = yun_bus_client_fd(s->client);
    _cleanup_free_ uint8_t *reply = NULL;
    size_t reply_size = 0;
    int r = fd < 0 ? fd : 0;
    while (r >= 0) {
        r = yun_bus_client_recv(s->client, &reply, &reply_size);
        if (r != -EAGAIN)
            break;
        r = wait_readable(fd, s->deadline_ms);
    }
    /* Whatever came, the slot is free again: a later send on a REQ
     * socket abandons a call that never got its reply. */
    s->busy = false;
    if (r < 0) {
        if (ret_errmsg)
            *ret_errmsg = strdup(yun_strerror(r));
        return r;
    }
    return yun_rpc_unpack_reply(reply, reply_size, reply_desc, ret_reply, ret_errmsg);
}
