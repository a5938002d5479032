/* SPDX-License-Identifier: Apache-2.0
 * addr.c: keeps the IPv4 addresses of one link equal to a list (addr.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/socket.h>

#include "addr.h"
#include "netplug-priv.h"

#define MAX_ADDRS 64

struct want {
    struct in_addr ip;
    unsigned prefix;
    bool present;
};

/* "a.b.c.d/n" with n in 0..32, nothing else. */
static int
parse_cidr(const char *s, struct want *ret)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || (size_t)(slash - s) >= INET_ADDRSTRLEN)
        return -EINVAL;
    char ip[INET_ADDRSTRLEN];
    memcpy(ip, s, (size_t)(slash - s));
    ip[slash - s] = '\0';
    if (inet_pton(AF_INET, ip, &ret->ip) != 1)
        return -EINVAL;
    const char *p = slash + 1;
    if (!*p || strlen(p) > 2)
        return -EINVAL;
    unsigned n = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        n = n * 10 + (unsigned)(*p - '0');
    }
    if (n > 32)
        return -EINVAL;
    ret->prefix = n;
    ret->present = false;
    return 0;
}

static int
addr_new(int ifindex, const struct want *w, struct rtnl_addr **ret)
{
    struct rtnl_addr *a = rtnl_addr_alloc();
    if (!a)
        return -ENOMEM;
    struct nl_addr *local = nl_addr_build(AF_INET, &w->ip, sizeof w->ip);
    if (!local) {
        rtnl_addr_put(a);
        return -ENOMEM;
    }
    nl_addr_set_prefixlen(local, (int)w->prefix);
    rtnl_addr_set_ifindex(a, ifindex);
    rtnl_addr_set_family(a, AF_INET);
    int r = rtnl_addr_set_local(a, local);
    nl_addr_put(local);
    if (r < 0) {
        rtnl_addr_put(a);
        return netplug_errno_from_nl(r);
    }
    *ret = a;
    return 0;
}

int
netplug_addr_sync(const char *name, const char *const *cidrs, size_t n)
{
    if (!name || n > MAX_ADDRS)
        return -EINVAL;
    struct want want[MAX_ADDRS];
    for (size_t i = 0; i < n; i++)
        if (parse_cidr(cidrs[i], &want[i]) < 0)
            return -EINVAL;

    struct nl_sock *sock = nl_socket_alloc();
    if (!sock)
        return -ENOMEM;
    struct nl_cache *cache = NULL;
    int r = nl_connect(sock, NETLINK_ROUTE);
    if (r < 0) {
        r = netplug_errno_from_nl(r);
        goto out;
    }
    struct rtnl_link *link = NULL;
    r = rtnl_link_get_kernel(sock, 0, name, &link);
    if (r < 0) {
        r = netplug_errno_from_nl(r);
        goto out;
    }
    int ifindex = rtnl_link_get_ifindex(link);
    rtnl_link_put(link);

    r = rtnl_addr_alloc_cache(sock, &cache);
    if (r < 0) {
        r = netplug_errno_from_nl(r);
        goto out;
    }
    /* Delete what is not wanted; mark what is already there. */
    for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
        struct rtnl_addr *a = (struct rtnl_addr *)o;
        if (rtnl_addr_get_ifindex(a) != ifindex || rtnl_addr_get_family(a) != AF_INET)
            continue;
        struct nl_addr *local = rtnl_addr_get_local(a);
        if (!local || nl_addr_get_len(local) != sizeof(struct in_addr))
            continue;
        bool keep = false;
        for (size_t i = 0; i < n && !keep; i++)
            if (memcmp(nl_addr_get_binary_addr(local), &want[i].ip, sizeof want[i].ip) == 0 &&
                (unsigned)rtnl_addr_get_prefixlen(a) == want[i].prefix) {
                keep = true;
                want[i].present = true;
            }
        if (!keep) {
            int d = rtnl_addr_delete(sock, a, 0);
            if (d < 0 && -d != NLE_NOADDR && -d != NLE_OBJ_NOTFOUND) {
                r = netplug_errno_from_nl(d);
                goto out;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (want[i].present)
            continue;
        struct rtnl_addr *a = NULL;
        r = addr_new(ifindex, &want[i], &a);
        if (r < 0)
            goto out;
        int k = rtnl_addr_add(sock, a, NLM_F_REPLACE);
        rtnl_addr_put(a);
        if (k < 0) {
            r = netplug_errno_from_nl(k);
            goto out;
        }
    }
    r = 0;
out:
    if (cache)
        nl_cache_free(cache);
    nl_socket_free(sock);
    return r;
}
