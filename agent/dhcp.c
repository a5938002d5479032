/* SPDX-License-Identifier: Apache-2.0
 * dhcp.c: one dnsmasq per served network, in the network's namespace,
 * supervised from the agent's loop (see dhcp.h, docs/dhcp-metadata.md).
 * The namespaces and veths come from netplug/netns.h; the metadata
 * service (metadata.c) listens in the same namespaces. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "dhcp-priv.h"
#include "dhcp.h"
#include "host-ports.h"
#include "log.h"
#include "loop.h"
#include "netns.h"
#include "netplug.h"
#include "util.h"

YUN_LOG_MODULE("agent.dhcp");

#define DHCP_NS_PREFIX "yun-dhcp-"
#define DHCP_BACKOFF_MIN_MS 1000
#define DHCP_BACKOFF_MAX_MS 30000
/* A dnsmasq that ran this long before dying starts over at the minimum. */
#define DHCP_STABLE_MS 30000
/* SIGTERM, then SIGKILL after this long. */
#define DHCP_KILL_AFTER_MS 5000
#define DHCP_MAX_FILE_SIZE (4u << 20)

struct dhcp_net {
    struct dhcp_set *set;
    struct dhcp_net *next;
    char *id;
    char *dir;
    char ns[NETPLUG_NETNS_NAME_MAX + 1];
    char host_ifname[16];
    struct dhcp_config cfg; /* as last applied */
    char *argv_flat;        /* cfg.argv NUL-joined, as in /proc/PID/cmdline */
    size_t argv_flat_size;

    pid_t pid;           /* 0 = not running */
    int pidfd;
    int watch;           /* the pidfd's, -1 = none */
    bool child;          /* ours to reap (not adopted) */
    int64_t started_ms;
    int64_t backoff_ms;
    int restart_timer;   /* -1 = none */
    int kill_timer;      /* -1 = none */
    bool hup_sent;       /* a SIGHUP went out: death by it is not a crash */
    bool restart_now;    /* stopped on purpose to start with new arguments */
    bool removed;        /* not wanted any more: freed once the process is gone */
    bool seen;           /* mark of dhcp_apply() */
};

struct dhcp_set {
    struct yun_loop *loop;
    char *dir;           /* <state_dir>/dhcp */
    char *dnsmasq_path;
    dhcp_bridge_name_fn bridge_name;
    struct dhcp_net *nets;
};

/* ---- rendering ---- */

static int
strv_push(char ***v, size_t *n, char *s)
{
    if (!s)
        return -ENOMEM;
    char **grown = realloc(*v, (*n + 2) * sizeof **v);
    if (!grown) {
        free(s);
        return -ENOMEM;
    }
    grown[(*n)++] = s;
    grown[*n] = NULL;
    *v = grown;
    return 0;
}

static char *
strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *
strf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

static bool
ipv4_parse(const char *s, struct in_addr *ret)
{
    return s && inet_pton(AF_INET, s, ret) == 1;
}

/* "a.b.c.d/n" with host bits zero. */
static bool
cidr_parse(const char *s, struct in_addr *ret_net, unsigned *ret_prefix)
{
    char buf[INET_ADDRSTRLEN + 4];
    const char *slash = strchr(s, '/');
    if (!slash || (size_t)(slash - s) >= INET_ADDRSTRLEN)
        return false;
    memcpy(buf, s, (size_t)(slash - s));
    buf[slash - s] = '\0';
    uint32_t prefix;
    if (!ipv4_parse(buf, ret_net) || yun_safe_atou32(slash + 1, &prefix) < 0 || prefix > 32 ||
        prefix < 1)
        return false;
    uint32_t mask = prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> prefix);
    if (ntohl(ret_net->s_addr) & ~mask)
        return false;
    *ret_prefix = prefix;
    return true;
}

static bool
in_subnet(struct in_addr ip, struct in_addr net, unsigned prefix)
{
    uint32_t mask = prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> prefix);
    return (ntohl(ip.s_addr) & mask) == ntohl(net.s_addr);
}

struct served_subnet {
    const Yun__SubnetRecord *subnet;
    struct in_addr net;
    unsigned prefix;
    char dhcp_ip[INET_ADDRSTRLEN];
};

void
dhcp_config_done(struct dhcp_config *c)
{
    for (size_t i = 0; i < c->n_cidrs; i++)
        free(c->cidrs[i]);
    for (size_t i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->hosts);
    free(c->opts);
    *c = (struct dhcp_config){ 0 };
}

static int
render_hosts(const Yun__HostNetworkState *st, const char *host_id,
             const Yun__NetworkRecord *net, const struct served_subnet *sub, size_t n_sub,
             char **hosts)
{
    int r = yun_text_appendf(hosts, "%s", "");
    for (size_t i = 0; r >= 0 && i < st->n_ports; i++) {
        const Yun__PortRecord *p = st->ports[i];
        if (!host_ports_is_instance(p, host_id, net->id))
            continue;
        if (!host_ports_mac_is_valid(p->mac_address)) {
            log_warn("port left out of DHCP: bad MAC address net=%s port=%s", net->id, p->id);
            continue;
        }
        /* dnsmasq gives one IPv4 address per client: the first usable. */
        const char *ip = NULL;
        for (size_t j = 0; !ip && j < p->n_fixed_ips; j++) {
            struct in_addr a;
            for (size_t k = 0; k < n_sub; k++)
                if (strcmp(p->fixed_ips[j]->subnet_id, sub[k].subnet->id) == 0 &&
                    ipv4_parse(p->fixed_ips[j]->ip_address, &a) &&
                    in_subnet(a, sub[k].net, sub[k].prefix))
                    ip = p->fixed_ips[j]->ip_address;
        }
        if (!ip)
            continue;
        const Yun__PortMetadata *md = host_ports_metadata(st, p->id);
        if (md && yun_hostname_is_valid(md->hostname)) {
            r = yun_text_appendf(hosts, "%s,%s,%s\n", p->mac_address, ip, md->hostname);
        } else {
            char name[INET_ADDRSTRLEN + 8];
            (void)snprintf(name, sizeof name, "host-%s", ip);
            for (char *c = name; *c; c++)
                if (*c == '.')
                    *c = '-';
            r = yun_text_appendf(hosts, "%s,%s,%s\n", p->mac_address, ip, name);
        }
    }
    return r;
}

static int
render_opts(const Yun__NetworkRecord *net, const struct served_subnet *sub, size_t n_sub,
            char **opts)
{
    int r = yun_text_appendf(opts, "%s", "");
    for (size_t i = 0; r >= 0 && i < n_sub; i++) {
        const Yun__SubnetRecord *s = sub[i].subnet;
        struct in_addr gw;
        bool has_gw = ipv4_parse(s->gateway_ip, &gw) && in_subnet(gw, sub[i].net, sub[i].prefix);
        if (has_gw)
            r = yun_text_appendf(opts, "tag:s%zu,option:router,%s\n", i, s->gateway_ip);
        /* Our own DNS first (the ports' names), then the subnet's servers:
         * ours refuses other names and resolvers move on to the next. */
        if (r >= 0)
            r = yun_text_appendf(opts, "tag:s%zu,option:dns-server,%s", i, sub[i].dhcp_ip);
        for (size_t j = 0, used = 1; r >= 0 && j < s->n_dns_nameservers && used < 3; j++) {
            struct in_addr a;
            if (!ipv4_parse(s->dns_nameservers[j], &a))
                continue;
            r = yun_text_appendf(opts, ",%s", s->dns_nameservers[j]);
            used++;
        }
        if (r >= 0)
            r = yun_text_appendf(opts, "\n");
        if (r >= 0 && net->mtu >= 68)
            r = yun_text_appendf(opts, "tag:s%zu,option:mtu,%u\n", i, net->mtu);
        /* Option 121: with it, clients ignore option 3, so the default
         * route is repeated here. */
        if (r >= 0)
            r = yun_text_appendf(opts,
                                 "tag:s%zu,option:classless-static-route,169.254.169.254/32,%s",
                                 i, sub[i].dhcp_ip);
        if (r >= 0 && has_gw)
            r = yun_text_appendf(opts, ",0.0.0.0/0,%s", s->gateway_ip);
        if (r >= 0)
            r = yun_text_appendf(opts, "\n");
    }
    return r;
}

/* What this host serves on network 'net': its DHCP port there into
 * '*ret_port' and the subnets served into 'sub' ('*ret_n_sub' of them).
 * -ENOENT when it serves nothing (no DHCP port here, or no IPv4 subnet
 * with enable_dhcp that the port has an address on), -EINVAL when the
 * DHCP port's own data is unusable. */
static int
served_subnets(const Yun__HostNetworkState *st, const char *host_id,
               const Yun__NetworkRecord *net, const Yun__PortRecord **ret_port,
               struct served_subnet sub[DHCP_MAX_SUBNETS], size_t *ret_n_sub)
{
    const Yun__PortRecord *port = host_ports_dhcp(st, host_id, net->id);
    if (!port)
        return -ENOENT;
    size_t n_sub = 0;
    for (size_t i = 0; i < st->n_subnets && n_sub < DHCP_MAX_SUBNETS; i++) {
        const Yun__SubnetRecord *s = st->subnets[i];
        struct served_subnet *ss = &sub[n_sub];
        if (strcmp(s->network_id, net->id) != 0 || !s->enable_dhcp ||
            (s->ip_version != 4 && s->ip_version != 0) ||
            !cidr_parse(s->cidr, &ss->net, &ss->prefix) || ss->prefix > 30)
            continue;
        ss->subnet = s;
        for (size_t j = 0; j < port->n_fixed_ips; j++) {
            struct in_addr a;
            if (strcmp(port->fixed_ips[j]->subnet_id, s->id) == 0 &&
                ipv4_parse(port->fixed_ips[j]->ip_address, &a) &&
                in_subnet(a, ss->net, ss->prefix)) {
                (void)inet_ntop(AF_INET, &a, ss->dhcp_ip, sizeof ss->dhcp_ip);
                n_sub++;
                break;
            }
        }
    }
    if (n_sub == 0)
        return -ENOENT;
    if (!host_ports_mac_is_valid(port->mac_address))
        return -EINVAL;
    *ret_port = port;
    *ret_n_sub = n_sub;
    return 0;
}

int
dhcp_render(const Yun__HostNetworkState *st, const char *host_id,
            const Yun__NetworkRecord *net, const char *dir, const char *dnsmasq_path,
            struct dhcp_config *ret)
{
    const Yun__PortRecord *port = NULL;
    struct served_subnet sub[DHCP_MAX_SUBNETS];
    size_t n_sub = 0;
    int r = served_subnets(st, host_id, net, &port, sub, &n_sub);
    if (r < 0)
        return r;

    struct dhcp_config c = { .mtu = net->mtu >= 68 ? net->mtu : 0 };
    memcpy(c.mac, port->mac_address, sizeof c.mac);
    for (size_t i = 0; r >= 0 && i < n_sub; i++) {
        c.cidrs[i] = strf("%s/%u", sub[i].dhcp_ip, sub[i].prefix);
        r = c.cidrs[i] ? 0 : -ENOMEM;
        c.n_cidrs = i + 1;
    }
    if (r >= 0) {
        c.cidrs[c.n_cidrs] = strdup("169.254.169.254/32");
        r = c.cidrs[c.n_cidrs] ? 0 : -ENOMEM;
        c.n_cidrs++;
    }
    if (r >= 0)
        r = render_hosts(st, host_id, net, sub, n_sub, &c.hosts);
    if (r >= 0)
        r = render_opts(net, sub, n_sub, &c.opts);

    /* The order is fixed: adoption compares /proc/PID/cmdline to it.
     * --dhcp-broadcast: answers to an unconfigured client go out as
     * broadcasts. Else dnsmasq unicasts them after writing the client's
     * MAC into the namespace's ARP table (SIOCSARP), which replaces the
     * permanent entry the metadata service pinned (metadata.c) with one
     * that ARP may change again. */
    const char *fixed[] = {
        "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
        "--bind-interfaces", "--interface=" DHCP_NS_IFNAME, "--except-interface=lo",
        "--leasefile-ro", "--domain=" DHCP_DOMAIN, "--local=/" DHCP_DOMAIN "/",
        "--dhcp-lease-max=4096", "--dhcp-broadcast",
    };
    if (r >= 0)
        r = strv_push(&c.argv, &c.argc, strdup(dnsmasq_path));
    for (size_t i = 0; r >= 0 && i < ELEMENTSOF(fixed); i++)
        r = strv_push(&c.argv, &c.argc, strdup(fixed[i]));
    if (r >= 0)
        r = strv_push(&c.argv, &c.argc, strf("--pid-file=%s/pid", dir));
    if (r >= 0)
        r = strv_push(&c.argv, &c.argc, strf("--dhcp-hostsfile=%s/hosts", dir));
    if (r >= 0)
        r = strv_push(&c.argv, &c.argc, strf("--dhcp-optsfile=%s/opts", dir));
    if (r >= 0)
        r = strv_push(&c.argv, &c.argc, strf("--log-facility=%s/dnsmasq.log", dir));
    for (size_t i = 0; r >= 0 && i < n_sub; i++) {
        uint32_t mask = ~(0xffffffffu >> sub[i].prefix);
        struct in_addr m = { .s_addr = htonl(mask) };
        char net_s[INET_ADDRSTRLEN], mask_s[INET_ADDRSTRLEN];
        (void)inet_ntop(AF_INET, &sub[i].net, net_s, sizeof net_s);
        (void)inet_ntop(AF_INET, &m, mask_s, sizeof mask_s);
        /* static: only the MACs of the hosts file get an answer, so the
         * other hosts' servers on the same network stay silent. */
        r = strv_push(&c.argv, &c.argc,
                      strf("--dhcp-range=set:s%zu,%s,static,%s,%us", i, net_s, mask_s,
                           DHCP_LEASE_TIME_S));
    }
    if (r < 0) {
        dhcp_config_done(&c);
        return r;
    }
    *ret = c;
    return 0;
}

bool
dhcp_network_is_served(const Yun__HostNetworkState *st, const char *host_id,
                       const Yun__NetworkRecord *net)
{
    const Yun__PortRecord *port;
    struct served_subnet sub[DHCP_MAX_SUBNETS];
    size_t n_sub;
    return served_subnets(st, host_id, net, &port, sub, &n_sub) >= 0;
}

/* ---- names ---- */

const char *
dhcp_default_bridge_name(const char *network_id, char buf[16])
{
    if (netplug_ifname(buf, NETPLUG_PREFIX_BRIDGE, network_id) < 0)
        buf[0] = '\0';
    return buf;
}

static const char *
host_ifname(const char *network_id, char buf[16])
{
    if (netplug_ifname(buf, NETPLUG_PREFIX_DHCP, network_id) < 0)
        buf[0] = '\0';
    return buf;
}

const char *
dhcp_netns_name(const char *network_id, char *buf, size_t size)
{
    int n = snprintf(buf, size, DHCP_NS_PREFIX "%s", network_id);
    if (n < 0 || (size_t)n >= size || !yun_name_is_valid(buf, NETPLUG_NETNS_NAME_MAX) ||
        !yun_name_is_valid(network_id, 40))
        return NULL;
    return buf;
}

/* ---- processes ---- */

static int
pidfd_open_(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
}

static int
pidfd_kill(int pidfd, int sig)
{
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

static void net_schedule_restart(struct dhcp_net *n);
static int net_start(struct dhcp_net *n);
static void net_free(struct dhcp_net *n);

static void
net_unlink(struct dhcp_net *n)
{
    for (struct dhcp_net **p = &n->set->nets; *p; p = &(*p)->next)
        if (*p == n) {
            *p = n->next;
            return;
        }
}

static void
net_forget_process(struct dhcp_net *n)
{
    if (n->watch >= 0)
        (void)yun_loop_remove_fd(n->set->loop, n->watch);
    n->watch = -1;
    if (n->pidfd >= 0)
        (void)close(n->pidfd);
    n->pidfd = -1;
    if (n->kill_timer >= 0)
        (void)yun_loop_remove_timer(n->set->loop, n->kill_timer);
    n->kill_timer = -1;
    n->pid = 0;
}

static void
on_exit_fd(struct yun_loop *loop, int id, int fd, uint32_t events, void *data)
{
    struct dhcp_net *n = data;
    int status = 0;
    bool known = false;
    if (n->child) {
        pid_t p;
        do
            p = waitpid(n->pid, &status, WNOHANG);
        while (p < 0 && errno == EINTR);
        if (p == 0)
            return; /* spurious */
        known = p == n->pid;
    }
    pid_t pid = n->pid;
    int64_t ran_ms = yun_now_ms() - n->started_ms;
    net_forget_process(n);

    if (n->removed) {
        log_debug("dnsmasq stopped net=%s pid=%d", n->id, (int)pid);
        net_unlink(n);
        net_free(n);
        return;
    }
    if (n->restart_now || (n->hup_sent && known && WIFSIGNALED(status) &&
                           WTERMSIG(status) == SIGHUP)) {
        /* Stopped to take new arguments, or killed by a SIGHUP that came
         * before it set its handler: its files are current, start anew. */
        n->restart_now = false;
        n->hup_sent = false;
        int r = net_start(n);
        if (r < 0)
            net_schedule_restart(n);
        return;
    }
    if (ran_ms >= DHCP_STABLE_MS)
        n->backoff_ms = DHCP_BACKOFF_MIN_MS;
    char how[48] = "status=unknown";
    if (known && WIFEXITED(status))
        (void)snprintf(how, sizeof how, "status=%d", WEXITSTATUS(status));
    else if (known && WIFSIGNALED(status))
        (void)snprintf(how, sizeof how, "signal=%s", sigabbrev_np(WTERMSIG(status)) ?: "?");
    log_warn("dnsmasq exited unexpectedly, restarting net=%s pid=%d %s ran_ms=%lld "
             "retry_ms=%lld",
             n->id, (int)pid, how, (long long)ran_ms, (long long)n->backoff_ms);
    net_schedule_restart(n);
}

static int
watch_process(struct dhcp_net *n, pid_t pid, bool child)
{
    int fd = pidfd_open_(pid);
    if (fd < 0)
        return fd;
    int id = yun_loop_add_fd(n->set->loop, fd, EPOLLIN, on_exit_fd, n, NULL);
    if (id < 0) {
        (void)close(fd);
        return id;
    }
    n->pid = pid;
    n->pidfd = fd;
    n->watch = id;
    n->child = child;
    n->started_ms = yun_now_ms();
    n->hup_sent = false;
    return 0;
}

static int
net_start(struct dhcp_net *n)
{
    _cleanup_close_ int nsfd = netplug_netns_open(n->ns);
    if (nsfd < 0)
        return log_err_errno(nsfd, "cannot open the DHCP namespace net=%s ns=%s", n->id, n->ns);
    char pidfile[PATH_MAX];
    (void)snprintf(pidfile, sizeof pidfile, "%s/pid", n->dir);
    (void)unlink(pidfile);

    pid_t pid = fork();
    if (pid < 0)
        return log_err_errno(-errno, "cannot fork dnsmasq net=%s", n->id);
    if (pid == 0) {
        /* The child: only async-signal-safe calls until exec. The loop
         * blocks the signals it takes through signalfd; dnsmasq needs
         * them (SIGHUP, SIGTERM). */
        sigset_t none;
        sigemptyset(&none);
        (void)sigprocmask(SIG_SETMASK, &none, NULL);
        (void)signal(SIGPIPE, SIG_DFL);
        if (setns(nsfd, CLONE_NEWNET) < 0)
            _exit(126);
        (void)setsid();
        (void)syscall(SYS_close_range, 3u, ~0u, 0u);
        execv(n->cfg.argv[0], n->cfg.argv);
        _exit(127);
    }
    int r = watch_process(n, pid, true);
    if (r < 0) {
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
        return log_err_errno(r, "cannot watch dnsmasq net=%s pid=%d", n->id, (int)pid);
    }
    log_info("dnsmasq started net=%s pid=%d ns=%s", n->id, (int)pid, n->ns);
    return 0;
}

static int64_t
on_restart_timer(struct yun_loop *loop, int id, void *data)
{
    struct dhcp_net *n = data;
    n->restart_timer = -1;
    if (n->pid == 0 && !n->removed && net_start(n) < 0)
        net_schedule_restart(n);
    return YUN_LOOP_NOMORE;
}

static void
net_schedule_restart(struct dhcp_net *n)
{
    if (n->restart_timer >= 0)
        return;
    int id = yun_loop_add_timer(n->set->loop, n->backoff_ms, on_restart_timer, n, NULL);
    if (id < 0) {
        log_err_errno(id, "cannot schedule a dnsmasq restart net=%s", n->id);
        return;
    }
    n->restart_timer = id;
    n->backoff_ms = n->backoff_ms * 2 > DHCP_BACKOFF_MAX_MS ? DHCP_BACKOFF_MAX_MS
                                                             : n->backoff_ms * 2;
}

static int64_t
on_kill_timer(struct yun_loop *loop, int id, void *data)
{
    struct dhcp_net *n = data;
    n->kill_timer = -1;
    if (n->pidfd >= 0) {
        log_warn("dnsmasq ignored SIGTERM, killing it net=%s pid=%d", n->id, (int)n->pid);
        (void)pidfd_kill(n->pidfd, SIGKILL);
    }
    return YUN_LOOP_NOMORE;
}

/* SIGTERM now, SIGKILL later; the exit watch finishes the job. */
static void
net_stop(struct dhcp_net *n)
{
    if (n->pidfd < 0)
        return;
    int r = pidfd_kill(n->pidfd, SIGTERM);
    if (r < 0 && r != -ESRCH)
        log_warn_errno(r, "cannot stop dnsmasq net=%s pid=%d", n->id, (int)n->pid);
    if (n->kill_timer < 0) {
        int id = yun_loop_add_timer(n->set->loop, DHCP_KILL_AFTER_MS, on_kill_timer, n, NULL);
        n->kill_timer = id >= 0 ? id : -1;
    }
}

/* ---- files ---- */

static int
flatten(char **argv, char **ret, size_t *ret_size)
{
    size_t size = 0;
    for (char **a = argv; *a; a++)
        size += strlen(*a) + 1;
    char *flat = malloc(size ? size : 1);
    if (!flat)
        return -ENOMEM;
    size_t off = 0;
    for (char **a = argv; *a; a++) {
        size_t len = strlen(*a) + 1;
        memcpy(flat + off, *a, len);
        off += len;
    }
    *ret = flat;
    *ret_size = size;
    return 0;
}

/* Reads a /proc file whole (their size is 0 to stat, so yun_read_file()
 * does not do). */
static int
proc_read(const char *path, size_t max_size, char **ret, size_t *ret_size)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    _cleanup_free_ char *buf = malloc(max_size + 1);
    if (!buf)
        return -ENOMEM;
    size_t got = 0;
    while (got < max_size) {
        ssize_t n = read(fd, buf + got, max_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    *ret_size = got;
    *ret = TAKE_PTR(buf);
    return 0;
}

/* The pid in '<dir>/pid' if it is a dnsmasq of that pid file, with
 * '*ret_same' telling whether its command line is exactly 'flat'. */
static pid_t
pidfile_process(const char *dir, const char *dnsmasq_path, const char *flat, size_t flat_size,
                bool *ret_same)
{
    char path[PATH_MAX];
    (void)snprintf(path, sizeof path, "%s/pid", dir);
    _cleanup_free_ char *text = NULL;
    if (yun_read_file(path, 64, &text, NULL) < 0)
        return 0;
    text[strcspn(text, "\n")] = '\0';
    uint32_t pid;
    if (yun_safe_atou32(text, &pid) < 0 || pid < 2 || pid > (uint32_t)INT32_MAX)
        return 0;
    (void)snprintf(path, sizeof path, "/proc/%u/cmdline", pid);
    _cleanup_free_ char *cmd = NULL;
    size_t size = 0;
    if (proc_read(path, 65536, &cmd, &size) < 0)
        return 0;
    _cleanup_free_ char *want = NULL;
    if (asprintf(&want, "--pid-file=%s/pid", dir) < 0)
        return 0;
    /* Ours when it is the dnsmasq binary with our pid file. */
    bool binary = strcmp(cmd, dnsmasq_path) == 0, pidarg = false;
    for (size_t off = 0; off < size; off += strlen(cmd + off) + 1)
        if (strcmp(cmd + off, want) == 0)
            pidarg = true;
    if (!binary || !pidarg)
        return 0;
    *ret_same = flat && size == flat_size && memcmp(cmd, flat, size) == 0;
    return (pid_t)pid;
}

/* Kills whatever dnsmasq a pid file names (a stray of a network that is
 * not served any more), without waiting for it. */
static void
pidfile_kill(const char *dir, const char *dnsmasq_path)
{
    bool same;
    pid_t pid = pidfile_process(dir, dnsmasq_path, NULL, 0, &same);
    if (pid <= 0)
        return;
    _cleanup_close_ int fd = pidfd_open_(pid);
    if (fd >= 0 && pidfd_kill(fd, SIGTERM) >= 0)
        log_info("stray dnsmasq stopped pid=%d dir=%s", (int)pid, dir);
}

static int
file_update(const char *dir, const char *name, const char *text, const char *old, bool *changed)
{
    if (old && strcmp(old, text) == 0)
        return 0;
    char path[PATH_MAX];
    (void)snprintf(path, sizeof path, "%s/%s", dir, name);
    *changed = true;
    return yun_write_file_atomic(path, text, strlen(text), 0644);
}

static void
dir_remove(const char *dir)
{
    static const char *const names[] = { "hosts", "opts", "pid", "dnsmasq.log" };
    char path[PATH_MAX];
    for (size_t i = 0; i < ELEMENTSOF(names); i++) {
        (void)snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        (void)unlink(path);
    }
    if (rmdir(dir) < 0 && errno != ENOENT)
        log_warn_errno(-errno, "cannot remove the DHCP directory '%s', ignoring", dir);
}

/* ---- the set ---- */

static void
net_free(struct dhcp_net *n)
{
    if (!n)
        return;
    net_forget_process(n);
    if (n->restart_timer >= 0)
        (void)yun_loop_remove_timer(n->set->loop, n->restart_timer);
    dhcp_config_done(&n->cfg);
    free(n->argv_flat);
    free(n->id);
    free(n->dir);
    free(n);
}

static struct dhcp_net *
net_find(struct dhcp_set *d, const char *id)
{
    for (struct dhcp_net *n = d->nets; n; n = n->next)
        if (!n->removed && strcmp(n->id, id) == 0)
            return n;
    return NULL;
}

static int
net_new(struct dhcp_set *d, const char *id, struct dhcp_net **ret)
{
    struct dhcp_net *n = calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    *n = (struct dhcp_net){ .set = d, .pidfd = -1, .watch = -1, .restart_timer = -1,
                            .kill_timer = -1, .backoff_ms = DHCP_BACKOFF_MIN_MS };
    n->id = strdup(id);
    if (!n->id || asprintf(&n->dir, "%s/%s", d->dir, id) < 0) {
        n->dir = NULL;
        net_free(n);
        return -ENOMEM;
    }
    if (!dhcp_netns_name(id, n->ns, sizeof n->ns)) {
        net_free(n);
        return -EINVAL;
    }
    (void)host_ifname(id, n->host_ifname);
    n->next = d->nets;
    d->nets = n;
    *ret = n;
    return 0;
}

/* Tears down network 'n': the process (asynchronously), the veth, the
 * namespace and the files. */
static void
net_remove(struct dhcp_net *n)
{
    n->removed = true;
    if (n->restart_timer >= 0)
        (void)yun_loop_remove_timer(n->set->loop, n->restart_timer);
    n->restart_timer = -1;
    int r = netplug_link_delete(n->host_ifname);
    if (r < 0)
        log_warn_errno(r, "cannot delete the DHCP veth, ignoring net=%s link=%s", n->id,
                       n->host_ifname);
    r = netplug_netns_remove(n->ns);
    if (r < 0)
        log_warn_errno(r, "cannot remove the DHCP namespace, ignoring net=%s ns=%s", n->id,
                       n->ns);
    dir_remove(n->dir);
    log_info("DHCP server removed net=%s", n->id);
    if (n->pidfd >= 0) {
        net_stop(n);
        return;
    }
    net_unlink(n);
    net_free(n);
}

static int
net_apply(struct dhcp_set *d, struct dhcp_net *n, struct dhcp_config *cfg)
{
    char br_buf[16];
    const char *br = d->bridge_name(n->id, br_buf);
    int r = netplug_netns_ensure(n->ns);
    if (r < 0)
        return log_err_errno(r, "cannot make the DHCP namespace net=%s ns=%s", n->id, n->ns);
    r = netplug_veth_into_ns(n->host_ifname, br, n->ns, DHCP_NS_IFNAME, cfg->mac,
                             (const char *const *)cfg->cidrs, cfg->n_cidrs, cfg->mtu);
    if (r < 0)
        return log_err_errno(r, "cannot wire the DHCP port net=%s bridge=%s link=%s", n->id, br,
                             n->host_ifname);
    r = yun_mkdir_p(n->dir, 0755);
    if (r < 0)
        return log_err_errno(r, "cannot make the DHCP directory '%s'", n->dir);
    bool changed = false;
    r = file_update(n->dir, "hosts", cfg->hosts, n->cfg.hosts, &changed);
    if (r >= 0)
        r = file_update(n->dir, "opts", cfg->opts, n->cfg.opts, &changed);
    if (r < 0)
        return log_err_errno(r, "cannot write the DHCP files net=%s dir=%s", n->id, n->dir);

    _cleanup_free_ char *flat = NULL;
    size_t flat_size = 0;
    r = flatten(cfg->argv, &flat, &flat_size);
    if (r < 0)
        return r;
    bool new_args = !n->argv_flat || n->argv_flat_size != flat_size ||
                    memcmp(n->argv_flat, flat, flat_size) != 0;
    dhcp_config_done(&n->cfg);
    n->cfg = *cfg;
    *cfg = (struct dhcp_config){ 0 };
    free(n->argv_flat);
    n->argv_flat = TAKE_PTR(flat);
    n->argv_flat_size = flat_size;

    if (n->pid == 0 && n->restart_timer < 0) {
        /* Not running: a dnsmasq a previous agent left may be adopted. */
        bool same = false;
        pid_t pid = pidfile_process(n->dir, d->dnsmasq_path, n->argv_flat, n->argv_flat_size,
                                    &same);
        if (pid > 0 && watch_process(n, pid, false) >= 0) {
            if (same) {
                log_info("dnsmasq adopted net=%s pid=%d", n->id, (int)pid);
                /* The files may have changed while no agent watched. */
                if (pidfd_kill(n->pidfd, SIGHUP) >= 0)
                    n->hup_sent = true;
                return 0;
            }
            log_info("dnsmasq of other arguments found, restarting it net=%s pid=%d", n->id,
                     (int)pid);
            n->restart_now = true;
            net_stop(n);
            return 0;
        }
        r = net_start(n);
        if (r < 0)
            net_schedule_restart(n);
        return r;
    }
    /* A namespace made anew (removed behind our back) strands the
     * process in the old one. */
    uint64_t ino = 0;
    char proc_ns[64];
    struct stat pst;
    (void)snprintf(proc_ns, sizeof proc_ns, "/proc/%d/ns/net", (int)n->pid);
    if (n->pid != 0 && netplug_netns_inode(n->ns, &ino) >= 0 && stat(proc_ns, &pst) == 0 &&
        (uint64_t)pst.st_ino != ino)
        new_args = true;
    if (n->pid != 0 && new_args) {
        log_info("dnsmasq arguments or namespace changed, restarting it net=%s pid=%d", n->id,
                 (int)n->pid);
        n->restart_now = true;
        net_stop(n);
    } else if (n->pid != 0 && changed && !n->restart_now) {
        r = pidfd_kill(n->pidfd, SIGHUP);
        if (r >= 0) {
            n->hup_sent = true;
            log_debug("dnsmasq reloads its files net=%s pid=%d", n->id, (int)n->pid);
        }
    }
    return 0;
}

/* Strays: networks this agent served (it has their directory under its
 * run_dir) and serves no more: their dnsmasq, veth, namespace and files.
 * Namespaces without such a directory are another agent's (several agents
 * or clouds may share a machine) and are left alone. */
static void
sweep(struct dhcp_set *d)
{
    DIR *dir = opendir(d->dir);
    struct dirent *de;
    while (dir && (de = readdir(dir))) {
        if (de->d_name[0] == '.' || net_find(d, de->d_name))
            continue;
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s", d->dir, de->d_name) < 0)
            continue;
        pidfile_kill(path, d->dnsmasq_path);
        char ns[NETPLUG_NETNS_NAME_MAX + 1];
        if (dhcp_netns_name(de->d_name, ns, sizeof ns)) {
            char ifname[16];
            (void)netplug_link_delete(host_ifname(de->d_name, ifname));
            int r = netplug_netns_remove(ns);
            if (r < 0)
                log_warn_errno(r, "cannot remove a stray namespace, ignoring ns=%s", ns);
            else
                log_info("stray DHCP namespace removed ns=%s", ns);
        }
        dir_remove(path);
    }
    if (dir)
        (void)closedir(dir);
}

int
dhcp_apply(struct dhcp_set *d, const Yun__HostNetworkState *st, const char *this_host_id)
{
    int first = 0;
    for (struct dhcp_net *n = d->nets; n; n = n->next)
        n->seen = false;
    for (size_t i = 0; st && i < st->n_networks; i++) {
        const Yun__NetworkRecord *net = st->networks[i];
        char ns[NETPLUG_NETNS_NAME_MAX + 1];
        if (!dhcp_netns_name(net->id, ns, sizeof ns))
            continue;
        struct dhcp_net *n = net_find(d, net->id);
        _cleanup_free_ char *dir = NULL;
        if (asprintf(&dir, "%s/%s", d->dir, net->id) < 0)
            return -ENOMEM;
        struct dhcp_config cfg;
        int r = dhcp_render(st, this_host_id, net, dir, d->dnsmasq_path, &cfg);
        if (r == -ENOENT)
            continue;
        if (r < 0) {
            /* Keep what runs: bad data never half-applies. */
            log_err_errno(r, "cannot render the DHCP server of a network net=%s", net->id);
            if (n)
                n->seen = true;
            first = first < 0 ? first : r;
            continue;
        }
        if (!n && (r = net_new(d, net->id, &n)) < 0) {
            dhcp_config_done(&cfg);
            first = first < 0 ? first : r;
            continue;
        }
        n->seen = true;
        r = net_apply(d, n, &cfg);
        dhcp_config_done(&cfg);
        if (r < 0)
            first = first < 0 ? first : r;
    }
    for (struct dhcp_net *n = d->nets, *next; n; n = next) {
        next = n->next;
        if (!n->removed && !n->seen)
            net_remove(n);
    }
    sweep(d);
    return first;
}

int
dhcp_set_stop_all(struct dhcp_set *d)
{
    return dhcp_apply(d, NULL, "");
}

int
dhcp_set_new(struct yun_loop *loop, const char *state_dir, const char *dnsmasq_path,
             struct dhcp_set **ret)
{
    if (!dnsmasq_path || dnsmasq_path[0] != '/')
        return -EINVAL;
    struct dhcp_set *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->loop = loop;
    d->bridge_name = dhcp_default_bridge_name;
    d->dnsmasq_path = strdup(dnsmasq_path);
    if (!d->dnsmasq_path || asprintf(&d->dir, "%s/dhcp", state_dir) < 0) {
        d->dir = NULL;
        dhcp_set_free(d);
        return -ENOMEM;
    }
    /* Directories are made by the first network served: an agent with
     * none needs no rights there. */
    *ret = d;
    return 0;
}

void
dhcp_set_bridge_name_fn(struct dhcp_set *d, dhcp_bridge_name_fn fn)
{
    d->bridge_name = fn ? fn : dhcp_default_bridge_name;
}

struct dhcp_set *
dhcp_set_free(struct dhcp_set *d)
{
    if (!d)
        return NULL;
    while (d->nets) {
        struct dhcp_net *n = d->nets;
        d->nets = n->next;
        net_free(n);
    }
    free(d->dnsmasq_path);
    free(d->dir);
    free(d);
    return NULL;
}
