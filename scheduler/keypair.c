/* SPDX-License-Identifier: Apache-2.0
 * keypair.c: SSH keypairs, per user (Nova's os-keypairs). A keypair is a
 * name, an OpenSSH public key line and its fingerprints, in the
 * "keypairs" database keyed by "user_id NUL name", so that two users may
 * each have a "demo". Created keys are made on the worker pool (an RSA key
 * takes up to seconds) and their private half is returned once, in the
 * create reply, and never stored. Imported keys are parsed and validated
 * by common/keypair.h.
 *
 * Callers act on their own keypairs; an admin may name another user.
 * Neighbours: identity.c (user look-ups), identity-admin.c (deleting a
 * user deletes its keypairs). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "dispatch-priv.h"
#include "err.h"
#include "identity-priv.h"
#include "keypair.h"
#include "log.h"
#include "scheduler.h"
#include "seal.h"
#include "store.h"
#include "token.h"
#include "util.h"

YUN_LOG_MODULE("sched.keypair");

#define KEYPAIRS_DB "keypairs"
#define KEYPAIR_NAME_MAX 255
#define KEYPAIRS_PER_USER 100
#define KEYPAIR_KEY_MAX (YUN_TOKEN_ID_MAX + 1 + KEYPAIR_NAME_MAX + 1)

/* The user whose keypairs the call acts on: 'ref' when an admin names
 * one, else the caller. */
static int
owner_of(struct sched_call *call, const char *ref, char ret[YUN_TOKEN_ID_MAX + 1])
{
    if (!*ref || (call->user && strcmp(ref, call->user) == 0)) {
        if (!call->token || !call->user || !*call->user)
            return sched_call_error(call, YUN_E_DENIED, "Keypairs belong to users: log in.");
        snprintf(ret, YUN_TOKEN_ID_MAX + 1, "%s", call->user);
        return 0;
    }
    if (!call->is_admin)
        return sched_call_error(call, YUN_E_DENIED,
                                "Only admins may act on the keypairs of another user.");
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_user_ Yun__UserRecord *u = NULL;
    r = sched_user_find(txn, ref, &u);
    if (r == -ENOENT)
        return sched_call_error(call, -ENOENT, "User '%.255s' not found.", ref);
    if (r < 0)
        return r;
    snprintf(ret, YUN_TOKEN_ID_MAX + 1, "%s", u->id);
    return 0;
}

static int
name_check(struct sched_call *call, const char *name)
{
    if (!yun_name_is_valid(name, KEYPAIR_NAME_MAX))
        return sched_call_error(call, YUN_E_INVALID,
                                "'%.255s' is not a valid keypair name: give 1 to %d of "
                                "[A-Za-z0-9._-], not starting with '.' or '-'.", name,
                                KEYPAIR_NAME_MAX);
    return 0;
}

static size_t
keypair_key(const char *user_id, const char *name, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s%c%s", user_id, 0, name);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

static int
keypair_get(struct yun_txn *txn, const char *user_id, const char *name,
            Yun__KeypairRecord **ret)
{
    char key[KEYPAIR_KEY_MAX];
    size_t n = keypair_key(user_id, name, key, sizeof key);
    if (!n)
        return -ENOENT;
    const void *val;
    size_t size;
    int r = yun_txn_get(txn, KEYPAIRS_DB, key, n, &val, &size);
    if (r < 0)
        return r;
    Yun__KeypairRecord *k = yun__keypair_record__unpack(NULL, size, val);
    if (!k)
        return -EBADMSG;
    *ret = k;
    return 0;
}

static int
keypair_put(struct yun_txn *txn, const Yun__KeypairRecord *k)
{
    char key[KEYPAIR_KEY_MAX];
    size_t n = keypair_key(k->user_id, k->name, key, sizeof key);
    if (!n)
        return -EINVAL;
    size_t size = yun__keypair_record__get_packed_size(k);
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    yun__keypair_record__pack(k, buf);
    return yun_txn_put(txn, KEYPAIRS_DB, key, n, buf, size);
}

static void
keypair_freep(Yun__KeypairRecord **k)
{
    if (*k)
        yun__keypair_record__free_unpacked(*k, NULL);
}

struct count_scan {
    const char *prefix;
    size_t prefix_size;
    size_t n;
    Yun__KeypairRecord **items; /* NULL: count only */
    int error;
};

static int
scan_keypairs(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct count_scan *sc = data;
    if (key_size < sc->prefix_size || memcmp(key, sc->prefix, sc->prefix_size) != 0)
        return 1;
    if (sc->items) {
        if (sc->n == KEYPAIRS_PER_USER)
            return 1;
        Yun__KeypairRecord *k = yun__keypair_record__unpack(NULL, val_size, val);
        if (!k)
            return -EBADMSG;
        sc->items[sc->n] = k;
    }
    sc->n++;
    return 0;
}

static int
count_keypairs(struct yun_txn *txn, const char *user_id, size_t *ret)
{
    char prefix[YUN_TOKEN_ID_MAX + 2];
    int n = snprintf(prefix, sizeof prefix, "%s%c", user_id, 0);
    struct count_scan sc = { .prefix = prefix, .prefix_size = (size_t)n };
    int r = yun_txn_iterate(txn, KEYPAIRS_DB, prefix, sc.prefix_size, scan_keypairs, &sc);
    if (r < 0)
        return r;
    *ret = sc.n;
    return 0;
}

static int
keypair_reply(struct sched_call *call, const Yun__KeypairRecord *k)
{
    Yun__KeypairReply y = YUN__KEYPAIR_REPLY__INIT;
    y.keypair = (Yun__KeypairRecord *)k;
    return sched_call_reply(call, &y.base);
}

/* Stores the keypair 'kp' as 'name' of 'user_id' with the call's audit
 * record; replies with it (and its private key, when it has one). */
static int
keypair_store(struct sched_call *call, const char *user_id, const char *name,
              const struct yun_keypair *kp)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_(keypair_freep) Yun__KeypairRecord *old = NULL;
    r = keypair_get(txn, user_id, name, &old);
    if (r == 0)
        return sched_call_error(call, -EEXIST, "Keypair '%s' exists.", name);
    if (r != -ENOENT)
        return r;
    size_t count;
    r = count_keypairs(txn, user_id, &count);
    if (r < 0)
        return r;
    if (count >= KEYPAIRS_PER_USER)
        return sched_call_error(call, -ENOSPC, "A user may have at most %d keypairs.",
                                KEYPAIRS_PER_USER);
    Yun__KeypairRecord k = YUN__KEYPAIR_RECORD__INIT;
    k.user_id = (char *)user_id;
    k.name = (char *)name;
    k.type = (char *)yun_keypair_type_to_string(kp->type);
    k.bits = kp->bits;
    k.public_key = kp->public_key;
    k.fingerprint = (char *)kp->fingerprint;
    k.fingerprint_md5 = (char *)kp->fingerprint_md5;
    k.created_us = yun_wall_us();
    r = keypair_put(txn, &k);
    if (r == 0)
        r = sched_audit_txn(txn, call, call->op ? call->op->name : "keypair", name, 0, NULL);
    if (r == 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    call->audited = true;
    log_req(YUN_LOG_INFO, call->req, 0, "keypair stored user=%s name=%s fingerprint=%s",
            user_id, name, kp->fingerprint);
    if (kp->private_key) {
        k.private_key = kp->private_key;
        call->wipe_payload = true;
    }
    return keypair_reply(call, &k);
}

struct keygen_job {
    enum yun_keypair_type type;
    unsigned bits;
    char user_id[YUN_TOKEN_ID_MAX + 1];
    char name[KEYPAIR_NAME_MAX + 1];
    struct yun_keypair kp;
};

static void
keygen_job_free(void *data)
{
    struct keygen_job *j = data;
    yun_keypair_done(&j->kp);
    free(j);
}

static int
keygen_work(void *data)
{
    struct keygen_job *j = data;
    return yun_keypair_create(j->type, j->bits, j->name, &j->kp);
}

static int
keygen_resume(struct sched_call *call, int result, void *data)
{
    struct keygen_job *j = data;
    if (result < 0)
        return sched_call_error(call, result, "Cannot create the keypair: %s.",
                                yun_strerror(result));
    return keypair_store(call, j->user_id, j->name, &j->kp);
}

static enum yun_keypair_type
type_from_request(const char *s)
{
    if (!*s || strcmp(s, "ed25519") == 0)
        return YUN_KEYPAIR_ED25519;
    if (strcmp(s, "rsa") == 0)
        return YUN_KEYPAIR_RSA;
    if (strcmp(s, "ecdsa") == 0)
        return YUN_KEYPAIR_ECDSA_P256;
    return yun_keypair_type_from_string(s);
}

/* OP_KEYPAIR_CREATE: a new key made on the pool; the private key comes
 * back once. */
int
sched_keypair_public_key(struct yun_txn *txn, const char *user_id, const char *name, char **ret)
{
    _cleanup_(keypair_freep) Yun__KeypairRecord *k = NULL;
    int r = keypair_get(txn, user_id, name, &k);
    if (r < 0)
        return r;
    *ret = strdup(k->public_key);
    return *ret ? 0 : -ENOMEM;
}

int
sched_keypair_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__KeypairCreateRequest *q = (const Yun__KeypairCreateRequest *)req;
    int r = name_check(call, q->name);
    if (r < 0)
        return r;
    enum yun_keypair_type type = type_from_request(q->type);
    if (type < 0)
        return sched_call_error(call, YUN_E_INVALID,
                                "Unknown key type '%.64s': use ed25519, rsa or ecdsa.", q->type);
    if (q->bits && type != YUN_KEYPAIR_RSA && q->bits != 256)
        return sched_call_error(call, YUN_E_INVALID, "Only RSA keys take a size.");
    if (type == YUN_KEYPAIR_RSA && q->bits &&
        (q->bits < YUN_KEYPAIR_RSA_MIN_BITS || q->bits > YUN_KEYPAIR_RSA_MAX_BITS))
        return sched_call_error(call, YUN_E_INVALID, "RSA keys have %d to %d bits.",
                                YUN_KEYPAIR_RSA_MIN_BITS, YUN_KEYPAIR_RSA_MAX_BITS);
    struct keygen_job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->type = type;
    j->bits = q->bits;
    snprintf(j->name, sizeof j->name, "%s", q->name);
    r = owner_of(call, q->user, j->user_id);
    if (r < 0) {
        free(j);
        return r;
    }
    /* Refuse a taken name before spending the work; the store checks
     * again. */
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, false, &txn);
    _cleanup_(keypair_freep) Yun__KeypairRecord *old = NULL;
    if (r == 0)
        r = keypair_get(txn, j->user_id, j->name, &old);
    yun_txn_abortp(&txn);
    if (r == 0) {
        free(j);
        return sched_call_error(call, -EEXIST, "Keypair '%s' exists.", q->name);
    }
    if (r != -ENOENT) {
        free(j);
        return r;
    }
    r = sched_call_defer(call, keygen_work, keygen_resume, j, keygen_job_free);
    if (r < 0) {
        free(j);
        if (r == -EBUSY)
            return sched_call_error(call, -EBUSY, "The scheduler is busy; try again.");
        return r;
    }
    return 0;
}

int
sched_keypair_import(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__KeypairImportRequest *q = (const Yun__KeypairImportRequest *)req;
    int r = name_check(call, q->name);
    if (r < 0)
        return r;
    char user_id[YUN_TOKEN_ID_MAX + 1];
    r = owner_of(call, q->user, user_id);
    if (r < 0)
        return r;
    if (strlen(q->public_key) > YUN_KEYPAIR_LINE_MAX)
        return sched_call_error(call, YUN_E_INVALID, "The public key is longer than %d bytes.",
                                YUN_KEYPAIR_LINE_MAX);
    struct yun_keypair kp = { 0 };
    _cleanup_free_ char *why = NULL;
    r = yun_keypair_import(q->public_key, &kp, &why);
    if (r == -EINVAL)
        return sched_call_error(call, YUN_E_INVALID, "The public key is not valid: %s",
                                why ? why : "unknown reason.");
    if (r < 0)
        return r;
    r = keypair_store(call, user_id, q->name, &kp);
    yun_keypair_done(&kp);
    return r;
}

int
sched_keypair_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__KeypairListRequest *q = (const Yun__KeypairListRequest *)req;
    char user_id[YUN_TOKEN_ID_MAX + 1];
    int r = owner_of(call, q->user, user_id);
    if (r < 0)
        return r;
    Yun__KeypairRecord *items[KEYPAIRS_PER_USER];
    char prefix[YUN_TOKEN_ID_MAX + 2];
    int n = snprintf(prefix, sizeof prefix, "%s%c", user_id, 0);
    struct count_scan sc = { .prefix = prefix, .prefix_size = (size_t)n, .items = items };
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, false, &txn);
    if (r == 0)
        r = yun_txn_iterate(txn, KEYPAIRS_DB, prefix, sc.prefix_size, scan_keypairs, &sc);
    if (r == 0) {
        Yun__KeypairListReply y = YUN__KEYPAIR_LIST_REPLY__INIT;
        y.keypairs = items;
        y.n_keypairs = sc.n;
        r = sched_call_reply(call, &y.base);
    }
    for (size_t i = 0; i < sc.n; i++)
        yun__keypair_record__free_unpacked(items[i], NULL);
    return r;
}

int
sched_keypair_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__KeypairRef *q = (const Yun__KeypairRef *)req;
    char user_id[YUN_TOKEN_ID_MAX + 1];
    int r = owner_of(call, q->user, user_id);
    if (r < 0)
        return r;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_(keypair_freep) Yun__KeypairRecord *k = NULL;
    r = keypair_get(txn, user_id, q->name, &k);
    if (r == -ENOENT)
        return sched_call_error(call, -ENOENT, "Keypair '%.255s' not found.", q->name);
    if (r < 0)
        return r;
    return keypair_reply(call, k);
}

int
sched_keypair_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__KeypairRef *q = (const Yun__KeypairRef *)req;
    char user_id[YUN_TOKEN_ID_MAX + 1];
    int r = owner_of(call, q->user, user_id);
    if (r < 0)
        return r;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_(keypair_freep) Yun__KeypairRecord *k = NULL;
    r = keypair_get(txn, user_id, q->name, &k);
    if (r == -ENOENT)
        return sched_call_error(call, -ENOENT, "Keypair '%.255s' not found.", q->name);
    if (r < 0)
        return r;
    char key[KEYPAIR_KEY_MAX];
    size_t n = keypair_key(user_id, q->name, key, sizeof key);
    r = yun_txn_del(txn, KEYPAIRS_DB, key, n);
    if (r == 0)
        r = sched_audit_txn(txn, call, "keypair.delete", q->name, 0, NULL);
    if (r == 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    call->audited = true;
    log_req(YUN_LOG_INFO, call->req, 0, "keypair deleted user=%s name=%s", user_id, q->name);
    return keypair_reply(call, k);
}
