/* SPDX-License-Identifier: Apache-2.0
 * test-compute.c: unit tests for the compute service (scheduler/flavor.c,
 * instance.c, with placement.c underneath) at the handler layer. Each test
 * builds a struct sched on a fresh state directory, registers hosts as
 * their agents would, uploads a tiny raw image, and calls the handlers
 * directly as callers of different projects. The agents are faked: a hook
 * (sched_agent_set_hook) captures every scheduler -> agent request, the
 * test answers them (accept, refuse, time out) and plays the agents'
 * events and syncs through the real handlers. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "cleanup.h"
#include "compute.h"
#include "network.h"
#include "err.h"
#include "loop.h"
#include "placement.h"
#include "rpc.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "compute.pb-c.h"
#include "host.pb-c.h"
#include "identity.pb-c.h"
#include "image.pb-c.h"
#include "network.pb-c.h"
#include "yun.pb-c.h"

#define MAX_CAPTURED 4096

struct captured {
    struct sched_agent_request *r;   /* NULL once finished */
    char host[64];
    Yun__Op op;
    ProtobufCMessage *msg;           /* the request, decoded */
};

struct fixture {
    char dir[1024];
    struct sched s;
    unsigned seq;
    struct captured cap[MAX_CAPTURED];
    size_t n_cap;
    char host_a[40], host_b[40];
    char image[40];
    /* The last deferred reply (console). */
    uint8_t *deferred;
    size_t deferred_size;
    uint64_t deferred_handle;
};

struct who {
    const char *user;
    const char *project;
    bool admin;
    int kind;
};

static const struct who P1 = { "u1", "p1", false, YUN__PEER_RECORD__KIND__KIND_OPERATOR };
static const struct who P2 = { "u2", "p2", false, YUN__PEER_RECORD__KIND__KIND_OPERATOR };
static const struct who ADMIN = { "root", "admin", true, YUN__PEER_RECORD__KIND__KIND_OPERATOR };
static const struct who AGENT_A = { "hosta", "", false, YUN__PEER_RECORD__KIND__KIND_AGENT };
static const struct who AGENT_B = { "hostb", "", false, YUN__PEER_RECORD__KIND__KIND_AGENT };

typedef int (*handler_fn)(struct sched_call *call, const ProtobufCMessage *req);

static void
free_msg(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

static void
assert_contains(const char *haystack, const char *needle)
{
    if (!haystack || !strstr(haystack, needle))
        fail_msg("'%s' does not contain '%s'", haystack ? haystack : "(null)", needle);
}

/* --- calling handlers ---------------------------------------------------------- */

static int
run(struct fixture *fx, const struct who *w, handler_fn h, const void *req,
    const ProtobufCMessageDescriptor *rd, void *ret, char **ret_msg)
{
    char reqid[32];
    snprintf(reqid, sizeof reqid, "req-%06u", ++fx->seq);
    struct yun_bus_peer peer = {
        .sender = w->user, .key_id = w->user, .request_id = reqid, .role = w->kind,
    };
    struct sched_call call = {
        .s = &fx->s, .peer = &peer, .peer_kind = w->kind, .req = reqid, .user = w->user,
        .project = w->project, .is_admin = w->admin,
    };
    int r = h(&call, req);
    if (r < 0 && call.error == 0)
        call.error = r;
    if (r >= 0)
        assert_int_equal(call.error, 0);
    if (ret) {
        *(ProtobufCMessage **)ret = NULL;
        if (call.error == 0 && !call.deferred && call.payload) {
            *(ProtobufCMessage **)ret =
                protobuf_c_message_unpack(rd, NULL, call.payload_size, call.payload);
            assert_non_null(*(ProtobufCMessage **)ret);
        }
    }
    if (ret_msg)
        *ret_msg = call.error ? TAKE_PTR(call.error_message) : NULL;
    free(call.error_message);
    free(call.payload);
    return call.error;
}

/* --- the fake agents ------------------------------------------------------------ */

static const ProtobufCMessageDescriptor *
request_desc(Yun__Op op)
{
    switch (op) {
    case YUN__OP__OP_AGENT_SPAWN:
        return &yun__agent_spawn_request__descriptor;
    case YUN__OP__OP_AGENT_DESTROY:
        return &yun__agent_instance_ref__descriptor;
    case YUN__OP__OP_AGENT_ACTION:
        return &yun__agent_action_request__descriptor;
    case YUN__OP__OP_AGENT_CONSOLE:
        return &yun__agent_console_request__descriptor;
    case YUN__OP__OP_AGENT_NETWORK_STATE:
        return &yun__host_network_state__descriptor;
    case YUN__OP__OP_AGENT_SNAPSHOT:
        return &yun__agent_snapshot_request__descriptor;
    default:
        return &yun__agent_list_request__descriptor;
    }
}

static int
hook(struct sched *s, struct sched_agent_request *r, const char *host_id, Yun__Op op,
     const uint8_t *payload, size_t size, void *data)
{
    struct fixture *fx = data;
    assert_true(fx->n_cap < MAX_CAPTURED);
    struct captured *c = &fx->cap[fx->n_cap++];
    c->r = r;
    snprintf(c->host, sizeof c->host, "%s", host_id);
    c->op = op;
    c->msg = protobuf_c_message_unpack(request_desc(op), NULL, size, payload);
    assert_non_null(c->msg);
    return 0;
}

static const char *
captured_instance(const struct captured *c)
{
    switch (c->op) {
    case YUN__OP__OP_AGENT_SPAWN:
        return ((Yun__AgentSpawnRequest *)c->msg)->instance->id;
    case YUN__OP__OP_AGENT_DESTROY:
        return ((Yun__AgentInstanceRef *)c->msg)->instance_id;
    case YUN__OP__OP_AGENT_ACTION:
        return ((Yun__AgentActionRequest *)c->msg)->instance_id;
    case YUN__OP__OP_AGENT_CONSOLE:
        return ((Yun__AgentConsoleRequest *)c->msg)->instance_id;
    case YUN__OP__OP_AGENT_SNAPSHOT:
        return ((Yun__AgentSnapshotRequest *)c->msg)->instance_id;
    default:
        return "";
    }
}

/* The oldest pending request of 'op' about 'id' (NULL: any instance). */
static struct captured *
pending(struct fixture *fx, Yun__Op op, const char *id)
{
    for (size_t k = 0; k < fx->n_cap; k++) {
        struct captured *c = &fx->cap[k];
        if (c->r && c->op == op && (!id || strcmp(captured_instance(c), id) == 0))
            return c;
    }
    return NULL;
}

static size_t
count_pending(struct fixture *fx, Yun__Op op)
{
    size_t n = 0;
    for (size_t k = 0; k < fx->n_cap; k++)
        n += fx->cap[k].r && fx->cap[k].op == op;
    return n;
}

/* Answers 'c' as its agent would: 'error' 0 with an AgentAck. */
static void
answer(struct fixture *fx, struct captured *c, int error, const char *msg)
{
    assert_non_null(c);
    assert_non_null(c->r);
    Yun__AgentAck ack = YUN__AGENT_ACK__INIT;
    struct sched_agent_request *r = TAKE_PTR(c->r);
    sched_agent_request_finish(&fx->s, r, error, msg, error ? NULL : &ack.base);
}

/* Accepts every pending request of 'op'. */
static size_t
accept_all(struct fixture *fx, Yun__Op op)
{
    size_t n = 0;
    struct captured *c;
    while ((c = pending(fx, op, NULL))) {
        answer(fx, c, 0, NULL);
        n++;
    }
    return n;
}

static const struct who *
agent_of(struct fixture *fx, const char *host_id)
{
    return strcmp(host_id, fx->host_a) == 0 ? &AGENT_A : &AGENT_B;
}

static int
event_as(struct fixture *fx, const struct who *agent, const char *id, const char *ev,
         const char *fault)
{
    Yun__InstanceEvent q = YUN__INSTANCE_EVENT__INIT;
    Yun__InstanceFault f = YUN__INSTANCE_FAULT__INIT;
    q.instance_id = (char *)id;
    q.event = (char *)ev;
    if (fault) {
        f.code = -EIO;
        f.message = (char *)fault;
        q.fault = &f;
    }
    Yun__InstanceEventReply *y = NULL;
    int r = run(fx, agent, sched_instance_event, &q, &yun__instance_event_reply__descriptor, &y,
                NULL);
    free_msg(y);
    return r;
}

/* --- fixture ------------------------------------------------------------------------- */

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

static void
deferred_reply(struct sched *s, uint64_t handle, const uint8_t *reply, size_t size, void *data)
{
    struct fixture *fx = data;
    free(fx->deferred);
    fx->deferred = malloc(size + 1);
    assert_non_null(fx->deferred);
    memcpy(fx->deferred, reply, size);
    fx->deferred_size = size;
    fx->deferred_handle = handle;
}

static char *
register_host(struct fixture *fx, const struct who *agent, uint32_t cpus, uint64_t memory_mb)
{
    Yun__HostInventory inv = YUN__HOST_INVENTORY__INIT;
    inv.cpus = cpus;
    inv.memory_mb = memory_mb;
    inv.disk_gb = 500;
    inv.arch = (char *)"x86_64";
    inv.hypervisor_type = (char *)"TEST";
    inv.virt_type = (char *)"qemu";
    Yun__HostRegisterRequest q = YUN__HOST_REGISTER_REQUEST__INIT;
    q.name = (char *)agent->user;
    q.address = (char *)"ipc:///nonexistent";
    q.inventory = &inv;
    q.heartbeat_interval_s = 5;
    Yun__HostRegisterReply *y = NULL;
    assert_int_equal(run(fx, agent, sched_host_register, &q,
                         &yun__host_register_reply__descriptor, &y, NULL), 0);
    char *id = strdup(y->host_id);
    free_msg(y);
    return id;
}

/* An active raw image of 'size' zero bytes owned by 'w' (public when
 * 'pub'), with 'props' "k=v" pairs (NULL-terminated, may be NULL). */
static char *
make_image(struct fixture *fx, const struct who *w, const char *name, size_t size, bool pub,
           uint32_t min_ram, const char *const *props)
{
    Yun__ImageProperty items[8];
    Yun__ImageProperty *ptrs[8];
    char buf[8][256];
    size_t n = 0;
    for (; props && props[n]; n++) {
        yun__image_property__init(&items[n]);
        snprintf(buf[n], sizeof buf[n], "%s", props[n]);
        char *eq = strchr(buf[n], '=');
        *eq = '\0';
        items[n].key = buf[n];
        items[n].value = eq + 1;
        ptrs[n] = &items[n];
    }
    Yun__ImageCreateRequest q = YUN__IMAGE_CREATE_REQUEST__INIT;
    q.name = (char *)name;
    q.disk_format = (char *)"raw";
    q.visibility = (char *)(pub ? "public" : "private");
    q.min_ram = min_ram;
    q.properties = ptrs;
    q.n_properties = n;
    Yun__ImageReply *y = NULL;
    assert_int_equal(run(fx, pub ? &ADMIN : w, sched_image_create, &q,
                         &yun__image_reply__descriptor, &y, NULL), 0);
    char *id = strdup(y->image->id);
    free_msg(y);
    if (size == 0)
        return id;
    uint8_t *data = calloc(1, size);
    Yun__ImageUploadRequest u = YUN__IMAGE_UPLOAD_REQUEST__INIT;
    u.image = id;
    u.data.data = data;
    u.data.len = size;
    u.last = true;
    Yun__ImageUploadReply *uy = NULL;
    assert_int_equal(run(fx, pub ? &ADMIN : w, sched_image_upload, &u,
                         &yun__image_upload_reply__descriptor, &uy, NULL), 0);
    assert_string_equal(uy->image->status, "active");
    free_msg(uy);
    free(data);
    return id;
}

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *base = getenv("YUN_TEST_DIR");
    if (!base || !*base)
        base = "/tmp";
    if (yun_mkdir_p(base, 0755) < 0)
        return -1;
    snprintf(fx->dir, sizeof fx->dir, "%s/compute.XXXXXX", base);
    if (!mkdtemp(fx->dir))
        return -1;
    char *err = NULL;
    if (yun_cfg_load(sched_config_table, sched_config_table_size, &fx->s.cfg, NULL, true, NULL,
                     NULL, &err) < 0) {
        free(err);
        return -1;
    }
    free(fx->s.cfg.state_dir);
    if (asprintf(&fx->s.cfg.state_dir, "%s/state", fx->dir) < 0)
        return -1;
    fx->s.cfg.image_chunk_size = 1 << 20;
    fx->s.cron = -1;
    fx->s.deferred_reply = deferred_reply;
    fx->s.deferred_reply_data = fx;
    assert_int_equal(sched_store_open(&fx->s), 0);
    assert_int_equal(sched_image_init(&fx->s), 0);
    assert_int_equal(sched_compute_init(&fx->s), 0);
    sched_agent_set_hook(&fx->s, hook, fx);
    size_t created = 0;
    assert_int_equal(sched_flavor_seed(&fx->s, &created), 0);
    assert_int_equal(created, 5);
    /* Two hosts of 8 CPUs and 16 GiB: 15872 MiB each after the
     * reservation, so 7 m1.small (2048 MiB) fit on each. */
    char *a = register_host(fx, &AGENT_A, 8, 16384);
    char *b = register_host(fx, &AGENT_B, 8, 16384);
    snprintf(fx->host_a, sizeof fx->host_a, "%s", a);
    snprintf(fx->host_b, sizeof fx->host_b, "%s", b);
    free(a);
    free(b);
    char *img = make_image(fx, &ADMIN, "cirros", 65536, true, 0, NULL);
    snprintf(fx->image, sizeof fx->image, "%s", img);
    free(img);
    *state = fx;
    return 0;
}

static void
drop_captured(struct fixture *fx)
{
    for (size_t k = 0; k < fx->n_cap; k++)
        free_msg(fx->cap[k].msg);
    fx->n_cap = 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    sched_compute_done(&fx->s);
    drop_captured(fx);
    sched_image_done(&fx->s);
    fx->s.store = yun_store_close(fx->s.store);
    yun_cfg_done(sched_config_table, sched_config_table_size, &fx->s.cfg);
    free(fx->deferred);
    int r = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

/* --- helpers on servers ------------------------------------------------------------- */

static size_t
db_count(struct fixture *fx, const char *db)
{
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, false, &txn), 0);
    size_t n = 0;
    assert_int_equal(yun_txn_count(txn, db, &n), 0);
    yun_txn_abort(txn);
    return n;
}

struct counts {
    size_t instances, names, hosts, claims, usage, groups, flavors;
};

static struct counts
counts_of(struct fixture *fx)
{
    return (struct counts){
        db_count(fx, "instances"), db_count(fx, "instance_names"),
        db_count(fx, "instance_hosts"), db_count(fx, "claims"), db_count(fx, "host_usage"),
        db_count(fx, "server_groups"), db_count(fx, "flavors"),
    };
}

static void
assert_counts_equal(struct counts a, struct counts b)
{
    assert_int_equal(a.instances, b.instances);
    assert_int_equal(a.names, b.names);
    assert_int_equal(a.hosts, b.hosts);
    assert_int_equal(a.claims, b.claims);
    assert_int_equal(a.usage, b.usage);
    assert_int_equal(a.groups, b.groups);
    assert_int_equal(a.flavors, b.flavors);
}

struct create_opts {
    const char *image;
    const char *flavor;
    uint32_t min, max;
    const char *group;
    size_t user_data;
    const char *network;
    const char *key_name;
};

static int
create_ex(struct fixture *fx, const struct who *w, const char *name,
          const struct create_opts *o, Yun__ServerCreateReply **ret, char **ret_msg)
{
    Yun__ServerCreateRequest q = YUN__SERVER_CREATE_REQUEST__INIT;
    q.name = (char *)name;
    q.image = (char *)(o && o->image ? o->image : fx->image);
    q.flavor = (char *)(o && o->flavor ? o->flavor : "m1.small");
    q.min_count = o ? o->min : 0;
    q.max_count = o ? o->max : 0;
    q.server_group = (char *)(o && o->group ? o->group : "");
    char *nets[] = { (char *)(o && o->network ? o->network : "") };
    if (o && o->network) {
        q.networks = nets;
        q.n_networks = 1;
    }
    q.key_name = (char *)(o && o->key_name ? o->key_name : "");
    uint8_t *ud = NULL;
    if (o && o->user_data) {
        ud = calloc(1, o->user_data);
        q.user_data.data = ud;
        q.user_data.len = o->user_data;
    }
    Yun__ServerCreateReply *y = NULL;
    int r = run(fx, w, sched_server_create, &q, &yun__server_create_reply__descriptor, &y,
                ret_msg);
    free(ud);
    if (ret)
        *ret = y;
    else
        free_msg(y);
    return r;
}

/* One server of 'w', accepted by its agent: returns its id. */
static char *
create_one(struct fixture *fx, const struct who *w, const char *name)
{
    Yun__ServerCreateReply *y = NULL;
    assert_int_equal(create_ex(fx, w, name, NULL, &y, NULL), 0);
    assert_int_equal(y->n_servers, 1);
    char *id = strdup(y->servers[0]->id);
    free_msg(y);
    return id;
}

static Yun__InstanceRecord *
show(struct fixture *fx, const struct who *w, const char *ref, int expect)
{
    Yun__ServerRef q = YUN__SERVER_REF__INIT;
    q.server = (char *)ref;
    Yun__ServerReply *y = NULL;
    int r = run(fx, w, sched_server_show, &q, &yun__server_reply__descriptor, &y, NULL);
    assert_int_equal(r, expect);
    if (r < 0)
        return NULL;
    Yun__InstanceRecord *i = y->server;
    y->server = NULL;
    free_msg(y);
    return i;
}

static void
assert_state(struct fixture *fx, const char *id, const char *status, const char *task)
{
    Yun__InstanceRecord *i = show(fx, &ADMIN, id, 0);
    if (strcmp(i->status, status) != 0 || strcmp(i->task_state, task) != 0)
        fail_msg("server %s is %s/%s, not %s/%s", id, i->status, i->task_state, status, task);
    free_msg(i);
}

/* Creates a server and brings it to ACTIVE through its agent. */
static char *
create_active(struct fixture *fx, const struct who *w, const char *name)
{
    char *id = create_one(fx, w, name);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    assert_non_null(c);
    const struct who *agent = agent_of(fx, c->host);
    answer(fx, c, 0, NULL);
    assert_state(fx, id, "BUILD", "spawning");
    assert_int_equal(event_as(fx, agent, id, "spawned", NULL), 0);
    assert_state(fx, id, "ACTIVE", "");
    return id;
}

static int
action(struct fixture *fx, const struct who *w, const char *id, const char *act, bool hard,
       char **ret_msg)
{
    Yun__ServerActionRequest q = YUN__SERVER_ACTION_REQUEST__INIT;
    q.server = (char *)id;
    q.action = (char *)act;
    q.hard = hard;
    Yun__ServerReply *y = NULL;
    int r = run(fx, w, sched_server_action, &q, &yun__server_reply__descriptor, &y, ret_msg);
    free_msg(y);
    return r;
}

static int
delete_server(struct fixture *fx, const struct who *w, const char *id)
{
    Yun__ServerRef q = YUN__SERVER_REF__INIT;
    q.server = (char *)id;
    Yun__ServerReply *y = NULL;
    int r = run(fx, w, sched_server_delete, &q, &yun__server_reply__descriptor, &y, NULL);
    free_msg(y);
    return r;
}

static Yun__ServerListReply *
list(struct fixture *fx, const struct who *w, const Yun__ServerListRequest *q)
{
    Yun__ServerListRequest dflt = YUN__SERVER_LIST_REQUEST__INIT;
    Yun__ServerListReply *y = NULL;
    assert_int_equal(run(fx, w, sched_server_list, q ? q : &dflt,
                         &yun__server_list_reply__descriptor, &y, NULL), 0);
    return y;
}

static const char *
host_of(struct fixture *fx, const char *id, char *buf, size_t size)
{
    Yun__InstanceRecord *i = show(fx, &ADMIN, id, 0);
    snprintf(buf, size, "%s", i->host_id);
    free_msg(i);
    return buf;
}

/* --- flavors -------------------------------------------------------------------------- */

static int
flavor_create(struct fixture *fx, const struct who *w, const char *name, uint32_t vcpus,
              uint32_t ram, uint32_t disk, bool private_, const char *project, char **ret_msg)
{
    Yun__FlavorCreateRequest q = YUN__FLAVOR_CREATE_REQUEST__INIT;
    char *projects[] = { (char *)project };
    q.name = (char *)name;
    q.vcpus = vcpus;
    q.ram_mb = ram;
    q.disk_gb = disk;
    q.is_private = private_;
    if (project) {
        q.projects = projects;
        q.n_projects = 1;
    }
    Yun__FlavorReply *y = NULL;
    int r = run(fx, w, sched_flavor_create, &q, &yun__flavor_reply__descriptor, &y, ret_msg);
    free_msg(y);
    return r;
}

/* --- networks ------------------------------------------------------------------------- */

static size_t
latest_state(struct fixture *fx, const char *host, Yun__HostNetworkState **ret)
{
    size_t n = 0;
    *ret = NULL;
    for (size_t k = 0; k < fx->n_cap; k++) {
        struct captured *c = &fx->cap[k];
        if (c->op != YUN__OP__OP_AGENT_NETWORK_STATE || strcmp(c->host, host) != 0)
            continue;
        n++;
        *ret = (Yun__HostNetworkState *)c->msg;
        if (c->r) {
            Yun__AgentNetworkStateReply y = YUN__AGENT_NETWORK_STATE_REPLY__INIT;
            sched_agent_request_finish(&fx->s, TAKE_PTR(c->r), 0, NULL, &y.base);
        }
    }
    return n;
}

static void
put_keypair(struct fixture *fx, const char *user, const char *name, const char *pub)
{
    Yun__KeypairRecord k = YUN__KEYPAIR_RECORD__INIT;
    k.user_id = (char *)user;
    k.name = (char *)name;
    k.type = (char *)"ssh-ed25519";
    k.public_key = (char *)pub;
    uint8_t buf[512];
    size_t size = yun__keypair_record__pack(&k, buf);
    char key[128];
    int klen = snprintf(key, sizeof key, "%s%c%s", user, 0, name);
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    assert_int_equal(yun_txn_put(txn, "keypairs", key, (size_t)klen, buf, size), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
}

/* A server on a network gets a port bound to its host, the spawn carries
 * the host's state (its port, the DHCP port, the metadata with its key)
 * and the ports in NIC order, show lists its address; deleting it
 * releases the ports and tells the host. Bad networks change nothing. */
static void
test_server_networks(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkCreateRequest nq = YUN__NETWORK_CREATE_REQUEST__INIT;
    nq.name = (char *)"net1";
    Yun__NetworkReply *ny = NULL;
    assert_int_equal(run(fx, &P1, sched_network_create, &nq, &yun__network_reply__descriptor,
                         &ny, NULL), 0);
    char net_id[64];
    snprintf(net_id, sizeof net_id, "%s", ny->network->id);
    free_msg(ny);
    Yun__SubnetCreateRequest sq = YUN__SUBNET_CREATE_REQUEST__INIT;
    sq.name = (char *)"sub1";
    sq.network = (char *)"net1";
    sq.cidr = (char *)"10.20.0.0/24";
    Yun__SubnetReply *sy = NULL;
    assert_int_equal(run(fx, &P1, sched_subnet_create, &sq, &yun__subnet_reply__descriptor,
                         &sy, NULL), 0);
    free_msg(sy);
    put_keypair(fx, P1.user, "demo", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoKey u1@demo");

    /* Refused: P2 cannot use P1's network; an unknown one; a key P1 lacks. */
    struct counts before = counts_of(fx);
    size_t ports_before = db_count(fx, "ports");
    struct create_opts bad = { .network = "net1" };
    assert_int_not_equal(create_ex(fx, &P2, "x", &bad, NULL, NULL), 0);
    bad.network = "nonet";
    assert_int_not_equal(create_ex(fx, &P1, "x", &bad, NULL, NULL), 0);
    bad.network = "net1";
    bad.key_name = "nokey";
    assert_int_equal(create_ex(fx, &P1, "x", &bad, NULL, NULL), -ENOENT);
    assert_counts_equal(before, counts_of(fx));
    assert_int_equal(db_count(fx, "ports"), ports_before);

    struct create_opts o = { .network = "net1", .key_name = "demo" };
    Yun__ServerCreateReply *cy = NULL;
    assert_int_equal(create_ex(fx, &P1, "web", &o, &cy, NULL), 0);
    char id[64];
    snprintf(id, sizeof id, "%s", cy->servers[0]->id);
    free_msg(cy);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    assert_non_null(c);
    char host[64];
    snprintf(host, sizeof host, "%s", c->host);
    const Yun__AgentSpawnRequest *sp = (const Yun__AgentSpawnRequest *)c->msg;
    assert_int_equal(sp->n_ports, 1);
    assert_string_equal(sp->ports[0]->network_id, net_id);
    assert_string_equal(sp->ports[0]->host_id, host);
    assert_int_equal(strncmp(sp->ports[0]->fixed_ips[0]->ip_address, "10.20.0.", 8), 0);
    const Yun__HostNetworkState *st = sp->network;
    assert_non_null(st);
    assert_string_equal(st->host_id, host);
    assert_int_equal(st->n_networks, 1);
    size_t dhcp = 0, inst = 0;
    for (size_t k = 0; k < st->n_ports; k++) {
        dhcp += strcmp(st->ports[k]->device_owner, "network:dhcp") == 0;
        inst += strcmp(st->ports[k]->device_id, id) == 0;
    }
    assert_int_equal(dhcp, 1);
    assert_int_equal(inst, 1);
    assert_int_equal(st->n_metadata, 1);
    assert_string_equal(st->metadata[0]->instance_id, id);
    assert_string_equal(st->metadata[0]->hostname, "web");
    assert_int_equal(st->metadata[0]->n_public_keys, 1);
    assert_string_equal(st->metadata[0]->public_keys[0]->name, "demo");
    assert_non_null(strstr(st->metadata[0]->public_keys[0]->public_key, "DemoKey"));
    /* The key is the instance's, not shown back. */
    char mac[32], ip[32];
    snprintf(mac, sizeof mac, "%s", sp->ports[0]->mac_address);
    snprintf(ip, sizeof ip, "%s", sp->ports[0]->fixed_ips[0]->ip_address);
    answer(fx, c, 0, NULL);
    assert_int_equal(event_as(fx, agent_of(fx, host), id, "spawned", NULL), 0);
    /* The agent accepted the spawn once its taps were made: the port is ACTIVE. */
    struct yun_txn *txn = NULL;
    Yun__PortRecord **pp = NULL;
    size_t np = 0;
    assert_int_equal(yun_txn_begin(fx->s.store, false, &txn), 0);
    assert_int_equal(ports_of_instance(&fx->s, txn, id, &pp, &np), 0);
    yun_txn_abort(txn);
    assert_int_equal(np, 1);
    assert_string_equal(pp[0]->status, "ACTIVE");
    free_msg(pp[0]);
    free(pp);

    Yun__InstanceRecord *i = show(fx, &P1, id, 0);
    assert_int_equal(i->n_addresses, 1);
    assert_string_equal(i->addresses[0]->network_name, "net1");
    assert_string_equal(i->addresses[0]->ip_address, ip);
    assert_string_equal(i->addresses[0]->mac_address, mac);
    assert_string_equal(i->key_public, "");
    free_msg(i);

    /* Delete: the ports go (the host's DHCP port with the last one), and
     * the host is sent a state without them. */
    assert_int_equal(delete_server(fx, &P1, id), 0);
    c = pending(fx, YUN__OP__OP_AGENT_DESTROY, id);
    assert_non_null(c);
    answer(fx, c, 0, NULL);
    assert_int_equal(event_as(fx, agent_of(fx, host), id, "deleted", NULL), 0);
    assert_int_equal(db_count(fx, "ports"), ports_before);
    Yun__HostNetworkState *last = NULL;
    assert_true(latest_state(fx, host, &last) >= 1);
    assert_int_equal(last->n_ports, 0);
    assert_int_equal(last->n_metadata, 0);
}

/* The hostname the spawn of 'id' carries for it, into 'out'. The
 * spawn is answered. */
static void
spawned_hostname(struct fixture *fx, const char *id, char out[64])
{
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    assert_non_null(c);
    const Yun__HostNetworkState *st = ((const Yun__AgentSpawnRequest *)c->msg)->network;
    assert_non_null(st);
    out[0] = '\0';
    for (size_t k = 0; k < st->n_metadata; k++)
        if (strcmp(st->metadata[k]->instance_id, id) == 0)
            snprintf(out, 64, "%s", st->metadata[k]->hostname);
    assert_string_not_equal(out, "");
    answer(fx, c, 0, NULL);
}

/* The hostname of instance 'id' in a state built now for its host. */
static void
state_hostname(struct fixture *fx, const char *id, char out[64])
{
    struct yun_txn *txn = NULL;
    Yun__PortRecord **pp = NULL;
    size_t np = 0;
    assert_int_equal(yun_txn_begin(fx->s.store, false, &txn), 0);
    assert_int_equal(ports_of_instance(&fx->s, txn, id, &pp, &np), 0);
    assert_int_equal(np, 1);
    Yun__HostNetworkState *st = NULL;
    assert_int_equal(sched_network_host_state(&fx->s, txn, pp[0]->host_id, &st), 0);
    yun_txn_abort(txn);
    out[0] = '\0';
    for (size_t k = 0; k < st->n_metadata; k++)
        if (strcmp(st->metadata[k]->instance_id, id) == 0)
            snprintf(out, 64, "%s", st->metadata[k]->hostname);
    free_msg(st);
    free_msg(pp[0]);
    free(pp);
}

/* Servers of one name on one network get distinct hostnames (dnsmasq
 * would give the name to one of them at random): the first created keeps
 * it, the others get "-" and the first 8 characters of their id, a state
 * built again says the same, and the names stay when the first goes. */
static void
test_server_hostnames_unique(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkCreateRequest nq = YUN__NETWORK_CREATE_REQUEST__INIT;
    nq.name = (char *)"net1";
    Yun__NetworkReply *ny = NULL;
    assert_int_equal(run(fx, &P1, sched_network_create, &nq, &yun__network_reply__descriptor,
                         &ny, NULL), 0);
    free_msg(ny);
    Yun__SubnetCreateRequest sq = YUN__SUBNET_CREATE_REQUEST__INIT;
    sq.network = (char *)"net1";
    sq.cidr = (char *)"10.20.0.0/24";
    Yun__SubnetReply *sy = NULL;
    assert_int_equal(run(fx, &P1, sched_subnet_create, &sq, &yun__subnet_reply__descriptor,
                         &sy, NULL), 0);
    free_msg(sy);

    struct create_opts o = { .network = "net1" };
    char ids[3][64], names[3][64], want[64];
    static const char *const server_names[] = { "web", "web", "Web" };
    for (size_t k = 0; k < 3; k++) {
        Yun__ServerCreateReply *cy = NULL;
        assert_int_equal(create_ex(fx, &P1, server_names[k], &o, &cy, NULL), 0);
        snprintf(ids[k], sizeof ids[k], "%s", cy->servers[0]->id);
        free_msg(cy);
        spawned_hostname(fx, ids[k], names[k]);
    }
    assert_string_equal(names[0], "web");
    snprintf(want, sizeof want, "web-%.8s", ids[1]);
    assert_string_equal(names[1], want);
    snprintf(want, sizeof want, "web-%.8s", ids[2]);
    assert_string_equal(names[2], want);
    /* Built again, with all three there: the same names. */
    for (size_t k = 0; k < 3; k++) {
        char again[64];
        state_hostname(fx, ids[k], again);
        assert_string_equal(again, names[k]);
    }

    /* The first goes: the others keep their names (a running guest's
     * name never changes), and "web" is free for the next one. */
    char host[64];
    host_of(fx, ids[0], host, sizeof host);
    assert_int_equal(delete_server(fx, &P1, ids[0]), 0);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_DESTROY, ids[0]);
    assert_non_null(c);
    answer(fx, c, 0, NULL);
    assert_int_equal(event_as(fx, agent_of(fx, host), ids[0], "deleted", NULL), 0);
    for (size_t k = 1; k < 3; k++) {
        char again[64];
        state_hostname(fx, ids[k], again);
        assert_string_equal(again, names[k]);
    }
    Yun__ServerCreateReply *cy = NULL;
    assert_int_equal(create_ex(fx, &P1, "web", &o, &cy, NULL), 0);
    char fourth[64];
    spawned_hostname(fx, cy->servers[0]->id, fourth);
    free_msg(cy);
    assert_string_equal(fourth, "web");
}

static void
test_flavors(void **state)
{
    struct fixture *fx = *state;
    size_t created = 99;
    assert_int_equal(sched_flavor_seed(&fx->s, &created), 0);
    assert_int_equal(created, 0);

    Yun__FlavorRef ref = YUN__FLAVOR_REF__INIT;
    ref.flavor = (char *)"m1.nano";
    Yun__FlavorReply *fy = NULL;
    assert_int_equal(run(fx, &P1, sched_flavor_show, &ref, &yun__flavor_reply__descriptor, &fy,
                         NULL), 0);
    assert_int_equal(fy->flavor->vcpus, 1);
    assert_int_equal(fy->flavor->ram_mb, 128);
    assert_int_equal(fy->flavor->disk_gb, 1);
    assert_string_equal(fy->flavor->id, "42");
    free_msg(fy);

    /* Bad input changes nothing. */
    struct counts before = counts_of(fx);
    char *msg = NULL;
    assert_int_equal(flavor_create(fx, &ADMIN, "bad\nname", 1, 64, 1, false, NULL, &msg),
                     YUN_E_INVALID);
    assert_contains(msg, "control characters");
    free(msg);
    assert_int_equal(flavor_create(fx, &ADMIN, "novcpu", 0, 64, 1, false, NULL, &msg),
                     YUN_E_INVALID);
    assert_contains(msg, "vcpus");
    free(msg);
    assert_int_equal(flavor_create(fx, &ADMIN, "m1.tiny", 1, 64, 1, false, NULL, &msg),
                     YUN_E_CONFLICT);
    assert_contains(msg, "already exists");
    free(msg);
    assert_int_equal(flavor_create(fx, &ADMIN, "pubshare", 1, 64, 1, false, "p1", &msg),
                     YUN_E_INVALID);
    free(msg);
    assert_counts_equal(before, counts_of(fx));

    /* A private flavor: its project and admins see it; others do not. */
    assert_int_equal(flavor_create(fx, &ADMIN, "secret", 2, 1024, 10, true, "p1", NULL), 0);
    ref.flavor = (char *)"secret";
    assert_int_equal(run(fx, &P1, sched_flavor_show, &ref, &yun__flavor_reply__descriptor, &fy,
                         NULL), 0);
    assert_int_equal(fy->flavor->n_projects, 0); /* only admins see whom it is shared with */
    free_msg(fy);
    assert_int_equal(run(fx, &P2, sched_flavor_show, &ref, &yun__flavor_reply__descriptor, &fy,
                         &msg), -ENOENT);
    assert_contains(msg, "not found");
    free(msg);
    Yun__FlavorListRequest lq = YUN__FLAVOR_LIST_REQUEST__INIT;
    Yun__FlavorListReply *ly = NULL;
    assert_int_equal(run(fx, &P2, sched_flavor_list, &lq, &yun__flavor_list_reply__descriptor,
                         &ly, NULL), 0);
    assert_int_equal(ly->n_flavors, 5);
    assert_string_equal(ly->flavors[0]->name, "m1.nano"); /* smallest first */
    free_msg(ly);
    assert_int_equal(run(fx, &P1, sched_flavor_list, &lq, &yun__flavor_list_reply__descriptor,
                         &ly, NULL), 0);
    assert_int_equal(ly->n_flavors, 6);
    free_msg(ly);

    /* A server keeps its copy of a flavor deleted later. */
    struct create_opts o = { .flavor = "secret" };
    Yun__ServerCreateReply *cy = NULL;
    assert_int_equal(create_ex(fx, &P1, "keeps", &o, &cy, NULL), 0);
    char *id = strdup(cy->servers[0]->id);
    free_msg(cy);
    assert_int_equal(run(fx, &ADMIN, sched_flavor_delete, &ref, &yun__flavor_reply__descriptor,
                         &fy, NULL), 0);
    free_msg(fy);
    assert_int_equal(run(fx, &ADMIN, sched_flavor_show, &ref, &yun__flavor_reply__descriptor,
                         &fy, NULL), -ENOENT);
    Yun__InstanceRecord *i = show(fx, &P1, id, 0);
    assert_string_equal(i->flavor->name, "secret");
    assert_int_equal(i->flavor->ram_mb, 1024);
    free_msg(i);
    free(id);
}

/* --- create -------------------------------------------------------------------------- */

static void
test_create_many(void **state)
{
    struct fixture *fx = *state;
    struct create_opts o = { .min = 10, .max = 10 };
    Yun__ServerCreateReply *y = NULL;
    assert_int_equal(create_ex(fx, &P1, "web", &o, &y, NULL), 0);
    assert_int_equal(y->n_servers, 10);
    assert_true(*y->reservation_id);
    size_t on_a = 0;
    for (size_t k = 0; k < y->n_servers; k++) {
        const Yun__InstanceRecord *i = y->servers[k];
        char want[32];
        snprintf(want, sizeof want, "web-%zu", k + 1);
        assert_string_equal(i->name, want);
        assert_string_equal(i->status, "BUILD");
        assert_string_equal(i->task_state, "scheduling");
        assert_string_equal(i->project, "p1");
        assert_string_equal(i->host_id, ""); /* hosts are for admins' eyes */
        assert_string_equal(i->reservation_id, y->reservation_id);
    }
    free_msg(y);
    struct counts c = counts_of(fx);
    assert_int_equal(c.instances, 10);
    assert_int_equal(c.claims, 10);
    assert_int_equal(c.hosts, 10);
    assert_int_equal(c.usage, 2); /* spread: both hosts used */

    /* Every spawn went to the placed host's agent with what it needs. */
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_SPAWN), 10);
    for (size_t k = 0; k < fx->n_cap; k++) {
        const struct captured *cp = &fx->cap[k];
        const Yun__AgentSpawnRequest *q = (const Yun__AgentSpawnRequest *)cp->msg;
        assert_int_equal(cp->op, YUN__OP__OP_AGENT_SPAWN);
        assert_string_equal(q->instance->host_id, cp->host);
        assert_string_equal(q->image_id, fx->image);
        assert_string_equal(q->image_disk_format, "raw");
        assert_int_equal(strlen(q->image_sha512), 128);
        assert_string_equal(q->kernel_cmdline, "console=ttyS0");
        assert_int_equal(q->instance->flavor->ram_mb, 2048);
        assert_false(q->rebuild);
        on_a += strcmp(cp->host, fx->host_a) == 0;
    }
    assert_int_equal(on_a, 5);
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(fx->s.placement, fx->host_a, &info), 0);
    assert_int_equal(info.used_ram_mb, 5 * 2048);
    assert_int_equal(info.instances, 5);

    /* Accepted -> spawning; the agent's event -> ACTIVE. */
    assert_int_equal(accept_all(fx, YUN__OP__OP_AGENT_SPAWN), 10);
    Yun__ServerListReply *ly = list(fx, &P1, NULL);
    assert_int_equal(ly->n_servers, 10);
    for (size_t k = 0; k < ly->n_servers; k++) {
        assert_string_equal(ly->servers[k]->task_state, "spawning");
        char host[64];
        const char *id = ly->servers[k]->id;
        host_of(fx, id, host, sizeof host);
        assert_int_equal(event_as(fx, agent_of(fx, host), id, "spawned", NULL), 0);
        assert_state(fx, id, "ACTIVE", "");
    }
    free_msg(ly);

    /* Seven fit on each host: 4 more fit, 5 do not. */
    o = (struct create_opts){ .min = 5, .max = 5 };
    struct counts before = counts_of(fx);
    char *msg = NULL;
    assert_int_equal(create_ex(fx, &P1, "more", &o, NULL, &msg), YUN_E_NOVALIDHOST);
    assert_contains(msg, "No valid host");
    free(msg);
    assert_counts_equal(before, counts_of(fx));
    o = (struct create_opts){ .min = 1, .max = 9 };
    assert_int_equal(create_ex(fx, &P1, "fill", &o, &y, NULL), 0);
    assert_int_equal(y->n_servers, 4);
    free_msg(y);
    assert_int_equal(counts_of(fx).claims, 14);
}

static void
test_bad_input_changes_nothing(void **state)
{
    struct fixture *fx = *state;
    const char *const big[] = { "os_command_line=console=ttyS0 quiet", NULL };
    char *needy = make_image(fx, &P1, "needy", 65536, false, 4096, NULL);
    char *queued = make_image(fx, &P1, "queued", 0, false, 0, NULL);
    char *p2img = make_image(fx, &P2, "p2private", 65536, false, 0, NULL);
    char *withcmd = make_image(fx, &P1, "withcmd", 65536, false, 0, big);
    struct counts before = counts_of(fx);
    size_t audit_before = db_count(fx, "audit");
    char *msg = NULL;
    struct create_opts o = { 0 };

    o = (struct create_opts){ .image = "nosuchimage" };
    assert_int_equal(create_ex(fx, &P1, "x", &o, NULL, &msg), YUN_E_NOIMAGE);
    free(msg);
    o = (struct create_opts){ .image = p2img }; /* private to p2 */
    assert_int_equal(create_ex(fx, &P1, "x", &o, NULL, &msg), YUN_E_NOIMAGE);
    free(msg);
    o = (struct create_opts){ .image = queued };
    assert_int_equal(create_ex(fx, &P1, "x", &o, NULL, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "only an active image");
    free(msg);
    o = (struct create_opts){ .flavor = "m9.huge" };
    assert_int_equal(create_ex(fx, &P1, "x", &o, NULL, &msg), -ENOENT);
    assert_contains(msg, "Flavor 'm9.huge' not found");
    free(msg);
    o = (struct create_opts){ .image = needy, .flavor = "m1.small" };
    assert_int_equal(create_ex(fx, &P1, "x", &o, NULL, &msg), YUN_E_INVALID);
    assert_contains(msg, "4096 MiB");
    free(msg);
    assert_int_equal(create_ex(fx, &P1, "tab\there", NULL, NULL, &msg), YUN_E_INVALID);
    assert_contains(msg, "control characters");
    free(msg);
    char longname[300];
    memset(longname, 'n', 256);
    longname[256] = '\0';
    assert_int_equal(create_ex(fx, &P1, longname, NULL, NULL, &msg), YUN_E_INVALID);
    free(msg);
    o = (struct create_opts){ .user_data = 65537 };
    assert_int_equal(create_ex(fx, &P1, "x", &o, NULL, &msg), YUN_E_INVALID);
    assert_contains(msg, "user data");
    free(msg);
    o = (struct create_opts){ .min = 3, .max = 2 };
    assert_int_equal(create_ex(fx, &P1, "x", &o, NULL, &msg), YUN_E_INVALID);
    free(msg);
    o = (struct create_opts){ .min = 15, .max = 15 }; /* 14 fit */
    assert_int_equal(create_ex(fx, &P1, "x", &o, NULL, &msg), YUN_E_NOVALIDHOST);
    free(msg);
    o = (struct create_opts){ .group = "nosuchgroup" };
    assert_int_equal(create_ex(fx, &P1, "x", &o, NULL, &msg), -ENOENT);
    free(msg);
    assert_counts_equal(before, counts_of(fx));
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_SPAWN), 0);
    /* Each failure is audited, and nothing else was written. */
    assert_int_equal(db_count(fx, "audit"), audit_before + 11);

    /* The image's command line goes to the agent. */
    o = (struct create_opts){ .image = withcmd, .flavor = "m1.nano" };
    assert_int_equal(create_ex(fx, &P1, "cmd", &o, NULL, NULL), 0);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, NULL);
    assert_string_equal(((Yun__AgentSpawnRequest *)c->msg)->kernel_cmdline,
                        "console=ttyS0 quiet");
    free(needy);
    free(queued);
    free(p2img);
    free(withcmd);
}

static void
test_kernel_ramdisk(void **state)
{
    struct fixture *fx = *state;
    /* aki/ari images are uploaded like any: zeros inspect as raw. */
    Yun__ImageCreateRequest q = YUN__IMAGE_CREATE_REQUEST__INIT;
    q.name = (char *)"vmlinuz";
    q.disk_format = (char *)"aki";
    q.container_format = (char *)"aki";
    Yun__ImageReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_image_create, &q, &yun__image_reply__descriptor, &y,
                         NULL), 0);
    char kernel[40];
    snprintf(kernel, sizeof kernel, "%s", y->image->id);
    free_msg(y);
    uint8_t data[4096] = { 0 };
    Yun__ImageUploadRequest u = YUN__IMAGE_UPLOAD_REQUEST__INIT;
    u.image = kernel;
    u.data.data = data;
    u.data.len = sizeof data;
    u.last = true;
    Yun__ImageUploadReply *uy = NULL;
    assert_int_equal(run(fx, &P1, sched_image_upload, &u, &yun__image_upload_reply__descriptor,
                         &uy, NULL), 0);
    free_msg(uy);
    char prop[80];
    snprintf(prop, sizeof prop, "kernel_id=%s", kernel);
    const char *const props[] = { prop, NULL };
    char *disk = make_image(fx, &P1, "initrd-boot", 65536, false, 0, props);

    /* The kernel itself cannot be the root disk. */
    char *msg = NULL;
    struct create_opts o = { .image = kernel, .flavor = "m1.nano" };
    assert_int_equal(create_ex(fx, &P1, "k", &o, NULL, &msg), YUN_E_INVALID);
    assert_contains(msg, "kernel_id");
    free(msg);
    o = (struct create_opts){ .image = disk, .flavor = "m1.nano" };
    assert_int_equal(create_ex(fx, &P1, "k", &o, NULL, NULL), 0);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, NULL);
    const Yun__AgentSpawnRequest *s = (const Yun__AgentSpawnRequest *)c->msg;
    assert_string_equal(s->kernel_id, kernel);
    assert_string_equal(s->kernel_disk_format, "aki");
    assert_int_equal(strlen(s->kernel_sha512), 128);
    assert_string_equal(s->ramdisk_id, "");
    free(disk);
}

/* --- spawn failures -------------------------------------------------------------------- */

static void
test_spawn_failed_retries_then_error(void **state)
{
    struct fixture *fx = *state;
    char *id = create_one(fx, &P1, "flaky");
    char first[64], second[64];
    host_of(fx, id, first, sizeof first);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    assert_string_equal(c->host, first);
    answer(fx, c, 0, NULL);

    /* The agent reports a failure: the claim moves to the other host. */
    assert_int_equal(event_as(fx, agent_of(fx, first), id, "spawn_failed", "disk full"), 0);
    host_of(fx, id, second, sizeof second);
    assert_string_not_equal(first, second);
    assert_state(fx, id, "BUILD", "scheduling");
    assert_int_equal(counts_of(fx).claims, 1);
    Yun__InstanceRecord *i = show(fx, &ADMIN, id, 0);
    assert_int_equal(i->attempts, 2);
    assert_int_equal(i->n_tried_hosts, 1);
    assert_string_equal(i->tried_hosts[0], first);
    free_msg(i);
    c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    assert_non_null(c);
    assert_string_equal(c->host, second);

    /* The second host refuses at once; no host is left: ERROR. */
    answer(fx, c, -ENOSPC, "No space left for the overlay.");
    i = show(fx, &P1, id, 0);
    assert_string_equal(i->status, "ERROR");
    assert_string_equal(i->task_state, "");
    assert_non_null(i->fault);
    assert_contains(i->fault->message, "No space left for the overlay.");
    assert_contains(i->fault->message, "No other host");
    assert_int_equal(i->fault->code, -ENOSPC);
    /* The create action ended with the error. */
    assert_true(i->n_actions >= 1);
    assert_string_equal(i->actions[0]->action, "create");
    assert_string_equal(i->actions[0]->result, "ENOSPC");
    free_msg(i);
    assert_int_equal(counts_of(fx).claims, 0);
    assert_int_equal(counts_of(fx).hosts, 0);
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(fx->s.placement, fx->host_a, &info), 0);
    assert_int_equal(info.used_ram_mb, 0);
    assert_int_equal(sched_placement_host_get(fx->s.placement, fx->host_b, &info), 0);
    assert_int_equal(info.used_ram_mb, 0);

    /* Wrong-state actions are refused. */
    char *msg = NULL;
    assert_int_equal(action(fx, &P1, id, "start", false, &msg), YUN_E_CONFLICT);
    free(msg);
    /* Deleting it needs no agent. */
    assert_int_equal(delete_server(fx, &P1, id), 0);
    assert_state(fx, id, "DELETED", "");
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_DESTROY), 0);
    free(id);
}

static void
test_spawn_attempts_limit(void **state)
{
    struct fixture *fx = *state;
    fx->s.cfg.compute_max_attempts = 1;
    char *id = create_one(fx, &P1, "once");
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    char host[64];
    snprintf(host, sizeof host, "%s", c->host);
    answer(fx, c, 0, NULL);
    assert_int_equal(event_as(fx, agent_of(fx, host), id, "spawn_failed", "qemu died"), 0);
    Yun__InstanceRecord *i = show(fx, &P1, id, 0);
    assert_string_equal(i->status, "ERROR");
    assert_contains(i->fault->message, "qemu died");
    assert_contains(i->fault->message, "No attempts left (1 of 1)");
    free_msg(i);
    assert_int_equal(counts_of(fx).claims, 0);
    free(id);
}

static void
test_unreachable_agent(void **state)
{
    struct fixture *fx = *state;
    char *id = create_one(fx, &P1, "lost");
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    char first[64];
    snprintf(first, sizeof first, "%s", c->host);
    answer(fx, c, YUN_E_UNREACHABLE, "The agent did not answer.");
    /* Retried elsewhere, and the silent agent is asked to clean up. */
    c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    assert_non_null(c);
    assert_string_not_equal(c->host, first);
    struct captured *d = pending(fx, YUN__OP__OP_AGENT_DESTROY, id);
    assert_non_null(d);
    assert_string_equal(d->host, first);
    answer(fx, d, 0, NULL);
    answer(fx, c, 0, NULL);
    /* A late event from the first host is not obeyed, and that host is
     * told to destroy its copy. */
    assert_int_equal(event_as(fx, agent_of(fx, first), id, "spawned", NULL), 0);
    assert_state(fx, id, "BUILD", "spawning");
    d = pending(fx, YUN__OP__OP_AGENT_DESTROY, id);
    assert_non_null(d);
    assert_string_equal(d->host, first);
    free(id);
}

static void
test_spawn_timeout_sweep(void **state)
{
    struct fixture *fx = *state;
    char *id = create_one(fx, &P1, "slow");
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    char first[64];
    snprintf(first, sizeof first, "%s", c->host);
    answer(fx, c, 0, NULL);
    /* Not yet. */
    sched_compute_sweep(&fx->s, yun_wall_us() + 10 * 1000000ull);
    assert_state(fx, id, "BUILD", "spawning");
    sched_compute_sweep(&fx->s, yun_wall_us() + 301 * 1000000ull);
    c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    assert_non_null(c);
    assert_string_not_equal(c->host, first);
    assert_non_null(pending(fx, YUN__OP__OP_AGENT_DESTROY, id));
    free(id);
}

/* --- the state machine ---------------------------------------------------------------- */

static void
act_and_event(struct fixture *fx, const char *id, const char *act, bool hard, const char *task,
              const char *ev, const char *status)
{
    assert_int_equal(action(fx, &P1, id, act, hard, NULL), 0);
    Yun__InstanceRecord *i = show(fx, &P1, id, 0);
    assert_string_equal(i->task_state, task);
    free_msg(i);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_ACTION, id);
    assert_non_null(c);
    const Yun__AgentActionRequest *q = (const Yun__AgentActionRequest *)c->msg;
    assert_string_equal(q->action, act);
    assert_int_equal(q->hard, hard);
    const struct who *agent = agent_of(fx, c->host);
    answer(fx, c, 0, NULL);
    assert_int_equal(event_as(fx, agent, id, ev, NULL), 0);
    assert_state(fx, id, status, "");
}

static void
test_actions_and_events(void **state)
{
    struct fixture *fx = *state;
    char *id = create_active(fx, &P1, "vm");
    char host[64];
    host_of(fx, id, host, sizeof host);
    const struct who *agent = agent_of(fx, host);
    char *msg = NULL;

    /* Wrong state: clear messages, nothing changes. */
    assert_int_equal(action(fx, &P1, id, "start", false, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "is ACTIVE");
    assert_contains(msg, "SHUTOFF");
    free(msg);
    assert_int_equal(action(fx, &P1, id, "resume", false, &msg), YUN_E_CONFLICT);
    free(msg);
    assert_int_equal(action(fx, &P1, id, "explode", false, &msg), YUN_E_INVALID);
    free(msg);
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_ACTION), 0);

    act_and_event(fx, id, "stop", false, "powering-off", "stopped", "SHUTOFF");
    act_and_event(fx, id, "start", false, "powering-on", "started", "ACTIVE");
    act_and_event(fx, id, "reboot", false, "rebooting", "rebooted", "ACTIVE");
    act_and_event(fx, id, "reboot", true, "rebooting_hard", "rebooted", "ACTIVE");
    act_and_event(fx, id, "pause", false, "pausing", "paused", "PAUSED");
    act_and_event(fx, id, "unpause", false, "unpausing", "resumed", "ACTIVE");
    act_and_event(fx, id, "suspend", false, "suspending", "suspended", "SUSPENDED");
    act_and_event(fx, id, "resume", false, "resuming", "resumed", "ACTIVE");

    /* A task in progress refuses another action. */
    assert_int_equal(action(fx, &P1, id, "stop", false, NULL), 0);
    assert_int_equal(action(fx, &P1, id, "reboot", false, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "busy");
    free(msg);
    /* The agent refuses the stop: the task ends with a fault, still ACTIVE. */
    answer(fx, pending(fx, YUN__OP__OP_AGENT_ACTION, id), -EIO, "libvirt said no.");
    Yun__InstanceRecord *i = show(fx, &P1, id, 0);
    assert_string_equal(i->status, "ACTIVE");
    assert_string_equal(i->task_state, "");
    assert_contains(i->fault->message, "libvirt said no.");
    free_msg(i);

    /* A guest that powers itself off becomes SHUTOFF; one that starts
     * again (a reboot inside it is filtered by the agent) ACTIVE. */
    assert_int_equal(event_as(fx, agent, id, "stopped", NULL), 0);
    assert_state(fx, id, "SHUTOFF", "");
    assert_int_equal(event_as(fx, agent, id, "started", NULL), 0);
    assert_state(fx, id, "ACTIVE", "");
    assert_int_equal(event_as(fx, agent, id, "crashed", "segfault"), 0);
    i = show(fx, &P1, id, 0);
    assert_string_equal(i->status, "SHUTOFF");
    assert_string_equal(i->power_state, "crashed");
    assert_contains(i->fault->message, "crashed");
    free_msg(i);
    assert_int_equal(event_as(fx, agent, id, "started", NULL), 0);
    /* The other agent cannot move it. */
    const struct who *other = agent == &AGENT_A ? &AGENT_B : &AGENT_A;
    assert_int_equal(event_as(fx, other, id, "stopped", NULL), 0);
    assert_state(fx, id, "ACTIVE", "");
    /* A vanished domain is an ERROR with the fault. */
    assert_int_equal(event_as(fx, agent, id, "vanished", NULL), 0);
    i = show(fx, &P1, id, 0);
    assert_string_equal(i->status, "ERROR");
    assert_contains(i->fault->message, "vanished");
    /* The action log has who, what and the result. */
    assert_true(i->n_actions >= 10);
    bool saw_stop = false;
    for (size_t k = 0; k < i->n_actions; k++)
        if (strcmp(i->actions[k]->action, "stop") == 0 &&
            strcmp(i->actions[k]->result, "ok") == 0) {
            saw_stop = true;
            assert_string_equal(i->actions[k]->user, "u1");
            assert_true(*i->actions[k]->request_id);
            assert_true(i->actions[k]->finish_us >= i->actions[k]->start_us);
        }
    assert_true(saw_stop);
    free_msg(i);
    /* A hard reboot brings an ERROR server back. */
    act_and_event(fx, id, "reboot", true, "rebooting_hard", "started", "ACTIVE");
    i = show(fx, &P1, id, 0);
    assert_null(i->fault);
    free_msg(i);

    /* Rename and metadata change nothing on the host. */
    Yun__ServerActionRequest rq = YUN__SERVER_ACTION_REQUEST__INIT;
    rq.server = id;
    rq.action = (char *)"rename";
    rq.name = (char *)"renamed";
    Yun__ServerReply *ry = NULL;
    assert_int_equal(run(fx, &P1, sched_server_action, &rq, &yun__server_reply__descriptor, &ry,
                         NULL), 0);
    free_msg(ry);
    i = show(fx, &P1, "renamed", 0);
    assert_string_equal(i->id, id);
    free_msg(i);
    assert_null(show(fx, &P1, "vm", -ENOENT));
    Yun__FlavorSpec kv = YUN__FLAVOR_SPEC__INIT;
    kv.key = (char *)"role";
    kv.value = (char *)"web";
    Yun__FlavorSpec *set[] = { &kv };
    Yun__ServerMetadataRequest mq = YUN__SERVER_METADATA_REQUEST__INIT;
    mq.server = id;
    mq.set = set;
    mq.n_set = 1;
    assert_int_equal(run(fx, &P1, sched_server_metadata, &mq, &yun__server_reply__descriptor,
                         &ry, NULL), 0);
    assert_int_equal(ry->server->n_metadata, 1);
    free_msg(ry);
    char *unset[] = { (char *)"role" };
    mq.n_set = 0;
    mq.unset = unset;
    mq.n_unset = 1;
    assert_int_equal(run(fx, &P1, sched_server_metadata, &mq, &yun__server_reply__descriptor,
                         &ry, NULL), 0);
    assert_int_equal(ry->server->n_metadata, 0);
    free_msg(ry);
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_ACTION), 0);
    free(id);
}

static void
test_rebuild(void **state)
{
    struct fixture *fx = *state;
    char *id = create_active(fx, &P1, "rb");
    char host[64];
    host_of(fx, id, host, sizeof host);
    char *other = make_image(fx, &P1, "other", 131072, false, 0, NULL);
    Yun__ServerActionRequest q = YUN__SERVER_ACTION_REQUEST__INIT;
    q.server = id;
    q.action = (char *)"rebuild";
    q.image = other;
    Yun__ServerReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_server_action, &q, &yun__server_reply__descriptor, &y,
                         NULL), 0);
    free_msg(y);
    assert_state(fx, id, "REBUILD", "rebuilding");
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    assert_non_null(c);
    assert_string_equal(c->host, host); /* the same host, the same id */
    const Yun__AgentSpawnRequest *s = (const Yun__AgentSpawnRequest *)c->msg;
    assert_true(s->rebuild);
    assert_string_equal(s->image_id, other);
    answer(fx, c, 0, NULL);
    assert_state(fx, id, "REBUILD", "rebuild_spawning");
    assert_int_equal(event_as(fx, agent_of(fx, host), id, "spawned", NULL), 0);
    Yun__InstanceRecord *i = show(fx, &P1, id, 0);
    assert_string_equal(i->status, "ACTIVE");
    assert_string_equal(i->image_id, other);
    assert_string_equal(i->host_id, "");
    free_msg(i);
    assert_int_equal(counts_of(fx).claims, 1);
    /* A failed rebuild is an ERROR on its host, claim kept. */
    assert_int_equal(run(fx, &P1, sched_server_action, &q, &yun__server_reply__descriptor, &y,
                         NULL), 0);
    free_msg(y);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SPAWN, id), 0, NULL);
    assert_int_equal(event_as(fx, agent_of(fx, host), id, "spawn_failed", "bad disk"), 0);
    i = show(fx, &ADMIN, id, 0);
    assert_string_equal(i->status, "ERROR");
    assert_string_equal(i->host_id, host);
    assert_contains(i->fault->message, "bad disk");
    free_msg(i);
    assert_int_equal(counts_of(fx).claims, 1);
    free(other);
    free(id);
}

/* --- delete ------------------------------------------------------------------------------ */

static void
test_delete_releases_claim(void **state)
{
    struct fixture *fx = *state;
    char *id = create_active(fx, &P1, "gone");
    char host[64];
    host_of(fx, id, host, sizeof host);
    assert_int_equal(counts_of(fx).claims, 1);
    assert_int_equal(delete_server(fx, &P1, id), 0);
    assert_state(fx, id, "ACTIVE", "deleting");
    /* Deleting is accepted again while in progress; other actions not. */
    char *msg = NULL;
    assert_int_equal(action(fx, &P1, id, "stop", false, &msg), YUN_E_CONFLICT);
    free(msg);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_DESTROY, id);
    assert_non_null(c);
    assert_string_equal(c->host, host);
    answer(fx, c, 0, NULL);
    /* Power events wait while deleting. */
    assert_int_equal(event_as(fx, agent_of(fx, host), id, "stopped", NULL), 0);
    assert_state(fx, id, "ACTIVE", "deleting");
    assert_int_equal(event_as(fx, agent_of(fx, host), id, "deleted", NULL), 0);
    assert_state(fx, id, "DELETED", "");
    struct counts cn = counts_of(fx);
    assert_int_equal(cn.claims, 0);
    assert_int_equal(cn.usage, 0);
    assert_int_equal(cn.names, 0);
    assert_int_equal(cn.hosts, 0);
    assert_int_equal(cn.instances, 1); /* the tombstone */
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(fx->s.placement, host, &info), 0);
    assert_int_equal(info.used_ram_mb, 0);
    Yun__ServerListReply *ly = list(fx, &P1, NULL);
    assert_int_equal(ly->n_servers, 0);
    free_msg(ly);
    Yun__ServerListRequest lq = YUN__SERVER_LIST_REQUEST__INIT;
    lq.status = (char *)"deleted";
    ly = list(fx, &P1, &lq);
    assert_int_equal(ly->n_servers, 1);
    free_msg(ly);
    assert_int_equal(delete_server(fx, &P1, id), -ENOENT);
    /* The tombstone goes after the retention. */
    sched_compute_sweep(&fx->s, yun_wall_us() + 86401ull * 1000000);
    assert_int_equal(counts_of(fx).instances, 0);
    free(id);

    /* An unreachable agent: deleted here, its sync cleans up later. */
    id = create_active(fx, &P1, "gone2");
    assert_int_equal(delete_server(fx, &P1, id), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_DESTROY, id), YUN_E_UNREACHABLE, "silence");
    assert_state(fx, id, "DELETED", "");
    assert_int_equal(counts_of(fx).claims, 0);
    free(id);
}

static void
test_delete_host_down(void **state)
{
    struct fixture *fx = *state;
    char *id = create_active(fx, &P1, "orphan");
    char host[64];
    host_of(fx, id, host, sizeof host);
    /* The host misses its heartbeats. */
    fx->s.cfg.host_down_after_missed = 1;
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    ProtobufCMessage *m = NULL;
    assert_int_equal(yun_txn_get_msg(txn, "hosts", host, &yun__host_record__descriptor, &m), 0);
    Yun__HostRecord *h = (Yun__HostRecord *)m;
    h->last_heartbeat_us -= 60 * 1000000ull;
    assert_int_equal(yun_txn_put_msg(txn, "hosts", host, &h->base), 0);
    free_msg(h);
    assert_int_equal(yun_txn_commit(txn), 0);
    sched_host_check_liveness(&fx->s);
    /* Actions need the host; a delete does not. */
    char *msg = NULL;
    assert_int_equal(action(fx, &P1, id, "stop", false, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "down");
    free(msg);
    assert_int_equal(delete_server(fx, &P1, id), 0);
    assert_state(fx, id, "DELETED", "");
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_DESTROY), 0);
    assert_int_equal(counts_of(fx).claims, 0);

    /* The agent comes back and syncs: it is told to delete the server. */
    Yun__AgentInstanceState st = YUN__AGENT_INSTANCE_STATE__INIT;
    st.instance_id = id;
    st.power_state = (char *)"running";
    st.known = true;
    st.has_domain = true;
    Yun__AgentInstanceState *sts[] = { &st };
    Yun__InstanceSyncRequest sq = YUN__INSTANCE_SYNC_REQUEST__INIT;
    sq.host_id = host;
    sq.instances = sts;
    sq.n_instances = 1;
    Yun__InstanceSyncReply *sy = NULL;
    assert_int_equal(run(fx, agent_of(fx, host), sched_instance_sync, &sq,
                         &yun__instance_sync_reply__descriptor, &sy, NULL), 0);
    assert_int_equal(sy->n_delete_, 1);
    assert_string_equal(sy->delete_[0], id);
    free_msg(sy);
    free(id);
}

/* --- visibility --------------------------------------------------------------------------- */

static void
test_other_projects_invisible(void **state)
{
    struct fixture *fx = *state;
    char *id = create_active(fx, &P1, "mine");
    assert_null(show(fx, &P2, id, -ENOENT));
    assert_null(show(fx, &P2, "mine", -ENOENT));
    assert_int_equal(delete_server(fx, &P2, id), -ENOENT);
    assert_int_equal(action(fx, &P2, id, "stop", false, NULL), -ENOENT);
    Yun__ServerListReply *ly = list(fx, &P2, NULL);
    assert_int_equal(ly->n_servers, 0);
    free_msg(ly);
    Yun__ServerListRequest lq = YUN__SERVER_LIST_REQUEST__INIT;
    lq.all_projects = true;
    Yun__ServerListReply *dummy = NULL;
    assert_int_equal(run(fx, &P2, sched_server_list, &lq, &yun__server_list_reply__descriptor,
                         &dummy, NULL), YUN_E_DENIED);
    /* Admins see everything with all_projects, hosts included. */
    ly = list(fx, &ADMIN, &lq);
    assert_int_equal(ly->n_servers, 1);
    assert_true(*ly->servers[0]->host_id);
    free_msg(ly);
    ly = list(fx, &ADMIN, NULL); /* their own project only */
    assert_int_equal(ly->n_servers, 0);
    free_msg(ly);
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_ACTION), 0);
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_DESTROY), 0);
    free(id);
}

static void
test_list_filters_and_pages(void **state)
{
    struct fixture *fx = *state;
    struct create_opts o = { .min = 6, .max = 6, .flavor = "m1.nano" };
    assert_int_equal(create_ex(fx, &P1, "pg", &o, NULL, NULL), 0);
    accept_all(fx, YUN__OP__OP_AGENT_SPAWN);
    Yun__ServerListRequest q = YUN__SERVER_LIST_REQUEST__INIT;
    q.limit = 4;
    Yun__ServerListReply *a = list(fx, &P1, &q);
    assert_int_equal(a->n_servers, 4);
    assert_true(*a->next_marker);
    q.marker = a->next_marker;
    Yun__ServerListReply *b = list(fx, &P1, &q);
    assert_int_equal(b->n_servers, 2);
    assert_string_equal(b->next_marker, "");
    for (size_t k = 0; k < a->n_servers; k++)
        for (size_t j = 0; j < b->n_servers; j++)
            assert_string_not_equal(a->servers[k]->id, b->servers[j]->id);
    free_msg(a);
    free_msg(b);
    Yun__ServerListRequest f = YUN__SERVER_LIST_REQUEST__INIT;
    f.name = (char *)"pg-3";
    a = list(fx, &P1, &f);
    assert_int_equal(a->n_servers, 1);
    assert_int_equal(a->servers[0]->user_data.len, 0);
    assert_int_equal(a->servers[0]->n_actions, 0);
    free_msg(a);
    f = (Yun__ServerListRequest)YUN__SERVER_LIST_REQUEST__INIT;
    f.flavor = (char *)"m1.nano";
    f.status = (char *)"build";
    a = list(fx, &P1, &f);
    assert_int_equal(a->n_servers, 6);
    free_msg(a);
    f.status = (char *)"ACTIVE";
    a = list(fx, &P1, &f);
    assert_int_equal(a->n_servers, 0);
    free_msg(a);
    f.status = (char *)"RUNNING";
    Yun__ServerListReply *bad = NULL;
    assert_int_equal(run(fx, &P1, sched_server_list, &f, &yun__server_list_reply__descriptor,
                         &bad, NULL), YUN_E_INVALID);
    f = (Yun__ServerListRequest)YUN__SERVER_LIST_REQUEST__INIT;
    f.host = fx->host_a;
    f.all_projects = true;
    a = list(fx, &ADMIN, &f);
    assert_int_equal(a->n_servers, 3);
    free_msg(a);
}

/* --- groups, quota, console --------------------------------------------------------------- */

static void
test_server_groups(void **state)
{
    struct fixture *fx = *state;
    Yun__ServerGroupCreateRequest q = YUN__SERVER_GROUP_CREATE_REQUEST__INIT;
    q.name = (char *)"apart";
    q.policy = (char *)"anti-affinity";
    Yun__ServerGroupReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_server_group_create, &q,
                         &yun__server_group_reply__descriptor, &y, NULL), 0);
    char gid[40];
    snprintf(gid, sizeof gid, "%s", y->group->id);
    free_msg(y);
    q.policy = (char *)"sideways";
    char *msg = NULL;
    assert_int_equal(run(fx, &P1, sched_server_group_create, &q,
                         &yun__server_group_reply__descriptor, &y, &msg), YUN_E_INVALID);
    free(msg);

    /* Two hosts: three members cannot be apart. */
    struct create_opts o = { .min = 3, .max = 3, .group = "apart" };
    assert_int_equal(create_ex(fx, &P1, "ha", &o, NULL, &msg), YUN_E_NOVALIDHOST);
    free(msg);
    o = (struct create_opts){ .min = 2, .max = 2, .group = "apart" };
    Yun__ServerCreateReply *cy = NULL;
    assert_int_equal(create_ex(fx, &P1, "ha", &o, &cy, NULL), 0);
    char h0[64], h1[64];
    host_of(fx, cy->servers[0]->id, h0, sizeof h0);
    host_of(fx, cy->servers[1]->id, h1, sizeof h1);
    assert_string_not_equal(h0, h1);
    char first[40];
    snprintf(first, sizeof first, "%s", cy->servers[0]->id);
    free_msg(cy);
    Yun__ServerGroupRef ref = YUN__SERVER_GROUP_REF__INIT;
    ref.group = (char *)"apart";
    assert_int_equal(run(fx, &P1, sched_server_group_show, &ref,
                         &yun__server_group_reply__descriptor, &y, NULL), 0);
    assert_int_equal(y->group->n_members, 2);
    free_msg(y);
    assert_int_equal(run(fx, &P2, sched_server_group_show, &ref,
                         &yun__server_group_reply__descriptor, &y, NULL), -ENOENT);
    /* A member deleted leaves the group; a third fits again. */
    assert_int_equal(delete_server(fx, &P1, first), 0);
    assert_int_equal(counts_of(fx).claims, 2); /* deleting: the claim stays until confirmed */
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SPAWN, first), 0, NULL);
    assert_int_equal(event_as(fx, agent_of(fx, h0), first, "deleted", NULL), 0);
    assert_int_equal(run(fx, &P1, sched_server_group_show, &ref,
                         &yun__server_group_reply__descriptor, &y, NULL), 0);
    assert_int_equal(y->group->n_members, 1);
    free_msg(y);
    o = (struct create_opts){ .group = gid };
    assert_int_equal(create_ex(fx, &P1, "ha3", &o, NULL, NULL), 0);
    assert_int_equal(run(fx, &P1, sched_server_group_delete, &ref,
                         &yun__server_group_reply__descriptor, &y, NULL), 0);
    free_msg(y);
    assert_int_equal(counts_of(fx).groups, 0);
}

static void
test_quota(void **state)
{
    struct fixture *fx = *state;
    fx->s.cfg.compute_max_instances_per_project = 3;
    struct create_opts o = { .min = 2, .max = 2, .flavor = "m1.nano" };
    assert_int_equal(create_ex(fx, &P1, "q", &o, NULL, NULL), 0);
    char *msg = NULL;
    o = (struct create_opts){ .min = 2, .max = 2, .flavor = "m1.nano" };
    assert_int_equal(create_ex(fx, &P1, "q", &o, NULL, &msg), -EDQUOT);
    assert_contains(msg, "quota of 3");
    free(msg);
    o = (struct create_opts){ .min = 1, .max = 5, .flavor = "m1.nano" };
    Yun__ServerCreateReply *y = NULL;
    assert_int_equal(create_ex(fx, &P1, "q", &o, &y, NULL), 0);
    assert_int_equal(y->n_servers, 1);
    free_msg(y);
    /* Other projects have their own. */
    assert_int_equal(create_ex(fx, &P2, "q", NULL, NULL, NULL), 0);
}

static void
test_console_deferred(void **state)
{
    struct fixture *fx = *state;
    char *id = create_active(fx, &P1, "talk");
    Yun__ServerConsoleRequest q = YUN__SERVER_CONSOLE_REQUEST__INIT;
    q.server = id;
    q.lines = 5;
    Yun__ServerConsoleReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_server_console, &q,
                         &yun__server_console_reply__descriptor, &y, NULL), 0);
    assert_null(y); /* deferred */
    assert_null(fx->deferred);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_CONSOLE, id);
    assert_non_null(c);
    assert_int_equal(((Yun__AgentConsoleRequest *)c->msg)->lines, 5);
    Yun__ServerConsoleReply out = YUN__SERVER_CONSOLE_REPLY__INIT;
    out.output = (char *)"login: ";
    sched_agent_request_finish(&fx->s, TAKE_PTR(c->r), 0, NULL, &out.base);
    assert_non_null(fx->deferred);
    ProtobufCMessage *m = NULL;
    assert_int_equal(yun_rpc_unpack_reply(fx->deferred, fx->deferred_size,
                                          &yun__server_console_reply__descriptor, &m, NULL), 0);
    assert_string_equal(((Yun__ServerConsoleReply *)m)->output, "login: ");
    free_msg(m);
    /* An agent that does not answer: the caller gets the error. */
    assert_int_equal(run(fx, &P1, sched_server_console, &q,
                         &yun__server_console_reply__descriptor, &y, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_CONSOLE, id), YUN_E_UNREACHABLE, "silence");
    char *msg = NULL;
    assert_int_equal(yun_rpc_unpack_reply(fx->deferred, fx->deferred_size,
                                          &yun__server_console_reply__descriptor, &m, &msg),
                     YUN_E_UNREACHABLE);
    assert_contains(msg, "silence");
    free(msg);
    free(id);
}

/* --- sync and recovery ----------------------------------------------------------------------- */

static void
test_sync(void **state)
{
    struct fixture *fx = *state;
    /* Three servers on host A: one ACTIVE it still runs (but stopped),
     * one ACTIVE it lost, one whose spawn it lost. */
    fx->s.cfg.compute_max_attempts = 3;
    char *kept = NULL, *lost = NULL, *building = NULL;
    for (int k = 0; k < 40 && (!kept || !lost || !building); k++) {
        char *id = create_one(fx, &P1, "s");
        struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
        if (strcmp(c->host, fx->host_a) != 0) {
            answer(fx, c, 0, NULL);
            free(id);
            continue;
        }
        answer(fx, c, 0, NULL);
        if (!building) {
            building = id;
            continue;
        }
        assert_int_equal(event_as(fx, &AGENT_A, id, "spawned", NULL), 0);
        if (!kept)
            kept = id;
        else
            lost = id;
    }
    assert_non_null(kept);
    assert_non_null(lost);
    assert_non_null(building);
    char stray[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(stray), 0);

    Yun__AgentInstanceState s1 = YUN__AGENT_INSTANCE_STATE__INIT;
    s1.instance_id = kept;
    s1.power_state = (char *)"shutoff";
    s1.known = true;
    s1.has_domain = true;
    Yun__AgentInstanceState s2 = YUN__AGENT_INSTANCE_STATE__INIT;
    s2.instance_id = stray;
    s2.power_state = (char *)"running";
    s2.known = true;
    s2.has_domain = true;
    Yun__AgentInstanceState *sts[] = { &s1, &s2 };
    Yun__InstanceSyncRequest q = YUN__INSTANCE_SYNC_REQUEST__INIT;
    q.host_id = fx->host_a;
    q.instances = sts;
    q.n_instances = 2;
    Yun__InstanceSyncReply *y = NULL;
    /* Another agent may not sync this host. */
    char *msg = NULL;
    assert_int_equal(run(fx, &AGENT_B, sched_instance_sync, &q,
                         &yun__instance_sync_reply__descriptor, &y, &msg), YUN_E_DENIED);
    free(msg);
    assert_int_equal(run(fx, &AGENT_A, sched_instance_sync, &q,
                         &yun__instance_sync_reply__descriptor, &y, NULL), 0);
    assert_int_equal(y->n_delete_, 1);
    assert_string_equal(y->delete_[0], stray);
    free_msg(y);
    assert_state(fx, kept, "SHUTOFF", "");
    Yun__InstanceRecord *i = show(fx, &P1, lost, 0);
    assert_string_equal(i->status, "ERROR");
    assert_contains(i->fault->message, "vanished");
    free_msg(i);
    /* The lost spawn is retried on the other host. */
    char host[64];
    assert_string_equal(host_of(fx, building, host, sizeof host), fx->host_b);
    assert_state(fx, building, "BUILD", "scheduling");
    assert_non_null(pending(fx, YUN__OP__OP_AGENT_SPAWN, building));
    free(kept);
    free(lost);
    free(building);
}

static void
test_restart_recovery(void **state)
{
    struct fixture *fx = *state;
    /* A spawn never acknowledged, and a claim with no instance (a crash
     * between two writers cannot make one, but a bug could). */
    char *id = create_one(fx, &P1, "interrupted");
    char host[64];
    host_of(fx, id, host, sizeof host);
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    char ghost[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(ghost), 0);
    struct sched_placement_config pcfg;
    assert_int_equal(sched_compute_placement_config(&fx->s, &pcfg), 0);
    Yun__Claim c = YUN__CLAIM__INIT;
    c.instance_id = ghost;
    c.host_id = fx->host_a;
    c.vcpus = 1;
    c.ram_mb = 1024;
    c.disk_gb = 1;
    assert_int_equal(sched_placement_claim_txn(txn, &pcfg, &c), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    assert_int_equal(counts_of(fx).claims, 2);

    /* "Restart": the pending requests are lost with the process. */
    sched_compute_done(&fx->s);
    drop_captured(fx);
    assert_int_equal(sched_compute_init(&fx->s), 0);
    sched_agent_set_hook(&fx->s, hook, fx);
    assert_int_equal(counts_of(fx).claims, 1);
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(fx->s.placement, host, &info), 0);
    assert_int_equal(info.used_ram_mb, 2048);
    /* The first cron sends the unacknowledged spawn again. */
    sched_compute_cron(&fx->s);
    struct captured *cp = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    assert_non_null(cp);
    assert_string_equal(cp->host, host);
    answer(fx, cp, 0, NULL);
    assert_int_equal(event_as(fx, agent_of(fx, host), id, "spawned", NULL), 0);
    assert_state(fx, id, "ACTIVE", "");
    /* Only once. */
    sched_compute_cron(&fx->s);
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_SPAWN), 0);

    /* A task cut short by a restart ends; a delete is sent again. */
    assert_int_equal(action(fx, &P1, id, "stop", false, NULL), 0);
    sched_compute_done(&fx->s);
    drop_captured(fx);
    assert_int_equal(sched_compute_init(&fx->s), 0);
    sched_agent_set_hook(&fx->s, hook, fx);
    assert_state(fx, id, "ACTIVE", "");
    assert_int_equal(delete_server(fx, &P1, id), 0);
    sched_compute_done(&fx->s);
    drop_captured(fx);
    assert_int_equal(sched_compute_init(&fx->s), 0);
    sched_agent_set_hook(&fx->s, hook, fx);
    sched_compute_cron(&fx->s);
    assert_non_null(pending(fx, YUN__OP__OP_AGENT_DESTROY, id));
    free(id);
}


/* --- snapshots ----------------------------------------------------------------------- */

static int
snapshot(struct fixture *fx, const struct who *w, const char *server, const char *name,
         Yun__ImageRecord **ret, char **ret_msg)
{
    Yun__ServerSnapshotRequest q = YUN__SERVER_SNAPSHOT_REQUEST__INIT;
    q.server = (char *)server;
    q.image_name = (char *)name;
    Yun__ImageReply *y = NULL;
    int r = run(fx, w, sched_server_snapshot, &q, &yun__image_reply__descriptor, &y, ret_msg);
    if (ret && y) {
        *ret = y->image;
        y->image = NULL;
    } else if (ret) {
        *ret = NULL;
    }
    free_msg(y);
    return r;
}

static int
snap_chunk(struct fixture *fx, const struct who *agent, const char *server, const char *image,
           uint64_t offset, const void *data, size_t size, bool last, char **ret_msg)
{
    Yun__SnapshotUploadRequest q = YUN__SNAPSHOT_UPLOAD_REQUEST__INIT;
    q.instance_id = (char *)server;
    q.image_id = (char *)image;
    q.offset = offset;
    q.data.data = (uint8_t *)data;
    q.data.len = size;
    q.last = last;
    Yun__ImageUploadReply *y = NULL;
    int r = run(fx, agent, sched_snapshot_upload, &q, &yun__image_upload_reply__descriptor, &y,
                ret_msg);
    free_msg(y);
    return r;
}

static Yun__ImageRecord *
image_show(struct fixture *fx, const struct who *w, const char *id)
{
    Yun__ImageRef q = YUN__IMAGE_REF__INIT;
    q.image = (char *)id;
    Yun__ImageReply *y = NULL;
    assert_int_equal(run(fx, w, sched_image_show, &q, &yun__image_reply__descriptor, &y, NULL),
                     0);
    Yun__ImageRecord *img = y->image;
    y->image = NULL;
    free_msg(y);
    return img;
}

static const char *
prop_of(const Yun__ImageRecord *img, const char *key)
{
    for (size_t k = 0; k < img->n_properties; k++)
        if (strcmp(img->properties[k]->key, key) == 0)
            return img->properties[k]->value;
    return NULL;
}

static void
assert_image_status(struct fixture *fx, const char *id, const char *status)
{
    Yun__ImageRecord *img = image_show(fx, &ADMIN, id);
    if (strcmp(img->status, status) != 0)
        fail_msg("image %s is %s, not %s", id, img->status, status);
    free_msg(img);
}

/* The last action of 'id' is 'action' with 'result'. */
static void
assert_last_action(struct fixture *fx, const char *id, const char *action, const char *result)
{
    Yun__InstanceRecord *i = show(fx, &ADMIN, id, 0);
    assert_true(i->n_actions > 0);
    const Yun__InstanceAction *a = NULL;
    for (size_t k = i->n_actions; k-- > 0 && !a;)
        if (strcmp(i->actions[k]->action, action) == 0)
            a = i->actions[k];
    assert_non_null(a);
    assert_string_equal(a->result, result);
    free_msg(i);
}

/* A snapshot of an ACTIVE server: state checks, the image made at once
 * (queued, the server's project's, with the boot properties), the task,
 * the agent's command; the upload from the agent of its host only; done
 * when the image is active. */
static void
test_snapshot(void **state)
{
    struct fixture *fx = *state;
    char *kernel = make_image(fx, &P1, "vmlinuz", 4096, false, 0, NULL);
    char *ramdisk = make_image(fx, &P1, "initrd", 4096, false, 0, NULL);
    char kprop[80], rprop[80];
    snprintf(kprop, sizeof kprop, "kernel_id=%s", kernel);
    snprintf(rprop, sizeof rprop, "ramdisk_id=%s", ramdisk);
    const char *const props[] = { kprop, rprop, "os_command_line=console=ttyS0 quiet",
                                  "architecture=x86_64", NULL };
    char *base = make_image(fx, &P1, "disk", 65536, false, 0, props);
    Yun__ServerCreateReply *cy = NULL;
    struct create_opts o = { .image = base };
    assert_int_equal(create_ex(fx, &P1, "snapme", &o, &cy, NULL), 0);
    char *id = strdup(cy->servers[0]->id);
    free_msg(cy);
    struct captured *c = pending(fx, YUN__OP__OP_AGENT_SPAWN, id);
    const struct who *agent = agent_of(fx, c->host);
    const struct who *other = agent == &AGENT_A ? &AGENT_B : &AGENT_A;
    answer(fx, c, 0, NULL);
    char *msg = NULL;

    /* Not while building; not for another project; a name is needed. */
    assert_int_equal(snapshot(fx, &P1, id, "s0", NULL, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "spawning");
    free(msg);
    assert_int_equal(event_as(fx, agent, id, "spawned", NULL), 0);
    act_and_event(fx, id, "pause", false, "pausing", "paused", "PAUSED");
    assert_int_equal(snapshot(fx, &P1, id, "s0", NULL, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "is PAUSED; a snapshot needs a server that is ACTIVE or SHUTOFF");
    free(msg);
    act_and_event(fx, id, "unpause", false, "unpausing", "resumed", "ACTIVE");
    assert_int_equal(snapshot(fx, &P2, id, "s0", NULL, &msg), -ENOENT);
    free(msg);
    assert_int_equal(snapshot(fx, &P1, id, "", NULL, &msg), YUN_E_INVALID);
    free(msg);
    assert_int_equal(count_pending(fx, YUN__OP__OP_AGENT_SNAPSHOT), 0);

    Yun__ImageRecord *img = NULL;
    assert_int_equal(snapshot(fx, &P1, "snapme", "snap1", &img, NULL), 0);
    assert_string_equal(img->status, "queued");
    assert_string_equal(img->owner, "p1");
    assert_string_equal(img->visibility, "private");
    assert_string_equal(img->disk_format, "qcow2");
    assert_string_equal(img->container_format, "bare");
    assert_string_equal(prop_of(img, "image_type"), "snapshot");
    assert_string_equal(prop_of(img, "instance_uuid"), id);
    assert_string_equal(prop_of(img, "base_image_ref"), base);
    assert_string_equal(prop_of(img, "kernel_id"), kernel);
    assert_string_equal(prop_of(img, "ramdisk_id"), ramdisk);
    assert_string_equal(prop_of(img, "os_command_line"), "console=ttyS0 quiet");
    assert_string_equal(prop_of(img, "architecture"), "x86_64");
    char *snap = strdup(img->id);
    free_msg(img);
    assert_state(fx, id, "ACTIVE", "image_snapshot");
    /* Busy meanwhile. */
    assert_int_equal(snapshot(fx, &P1, id, "snap2", NULL, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "busy");
    free(msg);
    assert_int_equal(action(fx, &P1, id, "stop", false, &msg), YUN_E_CONFLICT);
    free(msg);
    c = pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id);
    assert_non_null(c);
    assert_string_equal(((Yun__AgentSnapshotRequest *)c->msg)->image_id, snap);
    answer(fx, c, 0, NULL);

    /* Another host's agent may not upload it; another image may not be
     * filled through this server. */
    uint8_t bytes[4096] = { 0 };
    assert_int_equal(snap_chunk(fx, other, id, snap, 0, bytes, sizeof bytes, false, &msg),
                     YUN_E_DENIED);
    assert_contains(msg, "not on its host");
    free(msg);
    assert_int_equal(snap_chunk(fx, agent, id, fx->image, 0, bytes, sizeof bytes, false, &msg),
                     YUN_E_CONFLICT);
    free(msg);
    assert_image_status(fx, snap, "queued");
    /* Power events meanwhile do not end the task. */
    assert_int_equal(event_as(fx, agent, id, "paused", NULL), 0);
    assert_int_equal(event_as(fx, agent, id, "resumed", NULL), 0);
    assert_state(fx, id, "ACTIVE", "image_snapshot");

    if (system("qemu-img --version >/dev/null 2>&1") == 0) {
        char path[1200], cmd[4096];
        snprintf(path, sizeof path, "%s/snap.qcow2", fx->dir);
        snprintf(cmd, sizeof cmd, "qemu-img create -q -f qcow2 '%s' 64M", path);
        assert_int_equal(system(cmd), 0);
        char *buf = NULL;
        size_t n = 0;
        assert_int_equal(yun_read_file(path, 1 << 24, &buf, &n), 0);
        size_t half = n / 2;
        assert_int_equal(snap_chunk(fx, agent, id, snap, 0, buf, half, false, NULL), 0);
        assert_image_status(fx, snap, "saving");
        /* A chunk at the wrong offset does not end it. */
        assert_int_equal(snap_chunk(fx, agent, id, snap, 0, buf, half, false, &msg),
                         YUN_E_CONFLICT);
        free(msg);
        assert_int_equal(snap_chunk(fx, agent, id, snap, half, buf + half, n - half, true,
                                    NULL), 0);
        free(buf);
        Yun__ImageRecord *done = image_show(fx, &P1, snap);
        assert_string_equal(done->status, "active");
        assert_string_equal(done->detected_format, "qcow2");
        assert_int_equal(done->virtual_size, 64u << 20);
        assert_int_equal(strlen(done->os_hash_value), 128);
        assert_int_equal(strlen(done->checksum), 32);
        free_msg(done);
        assert_int_equal(event_as(fx, agent, id, "snapshot_done", NULL), 0);
        assert_state(fx, id, "ACTIVE", "");
        assert_last_action(fx, id, "snapshot", "ok");
        Yun__InstanceRecord *i = show(fx, &P1, id, 0);
        assert_null(i->fault);
        assert_string_equal(i->snapshot_image_id, "");
        free_msg(i);
        /* The snapshot boots. */
        char *again = NULL;
        struct create_opts o2 = { .image = "snap1" };
        Yun__ServerCreateReply *y2 = NULL;
        assert_int_equal(create_ex(fx, &P1, "fromsnap", &o2, &y2, NULL), 0);
        again = strdup(y2->servers[0]->id);
        free_msg(y2);
        c = pending(fx, YUN__OP__OP_AGENT_SPAWN, again);
        assert_non_null(c);
        const Yun__AgentSpawnRequest *sq = (const Yun__AgentSpawnRequest *)c->msg;
        assert_string_equal(sq->image_id, snap);
        assert_string_equal(sq->image_disk_format, "qcow2");
        assert_string_equal(sq->kernel_id, kernel);
        assert_string_equal(sq->ramdisk_id, ramdisk);
        assert_string_equal(sq->kernel_cmdline, "console=ttyS0 quiet");
        free(again);
    } else {
        /* Without qemu-img: the agent says it failed. */
        assert_int_equal(event_as(fx, agent, id, "snapshot_failed", "no qemu-img"), 0);
        assert_image_status(fx, snap, "killed");
    }
    free(snap);
    free(kernel);
    free(ramdisk);
    free(base);
    free(id);
}

/* Every way a snapshot can fail kills its image and ends the task with a
 * fault: the agent refusing, its snapshot_failed, an upload the inspector
 * refuses, a delete, a timeout, a restart. A SHUTOFF server may be
 * snapshotted too. */
static void
test_snapshot_failures(void **state)
{
    struct fixture *fx = *state;
    char *id = create_active(fx, &P1, "vm");
    char host[64];
    host_of(fx, id, host, sizeof host);
    const struct who *agent = agent_of(fx, host);
    Yun__ImageRecord *img = NULL;
    char *msg = NULL;

    /* The agent refuses. */
    assert_int_equal(snapshot(fx, &P1, id, "s1", &img, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id), -EIO, "no disk here.");
    assert_state(fx, id, "ACTIVE", "");
    assert_image_status(fx, img->id, "killed");
    assert_last_action(fx, id, "snapshot", yun_errname(-EIO));
    Yun__InstanceRecord *i = show(fx, &P1, id, 0);
    assert_contains(i->fault->message, "no disk here.");
    free_msg(i);
    free_msg(img);

    /* From SHUTOFF; the agent reports a failure after an upload began. */
    act_and_event(fx, id, "stop", false, "powering-off", "stopped", "SHUTOFF");
    assert_int_equal(snapshot(fx, &P1, id, "s2", &img, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id), 0, NULL);
    uint8_t bytes[4096] = { 0 };
    assert_int_equal(snap_chunk(fx, agent, id, img->id, 0, bytes, sizeof bytes, false, NULL),
                     0);
    assert_image_status(fx, img->id, "saving");
    assert_int_equal(event_as(fx, agent, id, "snapshot_failed", "qemu-img failed"), 0);
    assert_state(fx, id, "SHUTOFF", "");
    assert_image_status(fx, img->id, "killed");
    /* Chunks after that are refused. */
    assert_int_equal(snap_chunk(fx, agent, id, img->id, 4096, bytes, sizeof bytes, true, &msg),
                     YUN_E_CONFLICT);
    free(msg);
    free_msg(img);

    /* Bytes that are not a qcow2: the inspector refuses them, the image
     * is killed, and snapshot_done then ends the task with a fault. */
    assert_int_equal(snapshot(fx, &P1, id, "s3", &img, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id), 0, NULL);
    assert_int_equal(snap_chunk(fx, agent, id, img->id, 0, bytes, sizeof bytes, true, &msg),
                     YUN_E_BADIMAGE);
    assert_contains(msg, "format-mismatch");
    free(msg);
    assert_image_status(fx, img->id, "killed");
    assert_int_equal(event_as(fx, agent, id, "snapshot_done", NULL), 0);
    assert_state(fx, id, "SHUTOFF", "");
    i = show(fx, &P1, id, 0);
    assert_contains(i->fault->message, "killed");
    free_msg(i);
    free_msg(img);

    /* A timeout. */
    assert_int_equal(snapshot(fx, &P1, id, "s4", &img, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id), 0, NULL);
    sched_compute_sweep(&fx->s, yun_wall_us() + 3599ull * 1000000u);
    assert_state(fx, id, "SHUTOFF", "image_snapshot");
    sched_compute_sweep(&fx->s, yun_wall_us() + 3601ull * 1000000u);
    assert_state(fx, id, "SHUTOFF", "");
    assert_image_status(fx, img->id, "killed");
    free_msg(img);

    /* An upload that stalls is reaped; the sweep then ends the task. */
    assert_int_equal(snapshot(fx, &P1, id, "s4b", &img, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id), 0, NULL);
    assert_int_equal(snap_chunk(fx, agent, id, img->id, 0, bytes, sizeof bytes, false, NULL),
                     0);
    sched_compute_sweep(&fx->s, yun_wall_us());
    assert_state(fx, id, "SHUTOFF", "image_snapshot");
    sched_image_reap(&fx->s, yun_now_ms() + (fx->s.cfg.image_upload_idle_timeout_s + 1) * 1000ll);
    assert_image_status(fx, img->id, "killed");
    sched_compute_sweep(&fx->s, yun_wall_us());
    assert_state(fx, id, "SHUTOFF", "");
    i = show(fx, &P1, id, 0);
    assert_contains(i->fault->message, "upload stopped");
    free_msg(i);
    free_msg(img);

    /* The agent restarts (its start-up sync). */
    assert_int_equal(snapshot(fx, &P1, id, "s4c", &img, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id), 0, NULL);
    Yun__AgentInstanceState st = YUN__AGENT_INSTANCE_STATE__INIT;
    st.instance_id = id;
    st.power_state = (char *)"shutoff";
    st.known = true;
    st.has_domain = true;
    Yun__AgentInstanceState *sts[] = { &st };
    Yun__InstanceSyncRequest sq = YUN__INSTANCE_SYNC_REQUEST__INIT;
    sq.host_id = (char *)host;
    sq.instances = sts;
    sq.n_instances = 1;
    Yun__InstanceSyncReply *sy = NULL;
    assert_int_equal(run(fx, agent, sched_instance_sync, &sq,
                         &yun__instance_sync_reply__descriptor, &sy, NULL), 0);
    free_msg(sy);
    assert_state(fx, id, "SHUTOFF", "");
    assert_image_status(fx, img->id, "killed");
    free_msg(img);

    /* A restart. */
    assert_int_equal(snapshot(fx, &P1, id, "s5", &img, NULL), 0);
    sched_compute_done(&fx->s);
    drop_captured(fx);
    assert_int_equal(sched_compute_init(&fx->s), 0);
    sched_agent_set_hook(&fx->s, hook, fx);
    assert_state(fx, id, "SHUTOFF", "");
    assert_image_status(fx, img->id, "killed");
    free_msg(img);

    /* A delete. */
    assert_int_equal(snapshot(fx, &P1, id, "s6", &img, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id), 0, NULL);
    assert_int_equal(snap_chunk(fx, agent, id, img->id, 0, bytes, sizeof bytes, false, NULL),
                     0);
    assert_int_equal(delete_server(fx, &P1, id), 0);
    assert_image_status(fx, img->id, "killed");
    assert_int_equal(snap_chunk(fx, agent, id, img->id, 4096, bytes, sizeof bytes, true, &msg),
                     YUN_E_CONFLICT);
    free(msg);
    free_msg(img);

    /* No room in the image store: the first chunk is refused and the
     * image stays queued until the agent's failure kills it; a later
     * chunk without room kills the upload at once. */
    free(id);
    id = create_active(fx, &P1, "vm2");
    host_of(fx, id, host, sizeof host);
    agent = agent_of(fx, host);
    uint32_t reserve = fx->s.cfg.image_store_min_free_mb;
    assert_int_equal(snapshot(fx, &P1, id, "s7", &img, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id), 0, NULL);
    fx->s.cfg.image_store_min_free_mb = UINT32_MAX;
    assert_int_equal(snap_chunk(fx, agent, id, img->id, 0, bytes, sizeof bytes, false, &msg),
                     -ENOSPC);
    assert_contains(msg, "No room for image");
    free(msg);
    assert_image_status(fx, img->id, "queued");
    assert_int_equal(event_as(fx, agent, id, "snapshot_failed", "no room"), 0);
    assert_image_status(fx, img->id, "killed");
    free_msg(img);
    fx->s.cfg.image_store_min_free_mb = reserve;
    assert_int_equal(snapshot(fx, &P1, id, "s8", &img, NULL), 0);
    answer(fx, pending(fx, YUN__OP__OP_AGENT_SNAPSHOT, id), 0, NULL);
    assert_int_equal(snap_chunk(fx, agent, id, img->id, 0, bytes, sizeof bytes, false, NULL),
                     0);
    fx->s.cfg.image_store_min_free_mb = UINT32_MAX;
    assert_int_equal(snap_chunk(fx, agent, id, img->id, 4096, bytes, sizeof bytes, true, &msg),
                     -ENOSPC);
    free(msg);
    assert_image_status(fx, img->id, "killed");
    fx->s.cfg.image_store_min_free_mb = reserve;
    free_msg(img);
    free(id);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flavors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kernel_ramdisk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spawn_failed_retries_then_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spawn_attempts_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_agent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spawn_timeout_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_and_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_releases_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_host_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_projects_invisible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_filters_and_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_console_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_networks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_hostnames_unique, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
