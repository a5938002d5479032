/* SPDX-License-Identifier: Apache-2.0
 * dispatch.c: every request the scheduler serves goes through the one table
 * below: operation -> request message -> handler -> who may call it. The
 * bus has already verified the envelope; here the body is decoded, the
 * caller's privilege checked, and the handler run. A handler cannot be
 * reached without its row, so no operation can skip the check. Identity
 * and roles (users, projects) plug into sched_call_allowed() later. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "rpc.h"
#include "scheduler.h"
#include "util.h"
#include "host.pb-c.h"
#include "yun.pb-c.h"

YUN_LOG_MODULE("sched.dispatch");

enum sched_priv {
    PRIV_ANY_PEER, /* any authenticated peer */
    PRIV_AGENT,    /* compute agents only: they speak for their own host */
    PRIV_ADMIN,    /* operators (every operator client is admin until identity lands) */
};

typedef int (*sched_handler_fn)(struct sched_call *call, const ProtobufCMessage *req);

struct sched_op {
    Yun__Op op;
    const char *name;
    const ProtobufCMessageDescriptor *request;
    sched_handler_fn handler;
    enum sched_priv priv;
    bool mutating; /* logged at info; reads at debug */
};

static int sched_ping(struct sched_call *call, const ProtobufCMessage *req);

static const struct sched_op sched_ops[] = {
    { YUN__OP__OP_PING, "ping", &yun__ping_request__descriptor, sched_ping, PRIV_ANY_PEER,
      false },
    { YUN__OP__OP_HOST_REGISTER, "host.register", &yun__host_register_request__descriptor,
      sched_host_register, PRIV_AGENT, true },
    { YUN__OP__OP_HOST_HEARTBEAT, "host.heartbeat", &yun__host_heartbeat_request__descriptor,
      sched_host_heartbeat, PRIV_AGENT, false },
    { YUN__OP__OP_HOST_LIST, "host.list", &yun__host_list_request__descriptor, sched_host_list,
      PRIV_ADMIN, false },
    { YUN__OP__OP_HOST_SHOW, "host.show", &yun__host_show_request__descriptor, sched_host_show,
      PRIV_ADMIN, false },
    { YUN__OP__OP_HOST_SET_ENABLED, "host.set_enabled",
      &yun__host_set_enabled_request__descriptor, sched_host_set_enabled, PRIV_ADMIN, true },
};

static const struct sched_op *
find_op(int op)
{
    for (size_t i = 0; i < ELEMENTSOF(sched_ops); i++)
        if ((int)sched_ops[i].op == op)
            return &sched_ops[i];
    return NULL;
}

static bool
sched_call_allowed(const struct sched_call *call, enum sched_priv priv)
{
    switch (priv) {
    case PRIV_ANY_PEER:
        return true;
    case PRIV_AGENT:
        return call->peer_kind == YUN__PEER_RECORD__KIND__KIND_AGENT;
    case PRIV_ADMIN:
        return call->peer_kind == YUN__PEER_RECORD__KIND__KIND_OPERATOR;
    }
    return false;
}

int
sched_call_reply(struct sched_call *call, const ProtobufCMessage *reply)
{
    size_t size = protobuf_c_message_get_packed_size(reply);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    protobuf_c_message_pack(reply, buf);
    free(call->payload);
    call->payload = buf;
    call->payload_size = size;
    return 0;
}

int
sched_call_error(struct sched_call *call, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(call->error_message);
    if (vasprintf(&call->error_message, fmt, ap) < 0)
        call->error_message = NULL;
    va_end(ap);
    call->error = r;
    return r;
}

static int
sched_ping(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__PingRequest *q = (const Yun__PingRequest *)req;
    Yun__PingReply y = YUN__PING_REPLY__INIT;
    y.data = q->data;
    y.server = (char *)"scheduler";
    y.time_us = yun_wall_us();
    return sched_call_reply(call, &y.base);
}

static int
pack_reply(const struct sched_call *call, uint8_t **ret, size_t *ret_size)
{
    Yun__Reply y = YUN__REPLY__INIT;
    y.error = call->error;
    y.error_message = call->error_message ? call->error_message : (char *)"";
    if (call->error == 0) {
        y.payload.data = call->payload;
        y.payload.len = call->payload_size;
    }
    size_t size = yun__reply__get_packed_size(&y);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    yun__reply__pack(&y, buf);
    *ret = buf;
    *ret_size = size;
    return 0;
}

int
sched_dispatch(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
               uint8_t **ret_reply, size_t *ret_size, void *data)
{
    struct sched *s = data;
    /* The bus's key look-up gave the peer's kind with its key. */
    struct sched_call call = {
        .s = s, .peer = peer, .peer_kind = peer->role, .req = peer->request_id,
        .user = peer->key_id,
    };
    if (call.peer_kind == YUN__PEER_RECORD__KIND__KIND_OPERATOR) {
        call.project = "admin";
        call.is_admin = true;
    } else {
        call.project = "";
    }
    const struct sched_op *op = NULL;
    ProtobufCMessage *msg = NULL;
    int r;

    Yun__Request *q = yun__request__unpack(NULL, size, body);
    if (!q) {
        sched_call_error(&call, YUN_E_DECODE, "The request body does not decode.");
        goto reply;
    }
    op = find_op(q->op);
    if (!op) {
        sched_call_error(&call, YUN_E_BADOP, "Unknown operation %d.", (int)q->op);
        goto reply;
    }
    if (!sched_call_allowed(&call, op->priv)) {
        sched_call_error(&call, YUN_E_DENIED, "Peer '%s' may not call '%s'.", peer->key_id,
                         op->name);
        log_req(YUN_LOG_WARN, call.req, YUN_E_DENIED, "operation denied op=%s peer=%s",
                op->name, peer->key_id);
        goto reply;
    }
    msg = protobuf_c_message_unpack(op->request, NULL, q->payload.len, q->payload.data);
    if (!msg) {
        sched_call_error(&call, YUN_E_DECODE, "The '%s' request does not decode.", op->name);
        goto reply;
    }
    r = op->handler(&call, msg);
    if (r < 0 && call.error == 0)
        sched_call_error(&call, r, "%s", yun_strerror(r));

reply:
    if (op)
        log_req(call.error ? YUN_LOG_NOTICE : op->mutating ? YUN_LOG_INFO : YUN_LOG_DEBUG,
                call.req, call.error, "request op=%s peer=%s result=%s", op->name,
                peer->key_id, call.error ? yun_errname(call.error) : "ok");
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    if (q)
        yun__request__free_unpacked(q, NULL);
    r = pack_reply(&call, ret_reply, ret_size);
    free(call.error_message);
    free(call.payload);
    return r;
}

void
sched_dispatch_reject(int code, const struct yun_envelope_in *in, void *data)
{
    yun_log(YUN_LOG_WARN, in && in->request_id ? in->request_id : NULL, code,
            "message rejected peer=%s sender=%s reason=\"%s\"",
            in && in->key_id && *in->key_id ? in->key_id : "-",
            in && in->sender && *in->sender ? in->sender : "-", yun_strerror(code));
}
