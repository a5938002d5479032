/* SPDX-License-Identifier: Apache-2.0
 * instance-network.c: the networks of instances, between compute
 * (instance.c) and the network service (network.h). An instance asks for
 * networks at create; once placement has chosen its host, one port per
 * network is made and bound to that host in the same write transaction;
 * a retry elsewhere binds them to the new host; deletion releases them.
 *
 * It also keeps every agent's network state in step: a host's state
 * (network_host_state, plus what the metadata service serves for each of
 * its instance ports) rides in each spawn and is pushed with
 * OP_AGENT_NETWORK_STATE whenever something it holds changed, when the
 * host registers, and on start. Pushes to one host go one at a time; a
 * change while one is in flight sends one more, with the state of then
 * (each carries a generation that only grows, so an agent never goes
 * back to an older one). docs/networks.md. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "log.h"
#include "network-priv.h"
#include "network.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "compute.pb-c.h"
#include "network.pb-c.h"

YUN_LOG_MODULE("sched.netsync");

#define OWNER_COMPUTE "compute:"
#define HOSTNAME_MAX 63

struct push_host {
    struct push_host *next;
    char *host_id;
    bool in_flight;
    bool again;       /* changed while in flight */
};

struct sched_netpush {
    struct push_host *hosts;
    uint64_t generation;
};

static void
state_freep(Yun__HostNetworkState **st)
{
    if (*st)
        yun__host_network_state__free_unpacked(*st, NULL);
}

/* --- instances' ports ------------------------------------------------------------- */

int
sched_instance_networks_resolve(struct sched_call *call, struct yun_txn *txn,
                                char *const *refs, size_t n, char ***ret_ids)
{
    _cleanup_free_ char **ids = calloc(n + 1, sizeof *ids);
    if (!ids)
        return -ENOMEM;
    int r = 0;
    size_t got = 0;
    for (size_t k = 0; r >= 0 && k < n; k++) {
        Yun__NetworkRecord *net = NULL;
        r = network_find_usable(call->s, txn, call, refs[k], &net);
        if (r < 0) {
            if (!call->error)
                sched_call_error(call, r, "Network '%.64s' is not one this project can use.",
                                 refs[k]);
            break;
        }
        for (size_t j = 0; j < got; j++)
            if (strcmp(ids[j], net->id) == 0)
                r = sched_call_error(call, YUN_E_INVALID, "Network '%.64s' is given twice.",
                                     refs[k]);
        if (r >= 0 && !(ids[got++] = strdup(net->id)))
            r = -ENOMEM;
        yun__network_record__free_unpacked(net, NULL);
    }
    if (r < 0) {
        yun_strv_free(ids);
        ids = NULL;
        return r;
    }
    *ret_ids = TAKE_PTR(ids);
    return 0;
}

static int dns_name_pick(struct yun_txn *txn, const Yun__InstanceRecord *i,
                         const char *network_id, char out[HOSTNAME_MAX + 1]);
static int dup_to(char **field, const char *value);

int
sched_instance_ports_create(struct sched *s, struct yun_txn *txn, const Yun__InstanceRecord *i)
{
    for (size_t k = 0; k < i->n_networks; k++) {
        Yun__PortRecord *p = NULL;
        int r = port_create_for_instance(s, txn, i->project, i->networks[k], i->id, &p);
        if (r < 0)
            return r;
        char name[HOSTNAME_MAX + 1];
        r = dns_name_pick(txn, i, p->network_id, name);
        if (r >= 0)
            r = dup_to(&p->dns_name, name);
        if (r >= 0)
            r = net_store(txn, &net_kind_port, &p->base);
        if (r >= 0)
            r = port_bind_host(s, txn, p->id, i->host_id);
        yun__port_record__free_unpacked(p, NULL);
        if (r < 0)
            return r;
    }
    return 0;
}

int
sched_instance_ports_rebind(struct sched *s, struct yun_txn *txn, const Yun__InstanceRecord *i)
{
    Yun__PortRecord **ports = NULL;
    size_t n = 0;
    int r = ports_of_instance(s, txn, i->id, &ports, &n);
    for (size_t k = 0; r >= 0 && k < n; k++)
        r = port_bind_host(s, txn, ports[k]->id, i->host_id);
    for (size_t k = 0; k < n; k++)
        yun__port_record__free_unpacked(ports[k], NULL);
    free(ports);
    return r;
}

int
sched_instance_ports_release(struct sched *s, struct yun_txn *txn, const Yun__InstanceRecord *i)
{
    if (!i->n_networks)
        return 0;
    return port_delete_for_instance(s, txn, i->id);
}

int
sched_instance_addresses(struct sched *s, struct yun_txn *txn, const char *instance_id,
                         Yun__InstanceAddress ***ret, size_t *ret_n)
{
    *ret = NULL;
    *ret_n = 0;
    Yun__PortRecord **ports = NULL;
    size_t n = 0;
    int r = ports_of_instance(s, txn, instance_id, &ports, &n);
    if (r < 0)
        return r;
    size_t count = 0;
    for (size_t k = 0; k < n; k++)
        count += ports[k]->n_fixed_ips;
    Yun__InstanceAddress **v = calloc(count + 1, sizeof *v);
    if (!v)
        r = -ENOMEM;
    size_t got = 0;
    for (size_t k = 0; r >= 0 && k < n; k++) {
        const Yun__PortRecord *p = ports[k];
        Yun__NetworkRecord *net = NULL;
        (void)yun_txn_get_msg(txn, SCHED_DB_NETWORKS, p->network_id,
                              &yun__network_record__descriptor, (ProtobufCMessage **)&net);
        for (size_t f = 0; r >= 0 && f < p->n_fixed_ips; f++) {
            Yun__InstanceAddress *a = calloc(1, sizeof *a);
            if (!a) {
                r = -ENOMEM;
                break;
            }
            yun__instance_address__init(a);
            v[got++] = a;
            if (!(a->network_id = strdup(p->network_id)) ||
                !(a->network_name = strdup(net ? net->name : "")) ||
                !(a->ip_address = strdup(p->fixed_ips[f]->ip_address)) ||
                !(a->mac_address = strdup(p->mac_address)) || !(a->port_id = strdup(p->id)))
                r = -ENOMEM;
        }
        if (net)
            yun__network_record__free_unpacked(net, NULL);
    }
    for (size_t k = 0; k < n; k++)
        yun__port_record__free_unpacked(ports[k], NULL);
    free(ports);
    if (r < 0) {
        sched_instance_addresses_free(v, got);
        return r;
    }
    *ret = v;
    *ret_n = got;
    return 0;
}

void
sched_instance_addresses_free(Yun__InstanceAddress **v, size_t n)
{
    /* Each field was strdup'ed, or is still the init's empty string. */
    for (size_t k = 0; k < n; k++)
        if (v[k]) {
            char *fields[] = { v[k]->network_id, v[k]->network_name, v[k]->ip_address,
                               v[k]->mac_address, v[k]->port_id };
            for (size_t f = 0; f < ELEMENTSOF(fields); f++)
                if (fields[f] != protobuf_c_empty_string)
                    free(fields[f]);
            free(v[k]);
        }
    free(v);
}

/* --- the host state with its metadata ------------------------------------------------ */

/* A DNS label from the instance's name: lower case letters, digits and
 * '-', at most 63, starting with a letter, not ending with '-'; else
 * "host-" and the id's first characters. */
static void
hostname_of(const Yun__InstanceRecord *i, char out[HOSTNAME_MAX + 1])
{
    size_t n = 0;
    for (const char *c = i->name; *c && n < HOSTNAME_MAX; c++) {
        unsigned char ch = (unsigned char)*c;
        if (isalnum(ch) && ch < 128)
            out[n++] = (char)tolower(ch);
        else if ((ch == '-' || ch == '_' || ch == '.' || ch == ' ') && n && out[n - 1] != '-')
            out[n++] = '-';
    }
    while (n && out[n - 1] == '-')
        n--;
    out[n] = '\0';
    /* The agent's DHCP hosts file takes the same rule. */
    if (!yun_hostname_is_valid(out))
        snprintf(out, HOSTNAME_MAX + 1, "host-%.8s", i->id);
}

static bool
keep_instance_port_on(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    (void)txn;
    const Yun__PortRecord *p = (const Yun__PortRecord *)m;
    return strcmp(p->network_id, (const char *)data) == 0 && *p->device_id &&
           strncmp(p->device_owner, OWNER_COMPUTE, strlen(OWNER_COMPUTE)) == 0;
}

/* The name instance port 'p' is known by: its dns_name, or for a port
 * made before ports kept one, its instance's name as a label. "" when its
 * instance is gone. */
static int
port_dns_name(struct yun_txn *txn, const Yun__PortRecord *p, char out[HOSTNAME_MAX + 1])
{
    out[0] = '\0';
    if (*p->dns_name) {
        snprintf(out, HOSTNAME_MAX + 1, "%s", p->dns_name);
        return 0;
    }
    Yun__InstanceRecord *o = NULL;
    int r = yun_txn_get_msg(txn, SCHED_DB_INSTANCES, p->device_id,
                            &yun__instance_record__descriptor, (ProtobufCMessage **)&o);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    hostname_of(o, out);
    yun__instance_record__free_unpacked(o, NULL);
    return 0;
}

/* Picks the DNS label of instance 'i' on network 'network_id' when its
 * port there is made: hostname_of(i), unless another instance port of the
 * network already goes by it; then that name, shortened to fit, + "-" +
 * the first 8 characters of i's id. Kept in the port record, so a name
 * never changes under a running guest, and DHCP and metadata, which both
 * read it, tell the guest one name. */
static int
dns_name_pick(struct yun_txn *txn, const Yun__InstanceRecord *i, const char *network_id,
              char out[HOSTNAME_MAX + 1])
{
    hostname_of(i, out);
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    int r = net_collect(txn, &net_kind_port, keep_instance_port_on, (void *)network_id, &items,
                        &n);
    bool taken = false;
    for (size_t k = 0; r >= 0 && !taken && k < n; k++) {
        const Yun__PortRecord *p = (const Yun__PortRecord *)items[k];
        char other[HOSTNAME_MAX + 1];
        if (strcmp(p->device_id, i->id) != 0 && (r = port_dns_name(txn, p, other)) >= 0)
            taken = strcmp(other, out) == 0;
    }
    net_free_all(items, n);
    if (r < 0)
        return r;
    if (taken) {
        /* 63 = up to 54 of the name, '-', 8 of the id. */
        size_t len = strlen(out);
        if (len > HOSTNAME_MAX - 9)
            len = HOSTNAME_MAX - 9;
        while (len && out[len - 1] == '-')
            len--;
        (void)snprintf(out + len, HOSTNAME_MAX + 1 - len, "-%.8s", i->id);
    }
    return 0;
}

static int
dup_to(char **field, const char *value)
{
    char *s = strdup(value ? value : "");
    if (!s)
        return -ENOMEM;
    if (*field != protobuf_c_empty_string)
        free(*field);
    *field = s;
    return 0;
}

/* PortMetadata of the instance port 'p', added to 'st' (whose memory is
 * protobuf-c's unpacked layout: freed with free_unpacked, so every part
 * is malloc'ed). */
static int
add_metadata(struct yun_txn *txn, Yun__HostNetworkState *st, const Yun__PortRecord *p)
{
    Yun__InstanceRecord *i = NULL;
    int r = yun_txn_get_msg(txn, SCHED_DB_INSTANCES, p->device_id,
                            &yun__instance_record__descriptor, (ProtobufCMessage **)&i);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    Yun__PortMetadata **v = realloc(st->metadata, (st->n_metadata + 1) * sizeof *v);
    Yun__PortMetadata *m = calloc(1, sizeof *m);
    if (v)
        st->metadata = v;
    if (!v || !m) {
        free(m);
        yun__instance_record__free_unpacked(i, NULL);
        return -ENOMEM;
    }
    yun__port_metadata__init(m);
    st->metadata[st->n_metadata++] = m;
    char host[HOSTNAME_MAX + 1];
    r = port_dns_name(txn, p, host);
    if (r >= 0)
        r = dup_to(&m->port_id, p->id);
    if (r >= 0)
        r = dup_to(&m->instance_id, i->id);
    if (r >= 0)
        r = dup_to(&m->hostname, host);
    if (r >= 0)
        r = dup_to(&m->instance_name, i->name);
    if (r >= 0)
        r = dup_to(&m->project, i->project);
    if (r >= 0)
        r = dup_to(&m->availability_zone, *i->availability_zone ? i->availability_zone : "nova");
    m->launched_us = i->launched_us;
    if (r >= 0 && *i->key_name && *i->key_public) {
        m->public_keys = calloc(1, sizeof *m->public_keys);
        Yun__KeyMaterial *k = calloc(1, sizeof *k);
        if (!m->public_keys || !k) {
            free(k);
            r = -ENOMEM;
        } else {
            yun__key_material__init(k);
            m->public_keys[0] = k;
            m->n_public_keys = 1;
            r = dup_to(&k->name, i->key_name);
            if (r >= 0)
                r = dup_to(&k->public_key, i->key_public);
        }
    }
    if (r >= 0 && i->user_data.len) {
        m->user_data.data = malloc(i->user_data.len);
        if (!m->user_data.data)
            r = -ENOMEM;
        else {
            memcpy(m->user_data.data, i->user_data.data, i->user_data.len);
            m->user_data.len = i->user_data.len;
        }
    }
    if (r >= 0 && i->n_metadata) {
        m->meta = calloc(i->n_metadata, sizeof *m->meta);
        if (!m->meta)
            r = -ENOMEM;
        for (size_t k = 0; r >= 0 && k < i->n_metadata; k++) {
            Yun__MetadataItem *it = calloc(1, sizeof *it);
            if (!it) {
                r = -ENOMEM;
                break;
            }
            yun__metadata_item__init(it);
            m->meta[m->n_meta++] = it;
            r = dup_to(&it->key, i->metadata[k]->key);
            if (r >= 0)
                r = dup_to(&it->value, i->metadata[k]->value);
        }
    }
    yun__instance_record__free_unpacked(i, NULL);
    return r;
}

static struct sched_netpush *
netpush(struct sched *s)
{
    if (!s->compute)
        return NULL;
    if (!s->compute->netpush) {
        s->compute->netpush = calloc(1, sizeof *s->compute->netpush);
        if (s->compute->netpush)
            s->compute->netpush->generation = yun_wall_us();
    }
    return s->compute->netpush;
}

int
sched_network_host_state(struct sched *s, struct yun_txn *txn, const char *host_id,
                         Yun__HostNetworkState **ret)
{
    _cleanup_(state_freep) Yun__HostNetworkState *st = NULL;
    int r = network_host_state(s, txn, host_id, &st);
    if (r < 0)
        return r;
    for (size_t k = 0; k < st->n_ports; k++) {
        const Yun__PortRecord *p = st->ports[k];
        if (strncmp(p->device_owner, OWNER_COMPUTE, strlen(OWNER_COMPUTE)) != 0 ||
            strcmp(p->host_id, host_id) != 0 || !*p->device_id)
            continue;
        r = add_metadata(txn, st, p);
        if (r < 0)
            return r;
    }
    struct sched_netpush *np = netpush(s);
    st->generation = np ? ++np->generation : yun_wall_us();
    *ret = TAKE_PTR(st);
    return 0;
}

int
sched_instance_spawn_network(struct sched *s, const Yun__InstanceRecord *i,
                             Yun__HostNetworkState **ret_state, Yun__PortRecord ***ret_ports,
                             size_t *ret_n)
{
    *ret_state = NULL;
    *ret_ports = NULL;
    *ret_n = 0;
    if (!i->n_networks)
        return 0;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r < 0)
        return r;
    Yun__PortRecord **ports = NULL;
    size_t n = 0;
    r = ports_of_instance(s, txn, i->id, &ports, &n);
    if (r < 0)
        return r;
    Yun__HostNetworkState *st = NULL;
    r = sched_network_host_state(s, txn, i->host_id, &st);
    if (r < 0) {
        for (size_t k = 0; k < n; k++)
            yun__port_record__free_unpacked(ports[k], NULL);
        free(ports);
        return r;
    }
    *ret_state = st;
    *ret_ports = ports;
    *ret_n = n;
    return 0;
}

/* --- pushes ------------------------------------------------------------------------ */

static struct push_host *
push_host(struct sched_netpush *np, const char *host_id)
{
    for (struct push_host *h = np->hosts; h; h = h->next)
        if (strcmp(h->host_id, host_id) == 0)
            return h;
    struct push_host *h = calloc(1, sizeof *h);
    if (!h || !(h->host_id = strdup(host_id))) {
        free(h);
        return NULL;
    }
    h->next = np->hosts;
    np->hosts = h;
    return h;
}

static void push_send(struct sched *s, struct push_host *h);

static void
push_done(struct sched *s, const struct sched_agent_result *res, void *data)
{
    struct push_host *h = data;
    h->in_flight = false;
    if (res->error == -EOPNOTSUPP || res->error == YUN_E_NOHOST ||
        res->error == YUN_E_UNREACHABLE)
        log_debug("network state not applied host=%s: %s", h->host_id,
                  *res->error_message ? res->error_message : yun_strerror(res->error));
    else if (res->error)
        log_warn("network state refused host=%s error=%s: %s", h->host_id,
                 yun_errname(res->error), res->error_message);
    else if (res->reply) {
        const Yun__AgentNetworkStateReply *y = (const Yun__AgentNetworkStateReply *)res->reply;
        for (size_t k = 0; k < y->n_errors; k++)
            log_warn("network state partly failed host=%s generation=%llu: %s", h->host_id,
                     (unsigned long long)y->generation, y->errors[k]);
        if (!y->n_errors)
            sched_network_ports_wired(s, h->host_id, NULL);
    }
    if (h->again) {
        h->again = false;
        push_send(s, h);
    }
}

static void
push_send(struct sched *s, struct push_host *h)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(state_freep) Yun__HostNetworkState *st = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r >= 0)
        r = sched_network_host_state(s, txn, h->host_id, &st);
    yun_txn_abort(TAKE_PTR(txn));
    if (r < 0) {
        log_warn_errno(r, "cannot build the network state host=%s", h->host_id);
        return;
    }
    h->in_flight = true;
    r = sched_agent_send(s, h->host_id, YUN__OP__OP_AGENT_NETWORK_STATE, &st->base,
                         &yun__agent_network_state_reply__descriptor, NULL, "network",
                         push_done, h, NULL);
    if (r < 0) {
        h->in_flight = false;
        log_warn_errno(r, "cannot send the network state host=%s", h->host_id);
    }
}

void
sched_network_push(struct sched *s, const char *host_id)
{
    if (!host_id || !*host_id)
        return;
    struct sched_netpush *np = netpush(s);
    struct push_host *h = np ? push_host(np, host_id) : NULL;
    if (!h)
        return;
    if (h->in_flight) {
        h->again = true;
        return;
    }
    push_send(s, h);
}

/* --- finding the hosts and ports concerned (network-priv.h's scans) ---------------- */

static bool
keep_project_bound(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    (void)txn;
    const Yun__PortRecord *p = (const Yun__PortRecord *)m;
    return *p->host_id && strcmp(p->project, (const char *)data) == 0;
}

void
sched_network_push_related(struct sched *s, const Yun__InstanceRecord *const *insts, size_t n,
                           bool skip_own)
{
    /* The hosts on their networks (VXLAN peers, DHCP) and those with ports
     * of their projects (group member sets: the ports of a deleted
     * instance are gone, so its groups cannot be asked any more). */
    struct net_hosts h = { 0 };
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    for (size_t k = 0; r >= 0 && k < n; k++) {
        for (size_t j = 0; r >= 0 && j < insts[k]->n_networks; j++)
            r = net_hosts_of_network(txn, insts[k]->networks[j], &h);
        ProtobufCMessage **items = NULL;
        size_t count = 0;
        if (r >= 0)
            r = net_collect(txn, &net_kind_port, keep_project_bound, insts[k]->project,
                            &items, &count);
        for (size_t j = 0; r >= 0 && j < count; j++)
            r = net_hosts_add(&h, ((Yun__PortRecord *)items[j])->host_id);
        net_free_all(items, count);
    }
    /* The instances' own hosts: even with none of their ports left there
     * (unless a spawn carries theirs). */
    for (size_t k = 0; r >= 0 && k < n; k++)
        r = skip_own ? 0 : net_hosts_add(&h, insts[k]->host_id);
    yun_txn_abort(TAKE_PTR(txn));
    if (r < 0)
        log_warn_errno(r, "cannot find the hosts to tell of a network change");
    for (size_t i = 0; i < h.n; i++) {
        bool own = false;
        for (size_t k = 0; skip_own && k < n && !own; k++)
            own = strcmp(insts[k]->host_id, h.ids[i]) == 0;
        if (!own)
            sched_network_push(s, h.ids[i]);
    }
    net_hosts_done(&h);
}

struct wired_filter {
    const char *host_id;
    const char *device_id;   /* NULL: every port bound to the host */
};

static bool
keep_unwired(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    (void)txn;
    const Yun__PortRecord *p = (const Yun__PortRecord *)m;
    const struct wired_filter *f = data;
    return strcmp(p->host_id, f->host_id) == 0 && strcmp(p->status, "ACTIVE") != 0 &&
           (!f->device_id || strcmp(p->device_id, f->device_id) == 0);
}

void
sched_network_ports_wired(struct sched *s, const char *host_id, const char *device_id)
{
    struct wired_filter f = { .host_id = host_id, .device_id = device_id };
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = net_collect(txn, &net_kind_port, keep_unwired, &f, &items, &n);
    uint64_t now = yun_wall_us();
    for (size_t k = 0; r >= 0 && k < n; k++) {
        Yun__PortRecord *p = (Yun__PortRecord *)items[k];
        r = dup_to(&p->status, "ACTIVE");
        p->updated_us = now;
        if (r >= 0)
            r = net_store(txn, &net_kind_port, &p->base);
    }
    if (r >= 0 && n)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        log_warn_errno(r, "cannot mark the ports of host=%s wired", host_id);
    net_free_all(items, n);
}

static bool
keep_bound_to(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    (void)txn;
    return strcmp(((const Yun__PortRecord *)m)->host_id, (const char *)data) == 0;
}

bool
sched_network_host_bound(struct sched *s, const char *host_id)
{
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r >= 0)
        r = net_collect(txn, &net_kind_port, keep_bound_to, (void *)host_id, &items, &n);
    net_free_all(items, n);
    return r >= 0 && n > 0;
}

static void
on_hosts_changed(struct sched *s, const char *const *host_ids, size_t n, void *data)
{
    (void)data;
    for (size_t k = 0; k < n; k++)
        sched_network_push(s, host_ids[k]);
}

void
sched_network_sync_init(struct sched *s)
{
    network_set_changed_hook(s, on_hosts_changed, NULL);
}

void
sched_network_sync_done(struct sched *s)
{
    if (!s->compute || !s->compute->netpush)
        return;
    struct push_host *h = s->compute->netpush->hosts;
    while (h) {
        struct push_host *next = h->next;
        free(h->host_id);
        free(h);
        h = next;
    }
    free(s->compute->netpush);
    s->compute->netpush = NULL;
}
