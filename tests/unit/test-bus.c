/* SPDX-License-Identifier: Apache-2.0
 * test-bus.c: unit tests of common/bus.c and common/rpc.c over a real
 * nanomsg socket: a bus server on a yun_loop in the test thread, a blocking
 * client in a second thread. Covers the round trip, every way a request is
 * refused (wrong key, unknown peer, stale epoch, replay, garbage, reflected
 * replies), REQ re-sends answered from the reply cache, an absent server,
 * typed calls with yun_rpc_call(), and deferred replies (answered later,
 * out of order, re-sends while pending moved to the newer route, the
 * bound on pending requests). The envelope itself is tested in
 * test-envelope.c. Timing asserts have loose upper bounds only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus.h"
#include "cleanup.h"
#include "envelope.h"
#include "err.h"
#include "loop.h"
#include "rpc.h"
#include "seal.h"
#include "util.h"
#include "yun.pb-c.h"

#define SERVER_ID "test-server"
#define ROLE_ALICE 11
#define ROLE_BOB 22
/* Bounds every pump loop: a hung call fails the test instead of ctest's
 * timeout killing it. The client's own timeout ends calls long before. */
#define PUMP_LIMIT_MS 30000

static const uint8_t test_secret[YUN_SECRET_SIZE] = "yun-test-secret-0123456789abcdef";
static const uint8_t other_secret[YUN_SECRET_SIZE] = "not-the-cluster-secret-at-all!!!";

static char test_dir[512];
static unsigned url_counter;

/* One server and what it saw. */
struct fixture {
    struct yun_loop *loop;
    struct yun_bus_server *server;
    char url[600];
    int serve_calls;
    int last_role;
    char last_sender[YUN_PEER_ID_MAX + 1];
    int reject_calls;
    int last_reject;
    char reject_sender[YUN_PEER_ID_MAX + 1];   /* "" when NULL */
    char reject_key_id[YUN_PEER_ID_MAX + 1];
    char reject_request_id[YUN_REQUEST_ID_MAX + 1];
    /* defer_serve: the handles of the requests it deferred, by body. */
    uint64_t deferred[8];
    char deferred_body[8][16];
    int n_deferred;
    int defer_errors;
};

static void
copy_field(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

static int
test_key_fn(const char *key_id, uint32_t epoch, struct yun_key *ret, int *ret_role,
            void *data)
{
    static const struct {
        const char *id;
        uint32_t epoch;
        int role;
    } peers[] = {
        { "alice", 1, ROLE_ALICE },
        { "bob", 2, ROLE_BOB },
    };
    for (size_t i = 0; i < ELEMENTSOF(peers); i++) {
        if (strcmp(key_id, peers[i].id) != 0 || epoch != peers[i].epoch)
            continue;
        int r = yun_key_derive(test_secret, sizeof test_secret, key_id, epoch, ret);
        if (r < 0)
            return r;
        *ret_role = peers[i].role;
        return 0;
    }
    return YUN_E_UNKNOWN_PEER;
}

static int
echo_serve(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
           uint8_t **ret_reply, size_t *ret_size, void *data)
{
    struct fixture *f = data;
    f->serve_calls++;
    f->last_role = peer->role;
    copy_field(f->last_sender, sizeof f->last_sender, peer->sender);
    uint8_t *copy = malloc(size + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, body, size);
    *ret_reply = copy;
    *ret_size = size;
    return 0;
}

/* Answers Request{op, payload}: PING echoes, HOST_SHOW says "no such host"
 * with a sentence, anything else is YUN_E_BADOP. */
static int
rpc_serve(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
          uint8_t **ret_reply, size_t *ret_size, void *data)
{
    struct fixture *f = data;
    f->serve_calls++;
    Yun__Request *q = yun__request__unpack(NULL, size, body);
    if (!q)
        return yun_rpc_pack_reply(YUN_E_DECODE, "The request does not decode.", NULL,
                                  ret_reply, ret_size);
    int r;
    if (q->op == YUN__OP__OP_PING) {
        Yun__PingRequest *pq = yun__ping_request__unpack(NULL, q->payload.len,
                                                         q->payload.data);
        if (!pq) {
            r = yun_rpc_pack_reply(YUN_E_DECODE, "The ping does not decode.", NULL, ret_reply,
                                   ret_size);
        } else {
            Yun__PingReply pr = YUN__PING_REPLY__INIT;
            pr.data = pq->data;
            pr.server = (char *)SERVER_ID;
            pr.time_us = 42;
            r = yun_rpc_pack_reply(0, NULL, &pr.base, ret_reply, ret_size);
            yun__ping_request__free_unpacked(pq, NULL);
        }
    } else if (q->op == YUN__OP__OP_HOST_SHOW) {
        r = yun_rpc_pack_reply(YUN_E_NOHOST, "Host 'n9' is not known.", NULL, ret_reply,
                               ret_size);
    } else {
        r = yun_rpc_pack_reply(YUN_E_BADOP, NULL, NULL, ret_reply, ret_size);
    }
    yun__request__free_unpacked(q, NULL);
    return r;
}

static void
on_reject(int code, const struct yun_envelope_in *in, void *data)
{
    struct fixture *f = data;
    f->reject_calls++;
    f->last_reject = code;
    copy_field(f->reject_sender, sizeof f->reject_sender, in ? in->sender : NULL);
    copy_field(f->reject_key_id, sizeof f->reject_key_id, in ? in->key_id : NULL);
    copy_field(f->reject_request_id, sizeof f->reject_request_id, in ? in->request_id : NULL);
}

static void
new_url(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "ipc://%s/%s-%u.sock", test_dir, name, url_counter++);
}

static void
fixture_start_with(struct fixture *f, yun_bus_serve_fn serve, size_t max_cached_replies,
                   size_t max_deferred)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(yun_loop_new(&f->loop), 0);
    new_url(f->url, sizeof f->url, "bus");
    struct yun_bus_server_options o = {
        .url = f->url,
        .self_id = SERVER_ID,
        .max_body = 64 * 1024,
        .max_cached_replies = max_cached_replies,
        .max_deferred = max_deferred,
        .key = test_key_fn,
        .serve = serve,
        .reject = on_reject,
        .data = f,
    };
    assert_int_equal(yun_bus_server_new(f->loop, &o, &f->server), 0);
}

static void
fixture_start(struct fixture *f, yun_bus_serve_fn serve, size_t max_cached_replies)
{
    fixture_start_with(f, serve, max_cached_replies, 0);
}

static void
fixture_stop(struct fixture *f)
{
    f->server = yun_bus_server_free(f->server);
    f->loop = yun_loop_free(f->loop);
}

/* A client for 'id' at 'epoch' holding the key derived from 'secret'. */
static struct yun_bus_client *
client_new(const char *url, const char *id, uint32_t epoch, const uint8_t *secret,
           int timeout_ms)
{
    struct yun_key key;
    assert_int_equal(yun_key_derive(secret, YUN_SECRET_SIZE, id, epoch, &key), 0);
    struct yun_bus_client_options o = {
        .url = url,
        .self_id = id,
        .key_id = id,
        .key_epoch = epoch,
        .key = &key,
        .server_id = SERVER_ID,
        .max_body = 64 * 1024,
        .timeout_ms = timeout_ms ? timeout_ms : 5000,
    };
    struct yun_bus_client *c = NULL;
    assert_int_equal(yun_bus_client_new(&o, &c), 0);
    yun_wipe(&key, sizeof key);
    return c;
}

/* One blocking client operation, run in its own thread. */
enum call_kind { CALL_SEALED, CALL_RAW, CALL_RPC };

struct call {
    struct yun_bus_client *client;
    enum call_kind kind;
    const char *request_id;   /* CALL_SEALED */
    const void *body;         /* CALL_SEALED: the body; CALL_RAW: the message */
    size_t size;
    Yun__Op op;               /* CALL_RPC */
    const ProtobufCMessage *req;
    const ProtobufCMessageDescriptor *reply_desc;

    int r;
    uint8_t *reply;           /* malloc'ed */
    size_t reply_size;
    ProtobufCMessage *rpc_reply;
    char *errmsg;
    atomic_bool done;
};

static void *
call_thread(void *arg)
{
    struct call *c = arg;
    switch (c->kind) {
    case CALL_SEALED:
        c->r = yun_bus_client_call(c->client, c->request_id, NULL, 0, c->body, c->size,
                                   &c->reply, &c->reply_size);
        break;
    case CALL_RAW:
        c->r = yun_bus_client_call_raw(c->client, c->body, c->size, &c->reply,
                                       &c->reply_size);
        break;
    case CALL_RPC:
        c->r = yun_rpc_call(c->client, c->op, c->req, c->reply_desc, &c->rpc_reply,
                            &c->errmsg);
        break;
    }
    atomic_store(&c->done, true);
    return NULL;
}

/* Runs 'c' in a thread while this thread runs the server's loop. */
static int
run_call(struct fixture *f, struct call *c)
{
    atomic_store(&c->done, false);
    c->reply = NULL;
    c->reply_size = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, call_thread, c), 0);
    int64_t deadline = yun_now_ms() + PUMP_LIMIT_MS;
    while (!atomic_load(&c->done) && yun_now_ms() < deadline)
        assert_true(yun_loop_run_once(f->loop, 10) >= 0);
    bool finished = atomic_load(&c->done);
    if (!finished)
        print_error("client call still blocked after %d ms\n", PUMP_LIMIT_MS);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(finished);
    return c->r;
}

static int
call_sealed(struct fixture *f, struct yun_bus_client *client, const char *request_id,
            const void *body, size_t size, uint8_t **ret, size_t *ret_size)
{
    struct call c = { .client = client, .kind = CALL_SEALED, .request_id = request_id,
                      .body = body, .size = size };
    int r = run_call(f, &c);
    if (r == 0) {
        *ret = c.reply;
        *ret_size = c.reply_size;
    } else {
        assert_null(c.reply);
    }
    return r;
}

static int
call_raw(struct fixture *f, struct yun_bus_client *client, const void *msg, size_t size,
         uint8_t **ret, size_t *ret_size)
{
    struct call c = { .client = client, .kind = CALL_RAW, .body = msg, .size = size };
    int r = run_call(f, &c);
    *ret = c.reply;
    *ret_size = c.reply_size;
    return r;
}

/* The code of a raw reply that must be a rejection notice. */
static int
notice_code(const uint8_t *msg, size_t size)
{
    struct yun_envelope_in in;
    assert_int_equal(yun_envelope_parse(msg, size, 64 * 1024, &in), 0);
    int code = in.reject;
    yun_envelope_in_done(&in);
    assert_int_not_equal(code, 0);
    return code;
}

/* A good call from alice still works: the server is alive and serving. */
static void
assert_serves(struct fixture *f)
{
    struct yun_bus_client *c = client_new(f->url, "alice", 1, test_secret, 0);
    int before = f->serve_calls;
    _cleanup_free_ uint8_t *reply = NULL;
    size_t size = 0;
    assert_int_equal(call_sealed(f, c, NULL, "still there?", 12, &reply, &size), 0);
    assert_int_equal(size, 12);
    assert_memory_equal(reply, "still there?", 12);
    assert_int_equal(f->serve_calls, before + 1);
    yun_bus_client_free(c);
}

static int
setup_echo(void **state)
{
    struct fixture *f = malloc(sizeof *f);
    if (!f)
        return -1;
    fixture_start(f, echo_serve, 0);
    *state = f;
    return 0;
}

static int
setup_rpc(void **state)
{
    struct fixture *f = malloc(sizeof *f);
    if (!f)
        return -1;
    fixture_start(f, rpc_serve, 0);
    *state = f;
    return 0;
}

static int
setup_one_cached(void **state)
{
    struct fixture *f = malloc(sizeof *f);
    if (!f)
        return -1;
    fixture_start(f, echo_serve, 1);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    fixture_stop(f);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void
test_round_trip(void **state)
{
    struct fixture *f = *state;
    struct yun_bus_client *c = client_new(f->url, "alice", 1, test_secret, 0);
    uint8_t body[1000];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (uint8_t)(i * 13);

    _cleanup_free_ uint8_t *reply = NULL;
    size_t size = 0;
    assert_int_equal(call_sealed(f, c, "rt-1", body, sizeof body, &reply, &size), 0);
    assert_int_equal(size, sizeof body);
    assert_memory_equal(reply, body, sizeof body);
    assert_int_equal(f->serve_calls, 1);
    assert_int_equal(f->last_role, ROLE_ALICE);
    assert_string_equal(f->last_sender, "alice");
    assert_string_equal(yun_bus_client_request_id(c), "rt-1");

    /* Bob, at his own epoch, and an empty body. */
    struct yun_bus_client *b = client_new(f->url, "bob", 2, test_secret, 0);
    _cleanup_free_ uint8_t *empty = NULL;
    assert_int_equal(call_sealed(f, b, NULL, "", 0, &empty, &size), 0);
    assert_int_equal(size, 0);
    assert_int_equal(f->last_role, ROLE_BOB);
    /* A request id was made up for us. */
    assert_int_equal(strlen(yun_bus_client_request_id(b)), 16);

    struct yun_bus_stats st;
    yun_bus_server_stats(f->server, &st);
    assert_int_equal(st.served, 2);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(f->reject_calls, 0);
    yun_bus_client_free(b);
    yun_bus_client_free(c);
}

static void
test_wrong_key(void **state)
{
    struct fixture *f = *state;
    struct yun_bus_client *c = client_new(f->url, "alice", 1, other_secret, 0);
    uint8_t *reply = NULL;
    size_t size = 0;
    assert_int_equal(call_sealed(f, c, "wrong-key-1", "let me in", 9, &reply, &size),
                     YUN_E_SEAL);
    assert_int_equal(f->serve_calls, 0);
    assert_int_equal(f->reject_calls, 1);
    assert_int_equal(f->last_reject, YUN_E_SEAL);
    assert_string_equal(f->reject_key_id, "alice");
    assert_string_equal(f->reject_sender, "alice");
    assert_string_equal(f->reject_request_id, "wrong-key-1");
    yun_bus_client_free(c);

    assert_serves(f);
    struct yun_bus_stats st;
    yun_bus_server_stats(f->server, &st);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.served, 1);
}

static void
test_unknown_peer(void **state)
{
    struct fixture *f = *state;
    /* Carol holds a real cluster key but is not registered. */
    struct yun_bus_client *c = client_new(f->url, "carol", 1, test_secret, 0);
    uint8_t *reply = NULL;
    size_t size = 0;
    assert_int_equal(call_sealed(f, c, "carol-1", "hi", 2, &reply, &size),
                     YUN_E_UNKNOWN_PEER);
    assert_int_equal(f->last_reject, YUN_E_UNKNOWN_PEER);
    assert_string_equal(f->reject_key_id, "carol");
    assert_string_equal(f->reject_request_id, "carol-1");
    yun_bus_client_free(c);

    /* Alice at a revoked (older) and a future epoch. */
    static const uint32_t epochs[] = { 0, 2 };
    for (size_t i = 0; i < ELEMENTSOF(epochs); i++) {
        c = client_new(f->url, "alice", epochs[i], test_secret, 0);
        assert_int_equal(call_sealed(f, c, NULL, "hi", 2, &reply, &size),
                         YUN_E_UNKNOWN_PEER);
        yun_bus_client_free(c);
    }
    /* Bob at alice's epoch. */
    c = client_new(f->url, "bob", 1, test_secret, 0);
    assert_int_equal(call_sealed(f, c, NULL, "hi", 2, &reply, &size), YUN_E_UNKNOWN_PEER);
    yun_bus_client_free(c);

    assert_int_equal(f->serve_calls, 0);
    assert_int_equal(f->reject_calls, 4);
    assert_serves(f);
}

static void
test_resend_answered_from_cache(void **state)
{
    /* nanomsg REQ re-sends the very same bytes when a reply is late. */
    struct fixture *f = *state;
    struct yun_bus_client *c = client_new(f->url, "alice", 1, test_secret, 0);
    _cleanup_free_ uint8_t *msg = NULL;
    size_t msg_size;
    assert_int_equal(yun_bus_client_seal(c, "dup-1", "once only", 9, &msg, &msg_size), 0);

    _cleanup_free_ uint8_t *r1 = NULL, *r2 = NULL;
    size_t s1, s2;
    assert_int_equal(call_raw(f, c, msg, msg_size, &r1, &s1), 0);
    assert_int_equal(f->serve_calls, 1);
    assert_int_equal(call_raw(f, c, msg, msg_size, &r2, &s2), 0);
    assert_int_equal(f->serve_calls, 1);
    assert_int_equal(s1, s2);
    assert_memory_equal(r1, r2, s1);

    /* And the cached reply is the real one. */
    _cleanup_free_ uint8_t *body = NULL;
    size_t body_size;
    assert_int_equal(yun_bus_client_open_reply(c, "dup-1", r2, s2, &body, &body_size), 0);
    assert_int_equal(body_size, 9);
    assert_memory_equal(body, "once only", 9);
    /* It answers that request only. */
    uint8_t *other = NULL;
    assert_int_equal(yun_bus_client_open_reply(c, "dup-2", r2, s2, &other, &body_size),
                     YUN_E_SEAL);
    assert_null(other);

    struct yun_bus_stats st;
    yun_bus_server_stats(f->server, &st);
    assert_int_equal(st.served, 1);
    assert_int_equal(st.cached, 1);
    assert_int_equal(st.rejected, 0);
    yun_bus_client_free(c);
}

static void
test_replay_after_eviction(void **state)
{
    struct fixture *f = *state; /* max_cached_replies = 1 */
    struct yun_bus_client *c = client_new(f->url, "alice", 1, test_secret, 0);
    _cleanup_free_ uint8_t *a = NULL, *b = NULL;
    size_t as, bs;
    assert_int_equal(yun_bus_client_seal(c, "rep-A", "A", 1, &a, &as), 0);
    assert_int_equal(yun_bus_client_seal(c, "rep-B", "B", 1, &b, &bs), 0);

    _cleanup_free_ uint8_t *ra = NULL, *rb = NULL, *ra2 = NULL;
    size_t ras, rbs, ra2s;
    assert_int_equal(call_raw(f, c, a, as, &ra, &ras), 0);
    assert_int_equal(call_raw(f, c, b, bs, &rb, &rbs), 0);
    assert_int_equal(f->serve_calls, 2);
    /* A's reply was evicted by B's: A's bytes again are a replay. */
    assert_int_equal(call_raw(f, c, a, as, &ra2, &ra2s), 0);
    assert_int_equal(notice_code(ra2, ra2s), YUN_E_REPLAY);
    assert_int_equal(f->serve_calls, 2);
    assert_int_equal(f->last_reject, YUN_E_REPLAY);
    assert_string_equal(f->reject_request_id, "rep-A");

    uint8_t *body = NULL;
    size_t body_size;
    assert_int_equal(yun_bus_client_open_reply(c, "rep-A", ra2, ra2s, &body, &body_size),
                     YUN_E_REPLAY);
    assert_null(body);
    yun_bus_client_free(c);
}

static void
test_reflected_reply(void **state)
{
    /* A reply is sealed with the peer's key; sent back to the server it
     * must not run as that peer's request. */
    struct fixture *f = *state; /* max_cached_replies = 1 */
    struct yun_bus_client *c = client_new(f->url, "alice", 1, test_secret, 0);
    _cleanup_free_ uint8_t *a = NULL, *b = NULL;
    size_t as, bs;
    assert_int_equal(yun_bus_client_seal(c, "refl-A", "mirror", 6, &a, &as), 0);
    assert_int_equal(yun_bus_client_seal(c, "refl-B", "evict", 5, &b, &bs), 0);
    _cleanup_free_ uint8_t *ra = NULL, *rb = NULL, *rr = NULL;
    size_t ras, rbs, rrs;
    assert_int_equal(call_raw(f, c, a, as, &ra, &ras), 0);
    /* Push A's reply out of the cache, so that only the check can stop it. */
    assert_int_equal(call_raw(f, c, b, bs, &rb, &rbs), 0);
    assert_int_equal(f->serve_calls, 2);

    assert_int_equal(call_raw(f, c, ra, ras, &rr, &rrs), 0);
    assert_int_equal(f->serve_calls, 2);
    int code = notice_code(rr, rrs);
    assert_int_equal(code, YUN_E_SEAL);
    assert_int_equal(f->last_reject, YUN_E_SEAL);
    assert_string_equal(f->reject_sender, SERVER_ID);
    yun_bus_client_free(c);
}

static void
test_garbage(void **state)
{
    struct fixture *f = *state;
    struct yun_bus_client *c = client_new(f->url, "alice", 1, test_secret, 0);

    /* Random bytes that do not decode (checked here first). */
    uint8_t junk[200];
    uint64_t seed = 0x1234567;
    for (;;) {
        for (size_t i = 0; i < sizeof junk; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            junk[i] = (uint8_t)(seed >> 56);
        }
        struct yun_envelope_in in;
        int r = yun_envelope_parse(junk, sizeof junk, 64 * 1024, &in);
        yun_envelope_in_done(&in);
        if (r == YUN_E_DECODE)
            break;
    }
    _cleanup_free_ uint8_t *r1 = NULL;
    size_t s1;
    assert_int_equal(call_raw(f, c, junk, sizeof junk, &r1, &s1), 0);
    assert_int_equal(notice_code(r1, s1), YUN_E_DECODE);
    assert_int_equal(f->last_reject, YUN_E_DECODE);

    /* A truncated envelope. */
    _cleanup_free_ uint8_t *msg = NULL;
    size_t msg_size;
    assert_int_equal(yun_bus_client_seal(c, "trunc-1", "0123456789", 10, &msg, &msg_size), 0);
    _cleanup_free_ uint8_t *r2 = NULL;
    size_t s2;
    assert_int_equal(call_raw(f, c, msg, msg_size / 2, &r2, &s2), 0);
    assert_int_equal(notice_code(r2, s2), YUN_E_DECODE);

    /* A one-byte and an empty message. */
    _cleanup_free_ uint8_t *r3 = NULL, *r4 = NULL;
    size_t s3, s4;
    assert_int_equal(call_raw(f, c, "\xff", 1, &r3, &s3), 0);
    assert_int_equal(notice_code(r3, s3), YUN_E_DECODE);
    assert_int_equal(call_raw(f, c, "", 0, &r4, &s4), 0);
    assert_true(notice_code(r4, s4) < 0);

    /* A rejection notice sent to the server is no request either. */
    _cleanup_free_ uint8_t *notice = NULL, *r5 = NULL;
    size_t ns, s5;
    assert_int_equal(yun_envelope_reject(YUN_E_SEAL, "n-1", &notice, &ns), 0);
    assert_int_equal(call_raw(f, c, notice, ns, &r5, &s5), 0);
    assert_int_equal(notice_code(r5, s5), YUN_E_DECODE);

    assert_int_equal(f->serve_calls, 0);
    assert_int_equal(f->reject_calls, 5);
    yun_bus_client_free(c);
    assert_serves(f);
}

static void
test_too_big(void **state)
{
    struct fixture *f = *state; /* server max_body 64 KiB */
    struct yun_key key;
    assert_int_equal(yun_key_derive(test_secret, sizeof test_secret, "alice", 1, &key), 0);
    struct yun_bus_client_options o = {
        .url = f->url, .self_id = "alice", .key_id = "alice", .key_epoch = 1, .key = &key,
        .server_id = SERVER_ID, .max_body = 100 * 1024,
    };
    struct yun_bus_client *c = NULL;
    assert_int_equal(yun_bus_client_new(&o, &c), 0);
    size_t n = 64 * 1024 + 1;
    _cleanup_free_ uint8_t *body = calloc(1, n);
    assert_non_null(body);
    uint8_t *reply = NULL;
    size_t size;
    assert_int_equal(call_sealed(f, c, NULL, body, n, &reply, &size), YUN_E_TOOBIG);
    assert_int_equal(f->last_reject, YUN_E_TOOBIG);
    assert_int_equal(f->serve_calls, 0);
    yun_bus_client_free(c);

    /* The client refuses above its own limit without sending. */
    o.max_body = 1024;
    assert_int_equal(yun_bus_client_new(&o, &c), 0);
    assert_int_equal(call_sealed(f, c, NULL, body, 1025, &reply, &size), YUN_E_TOOBIG);
    assert_int_equal(f->reject_calls, 1);
    yun_bus_client_free(c);
    assert_serves(f);
}

static void
test_unreachable(void **state)
{
    char url[600];
    new_url(url, sizeof url, "nobody-home");
    struct yun_bus_client *c = client_new(url, "alice", 1, test_secret, 300);
    int64_t start = yun_now_ms();
    uint8_t *reply = NULL;
    size_t size;
    assert_int_equal(yun_bus_client_call(c, NULL, NULL, 0, "hello?", 6, &reply, &size),
                     YUN_E_UNREACHABLE);
    int64_t took = yun_now_ms() - start;
    assert_null(reply);
    assert_true(took >= 250);
    assert_true(took < 10000);
    yun_bus_client_free(c);
}

static void
test_rpc(void **state)
{
    struct fixture *f = *state;
    struct yun_bus_client *c = client_new(f->url, "alice", 1, test_secret, 0);

    Yun__PingRequest pq = YUN__PING_REQUEST__INIT;
    pq.data.data = (uint8_t *)"ping!";
    pq.data.len = 5;
    struct call call = { .client = c, .kind = CALL_RPC, .op = YUN__OP__OP_PING,
                         .req = &pq.base, .reply_desc = &yun__ping_reply__descriptor };
    assert_int_equal(run_call(f, &call), 0);
    assert_null(call.errmsg);
    Yun__PingReply *pr = (Yun__PingReply *)call.rpc_reply;
    assert_non_null(pr);
    assert_int_equal(pr->data.len, 5);
    assert_memory_equal(pr->data.data, "ping!", 5);
    assert_string_equal(pr->server, SERVER_ID);
    assert_int_equal(pr->time_us, 42);
    protobuf_c_message_free_unpacked(call.rpc_reply, NULL);

    /* An error reply: its code and sentence come back, no payload. */
    struct call err = { .client = c, .kind = CALL_RPC, .op = YUN__OP__OP_HOST_SHOW,
                        .reply_desc = &yun__ping_reply__descriptor };
    assert_int_equal(run_call(f, &err), YUN_E_NOHOST);
    assert_null(err.rpc_reply);
    assert_non_null(err.errmsg);
    assert_string_equal(err.errmsg, "Host 'n9' is not known.");
    free(err.errmsg);

    /* An error without a sentence gets the code's own. */
    struct call bad = { .client = c, .kind = CALL_RPC, .op = YUN__OP__OP_HOST_LIST,
                        .reply_desc = &yun__ping_reply__descriptor };
    assert_int_equal(run_call(f, &bad), YUN_E_BADOP);
    assert_non_null(bad.errmsg);
    assert_string_equal(bad.errmsg, yun_strerror(YUN_E_BADOP));
    free(bad.errmsg);
    assert_int_equal(f->serve_calls, 3);
    yun_bus_client_free(c);

    /* A transport failure comes back the same way. */
    c = client_new(f->url, "mallory", 1, test_secret, 0);
    struct call denied = { .client = c, .kind = CALL_RPC, .op = YUN__OP__OP_PING,
                           .req = &pq.base, .reply_desc = &yun__ping_reply__descriptor };
    assert_int_equal(run_call(f, &denied), YUN_E_UNKNOWN_PEER);
    assert_null(denied.rpc_reply);
    assert_non_null(denied.errmsg);
    assert_string_equal(denied.errmsg, yun_strerror(YUN_E_UNKNOWN_PEER));
    free(denied.errmsg);
    assert_int_equal(f->serve_calls, 3);
    yun_bus_client_free(c);
}

/* yun_rpc_window: several calls in flight on their own sockets, each
 * reply taken from the slot that carried its call, in any order. */
struct window_run {
    struct yun_bus_client *client;
    int failures;              /* assertions are counted, not raised, off the main thread */
    atomic_bool done;
};

static void *
window_thread(void *arg)
{
    struct window_run *w = arg;
    struct yun_rpc_window *win = NULL;
    if (yun_rpc_window_new(w->client, 3, 5000, &win) < 0 || yun_rpc_window_depth(win) != 3) {
        w->failures++;
        goto out;
    }
    char data[3][8];
    for (unsigned i = 0; i < 3; i++) {
        snprintf(data[i], sizeof data[i], "slot-%u", i);
        Yun__PingRequest pq = YUN__PING_REQUEST__INIT;
        pq.data.data = (uint8_t *)data[i];
        pq.data.len = strlen(data[i]);
        if (yun_rpc_window_send(win, i, NULL, 0, YUN__OP__OP_PING, &pq.base) != 0)
            w->failures++;
    }
    /* A busy slot takes no second call; a slot without one has no reply. */
    Yun__PingRequest busy = YUN__PING_REQUEST__INIT;
    if (yun_rpc_window_send(win, 1, NULL, 0, YUN__OP__OP_PING, &busy.base) != -EBUSY)
        w->failures++;
    if (yun_rpc_window_send(win, 3, NULL, 0, YUN__OP__OP_PING, &busy.base) != -EINVAL)
        w->failures++;
    static const unsigned order[] = { 2, 0, 1 };
    for (unsigned k = 0; k < 3; k++) {
        unsigned i = order[k];
        ProtobufCMessage *m = NULL;
        if (yun_rpc_window_recv(win, i, &yun__ping_reply__descriptor, &m, NULL) != 0 || !m) {
            w->failures++;
            continue;
        }
        Yun__PingReply *pr = (Yun__PingReply *)m;
        if (pr->data.len != strlen(data[i]) || memcmp(pr->data.data, data[i], pr->data.len))
            w->failures++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (yun_rpc_window_recv(win, 0, &yun__ping_reply__descriptor, NULL, NULL) != -EINVAL)
        w->failures++;
    /* A slot carries the next call; errors come back with their sentence. */
    char *msg = NULL;
    if (yun_rpc_window_send(win, 0, NULL, 0, YUN__OP__OP_HOST_SHOW, NULL) != 0 ||
        yun_rpc_window_recv(win, 0, &yun__ping_reply__descriptor, NULL, &msg) != YUN_E_NOHOST ||
        !msg || strcmp(msg, "Host 'n9' is not known.") != 0)
        w->failures++;
    free(msg);
out:
    yun_rpc_window_free(win);
    atomic_store(&w->done, true);
    return NULL;
}

static void
test_rpc_window(void **state)
{
    struct fixture *f = *state;
    struct window_run w = { .client = client_new(f->url, "alice", 1, test_secret, 0) };
    atomic_store(&w.done, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, window_thread, &w), 0);
    int64_t deadline = yun_now_ms() + PUMP_LIMIT_MS;
    while (!atomic_load(&w.done) && yun_now_ms() < deadline)
        assert_true(yun_loop_run_once(f->loop, 10) >= 0);
    assert_true(atomic_load(&w.done));
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.failures, 0);
    assert_int_equal(f->serve_calls, 4);
    yun_bus_client_free(w.client);
}

static void
test_many_calls(void **state)
{
    /* One client, many requests: REQ state, nonces and the cache keep up. */
    struct fixture *f = *state;
    struct yun_bus_client *c = client_new(f->url, "bob", 2, test_secret, 0);
    for (int i = 0; i < 200; i++) {
        char body[32];
        int n = snprintf(body, sizeof body, "message %d", i);
        _cleanup_free_ uint8_t *reply = NULL;
        size_t size = 0;
        assert_int_equal(call_sealed(f, c, NULL, body, (size_t)n, &reply, &size), 0);
        assert_int_equal(size, (size_t)n);
        assert_memory_equal(reply, body, size);
    }
    assert_int_equal(f->serve_calls, 200);
    yun_bus_client_free(c);
}

static int
group_setup(void **state)
{
    const char *dir = getenv("YUN_TEST_DIR");
    if (dir && *dir) {
        if (yun_mkdir_p(dir, 0700) < 0)
            return -1;
        snprintf(test_dir, sizeof test_dir, "%s", dir);
    } else {
        snprintf(test_dir, sizeof test_dir, "/tmp/yun-test-bus-XXXXXX");
        if (!mkdtemp(test_dir))
            return -1;
    }
    /* sun_path holds 107 bytes: keep socket paths well inside. */
    if (strlen(test_dir) > 70) {
        snprintf(test_dir, sizeof test_dir, "/tmp/yun-test-bus-XXXXXX");
        if (!mkdtemp(test_dir))
            return -1;
    }
    return 0;
}

/* --- deferred replies ------------------------------------------------------ */

/* "later:X" is deferred (its handle kept under X); "both" defers and then
 * answers at once anyway; anything else is echoed now. */
static int
defer_serve(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
            uint8_t **ret_reply, size_t *ret_size, void *data)
{
    struct fixture *f = data;
    f->serve_calls++;
    if (size > 6 && size < 16 && memcmp(body, "later:", 6) == 0) {
        uint64_t h;
        int r = yun_bus_server_defer(f->server, &h);
        if (r < 0) {
            f->defer_errors++;
            return yun_rpc_pack_reply(r, "busy", NULL, ret_reply, ret_size);
        }
        /* One handle per request: a second reservation is refused. */
        uint64_t again;
        assert_int_equal(yun_bus_server_defer(f->server, &again), -EINVAL);
        f->deferred[f->n_deferred] = h;
        memcpy(f->deferred_body[f->n_deferred], body + 6, size - 6);
        f->deferred_body[f->n_deferred][size - 6] = '\0';
        f->n_deferred++;
        return YUN_BUS_DEFERRED;
    }
    if (size == 4 && memcmp(body, "both", 4) == 0) {
        uint64_t h;
        assert_int_equal(yun_bus_server_defer(f->server, &h), 0);
        f->deferred[f->n_deferred] = h;
        snprintf(f->deferred_body[f->n_deferred], sizeof f->deferred_body[0], "both");
        f->n_deferred++;
    }
    uint8_t *copy = malloc(size + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, body, size);
    *ret_reply = copy;
    *ret_size = size;
    return 0;
}

static int
setup_deferred(void **state)
{
    struct fixture *f = malloc(sizeof *f);
    if (!f)
        return -1;
    fixture_start_with(f, defer_serve, 0, 2);
    *state = f;
    return 0;
}

static void
start_call(struct call *c, pthread_t *t)
{
    atomic_store(&c->done, false);
    c->reply = NULL;
    c->reply_size = 0;
    assert_int_equal(pthread_create(t, NULL, call_thread, c), 0);
}

/* Runs the loop until 'n' requests were served or deferred. */
static void
pump_until_served(struct fixture *f, int n)
{
    int64_t deadline = yun_now_ms() + PUMP_LIMIT_MS;
    while (f->serve_calls < n && yun_now_ms() < deadline)
        assert_true(yun_loop_run_once(f->loop, 10) >= 0);
    assert_int_equal(f->serve_calls, n);
}

static void
pump_until_done(struct fixture *f, struct call *c, pthread_t t)
{
    int64_t deadline = yun_now_ms() + PUMP_LIMIT_MS;
    while (!atomic_load(&c->done) && yun_now_ms() < deadline)
        assert_true(yun_loop_run_once(f->loop, 10) >= 0);
    assert_true(atomic_load(&c->done));
    assert_int_equal(pthread_join(t, NULL), 0);
}

static void
test_deferred_out_of_order(void **state)
{
    struct fixture *f = *state;
    struct yun_bus_client *a = client_new(f->url, "alice", 1, test_secret, 0);
    struct yun_bus_client *b = client_new(f->url, "bob", 2, test_secret, 0);
    struct call ca = { .client = a, .kind = CALL_SEALED, .body = "later:A", .size = 7 };
    struct call cb = { .client = b, .kind = CALL_SEALED, .body = "later:B", .size = 7 };
    pthread_t ta, tb;
    start_call(&ca, &ta);
    pump_until_served(f, 1);
    start_call(&cb, &tb);
    pump_until_served(f, 2);
    assert_int_equal(f->n_deferred, 2);
    struct yun_bus_stats st;
    yun_bus_server_stats(f->server, &st);
    assert_int_equal(st.pending, 2);

    /* Others are served meanwhile. */
    assert_serves(f);

    /* The later request answered first. */
    int ib = strcmp(f->deferred_body[0], "B") == 0 ? 0 : 1;
    assert_int_equal(yun_bus_server_reply(f->server, f->deferred[ib], "B!", 2), 0);
    pump_until_done(f, &cb, tb);
    assert_int_equal(cb.r, 0);
    assert_int_equal(cb.reply_size, 2);
    assert_memory_equal(cb.reply, "B!", 2);
    assert_false(atomic_load(&ca.done));
    assert_int_equal(yun_bus_server_reply(f->server, f->deferred[1 - ib], "A!", 2), 0);
    pump_until_done(f, &ca, ta);
    assert_int_equal(ca.r, 0);
    assert_memory_equal(ca.reply, "A!", 2);
    /* A handle answers once. */
    assert_int_equal(yun_bus_server_reply(f->server, f->deferred[ib], "x", 1), -ENOENT);
    yun_bus_server_stats(f->server, &st);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.deferred, 2);
    free(ca.reply);
    free(cb.reply);

    /* Outside a serve callback there is nothing to defer. */
    uint64_t h;
    assert_int_equal(yun_bus_server_defer(f->server, &h), -EINVAL);
    /* A callback that defers and then answers: the answer goes, the
     * handle is gone. */
    _cleanup_free_ uint8_t *reply = NULL;
    size_t size = 0;
    assert_int_equal(call_sealed(f, a, NULL, "both", 4, &reply, &size), 0);
    assert_memory_equal(reply, "both", 4);
    assert_int_equal(yun_bus_server_reply(f->server, f->deferred[f->n_deferred - 1], "x", 1),
                     -ENOENT);
    yun_bus_client_free(a);
    yun_bus_client_free(b);
}

static void
test_deferred_resend(void **state)
{
    struct fixture *f = *state;
    /* Two sockets with alice's key: the second re-sends the first's
     * bytes, as a REQ socket does after a reconnect. */
    struct yun_bus_client *a1 = client_new(f->url, "alice", 1, test_secret, 3000);
    struct yun_bus_client *a2 = client_new(f->url, "alice", 1, test_secret, 0);
    /* a2 is connected before the race starts, so its re-send arrives long
     * before a1's REQ re-sends by itself (at a1's timeout); that one would
     * take the route back and the test would see a1 answered. */
    uint8_t *warm = NULL;
    size_t warm_size = 0;
    assert_int_equal(call_sealed(f, a2, "req-warm", "warm", 4, &warm, &warm_size), 0);
    free(warm);
    _cleanup_free_ uint8_t *msg = NULL;
    size_t msg_size = 0;
    assert_int_equal(yun_bus_client_seal(a1, "req-resend", "later:R", 7, &msg, &msg_size), 0);
    struct call c1 = { .client = a1, .kind = CALL_RAW, .body = msg, .size = msg_size };
    struct call c2 = { .client = a2, .kind = CALL_RAW, .body = msg, .size = msg_size };
    pthread_t t1, t2;
    start_call(&c1, &t1);
    pump_until_served(f, 2);
    int cached_before;
    struct yun_bus_stats st;
    yun_bus_server_stats(f->server, &st);
    cached_before = (int)st.cached;
    start_call(&c2, &t2);
    /* Not run again, not refused as a replay: it waits with the first. */
    int64_t deadline = yun_now_ms() + PUMP_LIMIT_MS;
    do {
        assert_true(yun_loop_run_once(f->loop, 10) >= 0);
        yun_bus_server_stats(f->server, &st);
    } while ((int)st.cached == cached_before && yun_now_ms() < deadline);
    assert_int_equal(f->serve_calls, 2);
    assert_int_equal(f->reject_calls, 0);
    assert_int_equal(yun_bus_server_reply(f->server, f->deferred[0], "R!", 2), 0);
    pump_until_done(f, &c2, t2);
    assert_int_equal(c2.r, 0);
    _cleanup_free_ uint8_t *body = NULL;
    size_t body_size = 0;
    assert_int_equal(yun_bus_client_open_reply(a2, "req-resend", c2.reply, c2.reply_size,
                                               &body, &body_size), 0);
    assert_memory_equal(body, "R!", 2);
    free(c2.reply);
    /* The first route was replaced: it hears nothing and times out. The
     * server is not run meanwhile, so nothing can reach a1 before its
     * deadline. */
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_true(atomic_load(&c1.done));
    assert_int_equal(c1.r, YUN_E_UNREACHABLE);
    /* And the reply is in the cache now, as any other. */
    _cleanup_free_ uint8_t *again = NULL;
    size_t again_size = 0;
    assert_int_equal(call_raw(f, a2, msg, msg_size, &again, &again_size), 0);
    assert_int_equal(f->serve_calls, 2);
    yun_bus_client_free(a1);
    yun_bus_client_free(a2);
}

/* A call that timed out is answered late. Its REQ socket must not have
 * re-sent it meanwhile: the server would answer that too, from its cache,
 * and nanomsg 1.1.5 keeps the second reply over the first, leaking it
 * (LeakSanitizer said so while clients set the re-send interval to their
 * timeout). The client's next calls go on as if nothing came. */
static void
test_late_double_reply(void **state)
{
    struct fixture *f = *state;
    struct yun_bus_client *a = client_new(f->url, "alice", 1, test_secret, 300);
    uint8_t *warm = NULL;
    size_t warm_size = 0;
    assert_int_equal(call_sealed(f, a, "req-warm", "warm", 4, &warm, &warm_size), 0);
    free(warm);
    struct call c1 = { .client = a, .kind = CALL_SEALED, .request_id = "req-late",
                       .body = "later:L", .size = 7 };
    pthread_t t1;
    start_call(&c1, &t1);
    pump_until_served(f, 2);
    /* Not served meanwhile: the caller gives up. */
    assert_int_equal(pthread_join(t1, NULL), 0);
    assert_int_equal(c1.r, YUN_E_UNREACHABLE);
    usleep(100000);
    /* The late reply, and anything re-sent is answered from the cache. */
    assert_int_equal(yun_bus_server_reply(f->server, f->deferred[0], "L!", 2), 0);
    int64_t until = yun_now_ms() + 300;
    while (yun_now_ms() < until)
        assert_true(yun_loop_run_once(f->loop, 10) >= 0);
    /* The next calls get their own answers. */
    for (int k = 0; k < 3; k++) {
        char rid[32];
        snprintf(rid, sizeof rid, "req-next-%d", k);
        uint8_t *reply = NULL;
        size_t reply_size = 0;
        assert_int_equal(call_sealed(f, a, rid, "next", 4, &reply, &reply_size), 0);
        assert_int_equal(reply_size, 4);
        assert_memory_equal(reply, "next", 4);
        free(reply);
    }
    yun_bus_client_free(a);
}

static void
test_deferred_bound(void **state)
{
    struct fixture *f = *state;
    struct yun_bus_client *c[3];
    struct call calls[3];
    pthread_t t[3];
    static const char *const bodies[] = { "later:1", "later:2", "later:3" };
    for (int i = 0; i < 3; i++) {
        c[i] = client_new(f->url, i == 1 ? "bob" : "alice", i == 1 ? 2 : 1, test_secret, 0);
        calls[i] = (struct call){ .client = c[i], .kind = CALL_SEALED, .body = bodies[i],
                                  .size = 7 };
        start_call(&calls[i], &t[i]);
        pump_until_served(f, i + 1);
    }
    /* max_deferred is 2: the third is answered at once, with the error. */
    pump_until_done(f, &calls[2], t[2]);
    assert_int_equal(f->defer_errors, 1);
    assert_int_equal(calls[2].r, 0);
    free(calls[2].reply);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(yun_bus_server_reply(f->server, f->deferred[i], "ok", 2), 0);
        pump_until_done(f, &calls[i], t[i]);
        assert_int_equal(calls[i].r, 0);
        free(calls[i].reply);
    }
    for (int i = 0; i < 3; i++)
        yun_bus_client_free(c[i]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup_echo, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key, setup_echo, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_peer, setup_echo, teardown),
        cmocka_unit_test_setup_teardown(test_resend_answered_from_cache, setup_echo,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_replay_after_eviction, setup_one_cached,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reflected_reply, setup_one_cached, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup_echo, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup_echo, teardown),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test_setup_teardown(test_rpc, setup_rpc, teardown),
        cmocka_unit_test_setup_teardown(test_rpc_window, setup_rpc, teardown),
        cmocka_unit_test_setup_teardown(test_many_calls, setup_echo, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_out_of_order, setup_deferred, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_resend, setup_deferred, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_bound, setup_deferred, teardown),
        cmocka_unit_test_setup_teardown(test_late_double_reply, setup_deferred, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
