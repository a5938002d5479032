/* SPDX-License-Identifier: Apache-2.0
 * audit.c: the scheduler's audit log. Every change a caller asks for
 * (image operations, host.set_enabled, any mutating row of the dispatch
 * table) and every request the dispatcher denies leaves one AuditRecord
 * in the "audit" database: who, from which peer, what, on which object,
 * when, with which result, under which request id. Keys are the record's
 * time as 8 big-endian bytes followed by the request id, so LMDB keeps
 * them in time order and a page marker is just a key. Admins read the log
 * with OP_AUDIT_LIST; the cron drops records past the retention.
 *
 * Neighbours: dispatch.c (denied requests, the fallback record of mutating
 * operations), image.c (records written with the change they describe). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "envelope.h"
#include "err.h"
#include "log.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "bus.h"
#include "identity-priv.h"
#include "image.pb-c.h"

YUN_LOG_MODULE("sched.audit");

#define AUDIT_DB "audit"
#define AUDIT_TIME_SIZE 8
#define AUDIT_KEY_MAX (AUDIT_TIME_SIZE + YUN_REQUEST_ID_MAX)
/* A marker is the key in text: 16 hex digits of the time, then the id. */
#define AUDIT_MARKER_MAX (2 * AUDIT_TIME_SIZE + YUN_REQUEST_ID_MAX)
#define AUDIT_DETAIL_MAX 1024
#define AUDIT_LIST_DEFAULT 100
#define AUDIT_LIST_MAX 1000
/* Records dropped per cron run, so that one run stays short. */
#define AUDIT_PRUNE_BATCH 1000

struct audit_entry {
    const char *user;
    const char *project;
    const char *source;
    const char *request_id;
    const char *operation;
    const char *target;
    int result;
    const char *detail;
};

static size_t
audit_key(uint64_t time_us, const char *request_id, uint8_t key[AUDIT_KEY_MAX])
{
    size_t n = strnlen(request_id, YUN_REQUEST_ID_MAX);
    for (int i = 0; i < AUDIT_TIME_SIZE; i++)
        key[i] = (uint8_t)(time_us >> (8 * (AUDIT_TIME_SIZE - 1 - i)));
    memcpy(key + AUDIT_TIME_SIZE, request_id, n);
    return AUDIT_TIME_SIZE + n;
}

static uint64_t
audit_key_time(const uint8_t *key)
{
    uint64_t t = 0;
    for (int i = 0; i < AUDIT_TIME_SIZE; i++)
        t = t << 8 | key[i];
    return t;
}

static int
audit_put(struct yun_txn *txn, const struct audit_entry *e)
{
    Yun__AuditRecord a = YUN__AUDIT_RECORD__INIT;
    a.time_us = yun_wall_us();
    a.user = (char *)(e->user ? e->user : "");
    a.project = (char *)(e->project ? e->project : "");
    a.source = (char *)(e->source ? e->source : "");
    a.request_id = (char *)(e->request_id ? e->request_id : "");
    a.operation = (char *)e->operation;
    a.target = (char *)(e->target ? e->target : "");
    a.result = (char *)(e->result < 0 ? yun_errname(e->result) : "ok");
    /* A detail is a sentence we wrote, possibly quoting user input: bound
     * it so that a record stays small whatever the request held. */
    char detail[AUDIT_DETAIL_MAX];
    snprintf(detail, sizeof detail, "%s", e->detail ? e->detail : "");
    a.detail = detail;

    /* Two records of one request in the same microsecond would share a
     * key: move the later one on by a microsecond. */
    uint8_t key[AUDIT_KEY_MAX];
    size_t key_size;
    int r;
    for (int tries = 0;; tries++) {
        key_size = audit_key(a.time_us, a.request_id, key);
        r = yun_txn_get(txn, AUDIT_DB, key, key_size, NULL, NULL);
        if (r == -ENOENT)
            break;
        if (r < 0)
            return r;
        if (tries == 1000)
            return -EEXIST;
        a.time_us++;
    }

    size_t size = yun__audit_record__get_packed_size(&a);
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    yun__audit_record__pack(&a, buf);
    return yun_txn_put(txn, AUDIT_DB, key, key_size, buf, size);
}

static int
audit_put_own(struct yun_store *store, const struct audit_entry *e)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(store, true, &txn);
    if (r < 0)
        return r;
    r = audit_put(txn, e);
    if (r < 0)
        return r;
    return yun_txn_commit(TAKE_PTR(txn));
}

static void
entry_from_call(const struct sched_call *call, struct audit_entry *e)
{
    e->user = call->user;
    e->project = call->project;
    e->source = call->peer ? call->peer->sender : NULL;
    e->request_id = call->req;
}

/* Adds the record of 'call' doing 'operation' on 'target' with 'result'
 * (0 or a negative code) and 'detail' (may be NULL) to the write
 * transaction 'txn'. Returns 0 or a negative errno from the store; the
 * caller's transaction then fails as a whole. */
int
sched_audit_txn(struct yun_txn *txn, const struct sched_call *call, const char *operation,
                const char *target, int result, const char *detail)
{
    struct audit_entry e = {
        .operation = operation, .target = target, .result = result, .detail = detail,
    };
    entry_from_call(call, &e);
    return audit_put(txn, &e);
}

/* Writes the record of 'call' (see sched_audit_txn) in a write transaction
 * of its own and marks the call audited. A failure to write is logged,
 * never returned: the audit log must not turn an answer into another. */
void
sched_audit(struct sched_call *call, const char *operation, const char *target, int result,
            const char *detail)
{
    struct audit_entry e = {
        .operation = operation, .target = target, .result = result, .detail = detail,
    };
    entry_from_call(call, &e);
    call->audited = true;
    int r = audit_put_own(call->s->store, &e);
    if (r < 0)
        log_req(YUN_LOG_ERR, call->req, r, "cannot write the audit record op=%s target=%s",
                operation, target ? target : "-");
}

/* Records an action of the scheduler itself, in 'txn' or, when 'txn' is
 * NULL, in a transaction of its own. Returns 0 or a negative errno. */
int
sched_audit_system(struct sched *s, struct yun_txn *txn, const char *operation,
                   const char *target, int result, const char *detail)
{
    struct audit_entry e = {
        .user = "scheduler", .source = "scheduler", .operation = operation, .target = target,
        .result = result, .detail = detail,
    };
    int r = txn ? audit_put(txn, &e) : audit_put_own(s->store, &e);
    if (r < 0)
        log_err_errno(r, "cannot write the audit record op=%s target=%s", operation,
                      target ? target : "-");
    return r;
}

/* --- listing ------------------------------------------------------------ */

struct audit_scan {
    const Yun__AuditListRequest *q;
    char user_id[YUN_UUID_STR_SIZE];    /* the id of the user named by q->user, if any */
    char project_id[YUN_UUID_STR_SIZE]; /* the same for q->project */
    size_t limit;
    Yun__AuditRecord **records;
    size_t n;
    char **keys;            /* each record's marker */
    bool more;              /* a matching record follows the page */
    uint8_t skip[AUDIT_KEY_MAX]; /* the marker's key: not repeated */
    size_t skip_size;
    int error;
};

static bool
operation_matches(const char *want, const char *op)
{
    if (!*want)
        return true;
    size_t n = strlen(want);
    if (want[n - 1] == '.')
        return strncmp(op, want, n) == 0;
    return strcmp(op, want) == 0;
}

static int
marker_from_key(const uint8_t *key, size_t key_size, char **ret)
{
    char *m = malloc(AUDIT_MARKER_MAX + 1);
    if (!m)
        return -ENOMEM;
    yun_hex_encode(key, AUDIT_TIME_SIZE, m);
    size_t n = key_size - AUDIT_TIME_SIZE;
    memcpy(m + 2 * AUDIT_TIME_SIZE, key + AUDIT_TIME_SIZE, n);
    m[2 * AUDIT_TIME_SIZE + n] = '\0';
    *ret = m;
    return 0;
}

static int
key_from_marker(const char *marker, uint8_t key[AUDIT_KEY_MAX], size_t *ret_size)
{
    size_t len = strlen(marker);
    if (len < 2 * AUDIT_TIME_SIZE || len > AUDIT_MARKER_MAX)
        return -EINVAL;
    char hex[2 * AUDIT_TIME_SIZE + 1];
    memcpy(hex, marker, 2 * AUDIT_TIME_SIZE);
    hex[2 * AUDIT_TIME_SIZE] = '\0';
    if (yun_hex_decode(hex, key, AUDIT_TIME_SIZE) < 0)
        return -EINVAL;
    memcpy(key + AUDIT_TIME_SIZE, marker + 2 * AUDIT_TIME_SIZE, len - 2 * AUDIT_TIME_SIZE);
    *ret_size = AUDIT_TIME_SIZE + len - 2 * AUDIT_TIME_SIZE;
    return 0;
}

static int
collect_audit(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct audit_scan *sc = data;
    const Yun__AuditListRequest *q = sc->q;
    if (key_size < AUDIT_TIME_SIZE || key_size > AUDIT_KEY_MAX)
        return 0;
    if (sc->skip_size && key_size == sc->skip_size && memcmp(key, sc->skip, key_size) == 0)
        return 0;
    if (q->until_us && audit_key_time(key) > q->until_us)
        return 1;

    Yun__AuditRecord *a = yun__audit_record__unpack(NULL, val_size, val);
    if (!a)
        return -EBADMSG;
    bool match = (!*q->user || strcmp(q->user, a->user) == 0 ||
                  (*sc->user_id && strcmp(sc->user_id, a->user) == 0)) &&
                 (!*q->project || strcmp(q->project, a->project) == 0 ||
                  (*sc->project_id && strcmp(sc->project_id, a->project) == 0)) &&
                 operation_matches(q->operation, a->operation);
    if (!match) {
        yun__audit_record__free_unpacked(a, NULL);
        return 0;
    }
    if (sc->n == sc->limit) {
        yun__audit_record__free_unpacked(a, NULL);
        sc->more = true;
        return 1;
    }
    int r = marker_from_key(key, key_size, &sc->keys[sc->n]);
    if (r < 0) {
        yun__audit_record__free_unpacked(a, NULL);
        return r;
    }
    sc->records[sc->n++] = a;
    return 0;
}

static void
audit_scan_done(struct audit_scan *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        yun__audit_record__free_unpacked(sc->records[i], NULL);
        free(sc->keys[i]);
    }
    free(sc->records);
    free(sc->keys);
}

/* OP_AUDIT_LIST: records in time order, oldest first, filtered by user,
 * project (each an id or a name), operation (exact, or a prefix ending in '.') and time range
 * [since_us, until_us]; 'limit' per page (0 = 100, at most 1000) and
 * 'marker' = the previous page's next_marker. */
int
sched_audit_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__AuditListRequest *q = (const Yun__AuditListRequest *)req;
    if (strlen(q->user) > 255 || strlen(q->project) > 255 || strlen(q->operation) > 64)
        return sched_call_error(call, YUN_E_INVALID, "An audit filter is longer than allowed.");
    if (q->until_us && q->since_us > q->until_us)
        return sched_call_error(call, YUN_E_INVALID,
                                "The time range ends before it starts.");
    if (q->limit > AUDIT_LIST_MAX)
        return sched_call_error(call, YUN_E_INVALID, "The limit of %u is above %d.", q->limit,
                                AUDIT_LIST_MAX);

    _cleanup_(audit_scan_done) struct audit_scan sc = {
        .q = q, .limit = q->limit ? q->limit : AUDIT_LIST_DEFAULT,
    };
    sc.records = calloc(sc.limit, sizeof *sc.records);
    sc.keys = calloc(sc.limit, sizeof *sc.keys);
    if (!sc.records || !sc.keys)
        return -ENOMEM;

    uint8_t start[AUDIT_KEY_MAX];
    size_t start_size = audit_key(q->since_us, "", start);
    if (*q->marker) {
        if (key_from_marker(q->marker, sc.skip, &sc.skip_size) < 0)
            return sched_call_error(call, YUN_E_INVALID, "Marker '%.80s' is not valid.",
                                    q->marker);
        if (memcmp(sc.skip, start, AUDIT_TIME_SIZE) >= 0) {
            memcpy(start, sc.skip, sc.skip_size);
            start_size = sc.skip_size;
        }
    }

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    /* Records name users and projects by id; a filter may name them. */
    if (*q->user) {
        _cleanup_user_ Yun__UserRecord *u = NULL;
        if (sched_user_find(txn, q->user, &u) == 0)
            snprintf(sc.user_id, sizeof sc.user_id, "%s", u->id);
    }
    if (*q->project) {
        _cleanup_project_ Yun__ProjectRecord *p = NULL;
        if (sched_project_find(txn, q->project, &p) == 0)
            snprintf(sc.project_id, sizeof sc.project_id, "%s", p->id);
    }
    r = yun_txn_iterate(txn, AUDIT_DB, start, start_size, collect_audit, &sc);
    if (r < 0)
        return r;

    Yun__AuditListReply y = YUN__AUDIT_LIST_REPLY__INIT;
    y.records = sc.records;
    y.n_records = sc.n;
    y.next_marker = (char *)(sc.more && sc.n ? sc.keys[sc.n - 1] : "");
    return sched_call_reply(call, &y.base);
}

/* --- retention ---------------------------------------------------------- */

struct audit_prune {
    uint64_t cutoff_us;
    uint8_t (*keys)[AUDIT_KEY_MAX];
    size_t *sizes;
    size_t n;
};

static int
collect_old(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct audit_prune *p = data;
    if (key_size < AUDIT_TIME_SIZE || key_size > AUDIT_KEY_MAX)
        return 0;
    if (audit_key_time(key) >= p->cutoff_us || p->n == AUDIT_PRUNE_BATCH)
        return 1;
    memcpy(p->keys[p->n], key, key_size);
    p->sizes[p->n++] = key_size;
    return 0;
}

/* Drops up to a batch of records older than the retention per call; the
 * read pass finds nothing to do in one cursor step when the log is young. */
void
sched_audit_cron(struct sched *s)
{
    if (s->cfg.audit_retention_days == 0)
        return;
    uint64_t keep_us = (uint64_t)s->cfg.audit_retention_days * 86400u * 1000000u;
    uint64_t now = yun_wall_us();
    if (now <= keep_us)
        return;

    struct audit_prune p = { .cutoff_us = now - keep_us };
    _cleanup_free_ uint8_t (*keys)[AUDIT_KEY_MAX] = calloc(AUDIT_PRUNE_BATCH, sizeof *keys);
    _cleanup_free_ size_t *sizes = calloc(AUDIT_PRUNE_BATCH, sizeof *sizes);
    if (!keys || !sizes)
        return;
    p.keys = keys;
    p.sizes = sizes;

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r >= 0)
        r = yun_txn_iterate(txn, AUDIT_DB, NULL, 0, collect_old, &p);
    yun_txn_abortp(&txn);
    if (r < 0 || p.n == 0) {
        if (r < 0)
            log_err_errno(r, "cannot read the audit log for its retention");
        return;
    }

    r = yun_txn_begin(s->store, true, &txn);
    for (size_t i = 0; r >= 0 && i < p.n; i++) {
        r = yun_txn_del(txn, AUDIT_DB, keys[i], sizes[i]);
        if (r == -ENOENT)
            r = 0;
    }
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        log_err_errno(r, "cannot drop old audit records");
    else
        log_info("audit records dropped count=%zu retention_days=%u", p.n,
                 s->cfg.audit_retention_days);
}
