/* SPDX-License-Identifier: Apache-2.0
 * test-image-registry.c: unit tests for the scheduler's image registry
 * (scheduler/image.c, image-store.c) and audit log (scheduler/audit.c) at
 * the handler layer. Each test builds a struct sched on a fresh state
 * directory under $YUN_TEST_DIR and calls the handlers directly with
 * callers of different projects (p1, p2, p3, an admin, an agent), as the
 * dispatcher does from their tokens; a few go through sched_dispatch (with
 * an admin token) to check the table's privileges and its audit of denied
 * requests.
 *
 * qemu-img, when present, makes a real qcow2; the hostile images are
 * crafted bytes, so the inspector cases run without it too. */
#include <errno.h>
#include <fcntl.h>
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
#include <sys/statvfs.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "bus.h"
#include "cleanup.h"
#include "digest.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "scheduler.h"
#include "store.h"
#include "token.h"
#include "util.h"
#include "host.pb-c.h"
#include "image.pb-c.h"
#include "yun.pb-c.h"

#define CHUNK 65536

struct fixture {
    char dir[1024];
    char images[1300];
    struct sched s;
    unsigned seq;
};

struct who {
    const char *user;
    const char *project;
    bool admin;
    int kind;
};

static const struct who P1 = { "u1", "p1", false, YUN__PEER_RECORD__KIND__KIND_OPERATOR };
static const struct who P2 = { "u2", "p2", false, YUN__PEER_RECORD__KIND__KIND_OPERATOR };
static const struct who P3 = { "u3", "p3", false, YUN__PEER_RECORD__KIND__KIND_OPERATOR };
static const struct who ADMIN = { "root", "admin", true, YUN__PEER_RECORD__KIND__KIND_OPERATOR };
static const struct who AGENT = { "host1", "", false, YUN__PEER_RECORD__KIND__KIND_AGENT };

typedef int (*handler_fn)(struct sched_call *call, const ProtobufCMessage *req);

/* --- fixture ---------------------------------------------------------------- */

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

static void
open_sched(struct fixture *fx)
{
    assert_int_equal(sched_store_open(&fx->s), 0);
    assert_int_equal(sched_image_init(&fx->s), 0);
}

static void
close_sched(struct fixture *fx)
{
    sched_identity_done(&fx->s);
    sched_image_done(&fx->s);
    fx->s.store = yun_store_close(fx->s.store);
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
    if (yun_mkdir_p(base, 0755) < 0)
        return -1;
    snprintf(fx->dir, sizeof fx->dir, "%s/image-registry.XXXXXX", base);
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
    snprintf(fx->images, sizeof fx->images, "%s/state/images", fx->dir);
    fx->s.cfg.image_chunk_size = CHUNK;
    fx->s.cron = -1;
    open_sched(fx);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    close_sched(fx);
    yun_cfg_done(sched_config_table, sched_config_table_size, &fx->s.cfg);
    int r = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

/* --- calling handlers --------------------------------------------------------- */

/* Runs 'h' as 'w' and returns the call's error (0 on success). When 'ret'
 * is given, the reply (also one sent with an error) is unpacked as 'rd';
 * when 'ret_msg' is given, it gets the error message (or NULL). */
static int
run(struct fixture *fx, const struct who *w, handler_fn h, const void *req,
    const ProtobufCMessageDescriptor *rd, void *ret, char **ret_msg)
{
    char reqid[32];
    snprintf(reqid, sizeof reqid, "req-%06u", ++fx->seq);
    struct yun_bus_peer peer = {
        .sender = w->user, .key_id = w->user, .request_id = reqid, .role = w->kind,
    };
    struct sched_call call = {
        .s = &fx->s, .peer = &peer, .peer_kind = w->kind, .req = reqid, .user = w->user,
        .project = w->project, .is_admin = w->admin,
    };
    int r = h(&call, req);
    if (r < 0 && call.error == 0)
        call.error = r;
    if (r >= 0)
        assert_int_equal(call.error, 0);
    if (ret) {
        *(ProtobufCMessage **)ret = NULL;
        if ((call.error == 0 || call.reply_on_error) && call.payload) {
            *(ProtobufCMessage **)ret =
                protobuf_c_message_unpack(rd, NULL, call.payload_size,
                                          call.payload + call.payload_offset);
            assert_non_null(*(ProtobufCMessage **)ret);
        }
    }
    if (ret_msg)
        *ret_msg = call.error ? TAKE_PTR(call.error_message) : NULL;
    free(call.error_message);
    free(call.payload);
    return call.error;
}

static void
free_msg(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

static void
assert_contains(const char *haystack, const char *needle)
{
    if (!haystack || !strstr(haystack, needle))
        fail_msg("'%s' does not contain '%s'", haystack ? haystack : "(null)", needle);
}

static char *
create_ex(struct fixture *fx, const struct who *w, const char *name, const char *disk,
          const char *visibility, const char *owner, int expect)
{
    Yun__ImageCreateRequest q = YUN__IMAGE_CREATE_REQUEST__INIT;
    q.name = (char *)name;
    q.disk_format = (char *)disk;
    q.visibility = (char *)(visibility ? visibility : "");
    q.owner = (char *)(owner ? owner : "");
    Yun__ImageReply *y = NULL;
    int r = run(fx, w, sched_image_create, &q, &yun__image_reply__descriptor, &y, NULL);
    assert_int_equal(r, expect);
    if (r < 0)
        return NULL;
    assert_non_null(y->image);
    assert_string_equal(y->image->status, "queued");
    char *id = strdup(y->image->id);
    free_msg(y);
    return id;
}

static char *
create(struct fixture *fx, const struct who *w, const char *name, const char *visibility)
{
    return create_ex(fx, w, name, "raw", visibility, NULL, 0);
}

static Yun__ImageRecord *
show(struct fixture *fx, const struct who *w, const char *ref, int expect)
{
    Yun__ImageRef q = YUN__IMAGE_REF__INIT;
    q.image = (char *)ref;
    Yun__ImageReply *y = NULL;
    int r = run(fx, w, sched_image_show, &q, &yun__image_reply__descriptor, &y, NULL);
    assert_int_equal(r, expect);
    if (r < 0)
        return NULL;
    Yun__ImageRecord *img = y->image;
    y->image = NULL;
    free_msg(y);
    return img;
}

static const char *
status_of(struct fixture *fx, const char *id, char *buf, size_t size)
{
    Yun__ImageRecord *img = show(fx, &ADMIN, id, 0);
    snprintf(buf, size, "%s", img->status);
    free_msg(img);
    return buf;
}

struct upload_opts {
    size_t chunk;
    const char *md5;
    const char *sha512;
    uint64_t expected_size;
};

/* Uploads 'data' in chunks; returns the error of the first failing chunk
 * (its message in '*ret_msg' when given) or 0. */
static int
upload(struct fixture *fx, const struct who *w, const char *id, const uint8_t *data,
       size_t size, const struct upload_opts *o, char **ret_msg)
{
    size_t chunk = o && o->chunk ? o->chunk : CHUNK;
    size_t off = 0;
    do {
        size_t n = size - off < chunk ? size - off : chunk;
        Yun__ImageUploadRequest q = YUN__IMAGE_UPLOAD_REQUEST__INIT;
        q.image = (char *)id;
        q.offset = off;
        q.data.data = (uint8_t *)data + off;
        q.data.len = n;
        q.last = off + n == size;
        if (o && off == 0) {
            q.expected_md5 = (char *)(o->md5 ? o->md5 : "");
            q.expected_sha512 = (char *)(o->sha512 ? o->sha512 : "");
            q.expected_size = o->expected_size;
        }
        Yun__ImageUploadReply *y = NULL;
        int r = run(fx, w, sched_image_upload, &q, &yun__image_upload_reply__descriptor, &y,
                    ret_msg);
        if (r < 0) {
            free_msg(y);
            return r;
        }
        assert_int_equal(y->received, off + n);
        if (q.last) {
            assert_non_null(y->image);
            assert_string_equal(y->image->status, "active");
        } else {
            assert_null(y->image);
        }
        free_msg(y);
        off += n;
    } while (off < size);
    if (ret_msg)
        *ret_msg = NULL;
    return 0;
}

static int
download_slice(struct fixture *fx, const struct who *w, const char *ref, uint64_t offset,
               uint32_t length, Yun__ImageDownloadReply **ret)
{
    Yun__ImageDownloadRequest q = YUN__IMAGE_DOWNLOAD_REQUEST__INIT;
    q.image = (char *)ref;
    q.offset = offset;
    q.length = length;
    return run(fx, w, sched_image_download, &q, &yun__image_download_reply__descriptor, ret,
               NULL);
}

static int
download_all(struct fixture *fx, const struct who *w, const char *ref, uint8_t **ret,
             size_t *ret_size)
{
    uint8_t *buf = NULL;
    size_t size = 0;
    for (;;) {
        Yun__ImageDownloadReply *y = NULL;
        int r = download_slice(fx, w, ref, size, 0, &y);
        if (r < 0) {
            free(buf);
            return r;
        }
        assert_int_equal(y->offset, size);
        assert_true(y->data.len <= CHUNK);
        buf = realloc(buf, size + y->data.len + 1);
        assert_non_null(buf);
        if (y->data.len)
            memcpy(buf + size, y->data.data, y->data.len);
        size += y->data.len;
        bool eof = y->eof;
        assert_int_equal(eof, size == y->size);
        free_msg(y);
        if (eof)
            break;
    }
    *ret = buf;
    *ret_size = size;
    return 0;
}

static void
fill(uint8_t *buf, size_t size, uint64_t seed)
{
    for (size_t i = 0; i < size; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (uint8_t)(seed >> 33);
    }
    /* Plain data, not an accidental header of some format. */
    if (size >= 4)
        memcpy(buf, "DATA", 4);
}

static void
hex_digest(const void *data, size_t size, const EVP_MD *md, char *hex)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n;
    assert_int_equal(EVP_Digest(data, size, out, &n, md, NULL), 1);
    yun_hex_encode(out, n, hex);
}

static bool
exists(struct fixture *fx, const char *id, bool partial)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/%s%s", fx->images, id, partial ? ".part" : "");
    return access(path, F_OK) == 0;
}

static char *
uploaded(struct fixture *fx, const struct who *w, const char *name, const char *visibility,
         size_t size)
{
    char *id = create(fx, w, name, visibility);
    _cleanup_free_ uint8_t *data = malloc(size ? size : 1);
    fill(data, size, 99);
    assert_int_equal(upload(fx, w, id, data, size, NULL, NULL), 0);
    return id;
}

/* --- upload and download ---------------------------------------------------- */

static void
test_roundtrip(void **state)
{
    struct fixture *fx = *state;
    size_t size = 3 * CHUNK + 1234; /* several chunks, the last one small */
    _cleanup_free_ uint8_t *data = malloc(size);
    fill(data, size, 1);
    char md5[YUN_MD5_HEX_SIZE], sha512[YUN_SHA512_HEX_SIZE];
    hex_digest(data, size, EVP_md5(), md5);
    hex_digest(data, size, EVP_sha512(), sha512);

    _cleanup_free_ char *id = create(fx, &P1, "debian", NULL);
    struct upload_opts o = { .md5 = md5, .sha512 = sha512, .expected_size = size };
    assert_int_equal(upload(fx, &P1, id, data, size, &o, NULL), 0);
    assert_false(exists(fx, id, true));
    assert_true(exists(fx, id, false));

    Yun__ImageRecord *img = show(fx, &P1, "debian", 0);
    assert_string_equal(img->id, id);
    assert_string_equal(img->status, "active");
    assert_int_equal(img->size, size);
    assert_int_equal(img->virtual_size, size);
    assert_string_equal(img->checksum, md5);
    assert_string_equal(img->os_hash_algo, "sha512");
    assert_string_equal(img->os_hash_value, sha512);
    assert_string_equal(img->detected_format, "raw");
    assert_string_equal(img->owner, "p1");
    assert_string_equal(img->visibility, "private");
    assert_true(img->updated_us >= img->created_us);
    free_msg(img);

    uint8_t *back = NULL;
    size_t back_size = 0;
    assert_int_equal(download_all(fx, &P1, id, &back, &back_size), 0);
    assert_int_equal(back_size, size);
    assert_memory_equal(back, data, size);
    free(back);

    /* Resume anywhere: a slice at an odd offset, and one that runs into
     * the end. */
    Yun__ImageDownloadReply *y = NULL;
    assert_int_equal(download_slice(fx, &P1, id, 100001, 5000, &y), 0);
    assert_int_equal(y->data.len, 5000);
    assert_memory_equal(y->data.data, data + 100001, 5000);
    assert_int_equal(y->size, size);
    assert_string_equal(y->os_hash_value, sha512);
    assert_false(y->eof);
    free_msg(y);
    assert_int_equal(download_slice(fx, &P1, id, size - 10, 0, &y), 0);
    assert_int_equal(y->data.len, 10);
    assert_memory_equal(y->data.data, data + size - 10, 10);
    assert_true(y->eof);
    free_msg(y);
    /* A length above the chunk limit is cut to it. */
    assert_int_equal(download_slice(fx, &P1, id, 0, 10 * CHUNK, &y), 0);
    assert_int_equal(y->data.len, CHUNK);
    free_msg(y);
    assert_int_equal(download_slice(fx, &P1, id, size, 0, &y), 0);
    assert_int_equal(y->data.len, 0);
    assert_true(y->eof);
    free_msg(y);
    assert_int_equal(download_slice(fx, &P1, id, size + 1, 0, &y), YUN_E_INVALID);

    /* Active images take no more bytes. */
    char *msg = NULL;
    assert_int_equal(upload(fx, &P1, id, data, 10, NULL, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "active");
    free(msg);
}

static void
test_empty_image(void **state)
{
    struct fixture *fx = *state;
    _cleanup_free_ char *id = create(fx, &P1, "empty", NULL);
    assert_int_equal(upload(fx, &P1, id, (const uint8_t *)"", 0, NULL, NULL), 0);
    Yun__ImageRecord *img = show(fx, &P1, id, 0);
    assert_int_equal(img->size, 0);
    assert_string_equal(img->checksum, "d41d8cd98f00b204e9800998ecf8427e");
    free_msg(img);
    uint8_t *back = NULL;
    size_t n = 1;
    assert_int_equal(download_all(fx, &P1, id, &back, &n), 0);
    assert_int_equal(n, 0);
    free(back);
}

static void
expect_killed(struct fixture *fx, const char *id)
{
    char st[32];
    assert_string_equal(status_of(fx, id, st, sizeof st), "killed");
    assert_false(exists(fx, id, true));
    assert_false(exists(fx, id, false));
}

static void
test_checksum_mismatch(void **state)
{
    struct fixture *fx = *state;
    size_t size = 2 * CHUNK + 77;
    _cleanup_free_ uint8_t *data = malloc(size);
    fill(data, size, 2);
    char md5[YUN_MD5_HEX_SIZE], sha512[YUN_SHA512_HEX_SIZE];
    hex_digest(data, size, EVP_md5(), md5);
    hex_digest(data, size, EVP_sha512(), sha512);
    char *msg = NULL;

    /* Wrong md5 (the right sha512 does not save it). */
    _cleanup_free_ char *a = create(fx, &P1, "a", NULL);
    struct upload_opts o = { .md5 = "00000000000000000000000000000000", .sha512 = sha512 };
    assert_int_equal(upload(fx, &P1, a, data, size, &o, &msg), YUN_E_CHECKSUM);
    assert_contains(msg, "md5");
    free(msg);
    expect_killed(fx, a);

    /* Wrong sha512, given in upper case to show case does not matter for
     * the right md5. */
    char upper[YUN_MD5_HEX_SIZE];
    for (size_t i = 0; i < sizeof upper; i++)
        upper[i] = (char)(md5[i] >= 'a' && md5[i] <= 'f' ? md5[i] - 32 : md5[i]);
    char bad_sha[YUN_SHA512_HEX_SIZE];
    memcpy(bad_sha, sha512, sizeof bad_sha);
    bad_sha[0] = bad_sha[0] == 'a' ? 'b' : 'a';
    _cleanup_free_ char *b = create(fx, &P1, "b", NULL);
    o = (struct upload_opts){ .md5 = upper, .sha512 = bad_sha };
    assert_int_equal(upload(fx, &P1, b, data, size, &o, &msg), YUN_E_CHECKSUM);
    assert_contains(msg, "sha512");
    free(msg);
    expect_killed(fx, b);

    /* Expected size too small: killed as soon as a chunk passes it. */
    _cleanup_free_ char *c = create(fx, &P1, "c", NULL);
    o = (struct upload_opts){ .expected_size = CHUNK + 1 };
    assert_int_equal(upload(fx, &P1, c, data, size, &o, &msg), YUN_E_CHECKSUM);
    assert_contains(msg, "Size");
    free(msg);
    expect_killed(fx, c);

    /* Expected size too large: killed at the last chunk. */
    _cleanup_free_ char *d = create(fx, &P1, "d", NULL);
    o = (struct upload_opts){ .expected_size = size + 1 };
    assert_int_equal(upload(fx, &P1, d, data, size, &o, &msg), YUN_E_CHECKSUM);
    assert_contains(msg, "Size");
    free(msg);
    expect_killed(fx, d);

    /* A malformed expectation is refused without killing anything. */
    _cleanup_free_ char *e = create(fx, &P1, "e", NULL);
    o = (struct upload_opts){ .md5 = "xyz" };
    assert_int_equal(upload(fx, &P1, e, data, size, &o, NULL), YUN_E_INVALID);
    char st[32];
    assert_string_equal(status_of(fx, e, st, sizeof st), "queued");
    o = (struct upload_opts){ .md5 = md5, .sha512 = sha512, .expected_size = size };
    assert_int_equal(upload(fx, &P1, e, data, size, &o, NULL), 0);

    /* Killed images refuse a new upload. */
    assert_int_equal(upload(fx, &P1, a, data, size, NULL, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "killed");
    free(msg);
}

static int
send_chunk(struct fixture *fx, const struct who *w, const char *id, uint64_t offset,
           const uint8_t *data, size_t n, bool last, uint64_t *ret_received)
{
    Yun__ImageUploadRequest q = YUN__IMAGE_UPLOAD_REQUEST__INIT;
    q.image = (char *)id;
    q.offset = offset;
    q.data.data = (uint8_t *)data;
    q.data.len = n;
    q.last = last;
    Yun__ImageUploadReply *y = NULL;
    int r = run(fx, w, sched_image_upload, &q, &yun__image_upload_reply__descriptor, &y, NULL);
    if (ret_received)
        *ret_received = y ? y->received : UINT64_MAX;
    free_msg(y);
    return r;
}

static void
test_wrong_offset(void **state)
{
    struct fixture *fx = *state;
    size_t size = 3 * CHUNK;
    _cleanup_free_ uint8_t *data = malloc(size);
    fill(data, size, 3);
    _cleanup_free_ char *id = create(fx, &P1, "resume", NULL);
    uint64_t received;

    /* The first chunk must start at 0. */
    assert_int_equal(send_chunk(fx, &P1, id, 5, data, CHUNK, false, &received), YUN_E_CONFLICT);
    assert_int_equal(received, 0);
    assert_int_equal(send_chunk(fx, &P1, id, 0, data, CHUNK, false, &received), 0);
    assert_int_equal(received, CHUNK);
    /* A chunk re-sent under a new request id, and one from the future:
     * refused with the offset to resume at, the upload goes on. */
    assert_int_equal(send_chunk(fx, &P1, id, 0, data, CHUNK, false, &received), YUN_E_CONFLICT);
    assert_int_equal(received, CHUNK);
    assert_int_equal(send_chunk(fx, &P1, id, 2 * CHUNK, data + 2 * CHUNK, CHUNK, true, &received),
                     YUN_E_CONFLICT);
    assert_int_equal(received, CHUNK);
    /* Too big a chunk: refused, not fatal. */
    _cleanup_free_ uint8_t *big = calloc(1, CHUNK + 1);
    assert_int_equal(send_chunk(fx, &P1, id, CHUNK, big, CHUNK + 1, false, NULL), YUN_E_TOOBIG);
    char st[32];
    assert_string_equal(status_of(fx, id, st, sizeof st), "saving");
    assert_true(exists(fx, id, true));
    /* Someone else may not write into it. */
    assert_int_equal(send_chunk(fx, &P2, id, CHUNK, data + CHUNK, CHUNK, false, NULL),
                     YUN_E_NOIMAGE);

    assert_int_equal(send_chunk(fx, &P1, id, CHUNK, data + CHUNK, CHUNK, false, &received), 0);
    assert_int_equal(send_chunk(fx, &P1, id, 2 * CHUNK, data + 2 * CHUNK, CHUNK, true, &received),
                     0);
    assert_int_equal(received, size);
    uint8_t *back = NULL;
    size_t n = 0;
    assert_int_equal(download_all(fx, &P1, id, &back, &n), 0);
    assert_int_equal(n, size);
    assert_memory_equal(back, data, size);
    free(back);
}

static void
put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void
test_inspector_rejects(void **state)
{
    struct fixture *fx = *state;
    size_t size = CHUNK + 512;
    _cleanup_free_ uint8_t *data = calloc(1, size);
    char *msg = NULL;

    /* qcow2 bytes claimed as raw. */
    memcpy(data, "QFI\xfb", 4);
    put_be32(data + 4, 3);
    _cleanup_free_ char *a = create(fx, &P1, "liar", NULL);
    assert_int_equal(upload(fx, &P1, a, data, size, NULL, &msg), YUN_E_BADIMAGE);
    assert_contains(msg, "format-mismatch");
    free(msg);
    expect_killed(fx, a);

    /* A qcow2 that names a backing file: it could read host files. */
    memset(data, 0, size);
    memcpy(data, "QFI\xfb", 4);
    put_be32(data + 4, 2);
    data[8 + 7] = 0x80; /* backing_file_offset = 128 */
    put_be32(data + 16, 10); /* backing_file_size */
    memcpy(data + 128, "/etc/shado", 10);
    _cleanup_free_ char *b = create_ex(fx, &P1, "backed", "qcow2", NULL, NULL, 0);
    assert_int_equal(upload(fx, &P1, b, data, size, NULL, &msg), YUN_E_BADIMAGE);
    assert_contains(msg, "backing-file");
    free(msg);
    expect_killed(fx, b);

    /* Plain data claimed as qcow2. */
    fill(data, size, 4);
    _cleanup_free_ char *c = create_ex(fx, &P1, "fake", "qcow2", NULL, NULL, 0);
    assert_int_equal(upload(fx, &P1, c, data, size, NULL, &msg), YUN_E_BADIMAGE);
    assert_contains(msg, "format-mismatch");
    free(msg);
    expect_killed(fx, c);

    /* A real qcow2 made by qemu-img is accepted, with its virtual size. */
    if (system("qemu-img --version >/dev/null 2>&1") != 0)
        return;
    char path[1200], cmd[4096];
    snprintf(path, sizeof path, "%s/real.qcow2", fx->dir);
    snprintf(cmd, sizeof cmd, "qemu-img create -q -f qcow2 '%s' 64M", path);
    assert_int_equal(system(cmd), 0);
    char *buf = NULL;
    size_t n = 0;
    assert_int_equal(yun_read_file(path, 1 << 24, &buf, &n), 0);
    _cleanup_free_ char *e = create_ex(fx, &P1, "real", "qcow2", NULL, NULL, 0);
    assert_int_equal(upload(fx, &P1, e, (uint8_t *)buf, n, NULL, NULL), 0);
    Yun__ImageRecord *img = show(fx, &P1, e, 0);
    assert_int_equal(img->virtual_size, 64u << 20);
    assert_int_equal(img->size, n);
    assert_string_equal(img->detected_format, "qcow2");
    free_msg(img);
    free(buf);

    /* And one made by qemu-img with a backing file is refused. */
    snprintf(cmd, sizeof cmd,
             "qemu-img create -q -f raw '%s/base.raw' 1M && "
             "qemu-img create -q -f qcow2 -b '%s/base.raw' -F raw '%s/over.qcow2'",
             fx->dir, fx->dir, fx->dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/over.qcow2", fx->dir);
    assert_int_equal(yun_read_file(path, 1 << 24, &buf, &n), 0);
    _cleanup_free_ char *f = create_ex(fx, &P1, "over", "qcow2", NULL, NULL, 0);
    assert_int_equal(upload(fx, &P1, f, (uint8_t *)buf, n, NULL, &msg), YUN_E_BADIMAGE);
    assert_contains(msg, "backing-file");
    free(msg);
    free(buf);
    expect_killed(fx, f);

    /* A small file whose virtual size is above the limit. */
    fx->s.cfg.image_max_virtual_size_gb = 1;
    snprintf(cmd, sizeof cmd, "qemu-img create -q -f qcow2 '%s/big.qcow2' 2G", fx->dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/big.qcow2", fx->dir);
    assert_int_equal(yun_read_file(path, 1 << 24, &buf, &n), 0);
    _cleanup_free_ char *g = create_ex(fx, &P1, "big", "qcow2", NULL, NULL, 0);
    assert_int_equal(upload(fx, &P1, g, (uint8_t *)buf, n, NULL, &msg), YUN_E_BADIMAGE);
    assert_contains(msg, "too-large");
    free(msg);
    free(buf);
    expect_killed(fx, g);
}

static void
test_upload_limits(void **state)
{
    struct fixture *fx = *state;
    uint8_t data[4096];
    fill(data, sizeof data, 6);
    char *msg = NULL;

    /* Uploads in progress are bounded. */
    fx->s.cfg.image_max_uploads = 1;
    _cleanup_free_ char *a = create(fx, &P1, "a", NULL);
    _cleanup_free_ char *b = create(fx, &P1, "b", NULL);
    assert_int_equal(send_chunk(fx, &P1, a, 0, data, sizeof data, false, NULL), 0);
    assert_int_equal(send_chunk(fx, &P1, b, 0, data, sizeof data, false, NULL), -EBUSY);
    char st[32];
    assert_string_equal(status_of(fx, b, st, sizeof st), "queued");
    assert_int_equal(send_chunk(fx, &P1, a, sizeof data, data, 0, true, NULL), 0);
    assert_int_equal(send_chunk(fx, &P1, b, 0, data, sizeof data, true, NULL), 0);

    /* Only the owner (or an admin) uploads; others do not even see a
     * private image; a public one they see but may not write. */
    _cleanup_free_ char *c = create(fx, &P1, "c", NULL);
    assert_int_equal(upload(fx, &P2, c, data, sizeof data, NULL, NULL), YUN_E_NOIMAGE);
    _cleanup_free_ char *d = create_ex(fx, &ADMIN, "d", "raw", "public", "p1", 0);
    assert_int_equal(upload(fx, &P2, d, data, sizeof data, NULL, &msg), YUN_E_DENIED);
    assert_contains(msg, "p2");
    free(msg);
    assert_int_equal(upload(fx, &ADMIN, c, data, sizeof data, NULL, NULL), 0);
    /* Uploads go by id only. */
    _cleanup_free_ char *e = create(fx, &P1, "by-name", NULL);
    assert_int_equal(upload(fx, &P1, "by-name", data, sizeof data, NULL, NULL), YUN_E_NOIMAGE);
}

/* MiB free now on the image directory's file system, as the store counts. */
static uint64_t
free_mb(struct fixture *fx)
{
    struct statvfs sv;
    assert_int_equal(statvfs(fx->images, &sv), 0);
    return (uint64_t)sv.f_bavail * sv.f_frsize >> 20;
}

/* An upload that would leave the store's file system with less than
 * [images] store_min_free_mb is refused before it starts, leaving the
 * image queued and no bytes; once started, it is killed with its bytes. */
static void
test_free_space(void **state)
{
    struct fixture *fx = *state;
    uint8_t data[4096];
    fill(data, sizeof data, 8);
    char st[32], *msg = NULL;
    _cleanup_free_ char *a = create(fx, &P1, "a", NULL);

    /* The reserve is above what is free. */
    uint64_t above = free_mb(fx) + 1024;
    assert_true(above <= UINT32_MAX);
    fx->s.cfg.image_store_min_free_mb = (uint32_t)above;
    assert_int_equal(upload(fx, &P1, a, data, sizeof data, NULL, &msg), -ENOSPC);
    assert_contains(msg, "No room for image");
    assert_contains(msg, "MiB it keeps free");
    free(msg);
    assert_string_equal(status_of(fx, a, st, sizeof st), "queued");
    assert_false(exists(fx, a, true));
    assert_false(exists(fx, a, false));

    /* No reserve, but the expected size does not fit. */
    fx->s.cfg.image_store_min_free_mb = 0;
    struct upload_opts big = { .expected_size = (free_mb(fx) + 1024) << 20 };
    assert_int_equal(upload(fx, &P1, a, data, sizeof data, &big, &msg), -ENOSPC);
    assert_contains(msg, "No room for image");
    free(msg);
    assert_string_equal(status_of(fx, a, st, sizeof st), "queued");
    assert_false(exists(fx, a, true));

    /* With room the same image uploads. */
    assert_int_equal(upload(fx, &P1, a, data, sizeof data, NULL, NULL), 0);
    assert_string_equal(status_of(fx, a, st, sizeof st), "active");

    /* The space goes during an upload: the next chunk kills it. */
    _cleanup_free_ char *b = create(fx, &P1, "b", NULL);
    assert_int_equal(send_chunk(fx, &P1, b, 0, data, sizeof data, false, NULL), 0);
    assert_true(exists(fx, b, true));
    fx->s.cfg.image_store_min_free_mb = (uint32_t)above;
    assert_int_equal(send_chunk(fx, &P1, b, sizeof data, data, sizeof data, true, NULL),
                     -ENOSPC);
    assert_string_equal(status_of(fx, b, st, sizeof st), "killed");
    assert_false(exists(fx, b, true));
    assert_false(exists(fx, b, false));
    /* The image already stored is untouched. */
    assert_true(exists(fx, a, false));
}

/* [images] project_size_total_mb bounds the image bytes of each project:
 * active and deactivated images and uploads in progress count, other
 * projects and killed or deleted images do not. */
static void
test_project_quota(void **state)
{
    struct fixture *fx = *state;
    size_t size = 10 * CHUNK; /* 640 KiB */
    _cleanup_free_ uint8_t *data = malloc(size);
    assert_non_null(data);
    fill(data, size, 9);
    char st[32], *msg = NULL;
    fx->s.cfg.image_project_size_total_mb = 1;

    _cleanup_free_ char *a = create(fx, &P1, "a", NULL);
    assert_int_equal(upload(fx, &P1, a, data, size, NULL, NULL), 0);

    /* Said at the start when the expected size does not fit: queued, no
     * bytes. */
    _cleanup_free_ char *b = create(fx, &P1, "b", NULL);
    struct upload_opts sized = { .expected_size = size };
    assert_int_equal(upload(fx, &P1, b, data, size, &sized, &msg), -EDQUOT);
    assert_contains(msg, "Quota exceeded");
    assert_contains(msg, "p1");
    free(msg);
    assert_string_equal(status_of(fx, b, st, sizeof st), "queued");
    assert_false(exists(fx, b, true));

    /* Without an expected size, the chunk that passes it kills the upload
     * and its bytes go. */
    assert_int_equal(upload(fx, &P1, b, data, size, NULL, &msg), -EDQUOT);
    assert_contains(msg, "Quota exceeded");
    free(msg);
    assert_string_equal(status_of(fx, b, st, sizeof st), "killed");
    assert_false(exists(fx, b, true));

    /* Another project has its own quota. */
    _cleanup_free_ char *c = create(fx, &P2, "c", NULL);
    assert_int_equal(upload(fx, &P2, c, data, size, NULL, NULL), 0);

    /* An upload in progress counts for the project's next one. */
    _cleanup_free_ char *d = create(fx, &P2, "d", NULL);
    _cleanup_free_ char *e = create(fx, &P2, "e", NULL);
    assert_int_equal(send_chunk(fx, &P2, d, 0, data, CHUNK, false, NULL), 0);
    /* c (640 KiB) + d so far (64 KiB) + 384 KiB > 1 MiB. */
    struct upload_opts rest = { .expected_size = 6 * CHUNK };
    assert_int_equal(upload(fx, &P2, e, data, 6 * CHUNK, &rest, &msg), -EDQUOT);
    free(msg);
    assert_string_equal(status_of(fx, e, st, sizeof st), "queued");
    assert_int_equal(send_chunk(fx, &P2, d, CHUNK, data, 0, true, NULL), 0);

    /* Deleting an image frees its share. */
    Yun__ImageRef del = YUN__IMAGE_REF__INIT;
    del.image = a;
    assert_int_equal(run(fx, &P1, sched_image_delete, &del, NULL, NULL, NULL), 0);
    _cleanup_free_ char *f = create(fx, &P1, "f", NULL);
    assert_int_equal(upload(fx, &P1, f, data, size, &sized, NULL), 0);

    /* 0 is no limit. */
    fx->s.cfg.image_project_size_total_mb = 0;
    _cleanup_free_ char *g = create(fx, &P1, "g", NULL);
    assert_int_equal(upload(fx, &P1, g, data, size, &sized, NULL), 0);
}

/* --- sessions: idle reaping, restart, shutdown -------------------------------- */

static void
test_idle_reaped(void **state)
{
    struct fixture *fx = *state;
    uint8_t data[8192];
    fill(data, sizeof data, 7);
    _cleanup_free_ char *id = create(fx, &P1, "idle", NULL);
    assert_int_equal(send_chunk(fx, &P1, id, 0, data, sizeof data, false, NULL), 0);
    assert_true(exists(fx, id, true));

    /* Not idle long enough: kept. */
    sched_image_reap(&fx->s, yun_now_ms() + 1000);
    char st[32];
    assert_string_equal(status_of(fx, id, st, sizeof st), "saving");

    /* Past the timeout: killed, bytes gone. */
    sched_image_reap(&fx->s,
                     yun_now_ms() + (int64_t)fx->s.cfg.image_upload_idle_timeout_s * 1000 + 1);
    expect_killed(fx, id);

    /* The client coming back is told the upload is over. */
    char *msg = NULL;
    assert_int_equal(upload(fx, &P1, id, data, sizeof data, NULL, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "killed");
    free(msg);

    /* The cron entry point runs with the real clock: a fresh upload stays. */
    _cleanup_free_ char *fresh = create(fx, &P1, "fresh", NULL);
    assert_int_equal(send_chunk(fx, &P1, fresh, 0, data, sizeof data, false, NULL), 0);
    sched_image_cron(&fx->s);
    assert_string_equal(status_of(fx, fresh, st, sizeof st), "saving");
}

static void
put_record(struct fixture *fx, const char *id, const char *status)
{
    Yun__ImageRecord img = YUN__IMAGE_RECORD__INIT;
    img.id = (char *)id;
    img.name = (char *)"crafted";
    img.owner = (char *)"p1";
    img.visibility = (char *)"private";
    img.status = (char *)status;
    img.disk_format = (char *)"raw";
    img.container_format = (char *)"bare";
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    assert_int_equal(yun_txn_put_msg(txn, "images", id, &img.base), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
}

static void
touch(struct fixture *fx, const char *name)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", fx->images, name);
    assert_int_equal(yun_write_file_atomic(path, "x", 1, 0600), 0);
}

static void
test_restart_recovery(void **state)
{
    struct fixture *fx = *state;
    uint8_t data[8192];
    fill(data, sizeof data, 8);

    /* A clean stop kills the upload in progress and removes its bytes. */
    _cleanup_free_ char *stopped = create(fx, &P1, "stopped", NULL);
    assert_int_equal(send_chunk(fx, &P1, stopped, 0, data, sizeof data, false, NULL), 0);
    _cleanup_free_ char *kept = uploaded(fx, &P1, "kept", NULL, sizeof data);
    close_sched(fx);

    /* What a crash leaves: a record in saving with a partial file; bytes
     * of a killed image; bytes and a partial file no record owns; and a
     * file that is none of ours. */
    open_sched(fx);
    char crashed[YUN_UUID_STR_SIZE], dead[YUN_UUID_STR_SIZE], orphan[YUN_UUID_STR_SIZE];
    yun_uuid_new(crashed);
    yun_uuid_new(dead);
    yun_uuid_new(orphan);
    put_record(fx, crashed, "saving");
    put_record(fx, dead, "killed");
    char name[64];
    snprintf(name, sizeof name, "%s.part", crashed);
    touch(fx, name);
    touch(fx, dead);
    touch(fx, orphan);
    snprintf(name, sizeof name, "%s.part", orphan);
    touch(fx, name);
    touch(fx, "README");
    close_sched(fx);
    open_sched(fx);

    char st[32];
    assert_string_equal(status_of(fx, stopped, st, sizeof st), "killed");
    assert_false(exists(fx, stopped, true));
    assert_string_equal(status_of(fx, crashed, st, sizeof st), "killed");
    assert_false(exists(fx, crashed, true));
    assert_false(exists(fx, dead, false));
    assert_false(exists(fx, orphan, false));
    assert_false(exists(fx, orphan, true));
    char path[1400];
    snprintf(path, sizeof path, "%s/README", fx->images);
    assert_int_equal(access(path, F_OK), 0);

    /* Nothing is left in saving, and the active image still downloads. */
    Yun__ImageListRequest q = YUN__IMAGE_LIST_REQUEST__INIT;
    q.status = (char *)"saving";
    Yun__ImageListReply *y = NULL;
    assert_int_equal(run(fx, &ADMIN, sched_image_list, &q, &yun__image_list_reply__descriptor,
                         &y, NULL), 0);
    assert_int_equal(y->n_images, 0);
    free_msg(y);
    uint8_t *back = NULL;
    size_t n = 0;
    assert_int_equal(download_all(fx, &P1, kept, &back, &n), 0);
    assert_int_equal(n, sizeof data);
    free(back);
}

/* --- list ----------------------------------------------------------------------- */

static Yun__ImageListReply *
list(struct fixture *fx, const struct who *w, Yun__ImageListRequest *q, int expect)
{
    Yun__ImageListReply *y = NULL;
    assert_int_equal(run(fx, w, sched_image_list, q, &yun__image_list_reply__descriptor, &y,
                         NULL), expect);
    return y;
}

static size_t
count_listed(struct fixture *fx, const struct who *w, const char *visibility,
             const char *member_status, const char *id)
{
    Yun__ImageListRequest q = YUN__IMAGE_LIST_REQUEST__INIT;
    q.visibility = (char *)(visibility ? visibility : "");
    q.member_status = (char *)(member_status ? member_status : "");
    q.limit = 1000;
    Yun__ImageListReply *y = list(fx, w, &q, 0);
    size_t n = 0;
    for (size_t i = 0; i < y->n_images; i++)
        if (!id || strcmp(y->images[i]->id, id) == 0)
            n++;
    free_msg(y);
    return n;
}

static void
test_list_pages(void **state)
{
    struct fixture *fx = *state;
    char *ids[30];
    for (int i = 0; i < 30; i++) {
        char name[16];
        snprintf(name, sizeof name, "img-%02d", (i * 7) % 30);
        ids[i] = create(fx, &P1, name, NULL);
    }
    bool seen[30] = { false };
    char marker[YUN_UUID_STR_SIZE] = "";
    char last_name[16] = "";
    size_t pages = 0, total = 0;
    for (;;) {
        Yun__ImageListRequest q = YUN__IMAGE_LIST_REQUEST__INIT;
        q.limit = 7;
        q.sort_key = (char *)"name";
        q.sort_dir = (char *)"asc";
        q.marker = marker;
        Yun__ImageListReply *y = list(fx, &P1, &q, 0);
        pages++;
        assert_true(y->n_images <= 7);
        for (size_t i = 0; i < y->n_images; i++) {
            assert_true(strcmp(y->images[i]->name, last_name) > 0);
            snprintf(last_name, sizeof last_name, "%s", y->images[i]->name);
            int k = 0;
            while (k < 30 && strcmp(ids[k], y->images[i]->id) != 0)
                k++;
            assert_true(k < 30);
            assert_false(seen[k]);
            seen[k] = true;
            total++;
        }
        bool more = *y->next_marker;
        if (more)
            assert_string_equal(y->next_marker, y->images[y->n_images - 1]->id);
        snprintf(marker, sizeof marker, "%s", y->next_marker);
        free_msg(y);
        if (!more)
            break;
    }
    assert_int_equal(pages, 5);
    assert_int_equal(total, 30);

    /* Default order: newest first, 25 per page. */
    Yun__ImageListRequest q = YUN__IMAGE_LIST_REQUEST__INIT;
    Yun__ImageListReply *y = list(fx, &P1, &q, 0);
    assert_int_equal(y->n_images, 25);
    assert_string_equal(y->images[0]->id, ids[29]);
    for (size_t i = 1; i < y->n_images; i++)
        assert_true(y->images[i - 1]->created_us >= y->images[i]->created_us);
    assert_string_equal(y->next_marker, y->images[24]->id);
    free_msg(y);

    /* Filters. */
    Yun__ImageUpdateRequest u = YUN__IMAGE_UPDATE_REQUEST__INIT;
    char *tags[] = { (char *)"gold" };
    u.image = ids[3];
    u.add_tags = tags;
    u.n_add_tags = 1;
    assert_int_equal(run(fx, &P1, sched_image_update, &u, NULL, NULL, NULL), 0);
    uint8_t data[1024];
    fill(data, sizeof data, 9);
    assert_int_equal(upload(fx, &P1, ids[5], data, sizeof data, NULL, NULL), 0);
    _cleanup_free_ char *qc = create_ex(fx, &P1, "q", "qcow2", NULL, NULL, 0);

    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.tag = (char *)"gold";
    y = list(fx, &P1, &q, 0);
    assert_int_equal(y->n_images, 1);
    assert_string_equal(y->images[0]->id, ids[3]);
    free_msg(y);
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.status = (char *)"active";
    y = list(fx, &P1, &q, 0);
    assert_int_equal(y->n_images, 1);
    assert_string_equal(y->images[0]->id, ids[5]);
    free_msg(y);
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.name = (char *)"img-07";
    y = list(fx, &P1, &q, 0);
    assert_int_equal(y->n_images, 1);
    assert_string_equal(y->images[0]->id, ids[1]);
    free_msg(y);
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.disk_format = (char *)"qcow2";
    y = list(fx, &P1, &q, 0);
    assert_int_equal(y->n_images, 1);
    assert_string_equal(y->images[0]->id, qc);
    free_msg(y);
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.owner = (char *)"p2";
    y = list(fx, &ADMIN, &q, 0);
    assert_int_equal(y->n_images, 0);
    free_msg(y);
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.sort_key = (char *)"size";
    q.limit = 1;
    y = list(fx, &P1, &q, 0);
    assert_string_equal(y->images[0]->id, ids[5]);
    free_msg(y);

    /* Bad requests. */
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.sort_key = (char *)"colour";
    assert_null(list(fx, &P1, &q, YUN_E_INVALID));
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.sort_dir = (char *)"up";
    assert_null(list(fx, &P1, &q, YUN_E_INVALID));
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.limit = 1001;
    assert_null(list(fx, &P1, &q, YUN_E_INVALID));
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.marker = (char *)"00000000-0000-4000-8000-000000000000";
    assert_null(list(fx, &P1, &q, YUN_E_INVALID));
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.status = (char *)"sleeping";
    assert_null(list(fx, &P1, &q, YUN_E_INVALID));
    /* Another project's image is no marker for this caller. */
    q = (Yun__ImageListRequest)YUN__IMAGE_LIST_REQUEST__INIT;
    q.marker = ids[0];
    assert_null(list(fx, &P2, &q, YUN_E_INVALID));

    for (int i = 0; i < 30; i++)
        free(ids[i]);
}

/* --- visibility and members ------------------------------------------------------- */

static int
member(struct fixture *fx, const struct who *w, handler_fn h, const char *id,
       const char *project, const char *status)
{
    Yun__ImageMemberRequest q = YUN__IMAGE_MEMBER_REQUEST__INIT;
    q.image = (char *)id;
    q.project = (char *)(project ? project : "");
    q.status = (char *)(status ? status : "");
    Yun__ImageMemberListReply *y = NULL;
    int r = run(fx, w, h, &q, &yun__image_member_list_reply__descriptor, &y, NULL);
    free_msg(y);
    return r;
}

static void
test_visibility(void **state)
{
    struct fixture *fx = *state;
    _cleanup_free_ char *priv = uploaded(fx, &P1, "priv", "private", 1024);
    _cleanup_free_ char *shared = uploaded(fx, &P1, "shared", "shared", 1024);
    _cleanup_free_ char *comm = uploaded(fx, &P1, "comm", "community", 1024);
    _cleanup_free_ char *pub = create_ex(fx, &ADMIN, "pub", "raw", "public", "p1", 0);
    uint8_t data[1024];
    fill(data, sizeof data, 10);
    assert_int_equal(upload(fx, &P1, pub, data, sizeof data, NULL, NULL), 0);

    /* Only admins publish. */
    assert_null(create_ex(fx, &P1, "x", "raw", "public", NULL, YUN_E_DENIED));
    /* Only admins create for another project. */
    assert_null(create_ex(fx, &P1, "x", "raw", NULL, "p2", YUN_E_DENIED));

    /* show: the owner sees all; p2 sees public and community; admins all. */
    const char *all[] = { priv, shared, comm, pub };
    const int p2_show[] = { YUN_E_NOIMAGE, YUN_E_NOIMAGE, 0, 0 };
    for (int i = 0; i < 4; i++) {
        free_msg(show(fx, &P1, all[i], 0));
        free_msg(show(fx, &ADMIN, all[i], 0));
        free_msg(show(fx, &P2, all[i], p2_show[i]));
        uint8_t *b = NULL;
        size_t n;
        assert_int_equal(download_all(fx, &P2, all[i], &b, &n), p2_show[i]);
        free(b);
    }

    /* list: p2 sees public; community only when asked for it. */
    assert_int_equal(count_listed(fx, &P1, NULL, NULL, NULL), 4);
    assert_int_equal(count_listed(fx, &ADMIN, NULL, NULL, NULL), 4);
    assert_int_equal(count_listed(fx, &P2, NULL, NULL, NULL), 1);
    assert_int_equal(count_listed(fx, &P2, NULL, NULL, pub), 1);
    assert_int_equal(count_listed(fx, &P2, "community", NULL, comm), 1);
    assert_int_equal(count_listed(fx, &P2, "community", NULL, NULL), 1);
    assert_int_equal(count_listed(fx, &P2, "private", NULL, NULL), 0);

    /* Members: only for shared images, only by the owner. */
    assert_int_equal(member(fx, &P1, sched_image_member_add, priv, "p2", NULL), YUN_E_CONFLICT);
    assert_int_equal(member(fx, &P2, sched_image_member_add, shared, "p2", NULL),
                     YUN_E_NOIMAGE);
    assert_int_equal(member(fx, &P1, sched_image_member_add, shared, "p1", NULL), YUN_E_INVALID);
    assert_int_equal(member(fx, &P1, sched_image_member_add, shared, "bad name", NULL),
                     YUN_E_INVALID);
    assert_int_equal(member(fx, &P1, sched_image_member_add, shared, "p2", NULL), 0);
    assert_int_equal(member(fx, &P1, sched_image_member_add, shared, "p2", NULL), YUN_E_CONFLICT);
    assert_int_equal(member(fx, &P1, sched_image_member_add, shared, "p3", NULL), 0);

    /* Pending: p2 may show it (to decide) but it is not listed by default
     * and not usable. */
    assert_int_equal(count_listed(fx, &P2, NULL, NULL, shared), 0);
    assert_int_equal(count_listed(fx, &P2, "shared", "pending", shared), 1);
    assert_int_equal(count_listed(fx, &P2, NULL, "all", shared), 1);
    Yun__ImageRecord *img = show(fx, &P2, shared, 0);
    assert_int_equal(img->n_members, 1); /* its own entry only */
    assert_string_equal(img->members[0]->project, "p2");
    assert_string_equal(img->members[0]->status, "pending");
    free_msg(img);
    img = show(fx, &P1, shared, 0);
    assert_int_equal(img->n_members, 2);
    free_msg(img);
    uint8_t *b = NULL;
    size_t n;
    assert_int_equal(download_all(fx, &P2, shared, &b, &n), YUN_E_DENIED);

    /* Only the member answers for itself; the owner cannot accept for it;
     * a non-member is told the image does not exist. */
    assert_int_equal(member(fx, &P3, sched_image_member_set_status, shared, "p2", "accepted"),
                     YUN_E_DENIED);
    assert_int_equal(member(fx, &P1, sched_image_member_set_status, shared, "p2", "accepted"),
                     YUN_E_DENIED);
    const struct who p4 = { "u4", "p4", false, YUN__PEER_RECORD__KIND__KIND_OPERATOR };
    assert_int_equal(member(fx, &p4, sched_image_member_set_status, shared, NULL, "accepted"),
                     YUN_E_NOIMAGE);
    assert_int_equal(member(fx, &P2, sched_image_member_set_status, shared, NULL, "maybe"),
                     YUN_E_INVALID);
    assert_int_equal(member(fx, &P2, sched_image_member_set_status, shared, NULL, "accepted"),
                     0);
    assert_int_equal(count_listed(fx, &P2, NULL, NULL, shared), 1);
    assert_int_equal(download_all(fx, &P2, shared, &b, &n), 0);
    assert_int_equal(n, 1024);
    free(b);

    /* p3 rejects: never listed by default. */
    assert_int_equal(member(fx, &P3, sched_image_member_set_status, shared, "p3", "rejected"), 0);
    assert_int_equal(count_listed(fx, &P3, NULL, NULL, shared), 0);
    assert_int_equal(count_listed(fx, &P3, NULL, "rejected", shared), 1);

    /* member list: the owner sees every member, a member itself. */
    Yun__ImageRef r = YUN__IMAGE_REF__INIT;
    r.image = shared;
    Yun__ImageMemberListReply *ml = NULL;
    assert_int_equal(run(fx, &P1, sched_image_member_list, &r,
                         &yun__image_member_list_reply__descriptor, &ml, NULL), 0);
    assert_int_equal(ml->n_members, 2);
    free_msg(ml);
    assert_int_equal(run(fx, &P3, sched_image_member_list, &r,
                         &yun__image_member_list_reply__descriptor, &ml, NULL), 0);
    assert_int_equal(ml->n_members, 1);
    assert_string_equal(ml->members[0]->status, "rejected");
    free_msg(ml);

    /* Removed: p2 loses it. */
    assert_int_equal(member(fx, &P2, sched_image_member_remove, shared, "p2", NULL),
                     YUN_E_DENIED);
    assert_int_equal(member(fx, &P1, sched_image_member_remove, shared, "p2", NULL), 0);
    assert_int_equal(member(fx, &P1, sched_image_member_remove, shared, "p2", NULL), -ENOENT);
    free_msg(show(fx, &P2, shared, YUN_E_NOIMAGE));

    /* Agents show and download active images of any project. */
    free_msg(show(fx, &AGENT, priv, 0));
    assert_int_equal(download_all(fx, &AGENT, priv, &b, &n), 0);
    free(b);
    _cleanup_free_ char *queued = create(fx, &P1, "queued", NULL);
    free_msg(show(fx, &AGENT, queued, YUN_E_NOIMAGE));

    /* Names: one visible match is found, several are ambiguous, another
     * project's private image with the name does not count. */
    _cleanup_free_ char *d1 = create(fx, &P1, "dup", NULL);
    _cleanup_free_ char *d2 = create(fx, &P2, "dup", NULL);
    img = show(fx, &P2, "dup", 0);
    assert_string_equal(img->id, d2);
    free_msg(img);
    _cleanup_free_ char *d3 = create(fx, &P2, "dup", "community");
    Yun__ImageRef dq = YUN__IMAGE_REF__INIT;
    dq.image = (char *)"dup";
    char *msg = NULL;
    assert_int_equal(run(fx, &P2, sched_image_show, &dq, NULL, NULL, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "id");
    free(msg);
    /* p1 sees its own "dup" and p2's community one: ambiguous too. */
    free_msg(show(fx, &P1, "dup", YUN_E_CONFLICT));
    free_msg(show(fx, &P1, d1, 0));
    free_msg(show(fx, &P1, d3, 0));
}

/* --- update, delete, deactivate ------------------------------------------------------ */

static void
packed_show(struct fixture *fx, const char *id, uint8_t **ret, size_t *ret_size)
{
    Yun__ImageRecord *img = show(fx, &ADMIN, id, 0);
    *ret_size = yun__image_record__get_packed_size(img);
    *ret = malloc(*ret_size + 1);
    yun__image_record__pack(img, *ret);
    free_msg(img);
}

static int
update(struct fixture *fx, const struct who *w, Yun__ImageUpdateRequest *u, char **ret_msg)
{
    return run(fx, w, sched_image_update, u, NULL, NULL, ret_msg);
}

static void
test_update(void **state)
{
    struct fixture *fx = *state;
    _cleanup_free_ char *id = create(fx, &P1, "old-name", NULL);
    _cleanup_free_ char *kernel = create_ex(fx, &P1, "vmlinuz", "aki", NULL, NULL, YUN_E_INVALID);
    assert_null(kernel);

    Yun__ImageUpdateRequest u = YUN__IMAGE_UPDATE_REQUEST__INIT;
    char *add[] = { (char *)"a", (char *)"b", (char *)"a" };
    char *rm[] = { (char *)"b" };
    Yun__ImageProperty p1 = YUN__IMAGE_PROPERTY__INIT, p2 = YUN__IMAGE_PROPERTY__INIT;
    p1.key = (char *)"os_distro";
    p1.value = (char *)"debian";
    p2.key = (char *)"kernel_id";
    p2.value = id;
    Yun__ImageProperty *props[] = { &p1, &p2 };
    u.image = id;
    u.name = (char *)"new-name";
    u.visibility = (char *)"community";
    u.set_min_disk = true;
    u.min_disk = 10;
    u.set_min_ram = true;
    u.min_ram = 512;
    u.set_protected = true;
    u.protected_ = true;
    u.add_tags = add;
    u.n_add_tags = 3;
    u.set_properties = props;
    u.n_set_properties = 2;
    assert_int_equal(update(fx, &P1, &u, NULL), 0);
    Yun__ImageRecord *img = show(fx, &P1, "new-name", 0);
    assert_string_equal(img->id, id);
    assert_string_equal(img->visibility, "community");
    assert_int_equal(img->min_disk, 10);
    assert_int_equal(img->min_ram, 512);
    assert_true(img->protected_);
    assert_int_equal(img->n_tags, 2);
    assert_int_equal(img->n_properties, 2);
    free_msg(img);
    free_msg(show(fx, &P1, "old-name", YUN_E_NOIMAGE));

    /* Remove a tag, change one property, drop the other. */
    u = (Yun__ImageUpdateRequest)YUN__IMAGE_UPDATE_REQUEST__INIT;
    u.image = id;
    u.remove_tags = rm;
    u.n_remove_tags = 1;
    p1.value = (char *)"ubuntu";
    Yun__ImageProperty *one[] = { &p1 };
    u.set_properties = one;
    u.n_set_properties = 1;
    char *unset[] = { (char *)"kernel_id" };
    u.unset_properties = unset;
    u.n_unset_properties = 1;
    assert_int_equal(update(fx, &P1, &u, NULL), 0);
    img = show(fx, &P1, id, 0);
    assert_int_equal(img->n_tags, 1);
    assert_string_equal(img->tags[0], "a");
    assert_int_equal(img->n_properties, 1);
    assert_string_equal(img->properties[0]->key, "os_distro");
    assert_string_equal(img->properties[0]->value, "ubuntu");
    free_msg(img);

    /* Every invalid update leaves the record exactly as it was. */
    _cleanup_free_ uint8_t *before = NULL;
    size_t before_size;
    packed_show(fx, id, &before, &before_size);
    char long_name[300];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    char *many[130];
    char tagbuf[130][8];
    for (int i = 0; i < 130; i++) {
        snprintf(tagbuf[i], sizeof tagbuf[i], "t%d", i);
        many[i] = tagbuf[i];
    }
    char *long_tag[] = { long_name };
    Yun__ImageProperty bad = YUN__IMAGE_PROPERTY__INIT;
    Yun__ImageProperty *badv[] = { &bad };
    struct {
        const char *what;
        int code;
    } cases[] = {
        { "name with a control character", YUN_E_INVALID },
        { "name too long", YUN_E_INVALID },
        { "invalid UTF-8 name", YUN_E_INVALID },
        { "bad visibility", YUN_E_INVALID },
        { "public by a non-admin", YUN_E_DENIED },
        { "tag too long", YUN_E_INVALID },
        { "too many tags", YUN_E_INVALID },
        { "bad property key", YUN_E_INVALID },
        { "reserved property key", YUN_E_INVALID },
        { "kernel_id not an id", YUN_E_INVALID },
        { "property value too long", YUN_E_INVALID },
        { "not the owner", YUN_E_DENIED },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        u = (Yun__ImageUpdateRequest)YUN__IMAGE_UPDATE_REQUEST__INIT;
        u.image = id;
        u.name = (char *)"fine";
        const struct who *w = &P1;
        bad.key = (char *)"ok";
        bad.value = (char *)"ok";
        switch (i) {
        case 0: u.name = (char *)"a\tb"; break;
        case 1: u.name = long_name; break;
        case 2: u.name = (char *)"caf\xc3"; break;
        case 3: u.visibility = (char *)"secret"; break;
        case 4: u.visibility = (char *)"public"; break;
        case 5: u.add_tags = long_tag; u.n_add_tags = 1; break;
        case 6: u.add_tags = many; u.n_add_tags = 128; u.set_properties = NULL;
                /* 128 new tags plus the one already there: 129. */
                break;
        case 7: bad.key = (char *)"bad key"; u.set_properties = badv; u.n_set_properties = 1;
                break;
        case 8: bad.key = (char *)"status"; u.set_properties = badv; u.n_set_properties = 1;
                break;
        case 9: bad.key = (char *)"ramdisk_id"; bad.value = (char *)"initrd";
                u.set_properties = badv; u.n_set_properties = 1; break;
        case 10: bad.value = long_name; u.set_properties = badv; u.n_set_properties = 1; break;
        case 11: w = &P2; u.visibility = (char *)"private"; break;
        }
        char *msg = NULL;
        int r = update(fx, w, &u, &msg);
        if (r != cases[i].code)
            fail_msg("%s: got %d (%s), want %d", cases[i].what, r, msg ? msg : "", cases[i].code);
        free(msg);
        _cleanup_free_ uint8_t *after = NULL;
        size_t after_size;
        packed_show(fx, id, &after, &after_size);
        assert_int_equal(after_size, before_size);
        assert_memory_equal(after, before, before_size);
    }
    (void)many;
}

static void
test_create_validation(void **state)
{
    struct fixture *fx = *state;
    char long_name[257];
    memset(long_name, 'x', 256);
    long_name[256] = '\0';
    assert_null(create_ex(fx, &P1, "", "raw", NULL, NULL, YUN_E_INVALID));
    assert_null(create_ex(fx, &P1, long_name, "raw", NULL, NULL, YUN_E_INVALID));
    assert_null(create_ex(fx, &P1, "bell\a", "raw", NULL, NULL, YUN_E_INVALID));
    assert_null(create_ex(fx, &P1, "\xff\xfe", "raw", NULL, NULL, YUN_E_INVALID));
    assert_null(create_ex(fx, &P1, "ok", "", NULL, NULL, YUN_E_INVALID));
    assert_null(create_ex(fx, &P1, "ok", "qcow3", NULL, NULL, YUN_E_INVALID));
    assert_null(create_ex(fx, &P1, "ok", "raw", "everyone", NULL, YUN_E_INVALID));
    long_name[255] = '\0';
    free(create_ex(fx, &P1, long_name, "raw", NULL, NULL, 0));
    free(create_ex(fx, &P1, "caf\xc3\xa9 \xe4\xba\x91", "raw", NULL, NULL, 0));

    /* aki/ari: disk and container formats go together. */
    Yun__ImageCreateRequest q = YUN__IMAGE_CREATE_REQUEST__INIT;
    q.name = (char *)"kernel";
    q.disk_format = (char *)"aki";
    q.container_format = (char *)"aki";
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), 0);
    q.container_format = (char *)"bare";
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), YUN_E_INVALID);
    q.disk_format = (char *)"raw";
    q.container_format = (char *)"ari";
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), YUN_E_INVALID);
    q.container_format = (char *)"tarball";
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), YUN_E_INVALID);

    /* Caller-chosen ids: a UUID, never one already used (even deleted). */
    q = (Yun__ImageCreateRequest)YUN__IMAGE_CREATE_REQUEST__INIT;
    q.name = (char *)"chosen";
    q.disk_format = (char *)"raw";
    q.id = (char *)"NOT-A-UUID";
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), YUN_E_INVALID);
    q.id = (char *)"6f1c0000-0000-4000-8000-000000000001";
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), 0);
    assert_int_equal(run(fx, &P2, sched_image_create, &q, NULL, NULL, NULL), YUN_E_CONFLICT);
    Yun__ImageRef ref = YUN__IMAGE_REF__INIT;
    ref.image = q.id;
    assert_int_equal(run(fx, &P1, sched_image_delete, &ref, NULL, NULL, NULL), 0);
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), YUN_E_CONFLICT);

    /* Tags and properties are bounded and checked. */
    q = (Yun__ImageCreateRequest)YUN__IMAGE_CREATE_REQUEST__INIT;
    q.name = (char *)"props";
    q.disk_format = (char *)"raw";
    Yun__ImageProperty a = YUN__IMAGE_PROPERTY__INIT, b = YUN__IMAGE_PROPERTY__INIT;
    a.key = (char *)"architecture";
    a.value = (char *)"x86_64";
    b.key = (char *)"architecture";
    b.value = (char *)"arm64";
    Yun__ImageProperty *pv[] = { &a, &b };
    q.properties = pv;
    q.n_properties = 2;
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), YUN_E_INVALID);
    q.n_properties = 1;
    char *tags[129];
    for (int i = 0; i < 129; i++)
        tags[i] = (char *)"t";
    q.tags = tags;
    q.n_tags = 129;
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), YUN_E_INVALID);
    q.n_tags = 3; /* repeats collapse */
    Yun__ImageReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_image_create, &q, &yun__image_reply__descriptor, &y,
                         NULL), 0);
    assert_int_equal(y->image->n_tags, 1);
    assert_int_equal(y->image->n_properties, 1);
    free_msg(y);

    /* A project owns a bounded number of images; deleted ones do not count. */
    fx->s.cfg.image_max_per_project = 2;
    _cleanup_free_ char *x = create(fx, &P3, "x", NULL);
    _cleanup_free_ char *z = create(fx, &P3, "y", NULL);
    assert_null(create_ex(fx, &P3, "z", "raw", NULL, NULL, YUN_E_CONFLICT));
    ref.image = x;
    assert_int_equal(run(fx, &P3, sched_image_delete, &ref, NULL, NULL, NULL), 0);
    free(create(fx, &P3, "z", NULL));
}

static void
test_delete(void **state)
{
    struct fixture *fx = *state;
    _cleanup_free_ char *id = uploaded(fx, &P1, "precious", "community", 3000);
    Yun__ImageUpdateRequest u = YUN__IMAGE_UPDATE_REQUEST__INIT;
    u.image = id;
    u.set_protected = true;
    u.protected_ = true;
    assert_int_equal(update(fx, &P1, &u, NULL), 0);

    Yun__ImageRef ref = YUN__IMAGE_REF__INIT;
    ref.image = id;
    char *msg = NULL;
    assert_int_equal(run(fx, &P1, sched_image_delete, &ref, NULL, NULL, &msg), YUN_E_CONFLICT);
    assert_contains(msg, "protected");
    free(msg);
    assert_true(exists(fx, id, false));
    assert_int_equal(run(fx, &P2, sched_image_delete, &ref, NULL, NULL, NULL), YUN_E_DENIED);

    u.protected_ = false;
    assert_int_equal(update(fx, &P1, &u, NULL), 0);
    Yun__ImageReply *y = NULL;
    assert_int_equal(run(fx, &P1, sched_image_delete, &ref, &yun__image_reply__descriptor, &y,
                         NULL), 0);
    assert_string_equal(y->image->status, "deleted");
    free_msg(y);
    assert_false(exists(fx, id, false));
    free_msg(show(fx, &P1, id, YUN_E_NOIMAGE));
    free_msg(show(fx, &ADMIN, id, YUN_E_NOIMAGE));
    free_msg(show(fx, &P1, "precious", YUN_E_NOIMAGE));
    assert_int_equal(count_listed(fx, &ADMIN, "all", NULL, id), 0);
    assert_int_equal(run(fx, &P1, sched_image_delete, &ref, NULL, NULL, NULL), YUN_E_NOIMAGE);

    /* Deleting an image while it uploads ends the upload and its bytes. */
    _cleanup_free_ char *busy = create(fx, &P1, "busy", NULL);
    uint8_t data[4096];
    fill(data, sizeof data, 11);
    assert_int_equal(send_chunk(fx, &P1, busy, 0, data, sizeof data, false, NULL), 0);
    assert_true(exists(fx, busy, true));
    ref.image = busy;
    assert_int_equal(run(fx, &P1, sched_image_delete, &ref, NULL, NULL, NULL), 0);
    assert_false(exists(fx, busy, true));
    assert_int_equal(send_chunk(fx, &P1, busy, 4096, data, sizeof data, true, NULL),
                     YUN_E_NOIMAGE);
}

static void
test_deactivate(void **state)
{
    struct fixture *fx = *state;
    _cleanup_free_ char *id = uploaded(fx, &P1, "img", "community", 2000);
    _cleanup_free_ char *queued = create(fx, &P1, "queued", NULL);
    Yun__ImageRef ref = YUN__IMAGE_REF__INIT;
    ref.image = queued;
    assert_int_equal(run(fx, &P1, sched_image_deactivate, &ref, NULL, NULL, NULL),
                     YUN_E_CONFLICT);
    ref.image = id;
    assert_int_equal(run(fx, &P2, sched_image_deactivate, &ref, NULL, NULL, NULL), YUN_E_DENIED);
    assert_int_equal(run(fx, &P1, sched_image_deactivate, &ref, NULL, NULL, NULL), 0);
    assert_int_equal(run(fx, &P1, sched_image_deactivate, &ref, NULL, NULL, NULL), 0);
    char st[32];
    assert_string_equal(status_of(fx, id, st, sizeof st), "deactivated");

    uint8_t *b = NULL;
    size_t n;
    assert_int_equal(download_all(fx, &P1, id, &b, &n), YUN_E_DENIED);
    assert_int_equal(download_all(fx, &P2, id, &b, &n), YUN_E_DENIED);
    assert_int_equal(download_all(fx, &AGENT, id, &b, &n), YUN_E_DENIED);
    free_msg(show(fx, &AGENT, id, 0));
    assert_int_equal(download_all(fx, &ADMIN, id, &b, &n), 0);
    assert_int_equal(n, 2000);
    free(b);

    assert_int_equal(run(fx, &P1, sched_image_reactivate, &ref, NULL, NULL, NULL), 0);
    assert_int_equal(download_all(fx, &P2, id, &b, &n), 0);
    free(b);
    ref.image = queued;
    assert_int_equal(run(fx, &P1, sched_image_reactivate, &ref, NULL, NULL, NULL),
                     YUN_E_CONFLICT);
}

/* --- audit ---------------------------------------------------------------------------- */

static Yun__AuditListReply *
audit_list(struct fixture *fx, const char *op, const char *user, uint64_t since, uint64_t until,
           uint32_t limit, const char *marker)
{
    Yun__AuditListRequest q = YUN__AUDIT_LIST_REQUEST__INIT;
    q.operation = (char *)(op ? op : "");
    q.user = (char *)(user ? user : "");
    q.since_us = since;
    q.until_us = until;
    q.limit = limit;
    q.marker = (char *)(marker ? marker : "");
    Yun__AuditListReply *y = NULL;
    assert_int_equal(run(fx, &ADMIN, sched_audit_list, &q, &yun__audit_list_reply__descriptor,
                         &y, NULL), 0);
    return y;
}

static void
test_audit(void **state)
{
    struct fixture *fx = *state;
    uint64_t t0 = yun_wall_us();
    _cleanup_free_ char *id = uploaded(fx, &P1, "audited", NULL, 5000);
    Yun__ImageUpdateRequest u = YUN__IMAGE_UPDATE_REQUEST__INIT;
    u.image = id;
    u.name = (char *)"bad\n";
    assert_int_equal(update(fx, &P1, &u, NULL), YUN_E_INVALID);
    uint64_t t1 = yun_wall_us();
    u.name = (char *)"renamed";
    assert_int_equal(update(fx, &P2, &u, NULL), YUN_E_NOIMAGE);
    Yun__ImageRef ref = YUN__IMAGE_REF__INIT;
    ref.image = id;
    assert_int_equal(run(fx, &P1, sched_image_delete, &ref, NULL, NULL, NULL), 0);
    /* Reads leave no record. */
    free_msg(show(fx, &P1, "nothing", YUN_E_NOIMAGE));

    Yun__AuditListReply *y = audit_list(fx, "image.", NULL, 0, 0, 0, NULL);
    /* create, upload start, upload end, failed update, denied update, delete */
    assert_int_equal(y->n_records, 6);
    const char *ops[] = { "image.create", "image.upload", "image.upload", "image.update",
                          "image.update", "image.delete" };
    const char *results[] = { "ok", "ok", "ok", "YUN_E_INVALID", "YUN_E_NOIMAGE", "ok" };
    for (size_t i = 0; i < y->n_records; i++) {
        Yun__AuditRecord *a = y->records[i];
        assert_string_equal(a->operation, ops[i]);
        assert_string_equal(a->result, results[i]);
        assert_true(*a->request_id);
        if (i > 0)
            assert_true(a->time_us >= y->records[i - 1]->time_us);
        if (i != 4) {
            assert_string_equal(a->target, id);
            assert_string_equal(a->user, "u1");
            assert_string_equal(a->project, "p1");
            assert_string_equal(a->source, "u1");
        } else {
            assert_string_equal(a->user, "u2");
        }
    }
    assert_contains(y->records[3]->detail, "name");
    assert_string_equal(y->next_marker, "");
    free_msg(y);

    /* Exact operation, user, time range. */
    y = audit_list(fx, "image.update", NULL, 0, 0, 0, NULL);
    assert_int_equal(y->n_records, 2);
    free_msg(y);
    y = audit_list(fx, "image.upd", NULL, 0, 0, 0, NULL);
    assert_int_equal(y->n_records, 0);
    free_msg(y);
    y = audit_list(fx, NULL, "u2", 0, 0, 0, NULL);
    assert_int_equal(y->n_records, 1);
    free_msg(y);
    y = audit_list(fx, NULL, NULL, t0, t1, 0, NULL);
    assert_int_equal(y->n_records, 4);
    free_msg(y);
    y = audit_list(fx, NULL, NULL, t1, 0, 0, NULL);
    assert_int_equal(y->n_records, 2);
    free_msg(y);

    /* Pages of 4: every record once. */
    char marker[256] = "";
    size_t total = 0, pages = 0;
    for (;;) {
        y = audit_list(fx, "image.", NULL, 0, 0, 4, marker);
        total += y->n_records;
        pages++;
        snprintf(marker, sizeof marker, "%s", y->next_marker);
        free_msg(y);
        if (!*marker)
            break;
    }
    assert_int_equal(total, 6);
    assert_int_equal(pages, 2);

    /* Bad requests. */
    Yun__AuditListRequest q = YUN__AUDIT_LIST_REQUEST__INIT;
    q.marker = (char *)"zz";
    assert_int_equal(run(fx, &ADMIN, sched_audit_list, &q, NULL, NULL, NULL), YUN_E_INVALID);
    q.marker = (char *)"";
    q.since_us = 10;
    q.until_us = 5;
    assert_int_equal(run(fx, &ADMIN, sched_audit_list, &q, NULL, NULL, NULL), YUN_E_INVALID);

    /* Retention drops old records, keeps young ones. */
    fx->s.cfg.audit_retention_days = 1;
    sched_audit_cron(&fx->s);
    y = audit_list(fx, NULL, NULL, 0, 0, 0, NULL);
    assert_int_equal(y->n_records, 6);
    free_msg(y);
}

/* --- through the dispatcher ------------------------------------------------------------ */

/* An admin token of user 'ops' in project "admin", for operator calls:
 * the dispatcher wants one (identity.c). */
static char *
ops_token(struct fixture *fx)
{
    static char *token;
    if (token)
        return token;
    char keys[1200];
    snprintf(keys, sizeof keys, "%s/token-keys", fx->dir);
    assert_int_equal(yun_token_keys_create(keys), 0);
    free(fx->s.cfg.token_key_dir);
    fx->s.cfg.token_key_dir = strdup(keys);
    assert_int_equal(sched_identity_init(&fx->s), 0);
    struct yun_token c = {
        .user_id = "ops", .project_id = "admin", .n_roles = 3,
        .issued_at_us = yun_wall_us(), .expires_at_us = yun_wall_us() + 3600000000ull,
        .roles = { "admin", "member", "reader" },
    };
    struct yun_token_keys *k = NULL;
    assert_int_equal(yun_token_keys_load(keys, &k), 0);
    assert_int_equal(yun_token_issue(k, &c, &token, NULL), 0);
    yun_token_keys_free(k);
    return token;
}

static int
dispatch(struct fixture *fx, const char *peer_id, int kind, Yun__Op op, const void *req,
         Yun__Reply **ret)
{
    char reqid[32];
    snprintf(reqid, sizeof reqid, "d-%06u", ++fx->seq);
    struct yun_bus_peer peer = {
        .sender = peer_id, .key_id = peer_id, .request_id = reqid, .role = kind,
    };
    if (kind == YUN__PEER_RECORD__KIND__KIND_OPERATOR) {
        const char *token = ops_token(fx);
        peer.token = (const uint8_t *)token;
        peer.token_size = strlen(token);
    }
    size_t size = protobuf_c_message_get_packed_size(req);
    _cleanup_free_ uint8_t *payload = malloc(size + 1);
    protobuf_c_message_pack(req, payload);
    Yun__Request q = YUN__REQUEST__INIT;
    q.op = op;
    q.payload.data = payload;
    q.payload.len = size;
    size_t body_size = yun__request__get_packed_size(&q);
    _cleanup_free_ uint8_t *body = malloc(body_size + 1);
    yun__request__pack(&q, body);
    _cleanup_free_ uint8_t *reply = NULL;
    size_t reply_size = 0;
    assert_int_equal(sched_dispatch(&peer, body, body_size, &reply, &reply_size, &fx->s), 0);
    Yun__Reply *y = yun__reply__unpack(NULL, reply_size, reply);
    assert_non_null(y);
    int r = y->error;
    if (ret)
        *ret = y;
    else
        yun__reply__free_unpacked(y, NULL);
    return r;
}

static void
test_dispatch(void **state)
{
    struct fixture *fx = *state;
    const int op = YUN__PEER_RECORD__KIND__KIND_OPERATOR;
    const int agent = YUN__PEER_RECORD__KIND__KIND_AGENT;

    /* An operator creates and uploads through the table. */
    Yun__ImageCreateRequest c = YUN__IMAGE_CREATE_REQUEST__INIT;
    c.name = (char *)"via-bus";
    c.disk_format = (char *)"raw";
    Yun__Reply *rep = NULL;
    assert_int_equal(dispatch(fx, "ops", op, YUN__OP__OP_IMAGE_CREATE, &c, &rep), 0);
    Yun__ImageReply *ir = yun__image_reply__unpack(NULL, rep->payload.len, rep->payload.data);
    assert_non_null(ir);
    char id[YUN_UUID_STR_SIZE];
    snprintf(id, sizeof id, "%s", ir->image->id);
    assert_string_equal(ir->image->owner, "admin");
    free_msg(ir);
    yun__reply__free_unpacked(rep, NULL);

    uint8_t data[3000];
    fill(data, sizeof data, 12);
    Yun__ImageUploadRequest u = YUN__IMAGE_UPLOAD_REQUEST__INIT;
    u.image = id;
    u.data.data = data;
    u.data.len = 1000;
    assert_int_equal(dispatch(fx, "ops", op, YUN__OP__OP_IMAGE_UPLOAD, &u, NULL), 0);
    /* A wrong offset: the error reply carries where to resume. */
    assert_int_equal(dispatch(fx, "ops", op, YUN__OP__OP_IMAGE_UPLOAD, &u, &rep),
                     YUN_E_CONFLICT);
    Yun__ImageUploadReply *ur =
        yun__image_upload_reply__unpack(NULL, rep->payload.len, rep->payload.data);
    assert_non_null(ur);
    assert_int_equal(ur->received, 1000);
    free_msg(ur);
    yun__reply__free_unpacked(rep, NULL);
    u.offset = 1000;
    u.data.data = data + 1000;
    u.data.len = 2000;
    u.last = true;
    assert_int_equal(dispatch(fx, "ops", op, YUN__OP__OP_IMAGE_UPLOAD, &u, NULL), 0);

    /* An agent shows and downloads it, but may not list or create. */
    Yun__ImageRef ref = YUN__IMAGE_REF__INIT;
    ref.image = id;
    assert_int_equal(dispatch(fx, "host1", agent, YUN__OP__OP_IMAGE_SHOW, &ref, NULL), 0);
    Yun__ImageDownloadRequest d = YUN__IMAGE_DOWNLOAD_REQUEST__INIT;
    d.image = id;
    d.offset = 10;
    assert_int_equal(dispatch(fx, "host1", agent, YUN__OP__OP_IMAGE_DOWNLOAD, &d, &rep), 0);
    Yun__ImageDownloadReply *dr =
        yun__image_download_reply__unpack(NULL, rep->payload.len, rep->payload.data);
    assert_non_null(dr);
    assert_int_equal(dr->data.len, 2990);
    assert_memory_equal(dr->data.data, data + 10, 2990);
    assert_int_equal(dr->offset, 10);
    assert_int_equal(dr->size, 3000);
    assert_true(dr->eof);
    assert_int_equal(strlen(dr->os_hash_value), 128);
    free_msg(dr);
    yun__reply__free_unpacked(rep, NULL);
    Yun__ImageListRequest l = YUN__IMAGE_LIST_REQUEST__INIT;
    assert_int_equal(dispatch(fx, "host1", agent, YUN__OP__OP_IMAGE_LIST, &l, NULL),
                     YUN_E_DENIED);
    assert_int_equal(dispatch(fx, "host1", agent, YUN__OP__OP_IMAGE_CREATE, &c, NULL),
                     YUN_E_DENIED);
    Yun__AuditListRequest al = YUN__AUDIT_LIST_REQUEST__INIT;
    assert_int_equal(dispatch(fx, "host1", agent, YUN__OP__OP_AUDIT_LIST, &al, NULL),
                     YUN_E_DENIED);

    /* host.set_enabled is audited by the table, with its target. */
    Yun__HostSetEnabledRequest he = YUN__HOST_SET_ENABLED_REQUEST__INIT;
    he.host = (char *)"nosuchhost";
    assert_int_equal(dispatch(fx, "ops", op, YUN__OP__OP_HOST_SET_ENABLED, &he, NULL),
                     YUN_E_NOHOST);

    Yun__AuditListReply *y = audit_list(fx, NULL, "host1", 0, 0, 0, NULL);
    assert_int_equal(y->n_records, 3);
    assert_string_equal(y->records[0]->operation, "image.list");
    assert_string_equal(y->records[0]->result, "YUN_E_DENIED");
    assert_string_equal(y->records[1]->operation, "image.create");
    assert_string_equal(y->records[2]->operation, "audit.list");
    free_msg(y);
    y = audit_list(fx, "host.", NULL, 0, 0, 0, NULL);
    assert_int_equal(y->n_records, 1);
    assert_string_equal(y->records[0]->operation, "host.set_enabled");
    assert_string_equal(y->records[0]->target, "nosuchhost");
    assert_string_equal(y->records[0]->result, "YUN_E_NOHOST");
    assert_string_equal(y->records[0]->user, "ops");
    free_msg(y);
    /* The upload through the bus: start and end, and the failed chunk. */
    y = audit_list(fx, "image.upload", NULL, 0, 0, 0, NULL);
    assert_int_equal(y->n_records, 3);
    assert_string_equal(y->records[1]->result, "YUN_E_CONFLICT");
    free_msg(y);
}

/* --- tombstone purge ------------------------------------------------------ */

static bool
record_exists(struct fixture *fx, const char *db, const void *key, size_t key_size)
{
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, false, &txn), 0);
    int r = yun_txn_get(txn, db, key, key_size, NULL, NULL);
    yun_txn_abortp(&txn);
    assert_true(r == 0 || r == -ENOENT);
    return r == 0;
}

static char *
deleted(struct fixture *fx, const struct who *w, const char *name)
{
    char *id = uploaded(fx, w, name, "shared", 1000);
    assert_int_equal(member(fx, w, sched_image_member_add, id, "p2", NULL), 0);
    Yun__ImageRef ref = YUN__IMAGE_REF__INIT;
    ref.image = id;
    assert_int_equal(run(fx, w, sched_image_delete, &ref, NULL, NULL, NULL), 0);
    return id;
}

/* Tombstones older than [images] tombstone_retention_s go, with whatever
 * index entry they had, in batches; younger ones and live images stay; 0
 * keeps them forever; a purged id may be chosen again. */
static void
test_tombstone_purge(void **state)
{
    struct fixture *fx = *state;
    _cleanup_free_ char *old = deleted(fx, &P1, "old");
    _cleanup_free_ char *live = uploaded(fx, &P1, "live", NULL, 100);
    uint64_t t_old = yun_wall_us();
    assert_true(record_exists(fx, "images", old, strlen(old)));

    /* A name index entry left behind by some older version goes too. */
    struct yun_txn *txn = NULL;
    char key[128];
    int key_size = snprintf(key, sizeof key, "old%c%s", '\0', old);
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    assert_int_equal(yun_txn_put(txn, "image_names", key, (size_t)key_size, NULL, 0), 0);
    assert_int_equal(yun_txn_commit(txn), 0);

    /* Forever. */
    fx->s.cfg.image_tombstone_retention_s = 0;
    assert_int_equal(sched_image_purge(&fx->s, t_old + 3650 * 86400ull * 1000000u), 0);
    assert_true(record_exists(fx, "images", old, strlen(old)));

    /* Not old enough, then old enough: only the tombstone goes. */
    fx->s.cfg.image_tombstone_retention_s = 100;
    assert_int_equal(sched_image_purge(&fx->s, t_old + 99 * 1000000ull), 0);
    assert_true(record_exists(fx, "images", old, strlen(old)));
    assert_int_equal(sched_image_purge(&fx->s, t_old + 101 * 1000000ull), 1);
    assert_false(record_exists(fx, "images", old, strlen(old)));
    assert_false(record_exists(fx, "image_names", key, (size_t)key_size));
    assert_true(record_exists(fx, "images", live, strlen(live)));
    free_msg(show(fx, &P1, live, 0));
    assert_int_equal(sched_image_purge(&fx->s, t_old + 101 * 1000000ull), 0);
    Yun__AuditListReply *a = audit_list(fx, "image.purge", NULL, 0, 0, 0, NULL);
    assert_int_equal(a->n_records, 1);
    assert_string_equal(a->records[0]->target, old);
    assert_string_equal(a->records[0]->user, "scheduler");
    free_msg(a);

    /* Its id is free again. */
    Yun__ImageCreateRequest q = YUN__IMAGE_CREATE_REQUEST__INIT;
    q.name = (char *)"reborn";
    q.disk_format = (char *)"raw";
    q.id = old;
    assert_int_equal(run(fx, &P1, sched_image_create, &q, NULL, NULL, NULL), 0);

    /* Bounded batches: 256 per call, the rest on the next. */
    enum { N = 300 };
    char *ids[N];
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "many-%d", i);
        ids[i] = create(fx, &P2, name, NULL);
        Yun__ImageRef ref = YUN__IMAGE_REF__INIT;
        ref.image = ids[i];
        assert_int_equal(run(fx, &P2, sched_image_delete, &ref, NULL, NULL, NULL), 0);
    }
    uint64_t later = yun_wall_us() + 101 * 1000000ull;
    assert_int_equal(sched_image_purge(&fx->s, later), 256);
    assert_int_equal(sched_image_purge(&fx->s, later), N - 256);
    assert_int_equal(sched_image_purge(&fx->s, later), 0);
    for (int i = 0; i < N; i++) {
        assert_false(record_exists(fx, "images", ids[i], strlen(ids[i])));
        free(ids[i]);
    }
    assert_true(record_exists(fx, "images", old, strlen(old)));

    /* The cron does it by itself once the retention has passed. */
    _cleanup_free_ char *soon = deleted(fx, &P1, "soon");
    fx->s.cfg.image_tombstone_retention_s = 1;
    sched_image_cron(&fx->s);
    assert_true(record_exists(fx, "images", soon, strlen(soon)));
    usleep(1100 * 1000);
    sched_image_cron(&fx->s);
    assert_false(record_exists(fx, "images", soon, strlen(soon)));
    assert_true(record_exists(fx, "images", live, strlen(live)));
}

static void
test_config(void **state)
{
    struct fixture *fx = *state;
    close_sched(fx);
    /* A chunk that does not fit a message is refused at start. */
    fx->s.cfg.image_chunk_size = fx->s.cfg.max_message_size;
    assert_int_equal(sched_store_open(&fx->s), 0);
    assert_int_equal(sched_image_init(&fx->s), YUN_E_CONFIG);
    fx->s.cfg.image_chunk_size = CHUNK;
    /* An explicit image_dir is used as given. */
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/elsewhere", fx->dir);
    free(fx->s.cfg.image_dir);
    fx->s.cfg.image_dir = strdup(dir);
    assert_int_equal(sched_image_init(&fx->s), 0);
    snprintf(fx->images, sizeof fx->images, "%s", dir);
    _cleanup_free_ char *id = uploaded(fx, &P1, "elsewhere", NULL, 100);
    assert_true(exists(fx, id, false));
}

int
main(void)
{
    /* The handlers log every change; YUN_TEST_VERBOSE=1 shows them. */
    if (!getenv("YUN_TEST_VERBOSE"))
        yun_log_max_level = YUN_LOG_WARN;
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_roundtrip),
        T(test_empty_image),
        T(test_checksum_mismatch),
        T(test_wrong_offset),
        T(test_inspector_rejects),
        T(test_upload_limits),
        T(test_free_space),
        T(test_project_quota),
        T(test_idle_reaped),
        T(test_restart_recovery),
        T(test_list_pages),
        T(test_visibility),
        T(test_update),
        T(test_create_validation),
        T(test_delete),
        T(test_deactivate),
        T(test_audit),
        T(test_dispatch),
        T(test_tombstone_purge),
        T(test_config),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
