/* SPDX-License-Identifier: Apache-2.0
 * firewall.h: security groups and anti-spoofing for the ports of one host,
 * through libnftables (never the nft binary). Part of libnetplug; plain C
 * structs, no protobuf. docs/netplug.md describes the tables.
 *
 * yun owns two tables: "bridge yun" (stateless anti-spoofing of the frames
 * a guest sends, keyed by the tap's name) and "inet yun" (stateful rules
 * on bridged IPv4 through br_netfilter, keyed by the guest's MAC). A port
 * is a few map elements and its own chains, so plugging or unplugging one
 * is one small nft transaction whatever the number of ports.
 *
 * Rules follow security-group semantics in both directions: traffic a
 * rule does not allow is dropped, replies to allowed traffic pass
 * (conntrack), DHCP (client side) and ARP always pass. IPv4 only: a guest's
 * IPv6 is dropped. All text is checked before any command is built:
 * anything malformed is -EINVAL and nothing changes. Errors are negative
 * errno values; nft's own message is logged at DEBUG and kept for
 * netplug_fw_last_error(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits on what one call may ask for. */
#define NETPLUG_FW_MAX_RULES 512     /* per port */
#define NETPLUG_FW_MAX_PORT_IPS 64   /* per port */
#define NETPLUG_FW_MAX_GROUP_IPS 16384

struct netplug_fw;

struct netplug_fw_rule {
    bool ingress;            /* toward the guest; else from it */
    int protocol;            /* -1 any, else the IP protocol (1 icmp, 6 tcp, 17 udp) */
    bool has_range;          /* tcp/udp: destination ports min..max (1..65535);
                              * icmp: type 'min', code 'max' (max > 255: any code) */
    uint32_t min, max;
    const char *remote_cidr; /* "10.0.0.0/8" or NULL: the peer's address */
    const char *remote_group; /* group id ([0-9a-fA-F-], at most 36) or NULL */
};

struct netplug_fw_port {
    const char *tap;         /* the port's bridge member (tap name) */
    const char *mac;         /* the guest's MAC, "52:54:00:12:34:56" */
    const char *const *ips;  /* the guest's IPv4 addresses */
    size_t n_ips;
    bool port_security;      /* false: no filtering at all for this port */
    const struct netplug_fw_rule *rules;
    size_t n_rules;
};

/* Makes yun's tables when missing (an incomplete one is made again) and
 * turns on net.bridge.bridge-nf-call-iptables in the caller's network
 * namespace (-ENOENT when br_netfilter is missing). Loads the ports
 * already there, so that a restarted agent carries on. */
int netplug_fw_new(struct netplug_fw **ret);
struct netplug_fw *netplug_fw_free(struct netplug_fw *fw);

/* Makes or replaces the filtering of port 'p' in one nft transaction:
 * either all of it changes or nothing does; other ports are not touched.
 * A port without port security is removed from the tables. -EEXIST when
 * another port has the same MAC. Rules naming a group whose set does not
 * exist yet get an empty set. */
int netplug_fw_port_apply(struct netplug_fw *fw, const struct netplug_fw_port *p);

/* Removes the filtering of the port of tap 'tap'; 0 when there is none. */
int netplug_fw_port_remove(struct netplug_fw *fw, const char *tap);

/* Replaces the addresses of group 'group_id' (dotted quads) atomically;
 * rules with this remote_group match them. */
int netplug_fw_group_set(struct netplug_fw *fw, const char *group_id, const char *const *ips,
                         size_t n);

/* Removes the set of group 'group_id': 0 when there is none, -EBUSY while
 * a port's rule names it. */
int netplug_fw_group_remove(struct netplug_fw *fw, const char *group_id);

/* Reads the tables again, and makes them again when they are gone or
 * incomplete (someone ran 'nft flush ruleset'): what was removed behind
 * 'fw''s back then shows in netplug_fw_port_present(). */
int netplug_fw_refresh(struct netplug_fw *fw);

/* Whether the tables hold the whole filtering of port 'tap' (its
 * anti-spoofing jump and both MAC entries), as last read or written. */
bool netplug_fw_port_present(struct netplug_fw *fw, const char *tap);

/* The taps of the ports in the tables as the kernel has them now (for
 * reconciliation): a NULL-terminated array of '*ret_n' names, freed with
 * netplug_names_free() (netplug.h). */
int netplug_fw_port_list(struct netplug_fw *fw, char ***ret_taps, size_t *ret_n);

/* Drops yun's tables. The next netplug_fw_port_apply() makes them again. */
int netplug_fw_reset(struct netplug_fw *fw);

/* nft's message for the last failed call, "" when there was none. Valid
 * until the next call on 'fw'. */
const char *netplug_fw_last_error(struct netplug_fw *fw);
