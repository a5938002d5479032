/* SPDX-License-Identifier: Apache-2.0
 * vm.h: the instances of this host (DESIGN.md "Compute"), run through
 * libvirt. An instance is a record in the agent's store (database
 * AGENT_VM_DB, AgentInstanceRecord from proto/compute.proto), a qcow2
 * overlay volume in a libvirt directory pool ("yun-instances" at
 * <state_dir>/instances) whose backing file is the cached base image
 * (image-cache.h), a persistent domain "yun-<id>" (vm-xml.h) and a
 * directory <state_dir>/instances/<id>/ with the serial console's log.
 *
 * Crash safety. The record is written before anything is made for an
 * instance and deleted only after everything is gone; every step of a
 * spawn, a destroy and a spawn's clean-up is idempotent. So an agent
 * killed at any moment finds, at its next start, what to finish:
 * "deleting" records are destroyed again, "building" ones whose domain
 * runs become active and the others are cleaned up, "active" ones whose
 * domain vanished are reported. Domains named "yun-*" without a record are
 * reported and logged, never touched.
 *
 * Work off the loop. libvirt calls that may take long (creating the
 * overlay, defining and starting a domain, a managed save, destroying)
 * run on a small worker pool (common/pool.h); one job at a time per
 * instance. Quick reads (a domain's state, the domain list) run on the
 * loop.
 *
 * Power states follow libvirt's lifecycle and reboot events, which run on
 * the agent's loop (virt-event.h): an event only triggers a read of the
 * domain's real state, and the state, when it differs from the one last
 * reported, is what goes to the scheduler (an InstanceEvent through the
 * 'event' callback). A STOPPED event waits 'debounce_ms' first, so that a
 * stop followed by a start (a reboot done as two steps) reads as one
 * reboot, never as a stop. Events for an instance whose spawn, destroy or
 * action is running are left to that work, which reports its own outcome.
 *
 * Neighbours: command.c serves the scheduler's commands with the calls
 * below and sends the events; vm-xml.c builds the domain XML;
 * image-cache.c holds the base images; docs/compute-agent.md. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libvirt/libvirt.h>

#include "compute.pb-c.h"
#include "util.h"

struct agent;
struct agent_vms;
struct agent_image_cache;
struct agent_snapshot_uploader;
struct yun_loop;
struct yun_store;

/* The agent store's database of instance records. */
#define AGENT_VM_DB "instances"
/* Instances one agent holds at most. */
#define AGENT_VM_MAX 1024
/* The storage pool's name when agent.conf names none. */
#define AGENT_VM_POOL_DEFAULT "yun-instances"
/* OP_AGENT_CONSOLE: lines when the request says 0, and the bounds. */
#define AGENT_VM_CONSOLE_LINES_DEFAULT 100
#define AGENT_VM_CONSOLE_LINES_MAX 10000
#define AGENT_VM_CONSOLE_BYTES_MAX (1u << 20)

enum agent_vm_power {
    AGENT_VM_POWER_NOSTATE,
    AGENT_VM_POWER_RUNNING,
    AGENT_VM_POWER_SHUTOFF,
    AGENT_VM_POWER_PAUSED,
    AGENT_VM_POWER_SUSPENDED,
    AGENT_VM_POWER_CRASHED,
    _AGENT_VM_POWER_MAX,
    _AGENT_VM_POWER_INVALID = -EINVAL,
};

/* "nostate", "running", ...: InstanceRecord.power_state's spelling. */
const char *agent_vm_power_to_string(enum agent_vm_power p);
enum agent_vm_power agent_vm_power_from_string(const char *s);

/* The power state of a domain in libvirt's 'state' (virDomainState) with
 * its 'reason'; 'managed_save' tells whether it has a managed save image
 * (a shut-off domain with one is suspended). */
enum agent_vm_power agent_vm_power_from_libvirt(int state, int reason, bool managed_save);

/* Where an instance's events go: 'ev' and its strings are borrowed for
 * the call (host_id is left empty for the caller to fill). */
typedef void (*agent_vm_event_fn)(const Yun__InstanceEvent *ev, void *data);

struct agent_vms_options {
    struct yun_loop *loop;
    struct yun_store *store;          /* holds AGENT_VM_DB */
    virConnectPtr conn;               /* referenced while the table lives */
    struct agent_image_cache *images; /* the base images; NULL fails every spawn */
    const char *state_dir;            /* instances go in <state_dir>/instances */
    const char *pool;                 /* storage pool name; NULL = AGENT_VM_POOL_DEFAULT */
    const char *virt_type;            /* "qemu" | "kvm" */
    const char *arch;                 /* the guests' architecture: the host's */
    const char *host_name;            /* for messages */
    uint32_t shutdown_timeout_ms;     /* graceful stop / soft reboot wait; 0 = at once */
    uint32_t debounce_ms;             /* how long a STOPPED event waits; 0 = 1000 */
    unsigned threads;                 /* libvirt workers; 0 = 4 */
    agent_vm_event_fn event;          /* may be NULL */
    void *event_data;
    struct agent_snapshot_uploader *uploader; /* taken, also on failure; NULL: no snapshots */
};

/* Opens the instance table: makes <state_dir> and <state_dir>/instances
 * traversable by QEMU's user (mode o+x), defines and starts the storage
 * pool if it is missing (refusing one of that name whose directory is
 * elsewhere: YUN_E_CONFIG), registers for libvirt's domain events and
 * reconciles the records with libvirt's domains (see the top of this
 * file): the work left is queued, vanished domains are reported through
 * 'event', unknown domains logged. Returns 0 and '*ret', or a negative
 * errno / yun_err with a sentence in 'msg'. */
int agent_vms_new(const struct agent_vms_options *o, struct agent_vms **ret, char *msg,
                  size_t msg_size);
/* Stops: waits for the running libvirt jobs, answers the actions still
 * waiting with -ECANCELED, cancels pending image acquires (the records
 * stay and the next start finishes their work) and deregisters the
 * events. NULL ok; returns NULL. */
struct agent_vms *agent_vms_free(struct agent_vms *v);

/* What the agent knows of one instance: InstanceSync's and AgentAck's
 * AgentInstanceState. */
struct agent_vm_state {
    char id[YUN_UUID_STR_SIZE];
    enum agent_vm_power power;
    bool known;       /* the agent holds its record */
    bool has_domain;  /* libvirt has its domain */
};

/* Fills 'ret' with pointers into 'st' (borrowed while 'st' lives). */
void agent_vm_state_to_msg(const struct agent_vm_state *st, Yun__AgentInstanceState *ret);

/* Everything held: records (with their domains' power states) and the
 * "yun-*" domains no record claims. Owned by the caller
 * (agent_vm_report_done). */
struct agent_vm_report {
    struct agent_vm_state *states;
    size_t n_states;
    char **unknown_domains;
    size_t n_unknown_domains;
};
void agent_vm_report_done(struct agent_vm_report *r);

/* Completion of an action: 'r' 0 or a negative errno / yun_err with a
 * sentence in 'message' (never NULL); 'state' is the instance's after the
 * action (NULL when it is not known any more). Borrowed for the call. */
typedef void (*agent_vm_done_fn)(int r, const char *message, const struct agent_vm_state *state,
                                 void *data);

/* OP_AGENT_SPAWN. Checks 'q' and writes the instance's record, then
 * returns at once; the spawn goes on from the loop (images, overlay,
 * domain) and ends with the InstanceEvent "spawned" or "spawn_failed"
 * (with a fault a user can read: libvirt's own words). Idempotent: a
 * spawn of an instance already held is answered with its state (and,
 * when it is built, "spawned" is sent again). 'q->rebuild' replaces the
 * disk and the domain of a held instance with new ones from 'q'.
 * 'request_id' (may be NULL) goes into the events it causes. Returns 0
 * and the state in '*ret', or YUN_E_INVALID, YUN_E_CONFLICT (being
 * deleted or built), -ENOSPC (AGENT_VM_MAX held), a store error; with a
 * sentence in 'msg'. */
int agent_vm_spawn(struct agent_vms *v, const Yun__AgentSpawnRequest *q, const char *request_id,
                   struct agent_vm_state *ret, char *msg, size_t msg_size);

/* OP_AGENT_DESTROY. An instance without a record is answered as unknown
 * (known and has_domain false: nothing to do here; a domain of that name
 * is not ours and stays). Otherwise the record becomes "deleting" and the
 * destroy runs: domain destroyed and undefined (with its managed save and
 * NVRAM), overlay volume, console log and directory deleted, the image
 * cache's holds released, the record deleted, then the event "deleted"
 * (or "delete_failed" with the reason; a later destroy tries again).
 * Idempotent. Returns 0 and the state before in '*ret', or an error with
 * a sentence in 'msg'. */
int agent_vm_destroy(struct agent_vms *v, const char *id, const char *request_id,
                     struct agent_vm_state *ret, char *msg, size_t msg_size);

/* OP_AGENT_ACTION: 'action' is start, stop, reboot (soft, or 'hard'),
 * pause, unpause, suspend or resume (libvirt: create, ACPI shutdown then
 * destroy after the shutdown timeout, ACPI reboot then reset after it /
 * destroy and create again, suspend, resume, managed save, create).
 * Returns 0 and calls 'done' later from the loop (never from inside this
 * call) once libvirt did what was asked: a stop or soft reboot is done
 * when the guest was asked, the events "stopped" and "rebooted" follow.
 * Returns -ENOENT (no such instance), YUN_E_INVALID, YUN_E_CONFLICT (it
 * is being built or deleted, or another action runs) with a sentence in
 * 'msg', and then never calls 'done'. */
int agent_vm_action(struct agent_vms *v, const char *id, const char *action, bool hard,
                    const char *request_id, agent_vm_done_fn done, void *data, char *msg,
                    size_t msg_size);

/* OP_AGENT_SNAPSHOT: starts the snapshot of active instance 'id' into
 * image 'image_id': a worker copies its disk chain into one qcow2 without
 * backing file (a running guest is paused meanwhile), the uploader sends
 * it (OP_SNAPSHOT_UPLOAD), and "snapshot_done" or "snapshot_failed" (with
 * the reason) follows; the copy is removed in every case. Returns 0 with
 * the state in '*ret' once started (again for the same image while it
 * runs), or -ENOENT, YUN_E_CONFLICT (built, deleted, or busy with an
 * action or another snapshot), -EOPNOTSUPP (no uploader) with a sentence
 * in 'msg'. */
int agent_vm_snapshot(struct agent_vms *v, const char *id, const char *image_id,
                      const char *request_id, struct agent_vm_state *ret, char *msg,
                      size_t msg_size);

/* OP_AGENT_CONSOLE: the last 'lines' lines (0 = AGENT_VM_CONSOLE_LINES_DEFAULT, at most
 * AGENT_VM_CONSOLE_LINES_MAX) of the instance's console log, at most
 * 'max_bytes' (and AGENT_VM_CONSOLE_BYTES_MAX) read from its end, as
 * UTF-8 text without carriage returns ("" before the guest wrote
 * anything). '*ret' is malloc'ed. -ENOENT with a sentence for an unknown
 * instance. */
int agent_vm_console(struct agent_vms *v, const char *id, uint32_t lines, size_t max_bytes,
                     char **ret, char *msg, size_t msg_size);

/* OP_AGENT_LIST and the start-up sync: what 'v' holds, read from libvirt
 * now. */
int agent_vm_list(struct agent_vms *v, struct agent_vm_report *ret);

/* Applies the scheduler's answer to the start-up sync: the instances it
 * names in 'delete' are destroyed (those the agent holds; others are
 * ignored). Returns the number of destroys started. */
size_t agent_vm_sync_apply(struct agent_vms *v, const Yun__InstanceSyncReply *y);

struct agent_vms_stats {
    size_t instances;    /* records held */
    size_t building, active, deleting;
    size_t jobs;         /* libvirt jobs queued or running */
    size_t busy;         /* instances with work in progress (jobs, image acquires) */
    size_t unknown_domains; /* found at start */
};
void agent_vms_stats(const struct agent_vms *v, struct agent_vms_stats *ret);

/* ---- The pieces, for the benchmark and the tests ---- */

/* Finds the directory pool 'name' at 'dir', or defines (autostart) and
 * starts it; a pool of that name elsewhere is YUN_E_CONFIG. Returns 0 and
 * a reference in '*ret' (virStoragePoolFree), or an error with a
 * sentence. */
int agent_vm_pool_open(virConnectPtr conn, const char *name, const char *dir,
                       virStoragePoolPtr *ret, char *msg, size_t msg_size);

/* Creates volume 'name' in 'pool': a qcow2 (compat 1.1) overlay of
 * 'capacity' bytes whose backing file is 'base_path' in 'base_format',
 * stated so that nothing probes it. Blocking (runs qemu-img through
 * libvirtd): call it off the loop. Returns 0, or -EIO with libvirt's
 * sentence in 'msg'. */
int agent_vm_disk_create(virStoragePoolPtr pool, const char *name, const char *base_path,
                         const char *base_format, uint64_t capacity, char *msg,
                         size_t msg_size);

/* ---- Agent glue ---- */

/* Opens the instance table of agent 'a' from its config; its events go to
 * command.c. Returns 0 or a logged negative errno. */
int agent_vm_start(struct agent *a);
void agent_vm_stop(struct agent *a);
