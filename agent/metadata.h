/* SPDX-License-Identifier: Apache-2.0
 * metadata.h: the metadata service (http://169.254.169.254/): one HTTP
 * server (libmicrohttpd, driven from the agent's loop) per network that
 * has a DHCP port on this host, listening in that network's DHCP
 * namespace (dhcp.h), which carries 169.254.169.254. A request is
 * answered for the instance port of this host whose fixed IP on that
 * network is the request's source address; anything else is 404. Serves
 * the OpenStack (/openstack/...) and EC2 (/latest/...) layouts. See
 * docs/dhcp-metadata.md. */
#pragma once

#include "network.pb-c.h"

struct yun_loop;
struct metadata;

/* Makes the service (serving nothing yet). 0 and '*ret', or a negative
 * errno. */
int metadata_new(struct yun_loop *loop, struct metadata **ret);

/* Stops every server. NULL ok; returns NULL. */
struct metadata *metadata_free(struct metadata *m);

/* Reconciles to 'st': serves every network of 'st' with a "network:dhcp"
 * port bound to 'this_host_id' whose namespace exists (call dhcp_apply()
 * first), with the instance ports and PortMetadata of 'st' (copied), and
 * stops serving the others. A namespace made anew gets a new listener.
 * Returns 0, or the first error met (the other networks are still
 * applied). 'st' is borrowed for the call only. */
int metadata_apply(struct metadata *m, const Yun__HostNetworkState *st, const char *this_host_id);

/* How many connections one server takes at once, and from one address. */
#define METADATA_MAX_CONNECTIONS 64
#define METADATA_MAX_CONNECTIONS_PER_IP 8
