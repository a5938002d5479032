/* SPDX-License-Identifier: Apache-2.0
 * virt-event.c: libvirt's event implementation (virEventRegisterImpl) on top
 * of the agent's yun_loop (common/loop.c). libvirt's handles and timeouts
 * become yun_loop watches and timers; libvirt's free callbacks run from the
 * loop's lazy free, never from inside virEventRemove*().
 *
 * yun_loop is single-threaded, but libvirt calls these functions from any
 * thread: an API call on a worker thread does its own socket I/O and
 * disables the event loop's watch meanwhile (virNetClientIO), and domain
 * events are queued from whichever thread received them. So libvirt's view
 * lives in a mutex-guarded table with our own ids; the loop thread applies
 * it to the loop directly, other threads mark entries dirty and kick an
 * eventfd that the loop thread watches. The lock is a leaf: it is never held
 * while libvirt code runs. */
#include "virt-event.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

#include "cleanup.h"
#include "loop.h"

enum ve_kind {
    VE_HANDLE,
    VE_TIMEOUT,
};

struct ve_entry {
    enum ve_kind kind;
    int id;                   /* libvirt's watch or timer number, > 0 */
    int yid;                  /* the yun_loop watch or timer id; -1 until applied */
    bool removed;             /* removed by libvirt: lookups skip it */
    bool dirty;               /* libvirt's wishes not yet applied to the loop */
    int fd;                   /* handle: libvirt's fd, passed back to libvirt */
    int dupfd;                /* handle: our dup of 'fd' given to the loop, or -1 */
    uint32_t events;          /* handle: wanted EPOLL* bits; 0: disabled */
    int interval;             /* timeout: period in ms; 0: every iteration; -1: off */
    virEventHandleCallback hcb;
    virEventTimeoutCallback tcb;
    void *opaque;
    virFreeCallback ff;       /* libvirt's free callback for 'opaque', may be NULL */
};

static struct {
    pthread_mutex_t lock;     /* guards all of this struct */
    struct yun_loop *loop;    /* NULL before registration and after the loop is freed */
    pthread_t thread;         /* the thread that runs 'loop' */
    int kickfd;               /* eventfd written after queueing from another thread */
    bool registered;
    bool pending;             /* an entry is dirty and the loop thread was kicked */
    struct ve_entry **entries;
    size_t n_entries, cap_entries;
    int next_watch;
    int next_timer;
} ve = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .kickfd = -EBADF,
    .next_watch = 1,
    .next_timer = 1,
};

static pthread_mutex_t *
ve_lock(void)
{
    pthread_mutex_lock(&ve.lock);
    return &ve.lock;
}

static void
ve_unlockp(pthread_mutex_t **m)
{
    if (*m)
        pthread_mutex_unlock(*m);
}

/* A lock guard: held until the variable leaves scope, which is its only use. */
#define _cleanup_ve_unlock_ _cleanup_(ve_unlockp) __attribute__((unused))

static uint32_t
ve_events_to_epoll(int events)
{
    uint32_t r = 0;

    if (events & VIR_EVENT_HANDLE_READABLE)
        r |= EPOLLIN;
    if (events & VIR_EVENT_HANDLE_WRITABLE)
        r |= EPOLLOUT;
    if (events & VIR_EVENT_HANDLE_ERROR)
        r |= EPOLLERR;
    if (events & VIR_EVENT_HANDLE_HANGUP)
        r |= EPOLLHUP;
    return r;
}

static int
ve_events_from_epoll(uint32_t events)
{
    int r = 0;

    if (events & EPOLLIN)
        r |= VIR_EVENT_HANDLE_READABLE;
    if (events & EPOLLOUT)
        r |= VIR_EVENT_HANDLE_WRITABLE;
    if (events & EPOLLERR)
        r |= VIR_EVENT_HANDLE_ERROR;
    if (events & EPOLLHUP)
        r |= VIR_EVENT_HANDLE_HANGUP;
    return r;
}

static bool
ve_on_loop_thread(void)
{
    return ve.loop && pthread_equal(pthread_self(), ve.thread);
}

/* Removed entries are skipped: libvirt must not reach one again, even while
 * it waits for its lazy free. */
static struct ve_entry *
ve_find(enum ve_kind kind, int id)
{
    for (size_t i = 0; i < ve.n_entries; i++) {
        struct ve_entry *e = ve.entries[i];

        if (e->kind == kind && e->id == id && !e->removed)
            return e;
    }
    return NULL;
}

static bool
ve_id_used(enum ve_kind kind, int id)
{
    for (size_t i = 0; i < ve.n_entries; i++)
        if (ve.entries[i]->kind == kind && ve.entries[i]->id == id)
            return true;
    return false;
}

/* libvirt documents ids as positive, and its own implementations start at 1. */
static int
ve_next_id(enum ve_kind kind)
{
    int *next = kind == VE_HANDLE ? &ve.next_watch : &ve.next_timer;
    int id;

    do {
        id = *next;
        *next = id == INT_MAX ? 1 : id + 1;
    } while (ve_id_used(kind, id));
    return id;
}

static struct ve_entry *
ve_entry_new(enum ve_kind kind, void *opaque, virFreeCallback ff)
{
    struct ve_entry *e;

    if (ve.n_entries == ve.cap_entries) {
        size_t cap = ve.cap_entries ? ve.cap_entries * 2 : 16;
        struct ve_entry **p = reallocarray(ve.entries, cap, sizeof *p);

        if (!p)
            return NULL;
        ve.entries = p;
        ve.cap_entries = cap;
    }
    e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->kind = kind;
    e->id = ve_next_id(kind);
    e->yid = -1;
    e->fd = -EBADF;
    e->dupfd = -EBADF;
    e->opaque = opaque;
    e->ff = ff;
    ve.entries[ve.n_entries++] = e;
    return e;
}

static void
ve_entry_unlink(struct ve_entry *e)
{
    for (size_t i = 0; i < ve.n_entries; i++) {
        if (ve.entries[i] == e) {
            ve.entries[i] = ve.entries[--ve.n_entries];
            return;
        }
    }
}

/* yun_loop free callback of every entry: the loop calls it after the
 * removal, with no callback of the entry on the stack and no libvirt lock
 * held, which is what libvirt's ff needs. */
static void
ve_entry_free(void *data)
{
    struct ve_entry *e = data;

    {
        _cleanup_ve_unlock_ pthread_mutex_t *locked = ve_lock();

        ve_entry_unlink(e);
    }
    /* Only left open if the loop was freed under a live handle. */
    if (e->dupfd >= 0)
        (void)close(e->dupfd);
    if (e->ff)
        e->ff(e->opaque);
    free(e);
}

static void ve_handle_cb(struct yun_loop *loop, int yid, int fd, uint32_t events, void *data);
static int64_t ve_timeout_cb(struct yun_loop *loop, int yid, void *data);

static int64_t
ve_noop_cb(struct yun_loop *loop, int yid, void *data)
{
    return YUN_LOOP_NOMORE;
}

/* Makes the loop match 'e'. Loop thread only, lock held. Never frees 'e':
 * the loop calls ve_entry_free() later. */
static int
ve_apply(struct ve_entry *e)
{
    struct yun_loop *loop = ve.loop;
    int r;

    e->dirty = false;
    if (e->removed) {
        if (e->yid < 0) {
            /* Added and removed by other threads before reaching the loop.
             * A disabled timer borrows the loop's lazy free so that ff still
             * runs from a clean stack. If that fails (no memory, loop being
             * freed) the entry leaks rather than calling ff here. */
            r = yun_loop_add_timer(loop, -1, ve_noop_cb, e, ve_entry_free);
            if (r < 0)
                return r;
            (void)yun_loop_remove_timer(loop, r);
            return 0;
        }
        if (e->kind == VE_TIMEOUT)
            return yun_loop_remove_timer(loop, e->yid);
        r = yun_loop_remove_fd(loop, e->yid);
        /* Unregistered from epoll now, so the dup can go at once: libvirt
         * expects the socket to close when it closes its own fd. */
        if (e->dupfd >= 0)
            (void)close(TAKE_FD(e->dupfd));
        return r;
    }

    if (e->kind == VE_TIMEOUT) {
        if (e->yid >= 0)
            return yun_loop_update_timer(loop, e->yid, e->interval);
        r = yun_loop_add_timer(loop, e->interval, ve_timeout_cb, e, ve_entry_free);
        if (r < 0)
            return r;
        e->yid = r;
        return 0;
    }

    if (e->yid >= 0)
        return yun_loop_update_fd(loop, e->yid, e->events);
    r = yun_loop_add_fd(loop, e->fd, e->events, ve_handle_cb, e, ve_entry_free);
    if (r == -EEXIST) {
        /* libvirt allows one fd in several handles with disjoint events,
         * and yun_loop does not. epoll keys registrations on (fd, file), so
         * a dup of the fd is a registration of its own. */
        _cleanup_close_ int dupfd = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);

        if (dupfd < 0)
            return -errno;
        r = yun_loop_add_fd(loop, dupfd, e->events, ve_handle_cb, e, ve_entry_free);
        if (r >= 0)
            e->dupfd = TAKE_FD(dupfd);
    }
    if (r < 0)
        return r;
    e->yid = r;
    return 0;
}

/* Applies what other threads queued. Loop thread only, lock held. A failure
 * cannot be reported to libvirt, whose call already returned: the entry
 * stays inert until libvirt updates or removes it. */
static void
ve_sync(void)
{
    if (!ve.pending)
        return;
    ve.pending = false;
    for (size_t i = 0; i < ve.n_entries; i++)
        if (ve.entries[i]->dirty)
            (void)ve_apply(ve.entries[i]);
}

/* Records that 'e' changed: applied now on the loop thread, else queued for
 * it. Lock held. */
static void
ve_commit(struct ve_entry *e)
{
    uint64_t one = 1;

    e->dirty = true;
    if (!ve.loop)
        return;
    if (ve_on_loop_thread()) {
        (void)ve_apply(e);
        return;
    }
    ve.pending = true;
    /* EAGAIN: the counter is saturated, so a kick is pending anyway. */
    if (write(ve.kickfd, &one, sizeof one) < 0)
        return;
}

static void
ve_kick_cb(struct yun_loop *loop, int yid, int fd, uint32_t events, void *data)
{
    _cleanup_ve_unlock_ pthread_mutex_t *locked = NULL;
    uint64_t v;

    /* Drained before the sync, so a kick that races with it is not lost:
     * it wakes the next iteration instead. */
    if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN)
        return;
    locked = ve_lock();
    ve_sync();
}

static void
ve_kick_free(void *data)
{
    _cleanup_ve_unlock_ pthread_mutex_t *locked = ve_lock();

    /* The loop is going away: later libvirt calls fail instead of touching
     * it. */
    ve.loop = NULL;
    if (ve.kickfd >= 0)
        (void)close(TAKE_FD(ve.kickfd));
}

static void
ve_handle_cb(struct yun_loop *loop, int yid, int fd, uint32_t events, void *data)
{
    struct ve_entry *e = data;
    virEventHandleCallback cb;
    void *opaque;
    int id;

    pthread_mutex_lock(&ve.lock);
    /* Another thread may have disabled or removed it after epoll_wait()
     * returned; the change is queued but not yet applied to the loop. */
    events &= e->events | EPOLLERR | EPOLLHUP;
    if (e->removed || e->events == 0 || events == 0) {
        pthread_mutex_unlock(&ve.lock);
        return;
    }
    cb = e->hcb;
    opaque = e->opaque;
    id = e->id;
    fd = e->fd;
    pthread_mutex_unlock(&ve.lock);

    cb(id, fd, ve_events_from_epoll(events), opaque);
}

static int64_t
ve_timeout_cb(struct yun_loop *loop, int yid, void *data)
{
    struct ve_entry *e = data;
    virEventTimeoutCallback cb;
    void *opaque;
    int64_t next;
    int id;

    pthread_mutex_lock(&ve.lock);
    if (e->removed || e->interval < 0) {
        /* Disabled or removed by another thread, not yet applied: apply it
         * now, from inside the callback, so the loop keeps that state over
         * our return value. */
        (void)ve_apply(e);
        pthread_mutex_unlock(&ve.lock);
        return 0;
    }
    cb = e->tcb;
    opaque = e->opaque;
    id = e->id;
    pthread_mutex_unlock(&ve.lock);

    cb(id, opaque);

    pthread_mutex_lock(&ve.lock);
    /* libvirt timeouts are periodic. A change libvirt made during the
     * callback on this thread was applied with yun_loop_update_timer() and
     * wins over the return value; one from another thread is applied here. */
    if (e->dirty)
        (void)ve_apply(e);
    next = e->removed || e->interval < 0 ? 0 : e->interval;
    pthread_mutex_unlock(&ve.lock);
    return next;
}

static int
ve_add_handle(int fd, int events, virEventHandleCallback cb, void *opaque, virFreeCallback ff)
{
    _cleanup_ve_unlock_ pthread_mutex_t *locked = ve_lock();
    struct ve_entry *e;

    if (!ve.loop || fd < 0 || !cb)
        return -1;
    e = ve_entry_new(VE_HANDLE, opaque, ff);
    if (!e)
        return -1;
    e->fd = fd;
    e->events = ve_events_to_epoll(events);
    e->hcb = cb;
    e->dirty = true;
    if (ve_on_loop_thread()) {
        if (ve_apply(e) < 0) {
            /* libvirt frees 'opaque' itself when the add fails. */
            ve_entry_unlink(e);
            free(e);
            return -1;
        }
    } else {
        ve_commit(e);
    }
    return e->id;
}

static void
ve_update_handle(int watch, int events)
{
    _cleanup_ve_unlock_ pthread_mutex_t *locked = ve_lock();
    struct ve_entry *e = ve_find(VE_HANDLE, watch);
    uint32_t ev = ve_events_to_epoll(events);

    if (!e || e->events == ev)
        return;
    e->events = ev;
    ve_commit(e);
}

static int
ve_remove_handle(int watch)
{
    _cleanup_ve_unlock_ pthread_mutex_t *locked = ve_lock();
    struct ve_entry *e = ve_find(VE_HANDLE, watch);

    if (!e)
        return -1;
    e->removed = true;
    ve_commit(e);
    return 0;
}

static int
ve_add_timeout(int interval, virEventTimeoutCallback cb, void *opaque, virFreeCallback ff)
{
    _cleanup_ve_unlock_ pthread_mutex_t *locked = ve_lock();
    struct ve_entry *e;

    if (!ve.loop || !cb)
        return -1;
    e = ve_entry_new(VE_TIMEOUT, opaque, ff);
    if (!e)
        return -1;
    e->interval = interval < 0 ? -1 : interval;
    e->tcb = cb;
    e->dirty = true;
    if (ve_on_loop_thread()) {
        if (ve_apply(e) < 0) {
            ve_entry_unlink(e);
            free(e);
            return -1;
        }
    } else {
        ve_commit(e);
    }
    return e->id;
}

/* Always re-arms, also with an unchanged interval: libvirt's own loops
 * restart the period from now on every update. */
static void
ve_update_timeout(int timer, int interval)
{
    _cleanup_ve_unlock_ pthread_mutex_t *locked = ve_lock();
    struct ve_entry *e = ve_find(VE_TIMEOUT, timer);

    if (!e)
        return;
    e->interval = interval < 0 ? -1 : interval;
    ve_commit(e);
}

static int
ve_remove_timeout(int timer)
{
    _cleanup_ve_unlock_ pthread_mutex_t *locked = ve_lock();
    struct ve_entry *e = ve_find(VE_TIMEOUT, timer);

    if (!e)
        return -1;
    e->removed = true;
    ve_commit(e);
    return 0;
}

/* Installs 'loop' as libvirt's event implementation; see virt-event.h for
 * the threading contract. 'loop' must outlive every libvirt connection;
 * once it is freed, libvirt's further adds fail. */
int
agent_virt_event_register(struct yun_loop *loop)
{
    _cleanup_close_ int kickfd = -EBADF;
    int r;

    if (virInitialize() < 0)
        return -EIO;
    {
        _cleanup_ve_unlock_ pthread_mutex_t *locked = ve_lock();

        if (ve.registered)
            return -EALREADY;
        kickfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (kickfd < 0)
            return -errno;
        r = yun_loop_add_fd(loop, kickfd, EPOLLIN, ve_kick_cb, NULL, ve_kick_free);
        if (r < 0)
            return r;
        ve.kickfd = TAKE_FD(kickfd);
        ve.loop = loop;
        ve.thread = pthread_self();
        ve.registered = true;
    }
    /* Outside the lock: libvirt calls none of the functions back here. */
    virEventRegisterImpl(ve_add_handle, ve_update_handle, ve_remove_handle, ve_add_timeout,
                         ve_update_timeout, ve_remove_timeout);
    return 0;
}
