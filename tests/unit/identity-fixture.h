/* SPDX-License-Identifier: Apache-2.0
 * identity-fixture.h: what test-identity.c and test-identity-policy.c
 * share: a struct sched on a fresh state directory under $YUN_TEST_DIR,
 * with token keys, the image registry, identity, a loop and a worker pool,
 * and no bus: requests go straight to sched_dispatch() and deferred
 * replies (logins, password hashes, key generation) come back through
 * s.deferred_reply while the test pumps the loop. Password hashes made
 * here are cheap (the verification cost is read from each hash); the
 * dummy verification of unknown users keeps the default cost. */
#pragma once

#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "identity-priv.h"
#include "log.h"
#include "loop.h"
#include "password.h"
#include "pool.h"
#include "rpc.h"
#include "scheduler.h"
#include "store.h"
#include "token.h"
#include "util.h"
#include "identity.pb-c.h"
#include "image.pb-c.h"
#include "yun.pb-c.h"

#define FIXTURE_FN static __attribute__((unused))
#define PUMP_LIMIT_MS 30000

struct idf {
    char dir[1024];
    char keys[1200];
    struct sched s;
    unsigned seq;
    struct yun_token_keys *keys_copy; /* the repository, to mint tokens with */
    /* The deferred reply of the request in flight. */
    uint64_t handle;
    bool got;
    uint8_t *reply;
    size_t reply_size;
};

/* Who calls: a peer of some kind, with a token for 'user' in 'project'
 * with 'roles' ("admin,member,reader"), or none when 'roles' is NULL. */
struct who {
    const char *peer;
    int kind;
    const char *user;
    const char *project;
    const char *roles;
};

FIXTURE_FN int
idf_remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

FIXTURE_FN void
idf_on_reply(struct sched *s, uint64_t handle, const uint8_t *reply, size_t size, void *data)
{
    struct idf *fx = data;
    assert_int_equal(handle, fx->handle);
    assert_false(fx->got);
    fx->reply = malloc(size + 1);
    assert_non_null(fx->reply);
    memcpy(fx->reply, reply, size);
    fx->reply_size = size;
    fx->got = true;
}

FIXTURE_FN void
idf_reload_keys_copy(struct idf *fx)
{
    fx->keys_copy = yun_token_keys_free(fx->keys_copy);
    assert_int_equal(yun_token_keys_load(fx->keys, &fx->keys_copy), 0);
}

FIXTURE_FN int
idf_setup(void **state)
{
    struct idf *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *base = getenv("YUN_TEST_DIR");
    if (!base || !*base)
        base = "/tmp";
    if (yun_mkdir_p(base, 0755) < 0)
        return -1;
    snprintf(fx->dir, sizeof fx->dir, "%s/identity.XXXXXX", base);
    if (!mkdtemp(fx->dir))
        return -1;
    char *err = NULL;
    if (yun_cfg_load(sched_config_table, sched_config_table_size, &fx->s.cfg, NULL, true, NULL,
                     NULL, &err) < 0) {
        free(err);
        return -1;
    }
    free(fx->s.cfg.state_dir);
    if (asprintf(&fx->s.cfg.state_dir, "%s/state", fx->dir) < 0)
        return -1;
    snprintf(fx->keys, sizeof fx->keys, "%s/token-keys", fx->dir);
    free(fx->s.cfg.token_key_dir);
    fx->s.cfg.token_key_dir = strdup(fx->keys);
    fx->s.cron = -1;
    if (yun_token_keys_create(fx->keys) < 0 || sched_store_open(&fx->s) < 0 ||
        sched_image_init(&fx->s) < 0 || yun_loop_new(&fx->s.loop) < 0 ||
        sched_identity_init(&fx->s) < 0 || sched_compute_init(&fx->s) < 0 ||
        yun_pool_new(fx->s.loop, 2, 64, &fx->s.pool) < 0)
        return -1;
    static const struct yun_password_params cheap = { 4, 8, 1 };
    sched_identity_set_hash_params(&fx->s, &cheap);
    fx->s.deferred_reply = idf_on_reply;
    fx->s.deferred_reply_data = fx;
    idf_reload_keys_copy(fx);
    *state = fx;
    return 0;
}

FIXTURE_FN int
idf_teardown(void **state)
{
    struct idf *fx = *state;
    fx->s.pool = yun_pool_free(fx->s.pool);
    sched_compute_done(&fx->s);
    sched_identity_done(&fx->s);
    sched_image_done(&fx->s);
    fx->s.loop = yun_loop_free(fx->s.loop);
    fx->s.store = yun_store_close(fx->s.store);
    yun_cfg_done(sched_config_table, sched_config_table_size, &fx->s.cfg);
    yun_token_keys_free(fx->keys_copy);
    free(fx->reply);
    int r = nftw(fx->dir, idf_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

/* A token for 'user' in 'project' with the comma-separated 'roles',
 * issued at 'issued_us' and expiring 'ttl_s' later (0: an hour). */
FIXTURE_FN char *
idf_mint_at(struct idf *fx, const char *user, const char *project, const char *roles,
            uint64_t issued_us, int64_t ttl_s)
{
    struct yun_token c = { .issued_at_us = issued_us };
    c.expires_at_us = issued_us + (uint64_t)(ttl_s ? ttl_s : 3600) * 1000000u;
    snprintf(c.user_id, sizeof c.user_id, "%s", user);
    snprintf(c.project_id, sizeof c.project_id, "%s", project);
    char list[128];
    snprintf(list, sizeof list, "%s", roles);
    char *save = NULL;
    for (char *r = strtok_r(list, ",", &save); r; r = strtok_r(NULL, ",", &save))
        snprintf(c.roles[c.n_roles++], sizeof c.roles[0], "%s", r);
    char *token = NULL;
    assert_int_equal(yun_token_issue(fx->keys_copy, &c, &token, NULL), 0);
    return token;
}

FIXTURE_FN char *
idf_mint(struct idf *fx, const char *user, const char *project, const char *roles)
{
    return idf_mint_at(fx, user, project, roles, yun_wall_us(), 0);
}

/* Runs one request of 'op' ('req' of the row's request type) as 'peer'
 * with 'token' (NULL: none), waiting for a deferred reply if need be.
 * Returns the reply's error; '*ret' (when not NULL) gets the payload
 * unpacked as 'rd' when there is one, '*ret_msg' the error message. */
FIXTURE_FN int
idf_call_token(struct idf *fx, const char *peer_id, int kind, const char *token, Yun__Op op,
               const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd, void *ret,
               char **ret_msg)
{
    char reqid[32];
    snprintf(reqid, sizeof reqid, "t-%06u", ++fx->seq);
    struct yun_bus_peer peer = {
        .sender = peer_id, .key_id = peer_id, .request_id = reqid, .role = kind,
        .token = (const uint8_t *)token, .token_size = token ? strlen(token) : 0,
    };
    uint8_t *body = NULL;
    size_t body_size = 0;
    assert_int_equal(yun_rpc_pack_request(op, req, 0, &body, &body_size), 0);
    uint8_t *reply = NULL;
    size_t reply_size = 0;
    int r = sched_dispatch(&peer, body, body_size, &reply, &reply_size, &fx->s);
    free(body);
    if (r == YUN_BUS_DEFERRED) {
        fx->handle = fx->s.next_deferred;
        int64_t end = yun_now_ms() + PUMP_LIMIT_MS;
        while (!fx->got && yun_now_ms() < end)
            (void)yun_loop_run_once(fx->s.loop, 100);
        assert_true(fx->got);
        fx->got = false;
        reply = TAKE_PTR(fx->reply);
        reply_size = fx->reply_size;
    } else {
        assert_int_equal(r, 0);
    }
    Yun__Reply *y = yun__reply__unpack(NULL, reply_size, reply);
    free(reply);
    assert_non_null(y);
    int err = y->error;
    if (ret) {
        *(ProtobufCMessage **)ret = NULL;
        if (y->error == 0 && rd) {
            *(ProtobufCMessage **)ret =
                protobuf_c_message_unpack(rd, NULL, y->payload.len, y->payload.data);
            assert_non_null(*(ProtobufCMessage **)ret);
        }
    }
    if (ret_msg)
        *ret_msg = y->error ? strdup(y->error_message) : NULL;
    yun__reply__free_unpacked(y, NULL);
    return err;
}

/* As idf_call_token with a token minted for 'w' (a fresh one per call). */
FIXTURE_FN int
idf_call(struct idf *fx, const struct who *w, Yun__Op op, const ProtobufCMessage *req,
         const ProtobufCMessageDescriptor *rd, void *ret, char **ret_msg)
{
    _cleanup_free_ char *token = w->roles ? idf_mint(fx, w->user, w->project, w->roles) : NULL;
    return idf_call_token(fx, w->peer, w->kind, token, op, req, rd, ret, ret_msg);
}

FIXTURE_FN void
idf_free_msg(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

FIXTURE_FN void
idf_assert_contains(const char *haystack, const char *needle)
{
    if (!haystack || !strstr(haystack, needle))
        fail_msg("'%s' does not contain '%s'", haystack ? haystack : "(null)", needle);
}

/* The number of records in the audit log. */
FIXTURE_FN size_t
idf_audit_count(struct idf *fx)
{
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, false, &txn), 0);
    size_t n = 0;
    assert_int_equal(yun_txn_count(txn, "audit", &n), 0);
    yun_txn_abort(txn);
    return n;
}

static const struct who IDF_ROOT __attribute__((unused)) = {
    "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, "root", "p-admin", "admin,member,reader",
};

/* Creates project 'name' as an admin; returns its id (malloc'ed). */
FIXTURE_FN char *
idf_project(struct idf *fx, const char *name)
{
    Yun__ProjectCreateRequest q = YUN__PROJECT_CREATE_REQUEST__INIT;
    q.name = (char *)name;
    Yun__ProjectReply *y = NULL;
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_PROJECT_CREATE, &q.base,
                              &yun__project_reply__descriptor, &y, NULL), 0);
    char *id = strdup(y->project->id);
    idf_free_msg(y);
    return id;
}

/* Creates user 'name' with 'password' (NULL: none) and default project
 * 'project' (NULL: none); returns its id. */
FIXTURE_FN char *
idf_user(struct idf *fx, const char *name, const char *password, const char *project)
{
    Yun__UserCreateRequest q = YUN__USER_CREATE_REQUEST__INIT;
    q.name = (char *)name;
    char pw[256] = "";
    snprintf(pw, sizeof pw, "%s", password ? password : "");
    q.password = pw;
    q.default_project = (char *)(project ? project : "");
    Yun__UserReply *y = NULL;
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_CREATE, &q.base,
                              &yun__user_reply__descriptor, &y, NULL), 0);
    assert_string_equal(y->user->password_hash, "");
    char *id = strdup(y->user->id);
    idf_free_msg(y);
    return id;
}

FIXTURE_FN void
idf_role(struct idf *fx, Yun__Op op, const char *role, const char *user, const char *project)
{
    Yun__RoleAssignmentRequest q = YUN__ROLE_ASSIGNMENT_REQUEST__INIT;
    q.role = (char *)role;
    q.user = (char *)user;
    q.project = (char *)project;
    assert_int_equal(idf_call(fx, &IDF_ROOT, op, &q.base, NULL, NULL, NULL), 0);
}

/* Logs in; returns the error, and the token in '*ret_token' on success. */
FIXTURE_FN int
idf_login(struct idf *fx, const char *user, const char *password, const char *project,
          char **ret_token, char **ret_msg)
{
    Yun__LoginRequest q = YUN__LOGIN_REQUEST__INIT;
    char pw[256];
    snprintf(pw, sizeof pw, "%s", password);
    q.user = (char *)user;
    q.password = pw;
    q.project = (char *)(project ? project : "");
    Yun__LoginReply *y = NULL;
    int r = idf_call_token(fx, "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, NULL,
                           YUN__OP__OP_LOGIN, &q.base, &yun__login_reply__descriptor, &y,
                           ret_msg);
    /* The dispatcher wipes the password of the request it decoded, not ours. */
    if (r == 0) {
        if (ret_token)
            *ret_token = strdup(y->token);
        idf_free_msg(y);
    }
    return r;
}

/* A read with 'token': image.list. Returns the error. */
FIXTURE_FN int
idf_use(struct idf *fx, const char *token, char **ret_msg)
{
    Yun__ImageListRequest q = YUN__IMAGE_LIST_REQUEST__INIT;
    return idf_call_token(fx, "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, token,
                          YUN__OP__OP_IMAGE_LIST, &q.base, NULL, NULL, ret_msg);
}
