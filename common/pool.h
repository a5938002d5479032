/* SPDX-License-Identifier: Apache-2.0
 * pool.h: a small pool of worker threads for work that must stay off the
 * event loop (a password hash costs ~320 ms, an RSA key up to seconds).
 * A job is two callbacks: 'work' runs on a worker thread and touches only
 * the job's own data, never loop-owned state; 'done' runs later on the
 * loop's thread with what 'work' returned. Workers post finished jobs back
 * through an eventfd watched by the loop (STYLE.md section 5; libvirt's
 * worker pool does the same).
 *
 * Bounded: at most 'max_jobs' jobs are queued, running or waiting for
 * their 'done' at once; more are refused with -EBUSY, which the caller
 * turns into a "try again" answer instead of an ever longer queue.
 * Jobs start in submission order. Neighbours: loop.h. */
#pragma once

#include <stddef.h>

struct yun_loop;
struct yun_pool;

/* Runs on a worker thread. Returns a result handed to the done callback. */
typedef int (*yun_pool_work_fn)(void *data);
/* Runs on the loop's thread with the work's result, or -ECANCELED when the
 * pool was freed before the work started. Owns 'data' from then on. */
typedef void (*yun_pool_done_fn)(int result, void *data);

/* Starts 'threads' (1..64) workers whose finished jobs come back on
 * 'loop'. Returns 0 and '*ret', -EINVAL, -ENOMEM, or -errno. */
int yun_pool_new(struct yun_loop *loop, unsigned threads, size_t max_jobs,
                 struct yun_pool **ret);

/* Stops the workers once their current jobs end, then calls the done
 * callback of every job: with its result when it ran, with -ECANCELED when
 * it never started. Call from the loop's thread. NULL ok; returns NULL. */
struct yun_pool *yun_pool_free(struct yun_pool *p);

/* Queues a job. 'done' is always called exactly once (with 'data') when
 * this returns 0, never when it fails. Returns 0, or -EBUSY when
 * 'max_jobs' jobs are in the pool, -ENOMEM. Call from the loop's thread. */
int yun_pool_submit(struct yun_pool *p, yun_pool_work_fn work, yun_pool_done_fn done,
                    void *data);

/* Jobs queued, running or waiting for their done callback. */
size_t yun_pool_jobs(const struct yun_pool *p);
