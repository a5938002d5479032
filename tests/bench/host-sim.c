/* SPDX-License-Identifier: Apache-2.0
 * host-sim.c: yun-host-sim, many simulated compute hosts in one process on
 * one epoll loop (common/loop.h), each speaking the agent's protocol to a
 * real yun-scheduler over the real bus with real sealed envelopes: it
 * registers with a plausible inventory, heartbeats every interval, sends
 * the start-up instance sync, serves the scheduler's commands and reports
 * instance events. No VM is made; an instance is a row in memory.
 *
 *   yun-host-sim --scheduler URL --secret FILE --listen tcp://127.0.0.1:PORT
 *                [--hosts N] [--prefix sim] [--group-size 100] [--epoch 1]
 *                [--heartbeat-s 5] [--spawn-delay-ms 0] [--events-file F]
 *                [--log-level warn]
 *
 * Keys. Host i is the agent peer "PREFIX-i" (1-based). The simulator is a
 * benchmark tool run next to the scheduler: it reads the cluster secret
 * and derives each host's key as the scheduler does (HKDF over the peer id
 * and its epoch, common/seal.h). The peers must be registered first, in
 * one transaction: `yun-scheduler issue-key --agent PREFIX --count N`.
 * The scheduler checks every message as it checks any agent's.
 *
 * Sockets. nanomsg allows 512 sockets per process, so hosts come in
 * groups of --group-size. A group shares
 *   - one raw REP command socket (yun_bus_server with reply_as_key_id), at
 *     the group's own URL: --listen's port + the group's number (ipc://
 *     URLs get ".<group>" appended). Every host of the group registers that
 *     address; the scheduler still opens one REQ socket per host and seals
 *     each command with that host's key, so the key id of a command says
 *     which host it is for, and the reply goes out sealed by that host;
 *   - one raw REQ socket to the scheduler (bench-mux.h) for the group's
 *     registrations, heartbeats, syncs and events. Each host keeps, as the
 *     real agent does, at most one report (register/heartbeat) and one
 *     event or sync in flight, so what the scheduler sees per host is what
 *     one yun-agent sends; only the TCP connections are shared.
 *
 * Commands (agent/command.c's table): OP_AGENT_SPAWN acks at once and,
 * --spawn-delay-ms later (default 0: the next loop iteration), reports
 * "spawned" with power "running"; OP_AGENT_DESTROY acks and reports
 * "deleted" (an unknown instance: nothing to do); OP_AGENT_ACTION answers
 * with the power state the action leads to (which ends the task at the
 * scheduler, as a real agent's deferred ack does); OP_AGENT_LIST and
 * OP_AGENT_CONSOLE answer from memory. Commands that come before the
 * host's sync is answered are held, as the agent holds them. This tree
 * has no AgentNetworkState reply yet: OP_AGENT_NETWORK_STATE is refused
 * as an unknown operation, as by the real agent.
 *
 * Figures. With --events-file, every event the scheduler accepted is
 * written as "TIME_US EVENT INSTANCE_ID" (wall clock, flushed every
 * 20 ms): bench-e2e-client reads it to time create-to-ACTIVE. SIGUSR1
 * prints counters to stderr; SIGTERM/SIGINT stop it.
 *
 * Neighbours: bench-mux.c, bench-e2e.sh, agent/report.c and
 * agent/command.c (the protocol it imitates), docs/compute.md
 * "Benchmarks". */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "bench-mux.h"
#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "keyfile.h"
#include "log.h"
#include "loop.h"
#include "rpc.h"
#include "util.h"
#include "compute.pb-c.h"
#include "host.pb-c.h"
#include "yun.pb-c.h"

YUN_LOG_MODULE("host-sim");

#define SCHEDULER "scheduler"
#define TICK_MS 50
#define REQUEST_TIMEOUT_MS 5000
#define MAX_BODY (4u << 20)
#define UUID_LEN 36

enum { CH_REPORT, CH_EVENT, _CH_MAX };

struct sim_vm {
    char id[UUID_LEN + 1];
    const char *power;        /* static string */
    bool has_domain;
};

struct sim_out {              /* an event or the sync, waiting to go */
    struct sim_out *next;
    Yun__Op op;
    char instance_id[UUID_LEN + 1];
    const char *event, *power;
    char request_id[YUN_REQUEST_ID_MAX + 1];
    int64_t due_ms;           /* not before (the spawn delay) */
    unsigned attempts;
};

struct sim_inflight {
    Yun__Op op;               /* 0: free */
    char rid[32];
    int64_t deadline_ms;
    struct sim_out *out;      /* CH_EVENT: what is being sent */
};

struct sim_held {             /* a command that came before the sync was answered */
    struct sim_held *next;
    uint64_t handle;
    char sender[YUN_PEER_ID_MAX + 1];
    char rid[YUN_REQUEST_ID_MAX + 1];
    uint8_t *body;
    size_t size;
};

struct sim_group;

struct sim_host {
    struct sim_group *g;
    uint32_t idx;             /* 0-based; the peer is PREFIX-(idx+1) */
    char name[YUN_PEER_ID_MAX + 1];
    char host_id[YUN_UUID_STR_SIZE];
    struct yun_key key;
    bool registered, synced, sync_queued;
    bool dirty;               /* on the kick list */
    uint64_t seq;
    uint32_t rid_seq;
    int64_t next_beat_ms;
    struct sim_inflight ch[_CH_MAX];
    struct sim_out *head, *tail;
    struct sim_held *held, *held_tail;
    struct sim_vm *vms;
    size_t n_vms, cap_vms;
};

struct sim_group {
    struct sim *sim;
    uint32_t first, n;
    char url[256];
    struct bench_mux *mux;
    int watch;
    struct yun_bus_server *server;
};

struct sim_stats {
    uint64_t registered, heartbeats, events_sent, events_accepted, events_refused;
    uint64_t timeouts, commands, spawns, destroys, actions, lists, rejected;
};

struct sim {
    struct yun_loop *loop;
    const char *scheduler_url, *listen, *prefix;
    uint32_t n_hosts, group_size, epoch, heartbeat_s, spawn_delay_ms, ramp_ms;
    struct sim_host *hosts;
    struct sim_group *groups;
    uint32_t n_groups;
    FILE *events;
    bool events_dirty;
    int kick;                 /* timer: pumps the hosts on the kick list */
    uint32_t *kicked, n_kicked;
    uint32_t up_reported;
    char rid_prefix[9];
    struct sim_stats st;
};

static Yun__HostInventory inventory = YUN__HOST_INVENTORY__INIT;

static void kick(struct sim_host *h);

/* --- hosts ------------------------------------------------------------------------ */

static struct sim_host *
host_by_name(struct sim *sim, const char *name)
{
    size_t n = strlen(sim->prefix);
    if (strncmp(name, sim->prefix, n) != 0 || name[n] != '-')
        return NULL;
    uint32_t i;
    if (yun_safe_atou32(name + n + 1, &i) < 0 || i == 0 || i > sim->n_hosts)
        return NULL;
    return strcmp(sim->hosts[i - 1].name, name) == 0 ? &sim->hosts[i - 1] : NULL;
}

/* Request ids name the run, the host and the channel:
 * "<8 random hex>h<idx>.<r|e><seq>": the scheduler answers a request id it
 * has seen from its reply cache, so a simulator started again must not
 * reuse the last one's. */
static struct sim_host *
host_by_rid(struct sim *sim, const char *rid, int *ret_ch)
{
    if (!rid || strncmp(rid, sim->rid_prefix, 8) != 0 || rid[8] != 'h')
        return NULL;
    char *end;
    errno = 0;
    unsigned long i = strtoul(rid + 9, &end, 10);
    if (errno || *end != '.' || i >= sim->n_hosts)
        return NULL;
    *ret_ch = end[1] == 'r' ? CH_REPORT : end[1] == 'e' ? CH_EVENT : -1;
    return *ret_ch < 0 ? NULL : &sim->hosts[i];
}

static struct sim_vm *
vm_find(struct sim_host *h, const char *id)
{
    for (size_t i = 0; i < h->n_vms; i++)
        if (strcmp(h->vms[i].id, id) == 0)
            return &h->vms[i];
    return NULL;
}

static struct sim_vm *
vm_add(struct sim_host *h, const char *id)
{
    struct sim_vm *v = vm_find(h, id);
    if (v)
        return v;
    if (h->n_vms == h->cap_vms) {
        size_t cap = h->cap_vms ? 2 * h->cap_vms : 8;
        struct sim_vm *p = realloc(h->vms, cap * sizeof *p);
        if (!p)
            return NULL;
        h->vms = p;
        h->cap_vms = cap;
    }
    v = &h->vms[h->n_vms++];
    memset(v, 0, sizeof *v);
    snprintf(v->id, sizeof v->id, "%s", id);
    v->power = "nostate";
    return v;
}

static void
vm_remove(struct sim_host *h, const char *id)
{
    struct sim_vm *v = vm_find(h, id);
    if (v)
        *v = h->vms[--h->n_vms];
}

/* --- requests to the scheduler ------------------------------------------------ */

static int
host_send(struct sim_host *h, int ch, Yun__Op op, const ProtobufCMessage *req)
{
    struct sim_inflight *f = &h->ch[ch];
    _cleanup_free_ uint8_t *body = NULL;
    size_t size;
    int r = yun_rpc_pack_request(op, req, REQUEST_TIMEOUT_MS, &body, &size);
    if (r < 0)
        return r;
    snprintf(f->rid, sizeof f->rid, "%sh%u.%c%u", h->g->sim->rid_prefix, h->idx, ch == CH_REPORT ? 'r' : 'e',
             ++h->rid_seq);
    r = bench_mux_send(h->g->mux, h->name, h->g->sim->epoch, &h->key, f->rid, NULL, 0, body,
                       size);
    if (r < 0)
        return r;
    f->op = op;
    f->deadline_ms = yun_now_ms() + REQUEST_TIMEOUT_MS;
    return 0;
}

static void
send_report(struct sim_host *h)
{
    struct sim *sim = h->g->sim;
    Yun__HostUsage usage = YUN__HOST_USAGE__INIT;
    usage.free_memory_mb = inventory.memory_mb - 128 * h->n_vms;
    usage.free_disk_gb = inventory.disk_gb - h->n_vms;
    usage.load1 = usage.load5 = usage.load15 = 0.1 * (double)h->n_vms;
    usage.running_vms = (uint32_t)h->n_vms;
    int r;
    if (!h->registered) {
        Yun__HostRegisterRequest q = YUN__HOST_REGISTER_REQUEST__INIT;
        q.name = h->name;
        q.address = h->g->url;
        q.inventory = &inventory;
        q.usage = &usage;
        q.host_id = h->host_id;
        q.heartbeat_interval_s = sim->heartbeat_s;
        r = host_send(h, CH_REPORT, YUN__OP__OP_HOST_REGISTER, &q.base);
    } else {
        Yun__HostHeartbeatRequest q = YUN__HOST_HEARTBEAT_REQUEST__INIT;
        q.host_id = h->host_id;
        q.usage = &usage;
        q.seq = ++h->seq;
        r = host_send(h, CH_REPORT, YUN__OP__OP_HOST_HEARTBEAT, &q.base);
    }
    if (r < 0 && r != -EAGAIN)
        log_warn_errno(r, "cannot send a report name=%s", h->name);
}

static void
sync_request(struct sim_host *h, Yun__InstanceSyncRequest *q, Yun__AgentInstanceState **ptrs,
             Yun__AgentInstanceState *states)
{
    for (size_t i = 0; i < h->n_vms; i++) {
        Yun__AgentInstanceState s = YUN__AGENT_INSTANCE_STATE__INIT;
        s.instance_id = h->vms[i].id;
        s.power_state = (char *)h->vms[i].power;
        s.known = true;
        s.has_domain = h->vms[i].has_domain;
        states[i] = s;
        ptrs[i] = &states[i];
    }
    q->host_id = h->host_id;
    q->instances = ptrs;
    q->n_instances = h->n_vms;
}

/* Sends the next event or the sync when the event channel is free. */
static void
pump(struct sim_host *h)
{
    struct sim_inflight *f = &h->ch[CH_EVENT];
    if (f->op || !h->head || !h->registered)
        return;
    struct sim_out *o = h->head;
    if (o->due_ms > yun_now_ms())
        return;
    int r;
    if (o->op == YUN__OP__OP_INSTANCE_SYNC) {
        Yun__InstanceSyncRequest q = YUN__INSTANCE_SYNC_REQUEST__INIT;
        _cleanup_free_ Yun__AgentInstanceState **ptrs = calloc(h->n_vms + 1, sizeof *ptrs);
        _cleanup_free_ Yun__AgentInstanceState *states = calloc(h->n_vms + 1, sizeof *states);
        if (!ptrs || !states)
            return;
        sync_request(h, &q, ptrs, states);
        r = host_send(h, CH_EVENT, YUN__OP__OP_INSTANCE_SYNC, &q.base);
    } else {
        Yun__InstanceEvent q = YUN__INSTANCE_EVENT__INIT;
        q.instance_id = o->instance_id;
        q.host_id = h->host_id;
        q.event = (char *)o->event;
        q.power_state = (char *)o->power;
        q.time_us = yun_wall_us();
        q.request_id = o->request_id;
        r = host_send(h, CH_EVENT, YUN__OP__OP_INSTANCE_EVENT, &q.base);
        if (r >= 0)
            h->g->sim->st.events_sent++;
    }
    if (r < 0) {
        if (r != -EAGAIN)
            log_warn_errno(r, "cannot send to the scheduler name=%s", h->name);
        return;
    }
    h->head = o->next;
    if (!h->head)
        h->tail = NULL;
    o->next = NULL;
    o->attempts++;
    f->out = o;
}

static void
queue_out(struct sim_host *h, struct sim_out *o, bool front)
{
    if (front) {
        o->next = h->head;
        h->head = o;
        if (!h->tail)
            h->tail = o;
    } else {
        if (h->tail)
            h->tail->next = o;
        else
            h->head = o;
        h->tail = o;
    }
}

static void
queue_event(struct sim_host *h, const char *id, const char *event, const char *power,
            const char *rid, int64_t delay_ms)
{
    struct sim_out *o = calloc(1, sizeof *o);
    if (!o) {
        log_err("out of memory for an event vm=%s", id);
        return;
    }
    o->op = YUN__OP__OP_INSTANCE_EVENT;
    snprintf(o->instance_id, sizeof o->instance_id, "%s", id);
    o->event = event;
    o->power = power;
    snprintf(o->request_id, sizeof o->request_id, "%s", rid ? rid : "");
    o->due_ms = yun_now_ms() + delay_ms;
    queue_out(h, o, false);
    if (delay_ms == 0)
        kick(h);
}

/* Sends what 'h' has queued on the next loop iteration: after the reply
 * to the command that queued it has gone out. */
static void
kick(struct sim_host *h)
{
    struct sim *sim = h->g->sim;
    if (h->dirty)
        return;
    h->dirty = true;
    sim->kicked[sim->n_kicked++] = h->idx;
    (void)yun_loop_update_timer(sim->loop, sim->kick, 0);
}

static int64_t
on_kick(struct yun_loop *loop, int id, void *data)
{
    struct sim *sim = data;
    for (uint32_t i = 0; i < sim->n_kicked; i++) {
        struct sim_host *h = &sim->hosts[sim->kicked[i]];
        h->dirty = false;
        pump(h);
    }
    sim->n_kicked = 0;
    (void)yun_loop_update_timer(loop, id, -1); /* disabled until the next kick */
    return 0;
}

/* --- commands from the scheduler ---------------------------------------------- */

struct call {
    int error;
    char message[256];
    uint8_t *payload;
    size_t payload_size;
};

static int
call_reply(struct call *c, const ProtobufCMessage *m)
{
    c->payload_size = protobuf_c_message_get_packed_size(m);
    c->payload = malloc(c->payload_size + 1);
    if (!c->payload)
        return -ENOMEM;
    protobuf_c_message_pack(m, c->payload);
    return 0;
}

static int __attribute__((format(printf, 3, 4)))
call_error(struct call *c, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
    c->error = r;
    return r;
}

static int
ack(struct call *c, const char *id, bool known, bool has_domain, const char *power)
{
    Yun__AgentInstanceState s = YUN__AGENT_INSTANCE_STATE__INIT;
    s.instance_id = (char *)id;
    s.known = known;
    s.has_domain = has_domain;
    s.power_state = (char *)power;
    Yun__AgentAck y = YUN__AGENT_ACK__INIT;
    y.state = &s;
    return call_reply(c, &y.base);
}

static int
op_spawn(struct sim_host *h, struct call *c, const char *rid, const Yun__AgentSpawnRequest *q)
{
    struct sim *sim = h->g->sim;
    if (!q->instance || !yun_uuid_is_valid(q->instance->id))
        return call_error(c, YUN_E_INVALID, "The spawn names no valid instance.");
    struct sim_vm *v = vm_find(h, q->instance->id);
    if (!v && h->n_vms >= 1024)
        return call_error(c, -ENOSPC, "Host '%s' holds 1024 instances already.", h->name);
    bool again = v && v->has_domain && !q->rebuild;
    if (!v && !(v = vm_add(h, q->instance->id)))
        return -ENOMEM;
    sim->st.spawns++;
    int r = ack(c, v->id, true, v->has_domain, v->power);
    if (r < 0)
        return r;
    if (again) {
        /* A spawn sent again of an instance it has: say so again. */
        queue_event(h, v->id, "spawned", "running", rid, 0);
        return 0;
    }
    v->has_domain = true;
    v->power = "running";
    queue_event(h, v->id, "spawned", "running", rid, sim->spawn_delay_ms);
    return 0;
}

static int
op_destroy(struct sim_host *h, struct call *c, const char *rid, const Yun__AgentInstanceRef *q)
{
    h->g->sim->st.destroys++;
    struct sim_vm *v = vm_find(h, q->instance_id);
    if (!v)
        return ack(c, q->instance_id, false, false, "nostate");
    int r = ack(c, v->id, true, true, v->power);
    if (r < 0)
        return r;
    queue_event(h, v->id, "deleted", "nostate", rid, 0);
    vm_remove(h, q->instance_id);
    return 0;
}

static const struct {
    const char *action, *power;
} action_power[] = {
    { "start", "running" },   { "stop", "shutoff" },    { "reboot", "running" },
    { "pause", "paused" },    { "unpause", "running" }, { "suspend", "suspended" },
    { "resume", "running" },
};

static int
op_action(struct sim_host *h, struct call *c, const Yun__AgentActionRequest *q)
{
    h->g->sim->st.actions++;
    struct sim_vm *v = vm_find(h, q->instance_id);
    if (!v)
        return call_error(c, -ENOENT, "Instance '%.40s' is not on host '%s'.", q->instance_id,
                          h->name);
    for (size_t i = 0; i < ELEMENTSOF(action_power); i++)
        if (strcmp(q->action, action_power[i].action) == 0) {
            /* Done at once: the ack's power state is the action's target. */
            v->power = action_power[i].power;
            return ack(c, v->id, true, true, v->power);
        }
    return call_error(c, YUN_E_INVALID, "Unknown action '%.20s'.", q->action);
}

static int
op_list(struct sim_host *h, struct call *c)
{
    h->g->sim->st.lists++;
    Yun__InstanceSyncRequest q = YUN__INSTANCE_SYNC_REQUEST__INIT;
    _cleanup_free_ Yun__AgentInstanceState **ptrs = calloc(h->n_vms + 1, sizeof *ptrs);
    _cleanup_free_ Yun__AgentInstanceState *states = calloc(h->n_vms + 1, sizeof *states);
    if (!ptrs || !states)
        return -ENOMEM;
    sync_request(h, &q, ptrs, states);
    Yun__AgentListReply y = YUN__AGENT_LIST_REPLY__INIT;
    y.instances = q.instances;
    y.n_instances = q.n_instances;
    return call_reply(c, &y.base);
}

static int
op_console(struct sim_host *h, struct call *c, const Yun__AgentConsoleRequest *q)
{
    if (!vm_find(h, q->instance_id))
        return call_error(c, -ENOENT, "Instance '%.40s' is not on host '%s'.", q->instance_id,
                          h->name);
    Yun__ServerConsoleReply y = YUN__SERVER_CONSOLE_REPLY__INIT;
    y.output = (char *)"yun-host-sim: a simulated instance has no console\n";
    return call_reply(c, &y.base);
}

/* Serves one command for 'h' and packs its Reply into '*ret'. */
static int
command(struct sim_host *h, const char *sender, const char *rid, const uint8_t *body,
        size_t size, uint8_t **ret, size_t *ret_size)
{
    struct call c = { 0 };
    h->g->sim->st.commands++;
    Yun__Request *q = yun__request__unpack(NULL, size, body);
    if (!q) {
        call_error(&c, YUN_E_DECODE, "The request does not decode.");
    } else if (strcmp(sender, SCHEDULER) != 0) {
        call_error(&c, YUN_E_DENIED, "Only the scheduler may command agent '%s'.", h->name);
    } else {
        const ProtobufCMessageDescriptor *d =
            q->op == YUN__OP__OP_AGENT_SPAWN     ? &yun__agent_spawn_request__descriptor
            : q->op == YUN__OP__OP_AGENT_DESTROY ? &yun__agent_instance_ref__descriptor
            : q->op == YUN__OP__OP_AGENT_ACTION  ? &yun__agent_action_request__descriptor
            : q->op == YUN__OP__OP_AGENT_CONSOLE ? &yun__agent_console_request__descriptor
            : q->op == YUN__OP__OP_AGENT_LIST    ? &yun__agent_list_request__descriptor
                                                 : NULL;
        ProtobufCMessage *m = d ? protobuf_c_message_unpack(d, NULL, q->payload.len,
                                                            q->payload.data)
                                : NULL;
        int r = 0;
        if (!d)
            r = call_error(&c, YUN_E_BADOP, "Operation %d is not served by agent '%s'.",
                           (int)q->op, h->name);
        else if (!m)
            r = call_error(&c, YUN_E_DECODE, "The request does not decode.");
        else if (q->op == YUN__OP__OP_AGENT_SPAWN)
            r = op_spawn(h, &c, rid, (const Yun__AgentSpawnRequest *)m);
        else if (q->op == YUN__OP__OP_AGENT_DESTROY)
            r = op_destroy(h, &c, rid, (const Yun__AgentInstanceRef *)m);
        else if (q->op == YUN__OP__OP_AGENT_ACTION)
            r = op_action(h, &c, (const Yun__AgentActionRequest *)m);
        else if (q->op == YUN__OP__OP_AGENT_CONSOLE)
            r = op_console(h, &c, (const Yun__AgentConsoleRequest *)m);
        else
            r = op_list(h, &c);
        if (r < 0 && !c.error)
            call_error(&c, r, "%s", yun_strerror(r));
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
    }
    if (q)
        yun__request__free_unpacked(q, NULL);
    Yun__Reply y = YUN__REPLY__INIT;
    y.error = c.error;
    y.error_message = c.error ? c.message : (char *)"";
    if (!c.error && c.payload) {
        y.payload.data = c.payload;
        y.payload.len = c.payload_size;
    }
    *ret_size = yun__reply__get_packed_size(&y);
    *ret = malloc(*ret_size + 1);
    if (*ret)
        yun__reply__pack(&y, *ret);
    free(c.payload);
    if (c.error)
        log_req(YUN_LOG_INFO, rid, c.error, "command refused name=%s: %s", h->name, c.message);
    return *ret ? 0 : -ENOMEM;
}

static int
key_fn(const char *key_id, uint32_t epoch, struct yun_key *ret, int *ret_role, void *data)
{
    struct sim_group *g = data;
    struct sim_host *h = host_by_name(g->sim, key_id);
    /* Only this group's hosts, each at its epoch, as an agent accepts only
     * its own key. */
    if (!h || h->g != g || epoch != g->sim->epoch)
        return YUN_E_UNKNOWN_PEER;
    *ret = h->key;
    *ret_role = (int)h->idx;
    return 0;
}

static int
serve(const struct yun_bus_peer *peer, const uint8_t *body, size_t size, uint8_t **ret,
      size_t *ret_size, void *data)
{
    struct sim_group *g = data;
    struct sim_host *h = &g->sim->hosts[peer->role];
    if (!h->synced) {
        struct sim_held *x = calloc(1, sizeof *x);
        if (x && (x->body = malloc(size + 1)) &&
            yun_bus_server_defer(g->server, &x->handle) >= 0) {
            memcpy(x->body, body, size);
            x->size = size;
            snprintf(x->sender, sizeof x->sender, "%s", peer->sender);
            snprintf(x->rid, sizeof x->rid, "%s", peer->request_id ? peer->request_id : "");
            if (h->held_tail)
                h->held_tail->next = x;
            else
                h->held = x;
            h->held_tail = x;
            return YUN_BUS_DEFERRED;
        }
        if (x)
            free(x->body);
        free(x);
        struct call c = { 0 };
        call_error(&c, YUN_E_CONFLICT, "Agent '%s' is starting; try again.", h->name);
        return yun_rpc_pack_reply(c.error, c.message, NULL, ret, ret_size);
    }
    return command(h, peer->sender, peer->request_id, body, size, ret, ret_size);
}

static void
reject_fn(int code, const struct yun_envelope_in *in, void *data)
{
    struct sim_group *g = data;
    g->sim->st.rejected++;
    log_req(YUN_LOG_WARN, in ? in->request_id : NULL, code,
            "command rejected sender=%s key_id=%s", in && in->sender ? in->sender : "-",
            in && in->key_id ? in->key_id : "-");
}

static void
release_held(struct sim_host *h)
{
    while (h->held) {
        struct sim_held *x = h->held;
        h->held = x->next;
        _cleanup_free_ uint8_t *reply = NULL;
        size_t reply_size = 0;
        int r = command(h, x->sender, x->rid, x->body, x->size, &reply, &reply_size);
        if (r >= 0)
            r = yun_bus_server_reply(h->g->server, x->handle, reply, reply_size);
        if (r < 0)
            log_req(YUN_LOG_WARN, x->rid, r, "cannot answer a held command name=%s", h->name);
        free(x->body);
        free(x);
    }
    h->held_tail = NULL;
}

/* --- replies from the scheduler ------------------------------------------------ */

static void
note_event(struct sim *sim, const struct sim_out *o)
{
    sim->st.events_accepted++;
    if (sim->events) {
        fprintf(sim->events, "%" PRIu64 " %s %s\n", yun_wall_us(), o->event, o->instance_id);
        sim->events_dirty = true;
    }
}

static void
on_report_reply(struct sim_host *h, Yun__Op op, int r, const uint8_t *body, size_t size)
{
    struct sim *sim = h->g->sim;
    bool reg = op == YUN__OP__OP_HOST_REGISTER;
    ProtobufCMessage *m = NULL;
    _cleanup_free_ char *msg = NULL;
    if (r >= 0)
        r = yun_rpc_unpack_reply(body, size,
                                 reg ? &yun__host_register_reply__descriptor
                                     : &yun__host_heartbeat_reply__descriptor,
                                 &m, &msg);
    if (r == YUN_E_UNREACHABLE) {
        /* As the agent: no answer is not a refusal; the next beat goes
         * as it would have (a registration again only if it was one). */
        log_info("scheduler not answering our %s name=%s", reg ? "registration" : "heartbeat",
                 h->name);
        return;
    }
    if (r < 0) {
        log_warn_errno(r, "scheduler refused our %s name=%s: %s",
                       reg ? "registration" : "heartbeat", h->name, msg ? msg : yun_strerror(r));
        h->registered = false;
        return;
    }
    if (reg) {
        Yun__HostRegisterReply *y = (Yun__HostRegisterReply *)m;
        if (yun_uuid_is_valid(y->host_id)) {
            snprintf(h->host_id, sizeof h->host_id, "%s", y->host_id);
            if (!h->registered)
                sim->st.registered++;
            h->registered = true;
            if (!h->synced && !h->sync_queued) {
                struct sim_out *o = calloc(1, sizeof *o);
                if (o) {
                    o->op = YUN__OP__OP_INSTANCE_SYNC;
                    queue_out(h, o, true);
                    h->sync_queued = true;
                }
            }
            pump(h);
        }
    } else {
        sim->st.heartbeats++;
        if (((Yun__HostHeartbeatReply *)m)->reregister) {
            h->registered = false;
            h->next_beat_ms = 0;
        }
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

static void
on_event_reply(struct sim_host *h, int r, const uint8_t *body, size_t size)
{
    struct sim *sim = h->g->sim;
    struct sim_out *o = TAKE_PTR(h->ch[CH_EVENT].out);
    if (!o)
        return;
    bool sync = o->op == YUN__OP__OP_INSTANCE_SYNC;
    ProtobufCMessage *m = NULL;
    _cleanup_free_ char *msg = NULL;
    if (r >= 0)
        r = yun_rpc_unpack_reply(body, size,
                                 sync ? &yun__instance_sync_reply__descriptor
                                      : &yun__instance_event_reply__descriptor,
                                 &m, &msg);
    if (sync && r == YUN_E_UNREACHABLE) {
        /* The sync is never lost: commands wait for it. */
        o->due_ms = yun_now_ms() + 200;
        queue_out(h, o, true);
    } else if (sync) {
        if (r >= 0) {
            const Yun__InstanceSyncReply *y = (const Yun__InstanceSyncReply *)m;
            for (size_t i = 0; i < y->n_delete_; i++)
                vm_remove(h, y->delete_[i]);
        } else {
            log_warn_errno(r, "the scheduler refused the instance sync name=%s: %s", h->name,
                           msg ? msg : yun_strerror(r));
        }
        h->synced = true;
        free(o);
        release_held(h);
    } else if (r == YUN_E_NOHOST || r == YUN_E_UNREACHABLE) {
        /* Not registered (any more), or no answer: it goes again. */
        if (o->attempts < 10) {
            o->due_ms = yun_now_ms() + 200;
            queue_out(h, o, true);
        } else {
            sim->st.events_refused++;
            free(o);
        }
    } else if (r < 0) {
        log_warn_errno(r, "the scheduler refused event=%s vm=%s name=%s: %s", o->event,
                       o->instance_id, h->name, msg ? msg : yun_strerror(r));
        sim->st.events_refused++;
        free(o);
    } else {
        note_event(sim, o);
        free(o);
    }
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    pump(h);
}

static void
on_mux_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct sim_group *g = data;
    for (int n = 0; n < 1024; n++) {
        struct bench_mux_reply rep;
        int r = bench_mux_recv(g->mux, &rep);
        if (r < 0)
            return;
        int ch = -1;
        struct sim_host *h = host_by_rid(g->sim, rep.in.request_id, &ch);
        struct sim_inflight *f = h ? &h->ch[ch] : NULL;
        if (!f || !f->op || strcmp(f->rid, rep.in.request_id) != 0) {
            bench_mux_reply_done(&rep);
            continue;       /* late, or not ours */
        }
        _cleanup_free_ uint8_t *body = NULL;
        size_t size = 0;
        r = bench_mux_open(&rep, h->name, g->sim->epoch, &h->key, SCHEDULER, f->rid, &body,
                           &size);
        bench_mux_reply_done(&rep);
        Yun__Op op = f->op;
        f->op = 0;
        if (ch == CH_REPORT)
            on_report_reply(h, op, r, body, size);
        else
            on_event_reply(h, r, body, size);
    }
}

/* --- the tick --------------------------------------------------------------------- */

static int64_t
on_tick(struct yun_loop *loop, int id, void *data)
{
    struct sim *sim = data;
    int64_t now = yun_now_ms();
    uint32_t up = 0;
    for (uint32_t i = 0; i < sim->n_hosts; i++) {
        struct sim_host *h = &sim->hosts[i];
        for (int ch = 0; ch < _CH_MAX; ch++) {
            struct sim_inflight *f = &h->ch[ch];
            if (!f->op || now < f->deadline_ms)
                continue;
            sim->st.timeouts++;
            Yun__Op op = f->op;
            f->op = 0;
            if (ch == CH_REPORT)
                on_report_reply(h, op, YUN_E_UNREACHABLE, NULL, 0);
            else
                on_event_reply(h, YUN_E_UNREACHABLE, NULL, 0);
        }
        if (!h->ch[CH_REPORT].op && now >= h->next_beat_ms) {
            /* As the agent: a beat (or a registration) every interval, a
             * first registration at once; spread by a little jitter. */
            h->next_beat_ms = now + (int64_t)sim->heartbeat_s * 1000 + (int64_t)(i % 97);
            send_report(h);
        }
        pump(h);
        up += h->registered && h->synced;
    }
    if (sim->events && sim->events_dirty) {
        fflush(sim->events);
        sim->events_dirty = false;
    }
    if (up != sim->up_reported && (up == sim->n_hosts || up / 1000 != sim->up_reported / 1000))
        log_notice("hosts registered and synced: %u of %u", up, sim->n_hosts);
    sim->up_reported = up;
    return TICK_MS;
}

static void
print_stats(struct sim *sim)
{
    const struct sim_stats *s = &sim->st;
    fprintf(stderr,
            "yun-host-sim: hosts=%u up=%u registrations=%" PRIu64 " heartbeats=%" PRIu64
            " commands=%" PRIu64 " spawns=%" PRIu64 " destroys=%" PRIu64 " actions=%" PRIu64
            " lists=%" PRIu64 " events_sent=%" PRIu64 " events_accepted=%" PRIu64
            " events_refused=%" PRIu64 " timeouts=%" PRIu64 " rejected=%" PRIu64 "\n",
            sim->n_hosts, sim->up_reported, s->registered, s->heartbeats, s->commands,
            s->spawns, s->destroys, s->actions, s->lists, s->events_sent, s->events_accepted,
            s->events_refused, s->timeouts, s->rejected);
}

static void
on_signal(struct yun_loop *loop, int sig, void *data)
{
    if (sig == SIGUSR1)
        print_stats(data);
    else
        yun_loop_quit(loop, 0);
}

/* --- setup -------------------------------------------------------------------------- */

static int
group_url(const char *listen, uint32_t g, char *buf, size_t size)
{
    if (strncmp(listen, "ipc://", 6) == 0)
        return snprintf(buf, size, "%s.%u", listen, g) < (int)size ? 0 : -ENAMETOOLONG;
    const char *colon = strrchr(listen, ':');
    uint32_t port;
    if (strncmp(listen, "tcp://", 6) != 0 || !colon || yun_safe_atou32(colon + 1, &port) < 0 ||
        port + g > 65535)
        return -EINVAL;
    return snprintf(buf, size, "%.*s:%u", (int)(colon - listen), listen, port + g) < (int)size
               ? 0 : -ENAMETOOLONG;
}

static int
sim_start(struct sim *sim, const uint8_t secret[YUN_SECRET_SIZE])
{
    sim->hosts = calloc(sim->n_hosts, sizeof *sim->hosts);
    sim->n_groups = (sim->n_hosts + sim->group_size - 1) / sim->group_size;
    sim->groups = calloc(sim->n_groups, sizeof *sim->groups);
    sim->kicked = calloc(sim->n_hosts, sizeof *sim->kicked);
    if (!sim->hosts || !sim->groups || !sim->kicked)
        return -ENOMEM;
    sim->kick = yun_loop_add_timer(sim->loop, -1, on_kick, sim, NULL);
    if (sim->kick < 0)
        return sim->kick;
    for (uint32_t gi = 0; gi < sim->n_groups; gi++) {
        struct sim_group *g = &sim->groups[gi];
        g->sim = sim;
        g->watch = -1;
        g->first = gi * sim->group_size;
        g->n = sim->n_hosts - g->first < sim->group_size ? sim->n_hosts - g->first
                                                          : sim->group_size;
        int r = group_url(sim->listen, gi, g->url, sizeof g->url);
        if (r < 0)
            return log_err_errno(r, "cannot make the command URL of group %u from '%s'", gi,
                                 sim->listen);
        struct yun_bus_server_options so = {
            .url = g->url,
            .self_id = "host-sim",
            .reply_as_key_id = true,
            .max_body = MAX_BODY,
            .max_deferred = 1024 + 4 * (size_t)g->n,
            .key = key_fn,
            .serve = serve,
            .reject = reject_fn,
            .data = g,
        };
        r = yun_bus_server_new(sim->loop, &so, &g->server);
        if (r < 0)
            return log_err_errno(r, "cannot serve commands url=%s", g->url);
        r = bench_mux_new(sim->scheduler_url, MAX_BODY, &g->mux);
        if (r < 0)
            return log_err_errno(r, "cannot connect to the scheduler url=%s",
                                 sim->scheduler_url);
        int fd = bench_mux_fd(g->mux);
        g->watch = fd < 0 ? fd : yun_loop_add_fd(sim->loop, fd, EPOLLIN, on_mux_readable, g,
                                                  NULL);
        if (g->watch < 0)
            return log_err_errno(g->watch, "cannot watch the scheduler socket");
    }
    int64_t now = yun_now_ms();
    for (uint32_t i = 0; i < sim->n_hosts; i++) {
        struct sim_host *h = &sim->hosts[i];
        h->idx = i;
        h->g = &sim->groups[i / sim->group_size];
        if (snprintf(h->name, sizeof h->name, "%s-%u", sim->prefix, i + 1) >=
            (int)sizeof h->name)
            return -ENAMETOOLONG;
        int r = yun_key_derive(secret, YUN_SECRET_SIZE, h->name, sim->epoch, &h->key);
        if (r < 0)
            return r;
        /* First registrations spread over the ramp, as hosts that did not
         * all boot at once. */
        h->next_beat_ms = now + (int64_t)((uint64_t)i * sim->ramp_ms / sim->n_hosts);
    }
    return 0;
}

static void
sim_stop(struct sim *sim)
{
    for (uint32_t gi = 0; sim->groups && gi < sim->n_groups; gi++) {
        struct sim_group *g = &sim->groups[gi];
        if (g->watch >= 0)
            (void)yun_loop_remove_fd(sim->loop, g->watch);
        g->server = yun_bus_server_free(g->server);
        g->mux = bench_mux_free(g->mux);
    }
    for (uint32_t i = 0; sim->hosts && i < sim->n_hosts; i++) {
        struct sim_host *h = &sim->hosts[i];
        while (h->head) {
            struct sim_out *o = h->head;
            h->head = o->next;
            free(o);
        }
        free(h->ch[CH_EVENT].out);
        while (h->held) {
            struct sim_held *x = h->held;
            h->held = x->next;
            free(x->body);
            free(x);
        }
        free(h->vms);
        yun_wipe(&h->key, sizeof h->key);
    }
    free(sim->hosts);
    free(sim->groups);
    free(sim->kicked);
}

static void
usage(FILE *f)
{
    fprintf(f,
            "Usage: yun-host-sim --scheduler URL --secret FILE --listen URL [OPTIONS]\n"
            "  --hosts N            simulated hosts (default 10)\n"
            "  --prefix P           host i is the agent peer P-i (default sim)\n"
            "  --epoch E            the peers' key epoch (default 1)\n"
            "  --group-size K       hosts per command socket and scheduler socket (100)\n"
            "  --listen URL         command URL of group 0 (tcp://H:PORT: group g on\n"
            "                       PORT+g; ipc://PATH: PATH.g)\n"
            "  --heartbeat-s S      heartbeat interval (default 5)\n"
            "  --spawn-delay-ms MS  spawn to 'spawned' (default 0)\n"
            "  --ramp-ms MS         first registrations spread over MS (default 2 per\n"
            "                       host, at least 1000: a first registration is a\n"
            "                       durable commit; 10 000 at once time out and retry)\n"
            "  --events-file F      write 'TIME_US EVENT ID' for every accepted event\n"
            "  --log-level L        err warn notice info debug (default warn)\n"
            "Register the peers first: yun-scheduler issue-key --agent P --count N\n");
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "scheduler", required_argument, NULL, 'S' },
        { "secret", required_argument, NULL, 'k' },
        { "listen", required_argument, NULL, 'l' },
        { "hosts", required_argument, NULL, 'n' },
        { "prefix", required_argument, NULL, 'p' },
        { "epoch", required_argument, NULL, 'e' },
        { "group-size", required_argument, NULL, 'g' },
        { "heartbeat-s", required_argument, NULL, 'b' },
        { "spawn-delay-ms", required_argument, NULL, 'd' },
        { "ramp-ms", required_argument, NULL, 'r' },
        { "events-file", required_argument, NULL, 'E' },
        { "log-level", required_argument, NULL, 'L' },
        { "help", no_argument, NULL, 'h' },
        {},
    };
    struct sim sim = {
        .prefix = "sim", .n_hosts = 10, .group_size = 100, .epoch = 1, .heartbeat_s = 5,
        .ramp_ms = UINT32_MAX,
    };
    const char *secret_file = NULL, *events_file = NULL;
    int level = YUN_LOG_WARN, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
        uint32_t *u = c == 'n' ? &sim.n_hosts : c == 'e' ? &sim.epoch
                    : c == 'g' ? &sim.group_size : c == 'b' ? &sim.heartbeat_s
                    : c == 'd' ? &sim.spawn_delay_ms : c == 'r' ? &sim.ramp_ms : NULL;
        if (u) {
            if (yun_safe_atou32(optarg, u) < 0) {
                fprintf(stderr, "yun-host-sim: '%s' is not a number\n", optarg);
                return 2;
            }
            continue;
        }
        switch (c) {
        case 'S': sim.scheduler_url = optarg; break;
        case 'k': secret_file = optarg; break;
        case 'l': sim.listen = optarg; break;
        case 'p': sim.prefix = optarg; break;
        case 'E': events_file = optarg; break;
        case 'L':
            level = yun_log_level_from_string(optarg);
            if (level < 0) {
                fprintf(stderr, "yun-host-sim: unknown log level '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!sim.scheduler_url || !secret_file || !sim.listen || sim.n_hosts == 0 ||
        sim.group_size == 0 || sim.heartbeat_s == 0 || sim.heartbeat_s > 3600 ||
        optind != argc) {
        usage(stderr);
        return 2;
    }
    if (sim.ramp_ms == UINT32_MAX)
        sim.ramp_ms = sim.n_hosts * 2 > 1000 ? sim.n_hosts * 2 : 1000;
    char rid[17];
    yun_request_id_new(rid);
    memcpy(sim.rid_prefix, rid, 8);
    yun_log_open("yun-host-sim", NULL);
    yun_log_max_level = level;
    signal(SIGPIPE, SIG_IGN);

    uint8_t secret[YUN_SECRET_SIZE];
    int r = yun_secret_load(secret_file, secret);
    if (r < 0) {
        fprintf(stderr, "yun-host-sim: cannot load the cluster secret '%s': %s\n", secret_file,
                yun_strerror(r));
        return 1;
    }
    if (events_file && !(sim.events = fopen(events_file, "we"))) {
        fprintf(stderr, "yun-host-sim: cannot write '%s': %s\n", events_file, strerror(errno));
        return 1;
    }
    inventory.cpus = 64;
    inventory.memory_mb = 256 * 1024;
    inventory.disk_gb = 4000;
    inventory.arch = (char *)"x86_64";
    inventory.hypervisor_type = (char *)"QEMU";
    inventory.hypervisor_version = (char *)"7.2.0";
    inventory.libvirt_uri = (char *)"test:///default";
    inventory.virt_type = (char *)"kvm";
    inventory.agent_version = (char *)"yun-host-sim";
    inventory.cpu_model = (char *)"simulated";
    inventory.cpu_mhz = 2400;

    r = yun_loop_new(&sim.loop);
    if (r >= 0)
        r = sim_start(&sim, secret);
    yun_wipe(secret, sizeof secret);
    if (r >= 0)
        r = yun_loop_add_timer(sim.loop, 0, on_tick, &sim, NULL);
    if (r >= 0)
        r = yun_loop_add_signal(sim.loop, SIGTERM, on_signal, &sim);
    if (r >= 0)
        r = yun_loop_add_signal(sim.loop, SIGINT, on_signal, &sim);
    if (r >= 0)
        r = yun_loop_add_signal(sim.loop, SIGUSR1, on_signal, &sim);
    if (r >= 0) {
        log_notice("simulating hosts=%u groups=%u scheduler=%s", sim.n_hosts, sim.n_groups,
                   sim.scheduler_url);
        r = yun_loop_run(sim.loop);
    } else {
        fprintf(stderr, "yun-host-sim: cannot start: %s\n", yun_strerror(r));
    }
    print_stats(&sim);
    sim_stop(&sim);
    sim.loop = yun_loop_free(sim.loop);
    if (sim.events)
        fclose(sim.events);
    return r < 0 ? 1 : 0;
}
