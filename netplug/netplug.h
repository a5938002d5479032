/* SPDX-License-Identifier: Apache-2.0
 * netplug.h: the agent's network plumbing through libnl-route: links,
 * bridges, VXLAN/VLAN uplinks and taps (the networks issue fills it in).
 * Sole public header of libnetplug. Uses only common/. */
#pragma once

struct netplug;

/* Opens a netlink route socket. Returns 0 and '*ret', or a negative errno. */
int netplug_new(struct netplug **ret);
struct netplug *netplug_free(struct netplug *np);

/* The ifindex of link 'name': > 0, -ENODEV when there is none. */
int netplug_link_index(struct netplug *np, const char *name);
