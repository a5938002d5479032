/* SPDX-License-Identifier: Apache-2.0
 * agent-client.c: the scheduler's client of the agents' command sockets
 * (OP_AGENT_SPAWN, DESTROY, ACTION, CONSOLE, LIST), asynchronous on the
 * scheduler's one loop.
 *
 * One nanomsg REQ socket per agent, connected to the address the agent
 * gave at registration (HostRecord.address): a REQ socket connected to
 * several peers would load-balance among them. Requests are sealed with
 * the agent's own key, which the scheduler derives from the cluster
 * secret, the agent's peer id (the host name) and its current epoch in
 * "peers"; the sender is "scheduler", and a reply is trusted only when it
 * opens with that key, comes from the agent's peer id and echoes the
 * request id. REQ carries one request at a time, so each agent has a FIFO
 * queue ([compute] agent_queue_max) and at most one request in flight,
 * with a deadline ([compute] agent_timeout_ms); a
 * request whose deadline passes fails with YUN_E_UNREACHABLE and the next
 * send cancels it inside nanomsg (REQ drops a late reply to a cancelled
 * request). The socket's NN_RCVFD sits on the loop. The host record and
 * the peer's epoch are read again before each send, so a re-registration
 * at another address or a revoked key takes effect at the next request.
 *
 * nanomsg allows 512 sockets per process (a compile-time limit), far fewer
 * than a cloud's agents: at most [compute] agent_connections_max sockets
 * are open at once. They are kept in least-recently-used order; opening
 * one more closes the least recently used socket with no request in
 * flight, and when every open socket is busy the agent waits in a FIFO
 * until a request in flight ends (its deadline starts when it is sent).
 *
 * One timer serves every agent: the loop's timers are a list scanned at
 * every iteration, so a timer per agent ever spoken to (thousands) made
 * each iteration and each re-arm cost O(agents). Agents with work to send
 * go on a "kick" list that the timer drains on the next iteration; the
 * timer is also armed for the nearest deadline, and checks the requests in
 * flight (at most one per open socket) when it fires.
 *
 * Every request ends through its callback exactly once, and never inside
 * sched_agent_send: sends and immediate failures run from the timer on
 * the next loop iteration, so a caller never sees its callback
 * re-enter it.
 *
 * Tests replace the sockets with a hook (sched_agent_set_hook) that
 * receives each request and completes it when it likes.
 *
 * Neighbours: instance.c (the only caller), peers.c (the keys), host.c
 * (the addresses), common/bus.c (the REQ client and its seal). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "bus.h"
#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "rpc.h"
#include "scheduler.h"
#include "seal.h"
#include "store.h"
#include "util.h"
#include "host.pb-c.h"

YUN_LOG_MODULE("sched.agent");

#define AGENT_BUCKETS 1024
#define HOST_ID_MAX 63

struct sched_agent_request {
    struct sched_agent_request *next;
    char host_id[HOST_ID_MAX + 1];
    Yun__Op op;
    uint8_t *body;                    /* the packed Request */
    size_t size;
    uint8_t *payload;                 /* the operation's packed message (for the hook) */
    size_t payload_size;
    char request_id[YUN_REQUEST_ID_MAX + 1];
    char *tag;
    const ProtobufCMessageDescriptor *reply_desc;
    sched_agent_done_fn done;
    void *data;
    void (*free_data)(void *);
};

struct agent_conn {
    struct agent_conn *next;          /* hash chain */
    struct agent_conn *lru_prev, *lru_next; /* open sockets, least recently used first */
    struct sched_agents *agents;
    char host_id[HOST_ID_MAX + 1];
    char name[YUN_PEER_ID_MAX + 1];   /* the agent's peer id */
    char *address;
    uint32_t epoch;
    struct yun_bus_client *bus;
    int watch;                        /* NN_RCVFD watch, -1 */
    bool kicked;                      /* on the kick list */
    struct agent_conn *kick_next;
    bool waiting;                     /* on the list waiting for a socket */
    struct agent_conn *wait_next;
    struct sched_agent_request *inflight;
    int64_t deadline_ms;
    struct sched_agent_request *head, *tail;
    size_t queued;
};

struct sched_agents {
    struct sched *s;
    struct agent_conn *buckets[AGENT_BUCKETS];
    struct agent_conn *lru_head, *lru_tail; /* conns with an open socket */
    size_t n_open;
    int timer;                        /* kicks and deadlines of every conn; -1 */
    int64_t timer_due_ms;             /* when it is armed for; -1 = not armed */
    struct agent_conn *kick_head, *kick_tail; /* conns to pump */
    struct agent_conn *wait_head, *wait_tail; /* conns waiting for a socket */
    sched_agent_hook_fn hook;
    void *hook_data;
    struct sched_agent_request *held; /* kept by the hook */
};

static void
message_freep(ProtobufCMessage **m)
{
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}

static size_t
bucket_of(const char *id)
{
    uint32_t h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 16777619u;
    return h % AGENT_BUCKETS;
}

static void
request_free(struct sched_agent_request *r, bool release_data)
{
    if (!r)
        return;
    if (release_data && r->free_data)
        r->free_data(r->data);
    free(r->body);
    free(r->payload);
    free(r->tag);
    free(r);
}

/* Calls back with the outcome and frees 'r'. */
static void
request_complete(struct sched *s, struct sched_agent_request *r, int error, const char *msg,
                 const ProtobufCMessage *reply)
{
    struct sched_agent_result res = {
        .host_id = r->host_id,
        .op = r->op,
        .request_id = r->request_id,
        .error = error,
        .error_message = msg ? msg : "",
        .reply = error ? NULL : reply,
    };
    if (error)
        log_req(YUN_LOG_INFO, r->request_id, error, "agent request failed host=%s op=%d: %s",
                r->host_id, (int)r->op, msg && *msg ? msg : yun_strerror(error));
    r->done(s, &res, r->data);
    request_free(r, true);
}

/* --- connections ------------------------------------------------------------- */

static struct agent_conn *
conn_find(struct sched_agents *a, const char *host_id)
{
    for (struct agent_conn *c = a->buckets[bucket_of(host_id)]; c; c = c->next)
        if (strcmp(c->host_id, host_id) == 0)
            return c;
    return NULL;
}

static void
lru_unlink(struct agent_conn *c)
{
    struct sched_agents *a = c->agents;
    if (c->lru_prev)
        c->lru_prev->lru_next = c->lru_next;
    else
        a->lru_head = c->lru_next;
    if (c->lru_next)
        c->lru_next->lru_prev = c->lru_prev;
    else
        a->lru_tail = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
}

/* Marks 'c' (with an open socket) the most recently used. */
static void
lru_touch(struct agent_conn *c)
{
    struct sched_agents *a = c->agents;
    if (a->lru_tail == c)
        return;
    lru_unlink(c);
    c->lru_prev = a->lru_tail;
    if (a->lru_tail)
        a->lru_tail->lru_next = c;
    else
        a->lru_head = c;
    a->lru_tail = c;
}

static void
conn_close_bus(struct agent_conn *c)
{
    struct sched *s = c->agents->s;
    if (c->watch >= 0 && s->loop)
        (void)yun_loop_remove_fd(s->loop, c->watch);
    c->watch = -1;
    if (c->bus) {
        lru_unlink(c);
        c->agents->n_open--;
    }
    c->bus = yun_bus_client_free(c->bus);
}

/* Makes room for one more open socket: closes the least recently used one
 * with no request in flight. -EAGAIN when every open socket is busy. */
/* Could a socket be opened now (without closing one that is busy)? */
static bool
conn_has_room(struct sched_agents *a)
{
    if (a->n_open < a->s->cfg.compute_agent_connections_max)
        return true;
    for (struct agent_conn *c = a->lru_head; c; c = c->lru_next)
        if (!c->inflight)
            return true;
    return false;
}

static void
conn_wait(struct agent_conn *c)
{
    struct sched_agents *a = c->agents;
    if (c->waiting)
        return;
    c->waiting = true;
    c->wait_next = NULL;
    if (a->wait_tail)
        a->wait_tail->wait_next = c;
    else
        a->wait_head = c;
    a->wait_tail = c;
}

static void conn_kick(struct agent_conn *c, int64_t delay_ms);

/* A request in flight ended: a socket may be free for the first waiter. */
static void
conn_wake_waiter(struct sched_agents *a)
{
    struct agent_conn *c = a->wait_head;
    if (!c)
        return;
    a->wait_head = c->wait_next;
    if (!a->wait_head)
        a->wait_tail = NULL;
    c->waiting = false;
    c->wait_next = NULL;
    conn_kick(c, 0);
}

static int
conn_make_room(struct sched_agents *a)
{
    struct sched *s = a->s;
    if (a->n_open < s->cfg.compute_agent_connections_max)
        return 0;
    for (struct agent_conn *c = a->lru_head; c; c = c->lru_next)
        if (!c->inflight) {
            log_debug("agent connection closed to make room host=%s name=%s", c->host_id,
                      c->name);
            conn_close_bus(c);
            return 0;
        }
    return -EAGAIN;
}

static int64_t on_timer(struct yun_loop *loop, int id, void *data);

/* Makes the timer fire 'delay_ms' from now, or sooner if it already will. */
static void
timer_arm(struct sched_agents *a, int64_t delay_ms)
{
    struct sched *s = a->s;
    if (!s->loop)
        return;
    if (a->timer < 0) {
        a->timer = yun_loop_add_timer(s->loop, -1, on_timer, a, NULL);
        if (a->timer < 0) {
            log_err_errno(a->timer, "cannot add the agent client's timer");
            return;
        }
        a->timer_due_ms = -1;
    }
    int64_t due = yun_now_ms() + delay_ms;
    if (a->timer_due_ms >= 0 && a->timer_due_ms <= due)
        return;
    a->timer_due_ms = due;
    (void)yun_loop_update_timer(s->loop, a->timer, delay_ms);
}

/* Pumps 'c' from the timer, after 'delay_ms'. */
static void
conn_kick(struct agent_conn *c, int64_t delay_ms)
{
    struct sched_agents *a = c->agents;
    if (!c->kicked) {
        c->kicked = true;
        c->kick_next = NULL;
        if (a->kick_tail)
            a->kick_tail->kick_next = c;
        else
            a->kick_head = c;
        a->kick_tail = c;
    }
    timer_arm(a, delay_ms);
}
static void on_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data);

static struct agent_conn *
conn_get(struct sched_agents *a, const char *host_id)
{
    struct agent_conn *c = conn_find(a, host_id);
    if (c)
        return c;
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->agents = a;
    snprintf(c->host_id, sizeof c->host_id, "%s", host_id);
    c->watch = -1;
    size_t b = bucket_of(host_id);
    c->next = a->buckets[b];
    a->buckets[b] = c;
    return c;
}

static void
conn_free(struct agent_conn *c)
{
    conn_close_bus(c);
    request_free(c->inflight, true);
    while (c->head) {
        struct sched_agent_request *r = c->head;
        c->head = r->next;
        request_free(r, true);
    }
    free(c->address);
    free(c);
}

/* Reads the host's address and name and its peer's epoch, and (re)opens
 * the REQ socket when one changed. On failure states why in 'msg'. */
static int
conn_refresh(struct agent_conn *c, char *msg, size_t msg_size)
{
    struct sched *s = c->agents->s;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r < 0)
        return r;
    ProtobufCMessage *m = NULL;
    r = yun_txn_get_msg(txn, "hosts", c->host_id, &yun__host_record__descriptor, &m);
    if (r == -ENOENT) {
        snprintf(msg, msg_size, "Host '%s' is not registered.", c->host_id);
        return YUN_E_NOHOST;
    }
    if (r < 0)
        return r;
    _cleanup_(message_freep) ProtobufCMessage *hm = m;
    const Yun__HostRecord *h = (const Yun__HostRecord *)hm;
    if (!*h->address) {
        snprintf(msg, msg_size, "The agent of host '%s' has no command address.", h->name);
        return YUN_E_UNREACHABLE;
    }
    ProtobufCMessage *pm = NULL;
    r = yun_txn_get_msg(txn, "peers", h->name, &yun__peer_record__descriptor, &pm);
    if (r == -ENOENT) {
        snprintf(msg, msg_size, "The agent of host '%s' has no key.", h->name);
        return YUN_E_UNKNOWN_PEER;
    }
    if (r < 0)
        return r;
    uint32_t epoch = ((Yun__PeerRecord *)pm)->epoch;
    bool is_agent = ((Yun__PeerRecord *)pm)->kind == YUN__PEER_RECORD__KIND__KIND_AGENT;
    protobuf_c_message_free_unpacked(pm, NULL);
    if (!is_agent) {
        snprintf(msg, msg_size, "Peer '%s' is not an agent.", h->name);
        return YUN_E_UNKNOWN_PEER;
    }
    if (c->bus && epoch == c->epoch && strcmp(c->name, h->name) == 0 &&
        strcmp(c->address, h->address) == 0)
        return 0;

    conn_close_bus(c);
    r = conn_make_room(c->agents);
    if (r < 0)
        return r;
    free(c->address);
    c->address = strdup(h->address);
    if (!c->address)
        return -ENOMEM;
    snprintf(c->name, sizeof c->name, "%s", h->name);
    c->epoch = epoch;
    struct yun_key key;
    r = yun_key_derive(s->secret, sizeof s->secret, c->name, epoch, &key);
    if (r < 0)
        return r;
    struct yun_bus_client_options o = {
        .url = c->address,
        .self_id = "scheduler",
        .key_id = c->name,
        .key_epoch = epoch,
        .key = &key,
        .server_id = c->name,
        .max_body = s->cfg.max_message_size,
        .window_us = (uint64_t)s->cfg.message_window_s * 1000000u,
        /* The deadline is ours (the timer); nanomsg's own re-send of a
         * slow request comes only after it, so it never races the
         * deadline (a re-send after a reconnect still happens at once). */
        .timeout_ms = (int)(2 * (uint64_t)s->cfg.compute_agent_timeout_ms < INT32_MAX
                                ? 2 * s->cfg.compute_agent_timeout_ms : INT32_MAX),
    };
    r = yun_bus_client_new(&o, &c->bus);
    yun_wipe(&key, sizeof key);
    if (r < 0) {
        snprintf(msg, msg_size, "Cannot connect to the agent of host '%s' at '%s': %s.",
                 c->name, c->address, yun_strerror(r));
        return r;
    }
    c->agents->n_open++;
    lru_touch(c);
    int fd = yun_bus_client_fd(c->bus);
    if (fd < 0) {
        conn_close_bus(c);
        return fd;
    }
    c->watch = yun_loop_add_fd(s->loop, fd, EPOLLIN, on_readable, c, NULL);
    if (c->watch < 0) {
        r = c->watch;
        conn_close_bus(c);
        return r;
    }
    log_info("agent connection opened host=%s name=%s address=%s epoch=%u", c->host_id, c->name,
             c->address, epoch);
    return 0;
}

/* Sends queued requests until one is in flight or the queue is empty;
 * requests that cannot go fail through their callbacks. */
static void
conn_pump(struct agent_conn *c)
{
    struct sched *s = c->agents->s;
    while (!c->inflight && c->head) {
        struct sched_agent_request *r = c->head;
        c->head = r->next;
        if (!c->head)
            c->tail = NULL;
        c->queued--;
        r->next = NULL;
        char msg[512] = "";
        /* Every socket busy: wait for one, without reading the store. */
        int e = !c->bus && !conn_has_room(c->agents) ? -EAGAIN
                                                     : conn_refresh(c, msg, sizeof msg);
        if (e == -EAGAIN) {
            r->next = c->head;
            c->head = r;
            if (!c->tail)
                c->tail = r;
            c->queued++;
            conn_wait(c);
            return;
        }
        if (e >= 0) {
            lru_touch(c);
            e = yun_bus_client_send(c->bus, r->request_id, NULL, 0, r->body, r->size);
            if (e < 0)
                snprintf(msg, sizeof msg, "Cannot send to the agent of host '%s': %s.",
                         c->name, yun_strerror(e));
        }
        if (e < 0) {
            request_complete(s, r, e, msg, NULL);
            continue;
        }
        c->inflight = r;
        c->deadline_ms = yun_now_ms() + s->cfg.compute_agent_timeout_ms;
        timer_arm(c->agents, s->cfg.compute_agent_timeout_ms);
        log_req(YUN_LOG_DEBUG, r->request_id, 0, "agent request sent host=%s op=%d", c->host_id,
                (int)r->op);
    }
}

static int64_t
on_timer(struct yun_loop *loop, int id, void *data)
{
    struct sched_agents *a = data;
    struct sched *s = a->s;
    (void)yun_loop_update_timer(loop, id, -1);
    a->timer_due_ms = -1;

    /* Requests past their deadline. Collected first: their callbacks may
     * send, which reorders (and closes sockets on) the list. */
    int64_t now = yun_now_ms();
    _cleanup_free_ struct agent_conn **late = calloc(a->n_open + 1, sizeof *late);
    size_t n_late = 0;
    int64_t next = -1;
    for (struct agent_conn *c = a->lru_head; c; c = c->lru_next) {
        if (!c->inflight)
            continue;
        if (now >= c->deadline_ms && late)
            late[n_late++] = c;
        else if (next < 0 || c->deadline_ms < next)
            next = c->deadline_ms;
    }
    for (size_t i = 0; i < n_late; i++) {
        struct agent_conn *c = late[i];
        if (!c->inflight || now < c->deadline_ms)
            continue;
        struct sched_agent_request *r = TAKE_PTR(c->inflight);
        char msg[256];
        snprintf(msg, sizeof msg, "The agent of host '%s' did not answer within %u ms.",
                 *c->name ? c->name : c->host_id, s->cfg.compute_agent_timeout_ms);
        request_complete(s, r, YUN_E_UNREACHABLE, msg, NULL);
        conn_kick(c, 0);
        conn_wake_waiter(a);
    }

    /* The kicked conns; pumping may kick again (onto a fresh list). */
    struct agent_conn *k = a->kick_head;
    a->kick_head = a->kick_tail = NULL;
    while (k) {
        struct agent_conn *c = k;
        k = c->kick_next;
        c->kicked = false;
        c->kick_next = NULL;
        conn_pump(c);
    }
    if (next >= 0)
        timer_arm(a, next > now ? next - now : 0);
    return 0;
}

static void
on_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct agent_conn *c = data;
    struct sched *s = c->agents->s;
    if (!c->bus)
        return;
    uint8_t *body = NULL;
    size_t size = 0;
    int r = yun_bus_client_recv(c->bus, &body, &size);
    if (r == -EAGAIN)
        return;
    if (!c->inflight) {
        /* A reply after its deadline: read it, or the fd stays readable. */
        free(body);
        log_debug("late agent reply dropped host=%s", c->host_id);
        return;
    }
    struct sched_agent_request *req = TAKE_PTR(c->inflight);
    if (r < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "The reply of the agent of host '%s' was refused: %s.",
                 c->name, yun_strerror(r));
        request_complete(s, req, r, msg, NULL);
    } else {
        ProtobufCMessage *reply = NULL;
        _cleanup_free_ char *errmsg = NULL;
        r = yun_rpc_unpack_reply(body, size, req->reply_desc, &reply, &errmsg);
        free(body);
        request_complete(s, req, r, errmsg, reply);
        if (reply)
            protobuf_c_message_free_unpacked(reply, NULL);
    }
    conn_pump(c);
    /* Its socket is idle now: another agent may have it. */
    if (!c->inflight)
        conn_wake_waiter(c->agents);
}

/* --- the API -------------------------------------------------------------------- */

int
sched_agent_send(struct sched *s, const char *host_id, Yun__Op op,
                 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *reply_desc,
                 const char *request_id, const char *tag, sched_agent_done_fn done, void *data,
                 void (*free_data)(void *))
{
    struct sched_agents *a = s->compute ? s->compute->agents : NULL;
    int r = 0;
    if (!a || (!a->hook && !s->loop))
        r = -ENOTCONN;
    else if (!host_id || !*host_id || strlen(host_id) > HOST_ID_MAX ||
             (request_id && strlen(request_id) > YUN_REQUEST_ID_MAX))
        r = -EINVAL;
    struct sched_agent_request *q = r < 0 ? NULL : calloc(1, sizeof *q);
    if (r >= 0 && !q)
        r = -ENOMEM;
    if (r >= 0) {
        snprintf(q->host_id, sizeof q->host_id, "%s", host_id);
        q->op = op;
        q->reply_desc = reply_desc;
        q->done = done;
        q->data = data;
        q->free_data = free_data;
        if (request_id)
            snprintf(q->request_id, sizeof q->request_id, "%s", request_id);
        else
            yun_request_id_new(q->request_id);
        if (tag && !(q->tag = strdup(tag)))
            r = -ENOMEM;
    }
    if (r >= 0) {
        q->payload_size = protobuf_c_message_get_packed_size(req);
        q->payload = malloc(q->payload_size + 1);
        if (!q->payload)
            r = -ENOMEM;
        else
            protobuf_c_message_pack(req, q->payload);
    }
    if (r >= 0)
        r = yun_rpc_pack_request(op, req, s->cfg.compute_agent_timeout_ms, &q->body, &q->size);
    if (r >= 0 && a->hook) {
        r = a->hook(s, q, q->host_id, op, q->payload, q->payload_size, a->hook_data);
        if (r >= 0) {
            q->next = a->held;
            a->held = q;
            return 0;
        }
    } else if (r >= 0) {
        struct agent_conn *c = conn_get(a, host_id);
        if (!c)
            r = -ENOMEM;
        else if (c->queued >= s->cfg.compute_agent_queue_max)
            r = -EBUSY;
        if (r >= 0) {
            if (c->tail)
                c->tail->next = q;
            else
                c->head = q;
            c->tail = q;
            c->queued++;
            /* Sent from the timer: the callback never runs inside this call. */
            if (!c->inflight)
                conn_kick(c, 0);
            return 0;
        }
    }
    if (q) {
        q->free_data = NULL;
        request_free(q, false);
    }
    if (free_data)
        free_data(data);
    return r;
}

bool
sched_agent_busy(struct sched *s, const char *host_id, const char *tag)
{
    struct sched_agents *a = s->compute ? s->compute->agents : NULL;
    if (!a)
        return false;
    for (struct sched_agent_request *r = a->held; r; r = r->next)
        if (r->tag && strcmp(r->tag, tag) == 0 && strcmp(r->host_id, host_id) == 0)
            return true;
    struct agent_conn *c = conn_find(a, host_id);
    if (!c)
        return false;
    if (c->inflight && c->inflight->tag && strcmp(c->inflight->tag, tag) == 0)
        return true;
    for (struct sched_agent_request *r = c->head; r; r = r->next)
        if (r->tag && strcmp(r->tag, tag) == 0)
            return true;
    return false;
}

struct sched_agents *
sched_agents_new(struct sched *s)
{
    struct sched_agents *a = calloc(1, sizeof *a);
    if (a) {
        a->s = s;
        a->timer = -1;
        a->timer_due_ms = -1;
    }
    return a;
}

struct sched_agents *
sched_agents_free(struct sched_agents *a)
{
    if (!a)
        return NULL;
    if (a->timer >= 0 && a->s->loop)
        (void)yun_loop_remove_timer(a->s->loop, a->timer);
    for (size_t b = 0; b < AGENT_BUCKETS; b++)
        while (a->buckets[b]) {
            struct agent_conn *c = a->buckets[b];
            a->buckets[b] = c->next;
            conn_free(c);
        }
    while (a->held) {
        struct sched_agent_request *r = a->held;
        a->held = r->next;
        request_free(r, true);
    }
    free(a);
    return NULL;
}

void
sched_agent_set_hook(struct sched *s, sched_agent_hook_fn hook, void *data)
{
    struct sched_agents *a = s->compute ? s->compute->agents : NULL;
    if (!a)
        return;
    a->hook = hook;
    a->hook_data = data;
}

void
sched_agent_request_finish(struct sched *s, struct sched_agent_request *r, int error,
                           const char *error_message, const ProtobufCMessage *reply)
{
    struct sched_agents *a = s->compute->agents;
    for (struct sched_agent_request **p = &a->held; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    r->next = NULL;
    request_complete(s, r, error, error_message, reply);
}
