/* SPDX-License-Identifier: Apache-2.0
 * pool.c: worker threads that post finished jobs back to the loop (see
 * pool.h). One mutex guards the two lists; the loop side drains the done
 * list in one swap per wakeup. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "loop.h"
#include "pool.h"

#define POOL_THREADS_MAX 64

struct pool_job {
    struct pool_job *next;
    yun_pool_work_fn work;
    yun_pool_done_fn done;
    void *data;
    int result;
};

struct yun_pool {
    struct yun_loop *loop;
    int efd;
    int watch;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;
    struct pool_job *queue, **queue_tail; /* not started, FIFO */
    struct pool_job *finished;            /* done, waiting for the loop */
    size_t jobs, max_jobs;                /* all jobs: the loop's count only */
    pthread_t threads[POOL_THREADS_MAX];
    unsigned n_threads;
};

static void
post(struct yun_pool *p)
{
    uint64_t one = 1;
    /* EAGAIN: the counter is saturated, so a wakeup is pending anyway. */
    if (write(p->efd, &one, sizeof one) < 0)
        return;
}

static void *
worker_main(void *arg)
{
    struct yun_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->queue && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->stopping)
            break;
        struct pool_job *j = p->queue;
        p->queue = j->next;
        if (!p->queue)
            p->queue_tail = &p->queue;
        pthread_mutex_unlock(&p->lock);

        j->result = j->work(j->data);

        pthread_mutex_lock(&p->lock);
        j->next = p->finished;
        p->finished = j;
        post(p);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Calls the done callbacks of the finished jobs, oldest first. */
static void
deliver(struct yun_pool *p)
{
    pthread_mutex_lock(&p->lock);
    struct pool_job *list = p->finished;
    p->finished = NULL;
    pthread_mutex_unlock(&p->lock);
    struct pool_job *rev = NULL;
    while (list) {
        struct pool_job *j = list;
        list = j->next;
        j->next = rev;
        rev = j;
    }
    while (rev) {
        struct pool_job *j = rev;
        rev = j->next;
        p->jobs--;
        j->done(j->result, j->data);
        free(j);
    }
}

static void
on_event(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct yun_pool *p = data;
    uint64_t n;
    if (read(p->efd, &n, sizeof n) < 0 && errno != EAGAIN)
        return;
    deliver(p);
}

int
yun_pool_new(struct yun_loop *loop, unsigned threads, size_t max_jobs, struct yun_pool **ret)
{
    if (!loop || threads == 0 || threads > POOL_THREADS_MAX || max_jobs == 0)
        return -EINVAL;
    struct yun_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->loop = loop;
    p->watch = -1;
    p->max_jobs = max_jobs;
    p->queue_tail = &p->queue;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int r = p->efd < 0 ? -errno : 0;
    if (r == 0) {
        p->watch = yun_loop_add_fd(loop, p->efd, EPOLLIN, on_event, p, NULL);
        if (p->watch < 0)
            r = p->watch;
    }
    /* Workers take no signal: the loop's signalfd must get them all, even
     * those it starts watching after the pool started (a thread that does
     * not block SIGHUP would die of it). New threads inherit the mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; r == 0 && i < threads; i++) {
        int e = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (e)
            r = -e;
        else
            p->n_threads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0) {
        yun_pool_free(p);
        return r;
    }
    *ret = p;
    return 0;
}

struct yun_pool *
yun_pool_free(struct yun_pool *p)
{
    if (!p)
        return NULL;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    /* The threads are gone: no lock needed from here. */
    deliver(p);
    while (p->queue) {
        struct pool_job *j = p->queue;
        p->queue = j->next;
        p->jobs--;
        j->done(-ECANCELED, j->data);
        free(j);
    }
    if (p->watch >= 0)
        (void)yun_loop_remove_fd(p->loop, p->watch);
    if (p->efd >= 0)
        (void)close(p->efd);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return NULL;
}

int
yun_pool_submit(struct yun_pool *p, yun_pool_work_fn work, yun_pool_done_fn done, void *data)
{
    if (!work || !done)
        return -EINVAL;
    if (p->jobs >= p->max_jobs)
        return -EBUSY;
    struct pool_job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->work = work;
    j->done = done;
    j->data = data;
    p->jobs++;
    pthread_mutex_lock(&p->lock);
    *p->queue_tail = j;
    p->queue_tail = &j->next;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

size_t
yun_pool_jobs(const struct yun_pool *p)
{
    return p ? p->jobs : 0;
}
