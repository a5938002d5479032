/* SPDX-License-Identifier: Apache-2.0
 * rpc.c: typed calls on the bus (see rpc.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "cleanup.h"
#include "err.h"
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
    _cleanup_free_ uint8_t *payload = NULL;
    size_t psize;
    int r = pack_message(req, &payload, &psize);
    if (r < 0)
        return r;
    Yun__Request q = YUN__REQUEST__INIT;
    q.op = op;
    q.payload.data = payload;
    q.payload.len = psize;
    q.deadline_ms = deadline_ms;
    return pack_message(&q.base, ret, ret_size);
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
yun_rpc_unpack_reply(const uint8_t *body, size_t size, const ProtobufCMessageDescriptor *desc,
                     ProtobufCMessage **ret, char **ret_errmsg)
{
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
