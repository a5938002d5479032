/* SPDX-License-Identifier: Apache-2.0
 * rpc.h: typed calls on the bus. A request is a Request {op, payload}
 * whose payload is the operation's own protobuf message; a reply is a
 * Reply {error, error_message, payload}. */
#pragma once

#include <protobuf-c/protobuf-c.h>

#include "yun.pb-c.h"

struct yun_bus_client;

/* Calls 'op' with 'req' (NULL = empty) and unpacks the reply payload with
 * 'reply_desc' into '*ret_reply' (caller frees with
 * protobuf_c_message_free_unpacked). Returns 0, the transport's error, or
 * the server's Reply.error, in which case '*ret_errmsg' (when not NULL)
 * receives its malloc'ed sentence. */
int yun_rpc_call(struct yun_bus_client *c, Yun__Op op, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret_reply,
                 char **ret_errmsg);

/* As yun_rpc_call, with a user token and an explicit request id (NULL =
 * a new one). */
int yun_rpc_call_full(struct yun_bus_client *c, const char *request_id, const void *token,
                      size_t token_size, Yun__Op op, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *reply_desc,
                      ProtobufCMessage **ret_reply, char **ret_errmsg);

/* Serialises Request{op, req} into '*ret' (malloc'ed). */
int yun_rpc_pack_request(Yun__Op op, const ProtobufCMessage *req, uint64_t deadline_ms,
                         uint8_t **ret, size_t *ret_size);
/* Serialises Reply{error, message, payload} into '*ret' (malloc'ed). */
int yun_rpc_pack_reply(int error, const char *message, const ProtobufCMessage *payload,
                       uint8_t **ret, size_t *ret_size);
/* Decodes a Request body into '*ret' as yun__request__unpack would, but
 * with 'ret->payload' pointing into 'body' (no copy; 'body' must outlive
 * it; nothing to free). Returns 0 or YUN_E_DECODE. */
int yun_rpc_scan_request(const uint8_t *body, size_t size, Yun__Request *ret);
/* Unpacks a Reply body: the error it carries (with its message), or its
 * payload decoded with 'desc'. */
int yun_rpc_unpack_reply(const uint8_t *body, size_t size,
                         const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret,
                         char **ret_errmsg);

/* A window of calls in flight at once: 'depth' slots, each its own REQ
 * socket (yun_bus_client_dup of the client given), so that a stream of
 * requests (image chunks) does not wait a round trip per request. A slot
 * carries one call at a time; the caller picks the slot, which keeps
 * replies in the order it wants without a reorder buffer: send on slots
 * 0..depth-1, then receive from slot k % depth and send the next request
 * on it. Each call has 'timeout_ms' from its send (use the client's own:
 * its REQ socket re-sends after that long). Use only for
 * requests that may run in any order relative to each other (reads): the
 * scheduler may see those of different slots in any order. */
struct yun_rpc_window;

int yun_rpc_window_new(const struct yun_bus_client *c, unsigned depth, int timeout_ms,
                       struct yun_rpc_window **ret);
struct yun_rpc_window *yun_rpc_window_free(struct yun_rpc_window *w);
unsigned yun_rpc_window_depth(const struct yun_rpc_window *w);
/* Sends 'op' with 'req' and the user 'token' on 'slot' without waiting
 * for the reply (while the socket connects, it retries until the
 * timeout). -EBUSY when the slot has a call in flight. */
int yun_rpc_window_send(struct yun_rpc_window *w, unsigned slot, const void *token,
                        size_t token_size, Yun__Op op, const ProtobufCMessage *req);
/* Waits for the reply of the call in flight on 'slot' and unpacks it as
 * yun_rpc_call does. -EINVAL when the slot has none. */
int yun_rpc_window_recv(struct yun_rpc_window *w, unsigned slot,
                        const ProtobufCMessageDescriptor *reply_desc,
                        ProtobufCMessage **ret_reply, char **ret_errmsg);
