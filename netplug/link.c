/* SPDX-License-Identifier: Apache-2.0
 * link.c: the netlink route socket and link look-ups (see netplug.h). */
#include <errno.h>
#include <stdlib.h>

#include <netlink/errno.h>
#include <netlink/route/link.h>
#include <netlink/socket.h>

#include "netplug.h"

struct netplug {
    struct nl_sock *sock;
};

/* libnl returns -NLE_* codes, which are not errno values: one place maps
 * them (STYLE.md section 3). */
static int
errno_from_nl(int nle)
{
    switch (-nle) {
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
        return -EPERM;
    case NLE_INVAL:
        return -EINVAL;
    case NLE_BUSY:
        return -EBUSY;
    case NLE_AGAIN:
        return -EAGAIN;
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
        return errno_from_nl(r);
    }
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

int
netplug_link_index(struct netplug *np, const char *name)
{
    struct rtnl_link *link = NULL;
    int r = rtnl_link_get_kernel(np->sock, 0, name, &link);
    if (r < 0)
        return errno_from_nl(r);
    int index = rtnl_link_get_ifindex(link);
    rtnl_link_put(link);
    return index;
}
