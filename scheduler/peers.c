/* SPDX-License-Identifier: Apache-2.0
 * peers.c: the peers that may speak on the bus and their keys. A peer's
 * record (kind, epoch) lives in the "peers" database; its key is derived
 * from the cluster secret with HKDF over its id and epoch, and cached in
 * memory so that the hot path costs one LMDB read, not one HKDF. Bumping a
 * peer's epoch revokes its old key alone. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "yun.pb-c.h"

YUN_LOG_MODULE("sched.peers");

#define KEYCACHE_SLOTS 256

struct keycache_entry {
    char id[YUN_PEER_ID_MAX + 1];
    uint32_t epoch;
    struct yun_key key;
};

/* A small direct-mapped cache: a miss costs one HKDF (a few µs), so
 * collisions are cheap and the cache needs no eviction policy. */
struct sched_keycache {
    struct keycache_entry slots[KEYCACHE_SLOTS];
};

struct sched_keycache *
sched_keycache_free(struct sched_keycache *c)
{
    if (c) {
        yun_wipe(c, sizeof *c);
        free(c);
    }
    return NULL;
}

static size_t
slot_of(const char *id)
{
    uint32_t h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 16777619u;
    return h % KEYCACHE_SLOTS;
}

static int
load_peer(struct yun_txn *txn, const char *id, Yun__PeerRecord **ret)
{
    ProtobufCMessage *m = NULL;
    int r = yun_txn_get_msg(txn, "peers", id, &yun__peer_record__descriptor, &m);
    if (r < 0)
        return r;
    *ret = (Yun__PeerRecord *)m;
    return 0;
}

int
sched_peer_key(const char *key_id, uint32_t epoch, struct yun_key *ret, int *ret_kind,
               void *data)
{
    struct sched *s = data;
    if (strlen(key_id) > YUN_PEER_ID_MAX)
        return YUN_E_UNKNOWN_PEER;

    struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r < 0)
        return r;
    Yun__PeerRecord *p = NULL;
    r = load_peer(txn, key_id, &p);
    yun_txn_abort(txn);
    if (r == -ENOENT)
        return YUN_E_UNKNOWN_PEER;
    if (r < 0)
        return r;
    uint32_t current = p->epoch;
    int kind = p->kind;
    yun__peer_record__free_unpacked(p, NULL);
    if (current != epoch)
        return YUN_E_UNKNOWN_PEER;

    if (!s->keys) {
        s->keys = calloc(1, sizeof *s->keys);
        if (!s->keys)
            return -ENOMEM;
    }
    struct keycache_entry *e = &s->keys->slots[slot_of(key_id)];
    if (e->epoch != epoch || strcmp(e->id, key_id) != 0) {
        r = yun_key_derive(s->secret, sizeof s->secret, key_id, epoch, &e->key);
        if (r < 0) {
            memset(e, 0, sizeof *e);
            return r;
        }
        snprintf(e->id, sizeof e->id, "%s", key_id);
        e->epoch = epoch;
    }
    *ret = e->key;
    *ret_kind = kind;
    return 0;
}

static int
kind_from_string(const char *kind)
{
    if (strcmp(kind, "agent") == 0)
        return YUN__PEER_RECORD__KIND__KIND_AGENT;
    if (strcmp(kind, "operator") == 0)
        return YUN__PEER_RECORD__KIND__KIND_OPERATOR;
    return -EINVAL;
}

/* Registers (or keeps, or with 'rotate' re-keys) peer 'id' of kind 'k'
 * inside 'txn'. */
static int
issue_txn(struct yun_txn *txn, const char *id, int k, bool rotate, uint32_t *ret_epoch)
{
    if (!yun_name_is_valid(id, YUN_PEER_ID_MAX) || strcmp(id, "scheduler") == 0)
        return -EINVAL;
    Yun__PeerRecord *old = NULL;
    int r = load_peer(txn, id, &old);
    if (r < 0 && r != -ENOENT)
        return r;
    Yun__PeerRecord rec = YUN__PEER_RECORD__INIT;
    rec.id = (char *)id;
    rec.kind = k;
    rec.epoch = 1;
    rec.created_us = yun_wall_us();
    if (old) {
        bool same_kind = (int)old->kind == k;
        rec.epoch = rotate ? old->epoch + 1 : old->epoch;
        rec.created_us = old->created_us;
        yun__peer_record__free_unpacked(old, NULL);
        /* An id names one peer: an agent's key can never become an operator's. */
        if (!same_kind)
            return -EEXIST;
    }
    r = yun_txn_put_msg(txn, "peers", id, &rec.base);
    if (r < 0)
        return r;
    *ret_epoch = rec.epoch;
    return 0;
}

int
sched_peer_issue(struct sched *s, const char *id, const char *kind, bool rotate,
                 uint32_t *ret_epoch)
{
    int k = kind_from_string(kind);
    if (k < 0)
        return -EINVAL;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    uint32_t epoch;
    r = issue_txn(txn, id, k, rotate, &epoch);
    if (r < 0)
        return r;
    r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    *ret_epoch = epoch;
    return 0;
}

int
sched_peer_issue_many(struct sched *s, const char *prefix, uint32_t count, const char *kind,
                      bool rotate, uint32_t *ret_max_epoch)
{
    int k = kind_from_string(kind);
    if (k < 0 || count == 0)
        return -EINVAL;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    uint32_t max_epoch = 0;
    for (uint32_t i = 1; i <= count; i++) {
        char id[YUN_PEER_ID_MAX + 16];
        uint32_t epoch;
        snprintf(id, sizeof id, "%s-%u", prefix, i);
        r = issue_txn(txn, id, k, rotate, &epoch);
        if (r < 0)
            return r;
        if (epoch > max_epoch)
            max_epoch = epoch;
    }
    r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    *ret_max_epoch = max_epoch;
    return 0;
}

int
sched_peer_revoke(struct sched *s, const char *id, uint32_t *ret_epoch)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    Yun__PeerRecord *p = NULL;
    r = load_peer(txn, id, &p);
    if (r < 0)
        return r;
    p->epoch++;
    r = yun_txn_put_msg(txn, "peers", id, &p->base);
    uint32_t epoch = p->epoch;
    yun__peer_record__free_unpacked(p, NULL);
    if (r < 0)
        return r;
    r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    *ret_epoch = epoch;
    return 0;
}
