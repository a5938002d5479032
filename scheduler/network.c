/* SPDX-License-Identifier: Apache-2.0
 * network.c: networks and subnets (Neutron's API model), the look-ups and
 * visibility rules the network files share (network-priv.h) and the hook
 * that hears which hosts' network state changed (network.h).
 *
 * A network has a type (flat, vlan, vxlan), a physical network label
 * (flat, vlan) and a segment id (VLAN id or VNI) unique per type, taken
 * from the [network] ranges unless an admin gives one; the index
 * "network_segments" holds the claims. A subnet is an IPv4 CIDR of one
 * network with a gateway, allocation pools and DNS servers; the
 * addresses its ports hold are in "ip_allocations" (port.c).
 *
 * Visibility: a project sees its own objects, shared networks and their
 * subnets; admins see everything by id or name, and everyone's in lists
 * with all_projects. What a caller cannot see is "not found".
 *
 * Neighbours: port.c, security-group.c, ipam.c, dispatch.c (rows). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "ipam.h"
#include "log.h"
#include "network-priv.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"

YUN_LOG_MODULE("sched.network");

const struct net_kind net_kind_network = {
    SCHED_DB_NETWORKS, &yun__network_record__descriptor, "Network",
};
const struct net_kind net_kind_subnet = {
    SCHED_DB_SUBNETS, &yun__subnet_record__descriptor, "Subnet",
};
const struct net_kind net_kind_port = {
    SCHED_DB_PORTS, &yun__port_record__descriptor, "Port",
};
const struct net_kind net_kind_group = {
    SCHED_DB_SECURITY_GROUPS, &yun__security_group_record__descriptor, "Security group",
};

static void
msg_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_msg_ _cleanup_(msg_freep)

/* --- shared helpers ---------------------------------------------------------- */

int
net_error(struct sched_call *call, int r, const char *fmt, ...)
{
    if (!call)
        return r;
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *text = NULL;
    if (vasprintf(&text, fmt, ap) < 0)
        text = NULL;
    va_end(ap);
    return sched_call_error(call, r, "%s", text ? text : yun_strerror(r));
}

const char *
net_msg_str(const ProtobufCMessage *m, const char *field)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, field);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return "";
    const char *v = *(char *const *)((const char *)m + f->offset);
    return v ? v : "";
}

bool
net_visible(struct yun_txn *txn, const struct sched_call *call, const struct net_kind *k,
            const ProtobufCMessage *m, bool all)
{
    if (!call || (all && call->is_admin))
        return true;
    const char *project = call->project ? call->project : "";
    if (*project && strcmp(net_msg_str(m, "project"), project) == 0)
        return true;
    if (k == &net_kind_network)
        return ((const Yun__NetworkRecord *)m)->shared;
    if (k == &net_kind_subnet) {
        _cleanup_msg_ ProtobufCMessage *n = NULL;
        if (net_load(txn, &net_kind_network, ((const Yun__SubnetRecord *)m)->network_id, &n) < 0)
            return false;
        return ((Yun__NetworkRecord *)n)->shared;
    }
    return false;
}

int
net_load(struct yun_txn *txn, const struct net_kind *k, const char *id, ProtobufCMessage **ret)
{
    if (!*id || strlen(id) > NET_NAME_MAX)
        return -ENOENT;
    return yun_txn_get_msg(txn, k->db, id, k->desc, ret);
}

int
net_store(struct yun_txn *txn, const struct net_kind *k, const ProtobufCMessage *m)
{
    return yun_txn_put_msg(txn, k->db, net_msg_str(m, "id"), m);
}

struct collect {
    struct yun_txn *txn;
    const struct net_kind *k;
    net_keep_fn keep;
    void *data;
    ProtobufCMessage **items;
    size_t n, allocated;
};

static int
collect_one(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct collect *c = data;
    ProtobufCMessage *m = protobuf_c_message_unpack(c->k->desc, NULL, val_size, val);
    if (!m)
        return -EBADMSG;
    if (c->keep && !c->keep(c->txn, m, c->data)) {
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    if (c->n == c->allocated) {
        size_t a = c->allocated ? c->allocated * 2 : 16;
        ProtobufCMessage **p = realloc(c->items, a * sizeof *p);
        if (!p) {
            protobuf_c_message_free_unpacked(m, NULL);
            return -ENOMEM;
        }
        c->items = p;
        c->allocated = a;
    }
    c->items[c->n++] = m;
    return 0;
}

int
net_collect(struct yun_txn *txn, const struct net_kind *k, net_keep_fn keep, void *data,
            ProtobufCMessage ***ret, size_t *ret_n)
{
    struct collect c = { .txn = txn, .k = k, .keep = keep, .data = data };
    int r = yun_txn_iterate(txn, k->db, NULL, 0, collect_one, &c);
    if (r < 0) {
        net_free_all(c.items, c.n);
        return r;
    }
    *ret = c.items;
    *ret_n = c.n;
    return 0;
}

void
net_free_all(ProtobufCMessage **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(items[i], NULL);
    free(items);
}

struct find {
    const struct sched_call *call;
    const char *name;
    size_t own, other;
};

static bool
keep_named(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    struct find *f = data;
    return strcmp(net_msg_str(m, "name"), f->name) == 0;
}

int
net_find(struct sched_call *call, struct yun_txn *txn, const struct net_kind *k, const char *ref,
         ProtobufCMessage **ret)
{
    ProtobufCMessage *m = NULL;
    int r = net_load(txn, k, ref, &m);
    if (r == 0 && !net_visible(txn, call, k, m, true)) {
        protobuf_c_message_free_unpacked(m, NULL);
        m = NULL;
        r = -ENOENT;
    }
    if (r == 0) {
        *ret = m;
        return 0;
    }
    if (r != -ENOENT)
        return r;
    if (!*ref || strlen(ref) > NET_NAME_MAX)
        return net_error(call, -ENOENT, "%s '%.255s' not found.", k->what, ref);
    struct find f = { .call = call, .name = ref };
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    r = net_collect(txn, k, keep_named, &f, &items, &n);
    if (r < 0)
        return r;
    ProtobufCMessage *own = NULL, *other = NULL;
    const char *project = call && call->project ? call->project : "";
    for (size_t i = 0; i < n; i++) {
        if (!net_visible(txn, call, k, items[i], true))
            continue;
        if (*project && strcmp(net_msg_str(items[i], "project"), project) == 0) {
            f.own++;
            own = items[i];
        } else {
            f.other++;
            other = items[i];
        }
    }
    ProtobufCMessage *pick = f.own == 1 ? own : f.own == 0 && f.other == 1 ? other : NULL;
    if (pick) {
        for (size_t i = 0; i < n; i++)
            if (items[i] == pick)
                items[i] = NULL;
        net_free_all(items, n);
        *ret = pick;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (items[i])
            protobuf_c_message_free_unpacked(items[i], NULL);
    free(items);
    if (f.own + f.other > 1)
        return net_error(call, YUN_E_CONFLICT,
                         "%s name '%.255s' is ambiguous: give its id.", k->what, ref);
    return net_error(call, -ENOENT, "%s '%.255s' not found.", k->what, ref);
}

static bool
keep_project(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    return strcmp(net_msg_str(m, "project"), data) == 0;
}

int
net_count_project(struct yun_txn *txn, const struct net_kind *k, const char *project,
                  size_t *ret)
{
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    int r = net_collect(txn, k, keep_project, (void *)project, &items, &n);
    if (r < 0)
        return r;
    net_free_all(items, n);
    *ret = n;
    return 0;
}

int
net_check_name(struct sched_call *call, const char *what, const char *name, bool required)
{
    if ((!required && !*name) || yun_text_is_valid(name, NET_NAME_MAX))
        return 0;
    return net_error(call, YUN_E_INVALID,
                     "%s name '%.64s' is not %d to %d bytes of text without control "
                     "characters.", what, name, required ? 1 : 0, NET_NAME_MAX);
}

int
net_check_description(struct sched_call *call, const char *description)
{
    if (!*description || yun_text_is_valid(description, NET_DESCRIPTION_MAX))
        return 0;
    return net_error(call, YUN_E_INVALID,
                     "The description is not up to %d bytes of text without control "
                     "characters.", NET_DESCRIPTION_MAX);
}

/* --- hosts and the changed hook ---------------------------------------------- */

int
net_hosts_add(struct net_hosts *h, const char *host_id)
{
    if (!host_id || !*host_id)
        return 0;
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->ids[i], host_id) == 0)
            return 0;
    if (h->n == h->allocated) {
        size_t a = h->allocated ? h->allocated * 2 : 8;
        char **p = realloc(h->ids, a * sizeof *p);
        if (!p)
            return -ENOMEM;
        h->ids = p;
        h->allocated = a;
    }
    h->ids[h->n] = strdup(host_id);
    if (!h->ids[h->n])
        return -ENOMEM;
    h->n++;
    return 0;
}

void
net_hosts_done(struct net_hosts *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->ids[i]);
    free(h->ids);
    *h = (struct net_hosts){ 0 };
}

void
net_hosts_notify(struct sched *s, struct net_hosts *h)
{
    if (h->n)
        network_hosts_changed(s, (const char *const *)h->ids, h->n);
    net_hosts_done(h);
}

struct hosts_scan {
    const char *network_id;
    char *const *groups;
    size_t n_groups;
    struct net_hosts *h;
    char **with_remote;         /* groups whose rules name one of 'groups' */
    size_t n_with_remote;
};

static bool
in_list(char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

static bool
keep_bound_on_network(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    const Yun__PortRecord *p = (const Yun__PortRecord *)m;
    struct hosts_scan *sc = data;
    return *p->host_id && strcmp(p->network_id, sc->network_id) == 0;
}

int
net_hosts_of_network(struct yun_txn *txn, const char *network_id, struct net_hosts *h)
{
    struct hosts_scan sc = { .network_id = network_id, .h = h };
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    int r = net_collect(txn, &net_kind_port, keep_bound_on_network, &sc, &items, &n);
    for (size_t i = 0; r == 0 && i < n; i++)
        r = net_hosts_add(h, ((Yun__PortRecord *)items[i])->host_id);
    net_free_all(items, n);
    return r;
}

static bool
keep_referring_group(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    const Yun__SecurityGroupRecord *g = (const Yun__SecurityGroupRecord *)m;
    struct hosts_scan *sc = data;
    for (size_t i = 0; i < g->n_rules; i++)
        if (*g->rules[i]->remote_group_id &&
            in_list(sc->groups, sc->n_groups, g->rules[i]->remote_group_id))
            return true;
    return false;
}

static bool
keep_bound_in_groups(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    const Yun__PortRecord *p = (const Yun__PortRecord *)m;
    struct hosts_scan *sc = data;
    if (!*p->host_id)
        return false;
    for (size_t i = 0; i < p->n_security_groups; i++)
        if (in_list(sc->groups, sc->n_groups, p->security_groups[i]) ||
            in_list(sc->with_remote, sc->n_with_remote, p->security_groups[i]))
            return true;
    return false;
}

int
net_hosts_of_groups(struct yun_txn *txn, char *const *groups, size_t n_groups,
                    struct net_hosts *h)
{
    if (n_groups == 0)
        return 0;
    struct hosts_scan sc = { .groups = groups, .n_groups = n_groups, .h = h };
    ProtobufCMessage **gs = NULL;
    size_t ng = 0;
    int r = net_collect(txn, &net_kind_group, keep_referring_group, &sc, &gs, &ng);
    if (r < 0)
        return r;
    _cleanup_free_ char **ids = calloc(ng ? ng : 1, sizeof *ids);
    if (!ids) {
        net_free_all(gs, ng);
        return -ENOMEM;
    }
    for (size_t i = 0; i < ng; i++)
        ids[i] = ((Yun__SecurityGroupRecord *)gs[i])->id;
    sc.with_remote = ids;
    sc.n_with_remote = ng;
    ProtobufCMessage **ps = NULL;
    size_t np = 0;
    r = net_collect(txn, &net_kind_port, keep_bound_in_groups, &sc, &ps, &np);
    for (size_t i = 0; r == 0 && i < np; i++)
        r = net_hosts_add(h, ((Yun__PortRecord *)ps[i])->host_id);
    net_free_all(ps, np);
    net_free_all(gs, ng);
    return r;
}

void
network_set_changed_hook(struct sched *s, network_changed_fn fn, void *data)
{
    s->network_changed = fn;
    s->network_changed_data = data;
}

void
network_hosts_changed(struct sched *s, const char *const *host_ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        log_debug("network state changed host=%s", host_ids[i]);
    if (s->network_changed && n)
        s->network_changed(s, host_ids, n, s->network_changed_data);
}

/* --- networks ---------------------------------------------------------------- */

static int
network_reply(struct sched_call *call, const Yun__NetworkRecord *n)
{
    Yun__NetworkReply y = YUN__NETWORK_REPLY__INIT;
    y.network = (Yun__NetworkRecord *)n;
    return sched_call_reply(call, &y.base);
}

static size_t
segment_key(const char *type, uint32_t seg, uint8_t *buf)
{
    size_t len = strlen(type);
    memcpy(buf, type, len);
    buf[len] = 0;
    uint32_t be = htonl(seg);
    memcpy(buf + len + 1, &be, 4);
    return len + 5;
}

/* The namespace of a network's segment id in "network_segments" (malloc'ed):
 * "vxlan" (VNIs are cloud-wide), "vlan:<label>" (VLAN ids are per physical
 * network) or "flat:<label>" with id 0 (a flat network owns its physical
 * network: one per label). */
static char *
segment_namespace(const char *type, const char *physnet)
{
    char *ns = NULL;
    if (strcmp(type, "vxlan") == 0)
        return strdup(type);
    if (asprintf(&ns, "%s:%s", type, physnet) < 0)
        return NULL;
    return ns;
}

/* Claims segment 'seg' of 'type' for network 'id': -EEXIST when taken. */
static int
segment_claim(struct yun_txn *txn, const char *type, uint32_t seg, const char *id)
{
    uint8_t key[32];
    size_t size = segment_key(type, seg, key);
    const void *v;
    size_t vs;
    int r = yun_txn_get(txn, SCHED_DB_NETWORK_SEGMENTS, key, size, &v, &vs);
    if (r == 0)
        return -EEXIST;
    if (r != -ENOENT)
        return r;
    return yun_txn_put(txn, SCHED_DB_NETWORK_SEGMENTS, key, size, id, strlen(id));
}

static int
segment_release(struct yun_txn *txn, const char *type, uint32_t seg)
{
    uint8_t key[32];
    size_t size = segment_key(type, seg, key);
    int r = yun_txn_del(txn, SCHED_DB_NETWORK_SEGMENTS, key, size);
    return r == -ENOENT ? 0 : r;
}

struct segment_scan {
    const uint8_t *prefix;
    size_t prefix_size;
    uint64_t candidate, last;
};

static int
scan_segment(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct segment_scan *sc = data;
    if (key_size != sc->prefix_size + 4 || memcmp(key, sc->prefix, sc->prefix_size) != 0)
        return 1;
    uint32_t be;
    memcpy(&be, (const uint8_t *)key + sc->prefix_size, 4);
    uint32_t seg = ntohl(be);
    if (seg != sc->candidate)
        return 1;
    sc->candidate++;
    return sc->candidate > sc->last ? 1 : 0;
}

/* The first free segment of 'type' in [first, last]. */
static int
segment_allocate(struct yun_txn *txn, const char *type, uint32_t first, uint32_t last,
                 uint32_t *ret)
{
    if (first == 0 || first > last)
        return YUN_E_CONFIG;
    uint8_t start[32];
    size_t size = segment_key(type, first, start);
    struct segment_scan sc = {
        .prefix = start, .prefix_size = size - 4, .candidate = first, .last = last,
    };
    int r = yun_txn_iterate(txn, SCHED_DB_NETWORK_SEGMENTS, start, size, scan_segment, &sc);
    if (r < 0)
        return r;
    if (sc.candidate > last)
        return YUN_E_EXHAUSTED;
    *ret = (uint32_t)sc.candidate;
    return 0;
}

static bool
type_is_valid(const char *t)
{
    return strcmp(t, "flat") == 0 || strcmp(t, "vlan") == 0 || strcmp(t, "vxlan") == 0;
}

static bool
label_is_valid(const char *s)
{
    return yun_name_is_valid(s, 64);
}

int
sched_network_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__NetworkCreateRequest *q = (const Yun__NetworkCreateRequest *)req;
    struct sched *s = call->s;
    const struct sched_config *cfg = &s->cfg;
    int r = net_check_name(call, "Network", q->name, true);
    if (r == 0)
        r = net_check_description(call, q->description);
    if (r < 0)
        return r;
    if (!call->project || !*call->project)
        return sched_call_error(call, YUN_E_DENIED, "Networks belong to projects: log in "
                                "to one.");
    const char *type = *q->network_type ? q->network_type : cfg->network_default_type;
    if (!type_is_valid(type))
        return sched_call_error(call, YUN_E_INVALID,
                                "Unknown network type '%.32s': use flat, vlan or vxlan.", type);
    if (q->shared && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED, "Only admins may create shared networks.");
    if (q->segmentation_id && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED,
                                "Only admins may choose a network's segment id.");
    const char *physnet = "";
    if (strcmp(type, "vxlan") == 0) {
        if (*q->physical_network)
            return sched_call_error(call, YUN_E_INVALID,
                                    "A vxlan network has no physical network.");
        if (q->segmentation_id && (q->segmentation_id > 16777215))
            return sched_call_error(call, YUN_E_INVALID,
                                    "A VNI is from 1 to 16777215, not %u.", q->segmentation_id);
    } else {
        physnet = *q->physical_network ? q->physical_network : cfg->network_physical_network;
        if (!label_is_valid(physnet))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Physical network '%.64s' is not 1 to 64 of "
                                    "[A-Za-z0-9._-].", physnet);
        if (strcmp(type, "flat") == 0 && q->segmentation_id)
            return sched_call_error(call, YUN_E_INVALID, "A flat network has no segment id.");
        if (strcmp(type, "vlan") == 0 && q->segmentation_id > 4094)
            return sched_call_error(call, YUN_E_INVALID,
                                    "A VLAN id is from 1 to 4094, not %u.", q->segmentation_id);
    }
    uint32_t mtu = q->mtu ? q->mtu
                  : strcmp(type, "vxlan") == 0 ? cfg->network_vxlan_mtu : cfg->network_mtu;
    if (mtu < 68 || mtu > 9000)
        return sched_call_error(call, YUN_E_INVALID, "The MTU is from 68 to 9000, not %u.",
                                mtu);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    char gid[YUN_UUID_STR_SIZE];
    r = net_default_group(s, txn, call->project, gid);
    if (r < 0)
        return r;
    size_t count;
    r = net_count_project(txn, &net_kind_network, call->project, &count);
    if (r < 0)
        return r;
    if (count >= NET_NETWORKS_PER_PROJECT)
        return sched_call_error(call, -ENOSPC, "A project may have at most %d networks.",
                                NET_NETWORKS_PER_PROJECT);
    char id[YUN_UUID_STR_SIZE];
    r = yun_uuid_new(id);
    if (r < 0)
        return r;
    uint32_t seg = q->segmentation_id;
    _cleanup_free_ char *claim_type = segment_namespace(type, physnet);
    if (!claim_type)
        return -ENOMEM;
    if (strcmp(type, "flat") == 0) {
        seg = 0;
    } else if (!seg) {
        bool vx = strcmp(type, "vxlan") == 0;
        r = segment_allocate(txn, claim_type, vx ? cfg->network_vni_min : cfg->network_vlan_min,
                             vx ? cfg->network_vni_max : cfg->network_vlan_max, &seg);
        if (r == YUN_E_EXHAUSTED)
            return sched_call_error(call, r, "No free %s segment id is left in the configured "
                                    "range.", type);
        if (r == YUN_E_CONFIG)
            return sched_call_error(call, r, "The [network] range of %s segment ids is empty.",
                                    type);
        if (r < 0)
            return r;
    }
    r = segment_claim(txn, claim_type, seg, id);
    if (r == -EEXIST) {
        if (strcmp(type, "flat") == 0)
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "Physical network '%s' already has a flat network.",
                                    physnet);
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Segment id %u of %s is taken by another network.", seg, type);
    }
    if (r < 0)
        return r;

    uint64_t now = yun_wall_us();
    Yun__NetworkRecord n = YUN__NETWORK_RECORD__INIT;
    n.id = id;
    n.name = q->name;
    n.project = (char *)call->project;
    n.shared = q->shared;
    n.network_type = (char *)type;
    n.physical_network = (char *)physnet;
    n.segmentation_id = seg;
    n.mtu = mtu;
    n.admin_state_up = true;
    n.status = (char *)"ACTIVE";
    n.created_us = now;
    n.updated_us = now;
    n.description = q->description;
    r = net_store(txn, &net_kind_network, &n.base);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "network.create", id, NULL);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "network created net=%s name=%s type=%s segment=%u",
            id, q->name, type, seg);
    return network_reply(call, &n);
}

struct list_filter {
    const struct sched_call *call;
    bool all;
    const char *network_id;
};

static bool
keep_visible_network(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    struct list_filter *f = data;
    return net_visible(txn, f->call, &net_kind_network, m, f->all);
}

static int
check_all_projects(struct sched_call *call, bool all)
{
    if (all && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED, "Only admins may list all projects' "
                                "objects.");
    return 0;
}

int
sched_network_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__NetworkListRequest *q = (const Yun__NetworkListRequest *)req;
    int r = check_all_projects(call, q->all_projects);
    if (r < 0)
        return r;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    struct list_filter f = { .call = call, .all = q->all_projects };
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    r = net_collect(txn, &net_kind_network, keep_visible_network, &f, &items, &n);
    if (r < 0)
        return r;
    Yun__NetworkListReply y = YUN__NETWORK_LIST_REPLY__INIT;
    y.networks = (Yun__NetworkRecord **)items;
    y.n_networks = n;
    r = sched_call_reply(call, &y.base);
    net_free_all(items, n);
    return r;
}

int
sched_network_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__NetworkRef *q = (const Yun__NetworkRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_network, q->network, &m);
    if (r < 0)
        return r;
    return network_reply(call, (Yun__NetworkRecord *)m);
}

/* Changes are the owner's (or an admin's): a shared network is usable by
 * all, not theirs to change. */
static int
check_owner(struct sched_call *call, const struct net_kind *k, const ProtobufCMessage *m)
{
    if (call->is_admin || strcmp(net_msg_str(m, "project"), call->project) == 0)
        return 0;
    return sched_call_error(call, YUN_E_DENIED, "%s '%s' belongs to another project.",
                            k->what, net_msg_str(m, "id"));
}

struct foreign_ports {
    const char *network_id;
    const char *project;
};

static bool
keep_foreign_port(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    const struct foreign_ports *fp = data;
    const Yun__PortRecord *p = (const Yun__PortRecord *)m;
    return strcmp(p->network_id, fp->network_id) == 0 && strcmp(p->project, fp->project) != 0 &&
           strcmp(p->device_owner, NETWORK_DEVICE_OWNER_DHCP) != 0;
}

int
sched_network_update(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__NetworkUpdateRequest *q = (const Yun__NetworkUpdateRequest *)req;
    int r = 0;
    if (*q->name)
        r = net_check_name(call, "Network", q->name, true);
    if (r == 0 && q->set_description)
        r = net_check_description(call, q->description);
    if (r < 0)
        return r;
    if (q->set_shared && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED, "Only admins may share a network.");
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_network, q->network, &m);
    if (r < 0)
        return r;
    r = check_owner(call, &net_kind_network, m);
    if (r < 0)
        return r;
    Yun__NetworkRecord n = *(Yun__NetworkRecord *)m;
    if (q->set_shared && !q->shared && n.shared) {
        struct foreign_ports fp = { .network_id = n.id, .project = n.project };
        ProtobufCMessage **items = NULL;
        size_t np = 0;
        r = net_collect(txn, &net_kind_port, keep_foreign_port, &fp, &items, &np);
        net_free_all(items, np);
        if (r < 0)
            return r;
        if (np)
            return sched_call_error(call, YUN_E_INUSE,
                                    "Network '%s' has %zu port%s of other projects: it stays "
                                    "shared.", n.name, np, np == 1 ? "" : "s");
    }
    if (*q->name)
        n.name = q->name;
    if (q->set_description)
        n.description = q->description;
    if (q->set_shared)
        n.shared = q->shared;
    n.updated_us = yun_wall_us();
    struct net_hosts hosts = { 0 };
    r = net_store(txn, &net_kind_network, &n.base);
    if (r == 0)
        r = net_hosts_of_network(txn, n.id, &hosts);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "network.update", n.id, NULL);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    net_hosts_notify(call->s, &hosts);
    return network_reply(call, &n);
}

static bool
keep_network_ports(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    return strcmp(((const Yun__PortRecord *)m)->network_id, data) == 0;
}

static int
network_release_segment(struct yun_txn *txn, const Yun__NetworkRecord *n)
{
    _cleanup_free_ char *ns = segment_namespace(n->network_type, n->physical_network);
    if (!ns)
        return -ENOMEM;
    return segment_release(txn, ns, n->segmentation_id);
}

int
sched_network_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__NetworkRef *q = (const Yun__NetworkRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_network, q->network, &m);
    if (r < 0)
        return r;
    r = check_owner(call, &net_kind_network, m);
    if (r < 0)
        return r;
    const Yun__NetworkRecord *n = (const Yun__NetworkRecord *)m;
    ProtobufCMessage **ports = NULL;
    size_t np = 0;
    r = net_collect(txn, &net_kind_port, keep_network_ports, n->id, &ports, &np);
    if (r < 0)
        return r;
    size_t busy = 0;
    for (size_t i = 0; i < np; i++)
        if (strcmp(((Yun__PortRecord *)ports[i])->device_owner, NETWORK_DEVICE_OWNER_DHCP) != 0)
            busy++;
    if (busy) {
        net_free_all(ports, np);
        return sched_call_error(call, YUN_E_INUSE,
                                "Network '%s' has %zu port%s: delete %s first.", n->name,
                                busy, busy == 1 ? "" : "s", busy == 1 ? "it" : "them");
    }
    struct net_hosts hosts = { 0 };
    for (size_t i = 0; r == 0 && i < np; i++) {
        r = net_hosts_add(&hosts, ((Yun__PortRecord *)ports[i])->host_id);
        if (r == 0)
            r = net_port_remove(txn, (Yun__PortRecord *)ports[i]);
    }
    net_free_all(ports, np);
    for (size_t i = 0; r == 0 && i < n->n_subnets; i++) {
        r = yun_txn_del(txn, SCHED_DB_SUBNETS, n->subnets[i], strlen(n->subnets[i]));
        if (r == -ENOENT)
            r = 0;
    }
    if (r == 0)
        r = network_release_segment(txn, n);
    if (r == 0)
        r = yun_txn_del(txn, SCHED_DB_NETWORKS, n->id, strlen(n->id));
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "network.delete", n->id, NULL);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    log_req(YUN_LOG_INFO, call->req, 0, "network deleted net=%s name=%s", n->id, n->name);
    net_hosts_notify(call->s, &hosts);
    return network_reply(call, n);
}

int
network_find_usable(struct sched *s, struct yun_txn *txn, const struct sched_call *call,
                    const char *name_or_id, Yun__NetworkRecord **ret)
{
    ProtobufCMessage *m = NULL;
    int r = net_find((struct sched_call *)call, txn, &net_kind_network, name_or_id, &m);
    if (r < 0)
        return r;
    *ret = (Yun__NetworkRecord *)m;
    return 0;
}

/* --- subnets ----------------------------------------------------------------- */

static int
subnet_reply(struct sched_call *call, const Yun__SubnetRecord *sn)
{
    Yun__SubnetReply y = YUN__SUBNET_REPLY__INIT;
    y.subnet = (Yun__SubnetRecord *)sn;
    return sched_call_reply(call, &y.base);
}

static int
check_dns(struct sched_call *call, char *const *dns, size_t n)
{
    if (n > NET_DNS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "A subnet has at most %d DNS servers.",
                                NET_DNS_MAX);
    for (size_t i = 0; i < n; i++) {
        uint32_t a;
        if (ipam_parse_addr(dns[i], &a) < 0)
            return sched_call_error(call, YUN_E_INVALID,
                                    "DNS server '%.32s' is not an IPv4 address.", dns[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(dns[i], dns[j]) == 0)
                return sched_call_error(call, YUN_E_INVALID,
                                        "DNS server '%s' is given twice.", dns[i]);
    }
    return 0;
}

static const char *
pool_error_text(enum ipam_pool_error e)
{
    switch (e) {
    case IPAM_POOL_REVERSED:
        return "starts after it ends";
    case IPAM_POOL_OUTSIDE:
        return "is not within the subnet's host addresses";
    case IPAM_POOL_OVERLAP:
        return "overlaps another pool";
    case IPAM_POOL_GATEWAY:
        return "contains the gateway";
    default:
        return "is invalid";
    }
}

int
sched_subnet_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SubnetCreateRequest *q = (const Yun__SubnetCreateRequest *)req;
    struct sched *s = call->s;
    int r = net_check_name(call, "Subnet", q->name, false);
    if (r == 0)
        r = net_check_description(call, q->description);
    if (r == 0)
        r = check_dns(call, q->dns_nameservers, q->n_dns_nameservers);
    if (r < 0)
        return r;
    struct ipam_cidr c;
    if (ipam_parse_cidr(q->cidr, true, &c) < 0)
        return sched_call_error(call, YUN_E_INVALID,
                                "Subnet range '%.32s' is not a canonical IPv4 CIDR "
                                "(a.b.c.d/n with the host bits zero).", q->cidr);
    if (c.prefix > IPAM_PREFIX_MAX)
        return sched_call_error(call, YUN_E_INVALID,
                                "Subnet range '%s' is too small: the prefix is at most /%d.",
                                q->cidr, IPAM_PREFIX_MAX);
    if (c.prefix < 8)
        return sched_call_error(call, YUN_E_INVALID,
                                "Subnet range '%s' is too large: the prefix is at least /8.",
                                q->cidr);
    uint32_t gw = 0;
    if (q->no_gateway && *q->gateway_ip)
        return sched_call_error(call, YUN_E_INVALID, "Give a gateway or none, not both.");
    if (*q->gateway_ip) {
        if (ipam_parse_addr(q->gateway_ip, &gw) < 0)
            return sched_call_error(call, YUN_E_INVALID,
                                    "Gateway '%.32s' is not an IPv4 address.", q->gateway_ip);
        if (!ipam_is_host(&c, gw))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Gateway '%s' is not a host address of subnet '%s' "
                                    "(outside it, or its network or broadcast address).",
                                    q->gateway_ip, q->cidr);
    } else if (!q->no_gateway) {
        gw = ipam_cidr_first(&c) + 1;
    }
    if (q->n_allocation_pools > NET_POOLS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "A subnet has at most %d pools.",
                                NET_POOLS_MAX);
    struct ipam_range pools[NET_POOLS_MAX];
    size_t n_pools = q->n_allocation_pools;
    for (size_t i = 0; i < n_pools; i++) {
        const Yun__AllocationPool *p = q->allocation_pools[i];
        if (!p || ipam_parse_addr(p->start, &pools[i].start) < 0 ||
            ipam_parse_addr(p->end, &pools[i].end) < 0)
            return sched_call_error(call, YUN_E_INVALID,
                                    "Allocation pool %zu is not two IPv4 addresses "
                                    "(start=a.b.c.d,end=a.b.c.d).", i + 1);
    }
    if (n_pools) {
        size_t bad;
        enum ipam_pool_error e = ipam_check_pools(&c, gw, pools, n_pools, &bad);
        if (e != IPAM_POOL_OK)
            return sched_call_error(call, YUN_E_INVALID,
                                    "Allocation pool %s-%s %s.",
                                    q->allocation_pools[bad]->start,
                                    q->allocation_pools[bad]->end, pool_error_text(e));
    } else {
        n_pools = ipam_default_pools(&c, gw, pools);
    }

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    char gid[YUN_UUID_STR_SIZE];
    if (*call->project) {
        r = net_default_group(s, txn, call->project, gid);
        if (r < 0)
            return r;
    }
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_network, q->network, &m);
    if (r < 0)
        return r;
    r = check_owner(call, &net_kind_network, m);
    if (r < 0)
        return r;
    Yun__NetworkRecord n = *(Yun__NetworkRecord *)m;
    if (n.n_subnets >= NET_SUBNETS_PER_NETWORK)
        return sched_call_error(call, -ENOSPC, "A network has at most %d subnets.",
                                NET_SUBNETS_PER_NETWORK);
    for (size_t i = 0; i < n.n_subnets; i++) {
        _cleanup_msg_ ProtobufCMessage *o = NULL;
        r = net_load(txn, &net_kind_subnet, n.subnets[i], &o);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            return r;
        struct ipam_cidr oc;
        const Yun__SubnetRecord *os = (const Yun__SubnetRecord *)o;
        if (ipam_parse_cidr(os->cidr, true, &oc) == 0 && ipam_cidrs_overlap(&c, &oc))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Subnet range '%s' overlaps subnet '%s' (%s) of network "
                                    "'%s'.", q->cidr, *os->name ? os->name : os->id, os->cidr,
                                    n.name);
    }
    char id[YUN_UUID_STR_SIZE];
    r = yun_uuid_new(id);
    if (r < 0)
        return r;
    char gw_s[IPAM_ADDR_STR_SIZE] = "";
    if (gw)
        ipam_format_addr(gw, gw_s);
    char starts[NET_POOLS_MAX][IPAM_ADDR_STR_SIZE], ends[NET_POOLS_MAX][IPAM_ADDR_STR_SIZE];
    Yun__AllocationPool pool_msgs[NET_POOLS_MAX];
    Yun__AllocationPool *pool_ptrs[NET_POOLS_MAX];
    for (size_t i = 0; i < n_pools; i++) {
        yun__allocation_pool__init(&pool_msgs[i]);
        pool_msgs[i].start = (char *)ipam_format_addr(pools[i].start, starts[i]);
        pool_msgs[i].end = (char *)ipam_format_addr(pools[i].end, ends[i]);
        pool_ptrs[i] = &pool_msgs[i];
    }
    uint64_t now = yun_wall_us();
    char cidr_s[IPAM_CIDR_STR_SIZE];
    Yun__SubnetRecord sn = YUN__SUBNET_RECORD__INIT;
    sn.id = id;
    sn.name = q->name;
    sn.project = n.project;
    sn.network_id = n.id;
    sn.ip_version = 4;
    sn.cidr = (char *)ipam_format_cidr(&c, cidr_s);
    sn.gateway_ip = gw_s;
    sn.allocation_pools = pool_ptrs;
    sn.n_allocation_pools = n_pools;
    sn.dns_nameservers = q->dns_nameservers;
    sn.n_dns_nameservers = q->n_dns_nameservers;
    sn.enable_dhcp = !q->disable_dhcp;
    sn.created_us = now;
    sn.updated_us = now;
    sn.description = q->description;
    _cleanup_free_ char **subnets = calloc(n.n_subnets + 1, sizeof *subnets);
    if (!subnets)
        return -ENOMEM;
    if (n.n_subnets)
        memcpy(subnets, n.subnets, n.n_subnets * sizeof *subnets);
    subnets[n.n_subnets] = id;
    n.subnets = subnets;
    n.n_subnets++;
    n.updated_us = now;
    struct net_hosts hosts = { 0 };
    r = net_store(txn, &net_kind_subnet, &sn.base);
    if (r == 0)
        r = net_store(txn, &net_kind_network, &n.base);
    /* Hosts already wired to the network get DHCP on the new subnet. */
    if (r == 0)
        r = net_hosts_of_network(txn, n.id, &hosts);
    for (size_t i = 0; r == 0 && i < hosts.n; i++)
        r = net_dhcp_port_sync(s, txn, &n, hosts.ids[i]);
    if (r == YUN_E_EXHAUSTED)
        r = sched_call_error(call, r, "Subnet '%s' has too few addresses for the DHCP ports "
                             "of the hosts on network '%s'.", sn.cidr, n.name);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "subnet.create", id, NULL);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    net_hosts_notify(s, &hosts);
    log_req(YUN_LOG_INFO, call->req, 0, "subnet created subnet=%s net=%s cidr=%s", id, n.id,
            sn.cidr);
    return subnet_reply(call, &sn);
}

static bool
keep_visible_subnet(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    struct list_filter *f = data;
    const Yun__SubnetRecord *sn = (const Yun__SubnetRecord *)m;
    if (f->network_id && strcmp(sn->network_id, f->network_id) != 0)
        return false;
    return net_visible(txn, f->call, &net_kind_subnet, m, f->all);
}

int
sched_subnet_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SubnetListRequest *q = (const Yun__SubnetListRequest *)req;
    int r = check_all_projects(call, q->all_projects);
    if (r < 0)
        return r;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    struct list_filter f = { .call = call, .all = q->all_projects };
    _cleanup_msg_ ProtobufCMessage *nm = NULL;
    if (*q->network) {
        r = net_find(call, txn, &net_kind_network, q->network, &nm);
        if (r < 0)
            return r;
        f.network_id = ((Yun__NetworkRecord *)nm)->id;
        f.all = true; /* every subnet of a network the caller sees */
    }
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    r = net_collect(txn, &net_kind_subnet, keep_visible_subnet, &f, &items, &n);
    if (r < 0)
        return r;
    Yun__SubnetListReply y = YUN__SUBNET_LIST_REPLY__INIT;
    y.subnets = (Yun__SubnetRecord **)items;
    y.n_subnets = n;
    r = sched_call_reply(call, &y.base);
    net_free_all(items, n);
    return r;
}

int
sched_subnet_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SubnetRef *q = (const Yun__SubnetRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_subnet, q->subnet, &m);
    if (r < 0)
        return r;
    return subnet_reply(call, (Yun__SubnetRecord *)m);
}

static bool
in_pools(const Yun__SubnetRecord *sn, uint32_t a)
{
    for (size_t i = 0; i < sn->n_allocation_pools; i++) {
        uint32_t s0, e0;
        if (ipam_parse_addr(sn->allocation_pools[i]->start, &s0) == 0 &&
            ipam_parse_addr(sn->allocation_pools[i]->end, &e0) == 0 && a >= s0 && a <= e0)
            return true;
    }
    return false;
}

int
sched_subnet_update(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SubnetUpdateRequest *q = (const Yun__SubnetUpdateRequest *)req;
    int r = 0;
    if (*q->name)
        r = net_check_name(call, "Subnet", q->name, true);
    if (r == 0 && q->set_description)
        r = net_check_description(call, q->description);
    if (r == 0 && q->set_dns_nameservers)
        r = check_dns(call, q->dns_nameservers, q->n_dns_nameservers);
    if (r < 0)
        return r;
    if (q->no_gateway && *q->gateway_ip)
        return sched_call_error(call, YUN_E_INVALID, "Give a gateway or none, not both.");
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_subnet, q->subnet, &m);
    if (r < 0)
        return r;
    r = check_owner(call, &net_kind_subnet, m);
    if (r < 0)
        return r;
    Yun__SubnetRecord sn = *(Yun__SubnetRecord *)m;
    char gw_s[IPAM_ADDR_STR_SIZE];
    if (*q->gateway_ip) {
        struct ipam_cidr c;
        uint32_t gw;
        if (ipam_parse_addr(q->gateway_ip, &gw) < 0)
            return sched_call_error(call, YUN_E_INVALID,
                                    "Gateway '%.32s' is not an IPv4 address.", q->gateway_ip);
        if (ipam_parse_cidr(sn.cidr, true, &c) < 0)
            return -EBADMSG;
        if (!ipam_is_host(&c, gw))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Gateway '%s' is not a host address of subnet '%s' "
                                    "(outside it, or its network or broadcast address).",
                                    q->gateway_ip, sn.cidr);
        if (in_pools(&sn, gw))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Gateway '%s' is inside an allocation pool of subnet '%s'.",
                                    q->gateway_ip, sn.cidr);
        r = net_ip_is_allocated(txn, sn.id, gw);
        if (r < 0)
            return r;
        if (r > 0)
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "Gateway '%s' is the address of a port.", q->gateway_ip);
        sn.gateway_ip = (char *)ipam_format_addr(gw, gw_s);
    } else if (q->no_gateway) {
        sn.gateway_ip = (char *)"";
    }
    if (*q->name)
        sn.name = q->name;
    if (q->set_description)
        sn.description = q->description;
    if (q->set_dns_nameservers) {
        sn.dns_nameservers = q->dns_nameservers;
        sn.n_dns_nameservers = q->n_dns_nameservers;
    }
    sn.updated_us = yun_wall_us();
    struct net_hosts hosts = { 0 };
    r = net_store(txn, &net_kind_subnet, &sn.base);
    if (r == 0)
        r = net_hosts_of_network(txn, sn.network_id, &hosts);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "subnet.update", sn.id, NULL);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    net_hosts_notify(call->s, &hosts);
    return subnet_reply(call, &sn);
}

struct alloc_scan {
    const char *prefix;
    size_t prefix_size;
    char **ports;
    size_t n;
};

static int
scan_allocs(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct alloc_scan *sc = data;
    if (key_size != sc->prefix_size + 4 || memcmp(key, sc->prefix, sc->prefix_size) != 0)
        return 1;
    char **p = realloc(sc->ports, (sc->n + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    sc->ports = p;
    p[sc->n] = strndup(val, val_size);
    if (!p[sc->n])
        return -ENOMEM;
    sc->n++;
    return 0;
}

int
sched_subnet_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SubnetRef *q = (const Yun__SubnetRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_subnet, q->subnet, &m);
    if (r < 0)
        return r;
    r = check_owner(call, &net_kind_subnet, m);
    if (r < 0)
        return r;
    const Yun__SubnetRecord *sn = (const Yun__SubnetRecord *)m;
    char prefix[YUN_UUID_STR_SIZE + 1];
    int pn = snprintf(prefix, sizeof prefix, "%s%c", sn->id, 0);
    struct alloc_scan sc = { .prefix = prefix, .prefix_size = (size_t)pn };
    r = yun_txn_iterate(txn, SCHED_DB_IP_ALLOCATIONS, prefix, sc.prefix_size, scan_allocs, &sc);
    struct net_hosts hosts = { 0 };
    size_t busy = 0;
    for (size_t i = 0; r == 0 && i < sc.n; i++) {
        _cleanup_msg_ ProtobufCMessage *pm = NULL;
        r = net_load(txn, &net_kind_port, sc.ports[i], &pm);
        if (r == -ENOENT) {
            r = 0;
            continue;
        }
        if (r < 0)
            break;
        Yun__PortRecord *p = (Yun__PortRecord *)pm;
        if (strcmp(p->device_owner, NETWORK_DEVICE_OWNER_DHCP) != 0) {
            busy++;
            continue;
        }
        /* A DHCP port gives its address of this subnet back. */
        size_t k = 0;
        for (size_t j = 0; j < p->n_fixed_ips; j++)
            if (strcmp(p->fixed_ips[j]->subnet_id, sn->id) != 0)
                p->fixed_ips[k++] = p->fixed_ips[j];
            else
                yun__fixed_ip__free_unpacked(p->fixed_ips[j], NULL);
        p->n_fixed_ips = k;
        r = net_store(txn, &net_kind_port, pm);
        if (r == 0)
            r = net_hosts_add(&hosts, p->host_id);
    }
    for (size_t i = 0; i < sc.n; i++)
        free(sc.ports[i]);
    free(sc.ports);
    if (r == 0 && busy)
        r = sched_call_error(call, YUN_E_INUSE,
                             "Subnet '%s' has %zu port address%s: delete the port%s first.",
                             *sn->name ? sn->name : sn->id, busy, busy == 1 ? "" : "es",
                             busy == 1 ? "" : "s");
    /* Only DHCP ports' allocations are left: drop them all. */
    if (r == 0)
        r = net_ip_release_all(txn, sn->id);
    _cleanup_msg_ ProtobufCMessage *nm = NULL;
    if (r == 0)
        r = net_load(txn, &net_kind_network, sn->network_id, &nm);
    if (r == 0) {
        Yun__NetworkRecord *n = (Yun__NetworkRecord *)nm;
        size_t k = 0;
        for (size_t j = 0; j < n->n_subnets; j++)
            if (strcmp(n->subnets[j], sn->id) != 0)
                n->subnets[k++] = n->subnets[j];
            else
                free(n->subnets[j]);
        n->n_subnets = k;
        n->updated_us = yun_wall_us();
        r = net_store(txn, &net_kind_network, nm);
    }
    if (r == 0)
        r = yun_txn_del(txn, SCHED_DB_SUBNETS, sn->id, strlen(sn->id));
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "subnet.delete", sn->id, NULL);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    net_hosts_notify(call->s, &hosts);
    return subnet_reply(call, sn);
}
