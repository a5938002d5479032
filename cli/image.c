/* SPDX-License-Identifier: Apache-2.0
 * image.c: `yun image create|upload|list|show|download|set|delete|
 * deactivate|reactivate` and `yun image member add|remove|list|accept|
 * reject`: the image service (proto/image.proto). Image bytes move in
 * chunks of at most 1 MiB with offsets, never a whole file in one message;
 * a download is checked against the image's sha512 at the end. IMAGE is a
 * name or an id everywhere: the scheduler resolves names. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "cli.h"
#include "digest.h"
#include "err.h"
#include "rpc.h"
#include "util.h"
#include "image.pb-c.h"

#define CHUNK_SIZE (1u << 20)
/* Download chunks in flight: enough to keep the scheduler and this process
 * busy at once on loopback; more only holds more memory. */
#define DOWNLOAD_DEPTH 4

DEFINE_TRIVIAL_CLEANUP_FUNC(struct yun_rpc_window *, yun_rpc_window_free)

static void
message_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_message_ _cleanup_(message_freep)

/* ---- Arguments that repeat: --tag, --property ---- */

/* Pointers into argv; room for every word of the command line. */
struct strv {
    char **v;
    size_t n;
};

static void
strv_done(struct strv *s)
{
    free(s->v);
}

static void
strv_init(struct strv *s, int argc)
{
    s->v = calloc((size_t)argc + 1, sizeof *s->v);
    if (!s->v)
        abort();
    s->n = 0;
}

struct props {
    Yun__ImageProperty *items;
    Yun__ImageProperty **ptrs;
    size_t n;
};

static void
props_done(struct props *p)
{
    free(p->items);
    free(p->ptrs);
}

static void
props_init(struct props *p, int argc)
{
    p->items = calloc((size_t)argc + 1, sizeof *p->items);
    p->ptrs = calloc((size_t)argc + 1, sizeof *p->ptrs);
    if (!p->items || !p->ptrs)
        abort();
    p->n = 0;
}

/* Adds "key=value" (split in place in argv). */
static int
props_add(struct props *p, const char *cmd, char *arg)
{
    char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return cli_usage_error("invalid property '%s' for '%s': give KEY=VALUE", arg, cmd);
    *eq = '\0';
    Yun__ImageProperty *it = &p->items[p->n];
    yun__image_property__init(it);
    it->key = arg;
    it->value = eq + 1;
    p->ptrs[p->n++] = it;
    return 0;
}

static int
parse_u32_option(const char *cmd, const char *opt, const char *val, uint32_t *ret)
{
    if (yun_safe_atou32(val, ret) < 0)
        return cli_usage_error("invalid value '%s' for %s of '%s': give a whole number", val,
                               opt, cmd);
    return 0;
}

/* --public|--private|--community|--shared: one of them at most. */
static int
set_visibility(const char *cmd, const char **vis, const char *v)
{
    if (*vis && strcmp(*vis, v) != 0)
        return cli_usage_error("'%s' takes one of --public, --private, --community and "
                               "--shared", cmd);
    *vis = v;
    return 0;
}

static bool
is_hex(const char *s, size_t len)
{
    if (strlen(s) != len)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F')))
            return false;
    return true;
}

/* ---- Printing an image ---- */

static void
tags_cell(struct cli_table *t, const Yun__ImageRecord *im)
{
    struct json_object *arr = json_object_new_array();
    size_t len = 1;
    for (size_t i = 0; i < im->n_tags; i++) {
        json_object_array_add(arr, json_object_new_string(im->tags[i]));
        len += strlen(im->tags[i]) + 2;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    for (size_t i = 0; i < im->n_tags; i++) {
        if (i)
            strcat(text, ", ");
        strcat(text, im->tags[i]);
    }
    cli_table_json(t, "tags", arr, text);
}

static void
properties_cell(struct cli_table *t, const Yun__ImageRecord *im)
{
    struct json_object *obj = json_object_new_object();
    size_t len = 1;
    for (size_t i = 0; i < im->n_properties; i++) {
        const Yun__ImageProperty *p = im->properties[i];
        json_object_object_add(obj, p->key, json_object_new_string(p->value));
        len += strlen(p->key) + strlen(p->value) + 5;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    char *w = text;
    for (size_t i = 0; i < im->n_properties; i++) {
        const Yun__ImageProperty *p = im->properties[i];
        w += sprintf(w, "%s%s='%s'", i ? ", " : "", p->key, p->value);
    }
    cli_table_json(t, "properties", obj, text);
}

static void
members_cell(struct cli_table *t, const Yun__ImageRecord *im)
{
    struct json_object *arr = json_object_new_array();
    size_t len = 1;
    for (size_t i = 0; i < im->n_members; i++) {
        const Yun__ImageMember *m = im->members[i];
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "project", json_object_new_string(m->project));
        json_object_object_add(o, "status", json_object_new_string(m->status));
        json_object_array_add(arr, o);
        len += strlen(m->project) + strlen(m->status) + 4;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    char *w = text;
    for (size_t i = 0; i < im->n_members; i++)
        w += sprintf(w, "%s%s(%s)", i ? ", " : "", im->members[i]->project,
                     im->members[i]->status);
    cli_table_json(t, "members", arr, text);
}

static void
image_row(struct cli_table *t, const Yun__ImageRecord *im, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", im->id);
    cli_table_str(t, "name", im->name);
    if (!full) {
        cli_table_str(t, "disk_format", im->disk_format);
        cli_table_str(t, "status", im->status);
        cli_table_uint(t, "size", im->size);
        cli_table_str(t, "visibility", im->visibility);
        return;
    }
    cli_table_str(t, "owner", im->owner);
    cli_table_str(t, "visibility", im->visibility);
    cli_table_str(t, "status", im->status);
    cli_table_str(t, "disk_format", im->disk_format);
    cli_table_str(t, "container_format", im->container_format);
    cli_table_uint(t, "size", im->size);
    cli_table_uint(t, "virtual_size", im->virtual_size);
    cli_table_str(t, "checksum", im->checksum);
    cli_table_str(t, "os_hash_algo", im->os_hash_algo);
    cli_table_str(t, "os_hash_value", im->os_hash_value);
    cli_table_uint(t, "min_disk", im->min_disk);
    cli_table_uint(t, "min_ram", im->min_ram);
    cli_table_bool(t, "protected", im->protected_);
    tags_cell(t, im);
    properties_cell(t, im);
    members_cell(t, im);
    cli_table_str(t, "detected_format", im->detected_format);
    cli_table_time(t, "created_at", im->created_us);
    cli_table_time(t, "updated_at", im->updated_us);
}

static int print_image(struct cli *cli, const Yun__ImageRecord *im);

/* Prints every field of image 'im' (also for `yun server image create`). */
int
cli_image_print(struct cli *cli, const struct Yun__ImageRecord *im)
{
    return print_image(cli, im);
}

static int
print_image(struct cli *cli, const Yun__ImageRecord *im)
{
    if (!im) {
        fprintf(stderr, "yun: the scheduler's reply carries no image\n");
        return 1;
    }
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    image_row(t, im, true);
    return cli_print(cli, t);
}

/* OP_IMAGE_SHOW: the record of 'image' (a name or an id). */
static int
show_image(struct cli *cli, const char *image, Yun__ImageReply **ret)
{
    Yun__ImageRef q = YUN__IMAGE_REF__INIT;
    q.image = (char *)image;
    ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_IMAGE_SHOW, &q.base, &yun__image_reply__descriptor, &m);
    if (r)
        return r;
    Yun__ImageReply *y = (Yun__ImageReply *)m;
    if (!y->image) {
        protobuf_c_message_free_unpacked(m, NULL);
        fprintf(stderr, "yun: the scheduler's reply carries no image\n");
        return 1;
    }
    *ret = y;
    return 0;
}

/* ---- Progress on a terminal ---- */

struct progress {
    bool on;           /* stderr is a terminal */
    const char *what;  /* "upload", "download" */
    uint64_t total;    /* 0 = unknown */
    uint64_t base;     /* bytes that were there before (a resumed download) */
    uint64_t done;     /* including 'base' */
    double start, last;
    bool drawn;
};

static double
mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
progress_init(struct progress *p, const char *what, uint64_t total, uint64_t base)
{
    *p = (struct progress){ .on = isatty(STDERR_FILENO), .what = what, .total = total,
                            .base = base, .done = base, .start = mono_s() };
}

/* One line, redrawn in place with \r:
 * "upload [=============>          ]  45%   471.9/1048.6 MB   612.3 MB/s" */
static void
progress_format(const struct progress *p, double now, char *buf, size_t size)
{
    double secs = now - p->start;
    double rate = secs > 0 ? (double)(p->done - p->base) / secs / 1e6 : 0;
    if (p->total == 0) {
        snprintf(buf, size, "%s %9.1f MB %8.1f MB/s", p->what, (double)p->done / 1e6, rate);
        return;
    }
    uint64_t done = p->done > p->total ? p->total : p->done;
    unsigned pct = (unsigned)(done * 100 / p->total);
    char bar[31];
    size_t fill = (size_t)(done * 30 / p->total);
    for (size_t i = 0; i < 30; i++)
        bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[30] = '\0';
    snprintf(buf, size, "%s [%s] %3u%% %9.1f/%.1f MB %8.1f MB/s", p->what, bar, pct,
             (double)done / 1e6, (double)p->total / 1e6, rate);
}

static void
progress_update(struct progress *p, uint64_t done, bool final)
{
    p->done = done;
    if (!p->on)
        return;
    double now = mono_s();
    if (!final && p->drawn && now - p->last < 0.1)
        return;
    p->last = now;
    p->drawn = true;
    char line[160];
    progress_format(p, now, line, sizeof line);
    fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
    fflush(stderr);
}

/* Ends the line of a progress bar cut short by an error. */
static void
progress_abort(struct progress *p)
{
    if (p->on && p->drawn)
        fputc('\n', stderr);
    p->drawn = false;
}

/* ---- Upload ---- */

static ssize_t
read_full(int fd, void *buf, size_t size)
{
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, (uint8_t *)buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static int
open_input(const char *path, int *ret_fd, uint64_t *ret_size)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "yun: cannot open '%s': %s\n", path, strerror(errno));
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        fprintf(stderr, "yun: cannot stat '%s': %s\n", path, strerror(errno));
        return 1;
    }
    if (S_ISDIR(st.st_mode)) {
        fprintf(stderr, "yun: '%s' is a directory, not an image file\n", path);
        return 1;
    }
    *ret_size = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
    *ret_fd = TAKE_FD(fd);
    return 0;
}

/* Streams 'fd' into queued image 'id' in chunks; on success '*ret' is the
 * reply to the last chunk, which carries the image. */
static int
upload_fd(struct cli *cli, const char *id, int fd, const char *path, uint64_t size,
          const char *md5, Yun__ImageUploadReply **ret)
{
    _cleanup_free_ uint8_t *cur = malloc(CHUNK_SIZE);
    _cleanup_free_ uint8_t *next = malloc(CHUNK_SIZE);
    if (!cur || !next)
        abort();
    struct progress prog;
    progress_init(&prog, "upload", size, 0);
    ssize_t n = read_full(fd, cur, CHUNK_SIZE);
    uint64_t offset = 0;
    for (;;) {
        if (n < 0) {
            progress_abort(&prog);
            fprintf(stderr, "yun: cannot read '%s': %s\n", path, strerror((int)-n));
            return 1;
        }
        /* Read one chunk ahead: the chunk before end of file is the last. */
        ssize_t next_n = (size_t)n == CHUNK_SIZE ? read_full(fd, next, CHUNK_SIZE) : 0;
        Yun__ImageUploadRequest q = YUN__IMAGE_UPLOAD_REQUEST__INIT;
        q.image = (char *)id;
        q.offset = offset;
        q.data.data = cur;
        q.data.len = (size_t)n;
        q.last = next_n == 0;
        q.expected_size = size;
        q.expected_md5 = (char *)(md5 ? md5 : "");
        ProtobufCMessage *m = NULL;
        int r = cli_call(cli, YUN__OP__OP_IMAGE_UPLOAD, &q.base,
                         &yun__image_upload_reply__descriptor, &m);
        if (r) {
            progress_abort(&prog);
            return r;
        }
        Yun__ImageUploadReply *y = (Yun__ImageUploadReply *)m;
        offset += (uint64_t)n;
        if (y->received != offset) {
            protobuf_c_message_free_unpacked(m, NULL);
            progress_abort(&prog);
            fprintf(stderr, "yun: the scheduler has %llu bytes of image '%s', expected %llu\n",
                    (unsigned long long)y->received, id, (unsigned long long)offset);
            return 1;
        }
        progress_update(&prog, offset, q.last);
        if (q.last) {
            *ret = y;
            return 0;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        uint8_t *tmp = cur;
        cur = next;
        next = tmp;
        n = next_n;
    }
}

static int
upload_and_print(struct cli *cli, const char *id, int fd, const char *path, uint64_t size,
                 const char *md5)
{
    Yun__ImageUploadReply *y = NULL;
    int r = upload_fd(cli, id, fd, path, size, md5, &y);
    if (r)
        return r;
    r = print_image(cli, y->image);
    protobuf_c_message_free_unpacked(&y->base, NULL);
    return r;
}

enum {
    OPT_FILE = 0x100,
    OPT_DISK_FORMAT,
    OPT_CONTAINER_FORMAT,
    OPT_PROPERTY,
    OPT_UNSET_PROPERTY,
    OPT_TAG,
    OPT_REMOVE_TAG,
    OPT_PUBLIC,
    OPT_PRIVATE,
    OPT_COMMUNITY,
    OPT_SHARED,
    OPT_MIN_DISK,
    OPT_MIN_RAM,
    OPT_PROTECTED,
    OPT_UNPROTECTED,
    OPT_CHECKSUM,
    OPT_ID,
    OPT_NAME,
    OPT_STATUS,
    OPT_VISIBILITY,
    OPT_OWNER,
    OPT_SORT,
    OPT_LIMIT,
    OPT_MARKER,
    OPT_LONG,
    OPT_OFFSET,
    OPT_PROJECT,
};

#define VISIBILITY_OPTIONS                                                                 \
    { "public", no_argument, NULL, OPT_PUBLIC },                                           \
        { "private", no_argument, NULL, OPT_PRIVATE },                                     \
        { "community", no_argument, NULL, OPT_COMMUNITY },                                 \
        { "shared", no_argument, NULL, OPT_SHARED }

static const char *
visibility_of(int c)
{
    switch (c) {
    case OPT_PUBLIC:
        return "public";
    case OPT_PRIVATE:
        return "private";
    case OPT_COMMUNITY:
        return "community";
    case OPT_SHARED:
        return "shared";
    }
    return NULL;
}

static int
image_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "image create";
    static const struct option opts[] = {
        { "file", required_argument, NULL, OPT_FILE },
        { "disk-format", required_argument, NULL, OPT_DISK_FORMAT },
        { "container-format", required_argument, NULL, OPT_CONTAINER_FORMAT },
        { "property", required_argument, NULL, OPT_PROPERTY },
        { "tag", required_argument, NULL, OPT_TAG },
        VISIBILITY_OPTIONS,
        { "min-disk", required_argument, NULL, OPT_MIN_DISK },
        { "min-ram", required_argument, NULL, OPT_MIN_RAM },
        { "protected", no_argument, NULL, OPT_PROTECTED },
        { "checksum", required_argument, NULL, OPT_CHECKSUM },
        { "id", required_argument, NULL, OPT_ID },
        {},
    };
    Yun__ImageCreateRequest q = YUN__IMAGE_CREATE_REQUEST__INIT;
    _cleanup_(strv_done) struct strv tags;
    _cleanup_(props_done) struct props props;
    strv_init(&tags, argc);
    props_init(&props, argc);
    const char *file = NULL, *md5 = NULL, *vis = NULL;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_FILE:
            file = optarg;
            break;
        case OPT_DISK_FORMAT:
            q.disk_format = optarg;
            break;
        case OPT_CONTAINER_FORMAT:
            q.container_format = optarg;
            break;
        case OPT_PROPERTY:
            if ((r = props_add(&props, cmd, optarg)))
                return r;
            break;
        case OPT_TAG:
            tags.v[tags.n++] = optarg;
            break;
        case OPT_PUBLIC:
        case OPT_PRIVATE:
        case OPT_COMMUNITY:
        case OPT_SHARED:
            if ((r = set_visibility(cmd, &vis, visibility_of(c))))
                return r;
            break;
        case OPT_MIN_DISK:
            if ((r = parse_u32_option(cmd, "--min-disk", optarg, &q.min_disk)))
                return r;
            break;
        case OPT_MIN_RAM:
            if ((r = parse_u32_option(cmd, "--min-ram", optarg, &q.min_ram)))
                return r;
            break;
        case OPT_PROTECTED:
            q.protected_ = true;
            break;
        case OPT_CHECKSUM:
            if (!is_hex(optarg, 32))
                return cli_usage_error("invalid --checksum '%s': give the MD5 as 32 hex "
                                       "digits", optarg);
            md5 = optarg;
            break;
        case OPT_ID:
            if (!yun_uuid_is_valid(optarg))
                return cli_usage_error("invalid --id '%s': give a UUID", optarg);
            q.id = optarg;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one image name (see 'yun %s --help')", cmd, cmd);
    if (!*q.disk_format)
        return cli_usage_error("'%s' needs --disk-format (raw, qcow2, vmdk, vhd, vhdx, vdi, "
                               "iso, aki or ari)", cmd);
    if (md5 && !file)
        return cli_usage_error("'%s --checksum' checks an upload: give --file too", cmd);
    q.name = argv[optind];
    q.visibility = (char *)(vis ? vis : "");
    q.tags = tags.v;
    q.n_tags = tags.n;
    q.properties = props.ptrs;
    q.n_properties = props.n;

    /* Open the file before the record exists, so a typo leaves nothing. */
    _cleanup_close_ int fd = -EBADF;
    uint64_t size = 0;
    if (file && (r = open_input(file, &fd, &size)))
        return r;

    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_IMAGE_CREATE, &q.base, &yun__image_reply__descriptor, &m);
    if (r)
        return r;
    const Yun__ImageRecord *im = ((Yun__ImageReply *)m)->image;
    if (!im)
        return print_image(cli, NULL);
    if (!file)
        return print_image(cli, im);
    return upload_and_print(cli, im->id, fd, file, size, md5);
}

static int
image_upload(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "image upload";
    static const struct option opts[] = {
        { "file", required_argument, NULL, OPT_FILE },
        { "checksum", required_argument, NULL, OPT_CHECKSUM },
        {},
    };
    const char *file = NULL, *md5 = NULL;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_FILE) {
            file = optarg;
        } else if (c == OPT_CHECKSUM) {
            if (!is_hex(optarg, 32))
                return cli_usage_error("invalid --checksum '%s': give the MD5 as 32 hex "
                                       "digits", optarg);
            md5 = optarg;
        } else {
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc || !file)
        return cli_usage_error("'%s' takes one image name or id and --file FILE", cmd);
    _cleanup_close_ int fd = -EBADF;
    uint64_t size = 0;
    if ((r = open_input(file, &fd, &size)))
        return r;
    /* Uploads name the image by id. */
    _cleanup_message_ Yun__ImageReply *y = NULL;
    if ((r = show_image(cli, argv[optind], &y)))
        return r;
    return upload_and_print(cli, y->image->id, fd, file, size, md5);
}

/* ---- List, show ---- */

static int
image_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "image list";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "status", required_argument, NULL, OPT_STATUS },
        { "visibility", required_argument, NULL, OPT_VISIBILITY },
        { "owner", required_argument, NULL, OPT_OWNER },
        { "disk-format", required_argument, NULL, OPT_DISK_FORMAT },
        { "tag", required_argument, NULL, OPT_TAG },
        { "sort", required_argument, NULL, OPT_SORT },
        { "limit", required_argument, NULL, OPT_LIMIT },
        { "marker", required_argument, NULL, OPT_MARKER },
        { "long", no_argument, NULL, OPT_LONG },
        {},
    };
    Yun__ImageListRequest q = YUN__IMAGE_LIST_REQUEST__INIT;
    bool full = false, limited = false;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":l", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_NAME:
            q.name = optarg;
            break;
        case OPT_STATUS:
            q.status = optarg;
            break;
        case OPT_VISIBILITY:
            q.visibility = optarg;
            break;
        case OPT_OWNER:
            q.owner = optarg;
            break;
        case OPT_DISK_FORMAT:
            q.disk_format = optarg;
            break;
        case OPT_TAG:
            q.tag = optarg;
            break;
        case OPT_SORT: {
            char *colon = strchr(optarg, ':');
            if (colon) {
                *colon = '\0';
                if (strcmp(colon + 1, "asc") != 0 && strcmp(colon + 1, "desc") != 0)
                    return cli_usage_error("invalid sort direction '%s': use asc or desc",
                                           colon + 1);
                q.sort_dir = colon + 1;
            }
            if (!*optarg)
                return cli_usage_error("--sort needs a key: name, created_at, updated_at, "
                                       "size or status");
            q.sort_key = optarg;
            break;
        }
        case OPT_LIMIT:
            if ((r = parse_u32_option(cmd, "--limit", optarg, &q.limit)))
                return r;
            if (q.limit == 0)
                return cli_usage_error("--limit must be at least 1");
            limited = true;
            break;
        case OPT_MARKER:
            q.marker = optarg;
            break;
        case 'l':
        case OPT_LONG:
            full = true;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage_error("'%s' takes no arguments, only options", cmd);
    /* Scripts get every field; people get the columns that fit a screen. */
    full = full || cli->out.format != CLI_FORMAT_TABLE;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    /* Without --limit, follow the pages to the end. */
    _cleanup_free_ char *marker = NULL;
    for (unsigned pages = 0;; pages++) {
        ProtobufCMessage *m = NULL;
        r = cli_call(cli, YUN__OP__OP_IMAGE_LIST, &q.base, &yun__image_list_reply__descriptor,
                     &m);
        if (r)
            return r;
        Yun__ImageListReply *y = (Yun__ImageListReply *)m;
        for (size_t i = 0; i < y->n_images; i++)
            image_row(t, y->images[i], full);
        bool more = !limited && *y->next_marker && y->n_images > 0 &&
                    strcmp(y->next_marker, q.marker) != 0;
        if (more) {
            free(marker);
            marker = strdup(y->next_marker);
            if (!marker)
                abort();
            q.marker = marker;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (!more)
            break;
        if (pages > 100000) {
            fprintf(stderr, "yun: the scheduler's image list does not end\n");
            return 1;
        }
    }
    return cli_print(cli, t);
}

static int
one_image_arg(const char *cmd, int argc, char **argv, const char **ret)
{
    if (argc != 2 || (argv[1][0] == '-' && argv[1][1]))
        return cli_usage_error("'%s' takes one image name or id", cmd);
    *ret = argv[1];
    return 0;
}

static int
image_show(struct cli *cli, int argc, char **argv)
{
    const char *image = NULL;
    int r = one_image_arg("image show", argc, argv, &image);
    if (r)
        return r;
    _cleanup_message_ Yun__ImageReply *y = NULL;
    if ((r = show_image(cli, image, &y)))
        return r;
    return print_image(cli, y->image);
}

/* ---- Download ---- */

static int
write_full(int fd, const uint8_t *data, size_t size, off_t offset, bool seekable)
{
    while (size > 0) {
        ssize_t n = seekable ? pwrite(fd, data, size, offset) : write(fd, data, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        data += n;
        size -= (size_t)n;
        offset += n;
    }
    return 0;
}

/* Feeds the first 'size' bytes of 'fd' to 'dg'. */
static int
hash_prefix(struct yun_digest *dg, int fd, uint64_t size)
{
    _cleanup_free_ uint8_t *buf = malloc(CHUNK_SIZE);
    if (!buf)
        abort();
    uint64_t off = 0;
    while (off < size) {
        size_t want = size - off < CHUNK_SIZE ? (size_t)(size - off) : CHUNK_SIZE;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ENODATA;
        int r = yun_digest_update(dg, buf, (size_t)n);
        if (r < 0)
            return r;
        off += (uint64_t)n;
    }
    return 0;
}

static int
image_download(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "image download";
    static const struct option opts[] = {
        { "file", required_argument, NULL, OPT_FILE },
        { "offset", required_argument, NULL, OPT_OFFSET },
        {},
    };
    const char *file = NULL;
    uint64_t offset = 0;
    bool have_offset = false;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_FILE) {
            file = optarg;
        } else if (c == OPT_OFFSET) {
            if (yun_safe_atou64(optarg, &offset) < 0)
                return cli_usage_error("invalid --offset '%s': give a byte offset", optarg);
            have_offset = true;
        } else {
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one image name or id", cmd);
    if (!file && isatty(STDOUT_FILENO))
        return cli_usage_error("refusing to write image data to a terminal: use --file FILE "
                               "or redirect standard output");

    _cleanup_message_ Yun__ImageReply *shown = NULL;
    if ((r = show_image(cli, argv[optind], &shown)))
        return r;
    const Yun__ImageRecord *im = shown->image;
    uint64_t size = im->size;

    /* Byte k of the image goes to byte k of FILE, so a partial file resumes
     * where it stops; standard output gets the bytes from the offset on. */
    _cleanup_close_ int ffd = -EBADF;
    int fd = STDOUT_FILENO;
    bool seekable = false, verify = false;
    uint64_t start = offset, existing = 0;
    bool created = false;
    if (file) {
        created = access(file, F_OK) < 0 && errno == ENOENT;
        ffd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (ffd < 0) {
            fprintf(stderr, "yun: cannot open '%s': %s\n", file, strerror(errno));
            return 1;
        }
        struct stat st;
        if (fstat(ffd, &st) < 0) {
            fprintf(stderr, "yun: cannot stat '%s': %s\n", file, strerror(errno));
            return 1;
        }
        fd = ffd;
        seekable = S_ISREG(st.st_mode);
        existing = seekable ? (uint64_t)st.st_size : 0;
        if (!have_offset)
            /* Resume a shorter file; start over when it cannot be a prefix. */
            start = existing <= size ? existing : 0;
        verify = seekable ? start <= existing : start == 0;
    } else {
        verify = start == 0;
    }
    /* The chunk being hashed, kept until its hash is done: declared
     * before the digest, so that on an early return the digest (which
     * waits for its helper) goes first. */
    _cleanup_message_ ProtobufCMessage *hashing = NULL;
    /* sha512 runs on the digest's helper thread, one chunk behind, while
     * this thread takes and writes the next one: hashing alone is about
     * as slow as the rest of a download. */
    _cleanup_(yun_digest_freep) struct yun_digest *dg = NULL;
    if (yun_digest_new(YUN_DIGEST_SHA512, &dg) < 0)
        abort();
    if (verify && start > 0 && (r = hash_prefix(dg, fd, start)) < 0) {
        fprintf(stderr, "yun: cannot read '%s': %s\n", file, strerror(-r));
        return 1;
    }

    struct progress prog;
    progress_init(&prog, "download", size, start);
    _cleanup_free_ char *expected = strdup(im->os_hash_value);
    if (!expected)
        abort();
    /* DOWNLOAD_DEPTH chunks in flight, each on a REQ socket of its own,
     * taken back in offset order: chunk k rides slot k % depth. At least
     * one request, even for an empty image or a complete file: the
     * scheduler says whether the image can be downloaded at all. */
    const char *token = NULL;
    if ((r = cli_auth_prepare(cli, YUN__OP__OP_IMAGE_DOWNLOAD, &token)))
        return r;
    _cleanup_(yun_rpc_window_freep) struct yun_rpc_window *win = NULL;
    r = yun_rpc_window_new(cli->bus, DOWNLOAD_DEPTH, cli->timeout_ms, &win);
    if (r < 0) {
        fprintf(stderr, "yun: cannot connect to the scheduler: %s\n", yun_strerror(r));
        return 1;
    }
    uint32_t chunk = CHUNK_SIZE; /* lowered to the scheduler's limit if below */
    uint64_t off = start, next = start;
    unsigned head = 0, inflight = 0;
    bool eof = false;
    while (!eof) {
        while (inflight < DOWNLOAD_DEPTH && (next < size || next == start)) {
            Yun__ImageDownloadRequest q = YUN__IMAGE_DOWNLOAD_REQUEST__INIT;
            q.image = im->id;
            q.offset = next;
            q.length = chunk;
            r = yun_rpc_window_send(win, (head + inflight) % DOWNLOAD_DEPTH, token,
                                    token ? strlen(token) : 0, YUN__OP__OP_IMAGE_DOWNLOAD,
                                    &q.base);
            if (r < 0)
                break;
            inflight++;
            next += chunk;
        }
        _cleanup_message_ ProtobufCMessage *m = NULL;
        _cleanup_free_ char *msg = NULL;
        if (r >= 0)
            r = yun_rpc_window_recv(win, head, &yun__image_download_reply__descriptor, &m,
                                    &msg);
        if (r < 0) {
            progress_abort(&prog);
            fprintf(stderr, "yun: %s (%s)\n", msg ? msg : yun_strerror(r), yun_errname(r));
            /* Leave no empty file behind a download that never started. */
            if (created && off == start)
                (void)unlink(file);
            return 1;
        }
        head = (head + 1) % DOWNLOAD_DEPTH;
        inflight--;
        Yun__ImageDownloadReply *y = (Yun__ImageDownloadReply *)m;
        if (y->offset != off || (y->data.len == 0 && !y->eof) ||
            off + y->data.len > y->size) {
            progress_abort(&prog);
            fprintf(stderr, "yun: the scheduler sent %zu bytes at offset %llu of image '%s' "
                            "(%llu bytes) when asked for offset %llu\n",
                    y->data.len, (unsigned long long)y->offset, im->id,
                    (unsigned long long)y->size, (unsigned long long)off);
            return 1;
        }
        if (*y->os_hash_value && strcmp(y->os_hash_value, expected) != 0) {
            free(expected);
            expected = strdup(y->os_hash_value);
            if (!expected)
                abort();
        }
        size = y->size;
        r = write_full(fd, y->data.data, y->data.len, (off_t)off, seekable);
        if (r < 0) {
            progress_abort(&prog);
            fprintf(stderr, "yun: cannot write %s: %s\n", file ? file : "standard output",
                    strerror(-r));
            return 1;
        }
        if (verify) {
            r = yun_digest_update_wait(dg);
            if (hashing)
                protobuf_c_message_free_unpacked(TAKE_PTR(hashing), NULL);
            if (r >= 0)
                r = yun_digest_update_start(dg, y->data.data, y->data.len);
            if (r < 0) {
                progress_abort(&prog);
                fprintf(stderr, "yun: cannot hash the download: %s\n", yun_strerror(r));
                return 1;
            }
            hashing = TAKE_PTR(m);
        }
        off += y->data.len;
        eof = y->eof || off >= size;
        prog.total = size;
        progress_update(&prog, off, eof);
        if (!eof && y->data.len < chunk) {
            /* The scheduler's chunk limit is below ours: the requests in
             * flight ask for the wrong offsets. Take their replies, drop
             * them, and go on from here with its size. */
            chunk = (uint32_t)y->data.len;
            for (; inflight > 0; inflight--, head = (head + 1) % DOWNLOAD_DEPTH) {
                ProtobufCMessage *drop = NULL;
                if (yun_rpc_window_recv(win, head, &yun__image_download_reply__descriptor,
                                        &drop, NULL) == 0)
                    protobuf_c_message_free_unpacked(drop, NULL);
            }
            next = off;
        }
    }
    if (seekable && ftruncate(fd, (off_t)off) < 0) {
        fprintf(stderr, "yun: cannot truncate '%s': %s\n", file, strerror(errno));
        return 1;
    }
    if (ffd >= 0 && close(TAKE_FD(ffd)) < 0) {
        fprintf(stderr, "yun: cannot write '%s': %s\n", file, strerror(errno));
        return 1;
    }
    if (!verify) {
        if (file && seekable)
            fprintf(stderr, "yun: note: bytes %llu to %llu of '%s' were not downloaded, so the "
                            "file was not checked against the image's sha512\n",
                    (unsigned long long)existing, (unsigned long long)start, file);
        return 0;
    }
    if (!*expected) {
        fprintf(stderr, "yun: image '%s' has no sha512: the download was not verified\n",
                im->id);
        return 1;
    }
    struct yun_digest_result res;
    r = yun_digest_update_wait(dg);
    if (r >= 0)
        r = yun_digest_final(dg, &res);
    if (r < 0) {
        fprintf(stderr, "yun: cannot hash the download: %s\n", yun_strerror(r));
        return 1;
    }
    const char *hex = res.sha512;
    if (strcasecmp(hex, expected) != 0) {
        fprintf(stderr, "yun: the sha512 of the downloaded %s does not match image '%s' "
                        "(got %.16s..., expected %.16s...): %s\n",
                file ? "file" : "data", im->id, hex, expected,
                file ? "delete the file and download again" : "do not use the data");
        return 1;
    }
    return 0;
}

/* ---- Set, delete, deactivate, reactivate ---- */

static int
image_set(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "image set";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "property", required_argument, NULL, OPT_PROPERTY },
        { "unset-property", required_argument, NULL, OPT_UNSET_PROPERTY },
        { "tag", required_argument, NULL, OPT_TAG },
        { "remove-tag", required_argument, NULL, OPT_REMOVE_TAG },
        VISIBILITY_OPTIONS,
        { "min-disk", required_argument, NULL, OPT_MIN_DISK },
        { "min-ram", required_argument, NULL, OPT_MIN_RAM },
        { "protected", no_argument, NULL, OPT_PROTECTED },
        { "unprotected", no_argument, NULL, OPT_UNPROTECTED },
        {},
    };
    Yun__ImageUpdateRequest q = YUN__IMAGE_UPDATE_REQUEST__INIT;
    _cleanup_(strv_done) struct strv add_tags;
    _cleanup_(strv_done) struct strv remove_tags;
    _cleanup_(strv_done) struct strv unset;
    _cleanup_(props_done) struct props props;
    strv_init(&add_tags, argc);
    strv_init(&remove_tags, argc);
    strv_init(&unset, argc);
    props_init(&props, argc);
    const char *vis = NULL;
    bool changes = false;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        changes = true;
        switch (c) {
        case OPT_NAME:
            if (!*optarg)
                return cli_usage_error("--name cannot be empty");
            q.name = optarg;
            break;
        case OPT_PROPERTY:
            if ((r = props_add(&props, cmd, optarg)))
                return r;
            break;
        case OPT_UNSET_PROPERTY:
            unset.v[unset.n++] = optarg;
            break;
        case OPT_TAG:
            add_tags.v[add_tags.n++] = optarg;
            break;
        case OPT_REMOVE_TAG:
            remove_tags.v[remove_tags.n++] = optarg;
            break;
        case OPT_PUBLIC:
        case OPT_PRIVATE:
        case OPT_COMMUNITY:
        case OPT_SHARED:
            if ((r = set_visibility(cmd, &vis, visibility_of(c))))
                return r;
            break;
        case OPT_MIN_DISK:
            if ((r = parse_u32_option(cmd, "--min-disk", optarg, &q.min_disk)))
                return r;
            q.set_min_disk = true;
            break;
        case OPT_MIN_RAM:
            if ((r = parse_u32_option(cmd, "--min-ram", optarg, &q.min_ram)))
                return r;
            q.set_min_ram = true;
            break;
        case OPT_PROTECTED:
        case OPT_UNPROTECTED:
            if (q.set_protected && q.protected_ != (c == OPT_PROTECTED))
                return cli_usage_error("'%s' takes --protected or --unprotected, not both",
                                       cmd);
            q.set_protected = true;
            q.protected_ = c == OPT_PROTECTED;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one image name or id", cmd);
    if (!changes)
        return cli_usage_error("'%s' needs something to change (see 'yun %s --help')", cmd,
                               cmd);
    q.image = argv[optind];
    q.visibility = (char *)(vis ? vis : "");
    q.add_tags = add_tags.v;
    q.n_add_tags = add_tags.n;
    q.remove_tags = remove_tags.v;
    q.n_remove_tags = remove_tags.n;
    q.set_properties = props.ptrs;
    q.n_set_properties = props.n;
    q.unset_properties = unset.v;
    q.n_unset_properties = unset.n;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_IMAGE_UPDATE, &q.base, &yun__image_reply__descriptor, &m);
    if (r)
        return r;
    return print_image(cli, ((Yun__ImageReply *)m)->image);
}

static int
image_delete(struct cli *cli, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("'image delete' takes one or more image names or ids");
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error("unknown option '%s' for 'image delete'", argv[i]);
    /* Deletes what it can and fails if any failed. */
    int ret = 0;
    for (int i = 1; i < argc; i++) {
        Yun__ImageRef q = YUN__IMAGE_REF__INIT;
        q.image = argv[i];
        if (cli_call(cli, YUN__OP__OP_IMAGE_DELETE, &q.base, NULL, NULL))
            ret = 1;
    }
    return ret;
}

static int
image_change_status(struct cli *cli, int argc, char **argv, Yun__Op op, const char *cmd)
{
    const char *image = NULL;
    int r = one_image_arg(cmd, argc, argv, &image);
    if (r)
        return r;
    Yun__ImageRef q = YUN__IMAGE_REF__INIT;
    q.image = (char *)image;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    if ((r = cli_call(cli, op, &q.base, &yun__image_reply__descriptor, &m)))
        return r;
    const Yun__ImageRecord *im = ((Yun__ImageReply *)m)->image;
    return im ? print_image(cli, im) : 0;
}

static int
image_deactivate(struct cli *cli, int argc, char **argv)
{
    return image_change_status(cli, argc, argv, YUN__OP__OP_IMAGE_DEACTIVATE,
                               "image deactivate");
}

static int
image_reactivate(struct cli *cli, int argc, char **argv)
{
    return image_change_status(cli, argc, argv, YUN__OP__OP_IMAGE_REACTIVATE,
                               "image reactivate");
}

/* ---- Members ---- */

static int
print_members(struct cli *cli, Yun__ImageMember **members, size_t n, const char *only)
{
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(only != NULL);
    for (size_t i = 0; i < n; i++) {
        const Yun__ImageMember *mb = members[i];
        if (only && strcmp(mb->project, only) != 0)
            continue;
        cli_table_row(t);
        cli_table_str(t, "project", mb->project);
        cli_table_str(t, "status", mb->status);
        cli_table_time(t, "created_at", mb->created_us);
        cli_table_time(t, "updated_at", mb->updated_us);
    }
    return cli_print(cli, t);
}

static int
member_call(struct cli *cli, int argc, char **argv, Yun__Op op, const char *cmd,
            const char *status)
{
    static const struct option opts[] = { { "project", required_argument, NULL, OPT_PROJECT },
                                          {} };
    Yun__ImageMemberRequest q = YUN__IMAGE_MEMBER_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_PROJECT)
            return cli_option_error(cmd, c, argv);
        if (!status)
            return cli_usage_error("'%s' takes the project as an argument, not --project",
                                   cmd);
        q.project = optarg;
    }
    int want = status ? 1 : 2;
    if (argc - optind != want)
        return cli_usage_error("'%s' takes %s", cmd,
                               status ? "one image name or id [--project PROJECT]"
                                      : "an image name or id and a project");
    q.image = argv[optind];
    if (!status)
        q.project = argv[optind + 1];
    q.status = (char *)(status ? status : "");
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, op, &q.base, &yun__image_member_list_reply__descriptor, &m);
    if (r)
        return r;
    Yun__ImageMemberListReply *y = (Yun__ImageMemberListReply *)m;
    if (op == YUN__OP__OP_IMAGE_MEMBER_REMOVE)
        return 0;
    /* The member this call made or changed; the caller's when not named. */
    const char *who = *q.project ? q.project : y->n_members == 1 ? y->members[0]->project : NULL;
    if (!who)
        return 0;
    return print_members(cli, y->members, y->n_members, who);
}

static int
member_add(struct cli *cli, int argc, char **argv)
{
    return member_call(cli, argc, argv, YUN__OP__OP_IMAGE_MEMBER_ADD, "image member add", NULL);
}

static int
member_remove(struct cli *cli, int argc, char **argv)
{
    return member_call(cli, argc, argv, YUN__OP__OP_IMAGE_MEMBER_REMOVE, "image member remove",
                       NULL);
}

static int
member_accept(struct cli *cli, int argc, char **argv)
{
    return member_call(cli, argc, argv, YUN__OP__OP_IMAGE_MEMBER_SET_STATUS,
                       "image member accept", "accepted");
}

static int
member_reject(struct cli *cli, int argc, char **argv)
{
    return member_call(cli, argc, argv, YUN__OP__OP_IMAGE_MEMBER_SET_STATUS,
                       "image member reject", "rejected");
}

static int
member_list(struct cli *cli, int argc, char **argv)
{
    const char *image = NULL;
    int r = one_image_arg("image member list", argc, argv, &image);
    if (r)
        return r;
    Yun__ImageRef q = YUN__IMAGE_REF__INIT;
    q.image = (char *)image;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_IMAGE_MEMBER_LIST, &q.base,
                 &yun__image_member_list_reply__descriptor, &m);
    if (r)
        return r;
    Yun__ImageMemberListReply *y = (Yun__ImageMemberListReply *)m;
    return print_members(cli, y->members, y->n_members, NULL);
}

static const struct cli_verb member_verbs[] = {
    { "add", member_add, "IMAGE PROJECT", "Share an image with a project (it stays pending "
                                          "until the project accepts)" },
    { "remove", member_remove, "IMAGE PROJECT", "Stop sharing an image with a project" },
    { "list", member_list, "IMAGE", "List the projects an image is shared with" },
    { "accept", member_accept, "IMAGE [--project PROJECT]",
      "Accept an image shared with your project" },
    { "reject", member_reject, "IMAGE [--project PROJECT]",
      "Reject an image shared with your project" },
    {},
};

/* ---- The verb table ---- */

#define VISIBILITY_HELP                                                                    \
    "  --public|--private|--community|--shared\n"                                          \
    "                         Who sees the image (default private)\n"

const struct cli_verb cli_image_verbs[] = {
    { "create", image_create,
      "NAME --disk-format FORMAT [--file FILE] [OPTIONS]",
      "Register an image and upload its bytes",
      "Creates the image record, then uploads FILE in 1 MiB chunks (a progress bar\n"
      "shows on a terminal) and prints the image. Without --file the image stays\n"
      "queued for 'yun image upload'.\n"
      "\n"
      "Options:\n"
      "  --file FILE            The image's bytes\n"
      "  --disk-format FORMAT   raw, qcow2, vmdk, vhd, vhdx, vdi, iso, aki or ari: checked\n"
      "                         against the content\n"
      "  --container-format F   bare (default), ovf, aki or ari\n"
      "  --property KEY=VALUE   A free-form property (repeatable)\n"
      "  --tag TAG              A tag (repeatable)\n" VISIBILITY_HELP
      "  --min-disk GB          Smallest root disk to boot it on\n"
      "  --min-ram MB           Least memory to boot it with\n"
      "  --protected            Refuse deletion until unprotected\n"
      "  --checksum MD5         Kill the image unless its bytes have this MD5\n"
      "  --id UUID              Use this id instead of a new one\n" },
    { "upload", image_upload, "IMAGE --file FILE [--checksum MD5]",
      "Upload the bytes of a queued image" },
    { "list", image_list, "[FILTERS] [--sort KEY[:DIR]] [--limit N] [--marker ID] [--long]",
      "List the images you can see",
      "Filters (each: only images with this value):\n"
      "  --name N, --status S, --visibility V, --owner PROJECT, --disk-format F, --tag T\n"
      "\n"
      "Options:\n"
      "  --sort KEY[:DIR]       name, created_at, updated_at, size or status; asc or desc\n"
      "                         (default created_at:desc)\n"
      "  --limit N              One page of at most N images (default: every page)\n"
      "  --marker ID            Start after this image (the last of the previous page)\n"
      "  -l, --long             Every field (always with -f json|value|csv)\n" },
    { "show", image_show, "IMAGE", "Show every field of an image" },
    { "download", image_download, "IMAGE [--file FILE] [--offset N]",
      "Download an image's bytes, verified against its sha512",
      "Writes to standard output without --file (never to a terminal). With --file,\n"
      "a file shorter than the image is resumed from its size unless --offset is\n"
      "given. The sha512 of the whole image is checked at the end when the download\n"
      "covers it (from offset 0, or resumed over bytes already in FILE).\n"
      "\n"
      "Options:\n"
      "  --file FILE            Write here; byte N of the image goes to byte N of FILE\n"
      "  --offset N             Start at byte N\n" },
    { "set", image_set, "IMAGE [OPTIONS]",
      "Change an image's name, properties, tags, visibility or limits",
      "Options:\n"
      "  --name NAME            Rename\n"
      "  --property KEY=VALUE   Set a property (repeatable)\n"
      "  --unset-property KEY   Remove a property (repeatable)\n"
      "  --tag TAG              Add a tag (repeatable)\n"
      "  --remove-tag TAG       Remove a tag (repeatable)\n" VISIBILITY_HELP
      "  --min-disk GB          Smallest root disk to boot it on\n"
      "  --min-ram MB           Least memory to boot it with\n"
      "  --protected, --unprotected\n"
      "                         Refuse or allow deletion\n" },
    { "delete", image_delete, "IMAGE...", "Delete images (refused while protected)" },
    { "deactivate", image_deactivate, "IMAGE", "Make an active image unusable (admin)" },
    { "reactivate", image_reactivate, "IMAGE", "Make a deactivated image active again" },
    { "member", NULL, NULL, "Share images with other projects", NULL, member_verbs },
    {},
};
