/* SPDX-License-Identifier: Apache-2.0
 * report.c: the agent's side of host registration and heartbeats. One
 * timer ticks every heartbeat interval; each tick sends the register
 * request until the scheduler has answered it, then heartbeats. Requests go
 * out without blocking on a REQ socket whose receive fd sits on the loop;
 * one is in flight at a time and a late one is abandoned at its deadline
 * (the next send on a REQ socket cancels it). The host id the scheduler
 * gives is kept in the agent's own store, so a restarted agent is the same
 * host. Both requests carry the images the agent's cache holds, so the
 * scheduler knows which hosts have which image. The tick is also the
 * agent's cron: it runs the image cache's eviction every
 * images.gc_interval_s. */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>

#include "agent.h"
#include "bus.h"
#include "cleanup.h"
#include "err.h"
#include "host-network.h"
#include "image-cache.h"
#include "log.h"
#include "loop.h"
#include "rpc.h"
#include "store.h"
#include "util.h"

YUN_LOG_MODULE("agent.report");

static int
save_host_id(struct agent *a, const char *id)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(a->store, true, &txn);
    if (r < 0)
        return r;
    r = yun_txn_put(txn, "self", "host_id", 7, id, strlen(id));
    if (r < 0)
        return r;
    return yun_txn_commit(TAKE_PTR(txn));
}

static void
load_host_id(struct agent *a)
{
    struct yun_txn *txn = NULL;
    if (yun_txn_begin(a->store, false, &txn) < 0)
        return;
    const void *v;
    size_t size;
    if (yun_txn_get(txn, "self", "host_id", 7, &v, &size) == 0 && size < sizeof a->host_id) {
        memcpy(a->host_id, v, size);
        a->host_id[size] = '\0';
    }
    yun_txn_abort(txn);
}

static int
send_request(struct agent *a, Yun__Op op, const ProtobufCMessage *req, enum agent_pending what)
{
    _cleanup_free_ uint8_t *body = NULL;
    size_t size;
    int r = yun_rpc_pack_request(op, req, a->cfg.request_timeout_ms, &body, &size);
    if (r < 0)
        return r;
    r = yun_bus_client_send(a->bus, NULL, NULL, 0, body, size);
    if (r < 0)
        return r;
    a->pending = what;
    a->pending_deadline_ms = yun_now_ms() + a->cfg.request_timeout_ms;
    return 0;
}

const char *
agent_scheduler_url(const struct agent *a)
{
    return a->cfg.scheduler_url && *a->cfg.scheduler_url ? a->cfg.scheduler_url
                                                         : a->key.scheduler;
}

/* The cache's list, borrowed until the next call into the cache. A cache
 * that cannot list reports none rather than hold up the heartbeat. */
static void
cached_images(struct agent *a, Yun__CachedImage ***ret, size_t *ret_n)
{
    *ret = NULL;
    *ret_n = 0;
    if (!a->images)
        return;
    int r = agent_image_cache_report(a->images, ret, ret_n);
    if (r < 0) {
        log_warn_errno(r, "cannot list the cached images for the scheduler");
        *ret = NULL;
        *ret_n = 0;
    }
}

static int
send_register(struct agent *a)
{
    Yun__HostUsage usage;
    agent_usage_read(a, &usage);
    Yun__HostRegisterRequest q = YUN__HOST_REGISTER_REQUEST__INIT;
    cached_images(a, &q.cached_images, &q.n_cached_images);
    q.name = a->key.id;
    /* Where the scheduler sends commands (command.c). */
    q.address = a->cfg.listen_url ? a->cfg.listen_url : (char *)"";
    q.inventory = &a->inv.msg;
    q.usage = &usage;
    q.host_id = a->host_id;
    q.heartbeat_interval_s = a->cfg.heartbeat_interval_s;
    /* Where other hosts reach this one's VXLAN links (empty: nowhere). */
    q.tunnel_ip = a->cfg.network_tunnel_ip;
    q.network_generation = agent_network_generation(a->net);
    return send_request(a, YUN__OP__OP_HOST_REGISTER, &q.base, AGENT_PENDING_REGISTER);
}

static int
send_heartbeat(struct agent *a)
{
    Yun__HostUsage usage;
    agent_usage_read(a, &usage);
    Yun__HostHeartbeatRequest q = YUN__HOST_HEARTBEAT_REQUEST__INIT;
    q.host_id = a->host_id;
    q.usage = &usage;
    q.seq = ++a->heartbeat_seq;
    cached_images(a, &q.cached_images, &q.n_cached_images);
    return send_request(a, YUN__OP__OP_HOST_HEARTBEAT, &q.base, AGENT_PENDING_HEARTBEAT);
}

static void
scheduler_lost(struct agent *a, int r)
{
    if (!a->scheduler_unreachable)
        log_warn_errno(r, "scheduler not answering url=%s; will keep trying",
                       agent_scheduler_url(a));
    a->scheduler_unreachable = true;
}

/* Sends what is due and returns the delay until the next tick: a beat
 * normally, sooner while the scheduler is not connected yet (nanomsg
 * connects in the background, so the first sends may find no peer). */
static int64_t
tick(struct agent *a)
{
    int64_t beat = (int64_t)a->cfg.heartbeat_interval_s * 1000;
    int64_t now = yun_now_ms();
    if (a->images && now >= a->next_image_gc_ms) {
        (void)agent_image_cache_gc(a->images);
        a->next_image_gc_ms = now + (int64_t)a->cfg.image_gc_interval_s * 1000;
    }
    if (a->pending != AGENT_PENDING_NONE) {
        if (now < a->pending_deadline_ms)
            return beat;
        a->pending = AGENT_PENDING_NONE;
        scheduler_lost(a, YUN_E_UNREACHABLE);
    }
    int r = a->registered ? send_heartbeat(a) : send_register(a);
    if (r == -EAGAIN) {
        a->send_failures++;
        if (a->send_failures * 200 >= (int64_t)a->cfg.request_timeout_ms)
            scheduler_lost(a, YUN_E_UNREACHABLE);
        return a->send_failures * 200 < beat ? 200 : beat;
    }
    a->send_failures = 0;
    if (r < 0)
        log_err_errno(r, "cannot send to the scheduler");
    return beat;
}

static int64_t
on_tick(struct yun_loop *loop, int id, void *data)
{
    return tick(data);
}

static void
handle_reply(struct agent *a, enum agent_pending what, const uint8_t *body, size_t size)
{
    ProtobufCMessage *m = NULL;
    _cleanup_free_ char *msg = NULL;
    const ProtobufCMessageDescriptor *desc = what == AGENT_PENDING_REGISTER
                                                 ? &yun__host_register_reply__descriptor
                                                 : &yun__host_heartbeat_reply__descriptor;
    int r = yun_rpc_unpack_reply(body, size, desc, &m, &msg);
    if (r < 0) {
        log_err_errno(r, "scheduler refused our %s: %s",
                      what == AGENT_PENDING_REGISTER ? "registration" : "heartbeat",
                      msg ? msg : yun_strerror(r));
        /* A refused heartbeat may mean the scheduler forgot us: register. */
        a->registered = false;
        return;
    }
    if (a->scheduler_unreachable)
        log_notice("scheduler answering again");
    a->scheduler_unreachable = false;

    if (what == AGENT_PENDING_REGISTER) {
        Yun__HostRegisterReply *y = (Yun__HostRegisterReply *)m;
        if (!yun_uuid_is_valid(y->host_id)) {
            log_err("scheduler gave an invalid host id '%.40s'", y->host_id);
        } else {
            if (strcmp(a->host_id, y->host_id) != 0) {
                snprintf(a->host_id, sizeof a->host_id, "%s", y->host_id);
                r = save_host_id(a, a->host_id);
                if (r < 0)
                    log_err_errno(r, "cannot save the host id");
            }
            a->registered = true;
            log_notice("registered with the scheduler host=%s name=%s", a->host_id, a->key.id);
            agent_command_registered(a);
        }
    } else {
        Yun__HostHeartbeatReply *y = (Yun__HostHeartbeatReply *)m;
        if (y->reregister) {
            log_notice("scheduler asks us to register again host=%s", a->host_id);
            a->registered = false;
            (void)yun_loop_update_timer(a->loop, a->report_timer, 0);
        }
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

static void
on_bus_readable(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct agent *a = data;
    for (;;) {
        _cleanup_free_ uint8_t *body = NULL;
        size_t size;
        int r = yun_bus_client_recv(a->bus, &body, &size);
        if (r == -EAGAIN)
            return;
        /* A transport error leaves nothing more to drain now. */
        if (r > _YUN_E_FIRST && r < 0)
            return;
        enum agent_pending what = a->pending;
        a->pending = AGENT_PENDING_NONE;
        if (r < 0) {
            log_req(YUN_LOG_ERR, yun_bus_client_request_id(a->bus), r,
                    "reply from the scheduler not accepted: %s", yun_strerror(r));
            if (r == YUN_E_UNKNOWN_PEER || r == YUN_E_SEAL)
                a->registered = false;
            continue;
        }
        if (what != AGENT_PENDING_NONE)
            handle_reply(a, what, body, size);
    }
}

int
agent_report_start(struct agent *a)
{
    load_host_id(a);
    struct yun_bus_client_options o = {
        .url = agent_scheduler_url(a),
        .self_id = a->key.id,
        .key_id = a->key.id,
        .key_epoch = a->key.epoch,
        .key = &a->key.key,
        .max_body = a->cfg.max_message_size,
        .window_us = (uint64_t)a->cfg.message_window_s * 1000000u,
        .timeout_ms = (int)a->cfg.request_timeout_ms,
    };
    if (!o.url || !*o.url)
        return log_err_errno(-EINVAL, "no scheduler URL: set agent.scheduler_url or use a key "
                                      "file that names it");
    int r = yun_bus_client_new(&o, &a->bus);
    if (r < 0)
        return log_err_errno(r, "cannot connect to the scheduler url=%s", o.url);
    int fd = yun_bus_client_fd(a->bus);
    if (fd < 0)
        return log_err_errno(fd, "cannot watch the bus socket");
    a->bus_watch = yun_loop_add_fd(a->loop, fd, EPOLLIN, on_bus_readable, a, NULL);
    if (a->bus_watch < 0)
        return log_err_errno(a->bus_watch, "cannot watch the bus socket");
    /* First tick right away: a restarted agent is back up within a beat. */
    a->report_timer = yun_loop_add_timer(a->loop, 0, on_tick, a, NULL);
    if (a->report_timer < 0)
        return log_err_errno(a->report_timer, "cannot add the heartbeat timer");
    log_info("reporting to the scheduler url=%s name=%s host=%s", o.url, a->key.id,
             *a->host_id ? a->host_id : "-");
    return 0;
}

void
agent_report_stop(struct agent *a)
{
    if (a->report_timer >= 0)
        (void)yun_loop_remove_timer(a->loop, a->report_timer);
    if (a->bus_watch >= 0)
        (void)yun_loop_remove_fd(a->loop, a->bus_watch);
    a->report_timer = a->bus_watch = -1;
    a->bus = yun_bus_client_free(a->bus);
}
