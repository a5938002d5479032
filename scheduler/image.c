/* SPDX-License-Identifier: Apache-2.0
 * image.c: the image registry (Glance's role). Records (ImageRecord) live
 * in the "images" database keyed by id, with the index "image_names"
 * (key: name, NUL, id) for look-ups by name; bytes live behind
 * image-store.h. Deleted images stay as tombstones (status "deleted") so
 * that an id is not reused for other bytes, until the cron purges them
 * after [images] tombstone_retention_s.
 *
 * Life of an image: create -> queued; the first upload chunk -> saving;
 * the last chunk, when the digests, the expected size and checksums and
 * the format inspector (common/image-format.h) all agree -> active;
 * anything else -> killed with its bytes removed. deactivate/reactivate
 * toggle active <-> deactivated; delete -> deleted.
 *
 * Uploads: an in-memory session per image holds the partial object, the
 * md5+sha512 digest (common/digest.h) and the inspector, all fed chunk by
 * chunk from the request's own buffer. A session idle for longer than
 * [images] upload_idle_timeout_s is reaped by the cron. The record changes
 * only at the start and at the end of an upload, each time in one write
 * transaction with its audit record; at the end only after the bytes are
 * durable. Nothing survives a restart half done: sched_image_init kills
 * every image left in saving and removes bytes no record owns.
 *
 * Who sees what (Glance's rules): private images are the owner's; public
 * ones everyone's; community ones everyone may show and use, but lists
 * show them only to the owner or when asked for visibility=community;
 * shared ones are the owner's and their members' (listed for accepted
 * members, for others only when asked with member_status; downloaded by
 * accepted members). Admins see everything but tombstones. Agents show
 * active and deactivated images and download active ones: they fetch
 * images to boot instances. An image a caller cannot see is "not found",
 * never "forbidden".
 *
 * Neighbours: dispatch.c (the table rows and privileges), audit.c (every
 * change is audited), image-store.c (the file back-end). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "cleanup.h"
#include "compute.h"
#include "digest.h"
#include "err.h"
#include "image-format.h"
#include "image-store.h"
#include "log.h"
#include "pbwire.h"
#include "loop.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "image.pb-c.h"
#include "yun.pb-c.h"

YUN_LOG_MODULE("sched.image");

#define IMAGES_DB "images"
#define NAMES_DB "image_names"

#define IMAGE_NAME_MAX 255
#define IMAGE_TAGS_MAX 128
#define IMAGE_TAG_MAX 255
#define IMAGE_PROPS_MAX 128
#define IMAGE_PROP_KEY_MAX 255
#define IMAGE_PROP_VALUE_MAX 255
#define IMAGE_MEMBERS_MAX 128
#define PROJECT_MAX 64
#define IMAGE_REF_MAX 255
#define LIST_DEFAULT 25
#define LIST_MAX 1000
/* Room a data message needs beyond its data: the envelope's own overhead
 * is added by the bus on top of max_message_size. */
#define CHUNK_OVERHEAD 4096
/* Tombstones purged per write transaction, so that one cron step holds
 * the write lock and the loop only briefly; a full batch has the next
 * step run at the next cron tick. */
#define PURGE_BATCH 256
/* How often the cron looks for tombstones past the retention (more often
 * when the retention itself is shorter). */
#define PURGE_PERIOD_MS 60000

#define ST_QUEUED "queued"
#define ST_SAVING "saving"
#define ST_ACTIVE "active"
#define ST_KILLED "killed"
#define ST_DELETED "deleted"
#define ST_DEACTIVATED "deactivated"

static const char *const statuses[] = {
    ST_QUEUED, ST_SAVING, ST_ACTIVE, ST_KILLED, ST_DELETED, ST_DEACTIVATED, NULL,
};
static const char *const visibilities[] = { "public", "private", "shared", "community", NULL };
static const char *const disk_formats[] = {
    "raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "aki", "ari", NULL,
};
static const char *const container_formats[] = { "bare", "ovf", "aki", "ari", NULL };
static const char *const member_statuses[] = { "pending", "accepted", "rejected", NULL };
static const char *const sort_keys[] = {
    "name", "created_at", "updated_at", "size", "status", NULL,
};
/* Properties may not shadow the record's own fields. */
static const char *const reserved_keys[] = {
    "id", "name", "owner", "visibility", "status", "disk_format", "container_format", "size",
    "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "min_disk", "min_ram",
    "protected", "tags", "properties", "members", "created_at", "updated_at", "created_us",
    "updated_us", "detected_format", "location", "locations", "direct_url", "file", "self",
    "schema", NULL,
};

struct image_session {
    struct image_session *next;
    char id[YUN_UUID_STR_SIZE];
    char disk_format[8];
    struct sched_image_writer *writer;  /* NULL once committed or aborted */
    struct yun_digest *digest;
    /* The chunk the digest's helpers are hashing, a copy of the request's
     * data: they hash it while the loop answers and takes the next chunk,
     * which waits for them before it is posted. Freed after the digest. */
    uint8_t *hash_buf;
    size_t hash_buf_size;
    struct yun_imgfmt_inspector *insp;
    uint64_t received;                  /* bytes accepted so far */
    char *owner;                        /* the image's project */
    uint64_t quota_left;                /* bytes the owner may still store: UINT64_MAX = no limit */
    int64_t last_ms;                    /* CLOCK_MONOTONIC of the last chunk */
    uint64_t expected_size;             /* 0 = not given */
    char expected_md5[YUN_MD5_HEX_SIZE];
    char expected_sha512[YUN_SHA512_HEX_SIZE];
    /* The upload failed but the record could not be marked killed yet:
     * the cron retries. Chunks are refused meanwhile. */
    bool dead;
    int dead_code;
    char *dead_reason;
};

struct sched_images {
    struct sched_image_store *store;
    struct image_session *sessions;
    size_t n_sessions;
    int64_t next_purge_ms;              /* CLOCK_MONOTONIC of the next tombstone purge */
};

static void
image_free(Yun__ImageRecord *img)
{
    yun__image_record__free_unpacked(img, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__ImageRecord *, image_free)

static bool
in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

static uint64_t
max_image_bytes(const struct sched *s)
{
    return (uint64_t)s->cfg.image_max_virtual_size_gb << 30;
}

/* --- validation ----------------------------------------------------------- */

static bool
prop_key_is_valid(const char *k)
{
    size_t len = strlen(k);
    if (len == 0 || len > IMAGE_PROP_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == ':' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

static int
check_formats(struct sched_call *call, const char *disk, const char *container)
{
    if (!in_list(disk, disk_formats))
        return sched_call_error(call, YUN_E_INVALID,
                                "Disk format '%.32s' is not one of raw, qcow2, vmdk, vhd, vhdx, "
                                "vdi, iso, aki or ari.", disk);
    if (!in_list(container, container_formats))
        return sched_call_error(call, YUN_E_INVALID,
                                "Container format '%.32s' is not one of bare, ovf, aki or ari.",
                                container);
    /* Glance's rule: kernel and ramdisk images say so in both formats. */
    bool disk_ka = strcmp(disk, "aki") == 0 || strcmp(disk, "ari") == 0;
    bool cont_ka = strcmp(container, "aki") == 0 || strcmp(container, "ari") == 0;
    if ((disk_ka || cont_ka) && strcmp(disk, container) != 0)
        return sched_call_error(call, YUN_E_INVALID,
                                "Disk format '%s' does not go with container format '%s': aki "
                                "and ari images need the same disk and container format.",
                                disk, container);
    return 0;
}

static int
check_tag(struct sched_call *call, const char *tag)
{
    if (!yun_text_is_valid(tag, IMAGE_TAG_MAX))
        return sched_call_error(call, YUN_E_INVALID,
                                "Tag '%.64s' is not 1 to %d bytes of text without control "
                                "characters.", tag, IMAGE_TAG_MAX);
    return 0;
}

static int
check_property(struct sched_call *call, const char *key, const char *value)
{
    if (!prop_key_is_valid(key))
        return sched_call_error(call, YUN_E_INVALID,
                                "Property key '%.64s' is not 1 to %d characters of "
                                "[A-Za-z0-9_:.-].", key, IMAGE_PROP_KEY_MAX);
    if (in_list(key, reserved_keys))
        return sched_call_error(call, YUN_E_INVALID,
                                "Property key '%s' is reserved for the image's own field.", key);
    if (strlen(value) > IMAGE_PROP_VALUE_MAX || (*value && !yun_text_is_valid(value, SIZE_MAX)))
        return sched_call_error(call, YUN_E_INVALID,
                                "The value of property '%s' is not at most %d bytes of text "
                                "without control characters.", key, IMAGE_PROP_VALUE_MAX);
    if ((strcmp(key, "kernel_id") == 0 || strcmp(key, "ramdisk_id") == 0) &&
        !yun_uuid_is_valid(value))
        return sched_call_error(call, YUN_E_INVALID,
                                "Property '%s' must be an image id, not '%.64s'.", key, value);
    return 0;
}

/* --- records and the name index ------------------------------------------ */

static int
load_image(struct yun_txn *txn, const char *id, Yun__ImageRecord **ret)
{
    ProtobufCMessage *m = NULL;
    int r = yun_txn_get_msg(txn, IMAGES_DB, id, &yun__image_record__descriptor, &m);
    if (r < 0)
        return r;
    *ret = (Yun__ImageRecord *)m;
    return 0;
}

static int
put_image(struct yun_txn *txn, const Yun__ImageRecord *img)
{
    return yun_txn_put_msg(txn, IMAGES_DB, img->id, &img->base);
}

static size_t
name_key(const char *name, const char *id, char *key, size_t size)
{
    int n = snprintf(key, size, "%s%c%s", name, '\0', id);
    return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

static int
name_index_add(struct yun_txn *txn, const char *name, const char *id)
{
    char key[IMAGE_NAME_MAX + YUN_UUID_STR_SIZE + 1];
    size_t n = name_key(name, id, key, sizeof key);
    return n ? yun_txn_put(txn, NAMES_DB, key, n, NULL, 0) : -EINVAL;
}

static int
name_index_del(struct yun_txn *txn, const char *name, const char *id)
{
    char key[IMAGE_NAME_MAX + YUN_UUID_STR_SIZE + 1];
    size_t n = name_key(name, id, key, sizeof key);
    int r = n ? yun_txn_del(txn, NAMES_DB, key, n) : -EINVAL;
    return r == -ENOENT ? 0 : r;
}

/* --- who may do what ------------------------------------------------------ */

static const char *
caller_project(const struct sched_call *call)
{
    return call->project ? call->project : "";
}

static bool
is_agent(const struct sched_call *call)
{
    return call->peer_kind == YUN__PEER_RECORD__KIND__KIND_AGENT;
}

static bool
is_owner(const struct sched_call *call, const Yun__ImageRecord *img)
{
    return *caller_project(call) && strcmp(img->owner, caller_project(call)) == 0;
}

static Yun__ImageMember *
find_member(const Yun__ImageRecord *img, const char *project)
{
    if (!*project)
        return NULL;
    for (size_t i = 0; i < img->n_members; i++)
        if (strcmp(img->members[i]->project, project) == 0)
            return img->members[i];
    return NULL;
}

static bool
can_see(const struct sched_call *call, const Yun__ImageRecord *img)
{
    if (strcmp(img->status, ST_DELETED) == 0)
        return false;
    if (call->is_admin || is_owner(call, img))
        return true;
    if (is_agent(call))
        return strcmp(img->status, ST_ACTIVE) == 0 || strcmp(img->status, ST_DEACTIVATED) == 0;
    if (strcmp(img->visibility, "public") == 0 || strcmp(img->visibility, "community") == 0)
        return true;
    return strcmp(img->visibility, "shared") == 0 && find_member(img, caller_project(call));
}

static bool
can_modify(const struct sched_call *call, const Yun__ImageRecord *img)
{
    return call->is_admin || is_owner(call, img);
}

static int
error_not_found(struct sched_call *call, const char *ref)
{
    return sched_call_error(call, YUN_E_NOIMAGE, "Image '%.255s' not found.", ref);
}

static int
error_not_owner(struct sched_call *call, const Yun__ImageRecord *img, const char *what)
{
    return sched_call_error(call, YUN_E_DENIED, "Project '%s' may not %s image '%s'.",
                            caller_project(call), what, img->id);
}

struct name_scan {
    const struct sched_call *call;
    struct yun_txn *txn;
    const char *name;
    size_t name_size;
    Yun__ImageRecord *found;
    size_t matches;
};

static int
scan_name(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct name_scan *ns = data;
    const char *k = key;
    /* Keys of one name ("name", NUL, id) sort together, right after the
     * start key "name": the first other key ends the scan. */
    if (key_size != ns->name_size + YUN_UUID_STR_SIZE ||
        memcmp(k, ns->name, ns->name_size) != 0 || k[ns->name_size] != '\0')
        return 1;
    char id[YUN_UUID_STR_SIZE];
    memcpy(id, k + ns->name_size + 1, YUN_UUID_STR_SIZE - 1);
    id[YUN_UUID_STR_SIZE - 1] = '\0';
    Yun__ImageRecord *img = NULL;
    int r = load_image(ns->txn, id, &img);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (!can_see(ns->call, img)) {
        image_free(img);
        return 0;
    }
    ns->matches++;
    if (ns->found)
        image_free(ns->found);
    ns->found = img;
    return 0;
}

/* Finds the image 'ref' (an id, or a name matching exactly one image the
 * caller can see) and stores it in '*ret'. On failure the call's error is
 * set: YUN_E_NOIMAGE, or YUN_E_CONFLICT for an ambiguous name. */
static int
image_lookup(struct sched_call *call, struct yun_txn *txn, const char *ref,
             Yun__ImageRecord **ret)
{
    if (!*ref || strlen(ref) > IMAGE_REF_MAX)
        return error_not_found(call, ref);
    if (yun_uuid_is_valid(ref)) {
        Yun__ImageRecord *img = NULL;
        int r = load_image(txn, ref, &img);
        if (r < 0 && r != -ENOENT)
            return r;
        if (r >= 0) {
            if (can_see(call, img)) {
                *ret = img;
                return 0;
            }
            image_free(img);
            return error_not_found(call, ref);
        }
        /* No image has this id; a name may look like one. */
    }

    struct name_scan ns = {
        .call = call, .txn = txn, .name = ref, .name_size = strlen(ref),
    };
    int r = yun_txn_iterate(txn, NAMES_DB, ref, ns.name_size, scan_name, &ns);
    if (r < 0) {
        image_free(ns.found);
        return r;
    }
    if (ns.matches == 0)
        return error_not_found(call, ref);
    if (ns.matches > 1) {
        image_free(ns.found);
        return sched_call_error(call, YUN_E_CONFLICT,
                                "%zu images are named '%s'; give the id of the one you mean.",
                                ns.matches, ref);
    }
    *ret = ns.found;
    return 0;
}

/* For compute (compute.h): an image the caller may boot. A shared image
 * of another project needs the caller's acceptance, as a download does. */
int
sched_image_find_bootable(struct sched_call *call, struct yun_txn *txn, const char *ref,
                          Yun__ImageRecord **ret)
{
    Yun__ImageRecord *img = NULL;
    int r = image_lookup(call, txn, ref, &img);
    if (r < 0)
        return r;
    if (!call->is_admin && !is_owner(call, img) && !is_agent(call) &&
        strcmp(img->visibility, "shared") == 0) {
        const Yun__ImageMember *m = find_member(img, caller_project(call));
        if (!m || strcmp(m->status, "accepted") != 0) {
            r = sched_call_error(call, YUN_E_DENIED,
                                 "Project '%s' has not accepted image '%s'; accept it before "
                                 "using it.", caller_project(call), img->id);
            image_free(img);
            return r;
        }
    }
    *ret = img;
    return 0;
}

/* --- replies ---------------------------------------------------------------- */

/* A record as 'call' may read it: only the owner and admins see the whole
 * member list; a member sees its own entry. Fills the shallow copy
 * 'view', which borrows from 'img' and from 'own'. */
static void
image_view(const struct sched_call *call, const Yun__ImageRecord *img, Yun__ImageRecord *view,
           Yun__ImageMember **own)
{
    *view = *img;
    if (call->is_admin || is_owner(call, img))
        return;
    *own = find_member(img, caller_project(call));
    view->members = own;
    view->n_members = *own ? 1 : 0;
}

static int
reply_image(struct sched_call *call, const Yun__ImageRecord *img)
{
    Yun__ImageRecord view;
    Yun__ImageMember *own = NULL;
    image_view(call, img, &view, &own);
    Yun__ImageReply y = YUN__IMAGE_REPLY__INIT;
    y.image = &view;
    return sched_call_reply(call, &y.base);
}

/* Audits a mutating call that did not audit itself: failures (whose
 * transaction was aborted), or a success path that wrote no record. */
static int
audit_end(struct sched_call *call, const char *operation, const char *target, int r)
{
    if (!call->audited) {
        int code = call->error ? call->error : r < 0 ? r : 0;
        const char *detail = call->error_message ? call->error_message
                                                 : code < 0 ? yun_strerror(code) : NULL;
        sched_audit(call, operation, target, code, detail);
    }
    call->audited = true;
    return r;
}

/* Commits 'txn' after adding the success record of 'operation' on
 * 'target'; marks the call audited when both landed. */
static int
commit_audited(struct sched_call *call, struct yun_txn **txn, const char *operation,
               const char *target, const char *detail)
{
    int r = sched_audit_txn(*txn, call, operation, target, 0, detail);
    if (r < 0)
        return r;
    r = yun_txn_commit(TAKE_PTR(*txn));
    if (r < 0)
        return r;
    call->audited = true;
    return 0;
}

/* --- create ------------------------------------------------------------------ */

/* What one project owns: its image records (tombstones aside) and the
 * bytes of its active and deactivated images, except image 'except'. */
struct owner_usage {
    const char *owner;
    const char *except;                 /* "" or the image being uploaded */
    size_t n;
    uint64_t bytes;
};

static int
scan_owned(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct owner_usage *u = data;
    Yun__ImageRecord *img = yun__image_record__unpack(NULL, val_size, val);
    if (!img)
        return -EBADMSG;
    if (strcmp(img->owner, u->owner) == 0 && strcmp(img->status, ST_DELETED) != 0) {
        u->n++;
        if (strcmp(img->id, u->except) != 0 &&
            (strcmp(img->status, ST_ACTIVE) == 0 || strcmp(img->status, ST_DEACTIVATED) == 0))
            u->bytes += img->size;
    }
    image_free(img);
    return 0;
}

/* Checks 'tags' and drops repeats into 'out' (borrowed pointers). */
static int
collect_tags(struct sched_call *call, char **tags, size_t n, char **out, size_t *ret_n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int r = check_tag(call, tags[i]);
        if (r < 0)
            return r;
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = strcmp(out[j], tags[i]) == 0;
        if (!dup)
            out[k++] = tags[i];
    }
    *ret_n = k;
    return 0;
}

static int
image_create(struct sched_call *call, const Yun__ImageCreateRequest *q)
{
    struct sched *s = call->s;
    if (!yun_text_is_valid(q->name, IMAGE_NAME_MAX))
        return sched_call_error(call, YUN_E_INVALID,
                                "Image name '%.64s' is not 1 to %d bytes of text without "
                                "control characters.", q->name, IMAGE_NAME_MAX);
    const char *container = *q->container_format ? q->container_format : "bare";
    int r = check_formats(call, q->disk_format, container);
    if (r < 0)
        return r;
    const char *visibility = *q->visibility ? q->visibility : "private";
    if (!in_list(visibility, visibilities))
        return sched_call_error(call, YUN_E_INVALID,
                                "Visibility '%.32s' is not one of public, private, shared or "
                                "community.", visibility);
    if (strcmp(visibility, "public") == 0 && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED, "Only admins may make an image public.");
    if (q->n_tags > IMAGE_TAGS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "An image has at most %d tags.",
                                IMAGE_TAGS_MAX);
    if (q->n_properties > IMAGE_PROPS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "An image has at most %d properties.",
                                IMAGE_PROPS_MAX);
    for (size_t i = 0; i < q->n_properties; i++) {
        r = check_property(call, q->properties[i]->key, q->properties[i]->value);
        if (r < 0)
            return r;
        for (size_t j = 0; j < i; j++)
            if (strcmp(q->properties[j]->key, q->properties[i]->key) == 0)
                return sched_call_error(call, YUN_E_INVALID,
                                        "Property '%s' is given twice.", q->properties[i]->key);
    }
    const char *owner = caller_project(call);
    if (*q->owner && strcmp(q->owner, owner) != 0) {
        if (!call->is_admin)
            return sched_call_error(call, YUN_E_DENIED,
                                    "Only admins may create an image for another project.");
        owner = q->owner;
    }
    if (!yun_name_is_valid(owner, PROJECT_MAX))
        return sched_call_error(call, YUN_E_INVALID, "Project '%.64s' is not a valid owner.",
                                owner);
    if (q->min_disk > INT32_MAX || q->min_ram > INT32_MAX)
        return sched_call_error(call, YUN_E_INVALID, "min_disk and min_ram are at most %d.",
                                INT32_MAX);

    char id[YUN_UUID_STR_SIZE];
    if (*q->id) {
        if (!yun_uuid_is_valid(q->id))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Image id '%.64s' is not a lowercase UUID.", q->id);
        snprintf(id, sizeof id, "%s", q->id);
    } else {
        r = yun_uuid_new(id);
        if (r < 0)
            return r;
    }

    char *tags[IMAGE_TAGS_MAX];
    size_t n_tags = 0;
    r = collect_tags(call, q->tags, q->n_tags, tags, &n_tags);
    if (r < 0)
        return r;

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    r = yun_txn_get(txn, IMAGES_DB, id, strlen(id), NULL, NULL);
    if (r >= 0)
        return sched_call_error(call, YUN_E_CONFLICT, "Image id '%s' is already taken.", id);
    if (r != -ENOENT)
        return r;
    struct owner_usage count = { .owner = owner, .except = "" };
    r = yun_txn_iterate(txn, IMAGES_DB, NULL, 0, scan_owned, &count);
    if (r < 0)
        return r;
    if (count.n >= s->cfg.image_max_per_project)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Project '%s' already owns %zu images, the most allowed.",
                                owner, count.n);

    uint64_t now = yun_wall_us();
    Yun__ImageRecord img = YUN__IMAGE_RECORD__INIT;
    img.id = id;
    img.name = q->name;
    img.owner = (char *)owner;
    img.visibility = (char *)visibility;
    img.status = (char *)ST_QUEUED;
    img.disk_format = q->disk_format;
    img.container_format = (char *)container;
    img.min_disk = q->min_disk;
    img.min_ram = q->min_ram;
    img.protected_ = q->protected_;
    img.tags = tags;
    img.n_tags = n_tags;
    img.properties = q->properties;
    img.n_properties = q->n_properties;
    img.created_us = now;
    img.updated_us = now;

    r = put_image(txn, &img);
    if (r >= 0)
        r = name_index_add(txn, img.name, id);
    if (r >= 0)
        r = commit_audited(call, &txn, "image.create", id, NULL);
    if (r < 0)
        return r;
    log_req(YUN_LOG_NOTICE, call->req, 0,
            "image created image=%s name=\"%s\" owner=%s disk_format=%s visibility=%s", id,
            img.name, owner, img.disk_format, visibility);
    return reply_image(call, &img);
}

/* OP_IMAGE_CREATE: a queued image owned by the caller's project (admins may
 * name another owner). Replies ImageReply; audited as image.create. */
int
sched_image_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageCreateRequest *q = (const Yun__ImageCreateRequest *)req;
    return audit_end(call, "image.create", q->name, image_create(call, q));
}

/* --- upload sessions ---------------------------------------------------------- */

static struct image_session *
session_find(struct sched_images *im, const char *id)
{
    for (struct image_session *se = im->sessions; se; se = se->next)
        if (strcmp(se->id, id) == 0)
            return se;
    return NULL;
}

static void
session_free(struct sched_images *im, struct image_session *se)
{
    for (struct image_session **p = &im->sessions; *p; p = &(*p)->next)
        if (*p == se) {
            *p = se->next;
            im->n_sessions--;
            break;
        }
    if (se->writer)
        se->writer->store->ops->abort(se->writer);
    yun_digest_free(se->digest); /* waits for a chunk still being hashed */
    free(se->hash_buf);
    yun_imgfmt_inspector_free(se->insp);
    free(se->dead_reason);
    free(se->owner);
    free(se);
}

/* Marks the session's image killed (with the audit record of 'call', or of
 * the scheduler when 'call' is NULL) in one write transaction, and frees
 * the session. When the store refuses, the session stays, dead, for the
 * cron to retry. */
static int
session_mark_killed(struct sched *s, struct image_session *se, struct sched_call *call)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_image(txn, se->id, &img);
    if (r >= 0 && strcmp(img->status, ST_SAVING) == 0) {
        Yun__ImageRecord view = *img;
        view.status = (char *)ST_KILLED;
        view.updated_us = yun_wall_us();
        r = put_image(txn, &view);
    }
    if (r >= 0)
        r = call ? sched_audit_txn(txn, call, "image.upload", se->id, se->dead_code,
                                   se->dead_reason)
                 : sched_audit_system(s, txn, "image.upload", se->id, se->dead_code,
                                      se->dead_reason);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r == -ENOENT)
        r = 0; /* the record is gone: nothing left to mark */
    if (r < 0) {
        log_err_errno(r, "cannot mark image killed, will retry image=%s", se->id);
        return r;
    }
    if (call)
        call->audited = true;
    log_req(YUN_LOG_NOTICE, call ? call->req : NULL, se->dead_code,
            "image killed image=%s received=%llu reason=\"%s\"", se->id,
            (unsigned long long)se->received, se->dead_reason ? se->dead_reason : "");
    session_free(s->images, se);
    return 0;
}

/* Fails the upload of 'se': its bytes go at once, its record becomes
 * killed. Sets the error of 'call' (may be NULL) to 'code' and the
 * message. Returns 'code'. */
static int __attribute__((format(printf, 5, 6)))
session_kill(struct sched *s, struct image_session *se, struct sched_call *call, int code,
             const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);

    if (se->writer) {
        se->writer->store->ops->abort(se->writer);
        se->writer = NULL;
    }
    se->dead = true;
    se->dead_code = code;
    free(se->dead_reason);
    se->dead_reason = msg;
    if (call)
        sched_call_error(call, code, "%s", msg ? msg : yun_strerror(code));
    (void)session_mark_killed(s, se, call);
    return code;
}

static int
reply_received(struct sched_call *call, uint64_t received, const Yun__ImageRecord *img)
{
    Yun__ImageUploadReply y = YUN__IMAGE_UPLOAD_REPLY__INIT;
    y.received = received;
    Yun__ImageRecord view;
    Yun__ImageMember *own = NULL;
    if (img) {
        image_view(call, img, &view, &own);
        y.image = &view;
    }
    return sched_call_reply(call, &y.base);
}

/* A chunk at the wrong offset: the error carries the offset to resume at. */
static int
error_offset(struct sched_call *call, const char *id, uint64_t offset, uint64_t received)
{
    int r = reply_received(call, received, NULL);
    if (r < 0)
        return r;
    call->reply_on_error = true;
    return sched_call_error(call, YUN_E_CONFLICT,
                            "The upload of image '%s' continues at offset %llu, not %llu.", id,
                            (unsigned long long)received, (unsigned long long)offset);
}

/* Checks that 'need' more bytes of image 'id' leave the image store with
 * at least [images] store_min_free_mb free. Returns 0, or -ENOSPC or the
 * store's error with a sentence naming the numbers in 'why'. */
static int
check_space(struct sched *s, const char *id, uint64_t need, char *why, size_t why_size)
{
    struct sched_image_store *st = s->images->store;
    uint64_t reserve = (uint64_t)s->cfg.image_store_min_free_mb << 20;
    uint64_t free_bytes;
    int r = st->ops->space(st, &free_bytes);
    if (r < 0) {
        snprintf(why, why_size, "Cannot tell the free space of the image store for image "
                 "'%s': %s.", id, yun_strerror(r));
        return r;
    }
    if (free_bytes >= reserve && free_bytes - reserve >= need)
        return 0;
    snprintf(why, why_size, "No room for image '%s': %llu more bytes would leave the image "
             "store with less than the %u MiB it keeps free (%llu MiB are free).", id,
             (unsigned long long)need, s->cfg.image_store_min_free_mb,
             (unsigned long long)(free_bytes >> 20));
    return -ENOSPC;
}

/* Checks that 'need' bytes of image 'img' fit in its project's
 * [images] project_size_total_mb, counting the project's active and
 * deactivated images and its other uploads in progress (at their expected
 * size when given, else what they received). Stores in '*ret_left' how
 * many bytes this upload may take (UINT64_MAX without a limit). Returns 0,
 * or -EDQUOT or the store's error with a sentence in 'why'. Another
 * upload of the project that starts meanwhile is counted when it starts,
 * so two may each pass by at most their own unexpected growth. */
static int
check_quota(struct sched *s, const Yun__ImageRecord *img, uint64_t need, uint64_t *ret_left,
            char *why, size_t why_size)
{
    *ret_left = UINT64_MAX;
    if (!s->cfg.image_project_size_total_mb)
        return 0;
    uint64_t quota = (uint64_t)s->cfg.image_project_size_total_mb << 20;
    struct owner_usage pb = { .owner = img->owner, .except = img->id };
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r >= 0)
        r = yun_txn_iterate(txn, IMAGES_DB, NULL, 0, scan_owned, &pb);
    if (r < 0) {
        snprintf(why, why_size, "Cannot count the image bytes of project '%s': %s.",
                 img->owner, yun_strerror(r));
        return r;
    }
    for (const struct image_session *o = s->images->sessions; o; o = o->next)
        if (o->owner && strcmp(o->owner, img->owner) == 0 && strcmp(o->id, img->id) != 0)
            pb.bytes += o->expected_size > o->received ? o->expected_size : o->received;
    if (pb.bytes <= quota && quota - pb.bytes >= need) {
        *ret_left = quota - pb.bytes;
        return 0;
    }
    snprintf(why, why_size, "Quota exceeded: image '%s' needs %llu bytes, and project '%s' "
             "already holds %llu MiB of images of the %u MiB it may hold.", img->id,
             (unsigned long long)need, img->owner, (unsigned long long)(pb.bytes >> 20),
             s->cfg.image_project_size_total_mb);
    return -EDQUOT;
}

/* Kills 'se' when 'len' more bytes pass what its project may hold. */
static int
session_check_quota(struct sched *s, struct image_session *se, struct sched_call *call,
                    size_t len)
{
    if (se->quota_left == UINT64_MAX || se->received + len <= se->quota_left)
        return 0;
    return session_kill(s, se, call, -EDQUOT,
                        "Quota exceeded: image '%s' passed the %llu bytes its project '%s' "
                        "may still hold (%u MiB in all).", se->id,
                        (unsigned long long)se->quota_left, se->owner,
                        s->cfg.image_project_size_total_mb);
}

/* Opens the upload session of queued image 'img' for a first chunk that
 * needs 'need' bytes, and moves the record from queued to saving. A user's
 * upload and a server snapshot's ('snapshot') both start here. Free space
 * and the project's quota are checked before anything is written or
 * changed: a refusal leaves the image queued and no bytes behind. */
static int
session_open(struct sched_call *call, const Yun__ImageRecord *img, uint64_t need,
             bool snapshot, struct image_session **ret)
{
    struct sched *s = call->s;
    struct sched_images *im = s->images;
    const char *what = snapshot ? "snapshot upload" : "upload";
    if (im->n_sessions >= s->cfg.image_max_uploads)
        return sched_call_error(call, -EBUSY,
                                "%zu uploads are in progress, the most allowed; try again "
                                "later.", im->n_sessions);
    char why[256];
    uint64_t quota_left;
    int r = check_space(s, img->id, need, why, sizeof why);
    if (r >= 0)
        r = check_quota(s, img, need, &quota_left, why, sizeof why);
    if (r < 0)
        return sched_call_error(call, r, "%s", why);

    struct image_session *se = calloc(1, sizeof *se);
    if (!se)
        return -ENOMEM;
    se->owner = strdup(img->owner);
    se->quota_left = quota_left;
    if (!se->owner) {
        free(se);
        return -ENOMEM;
    }
    snprintf(se->id, sizeof se->id, "%s", img->id);
    snprintf(se->disk_format, sizeof se->disk_format, "%s", img->disk_format);
    se->last_ms = yun_now_ms();
    r = yun_digest_new(YUN_DIGEST_ALL, &se->digest);
    if (r >= 0)
        r = yun_imgfmt_inspector_new(&se->insp);
    if (r >= 0)
        r = im->store->ops->writer_new(im->store, se->id, &se->writer);
    if (r < 0) {
        session_free(im, se);
        return log_req(YUN_LOG_ERR, call->req, r, "cannot start the %s image=%s", what,
                       img->id);
    }

    /* Re-read under the write lock: another request may have started it. */
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *cur = NULL;
    r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_image(txn, se->id, &cur);
    if (r >= 0 && strcmp(cur->status, ST_QUEUED) != 0)
        r = sched_call_error(call, YUN_E_CONFLICT,
                             "Image '%s' is %s; only a queued image accepts an upload.",
                             cur->id, cur->status);
    if (r >= 0) {
        Yun__ImageRecord view = *cur;
        view.status = (char *)ST_SAVING;
        view.updated_us = yun_wall_us();
        r = put_image(txn, &view);
    }
    if (r >= 0)
        r = commit_audited(call, &txn, "image.upload", se->id,
                           snapshot ? "The snapshot upload started." : "The upload started.");
    if (r < 0) {
        session_free(im, se);
        return r;
    }
    se->next = im->sessions;
    im->sessions = se;
    im->n_sessions++;
    log_req(YUN_LOG_INFO, call->req, 0, "image %s started image=%s", what, se->id);
    *ret = se;
    return 0;
}

/* The first chunk of a user's upload: checks the image and the caller,
 * then opens the session for the whole image when its size is known,
 * else for this chunk (each later chunk is checked as it comes). */
static int
upload_start(struct sched_call *call, const Yun__ImageUploadRequest *q,
             struct image_session **ret)
{
    struct sched *s = call->s;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r < 0)
        return r;
    r = image_lookup(call, txn, q->image, &img);
    if (r < 0)
        return r;
    yun_txn_abortp(&txn);
    if (!can_modify(call, img))
        return error_not_owner(call, img, "upload to");
    if (strcmp(img->status, ST_QUEUED) != 0)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Image '%s' is %s; only a queued image accepts an upload.",
                                img->id, img->status);
    if (q->offset != 0)
        return error_offset(call, img->id, q->offset, 0);
    return session_open(call, img, q->expected_size > q->data.len ? q->expected_size
                                                                   : q->data.len,
                        false, ret);
}

/* Remembers the expected size and digests a chunk names; a value may be
 * given on any chunk but may not change. */
static int
session_expect(struct sched_call *call, struct image_session *se,
               const Yun__ImageUploadRequest *q)
{
    if (q->expected_size) {
        if (se->expected_size && se->expected_size != q->expected_size)
            return sched_call_error(call, YUN_E_INVALID,
                                    "The expected size of image '%s' changed during its upload.",
                                    se->id);
        se->expected_size = q->expected_size;
    }
    if (*q->expected_md5) {
        if (*se->expected_md5 && !yun_digest_hex_equal(se->expected_md5, q->expected_md5))
            return sched_call_error(call, YUN_E_INVALID,
                                    "The expected md5 of image '%s' changed during its upload.",
                                    se->id);
        snprintf(se->expected_md5, sizeof se->expected_md5, "%s", q->expected_md5);
    }
    if (*q->expected_sha512) {
        if (*se->expected_sha512 &&
            !yun_digest_hex_equal(se->expected_sha512, q->expected_sha512))
            return sched_call_error(call, YUN_E_INVALID,
                                    "The expected sha512 of image '%s' changed during its "
                                    "upload.", se->id);
        snprintf(se->expected_sha512, sizeof se->expected_sha512, "%s", q->expected_sha512);
    }
    return 0;
}

/* The last chunk arrived: judge the whole upload, then make the bytes
 * durable and the record active, in that order. */
static int
upload_finish(struct sched_call *call, struct image_session *se)
{
    struct sched *s = call->s;
    struct sched_images *im = s->images;
    struct yun_digest_result dg;
    int r = yun_digest_update_wait(se->digest);
    if (r >= 0)
        r = yun_digest_final(se->digest, &dg);
    if (r < 0)
        return session_kill(s, se, call, r, "Cannot hash the bytes of image '%s'.", se->id);
    if (se->expected_size && se->received != se->expected_size)
        return session_kill(s, se, call, YUN_E_CHECKSUM,
                            "Size mismatch: image '%s' has %llu bytes, not the expected %llu.",
                            se->id, (unsigned long long)se->received,
                            (unsigned long long)se->expected_size);
    if (*se->expected_md5 && !yun_digest_hex_equal(se->expected_md5, dg.md5))
        return session_kill(s, se, call, YUN_E_CHECKSUM,
                            "md5 mismatch: image '%s' has md5 '%s', not the expected '%s'.",
                            se->id, dg.md5, se->expected_md5);
    if (*se->expected_sha512 && !yun_digest_hex_equal(se->expected_sha512, dg.sha512))
        return session_kill(s, se, call, YUN_E_CHECKSUM,
                            "sha512 mismatch: image '%s' has sha512 '%.16s...', not the "
                            "expected '%.16s...'.", se->id, dg.sha512, se->expected_sha512);

    struct yun_imgfmt_policy policy = {
        .claimed_format = se->disk_format,
        .max_virtual_size = max_image_bytes(s),
    };
    struct yun_imgfmt_result res;
    r = yun_imgfmt_finish(se->insp, &policy, &res);
    if (r < 0)
        return session_kill(s, se, call, r, "Cannot inspect the format of image '%s'.", se->id);
    if (res.reject != YUN_IMGFMT_REJECT_NONE)
        return session_kill(s, se, call, YUN_E_BADIMAGE, "Image '%s' was refused (%s): %s",
                            se->id, yun_imgfmt_reject_to_string(res.reject), res.message);

    r = im->store->ops->commit(TAKE_PTR(se->writer));
    if (r < 0)
        return session_kill(s, se, call, r, "Cannot store the bytes of image '%s': %s.", se->id,
                            yun_strerror(r));

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_image(txn, se->id, &img);
    if (r >= 0 && strcmp(img->status, ST_SAVING) != 0)
        r = -ESTALE;
    Yun__ImageRecord view;
    char detail[128];
    if (r >= 0) {
        view = *img;
        view.status = (char *)ST_ACTIVE;
        view.size = se->received;
        view.virtual_size = res.virtual_size;
        view.checksum = dg.md5;
        view.os_hash_algo = (char *)"sha512";
        view.os_hash_value = dg.sha512;
        view.detected_format = (char *)yun_imgfmt_to_string(res.format);
        view.updated_us = yun_wall_us();
        r = put_image(txn, &view);
        snprintf(detail, sizeof detail, "The upload ended: %llu bytes, format %s.",
                 (unsigned long long)se->received, view.detected_format);
    }
    if (r >= 0)
        r = commit_audited(call, &txn, "image.upload", se->id, detail);
    if (r < 0) {
        yun_txn_abortp(&txn);
        (void)im->store->ops->remove(im->store, se->id);
        return session_kill(s, se, call, r, "Cannot record the upload of image '%s': %s.",
                            se->id, yun_strerror(r));
    }
    log_req(YUN_LOG_NOTICE, call->req, 0,
            "image active image=%s size=%llu virtual_size=%llu format=%s", se->id,
            (unsigned long long)view.size, (unsigned long long)view.virtual_size,
            view.detected_format);
    uint64_t received = se->received;
    session_free(im, se);
    return reply_received(call, received, &view);
}

/* Takes 'len' bytes at the session's end, from a user's upload or a
 * server snapshot: the size limits, free space and the project's quota
 * first (each kills the upload), then the bytes are hashed, stored and
 * inspected; the last chunk judges and finishes the upload. */
static int
session_take(struct sched_call *call, struct image_session *se, const void *data, size_t len,
             bool last)
{
    struct sched *s = call->s;
    struct sched_images *im = s->images;
    if (se->expected_size && se->received + len > se->expected_size)
        return session_kill(s, se, call, YUN_E_CHECKSUM,
                            "Size mismatch: image '%s' is longer than the expected %llu bytes.",
                            se->id, (unsigned long long)se->expected_size);
    if (se->received + len > max_image_bytes(s))
        return session_kill(s, se, call, YUN_E_BADIMAGE,
                            "Image '%s' was refused (%s): it is larger than the limit of %u "
                            "GiB.", se->id, yun_imgfmt_reject_to_string(
                                                YUN_IMGFMT_REJECT_TOO_LARGE),
                            s->cfg.image_max_virtual_size_gb);
    if (len) {
        /* Stopped here, a full disk kills the upload with the reserve
         * still free, and its bytes go at once rather than at the idle
         * timeout. A statvfs costs a microsecond per chunk. */
        char why[256];
        int r = check_space(s, se->id, len, why, sizeof why);
        if (r < 0)
            return session_kill(s, se, call, r, "%s", why);
        r = session_check_quota(s, se, call, len);
        if (r < 0)
            return r;
        /* Hashing is the slowest step: the helpers hash this chunk, from
         * a copy, until the next chunk comes, while this thread stores and
         * inspects it, answers, and opens and decodes the next request.
         * The previous chunk's hash must end first (one chunk at a time).
         * A hash failure (never seen in practice) is found then, or by
         * the last chunk, before anything is judged or made active. */
        r = yun_digest_update_wait(se->digest);
        if (r >= 0 && se->hash_buf_size < len) {
            free(se->hash_buf);
            se->hash_buf = malloc(len);
            se->hash_buf_size = se->hash_buf ? len : 0;
            if (!se->hash_buf)
                r = -ENOMEM;
        }
        if (r >= 0) {
            memcpy(se->hash_buf, data, len);
            r = yun_digest_update_start(se->digest, se->hash_buf, len);
        }
        int w = r < 0 ? 0 : im->store->ops->write(se->writer, se->received, data, len);
        int f = r < 0 || w < 0 ? 0 : yun_imgfmt_feed(se->insp, data, len);
        if (r < 0)
            return session_kill(s, se, call, r, "Cannot hash the bytes of image '%s'.", se->id);
        if (w < 0)
            return session_kill(s, se, call, w, "Cannot store the bytes of image '%s': %s.",
                                se->id, yun_strerror(w));
        if (f < 0)
            return session_kill(s, se, call, f, "Cannot inspect the format of image '%s'.",
                                se->id);
        se->received += len;
    }
    se->last_ms = yun_now_ms();
    if (last)
        return upload_finish(call, se);
    /* Chunks between the first and the last change no record: only the
     * start and the end of an upload are audited. */
    call->audited = true;
    return reply_received(call, se->received, NULL);
}

static int
image_upload(struct sched_call *call, const Yun__ImageUploadRequest *q)
{
    struct sched *s = call->s;
    struct sched_images *im = s->images;
    if (!yun_uuid_is_valid(q->image))
        return error_not_found(call, q->image);
    if (q->data.len > s->cfg.image_chunk_size)
        return sched_call_error(call, YUN_E_TOOBIG,
                                "The chunk of %zu bytes is above the limit of %u bytes.",
                                q->data.len, s->cfg.image_chunk_size);
    if (*q->expected_md5 && !yun_digest_hex_is_valid(q->expected_md5, YUN_MD5_HEX_SIZE - 1))
        return sched_call_error(call, YUN_E_INVALID,
                                "The expected md5 '%.40s' is not 32 hex digits.",
                                q->expected_md5);
    if (*q->expected_sha512 &&
        !yun_digest_hex_is_valid(q->expected_sha512, YUN_SHA512_HEX_SIZE - 1))
        return sched_call_error(call, YUN_E_INVALID,
                                "The expected sha512 is not 128 hex digits.");

    struct image_session *se = session_find(im, q->image);
    if (!se) {
        int r = upload_start(call, q, &se);
        if (r < 0)
            return r;
    } else {
        /* Who may write is checked on every chunk: the image may have
         * been given away or its caller may be someone else. */
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
        int r = yun_txn_begin(s->store, false, &txn);
        if (r < 0)
            return r;
        r = image_lookup(call, txn, q->image, &img);
        if (r < 0)
            return r;
        if (!can_modify(call, img))
            return error_not_owner(call, img, "upload to");
        if (se->dead)
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "The upload of image '%s' failed; create a new image.",
                                    se->id);
        if (q->offset != se->received)
            return error_offset(call, se->id, q->offset, se->received);
    }

    int r = session_expect(call, se, q);
    if (r < 0)
        return r;
    return session_take(call, se, q->data.data, q->data.len, q->last);
}

/* OP_IMAGE_UPLOAD: one chunk of an upload (see the file's head). Replies
 * ImageUploadReply, also with a YUN_E_CONFLICT for a wrong offset; the
 * start, the end and every failed chunk are audited as image.upload. */
int
sched_image_upload(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageUploadRequest *q = (const Yun__ImageUploadRequest *)req;
    return audit_end(call, "image.upload", q->image, image_upload(call, q));
}

/* Reaps sessions idle since before 'now_ms' minus the timeout, and retries
 * marking dead ones killed. */
void
sched_image_reap(struct sched *s, int64_t now_ms)
{
    struct sched_images *im = s->images;
    if (!im)
        return;
    int64_t idle_ms = (int64_t)s->cfg.image_upload_idle_timeout_s * 1000;
    struct image_session *next;
    for (struct image_session *se = im->sessions; se; se = next) {
        next = se->next;
        if (se->dead)
            (void)session_mark_killed(s, se, NULL);
        else if (now_ms - se->last_ms > idle_ms)
            (void)session_kill(s, se, NULL, -ETIMEDOUT,
                               "The upload of image '%s' was idle for more than %u s.", se->id,
                               s->cfg.image_upload_idle_timeout_s);
    }
}

/* --- tombstone purge ------------------------------------------------------- */

struct purge_scan {
    uint64_t cutoff_us;
    char (*ids)[YUN_UUID_STR_SIZE];
    size_t n;
};

static int
scan_tombstone(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct purge_scan *p = data;
    if (key_size >= YUN_UUID_STR_SIZE)
        return 0;
    _cleanup_(image_freep) Yun__ImageRecord *img = yun__image_record__unpack(NULL, val_size,
                                                                               val);
    /* A record that does not decode is not known to be a tombstone: it
     * stays, and the handlers that read it report it. */
    if (!img || strcmp(img->status, ST_DELETED) != 0 || img->updated_us >= p->cutoff_us)
        return 0;
    memcpy(p->ids[p->n], key, key_size);
    p->ids[p->n][key_size] = '\0';
    return ++p->n == PURGE_BATCH ? 1 : 0;
}

/* Removes one tombstone found by the scan, if it still is one past the
 * cutoff: its record (members included), its name index entry if one is
 * left, and an audit record of the purge. Returns 1 when purged, 0 when
 * it is no longer there or no longer old enough, or a negative errno. */
static int
purge_one(struct sched *s, struct yun_txn *txn, const char *id, uint64_t cutoff_us)
{
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = load_image(txn, id, &img);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (strcmp(img->status, ST_DELETED) != 0 || img->updated_us >= cutoff_us)
        return 0;
    r = yun_txn_del(txn, IMAGES_DB, id, strlen(id));
    if (r >= 0)
        r = name_index_del(txn, img->name, img->id);
    if (r >= 0)
        r = sched_audit_system(s, txn, "image.purge", id, 0,
                               "The tombstone of the deleted image was purged after "
                               "[images] tombstone_retention_s.");
    return r < 0 ? r : 1;
}

/* Purges up to PURGE_BATCH tombstones (images deleted, i.e. last updated,
 * before 'now_us' minus [images] tombstone_retention_s; wall-clock time)
 * in one write transaction, found by a read-only scan before it. Their
 * ids may then be taken again. Returns the number purged (PURGE_BATCH
 * means more may be left), 0 when the retention is 0 (keep forever), or
 * a negative errno from the store, with nothing purged. */
int
sched_image_purge(struct sched *s, uint64_t now_us)
{
    uint64_t keep_us = (uint64_t)s->cfg.image_tombstone_retention_s * 1000000u;
    if (s->cfg.image_tombstone_retention_s == 0 || now_us <= keep_us)
        return 0;
    _cleanup_free_ char (*ids)[YUN_UUID_STR_SIZE] = calloc(PURGE_BATCH, sizeof *ids);
    if (!ids)
        return -ENOMEM;
    struct purge_scan p = { .cutoff_us = now_us - keep_us, .ids = ids };

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r >= 0)
        r = yun_txn_iterate(txn, IMAGES_DB, NULL, 0, scan_tombstone, &p);
    yun_txn_abortp(&txn);
    if (r < 0 || p.n == 0)
        return r;

    size_t purged = 0;
    r = yun_txn_begin(s->store, true, &txn);
    for (size_t i = 0; r >= 0 && i < p.n; i++) {
        r = purge_one(s, txn, ids[i], p.cutoff_us);
        if (r > 0)
            purged++;
    }
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;

    /* Their bytes went at delete; a removal that failed then (or a crash
     * between the record and the bytes) gets another chance. */
    for (size_t i = 0; i < p.n && s->images; i++) {
        int q = s->images->store->ops->remove(s->images->store, ids[i]);
        if (q < 0 && q != -ENOENT)
            log_err_errno(q, "cannot remove the bytes of a purged image image=%s", ids[i]);
    }
    if (purged)
        log_info("image tombstones purged count=%zu retention_s=%u", purged,
                 s->cfg.image_tombstone_retention_s);
    return (int)purged;
}

/* The cron's entry: sched_image_reap with the current monotonic time, and
 * the tombstone purge every PURGE_PERIOD_MS (or retention, if shorter),
 * batch after batch on consecutive ticks while batches come back full. */
void
sched_image_cron(struct sched *s)
{
    struct sched_images *im = s->images;
    int64_t now = yun_now_ms();
    sched_image_reap(s, now);
    if (!im || s->cfg.image_tombstone_retention_s == 0 || now < im->next_purge_ms)
        return;
    int64_t period = PURGE_PERIOD_MS;
    if ((int64_t)s->cfg.image_tombstone_retention_s * 1000 < period)
        period = (int64_t)s->cfg.image_tombstone_retention_s * 1000;
    int r = sched_image_purge(s, yun_wall_us());
    if (r < 0)
        log_err_errno(r, "cannot purge image tombstones, will retry");
    im->next_purge_ms = r == PURGE_BATCH ? now : now + period;
}

/* --- download -------------------------------------------------------------- */

static int
image_download(struct sched_call *call, const Yun__ImageDownloadRequest *q)
{
    struct sched *s = call->s;
    struct sched_images *im = s->images;
    char id[YUN_UUID_STR_SIZE];
    char sha512[YUN_SHA512_HEX_SIZE];
    uint64_t size;
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
        int r = yun_txn_begin(s->store, false, &txn);
        if (r < 0)
            return r;
        r = image_lookup(call, txn, q->image, &img);
        if (r < 0)
            return r;
        if (strcmp(img->status, ST_DEACTIVATED) == 0 && !call->is_admin)
            return sched_call_error(call, YUN_E_DENIED,
                                    "Image '%s' is deactivated; only admins may download it.",
                                    img->id);
        if (strcmp(img->status, ST_ACTIVE) != 0 && strcmp(img->status, ST_DEACTIVATED) != 0)
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "Image '%s' is %s; only an active image can be downloaded.",
                                    img->id, img->status);
        if (!call->is_admin && !is_owner(call, img) && !is_agent(call) &&
            strcmp(img->visibility, "shared") == 0) {
            const Yun__ImageMember *m = find_member(img, caller_project(call));
            if (!m || strcmp(m->status, "accepted") != 0)
                return sched_call_error(call, YUN_E_DENIED,
                                        "Project '%s' has not accepted image '%s'; accept it "
                                        "before using it.", caller_project(call), img->id);
        }
        snprintf(id, sizeof id, "%s", img->id);
        snprintf(sha512, sizeof sha512, "%s", img->os_hash_value);
        size = img->size;
    }
    if (q->offset > size)
        return sched_call_error(call, YUN_E_INVALID,
                                "Offset %llu is past the end of image '%s' (%llu bytes).",
                                (unsigned long long)q->offset, id, (unsigned long long)size);
    uint64_t want = q->length && q->length < s->cfg.image_chunk_size ? q->length
                                                                      : s->cfg.image_chunk_size;
    size_t n = (size_t)(size - q->offset < want ? size - q->offset : want);

    /* The reply is packed by hand around the data so that pread fills it
     * in place: field 1 (data) first, then the other fields packed by
     * protobuf-c; one message in wire order either way. */
    Yun__ImageDownloadReply y = YUN__IMAGE_DOWNLOAD_REPLY__INIT;
    y.offset = q->offset;
    y.size = size;
    y.os_hash_value = sha512;
    y.eof = q->offset + n == size;
    size_t rest = yun__image_download_reply__get_packed_size(&y);
    size_t head = n ? 1 + pbwire_varint_size(n) : 0;
    /* With room before it for the Reply's own framing: the bus seals
     * this very buffer. */
    size_t room = sched_call_reply_headroom(head + n + rest);
    _cleanup_free_ uint8_t *alloc = malloc(room + head + n + rest + 1);
    if (!alloc)
        return -ENOMEM;
    uint8_t *buf = alloc + room;
    if (n) {
        buf[0] = (1 << 3) | 2; /* field 1, length-delimited */
        pbwire_varint_put(buf + 1, n);
        int r = im->store->ops->pread(im->store, id, q->offset, buf + head, n);
        if (r < 0) {
            log_req(YUN_LOG_ERR, call->req, r, "cannot read image bytes image=%s offset=%llu",
                    id, (unsigned long long)q->offset);
            return sched_call_error(call, r, "Cannot read the bytes of image '%s': %s.", id,
                                    yun_strerror(r));
        }
    }
    yun__image_download_reply__pack(&y, buf + head + n);
    sched_call_reply_take_at(call, TAKE_PTR(alloc), room, head + n + rest);
    return 0;
}

/* OP_IMAGE_DOWNLOAD: a slice of an active image (deactivated: admins
 * only) at any offset, at most chunk_size bytes. Replies
 * ImageDownloadReply. Not audited: it changes nothing. */
int
sched_image_download(struct sched_call *call, const ProtobufCMessage *req)
{
    return image_download(call, (const Yun__ImageDownloadRequest *)req);
}

/* --- list and show ------------------------------------------------------------ */

struct image_list {
    const struct sched_call *call;
    const Yun__ImageListRequest *q;
    Yun__ImageRecord **v;
    size_t n, cap;
};

static bool
listed(const struct sched_call *call, const Yun__ImageListRequest *q,
       const Yun__ImageRecord *img)
{
    if (strcmp(img->status, ST_DELETED) == 0)
        return false;
    if (!call->is_admin && !is_owner(call, img)) {
        if (strcmp(img->visibility, "community") == 0) {
            if (strcmp(q->visibility, "community") != 0)
                return false;
        } else if (strcmp(img->visibility, "shared") == 0) {
            const Yun__ImageMember *m = find_member(img, caller_project(call));
            const char *want = *q->member_status ? q->member_status : "accepted";
            if (!m || (strcmp(want, "all") != 0 && strcmp(m->status, want) != 0))
                return false;
        } else if (strcmp(img->visibility, "public") != 0) {
            return false;
        }
    }
    if (*q->name && strcmp(img->name, q->name) != 0)
        return false;
    if (*q->status && strcmp(img->status, q->status) != 0)
        return false;
    if (*q->visibility && strcmp(q->visibility, "all") != 0 &&
        strcmp(img->visibility, q->visibility) != 0)
        return false;
    if (*q->owner && strcmp(img->owner, q->owner) != 0)
        return false;
    if (*q->disk_format && strcmp(img->disk_format, q->disk_format) != 0)
        return false;
    if (*q->tag) {
        bool has = false;
        for (size_t i = 0; i < img->n_tags && !has; i++)
            has = strcmp(img->tags[i], q->tag) == 0;
        if (!has)
            return false;
    }
    return true;
}

static int
collect_image(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct image_list *l = data;
    Yun__ImageRecord *img = yun__image_record__unpack(NULL, val_size, val);
    if (!img)
        return -EBADMSG;
    if (!listed(l->call, l->q, img)) {
        image_free(img);
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        Yun__ImageRecord **p = realloc(l->v, cap * sizeof *p);
        if (!p) {
            image_free(img);
            return -ENOMEM;
        }
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = img;
    return 0;
}

static void
image_list_done(struct image_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        image_free(l->v[i]);
    free(l->v);
}

struct sort_order {
    const char *key;
    bool desc;
};

static int
cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int
compare_images(const void *pa, const void *pb, void *data)
{
    const struct sort_order *o = data;
    const Yun__ImageRecord *a = *(Yun__ImageRecord *const *)pa;
    const Yun__ImageRecord *b = *(Yun__ImageRecord *const *)pb;
    int c;
    if (strcmp(o->key, "name") == 0)
        c = strcmp(a->name, b->name);
    else if (strcmp(o->key, "updated_at") == 0)
        c = cmp_u64(a->updated_us, b->updated_us);
    else if (strcmp(o->key, "size") == 0)
        c = cmp_u64(a->size, b->size);
    else if (strcmp(o->key, "status") == 0)
        c = strcmp(a->status, b->status);
    else
        c = cmp_u64(a->created_us, b->created_us);
    /* Ids break ties, so that the order is total and pages never skip or
     * repeat an image. */
    if (c == 0)
        c = strcmp(a->id, b->id);
    return o->desc ? -c : c;
}

static int
image_list(struct sched_call *call, const Yun__ImageListRequest *q)
{
    if (*q->status && !in_list(q->status, statuses))
        return sched_call_error(call, YUN_E_INVALID, "Status '%.32s' is not an image status.",
                                q->status);
    if (*q->visibility && strcmp(q->visibility, "all") != 0 &&
        !in_list(q->visibility, visibilities))
        return sched_call_error(call, YUN_E_INVALID,
                                "Visibility '%.32s' is not one of public, private, shared, "
                                "community or all.", q->visibility);
    if (*q->member_status && strcmp(q->member_status, "all") != 0 &&
        !in_list(q->member_status, member_statuses))
        return sched_call_error(call, YUN_E_INVALID,
                                "Member status '%.32s' is not one of pending, accepted, "
                                "rejected or all.", q->member_status);
    if (*q->sort_key && !in_list(q->sort_key, sort_keys))
        return sched_call_error(call, YUN_E_INVALID,
                                "Sort key '%.32s' is not one of name, created_at, updated_at, "
                                "size or status.", q->sort_key);
    if (*q->sort_dir && strcmp(q->sort_dir, "asc") != 0 && strcmp(q->sort_dir, "desc") != 0)
        return sched_call_error(call, YUN_E_INVALID, "Sort direction '%.32s' is not asc or desc.",
                                q->sort_dir);
    if (q->limit > LIST_MAX)
        return sched_call_error(call, YUN_E_INVALID, "The limit of %u is above %d.", q->limit,
                                LIST_MAX);
    if (strlen(q->name) > IMAGE_NAME_MAX || strlen(q->owner) > PROJECT_MAX ||
        strlen(q->tag) > IMAGE_TAG_MAX || strlen(q->disk_format) > 16)
        return sched_call_error(call, YUN_E_INVALID, "A list filter is longer than allowed.");

    _cleanup_(image_list_done) struct image_list l = { .call = call, .q = q };
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        int r = yun_txn_begin(call->s->store, false, &txn);
        if (r < 0)
            return r;
        r = yun_txn_iterate(txn, IMAGES_DB, NULL, 0, collect_image, &l);
        if (r < 0)
            return r;
    }
    struct sort_order o = {
        .key = *q->sort_key ? q->sort_key : "created_at",
        .desc = strcmp(q->sort_dir, "asc") != 0,
    };
    if (l.n > 1)
        qsort_r(l.v, l.n, sizeof *l.v, compare_images, &o);

    size_t start = 0;
    if (*q->marker) {
        size_t i = 0;
        while (i < l.n && strcmp(l.v[i]->id, q->marker) != 0)
            i++;
        if (i == l.n)
            return sched_call_error(call, YUN_E_INVALID,
                                    "Marker '%.64s' is not an image of this list.", q->marker);
        start = i + 1;
    }
    size_t limit = q->limit ? q->limit : LIST_DEFAULT;
    size_t count = l.n - start < limit ? l.n - start : limit;

    _cleanup_free_ Yun__ImageRecord *views = calloc(count ? count : 1, sizeof *views);
    _cleanup_free_ Yun__ImageRecord **ptrs = calloc(count ? count : 1, sizeof *ptrs);
    _cleanup_free_ Yun__ImageMember **owns = calloc(count ? count : 1, sizeof *owns);
    if (!views || !ptrs || !owns)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++) {
        image_view(call, l.v[start + i], &views[i], &owns[i]);
        ptrs[i] = &views[i];
    }
    Yun__ImageListReply y = YUN__IMAGE_LIST_REPLY__INIT;
    y.images = ptrs;
    y.n_images = count;
    y.next_marker = (char *)(start + count < l.n && count ? l.v[start + count - 1]->id : "");
    return sched_call_reply(call, &y.base);
}

/* OP_IMAGE_LIST: the images the caller may list, filtered, sorted (ids
 * break ties) and paged by limit and marker. Replies ImageListReply. */
int
sched_image_list(struct sched_call *call, const ProtobufCMessage *req)
{
    return image_list(call, (const Yun__ImageListRequest *)req);
}

/* OP_IMAGE_SHOW: one image by id or unambiguous name. Replies ImageReply. */
int
sched_image_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageRef *q = (const Yun__ImageRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    r = image_lookup(call, txn, q->image, &img);
    if (r < 0)
        return r;
    return reply_image(call, img);
}

/* --- update ------------------------------------------------------------------ */

static int
image_update(struct sched_call *call, const Yun__ImageUpdateRequest *q)
{
    if (*q->name && !yun_text_is_valid(q->name, IMAGE_NAME_MAX))
        return sched_call_error(call, YUN_E_INVALID,
                                "Image name '%.64s' is not 1 to %d bytes of text without "
                                "control characters.", q->name, IMAGE_NAME_MAX);
    if (*q->visibility && !in_list(q->visibility, visibilities))
        return sched_call_error(call, YUN_E_INVALID,
                                "Visibility '%.32s' is not one of public, private, shared or "
                                "community.", q->visibility);
    if ((q->set_min_disk && q->min_disk > INT32_MAX) ||
        (q->set_min_ram && q->min_ram > INT32_MAX))
        return sched_call_error(call, YUN_E_INVALID, "min_disk and min_ram are at most %d.",
                                INT32_MAX);
    if (q->n_add_tags > IMAGE_TAGS_MAX || q->n_remove_tags > IMAGE_TAGS_MAX ||
        q->n_set_properties > IMAGE_PROPS_MAX || q->n_unset_properties > IMAGE_PROPS_MAX)
        return sched_call_error(call, YUN_E_INVALID,
                                "An update changes at most %d tags and %d properties.",
                                IMAGE_TAGS_MAX, IMAGE_PROPS_MAX);
    for (size_t i = 0; i < q->n_add_tags; i++) {
        int r = check_tag(call, q->add_tags[i]);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < q->n_set_properties; i++) {
        int r = check_property(call, q->set_properties[i]->key, q->set_properties[i]->value);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < q->n_unset_properties; i++)
        if (!prop_key_is_valid(q->unset_properties[i]))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Property key '%.64s' is not valid.",
                                    q->unset_properties[i]);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = image_lookup(call, txn, q->image, &img);
    if (r < 0)
        return r;
    if (!can_modify(call, img))
        return error_not_owner(call, img, "update");
    if (strcmp(q->visibility, "public") == 0 && strcmp(img->visibility, "public") != 0 &&
        !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED, "Only admins may make an image public.");

    Yun__ImageRecord view = *img;
    if (*q->name)
        view.name = q->name;
    if (*q->visibility)
        view.visibility = q->visibility;
    if (q->set_min_disk)
        view.min_disk = q->min_disk;
    if (q->set_min_ram)
        view.min_ram = q->min_ram;
    if (q->set_protected)
        view.protected_ = q->protected_;

    /* Tags: the old ones minus the removed, plus the added, no repeats. */
    _cleanup_free_ char **tags = calloc(img->n_tags + q->n_add_tags + 1, sizeof *tags);
    if (!tags)
        return -ENOMEM;
    size_t n_tags = 0;
    for (size_t i = 0; i < img->n_tags + q->n_add_tags; i++) {
        char *t = i < img->n_tags ? img->tags[i] : q->add_tags[i - img->n_tags];
        bool skip = false;
        for (size_t j = 0; j < q->n_remove_tags && !skip; j++)
            skip = strcmp(q->remove_tags[j], t) == 0;
        for (size_t j = 0; j < n_tags && !skip; j++)
            skip = strcmp(tags[j], t) == 0;
        if (!skip)
            tags[n_tags++] = t;
    }
    if (n_tags > IMAGE_TAGS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "An image has at most %d tags.",
                                IMAGE_TAGS_MAX);
    view.tags = tags;
    view.n_tags = n_tags;

    /* Properties: set replaces a key's value in place or appends it;
     * unset drops it. */
    size_t max_props = img->n_properties + q->n_set_properties;
    _cleanup_free_ Yun__ImageProperty **props = calloc(max_props + 1, sizeof *props);
    if (!props)
        return -ENOMEM;
    size_t n_props = 0;
    for (size_t i = 0; i < max_props; i++) {
        Yun__ImageProperty *p =
            i < img->n_properties ? img->properties[i] : q->set_properties[i - img->n_properties];
        bool drop = false;
        for (size_t j = 0; j < q->n_unset_properties && !drop; j++)
            drop = strcmp(q->unset_properties[j], p->key) == 0;
        if (drop)
            continue;
        size_t k = 0;
        while (k < n_props && strcmp(props[k]->key, p->key) != 0)
            k++;
        props[k] = p;
        if (k == n_props)
            n_props++;
    }
    if (n_props > IMAGE_PROPS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "An image has at most %d properties.",
                                IMAGE_PROPS_MAX);
    view.properties = props;
    view.n_properties = n_props;
    view.updated_us = yun_wall_us();

    r = put_image(txn, &view);
    if (r >= 0 && strcmp(view.name, img->name) != 0) {
        r = name_index_del(txn, img->name, img->id);
        if (r >= 0)
            r = name_index_add(txn, view.name, img->id);
    }
    if (r >= 0)
        r = commit_audited(call, &txn, "image.update", img->id, NULL);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "image updated image=%s", img->id);
    return reply_image(call, &view);
}

/* OP_IMAGE_UPDATE: the owner's or an admin's changes, all validated
 * before any is applied. Replies ImageReply; audited as image.update. */
int
sched_image_update(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageUpdateRequest *q = (const Yun__ImageUpdateRequest *)req;
    return audit_end(call, "image.update", q->image, image_update(call, q));
}

/* --- delete, deactivate, reactivate ------------------------------------------ */

static int
image_delete(struct sched_call *call, const Yun__ImageRef *q)
{
    struct sched *s = call->s;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    r = image_lookup(call, txn, q->image, &img);
    if (r < 0)
        return r;
    if (!can_modify(call, img))
        return error_not_owner(call, img, "delete");
    if (img->protected_)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Image '%s' is protected; unprotect it before deleting it.",
                                img->id);
    Yun__ImageRecord view = *img;
    view.status = (char *)ST_DELETED;
    view.updated_us = yun_wall_us();
    r = put_image(txn, &view);
    if (r >= 0)
        r = name_index_del(txn, img->name, img->id);
    if (r >= 0)
        r = commit_audited(call, &txn, "image.delete", img->id, NULL);
    if (r < 0)
        return r;

    /* The record is gone first: a crash from here on leaves bytes no
     * record owns, which the next start removes. */
    struct image_session *se = session_find(s->images, img->id);
    if (se)
        session_free(s->images, se);
    r = s->images->store->ops->remove(s->images->store, img->id);
    if (r < 0 && r != -ENOENT)
        log_req(YUN_LOG_ERR, call->req, r, "cannot remove the bytes of deleted image=%s",
                img->id);
    log_req(YUN_LOG_NOTICE, call->req, 0, "image deleted image=%s name=\"%s\"", img->id,
            img->name);
    return reply_image(call, &view);
}

/* OP_IMAGE_DELETE: refused while protected; the record becomes a
 * tombstone, then the bytes go. Replies ImageReply; audited. */
int
sched_image_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageRef *q = (const Yun__ImageRef *)req;
    return audit_end(call, "image.delete", q->image, image_delete(call, q));
}

static int
image_set_active(struct sched_call *call, const Yun__ImageRef *q, bool active,
                 const char *operation)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = image_lookup(call, txn, q->image, &img);
    if (r < 0)
        return r;
    if (!can_modify(call, img))
        return error_not_owner(call, img, active ? "reactivate" : "deactivate");
    const char *to = active ? ST_ACTIVE : ST_DEACTIVATED;
    if (strcmp(img->status, to) == 0)
        return reply_image(call, img); /* already there: audited as ok by the caller */
    const char *from = active ? ST_DEACTIVATED : ST_ACTIVE;
    if (strcmp(img->status, from) != 0)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Image '%s' is %s; only an %s image can be %s.", img->id,
                                img->status, from, active ? "reactivated" : "deactivated");
    Yun__ImageRecord view = *img;
    view.status = (char *)to;
    view.updated_us = yun_wall_us();
    r = put_image(txn, &view);
    if (r >= 0)
        r = commit_audited(call, &txn, operation, img->id, NULL);
    if (r < 0)
        return r;
    log_req(YUN_LOG_NOTICE, call->req, 0, "image %s image=%s",
            active ? "reactivated" : "deactivated", img->id);
    return reply_image(call, &view);
}

/* OP_IMAGE_DEACTIVATE / OP_IMAGE_REACTIVATE: active <-> deactivated, by the
 * owner or an admin; idempotent. Replies ImageReply; audited. */
int
sched_image_deactivate(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageRef *q = (const Yun__ImageRef *)req;
    return audit_end(call, "image.deactivate", q->image,
                     image_set_active(call, q, false, "image.deactivate"));
}

int
sched_image_reactivate(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageRef *q = (const Yun__ImageRef *)req;
    return audit_end(call, "image.reactivate", q->image,
                     image_set_active(call, q, true, "image.reactivate"));
}

/* --- members -------------------------------------------------------------------- */

static int
reply_members(struct sched_call *call, Yun__ImageMember **members, size_t n)
{
    Yun__ImageMemberListReply y = YUN__IMAGE_MEMBER_LIST_REPLY__INIT;
    y.members = members;
    y.n_members = n;
    return sched_call_reply(call, &y.base);
}

static int
image_member_add(struct sched_call *call, const Yun__ImageMemberRequest *q)
{
    if (!yun_name_is_valid(q->project, PROJECT_MAX))
        return sched_call_error(call, YUN_E_INVALID, "Project '%.64s' is not a valid project.",
                                q->project);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = image_lookup(call, txn, q->image, &img);
    if (r < 0)
        return r;
    if (!can_modify(call, img))
        return error_not_owner(call, img, "share");
    if (strcmp(img->visibility, "shared") != 0)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Image '%s' has visibility '%s'; only a shared image has "
                                "members.", img->id, img->visibility);
    if (strcmp(q->project, img->owner) == 0)
        return sched_call_error(call, YUN_E_INVALID,
                                "Project '%s' owns image '%s' and cannot be its member.",
                                q->project, img->id);
    if (find_member(img, q->project))
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Project '%s' is already a member of image '%s'.", q->project,
                                img->id);
    if (img->n_members >= IMAGE_MEMBERS_MAX)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Image '%s' has %d members, the most allowed.", img->id,
                                IMAGE_MEMBERS_MAX);

    uint64_t now = yun_wall_us();
    Yun__ImageMember m = YUN__IMAGE_MEMBER__INIT;
    m.project = q->project;
    m.status = (char *)"pending";
    m.created_us = now;
    m.updated_us = now;
    _cleanup_free_ Yun__ImageMember **members =
        calloc(img->n_members + 1, sizeof *members);
    if (!members)
        return -ENOMEM;
    for (size_t i = 0; i < img->n_members; i++)
        members[i] = img->members[i];
    members[img->n_members] = &m;
    Yun__ImageRecord view = *img;
    view.members = members;
    view.n_members = img->n_members + 1;
    view.updated_us = now;
    char detail[PROJECT_MAX + 32];
    snprintf(detail, sizeof detail, "Member '%s' added.", q->project);
    r = put_image(txn, &view);
    if (r >= 0)
        r = commit_audited(call, &txn, "image.member_add", img->id, detail);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "image member added image=%s project=%s", img->id,
            q->project);
    Yun__ImageMember *one = &m;
    return reply_members(call, &one, 1);
}

/* OP_IMAGE_MEMBER_ADD: the owner shares a shared image with a project,
 * pending until it answers. Replies ImageMemberListReply with the new
 * member; audited. */
int
sched_image_member_add(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageMemberRequest *q = (const Yun__ImageMemberRequest *)req;
    return audit_end(call, "image.member_add", q->image, image_member_add(call, q));
}

static int
image_member_remove(struct sched_call *call, const Yun__ImageMemberRequest *q)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = image_lookup(call, txn, q->image, &img);
    if (r < 0)
        return r;
    if (!can_modify(call, img))
        return error_not_owner(call, img, "unshare");
    _cleanup_free_ Yun__ImageMember **members =
        calloc(img->n_members + 1, sizeof *members);
    if (!members)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < img->n_members; i++)
        if (strcmp(img->members[i]->project, q->project) != 0)
            members[n++] = img->members[i];
    if (n == img->n_members)
        return sched_call_error(call, -ENOENT, "Project '%.64s' is not a member of image '%s'.",
                                q->project, img->id);
    Yun__ImageRecord view = *img;
    view.members = members;
    view.n_members = n;
    view.updated_us = yun_wall_us();
    char detail[PROJECT_MAX + 32];
    snprintf(detail, sizeof detail, "Member '%s' removed.", q->project);
    r = put_image(txn, &view);
    if (r >= 0)
        r = commit_audited(call, &txn, "image.member_remove", img->id, detail);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "image member removed image=%s project=%s", img->id,
            q->project);
    return reply_members(call, members, n);
}

/* OP_IMAGE_MEMBER_REMOVE: the owner stops sharing with a project. Replies
 * ImageMemberListReply with the members left; audited. */
int
sched_image_member_remove(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageMemberRequest *q = (const Yun__ImageMemberRequest *)req;
    return audit_end(call, "image.member_remove", q->image, image_member_remove(call, q));
}

/* OP_IMAGE_MEMBER_LIST: every member for the owner and admins, a member's
 * own entry for a member. Replies ImageMemberListReply. */
int
sched_image_member_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageRef *q = (const Yun__ImageRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    r = image_lookup(call, txn, q->image, &img);
    if (r < 0)
        return r;
    Yun__ImageRecord view;
    Yun__ImageMember *own = NULL;
    image_view(call, img, &view, &own);
    return reply_members(call, view.members, view.n_members);
}

static int
image_member_set_status(struct sched_call *call, const Yun__ImageMemberRequest *q)
{
    const char *project = *q->project ? q->project : caller_project(call);
    if (strcmp(project, caller_project(call)) != 0 && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED,
                                "Project '%s' may not answer for project '%.64s'.",
                                caller_project(call), project);
    if (!in_list(q->status, member_statuses))
        return sched_call_error(call, YUN_E_INVALID,
                                "Member status '%.32s' is not one of pending, accepted or "
                                "rejected.", q->status);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = image_lookup(call, txn, q->image, &img);
    if (r < 0)
        return r;
    Yun__ImageMember *old = find_member(img, project);
    if (!old) {
        if (!call->is_admin && !is_owner(call, img))
            return error_not_found(call, q->image);
        return sched_call_error(call, -ENOENT, "Project '%.64s' is not a member of image '%s'.",
                                project, img->id);
    }
    uint64_t now = yun_wall_us();
    Yun__ImageMember m = *old;
    m.status = q->status;
    m.updated_us = now;
    _cleanup_free_ Yun__ImageMember **members = calloc(img->n_members + 1, sizeof *members);
    if (!members)
        return -ENOMEM;
    for (size_t i = 0; i < img->n_members; i++)
        members[i] = img->members[i] == old ? &m : img->members[i];
    Yun__ImageRecord view = *img;
    view.members = members;
    view.updated_us = now;
    char detail[PROJECT_MAX + 64];
    snprintf(detail, sizeof detail, "Member '%s' is now %s.", project, q->status);
    r = put_image(txn, &view);
    if (r >= 0)
        r = commit_audited(call, &txn, "image.member_set_status", img->id, detail);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "image member status image=%s project=%s status=%s",
            img->id, project, q->status);
    Yun__ImageMember *one = &m;
    return reply_members(call, &one, 1);
}

/* OP_IMAGE_MEMBER_SET_STATUS: a member project (or an admin for it)
 * accepts, rejects or resets its membership. Replies ImageMemberListReply
 * with the member; audited. */
int
sched_image_member_set_status(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ImageMemberRequest *q = (const Yun__ImageMemberRequest *)req;
    return audit_end(call, "image.member_set_status", q->image,
                     image_member_set_status(call, q));
}

/* --- start and stop ------------------------------------------------------------ */

struct recovery {
    char (*keep)[YUN_UUID_STR_SIZE]; /* ids whose bytes must stay, sorted */
    size_t n_keep, cap_keep;
    char (*killed)[YUN_UUID_STR_SIZE]; /* images found in saving */
    size_t n_killed, cap_killed;
    size_t removed;
};

static int
push_id(char (**v)[YUN_UUID_STR_SIZE], size_t *n, size_t *cap, const char *id)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        char (*p)[YUN_UUID_STR_SIZE] = realloc(*v, c * sizeof *p);
        if (!p)
            return -ENOMEM;
        *v = p;
        *cap = c;
    }
    snprintf((*v)[(*n)++], YUN_UUID_STR_SIZE, "%s", id);
    return 0;
}

static int
scan_record(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct recovery *rc = data;
    _cleanup_(image_freep) Yun__ImageRecord *img = yun__image_record__unpack(NULL, val_size, val);
    if (!img)
        return -EBADMSG;
    if (strcmp(img->status, ST_SAVING) == 0)
        return push_id(&rc->killed, &rc->n_killed, &rc->cap_killed, img->id);
    if (strcmp(img->status, ST_ACTIVE) == 0 || strcmp(img->status, ST_DEACTIVATED) == 0)
        return push_id(&rc->keep, &rc->n_keep, &rc->cap_keep, img->id);
    return 0;
}

static int
cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int
scan_object(const char *id, bool partial, void *data)
{
    struct recovery *rc = data;
    /* No session exists at start, so every partial object is a leftover;
     * a whole one stays only when an active or deactivated record owns it. */
    bool keep = !partial && bsearch(id, rc->keep, rc->n_keep, sizeof *rc->keep, cmp_id);
    if (!keep) {
        log_notice("image bytes removed, no record owns them image=%s partial=%s", id,
                   partial ? "yes" : "no");
        rc->removed++;
    }
    return keep ? 0 : 1;
}

static void
recovery_done(struct recovery *rc)
{
    free(rc->keep);
    free(rc->killed);
}

/* Brings records and bytes back into agreement after a stop or a crash:
 * saving -> killed, bytes without an owning record removed, records whose
 * bytes are missing reported. */
static int
image_recover(struct sched *s)
{
    struct sched_images *im = s->images;
    _cleanup_(recovery_done) struct recovery rc = { 0 };
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    r = yun_txn_iterate(txn, IMAGES_DB, NULL, 0, scan_record, &rc);
    if (r < 0)
        return r;
    for (size_t i = 0; i < rc.n_killed; i++) {
        _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
        r = load_image(txn, rc.killed[i], &img);
        if (r < 0)
            return r;
        Yun__ImageRecord view = *img;
        view.status = (char *)ST_KILLED;
        view.updated_us = yun_wall_us();
        r = put_image(txn, &view);
        if (r >= 0)
            r = sched_audit_system(s, txn, "image.upload", img->id, -ECANCELED,
                                   "The scheduler stopped during the upload.");
        if (r < 0)
            return r;
        log_warn("image killed, its upload did not finish before a restart image=%s", img->id);
    }
    r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;

    if (rc.n_keep > 1)
        qsort(rc.keep, rc.n_keep, sizeof *rc.keep, cmp_id);
    r = im->store->ops->scan(im->store, scan_object, &rc);
    if (r < 0)
        return r;
    for (size_t i = 0; i < rc.n_keep; i++) {
        uint64_t size;
        r = im->store->ops->stat(im->store, rc.keep[i], &size);
        if (r < 0)
            log_err_errno(r, "image bytes missing image=%s", rc.keep[i]);
    }
    log_info("images recovered killed=%zu removed=%zu kept=%zu", rc.n_killed, rc.removed,
             rc.n_keep);
    return 0;
}

/* Opens the byte store named by the config and recovers (see
 * scheduler.h). Returns 0, YUN_E_CONFIG when chunk_size does not fit the
 * bus's max_message_size, or a negative errno from the store. */
int
sched_image_init(struct sched *s)
{
    if ((uint64_t)s->cfg.image_chunk_size + CHUNK_OVERHEAD > s->cfg.max_message_size)
        return log_err_errno(YUN_E_CONFIG,
                             "images.chunk_size %u does not fit bus.max_message_size %u: "
                             "leave at least %d bytes", s->cfg.image_chunk_size,
                             s->cfg.max_message_size, CHUNK_OVERHEAD);
    _cleanup_free_ char *dir = NULL;
    if (s->cfg.image_dir && *s->cfg.image_dir)
        dir = strdup(s->cfg.image_dir);
    else if (asprintf(&dir, "%s/images", s->cfg.state_dir) < 0)
        dir = NULL;
    if (!dir)
        return -ENOMEM;

    struct sched_images *im = calloc(1, sizeof *im);
    if (!im)
        return -ENOMEM;
    int r = sched_image_store_file_new(dir, &im->store);
    if (r < 0) {
        free(im);
        return log_err_errno(r, "cannot open the image directory '%s'", dir);
    }
    s->images = im;
    r = image_recover(s);
    if (r < 0) {
        log_err_errno(r, "cannot recover the images in '%s'", dir);
        sched_image_done(s);
        return r;
    }
    return 0;
}

/* Kills the uploads in progress (as a restart would) and frees the module.
 * The store must still be open. */
void
sched_image_done(struct sched *s)
{
    struct sched_images *im = s->images;
    if (!im)
        return;
    while (im->sessions) {
        struct image_session *se = im->sessions;
        (void)session_kill(s, se, NULL, -ECANCELED,
                           "The scheduler stopped during the upload of image '%s'.", se->id);
        /* If the store refused, the record stays saving for the next
         * start to kill: drop the session anyway. */
        if (im->sessions == se)
            session_free(im, se);
    }
    im->store = sched_image_store_free(im->store);
    free(im);
    s->images = NULL;
}

/* --- server snapshots (instance.c's part) ---------------------------------- */

/* The snapshots of servers: instance.c checks who asks and the server's
 * state, then these make the image and fill it. The bytes come from the
 * agent of the server's host (OP_SNAPSHOT_UPLOAD) and go through the same
 * session as a user's upload: store writer, md5+sha512 in one pass, the
 * format inspector at the end with the claimed format qcow2 (a snapshot is
 * a disk the tenant controlled: no backing file, no data file, sizes in
 * bounds). */

int
sched_image_snapshot_new(struct sched_call *call, struct yun_txn *txn, const char *name,
                         const char *owner, Yun__ImageProperty **props, size_t n_props,
                         uint32_t min_disk, Yun__ImageRecord **ret)
{
    struct sched *s = call->s;
    if (!yun_text_is_valid(name, IMAGE_NAME_MAX))
        return sched_call_error(call, YUN_E_INVALID,
                                "Image name '%.64s' is not 1 to %d bytes of text without "
                                "control characters.", name, IMAGE_NAME_MAX);
    if (!yun_name_is_valid(owner, PROJECT_MAX))
        return sched_call_error(call, YUN_E_INVALID, "Project '%.64s' is not a valid owner.",
                                owner);
    if (n_props > IMAGE_PROPS_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n_props; i++) {
        int r = check_property(call, props[i]->key, props[i]->value);
        if (r < 0)
            return r;
    }
    struct owner_usage count = { .owner = owner, .except = "" };
    int r = yun_txn_iterate(txn, IMAGES_DB, NULL, 0, scan_owned, &count);
    if (r < 0)
        return r;
    if (count.n >= s->cfg.image_max_per_project)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Project '%s' already owns %zu images, the most allowed.",
                                owner, count.n);
    char id[YUN_UUID_STR_SIZE];
    r = yun_uuid_new(id);
    if (r < 0)
        return r;
    uint64_t now = yun_wall_us();
    Yun__ImageRecord img = YUN__IMAGE_RECORD__INIT;
    img.id = id;
    img.name = (char *)name;
    img.owner = (char *)owner;
    img.visibility = (char *)"private";
    img.status = (char *)ST_QUEUED;
    img.disk_format = (char *)"qcow2";
    img.container_format = (char *)"bare";
    img.min_disk = min_disk;
    img.properties = props;
    img.n_properties = n_props;
    img.created_us = now;
    img.updated_us = now;
    r = put_image(txn, &img);
    if (r >= 0)
        r = name_index_add(txn, name, id);
    if (r >= 0)
        r = sched_audit_txn(txn, call, "image.create", id, 0, "A server snapshot.");
    if (r < 0)
        return r;
    /* A deep copy for the caller, which outlives this record's borrows. */
    ProtobufCMessage *copy = NULL;
    size_t size = protobuf_c_message_get_packed_size(&img.base);
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    protobuf_c_message_pack(&img.base, buf);
    copy = protobuf_c_message_unpack(&yun__image_record__descriptor, NULL, size, buf);
    if (!copy)
        return -ENOMEM;
    *ret = (Yun__ImageRecord *)copy;
    return 0;
}

static const char *
snapshot_prop(const Yun__ImageRecord *img, const char *key)
{
    for (size_t i = 0; i < img->n_properties; i++)
        if (strcmp(img->properties[i]->key, key) == 0)
            return img->properties[i]->value;
    return "";
}

int
sched_image_snapshot_chunk(struct sched_call *call, const char *instance_id,
                           const char *image_id, uint64_t offset, const void *data, size_t len,
                           bool last)
{
    struct sched *s = call->s;
    struct sched_images *im = s->images;
    if (len > s->cfg.image_chunk_size)
        return sched_call_error(call, YUN_E_TOOBIG,
                                "The chunk of %zu bytes is above the limit of %u bytes.", len,
                                s->cfg.image_chunk_size);
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        int r = yun_txn_begin(s->store, false, &txn);
        if (r >= 0)
            r = load_image(txn, image_id, &img);
        if (r == -ENOENT)
            return sched_call_error(call, YUN_E_NOIMAGE, "Image '%s' not found.", image_id);
        if (r < 0)
            return r;
    }
    if (strcmp(snapshot_prop(img, "image_type"), "snapshot") != 0 ||
        strcmp(snapshot_prop(img, "instance_uuid"), instance_id) != 0)
        return sched_call_error(call, YUN_E_DENIED,
                                "Image '%s' is not a snapshot of server '%s'.", image_id,
                                instance_id);
    struct image_session *se = session_find(im, image_id);
    if (se && se->dead)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "The upload of image '%s' failed; create a new image.", se->id);
    if (!se) {
        if (strcmp(img->status, ST_QUEUED) != 0)
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "Image '%s' is %s; only a queued image accepts an upload.",
                                    img->id, img->status);
        if (offset != 0)
            return error_offset(call, img->id, offset, 0);
        int r = session_open(call, img, len, true, &se);
        if (r < 0)
            return r;
    } else if (offset != se->received) {
        return error_offset(call, se->id, offset, se->received);
    }
    return session_take(call, se, data, len, last);
}

int
sched_image_snapshot_kill_txn(struct sched *s, struct yun_txn *txn, const char *image_id,
                              int code, const char *reason)
{
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = load_image(txn, image_id, &img);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (strcmp(img->status, ST_QUEUED) != 0 && strcmp(img->status, ST_SAVING) != 0)
        return 0;
    Yun__ImageRecord view = *img;
    view.status = (char *)ST_KILLED;
    view.updated_us = yun_wall_us();
    r = put_image(txn, &view);
    if (r >= 0)
        r = sched_audit_system(s, txn, "image.upload", image_id, code, reason);
    return r;
}

int
sched_image_snapshot_fail(struct sched *s, const char *image_id, int code, const char *reason)
{
    struct image_session *se = s->images ? session_find(s->images, image_id) : NULL;
    if (se) {
        if (se->dead)
            return session_mark_killed(s, se, NULL);
        return session_kill(s, se, NULL, code, "%s", reason);
    }
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = sched_image_snapshot_kill_txn(s, txn, image_id, code, reason);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return log_err_errno(r, "cannot mark a snapshot killed image=%s", image_id);
    log_notice("snapshot image killed image=%s reason=\"%s\"", image_id, reason);
    return 0;
}

int
sched_image_snapshot_status(struct sched *s, const char *image_id, char *buf, size_t size)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r >= 0)
        r = load_image(txn, image_id, &img);
    if (r < 0)
        return r;
    snprintf(buf, size, "%s", img->status);
    return 0;
}
