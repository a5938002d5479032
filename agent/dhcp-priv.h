/* SPDX-License-Identifier: Apache-2.0
 * dhcp-priv.h: dhcp.c's rendering of one network's dnsmasq configuration,
 * exported for tests/unit/test-dhcp.c. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "dhcp.h"
#include "network.pb-c.h"

#define DHCP_DOMAIN "yun.internal"
#define DHCP_LEASE_TIME_S 86400
#define DHCP_MAX_SUBNETS 16

/* What one network's DHCP server is made of. */
struct dhcp_config {
    char mac[18];                     /* the DHCP port's */
    uint32_t mtu;                     /* 0 = default */
    char *cidrs[DHCP_MAX_SUBNETS + 1]; /* the namespace end's addresses */
    size_t n_cidrs;
    char *hosts; /* --dhcp-hostsfile content */
    char *opts;  /* --dhcp-optsfile content */
    char **argv; /* dnsmasq's, NULL-terminated */
    size_t argc;
};

/* Renders network 'net' of 'st' for host 'host_id' with its files in
 * 'dir'. Returns 0, -ENOENT when this host does not serve DHCP on it (no
 * DHCP port here, or no IPv4 subnet with enable_dhcp that the port has an
 * address on), -EINVAL when the DHCP port's own data is unusable, or
 * -ENOMEM. Instance ports with unusable data are left out. */
int dhcp_render(const Yun__HostNetworkState *st, const char *host_id,
                const Yun__NetworkRecord *net, const char *dir, const char *dnsmasq_path,
                struct dhcp_config *ret);
void dhcp_config_done(struct dhcp_config *c);
