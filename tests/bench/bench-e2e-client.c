/* SPDX-License-Identifier: Apache-2.0
 * bench-e2e-client.c: the operator's side of bench-e2e.sh. It logs in as
 * a user (the CLI's flow: OP_LOGIN with the operator's bus key, then the
 * token in every request's header) and creates servers over the real bus
 * with many requests in flight on one raw REQ socket (bench-mux.h), then
 * deletes them, and times each server from its create request to the
 * moment the scheduler accepted its host's "spawned" event (the moment it
 * became ACTIVE), as yun-host-sim records it in its --events-file; the
 * same for deletes ("deleted", the moment it became DELETED).
 *
 *   bench-e2e-client --key FILE --user U --password-file F --project P
 *       --image I --flavor F --events-file F [--count 1000]
 *       [--inflight 64] [--batch 0] [--timeout-s 120]
 *
 * --batch 0 sends --count single creates, at most --inflight at once;
 * --batch B sends creates of B servers each (min_count = max_count = B),
 * at most --inflight at once. Deletes are single, --inflight at once.
 * Prints one line per phase: count, seconds, servers/s, p50 and p99 of
 * the per-server latency, errors. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench-mux.h"
#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "keyfile.h"
#include "loop.h"
#include "rpc.h"
#include "util.h"
#include "compute.pb-c.h"
#include "identity.pb-c.h"

#define UUID_LEN 36

struct server {
    char id[UUID_LEN + 1];
    uint64_t sent_us;         /* its create (or delete) request */
    uint64_t done_us;         /* the event's acceptance; 0 = not yet */
};

/* What the events file says, by instance id (open addressing). */
struct seen {
    char id[UUID_LEN + 1];
    uint64_t spawned_us, deleted_us;
};

static struct seen *seen;
static size_t seen_cap;

static struct seen *
seen_get(const char *id)
{
    uint32_t h = 2166136261u;
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    for (size_t i = h & (seen_cap - 1);; i = (i + 1) & (seen_cap - 1)) {
        if (!seen[i].id[0]) {
            snprintf(seen[i].id, sizeof seen[i].id, "%s", id);
            return &seen[i];
        }
        if (strcmp(seen[i].id, id) == 0)
            return &seen[i];
    }
}

/* Reads what the simulator appended since the last call. */
static int events_fd = -1;
static char ev_buf[1 << 16];
static size_t ev_len;

static void
read_events(void)
{
    for (;;) {
        ssize_t n = read(events_fd, ev_buf + ev_len, sizeof ev_buf - 1 - ev_len);
        if (n <= 0)
            return;
        ev_len += (size_t)n;
        ev_buf[ev_len] = 0;
        char *line = ev_buf, *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = 0;
            uint64_t t;
            char ev[32], id[64];
            if (sscanf(line, "%" SCNu64 " %31s %63s", &t, ev, id) == 3 &&
                strlen(id) == UUID_LEN) {
                struct seen *s = seen_get(id);
                if (strcmp(ev, "spawned") == 0 && !s->spawned_us)
                    s->spawned_us = t;
                else if (strcmp(ev, "deleted") == 0)
                    s->deleted_us = t;
            }
            line = nl + 1;
        }
        ev_len = strlen(line);
        memmove(ev_buf, line, ev_len);
    }
}

struct client {
    struct bench_mux *mux;
    struct yun_peer_key key;
    char *token;
    unsigned inflight;
    uint32_t rid_seq;
    char rid_prefix[17];
    struct req {
        char rid[32];
        uint64_t sent_us;
        bool busy;
    } *reqs;
    unsigned max_inflight;
};

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void
report(const char *what, struct server *v, size_t n, unsigned errors)
{
    _cleanup_free_ uint64_t *lat = calloc(n + 1, sizeof *lat);
    uint64_t first = UINT64_MAX, last = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!v[i].done_us)
            continue;
        lat[k++] = v[i].done_us > v[i].sent_us ? v[i].done_us - v[i].sent_us : 0;
        if (v[i].sent_us < first)
            first = v[i].sent_us;
        if (v[i].done_us > last)
            last = v[i].done_us;
    }
    qsort(lat, k, sizeof *lat, cmp_u64);
    double secs = k ? (double)(last - first) / 1e6 : 0;
    printf("%-34s %5zu in %6.2f s  %7.0f /s  p50 %7.1f ms  p99 %7.1f ms  errors %u\n", what, k,
           secs, secs > 0 ? (double)k / secs : 0, k ? (double)lat[k / 2] / 1e3 : 0,
           k ? (double)lat[(k * 99) / 100 < k ? (k * 99) / 100 : k - 1] / 1e3 : 0,
           errors + (unsigned)(n - k));
    fflush(stdout);
}

/* Sends one request; returns its slot. */
static int
send_req(struct client *c, Yun__Op op, const ProtobufCMessage *m)
{
    unsigned slot = 0;
    while (c->reqs[slot].busy)
        slot++;
    _cleanup_free_ uint8_t *body = NULL;
    size_t size;
    int r = yun_rpc_pack_request(op, m, 60000, &body, &size);
    if (r < 0)
        return r;
    struct req *q = &c->reqs[slot];
    /* Unique across runs: the scheduler answers a request id it has seen
     * (for two minutes) from its reply cache. */
    snprintf(q->rid, sizeof q->rid, "%se2e%u.%u", c->rid_prefix, slot, ++c->rid_seq);
    q->sent_us = yun_wall_us();
    /* -EAGAIN until the socket has connected. */
    for (int i = 0; i < 5000; i++) {
        r = bench_mux_send(c->mux, c->key.id, c->key.epoch, &c->key.key, q->rid, c->token,
                           strlen(c->token), body, size);
        if (r != -EAGAIN)
            break;
        usleep(1000);
    }
    if (r < 0)
        return r;
    q->busy = true;
    c->inflight++;
    return (int)slot;
}

/* Waits for one reply; returns its slot and opened body. */
static int
recv_req(struct client *c, uint8_t **ret, size_t *ret_size, int *ret_error)
{
    int fd = bench_mux_fd(c->mux);
    for (;;) {
        struct bench_mux_reply rep;
        if (bench_mux_recv(c->mux, &rep) < 0) {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            if (poll(&p, 1, 30000) == 0)
                return -ETIMEDOUT;
            continue;
        }
        unsigned slot;
        const char *rid = rep.in.request_id;
        if (!rid || strncmp(rid, c->rid_prefix, 8) != 0 ||
            sscanf(rid + 8, "e2e%u.", &slot) != 1 || slot >= c->max_inflight ||
            !c->reqs[slot].busy || strcmp(c->reqs[slot].rid, rid) != 0) {
            bench_mux_reply_done(&rep);
            continue;
        }
        *ret_error = bench_mux_open(&rep, c->key.id, c->key.epoch, &c->key.key, "scheduler",
                                    rid, ret, ret_size);
        bench_mux_reply_done(&rep);
        c->reqs[slot].busy = false;
        c->inflight--;
        return (int)slot;
    }
}

/* Waits until every server in 'v' has its event ('deleted' or not). */
static void
wait_events(struct server *v, size_t n, bool deleted, int timeout_s)
{
    int64_t end = yun_now_ms() + (int64_t)timeout_s * 1000;
    for (;;) {
        read_events();
        size_t left = 0;
        for (size_t i = 0; i < n; i++) {
            struct seen *s = seen_get(v[i].id);
            uint64_t t = deleted ? s->deleted_us : s->spawned_us;
            v[i].done_us = t >= v[i].sent_us ? t : 0;
            left += !v[i].done_us;
        }
        if (!left || yun_now_ms() > end)
            return;
        usleep(2000);
    }
}

static unsigned
create_all(struct client *c, const char *image, const char *flavor, unsigned count,
           unsigned batch, struct server *v, size_t *ret_n)
{
    unsigned errors = 0, asked = 0, prefix = (unsigned)getpid();
    size_t n = 0;
    while (asked < count || c->inflight) {
        while (asked < count && c->inflight < c->max_inflight) {
            unsigned k = batch ? (count - asked < batch ? count - asked : batch) : 1;
            char name[64];
            snprintf(name, sizeof name, "e2e-%u-%u", prefix, asked);
            Yun__ServerCreateRequest q = YUN__SERVER_CREATE_REQUEST__INIT;
            q.name = name;
            q.image = (char *)image;
            q.flavor = (char *)flavor;
            q.min_count = q.max_count = k;
            int slot = send_req(c, YUN__OP__OP_SERVER_CREATE, &q.base);
            if (slot < 0) {
                fprintf(stderr, "bench-e2e-client: cannot send: %s\n", yun_strerror(slot));
                errors += k;
            }
            asked += k;
        }
        if (!c->inflight)
            break;
        _cleanup_free_ uint8_t *body = NULL;
        size_t size = 0;
        int err = 0;
        int slot = recv_req(c, &body, &size, &err);
        if (slot < 0) {
            fprintf(stderr, "bench-e2e-client: no reply in 30 s\n");
            break;
        }
        ProtobufCMessage *m = NULL;
        _cleanup_free_ char *msg = NULL;
        if (err >= 0)
            err = yun_rpc_unpack_reply(body, size, &yun__server_create_reply__descriptor, &m,
                                       &msg);
        if (err < 0) {
            if (errors < 5)
                fprintf(stderr, "bench-e2e-client: create refused: %s\n",
                        msg ? msg : yun_strerror(err));
            errors++;
            continue;
        }
        const Yun__ServerCreateReply *y = (const Yun__ServerCreateReply *)m;
        for (size_t i = 0; i < y->n_servers && n < count; i++) {
            snprintf(v[n].id, sizeof v[n].id, "%s", y->servers[i]->id);
            v[n].sent_us = c->reqs[slot].sent_us;
            v[n].done_us = 0;
            n++;
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    *ret_n = n;
    return errors;
}

static unsigned
delete_all(struct client *c, struct server *v, size_t n)
{
    unsigned errors = 0;
    size_t next = 0;
    /* Which server each slot deletes. */
    _cleanup_free_ size_t *of = calloc(c->max_inflight, sizeof *of);
    while (next < n || c->inflight) {
        while (next < n && c->inflight < c->max_inflight) {
            Yun__ServerRef q = YUN__SERVER_REF__INIT;
            q.server = v[next].id;
            int slot = send_req(c, YUN__OP__OP_SERVER_DELETE, &q.base);
            if (slot < 0) {
                errors++;
            } else {
                of[slot] = next;
                v[next].sent_us = c->reqs[slot].sent_us;
            }
            next++;
        }
        if (!c->inflight)
            break;
        _cleanup_free_ uint8_t *body = NULL;
        size_t size = 0;
        int err = 0;
        int slot = recv_req(c, &body, &size, &err);
        if (slot < 0) {
            fprintf(stderr, "bench-e2e-client: no reply in 30 s\n");
            break;
        }
        Yun__Reply *y = err >= 0 ? yun__reply__unpack(NULL, size, body) : NULL;
        if (err < 0 || !y || y->error) {
            if (errors < 5)
                fprintf(stderr, "bench-e2e-client: delete refused: %s\n",
                        y ? y->error_message : yun_strerror(err));
            errors++;
        }
        if (y)
            yun__reply__free_unpacked(y, NULL);
    }
    return errors;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "key", required_argument, NULL, 'k' },
        { "url", required_argument, NULL, 'u' },
        { "user", required_argument, NULL, 'U' },
        { "password-file", required_argument, NULL, 'P' },
        { "project", required_argument, NULL, 'p' },
        { "image", required_argument, NULL, 'i' },
        { "flavor", required_argument, NULL, 'f' },
        { "events-file", required_argument, NULL, 'E' },
        { "count", required_argument, NULL, 'n' },
        { "inflight", required_argument, NULL, 'j' },
        { "batch", required_argument, NULL, 'b' },
        { "timeout-s", required_argument, NULL, 't' },
        { "delete-inflight", required_argument, NULL, 'J' },
        {},
    };
    const char *key_file = NULL, *url = NULL, *user = "admin", *pw_file = NULL;
    const char *project = "admin", *image = NULL, *flavor = "m1.nano", *events = NULL;
    uint32_t count = 1000, inflight = 64, batch = 0, timeout_s = 120, del_inflight = 64;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
        uint32_t *u = o == 'n' ? &count : o == 'j' ? &inflight : o == 'b' ? &batch
                    : o == 't' ? &timeout_s : o == 'J' ? &del_inflight : NULL;
        if (u) {
            if (yun_safe_atou32(optarg, u) < 0)
                return 2;
            continue;
        }
        switch (o) {
        case 'k': key_file = optarg; break;
        case 'u': url = optarg; break;
        case 'U': user = optarg; break;
        case 'P': pw_file = optarg; break;
        case 'p': project = optarg; break;
        case 'i': image = optarg; break;
        case 'f': flavor = optarg; break;
        case 'E': events = optarg; break;
        default: return 2;
        }
    }
    if (!key_file || !pw_file || !image || !events || !count || !inflight || inflight > 4096 ||
        !del_inflight || del_inflight > 4096) {
        fprintf(stderr, "usage: bench-e2e-client --key F --password-file F --image I "
                        "--events-file F [--user U] [--project P] [--flavor F] [--count N] "
                        "[--inflight N] [--batch B] [--timeout-s S]\n");
        return 2;
    }

    struct client c = { 0 };
    yun_request_id_new(c.rid_prefix);
    c.rid_prefix[8] = 0;
    int r = yun_peer_key_load(key_file, &c.key);
    if (r < 0) {
        fprintf(stderr, "bench-e2e-client: cannot load '%s': %s\n", key_file, yun_strerror(r));
        return 1;
    }
    url = url ? url : c.key.scheduler;
    _cleanup_free_ char *password = NULL;
    size_t pw_size;
    r = yun_read_file(pw_file, 4096, &password, &pw_size);
    if (r < 0)
        return 1;
    password[strcspn(password, "\n")] = 0;

    /* The CLI's login (cli/auth.c): OP_LOGIN over a REQ client with our key. */
    struct yun_bus_client *bus = NULL;
    struct yun_bus_client_options bo = {
        .url = url, .self_id = c.key.id, .key_id = c.key.id, .key_epoch = c.key.epoch,
        .key = &c.key.key, .timeout_ms = 30000,
    };
    r = yun_bus_client_new(&bo, &bus);
    Yun__LoginRequest lq = YUN__LOGIN_REQUEST__INIT;
    lq.user = (char *)user;
    lq.password = password;
    lq.project = (char *)project;
    ProtobufCMessage *lm = NULL;
    _cleanup_free_ char *msg = NULL;
    if (r >= 0)
        r = yun_rpc_call(bus, YUN__OP__OP_LOGIN, &lq.base, &yun__login_reply__descriptor, &lm,
                         &msg);
    bus = yun_bus_client_free(bus);
    if (r < 0) {
        fprintf(stderr, "bench-e2e-client: login failed: %s\n", msg ? msg : yun_strerror(r));
        return 1;
    }
    c.token = strdup(((Yun__LoginReply *)lm)->token);
    protobuf_c_message_free_unpacked(lm, NULL);

    events_fd = open(events, O_RDONLY | O_CLOEXEC);
    seen_cap = 1;
    while (seen_cap < 8 * (size_t)count + 64)
        seen_cap *= 2;
    seen = calloc(seen_cap, sizeof *seen);
    _cleanup_free_ struct server *v = calloc(count, sizeof *v);
    c.max_inflight = inflight > del_inflight ? inflight : del_inflight;
    c.reqs = calloc(c.max_inflight, sizeof *c.reqs);
    if (events_fd < 0 || !seen || !v || !c.reqs || !c.token)
        return 1;
    r = bench_mux_new(url, 0, &c.mux);
    if (r < 0)
        return 1;
    /* Skip what earlier runs left in the file. */
    read_events();

    size_t n = 0;
    char what[64];
    if (batch)
        snprintf(what, sizeof what, "create, batches of %u, %u in flight", batch, inflight);
    else
        snprintf(what, sizeof what, "create, single, %u in flight", inflight);
    c.max_inflight = inflight;
    unsigned errors = create_all(&c, image, flavor, count, batch, v, &n);
    wait_events(v, n, false, (int)timeout_s);
    report(what, v, n, errors + (unsigned)(count - n));

    snprintf(what, sizeof what, "delete, single, %u in flight", del_inflight);
    c.max_inflight = del_inflight;
    errors = delete_all(&c, v, n);
    wait_events(v, n, true, (int)timeout_s);
    report(what, v, n, errors);

    bench_mux_free(c.mux);
    yun_peer_key_done(&c.key);
    free(c.token);
    free(c.reqs);
    free(seen);
    close(events_fd);
    return 0;
}
