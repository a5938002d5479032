/* SPDX-License-Identifier: Apache-2.0
 * test-vm.c: the agent's instances (agent/vm.c) on libvirt's
 * test:///default driver, whose storage pools are real enough to run the
 * overlay code unchanged: spawn and destroy bookkeeping (record, domain,
 * volume, directory, image cache holds; nothing left after a destroy or a
 * failed spawn; idempotent commands), the actions, libvirt's power states
 * and events as the scheduler hears them (the reboot debounce: a stop
 * followed by a start is a reboot, never a stop), and the reconciliation
 * at start (unknown domains reported, never destroyed; vanished domains
 * reported; interrupted spawns and deletes finished). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "err.h"
#include "vm-fixture.h"

#define DEBOUNCE_MS 300
#define SHUTDOWN_MS 300

static struct yun_loop *g_loop;
static virConnectPtr g_conn;

static int
setup_group(void **state)
{
    if (yun_loop_new(&g_loop) < 0)
        return -1;
    g_conn = fix_connect(g_loop);
    return g_conn ? 0 : -1;
}

static int
teardown_group(void **state)
{
    if (g_conn)
        virConnectClose(g_conn);
    (void)yun_loop_run_once(g_loop, 0);
    g_loop = yun_loop_free(g_loop);
    return 0;
}

/* The running test's fixture: its teardown frees it even after a failure,
 * so that one failing test does not fail the next ones. */
static struct vm_fixture *g_fix;

static struct vm_fixture *
fix_new(const char *name)
{
    struct vm_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    g_fix = f;
    assert_int_equal(fix_open_store(f, g_loop, g_conn, name), 0);
    assert_int_equal(fix_open_vms(f, DEBOUNCE_MS, SHUTDOWN_MS), 0);
    return f;
}

static void
fix_free(struct vm_fixture *f)
{
    fix_done(f);
    free(f);
    g_fix = NULL;
}

static int
teardown(void **state)
{
    if (g_fix)
        fix_free(g_fix);
    return 0;
}

static virDomainPtr
domain_of(const char *id)
{
    return virDomainLookupByUUIDString(g_conn, id);
}

static bool
has_domain(const char *id)
{
    virDomainPtr d = domain_of(id);
    if (d)
        virDomainFree(d);
    return d != NULL;
}

static bool
has_volume(struct vm_fixture *f, const char *name)
{
    virStoragePoolPtr p = virStoragePoolLookupByName(g_conn, f->pool);
    if (!p)
        return false;
    virStorageVolPtr v = virStorageVolLookupByName(p, name);
    virStoragePoolFree(p);
    if (v)
        virStorageVolFree(v);
    return v != NULL;
}

static Yun__AgentInstanceRecord *
record_of(struct vm_fixture *f, const char *id)
{
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(f->store, false, &txn), 0);
    ProtobufCMessage *m = NULL;
    int r = yun_txn_get_msg(txn, AGENT_VM_DB, id, &yun__agent_instance_record__descriptor, &m);
    yun_txn_abort(txn);
    return r < 0 ? NULL : (Yun__AgentInstanceRecord *)m;
}

static bool
path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Spawns 's' and runs until its spawn ends; returns the event's name. */
static const char *
spawn_wait(struct vm_fixture *f, struct fix_spawn *s)
{
    struct agent_vm_state st;
    char msg[512] = "";
    size_t from = f->n_events;
    int r = agent_vm_spawn(f->vms, &s->q, "req-spawn", &st, msg, sizeof msg);
    if (r < 0)
        fail_msg("spawn refused: %s", msg);
    assert_true(st.known);
    assert_int_equal(st.has_domain, s->q.rebuild);
    assert_true(FIX_RUN_UNTIL(f, FIX_DEADLINE_MS,
                              fix_find_event(f, from, s->id, "spawned") ||
                                  fix_find_event(f, from, s->id, "spawn_failed")));
    return fix_find_event(f, from, s->id, "spawned") ? "spawned" : "spawn_failed";
}

static void
destroy_wait(struct vm_fixture *f, const char *id)
{
    struct agent_vm_state st;
    char msg[512] = "";
    size_t from = f->n_events;
    assert_int_equal(agent_vm_destroy(f->vms, id, "req-destroy", &st, msg, sizeof msg), 0);
    assert_true(st.known);
    assert_true(FIX_RUN_UNTIL(f, FIX_DEADLINE_MS, fix_find_event(f, from, id, "deleted")));
}

static bool
vms_idle(struct vm_fixture *f)
{
    struct agent_vms_stats st;
    agent_vms_stats(f->vms, &st);
    return st.jobs == 0 && st.busy == 0;
}

/* --- power states ------------------------------------------------------------ */

static void
test_power_mapping(void **state)
{
    static const struct {
        int state, reason;
        bool saved;
        enum agent_vm_power want;
    } cases[] = {
        { VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_BOOTED, false, AGENT_VM_POWER_RUNNING },
        { VIR_DOMAIN_BLOCKED, 0, false, AGENT_VM_POWER_RUNNING },
        { VIR_DOMAIN_SHUTDOWN, VIR_DOMAIN_SHUTDOWN_USER, false, AGENT_VM_POWER_RUNNING },
        { VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_USER, false, AGENT_VM_POWER_PAUSED },
        { VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_IOERROR, false, AGENT_VM_POWER_PAUSED },
        { VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_SHUTDOWN, false, AGENT_VM_POWER_SHUTOFF },
        { VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_DESTROYED, false, AGENT_VM_POWER_SHUTOFF },
        { VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_SAVED, true, AGENT_VM_POWER_SUSPENDED },
        { VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_CRASHED, false, AGENT_VM_POWER_CRASHED },
        { VIR_DOMAIN_CRASHED, VIR_DOMAIN_CRASHED_PANICKED, false, AGENT_VM_POWER_CRASHED },
        { VIR_DOMAIN_PMSUSPENDED, 0, false, AGENT_VM_POWER_SUSPENDED },
        { VIR_DOMAIN_NOSTATE, 0, false, AGENT_VM_POWER_NOSTATE },
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++)
        assert_int_equal(agent_vm_power_from_libvirt(cases[i].state, cases[i].reason,
                                                     cases[i].saved),
                         cases[i].want);
    /* The scheduler's spellings, both ways. */
    static const char *const names[] = { "nostate", "running", "shutoff", "paused",
                                         "suspended", "crashed" };
    for (int p = 0; p < _AGENT_VM_POWER_MAX; p++) {
        assert_string_equal(agent_vm_power_to_string(p), names[p]);
        assert_int_equal(agent_vm_power_from_string(names[p]), p);
    }
    assert_int_equal(agent_vm_power_from_string("warm"), _AGENT_VM_POWER_INVALID);
}

/* --- spawn and destroy --------------------------------------------------------- */

static void
test_spawn_destroy(void **state)
{
    struct vm_fixture *f = fix_new("spawn-destroy");
    struct fix_spawn s;
    fix_spawn_init(f, &s, true);
    assert_string_equal(spawn_wait(f, &s), "spawned");
    const struct fix_event *ev = fix_must_event(f, 0, s.id, "spawned");
    assert_string_equal(ev->power, "running");

    /* The record, complete. */
    Yun__AgentInstanceRecord *rec = record_of(f, s.id);
    assert_non_null(rec);
    assert_string_equal(rec->state, "active");
    assert_int_equal(rec->n_images, 3);
    char want[1024];
    snprintf(want, sizeof want, "%s/images/%s", f->state_dir, f->images[0].sha512);
    assert_string_equal(rec->base_path, want);
    assert_string_equal(rec->base_format, "raw");
    snprintf(want, sizeof want, "%s/images/%s", f->state_dir, f->images[1].sha512);
    assert_string_equal(rec->kernel_path, want);
    snprintf(want, sizeof want, "%s/instances/%s.qcow2", f->state_dir, s.id);
    assert_string_equal(rec->disk_path, want);
    assert_int_equal(rec->disk_capacity, 1ull << 30); /* the flavor's 1 GiB > the image */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/instances/%s", f->state_dir, s.id);
    assert_string_equal(rec->dir, dir);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0711);

    /* The domain: persistent, running, the stated chain, kernel boot. */
    virDomainPtr d = domain_of(s.id);
    assert_non_null(d);
    assert_int_equal(virDomainIsPersistent(d), 1);
    assert_int_equal(virDomainIsActive(d), 1);
    char name[64];
    snprintf(name, sizeof name, "yun-%s", s.id);
    assert_string_equal(virDomainGetName(d), name);
    char *xml = virDomainGetXMLDesc(d, 0);
    assert_non_null(strstr(xml, rec->base_path));
    assert_non_null(strstr(xml, rec->kernel_path));
    assert_non_null(strstr(xml, "relabel='no'"));
    free(xml);
    virDomainFree(d);

    /* The overlay volume on the cached base. */
    virStoragePoolPtr p = virStoragePoolLookupByName(g_conn, f->pool);
    assert_non_null(p);
    virStorageVolPtr v = virStorageVolLookupByName(p, rec->disk_volume);
    assert_non_null(v);
    char *vx = virStorageVolGetXMLDesc(v, 0);
    assert_non_null(strstr(vx, "<format type='qcow2'/>"));
    snprintf(want, sizeof want, "<path>%s</path>", rec->base_path);
    assert_non_null(strstr(vx, want));
    free(vx);
    virStorageVolFree(v);
    virStoragePoolFree(p);

    /* The images are held while the instance lives. */
    struct agent_image_cache_stats cs;
    agent_image_cache_stats(f->cache, &cs);
    assert_int_equal(cs.bytes_in_use, f->images[0].size + f->images[1].size + f->images[2].size);

    /* The same spawn again: answered, "spawned" said again. */
    struct agent_vm_state ast;
    char msg[512] = "";
    size_t from = f->n_events;
    assert_int_equal(agent_vm_spawn(f->vms, &s.q, "req-again", &ast, msg, sizeof msg), 0);
    assert_true(ast.known && ast.has_domain);
    assert_int_equal(ast.power, AGENT_VM_POWER_RUNNING);
    assert_non_null(fix_find_event(f, from, s.id, "spawned"));

    /* The list. */
    struct agent_vm_report rep = { 0 };
    assert_int_equal(agent_vm_list(f->vms, &rep), 0);
    assert_int_equal(rep.n_states, 1);
    assert_string_equal(rep.states[0].id, s.id);
    assert_true(rep.states[0].known && rep.states[0].has_domain);
    assert_int_equal(rep.states[0].power, AGENT_VM_POWER_RUNNING);
    agent_vm_report_done(&rep);

    /* Destroy: nothing of it is left; the images are unused. */
    char disk[1024], vol[128];
    snprintf(disk, sizeof disk, "%s", rec->disk_path);
    snprintf(vol, sizeof vol, "%s", rec->disk_volume);
    yun__agent_instance_record__free_unpacked(rec, NULL);
    destroy_wait(f, s.id);
    assert_false(has_domain(s.id));
    assert_false(has_volume(f, vol));
    assert_false(path_exists(dir));
    assert_null(record_of(f, s.id));
    agent_image_cache_stats(f->cache, &cs);
    assert_int_equal(cs.bytes_in_use, 0);
    assert_int_equal(cs.images, 3); /* still cached */
    struct agent_vms_stats vs;
    agent_vms_stats(f->vms, &vs);
    assert_int_equal(vs.instances, 0);

    /* Destroy again: unknown, nothing to do, no event. */
    from = f->n_events;
    assert_int_equal(agent_vm_destroy(f->vms, s.id, "req-3", &ast, msg, sizeof msg), 0);
    assert_false(ast.known);
    assert_false(ast.has_domain);
    fix_run_for(f, 50);
    assert_int_equal(fix_count_events(f, from, s.id, NULL), 0);
    fix_free(f);
}

static void
test_spawn_failures(void **state)
{
    struct vm_fixture *f = fix_new("spawn-failures");
    struct agent_vm_state st;
    char msg[512];

    /* Refused at once: nothing is written. */
    struct fix_spawn s;
    fix_spawn_init(f, &s, false);
    s.inst.id = (char *)"not-a-uuid";
    assert_int_equal(agent_vm_spawn(f->vms, &s.q, NULL, &st, msg, sizeof msg), YUN_E_INVALID);
    fix_spawn_init(f, &s, false);
    s.q.image_disk_format = (char *)"vmdk";
    assert_int_equal(agent_vm_spawn(f->vms, &s.q, NULL, &st, msg, sizeof msg), YUN_E_INVALID);
    assert_non_null(strstr(msg, "'vmdk'"));
    fix_spawn_init(f, &s, false);
    s.q.ramdisk_id = f->images[2].id;
    assert_int_equal(agent_vm_spawn(f->vms, &s.q, NULL, &st, msg, sizeof msg), YUN_E_INVALID);
    fix_spawn_init(f, &s, false);
    s.inst.flavor = NULL;
    assert_int_equal(agent_vm_spawn(f->vms, &s.q, NULL, &st, msg, sizeof msg), YUN_E_INVALID);
    struct agent_vms_stats vs;
    agent_vms_stats(f->vms, &vs);
    assert_int_equal(vs.instances, 0);

    /* An image the scheduler does not have: spawn_failed saying so. */
    fix_spawn_init(f, &s, false);
    char bogus[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(bogus), 0);
    s.q.image_id = bogus;
    assert_string_equal(spawn_wait(f, &s), "spawn_failed");
    const struct fix_event *ev = fix_must_event(f, 0, s.id, "spawn_failed");
    assert_non_null(strstr(ev->fault, bogus));
    assert_int_equal(ev->code, YUN_E_NOIMAGE);
    assert_null(record_of(f, s.id));
    assert_false(has_domain(s.id));

    /* libvirt refuses the domain: its words reach the user; the domain
     * that has our name but is not ours stays untouched. */
    fix_spawn_init(f, &s, false);
    char xml[512], other[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(other), 0);
    snprintf(xml, sizeof xml, "<domain type='test'><name>yun-%s</name><uuid>%s</uuid>"
             "<memory unit='MiB'>8</memory><os><type>hvm</type></os></domain>", s.id, other);
    virDomainPtr foreign = virDomainDefineXML(g_conn, xml);
    assert_non_null(foreign);
    assert_string_equal(spawn_wait(f, &s), "spawn_failed");
    ev = fix_must_event(f, 0, s.id, "spawn_failed");
    assert_non_null(strstr(ev->fault, "Cannot define the domain"));
    assert_non_null(strstr(ev->fault, other)); /* libvirt's own sentence names it */
    assert_true(FIX_RUN_UNTIL(f, 1000, vms_idle(f)));
    assert_null(record_of(f, s.id));
    char vol[128];
    snprintf(vol, sizeof vol, "%s.qcow2", s.id);
    assert_false(has_volume(f, vol));
    virDomainPtr still = virDomainLookupByUUIDString(g_conn, other);
    assert_non_null(still);
    virDomainFree(still);
    assert_int_equal(virDomainUndefine(foreign), 0);
    virDomainFree(foreign);

    /* A destroy while the images are still coming: deleted, never spawned. */
    fix_spawn_init(f, &s, true);
    size_t from = f->n_events;
    assert_int_equal(agent_vm_spawn(f->vms, &s.q, NULL, &st, msg, sizeof msg), 0);
    assert_int_equal(agent_vm_destroy(f->vms, s.id, NULL, &st, msg, sizeof msg), 0);
    assert_true(st.known);
    assert_true(FIX_RUN_UNTIL(f, FIX_DEADLINE_MS, fix_find_event(f, from, s.id, "deleted")));
    fix_run_for(f, 100);
    assert_null(fix_find_event(f, from, s.id, "spawned"));
    assert_null(fix_find_event(f, from, s.id, "spawn_failed"));
    assert_null(record_of(f, s.id));
    assert_false(has_domain(s.id));
    struct agent_image_cache_stats cs;
    agent_image_cache_stats(f->cache, &cs);
    assert_int_equal(cs.bytes_in_use, 0);

    /* A spawn of an instance being deleted is refused. */
    fix_spawn_init(f, &s, false);
    assert_string_equal(spawn_wait(f, &s), "spawned");
    from = f->n_events;
    assert_int_equal(agent_vm_destroy(f->vms, s.id, NULL, &st, msg, sizeof msg), 0);
    assert_int_equal(agent_vm_spawn(f->vms, &s.q, NULL, &st, msg, sizeof msg), YUN_E_CONFLICT);
    assert_true(FIX_RUN_UNTIL(f, FIX_DEADLINE_MS, fix_find_event(f, from, s.id, "deleted")));
    fix_free(f);
}

/* --- actions ----------------------------------------------------------------------- */

struct action_result {
    bool done;
    int r;
    enum agent_vm_power power;
    char msg[512];
};

static void
on_action(int r, const char *message, const struct agent_vm_state *st, void *data)
{
    struct action_result *a = data;
    a->done = true;
    a->r = r;
    a->power = st ? st->power : AGENT_VM_POWER_NOSTATE;
    snprintf(a->msg, sizeof a->msg, "%s", message);
}

static struct action_result
act(struct vm_fixture *f, const char *id, const char *action, bool hard)
{
    struct action_result a = { 0 };
    char msg[512] = "";
    int r = agent_vm_action(f->vms, id, action, hard, "req-act", on_action, &a, msg, sizeof msg);
    if (r < 0)
        fail_msg("%s refused: %s", action, msg);
    assert_false(a.done); /* never from inside the call */
    assert_true(FIX_RUN_UNTIL(f, FIX_DEADLINE_MS, a.done));
    return a;
}

/* Runs until the instance's next event after 'from' is 'event'. */
static void
expect_event(struct vm_fixture *f, size_t from, const char *id, const char *event,
             const char *power)
{
    if (!FIX_RUN_UNTIL(f, FIX_DEADLINE_MS, fix_find_event(f, from, id, NULL)))
        fail_msg("no event after '%s'", event);
    const struct fix_event *e = fix_must_event(f, from, id, NULL);
    if (strcmp(e->event, event) != 0)
        fail_msg("event '%s', expected '%s'", e->event, event);
    assert_string_equal(e->power, power);
}

static void
test_actions(void **state)
{
    struct vm_fixture *f = fix_new("actions");
    struct fix_spawn s;
    fix_spawn_init(f, &s, false);
    assert_string_equal(spawn_wait(f, &s), "spawned");
    char msg[512];
    struct action_result a;

    size_t from = f->n_events;
    a = act(f, s.id, "stop", false);
    assert_int_equal(a.r, 0);
    expect_event(f, from, s.id, "stopped", "shutoff");

    from = f->n_events;
    a = act(f, s.id, "start", false);
    assert_int_equal(a.r, 0);
    assert_int_equal(a.power, AGENT_VM_POWER_RUNNING);
    expect_event(f, from, s.id, "started", "running");

    from = f->n_events;
    a = act(f, s.id, "pause", false);
    assert_int_equal(a.power, AGENT_VM_POWER_PAUSED);
    expect_event(f, from, s.id, "paused", "paused");
    from = f->n_events;
    a = act(f, s.id, "unpause", false);
    assert_int_equal(a.power, AGENT_VM_POWER_RUNNING);
    expect_event(f, from, s.id, "resumed", "running");

    from = f->n_events;
    a = act(f, s.id, "suspend", false);
    assert_int_equal(a.r, 0);
    assert_int_equal(a.power, AGENT_VM_POWER_SUSPENDED);
    virDomainPtr d = domain_of(s.id);
    assert_int_equal(virDomainHasManagedSaveImage(d, 0), 1);
    virDomainFree(d);
    expect_event(f, from, s.id, "suspended", "suspended");
    from = f->n_events;
    a = act(f, s.id, "resume", false);
    assert_int_equal(a.power, AGENT_VM_POWER_RUNNING);
    expect_event(f, from, s.id, "resumed", "running");

    /* Hard reboot: a new run of the domain, reported as a reboot. */
    from = f->n_events;
    a = act(f, s.id, "reboot", true);
    assert_int_equal(a.r, 0);
    expect_event(f, from, s.id, "rebooted", "running");
    fix_run_for(f, DEBOUNCE_MS + 100);
    assert_int_equal(fix_count_events(f, from, s.id, "stopped"), 0);

    /* Soft reboot: the test driver's guest never answers ACPI, so the
     * shutdown timeout resets it. */
    from = f->n_events;
    int64_t t0 = yun_now_ms();
    a = act(f, s.id, "reboot", false);
    assert_int_equal(a.r, 0);
    expect_event(f, from, s.id, "rebooted", "running");
    assert_true(yun_now_ms() - t0 >= SHUTDOWN_MS);

    /* Stop of a paused instance powers it off (no ACPI to a paused guest). */
    (void)act(f, s.id, "pause", false);
    from = f->n_events;
    a = act(f, s.id, "stop", false);
    assert_int_equal(a.power, AGENT_VM_POWER_SHUTOFF);
    expect_event(f, from, s.id, "stopped", "shutoff");
    (void)act(f, s.id, "start", false);

    /* Refusals. */
    struct action_result none = { 0 };
    char other[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(other), 0);
    assert_int_equal(agent_vm_action(f->vms, other, "start", false, NULL, on_action, &none, msg,
                                     sizeof msg), -ENOENT);
    assert_non_null(strstr(msg, other));
    assert_int_equal(agent_vm_action(f->vms, s.id, "dance", false, NULL, on_action, &none, msg,
                                     sizeof msg), YUN_E_INVALID);
    assert_int_equal(agent_vm_action(f->vms, s.id, "pause", true, NULL, on_action, &none, msg,
                                     sizeof msg), YUN_E_INVALID);
    struct action_result first = { 0 };
    assert_int_equal(agent_vm_action(f->vms, s.id, "pause", false, NULL, on_action, &first, msg,
                                     sizeof msg), 0);
    assert_int_equal(agent_vm_action(f->vms, s.id, "unpause", false, NULL, on_action, &none,
                                     msg, sizeof msg), YUN_E_CONFLICT);
    assert_true(FIX_RUN_UNTIL(f, FIX_DEADLINE_MS, first.done));
    assert_false(none.done);

    destroy_wait(f, s.id);
    fix_free(f);
}

/* --- what the guest (or anyone outside) does ------------------------------------ */

static void
test_guest_events(void **state)
{
    struct vm_fixture *f = fix_new("guest-events");
    struct fix_spawn s;
    fix_spawn_init(f, &s, false);
    assert_string_equal(spawn_wait(f, &s), "spawned");
    virDomainPtr d = domain_of(s.id);
    assert_non_null(d);

    /* The guest powers itself off: "stopped", after the debounce. */
    size_t from = f->n_events;
    int64_t t0 = yun_now_ms();
    assert_int_equal(virDomainShutdown(d), 0);
    fix_run_for(f, DEBOUNCE_MS / 3);
    assert_int_equal(fix_count_events(f, from, s.id, NULL), 0);
    expect_event(f, from, s.id, "stopped", "shutoff");
    assert_true(yun_now_ms() - t0 >= DEBOUNCE_MS);

    from = f->n_events;
    assert_int_equal(virDomainCreate(d), 0);
    expect_event(f, from, s.id, "started", "running");

    /* A reboot done as a stop and a start: one "rebooted", no "stopped". */
    from = f->n_events;
    assert_int_equal(virDomainDestroy(d), 0);
    assert_int_equal(virDomainCreate(d), 0);
    fix_run_for(f, 3 * DEBOUNCE_MS);
    assert_int_equal(fix_count_events(f, from, s.id, "stopped"), 0);
    assert_int_equal(fix_count_events(f, from, s.id, "rebooted"), 1);
    assert_int_equal(fix_count_events(f, from, s.id, NULL), 1);

    /* Paused and resumed from outside. */
    from = f->n_events;
    assert_int_equal(virDomainSuspend(d), 0);
    expect_event(f, from, s.id, "paused", "paused");
    from = f->n_events;
    assert_int_equal(virDomainResume(d), 0);
    expect_event(f, from, s.id, "resumed", "running");

    /* A managed save from outside is a suspend. */
    from = f->n_events;
    assert_int_equal(virDomainManagedSave(d, 0), 0);
    expect_event(f, from, s.id, "suspended", "suspended");
    from = f->n_events;
    assert_int_equal(virDomainCreate(d), 0);
    expect_event(f, from, s.id, "resumed", "running");

    /* The domain is removed behind the agent's back: "vanished", once;
     * the record stays until the scheduler deletes the instance. */
    from = f->n_events;
    assert_int_equal(virDomainDestroy(d), 0);
    assert_int_equal(virDomainUndefineFlags(d, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE), 0);
    virDomainFree(d);
    assert_true(FIX_RUN_UNTIL(f, FIX_DEADLINE_MS, fix_find_event(f, from, s.id, "vanished")));
    const struct fix_event *e = fix_must_event(f, from, s.id, "vanished");
    assert_non_null(strstr(e->fault, "gone from libvirt"));
    fix_run_for(f, 2 * DEBOUNCE_MS);
    assert_int_equal(fix_count_events(f, from, s.id, NULL), 1);
    Yun__AgentInstanceRecord *rec = record_of(f, s.id);
    assert_non_null(rec);
    yun__agent_instance_record__free_unpacked(rec, NULL);
    struct agent_vm_report rep = { 0 };
    assert_int_equal(agent_vm_list(f->vms, &rep), 0);
    assert_int_equal(rep.n_states, 1);
    assert_true(rep.states[0].known);
    assert_false(rep.states[0].has_domain);
    agent_vm_report_done(&rep);

    /* Deleting it still cleans up everything else. */
    destroy_wait(f, s.id);
    assert_null(record_of(f, s.id));
    fix_free(f);
}

/* --- reconciliation at start ------------------------------------------------------- */

static void
put_record(struct vm_fixture *f, Yun__AgentInstanceRecord *rec)
{
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(f->store, true, &txn), 0);
    assert_int_equal(yun_txn_put_msg(txn, AGENT_VM_DB, rec->spawn->instance->id, &rec->base), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
}

static void
test_reconcile(void **state)
{
    struct vm_fixture *f = fix_new("reconcile");
    struct fix_spawn a, b, g;
    fix_spawn_init(f, &a, false);
    fix_spawn_init(f, &b, true);
    fix_spawn_init(f, &g, true);
    assert_string_equal(spawn_wait(f, &a), "spawned");
    assert_string_equal(spawn_wait(f, &b), "spawned");
    assert_string_equal(spawn_wait(f, &g), "spawned");
    Yun__AgentInstanceRecord *grec = record_of(f, g.id);
    char gbase[1024], gkernel[1024];
    snprintf(gbase, sizeof gbase, "%s", grec->base_path);
    snprintf(gkernel, sizeof gkernel, "%s", grec->kernel_path);

    /* A "yun-" domain no record claims: another agent's, or an orphan. */
    char c_id[YUN_UUID_STR_SIZE], xml[512];
    assert_int_equal(yun_uuid_new(c_id), 0);
    snprintf(xml, sizeof xml, "<domain type='test'><name>yun-%s</name><uuid>%s</uuid>"
             "<memory unit='MiB'>8</memory><os><type>hvm</type></os></domain>", c_id, c_id);
    virDomainPtr c = virDomainDefineXML(g_conn, xml);
    assert_non_null(c);
    assert_int_equal(virDomainCreate(c), 0);

    /* The agent stops (its records stay), and while it is away: */
    fix_close(f);
    /* b's domain vanishes, */
    virDomainPtr bd = domain_of(b.id);
    assert_int_equal(virDomainDestroy(bd), 0);
    assert_int_equal(virDomainUndefine(bd), 0);
    virDomainFree(bd);
    /* d was cut short in its spawn after making its disk (as after a
     * SIGKILL: a building record and a volume), */
    assert_int_equal(fix_reopen_store(f), 0);
    /* g was cut short after its domain started, before its record said
     * so (or where its images are), */
    {
        Yun__AgentInstanceRecord gr = *grec;
        gr.state = (char *)"building";
        gr.base_path = gr.base_format = gr.kernel_path = gr.ramdisk_path = (char *)"";
        gr.disk_capacity = 0;
        put_record(f, &gr);
        yun__agent_instance_record__free_unpacked(grec, NULL);
    }
    struct fix_spawn dsp, esp;
    fix_spawn_init(f, &dsp, false);
    fix_spawn_init(f, &esp, false);
    char dvol[128], dpath[1024], ddir[1024], dcons[1100];
    snprintf(dvol, sizeof dvol, "%s.qcow2", dsp.id);
    snprintf(dpath, sizeof dpath, "%s/instances/%s", f->state_dir, dvol);
    snprintf(ddir, sizeof ddir, "%s/instances/%s", f->state_dir, dsp.id);
    snprintf(dcons, sizeof dcons, "%s/console.log", ddir);
    char *images[] = { f->images[0].id };
    Yun__AgentInstanceRecord drec = YUN__AGENT_INSTANCE_RECORD__INIT;
    drec.spawn = &dsp.q;
    drec.state = (char *)"building";
    drec.pool = f->pool;
    drec.disk_volume = dvol;
    drec.disk_path = dpath;
    drec.dir = ddir;
    drec.console_log = dcons;
    drec.images = images;
    drec.n_images = 1;
    put_record(f, &drec);
    virStoragePoolPtr pool = virStoragePoolLookupByName(g_conn, f->pool);
    assert_non_null(pool);
    char msg[512];
    assert_int_equal(agent_vm_disk_create(pool, dvol, "/nonexistent/base", "raw", 1 << 20, msg,
                                          sizeof msg), 0);
    virStoragePoolFree(pool);
    assert_true(has_volume(f, dvol));
    /* and e was being deleted (its domain already gone). */
    Yun__AgentInstanceRecord erec = drec;
    char evol[128];
    snprintf(evol, sizeof evol, "%s.qcow2", esp.id);
    erec.spawn = &esp.q;
    erec.state = (char *)"deleting";
    erec.disk_volume = evol;
    put_record(f, &erec);

    /* The agent starts again. */
    f->n_events = 0;
    assert_int_equal(fix_open_vms(f, DEBOUNCE_MS, SHUTDOWN_MS), 0);
    struct agent_vms_stats vs;
    agent_vms_stats(f->vms, &vs);
    assert_int_equal(vs.unknown_domains, 1);
    assert_true(FIX_RUN_UNTIL(f, FIX_DEADLINE_MS,
                              vms_idle(f) && fix_find_event(f, 0, esp.id, "deleted")));
    /* b: vanished, reported with a fault, record kept. */
    const struct fix_event *e = fix_must_event(f, 0, b.id, "vanished");
    assert_non_null(e);
    assert_int_equal(e->code, -ENOENT);
    Yun__AgentInstanceRecord *rec = record_of(f, b.id);
    assert_non_null(rec);
    yun__agent_instance_record__free_unpacked(rec, NULL);
    /* d: cleaned up quietly (the scheduler retries it elsewhere). */
    assert_null(record_of(f, dsp.id));
    assert_false(has_volume(f, dvol));
    assert_int_equal(fix_count_events(f, 0, dsp.id, NULL), 0);
    /* e: deleted. */
    assert_null(record_of(f, esp.id));
    /* a: untouched, running, nothing said. */
    assert_int_equal(fix_count_events(f, 0, a.id, NULL), 0);
    assert_true(has_domain(a.id));
    /* g: kept, active, its images' paths found again. */
    rec = record_of(f, g.id);
    assert_non_null(rec);
    assert_string_equal(rec->state, "active");
    assert_string_equal(rec->base_path, gbase);
    assert_string_equal(rec->kernel_path, gkernel);
    assert_string_equal(rec->base_format, "raw");
    assert_int_equal(rec->disk_capacity, 1ull << 30);
    yun__agent_instance_record__free_unpacked(rec, NULL);
    assert_int_equal(fix_count_events(f, 0, g.id, NULL), 0);

    /* The sync's view: a and b known, c unknown. */
    destroy_wait(f, g.id);
    struct agent_vm_report rep = { 0 };
    assert_int_equal(agent_vm_list(f->vms, &rep), 0);
    assert_int_equal(rep.n_states, 2);
    assert_int_equal(rep.n_unknown_domains, 1);
    char cname[64];
    snprintf(cname, sizeof cname, "yun-%s", c_id);
    assert_string_equal(rep.unknown_domains[0], cname);
    for (size_t i = 0; i < rep.n_states; i++) {
        bool is_a = strcmp(rep.states[i].id, a.id) == 0;
        assert_true(is_a || strcmp(rep.states[i].id, b.id) == 0);
        assert_true(rep.states[i].known);
        assert_int_equal(rep.states[i].has_domain, is_a);
        assert_int_equal(rep.states[i].power,
                         is_a ? AGENT_VM_POWER_RUNNING : AGENT_VM_POWER_NOSTATE);
    }
    agent_vm_report_done(&rep);

    /* The scheduler's answer deletes a (and names c, which is not ours:
     * it stays). */
    char *del[] = { a.id, c_id };
    Yun__InstanceSyncReply y = YUN__INSTANCE_SYNC_REPLY__INIT;
    y.delete_ = del;
    y.n_delete_ = 2;
    size_t from = f->n_events;
    assert_int_equal(agent_vm_sync_apply(f->vms, &y), 1);
    assert_true(FIX_RUN_UNTIL(f, FIX_DEADLINE_MS, fix_find_event(f, from, a.id, "deleted")));
    assert_false(has_domain(a.id));
    assert_int_equal(virDomainIsActive(c), 1);
    /* A destroy of c from the scheduler: not ours, so unknown, untouched. */
    struct agent_vm_state st;
    assert_int_equal(agent_vm_destroy(f->vms, c_id, NULL, &st, msg, sizeof msg), 0);
    assert_false(st.known);
    assert_false(st.has_domain);
    fix_run_for(f, 50);
    assert_int_equal(virDomainIsActive(c), 1);

    assert_int_equal(virDomainDestroy(c), 0);
    assert_int_equal(virDomainUndefine(c), 0);
    virDomainFree(c);
    destroy_wait(f, b.id);
    fix_free(f);
}

/* --- rebuild ------------------------------------------------------------------------- */

static void
test_rebuild(void **state)
{
    struct vm_fixture *f = fix_new("rebuild");
    struct fix_spawn s;
    fix_spawn_init(f, &s, false);
    assert_string_equal(spawn_wait(f, &s), "spawned");
    Yun__AgentInstanceRecord *rec = record_of(f, s.id);
    assert_string_equal(rec->kernel_path, "");
    yun__agent_instance_record__free_unpacked(rec, NULL);

    /* Rebuilt to boot the kernel: a new disk and domain, same id. */
    s.q.rebuild = true;
    s.q.kernel_id = f->images[1].id;
    s.q.ramdisk_id = f->images[2].id;
    assert_string_equal(spawn_wait(f, &s), "spawned");
    rec = record_of(f, s.id);
    assert_string_equal(rec->state, "active");
    assert_int_equal(rec->n_images, 3);
    assert_string_not_equal(rec->kernel_path, "");
    virDomainPtr d = domain_of(s.id);
    char *xml = virDomainGetXMLDesc(d, 0);
    assert_non_null(strstr(xml, rec->kernel_path));
    free(xml);
    virDomainFree(d);
    yun__agent_instance_record__free_unpacked(rec, NULL);
    destroy_wait(f, s.id);
    struct agent_image_cache_stats cs;
    agent_image_cache_stats(f->cache, &cs);
    assert_int_equal(cs.bytes_in_use, 0);
    fix_free(f);
}

/* --- console ----------------------------------------------------------------------- */

static void
test_console(void **state)
{
    struct vm_fixture *f = fix_new("console");
    struct fix_spawn s;
    fix_spawn_init(f, &s, false);
    assert_string_equal(spawn_wait(f, &s), "spawned");
    char msg[512];
    char *out = NULL;

    /* Nothing written yet. */
    assert_int_equal(agent_vm_console(f->vms, s.id, 10, 0, &out, msg, sizeof msg), 0);
    assert_string_equal(out, "");
    free(out);

    char path[1024];
    snprintf(path, sizeof path, "%s/instances/%s/console.log", f->state_dir, s.id);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 1; i <= 300; i++)
        fprintf(fp, "line %d\r\n", i);
    fputs("bad \xff\xfe utf-8 \xc3\xa9\r\n", fp);
    fputs("last, no newline", fp);
    fclose(fp);

    assert_int_equal(agent_vm_console(f->vms, s.id, 3, 0, &out, msg, sizeof msg), 0);
    assert_string_equal(out, "line 300\nbad ?? utf-8 \xc3\xa9\nlast, no newline");
    free(out);
    /* 0 lines: the default 100. */
    assert_int_equal(agent_vm_console(f->vms, s.id, 0, 0, &out, msg, sizeof msg), 0);
    size_t lines = 0;
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 99);
    assert_non_null(strstr(out, "line 203\n"));
    assert_null(strstr(out, "line 202\n"));
    free(out);
    /* Bounded bytes: only the end. */
    assert_int_equal(agent_vm_console(f->vms, s.id, 10000, 64, &out, msg, sizeof msg), 0);
    assert_true(strlen(out) <= 64);
    assert_non_null(strstr(out, "last, no newline"));
    free(out);
    /* More lines than the file has: all of it. */
    assert_int_equal(agent_vm_console(f->vms, s.id, 10000, 0, &out, msg, sizeof msg), 0);
    assert_int_equal(strncmp(out, "line 1\nline 2\n", 14), 0);
    free(out);

    char other[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(other), 0);
    assert_int_equal(agent_vm_console(f->vms, other, 10, 0, &out, msg, sizeof msg), -ENOENT);
    destroy_wait(f, s.id);
    assert_false(path_exists(path));
    fix_free(f);
}

/* --- snapshots ------------------------------------------------------------------- */

/* The refusals of agent_vm_snapshot (the copy and the upload run in
 * tests/integration/test-snapshot.sh): a bad image id, an unknown
 * instance, a table without uploader. The snapshots directory is made
 * and emptied at start. */
static void
test_snapshot_refusals(void **state)
{
    struct vm_fixture *f = fix_new("snapshot");
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/snapshots", f->state_dir);
    assert_true(path_exists(dir));
    struct fix_spawn s;
    fix_spawn_init(f, &s, false);
    assert_string_equal(spawn_wait(f, &s), "spawned");
    struct agent_vm_state st;
    char msg[512] = "";
    char image[YUN_UUID_STR_SIZE], other[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(image), 0);
    assert_int_equal(yun_uuid_new(other), 0);
    assert_int_equal(agent_vm_snapshot(f->vms, s.id, "nope", "req", &st, msg, sizeof msg),
                     YUN_E_INVALID);
    assert_int_equal(agent_vm_snapshot(f->vms, other, image, "req", &st, msg, sizeof msg),
                     -ENOENT);
    assert_int_equal(agent_vm_snapshot(f->vms, s.id, image, "req", &st, msg, sizeof msg),
                     -EOPNOTSUPP);
    assert_non_null(strstr(msg, "cannot upload snapshots"));
    destroy_wait(f, s.id);

    /* A leftover copy goes at the next start. */
    snprintf(path, sizeof path, "%s/%s.qcow2", dir, image);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    fix_close(f);
    assert_true(path_exists(path));
    assert_int_equal(fix_reopen_store(f), 0);
    assert_int_equal(fix_open_vms(f, DEBOUNCE_MS, SHUTDOWN_MS), 0);
    assert_false(path_exists(path));
    fix_free(f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_power_mapping, teardown),
        cmocka_unit_test_teardown(test_spawn_destroy, teardown),
        cmocka_unit_test_teardown(test_spawn_failures, teardown),
        cmocka_unit_test_teardown(test_actions, teardown),
        cmocka_unit_test_teardown(test_guest_events, teardown),
        cmocka_unit_test_teardown(test_reconcile, teardown),
        cmocka_unit_test_teardown(test_rebuild, teardown),
        cmocka_unit_test_teardown(test_console, teardown),
        cmocka_unit_test_teardown(test_snapshot_refusals, teardown),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
