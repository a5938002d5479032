/* SPDX-License-Identifier: Apache-2.0
 * scheduler.h: the yun-scheduler daemon's shared state and the pieces its
 * modules offer each other: config (config.c), peers and keys (peers.c),
 * the dispatch table (dispatch.c), hosts (host.c). */
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
};
int sched_call_reply(struct sched_call *call, const ProtobufCMessage *reply);
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
