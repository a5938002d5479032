/* SPDX-License-Identifier: Apache-2.0
 * network-priv.h: what network.c, port.c and security-group.c share and
 * the unit tests look at: look-ups by name or id with the visibility
 * rules, the port maker, the default group, and the set of hosts whose
 * state a change touches. Not for other modules: they use network.h. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "network.h"
#include "util.h"

struct sched;
struct sched_call;
struct yun_txn;

#define NET_NAME_MAX 255
#define NET_DESCRIPTION_MAX 255
#define NET_NETWORKS_PER_PROJECT 100
#define NET_SUBNETS_PER_NETWORK 16
#define NET_PORTS_PER_PROJECT 1000
#define NET_GROUPS_PER_PROJECT 100
#define NET_RULES_PER_GROUP 100
#define NET_POOLS_MAX 16
#define NET_DNS_MAX 5
#define NET_FIXED_IPS_MAX 16
#define NET_PORT_GROUPS_MAX 16
#define NET_DEFAULT_GROUP "default"
#define NET_MAC_STR_SIZE 18

/* A kind of record the handlers look up by name or id. */
struct net_kind {
    const char *db;
    const ProtobufCMessageDescriptor *desc;
    const char *what;           /* "Network", for messages */
};
extern const struct net_kind net_kind_network, net_kind_subnet, net_kind_port, net_kind_group;

/* States the error on 'call' when there is one (handlers), else just
 * returns 'r' (the internal API). */
int net_error(struct sched_call *call, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The string field 'field' of 'm', or "". */
const char *net_msg_str(const ProtobufCMessage *m, const char *field);

/* May 'call' see 'm' (a record of kind 'k')? Admins see everything when
 * 'all' (shows, look-ups; lists with --all-projects); everyone sees their
 * project's, and shared networks and their subnets. NULL 'call' (the
 * internal API) sees everything. */
bool net_visible(struct yun_txn *txn, const struct sched_call *call, const struct net_kind *k,
                 const ProtobufCMessage *m, bool all);

/* Finds 'ref' (an id, else a name) among the records of 'k' that 'call'
 * may see; a name matching several is YUN_E_CONFLICT unless exactly one
 * of them is the caller's project's. States "<What> 'ref' not found." on
 * 'call'. */
int net_find(struct sched_call *call, struct yun_txn *txn, const struct net_kind *k,
             const char *ref, ProtobufCMessage **ret);
/* Loads by id only, with no visibility check. */
int net_load(struct yun_txn *txn, const struct net_kind *k, const char *id,
             ProtobufCMessage **ret);
int net_store(struct yun_txn *txn, const struct net_kind *k, const ProtobufCMessage *m);

/* Every record of 'k' for which 'keep' (may be NULL) says true, as a
 * malloc'ed array of unpacked records. */
typedef bool (*net_keep_fn)(struct yun_txn *txn, const ProtobufCMessage *m, void *data);
int net_collect(struct yun_txn *txn, const struct net_kind *k, net_keep_fn keep, void *data,
                ProtobufCMessage ***ret, size_t *ret_n);
void net_free_all(ProtobufCMessage **items, size_t n);

/* Counts the records of 'k' owned by 'project'. */
int net_count_project(struct yun_txn *txn, const struct net_kind *k, const char *project,
                      size_t *ret);

/* Checks user text: a name ('required': 1..NET_NAME_MAX bytes, else
 * 0..) and a description. */
int net_check_name(struct sched_call *call, const char *what, const char *name, bool required);
int net_check_description(struct sched_call *call, const char *description);

/* --- a set of host ids ---------------------------------------------------- */

struct net_hosts {
    char **ids;
    size_t n, allocated;
};
int net_hosts_add(struct net_hosts *h, const char *host_id); /* "" ignored; no duplicates */
void net_hosts_done(struct net_hosts *h);
/* Tells the hook about 'h' and empties it. */
void net_hosts_notify(struct sched *s, struct net_hosts *h);
/* Adds the hosts with a port bound on network 'network_id'. */
int net_hosts_of_network(struct yun_txn *txn, const char *network_id, struct net_hosts *h);
/* Adds the hosts with a bound port in one of 'groups', or in a group with
 * a rule naming one of 'groups' as its remote group (they hold its
 * members). */
int net_hosts_of_groups(struct yun_txn *txn, char *const *groups, size_t n,
                        struct net_hosts *h);

/* --- ports (port.c) ------------------------------------------------------- */

struct port_spec {
    const char *project;
    const char *name;
    const char *description;
    const char *device_id;
    const char *device_owner;
    const char *host_id;
    const char *mac_address;    /* "" = random */
    Yun__FixedIp **fixed_ips;   /* subnet ids resolved; ip "" = any; none = first subnet */
    size_t n_fixed_ips;
    char **security_groups;     /* group ids; with 'default_group', none given */
    size_t n_security_groups;
    bool default_group;         /* the project's default group */
    bool port_security;
};

/* Makes a port on 'net' per 'spec' in 'txn': MAC, addresses and record
 * with their indexes. Errors are stated on 'call' when not NULL. */
int net_port_make(struct sched *s, struct sched_call *call, struct yun_txn *txn,
                  const Yun__NetworkRecord *net, const struct port_spec *spec,
                  Yun__PortRecord **ret);
/* Makes sure 'net' has a DHCP port bound to 'host_id' with an address of
 * each of its subnets with DHCP on, when it has such subnets. */
int net_dhcp_port_sync(struct sched *s, struct yun_txn *txn, const Yun__NetworkRecord *net,
                       const char *host_id);
/* Deletes port 'p' with its addresses and MAC. */
int net_port_remove(struct yun_txn *txn, const Yun__PortRecord *p);
/* Releases the address 'ip' of subnet 'subnet_id'. */
int net_ip_release(struct yun_txn *txn, const char *subnet_id, const char *ip);
/* Releases every address of subnet 'subnet_id'. */
int net_ip_release_all(struct yun_txn *txn, const char *subnet_id);
/* Is 'ip' of subnet 'subnet_id' allocated? Returns 1, 0 or negative. */
int net_ip_is_allocated(struct yun_txn *txn, const char *subnet_id, uint32_t ip);

/* --- groups (security-group.c) -------------------------------------------- */

/* The id of the "default" group of 'project', made (with its rules) in
 * 'txn' when missing; 'txn' must then be a write transaction. */
int net_default_group(struct sched *s, struct yun_txn *txn, const char *project,
                      char ret[YUN_UUID_STR_SIZE]);
