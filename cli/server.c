/* SPDX-License-Identifier: Apache-2.0
 * server.c: `yun server create|list|show|delete|start|stop|reboot|pause|
 * unpause|suspend|resume|rebuild|console|set|unset` and `yun server group
 * create|list|show|delete` and `yun server image create` (a snapshot):
 * instances (proto/compute.proto). SERVER is a
 * name or an id everywhere (the scheduler resolves names within the
 * caller's project). Verbs that change a server's state return when the
 * scheduler accepted them; with --wait they poll until the server gets
 * there (or fails: exit 1 with the fault), bounded by the global
 * --timeout when given, else 600 s. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "cli.h"
#include "err.h"
#include "util.h"
#include "compute.pb-c.h"
#include "image.pb-c.h"

#define USER_DATA_MAX 65536
#define WAIT_DEFAULT_MS 600000

enum {
    OPT_IMAGE = 256,
    OPT_FLAVOR,
    OPT_COUNT,
    OPT_MIN_COUNT,
    OPT_MAX_COUNT,
    OPT_KEY_NAME,
    OPT_USER_DATA,
    OPT_AZ,
    OPT_PROPERTY,
    OPT_GROUP,
    OPT_NETWORK,
    OPT_WAIT,
    OPT_LONG,
    OPT_ALL_PROJECTS,
    OPT_NAME,
    OPT_STATUS,
    OPT_HOST,
    OPT_PROJECT,
    OPT_LIMIT,
    OPT_MARKER,
    OPT_HARD,
    OPT_LINES,
    OPT_POLICY,
};

static void
message_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_message_ _cleanup_(message_freep)

static int
parse_u32(const char *cmd, const char *opt, const char *val, uint32_t *ret)
{
    if (yun_safe_atou32(val, ret) < 0)
        return cli_usage_error("invalid value '%s' for %s of '%s': give a whole number", val,
                               opt, cmd);
    return 0;
}

/* KEY=VALUE items, split in place in argv. */
struct specs {
    Yun__FlavorSpec *items;
    Yun__FlavorSpec **ptrs;
    size_t n;
};

static void
specs_done(struct specs *s)
{
    free(s->items);
    free(s->ptrs);
}

static void
specs_init(struct specs *s, int argc)
{
    s->items = calloc((size_t)argc + 1, sizeof *s->items);
    s->ptrs = calloc((size_t)argc + 1, sizeof *s->ptrs);
    if (!s->items || !s->ptrs)
        abort();
    s->n = 0;
}

static int
specs_add(struct specs *s, const char *cmd, char *arg)
{
    char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return cli_usage_error("invalid property '%s' for '%s': give KEY=VALUE", arg, cmd);
    *eq = '\0';
    Yun__FlavorSpec *it = &s->items[s->n];
    yun__flavor_spec__init(it);
    it->key = arg;
    it->value = eq + 1;
    s->ptrs[s->n++] = it;
    return 0;
}

/* ---- Printing a server ---- */

static void
metadata_cell(struct cli_table *t, const Yun__InstanceRecord *i)
{
    struct json_object *obj = json_object_new_object();
    size_t len = 1;
    for (size_t k = 0; k < i->n_metadata; k++) {
        json_object_object_add(obj, i->metadata[k]->key,
                               json_object_new_string(i->metadata[k]->value));
        len += strlen(i->metadata[k]->key) + strlen(i->metadata[k]->value) + 5;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    char *w = text;
    for (size_t k = 0; k < i->n_metadata; k++)
        w += sprintf(w, "%s%s='%s'", k ? ", " : "", i->metadata[k]->key,
                     i->metadata[k]->value);
    cli_table_json(t, "metadata", obj, text);
}

static void
flavor_cell(struct cli_table *t, const Yun__InstanceRecord *i)
{
    const Yun__FlavorRecord *f = i->flavor;
    if (!f) {
        cli_table_json(t, "flavor", NULL, "");
        return;
    }
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(f->id));
    json_object_object_add(o, "name", json_object_new_string(f->name));
    json_object_object_add(o, "vcpus", json_object_new_int64(f->vcpus));
    json_object_object_add(o, "ram_mb", json_object_new_int64(f->ram_mb));
    json_object_object_add(o, "disk_gb", json_object_new_int64(f->disk_gb));
    json_object_object_add(o, "ephemeral_gb", json_object_new_int64(f->ephemeral_gb));
    json_object_object_add(o, "swap_mb", json_object_new_int64(f->swap_mb));
    cli_table_json(t, "flavor", o, f->name);
}

static void
fault_cell(struct cli_table *t, const Yun__InstanceRecord *i)
{
    const Yun__InstanceFault *f = i->fault;
    if (!f) {
        cli_table_json(t, "fault", NULL, "");
        return;
    }
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "code", json_object_new_string(yun_errname(f->code)));
    json_object_object_add(o, "message", json_object_new_string(f->message));
    char when[32] = "";
    if (f->time_us)
        yun_format_time(f->time_us, when, sizeof when);
    json_object_object_add(o, "time", json_object_new_string(when));
    json_object_object_add(o, "host", json_object_new_string(f->host));
    _cleanup_free_ char *text = NULL;
    if (asprintf(&text, "%s (%s)", f->message, yun_errname(f->code)) < 0)
        abort();
    cli_table_json(t, "fault", o, text);
}

static void
actions_cell(struct cli_table *t, const Yun__InstanceRecord *i)
{
    struct json_object *arr = json_object_new_array();
    size_t len = 1;
    for (size_t k = 0; k < i->n_actions; k++) {
        const Yun__InstanceAction *a = i->actions[k];
        struct json_object *o = json_object_new_object();
        char start[32] = "", finish[32] = "";
        if (a->start_us)
            yun_format_time(a->start_us, start, sizeof start);
        if (a->finish_us)
            yun_format_time(a->finish_us, finish, sizeof finish);
        json_object_object_add(o, "action", json_object_new_string(a->action));
        json_object_object_add(o, "request_id", json_object_new_string(a->request_id));
        json_object_object_add(o, "user", json_object_new_string(a->user));
        json_object_object_add(o, "project", json_object_new_string(a->project));
        json_object_object_add(o, "start", json_object_new_string(start));
        json_object_object_add(o, "finish", json_object_new_string(finish));
        json_object_object_add(o, "result", json_object_new_string(a->result));
        json_object_object_add(o, "message", json_object_new_string(a->message));
        json_object_array_add(arr, o);
        len += strlen(a->action) + strlen(a->result) + 8;
    }
    /* Tables show the last few: "start(ok), stop(…)". */
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    char *w = text;
    for (size_t k = 0; k < i->n_actions; k++) {
        const Yun__InstanceAction *a = i->actions[k];
        w += sprintf(w, "%s%s(%s)", k ? ", " : "", a->action, *a->result ? a->result : "...");
    }
    cli_table_json(t, "actions", arr, text);
}

static void
strings_cell(struct cli_table *t, const char *key, char **v, size_t n)
{
    struct json_object *arr = json_object_new_array();
    size_t len = 1;
    for (size_t k = 0; k < n; k++) {
        json_object_array_add(arr, json_object_new_string(v[k]));
        len += strlen(v[k]) + 2;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    for (size_t k = 0; k < n; k++) {
        if (k)
            strcat(text, ", ");
        strcat(text, v[k]);
    }
    cli_table_json(t, key, arr, text);
}

/* "private=10.0.0.5, public=..." as OpenStack prints a server's addresses;
 * JSON: [{network, ip_address, mac_address, port_id}]. */
static void
addresses_cell(struct cli_table *t, const Yun__InstanceRecord *i)
{
    struct json_object *arr = json_object_new_array();
    size_t len = 1;
    for (size_t k = 0; k < i->n_addresses; k++) {
        const Yun__InstanceAddress *a = i->addresses[k];
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "network", json_object_new_string(a->network_name));
        json_object_object_add(o, "network_id", json_object_new_string(a->network_id));
        json_object_object_add(o, "ip_address", json_object_new_string(a->ip_address));
        json_object_object_add(o, "mac_address", json_object_new_string(a->mac_address));
        json_object_object_add(o, "port_id", json_object_new_string(a->port_id));
        json_object_array_add(arr, o);
        len += strlen(a->network_name) + strlen(a->network_id) + strlen(a->ip_address) + 4;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    char *w = text;
    for (size_t k = 0; k < i->n_addresses; k++) {
        const Yun__InstanceAddress *a = i->addresses[k];
        w += sprintf(w, "%s%s=%s", k ? ", " : "",
                     *a->network_name ? a->network_name : a->network_id, a->ip_address);
    }
    cli_table_json(t, "addresses", arr, text);
}

static const char *
image_name(const Yun__InstanceRecord *i)
{
    return i->image && *i->image->name ? i->image->name : i->image_id;
}

static void
server_row(struct cli_table *t, const Yun__InstanceRecord *i, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", i->id);
    cli_table_str(t, "name", i->name);
    cli_table_str(t, "status", i->status);
    cli_table_str(t, "task_state", i->task_state);
    cli_table_str(t, "power_state", i->power_state);
    flavor_cell(t, i);
    cli_table_str(t, "image", image_name(i));
    cli_table_str(t, "host_name", i->host_name);
    if (!full)
        return;
    cli_table_str(t, "image_id", i->image_id);
    cli_table_str(t, "project", i->project);
    cli_table_str(t, "user", i->user);
    cli_table_str(t, "host_id", i->host_id);
    cli_table_str(t, "availability_zone", i->availability_zone);
    cli_table_str(t, "key_name", i->key_name);
    addresses_cell(t, i);
    strings_cell(t, "networks", i->networks, i->n_networks);
    cli_table_str(t, "server_group", i->server_group);
    cli_table_str(t, "reservation_id", i->reservation_id);
    metadata_cell(t, i);
    cli_table_uint(t, "user_data_size", i->user_data.len);
    fault_cell(t, i);
    cli_table_uint(t, "attempts", i->attempts);
    strings_cell(t, "tried_hosts", i->tried_hosts, i->n_tried_hosts);
    actions_cell(t, i);
    cli_table_time(t, "created_at", i->created_us);
    cli_table_time(t, "updated_at", i->updated_us);
    cli_table_time(t, "launched_at", i->launched_us);
    cli_table_time(t, "deleted_at", i->deleted_us);
}

static int
print_servers(struct cli *cli, Yun__InstanceRecord *const *v, size_t n, bool single)
{
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(single);
    for (size_t k = 0; k < n; k++)
        server_row(t, v[k], single || cli->out.format != CLI_FORMAT_TABLE);
    return cli_print(cli, t);
}

/* OP_SERVER_SHOW of 'ref'; '*ret' is the caller's. */
static int
show_server(struct cli *cli, const char *ref, Yun__ServerReply **ret, int *ret_err)
{
    Yun__ServerRef q = YUN__SERVER_REF__INIT;
    q.server = (char *)ref;
    ProtobufCMessage *m = NULL;
    int r = cli_call_raw(cli, YUN__OP__OP_SERVER_SHOW, &q.base, &yun__server_reply__descriptor,
                         &m, ret_err);
    if (r)
        return r;
    Yun__ServerReply *y = (Yun__ServerReply *)m;
    if (!y->server) {
        protobuf_c_message_free_unpacked(m, NULL);
        fprintf(stderr, "yun: the scheduler's reply carries no server\n");
        return 1;
    }
    *ret = y;
    return 0;
}

/* ---- Waiting ---- */

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *
fault_text(const Yun__InstanceRecord *i)
{
    return i->fault && *i->fault->message ? i->fault->message : "no fault recorded";
}

/* Polls server 'id' until its task ends in status 'want' (exit 0), or it
 * ends elsewhere or in ERROR (exit 1, with the fault), or the wait times
 * out (exit 1). 'want' "DELETED": until deleted (or gone). '*ret' (may be
 * NULL) gets the last record seen. */
static int
wait_for(struct cli *cli, const char *id, const char *want, Yun__ServerReply **ret)
{
    int limit = cli->wait_timeout_ms ? cli->wait_timeout_ms : WAIT_DEFAULT_MS;
    int64_t end = mono_ms() + limit;
    bool deleting = strcmp(want, "DELETED") == 0;
    useconds_t delay = 200000;
    for (;;) {
        Yun__ServerReply *y = NULL;
        int err = 0;
        int r = show_server(cli, id, &y, &err);
        if (r) {
            /* Purged already: as deleted as it gets. */
            return deleting && err == -ENOENT ? 0 : 1;
        }
        const Yun__InstanceRecord *i = y->server;
        bool settled = !*i->task_state && strcmp(i->status, "BUILD") != 0 &&
                       strcmp(i->status, "REBUILD") != 0;
        int rc = -1;
        if (deleting) {
            if (strcmp(i->status, "DELETED") == 0)
                rc = 0;
            else if (settled && strcmp(i->status, "ERROR") == 0) {
                fprintf(stderr, "yun: server '%s' (%s) was not deleted: %s\n", i->name, i->id,
                        fault_text(i));
                rc = 1;
            }
        } else if (settled) {
            if (strcmp(i->status, want) == 0) {
                rc = 0;
            } else if (strcmp(i->status, "ERROR") == 0) {
                fprintf(stderr, "yun: server '%s' (%s) is in ERROR: %s\n", i->name, i->id,
                        fault_text(i));
                rc = 1;
            } else {
                fprintf(stderr, "yun: server '%s' (%s) is %s, not %s: %s\n", i->name, i->id,
                        i->status, want, fault_text(i));
                rc = 1;
            }
        }
        if (rc < 0 && mono_ms() >= end) {
            fprintf(stderr, "yun: server '%s' (%s) is still %s%s%s after %d s\n", i->name,
                    i->id, i->status, *i->task_state ? "/" : "", i->task_state, limit / 1000);
            rc = 1;
        }
        if (rc >= 0) {
            if (ret)
                *ret = y;
            else
                protobuf_c_message_free_unpacked(&y->base, NULL);
            return rc;
        }
        protobuf_c_message_free_unpacked(&y->base, NULL);
        usleep(delay);
        if (delay < 1000000)
            delay += delay / 2;
    }
}

/* ---- create ---- */

static int
server_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "server create";
    static const struct option opts[] = {
        { "image", required_argument, NULL, OPT_IMAGE },
        { "flavor", required_argument, NULL, OPT_FLAVOR },
        { "count", required_argument, NULL, OPT_COUNT },
        { "min-count", required_argument, NULL, OPT_MIN_COUNT },
        { "max-count", required_argument, NULL, OPT_MAX_COUNT },
        { "key-name", required_argument, NULL, OPT_KEY_NAME },
        { "user-data", required_argument, NULL, OPT_USER_DATA },
        { "availability-zone", required_argument, NULL, OPT_AZ },
        { "property", required_argument, NULL, OPT_PROPERTY },
        { "group", required_argument, NULL, OPT_GROUP },
        { "network", required_argument, NULL, OPT_NETWORK },
        { "wait", no_argument, NULL, OPT_WAIT },
        {},
    };
    Yun__ServerCreateRequest q = YUN__SERVER_CREATE_REQUEST__INIT;
    _cleanup_free_ char **networks = calloc((size_t)argc + 1, sizeof *networks);
    if (!networks)
        abort();
    q.networks = networks;
    _cleanup_(specs_done) struct specs meta;
    specs_init(&meta, argc);
    const char *user_data = NULL;
    bool wait = false, count_given = false, minmax_given = false;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_IMAGE:
            q.image = optarg;
            break;
        case OPT_FLAVOR:
            q.flavor = optarg;
            break;
        case OPT_COUNT:
            if ((r = parse_u32(cmd, "--count", optarg, &q.min_count)))
                return r;
            q.max_count = q.min_count;
            count_given = true;
            break;
        case OPT_MIN_COUNT:
            if ((r = parse_u32(cmd, "--min-count", optarg, &q.min_count)))
                return r;
            minmax_given = true;
            break;
        case OPT_MAX_COUNT:
            if ((r = parse_u32(cmd, "--max-count", optarg, &q.max_count)))
                return r;
            minmax_given = true;
            break;
        case OPT_KEY_NAME:
            q.key_name = optarg;
            break;
        case OPT_USER_DATA:
            user_data = optarg;
            break;
        case OPT_AZ:
            q.availability_zone = optarg;
            break;
        case OPT_PROPERTY:
            if ((r = specs_add(&meta, cmd, optarg)))
                return r;
            break;
        case OPT_GROUP:
            q.server_group = optarg;
            break;
        case OPT_NETWORK:
            networks[q.n_networks++] = optarg;
            break;
        case OPT_WAIT:
            wait = true;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one server name (see 'yun %s --help')", cmd, cmd);
    if (!*q.image || !*q.flavor)
        return cli_usage_error("'%s' needs --image and --flavor", cmd);
    if (count_given && minmax_given)
        return cli_usage_error("'%s' takes --count or --min-count/--max-count, not both", cmd);
    if ((count_given || minmax_given) && (q.min_count == 0 && q.max_count == 0))
        return cli_usage_error("'%s': a count is at least 1", cmd);
    if (q.max_count && q.min_count > q.max_count)
        return cli_usage_error("'%s': --min-count %u is above --max-count %u", cmd,
                               q.min_count, q.max_count);
    q.name = argv[optind];
    q.metadata = meta.ptrs;
    q.n_metadata = meta.n;
    _cleanup_free_ char *data = NULL;
    if (user_data) {
        size_t size = 0;
        r = yun_read_file(user_data, USER_DATA_MAX + 1, &data, &size);
        if (r == -EFBIG || (r >= 0 && size > USER_DATA_MAX)) {
            fprintf(stderr, "yun: user data file '%s' is larger than %d bytes\n", user_data,
                    USER_DATA_MAX);
            return 1;
        }
        if (r < 0) {
            fprintf(stderr, "yun: cannot read user data file '%s': %s\n", user_data,
                    yun_strerror(r));
            return 1;
        }
        q.user_data.data = (uint8_t *)data;
        q.user_data.len = size;
    }
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_SERVER_CREATE, &q.base,
                 &yun__server_create_reply__descriptor, &m);
    if (r)
        return r;
    Yun__ServerCreateReply *y = (Yun__ServerCreateReply *)m;
    if (!wait)
        return print_servers(cli, y->servers, y->n_servers, y->n_servers == 1);

    /* Wait for each, then print them as they ended. */
    _cleanup_free_ Yun__ServerReply **finals = calloc(y->n_servers + 1, sizeof *finals);
    _cleanup_free_ Yun__InstanceRecord **recs = calloc(y->n_servers + 1, sizeof *recs);
    if (!finals || !recs)
        abort();
    int rc = 0;
    size_t n = 0;
    for (size_t k = 0; k < y->n_servers; k++) {
        Yun__ServerReply *f = NULL;
        if (wait_for(cli, y->servers[k]->id, "ACTIVE", &f))
            rc = 1;
        if (f) {
            finals[n] = f;
            recs[n++] = f->server;
        }
    }
    int pr = print_servers(cli, recs, n, n == 1);
    for (size_t k = 0; k < n; k++)
        protobuf_c_message_free_unpacked(&finals[k]->base, NULL);
    return rc ? rc : pr;
}

/* ---- list, show ---- */

static int
server_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "server list";
    static const struct option opts[] = {
        { "long", no_argument, NULL, OPT_LONG },
        { "all-projects", no_argument, NULL, OPT_ALL_PROJECTS },
        { "name", required_argument, NULL, OPT_NAME },
        { "status", required_argument, NULL, OPT_STATUS },
        { "host", required_argument, NULL, OPT_HOST },
        { "project", required_argument, NULL, OPT_PROJECT },
        { "image", required_argument, NULL, OPT_IMAGE },
        { "flavor", required_argument, NULL, OPT_FLAVOR },
        { "limit", required_argument, NULL, OPT_LIMIT },
        { "marker", required_argument, NULL, OPT_MARKER },
        {},
    };
    Yun__ServerListRequest q = YUN__SERVER_LIST_REQUEST__INIT;
    bool full = false, limited = false;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":l", opts, NULL)) >= 0) {
        switch (c) {
        case 'l':
        case OPT_LONG:
            full = true;
            break;
        case OPT_ALL_PROJECTS:
            q.all_projects = true;
            break;
        case OPT_NAME:
            q.name = optarg;
            break;
        case OPT_STATUS:
            q.status = optarg;
            break;
        case OPT_HOST:
            q.host = optarg;
            break;
        case OPT_PROJECT:
            q.project = optarg;
            break;
        case OPT_IMAGE:
            q.image = optarg;
            break;
        case OPT_FLAVOR:
            q.flavor = optarg;
            break;
        case OPT_LIMIT:
            if ((r = parse_u32(cmd, "--limit", optarg, &q.limit)))
                return r;
            if (q.limit == 0)
                return cli_usage_error("--limit must be at least 1");
            limited = true;
            break;
        case OPT_MARKER:
            q.marker = optarg;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage_error("'%s' takes no arguments, only options", cmd);
    full = full || cli->out.format != CLI_FORMAT_TABLE;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    _cleanup_free_ char *marker = NULL;
    for (unsigned pages = 0;; pages++) {
        _cleanup_message_ ProtobufCMessage *m = NULL;
        r = cli_call(cli, YUN__OP__OP_SERVER_LIST, &q.base, &yun__server_list_reply__descriptor,
                     &m);
        if (r)
            return r;
        Yun__ServerListReply *y = (Yun__ServerListReply *)m;
        for (size_t k = 0; k < y->n_servers; k++)
            server_row(t, y->servers[k], full);
        bool more = !limited && *y->next_marker && y->n_servers > 0 &&
                    strcmp(y->next_marker, q.marker) != 0;
        if (!more)
            break;
        free(marker);
        marker = strdup(y->next_marker);
        if (!marker)
            abort();
        q.marker = marker;
        if (pages > 100000) {
            fprintf(stderr, "yun: the scheduler's server list does not end\n");
            return 1;
        }
    }
    return cli_print(cli, t);
}

static int
server_show(struct cli *cli, int argc, char **argv)
{
    if (argc != 2 || (argv[1][0] == '-' && argv[1][1]))
        return cli_usage_error("'server show' takes one server name or id");
    _cleanup_message_ Yun__ServerReply *y = NULL;
    int r = show_server(cli, argv[1], &y, NULL);
    if (r)
        return r;
    return print_servers(cli, &y->server, 1, true);
}

/* ---- delete and actions ---- */

/* SERVER... [--wait] [--hard] for verbs acting on several servers. */
static int
parse_targets(const char *cmd, int argc, char **argv, bool allow_hard, bool *ret_wait,
              bool *ret_hard)
{
    static const struct option opts[] = {
        { "wait", no_argument, NULL, OPT_WAIT },
        { "hard", no_argument, NULL, OPT_HARD },
        {},
    };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_WAIT)
            *ret_wait = true;
        else if (c == OPT_HARD && allow_hard)
            *ret_hard = true;
        else
            return cli_option_error(cmd, c, argv);
    }
    if (optind >= argc)
        return cli_usage_error("'%s' takes one or more server names or ids", cmd);
    return 0;
}

static int
server_delete(struct cli *cli, int argc, char **argv)
{
    bool wait = false, hard = false;
    int r = parse_targets("server delete", argc, argv, false, &wait, &hard);
    if (r)
        return r;
    int rc = 0;
    int first = optind;
    /* The ids, for waiting: a name may be reused meanwhile. */
    _cleanup_free_ char **ids = calloc((size_t)argc + 1, sizeof *ids);
    if (!ids)
        abort();
    for (int k = first; k < argc; k++) {
        Yun__ServerRef q = YUN__SERVER_REF__INIT;
        q.server = argv[k];
        _cleanup_message_ ProtobufCMessage *m = NULL;
        if (cli_call(cli, YUN__OP__OP_SERVER_DELETE, &q.base, &yun__server_reply__descriptor,
                     &m)) {
            rc = 1;
            continue;
        }
        Yun__ServerReply *y = (Yun__ServerReply *)m;
        if (y->server && !(ids[k] = strdup(y->server->id)))
            abort();
    }
    for (int k = first; wait && k < argc; k++)
        if (ids[k] && wait_for(cli, ids[k], "DELETED", NULL))
            rc = 1;
    for (int k = first; k < argc; k++)
        free(ids[k]);
    return rc;
}

static const char *
action_target(const char *action)
{
    if (strcmp(action, "stop") == 0)
        return "SHUTOFF";
    if (strcmp(action, "pause") == 0)
        return "PAUSED";
    if (strcmp(action, "suspend") == 0)
        return "SUSPENDED";
    return "ACTIVE";
}

/* OP_SERVER_ACTION; the id of the server acted on goes to '*ret_id'. */
static int
call_action(struct cli *cli, Yun__ServerActionRequest *q, char **ret_id)
{
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SERVER_ACTION, &q->base, &yun__server_reply__descriptor,
                     &m);
    if (r)
        return r;
    Yun__ServerReply *y = (Yun__ServerReply *)m;
    if (ret_id && y->server && !(*ret_id = strdup(y->server->id)))
        abort();
    return 0;
}

static int
server_action(struct cli *cli, int argc, char **argv, const char *action, bool allow_hard)
{
    char cmd[64];
    snprintf(cmd, sizeof cmd, "server %s", action);
    bool wait = false, hard = false;
    int r = parse_targets(cmd, argc, argv, allow_hard, &wait, &hard);
    if (r)
        return r;
    int rc = 0;
    for (int k = optind; k < argc; k++) {
        Yun__ServerActionRequest q = YUN__SERVER_ACTION_REQUEST__INIT;
        q.server = argv[k];
        q.action = (char *)action;
        q.hard = hard;
        _cleanup_free_ char *id = NULL;
        if (call_action(cli, &q, &id)) {
            rc = 1;
            continue;
        }
        if (wait && id && wait_for(cli, id, action_target(action), NULL))
            rc = 1;
    }
    return rc;
}

static int
server_start(struct cli *cli, int argc, char **argv)
{
    return server_action(cli, argc, argv, "start", false);
}

static int
server_stop(struct cli *cli, int argc, char **argv)
{
    return server_action(cli, argc, argv, "stop", false);
}

static int
server_reboot(struct cli *cli, int argc, char **argv)
{
    return server_action(cli, argc, argv, "reboot", true);
}

static int
server_pause(struct cli *cli, int argc, char **argv)
{
    return server_action(cli, argc, argv, "pause", false);
}

static int
server_unpause(struct cli *cli, int argc, char **argv)
{
    return server_action(cli, argc, argv, "unpause", false);
}

static int
server_suspend(struct cli *cli, int argc, char **argv)
{
    return server_action(cli, argc, argv, "suspend", false);
}

static int
server_resume(struct cli *cli, int argc, char **argv)
{
    return server_action(cli, argc, argv, "resume", false);
}

static int
server_rebuild(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "server rebuild";
    static const struct option opts[] = {
        { "image", required_argument, NULL, OPT_IMAGE },
        { "wait", no_argument, NULL, OPT_WAIT },
        {},
    };
    Yun__ServerActionRequest q = YUN__SERVER_ACTION_REQUEST__INIT;
    q.action = (char *)"rebuild";
    bool wait = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_IMAGE)
            q.image = optarg;
        else if (c == OPT_WAIT)
            wait = true;
        else
            return cli_option_error(cmd, c, argv);
    }
    if (optind + 1 != argc || !*q.image)
        return cli_usage_error("'%s' takes one server name or id and --image IMAGE", cmd);
    q.server = argv[optind];
    _cleanup_free_ char *id = NULL;
    int r = call_action(cli, &q, &id);
    if (r)
        return r;
    return wait && id ? wait_for(cli, id, "ACTIVE", NULL) : 0;
}

/* ---- console, set, unset ---- */

static int
server_console(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "server console";
    static const struct option opts[] = { { "lines", required_argument, NULL, OPT_LINES }, {} };
    Yun__ServerConsoleRequest q = YUN__SERVER_CONSOLE_REQUEST__INIT;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_LINES)
            return cli_option_error(cmd, c, argv);
        if ((r = parse_u32(cmd, "--lines", optarg, &q.lines)))
            return r;
        if (q.lines == 0)
            return cli_usage_error("--lines must be at least 1");
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one server name or id", cmd);
    q.server = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_SERVER_CONSOLE, &q.base,
                 &yun__server_console_reply__descriptor, &m);
    if (r)
        return r;
    const char *out = ((Yun__ServerConsoleReply *)m)->output;
    if (cli->out.format != CLI_FORMAT_TABLE) {
        _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
        cli_table_row(t);
        cli_table_str(t, "output", out);
        return cli_print(cli, t);
    }
    size_t len = strlen(out);
    if (fwrite(out, 1, len, stdout) != len || (len && out[len - 1] != '\n' && putchar('\n') < 0))
        return 1;
    return fflush(stdout) == 0 ? 0 : 1;
}

static int
server_set(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "server set";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "property", required_argument, NULL, OPT_PROPERTY },
        {},
    };
    _cleanup_(specs_done) struct specs set;
    specs_init(&set, argc);
    const char *name = NULL;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_NAME)
            name = optarg;
        else if (c == OPT_PROPERTY) {
            if ((r = specs_add(&set, cmd, optarg)))
                return r;
        } else
            return cli_option_error(cmd, c, argv);
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one server name or id", cmd);
    if (!name && !set.n)
        return cli_usage_error("'%s' needs --name or --property", cmd);
    const char *server = argv[optind];
    _cleanup_free_ char *id = NULL;
    if (name) {
        Yun__ServerActionRequest q = YUN__SERVER_ACTION_REQUEST__INIT;
        q.server = (char *)server;
        q.action = (char *)"rename";
        q.name = (char *)name;
        if ((r = call_action(cli, &q, &id)))
            return r;
        server = id; /* the old name no longer finds it */
    }
    if (set.n) {
        Yun__ServerMetadataRequest q = YUN__SERVER_METADATA_REQUEST__INIT;
        q.server = (char *)server;
        q.set = set.ptrs;
        q.n_set = set.n;
        _cleanup_message_ ProtobufCMessage *m = NULL;
        if ((r = cli_call(cli, YUN__OP__OP_SERVER_METADATA, &q.base,
                          &yun__server_reply__descriptor, &m)))
            return r;
    }
    return 0;
}

static int
server_unset(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "server unset";
    static const struct option opts[] = {
        { "property", required_argument, NULL, OPT_PROPERTY },
        {},
    };
    _cleanup_free_ char **keys = calloc((size_t)argc + 1, sizeof *keys);
    if (!keys)
        abort();
    size_t n = 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_PROPERTY)
            return cli_option_error(cmd, c, argv);
        keys[n++] = optarg;
    }
    if (optind + 1 != argc || !n)
        return cli_usage_error("'%s' takes one server name or id and --property KEY", cmd);
    Yun__ServerMetadataRequest q = YUN__SERVER_METADATA_REQUEST__INIT;
    q.server = argv[optind];
    q.unset = keys;
    q.n_unset = n;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    return cli_call(cli, YUN__OP__OP_SERVER_METADATA, &q.base, &yun__server_reply__descriptor,
                    &m);
}

/* ---- server groups ---- */

static void
group_row(struct cli_table *t, const Yun__ServerGroupRecord *g, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", g->id);
    cli_table_str(t, "name", g->name);
    cli_table_str(t, "policy", g->policy);
    cli_table_str(t, "project", g->project);
    if (full) {
        strings_cell(t, "members", g->members, g->n_members);
        cli_table_time(t, "created_at", g->created_us);
    } else {
        cli_table_uint(t, "members", g->n_members);
    }
}

static int
print_group(struct cli *cli, const ProtobufCMessage *m)
{
    const Yun__ServerGroupRecord *g = ((const Yun__ServerGroupReply *)m)->group;
    if (!g) {
        fprintf(stderr, "yun: the scheduler's reply carries no server group\n");
        return 1;
    }
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    group_row(t, g, true);
    return cli_print(cli, t);
}

static int
group_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "server group create";
    static const struct option opts[] = { { "policy", required_argument, NULL, OPT_POLICY },
                                          {} };
    Yun__ServerGroupCreateRequest q = YUN__SERVER_GROUP_CREATE_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_POLICY)
            return cli_option_error(cmd, c, argv);
        q.policy = optarg;
    }
    if (optind + 1 != argc || !*q.policy)
        return cli_usage_error("'%s' takes one group name and --policy affinity|anti-affinity|"
                               "soft-affinity|soft-anti-affinity", cmd);
    q.name = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SERVER_GROUP_CREATE, &q.base,
                     &yun__server_group_reply__descriptor, &m);
    return r ? r : print_group(cli, m);
}

static int
group_list(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = { { "long", no_argument, NULL, OPT_LONG }, {} };
    bool full = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":l", opts, NULL)) >= 0) {
        if (c != 'l' && c != OPT_LONG)
            return cli_option_error("server group list", c, argv);
        full = true;
    }
    if (optind != argc)
        return cli_usage_error("'server group list' takes no arguments");
    Yun__ServerGroupListRequest q = YUN__SERVER_GROUP_LIST_REQUEST__INIT;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SERVER_GROUP_LIST, &q.base,
                     &yun__server_group_list_reply__descriptor, &m);
    if (r)
        return r;
    Yun__ServerGroupListReply *y = (Yun__ServerGroupListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t k = 0; k < y->n_groups; k++)
        group_row(t, y->groups[k], full || cli->out.format != CLI_FORMAT_TABLE);
    return cli_print(cli, t);
}

static int
group_show(struct cli *cli, int argc, char **argv)
{
    if (argc != 2 || (argv[1][0] == '-' && argv[1][1]))
        return cli_usage_error("'server group show' takes one group name or id");
    Yun__ServerGroupRef q = YUN__SERVER_GROUP_REF__INIT;
    q.group = argv[1];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SERVER_GROUP_SHOW, &q.base,
                     &yun__server_group_reply__descriptor, &m);
    return r ? r : print_group(cli, m);
}

static int
group_delete(struct cli *cli, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("'server group delete' takes one or more group names or ids");
    int rc = 0;
    for (int k = 1; k < argc; k++) {
        Yun__ServerGroupRef q = YUN__SERVER_GROUP_REF__INIT;
        q.group = argv[k];
        _cleanup_message_ ProtobufCMessage *m = NULL;
        if (cli_call(cli, YUN__OP__OP_SERVER_GROUP_DELETE, &q.base,
                     &yun__server_group_reply__descriptor, &m))
            rc = 1;
    }
    return rc;
}


/* ---- image (snapshot) ---- */

/* Polls image 'id' until it is active (0) or killed or gone (1, with the
 * server's fault when it has one), bounded like wait_for. */
static int
wait_image(struct cli *cli, const char *id, const char *server, Yun__ImageReply **ret)
{
    int limit = cli->wait_timeout_ms ? cli->wait_timeout_ms : WAIT_DEFAULT_MS;
    int64_t end = mono_ms() + limit;
    useconds_t delay = 200000;
    for (;;) {
        Yun__ImageRef q = YUN__IMAGE_REF__INIT;
        q.image = (char *)id;
        ProtobufCMessage *m = NULL;
        int r = cli_call(cli, YUN__OP__OP_IMAGE_SHOW, &q.base, &yun__image_reply__descriptor,
                         &m);
        if (r)
            return r;
        Yun__ImageReply *y = (Yun__ImageReply *)m;
        const char *status = y->image ? y->image->status : "gone";
        if (strcmp(status, "active") == 0) {
            *ret = y;
            return 0;
        }
        if (strcmp(status, "queued") != 0 && strcmp(status, "saving") != 0) {
            Yun__ServerReply *sy = NULL;
            int err = 0;
            const char *why = "no fault recorded";
            if (show_server(cli, server, &sy, &err) == 0 && sy->server->fault)
                why = sy->server->fault->message;
            fprintf(stderr, "yun: the snapshot '%s' of server '%s' is %s: %s\n", id, server,
                    status, why);
            if (sy)
                protobuf_c_message_free_unpacked(&sy->base, NULL);
            protobuf_c_message_free_unpacked(m, NULL);
            return 1;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (mono_ms() >= end) {
            fprintf(stderr, "yun: the snapshot '%s' of server '%s' is still %s after %d s\n",
                    id, server, status, limit / 1000);
            return 1;
        }
        usleep(delay);
        if (delay < 1000000)
            delay += delay / 2;
    }
}

static int
server_image_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "server image create";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "wait", no_argument, NULL, OPT_WAIT },
        {},
    };
    Yun__ServerSnapshotRequest q = YUN__SERVER_SNAPSHOT_REQUEST__INIT;
    bool wait = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_NAME)
            q.image_name = optarg;
        else if (c == OPT_WAIT)
            wait = true;
        else
            return cli_option_error(cmd, c, argv);
    }
    if (optind + 1 != argc || !*q.image_name)
        return cli_usage_error("'%s' takes one server name or id and --name NAME", cmd);
    q.server = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_SERVER_SNAPSHOT, &q.base, &yun__image_reply__descriptor,
                     &m);
    if (r)
        return r;
    const Yun__ImageRecord *im = ((Yun__ImageReply *)m)->image;
    if (!wait || !im)
        return cli_image_print(cli, im);
    Yun__ImageReply *done = NULL;
    r = wait_image(cli, im->id, q.server, &done);
    if (r)
        return r;
    r = cli_image_print(cli, done->image);
    protobuf_c_message_free_unpacked(&done->base, NULL);
    return r;
}

static const struct cli_verb image_verbs[] = {
    { "create", server_image_create, "SERVER --name NAME [--wait]",
      "Snapshot a server's disk into a new image",
      "Prints the image at once (queued); the server's task is image_snapshot until\n"
      "the image is active or killed. The image is private to the server's project,\n"
      "qcow2 without backing file, and boots as the server did (its kernel, ramdisk\n"
      "and command line are copied). The server must be ACTIVE or SHUTOFF; a running\n"
      "guest is paused while its disk is copied.\n"
      "\n"
      "Options:\n"
      "  --name NAME            The image's name\n"
      "  --wait                 Poll until the image is active; exit 1 if it is killed\n"
      "                         (bounded by the global --timeout, else 600 s)\n" },
    {},
};

static const struct cli_verb group_verbs[] = {
    { "create", group_create, "NAME --policy POLICY",
      "Create a server group: affinity, anti-affinity, soft-affinity or soft-anti-affinity" },
    { "list", group_list, "[--long]", "List your project's server groups" },
    { "show", group_show, "GROUP", "Show a server group and its members" },
    { "delete", group_delete, "GROUP...", "Delete server groups (their servers stay)" },
    {},
};

#define WAIT_HELP                                                                           \
    "  --wait                 Poll until the server gets there; exit 1 with its fault\n"   \
    "                         if it does not (bounded by the global --timeout, else\n"      \
    "                         600 s)\n"

const struct cli_verb cli_server_verbs[] = {
    { "create", server_create, "NAME --image IMAGE --flavor FLAVOR [OPTIONS]",
      "Create servers",
      "Prints the server (or the servers of a multiple create, named NAME-1...).\n"
      "\n"
      "Options:\n"
      "  --image IMAGE          The image to boot (name or id)\n"
      "  --flavor FLAVOR        The flavor (name or id)\n"
      "  --count N              Create N servers, all or none\n"
      "  --min-count N, --max-count M\n"
      "                         Create at least N and at most M, as many as fit\n"
      "  --key-name KEY         The SSH keypair the metadata service serves\n"
      "  --user-data FILE       Data for the guest (at most 64 KiB)\n"
      "  --availability-zone AZ Only hosts of this zone\n"
      "  --property KEY=VALUE   Metadata (repeatable)\n"
      "  --group GROUP          Place by the policy of this server group\n"
      "  --network NET          A port on this network (name or id; repeatable, in NIC\n"
      "                         order); without it the server has no network\n"
      WAIT_HELP },
    { "list", server_list, "[FILTERS] [--limit N] [--marker ID] [--long] [--all-projects]",
      "List servers, newest first",
      "Filters (each: only servers with this value):\n"
      "  --name TEXT            Name contains TEXT\n"
      "  --status S             BUILD ACTIVE SHUTOFF PAUSED SUSPENDED REBUILD ERROR\n"
      "                         DELETED (deleted ones are listed only so)\n"
      "  --image I, --flavor F  By name or id\n"
      "  --host H               By host name or id (admin)\n"
      "  --project P            Another project's servers (admin)\n"
      "\n"
      "Options:\n"
      "  --all-projects         Every project's servers (admin)\n"
      "  --limit N              One page of at most N servers (default: every page)\n"
      "  --marker ID            Start after this server\n"
      "  -l, --long             Every field (always with -f json|value|csv)\n" },
    { "show", server_show, "SERVER", "Show every field of a server, its fault and actions" },
    { "delete", server_delete, "SERVER... [--wait]", "Delete servers",
      "Options:\n" WAIT_HELP },
    { "start", server_start, "SERVER... [--wait]", "Start stopped servers",
      "Options:\n" WAIT_HELP },
    { "stop", server_stop, "SERVER... [--wait]", "Stop servers (ACPI, then power off)",
      "Options:\n" WAIT_HELP },
    { "reboot", server_reboot, "SERVER... [--hard] [--wait]", "Reboot servers",
      "Options:\n"
      "  --hard                 Reset instead of an ACPI reboot\n" WAIT_HELP },
    { "pause", server_pause, "SERVER... [--wait]", "Pause servers (in memory)",
      "Options:\n" WAIT_HELP },
    { "unpause", server_unpause, "SERVER... [--wait]", "Unpause servers",
      "Options:\n" WAIT_HELP },
    { "suspend", server_suspend, "SERVER... [--wait]", "Suspend servers (to disk)",
      "Options:\n" WAIT_HELP },
    { "resume", server_resume, "SERVER... [--wait]", "Resume suspended servers",
      "Options:\n" WAIT_HELP },
    { "rebuild", server_rebuild, "SERVER --image IMAGE [--wait]",
      "Rebuild a server from an image, keeping its id and host", "Options:\n" WAIT_HELP },
    { "console", server_console, "SERVER [--lines N]",
      "Print the last lines of a server's serial console (default 100)" },
    { "set", server_set, "SERVER [--name NAME] [--property KEY=VALUE]...",
      "Rename a server or set its metadata" },
    { "unset", server_unset, "SERVER --property KEY...", "Remove metadata of a server" },
    { "group", NULL, NULL, "Server groups: placement policies", NULL, group_verbs },
    { "image", NULL, NULL, "Images of servers: snapshots", NULL, image_verbs },
    {},
};
