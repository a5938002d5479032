/* SPDX-License-Identifier: Apache-2.0
 * snapshot-upload.h: sends a server snapshot's bytes to the scheduler
 * (OP_SNAPSHOT_UPLOAD), in order, a chunk at a time, on a REQ socket of
 * its own (a REQ socket carries one request at a time, and an upload
 * must not hold up heartbeats, events or image fetches). vm.c makes the
 * file; this sends it. Single-threaded: the agent's loop only. */
#pragma once

#include <stdint.h>

struct yun_loop;
struct yun_bus_client_options;
struct agent_snapshot_uploader;

/* The end of one upload: 0, or a negative errno / yun_err with a
 * sentence (the scheduler's own, when it refused a chunk). */
typedef void (*agent_snapshot_done_fn)(int r, const char *message, void *data);

/* Connects to the scheduler with 'o' (copied); chunks of 'chunk_size'
 * bytes (which with their envelope must fit the bus's message size).
 * Returns 0 and '*ret', or a negative errno. */
int agent_snapshot_uploader_new(struct yun_loop *loop, const struct yun_bus_client_options *o,
                                uint32_t chunk_size, struct agent_snapshot_uploader **ret);
/* Queues the upload of the file 'path' as image 'image_id', the snapshot
 * of 'instance_id'. Uploads go one after the other; 'done' is called
 * once, later, from the loop (never from inside this call). The file is
 * the caller's (read only). Returns 0, or -ENOMEM / -EBUSY (too many
 * queued) without calling 'done'. */
int agent_snapshot_upload(struct agent_snapshot_uploader *u, const char *instance_id,
                          const char *image_id, const char *path, agent_snapshot_done_fn done,
                          void *data);
/* Frees the uploader: uploads queued or running end without their
 * 'done' being called. NULL ok; returns NULL. */
struct agent_snapshot_uploader *agent_snapshot_uploader_free(struct agent_snapshot_uploader *u);
