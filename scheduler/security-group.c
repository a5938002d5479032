/* SPDX-License-Identifier: Apache-2.0
 * security-group.c: security groups and their rules (Neutron's model).
 * A group is a project's named list of allow rules (SecurityGroupRecord,
 * rules inside, in "security_groups" by id); a port's traffic is allowed
 * when a rule of one of its groups allows it. Every project has a group
 * named "default", made on its first network operation (or by the
 * internal API when it makes an instance port): egress to anywhere, and
 * ingress from ports of the same group. "default_security_groups" maps a
 * project to it. Groups in use by ports, or named as the remote group of
 * another group's rule, cannot be deleted; "default" never can (it goes
 * with its project).
 *
 * Neighbours: port.c (ports name groups), network.c (look-ups, hook). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "ipam.h"
#include "log.h"
#include "network-priv.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"

YUN_LOG_MODULE("sched.secgroup");

static void
msg_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_msg_ _cleanup_(msg_freep)

int
net_default_group(struct sched *s, struct yun_txn *txn, const char *project,
                  char ret[YUN_UUID_STR_SIZE])
{
    if (!project || !*project || strlen(project) > NET_NAME_MAX)
        return YUN_E_INVALID;
    const void *v;
    size_t vs;
    int r = yun_txn_get(txn, SCHED_DB_DEFAULT_SECURITY_GROUPS, project, strlen(project), &v,
                        &vs);
    if (r == 0) {
        if (vs == 0 || vs >= YUN_UUID_STR_SIZE)
            return -EBADMSG;
        memcpy(ret, v, vs);
        ret[vs] = '\0';
        return 0;
    }
    if (r != -ENOENT)
        return r;
    char id[YUN_UUID_STR_SIZE], egress_id[YUN_UUID_STR_SIZE], ingress_id[YUN_UUID_STR_SIZE];
    if ((r = yun_uuid_new(id)) < 0 || (r = yun_uuid_new(egress_id)) < 0 ||
        (r = yun_uuid_new(ingress_id)) < 0)
        return r;
    uint64_t now = yun_wall_us();
    Yun__SecurityGroupRule egress = YUN__SECURITY_GROUP_RULE__INIT;
    egress.id = egress_id;
    egress.security_group_id = id;
    egress.direction = (char *)"egress";
    egress.ethertype = (char *)"IPv4";
    egress.project = (char *)project;
    egress.created_us = now;
    Yun__SecurityGroupRule ingress = egress;
    ingress.id = ingress_id;
    ingress.direction = (char *)"ingress";
    ingress.remote_group_id = id;
    Yun__SecurityGroupRule *rules[] = { &egress, &ingress };
    Yun__SecurityGroupRecord g = YUN__SECURITY_GROUP_RECORD__INIT;
    g.id = id;
    g.name = (char *)NET_DEFAULT_GROUP;
    g.project = (char *)project;
    g.description = (char *)"Default security group";
    g.rules = rules;
    g.n_rules = 2;
    g.created_us = now;
    g.updated_us = now;
    r = net_store(txn, &net_kind_group, &g.base);
    if (r == 0)
        r = yun_txn_put(txn, SCHED_DB_DEFAULT_SECURITY_GROUPS, project, strlen(project), id,
                        strlen(id));
    if (r < 0)
        return r;
    log_debug("default security group made project=%s group=%s", project, id);
    memcpy(ret, id, sizeof id);
    return 0;
}

static int
group_reply(struct sched_call *call, const Yun__SecurityGroupRecord *g)
{
    Yun__SecurityGroupReply y = YUN__SECURITY_GROUP_REPLY__INIT;
    y.security_group = (Yun__SecurityGroupRecord *)g;
    return sched_call_reply(call, &y.base);
}

static int
ensure_caller_default(struct sched_call *call, struct yun_txn *txn)
{
    char gid[YUN_UUID_STR_SIZE];
    if (!call->project || !*call->project)
        return 0;
    return net_default_group(call->s, txn, call->project, gid);
}

static int
check_owner(struct sched_call *call, const Yun__SecurityGroupRecord *g)
{
    if (call->is_admin || strcmp(g->project, call->project) == 0)
        return 0;
    return sched_call_error(call, YUN_E_DENIED, "Security group '%s' belongs to another "
                            "project.", g->id);
}

int
sched_security_group_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SecurityGroupCreateRequest *q = (const Yun__SecurityGroupCreateRequest *)req;
    int r = net_check_name(call, "Security group", q->name, true);
    if (r == 0)
        r = net_check_description(call, q->description);
    if (r < 0)
        return r;
    if (!call->project || !*call->project)
        return sched_call_error(call, YUN_E_DENIED,
                                "Security groups belong to projects: log in to one.");
    if (strcmp(q->name, NET_DEFAULT_GROUP) == 0)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "Every project has its own 'default' group already.");
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r == 0)
        r = ensure_caller_default(call, txn);
    if (r < 0)
        return r;
    size_t count;
    r = net_count_project(txn, &net_kind_group, call->project, &count);
    if (r < 0)
        return r;
    if (count >= NET_GROUPS_PER_PROJECT)
        return sched_call_error(call, -ENOSPC, "A project may have at most %d security groups.",
                                NET_GROUPS_PER_PROJECT);
    char id[YUN_UUID_STR_SIZE], rid[YUN_UUID_STR_SIZE];
    if ((r = yun_uuid_new(id)) < 0 || (r = yun_uuid_new(rid)) < 0)
        return r;
    uint64_t now = yun_wall_us();
    /* As Neutron: a new group lets its ports send anywhere, and receives
     * nothing until rules say so. */
    Yun__SecurityGroupRule egress = YUN__SECURITY_GROUP_RULE__INIT;
    egress.id = rid;
    egress.security_group_id = id;
    egress.direction = (char *)"egress";
    egress.ethertype = (char *)"IPv4";
    egress.project = (char *)call->project;
    egress.created_us = now;
    Yun__SecurityGroupRule *rules[] = { &egress };
    Yun__SecurityGroupRecord g = YUN__SECURITY_GROUP_RECORD__INIT;
    g.id = id;
    g.name = q->name;
    g.project = (char *)call->project;
    g.description = q->description;
    g.rules = rules;
    g.n_rules = 1;
    g.created_us = now;
    g.updated_us = now;
    r = net_store(txn, &net_kind_group, &g.base);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "security_group.create", id, NULL);
    if (r < 0)
        return r;
    return group_reply(call, &g);
}

struct group_filter {
    const struct sched_call *call;
    bool all;
};

static bool
keep_visible_group(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    struct group_filter *f = data;
    return net_visible(txn, f->call, &net_kind_group, m, f->all);
}

/* Lists (and shows) make the caller's default group first: a write
 * transaction, committed only when it made one. */
static int
begin_with_default(struct sched_call *call, struct yun_txn **ret)
{
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r == 0)
        r = ensure_caller_default(call, txn);
    if (r == 0)
        r = yun_txn_commit(TAKE_PTR(txn));
    if (r == 0)
        r = yun_txn_begin(call->s->store, false, ret);
    return r;
}

int
sched_security_group_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SecurityGroupListRequest *q = (const Yun__SecurityGroupListRequest *)req;
    if (q->all_projects && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED,
                                "Only admins may list all projects' objects.");
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin_with_default(call, &txn);
    if (r < 0)
        return r;
    struct group_filter f = { .call = call, .all = q->all_projects };
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    r = net_collect(txn, &net_kind_group, keep_visible_group, &f, &items, &n);
    if (r < 0)
        return r;
    Yun__SecurityGroupListReply y = YUN__SECURITY_GROUP_LIST_REPLY__INIT;
    y.security_groups = (Yun__SecurityGroupRecord **)items;
    y.n_security_groups = n;
    r = sched_call_reply(call, &y.base);
    net_free_all(items, n);
    return r;
}

int
sched_security_group_show(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SecurityGroupRef *q = (const Yun__SecurityGroupRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin_with_default(call, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_group, q->security_group, &m);
    if (r < 0)
        return r;
    return group_reply(call, (Yun__SecurityGroupRecord *)m);
}

int
sched_security_group_update(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SecurityGroupUpdateRequest *q = (const Yun__SecurityGroupUpdateRequest *)req;
    int r = 0;
    if (*q->name)
        r = net_check_name(call, "Security group", q->name, true);
    if (r == 0 && q->set_description)
        r = net_check_description(call, q->description);
    if (r < 0)
        return r;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r == 0)
        r = ensure_caller_default(call, txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_group, q->security_group, &m);
    if (r < 0)
        return r;
    Yun__SecurityGroupRecord g = *(Yun__SecurityGroupRecord *)m;
    r = check_owner(call, &g);
    if (r < 0)
        return r;
    if (*q->name && strcmp(q->name, g.name) != 0 &&
        (strcmp(g.name, NET_DEFAULT_GROUP) == 0 || strcmp(q->name, NET_DEFAULT_GROUP) == 0))
        return sched_call_error(call, YUN_E_CONFLICT,
                                "The 'default' group keeps its name, and no other takes it.");
    if (*q->name)
        g.name = q->name;
    if (q->set_description)
        g.description = q->description;
    g.updated_us = yun_wall_us();
    r = net_store(txn, &net_kind_group, &g.base);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "security_group.update", g.id, NULL);
    if (r < 0)
        return r;
    return group_reply(call, &g);
}

static bool
keep_using_group(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    const Yun__PortRecord *p = (const Yun__PortRecord *)m;
    for (size_t i = 0; i < p->n_security_groups; i++)
        if (strcmp(p->security_groups[i], data) == 0)
            return true;
    return false;
}

static bool
keep_referring(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    const Yun__SecurityGroupRecord *g = (const Yun__SecurityGroupRecord *)m;
    if (strcmp(g->id, data) == 0)
        return false;
    for (size_t i = 0; i < g->n_rules; i++)
        if (strcmp(g->rules[i]->remote_group_id, data) == 0)
            return true;
    return false;
}

int
sched_security_group_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SecurityGroupRef *q = (const Yun__SecurityGroupRef *)req;
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_group, q->security_group, &m);
    if (r < 0)
        return r;
    const Yun__SecurityGroupRecord *g = (const Yun__SecurityGroupRecord *)m;
    r = check_owner(call, g);
    if (r < 0)
        return r;
    if (strcmp(g->name, NET_DEFAULT_GROUP) == 0)
        return sched_call_error(call, YUN_E_CONFLICT,
                                "A project's 'default' group goes only with its project.");
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    r = net_collect(txn, &net_kind_port, keep_using_group, g->id, &items, &n);
    net_free_all(items, n);
    if (r < 0)
        return r;
    if (n)
        return sched_call_error(call, YUN_E_INUSE,
                                "Security group '%s' is used by %zu port%s.", g->name, n,
                                n == 1 ? "" : "s");
    r = net_collect(txn, &net_kind_group, keep_referring, g->id, &items, &n);
    net_free_all(items, n);
    if (r < 0)
        return r;
    if (n)
        return sched_call_error(call, YUN_E_INUSE,
                                "Security group '%s' is the remote group of rules of %zu other "
                                "group%s.", g->name, n, n == 1 ? "" : "s");
    r = yun_txn_del(txn, SCHED_DB_SECURITY_GROUPS, g->id, strlen(g->id));
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "security_group.delete", g->id, NULL);
    if (r < 0)
        return r;
    return group_reply(call, g);
}

/* --- rules ------------------------------------------------------------------------ */

/* "tcp", "udp", "icmp", "" (any) or a number 0..255 in canonical form. */
static int
parse_protocol(const char *s, char out[8])
{
    if (!*s || strcmp(s, "any") == 0) {
        out[0] = '\0';
        return 0;
    }
    if (strcmp(s, "tcp") == 0 || strcmp(s, "udp") == 0 || strcmp(s, "icmp") == 0) {
        snprintf(out, 8, "%s", s);
        return 0;
    }
    uint32_t v;
    if (strlen(s) > 3 || yun_safe_atou32(s, &v) < 0 || v > 255)
        return -EINVAL;
    /* The well-known numbers become names, so that duplicates compare. */
    snprintf(out, 8, "%s", v == 6 ? "tcp" : v == 17 ? "udp" : v == 1 ? "icmp" : "");
    if (!out[0])
        snprintf(out, 8, "%u", v);
    return 0;
}

static bool
same_rule(const Yun__SecurityGroupRule *a, const Yun__SecurityGroupRule *b)
{
    return strcmp(a->direction, b->direction) == 0 && strcmp(a->protocol, b->protocol) == 0 &&
           a->has_port_range == b->has_port_range && a->has_icmp_code == b->has_icmp_code &&
           (!a->has_port_range || (a->port_range_min == b->port_range_min &&
                                   a->port_range_max == b->port_range_max)) &&
           strcmp(a->remote_ip_prefix, b->remote_ip_prefix) == 0 &&
           strcmp(a->remote_group_id, b->remote_group_id) == 0;
}

static int
rule_reply(struct sched_call *call, const Yun__SecurityGroupRule *rule)
{
    Yun__SecurityGroupRuleReply y = YUN__SECURITY_GROUP_RULE_REPLY__INIT;
    y.rule = (Yun__SecurityGroupRule *)rule;
    return sched_call_reply(call, &y.base);
}

static int
notify_group(struct sched *s, struct yun_txn *txn, const char *gid, struct net_hosts *h)
{
    char *ids[] = { (char *)gid };
    return net_hosts_of_groups(txn, ids, 1, h);
}

int
sched_security_group_rule_create(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SecurityGroupRuleCreateRequest *q =
        (const Yun__SecurityGroupRuleCreateRequest *)req;
    int r = net_check_description(call, q->description);
    if (r < 0)
        return r;
    if (strcmp(q->direction, "ingress") != 0 && strcmp(q->direction, "egress") != 0)
        return sched_call_error(call, YUN_E_INVALID,
                                "Direction '%.32s' is neither ingress nor egress.",
                                q->direction);
    char proto[8];
    if (parse_protocol(q->protocol, proto) < 0)
        return sched_call_error(call, YUN_E_INVALID,
                                "Protocol '%.32s' is not tcp, udp, icmp, any or a number from "
                                "0 to 255.", q->protocol);
    bool ports = strcmp(proto, "tcp") == 0 || strcmp(proto, "udp") == 0;
    bool icmp = strcmp(proto, "icmp") == 0;
    if (q->has_port_range && ports) {
        if (q->port_range_min < 1 || q->port_range_min > 65535 || q->port_range_max < 1 ||
            q->port_range_max > 65535)
            return sched_call_error(call, YUN_E_INVALID,
                                    "Ports are from 1 to 65535, not %u:%u.", q->port_range_min,
                                    q->port_range_max);
        if (q->port_range_min > q->port_range_max)
            return sched_call_error(call, YUN_E_INVALID,
                                    "The port range %u:%u ends before it starts.",
                                    q->port_range_min, q->port_range_max);
        if (q->has_icmp_code)
            return sched_call_error(call, YUN_E_INVALID, "Only icmp rules take a code.");
    } else if (q->has_port_range && icmp) {
        if (q->port_range_min > 255)
            return sched_call_error(call, YUN_E_INVALID,
                                    "An ICMP type is from 0 to 255, not %u.", q->port_range_min);
        if (q->has_icmp_code && q->port_range_max > 255)
            return sched_call_error(call, YUN_E_INVALID,
                                    "An ICMP code is from 0 to 255, not %u.", q->port_range_max);
        if (!q->has_icmp_code && q->port_range_max)
            return sched_call_error(call, YUN_E_INVALID, "An ICMP rule has a type and a code, "
                                    "not a port range.");
    } else if (q->has_port_range) {
        return sched_call_error(call, YUN_E_INVALID,
                                "Protocol '%s' has no ports: only tcp and udp rules take a "
                                "port range, icmp rules a type and code.",
                                *proto ? proto : "any");
    } else if (q->has_icmp_code) {
        return sched_call_error(call, YUN_E_INVALID, "An ICMP code needs an ICMP type.");
    }
    if (*q->remote_ip_prefix && *q->remote_group)
        return sched_call_error(call, YUN_E_INVALID,
                                "Give a remote address prefix or a remote group, not both.");
    char prefix[IPAM_CIDR_STR_SIZE] = "";
    if (*q->remote_ip_prefix) {
        struct ipam_cidr c;
        if (ipam_parse_cidr(q->remote_ip_prefix, false, &c) < 0)
            return sched_call_error(call, YUN_E_INVALID,
                                    "Remote prefix '%.32s' is not an IPv4 CIDR.",
                                    q->remote_ip_prefix);
        ipam_format_cidr(&c, prefix);
    }

    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    r = yun_txn_begin(call->s->store, true, &txn);
    if (r == 0)
        r = ensure_caller_default(call, txn);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *m = NULL;
    r = net_find(call, txn, &net_kind_group, q->security_group, &m);
    if (r < 0)
        return r;
    Yun__SecurityGroupRecord *g = (Yun__SecurityGroupRecord *)m;
    r = check_owner(call, g);
    if (r < 0)
        return r;
    _cleanup_msg_ ProtobufCMessage *rm = NULL;
    if (*q->remote_group) {
        r = net_find(call, txn, &net_kind_group, q->remote_group, &rm);
        if (r < 0)
            return r;
    }
    if (g->n_rules >= NET_RULES_PER_GROUP)
        return sched_call_error(call, -ENOSPC, "A security group has at most %d rules.",
                                NET_RULES_PER_GROUP);
    char id[YUN_UUID_STR_SIZE];
    r = yun_uuid_new(id);
    if (r < 0)
        return r;
    Yun__SecurityGroupRule rule = YUN__SECURITY_GROUP_RULE__INIT;
    rule.id = id;
    rule.security_group_id = g->id;
    rule.direction = q->direction;
    rule.ethertype = (char *)"IPv4";
    rule.protocol = proto;
    rule.has_port_range = q->has_port_range;
    rule.port_range_min = q->has_port_range ? q->port_range_min : 0;
    rule.port_range_max = q->has_port_range ? q->port_range_max : 0;
    rule.has_icmp_code = q->has_icmp_code;
    rule.remote_ip_prefix = prefix;
    rule.remote_group_id = rm ? ((Yun__SecurityGroupRecord *)rm)->id : (char *)"";
    rule.project = g->project;
    rule.description = q->description;
    rule.created_us = yun_wall_us();
    for (size_t i = 0; i < g->n_rules; i++)
        if (same_rule(g->rules[i], &rule))
            return sched_call_error(call, YUN_E_CONFLICT,
                                    "Security group '%s' has this rule already (%s).", g->name,
                                    g->rules[i]->id);
    _cleanup_free_ Yun__SecurityGroupRule **rules = calloc(g->n_rules + 1, sizeof *rules);
    if (!rules)
        return -ENOMEM;
    if (g->n_rules)
        memcpy(rules, g->rules, g->n_rules * sizeof *rules);
    rules[g->n_rules] = &rule;
    Yun__SecurityGroupRecord view = *g;
    view.rules = rules;
    view.n_rules = g->n_rules + 1;
    view.updated_us = rule.created_us;
    struct net_hosts hosts = { 0 };
    r = net_store(txn, &net_kind_group, &view.base);
    if (r == 0)
        r = notify_group(call->s, txn, g->id, &hosts);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "security_group_rule.create", id, NULL);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    net_hosts_notify(call->s, &hosts);
    return rule_reply(call, &rule);
}

static bool
keep_with_rule(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    const Yun__SecurityGroupRecord *g = (const Yun__SecurityGroupRecord *)m;
    for (size_t i = 0; i < g->n_rules; i++)
        if (strcmp(g->rules[i]->id, data) == 0)
            return true;
    return false;
}

int
sched_security_group_rule_delete(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SecurityGroupRuleRef *q = (const Yun__SecurityGroupRuleRef *)req;
    if (!yun_uuid_is_valid(q->rule))
        return sched_call_error(call, -ENOENT, "Security group rule '%.64s' not found.",
                                q->rule);
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = yun_txn_begin(call->s->store, true, &txn);
    if (r < 0)
        return r;
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    r = net_collect(txn, &net_kind_group, keep_with_rule, q->rule, &items, &n);
    if (r < 0)
        return r;
    if (n != 1 || !net_visible(txn, call, &net_kind_group, items[0], true)) {
        net_free_all(items, n);
        return sched_call_error(call, -ENOENT, "Security group rule '%s' not found.", q->rule);
    }
    Yun__SecurityGroupRecord *g = (Yun__SecurityGroupRecord *)items[0];
    r = check_owner(call, g);
    if (r < 0) {
        net_free_all(items, n);
        return r;
    }
    Yun__SecurityGroupRule *gone = NULL;
    size_t k = 0;
    for (size_t i = 0; i < g->n_rules; i++)
        if (strcmp(g->rules[i]->id, q->rule) == 0)
            gone = g->rules[i];
        else
            g->rules[k++] = g->rules[i];
    g->n_rules = k;
    g->updated_us = yun_wall_us();
    struct net_hosts hosts = { 0 };
    r = net_store(txn, &net_kind_group, &g->base);
    if (r == 0)
        r = notify_group(call->s, txn, g->id, &hosts);
    if (r == 0)
        r = sched_compute_commit_audited(call, &txn, "security_group_rule.delete", q->rule,
                                         NULL);
    if (r == 0)
        r = rule_reply(call, gone);
    /* 'gone' is no longer in the record's array: free it alone. */
    yun__security_group_rule__free_unpacked(gone, NULL);
    net_free_all(items, n);
    if (r < 0) {
        net_hosts_done(&hosts);
        return r;
    }
    net_hosts_notify(call->s, &hosts);
    return 0;
}

int
sched_security_group_rule_list(struct sched_call *call, const ProtobufCMessage *req)
{
    const Yun__SecurityGroupRuleListRequest *q =
        (const Yun__SecurityGroupRuleListRequest *)req;
    if (q->all_projects && !call->is_admin)
        return sched_call_error(call, YUN_E_DENIED,
                                "Only admins may list all projects' objects.");
    _cleanup_(yun_txn_abortp) struct yun_txn *txn = NULL;
    int r = begin_with_default(call, &txn);
    if (r < 0)
        return r;
    ProtobufCMessage **items = NULL;
    size_t n = 0;
    if (*q->security_group) {
        ProtobufCMessage *m = NULL;
        r = net_find(call, txn, &net_kind_group, q->security_group, &m);
        if (r < 0)
            return r;
        items = malloc(sizeof *items);
        if (!items) {
            protobuf_c_message_free_unpacked(m, NULL);
            return -ENOMEM;
        }
        items[0] = m;
        n = 1;
    } else {
        struct group_filter f = { .call = call, .all = q->all_projects };
        r = net_collect(txn, &net_kind_group, keep_visible_group, &f, &items, &n);
        if (r < 0)
            return r;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += ((Yun__SecurityGroupRecord *)items[i])->n_rules;
    Yun__SecurityGroupRule **rules = calloc(total + 1, sizeof *rules);
    if (!rules) {
        net_free_all(items, n);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        Yun__SecurityGroupRecord *g = (Yun__SecurityGroupRecord *)items[i];
        for (size_t j = 0; j < g->n_rules; j++)
            rules[k++] = g->rules[j];
    }
    Yun__SecurityGroupRuleListReply y = YUN__SECURITY_GROUP_RULE_LIST_REPLY__INIT;
    y.rules = rules;
    y.n_rules = k;
    r = sched_call_reply(call, &y.base);
    free(rules);
    net_free_all(items, n);
    return r;
}

static bool
keep_owned(struct yun_txn *txn, const ProtobufCMessage *m, void *data)
{
    return strcmp(net_msg_str(m, "project"), data) == 0;
}

int
network_project_delete(struct sched *s, struct yun_txn *txn, const char *project)
{
    static const struct net_kind *const kinds[] = {
        &net_kind_network, &net_kind_subnet, &net_kind_port,
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        ProtobufCMessage **items = NULL;
        size_t n = 0;
        int r = net_collect(txn, kinds[i], keep_owned, (void *)project, &items, &n);
        net_free_all(items, n);
        if (r < 0)
            return r;
        if (n)
            return YUN_E_INUSE;
    }
    ProtobufCMessage **groups = NULL;
    size_t n = 0;
    int r = net_collect(txn, &net_kind_group, keep_owned, (void *)project, &groups, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; r == 0 && i < n; i++) {
        const Yun__SecurityGroupRecord *g = (const Yun__SecurityGroupRecord *)groups[i];
        if (strcmp(g->name, NET_DEFAULT_GROUP) != 0)
            r = YUN_E_INUSE;
        else
            r = yun_txn_del(txn, SCHED_DB_SECURITY_GROUPS, g->id, strlen(g->id));
    }
    net_free_all(groups, n);
    if (r == 0) {
        r = yun_txn_del(txn, SCHED_DB_DEFAULT_SECURITY_GROUPS, project, strlen(project));
        if (r == -ENOENT)
            r = 0;
    }
    return r;
}
