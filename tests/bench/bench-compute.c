/* SPDX-License-Identifier: Apache-2.0
 * bench-compute.c: figures of the agent's instances (agent/vm.c).
 *
 *   bench-compute [--guest DIR] [--runs N] [--guest-runs N]
 *
 * 1. The memory floor: this process's RSS at the start of main and after
 *    libvirt is open. It links what yun-agent links, so it is the part of
 *    the agent's RSS that is shared-library pages, not the agent's own
 *    (tests/bench/bench-compute.sh measures the agent itself).
 * 2. Making an instance's disk: agent_vm_disk_create (the spawn's code: a
 *    qcow2 overlay through libvirt's storage pool API, qemu-img under
 *    libvirtd) on sparse raw bases of 16 MiB, 1 GiB and 100 GiB; median,
 *    90th percentile and worst of N. Target: under 20 ms whatever the
 *    size. Needs root and qemu:///system (else the test driver is timed,
 *    which makes no file: said so).
 * 3. With --guest DIR (contrib/guest/mkguest.sh's vmlinuz, initrd.img,
 *    disk.raw), root and qemu:///system: a real QEMU TCG guest through the
 *    agent's spawn (images already cached, as for any spawn after the
 *    first of an image: overlay, define, start), from the spawn call to
 *    the "spawned" event; next to the same domain XML started by `virsh
 *    create` and by virDomainCreateXML (the libvirt floor). Target:
 *    within 50 ms of the floor.
 * Prints figures; never run by ctest. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vm-fixture.h"

#define RUNS_DEFAULT 20
#define GUEST_RUNS_DEFAULT 7
#define GUEST_RUNS_MAX 100

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static long
rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void
print_stats(const char *what, double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    printf("  %-28s median %7.2f ms   p90 %7.2f ms   max %7.2f ms   (n=%zu)\n", what, v[n / 2],
           v[(n * 9) / 10 < n ? (n * 9) / 10 : n - 1], v[n - 1], n);
}

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static bool
is_system(void)
{
    return geteuid() == 0 && access("/usr/bin/qemu-system-x86_64", X_OK) == 0;
}

/* --- 2. disks --------------------------------------------------------------- */

static void
bench_disks(virConnectPtr conn, const char *dir, unsigned runs, bool real)
{
    printf("\nInstance disk (qcow2 overlay through the storage pool API)%s:\n",
           real ? "" : " -- test driver, no qemu-img: NOT a real figure");
    char pool_dir[600], name[64];
    snprintf(pool_dir, sizeof pool_dir, "%s/pool", dir);
    snprintf(name, sizeof name, "yun-bench-%d", (int)getpid());
    if (yun_mkdir_p(pool_dir, 0711) < 0)
        return;
    char msg[512];
    virStoragePoolPtr pool = NULL;
    if (agent_vm_pool_open(conn, name, pool_dir, &pool, msg, sizeof msg) < 0) {
        printf("  cannot open the pool: %s\n", msg);
        return;
    }
    static const struct {
        const char *label;
        uint64_t size;
    } bases[] = {
        { "base 16 MiB", 16ull << 20 },
        { "base 1 GiB", 1ull << 30 },
        { "base 100 GiB (sparse)", 100ull << 30 },
    };
    double *t = calloc(runs, sizeof *t);
    for (size_t b = 0; t && b < ELEMENTSOF(bases); b++) {
        char base[700];
        snprintf(base, sizeof base, "%s/base-%zu.raw", dir, b);
        int fd = open(base, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)bases[b].size) < 0) {
            printf("  cannot make %s\n", base);
            if (fd >= 0)
                close(fd);
            continue;
        }
        close(fd);
        unsigned ok = 0;
        for (unsigned i = 0; i < runs; i++) {
            char vol[64];
            snprintf(vol, sizeof vol, "disk-%zu-%u.qcow2", b, i);
            double t0 = now_ms();
            int r = agent_vm_disk_create(pool, vol, base, "raw", bases[b].size, msg, sizeof msg);
            double t1 = now_ms();
            if (r < 0) {
                printf("  %s: %s\n", bases[b].label, msg);
                break;
            }
            t[ok++] = t1 - t0;
            virStorageVolPtr v = virStorageVolLookupByName(pool, vol);
            if (v) {
                (void)virStorageVolDelete(v, 0);
                virStorageVolFree(v);
            }
        }
        if (ok)
            print_stats(bases[b].label, t, ok);
        unlink(base);
    }
    free(t);
    (void)virStoragePoolDestroy(pool);
    (void)virStoragePoolUndefine(pool);
    virStoragePoolFree(pool);
}

/* --- 3. a real guest ------------------------------------------------------------ */

static int
load_image(struct mem_image *img, const char *path, const char *format)
{
    char *data = NULL;
    size_t size = 0;
    int r = yun_read_file(path, 256u << 20, &data, &size);
    if (r < 0)
        return r;
    char id[YUN_UUID_STR_SIZE];
    (void)yun_uuid_new(id);
    snprintf(img->id, sizeof img->id, "%s", id);
    snprintf(img->disk_format, sizeof img->disk_format, "%s", format);
    img->data = (uint8_t *)data;
    img->size = size;
    uint8_t md[64];
    unsigned len = 0;
    EVP_Digest(img->data, size, md, &len, EVP_sha512(), NULL);
    yun_hex_encode(md, len, img->sha512);
    return 0;
}

static double
spawn_once(struct vm_fixture *f, struct fix_spawn *s, char **ret_xml)
{
    struct agent_vm_state st;
    char msg[512];
    size_t from = f->n_events;
    double t0 = now_ms();
    if (agent_vm_spawn(f->vms, &s->q, "bench", &st, msg, sizeof msg) < 0) {
        printf("  spawn refused: %s\n", msg);
        return -1;
    }
    if (!FIX_RUN_UNTIL(f, 60000, fix_find_event(f, from, s->id, "spawned") ||
                                     fix_find_event(f, from, s->id, "spawn_failed")))
        return -1;
    double t1 = now_ms();
    const struct fix_event *e = fix_find_event(f, from, s->id, "spawn_failed");
    if (e) {
        printf("  spawn failed: %s\n", e->fault);
        return -1;
    }
    if (ret_xml) {
        virDomainPtr d = virDomainLookupByUUIDString(f->conn, s->id);
        *ret_xml = d ? virDomainGetXMLDesc(d, VIR_DOMAIN_XML_INACTIVE) : NULL;
        if (d)
            virDomainFree(d);
    }
    from = f->n_events;
    if (agent_vm_destroy(f->vms, s->id, NULL, &st, msg, sizeof msg) == 0)
        (void)FIX_RUN_UNTIL(f, 60000, fix_find_event(f, from, s->id, "deleted"));
    return t1 - t0;
}

/* The agent's domain XML as a transient domain of its own: another name
 * and uuid, the disk 'disk', the console 'console'. */
static char *
floor_xml(const char *xml, const char *id, const char *disk_from, const char *disk,
          const char *console_from, const char *console)
{
    char *out = strdup(xml);
    char name[64];
    snprintf(name, sizeof name, "yun-%s", id);
    const struct {
        const char *from, *to;
    } subst[] = {
        { disk_from, disk }, { console_from, console }, { console_from, console },
        { name, "yun-bench-floor" },
    };
    for (size_t i = 0; out && i < ELEMENTSOF(subst); i++) {
        char *p = strstr(out, subst[i].from);
        if (!p)
            continue;
        char *n = NULL;
        if (asprintf(&n, "%.*s%s%s", (int)(p - out), out, subst[i].to,
                     p + strlen(subst[i].from)) < 0)
            n = NULL;
        free(out);
        out = n;
    }
    /* Drop the uuid line: libvirt makes one. */
    char *u = out ? strstr(out, "<uuid>") : NULL;
    char *ue = u ? strstr(u, "</uuid>") : NULL;
    if (u && ue)
        memmove(u, ue + 7, strlen(ue + 7) + 1);
    return out;
}

static void
bench_guest(virConnectPtr conn, struct yun_loop *loop, const char *guest, const char *dir,
            unsigned guest_runs)
{
    printf("\nCreate to running, a real QEMU TCG guest (%s):\n", guest);
    static struct vm_fixture f;
    char path[700];
    static const char *const files[] = { "disk.raw", "vmlinuz", "initrd.img" };
    static const char *const formats[] = { "raw", "aki", "ari" };
    for (size_t i = 0; i < FIX_IMAGES; i++) {
        snprintf(path, sizeof path, "%s/%s", guest, files[i]);
        if (load_image(&f.images[i], path, formats[i]) < 0) {
            printf("  cannot read %s\n", path);
            return;
        }
    }
    setenv("YUN_TEST_DIR", dir, 1);
    if (fix_open_store(&f, loop, conn, "agent") < 0 || fix_open_vms(&f, 1000, 60000) < 0) {
        printf("  cannot open the agent's instances\n");
        return;
    }
    /* The first spawn fetches and verifies the images; not measured. Its
     * domain XML, made a transient domain of its own, is the floor's. */
    struct fix_spawn s;
    fix_spawn_init(&f, &s, true);
    char *xml = NULL, *fx = NULL;
    if (spawn_once(&f, &s, &xml) < 0 || !xml)
        goto out;
    char disk_from[700], disk[700], cons_from[700], cons[700], xml_path[700], cmd[2800];
    snprintf(disk_from, sizeof disk_from, "%s/instances/%s.qcow2", f.state_dir, s.id);
    snprintf(disk, sizeof disk, "%s/floor.qcow2", dir);
    snprintf(cons_from, sizeof cons_from, "%s/instances/%s/console.log", f.state_dir, s.id);
    snprintf(cons, sizeof cons, "%s/floor-console.log", dir);
    snprintf(xml_path, sizeof xml_path, "%s/floor.xml", dir);
    fx = floor_xml(xml, s.id, disk_from, disk, cons_from, cons);
    if (!fx || yun_write_file_atomic(xml_path, fx, strlen(fx), 0644) < 0) {
        printf("  cannot write the floor's XML\n");
        goto out;
    }
    char base[900];
    snprintf(base, sizeof base, "%s/images/%s", f.state_dir, f.images[0].sha512);

    /* Interleaved, so that the host's drift hits all three alike. */
    double agent[GUEST_RUNS_MAX], virsh[GUEST_RUNS_MAX], api[GUEST_RUNS_MAX];
    unsigned n = 0;
    for (; n < guest_runs; n++) {
        fix_spawn_init(&f, &s, true);
        agent[n] = spawn_once(&f, &s, NULL);
        if (agent[n] < 0)
            break;
        bool ok = true;
        for (int k = 0; ok && k < 2; k++) {
            snprintf(cmd, sizeof cmd, "rm -f %s && qemu-img create -q -f qcow2 -F raw -b %s %s 1G",
                     disk, base, disk);
            if (system(cmd) != 0) {
                ok = false;
                break;
            }
            double t0 = now_ms();
            if (k == 0) {
                snprintf(cmd, sizeof cmd, "virsh -q -c qemu:///system create %s >/dev/null",
                         xml_path);
                ok = system(cmd) == 0;
                virsh[n] = now_ms() - t0;
            } else {
                virDomainPtr d = virDomainCreateXML(conn, fx, 0);
                ok = d != NULL;
                api[n] = now_ms() - t0;
                if (d)
                    virDomainFree(d);
            }
            virDomainPtr d = virDomainLookupByName(conn, "yun-bench-floor");
            if (d) {
                (void)virDomainDestroy(d);
                virDomainFree(d);
            }
        }
        if (!ok) {
            printf("  the floor's domain did not start: %s\n", virGetLastErrorMessage());
            break;
        }
    }
    if (n) {
        print_stats("agent: spawn -> running", agent, n);
        print_stats("floor: virsh create", virsh, n);
        print_stats("floor: virDomainCreateXML", api, n);
    }
    unlink(disk);
out:
    free(fx);
    free(xml);
    fix_done(&f);
}

int
main(int argc, char **argv)
{
    long rss_start = rss_kb();
    static const struct option opts[] = {
        { "guest", required_argument, NULL, 'g' },
        { "runs", required_argument, NULL, 'n' },
        { "guest-runs", required_argument, NULL, 'G' },
        {},
    };
    const char *guest = NULL;
    unsigned runs = RUNS_DEFAULT, guest_runs = GUEST_RUNS_DEFAULT;
    int c;
    while ((c = getopt_long(argc, argv, "g:n:", opts, NULL)) >= 0) {
        if (c == 'g')
            guest = optarg;
        else if (c == 'n' && yun_safe_atou32(optarg, &runs) == 0 && runs > 0)
            continue;
        else if (c == 'G' && yun_safe_atou32(optarg, &guest_runs) == 0 && guest_runs > 0 &&
                 guest_runs <= GUEST_RUNS_MAX)
            continue;
        else {
            fprintf(stderr, "usage: bench-compute [--guest DIR] [--runs N] [--guest-runs N]\n");
            return 2;
        }
    }
    bool real = is_system();
    struct yun_loop *loop = NULL;
    if (yun_loop_new(&loop) < 0)
        return 1;
    virSetErrorFunc(NULL, fix_quiet);
    if (agent_virt_event_register(loop) < 0)
        return 1;
    virConnectPtr conn = virConnectOpen(real ? "qemu:///system" : "test:///default");
    if (!conn) {
        fprintf(stderr, "bench-compute: cannot open libvirt\n");
        return 1;
    }
    printf("Memory floor (this process links what yun-agent links):\n"
           "  RSS at the start of main   %6.1f MiB (shared libraries)\n"
           "  RSS with libvirt open      %6.1f MiB (%s)\n",
           rss_start / 1024.0, rss_kb() / 1024.0, real ? "qemu:///system" : "test:///default");

    char dir[] = "/var/lib/libvirt/images/yun-bench.XXXXXX";
    char tmp[] = "/tmp/yun-bench.XXXXXX";
    char *work = real && mkdtemp(dir) ? dir : mkdtemp(tmp);
    if (!work || chmod(work, 0711) < 0)
        return 1;
    bench_disks(conn, work, runs, real);
    if (guest && real)
        bench_guest(conn, loop, guest, work, guest_runs);
    else if (guest)
        printf("\n(--guest needs root and qemu:///system)\n");
    (void)nftw(work, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    virConnectClose(conn);
    (void)yun_loop_run_once(loop, 0);
    yun_loop_free(loop);
    return 0;
}
