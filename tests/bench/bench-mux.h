/* SPDX-License-Identifier: Apache-2.0
 * bench-mux.h: many bus peers' requests on one nanomsg socket, for the
 * benchmarks that stand for many peers at once (yun-host-sim's agents,
 * bench-e2e-client's operator with 64 requests in flight).
 *
 * A REQ socket carries one request at a time, and nanomsg allows 512
 * sockets per process, so a simulator of 10 000 agents cannot give each
 * its own. A raw REQ socket (AF_SP_RAW) carries any number of requests;
 * on the wire it is exactly a REQ socket: each message is the 4-byte
 * request id of the SP request/reply protocol (top bit set) followed by
 * the message, which the server's raw REP keeps as the route back. Each
 * request is sealed with its own peer's key exactly as
 * yun_bus_client_send() seals it (common/envelope.h), and a reply is
 * trusted exactly as yun_bus_client_recv() trusts it: it opens with that
 * key, names the expected server as sender and echoes the request id.
 *
 * Neighbours: host-sim.c, bench-e2e-client.c; common/envelope.h. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "seal.h"

struct bench_mux;

/* Connects a raw REQ socket to 'url'. */
int bench_mux_new(const char *url, size_t max_body, struct bench_mux **ret);
struct bench_mux *bench_mux_free(struct bench_mux *m);
/* The receive fd for the loop (readable while replies wait). */
int bench_mux_fd(struct bench_mux *m);

/* Seals 'body' for peer 'self_id' (key id = self_id at 'epoch', key
 * 'key') with 'request_id' and optional 'token', and sends it without
 * blocking. -EAGAIN when the socket cannot take it now. */
int bench_mux_send(struct bench_mux *m, const char *self_id, uint32_t epoch,
                   const struct yun_key *key, const char *request_id, const void *token,
                   size_t token_size, const void *body, size_t size);

/* A reply, parsed but not yet trusted. */
struct bench_mux_reply {
    struct yun_envelope_in in;
    bool parsed;
    void *buf;            /* nanomsg's message */
};

/* Takes the next reply off the socket: 0, or -EAGAIN when none waits.
 * The caller finds the request by reply->in.request_id (a reject notice
 * carries it too, in.reject != 0), then calls bench_mux_open. */
int bench_mux_recv(struct bench_mux *m, struct bench_mux_reply *reply);
/* Trusts the reply as the answer of 'server_id' to the request
 * 'request_id' of peer 'self_id': returns the opened body (malloc'ed) or
 * the reject code / YUN_E_SEAL / YUN_E_STALE. */
int bench_mux_open(const struct bench_mux_reply *reply, const char *self_id, uint32_t epoch,
                   const struct yun_key *key, const char *server_id, const char *request_id,
                   uint8_t **ret, size_t *ret_size);
void bench_mux_reply_done(struct bench_mux_reply *reply);
