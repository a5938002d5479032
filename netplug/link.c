/* SPDX-License-Identifier: Apache-2.0
 * link.c: the netlink route socket, the one libnl error map, link names and
 * the operations every kind of link shares: look-up, fix-up, removal and
 * listing (see netplug.h). bridge.c, uplink.c and tap.c make the links. */
#include <errno.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netlink/errno.h>
#include <netlink/route/link.h>
#include <netlink/route/link/inet6.h>

#include "log.h"
#include "netplug-priv.h"

YUN_LOG_MODULE("netplug.link");

int
netplug_errno_from_nl(int nle)
{
    switch (nle < 0 ? -nle : nle) {
    case NLE_SUCCESS:
        return 0;
    case NLE_NOMEM:
        return -ENOMEM;
    case NLE_EXIST:
        return -EEXIST;
    case NLE_OBJ_NOTFOUND:
    case NLE_NODEV:
        return -ENODEV;
    case NLE_PERM:
    case NLE_NOACCESS:
        return -EPERM;
    case NLE_INVAL:
    case NLE_RANGE:
        return -EINVAL;
    case NLE_BUSY:
        return -EBUSY;
    case NLE_AGAIN:
        return -EAGAIN;
    case NLE_OPNOTSUPP:
        return -EOPNOTSUPP;
    case NLE_AF_NOSUPPORT:
        return -EAFNOSUPPORT;
    case NLE_MSGSIZE:
        return -EMSGSIZE;
    default:
        return -EIO;
    }
}

int
netplug_new(struct netplug **ret)
{
    struct netplug *np = calloc(1, sizeof *np);
    if (!np)
        return -ENOMEM;
    np->sock = nl_socket_alloc();
    if (!np->sock) {
        free(np);
        return -ENOMEM;
    }
    int r = nl_connect(np->sock, NETLINK_ROUTE);
    if (r < 0) {
        netplug_free(np);
        return netplug_errno_from_nl(r);
    }
    np->has_ipv6 = access("/proc/sys/net/ipv6", F_OK) == 0;
    *ret = np;
    return 0;
}

struct netplug *
netplug_free(struct netplug *np)
{
    if (!np)
        return NULL;
    nl_socket_free(np->sock);
    free(np);
    return NULL;
}

bool
netplug_name_is_valid(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len >= IFNAMSIZ || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    return strpbrk(name, "/: \t\n") == NULL;
}

int
netplug_ifname(char out[NETPLUG_IFNAME_SIZE], const char *prefix, const char *id)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    if (plen == 0 || plen > 8 || prefix[0] != 'y' || !id)
        return -EINVAL;
    for (const char *p = prefix; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", *p))
            return -EINVAL;
    char buf[NETPLUG_IFNAME_SIZE];
    memcpy(buf, prefix, plen);
    size_t len = plen;
    for (const char *p = id; *p; p++) {
        if (*p == '-')
            continue;
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", *p))
            return -EINVAL;
        if (len < NETPLUG_IFNAME_SIZE - 1)
            buf[len++] = *p;
    }
    if (len == plen)
        return -EINVAL;
    buf[len] = '\0';
    memcpy(out, buf, len + 1);
    return (int)len;
}

int
netplug_link_get(struct netplug *np, const char *name, struct rtnl_link **ret)
{
    if (!netplug_name_is_valid(name))
        return -EINVAL;
    int r = rtnl_link_get_kernel(np->sock, 0, name, ret);
    return r < 0 ? netplug_errno_from_nl(r) : 0;
}

int
netplug_link_index(struct netplug *np, const char *name)
{
    _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL;
    int r = netplug_link_get(np, name, &link);
    if (r < 0)
        return r;
    return rtnl_link_get_ifindex(link);
}

int
netplug_bridge_index(struct netplug *np, const char *bridge)
{
    _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL;
    int r = netplug_link_get(np, bridge, &link);
    if (r < 0)
        return r;
    const char *type = rtnl_link_get_type(link);
    if (!type || strcmp(type, "bridge") != 0)
        return -EINVAL;
    return rtnl_link_get_ifindex(link);
}

void
netplug_link_prepare(struct netplug *np, struct rtnl_link *link, const char *name, unsigned mtu,
                     int master)
{
    rtnl_link_set_name(link, name);
    if (mtu)
        rtnl_link_set_mtu(link, mtu);
    if (master > 0)
        rtnl_link_set_master(link, master);
}

int
netplug_link_fix(struct netplug *np, struct rtnl_link *cur, const struct netplug_link_want *w)
{
    _cleanup_(rtnl_link_putp) struct rtnl_link *change = rtnl_link_alloc();
    if (!change)
        return -ENOMEM;
    bool differs = false;
    if (w->mtu && rtnl_link_get_mtu(cur) != w->mtu) {
        rtnl_link_set_mtu(change, w->mtu);
        differs = true;
    }
    if (w->master > 0 && rtnl_link_get_master(cur) != w->master) {
        rtnl_link_set_master(change, w->master);
        differs = true;
    }
    if (w->addr && nl_addr_cmp(rtnl_link_get_addr(cur), w->addr) != 0) {
        rtnl_link_set_addr(change, (struct nl_addr *)w->addr);
        differs = true;
    }
    /* A bridge port or a bridge without an address needs no link-local
     * address, nor the router solicitations that come with it. */
    if (w->fresh && np->has_ipv6) {
        (void)rtnl_link_inet6_set_addr_gen_mode(change, IN6_ADDR_GEN_MODE_NONE);
        differs = true;
    }
    if (!(rtnl_link_get_flags(cur) & IFF_UP)) {
        rtnl_link_set_flags(change, IFF_UP);
        differs = true;
    }
    if (!differs)
        return 0;
    int r = rtnl_link_change(np->sock, cur, change, 0);
    if (r < 0)
        return log_debug_errno(netplug_errno_from_nl(r), "cannot fix link '%s': %s",
                               rtnl_link_get_name(cur), nl_geterror(r));
    log_debug("link fixed link=%s", rtnl_link_get_name(cur));
    return 0;
}

int
netplug_link_fix_new(struct netplug *np, const char *name, struct netplug_link_want *w)
{
    unsigned ifindex = if_nametoindex(name);
    if (ifindex == 0)
        return -ENODEV;
    _cleanup_(rtnl_link_putp) struct rtnl_link *orig = rtnl_link_alloc();
    if (!orig)
        return -ENOMEM;
    rtnl_link_set_ifindex(orig, (int)ifindex);
    rtnl_link_set_name(orig, name);
    w->fresh = true;
    return netplug_link_fix(np, orig, w);
}

int
netplug_link_remove(struct netplug *np, const char *name)
{
    if (!netplug_name_is_valid(name))
        return -EINVAL;
    _cleanup_(rtnl_link_putp) struct rtnl_link *link = rtnl_link_alloc();
    if (!link)
        return -ENOMEM;
    rtnl_link_set_name(link, name);
    int r = rtnl_link_delete(np->sock, link);
    if (r < 0) {
        r = netplug_errno_from_nl(r);
        if (r == -ENODEV)
            return 0;
        return log_debug_errno(r, "cannot delete link '%s'", name);
    }
    log_debug("link deleted link=%s", name);
    return 0;
}

char **
netplug_names_free(char **names)
{
    if (!names)
        return NULL;
    for (char **p = names; *p; p++)
        free(*p);
    free(names);
    return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(char **, netplug_names_free);

int
netplug_link_list(struct netplug *np, const char *prefix, char ***ret_names, size_t *ret_n)
{
    _cleanup_(nl_cache_freep) struct nl_cache *cache = NULL;
    int r = rtnl_link_alloc_cache(np->sock, AF_UNSPEC, &cache);
    if (r < 0)
        return netplug_errno_from_nl(r);
    size_t plen = prefix ? strlen(prefix) : 0;
    _cleanup_(netplug_names_freep) char **names = calloc(nl_cache_nitems(cache) + 1,
                                                         sizeof *names);
    if (!names)
        return -ENOMEM;
    size_t n = 0;
    for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
        const char *name = rtnl_link_get_name((struct rtnl_link *)o);
        if (!name || strncmp(name, prefix ? prefix : "", plen) != 0)
            continue;
        names[n] = strdup(name);
        if (!names[n])
            return -ENOMEM;
        n++;
    }
    *ret_names = TAKE_PTR(names);
    *ret_n = n;
    return 0;
}

int
netplug_link_master(struct netplug *np, const char *name, char out[NETPLUG_IFNAME_SIZE])
{
    _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL;
    int r = netplug_link_get(np, name, &link);
    if (r < 0)
        return r;
    int master = rtnl_link_get_master(link);
    if (master <= 0) {
        out[0] = '\0';
        return 0;
    }
    _cleanup_(rtnl_link_putp) struct rtnl_link *m = NULL;
    r = rtnl_link_get_kernel(np->sock, master, NULL, &m);
    if (r < 0)
        return netplug_errno_from_nl(r);
    snprintf(out, NETPLUG_IFNAME_SIZE, "%s", rtnl_link_get_name(m));
    return 0;
}
