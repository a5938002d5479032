/* SPDX-License-Identifier: Apache-2.0
 * test-vm-command.c: the agent's compute endpoints (agent/command.c) with
 * the real instance table (agent/vm.c on test:///default), a stand-in
 * scheduler (a bus server that takes the events and the sync) and the
 * scheduler's side of the commands (a REQ client sealed with the agent's
 * key, sender "scheduler"), all on one loop over ipc:// in the test's
 * directory. Covers: commands held until the start-up sync is answered;
 * the sync goes before any event and lists what the agent holds and the
 * unknown domains; its delete list is applied; spawn, action (a deferred
 * reply), console, list and destroy through the table, with their events
 * reaching the scheduler with the host id; who may command the agent
 * (sender, key id, epoch, key) and what is refused (op, decode, input);
 * events the scheduler cannot take yet are sent again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "agent.h"
#include "bus.h"
#include "err.h"
#include "rpc.h"
#include "seal.h"
#include "vm-fixture.h"
#include "yun.pb-c.h"

#define AGENT "hosta"
#define HOST_ID "3f9a1c2e-0d4b-4e5f-8a6b-7c8d9e0f1a2b"
#define MAX_SEEN 256

struct seen {
    Yun__Op op;
    char instance_id[YUN_UUID_STR_SIZE];
    char event[32];
    char host_id[64];
    size_t n_instances, n_unknown;
    bool known, has_domain;
    char power[16];
    char unknown[64];
};

/* The stand-in scheduler. */
static struct {
    struct yun_bus_server *server;
    struct seen seen[MAX_SEEN];
    size_t n_seen;
    char delete_id[YUN_UUID_STR_SIZE]; /* the sync reply's delete list */
    int nohost_events;                 /* refuse this many events with YUN_E_NOHOST */
} sched;

static uint8_t g_secret[YUN_SECRET_SIZE];
static struct yun_loop *g_loop;
static virConnectPtr g_conn;
static struct vm_fixture g_f;
static struct agent g_a;
static char g_listen[700], g_sched_url[700];

static int
sched_key(const char *key_id, uint32_t epoch, struct yun_key *ret, int *ret_role, void *data)
{
    if (strcmp(key_id, AGENT) != 0 || epoch != 1)
        return YUN_E_UNKNOWN_PEER;
    *ret_role = 0;
    return yun_key_derive(g_secret, sizeof g_secret, key_id, epoch, ret);
}

static int
sched_serve(const struct yun_bus_peer *peer, const uint8_t *body, size_t size, uint8_t **ret,
            size_t *ret_size, void *data)
{
    Yun__Request *q = yun__request__unpack(NULL, size, body);
    assert_non_null(q);
    struct seen *s = sched.n_seen < MAX_SEEN ? &sched.seen[sched.n_seen++] : NULL;
    assert_non_null(s);
    memset(s, 0, sizeof *s);
    s->op = q->op;
    int r;
    if (q->op == YUN__OP__OP_INSTANCE_SYNC) {
        Yun__InstanceSyncRequest *m =
            yun__instance_sync_request__unpack(NULL, q->payload.len, q->payload.data);
        assert_non_null(m);
        snprintf(s->host_id, sizeof s->host_id, "%s", m->host_id);
        s->n_instances = m->n_instances;
        s->n_unknown = m->n_unknown_domains;
        if (m->n_instances) {
            snprintf(s->instance_id, sizeof s->instance_id, "%s", m->instances[0]->instance_id);
            s->known = m->instances[0]->known;
            s->has_domain = m->instances[0]->has_domain;
            snprintf(s->power, sizeof s->power, "%s", m->instances[0]->power_state);
        }
        if (m->n_unknown_domains)
            snprintf(s->unknown, sizeof s->unknown, "%s", m->unknown_domains[0]);
        yun__instance_sync_request__free_unpacked(m, NULL);
        char *del[] = { sched.delete_id };
        Yun__InstanceSyncReply y = YUN__INSTANCE_SYNC_REPLY__INIT;
        y.delete_ = del;
        y.n_delete_ = *sched.delete_id ? 1 : 0;
        r = yun_rpc_pack_reply(0, NULL, &y.base, ret, ret_size);
    } else if (q->op == YUN__OP__OP_INSTANCE_EVENT) {
        Yun__InstanceEvent *m = yun__instance_event__unpack(NULL, q->payload.len, q->payload.data);
        assert_non_null(m);
        snprintf(s->instance_id, sizeof s->instance_id, "%s", m->instance_id);
        snprintf(s->event, sizeof s->event, "%s", m->event);
        snprintf(s->host_id, sizeof s->host_id, "%s", m->host_id);
        snprintf(s->power, sizeof s->power, "%s", m->power_state);
        yun__instance_event__free_unpacked(m, NULL);
        if (sched.nohost_events > 0) {
            sched.nohost_events--;
            r = yun_rpc_pack_reply(YUN_E_NOHOST, "Agent 'hosta' has no registered host.", NULL,
                                   ret, ret_size);
        } else {
            Yun__InstanceEventReply y = YUN__INSTANCE_EVENT_REPLY__INIT;
            r = yun_rpc_pack_reply(0, NULL, &y.base, ret, ret_size);
        }
    } else {
        r = yun_rpc_pack_reply(YUN_E_BADOP, "Not served here.", NULL, ret, ret_size);
    }
    yun__request__free_unpacked(q, NULL);
    return r;
}

/* The first thing the scheduler saw from 'from' on of 'op' ('event' for
 * events, NULL = any) about 'id' (NULL = any). */
static const struct seen *
seen_find(size_t from, Yun__Op op, const char *id, const char *event)
{
    for (size_t i = from; i < sched.n_seen; i++) {
        const struct seen *s = &sched.seen[i];
        if (s->op == op && (!id || strcmp(s->instance_id, id) == 0) &&
            (!event || strcmp(s->event, event) == 0))
            return s;
    }
    return NULL;
}

static int
setup_group(void **state)
{
    const char *base = getenv("YUN_TEST_DIR");
    if (yun_loop_new(&g_loop) < 0)
        return -1;
    g_conn = fix_connect(g_loop);
    if (!g_conn)
        return -1;
    if (fix_open_store(&g_f, g_loop, g_conn, "command") < 0)
        return -1;
    for (size_t i = 0; i < sizeof g_secret; i++)
        g_secret[i] = (uint8_t)(i * 13 + 5);
    snprintf(g_listen, sizeof g_listen, "ipc://%s/command/agent.cmd", base ? base : "/tmp");
    snprintf(g_sched_url, sizeof g_sched_url, "ipc://%s/command/sched.bus", base ? base : "/tmp");

    struct yun_bus_server_options so = {
        .url = g_sched_url, .self_id = "scheduler", .key = sched_key, .serve = sched_serve,
    };
    if (yun_bus_server_new(g_loop, &so, &sched.server) < 0)
        return -1;

    struct agent *a = &g_a;
    a->loop = g_loop;
    a->store = g_f.store;
    a->conn = g_conn;
    a->images = g_f.cache;
    a->bus_watch = a->report_timer = -1;
    a->cfg.listen_url = g_listen;
    a->cfg.scheduler_url = g_sched_url;
    a->cfg.state_dir = g_f.state_dir;
    a->cfg.storage_pool = g_f.pool;
    a->cfg.virt_type = (char *)"qemu";
    a->cfg.request_timeout_ms = 300;
    a->cfg.max_message_size = 4u << 20;
    a->cfg.message_window_s = 60;
    a->cfg.shutdown_timeout_s = 1;
    a->key.id = (char *)AGENT;
    a->key.kind = (char *)"agent";
    a->key.epoch = 1;
    if (yun_key_derive(g_secret, sizeof g_secret, AGENT, 1, &a->key.key) < 0)
        return -1;
    snprintf(a->inv.arch, sizeof a->inv.arch, "x86_64");
    if (agent_command_start(a) < 0 || agent_vm_start(a) < 0)
        return -1;
    return 0;
}

static int
teardown_group(void **state)
{
    agent_vm_stop(&g_a);
    agent_command_stop(&g_a);
    sched.server = yun_bus_server_free(sched.server);
    fix_done(&g_f);
    if (g_conn)
        virConnectClose(g_conn);
    (void)yun_loop_run_once(g_loop, 0);
    g_loop = yun_loop_free(g_loop);
    return 0;
}

/* ---- the scheduler's side of the commands ---- */

struct caller {
    struct yun_bus_client *c;
};

static void
caller_open(struct caller *cl, const char *self_id, const char *key_id, uint32_t epoch,
            const struct yun_key *key)
{
    struct yun_key k;
    if (key)
        k = *key;
    else
        assert_int_equal(yun_key_derive(g_secret, sizeof g_secret, key_id, epoch, &k), 0);
    struct yun_bus_client_options o = {
        .url = g_listen, .self_id = self_id, .key_id = key_id, .key_epoch = epoch, .key = &k,
        .server_id = AGENT, .timeout_ms = 2000,
    };
    assert_int_equal(yun_bus_client_new(&o, &cl->c), 0);
}

static void
caller_close(struct caller *cl)
{
    cl->c = yun_bus_client_free(cl->c);
}

/* Sends 'op' with 'payload' (packed) and runs the loop until the answer
 * comes or 'ms' pass: returns 0 with the Reply body in '*ret', a reject
 * code, or -ETIMEDOUT. */
static int
call_raw(struct caller *cl, Yun__Op op, const uint8_t *payload, size_t payload_size, int ms,
         uint8_t **ret, size_t *ret_size)
{
    Yun__Request q = YUN__REQUEST__INIT;
    q.op = op;
    q.payload.data = (uint8_t *)payload;
    q.payload.len = payload_size;
    size_t size = yun__request__get_packed_size(&q);
    uint8_t *body = malloc(size + 1);
    yun__request__pack(&q, body);
    int r;
    int64_t end = yun_now_ms() + 2000;
    while ((r = yun_bus_client_send(cl->c, NULL, NULL, 0, body, size)) == -EAGAIN &&
           yun_now_ms() < end)
        (void)yun_loop_run_once(g_loop, 10);
    free(body);
    assert_int_equal(r, 0);
    end = yun_now_ms() + ms;
    while (yun_now_ms() < end) {
        (void)yun_loop_run_once(g_loop, 10);
        r = yun_bus_client_recv(cl->c, ret, ret_size);
        if (r != -EAGAIN)
            return r;
    }
    return -ETIMEDOUT;
}

/* Calls 'op' with 'req' and unpacks the reply payload with 'desc': returns
 * the Reply's error (message in 'msg') or the transport's. */
static int
call(struct caller *cl, Yun__Op op, const ProtobufCMessage *req,
     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret, char *msg, size_t msg_size)
{
    size_t size = protobuf_c_message_get_packed_size(req);
    uint8_t *payload = malloc(size + 1);
    protobuf_c_message_pack(req, payload);
    uint8_t *body = NULL;
    size_t body_size = 0;
    int r = call_raw(cl, op, payload, size, 5000, &body, &body_size);
    free(payload);
    if (r < 0)
        return r;
    char *m = NULL;
    r = yun_rpc_unpack_reply(body, body_size, desc, ret, &m);
    free(body);
    if (msg)
        snprintf(msg, msg_size, "%s", m ? m : "");
    free(m);
    return r;
}

static bool
registered_and_synced(void)
{
    return seen_find(0, YUN__OP__OP_INSTANCE_SYNC, NULL, NULL) != NULL;
}

/* --- tests ------------------------------------------------------------------------- */

/* Before the start-up sync is answered, commands wait; the sync goes
 * before the events queued meanwhile and lists what the agent holds (and
 * the domains nobody claims); its delete list is applied. */
static void
test_sync_first(void **state)
{
    /* Held by the agent before it registers: x, running, and its
     * "spawned" event, queued. */
    struct fix_spawn x;
    fix_spawn_init(&g_f, &x, false);
    struct agent_vm_state st;
    char msg[512];
    assert_int_equal(agent_vm_spawn(g_a.vms, &x.q, NULL, &st, msg, sizeof msg), 0);
    struct agent_vms_stats vs;
    assert_true(FIX_RUN_UNTIL(&g_f, FIX_DEADLINE_MS,
                              (agent_vms_stats(g_a.vms, &vs), vs.active == 1)));
    /* A domain of the same prefix that nobody claims. */
    char u[YUN_UUID_STR_SIZE], xml[512];
    assert_int_equal(yun_uuid_new(u), 0);
    snprintf(xml, sizeof xml, "<domain type='test'><name>yun-%s</name><uuid>%s</uuid>"
             "<memory unit='MiB'>8</memory><os><type>hvm</type></os></domain>", u, u);
    virDomainPtr ud = virDomainDefineXML(g_conn, xml);
    assert_non_null(ud);

    /* A command now is held: no answer. */
    struct caller cl;
    caller_open(&cl, "scheduler", AGENT, 1, NULL);
    Yun__AgentListRequest lq = YUN__AGENT_LIST_REQUEST__INIT;
    size_t size = protobuf_c_message_get_packed_size(&lq.base);
    uint8_t payload[16];
    protobuf_c_message_pack(&lq.base, payload);
    uint8_t *body = NULL;
    size_t body_size;
    assert_int_equal(call_raw(&cl, YUN__OP__OP_AGENT_LIST, payload, size, 300, &body,
                              &body_size), -ETIMEDOUT);
    assert_int_equal(sched.n_seen, 0); /* nothing is sent before registering */

    /* Registered: the sync first, with the scheduler deleting x. */
    snprintf(sched.delete_id, sizeof sched.delete_id, "%s", x.id);
    g_a.registered = true;
    snprintf(g_a.host_id, sizeof g_a.host_id, "%s", HOST_ID);
    agent_command_registered(&g_a);
    assert_true(FIX_RUN_UNTIL(&g_f, FIX_DEADLINE_MS, registered_and_synced()));
    const struct seen *s = &sched.seen[0];
    assert_int_equal(s->op, YUN__OP__OP_INSTANCE_SYNC);
    assert_string_equal(s->host_id, HOST_ID);
    assert_int_equal(s->n_instances, 1);
    assert_string_equal(s->instance_id, x.id);
    assert_true(s->known && s->has_domain);
    assert_string_equal(s->power, "running");
    assert_int_equal(s->n_unknown, 1);
    char uname[64];
    snprintf(uname, sizeof uname, "yun-%s", u);
    assert_string_equal(s->unknown, uname);

    /* The held command is answered now. */
    int64_t end = yun_now_ms() + 5000;
    int r;
    while ((r = yun_bus_client_recv(cl.c, &body, &body_size)) == -EAGAIN && yun_now_ms() < end)
        (void)yun_loop_run_once(g_loop, 10);
    assert_int_equal(r, 0);
    ProtobufCMessage *m = NULL;
    assert_int_equal(yun_rpc_unpack_reply(body, body_size, &yun__agent_list_reply__descriptor,
                                          &m, NULL), 0);
    free(body);
    protobuf_c_message_free_unpacked(m, NULL);

    /* x is destroyed; its queued "spawned" and then "deleted" follow the
     * sync, with our host id. */
    assert_true(FIX_RUN_UNTIL(&g_f, FIX_DEADLINE_MS,
                              seen_find(1, YUN__OP__OP_INSTANCE_EVENT, x.id, "deleted")));
    s = seen_find(1, YUN__OP__OP_INSTANCE_EVENT, x.id, NULL);
    assert_string_equal(s->event, "spawned");
    assert_string_equal(s->host_id, HOST_ID);
    virDomainPtr xd = virDomainLookupByUUIDString(g_conn, x.id);
    assert_null(xd);
    /* The unknown domain is untouched. */
    assert_int_equal(virDomainIsPersistent(ud), 1);
    assert_int_equal(virDomainUndefine(ud), 0);
    virDomainFree(ud);
    sched.delete_id[0] = '\0';
    caller_close(&cl);
}

static void
test_commands(void **state)
{
    struct caller cl;
    caller_open(&cl, "scheduler", AGENT, 1, NULL);
    struct fix_spawn s;
    fix_spawn_init(&g_f, &s, true);
    ProtobufCMessage *m = NULL;
    char msg[512];
    size_t from = sched.n_seen;

    /* Spawn: accepted at once, "spawned" follows. */
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_SPAWN, &s.q.base, &yun__agent_ack__descriptor,
                          &m, msg, sizeof msg), 0);
    Yun__AgentAck *ack = (Yun__AgentAck *)m;
    assert_non_null(ack->state);
    assert_string_equal(ack->state->instance_id, s.id);
    assert_true(ack->state->known);
    protobuf_c_message_free_unpacked(m, NULL);
    assert_true(FIX_RUN_UNTIL(&g_f, FIX_DEADLINE_MS,
                              seen_find(from, YUN__OP__OP_INSTANCE_EVENT, s.id, "spawned")));
    const struct seen *ev = seen_find(from, YUN__OP__OP_INSTANCE_EVENT, s.id, "spawned");
    assert_string_equal(ev->power, "running");
    assert_string_equal(ev->host_id, HOST_ID);

    /* An action: answered once libvirt did it (a deferred reply). */
    Yun__AgentActionRequest aq = YUN__AGENT_ACTION_REQUEST__INIT;
    aq.instance_id = s.id;
    aq.action = (char *)"pause";
    from = sched.n_seen;
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_ACTION, &aq.base, &yun__agent_ack__descriptor,
                          &m, msg, sizeof msg), 0);
    ack = (Yun__AgentAck *)m;
    assert_string_equal(ack->state->power_state, "paused");
    protobuf_c_message_free_unpacked(m, NULL);
    assert_true(FIX_RUN_UNTIL(&g_f, FIX_DEADLINE_MS,
                              seen_find(from, YUN__OP__OP_INSTANCE_EVENT, s.id, "paused")));
    /* One the agent refuses: the error and its sentence. */
    aq.action = (char *)"dance";
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_ACTION, &aq.base, &yun__agent_ack__descriptor,
                          &m, msg, sizeof msg), YUN_E_INVALID);
    assert_non_null(strstr(msg, "'dance'"));
    aq.instance_id = (char *)HOST_ID;
    aq.action = (char *)"start";
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_ACTION, &aq.base, &yun__agent_ack__descriptor,
                          &m, msg, sizeof msg), -ENOENT);
    assert_non_null(strstr(msg, "is not on host 'hosta'"));

    /* Console: the log's tail. */
    char path[1024];
    snprintf(path, sizeof path, "%s/instances/%s/console.log", g_f.state_dir, s.id);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("yun-guest: booted kernel 6.1\r\nyun-guest: ready\r\n", fp);
    fclose(fp);
    Yun__AgentConsoleRequest cq = YUN__AGENT_CONSOLE_REQUEST__INIT;
    cq.instance_id = s.id;
    cq.lines = 1;
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_CONSOLE, &cq.base,
                          &yun__server_console_reply__descriptor, &m, msg, sizeof msg), 0);
    assert_string_equal(((Yun__ServerConsoleReply *)m)->output, "yun-guest: ready\n");
    protobuf_c_message_free_unpacked(m, NULL);

    /* List. */
    Yun__AgentListRequest lq = YUN__AGENT_LIST_REQUEST__INIT;
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_LIST, &lq.base,
                          &yun__agent_list_reply__descriptor, &m, msg, sizeof msg), 0);
    Yun__AgentListReply *ly = (Yun__AgentListReply *)m;
    assert_int_equal(ly->n_instances, 1);
    assert_string_equal(ly->instances[0]->instance_id, s.id);
    assert_string_equal(ly->instances[0]->power_state, "paused");
    assert_int_equal(ly->n_unknown_domains, 0);
    protobuf_c_message_free_unpacked(m, NULL);

    /* Destroy: accepted, "deleted" follows; again: unknown. */
    Yun__AgentInstanceRef rq = YUN__AGENT_INSTANCE_REF__INIT;
    rq.instance_id = s.id;
    from = sched.n_seen;
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_DESTROY, &rq.base, &yun__agent_ack__descriptor,
                          &m, msg, sizeof msg), 0);
    assert_true(((Yun__AgentAck *)m)->state->known);
    protobuf_c_message_free_unpacked(m, NULL);
    assert_true(FIX_RUN_UNTIL(&g_f, FIX_DEADLINE_MS,
                              seen_find(from, YUN__OP__OP_INSTANCE_EVENT, s.id, "deleted")));
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_DESTROY, &rq.base, &yun__agent_ack__descriptor,
                          &m, msg, sizeof msg), 0);
    ack = (Yun__AgentAck *)m;
    assert_false(ack->state->known);
    assert_false(ack->state->has_domain);
    protobuf_c_message_free_unpacked(m, NULL);
    caller_close(&cl);
}

static void
test_who_may_command(void **state)
{
    struct caller cl;
    ProtobufCMessage *m = NULL;
    char msg[512];
    Yun__AgentListRequest lq = YUN__AGENT_LIST_REQUEST__INIT;

    /* Sealed with the agent's key but from another sender: refused. */
    caller_open(&cl, "intruder", AGENT, 1, NULL);
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_LIST, &lq.base,
                          &yun__agent_list_reply__descriptor, &m, msg, sizeof msg),
                     YUN_E_DENIED);
    assert_non_null(strstr(msg, "Only the scheduler"));
    caller_close(&cl);
    /* ... or claiming to be the agent itself: the bus refuses it. */
    caller_open(&cl, AGENT, AGENT, 1, NULL);
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_LIST, &lq.base,
                          &yun__agent_list_reply__descriptor, &m, msg, sizeof msg), YUN_E_SEAL);
    caller_close(&cl);
    /* Another agent's key: unknown here. */
    caller_open(&cl, "scheduler", "hostb", 1, NULL);
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_LIST, &lq.base,
                          &yun__agent_list_reply__descriptor, &m, msg, sizeof msg),
                     YUN_E_UNKNOWN_PEER);
    caller_close(&cl);
    /* Our id at another epoch (a revoked key): unknown. */
    caller_open(&cl, "scheduler", AGENT, 2, NULL);
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_LIST, &lq.base,
                          &yun__agent_list_reply__descriptor, &m, msg, sizeof msg),
                     YUN_E_UNKNOWN_PEER);
    caller_close(&cl);
    /* Our id and epoch with a wrong key: the seal does not open. */
    struct yun_key wrong;
    memset(&wrong, 0x42, sizeof wrong);
    caller_open(&cl, "scheduler", AGENT, 1, &wrong);
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_LIST, &lq.base,
                          &yun__agent_list_reply__descriptor, &m, msg, sizeof msg), YUN_E_SEAL);
    caller_close(&cl);

    /* The scheduler itself, with requests the table refuses. */
    caller_open(&cl, "scheduler", AGENT, 1, NULL);
    Yun__PingRequest pq = YUN__PING_REQUEST__INIT;
    assert_int_equal(call(&cl, YUN__OP__OP_PING, &pq.base, &yun__ping_reply__descriptor, &m,
                          msg, sizeof msg), YUN_E_BADOP);
    uint8_t junk[] = { 0x0a, 0xff, 0xff, 0x01 };
    uint8_t *body = NULL;
    size_t body_size;
    assert_int_equal(call_raw(&cl, YUN__OP__OP_AGENT_SPAWN, junk, sizeof junk, 5000, &body,
                              &body_size), 0);
    assert_int_equal(yun_rpc_unpack_reply(body, body_size, &yun__agent_ack__descriptor, &m,
                                          NULL), YUN_E_DECODE);
    free(body);
    struct fix_spawn s;
    fix_spawn_init(&g_f, &s, false);
    s.q.image_id = (char *)"not-an-id";
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_SPAWN, &s.q.base, &yun__agent_ack__descriptor,
                          &m, msg, sizeof msg), YUN_E_INVALID);
    assert_non_null(strstr(msg, "image"));
    caller_close(&cl);
}

/* An event the scheduler cannot take yet (it does not know the host) is
 * sent again; the order holds. */
static void
test_event_retry(void **state)
{
    struct caller cl;
    caller_open(&cl, "scheduler", AGENT, 1, NULL);
    struct fix_spawn s;
    fix_spawn_init(&g_f, &s, false);
    ProtobufCMessage *m = NULL;
    char msg[512];
    size_t from = sched.n_seen;
    sched.nohost_events = 2;
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_SPAWN, &s.q.base, &yun__agent_ack__descriptor,
                          &m, msg, sizeof msg), 0);
    protobuf_c_message_free_unpacked(m, NULL);
    Yun__AgentInstanceRef rq = YUN__AGENT_INSTANCE_REF__INIT;
    rq.instance_id = s.id;
    assert_true(FIX_RUN_UNTIL(&g_f, FIX_DEADLINE_MS,
                              seen_find(from, YUN__OP__OP_INSTANCE_EVENT, s.id, "spawned")));
    assert_int_equal(call(&cl, YUN__OP__OP_AGENT_DESTROY, &rq.base, &yun__agent_ack__descriptor,
                          &m, msg, sizeof msg), 0);
    protobuf_c_message_free_unpacked(m, NULL);
    assert_true(FIX_RUN_UNTIL(&g_f, FIX_DEADLINE_MS,
                              seen_find(from, YUN__OP__OP_INSTANCE_EVENT, s.id, "deleted")));
    /* "spawned" three times (two refused), then "deleted", in that order. */
    size_t spawned = 0;
    bool deleted_after = false;
    for (size_t i = from; i < sched.n_seen; i++) {
        if (strcmp(sched.seen[i].instance_id, s.id) != 0)
            continue;
        if (strcmp(sched.seen[i].event, "spawned") == 0) {
            assert_false(deleted_after);
            spawned++;
        } else if (strcmp(sched.seen[i].event, "deleted") == 0) {
            deleted_after = true;
        }
    }
    assert_int_equal(spawned, 3);
    assert_true(deleted_after);
    caller_close(&cl);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_first),
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_who_may_command),
        cmocka_unit_test(test_event_retry),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
