/* SPDX-License-Identifier: Apache-2.0
 * image-fetch-bus.c: the image cache's fetcher over the bus. It owns REQ
 * sockets of its own, separate from the heartbeat's (agent/report.c): a
 * REQ socket carries one request at a time, and a multi-second image
 * download must not hold up heartbeats. A window of 'depth' sockets (slots)
 * keeps that many requests (OP_IMAGE_SHOW, OP_IMAGE_DOWNLOAD) in flight, so
 * a download is not bound by one round trip per chunk; the others queue.
 * Each request has a deadline from the moment it takes a slot, after which
 * it completes with YUN_E_UNREACHABLE and its slot, on a fresh socket,
 * takes the next one (see slot_reopen). Every request
 * completes exactly once (unless cancelled), in the order the requests were
 * made: a reply that overtakes an earlier request waits for it, so at most
 * 'depth' replies are held. Callbacks always come from the loop, never from
 * inside show/read. See image-cache.h. */
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

#define QUEUE_MAX 1024      /* requests waiting for a slot */
#define SEND_RETRY_MS 100   /* while nanomsg has not connected yet */

struct bus_request {
    struct bus_request *next; /* in 'queue' or in 'pending' */
    bool is_read;
    char image_id[YUN_UUID_STR_SIZE];
    uint64_t offset;
    uint32_t length;
    agent_image_show_done_fn show_done;
    agent_image_read_done_fn read_done;
    void *data;               /* NULL once cancelled */
    bool done;                /* answered: 'error' or 'body' wait for their turn */
    int error;                /* the transport's; the reply's own is in 'body' */
    const char *message;      /* NULL, or a static sentence for 'error' */
    uint8_t *body;            /* the opened reply */
    size_t size;
};

struct bus_fetcher;

/* One REQ socket and the request it carries. */
struct bus_slot {
    struct bus_fetcher *b;
    struct yun_bus_client *client;
    int watch;
    struct bus_request *q;    /* NULL: free. Also in 'pending' unless cancelled */
    bool sent;                /* 'q' is on the wire */
    int64_t deadline_ms;
};

struct bus_fetcher {
    struct agent_image_fetcher base;
    struct yun_loop *loop;
    int timer;                /* sends, retries of sends, deadlines, turns */
    bool in_timer;            /* on_timer is on the stack: it re-arms itself */
    uint32_t timeout_ms;
    struct bus_request *queue, **queue_tail;     /* waiting for a slot */
    size_t n_queued;
    struct bus_request *pending, **pending_tail; /* in slots or answered, in order */
    unsigned depth;
    struct bus_slot slots[];
};

static int64_t on_timer(struct yun_loop *loop, int id, void *data);

static void
request_free(struct bus_request *q)
{
    if (!q)
        return;
    free(q->body);
    free(q);
}

static void
complete(struct bus_request *q, int r, const char *message,
         const struct agent_image_info *info, const struct agent_image_chunk *chunk)
{
    if (q->is_read)
        q->read_done(r, message ? message : yun_strerror(r), chunk, q->data);
    else
        q->show_done(r, message ? message : yun_strerror(r), info, q->data);
}

/* Makes the timer run on the next iteration, adding it if it is gone. */
static int
kick(struct bus_fetcher *b)
{
    if (b->in_timer)
        return 0; /* it looks again before it returns */
    if (b->timer >= 0)
        return yun_loop_update_timer(b->loop, b->timer, 0);
    b->timer = yun_loop_add_timer(b->loop, 0, on_timer, b, NULL);
    return b->timer < 0 ? b->timer : 0;
}

static void
pending_unlink(struct bus_fetcher *b, struct bus_request *q)
{
    b->pending_tail = &b->pending;
    for (struct bus_request **p = &b->pending; *p;) {
        if (*p == q)
            *p = q->next;
        else
            p = &(*p)->next;
        if (!*p)
            b->pending_tail = p;
    }
    q->next = NULL;
}

/* Ends the request on slot 's' with the transport's 'r' (and a static
 * 'message', or NULL) or the opened reply 'body' (taken): it waits in
 * 'pending' for its turn, or goes if it was cancelled. The slot is free
 * again. */
static void
slot_finish(struct bus_slot *s, int r, const char *message, uint8_t *body, size_t size)
{
    struct bus_request *q = s->q;
    s->q = NULL;
    s->sent = false;
    if (!q->data) {
        free(body);
        request_free(q);
        return;
    }
    q->done = true;
    q->error = r;
    q->message = message;
    q->body = body;
    q->size = size;
}

static int
slot_send(struct bus_fetcher *b, struct bus_slot *s)
{
    struct bus_request *q = s->q;
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
    return yun_bus_client_send(s->client, NULL, NULL, 0, body, size);
}

static void
handle_show(struct bus_request *q, const uint8_t *body, size_t size)
{
    ProtobufCMessage *m = NULL;
    _cleanup_free_ char *msg = NULL;
    int r = yun_rpc_unpack_reply(body, size, &yun__image_reply__descriptor, &m, &msg);
    if (r < 0) {
        complete(q, r, msg, NULL, NULL);
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
    complete(q, r, r < 0 ? text : "", r < 0 ? NULL : &info, NULL);
}

static void
handle_read(struct bus_request *q, const uint8_t *body, size_t size)
{
    ProtobufCMessage *m = NULL;
    _cleanup_free_ char *msg = NULL;
    int r = yun_rpc_unpack_reply(body, size, &yun__image_download_reply__descriptor, &m, &msg);
    if (r < 0) {
        complete(q, r, msg, NULL, NULL);
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
    complete(q, 0, "", NULL, &chunk);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Completes answered requests in the order they were made, stopping at
 * the first one still on the wire. Callbacks may make and cancel
 * requests meanwhile: the list is read again after each. */
static void
deliver(struct bus_fetcher *b)
{
    while (b->pending && b->pending->done) {
        struct bus_request *q = b->pending;
        b->pending = q->next;
        if (!b->pending)
            b->pending_tail = &b->pending;
        q->next = NULL;
        if (q->error < 0)
            complete(q, q->error, q->message, NULL, NULL);
        else if (q->is_read)
            handle_read(q, q->body, q->size);
        else
            handle_show(q, q->body, q->size);
        request_free(q);
    }
}

static void on_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data);

/* Gives slot 's' a new socket in place of one whose request is abandoned.
 * The old REQ socket would go on re-sending that request (every
 * timeout_ms) until its next send, and a reply that came late to it could
 * meet one of the re-sent copies' replies: nanomsg 1.1's REQ keeps only
 * one reply and asserts on such a pair. A fresh socket hears nothing of
 * the old request. On failure the slot keeps its old socket. */
static int
slot_reopen(struct bus_fetcher *b, struct bus_slot *s)
{
    struct yun_bus_client *fresh = NULL;
    int r = yun_bus_client_dup(s->client, &fresh);
    if (r < 0)
        return r;
    int fd = yun_bus_client_fd(fresh);
    r = fd < 0 ? fd : yun_loop_add_fd(b->loop, fd, EPOLLIN, on_readable, s, NULL);
    if (r < 0) {
        yun_bus_client_free(fresh);
        return r;
    }
    (void)yun_loop_remove_fd(b->loop, s->watch);
    yun_bus_client_free(s->client);
    s->client = fresh;
    s->watch = r;
    return 0;
}

/* Gives free slots the queue's next requests and sends what is unsent. */
static void
fill(struct bus_fetcher *b, int64_t now)
{
    for (unsigned i = 0; i < b->depth; i++) {
        struct bus_slot *s = &b->slots[i];
        if (!s->q) {
            if (!b->queue)
                continue;
            s->q = b->queue;
            b->queue = s->q->next;
            if (!b->queue)
                b->queue_tail = &b->queue;
            b->n_queued--;
            s->q->next = NULL;
            *b->pending_tail = s->q;
            b->pending_tail = &s->q->next;
            s->sent = false;
            s->deadline_ms = now + b->timeout_ms;
        }
        if (s->sent)
            continue;
        int r = slot_send(b, s);
        if (r == -EAGAIN)
            continue; /* not connected yet: again in SEND_RETRY_MS */
        if (r < 0)
            slot_finish(s, r, NULL, NULL, 0);
        else
            s->sent = true;
    }
}

/* Ends what is late, completes what is answered, sends what is due; returns
 * the delay until it must look again. Completions run here and in
 * on_readable, so callbacks come from the loop. */
static int64_t
on_timer(struct yun_loop *loop, int id, void *data)
{
    struct bus_fetcher *b = data;
    int64_t now = yun_now_ms();
    b->in_timer = true;
    for (unsigned i = 0; i < b->depth; i++) {
        struct bus_slot *s = &b->slots[i];
        if (!s->q || now < s->deadline_ms)
            continue;
        bool sent = s->sent;
        slot_finish(s, YUN_E_UNREACHABLE, "The scheduler did not answer in time.", NULL, 0);
        int r = sent ? slot_reopen(b, s) : 0;
        if (r < 0)
            log_warn_errno(r, "cannot renew an image fetcher socket, keeping the old one");
    }
    deliver(b);
    now = yun_now_ms(); /* the callbacks took their time */
    fill(b, now);
    b->in_timer = false;

    /* A send that failed at once is answered: its turn may have come. */
    int64_t next = b->pending && b->pending->done ? 0 : -1;
    for (unsigned i = 0; i < b->depth && next != 0; i++) {
        const struct bus_slot *s = &b->slots[i];
        if (!s->q)
            continue;
        int64_t due = s->deadline_ms - now;
        if (!s->sent && due > SEND_RETRY_MS)
            due = SEND_RETRY_MS;
        if (due < 0)
            due = 0;
        if (next < 0 || due < next)
            next = due;
    }
    if (next < 0) {
        b->timer = -1;
        return YUN_LOOP_NOMORE;
    }
    return next;
}

static void
on_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct bus_slot *s = data;
    struct bus_fetcher *b = s->b;
    for (;;) {
        uint8_t *body = NULL;
        size_t size = 0;
        int r = yun_bus_client_recv(s->client, &body, &size);
        if (r == -EAGAIN)
            break;
        /* A transport error leaves nothing more to drain now. */
        if (r > _YUN_E_FIRST && r < 0)
            break;
        if (!s->q || !s->sent) {
            free(body); /* late: its request was abandoned */
            continue;
        }
        if (r < 0) {
            log_req(YUN_LOG_WARN, yun_bus_client_request_id(s->client), r,
                    "image reply from the scheduler not accepted: %s", yun_strerror(r));
            free(body);
            body = NULL;
            size = 0;
        }
        slot_finish(s, r < 0 ? r : 0, NULL, body, size);
    }
    /* The freed slot takes the next request on the next iteration. */
    deliver(b);
    if (kick(b) < 0)
        log_err("cannot arm the image fetcher's timer");
}

static int
submit(struct bus_fetcher *b, struct bus_request *q)
{
    if (b->n_queued >= QUEUE_MAX) {
        free(q);
        return -EBUSY;
    }
    int r = kick(b);
    if (r < 0) {
        free(q);
        return r;
    }
    *b->queue_tail = q;
    b->queue_tail = &q->next;
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
    /* One on the wire stays on its slot until its reply or deadline, so
     * the scheduler is not sent more than 'depth' requests at once; it
     * just answers nobody. One not sent yet need not go. */
    for (unsigned i = 0; i < b->depth; i++) {
        struct bus_slot *s = &b->slots[i];
        if (!s->q || s->q->data != data)
            continue;
        pending_unlink(b, s->q);
        s->q->data = NULL;
        if (!s->sent) {
            request_free(s->q);
            s->q = NULL;
        }
    }
    /* Answered ones waiting for their turn. */
    b->pending_tail = &b->pending;
    for (struct bus_request **p = &b->pending; *p;) {
        struct bus_request *q = *p;
        if (q->data == data) {
            *p = q->next;
            request_free(q);
        } else {
            p = &q->next;
            b->pending_tail = p;
        }
    }
    b->queue_tail = &b->queue;
    for (struct bus_request **p = &b->queue; *p;) {
        struct bus_request *q = *p;
        if (q->data == data) {
            *p = q->next;
            b->n_queued--;
            request_free(q);
        } else {
            p = &q->next;
            b->queue_tail = p;
        }
    }
    /* Requests behind a cancelled one may have their turn now. */
    if (b->pending && b->pending->done && kick(b) < 0)
        log_err("cannot arm the image fetcher's timer");
}

static void
fetcher_free(struct agent_image_fetcher *f)
{
    struct bus_fetcher *b = (struct bus_fetcher *)f;
    if (!b)
        return;
    if (b->timer >= 0)
        (void)yun_loop_remove_timer(b->loop, b->timer);
    for (unsigned i = 0; i < b->depth; i++) {
        struct bus_slot *s = &b->slots[i];
        if (s->watch >= 0)
            (void)yun_loop_remove_fd(b->loop, s->watch);
        s->client = yun_bus_client_free(s->client);
        /* Requests still wanted are in 'pending' too. */
        if (s->q && !s->q->data)
            request_free(s->q);
    }
    while (b->pending) {
        struct bus_request *q = b->pending;
        b->pending = q->next;
        request_free(q);
    }
    while (b->queue) {
        struct bus_request *q = b->queue;
        b->queue = q->next;
        request_free(q);
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
                            unsigned depth, struct agent_image_fetcher **ret)
{
    if (!loop || !o || depth == 0 || depth > AGENT_IMAGE_FETCH_WINDOW_MAX || !ret)
        return -EINVAL;
    struct bus_fetcher *b = calloc(1, sizeof *b + depth * sizeof b->slots[0]);
    if (!b)
        return -ENOMEM;
    b->base.ops = &bus_fetcher_ops;
    b->loop = loop;
    b->timer = -1;
    b->queue_tail = &b->queue;
    b->pending_tail = &b->pending;
    b->timeout_ms = o->timeout_ms > 0 ? (uint32_t)o->timeout_ms : 5000;
    b->depth = depth;
    for (unsigned i = 0; i < depth; i++) {
        b->slots[i].b = b;
        b->slots[i].watch = -1;
    }
    int r = 0;
    for (unsigned i = 0; i < depth && r >= 0; i++) {
        struct bus_slot *s = &b->slots[i];
        r = yun_bus_client_new(o, &s->client);
        if (r < 0)
            break;
        int fd = yun_bus_client_fd(s->client);
        r = fd < 0 ? fd : yun_loop_add_fd(loop, fd, EPOLLIN, on_readable, s, NULL);
        if (r >= 0)
            s->watch = r;
    }
    if (r < 0) {
        fetcher_free(&b->base);
        return r;
    }
    *ret = &b->base;
    return 0;
}
