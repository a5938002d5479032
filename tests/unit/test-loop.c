/* SPDX-License-Identifier: Apache-2.0
 * test-loop.c: unit tests of common/loop.c: fd watches, lazy removal,
 * timers, signals, wakeup, quit and free. Timing asserts have lower bounds
 * only: CI machines stall, they never run fast. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "cleanup.h"
#include "loop.h"

/* Bounds every "run until" loop so a bug fails the test instead of hanging. */
#define DEADLINE_MS 5000

struct pipe_pair {
    int r;
    int w;
};

/* What a callback saw; shared by most tests. */
struct probe {
    struct yun_loop *loop;
    int calls;                /* callbacks delivered */
    int frees;                /* free callbacks run */
    int last_id;
    uint32_t last_events;
    int remove_id;            /* watch the callback removes; -1: none */
    int frees_seen_in_cb;     /* 'frees' as seen inside the callback */
};

static void
pipe_open(struct pipe_pair *p)
{
    int fds[2];

    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    p->r = fds[0];
    p->w = fds[1];
}

static void
pipe_close(struct pipe_pair *p)
{
    (void)close(p->r);
    (void)close(p->w);
}

static void
pipe_poke(struct pipe_pair *p)
{
    assert_int_equal(write(p->w, "x", 1), 1);
}

static void
probe_free(void *data)
{
    struct probe *pr = data;

    pr->frees++;
}

static void
probe_fd_cb(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct probe *pr = data;

    pr->calls++;
    pr->last_id = id;
    pr->last_events = events;
    if (pr->remove_id >= 0) {
        assert_int_equal(yun_loop_remove_fd(loop, pr->remove_id), 0);
        /* Removal is lazy: nothing freed while we are on the stack. */
        pr->frees_seen_in_cb = pr->frees;
        pr->remove_id = -1;
    }
}

static int
setup_loop(void **state)
{
    struct yun_loop *loop = NULL;

    assert_int_equal(yun_loop_new(&loop), 0);
    *state = loop;
    return 0;
}

static int
teardown_loop(void **state)
{
    *state = yun_loop_free(*state);
    return 0;
}

static void
test_fd_readable(void **state)
{
    struct yun_loop *loop = *state;
    struct probe pr = { .remove_id = -1 };
    struct pipe_pair p;
    int id;

    pipe_open(&p);
    id = yun_loop_add_fd(loop, p.r, EPOLLIN, probe_fd_cb, &pr, probe_free);
    assert_true(id >= 0);
    assert_int_equal(yun_loop_add_fd(loop, p.r, EPOLLIN, probe_fd_cb, &pr, NULL), -EEXIST);
    assert_int_equal(yun_loop_add_fd(loop, -1, EPOLLIN, probe_fd_cb, &pr, NULL), -EBADF);

    assert_int_equal(yun_loop_run_once(loop, 0), 0);
    assert_int_equal(pr.calls, 0);

    pipe_poke(&p);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(pr.calls, 1);
    assert_int_equal(pr.last_id, id);
    assert_true(pr.last_events & EPOLLIN);

    /* Level-triggered: unread data fires again. */
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(pr.calls, 2);

    assert_int_equal(yun_loop_remove_fd(loop, id), 0);
    assert_int_equal(yun_loop_remove_fd(loop, id), -ENOENT);
    assert_int_equal(yun_loop_update_fd(loop, id, EPOLLIN), -ENOENT);
    assert_int_equal(pr.frees, 0);
    assert_int_equal(yun_loop_run_once(loop, 0), 0);
    assert_int_equal(pr.calls, 2);
    assert_int_equal(pr.frees, 1);
    pipe_close(&p);
}

static void
test_fd_update(void **state)
{
    struct yun_loop *loop = *state;
    struct probe pr = { .remove_id = -1 };
    struct pipe_pair p;
    int id;

    pipe_open(&p);
    /* Added disabled. */
    id = yun_loop_add_fd(loop, p.r, 0, probe_fd_cb, &pr, probe_free);
    assert_true(id >= 0);
    pipe_poke(&p);
    assert_int_equal(yun_loop_run_once(loop, 50), 0);
    assert_int_equal(pr.calls, 0);

    assert_int_equal(yun_loop_update_fd(loop, id, EPOLLIN), 0);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(pr.calls, 1);

    assert_int_equal(yun_loop_update_fd(loop, id, 0), 0);
    assert_int_equal(yun_loop_run_once(loop, 50), 0);
    assert_int_equal(pr.calls, 1);

    /* A disabled watch ignores even a hangup, which epoll always reports. */
    (void)close(p.w);
    p.w = -1;
    assert_int_equal(yun_loop_run_once(loop, 50), 0);
    assert_int_equal(pr.calls, 1);

    assert_int_equal(yun_loop_update_fd(loop, id, EPOLLIN), 0);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(pr.calls, 2);
    assert_int_equal(yun_loop_update_fd(loop, id, EPOLLET), -EINVAL);

    assert_int_equal(yun_loop_remove_fd(loop, id), 0);
    assert_int_equal(yun_loop_run_once(loop, 0), 0);
    assert_int_equal(pr.frees, 1);
    (void)close(p.r);
}

static void
test_remove_self_in_cb(void **state)
{
    struct yun_loop *loop = *state;
    struct probe pr = { .remove_id = -1, .frees_seen_in_cb = -1 };
    struct pipe_pair p;
    int id;

    pipe_open(&p);
    id = yun_loop_add_fd(loop, p.r, EPOLLIN, probe_fd_cb, &pr, probe_free);
    assert_true(id >= 0);
    pr.remove_id = id;
    pipe_poke(&p);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(pr.calls, 1);
    assert_int_equal(pr.frees_seen_in_cb, 0);
    assert_int_equal(pr.frees, 1);

    /* The data is still unread, but the watch is gone. */
    assert_int_equal(yun_loop_run_once(loop, 50), 0);
    assert_int_equal(pr.calls, 1);
    assert_int_equal(pr.frees, 1);

    /* The fd is free for a new watch. */
    id = yun_loop_add_fd(loop, p.r, EPOLLIN, probe_fd_cb, &pr, NULL);
    assert_true(id >= 0);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(pr.calls, 2);
    pipe_close(&p);
}

static void
test_remove_other_in_cb(void **state)
{
    struct yun_loop *loop = *state;
    struct probe a = { .remove_id = -1, .frees_seen_in_cb = -1 };
    struct probe b = { .remove_id = -1, .frees_seen_in_cb = -1 };
    struct pipe_pair pa, pb;
    int ida, idb;

    pipe_open(&pa);
    pipe_open(&pb);
    ida = yun_loop_add_fd(loop, pa.r, EPOLLIN, probe_fd_cb, &a, probe_free);
    idb = yun_loop_add_fd(loop, pb.r, EPOLLIN, probe_fd_cb, &b, probe_free);
    assert_true(ida >= 0 && idb >= 0 && ida != idb);
    /* Each removes the other: whichever runs first, epoll has already
     * returned both, and the second must not be delivered. */
    a.remove_id = idb;
    b.remove_id = ida;
    pipe_poke(&pa);
    pipe_poke(&pb);

    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(a.calls + b.calls, 1);
    if (a.calls) {
        assert_int_equal(a.frees_seen_in_cb, 0);
        assert_int_equal(b.frees, 1);
        assert_int_equal(a.frees, 0);
        assert_int_equal(yun_loop_remove_fd(loop, idb), -ENOENT);
        assert_int_equal(yun_loop_remove_fd(loop, ida), 0);
    } else {
        assert_int_equal(b.frees_seen_in_cb, 0);
        assert_int_equal(a.frees, 1);
        assert_int_equal(b.frees, 0);
        assert_int_equal(yun_loop_remove_fd(loop, ida), -ENOENT);
        assert_int_equal(yun_loop_remove_fd(loop, idb), 0);
    }
    assert_int_equal(yun_loop_run_once(loop, 0), 0);
    assert_int_equal(a.calls + b.calls, 1);
    assert_int_equal(a.frees, 1);
    assert_int_equal(b.frees, 1);
    pipe_close(&pa);
    pipe_close(&pb);
}

struct timer_log {
    int order[16];
    int n;
    int64_t ret;              /* what the callback returns */
    int rearms_left;          /* returns 'ret' this many times, then NOMORE */
    int frees;
};

static int64_t
log_timer_cb(struct yun_loop *loop, int id, void *data)
{
    struct timer_log *log = data;

    if (log->n < (int)ELEMENTSOF(log->order))
        log->order[log->n] = id;
    log->n++;
    if (log->rearms_left > 0) {
        log->rearms_left--;
        return log->ret;
    }
    return YUN_LOOP_NOMORE;
}

static void
log_free(void *data)
{
    struct timer_log *log = data;

    log->frees++;
}

static void
run_until(struct yun_loop *loop, const int *counter, int want)
{
    int64_t deadline = yun_now_ms() + DEADLINE_MS;

    while (*counter < want && yun_now_ms() < deadline)
        assert_true(yun_loop_run_once(loop, 100) >= 0);
    assert_int_equal(*counter, want);
}

static void
test_timers_in_order(void **state)
{
    struct yun_loop *loop = *state;
    struct timer_log log = { 0 };
    int64_t start = yun_now_ms();
    int t30, t10, t20;

    t30 = yun_loop_add_timer(loop, 30, log_timer_cb, &log, log_free);
    t10 = yun_loop_add_timer(loop, 10, log_timer_cb, &log, log_free);
    t20 = yun_loop_add_timer(loop, 20, log_timer_cb, &log, log_free);
    assert_true(t30 >= 0 && t10 >= 0 && t20 >= 0);
    run_until(loop, &log.n, 3);
    assert_true(yun_now_ms() - start >= 30);
    assert_int_equal(log.order[0], t10);
    assert_int_equal(log.order[1], t20);
    assert_int_equal(log.order[2], t30);
    /* NOMORE removed them; frees run by the end of the iteration. */
    assert_int_equal(log.frees, 3);
    assert_int_equal(yun_loop_remove_timer(loop, t10), -ENOENT);
    assert_int_equal(yun_loop_update_timer(loop, t10, 5), -ENOENT);

    /* Equal deadlines fire in arming order. */
    log = (struct timer_log){ 0 };
    t10 = yun_loop_add_timer(loop, 0, log_timer_cb, &log, log_free);
    t20 = yun_loop_add_timer(loop, 0, log_timer_cb, &log, log_free);
    assert_int_equal(yun_loop_run_once(loop, 1000), 2);
    assert_int_equal(log.order[0], t10);
    assert_int_equal(log.order[1], t20);
}

static void
test_timer_rearm(void **state)
{
    struct yun_loop *loop = *state;
    struct timer_log log = { .ret = 10, .rearms_left = 3 };
    int64_t start = yun_now_ms();
    int id;

    id = yun_loop_add_timer(loop, 10, log_timer_cb, &log, log_free);
    assert_true(id >= 0);
    run_until(loop, &log.n, 4);
    assert_true(yun_now_ms() - start >= 40);
    assert_int_equal(log.frees, 1);
    assert_int_equal(yun_loop_run_once(loop, 50), 0);
    assert_int_equal(log.n, 4);
    assert_int_equal(log.frees, 1);
}

static void
test_timer_update(void **state)
{
    struct yun_loop *loop = *state;
    struct timer_log log = { 0 };
    int64_t start;
    int id;

    /* A long timer brought forward. */
    id = yun_loop_add_timer(loop, 100000, log_timer_cb, &log, log_free);
    assert_true(id >= 0);
    assert_int_equal(yun_loop_update_timer(loop, id, 10), 0);
    start = yun_now_ms();
    run_until(loop, &log.n, 1);
    assert_true(yun_now_ms() - start >= 9);
    assert_int_equal(log.frees, 1);

    /* Added disabled, enabled later. */
    log = (struct timer_log){ 0 };
    id = yun_loop_add_timer(loop, -1, log_timer_cb, &log, log_free);
    assert_true(id >= 0);
    assert_int_equal(yun_loop_run_once(loop, 50), 0);
    assert_int_equal(yun_loop_update_timer(loop, id, 0), 0);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(log.n, 1);

    /* Disabled before it fires. */
    log = (struct timer_log){ 0 };
    id = yun_loop_add_timer(loop, 10, log_timer_cb, &log, log_free);
    assert_int_equal(yun_loop_update_timer(loop, id, -1), 0);
    assert_int_equal(yun_loop_update_timer(loop, id, -2), -EINVAL);
    assert_int_equal(yun_loop_run_once(loop, 50), 0);
    assert_int_equal(log.n, 0);
    assert_int_equal(yun_loop_remove_timer(loop, id), 0);
    assert_int_equal(yun_loop_run_once(loop, 0), 0);
    assert_int_equal(log.frees, 1);
    assert_int_equal(yun_loop_add_timer(loop, -2, log_timer_cb, &log, NULL), -EINVAL);
}

struct self_update {
    int calls;
    int64_t update;           /* passed to update_timer on itself */
};

static int64_t
self_update_cb(struct yun_loop *loop, int id, void *data)
{
    struct self_update *su = data;

    su->calls++;
    assert_int_equal(yun_loop_update_timer(loop, id, su->update), 0);
    return 0; /* ignored: the update wins */
}

static void
test_timer_update_in_cb_wins(void **state)
{
    struct yun_loop *loop = *state;
    struct self_update su = { .update = -1 };
    int id;

    id = yun_loop_add_timer(loop, 0, self_update_cb, &su, NULL);
    assert_true(id >= 0);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    /* Disabled by its own callback despite returning 0. */
    assert_int_equal(yun_loop_run_once(loop, 50), 0);
    assert_int_equal(su.calls, 1);
    assert_int_equal(yun_loop_remove_timer(loop, id), 0);
}

struct zero_timer {
    struct yun_loop *loop;
    int outer_calls;
    int inner_calls;
    int inner_id;
};

static int64_t
zero_inner_cb(struct yun_loop *loop, int id, void *data)
{
    struct zero_timer *z = data;

    z->inner_calls++;
    return 0; /* every iteration, but once per iteration */
}

static int64_t
zero_outer_cb(struct yun_loop *loop, int id, void *data)
{
    struct zero_timer *z = data;

    z->outer_calls++;
    z->inner_id = yun_loop_add_timer(loop, 0, zero_inner_cb, z, NULL);
    assert_true(z->inner_id >= 0);
    return YUN_LOOP_NOMORE;
}

static void
test_timer_zero_next_iteration(void **state)
{
    struct yun_loop *loop = *state;
    struct zero_timer z = { .loop = loop };

    assert_true(yun_loop_add_timer(loop, 0, zero_outer_cb, &z, NULL) >= 0);
    /* The 0 ms timer added from a callback waits for the next iteration. */
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(z.outer_calls, 1);
    assert_int_equal(z.inner_calls, 0);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(z.inner_calls, 1);
    /* Returning 0 re-arms for the next iteration, without spinning in one. */
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(z.inner_calls, 2);
    assert_int_equal(yun_loop_remove_timer(loop, z.inner_id), 0);
    assert_int_equal(yun_loop_run_once(loop, 0), 0);
    assert_int_equal(z.inner_calls, 2);
}

static int64_t
remove_other_timer_cb(struct yun_loop *loop, int id, void *data)
{
    int *other = data;

    /* Both are due in this iteration: the other must not fire. */
    if (*other >= 0) {
        assert_int_equal(yun_loop_remove_timer(loop, *other), 0);
        *other = -1;
    }
    return YUN_LOOP_NOMORE;
}

static void
test_timer_remove_due_in_cb(void **state)
{
    struct yun_loop *loop = *state;
    struct timer_log log = { 0 };
    int other;

    assert_true(yun_loop_add_timer(loop, 0, remove_other_timer_cb, &other, NULL) >= 0);
    other = yun_loop_add_timer(loop, 0, log_timer_cb, &log, log_free);
    assert_true(other >= 0);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(log.n, 0);
    assert_int_equal(log.frees, 1);
}

struct update_other {
    int other;
    int64_t msec;             /* what the first callback sets the other to */
};

static int64_t
update_other_timer_cb(struct yun_loop *loop, int id, void *data)
{
    struct update_other *uo = data;

    assert_int_equal(yun_loop_update_timer(loop, uo->other, uo->msec), 0);
    return YUN_LOOP_NOMORE;
}

static void
test_timer_update_due_in_cb(void **state)
{
    struct yun_loop *loop = *state;
    struct timer_log log = { 0 };
    struct update_other uo = { .msec = -1 };

    /* Due together; the first disables the second, which must not fire. */
    assert_true(yun_loop_add_timer(loop, 0, update_other_timer_cb, &uo, NULL) >= 0);
    uo.other = yun_loop_add_timer(loop, 0, log_timer_cb, &log, log_free);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(log.n, 0);
    assert_int_equal(yun_loop_run_once(loop, 50), 0);
    assert_int_equal(log.n, 0);

    /* Re-armed to 0 by the first: fires on the next iteration, not this. */
    uo.msec = 0;
    assert_int_equal(yun_loop_update_timer(loop, uo.other, 10000), 0);
    assert_true(yun_loop_add_timer(loop, 0, update_other_timer_cb, &uo, NULL) >= 0);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(log.n, 0);
    assert_int_equal(yun_loop_run_once(loop, 1000), 1);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.frees, 1);
}

struct sig_probe {
    int sig;
    int calls;
};

static void
sig_cb(struct yun_loop *loop, int sig, void *data)
{
    struct sig_probe *sp = data;

    sp->sig = sig;
    sp->calls++;
}

static void
test_signal(void **state)
{
    struct yun_loop *loop = *state;
    struct sig_probe sp = { 0 };

    assert_int_equal(yun_loop_add_signal(loop, SIGUSR1, sig_cb, &sp), 0);
    assert_int_equal(yun_loop_add_signal(loop, SIGUSR1, sig_cb, &sp), -EEXIST);
    assert_int_equal(yun_loop_add_signal(loop, SIGKILL, sig_cb, &sp), -EINVAL);
    assert_int_equal(yun_loop_add_signal(loop, 0, sig_cb, &sp), -EINVAL);

    assert_int_equal(raise(SIGUSR1), 0);
    run_until(loop, &sp.calls, 1);
    assert_int_equal(sp.sig, SIGUSR1);
    assert_int_equal(yun_loop_run_once(loop, 0), 0);
    assert_int_equal(sp.calls, 1);
}

static void *
wakeup_thread(void *arg)
{
    struct yun_loop *loop = arg;

    /* Long enough that the main thread is asleep in epoll_wait(). */
    usleep(100 * 1000);
    yun_loop_wakeup(loop);
    return NULL;
}

static void
test_wakeup(void **state)
{
    struct yun_loop *loop = *state;
    pthread_t th;
    int64_t start = yun_now_ms();

    assert_int_equal(pthread_create(&th, NULL, wakeup_thread, loop), 0);
    assert_int_equal(yun_loop_run_once(loop, -1), 0);
    assert_true(yun_now_ms() - start >= 90);
    assert_int_equal(pthread_join(th, NULL), 0);

    /* A wakeup before the wait makes the next wait return at once. */
    yun_loop_wakeup(loop);
    yun_loop_wakeup(loop);
    assert_int_equal(yun_loop_run_once(loop, -1), 0);
}

static int64_t
quit_cb(struct yun_loop *loop, int id, void *data)
{
    int *ticks = data;

    if (++*ticks == 3)
        yun_loop_quit(loop, 42);
    return 1;
}

static void
test_quit(void **state)
{
    struct yun_loop *loop = *state;
    int ticks = 0;
    int id;

    id = yun_loop_add_timer(loop, 1, quit_cb, &ticks, NULL);
    assert_true(id >= 0);
    assert_int_equal(yun_loop_run(loop), 42);
    assert_int_equal(ticks, 3);

    /* Quit before run: run returns at once; the request is consumed. */
    assert_int_equal(yun_loop_remove_timer(loop, id), 0);
    yun_loop_quit(loop, 7);
    assert_int_equal(yun_loop_run(loop), 7);
    assert_int_equal(yun_loop_run_once(loop, 0), 0);
}

static void
test_free_calls_free_cb(void **state)
{
    struct yun_loop *loop = NULL;
    struct probe live = { .remove_id = -1 }, dead = { .remove_id = -1 };
    struct timer_log tl = { 0 }, tdead = { 0 };
    struct pipe_pair p;
    int id;

    pipe_open(&p);
    assert_int_equal(yun_loop_new(&loop), 0);
    assert_true(yun_loop_add_fd(loop, p.r, EPOLLIN, probe_fd_cb, &live, probe_free) >= 0);
    id = yun_loop_add_fd(loop, p.w, EPOLLOUT, probe_fd_cb, &dead, probe_free);
    assert_true(id >= 0);
    assert_int_equal(yun_loop_remove_fd(loop, id), 0);
    assert_true(yun_loop_add_timer(loop, 1000, log_timer_cb, &tl, log_free) >= 0);
    id = yun_loop_add_timer(loop, -1, log_timer_cb, &tdead, log_free);
    assert_int_equal(yun_loop_remove_timer(loop, id), 0);
    assert_int_equal(live.frees + dead.frees + tl.frees + tdead.frees, 0);

    loop = yun_loop_free(loop);
    assert_null(loop);
    assert_int_equal(live.frees, 1);
    assert_int_equal(dead.frees, 1);
    assert_int_equal(tl.frees, 1);
    assert_int_equal(tdead.frees, 1);
    assert_int_equal(live.calls + dead.calls + tl.n, 0);

    /* The watched fds are the caller's: still open. */
    assert_true(fcntl(p.r, F_GETFD) >= 0);
    assert_true(fcntl(p.w, F_GETFD) >= 0);
    pipe_close(&p);
    assert_null(yun_loop_free(NULL));
}

static void
test_idle_run_once_sleeps(void **state)
{
    struct yun_loop *loop = *state;
    int64_t start = yun_now_ms();

    /* One epoll_wait for the whole timeout: no short polling. */
    assert_int_equal(yun_loop_run_once(loop, 200), 0);
    assert_true(yun_now_ms() - start >= 190);
}

static void
test_idle_waits_for_timer(void **state)
{
    struct yun_loop *loop = *state;
    struct timer_log log = { 0 };
    int64_t start = yun_now_ms();

    /* run_once(-1) sleeps until the timer, then returns its one callback. */
    assert_true(yun_loop_add_timer(loop, 150, log_timer_cb, &log, NULL) >= 0);
    assert_int_equal(yun_loop_run_once(loop, -1), 1);
    assert_true(yun_now_ms() - start >= 149);
    assert_int_equal(log.n, 1);
}

static void
test_now_monotonic(void **state)
{
    int64_t a = yun_now_ms();

    usleep(20 * 1000);
    assert_true(yun_now_ms() - a >= 19);
    assert_true(a >= 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fd_readable, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_fd_update, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_remove_self_in_cb, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_remove_other_in_cb, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_timers_in_order, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_timer_rearm, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_timer_update, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_timer_update_in_cb_wins, setup_loop,
                                        teardown_loop),
        cmocka_unit_test_setup_teardown(test_timer_zero_next_iteration, setup_loop,
                                        teardown_loop),
        cmocka_unit_test_setup_teardown(test_timer_remove_due_in_cb, setup_loop,
                                        teardown_loop),
        cmocka_unit_test_setup_teardown(test_timer_update_due_in_cb, setup_loop,
                                        teardown_loop),
        cmocka_unit_test_setup_teardown(test_signal, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_wakeup, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_quit, setup_loop, teardown_loop),
        cmocka_unit_test(test_free_calls_free_cb),
        cmocka_unit_test_setup_teardown(test_idle_run_once_sleeps, setup_loop, teardown_loop),
        cmocka_unit_test_setup_teardown(test_idle_waits_for_timer, setup_loop, teardown_loop),
        cmocka_unit_test(test_now_monotonic),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
