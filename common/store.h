/* SPDX-License-Identifier: Apache-2.0
 * store.h: the LMDB state store. One environment per daemon, one named
 * database per record type (values are protobuf-encoded records from
 * proto/), a "meta" database with the schema version. Durable: every
 * committed write transaction is synced (no MDB_NOSYNC).
 *
 * Borrowed data: values returned by get/iterate point into the LMDB map and
 * are valid only until the transaction ends; copy or unpack them before. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

struct yun_store;
struct yun_txn;

/* Called when the stored schema is older than the program's: migrate the
 * records from 'from' to 'from + 1' inside 'txn'. Returns 0 or negative. */
typedef int (*yun_store_migrate_fn)(struct yun_txn *txn, uint32_t from, void *data);

struct yun_store_options {
    const char *path;          /* directory, created 0700 if missing */
    const char *const *dbs;    /* NULL-terminated names of the record databases */
    uint32_t schema_version;   /* the version this program writes */
    yun_store_migrate_fn migrate; /* may be NULL when there is nothing to migrate */
    void *migrate_data;
    size_t map_size;           /* bytes; 0 = 1 GiB */
};

/* Opens (creating if needed) the environment and its databases and checks
 * the schema: a new store gets 'schema_version'; an older one is migrated
 * step by step in one write transaction; a newer one fails with
 * YUN_E_SCHEMA. Returns 0 and '*ret', or a negative errno / yun_err. */
int yun_store_open(const struct yun_store_options *opts, struct yun_store **ret);
struct yun_store *yun_store_close(struct yun_store *store);
uint32_t yun_store_schema_version(const struct yun_store *store);

/* Begins a read-only ('write' false) or read-write transaction. Only one
 * write transaction exists at a time (LMDB serialises them). */
int yun_txn_begin(struct yun_store *store, bool write, struct yun_txn **ret);
/* Commits and frees 'txn' (for a read transaction: just ends it). On
 * failure the transaction is aborted and freed anyway. */
int yun_txn_commit(struct yun_txn *txn);
/* Aborts and frees; NULL ok. Suits _cleanup_(yun_txn_abortp). */
void yun_txn_abort(struct yun_txn *txn);
static inline void yun_txn_abortp(struct yun_txn **t)
{
    if (*t) {
        yun_txn_abort(*t);
        *t = NULL;
    }
}

/* Raw bytes. 'db' is one of the names given at open, or "meta".
 * -ENOENT when missing; -EINVAL for an unknown db. */
int yun_txn_get(struct yun_txn *txn, const char *db, const void *key, size_t key_size,
                const void **ret_val, size_t *ret_size);
int yun_txn_put(struct yun_txn *txn, const char *db, const void *key, size_t key_size,
                const void *val, size_t val_size);
int yun_txn_del(struct yun_txn *txn, const char *db, const void *key, size_t key_size);

/* Protobuf records keyed by a string. get unpacks a copy owned by the
 * caller (free with protobuf_c_message_free_unpacked); -EBADMSG when the
 * stored bytes do not decode. */
int yun_txn_get_msg(struct yun_txn *txn, const char *db, const char *key,
                    const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret);
int yun_txn_put_msg(struct yun_txn *txn, const char *db, const char *key,
                    const ProtobufCMessage *msg);

/* Calls 'cb' for each key/value in key order, starting at the first key
 * >= 'start' (NULL = from the beginning). 'cb' returns 0 to go on, > 0 to
 * stop early (iterate returns 0), < 0 to fail (iterate returns it). */
typedef int (*yun_store_iter_cb)(const void *key, size_t key_size, const void *val,
                                 size_t val_size, void *data);
int yun_txn_iterate(struct yun_txn *txn, const char *db, const void *start, size_t start_size,
                    yun_store_iter_cb cb, void *data);

/* Number of records in 'db'. */
int yun_txn_count(struct yun_txn *txn, const char *db, size_t *ret_count);
