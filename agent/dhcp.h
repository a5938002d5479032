/* SPDX-License-Identifier: Apache-2.0
 * dhcp.h: the agent's DHCP servers: one dnsmasq per network that has a
 * DHCP port on this host, in its own network namespace "yun-dhcp-<net>",
 * joined to the network's bridge by a veth that carries the DHCP port's
 * address and 169.254.169.254 (the metadata service, metadata.h, listens
 * in the same namespace). Static leases only: a server answers the ports
 * of this host and stays silent for any other MAC. See
 * docs/dhcp-metadata.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "network.pb-c.h"

struct yun_loop;
struct dhcp_set;

/* The namespace's end of the veth: the DHCP port. */
#define DHCP_NS_IFNAME "dhcp0"

/* Names the bridge of network 'network_id' into 'buf' and returns 'buf'. */
typedef const char *(*dhcp_bridge_name_fn)(const char *network_id, char buf[16]);

/* The namespace of network 'network_id': "yun-dhcp-<network_id>". Returns
 * 'buf' ('size' bytes), or NULL when the id does not make a valid name. */
const char *dhcp_netns_name(const char *network_id, char *buf, size_t size);

/* netplug's bridge name of network 'network_id' (netplug_ifname() with
 * NETPLUG_PREFIX_BRIDGE: "ybr-" + the first 11 characters of the id with
 * '-' removed), or "" for an id netplug refuses. */
const char *dhcp_default_bridge_name(const char *network_id, char buf[16]);

/* True when this host 'host_id' serves DHCP (and so metadata) on network
 * 'net' of 'st': the rule of dhcp_apply(), without rendering anything. */
bool dhcp_network_is_served(const Yun__HostNetworkState *st, const char *host_id,
                            const Yun__NetworkRecord *net);

/* Makes the DHCP server set. Files go under '<state_dir>/dhcp/<net>/',
 * made when a network is first served (0755: dnsmasq re-reads them after
 * dropping privileges, so 'state_dir' must be traversable by its user). 'dnsmasq_path' is the
 * binary. Running dnsmasqs found there (pid files) are adopted or stopped
 * by the first dhcp_apply(). Returns 0 and '*ret', or a negative errno. */
int dhcp_set_new(struct yun_loop *loop, const char *state_dir, const char *dnsmasq_path,
                 struct dhcp_set **ret);

/* Frees the set. Running dnsmasqs are left running for the next agent to
 * adopt (DHCP outlives an agent restart). NULL ok; returns NULL. */
struct dhcp_set *dhcp_set_free(struct dhcp_set *d);

/* Uses 'fn' instead of dhcp_default_bridge_name() from now on. */
void dhcp_set_bridge_name_fn(struct dhcp_set *d, dhcp_bridge_name_fn fn);

/* Reconciles to 'st': serves every network of 'st' that has a port with
 * device_owner "network:dhcp" bound to 'this_host_id' and an IPv4 subnet
 * with enable_dhcp, and stops serving every other (process, veth,
 * namespace and files go). The networks' bridges must exist. Files that
 * changed are rewritten atomically and dnsmasq is sent SIGHUP; a change of
 * its arguments restarts it. A network that fails is logged and retried
 * by the next call; the others are still applied. Returns 0, or the first
 * error met. 'st' is borrowed for the call only. */
int dhcp_apply(struct dhcp_set *d, const Yun__HostNetworkState *st, const char *this_host_id);

/* Stops every dnsmasq and removes every namespace, veth and file of the
 * set (what dhcp_apply() of an empty state does). */
int dhcp_set_stop_all(struct dhcp_set *d);
