/* SPDX-License-Identifier: Apache-2.0
 * bus.c: sealed request/reply over nanomsg (see bus.h). */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>

#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "loop.h"
#include "util.h"

/* A request whose serve callback deferred its reply: what sealing and
 * sending the reply later needs. */
struct bus_pending {
    struct bus_pending *next;
    uint64_t handle;
    void *control;            /* the route back; nanomsg's, freed with nn_freemsg */
    struct yun_key key;       /* the requester's key; wiped on free */
    uint32_t key_epoch;
    char *key_id;
    char *request_id;
};

/* The request being served, while its serve callback runs. */
struct bus_current {
    const struct yun_envelope_in *in;
    const struct yun_key *key;
    struct bus_pending *deferred; /* reserved by yun_bus_server_defer() */
};

struct yun_bus_server {
    struct yun_loop *loop;
    int sock;
    int watch;
    char *self_id;
    bool as_key_id;           /* replies come from the key's peer, not self_id */
    size_t max_body;
    uint64_t window_us;
    struct yun_replay_cache *cache;
    yun_bus_key_fn key;
    yun_bus_serve_fn serve;
    yun_bus_reject_fn reject;
    void *data;
    struct yun_bus_stats stats;
    struct bus_current *current; /* non-NULL only inside the serve callback */
    struct bus_pending *pending; /* deferred requests, newest first */
    size_t n_pending, max_pending;
    uint64_t next_handle;
};

static void
nn_freemsgp(void *p)
{
    void *m = *(void **)p;
    if (m)
        nn_freemsg(m);
}
#define _cleanup_nnmsg_ _cleanup_(nn_freemsgp)

/* Sends 'data' back along the route in 'control' (the raw REP header). */
static void
server_send(struct yun_bus_server *s, void *control, const void *data, size_t size)
{
    void *msg = nn_allocmsg(size ? size : 1, 0);
    if (!msg)
        return;
    memcpy(msg, data, size);
    struct nn_iovec iov = { .iov_base = &msg, .iov_len = NN_MSG };
    struct nn_msghdr hdr = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = NN_MSG,
    };
    /* On success nanomsg owns both msg and control. A full pipe drops the
     * reply: the client's REQ socket re-sends and is answered from cache. */
    if (nn_sendmsg(s->sock, &hdr, NN_DONTWAIT) < 0) {
        nn_freemsg(msg);
        nn_freemsg(control);
    }
}

static void
server_reject(struct yun_bus_server *s, void *control, int code, const struct yun_envelope_in *in)
{
    s->stats.rejected++;
    if (s->reject)
        s->reject(code, in, s->data);
    _cleanup_free_ uint8_t *notice = NULL;
    size_t size;
    if (yun_envelope_reject(code, in ? in->request_id : NULL, &notice, &size) == 0)
        server_send(s, control, notice, size);
    else
        nn_freemsg(control);
}

static void
pending_free(struct bus_pending *p)
{
    if (!p)
        return;
    if (p->control)
        nn_freemsg(p->control);
    yun_wipe(&p->key, sizeof p->key);
    free(p->key_id);
    free(p->request_id);
    free(p);
}

/* The deferred request (key_id, request_id), or NULL. */
static struct bus_pending *
pending_find(struct yun_bus_server *s, const char *key_id, const char *request_id)
{
    for (struct bus_pending *p = s->pending; p; p = p->next)
        if (strcmp(p->request_id, request_id) == 0 && strcmp(p->key_id, key_id) == 0)
            return p;
    return NULL;
}

/* Unlinks and returns the deferred request 'handle', or NULL. */
static struct bus_pending *
pending_take(struct yun_bus_server *s, uint64_t handle)
{
    for (struct bus_pending **pp = &s->pending; *pp; pp = &(*pp)->next) {
        if ((*pp)->handle != handle)
            continue;
        struct bus_pending *p = *pp;
        *pp = p->next;
        s->n_pending--;
        s->stats.pending = s->n_pending;
        return p;
    }
    return NULL;
}

/* Verifies and serves one message; consumes 'control'. */
static void
server_handle(struct yun_bus_server *s, const void *buf, size_t size, void *control)
{
    struct yun_envelope_in in;
    int r = yun_envelope_parse(buf, size, s->max_body, &in);
    if (r < 0 || in.reject) {
        server_reject(s, control, r < 0 ? r : YUN_E_DECODE, &in);
        yun_envelope_in_done(&in);
        return;
    }

    /* Our own replies are sealed with the peer's key too: one reflected
     * back at us would open and run as that peer's request. A request
     * never comes from us. */
    if (strcmp(in.sender, s->as_key_id ? in.key_id : s->self_id) == 0) {
        server_reject(s, control, YUN_E_SEAL, &in);
        yun_envelope_in_done(&in);
        return;
    }

    struct yun_key key;
    int role = 0;
    r = s->key(in.key_id, in.key_epoch, &key, &role, s->data);
    uint64_t now = yun_wall_us();
    _cleanup_free_ uint8_t *body = NULL;
    size_t body_size = 0;
    if (r >= 0)
        r = yun_envelope_open(&in, &key, now, s->window_us, &body, &body_size);
    if (r >= 0) {
        /* Identical bytes re-sent by REQ after a slow reply: answer again. */
        const uint8_t *cached;
        size_t cached_size;
        if (yun_replay_cache_get_reply(s->cache, in.key_id, in.request_id, &cached,
                                       &cached_size) == 0) {
            s->stats.cached++;
            server_send(s, control, cached, cached_size);
            yun_wipe(&key, sizeof key);
            yun_envelope_in_done(&in);
            return;
        }
        /* A re-send of a request whose deferred reply is still being
         * worked out: answer it on the newer route when the reply comes
         * (the older one may be a connection that dropped). */
        struct bus_pending *p = *in.request_id ? pending_find(s, in.key_id, in.request_id)
                                               : NULL;
        if (p) {
            s->stats.cached++;
            nn_freemsg(p->control);
            p->control = control;
            yun_wipe(&key, sizeof key);
            yun_envelope_in_done(&in);
            return;
        }
        r = yun_replay_cache_check_nonce(s->cache, in.nonce, in.timestamp_us, now);
    }
    if (r < 0) {
        yun_wipe(&key, sizeof key);
        server_reject(s, control, r, &in);
        yun_envelope_in_done(&in);
        return;
    }

    struct yun_bus_peer peer = {
        .sender = in.sender,
        .key_id = in.key_id,
        .key_epoch = in.key_epoch,
        .request_id = in.request_id,
        .token = in.token_size ? in.token : NULL,
        .token_size = in.token_size,
        .role = role,
    };
    _cleanup_free_ uint8_t *reply = NULL;
    size_t reply_size = 0;
    struct bus_current cur = { .in = &in, .key = &key };
    s->current = &cur;
    r = s->serve(&peer, body, body_size, &reply, &reply_size, s->data);
    s->current = NULL;
    if (r == YUN_BUS_DEFERRED && cur.deferred) {
        struct bus_pending *p = cur.deferred;
        p->control = control;
        p->next = s->pending;
        s->pending = p;
        s->n_pending++;
        s->stats.deferred++;
        s->stats.pending = s->n_pending;
        yun_wipe(&key, sizeof key);
        yun_envelope_in_done(&in);
        return;
    }
    /* A handle reserved by a callback that then answered at once. */
    pending_free(cur.deferred);
    if (r == YUN_BUS_DEFERRED)
        r = -EINVAL;
    if (r < 0) {
        yun_wipe(&key, sizeof key);
        server_reject(s, control, r, &in);
        yun_envelope_in_done(&in);
        return;
    }

    struct yun_envelope_out out = {
        .sender = s->as_key_id ? in.key_id : s->self_id,
        .key_id = in.key_id,
        .key_epoch = in.key_epoch,
        .request_id = in.request_id,
    };
    _cleanup_free_ uint8_t *sealed = NULL;
    size_t sealed_size;
    r = yun_envelope_seal(&key, &out, reply, reply_size, s->max_body, &sealed, &sealed_size);
    yun_wipe(&key, sizeof key);
    if (r < 0) {
        server_reject(s, control, r, &in);
        yun_envelope_in_done(&in);
        return;
    }
    /* The cache keeps the sealed reply itself, not a copy (it is an
     * image chunk's megabyte at times); 'msg' stays valid until the cache
     * is next changed, after the send. */
    const uint8_t *msg = sealed;
    if (*in.request_id)
        (void)yun_replay_cache_put_reply_take(s->cache, in.key_id, in.request_id, &sealed,
                                              sealed_size, now);
    s->stats.served++;
    server_send(s, control, msg, sealed_size);
    yun_envelope_in_done(&in);
}

static void
server_on_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct yun_bus_server *s = data;
    /* Drain until EAGAIN: the RCVFD is level-signalled by nanomsg only while
     * messages wait, and we must not read or write the fd itself. Bounded,
     * so that one busy socket cannot starve the rest of the loop. */
    for (int i = 0; i < 256; i++) {
        void *buf = NULL;
        void *control = NULL;
        struct nn_iovec iov = { .iov_base = &buf, .iov_len = NN_MSG };
        struct nn_msghdr hdr = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
            .msg_controllen = NN_MSG,
        };
        int n = nn_recvmsg(s->sock, &hdr, NN_DONTWAIT);
        if (n < 0)
            return;
        server_handle(s, buf, (size_t)n, control);
        nn_freemsg(buf);
    }
}

int
yun_bus_server_new(struct yun_loop *loop, const struct yun_bus_server_options *opts,
                   struct yun_bus_server **ret)
{
    if (!opts->url || !opts->self_id || !opts->key || !opts->serve)
        return -EINVAL;
    struct yun_bus_server *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->sock = -1;
    s->watch = -1;
    s->max_body = opts->max_body ? opts->max_body : YUN_BUS_MAX_BODY_DEFAULT;
    s->window_us = opts->window_us ? opts->window_us : YUN_BUS_WINDOW_US_DEFAULT;
    s->max_pending = opts->max_deferred ? opts->max_deferred : 1024;
    s->key = opts->key;
    s->serve = opts->serve;
    s->reject = opts->reject;
    s->data = opts->data;
    s->self_id = strdup(opts->self_id);
    s->as_key_id = opts->reply_as_key_id;
    int r = s->self_id ? 0 : -ENOMEM;
    if (r == 0)
        r = yun_replay_cache_new(s->window_us,
                                 opts->max_cached_replies ? opts->max_cached_replies : 16384,
                                 &s->cache);
    if (r == 0) {
        s->sock = nn_socket(AF_SP_RAW, NN_REP);
        if (s->sock < 0)
            r = -errno;
    }
    if (r == 0) {
        /* Let messages somewhat over the limit through to the envelope check,
         * which answers with YUN_E_TOOBIG; nanomsg drops the connection of
         * anything beyond this. */
        int max = (int)(2 * s->max_body + YUN_ENVELOPE_OVERHEAD);
        if (nn_setsockopt(s->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof max) < 0)
            r = -errno;
    }
    if (r == 0 && nn_bind(s->sock, opts->url) < 0)
        r = -errno;
    int fd = -1;
    size_t fdsz = sizeof fd;
    if (r == 0 && nn_getsockopt(s->sock, NN_SOL_SOCKET, NN_RCVFD, &fd, &fdsz) < 0)
        r = -errno;
    if (r == 0) {
        s->watch = yun_loop_add_fd(loop, fd, EPOLLIN, server_on_readable, s, NULL);
        if (s->watch < 0)
            r = s->watch;
    }
    if (r < 0) {
        yun_bus_server_free(s);
        return r;
    }
    *ret = s;
    return 0;
}

int
yun_bus_server_defer(struct yun_bus_server *s, uint64_t *ret_handle)
{
    struct bus_current *cur = s->current;
    if (!cur || cur->deferred)
        return -EINVAL;
    if (s->n_pending >= s->max_pending)
        return -EBUSY;
    struct bus_pending *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->handle = ++s->next_handle;
    p->key = *cur->key;
    p->key_epoch = cur->in->key_epoch;
    p->key_id = strdup(cur->in->key_id);
    p->request_id = strdup(cur->in->request_id);
    if (!p->key_id || !p->request_id) {
        pending_free(p);
        return -ENOMEM;
    }
    cur->deferred = p;
    *ret_handle = p->handle;
    return 0;
}

int
yun_bus_server_reply(struct yun_bus_server *s, uint64_t handle, const void *body, size_t size)
{
    struct bus_pending *p = pending_take(s, handle);
    if (!p)
        return -ENOENT;
    struct yun_envelope_out out = {
        .sender = s->as_key_id ? p->key_id : s->self_id,
        .key_id = p->key_id,
        .key_epoch = p->key_epoch,
        .request_id = p->request_id,
    };
    _cleanup_free_ uint8_t *sealed = NULL;
    size_t sealed_size;
    int r = yun_envelope_seal(&p->key, &out, body, size, s->max_body, &sealed, &sealed_size);
    void *control = TAKE_PTR(p->control);
    if (r < 0) {
        /* What the requester gets for a request we could not answer. */
        struct yun_envelope_in in = { .key_id = p->key_id, .request_id = p->request_id };
        server_reject(s, control, r, &in);
        pending_free(p);
        return r;
    }
    uint64_t now = yun_wall_us();
    const uint8_t *msg = sealed; /* as in server_handle */
    if (*p->request_id)
        (void)yun_replay_cache_put_reply_take(s->cache, p->key_id, p->request_id, &sealed,
                                              sealed_size, now);
    s->stats.served++;
    server_send(s, control, msg, sealed_size);
    pending_free(p);
    return 0;
}

struct yun_bus_server *
yun_bus_server_free(struct yun_bus_server *s)
{
    if (!s)
        return NULL;
    while (s->pending) {
        struct bus_pending *p = s->pending;
        s->pending = p->next;
        pending_free(p);
    }
    if (s->watch >= 0)
        (void)yun_loop_remove_fd(s->loop, s->watch);
    if (s->sock >= 0)
        nn_close(s->sock);
    yun_replay_cache_free(s->cache);
    free(s->self_id);
    free(s);
    return NULL;
}

void
yun_bus_server_stats(const struct yun_bus_server *s, struct yun_bus_stats *ret)
{
    *ret = s->stats;
}

/* ---- client ---- */

struct yun_bus_client {
    int sock;
    char *url, *self_id, *key_id, *server_id;
    uint32_t key_epoch;
    struct yun_key key;
    size_t max_body;
    uint64_t window_us;
    int timeout_ms;
    char request_id[YUN_REQUEST_ID_MAX + 1]; /* of the request in flight */
};

int
yun_bus_client_new(const struct yun_bus_client_options *opts, struct yun_bus_client **ret)
{
    if (!opts->url || !opts->self_id || !opts->key_id || !opts->key)
        return -EINVAL;
    struct yun_bus_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->sock = -1;
    c->url = strdup(opts->url);
    c->self_id = strdup(opts->self_id);
    c->key_id = strdup(opts->key_id);
    c->server_id = strdup(opts->server_id ? opts->server_id : "scheduler");
    c->key_epoch = opts->key_epoch;
    c->key = *opts->key;
    c->max_body = opts->max_body ? opts->max_body : YUN_BUS_MAX_BODY_DEFAULT;
    c->window_us = opts->window_us ? opts->window_us : YUN_BUS_WINDOW_US_DEFAULT;
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
    int r = c->url && c->self_id && c->key_id && c->server_id ? 0 : -ENOMEM;
    if (r == 0) {
        c->sock = nn_socket(AF_SP, NN_REQ);
        if (c->sock < 0)
            r = -errno;
    }
    if (r == 0) {
        int max = (int)(2 * c->max_body + YUN_ENVELOPE_OVERHEAD);
        /* REQ re-sends a request whose reply is late. It must not: a
         * re-send at our timeout never helped the caller, who gives up
         * then, and the server answers it too, so the late reply and the
         * cached one both reach a socket that nobody reads; nanomsg 1.1.5
         * keeps the second over the first, leaking it (an image chunk is
         * a megabyte). So a request is sent once, and again only when the
         * connection drops and comes back (nanomsg re-sends at once, the
         * server answers from its reply cache). */
        int resend = INT_MAX;
        int linger = 0;
        if (nn_setsockopt(c->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof max) < 0 ||
            nn_setsockopt(c->sock, NN_REQ, NN_REQ_RESEND_IVL, &resend, sizeof resend) < 0 ||
            nn_setsockopt(c->sock, NN_SOL_SOCKET, NN_LINGER, &linger, sizeof linger) < 0)
            r = -errno;
    }
    if (r == 0 && nn_connect(c->sock, opts->url) < 0)
        r = -errno;
    if (r < 0) {
        yun_bus_client_free(c);
        return r;
    }
    *ret = c;
    return 0;
}

struct yun_bus_client *
yun_bus_client_free(struct yun_bus_client *c)
{
    if (!c)
        return NULL;
    if (c->sock >= 0)
        nn_close(c->sock);
    free(c->url);
    free(c->self_id);
    free(c->key_id);
    free(c->server_id);
    yun_wipe(&c->key, sizeof c->key);
    free(c);
    return NULL;
}

int
yun_bus_client_dup(const struct yun_bus_client *c, struct yun_bus_client **ret)
{
    struct yun_bus_client_options o = {
        .url = c->url,
        .self_id = c->self_id,
        .key_id = c->key_id,
        .key_epoch = c->key_epoch,
        .key = &c->key,
        .server_id = c->server_id,
        .max_body = c->max_body,
        .window_us = c->window_us,
        .timeout_ms = c->timeout_ms,
    };
    return yun_bus_client_new(&o, ret);
}

static int
client_seal(struct yun_bus_client *c, const char *request_id, const void *token,
            size_t token_size, const void *body, size_t size, uint8_t **ret, size_t *ret_size)
{
    if (request_id) {
        if (strlen(request_id) > YUN_REQUEST_ID_MAX)
            return -EINVAL;
        snprintf(c->request_id, sizeof c->request_id, "%s", request_id);
    } else {
        yun_request_id_new(c->request_id);
    }
    struct yun_envelope_out out = {
        .sender = c->self_id,
        .key_id = c->key_id,
        .key_epoch = c->key_epoch,
        .request_id = c->request_id,
        .token = token,
        .token_size = token_size,
    };
    return yun_envelope_seal(&c->key, &out, body, size, c->max_body, ret, ret_size);
}

int
yun_bus_client_seal(struct yun_bus_client *c, const char *request_id, const void *body,
                    size_t size, uint8_t **ret, size_t *ret_size)
{
    return client_seal(c, request_id, NULL, 0, body, size, ret, ret_size);
}

int
yun_bus_client_open_reply(struct yun_bus_client *c, const char *request_id, const void *msg,
                          size_t size, uint8_t **ret, size_t *ret_size)
{
    struct yun_envelope_in in;
    int r = yun_envelope_parse(msg, size, c->max_body, &in);
    if (r < 0) {
        yun_envelope_in_done(&in);
        return r;
    }
    if (in.reject) {
        r = in.reject;
        yun_envelope_in_done(&in);
        return r;
    }
    /* The reply must be sealed with our own key by the server, for this
     * very request. */
    if (strcmp(in.key_id, c->key_id) != 0 || in.key_epoch != c->key_epoch ||
        strcmp(in.sender, c->server_id) != 0) {
        yun_envelope_in_done(&in);
        return YUN_E_SEAL;
    }
    r = yun_envelope_open(&in, &c->key, yun_wall_us(), c->window_us, ret, ret_size);
    if (r == 0 && strcmp(in.request_id, request_id) != 0) {
        free(*ret);
        *ret = NULL;
        r = YUN_E_SEAL;
    }
    yun_envelope_in_done(&in);
    return r;
}

/* Blocking sends and receives share one deadline, so a call never waits
 * longer than the client's timeout in all (-1: do not block). */
static int
client_send_bytes(struct yun_bus_client *c, const void *msg, size_t size, int64_t deadline)
{
    /* A reply that came after its caller gave up waits in the socket, and
     * nanomsg 1.1.5 would write the next reply over it and leak it: drop
     * it first. (Once the new request is out, replies to the old one are
     * dropped by nanomsg itself.) */
    void *stale = NULL;
    if (nn_recv(c->sock, &stale, NN_MSG, NN_DONTWAIT) >= 0)
        nn_freemsg(stale);
    int flags = 0;
    if (deadline < 0) {
        flags = NN_DONTWAIT;
    } else {
        int left = (int)(deadline - yun_now_ms());
        left = left > 0 ? left : 1;
        (void)nn_setsockopt(c->sock, NN_SOL_SOCKET, NN_SNDTIMEO, &left, sizeof left);
    }
    if (nn_send(c->sock, msg, size, flags) < 0) {
        if (errno == ETIMEDOUT)
            return YUN_E_UNREACHABLE;
        return -errno;
    }
    return 0;
}

static int
client_recv_bytes(struct yun_bus_client *c, void **ret, int64_t deadline)
{
    int flags = 0;
    if (deadline < 0) {
        flags = NN_DONTWAIT;
    } else {
        int left = (int)(deadline - yun_now_ms());
        left = left > 0 ? left : 1;
        (void)nn_setsockopt(c->sock, NN_SOL_SOCKET, NN_RCVTIMEO, &left, sizeof left);
    }
    void *buf = NULL;
    int n = nn_recv(c->sock, &buf, NN_MSG, flags);
    if (n < 0) {
        if (errno == ETIMEDOUT)
            return YUN_E_UNREACHABLE;
        /* REQ says EFSM when no request is in flight: nothing to read. */
        if (errno == EFSM)
            return -EAGAIN;
        return -errno;
    }
    *ret = buf;
    return n;
}

int
yun_bus_client_call_raw(struct yun_bus_client *c, const void *msg, size_t size, uint8_t **ret,
                        size_t *ret_size)
{
    int64_t deadline = yun_now_ms() + c->timeout_ms;
    int r = client_send_bytes(c, msg, size, deadline);
    if (r < 0)
        return r;
    _cleanup_nnmsg_ void *buf = NULL;
    int n = client_recv_bytes(c, &buf, deadline);
    if (n < 0)
        return n;
    uint8_t *copy = malloc((size_t)n + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, buf, (size_t)n);
    *ret = copy;
    *ret_size = (size_t)n;
    return 0;
}

int
yun_bus_client_call(struct yun_bus_client *c, const char *request_id, const void *token,
                    size_t token_size, const void *body, size_t size, uint8_t **ret,
                    size_t *ret_size)
{
    _cleanup_free_ uint8_t *msg = NULL;
    size_t msg_size;
    int r = client_seal(c, request_id, token, token_size, body, size, &msg, &msg_size);
    if (r < 0)
        return r;
    int64_t deadline = yun_now_ms() + c->timeout_ms;
    r = client_send_bytes(c, msg, msg_size, deadline);
    if (r < 0)
        return r;
    _cleanup_nnmsg_ void *buf = NULL;
    int n = client_recv_bytes(c, &buf, deadline);
    if (n < 0)
        return n;
    return yun_bus_client_open_reply(c, c->request_id, buf, (size_t)n, ret, ret_size);
}

int
yun_bus_client_send(struct yun_bus_client *c, const char *request_id, const void *token,
                    size_t token_size, const void *body, size_t size)
{
    _cleanup_free_ uint8_t *msg = NULL;
    size_t msg_size;
    int r = client_seal(c, request_id, token, token_size, body, size, &msg, &msg_size);
    if (r < 0)
        return r;
    return client_send_bytes(c, msg, msg_size, -1);
}

int
yun_bus_client_recv(struct yun_bus_client *c, uint8_t **ret, size_t *ret_size)
{
    _cleanup_nnmsg_ void *buf = NULL;
    int n = client_recv_bytes(c, &buf, -1);
    if (n < 0)
        return n;
    return yun_bus_client_open_reply(c, c->request_id, buf, (size_t)n, ret, ret_size);
}

int
yun_bus_client_fd(struct yun_bus_client *c)
{
    int fd = -1;
    size_t sz = sizeof fd;
    if (nn_getsockopt(c->sock, NN_SOL_SOCKET, NN_RCVFD, &fd, &sz) < 0)
        return -errno;
    return fd;
}

const char *
yun_bus_client_request_id(const struct yun_bus_client *c)
{
    return c->request_id;
}
