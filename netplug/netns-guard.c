/* SPDX-License-Identifier: Apache-2.0
 * netns-guard.c: binding guests' addresses to their MACs inside a named
 * namespace (see netns.h): permanent neighbour entries through
 * libnl-route, and an nftables table (libnftables) that lets a service's
 * port be reached only from known (address, MAC) pairs. Both run in a
 * thread that joined the namespace (netplug_netns_run()), so their
 * netlink sockets are the namespace's. The agent's metadata service
 * (agent/metadata.c) uses them in the DHCP namespaces (netns.c). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/neighbour.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <netlink/route/neighbour.h>
#include <nftables/libnftables.h>

#include "cleanup.h"
#include "netns.h"
#include "netplug-priv.h"
#include "util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_sock *, nl_socket_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct rtnl_neigh *, rtnl_neigh_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nft_ctx *, nft_ctx_free);

/* One binding in canonical text form. */
struct canon {
    char ip[INET_ADDRSTRLEN];
    char mac[18];
};

/* "aa:bb:cc:dd:ee:ff", any case, into lower case; unicast only. */
static int
mac_canon(const char *s, char out[18])
{
    if (!s || strlen(s) != 17)
        return -EINVAL;
    for (size_t i = 0; i < 17; i++) {
        if (i % 3 == 2 ? s[i] != ':' : !strchr("0123456789abcdefABCDEF", s[i]))
            return -EINVAL;
        out[i] = (char)tolower((unsigned char)s[i]);
    }
    out[17] = '\0';
    /* The group bit: a multicast source is never a guest. */
    if (strchr("13579bdf", out[1]))
        return -EINVAL;
    return 0;
}

static int
canon_all(const struct netplug_binding *b, size_t n, struct canon **ret)
{
    if (n > NETPLUG_MAX_BINDINGS || (n && !b))
        return -EINVAL;
    _cleanup_free_ struct canon *c = calloc(n ? n : 1, sizeof *c);
    if (!c)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct in_addr a;
        if (!b[i].ip || inet_pton(AF_INET, b[i].ip, &a) != 1 ||
            mac_canon(b[i].mac, c[i].mac) < 0)
            return -EINVAL;
        (void)inet_ntop(AF_INET, &a, c[i].ip, sizeof c[i].ip);
    }
    *ret = TAKE_PTR(c);
    return 0;
}

/* ---- permanent neighbours ---- */

struct pin_job {
    const char *ifname;
    const struct canon *c;
    size_t n;
};

static bool
pin_wanted(const struct pin_job *job, struct rtnl_neigh *ne)
{
    struct nl_addr *dst = rtnl_neigh_get_dst(ne);
    char have[64];
    if (!dst || !nl_addr2str(dst, have, sizeof have))
        return false;
    for (size_t i = 0; i < job->n; i++)
        if (strcmp(job->c[i].ip, have) == 0)
            return true;
    return false;
}

static int
pin_run(void *data)
{
    const struct pin_job *job = data;
    _cleanup_(nl_socket_freep) struct nl_sock *sock = nl_socket_alloc();
    if (!sock)
        return -ENOMEM;
    int r = nl_connect(sock, NETLINK_ROUTE);
    if (r < 0)
        return netplug_errno_from_nl(r);
    _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL;
    r = rtnl_link_get_kernel(sock, 0, job->ifname, &link);
    if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV)
        return -ENODEV;
    if (r < 0)
        return netplug_errno_from_nl(r);
    int ifindex = rtnl_link_get_ifindex(link);

    /* Pins no longer wanted go first; learnt entries are the kernel's. */
    _cleanup_(nl_cache_freep) struct nl_cache *cache = NULL;
    r = rtnl_neigh_alloc_cache(sock, &cache);
    if (r < 0)
        return netplug_errno_from_nl(r);
    for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
        struct rtnl_neigh *ne = (struct rtnl_neigh *)o;
        if (rtnl_neigh_get_ifindex(ne) != ifindex || rtnl_neigh_get_family(ne) != AF_INET ||
            !(rtnl_neigh_get_state(ne) & NUD_PERMANENT) || pin_wanted(job, ne))
            continue;
        r = rtnl_neigh_delete(sock, ne, 0);
        if (r < 0 && r != -NLE_OBJ_NOTFOUND)
            return netplug_errno_from_nl(r);
    }
    for (size_t i = 0; i < job->n; i++) {
        _cleanup_(rtnl_neigh_putp) struct rtnl_neigh *ne = rtnl_neigh_alloc();
        _cleanup_(nl_addr_putp) struct nl_addr *dst = NULL, *ll = NULL;
        if (!ne)
            return -ENOMEM;
        if (nl_addr_parse(job->c[i].ip, AF_INET, &dst) < 0 ||
            nl_addr_parse(job->c[i].mac, AF_LLC, &ll) < 0)
            return -EINVAL;
        rtnl_neigh_set_ifindex(ne, ifindex);
        rtnl_neigh_set_family(ne, AF_INET);
        r = rtnl_neigh_set_dst(ne, dst);
        if (r < 0)
            return netplug_errno_from_nl(r);
        rtnl_neigh_set_lladdr(ne, ll);
        rtnl_neigh_set_state(ne, NUD_PERMANENT);
        r = rtnl_neigh_add(sock, ne, NLM_F_CREATE | NLM_F_REPLACE);
        if (r < 0)
            return netplug_errno_from_nl(r);
    }
    return 0;
}

int
netplug_netns_pin_neighbours(const char *ns, const char *ifname,
                             const struct netplug_binding *b, size_t n)
{
    if (!ifname || !*ifname || strlen(ifname) >= IFNAMSIZ ||
        !yun_name_is_valid(ifname, IFNAMSIZ - 1))
        return -EINVAL;
    _cleanup_free_ struct canon *c = NULL;
    int r = canon_all(b, n, &c);
    if (r < 0)
        return r;
    struct pin_job job = { .ifname = ifname, .c = c, .n = n };
    return netplug_netns_run(ns, pin_run, &job);
}

/* ---- the source filter ---- */

static int
nft_run(void *data)
{
    const char *cmd = data;
    _cleanup_(nft_ctx_freep) struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!nft || nft_ctx_buffer_output(nft) < 0 || nft_ctx_buffer_error(nft) < 0)
        return -ENOMEM;
    return nft_run_cmd_from_buffer(nft, cmd) == 0 ? 0 : -EIO;
}

int
netplug_netns_bind_sources(const char *ns, const char *table, const char *daddr,
                           uint16_t dport, const struct netplug_binding *b, size_t n)
{
    struct in_addr d;
    char dtext[INET_ADDRSTRLEN];
    if (!table || !yun_name_is_valid(table, 32) || strchr(table, '.') ||
        !daddr || inet_pton(AF_INET, daddr, &d) != 1 || dport == 0)
        return -EINVAL;
    (void)inet_ntop(AF_INET, &d, dtext, sizeof dtext);
    _cleanup_free_ struct canon *c = NULL;
    int r = canon_all(b, n, &c);
    if (r < 0)
        return r;
    /* Made anew in one transaction: there is never a moment without it. */
    _cleanup_free_ char *cmd = NULL;
    r = yun_text_appendf(&cmd,
                         "add table inet %s\n"
                         "delete table inet %s\n"
                         "add table inet %s\n"
                         "add set inet %s allowed { type ipv4_addr . ether_addr; }\n"
                         "add chain inet %s input { type filter hook input priority 0; "
                         "policy accept; }\n"
                         "add rule inet %s input ip daddr %s tcp dport %u "
                         "ip saddr . ether saddr @allowed accept\n"
                         "add rule inet %s input ip daddr %s tcp dport %u "
                         "reject with tcp reset\n",
                         table, table, table, table, table, table, dtext, (unsigned)dport, table,
                         dtext, (unsigned)dport);
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = yun_text_appendf(&cmd, "add element inet %s allowed { %s . %s }\n", table, c[i].ip,
                             c[i].mac);
    if (r < 0)
        return r;
    return netplug_netns_run(ns, nft_run, cmd);
}
