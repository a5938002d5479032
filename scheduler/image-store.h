/* SPDX-License-Identifier: Apache-2.0
 * image-store.h: where the image registry (image.c) keeps image bytes,
 * behind a small back-end vtable. One object per image id. An object is
 * written once, in order, as a partial object that readers cannot see;
 * commit makes it durable and visible under its id in one step, abort
 * leaves nothing behind. Reads are stateless (pread at an offset), so a
 * download resumes anywhere.
 *
 * Back-ends: "file" (image-store.c), one file per image in a directory of
 * the control host. An object-store back-end (objects issue) comes later
 * behind the same table.
 *
 * Single-threaded: called from the scheduler's loop only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sched_image_store;
struct sched_image_writer;

/* Told of each object (committed or partial) during a scan. Returns 1 to
 * have it removed, 0 to keep it, or a negative errno to stop the scan. */
typedef int (*sched_image_store_scan_fn)(const char *id, bool partial, void *data);

struct sched_image_store_ops {
    const char *name;
    /* Starts the partial object of 'id', replacing any stale one. */
    int (*writer_new)(struct sched_image_store *st, const char *id,
                      struct sched_image_writer **ret);
    /* Writes 'size' bytes at 'offset' (writes come in order, no gaps). */
    int (*write)(struct sched_image_writer *w, uint64_t offset, const void *data, size_t size);
    /* Makes the object durable, then visible under its id. Frees 'w'
     * whatever the result; on failure nothing of the object remains. */
    int (*commit)(struct sched_image_writer *w);
    /* Removes the partial object and frees 'w'. NULL ok. */
    void (*abort)(struct sched_image_writer *w);
    /* Reads exactly 'size' bytes at 'offset' of a committed object:
     * -ENOENT when there is none, -EIO when it is shorter. */
    int (*pread)(struct sched_image_store *st, const char *id, uint64_t offset, void *buf,
                 size_t size);
    /* Size of a committed object, -ENOENT when there is none. */
    int (*stat)(struct sched_image_store *st, const char *id, uint64_t *ret_size);
    /* Removes a committed object; -ENOENT when there was none. */
    int (*remove)(struct sched_image_store *st, const char *id);
    /* Calls 'cb' for every object held, committed or partial. */
    int (*scan)(struct sched_image_store *st, sched_image_store_scan_fn cb, void *data);
    /* Bytes the store can still take now (for the file back-end, what an
     * unprivileged writer may still use of the directory's file system). */
    int (*space)(struct sched_image_store *st, uint64_t *ret_free);
    void (*free)(struct sched_image_store *st);
};

/* The head of every back-end's store and writer structs. */
struct sched_image_store {
    const struct sched_image_store_ops *ops;
};
struct sched_image_writer {
    struct sched_image_store *store;
};

/* Opens the file back-end on 'dir', created 0700 when missing. Returns 0
 * and '*ret', or a negative errno. */
int sched_image_store_file_new(const char *dir, struct sched_image_store **ret);

static inline struct sched_image_store *
sched_image_store_free(struct sched_image_store *st)
{
    if (st)
        st->ops->free(st);
    return NULL;
}
