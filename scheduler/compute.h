/* SPDX-License-Identifier: Apache-2.0
 * compute.h: the compute service (Nova's role) inside the scheduler:
 * flavors (flavor.c), instances, server groups and the agents' events
 * (instance.c), and the scheduler's asynchronous client of the agents'
 * command sockets (agent-client.c). docs/compute.md gives the state
 * machine, the agent protocol and what happens after a crash.
 *
 * Neighbours: placement.h chooses hosts and keeps the claims, in the same
 * write transaction as the instance records; image.c resolves the images
 * instances boot from; dispatch.c holds the rows of the operations below;
 * main.c calls init, cron and done. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "yun.pb-c.h"

struct sched;
struct sched_call;
struct yun_txn;
struct Yun__FlavorRecord;
struct sched_agents;
struct sched_placement_config;

/* The record databases of the compute service (state.c opens them):
 *   flavors          FlavorRecord by id
 *   flavor_names     flavor name -> id (flavor names are unique)
 *   instances        InstanceRecord by id (DELETED ones stay as tombstones
 *                    for [compute] deleted_retention_s)
 *   instance_names   "project NUL name NUL id" -> empty, live instances only
 *                    (names are not unique: the index serves look-ups by
 *                    name and a project's lists)
 *   instance_hosts   "host id NUL instance id" -> empty, live instances with
 *                    a host: what the scheduler believes each host runs
 *   server_groups    ServerGroupRecord by id */
#define SCHED_DB_FLAVORS "flavors"
#define SCHED_DB_FLAVOR_NAMES "flavor_names"
#define SCHED_DB_INSTANCES "instances"
#define SCHED_DB_INSTANCE_NAMES "instance_names"
#define SCHED_DB_INSTANCE_HOSTS "instance_hosts"
#define SCHED_DB_SERVER_GROUPS "server_groups"

/* The compute service's memory: the agent clients and the work the
 * sweep does. Owned by struct sched (s->compute). */
struct sched_compute {
    struct sched_agents *agents;   /* agent-client.c */
    int64_t next_sweep_ms;         /* CLOCK_MONOTONIC of the next sweep */
    bool recovered;                /* the start-up re-sends went out */
    bool owns_placement;           /* init made s->placement (and done frees it) */
    struct sched_netpush *netpush; /* instance-network.c: network state pushes */
};

/* --- flavor.c ------------------------------------------------------------ */

/* Helpers the compute files share (flavor.c). */
/* Audits a mutating call that did not audit itself (a failure, whose
 * transaction was aborted, or a success that wrote no record) and marks
 * it audited; returns 'r'. */
int sched_compute_audit_end(struct sched_call *call, const char *operation, const char *target,
                            int r);
/* Adds the success record of 'operation' on 'target' to '*txn', commits
 * it (consuming '*txn') and marks the call audited. */
int sched_compute_commit_audited(struct sched_call *call, struct yun_txn **txn,
                                 const char *operation, const char *target,
                                 const char *detail);

/* OP_FLAVOR_CREATE (admins): FlavorCreateRequest -> FlavorReply. */
int sched_flavor_create(struct sched_call *call, const ProtobufCMessage *req);
/* OP_FLAVOR_LIST: the flavors the caller may use. -> FlavorListReply */
int sched_flavor_list(struct sched_call *call, const ProtobufCMessage *req);
/* OP_FLAVOR_SHOW: FlavorRef (id or name) -> FlavorReply. */
int sched_flavor_show(struct sched_call *call, const ProtobufCMessage *req);
/* OP_FLAVOR_DELETE (admins): FlavorRef -> FlavorReply (the deleted one).
 * Instances keep their own copy of their flavor. */
int sched_flavor_delete(struct sched_call *call, const ProtobufCMessage *req);

/* Finds the flavor 'ref' (id, else name) that 'call' may use, in 'txn'.
 * On failure states the call's error: -ENOENT when absent or private to
 * other projects. '*ret' is the caller's (protobuf_c_message_free_unpacked). */
int sched_flavor_find(struct sched_call *call, struct yun_txn *txn, const char *ref,
                      struct Yun__FlavorRecord **ret);

/* Creates the default flavors (m1.nano, m1.tiny, m1.small, m1.medium,
 * m1.large) that do not exist yet, by id and by name: running it twice
 * creates nothing the second time. For `yun-scheduler init`. Returns 0 and
 * the number created in '*ret_created' (may be NULL), or a store error. */
int sched_flavor_seed(struct sched *s, size_t *ret_created);

/* --- instance.c ------------------------------------------------------------ */

/* Clients -> scheduler (see proto/compute.proto for the messages). */
int sched_server_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_delete(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_action(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_console(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_metadata(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_snapshot(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_group_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_group_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_group_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_server_group_delete(struct sched_call *call, const ProtobufCMessage *req);

/* Agents -> scheduler: OP_INSTANCE_EVENT (InstanceEvent ->
 * InstanceEventReply) and OP_INSTANCE_SYNC (InstanceSyncRequest ->
 * InstanceSyncReply). An agent speaks only for its own host's instances. */
int sched_instance_event(struct sched_call *call, const ProtobufCMessage *req);
/* OP_SNAPSHOT_UPLOAD (SnapshotUploadRequest -> ImageUploadReply): a chunk
 * of a server snapshot, only from the agent of the server's host while
 * the server's image_snapshot task for that image runs. */
int sched_snapshot_upload(struct sched_call *call, const ProtobufCMessage *req);
int sched_instance_sync(struct sched_call *call, const ProtobufCMessage *req);

/* The placement settings of [compute] (ratios, reservation, weigher).
 * Returns 0, or YUN_E_CONFIG for an unknown weigher or a bad ratio. */
int sched_compute_placement_config(const struct sched *s, struct sched_placement_config *ret);

/* Start-up, after the store and the placement index are open and before
 * serving: allocates s->compute and brings the records back into
 * agreement after a stop or a crash: claims without a live instance are
 * released, live instances without a claim claim again, tasks a restart
 * cut short are ended. Spawns and deletions that were never acknowledged
 * are sent again by the first sched_compute_cron (the loop must run for
 * that). Returns 0 or a negative errno. */
int sched_compute_init(struct sched *s);
/* Frees s->compute: requests still queued to agents are dropped (their
 * records stay as they are, for the next start's recovery). */
void sched_compute_done(struct sched *s);
/* Run from the scheduler's cron: the start-up re-sends once, then every
 * few seconds sched_compute_sweep with the current time. */
void sched_compute_cron(struct sched *s);
/* Fails spawns older than [compute] spawn_timeout_s (retry elsewhere),
 * ends tasks older than action_timeout_s with a fault, and purges
 * tombstones older than deleted_retention_s; 'now_us' is wall-clock time. */
void sched_compute_sweep(struct sched *s, uint64_t now_us);

/* --- agent-client.c ------------------------------------------------------ */

/* How a request to an agent ended: 'error' 0 and 'reply' (the operation's
 * reply message, decoded; NULL when the descriptor was NULL), or the
 * agent's error (with its sentence) or YUN_E_UNREACHABLE (no reply before
 * the deadline, no command address), or a transport or seal error. All
 * pointers are borrowed for the callback. */
struct sched_agent_result {
    const char *host_id;
    Yun__Op op;
    const char *request_id;
    int error;
    const char *error_message;   /* "" when none */
    const ProtobufCMessage *reply;
};

typedef void (*sched_agent_done_fn)(struct sched *s, const struct sched_agent_result *res,
                                    void *data);

/* Queues 'req' for operation 'op' to the agent of host 'host_id', sealed
 * with that agent's key (derived from the cluster secret, its peer id and
 * its current epoch; sender "scheduler"), under 'request_id' (NULL = a new
 * one). 'tag' (may be NULL) names what the request is about (an instance
 * id) for sched_agent_busy. Requests to one agent go one at a time in
 * order; each has [compute] agent_timeout_ms from when it is sent.
 * Returns 0 when queued: 'done' will be called exactly once, never before
 * this returns, then 'free_data' (may be NULL) on 'data'; a host that is
 * not registered (YUN_E_NOHOST) or has no address (YUN_E_UNREACHABLE)
 * fails through 'done' too. Returns a negative errno when not queued
 * (-EBUSY: the agent's queue is full; -ENOTCONN: no loop and no hook;
 * -EINVAL, -ENOMEM): 'done' is not called and 'free_data' is called on
 * 'data' before returning. Call with no write transaction open. */
int sched_agent_send(struct sched *s, const char *host_id, Yun__Op op,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *reply_desc,
                     const char *request_id, const char *tag, sched_agent_done_fn done,
                     void *data, void (*free_data)(void *));
/* True when a request tagged 'tag' is queued or in flight to 'host_id'. */
bool sched_agent_busy(struct sched *s, const char *host_id, const char *tag);
struct sched_agents *sched_agents_new(struct sched *s);
/* Drops every queued request without calling back; frees. NULL ok. */
struct sched_agents *sched_agents_free(struct sched_agents *a);

/* For tests: a hook that receives every request instead of the agents.
 * It returns 0 and keeps the request until it calls
 * sched_agent_request_finish, or a negative errno to refuse it (as the
 * send would). 'payload' is the operation's packed request message. */
struct sched_agent_request;
typedef int (*sched_agent_hook_fn)(struct sched *s, struct sched_agent_request *r,
                                   const char *host_id, Yun__Op op, const uint8_t *payload,
                                   size_t payload_size, void *data);
void sched_agent_set_hook(struct sched *s, sched_agent_hook_fn hook, void *data);
/* Completes a request the hook kept, as the agent's reply would: 'error'
 * 0 with 'reply' (may be NULL), or an error and its sentence. Frees 'r'. */
void sched_agent_request_finish(struct sched *s, struct sched_agent_request *r, int error,
                                const char *error_message, const ProtobufCMessage *reply);

/* --- instance-network.c ------------------------------------------------------ */

struct Yun__HostNetworkState;
struct Yun__PortRecord;
struct Yun__InstanceAddress;
struct Yun__InstanceRecord;

/* Server create, before placement: the ids of the networks 'refs' (names
 * or ids) the caller may use, in '*ret_ids' (NULL-terminated; free with
 * yun_strv_free). States the call's error. */
int sched_instance_networks_resolve(struct sched_call *call, struct yun_txn *txn,
                                    char *const *refs, size_t n, char ***ret_ids);
/* Once i->host_id is chosen, in the same transaction: one port per network
 * of 'i', bound to its host. */
int sched_instance_ports_create(struct sched *s, struct yun_txn *txn,
                                const struct Yun__InstanceRecord *i);
/* A retry on another host: the ports follow i->host_id. */
int sched_instance_ports_rebind(struct sched *s, struct yun_txn *txn,
                                const struct Yun__InstanceRecord *i);
/* Deletion: the instance's ports and their addresses go. */
int sched_instance_ports_release(struct sched *s, struct yun_txn *txn,
                                 const struct Yun__InstanceRecord *i);
/* The addresses of an instance's ports, for views; free with
 * sched_instance_addresses_free. */
int sched_instance_addresses(struct sched *s, struct yun_txn *txn, const char *instance_id,
                             struct Yun__InstanceAddress ***ret, size_t *ret_n);
void sched_instance_addresses_free(struct Yun__InstanceAddress **v, size_t n);
/* The whole network state of 'host_id' with the metadata of its instance
 * ports and a fresh generation. */
int sched_network_host_state(struct sched *s, struct yun_txn *txn, const char *host_id,
                             struct Yun__HostNetworkState **ret);
/* What a spawn of 'i' carries: its host's state and its ports in NIC
 * order (both NULL for an instance without networks). */
int sched_instance_spawn_network(struct sched *s, const struct Yun__InstanceRecord *i,
                                 struct Yun__HostNetworkState **ret_state,
                                 struct Yun__PortRecord ***ret_ports, size_t *ret_n);
/* Sends 'host_id' its network state now, or once more after the one in
 * flight. Call with no write transaction open. */
void sched_network_push(struct sched *s, const char *host_id);
/* After instances 'insts' were made or deleted: pushes to every host with
 * a port on their networks or of their projects (VXLAN peers and group
 * sets change), and to their own hosts unless 'skip_own' (a spawn carries
 * its host's state). */
void sched_network_push_related(struct sched *s, const struct Yun__InstanceRecord *const *insts,
                                size_t n, bool skip_own);
/* The host applied its state: its ports (or those of 'device_id' only)
 * become ACTIVE. */
void sched_network_ports_wired(struct sched *s, const char *host_id, const char *device_id);
/* True when a port is bound to host 'host_id' (false on a store error). */
bool sched_network_host_bound(struct sched *s, const char *host_id);
void sched_network_sync_init(struct sched *s);
void sched_network_sync_done(struct sched *s);

/* --- image.c's part ---------------------------------------------------------- */

struct Yun__ImageRecord;

/* Finds the image 'ref' (id, or a name matching one image the caller can
 * see) that 'call' may boot: visible to the caller, and for a shared
 * image of another project, accepted by the caller's project. On failure
 * states the call's error (YUN_E_NOIMAGE, YUN_E_CONFLICT for an ambiguous
 * name, YUN_E_DENIED for a shared image not accepted). The status is the
 * caller's to check. '*ret' is the caller's to free. */
int sched_image_find_bootable(struct sched_call *call, struct yun_txn *txn, const char *ref,
                              struct Yun__ImageRecord **ret);

/* --- server snapshots: image.c's part ---------------------------------------- */

struct Yun__ImageProperty;

/* Creates in 'txn' the image of a server snapshot: queued, owned by
 * 'owner', private, qcow2/bare, with 'props' (checked as any image's) and
 * 'min_disk'; audited as image.create. States the call's error for a bad
 * name or a project at its image quota. '*ret' is a copy, the caller's
 * to free. */
int sched_image_snapshot_new(struct sched_call *call, struct yun_txn *txn, const char *name,
                             const char *owner, struct Yun__ImageProperty **props,
                             size_t n_props, uint32_t min_disk, struct Yun__ImageRecord **ret);
/* One chunk of the snapshot 'image_id' of 'instance_id' (the caller
 * checked that the agent may send it): through the same session, digests
 * and inspector as OP_IMAGE_UPLOAD, the first chunk moving it from queued
 * to saving and the 'last' one to active or killed. Replies
 * ImageUploadReply (a wrong offset: YUN_E_CONFLICT with 'received'). */
int sched_image_snapshot_chunk(struct sched_call *call, const char *instance_id,
                               const char *image_id, uint64_t offset, const void *data,
                               size_t len, bool last);
/* Marks 'image_id' killed in 'txn' when it is queued or saving (a record
 * only: for recovery, where no upload runs). Gone or done: 0. */
int sched_image_snapshot_kill_txn(struct sched *s, struct yun_txn *txn, const char *image_id,
                                  int code, const char *reason);
/* Fails the snapshot 'image_id': its upload (if any) ends and its bytes
 * go, its record becomes killed unless it is already active or gone. */
int sched_image_snapshot_fail(struct sched *s, const char *image_id, int code,
                              const char *reason);
/* Copies the status of 'image_id' into 'buf'; -ENOENT when gone. */
int sched_image_snapshot_status(struct sched *s, const char *image_id, char *buf, size_t size);
