/* SPDX-License-Identifier: Apache-2.0
 * netplug-tool.c: libnetplug from the command line, for test and bench
 * scripts (tests/integration/network/, tests/bench/bench-vxlan.sh) that
 * build hosts out of network namespaces. Not installed; not the product's
 * way in (the agent calls libnetplug itself). Exits 0, 1 failed, 2 usage. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "firewall.h"
#include "netplug.h"
#include "util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct netplug *, netplug_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct netplug_fw *, netplug_fw_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, netplug_names_free);

static const char usage[] =
    "usage: netplug-tool COMMAND ARGS\n"
    "  bridge NAME [MTU]\n"
    "  vxlan NAME VNI LOCAL_IP UNDERLAY|- BRIDGE [MTU]\n"
    "  remotes VXLAN [IP...]\n"
    "  attach LINK BRIDGE\n"
    "  tap NAME BRIDGE GUEST_MAC [MTU]\n"
    "  rm NAME\n"
    "  links PREFIX\n"
    "  fw-apply TAP MAC IP[,IP...]|- [RULE...]   RULE: in|out:any|tcp|udp|icmp|N[:MIN[-MAX]][:CIDR|@GROUP]\n"
    "  fw-nosec TAP MAC\n"
    "  fw-rm TAP\n"
    "  fw-group GROUP [IP...]\n"
    "  fw-ports\n"
    "  fw-reset\n";

static unsigned
opt_u32(int argc, char **argv, int i)
{
    uint32_t v = 0;
    if (i < argc && yun_safe_atou32(argv[i], &v) < 0) {
        fprintf(stderr, "netplug-tool: '%s' is not a number\n", argv[i]);
        exit(2);
    }
    return v;
}

/* "in:tcp:22-23:10.0.0.0/8" into 'r'; the strings point into 's'. */
static int
parse_rule(char *s, struct netplug_fw_rule *r)
{
    char *save = NULL;
    char *dir = strtok_r(s, ":", &save), *proto = strtok_r(NULL, ":", &save);
    char *a = strtok_r(NULL, ":", &save), *b = strtok_r(NULL, ":", &save);
    if (!dir || !proto)
        return -EINVAL;
    *r = (struct netplug_fw_rule){ .ingress = strcmp(dir, "in") == 0 };
    if (!r->ingress && strcmp(dir, "out") != 0)
        return -EINVAL;
    uint32_t n;
    if (strcmp(proto, "any") == 0)
        r->protocol = -1;
    else if (strcmp(proto, "tcp") == 0)
        r->protocol = 6;
    else if (strcmp(proto, "udp") == 0)
        r->protocol = 17;
    else if (strcmp(proto, "icmp") == 0)
        r->protocol = 1;
    else if (yun_safe_atou32(proto, &n) == 0 && n <= 255)
        r->protocol = (int)n;
    else
        return -EINVAL;
    if (a && (a[0] == '@' || strchr(a, '.'))) {
        b = a;
        a = NULL;
    }
    if (a) {
        char *dash = strchr(a, '-');
        if (dash)
            *dash = '\0';
        if (yun_safe_atou32(a, &r->min) < 0 || (dash && yun_safe_atou32(dash + 1, &r->max) < 0))
            return -EINVAL;
        if (!dash)
            r->max = r->protocol == 1 ? 256 : r->min;
        r->has_range = true;
    }
    if (b && b[0] == '@')
        r->remote_group = b + 1;
    else if (b)
        r->remote_cidr = b;
    return 0;
}

static int
fw_cmd(const char *cmd, int argc, char **argv)
{
    _cleanup_(netplug_fw_freep) struct netplug_fw *fw = NULL;
    int r = netplug_fw_new(&fw);
    if (r < 0)
        return r;
    if (strcmp(cmd, "fw-apply") == 0 || strcmp(cmd, "fw-nosec") == 0) {
        bool sec = strcmp(cmd, "fw-apply") == 0;
        if (argc < (sec ? 3 : 2))
            return -EINVAL;
        const char *ips[NETPLUG_FW_MAX_PORT_IPS];
        size_t n_ips = 0;
        char *save = NULL;
        for (char *ip = sec ? strtok_r(argv[2], ",", &save) : NULL;
             ip && strcmp(ip, "-") != 0 && n_ips < ELEMENTSOF(ips); ip = strtok_r(NULL, ",", &save))
            ips[n_ips++] = ip;
        struct netplug_fw_rule rules[64];
        size_t n_rules = 0;
        for (int i = sec ? 3 : argc; i < argc && n_rules < ELEMENTSOF(rules); i++)
            if (parse_rule(argv[i], &rules[n_rules++]) < 0)
                return -EINVAL;
        struct netplug_fw_port p = { .tap = argv[0], .mac = argv[1], .ips = ips, .n_ips = n_ips,
                                     .port_security = sec, .rules = rules, .n_rules = n_rules };
        r = netplug_fw_port_apply(fw, &p);
    } else if (strcmp(cmd, "fw-rm") == 0 && argc == 1) {
        r = netplug_fw_port_remove(fw, argv[0]);
    } else if (strcmp(cmd, "fw-group") == 0 && argc >= 1) {
        r = netplug_fw_group_set(fw, argv[0], (const char *const *)argv + 1, (size_t)argc - 1);
    } else if (strcmp(cmd, "fw-ports") == 0) {
        _cleanup_(netplug_names_freep) char **taps = NULL;
        size_t n = 0;
        r = netplug_fw_port_list(fw, &taps, &n);
        for (size_t i = 0; r == 0 && i < n; i++)
            printf("%s\n", taps[i]);
    } else if (strcmp(cmd, "fw-reset") == 0) {
        r = netplug_fw_reset(fw);
    } else {
        return -EINVAL;
    }
    if (r < 0 && *netplug_fw_last_error(fw))
        fprintf(stderr, "nft: %s\n", netplug_fw_last_error(fw));
    return r;
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    int n = argc - 2;
    char **a = argv + 2;
    if (strncmp(cmd, "fw-", 3) == 0) {
        int r = fw_cmd(cmd, n, a);
        if (r == -EINVAL) {
            fprintf(stderr, "netplug-tool: %s: invalid arguments\n%s", cmd, usage);
            return 2;
        }
        if (r < 0) {
            fprintf(stderr, "netplug-tool: %s: %s\n", cmd, yun_strerror(r));
            return 1;
        }
        return 0;
    }
    _cleanup_(netplug_freep) struct netplug *np = NULL;
    int r = netplug_new(&np);
    if (r < 0) {
        fprintf(stderr, "netplug-tool: %s\n", yun_strerror(r));
        return 1;
    }
    if (strcmp(cmd, "bridge") == 0 && (n == 1 || n == 2))
        r = netplug_bridge_ensure(np, a[0], opt_u32(n, a, 1));
    else if (strcmp(cmd, "vxlan") == 0 && (n == 5 || n == 6))
        r = netplug_vxlan_ensure(np, a[0], opt_u32(n, a, 1), a[2],
                                 strcmp(a[3], "-") == 0 ? NULL : a[3], 0, a[4], opt_u32(n, a, 5));
    else if (strcmp(cmd, "remotes") == 0 && n >= 1)
        r = netplug_vxlan_set_remotes(np, a[0], (const char *const *)a + 1, (size_t)n - 1);
    else if (strcmp(cmd, "attach") == 0 && n == 2)
        r = netplug_attach(np, a[0], a[1]);
    else if (strcmp(cmd, "tap") == 0 && (n == 3 || n == 4))
        r = netplug_tap_ensure(np, a[0], a[1], a[2], opt_u32(n, a, 3));
    else if (strcmp(cmd, "rm") == 0 && n == 1)
        r = netplug_link_remove(np, a[0]);
    else if (strcmp(cmd, "links") == 0 && n == 1) {
        _cleanup_(netplug_names_freep) char **names = NULL;
        size_t k = 0;
        r = netplug_link_list(np, a[0], &names, &k);
        for (size_t i = 0; r == 0 && i < k; i++)
            printf("%s\n", names[i]);
    } else {
        fputs(usage, stderr);
        return 2;
    }
    if (r < 0) {
        fprintf(stderr, "netplug-tool: %s: %s\n", cmd, yun_strerror(r));
        return 1;
    }
    return 0;
}
