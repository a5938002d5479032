/* SPDX-License-Identifier: Apache-2.0
 * vm-fixture.h: what the agent's instance tests share (test-vm.c,
 * test-vm-command.c): a loop with libvirt's events on it, a store in the
 * test's directory, libvirt's test:///default driver (its storage pools
 * included: the storage-pool code runs as it is, no seam), an image cache
 * fed by an in-memory fetcher with three images (a raw disk, a kernel, a
 * ramdisk), spawn requests, and a recorder of the instances' events.
 * Header-only: each test includes it once. */
#pragma once

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <openssl/evp.h>

#include "cleanup.h"
#include "err.h"
#include "image-cache.h"
#include "loop.h"
#include "store.h"
#include "util.h"
#include "virt-event.h"
#include "vm.h"
#include "compute.pb-c.h"

/* Each test uses what it needs of these. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"

#define FIX_DEADLINE_MS 10000
#define FIX_EVENTS_MAX 256
#define FIX_IMAGES 3

/* ---- an image source in memory ---- */

struct mem_image {
    char id[YUN_UUID_STR_SIZE];
    uint8_t *data;
    size_t size;
    char sha512[AGENT_IMAGE_SHA512_HEX + 1];
    char disk_format[16];
};

struct mem_req {
    struct mem_req *next;
    struct mem_fetcher *m;
    int timer;
    bool is_read;
    char id[YUN_UUID_STR_SIZE];
    uint64_t offset;
    uint32_t length;
    agent_image_show_done_fn show_done;
    agent_image_read_done_fn read_done;
    void *data;
};

struct mem_fetcher {
    struct agent_image_fetcher base;
    struct yun_loop *loop;
    struct mem_image *images;
    size_t n_images;
    struct mem_req *reqs;
};

static struct mem_image *
mem_find(struct mem_fetcher *m, const char *id)
{
    for (size_t i = 0; i < m->n_images; i++)
        if (strcmp(m->images[i].id, id) == 0)
            return &m->images[i];
    return NULL;
}

static int64_t
mem_serve(struct yun_loop *loop, int id, void *data)
{
    struct mem_req *q = data;
    struct mem_fetcher *m = q->m;
    for (struct mem_req **p = &m->reqs; *p; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            break;
        }
    struct mem_image *img = mem_find(m, q->id);
    if (!img) {
        char msg[128];
        snprintf(msg, sizeof msg, "Image '%s' is not known to the test's scheduler.", q->id);
        if (q->is_read)
            q->read_done(YUN_E_NOIMAGE, msg, NULL, q->data);
        else
            q->show_done(YUN_E_NOIMAGE, msg, NULL, q->data);
    } else if (!q->is_read) {
        struct agent_image_info info = { .size = img->size, .virtual_size = img->size };
        snprintf(info.sha512, sizeof info.sha512, "%s", img->sha512);
        snprintf(info.disk_format, sizeof info.disk_format, "%s", img->disk_format);
        q->show_done(0, "", &info, q->data);
    } else {
        size_t n = q->offset >= img->size ? 0 : img->size - q->offset;
        if (n > q->length)
            n = q->length;
        struct agent_image_chunk chunk = {
            .data = img->data + q->offset, .size = n, .offset = q->offset,
            .total_size = img->size, .sha512 = img->sha512, .eof = q->offset + n == img->size,
        };
        q->read_done(0, "", &chunk, q->data);
    }
    free(q);
    return YUN_LOOP_NOMORE;
}

static int
mem_submit(struct mem_fetcher *m, struct mem_req *q)
{
    q->m = m;
    q->timer = yun_loop_add_timer(m->loop, 0, mem_serve, q, NULL);
    if (q->timer < 0) {
        int r = q->timer;
        free(q);
        return r;
    }
    q->next = m->reqs;
    m->reqs = q;
    return 0;
}

static int
mem_show(struct agent_image_fetcher *f, const char *image_id, agent_image_show_done_fn done,
         void *data)
{
    struct mem_req *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    snprintf(q->id, sizeof q->id, "%s", image_id);
    q->show_done = done;
    q->data = data;
    return mem_submit((struct mem_fetcher *)f, q);
}

static int
mem_read(struct agent_image_fetcher *f, const char *image_id, uint64_t offset, uint32_t length,
         agent_image_read_done_fn done, void *data)
{
    struct mem_req *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    snprintf(q->id, sizeof q->id, "%s", image_id);
    q->is_read = true;
    q->offset = offset;
    q->length = length;
    q->read_done = done;
    q->data = data;
    return mem_submit((struct mem_fetcher *)f, q);
}

static void
mem_cancel(struct agent_image_fetcher *f, void *data)
{
    struct mem_fetcher *m = (struct mem_fetcher *)f;
    for (struct mem_req **p = &m->reqs; *p;) {
        struct mem_req *q = *p;
        if (q->data != data) {
            p = &q->next;
            continue;
        }
        *p = q->next;
        (void)yun_loop_remove_timer(m->loop, q->timer);
        free(q);
    }
}

static void
mem_free(struct agent_image_fetcher *f)
{
    struct mem_fetcher *m = (struct mem_fetcher *)f;
    while (m->reqs) {
        struct mem_req *q = m->reqs;
        m->reqs = q->next;
        (void)yun_loop_remove_timer(m->loop, q->timer);
        free(q);
    }
    free(m);
}

static const struct agent_image_fetcher_ops mem_ops = {
    .name = "memory", .show = mem_show, .read = mem_read, .cancel = mem_cancel,
    .free = mem_free,
};

static void
mem_image_fill(struct mem_image *img, const char *format, size_t size, uint8_t seed)
{
    char id[YUN_UUID_STR_SIZE];
    if (yun_uuid_new(id) < 0)
        abort();
    snprintf(img->id, sizeof img->id, "%s", id);
    snprintf(img->disk_format, sizeof img->disk_format, "%s", format);
    img->size = size;
    img->data = malloc(size);
    if (!img->data)
        abort();
    for (size_t i = 0; i < size; i++)
        img->data[i] = (uint8_t)(seed + i * 7 + (i >> 12));
    uint8_t md[64];
    unsigned len = 0;
    if (!EVP_Digest(img->data, size, md, &len, EVP_sha512(), NULL))
        abort();
    yun_hex_encode(md, len, img->sha512);
}

/* ---- the fixture ---- */

struct fix_event {
    char id[YUN_UUID_STR_SIZE];
    char event[32];
    char power[16];
    char fault[512];
    int code;
};

struct vm_fixture {
    char dir[512];
    char state_dir[600];
    char pool[64];
    struct yun_loop *loop;
    struct yun_store *store;
    virConnectPtr conn;
    struct agent_image_cache *cache;
    struct mem_image images[FIX_IMAGES]; /* disk (raw), kernel (aki), ramdisk (ari) */
    struct agent_vms *vms;
    struct fix_event events[FIX_EVENTS_MAX];
    size_t n_events;
};

static int
fix_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void
fix_quiet(void *data, virErrorPtr err)
{
}

/* Once per process: libvirt's events on 'loop', then the connection. */
static virConnectPtr
fix_connect(struct yun_loop *loop)
{
    virSetErrorFunc(NULL, fix_quiet);
    if (agent_virt_event_register(loop) < 0)
        return NULL;
    return virConnectOpen("test:///default");
}

static void
fix_on_event(const Yun__InstanceEvent *ev, void *data)
{
    struct vm_fixture *f = data;
    if (f->n_events >= FIX_EVENTS_MAX)
        return;
    struct fix_event *e = &f->events[f->n_events++];
    snprintf(e->id, sizeof e->id, "%s", ev->instance_id);
    snprintf(e->event, sizeof e->event, "%s", ev->event);
    snprintf(e->power, sizeof e->power, "%s", ev->power_state);
    if (ev->fault) {
        snprintf(e->fault, sizeof e->fault, "%s", ev->fault->message);
        e->code = ev->fault->code;
    }
}

/* The first event 'event' of instance 'id' at or after index 'from', or NULL. */
static const struct fix_event *
fix_find_event(const struct vm_fixture *f, size_t from, const char *id, const char *event)
{
    for (size_t i = from; i < f->n_events; i++)
        if (strcmp(f->events[i].id, id) == 0 && (!event || strcmp(f->events[i].event, event) == 0))
            return &f->events[i];
    return NULL;
}

/* As fix_find_event, for an event that must be there. */
static const struct fix_event *
fix_must_event(const struct vm_fixture *f, size_t from, const char *id, const char *event)
{
    const struct fix_event *e = fix_find_event(f, from, id, event);
    if (!e) {
        fprintf(stderr, "no event '%s' for %s\n", event ? event : "(any)", id);
        abort();
    }
    return e;
}

static size_t
fix_count_events(const struct vm_fixture *f, size_t from, const char *id, const char *event)
{
    size_t n = 0;
    for (size_t i = from; i < f->n_events; i++)
        if (strcmp(f->events[i].id, id) == 0 && (!event || strcmp(f->events[i].event, event) == 0))
            n++;
    return n;
}

/* Runs the loop until 'pred' holds or 'ms' pass. */
#define FIX_RUN_UNTIL(f, ms, pred)                                                        \
    ({                                                                                     \
        int64_t _end = yun_now_ms() + (ms);                                                \
        while (!(pred) && yun_now_ms() < _end)                                             \
            (void)yun_loop_run_once((f)->loop, 20);                                        \
        (pred);                                                                            \
    })

/* Runs the loop for 'ms'. */
static void
fix_run_for(struct vm_fixture *f, int64_t ms)
{
    int64_t end = yun_now_ms() + ms;
    while (yun_now_ms() < end)
        (void)yun_loop_run_once(f->loop, 20);
}

static int fix_reopen_store(struct vm_fixture *f);

/* Opens the store and the cache of fixture 'f' in "$YUN_TEST_DIR/<name>"
 * (created afresh). 'conn' and 'loop' are the process's. */
static int
fix_open_store(struct vm_fixture *f, struct yun_loop *loop, virConnectPtr conn,
               const char *name)
{
    const char *base = getenv("YUN_TEST_DIR");
    snprintf(f->dir, sizeof f->dir, "%s/%s", base ? base : "/tmp/yun-test-vm", name);
    (void)nftw(f->dir, fix_rm, 16, FTW_DEPTH | FTW_PHYS);
    if (yun_mkdir_p(f->dir, 0755) < 0)
        return -1;
    snprintf(f->state_dir, sizeof f->state_dir, "%s/state", f->dir);
    snprintf(f->pool, sizeof f->pool, "yun-test-%s", name);
    f->loop = loop;
    f->conn = conn;
    if (!f->images[0].data) {
        mem_image_fill(&f->images[0], "raw", 1 << 20, 1);
        mem_image_fill(&f->images[1], "aki", 64 << 10, 2);
        mem_image_fill(&f->images[2], "ari", 32 << 10, 3);
    }
    return fix_reopen_store(f);
}

/* Opens the store and the cache again on the fixture's directory, as a
 * restarted agent would. */
static int
fix_reopen_store(struct vm_fixture *f)
{
    static const char *const dbs[] = { AGENT_IMAGE_CACHE_DB, AGENT_VM_DB, "self", NULL };
    struct yun_store_options so = { .path = f->state_dir, .dbs = dbs, .schema_version = 1 };
    int r = yun_store_open(&so, &f->store);
    if (r < 0)
        return r;
    struct mem_fetcher *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->base.ops = &mem_ops;
    m->loop = f->loop;
    m->images = f->images;
    m->n_images = FIX_IMAGES;
    char cache_dir[700];
    snprintf(cache_dir, sizeof cache_dir, "%s/images", f->state_dir);
    struct agent_image_cache_options co = {
        .loop = f->loop, .store = f->store, .fetcher = &m->base, .dir = cache_dir,
        .max_size = 64 << 20,
    };
    return agent_image_cache_new(&co, &f->cache);
}

static int
fix_open_vms(struct vm_fixture *f, uint32_t debounce_ms, uint32_t shutdown_timeout_ms)
{
    struct agent_vms_options o = {
        .loop = f->loop, .store = f->store, .conn = f->conn, .images = f->cache,
        .state_dir = f->state_dir, .pool = f->pool, .virt_type = "qemu", .arch = "x86_64",
        .host_name = "hosta", .shutdown_timeout_ms = shutdown_timeout_ms,
        .debounce_ms = debounce_ms, .threads = 2, .event = fix_on_event, .event_data = f,
    };
    char msg[512] = "";
    int r = agent_vms_new(&o, &f->vms, msg, sizeof msg);
    if (r < 0)
        fprintf(stderr, "agent_vms_new: %s\n", msg);
    return r;
}

/* Frees what fix_open_store and fix_open_vms made, keeping the files. */
static void
fix_close(struct vm_fixture *f)
{
    f->vms = agent_vms_free(f->vms);
    /* Lazy frees of the loop and libvirt's callbacks. */
    (void)yun_loop_run_once(f->loop, 0);
    f->cache = agent_image_cache_free(f->cache);
    f->store = yun_store_close(f->store);
}

/* Removes the fixture's pool and every "yun-*" domain (what a failed
 * test left) from the test driver and frees the images. */
static void
fix_done(struct vm_fixture *f)
{
    fix_close(f);
    virDomainPtr *doms = NULL;
    int n = virConnectListAllDomains(f->conn, &doms, 0);
    for (int i = 0; i < n; i++) {
        if (strncmp(virDomainGetName(doms[i]), "yun-", 4) == 0) {
            if (virDomainIsActive(doms[i]) == 1)
                (void)virDomainDestroy(doms[i]);
            (void)virDomainUndefineFlags(doms[i], VIR_DOMAIN_UNDEFINE_MANAGED_SAVE);
        }
        virDomainFree(doms[i]);
    }
    free(doms);
    virStoragePoolPtr p = virStoragePoolLookupByName(f->conn, f->pool);
    if (p) {
        (void)virStoragePoolDestroy(p);
        (void)virStoragePoolUndefine(p);
        virStoragePoolFree(p);
    }
    for (size_t i = 0; i < FIX_IMAGES; i++) {
        free(f->images[i].data);
        f->images[i].data = NULL;
    }
}

/* A spawn request for instance 'id' (a fresh UUID when NULL) of the
 * fixture's images: kernel boot when 'kernel'. Strings live in 'buf'. */
struct fix_spawn {
    char id[YUN_UUID_STR_SIZE];
    Yun__FlavorRecord flavor;
    Yun__InstanceRecord inst;
    Yun__AgentSpawnRequest q;
};

static void
fix_spawn_init(struct vm_fixture *f, struct fix_spawn *s, bool kernel)
{
    Yun__FlavorRecord fl = YUN__FLAVOR_RECORD__INIT;
    Yun__InstanceRecord in = YUN__INSTANCE_RECORD__INIT;
    Yun__AgentSpawnRequest q = YUN__AGENT_SPAWN_REQUEST__INIT;
    if (yun_uuid_new(s->id) < 0)
        abort();
    s->flavor = fl;
    s->flavor.id = (char *)"42";
    s->flavor.name = (char *)"m1.nano";
    s->flavor.vcpus = 1;
    s->flavor.ram_mb = 128;
    s->flavor.disk_gb = 1;
    s->inst = in;
    s->inst.id = s->id;
    s->inst.name = (char *)"web1";
    s->inst.project = (char *)"demo";
    s->inst.flavor = &s->flavor;
    s->q = q;
    s->q.instance = &s->inst;
    s->q.image_id = f->images[0].id;
    s->q.image_disk_format = (char *)"raw";
    s->q.image_sha512 = f->images[0].sha512;
    s->q.image_virtual_size = f->images[0].size;
    if (kernel) {
        s->q.kernel_id = f->images[1].id;
        s->q.kernel_sha512 = f->images[1].sha512;
        s->q.kernel_disk_format = (char *)"aki";
        s->q.ramdisk_id = f->images[2].id;
        s->q.ramdisk_sha512 = f->images[2].sha512;
        s->q.ramdisk_disk_format = (char *)"ari";
        s->q.kernel_cmdline = (char *)"console=ttyS0";
    }
}

#pragma GCC diagnostic pop
