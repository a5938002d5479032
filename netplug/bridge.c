/* SPDX-License-Identifier: Apache-2.0
 * bridge.c: the Linux bridge of each network (see netplug.h). libnl-route
 * has no setters for the bridge's own attributes (STP, forward delay), so
 * the RTM_NEWLINK message is built here with libnl's message API. */
#include <errno.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <string.h>

#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/msg.h>

#include "log.h"
#include "netplug-priv.h"

YUN_LOG_MODULE("netplug.bridge");

DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_msg *, nlmsg_free);

/* Sends RTM_NEWLINK for bridge 'name': made (down) when 'ifindex' is 0,
 * else changed and up; STP off, forward delay 0, MTU 'mtu' when not 0. */
static int
send_bridge(struct netplug *np, const char *name, int ifindex, unsigned mtu)
{
    _cleanup_(nlmsg_freep) struct nl_msg *msg =
        nlmsg_alloc_simple(RTM_NEWLINK, ifindex ? 0 : NLM_F_CREATE | NLM_F_EXCL);
    if (!msg)
        return -ENOMEM;
    struct ifinfomsg ifi = {
        .ifi_family = AF_UNSPEC,
        .ifi_index = ifindex,
        .ifi_flags = ifindex ? IFF_UP : 0,
        .ifi_change = ifindex ? IFF_UP : 0,
    };
    if (nlmsg_append(msg, &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0)
        return -ENOMEM;
    if (nla_put_string(msg, IFLA_IFNAME, name) < 0)
        return -ENOMEM;
    if (mtu && nla_put_u32(msg, IFLA_MTU, mtu) < 0)
        return -ENOMEM;
    struct nlattr *info = nla_nest_start(msg, IFLA_LINKINFO);
    if (!info || nla_put_string(msg, IFLA_INFO_KIND, "bridge") < 0)
        return -ENOMEM;
    struct nlattr *data = nla_nest_start(msg, IFLA_INFO_DATA);
    if (!data || nla_put_u32(msg, IFLA_BR_STP_STATE, 0) < 0 ||
        nla_put_u32(msg, IFLA_BR_FORWARD_DELAY, 0) < 0)
        return -ENOMEM;
    nla_nest_end(msg, data);
    nla_nest_end(msg, info);
    /* nl_send_sync() frees the message, whatever it returns. */
    int r = nl_send_sync(np->sock, TAKE_PTR(msg));
    return r < 0 ? netplug_errno_from_nl(r) : 0;
}

int
netplug_bridge_ensure(struct netplug *np, const char *name, unsigned mtu)
{
    _cleanup_(rtnl_link_putp) struct rtnl_link *cur = NULL;
    int r = netplug_link_get(np, name, &cur);
    if (r < 0 && r != -ENODEV)
        return r;
    if (r == 0) {
        const char *type = rtnl_link_get_type(cur);
        if (type && strcmp(type, "bridge") == 0) {
            /* The kernel does nothing for attributes that already hold
             * the value; libnl cannot read STP state to skip this. */
            r = send_bridge(np, name, rtnl_link_get_ifindex(cur), mtu);
            if (r < 0)
                return log_debug_errno(r, "cannot change bridge '%s'", name);
            return 0;
        }
        log_debug("link is not a bridge, making it again link=%s", name);
        r = netplug_link_remove(np, name);
        if (r < 0)
            return r;
    }
    r = send_bridge(np, name, 0, mtu);
    if (r < 0)
        return log_debug_errno(r, "cannot create bridge '%s'", name);
    /* IPv6 settings only once the bridge exists, before it is up. */
    r = netplug_link_fix_new(np, name, &(struct netplug_link_want){ 0 });
    if (r < 0) {
        (void)netplug_link_remove(np, name);
        return log_debug_errno(r, "cannot bring bridge '%s' up", name);
    }
    log_debug("bridge created link=%s", name);
    return 0;
}
