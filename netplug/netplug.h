/* SPDX-License-Identifier: Apache-2.0
 * netplug.h: the agent's network plumbing through libnl-route: links,
 * bridges, VXLAN/VLAN uplinks and taps. Sole public header of libnetplug
 * for links; firewall.h holds the security groups. Uses only common/.
 *
 * Every link yun makes is named by netplug_ifname() and starts with 'y',
 * so that reconciliation finds them with netplug_link_list(). Every call
 * is idempotent: "ensure" on a link that exists with the right settings
 * changes nothing; one with wrong settings is fixed in place or, where the
 * kernel cannot change a setting (VXLAN VNI, VLAN id), deleted and made
 * again. Errors are negative errno values; -EINVAL for a bad argument,
 * -ENODEV for a missing parent or bridge. Nothing here logs above DEBUG. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Prefixes of the links yun makes. */
#define NETPLUG_PREFIX_BRIDGE "ybr-"
#define NETPLUG_PREFIX_VXLAN "yvx-"
#define NETPLUG_PREFIX_VLAN "yvl-"
#define NETPLUG_PREFIX_TAP "ytap"
#define NETPLUG_PREFIX_DHCP "ydh-"

/* IFNAMSIZ, with the NUL. */
#define NETPLUG_IFNAME_SIZE 16

struct netplug;

/* Opens a netlink route socket. Returns 0 and '*ret', or a negative errno. */
int netplug_new(struct netplug **ret);
struct netplug *netplug_free(struct netplug *np);

/* Writes 'prefix' followed by the leading characters of 'id' with every
 * '-' removed, cut at 15 characters, into 'out'. 'prefix' must start with
 * 'y' and be 1..8 characters; 'id' may hold only [A-Za-z0-9-] and must
 * leave at least one character. Returns the length or -EINVAL. */
int netplug_ifname(char out[NETPLUG_IFNAME_SIZE], const char *prefix, const char *id);

/* The ifindex of link 'name': > 0, -ENODEV when there is none. */
int netplug_link_index(struct netplug *np, const char *name);

/* Makes bridge 'name' (or fixes it): up, STP off, forward delay 0, MTU
 * 'mtu' (0 leaves the kernel's), no IPv6 address generation. */
int netplug_bridge_ensure(struct netplug *np, const char *name, unsigned mtu);

/* Makes VXLAN device 'name' with VNI 'vni' (1..16777215), source address
 * 'local_ip' (dotted quad), underlay device 'underlay_dev' (may be NULL),
 * UDP destination port 'dstport' (0 means 4789), learning on and no
 * multicast group; enslaved to 'bridge' (which must exist), MTU 'mtu'
 * (0 leaves it), up. A device with another VNI, address, port or underlay
 * is deleted and made again (its FDB entries go with it). */
int netplug_vxlan_ensure(struct netplug *np, const char *name, uint32_t vni,
                         const char *local_ip, const char *underlay_dev, uint16_t dstport,
                         const char *bridge, unsigned mtu);

/* Makes the all-zero-MAC (flood) FDB entries of VXLAN device 'name' equal
 * to the dotted quads 'remote_ips[0..n)': adds the missing ones and deletes
 * the others. All addresses are checked before anything changes (-EINVAL).
 * At most NETPLUG_VXLAN_MAX_REMOTES. */
#define NETPLUG_VXLAN_MAX_REMOTES 4096
int netplug_vxlan_set_remotes(struct netplug *np, const char *name,
                              const char *const *remote_ips, size_t n);

/* Makes VLAN device 'name' on 'parent' with id 'vid' (1..4094), enslaved
 * to 'bridge', up; brings 'parent' up. Another id or parent: made again. */
int netplug_vlan_ensure(struct netplug *np, const char *name, const char *parent,
                        uint16_t vid, const char *bridge);

/* Flat networks: enslaves the existing link 'link' (a physical interface)
 * to 'bridge' and brings it up. */
int netplug_attach(struct netplug *np, const char *link, const char *bridge);

/* Makes persistent tap 'name' through /dev/net/tun (IFF_TAP|IFF_NO_PI),
 * its MAC the guest's 'guest_mac' ("aa:bb:cc:dd:ee:ff") with the first
 * byte 0xfe, MTU 'mtu' (0 leaves it), enslaved to 'bridge', up. For
 * libvirt's <interface type='ethernet'><target dev='NAME' managed='no'/>.
 * An existing tap (even one a guest holds open) is fixed in place; a link
 * of that name that is not a tap is -EEXIST. */
int netplug_tap_ensure(struct netplug *np, const char *name, const char *bridge,
                       const char *guest_mac, unsigned mtu);

/* Deletes link 'name'. Returns 0 also when there is none. */
int netplug_link_remove(struct netplug *np, const char *name);

/* Names of the links whose name starts with 'prefix' (all with ""), in
 * ifindex order: '*ret_names' is a NULL-terminated array of '*ret_n'
 * names, freed with netplug_names_free(). */
int netplug_link_list(struct netplug *np, const char *prefix, char ***ret_names, size_t *ret_n);
char **netplug_names_free(char **names);

/* Writes the name of the master of link 'name' into 'out', "" when it has
 * none. -ENODEV when 'name' does not exist. */
int netplug_link_master(struct netplug *np, const char *name, char out[NETPLUG_IFNAME_SIZE]);
