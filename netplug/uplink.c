/* SPDX-License-Identifier: Apache-2.0
 * uplink.c: how a network's bridge reaches other hosts: a VXLAN device
 * with its flood list, a VLAN device on a physical parent, or (flat) the
 * physical interface itself enslaved (see netplug.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/neighbour.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/route/link/vlan.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/neighbour.h>

#include "log.h"
#include "netplug-priv.h"

YUN_LOG_MODULE("netplug.uplink");

DEFINE_TRIVIAL_CLEANUP_FUNC(struct rtnl_neigh *, rtnl_neigh_put);

static int
parse_ipv4(const char *s, struct nl_addr **ret)
{
    struct in_addr in;
    if (!s || inet_pton(AF_INET, s, &in) != 1)
        return -EINVAL;
    struct nl_addr *a = nl_addr_build(AF_INET, &in, sizeof in);
    if (!a)
        return -ENOMEM;
    *ret = a;
    return 0;
}

/* Adds 'link' (prepared, not yet in the kernel) after deleting whatever
 * link of that name is there when 'replace'. */
static int
link_add(struct netplug *np, struct rtnl_link *link, bool replace)
{
    struct netplug_link_want w = { 0 };
    const char *name = rtnl_link_get_name(link);
    if (replace) {
        log_debug("link has other settings, making it again link=%s", name);
        int r = netplug_link_remove(np, name);
        if (r < 0)
            return r;
    }
    int r = rtnl_link_add(np->sock, link, NLM_F_CREATE | NLM_F_EXCL);
    if (r < 0)
        return log_debug_errno(netplug_errno_from_nl(r), "cannot create link '%s': %s", name,
                               nl_geterror(r));
    r = netplug_link_fix_new(np, name, &w);
    if (r < 0) {
        (void)netplug_link_remove(np, name);
        return r;
    }
    log_debug("link created link=%s type=%s", name, rtnl_link_get_type(link));
    return 0;
}

static bool
vxlan_matches(struct rtnl_link *cur, uint32_t vni, const struct nl_addr *local, uint16_t port,
              int underlay)
{
    if (!rtnl_link_is_vxlan(cur))
        return false;
    uint32_t id = 0, p = 0, l = 0;
    if (rtnl_link_vxlan_get_id(cur, &id) < 0 || id != vni)
        return false;
    if (rtnl_link_vxlan_get_port(cur, &p) < 0 || p != port)
        return false;
    if (rtnl_link_vxlan_get_link(cur, &l) < 0)
        l = 0;
    if ((int)l != underlay)
        return false;
    _cleanup_(nl_addr_putp) struct nl_addr *a = NULL;
    if (rtnl_link_vxlan_get_local(cur, &a) < 0 || !a)
        return false;
    return nl_addr_cmp(a, local) == 0;
}

int
netplug_vxlan_ensure(struct netplug *np, const char *name, uint32_t vni, const char *local_ip,
                     const char *underlay_dev, uint16_t dstport, const char *bridge, unsigned mtu)
{
    if (vni == 0 || vni > 0xffffff || !netplug_name_is_valid(name))
        return -EINVAL;
    if (dstport == 0)
        dstport = 4789;
    _cleanup_(nl_addr_putp) struct nl_addr *local = NULL;
    int r = parse_ipv4(local_ip, &local);
    if (r < 0)
        return r;
    int underlay = 0;
    if (underlay_dev) {
        underlay = netplug_link_index(np, underlay_dev);
        if (underlay < 0)
            return underlay;
    }
    int master = netplug_bridge_index(np, bridge);
    if (master < 0)
        return master;

    _cleanup_(rtnl_link_putp) struct rtnl_link *cur = NULL;
    r = netplug_link_get(np, name, &cur);
    if (r < 0 && r != -ENODEV)
        return r;
    if (r == 0 && vxlan_matches(cur, vni, local, dstport, underlay))
        return netplug_link_fix(np, cur, &(struct netplug_link_want){ .mtu = mtu, .master = master });

    _cleanup_(rtnl_link_putp) struct rtnl_link *link = rtnl_link_vxlan_alloc();
    if (!link)
        return -ENOMEM;
    netplug_link_prepare(np, link, name, mtu, master);
    if (rtnl_link_vxlan_set_id(link, vni) < 0 || rtnl_link_vxlan_set_local(link, local) < 0 ||
        rtnl_link_vxlan_set_port(link, dstport) < 0 || rtnl_link_vxlan_set_learning(link, 1) < 0)
        return -EINVAL;
    if (underlay && rtnl_link_vxlan_set_link(link, underlay) < 0)
        return -EINVAL;
    return link_add(np, link, cur != NULL);
}

static bool
is_zero_mac(struct nl_addr *a)
{
    static const unsigned char zero[6];
    return a && nl_addr_get_len(a) == 6 && memcmp(nl_addr_get_binary_addr(a), zero, 6) == 0;
}

/* A flood entry of VXLAN device 'ifindex' toward 'dst' (4 bytes). */
static int
flood_entry(int ifindex, const struct in_addr *dst, struct rtnl_neigh **ret)
{
    static const unsigned char zero[6];
    _cleanup_(rtnl_neigh_putp) struct rtnl_neigh *n = rtnl_neigh_alloc();
    _cleanup_(nl_addr_putp) struct nl_addr *ll = nl_addr_build(AF_LLC, zero, sizeof zero);
    _cleanup_(nl_addr_putp) struct nl_addr *ip = nl_addr_build(AF_INET, dst, sizeof *dst);
    if (!n || !ll || !ip)
        return -ENOMEM;
    /* libnl refuses a dst of another family than the entry's: the
     * family becomes AF_BRIDGE after it. */
    if (rtnl_neigh_set_dst(n, ip) < 0)
        return -EINVAL;
    rtnl_neigh_set_family(n, AF_BRIDGE);
    rtnl_neigh_set_ifindex(n, ifindex);
    rtnl_neigh_set_lladdr(n, ll);
    rtnl_neigh_set_flags(n, NTF_SELF);
    rtnl_neigh_set_state(n, NUD_NOARP | NUD_PERMANENT);
    *ret = TAKE_PTR(n);
    return 0;
}

/* A dump of the bridge FDB sorted into the wanted flood entries that are
 * there ('have') and the flood entries of 'ifindex' to delete ('stale'). */
struct flood_dump {
    int ifindex;
    const struct in_addr *want;
    bool *have;
    size_t n;
    struct in_addr *stale; /* owned by the caller once flood_dump() returns */
    size_t n_stale;
    size_t n_alloc;
    int error;
};

static int
on_fdb_entry(struct nl_msg *msg, void *arg)
{
    struct flood_dump *d = arg;
    _cleanup_(rtnl_neigh_putp) struct rtnl_neigh *e = NULL;
    if (rtnl_neigh_parse(nlmsg_hdr(msg), &e) < 0)
        return NL_SKIP;
    struct nl_addr *dst = rtnl_neigh_get_dst(e);
    if (rtnl_neigh_get_ifindex(e) != d->ifindex || !is_zero_mac(rtnl_neigh_get_lladdr(e)) ||
        !dst || nl_addr_get_len(dst) != 4)
        return NL_OK;
    const void *bin = nl_addr_get_binary_addr(dst);
    bool wanted = false;
    for (size_t i = 0; i < d->n; i++)
        if (memcmp(&d->want[i], bin, 4) == 0)
            d->have[i] = wanted = true;
    if (wanted)
        return NL_OK;
    if (d->n_stale == d->n_alloc) {
        size_t alloc = d->n_alloc ? 2 * d->n_alloc : 16;
        struct in_addr *p = reallocarray(d->stale, alloc, sizeof *p);
        if (!p) {
            d->error = -ENOMEM;
            return NL_STOP;
        }
        d->stale = p;
        d->n_alloc = alloc;
    }
    memcpy(&d->stale[d->n_stale++], bin, 4);
    return NL_OK;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_cb *, nl_cb_put);

/* libnl's neighbour cache dumps AF_UNSPEC, which leaves out the bridge
 * FDB: dump AF_BRIDGE by hand and parse each entry with libnl. */
static int
flood_dump(struct netplug *np, struct flood_dump *d)
{
    struct ndmsg ndm = { .ndm_family = AF_BRIDGE };
    int r = nl_send_simple(np->sock, RTM_GETNEIGH, NLM_F_DUMP, &ndm, sizeof ndm);
    if (r < 0)
        return netplug_errno_from_nl(r);
    /* A clone, so that the socket's own callbacks stay as they are. */
    struct nl_cb *sock_cb = nl_socket_get_cb(np->sock);
    _cleanup_(nl_cb_putp) struct nl_cb *cb = nl_cb_clone(sock_cb);
    nl_cb_put(sock_cb);
    if (!cb)
        return -ENOMEM;
    nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, on_fdb_entry, d);
    r = nl_recvmsgs(np->sock, cb);
    if (r < 0)
        return netplug_errno_from_nl(r);
    return d->error;
}

int
netplug_vxlan_set_remotes(struct netplug *np, const char *name, const char *const *remote_ips,
                          size_t n)
{
    if (n > NETPLUG_VXLAN_MAX_REMOTES || (n && !remote_ips))
        return -EINVAL;
    _cleanup_free_ struct in_addr *want = calloc(n ? n : 1, sizeof *want);
    _cleanup_free_ bool *have = calloc(n ? n : 1, sizeof *have);
    if (!want || !have)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!remote_ips[i] || inet_pton(AF_INET, remote_ips[i], &want[i]) != 1)
            return -EINVAL;

    _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL;
    int r = netplug_link_get(np, name, &link);
    if (r < 0)
        return r;
    if (!rtnl_link_is_vxlan(link))
        return -EINVAL;
    int ifindex = rtnl_link_get_ifindex(link);

    struct flood_dump d = { .ifindex = ifindex, .want = want, .have = have, .n = n };
    r = flood_dump(np, &d);
    if (r < 0) {
        free(d.stale);
        return log_debug_errno(r, "cannot list the flood entries of '%s'", name);
    }
    _cleanup_free_ struct in_addr *stale = d.stale;
    for (size_t i = 0; i < d.n_stale; i++) {
        _cleanup_(rtnl_neigh_putp) struct rtnl_neigh *del = NULL;
        r = flood_entry(ifindex, &stale[i], &del);
        if (r < 0)
            return r;
        r = rtnl_neigh_delete(np->sock, del, 0);
        if (r < 0)
            return log_debug_errno(netplug_errno_from_nl(r),
                                   "cannot delete a flood entry of '%s': %s", name,
                                   nl_geterror(r));
    }
    for (size_t i = 0; i < n; i++) {
        if (have[i])
            continue;
        have[i] = true;
        /* The same address twice in the list is one entry. */
        for (size_t j = i + 1; j < n; j++)
            if (want[j].s_addr == want[i].s_addr)
                have[j] = true;
        _cleanup_(rtnl_neigh_putp) struct rtnl_neigh *add = NULL;
        r = flood_entry(ifindex, &want[i], &add);
        if (r < 0)
            return r;
        r = rtnl_neigh_add(np->sock, add, NLM_F_CREATE | NLM_F_APPEND);
        if (r < 0)
            return log_debug_errno(netplug_errno_from_nl(r),
                                   "cannot add flood entry '%s' to '%s': %s", remote_ips[i],
                                   name, nl_geterror(r));
    }
    log_debug("vxlan remotes set link=%s n=%zu", name, n);
    return 0;
}

int
netplug_vlan_ensure(struct netplug *np, const char *name, const char *parent, uint16_t vid,
                    const char *bridge)
{
    if (vid == 0 || vid > 4094 || !netplug_name_is_valid(name))
        return -EINVAL;
    _cleanup_(rtnl_link_putp) struct rtnl_link *par = NULL;
    int r = netplug_link_get(np, parent, &par);
    if (r < 0)
        return r;
    r = netplug_link_fix(np, par, &(struct netplug_link_want){ 0 });
    if (r < 0)
        return r;
    int parent_index = rtnl_link_get_ifindex(par);
    int master = netplug_bridge_index(np, bridge);
    if (master < 0)
        return master;

    _cleanup_(rtnl_link_putp) struct rtnl_link *cur = NULL;
    r = netplug_link_get(np, name, &cur);
    if (r < 0 && r != -ENODEV)
        return r;
    if (r == 0 && rtnl_link_is_vlan(cur) && rtnl_link_vlan_get_id(cur) == vid &&
        rtnl_link_get_link(cur) == parent_index)
        return netplug_link_fix(np, cur, &(struct netplug_link_want){ .master = master });

    _cleanup_(rtnl_link_putp) struct rtnl_link *link = rtnl_link_vlan_alloc();
    if (!link)
        return -ENOMEM;
    netplug_link_prepare(np, link, name, 0, master);
    rtnl_link_set_link(link, parent_index);
    if (rtnl_link_vlan_set_id(link, vid) < 0)
        return -EINVAL;
    return link_add(np, link, cur != NULL);
}

int
netplug_attach(struct netplug *np, const char *link, const char *bridge)
{
    int master = netplug_bridge_index(np, bridge);
    if (master < 0)
        return master;
    _cleanup_(rtnl_link_putp) struct rtnl_link *cur = NULL;
    int r = netplug_link_get(np, link, &cur);
    if (r < 0)
        return r;
    return netplug_link_fix(np, cur, &(struct netplug_link_want){ .master = master });
}
