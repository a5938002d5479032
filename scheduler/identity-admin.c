/* SPDX-License-Identifier: Apache-2.0
 * identity-admin.c: projects, users and role assignments (Keystone's
 * admin API). Only admins reach these handlers (the dispatch table says
 * so). Every change commits with its audit record and, where it takes
 * rights away, with the revocation of the tokens that carried them:
 * disabling or deleting a user or a project, changing a password, and
 * removing a role. Passwords are hashed on the worker pool, never on the
 * loop; the change then commits when the hash is back.
 *
 * Records and keys are in docs/identity.md and proto/identity.proto.
 * Neighbours: identity.c (look-ups, revocations), keypair.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "dispatch-priv.h"
#include "err.h"
#include "identity-priv.h"
#include "log.h"
#include "network.h"
#include "password.h"
#include "scheduler.h"
#include "seal.h"
#include "store.h"
#include "token.h"
#include "util.h"

YUN_LOG_MODULE("sched.identity");

#define LIST_MAX 100000

/* "a NUL b NUL c" into 'buf'; returns its size, 0 when it does not fit. */
static size_t
triple_key(const char *a, const char *b, const char *c, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s%c%s%c%s", a, 0, b, 0, c);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

static bool
text_ok(const char *s, size_t max)
{
    if (!*s)
        return true;
    if (strlen(s) > max)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static bool
email_ok(const char *s)
{
    if (!*s)
        return true;
    const char *at = strchr(s, '@');
    return text_ok(s, SCHED_EMAIL_MAX) && at && at != s && at[1] && !strchr(s, ' ');
}

static int
error_no_project(struct sched_call *call, const char *ref)
{
    return sched_call_error(call, -ENOENT, "Project '%.255s' not found.", ref);
}

static int
error_no_user(struct sched_call *call, const char *ref)
{
    return sched_call_error(call, -ENOENT, "User '%.255s' not found.", ref);
}

/* Commits 'txn' with the call's audit record: the change and its record
 * go together or not at all. */
static int
commit_audited(struct sched_call *call, struct yun_txn *txn, const char *target)
{
    int r = sched_audit_txn(txn, call, call->op ? call->op->name : "identity", target, 0, NULL);
    if (r < 0) {
        yun_txn_abort(txn);
        return r;
    }
    r = yun_txn_commit(txn);
    if (r == 0)
        call->audited = true;
    return r;
}

static int
begin(struct sched_call *call, bool write, struct yun_txn **ret)
{
    return yun_txn_begin(call->s->store, write, ret);
}

/* --- projects --------------------------------------------------------------- */

static int
project_reply(struct sched_call *call, const Yun__ProjectRecord *p)
{
    Yun__ProjectReply y = YUN__PROJECT_REPLY__INIT;
    y.project = (Yun__ProjectRecord *)p;
    return sched_call_reply(call, &y.base);
}

int
sched_project_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ProjectCreateRequest *q = (const Yun__ProjectCreateRequest *)req;
    if (!sched_identity_name_valid(q->name))
        return sched_call_error(call, YUN_E_INVALID,
                                "'%.255s' is not a valid project name: give 1 to %d bytes of "
                                "text, not a UUID.", q->name, SCHED_NAME_MAX);
    if (!text_ok(q->description, SCHED_DESCRIPTION_MAX))
        return sched_call_error(call, YUN_E_INVALID, "The description is not valid text of at "
                                "most %d bytes.", SCHED_DESCRIPTION_MAX);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, true, &txn);
    if (r < 0)
        return r;
    _cleanup_project_ Yun__ProjectRecord *old = NULL;
    r = sched_project_find(txn, q->name, &old);
    if (r == 0)
        return sched_call_error(call, -EEXIST, "Project '%s' exists.", q->name);
    if (r != -ENOENT)
        return r;
    char id[YUN_UUID_STR_SIZE];
    r = yun_uuid_new(id);
    if (r < 0)
        return r;
    uint64_t now = yun_wall_us();
    Yun__ProjectRecord p = YUN__PROJECT_RECORD__INIT;
    p.id = id;
    p.name = q->name;
    p.domain = (char *)SCHED_DOMAIN;
    p.description = q->description;
    p.enabled = !q->disabled;
    p.created_us = p.updated_us = now;
    r = sched_project_put(txn, &p);
    if (r == 0)
        r = commit_audited(call, TAKE_PTR(txn), id);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "project created project=%s name=\"%s\"", id, p.name);
    return project_reply(call, &p);
}

struct record_list {
    ProtobufCMessage **items;
    size_t n, cap;
    const ProtobufCMessageDescriptor *desc;
};

static void
record_list_done(struct record_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        protobuf_c_message_free_unpacked(l->items[i], NULL);
    free(l->items);
}

static int
record_list_add(struct record_list *l, ProtobufCMessage *m)
{
    if (l->n == l->cap) {
        if (l->n >= LIST_MAX)
            return -E2BIG;
        size_t cap = l->cap ? 2 * l->cap : 16;
        ProtobufCMessage **items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return -ENOMEM;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = m;
    return 0;
}

static int
collect_record(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct record_list *l = data;
    ProtobufCMessage *m = protobuf_c_message_unpack(l->desc, NULL, val_size, val);
    if (!m)
        return -EBADMSG;
    int r = record_list_add(l, m);
    if (r < 0)
        protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

static int
compare_project_names(const void *a, const void *b)
{
    const Yun__ProjectRecord *x = *(Yun__ProjectRecord *const *)a;
    const Yun__ProjectRecord *y = *(Yun__ProjectRecord *const *)b;
    return strcmp(x->name, y->name);
}

static int
compare_user_names(const void *a, const void *b)
{
    const Yun__UserRecord *x = *(Yun__UserRecord *const *)a;
    const Yun__UserRecord *y = *(Yun__UserRecord *const *)b;
    return strcmp(x->name, y->name);
}

int
sched_project_list(struct sched_call *call, const ProtobufCMessage *req)
{
    _cleanup_(record_list_done) struct record_list l = {
        .desc = &yun__project_record__descriptor,
    };
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, false, &txn);
    if (r < 0)
        return r;
    r = yun_txn_iterate(txn, "projects", NULL, 0, collect_record, &l);
    if (r < 0)
        return r;
    qsort(l.items, l.n, sizeof *l.items, compare_project_names);
    Yun__ProjectListReply y = YUN__PROJECT_LIST_REPLY__INIT;
    y.projects = (Yun__ProjectRecord **)l.items;
    y.n_projects = l.n;
    return sched_call_reply(call, &y.base);
}

int
sched_project_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ProjectRef *q = (const Yun__ProjectRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, false, &txn);
    if (r < 0)
        return r;
    _cleanup_project_ Yun__ProjectRecord *p = NULL;
    r = sched_project_find(txn, q->project, &p);
    if (r == -ENOENT)
        return error_no_project(call, q->project);
    if (r < 0)
        return r;
    return project_reply(call, p);
}

int
sched_project_set(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ProjectSetRequest *q = (const Yun__ProjectSetRequest *)req;
    if (*q->name && !sched_identity_name_valid(q->name))
        return sched_call_error(call, YUN_E_INVALID, "'%.255s' is not a valid project name.",
                                q->name);
    if (q->set_description && !text_ok(q->description, SCHED_DESCRIPTION_MAX))
        return sched_call_error(call, YUN_E_INVALID, "The description is not valid text of at "
                                "most %d bytes.", SCHED_DESCRIPTION_MAX);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, true, &txn);
    if (r < 0)
        return r;
    _cleanup_project_ Yun__ProjectRecord *p = NULL;
    r = sched_project_find(txn, q->project, &p);
    if (r == -ENOENT)
        return error_no_project(call, q->project);
    if (r < 0)
        return r;
    if (*q->name && strcmp(q->name, p->name) != 0) {
        if (strcmp(p->name, SCHED_ADMIN_PROJECT) == 0)
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "The '%s' project keeps its name.", SCHED_ADMIN_PROJECT);
        _cleanup_project_ Yun__ProjectRecord *other = NULL;
        r = sched_project_find(txn, q->name, &other);
        if (r == 0)
            return sched_call_error(call, -EEXIST, "Project '%s' exists.", q->name);
        if (r != -ENOENT)
            return r;
        r = yun_txn_del(txn, "project_names", p->name, strlen(p->name));
        if (r < 0)
            return r;
        if ((r = sched_pb_set_string(&p->name, q->name)) < 0)
            return r;
    }
    if (q->set_description) {
        if ((r = sched_pb_set_string(&p->description, q->description)) < 0)
            return r;
    }
    if (q->set_enabled && p->enabled && !q->enabled) {
        r = sched_revoke_tokens(call->s, txn, "", p->id, "project disabled");
        if (r < 0)
            return r;
    }
    if (q->set_enabled)
        p->enabled = q->enabled;
    p->updated_us = yun_wall_us();
    r = sched_project_put(txn, p);
    if (r == 0)
        r = commit_audited(call, TAKE_PTR(txn), p->id);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "project changed project=%s", p->id);
    return project_reply(call, p);
}

struct key_list {
    char **keys;
    size_t *sizes;
    size_t n, cap;
    const char *prefix;
    size_t prefix_size;
};

static void
key_list_done(struct key_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->keys[i]);
    free(l->keys);
    free(l->sizes);
}

/* Collects the keys that start with the prefix (the scan starts at it). */
static int
collect_prefixed(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct key_list *l = data;
    if (key_size < l->prefix_size || memcmp(key, l->prefix, l->prefix_size) != 0)
        return 1;
    if (l->n == l->cap) {
        if (l->n >= LIST_MAX)
            return -E2BIG;
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **keys = realloc(l->keys, cap * sizeof *keys);
        if (!keys)
            return -ENOMEM;
        l->keys = keys;
        size_t *sizes = realloc(l->sizes, cap * sizeof *sizes);
        if (!sizes)
            return -ENOMEM;
        l->sizes = sizes;
        l->cap = cap;
    }
    char *k = malloc(key_size + 1);
    if (!k)
        return -ENOMEM;
    memcpy(k, key, key_size);
    k[key_size] = '\0';
    l->keys[l->n] = k;
    l->sizes[l->n++] = key_size;
    return 0;
}

static int
keys_with_prefix(struct yun_txn *txn, const char *db, const char *prefix, size_t prefix_size,
                 struct key_list *ret)
{
    ret->prefix = prefix;
    ret->prefix_size = prefix_size;
    return yun_txn_iterate(txn, db, prefix, prefix_size, collect_prefixed, ret);
}

/* Splits "a NUL b NUL c" (of 'size' bytes) into its three parts. */
static bool
split_triple(const char *key, size_t size, const char **a, const char **b, const char **c)
{
    const char *end = key + size;
    *a = key;
    const char *z = memchr(key, 0, size);
    if (!z)
        return false;
    *b = z + 1;
    z = memchr(*b, 0, (size_t)(end - *b));
    if (!z)
        return false;
    *c = z + 1;
    return true;
}

/* Deletes the assignments in 'l' (keys of "assignments" when 'by_user',
 * else of "assignments_by_project") and their index entries. */
static int
delete_assignments(struct yun_txn *txn, const struct key_list *l, bool by_user)
{
    for (size_t i = 0; i < l->n; i++) {
        const char *a, *b, *c;
        if (!split_triple(l->keys[i], l->sizes[i], &a, &b, &c))
            continue;
        char other[2 * YUN_TOKEN_ID_MAX + YUN_TOKEN_ROLE_MAX + 4];
        size_t n = triple_key(b, a, c, other, sizeof other);
        int r = yun_txn_del(txn, by_user ? "assignments" : "assignments_by_project",
                            l->keys[i], l->sizes[i]);
        if (r == 0 && n)
            r = yun_txn_del(txn, by_user ? "assignments_by_project" : "assignments", other, n);
        if (r < 0 && r != -ENOENT)
            return r;
    }
    return 0;
}

int
sched_project_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ProjectRef *q = (const Yun__ProjectRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, true, &txn);
    if (r < 0)
        return r;
    _cleanup_project_ Yun__ProjectRecord *p = NULL;
    r = sched_project_find(txn, q->project, &p);
    if (r == -ENOENT)
        return error_no_project(call, q->project);
    if (r < 0)
        return r;
    if (strcmp(p->name, SCHED_ADMIN_PROJECT) == 0)
        return sched_call_error(call, YUN_E_CONFLICT, "The '%s' project cannot be deleted.",
                                SCHED_ADMIN_PROJECT);
    /* Its network objects go first (its default group with it). */
    r = network_project_delete(call->s, txn, p->id);
    if (r == YUN_E_INUSE)
        return sched_call_error(call, r,
                                "Project '%s' still owns networks, ports or security groups: "
                                "delete them first.", p->name);
    if (r < 0)
        return r;
    char prefix[YUN_TOKEN_ID_MAX + 2];
    int n = snprintf(prefix, sizeof prefix, "%s%c", p->id, 0);
    _cleanup_(key_list_done) struct key_list l = { 0 };
    r = keys_with_prefix(txn, "assignments_by_project", prefix, (size_t)n, &l);
    if (r == 0)
        r = delete_assignments(txn, &l, false);
    if (r == 0)
        r = yun_txn_del(txn, "projects", p->id, strlen(p->id));
    if (r == 0)
        r = yun_txn_del(txn, "project_names", p->name, strlen(p->name));
    if (r == 0)
        r = sched_revoke_tokens(call->s, txn, "", p->id, "project deleted");
    if (r == 0)
        r = commit_audited(call, TAKE_PTR(txn), p->id);
    if (r < 0)
        return r;
    log_req(YUN_LOG_NOTICE, call->req, 0, "project deleted project=%s name=\"%s\" roles=%zu",
            p->id, p->name, l.n);
    return project_reply(call, p);
}

/* --- users ------------------------------------------------------------------ */

/* A user change with a password to hash first, on the pool. */
struct user_job {
    char *password;         /* wiped by the work */
    char *hash;             /* the work's result */
    struct yun_password_params params;
    ProtobufCMessage *req;  /* a copy of the request, minus the password */
};

static void
user_job_free(void *data)
{
    struct user_job *j = data;
    if (!j)
        return;
    if (j->password) {
        yun_wipe(j->password, strlen(j->password));
        free(j->password);
    }
    free(j->hash);
    if (j->req)
        protobuf_c_message_free_unpacked(j->req, NULL);
    free(j);
}

static int
user_job_work(void *data)
{
    struct user_job *j = data;
    int r = yun_password_hash_with(j->password, &j->params, &j->hash);
    yun_wipe(j->password, strlen(j->password));
    return r;
}

/* Copies 'req' without its password (wiped in place, as is the copy's
 * source) into a job, with the password apart. */
static int
user_job_new(struct sched_call *call, const ProtobufCMessage *req, char *password,
             struct user_job **ret)
{
    struct user_job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->params = *sched_identity_hash_params(call->s);
    j->password = strdup(password);
    yun_wipe(password, strlen(password));
    size_t size = protobuf_c_message_get_packed_size(req);
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (!j->password || !buf) {
        user_job_free(j);
        return -ENOMEM;
    }
    protobuf_c_message_pack(req, buf);
    j->req = protobuf_c_message_unpack(req->descriptor, NULL, size, buf);
    if (!j->req) {
        user_job_free(j);
        return -ENOMEM;
    }
    *ret = j;
    return 0;
}

static int
password_check(struct sched_call *call, char *password)
{
    size_t n = strlen(password);
    if (n > YUN_PASSWORD_MAX_SIZE) {
        yun_wipe(password, n);
        return sched_call_error(call, YUN_E_INVALID, "Give a password of 1 to %d bytes.",
                                YUN_PASSWORD_MAX_SIZE);
    }
    return 0;
}

static int
user_create_apply(struct sched_call *call, const Yun__UserCreateRequest *q, const char *hash)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, true, &txn);
    if (r < 0)
        return r;
    _cleanup_user_ Yun__UserRecord *old = NULL;
    r = sched_user_find(txn, q->name, &old);
    if (r == 0)
        return sched_call_error(call, -EEXIST, "User '%s' exists.", q->name);
    if (r != -ENOENT)
        return r;
    _cleanup_project_ Yun__ProjectRecord *p = NULL;
    if (*q->default_project) {
        r = sched_project_find(txn, q->default_project, &p);
        if (r == -ENOENT)
            return error_no_project(call, q->default_project);
        if (r < 0)
            return r;
    }
    char id[YUN_UUID_STR_SIZE];
    r = yun_uuid_new(id);
    if (r < 0)
        return r;
    uint64_t now = yun_wall_us();
    Yun__UserRecord u = YUN__USER_RECORD__INIT;
    u.id = id;
    u.name = q->name;
    u.domain = (char *)SCHED_DOMAIN;
    u.password_hash = (char *)(hash ? hash : "");
    u.enabled = !q->disabled;
    u.email = q->email;
    u.default_project_id = p ? p->id : (char *)"";
    u.created_us = u.updated_us = now;
    u.password_changed_us = hash ? now : 0;
    r = sched_user_put(txn, &u);
    if (r == 0)
        r = commit_audited(call, TAKE_PTR(txn), id);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "user created user=%s name=\"%s\"", id, u.name);
    return sched_user_reply(call, &u);
}

static int
user_create_resume(struct sched_call *call, int result, void *data)
{
    struct user_job *j = data;
    if (result < 0)
        return sched_call_error(call, result, "Cannot hash the password: %s.",
                                yun_strerror(result));
    return user_create_apply(call, (const Yun__UserCreateRequest *)j->req, j->hash);
}

static int
user_fields_check(struct sched_call *call, const char *email)
{
    if (!email_ok(email))
        return sched_call_error(call, YUN_E_INVALID, "'%.255s' is not an e-mail address.",
                                email);
    return 0;
}

static int
defer_user_job(struct sched_call *call, const ProtobufCMessage *req, char *password,
               sched_resume_fn resume)
{
    struct user_job *j = NULL;
    int r = user_job_new(call, req, password, &j);
    if (r < 0)
        return r;
    r = sched_call_defer(call, user_job_work, resume, j, user_job_free);
    if (r < 0) {
        user_job_free(j);
        if (r == -EBUSY)
            return sched_call_error(call, -EBUSY, "The scheduler is busy; try again.");
    }
    return r;
}

int
sched_user_create(struct sched_call *call, const ProtobufCMessage *req)
{
    Yun__UserCreateRequest *q = (Yun__UserCreateRequest *)req;
    int r = password_check(call, q->password);
    if (r < 0)
        return r;
    if (!sched_identity_name_valid(q->name)) {
        yun_wipe(q->password, strlen(q->password));
        return sched_call_error(call, YUN_E_INVALID,
                                "'%.255s' is not a valid user name: give 1 to %d bytes of "
                                "text, not a UUID.", q->name, SCHED_NAME_MAX);
    }
    r = user_fields_check(call, q->email);
    if (r < 0) {
        yun_wipe(q->password, strlen(q->password));
        return r;
    }
    if (!*q->password)
        return user_create_apply(call, q, NULL);
    return defer_user_job(call, req, q->password, user_create_resume);
}

int
sched_user_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__UserListRequest *q = (const Yun__UserListRequest *)req;
    _cleanup_(record_list_done) struct record_list l = { .desc = &yun__user_record__descriptor };
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, false, &txn);
    if (r < 0)
        return r;
    if (*q->project) {
        _cleanup_project_ Yun__ProjectRecord *p = NULL;
        r = sched_project_find(txn, q->project, &p);
        if (r == -ENOENT)
            return error_no_project(call, q->project);
        if (r < 0)
            return r;
        char prefix[YUN_TOKEN_ID_MAX + 2];
        int n = snprintf(prefix, sizeof prefix, "%s%c", p->id, 0);
        _cleanup_(key_list_done) struct key_list keys = { 0 };
        r = keys_with_prefix(txn, "assignments_by_project", prefix, (size_t)n, &keys);
        if (r < 0)
            return r;
        const char *last = "";
        for (size_t i = 0; i < keys.n; i++) {
            const char *a, *b, *c;
            if (!split_triple(keys.keys[i], keys.sizes[i], &a, &b, &c) || !strcmp(b, last))
                continue;
            last = b;
            Yun__UserRecord *u = NULL;
            r = sched_user_find(txn, b, &u);
            if (r == -ENOENT)
                continue;
            if (r == 0)
                r = record_list_add(&l, &u->base);
            if (r < 0) {
                if (u)
                    yun__user_record__free_unpacked(u, NULL);
                return r;
            }
        }
    } else {
        r = yun_txn_iterate(txn, "users", NULL, 0, collect_record, &l);
        if (r < 0)
            return r;
    }
    qsort(l.items, l.n, sizeof *l.items, compare_user_names);
    for (size_t i = 0; i < l.n; i++) {
        Yun__UserRecord *u = (Yun__UserRecord *)l.items[i];
        if ((r = sched_pb_set_string(&u->password_hash, "")) < 0)
            return r;
    }
    Yun__UserListReply y = YUN__USER_LIST_REPLY__INIT;
    y.users = (Yun__UserRecord **)l.items;
    y.n_users = l.n;
    return sched_call_reply(call, &y.base);
}

int
sched_user_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__UserRef *q = (const Yun__UserRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, false, &txn);
    if (r < 0)
        return r;
    _cleanup_user_ Yun__UserRecord *u = NULL;
    r = sched_user_find(txn, q->user, &u);
    if (r == -ENOENT)
        return error_no_user(call, q->user);
    if (r < 0)
        return r;
    return sched_user_reply(call, u);
}

static int
replace_string(char **field, const char *value)
{
    return sched_pb_set_string(field, value);
}

/* Applies 'q', with the new password's 'hash' (taken; NULL = none). */
static int
user_set_apply(struct sched_call *call, const Yun__UserSetRequest *q, char *hash_taken)
{
    _cleanup_free_ char *hash = hash_taken;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, true, &txn);
    if (r < 0)
        return r;
    _cleanup_user_ Yun__UserRecord *u = NULL;
    r = sched_user_find(txn, q->user, &u);
    if (r == -ENOENT)
        return error_no_user(call, q->user);
    if (r < 0)
        return r;
    uint64_t now = yun_wall_us();
    const char *revoke = NULL;
    if (*q->name && strcmp(q->name, u->name) != 0) {
        _cleanup_user_ Yun__UserRecord *other = NULL;
        r = sched_user_find(txn, q->name, &other);
        if (r == 0)
            return sched_call_error(call, -EEXIST, "User '%s' exists.", q->name);
        if (r != -ENOENT)
            return r;
        r = yun_txn_del(txn, "user_names", u->name, strlen(u->name));
        if (r == 0)
            r = replace_string(&u->name, q->name);
        if (r < 0)
            return r;
    }
    if (q->set_email && (r = replace_string(&u->email, q->email)) < 0)
        return r;
    if (q->set_default_project) {
        _cleanup_project_ Yun__ProjectRecord *p = NULL;
        if (*q->default_project) {
            r = sched_project_find(txn, q->default_project, &p);
            if (r == -ENOENT)
                return error_no_project(call, q->default_project);
            if (r < 0)
                return r;
        }
        if ((r = replace_string(&u->default_project_id, p ? p->id : "")) < 0)
            return r;
    }
    if (q->set_enabled) {
        if (!q->enabled && u->id && call->user && strcmp(u->id, call->user) == 0)
            return sched_call_error(call, YUN_E_CONFLICT, "You cannot disable yourself.");
        if (u->enabled && !q->enabled)
            revoke = "user disabled";
        u->enabled = q->enabled;
    }
    if (hash) {
        sched_pb_take_string(&u->password_hash, TAKE_PTR(hash));
        u->password_changed_us = now;
        u->failed_logins = 0;
        u->locked_until_us = 0;
        revoke = "password changed";
    }
    if (q->unlock) {
        u->failed_logins = 0;
        u->locked_until_us = 0;
    }
    u->updated_us = now;
    r = sched_user_put(txn, u);
    if (r == 0 && revoke)
        r = sched_revoke_tokens(call->s, txn, u->id, "", revoke);
    if (r == 0)
        r = commit_audited(call, TAKE_PTR(txn), u->id);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "user changed user=%s%s%s", u->id,
            revoke ? " revoked=" : "", revoke ? "tokens" : "");
    return sched_user_reply(call, u);
}

static int
user_set_resume(struct sched_call *call, int result, void *data)
{
    struct user_job *j = data;
    if (result < 0)
        return sched_call_error(call, result, "Cannot hash the password: %s.",
                                yun_strerror(result));
    /* The record takes the hash. */
    return user_set_apply(call, (const Yun__UserSetRequest *)j->req, TAKE_PTR(j->hash));
}

int
sched_user_set(struct sched_call *call, const ProtobufCMessage *req)
{
    Yun__UserSetRequest *q = (Yun__UserSetRequest *)req;
    int r = password_check(call, q->password);
    if (r < 0)
        return r;
    if (*q->name && !sched_identity_name_valid(q->name)) {
        yun_wipe(q->password, strlen(q->password));
        return sched_call_error(call, YUN_E_INVALID, "'%.255s' is not a valid user name.",
                                q->name);
    }
    if (q->set_email && (r = user_fields_check(call, q->email)) < 0) {
        yun_wipe(q->password, strlen(q->password));
        return r;
    }
    if (!*q->password)
        return user_set_apply(call, q, NULL);
    return defer_user_job(call, req, q->password, user_set_resume);
}

int
sched_user_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__UserRef *q = (const Yun__UserRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, true, &txn);
    if (r < 0)
        return r;
    _cleanup_user_ Yun__UserRecord *u = NULL;
    r = sched_user_find(txn, q->user, &u);
    if (r == -ENOENT)
        return error_no_user(call, q->user);
    if (r < 0)
        return r;
    if (call->user && strcmp(u->id, call->user) == 0)
        return sched_call_error(call, YUN_E_CONFLICT, "You cannot delete yourself.");
    char prefix[YUN_TOKEN_ID_MAX + 2];
    int n = snprintf(prefix, sizeof prefix, "%s%c", u->id, 0);
    _cleanup_(key_list_done) struct key_list roles = { 0 };
    _cleanup_(key_list_done) struct key_list keypairs = { 0 };
    r = keys_with_prefix(txn, "assignments", prefix, (size_t)n, &roles);
    if (r == 0)
        r = delete_assignments(txn, &roles, true);
    if (r == 0)
        r = keys_with_prefix(txn, "keypairs", prefix, (size_t)n, &keypairs);
    for (size_t i = 0; r == 0 && i < keypairs.n; i++)
        r = yun_txn_del(txn, "keypairs", keypairs.keys[i], keypairs.sizes[i]);
    if (r == 0)
        r = yun_txn_del(txn, "users", u->id, strlen(u->id));
    if (r == 0)
        r = yun_txn_del(txn, "user_names", u->name, strlen(u->name));
    if (r == 0)
        r = sched_revoke_tokens(call->s, txn, u->id, "", "user deleted");
    if (r == 0)
        r = commit_audited(call, TAKE_PTR(txn), u->id);
    if (r < 0)
        return r;
    log_req(YUN_LOG_NOTICE, call->req, 0,
            "user deleted user=%s name=\"%s\" roles=%zu keypairs=%zu", u->id, u->name, roles.n,
            keypairs.n);
    return sched_user_reply(call, u);
}

/* --- role assignments -------------------------------------------------------- */

struct assignment_refs {
    Yun__UserRecord *user;
    Yun__ProjectRecord *project;
    unsigned role;
};

static void
assignment_refs_done(struct assignment_refs *a)
{
    sched_user_freep(&a->user);
    sched_project_freep(&a->project);
}

static int
resolve_assignment(struct sched_call *call, struct yun_txn *txn,
                   const Yun__RoleAssignmentRequest *q, struct assignment_refs *ret)
{
    ret->role = sched_role_from_string(q->role);
    if (!ret->role)
        return sched_call_error(call, YUN_E_INVALID,
                                "Unknown role '%.32s': use admin, member or reader.", q->role);
    int r = sched_user_find(txn, q->user, &ret->user);
    if (r == -ENOENT)
        return error_no_user(call, q->user);
    if (r < 0)
        return r;
    r = sched_project_find(txn, q->project, &ret->project);
    if (r == -ENOENT)
        return error_no_project(call, q->project);
    return r;
}

static int
assignment_reply(struct sched_call *call, const struct assignment_refs *a, const char *role,
                 uint64_t created_us)
{
    Yun__RoleAssignment ra = YUN__ROLE_ASSIGNMENT__INIT;
    ra.user_id = a->user->id;
    ra.user_name = a->user->name;
    ra.project_id = a->project->id;
    ra.project_name = a->project->name;
    ra.role = (char *)role;
    ra.created_us = created_us;
    Yun__RoleAssignment *list[] = { &ra };
    Yun__RoleAssignmentListReply y = YUN__ROLE_ASSIGNMENT_LIST_REPLY__INIT;
    y.assignments = list;
    y.n_assignments = 1;
    return sched_call_reply(call, &y.base);
}

int
sched_role_add(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__RoleAssignmentRequest *q = (const Yun__RoleAssignmentRequest *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, true, &txn);
    if (r < 0)
        return r;
    _cleanup_(assignment_refs_done) struct assignment_refs a = { 0 };
    r = resolve_assignment(call, txn, q, &a);
    if (r < 0)
        return r;
    const char *role = sched_role_to_string(a.role);
    unsigned have = 0;
    r = sched_assigned_roles(txn, a.user->id, a.project->id, &have);
    if (r == 0 && !(have & a.role))
        r = sched_assignment_put(txn, a.user->id, a.project->id, role);
    if (r == 0)
        r = commit_audited(call, TAKE_PTR(txn), a.user->id);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "role added user=%s project=%s role=%s", a.user->id,
            a.project->id, role);
    return assignment_reply(call, &a, role, yun_wall_us());
}

int
sched_role_remove(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__RoleAssignmentRequest *q = (const Yun__RoleAssignmentRequest *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, true, &txn);
    if (r < 0)
        return r;
    _cleanup_(assignment_refs_done) struct assignment_refs a = { 0 };
    r = resolve_assignment(call, txn, q, &a);
    if (r < 0)
        return r;
    const char *role = sched_role_to_string(a.role);
    char key[2 * YUN_TOKEN_ID_MAX + YUN_TOKEN_ROLE_MAX + 4];
    size_t n = triple_key(a.user->id, a.project->id, role, key, sizeof key);
    r = n ? yun_txn_del(txn, "assignments", key, n) : -EINVAL;
    if (r == -ENOENT)
        return sched_call_error(call, -ENOENT, "User '%s' has no role '%s' on project '%s'.",
                                a.user->name, role, a.project->name);
    n = r == 0 ? triple_key(a.project->id, a.user->id, role, key, sizeof key) : 0;
    if (n) {
        r = yun_txn_del(txn, "assignments_by_project", key, n);
        if (r == -ENOENT)
            r = 0;
    }
    /* Tokens name the roles they were issued with: every token of this
     * user in this project goes, including those issued for its other
     * roles, which a new login gives back. */
    if (r == 0)
        r = sched_revoke_tokens(call->s, txn, a.user->id, a.project->id, "role removed");
    if (r == 0)
        r = commit_audited(call, TAKE_PTR(txn), a.user->id);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "role removed user=%s project=%s role=%s",
            a.user->id, a.project->id, role);
    return assignment_reply(call, &a, role, 0);
}

struct assignment_scan {
    struct yun_txn *txn;
    const char *prefix;
    size_t prefix_size;
    bool by_project;          /* keys are "project NUL user NUL role" */
    const char *project_id;   /* filter when scanning by user; NULL = any */
    Yun__RoleAssignment **items;
    size_t n, cap;
};

static void
assignment_scan_done(struct assignment_scan *sc)
{
    for (size_t i = 0; i < sc->n; i++)
        yun__role_assignment__free_unpacked(sc->items[i], NULL);
    free(sc->items);
}

/* Fills in the names of an assignment's user and project. */
static int
name_assignment(struct yun_txn *txn, Yun__RoleAssignment *a)
{
    _cleanup_user_ Yun__UserRecord *u = NULL;
    _cleanup_project_ Yun__ProjectRecord *p = NULL;
    int r = sched_user_find(txn, a->user_id, &u);
    if (r == 0)
        r = replace_string(&a->user_name, u->name);
    else if (r == -ENOENT)
        r = 0;
    if (r < 0)
        return r;
    r = sched_project_find(txn, a->project_id, &p);
    if (r == 0)
        r = replace_string(&a->project_name, p->name);
    else if (r == -ENOENT)
        r = 0;
    return r;
}

static int
collect_assignment(const void *key, size_t key_size, const void *val, size_t val_size,
                   void *data)
{
    struct assignment_scan *sc = data;
    if (key_size < sc->prefix_size || memcmp(key, sc->prefix, sc->prefix_size) != 0)
        return 1;
    const char *a, *b, *c;
    if (!split_triple(key, key_size, &a, &b, &c))
        return 0;
    const char *user = sc->by_project ? b : a, *project = sc->by_project ? a : b;
    if (sc->project_id && strcmp(project, sc->project_id) != 0)
        return 0;
    const void *v = val;
    size_t vs = val_size;
    if (sc->by_project) {
        char k[2 * YUN_TOKEN_ID_MAX + YUN_TOKEN_ROLE_MAX + 4];
        size_t n = triple_key(user, project, c, k, sizeof k);
        if (!n || yun_txn_get(sc->txn, "assignments", k, n, &v, &vs) < 0)
            return 0;
    }
    Yun__RoleAssignment *ra = yun__role_assignment__unpack(NULL, vs, v);
    if (!ra)
        return -EBADMSG;
    if (sc->n == sc->cap) {
        size_t cap = sc->cap ? 2 * sc->cap : 16;
        Yun__RoleAssignment **items =
            sc->n < LIST_MAX ? realloc(sc->items, cap * sizeof *items) : NULL;
        if (!items) {
            yun__role_assignment__free_unpacked(ra, NULL);
            return sc->n < LIST_MAX ? -ENOMEM : -E2BIG;
        }
        sc->items = items;
        sc->cap = cap;
    }
    sc->items[sc->n++] = ra;
    return name_assignment(sc->txn, ra);
}

int
sched_role_assignment_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__RoleAssignmentListRequest *q = (const Yun__RoleAssignmentListRequest *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin(call, false, &txn);
    if (r < 0)
        return r;
    _cleanup_user_ Yun__UserRecord *u = NULL;
    _cleanup_project_ Yun__ProjectRecord *p = NULL;
    if (*q->user) {
        r = sched_user_find(txn, q->user, &u);
        if (r == -ENOENT)
            return error_no_user(call, q->user);
        if (r < 0)
            return r;
    }
    if (*q->project) {
        r = sched_project_find(txn, q->project, &p);
        if (r == -ENOENT)
            return error_no_project(call, q->project);
        if (r < 0)
            return r;
    }
    char prefix[YUN_TOKEN_ID_MAX + 2] = "";
    _cleanup_(assignment_scan_done) struct assignment_scan sc = { .txn = txn, .prefix = "" };
    const char *db = "assignments";
    if (u) {
        sc.prefix_size = (size_t)snprintf(prefix, sizeof prefix, "%s%c", u->id, 0);
        sc.project_id = p ? p->id : NULL;
    } else if (p) {
        sc.prefix_size = (size_t)snprintf(prefix, sizeof prefix, "%s%c", p->id, 0);
        sc.by_project = true;
        db = "assignments_by_project";
    }
    sc.prefix = prefix;
    r = yun_txn_iterate(txn, db, sc.prefix_size ? prefix : NULL, sc.prefix_size,
                        collect_assignment, &sc);
    if (r < 0)
        return r;
    Yun__RoleAssignmentListReply y = YUN__ROLE_ASSIGNMENT_LIST_REPLY__INIT;
    y.assignments = sc.items;
    y.n_assignments = sc.n;
    return sched_call_reply(call, &y.base);
}
