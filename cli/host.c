/* SPDX-License-Identifier: Apache-2.0
 * host.c: `yun host list|show|disable|enable`: compute hosts as the
 * scheduler sees them (admin only). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "cli.h"
#include "util.h"
#include "host.pb-c.h"

static void
host_row(struct cli_table *t, const Yun__HostRecord *h, bool full)
{
    const Yun__HostInventory *inv = h->inventory;
    const Yun__HostUsage *u = h->usage;
    cli_table_row(t);
    cli_table_str(t, "id", h->id);
    cli_table_str(t, "name", h->name);
    cli_table_str(t, "state", h->state);
    cli_table_bool(t, "enabled", h->enabled);
    cli_table_uint(t, "cpus", inv ? inv->cpus : 0);
    cli_table_uint(t, "memory_mb", inv ? inv->memory_mb : 0);
    cli_table_uint(t, "free_memory_mb", u ? u->free_memory_mb : 0);
    cli_table_uint(t, "disk_gb", inv ? inv->disk_gb : 0);
    cli_table_uint(t, "free_disk_gb", u ? u->free_disk_gb : 0);
    cli_table_str(t, "hypervisor_type", inv ? inv->hypervisor_type : "");
    if (!full) {
        cli_table_double(t, "load1", u ? u->load1 : 0);
        return;
    }
    cli_table_str(t, "hypervisor_version", inv ? inv->hypervisor_version : "");
    cli_table_str(t, "arch", inv ? inv->arch : "");
    cli_table_str(t, "cpu_model", inv ? inv->cpu_model : "");
    cli_table_uint(t, "cpu_mhz", inv ? inv->cpu_mhz : 0);
    cli_table_str(t, "virt_type", inv ? inv->virt_type : "");
    cli_table_str(t, "libvirt_uri", inv ? inv->libvirt_uri : "");
    cli_table_str(t, "agent_version", inv ? inv->agent_version : "");
    cli_table_double(t, "load1", u ? u->load1 : 0);
    cli_table_double(t, "load5", u ? u->load5 : 0);
    cli_table_double(t, "load15", u ? u->load15 : 0);
    cli_table_uint(t, "running_vms", u ? u->running_vms : 0);
    cli_table_str(t, "disabled_reason", h->disabled_reason);
    cli_table_uint(t, "heartbeat_interval_s", h->heartbeat_interval_s);
    cli_table_time(t, "last_heartbeat", h->last_heartbeat_us);
    cli_table_time(t, "state_changed", h->state_changed_us);
    cli_table_time(t, "registered", h->registered_us);
}

static int
host_list(struct cli *cli, int argc, char **argv)
{
    bool full = false;
    static const struct option opts[] = { { "long", no_argument, NULL, 'l' }, {} };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "l", opts, NULL)) >= 0) {
        if (c != 'l')
            return 2;
        full = true;
    }
    if (optind != argc)
        return cli_usage_error("'host list' takes no arguments");

    Yun__HostListRequest q = YUN__HOST_LIST_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_HOST_LIST, &q.base, &yun__host_list_reply__descriptor, &m);
    if (r)
        return r;
    Yun__HostListReply *y = (Yun__HostListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    /* Scripts get every field; people get the columns that fit a screen. */
    for (size_t i = 0; i < y->n_hosts; i++)
        host_row(t, y->hosts[i], full || cli->out.format != CLI_FORMAT_TABLE);
    protobuf_c_message_free_unpacked(m, NULL);
    return cli_print(cli, t);
}

static int
one_host_arg(int argc, char **argv, const char *verb, const char **ret)
{
    if (argc != 2)
        return cli_usage_error("'host %s' takes one host name or id", verb);
    *ret = argv[1];
    return 0;
}

/* The base images the host's agent holds: their ids in a table, objects
 * {image_id, os_hash_value, size, users, last_used} in JSON. */
static void
cached_images_cell(struct cli_table *t, const Yun__HostRecord *h)
{
    struct json_object *arr = json_object_new_array();
    size_t len = 1;
    for (size_t i = 0; i < h->n_cached_images; i++) {
        const Yun__CachedImage *ci = h->cached_images[i];
        struct json_object *o = json_object_new_object();
        char when[32];
        json_object_object_add(o, "image_id", json_object_new_string(ci->image_id));
        json_object_object_add(o, "os_hash_value", json_object_new_string(ci->os_hash_value));
        json_object_object_add(o, "size", json_object_new_uint64(ci->size));
        json_object_object_add(o, "users", json_object_new_uint64(ci->users));
        json_object_object_add(o, "last_used",
                               ci->last_used_us ? json_object_new_string(yun_format_time(
                                                      ci->last_used_us, when, sizeof when))
                                                : NULL);
        json_object_array_add(arr, o);
        len += strlen(ci->image_id) + 2;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    for (size_t i = 0; i < h->n_cached_images; i++) {
        if (i)
            strcat(text, ", ");
        strcat(text, h->cached_images[i]->image_id);
    }
    cli_table_json(t, "cached_images", arr, text);
}

static int
print_host(struct cli *cli, const Yun__HostRecord *h)
{
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    host_row(t, h, true);
    cached_images_cell(t, h);
    return cli_print(cli, t);
}

static int
host_show(struct cli *cli, int argc, char **argv)
{
    const char *name = NULL;
    int r = one_host_arg(argc, argv, "show", &name);
    if (r)
        return r;
    Yun__HostShowRequest q = YUN__HOST_SHOW_REQUEST__INIT;
    q.host = (char *)name;
    ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_HOST_SHOW, &q.base, &yun__host_show_reply__descriptor, &m);
    if (r)
        return r;
    r = print_host(cli, ((Yun__HostShowReply *)m)->host);
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

static int
host_set_enabled(struct cli *cli, int argc, char **argv, bool enabled)
{
    const char *reason = "";
    static const struct option opts[] = { { "reason", required_argument, NULL, 'r' }, {} };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
        if (c != 'r' || enabled)
            return cli_usage_error("'host %s' takes%s one host name or id",
                                   enabled ? "enable" : "disable",
                                   enabled ? "" : " [--reason TEXT] and");
        reason = optarg;
    }
    if (optind + 1 != argc)
        return cli_usage_error("'host %s' takes one host name or id",
                               enabled ? "enable" : "disable");
    Yun__HostSetEnabledRequest q = YUN__HOST_SET_ENABLED_REQUEST__INIT;
    q.host = argv[optind];
    q.enabled = enabled;
    q.reason = (char *)reason;
    ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_HOST_SET_ENABLED, &q.base,
                     &yun__host_set_enabled_reply__descriptor, &m);
    if (r)
        return r;
    r = print_host(cli, ((Yun__HostSetEnabledReply *)m)->host);
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

static int
host_disable(struct cli *cli, int argc, char **argv)
{
    return host_set_enabled(cli, argc, argv, false);
}

static int
host_enable(struct cli *cli, int argc, char **argv)
{
    return host_set_enabled(cli, argc, argv, true);
}

const struct cli_verb cli_host_verbs[] = {
    { "list", host_list, "[--long]", "List compute hosts with their state and resources" },
    { "show", host_show, "HOST", "Show one host's inventory, usage and state" },
    { "disable", host_disable, "HOST [--reason TEXT]", "Take a host out of placement" },
    { "enable", host_enable, "HOST", "Put a host back into placement" },
    {},
};
