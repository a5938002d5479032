/* SPDX-License-Identifier: Apache-2.0
 * test-network.c: unit tests for the network model (scheduler/network.c,
 * port.c, security-group.c, ipam.c) at the handler layer and through the
 * network.h API the compute glue calls. Each test builds a struct sched
 * on a fresh state directory and calls the handlers directly as callers
 * of different projects. Bad input must leave every network database
 * byte for byte as it was. */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
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
#include "err.h"
#include "ipam.h"
#include "network-priv.h"
#include "network.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "host.pb-c.h"
#include "network.pb-c.h"
#include "yun.pb-c.h"

struct fixture {
    char dir[1024];
    struct sched s;
    unsigned seq;
    char changed[64][64];       /* hosts the hook heard of */
    size_t n_changed;
};

struct who {
    const char *user;
    const char *project;
    bool admin;
};

static const struct who P1 = { "u1", "p1", false };
static const struct who P2 = { "u2", "p2", false };
static const struct who ADMIN = { "root", "admin", true };

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

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

static void
on_changed(struct sched *s, const char *const *ids, size_t n, void *data)
{
    struct fixture *fx = data;
    for (size_t i = 0; i < n && fx->n_changed < 64; i++)
        snprintf(fx->changed[fx->n_changed++], 64, "%s", ids[i]);
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
    snprintf(fx->dir, sizeof fx->dir, "%s/network.XXXXXX", base);
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
    if (sched_store_open(&fx->s) < 0)
        return -1;
    network_set_changed_hook(&fx->s, on_changed, fx);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    fx->s.store = yun_store_close(fx->s.store);
    yun_cfg_done(sched_config_table, sched_config_table_size, &fx->s.cfg);
    int r = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

static int
run(struct fixture *fx, const struct who *w, handler_fn h, const void *req,
    const ProtobufCMessageDescriptor *rd, void *ret, char **ret_msg)
{
    char reqid[32];
    snprintf(reqid, sizeof reqid, "req-%06u", ++fx->seq);
    struct yun_bus_peer peer = {
        .sender = w->user, .key_id = w->user, .request_id = reqid,
        .role = YUN__PEER_RECORD__KIND__KIND_OPERATOR,
    };
    struct sched_call call = {
        .s = &fx->s, .peer = &peer, .peer_kind = YUN__PEER_RECORD__KIND__KIND_OPERATOR,
        .req = reqid, .user = w->user, .project = w->project, .is_admin = w->admin,
        .roles = w->admin ? 7 : 3,
    };
    int r = h(&call, req);
    if (r < 0 && call.error == 0)
        call.error = r;
    if (r >= 0)
        assert_int_equal(call.error, 0);
    if (ret) {
        *(ProtobufCMessage **)ret = NULL;
        if (call.error == 0 && call.payload)
            *(ProtobufCMessage **)ret =
                protobuf_c_message_unpack(rd, NULL, call.payload_size, call.payload);
    }
    if (ret_msg)
        *ret_msg = call.error ? TAKE_PTR(call.error_message) : NULL;
    free(call.error_message);
    free(call.payload);
    return call.error;
}

/* --- a snapshot of every network database --------------------------------------- */

static const char *const net_dbs[] = {
    SCHED_DB_NETWORKS, SCHED_DB_SUBNETS, SCHED_DB_PORTS, SCHED_DB_SECURITY_GROUPS,
    SCHED_DB_NETWORK_SEGMENTS, SCHED_DB_PORT_MACS, SCHED_DB_IP_ALLOCATIONS,
    SCHED_DB_DEFAULT_SECURITY_GROUPS,
};

struct buf {
    uint8_t *data;
    size_t size;
};

static void
buf_add(struct buf *b, const void *p, size_t n)
{
    b->data = realloc(b->data, b->size + n + 8);
    assert_non_null(b->data);
    uint64_t len = n;
    memcpy(b->data + b->size, &len, 8);
    memcpy(b->data + b->size + 8, p, n);
    b->size += n + 8;
}

static int
snap_one(const void *key, size_t ks, const void *val, size_t vs, void *data)
{
    buf_add(data, key, ks);
    buf_add(data, val, vs);
    return 0;
}

static struct buf
snapshot(struct fixture *fx)
{
    struct buf b = { 0 };
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, false, &txn), 0);
    for (size_t i = 0; i < sizeof net_dbs / sizeof net_dbs[0]; i++) {
        buf_add(&b, net_dbs[i], strlen(net_dbs[i]));
        assert_int_equal(yun_txn_iterate(txn, net_dbs[i], NULL, 0, snap_one, &b), 0);
    }
    yun_txn_abort(txn);
    return b;
}

static void
assert_unchanged(struct fixture *fx, const struct buf *before)
{
    struct buf after = snapshot(fx);
    assert_int_equal(after.size, before->size);
    assert_memory_equal(after.data, before->data, before->size);
    free(after.data);
}

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

/* --- helpers -------------------------------------------------------------------------- */

static Yun__NetworkRecord *
mknet(struct fixture *fx, const struct who *w, const char *name, const char *type, bool shared)
{
    Yun__NetworkCreateRequest q = YUN__NETWORK_CREATE_REQUEST__INIT;
    q.name = (char *)name;
    q.network_type = (char *)type;
    q.shared = shared;
    Yun__NetworkReply *y = NULL;
    char *msg = NULL;
    int r = run(fx, w, sched_network_create, &q, &yun__network_reply__descriptor, &y, &msg);
    if (r)
        fail_msg("network create: %s", msg);
    Yun__NetworkRecord *n = y->network;
    y->network = NULL;
    free_msg(y);
    return n;
}

static int
subnet_ex(struct fixture *fx, const struct who *w, const char *net, const char *cidr,
          const char *gw, const char *const *pools, size_t n_pools, bool no_gw, char **msg,
          Yun__SubnetRecord **ret)
{
    Yun__SubnetCreateRequest q = YUN__SUBNET_CREATE_REQUEST__INIT;
    q.network = (char *)net;
    q.cidr = (char *)cidr;
    q.gateway_ip = (char *)(gw ? gw : "");
    q.no_gateway = no_gw;
    Yun__AllocationPool p[8];
    Yun__AllocationPool *pp[8];
    for (size_t i = 0; i < n_pools; i++) {
        yun__allocation_pool__init(&p[i]);
        p[i].start = (char *)pools[2 * i];
        p[i].end = (char *)pools[2 * i + 1];
        pp[i] = &p[i];
    }
    q.allocation_pools = pp;
    q.n_allocation_pools = n_pools;
    Yun__SubnetReply *y = NULL;
    int r = run(fx, w, sched_subnet_create, &q, &yun__subnet_reply__descriptor, &y, msg);
    if (ret && y) {
        *ret = y->subnet;
        y->subnet = NULL;
    }
    free_msg(y);
    return r;
}

static int
port_ex(struct fixture *fx, const struct who *w, const char *net, const char *ip,
        Yun__PortRecord **ret, char **msg)
{
    Yun__PortCreateRequest q = YUN__PORT_CREATE_REQUEST__INIT;
    q.network = (char *)net;
    Yun__FixedIp f = YUN__FIXED_IP__INIT;
    Yun__FixedIp *fp = &f;
    if (ip) {
        f.ip_address = (char *)ip;
        q.fixed_ips = &fp;
        q.n_fixed_ips = 1;
    }
    Yun__PortReply *y = NULL;
    int r = run(fx, w, sched_port_create, &q, &yun__port_reply__descriptor, &y, msg);
    if (ret) {
        *ret = y ? y->port : NULL;
        if (y)
            y->port = NULL;
    }
    free_msg(y);
    return r;
}

/* A host record as registration writes it; the name index only for a
 * UUID id (as every registered host has: sched_host_find() looks names up
 * there and ids only when they are UUIDs). */
static void
put_named_host(struct fixture *fx, const char *id, const char *name, const char *tunnel_ip)
{
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    Yun__HostRecord h = YUN__HOST_RECORD__INIT;
    h.id = (char *)id;
    h.name = (char *)name;
    h.tunnel_ip = (char *)tunnel_ip;
    assert_int_equal(yun_txn_put_msg(txn, "hosts", id, &h.base), 0);
    if (yun_uuid_is_valid(id))
        assert_int_equal(yun_txn_put(txn, "host_names", name, strlen(name), id, strlen(id)), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
}

static void
put_host(struct fixture *fx, const char *id, const char *tunnel_ip)
{
    put_named_host(fx, id, id, tunnel_ip);
}

/* --- tests -------------------------------------------------------------------------- */

static void
test_ipam_math(void **state)
{
    uint32_t a;
    assert_int_equal(ipam_parse_addr("10.0.0.1", &a), 0);
    assert_int_equal(a, 0x0a000001);
    assert_int_equal(ipam_parse_addr("255.255.255.255", &a), 0);
    static const char *const bad[] = {
        "", "10.0.0", "10.0.0.1.", "10.0.0.256", "010.0.0.1", " 10.0.0.1", "10.0.0.1 ",
        "a.b.c.d", "10..0.1", "1000.0.0.1", "10.0.0.-1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(ipam_parse_addr(bad[i], &a), -EINVAL);
    char buf[IPAM_ADDR_STR_SIZE];
    assert_string_equal(ipam_format_addr(0xc0a80101, buf), "192.168.1.1");

    struct ipam_cidr c, d;
    assert_int_equal(ipam_parse_cidr("10.0.0.0/24", true, &c), 0);
    assert_int_equal(c.prefix, 24);
    assert_int_equal(ipam_parse_cidr("10.0.0.1/24", true, &d), -EINVAL);
    assert_int_equal(ipam_parse_cidr("10.0.0.1/24", false, &d), 0);
    assert_int_equal(d.network, c.network);
    assert_int_equal(ipam_parse_cidr("10.0.0.0/33", true, &d), -EINVAL);
    assert_int_equal(ipam_parse_cidr("10.0.0.0/024", true, &d), -EINVAL);
    assert_int_equal(ipam_parse_cidr("10.0.0.0", true, &d), -EINVAL);
    assert_int_equal(ipam_parse_cidr("10.0.0.0/", true, &d), -EINVAL);
    assert_int_equal(ipam_parse_cidr("0.0.0.0/0", true, &d), 0);
    char cb[IPAM_CIDR_STR_SIZE];
    assert_string_equal(ipam_format_cidr(&c, cb), "10.0.0.0/24");
    assert_int_equal(ipam_cidr_last(&c), 0x0a0000ff);
    assert_true(ipam_is_host(&c, 0x0a000001));
    assert_false(ipam_is_host(&c, 0x0a000000));
    assert_false(ipam_is_host(&c, 0x0a0000ff));
    assert_false(ipam_is_host(&c, 0x0a000100));
    assert_int_equal(ipam_parse_cidr("10.0.0.128/25", true, &d), 0);
    assert_true(ipam_cidrs_overlap(&c, &d));
    assert_int_equal(ipam_parse_cidr("10.0.1.0/24", true, &d), 0);
    assert_false(ipam_cidrs_overlap(&c, &d));

    struct ipam_range pools[2];
    assert_int_equal(ipam_default_pools(&c, 0x0a000001, pools), 1);
    assert_int_equal(pools[0].start, 0x0a000002);
    assert_int_equal(pools[0].end, 0x0a0000fe);
    assert_int_equal(ipam_default_pools(&c, 0x0a000080, pools), 2);
    assert_int_equal(pools[0].end, 0x0a00007f);
    assert_int_equal(pools[1].start, 0x0a000081);
    assert_int_equal(ipam_default_pools(&c, 0, pools), 1);
    assert_int_equal(pools[0].start, 0x0a000001);

    size_t bad_i;
    struct ipam_range p[2] = { { 0x0a000010, 0x0a000020 }, { 0x0a000030, 0x0a000040 } };
    assert_int_equal(ipam_check_pools(&c, 0x0a000001, p, 2, &bad_i), IPAM_POOL_OK);
    p[1].start = 0x0a000015;
    assert_int_equal(ipam_check_pools(&c, 0x0a000001, p, 2, &bad_i), IPAM_POOL_OVERLAP);
    assert_int_equal(bad_i, 1);
    p[1] = (struct ipam_range){ 0x0a000050, 0x0a000040 };
    assert_int_equal(ipam_check_pools(&c, 0x0a000001, p, 2, &bad_i), IPAM_POOL_REVERSED);
    p[1] = (struct ipam_range){ 0x0a0000f0, 0x0a0000ff };
    assert_int_equal(ipam_check_pools(&c, 0x0a000001, p, 2, &bad_i), IPAM_POOL_OUTSIDE);
    p[1] = (struct ipam_range){ 0x0a000001, 0x0a000005 };
    assert_int_equal(ipam_check_pools(&c, 0x0a000001, p, 2, &bad_i), IPAM_POOL_GATEWAY);
}

static bool
used_below_3(uint32_t a, void *data)
{
    return (a & 0xff) < 3;
}

static void
test_ipam_first_free(void **state)
{
    struct ipam_range p[] = { { 0x0a000001, 0x0a000004 } };
    uint32_t a;
    assert_int_equal(ipam_first_free(p, 1, used_below_3, NULL, &a), 0);
    assert_int_equal(a, 0x0a000003);
    struct ipam_range q[] = { { 0x0a000001, 0x0a000002 } };
    assert_int_equal(ipam_first_free(q, 1, used_below_3, NULL, &a), -ENOSPC);
}

static void
test_network_create_defaults(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkRecord *n = mknet(fx, &P1, "net1", "", false);
    assert_string_equal(n->network_type, "vxlan");
    assert_int_equal(n->segmentation_id, 1000);
    assert_int_equal(n->mtu, 1450);
    assert_string_equal(n->project, "p1");
    Yun__NetworkRecord *n2 = mknet(fx, &P1, "net2", "vxlan", false);
    assert_int_equal(n2->segmentation_id, 1001);
    Yun__NetworkRecord *v = mknet(fx, &P1, "vl", "vlan", false);
    assert_int_equal(v->segmentation_id, 100);
    assert_int_equal(v->mtu, 1500);
    assert_string_equal(v->physical_network, "physnet1");
    /* Members may not share, nor choose segments; admins may, unique per type. */
    Yun__NetworkCreateRequest q = YUN__NETWORK_CREATE_REQUEST__INIT;
    q.name = (char *)"x";
    q.shared = true;
    char *msg = NULL;
    assert_int_equal(run(fx, &P1, sched_network_create, &q, NULL, NULL, &msg), YUN_E_DENIED);
    free(msg);
    q.shared = false;
    q.segmentation_id = 1000;
    assert_int_equal(run(fx, &P1, sched_network_create, &q, NULL, NULL, &msg), YUN_E_DENIED);
    free(msg);
    assert_int_equal(run(fx, &ADMIN, sched_network_create, &q, NULL, NULL, &msg),
                     YUN_E_CONFLICT);
    assert_contains(msg, "1000");
    free(msg);
    /* VLAN ids are per physical network, apart from VNIs; one flat
     * network per label. */
    Yun__NetworkCreateRequest vq = YUN__NETWORK_CREATE_REQUEST__INIT;
    vq.name = (char *)"odd";
    vq.network_type = (char *)"vlan";
    vq.physical_network = (char *)"vxlan";
    vq.segmentation_id = 1000;
    assert_int_equal(run(fx, &ADMIN, sched_network_create, &vq, NULL, NULL, NULL), 0);
    vq.segmentation_id = 4095;
    assert_int_equal(run(fx, &ADMIN, sched_network_create, &vq, NULL, NULL, &msg), YUN_E_INVALID);
    free(msg);
    vq.network_type = (char *)"flat";
    vq.segmentation_id = 0;
    vq.physical_network = (char *)"physnet2";
    assert_int_equal(run(fx, &ADMIN, sched_network_create, &vq, NULL, NULL, NULL), 0);
    assert_int_equal(run(fx, &ADMIN, sched_network_create, &vq, NULL, NULL, &msg),
                     YUN_E_CONFLICT);
    assert_contains(msg, "already has a flat network");
    free(msg);
    /* Deleting gives the segment back. */
    Yun__NetworkRef ref = YUN__NETWORK_REF__INIT;
    ref.network = n->id;
    assert_int_equal(run(fx, &P1, sched_network_delete, &ref, NULL, NULL, NULL), 0);
    Yun__NetworkRecord *n3 = mknet(fx, &P1, "net3", "vxlan", false);
    assert_int_equal(n3->segmentation_id, 1000);
    /* By name; another project does not see it. */
    ref.network = (char *)"net3";
    Yun__NetworkReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_network_show, &ref,
                         &yun__network_reply__descriptor, &y, NULL), 0);
    assert_string_equal(y->network->id, n3->id);
    free_msg(y);
    assert_int_equal(run(fx, &P2, sched_network_show, &ref, NULL, NULL, &msg), -ENOENT);
    assert_contains(msg, "'net3' not found");
    free(msg);
    free_msg(n);
    free_msg(n2);
    free_msg(n3);
    free_msg(v);
}

static void
test_subnet_bad_input_unchanged(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkRecord *n = mknet(fx, &P1, "net1", "vxlan", false);
    assert_int_equal(subnet_ex(fx, &P1, "net1", "10.0.0.0/24", NULL, NULL, 0, false, NULL,
                               NULL), 0);
    struct buf before = snapshot(fx);
    static const struct {
        const char *cidr, *gw;
        const char *pools[4];
        size_t n_pools;
        const char *needle;
    } cases[] = {
        { "10.1.0.1/24", NULL, {}, 0, "canonical" },
        { "10.1.0.0/33", NULL, {}, 0, "canonical" },
        { "banana", NULL, {}, 0, "canonical" },
        { "10.1.0.0/31", NULL, {}, 0, "too small" },
        { "10.0.0.128/25", NULL, {}, 0, "overlaps" },
        { "10.0.0.0/16", NULL, {}, 0, "overlaps" },
        { "10.1.0.0/24", "10.2.0.1", {}, 0, "not a host address" },
        { "10.1.0.0/24", "10.1.0.0", {}, 0, "not a host address" },
        { "10.1.0.0/24", "10.1.0.255", {}, 0, "not a host address" },
        { "10.1.0.0/24", "10.1.0.x", {}, 0, "not an IPv4 address" },
        { "10.1.0.0/24", NULL, { "10.1.0.10", "10.1.1.20" }, 1, "not within" },
        { "10.1.0.0/24", NULL, { "10.1.0.10", "10.1.0.20", "10.1.0.15", "10.1.0.30" }, 2,
          "overlaps another pool" },
        { "10.1.0.0/24", NULL, { "10.1.0.1", "10.1.0.20" }, 1, "contains the gateway" },
        { "10.1.0.0/24", NULL, { "10.1.0.30", "10.1.0.20" }, 1, "starts after" },
        { "10.1.0.0/24", NULL, { "10.1.0.3", "nope" }, 1, "two IPv4 addresses" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *msg = NULL;
        int r = subnet_ex(fx, &P1, "net1", cases[i].cidr, cases[i].gw, cases[i].pools,
                          cases[i].n_pools, false, &msg, NULL);
        if (r != YUN_E_INVALID)
            fail_msg("case %zu: %d %s", i, r, msg);
        assert_contains(msg, cases[i].needle);
        free(msg);
        assert_unchanged(fx, &before);
    }
    /* Another project cannot add a subnet to it. */
    char *msg = NULL;
    assert_int_equal(subnet_ex(fx, &P2, "net1", "10.9.0.0/24", NULL, NULL, 0, false, &msg,
                               NULL), -ENOENT);
    free(msg);
    assert_unchanged(fx, &before);
    free(before.data);
    free_msg(n);
}

static void
test_exhausted_pool_and_release(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkRecord *n = mknet(fx, &P1, "small", "vxlan", false);
    static const char *const pool[] = { "10.0.0.5", "10.0.0.6" };
    Yun__SubnetRecord *sn = NULL;
    assert_int_equal(subnet_ex(fx, &P1, "small", "10.0.0.0/29", NULL, pool, 1, false, NULL,
                               &sn), 0);
    assert_string_equal(sn->gateway_ip, "10.0.0.1");
    Yun__PortRecord *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(port_ex(fx, &P1, "small", NULL, &a, NULL), 0);
    assert_int_equal(port_ex(fx, &P1, "small", NULL, &b, NULL), 0);
    assert_string_equal(a->fixed_ips[0]->ip_address, "10.0.0.5");
    assert_string_equal(b->fixed_ips[0]->ip_address, "10.0.0.6");
    assert_int_equal(strncmp(a->mac_address, "fa:16:3e:", 9), 0);
    assert_string_not_equal(a->mac_address, b->mac_address);
    struct buf before = snapshot(fx);
    char *msg = NULL;
    assert_int_equal(port_ex(fx, &P1, "small", NULL, &c, &msg), YUN_E_EXHAUSTED);
    assert_contains(msg, "no free address");
    free(msg);
    assert_unchanged(fx, &before);
    assert_int_equal(port_ex(fx, &P1, "small", "10.9.9.9", NULL, &msg), YUN_E_INVALID);
    assert_contains(msg, "in no subnet");
    free(msg);
    /* A fixed address outside the pool but in the subnet is fine; the
     * gateway and a taken one are not. */
    assert_int_equal(port_ex(fx, &P1, "small", "10.0.0.1", NULL, &msg), YUN_E_INVALID);
    free(msg);
    assert_int_equal(port_ex(fx, &P1, "small", "10.0.0.5", NULL, &msg), YUN_E_CONFLICT);
    free(msg);
    assert_unchanged(fx, &before);
    free(before.data);
    /* Release on delete: the address comes back. */
    Yun__PortRef ref = YUN__PORT_REF__INIT;
    ref.port = a->id;
    assert_int_equal(run(fx, &P1, sched_port_delete, &ref, NULL, NULL, NULL), 0);
    assert_int_equal(db_count(fx, SCHED_DB_IP_ALLOCATIONS), 1);
    assert_int_equal(db_count(fx, SCHED_DB_PORT_MACS), 1);
    assert_int_equal(port_ex(fx, &P1, "small", NULL, &c, NULL), 0);
    assert_string_equal(c->fixed_ips[0]->ip_address, "10.0.0.5");
    free_msg(a);
    free_msg(b);
    free_msg(c);
    free_msg(sn);
    free_msg(n);
}

struct racer {
    struct fixture *fx;
    const char *network_id;
    int index;
    int made;
};

#define RACERS 8
#define PORTS_EACH 25

static void *
race(void *data)
{
    struct racer *rc = data;
    for (int i = 0; i < PORTS_EACH; i++) {
        struct yun_txn *txn = NULL;
        if (yun_txn_begin(rc->fx->s.store, true, &txn) < 0)
            return NULL;
        char inst[64];
        snprintf(inst, sizeof inst, "inst-%d-%d", rc->index, i);
        Yun__PortRecord *p = NULL;
        int r = port_create_for_instance(&rc->fx->s, txn, "p1", rc->network_id, inst, &p);
        if (r == 0 && yun_txn_commit(txn) == 0)
            rc->made++;
        else if (r < 0)
            yun_txn_abort(txn);
        free_msg(p);
    }
    return NULL;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
test_no_duplicate_addresses_concurrent(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkRecord *n = mknet(fx, &P1, "busy", "vxlan", false);
    assert_int_equal(subnet_ex(fx, &P1, "busy", "10.5.0.0/24", NULL, NULL, 0, false, NULL,
                               NULL), 0);
    pthread_t t[RACERS];
    struct racer rc[RACERS];
    for (int i = 0; i < RACERS; i++) {
        rc[i] = (struct racer){ .fx = fx, .network_id = n->id, .index = i };
        assert_int_equal(pthread_create(&t[i], NULL, race, &rc[i]), 0);
    }
    int made = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(t[i], NULL);
        made += rc[i].made;
    }
    assert_int_equal(made, RACERS * PORTS_EACH);
    Yun__PortListRequest q = YUN__PORT_LIST_REQUEST__INIT;
    Yun__PortListReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_port_list, &q, &yun__port_list_reply__descriptor, &y,
                         NULL), 0);
    assert_int_equal(y->n_ports, RACERS * PORTS_EACH);
    char *ips[RACERS * PORTS_EACH], *macs[RACERS * PORTS_EACH];
    for (size_t i = 0; i < y->n_ports; i++) {
        assert_int_equal(y->ports[i]->n_fixed_ips, 1);
        ips[i] = y->ports[i]->fixed_ips[0]->ip_address;
        macs[i] = y->ports[i]->mac_address;
        assert_int_equal(y->ports[i]->n_security_groups, 1);
    }
    qsort(ips, y->n_ports, sizeof *ips, cmp_str);
    qsort(macs, y->n_ports, sizeof *macs, cmp_str);
    for (size_t i = 1; i < y->n_ports; i++) {
        assert_string_not_equal(ips[i - 1], ips[i]);
        assert_string_not_equal(macs[i - 1], macs[i]);
    }
    assert_int_equal(db_count(fx, SCHED_DB_IP_ALLOCATIONS), RACERS * PORTS_EACH);
    free_msg(y);
    /* The glue's delete gives them all back. */
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    for (int i = 0; i < RACERS; i++)
        for (int j = 0; j < PORTS_EACH; j++) {
            char inst[64];
            snprintf(inst, sizeof inst, "inst-%d-%d", i, j);
            assert_int_equal(port_delete_for_instance(&fx->s, txn, inst), 0);
        }
    assert_int_equal(yun_txn_commit(txn), 0);
    assert_int_equal(db_count(fx, SCHED_DB_IP_ALLOCATIONS), 0);
    assert_int_equal(db_count(fx, SCHED_DB_PORT_MACS), 0);
    free_msg(n);
}

static void
test_delete_network_with_ports(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkRecord *n = mknet(fx, &P1, "net1", "vxlan", false);
    assert_int_equal(subnet_ex(fx, &P1, "net1", "10.0.0.0/24", NULL, NULL, 0, false, NULL,
                               NULL), 0);
    put_host(fx, "host-a", "192.0.2.1");
    struct yun_txn *txn = NULL;
    Yun__PortRecord *p = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    assert_int_equal(port_create_for_instance(&fx->s, txn, "p1", n->id, "vm1", &p), 0);
    assert_int_equal(port_bind_host(&fx->s, txn, p->id, "host-a"), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    assert_int_equal(db_count(fx, SCHED_DB_PORTS), 2); /* and the DHCP port */
    struct buf before = snapshot(fx);
    Yun__NetworkRef ref = YUN__NETWORK_REF__INIT;
    ref.network = (char *)"net1";
    char *msg = NULL;
    assert_int_equal(run(fx, &P1, sched_network_delete, &ref, NULL, NULL, &msg), YUN_E_INUSE);
    assert_contains(msg, "has 1 port");
    free(msg);
    Yun__SubnetRef sref = YUN__SUBNET_REF__INIT;
    sref.subnet = n->id; /* not a subnet id */
    assert_int_equal(run(fx, &P1, sched_subnet_delete, &sref, NULL, NULL, &msg), -ENOENT);
    free(msg);
    assert_unchanged(fx, &before);
    free(before.data);
    /* The instance goes: its port and the host's DHCP port go too. */
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    assert_int_equal(port_delete_for_instance(&fx->s, txn, "vm1"), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    assert_int_equal(db_count(fx, SCHED_DB_PORTS), 0);
    assert_int_equal(db_count(fx, SCHED_DB_IP_ALLOCATIONS), 0);
    /* DHCP ports alone do not hold a network. */
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    free_msg(p);
    assert_int_equal(port_create_for_instance(&fx->s, txn, "p1", n->id, "vm2", &p), 0);
    assert_int_equal(port_bind_host(&fx->s, txn, p->id, "host-a"), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    Yun__PortRef pref = YUN__PORT_REF__INIT;
    pref.port = p->id;
    fx->n_changed = 0;
    assert_int_equal(run(fx, &P1, sched_port_delete, &pref, NULL, NULL, NULL), 0);
    assert_true(fx->n_changed >= 1);
    assert_string_equal(fx->changed[0], "host-a");
    assert_int_equal(db_count(fx, SCHED_DB_PORTS), 0); /* the DHCP port went with it */
    assert_int_equal(run(fx, &P1, sched_network_delete, &ref, NULL, NULL, NULL), 0);
    assert_int_equal(db_count(fx, SCHED_DB_NETWORKS), 0);
    assert_int_equal(db_count(fx, SCHED_DB_SUBNETS), 0);
    assert_int_equal(db_count(fx, SCHED_DB_NETWORK_SEGMENTS), 0);
    free_msg(p);
    free_msg(n);
}

static void
test_subnet_delete_and_update(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkRecord *n = mknet(fx, &P1, "net1", "vxlan", false);
    static const char *const pool[] = { "10.0.0.10", "10.0.0.20" };
    Yun__SubnetRecord *sn = NULL;
    assert_int_equal(subnet_ex(fx, &P1, "net1", "10.0.0.0/24", NULL, pool, 1, false, NULL,
                               &sn), 0);
    Yun__PortRecord *p = NULL;
    assert_int_equal(port_ex(fx, &P1, "net1", "10.0.0.50", &p, NULL), 0);
    char *msg = NULL;
    Yun__SubnetRef ref = YUN__SUBNET_REF__INIT;
    ref.subnet = sn->id;
    assert_int_equal(run(fx, &P1, sched_subnet_delete, &ref, NULL, NULL, &msg), YUN_E_INUSE);
    free(msg);
    /* The gateway moves only to a free host address outside the pools. */
    Yun__SubnetUpdateRequest u = YUN__SUBNET_UPDATE_REQUEST__INIT;
    u.subnet = sn->id;
    static const char *const bad_gw[] = { "10.0.0.50", "10.0.0.15", "10.0.1.1", "10.0.0.255" };
    struct buf before = snapshot(fx);
    for (size_t i = 0; i < 4; i++) {
        u.gateway_ip = (char *)bad_gw[i];
        int r = run(fx, &P1, sched_subnet_update, &u, NULL, NULL, &msg);
        assert_true(r == YUN_E_INVALID || r == YUN_E_CONFLICT);
        free(msg);
    }
    assert_unchanged(fx, &before);
    free(before.data);
    u.gateway_ip = (char *)"10.0.0.254";
    Yun__SubnetReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_subnet_update, &u, &yun__subnet_reply__descriptor, &y,
                         NULL), 0);
    assert_string_equal(y->subnet->gateway_ip, "10.0.0.254");
    free_msg(y);
    Yun__PortRef pref = YUN__PORT_REF__INIT;
    pref.port = p->id;
    assert_int_equal(run(fx, &P1, sched_port_delete, &pref, NULL, NULL, NULL), 0);
    assert_int_equal(run(fx, &P1, sched_subnet_delete, &ref, NULL, NULL, NULL), 0);
    Yun__NetworkRef nref = YUN__NETWORK_REF__INIT;
    nref.network = n->id;
    Yun__NetworkReply *ny = NULL;
    assert_int_equal(run(fx, &P1, sched_network_show, &nref, &yun__network_reply__descriptor,
                         &ny, NULL), 0);
    assert_int_equal(ny->network->n_subnets, 0);
    free_msg(ny);
    free_msg(p);
    free_msg(sn);
    free_msg(n);
}

static Yun__SecurityGroupRecord *
find_group(struct fixture *fx, const struct who *w, const char *name)
{
    Yun__SecurityGroupRef q = YUN__SECURITY_GROUP_REF__INIT;
    q.security_group = (char *)name;
    Yun__SecurityGroupReply *y = NULL;
    assert_int_equal(run(fx, w, sched_security_group_show, &q,
                         &yun__security_group_reply__descriptor, &y, NULL), 0);
    Yun__SecurityGroupRecord *g = y->security_group;
    y->security_group = NULL;
    free_msg(y);
    return g;
}

static void
test_default_group(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(db_count(fx, SCHED_DB_SECURITY_GROUPS), 0);
    Yun__NetworkRecord *n = mknet(fx, &P1, "net1", "vxlan", false);
    assert_int_equal(db_count(fx, SCHED_DB_SECURITY_GROUPS), 1);
    Yun__SecurityGroupRecord *g = find_group(fx, &P1, "default");
    assert_string_equal(g->project, "p1");
    assert_int_equal(g->n_rules, 2);
    bool egress = false, ingress = false;
    for (size_t i = 0; i < g->n_rules; i++) {
        const Yun__SecurityGroupRule *r = g->rules[i];
        if (strcmp(r->direction, "egress") == 0 && !*r->remote_group_id &&
            !*r->remote_ip_prefix && !*r->protocol)
            egress = true;
        if (strcmp(r->direction, "ingress") == 0 && strcmp(r->remote_group_id, g->id) == 0)
            ingress = true;
    }
    assert_true(egress && ingress);
    /* New ports get it. */
    assert_int_equal(subnet_ex(fx, &P1, "net1", "10.0.0.0/24", NULL, NULL, 0, false, NULL,
                               NULL), 0);
    Yun__PortRecord *p = NULL;
    assert_int_equal(port_ex(fx, &P1, "net1", NULL, &p, NULL), 0);
    assert_int_equal(p->n_security_groups, 1);
    assert_string_equal(p->security_groups[0], g->id);
    /* It is not deleted, nor renamed; another project gets its own. */
    Yun__SecurityGroupRef ref = YUN__SECURITY_GROUP_REF__INIT;
    ref.security_group = (char *)"default";
    char *msg = NULL;
    assert_int_equal(run(fx, &P1, sched_security_group_delete, &ref, NULL, NULL, &msg),
                     YUN_E_CONFLICT);
    free(msg);
    Yun__SecurityGroupRecord *g2 = find_group(fx, &P2, "default");
    assert_string_not_equal(g2->id, g->id);
    assert_string_equal(g2->project, "p2");
    /* A group in use by a port stays. */
    Yun__SecurityGroupCreateRequest c = YUN__SECURITY_GROUP_CREATE_REQUEST__INIT;
    c.name = (char *)"web";
    assert_int_equal(run(fx, &P1, sched_security_group_create, &c, NULL, NULL, NULL), 0);
    Yun__PortUpdateRequest u = YUN__PORT_UPDATE_REQUEST__INIT;
    u.port = p->id;
    u.set_security_groups = true;
    char *groups[] = { (char *)"web" };
    u.security_groups = groups;
    u.n_security_groups = 1;
    assert_int_equal(run(fx, &P1, sched_port_update, &u, NULL, NULL, NULL), 0);
    ref.security_group = (char *)"web";
    assert_int_equal(run(fx, &P1, sched_security_group_delete, &ref, NULL, NULL, &msg),
                     YUN_E_INUSE);
    free(msg);
    /* Port security off needs no groups. */
    u.set_security_groups = false;
    u.set_port_security = true;
    u.port_security_enabled = false;
    assert_int_equal(run(fx, &P1, sched_port_update, &u, NULL, NULL, &msg), YUN_E_INVALID);
    free(msg);
    u.set_security_groups = true;
    u.n_security_groups = 0;
    assert_int_equal(run(fx, &P1, sched_port_update, &u, NULL, NULL, NULL), 0);
    assert_int_equal(run(fx, &P1, sched_security_group_delete, &ref, NULL, NULL, NULL), 0);
    free_msg(p);
    free_msg(g);
    free_msg(g2);
    free_msg(n);
}

static int
rule(struct fixture *fx, const char *group, const char *dir, const char *proto, bool range,
     uint32_t min, uint32_t max, const char *prefix, const char *remote, char **msg)
{
    Yun__SecurityGroupRuleCreateRequest q = YUN__SECURITY_GROUP_RULE_CREATE_REQUEST__INIT;
    q.security_group = (char *)group;
    q.direction = (char *)dir;
    q.protocol = (char *)proto;
    q.has_port_range = range;
    q.port_range_min = min;
    q.port_range_max = max;
    q.remote_ip_prefix = (char *)(prefix ? prefix : "");
    q.remote_group = (char *)(remote ? remote : "");
    return run(fx, &P1, sched_security_group_rule_create, &q, NULL, NULL, msg);
}

static void
test_rules_validation(void **state)
{
    struct fixture *fx = *state;
    Yun__SecurityGroupCreateRequest c = YUN__SECURITY_GROUP_CREATE_REQUEST__INIT;
    c.name = (char *)"web";
    assert_int_equal(run(fx, &P1, sched_security_group_create, &c, NULL, NULL, NULL), 0);
    struct buf before = snapshot(fx);
    static const struct {
        const char *dir, *proto;
        bool range;
        uint32_t min, max;
        const char *prefix, *remote, *needle;
    } bad[] = {
        { "sideways", "tcp", false, 0, 0, NULL, NULL, "neither ingress" },
        { "ingress", "sctpx", false, 0, 0, NULL, NULL, "Protocol" },
        { "ingress", "256", false, 0, 0, NULL, NULL, "Protocol" },
        { "ingress", "tcp", true, 90, 80, NULL, NULL, "ends before" },
        { "ingress", "tcp", true, 0, 80, NULL, NULL, "1 to 65535" },
        { "ingress", "udp", true, 1, 70000, NULL, NULL, "1 to 65535" },
        { "ingress", "any", true, 22, 22, NULL, NULL, "has no ports" },
        { "ingress", "47", true, 22, 22, NULL, NULL, "has no ports" },
        { "ingress", "icmp", true, 300, 0, NULL, NULL, "ICMP type" },
        { "ingress", "tcp", true, 22, 22, "10.0.0.0/8", "default", "not both" },
        { "ingress", "tcp", true, 22, 22, "10.0.0/8", NULL, "not an IPv4 CIDR" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *msg = NULL;
        int r = rule(fx, "web", bad[i].dir, bad[i].proto, bad[i].range, bad[i].min,
                     bad[i].max, bad[i].prefix, bad[i].remote, &msg);
        if (r != YUN_E_INVALID)
            fail_msg("case %zu: %d %s", i, r, msg);
        assert_contains(msg, bad[i].needle);
        free(msg);
        assert_unchanged(fx, &before);
    }
    free(before.data);
    assert_int_equal(rule(fx, "web", "ingress", "tcp", true, 80, 443, "10.0.0.0/8", NULL, NULL),
                     0);
    char *msg = NULL;
    assert_int_equal(rule(fx, "web", "ingress", "6", true, 80, 443, "10.0.0.0/8", NULL, &msg),
                     YUN_E_CONFLICT);
    free(msg);
    assert_int_equal(rule(fx, "web", "ingress", "icmp", true, 8, 0, NULL, "default", NULL), 0);
    assert_int_equal(rule(fx, "web", "ingress", "udp", false, 0, 0, "10.1.2.3/16", NULL, NULL),
                     0);
    Yun__SecurityGroupRecord *g = find_group(fx, &P1, "web");
    assert_int_equal(g->n_rules, 4); /* egress + 3 */
    assert_string_equal(g->rules[3]->remote_ip_prefix, "10.1.0.0/16");
    Yun__SecurityGroupRuleRef ref = YUN__SECURITY_GROUP_RULE_REF__INIT;
    ref.rule = g->rules[1]->id;
    assert_int_equal(run(fx, &P2, sched_security_group_rule_delete, &ref, NULL, NULL, &msg),
                     -ENOENT);
    free(msg);
    assert_int_equal(run(fx, &P1, sched_security_group_rule_delete, &ref, NULL, NULL, NULL), 0);
    Yun__SecurityGroupRuleListRequest lq = YUN__SECURITY_GROUP_RULE_LIST_REQUEST__INIT;
    lq.security_group = (char *)"web";
    Yun__SecurityGroupRuleListReply *ly = NULL;
    assert_int_equal(run(fx, &P1, sched_security_group_rule_list, &lq,
                         &yun__security_group_rule_list_reply__descriptor, &ly, NULL), 0);
    assert_int_equal(ly->n_rules, 3);
    free_msg(ly);
    /* The default group is the remote of a web rule: it cannot go. */
    free_msg(g);
}

static void
test_visibility_shared(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkRecord *pub = mknet(fx, &ADMIN, "public", "vxlan", true);
    Yun__NetworkRecord *own = mknet(fx, &P1, "mine", "vxlan", false);
    assert_int_equal(subnet_ex(fx, &ADMIN, "public", "172.16.0.0/24", NULL, NULL, 0, false,
                               NULL, NULL), 0);
    Yun__NetworkListRequest q = YUN__NETWORK_LIST_REQUEST__INIT;
    Yun__NetworkListReply *y = NULL;
    assert_int_equal(run(fx, &P2, sched_network_list, &q, &yun__network_list_reply__descriptor,
                         &y, NULL), 0);
    assert_int_equal(y->n_networks, 1);
    assert_string_equal(y->networks[0]->name, "public");
    free_msg(y);
    char *msg = NULL;
    q.all_projects = true;
    assert_int_equal(run(fx, &P2, sched_network_list, &q, NULL, NULL, &msg), YUN_E_DENIED);
    free(msg);
    assert_int_equal(run(fx, &ADMIN, sched_network_list, &q,
                         &yun__network_list_reply__descriptor, &y, NULL), 0);
    assert_int_equal(y->n_networks, 2);
    free_msg(y);
    /* A port on a shared network is the caller's; the network stays the admin's. */
    Yun__PortRecord *p = NULL;
    assert_int_equal(port_ex(fx, &P2, "public", NULL, &p, NULL), 0);
    assert_string_equal(p->project, "p2");
    Yun__PortListRequest pq = YUN__PORT_LIST_REQUEST__INIT;
    Yun__PortListReply *py = NULL;
    assert_int_equal(run(fx, &P1, sched_port_list, &pq, &yun__port_list_reply__descriptor, &py,
                         NULL), 0);
    assert_int_equal(py->n_ports, 0);
    free_msg(py);
    Yun__NetworkUpdateRequest u = YUN__NETWORK_UPDATE_REQUEST__INIT;
    u.network = (char *)"public";
    u.name = (char *)"mine-now";
    assert_int_equal(run(fx, &P2, sched_network_update, &u, NULL, NULL, &msg), YUN_E_DENIED);
    free(msg);
    /* Bad text is refused. */
    u.network = (char *)"mine";
    u.name = (char *)"bad\x01name";
    assert_int_equal(run(fx, &P1, sched_network_update, &u, NULL, NULL, &msg), YUN_E_INVALID);
    free(msg);
    free_msg(p);
    free_msg(pub);
    free_msg(own);
}

static void
test_host_state(void **state)
{
    struct fixture *fx = *state;
    put_host(fx, "host-a", "192.0.2.1");
    put_host(fx, "host-b", "192.0.2.2");
    put_host(fx, "host-c", "");
    Yun__NetworkRecord *n = mknet(fx, &P1, "net1", "vxlan", false);
    Yun__NetworkRecord *other = mknet(fx, &P1, "net2", "vxlan", false);
    assert_int_equal(subnet_ex(fx, &P1, "net1", "10.0.0.0/24", NULL, NULL, 0, false, NULL,
                               NULL), 0);
    assert_int_equal(subnet_ex(fx, &P1, "net2", "10.2.0.0/24", NULL, NULL, 0, false, NULL,
                               NULL), 0);
    struct yun_txn *txn = NULL;
    Yun__PortRecord *pa = NULL, *pb = NULL, *pc = NULL, *po = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    Yun__NetworkRecord *found = NULL;
    assert_int_equal(network_find_usable(&fx->s, txn, NULL, "net1", &found), 0);
    assert_string_equal(found->id, n->id);
    free_msg(found);
    assert_int_equal(port_create_for_instance(&fx->s, txn, "p1", n->id, "vm-a", &pa), 0);
    assert_int_equal(port_create_for_instance(&fx->s, txn, "p1", n->id, "vm-b", &pb), 0);
    assert_int_equal(port_create_for_instance(&fx->s, txn, "p1", n->id, "vm-c", &pc), 0);
    assert_int_equal(port_create_for_instance(&fx->s, txn, "p1", other->id, "vm-o", &po), 0);
    assert_int_equal(port_bind_host(&fx->s, txn, pa->id, "host-a"), 0);
    assert_int_equal(port_bind_host(&fx->s, txn, pa->id, "host-a"), 0); /* idempotent */
    assert_int_equal(port_bind_host(&fx->s, txn, pb->id, "host-b"), 0);
    assert_int_equal(port_bind_host(&fx->s, txn, pc->id, "host-c"), 0);
    assert_int_equal(port_bind_host(&fx->s, txn, po->id, "host-b"), 0);
    assert_int_equal(yun_txn_commit(txn), 0);

    assert_int_equal(yun_txn_begin(fx->s.store, false, &txn), 0);
    Yun__HostNetworkState *st = NULL;
    assert_int_equal(network_host_state(&fx->s, txn, "host-a", &st), 0);
    Yun__PortRecord **mine = NULL;
    size_t n_mine = 0;
    assert_int_equal(ports_of_instance(&fx->s, txn, "vm-a", &mine, &n_mine), 0);
    assert_int_equal(n_mine, 1);
    assert_string_equal(mine[0]->host_id, "host-a");
    net_free_all((ProtobufCMessage **)mine, n_mine);
    yun_txn_abort(txn);
    assert_string_equal(st->host_id, "host-a");
    assert_true(st->generation > 0);
    assert_int_equal(st->n_networks, 1);
    assert_string_equal(st->networks[0]->id, n->id);
    assert_int_equal(st->n_subnets, 1);
    assert_int_equal(st->n_ports, 2); /* the instance's and the DHCP port */
    bool dhcp = false;
    for (size_t i = 0; i < st->n_ports; i++)
        if (strcmp(st->ports[i]->device_owner, NETWORK_DEVICE_OWNER_DHCP) == 0) {
            dhcp = true;
            assert_string_equal(st->ports[i]->device_id, "dhcp-host-a");
            assert_int_equal(st->ports[i]->n_fixed_ips, 1);
        }
    assert_true(dhcp);
    assert_int_equal(st->n_security_groups, 1);
    assert_string_equal(st->security_groups[0]->name, "default");
    /* The default group names itself as remote: its members are every
     * port of it, on any host. */
    assert_int_equal(st->n_group_members, 1);
    assert_int_equal(st->group_members[0]->n_ip_addresses, 4);
    /* VTEPs: the other hosts with a tunnel address, never this one. */
    assert_int_equal(st->n_vteps, 1);
    assert_string_equal(st->vteps[0]->network_id, n->id);
    assert_int_equal(st->vteps[0]->n_remote_ips, 1);
    assert_string_equal(st->vteps[0]->remote_ips[0], "192.0.2.2");
    assert_int_equal(st->n_metadata, 0);
    free_msg(st);

    /* A rule change reaches every host with a port in the group. */
    fx->n_changed = 0;
    char *msg = NULL;
    assert_int_equal(rule(fx, "default", "ingress", "tcp", true, 22, 22, "0.0.0.0/0", NULL,
                          &msg), 0);
    assert_int_equal(fx->n_changed, 3);
    /* A host with nothing: an empty state. */
    assert_int_equal(yun_txn_begin(fx->s.store, false, &txn), 0);
    assert_int_equal(network_host_state(&fx->s, txn, "host-z", &st), 0);
    yun_txn_abort(txn);
    assert_int_equal(st->n_ports, 0);
    assert_int_equal(st->n_vteps, 0);
    free_msg(st);
    free_msg(pa);
    free_msg(pb);
    free_msg(pc);
    free_msg(po);
    free_msg(n);
    free_msg(other);
}

static void
test_dhcp_late_subnet_and_project_delete(void **state)
{
    struct fixture *fx = *state;
    put_host(fx, "host-a", "192.0.2.1");
    Yun__NetworkRecord *n = mknet(fx, &P1, "net1", "vxlan", false);
    assert_int_equal(subnet_ex(fx, &P1, "net1", "10.0.0.0/24", NULL, NULL, 0, false, NULL,
                               NULL), 0);
    struct yun_txn *txn = NULL;
    Yun__PortRecord *p = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    assert_int_equal(port_create_for_instance(&fx->s, txn, "p1", n->id, "vm1", &p), 0);
    assert_int_equal(port_bind_host(&fx->s, txn, p->id, "host-a"), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    /* A second subnet: the host's DHCP port gets an address of it too. */
    fx->n_changed = 0;
    assert_int_equal(subnet_ex(fx, &P1, "net1", "10.1.0.0/24", NULL, NULL, 0, false, NULL,
                               NULL), 0);
    assert_int_equal(fx->n_changed, 1);
    Yun__PortListRequest q = YUN__PORT_LIST_REQUEST__INIT;
    q.device_id = (char *)"dhcp-host-a";
    Yun__PortListReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_port_list, &q, &yun__port_list_reply__descriptor, &y,
                         NULL), 0);
    assert_int_equal(y->n_ports, 1);
    assert_int_equal(y->ports[0]->n_fixed_ips, 2);
    assert_string_equal(y->ports[0]->fixed_ips[1]->ip_address, "10.1.0.2");
    free_msg(y);
    /* Only the owner's admin can unshare; a project with objects stays. */
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    assert_int_equal(network_project_delete(&fx->s, txn, "p1"), YUN_E_INUSE);
    assert_int_equal(port_delete_for_instance(&fx->s, txn, "vm1"), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    Yun__NetworkRef ref = YUN__NETWORK_REF__INIT;
    ref.network = n->id;
    assert_int_equal(run(fx, &P1, sched_network_delete, &ref, NULL, NULL, NULL), 0);
    assert_int_equal(db_count(fx, SCHED_DB_SECURITY_GROUPS), 1);
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    assert_int_equal(network_project_delete(&fx->s, txn, "p1"), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    assert_int_equal(db_count(fx, SCHED_DB_SECURITY_GROUPS), 0);
    assert_int_equal(db_count(fx, SCHED_DB_DEFAULT_SECURITY_GROUPS), 0);
    free_msg(p);
    free_msg(n);
}

static void
test_unshare_with_foreign_ports(void **state)
{
    struct fixture *fx = *state;
    Yun__NetworkRecord *n = mknet(fx, &ADMIN, "public", "vxlan", true);
    assert_int_equal(subnet_ex(fx, &ADMIN, "public", "10.0.0.0/24", NULL, NULL, 0, false, NULL,
                               NULL), 0);
    Yun__PortRecord *p = NULL;
    assert_int_equal(port_ex(fx, &P2, "public", NULL, &p, NULL), 0);
    /* An admin's port bound to a host (by name or id; the port records
     * the id) brings the host's DHCP port. */
    static const char host_a[] = "6f1c2a9e-0d4b-4c8e-9a31-2b7e5d0c4f11";
    put_named_host(fx, host_a, "host-a", "192.0.2.1");
    Yun__PortCreateRequest pq = YUN__PORT_CREATE_REQUEST__INIT;
    pq.network = (char *)"public";
    pq.host_id = (char *)"host-a";
    fx->n_changed = 0;
    Yun__PortReply *pr = NULL;
    assert_int_equal(run(fx, &ADMIN, sched_port_create, &pq, &yun__port_reply__descriptor,
                         (ProtobufCMessage **)&pr, NULL), 0);
    assert_string_equal(pr->port->host_id, host_a);
    free_msg(pr);
    assert_int_equal(fx->n_changed, 1);
    assert_int_equal(db_count(fx, SCHED_DB_PORTS), 3);
    pq.host_id = (char *)host_a;
    assert_int_equal(run(fx, &ADMIN, sched_port_create, &pq, NULL, NULL, NULL), 0);
    assert_int_equal(db_count(fx, SCHED_DB_PORTS), 4); /* the same DHCP port */
    pq.host_id = (char *)"host-zz";
    char *hmsg = NULL;
    assert_int_equal(run(fx, &ADMIN, sched_port_create, &pq, NULL, NULL, &hmsg), YUN_E_NOHOST);
    free(hmsg);
    pq.host_id = (char *)"host-a";
    assert_int_equal(run(fx, &P2, sched_port_create, &pq, NULL, NULL, &hmsg), YUN_E_DENIED);
    free(hmsg);
    Yun__NetworkUpdateRequest u = YUN__NETWORK_UPDATE_REQUEST__INIT;
    u.network = (char *)"public";
    u.set_shared = true;
    u.shared = false;
    char *msg = NULL;
    assert_int_equal(run(fx, &ADMIN, sched_network_update, &u, NULL, NULL, &msg), YUN_E_INUSE);
    assert_contains(msg, "other projects");
    free(msg);
    Yun__PortRef ref = YUN__PORT_REF__INIT;
    ref.port = p->id;
    assert_int_equal(run(fx, &P2, sched_port_delete, &ref, NULL, NULL, NULL), 0);
    assert_int_equal(run(fx, &ADMIN, sched_network_update, &u, NULL, NULL, NULL), 0);
    free_msg(p);
    free_msg(n);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipam_math),
        cmocka_unit_test(test_ipam_first_free),
        cmocka_unit_test_setup_teardown(test_network_create_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subnet_bad_input_unchanged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exhausted_pool_and_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_duplicate_addresses_concurrent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_delete_network_with_ports, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subnet_delete_and_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_visibility_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dhcp_late_subnet_and_project_delete, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unshare_with_foreign_ports, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
