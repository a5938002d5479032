/* SPDX-License-Identifier: Apache-2.0
 * identity.c: `yun project create|list|show|set|delete`, `yun user
 * create|list|show|set|disable|enable|delete` and `yun role add|remove`,
 * `yun role assignment list`: identity administration (admins only;
 * proto/identity.proto). Users and projects are named by name or id.
 * Passwords come from files (--password-file) or a terminal prompt
 * (--password-prompt), never from the command line. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "cli.h"
#include "prompt.h"
#include "util.h"
#include "identity.pb-c.h"

static void
message_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_message_ _cleanup_(message_freep)

/* --- projects --------------------------------------------------------------- */

static void
project_row(struct cli_table *t, const Yun__ProjectRecord *p, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", p->id);
    cli_table_str(t, "name", p->name);
    cli_table_bool(t, "enabled", p->enabled);
    cli_table_str(t, "description", p->description);
    if (!full)
        return;
    cli_table_str(t, "domain", p->domain);
    cli_table_time(t, "created_at", p->created_us);
    cli_table_time(t, "updated_at", p->updated_us);
}

static int
print_project(struct cli *cli, const Yun__ProjectRecord *p)
{
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    project_row(t, p, true);
    return cli_print(cli, t);
}

enum {
    OPT_DESCRIPTION = 0x100,
    OPT_DISABLE,
    OPT_ENABLE,
    OPT_NAME,
    OPT_PASSWORD_FILE,
    OPT_PASSWORD_PROMPT,
    OPT_PROJECT,
    OPT_EMAIL,
    OPT_DEFAULT_PROJECT,
    OPT_USER,
    OPT_UNLOCK,
    OPT_LONG,
};

static int
project_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "project create";
    static const struct option opts[] = {
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        { "disable", no_argument, NULL, OPT_DISABLE },
        {},
    };
    Yun__ProjectCreateRequest q = YUN__PROJECT_CREATE_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_DESCRIPTION)
            q.description = optarg;
        else if (c == OPT_DISABLE)
            q.disabled = true;
        else
            return cli_option_error(cmd, c, argv);
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one project name", cmd);
    q.name = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_PROJECT_CREATE, &q.base, &yun__project_reply__descriptor,
                     &m);
    if (r)
        return r;
    return print_project(cli, ((Yun__ProjectReply *)m)->project);
}

static int
project_list(struct cli *cli, int argc, char **argv)
{
    if (argc != 1)
        return cli_usage_error("'project list' takes no arguments");
    Yun__ProjectListRequest q = YUN__PROJECT_LIST_REQUEST__INIT;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_PROJECT_LIST, &q.base,
                     &yun__project_list_reply__descriptor, &m);
    if (r)
        return r;
    const Yun__ProjectListReply *y = (const Yun__ProjectListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t i = 0; i < y->n_projects; i++)
        project_row(t, y->projects[i], cli->out.format != CLI_FORMAT_TABLE);
    return cli_print(cli, t);
}

static int
project_ref_call(struct cli *cli, Yun__Op op, const char *ref, bool print)
{
    Yun__ProjectRef q = YUN__PROJECT_REF__INIT;
    q.project = (char *)ref;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, op, &q.base, &yun__project_reply__descriptor, &m);
    if (r || !print)
        return r;
    return print_project(cli, ((Yun__ProjectReply *)m)->project);
}

static int
project_show(struct cli *cli, int argc, char **argv)
{
    if (argc != 2)
        return cli_usage_error("'project show' takes one project name or id");
    return project_ref_call(cli, YUN__OP__OP_PROJECT_SHOW, argv[1], true);
}

static int
project_delete(struct cli *cli, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("'project delete' takes one or more project names or ids");
    int failed = 0;
    for (int i = 1; i < argc; i++)
        failed |= project_ref_call(cli, YUN__OP__OP_PROJECT_DELETE, argv[i], false);
    return failed ? 1 : 0;
}

static int
project_set(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "project set";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        { "enable", no_argument, NULL, OPT_ENABLE },
        { "disable", no_argument, NULL, OPT_DISABLE },
        {},
    };
    Yun__ProjectSetRequest q = YUN__PROJECT_SET_REQUEST__INIT;
    bool any = false;
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
        case OPT_ENABLE:
        case OPT_DISABLE:
            if (q.set_enabled && q.enabled != (c == OPT_ENABLE))
                return cli_usage_error("'%s' takes one of --enable and --disable", cmd);
            q.set_enabled = true;
            q.enabled = c == OPT_ENABLE;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
        any = true;
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one project name or id", cmd);
    if (!any)
        return cli_usage_error("'%s' needs something to change (see 'yun %s --help')", cmd,
                               cmd);
    q.project = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_PROJECT_SET, &q.base, &yun__project_reply__descriptor, &m);
    if (r)
        return r;
    return print_project(cli, ((Yun__ProjectReply *)m)->project);
}

const struct cli_verb cli_project_verbs[] = {
    { "create", project_create, "NAME [--description TEXT] [--disable]", "Create a project" },
    { "list", project_list, "", "List the projects" },
    { "show", project_show, "PROJECT", "Show a project" },
    { "set", project_set, "PROJECT [--name N] [--description TEXT] [--enable|--disable]",
      "Change a project; disabling it revokes its tokens" },
    { "delete", project_delete, "PROJECT...",
      "Delete projects with their role assignments, revoking their tokens" },
    {},
};

/* --- users ------------------------------------------------------------------ */

static void
user_row(struct cli_table *t, const Yun__UserRecord *u, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "id", u->id);
    cli_table_str(t, "name", u->name);
    cli_table_bool(t, "enabled", u->enabled);
    cli_table_str(t, "email", u->email);
    cli_table_str(t, "default_project_id", u->default_project_id);
    if (!full)
        return;
    cli_table_str(t, "domain", u->domain);
    cli_table_bool(t, "locked", u->locked_until_us > yun_wall_us());
    cli_table_time(t, "locked_until", u->locked_until_us);
    cli_table_uint(t, "failed_logins", u->failed_logins);
    cli_table_time(t, "password_changed_at", u->password_changed_us);
    cli_table_time(t, "last_login_at", u->last_login_us);
    cli_table_time(t, "created_at", u->created_us);
    cli_table_time(t, "updated_at", u->updated_us);
}

static int
print_user(struct cli *cli, const Yun__UserRecord *u)
{
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    user_row(t, u, true);
    return cli_print(cli, t);
}

/* The password of --password-file F or of --password-prompt. */
static int
read_new_password(const char *file, bool prompt, const char *user, char **ret)
{
    int r;
    if (file) {
        r = yun_password_read_file(file, ret);
        if (r < 0)
            fprintf(stderr, "yun: cannot read the password in '%s': %s\n", file,
                    r == -EINVAL ? "it holds no password (one line)" : strerror(-r));
        return r < 0 ? 1 : 0;
    }
    if (!prompt)
        return 0;
    char text[300];
    snprintf(text, sizeof text, "New password for '%.255s': ", user);
    r = yun_password_prompt(text, true, ret);
    if (r == -ENOTTY)
        return cli_usage_error("--password-prompt needs a terminal: use --password-file");
    if (r < 0) {
        fprintf(stderr, "yun: %s\n", r == -EILSEQ ? "the two passwords differ"
                                                  : "no password read");
        return 1;
    }
    return 0;
}

static int
user_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "user create";
    static const struct option opts[] = {
        { "password-file", required_argument, NULL, OPT_PASSWORD_FILE },
        { "password-prompt", no_argument, NULL, OPT_PASSWORD_PROMPT },
        { "project", required_argument, NULL, OPT_PROJECT },
        { "email", required_argument, NULL, OPT_EMAIL },
        { "disable", no_argument, NULL, OPT_DISABLE },
        {},
    };
    Yun__UserCreateRequest q = YUN__USER_CREATE_REQUEST__INIT;
    const char *password_file = NULL;
    bool prompt = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_PASSWORD_FILE:
            password_file = optarg;
            break;
        case OPT_PASSWORD_PROMPT:
            prompt = true;
            break;
        case OPT_PROJECT:
            q.default_project = optarg;
            break;
        case OPT_EMAIL:
            q.email = optarg;
            break;
        case OPT_DISABLE:
            q.disabled = true;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one user name", cmd);
    if (password_file && prompt)
        return cli_usage_error("'%s' takes one of --password-file and --password-prompt", cmd);
    q.name = argv[optind];
    _cleanup_(yun_password_freep) char *password = NULL;
    int r = read_new_password(password_file, prompt, q.name, &password);
    if (r)
        return r;
    if (!password)
        fprintf(stderr, "yun: note: user '%s' has no password and cannot log in until "
                        "'yun user set %s --password-file F'\n", q.name, q.name);
    q.password = password ? password : (char *)"";
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_USER_CREATE, &q.base, &yun__user_reply__descriptor, &m);
    if (r)
        return r;
    return print_user(cli, ((Yun__UserReply *)m)->user);
}

static int
user_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "user list";
    static const struct option opts[] = {
        { "project", required_argument, NULL, OPT_PROJECT },
        { "long", no_argument, NULL, OPT_LONG },
        {},
    };
    Yun__UserListRequest q = YUN__USER_LIST_REQUEST__INIT;
    bool full = cli->out.format != CLI_FORMAT_TABLE;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":l", opts, NULL)) >= 0) {
        if (c == OPT_PROJECT)
            q.project = optarg;
        else if (c == OPT_LONG || c == 'l')
            full = true;
        else
            return cli_option_error(cmd, c, argv);
    }
    if (optind != argc)
        return cli_usage_error("'%s' takes no arguments, only options", cmd);
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_USER_LIST, &q.base, &yun__user_list_reply__descriptor, &m);
    if (r)
        return r;
    const Yun__UserListReply *y = (const Yun__UserListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t i = 0; i < y->n_users; i++)
        user_row(t, y->users[i], full);
    return cli_print(cli, t);
}

static int
user_ref_call(struct cli *cli, Yun__Op op, const char *ref, bool print)
{
    Yun__UserRef q = YUN__USER_REF__INIT;
    q.user = (char *)ref;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, op, &q.base, &yun__user_reply__descriptor, &m);
    if (r || !print)
        return r;
    return print_user(cli, ((Yun__UserReply *)m)->user);
}

static int
user_show(struct cli *cli, int argc, char **argv)
{
    if (argc != 2)
        return cli_usage_error("'user show' takes one user name or id");
    return user_ref_call(cli, YUN__OP__OP_USER_SHOW, argv[1], true);
}

static int
user_delete(struct cli *cli, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("'user delete' takes one or more user names or ids");
    int failed = 0;
    for (int i = 1; i < argc; i++)
        failed |= user_ref_call(cli, YUN__OP__OP_USER_DELETE, argv[i], false);
    return failed ? 1 : 0;
}

static int
user_set_call(struct cli *cli, Yun__UserSetRequest *q)
{
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_USER_SET, &q->base, &yun__user_reply__descriptor, &m);
    if (r)
        return r;
    return print_user(cli, ((Yun__UserReply *)m)->user);
}

static int
user_set(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "user set";
    static const struct option opts[] = {
        { "name", required_argument, NULL, OPT_NAME },
        { "email", required_argument, NULL, OPT_EMAIL },
        { "password-file", required_argument, NULL, OPT_PASSWORD_FILE },
        { "password-prompt", no_argument, NULL, OPT_PASSWORD_PROMPT },
        { "default-project", required_argument, NULL, OPT_DEFAULT_PROJECT },
        { "enable", no_argument, NULL, OPT_ENABLE },
        { "disable", no_argument, NULL, OPT_DISABLE },
        { "unlock", no_argument, NULL, OPT_UNLOCK },
        {},
    };
    Yun__UserSetRequest q = YUN__USER_SET_REQUEST__INIT;
    const char *password_file = NULL;
    bool prompt = false, any = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_NAME:
            q.name = optarg;
            break;
        case OPT_EMAIL:
            q.set_email = true;
            q.email = optarg;
            break;
        case OPT_PASSWORD_FILE:
            password_file = optarg;
            break;
        case OPT_PASSWORD_PROMPT:
            prompt = true;
            break;
        case OPT_DEFAULT_PROJECT:
            q.set_default_project = true;
            q.default_project = optarg;
            break;
        case OPT_ENABLE:
        case OPT_DISABLE:
            if (q.set_enabled && q.enabled != (c == OPT_ENABLE))
                return cli_usage_error("'%s' takes one of --enable and --disable", cmd);
            q.set_enabled = true;
            q.enabled = c == OPT_ENABLE;
            break;
        case OPT_UNLOCK:
            q.unlock = true;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
        any = true;
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one user name or id", cmd);
    if (!any)
        return cli_usage_error("'%s' needs something to change (see 'yun %s --help')", cmd,
                               cmd);
    if (password_file && prompt)
        return cli_usage_error("'%s' takes one of --password-file and --password-prompt", cmd);
    q.user = argv[optind];
    _cleanup_(yun_password_freep) char *password = NULL;
    int r = read_new_password(password_file, prompt, q.user, &password);
    if (r)
        return r;
    q.password = password ? password : (char *)"";
    return user_set_call(cli, &q);
}

static int
user_set_enabled(struct cli *cli, int argc, char **argv, bool enabled)
{
    if (argc != 2)
        return cli_usage_error("'user %s' takes one user name or id",
                               enabled ? "enable" : "disable");
    Yun__UserSetRequest q = YUN__USER_SET_REQUEST__INIT;
    q.user = argv[1];
    q.set_enabled = true;
    q.enabled = enabled;
    return user_set_call(cli, &q);
}

static int
user_disable(struct cli *cli, int argc, char **argv)
{
    return user_set_enabled(cli, argc, argv, false);
}

static int
user_enable(struct cli *cli, int argc, char **argv)
{
    return user_set_enabled(cli, argc, argv, true);
}

const struct cli_verb cli_user_verbs[] = {
    { "create", user_create,
      "NAME [--password-file F | --password-prompt] [--project P] [--email E] [--disable]",
      "Create a user (--project: its default project)" },
    { "list", user_list, "[--project P] [--long]",
      "List users (--project: those with a role there)" },
    { "show", user_show, "USER", "Show a user" },
    { "set", user_set,
      "USER [--name N] [--email E] [--password-file F | --password-prompt] "
      "[--default-project P] [--enable|--disable] [--unlock]",
      "Change a user; a new password or disabling revokes its tokens" },
    { "disable", user_disable, "USER", "Disable a user and revoke its tokens" },
    { "enable", user_enable, "USER", "Enable a user" },
    { "delete", user_delete, "USER...",
      "Delete users with their roles and keypairs, revoking their tokens" },
    {},
};

/* --- role assignments ------------------------------------------------------- */

static void
assignment_row(struct cli_table *t, const Yun__RoleAssignment *a)
{
    cli_table_row(t);
    cli_table_str(t, "role", a->role);
    cli_table_str(t, "user", a->user_name);
    cli_table_str(t, "project", a->project_name);
    cli_table_str(t, "user_id", a->user_id);
    cli_table_str(t, "project_id", a->project_id);
}

static int
print_assignments(struct cli *cli, const Yun__RoleAssignmentListReply *y, bool single)
{
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(single);
    for (size_t i = 0; i < y->n_assignments; i++)
        assignment_row(t, y->assignments[i]);
    return cli_print(cli, t);
}

/* --user U and --project P, both optional unless 'need_both'. */
static int
user_project_options(const char *cmd, int argc, char **argv, bool need_both,
                     const char **ret_user, const char **ret_project)
{
    static const struct option opts[] = {
        { "user", required_argument, NULL, OPT_USER },
        { "project", required_argument, NULL, OPT_PROJECT },
        {},
    };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_USER)
            *ret_user = optarg;
        else if (c == OPT_PROJECT)
            *ret_project = optarg;
        else
            return cli_option_error(cmd, c, argv);
    }
    if (need_both && (!**ret_user || !**ret_project))
        return cli_usage_error("'%s' needs --user U and --project P", cmd);
    return 0;
}

static int
role_change(struct cli *cli, int argc, char **argv, Yun__Op op, const char *cmd)
{
    const char *user = "", *project = "";
    int r = user_project_options(cmd, argc, argv, true, &user, &project);
    if (r)
        return r;
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one role: admin, member or reader", cmd);
    Yun__RoleAssignmentRequest q = YUN__ROLE_ASSIGNMENT_REQUEST__INIT;
    q.role = argv[optind];
    q.user = (char *)user;
    q.project = (char *)project;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, op, &q.base, &yun__role_assignment_list_reply__descriptor, &m);
    if (r)
        return r;
    return print_assignments(cli, (const Yun__RoleAssignmentListReply *)m, true);
}

static int
role_add(struct cli *cli, int argc, char **argv)
{
    return role_change(cli, argc, argv, YUN__OP__OP_ROLE_ADD, "role add");
}

static int
role_remove(struct cli *cli, int argc, char **argv)
{
    return role_change(cli, argc, argv, YUN__OP__OP_ROLE_REMOVE, "role remove");
}

static int
role_assignment_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "role assignment list";
    Yun__RoleAssignmentListRequest q = YUN__ROLE_ASSIGNMENT_LIST_REQUEST__INIT;
    const char *user = "", *project = "";
    int r = user_project_options(cmd, argc, argv, false, &user, &project);
    if (r)
        return r;
    if (optind != argc)
        return cli_usage_error("'%s' takes no arguments, only options", cmd);
    q.user = (char *)user;
    q.project = (char *)project;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_ROLE_ASSIGNMENT_LIST, &q.base,
                 &yun__role_assignment_list_reply__descriptor, &m);
    if (r)
        return r;
    return print_assignments(cli, (const Yun__RoleAssignmentListReply *)m, false);
}

static const struct cli_verb role_assignment_verbs[] = {
    { "list", role_assignment_list, "[--user U] [--project P]",
      "List role assignments, of a user or in a project" },
    {},
};

const struct cli_verb cli_role_verbs[] = {
    { "add", role_add, "ROLE --user U --project P",
      "Give a user a role (admin, member, reader) on a project" },
    { "remove", role_remove, "ROLE --user U --project P",
      "Take a role away; revokes the user's tokens for that project" },
    { "assignment", NULL, NULL, "Role assignments", NULL, role_assignment_verbs },
    {},
};
