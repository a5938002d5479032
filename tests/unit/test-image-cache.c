/* SPDX-License-Identifier: Apache-2.0
 * test-image-cache.c: unit tests of agent/image-cache.c on a real yun_loop,
 * a real LMDB store and a temp cache dir under $YUN_TEST_DIR, with an
 * in-memory fetcher that serves images from memory, counts shows and reads
 * per image, and can corrupt bytes or fail. Covers: one download shared by
 * concurrent acquires, one file per digest, corrupt cached files fetched
 * again, wrong bytes refused with nothing kept, the format inspector's
 * refusals, eviction under the cap that never touches images in use and
 * follows LRU order, reconcile at restart (orphans, temp files, records
 * without files), retries and failures of the fetcher, release as cancel.
 * The bus fetcher (agent/image-fetch-bus.c) is tested against a bus server
 * on the same loop that answers OP_IMAGE_SHOW and OP_IMAGE_DOWNLOAD, and
 * its window against one that holds the replies until the test answers
 * them (as many reads in flight as slots, completions in order whatever
 * the reply order, deadlines and cancel with several in flight); the
 * report path ends in scheduler/host.c storing what the agent reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "image-cache.h"
#include "log.h"
#include "loop.h"
#include "rpc.h"
#include "scheduler.h"
#include "seal.h"
#include "store.h"
#include "util.h"
#include "host.pb-c.h"
#include "image.pb-c.h"

#define KiB 1024u
#define IMG_SIZE (64 * KiB)
#define CHUNK (16 * KiB)
#define READS_PER_IMAGE (IMG_SIZE / CHUNK)
#define READ_AHEAD 4
#define MAX_IMAGES 16
#define PUMP_LIMIT_MS 20000

static const char *const store_dbs[] = { "self", AGENT_IMAGE_CACHE_DB, NULL };
static const uint8_t test_secret[YUN_SECRET_SIZE] = "yun-test-secret-0123456789abcdef";

/* ---- the in-memory fetcher ---- */

struct mem_image {
    char id[YUN_UUID_STR_SIZE];
    uint8_t *data;
    size_t size;
    char sha512[AGENT_IMAGE_SHA512_HEX + 1]; /* of 'data' as it is */
    char disk_format[16];
    bool corrupt;            /* serve a byte flipped in the middle */
    size_t serve_size;       /* != 0: the source ends the image there */
    int show_error;          /* show fails with it */
    int read_error;          /* reads fail with it ... */
    unsigned read_failures;  /* ... this many times (0: always) */
    unsigned shows, reads;   /* requests served */
    unsigned outstanding;    /* reads asked for and not served or cancelled */
    unsigned max_outstanding;
};

struct mem_req {
    struct mem_req *next;
    struct mem_fetcher *m;
    int timer;
    bool is_read;
    char id[YUN_UUID_STR_SIZE];
    uint64_t offset;
    uint32_t length;
    agent_image_show_done_fn show_done;
    agent_image_read_done_fn read_done;
    void *data;
};

struct mem_fetcher {
    struct agent_image_fetcher base;
    struct yun_loop *loop;
    struct mem_image *images; /* the fixture's */
    size_t *n_images;
    struct mem_req *reqs;
};

static struct mem_image *
mem_find(struct mem_fetcher *m, const char *id)
{
    for (size_t i = 0; i < *m->n_images; i++)
        if (strcmp(m->images[i].id, id) == 0)
            return &m->images[i];
    return NULL;
}

static void
mem_unlink(struct mem_fetcher *m, struct mem_req *q)
{
    for (struct mem_req **p = &m->reqs; *p; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            return;
        }
}

static int64_t
mem_serve(struct yun_loop *loop, int id, void *data)
{
    struct mem_req *q = data;
    struct mem_fetcher *m = q->m;
    mem_unlink(m, q);
    struct mem_image *img = mem_find(m, q->id);
    char msg[128];
    if (img && q->is_read)
        img->outstanding--;
    if (!img) {
        snprintf(msg, sizeof msg, "Image '%s' not found.", q->id);
        if (q->is_read)
            q->read_done(-ENOENT, msg, NULL, q->data);
        else
            q->show_done(-ENOENT, msg, NULL, q->data);
    } else if (!q->is_read) {
        img->shows++;
        if (img->show_error) {
            q->show_done(img->show_error, "The show failed.", NULL, q->data);
        } else {
            struct agent_image_info info = { .size = img->size };
            snprintf(info.sha512, sizeof info.sha512, "%s", img->sha512);
            snprintf(info.disk_format, sizeof info.disk_format, "%s", img->disk_format);
            q->show_done(0, "", &info, q->data);
        }
    } else if (img->read_error && (img->read_failures == 0 || img->read_failures-- > 1)) {
        q->read_done(img->read_error, "The read failed.", NULL, q->data);
    } else {
        if (img->read_error && img->read_failures == 0)
            img->read_error = 0; /* the counted failures are spent */
        img->reads++;
        size_t have = img->serve_size ? img->serve_size : img->size;
        size_t n = q->offset >= have ? 0 : have - q->offset;
        if (n > q->length)
            n = q->length;
        uint8_t *copy = malloc(n ? n : 1);
        assert_non_null(copy);
        memcpy(copy, img->data + q->offset, n);
        uint64_t mid = img->size / 2;
        if (img->corrupt && mid >= q->offset && mid < q->offset + n)
            copy[mid - q->offset] ^= 0x5a;
        struct agent_image_chunk chunk = {
            .data = copy, .size = n, .offset = q->offset, .total_size = img->size,
            .sha512 = img->sha512, .eof = q->offset + n == have,
        };
        q->read_done(0, "", &chunk, q->data);
        free(copy);
    }
    free(q);
    return YUN_LOOP_NOMORE;
}

static int
mem_submit(struct mem_fetcher *m, struct mem_req *q)
{
    q->m = m;
    q->timer = yun_loop_add_timer(m->loop, 0, mem_serve, q, NULL);
    if (q->timer < 0) {
        int r = q->timer;
        free(q);
        return r;
    }
    q->next = m->reqs;
    m->reqs = q;
    return 0;
}

static int
mem_show(struct agent_image_fetcher *f, const char *image_id, agent_image_show_done_fn done,
         void *data)
{
    struct mem_req *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    snprintf(q->id, sizeof q->id, "%s", image_id);
    q->show_done = done;
    q->data = data;
    return mem_submit((struct mem_fetcher *)f, q);
}

static int
mem_read(struct agent_image_fetcher *f, const char *image_id, uint64_t offset, uint32_t length,
         agent_image_read_done_fn done, void *data)
{
    struct mem_req *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    snprintf(q->id, sizeof q->id, "%s", image_id);
    q->is_read = true;
    q->offset = offset;
    q->length = length;
    q->read_done = done;
    q->data = data;
    int r = mem_submit((struct mem_fetcher *)f, q);
    struct mem_image *img = r < 0 ? NULL : mem_find((struct mem_fetcher *)f, image_id);
    if (img && ++img->outstanding > img->max_outstanding)
        img->max_outstanding = img->outstanding;
    return r;
}

static void
mem_cancel(struct agent_image_fetcher *f, void *data)
{
    struct mem_fetcher *m = (struct mem_fetcher *)f;
    for (struct mem_req **p = &m->reqs; *p;) {
        struct mem_req *q = *p;
        if (q->data != data) {
            p = &q->next;
            continue;
        }
        *p = q->next;
        (void)yun_loop_remove_timer(m->loop, q->timer);
        struct mem_image *img = q->is_read ? mem_find(m, q->id) : NULL;
        if (img)
            img->outstanding--;
        free(q);
    }
}

static void
mem_free(struct agent_image_fetcher *f)
{
    struct mem_fetcher *m = (struct mem_fetcher *)f;
    while (m->reqs) {
        struct mem_req *q = m->reqs;
        m->reqs = q->next;
        (void)yun_loop_remove_timer(m->loop, q->timer);
        free(q);
    }
    free(m);
}

static const struct agent_image_fetcher_ops mem_ops = {
    .name = "memory", .show = mem_show, .read = mem_read, .cancel = mem_cancel,
    .free = mem_free,
};

/* ---- fixture ---- */

struct fixture {
    char dir[512];
    char cache_dir[600];
    struct yun_loop *loop;
    struct yun_store *store;
    struct agent_image_cache *cache;
    struct mem_image images[MAX_IMAGES];
    size_t n_images;
    struct agent_image_cache_options opts;
};

struct result {
    int calls;
    int error;
    char path[1024];
    char message[512];
    char user[AGENT_IMAGE_USER_MAX + 1];
    char disk_format[16];
};

static void
on_ready(const struct agent_image_ready *ready, void *data)
{
    struct result *res = data;
    res->calls++;
    res->error = ready->error;
    snprintf(res->path, sizeof res->path, "%s", ready->path ? ready->path : "");
    snprintf(res->message, sizeof res->message, "%s", ready->message);
    snprintf(res->user, sizeof res->user, "%s", ready->user);
    snprintf(res->disk_format, sizeof res->disk_format, "%s",
             ready->disk_format ? ready->disk_format : "");
    if (ready->error == 0) {
        /* What is handed out is the file it names. */
        assert_non_null(ready->sha512);
        assert_non_null(strstr(ready->path, ready->sha512));
    } else {
        assert_null(ready->path);
    }
}

#define PUMP_UNTIL(fx, cond)                                                                \
    do {                                                                                    \
        int64_t end_ = yun_now_ms() + PUMP_LIMIT_MS;                                        \
        while (!(cond)) {                                                                   \
            assert_true(yun_loop_run_once((fx)->loop, 50) >= 0);                            \
            assert_true(yun_now_ms() < end_);                                               \
        }                                                                                   \
    } while (0)

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

static void
sha512_hex(const void *data, size_t size, char out[AGENT_IMAGE_SHA512_HEX + 1])
{
    uint8_t md[64];
    unsigned n = 0;
    assert_int_equal(EVP_Digest(data, size, md, &n, EVP_sha512(), NULL), 1);
    assert_int_equal(n, 64);
    yun_hex_encode(md, n, out);
}

/* Adds an image to the fetcher; 'data' NULL makes a patterned raw image. */
static struct mem_image *
add_image(struct fixture *fx, const char *format, const void *data, size_t size)
{
    assert_true(fx->n_images < MAX_IMAGES);
    struct mem_image *img = &fx->images[fx->n_images++];
    memset(img, 0, sizeof *img);
    assert_int_equal(yun_uuid_new(img->id), 0);
    img->data = malloc(size);
    assert_non_null(img->data);
    img->size = size;
    if (data) {
        memcpy(img->data, data, size);
    } else {
        /* Distinct per image, never a known header. */
        for (size_t i = 0; i < size; i++)
            img->data[i] = (uint8_t)((i * 7 + fx->n_images * 31 + (i >> 9)) & 0xff);
        img->data[0] = 0;
    }
    sha512_hex(img->data, size, img->sha512);
    snprintf(img->disk_format, sizeof img->disk_format, "%s", format);
    return img;
}

static struct agent_image_fetcher *
mem_fetcher_new(struct fixture *fx)
{
    struct mem_fetcher *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->base.ops = &mem_ops;
    m->loop = fx->loop;
    m->images = fx->images;
    m->n_images = &fx->n_images;
    return &m->base;
}

static void
open_cache(struct fixture *fx)
{
    fx->opts.fetcher = mem_fetcher_new(fx);
    assert_int_equal(agent_image_cache_new(&fx->opts, &fx->cache), 0);
}

static void
restart_cache(struct fixture *fx)
{
    fx->cache = agent_image_cache_free(fx->cache);
    open_cache(fx);
}

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
    snprintf(fx->dir, sizeof fx->dir, "%s/test-image-cache.XXXXXX", base);
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->cache_dir, sizeof fx->cache_dir, "%s/images", fx->dir);
    char state_dir[700];
    snprintf(state_dir, sizeof state_dir, "%s/state", fx->dir);
    struct yun_store_options so = { .path = state_dir, .dbs = store_dbs, .schema_version = 1 };
    if (yun_store_open(&so, &fx->store) < 0 || yun_loop_new(&fx->loop) < 0)
        return -1;
    fx->opts = (struct agent_image_cache_options){
        .loop = fx->loop,
        .store = fx->store,
        .dir = fx->cache_dir,
        .max_size = 100 * IMG_SIZE,
        .chunk_size = CHUNK,
        .read_ahead = READ_AHEAD,
    };
    *state = fx;
    return 0;
}

static int
setup_open(void **state)
{
    int r = setup(state);
    if (r == 0)
        open_cache(*state);
    return r;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    fx->cache = agent_image_cache_free(fx->cache);
    fx->loop = yun_loop_free(fx->loop);
    fx->store = yun_store_close(fx->store);
    for (size_t i = 0; i < fx->n_images; i++)
        free(fx->images[i].data);
    int r = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

/* ---- helpers ---- */

static void
acquire(struct fixture *fx, const struct mem_image *img, const char *user, struct result *res)
{
    memset(res, 0, sizeof *res);
    assert_int_equal(agent_image_cache_acquire(fx->cache, img->id, user, on_ready, res), 0);
}

static void
acquire_wait(struct fixture *fx, const struct mem_image *img, const char *user,
             struct result *res)
{
    acquire(fx, img, user, res);
    PUMP_UNTIL(fx, res->calls > 0);
    assert_int_equal(res->calls, 1);
}

static void
acquire_ok(struct fixture *fx, const struct mem_image *img, const char *user)
{
    struct result res;
    acquire_wait(fx, img, user, &res);
    if (res.error)
        fail_msg("acquire of %s failed: %s (%s)", img->id, res.message, yun_errname(res.error));
}

static void
wait_idle(struct fixture *fx)
{
    struct agent_image_cache_stats st;
    for (;;) {
        agent_image_cache_stats(fx->cache, &st);
        if (st.jobs == 0)
            return;
        PUMP_UNTIL(fx, (agent_image_cache_stats(fx->cache, &st), st.jobs == 0));
    }
}

/* Runs the loop for 'ms' milliseconds. */
static void
pump_for(struct fixture *fx, int64_t ms)
{
    int64_t end = yun_now_ms() + ms;
    while (yun_now_ms() < end)
        assert_true(yun_loop_run_once(fx->loop, 10) >= 0);
}

static bool
cached_file_exists(const struct fixture *fx, const struct mem_image *img)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", fx->cache_dir, img->sha512);
    return access(p, F_OK) == 0;
}

/* The file holds exactly the image's bytes. */
static void
assert_cached_file_good(const struct fixture *fx, const struct mem_image *img)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", fx->cache_dir, img->sha512);
    char *data = NULL;
    size_t size = 0;
    assert_int_equal(yun_read_file(p, 16 * IMG_SIZE, &data, &size), 0);
    assert_int_equal(size, img->size);
    assert_memory_equal(data, img->data, size);
    free(data);
}

/* Files in the cache dir: with 'prefix', those it starts; without, those
 * not hidden. */
static size_t
count_dir_entries(const struct fixture *fx, const char *prefix)
{
    DIR *d = opendir(fx->cache_dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += prefix ? strncmp(e->d_name, prefix, strlen(prefix)) == 0 : e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void
corrupt_in_place(const struct fixture *fx, const struct mem_image *img, off_t at)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", fx->cache_dir, img->sha512);
    int fd = open(p, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0xff;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

/* The record in the store, or NULL. */
static Yun__CachedImageRecord *
load_record(struct fixture *fx, const char *id)
{
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->store, false, &txn), 0);
    ProtobufCMessage *m = NULL;
    int r = yun_txn_get_msg(txn, AGENT_IMAGE_CACHE_DB, id, &yun__cached_image_record__descriptor,
                            &m);
    yun_txn_abort(txn);
    if (r == -ENOENT)
        return NULL;
    assert_int_equal(r, 0);
    return (Yun__CachedImageRecord *)m;
}

static size_t
record_users(struct fixture *fx, const char *id)
{
    Yun__CachedImageRecord *rec = load_record(fx, id);
    assert_non_null(rec);
    size_t n = rec->n_users;
    yun__cached_image_record__free_unpacked(rec, NULL);
    return n;
}

/* ---- tests ---- */

/* Three acquires of one image before any byte arrives: one show, one
 * download, three answers with the same verified path; the record holds
 * each user once. A later acquire reads nothing. */
static void
test_concurrent_acquires_share_one_download(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    struct result r1, r2, r3;
    acquire(fx, a, "vm-1", &r1);
    acquire(fx, a, "vm-2", &r2);
    acquire(fx, a, "vm-1", &r3);
    PUMP_UNTIL(fx, r1.calls && r2.calls && r3.calls);
    assert_int_equal(r1.error, 0);
    assert_int_equal(r2.error, 0);
    assert_int_equal(r3.error, 0);
    assert_string_equal(r1.path, r2.path);
    assert_string_equal(r1.disk_format, "raw");
    assert_int_equal(a->shows, 1);
    assert_int_equal(a->reads, READS_PER_IMAGE);
    assert_cached_file_good(fx, a);
    assert_int_equal(record_users(fx, a->id), 2);

    Yun__CachedImageRecord *rec = load_record(fx, a->id);
    assert_string_equal(rec->os_hash_value, a->sha512);
    assert_int_equal(rec->size, IMG_SIZE);
    assert_string_equal(rec->disk_format, "raw");
    assert_int_equal(rec->virtual_size, IMG_SIZE);
    assert_true(rec->last_used_us > 0 && rec->cached_us > 0);
    yun__cached_image_record__free_unpacked(rec, NULL);

    acquire_ok(fx, a, "vm-3");
    assert_int_equal(a->shows, 1);
    assert_int_equal(a->reads, READS_PER_IMAGE);
    assert_int_equal(record_users(fx, a->id), 3);

    struct agent_image_cache_stats st;
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.images, 1);
    assert_int_equal(st.files, 1);
    assert_int_equal(st.bytes, IMG_SIZE);
    assert_int_equal(st.bytes_in_use, IMG_SIZE);
    assert_int_equal(st.fetches, 1);
    assert_int_equal(st.bytes_fetched, IMG_SIZE);
}

/* Two image ids with the same bytes: one file; the second is read back
 * from disk, not downloaded. */
static void
test_same_digest_stored_once(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *b = add_image(fx, "raw", a->data, a->size);
    acquire_ok(fx, a, "vm-1");
    acquire_ok(fx, b, "vm-2");
    assert_int_equal(b->shows, 1);
    assert_int_equal(b->reads, 0);
    struct agent_image_cache_stats st;
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.images, 2);
    assert_int_equal(st.files, 1);
    assert_int_equal(st.bytes, IMG_SIZE);
    assert_int_equal(count_dir_entries(fx, NULL), 1);
}

/* A cached file corrupted on disk (same size, in place) is found on its
 * first use after a restart and fetched again; one whose size changed is
 * found at once; with verify_every_use any change is found. */
static void
test_corrupt_cached_file_fetched_again(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    acquire_ok(fx, a, "vm-1");
    assert_int_equal(agent_image_cache_release(fx->cache, a->id, "vm-1"), 0);
    assert_int_equal(a->reads, READS_PER_IMAGE);

    corrupt_in_place(fx, a, IMG_SIZE / 3);
    restart_cache(fx);
    struct result res;
    acquire_wait(fx, a, "vm-2", &res);
    assert_int_equal(res.error, 0);
    assert_int_equal(a->reads, 2 * READS_PER_IMAGE);
    assert_cached_file_good(fx, a);
    struct agent_image_cache_stats st;
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.verify_failures, 1);

    /* Running, a change of size is seen without reading the file. */
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", fx->cache_dir, a->sha512);
    assert_int_equal(truncate(p, IMG_SIZE - 100), 0);
    acquire_wait(fx, a, "vm-3", &res);
    assert_int_equal(res.error, 0);
    assert_int_equal(a->reads, 3 * READS_PER_IMAGE);
    assert_cached_file_good(fx, a);

    /* Unchanged and verified: handed out without reading anything. */
    acquire_ok(fx, a, "vm-4");
    assert_int_equal(a->reads, 3 * READS_PER_IMAGE);
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.verify_failures, 2);

    /* verify_every_use reads it back each time and sees an in-place flip. */
    fx->opts.verify_every_use = true;
    restart_cache(fx);
    acquire_ok(fx, a, "vm-5");
    assert_int_equal(a->reads, 3 * READS_PER_IMAGE);
    corrupt_in_place(fx, a, 5);
    acquire_ok(fx, a, "vm-6");
    assert_int_equal(a->reads, 4 * READS_PER_IMAGE);
    assert_cached_file_good(fx, a);
    assert_int_equal(record_users(fx, a->id), 5);
}

/* Bytes that do not match the announced sha512: the acquire fails with a
 * clear error, no file or temp file stays, no record is written; the next
 * acquire, with good bytes, works. */
static void
test_digest_mismatch_refused(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    a->corrupt = true;
    struct result r1, r2;
    acquire(fx, a, "vm-1", &r1);
    acquire(fx, a, "vm-2", &r2);
    PUMP_UNTIL(fx, r1.calls && r2.calls);
    assert_int_equal(r1.error, -EBADMSG);
    assert_int_equal(r2.error, -EBADMSG);
    assert_non_null(strstr(r1.message, "failed verification"));
    assert_non_null(strstr(r1.message, "sha512"));
    assert_non_null(strstr(r1.message, a->id));
    assert_int_equal(count_dir_entries(fx, NULL), 0);
    assert_int_equal(count_dir_entries(fx, ".tmp-"), 0);
    assert_null(load_record(fx, a->id));
    struct agent_image_cache_stats st;
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.images, 0);
    assert_int_equal(st.jobs, 0);

    a->corrupt = false;
    acquire_ok(fx, a, "vm-1");
    assert_cached_file_good(fx, a);
}

/* A size the bytes do not reach is refused as well. */
static void
test_short_image_refused(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    /* The source announces IMG_SIZE bytes and ends the image before. */
    a->serve_size = IMG_SIZE - 1000;
    struct result res;
    acquire_wait(fx, a, "vm-1", &res);
    assert_int_equal(res.error, -EBADMSG);
    assert_non_null(strstr(res.message, "ended image"));
    assert_int_equal(count_dir_entries(fx, NULL), 0);
    assert_int_equal(count_dir_entries(fx, ".tmp-"), 0);
}

/* 512 bytes of a qcow2 v3 header that names a backing file. */
static void
qcow2_with_backing(uint8_t buf[512])
{
    memset(buf, 0, 512);
    memcpy(buf, "QFI\xfb", 4);
    buf[7] = 3;                      /* version */
    buf[15] = 0x80;                  /* backing_file_offset = 0x80 */
    buf[19] = 8;                     /* backing_file_size */
    buf[23] = 16;                    /* cluster_bits */
    buf[29] = 0x40;                  /* size = 1 GiB */
    buf[103] = 104;                  /* header_length */
    memcpy(buf + 0x80, "/etc/pas", 8);
}

/* The inspector refuses a qcow2 that names a backing file, claimed as
 * qcow2 or disguised as raw, and a disk larger than the limit. */
static void
test_inspector_refusals(void **state)
{
    struct fixture *fx = *state;
    uint8_t q[512];
    qcow2_with_backing(q);
    struct mem_image *as_raw = add_image(fx, "raw", q, sizeof q);
    struct mem_image *as_qcow2 = add_image(fx, "qcow2", q, sizeof q);
    struct result res;
    acquire_wait(fx, as_raw, "vm-1", &res);
    assert_int_equal(res.error, -EMEDIUMTYPE);
    assert_non_null(strstr(res.message, "format inspector"));
    acquire_wait(fx, as_qcow2, "vm-1", &res);
    assert_int_equal(res.error, -EMEDIUMTYPE);
    assert_non_null(strstr(res.message, "backing-file"));
    assert_int_equal(count_dir_entries(fx, NULL), 0);
    assert_int_equal(count_dir_entries(fx, ".tmp-"), 0);
    assert_null(load_record(fx, as_raw->id));

    fx->opts.max_virtual_size = IMG_SIZE / 2;
    restart_cache(fx);
    struct mem_image *big = add_image(fx, "raw", NULL, IMG_SIZE);
    acquire_wait(fx, big, "vm-1", &res);
    assert_int_equal(res.error, -EMEDIUMTYPE);
    assert_non_null(strstr(res.message, "too-large"));
    assert_int_equal(count_dir_entries(fx, NULL), 0);
}

static void
release(struct fixture *fx, const struct mem_image *img, const char *user)
{
    assert_int_equal(agent_image_cache_release(fx->cache, img->id, user), 0);
}

/* Cap of two and a half images. In-use images stay above the cap; once
 * released, the least recently used go first; an image in use is never
 * evicted. */
static void
test_eviction_spares_images_in_use(void **state)
{
    struct fixture *fx = *state;
    fx->opts.max_size = IMG_SIZE * 5 / 2;
    restart_cache(fx);
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *b = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *c = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *d = add_image(fx, "raw", NULL, IMG_SIZE);
    acquire_ok(fx, a, "vm-a");
    acquire_ok(fx, b, "vm-b");
    acquire_ok(fx, c, "vm-c");
    /* All in use: over the cap, nothing goes. */
    assert_true(cached_file_exists(fx, a) && cached_file_exists(fx, b) &&
                cached_file_exists(fx, c));
    assert_int_equal(agent_image_cache_gc(fx->cache), 0);
    struct agent_image_cache_stats st;
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.bytes, 3 * IMG_SIZE);
    assert_int_equal(st.bytes_in_use, 3 * IMG_SIZE);

    release(fx, a, "vm-a");
    release(fx, b, "vm-b");
    assert_int_equal(agent_image_cache_gc(fx->cache), 1);
    assert_false(cached_file_exists(fx, a)); /* released first: least recent */
    assert_true(cached_file_exists(fx, b));
    assert_true(cached_file_exists(fx, c));
    assert_null(load_record(fx, a->id));

    /* An add over the cap evicts at once: b is the only unused image. */
    acquire_ok(fx, d, "vm-d");
    assert_false(cached_file_exists(fx, b));
    assert_true(cached_file_exists(fx, c));
    assert_true(cached_file_exists(fx, d));
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.bytes, 2 * IMG_SIZE);
    assert_int_equal(st.evictions, 2);

    /* A cap below what is in use keeps everything in use. */
    fx->opts.max_size = 1;
    restart_cache(fx);
    assert_int_equal(agent_image_cache_gc(fx->cache), 0);
    assert_true(cached_file_exists(fx, c));
    assert_true(cached_file_exists(fx, d));
    release(fx, c, "vm-c");
    assert_int_equal(agent_image_cache_gc(fx->cache), 1);
    assert_false(cached_file_exists(fx, c));
    assert_true(cached_file_exists(fx, d));
}

/* LRU order follows uses, not fetch order: A, B fetched, A used again, C
 * added over a cap of two: B goes. */
static void
test_lru_order(void **state)
{
    struct fixture *fx = *state;
    fx->opts.max_size = 2 * IMG_SIZE;
    restart_cache(fx);
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *b = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *c = add_image(fx, "raw", NULL, IMG_SIZE);
    acquire_ok(fx, a, "vm-1");
    release(fx, a, "vm-1");
    acquire_ok(fx, b, "vm-1");
    release(fx, b, "vm-1");
    acquire_ok(fx, a, "vm-2");
    release(fx, a, "vm-2");
    assert_int_equal(a->reads, READS_PER_IMAGE);
    acquire_ok(fx, c, "vm-3");
    assert_true(cached_file_exists(fx, a));
    assert_false(cached_file_exists(fx, b));
    assert_true(cached_file_exists(fx, c));

    /* The order survives a restart: it is in the records. */
    release(fx, c, "vm-3");
    acquire_ok(fx, a, "vm-4");
    release(fx, a, "vm-4");
    restart_cache(fx);
    fx->opts.max_size = IMG_SIZE;
    restart_cache(fx);
    assert_int_equal(agent_image_cache_gc(fx->cache), 1);
    assert_true(cached_file_exists(fx, a));
    assert_false(cached_file_exists(fx, c));
}

/* A restart keeps good entries and their users, drops records whose file
 * went missing, and deletes orphan and temp files but not strangers. */
static void
test_restart_reconciles(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *b = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *orphan = add_image(fx, "raw", NULL, 1000);
    acquire_ok(fx, a, "vm-1");
    acquire_ok(fx, b, "vm-2");
    release(fx, b, "vm-2");
    fx->cache = agent_image_cache_free(fx->cache);

    char p[1024];
    snprintf(p, sizeof p, "%s/%s", fx->cache_dir, b->sha512);
    assert_int_equal(unlink(p), 0);
    snprintf(p, sizeof p, "%s/%s", fx->cache_dir, orphan->sha512);
    assert_int_equal(yun_write_file_atomic(p, orphan->data, orphan->size, 0644), 0);
    snprintf(p, sizeof p, "%s/.tmp-%s-0123456789abcdef", fx->cache_dir, a->id);
    assert_int_equal(yun_write_file_atomic(p, "partial", 7, 0644), 0);
    snprintf(p, sizeof p, "%s/README", fx->cache_dir);
    assert_int_equal(yun_write_file_atomic(p, "mine", 4, 0644), 0);

    open_cache(fx);
    assert_false(cached_file_exists(fx, orphan));
    assert_int_equal(count_dir_entries(fx, ".tmp-"), 0);
    assert_int_equal(access(p, F_OK), 0);
    assert_null(load_record(fx, b->id));
    assert_int_equal(record_users(fx, a->id), 1);
    struct agent_image_cache_stats st;
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.images, 1);
    assert_int_equal(st.bytes_in_use, IMG_SIZE);

    /* A is read back once (first use after start), not fetched. */
    acquire_ok(fx, a, "vm-3");
    assert_int_equal(a->reads, READS_PER_IMAGE);
    assert_int_equal(record_users(fx, a->id), 2);
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.verify_failures, 0);
    /* B is fetched again. */
    acquire_ok(fx, b, "vm-2");
    assert_int_equal(b->reads, 2 * READS_PER_IMAGE);

    /* A record whose file has the wrong size goes with its file. */
    fx->cache = agent_image_cache_free(fx->cache);
    snprintf(p, sizeof p, "%s/%s", fx->cache_dir, b->sha512);
    assert_int_equal(truncate(p, 10), 0);
    open_cache(fx);
    assert_null(load_record(fx, b->id));
    assert_false(cached_file_exists(fx, b));
    Yun__CachedImageRecord *rec = load_record(fx, a->id);
    assert_non_null(rec);
    yun__cached_image_record__free_unpacked(rec, NULL);
}

/* Release before the answer cancels that acquire; the fetch completes and
 * the image stays cached without users. */
static void
test_release_cancels_pending_acquire(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    struct result r1, r2;
    acquire(fx, a, "vm-1", &r1);
    acquire(fx, a, "vm-2", &r2);
    assert_int_equal(agent_image_cache_release(fx->cache, a->id, "vm-1"), 0);
    PUMP_UNTIL(fx, r2.calls > 0);
    wait_idle(fx);
    assert_int_equal(r1.calls, 0);
    assert_int_equal(r2.error, 0);
    assert_int_equal(record_users(fx, a->id), 1);
    assert_int_equal(agent_image_cache_release(fx->cache, a->id, "vm-1"), -ENOENT);
    release(fx, a, "vm-2");
    assert_int_equal(record_users(fx, a->id), 0);
    assert_int_equal(agent_image_cache_release(fx->cache, a->id, "vm-2"), -ENOENT);
    assert_true(cached_file_exists(fx, a));
}

/* Bad arguments are refused at the call; a locked directory at open. */
static void
test_bad_arguments(void **state)
{
    struct fixture *fx = *state;
    struct result res = { 0 };
    char id[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(id), 0);
    assert_int_equal(agent_image_cache_acquire(fx->cache, "debian-12", "vm-1", on_ready, &res),
                     -EINVAL);
    assert_int_equal(agent_image_cache_acquire(fx->cache, id, "", on_ready, &res), -EINVAL);
    assert_int_equal(agent_image_cache_acquire(fx->cache, id, "a/b", on_ready, &res), -EINVAL);
    assert_int_equal(agent_image_cache_acquire(fx->cache, id, "vm-1", NULL, &res), -EINVAL);
    assert_int_equal(agent_image_cache_release(fx->cache, id, "vm-1"), -ENOENT);
    assert_int_equal(res.calls, 0);

    /* One cache per directory: a second one is refused while it is open. */
    struct agent_image_cache_options o = fx->opts;
    struct agent_image_cache *other = NULL;
    o.fetcher = mem_fetcher_new(fx);
    o.read_ahead = AGENT_IMAGE_FETCH_WINDOW_MAX + 1;
    assert_int_equal(agent_image_cache_new(&o, &other), -EINVAL);
    o.read_ahead = READ_AHEAD;
    o.fetcher = mem_fetcher_new(fx);
    assert_int_equal(agent_image_cache_new(&o, &other), -EBUSY);
    assert_null(other);
    fx->cache = agent_image_cache_free(fx->cache);
    o.fetcher = mem_fetcher_new(fx);
    assert_int_equal(agent_image_cache_new(&o, &other), 0);
    other = agent_image_cache_free(other);
    open_cache(fx);
}

struct counter {
    int ok, failed, last_error;
};

static void
on_count(const struct agent_image_ready *ready, void *data)
{
    struct counter *n = data;
    if (ready->error) {
        n->failed++;
        n->last_error = ready->error;
    } else {
        n->ok++;
    }
}

/* Limits: waiters per image and users per image. */
static void
test_limits(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, 4 * KiB);
    struct counter n = { 0 };
    char user[32];
    for (int round = 0; round < AGENT_IMAGE_USERS_MAX / AGENT_IMAGE_WAITERS_MAX; round++) {
        for (int i = 0; i < AGENT_IMAGE_WAITERS_MAX; i++) {
            snprintf(user, sizeof user, "vm-%d", round * AGENT_IMAGE_WAITERS_MAX + i);
            assert_int_equal(agent_image_cache_acquire(fx->cache, a->id, user, on_count, &n),
                             0);
        }
        assert_int_equal(agent_image_cache_acquire(fx->cache, a->id, "one-more", on_count, &n),
                         -EBUSY);
        PUMP_UNTIL(fx, n.ok == (round + 1) * AGENT_IMAGE_WAITERS_MAX);
    }
    assert_int_equal(n.failed, 0);
    assert_int_equal(record_users(fx, a->id), AGENT_IMAGE_USERS_MAX);
    /* Full: a new user is refused, one already there is answered. */
    assert_int_equal(agent_image_cache_acquire(fx->cache, a->id, "vm-new", on_count, &n), 0);
    assert_int_equal(agent_image_cache_acquire(fx->cache, a->id, "vm-7", on_count, &n), 0);
    PUMP_UNTIL(fx, n.failed + n.ok == AGENT_IMAGE_USERS_MAX + 2);
    assert_int_equal(n.failed, 1);
    assert_int_equal(n.last_error, -EBUSY);
    assert_int_equal(record_users(fx, a->id), AGENT_IMAGE_USERS_MAX);
    assert_int_equal(a->reads, 1);
}

/* A download keeps 'read_ahead' reads outstanding, no more, and takes the
 * bytes in order; with read_ahead 1 it asks for one chunk at a time. */
static void
test_read_ahead(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, 10 * CHUNK + 100);
    acquire_ok(fx, a, "vm-1");
    assert_cached_file_good(fx, a);
    assert_int_equal(a->reads, 11);
    assert_int_equal(a->max_outstanding, READ_AHEAD);
    assert_int_equal(a->outstanding, 0);

    fx->opts.read_ahead = 1;
    restart_cache(fx);
    struct mem_image *b = add_image(fx, "raw", NULL, 10 * CHUNK + 100);
    acquire_ok(fx, b, "vm-1");
    assert_cached_file_good(fx, b);
    assert_int_equal(b->reads, 11);
    assert_int_equal(b->max_outstanding, 1);
}

/* A chunk that fails with reads outstanding behind it: a transient failure
 * drops them and starts again at its offset; a lasting one fails the
 * acquire once and leaves no read behind. */
static void
test_read_ahead_failures(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *flaky = add_image(fx, "raw", NULL, 8 * CHUNK);
    flaky->read_error = YUN_E_UNREACHABLE;
    flaky->read_failures = 3;
    acquire_ok(fx, flaky, "vm-1");
    assert_cached_file_good(fx, flaky);
    assert_int_equal(flaky->outstanding, 0);

    struct mem_image *broken = add_image(fx, "raw", NULL, 8 * CHUNK);
    broken->read_error = -EIO;
    struct result res;
    acquire_wait(fx, broken, "vm-1", &res);
    assert_int_equal(res.error, -EIO);
    assert_int_equal(broken->outstanding, 0);
    assert_int_equal(count_dir_entries(fx, ".tmp-"), 0);
    pump_for(fx, 100);
    assert_int_equal(res.calls, 1);
}

/* The fetcher's failures: an unknown image, transient read failures that
 * retries get past, a read that keeps failing (nothing left behind). */
static void
test_fetch_failures(void **state)
{
    struct fixture *fx = *state;
    struct result res;
    struct mem_image ghost = { 0 };
    assert_int_equal(yun_uuid_new(ghost.id), 0);
    acquire_wait(fx, &ghost, "vm-1", &res);
    assert_int_equal(res.error, -ENOENT);
    assert_non_null(strstr(res.message, "not found"));

    struct mem_image *flaky = add_image(fx, "raw", NULL, IMG_SIZE);
    flaky->read_error = YUN_E_UNREACHABLE;
    flaky->read_failures = 2;
    acquire_ok(fx, flaky, "vm-1");
    assert_cached_file_good(fx, flaky);

    struct mem_image *broken = add_image(fx, "raw", NULL, IMG_SIZE);
    broken->read_error = -EIO;
    acquire_wait(fx, broken, "vm-1", &res);
    assert_int_equal(res.error, -EIO);
    assert_false(cached_file_exists(fx, broken));
    assert_int_equal(count_dir_entries(fx, ".tmp-"), 0);

    struct mem_image *down = add_image(fx, "raw", NULL, IMG_SIZE);
    down->show_error = YUN_E_UNREACHABLE;
    acquire_wait(fx, down, "vm-1", &res);
    assert_int_equal(res.error, YUN_E_UNREACHABLE);

    struct agent_image_cache_stats st;
    agent_image_cache_stats(fx->cache, &st);
    assert_int_equal(st.jobs, 0);
    assert_int_equal(st.images, 1);
}

/* More images at once than fetch slots: all are served. */
static void
test_many_images_at_once(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *imgs[6];
    struct result res[6];
    for (size_t i = 0; i < 6; i++) {
        imgs[i] = add_image(fx, "raw", NULL, IMG_SIZE / 2 + i * 1000);
        acquire(fx, imgs[i], "vm-1", &res[i]);
    }
    for (size_t i = 0; i < 6; i++) {
        PUMP_UNTIL(fx, res[i].calls > 0);
        assert_int_equal(res[i].error, 0);
        assert_cached_file_good(fx, imgs[i]);
    }
}

/* Freeing the cache answers pending acquires with -ECANCELED and leaves no
 * temp file behind. */
static void
test_free_cancels(void **state)
{
    struct fixture *fx = *state;
    /* More chunks than are read ahead: the first reads do not end it. */
    struct mem_image *a = add_image(fx, "raw", NULL, 4 * READ_AHEAD * CHUNK);
    struct result res;
    acquire(fx, a, "vm-1", &res);
    /* Let the fetch start: show, then a read or more. */
    PUMP_UNTIL(fx, a->reads >= 1);
    fx->cache = agent_image_cache_free(fx->cache);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.error, -ECANCELED);
    assert_int_equal(count_dir_entries(fx, ".tmp-"), 0);
    open_cache(fx);
}

/* What the agent reports, and the scheduler storing it in the host's
 * record on register and heartbeat. */
static void
test_report_reaches_host_record(void **state)
{
    struct fixture *fx = *state;
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *b = add_image(fx, "raw", NULL, IMG_SIZE / 2);
    acquire_ok(fx, a, "vm-1");
    acquire_ok(fx, a, "vm-2");
    acquire_ok(fx, b, "vm-3");
    release(fx, b, "vm-3");

    Yun__CachedImage **items = NULL;
    size_t n = 0;
    assert_int_equal(agent_image_cache_report(fx->cache, &items, &n), 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        const struct mem_image *img = strcmp(items[i]->image_id, a->id) == 0 ? a : b;
        assert_string_equal(items[i]->os_hash_value, img->sha512);
        assert_int_equal(items[i]->size, img->size);
        assert_int_equal(items[i]->users, img == a ? 2 : 0);
        assert_true(items[i]->last_used_us > 0);
    }

    struct sched s = { 0 };
    char sdir[700];
    snprintf(sdir, sizeof sdir, "%s/sched", fx->dir);
    s.cfg.state_dir = sdir;
    assert_int_equal(sched_store_open(&s), 0);
    struct yun_bus_peer peer = { .sender = "node1", .key_id = "node1", .request_id = "r1" };
    struct sched_call call = {
        .s = &s, .peer = &peer, .peer_kind = YUN__PEER_RECORD__KIND__KIND_AGENT, .req = "r1",
        .user = "node1", .project = "",
    };
    Yun__HostInventory inv = YUN__HOST_INVENTORY__INIT;
    inv.cpus = 2;
    inv.memory_mb = 1024;
    Yun__HostUsage usage = YUN__HOST_USAGE__INIT;
    Yun__HostRegisterRequest reg = YUN__HOST_REGISTER_REQUEST__INIT;
    reg.name = (char *)"node1";
    reg.inventory = &inv;
    reg.usage = &usage;
    reg.heartbeat_interval_s = 5;
    reg.cached_images = items;
    reg.n_cached_images = n;
    assert_int_equal(sched_host_register(&call, &reg.base), 0);
    assert_int_equal(call.error, 0);
    Yun__HostRegisterReply *ry =
        yun__host_register_reply__unpack(NULL, call.payload_size, call.payload);
    assert_non_null(ry);
    char host_id[YUN_UUID_STR_SIZE];
    snprintf(host_id, sizeof host_id, "%s", ry->host_id);
    yun__host_register_reply__free_unpacked(ry, NULL);
    free(call.payload);
    call.payload = NULL;

    Yun__HostShowRequest show = YUN__HOST_SHOW_REQUEST__INIT;
    show.host = (char *)"node1";
    assert_int_equal(sched_host_show(&call, &show.base), 0);
    Yun__HostShowReply *sy = yun__host_show_reply__unpack(NULL, call.payload_size, call.payload);
    assert_non_null(sy);
    assert_int_equal(sy->host->n_cached_images, 2);
    yun__host_show_reply__free_unpacked(sy, NULL);
    free(call.payload);
    call.payload = NULL;

    /* A heartbeat replaces the list. */
    release(fx, a, "vm-1");
    assert_int_equal(agent_image_cache_report(fx->cache, &items, &n), 0);
    Yun__HostHeartbeatRequest hb = YUN__HOST_HEARTBEAT_REQUEST__INIT;
    hb.host_id = host_id;
    hb.usage = &usage;
    hb.seq = 1;
    hb.cached_images = items;
    hb.n_cached_images = 1; /* pretend b was evicted */
    if (strcmp(items[0]->image_id, a->id) != 0)
        hb.cached_images = items + 1;
    assert_int_equal(sched_host_heartbeat(&call, &hb.base), 0);
    free(call.payload);
    call.payload = NULL;
    assert_int_equal(sched_host_show(&call, &show.base), 0);
    sy = yun__host_show_reply__unpack(NULL, call.payload_size, call.payload);
    assert_non_null(sy);
    assert_int_equal(sy->host->n_cached_images, 1);
    assert_string_equal(sy->host->cached_images[0]->image_id, a->id);
    assert_string_equal(sy->host->cached_images[0]->os_hash_value, a->sha512);
    assert_int_equal(sy->host->cached_images[0]->users, 1);
    assert_int_equal(sy->host->cached_images[0]->size, IMG_SIZE);
    yun__host_show_reply__free_unpacked(sy, NULL);
    free(call.payload);
    call.payload = NULL;

    /* A list with a bad digest is refused. */
    Yun__CachedImage bad = YUN__CACHED_IMAGE__INIT;
    Yun__CachedImage *badp = &bad;
    bad.image_id = a->id;
    bad.os_hash_value = (char *)"not-a-digest";
    hb.cached_images = &badp;
    hb.n_cached_images = 1;
    assert_int_equal(sched_host_heartbeat(&call, &hb.base), YUN_E_INVALID);
    assert_non_null(strstr(call.error_message, "invalid"));
    free(call.error_message);
    free(call.payload);
    s.store = yun_store_close(s.store);
}

/* ---- the bus fetcher against a bus server on the same loop ---- */

struct bus_fixture {
    struct fixture *fx;
    size_t max_chunk;   /* the server's own limit per reply */
    unsigned downloads;
};

static int
bus_key(const char *key_id, uint32_t epoch, struct yun_key *ret, int *ret_role, void *data)
{
    if (strcmp(key_id, "node1") != 0 || epoch != 1)
        return YUN_E_UNKNOWN_PEER;
    *ret_role = 1;
    return yun_key_derive(test_secret, sizeof test_secret, key_id, epoch, ret);
}

static int
bus_serve(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
          uint8_t **ret_reply, size_t *ret_size, void *data)
{
    struct bus_fixture *bf = data;
    struct fixture *fx = bf->fx;
    Yun__Request *q = yun__request__unpack(NULL, size, body);
    if (!q)
        return yun_rpc_pack_reply(YUN_E_DECODE, "The request does not decode.", NULL,
                                  ret_reply, ret_size);
    int r;
    if (q->op == YUN__OP__OP_IMAGE_SHOW) {
        Yun__ImageRef *ref = yun__image_ref__unpack(NULL, q->payload.len, q->payload.data);
        struct mem_image *img = NULL;
        for (size_t i = 0; ref && i < fx->n_images; i++)
            if (strcmp(fx->images[i].id, ref->image) == 0)
                img = &fx->images[i];
        if (!img) {
            r = yun_rpc_pack_reply(-ENOENT, "Image not found.", NULL, ret_reply, ret_size);
        } else {
            Yun__ImageRecord rec = YUN__IMAGE_RECORD__INIT;
            rec.id = img->id;
            rec.status = img->show_error ? (char *)"deactivated" : (char *)"active";
            rec.disk_format = img->disk_format;
            rec.size = img->size;
            rec.virtual_size = img->size;
            rec.os_hash_algo = (char *)"sha512";
            rec.os_hash_value = img->sha512;
            Yun__ImageReply y = YUN__IMAGE_REPLY__INIT;
            y.image = &rec;
            r = yun_rpc_pack_reply(0, NULL, &y.base, ret_reply, ret_size);
        }
        if (ref)
            yun__image_ref__free_unpacked(ref, NULL);
    } else if (q->op == YUN__OP__OP_IMAGE_DOWNLOAD) {
        Yun__ImageDownloadRequest *d =
            yun__image_download_request__unpack(NULL, q->payload.len, q->payload.data);
        assert_non_null(d);
        struct mem_image *img = NULL;
        for (size_t i = 0; i < fx->n_images; i++)
            if (strcmp(fx->images[i].id, d->image) == 0)
                img = &fx->images[i];
        assert_non_null(img);
        size_t n = d->offset < img->size ? img->size - d->offset : 0;
        if (d->length && n > d->length)
            n = d->length;
        if (n > bf->max_chunk)
            n = bf->max_chunk;
        Yun__ImageDownloadReply y = YUN__IMAGE_DOWNLOAD_REPLY__INIT;
        y.data.data = img->data + d->offset;
        y.data.len = n;
        y.offset = d->offset;
        y.size = img->size;
        y.os_hash_value = img->sha512;
        y.eof = d->offset + n == img->size;
        bf->downloads++;
        r = yun_rpc_pack_reply(0, NULL, &y.base, ret_reply, ret_size);
        yun__image_download_request__free_unpacked(d, NULL);
    } else {
        r = yun_rpc_pack_reply(YUN_E_BADOP, "Unknown operation.", NULL, ret_reply, ret_size);
    }
    yun__request__free_unpacked(q, NULL);
    return r;
}

static void
test_bus_fetcher(void **state)
{
    struct fixture *fx = *state;
    struct bus_fixture bf = { .fx = fx, .max_chunk = 10000 };
    char url[700];
    snprintf(url, sizeof url, "ipc://%s/bus.sock", fx->dir);
    struct yun_bus_server_options so = {
        .url = url, .self_id = "scheduler", .key = bus_key, .serve = bus_serve, .data = &bf,
    };
    struct yun_bus_server *server = NULL;
    assert_int_equal(yun_bus_server_new(fx->loop, &so, &server), 0);

    struct yun_key key;
    assert_int_equal(yun_key_derive(test_secret, sizeof test_secret, "node1", 1, &key), 0);
    struct yun_bus_client_options co = {
        .url = url, .self_id = "node1", .key_id = "node1", .key_epoch = 1, .key = &key,
        .timeout_ms = 5000,
    };
    struct agent_image_fetcher *f = NULL;
    assert_int_equal(agent_image_fetcher_bus_new(fx->loop, &co, READ_AHEAD, &f), 0);
    fx->cache = agent_image_cache_free(fx->cache);
    fx->opts.fetcher = f;
    assert_int_equal(agent_image_cache_new(&fx->opts, &fx->cache), 0);

    /* The server answers in slices shorter than asked for. */
    struct mem_image *a = add_image(fx, "raw", NULL, IMG_SIZE);
    struct mem_image *b = add_image(fx, "raw", NULL, IMG_SIZE / 2);
    struct result r1, r2, r3;
    acquire(fx, a, "vm-1", &r1);
    acquire(fx, b, "vm-2", &r2);
    acquire(fx, a, "vm-3", &r3);
    PUMP_UNTIL(fx, r1.calls && r2.calls && r3.calls);
    assert_int_equal(r1.error, 0);
    assert_int_equal(r2.error, 0);
    assert_int_equal(r3.error, 0);
    assert_cached_file_good(fx, a);
    assert_cached_file_good(fx, b);
    /* Its first short answer makes each download go on at its size: the
     * reads then in flight (asking at the wrong offsets) are all it
     * wastes. */
    unsigned least = (IMG_SIZE + 9999) / 10000 + (IMG_SIZE / 2 + 9999) / 10000;
    assert_in_range(bf.downloads, least, least + 2 * (READ_AHEAD - 1));

    /* An image the scheduler does not call active is not fetched. */
    struct mem_image *c = add_image(fx, "raw", NULL, IMG_SIZE);
    c->show_error = 1;
    struct result res;
    acquire_wait(fx, c, "vm-1", &res);
    assert_int_equal(res.error, -EACCES);
    assert_non_null(strstr(res.message, "not active"));

    /* The scheduler's own error sentence comes through. */
    struct mem_image ghost = { 0 };
    assert_int_equal(yun_uuid_new(ghost.id), 0);
    acquire_wait(fx, &ghost, "vm-1", &res);
    assert_int_equal(res.error, -ENOENT);
    assert_non_null(strstr(res.message, "Image not found."));

    /* A scheduler that is gone: the request ends at its deadline. */
    fx->cache = agent_image_cache_free(fx->cache);
    server = yun_bus_server_free(server);
    co.timeout_ms = 300;
    assert_int_equal(agent_image_fetcher_bus_new(fx->loop, &co, READ_AHEAD, &f), 0);
    fx->opts.fetcher = f;
    assert_int_equal(agent_image_cache_new(&fx->opts, &fx->cache), 0);
    struct mem_image *d = add_image(fx, "raw", NULL, IMG_SIZE);
    int64_t start = yun_now_ms();
    acquire_wait(fx, d, "vm-1", &res);
    assert_int_equal(res.error, YUN_E_UNREACHABLE);
    assert_true(yun_now_ms() - start < 5000);
}

/* ---- the bus fetcher's window, against a server that answers late ---- */

#define WIN_DEPTH 4
#define WIN_HELD_MAX 32

/* A scheduler that holds every download request (deferred reply) until the
 * test answers it, in whatever order the test likes. */
struct win_server {
    struct fixture *fx;
    struct yun_bus_server *server;
    struct {
        uint64_t handle;
        uint64_t offset;
        uint32_t length;
        size_t image;       /* index in fx->images */
    } held[WIN_HELD_MAX];
    size_t n_held;          /* requests held and not answered yet */
    size_t max_held;        /* the most held at once */
    unsigned received;      /* download requests seen */
};

static int
win_serve(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
          uint8_t **ret_reply, size_t *ret_size, void *data)
{
    struct win_server *ws = data;
    Yun__Request *q = yun__request__unpack(NULL, size, body);
    assert_non_null(q);
    assert_int_equal(q->op, YUN__OP__OP_IMAGE_DOWNLOAD);
    Yun__ImageDownloadRequest *d =
        yun__image_download_request__unpack(NULL, q->payload.len, q->payload.data);
    assert_non_null(d);
    assert_true(ws->n_held < WIN_HELD_MAX);
    size_t i = 0;
    while (i < ws->fx->n_images && strcmp(ws->fx->images[i].id, d->image) != 0)
        i++;
    assert_true(i < ws->fx->n_images);
    uint64_t handle = 0;
    assert_int_equal(yun_bus_server_defer(ws->server, &handle), 0);
    ws->held[ws->n_held].handle = handle;
    ws->held[ws->n_held].offset = d->offset;
    ws->held[ws->n_held].length = d->length;
    ws->held[ws->n_held].image = i;
    ws->n_held++;
    ws->received++;
    if (ws->n_held > ws->max_held)
        ws->max_held = ws->n_held;
    yun__image_download_request__free_unpacked(d, NULL);
    yun__request__free_unpacked(q, NULL);
    return YUN_BUS_DEFERRED;
}

/* Answers held request 'k' with its bytes and forgets it. */
static void
win_answer(struct win_server *ws, size_t k)
{
    assert_true(k < ws->n_held);
    const struct mem_image *img = &ws->fx->images[ws->held[k].image];
    uint64_t off = ws->held[k].offset;
    size_t n = off < img->size ? img->size - off : 0;
    if (n > ws->held[k].length)
        n = ws->held[k].length;
    Yun__ImageDownloadReply y = YUN__IMAGE_DOWNLOAD_REPLY__INIT;
    y.data.data = img->data + off;
    y.data.len = n;
    y.offset = off;
    y.size = img->size;
    y.os_hash_value = (char *)img->sha512;
    y.eof = off + n == img->size;
    _cleanup_free_ uint8_t *reply = NULL;
    size_t reply_size = 0;
    assert_int_equal(yun_rpc_pack_reply(0, NULL, &y.base, &reply, &reply_size), 0);
    assert_int_equal(yun_bus_server_reply(ws->server, ws->held[k].handle, reply, reply_size),
                     0);
    memmove(&ws->held[k], &ws->held[k + 1], (ws->n_held - k - 1) * sizeof ws->held[0]);
    ws->n_held--;
}

/* Completions of reads that share one 'data': in the order they came. */
struct win_log {
    unsigned calls;
    uint64_t offsets[WIN_HELD_MAX];
    int errors[WIN_HELD_MAX];
    bool bytes_ok;          /* every chunk held the image's bytes */
    const struct mem_image *img;
};

static void
win_read_done(int r, const char *message, const struct agent_image_chunk *chunk, void *data)
{
    struct win_log *l = data;
    assert_true(l->calls < WIN_HELD_MAX);
    assert_non_null(message);
    l->offsets[l->calls] = chunk ? chunk->offset : UINT64_MAX;
    l->errors[l->calls] = r;
    if (chunk && (chunk->offset + chunk->size > l->img->size ||
                  memcmp(chunk->data, l->img->data + chunk->offset, chunk->size) != 0))
        l->bytes_ok = false;
    l->calls++;
}

static struct agent_image_fetcher *
win_fetcher_new(struct fixture *fx, const char *url, int timeout_ms)
{
    struct yun_key key;
    assert_int_equal(yun_key_derive(test_secret, sizeof test_secret, "node1", 1, &key), 0);
    struct yun_bus_client_options co = {
        .url = url, .self_id = "node1", .key_id = "node1", .key_epoch = 1, .key = &key,
        .timeout_ms = timeout_ms,
    };
    struct agent_image_fetcher *f = NULL;
    assert_int_equal(agent_image_fetcher_bus_new(fx->loop, &co, WIN_DEPTH, &f), 0);
    return f;
}

/* The bus fetcher keeps WIN_DEPTH reads in flight at once, never more,
 * holds a reply that overtakes an earlier request, and completes the
 * reads in the order they were made. */
static void
test_bus_fetcher_window(void **state)
{
    struct fixture *fx = *state;
    struct win_server ws = { .fx = fx };
    char url[700];
    snprintf(url, sizeof url, "ipc://%s/bus.sock", fx->dir);
    struct yun_bus_server_options so = {
        .url = url, .self_id = "scheduler", .key = bus_key, .serve = win_serve, .data = &ws,
    };
    assert_int_equal(yun_bus_server_new(fx->loop, &so, &ws.server), 0);
    struct agent_image_fetcher *f = win_fetcher_new(fx, url, 5000);
    struct agent_image_fetcher *bad = NULL;
    struct yun_bus_client_options co = { .url = url };
    assert_int_equal(agent_image_fetcher_bus_new(fx->loop, &co, 0, &bad), -EINVAL);
    assert_int_equal(agent_image_fetcher_bus_new(fx->loop, &co,
                                                 AGENT_IMAGE_FETCH_WINDOW_MAX + 1, &bad),
                     -EINVAL);
    assert_null(bad);

    struct mem_image *img = add_image(fx, "raw", NULL, 6 * CHUNK);
    struct win_log log = { .bytes_ok = true, .img = img };
    for (unsigned i = 0; i < 6; i++)
        assert_int_equal(f->ops->read(f, img->id, i * CHUNK, CHUNK, win_read_done, &log), 0);
    assert_int_equal(log.calls, 0); /* never from inside the call */
    PUMP_UNTIL(fx, ws.n_held == WIN_DEPTH);
    pump_for(fx, 200);
    assert_int_equal(ws.n_held, WIN_DEPTH); /* the window, no more */
    assert_int_equal(log.calls, 0);

    /* Answered last to first: nothing completes before the first. */
    for (size_t k = WIN_DEPTH - 1; k > 0; k--)
        win_answer(&ws, k);
    pump_for(fx, 200);
    assert_int_equal(log.calls, 0);
    win_answer(&ws, 0);
    PUMP_UNTIL(fx, log.calls == WIN_DEPTH);
    /* The freed slots took the last two. */
    PUMP_UNTIL(fx, ws.n_held == 2);
    win_answer(&ws, 1);
    win_answer(&ws, 0);
    PUMP_UNTIL(fx, log.calls == 6);
    for (unsigned i = 0; i < 6; i++) {
        assert_int_equal(log.errors[i], 0);
        assert_int_equal(log.offsets[i], i * CHUNK);
    }
    assert_true(log.bytes_ok);
    assert_int_equal(ws.max_held, WIN_DEPTH);
    assert_int_equal(ws.received, 6);

    f->ops->free(f);
    ws.server = yun_bus_server_free(ws.server);
}

/* With WIN_DEPTH reads in flight and none answered, each read completes
 * exactly once with YUN_E_UNREACHABLE at its deadline, in order, and the
 * one queued behind them goes out and ends the same way. A cancel forgets
 * the reads of its 'data' in flight and queued, while the reads of another
 * 'data' go on and complete once each. */
static void
test_bus_fetcher_window_deadline_cancel(void **state)
{
    struct fixture *fx = *state;
    struct win_server ws = { .fx = fx };
    char url[700];
    snprintf(url, sizeof url, "ipc://%s/bus.sock", fx->dir);
    struct yun_bus_server_options so = {
        .url = url, .self_id = "scheduler", .key = bus_key, .serve = win_serve, .data = &ws,
    };
    assert_int_equal(yun_bus_server_new(fx->loop, &so, &ws.server), 0);
    struct mem_image *img = add_image(fx, "raw", NULL, 8 * CHUNK);

    /* Deadlines: one log per read, to count each one's calls. */
    struct agent_image_fetcher *f = win_fetcher_new(fx, url, 300);
    struct win_log logs[WIN_DEPTH + 1];
    for (unsigned i = 0; i <= WIN_DEPTH; i++) {
        logs[i] = (struct win_log){ .bytes_ok = true, .img = img };
        assert_int_equal(f->ops->read(f, img->id, i * CHUNK, CHUNK, win_read_done, &logs[i]),
                         0);
    }
    int64_t start = yun_now_ms();
    PUMP_UNTIL(fx, logs[WIN_DEPTH - 1].calls == 1);
    int64_t took = yun_now_ms() - start;
    assert_true(took >= 250 && took < 2000);
    for (unsigned i = 0; i < WIN_DEPTH; i++) {
        assert_int_equal(logs[i].calls, 1);
        assert_int_equal(logs[i].errors[0], YUN_E_UNREACHABLE);
    }
    /* The fifth waited for a slot, then for its own deadline. */
    assert_int_equal(logs[WIN_DEPTH].calls, 0);
    PUMP_UNTIL(fx, logs[WIN_DEPTH].calls == 1);
    assert_int_equal(logs[WIN_DEPTH].errors[0], YUN_E_UNREACHABLE);
    assert_true(ws.received >= WIN_DEPTH + 1);
    /* Late answers (the server still holds them) reach nobody. */
    while (ws.n_held)
        win_answer(&ws, ws.n_held - 1);
    pump_for(fx, 500);
    for (unsigned i = 0; i <= WIN_DEPTH; i++)
        assert_int_equal(logs[i].calls, 1);
    f->ops->free(f);

    /* Cancel: 'a' fills the window and has one queued, 'b' queues two. */
    f = win_fetcher_new(fx, url, 5000);
    ws.received = 0;
    struct win_log a = { .bytes_ok = true, .img = img }, b = a;
    for (unsigned i = 0; i <= WIN_DEPTH; i++)
        assert_int_equal(f->ops->read(f, img->id, i * CHUNK, CHUNK, win_read_done, &a), 0);
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(f->ops->read(f, img->id, (6 + i) * CHUNK, CHUNK, win_read_done, &b),
                         0);
    PUMP_UNTIL(fx, ws.n_held == WIN_DEPTH);
    f->ops->cancel(f, &a);
    pump_for(fx, 100);
    /* 'a's requests keep their slots until answered: 'b' still waits. */
    assert_int_equal(ws.received, WIN_DEPTH);
    while (ws.n_held)
        win_answer(&ws, 0);
    PUMP_UNTIL(fx, ws.n_held == 2);
    win_answer(&ws, 1);
    win_answer(&ws, 0);
    PUMP_UNTIL(fx, b.calls == 2);
    pump_for(fx, 100);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 2);
    assert_int_equal(b.offsets[0], 6 * CHUNK);
    assert_int_equal(b.offsets[1], 7 * CHUNK);
    assert_true(b.bytes_ok);
    assert_int_equal(ws.received, WIN_DEPTH + 2); /* 'a's queued read never went */

    /* Freed with reads in flight: nobody is called. */
    assert_int_equal(f->ops->read(f, img->id, 0, CHUNK, win_read_done, &a), 0);
    PUMP_UNTIL(fx, ws.n_held == 1);
    f->ops->free(f);
    win_answer(&ws, 0);
    pump_for(fx, 100);
    assert_int_equal(a.calls, 0);
    ws.server = yun_bus_server_free(ws.server);
}

int
main(void)
{
    /* The tests provoke errors on purpose: their log lines are expected. */
    yun_log_max_level = getenv("YUN_TEST_DEBUG") ? YUN_LOG_DEBUG : YUN_LOG_ERR;
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup_open, teardown)
        T(test_concurrent_acquires_share_one_download),
        T(test_same_digest_stored_once),
        T(test_corrupt_cached_file_fetched_again),
        T(test_digest_mismatch_refused),
        T(test_short_image_refused),
        T(test_inspector_refusals),
        T(test_eviction_spares_images_in_use),
        T(test_lru_order),
        T(test_restart_reconciles),
        T(test_release_cancels_pending_acquire),
        T(test_bad_arguments),
        T(test_limits),
        T(test_read_ahead),
        T(test_read_ahead_failures),
        T(test_fetch_failures),
        T(test_many_images_at_once),
        T(test_free_cancels),
        T(test_report_reaches_host_record),
        T(test_bus_fetcher),
        T(test_bus_fetcher_window),
        T(test_bus_fetcher_window_deadline_cancel),
#undef T
    };
    /* YUN_TEST_FILTER=test_bus_* runs some tests (cmocka's glob). */
    if (getenv("YUN_TEST_FILTER"))
        cmocka_set_test_filter(getenv("YUN_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
