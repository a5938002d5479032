/* SPDX-License-Identifier: Apache-2.0
 * snapshot-upload.c: the agent's side of OP_SNAPSHOT_UPLOAD (see
 * snapshot-upload.h). One upload runs at a time and one chunk of it is
 * in flight: read with pread at the offset the scheduler has accepted,
 * sent with agent.request_timeout_ms as deadline, the next sent when the
 * reply comes. A chunk that gets no answer is sent again (up to
 * ATTEMPTS times; nanomsg itself re-sends a slow request under the same
 * request id, which the scheduler answers from its reply cache). Any
 * refusal ends the upload with the scheduler's sentence: the scheduler
 * has then killed the image or never started it.
 *
 * Neighbours: vm.c (makes the file and reports snapshot_done or
 * snapshot_failed), scheduler/instance.c (snapshot_upload), common/bus.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "rpc.h"
#include "snapshot-upload.h"
#include "util.h"
#include "compute.pb-c.h"
#include "image.pb-c.h"
#include "yun.pb-c.h"

YUN_LOG_MODULE("agent.snapshot");

#define QUEUE_MAX 64
#define ATTEMPTS 3
#define SEND_RETRY_MS 100
#define MSG_MAX 1024

struct upload {
    struct upload *next;
    char instance_id[YUN_UUID_STR_SIZE];
    char image_id[YUN_UUID_STR_SIZE];
    char *path;
    int fd;
    uint64_t size;
    uint64_t offset;           /* accepted by the scheduler */
    size_t chunk;              /* bytes of the chunk in flight */
    unsigned attempts;
    int64_t started_ms;
    agent_snapshot_done_fn done;
    void *data;
};

struct agent_snapshot_uploader {
    struct yun_loop *loop;
    struct yun_bus_client *client;
    int watch, timer;
    uint32_t timeout_ms;
    uint32_t chunk_size;
    uint8_t *buf;
    struct upload *queue, **tail;
    size_t n_queued;
    struct upload *cur;        /* running */
    bool sent;                 /* its chunk is on the wire */
    int64_t deadline_ms;
};

static int64_t on_timer(struct yun_loop *loop, int id, void *data);

static void
upload_free(struct upload *up)
{
    if (!up)
        return;
    if (up->fd >= 0)
        close(up->fd);
    free(up->path);
    free(up);
}

static int
kick(struct agent_snapshot_uploader *u, int64_t delay_ms)
{
    if (u->timer >= 0)
        return yun_loop_update_timer(u->loop, u->timer, delay_ms);
    u->timer = yun_loop_add_timer(u->loop, delay_ms, on_timer, u, NULL);
    return u->timer < 0 ? u->timer : 0;
}

/* Ends the running upload with 'r' and moves to the next. */
static void
finish(struct agent_snapshot_uploader *u, int r, const char *message)
{
    struct upload *up = TAKE_PTR(u->cur);
    u->sent = false;
    log_info("snapshot upload %s vm=%s image=%s bytes=%llu ms=%lld%s%s",
             r < 0 ? "failed" : "done", up->instance_id, up->image_id,
             (unsigned long long)up->offset, (long long)(yun_now_ms() - up->started_ms),
             r < 0 ? " error=" : "", r < 0 ? message : "");
    up->done(r, r < 0 ? message : "", up->data);
    upload_free(up);
    if (u->queue && kick(u, 0) < 0)
        log_err("cannot arm the snapshot uploader's timer");
}

/* Sends the chunk at the running upload's offset. */
static int
send_chunk(struct agent_snapshot_uploader *u, char *msg, size_t msg_size)
{
    struct upload *up = u->cur;
    uint64_t left = up->size - up->offset;
    size_t n = left < u->chunk_size ? (size_t)left : u->chunk_size;
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(up->fd, u->buf + got, n - got, (off_t)(up->offset + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int r = k < 0 ? -errno : -EIO;
            snprintf(msg, msg_size, "Cannot read the snapshot '%s': %s.", up->path,
                     k < 0 ? strerror(-r) : "it is shorter than it was");
            return r;
        }
        got += (size_t)k;
    }
    Yun__SnapshotUploadRequest q = YUN__SNAPSHOT_UPLOAD_REQUEST__INIT;
    q.instance_id = up->instance_id;
    q.image_id = up->image_id;
    q.offset = up->offset;
    q.data.data = u->buf;
    q.data.len = n;
    q.last = up->offset + n == up->size;
    _cleanup_free_ uint8_t *body = NULL;
    size_t size = 0;
    int r = yun_rpc_pack_request(YUN__OP__OP_SNAPSHOT_UPLOAD, &q.base, u->timeout_ms, &body,
                                 &size);
    if (r >= 0)
        r = yun_bus_client_send(u->client, NULL, NULL, 0, body, size);
    if (r < 0 && r != -EAGAIN)
        snprintf(msg, msg_size, "Cannot send the snapshot to the scheduler: %s.",
                 yun_strerror(r));
    if (r >= 0)
        up->chunk = n;
    return r;
}

static int64_t
on_timer(struct yun_loop *loop, int id, void *data)
{
    struct agent_snapshot_uploader *u = data;
    int64_t now = yun_now_ms();
    char msg[MSG_MAX] = "";
    if (u->cur && u->sent && now >= u->deadline_ms) {
        u->sent = false;
        if (++u->cur->attempts >= ATTEMPTS) {
            finish(u, YUN_E_UNREACHABLE, "The scheduler did not answer the snapshot upload in "
                                         "time.");
            return 0;
        }
        log_warn("snapshot chunk not answered, sending again vm=%s image=%s offset=%llu",
                 u->cur->instance_id, u->cur->image_id, (unsigned long long)u->cur->offset);
    }
    if (!u->cur) {
        if (!u->queue) {
            u->timer = -1;
            return YUN_LOOP_NOMORE;
        }
        u->cur = u->queue;
        u->queue = u->queue->next;
        if (!u->queue)
            u->tail = &u->queue;
        u->n_queued--;
        u->cur->next = NULL;
        u->sent = false;
    }
    if (!u->sent) {
        int r = send_chunk(u, msg, sizeof msg);
        if (r == -EAGAIN)
            return SEND_RETRY_MS;
        if (r < 0) {
            finish(u, r, msg);
            return 0;
        }
        u->sent = true;
        u->deadline_ms = now + u->timeout_ms;
    }
    return u->deadline_ms > now ? u->deadline_ms - now : 0;
}

static void
on_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct agent_snapshot_uploader *u = data;
    for (;;) {
        _cleanup_free_ uint8_t *body = NULL;
        size_t size;
        int r = yun_bus_client_recv(u->client, &body, &size);
        if (r == -EAGAIN)
            return;
        if (r > _YUN_E_FIRST && r < 0)
            return;
        if (!u->cur || !u->sent)
            continue; /* late */
        u->sent = false;
        if (r < 0) {
            char msg[MSG_MAX];
            snprintf(msg, sizeof msg, "The scheduler's reply was not accepted: %s.",
                     yun_strerror(r));
            finish(u, r, msg);
            continue;
        }
        ProtobufCMessage *m = NULL;
        _cleanup_free_ char *err = NULL;
        r = yun_rpc_unpack_reply(body, size, &yun__image_upload_reply__descriptor, &m, &err);
        if (r < 0) {
            finish(u, r, err && *err ? err : yun_strerror(r));
            continue;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        struct upload *up = u->cur;
        up->offset += up->chunk;
        up->attempts = 0;
        if (up->offset >= up->size)
            finish(u, 0, "");
        else if (kick(u, 0) < 0)
            finish(u, -ENOMEM, "The agent cannot go on with the upload.");
    }
}

int
agent_snapshot_upload(struct agent_snapshot_uploader *u, const char *instance_id,
                      const char *image_id, const char *path, agent_snapshot_done_fn done,
                      void *data)
{
    if (!yun_uuid_is_valid(instance_id) || !yun_uuid_is_valid(image_id) || !done)
        return -EINVAL;
    if (u->n_queued >= QUEUE_MAX)
        return -EBUSY;
    struct upload *up = calloc(1, sizeof *up);
    if (!up)
        return -ENOMEM;
    up->fd = -1;
    snprintf(up->instance_id, sizeof up->instance_id, "%s", instance_id);
    snprintf(up->image_id, sizeof up->image_id, "%s", image_id);
    up->path = strdup(path);
    up->done = done;
    up->data = data;
    up->started_ms = yun_now_ms();
    if (!up->path) {
        upload_free(up);
        return -ENOMEM;
    }
    int r = kick(u, 0);
    if (r < 0) {
        upload_free(up);
        return r;
    }
    /* Opened now: a failure is still reported through 'done', later. */
    up->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (up->fd >= 0 && fstat(up->fd, &st) == 0)
        up->size = (uint64_t)st.st_size;
    *u->tail = up;
    u->tail = &up->next;
    u->n_queued++;
    return 0;
}

struct agent_snapshot_uploader *
agent_snapshot_uploader_free(struct agent_snapshot_uploader *u)
{
    if (!u)
        return NULL;
    if (u->timer >= 0)
        (void)yun_loop_remove_timer(u->loop, u->timer);
    if (u->watch >= 0)
        (void)yun_loop_remove_fd(u->loop, u->watch);
    u->client = yun_bus_client_free(u->client);
    upload_free(u->cur);
    while (u->queue) {
        struct upload *up = u->queue;
        u->queue = up->next;
        upload_free(up);
    }
    free(u->buf);
    free(u);
    return NULL;
}

int
agent_snapshot_uploader_new(struct yun_loop *loop, const struct yun_bus_client_options *o,
                            uint32_t chunk_size, struct agent_snapshot_uploader **ret)
{
    if (chunk_size == 0)
        return -EINVAL;
    struct agent_snapshot_uploader *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->loop = loop;
    u->watch = u->timer = -1;
    u->tail = &u->queue;
    u->chunk_size = chunk_size;
    u->timeout_ms = o->timeout_ms > 0 ? (uint32_t)o->timeout_ms : 5000;
    u->buf = malloc(chunk_size);
    int r = u->buf ? yun_bus_client_new(o, &u->client) : -ENOMEM;
    if (r >= 0) {
        int fd = yun_bus_client_fd(u->client);
        r = fd < 0 ? fd : yun_loop_add_fd(loop, fd, EPOLLIN, on_readable, u, NULL);
        if (r >= 0)
            u->watch = r;
    }
    if (r < 0) {
        agent_snapshot_uploader_free(u);
        return r;
    }
    *ret = u;
    return 0;
}
