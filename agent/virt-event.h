/* SPDX-License-Identifier: Apache-2.0
 * virt-event.h: runs libvirt's events (domain events, keepalive, the client
 * socket) on the agent's yun_loop (common/loop.h, STYLE.md section 5).
 * libvirt's event implementation is process-global and cannot be replaced,
 * so there is one registration per process, for one loop. */
#pragma once

struct yun_loop;

/* Installs 'loop' as libvirt's event implementation (virEventRegisterImpl).
 * Call once, before virConnectOpen(), on the thread that runs 'loop': that
 * thread is the only one that touches the loop. libvirt may add, update or
 * remove handles and timeouts from any thread (an API call on a worker
 * thread does its own socket I/O and disables the loop's watch meanwhile);
 * such calls are queued and applied on the loop thread after a wakeup.
 * Keep running 'loop' after virConnectClose(): libvirt's free callbacks run
 * from it. Returns 0, -EALREADY if already called, -EIO if libvirt fails to
 * initialise, or the errno of creating or watching the internal eventfd. */
int agent_virt_event_register(struct yun_loop *loop);
