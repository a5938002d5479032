/* SPDX-License-Identifier: Apache-2.0
 * image-store.c: the "file" back-end of image-store.h. Image '<id>' is the
 * file '<id>' in the image directory; while it is uploaded it is
 * '<id>.part'. Commit is fsync, rename and fsync of the directory, so
 * that a crash leaves either the partial file (removed by the registry's
 * recovery) or the whole durable object.
 *
 * Writes go straight from the request's buffer with pwrite; every few MiB
 * the written range is handed to the kernel's write-back
 * (sync_file_range), so that the fsync at commit finds little left to do
 * and a large upload does not fill the page cache with dirty pages.
 *
 * Reads use a small cache of open descriptors: the kernel's read-ahead
 * state belongs to the open file, so a download that reopened the file for
 * every chunk would lose it and read a cold image at the disk's random
 * read speed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cleanup.h"
#include "image-store.h"
#include "util.h"

#define PART_SUFFIX ".part"
#define FILE_NAME_MAX (YUN_UUID_STR_SIZE + sizeof PART_SUFFIX)
/* Write-back is started every this many bytes written. */
#define WRITEBACK_STEP (8u << 20)
#define READ_FDS 16

struct read_fd {
    char id[YUN_UUID_STR_SIZE];
    int fd;               /* -EBADF when the slot is free */
    uint64_t used;        /* LRU tick */
};

struct file_store {
    struct sched_image_store base;
    char *dir;
    int dir_fd;
    uint64_t tick;
    struct read_fd fds[READ_FDS];
};

struct file_writer {
    struct sched_image_writer base;
    int fd;
    char id[YUN_UUID_STR_SIZE];
    uint64_t written;     /* end of the data written so far */
    uint64_t flushed;     /* handed to write-back up to here */
};

static struct file_store *
to_file(struct sched_image_store *st)
{
    return (struct file_store *)st;
}

/* Ids name files: only canonical UUIDs may become a path component. */
static int
file_name(const char *id, bool partial, char name[FILE_NAME_MAX])
{
    if (!yun_uuid_is_valid(id))
        return -EINVAL;
    snprintf(name, FILE_NAME_MAX, "%s%s", id, partial ? PART_SUFFIX : "");
    return 0;
}

static void
read_fd_drop(struct file_store *fs, const char *id)
{
    for (int i = 0; i < READ_FDS; i++)
        if (fs->fds[i].fd >= 0 && strcmp(fs->fds[i].id, id) == 0) {
            (void)close(fs->fds[i].fd);
            fs->fds[i].fd = -EBADF;
        }
}

static int
file_writer_new(struct sched_image_store *st, const char *id, struct sched_image_writer **ret)
{
    struct file_store *fs = to_file(st);
    char name[FILE_NAME_MAX];
    int r = file_name(id, true, name);
    if (r < 0)
        return r;
    struct file_writer *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->fd = openat(fs->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                   0600);
    if (w->fd < 0) {
        r = -errno;
        free(w);
        return r;
    }
    w->base.store = st;
    snprintf(w->id, sizeof w->id, "%s", id);
    *ret = &w->base;
    return 0;
}

static int
file_write(struct sched_image_writer *base, uint64_t offset, const void *data, size_t size)
{
    struct file_writer *w = (struct file_writer *)base;
    const uint8_t *p = data;
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(w->fd, p + done, size - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        done += (size_t)n;
    }
    if (offset + size > w->written)
        w->written = offset + size;
    if (w->written - w->flushed >= WRITEBACK_STEP) {
        /* Asynchronous: starts write-back of the range, waits for nothing.
         * Only an optimisation, so a failure is ignored here: fsync at
         * commit reports any real I/O error. */
        (void)sync_file_range(w->fd, (off_t)w->flushed, (off_t)(w->written - w->flushed),
                              SYNC_FILE_RANGE_WRITE);
        w->flushed = w->written;
    }
    return 0;
}

static void
file_abort(struct sched_image_writer *base)
{
    if (!base)
        return;
    struct file_writer *w = (struct file_writer *)base;
    struct file_store *fs = to_file(base->store);
    char name[FILE_NAME_MAX];
    if (w->fd >= 0)
        (void)close(w->fd);
    if (file_name(w->id, true, name) >= 0)
        (void)unlinkat(fs->dir_fd, name, 0);
    free(w);
}

static int
file_commit(struct sched_image_writer *base)
{
    struct file_writer *w = (struct file_writer *)base;
    struct file_store *fs = to_file(base->store);
    char part[FILE_NAME_MAX], final[FILE_NAME_MAX];
    int r = file_name(w->id, true, part);
    if (r >= 0)
        r = file_name(w->id, false, final);
    if (r >= 0 && fsync(w->fd) < 0)
        r = -errno;
    if (r >= 0) {
        int fd = TAKE_FD(w->fd);
        if (close(fd) < 0 && errno != EINTR)
            r = -errno;
    }
    if (r >= 0 && renameat(fs->dir_fd, part, fs->dir_fd, final) < 0)
        r = -errno;
    if (r >= 0 && fsync(fs->dir_fd) < 0) {
        r = -errno;
        (void)unlinkat(fs->dir_fd, final, 0);
    }
    if (r < 0) {
        file_abort(base);
        return r;
    }
    read_fd_drop(fs, w->id);
    free(w);
    return 0;
}

/* Returns a cached descriptor of committed object 'id', opening it when
 * needed (and evicting the least recently used one). */
static int
read_fd_get(struct file_store *fs, const char *id, int *ret_fd)
{
    struct read_fd *slot = &fs->fds[0];
    for (int i = 0; i < READ_FDS; i++) {
        struct read_fd *e = &fs->fds[i];
        if (e->fd >= 0 && strcmp(e->id, id) == 0) {
            e->used = ++fs->tick;
            *ret_fd = e->fd;
            return 0;
        }
        if (slot->fd >= 0 && (e->fd < 0 || e->used < slot->used))
            slot = e;
    }
    char name[FILE_NAME_MAX];
    int r = file_name(id, false, name);
    if (r < 0)
        return r;
    int fd = openat(fs->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    /* Doubles the read-ahead window: downloads read front to back. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (slot->fd >= 0)
        (void)close(slot->fd);
    snprintf(slot->id, sizeof slot->id, "%s", id);
    slot->fd = fd;
    slot->used = ++fs->tick;
    *ret_fd = fd;
    return 0;
}

static int
file_pread(struct sched_image_store *st, const char *id, uint64_t offset, void *buf,
           size_t size)
{
    struct file_store *fs = to_file(st);
    int fd = -EBADF;
    int r = read_fd_get(fs, id, &fd);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    size_t done = 0;
    while (done < size) {
        ssize_t n = pread(fd, p + done, size - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        done += (size_t)n;
    }
    return 0;
}

static int
file_stat(struct sched_image_store *st, const char *id, uint64_t *ret_size)
{
    struct file_store *fs = to_file(st);
    char name[FILE_NAME_MAX];
    int r = file_name(id, false, name);
    if (r < 0)
        return r;
    struct stat sb;
    if (fstatat(fs->dir_fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (!S_ISREG(sb.st_mode))
        return -EIO;
    *ret_size = (uint64_t)sb.st_size;
    return 0;
}

static int
file_remove(struct sched_image_store *st, const char *id)
{
    struct file_store *fs = to_file(st);
    char name[FILE_NAME_MAX];
    int r = file_name(id, false, name);
    if (r < 0)
        return r;
    read_fd_drop(fs, id);
    if (unlinkat(fs->dir_fd, name, 0) < 0)
        return -errno;
    return 0;
}

static int
file_scan(struct sched_image_store *st, sched_image_store_scan_fn cb, void *data)
{
    struct file_store *fs = to_file(st);
    int fd = openat(fs->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int r = -errno;
        (void)close(fd);
        return r;
    }
    int r = 0;
    struct dirent *de;
    while (r >= 0 && (errno = 0, de = readdir(d))) {
        /* Only names this back-end makes: anything else in the directory
         * is not ours to judge or remove. */
        char id[YUN_UUID_STR_SIZE];
        size_t len = strlen(de->d_name);
        bool partial = len == YUN_UUID_STR_SIZE - 1 + strlen(PART_SUFFIX) &&
                       strcmp(de->d_name + YUN_UUID_STR_SIZE - 1, PART_SUFFIX) == 0;
        if (len != YUN_UUID_STR_SIZE - 1 && !partial)
            continue;
        memcpy(id, de->d_name, YUN_UUID_STR_SIZE - 1);
        id[YUN_UUID_STR_SIZE - 1] = '\0';
        if (!yun_uuid_is_valid(id))
            continue;
        r = cb(id, partial, data);
        if (r > 0) {
            if (!partial)
                read_fd_drop(fs, id);
            r = unlinkat(fs->dir_fd, de->d_name, 0) < 0 && errno != ENOENT ? -errno : 0;
        }
    }
    if (r >= 0 && errno != 0)
        r = -errno;
    closedir(d);
    return r;
}

/* f_bavail, not f_bfree: the blocks reserved for root are not ours to
 * count on, even when the scheduler runs as root. */
static int
file_space(struct sched_image_store *st, uint64_t *ret_free)
{
    struct statvfs sv;
    if (fstatvfs(to_file(st)->dir_fd, &sv) < 0)
        return -errno;
    uint64_t bytes;
    if (__builtin_mul_overflow((uint64_t)sv.f_bavail, (uint64_t)sv.f_frsize, &bytes))
        bytes = UINT64_MAX;
    *ret_free = bytes;
    return 0;
}

static void
file_free(struct sched_image_store *st)
{
    struct file_store *fs = to_file(st);
    for (int i = 0; i < READ_FDS; i++)
        if (fs->fds[i].fd >= 0)
            (void)close(fs->fds[i].fd);
    if (fs->dir_fd >= 0)
        (void)close(fs->dir_fd);
    free(fs->dir);
    free(fs);
}

static const struct sched_image_store_ops file_ops = {
    .name = "file",
    .writer_new = file_writer_new,
    .write = file_write,
    .commit = file_commit,
    .abort = file_abort,
    .pread = file_pread,
    .stat = file_stat,
    .remove = file_remove,
    .scan = file_scan,
    .space = file_space,
    .free = file_free,
};

/* Opens the file back-end on 'dir' (see image-store.h). */
int
sched_image_store_file_new(const char *dir, struct sched_image_store **ret)
{
    if (!dir || !*dir || !ret)
        return -EINVAL;
    int r = yun_mkdir_p(dir, 0700);
    if (r < 0)
        return r;
    struct file_store *fs = calloc(1, sizeof *fs);
    if (!fs)
        return -ENOMEM;
    fs->base.ops = &file_ops;
    fs->dir_fd = -EBADF;
    for (int i = 0; i < READ_FDS; i++)
        fs->fds[i].fd = -EBADF;
    fs->dir = strdup(dir);
    if (!fs->dir) {
        file_free(&fs->base);
        return -ENOMEM;
    }
    fs->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fs->dir_fd < 0) {
        r = -errno;
        file_free(&fs->base);
        return r;
    }
    *ret = &fs->base;
    return 0;
}
