/* SPDX-License-Identifier: Apache-2.0
 * keypair.c: `yun keypair create|import|list|show|delete`: the user's SSH
 * keypairs (proto/identity.proto). `create` prints the new private key in
 * OpenSSH format on standard output, the only time it exists outside the
 * user's hands: `yun keypair create demo > demo.pem && chmod 600 demo.pem`.
 * Admins may name another user with --user. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "cli.h"
#include "seal.h"
#include "util.h"
#include "identity.pb-c.h"

#define PUBLIC_KEY_FILE_MAX 16384

static void
message_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_message_ _cleanup_(message_freep)

static void
keypair_row(struct cli_table *t, const Yun__KeypairRecord *k, bool full)
{
    cli_table_row(t);
    cli_table_str(t, "name", k->name);
    cli_table_str(t, "type", k->type);
    cli_table_str(t, "fingerprint", k->fingerprint);
    if (!full)
        return;
    cli_table_uint(t, "bits", k->bits);
    cli_table_str(t, "fingerprint_md5", k->fingerprint_md5);
    cli_table_str(t, "user_id", k->user_id);
    cli_table_time(t, "created_at", k->created_us);
    cli_table_str(t, "public_key", k->public_key);
}

static int
print_keypair(struct cli *cli, const Yun__KeypairRecord *k)
{
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(true);
    keypair_row(t, k, true);
    if (k->private_key && *k->private_key)
        cli_table_str(t, "private_key", k->private_key);
    return cli_print(cli, t);
}

enum {
    OPT_TYPE = 0x100,
    OPT_BITS,
    OPT_USER,
    OPT_PUBLIC_KEY,
};

static int
keypair_create(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "keypair create";
    static const struct option opts[] = {
        { "type", required_argument, NULL, OPT_TYPE },
        { "bits", required_argument, NULL, OPT_BITS },
        { "user", required_argument, NULL, OPT_USER },
        {},
    };
    Yun__KeypairCreateRequest q = YUN__KEYPAIR_CREATE_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_TYPE:
            if (strcmp(optarg, "ed25519") != 0 && strcmp(optarg, "rsa") != 0 &&
                strcmp(optarg, "ecdsa") != 0)
                return cli_usage_error("unknown key type '%s': use ed25519, rsa or ecdsa",
                                       optarg);
            q.type = optarg;
            break;
        case OPT_BITS:
            if (yun_safe_atou32(optarg, &q.bits) < 0 || q.bits == 0)
                return cli_usage_error("invalid --bits '%s': give a number of bits", optarg);
            break;
        case OPT_USER:
            q.user = optarg;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one keypair name", cmd);
    q.name = argv[optind];
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_KEYPAIR_CREATE, &q.base, &yun__keypair_reply__descriptor,
                     &m);
    if (r)
        return r;
    Yun__KeypairRecord *k = ((Yun__KeypairReply *)m)->keypair;
    /* The private key alone, for a file; scripts asking for a format get
     * the whole record. */
    if (cli->out.format == CLI_FORMAT_TABLE && cli->out.n_columns == 0) {
        if (isatty(STDOUT_FILENO))
            fprintf(stderr, "yun: this is the private key of '%s', shown once: save it to "
                            "a file only you can read (yun keypair create %s > %s.pem; "
                            "chmod 600 %s.pem)\n", k->name, k->name, k->name, k->name);
        fputs(k->private_key, stdout);
        r = fflush(stdout) == 0 ? 0 : 1;
        fprintf(stderr, "yun: keypair '%s' created: %s %s\n", k->name, k->type,
                k->fingerprint);
    } else {
        r = print_keypair(cli, k);
    }
    yun_wipe(k->private_key, strlen(k->private_key));
    return r;
}

static int
keypair_import(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "keypair import";
    static const struct option opts[] = {
        { "public-key", required_argument, NULL, OPT_PUBLIC_KEY },
        { "user", required_argument, NULL, OPT_USER },
        {},
    };
    Yun__KeypairImportRequest q = YUN__KEYPAIR_IMPORT_REQUEST__INIT;
    const char *file = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c == OPT_PUBLIC_KEY)
            file = optarg;
        else if (c == OPT_USER)
            q.user = optarg;
        else
            return cli_option_error(cmd, c, argv);
    }
    if (optind + 1 != argc)
        return cli_usage_error("'%s' takes one keypair name", cmd);
    if (!file)
        return cli_usage_error("'%s' needs --public-key FILE (an OpenSSH .pub file)", cmd);
    q.name = argv[optind];
    _cleanup_free_ char *line = NULL;
    int r = yun_read_file(file, PUBLIC_KEY_FILE_MAX, &line, NULL);
    if (r < 0) {
        fprintf(stderr, "yun: cannot read the public key '%s': %s\n", file, strerror(-r));
        return 1;
    }
    q.public_key = line;
    _cleanup_message_ ProtobufCMessage *m = NULL;
    r = cli_call(cli, YUN__OP__OP_KEYPAIR_IMPORT, &q.base, &yun__keypair_reply__descriptor, &m);
    if (r)
        return r;
    return print_keypair(cli, ((Yun__KeypairReply *)m)->keypair);
}

static int
keypair_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "keypair list";
    static const struct option opts[] = { { "user", required_argument, NULL, OPT_USER }, {} };
    Yun__KeypairListRequest q = YUN__KEYPAIR_LIST_REQUEST__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_USER)
            return cli_option_error(cmd, c, argv);
        q.user = optarg;
    }
    if (optind != argc)
        return cli_usage_error("'%s' takes no arguments, only options", cmd);
    _cleanup_message_ ProtobufCMessage *m = NULL;
    int r = cli_call(cli, YUN__OP__OP_KEYPAIR_LIST, &q.base,
                     &yun__keypair_list_reply__descriptor, &m);
    if (r)
        return r;
    const Yun__KeypairListReply *y = (const Yun__KeypairListReply *)m;
    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    for (size_t i = 0; i < y->n_keypairs; i++)
        keypair_row(t, y->keypairs[i], cli->out.format != CLI_FORMAT_TABLE);
    return cli_print(cli, t);
}

/* "NAME... [--user U]" for show (one name) and delete. */
static int
keypair_ref_call(struct cli *cli, int argc, char **argv, Yun__Op op, const char *cmd,
                 bool many)
{
    static const struct option opts[] = { { "user", required_argument, NULL, OPT_USER }, {} };
    Yun__KeypairRef q = YUN__KEYPAIR_REF__INIT;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) >= 0) {
        if (c != OPT_USER)
            return cli_option_error(cmd, c, argv);
        q.user = optarg;
    }
    if (optind == argc || (!many && optind + 1 != argc))
        return cli_usage_error("'%s' takes %s", cmd,
                               many ? "one or more keypair names" : "one keypair name");
    int failed = 0;
    for (int i = optind; i < argc; i++) {
        q.name = argv[i];
        _cleanup_message_ ProtobufCMessage *m = NULL;
        int r = cli_call(cli, op, &q.base, &yun__keypair_reply__descriptor, &m);
        if (r == 0 && !many)
            r = print_keypair(cli, ((Yun__KeypairReply *)m)->keypair);
        failed |= r;
    }
    return failed ? 1 : 0;
}

static int
keypair_show(struct cli *cli, int argc, char **argv)
{
    return keypair_ref_call(cli, argc, argv, YUN__OP__OP_KEYPAIR_SHOW, "keypair show", false);
}

static int
keypair_delete(struct cli *cli, int argc, char **argv)
{
    return keypair_ref_call(cli, argc, argv, YUN__OP__OP_KEYPAIR_DELETE, "keypair delete", true);
}

const struct cli_verb cli_keypair_verbs[] = {
    { "create", keypair_create, "NAME [--type ed25519|rsa|ecdsa] [--bits N] [--user U]",
      "Create a keypair; prints its private key (once) on standard output" },
    { "import", keypair_import, "NAME --public-key FILE [--user U]",
      "Import an OpenSSH public key" },
    { "list", keypair_list, "[--user U]", "List the keypairs" },
    { "show", keypair_show, "NAME [--user U]", "Show a keypair and its fingerprints" },
    { "delete", keypair_delete, "NAME... [--user U]", "Delete keypairs" },
    {},
};
