/* SPDX-License-Identifier: Apache-2.0
 * instance.c: instances (Nova's servers), server groups, and the agents'
 * side of their lives: events and the start-up sync.
 *
 * Records: InstanceRecord in "instances" by id; live instances (not
 * DELETED) are indexed by "project NUL name NUL id" in "instance_names"
 * and, once placed, by "host id NUL instance id" in "instance_hosts".
 * A DELETED instance stays as a tombstone for [compute]
 * deleted_retention_s. ServerGroupRecord lives in "server_groups".
 *
 * Invariant: an instance holds a placement claim exactly when it has a
 * host and is not DELETED. Placement (placement.h) writes the claim in
 * the same write transaction as the instance record, so no crash can
 * leave one without the other; sched_compute_init repairs them anyway.
 *
 * States (status / task_state), as Nova's:
 *   create        -> BUILD/scheduling (placed, spawn sent)
 *   agent accepts -> BUILD/spawning;   event spawned -> ACTIVE
 *   spawn fails (the agent refuses, reports spawn_failed, does not answer,
 *   or spawn_timeout_s passes) -> the claim goes, the host joins
 *   tried_hosts, and placement picks another host (BUILD/scheduling
 *   again) until max_attempts: then ERROR with the fault.
 *   start SHUTOFF -> powering-on -> ACTIVE; stop ACTIVE|PAUSED|SUSPENDED|
 *   ERROR -> powering-off -> SHUTOFF; reboot (soft: ACTIVE; hard: also
 *   SHUTOFF, PAUSED, SUSPENDED, ERROR) -> rebooting[_hard] -> ACTIVE;
 *   pause/unpause ACTIVE <-> PAUSED; suspend/resume ACTIVE <-> SUSPENDED;
 *   rebuild ACTIVE|SHUTOFF|ERROR -> REBUILD/rebuilding -> (accepted)
 *   rebuild_spawning -> ACTIVE (or ERROR); delete -> deleting -> DELETED.
 *   snapshot ACTIVE|SHUTOFF -> image_snapshot (the image made queued in
 *   the same transaction) -> the same status on snapshot_done; anything
 *   else that ends the task kills the image (see "snapshots" below).
 *   Events the guest causes move states without a task: a guest that
 *   powers itself off becomes SHUTOFF; one that crashes SHUTOFF with a
 *   fault; one whose domain disappears ERROR ("vanished").
 * A task in progress refuses other actions (YUN_E_CONFLICT); delete is
 * always accepted. Every request leaves an InstanceAction (the last
 * ACTIONS_MAX are kept) ended by the event, error or timeout that ends
 * its task.
 *
 * Agents: requests go through agent-client.c (asynchronous, deadline per
 * request); events come as OP_INSTANCE_EVENT, only from the agent of the
 * instance's host. docs/compute.md has the protocol and the recovery
 * rules.
 *
 * Neighbours: flavor.c, image.c (what instances boot), placement.h
 * (hosts and claims), agent-client.c, dispatch.c, audit.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bus.h"
#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "placement.h"
#include "rpc.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "compute.pb-c.h"
#include "host.pb-c.h"
#include "image.pb-c.h"

YUN_LOG_MODULE("sched.instance");

#define NAME_MAX_LEN 255
#define REF_MAX 255
#define PROJECT_MAX 64
#define KEY_NAME_MAX 255
#define AZ_MAX 255
#define USER_DATA_MAX 65536
#define MAX_NETWORKS 16
#define META_MAX 128
#define META_KEY_MAX 255
#define META_VALUE_MAX 255
#define ACTIONS_MAX 50
#define LIST_DEFAULT 1000
#define LIST_MAX 1000
#define SYNC_MAX 100000
#define GROUPS_PER_PROJECT_MAX 1000
#define GROUP_MEMBERS_MAX 1000
#define CONSOLE_LINES_DEFAULT 100
#define CONSOLE_LINES_MAX 10000
#define HOST_ID_MAX 63
#define UUID_LEN (YUN_UUID_STR_SIZE - 1)

#define ST_BUILD "BUILD"
#define ST_ACTIVE "ACTIVE"
#define ST_SHUTOFF "SHUTOFF"
#define ST_PAUSED "PAUSED"
#define ST_SUSPENDED "SUSPENDED"
#define ST_ERROR "ERROR"
#define ST_DELETED "DELETED"
#define ST_REBUILD "REBUILD"

#define T_NONE ""
#define T_SCHEDULING "scheduling"
#define T_SPAWNING "spawning"
#define T_REBUILDING "rebuilding"
#define T_REBUILD_SPAWNING "rebuild_spawning"
#define T_DELETING "deleting"
#define T_IMAGE_SNAPSHOT "image_snapshot"

/* A snapshot copies and uploads a whole disk: its task may run longer
 * than an action's; an upload that stalls is reaped sooner by the image
 * registry ([images] upload_idle_timeout_s), which ends the task too. */
#define SNAPSHOT_TIMEOUT_S 3600

#define PW_NOSTATE "nostate"
#define PW_RUNNING "running"
#define PW_SHUTOFF "shutoff"
#define PW_PAUSED "paused"
#define PW_SUSPENDED "suspended"
#define PW_CRASHED "crashed"

static const char *const statuses[] = {
    ST_BUILD, ST_ACTIVE, ST_SHUTOFF, ST_PAUSED, ST_SUSPENDED, ST_ERROR, ST_DELETED, ST_REBUILD,
    NULL,
};
static const char *const power_states[] = {
    PW_NOSTATE, PW_RUNNING, PW_SHUTOFF, PW_PAUSED, PW_SUSPENDED, PW_CRASHED, NULL,
};
static const char *const events[] = {
    "spawned", "spawn_failed", "started", "stopped", "paused", "resumed", "suspended",
    "rebooted", "deleted", "delete_failed", "crashed", "vanished", "snapshot_done",
    "snapshot_failed", NULL,
};

/* The actions of OP_SERVER_ACTION that go to the agent. */
struct action_def {
    const char *name;
    const char *task;              /* while it runs */
    const char *from[6];           /* statuses it starts from */
    const char *target_power;      /* the power state that means done, or NULL */
};

static const struct action_def action_defs[] = {
    { "start", "powering-on", { ST_SHUTOFF }, PW_RUNNING },
    { "stop", "powering-off", { ST_ACTIVE, ST_PAUSED, ST_SUSPENDED, ST_ERROR }, PW_SHUTOFF },
    { "reboot", "rebooting", { ST_ACTIVE }, NULL },
    { "reboot_hard", "rebooting_hard",
      { ST_ACTIVE, ST_SHUTOFF, ST_PAUSED, ST_SUSPENDED, ST_ERROR }, NULL },
    { "pause", "pausing", { ST_ACTIVE }, PW_PAUSED },
    { "unpause", "unpausing", { ST_PAUSED }, PW_RUNNING },
    { "suspend", "suspending", { ST_ACTIVE }, PW_SUSPENDED },
    { "resume", "resuming", { ST_SUSPENDED }, PW_RUNNING },
    { "rebuild", T_REBUILDING, { ST_ACTIVE, ST_SHUTOFF, ST_ERROR }, NULL },
};

/* Who asks: a caller, or the scheduler itself (retries, timeouts). */
struct actor {
    struct sched_call *call;       /* NULL for the scheduler */
    const char *user;
    const char *project;
    const char *req;
};

static struct actor
actor_of(struct sched_call *call)
{
    return (struct actor){
        .call = call,
        .user = call->user ? call->user : "",
        .project = call->project ? call->project : "",
        .req = call->req ? call->req : "",
    };
}

static const struct actor system_actor = { NULL, "scheduler", "", "" };

static void snapshot_abandon(struct sched *s, const char *image_id, int code, const char *why);

/* --- small helpers ------------------------------------------------------------------- */

static bool
in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

static void
inst_free(Yun__InstanceRecord *i)
{
    if (i)
        yun__instance_record__free_unpacked(i, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__InstanceRecord *, inst_free)

static void
image_free(Yun__ImageRecord *i)
{
    if (i)
        yun__image_record__free_unpacked(i, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__ImageRecord *, image_free)

static void
flavor_free(Yun__FlavorRecord *f)
{
    if (f)
        yun__flavor_record__free_unpacked(f, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__FlavorRecord *, flavor_free)

static void
group_free(Yun__ServerGroupRecord *g)
{
    if (g)
        yun__server_group_record__free_unpacked(g, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__ServerGroupRecord *, group_free)

static void
instance_image_free(Yun__InstanceImage *b)
{
    if (b)
        yun__instance_image__free_unpacked(b, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__InstanceImage *, instance_image_free)

static void
host_free(Yun__HostRecord *h)
{
    if (h)
        yun__host_record__free_unpacked(h, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__HostRecord *, host_free)

static void
claim_free(Yun__Claim *c)
{
    if (c)
        yun__claim__free_unpacked(c, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__Claim *, claim_free)

/* Fields of unpacked records are mutated in place: every string, bytes
 * and sub-message is its own malloc'ed block (protobuf-c's default
 * allocator) except the shared empty string, which free_unpacked skips. */
static int
str_set(char **field, const char *value)
{
    char *c;
    if (!value || !*value)
        c = (char *)protobuf_c_empty_string;
    else if (!(c = strdup(value)))
        return -ENOMEM;
    if (*field && *field != protobuf_c_empty_string)
        free(*field);
    *field = c;
    return 0;
}

static int
strv_push(char ***v, size_t *n, const char *s)
{
    char **p = realloc(*v, (*n + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    *v = p;
    if (!(p[*n] = strdup(s)))
        return -ENOMEM;
    (*n)++;
    return 0;
}

/* A deep copy of 'm' owned by the caller (free_unpacked), or NULL. */
static ProtobufCMessage *
msg_dup(const ProtobufCMessage *m)
{
    size_t size = protobuf_c_message_get_packed_size(m);
    _cleanup_free_ uint8_t *buf = malloc(size + 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    return protobuf_c_message_unpack(m->descriptor, NULL, size, buf);
}

static bool
is_live(const Yun__InstanceRecord *i)
{
    return strcmp(i->status, ST_DELETED) != 0;
}

static const char *
caller_project(const struct sched_call *call)
{
    return call->project ? call->project : "";
}

/* --- records and indexes ------------------------------------------------------------- */

static int
load_inst(struct yun_txn *txn, const char *id, Yun__InstanceRecord **ret)
{
    ProtobufCMessage *m = NULL;
    if (!yun_uuid_is_valid(id))
        return -ENOENT;
    int r = yun_txn_get_msg(txn, SCHED_DB_INSTANCES, id, &yun__instance_record__descriptor, &m);
    if (r < 0)
        return r;
    *ret = (Yun__InstanceRecord *)m;
    return 0;
}

static size_t
name_key(const char *project, const char *name, const char *id, char *key, size_t size)
{
    int n = snprintf(key, size, "%s%c%s%c%s", project, '\0', name, '\0', id);
    return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

static size_t
host_key(const char *host_id, const char *id, char *key, size_t size)
{
    int n = snprintf(key, size, "%s%c%s", host_id, '\0', id);
    return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

#define NAME_KEY_MAX (PROJECT_MAX + NAME_MAX_LEN + YUN_UUID_STR_SIZE + 2)
#define HOST_KEY_MAX (HOST_ID_MAX + YUN_UUID_STR_SIZE + 1)

/* Brings the indexes from 'old' (NULL: a new record) to 'cur'. */
static int
index_update(struct yun_txn *txn, const Yun__InstanceRecord *old, const Yun__InstanceRecord *cur)
{
    char ok[NAME_KEY_MAX], nk[NAME_KEY_MAX];
    size_t on = 0, nn = 0;
    int r;
    if (old && is_live(old))
        on = name_key(old->project, old->name, old->id, ok, sizeof ok);
    if (is_live(cur) && !(nn = name_key(cur->project, cur->name, cur->id, nk, sizeof nk)))
        return -EINVAL;
    if (on && (on != nn || memcmp(ok, nk, on) != 0)) {
        r = yun_txn_del(txn, SCHED_DB_INSTANCE_NAMES, ok, on);
        if (r < 0 && r != -ENOENT)
            return r;
    }
    if (nn && (on != nn || memcmp(ok, nk, nn) != 0)) {
        r = yun_txn_put(txn, SCHED_DB_INSTANCE_NAMES, nk, nn, NULL, 0);
        if (r < 0)
            return r;
    }

    char oh[HOST_KEY_MAX], nh[HOST_KEY_MAX];
    on = nn = 0;
    if (old && is_live(old) && *old->host_id)
        on = host_key(old->host_id, old->id, oh, sizeof oh);
    if (is_live(cur) && *cur->host_id && !(nn = host_key(cur->host_id, cur->id, nh, sizeof nh)))
        return -EINVAL;
    if (on && (on != nn || memcmp(oh, nh, on) != 0)) {
        r = yun_txn_del(txn, SCHED_DB_INSTANCE_HOSTS, oh, on);
        if (r < 0 && r != -ENOENT)
            return r;
    }
    if (nn && (on != nn || memcmp(oh, nh, nn) != 0)) {
        r = yun_txn_put(txn, SCHED_DB_INSTANCE_HOSTS, nh, nn, NULL, 0);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Writes 'cur' (stamping updated_us) and moves the indexes from what the
 * store holds now. */
static int
put_inst(struct yun_txn *txn, Yun__InstanceRecord *cur)
{
    _cleanup_(inst_freep) Yun__InstanceRecord *old = NULL;
    int r = load_inst(txn, cur->id, &old);
    if (r < 0 && r != -ENOENT)
        return r;
    cur->updated_us = yun_wall_us();
    r = yun_txn_put_msg(txn, SCHED_DB_INSTANCES, cur->id, &cur->base);
    if (r >= 0)
        r = index_update(txn, old, cur);
    return r;
}

/* Sets the state; NULL keeps a field. A task that starts stamps
 * task_started_us. */
static int
set_state(Yun__InstanceRecord *i, const char *status, const char *task, const char *power)
{
    int r = 0;
    if (status)
        r = str_set(&i->status, status);
    if (r >= 0 && task) {
        if (strcmp(task, i->task_state) != 0)
            i->task_started_us = *task ? yun_wall_us() : 0;
        r = str_set(&i->task_state, task);
    }
    if (r >= 0 && power)
        r = str_set(&i->power_state, power);
    return r;
}

static int
set_fault(Yun__InstanceRecord *i, int code, const char *message, const char *host)
{
    Yun__InstanceFault *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    yun__instance_fault__init(f);
    f->code = code;
    f->time_us = yun_wall_us();
    if (str_set(&f->message, message) < 0 || str_set(&f->host, host) < 0) {
        yun__instance_fault__free_unpacked(f, NULL);
        return -ENOMEM;
    }
    if (i->fault)
        yun__instance_fault__free_unpacked(i->fault, NULL);
    i->fault = f;
    return 0;
}

static void
clear_fault(Yun__InstanceRecord *i)
{
    if (i->fault)
        yun__instance_fault__free_unpacked(i->fault, NULL);
    i->fault = NULL;
}

/* Appends an action begun by 'who' now; the oldest go past ACTIONS_MAX. */
static int
action_start(Yun__InstanceRecord *i, const char *action, const struct actor *who)
{
    Yun__InstanceAction *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    yun__instance_action__init(a);
    a->start_us = yun_wall_us();
    if (str_set(&a->action, action) < 0 || str_set(&a->request_id, who->req) < 0 ||
        str_set(&a->user, who->user) < 0 || str_set(&a->project, who->project) < 0) {
        yun__instance_action__free_unpacked(a, NULL);
        return -ENOMEM;
    }
    if (i->n_actions >= ACTIONS_MAX) {
        size_t drop = i->n_actions - ACTIONS_MAX + 1;
        for (size_t k = 0; k < drop; k++)
            yun__instance_action__free_unpacked(i->actions[k], NULL);
        memmove(i->actions, i->actions + drop, (i->n_actions - drop) * sizeof *i->actions);
        i->n_actions -= drop;
    }
    Yun__InstanceAction **p = realloc(i->actions, (i->n_actions + 1) * sizeof *p);
    if (!p) {
        yun__instance_action__free_unpacked(a, NULL);
        return -ENOMEM;
    }
    i->actions = p;
    i->actions[i->n_actions++] = a;
    return 0;
}

/* Ends the newest unfinished action: 'code' 0 is "ok", else its name;
 * 'message' (may be NULL) says what happened. Only 'name' when not NULL. */
static int
action_finish(Yun__InstanceRecord *i, const char *name, int code, const char *message)
{
    for (size_t k = i->n_actions; k-- > 0;) {
        Yun__InstanceAction *a = i->actions[k];
        if (a->finish_us || (name && strcmp(a->action, name) != 0))
            continue;
        a->finish_us = yun_wall_us();
        int r = str_set(&a->result, code ? yun_errname(code) : "ok");
        if (r >= 0 && message)
            r = str_set(&a->message, message);
        return r;
    }
    return 0;
}

/* Notes 'message' on the newest unfinished action without ending it. */
static int
action_note(Yun__InstanceRecord *i, const char *message)
{
    for (size_t k = i->n_actions; k-- > 0;)
        if (!i->actions[k]->finish_us)
            return str_set(&i->actions[k]->message, message);
    return 0;
}

static int
audit_txn(struct sched *s, struct yun_txn *txn, const struct actor *who, const char *operation,
          const char *target, int result, const char *detail)
{
    if (who->call) {
        int r = sched_audit_txn(txn, who->call, operation, target, result, detail);
        if (r >= 0 && result == 0)
            who->call->audited = true;
        return r;
    }
    return sched_audit_system(s, txn, operation, target, result, detail);
}

/* --- server groups: records ---------------------------------------------------------- */

static int
load_group(struct yun_txn *txn, const char *id, Yun__ServerGroupRecord **ret)
{
    ProtobufCMessage *m = NULL;
    if (!yun_uuid_is_valid(id))
        return -ENOENT;
    int r = yun_txn_get_msg(txn, SCHED_DB_SERVER_GROUPS, id,
                            &yun__server_group_record__descriptor, &m);
    if (r < 0)
        return r;
    *ret = (Yun__ServerGroupRecord *)m;
    return 0;
}

/* Adds or removes 'id' among the members of group 'group_id'; a group
 * that is gone is fine. */
static int
group_membership(struct yun_txn *txn, const char *group_id, const char *id, bool add)
{
    _cleanup_(group_freep) Yun__ServerGroupRecord *g = NULL;
    int r = load_group(txn, group_id, &g);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    size_t k = 0;
    while (k < g->n_members && strcmp(g->members[k], id) != 0)
        k++;
    if (add == (k < g->n_members))
        return 0;
    if (add) {
        r = strv_push(&g->members, &g->n_members, id);
        if (r < 0)
            return r;
    } else {
        free(g->members[k]);
        memmove(g->members + k, g->members + k + 1, (g->n_members - k - 1) * sizeof *g->members);
        g->n_members--;
    }
    return yun_txn_put_msg(txn, SCHED_DB_SERVER_GROUPS, g->id, &g->base);
}

/* The hosts of the live members of 'g' other than 'except' (may be NULL):
 * an array of 'g->n_members' borrowed-from-'ret_store' strings. */
struct host_list {
    char (*ids)[HOST_ID_MAX + 1];
    const char **ptrs;
    size_t n;
};

static void
host_list_done(struct host_list *l)
{
    free(l->ids);
    free(l->ptrs);
}

static int
group_hosts(struct yun_txn *txn, const Yun__ServerGroupRecord *g, const char *except,
            struct host_list *ret)
{
    ret->ids = calloc(g->n_members + 1, sizeof *ret->ids);
    ret->ptrs = calloc(g->n_members + 1, sizeof *ret->ptrs);
    ret->n = 0;
    if (!ret->ids || !ret->ptrs)
        return -ENOMEM;
    for (size_t k = 0; k < g->n_members; k++) {
        if (except && strcmp(g->members[k], except) == 0)
            continue;
        _cleanup_(inst_freep) Yun__InstanceRecord *m = NULL;
        int r = load_inst(txn, g->members[k], &m);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            return r;
        if (!is_live(m) || !*m->host_id)
            continue;
        snprintf(ret->ids[ret->n], sizeof ret->ids[0], "%s", m->host_id);
        ret->ptrs[ret->n] = ret->ids[ret->n];
        ret->n++;
    }
    return 0;
}

/* --- placement ----------------------------------------------------------------------- */

/* The placement request of instance 'i' (strings borrowed from it and
 * from 'hosts', which the caller frees). */
static int
placement_request(struct yun_txn *txn, const Yun__InstanceRecord *i,
                  struct sched_placement_request *req, struct host_list *hosts)
{
    memset(req, 0, sizeof *req);
    sched_placement_request_set_flavor(req, i->flavor);
    req->az = i->availability_zone;
    req->image_id = i->image_id;
    if (i->image) {
        req->arch = i->image->architecture;
        req->hypervisor_type = i->image->hypervisor_type;
    }
    req->ignore_hosts = (const char *const *)i->tried_hosts;
    req->n_ignore_hosts = i->n_tried_hosts;
    memset(hosts, 0, sizeof *hosts);
    if (!*i->server_group)
        return 0;
    _cleanup_(group_freep) Yun__ServerGroupRecord *g = NULL;
    int r = load_group(txn, i->server_group, &g);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    req->group_policy = sched_group_policy_from_string(g->policy);
    if (req->group_policy < 0)
        req->group_policy = SCHED_GROUP_NONE;
    r = group_hosts(txn, g, i->id, hosts);
    if (r < 0)
        return r;
    req->group_hosts = hosts->ptrs;
    req->n_group_hosts = hosts->n;
    return 0;
}

static const char *
host_name_of(struct sched *s, const char *host_id)
{
    struct sched_placement_host_info info;
    if (s->placement && sched_placement_host_get(s->placement, host_id, &info) >= 0)
        return info.name;
    return "";
}

/* Releases the claim of 'id' in 'txn' (none is fine); '*ret_claim' gets
 * the claim for the index once 'txn' commits. */
static int
release_claim_txn(struct yun_txn *txn, const char *id, Yun__Claim **ret_claim)
{
    int r = sched_placement_release_txn(txn, id, ret_claim);
    return r == -ENOENT ? 0 : r;
}

static void
release_claim_index(struct sched *s, Yun__Claim *claim)
{
    if (claim && s->placement)
        (void)sched_placement_release_claim(s->placement, claim);
}

/* Is host 'host_id' up? (false when unknown) */
static bool
host_is_up(struct yun_txn *txn, const char *host_id, Yun__HostRecord **ret)
{
    ProtobufCMessage *m = NULL;
    if (!*host_id || yun_txn_get_msg(txn, "hosts", host_id, &yun__host_record__descriptor,
                                     &m) < 0)
        return false;
    Yun__HostRecord *h = (Yun__HostRecord *)m;
    bool up = strcmp(h->state, "up") == 0;
    if (ret)
        *ret = h;
    else
        host_free(h);
    return up;
}

/* --- look-ups and replies ------------------------------------------------------------ */

static bool
can_see(const struct sched_call *call, const Yun__InstanceRecord *i)
{
    return call->is_admin ||
           (*caller_project(call) && strcmp(i->project, caller_project(call)) == 0);
}

static int
error_not_found(struct sched_call *call, const char *ref)
{
    return sched_call_error(call, -ENOENT, "Server '%.255s' not found.", ref);
}

struct name_scan {
    const char *prefix;
    size_t prefix_size;
    char id[YUN_UUID_STR_SIZE];
    size_t matches;
};

static int
scan_name(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct name_scan *ns = data;
    if (key_size != ns->prefix_size + UUID_LEN || memcmp(key, ns->prefix, ns->prefix_size) != 0)
        return 1;
    if (++ns->matches > 1)
        return 1;
    memcpy(ns->id, (const char *)key + ns->prefix_size, UUID_LEN);
    ns->id[UUID_LEN] = '\0';
    return 0;
}

/* Finds the instance 'ref': an id the caller can see (DELETED ones too),
 * or the name of exactly one live instance of the caller's project. On
 * failure states the call's error: -ENOENT, or YUN_E_CONFLICT for an
 * ambiguous name. */
static int
inst_lookup(struct sched_call *call, struct yun_txn *txn, const char *ref,
            Yun__InstanceRecord **ret)
{
    if (!*ref || strlen(ref) > REF_MAX)
        return error_not_found(call, ref);
    if (yun_uuid_is_valid(ref)) {
        Yun__InstanceRecord *i = NULL;
        int r = load_inst(txn, ref, &i);
        if (r < 0 && r != -ENOENT)
            return r;
        if (r >= 0) {
            if (can_see(call, i)) {
                *ret = i;
                return 0;
            }
            inst_free(i);
            return error_not_found(call, ref);
        }
    }
    char prefix[NAME_KEY_MAX];
    int n = snprintf(prefix, sizeof prefix, "%s%c%s%c", caller_project(call), '\0', ref, '\0');
    if (n < 0 || (size_t)n >= sizeof prefix)
        return error_not_found(call, ref);
    struct name_scan ns = { .prefix = prefix, .prefix_size = (size_t)n };
    int r = yun_txn_iterate(txn, SCHED_DB_INSTANCE_NAMES, prefix, ns.prefix_size, scan_name, &ns);
    if (r < 0)
        return r;
    if (ns.matches == 0)
        return error_not_found(call, ref);
    if (ns.matches > 1)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "More than one server is named '%s'; give the id of the one "
                                "you mean.", ref);
    r = load_inst(txn, ns.id, ret);
    return r == -ENOENT ? error_not_found(call, ref) : r;
}

/* A record as 'call' may read it: only admins see hosts; 'full' false
 * leaves out the user data and the action log (lists, creates). 'view'
 * and 'fault' are shallow copies borrowing from 'i'. */
static void
inst_view(const struct sched_call *call, const Yun__InstanceRecord *i, bool full,
          Yun__InstanceRecord *view, Yun__InstanceFault *fault)
{
    *view = *i;
    view->key_public = (char *)"";
    if (!call->is_admin) {
        view->host_id = (char *)"";
        view->host_name = (char *)"";
        view->tried_hosts = NULL;
        view->n_tried_hosts = 0;
        if (i->fault) {
            *fault = *i->fault;
            fault->host = (char *)"";
            view->fault = fault;
        }
    }
    if (!full) {
        view->user_data.data = NULL;
        view->user_data.len = 0;
        view->actions = NULL;
        view->n_actions = 0;
    }
}

static int
reply_inst(struct sched_call *call, const Yun__InstanceRecord *i)
{
    Yun__InstanceRecord view;
    Yun__InstanceFault fault;
    inst_view(call, i, true, &view, &fault);
    /* The ports' addresses, as they are now (none once deleted). */
    Yun__InstanceAddress **addrs = NULL;
    size_t n_addrs = 0;
    if (i->n_networks) {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        int r = yun_txn_begin(call->s->store, false, &txn);
        if (r >= 0)
            r = sched_instance_addresses(call->s, txn, i->id, &addrs, &n_addrs);
        if (r < 0)
            log_warn_errno(r, "cannot read the addresses of vm=%s", i->id);
    }
    view.addresses = addrs;
    view.n_addresses = n_addrs;
    Yun__ServerReply y = YUN__SERVER_REPLY__INIT;
    y.server = &view;
    int r = sched_call_reply(call, &y.base);
    sched_instance_addresses_free(addrs, n_addrs);
    return r;
}

/* --- requests to agents -------------------------------------------------------------- */

/* What a request to an agent is about, for its callback. */
struct agent_ctx {
    char id[YUN_UUID_STR_SIZE];
    char host_id[HOST_ID_MAX + 1];
    uint32_t attempts;
    char action[32];
    char task[32];
    char user[YUN_PEER_ID_MAX + 1];
    char project[PROJECT_MAX + 1];
    char req[YUN_REQUEST_ID_MAX + 1];
};

static struct agent_ctx *
ctx_new(const Yun__InstanceRecord *i, const char *action, const struct actor *who)
{
    struct agent_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    snprintf(c->id, sizeof c->id, "%s", i->id);
    snprintf(c->host_id, sizeof c->host_id, "%s", i->host_id);
    c->attempts = i->attempts;
    snprintf(c->action, sizeof c->action, "%s", action);
    snprintf(c->task, sizeof c->task, "%s", i->task_state);
    snprintf(c->user, sizeof c->user, "%s", who->user);
    snprintf(c->project, sizeof c->project, "%s", who->project);
    snprintf(c->req, sizeof c->req, "%s", who->req);
    return c;
}

static struct actor
ctx_actor(const struct agent_ctx *c)
{
    return (struct actor){ NULL, c->user, c->project, c->req };
}

/* Sends, or on an immediate failure calls 'done' with the error itself,
 * so that every request ends through 'done'. Takes 'ctx'. Call with no
 * transaction open. */
static void
agent_send(struct sched *s, Yun__Op op, const ProtobufCMessage *req,
           const ProtobufCMessageDescriptor *reply_desc, sched_agent_done_fn done,
           struct agent_ctx *ctx)
{
    if (!ctx) {
        log_err_errno(-ENOMEM, "cannot send to an agent: out of memory");
        return;
    }
    struct agent_ctx copy = *ctx;
    int r = sched_agent_send(s, ctx->host_id, op, req, reply_desc, NULL, ctx->id, done, ctx, free);
    if (r < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "Cannot send to the agent of host '%s': %s.", copy.host_id,
                 yun_strerror(r));
        struct sched_agent_result res = {
            .host_id = copy.host_id, .op = op, .request_id = "", .error = r,
            .error_message = msg,
        };
        done(s, &res, &copy);
    }
}

static void
destroy_logged(struct sched *s, const struct sched_agent_result *res, void *data)
{
    const struct agent_ctx *c = data;
    if (res->error)
        log_info("clean-up destroy not done vm=%s host=%s: %s", c->id, c->host_id,
                 *res->error_message ? res->error_message : yun_strerror(res->error));
}

/* Asks the agent of 'host_id' to destroy 'id', which the scheduler no
 * longer places there; nothing changes if it cannot. */
static void
destroy_elsewhere(struct sched *s, const char *host_id, const char *id)
{
    if (!*host_id)
        return;
    struct agent_ctx *c = calloc(1, sizeof *c);
    if (c) {
        snprintf(c->id, sizeof c->id, "%s", id);
        snprintf(c->host_id, sizeof c->host_id, "%s", host_id);
        snprintf(c->action, sizeof c->action, "destroy");
        snprintf(c->user, sizeof c->user, "scheduler");
    }
    Yun__AgentInstanceRef q = YUN__AGENT_INSTANCE_REF__INIT;
    q.instance_id = (char *)id;
    log_info("asking for a clean-up vm=%s host=%s", id, host_id);
    agent_send(s, YUN__OP__OP_AGENT_DESTROY, &q.base, &yun__agent_ack__descriptor,
               destroy_logged, c);
}

static void spawn_send(struct sched *s, const Yun__InstanceRecord *i, const struct actor *who);

/* The spawn of 'id' on 'host_id' failed (the agent refused it or did not
 * answer, reported spawn_failed, or the spawn timed out): in one write
 * transaction the claim goes, the host joins tried_hosts and placement
 * picks another host, until [compute] max_attempts; then, or when no host
 * is left, ERROR with the fault. A rebuild fails to ERROR on its host.
 * 'attempts' 0 matches any attempt; a record that moved on (another
 * host, another attempt, deleted) is left alone. 'agent_may_hold': the
 * agent may have the instance after all (it did not answer): it is asked
 * to destroy it. */
static void
spawn_failed(struct sched *s, const char *id, const char *host_id, uint32_t attempts, int code,
             const char *message, const struct actor *who, bool agent_may_hold)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    _cleanup_(claim_freep) Yun__Claim *claim = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_inst(txn, id, &i);
    if (r < 0) {
        if (r != -ENOENT)
            log_err_errno(r, "cannot handle a failed spawn vm=%s", id);
        return;
    }
    bool rebuild = strcmp(i->status, ST_REBUILD) == 0;
    if ((strcmp(i->status, ST_BUILD) != 0 && !rebuild) || strcmp(i->host_id, host_id) != 0 ||
        (attempts && i->attempts != attempts)) {
        log_debug("stale spawn failure ignored vm=%s host=%s status=%s", id, host_id, i->status);
        return;
    }
    char host_name[YUN_PEER_ID_MAX + 1];
    snprintf(host_name, sizeof host_name, "%s", *i->host_name ? i->host_name : host_id);
    _cleanup_free_ char *what = NULL;
    const char *why = message && *message ? message : yun_strerror(code);
    size_t why_len = strlen(why);
    bool stop = why_len && (why[why_len - 1] == '.' || why[why_len - 1] == '!');
    if (asprintf(&what, "%s on host '%s' failed: %s%s", rebuild ? "Rebuilding" : "Spawning",
                 host_name, why, stop ? "" : ".") < 0)
        what = NULL;
    if (!what)
        return;

    struct sched_placement_alloc alloc;
    size_t placed = 0;
    _cleanup_free_ char *fault = NULL;
    if (rebuild) {
        if (asprintf(&fault, "%s", what) < 0)
            fault = NULL;
    } else {
        r = release_claim_txn(txn, id, &claim);
        if (r >= 0)
            r = strv_push(&i->tried_hosts, &i->n_tried_hosts, host_id);
        if (r < 0)
            return (void)log_err_errno(r, "cannot release the claim of a failed spawn vm=%s", id);
        if (i->attempts >= s->cfg.compute_max_attempts) {
            if (asprintf(&fault, "%s No attempts left (%u of %u).", what, i->attempts,
                         s->cfg.compute_max_attempts) < 0)
                fault = NULL;
        } else if (!s->placement) {
            if (asprintf(&fault, "%s No placement to try another host.", what) < 0)
                fault = NULL;
        } else {
            struct sched_placement_request req;
            _cleanup_(host_list_done) struct host_list hosts = { 0 };
            char reason[SCHED_PLACEMENT_REASON_SIZE] = "";
            const char *ids[] = { i->id };
            r = placement_request(txn, i, &req, &hosts);
            if (r >= 0)
                r = sched_placement_place(s->placement, txn, &req, ids, 1, 1, &alloc, &placed,
                                          reason, sizeof reason);
            if (r == YUN_E_NOVALIDHOST) {
                placed = 0;
                if (asprintf(&fault, "%s No other host can take it: %s", what, reason) < 0)
                    fault = NULL;
            } else if (r < 0) {
                /* The sweep tries again at the spawn timeout. */
                return (void)log_err_errno(r, "cannot place a failed spawn again vm=%s", id);
            }
        }
        if (!placed && !fault)
            return (void)log_err_errno(-ENOMEM, "cannot record a failed spawn vm=%s", id);
    }

    if (placed) {
        r = str_set(&i->host_id, alloc.host_id);
        if (r >= 0)
            r = str_set(&i->host_name, host_name_of(s, alloc.host_id));
        if (r >= 0)
            r = sched_instance_ports_rebind(s, txn, i);
        i->attempts++;
        if (r >= 0)
            r = set_state(i, NULL, T_SCHEDULING, PW_NOSTATE);
        i->task_started_us = yun_wall_us();
        if (r >= 0)
            r = action_note(i, what);
    } else if (rebuild) {
        r = set_state(i, ST_ERROR, T_NONE, NULL);
        if (r >= 0)
            r = set_fault(i, code, fault, host_name);
        if (r >= 0)
            r = action_finish(i, NULL, code, fault);
    } else {
        r = str_set(&i->host_id, "");
        if (r >= 0)
            r = str_set(&i->host_name, "");
        if (r >= 0)
            r = set_state(i, ST_ERROR, T_NONE, PW_NOSTATE);
        if (r >= 0)
            r = set_fault(i, code, fault, host_name);
        if (r >= 0)
            r = action_finish(i, NULL, code, fault);
    }
    if (r >= 0)
        r = put_inst(txn, i);
    if (r >= 0)
        r = audit_txn(s, txn, who, rebuild ? "server.rebuild" : "server.spawn", id,
                      placed ? 0 : code, placed ? what : fault);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0) {
        if (placed)
            sched_placement_undo(s->placement, &alloc, 1);
        log_err_errno(r, "cannot record a failed spawn vm=%s", id);
        return;
    }
    release_claim_index(s, claim);
    if (i->n_networks)
        sched_network_push(s, host_id); /* the failed host's taps go */
    if (placed) {
        log_req(YUN_LOG_NOTICE, who->req, code, "spawn failed, trying another host vm=%s "
                "failed_host=%s host=%s attempt=%u", id, host_id, alloc.host_id, i->attempts);
        spawn_send(s, i, who);
    } else {
        log_req(YUN_LOG_WARN, who->req, code, "instance in error vm=%s host=%s reason=\"%s\"",
                id, host_id, fault);
    }
    if (agent_may_hold && !rebuild)
        destroy_elsewhere(s, host_id, id);
}

static void
spawn_done(struct sched *s, const struct sched_agent_result *res, void *data)
{
    const struct agent_ctx *c = data;
    struct actor who = ctx_actor(c);
    if (res->error) {
        bool may_hold = res->error == YUN_E_UNREACHABLE;
        spawn_failed(s, c->id, c->host_id, c->attempts, res->error, res->error_message, &who,
                     may_hold);
        return;
    }
    /* Accepted: the agent reports the outcome with an event. */
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_inst(txn, c->id, &i);
    if (r < 0 || strcmp(i->host_id, c->host_id) != 0 || i->attempts != c->attempts)
        return;
    const char *next = NULL;
    if (strcmp(i->status, ST_BUILD) == 0 && strcmp(i->task_state, T_SCHEDULING) == 0)
        next = T_SPAWNING;
    else if (strcmp(i->status, ST_REBUILD) == 0 && strcmp(i->task_state, T_REBUILDING) == 0)
        next = T_REBUILD_SPAWNING;
    if (!next)
        return;
    r = set_state(i, NULL, next, NULL);
    if (r >= 0)
        r = put_inst(txn, i);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        log_err_errno(r, "cannot record an accepted spawn vm=%s", c->id);
    else
        log_req(YUN_LOG_DEBUG, c->req, 0, "spawn accepted vm=%s host=%s", c->id, c->host_id);
    /* The agent wired its ports before it accepted. */
    if (r >= 0 && i->n_networks)
        sched_network_ports_wired(s, c->host_id, c->id);
}

/* Sends the spawn (or rebuild) of 'i' to its host's agent. */
static void
spawn_send(struct sched *s, const Yun__InstanceRecord *i, const struct actor *who)
{
    Yun__InstanceRecord view = *i;
    view.actions = NULL;
    view.n_actions = 0;
    view.fault = NULL;
    Yun__AgentSpawnRequest q = YUN__AGENT_SPAWN_REQUEST__INIT;
    q.instance = &view;
    q.image_id = i->image_id;
    q.rebuild = strcmp(i->status, ST_REBUILD) == 0;
    if (i->image) {
        q.image_disk_format = i->image->disk_format;
        q.image_sha512 = i->image->sha512;
        q.image_virtual_size = i->image->virtual_size;
        q.kernel_id = i->image->kernel_id;
        q.kernel_disk_format = i->image->kernel_disk_format;
        q.kernel_sha512 = i->image->kernel_sha512;
        q.ramdisk_id = i->image->ramdisk_id;
        q.ramdisk_disk_format = i->image->ramdisk_disk_format;
        q.ramdisk_sha512 = i->image->ramdisk_sha512;
        q.kernel_cmdline = i->image->kernel_cmdline;
    }
    /* The host's network state rides along: the taps exist before the
     * domain. Without it the spawn fails on the agent, and is retried. */
    Yun__HostNetworkState *net = NULL;
    Yun__PortRecord **ports = NULL;
    size_t n_ports = 0;
    int r = sched_instance_spawn_network(s, i, &net, &ports, &n_ports);
    if (r < 0)
        log_warn_errno(r, "cannot read the network state of a spawn vm=%s", i->id);
    view.key_public = (char *)"";  /* the agent has no use for it */
    q.network = net;
    q.ports = ports;
    q.n_ports = n_ports;
    log_req(YUN_LOG_INFO, who->req, 0, "%s sent vm=%s host=%s attempt=%u ports=%zu",
            q.rebuild ? "rebuild" : "spawn", i->id, i->host_id, i->attempts, n_ports);
    agent_send(s, YUN__OP__OP_AGENT_SPAWN, &q.base, &yun__agent_ack__descriptor, spawn_done,
               ctx_new(i, q.rebuild ? "rebuild" : "spawn", who));
    if (net)
        yun__host_network_state__free_unpacked(net, NULL);
    for (size_t k = 0; k < n_ports; k++)
        yun__port_record__free_unpacked(ports[k], NULL);
    free(ports);
}

/* --- create -------------------------------------------------------------------------- */

static const char *
image_prop(const Yun__ImageRecord *img, const char *key)
{
    for (size_t k = 0; k < img->n_properties; k++)
        if (strcmp(img->properties[k]->key, key) == 0)
            return img->properties[k]->value;
    return "";
}

/* The kernel or ramdisk image 'id' that image 'img' names in 'prop'. */
static int
boot_part(struct sched_call *call, struct yun_txn *txn, const Yun__ImageRecord *img,
          const char *prop, const char *id, Yun__ImageRecord **ret)
{
    int r = sched_image_find_bootable(call, txn, id, ret);
    if (r == YUN_E_NOIMAGE)
        return sched_call_error(call, YUN_E_NOIMAGE,
                                "Image '%s' names %s '%s', which does not exist or is not "
                                "visible.", img->id, prop, id);
    if (r < 0)
        return r;
    if (strcmp((*ret)->status, "active") != 0)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "The %s '%s' of image '%s' is %s; only an active image can "
                                "boot.", prop, (*ret)->id, img->id, (*ret)->status);
    return 0;
}

/* What an instance boots from 'img', as recorded in the instance. */
static int
boot_image(struct sched_call *call, struct yun_txn *txn, const Yun__ImageRecord *img,
           Yun__InstanceImage **ret)
{
    if (strcmp(img->status, "active") != 0)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Image '%s' is %s; only an active image can boot a server.",
                                img->id, img->status);
    if (strcmp(img->disk_format, "aki") == 0 || strcmp(img->disk_format, "ari") == 0)
        return sched_call_error(call, YUN_E_INVALID,
                                "Image '%s' is a kernel or ramdisk (%s); boot the disk image "
                                "that names it in kernel_id or ramdisk_id.", img->id,
                                img->disk_format);
    _cleanup_(image_freep) Yun__ImageRecord *kernel = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *ramdisk = NULL;
    const char *kernel_id = image_prop(img, "kernel_id");
    const char *ramdisk_id = image_prop(img, "ramdisk_id");
    int r = 0;
    if (*kernel_id && (r = boot_part(call, txn, img, "kernel", kernel_id, &kernel)) < 0)
        return r;
    if (*ramdisk_id && (r = boot_part(call, txn, img, "ramdisk", ramdisk_id, &ramdisk)) < 0)
        return r;
    const char *cmdline = image_prop(img, "os_command_line");

    Yun__InstanceImage *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    yun__instance_image__init(b);
    b->size = img->size;
    b->virtual_size = img->virtual_size;
    r = str_set(&b->id, img->id);
    if (r >= 0)
        r = str_set(&b->name, img->name);
    if (r >= 0)
        r = str_set(&b->disk_format, img->disk_format);
    if (r >= 0)
        r = str_set(&b->sha512, img->os_hash_value);
    if (r >= 0 && kernel) {
        r = str_set(&b->kernel_id, kernel->id);
        if (r >= 0)
            r = str_set(&b->kernel_disk_format, kernel->disk_format);
        if (r >= 0)
            r = str_set(&b->kernel_sha512, kernel->os_hash_value);
    }
    if (r >= 0 && ramdisk) {
        r = str_set(&b->ramdisk_id, ramdisk->id);
        if (r >= 0)
            r = str_set(&b->ramdisk_disk_format, ramdisk->disk_format);
        if (r >= 0)
            r = str_set(&b->ramdisk_sha512, ramdisk->os_hash_value);
    }
    if (r >= 0)
        r = str_set(&b->kernel_cmdline, *cmdline ? cmdline : "console=ttyS0");
    if (r >= 0)
        r = str_set(&b->architecture, image_prop(img, "architecture"));
    if (r >= 0)
        r = str_set(&b->hypervisor_type, image_prop(img, "hypervisor_type"));
    if (r < 0) {
        yun__instance_image__free_unpacked(b, NULL);
        return r;
    }
    *ret = b;
    return 0;
}

/* Refuses an image that does not fit the flavor (Nova's checks); a
 * flavor with no root disk (0) takes the image's size. */
static int
check_fit(struct sched_call *call, const Yun__ImageRecord *img, const Yun__FlavorRecord *f)
{
    if (img->min_ram > f->ram_mb)
        return sched_call_error(call, YUN_E_INVALID,
                                "Image '%s' needs at least %u MiB of RAM; flavor '%s' has %u.",
                                img->id, img->min_ram, f->name, f->ram_mb);
    if (f->disk_gb == 0)
        return 0;
    if (img->min_disk > f->disk_gb)
        return sched_call_error(call, YUN_E_INVALID,
                                "Image '%s' needs a root disk of at least %u GiB; flavor '%s' "
                                "has %u GiB.", img->id, img->min_disk, f->name, f->disk_gb);
    uint64_t vsize = img->virtual_size ? img->virtual_size : img->size;
    if (vsize > (uint64_t)f->disk_gb << 30)
        return sched_call_error(call, YUN_E_INVALID,
                                "Image '%s' is %llu bytes, larger than the %u GiB root disk of "
                                "flavor '%s'.", img->id, (unsigned long long)vsize, f->disk_gb,
                                f->name);
    return 0;
}

static int
check_metadata(struct sched_call *call, Yun__FlavorSpec *const *items, size_t n)
{
    if (n > META_MAX)
        return sched_call_error(call, YUN_E_INVALID, "A server has at most %d metadata items.",
                                META_MAX);
    for (size_t k = 0; k < n; k++) {
        if (!yun_text_is_valid(items[k]->key, META_KEY_MAX))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Metadata key '%.64s' is not 1 to %d bytes of text without "
                                    "control characters.", items[k]->key, META_KEY_MAX);
        if (*items[k]->value && !yun_text_is_valid(items[k]->value, META_VALUE_MAX))
            return sched_call_error(call, YUN_E_INVALID,
                                    "The value of metadata '%s' is not at most %d bytes of text "
                                    "without control characters.", items[k]->key,
                                    META_VALUE_MAX);
    }
    return 0;
}

struct prefix_count {
    const char *prefix;
    size_t prefix_size;
    size_t n;
};

static int
count_prefix(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct prefix_count *c = data;
    if (key_size < c->prefix_size || memcmp(key, c->prefix, c->prefix_size) != 0)
        return 1;
    c->n++;
    return 0;
}

/* Live instances of 'project'. */
static int
count_project(struct yun_txn *txn, const char *project, size_t *ret)
{
    char prefix[PROJECT_MAX + 2];
    int n = snprintf(prefix, sizeof prefix, "%s%c", project, '\0');
    if (n < 0 || (size_t)n >= sizeof prefix)
        return -EINVAL;
    struct prefix_count c = { .prefix = prefix, .prefix_size = (size_t)n };
    int r = yun_txn_iterate(txn, SCHED_DB_INSTANCE_NAMES, prefix, c.prefix_size, count_prefix,
                            &c);
    if (r < 0)
        return r;
    *ret = c.n;
    return 0;
}

static int group_lookup(struct sched_call *call, struct yun_txn *txn, const char *ref,
                        Yun__ServerGroupRecord **ret);

/* A new BUILD/scheduling record. */
static int
inst_new(struct sched_call *call, const Yun__ServerCreateRequest *q, const char *id,
         const char *name, const Yun__FlavorRecord *flavor, const Yun__InstanceImage *image,
         const char *group, const char *reservation, Yun__InstanceRecord **ret)
{
    _cleanup_(inst_freep) Yun__InstanceRecord *i = calloc(1, sizeof *i);
    if (!i)
        return -ENOMEM;
    yun__instance_record__init(i);
    uint64_t now = yun_wall_us();
    i->created_us = now;
    i->updated_us = now;
    i->attempts = 1;
    int r = str_set(&i->id, id);
    if (r >= 0)
        r = str_set(&i->name, name);
    if (r >= 0)
        r = str_set(&i->project, caller_project(call));
    if (r >= 0)
        r = str_set(&i->user, call->user);
    if (r >= 0)
        r = str_set(&i->image_id, image->id);
    if (r >= 0)
        r = set_state(i, ST_BUILD, T_SCHEDULING, PW_NOSTATE);
    if (r >= 0)
        r = str_set(&i->availability_zone, q->availability_zone);
    if (r >= 0)
        r = str_set(&i->key_name, q->key_name);
    if (r >= 0)
        r = str_set(&i->server_group, group);
    if (r >= 0)
        r = str_set(&i->reservation_id, reservation);
    if (r < 0)
        return r;
    if (!(i->flavor = (Yun__FlavorRecord *)msg_dup(&flavor->base)) ||
        !(i->image = (Yun__InstanceImage *)msg_dup(&image->base)))
        return -ENOMEM;
    if (q->user_data.len) {
        i->user_data.data = malloc(q->user_data.len);
        if (!i->user_data.data)
            return -ENOMEM;
        memcpy(i->user_data.data, q->user_data.data, q->user_data.len);
        i->user_data.len = q->user_data.len;
    }
    if (q->n_metadata) {
        i->metadata = calloc(q->n_metadata, sizeof *i->metadata);
        if (!i->metadata)
            return -ENOMEM;
        for (size_t k = 0; k < q->n_metadata; k++) {
            if (!(i->metadata[k] = (Yun__FlavorSpec *)msg_dup(&q->metadata[k]->base)))
                return -ENOMEM;
            i->n_metadata++;
        }
    }
    struct actor who = actor_of(call);
    r = action_start(i, "create", &who);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(i);
    return 0;
}

struct inst_array {
    Yun__InstanceRecord **v;
    size_t n;
};

static void
inst_array_done(struct inst_array *a)
{
    for (size_t k = 0; k < a->n; k++)
        inst_free(a->v[k]);
    free(a->v);
}

static int
server_create(struct sched_call *call, const Yun__ServerCreateRequest *q)
{
    struct sched *s = call->s;
    if (!yun_text_is_valid(q->name, NAME_MAX_LEN))
        return sched_call_error(call, YUN_E_INVALID,
                                "Server name '%.64s' is not 1 to %d bytes of text without "
                                "control characters.", q->name, NAME_MAX_LEN);
    uint32_t min = q->min_count ? q->min_count : 1;
    uint32_t max = q->max_count ? q->max_count : min;
    if (max < min)
        return sched_call_error(call, YUN_E_INVALID,
                                "max_count %u is below min_count %u.", max, min);
    if (max > SCHED_PLACEMENT_MAX_COUNT)
        return sched_call_error(call, YUN_E_INVALID,
                                "One request creates at most %d servers, not %u.",
                                SCHED_PLACEMENT_MAX_COUNT, max);
    char suffixed[NAME_MAX_LEN + 16];
    if (max > 1 && (size_t)snprintf(suffixed, sizeof suffixed, "%s-%u", q->name, max) >
                       NAME_MAX_LEN)
        return sched_call_error(call, YUN_E_INVALID,
                                "Server name '%.64s...' leaves no room for the '-N' suffixes of "
                                "a multiple create within %d bytes.", q->name, NAME_MAX_LEN);
    if (q->user_data.len > USER_DATA_MAX)
        return sched_call_error(call, YUN_E_INVALID,
                                "The user data is %zu bytes; at most %d are accepted.",
                                q->user_data.len, USER_DATA_MAX);
    if (*q->key_name && !yun_text_is_valid(q->key_name, KEY_NAME_MAX))
        return sched_call_error(call, YUN_E_INVALID, "Key name '%.64s' is not valid.",
                                q->key_name);
    if (*q->availability_zone && !yun_text_is_valid(q->availability_zone, AZ_MAX))
        return sched_call_error(call, YUN_E_INVALID, "Availability zone '%.64s' is not valid.",
                                q->availability_zone);
    if (q->n_networks > MAX_NETWORKS)
        return sched_call_error(call, YUN_E_INVALID, "A server takes at most %d networks.",
                                MAX_NETWORKS);
    int r = check_metadata(call, q->metadata, q->n_metadata);
    if (r < 0)
        return r;
    if (!yun_name_is_valid(caller_project(call), PROJECT_MAX))
        return sched_call_error(call, YUN_E_DENIED, "Only a project's members create servers.");
    if (!s->placement)
        return sched_call_error(call, -ENOTSUP, "The scheduler has no placement service.");

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    _cleanup_(flavor_freep) Yun__FlavorRecord *flavor = NULL;
    _cleanup_(instance_image_freep) Yun__InstanceImage *boot = NULL;
    r = sched_image_find_bootable(call, txn, q->image, &img);
    if (r >= 0)
        r = sched_flavor_find(call, txn, q->flavor, &flavor);
    if (r >= 0)
        r = boot_image(call, txn, img, &boot);
    if (r < 0)
        return r;
    r = check_fit(call, img, flavor);
    if (r < 0)
        return r;
    size_t have;
    r = count_project(txn, caller_project(call), &have);
    if (r < 0)
        return r;
    uint32_t quota = s->cfg.compute_max_instances_per_project;
    if (have + min > quota)
        return sched_call_error(call, -EDQUOT,
                                "Project '%s' has %zu servers; %u more would pass its quota of "
                                "%u.", caller_project(call), have, min, quota);
    if (have + max > quota)
        max = (uint32_t)(quota - have);

    _cleanup_(group_freep) Yun__ServerGroupRecord *group = NULL;
    if (*q->server_group) {
        r = group_lookup(call, txn, q->server_group, &group);
        if (r < 0)
            return r;
    }
    _cleanup_(yun_strv_freep) char **network_ids = NULL;
    if (q->n_networks) {
        r = sched_instance_networks_resolve(call, txn, q->networks, q->n_networks,
                                            &network_ids);
        if (r < 0)
            return r;
    }
    _cleanup_free_ char *key_public = NULL;
    if (*q->key_name) {
        r = sched_keypair_public_key(txn, call->user ? call->user : "", q->key_name,
                                     &key_public);
        if (r == -ENOENT)
            return sched_call_error(call, -ENOENT, "Keypair '%.64s' not found.", q->key_name);
        if (r < 0)
            return r;
    }

    char reservation[YUN_UUID_STR_SIZE];
    r = yun_uuid_new(reservation);
    if (r < 0)
        return r;
    _cleanup_free_ char (*ids)[YUN_UUID_STR_SIZE] = calloc(max, sizeof *ids);
    _cleanup_free_ const char **id_ptrs = calloc(max, sizeof *id_ptrs);
    _cleanup_free_ struct sched_placement_alloc *allocs = calloc(max, sizeof *allocs);
    if (!ids || !id_ptrs || !allocs)
        return -ENOMEM;
    for (uint32_t k = 0; k < max; k++) {
        r = yun_uuid_new(ids[k]);
        if (r < 0)
            return r;
        id_ptrs[k] = ids[k];
    }

    /* The placement request, as for any of these instances. */
    struct sched_placement_request preq;
    _cleanup_(host_list_done) struct host_list ghosts = { 0 };
    memset(&preq, 0, sizeof preq);
    sched_placement_request_set_flavor(&preq, flavor);
    preq.az = q->availability_zone;
    preq.image_id = img->id;
    preq.arch = boot->architecture;
    preq.hypervisor_type = boot->hypervisor_type;
    if (group) {
        preq.group_policy = sched_group_policy_from_string(group->policy);
        if (preq.group_policy < 0)
            preq.group_policy = SCHED_GROUP_NONE;
        r = group_hosts(txn, group, NULL, &ghosts);
        if (r < 0)
            return r;
        preq.group_hosts = ghosts.ptrs;
        preq.n_group_hosts = ghosts.n;
    }
    char reason[SCHED_PLACEMENT_REASON_SIZE] = "";
    size_t placed = 0;
    r = sched_placement_place(s->placement, txn, &preq, id_ptrs, min, max, allocs, &placed,
                              reason, sizeof reason);
    if (r == YUN_E_NOVALIDHOST)
        return sched_call_error(call, r, "%s (Asked for %u server%s of flavor '%s'.)",
                                *reason ? reason : "No valid host was found.", min,
                                min > 1 ? "s" : "", flavor->name);
    if (r < 0)
        return r;

    /* From here on the index holds the claims: any failure gives them back. */
    _cleanup_(inst_array_done) struct inst_array made = { 0 };
    made.v = calloc(placed, sizeof *made.v);
    if (!made.v)
        r = -ENOMEM;
    for (size_t k = 0; r >= 0 && k < placed; k++) {
        char name[NAME_MAX_LEN + 16];
        if (max > 1)
            snprintf(name, sizeof name, "%s-%zu", q->name, k + 1);
        else
            snprintf(name, sizeof name, "%s", q->name);
        Yun__InstanceRecord *i = NULL;
        r = inst_new(call, q, ids[k], name, flavor, boot, group ? group->id : "", reservation,
                     &i);
        if (r < 0)
            break;
        made.v[made.n++] = i;
        r = str_set(&i->host_id, allocs[k].host_id);
        if (r >= 0)
            r = str_set(&i->host_name, host_name_of(s, allocs[k].host_id));
        if (r >= 0 && key_public)
            r = str_set(&i->key_public, key_public);
        for (char **n = network_ids; r >= 0 && n && *n; n++)
            r = strv_push(&i->networks, &i->n_networks, *n);
        if (r >= 0)
            r = sched_instance_ports_create(s, txn, i);
        if (r >= 0)
            r = put_inst(txn, i);
        if (r >= 0 && group)
            r = group_membership(txn, group->id, i->id, true);
    }
    if (r < 0 && !call->error && r != -ENOMEM)
        sched_call_error(call, r, "The ports of server '%.64s' cannot be made: %s.", q->name,
                         yun_strerror(r));
    char detail[128];
    snprintf(detail, sizeof detail, "%zu server%s, reservation %s.", placed,
             placed > 1 ? "s" : "", reservation);
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "server.create",
                                         placed == 1 ? ids[0] : reservation, detail);
    if (r < 0) {
        sched_placement_undo(s->placement, allocs, placed);
        return r;
    }
    for (size_t k = 0; k < made.n; k++)
        log_req(YUN_LOG_NOTICE, call->req, 0,
                "server created vm=%s name=\"%s\" project=%s flavor=%s image=%s host=%s",
                made.v[k]->id, made.v[k]->name, made.v[k]->project, flavor->id, img->id,
                made.v[k]->host_id);

    _cleanup_free_ Yun__InstanceRecord *views = calloc(made.n + 1, sizeof *views);
    _cleanup_free_ Yun__InstanceFault *faults = calloc(made.n + 1, sizeof *faults);
    _cleanup_free_ Yun__InstanceRecord **ptrs = calloc(made.n + 1, sizeof *ptrs);
    if (!views || !faults || !ptrs)
        return -ENOMEM;
    for (size_t k = 0; k < made.n; k++) {
        inst_view(call, made.v[k], false, &views[k], &faults[k]);
        ptrs[k] = &views[k];
    }
    Yun__ServerCreateReply y = YUN__SERVER_CREATE_REPLY__INIT;
    y.servers = ptrs;
    y.n_servers = made.n;
    y.reservation_id = reservation;
    r = sched_call_reply(call, &y.base);

    struct actor who = actor_of(call);
    for (size_t k = 0; k < made.n; k++)
        spawn_send(s, made.v[k], &who);
    if (network_ids)
        sched_network_push_related(s, (const Yun__InstanceRecord *const *)made.v, made.n,
                                   true);
    return r;
}

/* OP_SERVER_CREATE: validates everything, places min_count..max_count
 * instances and writes them with their claims in one transaction, then
 * sends the spawns. Replies ServerCreateReply; audited as server.create. */
int
sched_server_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ServerCreateRequest *q = (const Yun__ServerCreateRequest *)req;
    return sched_compute_audit_end(call, "server.create", q->name, server_create(call, q));
}

/* --- events: the state machine ------------------------------------------------------- */

enum event_effect {
    EFFECT_NONE,       /* ignored: nothing changes */
    EFFECT_CHANGED,    /* the record changed */
    EFFECT_DELETED,    /* it became DELETED: the claim and membership go */
};

/* Ends the task of 'i' as done ('code' 0) or failed. */
static int
task_end(Yun__InstanceRecord *i, int code, const char *message)
{
    int r = 0;
    if (*i->task_state) {
        r = set_state(i, NULL, T_NONE, NULL);
        if (r >= 0)
            r = action_finish(i, NULL, code, message);
    }
    if (r >= 0 && *i->snapshot_image_id)
        r = str_set(&i->snapshot_image_id, "");
    return r;
}

static int
mark_deleted(Yun__InstanceRecord *i, const char *message)
{
    int r = set_state(i, ST_DELETED, T_NONE, PW_NOSTATE);
    if (r >= 0)
        r = action_finish(i, NULL, 0, message);
    i->deleted_us = yun_wall_us();
    return r;
}

/* Applies the agent's event 'ev' (with 'power' when not empty and the
 * agent's 'fault', may be NULL) to 'i'. Returns an enum event_effect or a
 * negative errno. spawn_failed is not handled here (spawn_failed()). */
static int
apply_event(Yun__InstanceRecord *i, const char *ev, const char *power,
            const Yun__InstanceFault *fault)
{
    /* Copies: set_state frees the record's strings. */
    char status[32], task[32];
    snprintf(status, sizeof status, "%s", i->status);
    snprintf(task, sizeof task, "%s", i->task_state);
    bool building = strcmp(status, ST_BUILD) == 0 || strcmp(status, ST_REBUILD) == 0;
    bool deleting = strcmp(task, T_DELETING) == 0;
    const char *host = *i->host_name ? i->host_name : i->host_id;
    const char *why = fault && *fault->message ? fault->message : NULL;
    char msg[512];
    int r;

    if (strcmp(ev, "deleted") == 0) {
        r = mark_deleted(i, why ? why : "Deleted by the agent.");
        return r < 0 ? r : EFFECT_DELETED;
    }
    if (strcmp(ev, "vanished") == 0) {
        if (deleting) {
            r = mark_deleted(i, "The agent no longer has it.");
            return r < 0 ? r : EFFECT_DELETED;
        }
        snprintf(msg, sizeof msg, "The server vanished from host '%s': %s", host,
                 why ? why : "its domain is gone.");
        r = set_state(i, ST_ERROR, T_NONE, PW_NOSTATE);
        if (r >= 0)
            r = set_fault(i, fault && fault->code ? fault->code : -ENOENT, msg, host);
        if (r >= 0)
            r = action_finish(i, NULL, -ENOENT, msg);
        return r < 0 ? r : EFFECT_CHANGED;
    }
    if (strcmp(ev, "delete_failed") == 0) {
        if (!deleting)
            return EFFECT_NONE;
        snprintf(msg, sizeof msg, "Deleting on host '%s' failed: %s", host,
                 why ? why : "the agent gave no reason.");
        r = set_state(i, ST_ERROR, T_NONE, NULL);
        if (r >= 0)
            r = set_fault(i, fault && fault->code ? fault->code : -EIO, msg, host);
        if (r >= 0)
            r = action_finish(i, NULL, fault && fault->code ? fault->code : -EIO, msg);
        return r < 0 ? r : EFFECT_CHANGED;
    }
    /* Power changes wait while a spawn runs or a delete is asked for. */
    if (deleting)
        return EFFECT_NONE;
    if (strcmp(ev, "spawned") == 0) {
        if (!building)
            return EFFECT_NONE;
        if (strcmp(status, ST_BUILD) == 0)
            i->launched_us = yun_wall_us();
        r = set_state(i, ST_ACTIVE, NULL, *power ? power : PW_RUNNING);
        if (r >= 0)
            r = task_end(i, 0, NULL);
        if (r >= 0)
            clear_fault(i);
        return r < 0 ? r : EFFECT_CHANGED;
    }
    if (building)
        return EFFECT_NONE;

    const char *to_status = NULL, *to_power = NULL;
    if (strcmp(ev, "started") == 0 || strcmp(ev, "resumed") == 0 ||
        strcmp(ev, "rebooted") == 0) {
        to_status = ST_ACTIVE;
        to_power = PW_RUNNING;
    } else if (strcmp(ev, "stopped") == 0) {
        to_status = ST_SHUTOFF;
        to_power = PW_SHUTOFF;
    } else if (strcmp(ev, "paused") == 0) {
        to_status = ST_PAUSED;
        to_power = PW_PAUSED;
    } else if (strcmp(ev, "suspended") == 0) {
        to_status = ST_SUSPENDED;
        to_power = PW_SUSPENDED;
    } else if (strcmp(ev, "crashed") == 0) {
        to_status = ST_SHUTOFF;
        to_power = PW_CRASHED;
        snprintf(msg, sizeof msg, "The guest crashed on host '%s'%s%s", host,
                 why ? ": " : ".", why ? why : "");
        r = set_fault(i, fault && fault->code ? fault->code : -EIO, msg, host);
        if (r < 0)
            return r;
    } else {
        return EFFECT_NONE;
    }
    if (*power && in_list(power, power_states))
        to_power = power;
    /* An ERROR server stays in ERROR on power changes, except when a
     * task the user asked for (hard reboot, stop) brings it back. */
    if (strcmp(status, ST_ERROR) == 0 && !*task) {
        r = set_state(i, NULL, NULL, to_power);
        return r < 0 ? r : EFFECT_CHANGED;
    }
    if (strcmp(status, to_status) == 0 && strcmp(i->power_state, to_power) == 0 && !*task)
        return EFFECT_NONE;
    r = set_state(i, to_status, NULL, to_power);
    if (r >= 0 && strcmp(to_status, ST_ACTIVE) == 0 && strcmp(ev, "crashed") != 0 &&
        strcmp(status, ST_ERROR) == 0)
        clear_fault(i);
    /* A snapshot goes on whatever the guest does meanwhile: only its own
     * events end it. */
    if (r >= 0 && strcmp(task, T_IMAGE_SNAPSHOT) != 0)
        r = task_end(i, 0, NULL);
    return r < 0 ? r : EFFECT_CHANGED;
}

/* Applies 'ev' to instance 'id' in its own write transaction, with the
 * claim's release when it became DELETED. 'who' audits ERROR and DELETED
 * outcomes. Returns the effect or a negative errno. */
static int
event_commit(struct sched *s, const char *id, const char *host_id, const char *ev,
             const char *power, const Yun__InstanceFault *fault, const struct actor *who)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    _cleanup_(claim_freep) Yun__Claim *claim = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_inst(txn, id, &i);
    if (r < 0)
        return r;
    if (!is_live(i) || strcmp(i->host_id, host_id) != 0)
        return EFFECT_NONE;
    bool was_error = strcmp(i->status, ST_ERROR) == 0;
    char snap[YUN_UUID_STR_SIZE];
    snprintf(snap, sizeof snap, "%s", i->snapshot_image_id);
    int effect = apply_event(i, ev, power ? power : "", fault);
    if (effect <= EFFECT_NONE)
        return effect;
    r = 0;
    /* A snapshot cut short by a delete or a vanished domain fails. */
    if (*snap && strcmp(i->task_state, T_IMAGE_SNAPSHOT) != 0)
        r = str_set(&i->snapshot_image_id, "");
    if (effect == EFFECT_DELETED) {
        r = release_claim_txn(txn, id, &claim);
        if (r >= 0 && *i->server_group)
            r = group_membership(txn, i->server_group, id, false);
        if (r >= 0)
            r = sched_instance_ports_release(s, txn, i);
    }
    if (r >= 0)
        r = put_inst(txn, i);
    if (r >= 0 && (effect == EFFECT_DELETED || (!was_error && strcmp(i->status, ST_ERROR) == 0)))
        r = audit_txn(s, txn, who, effect == EFFECT_DELETED ? "server.deleted" : "server.error",
                      id, effect == EFFECT_DELETED ? 0 : i->fault ? i->fault->code : -EIO,
                      effect == EFFECT_DELETED ? NULL : i->fault ? i->fault->message : NULL);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    release_claim_index(s, claim);
    if (*snap && !*i->snapshot_image_id)
        snapshot_abandon(s, snap, -ECANCELED, "The server's snapshot ended before its image "
                         "was complete.");
    log_req(YUN_LOG_INFO, who->req, 0, "server event vm=%s event=%s status=%s power=%s", id, ev,
            i->status, i->power_state);
    if (effect == EFFECT_DELETED && i->n_networks)
        sched_network_push_related(s, (const Yun__InstanceRecord *const *)&i, 1, false);
    return effect;
}

/* --- delete -------------------------------------------------------------------------- */

/* After a commit that may have deleted 'i': the hosts that wired its
 * ports (its own, and those whose VXLAN peers or group sets held it) get
 * their new state. */
static void
push_if_deleted(struct sched *s, const Yun__InstanceRecord *i)
{
    if (!is_live(i) && i->n_networks)
        sched_network_push_related(s, &i, 1, false);
}

/* Deletes 'i' here: DELETED, claim released, out of its group. The
 * agent, if it still holds it, is told at its next start-up sync. */
static int
local_delete(struct sched *s, struct yun_txn *txn, Yun__InstanceRecord *i, const char *message,
             Yun__Claim **ret_claim)
{
    int r = release_claim_txn(txn, i->id, ret_claim);
    if (r >= 0 && *i->server_group)
        r = group_membership(txn, i->server_group, i->id, false);
    if (r >= 0)
        r = sched_instance_ports_release(s, txn, i);
    if (r >= 0)
        r = mark_deleted(i, message);
    if (r >= 0)
        r = put_inst(txn, i);
    return r;
}

static void
destroy_done(struct sched *s, const struct sched_agent_result *res, void *data)
{
    const struct agent_ctx *c = data;
    struct actor who = ctx_actor(c);
    if (!res->error) {
        const Yun__AgentAck *ack = (const Yun__AgentAck *)res->reply;
        /* Done already, or the event follows. */
        if (ack && ack->state && !ack->state->has_domain && !ack->state->known)
            (void)event_commit(s, c->id, c->host_id, "deleted", NULL, NULL, &who);
        return;
    }
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    _cleanup_(claim_freep) Yun__Claim *claim = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_inst(txn, c->id, &i);
    if (r < 0 || !is_live(i) || strcmp(i->task_state, T_DELETING) != 0 ||
        strcmp(i->host_id, c->host_id) != 0)
        return;
    char msg[768];
    if (res->error == -ENOENT) {
        r = local_delete(s, txn, i, "The agent does not have it.", &claim);
    } else if (res->error == YUN_E_UNREACHABLE || res->error == YUN_E_NOHOST ||
               res->error == YUN_E_UNKNOWN_PEER) {
        snprintf(msg, sizeof msg, "Deleted here: %s The agent's start-up sync removes what "
                 "is left on the host.", res->error_message);
        r = local_delete(s, txn, i, msg, &claim);
    } else {
        snprintf(msg, sizeof msg, "Deleting on host '%s' failed: %s", i->host_name,
                 *res->error_message ? res->error_message : yun_strerror(res->error));
        r = set_state(i, ST_ERROR, T_NONE, NULL);
        if (r >= 0)
            r = set_fault(i, res->error, msg, i->host_name);
        if (r >= 0)
            r = action_finish(i, NULL, res->error, msg);
        if (r >= 0)
            r = put_inst(txn, i);
    }
    if (r >= 0)
        r = audit_txn(s, txn, &who, "server.delete", c->id, claim || !is_live(i) ? 0 : res->error,
                      res->error_message);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return (void)log_err_errno(r, "cannot record a delete vm=%s", c->id);
    release_claim_index(s, claim);
    push_if_deleted(s, i);
    log_req(YUN_LOG_NOTICE, c->req, res->error, "server delete ended vm=%s status=%s", c->id,
            i->status);
}

static void
destroy_send(struct sched *s, const Yun__InstanceRecord *i, const struct actor *who)
{
    Yun__AgentInstanceRef q = YUN__AGENT_INSTANCE_REF__INIT;
    q.instance_id = i->id;
    agent_send(s, YUN__OP__OP_AGENT_DESTROY, &q.base, &yun__agent_ack__descriptor, destroy_done,
               ctx_new(i, "delete", who));
}

static int
server_delete(struct sched_call *call, const Yun__ServerRef *q)
{
    struct sched *s = call->s;
    struct actor who = actor_of(call);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    _cleanup_(claim_freep) Yun__Claim *claim = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    r = inst_lookup(call, txn, q->server, &i);
    if (r < 0)
        return r;
    if (!is_live(i))
        return error_not_found(call, q->server);
    /* A snapshot in progress ends: its image is killed once this commits. */
    char snap[YUN_UUID_STR_SIZE];
    snprintf(snap, sizeof snap, "%s", i->snapshot_image_id);
    if (*snap) {
        r = action_finish(i, "snapshot", -ECANCELED, "The server was deleted.");
        if (r >= 0)
            r = str_set(&i->snapshot_image_id, "");
        if (r < 0)
            return r;
    }
    r = action_start(i, "delete", &who);
    if (r < 0)
        return r;
    bool local = !*i->host_id || !host_is_up(txn, i->host_id, NULL);
    if (local) {
        r = local_delete(s, txn, i, *i->host_id ? "Deleted here: its host is down; the agent's "
                                               "start-up sync removes what is left."
                                             : "It had no host.", &claim);
    } else {
        r = set_state(i, NULL, T_DELETING, NULL);
        if (r >= 0)
            r = put_inst(txn, i);
    }
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "server.delete", i->id,
                                         local ? "Deleted here." : "Sent to the agent.");
    if (r < 0)
        return r;
    release_claim_index(s, claim);
    push_if_deleted(s, i);
    if (*snap)
        snapshot_abandon(s, snap, -ECANCELED, "The server was deleted during its snapshot.");
    log_req(YUN_LOG_NOTICE, call->req, 0, "server delete vm=%s host=%s local=%s", i->id,
            i->host_id, local ? "yes" : "no");
    r = reply_inst(call, i);
    if (!local)
        destroy_send(s, i, &who);
    return r;
}

/* OP_SERVER_DELETE: accepted in any state. With its host up, the agent
 * destroys the instance (task deleting; DELETED when it confirms); with
 * its host down or no host, it is deleted here at once. ServerReply. */
int
sched_server_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ServerRef *q = (const Yun__ServerRef *)req;
    return sched_compute_audit_end(call, "server.delete", q->server, server_delete(call, q));
}

/* --- actions ------------------------------------------------------------------------- */

static const struct action_def *
find_action(const char *name, bool hard)
{
    if (strcmp(name, "reboot") == 0 && hard)
        name = "reboot_hard";
    for (size_t k = 0; k < ELEMENTSOF(action_defs); k++)
        if (strcmp(action_defs[k].name, name) == 0)
            return &action_defs[k];
    return NULL;
}

static bool
action_allowed_from(const struct action_def *d, const char *status)
{
    for (size_t k = 0; k < ELEMENTSOF(d->from) && d->from[k]; k++)
        if (strcmp(d->from[k], status) == 0)
            return true;
    return false;
}

/* "SHUTOFF", "ACTIVE or PAUSED", ... */
static void
from_text(const struct action_def *d, char *buf, size_t size)
{
    size_t n = 0;
    while (n < ELEMENTSOF(d->from) && d->from[n])
        n++;
    buf[0] = '\0';
    for (size_t k = 0; k < n; k++) {
        size_t len = strlen(buf);
        snprintf(buf + len, size - len, "%s%s", k == 0 ? "" : k + 1 == n ? " or " : ", ",
                 d->from[k]);
    }
}

/* The event an agent's acknowledgement stands for when its power state
 * shows the action done already. */
static const char *
ack_event(const char *action)
{
    if (strcmp(action, "start") == 0)
        return "started";
    if (strcmp(action, "stop") == 0)
        return "stopped";
    if (strcmp(action, "pause") == 0)
        return "paused";
    if (strcmp(action, "suspend") == 0)
        return "suspended";
    if (strcmp(action, "unpause") == 0 || strcmp(action, "resume") == 0)
        return "resumed";
    return NULL;
}

static void
action_done(struct sched *s, const struct sched_agent_result *res, void *data)
{
    const struct agent_ctx *c = data;
    struct actor who = ctx_actor(c);
    const struct action_def *d = find_action(c->action, strcmp(c->action, "reboot_hard") == 0);
    if (!res->error) {
        const Yun__AgentAck *ack = (const Yun__AgentAck *)res->reply;
        const char *ev = ack_event(c->action);
        if (d && d->target_power && ev && ack && ack->state &&
            strcmp(ack->state->power_state, d->target_power) == 0)
            (void)event_commit(s, c->id, c->host_id, ev, ack->state->power_state, NULL, &who);
        return;
    }
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_inst(txn, c->id, &i);
    if (r < 0 || strcmp(i->task_state, c->task) != 0 || strcmp(i->host_id, c->host_id) != 0)
        return;
    char msg[768];
    snprintf(msg, sizeof msg, "The %s on host '%s' failed: %s", c->action, i->host_name,
             *res->error_message ? res->error_message : yun_strerror(res->error));
    r = set_fault(i, res->error, msg, i->host_name);
    if (r >= 0)
        r = task_end(i, res->error, msg);
    if (r >= 0)
        r = put_inst(txn, i);
    if (r >= 0)
        r = audit_txn(s, txn, &who, "server.action", c->id, res->error, msg);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        log_err_errno(r, "cannot record a failed action vm=%s", c->id);
    else
        log_req(YUN_LOG_NOTICE, c->req, res->error, "server action failed vm=%s action=%s",
                c->id, c->action);
}

static int
server_rename(struct sched_call *call, const Yun__ServerActionRequest *q)
{
    if (!yun_text_is_valid(q->name, NAME_MAX_LEN))
        return sched_call_error(call, YUN_E_INVALID,
                                "Server name '%.64s' is not 1 to %d bytes of text without "
                                "control characters.", q->name, NAME_MAX_LEN);
    struct actor who = actor_of(call);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = inst_lookup(call, txn, q->server, &i);
    if (r < 0)
        return r;
    if (!is_live(i))
        return error_not_found(call, q->server);
    r = str_set(&i->name, q->name);
    if (r >= 0)
        r = action_start(i, "rename", &who);
    if (r >= 0)
        r = action_finish(i, "rename", 0, NULL);
    if (r >= 0)
        r = put_inst(txn, i);
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "server.action", i->id, "rename");
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "server renamed vm=%s name=\"%s\"", i->id, i->name);
    return reply_inst(call, i);
}

static int
server_action(struct sched_call *call, const Yun__ServerActionRequest *q)
{
    struct sched *s = call->s;
    if (strcmp(q->action, "rename") == 0)
        return server_rename(call, q);
    const struct action_def *d = find_action(q->action, q->hard);
    if (!d || strcmp(q->action, "reboot_hard") == 0)
        return sched_call_error(call, YUN_E_INVALID,
                                "Action '%.32s' is not one of start, stop, reboot, pause, "
                                "unpause, suspend, resume, rebuild or rename.", q->action);
    if (q->hard && strcmp(q->action, "reboot") != 0)
        return sched_call_error(call, YUN_E_INVALID, "Only a reboot can be hard.");
    bool rebuild = strcmp(d->name, "rebuild") == 0;
    if (rebuild && !*q->image)
        return sched_call_error(call, YUN_E_INVALID, "A rebuild needs the image to boot.");

    struct actor who = actor_of(call);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    r = inst_lookup(call, txn, q->server, &i);
    if (r < 0)
        return r;
    if (!is_live(i))
        return error_not_found(call, q->server);
    if (*i->task_state)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Server '%s' is busy: task '%s' is in progress.", i->id,
                                i->task_state);
    if (!action_allowed_from(d, i->status)) {
        char from[128];
        from_text(d, from, sizeof from);
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Server '%s' is %s; '%s' needs a server that is %s.", i->id,
                                i->status, q->action, from);
    }
    if (!*i->host_id)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Server '%s' has no host (it never started); delete it.",
                                i->id);
    if (!host_is_up(txn, i->host_id, NULL))
        return sched_call_error(call, YUN_E_CONFLICT,
                                "The host of server '%s' is down; try again when it is up.",
                                i->id);
    if (rebuild) {
        _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
        Yun__InstanceImage *boot = NULL;
        r = sched_image_find_bootable(call, txn, q->image, &img);
        if (r >= 0)
            r = boot_image(call, txn, img, &boot);
        if (r < 0)
            return r;
        if (i->image)
            yun__instance_image__free_unpacked(i->image, NULL);
        i->image = boot;
        r = check_fit(call, img, i->flavor);
        if (r >= 0)
            r = str_set(&i->image_id, img->id);
        if (r >= 0)
            r = set_state(i, ST_REBUILD, d->task, NULL);
    } else {
        r = set_state(i, NULL, d->task, NULL);
    }
    if (r >= 0)
        r = action_start(i, strcmp(d->name, "reboot_hard") == 0 ? "reboot" : d->name, &who);
    if (r >= 0)
        r = put_inst(txn, i);
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "server.action", i->id, d->name);
    if (r < 0)
        return r;
    log_req(YUN_LOG_NOTICE, call->req, 0, "server action vm=%s action=%s host=%s", i->id,
            d->name, i->host_id);
    r = reply_inst(call, i);
    if (rebuild) {
        spawn_send(s, i, &who);
    } else {
        Yun__AgentActionRequest a = YUN__AGENT_ACTION_REQUEST__INIT;
        a.instance_id = i->id;
        a.action = (char *)(strcmp(d->name, "reboot_hard") == 0 ? "reboot" : d->name);
        a.hard = q->hard;
        agent_send(s, YUN__OP__OP_AGENT_ACTION, &a.base, &yun__agent_ack__descriptor,
                   action_done, ctx_new(i, d->name, &who));
    }
    return r;
}

/* OP_SERVER_ACTION: start stop reboot (hard) pause unpause suspend resume
 * rebuild rename. A server with a task in progress or in a status the
 * action does not start from is refused with YUN_E_CONFLICT. ServerReply
 * with the task set; the agent's event ends it. */
int
sched_server_action(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ServerActionRequest *q = (const Yun__ServerActionRequest *)req;
    return sched_compute_audit_end(call, "server.action", q->server, server_action(call, q));
}

/* --- metadata, snapshot -------------------------------------------------------------- */

static int
server_metadata(struct sched_call *call, const Yun__ServerMetadataRequest *q)
{
    int r = check_metadata(call, q->set, q->n_set);
    if (r < 0)
        return r;
    if (q->n_unset > META_MAX)
        return sched_call_error(call, YUN_E_INVALID, "At most %d keys are unset at once.",
                                META_MAX);
    if (!q->n_set && !q->n_unset)
        return sched_call_error(call, YUN_E_INVALID, "Nothing to set or unset.");
    struct actor who = actor_of(call);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = inst_lookup(call, txn, q->server, &i);
    if (r < 0)
        return r;
    if (!is_live(i))
        return error_not_found(call, q->server);

    /* The old items minus the unset ones, then each set one replaces its
     * key's value in place or is appended. */
    size_t cap = i->n_metadata + q->n_set;
    _cleanup_free_ Yun__FlavorSpec **items = calloc(cap + 1, sizeof *items);
    if (!items)
        return -ENOMEM;
    size_t n = 0;
    for (size_t k = 0; k < cap; k++) {
        Yun__FlavorSpec *it = k < i->n_metadata ? i->metadata[k] : q->set[k - i->n_metadata];
        bool drop = false;
        for (size_t u = 0; u < q->n_unset && !drop; u++)
            drop = strcmp(q->unset[u], it->key) == 0;
        if (drop)
            continue;
        size_t at = 0;
        while (at < n && strcmp(items[at]->key, it->key) != 0)
            at++;
        items[at] = it;
        if (at == n)
            n++;
    }
    if (n > META_MAX)
        return sched_call_error(call, YUN_E_INVALID, "A server has at most %d metadata items.",
                                META_MAX);
    Yun__FlavorSpec **old = i->metadata;
    size_t old_n = i->n_metadata;
    i->metadata = items;
    i->n_metadata = n;
    r = action_start(i, "set_metadata", &who);
    if (r >= 0)
        r = action_finish(i, "set_metadata", 0, NULL);
    if (r >= 0)
        r = put_inst(txn, i);
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "server.metadata", i->id, NULL);
    if (r >= 0)
        r = reply_inst(call, i);
    /* The record owns its old items again before it is freed. */
    i->metadata = old;
    i->n_metadata = old_n;
    return r;
}

/* OP_SERVER_METADATA: sets and unsets metadata items. ServerReply. */
int
sched_server_metadata(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ServerMetadataRequest *q = (const Yun__ServerMetadataRequest *)req;
    return sched_compute_audit_end(call, "server.metadata", q->server, server_metadata(call, q));
}

/* --- snapshots ----------------------------------------------------------------------- */

/* Snapshots (Nova's createImage): the image is made at once (queued,
 * owned by the server's project) and named in the instance's
 * snapshot_image_id while its task image_snapshot runs; the agent copies
 * the disk, uploads it (OP_SNAPSHOT_UPLOAD, see snapshot_upload) and
 * reports snapshot_done or snapshot_failed. Whatever ends the task
 * otherwise (the agent refusing, a delete, a timeout, a restart) kills
 * the image: no snapshot stays queued or saving. */

/* The snapshot 'image_id' will not complete: it becomes killed. */
static void
snapshot_abandon(struct sched *s, const char *image_id, int code, const char *why)
{
    if (*image_id)
        (void)sched_image_snapshot_fail(s, image_id, code, why);
}

/* Ends the snapshot task of 'id' on 'host_id' as done ('code' 0) or
 * failed with 'message' (then with a fault, and the image killed). Only
 * the task for 'image_id' (empty: any). */
static void
snapshot_end(struct sched *s, const char *id, const char *host_id, const char *image_id,
             int code, const char *message, const struct actor *who)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_inst(txn, id, &i);
    if (r < 0 || !is_live(i) || strcmp(i->host_id, host_id) != 0 ||
        strcmp(i->task_state, T_IMAGE_SNAPSHOT) != 0 ||
        (*image_id && strcmp(i->snapshot_image_id, image_id) != 0))
        return;
    char snap[YUN_UUID_STR_SIZE];
    snprintf(snap, sizeof snap, "%s", i->snapshot_image_id);
    if (code)
        r = set_fault(i, code, message, i->host_name);
    if (r >= 0)
        r = task_end(i, code, message);
    if (r >= 0)
        r = put_inst(txn, i);
    if (r >= 0 && code)
        r = audit_txn(s, txn, who, "server.snapshot", id, code, message);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return (void)log_err_errno(r, "cannot end a snapshot vm=%s", id);
    if (code)
        snapshot_abandon(s, snap, code, message);
    log_req(code ? YUN_LOG_NOTICE : YUN_LOG_INFO, who->req, code,
            "server snapshot ended vm=%s image=%s", id, snap);
}

static void
snapshot_sent(struct sched *s, const struct sched_agent_result *res, void *data)
{
    const struct agent_ctx *c = data;
    if (!res->error)
        return; /* accepted: its event ends it */
    struct actor who = ctx_actor(c);
    char msg[768];
    snprintf(msg, sizeof msg, "The snapshot on host '%s' failed: %s", c->host_id,
             *res->error_message ? res->error_message : yun_strerror(res->error));
    snapshot_end(s, c->id, c->host_id, "", res->error, msg, &who);
}

/* Appends 'key'='value' to 'props' (borrowed strings) unless 'value' is empty. */
static void
prop_push(Yun__ImageProperty *store, Yun__ImageProperty **props, size_t *n, const char *key,
          const char *value)
{
    if (!value || !*value)
        return;
    Yun__ImageProperty *p = &store[*n];
    yun__image_property__init(p);
    p->key = (char *)key;
    p->value = (char *)value;
    props[(*n)++] = p;
}

static int
server_snapshot(struct sched_call *call, const Yun__ServerSnapshotRequest *q)
{
    struct sched *s = call->s;
    if (!yun_text_is_valid(q->image_name, NAME_MAX_LEN))
        return sched_call_error(call, YUN_E_INVALID,
                                "Image name '%.64s' is not 1 to %d bytes of text without "
                                "control characters.", q->image_name, NAME_MAX_LEN);
    struct actor who = actor_of(call);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    _cleanup_(image_freep) Yun__ImageRecord *img = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    r = inst_lookup(call, txn, q->server, &i);
    if (r < 0)
        return r;
    if (!is_live(i))
        return error_not_found(call, q->server);
    if (*i->task_state)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Server '%s' is busy: task '%s' is in progress.", i->id,
                                i->task_state);
    if (strcmp(i->status, ST_ACTIVE) != 0 && strcmp(i->status, ST_SHUTOFF) != 0)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Server '%s' is %s; a snapshot needs a server that is ACTIVE "
                                "or SHUTOFF.", i->id, i->status);
    if (!*i->host_id)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Server '%s' has no host (it never started).", i->id);
    if (!host_is_up(txn, i->host_id, NULL))
        return sched_call_error(call, YUN_E_CONFLICT,
                                "The host of server '%s' is down; try again when it is up.",
                                i->id);

    /* The snapshot boots as its server did: the same kernel, ramdisk and
     * command line (the disk alone does not say how to boot it). */
    Yun__ImageProperty store[8];
    Yun__ImageProperty *props[8];
    size_t n = 0;
    const Yun__InstanceImage *b = i->image;
    prop_push(store, props, &n, "image_type", "snapshot");
    prop_push(store, props, &n, "instance_uuid", i->id);
    prop_push(store, props, &n, "base_image_ref", i->image_id);
    if (b) {
        prop_push(store, props, &n, "kernel_id", b->kernel_id);
        prop_push(store, props, &n, "ramdisk_id", b->ramdisk_id);
        if (*b->kernel_id)
            prop_push(store, props, &n, "os_command_line", b->kernel_cmdline);
        prop_push(store, props, &n, "architecture", b->architecture);
    }
    r = sched_image_snapshot_new(call, txn, q->image_name, i->project, props, n,
                                 i->flavor ? i->flavor->disk_gb : 0, &img);
    if (r < 0)
        return r;
    r = str_set(&i->snapshot_image_id, img->id);
    if (r >= 0)
        r = set_state(i, NULL, T_IMAGE_SNAPSHOT, NULL);
    if (r >= 0)
        r = action_start(i, "snapshot", &who);
    if (r >= 0)
        r = put_inst(txn, i);
    char detail[128];
    snprintf(detail, sizeof detail, "Image '%s' is being made.", img->id);
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "server.snapshot", i->id, detail);
    if (r < 0)
        return r;
    log_req(YUN_LOG_NOTICE, call->req, 0, "server snapshot vm=%s image=%s host=%s", i->id,
            img->id, i->host_id);
    Yun__ImageReply y = YUN__IMAGE_REPLY__INIT;
    y.image = img;
    r = sched_call_reply(call, &y.base);
    Yun__AgentSnapshotRequest a = YUN__AGENT_SNAPSHOT_REQUEST__INIT;
    a.instance_id = i->id;
    a.image_id = img->id;
    agent_send(s, YUN__OP__OP_AGENT_SNAPSHOT, &a.base, &yun__agent_ack__descriptor,
               snapshot_sent, ctx_new(i, "snapshot", &who));
    return r;
}

/* OP_SERVER_SNAPSHOT: the image of an ACTIVE or SHUTOFF server's root
 * disk (Nova's createImage). Replies ImageReply with the new image,
 * queued; the server's task is image_snapshot until the agent's
 * snapshot_done (the image is active) or snapshot_failed (killed). */
int
sched_server_snapshot(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ServerSnapshotRequest *q = (const Yun__ServerSnapshotRequest *)req;
    return sched_compute_audit_end(call, "server.snapshot", q->server, server_snapshot(call, q));
}

/* --- console ------------------------------------------------------------------------- */

/* A console request waits for the agent: the bus keeps the caller's
 * request (a deferred reply) until the agent answers or times out. */
struct console_ctx {
    struct agent_ctx base;     /* first: agent-client frees it with free() */
    uint64_t handle;
};

static void
deferred_answer(struct sched *s, uint64_t handle, int error, const char *message,
                const ProtobufCMessage *reply)
{
    _cleanup_free_ uint8_t *body = NULL;
    size_t size = 0;
    int r = yun_rpc_pack_reply(error, message, reply, &body, &size);
    if (r < 0)
        return (void)log_err_errno(r, "cannot pack a deferred reply");
    if (s->bus) {
        r = yun_bus_server_reply(s->bus, handle, body, size);
        if (r < 0 && r != -ENOENT)
            log_warn_errno(r, "cannot send a deferred reply");
    } else if (s->deferred_reply) {
        s->deferred_reply(s, handle, body, size, s->deferred_reply_data);
    }
}

static void
console_done(struct sched *s, const struct sched_agent_result *res, void *data)
{
    const struct console_ctx *c = data;
    if (res->error) {
        char msg[512];
        snprintf(msg, sizeof msg, "Cannot read the console of server '%s': %s", c->base.id,
                 *res->error_message ? res->error_message : yun_strerror(res->error));
        deferred_answer(s, c->handle, res->error, msg, NULL);
    } else {
        const Yun__ServerConsoleReply *y = (const Yun__ServerConsoleReply *)res->reply;
        Yun__ServerConsoleReply empty = YUN__SERVER_CONSOLE_REPLY__INIT;
        deferred_answer(s, c->handle, 0, "", y ? &y->base : &empty.base);
    }
    log_req(YUN_LOG_DEBUG, c->base.req, res->error, "console answered vm=%s", c->base.id);
}

static int
server_console(struct sched_call *call, const Yun__ServerConsoleRequest *q)
{
    struct sched *s = call->s;
    if (q->lines > CONSOLE_LINES_MAX)
        return sched_call_error(call, YUN_E_INVALID, "At most %d lines are shown, not %u.",
                                CONSOLE_LINES_MAX, q->lines);
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        int r = yun_txn_begin(s->store, false, &txn);
        if (r < 0)
            return r;
        r = inst_lookup(call, txn, q->server, &i);
        if (r < 0)
            return r;
        if (!is_live(i))
            return error_not_found(call, q->server);
        if (!*i->host_id || strcmp(i->status, ST_BUILD) == 0)
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "Server '%s' is %s and has no console yet.", i->id,
                                    i->status);
        if (!host_is_up(txn, i->host_id, NULL))
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "The host of server '%s' is down; its console cannot be "
                                    "read.", i->id);
    }
    uint64_t handle = 0;
    int r = 0;
    if (s->bus)
        r = yun_bus_server_defer(s->bus, &handle);
    else if (s->deferred_reply)
        handle = ++s->next_deferred;
    else
        r = -EOPNOTSUPP;
    if (r < 0)
        return sched_call_error(call, r, "The console cannot be read now: %s.",
                                yun_strerror(r));
    struct actor who = actor_of(call);
    struct agent_ctx *base = ctx_new(i, "console", &who);
    struct console_ctx *c = base ? realloc(base, sizeof *c) : NULL;
    if (!c) {
        free(base);
        return -ENOMEM;
    }
    c->handle = handle;
    Yun__AgentConsoleRequest a = YUN__AGENT_CONSOLE_REQUEST__INIT;
    a.instance_id = i->id;
    a.lines = q->lines ? q->lines : CONSOLE_LINES_DEFAULT;
    /* Sent directly: a failure now is answered now, not deferred. */
    r = sched_agent_send(s, i->host_id, YUN__OP__OP_AGENT_CONSOLE, &a.base,
                         &yun__server_console_reply__descriptor, NULL, NULL, console_done, c,
                         free);
    if (r < 0)
        return sched_call_error(call, r, "Cannot reach the agent of server '%s': %s.", i->id,
                                yun_strerror(r));
    call->deferred = true;
    return 0;
}

/* OP_SERVER_CONSOLE: the last lines of the guest's serial console, read
 * by its agent (OP_AGENT_CONSOLE, answered with a ServerConsoleReply).
 * The reply is deferred until the agent answers. */
int
sched_server_console(struct sched_call *call, const ProtobufCMessage *req)
{
    return server_console(call, (const Yun__ServerConsoleRequest *)req);
}

/* --- agents' events and sync --------------------------------------------------------- */

/* The host id of the calling agent (from its peer id, the host name). */
static int
agent_host(struct sched_call *call, struct yun_txn *txn, char id[HOST_ID_MAX + 1])
{
    const char *name = call->peer && call->peer->key_id ? call->peer->key_id : "";
    const void *v;
    size_t size;
    int r = *name ? yun_txn_get(txn, "host_names", name, strlen(name), &v, &size) : -ENOENT;
    if (r == -ENOENT)
        return sched_call_error(call, YUN_E_NOHOST, "Agent '%s' has no registered host.", name);
    if (r < 0)
        return r;
    if (size == 0 || size > HOST_ID_MAX)
        return -EBADMSG;
    memcpy(id, v, size);
    id[size] = '\0';
    return 0;
}

/* snapshot_done or snapshot_failed of 'q->instance_id' on 'host': done
 * only when its image did become active. */
static void
snapshot_event(struct sched *s, const Yun__InstanceEvent *q, const char *host,
               const struct actor *who)
{
    char snap[YUN_UUID_STR_SIZE] = "";
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
        int r = yun_txn_begin(s->store, false, &txn);
        if (r >= 0)
            r = load_inst(txn, q->instance_id, &i);
        if (r < 0 || strcmp(i->task_state, T_IMAGE_SNAPSHOT) != 0)
            return;
        snprintf(snap, sizeof snap, "%s", i->snapshot_image_id);
    }
    char msg[768];
    int code = 0;
    if (strcmp(q->event, "snapshot_done") == 0) {
        char status[32] = "gone";
        int r = sched_image_snapshot_status(s, snap, status, sizeof status);
        if (r < 0 || strcmp(status, "active") != 0) {
            code = r < 0 && r != -ENOENT ? r : -EIO;
            snprintf(msg, sizeof msg, "The snapshot on host '%s' ended but image '%s' is %s.",
                     host, snap, status);
        } else {
            snprintf(msg, sizeof msg, "Image '%s' is active.", snap);
        }
    } else {
        code = q->fault && q->fault->code ? q->fault->code : -EIO;
        snprintf(msg, sizeof msg, "The snapshot on host '%s' failed: %s", host,
                 q->fault && *q->fault->message ? q->fault->message
                                                : "the agent gave no reason.");
    }
    snapshot_end(s, q->instance_id, host, snap, code, msg, who);
}

/* OP_SNAPSHOT_UPLOAD: a chunk of a snapshot, from the agent of the
 * server's host only, and only while that server's image_snapshot task
 * for that image runs; the bytes go to image.c as an upload's. */
static int
snapshot_upload(struct sched_call *call, const Yun__SnapshotUploadRequest *q)
{
    struct sched *s = call->s;
    if (!yun_uuid_is_valid(q->instance_id) || !yun_uuid_is_valid(q->image_id))
        return sched_call_error(call, YUN_E_INVALID,
                                "Instance id '%.64s' or image id '%.64s' is not a UUID.",
                                q->instance_id, q->image_id);
    {
        char host[HOST_ID_MAX + 1];
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
        int r = yun_txn_begin(s->store, false, &txn);
        if (r >= 0)
            r = agent_host(call, txn, host);
        if (r < 0)
            return r;
        r = load_inst(txn, q->instance_id, &i);
        if (r < 0 && r != -ENOENT)
            return r;
        if (r == -ENOENT || !is_live(i) || strcmp(i->host_id, host) != 0)
            return sched_call_error(call, YUN_E_DENIED,
                                    "Agent '%s' may not upload a snapshot of server '%s': it is "
                                    "not on its host.", call->peer->key_id, q->instance_id);
        if (strcmp(i->task_state, T_IMAGE_SNAPSHOT) != 0 ||
            strcmp(i->snapshot_image_id, q->image_id) != 0)
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "Server '%s' is not taking snapshot '%s'.", q->instance_id,
                                    q->image_id);
    }
    return sched_image_snapshot_chunk(call, q->instance_id, q->image_id, q->offset,
                                      q->data.data, q->data.len, q->last);
}

int
sched_snapshot_upload(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SnapshotUploadRequest *q = (const Yun__SnapshotUploadRequest *)req;
    int r = snapshot_upload(call, q);
    if (!call->audited) {
        int code = call->error ? call->error : r < 0 ? r : 0;
        if (code)
            sched_audit(call, "snapshot.upload", q->image_id, code,
                        call->error_message ? call->error_message : yun_strerror(code));
        call->audited = true;
    }
    return r;
}

static int
instance_event(struct sched_call *call, const Yun__InstanceEvent *q)
{
    struct sched *s = call->s;
    if (!yun_uuid_is_valid(q->instance_id))
        return sched_call_error(call, YUN_E_INVALID, "Instance id '%.64s' is not a UUID.",
                                q->instance_id);
    if (!in_list(q->event, events))
        return sched_call_error(call, YUN_E_INVALID, "Event '%.32s' is not known.", q->event);
    if (*q->power_state && !in_list(q->power_state, power_states))
        return sched_call_error(call, YUN_E_INVALID, "Power state '%.32s' is not known.",
                                q->power_state);
    if (q->fault && strlen(q->fault->message) > 4096)
        return sched_call_error(call, YUN_E_INVALID, "The fault message is too long.");
    char host[HOST_ID_MAX + 1];
    bool mine = false, live = false;
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
        int r = yun_txn_begin(s->store, false, &txn);
        if (r >= 0)
            r = agent_host(call, txn, host);
        if (r < 0)
            return r;
        if (*q->host_id && strcmp(q->host_id, host) != 0)
            return sched_call_error(call, YUN_E_DENIED,
                                    "Agent '%s' may not report for host '%.64s'.",
                                    call->peer->key_id, q->host_id);
        r = load_inst(txn, q->instance_id, &i);
        if (r < 0 && r != -ENOENT)
            return r;
        live = r >= 0 && is_live(i);
        mine = live && strcmp(i->host_id, host) == 0;
    }
    struct actor who = actor_of(call);
    Yun__InstanceEventReply y = YUN__INSTANCE_EVENT_REPLY__INIT;
    if (!mine) {
        /* Not this host's (deleted while away, or moved to another host
         * after a spawn timed out): it should not run here. */
        log_req(YUN_LOG_NOTICE, call->req, 0, "event for a server not on this host vm=%s "
                "host=%s event=%s", q->instance_id, host, q->event);
        if (strcmp(q->event, "deleted") != 0 && strcmp(q->event, "vanished") != 0 &&
            strcmp(q->event, "spawn_failed") != 0)
            destroy_elsewhere(s, host, q->instance_id);
        call->audited = true;
        return sched_call_reply(call, &y.base);
    }
    if (strcmp(q->event, "snapshot_done") == 0 || strcmp(q->event, "snapshot_failed") == 0) {
        snapshot_event(s, q, host, &who);
    } else if (strcmp(q->event, "spawn_failed") == 0) {
        int code = q->fault && q->fault->code ? q->fault->code : -EIO;
        const char *msg = q->fault && *q->fault->message ? q->fault->message
                                                         : "the agent gave no reason.";
        spawn_failed(s, q->instance_id, host, 0, code, msg, &who, false);
    } else {
        int r = event_commit(s, q->instance_id, host, q->event, q->power_state, q->fault, &who);
        if (r < 0)
            return r;
    }
    call->audited = true;
    return sched_call_reply(call, &y.base);
}

/* OP_INSTANCE_EVENT: an agent reports what happened to one of its host's
 * instances (spawned, stopped, deleted, ...). InstanceEventReply. */
int
sched_instance_event(struct sched_call *call, const ProtobufCMessage *req)
{
    return instance_event(call, (const Yun__InstanceEvent *)req);
}

static int
cmp_state(const void *a, const void *b)
{
    const Yun__AgentInstanceState *x = *(const Yun__AgentInstanceState *const *)a;
    const Yun__AgentInstanceState *y = *(const Yun__AgentInstanceState *const *)b;
    return strcmp(x->instance_id, y->instance_id);
}

struct id_list {
    char (*v)[HOST_ID_MAX + 1];    /* instance or host ids */
    size_t n, cap;
};

static int
id_list_push(struct id_list *l, const char *id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char (*p)[HOST_ID_MAX + 1] = realloc(l->v, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        l->v = p;
        l->cap = cap;
    }
    snprintf(l->v[l->n++], sizeof l->v[0], "%s", id);
    return 0;
}

static void
id_list_done(struct id_list *l)
{
    free(l->v);
}

struct host_scan {
    const char *prefix;
    size_t prefix_size;
    struct id_list *ids;
};

static int
scan_host(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct host_scan *hs = data;
    if (key_size != hs->prefix_size + UUID_LEN || memcmp(key, hs->prefix, hs->prefix_size) != 0)
        return 1;
    char id[YUN_UUID_STR_SIZE];
    memcpy(id, (const char *)key + hs->prefix_size, UUID_LEN);
    id[UUID_LEN] = '\0';
    return id_list_push(hs->ids, id);
}

/* The live instances the scheduler places on 'host'. */
static int
host_instances(struct yun_txn *txn, const char *host, struct id_list *ret)
{
    char prefix[HOST_ID_MAX + 2];
    int n = snprintf(prefix, sizeof prefix, "%s%c", host, '\0');
    if (n < 0 || (size_t)n >= sizeof prefix)
        return -EINVAL;
    struct host_scan hs = { .prefix = prefix, .prefix_size = (size_t)n, .ids = ret };
    return yun_txn_iterate(txn, SCHED_DB_INSTANCE_HOSTS, prefix, hs.prefix_size, scan_host, &hs);
}

/* A reported power state as the status it means. */
static const char *
status_of_power(const char *power)
{
    if (strcmp(power, PW_RUNNING) == 0)
        return ST_ACTIVE;
    if (strcmp(power, PW_PAUSED) == 0)
        return ST_PAUSED;
    if (strcmp(power, PW_SUSPENDED) == 0)
        return ST_SUSPENDED;
    if (strcmp(power, PW_SHUTOFF) == 0 || strcmp(power, PW_CRASHED) == 0)
        return ST_SHUTOFF;
    return NULL;
}

/* Reconciles one instance the scheduler places on the syncing host with
 * what the agent reported ('st' NULL: not reported). Adds it to 'del'
 * when the agent must delete it, to 'failed' when its spawn must be
 * retried. */
static int
sync_one(struct sched *s, struct yun_txn *txn, Yun__InstanceRecord *i,
         const Yun__AgentInstanceState *st, Yun__Claim **ret_claim, bool *ret_changed,
         bool *ret_delete, bool *ret_failed)
{
    bool building = strcmp(i->status, ST_BUILD) == 0 || strcmp(i->status, ST_REBUILD) == 0;
    bool has = st && st->has_domain;
    const char *host = *i->host_name ? i->host_name : i->host_id;
    char msg[512];
    int r = 0;
    *ret_changed = *ret_delete = *ret_failed = false;
    /* The agent restarted: a snapshot it was making is gone with it. */
    if (*i->snapshot_image_id) {
        r = sched_image_snapshot_kill_txn(s, txn, i->snapshot_image_id, -ECANCELED,
                                          "The agent restarted during the server's snapshot.");
        if (r >= 0)
            r = str_set(&i->snapshot_image_id, "");
        if (r < 0)
            return r;
        *ret_changed = true;
    }
    if (strcmp(i->task_state, T_DELETING) == 0) {
        *ret_delete = st != NULL;
        *ret_changed = true;
        return local_delete(s, txn, i, "Deleted at the agent's start-up sync.", ret_claim);
    }
    if (building) {
        /* A spawn queued or in flight to this agent goes on. */
        if (sched_agent_busy(s, i->host_id, i->id))
            return 0;
        if (has && strcmp(st->power_state, PW_RUNNING) == 0 &&
            strcmp(i->status, ST_BUILD) == 0) {
            *ret_changed = true;
            r = apply_event(i, "spawned", PW_RUNNING, NULL);
            return r < 0 ? r : 0;
        }
        *ret_failed = true;
        return 0;
    }
    if (!has) {
        snprintf(msg, sizeof msg, "The server vanished from host '%s': its agent %s.", host,
                 st ? "has its record but no domain" : "does not know it");
        if (strcmp(i->status, ST_ERROR) == 0 && i->fault && strcmp(i->fault->message, msg) == 0)
            return 0;
        *ret_changed = true;
        r = set_state(i, ST_ERROR, T_NONE, PW_NOSTATE);
        if (r >= 0)
            r = set_fault(i, -ENOENT, msg, host);
        if (r >= 0)
            r = action_finish(i, NULL, -ENOENT, msg);
        return r;
    }
    const char *status = status_of_power(st->power_state);
    if (!status)
        return 0;
    bool error = strcmp(i->status, ST_ERROR) == 0;
    if ((error || strcmp(i->status, status) == 0) && strcmp(i->power_state, st->power_state) == 0 &&
        !*i->task_state)
        return 0;
    *ret_changed = true;
    /* The agent restarted: whatever task was running ended with it. */
    r = set_state(i, error ? NULL : status, NULL, st->power_state);
    if (r >= 0 && *i->task_state)
        r = task_end(i, -ECANCELED, "The agent restarted; the state is what it found.");
    return r;
}

static int
instance_sync(struct sched_call *call, const Yun__InstanceSyncRequest *q)
{
    struct sched *s = call->s;
    if (q->n_instances > SYNC_MAX || q->n_unknown_domains > SYNC_MAX)
        return sched_call_error(call, YUN_E_INVALID, "A sync lists at most %d instances.",
                                SYNC_MAX);
    for (size_t k = 0; k < q->n_instances; k++)
        if (!q->instances[k] || !yun_uuid_is_valid(q->instances[k]->instance_id) ||
            (*q->instances[k]->power_state &&
             !in_list(q->instances[k]->power_state, power_states)))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Instance %zu of the sync is not valid.", k);
    struct actor who = actor_of(call);
    char host[HOST_ID_MAX + 1];
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = agent_host(call, txn, host);
    if (r < 0)
        return r;
    if (strcmp(q->host_id, host) != 0)
        return sched_call_error(call, YUN_E_DENIED, "Agent '%s' may not sync host '%.64s'.",
                                call->peer->key_id, q->host_id);

    /* Reported ids, sorted for look-ups. */
    _cleanup_free_ const Yun__AgentInstanceState **rep =
        calloc(q->n_instances + 1, sizeof *rep);
    if (!rep)
        return -ENOMEM;
    for (size_t k = 0; k < q->n_instances; k++)
        rep[k] = q->instances[k];
    if (q->n_instances > 1)
        qsort(rep, q->n_instances, sizeof *rep, cmp_state);

    _cleanup_(id_list_done) struct id_list del = { 0 };
    _cleanup_(id_list_done) struct id_list failed = { 0 };
    _cleanup_(id_list_done) struct id_list ours = { 0 };
    struct {
        Yun__Claim **v;
        size_t n;
    } claims = { 0 };
    claims.v = calloc(q->n_instances + 1, sizeof *claims.v);
    if (!claims.v)
        return -ENOMEM;
    size_t changed = 0;

    /* 1. What the agent holds. */
    for (size_t k = 0; r >= 0 && k < q->n_instances; k++) {
        const Yun__AgentInstanceState *st = q->instances[k];
        _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
        r = load_inst(txn, st->instance_id, &i);
        if (r == -ENOENT || (r >= 0 && (!is_live(i) || strcmp(i->host_id, host) != 0))) {
            r = id_list_push(&del, st->instance_id);
            continue;
        }
        if (r < 0)
            break;
        bool ch, dl, fl;
        Yun__Claim *claim = NULL;
        r = sync_one(s, txn, i, st, &claim, &ch, &dl, &fl);
        if (claim)
            claims.v[claims.n++] = claim;
        if (r >= 0 && dl)
            r = id_list_push(&del, i->id);
        if (r >= 0 && fl)
            r = id_list_push(&failed, i->id);
        if (r >= 0 && ch) {
            r = put_inst(txn, i);
            changed++;
        }
    }
    /* 2. What the scheduler places there that the agent did not report. */
    if (r >= 0)
        r = host_instances(txn, host, &ours);
    for (size_t k = 0; r >= 0 && k < ours.n; k++) {
        Yun__AgentInstanceState key = YUN__AGENT_INSTANCE_STATE__INIT;
        key.instance_id = ours.v[k];
        const Yun__AgentInstanceState *kp = &key;
        if (bsearch(&kp, rep, q->n_instances, sizeof *rep, cmp_state))
            continue;
        _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
        r = load_inst(txn, ours.v[k], &i);
        if (r < 0)
            break;
        bool ch, dl, fl;
        Yun__Claim *claim = NULL;
        Yun__Claim **grown = realloc(claims.v, (claims.n + 2) * sizeof *grown);
        if (!grown) {
            r = -ENOMEM;
            break;
        }
        claims.v = grown;
        r = sync_one(s, txn, i, NULL, &claim, &ch, &dl, &fl);
        if (claim)
            claims.v[claims.n++] = claim;
        if (r >= 0 && fl)
            r = id_list_push(&failed, i->id);
        if (r >= 0 && ch) {
            r = put_inst(txn, i);
            changed++;
        }
    }
    char detail[128];
    snprintf(detail, sizeof detail, "%zu reported, %zu changed, %zu to delete, %zu to retry.",
             q->n_instances, changed, del.n, failed.n);
    if (r >= 0)
        r = audit_txn(s, txn, &who, "instance.sync", host, 0, detail);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    for (size_t k = 0; k < claims.n; k++) {
        if (r >= 0)
            release_claim_index(s, claims.v[k]);
        claim_free(claims.v[k]);
    }
    free(claims.v);
    if (r < 0)
        return r;
    log_req(YUN_LOG_NOTICE, call->req, 0, "agent synced host=%s reported=%zu changed=%zu "
            "delete=%zu retry=%zu unknown_domains=%zu", host, q->n_instances, changed, del.n,
            failed.n, q->n_unknown_domains);

    _cleanup_free_ char **ptrs = calloc(del.n + 1, sizeof *ptrs);
    if (!ptrs)
        return -ENOMEM;
    for (size_t k = 0; k < del.n; k++)
        ptrs[k] = del.v[k];
    Yun__InstanceSyncReply y = YUN__INSTANCE_SYNC_REPLY__INIT;
    y.delete_ = ptrs;
    y.n_delete_ = del.n;
    r = sched_call_reply(call, &y.base);
    for (size_t k = 0; k < failed.n; k++)
        spawn_failed(s, failed.v[k], host, 0, -ECANCELED,
                     "the agent restarted before the spawn finished.", &who, false);
    return r;
}

/* OP_INSTANCE_SYNC: an agent at start lists what it holds. The reply
 * names the instances it must delete (deleted while it was away, or not
 * its own); spawns it lost are retried elsewhere; instances the scheduler
 * places there that it lost become ERROR ("vanished"); power states are
 * taken from the agent. */
int
sched_instance_sync(struct sched_call *call, const ProtobufCMessage *req)
{
    return instance_sync(call, (const Yun__InstanceSyncRequest *)req);
}

/* --- list and show ------------------------------------------------------------------- */

struct inst_list {
    const Yun__ServerListRequest *q;
    const char *project;          /* only this project's; NULL = all */
    const char *status;           /* canonical spelling; NULL = any live */
    Yun__InstanceRecord **v;
    size_t n, cap;
};

static bool
listed(const struct inst_list *l, const Yun__InstanceRecord *i)
{
    const Yun__ServerListRequest *q = l->q;
    if (l->project && strcmp(i->project, l->project) != 0)
        return false;
    if (l->status ? strcmp(i->status, l->status) != 0 : !is_live(i))
        return false;
    if (*q->name && !strstr(i->name, q->name))
        return false;
    if (*q->host && strcmp(i->host_id, q->host) != 0 && strcmp(i->host_name, q->host) != 0)
        return false;
    if (*q->image && strcmp(i->image_id, q->image) != 0 &&
        !(i->image && strcmp(i->image->name, q->image) == 0))
        return false;
    if (*q->flavor && !(i->flavor && (strcmp(i->flavor->id, q->flavor) == 0 ||
                                      strcmp(i->flavor->name, q->flavor) == 0)))
        return false;
    return true;
}

static int
list_add(struct inst_list *l, Yun__InstanceRecord *i)
{
    if (!listed(l, i)) {
        inst_free(i);
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        Yun__InstanceRecord **p = realloc(l->v, cap * sizeof *p);
        if (!p) {
            inst_free(i);
            return -ENOMEM;
        }
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = i;
    return 0;
}

static int
collect_record(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    Yun__InstanceRecord *i = yun__instance_record__unpack(NULL, val_size, val);
    return i ? list_add(data, i) : -EBADMSG;
}

static int
collect_name_id(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct host_scan *hs = data;   /* the same shape: a prefix and ids */
    if (key_size < hs->prefix_size + UUID_LEN || memcmp(key, hs->prefix, hs->prefix_size) != 0)
        return 1;
    char id[YUN_UUID_STR_SIZE];
    memcpy(id, (const char *)key + key_size - UUID_LEN, UUID_LEN);
    id[UUID_LEN] = '\0';
    return id_list_push(hs->ids, id);
}

static void
inst_list_done(struct inst_list *l)
{
    for (size_t k = 0; k < l->n; k++)
        inst_free(l->v[k]);
    free(l->v);
}

/* Newest first; ids break ties so that pages never skip or repeat. */
static int
compare_created(const void *pa, const void *pb)
{
    const Yun__InstanceRecord *a = *(Yun__InstanceRecord *const *)pa;
    const Yun__InstanceRecord *b = *(Yun__InstanceRecord *const *)pb;
    if (a->created_us != b->created_us)
        return a->created_us > b->created_us ? -1 : 1;
    return strcmp(a->id, b->id);
}

static int
server_list(struct sched_call *call, const Yun__ServerListRequest *q)
{
    _cleanup_(inst_list_done) struct inst_list l = { .q = q };
    if (*q->status) {
        for (size_t k = 0; statuses[k] && !l.status; k++)
            if (strcasecmp(q->status, statuses[k]) == 0)
                l.status = statuses[k];
        if (!l.status)
            return sched_call_error(call, YUN_E_INVALID,
                                    "Status '%.32s' is not one of BUILD, ACTIVE, SHUTOFF, "
                                    "PAUSED, SUSPENDED, REBUILD, ERROR or DELETED.", q->status);
    }
    if (q->limit > LIST_MAX)
        return sched_call_error(call, YUN_E_INVALID, "The limit of %u is above %d.", q->limit,
                                LIST_MAX);
    if (strlen(q->name) > NAME_MAX_LEN || strlen(q->host) > REF_MAX ||
        strlen(q->project) > PROJECT_MAX || strlen(q->image) > REF_MAX ||
        strlen(q->flavor) > REF_MAX || strlen(q->marker) > REF_MAX)
        return sched_call_error(call, YUN_E_INVALID, "A list filter is longer than allowed.");
    if (!call->is_admin && (q->all_projects || *q->host ||
                            (*q->project && strcmp(q->project, caller_project(call)) != 0)))
        return sched_call_error(call, YUN_E_DENIED,
                                "Only admins list other projects' servers or filter by host.");
    l.project = *q->project ? q->project : q->all_projects ? NULL : caller_project(call);

    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        int r = yun_txn_begin(call->s->store, false, &txn);
        if (r < 0)
            return r;
        if (!l.project || (l.status && strcmp(l.status, ST_DELETED) == 0)) {
            /* Every record: all projects, or tombstones (not indexed). */
            r = yun_txn_iterate(txn, SCHED_DB_INSTANCES, NULL, 0, collect_record, &l);
        } else {
            /* One project's live instances, through the name index. */
            char prefix[PROJECT_MAX + 2];
            int n = snprintf(prefix, sizeof prefix, "%s%c", l.project, '\0');
            _cleanup_(id_list_done) struct id_list ids = { 0 };
            struct host_scan hs = { .prefix = prefix, .prefix_size = (size_t)n, .ids = &ids };
            r = n > 0 && (size_t)n < sizeof prefix ? 0 : -EINVAL;
            if (r >= 0)
                r = yun_txn_iterate(txn, SCHED_DB_INSTANCE_NAMES, prefix, hs.prefix_size,
                                    collect_name_id, &hs);
            for (size_t k = 0; r >= 0 && k < ids.n; k++) {
                Yun__InstanceRecord *i = NULL;
                r = load_inst(txn, ids.v[k], &i);
                if (r == -ENOENT) {
                    r = 0;
                    continue;
                }
                if (r >= 0)
                    r = list_add(&l, i);
            }
        }
        if (r < 0)
            return r;
    }
    if (l.n > 1)
        qsort(l.v, l.n, sizeof *l.v, compare_created);
    size_t start = 0;
    if (*q->marker) {
        size_t k = 0;
        while (k < l.n && strcmp(l.v[k]->id, q->marker) != 0)
            k++;
        if (k == l.n)
            return sched_call_error(call, YUN_E_INVALID,
                                    "Marker '%.64s' is not a server of this list.", q->marker);
        start = k + 1;
    }
    size_t limit = q->limit ? q->limit : LIST_DEFAULT;
    size_t count = l.n - start < limit ? l.n - start : limit;
    _cleanup_free_ Yun__InstanceRecord *views = calloc(count + 1, sizeof *views);
    _cleanup_free_ Yun__InstanceFault *faults = calloc(count + 1, sizeof *faults);
    _cleanup_free_ Yun__InstanceRecord **ptrs = calloc(count + 1, sizeof *ptrs);
    if (!views || !faults || !ptrs)
        return -ENOMEM;
    for (size_t k = 0; k < count; k++) {
        inst_view(call, l.v[start + k], false, &views[k], &faults[k]);
        ptrs[k] = &views[k];
    }
    Yun__ServerListReply y = YUN__SERVER_LIST_REPLY__INIT;
    y.servers = ptrs;
    y.n_servers = count;
    y.next_marker = (char *)(start + count < l.n && count ? l.v[start + count - 1]->id : "");
    return sched_call_reply(call, &y.base);
}

/* OP_SERVER_LIST: the caller's project's servers (admins: any project, or
 * all), newest first, filtered and paged; DELETED ones only when asked
 * for by status. Records leave out user data and action logs. */
int
sched_server_list(struct sched_call *call, const ProtobufCMessage *req)
{
    return server_list(call, (const Yun__ServerListRequest *)req);
}

/* OP_SERVER_SHOW: one server by id (DELETED ones too) or by name. */
int
sched_server_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ServerRef *q = (const Yun__ServerRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    r = inst_lookup(call, txn, q->server, &i);
    if (r < 0)
        return r;
    return reply_inst(call, i);
}

/* --- server groups ------------------------------------------------------------------- */

static bool
group_visible(const struct sched_call *call, const Yun__ServerGroupRecord *g)
{
    return call->is_admin ||
           (*caller_project(call) && strcmp(g->project, caller_project(call)) == 0);
}

struct group_scan {
    const struct sched_call *call;
    const char *name;              /* find: this name in the caller's project */
    const char *project;           /* count: this project's */
    Yun__ServerGroupRecord **v;    /* collect: the visible ones */
    size_t n, cap;
    size_t matches;
    char id[YUN_UUID_STR_SIZE];
};

static int
scan_group(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct group_scan *gs = data;
    Yun__ServerGroupRecord *g = yun__server_group_record__unpack(NULL, val_size, val);
    if (!g)
        return -EBADMSG;
    int r = 0;
    if (gs->name) {
        if (strcmp(g->name, gs->name) == 0 &&
            strcmp(g->project, caller_project(gs->call)) == 0 && gs->matches++ == 0)
            snprintf(gs->id, sizeof gs->id, "%s", g->id);
    } else if (gs->project) {
        if (strcmp(g->project, gs->project) == 0)
            gs->matches++;
    } else if (group_visible(gs->call, g)) {
        if (gs->n == gs->cap) {
            size_t cap = gs->cap ? 2 * gs->cap : 16;
            Yun__ServerGroupRecord **p = realloc(gs->v, cap * sizeof *p);
            if (!p) {
                group_free(g);
                return -ENOMEM;
            }
            gs->v = p;
            gs->cap = cap;
        }
        gs->v[gs->n++] = TAKE_PTR(g);
    }
    group_free(g);
    return r;
}

static void
group_scan_done(struct group_scan *gs)
{
    for (size_t k = 0; k < gs->n; k++)
        group_free(gs->v[k]);
    free(gs->v);
}

/* Finds group 'ref': an id the caller can see, or the name of one group
 * of the caller's project. States the call's error on failure. */
static int
group_lookup(struct sched_call *call, struct yun_txn *txn, const char *ref,
             Yun__ServerGroupRecord **ret)
{
    if (!*ref || strlen(ref) > REF_MAX)
        return sched_call_error(call, -ENOENT, "Server group '%.255s' not found.", ref);
    if (yun_uuid_is_valid(ref)) {
        Yun__ServerGroupRecord *g = NULL;
        int r = load_group(txn, ref, &g);
        if (r < 0 && r != -ENOENT)
            return r;
        if (r >= 0 && group_visible(call, g)) {
            *ret = g;
            return 0;
        }
        group_free(g);
        if (r >= 0)
            return sched_call_error(call, -ENOENT, "Server group '%s' not found.", ref);
    }
    _cleanup_(group_scan_done) struct group_scan gs = { .call = call, .name = ref };
    int r = yun_txn_iterate(txn, SCHED_DB_SERVER_GROUPS, NULL, 0, scan_group, &gs);
    if (r < 0)
        return r;
    if (gs.matches == 0)
        return sched_call_error(call, -ENOENT, "Server group '%.255s' not found.", ref);
    if (gs.matches > 1)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "%zu server groups are named '%s'; give the id of the one you "
                                "mean.", gs.matches, ref);
    return load_group(txn, gs.id, ret);
}

static int
reply_group(struct sched_call *call, const Yun__ServerGroupRecord *g)
{
    Yun__ServerGroupReply y = YUN__SERVER_GROUP_REPLY__INIT;
    y.group = (Yun__ServerGroupRecord *)g;
    return sched_call_reply(call, &y.base);
}

static int
group_create(struct sched_call *call, const Yun__ServerGroupCreateRequest *q)
{
    if (!yun_text_is_valid(q->name, NAME_MAX_LEN))
        return sched_call_error(call, YUN_E_INVALID,
                                "Server group name '%.64s' is not 1 to %d bytes of text without "
                                "control characters.", q->name, NAME_MAX_LEN);
    enum sched_group_policy p = sched_group_policy_from_string(q->policy);
    if (p <= SCHED_GROUP_NONE)
        return sched_call_error(call, YUN_E_INVALID,
                                "Policy '%.32s' is not one of affinity, anti-affinity, "
                                "soft-affinity or soft-anti-affinity.", q->policy);
    if (!yun_name_is_valid(caller_project(call), PROJECT_MAX))
        return sched_call_error(call, YUN_E_DENIED, "Only a project's members create groups.");
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_(group_scan_done) struct group_scan gs = {
        .call = call, .project = caller_project(call),
    };
    r = yun_txn_iterate(txn, SCHED_DB_SERVER_GROUPS, NULL, 0, scan_group, &gs);
    if (r < 0)
        return r;
    if (gs.matches >= GROUPS_PER_PROJECT_MAX)
        return sched_call_error(call, -EDQUOT, "Project '%s' has %zu server groups, the most "
                                "allowed.", caller_project(call), gs.matches);
    char id[YUN_UUID_STR_SIZE];
    r = yun_uuid_new(id);
    if (r < 0)
        return r;
    Yun__ServerGroupRecord g = YUN__SERVER_GROUP_RECORD__INIT;
    g.id = id;
    g.name = q->name;
    g.project = (char *)caller_project(call);
    g.policy = (char *)sched_group_policy_to_string(p);
    g.created_us = yun_wall_us();
    r = yun_txn_put_msg(txn, SCHED_DB_SERVER_GROUPS, id, &g.base);
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "server_group.create", id, NULL);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "server group created group=%s name=\"%s\" policy=%s",
            id, g.name, g.policy);
    return reply_group(call, &g);
}

/* OP_SERVER_GROUP_CREATE: a group of the caller's project with a policy. */
int
sched_server_group_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ServerGroupCreateRequest *q = (const Yun__ServerGroupCreateRequest *)req;
    return sched_compute_audit_end(call, "server_group.create", q->name, group_create(call, q));
}

static int
compare_groups(const void *pa, const void *pb)
{
    const Yun__ServerGroupRecord *a = *(Yun__ServerGroupRecord *const *)pa;
    const Yun__ServerGroupRecord *b = *(Yun__ServerGroupRecord *const *)pb;
    int c = strcmp(a->name, b->name);
    return c ? c : strcmp(a->id, b->id);
}

/* OP_SERVER_GROUP_LIST: the caller's project's groups (admins: all). */
int
sched_server_group_list(struct sched_call *call, const ProtobufCMessage *req)
{
    _cleanup_(group_scan_done) struct group_scan gs = { .call = call };
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        int r = yun_txn_begin(call->s->store, false, &txn);
        if (r < 0)
            return r;
        r = yun_txn_iterate(txn, SCHED_DB_SERVER_GROUPS, NULL, 0, scan_group, &gs);
        if (r < 0)
            return r;
    }
    if (gs.n > 1)
        qsort(gs.v, gs.n, sizeof *gs.v, compare_groups);
    Yun__ServerGroupListReply y = YUN__SERVER_GROUP_LIST_REPLY__INIT;
    y.groups = gs.v;
    y.n_groups = gs.n;
    return sched_call_reply(call, &y.base);
}

/* OP_SERVER_GROUP_SHOW: one group by id or name. */
int
sched_server_group_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ServerGroupRef *q = (const Yun__ServerGroupRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(group_freep) Yun__ServerGroupRecord *g = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    r = group_lookup(call, txn, q->group, &g);
    if (r < 0)
        return r;
    return reply_group(call, g);
}

static int
group_delete(struct sched_call *call, const Yun__ServerGroupRef *q)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(group_freep) Yun__ServerGroupRecord *g = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = group_lookup(call, txn, q->group, &g);
    if (r < 0)
        return r;
    if (call->project && strcmp(g->project, caller_project(call)) != 0 && !call->is_admin)
        return sched_call_error(call, -ENOENT, "Server group '%s' not found.", q->group);
    r = yun_txn_del(txn, SCHED_DB_SERVER_GROUPS, g->id, strlen(g->id));
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "server_group.delete", g->id, NULL);
    if (r < 0)
        return r;
    log_req(YUN_LOG_INFO, call->req, 0, "server group deleted group=%s", g->id);
    return reply_group(call, g);
}

/* OP_SERVER_GROUP_DELETE: the group goes; its members stay, with no
 * policy from then on (as in Nova). */
int
sched_server_group_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__ServerGroupRef *q = (const Yun__ServerGroupRef *)req;
    return sched_compute_audit_end(call, "server_group.delete", q->group, group_delete(call, q));
}

/* --- start-up, cron, teardown -------------------------------------------------------- */

int
sched_compute_placement_config(const struct sched *s, struct sched_placement_config *ret)
{
    sched_placement_config_init(ret);
    ret->cpu_allocation_ratio = s->cfg.cpu_allocation_ratio;
    ret->ram_allocation_ratio = s->cfg.ram_allocation_ratio;
    ret->disk_allocation_ratio = s->cfg.disk_allocation_ratio;
    ret->reserved_host_memory_mb = s->cfg.reserved_host_memory_mb;
    const char *w = s->cfg.weigher ? s->cfg.weigher : "spread";
    if (strcmp(w, "spread") == 0)
        ret->ram_weight_multiplier = 1.0;
    else if (strcmp(w, "pack") == 0)
        ret->ram_weight_multiplier = -1.0;
    else
        return YUN_E_CONFIG;
    return sched_placement_config_check(ret) < 0 ? YUN_E_CONFIG : 0;
}

struct claim_ref {
    char id[YUN_UUID_STR_SIZE];
    char host[HOST_ID_MAX + 1];
};

struct claim_refs {
    struct claim_ref *v;
    size_t n, cap;
};

static int
collect_claim(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct claim_refs *l = data;
    _cleanup_(claim_freep) Yun__Claim *c = yun__claim__unpack(NULL, val_size, val);
    if (!c)
        return -EBADMSG;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        struct claim_ref *p = realloc(l->v, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        l->v = p;
        l->cap = cap;
    }
    snprintf(l->v[l->n].id, sizeof l->v[l->n].id, "%s", c->instance_id);
    snprintf(l->v[l->n].host, sizeof l->v[l->n].host, "%s", c->host_id);
    l->n++;
    return 0;
}

static int
collect_all(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct inst_array *a = data;
    Yun__InstanceRecord *i = yun__instance_record__unpack(NULL, val_size, val);
    if (!i)
        return -EBADMSG;
    Yun__InstanceRecord **p = realloc(a->v, (a->n + 1) * sizeof *p);
    if (!p) {
        inst_free(i);
        return -ENOMEM;
    }
    a->v = p;
    a->v[a->n++] = i;
    return 0;
}

static bool
task_awaits_agent(const char *task)
{
    return strcmp(task, T_SCHEDULING) == 0 || strcmp(task, T_SPAWNING) == 0 ||
           strcmp(task, T_REBUILDING) == 0 || strcmp(task, T_REBUILD_SPAWNING) == 0 ||
           strcmp(task, T_DELETING) == 0;
}

/* Claims and instances back into agreement after a stop or a crash (see
 * compute.h); tasks other than spawns, rebuilds and deletes end. */
static int
compute_recover(struct sched *s)
{
    struct sched_placement_config pcfg;
    int r = sched_compute_placement_config(s, &pcfg);
    if (r < 0)
        return r;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    struct claim_refs claims = { 0 };
    _cleanup_(inst_array_done) struct inst_array all = { 0 };
    _cleanup_(id_list_done) struct id_list touched = { 0 };
    size_t released = 0, reclaimed = 0, ended = 0;
    r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = yun_txn_iterate(txn, "claims", NULL, 0, collect_claim, &claims);
    for (size_t k = 0; r >= 0 && k < claims.n; k++) {
        _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
        r = load_inst(txn, claims.v[k].id, &i);
        if (r < 0 && r != -ENOENT)
            break;
        if (r >= 0 && is_live(i) && strcmp(i->host_id, claims.v[k].host) == 0) {
            r = 0;
            continue;
        }
        r = sched_placement_release_txn(txn, claims.v[k].id, NULL);
        if (r == -ENOENT)
            r = 0;
        if (r >= 0)
            r = id_list_push(&touched, claims.v[k].host);
        released++;
        log_warn("claim without a live instance released vm=%s host=%s", claims.v[k].id,
                 claims.v[k].host);
    }
    free(claims.v);
    if (r >= 0)
        r = yun_txn_iterate(txn, SCHED_DB_INSTANCES, NULL, 0, collect_all, &all);
    for (size_t k = 0; r >= 0 && k < all.n; k++) {
        Yun__InstanceRecord *i = all.v[k];
        if (!is_live(i))
            continue;
        bool changed = false;
        if (*i->host_id && i->flavor) {
            r = yun_txn_get(txn, "claims", i->id, strlen(i->id), NULL, NULL);
            if (r == -ENOENT) {
                struct sched_placement_request req;
                memset(&req, 0, sizeof req);
                sched_placement_request_set_flavor(&req, i->flavor);
                Yun__Claim c = YUN__CLAIM__INIT;
                c.instance_id = i->id;
                c.host_id = i->host_id;
                c.vcpus = req.vcpus;
                c.ram_mb = req.ram_mb;
                c.disk_gb = req.disk_gb;
                r = sched_placement_claim_txn(txn, &pcfg, &c);
                if (r < 0)
                    log_err_errno(r, "live instance without a claim, cannot claim again vm=%s "
                                  "host=%s", i->id, i->host_id);
                else
                    log_warn("live instance without a claim claimed again vm=%s host=%s",
                             i->id, i->host_id);
                r = id_list_push(&touched, i->host_id);
                reclaimed++;
            }
        }
        if (r >= 0 && *i->snapshot_image_id)
            r = sched_image_snapshot_kill_txn(s, txn, i->snapshot_image_id, -ECANCELED,
                                              "The scheduler restarted during the server's "
                                              "snapshot.");
        if (r >= 0 && *i->task_state && !task_awaits_agent(i->task_state)) {
            r = task_end(i, -ECANCELED, "The scheduler restarted before the agent answered; "
                                        "the state is what its events say.");
            changed = true;
            ended++;
        }
        if (r >= 0 && changed)
            r = put_inst(txn, i);
    }
    if (r >= 0 && (released || reclaimed || ended)) {
        char detail[160];
        snprintf(detail, sizeof detail, "%zu claims released, %zu claimed again, %zu tasks "
                 "ended.", released, reclaimed, ended);
        r = sched_audit_system(s, txn, "compute.recover", "", 0, detail);
    }
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    if (s->placement && touched.n) {
        r = yun_txn_begin(s->store, false, &txn);
        for (size_t k = 0; r >= 0 && k < touched.n; k++) {
            int e = sched_placement_sync_host_txn(s->placement, txn, touched.v[k]);
            if (e < 0 && e != -ENOENT)
                log_warn_errno(e, "cannot reload the usage of host=%s", touched.v[k]);
        }
    }
    log_info("compute recovered claims_released=%zu claimed_again=%zu tasks_ended=%zu", released,
             reclaimed, ended);
    return 0;
}

static const char *
host_az(const Yun__HostRecord *h, void *data)
{
    return NULL;
}

int
sched_compute_init(struct sched *s)
{
    s->compute = calloc(1, sizeof *s->compute);
    if (!s->compute)
        return -ENOMEM;
    s->compute->agents = sched_agents_new(s);
    if (!s->compute->agents)
        return -ENOMEM;
    sched_network_sync_init(s);
    int r;
    if (!s->placement) {
        struct sched_placement_config pcfg;
        r = sched_compute_placement_config(s, &pcfg);
        if (r < 0)
            return log_err_errno(r, "invalid placement settings in [compute]");
        r = sched_placement_new(&pcfg, &s->placement);
        if (r < 0)
            return log_err_errno(r, "cannot create the placement index");
        s->compute->owns_placement = true;
    }
    r = compute_recover(s);
    if (r < 0)
        return log_err_errno(r, "cannot recover the instances");
    if (s->compute->owns_placement) {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        r = yun_txn_begin(s->store, false, &txn);
        if (r >= 0)
            r = sched_placement_load(s->placement, txn, host_az, NULL);
        if (r < 0)
            return log_err_errno(r, "cannot load the placement index");
        log_info("placement index loaded hosts=%zu", sched_placement_n_hosts(s->placement));
    }
    return 0;
}

void
sched_compute_done(struct sched *s)
{
    if (!s->compute)
        return;
    s->compute->agents = sched_agents_free(s->compute->agents);
    sched_network_sync_done(s);
    if (s->compute->owns_placement)
        s->placement = sched_placement_free(s->placement);
    free(s->compute);
    s->compute = NULL;
}

/* Sends again what a restart left unacknowledged: spawns and rebuilds
 * (BUILD/scheduling, REBUILD/rebuilding: the agent's spawn is idempotent
 * by instance id) and deletes (destroy is idempotent). */
static void
compute_resend(struct sched *s)
{
    _cleanup_(inst_array_done) struct inst_array all = { 0 };
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        int r = yun_txn_begin(s->store, false, &txn);
        if (r >= 0)
            r = yun_txn_iterate(txn, SCHED_DB_INSTANCES, NULL, 0, collect_all, &all);
        if (r < 0)
            return (void)log_err_errno(r, "cannot read the instances to send again");
    }
    size_t sent = 0;
    for (size_t k = 0; k < all.n; k++) {
        const Yun__InstanceRecord *i = all.v[k];
        if (!is_live(i) || !*i->host_id || sched_agent_busy(s, i->host_id, i->id))
            continue;
        if ((strcmp(i->status, ST_BUILD) == 0 && strcmp(i->task_state, T_SCHEDULING) == 0) ||
            (strcmp(i->status, ST_REBUILD) == 0 && strcmp(i->task_state, T_REBUILDING) == 0)) {
            spawn_send(s, i, &system_actor);
            sent++;
        } else if (strcmp(i->task_state, T_DELETING) == 0) {
            destroy_send(s, i, &system_actor);
            sent++;
        }
    }
    if (sent)
        log_notice("requests sent again after a restart count=%zu", sent);
}

enum sweep_kind { SWEEP_SPAWN, SWEEP_TASK, SWEEP_PURGE, SWEEP_SNAPSHOT };

struct sweep_item {
    enum sweep_kind kind;
    char id[YUN_UUID_STR_SIZE];
    char host[HOST_ID_MAX + 1];
    uint32_t attempts;
    char task[32];
    char image[YUN_UUID_STR_SIZE];  /* SWEEP_SNAPSHOT: the snapshot's image */
};

struct sweep {
    const struct sched *s;
    uint64_t now_us;
    struct sweep_item *v;
    size_t n, cap;
};

static int
sweep_scan(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct sweep *sw = data;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = yun__instance_record__unpack(NULL, val_size,
                                                                                 val);
    if (!i)
        return -EBADMSG;
    const struct sched_config *cfg = &sw->s->cfg;
    uint64_t age = i->task_started_us && sw->now_us > i->task_started_us
                       ? sw->now_us - i->task_started_us : 0;
    enum sweep_kind kind;
    if (!is_live(i)) {
        if (sw->now_us < i->deleted_us ||
            sw->now_us - i->deleted_us < (uint64_t)cfg->compute_deleted_retention_s * 1000000u)
            return 0;
        kind = SWEEP_PURGE;
    } else if (strcmp(i->status, ST_BUILD) == 0 || strcmp(i->status, ST_REBUILD) == 0) {
        if (age <= (uint64_t)cfg->compute_spawn_timeout_s * 1000000u)
            return 0;
        kind = SWEEP_SPAWN;
    } else if (*i->task_state) {
        bool snap = strcmp(i->task_state, T_IMAGE_SNAPSHOT) == 0;
        uint64_t limit_s = snap ? SNAPSHOT_TIMEOUT_S : cfg->compute_action_timeout_s;
        if (age <= limit_s * 1000000u && !snap)
            return 0;
        /* A snapshot whose image died (its upload stalled and was
         * reaped) ends before its timeout. */
        kind = age <= limit_s * 1000000u ? SWEEP_SNAPSHOT : SWEEP_TASK;
    } else {
        return 0;
    }
    if (sw->n == sw->cap) {
        size_t cap = sw->cap ? 2 * sw->cap : 16;
        struct sweep_item *p = realloc(sw->v, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        sw->v = p;
        sw->cap = cap;
    }
    struct sweep_item *it = &sw->v[sw->n++];
    it->kind = kind;
    snprintf(it->id, sizeof it->id, "%s", i->id);
    snprintf(it->host, sizeof it->host, "%s", i->host_id);
    it->attempts = i->attempts;
    snprintf(it->task, sizeof it->task, "%s", i->task_state);
    snprintf(it->image, sizeof it->image, "%s", i->snapshot_image_id);
    return 0;
}

/* A task that timed out: it ends with a fault (a delete: deleted here). */
static void
sweep_task(struct sched *s, const struct sweep_item *it)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    _cleanup_(claim_freep) Yun__Claim *claim = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_inst(txn, it->id, &i);
    if (r < 0 || !is_live(i) || strcmp(i->task_state, it->task) != 0)
        return;
    char msg[256];
    char snap[YUN_UUID_STR_SIZE];
    snprintf(snap, sizeof snap, "%s", i->snapshot_image_id);
    if (strcmp(it->task, T_DELETING) == 0) {
        snprintf(msg, sizeof msg, "Deleted here: the agent did not confirm within %u s; its "
                 "start-up sync removes what is left.", s->cfg.compute_action_timeout_s);
        r = local_delete(s, txn, i, msg, &claim);
    } else {
        snprintf(msg, sizeof msg, "Task '%s' timed out: no event from host '%s' within %u s.",
                 it->task, i->host_name, *snap ? SNAPSHOT_TIMEOUT_S
                                               : s->cfg.compute_action_timeout_s);
        r = set_fault(i, -ETIMEDOUT, msg, i->host_name);
        if (r >= 0)
            r = task_end(i, -ETIMEDOUT, msg);
        if (r >= 0)
            r = put_inst(txn, i);
    }
    if (r >= 0)
        r = sched_audit_system(s, txn, "server.timeout", it->id, -ETIMEDOUT, msg);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return (void)log_err_errno(r, "cannot end a timed-out task vm=%s", it->id);
    release_claim_index(s, claim);
    push_if_deleted(s, i);
    if (*snap)
        snapshot_abandon(s, snap, -ETIMEDOUT, msg);
    log_warn("task timed out vm=%s task=%s", it->id, it->task);
}

static void
sweep_purge(struct sched *s, const struct sweep_item *it)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(inst_freep) Yun__InstanceRecord *i = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r >= 0)
        r = load_inst(txn, it->id, &i);
    if (r < 0 || is_live(i))
        return;
    r = yun_txn_del(txn, SCHED_DB_INSTANCES, it->id, strlen(it->id));
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        log_err_errno(r, "cannot purge a deleted server vm=%s", it->id);
    else
        log_debug("deleted server purged vm=%s", it->id);
}

void
sched_compute_sweep(struct sched *s, uint64_t now_us)
{
    struct sweep sw = { .s = s, .now_us = now_us };
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        int r = yun_txn_begin(s->store, false, &txn);
        if (r >= 0)
            r = yun_txn_iterate(txn, SCHED_DB_INSTANCES, NULL, 0, sweep_scan, &sw);
        if (r < 0) {
            free(sw.v);
            return (void)log_err_errno(r, "cannot scan the instances");
        }
    }
    for (size_t k = 0; k < sw.n; k++) {
        const struct sweep_item *it = &sw.v[k];
        if (it->kind == SWEEP_SPAWN) {
            char msg[128];
            snprintf(msg, sizeof msg, "it did not finish within %u s.",
                     s->cfg.compute_spawn_timeout_s);
            spawn_failed(s, it->id, it->host, it->attempts, -ETIMEDOUT, msg, &system_actor,
                         true);
        } else if (it->kind == SWEEP_SNAPSHOT) {
            char status[32] = "gone";
            int r = *it->image ? sched_image_snapshot_status(s, it->image, status, sizeof status)
                               : -ENOENT;
            if ((r < 0 && r != -ENOENT) || strcmp(status, "queued") == 0 ||
                strcmp(status, "saving") == 0)
                continue;
            char msg[256];
            if (strcmp(status, "active") == 0)
                snprintf(msg, sizeof msg, "Image '%s' is active.", it->image);
            else
                snprintf(msg, sizeof msg, "The snapshot's image '%s' is %s: its upload "
                         "stopped.", it->image, status);
            snapshot_end(s, it->id, it->host, it->image, strcmp(status, "active") == 0 ? 0 : -EIO,
                         msg, &system_actor);
        } else if (it->kind == SWEEP_TASK) {
            sweep_task(s, it);
        } else {
            sweep_purge(s, it);
        }
    }
    free(sw.v);
}

void
sched_compute_cron(struct sched *s)
{
    struct sched_compute *c = s->compute;
    if (!c)
        return;
    if (!c->recovered) {
        c->recovered = true;
        compute_resend(s);
    }
    int64_t now = yun_now_ms();
    if (now < c->next_sweep_ms)
        return;
    c->next_sweep_ms = now + (int64_t)s->cfg.compute_sweep_interval_s * 1000;
    sched_compute_sweep(s, yun_wall_us());
}
