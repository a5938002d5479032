/* SPDX-License-Identifier: Apache-2.0
 * test-placement.c: unit tests for scheduler/placement.c. Each filter and
 * weigher alone, allocation ratios and the reservation, the no-valid-host
 * reason, multi-create, claims in memory and in LMDB (a store in a fresh
 * directory under $YUN_TEST_DIR, else /tmp), the last slot taken by
 * several processes at once, the index rebuilt from the store, and a
 * randomised comparison of every pick with a brute-force reference. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cleanup.h"
#include "err.h"
#include "placement.h"
#include "store.h"
#include "util.h"
#include "compute.pb-c.h"
#include "host.pb-c.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct sched_placement *, sched_placement_free)

static const char *const test_dbs[] = { "hosts", "claims", "host_usage", NULL };

/* ---- Hosts described compactly. */

struct hspec {
    const char *id;
    uint32_t cpus;
    uint64_t memory_mb;
    uint64_t disk_gb;
    const char *az;                /* NULL = default */
    bool down;
    bool disabled;
    const char *arch;              /* NULL = x86_64 */
    const char *hypervisor_type;   /* NULL = QEMU */
    const char *virt_type;         /* NULL = kvm */
    const char *images;            /* comma-separated ids, NULL = none */
};

#define MAX_IMAGES 64

struct record {
    Yun__HostRecord rec;
    Yun__HostInventory inv;
    Yun__CachedImage ci[MAX_IMAGES];
    Yun__CachedImage *pci[MAX_IMAGES];
    char ids[MAX_IMAGES][64];
};

static void
record_init(struct record *r, const struct hspec *s)
{
    memset(r, 0, sizeof *r);
    yun__host_record__init(&r->rec);
    yun__host_inventory__init(&r->inv);
    r->inv.cpus = s->cpus;
    r->inv.memory_mb = s->memory_mb;
    r->inv.disk_gb = s->disk_gb;
    r->inv.arch = (char *)(s->arch ? s->arch : "x86_64");
    r->inv.hypervisor_type = (char *)(s->hypervisor_type ? s->hypervisor_type : "QEMU");
    r->inv.virt_type = (char *)(s->virt_type ? s->virt_type : "kvm");
    r->rec.id = (char *)s->id;
    r->rec.name = (char *)s->id;
    r->rec.inventory = &r->inv;
    r->rec.enabled = !s->disabled;
    r->rec.state = (char *)(s->down ? "down" : "up");
    size_t n = 0;
    if (s->images) {
        const char *p = s->images;
        while (*p && n < MAX_IMAGES) {
            size_t len = strcspn(p, ",");
            assert_true(len < sizeof r->ids[0]);
            memcpy(r->ids[n], p, len);
            r->ids[n][len] = '\0';
            yun__cached_image__init(&r->ci[n]);
            r->ci[n].image_id = r->ids[n];
            r->pci[n] = &r->ci[n];
            n++;
            p += len;
            if (*p == ',')
                p++;
        }
    }
    r->rec.n_cached_images = n;
    r->rec.cached_images = r->pci;
}

static void
add_host(struct sched_placement *p, const struct hspec *s)
{
    struct record r;
    record_init(&r, s);
    assert_int_equal(sched_placement_host_update(p, &r.rec, s->az), 0);
    assert_int_equal(sched_placement_verify(p), 0);
}

static struct sched_placement *
new_index(const struct sched_placement_config *cfg)
{
    struct sched_placement *p = NULL;
    assert_int_equal(sched_placement_new(cfg, &p), 0);
    return p;
}

static struct sched_placement_request
flavor(uint32_t vcpus, uint32_t ram_mb, uint32_t disk_gb)
{
    return (struct sched_placement_request){ .vcpus = vcpus, .ram_mb = ram_mb,
                                             .disk_gb = disk_gb };
}

/* Picks and returns the host id (static copy), or NULL on no valid host
 * with the reason in 'reason' when given. */
static const char *
pick(struct sched_placement *p, const struct sched_placement_request *req, char *reason)
{
    static char id[SCHED_PLACEMENT_ID_MAX + 1];
    const char *h = NULL;
    char buf[SCHED_PLACEMENT_REASON_SIZE];
    int r = sched_placement_pick(p, req, &h, reason ? reason : buf, sizeof buf);
    if (r == YUN_E_NOVALIDHOST)
        return NULL;
    assert_int_equal(r, 0);
    snprintf(id, sizeof id, "%s", h);
    return id;
}

/* ---- A temp dir with a store, for the durable tests. */

struct fixture {
    char dir[2048];
    char path[4096];
    struct yun_store *store;
};

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *base = getenv("YUN_TEST_DIR");
    if (!base || !*base)
        base = "/tmp";
    /* ctest names $YUN_TEST_DIR but does not create it. */
    if (yun_mkdir_p(base, 0755) < 0)
        return -1;
    int n = snprintf(fx->dir, sizeof fx->dir, "%s/test-placement.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof fx->dir || !mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/state", fx->dir);
    struct yun_store_options opts = { .path = fx->path, .dbs = test_dbs, .schema_version = 1 };
    if (yun_store_open(&opts, &fx->store) < 0)
        return -1;
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    fx->store = yun_store_close(fx->store);
    int r = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

/* Adds the host to the index and its record to "hosts" in 'txn'. */
static void
add_stored_host(struct sched_placement *p, struct yun_txn *txn, const struct hspec *s)
{
    struct record r;
    record_init(&r, s);
    assert_int_equal(yun_txn_put_msg(txn, "hosts", s->id, &r.rec.base), 0);
    if (p)
        add_host(p, s);
}

static Yun__HostUsageSum *
get_usage(struct yun_txn *txn, const char *host_id)
{
    ProtobufCMessage *m = NULL;
    int r = yun_txn_get_msg(txn, "host_usage", host_id, &yun__host_usage_sum__descriptor, &m);
    if (r == -ENOENT)
        return NULL;
    assert_int_equal(r, 0);
    return (Yun__HostUsageSum *)m;
}

static void
assert_usage(struct yun_txn *txn, const char *host_id, uint64_t vcpus, uint64_t ram_mb,
             uint64_t disk_gb, uint64_t instances)
{
    Yun__HostUsageSum *u = get_usage(txn, host_id);
    if (instances == 0 && !u)
        return;
    assert_non_null(u);
    assert_int_equal(u->vcpus, vcpus);
    assert_int_equal(u->ram_mb, ram_mb);
    assert_int_equal(u->disk_gb, disk_gb);
    assert_int_equal(u->instances, instances);
    yun__host_usage_sum__free_unpacked(u, NULL);
}

static int
durable_claim(struct yun_txn *txn, const char *instance, const char *host, uint32_t vcpus,
              uint32_t ram_mb, uint32_t disk_gb)
{
    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    Yun__Claim c = YUN__CLAIM__INIT;
    c.instance_id = (char *)instance;
    c.host_id = (char *)host;
    c.vcpus = vcpus;
    c.ram_mb = ram_mb;
    c.disk_gb = disk_gb;
    return sched_placement_claim_txn(txn, &cfg, &c);
}

/* ---- Config, policy names, request checks. */

static void
test_config(void **state)
{
    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    assert_true(cfg.cpu_allocation_ratio == 4.0);
    assert_true(cfg.ram_allocation_ratio == 1.0);
    assert_true(cfg.disk_allocation_ratio == 1.0);
    assert_int_equal(cfg.reserved_host_memory_mb, 512);
    assert_int_equal(sched_placement_config_check(&cfg), 0);

    struct sched_placement_config bad = cfg;
    bad.cpu_allocation_ratio = 0;
    assert_int_equal(sched_placement_config_check(&bad), -EINVAL);
    bad = cfg;
    bad.ram_allocation_ratio = NAN;
    assert_int_equal(sched_placement_config_check(&bad), -EINVAL);
    bad = cfg;
    bad.image_weight_multiplier = -1;
    assert_int_equal(sched_placement_config_check(&bad), -EINVAL);
    bad = cfg;
    bad.ram_weight_multiplier = INFINITY;
    assert_int_equal(sched_placement_config_check(&bad), -EINVAL);
    struct sched_placement *p = NULL;
    assert_int_equal(sched_placement_new(&bad, &p), -EINVAL);
    assert_null(p);

    for (int i = 0; i < _SCHED_GROUP_MAX; i++)
        assert_int_equal(sched_group_policy_from_string(sched_group_policy_to_string(i)), i);
    assert_int_equal(sched_group_policy_from_string("anti-affinity"), SCHED_GROUP_ANTI_AFFINITY);
    assert_int_equal(sched_group_policy_from_string(NULL), SCHED_GROUP_NONE);
    assert_int_equal(sched_group_policy_from_string("sideways"), _SCHED_GROUP_INVALID);
    assert_null(sched_group_policy_to_string(_SCHED_GROUP_MAX));

    Yun__FlavorRecord f = YUN__FLAVOR_RECORD__INIT;
    f.vcpus = 2;
    f.ram_mb = 4096;
    f.disk_gb = 20;
    f.ephemeral_gb = 10;
    f.swap_mb = 1025;
    struct sched_placement_request req = { 0 };
    sched_placement_request_set_flavor(&req, &f);
    assert_int_equal(req.vcpus, 2);
    assert_int_equal(req.ram_mb, 4096);
    assert_int_equal(req.disk_gb, 32);
}

static void
test_request_invalid(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 4, .memory_mb = 8192, .disk_gb = 100 });
    const char *h;
    struct sched_placement_request req = flavor(0, 512, 1);
    assert_int_equal(sched_placement_pick(p, &req, &h, NULL, 0), -EINVAL);
    req = flavor(1, 0, 1);
    assert_int_equal(sched_placement_pick(p, &req, &h, NULL, 0), -EINVAL);
    req = flavor(1, 512, 1);
    req.n_ignore_hosts = 1;
    assert_int_equal(sched_placement_pick(p, &req, &h, NULL, 0), -EINVAL);
    req = flavor(1, 512, 1);
    req.group_policy = _SCHED_GROUP_MAX;
    assert_int_equal(sched_placement_pick(p, &req, &h, NULL, 0), -EINVAL);
    req = flavor(1, 512, 1);
    struct sched_placement_alloc a[2];
    size_t n;
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 2, 1, a, &n, NULL, 0), -EINVAL);
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 0, 1, a, &n, NULL, 0), -EINVAL);

    /* Records the index refuses. */
    struct record r;
    record_init(&r, &(struct hspec){ .id = "", .cpus = 1, .memory_mb = 1024 });
    assert_int_equal(sched_placement_host_update(p, &r.rec, NULL), -EINVAL);
    record_init(&r, &(struct hspec){ .id = "h2", .cpus = 1, .memory_mb = 1024,
                                     .arch = "an-architecture-name-far-too-long-to-be-real" });
    assert_int_equal(sched_placement_host_update(p, &r.rec, NULL), -EINVAL);
    assert_int_equal(sched_placement_n_hosts(p), 1);
    assert_int_equal(sched_placement_verify(p), 0);
}

/* ---- Resource filters and ratios. */

static void
test_vcpu_ratio(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 4, .memory_mb = 65536, .disk_gb = 1000 });

    struct sched_placement_request req = flavor(16, 512, 1);
    assert_string_equal(pick(p, &req, NULL), "h1");
    req.vcpus = 17;
    char reason[SCHED_PLACEMENT_REASON_SIZE];
    assert_null(pick(p, &req, reason));
    assert_non_null(strstr(reason, "1 without enough vCPUs"));

    /* Sixteen one-vCPU claims fit, the seventeenth does not. */
    for (int i = 0; i < 16; i++)
        assert_int_equal(sched_placement_claim(p, "h1", 1, 512, 1), 0);
    assert_int_equal(sched_placement_claim(p, "h1", 1, 512, 1), YUN_E_NOVALIDHOST);
    req.vcpus = 1;
    assert_null(pick(p, &req, NULL));
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(p, "h1", &info), 0);
    assert_int_equal(info.vcpus_limit, 16);
    assert_int_equal(info.used_vcpus, 16);
    assert_int_equal(info.instances, 16);

    /* Ratio 1.5 on 3 CPUs gives 4 (floor of 4.5). */
    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    cfg.cpu_allocation_ratio = 1.5;
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    add_host(p, &(struct hspec){ .id = "h2", .cpus = 3, .memory_mb = 65536, .disk_gb = 1000 });
    assert_int_equal(sched_placement_host_get(p, "h2", &info), 0);
    assert_int_equal(info.vcpus_limit, 4);
    assert_int_equal(sched_placement_claim(p, "h2", 5, 512, 1), YUN_E_NOVALIDHOST);
    assert_int_equal(sched_placement_claim(p, "h2", 4, 512, 1), 0);
    assert_int_equal(sched_placement_verify(p), 0);
}

static void
test_ram_reserved_and_ratio(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 64, .memory_mb = 4096, .disk_gb = 1000 });

    /* 4096 MiB less the 512 reserved. */
    struct sched_placement_request req = flavor(1, 3584, 1);
    assert_string_equal(pick(p, &req, NULL), "h1");
    req.ram_mb = 3585;
    char reason[SCHED_PLACEMENT_REASON_SIZE];
    assert_null(pick(p, &req, reason));
    assert_non_null(strstr(reason, "1 without enough RAM"));

    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    cfg.ram_allocation_ratio = 1.5;
    cfg.reserved_host_memory_mb = 1024;
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    req.ram_mb = 6144 - 1024;
    assert_string_equal(pick(p, &req, NULL), "h1");
    req.ram_mb++;
    assert_null(pick(p, &req, NULL));

    cfg.reserved_host_memory_mb = 0;
    cfg.ram_allocation_ratio = 1.0;
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    assert_int_equal(sched_placement_claim(p, "h1", 1, 4096, 1), 0);
    assert_int_equal(sched_placement_claim(p, "h1", 1, 1, 0), YUN_E_NOVALIDHOST);
    assert_int_equal(sched_placement_verify(p), 0);
}

static void
test_disk_ratio(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 64, .memory_mb = 65536, .disk_gb = 100 });
    struct sched_placement_request req = flavor(1, 512, 100);
    assert_string_equal(pick(p, &req, NULL), "h1");
    req.disk_gb = 101;
    char reason[SCHED_PLACEMENT_REASON_SIZE];
    assert_null(pick(p, &req, reason));
    assert_non_null(strstr(reason, "1 without enough disk"));

    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    cfg.disk_allocation_ratio = 2.0;
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    req.disk_gb = 200;
    assert_string_equal(pick(p, &req, NULL), "h1");
    req.disk_gb = 201;
    assert_null(pick(p, &req, NULL));
    /* A volume-backed instance takes no disk. */
    req.disk_gb = 0;
    assert_string_equal(pick(p, &req, NULL), "h1");
}

/* ---- State, zone, image properties. */

static void
test_state_filter_and_reason(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    char reason[SCHED_PLACEMENT_REASON_SIZE];
    struct sched_placement_request req = flavor(1, 2048, 10);
    assert_null(pick(p, &req, reason));
    assert_string_equal(reason, "No valid host was found. There are no compute hosts.");

    add_host(p, &(struct hspec){ .id = "h1", .cpus = 8, .memory_mb = 65536, .disk_gb = 500,
                                 .down = true });
    add_host(p, &(struct hspec){ .id = "h2", .cpus = 8, .memory_mb = 2048, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "h3", .cpus = 8, .memory_mb = 1024, .disk_gb = 500 });
    assert_null(pick(p, &req, reason));
    assert_string_equal(reason, "No valid host was found. There are not enough hosts "
                                "available. 3 hosts: 1 down, 2 without enough RAM.");

    add_host(p, &(struct hspec){ .id = "h4", .cpus = 8, .memory_mb = 65536, .disk_gb = 500,
                                 .disabled = true });
    assert_null(pick(p, &req, reason));
    assert_non_null(strstr(reason, "4 hosts: 1 down, 1 disabled, 2 without enough RAM."));

    /* Up again: the host re-enters the index with its usage. */
    assert_int_equal(sched_placement_claim(p, "h1", 2, 4096, 10), 0);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 8, .memory_mb = 65536, .disk_gb = 500 });
    assert_string_equal(pick(p, &req, NULL), "h1");
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(p, "h1", &info), 0);
    assert_true(info.up);
    assert_int_equal(info.used_ram_mb, 4096);
    add_host(p, &(struct hspec){ .id = "h4", .cpus = 8, .memory_mb = 65536, .disk_gb = 500 });
    /* Both have room; h4 has more free RAM (nothing claimed). */
    assert_string_equal(pick(p, &req, NULL), "h4");
}

static void
test_az_filter(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "a1", .cpus = 8, .memory_mb = 65536, .disk_gb = 500,
                                 .az = "az1" });
    add_host(p, &(struct hspec){ .id = "b1", .cpus = 8, .memory_mb = 8192, .disk_gb = 500,
                                 .az = "az2" });
    add_host(p, &(struct hspec){ .id = "c1", .cpus = 8, .memory_mb = 16384, .disk_gb = 500 });

    struct sched_placement_request req = flavor(1, 1024, 10);
    assert_string_equal(pick(p, &req, NULL), "a1");
    req.az = "az2";
    assert_string_equal(pick(p, &req, NULL), "b1");
    req.az = SCHED_PLACEMENT_AZ_DEFAULT;
    assert_string_equal(pick(p, &req, NULL), "c1");
    req.az = "az3";
    char reason[SCHED_PLACEMENT_REASON_SIZE];
    assert_null(pick(p, &req, reason));
    assert_non_null(strstr(reason, "3 hosts: 3 outside availability zone 'az3'."));

    /* Moving a host between zones; NULL keeps its zone. */
    add_host(p, &(struct hspec){ .id = "b1", .cpus = 8, .memory_mb = 8192, .disk_gb = 500,
                                 .az = "az3" });
    assert_string_equal(pick(p, &req, NULL), "b1");
    add_host(p, &(struct hspec){ .id = "b1", .cpus = 8, .memory_mb = 8192, .disk_gb = 500 });
    assert_string_equal(pick(p, &req, NULL), "b1");
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(p, "b1", &info), 0);
    assert_string_equal(info.az, "az3");
    req.az = "az2";
    assert_null(pick(p, &req, NULL));
}

static void
test_image_properties(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "x-kvm", .cpus = 8, .memory_mb = 65536, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "x-tcg", .cpus = 8, .memory_mb = 32768, .disk_gb = 500,
                                 .virt_type = "qemu" });
    add_host(p, &(struct hspec){ .id = "arm", .cpus = 8, .memory_mb = 16384, .disk_gb = 500,
                                 .arch = "aarch64" });

    struct sched_placement_request req = flavor(1, 1024, 10);
    assert_string_equal(pick(p, &req, NULL), "x-kvm");
    req.arch = "aarch64";
    assert_string_equal(pick(p, &req, NULL), "arm");
    req.arch = "X86_64"; /* case does not matter */
    assert_string_equal(pick(p, &req, NULL), "x-kvm");

    req.arch = NULL;
    req.hypervisor_type = "qemu"; /* libvirt's QEMU driver: every host here */
    assert_string_equal(pick(p, &req, NULL), "x-kvm");
    req.hypervisor_type = "kvm";
    assert_string_equal(pick(p, &req, NULL), "x-kvm");
    assert_int_equal(sched_placement_claim(p, "x-kvm", 1, 65536 - 512, 1), 0);
    assert_string_equal(pick(p, &req, NULL), "arm"); /* kvm too */
    req.arch = "x86_64";
    char reason[SCHED_PLACEMENT_REASON_SIZE];
    assert_null(pick(p, &req, reason));
    assert_non_null(strstr(reason, "3 hosts: 1 not of architecture 'x86_64', "
                                   "1 not of hypervisor type 'kvm', 1 without enough RAM."));
    req.hypervisor_type = "xen";
    req.arch = NULL;
    assert_null(pick(p, &req, reason));
    assert_non_null(strstr(reason, "3 not of hypervisor type 'xen'"));
}

/* ---- Server groups and the ignore list. */

static void
test_affinity(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 8, .memory_mb = 65536, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "h2", .cpus = 8, .memory_mb = 8192, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "h3", .cpus = 8, .memory_mb = 16384, .disk_gb = 500 });

    const char *members[] = { "h2", "h2" };
    struct sched_placement_request req = flavor(1, 2048, 10);
    req.group_policy = SCHED_GROUP_AFFINITY;
    req.group_hosts = members;
    req.n_group_hosts = 2;
    assert_string_equal(pick(p, &req, NULL), "h2");

    /* The members' host is full: no valid host, not another host. */
    assert_int_equal(sched_placement_claim(p, "h2", 1, 6144, 1), 0);
    char reason[SCHED_PLACEMENT_REASON_SIZE];
    assert_null(pick(p, &req, reason));
    assert_non_null(strstr(reason, "3 hosts: 2 not the host of the server group (affinity), "
                                   "1 without enough RAM."));

    /* A new group: the first instance goes anywhere, the others follow. */
    req.n_group_hosts = 0;
    struct sched_placement_alloc a[3];
    size_t n = 0;
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 3, 3, a, &n, NULL, 0), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(a[i].host_id, "h1");
    assert_int_equal(sched_placement_verify(p), 0);
}

static void
test_anti_affinity(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 8, .memory_mb = 65536, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "h2", .cpus = 8, .memory_mb = 8192, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "h3", .cpus = 8, .memory_mb = 16384, .disk_gb = 500 });

    const char *members[] = { "h1" };
    struct sched_placement_request req = flavor(1, 1024, 10);
    req.group_policy = SCHED_GROUP_ANTI_AFFINITY;
    req.group_hosts = members;
    req.n_group_hosts = 1;
    assert_string_equal(pick(p, &req, NULL), "h3");

    /* Three instances of a new group land on three hosts; a fourth
     * cannot, and the whole request fails. */
    req.n_group_hosts = 0;
    struct sched_placement_alloc a[4];
    size_t n = 0;
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 3, 4, a, &n, NULL, 0), 0);
    assert_int_equal(n, 3);
    assert_string_equal(a[0].host_id, "h1");
    assert_string_equal(a[1].host_id, "h3");
    assert_string_equal(a[2].host_id, "h2");
    sched_placement_undo(p, a, n);

    char reason[SCHED_PLACEMENT_REASON_SIZE];
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 4, 4, a, &n, reason,
                                           sizeof reason),
                     YUN_E_NOVALIDHOST);
    assert_string_equal(reason, "No valid host was found. There are not enough hosts "
                                "available: only 3 of at least 4 instances fit. 3 hosts: 3 "
                                "already holding a member of the server group "
                                "(anti-affinity).");
    /* Failing as a whole gave everything back. */
    struct sched_placement_host_info info;
    for (int i = 1; i <= 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "h%d", i);
        assert_int_equal(sched_placement_host_get(p, id, &info), 0);
        assert_int_equal(info.instances, 0);
        assert_int_equal(info.used_ram_mb, 0);
    }
    assert_int_equal(sched_placement_verify(p), 0);
}

static void
test_soft_policies(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 8, .memory_mb = 65536, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "h2", .cpus = 8, .memory_mb = 8192, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "h3", .cpus = 8, .memory_mb = 16384, .disk_gb = 500 });

    /* Soft affinity: the members' host, though it has the least room... */
    const char *members[] = { "h2" };
    struct sched_placement_request req = flavor(1, 2048, 10);
    req.group_policy = SCHED_GROUP_SOFT_AFFINITY;
    req.group_hosts = members;
    req.n_group_hosts = 1;
    assert_string_equal(pick(p, &req, NULL), "h2");
    /* ...and another host when it is full, rather than no host. */
    assert_int_equal(sched_placement_claim(p, "h2", 1, 6144, 1), 0);
    assert_string_equal(pick(p, &req, NULL), "h1");
    assert_int_equal(sched_placement_release(p, "h2", 1, 6144, 1), 0);

    /* Soft anti-affinity: away from the members' host... */
    members[0] = "h1";
    req.group_policy = SCHED_GROUP_SOFT_ANTI_AFFINITY;
    assert_string_equal(pick(p, &req, NULL), "h3");
    /* ...unless it is the only one with room. */
    assert_int_equal(sched_placement_claim(p, "h2", 1, 7680, 1), 0);
    assert_int_equal(sched_placement_claim(p, "h3", 1, 15872, 1), 0);
    assert_string_equal(pick(p, &req, NULL), "h1");

    /* A multi-create with soft anti-affinity spreads while it can. */
    assert_int_equal(sched_placement_release(p, "h2", 1, 7680, 1), 0);
    assert_int_equal(sched_placement_release(p, "h3", 1, 15872, 1), 0);
    req.n_group_hosts = 0;
    struct sched_placement_alloc a[4];
    size_t n = 0;
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 4, 4, a, &n, NULL, 0), 0);
    assert_string_equal(a[0].host_id, "h1");
    assert_string_equal(a[1].host_id, "h3");
    assert_string_equal(a[2].host_id, "h2");
    assert_int_equal(sched_placement_verify(p), 0);
}

static void
test_ignore_hosts(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 8, .memory_mb = 65536, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "h2", .cpus = 8, .memory_mb = 8192, .disk_gb = 500 });

    const char *tried[] = { "h1", "gone" };
    struct sched_placement_request req = flavor(1, 1024, 10);
    req.ignore_hosts = tried;
    req.n_ignore_hosts = 2;
    assert_string_equal(pick(p, &req, NULL), "h2");
    tried[1] = "h2";
    char reason[SCHED_PLACEMENT_REASON_SIZE];
    assert_null(pick(p, &req, reason));
    assert_non_null(strstr(reason, "2 hosts: 2 already tried."));
    /* The marks last one request only. */
    req.n_ignore_hosts = 0;
    assert_string_equal(pick(p, &req, NULL), "h1");
}

/* ---- Weighers. */

static void
test_spread_vs_pack(void **state)
{
    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(&cfg);
    add_host(p, &(struct hspec){ .id = "big", .cpus = 32, .memory_mb = 131072, .disk_gb = 900 });
    add_host(p, &(struct hspec){ .id = "mid", .cpus = 32, .memory_mb = 16384, .disk_gb = 900 });
    add_host(p, &(struct hspec){ .id = "tiny", .cpus = 32, .memory_mb = 2048, .disk_gb = 900 });

    struct sched_placement_request req = flavor(1, 4096, 10);
    assert_string_equal(pick(p, &req, NULL), "big");

    cfg.ram_weight_multiplier = -1.0;
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    assert_int_equal(sched_placement_verify(p), 0);
    /* Least free RAM that fits: not "tiny", which cannot take it. */
    assert_string_equal(pick(p, &req, NULL), "mid");
    req.ram_mb = 1024;
    assert_string_equal(pick(p, &req, NULL), "tiny");

    /* Packing fills one host before the next. */
    req.ram_mb = 4096;
    struct sched_placement_alloc a[8];
    size_t n = 0;
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 4, 4, a, &n, NULL, 0), 0);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(a[i].host_id, "mid");
    assert_string_equal(a[3].host_id, "big");

    /* Spreading alternates as free RAM evens out. */
    sched_placement_undo(p, a, n);
    cfg.ram_weight_multiplier = 1.0;
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    assert_int_equal(sched_placement_claim(p, "big", 1, 131072 - 512 - 15872, 1), 0);
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 2, 2, a, &n, NULL, 0), 0);
    assert_string_equal(a[0].host_id, "big"); /* equal free RAM: smaller id */
    assert_string_equal(a[1].host_id, "mid");

    /* Without a RAM weigher, ties all the way: the smallest id. */
    cfg.ram_weight_multiplier = 0;
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    req.ram_mb = 1024;
    assert_string_equal(pick(p, &req, NULL), "big");
    assert_int_equal(sched_placement_verify(p), 0);
}

static void
test_tie_break(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    const char *ids[] = { "m", "c", "x", "a", "q" };
    for (size_t i = 0; i < ELEMENTSOF(ids); i++)
        add_host(p, &(struct hspec){ .id = ids[i], .cpus = 8, .memory_mb = 8192,
                                     .disk_gb = 500 });
    struct sched_placement_request req = flavor(1, 1024, 10);
    assert_string_equal(pick(p, &req, NULL), "a");
    struct sched_placement_alloc a[5];
    size_t n;
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 5, 5, a, &n, NULL, 0), 0);
    const char *want[] = { "a", "c", "m", "q", "x" };
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(a[i].host_id, want[i]);
}

static void
test_image_bonus(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 8, .memory_mb = 16384, .disk_gb = 500 });
    add_host(p, &(struct hspec){ .id = "h2", .cpus = 8, .memory_mb = 16384, .disk_gb = 500,
                                 .images = "img-a,img-b" });

    struct sched_placement_request req = flavor(1, 1024, 10);
    assert_string_equal(pick(p, &req, NULL), "h1");  /* tie: smaller id */
    req.image_id = "img-a";
    assert_string_equal(pick(p, &req, NULL), "h2");  /* equal room: the cache wins */
    req.image_id = "img-unknown";
    assert_string_equal(pick(p, &req, NULL), "h1");

    /* A bonus, not a filter: much more room elsewhere still wins. */
    req.image_id = "img-a";
    assert_int_equal(sched_placement_claim(p, "h2", 1, 8192, 1), 0);
    assert_string_equal(pick(p, &req, NULL), "h1");
    /* With pack, the bonus works the same way. */
    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    cfg.ram_weight_multiplier = -1.0;
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    assert_int_equal(sched_placement_release(p, "h2", 1, 8192, 1), 0);
    assert_string_equal(pick(p, &req, NULL), "h2");
    cfg.image_weight_multiplier = 0;
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    assert_string_equal(pick(p, &req, NULL), "h1");

    /* The cache set follows the host's reports. */
    sched_placement_config_init(&cfg);
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    add_host(p, &(struct hspec){ .id = "h2", .cpus = 8, .memory_mb = 16384, .disk_gb = 500,
                                 .images = "img-b" });
    assert_string_equal(pick(p, &req, NULL), "h1");
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 8, .memory_mb = 16384, .disk_gb = 500,
                                 .images = "img-b,img-b,img-c" });
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(p, "h1", &info), 0);
    assert_int_equal(info.n_cached_images, 2);
    assert_int_equal(sched_placement_verify(p), 0);
}

/* Many holders: the image gets its own tree (and loses it again). */
static void
test_image_popular(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    char id[16];
    /* 100 hosts; hosts 60..99 cache the image, each with less room than
     * the non-caching ones. */
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "h%03d", i);
        add_host(p, &(struct hspec){ .id = id, .cpus = 64, .memory_mb = 200000 - 1000 * i,
                                     .disk_gb = 500, .images = i >= 60 ? "pop" : NULL });
    }
    struct sched_placement_request req = flavor(1, 1024, 10);
    req.image_id = "pop";
    assert_string_equal(pick(p, &req, NULL), "h000");

    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    cfg.image_weight_multiplier = 0.5; /* worth half of the largest host */
    assert_int_equal(sched_placement_set_config(p, &cfg), 0);
    assert_string_equal(pick(p, &req, NULL), "h060");
    /* Skipped holders: down, disabled, full. */
    add_host(p, &(struct hspec){ .id = "h060", .cpus = 64, .memory_mb = 140000, .disk_gb = 500,
                                 .images = "pop", .down = true });
    add_host(p, &(struct hspec){ .id = "h061", .cpus = 64, .memory_mb = 139000, .disk_gb = 500,
                                 .images = "pop", .disabled = true });
    assert_int_equal(sched_placement_claim(p, "h062", 1, 138000 - 512, 1), 0);
    assert_string_equal(pick(p, &req, NULL), "h063");

    /* Drop the image from most holders: back to the short list. */
    for (int i = 64; i < 100; i++) {
        snprintf(id, sizeof id, "h%03d", i);
        add_host(p, &(struct hspec){ .id = id, .cpus = 64, .memory_mb = 200000 - 1000 * i,
                                     .disk_gb = 500 });
    }
    assert_string_equal(pick(p, &req, NULL), "h063");
    assert_int_equal(sched_placement_host_remove(p, "h063"), 0);
    assert_int_equal(sched_placement_verify(p), 0);
    assert_string_equal(pick(p, &req, NULL), "h000");
    assert_int_equal(sched_placement_host_remove(p, "h063"), -ENOENT);
}

/* ---- Claims in memory. */

static void
test_claim_release(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 4, .memory_mb = 8192, .disk_gb = 100 });
    add_host(p, &(struct hspec){ .id = "h2", .cpus = 4, .memory_mb = 8192, .disk_gb = 100 });
    struct sched_placement_request req = flavor(2, 4096, 40);
    assert_string_equal(pick(p, &req, NULL), "h1");
    assert_int_equal(sched_placement_claim(p, "h1", 2, 4096, 40), 0);
    assert_string_equal(pick(p, &req, NULL), "h2");
    assert_int_equal(sched_placement_claim(p, "h2", 2, 4096, 40), 0);
    req.ram_mb = 4096 - 512 + 1;
    assert_null(pick(p, &req, NULL));
    assert_int_equal(sched_placement_release(p, "h2", 2, 4096, 40), 0);
    assert_string_equal(pick(p, &req, NULL), "h2");
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(p, "h2", &info), 0);
    assert_int_equal(info.used_vcpus, 0);
    assert_int_equal(info.used_ram_mb, 0);
    assert_int_equal(info.used_disk_gb, 0);
    assert_int_equal(info.instances, 0);
    /* Releasing more than claimed stops at zero. */
    assert_int_equal(sched_placement_release(p, "h2", 2, 4096, 40), 0);
    assert_int_equal(sched_placement_host_get(p, "h2", &info), 0);
    assert_int_equal(info.used_ram_mb, 0);
    assert_int_equal(sched_placement_claim(p, "nope", 1, 1, 1), -ENOENT);
    assert_int_equal(sched_placement_release(p, "nope", 1, 1, 1), -ENOENT);
    assert_int_equal(sched_placement_verify(p), 0);
}

static void
test_last_slot_in_memory(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    /* Room for exactly three 1 GiB instances. */
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 4, .memory_mb = 3072 + 512,
                                 .disk_gb = 100 });
    assert_int_equal(sched_placement_claim(p, "h1", 1, 2048, 1), 0);
    int won = 0;
    for (int i = 0; i < 10; i++)
        if (sched_placement_claim(p, "h1", 1, 1024, 1) == 0)
            won++;
    assert_int_equal(won, 1);

    /* The same through place: one of the ten requests gets the slot. */
    assert_int_equal(sched_placement_release(p, "h1", 1, 1024, 1), 0);
    struct sched_placement_request req = flavor(1, 1024, 1);
    won = 0;
    for (int i = 0; i < 10; i++) {
        struct sched_placement_alloc a;
        size_t n;
        int r = sched_placement_place(p, NULL, &req, NULL, 1, 1, &a, &n, NULL, 0);
        if (r == 0)
            won++;
        else
            assert_int_equal(r, YUN_E_NOVALIDHOST);
    }
    assert_int_equal(won, 1);
    /* max_count beyond the room: as many as fit. */
    assert_int_equal(sched_placement_release(p, "h1", 1, 1024, 1), 0);
    assert_int_equal(sched_placement_release(p, "h1", 1, 2048, 1), 0);
    struct sched_placement_alloc a[10];
    size_t n = 0;
    assert_int_equal(sched_placement_place(p, NULL, &req, NULL, 1, 10, a, &n, NULL, 0), 0);
    assert_int_equal(n, 3);
    assert_int_equal(sched_placement_verify(p), 0);
}

/* ---- The durable part. */

static void
test_durable_claim_release(void **state)
{
    struct fixture *fx = *state;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    add_stored_host(NULL, txn, &(struct hspec){ .id = "h1", .cpus = 2, .memory_mb = 2560,
                                                .disk_gb = 100 });

    assert_int_equal(durable_claim(txn, "vm1", "h1", 4, 1024, 10), 0);
    assert_int_equal(durable_claim(txn, "vm1", "h1", 1, 1, 1), -EEXIST);
    assert_int_equal(durable_claim(txn, "vm2", "h9", 1, 1, 1), YUN_E_NOHOST);
    assert_int_equal(durable_claim(txn, "vm2", "h1", 5, 1024, 10), YUN_E_NOVALIDHOST);
    assert_int_equal(durable_claim(txn, "vm2", "h1", 4, 1025, 10), YUN_E_NOVALIDHOST);
    assert_int_equal(durable_claim(txn, "vm2", "h1", 4, 1024, 91), YUN_E_NOVALIDHOST);
    assert_int_equal(durable_claim(txn, "vm2", "h1", 4, 1024, 90), 0);
    assert_usage(txn, "h1", 8, 2048, 100, 2);
    assert_int_equal(yun_txn_commit(TAKE_PTR(txn)), 0);

    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    Yun__Claim *c = NULL;
    assert_int_equal(sched_placement_release_txn(txn, "vm1", &c), 0);
    assert_string_equal(c->host_id, "h1");
    assert_int_equal(c->vcpus, 4);
    assert_int_equal(c->ram_mb, 1024);
    assert_true(c->created_us > 0);
    yun__claim__free_unpacked(c, NULL);
    assert_int_equal(sched_placement_release_txn(txn, "vm1", NULL), -ENOENT);
    assert_usage(txn, "h1", 4, 1024, 90, 1);
    /* Release returns the room. */
    assert_int_equal(durable_claim(txn, "vm3", "h1", 4, 1024, 10), 0);
    assert_int_equal(sched_placement_release_txn(txn, "vm2", NULL), 0);
    assert_int_equal(sched_placement_release_txn(txn, "vm3", NULL), 0);
    /* The last release drops the usage record. */
    assert_null(get_usage(txn, "h1"));
    size_t mismatches = 99;
    assert_int_equal(sched_placement_check_usage_txn(txn, false, &mismatches), 0);
    assert_int_equal(mismatches, 0);
    assert_int_equal(yun_txn_commit(TAKE_PTR(txn)), 0);
}

static void
test_check_usage_repair(void **state)
{
    struct fixture *fx = *state;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    add_stored_host(NULL, txn, &(struct hspec){ .id = "h1", .cpus = 8, .memory_mb = 16384,
                                                .disk_gb = 100 });
    add_stored_host(NULL, txn, &(struct hspec){ .id = "h2", .cpus = 8, .memory_mb = 16384,
                                                .disk_gb = 100 });
    assert_int_equal(durable_claim(txn, "vm1", "h1", 1, 1024, 10), 0);
    assert_int_equal(durable_claim(txn, "vm2", "h2", 1, 1024, 10), 0);
    /* Damage: h1's sums wrong, h2's gone, h3's left over. */
    Yun__HostUsageSum u = YUN__HOST_USAGE_SUM__INIT;
    u.vcpus = 7;
    u.instances = 3;
    assert_int_equal(yun_txn_put_msg(txn, "host_usage", "h1", &u.base), 0);
    assert_int_equal(yun_txn_del(txn, "host_usage", "h2", 2), 0);
    assert_int_equal(yun_txn_put_msg(txn, "host_usage", "h3", &u.base), 0);
    size_t mismatches = 0;
    assert_int_equal(sched_placement_check_usage_txn(txn, false, &mismatches), 0);
    assert_int_equal(mismatches, 3);
    assert_int_equal(sched_placement_check_usage_txn(txn, true, &mismatches), 0);
    assert_int_equal(mismatches, 3);
    assert_int_equal(sched_placement_check_usage_txn(txn, false, &mismatches), 0);
    assert_int_equal(mismatches, 0);
    assert_usage(txn, "h1", 1, 1024, 10, 1);
    assert_usage(txn, "h2", 1, 1024, 10, 1);
    assert_null(get_usage(txn, "h3"));
}

/* Each child opens the store on its own (an LMDB environment must not
 * cross fork), says it is ready, waits for the start and claims. */
static void __attribute__((noreturn))
claim_child(const char *path, int ready_fd, int go_fd, const char *instance)
{
    struct yun_store_options opts = { .path = path, .dbs = test_dbs, .schema_version = 1 };
    struct yun_store *store = NULL;
    if (yun_store_open(&opts, &store) < 0)
        _exit(10);
    char b = 'r';
    if (write(ready_fd, &b, 1) != 1)
        _exit(11);
    if (read(go_fd, &b, 1) != 0) /* EOF is the start signal */
        _exit(12);
    struct yun_txn *txn = NULL;
    if (yun_txn_begin(store, true, &txn) < 0)
        _exit(13);
    int r = durable_claim(txn, instance, "h1", 1, 1024, 10);
    if (r == 0)
        r = yun_txn_commit(txn);
    else
        yun_txn_abort(txn);
    yun_store_close(store);
    _exit(r == 0 ? 0 : r == YUN_E_NOVALIDHOST ? 1 : 20);
}

static void
test_last_slot_processes(void **state)
{
    struct fixture *fx = *state;
    enum { N = 8 };
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    /* Room for two 1 GiB instances; one is already there. */
    add_stored_host(NULL, txn, &(struct hspec){ .id = "h1", .cpus = 4, .memory_mb = 2048 + 512,
                                                .disk_gb = 100 });
    assert_int_equal(durable_claim(txn, "vm0", "h1", 1, 1024, 10), 0);
    assert_int_equal(yun_txn_commit(TAKE_PTR(txn)), 0);
    fx->store = yun_store_close(fx->store);

    int ready[2], go[2];
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    assert_int_equal(pipe2(go, O_CLOEXEC), 0);
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(ready[0]);
            close(go[1]);
            char instance[16];
            snprintf(instance, sizeof instance, "vm%d", i + 1);
            claim_child(fx->path, ready[1], go[0], instance);
        }
    }
    close(ready[1]);
    close(go[0]);
    for (int i = 0; i < N; i++) {
        char b;
        assert_int_equal(read(ready[0], &b, 1), 1);
    }
    close(go[1]); /* all start now */
    close(ready[0]);

    int won = 0, lost = 0;
    for (int i = 0; i < N; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 0)
            won++;
        else if (WEXITSTATUS(status) == 1)
            lost++;
        else
            fail_msg("child %d exited with %d", i, WEXITSTATUS(status));
    }
    assert_int_equal(won, 1);
    assert_int_equal(lost, N - 1);

    struct yun_store_options opts = { .path = fx->path, .dbs = test_dbs, .schema_version = 1 };
    assert_int_equal(yun_store_open(&opts, &fx->store), 0);
    assert_int_equal(yun_txn_begin(fx->store, false, &txn), 0);
    assert_usage(txn, "h1", 2, 2048, 20, 2);
    size_t n = 0, mismatches = 1;
    assert_int_equal(yun_txn_count(txn, "claims", &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(sched_placement_check_usage_txn(txn, false, &mismatches), 0);
    assert_int_equal(mismatches, 0);
}

/* Two indexes over one store, as two schedulers would be: the stale one
 * cannot take the slot the other took; it learns the truth and goes
 * elsewhere. */
static void
test_place_stale_index(void **state)
{
    struct fixture *fx = *state;
    _cleanup_(sched_placement_freep) struct sched_placement *a = new_index(NULL);
    _cleanup_(sched_placement_freep) struct sched_placement *b = new_index(NULL);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    const struct hspec hosts[] = {
        { .id = "h1", .cpus = 4, .memory_mb = 1024 + 512, .disk_gb = 100 },
        { .id = "h2", .cpus = 4, .memory_mb = 1024 + 512, .disk_gb = 100 },
    };
    for (size_t i = 0; i < ELEMENTSOF(hosts); i++) {
        add_stored_host(a, txn, &hosts[i]);
        add_host(b, &hosts[i]);
    }
    struct sched_placement_request req = flavor(1, 1024, 10);
    struct sched_placement_alloc al[2];
    size_t n = 0;
    const char *vm1[] = { "vm1" }, *vm2[] = { "vm2" }, *vm3[] = { "vm3" };
    assert_int_equal(sched_placement_place(a, txn, &req, vm1, 1, 1, al, &n, NULL, 0), 0);
    assert_string_equal(al[0].host_id, "h1");
    assert_int_equal(yun_txn_commit(TAKE_PTR(txn)), 0);

    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    assert_int_equal(sched_placement_place(b, txn, &req, vm2, 1, 1, al, &n, NULL, 0), 0);
    assert_string_equal(al[0].host_id, "h2");
    assert_int_equal(yun_txn_commit(TAKE_PTR(txn)), 0);
    struct sched_placement_host_info info;
    assert_int_equal(sched_placement_host_get(b, "h1", &info), 0);
    assert_int_equal(info.used_ram_mb, 1024); /* learnt from the store */

    /* Now 'a' is stale about h2 and everything is full. */
    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    char reason[SCHED_PLACEMENT_REASON_SIZE];
    assert_int_equal(sched_placement_place(a, txn, &req, vm3, 1, 1, al, &n, reason,
                                           sizeof reason),
                     YUN_E_NOVALIDHOST);
    yun_txn_abort(TAKE_PTR(txn));
    assert_int_equal(sched_placement_host_get(a, "h2", &info), 0);
    assert_int_equal(info.used_ram_mb, 1024);
    assert_int_equal(sched_placement_verify(a), 0);
    assert_int_equal(sched_placement_verify(b), 0);

    /* A claim already made for the instance. */
    assert_int_equal(sched_placement_release(a, "h1", 1, 1024, 10), 0);
    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    assert_int_equal(sched_placement_place(a, txn, &req, vm1, 1, 1, al, &n, NULL, 0), -EEXIST);
    assert_int_equal(sched_placement_host_get(a, "h1", &info), 0);
    assert_int_equal(info.used_ram_mb, 0); /* nothing kept on failure */
}

static const char *
az_of_host(const struct Yun__HostRecord *h, void *data)
{
    return strcmp(h->id, "h3") == 0 ? "az2" : NULL;
}

static void
test_rebuild_equals_incremental(void **state)
{
    struct fixture *fx = *state;
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    add_stored_host(p, txn, &(struct hspec){ .id = "h1", .cpus = 16, .memory_mb = 65536,
                                             .disk_gb = 1000, .images = "i1,i2" });
    add_stored_host(p, txn, &(struct hspec){ .id = "h2", .cpus = 8, .memory_mb = 32768,
                                             .disk_gb = 500, .disabled = true });
    add_stored_host(p, txn, &(struct hspec){ .id = "h3", .cpus = 8, .memory_mb = 32768,
                                             .disk_gb = 500, .az = "az2", .images = "i2" });
    add_stored_host(p, txn, &(struct hspec){ .id = "h4", .cpus = 4, .memory_mb = 8192,
                                             .disk_gb = 200, .down = true });
    assert_int_equal(yun_txn_commit(TAKE_PTR(txn)), 0);

    /* Creates in batches, with a few deletes in between. */
    char ids[40][16];
    const char *idp[40];
    for (int i = 0; i < 40; i++) {
        snprintf(ids[i], sizeof ids[i], "vm%02d", i);
        idp[i] = ids[i];
    }
    struct sched_placement_request req = flavor(2, 2048, 20);
    req.image_id = "i2";
    struct sched_placement_alloc al[10];
    for (int batch = 0; batch < 4; batch++) {
        size_t n = 0;
        assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
        assert_int_equal(sched_placement_place(p, txn, &req, &idp[batch * 10], 1, 10, al, &n,
                                               NULL, 0),
                         0);
        assert_int_equal(n, 10);
        assert_int_equal(yun_txn_commit(TAKE_PTR(txn)), 0);

        assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
        Yun__Claim *c = NULL;
        assert_int_equal(sched_placement_release_txn(txn, idp[batch * 10 + 3], &c), 0);
        assert_int_equal(yun_txn_commit(TAKE_PTR(txn)), 0);
        assert_int_equal(sched_placement_release_claim(p, c), 0);
        yun__claim__free_unpacked(c, NULL);
    }
    /* A transaction that fails: undo keeps the index true to the store. */
    size_t n = 0;
    const char *extra[] = { "vmx1", "vmx2" };
    assert_int_equal(yun_txn_begin(fx->store, true, &txn), 0);
    assert_int_equal(sched_placement_place(p, txn, &req, extra, 2, 2, al, &n, NULL, 0), 0);
    yun_txn_abort(TAKE_PTR(txn));
    sched_placement_undo(p, al, n);

    _cleanup_(sched_placement_freep) struct sched_placement *q = new_index(NULL);
    assert_int_equal(yun_txn_begin(fx->store, false, &txn), 0);
    assert_int_equal(sched_placement_load(q, txn, az_of_host, NULL), 0);
    yun_txn_abort(TAKE_PTR(txn));
    assert_int_equal(sched_placement_verify(q), 0);

    _cleanup_free_ char *da = NULL, *db = NULL;
    assert_int_equal(sched_placement_dump(p, &da), 0);
    assert_int_equal(sched_placement_dump(q, &db), 0);
    assert_string_equal(da, db);
    assert_non_null(strstr(da, "h3 name=h3 az=az2 state=up enabled=yes"));
    struct sched_placement_host_info i1, i3;
    assert_int_equal(sched_placement_host_get(p, "h1", &i1), 0);
    assert_int_equal(sched_placement_host_get(p, "h3", &i3), 0);
    assert_int_equal(i1.instances + i3.instances, 36);

    /* And they decide alike. */
    for (int i = 0; i < 5; i++) {
        char a1[SCHED_PLACEMENT_ID_MAX + 1];
        snprintf(a1, sizeof a1, "%s", pick(p, &req, NULL));
        assert_string_equal(a1, pick(q, &req, NULL));
        assert_int_equal(sched_placement_claim(p, a1, 2, 2048, 20), 0);
        assert_int_equal(sched_placement_claim(q, a1, 2, 2048, 20), 0);
    }

    /* Loading again replaces, it does not add. */
    assert_int_equal(yun_txn_begin(fx->store, false, &txn), 0);
    assert_int_equal(sched_placement_load(q, txn, az_of_host, NULL), 0);
    yun_txn_abort(TAKE_PTR(txn));
    _cleanup_free_ char *dc = NULL;
    assert_int_equal(sched_placement_dump(q, &dc), 0);
    assert_string_equal(da, dc);
}

/* ---- The index against a brute-force reference. */

#define RH 70 /* hosts */
#define RI 3  /* images */

struct mhost {
    char id[8];
    int az;                        /* 0..2 */
    bool up, enabled;
    int arch;                      /* 0: x86_64, 1: aarch64 */
    int virt;                      /* 0: kvm, 1: qemu */
    uint32_t cpus;
    uint64_t mem, disk;
    uint64_t used_v, used_r, used_d;
    bool img[RI];
};

static const char *const az_names[] = { "default", "az1", "az2" };
static const char *const arch_names[] = { "x86_64", "aarch64" };
static const char *const virt_names[] = { "kvm", "qemu" };
static const char *const img_names[] = { "pop", "rare", "none" };

static uint64_t rng_state = 42;

static uint32_t
rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)((rng_state >> 33) % n);
}

static void
model_push(struct sched_placement *p, const struct mhost *m)
{
    char images[64] = "";
    for (int i = 0; i < RI; i++)
        if (m->img[i]) {
            strcat(images, images[0] ? "," : "");
            strcat(images, img_names[i]);
        }
    add_host(p, &(struct hspec){ .id = m->id, .cpus = m->cpus, .memory_mb = m->mem,
                                 .disk_gb = m->disk, .az = az_names[m->az], .down = !m->up,
                                 .disabled = !m->enabled, .arch = arch_names[m->arch],
                                 .virt_type = virt_names[m->virt],
                                 .images = images[0] ? images : NULL });
}

static void
model_random_host(struct mhost *m, int i)
{
    snprintf(m->id, sizeof m->id, "r%02d", (i * 37) % RH);
    m->az = (int)rnd(3);
    m->up = rnd(10) != 0;
    m->enabled = rnd(12) != 0;
    m->arch = rnd(6) == 0;
    m->virt = rnd(4) == 0;
    m->cpus = 2 + rnd(30);
    m->mem = 1024 * (1 + rnd(64));
    m->disk = 50 + rnd(500);
    m->img[0] = rnd(4) != 0;       /* ~52 holders: a tree of its own */
    m->img[1] = rnd(12) == 0;      /* a few holders: the short list */
    m->img[2] = false;
}

/* The reference: every host through every filter, the same score. */
static int
reference_pick(const struct mhost *hosts, const struct sched_placement_config *cfg,
               const struct sched_placement_request *req, int img)
{
    int64_t norm = 1;
    bool cached = false;
    for (int i = 0; i < RH; i++) {
        int64_t lim = (int64_t)((double)hosts[i].mem * cfg->ram_allocation_ratio + 1e-9) -
                      cfg->reserved_host_memory_mb;
        if (lim > norm)
            norm = lim;
        if (img >= 0 && hosts[i].img[img])
            cached = true;
    }
    double m = cfg->ram_weight_multiplier;
    double ram_scale = (m < 0 ? -m : m) / (double)norm;
    double img_bonus = cached ? cfg->image_weight_multiplier : 0;
    size_t n_members = req->n_group_hosts;
    uint32_t max_members = 0;
    for (int i = 0; i < RH; i++) {
        uint32_t k = 0;
        for (size_t j = 0; j < req->n_group_hosts; j++)
            k += strcmp(req->group_hosts[j], hosts[i].id) == 0;
        if (k > max_members)
            max_members = k;
    }
    bool soft = req->group_policy == SCHED_GROUP_SOFT_AFFINITY ||
                req->group_policy == SCHED_GROUP_SOFT_ANTI_AFFINITY;
    double group_scale = 0;
    if (max_members && req->group_policy == SCHED_GROUP_SOFT_AFFINITY)
        group_scale = cfg->soft_affinity_weight_multiplier / (double)max_members;
    if (max_members && req->group_policy == SCHED_GROUP_SOFT_ANTI_AFFINITY)
        group_scale = -cfg->soft_anti_affinity_weight_multiplier / (double)max_members;

    int best = -1;
    double best_score = 0;
    int64_t best_key = 0;
    for (int i = 0; i < RH; i++) {
        const struct mhost *h = &hosts[i];
        bool ignored = false;
        for (size_t k = 0; k < req->n_ignore_hosts; k++)
            ignored |= strcmp(req->ignore_hosts[k], h->id) == 0;
        uint32_t members = 0;
        for (size_t k = 0; k < req->n_group_hosts; k++)
            members += strcmp(req->group_hosts[k], h->id) == 0;
        if (ignored || !h->up || !h->enabled)
            continue;
        if (req->az && strcmp(req->az, az_names[h->az]) != 0)
            continue;
        if (req->arch && strcasecmp(req->arch, arch_names[h->arch]) != 0)
            continue;
        if (req->hypervisor_type && strcasecmp(req->hypervisor_type, "QEMU") != 0 &&
            strcasecmp(req->hypervisor_type, virt_names[h->virt]) != 0)
            continue;
        if (req->group_policy == SCHED_GROUP_AFFINITY && n_members > 0 && !members)
            continue;
        if (req->group_policy == SCHED_GROUP_ANTI_AFFINITY && members)
            continue;
        int64_t vl = (int64_t)(h->cpus * cfg->cpu_allocation_ratio + 1e-9);
        int64_t rl = (int64_t)((double)h->mem * cfg->ram_allocation_ratio + 1e-9) -
                     cfg->reserved_host_memory_mb;
        int64_t dl = (int64_t)((double)h->disk * cfg->disk_allocation_ratio + 1e-9);
        if ((int64_t)(h->used_v + req->vcpus) > vl || (int64_t)(h->used_r + req->ram_mb) > rl ||
            (int64_t)(h->used_d + req->disk_gb) > dl)
            continue;
        int64_t free_ram = rl - (int64_t)h->used_r;
        int64_t key = m > 0 ? free_ram : m < 0 ? -free_ram : 0;
        double s = ram_scale * (double)key;
        if (img_bonus > 0 && h->img[img])
            s += img_bonus;
        if (soft && members)
            s += group_scale * (double)members;
        bool better = best < 0 || s > best_score ||
                      (s == best_score && (key > best_key ||
                                           (key == best_key && strcmp(h->id, hosts[best].id) < 0)));
        if (better) {
            best = i;
            best_score = s;
            best_key = key;
        }
    }
    return best;
}

static void
test_random_against_reference(void **state)
{
    /* YUN_TEST_SEED=n replays another sequence. */
    const char *seed = getenv("YUN_TEST_SEED");
    if (seed && *seed)
        rng_state = strtoull(seed, NULL, 10);
    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(&cfg);
    struct mhost hosts[RH];
    memset(hosts, 0, sizeof hosts);
    for (int i = 0; i < RH; i++) {
        model_random_host(&hosts[i], i);
        model_push(p, &hosts[i]);
    }
    const double multipliers[] = { 1.0, -1.0, 0.0, 2.5 };
    const double image_bonuses[] = { 0.25, 0.0, 0.02, 1.5 };
    int picks = 0, failures = 0;
    for (int step = 0; step < 6000; step++) {
        int op = (int)rnd(100);
        if (op < 3) {
            cfg.ram_weight_multiplier = multipliers[rnd(ELEMENTSOF(multipliers))];
            cfg.image_weight_multiplier = image_bonuses[rnd(ELEMENTSOF(image_bonuses))];
            cfg.cpu_allocation_ratio = rnd(2) ? 4.0 : 1.5;
            cfg.reserved_host_memory_mb = rnd(2) ? 512 : 0;
            assert_int_equal(sched_placement_set_config(p, &cfg), 0);
        } else if (op < 10) {
            /* A host changes: state, zone, images, sometimes size. */
            struct mhost *h = &hosts[rnd(RH)];
            uint64_t v = h->used_v, r = h->used_r, d = h->used_d;
            if (rnd(3) == 0) {
                char id[8];
                memcpy(id, h->id, sizeof id);
                model_random_host(h, 0);
                memcpy(h->id, id, sizeof id);
            } else {
                h->up = rnd(8) != 0;
                h->enabled = rnd(8) != 0;
                h->img[rnd(RI - 1)] ^= true;
            }
            h->used_v = v;
            h->used_r = r;
            h->used_d = d;
            model_push(p, h);
        } else if (op < 25) {
            /* A release somewhere. */
            struct mhost *h = &hosts[rnd(RH)];
            uint32_t rv = (uint32_t)(h->used_v ? 1 + rnd((uint32_t)h->used_v) : 0);
            uint32_t rr = (uint32_t)(h->used_r ? 1 + rnd((uint32_t)h->used_r) : 0);
            uint32_t rd = (uint32_t)(h->used_d ? 1 + rnd((uint32_t)h->used_d) : 0);
            assert_int_equal(sched_placement_release(p, h->id, rv, rr, rd), 0);
            h->used_v -= rv;
            h->used_r -= rr;
            h->used_d -= rd;
        } else {
            /* A pick, compared; then claimed. */
            struct sched_placement_request req = flavor(1 + rnd(8), 512 * (1 + rnd(16)),
                                                        rnd(60));
            const char *members[4], *tried[3];
            if (rnd(3) == 0)
                req.az = az_names[rnd(3)];
            if (rnd(8) == 0)
                req.arch = arch_names[rnd(2)];
            if (rnd(8) == 0)
                req.hypervisor_type = rnd(2) ? "kvm" : "QEMU";
            int img = rnd(4) == 0 ? -1 : (int)rnd(RI);
            req.image_id = img >= 0 ? img_names[img] : NULL;
            if (rnd(3) == 0) {
                req.group_policy = 1 + rnd(4);
                req.n_group_hosts = rnd(5);
                for (size_t k = 0; k < req.n_group_hosts; k++)
                    members[k] = hosts[rnd(RH)].id;
                req.group_hosts = members;
            }
            if (rnd(4) == 0) {
                req.n_ignore_hosts = 1 + rnd(3);
                for (size_t k = 0; k < req.n_ignore_hosts; k++)
                    tried[k] = hosts[rnd(RH)].id;
                req.ignore_hosts = tried;
            }
            int want = reference_pick(hosts, &cfg, &req, img);
            const char *got = pick(p, &req, NULL);
            picks++;
            if (want < 0) {
                if (got)
                    fail_msg("step %d: index chose '%s', reference none", step, got);
                failures++;
                continue;
            }
            if (!got || strcmp(got, hosts[want].id) != 0)
                fail_msg("step %d: index chose '%s', reference '%s'", step, got ? got : "none",
                         hosts[want].id);
            assert_int_equal(sched_placement_claim(p, got, req.vcpus, req.ram_mb, req.disk_gb),
                             0);
            hosts[want].used_v += req.vcpus;
            hosts[want].used_r += req.ram_mb;
            hosts[want].used_d += req.disk_gb;
        }
        if (step % 50 == 0)
            assert_int_equal(sched_placement_verify(p), 0);
    }
    assert_int_equal(sched_placement_verify(p), 0);
    /* The run must have exercised both outcomes. */
    assert_true(picks > 3000);
    assert_true(failures > 50 && failures < picks - 1000);
}

/* Deep trees: thousands of hosts, claims and releases at random, every
 * pick checked against a brute force over sched_placement_host_get. */
static void
test_tree_stress(void **state)
{
    enum { NH = 3000 };
    rng_state = 0x5eed; /* its own sequence: the fill below is checked */
    struct sched_placement_config cfg;
    sched_placement_config_init(&cfg);
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(&cfg);
    static char ids[NH][16];
    static const uint64_t mem[] = { 16384, 32768, 65536, 131072 };
    for (int i = 0; i < NH; i++) {
        snprintf(ids[i], sizeof ids[i], "s%05d", (i * 7919) % NH);
        struct record r;
        record_init(&r, &(struct hspec){ .id = ids[i], .cpus = 4 + rnd(28),
                                         .memory_mb = mem[rnd(4)], .disk_gb = 100 + rnd(900),
                                         .down = rnd(30) == 0 });
        assert_int_equal(sched_placement_host_update(p, &r.rec, NULL), 0);
    }
    assert_int_equal(sched_placement_verify(p), 0);
    size_t claims = 0, failures = 0;
    for (int step = 0; step < 5000; step++) {
        if (step % 500 == 0) {
            cfg.ram_weight_multiplier = rnd(2) ? 1.0 : -1.0;
            assert_int_equal(sched_placement_set_config(p, &cfg), 0);
        }
        if (rnd(20) == 0) {
            /* Release part of what some host holds. */
            const char *id = ids[rnd(NH)];
            struct sched_placement_host_info info;
            assert_int_equal(sched_placement_host_get(p, id, &info), 0);
            assert_int_equal(sched_placement_release(p, id, (uint32_t)(info.used_vcpus / 2),
                                                     (uint32_t)(info.used_ram_mb / 2),
                                                     (uint32_t)(info.used_disk_gb / 2)),
                             0);
            continue;
        }
        /* Big enough to fill the cloud within the run: late picks must
         * skip many full hosts, which is what the aggregates are for. */
        struct sched_placement_request req = flavor(1 + rnd(16), 1024 * (1 + rnd(64)),
                                                    10 * (1 + rnd(60)));
        const char *want = NULL;
        int64_t want_key = 0;
        for (int i = 0; i < NH; i++) {
            struct sched_placement_host_info info;
            assert_int_equal(sched_placement_host_get(p, ids[i], &info), 0);
            int64_t fv = info.vcpus_limit - (int64_t)info.used_vcpus;
            int64_t fr = info.ram_limit_mb - (int64_t)info.used_ram_mb;
            int64_t fd = info.disk_limit_gb - (int64_t)info.used_disk_gb;
            if (!info.up || !info.enabled || fv < req.vcpus || fr < req.ram_mb ||
                fd < req.disk_gb)
                continue;
            int64_t key = cfg.ram_weight_multiplier > 0 ? fr : -fr;
            if (!want || key > want_key || (key == want_key && strcmp(ids[i], want) < 0)) {
                want = ids[i];
                want_key = key;
            }
        }
        const char *got = pick(p, &req, NULL);
        if (!want) {
            assert_null(got);
            failures++;
            continue;
        }
        assert_non_null(got);
        assert_string_equal(got, want);
        assert_int_equal(sched_placement_claim(p, got, req.vcpus, req.ram_mb, req.disk_gb), 0);
        claims++;
        if (step % 250 == 0)
            assert_int_equal(sched_placement_verify(p), 0);
    }
    assert_int_equal(sched_placement_verify(p), 0);
    assert_true(claims > 1000);
    assert_true(failures > 100); /* the cloud did fill up */
}

static void
test_reason_truncation(void **state)
{
    _cleanup_(sched_placement_freep) struct sched_placement *p = new_index(NULL);
    add_host(p, &(struct hspec){ .id = "h1", .cpus = 1, .memory_mb = 1024, .disk_gb = 1 });
    struct sched_placement_request req = flavor(1, 1024, 10);
    req.az = "zone-\xc3\xa9t\xc3\xa9";
    const char *h;
    char small[60];
    assert_int_equal(sched_placement_pick(p, &req, &h, small, sizeof small), YUN_E_NOVALIDHOST);
    assert_true(strlen(small) < sizeof small);
    char full[SCHED_PLACEMENT_REASON_SIZE];
    assert_int_equal(sched_placement_pick(p, &req, &h, full, sizeof full), YUN_E_NOVALIDHOST);
    assert_true(strncmp(full, small, strlen(small)) == 0);
    /* Cut inside the zone's name: never half of 'é'. */
    for (size_t size = 80; size < 100; size++) {
        char buf[100];
        assert_int_equal(sched_placement_pick(p, &req, &h, buf, size), YUN_E_NOVALIDHOST);
        size_t len = strlen(buf);
        assert_true(len < size);
        assert_true(len == 0 || (unsigned char)buf[len - 1] != 0xc3);
    }
}

int
main(void)
{
#define T(f) cmocka_unit_test(f)
#define TS(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_config),
        T(test_request_invalid),
        T(test_vcpu_ratio),
        T(test_ram_reserved_and_ratio),
        T(test_disk_ratio),
        T(test_state_filter_and_reason),
        T(test_az_filter),
        T(test_image_properties),
        T(test_affinity),
        T(test_anti_affinity),
        T(test_soft_policies),
        T(test_ignore_hosts),
        T(test_spread_vs_pack),
        T(test_tie_break),
        T(test_image_bonus),
        T(test_image_popular),
        T(test_claim_release),
        T(test_last_slot_in_memory),
        TS(test_durable_claim_release),
        TS(test_check_usage_repair),
        TS(test_last_slot_processes),
        TS(test_place_stale_index),
        TS(test_rebuild_equals_incremental),
        T(test_random_against_reference),
        T(test_tree_stress),
        T(test_reason_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
