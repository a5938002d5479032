/* SPDX-License-Identifier: Apache-2.0
 * network.c: `yun network|subnet|port create|list|show|set|delete`: the
 * network model (proto/network.proto, docs/networks.md). Objects are named
 * by name or id; lists take --all-projects (admins). Also the cell helpers
 * security-group.c shares. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "cli.h"
#include "util.h"
#include "network.pb-c.h"

#define LIST_MAX 64

static void
message_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_message_ _cleanup_(message_freep)

void
cli_table_strv(struct cli_table *t, const char *key, char *const *v, size_t n)
{
    struct json_object *arr = json_object_new_array();
    size_t len = 1;
    for (size_t i = 0; i < n; i++) {
        json_object_array_add(arr, json_object_new_string(v[i]));
        len += strlen(v[i]) + 2;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(text, ", ");
        strcat(text, v[i]);
    }
    cli_table_json(t, key, arr, text);
}

static void
table_fixed_ips(struct cli_table *t, Yun__FixedIp *const *ips, size_t n)
{
    struct json_object *arr = json_object_new_array();
    _cleanup_free_ char *text = calloc(1, n * 96 + 1);
    if (!text)
        abort();
    for (size_t i = 0; i < n; i++) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "subnet_id", json_object_new_string(ips[i]->subnet_id));
        json_object_object_add(o, "ip_address", json_object_new_string(ips[i]->ip_address));
        json_object_array_add(arr, o);
        char one[96];
        snprintf(one, sizeof one, "%s%s", i ? ", " : "", ips[i]->ip_address);
        strcat(text, one);
    }
    cli_table_json(t, "fixed_ips", arr, text);
}

/* Calls 'op' with 'q' once per object named in argv[optind..]; prints the
 * reply with 'print' when 'show'. */
static int
each_ref(struct cli *cli, int argc, char **argv, const char *cmd, bool many, Yun__Op op,
         ProtobufCMessage *q, char **field, const ProtobufCMessageDescriptor *rd,
         int (*print)(struct cli *cli, const ProtobufCMessage *m))
{
    if (optind == argc || (!many && optind + 1 != argc))
        return cli_usage_error("'%s' takes %s", cmd, many ? "one or more names or ids"
                                                          : "one name or id");
    int failed = 0;
    for (int i = optind; i < argc; i++) {
        *field = argv[i];
        _cleanup_message_ ProtobufCMessage *m = NULL;
        int r = cli_call(cli, op, q, rd, &m);
        if (r == 0 && print)
            r = print(cli, m);
        failed |= r;
    }
    return failed ? 1 : 0;
}

/* Only "--all-projects" and no arguments. */
enum {
    OPT_ALL = 0x100,
    OPT_SHARED,
    OPT_NO_SHARED,
    OPT_TYPE,
    OPT_PHYSNET,
    OPT_SEGMENT,
    OPT_MTU,
    OPT_DESCRIPTION,
    OPT_NAME,
    OPT_NETWORK,
    OPT_RANGE,
    OPT_GATEWAY,
    OPT_POOL,
    OPT_DNS,
    OPT_NO_DNS,
    OPT_NO_DHCP,
    OPT_FIXED_IP,
    OPT_MAC,
    OPT_GROUP,
    OPT_NO_GROUP,
    OPT_DISABLE_PS,
    OPT_ENABLE_PS,
    OPT_OWNER,
    OPT_DEVICE,
    OPT_HOST,
    OPT_ENABLE,
    OPT_DISABLE,
};

static int
parse_u32(const char *opt, const char *v, uint32_t *ret)
{
    if (yun_safe_atou32(v, ret) < 0)
        return cli_usage_error("invalid %s '%s': give a number", opt, v);
    return 0;
}

/* ---- networks ---- */

static void
network_row(struct cli_table *t, const Yun__NetworkRecord *n, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", n->id);
    cli_table_str(t, "name", n->name);
    cli_table_str(t, "network_type", n->network_type);
    cli_table_uint(t, "segmentation_id", n->segmentation_id);
    cli_table_bool(t, "shared", n->shared);
    cli_table_strv(t, "subnets", n->subnets, n->n_subnets);
    if (!full)
        return;
    cli_table_str(t, "project", n->project);
    cli_table_str(t, "physical_network", n->physical_network);
    cli_table_uint(t, "mtu", n->mtu);
    cli_table_bool(t, "admin_state_up", n->admin_state_up);
    cli_table_str(t, "status", n->status);
    cli_table_str(t, "description", n->description);
    cli_table_time(t, "created_at", n->created_us);
    cli_table_time(t, "updated_at", n->updated_us);
}

static int
print_network(struct cli *cli, const ProtobufCMessage *m)
{
    const Yun__NetworkReply *y = (const Yun__NetworkReply *)m;
    if (!y->network)
        return 1;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    network_row(t, y->network, true);
    return cli_print(cli, t);
}

static int
network_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "network create";
    static const struct option opts[] = {
        { "shared", no_argument, NULL, OPT_SHARED },
        { "type", required_argument, NULL, OPT_TYPE },
        { "physical-network", required_argument, NULL, OPT_PHYSNET },
        { "segment", required_argument, NULL, OPT_SEGMENT },
        { "mtu", required_argument, NULL, OPT_MTU },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        {},
    };
    Yun__NetworkCreateRequest q = YUN__NETWORK_CREATE_REQUEST__INIT;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_SHARED:
            q.shared = true;
            break;
        case OPT_TYPE:
            if (strcmp(optarg, "flat") != 0 && strcmp(optarg, "vlan") != 0 &&
                strcmp(optarg, "vxlan") != 0)
                return cli_usage_error("unknown network type '%s': use flat, vlan or vxlan",
                                       optarg);
            q.network_type = optarg;
            break;
        case OPT_PHYSNET:
            q.physical_network = optarg;
            break;
        case OPT_SEGMENT:
            if ((r = parse_u32("--segment", optarg, &q.segmentation_id)))
                return r;
            break;
        case OPT_MTU:
            if ((r = parse_u32("--mtu", optarg, &q.mtu)))
                return r;
            break;
        case OPT_DESCRIPTION:
            q.description = optarg;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one network name", cmd);
    q.name = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_NETWORK_CREATE, &q.base, &yun__network_reply__descriptor, &m);
    return r ? r : print_network(cli, m);
}

static int
only_all_projects(const char *cmd, int argc, char **argv, protobuf_c_boolean *all,
                  int max_args)
{
    static const struct option opts[] = { { "all-projects", no_argument, NULL, OPT_ALL }, {} };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_ALL)
            return cli_option_error(cmd, c, argv);
        *all = true;
    }
    if (argc - optind > max_args)
        return cli_usage_error("'%s' takes %s", cmd,
                               max_args ? "at most one name or id" : "no arguments");
    return 0;
}

static int
network_list(struct cli *cli, int argc, char **argv)
{
    Yun__NetworkListRequest q = YUN__NETWORK_LIST_REQUEST__INIT;
    int r = only_all_projects("network list", argc, argv, &q.all_projects, 0);
    if (r)
        return r;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_NETWORK_LIST, &q.base, &yun__network_list_reply__descriptor,
                 &m);
    if (r)
        return r;
    const Yun__NetworkListReply *y = (const Yun__NetworkListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t i = 0; i < y->n_networks; i++)
        network_row(t, y->networks[i], cli->out.format != CLI_FORMAT_TABLE);
    return cli_print(cli, t);
}

static int
no_options(const char *cmd, int argc, char **argv)
{
    static const struct option opts[] = { {} };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0)
        return cli_option_error(cmd, c, argv);
    return 0;
}

static int
network_show(struct cli *cli, int argc, char **argv)
{
    Yun__NetworkRef q = YUN__NETWORK_REF__INIT;
    int r = no_options("network show", argc, argv);
    return r ? r : each_ref(cli, argc, argv, "network show", false, YUN__OP__OP_NETWORK_SHOW,
                            &q.base, &q.network, &yun__network_reply__descriptor,
                            print_network);
}

static int
network_delete(struct cli *cli, int argc, char **argv)
{
    Yun__NetworkRef q = YUN__NETWORK_REF__INIT;
    int r = no_options("network delete", argc, argv);
    return r ? r : each_ref(cli, argc, argv, "network delete", true,
                            YUN__OP__OP_NETWORK_DELETE, &q.base, &q.network,
                            &yun__network_reply__descriptor, NULL);
}

static int
network_set(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "network set";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        { "shared", no_argument, NULL, OPT_SHARED },
        { "no-shared", no_argument, NULL, OPT_NO_SHARED },
        {},
    };
    Yun__NetworkUpdateRequest q = YUN__NETWORK_UPDATE_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_NAME:
            q.name = optarg;
            break;
        case OPT_DESCRIPTION:
            q.set_description = true;
            q.description = optarg;
            break;
        case OPT_SHARED:
        case OPT_NO_SHARED:
            q.set_shared = true;
            q.shared = c == OPT_SHARED;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    return each_ref(cli, argc, argv, cmd, false, YUN__OP__OP_NETWORK_UPDATE, &q.base,
                    &q.network, &yun__network_reply__descriptor, print_network);
}

const struct cli_verb cli_network_verbs[] = {
    { "create", network_create,
      "NAME [--type flat|vlan|vxlan] [--physical-network P] [--segment N] [--mtu N] "
      "[--shared] [--description D]",
      "Create a network (--shared and --segment: admins)" },
    { "list", network_list, "[--all-projects]", "List the networks: own and shared" },
    { "show", network_show, "NETWORK", "Show a network" },
    { "set", network_set, "NETWORK [--name N] [--description D] [--shared|--no-shared]",
      "Change a network" },
    { "delete", network_delete, "NETWORK...",
      "Delete networks with their subnets (refused while they have ports)" },
    {},
};

/* ---- subnets ---- */

static void
subnet_row(struct cli_table *t, const Yun__SubnetRecord *s, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", s->id);
    cli_table_str(t, "name", s->name);
    cli_table_str(t, "network_id", s->network_id);
    cli_table_str(t, "cidr", s->cidr);
    if (!full)
        return;
    cli_table_str(t, "project", s->project);
    cli_table_str(t, "gateway_ip", s->gateway_ip);
    struct json_object *arr = json_object_new_array();
    _cleanup_free_ char *text = calloc(1, s->n_allocation_pools * 40 + 1);
    if (!text)
        abort();
    for (size_t i = 0; i < s->n_allocation_pools; i++) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "start", json_object_new_string(s->allocation_pools[i]->start));
        json_object_object_add(o, "end", json_object_new_string(s->allocation_pools[i]->end));
        json_object_array_add(arr, o);
        char one[40];
        snprintf(one, sizeof one, "%s%s-%s", i ? ", " : "", s->allocation_pools[i]->start,
                 s->allocation_pools[i]->end);
        strcat(text, one);
    }
    cli_table_json(t, "allocation_pools", arr, text);
    cli_table_strv(t, "dns_nameservers", s->dns_nameservers, s->n_dns_nameservers);
    cli_table_bool(t, "enable_dhcp", s->enable_dhcp);
    cli_table_uint(t, "ip_version", s->ip_version);
    cli_table_str(t, "description", s->description);
    cli_table_time(t, "created_at", s->created_us);
    cli_table_time(t, "updated_at", s->updated_us);
}

static int
print_subnet(struct cli *cli, const ProtobufCMessage *m)
{
    const Yun__SubnetReply *y = (const Yun__SubnetReply *)m;
    if (!y->subnet)
        return 1;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    subnet_row(t, y->subnet, true);
    return cli_print(cli, t);
}

/* "start=A,end=B" into 'p' (pointing into 'arg', which is changed). */
static int
parse_pool(char *arg, Yun__AllocationPool *p)
{
    yun__allocation_pool__init(p);
    char *save = NULL;
    for (char *kv = strtok_r(arg, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        if (strncmp(kv, "start=", 6) == 0)
            p->start = kv + 6;
        else if (strncmp(kv, "end=", 4) == 0)
            p->end = kv + 4;
        else
            return cli_usage_error("invalid --allocation-pool part '%s': give start=IP,end=IP",
                                   kv);
    }
    if (!*p->start || !*p->end)
        return cli_usage_error("--allocation-pool needs start=IP,end=IP");
    return 0;
}

static int
subnet_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "subnet create";
    static const struct option opts[] = {
        { "network", required_argument, NULL, OPT_NETWORK },
        { "subnet-range", required_argument, NULL, OPT_RANGE },
        { "gateway", required_argument, NULL, OPT_GATEWAY },
        { "allocation-pool", required_argument, NULL, OPT_POOL },
        { "dns-nameserver", required_argument, NULL, OPT_DNS },
        { "no-dhcp", no_argument, NULL, OPT_NO_DHCP },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        {},
    };
    Yun__SubnetCreateRequest q = YUN__SUBNET_CREATE_REQUEST__INIT;
    Yun__AllocationPool pools[LIST_MAX];
    Yun__AllocationPool *pool_ptrs[LIST_MAX];
    char *dns[LIST_MAX];
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_NETWORK:
            q.network = optarg;
            break;
        case OPT_RANGE:
            q.cidr = optarg;
            break;
        case OPT_GATEWAY:
            if (strcmp(optarg, "none") == 0)
                q.no_gateway = true;
            else
                q.gateway_ip = optarg;
            break;
        case OPT_POOL:
            if (q.n_allocation_pools == LIST_MAX)
                return cli_usage_error("too many --allocation-pool options");
            if ((r = parse_pool(optarg, &pools[q.n_allocation_pools])))
                return r;
            pool_ptrs[q.n_allocation_pools] = &pools[q.n_allocation_pools];
            q.n_allocation_pools++;
            break;
        case OPT_DNS:
            if (q.n_dns_nameservers == LIST_MAX)
                return cli_usage_error("too many --dns-nameserver options");
            dns[q.n_dns_nameservers++] = optarg;
            break;
        case OPT_NO_DHCP:
            q.disable_dhcp = true;
            break;
        case OPT_DESCRIPTION:
            q.description = optarg;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one subnet name", cmd);
    if (!*q.network || !*q.cidr)
        return cli_usage_error("'%s' needs --network NETWORK and --subnet-range CIDR", cmd);
    q.name = argv[optind];
    q.allocation_pools = pool_ptrs;
    q.dns_nameservers = dns;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_SUBNET_CREATE, &q.base, &yun__subnet_reply__descriptor, &m);
    return r ? r : print_subnet(cli, m);
}

static int
subnet_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "subnet list";
    static const struct option opts[] = {
        { "network", required_argument, NULL, OPT_NETWORK },
        { "all-projects", no_argument, NULL, OPT_ALL },
        {},
    };
    Yun__SubnetListRequest q = YUN__SUBNET_LIST_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_NETWORK)
            q.network = optarg;
        else if (c == OPT_ALL)
            q.all_projects = true;
        else
            return cli_option_error(cmd, c, argv);
    }
    if (optind != argc)
        return cli_usage_error("'%s' takes no arguments, only options", cmd);
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SUBNET_LIST, &q.base, &yun__subnet_list_reply__descriptor,
                     &m);
    if (r)
        return r;
    const Yun__SubnetListReply *y = (const Yun__SubnetListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t i = 0; i < y->n_subnets; i++)
        subnet_row(t, y->subnets[i], cli->out.format != CLI_FORMAT_TABLE);
    return cli_print(cli, t);
}

static int
subnet_show(struct cli *cli, int argc, char **argv)
{
    Yun__SubnetRef q = YUN__SUBNET_REF__INIT;
    int r = no_options("subnet show", argc, argv);
    return r ? r : each_ref(cli, argc, argv, "subnet show", false, YUN__OP__OP_SUBNET_SHOW,
                            &q.base, &q.subnet, &yun__subnet_reply__descriptor, print_subnet);
}

static int
subnet_delete(struct cli *cli, int argc, char **argv)
{
    Yun__SubnetRef q = YUN__SUBNET_REF__INIT;
    int r = no_options("subnet delete", argc, argv);
    return r ? r : each_ref(cli, argc, argv, "subnet delete", true, YUN__OP__OP_SUBNET_DELETE,
                            &q.base, &q.subnet, &yun__subnet_reply__descriptor, NULL);
}

static int
subnet_set(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "subnet set";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        { "gateway", required_argument, NULL, OPT_GATEWAY },
        { "dns-nameserver", required_argument, NULL, OPT_DNS },
        { "no-dns-nameservers", no_argument, NULL, OPT_NO_DNS },
        {},
    };
    Yun__SubnetUpdateRequest q = YUN__SUBNET_UPDATE_REQUEST__INIT;
    char *dns[LIST_MAX];
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_NAME:
            q.name = optarg;
            break;
        case OPT_DESCRIPTION:
            q.set_description = true;
            q.description = optarg;
            break;
        case OPT_GATEWAY:
            if (strcmp(optarg, "none") == 0)
                q.no_gateway = true;
            else
                q.gateway_ip = optarg;
            break;
        case OPT_DNS:
            if (q.n_dns_nameservers == LIST_MAX)
                return cli_usage_error("too many --dns-nameserver options");
            q.set_dns_nameservers = true;
            dns[q.n_dns_nameservers++] = optarg;
            break;
        case OPT_NO_DNS:
            q.set_dns_nameservers = true;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    q.dns_nameservers = dns;
    return each_ref(cli, argc, argv, cmd, false, YUN__OP__OP_SUBNET_UPDATE, &q.base, &q.subnet,
                    &yun__subnet_reply__descriptor, print_subnet);
}

const struct cli_verb cli_subnet_verbs[] = {
    { "create", subnet_create,
      "NAME --network NETWORK --subnet-range CIDR [--gateway IP|none] "
      "[--allocation-pool start=IP,end=IP]... [--dns-nameserver IP]... [--no-dhcp] "
      "[--description D]",
      "Create an IPv4 subnet on a network" },
    { "list", subnet_list, "[--network NETWORK] [--all-projects]", "List the subnets" },
    { "show", subnet_show, "SUBNET", "Show a subnet" },
    { "set", subnet_set,
      "SUBNET [--name N] [--description D] [--gateway IP|none] [--dns-nameserver IP]... "
      "[--no-dns-nameservers]",
      "Change a subnet" },
    { "delete", subnet_delete, "SUBNET...", "Delete subnets (refused while ports use them)" },
    {},
};

/* ---- ports ---- */

static void
port_row(struct cli_table *t, const Yun__PortRecord *p, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", p->id);
    cli_table_str(t, "name", p->name);
    cli_table_str(t, "mac_address", p->mac_address);
    table_fixed_ips(t, p->fixed_ips, p->n_fixed_ips);
    cli_table_str(t, "status", p->status);
    if (!full)
        return;
    cli_table_str(t, "network_id", p->network_id);
    cli_table_str(t, "project", p->project);
    cli_table_str(t, "device_id", p->device_id);
    cli_table_str(t, "device_owner", p->device_owner);
    cli_table_str(t, "host_id", p->host_id);
    cli_table_str(t, "dns_name", p->dns_name);
    cli_table_strv(t, "security_groups", p->security_groups, p->n_security_groups);
    cli_table_bool(t, "port_security_enabled", p->port_security_enabled);
    cli_table_bool(t, "admin_state_up", p->admin_state_up);
    cli_table_str(t, "description", p->description);
    cli_table_time(t, "created_at", p->created_us);
    cli_table_time(t, "updated_at", p->updated_us);
}

static int
print_port(struct cli *cli, const ProtobufCMessage *m)
{
    const Yun__PortReply *y = (const Yun__PortReply *)m;
    if (!y->port)
        return 1;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    port_row(t, y->port, true);
    return cli_print(cli, t);
}

/* "subnet=S,ip-address=A" (either part may be left out). */
static int
parse_fixed_ip(char *arg, Yun__FixedIp *f)
{
    yun__fixed_ip__init(f);
    char *save = NULL;
    for (char *kv = strtok_r(arg, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        if (strncmp(kv, "subnet=", 7) == 0)
            f->subnet_id = kv + 7;
        else if (strncmp(kv, "ip-address=", 11) == 0)
            f->ip_address = kv + 11;
        else
            return cli_usage_error("invalid --fixed-ip part '%s': give "
                                   "subnet=SUBNET,ip-address=IP", kv);
    }
    if (!*f->subnet_id && !*f->ip_address)
        return cli_usage_error("--fixed-ip needs subnet=SUBNET and/or ip-address=IP");
    return 0;
}

static int
port_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "port create";
    static const struct option opts[] = {
        { "network", required_argument, NULL, OPT_NETWORK },
        { "fixed-ip", required_argument, NULL, OPT_FIXED_IP },
        { "mac-address", required_argument, NULL, OPT_MAC },
        { "security-group", required_argument, NULL, OPT_GROUP },
        { "no-security-group", no_argument, NULL, OPT_NO_GROUP },
        { "disable-port-security", no_argument, NULL, OPT_DISABLE_PS },
        { "device-owner", required_argument, NULL, OPT_OWNER },
        { "device-id", required_argument, NULL, OPT_DEVICE },
        { "host", required_argument, NULL, OPT_HOST },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        {},
    };
    Yun__PortCreateRequest q = YUN__PORT_CREATE_REQUEST__INIT;
    Yun__FixedIp ips[LIST_MAX];
    Yun__FixedIp *ip_ptrs[LIST_MAX];
    char *groups[LIST_MAX];
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_NETWORK:
            q.network = optarg;
            break;
        case OPT_FIXED_IP:
            if (q.n_fixed_ips == LIST_MAX)
                return cli_usage_error("too many --fixed-ip options");
            if ((r = parse_fixed_ip(optarg, &ips[q.n_fixed_ips])))
                return r;
            ip_ptrs[q.n_fixed_ips] = &ips[q.n_fixed_ips];
            q.n_fixed_ips++;
            break;
        case OPT_MAC:
            q.mac_address = optarg;
            break;
        case OPT_GROUP:
            if (q.n_security_groups == LIST_MAX)
                return cli_usage_error("too many --security-group options");
            groups[q.n_security_groups++] = optarg;
            break;
        case OPT_NO_GROUP:
            q.no_security_groups = true;
            break;
        case OPT_DISABLE_PS:
            q.disable_port_security = true;
            break;
        case OPT_OWNER:
            q.device_owner = optarg;
            break;
        case OPT_DEVICE:
            q.device_id = optarg;
            break;
        case OPT_HOST:
            q.host_id = optarg;
            break;
        case OPT_DESCRIPTION:
            q.description = optarg;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one port name", cmd);
    if (!*q.network)
        return cli_usage_error("'%s' needs --network NETWORK", cmd);
    q.name = argv[optind];
    q.fixed_ips = ip_ptrs;
    q.security_groups = groups;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_PORT_CREATE, &q.base, &yun__port_reply__descriptor, &m);
    return r ? r : print_port(cli, m);
}

static int
port_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "port list";
    static const struct option opts[] = {
        { "network", required_argument, NULL, OPT_NETWORK },
        { "server", required_argument, NULL, OPT_DEVICE },
        { "device-id", required_argument, NULL, OPT_DEVICE },
        { "all-projects", no_argument, NULL, OPT_ALL },
        {},
    };
    Yun__PortListRequest q = YUN__PORT_LIST_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_NETWORK)
            q.network = optarg;
        else if (c == OPT_DEVICE)
            q.device_id = optarg;
        else if (c == OPT_ALL)
            q.all_projects = true;
        else
            return cli_option_error(cmd, c, argv);
    }
    if (optind != argc)
        return cli_usage_error("'%s' takes no arguments, only options", cmd);
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_PORT_LIST, &q.base, &yun__port_list_reply__descriptor, &m);
    if (r)
        return r;
    const Yun__PortListReply *y = (const Yun__PortListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t i = 0; i < y->n_ports; i++)
        port_row(t, y->ports[i], cli->out.format != CLI_FORMAT_TABLE);
    return cli_print(cli, t);
}

static int
port_show(struct cli *cli, int argc, char **argv)
{
    Yun__PortRef q = YUN__PORT_REF__INIT;
    int r = no_options("port show", argc, argv);
    return r ? r : each_ref(cli, argc, argv, "port show", false, YUN__OP__OP_PORT_SHOW,
                            &q.base, &q.port, &yun__port_reply__descriptor, print_port);
}

static int
port_delete(struct cli *cli, int argc, char **argv)
{
    Yun__PortRef q = YUN__PORT_REF__INIT;
    int r = no_options("port delete", argc, argv);
    return r ? r : each_ref(cli, argc, argv, "port delete", true, YUN__OP__OP_PORT_DELETE,
                            &q.base, &q.port, &yun__port_reply__descriptor, NULL);
}

static int
port_set(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "port set";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        { "security-group", required_argument, NULL, OPT_GROUP },
        { "no-security-group", no_argument, NULL, OPT_NO_GROUP },
        { "enable-port-security", no_argument, NULL, OPT_ENABLE_PS },
        { "disable-port-security", no_argument, NULL, OPT_DISABLE_PS },
        { "enable", no_argument, NULL, OPT_ENABLE },
        { "disable", no_argument, NULL, OPT_DISABLE },
        {},
    };
    Yun__PortUpdateRequest q = YUN__PORT_UPDATE_REQUEST__INIT;
    char *groups[LIST_MAX];
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_NAME:
            q.name = optarg;
            break;
        case OPT_DESCRIPTION:
            q.set_description = true;
            q.description = optarg;
            break;
        case OPT_GROUP:
            if (q.n_security_groups == LIST_MAX)
                return cli_usage_error("too many --security-group options");
            q.set_security_groups = true;
            groups[q.n_security_groups++] = optarg;
            break;
        case OPT_NO_GROUP:
            q.set_security_groups = true;
            break;
        case OPT_ENABLE_PS:
        case OPT_DISABLE_PS:
            q.set_port_security = true;
            q.port_security_enabled = c == OPT_ENABLE_PS;
            break;
        case OPT_ENABLE:
        case OPT_DISABLE:
            q.set_admin_state = true;
            q.admin_state_up = c == OPT_ENABLE;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    q.security_groups = groups;
    return each_ref(cli, argc, argv, cmd, false, YUN__OP__OP_PORT_UPDATE, &q.base, &q.port,
                    &yun__port_reply__descriptor, print_port);
}

const struct cli_verb cli_port_verbs[] = {
    { "create", port_create,
      "NAME --network NETWORK [--fixed-ip subnet=SUBNET,ip-address=IP]... [--mac-address M] "
      "[--security-group G]... [--no-security-group] [--disable-port-security] "
      "[--device-id ID] [--device-owner O] [--host HOST] [--description D]",
      "Create a port (--device-owner and --host: admins)" },
    { "list", port_list, "[--network NETWORK] [--server ID|--device-id ID] [--all-projects]",
      "List the ports" },
    { "show", port_show, "PORT", "Show a port" },
    { "set", port_set,
      "PORT [--name N] [--description D] [--security-group G]... [--no-security-group] "
      "[--enable-port-security|--disable-port-security] [--enable|--disable]",
      "Change a port" },
    { "delete", port_delete, "PORT...", "Delete ports, giving back their addresses" },
    {},
};
