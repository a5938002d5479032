/* SPDX-License-Identifier: Apache-2.0
 * host-ports.h: which ports of a HostNetworkState are whose: the one
 * reading of "an instance port of this host (on this network)", "this
 * host's DHCP port on a network" and "a port's PortMetadata", shared by
 * host-network.c, dhcp.c and metadata.c so that the taps, the DHCP hosts
 * file and the metadata service always agree on the same ports. */
#pragma once

#include <stdbool.h>

#include "network.pb-c.h"

/* device_owner of instance ports starts with this ("compute:nova"). */
#define HOST_PORTS_OWNER_COMPUTE "compute:"
#define HOST_PORTS_OWNER_DHCP "network:dhcp"

/* True when 'p' is an instance port bound to 'host_id' and, unless
 * 'network_id' is NULL, on network 'network_id'. */
bool host_ports_is_instance(const Yun__PortRecord *p, const char *host_id,
                            const char *network_id);

/* True when 'mac' is a MAC as the scheduler writes them:
 * "aa:bb:cc:dd:ee:ff", lower case. Ports with another are left out of
 * DHCP and of the metadata service. */
bool host_ports_mac_is_valid(const char *mac);

/* The DHCP port of network 'network_id' bound to 'host_id' in 'st' (the
 * first one), or NULL. Borrowed from 'st'. */
const Yun__PortRecord *host_ports_dhcp(const Yun__HostNetworkState *st, const char *host_id,
                                       const char *network_id);

/* The PortMetadata of port 'port_id' in 'st', or NULL. Borrowed from
 * 'st'. */
const Yun__PortMetadata *host_ports_metadata(const Yun__HostNetworkState *st,
                                             const char *port_id);
