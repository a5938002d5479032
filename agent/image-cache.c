/* SPDX-License-Identifier: Apache-2.0
 * image-cache.c: the agent's cache of base images; see image-cache.h for
 * the contract and the verification policy.
 *
 * In memory the cache holds files (one per digest on disk), images (one
 * per record, each pointing at a file; two image ids with the same bytes
 * share a file) and jobs (one per image id being made ready: checked,
 * verified or fetched). Every acquire joins the image's job, or starts one
 * that runs from the loop: so callbacks always come later, and concurrent
 * acquires of one image share one fetch. A job is a small state machine:
 *
 *   START --(cached, fresh)--------------------------------> done
 *     |--(cached, unverified or changed)--> VERIFY --(ok)--> done
 *     |                                       '--(corrupt)--> QUEUED
 *     '--(not cached)-------------------------------------> QUEUED
 *   QUEUED --(a fetch slot)--> SHOW --(digest already on disk)--> VERIFY
 *                                '--> READ (chunks, RETRY) --> done
 *
 * READ keeps 'read_ahead' reads outstanding, so that the fetcher can have
 * several chunks on the wire; the fetcher completes them in the order they
 * were made, so the bytes still arrive in offset order and go through the
 * hash and the inspector as one stream. A failed or short chunk drops the
 * reads behind it (they ask for the wrong offsets) and starts again from
 * the bytes taken in.
 *
 * A download streams into ".tmp-<image>-<random>" through the sha512 and
 * the format inspector, then is fsynced and renamed to its digest; the
 * record is committed after the rename, so a crash in between leaves an
 * orphan file that the next start deletes. Eviction deletes the records
 * first and the file second, for the same reason. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent.h"
#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "image-cache.h"
#include "image-format.h"
#include "log.h"
#include "loop.h"
#include "store.h"
#include "util.h"

YUN_LOG_MODULE("agent.image");

#define FETCH_PARALLEL 2       /* images downloaded at once */
#define FETCH_RETRIES 3        /* transient failures in a row per chunk */
#define FETCH_RETRY_MS 250     /* times the retry number */
#define TMP_PREFIX ".tmp-"
#define DIR_MODE 0711          /* qemu may traverse it, nobody may list it */
#define FILE_MODE 0644
#define MESSAGE_MAX 512

/* What identifies a file's contents cheaply: any write through the file
 * system changes one of these. */
struct file_sig {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
};

struct cache_file {
    struct cache_file *next;
    char sha512[AGENT_IMAGE_SHA512_HEX + 1];
    uint64_t size;
    bool present;          /* on disk; false once deleted as corrupt */
    bool verified;         /* read back and matched in this run */
    struct file_sig sig;   /* stat at that verification */
    unsigned busy;         /* jobs reading it now: not evicted meanwhile */
};

struct cache_image {
    struct cache_image *next;   /* sorted by id */
    char id[YUN_UUID_STR_SIZE];
    struct cache_file *file;
    char disk_format[AGENT_IMAGE_FORMAT_MAX + 1];
    uint64_t virtual_size;
    uint64_t last_used_us;
    uint64_t cached_us;
    char **users;
    size_t n_users;
};

enum job_phase {
    JOB_START,
    JOB_VERIFY,
    JOB_QUEUED,
    JOB_SHOW,
    JOB_READ,
    JOB_RETRY,
};

struct waiter {
    struct waiter *next;
    bool refused;          /* the image has too many users to add this one */
    char user[AGENT_IMAGE_USER_MAX + 1];
    agent_image_ready_fn cb;
    void *data;
};

struct job {
    struct job *next;
    struct agent_image_cache *c;  /* NULL once detached, while it answers */
    char image_id[YUN_UUID_STR_SIZE];
    enum job_phase phase;
    struct waiter *waiters;       /* in arrival order */
    size_t n_waiters;
    int timer;                    /* START, VERIFY steps, RETRY; -1 if none */
    bool fetching;                /* holds a fetch slot */
    bool refetch;                 /* the cached file failed: never adopt it again */
    struct agent_image_info info; /* what is expected of the bytes */
    struct cache_file *file;      /* VERIFY: the file read (busy held) */
    struct file_sig sig;          /* VERIFY: the file's stat when opened */
    int64_t started_ms;
    /* The stream being checked, fetched or read back. */
    EVP_MD_CTX *md;
    struct yun_imgfmt_inspector *insp;
    int fd;
    char *tmp;                    /* READ: the temp file, unlinked on failure */
    uint64_t offset;              /* bytes taken in so far */
    uint64_t next_offset;         /* READ: where the next read asks from */
    unsigned reads;               /* READ: reads outstanding, from 'offset' on */
    uint32_t chunk;               /* READ: bytes per read (a short reply lowers it) */
    uint8_t *buf;                 /* VERIFY: read buffer */
    unsigned retries;
};

struct agent_image_cache {
    struct yun_loop *loop;
    struct yun_store *store;
    struct agent_image_fetcher *fetcher;
    char *dir;
    int dir_fd;
    uint64_t max_size;
    uint64_t max_virtual_size;
    uint32_t chunk_size;
    unsigned read_ahead;          /* reads outstanding per download */
    bool verify_every_use;
    bool freeing;

    struct cache_file *files;
    struct cache_image *images;
    struct job *jobs;
    size_t n_jobs, n_fetching;
    uint64_t last_stamp;          /* last_used_us values only grow */
    bool over_cap_logged;         /* "in-use images exceed the cap", once */
    struct agent_image_cache_stats counters;

    Yun__CachedImage *report_items;
    Yun__CachedImage **report_ptrs;
    size_t report_cap;
};

static void fetch_start_queued(struct agent_image_cache *c);
static void job_fail(struct job *job, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- small helpers ---- */

static bool
sha512_hex_is_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == AGENT_IMAGE_SHA512_HEX;
}

static bool
transient_error(int r)
{
    return r == YUN_E_UNREACHABLE || r == -EAGAIN || r == -ETIMEDOUT;
}

/* A wall-clock stamp that never repeats or goes back within a run, so LRU
 * order follows the order of uses even inside one microsecond. */
static uint64_t
stamp(struct agent_image_cache *c)
{
    uint64_t now = yun_wall_us();
    if (now <= c->last_stamp)
        now = c->last_stamp + 1;
    return c->last_stamp = now;
}

int
agent_image_cache_path(const struct agent_image_cache *c, const char *sha512, char *buf,
                       size_t size)
{
    int n = snprintf(buf, size, "%s/%s", c->dir, sha512);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static char *
file_path(const struct agent_image_cache *c, const struct cache_file *f)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", c->dir, f->sha512) < 0 ? NULL : p;
}

static void
sig_from_stat(struct file_sig *s, const struct stat *st)
{
    *s = (struct file_sig){
        .dev = st->st_dev, .ino = st->st_ino, .size = st->st_size,
        .mtim = st->st_mtim, .ctim = st->st_ctim,
    };
}

static bool
sig_equal(const struct file_sig *a, const struct file_sig *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec &&
           a->ctim.tv_sec == b->ctim.tv_sec && a->ctim.tv_nsec == b->ctim.tv_nsec;
}

/* The file may be handed out without reading it: verified in this run and
 * untouched since. */
static bool
file_is_fresh(const struct agent_image_cache *c, const struct cache_file *f)
{
    struct stat st;
    struct file_sig now;
    if (!f->present || !f->verified || fstatat(c->dir_fd, f->sha512, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return false;
    sig_from_stat(&now, &st);
    return S_ISREG(st.st_mode) && sig_equal(&now, &f->sig);
}

static struct cache_file *
find_file(const struct agent_image_cache *c, const char *sha512)
{
    for (struct cache_file *f = c->files; f; f = f->next)
        if (strcmp(f->sha512, sha512) == 0)
            return f;
    return NULL;
}

static struct cache_file *
file_get(struct agent_image_cache *c, const char *sha512, uint64_t size)
{
    struct cache_file *f = find_file(c, sha512);
    if (f)
        return f;
    f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    snprintf(f->sha512, sizeof f->sha512, "%s", sha512);
    f->size = size;
    f->next = c->files;
    c->files = f;
    return f;
}

static void
file_unlink_list(struct agent_image_cache *c, struct cache_file *f)
{
    for (struct cache_file **p = &c->files; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            free(f);
            return;
        }
}

static struct cache_image *
find_image(const struct agent_image_cache *c, const char *id)
{
    for (struct cache_image *i = c->images; i; i = i->next)
        if (strcmp(i->id, id) == 0)
            return i;
    return NULL;
}

static void
image_insert(struct agent_image_cache *c, struct cache_image *img)
{
    struct cache_image **p = &c->images;
    while (*p && strcmp((*p)->id, img->id) < 0)
        p = &(*p)->next;
    img->next = *p;
    *p = img;
}

static void
users_free(char **users, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(users[i]);
    free(users);
}

static struct cache_image *
image_free(struct cache_image *img)
{
    if (img)
        users_free(img->users, img->n_users);
    free(img);
    return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct cache_image *, image_free)

static void
image_unlink_list(struct agent_image_cache *c, struct cache_image *img)
{
    for (struct cache_image **p = &c->images; *p; p = &(*p)->next)
        if (*p == img) {
            *p = img->next;
            image_free(img);
            return;
        }
}

static bool
image_has_user(const struct cache_image *img, const char *user)
{
    for (size_t i = 0; i < img->n_users; i++)
        if (strcmp(img->users[i], user) == 0)
            return true;
    return false;
}

static bool
file_in_use(const struct agent_image_cache *c, const struct cache_file *f)
{
    for (const struct cache_image *i = c->images; i; i = i->next)
        if (i->file == f && i->n_users > 0)
            return true;
    return false;
}

/* Some job is about to read the file or to hand out one of its images. */
static bool
file_pinned(const struct agent_image_cache *c, const struct cache_file *f)
{
    if (f->busy > 0)
        return true;
    for (const struct job *j = c->jobs; j; j = j->next) {
        const struct cache_image *img = find_image(c, j->image_id);
        if (img && img->file == f)
            return true;
    }
    return false;
}

static uint64_t
file_last_used(const struct agent_image_cache *c, const struct cache_file *f)
{
    uint64_t t = 0;
    for (const struct cache_image *i = c->images; i; i = i->next)
        if (i->file == f && i->last_used_us > t)
            t = i->last_used_us;
    return t;
}

static uint64_t
cached_bytes(const struct agent_image_cache *c, uint64_t *ret_in_use)
{
    uint64_t total = 0, used = 0;
    for (const struct cache_file *f = c->files; f; f = f->next) {
        if (!f->present)
            continue;
        total += f->size;
        if (ret_in_use && file_in_use(c, f))
            used += f->size;
    }
    if (ret_in_use)
        *ret_in_use = used;
    return total;
}

/* ---- records ---- */

static int
image_store(struct agent_image_cache *c, const struct cache_image *img, char **users,
            size_t n_users, uint64_t last_used_us)
{
    Yun__CachedImageRecord rec = YUN__CACHED_IMAGE_RECORD__INIT;
    rec.image_id = (char *)img->id;
    rec.os_hash_value = img->file->sha512;
    rec.size = img->file->size;
    rec.disk_format = (char *)img->disk_format;
    rec.virtual_size = img->virtual_size;
    rec.last_used_us = last_used_us;
    rec.users = users;
    rec.n_users = n_users;
    rec.cached_us = img->cached_us;

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(c->store, true, &txn);
    if (r < 0)
        return r;
    r = yun_txn_put_msg(txn, AGENT_IMAGE_CACHE_DB, img->id, &rec.base);
    if (r < 0)
        return r;
    return yun_txn_commit(TAKE_PTR(txn));
}

/* Deletes the records of every image of 'f', then the file: a crash in
 * between leaves an orphan file, which the next start removes. */
static int
evict_file(struct agent_image_cache *c, struct cache_file *f, const char *why)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(c->store, true, &txn);
    if (r < 0)
        return r;
    size_t n = 0;
    for (struct cache_image *i = c->images; i; i = i->next) {
        if (i->file != f)
            continue;
        r = yun_txn_del(txn, AGENT_IMAGE_CACHE_DB, i->id, strlen(i->id));
        if (r < 0 && r != -ENOENT)
            return r;
        n++;
    }
    r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    if (f->present && unlinkat(c->dir_fd, f->sha512, 0) < 0 && errno != ENOENT)
        log_warn_errno(-errno, "cannot delete an evicted image file sha512=%.16s, ignoring",
                       f->sha512);
    log_info("image evicted sha512=%.16s size=%" PRIu64 " images=%zu reason=%s", f->sha512,
             f->size, n, why);
    for (struct cache_image *i = c->images, *next; i; i = next) {
        next = i->next;
        if (i->file == f)
            image_unlink_list(c, i);
    }
    file_unlink_list(c, f);
    c->counters.evictions++;
    return 0;
}

/* The least recently used file no instance uses and no job needs. */
static struct cache_file *
lru_victim(const struct agent_image_cache *c)
{
    struct cache_file *best = NULL;
    uint64_t best_t = UINT64_MAX;
    for (struct cache_file *f = c->files; f; f = f->next) {
        if (!f->present || file_in_use(c, f) || file_pinned(c, f))
            continue;
        uint64_t t = file_last_used(c, f);
        if (t < best_t) {
            best = f;
            best_t = t;
        }
    }
    return best;
}

int
agent_image_cache_gc(struct agent_image_cache *c)
{
    int n = 0;
    for (;;) {
        uint64_t in_use, total = cached_bytes(c, &in_use);
        if (total <= c->max_size) {
            c->over_cap_logged = false;
            return n;
        }
        struct cache_file *v = lru_victim(c);
        if (!v) {
            if (!c->over_cap_logged)
                log_warn("images in use exceed the cache cap; keeping them bytes=%" PRIu64
                         " in_use=%" PRIu64 " cap=%" PRIu64, total, in_use, c->max_size);
            c->over_cap_logged = true;
            return n;
        }
        int r = evict_file(c, v, "cap");
        if (r < 0)
            return log_err_errno(r, "cannot evict image file sha512=%.16s", v->sha512);
        n++;
    }
}

/* Frees disk space for a download of 'need' bytes, evicting unused images
 * while the file system has less. */
static int
make_room(struct agent_image_cache *c, uint64_t need)
{
    for (;;) {
        struct statvfs sv;
        if (fstatvfs(c->dir_fd, &sv) < 0)
            return -errno;
        if ((uint64_t)sv.f_bavail * sv.f_frsize >= need)
            return 0;
        struct cache_file *v = lru_victim(c);
        if (!v)
            return -ENOSPC;
        int r = evict_file(c, v, "disk-full");
        if (r < 0)
            return r;
    }
}

/* ---- jobs ---- */

static void
stream_done(struct job *job, bool keep_tmp)
{
    if (job->md)
        EVP_MD_CTX_free(job->md);
    job->md = NULL;
    job->insp = yun_imgfmt_inspector_free(job->insp);
    if (job->fd >= 0)
        (void)close(job->fd);
    job->fd = -1;
    if (job->tmp && !keep_tmp && unlink(job->tmp) < 0 && errno != ENOENT)
        log_warn_errno(-errno, "cannot delete the temp file '%s', ignoring", job->tmp);
    free(job->tmp);
    job->tmp = NULL;
    free(job->buf);
    job->buf = NULL;
    job->offset = 0;
}

static int
stream_init(struct job *job)
{
    job->md = EVP_MD_CTX_new();
    if (!job->md || EVP_DigestInit_ex(job->md, EVP_sha512(), NULL) != 1)
        return -ENOMEM;
    return yun_imgfmt_inspector_new(&job->insp);
}

static int
stream_feed(struct job *job, const void *data, size_t size)
{
    if (EVP_DigestUpdate(job->md, data, size) != 1)
        return -EIO;
    int r = yun_imgfmt_feed(job->insp, data, size);
    if (r < 0)
        return r;
    job->offset += size;
    return 0;
}

/* Judges the whole stream against what was announced. Returns 0 and the
 * inspector's result, or an error with a sentence in 'msg'. */
static int
stream_check(struct job *job, const char *what, struct yun_imgfmt_result *res, char *msg,
             size_t msg_size)
{
    const struct agent_image_info *info = &job->info;
    if (job->offset != info->size) {
        snprintf(msg, msg_size, "%s has %" PRIu64 " bytes where %" PRIu64 " were announced.",
                 what, job->offset, info->size);
        return -EBADMSG;
    }
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_size = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    if (EVP_DigestFinal_ex(job->md, md, &md_size) != 1)
        return -EIO;
    yun_hex_encode(md, md_size, hex);
    if (strcmp(hex, info->sha512) != 0) {
        snprintf(msg, msg_size,
                 "%s failed verification: its sha512 is '%.16s...' but '%.16s...' was "
                 "announced.", what, hex, info->sha512);
        return -EBADMSG;
    }
    struct yun_imgfmt_policy policy = {
        .claimed_format = info->disk_format,
        .max_virtual_size = job->c->max_virtual_size,
    };
    int r = yun_imgfmt_finish(job->insp, &policy, res);
    if (r < 0) {
        snprintf(msg, msg_size, "%s could not be inspected: %s", what, yun_strerror(r));
        return r;
    }
    if (res->reject != YUN_IMGFMT_REJECT_NONE) {
        snprintf(msg, msg_size, "%s was refused by the format inspector (%s): %s", what,
                 yun_imgfmt_reject_to_string(res->reject), res->message);
        return -EMEDIUMTYPE;
    }
    return 0;
}

static struct job *
find_job(const struct agent_image_cache *c, const char *id)
{
    for (struct job *j = c->jobs; j; j = j->next)
        if (strcmp(j->image_id, id) == 0)
            return j;
    return NULL;
}

/* Takes the job out of the cache: its fetcher requests, timer, fetch slot
 * and file go back. Afterwards only its waiters and its own strings are
 * used, so a waiter's callback may call into the cache freely. */
static void
job_detach(struct job *job)
{
    struct agent_image_cache *c = job->c;
    if (!c)
        return;
    c->fetcher->ops->cancel(c->fetcher, job);
    if (job->timer >= 0)
        (void)yun_loop_remove_timer(c->loop, job->timer);
    job->timer = -1;
    if (job->fetching)
        c->n_fetching--;
    job->fetching = false;
    if (job->file)
        job->file->busy--;
    job->file = NULL;
    for (struct job **p = &c->jobs; *p; p = &(*p)->next)
        if (*p == job) {
            *p = job->next;
            c->n_jobs--;
            break;
        }
    job->c = NULL;
}

static void
job_free(struct job *job)
{
    job_detach(job);
    stream_done(job, false);
    while (job->waiters) {
        struct waiter *w = job->waiters;
        job->waiters = w->next;
        free(w);
    }
    free(job);
}

/* Answers every waiter with 'ready' (user filled in per waiter), or, if
 * it was refused as a user, with -EBUSY. */
static void
job_answer(struct job *job, struct agent_image_ready *ready)
{
    char msg[128];
    snprintf(msg, sizeof msg, "Image '%s' has %d users, the most it may have.", job->image_id,
             AGENT_IMAGE_USERS_MAX);
    struct agent_image_ready busy = {
        .image_id = job->image_id, .error = -EBUSY, .message = msg,
    };
    while (job->waiters) {
        struct waiter *w = job->waiters;
        struct agent_image_ready *r = w->refused ? &busy : ready;
        job->waiters = w->next;
        job->n_waiters--;
        r->user = w->user;
        w->cb(r, w->data);
        free(w);
    }
}

static void
job_fail(struct job *job, int r, const char *fmt, ...)
{
    char msg[MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct agent_image_cache *c = job->c;
    log_err_errno(r, "image not made ready image=%s waiters=%zu reason=\"%s\"", job->image_id,
                  job->n_waiters, msg);
    stream_done(job, false);
    job_detach(job);
    if (c && !c->freeing)
        fetch_start_queued(c);
    struct agent_image_ready ready = {
        .image_id = job->image_id, .error = r, .message = msg,
    };
    job_answer(job, &ready);
    job_free(job);
}

/* The image is ready in 'f': record it with the waiters as users, then
 * answer them. 'created_file' says the file was just added (so the cap is
 * enforced now). */
static void
job_succeed(struct job *job, struct cache_file *f, uint64_t virtual_size, bool created_file)
{
    struct agent_image_cache *c = job->c;
    struct cache_image *img = find_image(c, job->image_id);
    _cleanup_(image_freep) struct cache_image *fresh = NULL;
    if (!img || img->file != f) {
        fresh = calloc(1, sizeof *fresh);
        if (!fresh) {
            job_fail(job, -ENOMEM, "Out of memory.");
            return;
        }
        snprintf(fresh->id, sizeof fresh->id, "%s", job->image_id);
        fresh->file = f;
        fresh->cached_us = img && img->cached_us && !created_file ? img->cached_us
                                                                  : yun_wall_us();
        /* Users of the old record keep the image: same id, same bytes. */
        if (img && img->n_users) {
            fresh->users = calloc(img->n_users, sizeof *fresh->users);
            if (!fresh->users) {
                job_fail(job, -ENOMEM, "Out of memory.");
                return;
            }
            for (size_t i = 0; i < img->n_users; i++) {
                fresh->users[i] = strdup(img->users[i]);
                if (!fresh->users[i]) {
                    job_fail(job, -ENOMEM, "Out of memory.");
                    return;
                }
                fresh->n_users++;
            }
        }
    }
    struct cache_image *target = fresh ? fresh : img;
    snprintf(target->disk_format, sizeof target->disk_format, "%s", job->info.disk_format);
    target->virtual_size = virtual_size;

    /* The new user set: the record's users and every waiter's, once. */
    size_t cap = target->n_users + job->n_waiters;
    char **users = calloc(cap ? cap : 1, sizeof *users);
    size_t n = 0;
    if (!users) {
        job_fail(job, -ENOMEM, "Out of memory.");
        return;
    }
    for (size_t i = 0; i < target->n_users; i++)
        users[n++] = target->users[i];
    size_t kept = n; /* borrowed from 'target' */
    for (struct waiter *w = job->waiters; w; w = w->next) {
        bool seen = false;
        for (size_t i = 0; i < n && !seen; i++)
            seen = strcmp(users[i], w->user) == 0;
        if (!seen && n < AGENT_IMAGE_USERS_MAX)
            users[n++] = w->user;
        else if (!seen)
            w->refused = true;
    }
    uint64_t now = stamp(c);
    int r = image_store(c, target, users, n, now);
    if (r < 0) {
        free(users);
        job_fail(job, r, "The cache record of image '%s' cannot be written: %s",
                 job->image_id, yun_strerror(r));
        return;
    }
    for (size_t i = kept; i < n; i++) {
        users[i] = strdup(users[i]);
        if (!users[i]) {
            /* Recorded already; memory catches up at the next start. */
            n = i;
            break;
        }
    }
    free(target->users);
    target->users = users;
    target->n_users = n;
    target->last_used_us = now;
    if (fresh) {
        if (img)
            image_unlink_list(c, img);
        image_insert(c, TAKE_PTR(fresh));
    }

    char *path = file_path(c, f);
    char sha512[AGENT_IMAGE_SHA512_HEX + 1];
    snprintf(sha512, sizeof sha512, "%s", f->sha512);
    log_info("image ready image=%s sha512=%.16s users=%zu waiters=%zu ms=%" PRId64,
             job->image_id, sha512, n, job->n_waiters, yun_now_ms() - job->started_ms);
    job_detach(job);
    if (created_file)
        (void)agent_image_cache_gc(c);
    fetch_start_queued(c);

    struct agent_image_ready ready = {
        .image_id = job->image_id,
        .error = path ? 0 : -ENOMEM,
        .message = path ? "" : "Out of memory.",
        .path = path,
        .sha512 = path ? sha512 : NULL,
        .disk_format = path ? job->info.disk_format : NULL,
        .size = job->info.size,
        .virtual_size = virtual_size,
    };
    job_answer(job, &ready);
    free(path);
    job_free(job);
}

static void fetch_enqueue(struct job *job);

/* The file failed its check: delete it (unless the path already holds
 * another file, e.g. a fresh download of the same digest) and fetch the
 * image again. */
static void
verify_failed(struct job *job, int r, const char *msg)
{
    struct agent_image_cache *c = job->c;
    struct cache_file *f = job->file;
    struct stat st;
    struct file_sig now;
    c->counters.verify_failures++;
    log_warn_errno(r, "cached image file failed verification, fetching it again image=%s "
                      "sha512=%.16s reason=\"%s\"", job->image_id, f->sha512, msg);
    if (fstatat(c->dir_fd, f->sha512, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        sig_from_stat(&now, &st);
        if (now.dev == job->sig.dev && now.ino == job->sig.ino) {
            if (unlinkat(c->dir_fd, f->sha512, 0) < 0 && errno != ENOENT)
                log_warn_errno(-errno, "cannot delete a corrupt image file sha512=%.16s",
                               f->sha512);
            f->present = false;
            f->verified = false;
        }
    } else {
        f->present = false;
        f->verified = false;
    }
    f->busy--;
    job->file = NULL;
    stream_done(job, false);
    job->refetch = true;
    fetch_enqueue(job);
}

/* Reads one chunk of the file under verification. Returns 1 to be called
 * again, 0 when the job moved on (or ended). */
static int
verify_step(struct job *job)
{
    struct cache_file *f = job->file;
    uint64_t left = f->size - job->offset;
    size_t want = left < job->c->chunk_size ? (size_t)left : job->c->chunk_size;
    char msg[MESSAGE_MAX];
    ssize_t n = read(job->fd, job->buf, want);
    if (n < 0 && errno == EINTR)
        return 1;
    if (n < 0) {
        int r = -errno;
        snprintf(msg, sizeof msg, "The file cannot be read: %s", strerror(-r));
        verify_failed(job, r, msg);
        return 0;
    }
    if (n == 0) {
        snprintf(msg, sizeof msg, "The file ends at %" PRIu64 " bytes.", job->offset);
        verify_failed(job, -EBADMSG, msg);
        return 0;
    }
    int r = stream_feed(job, job->buf, (size_t)n);
    if (r < 0) {
        snprintf(msg, sizeof msg, "The file cannot be inspected: %s", yun_strerror(r));
        verify_failed(job, r, msg);
        return 0;
    }
    if (job->offset < f->size)
        return 1;

    struct yun_imgfmt_result res;
    char what[80];
    snprintf(what, sizeof what, "Cached image '%s'", job->image_id);
    r = stream_check(job, what, &res, msg, sizeof msg);
    if (r < 0) {
        verify_failed(job, r, msg);
        return 0;
    }
    f->verified = true;
    f->sig = job->sig;
    stream_done(job, false);
    job_succeed(job, f, res.virtual_size, false);
    return 0;
}

static int64_t job_on_timer(struct yun_loop *loop, int id, void *data);

/* Reads 'f' back whole, checking it against 'job->info'. */
static void
verify_begin(struct job *job, struct cache_file *f)
{
    struct agent_image_cache *c = job->c;
    char msg[MESSAGE_MAX];
    struct stat st;
    job->phase = JOB_VERIFY;
    job->file = f;
    f->busy++;
    job->fd = openat(c->dir_fd, f->sha512, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (job->fd < 0) {
        int r = -errno;
        snprintf(msg, sizeof msg, "The file cannot be opened: %s", strerror(-r));
        job->sig = (struct file_sig){ 0 };
        verify_failed(job, r, msg);
        return;
    }
    if (fstat(job->fd, &st) < 0)
        st = (struct stat){ .st_mode = 0 };
    sig_from_stat(&job->sig, &st);
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != f->size) {
        snprintf(msg, sizeof msg, "The file has %lld bytes where %" PRIu64 " are expected.",
                 (long long)st.st_size, f->size);
        verify_failed(job, -EBADMSG, msg);
        return;
    }
    (void)posix_fadvise(job->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    int r = stream_init(job);
    if (r >= 0) {
        job->buf = malloc(c->chunk_size);
        r = job->buf ? 0 : -ENOMEM;
    }
    if (r >= 0) {
        job->timer = yun_loop_add_timer(c->loop, 0, job_on_timer, job, NULL);
        r = job->timer < 0 ? job->timer : 0;
    }
    if (r < 0)
        job_fail(job, r, "Image '%s' cannot be verified: %s", job->image_id, yun_strerror(r));
}

static void read_fill(struct job *job);

/* Drops the reads outstanding: the next ones ask from 'offset' on. */
static void
read_restart(struct job *job)
{
    struct agent_image_cache *c = job->c;
    c->fetcher->ops->cancel(c->fetcher, job);
    job->reads = 0;
    job->next_offset = job->offset;
}

static void
read_done(int r, const char *message, const struct agent_image_chunk *chunk, void *data)
{
    struct job *job = data;
    struct agent_image_cache *c = job->c;
    const struct agent_image_info *info = &job->info;

    job->reads--;
    if (r < 0 && transient_error(r) && job->retries < FETCH_RETRIES) {
        read_restart(job);
        job->retries++;
        log_info("image chunk failed, retrying image=%s offset=%" PRIu64 " retry=%u "
                 "reason=\"%s\"", job->image_id, job->offset, job->retries, message);
        job->phase = JOB_RETRY;
        job->timer = yun_loop_add_timer(c->loop, FETCH_RETRY_MS * job->retries, job_on_timer,
                                        job, NULL);
        if (job->timer < 0)
            job_fail(job, job->timer, "Image '%s' cannot be fetched: %s", job->image_id,
                     yun_strerror(job->timer));
        return;
    }
    if (r < 0) {
        job_fail(job, r, "Image '%s' cannot be fetched at offset %" PRIu64 ": %s",
                 job->image_id, job->offset, message);
        return;
    }

    /* Every read outstanding asked for 'chunk' bytes or the rest. */
    uint64_t left = info->size - job->offset;
    uint64_t asked = left < job->chunk ? left : job->chunk;
    if (chunk->offset != job->offset || chunk->size > asked ||
        (chunk->size == 0 && !chunk->eof) ||
        (chunk->total_size && chunk->total_size != info->size) ||
        (chunk->sha512 && *chunk->sha512 && strcmp(chunk->sha512, info->sha512) != 0)) {
        job_fail(job, -EBADMSG,
                 "The scheduler sent image '%s' inconsistently: %zu bytes at offset %" PRIu64
                 " of %" PRIu64 " when offset %" PRIu64 " of %" PRIu64 " was asked.",
                 job->image_id, chunk->size, chunk->offset, chunk->total_size, job->offset,
                 info->size);
        return;
    }
    const uint8_t *p = chunk->data;
    for (size_t done = 0; done < chunk->size;) {
        ssize_t w = write(job->fd, p + done, chunk->size - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            job_fail(job, -errno, "Image '%s' cannot be written to '%s': %s",
                     job->image_id, c->dir, strerror(errno));
            return;
        }
        done += (size_t)w;
    }
    uint64_t start = job->offset;
    r = stream_feed(job, chunk->data, chunk->size);
    if (r < 0) {
        job_fail(job, r, "Image '%s' cannot be inspected: %s", job->image_id,
                 yun_strerror(r));
        return;
    }
    /* Start writeback now, so the final fsync does not wait for it all. */
    (void)sync_file_range(job->fd, (off_t)start, (off_t)chunk->size, SYNC_FILE_RANGE_WRITE);
    job->retries = 0;
    c->counters.bytes_fetched += chunk->size;

    if (job->offset < info->size) {
        if (chunk->eof) {
            job_fail(job, -EBADMSG,
                     "The scheduler ended image '%s' at %" PRIu64 " of %" PRIu64
                     " bytes.", job->image_id, job->offset, info->size);
            return;
        }
        if (chunk->size < asked) {
            /* The scheduler's limit is below ours: go on at its size. */
            job->chunk = (uint32_t)chunk->size;
            read_restart(job);
        }
        read_fill(job);
        return;
    }

    /* Whole: judge, then make it durable under its digest. */
    struct yun_imgfmt_result res;
    char msg[MESSAGE_MAX], what[80];
    snprintf(what, sizeof what, "Image '%s'", job->image_id);
    r = stream_check(job, what, &res, msg, sizeof msg);
    if (r < 0) {
        job_fail(job, r, "%s", msg);
        return;
    }
    if (fsync(job->fd) < 0) {
        job_fail(job, -errno, "Image '%s' cannot be written to '%s': %s", job->image_id,
                 c->dir, strerror(errno));
        return;
    }
    (void)close(job->fd);
    job->fd = -1;
    char final[4096];
    r = agent_image_cache_path(c, info->sha512, final, sizeof final);
    if (r >= 0 && rename(job->tmp, final) < 0)
        r = -errno;
    if (r < 0) {
        job_fail(job, r, "Image '%s' cannot be stored in '%s': %s", job->image_id,
                 c->dir, strerror(-r));
        return;
    }
    free(job->tmp);
    job->tmp = NULL;
    if (fsync(c->dir_fd) < 0)
        log_warn_errno(-errno, "cannot sync the image cache dir '%s', ignoring", c->dir);

    struct stat st;
    struct cache_file *f = file_get(c, info->sha512, info->size);
    if (!f) {
        job_fail(job, -ENOMEM, "Out of memory.");
        return;
    }
    f->size = info->size;
    f->present = true;
    /* rename() may change the ctime: the signature is taken after it. */
    f->verified = fstatat(c->dir_fd, f->sha512, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (f->verified)
        sig_from_stat(&f->sig, &st);
    c->counters.fetches++;
    log_info("image fetched image=%s sha512=%.16s size=%" PRIu64 " format=%s ms=%" PRId64,
             job->image_id, f->sha512, f->size, info->disk_format,
             yun_now_ms() - job->started_ms);
    stream_done(job, false);
    job_succeed(job, f, res.virtual_size, true);
}

/* Asks for the next chunks until 'read_ahead' reads are outstanding or
 * the image is asked for whole. */
static void
read_fill(struct job *job)
{
    struct agent_image_cache *c = job->c;
    job->phase = JOB_READ;
    while (job->reads < c->read_ahead && job->next_offset < job->info.size) {
        uint64_t left = job->info.size - job->next_offset;
        uint32_t len = left < job->chunk ? (uint32_t)left : job->chunk;
        int r = c->fetcher->ops->read(c->fetcher, job->image_id, job->next_offset, len,
                                      read_done, job);
        if (r < 0) {
            job_fail(job, r, "Image '%s' cannot be fetched: %s", job->image_id,
                     yun_strerror(r));
            return;
        }
        job->next_offset += len;
        job->reads++;
    }
}

static void
show_done(int r, const char *message, const struct agent_image_info *info, void *data)
{
    struct job *job = data;
    struct agent_image_cache *c = job->c;
    if (r < 0) {
        job_fail(job, r, "Image '%s' cannot be fetched: %s", job->image_id, message);
        return;
    }
    if (!sha512_hex_is_valid(info->sha512) || info->size == 0 ||
        yun_imgfmt_from_string(info->disk_format) < 0) {
        job_fail(job, -EBADMSG,
                 "The scheduler described image '%s' with size %" PRIu64
                 ", sha512 '%.16s' and disk format '%s', which cannot be used.",
                 job->image_id, info->size, info->sha512, info->disk_format);
        return;
    }
    job->info = *info;

    /* The same bytes under another image id: read back the file there. */
    struct cache_file *f = find_file(c, info->sha512);
    if (f && f->present && !job->refetch && f->size == info->size) {
        job->fetching = false;
        c->n_fetching--;
        verify_begin(job, f);
        fetch_start_queued(c);
        return;
    }

    r = make_room(c, info->size);
    if (r < 0) {
        job_fail(job, r, "Image '%s' (%" PRIu64 " bytes) does not fit in '%s': %s",
                 job->image_id, info->size, c->dir, yun_strerror(r));
        return;
    }
    char rid[17];
    yun_request_id_new(rid);
    if (asprintf(&job->tmp, "%s/" TMP_PREFIX "%s-%s", c->dir, job->image_id, rid) < 0) {
        job->tmp = NULL;
        job_fail(job, -ENOMEM, "Out of memory.");
        return;
    }
    job->fd = open(job->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, FILE_MODE);
    if (job->fd < 0) {
        r = -errno;
        free(job->tmp);
        job->tmp = NULL;
        job_fail(job, r, "Image '%s' cannot be written to '%s': %s", job->image_id,
                 c->dir, strerror(-r));
        return;
    }
    r = stream_init(job);
    if (r < 0) {
        job_fail(job, r, "Out of memory.");
        return;
    }
    log_info("image fetch started image=%s sha512=%.16s size=%" PRIu64 " format=%s%s",
             job->image_id, info->sha512, info->size, info->disk_format,
             job->refetch ? " refetch=yes" : "");
    job->next_offset = 0;
    job->reads = 0;
    job->chunk = c->chunk_size;
    read_fill(job);
}

static void
fetch_begin(struct job *job)
{
    struct agent_image_cache *c = job->c;
    job->phase = JOB_SHOW;
    job->fetching = true;
    c->n_fetching++;
    int r = c->fetcher->ops->show(c->fetcher, job->image_id, show_done, job);
    if (r < 0)
        job_fail(job, r, "Image '%s' cannot be fetched: %s", job->image_id, yun_strerror(r));
}

/* Starts queued fetches, oldest first, while slots are free. */
static void
fetch_start_queued(struct agent_image_cache *c)
{
    for (;;) {
        if (c->n_fetching >= FETCH_PARALLEL)
            return;
        struct job *next = NULL;
        for (struct job *j = c->jobs; j; j = j->next)
            if (j->phase == JOB_QUEUED)
                next = j; /* jobs are pushed at the head: the last is the oldest */
        if (!next)
            return;
        fetch_begin(next);
    }
}

static void
fetch_enqueue(struct job *job)
{
    job->phase = JOB_QUEUED;
    fetch_start_queued(job->c);
}

/* First step of every job, from the loop. */
static void
job_begin(struct job *job)
{
    struct agent_image_cache *c = job->c;
    struct cache_image *img = find_image(c, job->image_id);
    if (!img || !img->file->present) {
        fetch_enqueue(job);
        return;
    }
    job->info = (struct agent_image_info){ .size = img->file->size,
                                           .virtual_size = img->virtual_size };
    snprintf(job->info.sha512, sizeof job->info.sha512, "%s", img->file->sha512);
    snprintf(job->info.disk_format, sizeof job->info.disk_format, "%s", img->disk_format);
    if (!c->verify_every_use && file_is_fresh(c, img->file)) {
        job_succeed(job, img->file, img->virtual_size, false);
        return;
    }
    verify_begin(job, img->file);
}

static int64_t
job_on_timer(struct yun_loop *loop, int id, void *data)
{
    struct job *job = data;
    job->timer = -1;
    switch (job->phase) {
    case JOB_START:
        job_begin(job);
        break;
    case JOB_VERIFY:
        if (verify_step(job) > 0) {
            job->timer = id;
            return 0;
        }
        break;
    case JOB_RETRY:
        read_fill(job);
        break;
    case JOB_QUEUED:
    case JOB_SHOW:
    case JOB_READ:
        break;
    }
    return YUN_LOOP_NOMORE;
}

/* ---- the API ---- */

int
agent_image_cache_acquire(struct agent_image_cache *c, const char *image_id, const char *user,
                          agent_image_ready_fn cb, void *data)
{
    if (!c || !cb || !image_id || !yun_uuid_is_valid(image_id) || !user ||
        !yun_name_is_valid(user, AGENT_IMAGE_USER_MAX))
        return -EINVAL;
    if (c->freeing)
        return -ESHUTDOWN;
    struct job *job = find_job(c, image_id);
    if (job && job->n_waiters >= AGENT_IMAGE_WAITERS_MAX)
        return -EBUSY;
    if (!job && c->n_jobs >= AGENT_IMAGE_JOBS_MAX)
        return -EBUSY;
    struct waiter *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    snprintf(w->user, sizeof w->user, "%s", user);
    w->cb = cb;
    w->data = data;
    if (!job) {
        job = calloc(1, sizeof *job);
        if (!job) {
            free(w);
            return -ENOMEM;
        }
        snprintf(job->image_id, sizeof job->image_id, "%s", image_id);
        job->fd = -1;
        job->phase = JOB_START;
        job->started_ms = yun_now_ms();
        job->timer = yun_loop_add_timer(c->loop, 0, job_on_timer, job, NULL);
        if (job->timer < 0) {
            int r = job->timer;
            free(job);
            free(w);
            return r;
        }
        job->c = c;
        job->next = c->jobs;
        c->jobs = job;
        c->n_jobs++;
    }
    struct waiter **p = &job->waiters;
    while (*p)
        p = &(*p)->next;
    *p = w;
    job->n_waiters++;
    log_debug("image acquire image=%s user=%s waiters=%zu", image_id, user, job->n_waiters);
    return 0;
}

int
agent_image_cache_release(struct agent_image_cache *c, const char *image_id, const char *user)
{
    if (!c || !image_id || !user)
        return -EINVAL;
    bool found = false;
    struct job *job = find_job(c, image_id);
    for (struct waiter **p = job ? &job->waiters : NULL; p && *p;) {
        struct waiter *w = *p;
        if (strcmp(w->user, user) != 0) {
            p = &w->next;
            continue;
        }
        *p = w->next;
        job->n_waiters--;
        free(w);
        found = true;
    }
    struct cache_image *img = find_image(c, image_id);
    if (img && image_has_user(img, user)) {
        char **users = calloc(img->n_users, sizeof *users);
        size_t n = 0;
        if (!users)
            return -ENOMEM;
        for (size_t i = 0; i < img->n_users; i++)
            if (strcmp(img->users[i], user) != 0)
                users[n++] = img->users[i];
        uint64_t now = stamp(c);
        int r = image_store(c, img, users, n, now);
        if (r < 0) {
            free(users);
            return log_err_errno(r, "cannot record the release of image=%s user=%s",
                                 image_id, user);
        }
        for (size_t i = 0; i < img->n_users; i++)
            if (strcmp(img->users[i], user) == 0)
                free(img->users[i]);
        free(img->users);
        img->users = users;
        img->n_users = n;
        img->last_used_us = now;
        found = true;
    }
    if (found)
        log_debug("image release image=%s user=%s users=%zu", image_id, user,
                  img ? img->n_users : 0);
    return found ? 0 : -ENOENT;
}

int
agent_image_cache_report(struct agent_image_cache *c, Yun__CachedImage ***ret_images,
                         size_t *ret_n)
{
    size_t n = 0;
    for (struct cache_image *i = c->images; i; i = i->next)
        n += i->file->present;
    if (n > c->report_cap) {
        Yun__CachedImage *items = reallocarray(c->report_items, n, sizeof *items);
        if (!items)
            return -ENOMEM;
        c->report_items = items;
        Yun__CachedImage **ptrs = reallocarray(c->report_ptrs, n, sizeof *ptrs);
        if (!ptrs)
            return -ENOMEM;
        c->report_ptrs = ptrs;
        c->report_cap = n;
    }
    size_t k = 0;
    for (struct cache_image *i = c->images; i; i = i->next) {
        if (!i->file->present)
            continue;
        Yun__CachedImage *m = &c->report_items[k];
        yun__cached_image__init(m);
        m->image_id = i->id;
        m->os_hash_value = i->file->sha512;
        m->size = i->file->size;
        m->last_used_us = i->last_used_us;
        m->users = (uint32_t)i->n_users;
        c->report_ptrs[k++] = m;
    }
    *ret_images = c->report_ptrs;
    *ret_n = k;
    return 0;
}

void
agent_image_cache_stats(const struct agent_image_cache *c, struct agent_image_cache_stats *ret)
{
    *ret = c->counters;
    ret->images = 0;
    for (const struct cache_image *i = c->images; i; i = i->next)
        ret->images++;
    ret->files = 0;
    for (const struct cache_file *f = c->files; f; f = f->next)
        ret->files += f->present;
    ret->bytes = cached_bytes(c, &ret->bytes_in_use);
    ret->jobs = c->n_jobs;
}

/* ---- open, reconcile, free ---- */

struct loaded {
    Yun__CachedImageRecord **recs;
    size_t n, cap;
    char **bad_keys;  /* records that do not decode */
    size_t n_bad;
};

static int
collect_record(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct loaded *l = data;
    Yun__CachedImageRecord *rec = yun__cached_image_record__unpack(NULL, val_size, val);
    if (!rec) {
        char **p = reallocarray(l->bad_keys, l->n_bad + 1, sizeof *p);
        if (!p)
            return -ENOMEM;
        l->bad_keys = p;
        if (!(p[l->n_bad] = strndup(key, key_size)))
            return -ENOMEM;
        l->n_bad++;
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        Yun__CachedImageRecord **p = reallocarray(l->recs, cap, sizeof *p);
        if (!p) {
            yun__cached_image_record__free_unpacked(rec, NULL);
            return -ENOMEM;
        }
        l->recs = p;
        l->cap = cap;
    }
    l->recs[l->n++] = rec;
    return 0;
}

static void
loaded_done(struct loaded *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->recs[i])
            yun__cached_image_record__free_unpacked(l->recs[i], NULL);
    free(l->recs);
    users_free(l->bad_keys, l->n_bad);
}

static bool
record_is_valid(const Yun__CachedImageRecord *rec)
{
    return yun_uuid_is_valid(rec->image_id) && sha512_hex_is_valid(rec->os_hash_value) &&
           rec->size > 0 && yun_imgfmt_from_string(rec->disk_format) >= 0 &&
           rec->n_users <= AGENT_IMAGE_USERS_MAX;
}

/* Turns a record whose file is on disk with the right size into memory. */
static int
adopt_record(struct agent_image_cache *c, const Yun__CachedImageRecord *rec)
{
    struct cache_file *f = file_get(c, rec->os_hash_value, rec->size);
    if (!f)
        return -ENOMEM;
    f->present = true;
    struct cache_image *img = calloc(1, sizeof *img);
    if (!img)
        return -ENOMEM;
    snprintf(img->id, sizeof img->id, "%s", rec->image_id);
    img->file = f;
    snprintf(img->disk_format, sizeof img->disk_format, "%s", rec->disk_format);
    img->virtual_size = rec->virtual_size;
    img->last_used_us = rec->last_used_us;
    img->cached_us = rec->cached_us;
    if (rec->n_users) {
        img->users = calloc(rec->n_users, sizeof *img->users);
        if (!img->users) {
            image_free(img);
            return -ENOMEM;
        }
        for (size_t i = 0; i < rec->n_users; i++) {
            if (!(img->users[img->n_users] = strdup(rec->users[i]))) {
                image_free(img);
                return -ENOMEM;
            }
            img->n_users++;
        }
    }
    image_insert(c, img);
    if (rec->last_used_us > c->last_stamp)
        c->last_stamp = rec->last_used_us;
    return 0;
}

static int
reconcile_records(struct agent_image_cache *c)
{
    _cleanup_(loaded_done) struct loaded l = { 0 };
    struct yun_txn *rtxn = NULL;
    int r = yun_txn_begin(c->store, false, &rtxn);
    if (r < 0)
        return r;
    r = yun_txn_iterate(rtxn, AGENT_IMAGE_CACHE_DB, NULL, 0, collect_record, &l);
    yun_txn_abort(rtxn);
    if (r < 0)
        return r;

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(c->store, true, &txn);
    if (r < 0)
        return r;
    size_t dropped = 0;
    for (size_t i = 0; i < l.n_bad; i++) {
        log_warn("image record does not decode, dropping it image=%s", l.bad_keys[i]);
        r = yun_txn_del(txn, AGENT_IMAGE_CACHE_DB, l.bad_keys[i], strlen(l.bad_keys[i]));
        if (r < 0)
            return r;
        dropped++;
    }
    for (size_t i = 0; i < l.n; i++) {
        const Yun__CachedImageRecord *rec = l.recs[i];
        const char *why = NULL;
        struct stat st;
        if (!record_is_valid(rec))
            why = "invalid record";
        else if (fstatat(c->dir_fd, rec->os_hash_value, &st, AT_SYMLINK_NOFOLLOW) < 0)
            why = "file missing";
        else if (!S_ISREG(st.st_mode))
            why = "not a regular file";
        else if ((uint64_t)st.st_size != rec->size) {
            why = "file size differs";
            /* A file of the wrong size is no good to any record of it. */
            if (unlinkat(c->dir_fd, rec->os_hash_value, 0) < 0 && errno != ENOENT)
                log_warn_errno(-errno, "cannot delete image file sha512=%.16s, ignoring",
                               rec->os_hash_value);
        }
        if (!why) {
            r = adopt_record(c, rec);
            if (r < 0)
                return r;
            continue;
        }
        log_warn("image record without a good file, dropping it image=%.40s sha512=%.16s "
                 "reason=\"%s\"", rec->image_id, rec->os_hash_value, why);
        /* The key may not equal the record's id when the record is bad. */
        r = yun_txn_del(txn, AGENT_IMAGE_CACHE_DB, rec->image_id, strlen(rec->image_id));
        if (r < 0 && r != -ENOENT)
            return r;
        dropped++;
    }
    /* A size mismatch deleted a file an earlier record was adopted with. */
    for (struct cache_image *i = c->images, *next; i; i = next) {
        struct stat st;
        next = i->next;
        if (fstatat(c->dir_fd, i->file->sha512, &st, AT_SYMLINK_NOFOLLOW) == 0)
            continue;
        r = yun_txn_del(txn, AGENT_IMAGE_CACHE_DB, i->id, strlen(i->id));
        if (r < 0 && r != -ENOENT)
            return r;
        image_unlink_list(c, i);
        dropped++;
    }
    if (dropped == 0)
        return 0;
    return yun_txn_commit(TAKE_PTR(txn));
}

/* Removes what no record claims: digest-named orphans and temp files. */
static int
reconcile_dir(struct agent_image_cache *c)
{
    int fd = fcntl(c->dir_fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int r = -errno;
        (void)close(fd);
        return r;
    }
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        const char *why = NULL;
        if (strncmp(name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0)
            why = "temp file";
        else if (sha512_hex_is_valid(name) && !find_file(c, name))
            why = "no record";
        else if (!sha512_hex_is_valid(name)) {
            log_warn("unexpected file in the image cache dir, leaving it dir=%s name=%s",
                     c->dir, name);
            continue;
        }
        if (!why)
            continue;
        if (unlinkat(c->dir_fd, name, 0) < 0 && errno != ENOENT)
            log_warn_errno(-errno, "cannot delete '%s/%s', ignoring", c->dir, name);
        else
            log_info("image cache file removed name=%.24s reason=\"%s\"", name, why);
    }
    closedir(d);
    return 0;
}

struct agent_image_cache *
agent_image_cache_free(struct agent_image_cache *c)
{
    if (!c)
        return NULL;
    c->freeing = true;
    while (c->jobs) {
        struct job *job = c->jobs;
        stream_done(job, false);
        job_detach(job);
        struct agent_image_ready ready = {
            .image_id = job->image_id, .error = -ECANCELED,
            .message = "The image cache is shutting down.",
        };
        job_answer(job, &ready);
        job_free(job);
    }
    if (c->fetcher)
        c->fetcher->ops->free(c->fetcher);
    while (c->images) {
        struct cache_image *i = c->images;
        c->images = i->next;
        image_free(i);
    }
    while (c->files) {
        struct cache_file *f = c->files;
        c->files = f->next;
        free(f);
    }
    if (c->dir_fd >= 0)
        (void)close(c->dir_fd);
    free(c->report_items);
    free(c->report_ptrs);
    free(c->dir);
    free(c);
    return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct agent_image_cache *, agent_image_cache_free)

int
agent_image_cache_new(const struct agent_image_cache_options *o, struct agent_image_cache **ret)
{
    _cleanup_(agent_image_cache_freep) struct agent_image_cache *c = NULL;
    if (!o || !o->loop || !o->store || !o->fetcher || !o->dir || !*o->dir ||
        o->read_ahead > AGENT_IMAGE_FETCH_WINDOW_MAX) {
        if (o && o->fetcher)
            o->fetcher->ops->free(o->fetcher);
        return -EINVAL;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        o->fetcher->ops->free(o->fetcher);
        return -ENOMEM;
    }
    c->fetcher = o->fetcher;
    c->dir_fd = -1;
    c->loop = o->loop;
    c->store = o->store;
    c->max_size = o->max_size;
    c->max_virtual_size = o->max_virtual_size;
    c->chunk_size = o->chunk_size ? o->chunk_size : AGENT_IMAGE_CHUNK_DEFAULT;
    c->read_ahead = o->read_ahead ? o->read_ahead : 1;
    c->verify_every_use = o->verify_every_use;
    c->dir = strdup(o->dir);
    if (!c->dir)
        return -ENOMEM;
    /* Trailing slashes would double in paths handed out. */
    for (size_t n = strlen(c->dir); n > 1 && c->dir[n - 1] == '/'; n--)
        c->dir[n - 1] = '\0';
    int r = yun_mkdir_p(c->dir, DIR_MODE);
    if (r < 0 && r != -EEXIST)
        return r;
    c->dir_fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c->dir_fd < 0)
        return -errno;
    /* One cache per directory: a second one would delete the first one's
     * temp files as leftovers and evict behind its back. */
    if (flock(c->dir_fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK ? -EBUSY : -errno;
    r = reconcile_records(c);
    if (r < 0)
        return r;
    r = reconcile_dir(c);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(c);
    return 0;
}

/* ---- agent glue ---- */

int
agent_images_start(struct agent *a)
{
    _cleanup_free_ char *dir = NULL;
    if (a->cfg.image_cache_dir && *a->cfg.image_cache_dir)
        dir = strdup(a->cfg.image_cache_dir);
    else if (asprintf(&dir, "%s/images", a->cfg.state_dir) < 0)
        dir = NULL;
    if (!dir)
        return log_err_errno(-ENOMEM, "out of memory");
    uint64_t chunk = (uint64_t)a->cfg.image_fetch_chunk_kb * 1024;
    /* A chunk and its envelope must fit in one bus message. */
    if (chunk + 64 * 1024 > a->cfg.max_message_size)
        return log_err_errno(YUN_E_CONFIG, "images.fetch_chunk_kb %u does not fit "
                                           "bus.max_message_size %u with 64 KiB to spare",
                             a->cfg.image_fetch_chunk_kb, a->cfg.max_message_size);

    struct yun_bus_client_options bo = {
        .url = agent_scheduler_url(a),
        .self_id = a->key.id,
        .key_id = a->key.id,
        .key_epoch = a->key.epoch,
        .key = &a->key.key,
        .max_body = a->cfg.max_message_size,
        .window_us = (uint64_t)a->cfg.message_window_s * 1000000u,
        .timeout_ms = (int)a->cfg.request_timeout_ms,
    };
    struct agent_image_fetcher *f = NULL;
    int r = agent_image_fetcher_bus_new(a->loop, &bo, a->cfg.image_fetch_window, &f);
    if (r < 0)
        return log_err_errno(r, "cannot connect the image fetcher to the scheduler url=%s",
                             bo.url);
    struct agent_image_cache_options o = {
        .loop = a->loop,
        .store = a->store,
        .fetcher = f,
        .dir = dir,
        .max_size = a->cfg.image_cache_max_size_mb * 1024 * 1024,
        .max_virtual_size = (uint64_t)a->cfg.image_max_virtual_size_gb << 30,
        .chunk_size = (uint32_t)chunk,
        .read_ahead = a->cfg.image_fetch_window,
        .verify_every_use = a->cfg.image_verify_every_use,
    };
    r = agent_image_cache_new(&o, &a->images);
    if (r == -EBUSY)
        return log_err_errno(r, "the image cache dir '%s' is in use by another yun-agent", dir);
    if (r < 0)
        return log_err_errno(r, "cannot open the image cache dir=%s", dir);
    /* The first eviction waits a period: instances re-acquire first. */
    a->next_image_gc_ms = yun_now_ms() + (int64_t)a->cfg.image_gc_interval_s * 1000;
    struct agent_image_cache_stats st;
    agent_image_cache_stats(a->images, &st);
    log_info("image cache open dir=%s images=%zu files=%zu bytes=%" PRIu64 " cap_mb=%" PRIu64,
             dir, st.images, st.files, st.bytes, a->cfg.image_cache_max_size_mb);
    return 0;
}

void
agent_images_stop(struct agent *a)
{
    a->images = agent_image_cache_free(a->images);
}

struct fetch_once {
    bool done;
    int error;
    char *path;
    char message[MESSAGE_MAX];
};

static void
fetch_once_ready(const struct agent_image_ready *ready, void *data)
{
    struct fetch_once *f = data;
    f->done = true;
    f->error = ready->error;
    snprintf(f->message, sizeof f->message, "%s", ready->message);
    if (ready->path && !(f->path = strdup(ready->path)))
        f->error = -ENOMEM;
}

int
agent_images_fetch(struct agent *a, const char *image_id, char **ret_path, char *message,
                   size_t message_size)
{
    struct fetch_once f = { 0 };
    int r = agent_image_cache_acquire(a->images, image_id, AGENT_IMAGE_FETCH_USER,
                                      fetch_once_ready, &f);
    if (r == -EINVAL)
        snprintf(message, message_size, "'%s' is not an image id.", image_id);
    else if (r < 0)
        snprintf(message, message_size, "Image '%s' cannot be fetched: %s", image_id,
                 yun_strerror(r));
    if (r < 0)
        return log_err_errno(r, "%s", message);
    /* Every fetcher request has a deadline and retries are bounded, so
     * this ends. */
    while (!f.done) {
        r = yun_loop_run_once(a->loop, -1);
        if (r < 0)
            return log_err_errno(r, "the event loop failed");
    }
    if (f.error < 0) {
        free(f.path);
        snprintf(message, message_size, "%s", f.message);
        return f.error; /* logged by the cache */
    }
    /* Cached, and evictable like any image no instance uses. */
    (void)agent_image_cache_release(a->images, image_id, AGENT_IMAGE_FETCH_USER);
    *ret_path = f.path;
    return 0;
}
