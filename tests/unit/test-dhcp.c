/* SPDX-License-Identifier: Apache-2.0
 * test-dhcp.c: unit tests of agent/dhcp.c's rendering (dhcp-priv.h): the
 * dnsmasq arguments, hosts file and options file of one network, which
 * ports and subnets are served, and what unusable data is left out. The
 * processes and namespaces are tested by
 * tests/integration/network/test-dhcp-metadata.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "cleanup.h"
#include "dhcp-priv.h"
#include "dhcp.h"

#define NET_ID "0a1b2c3d-0000-4000-8000-000000000001"

static Yun__FixedIp fips[4] = { YUN__FIXED_IP__INIT, YUN__FIXED_IP__INIT, YUN__FIXED_IP__INIT,
                                YUN__FIXED_IP__INIT };
static Yun__FixedIp *fipp[4][1];
static Yun__PortRecord prs[4] = { YUN__PORT_RECORD__INIT, YUN__PORT_RECORD__INIT,
                                  YUN__PORT_RECORD__INIT, YUN__PORT_RECORD__INIT };
static Yun__PortRecord *ports[4];
static Yun__SubnetRecord sub = YUN__SUBNET_RECORD__INIT;
static Yun__SubnetRecord *subs[1] = { &sub };
static Yun__NetworkRecord net = YUN__NETWORK_RECORD__INIT;
static Yun__NetworkRecord *nets[1] = { &net };
static Yun__PortMetadata md = YUN__PORT_METADATA__INIT;
static Yun__PortMetadata *mds[1] = { &md };
static char *dns[] = { "192.0.2.53", "not-an-ip", "192.0.2.54", "192.0.2.55" };
static Yun__HostNetworkState st = YUN__HOST_NETWORK_STATE__INIT;

static void
port_set(int i, const char *id, const char *mac, const char *ip, const char *owner,
         const char *host)
{
    fips[i].subnet_id = "sub1";
    fips[i].ip_address = (char *)ip;
    fipp[i][0] = &fips[i];
    prs[i].id = (char *)id;
    prs[i].network_id = NET_ID;
    prs[i].mac_address = (char *)mac;
    prs[i].fixed_ips = fipp[i];
    prs[i].n_fixed_ips = 1;
    prs[i].device_owner = (char *)owner;
    prs[i].host_id = (char *)host;
    ports[i] = &prs[i];
}

static int
setup(void **state)
{
    net.id = NET_ID;
    net.mtu = 1450;
    sub.id = "sub1";
    sub.network_id = NET_ID;
    sub.ip_version = 4;
    sub.cidr = "10.20.0.0/24";
    sub.gateway_ip = "10.20.0.1";
    sub.dns_nameservers = dns;
    sub.n_dns_nameservers = ELEMENTSOF(dns);
    sub.enable_dhcp = true;
    port_set(0, "p-dhcp", "fa:16:3e:00:00:02", "10.20.0.2", "network:dhcp", "host1");
    port_set(1, "p1", "fa:16:3e:00:00:11", "10.20.0.11", "compute:nova", "host1");
    port_set(2, "p2", "fa:16:3e:00:00:12", "10.20.0.12", "compute:nova", "host2");
    port_set(3, "p3", "FA:16:3E:00:00:13,x", "10.20.0.13", "compute:nova", "host1");
    md.port_id = "p1";
    md.hostname = "web-1";
    st.networks = nets;
    st.n_networks = 1;
    st.subnets = subs;
    st.n_subnets = 1;
    st.ports = ports;
    st.n_ports = 4;
    st.metadata = mds;
    st.n_metadata = 1;
    return 0;
}

static bool
has_arg(const struct dhcp_config *c, const char *arg)
{
    for (size_t i = 0; i < c->argc; i++)
        if (strcmp(c->argv[i], arg) == 0)
            return true;
    return false;
}

static void
test_render(void **state)
{
    struct dhcp_config c;
    assert_int_equal(dhcp_render(&st, "host1", &net, "/d", "/usr/sbin/dnsmasq", &c), 0);
    assert_string_equal(c.mac, "fa:16:3e:00:00:02");
    assert_int_equal(c.mtu, 1450);
    assert_int_equal(c.n_cidrs, 2);
    assert_string_equal(c.cidrs[0], "10.20.0.2/24");
    assert_string_equal(c.cidrs[1], "169.254.169.254/32");
    /* Only this host's instance ports, and not the one with a bad MAC. */
    assert_string_equal(c.hosts, "fa:16:3e:00:00:11,10.20.0.11,web-1\n");
    assert_string_equal(c.opts,
                        "tag:s0,option:router,10.20.0.1\n"
                        "tag:s0,option:dns-server,10.20.0.2,192.0.2.53,192.0.2.54\n"
                        "tag:s0,option:mtu,1450\n"
                        "tag:s0,option:classless-static-route,169.254.169.254/32,10.20.0.2,"
                        "0.0.0.0/0,10.20.0.1\n");
    assert_string_equal(c.argv[0], "/usr/sbin/dnsmasq");
    assert_null(c.argv[c.argc]);
    assert_true(has_arg(&c, "--dhcp-range=set:s0,10.20.0.0,static,255.255.255.0,86400s"));
    assert_true(has_arg(&c, "--dhcp-hostsfile=/d/hosts"));
    assert_true(has_arg(&c, "--dhcp-optsfile=/d/opts"));
    assert_true(has_arg(&c, "--pid-file=/d/pid"));
    assert_true(has_arg(&c, "--interface=dhcp0"));
    assert_true(has_arg(&c, "--except-interface=lo"));
    assert_true(has_arg(&c, "--bind-interfaces"));
    assert_true(has_arg(&c, "--conf-file=/dev/null"));
    dhcp_config_done(&c);
}

static void
test_no_gateway_bad_hostname(void **state)
{
    sub.gateway_ip = "";
    sub.n_dns_nameservers = 0;
    net.mtu = 0;
    md.hostname = "bad,name\nfa:16:3e:00:00:99,10.20.0.99";
    struct dhcp_config c;
    assert_int_equal(dhcp_render(&st, "host1", &net, "/d", "/usr/sbin/dnsmasq", &c), 0);
    /* A hostname that could break the file is replaced, never written. */
    assert_string_equal(c.hosts, "fa:16:3e:00:00:11,10.20.0.11,host-10-20-0-11\n");
    assert_string_equal(c.opts,
                        "tag:s0,option:dns-server,10.20.0.2\n"
                        "tag:s0,option:classless-static-route,169.254.169.254/32,10.20.0.2\n");
    assert_int_equal(c.mtu, 0);
    dhcp_config_done(&c);
    /* Labels dnsmasq would read as a lease time or a keyword, too. */
    static const char *const keywords[] = { "9lives", "ignore", "infinite", "-web", "web-" };
    for (size_t i = 0; i < ELEMENTSOF(keywords); i++) {
        md.hostname = (char *)keywords[i];
        assert_int_equal(dhcp_render(&st, "host1", &net, "/d", "/usr/sbin/dnsmasq", &c), 0);
        assert_string_equal(c.hosts, "fa:16:3e:00:00:11,10.20.0.11,host-10-20-0-11\n");
        dhcp_config_done(&c);
    }
}

static void
test_not_served(void **state)
{
    struct dhcp_config c;
    /* dhcp_network_is_served() (the metadata service's rule) says the
     * same as dhcp_render() each time. */
    assert_true(dhcp_network_is_served(&st, "host1", &net));
    /* No DHCP port on this host. */
    assert_int_equal(dhcp_render(&st, "host2", &net, "/d", "/x", &c), -ENOENT);
    assert_false(dhcp_network_is_served(&st, "host2", &net));
    /* DHCP disabled on the only subnet. */
    sub.enable_dhcp = false;
    assert_int_equal(dhcp_render(&st, "host1", &net, "/d", "/x", &c), -ENOENT);
    assert_false(dhcp_network_is_served(&st, "host1", &net));
    sub.enable_dhcp = true;
    /* The DHCP port has no address on the subnet. */
    fips[0].ip_address = "10.99.0.2";
    assert_int_equal(dhcp_render(&st, "host1", &net, "/d", "/x", &c), -ENOENT);
    assert_false(dhcp_network_is_served(&st, "host1", &net));
    fips[0].ip_address = "10.20.0.2";
    /* A subnet CIDR with host bits is not served. */
    sub.cidr = "10.20.0.1/24";
    assert_int_equal(dhcp_render(&st, "host1", &net, "/d", "/x", &c), -ENOENT);
    assert_false(dhcp_network_is_served(&st, "host1", &net));
    sub.cidr = "10.20.0.0/24";
    /* A DHCP port with a bad MAC is an error, not a guess. */
    prs[0].mac_address = "fa:16:3e:00:00";
    assert_int_equal(dhcp_render(&st, "host1", &net, "/d", "/x", &c), -EINVAL);
    assert_false(dhcp_network_is_served(&st, "host1", &net));
    prs[0].mac_address = "fa:16:3e:00:00:02";
}

static void
test_names(void **state)
{
    char buf[16], ns[80];
    assert_string_equal(dhcp_default_bridge_name(NET_ID, buf), "ybr-0a1b2c3d000");
    /* netplug's own scheme: no name at all for an id it refuses. */
    assert_string_equal(dhcp_default_bridge_name("a.b", buf), "");
    assert_string_equal(dhcp_netns_name(NET_ID, ns, sizeof ns), "yun-dhcp-" NET_ID);
    assert_null(dhcp_netns_name("../etc", ns, sizeof ns));
    assert_null(dhcp_netns_name("a/b", ns, sizeof ns));
    assert_null(dhcp_netns_name("", ns, sizeof ns));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_render, setup),
        cmocka_unit_test_setup(test_no_gateway_bad_hostname, setup),
        cmocka_unit_test_setup(test_not_served, setup),
        cmocka_unit_test_setup(test_names, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
