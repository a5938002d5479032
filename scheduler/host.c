/* SPDX-License-Identifier: Apache-2.0
 * host.c: compute hosts as the scheduler knows them. Agents register (the
 * scheduler gives each host name a stable id, kept in "host_names") and
 * heartbeat; a host whose heartbeats stop is marked down after a number of
 * missed intervals and up again when they resume; operators list, show,
 * disable and enable hosts. Records live in the "hosts" database. Each
 * register and heartbeat also carries the base images the agent's cache
 * holds (CachedImage); they replace HostRecord.cached_images, so the
 * scheduler knows which hosts hold which image.
 *
 * Heartbeats are not all written. A heartbeat that changes nothing but
 * the time and the usage figures is kept in memory ("struct
 * sched_hosts": the latest beat and usage of each host heard since this
 * process started), and the record is written only when the host comes
 * back up, its cached images change, or the stored beat is older than
 * [hosts] heartbeat_write_interval_s: 10 000 hosts beating every 5 s
 * would otherwise cost 2 000 durable commits a second. host.list,
 * host.show and the liveness check see the newer of the record's and
 * memory's beat. After a restart, memory is empty and a stored beat may
 * be that interval old, so a host not heard since the start counts as
 * having beaten at the start: every host gets one full down-limit to
 * show up, then the usual rule applies. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "ipam.h"
#include "log.h"
#include "placement.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "host.pb-c.h"

YUN_LOG_MODULE("sched.host");

#define HOST_STATE_UP "up"
#define HOST_STATE_DOWN "down"
#define HOST_REASON_MAX 255
#define HOST_CACHED_IMAGES_MAX 4096 /* the agent's own limit is its size cap */

/* What this process heard of one host that the record may not say yet. */
struct host_beat {
    struct host_beat *next;           /* hash chain */
    char id[YUN_UUID_STR_SIZE];
    uint64_t beat_us;                 /* latest heartbeat not written; 0 = none */
    Yun__HostUsage usage;             /* its usage (scalars only) */
};

#define HOST_BEAT_BUCKETS 4096

struct sched_hosts {
    uint64_t started_us;              /* hosts not heard since count from here */
    struct host_beat *buckets[HOST_BEAT_BUCKETS];
};

/* NULL without sched_hosts_init (unit tests): every heartbeat is written. */
static struct sched_hosts *
hosts_get(struct sched *s)
{
    return s->hosts;
}

int
sched_hosts_init(struct sched *s)
{
    if (s->hosts)
        return 0;
    s->hosts = calloc(1, sizeof *s->hosts);
    if (!s->hosts)
        return -ENOMEM;
    s->hosts->started_us = yun_wall_us();
    return 0;
}

static size_t
beat_bucket(const char *id)
{
    uint32_t h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 16777619u;
    return h % HOST_BEAT_BUCKETS;
}

/* The host's entry, made when 'create'; NULL when none (or no memory). */
static struct host_beat *
beat_find(struct sched *s, const char *id, bool create)
{
    struct sched_hosts *hs = hosts_get(s);
    if (!hs)
        return NULL;
    size_t b = beat_bucket(id);
    for (struct host_beat *e = hs->buckets[b]; e; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    if (!create)
        return NULL;
    struct host_beat *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    snprintf(e->id, sizeof e->id, "%s", id);
    e->next = hs->buckets[b];
    hs->buckets[b] = e;
    return e;
}

/* The host was written with everything it said: nothing is pending, and
 * it was heard since the start. */
static void
beat_written(struct sched *s, const char *id)
{
    struct host_beat *e = beat_find(s, id, true);
    if (e)
        e->beat_us = 0;
}

/* The latest beat of 'h' this process knows of, for the liveness check. */
static uint64_t
beat_latest(struct sched *s, const Yun__HostRecord *h)
{
    struct host_beat *e = beat_find(s, h->id, false);
    uint64_t t = h->last_heartbeat_us;
    if (e)
        return e->beat_us > t ? e->beat_us : t;
    struct sched_hosts *hs = hosts_get(s);
    return hs && hs->started_us > t ? hs->started_us : t;
}

/* Shows a record with what memory holds that is newer (list, show). The
 * usage pointer then borrows the entry's; 'saved' keeps the record's. */
static void
beat_overlay(struct sched *s, Yun__HostRecord *h, Yun__HostUsage **saved)
{
    *saved = h->usage;
    struct host_beat *e = beat_find(s, h->id, false);
    if (e && e->beat_us > h->last_heartbeat_us) {
        h->last_heartbeat_us = e->beat_us;
        h->usage = &e->usage;
    }
}

struct sched_hosts *
sched_hosts_free(struct sched_hosts *hs)
{
    if (!hs)
        return NULL;
    for (size_t b = 0; b < HOST_BEAT_BUCKETS; b++)
        while (hs->buckets[b]) {
            struct host_beat *e = hs->buckets[b];
            hs->buckets[b] = e->next;
            free(e);
        }
    free(hs);
    return NULL;
}

static void
host_record_free(Yun__HostRecord *h)
{
    yun__host_record__free_unpacked(h, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__HostRecord *, host_record_free)

/* Keeps the placement index in step with a host record just committed. */
static void
feed_placement(struct sched *s, const Yun__HostRecord *h)
{
    if (!s->placement)
        return;
    int r = sched_placement_host_update(s->placement, h, NULL);
    if (r < 0)
        log_err_errno(r, "cannot update the placement index host=%s", h->id);
}

static int
load_host(struct yun_txn *txn, const char *id, Yun__HostRecord **ret)
{
    ProtobufCMessage *m = NULL;
    int r = yun_txn_get_msg(txn, "hosts", id, &yun__host_record__descriptor, &m);
    if (r < 0)
        return r;
    *ret = (Yun__HostRecord *)m;
    return 0;
}

int
sched_host_find(struct yun_txn *txn, const char *ref, Yun__HostRecord **ret)
{
    if (!*ref || strlen(ref) > 255)
        return YUN_E_NOHOST;
    int r = load_host(txn, ref, ret);
    if (r != -ENOENT)
        return r;
    const void *id;
    size_t id_size;
    r = yun_txn_get(txn, "host_names", ref, strlen(ref), &id, &id_size);
    if (r == -ENOENT)
        return YUN_E_NOHOST;
    if (r < 0)
        return r;
    char key[YUN_UUID_STR_SIZE];
    if (id_size != YUN_UUID_STR_SIZE - 1)
        return -EBADMSG;
    memcpy(key, id, id_size);
    key[id_size] = 0;
    r = load_host(txn, key, ret);
    return r == -ENOENT ? YUN_E_NOHOST : r;
}

static bool
inventory_is_valid(const Yun__HostInventory *inv)
{
    return inv && inv->cpus > 0 && inv->cpus < 65536 && inv->memory_mb > 0 &&
           strlen(inv->arch) < 32 && strlen(inv->hypervisor_type) < 64 &&
           strlen(inv->hypervisor_version) < 64 && strlen(inv->libvirt_uri) < 256 &&
           strlen(inv->virt_type) < 16 && strlen(inv->agent_version) < 64 &&
           strlen(inv->cpu_model) < 128;
}

static bool
sha512_hex_is_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 128;
}

/* Checks an agent's list of cached images; on failure states the error of
 * 'call' and returns it. */
static int
check_cached_images(struct sched_call *call, const char *host, Yun__CachedImage *const *images,
                    size_t n)
{
    if (n > HOST_CACHED_IMAGES_MAX)
        return sched_call_error(call, YUN_E_INVALID,
                                "Host '%s' reported %zu cached images; at most %d are accepted.",
                                host, n, HOST_CACHED_IMAGES_MAX);
    for (size_t i = 0; i < n; i++)
        if (!yun_uuid_is_valid(images[i]->image_id) ||
            !sha512_hex_is_valid(images[i]->os_hash_value))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Host '%s' reported cached image '%.40s' with an invalid "
                                    "id or sha512.", host, images[i]->image_id);
    return 0;
}

int
sched_host_register(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__HostRegisterRequest *q = (const Yun__HostRegisterRequest *)req;
    if (!yun_name_is_valid(q->name, YUN_PEER_ID_MAX))
        return sched_call_error(call, YUN_E_INVALID, "Host name '%.64s' is not valid.",
                                q->name);
    /* An agent's key speaks for its own host only. */
    if (strcmp(q->name, call->peer->key_id) != 0)
        return sched_call_error(call, YUN_E_DENIED,
                                "Agent '%s' may not register host '%s'.", call->peer->key_id,
                                q->name);
    uint32_t tunnel;
    if (*q->tunnel_ip && ipam_parse_addr(q->tunnel_ip, &tunnel) < 0)
        return sched_call_error(call, YUN_E_INVALID,
                                "Host '%s' sent a tunnel address that is not IPv4.", q->name);
    if (!inventory_is_valid(q->inventory) || strlen(q->address) > 255 ||
        q->heartbeat_interval_s == 0 || q->heartbeat_interval_s > 3600)
        return sched_call_error(call, YUN_E_INVALID, "Host '%s' sent an invalid inventory.",
                                q->name);
    int r = check_cached_images(call, q->name, q->cached_images, q->n_cached_images);
    if (r < 0)
        return r;

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_(host_record_freep) Yun__HostRecord *old = NULL;
    r = sched_host_find(txn, q->name, &old);
    if (r < 0 && r != YUN_E_NOHOST)
        return r;

    char id[YUN_UUID_STR_SIZE];
    uint64_t now = yun_wall_us();
    Yun__HostRecord h = YUN__HOST_RECORD__INIT;
    if (old) {
        snprintf(id, sizeof id, "%s", old->id);
        h.enabled = old->enabled;
        h.disabled_reason = old->disabled_reason;
        h.registered_us = old->registered_us;
        h.state_changed_us =
            strcmp(old->state, HOST_STATE_UP) == 0 ? old->state_changed_us : now;
    } else {
        r = yun_uuid_new(id);
        if (r < 0)
            return r;
        h.enabled = true;
        h.disabled_reason = (char *)"";
        h.registered_us = now;
        h.state_changed_us = now;
    }
    h.id = id;
    h.name = q->name;
    h.address = q->address;
    h.inventory = q->inventory;
    h.usage = q->usage;
    h.last_heartbeat_us = now;
    h.state = (char *)HOST_STATE_UP;
    h.heartbeat_interval_s = q->heartbeat_interval_s;
    h.cached_images = q->cached_images;
    h.n_cached_images = q->n_cached_images;
    h.tunnel_ip = q->tunnel_ip;

    r = yun_txn_put_msg(txn, "hosts", id, &h.base);
    if (r >= 0 && !old)
        r = yun_txn_put(txn, "host_names", q->name, strlen(q->name), id, strlen(id));
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    beat_written(call->s, id);
    feed_placement(call->s, &h);

    log_req(YUN_LOG_NOTICE, call->req, 0, "host registered host=%s name=%s cpus=%u memory_mb=%llu %s",
            id, q->name, q->inventory->cpus, (unsigned long long)q->inventory->memory_mb,
            old ? "known=yes" : "known=no");
    /* Its network state: the agent reapplied its stored one at start,
     * and what changed while it was away comes now (a host that holds
     * none and has no port bound gets nothing). */
    if (q->network_generation || sched_network_host_bound(call->s, id))
        sched_network_push(call->s, id);
    Yun__HostRegisterReply y = YUN__HOST_REGISTER_REPLY__INIT;
    y.host_id = id;
    return sched_call_reply(call, &y.base);
}

/* Do both lists name the same images (the same ids, contents and number
 * of instances using them, in the same order, as an agent reports them)?
 * 'yun host show' lists the users: a change of them is written. */
static bool
same_images(Yun__CachedImage *const *a, size_t na, Yun__CachedImage *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i]->image_id, b[i]->image_id) != 0 ||
            strcmp(a[i]->os_hash_value, b[i]->os_hash_value) != 0 ||
            a[i]->users != b[i]->users)
            return false;
    return true;
}

/* A heartbeat that changes nothing the record must keep now: remembered
 * in memory, not written. Returns 1 when it was, 0 when it must be
 * written, or the error of 'call' (stated). */
static int
heartbeat_in_memory(struct sched_call *call, const Yun__HostHeartbeatRequest *q)
{
    struct sched *s = call->s;
    uint64_t write_us = (uint64_t)s->cfg.host_heartbeat_write_interval_s * 1000000u;
    if (!write_us || !yun_uuid_is_valid(q->host_id))
        return 0;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_(host_record_freep) Yun__HostRecord *h = NULL;
    r = load_host(txn, q->host_id, &h);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (strcmp(h->name, call->peer->key_id) != 0)
        return sched_call_error(call, YUN_E_DENIED,
                                "Agent '%s' may not heartbeat for host '%s'.",
                                call->peer->key_id, h->name);
    r = check_cached_images(call, h->name, q->cached_images, q->n_cached_images);
    if (r < 0)
        return r;
    uint64_t now = yun_wall_us();
    if (strcmp(h->state, HOST_STATE_UP) != 0 || h->last_heartbeat_us + write_us <= now ||
        !same_images(h->cached_images, h->n_cached_images, q->cached_images,
                     q->n_cached_images))
        return 0;
    struct host_beat *e = beat_find(s, h->id, true);
    if (!e)
        return 0;
    e->beat_us = now;
    Yun__HostUsage u = YUN__HOST_USAGE__INIT;
    if (q->usage) {
        u.free_memory_mb = q->usage->free_memory_mb;
        u.free_disk_gb = q->usage->free_disk_gb;
        u.load1 = q->usage->load1;
        u.load5 = q->usage->load5;
        u.load15 = q->usage->load15;
        u.running_vms = q->usage->running_vms;
    }
    e->usage = u;
    return 1;
}

int
sched_host_heartbeat(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__HostHeartbeatRequest *q = (const Yun__HostHeartbeatRequest *)req;
    Yun__HostHeartbeatReply y = YUN__HOST_HEARTBEAT_REPLY__INIT;
    int m = heartbeat_in_memory(call, q);
    if (m < 0)
        return m;
    if (m > 0)
        return sched_call_reply(call, &y.base);

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_(host_record_freep) Yun__HostRecord *h = NULL;
    r = yun_uuid_is_valid(q->host_id) ? load_host(txn, q->host_id, &h) : -ENOENT;
    if (r == -ENOENT) {
        /* The scheduler lost or never had this host: ask it to register. */
        y.reregister = true;
        return sched_call_reply(call, &y.base);
    }
    if (r < 0)
        return r;
    if (strcmp(h->name, call->peer->key_id) != 0)
        return sched_call_error(call, YUN_E_DENIED,
                                "Agent '%s' may not heartbeat for host '%s'.",
                                call->peer->key_id, h->name);
    r = check_cached_images(call, h->name, q->cached_images, q->n_cached_images);
    if (r < 0)
        return r;

    uint64_t now = yun_wall_us();
    bool was_down = strcmp(h->state, HOST_STATE_UP) != 0;
    Yun__HostUsage *old_usage = h->usage;
    char *old_state = h->state;
    Yun__CachedImage **old_images = h->cached_images;
    size_t old_n_images = h->n_cached_images;
    h->usage = q->usage;
    h->cached_images = q->cached_images;
    h->n_cached_images = q->n_cached_images;
    h->last_heartbeat_us = now;
    h->state = (char *)HOST_STATE_UP;
    if (was_down)
        h->state_changed_us = now;
    r = yun_txn_put_msg(txn, "hosts", h->id, &h->base);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r >= 0) {
        beat_written(call->s, h->id);
        feed_placement(call->s, h);
    }
    /* The record's own fields go back before it is freed. */
    h->usage = old_usage;
    h->state = old_state;
    h->cached_images = old_images;
    h->n_cached_images = old_n_images;
    if (r < 0)
        return r;
    if (was_down)
        log_req(YUN_LOG_NOTICE, call->req, 0, "host up host=%s name=%s", h->id, h->name);
    return sched_call_reply(call, &y.base);
}

struct host_list {
    Yun__HostRecord **hosts;
    size_t n, cap;
};

static int
collect_host(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct host_list *l = data;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        Yun__HostRecord **p = realloc(l->hosts, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        l->hosts = p;
        l->cap = cap;
    }
    Yun__HostRecord *h = yun__host_record__unpack(NULL, val_size, val);
    if (!h)
        return -EBADMSG;
    l->hosts[l->n++] = h;
    return 0;
}

static void
host_list_done(struct host_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        yun__host_record__free_unpacked(l->hosts[i], NULL);
    free(l->hosts);
}

int
sched_host_list(struct sched_call *call, const ProtobufCMessage *req)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_(host_list_done) struct host_list l = { 0 };
    r = yun_txn_iterate(txn, "hosts", NULL, 0, collect_host, &l);
    if (r < 0)
        return r;
    _cleanup_free_ Yun__HostUsage **saved = calloc(l.n + 1, sizeof *saved);
    if (!saved)
        return -ENOMEM;
    for (size_t i = 0; i < l.n; i++)
        beat_overlay(call->s, l.hosts[i], &saved[i]);
    Yun__HostListReply y = YUN__HOST_LIST_REPLY__INIT;
    y.hosts = l.hosts;
    y.n_hosts = l.n;
    r = sched_call_reply(call, &y.base);
    /* The records' own usage goes back before they are freed. */
    for (size_t i = 0; i < l.n; i++)
        l.hosts[i]->usage = saved[i];
    return r;
}

int
sched_host_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__HostShowRequest *q = (const Yun__HostShowRequest *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    _cleanup_(host_record_freep) Yun__HostRecord *h = NULL;
    r = sched_host_find(txn, q->host, &h);
    if (r == YUN_E_NOHOST)
        return sched_call_error(call, r, "Host '%.255s' not found.", q->host);
    if (r < 0)
        return r;
    Yun__HostUsage *saved;
    beat_overlay(call->s, h, &saved);
    Yun__HostShowReply y = YUN__HOST_SHOW_REPLY__INIT;
    y.host = h;
    r = sched_call_reply(call, &y.base);
    h->usage = saved;
    return r;
}

int
sched_host_set_enabled(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__HostSetEnabledRequest *q = (const Yun__HostSetEnabledRequest *)req;
    if (strlen(q->reason) > HOST_REASON_MAX)
        return sched_call_error(call, YUN_E_INVALID, "The reason is longer than %d bytes.",
                                HOST_REASON_MAX);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_(host_record_freep) Yun__HostRecord *h = NULL;
    r = sched_host_find(txn, q->host, &h);
    if (r == YUN_E_NOHOST)
        return sched_call_error(call, r, "Host '%.255s' not found.", q->host);
    if (r < 0)
        return r;
    char *old_reason = h->disabled_reason;
    h->enabled = q->enabled;
    h->disabled_reason = q->enabled ? (char *)"" : q->reason;
    r = yun_txn_put_msg(txn, "hosts", h->id, &h->base);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0) {
        h->disabled_reason = old_reason;
        return r;
    }
    feed_placement(call->s, h);
    log_req(YUN_LOG_NOTICE, call->req, 0, "host %s host=%s name=%s by=%s",
            q->enabled ? "enabled" : "disabled", h->id, h->name, call->peer->key_id);
    Yun__HostSetEnabledReply y = YUN__HOST_SET_ENABLED_REPLY__INIT;
    y.host = h;
    r = sched_call_reply(call, &y.base);
    h->disabled_reason = old_reason;
    return r;
}

void
sched_host_check_liveness(struct sched *s)
{
    uint64_t now = yun_wall_us();
    struct host_list l = { 0 };
    struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, false, &txn);
    if (r >= 0)
        r = yun_txn_iterate(txn, "hosts", NULL, 0, collect_host, &l);
    yun_txn_abort(txn);
    txn = NULL;
    if (r < 0) {
        log_err_errno(r, "cannot read hosts for the liveness check");
        host_list_done(&l);
        return;
    }

    /* Every host found down in one write transaction: a scheduler that
     * fell behind may find thousands at once, and a commit each would
     * stall its loop for seconds. The records are re-read inside it (a
     * heartbeat may have come between the scan and now). */
    _cleanup_free_ bool *down = calloc(l.n + 1, sizeof *down);
    _cleanup_(yun_txn_abortp) struct yun_txn *w = NULL;
    size_t n_down = 0;
    for (size_t i = 0; down && i < l.n; i++) {
        Yun__HostRecord *h = l.hosts[i];
        uint64_t interval = (uint64_t)(h->heartbeat_interval_s ? h->heartbeat_interval_s : 5);
        uint64_t limit = interval * s->cfg.host_down_after_missed * 1000000u;
        if (strcmp(h->state, HOST_STATE_UP) != 0 || beat_latest(s, h) + limit > now)
            continue;
        if (!w && (r = yun_txn_begin(s->store, true, &w)) < 0)
            break;
        Yun__HostRecord *cur = NULL;
        r = load_host(w, h->id, &cur);
        if (r < 0)
            continue;
        /* The list's copy becomes the stored one. */
        yun__host_record__free_unpacked(h, NULL);
        l.hosts[i] = h = cur;
        if (strcmp(h->state, HOST_STATE_UP) != 0 || beat_latest(s, h) + limit > now)
            continue;
        char *old_state = h->state;
        uint64_t last = beat_latest(s, h);
        h->state = (char *)HOST_STATE_DOWN;
        h->state_changed_us = now;
        /* The last beat heard, which memory may hold alone. */
        h->last_heartbeat_us = last > h->last_heartbeat_us ? last : h->last_heartbeat_us;
        r = yun_txn_put_msg(w, "hosts", h->id, &h->base);
        h->state = old_state;
        if (r < 0) {
            log_err_errno(r, "cannot mark host down host=%s", h->id);
            continue;
        }
        down[i] = true;
        n_down++;
    }
    if (n_down) {
        r = yun_txn_commit(TAKE_PTR(w));
        if (r < 0) {
            log_err_errno(r, "cannot mark %zu hosts down", n_down);
            host_list_done(&l);
            return;
        }
    }
    for (size_t i = 0; n_down && i < l.n; i++) {
        if (!down[i])
            continue;
        Yun__HostRecord *h = l.hosts[i];
        char *old_state = h->state;
        h->state = (char *)HOST_STATE_DOWN;
        beat_written(s, h->id);
        feed_placement(s, h);
        h->state = old_state;
        log_warn("host down host=%s name=%s missed_s=%llu", h->id, h->name,
                 (unsigned long long)((now - h->last_heartbeat_us) / 1000000u));
    }
    host_list_done(&l);
}
