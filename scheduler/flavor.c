/* SPDX-License-Identifier: Apache-2.0
 * flavor.c: flavors (Nova's instance types): vCPUs, RAM in MiB, root,
 * ephemeral and swap disks, public or private to listed projects, and
 * free-form extra specs. Records (FlavorRecord) live in "flavors" by id,
 * with the unique name index "flavor_names" (name -> id). Admins create
 * and delete; everyone lists and shows the flavors they may use: public
 * ones, and private ones shared with their project (admins see all). A
 * flavor another project cannot use is "not found" to it.
 *
 * An instance keeps a copy of its flavor, so deleting a flavor changes no
 * instance. `yun-scheduler init` seeds the classic m1.* flavors plus
 * m1.nano, the smallest that boots the demo guest here.
 *
 * Also the helpers the compute files share (compute.h): text validation
 * and the audit pattern of image.c.
 *
 * Neighbours: instance.c (boots flavors), dispatch.c (rows), audit.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "log.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "compute.pb-c.h"

YUN_LOG_MODULE("sched.flavor");

#define FLAVOR_NAME_MAX 255
#define FLAVOR_ID_MAX 255
#define FLAVOR_SPECS_MAX 64
#define FLAVOR_SPEC_KEY_MAX 255
#define FLAVOR_SPEC_VALUE_MAX 255
#define FLAVOR_PROJECTS_MAX 128
#define PROJECT_MAX 64
#define FLAVOR_VCPUS_MAX 1024
#define FLAVOR_RAM_MAX (16u << 20)     /* MiB: 16 TiB */
#define FLAVOR_DISK_MAX (1u << 20)     /* GiB: 1 PiB */
#define FLAVOR_SWAP_MAX (1u << 20)     /* MiB: 1 TiB */

/* --- shared helpers ---------------------------------------------------------- */

int
sched_compute_audit_end(struct sched_call *call, const char *operation, const char *target,
                        int r)
{
    if (!call->audited) {
        int code = call->error ? call->error : r < 0 ? r : 0;
        const char *detail = call->error_message ? call->error_message
                                                 : code < 0 ? yun_strerror(code) : NULL;
        sched_audit(call, operation, target, code, detail);
    }
    call->audited = true;
    return r;
}

int
sched_compute_commit_audited(struct sched_call *call, struct yun_txn **txn,
                             const char *operation, const char *target, const char *detail)
{
    int r = sched_audit_txn(*txn, call, operation, target, 0, detail);
    if (r < 0)
        return r;
    r = yun_txn_commit(TAKE_PTR(*txn));
    if (r < 0)
        return r;
    call->audited = true;
    return 0;
}

/* --- records ----------------------------------------------------------------- */

static void
flavor_free(Yun__FlavorRecord *f)
{
    if (f)
        yun__flavor_record__free_unpacked(f, NULL);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Yun__FlavorRecord *, flavor_free)

static int
load_flavor(struct yun_txn *txn, const char *id, Yun__FlavorRecord **ret)
{
    ProtobufCMessage *m = NULL;
    int r = yun_txn_get_msg(txn, SCHED_DB_FLAVORS, id, &yun__flavor_record__descriptor, &m);
    if (r < 0)
        return r;
    *ret = (Yun__FlavorRecord *)m;
    return 0;
}

/* The id the name index gives 'name', copied into 'id'. */
static int
name_to_id(struct yun_txn *txn, const char *name, char id[FLAVOR_ID_MAX + 1])
{
    const void *v;
    size_t size;
    if (!*name || strlen(name) > FLAVOR_NAME_MAX)
        return -ENOENT;
    int r = yun_txn_get(txn, SCHED_DB_FLAVOR_NAMES, name, strlen(name), &v, &size);
    if (r < 0)
        return r;
    if (size == 0 || size > FLAVOR_ID_MAX)
        return -EBADMSG;
    memcpy(id, v, size);
    id[size] = '\0';
    return 0;
}

static bool
can_use(const struct sched_call *call, const Yun__FlavorRecord *f)
{
    if (f->is_public || call->is_admin)
        return true;
    const char *project = call->project ? call->project : "";
    for (size_t i = 0; *project && i < f->n_projects; i++)
        if (strcmp(f->projects[i], project) == 0)
            return true;
    return false;
}

int
sched_flavor_find(struct sched_call *call, struct yun_txn *txn, const char *ref,
                  Yun__FlavorRecord **ret)
{
    Yun__FlavorRecord *f = NULL;
    int r = -ENOENT;
    if (*ref && strlen(ref) <= FLAVOR_ID_MAX)
        r = load_flavor(txn, ref, &f);
    if (r == -ENOENT) {
        char id[FLAVOR_ID_MAX + 1];
        r = name_to_id(txn, ref, id);
        if (r >= 0)
            r = load_flavor(txn, id, &f);
    }
    if (r >= 0 && !can_use(call, f)) {
        flavor_free(f);
        r = -ENOENT;
    }
    if (r == -ENOENT)
        return sched_call_error(call, -ENOENT, "Flavor '%.255s' not found.", ref);
    if (r < 0)
        return r;
    *ret = f;
    return 0;
}

static int
reply_flavor(struct sched_call *call, const Yun__FlavorRecord *f)
{
    Yun__FlavorRecord view = *f;
    /* Only admins see whom a private flavor is shared with. */
    if (!call->is_admin) {
        view.projects = NULL;
        view.n_projects = 0;
    }
    Yun__FlavorReply y = YUN__FLAVOR_REPLY__INIT;
    y.flavor = &view;
    return sched_call_reply(call, &y.base);
}

/* --- create -------------------------------------------------------------------- */

static bool
spec_key_is_valid(const char *k)
{
    size_t len = strlen(k);
    if (len == 0 || len > FLAVOR_SPEC_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == ':' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

static int
check_create(struct sched_call *call, const Yun__FlavorCreateRequest *q)
{
    if (!yun_text_is_valid(q->name, FLAVOR_NAME_MAX))
        return sched_call_error(call, YUN_E_INVALID,
                                "Flavor name '%.64s' is not 1 to %d bytes of text without "
                                "control characters.", q->name, FLAVOR_NAME_MAX);
    if (*q->id && !yun_name_is_valid(q->id, FLAVOR_ID_MAX))
        return sched_call_error(call, YUN_E_INVALID,
                                "Flavor id '%.64s' is not 1 to %d characters of "
                                "[A-Za-z0-9._-].", q->id, FLAVOR_ID_MAX);
    if (q->vcpus < 1 || q->vcpus > FLAVOR_VCPUS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "vcpus must be from 1 to %d, not %u.",
                                FLAVOR_VCPUS_MAX, q->vcpus);
    if (q->ram_mb < 1 || q->ram_mb > FLAVOR_RAM_MAX)
        return sched_call_error(call, YUN_E_INVALID, "ram must be from 1 to %u MiB, not %u.",
                                FLAVOR_RAM_MAX, q->ram_mb);
    if (q->disk_gb > FLAVOR_DISK_MAX || q->ephemeral_gb > FLAVOR_DISK_MAX)
        return sched_call_error(call, YUN_E_INVALID,
                                "The root and ephemeral disks are at most %u GiB each.",
                                FLAVOR_DISK_MAX);
    if (q->swap_mb > FLAVOR_SWAP_MAX)
        return sched_call_error(call, YUN_E_INVALID, "swap is at most %u MiB, not %u.",
                                FLAVOR_SWAP_MAX, q->swap_mb);
    if (q->n_extra_specs > FLAVOR_SPECS_MAX)
        return sched_call_error(call, YUN_E_INVALID, "A flavor has at most %d extra specs.",
                                FLAVOR_SPECS_MAX);
    for (size_t i = 0; i < q->n_extra_specs; i++) {
        const Yun__FlavorSpec *sp = q->extra_specs[i];
        if (!spec_key_is_valid(sp->key))
            return sched_call_error(call, YUN_E_INVALID,
                                    "Extra spec key '%.64s' is not 1 to %d characters of "
                                    "[A-Za-z0-9_:.-].", sp->key, FLAVOR_SPEC_KEY_MAX);
        if (*sp->value && !yun_text_is_valid(sp->value, FLAVOR_SPEC_VALUE_MAX))
            return sched_call_error(call, YUN_E_INVALID,
                                    "The value of extra spec '%s' is not at most %d bytes of "
                                    "text without control characters.", sp->key,
                                    FLAVOR_SPEC_VALUE_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcmp(q->extra_specs[j]->key, sp->key) == 0)
                return sched_call_error(call, YUN_E_INVALID, "Extra spec '%s' is given twice.",
                                        sp->key);
    }
    if (q->n_projects > FLAVOR_PROJECTS_MAX)
        return sched_call_error(call, YUN_E_INVALID,
                                "A flavor is shared with at most %d projects.",
                                FLAVOR_PROJECTS_MAX);
    if (q->n_projects && !q->is_private)
        return sched_call_error(call, YUN_E_INVALID,
                                "Only a private flavor is shared with projects: a public one "
                                "is everyone's.");
    for (size_t i = 0; i < q->n_projects; i++)
        if (!yun_name_is_valid(q->projects[i], PROJECT_MAX))
            return sched_call_error(call, YUN_E_INVALID, "Project '%.64s' is not valid.",
                                    q->projects[i]);
    return 0;
}

/* Writes 'f' and its name entry in 'txn' unless its id or name is taken:
 * -EEXIST then, with the call's error stated when 'call' is not NULL. */
static int
flavor_insert(struct sched_call *call, struct yun_txn *txn, const Yun__FlavorRecord *f)
{
    int r = yun_txn_get(txn, SCHED_DB_FLAVORS, f->id, strlen(f->id), NULL, NULL);
    if (r >= 0)
        return call ? sched_call_error(call, YUN_E_CONFLICT, "Flavor id '%s' is already taken.",
                                       f->id)
                    : -EEXIST;
    if (r != -ENOENT)
        return r;
    r = yun_txn_get(txn, SCHED_DB_FLAVOR_NAMES, f->name, strlen(f->name), NULL, NULL);
    if (r >= 0)
        return call ? sched_call_error(call, YUN_E_CONFLICT,
                                       "A flavor named '%s' already exists.", f->name)
                    : -EEXIST;
    if (r != -ENOENT)
        return r;
    r = yun_txn_put_msg(txn, SCHED_DB_FLAVORS, f->id, &f->base);
    if (r >= 0)
        r = yun_txn_put(txn, SCHED_DB_FLAVOR_NAMES, f->name, strlen(f->name), f->id,
                        strlen(f->id));
    return r;
}

static int
flavor_create(struct sched_call *call, const Yun__FlavorCreateRequest *q)
{
    int r = check_create(call, q);
    if (r < 0)
        return r;
    char id[FLAVOR_ID_MAX + 1];
    if (*q->id) {
        snprintf(id, sizeof id, "%s", q->id);
    } else {
        char uuid[YUN_UUID_STR_SIZE];
        r = yun_uuid_new(uuid);
        if (r < 0)
            return r;
        snprintf(id, sizeof id, "%s", uuid);
    }
    /* Repeated projects are dropped. */
    _cleanup_free_ char **projects = calloc(q->n_projects + 1, sizeof *projects);
    if (!projects)
        return -ENOMEM;
    size_t n_projects = 0;
    for (size_t i = 0; i < q->n_projects; i++) {
        bool dup = false;
        for (size_t j = 0; j < n_projects && !dup; j++)
            dup = strcmp(projects[j], q->projects[i]) == 0;
        if (!dup)
            projects[n_projects++] = q->projects[i];
    }

    Yun__FlavorRecord f = YUN__FLAVOR_RECORD__INIT;
    f.id = id;
    f.name = q->name;
    f.vcpus = q->vcpus;
    f.ram_mb = q->ram_mb;
    f.disk_gb = q->disk_gb;
    f.ephemeral_gb = q->ephemeral_gb;
    f.swap_mb = q->swap_mb;
    f.is_public = !q->is_private;
    f.extra_specs = q->extra_specs;
    f.n_extra_specs = q->n_extra_specs;
    f.projects = projects;
    f.n_projects = n_projects;
    f.created_us = yun_wall_us();

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = flavor_insert(call, txn, &f);
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "flavor.create", id, NULL);
    if (r < 0)
        return r;
    log_req(YUN_LOG_NOTICE, call->req, 0,
            "flavor created flavor=%s name=\"%s\" vcpus=%u ram_mb=%u disk_gb=%u public=%s", id,
            f.name, f.vcpus, f.ram_mb, f.disk_gb, f.is_public ? "yes" : "no");
    return reply_flavor(call, &f);
}

/* OP_FLAVOR_CREATE: a new flavor with a unique id and name (admins). */
int
sched_flavor_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__FlavorCreateRequest *q = (const Yun__FlavorCreateRequest *)req;
    return sched_compute_audit_end(call, "flavor.create", q->name, flavor_create(call, q));
}

/* --- list, show, delete --------------------------------------------------------- */

struct flavor_list {
    const struct sched_call *call;
    Yun__FlavorRecord **v;
    size_t n, cap;
};

static int
collect_flavor(const void *key, size_t key_size, const void *val, size_t val_size, void *data)
{
    struct flavor_list *l = data;
    Yun__FlavorRecord *f = yun__flavor_record__unpack(NULL, val_size, val);
    if (!f)
        return -EBADMSG;
    if (!can_use(l->call, f)) {
        flavor_free(f);
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        Yun__FlavorRecord **p = realloc(l->v, cap * sizeof *p);
        if (!p) {
            flavor_free(f);
            return -ENOMEM;
        }
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = f;
    return 0;
}

static void
flavor_list_done(struct flavor_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        flavor_free(l->v[i]);
    free(l->v);
}

/* Smallest first: RAM, then vCPUs, root disk and name. */
static int
compare_flavors(const void *pa, const void *pb)
{
    const Yun__FlavorRecord *a = *(Yun__FlavorRecord *const *)pa;
    const Yun__FlavorRecord *b = *(Yun__FlavorRecord *const *)pb;
    if (a->ram_mb != b->ram_mb)
        return a->ram_mb < b->ram_mb ? -1 : 1;
    if (a->vcpus != b->vcpus)
        return a->vcpus < b->vcpus ? -1 : 1;
    if (a->disk_gb != b->disk_gb)
        return a->disk_gb < b->disk_gb ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* OP_FLAVOR_LIST: every flavor the caller may use, smallest first. */
int
sched_flavor_list(struct sched_call *call, const ProtobufCMessage *req)
{
    _cleanup_(flavor_list_done) struct flavor_list l = { .call = call };
    {
        _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
        int r = yun_txn_begin(call->s->store, false, &txn);
        if (r < 0)
            return r;
        r = yun_txn_iterate(txn, SCHED_DB_FLAVORS, NULL, 0, collect_flavor, &l);
        if (r < 0)
            return r;
    }
    if (l.n > 1)
        qsort(l.v, l.n, sizeof *l.v, compare_flavors);
    _cleanup_free_ Yun__FlavorRecord *views = calloc(l.n + 1, sizeof *views);
    _cleanup_free_ Yun__FlavorRecord **ptrs = calloc(l.n + 1, sizeof *ptrs);
    if (!views || !ptrs)
        return -ENOMEM;
    for (size_t i = 0; i < l.n; i++) {
        views[i] = *l.v[i];
        if (!call->is_admin) {
            views[i].projects = NULL;
            views[i].n_projects = 0;
        }
        ptrs[i] = &views[i];
    }
    Yun__FlavorListReply y = YUN__FLAVOR_LIST_REPLY__INIT;
    y.flavors = ptrs;
    y.n_flavors = l.n;
    return sched_call_reply(call, &y.base);
}

/* OP_FLAVOR_SHOW: one flavor by id or name. */
int
sched_flavor_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__FlavorRef *q = (const Yun__FlavorRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(flavor_freep) Yun__FlavorRecord *f = NULL;
    int r = yun_txn_begin(call->s->store, false, &txn);
    if (r < 0)
        return r;
    r = sched_flavor_find(call, txn, q->flavor, &f);
    if (r < 0)
        return r;
    return reply_flavor(call, f);
}

static int
flavor_delete(struct sched_call *call, const Yun__FlavorRef *q)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    _cleanup_(flavor_freep) Yun__FlavorRecord *f = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    r = sched_flavor_find(call, txn, q->flavor, &f);
    if (r < 0)
        return r;
    r = yun_txn_del(txn, SCHED_DB_FLAVORS, f->id, strlen(f->id));
    if (r >= 0) {
        r = yun_txn_del(txn, SCHED_DB_FLAVOR_NAMES, f->name, strlen(f->name));
        if (r == -ENOENT)
            r = 0;
    }
    if (r >= 0)
        r = sched_compute_commit_audited(call, &txn, "flavor.delete", f->id, NULL);
    if (r < 0)
        return r;
    log_req(YUN_LOG_NOTICE, call->req, 0, "flavor deleted flavor=%s name=\"%s\"", f->id,
            f->name);
    return reply_flavor(call, f);
}

/* OP_FLAVOR_DELETE: the record and its name go (admins); instances keep
 * their copy. */
int
sched_flavor_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__FlavorRef *q = (const Yun__FlavorRef *)req;
    return sched_compute_audit_end(call, "flavor.delete", q->flavor, flavor_delete(call, q));
}

/* --- seed ------------------------------------------------------------------------ */

/* Nova's classic ids; m1.nano has devstack's id 42. 128 MiB is the least
 * that boots Debian's 6.1 kernel with the demo busybox initramfs here. */
static const struct {
    const char *id, *name;
    uint32_t vcpus, ram_mb, disk_gb;
} seed_flavors[] = {
    { "42", "m1.nano", 1, 128, 1 },
    { "1", "m1.tiny", 1, 512, 1 },
    { "2", "m1.small", 1, 2048, 20 },
    { "3", "m1.medium", 2, 4096, 40 },
    { "4", "m1.large", 4, 8192, 80 },
};

int
sched_flavor_seed(struct sched *s, size_t *ret_created)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(s->store, true, &txn);
    if (r < 0)
        return r;
    size_t created = 0;
    for (size_t i = 0; i < ELEMENTSOF(seed_flavors); i++) {
        Yun__FlavorRecord f = YUN__FLAVOR_RECORD__INIT;
        f.id = (char *)seed_flavors[i].id;
        f.name = (char *)seed_flavors[i].name;
        f.vcpus = seed_flavors[i].vcpus;
        f.ram_mb = seed_flavors[i].ram_mb;
        f.disk_gb = seed_flavors[i].disk_gb;
        f.is_public = true;
        f.created_us = yun_wall_us();
        r = flavor_insert(NULL, txn, &f);
        if (r == -EEXIST)
            continue;
        if (r >= 0)
            r = sched_audit_system(s, txn, "flavor.create", f.id, 0, "A default flavor.");
        if (r < 0)
            return r;
        created++;
    }
    r = yun_txn_commit(TAKE_PTR(txn));
    if (r < 0)
        return r;
    if (ret_created)
        *ret_created = created;
    return 0;
}
