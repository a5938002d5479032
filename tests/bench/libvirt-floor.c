/* SPDX-License-Identifier: Apache-2.0
 * libvirt-floor.c: the memory floor of an agent. It links what yun-agent
 * links, runs its event loop with libvirt's events on it, opens libvirt as
 * the agent does and then only waits: its resident memory is what any
 * process holding a libvirt connection through these libraries costs,
 * before one byte of the agent's own state. bench-bus prints it next to
 * the idle agent's.
 *   libvirt-floor [URI]   (default test:///default; runs until SIGTERM)
 * A benchmark helper, not a test. */
#include <signal.h>
#include <stdio.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "loop.h"
#include "virt-event.h"

static void
quiet(void *data, virErrorPtr err)
{
    (void)data;
    (void)err;
}

static void
on_signal(struct yun_loop *loop, int sig, void *data)
{
    (void)sig;
    (void)data;
    yun_loop_quit(loop, 0);
}

int
main(int argc, char **argv)
{
    const char *uri = argc > 1 ? argv[1] : "test:///default";
    struct yun_loop *loop = NULL;
    if (yun_loop_new(&loop) < 0)
        return 1;
    virSetErrorFunc(NULL, quiet);
    if (agent_virt_event_register(loop) < 0 ||
        yun_loop_add_signal(loop, SIGTERM, on_signal, NULL) < 0 ||
        yun_loop_add_signal(loop, SIGINT, on_signal, NULL) < 0)
        return 1;
    virConnectPtr conn = virConnectOpen(uri);
    if (!conn) {
        fprintf(stderr, "libvirt-floor: cannot open %s\n", uri);
        return 1;
    }
    /* Idle as the agent is: the loop serves libvirt's keepalive. */
    int r = yun_loop_run(loop);
    virConnectClose(conn);
    yun_loop_free(loop);
    return r;
}
