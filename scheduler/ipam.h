/* SPDX-License-Identifier: Apache-2.0
 * ipam.h: pure IPv4 arithmetic for the network model (no store, no I/O):
 * dotted quads and CIDRs parsed strictly, subnet bounds, allocation pools
 * checked against their subnet and each other. Addresses are host-order
 * uint32_t. The allocator that walks the store lives in port.c; this file
 * only says what is valid.
 *
 * Neighbours: network.c (subnets), port.c (fixed IPs), security-group.c
 * (remote prefixes). Tested by tests/unit/test-network.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IPAM_ADDR_STR_SIZE 16   /* "255.255.255.255" + NUL */
#define IPAM_CIDR_STR_SIZE 19   /* "255.255.255.255/32" + NUL */
#define IPAM_PREFIX_MAX 30      /* longest prefix of a subnet: 2 usable hosts */

struct ipam_cidr {
    uint32_t network;           /* host bits zero */
    unsigned prefix;            /* 0..32 */
};

struct ipam_range {
    uint32_t start, end;        /* inclusive */
};

/* Parses a dotted quad "a.b.c.d": four decimal parts 0..255, no leading
 * zeros (so "010" is not read as octal or decimal by mistake), no spaces.
 * Returns 0 or -EINVAL. */
int ipam_parse_addr(const char *s, uint32_t *ret);
/* Formats 'addr' into 'buf' (IPAM_ADDR_STR_SIZE bytes); returns 'buf'. */
const char *ipam_format_addr(uint32_t addr, char buf[IPAM_ADDR_STR_SIZE]);

/* Parses "a.b.c.d/n" with 0 <= n <= 32. With 'canonical', host bits
 * must be zero (-EINVAL otherwise); without, they are cleared. */
int ipam_parse_cidr(const char *s, bool canonical, struct ipam_cidr *ret);
const char *ipam_format_cidr(const struct ipam_cidr *c, char buf[IPAM_CIDR_STR_SIZE]);

uint32_t ipam_netmask(unsigned prefix);
/* The first and last addresses of 'c' (network and broadcast). */
uint32_t ipam_cidr_first(const struct ipam_cidr *c);
uint32_t ipam_cidr_last(const struct ipam_cidr *c);
bool ipam_cidr_contains(const struct ipam_cidr *c, uint32_t addr);
bool ipam_cidrs_overlap(const struct ipam_cidr *a, const struct ipam_cidr *b);
/* A usable host address of 'c': inside it, not its network nor its
 * broadcast address. */
bool ipam_is_host(const struct ipam_cidr *c, uint32_t addr);

/* The default pools of a subnet: its host addresses minus the gateway
 * ('gateway' 0 = none), as one or two ranges. Returns the count (0..2)
 * written to 'ret' (2 entries). */
size_t ipam_default_pools(const struct ipam_cidr *c, uint32_t gateway, struct ipam_range ret[2]);

/* Why a set of pools is refused, for the error message. */
enum ipam_pool_error {
    IPAM_POOL_OK,
    IPAM_POOL_REVERSED,         /* start > end */
    IPAM_POOL_OUTSIDE,          /* not within the subnet's host addresses */
    IPAM_POOL_OVERLAP,          /* two pools share addresses */
    IPAM_POOL_GATEWAY,          /* a pool contains the gateway */
};
/* Checks 'pools' against subnet 'c' and 'gateway' (0 = none); sets
 * '*ret_index' to the offending pool. */
enum ipam_pool_error ipam_check_pools(const struct ipam_cidr *c, uint32_t gateway,
                                      const struct ipam_range *pools, size_t n,
                                      size_t *ret_index);

/* Within 'pools' (any order), the first address >= 'from' that 'is_used'
 * does not claim, for simple callers and tests: returns 0 and '*ret' or
 * -ENOSPC. */
int ipam_first_free(const struct ipam_range *pools, size_t n,
                    bool (*is_used)(uint32_t addr, void *data), void *data, uint32_t *ret);
