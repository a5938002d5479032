/* SPDX-License-Identifier: Apache-2.0
 * loop.c: the epoll event loop declared in loop.h. One epoll_wait per
 * iteration, timed by the nearest timer; the loop's own signalfd and eventfd
 * sit in the same epoll set. agent/virt-event.c hands this loop to libvirt,
 * which is why removal is always lazy: free callbacks run from the top of
 * yun_loop_run_once(), never from inside yun_loop_remove_*().
 * Watches and timers are kept in small unsorted arrays: a daemon has a few
 * hundred at most, and a linear scan per iteration costs less than keeping a
 * heap consistent under removal from callbacks. */
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"

#define LOOP_MAX_EVENTS 64
/* epoll_event.data of the loop's own fds; watches use their id (<= INT_MAX).
 * Ids rather than pointers: if a caller closes an fd before removing its
 * watch while a dup keeps the file open, the registration outlives the
 * watch, and its events must find nothing rather than freed memory. */
#define LOOP_KEY_SIGNAL ((uint64_t)1 << 32)
#define LOOP_KEY_WAKEUP ((uint64_t)2 << 32)
/* Delays beyond this are clamped so 'now + msec' cannot overflow. */
#define LOOP_MAX_DELAY_MS ((int64_t)INT32_MAX * 1000)

struct loop_watch {
    int id;
    int fd;
    uint32_t events;          /* EPOLL* bits; 0: disabled, not in the epoll set */
    bool dead;                /* removed; freed after the iteration */
    yun_loop_fd_cb cb;
    void *data;
    yun_loop_free_cb free_cb;
};

struct loop_timer {
    int id;
    int64_t due;              /* yun_now_ms() deadline; -1: disabled */
    uint64_t seq;             /* bumped on every arming: orders ties, spots re-arming */
    bool dead;                /* removed; freed after the iteration */
    bool in_cb;               /* its callback is on the stack */
    bool rearmed;             /* yun_loop_update_timer() was called from in_cb */
    yun_loop_timer_cb cb;
    void *data;
    yun_loop_free_cb free_cb;
};

struct loop_sig {
    yun_loop_signal_cb cb;    /* NULL: not handled by this loop */
    void *data;
};

/* A timer found due when the timer phase of an iteration started. */
struct loop_due {
    struct loop_timer *timer;
    int64_t due;
    uint64_t seq;
};

struct yun_loop {
    int epfd;
    int sigfd;                /* signalfd for every signal in 'sigmask' */
    int wakefd;               /* eventfd written by yun_loop_wakeup() */
    sigset_t sigmask;
    struct loop_sig sigs[NSIG];

    struct loop_watch **watches;
    size_t n_watches, cap_watches;
    struct loop_timer **timers;
    size_t n_timers, cap_timers;
    struct loop_due *due;     /* scratch for the timer phase, as big as 'timers' */
    size_t cap_due;
    size_t n_dead;            /* dead watches and timers not yet freed */

    int next_watch_id;
    int next_timer_id;
    uint64_t next_seq;

    bool running;             /* inside yun_loop_run_once() */
    bool freeing;             /* inside yun_loop_free(): adds are refused */
    bool quit;
    int quit_code;
};

int64_t
yun_now_ms(void)
{
    struct timespec ts;

    /* CLOCK_MONOTONIC cannot fail with a valid pointer. */
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
loop_grow(void **array, size_t *cap, size_t need, size_t size)
{
    size_t n;
    void *p;

    if (need <= *cap)
        return 0;
    n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    p = reallocarray(*array, n, size);
    if (!p)
        return -ENOMEM;
    *array = p;
    *cap = n;
    return 0;
}

static struct loop_watch *
loop_find_watch(struct yun_loop *loop, int id)
{
    for (size_t i = 0; i < loop->n_watches; i++)
        if (loop->watches[i]->id == id && !loop->watches[i]->dead)
            return loop->watches[i];
    return NULL;
}

static struct loop_timer *
loop_find_timer(struct yun_loop *loop, int id)
{
    for (size_t i = 0; i < loop->n_timers; i++)
        if (loop->timers[i]->id == id && !loop->timers[i]->dead)
            return loop->timers[i];
    return NULL;
}

/* Dead entries keep their id until freed, so the scans below include them:
 * an id is never shared, even after the counter wraps. */
static bool
loop_watch_id_used(struct yun_loop *loop, int id)
{
    for (size_t i = 0; i < loop->n_watches; i++)
        if (loop->watches[i]->id == id)
            return true;
    return false;
}

static bool
loop_timer_id_used(struct yun_loop *loop, int id)
{
    for (size_t i = 0; i < loop->n_timers; i++)
        if (loop->timers[i]->id == id)
            return true;
    return false;
}

static int
loop_next_id(struct yun_loop *loop, int *next, bool (*used)(struct yun_loop *, int))
{
    int id;

    do {
        id = *next;
        *next = id == INT_MAX ? 0 : id + 1;
    } while (used(loop, id));
    return id;
}

static int
loop_epoll_ctl(struct yun_loop *loop, int op, int fd, uint32_t events, uint64_t key)
{
    struct epoll_event ev = { .events = events, .data.u64 = key };

    if (epoll_ctl(loop->epfd, op, fd, &ev) < 0)
        return -errno;
    return 0;
}

/* Creates a loop with its epoll set, an empty signalfd and the wakeup
 * eventfd. Returns 0 and stores the loop in '*ret', or a negative errno
 * (-ENOMEM, or what epoll_create1/signalfd/eventfd returned). The caller
 * frees it with yun_loop_free() on the same thread that runs it. */
int
yun_loop_new(struct yun_loop **ret)
{
    _cleanup_free_ struct yun_loop *loop = NULL;
    _cleanup_close_ int epfd = -EBADF;
    _cleanup_close_ int sigfd = -EBADF;
    _cleanup_close_ int wakefd = -EBADF;
    int r;

    loop = calloc(1, sizeof *loop);
    if (!loop)
        return -ENOMEM;
    sigemptyset(&loop->sigmask);
    loop->next_watch_id = 1;
    loop->next_timer_id = 1;

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return -errno;
    sigfd = signalfd(-1, &loop->sigmask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigfd < 0)
        return -errno;
    wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakefd < 0)
        return -errno;

    loop->epfd = epfd;
    loop->sigfd = sigfd;
    loop->wakefd = wakefd;
    r = loop_epoll_ctl(loop, EPOLL_CTL_ADD, sigfd, EPOLLIN, LOOP_KEY_SIGNAL);
    if (r < 0)
        return r;
    r = loop_epoll_ctl(loop, EPOLL_CTL_ADD, wakefd, EPOLLIN, LOOP_KEY_WAKEUP);
    if (r < 0)
        return r;

    TAKE_FD(epfd);
    TAKE_FD(sigfd);
    TAKE_FD(wakefd);
    *ret = TAKE_PTR(loop);
    return 0;
}

/* Frees 'loop' (NULL is fine) and returns NULL. Calls the free callback of
 * every watch and timer, removed or not, exactly once; a free callback may
 * remove other entries, but adding new ones fails with -ESHUTDOWN. Closes
 * the loop's own fds, never the watched ones. Blocked signals stay blocked:
 * unblocking them here would let a pending SIGTERM kill the process. Not to
 * be called from a loop callback. */
struct yun_loop *
yun_loop_free(struct yun_loop *loop)
{
    if (!loop)
        return NULL;

    loop->freeing = true;
    /* One entry at a time: a free callback may still call into the loop. */
    while (loop->n_watches > 0) {
        struct loop_watch *w = loop->watches[--loop->n_watches];

        if (w->free_cb)
            w->free_cb(w->data);
        free(w);
    }
    while (loop->n_timers > 0) {
        struct loop_timer *t = loop->timers[--loop->n_timers];

        if (t->free_cb)
            t->free_cb(t->data);
        free(t);
    }

    (void)close(loop->wakefd);
    (void)close(loop->sigfd);
    (void)close(loop->epfd);
    free(loop->watches);
    free(loop->timers);
    free(loop->due);
    free(loop);
    return NULL;
}

/* Frees dead entries. Called only from yun_loop_run_once(), before the wait
 * and after dispatching, never from a callback, so no callback of theirs
 * can be on the stack. */
static void
loop_reap(struct yun_loop *loop)
{
    while (loop->n_dead > 0) {
        yun_loop_free_cb free_cb = NULL;
        void *data = NULL;
        void *entry = NULL;

        for (size_t i = 0; i < loop->n_watches && !entry; i++) {
            struct loop_watch *w = loop->watches[i];

            if (w->dead) {
                loop->watches[i] = loop->watches[--loop->n_watches];
                free_cb = w->free_cb;
                data = w->data;
                entry = w;
            }
        }
        for (size_t i = 0; i < loop->n_timers && !entry; i++) {
            struct loop_timer *t = loop->timers[i];

            if (t->dead) {
                loop->timers[i] = loop->timers[--loop->n_timers];
                free_cb = t->free_cb;
                data = t->data;
                entry = t;
            }
        }
        if (!entry)
            break; /* unreachable unless n_dead is wrong; don't spin */
        loop->n_dead--;
        /* Unlinked first: the free callback may remove or add entries. */
        free(entry);
        if (free_cb)
            free_cb(data);
    }
}

/* Watches 'fd' for 'events' (EPOLLIN, EPOLLOUT, EPOLLPRI, EPOLLRDHUP;
 * EPOLLERR and EPOLLHUP are always reported while the watch is enabled;
 * 0 adds it disabled). Returns the watch id (>= 0), -EINVAL for a NULL 'cb'
 * or edge-triggered/one-shot flags, -EBADF for a negative 'fd', -EEXIST if a
 * live watch already has 'fd', -ESHUTDOWN while the loop is being freed,
 * -ENOMEM, or epoll_ctl's error (-EPERM for a regular file). The loop never
 * closes 'fd'; close it only after yun_loop_remove_fd(). On failure
 * 'free_cb' is not called. */
int
yun_loop_add_fd(struct yun_loop *loop, int fd, uint32_t events, yun_loop_fd_cb cb,
                void *data, yun_loop_free_cb free_cb)
{
    _cleanup_free_ struct loop_watch *w = NULL;
    int r;

    if (!cb || (events & (EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE | EPOLLWAKEUP)))
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    if (loop->freeing)
        return -ESHUTDOWN;
    if (fd == loop->sigfd || fd == loop->wakefd || fd == loop->epfd)
        return -EEXIST;
    /* A dead watch no longer holds its fd: its epoll registration is gone,
     * and libvirt re-adds an fd right after removing its old handle. */
    for (size_t i = 0; i < loop->n_watches; i++)
        if (loop->watches[i]->fd == fd && !loop->watches[i]->dead)
            return -EEXIST;

    r = loop_grow((void **)&loop->watches, &loop->cap_watches, loop->n_watches + 1,
                  sizeof *loop->watches);
    if (r < 0)
        return r;
    w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->fd = fd;
    w->events = events;
    w->cb = cb;
    w->data = data;
    w->free_cb = free_cb;
    w->id = loop_next_id(loop, &loop->next_watch_id, loop_watch_id_used);
    if (events != 0) {
        r = loop_epoll_ctl(loop, EPOLL_CTL_ADD, fd, events, (uint64_t)w->id);
        if (r < 0)
            return r;
    }
    loop->watches[loop->n_watches++] = w;
    return TAKE_PTR(w)->id;
}

/* Sets the events of watch 'id' to 'events'; 0 disables it (the watch is
 * kept, out of the epoll set, so a hung-up fd cannot wake the loop). Events
 * already collected in the current iteration are filtered by the new set.
 * Returns 0, -ENOENT if 'id' is not a live watch, -EINVAL for bad flags, or
 * epoll_ctl's error (the old events then stay in force). */
int
yun_loop_update_fd(struct yun_loop *loop, int id, uint32_t events)
{
    struct loop_watch *w;
    int r = 0;

    if (events & (EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE | EPOLLWAKEUP))
        return -EINVAL;
    w = loop_find_watch(loop, id);
    if (!w)
        return -ENOENT;
    if (events == w->events)
        return 0;

    if (events == 0)
        r = loop_epoll_ctl(loop, EPOLL_CTL_DEL, w->fd, 0, 0);
    else if (w->events == 0)
        r = loop_epoll_ctl(loop, EPOLL_CTL_ADD, w->fd, events, (uint64_t)w->id);
    else
        r = loop_epoll_ctl(loop, EPOLL_CTL_MOD, w->fd, events, (uint64_t)w->id);
    if (r < 0)
        return r;
    w->events = events;
    return 0;
}

/* Removes watch 'id'. No callback for it is delivered after this returns,
 * even for events already collected in this iteration. Its free callback
 * runs at the start or end of an iteration, or from yun_loop_free(), never
 * from here. Returns 0 or -ENOENT if 'id' is not a live watch. */
int
yun_loop_remove_fd(struct yun_loop *loop, int id)
{
    struct loop_watch *w = loop_find_watch(loop, id);

    if (!w)
        return -ENOENT;
    /* Unregistered now, not when freed, so the fd can be closed or re-added
     * at once. EBADF/ENOENT mean the caller closed it first: nothing to do. */
    if (w->events != 0)
        (void)loop_epoll_ctl(loop, EPOLL_CTL_DEL, w->fd, 0, 0);
    w->events = 0;
    w->dead = true;
    loop->n_dead++;
    return 0;
}

static void
loop_timer_arm(struct yun_loop *loop, struct loop_timer *t, int64_t msec)
{
    t->seq = ++loop->next_seq;
    if (msec < 0)
        t->due = -1;
    else
        t->due = yun_now_ms() + (msec < LOOP_MAX_DELAY_MS ? msec : LOOP_MAX_DELAY_MS);
}

/* Adds a timer that calls 'cb' after 'msec' ms (0: on the next iteration,
 * -1: added disabled, see yun_loop_update_timer()). The callback's return
 * value re-arms it relative to the time it returned; YUN_LOOP_NOMORE (or
 * any negative value) removes it. If the callback re-armed or disabled its
 * own timer with yun_loop_update_timer(), that setting is kept and a
 * non-negative return value is ignored. Timers due in the same iteration
 * fire in deadline order, ties in arming order. Returns the timer id (>= 0),
 * -EINVAL, -ESHUTDOWN or -ENOMEM; on failure 'free_cb' is not called. */
int
yun_loop_add_timer(struct yun_loop *loop, int64_t msec, yun_loop_timer_cb cb, void *data,
                   yun_loop_free_cb free_cb)
{
    struct loop_timer *t;
    int r;

    if (!cb || msec < -1)
        return -EINVAL;
    if (loop->freeing)
        return -ESHUTDOWN;
    r = loop_grow((void **)&loop->timers, &loop->cap_timers, loop->n_timers + 1,
                  sizeof *loop->timers);
    if (r < 0)
        return r;
    /* Grown here so that the timer phase of an iteration never allocates. */
    r = loop_grow((void **)&loop->due, &loop->cap_due, loop->n_timers + 1, sizeof *loop->due);
    if (r < 0)
        return r;
    t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->cb = cb;
    t->data = data;
    t->free_cb = free_cb;
    loop_timer_arm(loop, t, msec);
    t->id = loop_next_id(loop, &loop->next_timer_id, loop_timer_id_used);
    loop->timers[loop->n_timers++] = t;
    return t->id;
}

/* Re-arms timer 'id' to fire 'msec' ms from now (0: next iteration, -1:
 * disabled), replacing its previous deadline. Returns 0, -EINVAL or -ENOENT
 * if 'id' is not a live timer. */
int
yun_loop_update_timer(struct yun_loop *loop, int id, int64_t msec)
{
    struct loop_timer *t;

    if (msec < -1)
        return -EINVAL;
    t = loop_find_timer(loop, id);
    if (!t)
        return -ENOENT;
    loop_timer_arm(loop, t, msec);
    if (t->in_cb)
        t->rearmed = true;
    return 0;
}

/* Removes timer 'id'; it does not fire again, even if already due in this
 * iteration. Its free callback runs later, as for yun_loop_remove_fd().
 * Returns 0 or -ENOENT if 'id' is not a live timer. */
int
yun_loop_remove_timer(struct yun_loop *loop, int id)
{
    struct loop_timer *t = loop_find_timer(loop, id);

    if (!t)
        return -ENOENT;
    t->dead = true;
    t->due = -1;
    loop->n_dead++;
    return 0;
}

/* Delivers signal 'sig' to 'cb' through the loop's signalfd. Blocks 'sig'
 * with sigprocmask() for the calling thread, and so for threads it creates
 * later: call this before starting threads, or the kernel may deliver 'sig'
 * to a thread that has it unblocked. Returns 0, -EINVAL for a bad or
 * uncatchable 'sig' or NULL 'cb', -EEXIST if 'sig' already has a callback
 * on this loop, or the errno of sigprocmask()/signalfd(). 'sig' stays
 * blocked after yun_loop_free(). */
int
yun_loop_add_signal(struct yun_loop *loop, int sig, yun_loop_signal_cb cb, void *data)
{
    sigset_t one, old, mask;

    if (sig <= 0 || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP || !cb)
        return -EINVAL;
    if (loop->sigs[sig].cb)
        return -EEXIST;

    sigemptyset(&one);
    if (sigaddset(&one, sig) < 0)
        return -EINVAL;
    mask = loop->sigmask;
    sigaddset(&mask, sig);
    if (sigprocmask(SIG_BLOCK, &one, &old) < 0)
        return -errno;
    if (signalfd(loop->sigfd, &mask, 0) < 0) {
        int r = -errno;

        /* Unblock only if this call blocked it. */
        if (!sigismember(&old, sig))
            (void)sigprocmask(SIG_UNBLOCK, &one, NULL);
        return r;
    }
    loop->sigmask = mask;
    loop->sigs[sig].cb = cb;
    loop->sigs[sig].data = data;
    return 0;
}

static int
loop_dispatch_signals(struct yun_loop *loop)
{
    struct signalfd_siginfo si;
    int n = 0;

    /* Level-triggered: anything left after a short read comes back in the
     * next iteration. */
    while (read(loop->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        int sig = (int)si.ssi_signo;

        if (sig > 0 && sig < NSIG && loop->sigs[sig].cb) {
            loop->sigs[sig].cb(loop, sig, loop->sigs[sig].data);
            n++;
        }
    }
    return n;
}

static void
loop_drain_wakeup(struct yun_loop *loop)
{
    uint64_t v;

    /* One read resets the eventfd counter; EAGAIN means already drained. */
    if (read(loop->wakefd, &v, sizeof v) < 0)
        return;
}

/* Milliseconds until the nearest armed timer, or -1 if none is armed. */
static int64_t
loop_timer_wait(struct yun_loop *loop, int64_t now)
{
    int64_t best = -1;

    for (size_t i = 0; i < loop->n_timers; i++) {
        const struct loop_timer *t = loop->timers[i];

        if (t->dead || t->due < 0)
            continue;
        if (best < 0 || t->due < best)
            best = t->due;
    }
    if (best < 0)
        return -1;
    return best > now ? best - now : 0;
}

static int
loop_due_cmp(const void *a, const void *b)
{
    const struct loop_due *x = a, *y = b;

    if (x->due != y->due)
        return x->due < y->due ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int
loop_dispatch_timers(struct yun_loop *loop, int64_t now)
{
    size_t n_due = 0;
    int n = 0;

    /* Snapshot first: a timer armed during this phase, including one that
     * returns 0, waits for the next iteration instead of spinning here. */
    for (size_t i = 0; i < loop->n_timers; i++) {
        struct loop_timer *t = loop->timers[i];

        if (!t->dead && t->due >= 0 && t->due <= now)
            loop->due[n_due++] = (struct loop_due){ t, t->due, t->seq };
    }
    /* 'due' is still NULL while no timer was ever added. */
    if (n_due > 1)
        qsort(loop->due, n_due, sizeof *loop->due, loop_due_cmp);

    /* loop->due is re-read on every step: a callback that adds a timer
     * may reallocate it (contents kept). */
    for (size_t i = 0; i < n_due; i++) {
        /* Timer structs are freed only by loop_reap(), so the pointer is
         * valid; 'seq' tells whether an earlier callback re-armed it. */
        struct loop_timer *t = loop->due[i].timer;
        int64_t next;

        if (t->dead || t->seq != loop->due[i].seq)
            continue;
        t->due = -1;
        t->in_cb = true;
        t->rearmed = false;
        next = t->cb(loop, t->id, t->data);
        t->in_cb = false;
        n++;
        if (t->dead)
            continue;
        if (next < 0)
            (void)yun_loop_remove_timer(loop, t->id);
        else if (!t->rearmed)
            loop_timer_arm(loop, t, next);
    }
    return n;
}

/* Runs one iteration: frees entries removed earlier, waits in one
 * epoll_wait() for fd events, signals, a wakeup, or the nearest timer, at
 * most 'timeout_ms' ms (-1: no limit; 0: don't wait), then dispatches fd
 * and signal callbacks followed by due timers, and frees what they removed.
 * Returns the number of callbacks dispatched (a wakeup alone counts 0),
 * -EINVAL for 'timeout_ms' < -1, -EBUSY if called from a loop callback,
 * or epoll_wait's error. EINTR is retried with the remaining time. */
int
yun_loop_run_once(struct yun_loop *loop, int timeout_ms)
{
    struct epoll_event evs[LOOP_MAX_EVENTS];
    int64_t start, now;
    int n, count = 0;

    if (timeout_ms < -1)
        return -EINVAL;
    if (loop->running)
        return -EBUSY;
    loop->running = true;

    loop_reap(loop);

    start = yun_now_ms();
    now = start;
    for (;;) {
        int64_t wait = loop_timer_wait(loop, now);

        if (timeout_ms >= 0) {
            int64_t left = start + timeout_ms - now;

            if (left < 0)
                left = 0;
            if (wait < 0 || left < wait)
                wait = left;
        }
        if (wait > INT_MAX)
            wait = INT_MAX;
        n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, (int)wait);
        if (n >= 0)
            break;
        if (errno != EINTR) {
            int r = -errno;

            loop->running = false;
            return r;
        }
        now = yun_now_ms();
    }

    for (int i = 0; i < n; i++) {
        uint64_t key = evs[i].data.u64;
        struct loop_watch *w;
        uint32_t events;

        if (key == LOOP_KEY_WAKEUP) {
            loop_drain_wakeup(loop);
            continue;
        }
        if (key == LOOP_KEY_SIGNAL) {
            count += loop_dispatch_signals(loop);
            continue;
        }
        /* Looked up again for every event: an earlier callback of this
         * iteration may have removed or disabled it, and its stale events
         * must not be delivered. */
        w = loop_find_watch(loop, (int)key);
        if (!w)
            continue;
        events = evs[i].events & (w->events | EPOLLERR | EPOLLHUP);
        if (w->events == 0 || events == 0)
            continue;
        w->cb(loop, w->id, w->fd, events, w->data);
        count++;
    }

    count += loop_dispatch_timers(loop, yun_now_ms());

    loop_reap(loop);
    loop->running = false;
    return count;
}

/* Runs iterations until yun_loop_quit() is called, also if it was called
 * before this. Returns the code given to yun_loop_quit(), or a negative
 * errno if an iteration failed. The quit request is consumed, so the loop
 * can be run again. */
int
yun_loop_run(struct yun_loop *loop)
{
    while (!loop->quit) {
        int r = yun_loop_run_once(loop, -1);

        if (r < 0)
            return r;
    }
    loop->quit = false;
    return loop->quit_code;
}

/* Makes yun_loop_run() return 'code' once the current iteration is done.
 * Must be called on the loop's thread, usually from a callback; other
 * threads must post to the loop instead. */
void
yun_loop_quit(struct yun_loop *loop, int code)
{
    loop->quit = true;
    loop->quit_code = code;
}

/* Wakes the loop: a yun_loop_run_once() blocked in epoll_wait() returns
 * after this, one that is not yet waiting returns without sleeping. The only
 * loop function that is safe to call from another thread or a signal
 * handler. */
void
yun_loop_wakeup(struct yun_loop *loop)
{
    uint64_t one = 1;

    /* EAGAIN: the counter is saturated, so a wakeup is pending anyway. */
    if (write(loop->wakefd, &one, sizeof one) < 0)
        return;
}
