/* SPDX-License-Identifier: Apache-2.0
 * bench-netplug.c: the time to plug and unplug one port, in a network
 * namespace of its own: plug = tap made, enslaved and up + firewall
 * applied (anti-spoofing and 3 security-group rules); unplug = firewall
 * removed + tap deleted. Measured with 1 and with 500 other ports already
 * plugged. Prints mean, p50 and p99 in ms. Target: < 10 ms with 500.
 *
 *   bench-netplug [ROUNDS]        (root; default 200 rounds)
 * Build without sanitizers for figures worth quoting. */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"
#include "firewall.h"
#include "netplug.h"
#include "util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct netplug *, netplug_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct netplug_fw *, netplug_fw_free);

static const struct netplug_fw_rule rules[] = {
    { .ingress = true, .protocol = 6, .has_range = true, .min = 22, .max = 22 },
    { .ingress = true, .protocol = 1, .remote_cidr = "10.0.0.0/8" },
    { .ingress = false, .protocol = -1 },
};

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Time spent in the firewall by the last plug() or unplug(). */
static double fw_ms;

static double now_ms(void);

static int
plug(struct netplug *np, struct netplug_fw *fw, unsigned i)
{
    char tap[NETPLUG_IFNAME_SIZE], mac[18], ip[16];
    snprintf(tap, sizeof tap, "ytap%u", i);
    snprintf(mac, sizeof mac, "52:54:00:%02x:%02x:%02x", (i >> 16) & 0xff, (i >> 8) & 0xff,
             i & 0xff);
    snprintf(ip, sizeof ip, "10.%u.%u.%u", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
    const char *ips[] = { ip };
    int r = netplug_tap_ensure(np, tap, "ybr-bench", mac, 1450);
    if (r < 0)
        return r;
    struct netplug_fw_port p = { .tap = tap, .mac = mac, .ips = ips, .n_ips = 1,
                                 .port_security = true, .rules = rules,
                                 .n_rules = ELEMENTSOF(rules) };
    double t0 = now_ms();
    r = netplug_fw_port_apply(fw, &p);
    fw_ms = now_ms() - t0;
    return r;
}

static int
unplug(struct netplug *np, struct netplug_fw *fw, unsigned i)
{
    char tap[NETPLUG_IFNAME_SIZE];
    snprintf(tap, sizeof tap, "ytap%u", i);
    double t0 = now_ms();
    int r = netplug_fw_port_remove(fw, tap);
    fw_ms = now_ms() - t0;
    return r < 0 ? r : netplug_link_remove(np, tap);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void
report(const char *what, unsigned others, double *t, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += t[i];
    qsort(t, n, sizeof *t, cmp_double);
    printf("  %-16s with %3u ports plugged: mean %6.2f ms  p50 %6.2f ms  p99 %6.2f ms  (n=%zu)\n",
           what, others, sum / (double)n, t[n / 2], t[(n * 99) / 100], n);
}

static int
measure(struct netplug *np, struct netplug_fw *fw, unsigned others, size_t rounds)
{
    _cleanup_free_ double *tp = calloc(rounds, sizeof *tp);
    _cleanup_free_ double *tu = calloc(rounds, sizeof *tu);
    _cleanup_free_ double *fp = calloc(rounds, sizeof *fp);
    _cleanup_free_ double *fu = calloc(rounds, sizeof *fu);
    if (!tp || !tu || !fp || !fu)
        return -ENOMEM;
    for (size_t k = 0; k < rounds; k++) {
        unsigned i = 100000 + (unsigned)k;
        double t0 = now_ms();
        int r = plug(np, fw, i);
        double t1 = now_ms();
        if (r < 0)
            return r;
        fp[k] = fw_ms;
        r = unplug(np, fw, i);
        double t2 = now_ms();
        if (r < 0)
            return r;
        tp[k] = t1 - t0;
        tu[k] = t2 - t1;
        fu[k] = fw_ms;
    }
    report("plug", others, tp, rounds);
    report(" of it firewall", others, fp, rounds);
    report("unplug", others, tu, rounds);
    report(" of it firewall", others, fu, rounds);
    return 0;
}

int
main(int argc, char **argv)
{
    uint32_t rounds = 200;
    if (argc > 1 && (yun_safe_atou32(argv[1], &rounds) < 0 || rounds == 0)) {
        fprintf(stderr, "usage: bench-netplug [ROUNDS]\n");
        return 2;
    }
    if (unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "bench-netplug: needs root for a network namespace\n");
        return 77;
    }
    _cleanup_(netplug_freep) struct netplug *np = NULL;
    _cleanup_(netplug_fw_freep) struct netplug_fw *fw = NULL;
    int r = netplug_new(&np);
    if (r == 0)
        r = netplug_fw_new(&fw);
    if (r == 0)
        r = netplug_bridge_ensure(np, "ybr-bench", 1450);
    if (r < 0) {
        fprintf(stderr, "bench-netplug: setup: %s\n", yun_strerror(r));
        return 1;
    }
    printf("netplug plug/unplug of one port (tap + bridge + firewall), own netns:\n");
    unsigned plugged = 0;
    const unsigned levels[] = { 1, 500 };
    for (size_t l = 0; l < ELEMENTSOF(levels); l++) {
        double t0 = now_ms();
        for (; plugged < levels[l]; plugged++) {
            r = plug(np, fw, plugged);
            if (r < 0) {
                fprintf(stderr, "bench-netplug: plug %u: %s (%s)\n", plugged, yun_strerror(r),
                        netplug_fw_last_error(fw));
                return 1;
            }
        }
        if (l > 0)
            printf("  (plugging %u ports took %.0f ms)\n", levels[l] - levels[l - 1],
                   now_ms() - t0);
        r = measure(np, fw, plugged, rounds);
        if (r < 0) {
            fprintf(stderr, "bench-netplug: %s (%s)\n", yun_strerror(r), netplug_fw_last_error(fw));
            return 1;
        }
    }
    return 0;
}
