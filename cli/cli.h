/* SPDX-License-Identifier: Apache-2.0
 * cli.h: what the `yun` command's object modules share: the global
 * options, the connection to the scheduler and the command tables. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "output.h"
#include "yun.pb-c.h"

struct yun_bus_client;

struct cli {
    const char *url;      /* --url or YUN_URL; else the key file's */
    const char *key_file; /* --key-file or YUN_KEY_FILE; else the default */
    int timeout_ms;       /* --timeout (seconds) or YUN_TIMEOUT */
    struct cli_output out;
    struct yun_bus_client *bus;
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
};

extern const struct cli_verb cli_host_verbs[];
extern const struct cli_verb cli_image_verbs[];
extern const struct cli_verb cli_audit_verbs[];

/* Calls 'op' on the scheduler, connecting first if needed. On failure
 * prints "yun: <message>" and returns 1; 0 on success. */
int cli_call(struct cli *cli, Yun__Op op, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **ret);

/* Prints a table with the global output options; returns the exit code. */
int cli_print(struct cli *cli, struct cli_table *t);

/* Prints "yun: ..." to stderr and returns 2 (usage) or 1. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reports a getopt_long() failure ('c' is '?' or ':', with opterr = 0 and
 * an optstring starting with ':') for command 'cmd' ("image create");
 * returns 2. */
int cli_option_error(const char *cmd, int c, char **argv);

