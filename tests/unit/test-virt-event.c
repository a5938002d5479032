/* SPDX-License-Identifier: Apache-2.0
 * test-virt-event.c: libvirt's events run on yun_loop (agent/virt-event.c).
 * Domain lifecycle events of the test:///default driver arrive through the
 * loop, also when the domain is started from another thread; libvirt's
 * public virEventAdd*() calls reach the loop with its documented semantics
 * (periodic timeouts, lazy free callbacks, one fd in two handles).
 * Needs libvirt, agent/virt-event.c and common/loop.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "cleanup.h"
#include "loop.h"
#include "virt-event.h"

/* Bounds every wait so a lost event fails the test instead of hanging. */
#define DEADLINE_MS 5000

static const char domain_xml[] =
    "<domain type='test'>"
    "  <name>yun-virt-event</name>"
    "  <memory unit='KiB'>8192</memory>"
    "  <vcpu>1</vcpu>"
    "  <os><type arch='x86_64'>hvm</type></os>"
    "</domain>";

struct fixture {
    struct yun_loop *loop;
    virConnectPtr conn;
    pthread_t loop_thread;
};

struct lifecycle {
    int started;
    int stopped;
    bool wrong_thread;        /* a callback ran off the loop thread */
    pthread_t loop_thread;
};

static void
quiet_error(void *data, virErrorPtr err)
{
}

static int
setup_group(void **state)
{
    static struct fixture f;

    virSetErrorFunc(NULL, quiet_error);
    if (yun_loop_new(&f.loop) < 0)
        return -1;
    if (agent_virt_event_register(f.loop) < 0)
        return -1;
    if (agent_virt_event_register(f.loop) != -EALREADY)
        return -1;
    f.conn = virConnectOpen("test:///default");
    if (!f.conn)
        return -1;
    f.loop_thread = pthread_self();
    *state = &f;
    return 0;
}

static int
teardown_group(void **state)
{
    struct fixture *f = *state;

    if (f->conn)
        (void)virConnectClose(f->conn);
    /* libvirt may release its last handles after the close; the loop must
     * keep running for their free callbacks. */
    for (int i = 0; i < 3; i++)
        (void)yun_loop_run_once(f->loop, 0);
    f->loop = yun_loop_free(f->loop);
    return 0;
}

/* Runs the loop until '*a >= want_a && *b >= want_b', or the deadline. */
static void
run_until(struct yun_loop *loop, const int *a, int want_a, const int *b, int want_b)
{
    int64_t deadline = yun_now_ms() + DEADLINE_MS;

    while ((*a < want_a || *b < want_b) && yun_now_ms() < deadline)
        assert_true(yun_loop_run_once(loop, 100) >= 0);
    assert_true(*a >= want_a);
    assert_true(*b >= want_b);
}

static int
lifecycle_cb(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    struct lifecycle *lc = opaque;

    if (!pthread_equal(pthread_self(), lc->loop_thread))
        lc->wrong_thread = true;
    if (strcmp(virDomainGetName(dom), "yun-virt-event") != 0)
        return 0;
    if (event == VIR_DOMAIN_EVENT_STARTED)
        lc->started++;
    else if (event == VIR_DOMAIN_EVENT_STOPPED)
        lc->stopped++;
    return 0;
}

static int
lifecycle_register(struct fixture *f, struct lifecycle *lc)
{
    int id;

    lc->loop_thread = f->loop_thread;
    id = virConnectDomainEventRegisterAny(f->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                          VIR_DOMAIN_EVENT_CALLBACK(lifecycle_cb), lc, NULL);
    assert_true(id >= 0);
    return id;
}

static void
test_lifecycle_events(void **state)
{
    struct fixture *f = *state;
    struct lifecycle lc = { 0 };
    virDomainPtr dom;
    int id = lifecycle_register(f, &lc);

    dom = virDomainCreateXML(f->conn, domain_xml, 0);
    assert_non_null(dom);
    run_until(f->loop, &lc.started, 1, &lc.stopped, 0);
    assert_int_equal(virDomainDestroy(dom), 0);
    (void)virDomainFree(dom);
    run_until(f->loop, &lc.started, 1, &lc.stopped, 1);
    assert_false(lc.wrong_thread);
    assert_int_equal(virConnectDomainEventDeregisterAny(f->conn, id), 0);
}

struct worker {
    virConnectPtr conn;
    int ok;                   /* set by the worker when both calls succeeded */
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    virDomainPtr dom = virDomainCreateXML(w->conn, domain_xml, 0);

    if (!dom)
        return NULL;
    if (virDomainDestroy(dom) == 0)
        w->ok = 1;
    (void)virDomainFree(dom);
    return NULL;
}

static void
test_lifecycle_events_from_worker(void **state)
{
    struct fixture *f = *state;
    struct lifecycle lc = { 0 };
    struct worker w = { .conn = f->conn };
    pthread_t th;
    int id = lifecycle_register(f, &lc);

    /* libvirt queues the events on the worker and arms its dispatch timer
     * from there: virt-event must hand that to the loop thread. */
    assert_int_equal(pthread_create(&th, NULL, worker_main, &w), 0);
    run_until(f->loop, &lc.started, 1, &lc.stopped, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(w.ok, 1);
    assert_false(lc.wrong_thread);
    assert_int_equal(virConnectDomainEventDeregisterAny(f->conn, id), 0);
}

/* State of one libvirt handle or timeout added through the public API. */
struct vprobe {
    int id;
    int calls;
    int frees;
    int last_events;
    int fd;
    int update_after;         /* timeout: after this many calls, update to 'update_to' */
    int update_to;
    bool remove_in_cb;
    int frees_seen_in_cb;
    bool wrong_thread;
    pthread_t loop_thread;
};

static void
vprobe_free(void *opaque)
{
    struct vprobe *p = opaque;

    p->frees++;
}

static void
vprobe_handle_cb(int watch, int fd, int events, void *opaque)
{
    struct vprobe *p = opaque;

    if (!pthread_equal(pthread_self(), p->loop_thread))
        p->wrong_thread = true;
    p->calls++;
    p->last_events = events;
    p->fd = fd;
    assert_int_equal(watch, p->id);
    if (p->remove_in_cb) {
        assert_int_equal(virEventRemoveHandle(watch), 0);
        assert_int_equal(virEventRemoveHandle(watch), -1);
        /* ff must not run inside virEventRemoveHandle(): libvirt would
         * deadlock on its own locks. */
        p->frees_seen_in_cb = p->frees;
        p->remove_in_cb = false;
    }
}

static void
vprobe_timeout_cb(int timer, void *opaque)
{
    struct vprobe *p = opaque;

    if (!pthread_equal(pthread_self(), p->loop_thread))
        p->wrong_thread = true;
    p->calls++;
    /* -1 while another thread's add has not returned the id to us yet. */
    if (p->id >= 0)
        assert_int_equal(timer, p->id);
    if (p->calls == p->update_after)
        virEventUpdateTimeout(timer, p->update_to);
    if (p->remove_in_cb) {
        assert_int_equal(virEventRemoveTimeout(timer), 0);
        p->frees_seen_in_cb = p->frees;
        p->remove_in_cb = false;
    }
}

static void
test_handle_remove_in_cb(void **state)
{
    struct fixture *f = *state;
    struct vprobe p = { .loop_thread = f->loop_thread, .frees_seen_in_cb = -1 };
    int fds[2];

    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    p.id = virEventAddHandle(fds[0], VIR_EVENT_HANDLE_READABLE, vprobe_handle_cb, &p,
                             vprobe_free);
    assert_true(p.id > 0);
    assert_int_equal(yun_loop_run_once(f->loop, 50), 0);
    assert_int_equal(p.calls, 0);

    /* Disabled, then enabled again. */
    assert_int_equal(write(fds[1], "x", 1), 1);
    virEventUpdateHandle(p.id, 0);
    assert_int_equal(yun_loop_run_once(f->loop, 50), 0);
    assert_int_equal(p.calls, 0);
    virEventUpdateHandle(p.id, VIR_EVENT_HANDLE_READABLE);

    p.remove_in_cb = true;
    run_until(f->loop, &p.calls, 1, &p.frees, 1);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.fd, fds[0]);
    assert_true(p.last_events & VIR_EVENT_HANDLE_READABLE);
    assert_int_equal(p.frees_seen_in_cb, 0);
    assert_int_equal(p.frees, 1);
    assert_false(p.wrong_thread);

    /* Still readable, but removed. */
    assert_int_equal(yun_loop_run_once(f->loop, 50), 0);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.frees, 1);
    (void)close(fds[0]);
    (void)close(fds[1]);
}

static void
test_same_fd_two_handles(void **state)
{
    struct fixture *f = *state;
    struct vprobe rd = { .loop_thread = f->loop_thread };
    struct vprobe wr = { .loop_thread = f->loop_thread };
    int sv[2];
    char c;

    /* libvirt allows one fd in several handles with disjoint events. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    rd.id = virEventAddHandle(sv[0], VIR_EVENT_HANDLE_READABLE, vprobe_handle_cb, &rd,
                              vprobe_free);
    wr.id = virEventAddHandle(sv[0], VIR_EVENT_HANDLE_WRITABLE, vprobe_handle_cb, &wr,
                              vprobe_free);
    assert_true(rd.id > 0 && wr.id > 0 && rd.id != wr.id);

    run_until(f->loop, &wr.calls, 1, &rd.calls, 0);
    assert_int_equal(rd.calls, 0);
    assert_int_equal(wr.fd, sv[0]);
    assert_true(wr.last_events & VIR_EVENT_HANDLE_WRITABLE);
    virEventUpdateHandle(wr.id, 0);

    assert_int_equal(write(sv[1], "x", 1), 1);
    run_until(f->loop, &rd.calls, 1, &wr.calls, 1);
    assert_int_equal(rd.fd, sv[0]);
    assert_true(rd.last_events & VIR_EVENT_HANDLE_READABLE);
    assert_int_equal(read(sv[0], &c, 1), 1);

    assert_int_equal(virEventRemoveHandle(rd.id), 0);
    assert_int_equal(virEventRemoveHandle(wr.id), 0);
    assert_int_equal(rd.frees + wr.frees, 0);
    assert_int_equal(yun_loop_run_once(f->loop, 0), 0);
    assert_int_equal(rd.frees, 1);
    assert_int_equal(wr.frees, 1);

    /* Closing our fd closes the socket: no dup of it is left open. */
    (void)close(sv[0]);
    assert_int_equal(read(sv[1], &c, 1), 0);
    (void)close(sv[1]);
}

static void
test_timeout_periodic(void **state)
{
    struct fixture *f = *state;
    struct vprobe p = {
        .loop_thread = f->loop_thread,
        .update_after = 3,
        .update_to = -1,
        .frees_seen_in_cb = -1,
    };
    int64_t start = yun_now_ms();

    /* Periodic until the callback disables it. */
    p.id = virEventAddTimeout(10, vprobe_timeout_cb, &p, vprobe_free);
    assert_true(p.id > 0);
    run_until(f->loop, &p.calls, 3, &p.frees, 0);
    assert_true(yun_now_ms() - start >= 30);
    assert_int_equal(yun_loop_run_once(f->loop, 50), 0);
    assert_int_equal(p.calls, 3);

    /* 0 fires on every iteration, once per iteration. */
    virEventUpdateTimeout(p.id, 0);
    assert_int_equal(yun_loop_run_once(f->loop, 1000), 1);
    assert_int_equal(yun_loop_run_once(f->loop, 1000), 1);
    assert_int_equal(p.calls, 5);

    p.remove_in_cb = true;
    assert_int_equal(yun_loop_run_once(f->loop, 1000), 1);
    assert_int_equal(p.calls, 6);
    assert_int_equal(p.frees_seen_in_cb, 0);
    assert_int_equal(p.frees, 1);
    assert_int_equal(virEventRemoveTimeout(p.id), -1);
    assert_int_equal(yun_loop_run_once(f->loop, 50), 0);
    assert_int_equal(p.calls, 6);
    assert_false(p.wrong_thread);
}

struct cross {
    struct vprobe *p;
    int added_id;
};

static void *
cross_add_main(void *arg)
{
    struct cross *c = arg;

    /* The loop thread sleeps in epoll_wait() meanwhile. */
    usleep(50 * 1000);
    c->added_id = virEventAddTimeout(0, vprobe_timeout_cb, c->p, vprobe_free);
    return NULL;
}

static void *
cross_remove_main(void *arg)
{
    struct cross *c = arg;

    if (virEventRemoveTimeout(c->added_id) == 0)
        c->added_id = -1;
    return NULL;
}

static void
test_timeout_from_other_thread(void **state)
{
    struct fixture *f = *state;
    struct vprobe p = { .loop_thread = f->loop_thread, .id = -1 };
    struct cross c = { .p = &p, .added_id = -1 };
    int64_t deadline = yun_now_ms() + DEADLINE_MS;
    pthread_t th;

    assert_int_equal(pthread_create(&th, NULL, cross_add_main, &c), 0);
    /* Blocks until the other thread's add wakes the loop. */
    while (p.calls == 0 && yun_now_ms() < deadline)
        assert_true(yun_loop_run_once(f->loop, -1) >= 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(c.added_id > 0);
    p.id = c.added_id;
    assert_true(p.calls >= 1);
    assert_false(p.wrong_thread);

    assert_int_equal(pthread_create(&th, NULL, cross_remove_main, &c), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(c.added_id, -1);
    /* Queued for the loop thread: ff runs there, after the removal applies. */
    assert_int_equal(p.frees, 0);
    run_until(f->loop, &p.frees, 1, &p.calls, 1);
    {
        int calls = p.calls;

        assert_int_equal(yun_loop_run_once(f->loop, 50), 0);
        assert_int_equal(p.calls, calls);
    }
    assert_int_equal(p.frees, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle_events),
        cmocka_unit_test(test_lifecycle_events_from_worker),
        cmocka_unit_test(test_handle_remove_in_cb),
        cmocka_unit_test(test_same_fd_two_handles),
        cmocka_unit_test(test_timeout_periodic),
        cmocka_unit_test(test_timeout_from_other_thread),
    };

    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
