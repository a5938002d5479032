/* SPDX-License-Identifier: Apache-2.0
 * netns.c: named network namespaces and veth pairs into them (see
 * netns.h). Namespaces are made the way iproute2 makes them: a thread
 * unshares its network namespace and bind-mounts /proc/thread-self/ns/net
 * onto /run/netns/NAME, which keeps it alive after the thread is gone. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <linux/magic.h>
#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/socket.h>

#include "cleanup.h"
#include "netns.h"
#include "netplug-priv.h"
#include "util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_sock *, nl_socket_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct rtnl_addr *, rtnl_addr_put);

static int
netns_path(const char *name, char *buf, size_t size)
{
    if (!yun_name_is_valid(name, NETPLUG_NETNS_NAME_MAX))
        return -EINVAL;
    int n = snprintf(buf, size, "%s/%s", NETPLUG_NETNS_DIR, name);
    return n > 0 && (size_t)n < size ? 0 : -EINVAL;
}

static bool
is_nsfs_mount(const char *path)
{
    struct statfs sfs;
    return statfs(path, &sfs) == 0 && sfs.f_type == NSFS_MAGIC;
}

/* /run/netns is made a shared mount point, as iproute2 does, so that the
 * names appear in every mount namespace that shares it. */
static int
netns_dir_prepare(void)
{
    int r = yun_mkdir_p(NETPLUG_NETNS_DIR, 0755);
    if (r < 0)
        return r;
    bool bound = false;
    while (mount("", NETPLUG_NETNS_DIR, "none", MS_SHARED | MS_REC, NULL) < 0) {
        if (errno != EINVAL || bound)
            return -errno;
        /* Not a mount point yet: make it one. */
        if (mount(NETPLUG_NETNS_DIR, NETPLUG_NETNS_DIR, "none", MS_BIND | MS_REC, NULL) < 0)
            return -errno;
        bound = true;
    }
    return 0;
}

struct mount_job {
    const char *path;
    int r;
};

static void *
mount_thread(void *data)
{
    struct mount_job *job = data;
    if (unshare(CLONE_NEWNET) < 0) {
        job->r = -errno;
        return NULL;
    }
    job->r = mount("/proc/thread-self/ns/net", job->path, "none", MS_BIND, NULL) < 0 ? -errno
                                                                                        : 0;
    return NULL;
}

int
netplug_netns_ensure(const char *name)
{
    char path[sizeof NETPLUG_NETNS_DIR + NETPLUG_NETNS_NAME_MAX + 2];
    int r = netns_path(name, path, sizeof path);
    if (r < 0)
        return r;
    if (is_nsfs_mount(path))
        return 0;
    r = netns_dir_prepare();
    if (r < 0)
        return r;
    /* A file left by a crash between create and mount is reused. */
    int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    (void)close(fd);

    struct mount_job job = { .path = path };
    pthread_t t;
    r = -pthread_create(&t, NULL, mount_thread, &job);
    if (r == 0) {
        (void)pthread_join(t, NULL);
        r = job.r;
    }
    if (r < 0) {
        (void)unlink(path);
        return r;
    }
    return 1;
}

int
netplug_netns_remove(const char *name)
{
    char path[sizeof NETPLUG_NETNS_DIR + NETPLUG_NETNS_NAME_MAX + 2];
    int r = netns_path(name, path, sizeof path);
    if (r < 0)
        return r;
    if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        return -errno;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int
netplug_netns_list(const char *prefix, char ***ret_names, size_t *ret_n)
{
    DIR *dir = opendir(NETPLUG_NETNS_DIR);
    if (!dir) {
        if (errno != ENOENT)
            return -errno;
        *ret_names = NULL;
        *ret_n = 0;
        return 0;
    }
    char **names = NULL;
    size_t n = 0, prefix_len = prefix ? strlen(prefix) : 0;
    int r = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.' || strncmp(de->d_name, prefix ? prefix : "", prefix_len) != 0)
            continue;
        char **grown = realloc(names, (n + 1) * sizeof *names);
        if (!grown) {
            r = -ENOMEM;
            break;
        }
        names = grown;
        if (!(names[n] = strdup(de->d_name))) {
            r = -ENOMEM;
            break;
        }
        n++;
    }
    (void)closedir(dir);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return r;
    }
    *ret_names = names;
    *ret_n = n;
    return 0;
}

int
netplug_netns_open(const char *name)
{
    char path[sizeof NETPLUG_NETNS_DIR + NETPLUG_NETNS_NAME_MAX + 2];
    int r = netns_path(name, path, sizeof path);
    if (r < 0)
        return r;
    if (!is_nsfs_mount(path))
        return -ENOENT;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int
netplug_netns_inode(const char *name, uint64_t *ret_ino)
{
    _cleanup_close_ int fd = netplug_netns_open(name);
    if (fd < 0)
        return fd;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *ret_ino = (uint64_t)st.st_ino;
    return 0;
}

struct run_job {
    int nsfd;
    netplug_netns_fn fn;
    void *arg;
    int r;
};

static void *
run_thread(void *data)
{
    struct run_job *job = data;
    if (setns(job->nsfd, CLONE_NEWNET) < 0) {
        job->r = -errno;
        return NULL;
    }
    job->r = job->fn(job->arg);
    return NULL;
}

int
netplug_netns_run(const char *name, netplug_netns_fn fn, void *arg)
{
    _cleanup_close_ int fd = netplug_netns_open(name);
    if (fd < 0)
        return fd;
    struct run_job job = { .nsfd = fd, .fn = fn, .arg = arg };
    pthread_t t;
    int r = -pthread_create(&t, NULL, run_thread, &job);
    if (r < 0)
        return r;
    (void)pthread_join(t, NULL);
    return job.r;
}

static int
nl_open(struct nl_sock **ret)
{
    _cleanup_(nl_socket_freep) struct nl_sock *sock = nl_socket_alloc();
    if (!sock)
        return -ENOMEM;
    int r = nl_connect(sock, NETLINK_ROUTE);
    if (r < 0)
        return netplug_errno_from_nl(r);
    *ret = TAKE_PTR(sock);
    return 0;
}

/* The link 'name' into '*ret', or NULL when there is none. */
static int
link_get(struct nl_sock *sock, const char *name, struct rtnl_link **ret)
{
    struct rtnl_link *link = NULL;
    int r = rtnl_link_get_kernel(sock, 0, name, &link);
    if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV) {
        *ret = NULL;
        return 0;
    }
    if (r < 0)
        return netplug_errno_from_nl(r);
    *ret = link;
    return 0;
}

static int
link_delete(struct nl_sock *sock, const char *name)
{
    _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL;
    int r = link_get(sock, name, &link);
    if (r < 0 || !link)
        return r;
    r = rtnl_link_delete(sock, link);
    return r < 0 && r != -NLE_OBJ_NOTFOUND && r != -NLE_NODEV ? netplug_errno_from_nl(r) : 0;
}

int
netplug_link_delete(const char *ifname)
{
    _cleanup_(nl_socket_freep) struct nl_sock *sock = NULL;
    int r = nl_open(&sock);
    if (r < 0)
        return r;
    return link_delete(sock, ifname);
}

static int
ifname_check(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    return len > 0 && len < IFNAMSIZ && yun_name_is_valid(name, IFNAMSIZ - 1) ? 0 : -EINVAL;
}

/* Sets 'changes' (flags, master, address, MTU) on 'link'. */
static int
link_change(struct nl_sock *sock, struct rtnl_link *link, struct rtnl_link *changes)
{
    int r = rtnl_link_change(sock, link, changes, 0);
    return r < 0 ? netplug_errno_from_nl(r) : 0;
}

struct ns_side {
    const char *ifname;
    const char *mac;
    const char *const *cidrs;
    size_t n;
    uint32_t mtu;
    bool exists; /* out: the in-namespace end was found */
    bool configure;
};

static bool
addr_wanted(struct rtnl_addr *a, const struct ns_side *s)
{
    struct nl_addr *local = rtnl_addr_get_local(a);
    if (!local)
        return false;
    char have[64];
    if (!nl_addr2str(local, have, sizeof have))
        return false;
    /* nl_addr2str omits "/32" for a full-length prefix. */
    char with_len[80];
    if (!strchr(have, '/'))
        (void)snprintf(with_len, sizeof with_len, "%s/%d", have, rtnl_addr_get_prefixlen(a));
    else
        (void)snprintf(with_len, sizeof with_len, "%s", have);
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->cidrs[i], with_len) == 0)
            return true;
    return false;
}

static int
ns_side_run(void *data)
{
    struct ns_side *s = data;
    _cleanup_(nl_socket_freep) struct nl_sock *sock = NULL;
    int r = nl_open(&sock);
    if (r < 0)
        return r;
    _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL;
    r = link_get(sock, s->ifname, &link);
    if (r < 0)
        return r;
    s->exists = link != NULL;
    if (!s->configure)
        return 0;
    if (!link)
        return -ENODEV;
    /* A foreign link of that name (not a veth) was never ours. */
    if (!rtnl_link_is_veth(link))
        return -EEXIST;

    _cleanup_(rtnl_link_putp) struct rtnl_link *changes = rtnl_link_alloc();
    _cleanup_(nl_addr_putp) struct nl_addr *lladdr = NULL;
    if (!changes)
        return -ENOMEM;
    r = nl_addr_parse(s->mac, AF_LLC, &lladdr);
    if (r < 0)
        return -EINVAL;
    rtnl_link_set_addr(changes, lladdr);
    if (s->mtu)
        rtnl_link_set_mtu(changes, s->mtu);
    rtnl_link_set_flags(changes, IFF_UP);
    r = link_change(sock, link, changes);
    if (r < 0)
        return r;
    int ifindex = rtnl_link_get_ifindex(link);

    _cleanup_(rtnl_link_putp) struct rtnl_link *lo = NULL;
    r = link_get(sock, "lo", &lo);
    if (r < 0)
        return r;
    if (lo && !(rtnl_link_get_flags(lo) & IFF_UP)) {
        _cleanup_(rtnl_link_putp) struct rtnl_link *up = rtnl_link_alloc();
        if (!up)
            return -ENOMEM;
        rtnl_link_set_flags(up, IFF_UP);
        r = link_change(sock, lo, up);
        if (r < 0)
            return r;
    }

    /* Remove the IPv4 addresses no longer wanted, then add the wanted. */
    _cleanup_(nl_cache_freep) struct nl_cache *cache = NULL;
    r = rtnl_addr_alloc_cache(sock, &cache);
    if (r < 0)
        return netplug_errno_from_nl(r);
    for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
        struct rtnl_addr *a = (struct rtnl_addr *)o;
        if (rtnl_addr_get_ifindex(a) != ifindex || rtnl_addr_get_family(a) != AF_INET ||
            addr_wanted(a, s))
            continue;
        r = rtnl_addr_delete(sock, a, 0);
        if (r < 0 && r != -NLE_NOADDR)
            return netplug_errno_from_nl(r);
    }
    for (size_t i = 0; i < s->n; i++) {
        _cleanup_(rtnl_addr_putp) struct rtnl_addr *a = rtnl_addr_alloc();
        _cleanup_(nl_addr_putp) struct nl_addr *local = NULL;
        if (!a)
            return -ENOMEM;
        r = nl_addr_parse(s->cidrs[i], AF_INET, &local);
        if (r < 0 || !strchr(s->cidrs[i], '/'))
            return -EINVAL;
        rtnl_addr_set_ifindex(a, ifindex);
        rtnl_addr_set_family(a, AF_INET);
        rtnl_addr_set_prefixlen(a, (int)nl_addr_get_prefixlen(local));
        r = rtnl_addr_set_local(a, local);
        if (r < 0)
            return netplug_errno_from_nl(r);
        r = rtnl_addr_add(sock, a, NLM_F_REPLACE);
        if (r < 0 && r != -NLE_EXIST)
            return netplug_errno_from_nl(r);
    }
    return 0;
}

static int
veth_create(struct nl_sock *sock, const char *host_ifname, const char *ns, const char *ns_ifname,
            uint32_t mtu)
{
    _cleanup_close_ int nsfd = netplug_netns_open(ns);
    if (nsfd < 0)
        return nsfd;
    _cleanup_(rtnl_link_putp) struct rtnl_link *link = rtnl_link_veth_alloc();
    if (!link)
        return -ENOMEM;
    _cleanup_(rtnl_link_putp) struct rtnl_link *peer = rtnl_link_veth_get_peer(link);
    if (!peer)
        return -ENOMEM;
    rtnl_link_set_name(link, host_ifname);
    rtnl_link_set_name(peer, ns_ifname);
    /* The peer is born in the namespace, never visible here. */
    rtnl_link_set_ns_fd(peer, nsfd);
    if (mtu) {
        rtnl_link_set_mtu(link, mtu);
        rtnl_link_set_mtu(peer, mtu);
    }
    int r = rtnl_link_add(sock, link, NLM_F_CREATE | NLM_F_EXCL);
    return r < 0 ? netplug_errno_from_nl(r) : 0;
}

int
netplug_veth_into_ns(const char *host_ifname, const char *bridge, const char *ns,
                     const char *ns_ifname, const char *mac, const char *const *cidrs, size_t n,
                     uint32_t mtu)
{
    if (ifname_check(host_ifname) < 0 || ifname_check(bridge) < 0 ||
        ifname_check(ns_ifname) < 0 || !mac || (n && !cidrs))
        return -EINVAL;
    _cleanup_(nl_socket_freep) struct nl_sock *sock = NULL;
    int r = nl_open(&sock);
    if (r < 0)
        return r;
    _cleanup_(rtnl_link_putp) struct rtnl_link *br = NULL;
    r = link_get(sock, bridge, &br);
    if (r < 0)
        return r;
    if (!br)
        return -ENODEV;

    struct ns_side side = { .ifname = ns_ifname, .mac = mac, .cidrs = cidrs, .n = n,
                            .mtu = mtu };
    r = netplug_netns_run(ns, ns_side_run, &side);
    if (r < 0)
        return r;
    _cleanup_(rtnl_link_putp) struct rtnl_link *host = NULL;
    r = link_get(sock, host_ifname, &host);
    if (r < 0)
        return r;
    if (host && !rtnl_link_is_veth(host))
        return -EEXIST;
    if (!host || !side.exists) {
        /* One half alone (a crash mid-way, a namespace remade under us):
         * start over with a fresh pair. */
        r = link_delete(sock, host_ifname);
        if (r < 0)
            return r;
        r = veth_create(sock, host_ifname, ns, ns_ifname, mtu);
        if (r < 0)
            return r;
        rtnl_link_put(host);
        host = NULL;
        r = link_get(sock, host_ifname, &host);
        if (r < 0)
            return r;
        if (!host)
            return -ENODEV;
    }

    _cleanup_(rtnl_link_putp) struct rtnl_link *changes = rtnl_link_alloc();
    if (!changes)
        return -ENOMEM;
    rtnl_link_set_master(changes, rtnl_link_get_ifindex(br));
    rtnl_link_set_flags(changes, IFF_UP);
    if (mtu)
        rtnl_link_set_mtu(changes, mtu);
    r = link_change(sock, host, changes);
    if (r < 0)
        return r;

    side.configure = true;
    return netplug_netns_run(ns, ns_side_run, &side);
}
