/* SPDX-License-Identifier: Apache-2.0
 * test-firewall.c: unit tests of netplug's firewall (libnftables) in a
 * network namespace of the test's own: tables made once, ports applied,
 * replaced, moved to another MAC and removed idempotently without
 * touching other ports, groups, checks of every string, ports left by
 * a killed process, and tables changed behind its back. Traffic through the rules is tested by
 * tests/integration/network/test-netplug-traffic.sh. Needs root: 77. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "firewall.h"
#include "netplug.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct netplug_fw *, netplug_fw_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, netplug_names_free);

static char *
run(const char *cmd)
{
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char *out = calloc(1, 1 << 20);
    assert_non_null(out);
    size_t n = fread(out, 1, (1 << 20) - 1, f);
    out[n] = '\0';
    pclose(f);
    return out;
}

static char *
ruleset(void)
{
    return run("nft list ruleset 2>&1");
}

static bool
has(const char *text)
{
    _cleanup_free_ char *r = ruleset();
    return strstr(r, text) != NULL;
}

static size_t
count(const char *text)
{
    _cleanup_free_ char *r = ruleset();
    size_t n = 0;
    for (const char *p = r; (p = strstr(p, text)); p++)
        n++;
    return n;
}

static const char *const ips_a[] = { "10.0.0.5" };
static const struct netplug_fw_rule rules_a[] = {
    { .ingress = true, .protocol = 6, .has_range = true, .min = 22, .max = 22 },
    { .ingress = true, .protocol = 1, .remote_cidr = "10.1.2.3/16" },
    { .ingress = false, .protocol = -1 },
    { .ingress = true, .protocol = 17, .has_range = true, .min = 53, .max = 54,
      .remote_group = "0a1b2c3d-0000-4000-8000-000000000001" },
    { .ingress = true, .protocol = 1, .has_range = true, .min = 8, .max = 1000 },
};

static struct netplug_fw_port
port_a(void)
{
    return (struct netplug_fw_port){ .tap = "ytapa", .mac = "52:54:00:AA:00:01", .ips = ips_a,
                                     .n_ips = 1, .port_security = true, .rules = rules_a,
                                     .n_rules = ELEMENTSOF(rules_a) };
}

static struct netplug_fw_port
port_b(void)
{
    static const char *const ips[] = { "10.0.0.6", "10.0.0.7" };
    return (struct netplug_fw_port){ .tap = "ytapb", .mac = "52:54:00:aa:00:02", .ips = ips,
                                     .n_ips = 2, .port_security = true };
}

static int
teardown(void **state)
{
    struct netplug_fw *fw = NULL;
    assert_int_equal(netplug_fw_new(&fw), 0);
    assert_int_equal(netplug_fw_reset(fw), 0);
    netplug_fw_free(fw);
    return 0;
}

static void
test_tables(void **state)
{
    _cleanup_(netplug_fw_freep) struct netplug_fw *fw = NULL;
    assert_int_equal(netplug_fw_new(&fw), 0);
    assert_true(has("table bridge yun"));
    assert_true(has("table inet yun"));
    assert_true(has("iifname vmap @ports"));
    assert_true(has("ether saddr vmap @egress"));
    /* A second instance (a restarted agent) does not add anything. */
    _cleanup_(netplug_fw_freep) struct netplug_fw *fw2 = NULL;
    assert_int_equal(netplug_fw_new(&fw2), 0);
    assert_int_equal(count("iifname vmap @ports"), 1);
    /* forward and input each accept what is established. */
    assert_int_equal(count("ct state established,related accept"), 2);
    assert_true(has("chain input"));
    FILE *f = fopen("/proc/sys/net/bridge/bridge-nf-call-iptables", "r");
    assert_non_null(f);
    assert_int_equal(fgetc(f), '1');
    fclose(f);
    /* An incomplete table is made again. */
    assert_int_equal(system("nft delete chain inet yun forward"), 0);
    fw2 = netplug_fw_free(fw2);
    assert_int_equal(netplug_fw_new(&fw2), 0);
    assert_int_equal(count("ether saddr vmap @egress"), 2);
}

static void
test_port_apply_remove(void **state)
{
    _cleanup_(netplug_fw_freep) struct netplug_fw *fw = NULL;
    assert_int_equal(netplug_fw_new(&fw), 0);
    struct netplug_fw_port a = port_a(), b = port_b();
    assert_int_equal(netplug_fw_port_apply(fw, &a), 0);
    assert_int_equal(netplug_fw_port_apply(fw, &b), 0);
    assert_true(has("\"ytapa\" : jump s-ytapa"));
    assert_true(has("oifname @taps ether type != { ip, arp } drop"));
    _cleanup_free_ char *taps = run("nft list set bridge yun taps | tr -d ' \\t\\n'");
    assert_non_null(strstr(taps, "\"ytapa\""));
    assert_non_null(strstr(taps, "\"ytapb\""));
    assert_true(has("52:54:00:aa:00:01 : jump e-ytapa"));
    assert_true(has("52:54:00:aa:00:01 : jump i-ytapa"));
    assert_true(has("ether saddr != 52:54:00:aa:00:01 drop"));
    assert_true(has("ip saddr 10.0.0.5 return"));
    assert_true(has("arp saddr ip 10.0.0.5 return"));
    assert_true(has("ip saddr 10.0.0.7 return"));
    assert_false(has("ip saddr 10.0.0.8 return"));
    assert_true(has("tcp dport 22 accept"));
    assert_true(has("ip saddr 10.1.0.0/16 meta l4proto icmp accept"));
    assert_true(has("ip saddr @g-0a1b2c3d-0000-4000-8000-000000000001 udp dport 53-54 accept"));
    assert_true(has("icmp type echo-request accept"));
    assert_true(has("set g-0a1b2c3d-0000-4000-8000-000000000001"));
    /* Again: same rules, not twice. */
    assert_int_equal(netplug_fw_port_apply(fw, &a), 0);
    assert_int_equal(count("tcp dport 22 accept"), 1);
    /* Replace: new rules and a new MAC; b untouched. */
    static const struct netplug_fw_rule r2[] = {
        { .ingress = true, .protocol = 6, .has_range = true, .min = 80, .max = 80 },
    };
    a.mac = "52:54:00:aa:00:09";
    a.rules = r2;
    a.n_rules = 1;
    assert_int_equal(netplug_fw_port_apply(fw, &a), 0);
    assert_false(has("tcp dport 22 accept"));
    assert_true(has("tcp dport 80 accept"));
    assert_false(has("52:54:00:aa:00:01"));
    assert_true(has("52:54:00:aa:00:09 : jump e-ytapa"));
    assert_true(has("52:54:00:aa:00:02 : jump i-ytapb"));
    /* Another port may not take a's MAC. */
    b.mac = "52:54:00:aa:00:09";
    assert_int_equal(netplug_fw_port_apply(fw, &b), -EEXIST);
    assert_true(has("52:54:00:aa:00:02 : jump i-ytapb"));
    /* Port security off: no filtering. */
    a.port_security = false;
    assert_int_equal(netplug_fw_port_apply(fw, &a), 0);
    assert_false(has("ytapa"));
    assert_true(has("ytapb"));
    assert_int_equal(netplug_fw_port_remove(fw, "ytapa"), 0);
    assert_int_equal(netplug_fw_port_remove(fw, "ytapb"), 0);
    assert_int_equal(netplug_fw_port_remove(fw, "ytapb"), 0);
    assert_false(has("ytapb"));
    assert_false(has("ytapa"));
    /* A port with no address yet: no IPv4 out but DHCP. */
    b = port_b();
    b.n_ips = 0;
    assert_int_equal(netplug_fw_port_apply(fw, &b), 0);
    assert_false(has("ip saddr 10.0.0.6 return"));
    assert_true(has("ip saddr 0.0.0.0 udp sport 68 udp dport 67 return"));
}

static void
test_bad_input(void **state)
{
    _cleanup_(netplug_fw_freep) struct netplug_fw *fw = NULL;
    assert_int_equal(netplug_fw_new(&fw), 0);
    _cleanup_free_ char *before = ruleset();
    struct netplug_fw_port p;
    const char *bad_taps[] = { "", "ytap a", "ytap;x", "1tap", "ytap\"", "ytapxxxxxxxxxxxx",
                               "ytap}" };
    for (size_t i = 0; i < ELEMENTSOF(bad_taps); i++) {
        p = port_a();
        p.tap = bad_taps[i];
        assert_int_equal(netplug_fw_port_apply(fw, &p), -EINVAL);
        assert_int_equal(netplug_fw_port_remove(fw, bad_taps[i]), -EINVAL);
    }
    const char *bad_macs[] = { "", "52:54:00:aa:00", "52:54:00:aa:00:0g", "52-54-00-aa-00-01",
                               "52:54:00:aa:00:01 accept" };
    for (size_t i = 0; i < ELEMENTSOF(bad_macs); i++) {
        p = port_a();
        p.mac = bad_macs[i];
        assert_int_equal(netplug_fw_port_apply(fw, &p), -EINVAL);
    }
    const char *const bad_ips[] = { "10.0.0.1; flush ruleset" };
    p = port_a();
    p.ips = bad_ips;
    assert_int_equal(netplug_fw_port_apply(fw, &p), -EINVAL);
    struct netplug_fw_rule bad_rules[] = {
        { .protocol = 6, .has_range = true, .min = 0, .max = 10 },
        { .protocol = 6, .has_range = true, .min = 20, .max = 10 },
        { .protocol = 17, .has_range = true, .min = 1, .max = 65536 },
        { .protocol = 1, .has_range = true, .min = 256, .max = 0 },
        { .protocol = 256 },
        { .protocol = -2 },
        { .protocol = -1, .has_range = true, .min = 1, .max = 2 },
        { .protocol = 6, .remote_cidr = "10.0.0.0/33" },
        { .protocol = 6, .remote_cidr = "10.0.0.0" },
        { .protocol = 6, .remote_cidr = "10.0.0.0/8 accept" },
        { .protocol = 6, .remote_group = "g; flush ruleset" },
        { .protocol = 6, .remote_group = "abc", .remote_cidr = "10.0.0.0/8" },
    };
    for (size_t i = 0; i < ELEMENTSOF(bad_rules); i++) {
        p = port_a();
        p.rules = &bad_rules[i];
        p.n_rules = 1;
        assert_int_equal(netplug_fw_port_apply(fw, &p), -EINVAL);
    }
    const char *const gips[] = { "10.0.0.1", "10.0.0.256" };
    assert_int_equal(netplug_fw_group_set(fw, "abc", gips, 2), -EINVAL);
    assert_int_equal(netplug_fw_group_set(fw, "ab c", gips, 1), -EINVAL);
    assert_int_equal(netplug_fw_group_remove(fw, "a}b"), -EINVAL);
    _cleanup_free_ char *after = ruleset();
    assert_string_equal(before, after);
}

static void
test_groups(void **state)
{
    _cleanup_(netplug_fw_freep) struct netplug_fw *fw = NULL;
    assert_int_equal(netplug_fw_new(&fw), 0);
    const char *g = "0a1b2c3d-0000-4000-8000-000000000001";
    const char *const ips[] = { "10.0.0.1", "10.0.0.2" };
    assert_int_equal(netplug_fw_group_set(fw, g, ips, 2), 0);
    assert_true(has("elements = { 10.0.0.1, 10.0.0.2 }"));
    assert_int_equal(netplug_fw_group_set(fw, g, ips + 1, 1), 0);
    assert_true(has("elements = { 10.0.0.2 }"));
    struct netplug_fw_port a = port_a();
    assert_int_equal(netplug_fw_port_apply(fw, &a), 0);
    /* Still the same set, still its elements. */
    assert_true(has("elements = { 10.0.0.2 }"));
    assert_int_equal(netplug_fw_group_remove(fw, g), -EBUSY);
    assert_true(strlen(netplug_fw_last_error(fw)) > 0);
    assert_int_equal(netplug_fw_port_remove(fw, "ytapa"), 0);
    assert_int_equal(netplug_fw_group_remove(fw, g), 0);
    assert_int_equal(netplug_fw_group_remove(fw, g), 0);
    assert_false(has("g-0a1b"));
    assert_int_equal(netplug_fw_group_set(fw, g, NULL, 0), 0);
    assert_true(has("set g-0a1b"));
}

/* Ports applied by a process that was then killed are listed by the
 * next one, which can carry on with them. */
static void
test_list_after_kill(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct netplug_fw *fw = NULL;
        struct netplug_fw_port a = port_a(), b = port_b();
        if (netplug_fw_new(&fw) < 0 || netplug_fw_port_apply(fw, &a) < 0 ||
            netplug_fw_port_apply(fw, &b) < 0)
            _exit(1);
        raise(SIGKILL);
        _exit(2);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    _cleanup_(netplug_fw_freep) struct netplug_fw *fw = NULL;
    assert_int_equal(netplug_fw_new(&fw), 0);
    _cleanup_(netplug_names_freep) char **taps = NULL;
    size_t n = 0;
    assert_int_equal(netplug_fw_port_list(fw, &taps, &n), 0);
    assert_int_equal(n, 2);
    assert_true((strcmp(taps[0], "ytapa") == 0 && strcmp(taps[1], "ytapb") == 0) ||
                (strcmp(taps[0], "ytapb") == 0 && strcmp(taps[1], "ytapa") == 0));
    /* The new process knows a's MAC: moving it needs the old one. */
    struct netplug_fw_port a = port_a();
    a.mac = "52:54:00:aa:00:0a";
    assert_int_equal(netplug_fw_port_apply(fw, &a), 0);
    assert_false(has("52:54:00:aa:00:01"));
    assert_int_equal(netplug_fw_port_remove(fw, "ytapb"), 0);
    assert_false(has("ytapb"));
    taps = netplug_names_free(taps);
    assert_int_equal(netplug_fw_port_list(fw, &taps, &n), 0);
    assert_int_equal(n, 1);
    /* Changed behind its back (another process): it reads again. */
    assert_int_equal(system("nft delete element inet yun egress '{ 52:54:00:aa:00:0a }'"), 0);
    assert_int_equal(netplug_fw_port_remove(fw, "ytapa"), 0);
    assert_false(has("ytapa"));
}

/* Tables changed behind its back (one port's jump deleted, then 'nft
 * flush ruleset'): netplug_fw_refresh() makes them again and shows which
 * ports are gone, so that the caller applies those again. */
static void
test_refresh_after_flush(void **state)
{
    _cleanup_(netplug_fw_freep) struct netplug_fw *fw = NULL;
    assert_int_equal(netplug_fw_new(&fw), 0);
    struct netplug_fw_port a = port_a(), b = port_b();
    assert_int_equal(netplug_fw_port_apply(fw, &a), 0);
    assert_int_equal(netplug_fw_port_apply(fw, &b), 0);
    assert_true(netplug_fw_port_present(fw, "ytapa"));
    assert_true(netplug_fw_port_present(fw, "ytapb"));
    assert_false(netplug_fw_port_present(fw, "ytapc"));
    assert_int_equal(netplug_fw_refresh(fw), 0);
    assert_true(netplug_fw_port_present(fw, "ytapa"));
    assert_true(netplug_fw_port_present(fw, "ytapb"));

    assert_int_equal(system("nft delete element bridge yun ports '{ \"ytapb\" }'"), 0);
    assert_int_equal(netplug_fw_refresh(fw), 0);
    assert_false(netplug_fw_port_present(fw, "ytapb"));
    assert_true(netplug_fw_port_present(fw, "ytapa"));
    assert_int_equal(netplug_fw_port_apply(fw, &b), 0);
    assert_true(netplug_fw_port_present(fw, "ytapb"));
    assert_true(has("\"ytapb\" : jump s-ytapb"));

    assert_int_equal(system("nft flush ruleset"), 0);
    assert_int_equal(netplug_fw_refresh(fw), 0);
    assert_true(has("iifname vmap @ports"));
    assert_true(has("ether saddr vmap @egress"));
    assert_false(netplug_fw_port_present(fw, "ytapa"));
    assert_false(netplug_fw_port_present(fw, "ytapb"));
    assert_int_equal(netplug_fw_port_apply(fw, &a), 0);
    assert_true(netplug_fw_port_present(fw, "ytapa"));
    assert_true(has("ether saddr != 52:54:00:aa:00:01 drop"));
    assert_true(has("52:54:00:aa:00:01 : jump i-ytapa"));
}

int
main(void)
{
    if (geteuid() != 0 || unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "skipped: needs root for a network namespace\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_tables, teardown),
        cmocka_unit_test_teardown(test_port_apply_remove, teardown),
        cmocka_unit_test_teardown(test_bad_input, teardown),
        cmocka_unit_test_teardown(test_groups, teardown),
        cmocka_unit_test_teardown(test_list_after_kill, teardown),
        cmocka_unit_test_teardown(test_refresh_after_flush, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
