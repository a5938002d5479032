/* SPDX-License-Identifier: Apache-2.0
 * cli.h: what the `yun` command's object modules share: the global
 * options, the connection to the scheduler and the command tables. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "output.h"
#include "yun.pb-c.h"

struct yun_bus_client;
struct cli_token;

struct cli {
    const char *url;      /* --url or YUN_URL; else the key file's */
    const char *key_file; /* --key-file or YUN_KEY_FILE; else the default */
    int timeout_ms;       /* --timeout (seconds) or YUN_TIMEOUT */
    int wait_timeout_ms;  /* --timeout when given on the line (bounds --wait); 0 = not */
    struct cli_output out;
    struct yun_bus_client *bus;
    char *bus_url;        /* the URL connected to */
    struct cli_token *token; /* auth.c: the token this run sends */
    bool token_tried;     /* the cache (and the environment) were looked at */
    bool token_from_cache; /* 'token' came from the cache, not a login of this run */
};

/* A verb of an object: "host list". 'run' gets argv[0] = the verb and
 * returns the exit code: 0 ok, 1 failed, 2 usage. A verb with 'verbs' has
 * sub-verbs instead of 'run' ("image member add"). */
struct cli_verb {
    const char *name;
    int (*run)(struct cli *cli, int argc, char **argv);
    const char *args;
    const char *help;
    const char *details;          /* optional: the options, for --help */
    const struct cli_verb *verbs; /* optional: sub-verbs */
};

struct cli_object {
    const char *name;
    const struct cli_verb *verbs;
    const char *help;
    const struct cli_verb *command; /* instead of verbs: "yun login [ARGS]" */
};

struct Yun__ImageRecord;
/* Prints every field of an image as `yun image show` does (image.c). */
int cli_image_print(struct cli *cli, const struct Yun__ImageRecord *im);

extern const struct cli_verb cli_host_verbs[];
extern const struct cli_verb cli_image_verbs[];
extern const struct cli_verb cli_audit_verbs[];
extern const struct cli_verb cli_project_verbs[];
extern const struct cli_verb cli_user_verbs[];
extern const struct cli_verb cli_role_verbs[];
extern const struct cli_verb cli_keypair_verbs[];
extern const struct cli_verb cli_flavor_verbs[];
extern const struct cli_verb cli_server_verbs[];
extern const struct cli_verb cli_network_verbs[];
extern const struct cli_verb cli_subnet_verbs[];
extern const struct cli_verb cli_port_verbs[];
extern const struct cli_verb cli_security_verbs[];
extern const struct cli_verb cli_login_command;
extern const struct cli_verb cli_logout_command;

/* Calls 'op' on the scheduler, connecting first if needed, with the
 * user's token (auth.c; logging in first when the environment says how).
 * On failure prints "yun: <message>" and returns 1; 0 on success. */
int cli_call(struct cli *cli, Yun__Op op, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret);
/* As cli_call; a failed call's code goes to '*ret_err' (when not NULL),
 * and then token errors are not printed: the caller handles them. */
int cli_call_raw(struct cli *cli, Yun__Op op, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret,
                 int *ret_err);

/* auth.c: before a call of 'op', the token to send ('*ret_token' NULL:
 * none), from the cache or a login with YUN_USERNAME and
 * YUN_PASSWORD_FILE; returns 0 or an exit code. After a failed call,
 * cli_auth_retry() says whether to call again (a fresh login replaced a
 * cached token the scheduler refused). cli_auth_hint() is a sentence for
 * an authentication error, or NULL. */
int cli_auth_prepare(struct cli *cli, Yun__Op op, const char **ret_token);
bool cli_auth_retry(struct cli *cli, int r);
const char *cli_auth_hint(const struct cli *cli, int r);
void cli_auth_done(struct cli *cli);

/* network.c: a cell holding a list of strings (a JSON array; joined by
 * ", " in tables). */
void cli_table_strv(struct cli_table *t, const char *key, char *const *v, size_t n);

/* Prints a table with the global output options; returns the exit code. */
int cli_print(struct cli *cli, struct cli_table *t);

/* Prints "yun: ..." to stderr and returns 2 (usage) or 1. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reports a getopt_long() failure ('c' is '?' or ':', with opterr = 0 and
 * an optstring starting with ':') for command 'cmd' ("image create");
 * returns 2. */
int cli_option_error(const char *cmd, int c, char **argv);

