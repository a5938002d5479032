/* SPDX-License-Identifier: Apache-2.0
 * image-fetch-bus.c: the image cache's fetcher over the bus. It owns a REQ
 * socket of its own, separate from the heartbeat's (agent/report.c): a REQ
 * socket carries one request at a time, and a multi-second image download
 * must not hold up heartbeats. Requests (OP_IMAGE_SHOW, OP_IMAGE_DOWNLOAD)
 * queue and go out one at a time from the loop; each has a deadline after
 * which it completes with YUN_E_UNREACHABLE and the next one goes (a new
 * send on a REQ socket abandons the old request). Callbacks always come
 * from the loop, never from inside show/read. See image-cache.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "image-cache.h"
#include "log.h"
#include "loop.h"
#include "rpc.h"
#include "util.h"
#include "image.pb-c.h"

YUN_LOG_MODULE("agent.image");

#define QUEUE_MAX 1024      /* requests waiting for the socket */
#define SEND_RETRY_MS 100   /* while nanomsg has not connected yet */

struct bus_request {
    struct bus_request *next;
    bool is_read;
    char image_id[YUN_UUID_STR_SIZE];
    uint64_t offset;
    uint32_t length;
    agent_image_show_done_fn show_done;
    agent_image_read_done_fn read_done;
    void *data;              /* NULL once cancelled */
};

struct bus_fetcher;
static int64_t on_timer(struct yun_loop *loop, int id, void *data);

struct bus_fetcher {
    struct agent_image_fetcher base;
    struct yun_loop *loop;
    struct yun_bus_client *client;
    int watch;
    int timer;               /* sends, retries of sends, deadlines */
    uint32_t timeout_ms;
    struct bus_request *queue, **tail;
    size_t n_queued;
    struct bus_request *inflight;
    bool sent;               /* 'inflight' is on the wire */
    int64_t deadline_ms;
};

static void
complete(struct bus_fetcher *b, struct bus_request *q, int r, const char *message,
         const struct agent_image_info *info, const struct agent_image_chunk *chunk)
{
    if (!q->data) /* cancelled */
        return;
    if (q->is_read)
        q->read_done(r, message ? message : yun_strerror(r), chunk, q->data);
    else
        q->show_done(r, message ? message : yun_strerror(r), info, q->data);
}

/* Makes the timer run on the next iteration, adding it if it is gone. */
static int
kick(struct bus_fetcher *b)
{
    if (b->timer >= 0)
        return yun_loop_update_timer(b->loop, b->timer, 0);
    b->timer = yun_loop_add_timer(b->loop, 0, on_timer, b, NULL);
    return b->timer < 0 ? b->timer : 0;
}

/* Takes the request in flight off the socket, to complete it. */
static struct bus_request *
take_inflight(struct bus_fetcher *b)
{
    struct bus_request *q = b->inflight;
    b->inflight = NULL;
    b->sent = false;
    return q;
}

static int
send_inflight(struct bus_fetcher *b)
{
    struct bus_request *q = b->inflight;
    _cleanup_free_ uint8_t *body = NULL;
    size_t size;
    int r;
    if (q->is_read) {
        Yun__ImageDownloadRequest m = YUN__IMAGE_DOWNLOAD_REQUEST__INIT;
        m.image = q->image_id;
        m.offset = q->offset;
        m.length = q->length;
        r = yun_rpc_pack_request(YUN__OP__OP_IMAGE_DOWNLOAD, &m.base, b->timeout_ms, &body,
                                 &size);
    } else {
        Yun__ImageRef m = YUN__IMAGE_REF__INIT;
        m.image = q->image_id;
        r = yun_rpc_pack_request(YUN__OP__OP_IMAGE_SHOW, &m.base, b->timeout_ms, &body,
                                 &size);
    }
    if (r < 0)
        return r;
    return yun_bus_client_send(b->client, NULL, NULL, 0, body, size);
}

/* Sends what is due and ends what is late; returns the delay until it must
 * look again. Completions run here, so callbacks come from the loop. */
static int64_t
on_timer(struct yun_loop *loop, int id, void *data)
{
    struct bus_fetcher *b = data;
    int64_t now = yun_now_ms();
    if (b->inflight && now >= b->deadline_ms) {
        struct bus_request *q = take_inflight(b);
        complete(b, q, YUN_E_UNREACHABLE, "The scheduler did not answer in time.", NULL,
                 NULL);
        free(q);
    }
    if (!b->inflight) {
        if (!b->queue) {
            b->timer = -1;
            return YUN_LOOP_NOMORE;
        }
        b->inflight = b->queue;
        b->queue = b->queue->next;
        if (!b->queue)
            b->tail = &b->queue;
        b->n_queued--;
        b->inflight->next = NULL;
        b->sent = false;
        b->deadline_ms = now + b->timeout_ms;
    }
    if (!b->sent) {
        /* Cancelled before it went out: it need not go. */
        if (!b->inflight->data) {
            free(take_inflight(b));
            return 0;
        }
        int r = send_inflight(b);
        if (r == -EAGAIN)
            return SEND_RETRY_MS < b->deadline_ms - now ? SEND_RETRY_MS
                                                          : b->deadline_ms - now;
        if (r < 0) {
            struct bus_request *q = take_inflight(b);
            complete(b, q, r, NULL, NULL, NULL);
            free(q);
            return 0;
        }
        b->sent = true;
    }
    return b->deadline_ms > now ? b->deadline_ms - now : 0;
}

static void
handle_show(struct bus_fetcher *b, struct bus_request *q, const uint8_t *body, size_t size)
{
    ProtobufCMessage *m = NULL;
    _cleanup_free_ char *msg = NULL;
    int r = yun_rpc_unpack_reply(body, size, &yun__image_reply__descriptor, &m, &msg);
    if (r < 0) {
        complete(b, q, r, msg, NULL, NULL);
        return;
    }
    const Yun__ImageRecord *img = ((Yun__ImageReply *)m)->image;
    struct agent_image_info info = { 0 };
    char text[256];
    if (!img) {
        r = -EBADMSG;
        snprintf(text, sizeof text, "The scheduler's reply about image '%s' is empty.",
                 q->image_id);
    } else if (strcmp(img->status, "active") != 0) {
        r = -EACCES;
        snprintf(text, sizeof text, "Image '%s' is not active (status '%.32s').", q->image_id,
                 img->status);
    } else if (strlen(img->os_hash_value) != AGENT_IMAGE_SHA512_HEX ||
               strlen(img->disk_format) > AGENT_IMAGE_FORMAT_MAX) {
        r = -EBADMSG;
        snprintf(text, sizeof text, "The scheduler's record of image '%s' has no usable "
                                    "sha512 or disk format.", q->image_id);
    } else {
        info.size = img->size;
        info.virtual_size = img->virtual_size;
        snprintf(info.sha512, sizeof info.sha512, "%s", img->os_hash_value);
        snprintf(info.disk_format, sizeof info.disk_format, "%s", img->disk_format);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    complete(b, q, r, r < 0 ? text : "", r < 0 ? NULL : &info, NULL);
}

static void
handle_read(struct bus_fetcher *b, struct bus_request *q, const uint8_t *body, size_t size)
{
    ProtobufCMessage *m = NULL;
    _cleanup_free_ char *msg = NULL;
    int r = yun_rpc_unpack_reply(body, size, &yun__image_download_reply__descriptor, &m, &msg);
    if (r < 0) {
        complete(b, q, r, msg, NULL, NULL);
        return;
    }
    const Yun__ImageDownloadReply *y = (const Yun__ImageDownloadReply *)m;
    struct agent_image_chunk chunk = {
        .data = y->data.data,
        .size = y->data.len,
        .offset = y->offset,
        .total_size = y->size,
        .sha512 = y->os_hash_value,
        .eof = y->eof,
    };
    complete(b, q, 0, "", NULL, &chunk);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void
on_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct bus_fetcher *b = data;
    for (;;) {
        _cleanup_free_ uint8_t *body = NULL;
        size_t size;
        int r = yun_bus_client_recv(b->client, &body, &size);
        if (r == -EAGAIN)
            return;
        /* A transport error leaves nothing more to drain now. */
        if (r > _YUN_E_FIRST && r < 0)
            return;
        if (!b->inflight || !b->sent)
            continue; /* late: its request was abandoned */
        struct bus_request *q = take_inflight(b);
        /* The next request goes on the next iteration. */
        if (kick(b) < 0)
            log_err("cannot arm the image fetcher's timer");
        if (r < 0) {
            log_req(YUN_LOG_WARN, yun_bus_client_request_id(b->client), r,
                    "image reply from the scheduler not accepted: %s", yun_strerror(r));
            complete(b, q, r, NULL, NULL, NULL);
        } else if (q->is_read) {
            handle_read(b, q, body, size);
        } else {
            handle_show(b, q, body, size);
        }
        free(q);
    }
}

static int
submit(struct bus_fetcher *b, struct bus_request *q)
{
    if (b->n_queued >= QUEUE_MAX) {
        free(q);
        return -EBUSY;
    }
    /* With a request in flight the timer holds its deadline; the queue
     * moves when it ends. */
    int r = b->inflight ? 0 : kick(b);
    if (r < 0) {
        free(q);
        return r;
    }
    *b->tail = q;
    b->tail = &q->next;
    b->n_queued++;
    return 0;
}

static int
fetcher_show(struct agent_image_fetcher *f, const char *image_id, agent_image_show_done_fn done,
             void *data)
{
    struct bus_fetcher *b = (struct bus_fetcher *)f;
    if (!yun_uuid_is_valid(image_id) || !done || !data)
        return -EINVAL;
    struct bus_request *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    snprintf(q->image_id, sizeof q->image_id, "%s", image_id);
    q->show_done = done;
    q->data = data;
    return submit(b, q);
}

static int
fetcher_read(struct agent_image_fetcher *f, const char *image_id, uint64_t offset,
             uint32_t length, agent_image_read_done_fn done, void *data)
{
    struct bus_fetcher *b = (struct bus_fetcher *)f;
    if (!yun_uuid_is_valid(image_id) || !done || !data)
        return -EINVAL;
    struct bus_request *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    snprintf(q->image_id, sizeof q->image_id, "%s", image_id);
    q->is_read = true;
    q->offset = offset;
    q->length = length;
    q->read_done = done;
    q->data = data;
    return submit(b, q);
}

static void
fetcher_cancel(struct agent_image_fetcher *f, void *data)
{
    struct bus_fetcher *b = (struct bus_fetcher *)f;
    /* The one in flight stays until its reply or deadline, keeping the
     * socket's one-at-a-time order; it just answers nobody. */
    if (b->inflight && b->inflight->data == data)
        b->inflight->data = NULL;
    b->tail = &b->queue;
    for (struct bus_request **p = &b->queue; *p;) {
        struct bus_request *q = *p;
        if (q->data != data) {
            p = &q->next;
            b->tail = p;
            continue;
        }
        *p = q->next;
        b->n_queued--;
        free(q);
    }
}

static void
fetcher_free(struct agent_image_fetcher *f)
{
    struct bus_fetcher *b = (struct bus_fetcher *)f;
    if (!b)
        return;
    if (b->timer >= 0)
        (void)yun_loop_remove_timer(b->loop, b->timer);
    if (b->watch >= 0)
        (void)yun_loop_remove_fd(b->loop, b->watch);
    b->client = yun_bus_client_free(b->client);
    free(b->inflight);
    while (b->queue) {
        struct bus_request *q = b->queue;
        b->queue = q->next;
        free(q);
    }
    free(b);
}

static const struct agent_image_fetcher_ops bus_fetcher_ops = {
    .name = "bus",
    .show = fetcher_show,
    .read = fetcher_read,
    .cancel = fetcher_cancel,
    .free = fetcher_free,
};

int
agent_image_fetcher_bus_new(struct yun_loop *loop, const struct yun_bus_client_options *o,
                            struct agent_image_fetcher **ret)
{
    struct bus_fetcher *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->base.ops = &bus_fetcher_ops;
    b->loop = loop;
    b->watch = b->timer = -1;
    b->tail = &b->queue;
    b->timeout_ms = o->timeout_ms > 0 ? (uint32_t)o->timeout_ms : 5000;
    int r = yun_bus_client_new(o, &b->client);
    if (r >= 0) {
        int fd = yun_bus_client_fd(b->client);
        r = fd < 0 ? fd : yun_loop_add_fd(loop, fd, EPOLLIN, on_readable, b, NULL);
        if (r >= 0)
            b->watch = r;
    }
    if (r < 0) {
        fetcher_free(&b->base);
        return r;
    }
    *ret = &b->base;
    return 0;
}
