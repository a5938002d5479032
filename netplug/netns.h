/* SPDX-License-Identifier: Apache-2.0
 * netns.h: named network namespaces (the /run/netns/NAME bind mounts that
 * `ip netns` uses too), running code inside one, and a veth pair from a
 * bridge into one, and binding guests' addresses to their MACs in one
 * (netns-guard.c). Used by the agent's DHCP servers and metadata service
 * (agent/dhcp.c, agent/metadata.c). Netlink through libnl-route, the
 * filter through libnftables; no shelling out. Functions here never log
 * above DEBUG.
 *
 * Threads: netplug_netns_run() and the in-namespace half of
 * netplug_veth_into_ns() run their work in a short-lived thread that
 * setns()'d into the namespace, so the caller's thread never changes
 * namespace. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Where named namespaces live, as with iproute2. */
#define NETPLUG_NETNS_DIR "/run/netns"

/* Longest namespace name accepted (a file name under NETPLUG_NETNS_DIR). */
#define NETPLUG_NETNS_NAME_MAX 64

/* Makes the named network namespace 'name' (like `ip netns add`) unless it
 * exists already. 'name' is [A-Za-z0-9._-], 1..NETPLUG_NETNS_NAME_MAX.
 * Returns 1 when it was created, 0 when it existed, or a negative errno
 * (-EINVAL for a bad name). */
int netplug_netns_ensure(const char *name);

/* Removes the name 'name' (unmount and unlink). The namespace itself goes
 * when nothing else holds it (processes, open fds, interfaces' peers).
 * Returns 0, also when there was no such name, or a negative errno. */
int netplug_netns_remove(const char *name);

/* Lists the names under NETPLUG_NETNS_DIR that start with 'prefix' (NULL
 * or "" for all). On success '*ret_names' is a malloc'd array of '*ret_n'
 * malloc'd strings (free each, then the array; NULL when none). A missing
 * directory is an empty list. */
int netplug_netns_list(const char *prefix, char ***ret_names, size_t *ret_n);

/* Opens namespace 'name'. Returns an O_CLOEXEC fd the caller closes, or a
 * negative errno (-ENOENT when there is none). */
int netplug_netns_open(const char *name);

/* The inode of namespace 'name' into '*ret_ino' (tells a re-made namespace
 * of the same name from the old one). 0 or a negative errno. */
int netplug_netns_inode(const char *name, uint64_t *ret_ino);

typedef int (*netplug_netns_fn)(void *arg);

/* Runs 'fn(arg)' in a thread that joined namespace 'name' and waits for
 * it. Sockets 'fn' makes stay in that namespace. 'fn' must not touch the
 * caller's event loop. Returns what 'fn' returned, or a negative errno
 * when it could not be run. */
int netplug_netns_run(const char *name, netplug_netns_fn fn, void *arg);

/* Wires a veth pair from bridge 'bridge' into namespace 'ns': the end
 * 'host_ifname' stays here, enslaved to 'bridge' and up; its peer is in
 * 'ns', named 'ns_ifname', with MAC 'mac' ("aa:bb:cc:dd:ee:ff"), MTU 'mtu'
 * (0 leaves the default), exactly the IPv4 addresses 'cidrs' ('n' of
 * "a.b.c.d/len"; other IPv4 addresses are removed) and up; the namespace's
 * lo is up too. Idempotent: an existing pair is corrected in place, a
 * broken half is remade. 'ns' must exist. Returns 0 or a negative errno
 * (-ENODEV when 'bridge' does not exist, -EINVAL for a bad argument). */
int netplug_veth_into_ns(const char *host_ifname, const char *bridge, const char *ns,
                         const char *ns_ifname, const char *mac, const char *const *cidrs,
                         size_t n, uint32_t mtu);

/* Deletes link 'ifname' of this namespace (with a veth, its peer goes
 * too). Returns 0, also when there is no such link, or a negative errno. */
int netplug_link_delete(const char *ifname);

/* ---- binding addresses to MACs inside a namespace (netns-guard.c) ---- */

/* One guest: IPv4 address 'ip' ("a.b.c.d") belongs to MAC 'mac'
 * ("aa:bb:cc:dd:ee:ff"). */
struct netplug_binding {
    const char *ip;
    const char *mac;
};

/* Longest list netplug_netns_pin_neighbours() and
 * netplug_netns_bind_sources() take. */
#define NETPLUG_MAX_BINDINGS 4096

/* Makes the permanent IPv4 neighbour entries (NUD_PERMANENT) of link
 * 'ifname' in namespace 'ns' exactly 'b' ('n' of them): each address is
 * pinned to its MAC, so that what the namespace sends to it goes to that
 * MAC whatever ARP says, and other permanent IPv4 entries of the link are
 * removed. Entries the kernel learnt are left, except where a pinned
 * address replaces one. Returns 0, -EINVAL for a bad address, MAC or
 * name (nothing is changed then), -ENODEV when there is no such link, or
 * another negative errno. */
int netplug_netns_pin_neighbours(const char *ns, const char *ifname,
                                 const struct netplug_binding *b, size_t n);

/* Makes table 'inet <table>' in namespace 'ns' accept TCP to
 * 'daddr':'dport' only from a pair (source address, source MAC) of 'b'
 * ('n' of them) and answer any other such packet, the namespace's own
 * included, with a TCP reset. The whole table is replaced in one nft
 * transaction. Every address and MAC is checked and put in canonical
 * form before it reaches nft. Returns 0, -EINVAL for bad input (nothing
 * is changed then), or a negative errno. */
int netplug_netns_bind_sources(const char *ns, const char *table, const char *daddr,
                               uint16_t dport, const struct netplug_binding *b, size_t n);
