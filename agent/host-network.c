/* SPDX-License-Identifier: Apache-2.0
 * host-network.c: makes this host match the network state the scheduler sends
 * (host-network.h). Every step is idempotent, so applying the same state twice
 * changes nothing, and the order is: bridges and uplinks, the remote-group
 * address sets, the ports (tap, firewall), the router addresses, DHCP and
 * metadata, and last the removal of whatever yun made that the state no
 * longer names. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "agent.h"
#include "cleanup.h"
#include "dhcp.h"
#include "err.h"
#include "firewall.h"
#include "log.h"
#include "loop.h"
#include "metadata.h"
#include "netplug.h"
#include "host-network.h"
#include "host-ports.h"
#include "store.h"
#include "util.h"

YUN_LOG_MODULE("agent.network");

#define STATE_KEY "state"
#define LINKS_KEY "links"
#define OWNER_ROUTER "network:router_interface"
#define MAX_ERRORS 32
#define MAX_GATEWAYS 16

struct applied_port {
    char tap[16];
    char *fingerprint;   /* what the firewall was given, as text */
};

struct agent_network {
    struct agent *a;
    struct netplug *np;
    struct netplug_fw *fw;
    struct dhcp_set *dhcp;
    struct metadata *md;
    uint64_t generation;
    bool applied;               /* a state was applied in this run */
    struct applied_port *ports;
    size_t n_ports;
    char **groups;              /* group sets made */
    size_t n_groups;
    char (*owned)[16];          /* the links of the last applied state */
    size_t n_owned;
    int resync_timer;           /* re-applies the stored state; -1: none */
};

struct apply {
    struct agent_network *n;
    const Yun__HostNetworkState *st;
    char **errors;
    size_t n_errors;
    size_t wired;
    /* The names of every link the state wants. */
    char (*links)[16];
    size_t n_links;
};

void
agent_network_tap_name(const char *port_id, char out[16])
{
    if (netplug_ifname(out, "ytap", port_id) < 0)
        out[0] = '\0';
}

static void __attribute__((format(printf, 3, 4)))
fail(struct apply *ap, int r, const char *fmt, ...)
{
    char msg[512];
    va_list va;
    va_start(va, fmt);
    vsnprintf(msg, sizeof msg, fmt, va);
    va_end(va);
    log_warn_errno(r, "network state part failed: %s", msg);
    if (ap->n_errors == MAX_ERRORS)
        return;
    char *s = NULL;
    if (asprintf(&s, "%s: %s", msg, yun_strerror(r)) < 0)
        return;
    ap->errors[ap->n_errors++] = s;
}

static void
want_link(struct apply *ap, const char *name)
{
    snprintf(ap->links[ap->n_links++], 16, "%s", name);
}

static bool
link_wanted(const struct apply *ap, const char *name)
{
    for (size_t i = 0; i < ap->n_links; i++)
        if (strcmp(ap->links[i], name) == 0)
            return true;
    return false;
}

static const Yun__NetworkRecord *
find_network(const Yun__HostNetworkState *st, const char *id)
{
    for (size_t i = 0; i < st->n_networks; i++)
        if (strcmp(st->networks[i]->id, id) == 0)
            return st->networks[i];
    return NULL;
}

static const Yun__SubnetRecord *
find_subnet(const Yun__HostNetworkState *st, const char *id)
{
    for (size_t i = 0; i < st->n_subnets; i++)
        if (strcmp(st->subnets[i]->id, id) == 0)
            return st->subnets[i];
    return NULL;
}

static const Yun__SecurityGroupRecord *
find_group(const Yun__HostNetworkState *st, const char *id)
{
    for (size_t i = 0; i < st->n_security_groups; i++)
        if (strcmp(st->security_groups[i]->id, id) == 0)
            return st->security_groups[i];
    return NULL;
}

static unsigned
network_mtu(const Yun__NetworkRecord *net)
{
    if (net->mtu >= 576 && net->mtu <= 9000)
        return net->mtu;
    return strcmp(net->network_type, "vxlan") == 0 ? 1450 : 1500;
}

/* The interface 'physnet' maps to in network.physical_interface_mappings
 * ("physnet1:eth1,physnet2:eth2"), into 'out'. */
static int
physical_interface(const struct agent_network *n, const char *physnet, char out[16])
{
    const char *m = n->a->cfg.network_physical_mappings;
    size_t plen = strlen(physnet);
    while (m && *m) {
        const char *end = strchr(m, ',');
        size_t len = end ? (size_t)(end - m) : strlen(m);
        const char *colon = memchr(m, ':', len);
        if (colon && (size_t)(colon - m) == plen && strncmp(m, physnet, plen) == 0) {
            size_t ilen = len - plen - 1;
            if (ilen == 0 || ilen > 15)
                return -EINVAL;
            memcpy(out, colon + 1, ilen);
            out[ilen] = '\0';
            return 0;
        }
        m = end ? end + 1 : NULL;
    }
    return -ENOENT;
}

static void
apply_network(struct apply *ap, const Yun__NetworkRecord *net)
{
    struct agent_network *n = ap->n;
    char br[16], up[16];
    if (netplug_ifname(br, "ybr-", net->id) < 0)
        return fail(ap, -EINVAL, "network %s: bad id", net->id);
    unsigned mtu = network_mtu(net);
    int r = netplug_bridge_ensure(n->np, br, mtu);
    if (r < 0)
        return fail(ap, r, "network %s: bridge %s", net->id, br);
    want_link(ap, br);

    if (strcmp(net->network_type, "vxlan") == 0 && !*n->a->cfg.network_tunnel_ip) {
        /* No underlay address: the network stays within this host (the
         * scheduler lists this host as no one's VXLAN peer either). */
    } else if (strcmp(net->network_type, "vxlan") == 0) {
        (void)netplug_ifname(up, "yvx-", net->id); /* as valid as br's */
        const char *dev = *n->a->cfg.network_tunnel_dev ? n->a->cfg.network_tunnel_dev : NULL;
        r = netplug_vxlan_ensure(n->np, up, net->segmentation_id, n->a->cfg.network_tunnel_ip, dev,
                                 (uint16_t)n->a->cfg.network_vxlan_port, br, mtu);
        if (r < 0)
            return fail(ap, r, "network %s: vxlan %s vni %u", net->id, up,
                        net->segmentation_id);
        want_link(ap, up);
        const char *const *remotes = NULL;
        size_t n_remotes = 0;
        for (size_t i = 0; i < ap->st->n_vteps; i++)
            if (strcmp(ap->st->vteps[i]->network_id, net->id) == 0) {
                remotes = (const char *const *)ap->st->vteps[i]->remote_ips;
                n_remotes = ap->st->vteps[i]->n_remote_ips;
            }
        r = netplug_vxlan_set_remotes(n->np, up, remotes, n_remotes);
        if (r < 0)
            return fail(ap, r, "network %s: vxlan %s remotes", net->id, up);
    } else if (strcmp(net->network_type, "vlan") == 0 ||
               strcmp(net->network_type, "flat") == 0) {
        char phys[16];
        r = physical_interface(n, net->physical_network, phys);
        if (r < 0)
            return fail(ap, r, "network %s: physical network '%s' is not in "
                        "network.physical_interface_mappings", net->id, net->physical_network);
        if (strcmp(net->network_type, "vlan") == 0) {
            if (net->segmentation_id < 1 || net->segmentation_id > 4094)
                return fail(ap, -EINVAL, "network %s: VLAN id %u", net->id,
                            net->segmentation_id);
            (void)netplug_ifname(up, "yvl-", net->id); /* as valid as br's */
            r = netplug_vlan_ensure(n->np, up, phys, (uint16_t)net->segmentation_id, br);
            if (r < 0)
                return fail(ap, r, "network %s: vlan %s on %s", net->id, up, phys);
            want_link(ap, up);
        } else {
            r = netplug_attach(n->np, phys, br);
            if (r < 0)
                return fail(ap, r, "network %s: %s into %s", net->id, phys, br);
        }
    } else {
        fail(ap, -EINVAL, "network %s: unknown type '%s'", net->id, net->network_type);
    }
}

static int
protocol_number(const char *p)
{
    if (!*p || strcmp(p, "any") == 0)
        return -1;
    if (strcmp(p, "tcp") == 0)
        return 6;
    if (strcmp(p, "udp") == 0)
        return 17;
    if (strcmp(p, "icmp") == 0)
        return 1;
    char *end;
    long v = strtol(p, &end, 10);
    if (*end || v < 0 || v > 255)
        return -2;
    return (int)v;
}

static struct applied_port *
applied_find(struct agent_network *n, const char *tap)
{
    for (size_t i = 0; i < n->n_ports; i++)
        if (strcmp(n->ports[i].tap, tap) == 0)
            return &n->ports[i];
    return NULL;
}

static void
applied_forget(struct agent_network *n, const char *tap)
{
    struct applied_port *p = applied_find(n, tap);
    if (!p)
        return;
    free(p->fingerprint);
    *p = n->ports[--n->n_ports];
}

static int
applied_set(struct agent_network *n, const char *tap, char *fingerprint)
{
    struct applied_port *p = applied_find(n, tap);
    if (!p) {
        struct applied_port *v = realloc(n->ports, (n->n_ports + 1) * sizeof *v);
        if (!v) {
            free(fingerprint);
            return -ENOMEM;
        }
        n->ports = v;
        p = &n->ports[n->n_ports++];
        snprintf(p->tap, sizeof p->tap, "%s", tap);
        p->fingerprint = NULL;
    }
    free(p->fingerprint);
    p->fingerprint = fingerprint;
    return 0;
}

static void
apply_port_firewall(struct apply *ap, const Yun__PortRecord *p, const char *tap)
{
    struct agent_network *n = ap->n;
    size_t n_ips = p->n_fixed_ips, n_rules = 0;
    _cleanup_free_ const char **ips = calloc(n_ips + 1, sizeof *ips);
    size_t cap = 0;
    for (size_t g = 0; g < p->n_security_groups; g++) {
        const Yun__SecurityGroupRecord *sg = find_group(ap->st, p->security_groups[g]);
        if (sg)
            cap += sg->n_rules;
    }
    _cleanup_free_ struct netplug_fw_rule *rules = calloc(cap + 1, sizeof *rules);
    if (!ips || !rules)
        return fail(ap, -ENOMEM, "port %s: firewall", p->id);
    /* The fingerprint: what the firewall is given, as text, so that an
     * unchanged port is not touched again. */
    _cleanup_free_ char *fp = NULL;
    size_t fp_size = 0;
    FILE *f = open_memstream(&fp, &fp_size);
    if (!f)
        return fail(ap, -ENOMEM, "port %s: firewall", p->id);
    fprintf(f, "%s|%d|", p->mac_address, p->port_security_enabled);
    for (size_t i = 0; i < n_ips; i++) {
        ips[i] = p->fixed_ips[i]->ip_address;
        fprintf(f, "%s,", ips[i]);
    }
    for (size_t g = 0; g < p->n_security_groups; g++) {
        const Yun__SecurityGroupRecord *sg = find_group(ap->st, p->security_groups[g]);
        if (!sg) {
            fail(ap, -ENOENT, "port %s: security group %s is not in the state", p->id,
                 p->security_groups[g]);
            continue;
        }
        for (size_t k = 0; k < sg->n_rules; k++) {
            const Yun__SecurityGroupRule *x = sg->rules[k];
            if (*x->ethertype && strcmp(x->ethertype, "IPv4") != 0)
                continue;
            int proto = protocol_number(x->protocol);
            if (proto == -2) {
                fail(ap, -EINVAL, "rule %s: protocol '%s'", x->id, x->protocol);
                continue;
            }
            struct netplug_fw_rule *w = &rules[n_rules++];
            w->ingress = strcmp(x->direction, "ingress") == 0;
            w->protocol = proto;
            w->has_range = x->has_port_range;
            w->min = x->port_range_min;
            if (proto == 1) /* icmp: max is the code; above 255: any code */
                w->max = x->has_icmp_code ? x->port_range_max : 256;
            else
                w->max = x->port_range_max ? x->port_range_max : x->port_range_min;
            w->remote_cidr = *x->remote_ip_prefix ? x->remote_ip_prefix : NULL;
            w->remote_group = *x->remote_group_id ? x->remote_group_id : NULL;
            fprintf(f, "|%d,%d,%d,%u,%u,%s,%s", w->ingress, w->protocol, w->has_range, w->min,
                    w->max, x->remote_ip_prefix, x->remote_group_id);
        }
    }
    if (fclose(f) != 0 || !fp)
        return fail(ap, -ENOMEM, "port %s: firewall", p->id);
    /* Unchanged, and still in the tables (apply() read them again). */
    struct applied_port *had = applied_find(n, tap);
    if (had && had->fingerprint && strcmp(had->fingerprint, fp) == 0 &&
        (!p->port_security_enabled || netplug_fw_port_present(n->fw, tap)))
        return;
    struct netplug_fw_port fwp = {
        .tap = tap,
        .mac = p->mac_address,
        .ips = ips,
        .n_ips = n_ips,
        .port_security = p->port_security_enabled,
        .rules = rules,
        .n_rules = n_rules,
    };
    int r = netplug_fw_port_apply(n->fw, &fwp);
    if (r < 0) {
        applied_forget(n, tap);
        return fail(ap, r, "port %s: firewall of %s", p->id, tap);
    }
    (void)applied_set(n, tap, TAKE_PTR(fp));
}

static void
apply_port(struct apply *ap, const Yun__PortRecord *p)
{
    const Yun__NetworkRecord *net = find_network(ap->st, p->network_id);
    if (!net)
        return fail(ap, -ENOENT, "port %s: network %s is not in the state", p->id,
                    p->network_id);
    char br[16], tap[16];
    agent_network_tap_name(p->id, tap);
    if (netplug_ifname(br, "ybr-", net->id) < 0 || !*tap)
        return fail(ap, -EINVAL, "port %s: bad id, or bad network id", p->id);
    int r = netplug_tap_ensure(ap->n->np, tap, br, p->mac_address, network_mtu(net));
    if (r < 0)
        return fail(ap, r, "port %s: tap %s", p->id, tap);
    want_link(ap, tap);
    apply_port_firewall(ap, p, tap);
    ap->wired++;
}

/* The gateway addresses of router ports bound here, on their bridges. */
static void
apply_gateways(struct apply *ap)
{
    const Yun__HostNetworkState *st = ap->st;
    for (size_t i = 0; i < st->n_networks; i++) {
        const Yun__NetworkRecord *net = st->networks[i];
        char cidrs[MAX_GATEWAYS][32];
        const char *ptrs[MAX_GATEWAYS];
        size_t n = 0;
        for (size_t k = 0; k < st->n_ports; k++) {
            const Yun__PortRecord *p = st->ports[k];
            if (strcmp(p->network_id, net->id) != 0 || strcmp(p->device_owner, OWNER_ROUTER) != 0 ||
                strcmp(p->host_id, st->host_id) != 0)
                continue;
            for (size_t f = 0; f < p->n_fixed_ips && n < MAX_GATEWAYS; f++) {
                const Yun__SubnetRecord *sn = find_subnet(st, p->fixed_ips[f]->subnet_id);
                const char *slash = sn ? strchr(sn->cidr, '/') : NULL;
                if (!slash)
                    continue;
                snprintf(cidrs[n], sizeof cidrs[n], "%s%s", p->fixed_ips[f]->ip_address, slash);
                ptrs[n] = cidrs[n];
                n++;
            }
        }
        char br[16];
        if (netplug_ifname(br, "ybr-", net->id) < 0)
            continue; /* apply_network said so already */
        int r = netplug_addr_sync(br, ptrs, n);
        if (r < 0 && !(r == -ENODEV && n == 0))
            fail(ap, r, "network %s: gateway addresses on %s", net->id, br);
    }
}

static bool
group_in_state(const Yun__HostNetworkState *st, const char *id)
{
    for (size_t i = 0; i < st->n_group_members; i++)
        if (strcmp(st->group_members[i]->security_group_id, id) == 0)
            return true;
    return false;
}

static void
apply_groups(struct apply *ap)
{
    struct agent_network *n = ap->n;
    const Yun__HostNetworkState *st = ap->st;
    for (size_t i = 0; i < st->n_group_members; i++) {
        const Yun__GroupMembers *g = st->group_members[i];
        int r = netplug_fw_group_set(n->fw, g->security_group_id,
                                     (const char *const *)g->ip_addresses, g->n_ip_addresses);
        if (r < 0) {
            fail(ap, r, "security group %s: member set", g->security_group_id);
            continue;
        }
        bool known = false;
        for (size_t k = 0; k < n->n_groups && !known; k++)
            known = strcmp(n->groups[k], g->security_group_id) == 0;
        if (!known) {
            char **v = realloc(n->groups, (n->n_groups + 1) * sizeof *v);
            if (!v)
                continue;
            n->groups = v;
            if ((v[n->n_groups] = strdup(g->security_group_id)))
                n->n_groups++;
        }
    }
}

/* After the ports: sets no rule needs any more. */
static void
prune_groups(struct apply *ap)
{
    struct agent_network *n = ap->n;
    for (size_t k = 0; k < n->n_groups;) {
        if (group_in_state(ap->st, n->groups[k])) {
            k++;
            continue;
        }
        int r = netplug_fw_group_remove(n->fw, n->groups[k]);
        if (r < 0 && r != -ENOENT) {
            fail(ap, r, "security group %s: member set removal", n->groups[k]);
            k++;
            continue;
        }
        free(n->groups[k]);
        n->groups[k] = n->groups[--n->n_groups];
    }
}

/* Removes the links (and the firewall of the taps) the last applied state
 * had and this one does not: only what this agent made, so that other
 * agents or clouds on the same machine are left alone. Taps first, then
 * uplinks, then the bridges they hung on. */
static void
prune_links(struct apply *ap)
{
    struct agent_network *n = ap->n;
    static const char *const order[] = { "ytap", "yvx-", "yvl-", "ybr-" };
    for (size_t o = 0; o < ELEMENTSOF(order); o++)
        for (size_t i = 0; i < n->n_owned; i++) {
            const char *name = n->owned[i];
            if (strncmp(name, order[o], 4) != 0 || link_wanted(ap, name))
                continue;
            int r;
            if (o == 0) {
                r = netplug_fw_port_remove(n->fw, name);
                if (r < 0)
                    fail(ap, r, "firewall of %s: removal", name);
                applied_forget(n, name);
            }
            r = netplug_link_remove(n->np, name);
            if (r < 0)
                fail(ap, r, "link %s: removal", name);
            else
                log_info("network link removed link=%s", name);
        }
}

/* The set of links this agent owns is kept in its store ("links": the
 * names, 16 bytes each), written ahead of making any: an agent killed
 * half-way through a state finds at start everything it may have made. */
static int
links_save(struct agent_network *n)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(n->a->store, true, &txn);
    if (r >= 0)
        r = yun_txn_put(txn, AGENT_DB_NETWORK, LINKS_KEY, strlen(LINKS_KEY),
                        n->n_owned ? (const void *)n->owned : "", n->n_owned * 16);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    return r;
}

static int
links_load(struct agent_network *n)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(n->a->store, false, &txn);
    const void *v;
    size_t size;
    if (r >= 0)
        r = yun_txn_get(txn, AGENT_DB_NETWORK, LINKS_KEY, strlen(LINKS_KEY), &v, &size);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (size % 16)
        return -EBADMSG;
    n->owned = malloc(size ? size : 1);
    if (!n->owned)
        return -ENOMEM;
    memcpy(n->owned, v, size);
    n->n_owned = size / 16;
    for (size_t i = 0; i < n->n_owned; i++)
        n->owned[i][15] = '\0';
    return 0;
}

static bool
owned(const struct agent_network *n, const char *name)
{
    for (size_t i = 0; i < n->n_owned; i++)
        if (strcmp(n->owned[i], name) == 0)
            return true;
    return false;
}

static int
own(struct agent_network *n, const char *name, bool *changed)
{
    if (!*name || owned(n, name))
        return 0;
    char (*v)[16] = realloc(n->owned, (n->n_owned + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    n->owned = v;
    snprintf(v[n->n_owned++], 16, "%s", name);
    *changed = true;
    return 0;
}

/* Before anything is made: the links 'st' will want join the owned set,
 * durably. */
static int
own_ahead(struct agent_network *n, const Yun__HostNetworkState *st)
{
    bool changed = false;
    int r = 0;
    char name[16];
    for (size_t i = 0; r >= 0 && i < st->n_networks; i++) {
        const Yun__NetworkRecord *net = st->networks[i];
        if (netplug_ifname(name, "ybr-", net->id) >= 0)
            r = own(n, name, &changed);
        /* A VXLAN network without an underlay address gets no link
         * (apply_network); owning one would "remove" it at every apply. */
        const char *up = strcmp(net->network_type, "vxlan") == 0
                             ? (*n->a->cfg.network_tunnel_ip ? "yvx-" : NULL)
                         : strcmp(net->network_type, "vlan") == 0 ? "yvl-" : NULL;
        if (r >= 0 && up && netplug_ifname(name, up, net->id) >= 0)
            r = own(n, name, &changed);
    }
    for (size_t i = 0; r >= 0 && i < st->n_ports; i++) {
        const Yun__PortRecord *p = st->ports[i];
        if (!host_ports_is_instance(p, st->host_id, NULL))
            continue;
        agent_network_tap_name(p->id, name);
        r = own(n, name, &changed);
    }
    if (r >= 0 && changed)
        r = links_save(n);
    return r;
}

/* What this state made is what the next one may remove. */
static void
own_links(struct apply *ap)
{
    struct agent_network *n = ap->n;
    free(n->owned);
    n->owned = TAKE_PTR(ap->links);
    n->n_owned = ap->n_links;
    int r = links_save(n);
    if (r < 0)
        fail(ap, r, "saving the links made");
}

static int
state_save(struct agent_network *n, const Yun__HostNetworkState *st)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(n->a->store, true, &txn);
    if (r >= 0)
        r = yun_txn_put_msg(txn, AGENT_DB_NETWORK, STATE_KEY, &st->base);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    return r;
}

static int
apply(struct agent_network *n, const Yun__HostNetworkState *st, bool save,
      Yun__AgentNetworkStateReply *ret)
{
    if (n->applied && st->generation < n->generation) {
        log_info("network state ignored: generation %llu is older than %llu",
                 (unsigned long long)st->generation, (unsigned long long)n->generation);
        if (ret)
            ret->generation = n->generation;
        return 0;
    }
    struct apply ap = { .n = n, .st = st };
    size_t max_links = 2 * st->n_networks + st->n_ports + 1;
    char (*links)[16] = calloc(max_links, sizeof *links);
    _cleanup_free_ char **errors = calloc(MAX_ERRORS, sizeof *errors);
    if (!links || !errors) {
        free(links);
        return -ENOMEM;
    }
    ap.links = links;
    ap.errors = errors;

    int r = own_ahead(n, st);
    if (r < 0) {
        free(links);
        return log_warn_errno(r, "cannot record the links a network state makes");
    }
    /* What the tables hold now: rules removed behind our back (say by
     * 'nft flush ruleset') are made again below, for unchanged ports too. */
    r = netplug_fw_refresh(n->fw);
    if (r < 0)
        fail(&ap, r, "firewall tables");
    for (size_t i = 0; i < st->n_networks; i++)
        apply_network(&ap, st->networks[i]);
    apply_groups(&ap);
    for (size_t i = 0; i < st->n_ports; i++) {
        const Yun__PortRecord *p = st->ports[i];
        if (host_ports_is_instance(p, st->host_id, NULL))
            apply_port(&ap, p);
    }
    apply_gateways(&ap);
    r = dhcp_apply(n->dhcp, st, st->host_id);
    if (r < 0)
        fail(&ap, r, "DHCP");
    r = metadata_apply(n->md, st, st->host_id);
    if (r < 0)
        fail(&ap, r, "metadata service");
    prune_links(&ap);
    prune_groups(&ap);
    own_links(&ap);

    n->generation = st->generation;
    n->applied = true;
    if (save) {
        r = state_save(n, st);
        if (r < 0)
            fail(&ap, r, "saving the state");
    }
    log_info("network state applied generation=%llu networks=%zu ports=%zu errors=%zu",
             (unsigned long long)st->generation, st->n_networks, ap.wired, ap.n_errors);
    if (ret) {
        ret->generation = st->generation;
        ret->ports = (uint32_t)ap.wired;
        ret->errors = TAKE_PTR(errors);
        ret->n_errors = ap.n_errors;
    } else {
        for (size_t i = 0; i < ap.n_errors; i++)
            free(errors[i]);
    }
    return ap.n_errors ? YUN_E_NETWORK : 0;
}

int
agent_network_apply(struct agent_network *n, const Yun__HostNetworkState *st,
                    Yun__AgentNetworkStateReply *ret)
{
    if (!n)
        return -EOPNOTSUPP;
    if (!st->host_id || (*n->a->host_id && strcmp(st->host_id, n->a->host_id) != 0))
        return -EINVAL;
    return apply(n, st, true, ret);
}

uint64_t
agent_network_generation(const struct agent_network *n)
{
    return n && n->applied ? n->generation : 0;
}

void
agent_network_reply_done(Yun__AgentNetworkStateReply *y)
{
    for (size_t i = 0; i < y->n_errors; i++)
        free(y->errors[i]);
    free(y->errors);
    y->errors = NULL;
    y->n_errors = 0;
}

int
agent_network_ports_ready(struct agent_network *n, Yun__PortRecord *const *ports, size_t count,
                          char *msg, size_t size)
{
    if (!n) {
        snprintf(msg, size, "This host does not wire networks (network.enabled is false).");
        return -EOPNOTSUPP;
    }
    for (size_t i = 0; i < count; i++) {
        char tap[16];
        agent_network_tap_name(ports[i]->id, tap);
        int r = *tap ? netplug_link_index(n->np, tap) : -EINVAL;
        if (r < 0) {
            snprintf(msg, size, "The tap of port '%s' could not be made (%s); see the agent's "
                     "log.", ports[i]->id, yun_strerror(r));
            return YUN_E_NETWORK;
        }
    }
    return 0;
}

/* The last state applied, again: at start (links, rules and dnsmasq may
 * have gone, or been left, while the agent was away) and every
 * [network] resync_interval_s (anything removed behind our back). */
static int
reapply_stored(struct agent_network *n, bool at_start)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(n->a->store, false, &txn);
    if (r < 0)
        return r;
    ProtobufCMessage *m = NULL;
    r = yun_txn_get_msg(txn, AGENT_DB_NETWORK, STATE_KEY, &yun__host_network_state__descriptor,
                        &m);
    yun_txn_abort(TAKE_PTR(txn));
    if (r == -ENOENT)
        return 0;   /* nothing was ever applied here */
    if (r < 0)
        return r;
    Yun__HostNetworkState *st = (Yun__HostNetworkState *)m;
    r = apply(n, st, false, NULL);
    if (at_start)
        log_notice("network state reapplied at start generation=%llu ports=%zu",
                   (unsigned long long)st->generation, st->n_ports);
    else
        log_debug("network state reapplied generation=%llu ports=%zu",
                  (unsigned long long)st->generation, st->n_ports);
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

static int64_t
on_resync(struct yun_loop *loop, int id, void *data)
{
    (void)loop;
    (void)id;
    struct agent_network *n = data;
    int r = reapply_stored(n, false);
    if (r < 0 && r != YUN_E_NETWORK)
        log_warn_errno(r, "cannot reapply the stored network state");
    return (int64_t)n->a->cfg.network_resync_interval_s * 1000;
}

int
agent_network_start(struct agent *a, struct agent_network **ret)
{
    *ret = NULL;
    if (!a->cfg.network_enabled) {
        log_notice("networking disabled: network states are refused");
        return 0;
    }
    struct agent_network *n = calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    n->a = a;
    n->resync_timer = -1;
    int r = netplug_new(&n->np);
    if (r < 0) {
        log_err_errno(r, "cannot open netlink");
        goto fail;
    }
    r = netplug_fw_new(&n->fw);
    if (r < 0) {
        log_err_errno(r, "cannot set up the firewall tables");
        goto fail;
    }
    r = dhcp_set_new(a->loop, a->cfg.network_run_dir, a->cfg.dnsmasq_path, &n->dhcp);
    if (r < 0) {
        log_err_errno(r, "cannot start the DHCP service");
        goto fail;
    }
    r = metadata_new(a->loop, &n->md);
    if (r < 0) {
        log_err_errno(r, "cannot start the metadata service");
        goto fail;
    }
    r = links_load(n);
    if (r < 0)
        log_warn_errno(r, "cannot read the links this agent made");
    r = reapply_stored(n, true);
    if (r < 0 && r != YUN_E_NETWORK)
        log_warn_errno(r, "cannot reapply the stored network state");
    if (a->cfg.network_resync_interval_s) {
        r = yun_loop_add_timer(a->loop, (int64_t)a->cfg.network_resync_interval_s * 1000,
                               on_resync, n, NULL);
        if (r < 0) {
            log_err_errno(r, "cannot start the network re-sync timer");
            goto fail;
        }
        n->resync_timer = r;
    }
    *ret = n;
    return 0;
fail:
    agent_network_stop(n);
    return r;
}

struct agent_network *
agent_network_stop(struct agent_network *n)
{
    if (!n)
        return NULL;
    /* The data plane stays: guests keep their links, rules and DHCP
     * while the agent is away; the next start takes them over. The
     * metadata listeners are this process's: they go now, and come
     * back with the next start (docs/network-sync.md). */
    if (n->resync_timer >= 0)
        yun_loop_remove_timer(n->a->loop, n->resync_timer);
    metadata_free(n->md);
    dhcp_set_free(n->dhcp);
    netplug_fw_free(n->fw);
    netplug_free(n->np);
    for (size_t i = 0; i < n->n_ports; i++)
        free(n->ports[i].fingerprint);
    free(n->ports);
    for (size_t i = 0; i < n->n_groups; i++)
        free(n->groups[i]);
    free(n->groups);
    free(n->owned);
    free(n);
    return NULL;
}
