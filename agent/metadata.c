/* SPDX-License-Identifier: Apache-2.0
 * metadata.c: the metadata service (see metadata.h, docs/dhcp-metadata.md).
 * One libmicrohttpd daemon per served network, in MHD's external epoll
 * mode: its epoll fd is a read watch on the agent's loop and its
 * connection timeouts a loop timer, so no thread is started. The
 * listening socket is made inside the network's DHCP namespace (dhcp.c
 * puts 169.254.169.254 there) through netplug_netns_run(). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "cleanup.h"
#include "dhcp.h"
#include "host-ports.h"
#include "log.h"
#include "loop.h"
#include "metadata.h"
#include "netns.h"
#include "util.h"

YUN_LOG_MODULE("agent.metadata");

#define METADATA_ADDRESS "169.254.169.254"
#define METADATA_PORT 80
/* The nftables table in each DHCP namespace that binds sources to MACs. */
#define METADATA_NFT_TABLE "yun_metadata"
#define METADATA_MAX_URL_LEN 256
/* Bounds a request's line and headers (MHD answers 431/414 beyond). */
#define METADATA_CONNECTION_MEMORY (16u * 1024)
#define METADATA_CONNECTION_TIMEOUT_S 10
/* The loop calls MHD at least this often while it has connections. */
#define METADATA_TICK_MS 1000

struct md_port {
    struct in_addr ip;
    char ip_text[INET_ADDRSTRLEN];
    Yun__PortMetadata *md; /* owned copy; NULL = nothing to serve */
};

struct md_net {
    struct metadata *m;
    struct md_net *next;
    char *id;
    char ns[NETPLUG_NETNS_NAME_MAX + 1];
    uint64_t ns_ino;         /* a namespace made anew needs a new listener */
    struct MHD_Daemon *daemon;
    int watch;               /* MHD's epoll fd on the loop, -1 = none */
    int timer;               /* -1 = none */
    struct md_port *ports;
    size_t n_ports;
    bool seen;
};

struct metadata {
    struct yun_loop *loop;
    struct md_net *nets;
};

/* ---- answers ---- */

struct answer {
    unsigned status;
    const char *type;
    char *body; /* malloc'd */
    size_t size;
};

static int
answer_text(struct answer *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int
answer_text(struct answer *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&a->body, fmt, ap);
    va_end(ap);
    if (n < 0) {
        a->body = NULL;
        return -ENOMEM;
    }
    a->status = MHD_HTTP_OK;
    a->type = "text/plain; charset=utf-8";
    a->size = (size_t)n;
    return 0;
}

static int
answer_user_data(struct answer *a, const Yun__PortMetadata *md)
{
    if (md->user_data.len == 0)
        return 0; /* 404 */
    a->body = malloc(md->user_data.len);
    if (!a->body)
        return -ENOMEM;
    memcpy(a->body, md->user_data.data, md->user_data.len);
    a->size = md->user_data.len;
    a->status = MHD_HTTP_OK;
    a->type = "application/octet-stream";
    return 0;
}

static int
json_add_string(json_object *o, const char *key, const char *value)
{
    json_object *s = json_object_new_string(value);
    if (!s)
        return -ENOMEM;
    if (json_object_object_add(o, key, s) < 0) {
        json_object_put(s);
        return -ENOMEM;
    }
    return 0;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

static int
answer_meta_data_json(struct answer *a, const Yun__PortMetadata *md)
{
    _cleanup_(json_object_putp) json_object *o = json_object_new_object();
    json_object *keys = json_object_new_object(), *list = json_object_new_array();
    json_object *meta = json_object_new_object();
    if (!o || !keys || !list || !meta) {
        json_object_put(keys);
        json_object_put(list);
        json_object_put(meta);
        return -ENOMEM;
    }
    /* Owned by 'o' from here. */
    int r = json_object_object_add(o, "public_keys", keys);
    r = r < 0 ? r : json_object_object_add(o, "keys", list);
    r = r < 0 ? r : json_object_object_add(o, "meta", meta);
    if (r < 0)
        return -ENOMEM;
    r = json_add_string(o, "uuid", md->instance_id);
    r = r < 0 ? r : json_add_string(o, "name", md->instance_name);
    r = r < 0 ? r : json_add_string(o, "hostname", md->hostname);
    r = r < 0 ? r : json_add_string(o, "project_id", md->project);
    r = r < 0 ? r : json_add_string(o, "availability_zone", md->availability_zone);
    if (r < 0 || json_object_object_add(o, "launch_index", json_object_new_int(0)) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < md->n_public_keys; i++) {
        const Yun__KeyMaterial *k = md->public_keys[i];
        json_object *entry = json_object_new_object();
        if (!entry || json_object_array_add(list, entry) < 0) {
            json_object_put(entry);
            return -ENOMEM;
        }
        r = json_add_string(keys, k->name, k->public_key);
        r = r < 0 ? r : json_add_string(entry, "name", k->name);
        r = r < 0 ? r : json_add_string(entry, "type", "ssh");
        r = r < 0 ? r : json_add_string(entry, "data", k->public_key);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < md->n_meta; i++) {
        r = json_add_string(meta, md->meta[i]->key, md->meta[i]->value);
        if (r < 0)
            return r;
    }
    size_t len = 0;
    const char *text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    if (!text || !(a->body = strdup(text)))
        return -ENOMEM;
    a->size = len;
    a->status = MHD_HTTP_OK;
    a->type = "application/json";
    return 0;
}

/* '/openstack...' with 'rest' after "/openstack". */
static int
route_openstack(struct answer *a, const Yun__PortMetadata *md, const char *rest)
{
    if (!*rest || strcmp(rest, "/") == 0)
        return answer_text(a, "2012-08-10\nlatest");
    const char *sub = NULL;
    if (strncmp(rest, "/latest", 7) == 0)
        sub = rest + 7;
    else if (strncmp(rest, "/2012-08-10", 11) == 0)
        sub = rest + 11;
    if (!sub)
        return 0;
    if (!*sub || strcmp(sub, "/") == 0)
        return answer_text(a, "meta_data.json\n%svendor_data.json",
                           md->user_data.len ? "user_data\n" : "");
    if (strcmp(sub, "/meta_data.json") == 0)
        return answer_meta_data_json(a, md);
    if (strcmp(sub, "/user_data") == 0)
        return answer_user_data(a, md);
    if (strcmp(sub, "/vendor_data.json") == 0) {
        int r = answer_text(a, "{}");
        a->type = "application/json";
        return r;
    }
    return 0;
}

static int
route_meta_data(struct answer *a, const Yun__PortMetadata *md, const char *ip, const char *item)
{
    if (!*item) {
        int r = answer_text(a, "ami-launch-index\nhostname\ninstance-id\nlocal-hostname\n"
                               "local-ipv4\nplacement/%s",
                            md->n_public_keys ? "\npublic-keys/" : "");
        return r;
    }
    if (strcmp(item, "ami-launch-index") == 0)
        return answer_text(a, "0");
    if (strcmp(item, "instance-id") == 0)
        return answer_text(a, "%s", md->instance_id);
    if (strcmp(item, "hostname") == 0 || strcmp(item, "local-hostname") == 0)
        return answer_text(a, "%s", md->hostname);
    if (strcmp(item, "local-ipv4") == 0)
        return answer_text(a, "%s", ip);
    if (strcmp(item, "placement") == 0 || strcmp(item, "placement/") == 0)
        return answer_text(a, "availability-zone");
    if (strcmp(item, "placement/availability-zone") == 0)
        return answer_text(a, "%s", md->availability_zone);
    if (md->n_public_keys == 0 || strncmp(item, "public-keys", 11) != 0)
        return 0;
    const char *k = item + 11;
    if (!*k || strcmp(k, "/") == 0) {
        _cleanup_free_ char *list = NULL;
        for (size_t i = 0; i < md->n_public_keys; i++)
            if (yun_text_appendf(&list, "%s%zu=%s", i ? "\n" : "", i,
                                 md->public_keys[i]->name) < 0)
                return -ENOMEM;
        return answer_text(a, "%s", list);
    }
    /* "/N", "/N/", "/N/openssh-key" with N a plain index. */
    if (*k != '/')
        return 0;
    k++;
    size_t len = strspn(k, "0123456789");
    if (len == 0 || len > 4 || (len > 1 && k[0] == '0'))
        return 0;
    size_t idx = (size_t)strtoul(k, NULL, 10);
    if (idx >= md->n_public_keys)
        return 0;
    const char *tail = k + len;
    if (!*tail || strcmp(tail, "/") == 0)
        return answer_text(a, "openssh-key");
    if (strcmp(tail, "/openssh-key") == 0)
        return answer_text(a, "%s\n", md->public_keys[idx]->public_key);
    return 0;
}

/* '/latest...' and '/2009-04-04...' with 'sub' after the version. */
static int
route_ec2(struct answer *a, const Yun__PortMetadata *md, const char *ip, const char *sub)
{
    if (!*sub || strcmp(sub, "/") == 0)
        return answer_text(a, "meta-data/%s", md->user_data.len ? "\nuser-data" : "");
    if (strcmp(sub, "/user-data") == 0)
        return answer_user_data(a, md);
    if (strcmp(sub, "/meta-data") == 0)
        return route_meta_data(a, md, ip, "");
    if (strncmp(sub, "/meta-data/", 11) == 0)
        return route_meta_data(a, md, ip, sub + 11);
    return 0;
}

/* Fills 'a' for GET 'url' from the port 'p'; a->status stays 0 for 404. */
static int
route(struct answer *a, const struct md_port *p, const char *url)
{
    const Yun__PortMetadata *md = p->md;
    if (strlen(url) > METADATA_MAX_URL_LEN)
        return 0;
    if (strcmp(url, "/") == 0)
        return answer_text(a, "2009-04-04\nlatest");
    if (strncmp(url, "/openstack", 10) == 0)
        return route_openstack(a, md, url + 10);
    if (strncmp(url, "/latest", 7) == 0)
        return route_ec2(a, md, p->ip_text, url + 7);
    if (strncmp(url, "/2009-04-04", 11) == 0)
        return route_ec2(a, md, p->ip_text, url + 11);
    return 0;
}

static enum MHD_Result
queue_static(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static const struct md_port *
port_by_addr(const struct md_net *n, const struct sockaddr *addr)
{
    if (!addr || addr->sa_family != AF_INET)
        return NULL;
    const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
    for (size_t i = 0; i < n->n_ports; i++)
        if (n->ports[i].ip.s_addr == sin->sin_addr.s_addr && n->ports[i].md)
            return &n->ports[i];
    return NULL;
}

static const struct md_port *
port_by_source(const struct md_net *n, struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    return info ? port_by_addr(n, info->client_addr) : NULL;
}

/* Only this host's instance ports may even connect: anyone else on the
 * network (another host's guest routed here) cannot take the slots. */
static enum MHD_Result
on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    return port_by_addr(cls, addr) ? MHD_YES : MHD_NO;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size,
           void **req_cls)
{
    static int started;
    struct md_net *n = cls;
    if (!*req_cls) {
        /* Headers only so far. A method other than GET/HEAD, or a body, is
         * answered at once, before any of the body is read: a guest cannot
         * keep a connection busy by streaming one. */
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
            strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
            return queue_static(c, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed\n");
        if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH) ||
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
            return queue_static(c, MHD_HTTP_CONTENT_TOO_LARGE, "No body, please\n");
        *req_cls = &started;
        return MHD_YES;
    }
    if (*upload_data_size)
        return MHD_NO; /* announced no body, sent one: drop the connection */
    /* Identity is the source address alone, never what the guest says. */
    const struct md_port *p = port_by_source(n, c);
    if (!p)
        return queue_static(c, MHD_HTTP_NOT_FOUND, "Not found\n");
    struct answer a = { 0 };
    int r = route(&a, p, url ? url : "");
    if (r < 0) {
        free(a.body);
        return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal error\n");
    }
    if (a.status == 0) {
        free(a.body);
        return queue_static(c, MHD_HTTP_NOT_FOUND, "Not found\n");
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(a.size, a.body ? a.body : (void *)"",
                                        a.body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(a.body);
        return MHD_NO;
    }
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a.type);
    enum MHD_Result ret = MHD_queue_response(c, a.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- the loop's side ---- */

static int64_t
mhd_next_ms(struct md_net *n)
{
    MHD_UNSIGNED_LONG_LONG to = 0;
    if (MHD_get_timeout(n->daemon, &to) != MHD_YES || to > METADATA_TICK_MS)
        return METADATA_TICK_MS;
    return (int64_t)to;
}

static void
on_mhd_fd(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct md_net *n = data;
    (void)MHD_run(n->daemon);
    if (n->timer >= 0)
        (void)yun_loop_update_timer(loop, n->timer, mhd_next_ms(n));
}

static int64_t
on_mhd_timer(struct yun_loop *loop, int id, void *data)
{
    struct md_net *n = data;
    (void)MHD_run(n->daemon);
    return mhd_next_ms(n);
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[256];
    (void)vsnprintf(buf, sizeof buf, fmt, ap);
    buf[strcspn(buf, "\n")] = '\0';
    log_debug("libmicrohttpd: %s", buf);
}

static int
listen_in_ns(void *data)
{
    int *ret = data;
    _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* The address may come a moment after the namespace. */
    (void)setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(METADATA_PORT) };
    (void)inet_pton(AF_INET, METADATA_ADDRESS, &sin.sin_addr);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, 64) < 0)
        return -errno;
    *ret = TAKE_FD(fd);
    return 0;
}

static void
net_stop(struct md_net *n)
{
    if (n->watch >= 0)
        (void)yun_loop_remove_fd(n->m->loop, n->watch);
    if (n->timer >= 0)
        (void)yun_loop_remove_timer(n->m->loop, n->timer);
    n->watch = n->timer = -1;
    if (n->daemon)
        MHD_stop_daemon(n->daemon); /* closes the listening socket */
    n->daemon = NULL;
}

static int
net_start(struct md_net *n)
{
    int fd = -1;
    int r = netplug_netns_run(n->ns, listen_in_ns, &fd);
    if (r < 0)
        return log_err_errno(r, "cannot listen for metadata requests net=%s ns=%s", n->id,
                             n->ns);
    n->daemon = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, on_accept, n, on_request, n,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)METADATA_MAX_CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)METADATA_MAX_CONNECTIONS_PER_IP,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METADATA_CONNECTION_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METADATA_CONNECTION_MEMORY,
        MHD_OPTION_END);
    if (!n->daemon) {
        (void)close(fd);
        return log_err_errno(-EIO, "cannot start the metadata server net=%s", n->id);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(n->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    r = info ? yun_loop_add_fd(n->m->loop, info->epoll_fd, EPOLLIN, on_mhd_fd, n, NULL)
             : -EIO;
    if (r >= 0) {
        n->watch = r;
        r = yun_loop_add_timer(n->m->loop, METADATA_TICK_MS, on_mhd_timer, n, NULL);
        if (r >= 0)
            n->timer = r;
    }
    if (r < 0) {
        net_stop(n);
        return log_err_errno(r, "cannot put the metadata server on the loop net=%s", n->id);
    }
    log_info("metadata server started net=%s ns=%s", n->id, n->ns);
    return 0;
}

static void
ports_clear(struct md_net *n)
{
    for (size_t i = 0; i < n->n_ports; i++)
        if (n->ports[i].md)
            yun__port_metadata__free_unpacked(n->ports[i].md, NULL);
    free(n->ports);
    n->ports = NULL;
    n->n_ports = 0;
}

static void
net_free(struct md_net *n)
{
    if (!n)
        return;
    net_stop(n);
    ports_clear(n);
    free(n->id);
    free(n);
}

static Yun__PortMetadata *
metadata_copy(const Yun__PortMetadata *md)
{
    size_t size = yun__port_metadata__get_packed_size(md);
    _cleanup_free_ uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return NULL;
    (void)yun__port_metadata__pack(md, buf);
    return yun__port_metadata__unpack(NULL, size, buf);
}

/* The instance ports of this host on network 'net_id': one entry per
 * IPv4 fixed IP, each with a copy of the port's metadata. */
static int
ports_build(const Yun__HostNetworkState *st, const char *host_id, const char *net_id,
            struct md_port **ret, size_t *ret_n)
{
    size_t max = 1;
    for (size_t i = 0; i < st->n_ports; i++)
        max += st->ports[i]->n_fixed_ips;
    struct md_port *ports = calloc(max, sizeof *ports);
    size_t n = 0;
    if (!ports)
        return -ENOMEM;
    for (size_t i = 0; i < st->n_ports; i++) {
        const Yun__PortRecord *p = st->ports[i];
        if (!host_ports_is_instance(p, host_id, net_id))
            continue;
        const Yun__PortMetadata *md = host_ports_metadata(st, p->id);
        if (!md)
            continue;
        for (size_t j = 0; j < p->n_fixed_ips; j++) {
            struct md_port *mp = &ports[n];
            if (inet_pton(AF_INET, p->fixed_ips[j]->ip_address, &mp->ip) != 1)
                continue;
            (void)inet_ntop(AF_INET, &mp->ip, mp->ip_text, sizeof mp->ip_text);
            if (!(mp->md = metadata_copy(md))) {
                struct md_net tmp = { .ports = ports, .n_ports = n };
                ports_clear(&tmp);
                return -ENOMEM;
            }
            n++;
        }
    }
    *ret = ports;
    *ret_n = n;
    return 0;
}

/* Binds the addresses of this host's instance ports on the network to
 * their MACs in its namespace: their neighbour entries are pinned (what
 * the namespace sends to a port's address goes to the port's MAC,
 * whatever ARP says) and a filter resets every connection to the service
 * whose (source address, source MAC) is not a port's. A port without port
 * security that answers ARP for another guest's address so gets neither
 * the replies nor a connection. */
static int
net_bind_sources(struct md_net *n, const Yun__HostNetworkState *st, const char *host_id)
{
    size_t max = 1;
    for (size_t i = 0; i < st->n_ports; i++)
        max += st->ports[i]->n_fixed_ips;
    _cleanup_free_ struct netplug_binding *b = calloc(max, sizeof *b);
    if (!b)
        return -ENOMEM;
    size_t nb = 0;
    for (size_t i = 0; i < st->n_ports; i++) {
        const Yun__PortRecord *p = st->ports[i];
        if (!host_ports_is_instance(p, host_id, n->id) ||
            !host_ports_mac_is_valid(p->mac_address))
            continue;
        for (size_t j = 0; j < p->n_fixed_ips; j++) {
            struct in_addr a;
            if (inet_pton(AF_INET, p->fixed_ips[j]->ip_address, &a) == 1)
                b[nb++] = (struct netplug_binding){ .ip = p->fixed_ips[j]->ip_address,
                                                    .mac = p->mac_address };
        }
    }
    int r = netplug_netns_pin_neighbours(n->ns, DHCP_NS_IFNAME, b, nb);
    if (r < 0)
        return log_err_errno(r, "cannot pin the ports' MACs, metadata not served net=%s ns=%s",
                             n->id, n->ns);
    r = netplug_netns_bind_sources(n->ns, METADATA_NFT_TABLE, METADATA_ADDRESS, METADATA_PORT, b,
                                   nb);
    if (r < 0)
        return log_err_errno(r, "cannot bind sources to MACs, metadata not served net=%s ns=%s",
                             n->id, n->ns);
    return 0;
}

int
metadata_apply(struct metadata *m, const Yun__HostNetworkState *st, const char *this_host_id)
{
    int first = 0;
    for (struct md_net *n = m->nets; n; n = n->next)
        n->seen = false;
    for (size_t i = 0; st && i < st->n_networks; i++) {
        const char *id = st->networks[i]->id;
        char ns[NETPLUG_NETNS_NAME_MAX + 1];
        uint64_t ino = 0;
        if (!dhcp_network_is_served(st, this_host_id, st->networks[i]) ||
            !dhcp_netns_name(id, ns, sizeof ns))
            continue;
        int r = netplug_netns_inode(ns, &ino);
        if (r < 0) {
            log_warn_errno(r, "no DHCP namespace, metadata not served net=%s ns=%s", id, ns);
            first = first < 0 ? first : r;
            continue;
        }
        struct md_net *n = m->nets;
        while (n && strcmp(n->id, id) != 0)
            n = n->next;
        if (!n) {
            n = calloc(1, sizeof *n);
            if (!n || !(n->id = strdup(id))) {
                free(n);
                return -ENOMEM;
            }
            n->m = m;
            n->watch = n->timer = -1;
            memcpy(n->ns, ns, sizeof ns);
            n->next = m->nets;
            m->nets = n;
        }
        n->seen = true;
        struct md_port *ports = NULL;
        size_t n_ports = 0;
        r = ports_build(st, this_host_id, id, &ports, &n_ports);
        if (r < 0) {
            first = first < 0 ? first : r;
            continue;
        }
        ports_clear(n);
        n->ports = ports;
        n->n_ports = n_ports;
        if (n->daemon && n->ns_ino != ino)
            net_stop(n);
        n->ns_ino = ino;
        /* Without the binding the source address alone would not do:
         * serve nothing rather than serve it to a pretender. */
        r = net_bind_sources(n, st, this_host_id);
        if (r < 0) {
            net_stop(n);
            first = first < 0 ? first : r;
            continue;
        }
        if (!n->daemon && (r = net_start(n)) < 0)
            first = first < 0 ? first : r;
    }
    for (struct md_net **p = &m->nets; *p;) {
        struct md_net *n = *p;
        if (n->seen) {
            p = &n->next;
            continue;
        }
        log_info("metadata server stopped net=%s", n->id);
        *p = n->next;
        net_free(n);
    }
    return first;
}

int
metadata_new(struct yun_loop *loop, struct metadata **ret)
{
    struct metadata *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->loop = loop;
    *ret = m;
    return 0;
}

struct metadata *
metadata_free(struct metadata *m)
{
    if (!m)
        return NULL;
    while (m->nets) {
        struct md_net *n = m->nets;
        m->nets = n->next;
        net_free(n);
    }
    free(m);
    return NULL;
}
