/* SPDX-License-Identifier: Apache-2.0
 * main.c: yun-agent's entry point: argv, config, the loop and teardown.
 * The logic lives in the modules (inventory.c, report.c, image-cache.c). */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/virterror.h>

#include "agent.h"
#include "cleanup.h"
#include "err.h"
#include "image-cache.h"
#include "log.h"
#include "loop.h"
#include "host-network.h"
#include "notify.h"
#include "store.h"
#include "util.h"
#include "virt-event.h"
#include "vm.h"

YUN_LOG_MODULE("agent.main");

static const char *const agent_store_dbs[] = { "self", AGENT_IMAGE_CACHE_DB, AGENT_VM_DB,
                                                 AGENT_DB_NETWORK, NULL };

static void
usage(FILE *out)
{
    fprintf(out,
            "Usage: yun-agent [OPTIONS]\n"
            "       yun-agent [OPTIONS] fetch-image IMAGE_ID\n"
            "\n"
            "Runs the compute agent of this host: reports its inventory to the\n"
            "scheduler and runs its instances through libvirt.\n"
            "\n"
            "fetch-image puts one image into this host's image cache, verified,\n"
            "and prints its path; run it while the agent is stopped.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE        Config file (default %s)\n"
            "  -s, --set SECTION.KEY=VALUE  Override one setting (repeatable)\n"
            "      --dump-config        Print the effective configuration and exit\n"
            "  -h, --help               Show this help\n",
            AGENT_CONFIG_FILE_DEFAULT);
}

static void
warn_config(const char *msg, void *data)
{
    log_warn("%s", msg);
}

static void
on_quit(struct yun_loop *loop, int sig, void *data)
{
    log_notice("signal received, shutting down signal=%s", strsignal(sig));
    yun_loop_quit(loop, 0);
}

static void
on_hup(struct yun_loop *loop, int sig, void *data)
{
    int r = yun_log_reopen();
    if (r < 0)
        log_err_errno(r, "cannot reopen the log file");
}

/* libvirt prints every error to stderr by default; the agent reports the
 * ones that matter itself, with context. */
static void
quiet_libvirt_errors(void *data, virErrorPtr err)
{
    log_debug("libvirt: %s", err && err->message ? err->message : "?");
}

/* What the daemon and its one-shot commands share: the key, the state
 * store and the loop. */
static int
agent_open(struct agent *a)
{
    int r = yun_peer_key_load(a->cfg.key_file, &a->key);
    if (r == -ENOENT)
        return log_err_errno(r, "key file '%s' is missing: issue one with 'yun-scheduler "
                                "issue-key --agent NAME --out FILE'", a->cfg.key_file);
    if (r == -EPERM)
        return log_err_errno(r, "key file '%s' is readable by others: chmod 600 it",
                             a->cfg.key_file);
    if (r < 0)
        return log_err_errno(r, "cannot load the key file '%s'", a->cfg.key_file);
    if (strcmp(a->key.kind, "agent") != 0)
        return log_err_errno(-EINVAL, "key file '%s' is an %s key, not an agent key",
                             a->cfg.key_file, a->key.kind);

    struct yun_store_options so = {
        .path = a->cfg.state_dir,
        .dbs = agent_store_dbs,
        .schema_version = AGENT_SCHEMA_VERSION,
    };
    r = yun_store_open(&so, &a->store);
    if (r < 0)
        return log_err_errno(r, "cannot open the state store '%s'", a->cfg.state_dir);

    r = yun_loop_new(&a->loop);
    if (r < 0)
        return log_err_errno(r, "cannot create the event loop");
    return 0;
}

/* `yun-agent fetch-image IMAGE`: puts one image in this host's cache and
 * prints its path, while the daemon is stopped (the cache dir is locked). */
static int
agent_fetch_image(struct agent *a, const char *image_id)
{
    int r = agent_open(a);
    if (r < 0)
        return r;
    signal(SIGPIPE, SIG_IGN);
    r = agent_images_start(a);
    if (r < 0)
        return r;
    _cleanup_free_ char *path = NULL;
    char msg[512] = "";
    r = agent_images_fetch(a, image_id, &path, msg, sizeof msg);
    if (r < 0) {
        /* A command's failure goes to its caller, wherever the log goes. */
        if (strcmp(a->cfg.log_file, "-") != 0)
            fprintf(stderr, "yun-agent: %s\n", msg);
        return r;
    }
    printf("%s\n", path);
    return 0;
}

static int
agent_run(struct agent *a)
{
    if (strcmp(a->cfg.virt_type, "qemu") != 0 && strcmp(a->cfg.virt_type, "kvm") != 0)
        return log_err_errno(YUN_E_CONFIG, "libvirt.virt_type must be qemu or kvm, not '%s'",
                             a->cfg.virt_type);
    int r = agent_open(a);
    if (r < 0)
        return r;
    /* Before virConnectOpen: libvirt's events and keepalive run on our loop. */
    r = agent_virt_event_register(a->loop);
    if (r < 0)
        return log_err_errno(r, "cannot register the event loop with libvirt");
    virSetErrorFunc(NULL, quiet_libvirt_errors);
    a->conn = virConnectOpen(a->cfg.libvirt_uri);
    if (!a->conn)
        return log_err_errno(-EIO, "cannot connect to libvirt uri=%s: %s", a->cfg.libvirt_uri,
                             virGetLastErrorMessage());
    /* Notice a dead libvirtd within seconds instead of at the next call. */
    (void)virConnectSetKeepAlive(a->conn, 5, 3);

    r = agent_inventory_read(a);
    if (r < 0)
        return r;

    (void)yun_loop_add_signal(a->loop, SIGTERM, on_quit, a);
    (void)yun_loop_add_signal(a->loop, SIGINT, on_quit, a);
    (void)yun_loop_add_signal(a->loop, SIGHUP, on_hup, a);
    signal(SIGPIPE, SIG_IGN);

    r = agent_report_start(a);
    if (r < 0)
        return r;
    /* Before the loop runs: the first report lists the cached images. */
    r = agent_images_start(a);
    if (r < 0)
        return r;
    /* Commands are held until the instance sync that follows the first
     * registration is answered; the instances' events go through it. */
    r = agent_command_start(a);
    if (r < 0)
        return r;
    /* Before the instances: their taps are wired again first. */
    r = agent_network_start(a, &a->net);
    if (r < 0)
        return r;
    r = agent_vm_start(a);
    if (r < 0)
        return r;
    log_notice("agent started name=%s libvirt=%s hypervisor=%s/%s cpus=%u memory_mb=%llu",
               a->key.id, a->cfg.libvirt_uri, a->inv.hypervisor_type, a->inv.hypervisor_version,
               a->inv.msg.cpus, (unsigned long long)a->inv.msg.memory_mb);
    (void)yun_notify("READY=1");
    r = yun_loop_run(a->loop);
    (void)yun_notify("STOPPING=1");
    log_notice("agent stopped");
    return r;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "set", required_argument, NULL, 's' },
        { "dump-config", no_argument, NULL, 'D' },
        { "help", no_argument, NULL, 'h' },
        {},
    };
    /* Image chunks allocate and free a few 1 MiB buffers per message
     * (received message, sealed and opened bodies, decoded payload). With
     * glibc's defaults the heap top is trimmed and regrown around them,
     * so every MiB costs 256 page faults and the zeroing of its pages:
     * much of the CPU of an image fetch. Keep them on the heap. */
    (void)mallopt(M_MMAP_THRESHOLD, 64 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);
    const char *config = AGENT_CONFIG_FILE_DEFAULT;
    bool config_given = false, dump = false;
    char **sets = calloc((size_t)argc, sizeof *sets);
    size_t nsets = 0;
    int c;

    if (!sets)
        return 1;
    while ((c = getopt_long(argc, argv, "c:s:h", opts, NULL)) >= 0) {
        switch (c) {
        case 'c':
            config = optarg;
            config_given = true;
            break;
        case 's':
            sets[nsets++] = optarg;
            break;
        case 'D':
            dump = true;
            break;
        case 'h':
            usage(stdout);
            free(sets);
            return 0;
        default:
            usage(stderr);
            free(sets);
            return 2;
        }
    }
    const char *fetch_image = NULL;
    if (optind + 2 == argc && strcmp(argv[optind], "fetch-image") == 0) {
        fetch_image = argv[optind + 1];
    } else if (optind < argc) {
        usage(stderr);
        free(sets);
        return 2;
    }

    struct agent a = { .bus_watch = -1, .report_timer = -1 };
    _cleanup_free_ char *err = NULL;
    yun_log_open("yun-agent", NULL);
    int r = yun_cfg_load(agent_config_table, agent_config_table_size, &a.cfg, config,
                         !config_given, warn_config, NULL, &err);
    for (size_t i = 0; r >= 0 && i < nsets; i++)
        r = yun_cfg_set(agent_config_table, agent_config_table_size, &a.cfg, sets[i], &err);
    free(sets);
    if (r < 0) {
        fprintf(stderr, "yun-agent: %s\n", err ? err : yun_strerror(r));
        yun_cfg_done(agent_config_table, agent_config_table_size, &a.cfg);
        return 1;
    }
    if (dump) {
        yun_cfg_dump(agent_config_table, agent_config_table_size, &a.cfg, stdout);
        yun_cfg_done(agent_config_table, agent_config_table_size, &a.cfg);
        return 0;
    }
    yun_log_max_level = a.cfg.log_level;
    r = yun_log_open("yun-agent", a.cfg.log_file);
    if (r < 0)
        fprintf(stderr, "yun-agent: cannot open log file '%s': %s\n", a.cfg.log_file,
                strerror(-r));
    else
        r = fetch_image ? agent_fetch_image(&a, fetch_image) : agent_run(&a);
    if (r < 0 && strcmp(a.cfg.log_file, "-") != 0)
        fprintf(stderr, "yun-agent: stopped on an error (%s); see %s\n", yun_errname(r),
                a.cfg.log_file);

    /* Instances first: their last answers go out through the commands. */
    agent_vm_stop(&a);
    agent_command_stop(&a);
    a.net = agent_network_stop(a.net);
    agent_report_stop(&a);
    agent_images_stop(&a);
    if (a.conn)
        virConnectClose(a.conn);
    a.loop = yun_loop_free(a.loop);
    a.store = yun_store_close(a.store);
    yun_peer_key_done(&a.key);
    yun_cfg_done(agent_config_table, agent_config_table_size, &a.cfg);
    yun_log_close();
    return r < 0 ? 1 : 0;
}
