/* SPDX-License-Identifier: Apache-2.0
 * bus.h: the management bus over nanomsg. A server is a raw REP socket on
 * the daemon's loop that verifies every envelope before anything else sees
 * it, answers re-sent requests from its reply cache and rejects the rest
 * with an unsealed notice carrying a stable code. A client is a REQ socket
 * that seals requests with its own key and opens the replies with it.
 * nanomsg authenticates nothing: the seal is the only trust. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "seal.h"

struct yun_loop;
struct yun_bus_server;
struct yun_bus_client;

#define YUN_BUS_MAX_BODY_DEFAULT (4u << 20)
#define YUN_BUS_WINDOW_US_DEFAULT (60u * 1000000u)

/* The verified identity of a request, valid during the serve callback. */
struct yun_bus_peer {
    const char *sender;
    const char *key_id;
    uint32_t key_epoch;
    const char *request_id;
    const uint8_t *token;
    size_t token_size;
    int role;               /* what the key function said of this peer */
};

/* Finds the key of peer 'key_id' at 'epoch' and the peer's role (a number
 * of the daemon's own meaning, handed to the serve callback in
 * yun_bus_peer.role): 0, or YUN_E_UNKNOWN_PEER when the peer is unknown or
 * the epoch is not its current one. */
typedef int (*yun_bus_key_fn)(const char *key_id, uint32_t epoch, struct yun_key *ret,
                              int *ret_role, void *data);
/* Handles a verified request body and returns the reply body (malloc'ed).
 * A negative return sends no sealed reply: the request is rejected with
 * that code. Handlers should rather return 0 with an error in the reply.
 * YUN_BUS_DEFERRED, after a yun_bus_server_defer() call made inside the
 * callback, means the reply comes later (see yun_bus_server_reply). */
typedef int (*yun_bus_serve_fn)(const struct yun_bus_peer *peer, const uint8_t *body,
                                size_t size, uint8_t **ret_reply, size_t *ret_size, void *data);
/* Told of every rejected message, for the daemon's one log line. 'in' may
 * hold only what could be decoded (sender and request id may be NULL). */
typedef void (*yun_bus_reject_fn)(int code, const struct yun_envelope_in *in, void *data);

/* A serve callback's return when its reply comes later. */
#define YUN_BUS_DEFERRED 1

struct yun_bus_server_options {
    const char *url;          /* "tcp://127.0.0.1:7700", "ipc:///run/yun/x.sock" */
    const char *self_id;      /* sender id of replies, "scheduler" */
    /* Replies are sent as the peer whose key sealed the request (self_id
     * is then only a name): one socket that stands for many peers, each
     * addressed with its own key, as the host simulator's agents are. A
     * request that names that same peer as its sender is refused, as one
     * from self_id is otherwise. */
    bool reply_as_key_id;
    size_t max_body;          /* 0 = YUN_BUS_MAX_BODY_DEFAULT */
    uint64_t window_us;       /* 0 = YUN_BUS_WINDOW_US_DEFAULT */
    size_t max_cached_replies; /* 0 = 16384 */
    size_t max_deferred;      /* requests awaiting a deferred reply; 0 = 1024 */
    yun_bus_key_fn key;
    yun_bus_serve_fn serve;
    yun_bus_reject_fn reject; /* may be NULL */
    void *data;
};

/* Binds and starts serving on 'loop'. */
int yun_bus_server_new(struct yun_loop *loop, const struct yun_bus_server_options *opts,
                       struct yun_bus_server **ret);
struct yun_bus_server *yun_bus_server_free(struct yun_bus_server *s);

struct yun_bus_stats {
    uint64_t served, cached, rejected;
    uint64_t deferred;        /* requests answered later */
    uint64_t pending;         /* deferred requests not answered yet (a gauge) */
};
void yun_bus_server_stats(const struct yun_bus_server *s, struct yun_bus_stats *ret);

/* Deferred replies, for requests whose answer needs work off the loop (a
 * password hash in a worker pool). Called only from inside the serve
 * callback, about the request it is serving: reserves a handle, stored in
 * '*ret_handle', after which the callback returns YUN_BUS_DEFERRED. The
 * server keeps the request's route, key and request id until the reply.
 * Returns 0, or -EBUSY when 'max_deferred' requests already wait (answer
 * the request now, with an error), -EINVAL outside a serve callback. A
 * handle reserved by a callback that then returns anything else is
 * dropped.
 *
 * The raw REP socket keeps each request's route in its control header, so
 * deferred replies may go out in any order, interleaved with immediate
 * ones. A re-sent copy of a request that awaits its deferred reply (REQ
 * re-sends after its interval, or after a reconnect) moves the reply to
 * the newer route and is not run again. */
int yun_bus_server_defer(struct yun_bus_server *s, uint64_t *ret_handle);

/* Seals 'body' as the reply to the deferred request 'handle', sends it and
 * keeps it in the reply cache like any reply. Call from the loop's thread,
 * not from inside the serve callback. Returns 0, -ENOENT for an unknown
 * (or already answered) handle, or the sealing error, in which case the
 * requester gets a rejection notice with that code instead. */
int yun_bus_server_reply(struct yun_bus_server *s, uint64_t handle, const void *body,
                         size_t size);

struct yun_bus_client_options {
    const char *url;          /* the server to connect to */
    const char *self_id;      /* our peer id */
    const char *key_id;       /* whose key we hold: ours */
    uint32_t key_epoch;
    const struct yun_key *key;
    const char *server_id;    /* expected sender of replies; NULL = "scheduler" */
    size_t max_body;          /* 0 = YUN_BUS_MAX_BODY_DEFAULT */
    uint64_t window_us;       /* 0 = YUN_BUS_WINDOW_US_DEFAULT */
    int timeout_ms;           /* 0 = 5000 */
};

int yun_bus_client_new(const struct yun_bus_client_options *opts, struct yun_bus_client **ret);
/* A new client with the same options as 'c' (url, ids, key, limits,
 * timeout) on a REQ socket of its own: a REQ socket carries one request at
 * a time, so several of them keep several requests in flight (see
 * yun_rpc_window in rpc.h). */
int yun_bus_client_dup(const struct yun_bus_client *c, struct yun_bus_client **ret);
struct yun_bus_client *yun_bus_client_free(struct yun_bus_client *c);

/* Sends a sealed request and waits up to the timeout for its reply.
 * 'request_id' NULL makes one. Returns 0 and the opened reply body
 * (malloc'ed), YUN_E_UNREACHABLE when no reply came in time, the code of
 * an unsealed rejection notice, or the reason the reply was not trusted. */
int yun_bus_client_call(struct yun_bus_client *c, const char *request_id, const void *token,
                        size_t token_size, const void *body, size_t size, uint8_t **ret,
                        size_t *ret_size);

/* Asynchronous use from an event loop: send without blocking (-EAGAIN when
 * the server is not connected yet), then, when the fd from
 * yun_bus_client_fd() is readable, yun_bus_client_recv() (-EAGAIN when
 * nothing is there yet). One request in flight at a time. */
int yun_bus_client_send(struct yun_bus_client *c, const char *request_id, const void *token,
                        size_t token_size, const void *body, size_t size);
int yun_bus_client_recv(struct yun_bus_client *c, uint8_t **ret, size_t *ret_size);
int yun_bus_client_fd(struct yun_bus_client *c);
const char *yun_bus_client_request_id(const struct yun_bus_client *c);

/* Sends raw bytes as they are and returns the raw reply: for tests that
 * forge, replay or corrupt messages. */
int yun_bus_client_call_raw(struct yun_bus_client *c, const void *msg, size_t size,
                            uint8_t **ret, size_t *ret_size);
/* Seals without sending, exactly as yun_bus_client_call() would. */
int yun_bus_client_seal(struct yun_bus_client *c, const char *request_id, const void *body,
                        size_t size, uint8_t **ret, size_t *ret_size);
/* Opens a raw reply to 'request_id' as yun_bus_client_call() would. */
int yun_bus_client_open_reply(struct yun_bus_client *c, const char *request_id,
                              const void *msg, size_t size, uint8_t **ret, size_t *ret_size);
