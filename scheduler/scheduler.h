/* SPDX-License-Identifier: Apache-2.0
 * scheduler.h: the yun-scheduler daemon's shared state and the pieces its
 * modules offer each other: config (config.c), peers and keys (peers.c),
 * the dispatch table (dispatch.c), hosts (host.c), the image registry
 * (image.c, bytes behind image-store.h) and the audit log (audit.c). */
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
struct yun_txn;

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
    char *image_dir;                  /* "" = <state_dir>/images */
    uint32_t image_chunk_size;        /* bytes of image data per message */
    uint32_t image_upload_idle_timeout_s;
    uint32_t image_max_virtual_size_gb;
    uint32_t image_max_uploads;       /* upload sessions open at once */
    uint32_t image_max_per_project;   /* image records per owner (deleted ones excepted) */
    uint32_t audit_retention_days;    /* 0 = keep forever */
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
    int cron;
};

/* The record databases of the scheduler's store. */
extern const char *const sched_store_dbs[];

int sched_store_open(struct sched *s);

/* peers.c: who may speak on the bus. */
int sched_peer_issue(struct sched *s, const char *id, const char *kind, bool rotate,
                     uint32_t *ret_epoch);
int sched_peer_revoke(struct sched *s, const char *id, uint32_t *ret_epoch);
/* The yun_bus_key_fn of the scheduler's bus server. */
int sched_peer_key(const char *key_id, uint32_t epoch, struct yun_key *ret, int *ret_kind,
                   void *data);
struct sched_keycache *sched_keycache_free(struct sched_keycache *c);

/* dispatch.c: the one table every request goes through. */
int sched_dispatch(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
                   uint8_t **ret_reply, size_t *ret_size, void *data);
void sched_dispatch_reject(int code, const struct yun_envelope_in *in, void *data);

/* Helpers for handlers: state the reply or the error of the call. */
struct sched_call {
    struct sched *s;
    const struct yun_bus_peer *peer;
    int peer_kind;               /* Yun__PeerRecord__Kind */
    const char *req;             /* request id, for logs */
    /* Who acts: until identity lands every operator client acts as an
     * admin of project "admin", and agents as themselves with no project.
     * Handlers decide ownership and visibility from these fields only. */
    const char *user;
    const char *project;
    bool is_admin;
    int error;
    char *error_message;
    uint8_t *payload;
    size_t payload_size;
    bool reply_on_error;         /* send 'payload' along with the error */
    bool audited;                /* the handler wrote this call's audit record */
};
int sched_call_reply(struct sched_call *call, const ProtobufCMessage *reply);
/* Takes 'payload' (malloc'ed, already packed) as the reply: for handlers
 * that build their reply in place, such as image downloads. */
void sched_call_reply_take(struct sched_call *call, uint8_t *payload, size_t size);
int sched_call_error(struct sched_call *call, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* host.c */
int sched_host_register(struct sched_call *call, const ProtobufCMessage *req);
int sched_host_heartbeat(struct sched_call *call, const ProtobufCMessage *req);
int sched_host_list(struct sched_call *call, const ProtobufCMessage *req);
int sched_host_show(struct sched_call *call, const ProtobufCMessage *req);
int sched_host_set_enabled(struct sched_call *call, const ProtobufCMessage *req);
/* Marks hosts down whose heartbeats stopped. Run from the cron timer. */
void sched_host_check_liveness(struct sched *s);

/* image.c: the image registry (Glance's role). Records live in "images"
 * with the name index "image_names"; bytes live behind image-store.h.
 * sched_image_init runs after sched_store_open and before serving: it
 * opens the byte store and recovers from a crash (no image stays in
 * saving, no partial or orphan bytes remain). sched_image_done kills the
 * uploads in progress the same way and frees the module. */
int sched_image_init(struct sched *s);
void sched_image_done(struct sched *s);
/* Reaps idle uploads; run from the cron timer. */
void sched_image_cron(struct sched *s);
/* The reaper with an explicit CLOCK_MONOTONIC time in ms, for tests. */
void sched_image_reap(struct sched *s, int64_t now_ms);
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
