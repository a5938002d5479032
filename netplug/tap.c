/* SPDX-License-Identifier: Apache-2.0
 * tap.c: the persistent tap of each port, made through /dev/net/tun and
 * then handed to libvirt unmanaged (see netplug.h). */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include <netlink/errno.h>

#include "log.h"
#include "netplug-priv.h"

YUN_LOG_MODULE("netplug.tap");

/* "aa:bb:cc:dd:ee:ff", exactly. */
static int
parse_mac(const char *s, unsigned char mac[6])
{
    if (!s || strlen(s) != 17)
        return -EINVAL;
    for (int i = 0; i < 6; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = s[3 * i + j];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0)
                return -EINVAL;
            v = v * 16 + (unsigned)d;
        }
        if (i < 5 && s[3 * i + 2] != ':')
            return -EINVAL;
        mac[i] = (unsigned char)v;
    }
    return 0;
}

/* Makes tap 'name' persistent through /dev/net/tun. */
static int
tun_create(const char *name)
{
    _cleanup_close_ int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return log_debug_errno(-errno, "cannot open /dev/net/tun");
    struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
    memcpy(ifr.ifr_name, name, strlen(name) + 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        return log_debug_errno(-errno, "cannot create tap '%s'", name);
    if (ioctl(fd, TUNSETPERSIST, 1) < 0)
        return log_debug_errno(-errno, "cannot make tap '%s' persistent", name);
    return 0;
}

int
netplug_tap_ensure(struct netplug *np, const char *name, const char *bridge,
                   const char *guest_mac, unsigned mtu)
{
    unsigned char mac[6];
    if (!netplug_name_is_valid(name) || parse_mac(guest_mac, mac) < 0)
        return -EINVAL;
    /* The host side must not own the guest's MAC, or the bridge would
     * deliver the guest's frames to the host; libvirt does the same. */
    mac[0] = 0xfe;
    _cleanup_(nl_addr_putp) struct nl_addr *addr = nl_addr_build(AF_LLC, mac, sizeof mac);
    if (!addr)
        return -ENOMEM;
    int master = netplug_bridge_index(np, bridge);
    if (master < 0)
        return master;
    struct netplug_link_want want = { .mtu = mtu, .master = master, .addr = addr };

    _cleanup_(rtnl_link_putp) struct rtnl_link *cur = NULL;
    int r = netplug_link_get(np, name, &cur);
    if (r < 0 && r != -ENODEV)
        return r;
    if (r == 0) {
        const char *type = rtnl_link_get_type(cur);
        if (type && strcmp(type, "tun") == 0)
            return netplug_link_fix(np, cur, &want);
        log_debug("link is not a tap, making it again link=%s", name);
        r = netplug_link_remove(np, name);
        if (r < 0)
            return r;
    }

    r = tun_create(name);
    if (r < 0)
        return r;
    /* One change for MAC, MTU, master, IPv6 and up. */
    r = netplug_link_fix_new(np, name, &want);
    if (r < 0) {
        (void)netplug_link_remove(np, name);
        return r;
    }
    log_debug("tap created link=%s", name);
    return 0;
}
