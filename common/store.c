/* SPDX-License-Identifier: Apache-2.0
 * store.c: the LMDB state store behind store.h. One environment per daemon,
 * one named database per record type plus "meta" holding the schema
 * version. The scheduler and the agent keep their records here; values are
 * protobuf-c messages from proto/. This file does not log: callers report. */
#include <errno.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "cleanup.h"
#include "err.h"
#include "store.h"

#define STORE_META_DB "meta"
#define STORE_SCHEMA_KEY "schema_version"
#define STORE_DEFAULT_MAP_SIZE ((size_t)1 << 30)
/* Spare handle slots: an unused slot costs a few bytes, and running out
 * makes mdb_dbi_open fail with MDB_DBS_FULL at start-up. */
#define STORE_SPARE_DBS 4

struct store_db {
    char *name;             /* owned copy of the name given at open */
    MDB_dbi dbi;            /* valid for the life of the environment */
};

struct yun_store {
    MDB_env *env;
    uint32_t schema_version; /* the version on disk after open */
    size_t max_key_size;     /* mdb_env_get_maxkeysize(), fixed at build */
    size_t n_dbs;            /* filled entries of 'dbs', "meta" first */
    struct store_db dbs[];
};

struct yun_txn {
    MDB_txn *txn;
    struct yun_store *store; /* borrowed: the store outlives its txns */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(MDB_cursor *, mdb_cursor_close)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct yun_store *, yun_store_close)

/* The one place LMDB results become yun's: LMDB returns either a positive
 * errno or one of its own MDB_* codes, which are negative and would
 * otherwise be mistaken for errno or yun_err values. */
static int
errno_from_mdb(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return -ENOENT;
    case MDB_MAP_FULL:
        return -ENOSPC;
    case MDB_KEYEXIST:
        return -EEXIST;
    default:
        return rc > 0 ? -rc : -EIO;
    }
}

/* Creates 'path' and its missing parents like mkdir -p; existing
 * directories keep their mode. */
static int
mkdir_p(const char *path, mode_t mode)
{
    _cleanup_free_ char *p = strdup(path);
    if (!p)
        return -ENOMEM;

    /* Start past the first byte so an absolute path does not try "". */
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return -errno;
        if (c == '\0')
            return 0;
        *s = c;
    }
}

static int
store_lookup(const struct yun_store *store, const char *name, MDB_dbi *ret_dbi)
{
    if (!name)
        return -EINVAL;
    for (size_t i = 0; i < store->n_dbs; i++)
        if (strcmp(store->dbs[i].name, name) == 0) {
            *ret_dbi = store->dbs[i].dbi;
            return 0;
        }
    return -EINVAL;
}

static int
check_key(const struct yun_store *store, const void *key, size_t key_size)
{
    /* LMDB rejects both with MDB_BAD_VALSIZE, which would reach the
     * caller as -EIO; a bad key is the caller's mistake, not the disk's. */
    if (!key || key_size == 0 || key_size > store->max_key_size)
        return -EINVAL;
    return 0;
}

/* Opens 'name' in the write transaction 'txn' and records its handle. */
static int
store_add_db(struct yun_store *store, MDB_txn *txn, const char *name)
{
    struct store_db *db = &store->dbs[store->n_dbs];
    db->name = strdup(name);
    if (!db->name)
        return -ENOMEM;
    /* Count it now so that close frees the name even if the open fails. */
    store->n_dbs++;
    return errno_from_mdb(mdb_dbi_open(txn, name, MDB_CREATE, &db->dbi));
}

/* Reads the schema version from "meta". -ENOENT for a new store. */
static int
schema_read(MDB_txn *txn, MDB_dbi meta, uint32_t *ret_version)
{
    MDB_val k = { .mv_size = strlen(STORE_SCHEMA_KEY), .mv_data = STORE_SCHEMA_KEY };
    MDB_val v;
    int r = errno_from_mdb(mdb_get(txn, meta, &k, &v));
    if (r < 0)
        return r;
    if (v.mv_size != 4)
        return -EBADMSG;
    /* Byte by byte: the value may be unaligned and the host big-endian. */
    const uint8_t *b = v.mv_data;
    *ret_version = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                   (uint32_t)b[3] << 24;
    return 0;
}

static int
schema_write(MDB_txn *txn, MDB_dbi meta, uint32_t version)
{
    uint8_t b[4] = { version & 0xff, (version >> 8) & 0xff, (version >> 16) & 0xff,
                     (version >> 24) & 0xff };
    MDB_val k = { .mv_size = strlen(STORE_SCHEMA_KEY), .mv_data = STORE_SCHEMA_KEY };
    MDB_val v = { .mv_size = sizeof b, .mv_data = b };
    return errno_from_mdb(mdb_put(txn, meta, &k, &v, 0));
}

static int
count_dbs(const char *const *dbs, size_t *ret_count)
{
    size_t n = 0;
    for (; dbs && dbs[n]; n++) {
        /* "meta" is ours; a record db by that name would mix with it. */
        if (!*dbs[n] || strcmp(dbs[n], STORE_META_DB) == 0)
            return -EINVAL;
        for (size_t i = 0; i < n; i++)
            if (strcmp(dbs[i], dbs[n]) == 0)
                return -EINVAL;
    }
    *ret_count = n;
    return 0;
}

/* Opens the store described by 'opts' (see store.h). The check of the
 * schema, the creation of missing databases and every migration step run
 * in one write transaction, so a failure at any point leaves the file as
 * it was. Returns 0 and a store for yun_store_close in '*ret'; -EINVAL
 * for bad options (empty path, empty, duplicate or "meta" db names);
 * YUN_E_SCHEMA when the stored schema is newer than 'schema_version';
 * -EBADMSG when the stored version is not 4 bytes; the migration's error
 * when a step fails; another negative errno from the file system or
 * LMDB (-EIO for LMDB's own failures). */
int
yun_store_open(const struct yun_store_options *opts, struct yun_store **ret)
{
    if (!opts || !opts->path || !*opts->path || !ret)
        return -EINVAL;

    size_t n;
    int r = count_dbs(opts->dbs, &n);
    if (r < 0)
        return r;

    r = mkdir_p(opts->path, 0700);
    if (r < 0)
        return r;

    _cleanup_(yun_store_closep) struct yun_store *store =
        calloc(1, sizeof *store + (n + 1) * sizeof store->dbs[0]);
    if (!store)
        return -ENOMEM;

    r = errno_from_mdb(mdb_env_create(&store->env));
    if (r < 0)
        return r;
    r = errno_from_mdb(mdb_env_set_maxdbs(store->env, (MDB_dbi)(n + 1 + STORE_SPARE_DBS)));
    if (r < 0)
        return r;
    r = errno_from_mdb(mdb_env_set_mapsize(store->env,
                                           opts->map_size ? opts->map_size
                                                          : STORE_DEFAULT_MAP_SIZE));
    if (r < 0)
        return r;
    /* MDB_NOTLS: a read transaction belongs to its yun_txn, not to the
     * thread, so one thread may hold several and hand them around. No
     * NOSYNC/NOMETASYNC: a committed write must survive a power cut. */
    r = errno_from_mdb(mdb_env_open(store->env, opts->path, MDB_NOTLS, 0600));
    if (r < 0)
        return r;
    /* A daemon that crashed holding a read transaction leaves its reader
     * slot behind, which pins old pages until cleared; best effort. */
    (void)mdb_reader_check(store->env, NULL);
    store->max_key_size = (size_t)mdb_env_get_maxkeysize(store->env);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(store, true, &txn);
    if (r < 0)
        return r;

    r = store_add_db(store, txn->txn, STORE_META_DB);
    if (r < 0)
        return r;
    MDB_dbi meta = store->dbs[0].dbi;

    uint32_t stored;
    bool fresh = false;
    r = schema_read(txn->txn, meta, &stored);
    if (r == -ENOENT) {
        fresh = true;
        stored = opts->schema_version;
    } else if (r < 0) {
        return r;
    }
    /* Checked before any database is created: refusing must not change
     * the file a newer program relies on. */
    if (stored > opts->schema_version)
        return YUN_E_SCHEMA;

    for (size_t i = 0; i < n; i++) {
        r = store_add_db(store, txn->txn, opts->dbs[i]);
        if (r < 0)
            return r;
    }

    for (uint32_t v = stored; v < opts->schema_version; v++) {
        if (!opts->migrate)
            break; /* no record changes between these versions */
        r = opts->migrate(txn, v, opts->migrate_data);
        if (r < 0)
            return r;
    }

    if (fresh || stored != opts->schema_version) {
        r = schema_write(txn->txn, meta, opts->schema_version);
        if (r < 0)
            return r;
    }

    /* Committed even when nothing changed: LMDB keeps the database handles
     * opened in a write transaction only if it commits. */
    r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;

    store->schema_version = opts->schema_version;
    *ret = TAKE_PTR(store);
    return 0;
}

/* Closes the environment and frees 'store'; NULL ok. Every transaction of
 * 'store' must have ended before. Returns NULL. */
struct yun_store *
yun_store_close(struct yun_store *store)
{
    if (!store)
        return NULL;
    if (store->env)
        mdb_env_close(store->env);
    for (size_t i = 0; i < store->n_dbs; i++)
        free(store->dbs[i].name);
    free(store);
    return NULL;
}

/* Returns the schema version of the open store, which after a successful
 * open is always the program's 'schema_version'. */
uint32_t
yun_store_schema_version(const struct yun_store *store)
{
    return store->schema_version;
}

/* Begins a transaction on 'store': read-only unless 'write'. A write
 * transaction waits for any other one to end, so a thread must not begin a
 * second while it holds one: that deadlocks. Returns 0 and '*ret', to end
 * with yun_txn_commit or yun_txn_abort, or a negative errno (-EIO when the
 * reader table is full). */
int
yun_txn_begin(struct yun_store *store, bool write, struct yun_txn **ret)
{
    if (!store || !ret)
        return -EINVAL;

    _cleanup_free_ struct yun_txn *txn = calloc(1, sizeof *txn);
    if (!txn)
        return -ENOMEM;
    int r = errno_from_mdb(mdb_txn_begin(store->env, NULL, write ? 0 : MDB_RDONLY,
                                         &txn->txn));
    if (r < 0)
        return r;
    txn->store = store;
    *ret = TAKE_PTR(txn);
    return 0;
}

/* Commits 'txn' and frees it; values borrowed from it become invalid. For
 * a write transaction, returns once the data is synced. On failure the
 * transaction is aborted and freed anyway; -ENOSPC when the map or the
 * disk is full, -EIO when an earlier operation in 'txn' failed inside
 * LMDB. */
int
yun_txn_commit(struct yun_txn *txn)
{
    if (!txn)
        return -EINVAL;
    /* mdb_txn_commit frees the MDB_txn whether or not it succeeds. */
    int r = errno_from_mdb(mdb_txn_commit(txn->txn));
    free(txn);
    return r;
}

/* Discards 'txn' and frees it; NULL ok. */
void
yun_txn_abort(struct yun_txn *txn)
{
    if (!txn)
        return;
    mdb_txn_abort(txn->txn);
    free(txn);
}

/* Looks up 'key' in 'db'. On success '*ret_val' and '*ret_size' (either
 * may be NULL) describe bytes inside the map, valid until 'txn' ends.
 * -ENOENT when missing; -EINVAL for an unknown db or an empty or too long
 * key. */
int
yun_txn_get(struct yun_txn *txn, const char *db, const void *key, size_t key_size,
            const void **ret_val, size_t *ret_size)
{
    if (!txn)
        return -EINVAL;
    MDB_dbi dbi;
    int r = store_lookup(txn->store, db, &dbi);
    if (r < 0)
        return r;
    r = check_key(txn->store, key, key_size);
    if (r < 0)
        return r;

    MDB_val k = { .mv_size = key_size, .mv_data = (void *)key };
    MDB_val v;
    r = errno_from_mdb(mdb_get(txn->txn, dbi, &k, &v));
    if (r < 0)
        return r;
    if (ret_val)
        *ret_val = v.mv_data;
    if (ret_size)
        *ret_size = v.mv_size;
    return 0;
}

/* Stores 'val' (may be NULL when 'val_size' is 0) under 'key' in 'db',
 * replacing any previous value; LMDB copies the bytes. -EACCES in a read
 * transaction; -ENOSPC when the map is full (the transaction can then only
 * be aborted); -EINVAL for an unknown db or a bad key. */
int
yun_txn_put(struct yun_txn *txn, const char *db, const void *key, size_t key_size,
            const void *val, size_t val_size)
{
    if (!txn || (!val && val_size > 0))
        return -EINVAL;
    MDB_dbi dbi;
    int r = store_lookup(txn->store, db, &dbi);
    if (r < 0)
        return r;
    r = check_key(txn->store, key, key_size);
    if (r < 0)
        return r;

    /* An empty protobuf message packs to zero bytes; LMDB stores that, but
     * wants a non-NULL pointer to copy from. */
    static const uint8_t empty;
    MDB_val k = { .mv_size = key_size, .mv_data = (void *)key };
    MDB_val v = { .mv_size = val_size, .mv_data = (void *)(val ? val : &empty) };
    return errno_from_mdb(mdb_put(txn->txn, dbi, &k, &v, 0));
}

/* Deletes 'key' from 'db'. -ENOENT when it was not there; -EACCES in a
 * read transaction; -EINVAL for an unknown db or a bad key. */
int
yun_txn_del(struct yun_txn *txn, const char *db, const void *key, size_t key_size)
{
    if (!txn)
        return -EINVAL;
    MDB_dbi dbi;
    int r = store_lookup(txn->store, db, &dbi);
    if (r < 0)
        return r;
    r = check_key(txn->store, key, key_size);
    if (r < 0)
        return r;

    MDB_val k = { .mv_size = key_size, .mv_data = (void *)key };
    return errno_from_mdb(mdb_del(txn->txn, dbi, &k, NULL));
}

/* Unpacks the record under the string 'key' (without its NUL) in 'db' as a
 * 'desc' message. On success '*ret' is the caller's, independent of 'txn'
 * (free with protobuf_c_message_free_unpacked). -ENOENT when missing;
 * -EBADMSG when the bytes do not decode (or, indistinguishably, when
 * protobuf-c runs out of memory); -EINVAL as for yun_txn_get. */
int
yun_txn_get_msg(struct yun_txn *txn, const char *db, const char *key,
                const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret)
{
    if (!key || !desc || !ret)
        return -EINVAL;

    const void *val;
    size_t size;
    int r = yun_txn_get(txn, db, key, strlen(key), &val, &size);
    if (r < 0)
        return r;
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, size, val);
    if (!msg)
        return -EBADMSG;
    *ret = msg;
    return 0;
}

/* Packs 'msg' and stores it under the string 'key' (without its NUL) in
 * 'db'. Errors as for yun_txn_put, plus -ENOMEM. */
int
yun_txn_put_msg(struct yun_txn *txn, const char *db, const char *key,
                const ProtobufCMessage *msg)
{
    if (!key || !msg)
        return -EINVAL;

    size_t size = protobuf_c_message_get_packed_size(msg);
    /* malloc(0) may return NULL, which would read as out of memory. */
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    if (protobuf_c_message_pack(msg, buf) != size)
        return -EIO;
    return yun_txn_put(txn, db, key, strlen(key), buf, size);
}

/* Calls 'cb' for each record of 'db' in key order (bytewise), from the
 * first key >= 'start' or, when 'start' is NULL, from the first key. The
 * key and value passed to 'cb' are borrowed until 'txn' ends. Returns 0
 * when the records ran out or 'cb' returned > 0; 'cb''s value when it
 * returned < 0; -EINVAL for an unknown db or an empty or too long
 * non-NULL 'start'. */
int
yun_txn_iterate(struct yun_txn *txn, const char *db, const void *start, size_t start_size,
                yun_store_iter_cb cb, void *data)
{
    if (!txn || !cb)
        return -EINVAL;
    MDB_dbi dbi;
    int r = store_lookup(txn->store, db, &dbi);
    if (r < 0)
        return r;
    if (start) {
        r = check_key(txn->store, start, start_size);
        if (r < 0)
            return r;
    }

    _cleanup_(mdb_cursor_closep) MDB_cursor *cursor = NULL;
    r = errno_from_mdb(mdb_cursor_open(txn->txn, dbi, &cursor));
    if (r < 0)
        return r;

    MDB_val k = { .mv_size = start_size, .mv_data = (void *)start };
    MDB_val v;
    MDB_cursor_op op = start ? MDB_SET_RANGE : MDB_FIRST;
    for (;;) {
        r = errno_from_mdb(mdb_cursor_get(cursor, &k, &v, op));
        if (r == -ENOENT)
            return 0;
        if (r < 0)
            return r;
        r = cb(k.mv_data, k.mv_size, v.mv_data, v.mv_size, data);
        if (r < 0)
            return r;
        if (r > 0)
            return 0;
        op = MDB_NEXT;
    }
}

/* Stores the number of records in 'db' in '*ret_count'. -EINVAL for an
 * unknown db. */
int
yun_txn_count(struct yun_txn *txn, const char *db, size_t *ret_count)
{
    if (!txn || !ret_count)
        return -EINVAL;
    MDB_dbi dbi;
    int r = store_lookup(txn->store, db, &dbi);
    if (r < 0)
        return r;

    MDB_stat st;
    r = errno_from_mdb(mdb_stat(txn->txn, dbi, &st));
    if (r < 0)
        return r;
    *ret_count = st.ms_entries;
    return 0;
}
