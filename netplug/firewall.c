/* SPDX-License-Identifier: Apache-2.0
 * firewall.c: security groups and anti-spoofing through libnftables (see
 * firewall.h and docs/netplug.md). Every command is built here from text
 * that was checked and put in canonical form first; nothing a caller gives
 * reaches nft unchecked.
 *
 * Tables, chains and maps:
 *   bridge yun: map ports { ifname : verdict }, chain pre (prerouting,
 *     priority -300: before br_netfilter) "iifname vmap @ports", and per
 *     port a chain s-TAP of stateless anti-spoofing rules; set taps and
 *     chain post (postrouting) that lets only IPv4 and ARP reach a guest,
 *     since the inet rules below see IPv4 only.
 *   inet yun: maps egress and ingress { ether_addr : verdict }, chain
 *     forward (bridged IPv4 through br_netfilter) "ct state
 *     established,related accept; ether saddr vmap @egress; ether daddr
 *     vmap @ingress", and per port chains e-TAP (returns when allowed, so
 *     that the destination port's ingress chain is still asked) and i-TAP
 *     (accepts when allowed); sets g-GROUP of a group's addresses; chain
 *     input: what guests start towards the host through a yun bridge (a
 *     router port's gateway) passes their egress rules, then only ICMP.
 * CONFIG_NF_CONNTRACK_BRIDGE is not set on yun's kernels, so conntrack is
 * only to be had in the inet family, and there the tap is not known (the
 * input device is the bridge): the guest's MAC stands for it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>
#include <nftables/libnftables.h>

#include "cleanup.h"
#include "firewall.h"
#include "log.h"
#include "netplug.h"
#include "util.h"

YUN_LOG_MODULE("netplug.firewall");

#define BRNF_SYSCTL "/proc/sys/net/bridge/bridge-nf-call-iptables"

struct fw_port {
    char tap[NETPLUG_IFNAME_SIZE];
    char mac_e[18]; /* the egress map's key for it, canonical; "" none */
    char mac_i[18]; /* the ingress map's key; the same unless tampered with */
    bool jump;      /* in the bridge table's ports map */
};

struct netplug_fw {
    struct nft_ctx *nft;
    bool ready;            /* the tables exist */
    struct fw_port *ports; /* what the tables hold, as last read or written */
    size_t n_ports;
    size_t n_alloc;
    char *last_error;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(FILE *, fclose);
DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, netplug_names_free);

/* ---- checks: each writes the canonical form of good text ---- */

/* A tap name that is also safe in a chain name: [A-Za-z][A-Za-z0-9_-]*. */
static bool
tap_is_valid(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len >= NETPLUG_IFNAME_SIZE)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool other = (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!alpha && (i == 0 || !other))
            return false;
    }
    return true;
}

static int
canon_mac(const char *s, char out[18])
{
    if (!s || strlen(s) != 17)
        return -EINVAL;
    for (int i = 0; i < 17; i++) {
        char c = s[i];
        if (i % 3 == 2) {
            if (c != ':')
                return -EINVAL;
            out[i] = ':';
        } else if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
            out[i] = c;
        } else if (c >= 'A' && c <= 'F') {
            out[i] = (char)(c - 'A' + 'a');
        } else {
            return -EINVAL;
        }
    }
    out[17] = '\0';
    return 0;
}

static int
canon_ipv4(const char *s, char out[INET_ADDRSTRLEN])
{
    struct in_addr a;
    if (!s || inet_pton(AF_INET, s, &a) != 1 || !inet_ntop(AF_INET, &a, out, INET_ADDRSTRLEN))
        return -EINVAL;
    return 0;
}

/* "a.b.c.d/n" with the host bits cleared. */
static int
canon_cidr(const char *s, char out[INET_ADDRSTRLEN + 3])
{
    const char *slash = s ? strchr(s, '/') : NULL;
    if (!slash || slash - s >= INET_ADDRSTRLEN)
        return -EINVAL;
    char ip[INET_ADDRSTRLEN];
    memcpy(ip, s, (size_t)(slash - s));
    ip[slash - s] = '\0';
    uint32_t len;
    struct in_addr a;
    if (yun_safe_atou32(slash + 1, &len) < 0 || len > 32 || inet_pton(AF_INET, ip, &a) != 1)
        return -EINVAL;
    a.s_addr &= len ? htonl(~0u << (32 - len)) : 0;
    if (!inet_ntop(AF_INET, &a, ip, sizeof ip))
        return -EINVAL;
    snprintf(out, INET_ADDRSTRLEN + 3, "%s/%u", ip, len);
    return 0;
}

static bool
group_is_valid(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    return len > 0 && len <= 36 && strspn(s, "0123456789abcdefABCDEF-") == len;
}

/* ---- running nft ---- */

static void
set_error(struct netplug_fw *fw, const char *text)
{
    free(fw->last_error);
    fw->last_error = text ? strdup(text) : NULL;
    /* One log line: nft's message spans lines (command, caret). */
    for (char *p = fw->last_error; p && *p; p++)
        if (*p == '\n')
            *p = ' ';
}

/* nft reports failures only as text; the kernel's errno is in it. */
static int
errno_from_nft(const char *text)
{
    static const struct {
        const char *text;
        int r;
    } map[] = {
        { "No such file or directory", -ENOENT },
        { "Device or resource busy", -EBUSY },
        { "File exists", -EEXIST },
        { "Operation not permitted", -EPERM },
        { "Permission denied", -EPERM },
        { "Cannot allocate memory", -ENOMEM },
        { "Operation not supported", -EOPNOTSUPP },
        { "syntax error", -EINVAL },
    };
    for (size_t i = 0; text && i < ELEMENTSOF(map); i++)
        if (strstr(text, map[i].text))
            return map[i].r;
    return -EIO;
}

/* Runs 'cmd' (one transaction, however many lines). With 'json', the
 * output is returned in '*ret_out' (a copy) in nft's JSON. */
static int
fw_run(struct netplug_fw *fw, const char *cmd, bool json, char **ret_out)
{
    unsigned flags = nft_ctx_output_get_flags(fw->nft);
    if (json)
        nft_ctx_output_set_flags(fw->nft, flags | NFT_CTX_OUTPUT_JSON);
    int r = nft_run_cmd_from_buffer(fw->nft, cmd);
    if (json)
        nft_ctx_output_set_flags(fw->nft, flags);
    /* Reading a buffer empties it for the next command. */
    const char *out = nft_ctx_get_output_buffer(fw->nft);
    const char *err = nft_ctx_get_error_buffer(fw->nft);
    if (r != 0) {
        set_error(fw, err && *err ? err : "nft failed without a message");
        int e = errno_from_nft(err);
        log_debug_errno(e, "nft command failed: %s", fw->last_error);
        return e;
    }
    set_error(fw, "");
    if (ret_out) {
        *ret_out = strdup(out ? out : "");
        if (!*ret_out)
            return -ENOMEM;
    }
    return 0;
}

static const char tables_cmd[] =
    "add table bridge yun\n"
    "delete table bridge yun\n"
    "add table bridge yun\n"
    "add map bridge yun ports { type ifname : verdict; }\n"
    "add chain bridge yun pre { type filter hook prerouting priority -300; policy accept; }\n"
    "add rule bridge yun pre iifname vmap @ports\n"
    "add set bridge yun taps { type ifname; }\n"
    "add chain bridge yun post { type filter hook postrouting priority -300; policy accept; }\n"
    "add rule bridge yun post oifname @taps ether type != { ip, arp } drop\n"
    "add table inet yun\n"
    "delete table inet yun\n"
    "add table inet yun\n"
    "add map inet yun egress { type ether_addr : verdict; }\n"
    "add map inet yun ingress { type ether_addr : verdict; }\n"
    "add chain inet yun forward { type filter hook forward priority 0; policy accept; }\n"
    "add rule inet yun forward ct state established,related accept\n"
    "add rule inet yun forward ether saddr vmap @egress\n"
    "add rule inet yun forward ether daddr vmap @ingress\n"
    /* The host behind a bridge (a router port's gateway address) is a
     * router to the guests, not a server: what a guest starts towards it
     * passes the guest's egress rules, then only ICMP is let in. */
    "add chain inet yun input { type filter hook input priority 0; policy accept; }\n"
    "add rule inet yun input iifname != \"ybr-*\" accept\n"
    "add rule inet yun input ct state established,related accept\n"
    "add rule inet yun input ether saddr vmap @egress\n"
    "add rule inet yun input meta l4proto icmp accept\n"
    "add rule inet yun input drop\n";

/* ---- the cache of ports ---- */

static struct fw_port *
port_find(struct netplug_fw *fw, const char *tap)
{
    for (size_t i = 0; i < fw->n_ports; i++)
        if (strcmp(fw->ports[i].tap, tap) == 0)
            return &fw->ports[i];
    return NULL;
}

static int
port_put(struct netplug_fw *fw, const char *tap, const char *mac_e, const char *mac_i)
{
    struct fw_port *p = port_find(fw, tap);
    if (!p) {
        if (fw->n_ports == fw->n_alloc) {
            size_t alloc = fw->n_alloc ? 2 * fw->n_alloc : 64;
            struct fw_port *a = reallocarray(fw->ports, alloc, sizeof *a);
            if (!a)
                return -ENOMEM;
            fw->ports = a;
            fw->n_alloc = alloc;
        }
        p = &fw->ports[fw->n_ports++];
        *p = (struct fw_port){ 0 };
        snprintf(p->tap, sizeof p->tap, "%s", tap);
    }
    if (mac_e)
        snprintf(p->mac_e, sizeof p->mac_e, "%s", mac_e);
    if (mac_i)
        snprintf(p->mac_i, sizeof p->mac_i, "%s", mac_i);
    return 0;
}

static void
port_drop(struct netplug_fw *fw, const char *tap)
{
    struct fw_port *p = port_find(fw, tap);
    if (p)
        *p = fw->ports[--fw->n_ports];
}

/* Calls 'fn' for each element [key, {"jump": {"target": chain}}] of the
 * map in nft's JSON 'text'. */
static int
for_each_jump(const char *text, int (*fn)(struct netplug_fw *, const char *, const char *),
              struct netplug_fw *fw)
{
    _cleanup_(json_object_putp) json_object *root = json_tokener_parse(text);
    json_object *items, *item, *map, *elems;
    if (!root || !json_object_object_get_ex(root, "nftables", &items) ||
        !json_object_is_type(items, json_type_array))
        return -EBADMSG;
    for (size_t i = 0; i < json_object_array_length(items); i++) {
        item = json_object_array_get_idx(items, i);
        if (!json_object_object_get_ex(item, "map", &map) ||
            !json_object_object_get_ex(map, "elem", &elems))
            continue;
        for (size_t j = 0; j < json_object_array_length(elems); j++) {
            json_object *e = json_object_array_get_idx(elems, j), *jump, *target;
            json_object *key = json_object_array_get_idx(e, 0);
            json_object *verdict = json_object_array_get_idx(e, 1);
            if (!key || !verdict || !json_object_object_get_ex(verdict, "jump", &jump) ||
                !json_object_object_get_ex(jump, "target", &target))
                continue;
            int r = fn(fw, json_object_get_string(key), json_object_get_string(target));
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* Elements are read back as they were written, "TAP" : jump s-TAP and
 * MAC : jump e-TAP / i-TAP; a port is whatever any of them names. */
static int
load_tap(struct netplug_fw *fw, const char *tap, const char *chain)
{
    if (!tap_is_valid(tap))
        return 0;
    int r = port_put(fw, tap, NULL, NULL);
    if (r < 0)
        return r;
    port_find(fw, tap)->jump = true;
    return 0;
}

static int
load_mac(struct netplug_fw *fw, const char *mac, const char *chain)
{
    char m[18];
    bool e = strncmp(chain, "e-", 2) == 0, i = strncmp(chain, "i-", 2) == 0;
    if ((!e && !i) || !tap_is_valid(chain + 2) || canon_mac(mac, m) < 0)
        return 0;
    return port_put(fw, chain + 2, e ? m : NULL, i ? m : NULL);
}

/* Reads the ports in the tables into the cache. */
static int
fw_load(struct netplug_fw *fw)
{
    _cleanup_free_ char *taps = NULL, *egress = NULL, *ingress = NULL;
    int r = fw_run(fw, "list map bridge yun ports", true, &taps);
    if (r < 0)
        return r;
    r = fw_run(fw, "list map inet yun egress", true, &egress);
    if (r < 0)
        return r;
    r = fw_run(fw, "list map inet yun ingress", true, &ingress);
    if (r < 0)
        return r;
    fw->n_ports = 0;
    r = for_each_jump(taps, load_tap, fw);
    if (r < 0)
        return r;
    r = for_each_jump(egress, load_mac, fw);
    if (r < 0)
        return r;
    return for_each_jump(ingress, load_mac, fw);
}

/* Makes the tables unless both are there, and reads the ports. */
static int
fw_ready(struct netplug_fw *fw)
{
    if (fw->ready)
        return 0;
    /* One list command per run: nft 1.0.6 fills its cache for the last
     * of several and fails the others. */
    static const char *const checks[] = {
        "list chain bridge yun pre", "list map bridge yun ports", "list chain bridge yun post",
        "list chain inet yun forward", "list map inet yun egress", "list map inet yun ingress",
        "list chain inet yun input",
    };
    int r = 0;
    for (size_t i = 0; i < ELEMENTSOF(checks) && r == 0; i++)
        r = fw_run(fw, checks[i], false, NULL);
    if (r == -ENOENT) {
        r = fw_run(fw, tables_cmd, false, NULL);
        if (r < 0)
            return r;
        log_debug("tables created");
    }
    if (r < 0)
        return r;
    r = fw_load(fw);
    if (r < 0)
        return r;
    fw->ready = true;
    return 0;
}

static int
write_sysctl(const char *path, const char *value)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(value);
    ssize_t n = write(fd, value, len);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EIO;
}

int
netplug_fw_new(struct netplug_fw **ret)
{
    struct netplug_fw *fw = calloc(1, sizeof *fw);
    if (!fw)
        return -ENOMEM;
    fw->nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!fw->nft || nft_ctx_buffer_output(fw->nft) < 0 || nft_ctx_buffer_error(fw->nft) < 0) {
        netplug_fw_free(fw);
        return -ENOMEM;
    }
    /* The inet table sees bridged IPv4 only through br_netfilter. */
    int r = write_sysctl(BRNF_SYSCTL, "1");
    if (r < 0) {
        netplug_fw_free(fw);
        return log_debug_errno(r, "cannot write " BRNF_SYSCTL);
    }
    r = fw_ready(fw);
    if (r < 0) {
        netplug_fw_free(fw);
        return r;
    }
    *ret = fw;
    return 0;
}

struct netplug_fw *
netplug_fw_free(struct netplug_fw *fw)
{
    if (!fw)
        return NULL;
    if (fw->nft)
        nft_ctx_free(fw->nft);
    free(fw->ports);
    free(fw->last_error);
    free(fw);
    return NULL;
}

const char *
netplug_fw_last_error(struct netplug_fw *fw)
{
    return fw->last_error ? fw->last_error : "";
}

/* ---- building commands ---- */

/* nft 1.0.6 has no "destroy": to delete what may be missing, add it
 * first (a no-op when it is there with the same value), then delete. */
static void
emit_drop_elem(FILE *f, const char *map, const char *key, const char *chain, const char *tap)
{
    fprintf(f, "add element %s { %s : jump %s%s }\ndelete element %s { %s }\n", map, key, chain,
            tap, map, key);
}

static void
emit_drop_chain(FILE *f, const char *table, const char *chain, const char *tap)
{
    /* The kernel deletes a chain's rules with it; a flush would make nft
     * fetch every rule of the table first. */
    fprintf(f, "add chain %s %s%s\ndelete chain %s %s%s\n", table, chain, tap, table, chain, tap);
}

/* The commands that take port 'old' out, whatever part of it is there. */
static void
emit_remove(FILE *f, const struct fw_port *old)
{
    const char *t = old->tap;
    char key[NETPLUG_IFNAME_SIZE + 2];
    snprintf(key, sizeof key, "\"%s\"", t);
    fprintf(f, "add chain bridge yun s-%s\nadd chain inet yun e-%s\nadd chain inet yun i-%s\n", t,
            t, t);
    emit_drop_elem(f, "bridge yun ports", key, "s-", t);
    fprintf(f, "add element bridge yun taps { %s }\ndelete element bridge yun taps { %s }\n", key,
            key);
    if (*old->mac_e)
        emit_drop_elem(f, "inet yun egress", old->mac_e, "e-", t);
    if (*old->mac_i)
        emit_drop_elem(f, "inet yun ingress", old->mac_i, "i-", t);
    emit_drop_chain(f, "bridge yun", "s-", t);
    emit_drop_chain(f, "inet yun", "e-", t);
    emit_drop_chain(f, "inet yun", "i-", t);
}

/* Makes chain 'name''tap', emptied when it may hold rules ('exists'): a
 * flush makes nft fetch all the table's rules, ~4 ms with 500 ports. */
static void
emit_chain(FILE *f, const char *name, const char *tap, bool exists)
{
    fprintf(f, "add chain %s%s\n", name, tap);
    if (exists)
        fprintf(f, "flush chain %s%s\n", name, tap);
}

/* One rule of a port's e- or i- chain, checked. */
static int
emit_rule(FILE *f, const char *tap, const struct netplug_fw_rule *rule)
{
    const char *dir = rule->ingress ? "saddr" : "daddr";
    char cidr[INET_ADDRSTRLEN + 3];
    if (rule->remote_cidr && rule->remote_group)
        return -EINVAL;
    if (rule->remote_cidr && canon_cidr(rule->remote_cidr, cidr) < 0)
        return -EINVAL;
    if (rule->remote_group && !group_is_valid(rule->remote_group))
        return -EINVAL;
    if (rule->protocol < -1 || rule->protocol > 255)
        return -EINVAL;
    if (rule->remote_group)
        fprintf(f, "add set inet yun g-%s { type ipv4_addr; }\n", rule->remote_group);

    fprintf(f, "add rule inet yun %s-%s", rule->ingress ? "i" : "e", tap);
    if (rule->remote_cidr)
        fprintf(f, " ip %s %s", dir, cidr);
    else if (rule->remote_group)
        fprintf(f, " ip %s @g-%s", dir, rule->remote_group);
    else if (rule->protocol == -1 || rule->has_range)
        fprintf(f, " meta nfproto ipv4");
    switch (rule->protocol) {
    case -1:
        if (rule->has_range)
            return -EINVAL;
        break;
    case 6:
    case 17:
        if (rule->has_range) {
            if (rule->min < 1 || rule->min > rule->max || rule->max > 65535)
                return -EINVAL;
            fprintf(f, " %s dport %u", rule->protocol == 6 ? "tcp" : "udp", rule->min);
            if (rule->max != rule->min)
                fprintf(f, "-%u", rule->max);
        } else {
            fprintf(f, " meta l4proto %d", rule->protocol);
        }
        break;
    case 1:
        if (rule->has_range) {
            if (rule->min > 255)
                return -EINVAL;
            fprintf(f, " icmp type %u", rule->min);
            if (rule->max <= 255)
                fprintf(f, " icmp code %u", rule->max);
        } else {
            fprintf(f, " meta l4proto 1");
        }
        break;
    default:
        if (rule->has_range)
            return -EINVAL;
        fprintf(f, " meta l4proto %d", rule->protocol);
    }
    /* Egress returns so that the destination's ingress chain is asked. */
    fprintf(f, " %s\n", rule->ingress ? "accept" : "return");
    return 0;
}

/* The whole transaction that makes or replaces port 'p', whose MAC is
 * 'mac', and what the tables hold of it, 'old' (NULL: nothing). Adding an
 * element that is there with the same verdict is a no-op, so the new
 * elements are always added. */
static int
emit_port(FILE *f, const struct netplug_fw_port *p, const char *mac, const struct fw_port *old)
{
    const char *t = p->tap;
    char ips[NETPLUG_FW_MAX_PORT_IPS][INET_ADDRSTRLEN];
    for (size_t i = 0; i < p->n_ips; i++)
        if (canon_ipv4(p->ips[i], ips[i]) < 0)
            return -EINVAL;

    /* Anti-spoofing: what leaves the guest carries its own addresses.
     * One rule per address and no anonymous sets: each such set is one
     * more object nft's cache fetches in every later transaction, which
     * made plugging slow with hundreds of ports. */
    emit_chain(f, "bridge yun s-", t, old != NULL);
    fprintf(f, "add rule bridge yun s-%s ether saddr != %s drop\n", t, mac);
    fprintf(f, "add rule bridge yun s-%s arp saddr ether != %s drop\n", t, mac);
    fprintf(f, "add rule bridge yun s-%s udp sport 67 drop\n", t);
    fprintf(f, "add rule bridge yun s-%s ip saddr 0.0.0.0 udp sport 68 udp dport 67 return\n", t);
    fprintf(f, "add rule bridge yun s-%s arp saddr ip 0.0.0.0 return\n", t);
    for (size_t i = 0; i < p->n_ips; i++)
        fprintf(f, "add rule bridge yun s-%s ip saddr %s return\n"
                   "add rule bridge yun s-%s arp saddr ip %s return\n", t, ips[i], t, ips[i]);
    /* Any other IPv4 or ARP, IPv6, VLAN tags, other protocols. */
    fprintf(f, "add rule bridge yun s-%s drop\n", t);
    fprintf(f, "add element bridge yun ports { \"%s\" : jump s-%s }\n", t, t);
    fprintf(f, "add element bridge yun taps { \"%s\" }\n", t);

    /* Security groups. */
    emit_chain(f, "inet yun e-", t, old != NULL);
    emit_chain(f, "inet yun i-", t, old != NULL);
    fprintf(f, "add rule inet yun e-%s ct state invalid drop\n", t);
    fprintf(f, "add rule inet yun e-%s udp sport 68 udp dport 67 return\n", t);
    fprintf(f, "add rule inet yun i-%s ct state invalid drop\n", t);
    fprintf(f, "add rule inet yun i-%s udp sport 67 udp dport 68 accept\n", t);
    for (size_t i = 0; i < p->n_rules; i++) {
        int r = emit_rule(f, t, &p->rules[i]);
        if (r < 0)
            return r;
    }
    fprintf(f, "add rule inet yun e-%s drop\nadd rule inet yun i-%s drop\n", t, t);
    if (old && *old->mac_e && strcmp(old->mac_e, mac) != 0)
        emit_drop_elem(f, "inet yun egress", old->mac_e, "e-", t);
    if (old && *old->mac_i && strcmp(old->mac_i, mac) != 0)
        emit_drop_elem(f, "inet yun ingress", old->mac_i, "i-", t);
    fprintf(f, "add element inet yun egress { %s : jump e-%s }\n", mac, t);
    fprintf(f, "add element inet yun ingress { %s : jump i-%s }\n", mac, t);
    return 0;
}

/* Builds a command with 'emit' into a new string. */
#define BUILD(ret, emit_call)                                                  \
    ({                                                                         \
        size_t size_ = 0;                                                      \
        int r_ = -ENOMEM;                                                      \
        FILE *f = open_memstream((ret), &size_);                               \
        if (f) {                                                               \
            r_ = (emit_call);                                                  \
            if (fclose(f) != 0 && r_ == 0)                                     \
                r_ = -ENOMEM;                                                  \
        }                                                                      \
        r_;                                                                    \
    })

static int
emit_remove_ok(FILE *f, const struct fw_port *old)
{
    emit_remove(f, old);
    return 0;
}

/* Runs 'cmd'. When 'may_retry' and the failure may come from a cache
 * that is wrong about the tables (someone else changed them), reads them
 * again and returns -EAGAIN so that the caller rebuilds its command. */
static int
fw_run_tx(struct netplug_fw *fw, const char *cmd, bool may_retry)
{
    int r = fw_run(fw, cmd, false, NULL);
    if (may_retry && (r == -ENOENT || r == -EEXIST || r == -EBUSY)) {
        int k = fw_load(fw);
        if (k < 0)
            fw->ready = false;
        return k < 0 ? r : -EAGAIN;
    }
    return r;
}

int
netplug_fw_port_remove(struct netplug_fw *fw, const char *tap)
{
    if (!tap_is_valid(tap))
        return -EINVAL;
    int r = fw_ready(fw);
    if (r < 0)
        return r;
    for (int attempt = 0;; attempt++) {
        struct fw_port *old = port_find(fw, tap);
        if (!old)
            return 0;
        _cleanup_free_ char *cmd = NULL;
        r = BUILD(&cmd, emit_remove_ok(f, old));
        if (r < 0)
            return r;
        r = fw_run_tx(fw, cmd, attempt == 0);
        if (r == -EAGAIN)
            continue;
        if (r < 0)
            return r;
        port_drop(fw, tap);
        log_debug("port filtering removed port=%s", tap);
        return 0;
    }
}

int
netplug_fw_port_apply(struct netplug_fw *fw, const struct netplug_fw_port *p)
{
    char mac[18];
    if (!p || !tap_is_valid(p->tap) || canon_mac(p->mac, mac) < 0 ||
        p->n_ips > NETPLUG_FW_MAX_PORT_IPS || (p->n_ips && !p->ips) ||
        p->n_rules > NETPLUG_FW_MAX_RULES || (p->n_rules && !p->rules))
        return -EINVAL;
    if (!p->port_security)
        return netplug_fw_port_remove(fw, p->tap);
    int r = fw_ready(fw);
    if (r < 0)
        return r;
    for (int attempt = 0;; attempt++) {
        for (size_t i = 0; i < fw->n_ports; i++)
            if ((strcmp(fw->ports[i].mac_e, mac) == 0 || strcmp(fw->ports[i].mac_i, mac) == 0) &&
                strcmp(fw->ports[i].tap, p->tap) != 0)
                return -EEXIST;
        struct fw_port *old = port_find(fw, p->tap);
        _cleanup_free_ char *cmd = NULL;
        r = BUILD(&cmd, emit_port(f, p, mac, old));
        if (r < 0)
            return r;
        r = fw_run_tx(fw, cmd, attempt == 0);
        if (r == -EAGAIN)
            continue;
        if (r < 0)
            return r;
        r = port_put(fw, p->tap, mac, mac);
        if (r < 0) {
            fw->ready = false; /* read the tables again next time */
            return r;
        }
        port_find(fw, p->tap)->jump = true;
        log_debug("port filtering applied port=%s rules=%zu", p->tap, p->n_rules);
        return 0;
    }
}

int
netplug_fw_group_set(struct netplug_fw *fw, const char *group_id, const char *const *ips, size_t n)
{
    if (!group_is_valid(group_id) || n > NETPLUG_FW_MAX_GROUP_IPS || (n && !ips))
        return -EINVAL;
    int r = fw_ready(fw);
    if (r < 0)
        return r;
    _cleanup_free_ char *cmd = NULL;
    size_t size = 0;
    _cleanup_(fclosep) FILE *f = open_memstream(&cmd, &size);
    if (!f)
        return -ENOMEM;
    fprintf(f, "add set inet yun g-%s { type ipv4_addr; }\nflush set inet yun g-%s\n", group_id,
            group_id);
    if (n) {
        fprintf(f, "add element inet yun g-%s {", group_id);
        for (size_t i = 0; i < n; i++) {
            char ip[INET_ADDRSTRLEN];
            if (canon_ipv4(ips[i], ip) < 0)
                return -EINVAL;
            fprintf(f, "%s %s", i ? "," : "", ip);
        }
        fprintf(f, " }\n");
    }
    if (fclose(TAKE_PTR(f)) != 0)
        return -ENOMEM;
    r = fw_run(fw, cmd, false, NULL);
    if (r < 0)
        return r;
    log_debug("group set group=%s n=%zu", group_id, n);
    return 0;
}

int
netplug_fw_group_remove(struct netplug_fw *fw, const char *group_id)
{
    if (!group_is_valid(group_id))
        return -EINVAL;
    int r = fw_ready(fw);
    if (r < 0)
        return r;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "delete set inet yun g-%s", group_id);
    r = fw_run(fw, cmd, false, NULL);
    if (r == -ENOENT)
        return 0;
    return r;
}

int
netplug_fw_port_list(struct netplug_fw *fw, char ***ret_taps, size_t *ret_n)
{
    int r = fw_ready(fw);
    if (r < 0)
        return r;
    /* The kernel's word, not the cache's: another process may have left
     * ports behind or taken them out. */
    r = fw_load(fw);
    if (r < 0)
        return r;
    _cleanup_(netplug_names_freep) char **taps = calloc(fw->n_ports + 1, sizeof *taps);
    if (!taps)
        return -ENOMEM;
    for (size_t i = 0; i < fw->n_ports; i++) {
        taps[i] = strdup(fw->ports[i].tap);
        if (!taps[i])
            return -ENOMEM;
    }
    *ret_taps = TAKE_PTR(taps);
    *ret_n = fw->n_ports;
    return 0;
}

int
netplug_fw_refresh(struct netplug_fw *fw)
{
    fw->ready = false;
    return fw_ready(fw);
}

bool
netplug_fw_port_present(struct netplug_fw *fw, const char *tap)
{
    const struct fw_port *p = tap ? port_find(fw, tap) : NULL;
    return p && p->jump && *p->mac_e && *p->mac_i;
}

int
netplug_fw_reset(struct netplug_fw *fw)
{
    int r = fw_run(fw,
                   "add table bridge yun\ndelete table bridge yun\n"
                   "add table inet yun\ndelete table inet yun\n",
                   false, NULL);
    if (r < 0)
        return r;
    fw->ready = false;
    fw->n_ports = 0;
    log_debug("tables dropped");
    return 0;
}
