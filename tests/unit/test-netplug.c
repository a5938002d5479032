/* SPDX-License-Identifier: Apache-2.0
 * test-netplug.c: unit tests of netplug's links against the real kernel,
 * in a network namespace of the test's own (unshare(CLONE_NEWNET) first):
 * bridges, taps, VXLAN and VLAN devices made, fixed and removed
 * idempotently, VXLAN flood lists, and links left by a killed process.
 * Needs root (or CAP_NET_ADMIN in a user namespace): skipped with 77.
 * Stand-in links are veth pairs: CI kernels may lack the dummy driver. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "netplug.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct netplug *, netplug_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, netplug_names_free);

/* The output of shell command 'cmd' (test-side inspection only). */
static char *
run(const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char *out = calloc(1, 65536);
    assert_non_null(out);
    size_t n = fread(out, 1, 65535, f);
    out[n] = '\0';
    pclose(f);
    return out;
}

static bool
link_has(const char *dev, const char *text)
{
    _cleanup_free_ char *out = run("ip -d link show dev %s 2>&1", dev);
    return strstr(out, text) != NULL;
}

static void
assert_master(struct netplug *np, const char *dev, const char *master)
{
    char m[NETPLUG_IFNAME_SIZE];
    assert_int_equal(netplug_link_master(np, dev, m), 0);
    assert_string_equal(m, master);
}

static int
setup(void **state)
{
    struct netplug *np = NULL;
    assert_int_equal(netplug_new(&np), 0);
    *state = np;
    return 0;
}

static int
teardown(void **state)
{
    netplug_free(*state);
    /* Each test starts from an empty namespace. */
    _cleanup_free_ char *out =
        run("for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do "
            "[ $l = lo ] || ip link del $l 2>/dev/null; done");
    return 0;
}

static void
test_ifname(void **state)
{
    char n[NETPLUG_IFNAME_SIZE];
    assert_int_equal(netplug_ifname(n, "ybr-", "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab"), 15);
    assert_string_equal(n, "ybr-6f1c2d3eaaa");
    assert_int_equal(netplug_ifname(n, "ytap", "ab-cd"), 8);
    assert_string_equal(n, "ytapabcd");
    assert_int_equal(netplug_ifname(n, "xbr-", "abc"), -EINVAL);
    assert_int_equal(netplug_ifname(n, "ybr-", "a b"), -EINVAL);
    assert_int_equal(netplug_ifname(n, "ybr-", "---"), -EINVAL);
    assert_int_equal(netplug_ifname(n, "ybr-", "a/b"), -EINVAL);
    assert_int_equal(netplug_ifname(n, "yverylongprefix", "a"), -EINVAL);
}

static void
test_bridge(void **state)
{
    struct netplug *np = *state;
    assert_int_equal(netplug_bridge_ensure(np, "ybr-a", 1450), 0);
    assert_true(netplug_link_index(np, "ybr-a") > 0);
    assert_true(link_has("ybr-a", "mtu 1450"));
    assert_true(link_has("ybr-a", "state UP") || link_has("ybr-a", ",UP"));
    assert_true(link_has("ybr-a", "forward_delay 0 "));
    assert_true(link_has("ybr-a", "stp_state 0 "));
    assert_true(link_has("ybr-a", "addrgenmode none"));
    int idx = netplug_link_index(np, "ybr-a");
    /* Again: no-op, same link. */
    assert_int_equal(netplug_bridge_ensure(np, "ybr-a", 1450), 0);
    assert_int_equal(netplug_link_index(np, "ybr-a"), idx);
    /* Wrong MTU, down: fixed in place. */
    _cleanup_free_ char *o = run("ip link set ybr-a down mtu 1300");
    assert_int_equal(netplug_bridge_ensure(np, "ybr-a", 1400), 0);
    assert_int_equal(netplug_link_index(np, "ybr-a"), idx);
    assert_true(link_has("ybr-a", "mtu 1400"));
    assert_true(link_has("ybr-a", ",UP"));
    /* A link of that name that is not a bridge: made again. */
    _cleanup_free_ char *o2 = run("ip link add ybr-b type veth peer name ybr-bp");
    assert_int_equal(netplug_bridge_ensure(np, "ybr-b", 0), 0);
    assert_true(link_has("ybr-b", "bridge forward_delay"));
    assert_int_equal(netplug_link_remove(np, "ybr-a"), 0);
    assert_int_equal(netplug_link_index(np, "ybr-a"), -ENODEV);
    assert_int_equal(netplug_link_remove(np, "ybr-a"), 0);
    assert_int_equal(netplug_link_remove(np, "bad/name"), -EINVAL);
    assert_int_equal(netplug_bridge_ensure(np, "", 0), -EINVAL);
}

static void
test_tap(void **state)
{
    struct netplug *np = *state;
    assert_int_equal(netplug_bridge_ensure(np, "ybr-a", 0), 0);
    assert_int_equal(netplug_bridge_ensure(np, "ybr-b", 0), 0);
    assert_int_equal(netplug_tap_ensure(np, "ytap1", "ybr-a", "52:54:00:12:34:56", 1450), 0);
    assert_true(link_has("ytap1", "tun type tap"));
    assert_true(link_has("ytap1", "link/ether fe:54:00:12:34:56"));
    assert_true(link_has("ytap1", "mtu 1450"));
    assert_true(link_has("ytap1", ",UP"));
    assert_master(np, "ytap1", "ybr-a");
    int idx = netplug_link_index(np, "ytap1");
    assert_int_equal(netplug_tap_ensure(np, "ytap1", "ybr-a", "52:54:00:12:34:56", 1450), 0);
    assert_int_equal(netplug_link_index(np, "ytap1"), idx);
    /* Wrong master, MTU and MAC: fixed in place. */
    assert_int_equal(netplug_tap_ensure(np, "ytap1", "ybr-b", "52:54:00:12:34:57", 1500), 0);
    assert_int_equal(netplug_link_index(np, "ytap1"), idx);
    assert_master(np, "ytap1", "ybr-b");
    assert_true(link_has("ytap1", "mtu 1500"));
    assert_true(link_has("ytap1", "link/ether fe:54:00:12:34:57"));
    /* Held open as QEMU holds it: still fixed in place. */
    _cleanup_close_ int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
    strcpy(ifr.ifr_name, "ytap1");
    assert_int_equal(ioctl(fd, TUNSETIFF, &ifr), 0);
    assert_int_equal(netplug_tap_ensure(np, "ytap1", "ybr-a", "52:54:00:12:34:57", 1400), 0);
    assert_int_equal(netplug_link_index(np, "ytap1"), idx);
    assert_master(np, "ytap1", "ybr-a");
    assert_true(link_has("ytap1", "mtu 1400"));
    /* Bad arguments change nothing. */
    assert_int_equal(netplug_tap_ensure(np, "ytap2", "ybr-a", "52:54:00:12:34", 0), -EINVAL);
    assert_int_equal(netplug_tap_ensure(np, "ytap2", "ybr-a", "52:54:00:12:34:5g", 0), -EINVAL);
    assert_int_equal(netplug_tap_ensure(np, "ytap2", "ybr-nope", "52:54:00:12:34:56", 0), -ENODEV);
    assert_int_equal(netplug_tap_ensure(np, "ytap2", "ytap1", "52:54:00:12:34:56", 0), -EINVAL);
    assert_int_equal(netplug_link_index(np, "ytap2"), -ENODEV);
    /* A non-tap of that name: replaced by a tap. */
    _cleanup_free_ char *o = run("ip link add ytap3 type veth peer name ytap3p");
    assert_int_equal(netplug_tap_ensure(np, "ytap3", "ybr-a", "52:54:00:00:00:03", 0), 0);
    assert_true(link_has("ytap3", "tun type tap"));
    assert_int_equal(netplug_link_remove(np, "ytap1"), 0);
    assert_int_equal(netplug_link_remove(np, "ytap1"), 0);
    assert_int_equal(netplug_link_index(np, "ytap1"), -ENODEV);
}

static size_t
count_flood(const char *dev, const char *dst)
{
    _cleanup_free_ char *out =
        run("bridge fdb show dev %s | grep '^00:00:00:00:00:00 dst %s ' | wc -l", dev, dst);
    return strtoul(out, NULL, 10);
}

static void
test_vxlan(void **state)
{
    struct netplug *np = *state;
    _cleanup_free_ char *o = run("ip link add yund type veth peer name yundp && ip link set yund up && "
                                 "ip addr add 192.0.2.1/24 dev yund");
    assert_int_equal(netplug_bridge_ensure(np, "ybr-a", 1450), 0);
    assert_int_equal(netplug_bridge_ensure(np, "ybr-b", 1450), 0);
    assert_int_equal(netplug_vxlan_ensure(np, "yvx-a", 100, "192.0.2.1", "yund", 0, "ybr-a", 1450), 0);
    assert_true(link_has("yvx-a", "vxlan id 100 local 192.0.2.1 dev yund"));
    assert_true(link_has("yvx-a", "dstport 4789"));
    assert_true(link_has("yvx-a", "mtu 1450"));
    assert_true(link_has("yvx-a", ",UP"));
    assert_false(link_has("yvx-a", "nolearning"));
    assert_master(np, "yvx-a", "ybr-a");
    int idx = netplug_link_index(np, "yvx-a");
    assert_int_equal(netplug_vxlan_ensure(np, "yvx-a", 100, "192.0.2.1", "yund", 4789, "ybr-a", 1450), 0);
    assert_int_equal(netplug_link_index(np, "yvx-a"), idx);
    /* Wrong master and MTU: fixed in place. */
    assert_int_equal(netplug_vxlan_ensure(np, "yvx-a", 100, "192.0.2.1", "yund", 0, "ybr-b", 1400), 0);
    assert_int_equal(netplug_link_index(np, "yvx-a"), idx);
    assert_master(np, "yvx-a", "ybr-b");
    assert_true(link_has("yvx-a", "mtu 1400"));
    /* Wrong VNI: made again. */
    assert_int_equal(netplug_vxlan_ensure(np, "yvx-a", 200, "192.0.2.1", NULL, 0, "ybr-a", 0), 0);
    assert_true(link_has("yvx-a", "vxlan id 200 local 192.0.2.1 "));
    assert_false(link_has("yvx-a", "dev yund"));
    assert_master(np, "yvx-a", "ybr-a");
    /* Wrong port: made again. */
    assert_int_equal(netplug_vxlan_ensure(np, "yvx-a", 200, "192.0.2.1", NULL, 8472, "ybr-a", 0), 0);
    assert_true(link_has("yvx-a", "dstport 8472"));
    assert_int_equal(netplug_vxlan_ensure(np, "yvx-a", 0, "192.0.2.1", NULL, 0, "ybr-a", 0), -EINVAL);
    assert_int_equal(netplug_vxlan_ensure(np, "yvx-a", 1 << 24, "192.0.2.1", NULL, 0, "ybr-a", 0), -EINVAL);
    assert_int_equal(netplug_vxlan_ensure(np, "yvx-a", 5, "192.0.2", NULL, 0, "ybr-a", 0), -EINVAL);
    assert_true(link_has("yvx-a", "vxlan id 200 "));

    /* Flood list kept equal to the list. */
    const char *ab[] = { "192.0.2.10", "192.0.2.11" };
    assert_int_equal(netplug_vxlan_set_remotes(np, "yvx-a", ab, 2), 0);
    assert_int_equal(count_flood("yvx-a", "192.0.2.10"), 1);
    assert_int_equal(count_flood("yvx-a", "192.0.2.11"), 1);
    assert_int_equal(netplug_vxlan_set_remotes(np, "yvx-a", ab, 2), 0);
    assert_int_equal(count_flood("yvx-a", "192.0.2.10"), 1);
    const char *bcc[] = { "192.0.2.11", "192.0.2.12", "192.0.2.12" };
    assert_int_equal(netplug_vxlan_set_remotes(np, "yvx-a", bcc, 3), 0);
    assert_int_equal(count_flood("yvx-a", "192.0.2.10"), 0);
    assert_int_equal(count_flood("yvx-a", "192.0.2.11"), 1);
    assert_int_equal(count_flood("yvx-a", "192.0.2.12"), 1);
    /* A bad address changes nothing. */
    const char *bad[] = { "192.0.2.13", "192.0.2.300" };
    assert_int_equal(netplug_vxlan_set_remotes(np, "yvx-a", bad, 2), -EINVAL);
    assert_int_equal(count_flood("yvx-a", "192.0.2.11"), 1);
    assert_int_equal(count_flood("yvx-a", "192.0.2.13"), 0);
    assert_int_equal(netplug_vxlan_set_remotes(np, "yvx-a", NULL, 0), 0);
    _cleanup_free_ char *all = run("bridge fdb show dev yvx-a | grep -c '^00:00:00:00:00:00'");
    assert_int_equal(atoi(all), 0);
    assert_int_equal(netplug_vxlan_set_remotes(np, "ybr-a", ab, 2), -EINVAL);
    assert_int_equal(netplug_vxlan_set_remotes(np, "yvx-none", ab, 2), -ENODEV);
    assert_int_equal(netplug_link_remove(np, "yvx-a"), 0);
    assert_int_equal(netplug_link_remove(np, "yvx-a"), 0);
}

static void
test_vlan_attach(void **state)
{
    struct netplug *np = *state;
    _cleanup_free_ char *o = run("ip link add yeth0 type veth peer name yeth0p && ip link add yeth1 type veth peer name yeth1p");
    assert_int_equal(netplug_bridge_ensure(np, "ybr-a", 0), 0);
    assert_int_equal(netplug_bridge_ensure(np, "ybr-b", 0), 0);
    int r = netplug_vlan_ensure(np, "yvl-a", "yeth0", 10, "ybr-a");
    if (r == -EOPNOTSUPP) {
        /* A kernel without CONFIG_VLAN_8021Q (this one's CI): flat only. */
        print_message("no 802.1Q in this kernel: VLAN part skipped\n");
        goto attach;
    }
    assert_int_equal(r, 0);
    assert_true(link_has("yvl-a", "yvl-a@yeth0"));
    assert_true(link_has("yvl-a", "vlan protocol 802.1Q id 10 "));
    assert_true(link_has("yeth0", ",UP"));
    assert_master(np, "yvl-a", "ybr-a");
    int idx = netplug_link_index(np, "yvl-a");
    assert_int_equal(netplug_vlan_ensure(np, "yvl-a", "yeth0", 10, "ybr-a"), 0);
    assert_int_equal(netplug_link_index(np, "yvl-a"), idx);
    assert_int_equal(netplug_vlan_ensure(np, "yvl-a", "yeth0", 10, "ybr-b"), 0);
    assert_int_equal(netplug_link_index(np, "yvl-a"), idx);
    assert_master(np, "yvl-a", "ybr-b");
    assert_int_equal(netplug_vlan_ensure(np, "yvl-a", "yeth0", 20, "ybr-b"), 0);
    assert_true(link_has("yvl-a", "id 20 "));
    assert_int_equal(netplug_vlan_ensure(np, "yvl-a", "yeth1", 20, "ybr-b"), 0);
    assert_true(link_has("yvl-a", "yvl-a@yeth1"));
    assert_int_equal(netplug_vlan_ensure(np, "yvl-a", "yeth1", 4095, "ybr-b"), -EINVAL);
    assert_int_equal(netplug_vlan_ensure(np, "yvl-b", "ynothere", 5, "ybr-b"), -ENODEV);

attach:
    assert_int_equal(netplug_attach(np, "yeth0", "ybr-a"), 0);
    assert_master(np, "yeth0", "ybr-a");
    assert_int_equal(netplug_attach(np, "yeth0", "ybr-a"), 0);
    assert_int_equal(netplug_attach(np, "yeth0", "ybr-b"), 0);
    assert_master(np, "yeth0", "ybr-b");
    assert_int_equal(netplug_attach(np, "yeth0", "yeth1"), -EINVAL);
    assert_master(np, "yeth1", "");
    assert_int_equal(netplug_link_master(np, "ynothere", (char[16]){ 0 }), -ENODEV);
}

/* Links left by a process killed in the middle are found by prefix. */
static void
test_list_after_kill(void **state)
{
    struct netplug *np = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct netplug *c = NULL;
        if (netplug_new(&c) < 0 || netplug_bridge_ensure(c, "ybr-k", 0) < 0 ||
            netplug_tap_ensure(c, "ytapk1", "ybr-k", "52:54:00:00:00:01", 0) < 0 ||
            netplug_tap_ensure(c, "ytapk2", "ybr-k", "52:54:00:00:00:02", 0) < 0)
            _exit(1);
        raise(SIGKILL);
        _exit(2);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    _cleanup_free_ char *o = run("ip link add notyun0 type veth peer name notyun1");

    _cleanup_(netplug_names_freep) char **names = NULL;
    size_t n = 0;
    assert_int_equal(netplug_link_list(np, NETPLUG_PREFIX_TAP, &names, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "ytapk1");
    assert_string_equal(names[1], "ytapk2");
    assert_null(names[2]);
    names = netplug_names_free(names);
    assert_int_equal(netplug_link_list(np, "y", &names, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(netplug_link_remove(np, names[i]), 0);
    names = netplug_names_free(names);
    assert_int_equal(netplug_link_list(np, "y", &names, &n), 0);
    assert_int_equal(n, 0);
}

int
main(void)
{
    if (geteuid() != 0 || unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "skipped: needs root for a network namespace\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ifname),
        cmocka_unit_test_setup_teardown(test_bridge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vxlan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vlan_attach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_after_kill, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
