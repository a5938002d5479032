/* SPDX-License-Identifier: Apache-2.0
 * envelope.h: every bus message is a protobuf Envelope: a clear Header
 * (version, sender, key id and epoch, timestamp, nonce, request id, optional
 * user token, body size) whose serialized bytes are the associated data of
 * the AES-256-GCM seal over the body. Nothing in a message is trusted before
 * its seal opens.
 *
 * Receiving is two steps, because the receiver needs the header's key id to
 * find the key: yun_envelope_parse() checks size, decoding and version;
 * yun_envelope_open() checks the seal and the timestamp window. Replays are
 * the caller's job with struct yun_replay_cache, after the seal opened. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "seal.h"

#define YUN_ENVELOPE_VERSION 1
#define YUN_REQUEST_ID_MAX 64
#define YUN_PEER_ID_MAX 64
/* Room for the header and protobuf framing on top of the body limit. */
#define YUN_ENVELOPE_OVERHEAD 4096

struct yun_envelope_out {
    const char *sender;     /* peer id of the sender */
    const char *key_id;     /* whose key seals it */
    uint32_t key_epoch;
    const char *request_id;
    const void *token;      /* optional user token */
    size_t token_size;
};

/* A parsed, not yet trusted, message. Strings point into 'hdr'; 'env',
 * 'header' and 'sealed' into the parsed buffer, which must outlive it. */
struct yun_envelope_in {
    const void *env;        /* the message; NULL after a failed parse */
    const uint8_t *header;  /* the serialized Header (the seal's AAD) */
    size_t header_size;
    const uint8_t *sealed;  /* ciphertext and tag; NULL after a failed parse */
    size_t sealed_size;
    void *hdr;              /* Yun__Header *, NULL for a reject notice */
    int reject;             /* != 0: an unsealed rejection notice (a yun_err) */
    uint32_t version;
    const char *sender;
    const char *key_id;
    uint32_t key_epoch;
    uint64_t timestamp_us;
    const uint8_t *nonce;   /* YUN_NONCE_SIZE bytes */
    const char *request_id;
    const uint8_t *token;
    size_t token_size;
    uint32_t body_size;
};

/* Seals 'body' into a new Envelope. '*ret' is malloc'ed. The nonce is fresh
 * random bytes; the timestamp is now. Refuses bodies above 'max_body'
 * (YUN_E_TOOBIG): a sender never sends what the receiver must refuse. */
int yun_envelope_seal(const struct yun_key *key, const struct yun_envelope_out *out,
                      const void *body, size_t body_size, size_t max_body, uint8_t **ret,
                      size_t *ret_size);

/* Builds an unsealed rejection notice carrying 'code' for 'request_id'
 * (may be NULL). The receiver treats it only as an error. */
int yun_envelope_reject(int code, const char *request_id, uint8_t **ret, size_t *ret_size);

/* Decodes 'buf' into 'in' without trusting it: YUN_E_TOOBIG when 'size' or
 * the announced body size exceed 'max_body', YUN_E_DECODE when it does not
 * decode or a field is malformed, YUN_E_VERSION for an unknown version.
 * On success the caller owns 'in' (yun_envelope_in_done); 'in' borrows
 * 'buf' (no copy of the sealed part is made), so 'buf' must stay valid
 * and unchanged until then. */
int yun_envelope_parse(const void *buf, size_t size, size_t max_body,
                       struct yun_envelope_in *in);

/* Opens the seal of a parsed message with 'key' and checks that its
 * timestamp is within 'window_us' of 'now_us'. Returns YUN_E_SEAL or
 * YUN_E_STALE, else 0 with the body in malloc'ed '*ret_body'. */
int yun_envelope_open(const struct yun_envelope_in *in, const struct yun_key *key,
                      uint64_t now_us, uint64_t window_us, uint8_t **ret_body,
                      size_t *ret_size);

void yun_envelope_in_done(struct yun_envelope_in *in);

/* Remembers nonces for the time window, and the replies to requests, so
 * that a re-sent identical request (nanomsg REQ does that when a reply is
 * slow) is answered from the cache, while any other reuse of a nonce is a
 * replay. Bounded: at most 'max_replies' cached replies and
 * YUN_REPLAY_CACHE_MAX_BYTES of them (oldest dropped);
 * nonces are kept only while inside the window. */
struct yun_replay_cache;

/* The most bytes of replies the cache keeps, whatever their count. */
#define YUN_REPLAY_CACHE_MAX_BYTES (64u << 20)

int yun_replay_cache_new(uint64_t window_us, size_t max_replies, struct yun_replay_cache **ret);
struct yun_replay_cache *yun_replay_cache_free(struct yun_replay_cache *c);

/* Records 'nonce' of a message stamped 'sent_us' that arrived at 'now_us';
 * it is remembered for as long as yun_envelope_open() would accept that
 * message (until sent_us + window). Returns YUN_E_REPLAY if it was already
 * seen inside the window, else 0. */
int yun_replay_cache_check_nonce(struct yun_replay_cache *c, const uint8_t *nonce,
                                 uint64_t sent_us, uint64_t now_us);
/* Looks up the cached reply to (key_id, request_id). Returns 0 and a
 * borrowed pointer valid until the next call that changes the cache, or
 * -ENOENT. */
int yun_replay_cache_get_reply(struct yun_replay_cache *c, const char *key_id,
                               const char *request_id, const uint8_t **ret, size_t *ret_size);
/* Stores a copy of the reply to (key_id, request_id). */
int yun_replay_cache_put_reply(struct yun_replay_cache *c, const char *key_id,
                               const char *request_id, const void *reply, size_t size,
                               uint64_t now_us);
/* As yun_replay_cache_put_reply, without the copy: on success the cache
 * takes the malloc'ed '*reply' and sets '*reply' to NULL; on failure
 * '*reply' stays the caller's. The caller reads it afterwards only
 * through yun_replay_cache_get_reply. */
int yun_replay_cache_put_reply_take(struct yun_replay_cache *c, const char *key_id,
                                    const char *request_id, uint8_t **reply, size_t size,
                                    uint64_t now_us);
/* Drops what fell out of the window. Called by the cache itself as it goes;
 * exposed for the daemon's cron. */
void yun_replay_cache_expire(struct yun_replay_cache *c, uint64_t now_us);
size_t yun_replay_cache_nonces(const struct yun_replay_cache *c);
