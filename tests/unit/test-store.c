/* SPDX-License-Identifier: Apache-2.0
 * test-store.c: unit tests for common/store.c, the LMDB state store. Each
 * test gets a fresh directory under $YUN_TEST_DIR (else /tmp), removed
 * afterwards; records use Yun__HostRecord from proto/host.proto. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cleanup.h"
#include "err.h"
#include "host.pb-c.h"
#include "store.h"

struct fixture {
    char dir[2048];  /* the mkdtemp directory, removed by teardown */
    char path[4096]; /* the store inside it; left for open to create */
};

static const char *const test_dbs[] = { "hosts", "vms", NULL };

DEFINE_TRIVIAL_CLEANUP_FUNC(struct yun_store *, yun_store_close)

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

/* ctest names $YUN_TEST_DIR but does not create it. */
static void
make_base(const char *base)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", base);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            (void)mkdir(p, 0755);
            *s = '/';
        }
    (void)mkdir(p, 0755);
}

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *base = getenv("YUN_TEST_DIR");
    if (!base || !*base)
        base = "/tmp";
    make_base(base);
    int n = snprintf(fx->dir, sizeof fx->dir, "%s/test-store.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof fx->dir || !mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/state", fx->dir);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    int r = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

static int
open_store(const struct fixture *fx, uint32_t version, yun_store_migrate_fn migrate,
           void *data, struct yun_store **ret)
{
    struct yun_store_options opts = {
        .path = fx->path,
        .dbs = test_dbs,
        .schema_version = version,
        .migrate = migrate,
        .migrate_data = data,
    };
    return yun_store_open(&opts, ret);
}

static int
put_str(struct yun_txn *txn, const char *db, const char *key, const char *val)
{
    return yun_txn_put(txn, db, key, strlen(key), val, strlen(val));
}

/* Asserts that 'key' in 'db' holds exactly 'want'. */
static void
assert_value(struct yun_txn *txn, const char *db, const char *key, const char *want)
{
    const void *val = NULL;
    size_t size = 0;
    assert_int_equal(yun_txn_get(txn, db, key, strlen(key), &val, &size), 0);
    assert_int_equal(size, strlen(want));
    assert_memory_equal(val, want, size);
}

/* Asserts that the schema version in "meta" is 'want', stored as 4 bytes
 * little-endian. */
static void
assert_schema(struct yun_txn *txn, uint32_t want)
{
    const void *val = NULL;
    size_t size = 0;
    uint8_t b[4] = { want & 0xff, (want >> 8) & 0xff, (want >> 16) & 0xff, want >> 24 };
    assert_int_equal(yun_txn_get(txn, "meta", "schema_version", 14, &val, &size), 0);
    assert_int_equal(size, sizeof b);
    assert_memory_equal(val, b, sizeof b);
}

static void
assert_missing(struct yun_txn *txn, const char *db, const char *key)
{
    const void *val = NULL;
    size_t size = 0;
    assert_int_equal(yun_txn_get(txn, db, key, strlen(key), &val, &size), -ENOENT);
}

/* Returns the bytes of the environment's data file, for "not modified". */
static char *
read_data_file(const struct fixture *fx, size_t *ret_size)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/data.mdb", fx->path);
    _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    *ret_size = got;
    return buf;
}

static void
test_put_get(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);

    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    assert_int_equal(put_str(txn, "hosts", "n1", "first"), 0);
    assert_int_equal(put_str(txn, "vms", "n1", "a vm"), 0);
    /* A write transaction sees its own writes. */
    assert_value(txn, "hosts", "n1", "first");
    assert_int_equal(put_str(txn, "hosts", "n1", "second"), 0);
    /* Binary keys and values, NULs included, go through unchanged. */
    static const uint8_t bkey[] = { 0x00, 0xff, 0x00 };
    static const uint8_t bval[] = { 0x01, 0x00, 0x02 };
    assert_int_equal(yun_txn_put(txn, "vms", bkey, sizeof bkey, bval, sizeof bval), 0);
    assert_int_equal(yun_txn_commit(txn), 0);

    _cleanup_(yun_txn_abortp) struct yun_txn *rtxn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &rtxn), 0);
    assert_value(rtxn, "hosts", "n1", "second");
    assert_value(rtxn, "vms", "n1", "a vm");
    const void *val;
    size_t size;
    assert_int_equal(yun_txn_get(rtxn, "vms", bkey, sizeof bkey, &val, &size), 0);
    assert_int_equal(size, sizeof bval);
    assert_memory_equal(val, bval, sizeof bval);
    /* Both outputs are optional: an existence check. */
    assert_int_equal(yun_txn_get(rtxn, "hosts", "n1", 2, NULL, NULL), 0);
}

static void
test_get_missing(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    const void *val = (const void *)&val;
    size_t size = 42;
    assert_int_equal(yun_txn_get(txn, "hosts", "nope", 4, &val, &size), -ENOENT);
    /* Outputs are not written on failure. */
    assert_ptr_equal(val, (const void *)&val);
    assert_int_equal(size, 42);
}

static void
test_unknown_db(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    const void *val;
    size_t size;
    assert_int_equal(yun_txn_get(txn, "images", "k", 1, &val, &size), -EINVAL);
    assert_int_equal(yun_txn_put(txn, "images", "k", 1, "v", 1), -EINVAL);
    assert_int_equal(yun_txn_del(txn, "images", "k", 1), -EINVAL);
    assert_int_equal(yun_txn_count(txn, "images", &size), -EINVAL);
    assert_int_equal(yun_txn_get(txn, NULL, "k", 1, &val, &size), -EINVAL);
    /* "meta" is always there. */
    assert_int_equal(yun_txn_count(txn, "meta", &size), 0);
    assert_int_equal(size, 1);
}

static void
test_bad_keys(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    const void *val;
    size_t size;
    assert_int_equal(yun_txn_put(txn, "hosts", "", 0, "v", 1), -EINVAL);
    assert_int_equal(yun_txn_put(txn, "hosts", NULL, 0, "v", 1), -EINVAL);
    assert_int_equal(yun_txn_get(txn, "hosts", "", 0, &val, &size), -EINVAL);
    assert_int_equal(yun_txn_del(txn, "hosts", "", 0), -EINVAL);
    Yun__HostRecord rec = YUN__HOST_RECORD__INIT;
    assert_int_equal(yun_txn_put_msg(txn, "hosts", "", &rec.base), -EINVAL);

    /* LMDB's default limit is 511 bytes; 400 fits, 4096 never does. */
    char key[4096];
    memset(key, 'k', sizeof key);
    assert_int_equal(yun_txn_put(txn, "hosts", key, 400, "v", 1), 0);
    assert_int_equal(yun_txn_get(txn, "hosts", key, 400, &val, &size), 0);
    assert_int_equal(yun_txn_put(txn, "hosts", key, sizeof key, "v", 1), -EINVAL);
    assert_int_equal(yun_txn_get(txn, "hosts", key, sizeof key, &val, &size), -EINVAL);
    assert_int_equal(yun_txn_del(txn, "hosts", key, sizeof key), -EINVAL);
    /* A value pointer may be NULL only for an empty value. */
    assert_int_equal(yun_txn_put(txn, "hosts", "k", 1, NULL, 1), -EINVAL);
    assert_int_equal(yun_txn_put(txn, "hosts", "k", 1, NULL, 0), 0);
    assert_int_equal(yun_txn_get(txn, "hosts", "k", 1, &val, &size), 0);
    assert_int_equal(size, 0);
}

static void
test_read_only_put(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    assert_int_equal(put_str(txn, "hosts", "k", "v"), -EACCES);
    assert_int_equal(yun_txn_del(txn, "hosts", "k", 1), -EACCES);
}

struct collect {
    char keys[16][32];
    size_t n;
    size_t stop_after; /* return 1 after this many calls; 0 = never */
    size_t fail_at;    /* return fail_with on this call (1-based); 0 = never */
    int fail_with;
};

static int
collect_cb(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct collect *c = data;
    assert_true(c->n < ELEMENTSOF(c->keys));
    assert_true(key_size < sizeof c->keys[0]);
    memcpy(c->keys[c->n], key, key_size);
    c->keys[c->n][key_size] = '\0';
    /* Every value was written as "v-" + key. */
    assert_int_equal(val_size, key_size + 2);
    assert_memory_equal(val, "v-", 2);
    assert_memory_equal((const char *)val + 2, key, key_size);
    c->n++;
    if (c->fail_at && c->n == c->fail_at)
        return c->fail_with;
    if (c->stop_after && c->n == c->stop_after)
        return 1;
    return 0;
}

/* Fills "hosts" with the keys b, d, a, e, c (out of order on purpose). */
static void
fill_hosts(struct yun_store *store)
{
    static const char *const keys[] = { "b", "d", "a", "e", "c" };
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
        char val[8];
        snprintf(val, sizeof val, "v-%s", keys[i]);
        assert_int_equal(put_str(txn, "hosts", keys[i], val), 0);
    }
    assert_int_equal(yun_txn_commit(txn), 0);
}

static void
test_iterate_order(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);
    fill_hosts(store);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    struct collect c = { 0 };
    assert_int_equal(yun_txn_iterate(txn, "hosts", NULL, 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 5);
    static const char *const want[] = { "a", "b", "c", "d", "e" };
    for (size_t i = 0; i < ELEMENTSOF(want); i++)
        assert_string_equal(c.keys[i], want[i]);

    /* An empty database calls nothing. */
    struct collect none = { 0 };
    assert_int_equal(yun_txn_iterate(txn, "vms", NULL, 0, collect_cb, &none), 0);
    assert_int_equal(none.n, 0);

    assert_int_equal(yun_txn_iterate(txn, "images", NULL, 0, collect_cb, &none), -EINVAL);
    assert_int_equal(yun_txn_iterate(txn, "hosts", "", 0, collect_cb, &none), -EINVAL);
    assert_int_equal(none.n, 0);
}

static void
test_iterate_start(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);
    fill_hosts(store);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);

    /* An existing key starts at itself. */
    struct collect c = { 0 };
    assert_int_equal(yun_txn_iterate(txn, "hosts", "c", 1, collect_cb, &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.keys[0], "c");
    assert_string_equal(c.keys[2], "e");

    /* A key between two starts at the next one. */
    struct collect between = { 0 };
    assert_int_equal(yun_txn_iterate(txn, "hosts", "bb", 2, collect_cb, &between), 0);
    assert_int_equal(between.n, 3);
    assert_string_equal(between.keys[0], "c");

    /* A key past the end calls nothing. */
    struct collect past = { 0 };
    assert_int_equal(yun_txn_iterate(txn, "hosts", "z", 1, collect_cb, &past), 0);
    assert_int_equal(past.n, 0);
}

static void
test_iterate_stop(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);
    fill_hosts(store);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    struct collect c = { .stop_after = 2 };
    assert_int_equal(yun_txn_iterate(txn, "hosts", NULL, 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.keys[1], "b");
}

static void
test_iterate_error(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);
    fill_hosts(store);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    struct collect c = { .fail_at = 3, .fail_with = -ENOTRECOVERABLE };
    assert_int_equal(yun_txn_iterate(txn, "hosts", NULL, 0, collect_cb, &c),
                     -ENOTRECOVERABLE);
    assert_int_equal(c.n, 3);

    /* yun codes pass through as well. */
    struct collect y = { .fail_at = 1, .fail_with = YUN_E_NOHOST };
    assert_int_equal(yun_txn_iterate(txn, "hosts", "d", 1, collect_cb, &y), YUN_E_NOHOST);
    assert_int_equal(y.n, 1);
}

static void
test_delete_count(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);
    fill_hosts(store);

    struct yun_txn *txn = NULL;
    size_t n = 0;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    assert_int_equal(yun_txn_count(txn, "hosts", &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(yun_txn_count(txn, "vms", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(yun_txn_del(txn, "hosts", "c", 1), 0);
    assert_int_equal(yun_txn_del(txn, "hosts", "c", 1), -ENOENT);
    assert_int_equal(yun_txn_del(txn, "vms", "c", 1), -ENOENT);
    assert_int_equal(yun_txn_count(txn, "hosts", &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(yun_txn_commit(txn), 0);

    _cleanup_(yun_txn_abortp) struct yun_txn *rtxn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &rtxn), 0);
    assert_missing(rtxn, "hosts", "c");
    assert_value(rtxn, "hosts", "d", "v-d");
    assert_int_equal(yun_txn_count(rtxn, "hosts", &n), 0);
    assert_int_equal(n, 4);
}

static void
test_abort(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);
    fill_hosts(store);

    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    assert_int_equal(put_str(txn, "hosts", "a", "changed"), 0);
    assert_int_equal(put_str(txn, "hosts", "new", "v-new"), 0);
    assert_int_equal(yun_txn_del(txn, "hosts", "b", 1), 0);
    assert_int_equal(put_str(txn, "vms", "x", "v-x"), 0);
    yun_txn_abort(txn);
    yun_txn_abort(NULL);

    _cleanup_(yun_txn_abortp) struct yun_txn *rtxn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &rtxn), 0);
    assert_value(rtxn, "hosts", "a", "v-a");
    assert_value(rtxn, "hosts", "b", "v-b");
    assert_missing(rtxn, "hosts", "new");
    assert_missing(rtxn, "vms", "x");
    size_t n = 0;
    assert_int_equal(yun_txn_count(rtxn, "hosts", &n), 0);
    assert_int_equal(n, 5);
}

static void
test_reopen(void **state)
{
    struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);
    fill_hosts(store);
    /* Left uncommitted: must not survive the close. */
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    assert_int_equal(put_str(txn, "vms", "lost", "v-lost"), 0);
    yun_txn_abort(txn);
    store = yun_store_close(store);
    assert_null(store);

    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);
    _cleanup_(yun_txn_abortp) struct yun_txn *rtxn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &rtxn), 0);
    struct collect c = { 0 };
    assert_int_equal(yun_txn_iterate(rtxn, "hosts", NULL, 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 5);
    assert_missing(rtxn, "vms", "lost");
    yun_txn_abortp(&rtxn);
    assert_null(yun_store_close(store));
}

/* A read transaction is not tied to its thread (MDB_NOTLS): one thread
 * can hold several next to a write transaction. */
static void
test_concurrent_txns(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);
    fill_hosts(store);

    _cleanup_(yun_txn_abortp) struct yun_txn *r1 = NULL;
    _cleanup_(yun_txn_abortp) struct yun_txn *r2 = NULL;
    struct yun_txn *w = NULL;
    assert_int_equal(yun_txn_begin(store, false, &r1), 0);
    assert_int_equal(yun_txn_begin(store, false, &r2), 0);
    assert_int_equal(yun_txn_begin(store, true, &w), 0);
    assert_int_equal(put_str(w, "hosts", "a", "v2"), 0);
    assert_int_equal(yun_txn_commit(w), 0);
    /* Readers keep their snapshot. */
    assert_value(r1, "hosts", "a", "v-a");
    assert_value(r2, "hosts", "a", "v-a");
    assert_int_equal(yun_txn_commit(r1), 0);
    r1 = NULL;

    _cleanup_(yun_txn_abortp) struct yun_txn *r3 = NULL;
    assert_int_equal(yun_txn_begin(store, false, &r3), 0);
    assert_value(r3, "hosts", "a", "v2");
}

static void
test_schema_new(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 0x01020304, NULL, NULL, &store), 0);
    assert_int_equal(yun_store_schema_version(store), 0x01020304);

    /* Little-endian uint32 under "schema_version". */
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    assert_schema(txn, 0x01020304);
}

static void
test_schema_newer(void **state)
{
    struct fixture *fx = *state;
    struct yun_store *store = NULL;
    assert_int_equal(open_store(fx, 3, NULL, NULL, &store), 0);
    fill_hosts(store);
    store = yun_store_close(store);

    size_t before_size, after_size;
    _cleanup_free_ char *before = read_data_file(fx, &before_size);

    /* Also asks for a database the newer store does not have: refusing
     * must not create it either. */
    static const char *const more_dbs[] = { "hosts", "vms", "images", NULL };
    struct yun_store_options opts = {
        .path = fx->path,
        .dbs = more_dbs,
        .schema_version = 2,
    };
    assert_int_equal(yun_store_open(&opts, &store), YUN_E_SCHEMA);
    assert_null(store);

    _cleanup_free_ char *after = read_data_file(fx, &after_size);
    assert_int_equal(after_size, before_size);
    assert_memory_equal(after, before, before_size);

    /* The newer program still finds everything. */
    assert_int_equal(open_store(fx, 3, NULL, NULL, &store), 0);
    assert_int_equal(yun_store_schema_version(store), 3);
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    assert_value(txn, "hosts", "e", "v-e");
    yun_txn_abort(txn);
    yun_store_close(store);
}

struct migration {
    uint32_t from[8]; /* the 'from' of each call, in order */
    size_t n;
    uint32_t fail_from; /* fail the step from this version; 0 = none */
    int fail_with;
};

static int
migrate_cb(struct yun_txn *txn, uint32_t from, void *data)
{
    struct migration *m = data;
    assert_true(m->n < ELEMENTSOF(m->from));
    m->from[m->n++] = from;

    /* Each step sees the records of the one before. */
    assert_value(txn, "hosts", "a", "v-a");
    char key[32];
    snprintf(key, sizeof key, "migrated-%u", from);
    int r = put_str(txn, "hosts", key, "yes");
    if (r < 0)
        return r;
    if (from == m->fail_from)
        return m->fail_with;
    return 0;
}

static void
test_schema_migrate(void **state)
{
    struct fixture *fx = *state;
    struct yun_store *store = NULL;
    assert_int_equal(open_store(fx, 1, NULL, NULL, &store), 0);
    fill_hosts(store);
    store = yun_store_close(store);

    struct migration m = { 0 };
    assert_int_equal(open_store(fx, 4, migrate_cb, &m, &store), 0);
    assert_int_equal(m.n, 3);
    assert_int_equal(m.from[0], 1);
    assert_int_equal(m.from[1], 2);
    assert_int_equal(m.from[2], 3);
    assert_int_equal(yun_store_schema_version(store), 4);

    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    assert_value(txn, "hosts", "migrated-1", "yes");
    assert_value(txn, "hosts", "migrated-3", "yes");
    assert_schema(txn, 4);
    yun_txn_abort(txn);
    store = yun_store_close(store);

    /* Already current: no step runs. */
    struct migration again = { 0 };
    assert_int_equal(open_store(fx, 4, migrate_cb, &again, &store), 0);
    assert_int_equal(again.n, 0);
    yun_store_close(store);
}

static void
test_schema_migrate_fail(void **state)
{
    struct fixture *fx = *state;
    struct yun_store *store = NULL;
    assert_int_equal(open_store(fx, 1, NULL, NULL, &store), 0);
    fill_hosts(store);
    store = yun_store_close(store);

    struct migration m = { .fail_from = 2, .fail_with = -EPROTO };
    assert_int_equal(open_store(fx, 4, migrate_cb, &m, &store), -EPROTO);
    assert_null(store);
    assert_int_equal(m.n, 2);

    /* Nothing of the failed run stays, the first step included. */
    assert_int_equal(open_store(fx, 1, NULL, NULL, &store), 0);
    assert_int_equal(yun_store_schema_version(store), 1);
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    assert_missing(txn, "hosts", "migrated-1");
    assert_schema(txn, 1);
    yun_txn_abort(txn);
    store = yun_store_close(store);

    /* And a working migration can still run from there. */
    struct migration ok = { 0 };
    assert_int_equal(open_store(fx, 4, migrate_cb, &ok, &store), 0);
    assert_int_equal(ok.n, 3);
    yun_store_close(store);
}

static void
test_schema_no_migrate(void **state)
{
    struct fixture *fx = *state;
    struct yun_store *store = NULL;
    assert_int_equal(open_store(fx, 1, NULL, NULL, &store), 0);
    fill_hosts(store);
    store = yun_store_close(store);

    /* No callback: the records need no change, only the version moves. */
    assert_int_equal(open_store(fx, 5, NULL, NULL, &store), 0);
    assert_int_equal(yun_store_schema_version(store), 5);
    store = yun_store_close(store);

    assert_int_equal(open_store(fx, 4, NULL, NULL, &store), YUN_E_SCHEMA);
    assert_int_equal(open_store(fx, 5, NULL, NULL, &store), 0);
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    assert_value(txn, "hosts", "a", "v-a");
    yun_txn_abort(txn);
    yun_store_close(store);
}

static void
test_schema_corrupt(void **state)
{
    struct fixture *fx = *state;
    struct yun_store *store = NULL;
    assert_int_equal(open_store(fx, 1, NULL, NULL, &store), 0);
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    assert_int_equal(yun_txn_put(txn, "meta", "schema_version", 14, "\x01\x00\x00", 3), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    store = yun_store_close(store);

    assert_int_equal(open_store(fx, 1, NULL, NULL, &store), -EBADMSG);
    assert_null(store);
}

static void
test_bad_options(void **state)
{
    struct fixture *fx = *state;
    struct yun_store *store = NULL;
    static const char *const dup_dbs[] = { "hosts", "hosts", NULL };
    static const char *const meta_dbs[] = { "meta", NULL };
    static const char *const empty_dbs[] = { "", NULL };
    struct yun_store_options opts = { .path = fx->path, .schema_version = 1 };

    assert_int_equal(yun_store_open(NULL, &store), -EINVAL);
    assert_int_equal(yun_store_open(&opts, NULL), -EINVAL);
    opts.dbs = dup_dbs;
    assert_int_equal(yun_store_open(&opts, &store), -EINVAL);
    opts.dbs = meta_dbs;
    assert_int_equal(yun_store_open(&opts, &store), -EINVAL);
    opts.dbs = empty_dbs;
    assert_int_equal(yun_store_open(&opts, &store), -EINVAL);
    opts.dbs = test_dbs;
    opts.path = "";
    assert_int_equal(yun_store_open(&opts, &store), -EINVAL);
    assert_null(store);

    /* A file where the directory should be. */
    char file[4200];
    snprintf(file, sizeof file, "%s/file", fx->dir);
    _cleanup_close_ int fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    opts.path = file;
    assert_int_equal(yun_store_open(&opts, &store), -ENOTDIR);
    assert_null(store);

    /* No record databases at all is fine: just "meta". */
    opts.path = fx->path;
    opts.dbs = NULL;
    assert_int_equal(yun_store_open(&opts, &store), 0);
    yun_store_close(store);
    assert_null(yun_store_close(NULL));
}

static void
test_mkdir(void **state)
{
    struct fixture *fx = *state;
    char nested[4200];
    snprintf(nested, sizeof nested, "%s/a/b/c/", fx->dir);
    struct yun_store_options opts = { .path = nested, .dbs = test_dbs, .schema_version = 1 };
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(yun_store_open(&opts, &store), 0);

    struct stat st;
    assert_int_equal(stat(nested, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0077, 0);
    char data[4300];
    snprintf(data, sizeof data, "%sdata.mdb", nested);
    assert_int_equal(stat(data, &st), 0);
    assert_int_equal(st.st_mode & 0077, 0);
}

static void
test_map_full(void **state)
{
    struct fixture *fx = *state;
    struct yun_store_options opts = {
        .path = fx->path,
        .dbs = test_dbs,
        .schema_version = 1,
        .map_size = 1 << 20,
    };
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(yun_store_open(&opts, &store), 0);

    static char big[64 * 1024];
    memset(big, 'x', sizeof big);
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    int r = 0;
    for (int i = 0; i < 64 && r == 0; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%02d", i);
        r = yun_txn_put(txn, "vms", key, strlen(key), big, sizeof big);
    }
    assert_int_equal(r, -ENOSPC);
    /* LMDB poisons the transaction after MAP_FULL: commit fails, aborts. */
    assert_true(yun_txn_commit(txn) < 0);

    /* The store is still usable afterwards. */
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    assert_int_equal(put_str(txn, "vms", "small", "ok"), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    _cleanup_(yun_txn_abortp) struct yun_txn *rtxn = NULL;
    assert_int_equal(yun_txn_begin(store, false, &rtxn), 0);
    assert_value(rtxn, "vms", "small", "ok");
    size_t n = 0;
    assert_int_equal(yun_txn_count(rtxn, "vms", &n), 0);
    assert_int_equal(n, 1);
}

static void
test_msg_roundtrip(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);

    Yun__HostInventory inv = YUN__HOST_INVENTORY__INIT;
    inv.cpus = 64;
    inv.memory_mb = 512 * 1024;
    inv.arch = "x86_64";
    inv.virt_type = "kvm";
    Yun__HostUsage usage = YUN__HOST_USAGE__INIT;
    usage.load1 = 1.5;
    usage.running_vms = 7;
    Yun__HostRecord rec = YUN__HOST_RECORD__INIT;
    rec.id = "6f1c2a7e-0000-4000-8000-000000000001";
    rec.name = "n3";
    rec.address = "tcp://10.0.0.3:7000";
    rec.inventory = &inv;
    rec.usage = &usage;
    rec.enabled = 1;
    rec.registered_us = UINT64_C(1782900000123456);
    rec.state = "up";
    rec.heartbeat_interval_s = 10;

    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    assert_int_equal(yun_txn_put_msg(txn, "hosts", rec.id, &rec.base), 0);
    assert_int_equal(yun_txn_commit(txn), 0);

    assert_int_equal(yun_txn_begin(store, false, &txn), 0);
    ProtobufCMessage *msg = NULL;
    assert_int_equal(yun_txn_get_msg(txn, "hosts", "missing", &yun__host_record__descriptor,
                                     &msg),
                     -ENOENT);
    assert_null(msg);
    assert_int_equal(yun_txn_get_msg(txn, "hosts", rec.id, &yun__host_record__descriptor,
                                     &msg),
                     0);
    /* The copy is the caller's: it outlives the transaction. */
    yun_txn_abort(txn);

    Yun__HostRecord *got = (Yun__HostRecord *)msg;
    assert_ptr_equal(got->base.descriptor, &yun__host_record__descriptor);
    assert_string_equal(got->id, rec.id);
    assert_string_equal(got->name, "n3");
    assert_string_equal(got->address, rec.address);
    assert_string_equal(got->state, "up");
    assert_true(got->enabled);
    assert_true(got->registered_us == rec.registered_us);
    assert_int_equal(got->heartbeat_interval_s, 10);
    assert_non_null(got->inventory);
    assert_int_equal(got->inventory->cpus, 64);
    assert_true(got->inventory->memory_mb == 512 * 1024);
    assert_string_equal(got->inventory->arch, "x86_64");
    assert_string_equal(got->inventory->virt_type, "kvm");
    assert_non_null(got->usage);
    assert_true(got->usage->load1 == 1.5);
    assert_int_equal(got->usage->running_vms, 7);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void
test_msg_empty(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);

    /* All defaults pack to zero bytes: still a record. */
    Yun__HostRecord rec = YUN__HOST_RECORD__INIT;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    assert_int_equal(yun_txn_put_msg(txn, "hosts", "empty", &rec.base), 0);
    const void *val;
    size_t size = 1;
    assert_int_equal(yun_txn_get(txn, "hosts", "empty", 5, &val, &size), 0);
    assert_int_equal(size, 0);

    ProtobufCMessage *msg = NULL;
    assert_int_equal(yun_txn_get_msg(txn, "hosts", "empty", &yun__host_record__descriptor,
                                     &msg),
                     0);
    Yun__HostRecord *got = (Yun__HostRecord *)msg;
    assert_string_equal(got->id, "");
    assert_null(got->inventory);
    assert_false(got->enabled);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void
test_msg_bad_bytes(void **state)
{
    _cleanup_(yun_store_closep) struct yun_store *store = NULL;
    assert_int_equal(open_store(*state, 1, NULL, NULL, &store), 0);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(store, true, &txn), 0);
    /* Field 1 (id) claims 5 bytes but 1 follows. */
    static const uint8_t truncated[] = { 0x0a, 0x05, 'a' };
    /* A varint that never ends. */
    static const uint8_t endless[] = { 0x40, 0xff, 0xff, 0xff };
    assert_int_equal(yun_txn_put(txn, "hosts", "t", 1, truncated, sizeof truncated), 0);
    assert_int_equal(yun_txn_put(txn, "hosts", "e", 1, endless, sizeof endless), 0);

    ProtobufCMessage *msg = NULL;
    assert_int_equal(yun_txn_get_msg(txn, "hosts", "t", &yun__host_record__descriptor, &msg),
                     -EBADMSG);
    assert_int_equal(yun_txn_get_msg(txn, "hosts", "e", &yun__host_record__descriptor, &msg),
                     -EBADMSG);
    assert_null(msg);
    assert_int_equal(yun_txn_get_msg(txn, "images", "t", &yun__host_record__descriptor, &msg),
                     -EINVAL);
    assert_int_equal(yun_txn_get_msg(txn, "hosts", "", &yun__host_record__descriptor, &msg),
                     -EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_put_get),
        T(test_get_missing),
        T(test_unknown_db),
        T(test_bad_keys),
        T(test_read_only_put),
        T(test_iterate_order),
        T(test_iterate_start),
        T(test_iterate_stop),
        T(test_iterate_error),
        T(test_delete_count),
        T(test_abort),
        T(test_reopen),
        T(test_concurrent_txns),
        T(test_schema_new),
        T(test_schema_newer),
        T(test_schema_migrate),
        T(test_schema_migrate_fail),
        T(test_schema_no_migrate),
        T(test_schema_corrupt),
        T(test_bad_options),
        T(test_mkdir),
        T(test_map_full),
        T(test_msg_roundtrip),
        T(test_msg_empty),
        T(test_msg_bad_bytes),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
