/* SPDX-License-Identifier: Apache-2.0
 * port.c: ports, their MACs and addresses (Melange's role), and the
 * desired network state of a host.
 *
 * A port is on one network, with a MAC unique on it (index "port_macs":
 * "network id NUL mac" -> port id) and by default one address from the
 * network's first subnet (index "ip_allocations": "subnet id NUL be32
 * address" -> port id). Both indexes are written in the write transaction
 * that writes the port: LMDB has one writer, so two concurrent creates
 * can never take the same address or MAC. The next free address is the
 * lowest one of the subnet's pools that has no key: a walk of the index
 * in key order from each pool's start.
 *
 * DHCP ports (device_owner network:dhcp, device_id "dhcp-<host id>") are
 * made when the first port of a network is bound to a host whose subnets
 * have DHCP on, and go with the last one.
 *
 * Neighbours: network.c (networks, subnets, look-ups), security-group.c
 * (the default group), ipam.c (address arithmetic), instance.c (the
 * compute glue calls the network.h API). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "ipam.h"
#include "log.h"
#include "network-priv.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "host.pb-c.h"

YUN_LOG_MODULE("sched.port");

#define MAC_ATTEMPTS 32
#define DEVICE_MAX 255

static void
msg_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_msg_ _cleanup_(msg_freep)

/* --- addresses ---------------------------------------------------------------- */

static size_t
alloc_key(const char *subnet_id, uint32_t addr, uint8_t *buf, size_t size)
{
    size_t len = strlen(subnet_id);
    if (len + 5 > size)
        return 0;
    memcpy(buf, subnet_id, len);
    buf[len] = 0;
    uint32_t be = htonl(addr);
    memcpy(buf + len + 1, &be, 4);
    return len + 5;
}

int
net_ip_is_allocated(struct yun_txn *txn, const char *subnet_id, uint32_t ip)
{
    uint8_t key[NET_NAME_MAX + 8];
    size_t ks = alloc_key(subnet_id, ip, key, sizeof key);
    if (!ks)
        return -EINVAL;
    const void *v;
    size_t vs;
    int r = yun_txn_get(txn, SCHED_DB_IP_ALLOCATIONS, key, ks, &v, &vs);
    return r == 0 ? 1 : r == -ENOENT ? 0 : r;
}

static int
ip_claim(struct yun_txn *txn, const char *subnet_id, uint32_t ip, const char *port_id)
{
    int r = net_ip_is_allocated(txn, subnet_id, ip);
    if (r < 0)
        return r;
    if (r > 0)
        return -EEXIST;
    uint8_t key[NET_NAME_MAX + 8];
    size_t ks = alloc_key(subnet_id, ip, key, sizeof key);
    return yun_txn_put(txn, SCHED_DB_IP_ALLOCATIONS, key, ks, port_id, strlen(port_id));
}

int
net_ip_release(struct yun_txn *txn, const char *subnet_id, const char *ip)
{
    uint32_t a;
    if (ipam_parse_addr(ip, &a) < 0)
        return 0;
    uint8_t key[NET_NAME_MAX + 8];
    size_t ks = alloc_key(subnet_id, a, key, sizeof key);
    if (!ks)
        return 0;
    int r = yun_txn_del(txn, SCHED_DB_IP_ALLOCATIONS, key, ks);
    return r == -ENOENT ? 0 : r;
}

struct free_scan {
    const uint8_t *prefix;
    size_t prefix_size;
    uint64_t candidate, end;
    uint32_t *addrs;            /* net_ip_release_all: the keys seen */
    size_t n;
};

static int
scan_free(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct free_scan *sc = data;
    if (key_size != sc->prefix_size + 4 || memcmp(key, sc->prefix, sc->prefix_size) != 0)
        return 1;
    uint32_t be;
    memcpy(&be, (const uint8_t *)key + sc->prefix_size, 4);
    uint32_t a = ntohl(be);
    if (a > sc->candidate)
        return 1;
    if (a == sc->candidate)
        sc->candidate++;
    return sc->candidate > sc->end ? 1 : 0;
}

static int
cmp_range(const void *a, const void *b)
{
    const struct ipam_range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* The lowest free address of the pools of 'sn'. */
static int
ip_find_free(struct yun_txn *txn, const Yun__SubnetRecord *sn, uint32_t *ret)
{
    struct ipam_range pools[NET_POOLS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < sn->n_allocation_pools && n < NET_POOLS_MAX; i++)
        if (ipam_parse_addr(sn->allocation_pools[i]->start, &pools[n].start) == 0 &&
            ipam_parse_addr(sn->allocation_pools[i]->end, &pools[n].end) == 0 &&
            pools[n].start <= pools[n].end)
            n++;
    qsort(pools, n, sizeof *pools, cmp_range);
    for (size_t i = 0; i < n; i++) {
        uint8_t start[NET_NAME_MAX + 8];
        size_t ks = alloc_key(sn->id, pools[i].start, start, sizeof start);
        if (!ks)
            return -EINVAL;
        struct free_scan sc = {
            .prefix = start, .prefix_size = ks - 4, .candidate = pools[i].start,
            .end = pools[i].end,
        };
        int r = yun_txn_iterate(txn, SCHED_DB_IP_ALLOCATIONS, start, ks, scan_free, &sc);
        if (r < 0)
            return r;
        if (sc.candidate <= sc.end) {
            *ret = (uint32_t)sc.candidate;
            return 0;
        }
    }
    return YUN_E_EXHAUSTED;
}

static int
scan_all(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct free_scan *sc = data;
    if (key_size != sc->prefix_size + 4 || memcmp(key, sc->prefix, sc->prefix_size) != 0)
        return 1;
    uint32_t *p = realloc(sc->addrs, (sc->n + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    sc->addrs = p;
    uint32_t be;
    memcpy(&be, (const uint8_t *)key + sc->prefix_size, 4);
    p[sc->n++] = ntohl(be);
    return 0;
}

int
net_ip_release_all(struct yun_txn *txn, const char *subnet_id)
{
    uint8_t start[NET_NAME_MAX + 8];
    size_t ks = alloc_key(subnet_id, 0, start, sizeof start);
    if (!ks)
        return 0;
    struct free_scan sc = { .prefix = start, .prefix_size = ks - 4 };
    int r = yun_txn_iterate(txn, SCHED_DB_IP_ALLOCATIONS, start, ks, scan_all, &sc);
    for (size_t i = 0; r == 0 && i < sc.n; i++) {
        uint8_t key[NET_NAME_MAX + 8];
        size_t n = alloc_key(subnet_id, sc.addrs[i], key, sizeof key);
        r = yun_txn_del(txn, SCHED_DB_IP_ALLOCATIONS, key, n);
    }
    free(sc.addrs);
    return r;
}

/* --- MACs --------------------------------------------------------------------- */

static size_t
mac_key(const char *network_id, const char *mac, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s%c%s", network_id, 0, mac);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* Normalises "AA:bb:..." into lower case in 'out'; -EINVAL unless six
 * two-digit hex octets of a unicast, non-zero address. */
static int
mac_parse(const char *s, char out[NET_MAC_STR_SIZE])
{
    if (strlen(s) != 17)
        return -EINVAL;
    bool zero = true;
    for (int i = 0; i < 17; i++) {
        char c = s[i];
        if (i % 3 == 2) {
            if (c != ':')
                return -EINVAL;
            out[i] = ':';
            continue;
        }
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return -EINVAL;
        if (c != '0')
            zero = false;
        out[i] = c;
    }
    out[17] = '\0';
    unsigned first = (unsigned)strtoul((char[]){ out[0], out[1], 0 }, NULL, 16);
    if (zero || (first & 1))
        return -EINVAL;
    return 0;
}

static int
mac_claim(struct yun_txn *txn, const char *network_id, const char *mac, const char *port_id)
{
    char key[NET_NAME_MAX + NET_MAC_STR_SIZE + 2];
    size_t ks = mac_key(network_id, mac, key, sizeof key);
    if (!ks)
        return -EINVAL;
    const void *v;
    size_t vs;
    int r = yun_txn_get(txn, SCHED_DB_PORT_MACS, key, ks, &v, &vs);
    if (r == 0)
        return -EEXIST;
    if (r != -ENOENT)
        return r;
    return yun_txn_put(txn, SCHED_DB_PORT_MACS, key, ks, port_id, strlen(port_id));
}

static int
mac_release(struct yun_txn *txn, const char *network_id, const char *mac)
{
    char key[NET_NAME_MAX + NET_MAC_STR_SIZE + 2];
    size_t ks = mac_key(network_id, mac, key, sizeof key);
    if (!ks)
        return 0;
    int r = yun_txn_del(txn, SCHED_DB_PORT_MACS, key, ks);
    return r == -ENOENT ? 0 : r;
}

/* A random fa:16:3e:xx:xx:xx (OpenStack's prefix) not yet used on the
 * network, claimed for 'port_id'. */
static int
mac_allocate(struct yun_txn *txn, const char *network_id, const char *port_id,
             char out[NET_MAC_STR_SIZE])
{
    for (int i = 0; i < MAC_ATTEMPTS; i++) {
        uint8_t b[3];
        if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
            return -EIO;
        snprintf(out, NET_MAC_STR_SIZE, "fa:16:3e:%02x:%02x:%02x", b[0], b[1], b[2]);
        int r = mac_claim(txn, network_id, out, port_id);
        if (r != -EEXIST)
            return r;
    }
    return YUN_E_EXHAUSTED;
}

/* --- making and removing ports -------------------------------------------------- */

int
net_port_remove(struct yun_txn *txn, const Yun__PortRecord *p)
{
    int r = 0;
    for (size_t i = 0; r == 0 && i < p->n_fixed_ips; i++)
        r = net_ip_release(txn, p->fixed_ips[i]->subnet_id, p->fixed_ips[i]->ip_address);
    if (r == 0)
        r = mac_release(txn, p->network_id, p->mac_address);
    if (r == 0)
        r = yun_txn_del(txn, SCHED_DB_PORTS, p->id, strlen(p->id));
    return r == -ENOENT ? 0 : r;
}

static bool
network_has_subnet(const Yun__NetworkRecord *net, const char *subnet_id)
{
    for (size_t i = 0; i < net->n_subnets; i++)
        if (strcmp(net->subnets[i], subnet_id) == 0)
            return true;
    return false;
}

/* Claims an address of subnet 'subnet_id' ('want' "" = any) for 'port_id'
 * into 'out'. Only a router port ('gateway_ok') may take the gateway's
 * address, as a Neutron router interface does. */
static int
ip_take(struct sched_call *call, struct yun_txn *txn, const Yun__NetworkRecord *net,
        const char *subnet_id, const char *want, const char *port_id, bool gateway_ok,
        char out[IPAM_ADDR_STR_SIZE])
{
    if (!network_has_subnet(net, subnet_id))
        return net_error(call, YUN_E_INVALID, "Subnet '%.64s' is not on network '%s'.",
                         subnet_id, net->name);
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    int r = net_load(txn, &net_kind_subnet, subnet_id, &m);
    if (r == -ENOENT)
        return net_error(call, -ENOENT, "Subnet '%.64s' not found.", subnet_id);
    if (r < 0)
        return r;
    const Yun__SubnetRecord *sn = (const Yun__SubnetRecord *)m;
    uint32_t a;
    if (*want) {
        struct ipam_cidr c;
        if (ipam_parse_addr(want, &a) < 0)
            return net_error(call, YUN_E_INVALID, "'%.32s' is not an IPv4 address.", want);
        if (ipam_parse_cidr(sn->cidr, true, &c) < 0)
            return -EBADMSG;
        if (!ipam_is_host(&c, a))
            return net_error(call, YUN_E_INVALID,
                             "Address '%s' is not a host address of subnet '%s' (%s).", want,
                             *sn->name ? sn->name : sn->id, sn->cidr);
        if (strcmp(sn->gateway_ip, want) == 0 && !gateway_ok)
            return net_error(call, YUN_E_INVALID, "Address '%s' is the gateway of subnet '%s'.",
                             want, sn->cidr);
        r = ip_claim(txn, sn->id, a, port_id);
        if (r == -EEXIST)
            return net_error(call, YUN_E_CONFLICT, "Address '%s' of subnet '%s' is in use.",
                             want, sn->cidr);
    } else {
        r = ip_find_free(txn, sn, &a);
        if (r == YUN_E_EXHAUSTED)
            return net_error(call, r,
                             "Subnet '%s' (%s) has no free address left in its allocation "
                             "pools.", *sn->name ? sn->name : sn->id, sn->cidr);
        if (r == 0)
            r = ip_claim(txn, sn->id, a, port_id);
    }
    if (r < 0)
        return r;
    ipam_format_addr(a, out);
    return 0;
}

int
net_port_make(struct sched *s, struct sched_call *call, struct yun_txn *txn,
              const Yun__NetworkRecord *net, const struct port_spec *spec,
              Yun__PortRecord **ret)
{
    if (!spec->port_security && (spec->n_security_groups || spec->default_group))
        return net_error(call, YUN_E_INVALID,
                         "A port without port security has no security groups.");
    if (spec->n_fixed_ips > NET_FIXED_IPS_MAX)
        return net_error(call, YUN_E_INVALID, "A port has at most %d addresses.",
                         NET_FIXED_IPS_MAX);
    char id[YUN_UUID_STR_SIZE];
    int r = yun_uuid_new(id);
    if (r < 0)
        return r;
    char mac[NET_MAC_STR_SIZE];
    if (*spec->mac_address) {
        if (mac_parse(spec->mac_address, mac) < 0)
            return net_error(call, YUN_E_INVALID,
                             "MAC address '%.32s' is not six hex octets of a unicast address.",
                             spec->mac_address);
        r = mac_claim(txn, net->id, mac, id);
        if (r == -EEXIST)
            return net_error(call, YUN_E_CONFLICT,
                             "MAC address '%s' is in use on network '%s'.", mac, net->name);
    } else {
        r = mac_allocate(txn, net->id, id, mac);
        if (r == YUN_E_EXHAUSTED)
            return net_error(call, r, "No free MAC address found on network '%s'.", net->name);
    }
    if (r < 0)
        return r;

    size_t n_ips = spec->n_fixed_ips ? spec->n_fixed_ips : net->n_subnets ? 1 : 0;
    char addrs[NET_FIXED_IPS_MAX][IPAM_ADDR_STR_SIZE];
    Yun__FixedIp ips[NET_FIXED_IPS_MAX];
    Yun__FixedIp *ip_ptrs[NET_FIXED_IPS_MAX];
    for (size_t i = 0; i < n_ips; i++) {
        const char *subnet = spec->n_fixed_ips ? spec->fixed_ips[i]->subnet_id : net->subnets[0];
        const char *want = spec->n_fixed_ips ? spec->fixed_ips[i]->ip_address : "";
        for (size_t j = 0; j < i; j++)
            if (strcmp(ips[j].subnet_id, subnet) == 0)
                return net_error(call, YUN_E_INVALID,
                                 "A port has one address per subnet.");
        r = ip_take(call, txn, net, subnet, want, id,
                    strcmp(spec->device_owner, NETWORK_DEVICE_OWNER_ROUTER) == 0, addrs[i]);
        if (r < 0)
            return r;
        yun__fixed_ip__init(&ips[i]);
        ips[i].subnet_id = (char *)subnet;
        ips[i].ip_address = addrs[i];
        ip_ptrs[i] = &ips[i];
    }

    char gid[YUN_UUID_STR_SIZE];
    char *default_groups[1] = { gid };
    char *const *groups = spec->security_groups;
    size_t n_groups = spec->n_security_groups;
    if (spec->default_group) {
        r = net_default_group(s, txn, spec->project, gid);
        if (r < 0)
            return r;
        groups = default_groups;
        n_groups = 1;
    }
    uint64_t now = yun_wall_us();
    Yun__PortRecord p = YUN__PORT_RECORD__INIT;
    p.id = id;
    p.name = (char *)spec->name;
    p.project = (char *)spec->project;
    p.network_id = net->id;
    p.mac_address = mac;
    p.fixed_ips = ip_ptrs;
    p.n_fixed_ips = n_ips;
    p.device_id = (char *)spec->device_id;
    p.device_owner = (char *)spec->device_owner;
    p.host_id = (char *)spec->host_id;
    p.security_groups = (char **)groups;
    p.n_security_groups = n_groups;
    p.port_security_enabled = spec->port_security;
    p.status = (char *)(*spec->host_id ? "BUILD" : "DOWN");
    p.admin_state_up = true;
    p.created_us = now;
    p.updated_us = now;
    p.description = (char *)spec->description;
    r = net_store(txn, &net_kind_port, &p.base);
    if (r < 0)
        return r;
    /* A copy the caller owns, independent of this frame. */
    size_t size = yun__port_record__get_packed_size(&p);
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    yun__port_record__pack(&p, buf);
    Yun__PortRecord *copy = yun__port_record__unpack(NULL, size, buf);
    if (!copy)
        return -ENOMEM;
    *ret = copy;
    return 0;
}

/* --- handlers ------------------------------------------------------------------ */

static int
port_reply(struct sched_call *call, const Yun__PortRecord *p)
{
    Yun__PortReply y = YUN__PORT_REPLY__INIT;
    y.port = (Yun__PortRecord *)p;
    return sched_call_reply(call, &y.base);
}

static int
check_device(struct sched_call *call, const char *what, const char *v)
{
    if (!*v || yun_text_is_valid(v, DEVICE_MAX))
        return 0;
    return sched_call_error(call, YUN_E_INVALID,
                            "The %s is not up to %d bytes of text without control characters.",
                            what, DEVICE_MAX);
}

/* Resolves the group names or ids 'refs' into their ids ('ret' holds
 * strdup'ed ids). The caller's project's only (an admin's: any). */
static int
resolve_groups(struct sched_call *call, struct yun_txn *txn, char *const *refs, size_t n,
               char **ret)
{
    if (n > NET_PORT_GROUPS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "A port has at most %d security groups.",
                                NET_PORT_GROUPS_MAX);
    for (size_t i = 0; i < n; i++) {
        _cleanup_msg_ ProtobufCMessage *m = NULL;
        int r = net_find(call, txn, &net_kind_group, refs[i], &m);
        if (r < 0)
            return r;
        const char *id = ((Yun__SecurityGroupRecord *)m)->id;
        for (size_t j = 0; j < i; j++)
            if (strcmp(ret[j], id) == 0)
                return sched_call_error(call, YUN_E_INVALID,
                                        "Security group '%.64s' is given twice.", refs[i]);
        ret[i] = strdup(id);
        if (!ret[i])
            return -ENOMEM;
    }
    return 0;
}

static void
free_strs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
}

static int
notify_port(struct sched *s, struct yun_txn *txn, const Yun__PortRecord *p, char *const *extra,
            size_t n_extra, struct net_hosts *h)
{
    int r = 0;
    if (*p->host_id) {
        r = net_hosts_add(h, p->host_id);
        if (r == 0)
            r = net_hosts_of_network(txn, p->network_id, h);
    }
    if (r == 0)
        r = net_hosts_of_groups(txn, p->security_groups, p->n_security_groups, h);
    if (r == 0)
        r = net_hosts_of_groups(txn, extra, n_extra, h);
    return r;
}

int
sched_port_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__PortCreateRequest *q = (const Yun__PortCreateRequest *)req;
    struct sched *s = call->s;
    int r = net_check_name(call, "Port", q->name, false);
    if (r == 0)
        r = net_check_description(call, q->description);
    if (r == 0)
        r = check_device(call, "device id", q->device_id);
    if (r == 0)
        r = check_device(call, "device owner", q->device_owner);
    if (r < 0)
        return r;
    if (!call->project || !*call->project)
        return sched_call_error(call, YUN_E_DENIED, "Ports belong to projects: log in to one.");
    if ((*q->device_owner || *q->host_id) && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED,
                                "Only admins may set a port's device owner or host binding.");
    if (q->n_fixed_ips > NET_FIXED_IPS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "A port has at most %d addresses.",
                                NET_FIXED_IPS_MAX);
    if (q->n_security_groups && (q->no_security_groups || q->disable_port_security))
        return sched_call_error(call, YUN_E_INVALID,
                                "Security groups were given for a port without them.");

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    char gid[YUN_UUID_STR_SIZE];
    r = net_default_group(s, txn, call->project, gid);
    if (r < 0)
        return r;
    /* The binding host, by id or name; the port records its id. */
    char host_id[YUN_UUID_STR_SIZE] = "";
    if (*q->host_id) {
        Yun__HostRecord *h = NULL;
        r = sched_host_find(txn, q->host_id, &h);
        if (r == YUN_E_NOHOST)
            return sched_call_error(call, YUN_E_NOHOST, "Host '%.64s' not found.", q->host_id);
        if (r < 0)
            return r;
        snprintf(host_id, sizeof host_id, "%s", h->id);
        yun__host_record__free_unpacked(h, NULL);
    }
    _cleanup_msg_ ProtobufCMessage *nm = NULL;
    r = net_find(call, txn, &net_kind_network, q->network, &nm);
    if (r < 0)
        return r;
    const Yun__NetworkRecord *net = (const Yun__NetworkRecord *)nm;
    size_t count;
    r = net_count_project(txn, &net_kind_port, call->project, &count);
    if (r < 0)
        return r;
    if (count >= NET_PORTS_PER_PROJECT)
        return sched_call_error(call, -ENOSPC, "A project may have at most %d ports.",
                                NET_PORTS_PER_PROJECT);

    /* Subnets by name or id, as ids. */
    Yun__FixedIp ips[NET_FIXED_IPS_MAX];
    Yun__FixedIp *ip_ptrs[NET_FIXED_IPS_MAX];
    ProtobufCMessage *subnets[NET_FIXED_IPS_MAX] = { 0 };
    for (size_t i = 0; r == 0 && i < q->n_fixed_ips; i++) {
        const Yun__FixedIp *f = q->fixed_ips[i];
        yun__fixed_ip__init(&ips[i]);
        ip_ptrs[i] = &ips[i];
        if (!f || !*f->subnet_id) {
            /* An address alone: the subnet that holds it. */
            uint32_t a;
            if (!f || ipam_parse_addr(f->ip_address, &a) < 0) {
                r = sched_call_error(call, YUN_E_INVALID,
                                     "Fixed IP %zu names no subnet and no valid address.",
                                     i + 1);
                break;
            }
            ips[i].subnet_id = NULL;
            for (size_t j = 0; j < net->n_subnets && !ips[i].subnet_id; j++) {
                _cleanup_msg_ ProtobufCMessage *sm = NULL;
                struct ipam_cidr c;
                if (net_load(txn, &net_kind_subnet, net->subnets[j], &sm) == 0 &&
                    ipam_parse_cidr(((Yun__SubnetRecord *)sm)->cidr, true, &c) == 0 &&
                    ipam_cidr_contains(&c, a))
                    ips[i].subnet_id = net->subnets[j];
            }
            if (!ips[i].subnet_id) {
                r = sched_call_error(call, YUN_E_INVALID,
                                     "Address '%s' is in no subnet of network '%s'.",
                                     f->ip_address, net->name);
                break;
            }
        } else {
            r = net_find(call, txn, &net_kind_subnet, f->subnet_id, &subnets[i]);
            if (r < 0)
                break;
            ips[i].subnet_id = ((Yun__SubnetRecord *)subnets[i])->id;
        }
        ips[i].ip_address = f->ip_address;
    }
    char *groups[NET_PORT_GROUPS_MAX] = { 0 };
    if (r == 0)
        r = resolve_groups(call, txn, q->security_groups, q->n_security_groups, groups);
    _cleanup_msg_ Yun__PortRecord *p = NULL;
    if (r == 0) {
        struct port_spec spec = {
            .project = call->project, .name = q->name, .description = q->description,
            .device_id = q->device_id, .device_owner = q->device_owner, .host_id = host_id,
            .mac_address = q->mac_address, .fixed_ips = ip_ptrs,
            .n_fixed_ips = q->n_fixed_ips, .security_groups = groups,
            .n_security_groups = q->n_security_groups,
            .default_group = !q->n_security_groups && !q->no_security_groups &&
                             !q->disable_port_security,
            .port_security = !q->disable_port_security,
        };
        r = net_port_make(s, call, txn, net, &spec, &p);
    }
    for (size_t i = 0; i < q->n_fixed_ips; i++)
        if (subnets[i])
            protobuf_c_message_free_unpacked(subnets[i], NULL);
    free_strs(groups, q->n_security_groups);
    if (r < 0)
        return r;
    /* An admin's binding wires the host as port_bind_host does. */
    if (*p->host_id && strcmp(p->device_owner, NETWORK_DEVICE_OWNER_DHCP) != 0) {
        r = net_dhcp_port_sync(s, txn, net, p->host_id);
        if (r == YUN_E_EXHAUSTED)
            return sched_call_error(call, r, "No address is left for the DHCP port of host "
                                    "'%s' on network '%s'.", p->host_id, net->name);
        if (r < 0)
            return r;
    }
    struct net_hosts hosts = { 0 };
    r = notify_port(s, txn, p, NULL, 0, &hosts);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "port.create", p->id, NULL);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    log_req(YUN_LOG_INFO, call->req, 0, "port created port=%s net=%s mac=%s", p->id, net->id,
            p->mac_address);
    net_hosts_notify(s, &hosts);
    return port_reply(call, p);
}

struct port_filter {
    const struct sched_call *call;
    bool all;
    const char *network_id;
    const char *device_id;
    const char *host_id;
};

static bool
keep_port(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    struct port_filter *f = data;
    const Yun__PortRecord *p = (const Yun__PortRecord *)m;
    if (f->network_id && strcmp(p->network_id, f->network_id) != 0)
        return false;
    if (f->device_id && strcmp(p->device_id, f->device_id) != 0)
        return false;
    if (f->host_id && strcmp(p->host_id, f->host_id) != 0)
        return false;
    return net_visible(txn, f->call, &net_kind_port, m, f->all);
}

int
sched_port_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__PortListRequest *q = (const Yun__PortListRequest *)req;
    if (q->all_projects && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED,
                                "Only admins may list all projects' objects.");
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    struct port_filter f = { .call = call, .all = q->all_projects };
    _cleanup_msg_ ProtobufCMessage *nm = NULL;
    if (*q->network) {
        r = net_find(call, txn, &net_kind_network, q->network, &nm);
        if (r < 0)
            return r;
        f.network_id = ((Yun__NetworkRecord *)nm)->id;
    }
    if (*q->device_id)
        f.device_id = q->device_id;
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    r = net_collect(txn, &net_kind_port, keep_port, &f, &items, &n);
    if (r < 0)
        return r;
    Yun__PortListReply y = YUN__PORT_LIST_REPLY__INIT;
    y.ports = (Yun__PortRecord **)items;
    y.n_ports = n;
    r = sched_call_reply(call, &y.base);
    net_free_all(items, n);
    return r;
}

int
sched_port_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__PortRef *q = (const Yun__PortRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_port, q->port, &m);
    if (r < 0)
        return r;
    return port_reply(call, (Yun__PortRecord *)m);
}

int
sched_port_update(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__PortUpdateRequest *q = (const Yun__PortUpdateRequest *)req;
    int r = 0;
    if (*q->name)
        r = net_check_name(call, "Port", q->name, true);
    if (r == 0 && q->set_description)
        r = net_check_description(call, q->description);
    if (r < 0)
        return r;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_port, q->port, &m);
    if (r < 0)
        return r;
    Yun__PortRecord p = *(Yun__PortRecord *)m;
    const Yun__PortRecord *old = (const Yun__PortRecord *)m;
    char *groups[NET_PORT_GROUPS_MAX] = { 0 };
    if (q->set_security_groups) {
        r = resolve_groups(call, txn, q->security_groups, q->n_security_groups, groups);
        if (r < 0) {
            free_strs(groups, q->n_security_groups);
            return r;
        }
        p.security_groups = groups;
        p.n_security_groups = q->n_security_groups;
    }
    if (q->set_port_security)
        p.port_security_enabled = q->port_security_enabled;
    if (!p.port_security_enabled && p.n_security_groups) {
        free_strs(groups, q->n_security_groups);
        return sched_call_error(call, YUN_E_INVALID,
                                "Port '%s' has security groups: remove them to disable port "
                                "security.", p.id);
    }
    if (q->set_admin_state)
        p.admin_state_up = q->admin_state_up;
    if (*q->name)
        p.name = q->name;
    if (q->set_description)
        p.description = q->description;
    p.updated_us = yun_wall_us();
    struct net_hosts hosts = { 0 };
    r = net_store(txn, &net_kind_port, &p.base);
    if (r == 0)
        r = notify_port(call->s, txn, &p, old->security_groups, old->n_security_groups, &hosts);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "port.update", p.id, NULL);
    if (r == 0)
        r = port_reply(call, &p);
    free_strs(groups, q->n_security_groups);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    net_hosts_notify(call->s, &hosts);
    return 0;
}

/* Removes the DHCP port of 'host_id' on 'network_id' when no other port
 * of that network remains bound to that host. */
static int
dhcp_port_gc(struct yun_txn *txn, const char *network_id, const char *host_id)
{
    struct port_filter f = { .network_id = network_id, .host_id = host_id };
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    int r = net_collect(txn, &net_kind_port, keep_port, &f, &items, &n);
    if (r < 0)
        return r;
    bool others = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(((Yun__PortRecord *)items[i])->device_owner, NETWORK_DEVICE_OWNER_DHCP) != 0)
            others = true;
    for (size_t i = 0; r == 0 && !others && i < n; i++)
        r = net_port_remove(txn, (Yun__PortRecord *)items[i]);
    net_free_all(items, n);
    return r;
}

int
sched_port_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__PortRef *q = (const Yun__PortRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_port, q->port, &m);
    if (r < 0)
        return r;
    const Yun__PortRecord *p = (const Yun__PortRecord *)m;
    if (strcmp(p->device_owner, NETWORK_DEVICE_OWNER_DHCP) == 0 && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED,
                                "Port '%s' is a DHCP port: the scheduler manages it.", p->id);
    struct net_hosts hosts = { 0 };
    r = notify_port(call->s, txn, p, NULL, 0, &hosts);
    if (r == 0)
        r = net_port_remove(txn, p);
    if (r == 0 && *p->host_id)
        r = dhcp_port_gc(txn, p->network_id, p->host_id);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "port.delete", p->id, NULL);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    log_req(YUN_LOG_INFO, call->req, 0, "port deleted port=%s net=%s", p->id, p->network_id);
    net_hosts_notify(call->s, &hosts);
    return port_reply(call, p);
}

/* --- the compute glue's API ------------------------------------------------------- */

int
port_create_for_instance(struct sched *s, struct yun_txn *txn, const char *project,
                         const char *network_id, const char *instance_id,
                         Yun__PortRecord **ret)
{
    if (!project || !*project || !instance_id || !yun_text_is_valid(instance_id, DEVICE_MAX))
        return YUN_E_INVALID;
    _cleanup_msg_ ProtobufCMessage *nm = NULL;
    int r = net_load(txn, &net_kind_network, network_id, &nm);
    if (r < 0)
        return r;
    struct port_spec spec = {
        .project = project, .name = "", .description = "", .device_id = instance_id,
        .device_owner = NETWORK_DEVICE_OWNER_COMPUTE, .host_id = "", .mac_address = "",
        .default_group = true, .port_security = true,
    };
    return net_port_make(s, NULL, txn, (Yun__NetworkRecord *)nm, &spec, ret);
}

/* Makes sure network 'net' has a DHCP port bound to 'host_id' when one of
 * its subnets has DHCP on, with an address of each such subnet (a subnet
 * made after the port gets one too). */
int
net_dhcp_port_sync(struct sched *s, struct yun_txn *txn, const Yun__NetworkRecord *net,
                   const char *host_id)
{
    Yun__FixedIp ips[NET_SUBNETS_PER_NETWORK];
    Yun__FixedIp *ip_ptrs[NET_SUBNETS_PER_NETWORK];
    size_t n = 0;
    for (size_t i = 0; i < net->n_subnets && n < NET_SUBNETS_PER_NETWORK; i++) {
        _cleanup_msg_ ProtobufCMessage *sm = NULL;
        int r = net_load(txn, &net_kind_subnet, net->subnets[i], &sm);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            return r;
        if (!((Yun__SubnetRecord *)sm)->enable_dhcp)
            continue;
        yun__fixed_ip__init(&ips[n]);
        ips[n].subnet_id = net->subnets[i];
        ips[n].ip_address = (char *)"";
        ip_ptrs[n] = &ips[n];
        n++;
    }
    if (n == 0)
        return 0;
    _cleanup_free_ char *device = NULL;
    if (asprintf(&device, "dhcp-%s", host_id) < 0)
        return -ENOMEM;
    struct port_filter f = { .network_id = net->id, .device_id = device };
    ProtobufCMessage **items = NULL;
    size_t found = 0;
    int r = net_collect(txn, &net_kind_port, keep_port, &f, &items, &found);
    if (r < 0)
        return r;
    if (found) {
        /* Top up: an address of each DHCP subnet the port lacks. */
        Yun__PortRecord *p = (Yun__PortRecord *)items[0];
        Yun__FixedIp *all[NET_FIXED_IPS_MAX + NET_SUBNETS_PER_NETWORK];
        Yun__FixedIp added[NET_SUBNETS_PER_NETWORK];
        char addrs[NET_SUBNETS_PER_NETWORK][IPAM_ADDR_STR_SIZE];
        size_t total = 0, n_added = 0;
        for (size_t i = 0; i < p->n_fixed_ips && total < NET_FIXED_IPS_MAX; i++)
            all[total++] = p->fixed_ips[i];
        for (size_t i = 0; r == 0 && i < n; i++) {
            bool has = false;
            for (size_t j = 0; j < p->n_fixed_ips; j++)
                if (strcmp(p->fixed_ips[j]->subnet_id, ips[i].subnet_id) == 0)
                    has = true;
            if (has)
                continue;
            r = ip_take(NULL, txn, net, ips[i].subnet_id, "", p->id, false, addrs[n_added]);
            if (r < 0)
                break;
            yun__fixed_ip__init(&added[n_added]);
            added[n_added].subnet_id = ips[i].subnet_id;
            added[n_added].ip_address = addrs[n_added];
            all[total++] = &added[n_added];
            n_added++;
        }
        if (r == 0 && n_added) {
            Yun__PortRecord view = *p;
            view.fixed_ips = all;
            view.n_fixed_ips = total;
            view.updated_us = yun_wall_us();
            r = net_store(txn, &net_kind_port, &view.base);
        }
        net_free_all(items, found);
        return r;
    }
    net_free_all(items, found);
    struct port_spec spec = {
        .project = net->project, .name = "", .description = "", .device_id = device,
        .device_owner = NETWORK_DEVICE_OWNER_DHCP, .host_id = host_id, .mac_address = "",
        .fixed_ips = ip_ptrs, .n_fixed_ips = n, .port_security = false,
    };
    Yun__PortRecord *p = NULL;
    r = net_port_make(s, NULL, txn, net, &spec, &p);
    if (r == 0)
        yun__port_record__free_unpacked(p, NULL);
    return r;
}

int
port_bind_host(struct sched *s, struct yun_txn *txn, const char *port_id, const char *host_id)
{
    if (!host_id || !yun_name_is_valid(host_id, NET_NAME_MAX))
        return YUN_E_INVALID;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    int r = net_load(txn, &net_kind_port, port_id, &m);
    if (r < 0)
        return r;
    Yun__PortRecord *p = (Yun__PortRecord *)m;
    if (strcmp(p->host_id, host_id) != 0) {
        const char *old = p->host_id;
        Yun__PortRecord view = *p;
        view.host_id = (char *)host_id;
        view.status = (char *)"BUILD";
        view.updated_us = yun_wall_us();
        r = net_store(txn, &net_kind_port, &view.base);
        if (r == 0 && *old)
            r = dhcp_port_gc(txn, p->network_id, old);
        if (r < 0)
            return r;
    }
    _cleanup_msg_ ProtobufCMessage *nm = NULL;
    r = net_load(txn, &net_kind_network, p->network_id, &nm);
    if (r < 0)
        return r;
    return net_dhcp_port_sync(s, txn, (Yun__NetworkRecord *)nm, host_id);
}

static bool
keep_device(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    return strcmp(((const Yun__PortRecord *)m)->device_id, data) == 0;
}

static int
cmp_created(const void *a, const void *b)
{
    const Yun__PortRecord *x = *(Yun__PortRecord *const *)a, *y = *(Yun__PortRecord *const *)b;
    return x->created_us < y->created_us ? -1 : x->created_us > y->created_us;
}

int
ports_of_instance(struct sched *s, struct yun_txn *txn, const char *instance_id,
                  Yun__PortRecord ***ret, size_t *ret_n)
{
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    if (!instance_id || !*instance_id)
        return YUN_E_INVALID;
    int r = net_collect(txn, &net_kind_port, keep_device, (void *)instance_id, &items, &n);
    if (r < 0)
        return r;
    if (n == 0) {
        free(items);
        items = NULL;
    } else {
        qsort(items, n, sizeof *items, cmp_created);
    }
    *ret = (Yun__PortRecord **)items;
    *ret_n = n;
    return 0;
}

int
port_delete_for_instance(struct sched *s, struct yun_txn *txn, const char *instance_id)
{
    Yun__PortRecord **ports = NULL;
    size_t n = 0;
    int r = ports_of_instance(s, txn, instance_id, &ports, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; r == 0 && i < n; i++)
        r = net_port_remove(txn, ports[i]);
    for (size_t i = 0; r == 0 && i < n; i++)
        if (*ports[i]->host_id)
            r = dhcp_port_gc(txn, ports[i]->network_id, ports[i]->host_id);
    net_free_all((ProtobufCMessage **)ports, n);
    return r;
}

/* --- a host's desired state -------------------------------------------------------- */

struct strs {
    char **v;
    size_t n;
};

static int
strs_add(struct strs *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0)
            return 0;
    char **p = realloc(s->v, (s->n + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    s->v = p;
    s->v[s->n] = strdup(x);
    if (!s->v[s->n])
        return -ENOMEM;
    s->n++;
    return 0;
}

static void
strs_done(struct strs *s)
{
    free_strs(s->v, s->n);
    free(s->v);
    *s = (struct strs){ 0 };
}

static bool
keep_in_strs(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    const struct strs *s = data;
    const char *id = net_msg_str(m, "id");
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], id) == 0)
            return true;
    return false;
}

struct state_parts {
    ProtobufCMessage **ports, **all_ports, **networks, **subnets, **groups;
    size_t n_ports, n_all_ports, n_networks, n_subnets, n_groups;
    Yun__GroupMembers **members;
    size_t n_members;
    Yun__NetworkVteps **vteps;
    size_t n_vteps;
    struct strs network_ids, group_ids, remote_ids;
    struct strs *member_ips;    /* per remote group */
    struct strs *vtep_ips;      /* per vxlan network */
};

static void
state_parts_done(struct state_parts *sp)
{
    net_free_all(sp->ports, sp->n_ports);
    net_free_all(sp->all_ports, sp->n_all_ports);
    net_free_all(sp->networks, sp->n_networks);
    net_free_all(sp->subnets, sp->n_subnets);
    net_free_all(sp->groups, sp->n_groups);
    for (size_t i = 0; i < sp->n_members; i++) {
        strs_done(&sp->member_ips[i]);
        free(sp->members[i]);
    }
    free(sp->members);
    free(sp->member_ips);
    for (size_t i = 0; i < sp->n_vteps; i++) {
        strs_done(&sp->vtep_ips[i]);
        free(sp->vteps[i]);
    }
    free(sp->vteps);
    free(sp->vtep_ips);
    strs_done(&sp->network_ids);
    strs_done(&sp->group_ids);
    strs_done(&sp->remote_ids);
}

static bool
keep_subnet_of(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    const struct strs *nets = data;
    const char *nid = ((const Yun__SubnetRecord *)m)->network_id;
    for (size_t i = 0; i < nets->n; i++)
        if (strcmp(nets->v[i], nid) == 0)
            return true;
    return false;
}

static int
build_state(struct yun_txn *txn, const char *host_id, struct state_parts *sp)
{
    struct port_filter f = { .host_id = host_id };
    int r = net_collect(txn, &net_kind_port, keep_port, &f, &sp->ports, &sp->n_ports);
    for (size_t i = 0; r == 0 && i < sp->n_ports; i++) {
        const Yun__PortRecord *p = (const Yun__PortRecord *)sp->ports[i];
        r = strs_add(&sp->network_ids, p->network_id);
        for (size_t j = 0; r == 0 && j < p->n_security_groups; j++)
            r = strs_add(&sp->group_ids, p->security_groups[j]);
    }
    if (r == 0)
        r = net_collect(txn, &net_kind_network, keep_in_strs, &sp->network_ids, &sp->networks,
                        &sp->n_networks);
    if (r == 0)
        r = net_collect(txn, &net_kind_subnet, keep_subnet_of, &sp->network_ids, &sp->subnets,
                        &sp->n_subnets);
    if (r == 0)
        r = net_collect(txn, &net_kind_group, keep_in_strs, &sp->group_ids, &sp->groups,
                        &sp->n_groups);
    for (size_t i = 0; r == 0 && i < sp->n_groups; i++) {
        const Yun__SecurityGroupRecord *g = (const Yun__SecurityGroupRecord *)sp->groups[i];
        for (size_t j = 0; r == 0 && j < g->n_rules; j++)
            if (*g->rules[j]->remote_group_id)
                r = strs_add(&sp->remote_ids, g->rules[j]->remote_group_id);
    }
    if (r == 0)
        r = net_collect(txn, &net_kind_port, NULL, NULL, &sp->all_ports, &sp->n_all_ports);
    if (r < 0)
        return r;
    /* Members of the remote groups: the addresses of their ports. */
    sp->members = calloc(sp->remote_ids.n + 1, sizeof *sp->members);
    sp->member_ips = calloc(sp->remote_ids.n + 1, sizeof *sp->member_ips);
    if (!sp->members || !sp->member_ips)
        return -ENOMEM;
    for (size_t i = 0; i < sp->remote_ids.n; i++) {
        Yun__GroupMembers *gm = calloc(1, sizeof *gm);
        if (!gm)
            return -ENOMEM;
        yun__group_members__init(gm);
        sp->members[sp->n_members++] = gm;
        gm->security_group_id = sp->remote_ids.v[i];
        for (size_t k = 0; r == 0 && k < sp->n_all_ports; k++) {
            const Yun__PortRecord *p = (const Yun__PortRecord *)sp->all_ports[k];
            bool member = false;
            for (size_t j = 0; j < p->n_security_groups; j++)
                if (strcmp(p->security_groups[j], gm->security_group_id) == 0)
                    member = true;
            for (size_t j = 0; r == 0 && member && j < p->n_fixed_ips; j++)
                r = strs_add(&sp->member_ips[i], p->fixed_ips[j]->ip_address);
        }
        gm->ip_addresses = sp->member_ips[i].v;
        gm->n_ip_addresses = sp->member_ips[i].n;
    }
    /* VTEPs: the tunnel addresses of the other hosts on each vxlan network. */
    sp->vteps = calloc(sp->n_networks + 1, sizeof *sp->vteps);
    sp->vtep_ips = calloc(sp->n_networks + 1, sizeof *sp->vtep_ips);
    if (!sp->vteps || !sp->vtep_ips)
        return -ENOMEM;
    for (size_t i = 0; r == 0 && i < sp->n_networks; i++) {
        const Yun__NetworkRecord *n = (const Yun__NetworkRecord *)sp->networks[i];
        if (strcmp(n->network_type, "vxlan") != 0)
            continue;
        size_t vi = sp->n_vteps;
        Yun__NetworkVteps *v = calloc(1, sizeof *v);
        if (!v)
            return -ENOMEM;
        yun__network_vteps__init(v);
        sp->vteps[sp->n_vteps++] = v;
        v->network_id = n->id;
        struct strs others = { 0 };
        for (size_t k = 0; r == 0 && k < sp->n_all_ports; k++) {
            const Yun__PortRecord *p = (const Yun__PortRecord *)sp->all_ports[k];
            if (*p->host_id && strcmp(p->host_id, host_id) != 0 &&
                strcmp(p->network_id, n->id) == 0)
                r = strs_add(&others, p->host_id);
        }
        for (size_t k = 0; r == 0 && k < others.n; k++) {
            ProtobufCMessage *hm = NULL;
            int q = yun_txn_get_msg(txn, "hosts", others.v[k], &yun__host_record__descriptor, &hm);
            if (q == -ENOENT)
                continue;
            if (q < 0) {
                r = q;
                break;
            }
            const char *tip = ((Yun__HostRecord *)hm)->tunnel_ip;
            if (*tip)
                r = strs_add(&sp->vtep_ips[vi], tip);
            protobuf_c_message_free_unpacked(hm, NULL);
        }
        strs_done(&others);
        v->remote_ips = sp->vtep_ips[vi].v;
        v->n_remote_ips = sp->vtep_ips[vi].n;
    }
    return r;
}

int
network_host_state(struct sched *s, struct yun_txn *txn, const char *host_id,
                   Yun__HostNetworkState **ret)
{
    if (!host_id || !*host_id)
        return YUN_E_INVALID;
    struct state_parts sp = { 0 };
    int r = build_state(txn, host_id, &sp);
    if (r < 0) {
        state_parts_done(&sp);
        return r;
    }
    Yun__HostNetworkState st = YUN__HOST_NETWORK_STATE__INIT;
    st.host_id = (char *)host_id;
    st.generation = yun_wall_us();
    st.networks = (Yun__NetworkRecord **)sp.networks;
    st.n_networks = sp.n_networks;
    st.subnets = (Yun__SubnetRecord **)sp.subnets;
    st.n_subnets = sp.n_subnets;
    st.ports = (Yun__PortRecord **)sp.ports;
    st.n_ports = sp.n_ports;
    st.security_groups = (Yun__SecurityGroupRecord **)sp.groups;
    st.n_security_groups = sp.n_groups;
    st.group_members = sp.members;
    st.n_group_members = sp.n_members;
    st.vteps = sp.vteps;
    st.n_vteps = sp.n_vteps;
    /* Pack and unpack: one tree the caller frees with free_unpacked. */
    size_t size = yun__host_network_state__get_packed_size(&st);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        state_parts_done(&sp);
        return -ENOMEM;
    }
    yun__host_network_state__pack(&st, buf);
    state_parts_done(&sp);
    Yun__HostNetworkState *copy = yun__host_network_state__unpack(NULL, size, buf);
    free(buf);
    if (!copy)
        return -ENOMEM;
    *ret = copy;
    return 0;
}
