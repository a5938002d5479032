/* SPDX-License-Identifier: Apache-2.0
 * dispatch.c: every request the scheduler serves goes through the one table
 * below: operation -> request message -> handler -> who may call it. The
 * bus has already verified the envelope; here the caller is authenticated
 * (its token), the body decoded, the policy checked and the handler run. A
 * handler cannot be reached without its row, so no operation can skip the
 * check, and a row that names nobody lets nobody in.
 *
 * Policy (docs/identity.md): a token's roles in its project decide;
 * readers list and show, members also create and change what their
 * project owns, admins do everything, everywhere (host, audit and
 * identity operations are theirs alone). Agents need no token: their key
 * speaks for their host, and only the rows that say so accept them. An
 * operator peer without a token may only log in and ping. Whether a
 * resource of another project exists is the handler's business: it is
 * "not found", never "forbidden".
 *
 * Audit: a request that fails authentication or is denied leaves an audit
 * record here; so does a mutating operation whose handler wrote none
 * (handlers that change records write theirs in the same transaction as
 * the change, see audit.c). Deferred calls (sched_call_defer) are audited,
 * logged and answered the same way when their work is done. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "cleanup.h"
#include "compute.h"
#include "dispatch-priv.h"
#include "err.h"
#include "log.h"
#include "network.h"
#include "pool.h"
#include "rpc.h"
#include "scheduler.h"
#include "seal.h"
#include "token.h"
#include "util.h"
#include "host.pb-c.h"
#include "identity.pb-c.h"
#include "compute.pb-c.h"
#include "image.pb-c.h"
#include "yun.pb-c.h"

YUN_LOG_MODULE("sched.dispatch");

static int sched_ping(struct sched_call *call, const ProtobufCMessage *req);

#define IMG_REQ(name) &yun__image_##name##__descriptor
#define ID_REQ(name) &yun__##name##__descriptor
#define CMP_REQ(name) &yun__##name##__descriptor
#define NET_REQ(name) &yun__##name##__descriptor

/* Who: the roles are the minimum, spelled out with what implies them. */
#define READER (SCHED_ALLOW_READER | SCHED_ALLOW_MEMBER | SCHED_ALLOW_ADMIN)
#define MEMBER (SCHED_ALLOW_MEMBER | SCHED_ALLOW_ADMIN)
#define ADMIN SCHED_ALLOW_ADMIN
#define AGENT SCHED_ALLOW_AGENT
#define ANONYMOUS SCHED_ALLOW_ANONYMOUS

const struct sched_op sched_ops[] = {
    /* Liveness, for anyone holding a bus key; a token, if sent, must be valid. */
    { YUN__OP__OP_PING, "ping", &yun__ping_request__descriptor, sched_ping,
      ANONYMOUS | AGENT | READER, false, NULL },

    /* Hosts: agents speak for their own host, admins manage them. */
    { YUN__OP__OP_HOST_REGISTER, "host.register", &yun__host_register_request__descriptor,
      sched_host_register, AGENT, true, "name" },
    { YUN__OP__OP_HOST_HEARTBEAT, "host.heartbeat", &yun__host_heartbeat_request__descriptor,
      sched_host_heartbeat, AGENT, false, NULL },
    { YUN__OP__OP_HOST_LIST, "host.list", &yun__host_list_request__descriptor, sched_host_list,
      ADMIN, false, NULL },
    { YUN__OP__OP_HOST_SHOW, "host.show", &yun__host_show_request__descriptor, sched_host_show,
      ADMIN, false, NULL },
    { YUN__OP__OP_HOST_SET_ENABLED, "host.set_enabled",
      &yun__host_set_enabled_request__descriptor, sched_host_set_enabled, ADMIN, true,
      "host" },

    /* Images: the handlers apply Glance's visibility and ownership rules. */
    { YUN__OP__OP_IMAGE_CREATE, "image.create", IMG_REQ(create_request), sched_image_create,
      MEMBER, true, "name" },
    /* Not 'mutating': one request per chunk would log at info and audit
     * every MiB. The handler logs and audits the start and the end of an
     * upload, and every failed chunk. */
    { YUN__OP__OP_IMAGE_UPLOAD, "image.upload", IMG_REQ(upload_request), sched_image_upload,
      MEMBER, false, "image" },
    { YUN__OP__OP_IMAGE_DOWNLOAD, "image.download", IMG_REQ(download_request),
      sched_image_download, AGENT | READER, false, "image" },
    { YUN__OP__OP_IMAGE_LIST, "image.list", IMG_REQ(list_request), sched_image_list, READER,
      false, NULL },
    { YUN__OP__OP_IMAGE_SHOW, "image.show", IMG_REQ(ref), sched_image_show, AGENT | READER,
      false, "image" },
    { YUN__OP__OP_IMAGE_UPDATE, "image.update", IMG_REQ(update_request), sched_image_update,
      MEMBER, true, "image" },
    { YUN__OP__OP_IMAGE_DELETE, "image.delete", IMG_REQ(ref), sched_image_delete, MEMBER,
      true, "image" },
    { YUN__OP__OP_IMAGE_DEACTIVATE, "image.deactivate", IMG_REQ(ref), sched_image_deactivate,
      MEMBER, true, "image" },
    { YUN__OP__OP_IMAGE_REACTIVATE, "image.reactivate", IMG_REQ(ref), sched_image_reactivate,
      MEMBER, true, "image" },
    { YUN__OP__OP_IMAGE_MEMBER_ADD, "image.member_add", IMG_REQ(member_request),
      sched_image_member_add, MEMBER, true, "image" },
    { YUN__OP__OP_IMAGE_MEMBER_REMOVE, "image.member_remove", IMG_REQ(member_request),
      sched_image_member_remove, MEMBER, true, "image" },
    { YUN__OP__OP_IMAGE_MEMBER_LIST, "image.member_list", IMG_REQ(ref),
      sched_image_member_list, READER, false, "image" },
    { YUN__OP__OP_IMAGE_MEMBER_SET_STATUS, "image.member_set_status", IMG_REQ(member_request),
      sched_image_member_set_status, MEMBER, true, "image" },

    /* Compute (compute.h): flavors are admins' to make and everyone's to
     * use; servers and groups belong to projects (the handlers hide other
     * projects'); agents report their own host's instances. */
    { YUN__OP__OP_FLAVOR_CREATE, "flavor.create", CMP_REQ(flavor_create_request),
      sched_flavor_create, ADMIN, true, "name" },
    { YUN__OP__OP_FLAVOR_LIST, "flavor.list", CMP_REQ(flavor_list_request), sched_flavor_list,
      READER, false, NULL },
    { YUN__OP__OP_FLAVOR_SHOW, "flavor.show", CMP_REQ(flavor_ref), sched_flavor_show, READER,
      false, "flavor" },
    { YUN__OP__OP_FLAVOR_DELETE, "flavor.delete", CMP_REQ(flavor_ref), sched_flavor_delete,
      ADMIN, true, "flavor" },
    { YUN__OP__OP_SERVER_CREATE, "server.create", CMP_REQ(server_create_request),
      sched_server_create, MEMBER, true, "name" },
    { YUN__OP__OP_SERVER_LIST, "server.list", CMP_REQ(server_list_request), sched_server_list,
      READER, false, NULL },
    { YUN__OP__OP_SERVER_SHOW, "server.show", CMP_REQ(server_ref), sched_server_show, READER,
      false, "server" },
    { YUN__OP__OP_SERVER_DELETE, "server.delete", CMP_REQ(server_ref), sched_server_delete,
      MEMBER, true, "server" },
    { YUN__OP__OP_SERVER_ACTION, "server.action", CMP_REQ(server_action_request),
      sched_server_action, MEMBER, true, "server" },
    { YUN__OP__OP_SERVER_CONSOLE, "server.console", CMP_REQ(server_console_request),
      sched_server_console, READER, false, "server" },
    { YUN__OP__OP_SERVER_METADATA, "server.metadata", CMP_REQ(server_metadata_request),
      sched_server_metadata, MEMBER, true, "server" },
    { YUN__OP__OP_SERVER_GROUP_CREATE, "server_group.create",
      CMP_REQ(server_group_create_request), sched_server_group_create, MEMBER, true, "name" },
    { YUN__OP__OP_SERVER_GROUP_LIST, "server_group.list", CMP_REQ(server_group_list_request),
      sched_server_group_list, READER, false, NULL },
    { YUN__OP__OP_SERVER_GROUP_SHOW, "server_group.show", CMP_REQ(server_group_ref),
      sched_server_group_show, READER, false, "group" },
    { YUN__OP__OP_SERVER_GROUP_DELETE, "server_group.delete", CMP_REQ(server_group_ref),
      sched_server_group_delete, MEMBER, true, "group" },
    { YUN__OP__OP_SERVER_SNAPSHOT, "server.snapshot", CMP_REQ(server_snapshot_request),
      sched_server_snapshot, MEMBER, true, "server" },
    /* Not 'mutating': the handlers audit what changes state (errors,
     * deletions, syncs), not every power event. */
    { YUN__OP__OP_INSTANCE_EVENT, "instance.event", CMP_REQ(instance_event),
      sched_instance_event, AGENT, false, "instance_id" },
    { YUN__OP__OP_INSTANCE_SYNC, "instance.sync", CMP_REQ(instance_sync_request),
      sched_instance_sync, AGENT, false, "host_id" },
    /* Audited by image.c (the upload's start and end) and on failure. */
    { YUN__OP__OP_SNAPSHOT_UPLOAD, "snapshot.upload", CMP_REQ(snapshot_upload_request),
      sched_snapshot_upload, AGENT, false, "image_id" },

    { YUN__OP__OP_AUDIT_LIST, "audit.list", &yun__audit_list_request__descriptor,
      sched_audit_list, ADMIN, false, NULL },

    /* Identity: logging in needs no token (it makes one); logging out
     * revokes the caller's own. */
    { YUN__OP__OP_LOGIN, "login", ID_REQ(login_request), sched_login, ANONYMOUS, true,
      "user" },
    { YUN__OP__OP_LOGOUT, "logout", ID_REQ(logout_request), sched_logout, READER, true,
      NULL },
    { YUN__OP__OP_PROJECT_CREATE, "project.create", ID_REQ(project_create_request),
      sched_project_create, ADMIN, true, "name" },
    { YUN__OP__OP_PROJECT_LIST, "project.list", ID_REQ(project_list_request),
      sched_project_list, ADMIN, false, NULL },
    { YUN__OP__OP_PROJECT_SHOW, "project.show", ID_REQ(project_ref), sched_project_show,
      ADMIN, false, "project" },
    { YUN__OP__OP_PROJECT_SET, "project.set", ID_REQ(project_set_request), sched_project_set,
      ADMIN, true, "project" },
    { YUN__OP__OP_PROJECT_DELETE, "project.delete", ID_REQ(project_ref), sched_project_delete,
      ADMIN, true, "project" },
    { YUN__OP__OP_USER_CREATE, "user.create", ID_REQ(user_create_request), sched_user_create,
      ADMIN, true, "name" },
    { YUN__OP__OP_USER_LIST, "user.list", ID_REQ(user_list_request), sched_user_list, ADMIN,
      false, NULL },
    { YUN__OP__OP_USER_SHOW, "user.show", ID_REQ(user_ref), sched_user_show, ADMIN, false,
      "user" },
    { YUN__OP__OP_USER_SET, "user.set", ID_REQ(user_set_request), sched_user_set, ADMIN, true,
      "user" },
    { YUN__OP__OP_USER_DELETE, "user.delete", ID_REQ(user_ref), sched_user_delete, ADMIN,
      true, "user" },
    { YUN__OP__OP_ROLE_ADD, "role.add", ID_REQ(role_assignment_request), sched_role_add, ADMIN,
      true, "user" },
    { YUN__OP__OP_ROLE_REMOVE, "role.remove", ID_REQ(role_assignment_request),
      sched_role_remove, ADMIN, true, "user" },
    { YUN__OP__OP_ROLE_ASSIGNMENT_LIST, "role.assignment_list",
      ID_REQ(role_assignment_list_request), sched_role_assignment_list, ADMIN, false, NULL },

    /* Keypairs belong to users: their own (admins: anyone's). */
    { YUN__OP__OP_KEYPAIR_CREATE, "keypair.create", ID_REQ(keypair_create_request),
      sched_keypair_create, MEMBER, true, "name" },
    { YUN__OP__OP_KEYPAIR_IMPORT, "keypair.import", ID_REQ(keypair_import_request),
      sched_keypair_import, MEMBER, true, "name" },
    { YUN__OP__OP_KEYPAIR_LIST, "keypair.list", ID_REQ(keypair_list_request),
      sched_keypair_list, READER, false, NULL },
    { YUN__OP__OP_KEYPAIR_SHOW, "keypair.show", ID_REQ(keypair_ref), sched_keypair_show,
      READER, false, "name" },
    { YUN__OP__OP_KEYPAIR_DELETE, "keypair.delete", ID_REQ(keypair_ref), sched_keypair_delete,
      MEMBER, true, "name" },

    /* Networks (network.h): readers list and show what their project
     * sees (its own objects and shared networks), members change their
     * project's; the handlers keep admin-only fields (shared, segment
     * ids, bindings) to admins. */
    { YUN__OP__OP_NETWORK_CREATE, "network.create", NET_REQ(network_create_request),
      sched_network_create, MEMBER, true, "name" },
    { YUN__OP__OP_NETWORK_LIST, "network.list", NET_REQ(network_list_request),
      sched_network_list, READER, false, NULL },
    { YUN__OP__OP_NETWORK_SHOW, "network.show", NET_REQ(network_ref),
      sched_network_show, READER, false, "network" },
    { YUN__OP__OP_NETWORK_UPDATE, "network.update", NET_REQ(network_update_request),
      sched_network_update, MEMBER, true, "network" },
    { YUN__OP__OP_NETWORK_DELETE, "network.delete", NET_REQ(network_ref),
      sched_network_delete, MEMBER, true, "network" },
    { YUN__OP__OP_SUBNET_CREATE, "subnet.create", NET_REQ(subnet_create_request),
      sched_subnet_create, MEMBER, true, "network" },
    { YUN__OP__OP_SUBNET_LIST, "subnet.list", NET_REQ(subnet_list_request),
      sched_subnet_list, READER, false, NULL },
    { YUN__OP__OP_SUBNET_SHOW, "subnet.show", NET_REQ(subnet_ref),
      sched_subnet_show, READER, false, "subnet" },
    { YUN__OP__OP_SUBNET_UPDATE, "subnet.update", NET_REQ(subnet_update_request),
      sched_subnet_update, MEMBER, true, "subnet" },
    { YUN__OP__OP_SUBNET_DELETE, "subnet.delete", NET_REQ(subnet_ref),
      sched_subnet_delete, MEMBER, true, "subnet" },
    { YUN__OP__OP_PORT_CREATE, "port.create", NET_REQ(port_create_request),
      sched_port_create, MEMBER, true, "network" },
    { YUN__OP__OP_PORT_LIST, "port.list", NET_REQ(port_list_request),
      sched_port_list, READER, false, NULL },
    { YUN__OP__OP_PORT_SHOW, "port.show", NET_REQ(port_ref),
      sched_port_show, READER, false, "port" },
    { YUN__OP__OP_PORT_UPDATE, "port.update", NET_REQ(port_update_request),
      sched_port_update, MEMBER, true, "port" },
    { YUN__OP__OP_PORT_DELETE, "port.delete", NET_REQ(port_ref),
      sched_port_delete, MEMBER, true, "port" },
    { YUN__OP__OP_SECURITY_GROUP_CREATE, "security_group.create", NET_REQ(security_group_create_request),
      sched_security_group_create, MEMBER, true, "name" },
    { YUN__OP__OP_SECURITY_GROUP_LIST, "security_group.list", NET_REQ(security_group_list_request),
      sched_security_group_list, READER, false, NULL },
    { YUN__OP__OP_SECURITY_GROUP_SHOW, "security_group.show", NET_REQ(security_group_ref),
      sched_security_group_show, READER, false, "security_group" },
    { YUN__OP__OP_SECURITY_GROUP_UPDATE, "security_group.update", NET_REQ(security_group_update_request),
      sched_security_group_update, MEMBER, true, "security_group" },
    { YUN__OP__OP_SECURITY_GROUP_DELETE, "security_group.delete", NET_REQ(security_group_ref),
      sched_security_group_delete, MEMBER, true, "security_group" },
    { YUN__OP__OP_SECURITY_GROUP_RULE_CREATE, "security_group_rule.create", NET_REQ(security_group_rule_create_request),
      sched_security_group_rule_create, MEMBER, true, "security_group" },
    { YUN__OP__OP_SECURITY_GROUP_RULE_DELETE, "security_group_rule.delete", NET_REQ(security_group_rule_ref),
      sched_security_group_rule_delete, MEMBER, true, "rule" },
    { YUN__OP__OP_SECURITY_GROUP_RULE_LIST, "security_group_rule.list", NET_REQ(security_group_rule_list_request),
      sched_security_group_rule_list, READER, false, NULL },
};
const size_t sched_ops_count = ELEMENTSOF(sched_ops);

/* Ops of the protocol this table does not serve, on purpose. The policy
 * matrix test fails for any other op without a row: a new op gets a row
 * (and so a policy) or a line here saying why not. */
const Yun__Op sched_ops_unused[] = {
    YUN__OP__OP_UNSPECIFIED,
    /* Served by the agents' command sockets, not here. */
    YUN__OP__OP_AGENT_SPAWN,
    YUN__OP__OP_AGENT_DESTROY,
    YUN__OP__OP_AGENT_ACTION,
    YUN__OP__OP_AGENT_CONSOLE,
    YUN__OP__OP_AGENT_LIST,
    YUN__OP__OP_AGENT_SNAPSHOT,
    YUN__OP__OP_AGENT_NETWORK_STATE,
};
const size_t sched_ops_unused_count = ELEMENTSOF(sched_ops_unused);

static const struct {
    unsigned bit;
    const char *name;
} sched_roles[] = {
    { SCHED_ROLE_READER, "reader" },
    { SCHED_ROLE_MEMBER, "member" },
    { SCHED_ROLE_ADMIN, "admin" },
};

unsigned
sched_role_from_string(const char *s)
{
    for (size_t i = 0; i < ELEMENTSOF(sched_roles); i++)
        if (strcmp(s, sched_roles[i].name) == 0)
            return sched_roles[i].bit;
    return 0;
}

const char *
sched_role_to_string(unsigned role)
{
    for (size_t i = 0; i < ELEMENTSOF(sched_roles); i++)
        if (role == sched_roles[i].bit)
            return sched_roles[i].name;
    return NULL;
}

static const struct sched_op *
find_op(int op)
{
    for (size_t i = 0; i < ELEMENTSOF(sched_ops); i++)
        if ((int)sched_ops[i].op == op)
            return &sched_ops[i];
    return NULL;
}

_Static_assert((int)SCHED_ALLOW_READER == (int)SCHED_ROLE_READER &&
                   (int)SCHED_ALLOW_MEMBER == (int)SCHED_ROLE_MEMBER &&
                   (int)SCHED_ALLOW_ADMIN == (int)SCHED_ROLE_ADMIN,
               "a token's role bits are the table's allow bits");

bool
sched_op_allows(const struct sched_op *op, int peer_kind, bool authenticated, unsigned roles)
{
    if (peer_kind == YUN__PEER_RECORD__KIND__KIND_AGENT)
        return op->allow & SCHED_ALLOW_AGENT;
    if (peer_kind != YUN__PEER_RECORD__KIND__KIND_OPERATOR)
        return false;
    if (!authenticated)
        return op->allow & SCHED_ALLOW_ANONYMOUS;
    return (op->allow & SCHED_ALLOW_ANONYMOUS) ||
           (op->allow & roles & (SCHED_ALLOW_READER | SCHED_ALLOW_MEMBER | SCHED_ALLOW_ADMIN));
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
    call->payload_offset = 0;
    call->payload_size = size;
    return 0;
}

void
sched_call_reply_take(struct sched_call *call, uint8_t *payload, size_t size)
{
    sched_call_reply_take_at(call, payload, 0, size);
}

/* The Reply's field 3 (payload) tag and length: what a successful reply
 * holds besides its payload (error 0 and an empty message are absent in
 * proto3). */
size_t
sched_call_reply_headroom(size_t size)
{
    size_t n = 2;
    while (size >= 0x80) {
        size >>= 7;
        n++;
    }
    return n;
}

void
sched_call_reply_take_at(struct sched_call *call, uint8_t *buf, size_t offset, size_t size)
{
    free(call->payload);
    call->payload = buf;
    call->payload_offset = offset;
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
pack_reply(struct sched_call *call, uint8_t **ret, size_t *ret_size)
{
    size_t head = call->payload_offset;
    if (call->error == 0 && (!call->error_message || !*call->error_message) && call->payload &&
        call->payload_size && !call->wipe_payload &&
        head == sched_call_reply_headroom(call->payload_size)) {
        /* Framed in place: Reply{payload} is field 3's tag and length
         * right before the payload. */
        uint8_t *p = call->payload;
        size_t v = call->payload_size;
        *p++ = (3 << 3) | 2;
        while (v >= 0x80) {
            *p++ = (uint8_t)(v | 0x80);
            v >>= 7;
        }
        *p = (uint8_t)v;
        *ret = TAKE_PTR(call->payload);
        *ret_size = head + call->payload_size;
        return 0;
    }
    Yun__Reply y = YUN__REPLY__INIT;
    y.error = call->error;
    y.error_message = call->error_message ? call->error_message : (char *)"";
    if (call->error == 0 || call->reply_on_error) {
        y.payload.data = call->payload ? call->payload + head : NULL;
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

static const char *
peer_name(const struct sched_call *call)
{
    return call->peer && call->peer->key_id ? call->peer->key_id : "-";
}

/* What every call ends with, now or after its deferred work: the fallback
 * audit record of a mutating operation, the log line and the reply. Frees
 * the call's error message and payload. */
static int
finish_call(struct sched_call *call, const struct sched_op *op, const char *target,
            uint8_t **ret, size_t *ret_size)
{
    if (op && op->mutating && !call->audited)
        sched_audit(call, op->name, target, call->error,
                    call->error ? call->error_message : NULL);
    if (op)
        log_req(call->error ? YUN_LOG_NOTICE : op->mutating ? YUN_LOG_INFO : YUN_LOG_DEBUG,
                call->req, call->error, "request op=%s peer=%s user=%s result=%s", op->name,
                peer_name(call), call->user && *call->user ? call->user : "-",
                call->error ? yun_errname(call->error) : "ok");
    int r = pack_reply(call, ret, ret_size);
    if (call->wipe_payload && call->payload)
        yun_wipe(call->payload, call->payload_size);
    free(call->error_message);
    free(call->payload);
    call->error_message = NULL;
    call->payload = NULL;
    return r;
}

/* --- deferred calls ------------------------------------------------------ */

/* A call whose work runs on the pool: a copy of who called and what. */
struct sched_deferred {
    struct sched *s;
    uint64_t handle;
    const struct sched_op *op;
    int peer_kind;
    bool is_admin;
    unsigned roles;
    bool has_token;
    struct yun_token token;
    char *sender, *key_id, *req, *user, *project, *target;
    int (*work)(void *data);
    sched_resume_fn resume;
    void *data;
    void (*free_data)(void *data);
};

static void
deferred_free(struct sched_deferred *d)
{
    if (!d)
        return;
    if (d->free_data)
        d->free_data(d->data);
    free(d->sender);
    free(d->key_id);
    free(d->req);
    free(d->user);
    free(d->project);
    free(d->target);
    yun_wipe(&d->token, sizeof d->token);
    free(d);
}

static int
deferred_work(void *data)
{
    struct sched_deferred *d = data;
    return d->work(d->data);
}

static void
deferred_send(struct sched *s, uint64_t handle, const uint8_t *reply, size_t size)
{
    if (s->bus) {
        int r = yun_bus_server_reply(s->bus, handle, reply, size);
        if (r < 0 && r != -ENOENT)
            log_warn_errno(r, "cannot send a deferred reply");
    } else if (s->deferred_reply) {
        s->deferred_reply(s, handle, reply, size, s->deferred_reply_data);
    }
}

static void
deferred_done(int result, void *data)
{
    struct sched_deferred *d = data;
    struct yun_bus_peer peer = {
        .sender = d->sender, .key_id = d->key_id, .request_id = d->req, .role = d->peer_kind,
    };
    struct sched_call call = {
        .s = d->s, .peer = &peer, .peer_kind = d->peer_kind, .req = d->req, .op = d->op,
        .target = d->target, .user = d->user, .project = d->project, .is_admin = d->is_admin,
        .roles = d->roles,
        .token = d->has_token ? &d->token : NULL,
    };
    if (result == -ECANCELED) {
        sched_call_error(&call, -ECANCELED, "The scheduler is shutting down; try again.");
    } else {
        int r = d->resume(&call, result, d->data);
        if (r < 0 && call.error == 0)
            sched_call_error(&call, r, "%s", yun_strerror(r));
    }
    _cleanup_free_ uint8_t *reply = NULL;
    size_t size = 0;
    if (finish_call(&call, d->op, d->target, &reply, &size) == 0)
        deferred_send(d->s, d->handle, reply, size);
    deferred_free(d);
}

static char *
strdup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

int
sched_call_defer(struct sched_call *call, int (*work)(void *data), sched_resume_fn resume,
                 void *data, void (*free_data)(void *data))
{
    struct sched *s = call->s;
    if (!s->pool || !call->op)
        return -EOPNOTSUPP;
    uint64_t handle = 0;
    int r = 0;
    if (s->bus)
        r = yun_bus_server_defer(s->bus, &handle);
    else if (s->deferred_reply)
        handle = ++s->next_deferred;
    else
        r = -EOPNOTSUPP;
    if (r < 0)
        return r;
    struct sched_deferred *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    *d = (struct sched_deferred){
        .s = s, .handle = handle, .op = call->op, .peer_kind = call->peer_kind,
        .is_admin = call->is_admin, .roles = call->roles, .work = work, .resume = resume,
    };
    if (call->token) {
        d->has_token = true;
        d->token = *call->token;
    }
    d->sender = strdup_or_empty(call->peer ? call->peer->sender : NULL);
    d->key_id = strdup_or_empty(call->peer ? call->peer->key_id : NULL);
    d->req = strdup_or_empty(call->req);
    d->user = strdup_or_empty(call->user);
    d->project = strdup_or_empty(call->project);
    d->target = strdup_or_empty(call->target);
    if (!d->sender || !d->key_id || !d->req || !d->user || !d->project || !d->target) {
        deferred_free(d);
        return -ENOMEM;
    }
    d->data = data;
    d->free_data = free_data;
    r = yun_pool_submit(s->pool, deferred_work, deferred_done, d);
    if (r < 0) {
        /* 'data' stays the caller's. */
        d->free_data = NULL;
        deferred_free(d);
        return r;
    }
    /* From here 'done' runs exactly once and frees 'data'. */
    call->deferred = true;
    return 0;
}

/* --- the dispatcher -------------------------------------------------------- */

/* Authenticates the token of an operator's request into 'call'. */
static int
authenticate(struct sched_call *call, const struct sched_op *op, struct yun_token *token)
{
    unsigned roles = 0;
    int r = sched_identity_authenticate(call->s, call->peer->token, call->peer->token_size,
                                        yun_wall_us(), token, &roles);
    if (r < 0) {
        const char *why = r == YUN_E_TOKEN_EXPIRED ? "has expired"
                          : r == YUN_E_TOKEN_REVOKED ? "has been revoked"
                          : r == YUN_E_TOKEN_KEY ? "was sealed with a key this cloud no longer holds"
                                                 : "is not valid";
        sched_call_error(call, r, "Authentication failed: the token %s; log in again.", why);
        log_req(YUN_LOG_NOTICE, call->req, r, "authentication failed op=%s peer=%s", op->name,
                peer_name(call));
        sched_audit(call, op->name, "", r, call->error_message);
        return r;
    }
    call->token = token;
    call->user = token->user_id;
    call->project = token->project_id;
    call->roles = roles;
    call->is_admin = roles & SCHED_ROLE_ADMIN;
    return 0;
}

static void
deny(struct sched_call *call, const struct sched_op *op, const char *target)
{
    if (call->peer_kind == YUN__PEER_RECORD__KIND__KIND_OPERATOR && !call->token)
        sched_call_error(call, YUN_E_DENIED,
                         "Authentication required: log in first to call '%s'.", op->name);
    else if (call->peer_kind == YUN__PEER_RECORD__KIND__KIND_AGENT)
        sched_call_error(call, YUN_E_DENIED, "Agent '%s' may not call '%s'.", peer_name(call),
                         op->name);
    else
        sched_call_error(call, YUN_E_DENIED, "Policy does not allow '%s' for your roles.",
                         op->name);
    log_req(YUN_LOG_WARN, call->req, YUN_E_DENIED, "operation denied op=%s peer=%s user=%s",
            op->name, peer_name(call), call->user && *call->user ? call->user : "-");
    sched_audit(call, op->name, target, YUN_E_DENIED, call->error_message);
}

int
sched_dispatch(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
               uint8_t **ret_reply, size_t *ret_size, void *data)
{
    struct sched *s = data;
    /* The bus's key look-up gave the peer's kind with its key; the token,
     * if any, says who acts through it. */
    struct sched_call call = {
        .s = s, .peer = peer, .peer_kind = peer->role, .req = peer->request_id,
        .user = peer->key_id, .project = "",
    };
    struct yun_token token;
    const struct sched_op *op = NULL;
    ProtobufCMessage *msg = NULL;
    const char *target = "";
    int r;

    /* Decoded in place: an upload chunk's payload is not copied. */
    Yun__Request req, *q = yun_rpc_scan_request(body, size, &req) == 0 ? &req : NULL;
    if (!q) {
        sched_call_error(&call, YUN_E_DECODE, "The request body does not decode.");
        goto reply;
    }
    op = find_op(q->op);
    if (!op) {
        sched_call_error(&call, YUN_E_BADOP, "Unknown operation %d.", (int)q->op);
        goto reply;
    }
    call.op = op;
    /* Agents act by their key alone. Logging in makes a token, so one
     * sent with it (a stale cached token) is not looked at. */
    if (call.peer_kind == YUN__PEER_RECORD__KIND__KIND_OPERATOR && peer->token_size &&
        op->op != YUN__OP__OP_LOGIN && authenticate(&call, op, &token) < 0)
        goto reply;
    msg = protobuf_c_message_unpack(op->request, NULL, q->payload.len, q->payload.data);
    target = request_target(op, msg);
    call.target = target;
    if (!sched_op_allows(op, call.peer_kind, call.token != NULL, call.roles)) {
        deny(&call, op, target);
        goto reply;
    }
    if (!msg) {
        sched_call_error(&call, YUN_E_DECODE, "The '%s' request does not decode.", op->name);
        goto reply;
    }
    r = op->handler(&call, msg);
    if (call.deferred) {
        /* The work continues on the pool; deferred_done() answers. */
        protobuf_c_message_free_unpacked(msg, NULL);
        free(call.error_message);
        free(call.payload);
        yun_wipe(&token, sizeof token);
        return YUN_BUS_DEFERRED;
    }
    if (r < 0 && call.error == 0)
        sched_call_error(&call, r, "%s", yun_strerror(r));

reply:
    r = finish_call(&call, op, target, ret_reply, ret_size);
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    yun_wipe(&token, sizeof token);
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
