/* SPDX-License-Identifier: Apache-2.0
 * network.h: the network model (Neutron's API model: Quantum and Melange's
 * role) inside the scheduler: networks and subnets (network.c), ports and
 * their addresses (port.c), security groups and rules (security-group.c),
 * IPv4 arithmetic (ipam.h). docs/networks.md gives the rules.
 *
 * Two faces:
 *   - the handlers of OP_NETWORK_* .. OP_SECURITY_GROUP_RULE_LIST, rows of
 *     dispatch.c, each in its own write (or read) transaction;
 *   - an internal API for the compute glue (instance.c), which works
 *     inside the caller's write transaction, so that an instance, its
 *     ports, their addresses and their MACs commit (or vanish) together.
 *
 * Concurrency: every allocation (address, MAC, segment id) is written to
 * its index database in the same LMDB write transaction as the record
 * that holds it. LMDB has one writer at a time, so two creates can never
 * take the same address.
 *
 * Record databases (state.c opens them):
 *   networks                NetworkRecord by id
 *   subnets                 SubnetRecord by id
 *   ports                   PortRecord by id
 *   security_groups         SecurityGroupRecord by id (rules inside)
 *   network_segments        "type NUL be32 segment id" -> network id
 *   port_macs               "network id NUL mac" -> port id
 *   ip_allocations          "subnet id NUL be32 address" -> port id
 *   default_security_groups project id -> its "default" group's id */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "network.pb-c.h"

struct sched;
struct sched_call;
struct yun_txn;

#define SCHED_DB_NETWORKS "networks"
#define SCHED_DB_SUBNETS "subnets"
#define SCHED_DB_PORTS "ports"
#define SCHED_DB_SECURITY_GROUPS "security_groups"
#define SCHED_DB_NETWORK_SEGMENTS "network_segments"
#define SCHED_DB_PORT_MACS "port_macs"
#define SCHED_DB_IP_ALLOCATIONS "ip_allocations"
#define SCHED_DB_DEFAULT_SECURITY_GROUPS "default_security_groups"

#define NETWORK_DEVICE_OWNER_DHCP "network:dhcp"
#define NETWORK_DEVICE_OWNER_COMPUTE "compute:nova"
#define NETWORK_DEVICE_OWNER_ROUTER "network:router_interface"

/* --- handlers (dispatch.c rows) ---------------------------------------- */

int sched_network_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_network_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_network_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_network_update(struct sched_call *call, const ProtobufCMessage *req);
int sched_network_delete(struct sched_call *call, const ProtobufCMessage *req);
int sched_subnet_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_subnet_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_subnet_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_subnet_update(struct sched_call *call, const ProtobufCMessage *req);
int sched_subnet_delete(struct sched_call *call, const ProtobufCMessage *req);
int sched_port_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_port_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_port_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_port_update(struct sched_call *call, const ProtobufCMessage *req);
int sched_port_delete(struct sched_call *call, const ProtobufCMessage *req);
int sched_security_group_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_security_group_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_security_group_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_security_group_update(struct sched_call *call, const ProtobufCMessage *req);
int sched_security_group_delete(struct sched_call *call, const ProtobufCMessage *req);
int sched_security_group_rule_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_security_group_rule_delete(struct sched_call *call, const ProtobufCMessage *req);
int sched_security_group_rule_list(struct sched_call *call, const ProtobufCMessage *req);

/* --- the compute glue's API ---------------------------------------------
 * Every function below works inside 'txn', a write transaction the caller
 * owns (network_host_state also accepts a read one) and commits: nothing
 * is visible before that, and an abort undoes it all, allocations
 * included. None of them writes an audit record or calls the changed
 * hook: the caller does both after its commit. Results are owned by the
 * caller (free with protobuf_c_message_free_unpacked); they are not
 * written on failure. Errors: -ENOENT for a missing object, YUN_E_INVALID,
 * YUN_E_EXHAUSTED when a subnet has no free address, or a store error. */

/* Resolves 'name_or_id' to a network the caller of 'call' may use (its
 * project's, or a shared one; an admin's: any). On failure also states
 * the error on 'call' (a sentence naming the network). */
int network_find_usable(struct sched *s, struct yun_txn *txn, const struct sched_call *call,
                        const char *name_or_id, Yun__NetworkRecord **ret);

/* Makes an instance port on 'network_id' for 'project': device_owner
 * compute:nova, device_id 'instance_id', the project's default security
 * group (made if missing), a random unique MAC and one address from the
 * network's first subnet. Unbound (host_id ""), status DOWN. */
int port_create_for_instance(struct sched *s, struct yun_txn *txn, const char *project,
                             const char *network_id, const char *instance_id,
                             Yun__PortRecord **ret);

/* Binds port 'port_id' to host 'host_id' (status BUILD), and when one of
 * its network's subnets has DHCP on, makes sure the network has a DHCP
 * port bound to that host: device_owner network:dhcp, device_id
 * "dhcp-<host id>", no security group, port security off, an address from
 * each DHCP subnet. Idempotent. */
int port_bind_host(struct sched *s, struct yun_txn *txn, const char *port_id,
                   const char *host_id);

/* Deletes every port whose device_id is 'instance_id', releasing their
 * addresses and MACs, and the DHCP port of a host on a network when no
 * other port on that network remains bound to that host. 0 when there
 * were none. */
int port_delete_for_instance(struct sched *s, struct yun_txn *txn, const char *instance_id);

/* The ports of 'instance_id', in creation order; '*ret' is a malloc'ed
 * array (NULL when 'n' is 0) of records; free each, then the array. */
int ports_of_instance(struct sched *s, struct yun_txn *txn, const char *instance_id,
                      Yun__PortRecord ***ret, size_t *ret_n);

/* The whole desired network state of host 'host_id' (HostNetworkState):
 * the networks with a port bound to it, their subnets, its ports, the
 * security groups those ports use (with their rules), the members
 * (addresses of the ports) of every group those rules name as a remote
 * group, and for each VXLAN network the tunnel_ip of every OTHER host
 * with a port bound on it (hosts with no tunnel_ip are left out).
 * 'metadata' is left empty: the compute glue fills it. 'generation' is
 * the wall clock in microseconds at the time of the build: a newer state
 * has a larger one. A host with nothing bound gets an empty state. */
int network_host_state(struct sched *s, struct yun_txn *txn, const char *host_id,
                       Yun__HostNetworkState **ret);

/* Tells the hook (network_set_changed_hook) that the network state of
 * hosts 'host_ids' may have changed. Called by the handlers after each
 * commit that changes a bound port, a group used by one, or a group's
 * members; the compute glue calls it after its own commits. Without a
 * hook it does nothing. */
void network_hosts_changed(struct sched *s, const char *const *host_ids, size_t n);

/* Before project 'project' is deleted (identity-admin.c, in its write
 * transaction): YUN_E_INUSE while the project owns networks, subnets,
 * ports or security groups other than its "default" group; else deletes
 * that group. */
int network_project_delete(struct sched *s, struct yun_txn *txn, const char *project);

typedef void (*network_changed_fn)(struct sched *s, const char *const *host_ids, size_t n,
                                   void *data);
/* Sets (or with NULL clears) the hook network_hosts_changed calls. */
void network_set_changed_hook(struct sched *s, network_changed_fn fn, void *data);
