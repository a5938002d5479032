/* SPDX-License-Identifier: Apache-2.0
 * command.c: the agent's compute endpoints on the bus.
 *
 * Commands in. A raw REP bus server (common/bus.h) at agent.listen_url,
 * the address the agent registers with, serves the scheduler's
 * OP_AGENT_SPAWN, DESTROY, ACTION, SNAPSHOT, CONSOLE and LIST through the one table
 * below. The scheduler seals them with this agent's own key (it derives
 * every agent's key from the cluster secret), so the key callback accepts
 * only this agent's id at its current epoch, and each row names who may
 * call it: the sender "scheduler". Spawn, destroy, console and list are
 * answered at once (a spawn's and a destroy's outcome follows as events);
 * an action is answered when libvirt has done it (a deferred reply).
 *
 * Events out. InstanceEvent (OP_INSTANCE_EVENT) and the start-up
 * InstanceSync (OP_INSTANCE_SYNC) go on a REQ socket of their own, not
 * the heartbeat's: a REQ socket carries one request at a time, and events
 * must neither wait behind nor delay heartbeats. They queue in order, one
 * in flight, each with agent.request_timeout_ms; one that gets no answer
 * is sent again (the scheduler applies events idempotently), one the
 * scheduler refuses is dropped with a log line. At most OUT_MAX wait; past
 * that the oldest events go (the next start's sync repairs what they
 * said). Nothing is sent before the agent is registered.
 *
 * The start-up sync. After the first registration, the sync (what the
 * agent holds, with power states, and the "yun-*" domains nobody claims)
 * goes before any event, and the scheduler's answer names the instances
 * to delete. Commands that arrive before that answer are held (deferred)
 * and served after it: the scheduler treats an instance it is building
 * that a sync does not show as a failed spawn, so no spawn may begin
 * before the sync is answered.
 *
 * Neighbours: vm.c does the work; report.c registers (and calls
 * agent_command_registered); common/bus.c, common/rpc.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "agent.h"
#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "host-network.h"
#include "rpc.h"
#include "util.h"
#include "vm.h"
#include "compute.pb-c.h"
#include "yun.pb-c.h"

YUN_LOG_MODULE("agent.command");

#define SCHEDULER "scheduler"
#define HELD_MAX 1024          /* commands held until the sync is answered */
#define OUT_MAX 10000          /* events waiting to be sent */
#define EVENT_ATTEMPTS 10      /* sends of one event that get no answer */
#define RETRY_MS 200           /* pause before sending again */
#define MSG_MAX 1024

struct agent_call {
    struct agent_command *c;
    const char *sender;
    const char *req;           /* request id */
    Yun__Op op;
    bool held;                 /* 'handle' was reserved when it was held */
    bool deferred;             /* the reply comes later, through 'handle' */
    uint64_t handle;
    int error;
    char message[MSG_MAX];
    uint8_t *payload;          /* the reply message, packed */
    size_t payload_size;
};

typedef int (*agent_op_fn)(struct agent_call *call, const ProtobufCMessage *req);

struct agent_op {
    Yun__Op op;
    const char *name;
    const ProtobufCMessageDescriptor *request;
    agent_op_fn handler;
    const char *sender;        /* the only peer that may call it */
};

/* A command that came before the sync was answered. */
struct held {
    struct held *next;
    uint64_t handle;
    char sender[YUN_PEER_ID_MAX + 1];
    char request_id[YUN_REQUEST_ID_MAX + 1];
    uint8_t *body;
    size_t size;
};

struct outgoing {
    struct outgoing *next;
    Yun__Op op;
    Yun__InstanceEvent *ev;    /* an event's copy, packed when sent (with the host id then) */
    uint8_t *body;             /* the packed Request; NULL until sent */
    size_t size;
    char what[96];             /* for the log: "event=spawned vm=..." */
    unsigned attempts;
};

struct agent_command {
    struct agent *a;
    struct yun_bus_server *server;
    bool synced;               /* the start-up sync was answered */
    bool sync_queued;
    struct held *held_head, *held_tail;
    size_t n_held;

    struct yun_bus_client *client;
    int watch;                 /* the client's receive fd; -1 */
    int timer;                 /* deadlines and retries; -1 */
    struct outgoing *head, *tail;
    size_t queued;
    struct outgoing *inflight;
    int64_t deadline_ms;
    uint64_t sent, dropped;
};

/* A deferred reply's way back. */
struct pending_reply {
    struct agent_command *c;
    uint64_t handle;
    Yun__Op op;
    char req[YUN_REQUEST_ID_MAX + 1];
    int64_t started_ms;
};

static void pump(struct agent_command *c);

/* --- replies --------------------------------------------------------------- */

static int
call_reply(struct agent_call *call, const ProtobufCMessage *msg)
{
    size_t size = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    protobuf_c_message_pack(msg, buf);
    free(call->payload);
    call->payload = buf;
    call->payload_size = size;
    return 0;
}

static int __attribute__((format(printf, 3, 4)))
call_error(struct agent_call *call, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->message, sizeof call->message, fmt, ap);
    va_end(ap);
    call->error = r;
    return r;
}

/* The reply comes later: returns the way back (malloc'ed), or NULL with
 * the call's error set. */
static struct pending_reply *
call_defer(struct agent_call *call)
{
    struct pending_reply *p = calloc(1, sizeof *p);
    if (!p) {
        call_error(call, -ENOMEM, "The agent is out of memory.");
        return NULL;
    }
    if (call->held) {
        p->handle = call->handle;
    } else {
        int r = yun_bus_server_defer(call->c->server, &p->handle);
        if (r < 0) {
            free(p);
            call_error(call, r, "The agent has too many requests waiting; try again.");
            return NULL;
        }
    }
    p->c = call->c;
    p->op = call->op;
    p->started_ms = yun_now_ms();
    snprintf(p->req, sizeof p->req, "%s", call->req ? call->req : "");
    call->deferred = true;
    return p;
}

static void
reply_send(struct agent_command *c, uint64_t handle, int error, const char *message,
           const ProtobufCMessage *payload, const char *req)
{
    _cleanup_free_ uint8_t *body = NULL;
    size_t size = 0;
    int r = yun_rpc_pack_reply(error, message, payload, &body, &size);
    if (r >= 0)
        r = yun_bus_server_reply(c->server, handle, body, size);
    if (r < 0)
        log_req(YUN_LOG_WARN, req, r, "cannot send a deferred reply: %s", yun_strerror(r));
}

/* --- handlers ---------------------------------------------------------------- */

static int
ack(struct agent_call *call, const struct agent_vm_state *st)
{
    Yun__AgentInstanceState s;
    agent_vm_state_to_msg(st, &s);
    Yun__AgentAck y = YUN__AGENT_ACK__INIT;
    y.state = &s;
    return call_reply(call, &y.base);
}

static int
op_spawn(struct agent_call *call, const ProtobufCMessage *req)
{
    const Yun__AgentSpawnRequest *q = (const Yun__AgentSpawnRequest *)req;
    struct agent_vm_state st;
    char msg[MSG_MAX] = "";
    if (q->n_ports) {
        /* The taps must be there before the domain that uses them. */
        struct agent *a = call->c->a;
        int r = q->network ? agent_network_apply(a->net, q->network, NULL) : 0;
        if (r < 0 && r != YUN_E_NETWORK)
            return call_error(call, r, "Instance '%s' cannot be wired on host '%s': %s.",
                              q->instance->id, a->key.id, yun_strerror(r));
        r = agent_network_ports_ready(a->net, q->ports, q->n_ports, msg, sizeof msg);
        if (r < 0)
            return call_error(call, r, "%s", msg);
    }
    int r = agent_vm_spawn(call->c->a->vms, q, call->req, &st, msg, sizeof msg);
    if (r < 0)
        return call_error(call, r, "%s", *msg ? msg : yun_strerror(r));
    return ack(call, &st);
}

static int
op_destroy(struct agent_call *call, const ProtobufCMessage *req)
{
    const Yun__AgentInstanceRef *q = (const Yun__AgentInstanceRef *)req;
    struct agent_vm_state st;
    char msg[MSG_MAX] = "";
    int r = agent_vm_destroy(call->c->a->vms, q->instance_id, call->req, &st, msg, sizeof msg);
    if (r < 0)
        return call_error(call, r, "%s", *msg ? msg : yun_strerror(r));
    return ack(call, &st);
}

/* OP_AGENT_NETWORK_STATE: the host's whole network state. What failed is
 * listed in the reply, which is an error only when nothing could be done. */
static int
op_network_state(struct agent_call *call, const ProtobufCMessage *req)
{
    const Yun__HostNetworkState *q = (const Yun__HostNetworkState *)req;
    struct agent *a = call->c->a;
    Yun__AgentNetworkStateReply y = YUN__AGENT_NETWORK_STATE_REPLY__INIT;
    int r = agent_network_apply(a->net, q, &y);
    if (r == -EOPNOTSUPP)
        return call_error(call, r, "Host '%s' does not wire networks (network.enabled is "
                          "false).", a->key.id);
    if (r == -EINVAL)
        return call_error(call, YUN_E_INVALID, "The network state is for host '%s', not for "
                          "'%s'.", q->host_id, a->host_id);
    if (r < 0 && r != YUN_E_NETWORK)
        return call_error(call, r, "Host '%s' cannot apply its network state: %s.", a->key.id,
                          yun_strerror(r));
    r = call_reply(call, &y.base);
    agent_network_reply_done(&y);
    return r;
}

static void
action_done(int r, const char *message, const struct agent_vm_state *state, void *data)
{
    struct pending_reply *p = data;
    Yun__AgentInstanceState s;
    Yun__AgentAck y = YUN__AGENT_ACK__INIT;
    if (state) {
        agent_vm_state_to_msg(state, &s);
        y.state = &s;
    }
    log_req(r < 0 ? YUN_LOG_WARN : YUN_LOG_INFO, p->req, r,
            "request served op=agent.action ms=%" PRId64 "%s%s", yun_now_ms() - p->started_ms,
            r < 0 ? " error=" : "", r < 0 ? message : "");
    reply_send(p->c, p->handle, r, r < 0 ? message : "", &y.base, p->req);
    free(p);
}

static int
op_action(struct agent_call *call, const ProtobufCMessage *req)
{
    const Yun__AgentActionRequest *q = (const Yun__AgentActionRequest *)req;
    struct pending_reply *p = call_defer(call);
    if (!p)
        return call->error;
    char msg[MSG_MAX] = "";
    int r = agent_vm_action(call->c->a->vms, q->instance_id, q->action, q->hard, call->req,
                            action_done, p, msg, sizeof msg);
    if (r < 0) {
        /* Answered now after all: the handle just taken is dropped (a held
         * call's is answered by release_held). */
        free(p);
        call->deferred = false;
        return call_error(call, r, "%s", *msg ? msg : yun_strerror(r));
    }
    return 0;
}

/* OP_AGENT_SNAPSHOT: answered once the copy is started; the outcome
 * follows as snapshot_done or snapshot_failed. */
static int
op_snapshot(struct agent_call *call, const ProtobufCMessage *req)
{
    const Yun__AgentSnapshotRequest *q = (const Yun__AgentSnapshotRequest *)req;
    struct agent_vm_state st;
    char msg[MSG_MAX] = "";
    int r = agent_vm_snapshot(call->c->a->vms, q->instance_id, q->image_id, call->req, &st,
                              msg, sizeof msg);
    if (r < 0)
        return call_error(call, r, "%s", *msg ? msg : yun_strerror(r));
    return ack(call, &st);
}

static int
op_console(struct agent_call *call, const ProtobufCMessage *req)
{
    const Yun__AgentConsoleRequest *q = (const Yun__AgentConsoleRequest *)req;
    struct agent *a = call->c->a;
    /* The reply and its envelope must fit one message. */
    size_t room = a->cfg.max_message_size > 8192 ? a->cfg.max_message_size - 8192 : 0;
    _cleanup_free_ char *out = NULL;
    char msg[MSG_MAX] = "";
    int r = agent_vm_console(a->vms, q->instance_id, q->lines, room, &out, msg, sizeof msg);
    if (r < 0)
        return call_error(call, r, "%s", *msg ? msg : yun_strerror(r));
    Yun__ServerConsoleReply y = YUN__SERVER_CONSOLE_REPLY__INIT;
    y.output = out;
    return call_reply(call, &y.base);
}

/* The report as AgentListReply / InstanceSyncRequest arrays (borrowed). */
struct report_msgs {
    Yun__AgentInstanceState *states;
    Yun__AgentInstanceState **ptrs;
};

static int
report_msgs(const struct agent_vm_report *rep, struct report_msgs *ret)
{
    ret->states = calloc(rep->n_states + 1, sizeof *ret->states);
    ret->ptrs = calloc(rep->n_states + 1, sizeof *ret->ptrs);
    if (!ret->states || !ret->ptrs) {
        free(ret->states);
        free(ret->ptrs);
        return -ENOMEM;
    }
    for (size_t i = 0; i < rep->n_states; i++) {
        agent_vm_state_to_msg(&rep->states[i], &ret->states[i]);
        ret->ptrs[i] = &ret->states[i];
    }
    return 0;
}

static void
report_msgs_done(struct report_msgs *m)
{
    free(m->states);
    free(m->ptrs);
}

static int
op_list(struct agent_call *call, const ProtobufCMessage *req)
{
    _cleanup_(agent_vm_report_done) struct agent_vm_report rep = { 0 };
    int r = agent_vm_list(call->c->a->vms, &rep);
    if (r < 0)
        return call_error(call, r, "The agent cannot list libvirt's domains.");
    _cleanup_(report_msgs_done) struct report_msgs m = { 0 };
    r = report_msgs(&rep, &m);
    if (r < 0)
        return r;
    Yun__AgentListReply y = YUN__AGENT_LIST_REPLY__INIT;
    y.instances = m.ptrs;
    y.n_instances = rep.n_states;
    y.unknown_domains = rep.unknown_domains;
    y.n_unknown_domains = rep.n_unknown_domains;
    return call_reply(call, &y.base);
}

/* The one table: every command the agent serves, its request message,
 * its handler and who may send it. */
static const struct agent_op agent_ops[] = {
    { YUN__OP__OP_AGENT_SPAWN, "agent.spawn", &yun__agent_spawn_request__descriptor, op_spawn,
      SCHEDULER },
    { YUN__OP__OP_AGENT_DESTROY, "agent.destroy", &yun__agent_instance_ref__descriptor,
      op_destroy, SCHEDULER },
    { YUN__OP__OP_AGENT_ACTION, "agent.action", &yun__agent_action_request__descriptor,
      op_action, SCHEDULER },
    { YUN__OP__OP_AGENT_CONSOLE, "agent.console", &yun__agent_console_request__descriptor,
      op_console, SCHEDULER },
    { YUN__OP__OP_AGENT_SNAPSHOT, "agent.snapshot", &yun__agent_snapshot_request__descriptor,
      op_snapshot, SCHEDULER },
    { YUN__OP__OP_AGENT_LIST, "agent.list", &yun__agent_list_request__descriptor, op_list,
      SCHEDULER },
    { YUN__OP__OP_AGENT_NETWORK_STATE, "agent.network_state",
      &yun__host_network_state__descriptor, op_network_state, SCHEDULER },
};

static const struct agent_op *
find_op(int op)
{
    for (size_t i = 0; i < ELEMENTSOF(agent_ops); i++)
        if ((int)agent_ops[i].op == op)
            return &agent_ops[i];
    return NULL;
}

/* Runs 'call' on 'body' (a packed Request). Fills the call's error or
 * payload, or marks it deferred. */
static void
dispatch(struct agent_call *call, const uint8_t *body, size_t size)
{
    int64_t t0 = yun_now_ms();
    Yun__Request *q = yun__request__unpack(NULL, size, body);
    if (!q) {
        call_error(call, YUN_E_DECODE, "The request does not decode.");
        return;
    }
    call->op = q->op;
    const struct agent_op *op = find_op(q->op);
    if (!op) {
        call_error(call, YUN_E_BADOP, "Operation %d is not served by agent '%s'.", (int)q->op,
                   call->c->a->key.id);
    } else if (strcmp(call->sender, op->sender) != 0) {
        call_error(call, YUN_E_DENIED, "Only the %s may call '%s' on agent '%s'.", op->sender,
                   op->name, call->c->a->key.id);
    } else {
        ProtobufCMessage *m = protobuf_c_message_unpack(op->request, NULL, q->payload.len,
                                                        q->payload.data);
        if (!m) {
            call_error(call, YUN_E_DECODE, "The '%s' request does not decode.", op->name);
        } else {
            int r = op->handler(call, m);
            if (r < 0 && !call->error)
                call_error(call, r, "%s", yun_strerror(r));
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    if (!call->deferred || call->error)
        log_req(call->error ? YUN_LOG_WARN : YUN_LOG_INFO, call->req, call->error,
                "request served op=%s sender=%s ms=%" PRId64 "%s%s%s",
                op ? op->name : "?", call->sender, yun_now_ms() - t0,
                call->error ? " error=\"" : "", call->error ? call->message : "",
                call->error ? "\"" : "");
    yun__request__free_unpacked(q, NULL);
}

/* The call's immediate reply, packed. */
static int
call_pack(struct agent_call *call, uint8_t **ret, size_t *ret_size)
{
    Yun__Reply y = YUN__REPLY__INIT;
    y.error = call->error;
    y.error_message = call->error ? call->message : (char *)"";
    if (!call->error && call->payload) {
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

static int
key_fn(const char *key_id, uint32_t epoch, struct yun_key *ret, int *ret_role, void *data)
{
    struct agent_command *c = data;
    /* The scheduler speaks to us with our own key. */
    if (strcmp(key_id, c->a->key.id) != 0 || epoch != c->a->key.epoch)
        return YUN_E_UNKNOWN_PEER;
    *ret = c->a->key.key;
    *ret_role = 0;
    return 0;
}

static void
reject_fn(int code, const struct yun_envelope_in *in, void *data)
{
    log_req(YUN_LOG_WARN, in && in->request_id ? in->request_id : NULL, code,
            "message rejected sender=%s key=%s error=%s",
            in && in->sender ? in->sender : "?", in && in->key_id ? in->key_id : "?",
            yun_errname(code));
}

static int
hold(struct agent_command *c, const struct yun_bus_peer *peer, const uint8_t *body,
     size_t size)
{
    if (c->n_held >= HELD_MAX)
        return -EBUSY;
    struct held *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->body = malloc(size ? size : 1);
    int r = h->body ? yun_bus_server_defer(c->server, &h->handle) : -ENOMEM;
    if (r < 0) {
        free(h->body);
        free(h);
        return r;
    }
    memcpy(h->body, body, size);
    h->size = size;
    snprintf(h->sender, sizeof h->sender, "%s", peer->sender);
    snprintf(h->request_id, sizeof h->request_id, "%s", peer->request_id ? peer->request_id : "");
    if (c->held_tail)
        c->held_tail->next = h;
    else
        c->held_head = h;
    c->held_tail = h;
    c->n_held++;
    log_req(YUN_LOG_INFO, h->request_id, 0, "command held until the start-up sync is answered");
    return 0;
}

static int
serve(const struct yun_bus_peer *peer, const uint8_t *body, size_t size, uint8_t **ret,
      size_t *ret_size, void *data)
{
    struct agent_command *c = data;
    struct agent_call call = {
        .c = c, .sender = peer->sender, .req = peer->request_id,
    };
    if (!c->synced && strcmp(peer->sender, SCHEDULER) == 0) {
        int r = hold(c, peer, body, size);
        if (r >= 0)
            return YUN_BUS_DEFERRED;
        call_error(&call, YUN_E_CONFLICT, "Agent '%s' is starting; try again.", c->a->key.id);
    } else {
        dispatch(&call, body, size);
    }
    if (call.deferred) {
        free(call.payload);
        return YUN_BUS_DEFERRED;
    }
    int r = call_pack(&call, ret, ret_size);
    free(call.payload);
    return r;
}

/* Serves the commands held while the sync was pending. */
static void
release_held(struct agent_command *c)
{
    while (c->held_head) {
        struct held *h = c->held_head;
        c->held_head = h->next;
        if (!c->held_head)
            c->held_tail = NULL;
        c->n_held--;
        struct agent_call call = {
            .c = c, .sender = h->sender, .req = h->request_id, .held = true,
            .handle = h->handle,
        };
        dispatch(&call, h->body, h->size);
        if (!call.deferred) {
            _cleanup_free_ uint8_t *reply = NULL;
            size_t reply_size = 0;
            int r = call_pack(&call, &reply, &reply_size);
            if (r >= 0)
                r = yun_bus_server_reply(c->server, h->handle, reply, reply_size);
            if (r < 0)
                log_req(YUN_LOG_WARN, h->request_id, r, "cannot answer a held command");
        }
        free(call.payload);
        free(h->body);
        free(h);
    }
}

/* --- events and sync out -------------------------------------------------------- */

static void
outgoing_free(struct outgoing *o)
{
    if (o) {
        if (o->ev)
            yun__instance_event__free_unpacked(o->ev, NULL);
        free(o->body);
        free(o);
    }
}

/* Packs an event's Request with the host id known now. */
static int
pack_event(struct agent_command *c, struct outgoing *o)
{
    Yun__InstanceEvent q = *o->ev;
    q.host_id = c->a->host_id;
    free(o->body);
    o->body = NULL;
    return yun_rpc_pack_request(YUN__OP__OP_INSTANCE_EVENT, &q.base,
                                c->a->cfg.request_timeout_ms, &o->body, &o->size);
}

static void
queue_push(struct agent_command *c, struct outgoing *o, bool front)
{
    if (front) {
        o->next = c->head;
        c->head = o;
        if (!c->tail)
            c->tail = o;
    } else {
        if (c->tail)
            c->tail->next = o;
        else
            c->head = o;
        c->tail = o;
    }
    c->queued++;
}

static struct outgoing *
queue_pop(struct agent_command *c)
{
    struct outgoing *o = c->head;
    if (o) {
        c->head = o->next;
        if (!c->head)
            c->tail = NULL;
        o->next = NULL;
        c->queued--;
    }
    return o;
}

static void
arm(struct agent_command *c, int64_t delay_ms)
{
    if (c->timer >= 0)
        (void)yun_loop_update_timer(c->a->loop, c->timer, delay_ms);
}

static int
pack_sync(struct agent_command *c, struct outgoing *o)
{
    struct agent *a = c->a;
    _cleanup_(agent_vm_report_done) struct agent_vm_report rep = { 0 };
    int r = agent_vm_list(a->vms, &rep);
    if (r < 0)
        return r;
    _cleanup_(report_msgs_done) struct report_msgs m = { 0 };
    r = report_msgs(&rep, &m);
    if (r < 0)
        return r;
    Yun__InstanceSyncRequest q = YUN__INSTANCE_SYNC_REQUEST__INIT;
    q.host_id = a->host_id;
    q.instances = m.ptrs;
    q.n_instances = rep.n_states;
    q.unknown_domains = rep.unknown_domains;
    q.n_unknown_domains = rep.n_unknown_domains;
    free(o->body);
    o->body = NULL;
    r = yun_rpc_pack_request(YUN__OP__OP_INSTANCE_SYNC, &q.base, a->cfg.request_timeout_ms,
                             &o->body, &o->size);
    if (r >= 0)
        snprintf(o->what, sizeof o->what, "sync instances=%zu unknown_domains=%zu",
                 rep.n_states, rep.n_unknown_domains);
    return r;
}

static void
pump(struct agent_command *c)
{
    struct agent *a = c->a;
    if (c->inflight || !c->head || !a->registered || !c->client)
        return;
    struct outgoing *o = c->head;
    if (!o->body) {
        int r = o->op == YUN__OP__OP_INSTANCE_SYNC ? pack_sync(c, o) : pack_event(c, o);
        if (r < 0) {
            log_err_errno(r, "cannot build the request to the scheduler, trying again: %s",
                          o->what);
            arm(c, 1000);
            return;
        }
    }
    int r = yun_bus_client_send(c->client, NULL, NULL, 0, o->body, o->size);
    if (r == -EAGAIN) {
        arm(c, RETRY_MS);
        return;
    }
    if (r < 0) {
        log_err_errno(r, "cannot send to the scheduler: %s", o->what);
        queue_pop(c);
        if (o->op == YUN__OP__OP_INSTANCE_SYNC) {
            /* Never lost: commands wait for it. */
            free(o->body);
            o->body = NULL;
            queue_push(c, o, true);
            arm(c, 1000);
        } else {
            c->dropped++;
            outgoing_free(o);
            arm(c, 0);
        }
        return;
    }
    c->inflight = queue_pop(c);
    c->inflight->attempts++;
    c->deadline_ms = yun_now_ms() + a->cfg.request_timeout_ms;
    c->sent++;
    log_req(YUN_LOG_DEBUG, yun_bus_client_request_id(c->client), 0, "sent to the scheduler %s",
            o->what);
    arm(c, a->cfg.request_timeout_ms);
}

/* The in-flight request got no usable answer: again later, or dropped. */
static void
inflight_retry(struct agent_command *c, int r)
{
    struct outgoing *o = TAKE_PTR(c->inflight);
    if (o->op == YUN__OP__OP_INSTANCE_SYNC || o->attempts < EVENT_ATTEMPTS) {
        /* Packed again when sent: the sync from the state of then, an
         * event with the host id of then. */
        free(o->body);
        o->body = NULL;
        queue_push(c, o, true);
        log_debug("no answer from the scheduler, will send again %s attempt=%u: %s", o->what,
                  o->attempts, yun_strerror(r));
        arm(c, RETRY_MS * (o->attempts < 10 ? o->attempts : 10));
        return;
    }
    log_warn_errno(r, "scheduler never answered, dropped %s", o->what);
    c->dropped++;
    outgoing_free(o);
    arm(c, 0);
}

static void
sync_answered(struct agent_command *c, int r, const char *msg, const ProtobufCMessage *m)
{
    struct agent *a = c->a;
    if (r < 0) {
        /* A scheduler that cannot sync still commands us. */
        log_warn_errno(r, "the scheduler refused the instance sync: %s",
                       msg ? msg : yun_strerror(r));
    } else {
        const Yun__InstanceSyncReply *y = (const Yun__InstanceSyncReply *)m;
        size_t n = agent_vm_sync_apply(a->vms, y);
        log_notice("instance sync answered host=%s delete=%zu destroying=%zu", a->host_id,
                   y->n_delete_, n);
    }
    c->synced = true;
    release_held(c);
}

static void
on_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct agent_command *c = data;
    for (;;) {
        _cleanup_free_ uint8_t *body = NULL;
        size_t size;
        int r = yun_bus_client_recv(c->client, &body, &size);
        if (r == -EAGAIN)
            return;
        if (r > _YUN_E_FIRST && r < 0)
            return;
        if (!c->inflight)
            continue;
        if (r < 0) {
            log_req(YUN_LOG_WARN, yun_bus_client_request_id(c->client), r,
                    "reply from the scheduler not accepted: %s", yun_strerror(r));
            inflight_retry(c, r);
            pump(c);
            continue;
        }
        struct outgoing *o = TAKE_PTR(c->inflight);
        bool sync = o->op == YUN__OP__OP_INSTANCE_SYNC;
        ProtobufCMessage *m = NULL;
        _cleanup_free_ char *msg = NULL;
        r = yun_rpc_unpack_reply(body, size,
                                 sync ? &yun__instance_sync_reply__descriptor
                                      : &yun__instance_event_reply__descriptor,
                                 &m, &msg);
        if (r == YUN_E_NOHOST && !sync) {
            /* Not registered (any more): it goes again once we are. */
            c->inflight = o;
            inflight_retry(c, r);
        } else if (sync) {
            sync_answered(c, r, msg, m);
            outgoing_free(o);
        } else {
            if (r < 0) {
                log_warn_errno(r, "the scheduler refused %s: %s", o->what,
                               msg ? msg : yun_strerror(r));
                c->dropped++;
            } else {
                log_debug("scheduler took %s", o->what);
            }
            outgoing_free(o);
        }
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        pump(c);
    }
}

static int64_t
on_timer(struct yun_loop *loop, int id, void *data)
{
    struct agent_command *c = data;
    if (c->inflight) {
        int64_t left = c->deadline_ms - yun_now_ms();
        if (left > 0)
            arm(c, left);
        else
            inflight_retry(c, YUN_E_UNREACHABLE); /* arms the pause before the next send */
        return 0;
    }
    (void)yun_loop_update_timer(loop, id, -1);
    pump(c);
    return 0;
}

void
agent_command_event(struct agent *a, const struct Yun__InstanceEvent *ev)
{
    struct agent_command *c = a->cmd;
    if (!c)
        return;
    struct outgoing *o = calloc(1, sizeof *o);
    size_t size = protobuf_c_message_get_packed_size(&ev->base);
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (o && buf) {
        protobuf_c_message_pack(&ev->base, buf);
        o->ev = yun__instance_event__unpack(NULL, size, buf);
    }
    if (!o || !o->ev) {
        free(o);
        log_err_errno(-ENOMEM, "cannot queue an event vm=%s event=%s", ev->instance_id,
                      ev->event);
        return;
    }
    o->op = YUN__OP__OP_INSTANCE_EVENT;
    snprintf(o->what, sizeof o->what, "event=%s vm=%s", ev->event, ev->instance_id);
    while (c->queued >= OUT_MAX) {
        /* The oldest event goes; never the sync. */
        struct outgoing *old = c->head;
        if (old && old->op == YUN__OP__OP_INSTANCE_SYNC && old->next) {
            struct outgoing *drop = old->next;
            old->next = drop->next;
            if (c->tail == drop)
                c->tail = old;
            c->queued--;
            old = drop;
        } else {
            old = queue_pop(c);
        }
        if (!old)
            break;
        log_warn("too many events waiting for the scheduler, dropped %s", old->what);
        c->dropped++;
        outgoing_free(old);
    }
    queue_push(c, o, false);
    pump(c);
}

void
agent_command_registered(struct agent *a)
{
    struct agent_command *c = a->cmd;
    if (!c)
        return;
    if (!c->synced && !c->sync_queued) {
        struct outgoing *o = calloc(1, sizeof *o);
        if (!o) {
            log_err_errno(-ENOMEM, "cannot queue the instance sync");
            return;
        }
        o->op = YUN__OP__OP_INSTANCE_SYNC;
        snprintf(o->what, sizeof o->what, "sync");
        queue_push(c, o, true);
        c->sync_queued = true;
    }
    pump(c);
}

int
agent_command_start(struct agent *a)
{
    if (!a->cfg.listen_url || !*a->cfg.listen_url)
        return log_err_errno(YUN_E_CONFIG, "agent.listen_url is empty: the scheduler could not "
                                           "reach this agent");
    struct agent_command *c = calloc(1, sizeof *c);
    if (!c)
        return log_err_errno(-ENOMEM, "out of memory");
    c->a = a;
    c->watch = c->timer = -1;
    a->cmd = c;

    struct yun_bus_server_options so = {
        .url = a->cfg.listen_url,
        .self_id = a->key.id,
        .max_body = a->cfg.max_message_size,
        .window_us = (uint64_t)a->cfg.message_window_s * 1000000u,
        .max_deferred = HELD_MAX + 2 * AGENT_VM_MAX,
        .key = key_fn,
        .serve = serve,
        .reject = reject_fn,
        .data = c,
    };
    int r = yun_bus_server_new(a->loop, &so, &c->server);
    if (r < 0)
        return log_err_errno(r, "cannot serve commands url=%s", a->cfg.listen_url);

    struct yun_bus_client_options co = {
        .url = agent_scheduler_url(a),
        .self_id = a->key.id,
        .key_id = a->key.id,
        .key_epoch = a->key.epoch,
        .key = &a->key.key,
        .max_body = a->cfg.max_message_size,
        .window_us = (uint64_t)a->cfg.message_window_s * 1000000u,
        .timeout_ms = (int)a->cfg.request_timeout_ms,
    };
    if (!co.url || !*co.url)
        return log_err_errno(-EINVAL, "no scheduler URL for the instance events");
    r = yun_bus_client_new(&co, &c->client);
    if (r < 0)
        return log_err_errno(r, "cannot connect the event socket url=%s", co.url);
    int fd = yun_bus_client_fd(c->client);
    if (fd < 0)
        return log_err_errno(fd, "cannot watch the event socket");
    c->watch = yun_loop_add_fd(a->loop, fd, EPOLLIN, on_readable, c, NULL);
    if (c->watch < 0)
        return log_err_errno(c->watch, "cannot watch the event socket");
    c->timer = yun_loop_add_timer(a->loop, -1, on_timer, c, NULL);
    if (c->timer < 0)
        return log_err_errno(c->timer, "cannot add the event timer");
    log_info("serving commands url=%s name=%s", a->cfg.listen_url, a->key.id);
    return 0;
}

void
agent_command_stop(struct agent *a)
{
    struct agent_command *c = a->cmd;
    if (!c)
        return;
    /* Held commands are dropped: the scheduler's requests time out. */
    while (c->held_head) {
        struct held *h = c->held_head;
        c->held_head = h->next;
        free(h->body);
        free(h);
    }
    if (c->watch >= 0)
        (void)yun_loop_remove_fd(a->loop, c->watch);
    if (c->timer >= 0)
        (void)yun_loop_remove_timer(a->loop, c->timer);
    c->server = yun_bus_server_free(c->server);
    c->client = yun_bus_client_free(c->client);
    outgoing_free(c->inflight);
    while (c->head)
        outgoing_free(queue_pop(c));
    if (c->sent || c->dropped)
        log_info("events sent=%" PRIu64 " dropped=%" PRIu64, c->sent, c->dropped);
    free(c);
    a->cmd = NULL;
}
