/* SPDX-License-Identifier: Apache-2.0
 * notify.h: the sd_notify protocol written in-tree (no libsystemd): tells
 * a Type=notify service manager "READY=1", "STOPPING=1", ... */
#pragma once

/* Sends 'state' to $NOTIFY_SOCKET. Returns 0 when there is no socket. */
int yun_notify(const char *state);
