/* SPDX-License-Identifier: Apache-2.0
 * image-cache.h: the agent's cache of base images (DESIGN.md "Images").
 * Instances get their base image through agent_image_cache_acquire(): the
 * cache fetches it from the scheduler in chunks, checks its size and sha512
 * against what the scheduler announced, runs the format inspector on it
 * (common/image-format.h) and keeps one file per digest in its directory,
 * named by the sha512 hex, with a record per image id in the agent's LMDB
 * ("images" database, CachedImageRecord from proto/host.proto). Images no
 * instance uses are evicted least-recently-used first above a size cap.
 *
 * The bytes come through a fetcher, a small vtable with two asynchronous
 * calls (show, read). agent/image-fetch-bus.c implements it over the bus;
 * tests implement it in memory.
 *
 * Verification policy. A file is handed out only after it was read back
 * whole in this run of the agent and its sha512 and inspection matched:
 * right after its download, or on its first use after the agent started
 * (the cache trusts nothing on disk across restarts). Later uses compare
 * the file's stat (inode, size, mtime, ctime) with the one taken at that
 * verification and verify again when anything differs; with
 * 'verify_every_use' every acquire reads the whole file again. A file that
 * fails is deleted and fetched again, once per acquire. Verification reads
 * in chunks from the loop, one chunk per iteration, so it never stalls the
 * agent for long.
 *
 * Users. An instance holds an image as a named user (its instance id):
 * acquire adds the user, release removes it, both idempotent, and the user
 * set is stored with the record, so an image stays "in use" across agent
 * restarts and a crash leaks nothing that re-running acquire/release for
 * the instances that exist cannot fix. An image with users is never
 * evicted, even above the cap.
 *
 * Neighbours: agent/report.c (reports agent_image_cache_report() in
 * register and heartbeat requests, runs agent_image_cache_gc() from its
 * periodic tick), agent/main.c (agent_images_start/stop). Single-threaded:
 * everything runs on the agent's loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host.pb-c.h"

struct yun_loop;
struct yun_store;
struct yun_bus_client_options;
struct agent;
struct agent_image_cache;
struct agent_image_fetcher;

/* The database of the agent's store that holds the cache's records. */
#define AGENT_IMAGE_CACHE_DB "images"

#define AGENT_IMAGE_SHA512_HEX 128
#define AGENT_IMAGE_FORMAT_MAX 15
#define AGENT_IMAGE_USER_MAX 64        /* bytes of a user (instance) id */
#define AGENT_IMAGE_USERS_MAX 4096     /* users of one image */
#define AGENT_IMAGE_WAITERS_MAX 1024   /* acquires waiting on one image */
#define AGENT_IMAGE_JOBS_MAX 256       /* images being fetched or checked */
#define AGENT_IMAGE_CHUNK_DEFAULT (1u << 20)
#define AGENT_IMAGE_FETCH_WINDOW_MAX 16 /* requests in flight to the scheduler */

/* ---- The fetcher: where the bytes come from ---- */

/* What the source says of an image: enough to fetch and verify it. */
struct agent_image_info {
    uint64_t size;                                /* bytes */
    uint64_t virtual_size;                        /* the source's own finding; informative */
    char sha512[AGENT_IMAGE_SHA512_HEX + 1];      /* lowercase hex */
    char disk_format[AGENT_IMAGE_FORMAT_MAX + 1]; /* raw, qcow2, ... */
};

/* One slice of an image's bytes. Everything is borrowed: valid only during
 * the callback it is handed to. */
struct agent_image_chunk {
    const void *data;
    size_t size;           /* may be shorter than asked for */
    uint64_t offset;       /* where 'data' starts in the image */
    uint64_t total_size;   /* the image's size as the source knows it; 0 = unsaid */
    const char *sha512;    /* the source's digest of the whole image; "" = unsaid */
    bool eof;              /* the slice ends the image */
};

/* Completion of a show or a read. 'r' is 0 or a negative errno / yun_err,
 * then with a sentence in 'message' (never NULL). On success 'info' or
 * 'chunk' is set; on failure it is NULL. */
typedef void (*agent_image_show_done_fn)(int r, const char *message,
                                         const struct agent_image_info *info, void *data);
typedef void (*agent_image_read_done_fn)(int r, const char *message,
                                         const struct agent_image_chunk *chunk, void *data);

/* A fetcher implementation. Implementations embed struct agent_image_fetcher
 * as their first member. Contract of show and read: they return 0 and call
 * 'done' exactly once, later, from the loop (never from inside the call),
 * unless cancelled; or return a negative errno and never call it. 'done'
 * may call show or read again. Several requests may be outstanding; an
 * implementation that can carry fewer at a time queues the others. Requests
 * made with the same 'data' complete in the order they were made, so a
 * caller may read ahead and still take the bytes in offset order. */
struct agent_image_fetcher_ops {
    const char *name;
    int (*show)(struct agent_image_fetcher *f, const char *image_id,
                agent_image_show_done_fn done, void *data);
    int (*read)(struct agent_image_fetcher *f, const char *image_id, uint64_t offset,
                uint32_t length, agent_image_read_done_fn done, void *data);
    /* Forgets every outstanding request made with 'data': their 'done' is
     * not called. */
    void (*cancel)(struct agent_image_fetcher *f, void *data);
    /* Frees the fetcher; outstanding requests are dropped without a call. */
    void (*free)(struct agent_image_fetcher *f);
};

struct agent_image_fetcher {
    const struct agent_image_fetcher_ops *ops;
};

/* Creates the fetcher that asks the scheduler over the bus (OP_IMAGE_SHOW,
 * OP_IMAGE_DOWNLOAD) through REQ sockets of its own, separate from the
 * heartbeat's, since a REQ socket carries one request at a time: 'depth'
 * sockets (1 to AGENT_IMAGE_FETCH_WINDOW_MAX) keep up to 'depth' requests
 * in flight and the others queue. Each request has the deadline
 * 'o->timeout_ms' from its send (YUN_E_UNREACHABLE past it). Requests
 * complete in the order they were made, whatever 'data': a reply that
 * comes before an earlier request's is held until that one completes, so
 * at most 'depth' replies (each up to a chunk) are held. Only images the
 * scheduler calls active are shown. 'o' is copied. Returns 0 and '*ret',
 * -EINVAL for a bad 'depth', or a negative errno. */
int agent_image_fetcher_bus_new(struct yun_loop *loop, const struct yun_bus_client_options *o,
                                unsigned depth, struct agent_image_fetcher **ret);

/* ---- The cache ---- */

struct agent_image_cache_options {
    struct yun_loop *loop;
    struct yun_store *store;            /* must hold AGENT_IMAGE_CACHE_DB */
    struct agent_image_fetcher *fetcher; /* taken: freed with the cache, or on failure */
    const char *dir;                    /* created if missing */
    uint64_t max_size;                  /* bytes of unused images kept; 0 = keep none */
    uint64_t max_virtual_size;          /* inspector's limit in bytes; 0 = none */
    uint32_t chunk_size;                /* bytes per read; 0 = AGENT_IMAGE_CHUNK_DEFAULT */
    unsigned read_ahead;                /* reads outstanding per download; 0 = 1,
                                         * at most AGENT_IMAGE_FETCH_WINDOW_MAX */
    bool verify_every_use;              /* read the whole file again on every acquire */
};

/* Opens the cache on 'o->dir' and reconciles it with the records: records
 * whose file is missing or has the wrong size are dropped (with the file),
 * digest-named files without a record and leftover temp files (".tmp-*")
 * are deleted; other files are left alone with a warning. Nothing is
 * evicted here: the first eviction runs on the first add or
 * agent_image_cache_gc(), so that instances can re-acquire their images
 * first. The directory stays locked (flock) while the cache is open: -EBUSY
 * when another cache has it. Returns 0 and '*ret', or a negative errno
 * (the fetcher is freed). */
int agent_image_cache_new(const struct agent_image_cache_options *o,
                          struct agent_image_cache **ret);

/* Frees the cache. Acquires still waiting are answered -ECANCELED first.
 * Files and records stay. NULL ok; returns NULL. */
struct agent_image_cache *agent_image_cache_free(struct agent_image_cache *c);

/* The outcome of an acquire, valid only during the callback. */
struct agent_image_ready {
    const char *image_id;
    const char *user;
    int error;                /* 0, or a negative errno / yun_err */
    const char *message;      /* a sentence when 'error' is set; "" otherwise */
    const char *path;         /* the verified file; NULL on error */
    const char *sha512;       /* NULL on error */
    const char *disk_format;  /* NULL on error */
    uint64_t size;
    uint64_t virtual_size;
};

typedef void (*agent_image_ready_fn)(const struct agent_image_ready *ready, void *data);

/* Makes image 'image_id' (a UUID) available to user 'user' (an instance
 * id, at most AGENT_IMAGE_USER_MAX bytes of [A-Za-z0-9._-]). 'cb' is
 * called exactly once, always later from the loop and never from inside
 * this call: with the path of a verified file, the user then holding the
 * image until agent_image_cache_release(); or with an error, the user not
 * holding it. 'cb' may call into the cache again, but must not free it.
 * Concurrent acquires of one image share one fetch. Errors in
 * the callback: -EBADMSG (the bytes do not match the announced size or
 * sha512; nothing is kept), -EMEDIUMTYPE (the format inspector refused
 * the image), -ENOSPC, -EBUSY (the image has AGENT_IMAGE_USERS_MAX users),
 * the fetcher's errors (YUN_E_UNREACHABLE, the scheduler's), -ECANCELED
 * (the cache was freed). Returns 0, -EINVAL for a bad id or user, or
 * -EBUSY when too many acquires are pending. */
int agent_image_cache_acquire(struct agent_image_cache *c, const char *image_id,
                              const char *user, agent_image_ready_fn cb, void *data);

/* Undoes agent_image_cache_acquire() for 'user': drops the user from the
 * image, or, while the acquire is still pending, cancels it (its callback
 * is not called; the fetch goes on and the image is cached unused). The
 * image becomes evictable once it has no users. Returns 0, or -ENOENT when
 * 'user' neither holds nor waits for the image. */
int agent_image_cache_release(struct agent_image_cache *c, const char *image_id,
                              const char *user);

/* Evicts least-recently-used images without users until the cached bytes
 * are at most the cap. Images in use are kept even above it (logged).
 * Returns the number of files removed, or a negative errno. */
int agent_image_cache_gc(struct agent_image_cache *c);

/* The cached images as the agent reports them (CachedImage in
 * proto/host.proto), in image id order. The array and its strings are
 * owned by the cache and valid until the next call into it. */
int agent_image_cache_report(struct agent_image_cache *c, Yun__CachedImage ***ret_images,
                             size_t *ret_n);

struct agent_image_cache_stats {
    size_t images;          /* records */
    size_t files;           /* distinct digests on disk */
    uint64_t bytes;         /* bytes of those files */
    uint64_t bytes_in_use;  /* of which images with users hold */
    size_t jobs;            /* fetches and verifications under way */
    uint64_t fetches;       /* downloads completed since start */
    uint64_t bytes_fetched; /* bytes received since start */
    uint64_t verify_failures; /* cached files found corrupt since start */
    uint64_t evictions;     /* files evicted since start */
};
void agent_image_cache_stats(const struct agent_image_cache *c,
                             struct agent_image_cache_stats *ret);

/* The path of the file of digest 'sha512' in the cache directory, into
 * 'buf'. Returns 0 or -ENAMETOOLONG. */
int agent_image_cache_path(const struct agent_image_cache *c, const char *sha512, char *buf,
                           size_t size);

/* ---- Agent glue ---- */

/* Opens the cache of agent 'a' from its config ([images] section), with
 * the bus fetcher. -EBUSY when another agent holds the cache directory (it
 * is locked while open). Returns 0 or a logged negative errno. */
int agent_images_start(struct agent *a);
void agent_images_stop(struct agent *a);

/* The user that agent_images_fetch() acquires as, for a moment. */
#define AGENT_IMAGE_FETCH_USER "fetch-image"

/* `yun-agent fetch-image IMAGE`: makes image 'image_id' ready in the cache
 * of 'a' (started, its loop not running), running the loop until it is,
 * then releases it, leaving it cached and unused. Returns 0 and the file's
 * path (malloc'ed) in '*ret_path', or a logged negative errno with its
 * sentence in 'message'. */
int agent_images_fetch(struct agent *a, const char *image_id, char **ret_path, char *message,
                       size_t message_size);
