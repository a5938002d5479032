/* SPDX-License-Identifier: Apache-2.0
 * main.c: the `yun` command: `yun [OPTIONS] OBJECT VERB [ARGS]`. Global
 * options may stand anywhere on the line (`yun host list -f json`).
 * Objects and verbs come from static tables; --help works at every level.
 * Exit codes: 0 ok, 1 failed, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "cleanup.h"
#include "cli.h"
#include "err.h"
#include "keyfile.h"
#include "rpc.h"
#include "util.h"

static const struct cli_object cli_objects[] = {
    { "host", cli_host_verbs, "Compute hosts (admin)" },
    { "image", cli_image_verbs, "Disk images: upload, download, share" },
    { "audit", cli_audit_verbs, "The audit log of changes (admin)" },
    { "login", NULL, "Log in as a user, for a project", &cli_login_command },
    { "logout", NULL, "Revoke and forget the cached token", &cli_logout_command },
    { "project", cli_project_verbs, "Projects (admin)" },
    { "user", cli_user_verbs, "Users (admin)" },
    { "role", cli_role_verbs, "Role assignments: admin, member, reader (admin)" },
    { "keypair", cli_keypair_verbs, "SSH keypairs of the user" },
    { "server", cli_server_verbs, "Servers (instances) and server groups" },
    { "flavor", cli_flavor_verbs, "Flavors: the sizes servers come in" },
    { "network", cli_network_verbs, "Networks: flat, VLAN or VXLAN segments" },
    { "subnet", cli_subnet_verbs, "IPv4 subnets of networks: ranges, gateways, pools" },
    { "port", cli_port_verbs, "Ports: a MAC and addresses on a network" },
    { "security", cli_security_verbs, "Security groups and their rules" },
    {},
};

int
cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("yun: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

int
cli_option_error(const char *cmd, int c, char **argv)
{
    /* getopt_long() has moved optind past the offending word. */
    const char *word = optind > 0 ? argv[optind - 1] : "";
    if (c == ':')
        return cli_usage_error("option '%s' of '%s' needs a value", word, cmd);
    if (optopt && strncmp(word, "--", 2) != 0)
        return cli_usage_error("unknown option '-%c' for '%s' (see 'yun %s --help')", optopt,
                               cmd, cmd);
    return cli_usage_error("unknown option '%s' for '%s' (see 'yun %s --help')", word, cmd,
                           cmd);
}

static void
usage(FILE *out)
{
    fprintf(out,
            "Usage: yun [OPTIONS] OBJECT VERB [ARGS]\n"
            "\n"
            "Objects:\n");
    for (const struct cli_object *o = cli_objects; o->name; o++)
        fprintf(out, "  %-10s %s\n", o->name, o->help);
    fprintf(out,
            "\n"
            "Options (anywhere on the line):\n"
            "  -f, --format FORMAT   table (default), json, value or csv\n"
            "  -c, --column NAME     Print only this column (repeatable)\n"
            "      --no-headings     Print no column headings\n"
            "      --url URL         Scheduler bus URL (YUN_URL; default: the key file's)\n"
            "      --key-file FILE   Operator key (YUN_KEY_FILE; default\n"
            "                        ~/.config/yun/operator.key, then /etc/yun/operator.key)\n"
            "      --timeout SECONDS How long to wait for the scheduler (YUN_TIMEOUT; 5)\n"
            "  -h, --help            Show help (also after OBJECT or VERB)\n"
            "\n"
            "Who acts: the token of 'yun login' (kept in $YUN_CONFIG_DIR/token, default\n"
            "~/.config/yun/token); with YUN_USERNAME, YUN_PASSWORD_FILE (or YUN_PASSWORD)\n"
            "and YUN_PROJECT set, commands log in by themselves when they need to.\n");
}

/* "Usage: yun image VERB [ARGS]" and the verbs of 'path' ("image",
 * "image member"). */
static void
verbs_usage(const char *path, const char *help, const struct cli_verb *verbs, FILE *out)
{
    fprintf(out, "Usage: yun %s VERB [ARGS]\n\n%s.\n\nVerbs:\n", path, help);
    for (const struct cli_verb *v = verbs; v->name; v++) {
        char left[256];
        snprintf(left, sizeof left, "%s %s", v->name,
                 v->verbs ? "VERB [ARGS]" : v->args ? v->args : "");
        if (strlen(left) <= 30)
            fprintf(out, "  %-30s %s\n", left, v->help);
        else
            fprintf(out, "  %s\n  %-30s %s\n", left, "", v->help);
    }
}

/* Runs the verb argv[1] of 'verbs' (argv[0] names this level), descending
 * into sub-verbs: "image member add". */
static int
run_verb(struct cli *cli, const char *path, const char *help, const struct cli_verb *verbs,
         int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        verbs_usage(path, help, verbs, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const struct cli_verb *v = verbs;
    while (v->name && strcmp(v->name, argv[1]) != 0)
        v++;
    if (!v->name)
        return cli_usage_error("unknown verb '%s %s' (see 'yun %s --help')", path, argv[1],
                               path);
    char sub[256];
    snprintf(sub, sizeof sub, "%s %s", path, v->name);
    if (v->verbs)
        return run_verb(cli, sub, v->help, v->verbs, argc - 1, argv + 1);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("Usage: yun %s %s\n\n%s.\n", sub, v->args ? v->args : "", v->help);
            if (v->details)
                printf("\n%s", v->details);
            return 0;
        }
    }
    return v->run(cli, argc - 1, argv + 1);
}

/* An object that is a command itself: "yun login [ARGS]". */
static int
run_command(struct cli *cli, const struct cli_verb *v, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("Usage: yun %s %s\n\n%s.\n", v->name, v->args ? v->args : "", v->help);
            if (v->details)
                printf("\n%s", v->details);
            return 0;
        }
    }
    return v->run(cli, argc, argv);
}

static const char *
default_key_file(void)
{
    static char path[4096];
    const char *home = getenv("HOME");
    if (home) {
        snprintf(path, sizeof path, "%s/.config/yun/operator.key", home);
        if (access(path, F_OK) == 0)
            return path;
    }
    return "/etc/yun/operator.key";
}

static int
cli_connect(struct cli *cli)
{
    if (cli->bus)
        return 0;
    const char *path = cli->key_file ? cli->key_file : default_key_file();
    struct yun_peer_key k = { 0 };
    int r = yun_peer_key_load(path, &k);
    if (r == -ENOENT) {
        fprintf(stderr, "yun: no key file '%s': set YUN_KEY_FILE or use --key-file "
                        "(an operator key comes from 'yun-scheduler issue-key --operator "
                        "NAME')\n", path);
        return 1;
    }
    if (r == -EPERM) {
        fprintf(stderr, "yun: key file '%s' is readable by others: chmod 600 it\n", path);
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "yun: cannot load key file '%s': %s\n", path, yun_strerror(r));
        return 1;
    }
    const char *url = cli->url ? cli->url : k.scheduler;
    if (!url || !*url) {
        yun_peer_key_done(&k);
        fprintf(stderr, "yun: no scheduler URL: set YUN_URL or use --url\n");
        return 1;
    }
    free(cli->bus_url);
    cli->bus_url = strdup(url);
    struct yun_bus_client_options o = {
        .url = url,
        .self_id = k.id,
        .key_id = k.id,
        .key_epoch = k.epoch,
        .key = &k.key,
        .timeout_ms = cli->timeout_ms,
    };
    r = yun_bus_client_new(&o, &cli->bus);
    yun_peer_key_done(&k);
    if (r < 0) {
        fprintf(stderr, "yun: cannot connect to '%s': %s\n", url, yun_strerror(r));
        return 1;
    }
    return 0;
}

int
cli_call_raw(struct cli *cli, Yun__Op op, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret,
             int *ret_err)
{
    int r = cli_connect(cli);
    if (r)
        return r;
    for (int attempt = 0;; attempt++) {
        const char *token = NULL;
        r = cli_auth_prepare(cli, op, &token);
        if (r)
            return r;
        _cleanup_free_ char *msg = NULL;
        r = yun_rpc_call_full(cli->bus, NULL, token, token ? strlen(token) : 0, op, req,
                              reply_desc, ret, &msg);
        if (r == 0)
            return 0;
        /* A cached token refused: log in again and call once more. */
        if (attempt == 0 && cli_auth_retry(cli, r))
            continue;
        if (ret_err)
            *ret_err = r;
        const char *hint = cli_auth_hint(cli, r);
        if (ret_err && hint && r != YUN_E_DENIED)
            return 1;
        if (r == YUN_E_UNREACHABLE)
            fprintf(stderr, "yun: the scheduler did not answer within %d s (%s)\n",
                    cli->timeout_ms / 1000, yun_errname(r));
        else if (r == YUN_E_SEAL || r == YUN_E_UNKNOWN_PEER)
            fprintf(stderr, "yun: authentication failed: the scheduler does not accept this "
                            "key (%s)\n", yun_errname(r));
        else if (hint)
            fprintf(stderr, "yun: %s (%s); %s\n", msg ? msg : yun_strerror(r), yun_errname(r),
                    hint);
        else
            fprintf(stderr, "yun: %s (%s)\n", msg ? msg : yun_strerror(r), yun_errname(r));
        return 1;
    }
}

int
cli_call(struct cli *cli, Yun__Op op, const ProtobufCMessage *req,
         const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret)
{
    return cli_call_raw(cli, op, req, reply_desc, ret, NULL);
}

int
cli_print(struct cli *cli, struct cli_table *t)
{
    int r = cli_table_print(t, &cli->out, stdout);
    if (fflush(stdout) != 0)
        return 1;
    return r;
}

static int
parse_format(const char *s, enum cli_format *ret)
{
    static const char *const names[] = { "table", "json", "value", "csv" };
    for (size_t i = 0; i < ELEMENTSOF(names); i++)
        if (strcmp(s, names[i]) == 0) {
            *ret = (enum cli_format)i;
            return 0;
        }
    return -EINVAL;
}

/* Takes the global options out of argv wherever they stand; what is left
 * is OBJECT VERB ARGS. Returns 0 or the exit code of a usage error. */
static int
take_global_options(struct cli *cli, int *argc, char **argv, const char ***columns)
{
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        const char *opt = a;
        size_t optlen = strlen(a);
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq)
            optlen = (size_t)(eq - a);
#define IS(name) (strlen(name) == optlen && strncmp(opt, name, optlen) == 0)
        bool takes = IS("-f") || IS("--format") || IS("-c") || IS("--column") || IS("--url") ||
                     IS("--key-file") || IS("--timeout");
        if (strcmp(a, "--") == 0) {
            for (int j = i; j < *argc; j++)
                argv[out++] = argv[j];
            break;
        }
        if (IS("--no-headings")) {
            cli->out.no_headings = true;
            continue;
        }
        if (!takes) {
            argv[out++] = argv[i];
            continue;
        }
        if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= *argc)
                return cli_usage_error("option '%s' needs a value", a);
            val = argv[++i];
        }
        if (IS("-f") || IS("--format")) {
            if (parse_format(val, &cli->out.format) < 0)
                return cli_usage_error("unknown format '%s': use table, json, value or csv",
                                       val);
        } else if (IS("-c") || IS("--column")) {
            (*columns)[cli->out.n_columns++] = val;
        } else if (IS("--url")) {
            cli->url = val;
        } else if (IS("--key-file")) {
            cli->key_file = val;
        } else if (IS("--timeout")) {
            uint32_t s;
            if (yun_safe_atou32(val, &s) < 0 || s == 0 || s > 3600)
                return cli_usage_error("invalid timeout '%s': give seconds from 1 to 3600",
                                       val);
            cli->timeout_ms = (int)s * 1000;
            cli->wait_timeout_ms = cli->timeout_ms;
        }
#undef IS
    }
    argv[out] = NULL;
    *argc = out;
    return 0;
}

int
main(int argc, char **argv)
{
    struct cli cli = { .timeout_ms = 5000 };
    /* Image transfers allocate and free a few 1 MiB buffers per chunk
     * (message, sealed body, decoded payload). Left to glibc's defaults
     * each is a fresh mmap, so every MiB costs 256 page faults and the
     * zeroing of its pages: a third of the CPU of a download. Keep such
     * buffers on the heap and let it grow. */
    (void)mallopt(M_MMAP_THRESHOLD, 64 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);
    _cleanup_free_ const char **columns = calloc((size_t)argc + 1, sizeof *columns);
    if (!columns)
        return 1;
    cli.url = getenv("YUN_URL");
    cli.key_file = getenv("YUN_KEY_FILE");
    const char *t = getenv("YUN_TIMEOUT");
    uint32_t secs;
    if (t && yun_safe_atou32(t, &secs) == 0 && secs > 0 && secs <= 3600)
        cli.timeout_ms = (int)secs * 1000;
    cli.out.color = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");

    int r = take_global_options(&cli, &argc, argv, &columns);
    if (r)
        return r;
    cli.out.columns = columns;

    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const struct cli_object *o = cli_objects;
    while (o->name && strcmp(o->name, argv[1]) != 0)
        o++;
    if (!o->name)
        return cli_usage_error("unknown object '%s' (see 'yun --help')", argv[1]);
    if (o->command)
        r = run_command(&cli, o->command, argc - 1, argv + 1);
    else
        r = run_verb(&cli, o->name, o->help, o->verbs, argc - 1, argv + 1);
    cli.bus = yun_bus_client_free(cli.bus);
    cli_auth_done(&cli);
    free(cli.bus_url);
    return r;
}
