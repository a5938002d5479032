/* SPDX-License-Identifier: Apache-2.0
 * flavor.c: `yun flavor create|list|show|delete`: the sizes servers come
 * in (proto/compute.proto). Everyone lists and shows the flavors they may
 * use; admins create and delete them. FLAVOR is a name or an id. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "cli.h"
#include "util.h"
#include "compute.pb-c.h"

enum {
    OPT_VCPUS = 256,
    OPT_RAM,
    OPT_DISK,
    OPT_EPHEMERAL,
    OPT_SWAP,
    OPT_PRIVATE,
    OPT_PUBLIC,
    OPT_PROPERTY,
    OPT_PROJECT,
    OPT_ID,
    OPT_LONG,
};

static void
specs_cell(struct cli_table *t, const Yun__FlavorRecord *f)
{
    struct json_object *obj = json_object_new_object();
    size_t len = 1;
    for (size_t i = 0; i < f->n_extra_specs; i++) {
        json_object_object_add(obj, f->extra_specs[i]->key,
                               json_object_new_string(f->extra_specs[i]->value));
        len += strlen(f->extra_specs[i]->key) + strlen(f->extra_specs[i]->value) + 5;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    char *w = text;
    for (size_t i = 0; i < f->n_extra_specs; i++)
        w += sprintf(w, "%s%s='%s'", i ? ", " : "", f->extra_specs[i]->key,
                     f->extra_specs[i]->value);
    cli_table_json(t, "extra_specs", obj, text);
}

static void
projects_cell(struct cli_table *t, const Yun__FlavorRecord *f)
{
    struct json_object *arr = json_object_new_array();
    size_t len = 1;
    for (size_t i = 0; i < f->n_projects; i++) {
        json_object_array_add(arr, json_object_new_string(f->projects[i]));
        len += strlen(f->projects[i]) + 2;
    }
    _cleanup_free_ char *text = calloc(1, len);
    if (!text)
        abort();
    for (size_t i = 0; i < f->n_projects; i++) {
        if (i)
            strcat(text, ", ");
        strcat(text, f->projects[i]);
    }
    cli_table_json(t, "projects", arr, text);
}

static void
flavor_row(struct cli_table *t, const Yun__FlavorRecord *f, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", f->id);
    cli_table_str(t, "name", f->name);
    cli_table_uint(t, "vcpus", f->vcpus);
    cli_table_uint(t, "ram_mb", f->ram_mb);
    cli_table_uint(t, "disk_gb", f->disk_gb);
    cli_table_uint(t, "ephemeral_gb", f->ephemeral_gb);
    cli_table_uint(t, "swap_mb", f->swap_mb);
    cli_table_bool(t, "is_public", f->is_public);
    if (!full)
        return;
    specs_cell(t, f);
    projects_cell(t, f);
    cli_table_time(t, "created_at", f->created_us);
}

static int
print_flavor(struct cli *cli, const Yun__FlavorRecord *f)
{
    if (!f) {
        fprintf(stderr, "yun: the scheduler's reply carries no flavor\n");
        return 1;
    }
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    flavor_row(t, f, true);
    return cli_print(cli, t);
}

static int
parse_u32(const char *cmd, const char *opt, const char *val, uint32_t *ret)
{
    if (yun_safe_atou32(val, ret) < 0)
        return cli_usage_error("invalid value '%s' for %s of '%s': give a whole number", val,
                               opt, cmd);
    return 0;
}

static int
flavor_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "flavor create";
    static const struct option opts[] = {
        { "vcpus", required_argument, NULL, OPT_VCPUS },
        { "ram", required_argument, NULL, OPT_RAM },
        { "disk", required_argument, NULL, OPT_DISK },
        { "ephemeral", required_argument, NULL, OPT_EPHEMERAL },
        { "swap", required_argument, NULL, OPT_SWAP },
        { "private", no_argument, NULL, OPT_PRIVATE },
        { "public", no_argument, NULL, OPT_PUBLIC },
        { "property", required_argument, NULL, OPT_PROPERTY },
        { "project", required_argument, NULL, OPT_PROJECT },
        { "id", required_argument, NULL, OPT_ID },
        {},
    };
    Yun__FlavorCreateRequest q = YUN__FLAVOR_CREATE_REQUEST__INIT;
    _cleanup_free_ Yun__FlavorSpec *specs = calloc((size_t)argc + 1, sizeof *specs);
    _cleanup_free_ Yun__FlavorSpec **spec_ptrs = calloc((size_t)argc + 1, sizeof *spec_ptrs);
    _cleanup_free_ char **projects = calloc((size_t)argc + 1, sizeof *projects);
    if (!specs || !spec_ptrs || !projects)
        abort();
    bool has_vcpus = false, has_ram = false, has_disk = false;
    int c, r;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_VCPUS:
            if ((r = parse_u32(cmd, "--vcpus", optarg, &q.vcpus)))
                return r;
            has_vcpus = true;
            break;
        case OPT_RAM:
            if ((r = parse_u32(cmd, "--ram", optarg, &q.ram_mb)))
                return r;
            has_ram = true;
            break;
        case OPT_DISK:
            if ((r = parse_u32(cmd, "--disk", optarg, &q.disk_gb)))
                return r;
            has_disk = true;
            break;
        case OPT_EPHEMERAL:
            if ((r = parse_u32(cmd, "--ephemeral", optarg, &q.ephemeral_gb)))
                return r;
            break;
        case OPT_SWAP:
            if ((r = parse_u32(cmd, "--swap", optarg, &q.swap_mb)))
                return r;
            break;
        case OPT_PRIVATE:
            q.is_private = true;
            break;
        case OPT_PUBLIC:
            q.is_private = false;
            break;
        case OPT_PROPERTY: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg)
                return cli_usage_error("invalid property '%s' for '%s': give KEY=VALUE",
                                       optarg, cmd);
            *eq = '\0';
            Yun__FlavorSpec *sp = &specs[q.n_extra_specs];
            yun__flavor_spec__init(sp);
            sp->key = optarg;
            sp->value = eq + 1;
            spec_ptrs[q.n_extra_specs++] = sp;
            break;
        }
        case OPT_PROJECT:
            projects[q.n_projects++] = optarg;
            break;
        case OPT_ID:
            q.id = optarg;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one flavor name (see 'yun %s --help')", cmd, cmd);
    if (!has_vcpus || !has_ram || !has_disk)
        return cli_usage_error("'%s' needs --vcpus, --ram (MiB) and --disk (GiB)", cmd);
    if (q.n_projects && !q.is_private)
        return cli_usage_error("'%s --project' shares a private flavor: add --private", cmd);
    q.name = argv[optind];
    q.extra_specs = spec_ptrs;
    q.projects = projects;
    ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_FLAVOR_CREATE, &q.base, &yun__flavor_reply__descriptor, &m);
    if (r)
        return r;
    r = print_flavor(cli, ((Yun__FlavorReply *)m)->flavor);
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

static int
flavor_list(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = { { "long", no_argument, NULL, OPT_LONG }, {} };
    bool full = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":l", opts, NULL)) >= 0) {
        if (c != 'l' && c != OPT_LONG)
            return cli_option_error("flavor list", c, argv);
        full = true;
    }
    if (optind != argc)
        return cli_usage_error("'flavor list' takes no arguments, only options");
    Yun__FlavorListRequest q = YUN__FLAVOR_LIST_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_FLAVOR_LIST, &q.base, &yun__flavor_list_reply__descriptor,
                     &m);
    if (r)
        return r;
    Yun__FlavorListReply *y = (Yun__FlavorListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t i = 0; i < y->n_flavors; i++)
        flavor_row(t, y->flavors[i], full || cli->out.format != CLI_FORMAT_TABLE);
    protobuf_c_message_free_unpacked(m, NULL);
    return cli_print(cli, t);
}

static int
flavor_show(struct cli *cli, int argc, char **argv)
{
    if (argc != 2 || (argv[1][0] == '-' && argv[1][1]))
        return cli_usage_error("'flavor show' takes one flavor name or id");
    Yun__FlavorRef q = YUN__FLAVOR_REF__INIT;
    q.flavor = argv[1];
    ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_FLAVOR_SHOW, &q.base, &yun__flavor_reply__descriptor, &m);
    if (r)
        return r;
    r = print_flavor(cli, ((Yun__FlavorReply *)m)->flavor);
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

static int
flavor_delete(struct cli *cli, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("'flavor delete' takes one or more flavor names or ids");
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error("unknown option '%s' for 'flavor delete'", argv[i]);
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        Yun__FlavorRef q = YUN__FLAVOR_REF__INIT;
        q.flavor = argv[i];
        ProtobufCMessage *m = NULL;
        if (cli_call(cli, YUN__OP__OP_FLAVOR_DELETE, &q.base, &yun__flavor_reply__descriptor,
                     &m))
            rc = 1;
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
    }
    return rc;
}

const struct cli_verb cli_flavor_verbs[] = {
    { "create", flavor_create,
      "NAME --vcpus N --ram MB --disk GB [OPTIONS]", "Create a flavor (admin)",
      "Options:\n"
      "  --vcpus N              Virtual CPUs\n"
      "  --ram MB               Memory in MiB\n"
      "  --disk GB              Root disk in GiB (0: the image's size)\n"
      "  --ephemeral GB         An ephemeral disk in GiB (default 0)\n"
      "  --swap MB              A swap disk in MiB (default 0)\n"
      "  --private              Only admins and the --project projects may use it\n"
      "  --project PROJECT      A project a private flavor is shared with (repeatable)\n"
      "  --property KEY=VALUE   An extra spec (repeatable)\n"
      "  --id ID                Use this id instead of a new UUID\n" },
    { "list", flavor_list, "[--long]", "List the flavors you may use, smallest first" },
    { "show", flavor_show, "FLAVOR", "Show every field of a flavor" },
    { "delete", flavor_delete, "FLAVOR...",
      "Delete flavors (admin); servers keep their copy" },
    {},
};
