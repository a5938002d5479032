/* SPDX-License-Identifier: Apache-2.0
 * auth.c: who the CLI acts as. `yun login` gets a token for a user and a
 * project and keeps it in the token cache ($YUN_CONFIG_DIR/token, else
 * ~/.config/yun/token; mode 0600, with the scheduler's URL, the user, the
 * project and the expiry); every later command sends it. As the OpenStack
 * CLI reads OS_*, the CLI reads YUN_USERNAME, YUN_PASSWORD_FILE (or
 * YUN_PASSWORD) and YUN_PROJECT: when they are set and the cache holds no
 * token for them, the CLI logs in by itself first, and logs in again once
 * when the scheduler refuses the cached token (expired, revoked, keys
 * rotated out). `yun logout` revokes the token and forgets it.
 *
 * The bus key (YUN_KEY_FILE) says which client speaks; the token says
 * which user acts. Neighbours: main.c (cli_call), identity.c. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus.h"
#include "cleanup.h"
#include "cli.h"
#include "err.h"
#include "prompt.h"
#include "rpc.h"
#include "seal.h"
#include "util.h"
#include "identity.pb-c.h"

#define TOKEN_FILE_MAX 16384
/* A cached token this close to its expiry is not used. */
#define TOKEN_MARGIN_US (30ull * 1000000u)

struct cli_token {
    char *url;
    char *user, *user_id;
    char *project, *project_id;
    char *token;
    uint64_t expires_us;
};

static void
token_free(struct cli_token *t)
{
    if (!t)
        return;
    free(t->url);
    free(t->user);
    free(t->user_id);
    free(t->project);
    free(t->project_id);
    if (t->token) {
        yun_wipe(t->token, strlen(t->token));
        free(t->token);
    }
    free(t);
}

void
cli_auth_done(struct cli *cli)
{
    token_free(cli->token);
    cli->token = NULL;
}

/* $YUN_CONFIG_DIR, $XDG_CONFIG_HOME/yun or ~/.config/yun. */
static int
config_dir(char **ret)
{
    const char *d = getenv("YUN_CONFIG_DIR");
    int n;
    if (d && *d) {
        n = asprintf(ret, "%s", d);
    } else if ((d = getenv("XDG_CONFIG_HOME")) && *d) {
        n = asprintf(ret, "%s/yun", d);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home)
            return -ENOENT;
        n = asprintf(ret, "%s/.config/yun", home);
    }
    return n < 0 ? -ENOMEM : 0;
}

static int
token_path(char **ret)
{
    _cleanup_free_ char *dir = NULL;
    int r = config_dir(&dir);
    if (r < 0)
        return r;
    return asprintf(ret, "%s/token", dir) < 0 ? -ENOMEM : 0;
}

static int
set_field(char **field, const char *value)
{
    char *v = strdup(value);
    if (!v)
        return -ENOMEM;
    free(*field);
    *field = v;
    return 0;
}

/* Parses "key = value" lines; unknown keys are ignored. */
static int
token_parse(char *text, struct cli_token *t)
{
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (*line == '#' || !*line)
            continue;
        char *eq = strstr(line, " = ");
        if (!eq)
            return -EBADMSG;
        *eq = '\0';
        const char *key = line, *val = eq + 3;
        int r = 0;
        if (strcmp(key, "url") == 0)
            r = set_field(&t->url, val);
        else if (strcmp(key, "user") == 0)
            r = set_field(&t->user, val);
        else if (strcmp(key, "user_id") == 0)
            r = set_field(&t->user_id, val);
        else if (strcmp(key, "project") == 0)
            r = set_field(&t->project, val);
        else if (strcmp(key, "project_id") == 0)
            r = set_field(&t->project_id, val);
        else if (strcmp(key, "token") == 0)
            r = set_field(&t->token, val);
        else if (strcmp(key, "expires_us") == 0)
            r = yun_safe_atou64(val, &t->expires_us);
        if (r < 0)
            return r;
    }
    return t->token && t->url && t->user && t->user_id && t->project && t->project_id
               ? 0 : -EBADMSG;
}

static int
token_load(struct cli_token **ret)
{
    _cleanup_free_ char *path = NULL;
    int r = token_path(&path);
    if (r < 0)
        return r;
    r = yun_check_private_file(path);
    if (r == -EPERM) {
        fprintf(stderr, "yun: ignoring the token cache '%s': others may read it\n", path);
        return -ENOENT;
    }
    if (r < 0)
        return r;
    char *text = NULL;
    size_t size = 0;
    r = yun_read_file(path, TOKEN_FILE_MAX, &text, &size);
    if (r < 0)
        return r;
    struct cli_token *t = calloc(1, sizeof *t);
    r = t ? token_parse(text, t) : -ENOMEM;
    yun_wipe(text, size);
    free(text);
    if (r < 0) {
        token_free(t);
        return r;
    }
    *ret = t;
    return 0;
}

static bool
has_newline(const char *s)
{
    return strchr(s, '\n') != NULL;
}

static int
token_save(const struct cli_token *t)
{
    _cleanup_free_ char *dir = NULL, *path = NULL;
    int r = config_dir(&dir);
    if (r < 0)
        return r;
    r = yun_mkdir_p(dir, 0700);
    if (r < 0)
        return r;
    if (asprintf(&path, "%s/token", dir) < 0)
        return -ENOMEM;
    if (has_newline(t->url) || has_newline(t->user) || has_newline(t->project))
        return -EINVAL;
    char *text = NULL;
    int n = asprintf(&text,
                     "# yun token cache, written by 'yun login'; a secret: keep it private\n"
                     "url = %s\nuser = %s\nuser_id = %s\nproject = %s\nproject_id = %s\n"
                     "expires_us = %llu\ntoken = %s\n",
                     t->url, t->user, t->user_id, t->project, t->project_id,
                     (unsigned long long)t->expires_us, t->token);
    if (n < 0)
        return -ENOMEM;
    r = yun_write_file_atomic(path, text, (size_t)n, 0600);
    yun_wipe(text, (size_t)n);
    free(text);
    return r;
}

static void
token_forget(void)
{
    _cleanup_free_ char *path = NULL;
    if (token_path(&path) == 0)
        (void)unlink(path);
}

/* Does the cached token suit this command: same scheduler, not about to
 * expire, and the user and project YUN_USERNAME and YUN_PROJECT name (by
 * name or id) when they are set? */
static bool
token_suits(const struct cli *cli, const struct cli_token *t)
{
    const char *user = getenv("YUN_USERNAME"), *project = getenv("YUN_PROJECT");
    if (cli->bus_url && strcmp(t->url, cli->bus_url) != 0)
        return false;
    if (t->expires_us <= yun_wall_us() + TOKEN_MARGIN_US)
        return false;
    if (user && *user && strcmp(user, t->user) != 0 && strcmp(user, t->user_id) != 0)
        return false;
    if (project && *project && strcmp(project, t->project) != 0 &&
        strcmp(project, t->project_id) != 0)
        return false;
    return true;
}

/* The password of the environment: YUN_PASSWORD_FILE, else YUN_PASSWORD.
 * -ENOENT when neither is set. */
static int
env_password(char **ret)
{
    const char *file = getenv("YUN_PASSWORD_FILE");
    if (file && *file) {
        int r = yun_password_read_file(file, ret);
        if (r < 0)
            fprintf(stderr, "yun: cannot read the password in YUN_PASSWORD_FILE '%s': %s\n",
                    file, r == -EINVAL ? "it holds no password (one line)" : strerror(-r));
        return r < 0 ? r : 0;
    }
    const char *pw = getenv("YUN_PASSWORD");
    if (pw && *pw) {
        *ret = strdup(pw);
        return *ret ? 0 : -ENOMEM;
    }
    return -ENOENT;
}

static bool
env_has_credentials(void)
{
    const char *user = getenv("YUN_USERNAME");
    const char *file = getenv("YUN_PASSWORD_FILE"), *pw = getenv("YUN_PASSWORD");
    return user && *user && ((file && *file) || (pw && *pw));
}

/* Logs in and makes the token the one this CLI run uses (and caches).
 * Prints what went wrong and returns 1, or 0 with the reply in '*ret'
 * (when not NULL). */
static int
login(struct cli *cli, const char *user, const char *password, const char *project,
      Yun__LoginReply **ret)
{
    Yun__LoginRequest q = YUN__LOGIN_REQUEST__INIT;
    q.user = (char *)user;
    q.password = (char *)password;
    q.project = (char *)(project ? project : "");
    ProtobufCMessage *m = NULL;
    /* A login costs the scheduler a third of a second of a worker, and
     * waits behind the logins queued before it. */
    int r = cli_call_raw(cli, YUN__OP__OP_LOGIN, &q.base, &yun__login_reply__descriptor, &m,
                         NULL);
    if (r)
        return r;
    Yun__LoginReply *y = (Yun__LoginReply *)m;
    struct cli_token *t = calloc(1, sizeof *t);
    if (!t || !(t->url = strdup(cli->bus_url ? cli->bus_url : "")) ||
        !(t->user = strdup(y->user_name)) || !(t->user_id = strdup(y->user_id)) ||
        !(t->project = strdup(y->project_name)) || !(t->project_id = strdup(y->project_id)) ||
        !(t->token = strdup(y->token))) {
        token_free(t);
        protobuf_c_message_free_unpacked(m, NULL);
        fprintf(stderr, "yun: out of memory\n");
        return 1;
    }
    t->expires_us = y->expires_us;
    r = token_save(t);
    if (r < 0)
        fprintf(stderr, "yun: cannot write the token cache: %s (the token is used for this "
                        "command only)\n", strerror(-r));
    token_free(cli->token);
    cli->token = t;
    cli->token_from_cache = false;
    if (ret)
        *ret = y;
    else
        protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* Logs in with the environment's credentials. */
static int
login_from_env(struct cli *cli)
{
    _cleanup_(yun_password_freep) char *password = NULL;
    int r = env_password(&password);
    if (r < 0)
        return 1;
    return login(cli, getenv("YUN_USERNAME"), password, getenv("YUN_PROJECT"), NULL);
}

int
cli_auth_prepare(struct cli *cli, Yun__Op op, const char **ret_token)
{
    *ret_token = NULL;
    if (op == YUN__OP__OP_LOGIN)
        return 0;
    if (!cli->token && !cli->token_tried) {
        cli->token_tried = true;
        struct cli_token *t = NULL;
        if (token_load(&t) == 0) {
            if (token_suits(cli, t)) {
                cli->token = t;
                cli->token_from_cache = true;
            } else {
                token_free(t);
            }
        }
        if (!cli->token && env_has_credentials()) {
            int r = login_from_env(cli);
            if (r)
                return r;
        }
    }
    if (cli->token)
        *ret_token = cli->token->token;
    return 0;
}

bool
cli_auth_retry(struct cli *cli, int r)
{
    if (r != YUN_E_TOKEN_INVALID && r != YUN_E_TOKEN_EXPIRED && r != YUN_E_TOKEN_REVOKED &&
        r != YUN_E_TOKEN_KEY)
        return false;
    if (!cli->token_from_cache || !env_has_credentials())
        return false;
    token_forget();
    cli_auth_done(cli);
    return login_from_env(cli) == 0;
}

const char *
cli_auth_hint(const struct cli *cli, int r)
{
    if (r == YUN_E_TOKEN_INVALID || r == YUN_E_TOKEN_EXPIRED || r == YUN_E_TOKEN_REVOKED ||
        r == YUN_E_TOKEN_KEY)
        return "log in again with 'yun login', or set YUN_USERNAME and YUN_PASSWORD_FILE";
    if (r == YUN_E_DENIED && !cli->token)
        return "log in with 'yun login', or set YUN_USERNAME and YUN_PASSWORD_FILE";
    return NULL;
}

/* --- yun login / yun logout ---------------------------------------------- */

static int
print_login(struct cli *cli, const Yun__LoginReply *y)
{
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    cli_table_row(t);
    cli_table_str(t, "user", y->user_name);
    cli_table_str(t, "user_id", y->user_id);
    cli_table_str(t, "project", y->project_name);
    cli_table_str(t, "project_id", y->project_id);
    size_t len = 1;
    for (size_t i = 0; i < y->n_roles; i++)
        len += strlen(y->roles[i]) + 2;
    _cleanup_free_ char *roles = calloc(1, len);
    if (!roles)
        abort();
    for (size_t i = 0; i < y->n_roles; i++) {
        if (i)
            strcat(roles, ", ");
        strcat(roles, y->roles[i]);
    }
    cli_table_str(t, "roles", roles);
    cli_table_time(t, "expires", y->expires_us);
    cli_table_str(t, "audit_id", y->audit_id);
    return cli_print(cli, t);
}

static int
cmd_login(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "login";
    static const struct option opts[] = {
        { "user", required_argument, NULL, 'u' },
        { "project", required_argument, NULL, 'p' },
        { "password-file", required_argument, NULL, 'P' },
        {},
    };
    const char *user = getenv("YUN_USERNAME"), *project = getenv("YUN_PROJECT");
    const char *password_file = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":u:p:", opts, NULL)) >= 0) {
        switch (c) {
        case 'u':
            user = optarg;
            break;
        case 'p':
            project = optarg;
            break;
        case 'P':
            password_file = optarg;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage_error("'login' takes no arguments, only options");
    if (!user || !*user)
        return cli_usage_error("'login' needs a user: give --user or set YUN_USERNAME");

    _cleanup_(yun_password_freep) char *password = NULL;
    int r;
    if (password_file) {
        r = yun_password_read_file(password_file, &password);
        if (r < 0) {
            fprintf(stderr, "yun: cannot read the password in '%s': %s\n", password_file,
                    r == -EINVAL ? "it holds no password (one line)" : strerror(-r));
            return 1;
        }
    } else if ((r = env_password(&password)) == -ENOENT) {
        char prompt[300];
        snprintf(prompt, sizeof prompt, "Password for '%.255s': ", user);
        r = yun_password_prompt(prompt, false, &password);
        if (r == -ENOTTY)
            return cli_usage_error("no password: give --password-file, set "
                                   "YUN_PASSWORD_FILE, or run on a terminal");
        if (r < 0) {
            fprintf(stderr, "yun: no password read\n");
            return 1;
        }
    } else if (r < 0) {
        return 1;
    }
    Yun__LoginReply *y = NULL;
    r = login(cli, user, password, project, &y);
    if (r)
        return r;
    r = print_login(cli, y);
    protobuf_c_message_free_unpacked(&y->base, NULL);
    return r;
}

static int
cmd_logout(struct cli *cli, int argc, char **argv)
{
    if (argc != 1)
        return cli_usage_error("'logout' takes no arguments");
    struct cli_token *t = NULL;
    if (token_load(&t) < 0) {
        fprintf(stderr, "yun: not logged in (no token cache)\n");
        return 0;
    }
    cli->token = t;
    cli->token_tried = true;
    ProtobufCMessage *m = NULL;
    int err = 0;
    int r = cli_call_raw(cli, YUN__OP__OP_LOGOUT, NULL, &yun__logout_reply__descriptor, &m,
                         &err);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    /* A token the scheduler refuses anyway is as good as revoked. */
    if (r == 0 || err == YUN_E_TOKEN_EXPIRED || err == YUN_E_TOKEN_REVOKED ||
        err == YUN_E_TOKEN_INVALID || err == YUN_E_TOKEN_KEY) {
        token_forget();
        fprintf(stderr, "yun: logged out%s\n", r == 0 ? "" : " (the token was no longer valid)");
        return 0;
    }
    return r;
}

const struct cli_verb cli_login_command = {
    "login", cmd_login, "[--user U] [--project P] [--password-file F]",
    "Log in: get a token and keep it for the next commands",
    "Options:\n"
    "  --user U            The user (name or id; default $YUN_USERNAME)\n"
    "  --project P         The project to act in (default $YUN_PROJECT, else the user's\n"
    "                      default project)\n"
    "  --password-file F   Read the password from F (else $YUN_PASSWORD_FILE,\n"
    "                      $YUN_PASSWORD, or a prompt on a terminal)\n"
    "The token goes to $YUN_CONFIG_DIR/token (default ~/.config/yun/token, mode 0600).\n",
};

const struct cli_verb cli_logout_command = {
    "logout", cmd_logout, "", "Revoke the cached token and forget it",
};
