/* SPDX-License-Identifier: Apache-2.0
 * dispatch.c: every request the scheduler serves goes through the one table
 * below: operation -> request message -> handler -> who may call it. The
 * bus has already verified the envelope; here the body is decoded, the
 * caller's privilege checked, and the handler run. A handler cannot be
 * reached without its row, so no operation can skip the check. Identity
 * and roles (users, projects) plug into sched_call_allowed() later.
 *
 * Audit: a denied request leaves an audit record here; so does a mutating
 * operation whose handler wrote none (handlers that change records write
 * theirs in the same transaction as the change, see audit.c). */
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
#include "image.pb-c.h"
#include "yun.pb-c.h"

YUN_LOG_MODULE("sched.dispatch");

enum sched_priv {
    PRIV_ANY_PEER, /* any authenticated peer */
    PRIV_AGENT,    /* compute agents only: they speak for their own host */
    PRIV_ADMIN,    /* admins (every operator client is admin until identity lands) */
    PRIV_USER,     /* anyone acting for a project; the handler checks ownership */
    PRIV_AGENT_OR_USER, /* both: agents read images to boot instances */
};

typedef int (*sched_handler_fn)(struct sched_call *call, const ProtobufCMessage *req);

struct sched_op {
    Yun__Op op;
    const char *name;
    const ProtobufCMessageDescriptor *request;
    sched_handler_fn handler;
    enum sched_priv priv;
    bool mutating; /* logged at info (reads at debug) and audited */
    const char *target_field; /* string field of the request naming the object, for audit */
};

static int sched_ping(struct sched_call *call, const ProtobufCMessage *req);

#define IMG_REQ(name) &yun__image_##name##__descriptor

static const struct sched_op sched_ops[] = {
    { YUN__OP__OP_PING, "ping", &yun__ping_request__descriptor, sched_ping, PRIV_ANY_PEER,
      false, NULL },
    { YUN__OP__OP_HOST_REGISTER, "host.register", &yun__host_register_request__descriptor,
      sched_host_register, PRIV_AGENT, true, "name" },
    { YUN__OP__OP_HOST_HEARTBEAT, "host.heartbeat", &yun__host_heartbeat_request__descriptor,
      sched_host_heartbeat, PRIV_AGENT, false, NULL },
    { YUN__OP__OP_HOST_LIST, "host.list", &yun__host_list_request__descriptor, sched_host_list,
      PRIV_ADMIN, false, NULL },
    { YUN__OP__OP_HOST_SHOW, "host.show", &yun__host_show_request__descriptor, sched_host_show,
      PRIV_ADMIN, false, NULL },
    { YUN__OP__OP_HOST_SET_ENABLED, "host.set_enabled",
      &yun__host_set_enabled_request__descriptor, sched_host_set_enabled, PRIV_ADMIN, true,
      "host" },
    { YUN__OP__OP_IMAGE_CREATE, "image.create", IMG_REQ(create_request), sched_image_create,
      PRIV_USER, true, "name" },
    /* Not 'mutating': one request per chunk would log at info and audit
     * every MiB. The handler logs and audits the start and the end of an
     * upload, and every failed chunk. */
    { YUN__OP__OP_IMAGE_UPLOAD, "image.upload", IMG_REQ(upload_request), sched_image_upload,
      PRIV_USER, false, "image" },
    { YUN__OP__OP_IMAGE_DOWNLOAD, "image.download", IMG_REQ(download_request),
      sched_image_download, PRIV_AGENT_OR_USER, false, "image" },
    { YUN__OP__OP_IMAGE_LIST, "image.list", IMG_REQ(list_request), sched_image_list, PRIV_USER,
      false, NULL },
    { YUN__OP__OP_IMAGE_SHOW, "image.show", IMG_REQ(ref), sched_image_show, PRIV_AGENT_OR_USER,
      false, "image" },
    { YUN__OP__OP_IMAGE_UPDATE, "image.update", IMG_REQ(update_request), sched_image_update,
      PRIV_USER, true, "image" },
    { YUN__OP__OP_IMAGE_DELETE, "image.delete", IMG_REQ(ref), sched_image_delete, PRIV_USER,
      true, "image" },
    { YUN__OP__OP_IMAGE_DEACTIVATE, "image.deactivate", IMG_REQ(ref), sched_image_deactivate,
      PRIV_USER, true, "image" },
    { YUN__OP__OP_IMAGE_REACTIVATE, "image.reactivate", IMG_REQ(ref), sched_image_reactivate,
      PRIV_USER, true, "image" },
    { YUN__OP__OP_IMAGE_MEMBER_ADD, "image.member_add", IMG_REQ(member_request),
      sched_image_member_add, PRIV_USER, true, "image" },
    { YUN__OP__OP_IMAGE_MEMBER_REMOVE, "image.member_remove", IMG_REQ(member_request),
      sched_image_member_remove, PRIV_USER, true, "image" },
    { YUN__OP__OP_IMAGE_MEMBER_LIST, "image.member_list", IMG_REQ(ref),
      sched_image_member_list, PRIV_USER, false, "image" },
    { YUN__OP__OP_IMAGE_MEMBER_SET_STATUS, "image.member_set_status", IMG_REQ(member_request),
      sched_image_member_set_status, PRIV_USER, true, "image" },
    { YUN__OP__OP_AUDIT_LIST, "audit.list", &yun__audit_list_request__descriptor,
      sched_audit_list, PRIV_ADMIN, false, NULL },
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
        return call->is_admin;
    case PRIV_USER:
        return call->project && *call->project;
    case PRIV_AGENT_OR_USER:
        return call->peer_kind == YUN__PEER_RECORD__KIND__KIND_AGENT ||
               (call->project && *call->project);
    }
    return false;
}

/* The value of the row's target field in 'msg', or "". */
static const char *
request_target(const struct sched_op *op, const ProtobufCMessage *msg)
{
    if (!op->target_field || !msg)
        return "";
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(op->request, op->target_field);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return "";
    const char *v = *(char *const *)((const char *)msg + f->offset);
    return v ? v : "";
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

void
sched_call_reply_take(struct sched_call *call, uint8_t *payload, size_t size)
{
    free(call->payload);
    call->payload = payload;
    call->payload_size = size;
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
    if (call->error == 0 || call->reply_on_error) {
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
        sched_audit(&call, op->name, "", YUN_E_DENIED, call.error_message);
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
    if (op->mutating && !call.audited)
        sched_audit(&call, op->name, request_target(op, msg), call.error,
                    call.error ? call.error_message : NULL);

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
