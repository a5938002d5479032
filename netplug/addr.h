/* SPDX-License-Identifier: Apache-2.0
 * addr.h: the IPv4 addresses of a link in this namespace, through
 * libnl-route (netplug's part for router ports: the subnet gateway that a
 * host carries on a network's bridge so that it can reach the guests). */
#pragma once

#include <stddef.h>

/* Makes the IPv4 addresses of link 'name' exactly 'cidrs' ("a.b.c.d/n"):
 * adds the missing ones, deletes the others. Returns 0, -EINVAL for a
 * malformed CIDR, -ENODEV when the link is missing, or another negative
 * errno. */
int netplug_addr_sync(const char *name, const char *const *cidrs, size_t n);
