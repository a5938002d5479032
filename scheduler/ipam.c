/* SPDX-License-Identifier: Apache-2.0
 * ipam.c: IPv4 arithmetic for subnets and pools (ipam.h). Strict parsers:
 * whatever the network sends is refused unless it is exactly the form the
 * records keep, so that a stored address compares equal to its text. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ipam.h"

int
ipam_parse_addr(const char *s, uint32_t *ret)
{
    uint32_t addr = 0;
    const char *p = s;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (*p != '.')
                return -EINVAL;
            p++;
        }
        if (*p < '0' || *p > '9')
            return -EINVAL;
        unsigned v = 0;
        const char *start = p;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (unsigned)(*p - '0');
            p++;
            if (p - start > 3 || v > 255)
                return -EINVAL;
        }
        if (p - start > 1 && *start == '0')
            return -EINVAL;
        addr = addr << 8 | v;
    }
    if (*p)
        return -EINVAL;
    *ret = addr;
    return 0;
}

const char *
ipam_format_addr(uint32_t a, char buf[IPAM_ADDR_STR_SIZE])
{
    snprintf(buf, IPAM_ADDR_STR_SIZE, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255,
             a & 255);
    return buf;
}

uint32_t
ipam_netmask(unsigned prefix)
{
    return prefix == 0 ? 0 : prefix >= 32 ? UINT32_MAX : ~(UINT32_MAX >> prefix);
}

int
ipam_parse_cidr(const char *s, bool canonical, struct ipam_cidr *ret)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash - s >= IPAM_ADDR_STR_SIZE)
        return -EINVAL;
    char addr_s[IPAM_ADDR_STR_SIZE];
    memcpy(addr_s, s, (size_t)(slash - s));
    addr_s[slash - s] = '\0';
    uint32_t addr;
    if (ipam_parse_addr(addr_s, &addr) < 0)
        return -EINVAL;
    const char *p = slash + 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1]))
        return -EINVAL;
    unsigned prefix = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        prefix = prefix * 10 + (unsigned)(*p - '0');
        if (prefix > 32)
            return -EINVAL;
    }
    uint32_t mask = ipam_netmask(prefix);
    if (canonical && (addr & ~mask))
        return -EINVAL;
    ret->network = addr & mask;
    ret->prefix = prefix;
    return 0;
}

const char *
ipam_format_cidr(const struct ipam_cidr *c, char buf[IPAM_CIDR_STR_SIZE])
{
    char a[IPAM_ADDR_STR_SIZE];
    snprintf(buf, IPAM_CIDR_STR_SIZE, "%s/%u", ipam_format_addr(c->network, a), c->prefix);
    return buf;
}

uint32_t
ipam_cidr_first(const struct ipam_cidr *c)
{
    return c->network;
}

uint32_t
ipam_cidr_last(const struct ipam_cidr *c)
{
    return c->network | ~ipam_netmask(c->prefix);
}

bool
ipam_cidr_contains(const struct ipam_cidr *c, uint32_t addr)
{
    return (addr & ipam_netmask(c->prefix)) == c->network;
}

bool
ipam_cidrs_overlap(const struct ipam_cidr *a, const struct ipam_cidr *b)
{
    return ipam_cidr_first(a) <= ipam_cidr_last(b) && ipam_cidr_first(b) <= ipam_cidr_last(a);
}

bool
ipam_is_host(const struct ipam_cidr *c, uint32_t addr)
{
    if (!ipam_cidr_contains(c, addr))
        return false;
    if (c->prefix >= 31)
        return true;
    return addr != ipam_cidr_first(c) && addr != ipam_cidr_last(c);
}

size_t
ipam_default_pools(const struct ipam_cidr *c, uint32_t gateway, struct ipam_range ret[2])
{
    uint32_t first = ipam_cidr_first(c), last = ipam_cidr_last(c);
    if (c->prefix < 31) {
        first++;
        last--;
    }
    if (!gateway || gateway < first || gateway > last) {
        ret[0] = (struct ipam_range){ first, last };
        return 1;
    }
    size_t n = 0;
    if (gateway > first)
        ret[n++] = (struct ipam_range){ first, gateway - 1 };
    if (gateway < last)
        ret[n++] = (struct ipam_range){ gateway + 1, last };
    return n;
}

enum ipam_pool_error
ipam_check_pools(const struct ipam_cidr *c, uint32_t gateway, const struct ipam_range *pools,
                 size_t n, size_t *ret_index)
{
    for (size_t i = 0; i < n; i++) {
        *ret_index = i;
        if (pools[i].start > pools[i].end)
            return IPAM_POOL_REVERSED;
        if (!ipam_is_host(c, pools[i].start) || !ipam_is_host(c, pools[i].end))
            return IPAM_POOL_OUTSIDE;
        if (gateway && gateway >= pools[i].start && gateway <= pools[i].end)
            return IPAM_POOL_GATEWAY;
        for (size_t j = 0; j < i; j++)
            if (pools[j].start <= pools[i].end && pools[i].start <= pools[j].end)
                return IPAM_POOL_OVERLAP;
    }
    *ret_index = 0;
    return IPAM_POOL_OK;
}

int
ipam_first_free(const struct ipam_range *pools, size_t n,
                bool (*is_used)(uint32_t addr, void *data), void *data, uint32_t *ret)
{
    for (size_t i = 0; i < n; i++)
        for (uint64_t a = pools[i].start; a <= pools[i].end; a++)
            if (!is_used((uint32_t)a, data)) {
                *ret = (uint32_t)a;
                return 0;
            }
    return -ENOSPC;
}
