/* SPDX-License-Identifier: Apache-2.0
 * vm.c: the libvirt driver of the agent's instances; vm.h has the contract.
 *
 * Each instance is a struct vm in a hash table, with its record as last
 * written (vm->rec) and a state: building (spawn or rebuild in progress),
 * active, deleting. The work on an instance is a chain of steps, each
 * started from the loop and ending on the loop:
 *
 *   spawn:   record (building) -> image acquires; from the base's: JOB_DISK
 *            (directory, overlay volume) -> when all are done, JOB_SPAWN
 *            (define, create) -> "spawned" -> record (active)
 *            a failure anywhere -> JOB_DESTROY (clean-up) -> releases ->
 *            record deleted -> "spawn_failed"
 *   destroy: record (deleting) -> [the running step ends] -> JOB_DESTROY ->
 *            releases -> record deleted -> "deleted"
 *   rebuild: record (building) -> JOB_DESTROY (domain and overlay only) ->
 *            releases -> record (the new spawn) -> as spawn
 *   action:  JOB_ACTION -> the command's answer; stop and soft reboot then
 *            wait for the guest until the shutdown timeout (then JOB_ACTION
 *            "poweroff" / "reset")
 *   snapshot: JOB_SNAPSHOT (a running guest paused, its disk chain copied
 *            by qemu-img into one qcow2 without backing file under
 *            <state_dir>/snapshots, the guest resumed) -> the upload
 *            (snapshot-upload.c) -> "snapshot_done" / "snapshot_failed";
 *            the file goes in every case
 *
 * At most one job runs per instance (vm->job); a destroy asked meanwhile
 * is noted (destroy_wanted) and starts when the step ends. Jobs run on the
 * worker pool and touch only their own copies (paths, XML) and libvirt's
 * thread-safe objects; their outcome is applied by their done callback on
 * the loop.
 *
 * Power: every lifecycle or reboot event of an active instance with no
 * work in progress schedules a power check (vm->check_at on the
 * instance's timer); a STOPPED event schedules it 'debounce_ms' later, and
 * a STARTED or reboot event seen before then marks a reboot. The check
 * reads libvirt's state and reports it if it differs from the one last
 * reported (or "rebooted" when a reboot was seen). Every job's end
 * schedules a check too, so nothing an event said during the job is
 * lost. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>

#include "agent.h"
#include "bus.h"
#include "cleanup.h"
#include "envelope.h"
#include "err.h"
#include "image-cache.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "store.h"
#include "util.h"
#include "host-network.h"
#include "snapshot-upload.h"
#include "vm-xml.h"
#include "vm.h"

YUN_LOG_MODULE("agent.vm");

#define VM_BUCKETS 256
#define DEBOUNCE_MS_DEFAULT 1000
#define REBOOT_COALESCE_MS 500  /* QEMU resets a rebooting guest several times */
#define THREADS_DEFAULT 4
#define MSG_MAX 1024
#define DOMAIN_NAME_MAX (sizeof AGENT_VM_DOMAIN_PREFIX + YUN_UUID_STR_SIZE)
#define DIR_MODE 0711           /* QEMU's user traverses, nobody lists */
#define CMDLINE_MAX 4096
#define NAME_MAX_BYTES 255
#define CONSOLE_FILE "console.log"
#define DISK_SUFFIX ".qcow2"
#define SNAPSHOT_DIR "snapshots"
/* qemu-img reads a disk a tenant controlled: it runs with bounded memory
 * and CPU time (as Nova's and Glance's qemu-img calls do). */
#define QEMU_IMG_AS_MAX (1ull << 30)
#define QEMU_IMG_CPU_S 3600

enum vm_state {
    VM_BUILDING,
    VM_ACTIVE,
    VM_DELETING,
    _VM_STATE_MAX,
    _VM_STATE_INVALID = -EINVAL,
};

static const char *const vm_state_table[_VM_STATE_MAX] = {
    [VM_BUILDING] = "building",
    [VM_ACTIVE] = "active",
    [VM_DELETING] = "deleting",
};

static const char *const power_table[_AGENT_VM_POWER_MAX] = {
    [AGENT_VM_POWER_NOSTATE] = "nostate",
    [AGENT_VM_POWER_RUNNING] = "running",
    [AGENT_VM_POWER_SHUTOFF] = "shutoff",
    [AGENT_VM_POWER_PAUSED] = "paused",
    [AGENT_VM_POWER_SUSPENDED] = "suspended",
    [AGENT_VM_POWER_CRASHED] = "crashed",
};

enum job_kind {
    JOB_DISK,
    JOB_SPAWN,
    JOB_DESTROY,
    JOB_ACTION,
    JOB_SNAPSHOT,
};

/* What a destroy keeps and what it reports. */
enum destroy_mode {
    DESTROY_DELETE,       /* everything; "deleted" */
    DESTROY_SPAWN_FAILED, /* everything; "spawn_failed" with the spawn's fault */
    DESTROY_QUIET,        /* everything; no event (a spawn cut short by a restart) */
    DESTROY_REBUILD,      /* the domain and the overlay; the spawn goes on */
};

struct agent_vms;
struct vm;

/* One libvirt job. The worker reads the inputs and writes the outputs;
 * the rest belongs to the loop. */
struct job {
    struct agent_vms *v;
    char id[YUN_UUID_STR_SIZE];
    enum job_kind kind;
    /* inputs */
    virConnectPtr conn;         /* referenced */
    virStoragePoolPtr pool;     /* referenced */
    char domain[DOMAIN_NAME_MAX];
    char *xml;                  /* spawn, hard reboot: the domain XML */
    char *vol_name;
    char *disk_path;
    char *dir;
    char *console_log;
    char *base_path;
    char *base_format;
    uint64_t capacity;
    enum destroy_mode mode;
    char action[16];            /* start stop reboot pause ... poweroff reset */
    bool hard;
    char *snap_path;            /* snapshot: the file to make */
    /* outputs */
    int r;
    char msg[MSG_MAX];
    enum agent_vm_power power;
    bool has_domain;
    bool waits;                 /* stop / soft reboot: the guest was asked */
    double disk_ms, define_ms, start_ms;
    /* loop side */
    int64_t submitted_ms;
    agent_vm_done_fn done;
    void *done_data;
};

struct vm {
    struct vm *next;                     /* hash chain */
    struct agent_vms *v;
    char id[YUN_UUID_STR_SIZE];
    char domain[DOMAIN_NAME_MAX];
    Yun__AgentInstanceRecord *rec;       /* as last written; owned */
    enum vm_state state;
    char request_id[YUN_REQUEST_ID_MAX + 1]; /* of the spawn or destroy being served */
    int64_t spawn_started_ms;

    struct job *job;                     /* the job running for it */
    unsigned acquiring;                  /* image acquires outstanding */
    int acquire_error;
    char *acquire_msg;
    bool destroy_wanted;                 /* a destroy waits for the current step */
    char destroy_request_id[YUN_REQUEST_ID_MAX + 1];
    enum { DISK_NONE, DISK_MAKING, DISK_MADE } disk; /* the spawn's overlay */
    double disk_ms;                      /* how long making it took */
    Yun__AgentSpawnRequest *rebuild;     /* waits for the old disk to go */
    int fail_code;                       /* a failed spawn's fault */
    char *fail_msg;

    enum agent_vm_power reported;        /* last power state told the scheduler */
    bool vanished_reported;
    bool stopping;                       /* a stop waits for the guest */
    bool rebooting;                      /* a soft reboot waits for the guest */
    int64_t deadline_ms;                 /* of stopping / rebooting */
    bool stop_seen;                      /* a STOPPED event is being debounced */
    bool reboot_seen;                    /* a reboot happened since the last check */
    int64_t check_at;                    /* when the power check runs; -1: none */
    int timer;                           /* the check and deadline timer; -1 */
    bool snapshotting;                   /* a snapshot's copy or upload runs */
    char snap_image[YUN_UUID_STR_SIZE];  /* its image */
    char snap_request_id[YUN_REQUEST_ID_MAX + 1];
};

/* A snapshot being uploaded: it may outlive its instance (a delete). */
struct snap_upload {
    struct snap_upload *next;
    struct agent_vms *v;
    char id[YUN_UUID_STR_SIZE];
    char image[YUN_UUID_STR_SIZE];
    char request_id[YUN_REQUEST_ID_MAX + 1];
    char *path;
};

struct agent_vms {
    struct yun_loop *loop;
    struct yun_store *store;
    virConnectPtr conn;
    virStoragePoolPtr pool;
    struct agent_image_cache *images;
    struct yun_pool *workers;
    char *state_dir;
    char *instances_dir;
    char *pool_name;
    char *virt_type;
    char *arch;
    char *host_name;
    uint32_t shutdown_timeout_ms;
    uint32_t debounce_ms;
    agent_vm_event_fn event;
    void *event_data;

    struct vm *buckets[VM_BUCKETS];
    size_t n;
    size_t jobs;
    int cb_lifecycle;                    /* libvirt callback ids; -1 */
    int cb_reboot;
    size_t n_unknown;                    /* found at start */
    bool freeing;
    struct agent_snapshot_uploader *uploader; /* owned; NULL: no snapshots */
    char *snapshots_dir;
    struct snap_upload *uploads;
};

static void vm_check_soon(struct vm *vm, int64_t delay_ms);
static void vm_destroy_start(struct vm *vm, enum destroy_mode mode);
static void spawn_acquire(struct vm *vm);
static void spawn_fail(struct vm *vm, int code, const char *msg);

DEFINE_TRIVIAL_CLEANUP_FUNC(virDomainPtr, virDomainFree)
DEFINE_TRIVIAL_CLEANUP_FUNC(virStorageVolPtr, virStorageVolFree)
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlDocPtr, xmlFreeDoc)
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlXPathContextPtr, xmlXPathFreeContext)
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlXPathObjectPtr, xmlXPathFreeObject)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct agent_vms *, agent_vms_free)

/* --- small helpers ------------------------------------------------------ */

const char *
agent_vm_power_to_string(enum agent_vm_power p)
{
    return p >= 0 && p < _AGENT_VM_POWER_MAX ? power_table[p] : NULL;
}

enum agent_vm_power
agent_vm_power_from_string(const char *s)
{
    for (int i = 0; s && i < _AGENT_VM_POWER_MAX; i++)
        if (strcmp(power_table[i], s) == 0)
            return (enum agent_vm_power)i;
    return _AGENT_VM_POWER_INVALID;
}

static enum vm_state
vm_state_from_string(const char *s)
{
    for (int i = 0; s && i < _VM_STATE_MAX; i++)
        if (strcmp(vm_state_table[i], s) == 0)
            return (enum vm_state)i;
    return _VM_STATE_INVALID;
}

enum agent_vm_power
agent_vm_power_from_libvirt(int state, int reason, bool managed_save)
{
    switch (state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
    case VIR_DOMAIN_SHUTDOWN: /* still running while the guest shuts down */
        return AGENT_VM_POWER_RUNNING;
    case VIR_DOMAIN_PAUSED:
        return AGENT_VM_POWER_PAUSED;
    case VIR_DOMAIN_SHUTOFF:
        if (managed_save)
            return AGENT_VM_POWER_SUSPENDED;
        if (reason == VIR_DOMAIN_SHUTOFF_CRASHED)
            return AGENT_VM_POWER_CRASHED;
        return AGENT_VM_POWER_SHUTOFF;
    case VIR_DOMAIN_CRASHED:
        return AGENT_VM_POWER_CRASHED;
    case VIR_DOMAIN_PMSUSPENDED:
        return AGENT_VM_POWER_SUSPENDED;
    default:
        return AGENT_VM_POWER_NOSTATE;
    }
}

void
agent_vm_state_to_msg(const struct agent_vm_state *st, Yun__AgentInstanceState *ret)
{
    Yun__AgentInstanceState init = YUN__AGENT_INSTANCE_STATE__INIT;
    *ret = init;
    ret->instance_id = (char *)st->id;
    ret->power_state = (char *)agent_vm_power_to_string(st->power);
    ret->known = st->known;
    ret->has_domain = st->has_domain;
}

void
agent_vm_report_done(struct agent_vm_report *r)
{
    if (!r)
        return;
    free(r->states);
    for (size_t i = 0; i < r->n_unknown_domains; i++)
        free(r->unknown_domains[i]);
    free(r->unknown_domains);
    *r = (struct agent_vm_report){ 0 };
}

static double
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A deep copy of 'm' owned by the caller (protobuf_c_message_free_unpacked). */
static ProtobufCMessage *
msg_copy(const ProtobufCMessage *m)
{
    size_t size = protobuf_c_message_get_packed_size(m);
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    return protobuf_c_message_unpack(m->descriptor, NULL, size, buf);
}

/* Escapes 's' for an XML attribute or text. */
static char *
xml_escape(const char *s)
{
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += strchr("&<>'\"", *p) ? 6 : 1;
    char *out = malloc(n);
    if (!out)
        return NULL;
    char *o = out;
    for (const char *p = s; *p; p++) {
        const char *e = *p == '&' ? "&amp;" : *p == '<' ? "&lt;" : *p == '>' ? "&gt;"
                      : *p == '\'' ? "&apos;" : *p == '"' ? "&quot;" : NULL;
        if (e) {
            size_t l = strlen(e);
            memcpy(o, e, l);
            o += l;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

/* Ends 'msg' with a full stop unless it has one. */
static void
end_sentence(char *msg, size_t size)
{
    size_t len = strlen(msg);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        msg[--len] = '\0';
    if (len && msg[len - 1] != '.' && msg[len - 1] != '!' && len + 1 < size) {
        msg[len] = '.';
        msg[len + 1] = '\0';
    }
}

/* The error of the libvirt call that just failed on this thread, as a
 * sentence "<what>: <libvirt's words>." in 'msg', and as an errno. */
static int __attribute__((format(printf, 3, 4)))
lv_error(char *msg, size_t size, const char *fmt, ...)
{
    virErrorPtr e = virGetLastError();
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(msg, size, "%s: %s", what, e && e->message ? e->message : "libvirt gave no reason");
    end_sentence(msg, size);
    int code = e ? e->code : VIR_ERR_INTERNAL_ERROR;
    switch (code) {
    case VIR_ERR_NO_DOMAIN:
    case VIR_ERR_NO_STORAGE_VOL:
    case VIR_ERR_NO_STORAGE_POOL:
        return -ENOENT;
    case VIR_ERR_OPERATION_INVALID:
        return YUN_E_CONFLICT;
    case VIR_ERR_OPERATION_TIMEOUT:
        return -ETIMEDOUT;
    case VIR_ERR_NO_SUPPORT:
    case VIR_ERR_ARGUMENT_UNSUPPORTED:
        return -EOPNOTSUPP;
    default:
        return -EIO;
    }
}

static int
lv_last_code(void)
{
    virErrorPtr e = virGetLastError();
    return e ? e->code : VIR_ERR_OK;
}

/* Adds o+x (and g+x) to directory 'path' so that QEMU's user reaches the
 * files below it; it still cannot list it. */
static int
make_traversable(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if ((st.st_mode & 0011) == 0011)
        return 0;
    return chmod(path, (st.st_mode & 07777) | 0011) < 0 ? -errno : 0;
}

/* Reads a domain's power state (on any thread). */
static int
domain_power(virDomainPtr d, enum agent_vm_power *ret)
{
    int state = 0, reason = 0;
    if (virDomainGetState(d, &state, &reason, 0) < 0)
        return -EIO;
    bool saved = false;
    if (state == VIR_DOMAIN_SHUTOFF)
        saved = virDomainHasManagedSaveImage(d, 0) > 0;
    *ret = agent_vm_power_from_libvirt(state, reason, saved);
    return 0;
}

/* Whether 'name' is "yun-<uuid>": the id in '*ret_id'. */
static bool
domain_name_id(const char *name, const char **ret_id)
{
    size_t p = strlen(AGENT_VM_DOMAIN_PREFIX);
    if (strncmp(name, AGENT_VM_DOMAIN_PREFIX, p) != 0 || !yun_uuid_is_valid(name + p))
        return false;
    *ret_id = name + p;
    return true;
}

/* --- the table ------------------------------------------------------------ */

static size_t
bucket_of(const char *id)
{
    uint32_t h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 16777619u;
    return h % VM_BUCKETS;
}

static struct vm *
vm_find(const struct agent_vms *v, const char *id)
{
    for (struct vm *vm = v->buckets[bucket_of(id)]; vm; vm = vm->next)
        if (strcmp(vm->id, id) == 0)
            return vm;
    return NULL;
}

static struct vm *
vm_new(struct agent_vms *v, Yun__AgentInstanceRecord *rec)
{
    struct vm *vm = calloc(1, sizeof *vm);
    if (!vm)
        return NULL;
    vm->v = v;
    snprintf(vm->id, sizeof vm->id, "%s", rec->spawn->instance->id);
    snprintf(vm->domain, sizeof vm->domain, AGENT_VM_DOMAIN_PREFIX "%s", vm->id);
    vm->rec = rec;
    vm->state = vm_state_from_string(rec->state);
    if ((int)vm->state < 0)
        vm->state = VM_BUILDING;
    vm->check_at = -1;
    vm->timer = -1;
    size_t b = bucket_of(vm->id);
    vm->next = v->buckets[b];
    v->buckets[b] = vm;
    v->n++;
    return vm;
}

static void
vm_free(struct vm *vm)
{
    struct agent_vms *v = vm->v;
    for (struct vm **pp = &v->buckets[bucket_of(vm->id)]; *pp; pp = &(*pp)->next) {
        if (*pp == vm) {
            *pp = vm->next;
            v->n--;
            break;
        }
    }
    if (vm->timer >= 0)
        (void)yun_loop_remove_timer(v->loop, vm->timer);
    if (vm->rec)
        protobuf_c_message_free_unpacked(&vm->rec->base, NULL);
    if (vm->rebuild)
        protobuf_c_message_free_unpacked(&vm->rebuild->base, NULL);
    free(vm->acquire_msg);
    free(vm->fail_msg);
    free(vm);
}

/* Writes 'next' (which may borrow from vm->rec) as the instance's record
 * and keeps a copy of it in vm->rec. */
static int
vm_save(struct vm *vm, Yun__AgentInstanceRecord *next)
{
    struct agent_vms *v = vm->v;
    next->updated_us = yun_wall_us();
    ProtobufCMessage *copy = msg_copy(&next->base);
    if (!copy)
        return -ENOMEM;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(v->store, true, &txn);
    if (r >= 0)
        r = yun_txn_put_msg(txn, AGENT_VM_DB, vm->id, &next->base);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0) {
        protobuf_c_message_free_unpacked(copy, NULL);
        return log_err_errno(r, "cannot write the instance record vm=%s", vm->id);
    }
    if (vm->rec)
        protobuf_c_message_free_unpacked(&vm->rec->base, NULL);
    vm->rec = (Yun__AgentInstanceRecord *)copy;
    return 0;
}

static int
vm_set_state(struct vm *vm, enum vm_state state)
{
    Yun__AgentInstanceRecord next = *vm->rec;
    next.state = (char *)vm_state_table[state];
    int r = vm_save(vm, &next);
    if (r >= 0)
        vm->state = state;
    return r;
}

static int
record_delete(struct agent_vms *v, const char *id)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(v->store, true, &txn);
    if (r >= 0) {
        r = yun_txn_del(txn, AGENT_VM_DB, id, strlen(id));
        if (r == -ENOENT)
            r = 0;
    }
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    return r;
}

/* Replaces a string of an unpacked record (its strings are malloc'ed, or
 * protobuf-c's shared empty string, which is never freed). */
static int
rec_set(char **field, const char *value)
{
    char *copy = strdup(value ? value : "");
    if (!copy)
        return -ENOMEM;
    if (*field && *field != protobuf_c_empty_string)
        free(*field);
    *field = copy;
    return 0;
}

/* --- events out ----------------------------------------------------------- */

static void
vm_emit(struct vm *vm, const char *event, enum agent_vm_power power, int fault_code,
        const char *fault_msg, const char *request_id)
{
    struct agent_vms *v = vm->v;
    log_req(YUN_LOG_INFO, request_id && *request_id ? request_id : NULL, fault_code,
            "instance event vm=%s event=%s power=%s%s%s%s", vm->id, event,
            agent_vm_power_to_string(power), fault_msg ? " fault=\"" : "",
            fault_msg ? fault_msg : "", fault_msg ? "\"" : "");
    if (!v->event || v->freeing)
        return;
    Yun__InstanceEvent ev = YUN__INSTANCE_EVENT__INIT;
    Yun__InstanceFault fault = YUN__INSTANCE_FAULT__INIT;
    ev.instance_id = vm->id;
    ev.event = (char *)event;
    ev.power_state = (char *)agent_vm_power_to_string(power);
    ev.time_us = yun_wall_us();
    ev.request_id = (char *)(request_id ? request_id : "");
    if (fault_msg) {
        fault.code = fault_code;
        fault.message = (char *)fault_msg;
        fault.time_us = ev.time_us;
        fault.host = v->host_name;
        ev.fault = &fault;
    }
    v->event(&ev, v->event_data);
}

/* --- jobs ----------------------------------------------------------------- */

static void job_free(struct job *j);

static struct job *
job_new(struct vm *vm, enum job_kind kind)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->v = vm->v;
    j->kind = kind;
    snprintf(j->id, sizeof j->id, "%s", vm->id);
    snprintf(j->domain, sizeof j->domain, "%s", vm->domain);
    j->conn = vm->v->conn;
    virConnectRef(j->conn);
    j->pool = vm->v->pool;
    if (j->pool)
        virStoragePoolRef(j->pool);
    j->power = AGENT_VM_POWER_NOSTATE;
    const Yun__AgentInstanceRecord *rec = vm->rec;
    j->vol_name = strdup(rec->disk_volume);
    j->disk_path = strdup(rec->disk_path);
    j->dir = strdup(rec->dir);
    j->console_log = strdup(rec->console_log);
    j->base_path = strdup(rec->base_path);
    j->base_format = strdup(rec->base_format);
    if (!j->vol_name || !j->disk_path || !j->dir || !j->console_log || !j->base_path ||
        !j->base_format) {
        job_free(j);
        return NULL;
    }
    return j;
}

static void
job_free(struct job *j)
{
    if (!j)
        return;
    virConnectClose(j->conn);
    if (j->pool)
        virStoragePoolFree(j->pool);
    free(j->xml);
    free(j->vol_name);
    free(j->disk_path);
    free(j->dir);
    free(j->console_log);
    free(j->base_path);
    free(j->base_format);
    free(j->snap_path);
    free(j);
}

/* Worker: looks up the job's domain. NULL with r 0 when there is none. */
static virDomainPtr
job_domain(struct job *j, int *ret)
{
    *ret = 0;
    /* By UUID, the instance id: a domain that only has our name is not
     * ours (and defining ours then fails with libvirt's reason). */
    virDomainPtr d = virDomainLookupByUUIDString(j->conn, j->id);
    if (!d && lv_last_code() != VIR_ERR_NO_DOMAIN)
        *ret = lv_error(j->msg, sizeof j->msg, "Cannot look up domain '%s'", j->domain);
    return d;
}

/* Worker: the job's domain, which the work needs: NULL with the job's
 * error (-ENOENT when there is none) set. */
static virDomainPtr
job_domain_needed(struct job *j)
{
    int r;
    virDomainPtr d = job_domain(j, &r);
    if (!d) {
        if (r == 0) {
            snprintf(j->msg, sizeof j->msg, "The domain '%s' is gone from libvirt.", j->domain);
            r = -ENOENT;
        }
        j->r = r;
    }
    return d;
}

/* Worker: the job's outputs after the work: has_domain and power. */
static void
job_read_state(struct job *j)
{
    int r;
    _cleanup_(virDomainFreep) virDomainPtr d = job_domain(j, &r);
    j->has_domain = d != NULL;
    j->power = AGENT_VM_POWER_NOSTATE;
    if (d)
        (void)domain_power(d, &j->power);
}

int
agent_vm_disk_create(virStoragePoolPtr pool, const char *name, const char *base_path,
                     const char *base_format, uint64_t capacity, char *msg, size_t msg_size)
{
    _cleanup_free_ char *ename = xml_escape(name);
    _cleanup_free_ char *ebase = xml_escape(base_path);
    _cleanup_free_ char *eformat = xml_escape(base_format);
    _cleanup_free_ char *xml = NULL;
    if (!ename || !ebase || !eformat)
        return -ENOMEM;
    /* compat 1.1: libvirt's default (0.10) costs qemu-img several more
     * syncs. The backing file's format is stated: nothing probes it. */
    if (asprintf(&xml,
                 "<volume><name>%s</name>"
                 "<capacity unit='bytes'>%" PRIu64 "</capacity>"
                 "<target><format type='qcow2'/><compat>1.1</compat>"
                 "<permissions><mode>0600</mode></permissions></target>"
                 "<backingStore><path>%s</path><format type='%s'/></backingStore>"
                 "</volume>",
                 ename, capacity, ebase, eformat) < 0)
        return -ENOMEM;
    virStorageVolPtr vol = virStorageVolCreateXML(pool, xml, 0);
    if (!vol)
        return lv_error(msg, msg_size, "Cannot create the disk '%s' on '%s'", name, base_path);
    virStorageVolFree(vol);
    return 0;
}

/* Worker: deletes volume 'name' of the job's pool, or the file 'path'
 * when the pool does not list it (a volume the pool has not seen since
 * a restart). Absent is fine. */
static int
job_delete_volume(struct job *j, const char *name, const char *path, bool is_dir)
{
    if (j->pool) {
        _cleanup_(virStorageVolFreep) virStorageVolPtr vol =
            virStorageVolLookupByName(j->pool, name);
        if (vol) {
            if (virStorageVolDelete(vol, 0) < 0)
                return lv_error(j->msg, sizeof j->msg, "Cannot delete the volume '%s'", name);
            return 0;
        }
        if (lv_last_code() != VIR_ERR_NO_STORAGE_VOL)
            return lv_error(j->msg, sizeof j->msg, "Cannot look up the volume '%s'", name);
    }
    if ((is_dir ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT) {
        int r = -errno;
        snprintf(j->msg, sizeof j->msg, "Cannot delete '%s': %s.", path, strerror(-r));
        return r;
    }
    return 0;
}

static void
work_disk(struct job *j)
{
    if (mkdir(j->dir, DIR_MODE) < 0 && errno != EEXIST) {
        j->r = -errno;
        snprintf(j->msg, sizeof j->msg, "Cannot create the directory '%s': %s.", j->dir,
                 strerror(errno));
        return;
    }
    int r = make_traversable(j->dir);
    if (r < 0) {
        j->r = r;
        snprintf(j->msg, sizeof j->msg, "Cannot make '%s' reachable by QEMU: %s.", j->dir,
                 strerror(-r));
        return;
    }
    /* A disk left by an attempt that a crash cut short is ours to redo. */
    r = job_delete_volume(j, j->vol_name, j->disk_path, false);
    if (r < 0) {
        j->r = r;
        return;
    }
    double t0 = mono_ms();
    r = agent_vm_disk_create(j->pool, j->vol_name, j->base_path, j->base_format, j->capacity,
                             j->msg, sizeof j->msg);
    j->disk_ms = mono_ms() - t0;
    j->r = r;
}

static void
work_spawn(struct job *j)
{
    double t1 = mono_ms();
    _cleanup_(virDomainFreep) virDomainPtr d = virDomainDefineXML(j->conn, j->xml);
    double t2 = mono_ms();
    j->define_ms = t2 - t1;
    if (!d) {
        j->r = lv_error(j->msg, sizeof j->msg, "Cannot define the domain '%s'", j->domain);
        return;
    }
    if (virDomainIsActive(d) != 1 && virDomainCreate(d) < 0) {
        j->r = lv_error(j->msg, sizeof j->msg, "Cannot start the domain '%s'", j->domain);
        job_read_state(j);
        return;
    }
    j->start_ms = mono_ms() - t2;
    j->has_domain = true;
    (void)domain_power(d, &j->power);
}

/* Worker: destroys and undefines the job's domain, if any. */
static int
job_remove_domain(struct job *j)
{
    int r;
    _cleanup_(virDomainFreep) virDomainPtr d = job_domain(j, &r);
    if (!d)
        return r;
    if (virDomainIsActive(d) == 1 && virDomainDestroy(d) < 0 && virDomainIsActive(d) == 1)
        return lv_error(j->msg, sizeof j->msg, "Cannot power off the domain '%s'", j->domain);
    /* Not every driver knows every flag (the test driver refuses NVRAM):
     * fewer flags, then the managed save by hand. */
    static const unsigned flags[] = {
        VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_NVRAM |
            VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
        VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
        VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
    };
    for (size_t i = 0; i < ELEMENTSOF(flags); i++)
        if (virDomainUndefineFlags(d, flags[i]) == 0)
            return 0;
    if (virDomainHasManagedSaveImage(d, 0) > 0)
        (void)virDomainManagedSaveRemove(d, 0);
    if (virDomainUndefine(d) < 0 && lv_last_code() != VIR_ERR_NO_DOMAIN)
        return lv_error(j->msg, sizeof j->msg, "Cannot undefine the domain '%s'", j->domain);
    return 0;
}

static void
work_destroy(struct job *j)
{
    int r = job_remove_domain(j);
    if (r < 0) {
        j->r = r;
        j->has_domain = true;
        return;
    }
    r = job_delete_volume(j, j->vol_name, j->disk_path, false);
    if (r >= 0 && j->mode != DESTROY_REBUILD) {
        if (unlink(j->console_log) < 0 && errno != ENOENT) {
            r = -errno;
            snprintf(j->msg, sizeof j->msg, "Cannot delete '%s': %s.", j->console_log,
                     strerror(errno));
        }
        /* The pool lists the instance's directory as a volume once it has
         * seen it (at a refresh): delete it through the pool then. */
        const char *base = strrchr(j->dir, '/');
        if (r >= 0)
            r = job_delete_volume(j, base ? base + 1 : j->dir, j->dir, true);
    }
    j->r = r;
}

/* Worker: the actions. 'j->waits' tells the loop to wait for the guest. */
static int
action_run(struct job *j, virDomainPtr d)
{
    enum agent_vm_power p = AGENT_VM_POWER_NOSTATE;
    if (domain_power(d, &p) < 0)
        return lv_error(j->msg, sizeof j->msg, "Cannot read the state of '%s'", j->domain);
    const char *a = j->action;
    bool active = virDomainIsActive(d) == 1;

    if (strcmp(a, "start") == 0 || strcmp(a, "resume") == 0) {
        if (p == AGENT_VM_POWER_SUSPENDED && active) {
            if (virDomainPMWakeup(d, 0) < 0)
                return lv_error(j->msg, sizeof j->msg, "Cannot wake up '%s'", j->domain);
            return 0;
        }
        if (active)
            return 0;
        if (virDomainCreate(d) < 0)
            return lv_error(j->msg, sizeof j->msg, "Cannot start the domain '%s'", j->domain);
        return 0;
    }
    if (strcmp(a, "stop") == 0) {
        if (!active) {
            /* Stopping a suspended instance drops its saved memory: a start
             * boots it afresh, as after any stop. */
            if (virDomainHasManagedSaveImage(d, 0) > 0 && virDomainManagedSaveRemove(d, 0) < 0)
                return lv_error(j->msg, sizeof j->msg,
                                "Cannot drop the saved state of '%s'", j->domain);
            return 0;
        }
        /* A paused guest cannot answer ACPI: power it off (as Nova). */
        if (p == AGENT_VM_POWER_RUNNING && !j->hard) {
            if (virDomainShutdown(d) == 0) {
                j->waits = true;
                return 0;
            }
        }
        if (virDomainDestroy(d) < 0 && virDomainIsActive(d) == 1)
            return lv_error(j->msg, sizeof j->msg, "Cannot power off '%s'", j->domain);
        return 0;
    }
    if (strcmp(a, "poweroff") == 0) {
        if (active && virDomainDestroy(d) < 0 && virDomainIsActive(d) == 1)
            return lv_error(j->msg, sizeof j->msg, "Cannot power off '%s'", j->domain);
        return 0;
    }
    if (strcmp(a, "reboot") == 0 && !j->hard && p == AGENT_VM_POWER_RUNNING) {
        if (virDomainReboot(d, 0) == 0) {
            j->waits = true;
            return 0;
        }
        /* The guest cannot be asked: reboot it hard. */
    }
    if (strcmp(a, "reset") == 0 && active && p == AGENT_VM_POWER_RUNNING) {
        if (virDomainReset(d, 0) == 0)
            return 0;
    }
    if (strcmp(a, "reboot") == 0 || strcmp(a, "reset") == 0) {
        /* Hard: power off, define again from the record (a fresh
         * configuration, as Nova's hard reboot) without the saved
         * memory, start. */
        if (active && virDomainDestroy(d) < 0 && virDomainIsActive(d) == 1)
            return lv_error(j->msg, sizeof j->msg, "Cannot power off '%s'", j->domain);
        if (j->xml) {
            virDomainPtr nd = virDomainDefineXML(j->conn, j->xml);
            if (!nd)
                return lv_error(j->msg, sizeof j->msg, "Cannot define the domain '%s'",
                                j->domain);
            virDomainFree(nd);
        }
        if (virDomainHasManagedSaveImage(d, 0) > 0)
            (void)virDomainManagedSaveRemove(d, 0);
        if (virDomainCreate(d) < 0)
            return lv_error(j->msg, sizeof j->msg, "Cannot start the domain '%s'", j->domain);
        return 0;
    }
    if (strcmp(a, "pause") == 0) {
        if (p == AGENT_VM_POWER_PAUSED)
            return 0;
        if (virDomainSuspend(d) < 0)
            return lv_error(j->msg, sizeof j->msg, "Cannot pause '%s'", j->domain);
        return 0;
    }
    if (strcmp(a, "unpause") == 0) {
        if (p == AGENT_VM_POWER_SUSPENDED && active)
            return virDomainPMWakeup(d, 0) < 0
                       ? lv_error(j->msg, sizeof j->msg, "Cannot wake up '%s'", j->domain)
                       : 0;
        if (p != AGENT_VM_POWER_PAUSED)
            return 0;
        if (virDomainResume(d) < 0)
            return lv_error(j->msg, sizeof j->msg, "Cannot unpause '%s'", j->domain);
        return 0;
    }
    if (strcmp(a, "suspend") == 0) {
        if (p == AGENT_VM_POWER_SUSPENDED)
            return 0;
        if (!active) {
            snprintf(j->msg, sizeof j->msg, "The domain '%s' is not running; only a running "
                     "or paused instance can be suspended.", j->domain);
            return YUN_E_CONFLICT;
        }
        if (virDomainManagedSave(d, 0) < 0)
            return lv_error(j->msg, sizeof j->msg, "Cannot suspend '%s'", j->domain);
        return 0;
    }
    snprintf(j->msg, sizeof j->msg, "Action '%s' is not known.", a);
    return YUN_E_INVALID;
}

static void
work_action(struct job *j)
{
    _cleanup_(virDomainFreep) virDomainPtr d = job_domain_needed(j);
    if (!d)
        return;
    j->r = action_run(j, d);
    j->has_domain = true;
    (void)domain_power(d, &j->power);
}

/* Worker: runs 'argv' (qemu-img) with the limits above, stdin from
 * /dev/null, its output kept for the message. 0 when it exits 0. */
static int
run_limited(char *const argv[], char *msg, size_t msg_size)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        int r = -errno;
        snprintf(msg, msg_size, "Cannot run %s: %s.", argv[0], strerror(-r));
        return r;
    }
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls until exec. */
        struct rlimit as = { QEMU_IMG_AS_MAX, QEMU_IMG_AS_MAX };
        struct rlimit cpu = { QEMU_IMG_CPU_S, QEMU_IMG_CPU_S };
        if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(pfd[1], 1) < 0 || dup2(pfd[1], 2) < 0 ||
            setrlimit(RLIMIT_AS, &as) < 0 || setrlimit(RLIMIT_CPU, &cpu) < 0)
            _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    int r = pid < 0 ? -errno : 0;
    close(pfd[1]);
    if (null_fd >= 0)
        close(null_fd);
    char out[512];
    size_t n = 0;
    for (;;) {
        ssize_t k = read(pfd[0], out + n, n < sizeof out - 1 ? sizeof out - 1 - n : 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0 && n == sizeof out - 1) {
                char sink[512];
                while (read(pfd[0], sink, sizeof sink) > 0)
                    ;
            }
            break;
        }
        n += (size_t)k;
    }
    close(pfd[0]);
    out[n] = '\0';
    while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (out[i] == '\n')
            out[i] = ' ';
    if (r < 0) {
        snprintf(msg, msg_size, "Cannot run %s: %s.", argv[0], strerror(-r));
        return r;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            r = -errno;
            snprintf(msg, msg_size, "Cannot wait for %s: %s.", argv[0], strerror(-r));
            return r;
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFSIGNALED(status))
        snprintf(msg, msg_size, "%s was killed by signal %d (a limit of %llu MiB or %u s CPU "
                 "may have been reached)%s%s", argv[0], WTERMSIG(status),
                 QEMU_IMG_AS_MAX >> 20, QEMU_IMG_CPU_S, n ? ": " : ".", out);
    else
        snprintf(msg, msg_size, "%s failed (exit %d)%s%s", argv[0], WEXITSTATUS(status),
                 n ? ": " : ".", out);
    return -EIO;
}

/* Worker: the snapshot's copy. A running guest is paused for it (QEMU
 * flushes its writes when it stops), so that the copy is consistent,
 * and resumed after, whatever the copy did. The chain is read with the
 * formats it states (-f qcow2 for the overlay, whose backing format is
 * recorded in it): nothing is probed. */
static void
work_snapshot(struct job *j)
{
    _cleanup_(virDomainFreep) virDomainPtr d = job_domain_needed(j);
    if (!d)
        return;
    enum agent_vm_power p = AGENT_VM_POWER_NOSTATE;
    (void)domain_power(d, &p);
    bool paused = false;
    if (p == AGENT_VM_POWER_RUNNING && virDomainIsActive(d) == 1) {
        if (virDomainSuspend(d) < 0) {
            j->r = lv_error(j->msg, sizeof j->msg, "Cannot pause '%s' for its snapshot",
                            j->domain);
            return;
        }
        paused = true;
    }
    (void)unlink(j->snap_path);
    /* -U: QEMU still holds the image's lock while the guest is paused;
     * the read is consistent because nothing writes meanwhile. */
    char *const argv[] = {
        (char *)"qemu-img", (char *)"convert", (char *)"-U", (char *)"-f", (char *)"qcow2",
        (char *)"-O", (char *)"qcow2", j->disk_path, j->snap_path, NULL,
    };
    double t0 = mono_ms();
    j->r = run_limited(argv, j->msg, sizeof j->msg);
    j->disk_ms = mono_ms() - t0;
    if (paused && virDomainResume(d) < 0) {
        char m[MSG_MAX];
        int e = lv_error(m, sizeof m, "Cannot resume '%s' after its snapshot", j->domain);
        log_err_errno(e, "%s", m);
        if (j->r >= 0) {
            j->r = e;
            snprintf(j->msg, sizeof j->msg, "%s", m);
        }
    }
    if (j->r < 0)
        (void)unlink(j->snap_path);
    j->has_domain = true;
    (void)domain_power(d, &j->power);
}

static int
job_work(void *data)
{
    struct job *j = data;
    switch (j->kind) {
    case JOB_DISK:
        work_disk(j);
        break;
    case JOB_SPAWN:
        work_spawn(j);
        break;
    case JOB_DESTROY:
        work_destroy(j);
        break;
    case JOB_ACTION:
        work_action(j);
        break;
    case JOB_SNAPSHOT:
        work_snapshot(j);
        break;
    }
    return j->r;
}

static void job_done(int result, void *data);

/* Queues 'j' for 'vm'. On failure 'j' is freed and the error returned. */
static int
job_submit(struct vm *vm, struct job *j)
{
    struct agent_vms *v = vm->v;
    j->submitted_ms = yun_now_ms();
    int r = yun_pool_submit(v->workers, job_work, job_done, j);
    if (r < 0) {
        job_free(j);
        return r;
    }
    vm->job = j;
    v->jobs++;
    return 0;
}

/* --- power checks --------------------------------------------------------- */

static int64_t on_vm_timer(struct yun_loop *loop, int id, void *data);

/* Arms the instance's timer for its next check or deadline. */
static void
vm_arm(struct vm *vm)
{
    struct agent_vms *v = vm->v;
    int64_t due = vm->check_at;
    if ((vm->stopping || vm->rebooting) && (due < 0 || vm->deadline_ms < due))
        due = vm->deadline_ms;
    if (due < 0) {
        if (vm->timer >= 0)
            (void)yun_loop_update_timer(v->loop, vm->timer, -1);
        return;
    }
    int64_t delay = due - yun_now_ms();
    if (delay < 0)
        delay = 0;
    if (vm->timer < 0) {
        vm->timer = yun_loop_add_timer(v->loop, delay, on_vm_timer, vm, NULL);
        if (vm->timer < 0)
            log_err_errno(vm->timer, "cannot add the instance timer vm=%s", vm->id);
    } else {
        (void)yun_loop_update_timer(v->loop, vm->timer, delay);
    }
}

/* Schedules a power check in 'delay_ms', unless one is due sooner. */
static void
vm_check_soon(struct vm *vm, int64_t delay_ms)
{
    int64_t at = yun_now_ms() + delay_ms;
    if (vm->check_at < 0 || at < vm->check_at)
        vm->check_at = at;
    vm_arm(vm);
}

/* The event a change of power state from 'from' to 'to' means. */
static const char *
power_event(enum agent_vm_power from, enum agent_vm_power to, bool reboot)
{
    switch (to) {
    case AGENT_VM_POWER_RUNNING:
        if (reboot)
            return "rebooted";
        if (from == to)
            return NULL;
        return from == AGENT_VM_POWER_PAUSED || from == AGENT_VM_POWER_SUSPENDED ? "resumed"
                                                                                  : "started";
    case AGENT_VM_POWER_SHUTOFF:
        return from == to ? NULL : "stopped";
    case AGENT_VM_POWER_PAUSED:
        return from == to ? NULL : "paused";
    case AGENT_VM_POWER_SUSPENDED:
        return from == to ? NULL : "suspended";
    case AGENT_VM_POWER_CRASHED:
        return from == to ? NULL : "crashed";
    default:
        return NULL;
    }
}

/* Reads the domain's power state and reports what changed. */
static void
vm_check(struct vm *vm)
{
    struct agent_vms *v = vm->v;
    vm->check_at = -1;
    if (vm->state != VM_ACTIVE || vm->job || vm->destroy_wanted)
        return;
    _cleanup_(virDomainFreep) virDomainPtr d = virDomainLookupByUUIDString(v->conn, vm->id);
    if (!d) {
        if (lv_last_code() != VIR_ERR_NO_DOMAIN) {
            log_warn("cannot look up the domain vm=%s: %s", vm->id, virGetLastErrorMessage());
            vm_check_soon(vm, 1000);
            return;
        }
        if (!vm->vanished_reported) {
            char msg[256];
            snprintf(msg, sizeof msg, "its domain '%s' is gone from libvirt on host '%s'.",
                     vm->domain, v->host_name);
            vm_emit(vm, "vanished", AGENT_VM_POWER_NOSTATE, -ENOENT, msg, NULL);
            vm->vanished_reported = true;
        }
        vm->reported = AGENT_VM_POWER_NOSTATE;
        vm->stopping = vm->rebooting = false;
        return;
    }
    enum agent_vm_power p;
    if (domain_power(d, &p) < 0) {
        log_warn("cannot read the domain's state vm=%s: %s", vm->id, virGetLastErrorMessage());
        vm_check_soon(vm, 1000);
        return;
    }
    /* A running guest found off, by an event or by any check: say so only
     * if it stays off for the debounce (a reboot in two steps would start
     * it again meanwhile). */
    if (p == AGENT_VM_POWER_SHUTOFF && vm->reported == AGENT_VM_POWER_RUNNING &&
        !vm->stopping && !vm->stop_seen) {
        vm->stop_seen = true;
        vm->check_at = yun_now_ms() + v->debounce_ms;
        return;
    }
    bool reboot = vm->reboot_seen && p == AGENT_VM_POWER_RUNNING;
    vm->reboot_seen = vm->stop_seen = false;
    vm->vanished_reported = false;
    if (vm->stopping && p != AGENT_VM_POWER_RUNNING && p != AGENT_VM_POWER_PAUSED)
        vm->stopping = false;
    if (reboot)
        vm->rebooting = false;
    const char *ev = power_event(vm->reported, p, reboot);
    if (ev)
        vm_emit(vm, ev, p, 0, NULL, NULL);
    vm->reported = p;
}

/* Waited long enough for the guest: power off, or reset. */
static void
vm_deadline(struct vm *vm)
{
    bool stop = vm->stopping;
    vm->stopping = vm->rebooting = false;
    if (vm->state != VM_ACTIVE || vm->destroy_wanted)
        return;
    struct job *j = job_new(vm, JOB_ACTION);
    if (!j) {
        log_err_errno(-ENOMEM, "cannot %s the instance vm=%s", stop ? "power off" : "reset",
                      vm->id);
        return;
    }
    snprintf(j->action, sizeof j->action, "%s", stop ? "poweroff" : "reset");
    log_notice("guest did not %s within %u ms: %s vm=%s", stop ? "shut down" : "reboot",
               vm->v->shutdown_timeout_ms, stop ? "powering it off" : "resetting it", vm->id);
    int r = job_submit(vm, j);
    if (r < 0)
        log_err_errno(r, "cannot %s the instance vm=%s", stop ? "power off" : "reset", vm->id);
}

static int64_t
on_vm_timer(struct yun_loop *loop, int id, void *data)
{
    struct vm *vm = data;
    int64_t now = yun_now_ms();
    if ((vm->stopping || vm->rebooting) && now >= vm->deadline_ms) {
        if (vm->job)
            vm->deadline_ms = now + 1000;
        else
            vm_deadline(vm);
    }
    if (vm->check_at >= 0 && now >= vm->check_at)
        vm_check(vm);
    vm_arm(vm);
    return 0;
}

/* --- libvirt's events ----------------------------------------------------- */

static struct vm *
event_vm(struct agent_vms *v, virDomainPtr dom, const char *what)
{
    const char *name = virDomainGetName(dom), *id;
    if (!name || !domain_name_id(name, &id))
        return NULL;
    struct vm *vm = vm_find(v, id);
    if (!vm)
        log_debug("%s event for a domain we hold no record of dom=%s", what, name);
    return vm;
}

static const char *
lifecycle_name(int event)
{
    static const char *const names[] = {
        "defined", "undefined", "started", "suspended", "resumed",
        "stopped", "shutdown", "pmsuspended", "crashed",
    };
    return event >= 0 && (size_t)event < ELEMENTSOF(names) ? names[event] : "?";
}

static int
on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    struct agent_vms *v = opaque;
    if (v->freeing)
        return 0;
    struct vm *vm = event_vm(v, dom, "lifecycle");
    if (!vm)
        return 0;
    log_debug("domain event vm=%s event=%s detail=%d state=%s%s", vm->id,
              lifecycle_name(event), detail, vm_state_table[vm->state],
              vm->job ? " job=yes" : "");
    /* Work in progress reports its own outcome, then checks. */
    if (vm->state != VM_ACTIVE || vm->job)
        return 0;
    switch (event) {
    case VIR_DOMAIN_EVENT_DEFINED:
    case VIR_DOMAIN_EVENT_SHUTDOWN:
        /* The guest finished shutting down but the domain still runs
         * (a fake reboot restarts it): STOPPED tells when it ends. */
        break;
    case VIR_DOMAIN_EVENT_STOPPED:
        /* Only a running guest can be rebooting; a stop we asked for, a
         * save or a crash is what it says. */
        if (detail == VIR_DOMAIN_EVENT_STOPPED_SAVED ||
            detail == VIR_DOMAIN_EVENT_STOPPED_CRASHED || vm->stopping ||
            vm->reported != AGENT_VM_POWER_RUNNING) {
            vm_check_soon(vm, 0);
        } else {
            /* Wait: a start that follows makes it a reboot. */
            vm->stop_seen = true;
            vm->check_at = yun_now_ms() + vm->v->debounce_ms;
            vm_arm(vm);
        }
        break;
    case VIR_DOMAIN_EVENT_STARTED:
        if (vm->stop_seen)
            vm->reboot_seen = true;
        vm_check_soon(vm, 0);
        break;
    default:
        vm_check_soon(vm, 0);
        break;
    }
    return 0;
}

static int
on_reboot(virConnectPtr conn, virDomainPtr dom, void *opaque)
{
    struct agent_vms *v = opaque;
    if (v->freeing)
        return 0;
    struct vm *vm = event_vm(v, dom, "reboot");
    if (!vm)
        return 0;
    log_debug("domain event vm=%s event=reboot state=%s", vm->id, vm_state_table[vm->state]);
    if (vm->state != VM_ACTIVE)
        return 0;
    vm->reboot_seen = true;
    if (!vm->job)
        vm_check_soon(vm, REBOOT_COALESCE_MS);
    return 0;
}

/* --- spawn ---------------------------------------------------------------- */

static bool
is_disk_format(const char *f)
{
    return strcmp(f, "raw") == 0 || strcmp(f, "qcow2") == 0;
}

static int
spawn_check(const Yun__AgentSpawnRequest *q, char *msg, size_t size)
{
    const Yun__InstanceRecord *i = q->instance;
    if (!i || !yun_uuid_is_valid(i->id)) {
        snprintf(msg, size, "The spawn request names no valid instance id.");
        return YUN_E_INVALID;
    }
    if (strlen(i->name) > NAME_MAX_BYTES || strlen(i->project) > NAME_MAX_BYTES) {
        snprintf(msg, size, "The name or project of instance '%s' is too long.", i->id);
        return YUN_E_INVALID;
    }
    const Yun__FlavorRecord *f = i->flavor;
    if (!f || f->vcpus == 0 || f->vcpus > 1024 || f->ram_mb < 16 || f->ram_mb > 16u << 20) {
        snprintf(msg, size, "Instance '%s' has no flavor with 1 to 1024 vCPUs and 16 MiB to "
                 "16 TiB of RAM.", i->id);
        return YUN_E_INVALID;
    }
    if (!yun_uuid_is_valid(q->image_id)) {
        snprintf(msg, size, "Instance '%s' names no valid image id to boot.", i->id);
        return YUN_E_INVALID;
    }
    if (*q->image_disk_format && !is_disk_format(q->image_disk_format)) {
        snprintf(msg, size, "Image '%s' is in disk format '%.32s'; instances boot from raw "
                 "or qcow2 images only.", q->image_id, q->image_disk_format);
        return YUN_E_INVALID;
    }
    if ((*q->kernel_id && !yun_uuid_is_valid(q->kernel_id)) ||
        (*q->ramdisk_id && !yun_uuid_is_valid(q->ramdisk_id))) {
        snprintf(msg, size, "The kernel or ramdisk id of instance '%s' is not a UUID.", i->id);
        return YUN_E_INVALID;
    }
    if (*q->ramdisk_id && !*q->kernel_id) {
        snprintf(msg, size, "Instance '%s' names a ramdisk without a kernel.", i->id);
        return YUN_E_INVALID;
    }
    if (strlen(q->kernel_cmdline) > CMDLINE_MAX) {
        snprintf(msg, size, "The kernel command line of instance '%s' is longer than %d "
                 "bytes.", i->id, CMDLINE_MAX);
        return YUN_E_INVALID;
    }
    return 0;
}

/* The image ids a spawn holds in the cache, each once. */
static size_t
spawn_images(const Yun__AgentSpawnRequest *q, char **ret)
{
    size_t n = 0;
    const char *ids[] = { q->image_id, q->kernel_id, q->ramdisk_id };
    for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
        bool seen = !*ids[i];
        for (size_t k = 0; k < n && !seen; k++)
            seen = strcmp(ret[k], ids[i]) == 0;
        if (!seen)
            ret[n++] = (char *)ids[i];
    }
    return n;
}

static int
vm_build_xml(struct agent_vms *v, const Yun__AgentInstanceRecord *rec, char **ret)
{
    const Yun__AgentSpawnRequest *q = rec->spawn;
    const Yun__InstanceRecord *i = q->instance;
    bool kernel = *rec->kernel_path;
    /* One NIC per port, in order, on the tap network.c made for it. */
    _cleanup_free_ struct agent_vm_nic *nics = calloc(q->n_ports + 1, sizeof *nics);
    _cleanup_free_ char (*taps)[16] = calloc(q->n_ports + 1, sizeof *taps);
    if (!nics || !taps)
        return -ENOMEM;
    for (size_t k = 0; k < q->n_ports; k++) {
        agent_network_tap_name(q->ports[k]->id, taps[k]);
        nics[k].mac = q->ports[k]->mac_address;
        nics[k].tap = taps[k];
        nics[k].port_id = q->ports[k]->id;
    }
    struct agent_vm_spec s = {
        .id = i->id,
        .name = *i->name ? i->name : i->id,
        .project = i->project,
        .virt_type = v->virt_type,
        .arch = v->arch,
        .vcpus = i->flavor->vcpus,
        .ram_mb = i->flavor->ram_mb,
        .disk_path = rec->disk_path,
        .disk_format = "qcow2",
        .backing_path = rec->base_path,
        .backing_format = rec->base_format,
        .kernel_path = kernel ? rec->kernel_path : NULL,
        .initrd_path = kernel && *rec->ramdisk_path ? rec->ramdisk_path : NULL,
        .cmdline = kernel ? (*q->kernel_cmdline ? q->kernel_cmdline : "console=ttyS0") : NULL,
        .console_log = rec->console_log,
        .nics = nics,
        .n_nics = q->n_ports,
    };
    return agent_vm_xml_build(&s, ret);
}

static void
release_images(struct vm *vm)
{
    struct agent_vms *v = vm->v;
    if (!v->images)
        return;
    for (size_t i = 0; i < vm->rec->n_images; i++) {
        int r = agent_image_cache_release(v->images, vm->rec->images[i], vm->id);
        if (r < 0 && r != -ENOENT)
            log_warn_errno(r, "cannot release image image=%s vm=%s", vm->rec->images[i],
                           vm->id);
    }
    vm->acquiring = 0;
}

/* The base image is ready: the overlay is made while the kernel and the
 * ramdisk, if any, are still being made ready. */
static void
spawn_disk(struct vm *vm)
{
    const Yun__AgentInstanceRecord *rec = vm->rec;
    const Yun__FlavorRecord *f = rec->spawn->instance->flavor;
    if (!is_disk_format(rec->base_format)) {
        char msg[256];
        snprintf(msg, sizeof msg, "Image '%s' is in disk format '%s'; instances boot from raw "
                 "or qcow2 images only.", rec->spawn->image_id, rec->base_format);
        return spawn_fail(vm, YUN_E_INVALID, msg);
    }
    /* The flavor's root disk, or the image's size when that is larger
     * (a disk smaller than its image would cut the guest's file system). */
    uint64_t capacity = (uint64_t)f->disk_gb << 30;
    if (rec->base_virtual_size > capacity)
        capacity = rec->base_virtual_size;
    capacity = (capacity + 511) & ~(uint64_t)511;
    if (capacity == 0)
        return spawn_fail(vm, YUN_E_INVALID, "Neither the flavor nor the image gives the "
                                             "instance's disk a size.");
    /* Kept in memory with the images' paths and written with the state
     * "active": a restart that finds the domain running first fills them
     * in from the spawn request (reconcile). */
    vm->rec->disk_capacity = capacity;
    struct job *j = job_new(vm, JOB_DISK);
    if (!j)
        return spawn_fail(vm, -ENOMEM, "The agent is out of memory.");
    j->capacity = capacity;
    int r = job_submit(vm, j);
    if (r < 0)
        return spawn_fail(vm, r, "The agent has too much work queued; try again.");
    vm->disk = DISK_MAKING;
}

/* The images and the overlay are ready: define and start the domain. */
static void
spawn_domain(struct vm *vm)
{
    struct job *j = job_new(vm, JOB_SPAWN);
    if (!j)
        return spawn_fail(vm, -ENOMEM, "The agent is out of memory.");
    int r = vm_build_xml(vm->v, vm->rec, &j->xml);
    if (r < 0) {
        job_free(j);
        return spawn_fail(vm, r, "The instance's domain XML cannot be built from its flavor "
                                 "and images.");
    }
    r = job_submit(vm, j);
    if (r < 0)
        spawn_fail(vm, r, "The agent has too much work queued; try again.");
}

/* Takes the spawn one step further once nothing is running for it: from
 * the last image acquire, or from the overlay's job. */
static void
spawn_next(struct vm *vm)
{
    if (vm->job || vm->acquiring)
        return;
    if (vm->destroy_wanted)
        return vm_destroy_start(vm, DESTROY_DELETE);
    if (vm->acquire_error) {
        int code = vm->acquire_error;
        _cleanup_free_ char *m = TAKE_PTR(vm->acquire_msg);
        vm->acquire_error = 0;
        return spawn_fail(vm, code, m ? m : "An image cannot be made ready.");
    }
    if (vm->disk == DISK_NONE)
        return spawn_disk(vm);
    log_debug("instance images and disk ready vm=%s ms=%" PRId64, vm->id,
              yun_now_ms() - vm->spawn_started_ms);
    spawn_domain(vm);
}

static void
disk_done(struct vm *vm, struct job *j)
{
    vm->disk_ms = j->disk_ms;
    if (vm->destroy_wanted)
        return vm_destroy_start(vm, DESTROY_DELETE); /* cancels the acquires left */
    if (j->r < 0)
        return spawn_fail(vm, j->r, j->msg);
    vm->disk = DISK_MADE;
    log_info("instance disk made vm=%s ms=%.1f capacity=%" PRIu64 " base=%s", vm->id, j->disk_ms,
             j->capacity, j->base_path);
    spawn_next(vm);
}

static void
on_image_ready(const struct agent_image_ready *ready, void *data)
{
    struct vm *vm = data;
    const Yun__AgentSpawnRequest *q = vm->rec->spawn;
    if (vm->acquiring)
        vm->acquiring--;
    if (ready->error) {
        if (!vm->acquire_error) {
            vm->acquire_error = ready->error;
            free(vm->acquire_msg);
            /* The cache's sentence names the image and the reason. */
            if (*ready->message)
                vm->acquire_msg = strdup(ready->message);
            else if (asprintf(&vm->acquire_msg, "Image '%s' cannot be made ready: %s.",
                              ready->image_id, yun_strerror(ready->error)) < 0)
                vm->acquire_msg = NULL;
        }
    } else {
        /* Kept in memory: written once, with the disk's size, before the
         * disk is made (one commit instead of one per image). */
        Yun__AgentInstanceRecord *rec = vm->rec;
        int r = 0;
        if (strcmp(ready->image_id, q->image_id) == 0) {
            r = rec_set(&rec->base_path, ready->path);
            if (r >= 0)
                r = rec_set(&rec->base_format, ready->disk_format);
            rec->base_virtual_size = ready->virtual_size;
        }
        if (r >= 0 && strcmp(ready->image_id, q->kernel_id) == 0)
            r = rec_set(&rec->kernel_path, ready->path);
        if (r >= 0 && strcmp(ready->image_id, q->ramdisk_id) == 0)
            r = rec_set(&rec->ramdisk_path, ready->path);
        if (r < 0 && !vm->acquire_error) {
            vm->acquire_error = r;
            free(vm->acquire_msg);
            vm->acquire_msg = strdup("The agent is out of memory.");
        }
    }
    /* The overlay needs only the base: it is made meanwhile. */
    if (!ready->error && strcmp(ready->image_id, q->image_id) == 0 && !vm->acquire_error &&
        !vm->destroy_wanted && !vm->job && vm->disk == DISK_NONE)
        spawn_disk(vm); /* on failure, the clean-up's job runs */
    spawn_next(vm);
}

static void
spawn_acquire(struct vm *vm)
{
    struct agent_vms *v = vm->v;
    vm->spawn_started_ms = yun_now_ms();
    if (!v->images)
        return spawn_fail(vm, -ENOTSUP, "This agent has no image cache.");
    vm->acquiring = 0;
    vm->acquire_error = 0;
    vm->disk = DISK_NONE;
    for (size_t i = 0; i < vm->rec->n_images; i++) {
        int r = agent_image_cache_acquire(v->images, vm->rec->images[i], vm->id,
                                          on_image_ready, vm);
        if (r < 0) {
            char msg[256];
            snprintf(msg, sizeof msg, "Image '%s' cannot be asked of the image cache: %s.",
                     vm->rec->images[i], yun_strerror(r));
            release_images(vm);
            return spawn_fail(vm, r, msg);
        }
        vm->acquiring++;
    }
}

/* The spawn failed with 'code' and 'msg': clean up, then report. */
static void
spawn_fail(struct vm *vm, int code, const char *msg)
{
    vm->fail_code = code;
    free(vm->fail_msg);
    vm->fail_msg = strdup(msg);
    log_req(YUN_LOG_WARN, *vm->request_id ? vm->request_id : NULL, code,
            "spawn failed, cleaning up vm=%s reason=\"%s\"", vm->id, msg);
    vm_destroy_start(vm, DESTROY_SPAWN_FAILED);
}

static void
spawn_done(struct vm *vm, struct job *j)
{
    if (vm->destroy_wanted)
        return vm_destroy_start(vm, DESTROY_DELETE);
    if (j->r < 0)
        return spawn_fail(vm, j->r, j->msg);
    log_req(YUN_LOG_NOTICE, *vm->request_id ? vm->request_id : NULL, 0,
            "instance spawned vm=%s disk_ms=%.1f define_ms=%.1f start_ms=%.1f total_ms=%" PRId64,
            vm->id, vm->disk_ms, j->define_ms, j->start_ms, yun_now_ms() - vm->spawn_started_ms);
    vm->reported = j->power;
    vm->state = VM_ACTIVE;
    vm_emit(vm, "spawned", j->power, 0, NULL, vm->request_id);
    /* Written after the event: a restart in between finds a building
     * record whose domain runs, and makes it active all the same. */
    int r = vm_set_state(vm, VM_ACTIVE);
    if (r < 0)
        log_err_errno(r, "cannot record a spawned instance vm=%s", vm->id);
    vm_check_soon(vm, 0);
}

static Yun__AgentInstanceRecord *
record_for_spawn(struct agent_vms *v, const Yun__AgentSpawnRequest *q)
{
    const char *id = q->instance->id;
    char *images[3];
    _cleanup_free_ char *dir = NULL, *disk = NULL, *console = NULL, *vol = NULL;
    char domain[DOMAIN_NAME_MAX];
    snprintf(domain, sizeof domain, AGENT_VM_DOMAIN_PREFIX "%s", id);
    if (asprintf(&dir, "%s/%s", v->instances_dir, id) < 0)
        dir = NULL;
    if (asprintf(&vol, "%s" DISK_SUFFIX, id) < 0)
        vol = NULL;
    if (asprintf(&disk, "%s/%s" DISK_SUFFIX, v->instances_dir, id) < 0)
        disk = NULL;
    if (asprintf(&console, "%s/%s/" CONSOLE_FILE, v->instances_dir, id) < 0)
        console = NULL;
    if (!dir || !vol || !disk || !console)
        return NULL;
    Yun__AgentInstanceRecord rec = YUN__AGENT_INSTANCE_RECORD__INIT;
    rec.spawn = (Yun__AgentSpawnRequest *)q;
    rec.state = (char *)vm_state_table[VM_BUILDING];
    rec.domain_name = domain;
    rec.pool = v->pool_name;
    rec.disk_volume = vol;
    rec.disk_path = disk;
    rec.dir = dir;
    rec.console_log = console;
    rec.images = images;
    rec.n_images = spawn_images(q, images);
    rec.created_us = rec.updated_us = yun_wall_us();
    return (Yun__AgentInstanceRecord *)msg_copy(&rec.base);
}

static void
state_of(struct vm *vm, struct agent_vm_state *ret)
{
    *ret = (struct agent_vm_state){ .known = true, .power = AGENT_VM_POWER_NOSTATE };
    snprintf(ret->id, sizeof ret->id, "%s", vm->id);
    virDomainPtr d = virDomainLookupByUUIDString(vm->v->conn, vm->id);
    if (d) {
        ret->has_domain = true;
        (void)domain_power(d, &ret->power);
        virDomainFree(d);
    }
}

static int
rebuild_start(struct vm *vm, const Yun__AgentSpawnRequest *q, char *msg, size_t size)
{
    if (vm->state != VM_ACTIVE || vm->job || vm->destroy_wanted) {
        snprintf(msg, size, "Instance '%s' is busy; it cannot be rebuilt now.", vm->id);
        return YUN_E_CONFLICT;
    }
    Yun__AgentSpawnRequest *copy = (Yun__AgentSpawnRequest *)msg_copy(&q->base);
    if (!copy)
        return -ENOMEM;
    int r = vm_set_state(vm, VM_BUILDING);
    if (r < 0) {
        protobuf_c_message_free_unpacked(&copy->base, NULL);
        snprintf(msg, size, "The agent cannot write the record of instance '%s'.", vm->id);
        return r;
    }
    if (vm->rebuild)
        protobuf_c_message_free_unpacked(&vm->rebuild->base, NULL);
    vm->rebuild = copy;
    vm->stopping = vm->rebooting = false;
    vm->spawn_started_ms = yun_now_ms();
    vm_destroy_start(vm, DESTROY_REBUILD);
    return 0;
}

int
agent_vm_spawn(struct agent_vms *v, const Yun__AgentSpawnRequest *q, const char *request_id,
               struct agent_vm_state *ret, char *msg, size_t msg_size)
{
    int r = spawn_check(q, msg, msg_size);
    if (r < 0)
        return r;
    const char *id = q->instance->id;
    struct vm *vm = vm_find(v, id);
    if (vm) {
        if (vm->state == VM_DELETING || vm->destroy_wanted) {
            snprintf(msg, msg_size, "Instance '%s' is being deleted on host '%s'.", id,
                     v->host_name);
            return YUN_E_CONFLICT;
        }
        if (q->rebuild) {
            /* The state before: the rebuild's destroy runs on a worker. */
            state_of(vm, ret);
            snprintf(vm->request_id, sizeof vm->request_id, "%s", request_id ? request_id : "");
            return rebuild_start(vm, q, msg, msg_size);
        }
        /* The same spawn again (the scheduler did not hear our answer):
         * it goes on, or is done and is said again. */
        state_of(vm, ret);
        if (vm->state == VM_ACTIVE && !vm->job)
            vm_emit(vm, "spawned", ret->power, 0, NULL, request_id);
        return 0;
    }
    if (v->n >= AGENT_VM_MAX) {
        snprintf(msg, msg_size, "Host '%s' holds %d instances, the most one agent may.",
                 v->host_name, AGENT_VM_MAX);
        return -ENOSPC;
    }
    Yun__AgentInstanceRecord *rec = record_for_spawn(v, q);
    if (!rec)
        return -ENOMEM;
    /* Written first: whatever follows, a restart finds it and cleans up. */
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(v->store, true, &txn);
    if (r >= 0)
        r = yun_txn_put_msg(txn, AGENT_VM_DB, id, &rec->base);
    if (r >= 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0) {
        protobuf_c_message_free_unpacked(&rec->base, NULL);
        snprintf(msg, msg_size, "The agent cannot write the record of instance '%s'.", id);
        return log_err_errno(r, "cannot write the instance record vm=%s", id);
    }
    vm = vm_new(v, rec);
    if (!vm) {
        protobuf_c_message_free_unpacked(&rec->base, NULL);
        (void)record_delete(v, id);
        return -ENOMEM;
    }
    snprintf(vm->request_id, sizeof vm->request_id, "%s", request_id ? request_id : "");
    log_req(YUN_LOG_INFO, request_id, 0, "spawn accepted vm=%s image=%s kernel=%s flavor=%s",
            id, q->image_id, *q->kernel_id ? q->kernel_id : "-", q->instance->flavor->name);
    *ret = (struct agent_vm_state){ .known = true, .power = AGENT_VM_POWER_NOSTATE };
    snprintf(ret->id, sizeof ret->id, "%s", id);
    spawn_acquire(vm);
    return 0;
}

/* --- destroy -------------------------------------------------------------- */

static void
vm_destroy_start(struct vm *vm, enum destroy_mode mode)
{
    vm->stopping = vm->rebooting = false;
    vm->check_at = -1;
    if (vm->acquiring)
        release_images(vm);
    struct job *j = job_new(vm, JOB_DESTROY);
    int r = j ? 0 : -ENOMEM;
    if (j) {
        j->mode = mode;
        r = job_submit(vm, j);
    }
    if (r < 0) {
        /* The record stays: the next destroy, or start, does it. */
        log_err_errno(r, "cannot start destroying the instance vm=%s", vm->id);
        if (mode == DESTROY_DELETE) {
            vm->destroy_wanted = false;
            vm_emit(vm, "delete_failed", AGENT_VM_POWER_NOSTATE, r,
                    "The agent cannot start the deletion now; try again.",
                    vm->destroy_request_id);
        }
    }
}

static void
destroy_done(struct vm *vm, struct job *j)
{
    struct agent_vms *v = vm->v;
    enum destroy_mode mode = j->mode;
    if (vm->destroy_wanted && mode != DESTROY_DELETE)
        mode = DESTROY_DELETE;
    if (j->r < 0) {
        log_req(YUN_LOG_ERR, *vm->destroy_request_id ? vm->destroy_request_id : NULL, j->r,
                "cannot destroy the instance vm=%s: %s", vm->id, j->msg);
        if (mode == DESTROY_REBUILD) {
            /* The old instance stays as it is; the rebuild failed. */
            (void)vm_set_state(vm, VM_ACTIVE);
            vm_emit(vm, "spawn_failed", j->power, j->r, j->msg, vm->request_id);
            vm_check_soon(vm, 0);
            return;
        }
        if (mode == DESTROY_DELETE) {
            vm->destroy_wanted = false;
            vm_emit(vm, "delete_failed", j->power, j->r, j->msg, vm->destroy_request_id);
        } else if (mode == DESTROY_SPAWN_FAILED) {
            /* The leftovers go at the next start (the record says deleting). */
            (void)vm_set_state(vm, VM_DELETING);
            vm_emit(vm, "spawn_failed", AGENT_VM_POWER_NOSTATE, vm->fail_code,
                    vm->fail_msg ? vm->fail_msg : j->msg, vm->request_id);
        }
        return;
    }
    /* The domain and the disk are gone: the images may go. */
    release_images(vm);
    if (mode == DESTROY_REBUILD) {
        Yun__AgentInstanceRecord *rec = record_for_spawn(v, vm->rebuild);
        int r = rec ? 0 : -ENOMEM;
        if (rec) {
            Yun__AgentInstanceRecord next = *rec;
            next.created_us = vm->rec->created_us;
            r = vm_save(vm, &next);
            protobuf_c_message_free_unpacked(&rec->base, NULL);
        }
        protobuf_c_message_free_unpacked(&vm->rebuild->base, NULL);
        vm->rebuild = NULL;
        if (r < 0)
            return spawn_fail(vm, r, "The agent cannot write the instance's record.");
        log_info("rebuild: old disk gone vm=%s", vm->id);
        spawn_acquire(vm);
        return;
    }
    int r = record_delete(v, vm->id);
    if (r < 0) {
        log_err_errno(r, "cannot delete the instance record vm=%s", vm->id);
        if (mode == DESTROY_DELETE) {
            vm->destroy_wanted = false;
            vm_emit(vm, "delete_failed", AGENT_VM_POWER_NOSTATE, r,
                    "The agent cannot delete the instance's record.", vm->destroy_request_id);
        }
        return;
    }
    log_req(YUN_LOG_NOTICE, *vm->destroy_request_id ? vm->destroy_request_id : NULL, 0,
            "instance destroyed vm=%s reason=%s", vm->id,
            mode == DESTROY_DELETE ? "delete" : mode == DESTROY_QUIET ? "restart" : "spawn-failed");
    if (mode == DESTROY_DELETE)
        vm_emit(vm, "deleted", AGENT_VM_POWER_NOSTATE, 0, NULL, vm->destroy_request_id);
    else if (mode == DESTROY_SPAWN_FAILED)
        vm_emit(vm, "spawn_failed", AGENT_VM_POWER_NOSTATE, vm->fail_code,
                vm->fail_msg ? vm->fail_msg : "The spawn failed.", vm->request_id);
    vm_free(vm);
}

/* Begins destroying 'vm' on the scheduler's behalf. */
static int
vm_destroy(struct vm *vm, const char *request_id)
{
    if (vm->destroy_wanted)
        return 0;
    snprintf(vm->destroy_request_id, sizeof vm->destroy_request_id, "%s",
             request_id ? request_id : "");
    int r = vm_set_state(vm, VM_DELETING);
    if (r < 0)
        return r;
    vm->destroy_wanted = true;
    vm->stopping = vm->rebooting = false;
    if (vm->job)
        return 0; /* its end starts the destroy */
    if (vm->acquiring) {
        /* Cancels the pending acquires: their callbacks never come. */
        release_images(vm);
    }
    vm_destroy_start(vm, DESTROY_DELETE);
    return 0;
}

int
agent_vm_destroy(struct agent_vms *v, const char *id, const char *request_id,
                 struct agent_vm_state *ret, char *msg, size_t msg_size)
{
    if (!yun_uuid_is_valid(id)) {
        snprintf(msg, msg_size, "Instance id '%.64s' is not a UUID.", id);
        return YUN_E_INVALID;
    }
    struct vm *vm = vm_find(v, id);
    if (!vm) {
        /* Nothing of ours: a domain of that name without a record is not
         * ours to destroy (another agent's, or an operator's). */
        *ret = (struct agent_vm_state){ .power = AGENT_VM_POWER_NOSTATE };
        snprintf(ret->id, sizeof ret->id, "%s", id);
        log_req(YUN_LOG_INFO, request_id, 0, "destroy of an instance not held here vm=%s", id);
        return 0;
    }
    state_of(vm, ret);
    log_req(YUN_LOG_INFO, request_id, 0, "destroy accepted vm=%s state=%s", id,
            vm_state_table[vm->state]);
    int r = vm_destroy(vm, request_id);
    if (r < 0)
        snprintf(msg, msg_size, "The agent cannot write the record of instance '%s'.", id);
    return r;
}

size_t
agent_vm_sync_apply(struct agent_vms *v, const Yun__InstanceSyncReply *y)
{
    size_t n = 0;
    for (size_t i = 0; i < y->n_delete_; i++) {
        struct vm *vm = yun_uuid_is_valid(y->delete_[i]) ? vm_find(v, y->delete_[i]) : NULL;
        if (!vm) {
            log_debug("sync: asked to delete an instance not held here vm=%.64s",
                      y->delete_[i]);
            continue;
        }
        log_notice("sync: the scheduler deleted it while we were away, destroying vm=%s",
                   vm->id);
        if (vm_destroy(vm, NULL) >= 0)
            n++;
    }
    return n;
}

/* --- actions -------------------------------------------------------------- */

static const char *const actions[] = {
    "start", "stop", "reboot", "pause", "unpause", "suspend", "resume",
};

int
agent_vm_action(struct agent_vms *v, const char *id, const char *action, bool hard,
                const char *request_id, agent_vm_done_fn done, void *data, char *msg,
                size_t msg_size)
{
    bool known = false;
    for (size_t i = 0; i < ELEMENTSOF(actions); i++)
        known = known || strcmp(action, actions[i]) == 0;
    if (!known) {
        snprintf(msg, msg_size, "Action '%.32s' is not one of start, stop, reboot, pause, "
                 "unpause, suspend or resume.", action);
        return YUN_E_INVALID;
    }
    if (hard && strcmp(action, "reboot") != 0 && strcmp(action, "stop") != 0) {
        snprintf(msg, msg_size, "Only a reboot or a stop can be hard.");
        return YUN_E_INVALID;
    }
    struct vm *vm = yun_uuid_is_valid(id) ? vm_find(v, id) : NULL;
    if (!vm) {
        snprintf(msg, msg_size, "Instance '%.64s' is not on host '%s'.", id, v->host_name);
        return -ENOENT;
    }
    if (vm->state != VM_ACTIVE || vm->destroy_wanted) {
        snprintf(msg, msg_size, "Instance '%s' is being %s; it cannot %s now.", id,
                 vm->state == VM_BUILDING ? "built" : "deleted", action);
        return YUN_E_CONFLICT;
    }
    if (vm->job) {
        snprintf(msg, msg_size, "Instance '%s' is busy with another action; try again.", id);
        return YUN_E_CONFLICT;
    }
    struct job *j = job_new(vm, JOB_ACTION);
    if (!j)
        return -ENOMEM;
    snprintf(j->action, sizeof j->action, "%s", action);
    /* No timeout: power off at once. */
    j->hard = hard || (strcmp(action, "stop") == 0 && v->shutdown_timeout_ms == 0);
    if (strcmp(action, "reboot") == 0) {
        int r = vm_build_xml(v, vm->rec, &j->xml);
        if (r < 0) {
            job_free(j);
            snprintf(msg, msg_size, "The domain XML of instance '%s' cannot be built.", id);
            return r;
        }
    }
    j->done = done;
    j->done_data = data;
    /* A new action ends the wait of the last one. */
    vm->stopping = vm->rebooting = false;
    int r = job_submit(vm, j);
    if (r < 0) {
        snprintf(msg, msg_size, "The agent has too much work queued; try again.");
        return r;
    }
    log_req(YUN_LOG_INFO, request_id, 0, "action started vm=%s action=%s%s", id, action,
            hard ? " hard=yes" : "");
    return 0;
}

static void
action_done(struct vm *vm, struct job *j)
{
    struct agent_vms *v = vm->v;
    bool reboot = strcmp(j->action, "reboot") == 0 || strcmp(j->action, "reset") == 0;
    /* What events said during the job is stale, the job's outcome is what
     * the check below reports; but a guest that answered a soft reboot
     * quickly may have reset already. */
    bool rebooted = vm->reboot_seen && strcmp(j->action, "reboot") == 0;
    vm->stop_seen = vm->reboot_seen = false;
    if (j->r >= 0) {
        if (j->waits) {
            vm->deadline_ms = yun_now_ms() + v->shutdown_timeout_ms;
            if (strcmp(j->action, "stop") == 0)
                vm->stopping = true;
            else if (rebooted)
                vm->reboot_seen = true;
            else
                vm->rebooting = true;
        } else if (reboot) {
            vm->reboot_seen = true;
        }
        log_info("action done vm=%s action=%s power=%s ms=%" PRId64, vm->id, j->action,
                 agent_vm_power_to_string(j->power), yun_now_ms() - j->submitted_ms);
    } else {
        log_warn_errno(j->r, "action failed vm=%s action=%s: %s", vm->id, j->action, j->msg);
    }
    if (j->done) {
        struct agent_vm_state st = {
            .known = true, .has_domain = j->has_domain, .power = j->power,
        };
        snprintf(st.id, sizeof st.id, "%s", vm->id);
        j->done(j->r, j->r < 0 ? j->msg : "", &st, j->done_data);
    }
    vm_check_soon(vm, 0);
}

/* --- snapshots ------------------------------------------------------------ */

static struct snap_upload *
snap_upload_free(struct snap_upload *su)
{
    if (su) {
        if (su->path)
            (void)unlink(su->path);
        free(su->path);
        free(su);
    }
    return NULL;
}

static void
snapshot_report(struct agent_vms *v, const char *id, const char *image, int r,
                const char *message, const char *request_id)
{
    struct vm *vm = vm_find(v, id);
    if (!vm)
        return; /* deleted meanwhile: the scheduler killed the image already */
    if (strcmp(vm->snap_image, image) == 0)
        vm->snapshotting = false;
    enum agent_vm_power p = vm->reported;
    if (r < 0)
        vm_emit(vm, "snapshot_failed", p, r, message, request_id);
    else
        vm_emit(vm, "snapshot_done", p, 0, NULL, request_id);
}

static void
upload_done(int r, const char *message, void *data)
{
    struct snap_upload *su = data;
    struct agent_vms *v = su->v;
    for (struct snap_upload **p = &v->uploads; *p; p = &(*p)->next)
        if (*p == su) {
            *p = su->next;
            break;
        }
    snapshot_report(v, su->id, su->image, r, message, su->request_id);
    snap_upload_free(su);
}

/* The copy is made (or failed): upload it, or say why not. */
static void
snapshot_copied(struct vm *vm, struct job *j)
{
    struct agent_vms *v = vm->v;
    if (j->r < 0) {
        log_warn_errno(j->r, "snapshot copy failed vm=%s image=%s: %s", vm->id,
                       vm->snap_image, j->msg);
        snapshot_report(v, vm->id, vm->snap_image, j->r, j->msg, vm->snap_request_id);
        vm_check_soon(vm, 0);
        return;
    }
    log_info("snapshot copied vm=%s image=%s ms=%.0f", vm->id, vm->snap_image, j->disk_ms);
    struct snap_upload *su = calloc(1, sizeof *su);
    int r = -ENOMEM;
    if (su) {
        su->v = v;
        snprintf(su->id, sizeof su->id, "%s", vm->id);
        snprintf(su->image, sizeof su->image, "%s", vm->snap_image);
        snprintf(su->request_id, sizeof su->request_id, "%s", vm->snap_request_id);
        su->path = TAKE_PTR(j->snap_path);
        r = agent_snapshot_upload(v->uploader, su->id, su->image, su->path, upload_done, su);
    }
    if (r < 0) {
        if (!su)
            (void)unlink(j->snap_path);
        su = snap_upload_free(su);
        snapshot_report(v, vm->id, vm->snap_image, r, "The agent cannot upload the snapshot "
                        "now.", vm->snap_request_id);
    } else {
        su->next = v->uploads;
        v->uploads = su;
    }
    vm_check_soon(vm, 0);
}

int
agent_vm_snapshot(struct agent_vms *v, const char *id, const char *image_id,
                  const char *request_id, struct agent_vm_state *ret, char *msg,
                  size_t msg_size)
{
    if (!yun_uuid_is_valid(image_id)) {
        snprintf(msg, msg_size, "Image id '%.64s' is not a UUID.", image_id);
        return YUN_E_INVALID;
    }
    struct vm *vm = yun_uuid_is_valid(id) ? vm_find(v, id) : NULL;
    if (!vm) {
        snprintf(msg, msg_size, "Instance '%.64s' is not on host '%s'.", id, v->host_name);
        return -ENOENT;
    }
    if (!v->uploader) {
        snprintf(msg, msg_size, "Host '%s' cannot upload snapshots.", v->host_name);
        return -EOPNOTSUPP;
    }
    if (vm->state != VM_ACTIVE || vm->destroy_wanted) {
        snprintf(msg, msg_size, "Instance '%s' is being %s; it cannot be snapshotted now.", id,
                 vm->state == VM_BUILDING ? "built" : "deleted");
        return YUN_E_CONFLICT;
    }
    if (vm->snapshotting && strcmp(vm->snap_image, image_id) == 0) {
        /* The same request again: accepted again. */
        state_of(vm, ret);
        return 0;
    }
    if (vm->job || vm->snapshotting || vm->stopping || vm->rebooting) {
        snprintf(msg, msg_size, "Instance '%s' is busy; it cannot be snapshotted now.", id);
        return YUN_E_CONFLICT;
    }
    struct job *j = job_new(vm, JOB_SNAPSHOT);
    if (!j)
        return -ENOMEM;
    if (asprintf(&j->snap_path, "%s/%s.qcow2", v->snapshots_dir, image_id) < 0) {
        j->snap_path = NULL;
        job_free(j);
        return -ENOMEM;
    }
    int r = job_submit(vm, j);
    if (r < 0) {
        snprintf(msg, msg_size, "The agent has too much work queued; try again.");
        return r;
    }
    vm->snapshotting = true;
    snprintf(vm->snap_image, sizeof vm->snap_image, "%s", image_id);
    snprintf(vm->snap_request_id, sizeof vm->snap_request_id, "%s",
             request_id ? request_id : "");
    log_req(YUN_LOG_INFO, request_id, 0, "snapshot started vm=%s image=%s", id, image_id);
    state_of(vm, ret);
    return 0;
}

/* Removes every file of <state_dir>/snapshots: copies no upload holds
 * (a crash, or a stop, cut them short). */
static void
snapshots_clear(struct agent_vms *v)
{
    DIR *d = opendir(v->snapshots_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            log_info("leftover snapshot removed file=%s/%s", v->snapshots_dir, e->d_name);
    }
    closedir(d);
}

static void
job_done(int result, void *data)
{
    struct job *j = data;
    struct agent_vms *v = j->v;
    v->jobs--;
    if (result == -ECANCELED && j->r == 0) {
        j->r = -ECANCELED;
        snprintf(j->msg, sizeof j->msg, "The agent is stopping.");
    }
    struct vm *vm = vm_find(v, j->id);
    if (vm && vm->job == j)
        vm->job = NULL;
    if (v->freeing || !vm) {
        if (j->kind == JOB_SNAPSHOT)
            (void)unlink(j->snap_path);
        if (j->done) {
            struct agent_vm_state st = { .power = j->power };
            snprintf(st.id, sizeof st.id, "%s", j->id);
            j->done(-ECANCELED, "The agent is stopping.", &st, j->done_data);
        }
        job_free(j);
        return;
    }
    switch (j->kind) {
    case JOB_DISK:
        disk_done(vm, j);
        break;
    case JOB_SPAWN:
        spawn_done(vm, j);
        break;
    case JOB_DESTROY:
        destroy_done(vm, j); /* may free vm */
        job_free(j);
        return;
    case JOB_ACTION:
        action_done(vm, j);
        break;
    case JOB_SNAPSHOT:
        snapshot_copied(vm, j);
        break;
    }
    job_free(j);
    if (vm->destroy_wanted && !vm->job && vm->state == VM_DELETING)
        vm_destroy_start(vm, DESTROY_DELETE);
}

/* --- console -------------------------------------------------------------- */

/* Makes 'buf' valid UTF-8 in place: drops carriage returns and NULs,
 * replaces bytes that start no valid sequence with '?'. */
static size_t
console_clean(char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < size;) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\r' || c == '\0') {
            i++;
            continue;
        }
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                 : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = n > 0 && i + n <= size;
        for (size_t k = 1; ok && k < n; k++)
            ok = ((unsigned char)buf[i + k] & 0xc0) == 0x80;
        if (ok && n == 2)
            ok = c >= 0xc2;
        if (ok && n == 3) {
            unsigned char c1 = (unsigned char)buf[i + 1];
            ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
        }
        if (ok && n == 4) {
            unsigned char c1 = (unsigned char)buf[i + 1];
            ok = c <= 0xf4 && !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
        }
        if (!ok) {
            buf[o++] = '?';
            i++;
            continue;
        }
        memmove(buf + o, buf + i, n);
        o += n;
        i += n;
    }
    return o;
}

int
agent_vm_console(struct agent_vms *v, const char *id, uint32_t lines, size_t max_bytes,
                 char **ret, char *msg, size_t msg_size)
{
    struct vm *vm = yun_uuid_is_valid(id) ? vm_find(v, id) : NULL;
    if (!vm) {
        snprintf(msg, msg_size, "Instance '%.64s' is not on host '%s'.", id, v->host_name);
        return -ENOENT;
    }
    if (lines == 0)
        lines = AGENT_VM_CONSOLE_LINES_DEFAULT;
    if (lines > AGENT_VM_CONSOLE_LINES_MAX)
        lines = AGENT_VM_CONSOLE_LINES_MAX;
    if (max_bytes == 0 || max_bytes > AGENT_VM_CONSOLE_BYTES_MAX)
        max_bytes = AGENT_VM_CONSOLE_BYTES_MAX;
    _cleanup_close_ int fd = open(vm->rec->console_log, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno != ENOENT) {
            int r = -errno;
            snprintf(msg, msg_size, "The console log of instance '%s' cannot be read: %s.", id,
                     strerror(errno));
            return r;
        }
        *ret = strdup("");
        return *ret ? 0 : -ENOMEM;
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    uint64_t end = (uint64_t)st.st_size;
    size_t want = end < max_bytes ? (size_t)end : max_bytes;
    _cleanup_free_ char *buf = malloc(want + 1);
    if (!buf)
        return -ENOMEM;
    /* Read backwards in blocks until enough lines, the start, or the cap. */
    size_t have = 0;
    uint32_t seen = 0;
    size_t start = 0;
    bool done = false;
    while (have < want && !done) {
        size_t block = want - have < 65536 ? want - have : 65536;
        uint64_t off = end - have - block;
        size_t pos = want - have - block;
        ssize_t n = pread(fd, buf + pos, block, (off_t)off);
        if (n < 0)
            return -errno;
        if ((size_t)n < block) {
            /* Truncated meanwhile: use what we have. */
            block = (size_t)n;
            done = true;
        }
        for (size_t k = pos + block; k > pos; k--) {
            /* The newline that ends the last line does not count. */
            if (buf[k - 1] == '\n' && !(k - 1 == want - 1)) {
                if (++seen == lines) {
                    start = k;
                    done = true;
                    break;
                }
            }
        }
        have += block;
        if (!done)
            start = want - have;
    }
    size_t len = want - start;
    memmove(buf, buf + start, len);
    len = console_clean(buf, len);
    buf[len] = '\0';
    *ret = TAKE_PTR(buf);
    return 0;
}

/* --- list, sync ------------------------------------------------------------ */

struct domain_info {
    char *name;
    enum agent_vm_power power;
    bool claimed;
};

/* The "yun-*" domains libvirt has, with their states. */
static int
list_domains(struct agent_vms *v, struct domain_info **ret, size_t *ret_n)
{
    virDomainPtr *doms = NULL;
    int n = virConnectListAllDomains(v->conn, &doms, 0);
    if (n < 0)
        return -EIO;
    struct domain_info *info = calloc((size_t)n + 1, sizeof *info);
    size_t k = 0;
    int r = info ? 0 : -ENOMEM;
    for (int i = 0; i < n; i++) {
        const char *name = virDomainGetName(doms[i]), *id;
        if (r >= 0 && name && domain_name_id(name, &id)) {
            info[k].name = strdup(name);
            if (!info[k].name)
                r = -ENOMEM;
            else if (domain_power(doms[i], &info[k].power) < 0)
                info[k].power = AGENT_VM_POWER_NOSTATE;
            if (r >= 0)
                k++;
        }
        virDomainFree(doms[i]);
    }
    free(doms);
    if (r < 0) {
        for (size_t i = 0; info && i < k; i++)
            free(info[i].name);
        free(info);
        return r;
    }
    *ret = info;
    *ret_n = k;
    return 0;
}

static struct domain_info *
domain_info_find(struct domain_info *d, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(d[i].name, name) == 0)
            return &d[i];
    return NULL;
}

static void
domain_info_free(struct domain_info *d, size_t n)
{
    for (size_t i = 0; d && i < n; i++)
        free(d[i].name);
    free(d);
}

int
agent_vm_list(struct agent_vms *v, struct agent_vm_report *ret)
{
    struct domain_info *doms = NULL;
    size_t n_doms = 0;
    int r = list_domains(v, &doms, &n_doms);
    if (r < 0)
        return log_err_errno(r, "cannot list libvirt's domains: %s", virGetLastErrorMessage());
    struct agent_vm_report rep = { 0 };
    rep.states = calloc(v->n + 1, sizeof *rep.states);
    rep.unknown_domains = calloc(n_doms + 1, sizeof *rep.unknown_domains);
    if (!rep.states || !rep.unknown_domains) {
        domain_info_free(doms, n_doms);
        agent_vm_report_done(&rep);
        return -ENOMEM;
    }
    for (size_t b = 0; b < VM_BUCKETS; b++) {
        for (struct vm *vm = v->buckets[b]; vm; vm = vm->next) {
            struct agent_vm_state *st = &rep.states[rep.n_states++];
            *st = (struct agent_vm_state){ .known = true, .power = AGENT_VM_POWER_NOSTATE };
            snprintf(st->id, sizeof st->id, "%s", vm->id);
            struct domain_info *d = domain_info_find(doms, n_doms, vm->domain);
            if (d) {
                d->claimed = true;
                st->has_domain = true;
                st->power = d->power;
            }
        }
    }
    for (size_t i = 0; i < n_doms; i++)
        if (!doms[i].claimed)
            rep.unknown_domains[rep.n_unknown_domains++] = TAKE_PTR(doms[i].name);
    domain_info_free(doms, n_doms);
    *ret = rep;
    return 0;
}

void
agent_vms_stats(const struct agent_vms *v, struct agent_vms_stats *ret)
{
    *ret = (struct agent_vms_stats){ .instances = v->n, .jobs = v->jobs,
                                     .unknown_domains = v->n_unknown };
    for (size_t b = 0; b < VM_BUCKETS; b++) {
        for (const struct vm *vm = v->buckets[b]; vm; vm = vm->next) {
            if (vm->state == VM_BUILDING)
                ret->building++;
            else if (vm->state == VM_ACTIVE)
                ret->active++;
            else
                ret->deleting++;
            if (vm->job || vm->acquiring)
                ret->busy++;
        }
    }
}

/* --- start: pool, records, reconciliation -------------------------------------- */

/* The target directory of 'pool'. */
static int
pool_dir(virStoragePoolPtr pool, char **ret)
{
    _cleanup_free_ char *xml = virStoragePoolGetXMLDesc(pool, 0);
    if (!xml)
        return -EIO;
    _cleanup_(xmlFreeDocp) xmlDocPtr doc =
        xmlReadMemory(xml, (int)strlen(xml), "pool.xml", NULL, XML_PARSE_NONET | XML_PARSE_NOERROR |
                                                         XML_PARSE_NOWARNING);
    if (!doc)
        return -EBADMSG;
    _cleanup_(xmlXPathFreeContextp) xmlXPathContextPtr ctx = xmlXPathNewContext(doc);
    if (!ctx)
        return -ENOMEM;
    _cleanup_(xmlXPathFreeObjectp) xmlXPathObjectPtr o =
        xmlXPathEvalExpression(BAD_CAST "string(/pool/target/path)", ctx);
    if (!o || o->type != XPATH_STRING || !o->stringval)
        return -EBADMSG;
    *ret = strdup((const char *)o->stringval);
    return *ret ? 0 : -ENOMEM;
}

int
agent_vm_pool_open(virConnectPtr conn, const char *name, const char *dir,
                   virStoragePoolPtr *ret, char *msg, size_t msg_size)
{
    virStoragePoolPtr pool = virStoragePoolLookupByName(conn, name);
    if (!pool && lv_last_code() != VIR_ERR_NO_STORAGE_POOL)
        return lv_error(msg, msg_size, "Cannot look up the storage pool '%s'", name);
    if (pool) {
        _cleanup_free_ char *path = NULL;
        int r = pool_dir(pool, &path);
        if (r < 0) {
            virStoragePoolFree(pool);
            snprintf(msg, msg_size, "Cannot read the definition of the storage pool '%s'.",
                     name);
            return r;
        }
        if (strcmp(path, dir) != 0) {
            virStoragePoolFree(pool);
            snprintf(msg, msg_size, "The storage pool '%s' holds '%s', not '%s': another "
                     "agent's? Set libvirt.storage_pool to a pool of this agent's own.",
                     name, path, dir);
            return YUN_E_CONFIG;
        }
    } else {
        _cleanup_free_ char *ename = xml_escape(name), *edir = xml_escape(dir), *xml = NULL;
        if (!ename || !edir ||
            asprintf(&xml, "<pool type='dir'><name>%s</name><target><path>%s</path>"
                           "<permissions><mode>0711</mode></permissions></target></pool>",
                     ename, edir) < 0)
            return -ENOMEM;
        pool = virStoragePoolDefineXML(conn, xml, 0);
        if (!pool)
            return lv_error(msg, msg_size, "Cannot define the storage pool '%s'", name);
        (void)virStoragePoolSetAutostart(pool, 1);
    }
    if (virStoragePoolIsActive(pool) != 1 && virStoragePoolCreate(pool, 0) < 0) {
        int r = lv_error(msg, msg_size, "Cannot start the storage pool '%s'", name);
        virStoragePoolFree(pool);
        return r;
    }
    *ret = pool;
    return 0;
}

static int
load_record(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct agent_vms *v = data;
    Yun__AgentInstanceRecord *rec = yun__agent_instance_record__unpack(NULL, val_size, val);
    if (!rec || !rec->spawn || !rec->spawn->instance ||
        !yun_uuid_is_valid(rec->spawn->instance->id) || key_size != YUN_UUID_STR_SIZE - 1 ||
        memcmp(key, rec->spawn->instance->id, key_size) != 0) {
        log_err("an instance record does not decode, left as it is key=%.*s",
                (int)(key_size < 64 ? key_size : 64), (const char *)key);
        if (rec)
            yun__agent_instance_record__free_unpacked(rec, NULL);
        return 0;
    }
    if (!vm_new(v, rec)) {
        yun__agent_instance_record__free_unpacked(rec, NULL);
        return -ENOMEM;
    }
    return 0;
}

/* The paths of the images of a spawn the agent was killed in (its record
 * written before them), from the digests the scheduler gave: where the
 * cache keeps them. -ENOENT when the request lacks them. */
static int
record_fill_paths(struct agent_vms *v, struct vm *vm)
{
    Yun__AgentInstanceRecord *rec = vm->rec;
    const Yun__AgentSpawnRequest *q = rec->spawn;
    if (*rec->base_path)
        return 0;
    if (!v->images || !is_disk_format(q->image_disk_format) || !*q->image_sha512 ||
        (*q->kernel_id && !*q->kernel_sha512) || (*q->ramdisk_id && !*q->ramdisk_sha512))
        return -ENOENT;
    char path[4096];
    int r = agent_image_cache_path(v->images, q->image_sha512, path, sizeof path);
    if (r >= 0)
        r = rec_set(&rec->base_path, path);
    if (r >= 0)
        r = rec_set(&rec->base_format, q->image_disk_format);
    if (r >= 0 && *q->kernel_id &&
        (r = agent_image_cache_path(v->images, q->kernel_sha512, path, sizeof path)) >= 0)
        r = rec_set(&rec->kernel_path, path);
    if (r >= 0 && *q->ramdisk_id &&
        (r = agent_image_cache_path(v->images, q->ramdisk_sha512, path, sizeof path)) >= 0)
        r = rec_set(&rec->ramdisk_path, path);
    if (r >= 0 && rec->disk_capacity == 0) {
        uint64_t c = (uint64_t)q->instance->flavor->disk_gb << 30;
        rec->disk_capacity = c > q->image_virtual_size ? c : q->image_virtual_size;
    }
    return r;
}

/* Brings the records and libvirt's domains back into agreement. */
static int
reconcile(struct agent_vms *v)
{
    struct domain_info *doms = NULL;
    size_t n_doms = 0;
    int r = list_domains(v, &doms, &n_doms);
    if (r < 0)
        return log_err_errno(r, "cannot list libvirt's domains: %s", virGetLastErrorMessage());
    size_t counts[4] = { 0 };
    /* Collected first: the work below changes the table. */
    struct vm **all = calloc(v->n + 1, sizeof *all);
    if (!all) {
        domain_info_free(doms, n_doms);
        return -ENOMEM;
    }
    size_t n = 0;
    for (size_t b = 0; b < VM_BUCKETS; b++)
        for (struct vm *vm = v->buckets[b]; vm; vm = vm->next)
            all[n++] = vm;
    for (size_t i = 0; i < n; i++) {
        struct vm *vm = all[i];
        struct domain_info *d = domain_info_find(doms, n_doms, vm->domain);
        if (d)
            d->claimed = true;
        switch (vm->state) {
        case VM_DELETING:
            log_notice("start: finishing a destroy vm=%s", vm->id);
            vm->destroy_wanted = true;
            vm_destroy_start(vm, DESTROY_DELETE);
            counts[0]++;
            break;
        case VM_BUILDING:
            if (d && d->power == AGENT_VM_POWER_RUNNING && !vm->rec->spawn->rebuild &&
                record_fill_paths(v, vm) >= 0) {
                log_notice("start: a spawn cut short had started its domain, keeping it "
                           "vm=%s", vm->id);
                (void)vm_set_state(vm, VM_ACTIVE);
                vm->state = VM_ACTIVE;
                vm->reported = d->power;
                counts[1]++;
                break;
            }
            log_notice("start: cleaning up a spawn cut short vm=%s", vm->id);
            vm_destroy_start(vm, DESTROY_QUIET);
            counts[2]++;
            break;
        default:
            if (!d) {
                char msg[256];
                log_warn("start: the domain of an instance vanished vm=%s dom=%s", vm->id,
                         vm->domain);
                snprintf(msg, sizeof msg, "its domain '%s' is gone from libvirt on host '%s'.",
                         vm->domain, v->host_name);
                vm_emit(vm, "vanished", AGENT_VM_POWER_NOSTATE, -ENOENT, msg, NULL);
                vm->vanished_reported = true;
                vm->reported = AGENT_VM_POWER_NOSTATE;
            } else {
                vm->reported = d->power;
            }
            counts[3]++;
            break;
        }
    }
    free(all);
    for (size_t i = 0; i < n_doms; i++) {
        if (doms[i].claimed)
            continue;
        v->n_unknown++;
        log_warn("start: a domain no record claims is left alone dom=%s power=%s (another "
                 "agent's on this libvirt, or an orphan: inspect it with virsh)", doms[i].name,
                 agent_vm_power_to_string(doms[i].power));
    }
    domain_info_free(doms, n_doms);
    log_info("instances reconciled records=%zu deleting=%zu kept=%zu cleaned=%zu active=%zu "
             "unknown_domains=%zu", n, counts[0], counts[1], counts[2], counts[3], v->n_unknown);
    return 0;
}

int
agent_vms_new(const struct agent_vms_options *o, struct agent_vms **ret, char *msg,
              size_t msg_size)
{
    /* The uploader is taken whatever happens. */
    struct agent_snapshot_uploader *uploader = o->uploader;
    if (!o->loop || !o->store || !o->conn || !o->state_dir || !o->virt_type || !o->arch) {
        agent_snapshot_uploader_free(uploader);
        snprintf(msg, msg_size, "The instance table is missing a part.");
        return -EINVAL;
    }
    const char *pool_name = o->pool && *o->pool ? o->pool : AGENT_VM_POOL_DEFAULT;
    if (!yun_name_is_valid(pool_name, 64)) {
        agent_snapshot_uploader_free(uploader);
        snprintf(msg, msg_size, "Storage pool name '%.64s' is not 1 to 64 of [A-Za-z0-9._-].",
                 pool_name);
        return YUN_E_CONFIG;
    }
    struct agent_vms *v = calloc(1, sizeof *v);
    if (!v) {
        agent_snapshot_uploader_free(uploader);
        return -ENOMEM;
    }
    v->loop = o->loop;
    v->store = o->store;
    v->conn = o->conn;
    virConnectRef(v->conn);
    v->images = o->images;
    v->cb_lifecycle = v->cb_reboot = -1;
    v->shutdown_timeout_ms = o->shutdown_timeout_ms;
    v->debounce_ms = o->debounce_ms ? o->debounce_ms : DEBOUNCE_MS_DEFAULT;
    v->event = o->event;
    v->event_data = o->event_data;
    v->state_dir = strdup(o->state_dir);
    v->pool_name = strdup(pool_name);
    v->virt_type = strdup(o->virt_type);
    v->arch = strdup(o->arch);
    v->host_name = strdup(o->host_name ? o->host_name : "");
    if (asprintf(&v->instances_dir, "%s/instances", o->state_dir) < 0)
        v->instances_dir = NULL;
    if (asprintf(&v->snapshots_dir, "%s/" SNAPSHOT_DIR, o->state_dir) < 0)
        v->snapshots_dir = NULL;
    v->uploader = uploader;
    _cleanup_(agent_vms_freep) struct agent_vms *guard = v;
    if (!v->state_dir || !v->pool_name || !v->virt_type || !v->arch || !v->host_name ||
        !v->instances_dir || !v->snapshots_dir)
        return -ENOMEM;
    int r = yun_mkdir_p(v->snapshots_dir, 0700);
    if (r < 0) {
        snprintf(msg, msg_size, "Cannot make the directory '%s': %s.", v->snapshots_dir,
                 strerror(-r));
        return r;
    }
    snapshots_clear(v);

    r = yun_mkdir_p(v->instances_dir, DIR_MODE);
    if (r >= 0)
        r = make_traversable(v->state_dir);
    if (r >= 0)
        r = make_traversable(v->instances_dir);
    if (r < 0) {
        snprintf(msg, msg_size, "Cannot make '%s' a directory QEMU can reach: %s.",
                 v->instances_dir, strerror(-r));
        return r;
    }
    r = agent_vm_pool_open(v->conn, v->pool_name, v->instances_dir, &v->pool, msg, msg_size);
    if (r < 0)
        return r;
    r = yun_pool_new(v->loop, o->threads ? o->threads : THREADS_DEFAULT, 4 * AGENT_VM_MAX,
                     &v->workers);
    if (r < 0) {
        snprintf(msg, msg_size, "Cannot start the libvirt workers: %s.", strerror(-r));
        return r;
    }
    v->cb_lifecycle = virConnectDomainEventRegisterAny(
        v->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle),
        v, NULL);
    v->cb_reboot = virConnectDomainEventRegisterAny(
        v->conn, NULL, VIR_DOMAIN_EVENT_ID_REBOOT, VIR_DOMAIN_EVENT_CALLBACK(on_reboot), v,
        NULL);
    if (v->cb_lifecycle < 0 || v->cb_reboot < 0)
        return lv_error(msg, msg_size, "Cannot register for libvirt's domain events");

    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        r = yun_txn_begin(v->store, false, &txn);
        if (r >= 0)
            r = yun_txn_iterate(txn, AGENT_VM_DB, NULL, 0, load_record, v);
        if (r < 0) {
            snprintf(msg, msg_size, "Cannot read the instance records: %s.", yun_strerror(r));
            return r;
        }
    }
    r = reconcile(v);
    if (r < 0) {
        snprintf(msg, msg_size, "Cannot reconcile the instances with libvirt: %s.",
                 yun_strerror(r));
        return r;
    }
    *ret = TAKE_PTR(guard);
    return 0;
}

struct agent_vms *
agent_vms_free(struct agent_vms *v)
{
    if (!v)
        return NULL;
    v->freeing = true;
    if (v->cb_lifecycle >= 0)
        (void)virConnectDomainEventDeregisterAny(v->conn, v->cb_lifecycle);
    if (v->cb_reboot >= 0)
        (void)virConnectDomainEventDeregisterAny(v->conn, v->cb_reboot);
    /* Waits for the running jobs; their done callbacks answer with
     * -ECANCELED and free them. */
    v->workers = yun_pool_free(v->workers);
    /* Uploads end without a word: the scheduler's timeout or restart
     * kills their images; their files go now. */
    v->uploader = agent_snapshot_uploader_free(v->uploader);
    while (v->uploads) {
        struct snap_upload *su = v->uploads;
        v->uploads = su->next;
        snap_upload_free(su);
    }
    for (size_t b = 0; b < VM_BUCKETS; b++) {
        while (v->buckets[b]) {
            struct vm *vm = v->buckets[b];
            if (vm->acquiring && v->images) {
                /* Cancels the callbacks; the record makes the next start
                 * clean up. */
                for (size_t i = 0; i < vm->rec->n_images; i++)
                    (void)agent_image_cache_release(v->images, vm->rec->images[i], vm->id);
            }
            vm_free(vm);
        }
    }
    if (v->pool)
        virStoragePoolFree(v->pool);
    if (v->conn)
        virConnectClose(v->conn);
    free(v->state_dir);
    free(v->instances_dir);
    free(v->snapshots_dir);
    free(v->pool_name);
    free(v->virt_type);
    free(v->arch);
    free(v->host_name);
    free(v);
    return NULL;
}

/* --- agent glue ----------------------------------------------------------------- */

static void
on_vm_event(const Yun__InstanceEvent *ev, void *data)
{
    agent_command_event(data, ev);
}

int
agent_vm_start(struct agent *a)
{
    /* Snapshots go up in chunks of the image fetcher's size (checked
     * against the bus's message size at the cache's start), at most the
     * scheduler's default [images] chunk_size. */
    uint32_t chunk = a->cfg.image_fetch_chunk_kb * 1024;
    if (chunk == 0 || chunk > 1024 * 1024)
        chunk = 1024 * 1024;
    struct yun_bus_client_options bo = {
        .url = agent_scheduler_url(a),
        .self_id = a->key.id,
        .key_id = a->key.id,
        .key_epoch = a->key.epoch,
        .key = &a->key.key,
        .max_body = a->cfg.max_message_size,
        .window_us = (uint64_t)a->cfg.message_window_s * 1000000u,
        .timeout_ms = (int)a->cfg.request_timeout_ms,
    };
    struct agent_snapshot_uploader *up = NULL;
    if (bo.url && *bo.url) {
        int r = agent_snapshot_uploader_new(a->loop, &bo, chunk, &up);
        if (r < 0)
            return log_err_errno(r, "cannot connect the snapshot uploader url=%s", bo.url);
    }
    struct agent_vms_options o = {
        .uploader = up,
        .loop = a->loop,
        .store = a->store,
        .conn = a->conn,
        .images = a->images,
        .state_dir = a->cfg.state_dir,
        .pool = a->cfg.storage_pool,
        .virt_type = a->cfg.virt_type,
        .arch = *a->inv.arch ? a->inv.arch : "x86_64",
        .host_name = a->key.id,
        .shutdown_timeout_ms = a->cfg.shutdown_timeout_s * 1000,
        .event = on_vm_event,
        .event_data = a,
    };
    char msg[MSG_MAX] = "";
    int r = agent_vms_new(&o, &a->vms, msg, sizeof msg);
    if (r < 0)
        return log_err_errno(r, "cannot open the instances: %s", msg);
    struct agent_vms_stats st;
    agent_vms_stats(a->vms, &st);
    log_info("instances open pool=%s records=%zu unknown_domains=%zu", o.pool, st.instances,
             st.unknown_domains);
    return 0;
}

void
agent_vm_stop(struct agent *a)
{
    a->vms = agent_vms_free(a->vms);
}
