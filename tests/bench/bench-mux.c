/* SPDX-License-Identifier: Apache-2.0
 * bench-mux.c: many peers' sealed requests on one raw REQ socket (see
 * bench-mux.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>

#include "bench-mux.h"
#include "cleanup.h"
#include "err.h"
#include "util.h"

#define WINDOW_US (60u * 1000000u)

struct bench_mux {
    int sock;
    size_t max_body;
    uint32_t next_id;     /* the SP request id: 31 bits, top bit set on the wire */
};

int
bench_mux_new(const char *url, size_t max_body, struct bench_mux **ret)
{
    struct bench_mux *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->max_body = max_body ? max_body : (4u << 20);
    m->sock = nn_socket(AF_SP_RAW, NN_REQ);
    if (m->sock < 0) {
        int r = -errno;
        free(m);
        return r;
    }
    int max = (int)(2 * m->max_body + YUN_ENVELOPE_OVERHEAD);
    int buf = 4 << 20;
    if (nn_setsockopt(m->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof max) < 0 ||
        nn_setsockopt(m->sock, NN_SOL_SOCKET, NN_SNDBUF, &buf, sizeof buf) < 0 ||
        nn_setsockopt(m->sock, NN_SOL_SOCKET, NN_RCVBUF, &buf, sizeof buf) < 0 ||
        nn_connect(m->sock, url) < 0) {
        int r = -errno;
        nn_close(m->sock);
        free(m);
        return r;
    }
    /* The SP id only has to differ among this socket's requests in
     * flight: replies are matched by the envelope's request id. */
    m->next_id = 1;
    *ret = m;
    return 0;
}

struct bench_mux *
bench_mux_free(struct bench_mux *m)
{
    if (m) {
        nn_close(m->sock);
        free(m);
    }
    return NULL;
}

int
bench_mux_fd(struct bench_mux *m)
{
    int fd = -1;
    size_t sz = sizeof fd;
    if (nn_getsockopt(m->sock, NN_SOL_SOCKET, NN_RCVFD, &fd, &sz) < 0)
        return -errno;
    return fd;
}

int
bench_mux_send(struct bench_mux *m, const char *self_id, uint32_t epoch,
               const struct yun_key *key, const char *request_id, const void *token,
               size_t token_size, const void *body, size_t size)
{
    struct yun_envelope_out out = {
        .sender = self_id,
        .key_id = self_id,
        .key_epoch = epoch,
        .request_id = request_id,
        .token = token,
        .token_size = token_size,
    };
    _cleanup_free_ uint8_t *sealed = NULL;
    size_t sealed_size;
    int r = yun_envelope_seal(key, &out, body, size, m->max_body, &sealed, &sealed_size);
    if (r < 0)
        return r;
    void *msg = nn_allocmsg(4 + sealed_size, 0);
    if (!msg)
        return -ENOMEM;
    /* The SP request id that a REQ socket would put before the message. */
    uint32_t id = (m->next_id++ & 0x7fffffffu) | 0x80000000u;
    uint8_t *p = msg;
    p[0] = (uint8_t)(id >> 24);
    p[1] = (uint8_t)(id >> 16);
    p[2] = (uint8_t)(id >> 8);
    p[3] = (uint8_t)id;
    memcpy(p + 4, sealed, sealed_size);
    if (nn_send(m->sock, &msg, NN_MSG, NN_DONTWAIT) < 0) {
        r = -errno;
        nn_freemsg(msg);
        return r;
    }
    return 0;
}

int
bench_mux_recv(struct bench_mux *m, struct bench_mux_reply *reply)
{
    memset(reply, 0, sizeof *reply);
    void *buf = NULL;
    /* The raw REQ socket takes the SP request id off as the header. */
    int n = nn_recv(m->sock, &buf, NN_MSG, NN_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN ? -EAGAIN : -errno;
    reply->buf = buf;
    int r = yun_envelope_parse(buf, (size_t)n, m->max_body, &reply->in);
    if (r < 0) {
        /* Nothing routable: the caller drops it. */
        memset(&reply->in, 0, sizeof reply->in);
        return 0;
    }
    reply->parsed = true;
    return 0;
}

int
bench_mux_open(const struct bench_mux_reply *reply, const char *self_id, uint32_t epoch,
               const struct yun_key *key, const char *server_id, const char *request_id,
               uint8_t **ret, size_t *ret_size)
{
    const struct yun_envelope_in *in = &reply->in;
    if (in->reject)
        return in->reject;
    if (!in->hdr || strcmp(in->key_id, self_id) != 0 || in->key_epoch != epoch ||
        strcmp(in->sender, server_id) != 0)
        return YUN_E_SEAL;
    int r = yun_envelope_open(in, key, yun_wall_us(), WINDOW_US, ret, ret_size);
    if (r == 0 && strcmp(in->request_id, request_id) != 0) {
        free(*ret);
        *ret = NULL;
        r = YUN_E_SEAL;
    }
    return r;
}

void
bench_mux_reply_done(struct bench_mux_reply *reply)
{
    if (reply->parsed)
        yun_envelope_in_done(&reply->in);
    if (reply->buf)
        nn_freemsg(reply->buf);
    memset(reply, 0, sizeof *reply);
}
