/* SPDX-License-Identifier: Apache-2.0
 * main.c: yun-scheduler's entry point: argv, config, the loop and teardown.
 *   yun-scheduler [run]            serve the bus (the default)
 *   yun-scheduler init             create the cluster secret and the state store
 *   yun-scheduler issue-key ...    register a peer and write its key file
 *   yun-scheduler revoke-key NAME  bump a peer's key epoch
 *   yun-scheduler set-password NAME  set a user's password (bootstraps admin)
 *   yun-scheduler rotate-keys      rotate the token keys
 * The logic lives in the modules (dispatch.c, host.c, image.c, audit.c,
 * peers.c, identity*.c). */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bus.h"
#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "keyfile.h"
#include "log.h"
#include "loop.h"
#include "notify.h"
#include "pool.h"
#include "prompt.h"
#include "scheduler.h"
#include "token.h"
#include "seal.h"
#include "store.h"
#include "util.h"

YUN_LOG_MODULE("sched.main");

static void
usage(FILE *out)
{
    fprintf(out,
            "Usage: yun-scheduler [OPTIONS] [COMMAND]\n"
            "\n"
            "Commands:\n"
            "  run                      Serve the bus (default)\n"
            "  init [--admin-password-file F]\n"
            "                           Create the cluster secret, the state store, the\n"
            "                           token keys, and the admin user and project (the\n"
            "                           password from F, or asked for on a terminal)\n"
            "  issue-key --agent NAME | --operator NAME [--out FILE] [--url URL] [--rotate]\n"
            "                           Register a peer and write its key file (stdout\n"
            "                           without --out); --rotate revokes its older keys\n"
            "  issue-key --agent PREFIX --count N [--rotate]\n"
            "                           Register the agents PREFIX-1 ... PREFIX-N at once\n"
            "                           and write no key file (for the host simulator,\n"
            "                           which derives their keys from the cluster secret)\n"
            "  revoke-key NAME          Revoke every key of a peer (bumps its epoch)\n"
            "  set-password NAME [--password-file F]\n"
            "                           Set a user's password (creates the admin user when\n"
            "                           NAME is admin and it is missing); revokes its tokens\n"
            "  rotate-keys              Rotate the token keys (staged -> primary); a running\n"
            "                           scheduler picks them up by itself\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE        Config file (default %s)\n"
            "  -s, --set SECTION.KEY=VALUE  Override one setting (repeatable)\n"
            "      --dump-config        Print the effective configuration and exit\n"
            "  -h, --help               Show this help\n",
            SCHED_CONFIG_FILE_DEFAULT);
}

static void
warn_config(const char *msg, void *data)
{
    log_warn("%s", msg);
}

static int64_t
on_cron(struct yun_loop *loop, int id, void *data)
{
    struct sched *s = data;
    sched_host_check_liveness(s);
    sched_image_cron(s);
    sched_audit_cron(s);
    sched_identity_cron(s);
    sched_compute_cron(s);
    return s->cfg.host_check_interval_ms;
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
    struct sched *s = data;
    int r = yun_log_reopen();
    if (r < 0)
        log_err_errno(r, "cannot reopen the log file");
    else
        log_info("log file reopened");
    (void)sched_identity_reload_keys(s);
}

static int
load_secret(struct sched *s)
{
    int r = yun_secret_load(s->cfg.secret_file, s->secret);
    if (r == -ENOENT)
        return log_err_errno(r, "cluster secret '%s' is missing: run 'yun-scheduler init' first",
                             s->cfg.secret_file);
    if (r == -EPERM)
        return log_err_errno(r, "cluster secret '%s' is readable by others: chmod 600 it",
                             s->cfg.secret_file);
    if (r < 0)
        return log_err_errno(r, "cannot load the cluster secret '%s'", s->cfg.secret_file);
    return 0;
}

static int
cmd_run(struct sched *s)
{
    int r = load_secret(s);
    if (r < 0)
        return r;
    const char *why = NULL;
    r = sched_network_config_check(&s->cfg, &why);
    if (r < 0)
        return log_err_errno(r, "invalid configuration: %s", why);
    r = sched_store_open(s);
    if (r < 0)
        return log_err_errno(r, "cannot open the state store '%s'", s->cfg.state_dir);
    r = sched_image_init(s);
    if (r < 0)
        return r;
    r = yun_loop_new(&s->loop);
    if (r < 0)
        return log_err_errno(r, "cannot create the event loop");
    r = sched_identity_init(s);
    if (r < 0)
        return r;
    r = sched_compute_init(s);
    if (r < 0)
        return r;
    r = sched_hosts_init(s);
    if (r < 0)
        return log_err_errno(r, "out of memory");
    r = yun_pool_new(s->loop, s->cfg.worker_threads, s->cfg.worker_queue, &s->pool);
    if (r < 0)
        return log_err_errno(r, "cannot start %u worker threads", s->cfg.worker_threads);

    struct yun_bus_server_options bo = {
        .url = s->cfg.bus_url,
        .self_id = "scheduler",
        .max_body = s->cfg.max_message_size,
        .window_us = (uint64_t)s->cfg.message_window_s * 1000000u,
        .max_cached_replies = s->cfg.max_cached_replies,
        .key = sched_peer_key,
        .serve = sched_dispatch,
        .reject = sched_dispatch_reject,
        .data = s,
    };
    r = yun_bus_server_new(s->loop, &bo, &s->bus);
    if (r < 0)
        return log_err_errno(r, "cannot serve the bus on '%s'", s->cfg.bus_url);
    (void)yun_loop_add_signal(s->loop, SIGTERM, on_quit, s);
    (void)yun_loop_add_signal(s->loop, SIGINT, on_quit, s);
    (void)yun_loop_add_signal(s->loop, SIGHUP, on_hup, s);
    signal(SIGPIPE, SIG_IGN);
    s->cron = yun_loop_add_timer(s->loop, s->cfg.host_check_interval_ms, on_cron, s, NULL);
    if (s->cron < 0)
        return log_err_errno(s->cron, "cannot add the cron timer");

    log_notice("scheduler started bus=%s state=%s", s->cfg.bus_url, s->cfg.state_dir);
    (void)yun_notify("READY=1");
    r = yun_loop_run(s->loop);
    (void)yun_notify("STOPPING=1");
    log_notice("scheduler stopped");
    return r;
}

/* The password for 'user': from 'file', else asked for on a terminal.
 * -ENOTTY when there is neither. */
static int
get_password(const char *file, const char *user, char **ret)
{
    if (file) {
        int r = yun_password_read_file(file, ret);
        if (r == -EINVAL)
            return log_err_errno(r, "the password file '%s' holds no password (one line)",
                                 file);
        if (r < 0)
            return log_err_errno(r, "cannot read the password file '%s'", file);
        return 0;
    }
    if (!yun_password_can_prompt())
        return -ENOTTY;
    char prompt[128];
    snprintf(prompt, sizeof prompt, "New password for user '%s': ", user);
    int r = yun_password_prompt(prompt, true, ret);
    if (r == -EILSEQ)
        return log_err_errno(r, "the two passwords differ");
    if (r < 0)
        return log_err_errno(r, "no password read");
    return 0;
}

static int
init_token_keys(struct sched *s)
{
    _cleanup_free_ char *dir = NULL;
    int r = sched_identity_key_dir(s, &dir);
    if (r < 0)
        return r;
    r = yun_token_keys_create(dir);
    if (r == -EEXIST) {
        printf("token keys %s already exist; kept\n", dir);
        return 0;
    }
    if (r < 0)
        return log_err_errno(r, "cannot create the token keys in '%s'", dir);
    printf("created token keys %s\n", dir);
    return 0;
}

static int
init_admin(struct sched *s, const char *password_file)
{
    _cleanup_(yun_password_freep) char *password = NULL;
    int r = get_password(password_file, "admin", &password);
    if (r < 0 && r != -ENOTTY)
        return r;
    bool created = false;
    r = sched_identity_bootstrap(s, password, &created);
    if (r < 0)
        return log_err_errno(r, "cannot create the admin user and project");
    if (created)
        printf("created user 'admin' with the admin role on project 'admin'\n");
    else if (password)
        printf("user 'admin' already exists; kept (change its password with "
               "'yun-scheduler set-password admin')\n");
    else
        printf("no admin password given (no --admin-password-file and no terminal): no admin "
               "user was created; create it with 'yun-scheduler set-password admin "
               "--password-file F'\n");
    return 0;
}

static int
cmd_set_password(struct sched *s, const char *name, const char *password_file)
{
    int r = sched_store_open(s);
    if (r < 0)
        return log_err_errno(r, "cannot open the state store '%s'", s->cfg.state_dir);
    _cleanup_(yun_password_freep) char *password = NULL;
    r = get_password(password_file, name, &password);
    if (r == -ENOTTY)
        return log_err_errno(r, "no password: give --password-file F or run on a terminal");
    if (r < 0)
        return r;
    r = sched_identity_set_password(s, name, password);
    if (r == -ENOENT)
        return log_err_errno(r, "no user named '%s'", name);
    if (r < 0)
        return log_err_errno(r, "cannot set the password of '%s'", name);
    printf("password of user '%s' set; its earlier tokens are revoked\n", name);
    return 0;
}

static int
cmd_rotate_keys(struct sched *s)
{
    _cleanup_free_ char *dir = NULL;
    int r = sched_identity_key_dir(s, &dir);
    if (r < 0)
        return r;
    r = yun_token_keys_rotate(dir, s->cfg.token_max_active_keys);
    if (r < 0)
        return log_err_errno(r, "cannot rotate the token keys in '%s'", dir);
    struct yun_token_keys *keys = NULL;
    r = yun_token_keys_load(dir, &keys);
    if (r < 0)
        return log_err_errno(r, "cannot read the rotated token keys in '%s'", dir);
    size_t n = yun_token_keys_count(keys);
    uint32_t primary = 0;
    (void)yun_token_keys_get(keys, n - 1, &primary, NULL);
    yun_token_keys_free(keys);
    printf("rotated the token keys in %s: %zu keys, primary %u; a running scheduler loads "
           "them within seconds (or at once on SIGHUP)\n", dir, n, primary);
    return 0;
}

static int
cmd_init(struct sched *s, const char *admin_password_file)
{
    _cleanup_free_ char *dir = strdup(s->cfg.secret_file);
    if (!dir)
        return -ENOMEM;
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        int r = yun_mkdir_p(dir, 0755);
        if (r < 0)
            return log_err_errno(r, "cannot create '%s'", dir);
    }
    int r = yun_secret_create(s->cfg.secret_file);
    if (r == -EEXIST) {
        r = load_secret(s);
        if (r < 0)
            return r;
        printf("cluster secret %s already exists; kept\n", s->cfg.secret_file);
    } else if (r < 0) {
        return log_err_errno(r, "cannot create the cluster secret '%s'", s->cfg.secret_file);
    } else {
        printf("created cluster secret %s\n", s->cfg.secret_file);
    }
    r = sched_store_open(s);
    if (r < 0)
        return log_err_errno(r, "cannot open the state store '%s'", s->cfg.state_dir);
    printf("state store %s is ready (schema %u)\n", s->cfg.state_dir,
           yun_store_schema_version(s->store));
    size_t flavors = 0;
    r = sched_flavor_seed(s, &flavors);
    if (r < 0)
        return log_err_errno(r, "cannot create the default flavors");
    printf("default flavors: %zu created\n", flavors);
    r = init_token_keys(s);
    if (r < 0)
        return r;
    return init_admin(s, admin_password_file);
}

static int
cmd_issue_keys(struct sched *s, const char *kind, const char *prefix, uint32_t count,
               bool rotate)
{
    int r = load_secret(s);
    if (r < 0)
        return r;
    r = sched_store_open(s);
    if (r < 0)
        return log_err_errno(r, "cannot open the state store '%s'", s->cfg.state_dir);
    uint32_t epoch;
    r = sched_peer_issue_many(s, prefix, count, kind, rotate, &epoch);
    if (r == -EINVAL)
        return log_err_errno(r, "'%s-N' is not a valid peer name", prefix);
    if (r == -EEXIST)
        return log_err_errno(r, "a peer '%s-N' exists with another kind", prefix);
    if (r < 0)
        return log_err_errno(r, "cannot register the peers '%s-1' to '%s-%u'", prefix, prefix,
                             count);
    printf("registered %u %s peers '%s-1' to '%s-%u' (epoch %s%u)\n", count, kind, prefix,
           prefix, count, epoch > 1 ? "at most " : "", epoch);
    return 0;
}

static int
cmd_issue_key(struct sched *s, const char *kind, const char *name, const char *out,
              const char *url, bool rotate)
{
    int r = load_secret(s);
    if (r < 0)
        return r;
    r = sched_store_open(s);
    if (r < 0)
        return log_err_errno(r, "cannot open the state store '%s'", s->cfg.state_dir);
    uint32_t epoch;
    r = sched_peer_issue(s, name, kind, rotate, &epoch);
    if (r == -EINVAL)
        return log_err_errno(r, "'%s' is not a valid peer name", name);
    if (r == -EEXIST)
        return log_err_errno(r, "peer '%s' exists with another kind", name);
    if (r < 0)
        return log_err_errno(r, "cannot register peer '%s'", name);

    struct yun_peer_key k = {
        .id = (char *)name,
        .kind = (char *)kind,
        .epoch = epoch,
        .scheduler = (char *)(url ? url : s->cfg.bus_url),
    };
    r = yun_key_derive(s->secret, sizeof s->secret, name, epoch, &k.key);
    if (r < 0)
        return log_err_errno(r, "cannot derive the key of '%s'", name);
    if (out) {
        r = yun_peer_key_write(out, &k);
        yun_wipe(&k.key, sizeof k.key);
        if (r < 0)
            return log_err_errno(r, "cannot write the key file '%s'", out);
        fprintf(stderr, "issued %s key for '%s' (epoch %u) in %s\n", kind, name, epoch, out);
        return 0;
    }
    char hex[2 * YUN_KEY_SIZE + 1];
    yun_hex_encode(k.key.bytes, YUN_KEY_SIZE, hex);
    yun_wipe(&k.key, sizeof k.key);
    printf("[peer]\nid = %s\nkind = %s\nepoch = %u\nkey = %s\nscheduler = %s\n", name, kind,
           epoch, hex, k.scheduler);
    yun_wipe(hex, sizeof hex);
    return 0;
}

static int
cmd_revoke_key(struct sched *s, const char *name)
{
    int r = sched_store_open(s);
    if (r < 0)
        return log_err_errno(r, "cannot open the state store '%s'", s->cfg.state_dir);
    uint32_t epoch;
    r = sched_peer_revoke(s, name, &epoch);
    if (r == -ENOENT)
        return log_err_errno(r, "no peer named '%s'", name);
    if (r < 0)
        return log_err_errno(r, "cannot revoke the keys of '%s'", name);
    printf("revoked the keys of '%s'; its epoch is now %u: issue it a new key with "
           "'yun-scheduler issue-key'\n", name, epoch);
    return 0;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "set", required_argument, NULL, 's' },
        { "dump-config", no_argument, NULL, 'D' },
        { "agent", required_argument, NULL, 'A' },
        { "operator", required_argument, NULL, 'O' },
        { "out", required_argument, NULL, 'o' },
        { "url", required_argument, NULL, 'u' },
        { "rotate", no_argument, NULL, 'R' },
        { "count", required_argument, NULL, 'n' },
        { "admin-password-file", required_argument, NULL, 'P' },
        { "password-file", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        {},
    };
    const char *config = SCHED_CONFIG_FILE_DEFAULT;
    bool config_given = false, dump = false, rotate = false;
    const char *kind = NULL, *name = NULL, *out = NULL, *url = NULL;
    const char *admin_password_file = NULL, *password_file = NULL;
    uint32_t count = 0;
    char **sets = calloc((size_t)argc, sizeof *sets);
    size_t nsets = 0;
    int c;

    if (!sets)
        return 1;
    /* Image chunks allocate and free a few 1 MiB buffers per message
     * (received message, sealed and opened bodies, decoded payload). With
     * glibc's defaults the heap top is trimmed and regrown around them,
     * so every MiB costs 256 page faults and the zeroing of its pages:
     * half of the scheduler's CPU of a download. Keep them on the heap. */
    (void)mallopt(M_MMAP_THRESHOLD, 64 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);
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
        case 'A':
        case 'O':
            if (kind) {
                fprintf(stderr, "yun-scheduler: give one of --agent and --operator\n");
                free(sets);
                return 2;
            }
            kind = c == 'A' ? "agent" : "operator";
            name = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'u':
            url = optarg;
            break;
        case 'R':
            rotate = true;
            break;
        case 'n':
            if (yun_safe_atou32(optarg, &count) < 0 || count == 0 || count > 1000000) {
                fprintf(stderr, "yun-scheduler: --count needs a number from 1 to 1000000\n");
                free(sets);
                return 2;
            }
            break;
        case 'P':
            admin_password_file = optarg;
            break;
        case 'p':
            password_file = optarg;
            break;
        case 'h':
            free(sets);
            usage(stdout);
            return 0;
        default:
            free(sets);
            usage(stderr);
            return 2;
        }
    }
    const char *cmd = optind < argc ? argv[optind++] : "run";

    struct sched s = { .cron = -1 };
    _cleanup_free_ char *err = NULL;
    yun_log_open("yun-scheduler", NULL);
    /* The default config file may be absent: the defaults run all-in-one. */
    int r = yun_cfg_load(sched_config_table, sched_config_table_size, &s.cfg, config,
                         !config_given, warn_config, NULL, &err);
    for (size_t i = 0; r >= 0 && i < nsets; i++)
        r = yun_cfg_set(sched_config_table, sched_config_table_size, &s.cfg, sets[i], &err);
    free(sets);
    if (r < 0) {
        fprintf(stderr, "yun-scheduler: %s\n", err ? err : yun_strerror(r));
        yun_cfg_done(sched_config_table, sched_config_table_size, &s.cfg);
        return 1;
    }
    if (dump) {
        yun_cfg_dump(sched_config_table, sched_config_table_size, &s.cfg, stdout);
        yun_cfg_done(sched_config_table, sched_config_table_size, &s.cfg);
        return 0;
    }
    yun_log_max_level = s.cfg.log_level;
    if (strcmp(cmd, "run") == 0) {
        r = yun_log_open("yun-scheduler", s.cfg.log_file);
        if (r < 0)
            fprintf(stderr, "yun-scheduler: cannot open log file '%s': %s\n", s.cfg.log_file,
                    strerror(-r));
    }

    if (r < 0)
        ;
    else if (strcmp(cmd, "run") == 0 && optind == argc) {
        r = cmd_run(&s);
        if (r < 0 && strcmp(s.cfg.log_file, "-") != 0)
            fprintf(stderr, "yun-scheduler: stopped on an error (%s); see %s\n",
                    yun_errname(r), s.cfg.log_file);
    }
    else if (strcmp(cmd, "init") == 0 && optind == argc)
        r = cmd_init(&s, admin_password_file);
    else if (strcmp(cmd, "set-password") == 0 && optind + 1 == argc)
        r = cmd_set_password(&s, argv[optind], password_file);
    else if (strcmp(cmd, "rotate-keys") == 0 && optind == argc)
        r = cmd_rotate_keys(&s);
    else if (strcmp(cmd, "issue-key") == 0 && optind == argc && kind && count && !out)
        r = cmd_issue_keys(&s, kind, name, count, rotate);
    else if (strcmp(cmd, "issue-key") == 0 && optind == argc && kind && !count)
        r = cmd_issue_key(&s, kind, name, out, url, rotate);
    else if (strcmp(cmd, "revoke-key") == 0 && optind + 1 == argc)
        r = cmd_revoke_key(&s, argv[optind]);
    else {
        usage(stderr);
        r = -EINVAL;
        yun_cfg_done(sched_config_table, sched_config_table_size, &s.cfg);
        return 2;
    }

    /* Jobs still on the pool answer (with an error) before the bus goes. */
    s.pool = yun_pool_free(s.pool);
    s.bus = yun_bus_server_free(s.bus);
    sched_compute_done(&s);
    s.hosts = sched_hosts_free(s.hosts);
    s.loop = yun_loop_free(s.loop);
    sched_identity_done(&s);
    sched_image_done(&s);
    s.store = yun_store_close(s.store);
    s.keys = sched_keycache_free(s.keys);
    yun_wipe(s.secret, sizeof s.secret);
    yun_cfg_done(sched_config_table, sched_config_table_size, &s.cfg);
    yun_log_close();
    return r < 0 ? 1 : 0;
}
