/* SPDX-License-Identifier: Apache-2.0
 * scheduler.h: the yun-scheduler daemon's shared state and the pieces its
 * modules offer each other: config (config.c), peers and keys (peers.c),
 * the dispatch table (dispatch.c), hosts (host.c), the image registry
 * (image.c, bytes behind image-store.h), the audit log (audit.c) and
 * identity: tokens and logins (identity.c), users, projects and roles
 * (identity-admin.c), SSH keypairs (keypair.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "cfg.h"
#include "envelope.h"
#include "seal.h"

struct yun_loop;
struct yun_store;
struct yun_bus_server;
struct yun_bus_peer;
struct sched_call;
struct sched_images;
struct sched_identity;
struct sched_placement;
struct sched_compute;
struct yun_txn;
struct yun_pool;
struct yun_token;
struct sched_op;

struct sched_config {
    char *bus_url;
    char *state_dir;
    char *secret_file;
    char *log_file;
    int log_level;
    uint32_t max_message_size;
    uint32_t message_window_s;
    uint32_t max_cached_replies;
    uint32_t host_down_after_missed;
    uint32_t host_check_interval_ms;
    uint32_t host_heartbeat_write_interval_s;
    char *image_dir;                  /* "" = <state_dir>/images */
    uint32_t image_chunk_size;        /* bytes of image data per message */
    uint32_t image_upload_idle_timeout_s;
    uint32_t image_max_virtual_size_gb;
    uint32_t image_max_uploads;       /* upload sessions open at once */
    uint32_t image_max_per_project;   /* image records per owner (deleted ones excepted) */
    uint32_t image_tombstone_retention_s; /* deleted records kept this long; 0 = forever */
    uint32_t image_store_min_free_mb; /* uploads never leave the store's fs with less */
    uint32_t image_project_size_total_mb; /* image bytes per project; 0 = no limit */
    uint32_t audit_retention_days;    /* 0 = keep forever */
    uint32_t worker_threads;          /* the pool for slow work: password hashes, keygen */
    uint32_t worker_queue;            /* jobs queued or running at once */
    char *token_key_dir;              /* "" = <state_dir>/token-keys */
    uint32_t token_ttl_s;
    uint32_t token_max_active_keys;   /* staged + primary + secondaries kept by rotate-keys */
    uint32_t lockout_attempts;        /* failed logins in a row that lock; 0 = never */
    uint32_t lockout_minutes;
    /* [compute] (compute.h: instance.c, agent-client.c; the placement
     * ratios and weigher feed placement.h) */
    double cpu_allocation_ratio;
    double ram_allocation_ratio;
    double disk_allocation_ratio;
    uint32_t reserved_host_memory_mb;
    char *weigher;                    /* spread | pack */
    uint32_t compute_max_attempts;
    uint32_t compute_spawn_timeout_s;
    uint32_t compute_action_timeout_s;
    uint32_t compute_agent_timeout_ms;
    uint32_t compute_agent_queue_max;
    uint32_t compute_agent_connections_max;
    uint32_t compute_max_instances_per_project;
    uint32_t compute_deleted_retention_s;
    uint32_t compute_sweep_interval_s;
    /* [network] (network.h) */
    char *network_default_type;       /* flat | vlan | vxlan */
    char *network_physical_network;   /* the label of flat and vlan networks by default */
    uint32_t network_vni_min, network_vni_max;
    uint32_t network_vlan_min, network_vlan_max;
    uint32_t network_vxlan_mtu;
    uint32_t network_mtu;             /* flat and vlan */
};

extern const struct yun_cfg_key sched_config_table[];
extern const size_t sched_config_table_size;

#define SCHED_CONFIG_FILE_DEFAULT "/etc/yun/scheduler.conf"
#define SCHED_SCHEMA_VERSION 1

struct sched {
    struct sched_config cfg;
    struct yun_loop *loop;
    struct yun_store *store;
    struct yun_bus_server *bus;
    uint8_t secret[YUN_SECRET_SIZE];
    struct sched_keycache *keys;
    struct sched_images *images; /* image.c: byte store and upload sessions */
    struct sched_identity *identity; /* identity.c: token keys, revocation list */
    struct sched_placement *placement; /* placement.h: the host index */
    struct sched_compute *compute; /* compute.h: agent clients, sweeps */
    struct sched_hosts *hosts;   /* host.c: heartbeats not written yet */
    struct yun_pool *pool;       /* workers for slow jobs (sched_call_defer) */
    int cron;
    /* Without a bus (unit tests), deferred replies go here, with handles
     * counted from 'next_deferred'. */
    void (*deferred_reply)(struct sched *s, uint64_t handle, const uint8_t *reply,
                           size_t size, void *data);
    void *deferred_reply_data;
    uint64_t next_deferred;
    /* network.c: who hears that hosts' network state changed
     * (network_set_changed_hook in network.h); NULL = nobody. */
    void (*network_changed)(struct sched *s, const char *const *host_ids, size_t n, void *data);
    void *network_changed_data;
};

/* The [network] keys that the table's ranges cannot check: 0, or
 * YUN_E_CONFIG with a sentence in '*ret_why'. */
int sched_network_config_check(const struct sched_config *cfg, const char **ret_why);

/* The record databases of the scheduler's store. */
extern const char *const sched_store_dbs[];

int sched_store_open(struct sched *s);

/* peers.c: who may speak on the bus. */
int sched_peer_issue(struct sched *s, const char *id, const char *kind, bool rotate,
                     uint32_t *ret_epoch);
/* Registers the peers PREFIX-1 ... PREFIX-COUNT of one kind in one write
 * transaction (the host simulator's thousands of agents); their keys are
 * derived from the cluster secret by whoever holds it. '*ret_max_epoch'
 * gets the highest epoch among them (1 when all are new). */
int sched_peer_issue_many(struct sched *s, const char *prefix, uint32_t count, const char *kind,
                          bool rotate, uint32_t *ret_max_epoch);
int sched_peer_revoke(struct sched *s, const char *id, uint32_t *ret_epoch);
/* The yun_bus_key_fn of the scheduler's bus server. */
int sched_peer_key(const char *key_id, uint32_t epoch, struct yun_key *ret, int *ret_kind,
                   void *data);
struct sched_keycache *sched_keycache_free(struct sched_keycache *c);

/* dispatch.c: the one table every request goes through. */
int sched_dispatch(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
                   uint8_t **ret_reply, size_t *ret_size, void *data);
void sched_dispatch_reject(int code, const struct yun_envelope_in *in, void *data);

/* The fixed roles, as bits of sched_call.roles. A token carries the roles
 * its user holds in its project with the implied ones (admin implies
 * member, member implies reader), as Keystone's default roles do. */
enum sched_role {
    SCHED_ROLE_READER = 1 << 0,
    SCHED_ROLE_MEMBER = 1 << 1,
    SCHED_ROLE_ADMIN = 1 << 2,
};
/* "reader" -> SCHED_ROLE_READER, ...; 0 for anything else. */
unsigned sched_role_from_string(const char *s);
const char *sched_role_to_string(unsigned role);

/* Helpers for handlers: state the reply or the error of the call. */
struct sched_call {
    struct sched *s;
    const struct yun_bus_peer *peer;
    int peer_kind;               /* Yun__PeerRecord__Kind */
    const char *req;             /* request id, for logs */
    const struct sched_op *op;   /* the dispatch table's row */
    const char *target;          /* the object named by the request, for audit ("" if none) */
    /* Who acts, from the request's token: the user id, the project id the
     * token is scoped to, its roles there, and is_admin when one of them
     * is admin (cloud-wide, as in OpenStack's default policy). Agents act
     * as themselves (their peer id) with no project and no role; an
     * operator peer without a token as its peer id with none either.
     * Handlers decide ownership and visibility from these fields only. */
    const char *user;
    const char *project;
    bool is_admin;
    unsigned roles;              /* SCHED_ROLE_* bits */
    const struct yun_token *token; /* the validated token; NULL without one */
    bool deferred;               /* sched_call_defer() took the call: reply later */
    bool wipe_payload;           /* the reply holds a secret: wipe it after sending */
    int error;
    char *error_message;
    uint8_t *payload;            /* malloc'ed; the reply starts at payload_offset */
    size_t payload_offset;
    size_t payload_size;
    bool reply_on_error;         /* send 'payload' along with the error */
    bool audited;                /* the handler wrote this call's audit record */
};
int sched_call_reply(struct sched_call *call, const ProtobufCMessage *reply);
/* Takes 'payload' (malloc'ed, already packed) as the reply: for handlers
 * that build their reply in place, such as image downloads. */
void sched_call_reply_take(struct sched_call *call, uint8_t *payload, size_t size);
/* As sched_call_reply_take, for a reply packed 'offset' bytes into the
 * malloc'ed 'buf': with 'offset' = sched_call_reply_headroom(size) the
 * Reply that carries it is framed in place, without copying the payload
 * (an image chunk). */
void sched_call_reply_take_at(struct sched_call *call, uint8_t *buf, size_t offset,
                              size_t size);
/* The room a payload of 'size' bytes needs before it to be framed in
 * place. */
size_t sched_call_reply_headroom(size_t size);
int sched_call_error(struct sched_call *call, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Slow work (a password hash, an RSA key) leaves the loop: 'work' runs on
 * a worker thread of s->pool with 'data' only, then 'resume' runs on the
 * loop with a fresh call (same caller, request id and operation) and the
 * work's result (-ECANCELED at shutdown), and states the reply as any
 * handler does; the dispatcher then audits, logs and sends it. 'data' is
 * freed with 'free_data' (may be NULL) after 'resume'. Returns 0 (the
 * handler then returns 0 and states nothing more), or -EBUSY when too
 * many jobs wait (the handler answers at once), -ENOMEM. Owns 'data' only
 * on success. */
typedef int (*sched_resume_fn)(struct sched_call *call, int result, void *data);
int sched_call_defer(struct sched_call *call, int (*work)(void *data), sched_resume_fn resume,
                     void *data, void (*free_data)(void *data));

/* identity.c: token keys, the revocation list, authentication and
 * logins. sched_identity_init runs after sched_store_open: it loads the
 * token keys (run 'yun-scheduler init' first) and the revocation list.
 * The cron reloads the key repository when its directory changes
 * (rotate-keys) and the revocation list when another process changed it
 * (set-password), and drops expired revocations. */
int sched_identity_init(struct sched *s);
void sched_identity_done(struct sched *s);
void sched_identity_cron(struct sched *s);
/* Reloads the token keys now (SIGHUP). Keeps the old ones on failure. */
int sched_identity_reload_keys(struct sched *s);
/* The token key directory: [identity] token_key_dir or its default. */
int sched_identity_key_dir(const struct sched *s, char **ret);
/* Validates a request's token (not NUL-terminated, 'size' bytes) against
 * the keys and the revocation list, reading no database. Returns 0 with
 * the token in '*ret' and its roles as SCHED_ROLE_* bits in '*ret_roles',
 * or YUN_E_TOKEN_INVALID, YUN_E_TOKEN_EXPIRED, YUN_E_TOKEN_REVOKED. */
int sched_identity_authenticate(struct sched *s, const void *token, size_t size,
                                uint64_t now_us, struct yun_token *ret, unsigned *ret_roles);
/* Offline (main.c): creates the "admin" project, and the "admin" user with
 * the admin role on it when 'password' is not NULL; both are kept when
 * they exist. Sets '*ret_created_user'. */
int sched_identity_bootstrap(struct sched *s, const char *password, bool *ret_created_user);
/* Offline (main.c): sets the password of user 'name' (creating "admin"
 * as bootstrap does when it is missing), clears its lockout and revokes
 * its tokens. */
int sched_identity_set_password(struct sched *s, const char *name, const char *password);
int sched_login(struct sched_call *call, const ProtobufCMessage *req);
int sched_logout(struct sched_call *call, const ProtobufCMessage *req);

/* identity-admin.c: projects, users and role assignments (admins). */
int sched_project_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_project_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_project_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_project_set(struct sched_call *call, const ProtobufCMessage *req);
int sched_project_delete(struct sched_call *call, const ProtobufCMessage *req);
int sched_user_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_user_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_user_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_user_set(struct sched_call *call, const ProtobufCMessage *req);
int sched_user_delete(struct sched_call *call, const ProtobufCMessage *req);
int sched_role_add(struct sched_call *call, const ProtobufCMessage *req);
int sched_role_remove(struct sched_call *call, const ProtobufCMessage *req);
int sched_role_assignment_list(struct sched_call *call, const ProtobufCMessage *req);

/* keypair.c: SSH keypairs, per user. */
int sched_keypair_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_keypair_import(struct sched_call *call, const ProtobufCMessage *req);
int sched_keypair_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_keypair_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_keypair_delete(struct sched_call *call, const ProtobufCMessage *req);
/* The OpenSSH public key line of keypair 'name' of user 'user_id', in
 * '*ret' (malloc'ed). -ENOENT when there is none. */
int sched_keypair_public_key(struct yun_txn *txn, const char *user_id, const char *name,
                             char **ret);

/* host.c */
struct Yun__HostRecord;
/* Finds a host by id or by name in 'txn': 0 and '*ret' (the caller's, to
 * free_unpacked), YUN_E_NOHOST, or a store error. */
int sched_host_find(struct yun_txn *txn, const char *ref, struct Yun__HostRecord **ret);
int sched_host_register(struct sched_call *call, const ProtobufCMessage *req);
int sched_host_heartbeat(struct sched_call *call, const ProtobufCMessage *req);
int sched_host_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_host_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_host_set_enabled(struct sched_call *call, const ProtobufCMessage *req);
/* Marks hosts down whose heartbeats stopped. Run from the cron timer. */
void sched_host_check_liveness(struct sched *s);
/* Starts keeping heartbeats in memory (the daemon, before serving);
 * without it every heartbeat is written. Frees what it keeps. */
int sched_hosts_init(struct sched *s);
struct sched_hosts *sched_hosts_free(struct sched_hosts *hs);

/* image.c: the image registry (Glance's role). Records live in "images"
 * with the name index "image_names"; bytes live behind image-store.h.
 * sched_image_init runs after sched_store_open and before serving: it
 * opens the byte store and recovers from a crash (no image stays in
 * saving, no partial or orphan bytes remain). sched_image_done kills the
 * uploads in progress the same way and frees the module. */
int sched_image_init(struct sched *s);
void sched_image_done(struct sched *s);
/* Reaps idle uploads and purges old tombstones; run from the cron timer. */
void sched_image_cron(struct sched *s);
/* The reaper with an explicit CLOCK_MONOTONIC time in ms, for tests. */
void sched_image_reap(struct sched *s, int64_t now_ms);
/* One batch of the tombstone purge at wall-clock 'now_us', for the cron
 * and tests: returns how many were purged or a negative errno. */
int sched_image_purge(struct sched *s, uint64_t now_us);
int sched_image_create(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_upload(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_download(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_update(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_delete(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_deactivate(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_reactivate(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_member_add(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_member_remove(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_member_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_image_member_set_status(struct sched_call *call, const ProtobufCMessage *req);

/* audit.c: who did what, when, with which result, in the "audit" database
 * (key: big-endian time_us then the request id, so keys sort by time).
 * sched_audit writes one record in its own write transaction, for
 * failures (the failed change's transaction was aborted) and for calls
 * that change nothing in the store; it logs, and never fails the call.
 * sched_audit_txn adds the record to the caller's write transaction, so
 * that a change and its record commit together. Both take 'result' as 0
 * or a negative code and 'detail' as a sentence or NULL. */
void sched_audit(struct sched_call *call, const char *operation, const char *target, int result,
                 const char *detail);
int sched_audit_txn(struct yun_txn *txn, const struct sched_call *call, const char *operation,
                    const char *target, int result, const char *detail);
/* The scheduler's own actions (reaped uploads, crash recovery): user
 * "scheduler", no request. 'txn' may be NULL for a transaction of its own. */
int sched_audit_system(struct sched *s, struct yun_txn *txn, const char *operation,
                       const char *target, int result, const char *detail);
int sched_audit_list(struct sched_call *call, const ProtobufCMessage *req);
/* Drops records older than the retention; run from the cron timer. */
void sched_audit_cron(struct sched *s);
