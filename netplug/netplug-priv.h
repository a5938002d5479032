/* SPDX-License-Identifier: Apache-2.0
 * netplug-priv.h: what link.c shares with bridge.c, uplink.c and tap.c.
 * Not installed, not for callers of libnetplug. */
#pragma once

#include <stdbool.h>

#include <netlink/addr.h>
#include <netlink/route/link.h>
#include <netlink/socket.h>

#include "cleanup.h"
#include "netplug.h"

struct netplug {
    struct nl_sock *sock;
    bool has_ipv6; /* the kernel has IPv6: turn its address generation off */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct rtnl_link *, rtnl_link_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_addr *, nl_addr_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_cache *, nl_cache_free);

/* The single map from libnl's -NLE_* codes to negative errno values. */
int netplug_errno_from_nl(int nle);

/* True when 'name' can be a link name: 1..15 bytes, no '/', ':' or space. */
bool netplug_name_is_valid(const char *name);

/* Fetches link 'name': 0 and '*ret' (unref with rtnl_link_put), -ENODEV. */
int netplug_link_get(struct netplug *np, const char *name, struct rtnl_link **ret);

/* What netplug_link_fix() makes true of a link; 0/NULL fields are left. */
struct netplug_link_want {
    unsigned mtu;
    int master;                 /* ifindex of the bridge, 0 to leave */
    const struct nl_addr *addr; /* MAC */
    bool fresh;                 /* just made: also turn IPv6 address generation off */
};

/* Sends one change to link 'cur' for whatever of 'w' differs, and brings
 * it up; sends nothing when all is right already. The kernel refuses IPv6
 * attributes in the message that makes a link, so links are made down and
 * brought up by this, with 'w->fresh', before they could get an address. */
int netplug_link_fix(struct netplug *np, struct rtnl_link *cur, const struct netplug_link_want *w);

/* netplug_link_fix() of the link just made as 'name', with 'w->fresh'. */
int netplug_link_fix_new(struct netplug *np, const char *name, struct netplug_link_want *w);

/* Fills the common fields of a link about to be added (down): name, MTU
 * and master. */
void netplug_link_prepare(struct netplug *np, struct rtnl_link *link, const char *name,
                          unsigned mtu, int master);

/* The ifindex of 'bridge', which must be a bridge: > 0, -ENODEV, -EINVAL. */
int netplug_bridge_index(struct netplug *np, const char *bridge);
