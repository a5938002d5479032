/* SPDX-License-Identifier: Apache-2.0
 * identity.c: who a request comes from (Keystone's role). Holds the token
 * keys and the revocation list in memory, so that authenticating a
 * request (sched_identity_authenticate, on every operator request) reads
 * no database and costs a few microseconds; serves login and logout; and
 * offers the record look-ups and revocations the other identity modules
 * share (identity-priv.h).
 *
 * Logins check a password (scrypt, ~320 ms) on the worker pool and come
 * back to the loop to count failures, lock users out, check that the user
 * is enabled and has a role on the project, and issue the token. An
 * unknown user costs the same time (yun_password_verify_dummy).
 *
 * Revocations live in the "revocations" database and in memory: a hash
 * set of audit ids (one token each: logout) and a short list of rules
 * (the tokens of a user, of a user in a project, or of a project, issued
 * up to a time: password change, disable, role removal, project
 * disable). Each entry goes when the last token it can match has expired.
 * A counter in "meta" (revocation_gen) changes with every revocation, so
 * that the cron notices the ones another process wrote (yun-scheduler
 * set-password) and reloads.
 *
 * Neighbours: dispatch.c (calls authenticate, defers logins),
 * identity-admin.c (users, projects, roles), keypair.c, common/token.h,
 * common/password.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "err.h"
#include "identity-priv.h"
#include "log.h"
#include "loop.h"
#include "password.h"
#include "scheduler.h"
#include "seal.h"
#include "store.h"
#include "token.h"
#include "util.h"
#include "yun.pb-c.h"

YUN_LOG_MODULE("sched.identity");

#define REVOCATIONS_DB "revocations"
#define REVOCATION_GEN_KEY "revocation_gen"
/* How often the cron drops expired revocations. */
#define REVOCATION_PURGE_MS 60000
#define REVOCATION_PURGE_BATCH 1000

struct revoked_id {
    char audit_id[YUN_TOKEN_AUDIT_ID_LEN + 1]; /* "" = free slot */
    uint64_t expires_us;
};

struct revoke_rule {
    char user_id[YUN_TOKEN_ID_MAX + 1];    /* "" = any user */
    char project_id[YUN_TOKEN_ID_MAX + 1]; /* "" = any project */
    uint64_t issued_before_us;
    uint64_t expires_us;
};

struct sched_identity {
    struct yun_token_keys *keys;
    char *key_dir;
    struct timespec key_dir_mtime;       /* of the loaded repository */
    /* Revoked audit ids: open addressing, linear probing, at most half full. */
    struct revoked_id *ids;
    size_t ids_cap, ids_n;
    struct revoke_rule *rules;
    size_t rules_n, rules_cap;
    uint64_t revocation_gen;             /* the stored list memory reflects */
    int64_t next_purge_ms;
    bool has_hash_params;
    struct yun_password_params hash_params;
};

/* --- names and records ------------------------------------------------------ */

void
sched_pb_take_string(char **field, char *value)
{
    if (*field && *field != protobuf_c_empty_string)
        free(*field);
    *field = value;
}

int
sched_pb_set_string(char **field, const char *value)
{
    char *v = strdup(value);
    if (!v)
        return -ENOMEM;
    sched_pb_take_string(field, v);
    return 0;
}

static bool
utf8_text_valid(const char *s, size_t max)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t len = strlen(s);
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len;) {
        uint8_t c = p[i];
        uint32_t cp;
        size_t n;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return false;
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            cp = c & 0x1f;
            n = 2;
        } else if ((c & 0xf0) == 0xe0) {
            cp = c & 0x0f;
            n = 3;
        } else if ((c & 0xf8) == 0xf0) {
            cp = c & 0x07;
            n = 4;
        } else {
            return false;
        }
        if (i + n > len)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || (cp >= 0x80 && cp <= 0x9f))
            return false;
        i += n;
    }
    return true;
}

bool
sched_identity_name_valid(const char *name)
{
    size_t n = strlen(name);
    return utf8_text_valid(name, SCHED_NAME_MAX) && name[0] != ' ' && name[n - 1] != ' ' &&
           !yun_uuid_is_valid(name);
}

/* Looks 'ref' up as an id in 'db', or through the name index 'names'. */
static int
find_record(struct yun_txn *txn, const char *db, const char *names, const char *ref,
            const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret)
{
    if (!*ref || strlen(ref) > SCHED_NAME_MAX)
        return -ENOENT;
    char id[YUN_UUID_STR_SIZE];
    if (yun_uuid_is_valid(ref)) {
        snprintf(id, sizeof id, "%s", ref);
    } else {
        const void *val;
        size_t size;
        int r = yun_txn_get(txn, names, ref, strlen(ref), &val, &size);
        if (r < 0)
            return r;
        if (size != YUN_UUID_STR_SIZE - 1)
            return -EBADMSG;
        memcpy(id, val, size);
        id[size] = '\0';
    }
    return yun_txn_get_msg(txn, db, id, desc, ret);
}

int
sched_user_find(struct yun_txn *txn, const char *ref, Yun__UserRecord **ret)
{
    return find_record(txn, "users", "user_names", ref, &yun__user_record__descriptor,
                       (ProtobufCMessage **)ret);
}

int
sched_project_find(struct yun_txn *txn, const char *ref, Yun__ProjectRecord **ret)
{
    return find_record(txn, "projects", "project_names", ref, &yun__project_record__descriptor,
                       (ProtobufCMessage **)ret);
}

int
sched_user_put(struct yun_txn *txn, const Yun__UserRecord *u)
{
    int r = yun_txn_put_msg(txn, "users", u->id, &u->base);
    if (r < 0)
        return r;
    return yun_txn_put(txn, "user_names", u->name, strlen(u->name), u->id, strlen(u->id));
}

int
sched_project_put(struct yun_txn *txn, const Yun__ProjectRecord *p)
{
    int r = yun_txn_put_msg(txn, "projects", p->id, &p->base);
    if (r < 0)
        return r;
    return yun_txn_put(txn, "project_names", p->name, strlen(p->name), p->id, strlen(p->id));
}

struct roles_scan {
    const char *prefix;
    size_t prefix_size;
    unsigned roles;
};

static int
collect_roles(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct roles_scan *sc = data;
    if (key_size < sc->prefix_size || memcmp(key, sc->prefix, sc->prefix_size) != 0)
        return 1;
    char role[YUN_TOKEN_ROLE_MAX + 1];
    size_t n = key_size - sc->prefix_size;
    if (n < sizeof role) {
        memcpy(role, (const char *)key + sc->prefix_size, n);
        role[n] = '\0';
        sc->roles |= sched_role_from_string(role);
    }
    return 0;
}

/* "a NUL b NUL" into 'buf'; returns its size (NULs included). */
static size_t
pair_key(const char *a, const char *b, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s%c%s%c", a, 0, b, 0);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

int
sched_assigned_roles(struct yun_txn *txn, const char *user_id, const char *project_id,
                     unsigned *ret)
{
    char prefix[2 * YUN_TOKEN_ID_MAX + 4];
    struct roles_scan sc = { .prefix = prefix };
    sc.prefix_size = pair_key(user_id, project_id, prefix, sizeof prefix);
    if (!sc.prefix_size)
        return -EINVAL;
    int r = yun_txn_iterate(txn, "assignments", prefix, sc.prefix_size, collect_roles, &sc);
    if (r < 0)
        return r;
    *ret = sc.roles;
    return 0;
}

unsigned
sched_roles_implied(unsigned assigned)
{
    unsigned roles = assigned;
    if (roles & SCHED_ROLE_ADMIN)
        roles |= SCHED_ROLE_MEMBER;
    if (roles & SCHED_ROLE_MEMBER)
        roles |= SCHED_ROLE_READER;
    return roles;
}

int
sched_assignment_put(struct yun_txn *txn, const char *user_id, const char *project_id,
                     const char *role)
{
    char key[2 * YUN_TOKEN_ID_MAX + YUN_TOKEN_ROLE_MAX + 4];
    size_t n = pair_key(user_id, project_id, key, sizeof key);
    int k = n ? snprintf(key + n, sizeof key - n, "%s", role) : -1;
    if (k <= 0 || (size_t)k >= sizeof key - n)
        return -EINVAL;
    size_t key_size = n + (size_t)k;
    Yun__RoleAssignment a = YUN__ROLE_ASSIGNMENT__INIT;
    a.user_id = (char *)user_id;
    a.project_id = (char *)project_id;
    a.role = (char *)role;
    a.created_us = yun_wall_us();
    size_t size = yun__role_assignment__get_packed_size(&a);
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    yun__role_assignment__pack(&a, buf);
    int r = yun_txn_put(txn, "assignments", key, key_size, buf, size);
    if (r < 0)
        return r;
    /* The index: project NUL user NUL role. */
    char ikey[sizeof key];
    n = pair_key(project_id, user_id, ikey, sizeof ikey);
    memcpy(ikey + n, role, (size_t)k);
    return yun_txn_put(txn, "assignments_by_project", ikey, key_size, "", 0);
}

int
sched_user_reply(struct sched_call *call, const Yun__UserRecord *u)
{
    Yun__UserRecord copy = *u;
    copy.password_hash = (char *)"";
    Yun__UserReply y = YUN__USER_REPLY__INIT;
    y.user = &copy;
    return sched_call_reply(call, &y.base);
}

/* --- revocations in memory ----------------------------------------------- */

static uint64_t
hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static struct revoked_id *
ids_slot(struct revoked_id *ids, size_t cap, const char *audit_id)
{
    size_t i = hash_id(audit_id) & (cap - 1);
    while (ids[i].audit_id[0] && strcmp(ids[i].audit_id, audit_id) != 0)
        i = (i + 1) & (cap - 1);
    return &ids[i];
}

/* Rebuilds the set into 'cap' slots, without entries expired at 'now_us'. */
static int
ids_rebuild(struct sched_identity *id, size_t cap, uint64_t now_us)
{
    struct revoked_id *ids = calloc(cap, sizeof *ids);
    if (!ids)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < id->ids_cap; i++) {
        const struct revoked_id *e = &id->ids[i];
        if (!e->audit_id[0] || e->expires_us <= now_us)
            continue;
        *ids_slot(ids, cap, e->audit_id) = *e;
        n++;
    }
    free(id->ids);
    id->ids = ids;
    id->ids_cap = cap;
    id->ids_n = n;
    return 0;
}

static int
ids_add(struct sched_identity *id, const char *audit_id, uint64_t expires_us)
{
    if (strlen(audit_id) > YUN_TOKEN_AUDIT_ID_LEN || !*audit_id)
        return -EINVAL;
    if (2 * (id->ids_n + 1) > id->ids_cap) {
        size_t cap = id->ids_cap ? 2 * id->ids_cap : 64;
        int r = ids_rebuild(id, cap, 0);
        if (r < 0)
            return r;
    }
    struct revoked_id *e = ids_slot(id->ids, id->ids_cap, audit_id);
    if (!e->audit_id[0]) {
        snprintf(e->audit_id, sizeof e->audit_id, "%s", audit_id);
        id->ids_n++;
    }
    if (expires_us > e->expires_us)
        e->expires_us = expires_us;
    return 0;
}

static bool
ids_contains(const struct sched_identity *id, const char *audit_id)
{
    if (!id->ids_n)
        return false;
    return ids_slot(id->ids, id->ids_cap, audit_id)->audit_id[0] != '\0';
}

static int
rules_add(struct sched_identity *id, const char *user_id, const char *project_id,
          uint64_t issued_before_us, uint64_t expires_us)
{
    if (strlen(user_id) > YUN_TOKEN_ID_MAX || strlen(project_id) > YUN_TOKEN_ID_MAX)
        return -EINVAL;
    for (size_t i = 0; i < id->rules_n; i++) {
        struct revoke_rule *r = &id->rules[i];
        if (strcmp(r->user_id, user_id) != 0 || strcmp(r->project_id, project_id) != 0)
            continue;
        if (issued_before_us > r->issued_before_us)
            r->issued_before_us = issued_before_us;
        if (expires_us > r->expires_us)
            r->expires_us = expires_us;
        return 0;
    }
    if (id->rules_n == id->rules_cap) {
        size_t cap = id->rules_cap ? 2 * id->rules_cap : 16;
        struct revoke_rule *rules = realloc(id->rules, cap * sizeof *rules);
        if (!rules)
            return -ENOMEM;
        id->rules = rules;
        id->rules_cap = cap;
    }
    struct revoke_rule *r = &id->rules[id->rules_n++];
    snprintf(r->user_id, sizeof r->user_id, "%s", user_id);
    snprintf(r->project_id, sizeof r->project_id, "%s", project_id);
    r->issued_before_us = issued_before_us;
    r->expires_us = expires_us;
    return 0;
}

static void
rules_expire(struct sched_identity *id, uint64_t now_us)
{
    size_t k = 0;
    for (size_t i = 0; i < id->rules_n; i++)
        if (id->rules[i].expires_us > now_us)
            id->rules[k++] = id->rules[i];
    id->rules_n = k;
}

static bool
is_revoked(const struct sched_identity *id, const struct yun_token *t)
{
    if (ids_contains(id, t->audit_id))
        return true;
    for (size_t i = 0; i < id->rules_n; i++) {
        const struct revoke_rule *r = &id->rules[i];
        if (t->issued_at_us <= r->issued_before_us &&
            (!r->user_id[0] || strcmp(r->user_id, t->user_id) == 0) &&
            (!r->project_id[0] || strcmp(r->project_id, t->project_id) == 0))
            return true;
    }
    return false;
}

static void
revocations_clear(struct sched_identity *id)
{
    free(id->ids);
    id->ids = NULL;
    id->ids_cap = id->ids_n = 0;
    id->rules_n = 0;
}

static int
revocation_apply(struct sched_identity *id, const Yun__RevocationRecord *rec)
{
    if (*rec->audit_id)
        return ids_add(id, rec->audit_id, rec->expires_us);
    return rules_add(id, rec->user_id, rec->project_id, rec->issued_before_us,
                     rec->expires_us);
}

/* --- revocations in the store --------------------------------------------- */

static int
gen_read(struct yun_txn *txn, uint64_t *ret)
{
    const void *val;
    size_t size;
    int r = yun_txn_get(txn, "meta", REVOCATION_GEN_KEY, strlen(REVOCATION_GEN_KEY), &val,
                        &size);
    if (r == -ENOENT) {
        *ret = 0;
        return 0;
    }
    if (r < 0)
        return r;
    if (size != sizeof(uint64_t))
        return -EBADMSG;
    memcpy(ret, val, sizeof *ret);
    return 0;
}

/* Bumps the stored generation in 'txn'. When memory was in step with the
 * store, it follows the bump; otherwise the cron reloads. */
static int
gen_bump(struct sched *s, struct yun_txn *txn)
{
    uint64_t gen;
    int r = gen_read(txn, &gen);
    if (r < 0)
        return r;
    uint64_t next = gen + 1;
    r = yun_txn_put(txn, "meta", REVOCATION_GEN_KEY, strlen(REVOCATION_GEN_KEY), &next,
                    sizeof next);
    if (r < 0)
        return r;
    if (s->identity && s->identity->revocation_gen == gen)
        s->identity->revocation_gen = next;
    return 0;
}

static int
revocation_key(const Yun__RevocationRecord *rec, char *buf, size_t size)
{
    int n = *rec->audit_id ? snprintf(buf, size, "a/%s", rec->audit_id)
                           : snprintf(buf, size, "r/%s/%s", rec->user_id, rec->project_id);
    return n > 0 && (size_t)n < size ? 0 : -EINVAL;
}

/* Stores 'rec' (merged with a rule of the same user and project) in 'txn'
 * and applies it to memory. */
static int
revocation_put(struct sched *s, struct yun_txn *txn, Yun__RevocationRecord *rec)
{
    char key[2 * YUN_TOKEN_ID_MAX + 8];
    int r = revocation_key(rec, key, sizeof key);
    if (r < 0)
        return r;
    ProtobufCMessage *m = NULL;
    r = yun_txn_get_msg(txn, REVOCATIONS_DB, key, &yun__revocation_record__descriptor, &m);
    if (r == 0) {
        Yun__RevocationRecord *old = (Yun__RevocationRecord *)m;
        if (old->issued_before_us > rec->issued_before_us)
            rec->issued_before_us = old->issued_before_us;
        if (old->expires_us > rec->expires_us)
            rec->expires_us = old->expires_us;
        protobuf_c_message_free_unpacked(m, NULL);
    } else if (r != -ENOENT) {
        return r;
    }
    r = yun_txn_put_msg(txn, REVOCATIONS_DB, key, &rec->base);
    if (r < 0)
        return r;
    r = gen_bump(s, txn);
    if (r < 0)
        return r;
    if (s->identity) {
        r = revocation_apply(s->identity, rec);
        if (r < 0)
            return r;
    }
    return 0;
}

int
sched_revoke_tokens(struct sched *s, struct yun_txn *txn, const char *user_id,
                    const char *project_id, const char *reason)
{
    uint64_t now = yun_wall_us();
    Yun__RevocationRecord rec = YUN__REVOCATION_RECORD__INIT;
    rec.user_id = (char *)user_id;
    rec.project_id = (char *)project_id;
    rec.issued_before_us = now;
    /* Every token it can match was issued by now, so expires by now + ttl. */
    rec.expires_us = now + (uint64_t)s->cfg.token_ttl_s * 1000000u;
    rec.revoked_us = now;
    rec.reason = (char *)reason;
    return revocation_put(s, txn, &rec);
}

static int
revoke_audit_id(struct sched *s, struct yun_txn *txn, const struct yun_token *t,
                const char *reason)
{
    Yun__RevocationRecord rec = YUN__REVOCATION_RECORD__INIT;
    rec.audit_id = (char *)t->audit_id;
    rec.user_id = (char *)t->user_id;
    rec.project_id = (char *)t->project_id;
    rec.issued_before_us = t->issued_at_us;
    rec.expires_us = t->expires_at_us;
    rec.revoked_us = yun_wall_us();
    rec.reason = (char *)reason;
    return revocation_put(s, txn, &rec);
}

static int
load_revocation(const void *key, size_t key_size, const void *val, size_t val_size,
                void *data)
{
    struct sched_identity *id = data;
    Yun__RevocationRecord *rec = yun__revocation_record__unpack(NULL, val_size, val);
    if (!rec)
        return -EBADMSG;
    int r = rec->expires_us > yun_wall_us() ? revocation_apply(id, rec) : 0;
    yun__revocation_record__free_unpacked(rec, NULL);
    return r;
}

/* Replaces the list in memory with the stored one. */
static int
revocations_load(struct sched *s)
{
    struct sched_identity *id = s->identity;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r < 0)
        return r;
    uint64_t gen;
    r = gen_read(txn, &gen);
    if (r < 0)
        return r;
    revocations_clear(id);
    r = yun_txn_iterate(txn, REVOCATIONS_DB, NULL, 0, load_revocation, id);
    if (r < 0)
        return r;
    id->revocation_gen = gen;
    return 0;
}

struct purge_scan {
    uint64_t now_us;
    char (*keys)[2 * YUN_TOKEN_ID_MAX + 8];
    size_t n;
};

static int
collect_expired(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct purge_scan *p = data;
    if (p->n == REVOCATION_PURGE_BATCH)
        return 1;
    Yun__RevocationRecord *rec = yun__revocation_record__unpack(NULL, val_size, val);
    bool expired = !rec || rec->expires_us <= p->now_us;
    if (rec)
        yun__revocation_record__free_unpacked(rec, NULL);
    if (expired && key_size < sizeof p->keys[0]) {
        memcpy(p->keys[p->n], key, key_size);
        p->keys[p->n][key_size] = '\0';
        p->n++;
    }
    return 0;
}

/* Drops expired revocations from memory and (a batch at a time) from the
 * store. Dropping an expired entry changes no answer: no generation bump. */
static void
revocations_purge(struct sched *s, uint64_t now_us)
{
    struct sched_identity *id = s->identity;
    rules_expire(id, now_us);
    if (id->ids_n)
        (void)ids_rebuild(id, id->ids_cap, now_us);

    struct purge_scan p = { .now_us = now_us };
    _cleanup_free_ char(*keys)[2 * YUN_TOKEN_ID_MAX + 8] =
        calloc(REVOCATION_PURGE_BATCH, sizeof *keys);
    if (!keys)
        return;
    p.keys = keys;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r >= 0)
        r = yun_txn_iterate(txn, REVOCATIONS_DB, NULL, 0, collect_expired, &p);
    yun_txn_abortp(&txn);
    if (r < 0 || p.n == 0)
        return;
    r = yun_txn_begin(s->store, true, &txn);
    for (size_t i = 0; r >= 0 && i < p.n; i++) {
        r = yun_txn_del(txn, REVOCATIONS_DB, keys[i], strlen(keys[i]));
        if (r == -ENOENT)
            r = 0;
    }
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        log_err_errno(r, "cannot drop expired revocations");
    else
        log_debug("expired revocations dropped count=%zu", p.n);
}

size_t
sched_identity_revocations(const struct sched *s)
{
    return s->identity ? s->identity->ids_n + s->identity->rules_n : 0;
}

/* --- token keys ------------------------------------------------------------- */

int
sched_identity_key_dir(const struct sched *s, char **ret)
{
    char *d;
    if (s->cfg.token_key_dir && *s->cfg.token_key_dir)
        d = strdup(s->cfg.token_key_dir);
    else if (asprintf(&d, "%s/token-keys", s->cfg.state_dir) < 0)
        d = NULL;
    if (!d)
        return -ENOMEM;
    *ret = d;
    return 0;
}

static int
dir_mtime(const char *dir, struct timespec *ret)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return -errno;
    *ret = st.st_mtim;
    return 0;
}

static int
keys_load(struct sched *s)
{
    struct sched_identity *id = s->identity;
    struct timespec mtime;
    int r = dir_mtime(id->key_dir, &mtime);
    if (r < 0)
        return r;
    struct yun_token_keys *keys = NULL;
    r = yun_token_keys_load(id->key_dir, &keys);
    if (r < 0)
        return r;
    yun_token_keys_free(id->keys);
    id->keys = keys;
    id->key_dir_mtime = mtime;
    return 0;
}

static const char *
keys_error_hint(int r)
{
    switch (r) {
    case -ENOENT:
        return "; run 'yun-scheduler init' to create them";
    case -EPERM:
        return "; the directory and its files must be private to the owner (0700, 0600)";
    default:
        return "";
    }
}

int
sched_identity_reload_keys(struct sched *s)
{
    if (!s->identity)
        return -EINVAL;
    int r = keys_load(s);
    if (r < 0)
        return log_err_errno(r, "cannot reload the token keys dir=%s, keeping the old ones%s",
                             s->identity->key_dir, keys_error_hint(r));
    log_info("token keys loaded dir=%s keys=%zu", s->identity->key_dir,
             yun_token_keys_count(s->identity->keys));
    return 0;
}

/* --- module life ------------------------------------------------------------ */

int
sched_identity_init(struct sched *s)
{
    struct sched_identity *id = calloc(1, sizeof *id);
    if (!id)
        return -ENOMEM;
    s->identity = id;
    int r = sched_identity_key_dir(s, &id->key_dir);
    if (r < 0)
        return r;
    r = keys_load(s);
    if (r < 0)
        return log_err_errno(r, "cannot load the token keys dir=%s%s", id->key_dir,
                             keys_error_hint(r));
    r = revocations_load(s);
    if (r < 0)
        return log_err_errno(r, "cannot load the revocation list");
    id->next_purge_ms = yun_now_ms() + REVOCATION_PURGE_MS;
    log_info("identity ready token_keys=%zu revocations=%zu", yun_token_keys_count(id->keys),
             id->ids_n + id->rules_n);
    return 0;
}

void
sched_identity_done(struct sched *s)
{
    struct sched_identity *id = s->identity;
    if (!id)
        return;
    yun_token_keys_free(id->keys);
    free(id->key_dir);
    free(id->ids);
    free(id->rules);
    free(id);
    s->identity = NULL;
}

void
sched_identity_cron(struct sched *s)
{
    struct sched_identity *id = s->identity;
    if (!id)
        return;
    /* rotate-keys renames and writes files in the directory: its mtime
     * moves. A failed reload keeps the keys we have and says so once per
     * change. */
    struct timespec mtime;
    if (dir_mtime(id->key_dir, &mtime) == 0 &&
        (mtime.tv_sec != id->key_dir_mtime.tv_sec || mtime.tv_nsec != id->key_dir_mtime.tv_nsec)) {
        if (sched_identity_reload_keys(s) < 0)
            id->key_dir_mtime = mtime;
    }

    /* Revocations another process stored (set-password). */
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    uint64_t gen = id->revocation_gen;
    if (yun_txn_begin(s->store, false, &txn) == 0)
        (void)gen_read(txn, &gen);
    yun_txn_abortp(&txn);
    if (gen != id->revocation_gen) {
        int r = revocations_load(s);
        if (r < 0)
            log_err_errno(r, "cannot reload the revocation list");
        else
            log_info("revocation list reloaded revocations=%zu", id->ids_n + id->rules_n);
    }

    int64_t now = yun_now_ms();
    if (now >= id->next_purge_ms) {
        id->next_purge_ms = now + REVOCATION_PURGE_MS;
        revocations_purge(s, yun_wall_us());
    }
}

void
sched_identity_set_hash_params(struct sched *s, const struct yun_password_params *p)
{
    if (!s->identity)
        return;
    s->identity->has_hash_params = p != NULL;
    if (p)
        s->identity->hash_params = *p;
}

const struct yun_password_params *
sched_identity_hash_params(const struct sched *s)
{
    if (s->identity && s->identity->has_hash_params)
        return &s->identity->hash_params;
    return &yun_password_default_params;
}

/* --- authentication --------------------------------------------------------- */

int
sched_identity_authenticate(struct sched *s, const void *token, size_t size, uint64_t now_us,
                            struct yun_token *ret, unsigned *ret_roles)
{
    struct sched_identity *id = s->identity;
    char text[YUN_TOKEN_MAX_LEN + 1];
    if (!id || !id->keys || size == 0 || size > YUN_TOKEN_MAX_LEN || memchr(token, 0, size))
        return YUN_E_TOKEN_INVALID;
    memcpy(text, token, size);
    text[size] = '\0';
    struct yun_token t;
    int r = yun_token_validate(id->keys, text, now_us, &t);
    if (r < 0)
        return r;
    if (is_revoked(id, &t))
        return YUN_E_TOKEN_REVOKED;
    unsigned roles = 0;
    for (size_t i = 0; i < t.n_roles; i++)
        roles |= sched_role_from_string(t.roles[i]);
    *ret = t;
    *ret_roles = roles;
    return 0;
}

/* --- login ------------------------------------------------------------------ */

struct login_job {
    char *password;                      /* wiped by the work */
    char *hash;                          /* what the work checks; NULL: the dummy */
    char user_ref[SCHED_NAME_MAX + 1];
    char user_id[YUN_UUID_STR_SIZE];     /* "" when no such user */
    char project_ref[SCHED_NAME_MAX + 1];
};

static void
login_job_free(void *data)
{
    struct login_job *j = data;
    if (!j)
        return;
    if (j->password) {
        yun_wipe(j->password, strlen(j->password));
        free(j->password);
    }
    free(j->hash);
    free(j);
}

/* On a worker: the one slow step. An unknown user, or one without a
 * password, costs as much as a known one. */
static int
login_work(void *data)
{
    struct login_job *j = data;
    int r = j->hash && *j->hash ? yun_password_verify(j->password, j->hash)
                                : yun_password_verify_dummy(j->password);
    yun_wipe(j->password, strlen(j->password));
    return r;
}

static int
login_refuse(struct sched_call *call, struct yun_txn *txn, int code, const char *msg)
{
    sched_call_error(call, code, "%s", msg);
    log_req(YUN_LOG_NOTICE, call->req, code, "login refused user=%s reason=\"%s\"",
            call->target && *call->target ? call->target : "-", msg);
    if (txn) {
        int r = sched_audit_txn(txn, call, "login", call->target, code, msg);
        if (r == 0)
            r = yun_txn_commit(txn);
        else
            yun_txn_abort(txn);
        call->audited = r == 0;
        if (r < 0)
            log_req(YUN_LOG_ERR, call->req, r, "cannot store the failed login");
    }
    if (!call->audited)
        sched_audit(call, "login", call->target, code, msg);
    return code;
}

/* Back on the loop: everything but the hash, in one write transaction. */
static int
login_resume(struct sched_call *call, int result, void *data)
{
    struct login_job *j = data;
    struct sched *s = call->s;
    call->user = j->user_id;
    call->project = "";
    if (!j->user_id[0])
        return login_refuse(call, NULL, YUN_E_AUTH, "The user name or password is wrong.");

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_user_ Yun__UserRecord *u = NULL;
    r = sched_user_find(txn, j->user_id, &u);
    if (r == -ENOENT)
        return login_refuse(call, TAKE_PTR(txn), YUN_E_AUTH,
                            "The user name or password is wrong.");
    if (r < 0)
        return r;

    uint64_t now = yun_wall_us();
    char msg[256];
    if (u->locked_until_us > now) {
        char when[32];
        snprintf(msg, sizeof msg,
                 "Too many failed logins: user '%s' is locked until %s; try again later.",
                 u->name, yun_format_time(u->locked_until_us, when, sizeof when));
        return login_refuse(call, TAKE_PTR(txn), YUN_E_AUTH, msg);
    }
    /* The password may have changed while the work ran: the hash checked
     * must be the one the record holds now. */
    bool ok = result == 0 && j->hash && strcmp(u->password_hash, j->hash) == 0;
    if (!ok) {
        if (result < 0 && result != YUN_E_AUTH)
            log_req(YUN_LOG_WARN, call->req, result,
                    "cannot check the password hash of user=%s", u->id);
        u->failed_logins++;
        u->updated_us = now;
        bool locked = false;
        if (s->cfg.lockout_attempts && u->failed_logins >= s->cfg.lockout_attempts) {
            u->locked_until_us = now + (uint64_t)s->cfg.lockout_minutes * 60u * 1000000u;
            u->failed_logins = 0;
            locked = true;
            log_req(YUN_LOG_WARN, call->req, 0, "user locked out user=%s minutes=%u", u->id,
                    s->cfg.lockout_minutes);
        }
        r = sched_user_put(txn, u);
        if (r < 0)
            return r;
        return login_refuse(call, TAKE_PTR(txn), YUN_E_AUTH,
                            locked ? "The user name or password is wrong; too many failed "
                                     "logins lock the user out for a while."
                                   : "The user name or password is wrong.");
    }
    if (!u->enabled) {
        snprintf(msg, sizeof msg, "User '%s' is disabled.", u->name);
        return login_refuse(call, TAKE_PTR(txn), YUN_E_AUTH, msg);
    }

    const char *pref = *j->project_ref ? j->project_ref : u->default_project_id;
    if (!*pref) {
        snprintf(msg, sizeof msg,
                 "No project given, and user '%s' has no default project: name one.", u->name);
        return login_refuse(call, TAKE_PTR(txn), YUN_E_INVALID, msg);
    }
    _cleanup_project_ Yun__ProjectRecord *p = NULL;
    unsigned assigned = 0;
    r = sched_project_find(txn, pref, &p);
    if (r == 0)
        r = sched_assigned_roles(txn, u->id, p->id, &assigned);
    else if (r == -ENOENT)
        r = 0;
    if (r < 0)
        return r;
    /* A project the user has no role on, or that does not exist, look the
     * same from outside. */
    if (!p || !assigned) {
        snprintf(msg, sizeof msg, "User '%s' has no role on project '%.100s'.", u->name, pref);
        return login_refuse(call, TAKE_PTR(txn), YUN_E_DENIED, msg);
    }
    if (!p->enabled) {
        snprintf(msg, sizeof msg, "Project '%s' is disabled.", p->name);
        return login_refuse(call, TAKE_PTR(txn), YUN_E_DENIED, msg);
    }

    struct yun_token claims = {
        .issued_at_us = now,
        .expires_at_us = now + (uint64_t)s->cfg.token_ttl_s * 1000000u,
    };
    snprintf(claims.user_id, sizeof claims.user_id, "%s", u->id);
    snprintf(claims.project_id, sizeof claims.project_id, "%s", p->id);
    unsigned roles = sched_roles_implied(assigned);
    char *role_names[3];
    static const unsigned order[] = { SCHED_ROLE_ADMIN, SCHED_ROLE_MEMBER, SCHED_ROLE_READER };
    for (size_t i = 0; i < ELEMENTSOF(order); i++) {
        if (!(roles & order[i]))
            continue;
        const char *name = sched_role_to_string(order[i]);
        role_names[claims.n_roles] = (char *)name;
        snprintf(claims.roles[claims.n_roles++], sizeof claims.roles[0], "%s", name);
    }
    _cleanup_free_ char *token = NULL;
    struct yun_token issued;
    r = yun_token_issue(s->identity->keys, &claims, &token, &issued);
    if (r < 0)
        return sched_call_error(call, r, "Cannot issue a token: %s.", yun_strerror(r));

    u->failed_logins = 0;
    u->last_login_us = now;
    r = sched_user_put(txn, u);
    call->project = p->id;
    if (r == 0)
        r = sched_audit_txn(txn, call, "login", call->target, 0, NULL);
    if (r == 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    call->audited = true;
    log_req(YUN_LOG_INFO, call->req, 0, "login user=%s project=%s audit_id=%s", u->id, p->id,
            issued.audit_id);

    Yun__LoginReply y = YUN__LOGIN_REPLY__INIT;
    y.token = token;
    y.user_id = u->id;
    y.user_name = u->name;
    y.project_id = p->id;
    y.project_name = p->name;
    y.roles = role_names;
    y.n_roles = claims.n_roles;
    y.issued_us = issued.issued_at_us;
    y.expires_us = issued.expires_at_us;
    y.audit_id = issued.audit_id;
    call->wipe_payload = true;
    r = sched_call_reply(call, &y.base);
    yun_wipe(token, strlen(token));
    return r;
}

/* OP_LOGIN: checks the password on the worker pool, then issues a token
 * scoped to the project (or the user's default project). */
int
sched_login(struct sched_call *call, const ProtobufCMessage *req)
{
    Yun__LoginRequest *q = (Yun__LoginRequest *)req;
    size_t pw_len = strlen(q->password);
    if (!*q->user || strlen(q->user) > SCHED_NAME_MAX || strlen(q->project) > SCHED_NAME_MAX) {
        yun_wipe(q->password, pw_len);
        return sched_call_error(call, YUN_E_INVALID, "Give a user name of 1 to %d bytes.",
                                SCHED_NAME_MAX);
    }
    if (pw_len == 0 || pw_len > YUN_PASSWORD_MAX_SIZE) {
        yun_wipe(q->password, pw_len);
        return sched_call_error(call, YUN_E_INVALID, "Give a password of 1 to %d bytes.",
                                YUN_PASSWORD_MAX_SIZE);
    }
    if (!call->s->identity || !call->s->identity->keys) {
        yun_wipe(q->password, pw_len);
        return sched_call_error(call, -ENOKEY, "The scheduler has no token keys.");
    }
    struct login_job *j = calloc(1, sizeof *j);
    if (!j) {
        yun_wipe(q->password, pw_len);
        return -ENOMEM;
    }
    j->password = strdup(q->password);
    yun_wipe(q->password, pw_len);
    snprintf(j->user_ref, sizeof j->user_ref, "%s", q->user);
    snprintf(j->project_ref, sizeof j->project_ref, "%s", q->project);
    if (!j->password) {
        login_job_free(j);
        return -ENOMEM;
    }

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    _cleanup_user_ Yun__UserRecord *u = NULL;
    if (r == 0) {
        r = sched_user_find(txn, q->user, &u);
        if (r == -ENOENT)
            r = 0;
    }
    if (r == 0 && u) {
        snprintf(j->user_id, sizeof j->user_id, "%s", u->id);
        j->hash = strdup(u->password_hash);
        if (!j->hash)
            r = -ENOMEM;
    }
    yun_txn_abortp(&txn);
    if (r == 0)
        r = sched_call_defer(call, login_work, login_resume, j, login_job_free);
    if (r < 0) {
        login_job_free(j);
        if (r == -EBUSY)
            return sched_call_error(call, -EBUSY,
                                    "Too many logins in progress; try again in a moment.");
        return r;
    }
    return 0;
}

/* OP_LOGOUT: revokes the caller's token alone. */
int
sched_logout(struct sched_call *call, const ProtobufCMessage *req)
{
    if (!call->token)
        return sched_call_error(call, YUN_E_DENIED, "Log out needs a token.");
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = revoke_audit_id(call->s, txn, call->token, "logout");
    if (r == 0)
        r = sched_audit_txn(txn, call, "logout", call->token->audit_id, 0, NULL);
    if (r == 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    call->audited = true;
    log_req(YUN_LOG_INFO, call->req, 0, "logout user=%s audit_id=%s", call->user,
            call->token->audit_id);
    Yun__LogoutReply y = YUN__LOGOUT_REPLY__INIT;
    return sched_call_reply(call, &y.base);
}

/* --- offline: init and set-password ------------------------------------------ */

static int
ensure_admin_project(struct sched *s, struct yun_txn *txn, Yun__ProjectRecord **ret)
{
    int r = sched_project_find(txn, SCHED_ADMIN_PROJECT, ret);
    if (r != -ENOENT)
        return r;
    char id[YUN_UUID_STR_SIZE];
    r = yun_uuid_new(id);
    if (r < 0)
        return r;
    uint64_t now = yun_wall_us();
    Yun__ProjectRecord p = YUN__PROJECT_RECORD__INIT;
    p.id = id;
    p.name = (char *)SCHED_ADMIN_PROJECT;
    p.domain = (char *)SCHED_DOMAIN;
    p.description = (char *)"The cloud's administrators.";
    p.enabled = true;
    p.created_us = p.updated_us = now;
    r = sched_project_put(txn, &p);
    if (r == 0)
        r = sched_audit_system(s, txn, "project.create", id, 0, "bootstrap");
    if (r < 0)
        return r;
    return sched_project_find(txn, id, ret);
}

/* Creates user "admin" with 'hash' and the admin role on 'project'. */
static int
create_admin_user(struct sched *s, struct yun_txn *txn, const Yun__ProjectRecord *project,
                  const char *hash)
{
    char id[YUN_UUID_STR_SIZE];
    int r = yun_uuid_new(id);
    if (r < 0)
        return r;
    uint64_t now = yun_wall_us();
    Yun__UserRecord u = YUN__USER_RECORD__INIT;
    u.id = id;
    u.name = (char *)SCHED_ADMIN_USER;
    u.domain = (char *)SCHED_DOMAIN;
    u.password_hash = (char *)hash;
    u.enabled = true;
    u.default_project_id = project->id;
    u.created_us = u.updated_us = u.password_changed_us = now;
    r = sched_user_put(txn, &u);
    if (r == 0)
        r = sched_assignment_put(txn, id, project->id, "admin");
    if (r == 0)
        r = sched_audit_system(s, txn, "user.create", id, 0, "bootstrap: admin user");
    return r;
}

static int
user_exists(struct sched *s, const char *name, bool *ret)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_user_ Yun__UserRecord *u = NULL;
    r = sched_user_find(txn, name, &u);
    if (r < 0 && r != -ENOENT)
        return r;
    *ret = r == 0;
    return 0;
}

int
sched_identity_bootstrap(struct sched *s, const char *password, bool *ret_created_user)
{
    bool exists = false;
    int r = user_exists(s, SCHED_ADMIN_USER, &exists);
    if (r < 0)
        return r;
    /* Hash outside the write transaction: it takes a third of a second. */
    _cleanup_free_ char *hash = NULL;
    if (password && !exists) {
        r = yun_password_hash_with(password, sched_identity_hash_params(s), &hash);
        if (r < 0)
            return r;
    }
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_project_ Yun__ProjectRecord *p = NULL;
    r = ensure_admin_project(s, txn, &p);
    if (r < 0)
        return r;
    bool created = false;
    if (hash) {
        _cleanup_user_ Yun__UserRecord *u = NULL;
        r = sched_user_find(txn, SCHED_ADMIN_USER, &u);
        if (r == -ENOENT) {
            r = create_admin_user(s, txn, p, hash);
            created = r == 0;
        }
        if (r < 0)
            return r;
    }
    r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    *ret_created_user = created;
    return 0;
}

int
sched_identity_set_password(struct sched *s, const char *name, const char *password)
{
    bool exists = false;
    int r = user_exists(s, name, &exists);
    if (r < 0)
        return r;
    if (!exists && strcmp(name, SCHED_ADMIN_USER) != 0)
        return -ENOENT;
    _cleanup_free_ char *hash = NULL;
    r = yun_password_hash_with(password, sched_identity_hash_params(s), &hash);
    if (r < 0)
        return r;

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_user_ Yun__UserRecord *u = NULL;
    r = sched_user_find(txn, name, &u);
    if (r == -ENOENT && strcmp(name, SCHED_ADMIN_USER) == 0) {
        _cleanup_project_ Yun__ProjectRecord *p = NULL;
        r = ensure_admin_project(s, txn, &p);
        if (r == 0)
            r = create_admin_user(s, txn, p, hash);
        if (r < 0)
            return r;
        return yun_txn_commit(TAKE_PTR(txn));
    }
    if (r < 0)
        return r;
    uint64_t now = yun_wall_us();
    sched_pb_take_string(&u->password_hash, TAKE_PTR(hash));
    u->password_changed_us = u->updated_us = now;
    u->failed_logins = 0;
    u->locked_until_us = 0;
    r = sched_user_put(txn, u);
    if (r == 0)
        r = sched_revoke_tokens(s, txn, u->id, "", "password changed");
    if (r == 0)
        r = sched_audit_system(s, txn, "user.set_password", u->id, 0,
                               "password set by yun-scheduler set-password");
    if (r < 0)
        return r;
    return yun_txn_commit(TAKE_PTR(txn));
}
