/* SPDX-License-Identifier: Apache-2.0
 * host-network.h: the agent's side of the network service. The scheduler sends
 * the whole desired network state of this host (HostNetworkState, in every
 * spawn and in OP_AGENT_NETWORK_STATE pushes); agent_network_apply makes
 * the host match it: a bridge and an uplink (VXLAN, VLAN or a flat
 * interface) per network, a tap and nftables rules per instance port, the
 * subnet gateway on the bridge for a router port bound here, dnsmasq and
 * the metadata service per network (dhcp.h, metadata.h), and removes every
 * yun link, rule set, namespace and process the state no longer names.
 * The last state applied is kept in the agent's store and applied again at
 * start (reconciliation after a crash or a SIGKILL). docs/networks.md.
 *
 * Neighbours: netplug (links, firewall), dhcp.c, metadata.c; command.c
 * serves the push; vm.c names the instances' taps. */
#pragma once

#include <stdint.h>

#include "compute.pb-c.h"
#include "network.pb-c.h"

struct agent;
struct agent_network;

/* The agent store's database holding the last applied state. */
#define AGENT_DB_NETWORK "network"

/* The tap of port 'port_id' ("ytap" + the id's first hex digits). */
void agent_network_tap_name(const char *port_id, char out[16]);

/* Opens netlink, the firewall, the DHCP and metadata services, and applies
 * the stored state again. With network.enabled false it does nothing and
 * '*ret' is NULL (every apply then fails with -EOPNOTSUPP). */
int agent_network_start(struct agent *a, struct agent_network **ret);
struct agent_network *agent_network_stop(struct agent_network *n);

/* Makes the host match 'st' (a state of another host is refused with
 * -EINVAL; one older than the applied one is ignored). Keeps going past a
 * part that fails: '*ret' (may be NULL; its strings are the caller's to
 * free with agent_network_reply_done) lists what failed. Returns 0 when all
 * of it applied, YUN_E_NETWORK when some part failed, a negative errno
 * when nothing could be done. */
int agent_network_apply(struct agent_network *n, const Yun__HostNetworkState *st,
                        Yun__AgentNetworkStateReply *ret);
void agent_network_reply_done(Yun__AgentNetworkStateReply *y);

/* The generation of the state applied (or reapplied at start); 0 when
 * none, or NULL 'n'. Sent with each registration. */
uint64_t agent_network_generation(const struct agent_network *n);

/* Whether the taps of 'ports' (an instance's, from its spawn) are there.
 * Returns 0, or YUN_E_NETWORK with a sentence in 'msg' naming the first
 * missing one (-EOPNOTSUPP when this host does not wire networks). */
int agent_network_ports_ready(struct agent_network *n, Yun__PortRecord *const *ports, size_t count,
                              char *msg, size_t size);
