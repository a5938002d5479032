/* SPDX-License-Identifier: Apache-2.0
 * test-metadata.c: unit tests of agent/metadata.c through HTTP: the test
 * takes private network and mount namespaces (root only; else skipped),
 * makes a bridge, the network's namespace joined to it the way dhcp.c
 * does (dhcp0 with the DHCP port's MAC, its address and 169.254.169.254)
 * and one namespace per guest on the bridge with its own MAC and address,
 * and talks HTTP from sockets made there, driving the agent loop itself.
 * Checks that each port sees only its own data, the layouts, unknown
 * sources refused, a guest claiming another's address refused, 405, and
 * that junk leaves the server serving. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "dhcp.h"
#include "loop.h"
#include "metadata.h"
#include "netns.h"
#include "netplug.h"

#define NET_ID "7e57ab1e-0000-4000-8000-000000000001"
#define DHCP_MAC "fa:16:3e:00:00:02"
#define DEADLINE_MS 5000

static char ns_name[NETPLUG_NETNS_NAME_MAX + 1];

/* ---- the state: a DHCP port and two instance ports on this host ---- */

static Yun__FixedIp fip_dhcp = YUN__FIXED_IP__INIT, fip1 = YUN__FIXED_IP__INIT,
                    fip2 = YUN__FIXED_IP__INIT, fip3 = YUN__FIXED_IP__INIT;
static Yun__FixedIp *fips_dhcp[] = { &fip_dhcp }, *fips1[] = { &fip1 }, *fips2[] = { &fip2 },
                    *fips3[] = { &fip3 };
static Yun__PortRecord port_dhcp = YUN__PORT_RECORD__INIT, port1 = YUN__PORT_RECORD__INIT,
                       port2 = YUN__PORT_RECORD__INIT, port3 = YUN__PORT_RECORD__INIT;
static Yun__PortRecord *ports[] = { &port_dhcp, &port1, &port2, &port3 };
static Yun__SubnetRecord sub = YUN__SUBNET_RECORD__INIT;
static Yun__SubnetRecord *subs[] = { &sub };
static Yun__NetworkRecord net = YUN__NETWORK_RECORD__INIT;
static Yun__NetworkRecord *nets[] = { &net };
static Yun__KeyMaterial key1 = YUN__KEY_MATERIAL__INIT, key2 = YUN__KEY_MATERIAL__INIT;
static Yun__KeyMaterial *keys1[] = { &key1 }, *keys2[] = { &key2 };
static Yun__MetadataItem item1 = YUN__METADATA_ITEM__INIT;
static Yun__MetadataItem *items1[] = { &item1 };
static Yun__PortMetadata md1 = YUN__PORT_METADATA__INIT, md2 = YUN__PORT_METADATA__INIT,
                         md3 = YUN__PORT_METADATA__INIT;
static Yun__PortMetadata *mds[] = { &md1, &md2, &md3 };
static Yun__HostNetworkState state = YUN__HOST_NETWORK_STATE__INIT;

static void
port_init(Yun__PortRecord *p, Yun__FixedIp *fip, Yun__FixedIp **fips, const char *id,
          const char *ip, const char *mac, const char *owner, const char *host)
{
    fip->subnet_id = "sub1";
    fip->ip_address = (char *)ip;
    p->id = (char *)id;
    p->network_id = NET_ID;
    p->mac_address = (char *)mac;
    p->fixed_ips = fips;
    p->n_fixed_ips = 1;
    p->device_owner = (char *)owner;
    p->host_id = (char *)host;
}

static void
state_init(void)
{
    net.id = NET_ID;
    nets[0] = &net;
    sub.id = "sub1";
    sub.network_id = NET_ID;
    sub.ip_version = 4;
    sub.cidr = "10.0.0.0/24";
    sub.enable_dhcp = true;
    port_init(&port_dhcp, &fip_dhcp, fips_dhcp, "p-dhcp", "10.0.0.2", DHCP_MAC, "network:dhcp",
              "host1");
    port_init(&port1, &fip1, fips1, "p1", "10.0.0.5", "fa:16:3e:00:00:05", "compute:nova",
              "host1");
    port_init(&port2, &fip2, fips2, "p2", "10.0.0.6", "fa:16:3e:00:00:06", "compute:nova",
              "host1");
    /* Another host's port: its metadata must not be served here. */
    port_init(&port3, &fip3, fips3, "p3", "10.0.0.7", "fa:16:3e:00:00:07", "compute:nova",
              "host2");
    key1.name = "k1";
    key1.public_key = "ssh-ed25519 AAAAone one@test";
    key2.name = "k2";
    key2.public_key = "ssh-ed25519 AAAAtwo two@test";
    item1.key = "role";
    item1.value = "web";
    md1.port_id = "p1";
    md1.instance_id = "i-1";
    md1.hostname = "vm1";
    md1.instance_name = "vm one";
    md1.project = "proj";
    md1.availability_zone = "az1";
    md1.public_keys = keys1;
    md1.n_public_keys = 1;
    md1.meta = items1;
    md1.n_meta = 1;
    md1.user_data.data = (uint8_t *)"#cloud-config\n";
    md1.user_data.len = 14;
    md2 = md1;
    md2.port_id = "p2";
    md2.instance_id = "i-2";
    md2.hostname = "vm2";
    md2.public_keys = keys2;
    md2.meta = NULL;
    md2.n_meta = 0;
    md2.user_data.len = 0;
    md3 = md1;
    md3.port_id = "p3";
    md3.instance_id = "i-3";
    state.host_id = "host1";
    state.networks = nets;
    state.n_networks = 1;
    state.subnets = subs;
    state.n_subnets = 1;
    state.ports = ports;
    state.n_ports = ELEMENTSOF(ports);
    state.metadata = mds;
    state.n_metadata = ELEMENTSOF(mds);
}

/* ---- the wiring: a bridge, the network's namespace and the guests ---- */

#define BRIDGE "ybr-test"

struct guest {
    const char *name; /* what the tests call it */
    const char *ns;
    const char *link; /* its veth's end on the bridge */
    const char *ip;
    const char *mac;
    const char *local; /* a 169.254/16 address: the service is on-link */
};

static const struct guest guests[] = {
    { "10.0.0.5", "yun-test-g5", "ytg5", "10.0.0.5", "fa:16:3e:00:00:05", "169.254.0.5/16" },
    { "10.0.0.6", "yun-test-g6", "ytg6", "10.0.0.6", "fa:16:3e:00:00:06", "169.254.0.6/16" },
    { "10.0.0.7", "yun-test-g7", "ytg7", "10.0.0.7", "fa:16:3e:00:00:07", "169.254.0.7/16" },
    { "10.0.0.99", "yun-test-g99", "ytg99", "10.0.0.99", "fa:16:3e:00:00:99", "169.254.0.99/16" },
    /* A port without port security that claims port p1's address: it
     * answers ARP for it and sends from it, with its own MAC. */
    { "pretender", "yun-test-gp", "ytgp", "10.0.0.5", "fa:16:3e:00:00:66", "169.254.0.66/16" },
    /* The namespace itself. */
    { "169.254.169.254", NULL, NULL, "169.254.169.254", NULL, NULL },
};

static const struct guest *
guest_of(const char *name)
{
    for (size_t i = 0; i < ELEMENTSOF(guests); i++)
        if (strcmp(guests[i].name, name) == 0)
            return &guests[i];
    fail_msg("no guest '%s'", name);
    return NULL;
}

static int
wire(void)
{
    struct netplug *np = NULL;
    int r = netplug_new(&np);
    if (r >= 0)
        r = netplug_bridge_ensure(np, BRIDGE, 0);
    np = netplug_free(np);
    if (r < 0)
        return r;
    const char *dhcp_cidrs[] = { "10.0.0.2/24", "169.254.169.254/32" };
    r = netplug_veth_into_ns("ytdhcp", BRIDGE, ns_name, DHCP_NS_IFNAME, DHCP_MAC, dhcp_cidrs, 2,
                             0);
    for (size_t i = 0; r >= 0 && i < ELEMENTSOF(guests); i++) {
        const struct guest *g = &guests[i];
        if (!g->ns)
            continue;
        char cidr[32];
        (void)snprintf(cidr, sizeof cidr, "%s/24", g->ip);
        const char *cidrs[] = { cidr, g->local };
        r = netplug_netns_ensure(g->ns);
        if (r >= 0)
            r = netplug_veth_into_ns(g->link, BRIDGE, g->ns, "eth0", g->mac, cidrs, 2, 0);
    }
    return r;
}

/* ---- a small HTTP client on the loop ---- */

struct client {
    const struct guest *g;
    int fd;
};

static int
client_connect(void *data)
{
    struct client *c = data;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in src = { .sin_family = AF_INET };
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(80) };
    (void)inet_pton(AF_INET, c->g->ip, &src.sin_addr);
    (void)inet_pton(AF_INET, "169.254.169.254", &dst.sin_addr);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)) {
        int r = -errno;
        (void)close(fd);
        return r;
    }
    c->fd = fd;
    return 0;
}

/* Sends 'request' from guest 'src' and returns the whole response (until the
 * server closes), or NULL when the connection failed. */
static char *
http_raw(struct yun_loop *loop, const char *src, const char *request)
{
    struct client c = { .g = guest_of(src), .fd = -1 };
    if (netplug_netns_run(c.g->ns ? c.g->ns : ns_name, client_connect, &c) < 0)
        return NULL;
    _cleanup_close_ int fd = c.fd;
    size_t sent = 0, len = strlen(request), got = 0;
    char *buf = calloc(1, 65536);
    assert_non_null(buf);
    int64_t deadline = yun_now_ms() + DEADLINE_MS;
    while (yun_now_ms() < deadline) {
        (void)yun_loop_run_once(loop, 10);
        if (sent < len) {
            ssize_t n = send(fd, request + sent, len - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != ENOTCONN && errno != EINPROGRESS)
                break;
            continue;
        }
        ssize_t n = recv(fd, buf + got, 65535 - got, 0);
        if (n == 0)
            return buf;
        if (n > 0)
            got += (size_t)n;
        else if (errno != EAGAIN)
            break;
        if (got >= 65535)
            return buf;
    }
    if (got)
        return buf;
    free(buf);
    return NULL;
}

struct response {
    int status;
    char *body; /* points into raw */
    char *raw;
};

static struct response
http(struct yun_loop *loop, const char *src, const char *method, const char *path,
     const char *extra)
{
    char req[1024];
    (void)snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 169.254.169.254\r\n%s"
                                    "Connection: close\r\n\r\n",
                   method, path, extra ? extra : "");
    struct response r = { .raw = http_raw(loop, src, req) };
    if (!r.raw)
        return r;
    (void)sscanf(r.raw, "HTTP/1.%*d %d", &r.status);
    char *b = strstr(r.raw, "\r\n\r\n");
    r.body = b ? b + 4 : r.raw + strlen(r.raw);
    return r;
}

static char *
get_body(struct yun_loop *loop, const char *src, const char *path, int want_status)
{
    struct response r = http(loop, src, "GET", path, NULL);
    assert_non_null(r.raw);
    if (r.status != want_status)
        fail_msg("GET %s from %s: status %d, not %d: %s", path, src, r.status, want_status,
                 r.raw);
    char *body = strdup(r.body);
    free(r.raw);
    return body;
}

/* A source that is none of this host's ports is not even served: the
 * connection closes with no HTTP answer. */
static void
assert_refused(struct yun_loop *loop, const char *src, const char *path, const char *extra)
{
    struct response r = http(loop, src, "GET", path, extra);
    if (r.raw && r.status != 0)
        fail_msg("GET %s from %s was answered: %s", path, src, r.raw);
    free(r.raw);
}

/* ---- fixture ---- */

struct fixture {
    struct yun_loop *loop;
    struct metadata *md;
};

static int
setup(void **st)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_int_equal(yun_loop_new(&f->loop), 0);
    assert_int_equal(metadata_new(f->loop, &f->md), 0);
    state_init();
    assert_int_equal(metadata_apply(f->md, &state, "host1"), 0);
    *st = f;
    return 0;
}

static int
teardown(void **st)
{
    struct fixture *f = *st;
    f->md = metadata_free(f->md);
    f->loop = yun_loop_free(f->loop);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void
test_openstack_own_keys_only(void **st)
{
    struct fixture *f = *st;
    _cleanup_free_ char *b1 =
        get_body(f->loop, "10.0.0.5", "/openstack/latest/meta_data.json", 200);
    json_object *o = json_tokener_parse(b1);
    assert_non_null(o);
    json_object *v;
    assert_true(json_object_object_get_ex(o, "uuid", &v));
    assert_string_equal(json_object_get_string(v), "i-1");
    assert_true(json_object_object_get_ex(o, "hostname", &v));
    assert_string_equal(json_object_get_string(v), "vm1");
    assert_true(json_object_object_get_ex(o, "public_keys", &v));
    assert_int_equal(json_object_object_length(v), 1);
    json_object *k;
    assert_true(json_object_object_get_ex(v, "k1", &k));
    assert_string_equal(json_object_get_string(k), "ssh-ed25519 AAAAone one@test");
    assert_true(json_object_object_get_ex(o, "keys", &v));
    assert_int_equal(json_object_array_length(v), 1);
    assert_true(json_object_object_get_ex(o, "meta", &v));
    assert_true(json_object_object_get_ex(v, "role", &k));
    assert_true(json_object_object_get_ex(o, "launch_index", &v));
    assert_int_equal(json_object_get_int(v), 0);
    json_object_put(o);

    _cleanup_free_ char *b2 =
        get_body(f->loop, "10.0.0.6", "/openstack/2012-08-10/meta_data.json", 200);
    assert_non_null(strstr(b2, "AAAAtwo"));
    assert_null(strstr(b2, "AAAAone"));
    assert_null(strstr(b2, "\"role\""));
}

static void
test_user_data(void **st)
{
    struct fixture *f = *st;
    _cleanup_free_ char *b = get_body(f->loop, "10.0.0.5", "/openstack/latest/user_data", 200);
    assert_string_equal(b, "#cloud-config\n");
    _cleanup_free_ char *e = get_body(f->loop, "10.0.0.5", "/latest/user-data", 200);
    assert_string_equal(e, "#cloud-config\n");
    free(get_body(f->loop, "10.0.0.6", "/openstack/latest/user_data", 404));
    free(get_body(f->loop, "10.0.0.6", "/latest/user-data", 404));
    _cleanup_free_ char *l1 = get_body(f->loop, "10.0.0.5", "/openstack/latest/", 200);
    assert_non_null(strstr(l1, "user_data"));
    _cleanup_free_ char *l2 = get_body(f->loop, "10.0.0.6", "/openstack/latest", 200);
    assert_null(strstr(l2, "user_data"));
    assert_non_null(strstr(l2, "meta_data.json"));
}

static void
test_ec2(void **st)
{
    struct fixture *f = *st;
    struct {
        const char *src, *path, *body;
    } cases[] = {
        { "10.0.0.5", "/latest/meta-data/instance-id", "i-1" },
        { "10.0.0.6", "/2009-04-04/meta-data/instance-id", "i-2" },
        { "10.0.0.5", "/latest/meta-data/local-hostname", "vm1" },
        { "10.0.0.6", "/latest/meta-data/local-ipv4", "10.0.0.6" },
        { "10.0.0.5", "/latest/meta-data/placement/availability-zone", "az1" },
        { "10.0.0.5", "/latest/meta-data/public-keys/", "0=k1" },
        { "10.0.0.6", "/latest/meta-data/public-keys", "0=k2" },
        { "10.0.0.5", "/latest/meta-data/public-keys/0/", "openssh-key" },
        { "10.0.0.5", "/latest/meta-data/public-keys/0/openssh-key",
          "ssh-ed25519 AAAAone one@test\n" },
        { "10.0.0.6", "/latest/meta-data/public-keys/0/openssh-key",
          "ssh-ed25519 AAAAtwo two@test\n" },
        { "10.0.0.5", "/", "2009-04-04\nlatest" },
        { "10.0.0.5", "/openstack", "2012-08-10\nlatest" },
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        _cleanup_free_ char *b = get_body(f->loop, cases[i].src, cases[i].path, 200);
        if (strcmp(b, cases[i].body) != 0)
            fail_msg("GET %s from %s: '%s', not '%s'", cases[i].path, cases[i].src, b,
                     cases[i].body);
    }
    _cleanup_free_ char *list = get_body(f->loop, "10.0.0.5", "/latest/meta-data/", 200);
    assert_non_null(strstr(list, "instance-id\n"));
    assert_non_null(strstr(list, "public-keys/"));
    static const char *const missing[] = {
        "/latest/meta-data/public-keys/1/openssh-key", "/latest/meta-data/public-keys/00",
        "/latest/meta-data/public-keys/-1", "/latest/meta-data/nope", "/openstack/2099-01-01/",
        "/latest/meta-data/public-keys/99999999999999999999/openssh-key", "/etc/passwd",
        "/openstack/latest/meta_data.json/../user_data", "",
    };
    for (size_t i = 0; i < ELEMENTSOF(missing); i++) {
        struct response r = http(f->loop, "10.0.0.5", "GET", missing[i], NULL);
        assert_non_null(r.raw);
        if (r.status != 404 && r.status != 400)
            fail_msg("GET '%s': status %d", missing[i], r.status);
        free(r.raw);
    }
}

static void
test_unknown_source_404(void **st)
{
    struct fixture *f = *st;
    /* No port at all, another host's port, and the service's own address. */
    assert_refused(f->loop, "10.0.0.99", "/openstack/latest/meta_data.json", NULL);
    assert_refused(f->loop, "10.0.0.7", "/openstack/latest/meta_data.json", NULL);
    assert_refused(f->loop, "169.254.169.254", "/latest/meta-data/instance-id", NULL);
    /* What the guest claims changes nothing. */
    assert_refused(f->loop, "10.0.0.99", "/latest/meta-data/instance-id",
                   "X-Forwarded-For: 10.0.0.5\r\nX-Instance-ID: i-1\r\n");
    struct response r = http(f->loop, "10.0.0.6", "GET", "/latest/meta-data/instance-id",
                             "X-Forwarded-For: 10.0.0.5\r\n");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "i-2");
    free(r.raw);
}

/* A guest that claims another's address (a port without port security
 * can: it answers ARP for it) is told apart by its MAC: refused, and the
 * owner of the address is still served. */
static void
test_pretender_refused(void **st)
{
    struct fixture *f = *st;
    /* Its connection is reset towards the address's owner, so the
     * pretender hears nothing at all (this waits for the deadline). */
    assert_refused(f->loop, "pretender", "/openstack/latest/meta_data.json", NULL);
    _cleanup_free_ char *b = get_body(f->loop, "10.0.0.5", "/latest/meta-data/instance-id", 200);
    assert_string_equal(b, "i-1");
}

static void
test_methods(void **st)
{
    struct fixture *f = *st;
    /* A GET announcing a body is answered at once, body unread. */
    struct response b = http(f->loop, "10.0.0.5", "GET", "/latest/",
                             "Content-Length: 1000000000\r\n");
    assert_int_equal(b.status, 413);
    free(b.raw);
    /* "public-keysX0" is no key path. */
    free(get_body(f->loop, "10.0.0.5", "/latest/meta-data/public-keysX0/openssh-key", 404));
    static const char *const methods[] = { "POST", "PUT", "DELETE", "PATCH", "OPTIONS" };
    for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
        struct response r = http(f->loop, "10.0.0.5", methods[i], "/latest/", NULL);
        assert_non_null(r.raw);
        assert_int_equal(r.status, 405);
        assert_non_null(strstr(r.raw, "Allow: GET, HEAD"));
        free(r.raw);
    }
    struct response r = http(f->loop, "10.0.0.5", "HEAD", "/latest/meta-data/instance-id", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    free(r.raw);
}

static void
test_junk_keeps_serving(void **st)
{
    struct fixture *f = *st;
    free(http_raw(f->loop, "10.0.0.5", "GARBAGE\r\n\r\n"));
    free(http_raw(f->loop, "10.0.0.5", "\x01\x02\x03\xff\r\n\r\n"));
    /* A request larger than the connection's memory. */
    size_t big = 64 * 1024;
    char *req = malloc(big + 128);
    assert_non_null(req);
    int n = snprintf(req, 128, "GET /latest/ HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'a', big);
    strcpy(req + n + big, "\r\n\r\n");
    struct response r = { .raw = http_raw(f->loop, "10.0.0.5", req) };
    free(req);
    if (r.raw) {
        (void)sscanf(r.raw, "HTTP/1.%*d %d", &r.status);
        assert_true(r.status == 0 || r.status >= 400);
        free(r.raw);
    }
    /* A body on a GET is read and dropped. */
    r = http(f->loop, "10.0.0.5", "GET", "/latest/meta-data/instance-id",
             "Content-Length: 5\r\n\r\nhello");
    free(r.raw);
    _cleanup_free_ char *b = get_body(f->loop, "10.0.0.5", "/latest/meta-data/instance-id", 200);
    assert_string_equal(b, "i-1");
}

static void
test_apply_updates_and_drops(void **st)
{
    struct fixture *f = *st;
    /* New data for a port is served at once. */
    md1.instance_id = "i-1-new";
    assert_int_equal(metadata_apply(f->md, &state, "host1"), 0);
    _cleanup_free_ char *b = get_body(f->loop, "10.0.0.5", "/latest/meta-data/instance-id", 200);
    assert_string_equal(b, "i-1-new");
    /* A port gone from the state is not served any more. */
    state.n_ports = 2;
    assert_int_equal(metadata_apply(f->md, &state, "host1"), 0);
    assert_refused(f->loop, "10.0.0.6", "/latest/meta-data/instance-id", NULL);
    /* No DHCP port here any more: nothing listens. */
    state.n_ports = ELEMENTSOF(ports) - 1;
    ports[0] = &port1;
    assert_int_equal(metadata_apply(f->md, &state, "host1"), 0);
    assert_null(http_raw(f->loop, "10.0.0.5", "GET / HTTP/1.0\r\n\r\n"));
    ports[0] = &port_dhcp;
    state.n_ports = ELEMENTSOF(ports);
    /* Nor without DHCP on the subnet (there is no namespace then). */
    assert_int_equal(metadata_apply(f->md, &state, "host1"), 0);
    free(get_body(f->loop, "10.0.0.5", "/latest/meta-data/instance-id", 200));
    sub.enable_dhcp = false;
    assert_int_equal(metadata_apply(f->md, &state, "host1"), 0);
    assert_null(http_raw(f->loop, "10.0.0.5", "GET / HTTP/1.0\r\n\r\n"));
    sub.enable_dhcp = true;
}

int
main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skip: needs root (network namespaces)\n");
        return 77;
    }
    /* Private namespaces: nothing here is seen outside the test. */
    if (unshare(CLONE_NEWNS | CLONE_NEWNET) < 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("yun-test-run", "/run", "tmpfs", 0, "mode=755") < 0) {
        fprintf(stderr, "skip: cannot make private namespaces: %s\n", strerror(errno));
        return 77;
    }
    assert_non_null(dhcp_netns_name(NET_ID, ns_name, sizeof ns_name));
    int r = netplug_netns_ensure(ns_name);
    if (r >= 0)
        r = wire();
    if (r < 0) {
        fprintf(stderr, "cannot set up the namespaces: %s\n", strerror(-r));
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_openstack_own_keys_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ec2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_source_404, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pretender_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_junk_keeps_serving, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_updates_and_drops, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
