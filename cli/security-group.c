/* SPDX-License-Identifier: Apache-2.0
 * security-group.c: `yun security group create|list|show|set|delete` and
 * `yun security group rule create|list|delete`: security groups and their
 * allow rules (proto/network.proto, docs/networks.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "cli.h"
#include "util.h"
#include "network.pb-c.h"

static void
message_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_message_ _cleanup_(message_freep)

enum {
    OPT_ALL = 0x100,
    OPT_NAME,
    OPT_DESCRIPTION,
    OPT_INGRESS,
    OPT_EGRESS,
    OPT_PROTOCOL,
    OPT_DST_PORT,
    OPT_ICMP_TYPE,
    OPT_ICMP_CODE,
    OPT_REMOTE_IP,
    OPT_REMOTE_GROUP,
};

/* "80" or "8000:8080"; the scheduler checks the values. */
static int
parse_ports(const char *s, uint32_t *min, uint32_t *max)
{
    const char *colon = strchr(s, ':');
    if (!colon) {
        if (yun_safe_atou32(s, min) < 0)
            return cli_usage_error("invalid --dst-port '%s': give N or N:M", s);
        *max = *min;
        return 0;
    }
    char first[16];
    if ((size_t)(colon - s) >= sizeof first)
        return cli_usage_error("invalid --dst-port '%s': give N or N:M", s);
    memcpy(first, s, (size_t)(colon - s));
    first[colon - s] = '\0';
    if (yun_safe_atou32(first, min) < 0 || yun_safe_atou32(colon + 1, max) < 0)
        return cli_usage_error("invalid --dst-port '%s': give N or N:M", s);
    return 0;
}

static void
rule_row(struct cli_table *t, const Yun__SecurityGroupRule *r)
{
    cli_table_row(t);
    cli_table_str(t, "id", r->id);
    cli_table_str(t, "security_group_id", r->security_group_id);
    cli_table_str(t, "direction", r->direction);
    cli_table_str(t, "ethertype", r->ethertype);
    cli_table_str(t, "protocol", *r->protocol ? r->protocol : "any");
    char range[32] = "";
    if (r->has_port_range && strcmp(r->protocol, "icmp") == 0) {
        if (r->has_icmp_code)
            snprintf(range, sizeof range, "type %u code %u", r->port_range_min,
                     r->port_range_max);
        else
            snprintf(range, sizeof range, "type %u", r->port_range_min);
    } else if (r->has_port_range) {
        snprintf(range, sizeof range, "%u:%u", r->port_range_min, r->port_range_max);
    }
    cli_table_str(t, "port_range", range);
    cli_table_str(t, "remote_ip_prefix", r->remote_ip_prefix);
    cli_table_str(t, "remote_group_id", r->remote_group_id);
    cli_table_str(t, "description", r->description);
}

static void
group_row(struct cli_table *t, const Yun__SecurityGroupRecord *g, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", g->id);
    cli_table_str(t, "name", g->name);
    cli_table_str(t, "description", g->description);
    cli_table_str(t, "project", g->project);
    if (!full)
        return;
    /* One line per rule, in the style of 'openstack security group show'. */
    char **lines = calloc(g->n_rules + 1, sizeof *lines);
    if (!lines)
        abort();
    for (size_t i = 0; i < g->n_rules; i++) {
        const Yun__SecurityGroupRule *r = g->rules[i];
        char range[40] = "";
        if (r->has_port_range)
            snprintf(range, sizeof range, " %s=%u:%u",
                     strcmp(r->protocol, "icmp") == 0 ? "type_code" : "ports",
                     r->port_range_min, r->port_range_max);
        if (asprintf(&lines[i], "%s %s%s%s%s%s%s id=%s", r->direction,
                     *r->protocol ? r->protocol : "any", range,
                     *r->remote_ip_prefix ? " from=" : "", r->remote_ip_prefix,
                     *r->remote_group_id ? " group=" : "", r->remote_group_id, r->id) < 0)
            abort();
    }
    cli_table_strv(t, "rules", lines, g->n_rules);
    for (size_t i = 0; i < g->n_rules; i++)
        free(lines[i]);
    free(lines);
    cli_table_time(t, "created_at", g->created_us);
    cli_table_time(t, "updated_at", g->updated_us);
}

static int
print_group(struct cli *cli, const Yun__SecurityGroupRecord *g)
{
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    group_row(t, g, true);
    return cli_print(cli, t);
}

static int
group_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "security group create";
    static const struct option opts[] = {
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        {},
    };
    Yun__SecurityGroupCreateRequest q = YUN__SECURITY_GROUP_CREATE_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_DESCRIPTION)
            return cli_option_error(cmd, c, argv);
        q.description = optarg;
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one group name", cmd);
    q.name = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SECURITY_GROUP_CREATE, &q.base,
                     &yun__security_group_reply__descriptor, &m);
    return r ? r : print_group(cli, ((Yun__SecurityGroupReply *)m)->security_group);
}

static int
group_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "security group list";
    static const struct option opts[] = { { "all-projects", no_argument, NULL, OPT_ALL }, {} };
    Yun__SecurityGroupListRequest q = YUN__SECURITY_GROUP_LIST_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_ALL)
            return cli_option_error(cmd, c, argv);
        q.all_projects = true;
    }
    if (optind != argc)
        return cli_usage_error("'%s' takes no arguments, only options", cmd);
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SECURITY_GROUP_LIST, &q.base,
                     &yun__security_group_list_reply__descriptor, &m);
    if (r)
        return r;
    const Yun__SecurityGroupListReply *y = (const Yun__SecurityGroupListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t i = 0; i < y->n_security_groups; i++)
        group_row(t, y->security_groups[i], cli->out.format != CLI_FORMAT_TABLE);
    return cli_print(cli, t);
}

static int
group_ref_call(struct cli *cli, int argc, char **argv, const char *cmd, Yun__Op op, bool many)
{
    static const struct option opts[] = { {} };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0)
        return cli_option_error(cmd, c, argv);
    if (optind == argc || (!many && optind + 1 != argc))
        return cli_usage_error("'%s' takes %s", cmd,
                               many ? "one or more group names or ids" : "one group name or id");
    Yun__SecurityGroupRef q = YUN__SECURITY_GROUP_REF__INIT;
    int failed = 0;
    for (int i = optind; i < argc; i++) {
        q.security_group = argv[i];
        _cleanup_message_ ProtobufCMessage *m = NULL;
        int r = cli_call(cli, op, &q.base, &yun__security_group_reply__descriptor, &m);
        if (r == 0 && !many)
            r = print_group(cli, ((Yun__SecurityGroupReply *)m)->security_group);
        failed |= r;
    }
    return failed ? 1 : 0;
}

static int
group_show(struct cli *cli, int argc, char **argv)
{
    return group_ref_call(cli, argc, argv, "security group show",
                          YUN__OP__OP_SECURITY_GROUP_SHOW, false);
}

static int
group_delete(struct cli *cli, int argc, char **argv)
{
    return group_ref_call(cli, argc, argv, "security group delete",
                          YUN__OP__OP_SECURITY_GROUP_DELETE, true);
}

static int
group_set(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "security group set";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        {},
    };
    Yun__SecurityGroupUpdateRequest q = YUN__SECURITY_GROUP_UPDATE_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_NAME) {
            q.name = optarg;
        } else if (c == OPT_DESCRIPTION) {
            q.set_description = true;
            q.description = optarg;
        } else {
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one group name or id", cmd);
    q.security_group = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SECURITY_GROUP_UPDATE, &q.base,
                     &yun__security_group_reply__descriptor, &m);
    return r ? r : print_group(cli, ((Yun__SecurityGroupReply *)m)->security_group);
}

static int
rule_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "security group rule create";
    static const struct option opts[] = {
        { "ingress", no_argument, NULL, OPT_INGRESS },
        { "egress", no_argument, NULL, OPT_EGRESS },
        { "protocol", required_argument, NULL, OPT_PROTOCOL },
        { "dst-port", required_argument, NULL, OPT_DST_PORT },
        { "icmp-type", required_argument, NULL, OPT_ICMP_TYPE },
        { "icmp-code", required_argument, NULL, OPT_ICMP_CODE },
        { "remote-ip", required_argument, NULL, OPT_REMOTE_IP },
        { "remote-group", required_argument, NULL, OPT_REMOTE_GROUP },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        {},
    };
    Yun__SecurityGroupRuleCreateRequest q = YUN__SECURITY_GROUP_RULE_CREATE_REQUEST__INIT;
    q.direction = (char *)"ingress";
    bool ports = false, type = false;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_INGRESS:
            q.direction = (char *)"ingress";
            break;
        case OPT_EGRESS:
            q.direction = (char *)"egress";
            break;
        case OPT_PROTOCOL:
            q.protocol = optarg;
            break;
        case OPT_DST_PORT:
            if ((r = parse_ports(optarg, &q.port_range_min, &q.port_range_max)))
                return r;
            ports = true;
            break;
        case OPT_ICMP_TYPE:
            if (yun_safe_atou32(optarg, &q.port_range_min) < 0)
                return cli_usage_error("invalid --icmp-type '%s': give a number", optarg);
            type = true;
            break;
        case OPT_ICMP_CODE:
            if (yun_safe_atou32(optarg, &q.port_range_max) < 0)
                return cli_usage_error("invalid --icmp-code '%s': give a number", optarg);
            q.has_icmp_code = true;
            break;
        case OPT_REMOTE_IP:
            q.remote_ip_prefix = optarg;
            break;
        case OPT_REMOTE_GROUP:
            q.remote_group = optarg;
            break;
        case OPT_DESCRIPTION:
            q.description = optarg;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one group name or id", cmd);
    if (ports && (type || q.has_icmp_code))
        return cli_usage_error("give --dst-port or --icmp-type/--icmp-code, not both");
    q.has_port_range = ports || type;
    q.security_group = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_SECURITY_GROUP_RULE_CREATE, &q.base,
                 &yun__security_group_rule_reply__descriptor, &m);
    if (r)
        return r;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    rule_row(t, ((Yun__SecurityGroupRuleReply *)m)->rule);
    return cli_print(cli, t);
}

static int
rule_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "security group rule list";
    static const struct option opts[] = { { "all-projects", no_argument, NULL, OPT_ALL }, {} };
    Yun__SecurityGroupRuleListRequest q = YUN__SECURITY_GROUP_RULE_LIST_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_ALL)
            return cli_option_error(cmd, c, argv);
        q.all_projects = true;
    }
    if (argc - optind > 1)
        return cli_usage_error("'%s' takes at most one group name or id", cmd);
    if (optind < argc)
        q.security_group = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SECURITY_GROUP_RULE_LIST, &q.base,
                     &yun__security_group_rule_list_reply__descriptor, &m);
    if (r)
        return r;
    const Yun__SecurityGroupRuleListReply *y = (const Yun__SecurityGroupRuleListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t i = 0; i < y->n_rules; i++)
        rule_row(t, y->rules[i]);
    return cli_print(cli, t);
}

static int
rule_delete(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "security group rule delete";
    static const struct option opts[] = { {} };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0)
        return cli_option_error(cmd, c, argv);
    if (optind == argc)
        return cli_usage_error("'%s' takes one or more rule ids", cmd);
    Yun__SecurityGroupRuleRef q = YUN__SECURITY_GROUP_RULE_REF__INIT;
    int failed = 0;
    for (int i = optind; i < argc; i++) {
        q.rule = argv[i];
        _cleanup_message_ ProtobufCMessage *m = NULL;
        failed |= cli_call(cli, YUN__OP__OP_SECURITY_GROUP_RULE_DELETE, &q.base,
                           &yun__security_group_rule_reply__descriptor, &m);
    }
    return failed ? 1 : 0;
}

static const struct cli_verb rule_verbs[] = {
    { "create", rule_create,
      "GROUP [--ingress|--egress] [--protocol tcp|udp|icmp|any|N] [--dst-port N[:M]] "
      "[--icmp-type T [--icmp-code C]] [--remote-ip CIDR|--remote-group G] [--description D]",
      "Add an allow rule to a group (ingress by default)" },
    { "list", rule_list, "[GROUP] [--all-projects]", "List the rules of groups" },
    { "delete", rule_delete, "RULE-ID...", "Delete rules" },
    {},
};

static const struct cli_verb group_verbs[] = {
    { "create", group_create, "NAME [--description D]", "Create a security group" },
    { "list", group_list, "[--all-projects]", "List the security groups" },
    { "show", group_show, "GROUP", "Show a security group and its rules" },
    { "set", group_set, "GROUP [--name N] [--description D]", "Change a security group" },
    { "delete", group_delete, "GROUP...", "Delete security groups (not 'default', not in use)" },
    { "rule", NULL, NULL, "Rules of security groups", NULL, rule_verbs },
    {},
};

const struct cli_verb cli_security_verbs[] = {
    { "group", NULL, NULL, "Security groups and their rules", NULL, group_verbs },
    {},
};
