/* SPDX-License-Identifier: Apache-2.0
 * keyfile.c: cluster secret and peer key files (see keyfile.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/rand.h>

#include "cleanup.h"
#include "err.h"
#include "keyfile.h"
#include "util.h"

int
yun_secret_create(const char *path)
{
    uint8_t secret[YUN_SECRET_SIZE];
    char text[2 * YUN_SECRET_SIZE + 2];
    if (access(path, F_OK) == 0)
        return -EEXIST;
    if (RAND_priv_bytes(secret, sizeof secret) != 1)
        return -EIO;
    yun_hex_encode(secret, sizeof secret, text);
    yun_wipe(secret, sizeof secret);
    size_t n = strlen(text);
    text[n++] = '\n';
    int r = yun_write_file_atomic(path, text, n, 0600);
    yun_wipe(text, sizeof text);
    return r;
}

int
yun_secret_load(const char *path, uint8_t ret[YUN_SECRET_SIZE])
{
    int r = yun_check_private_file(path);
    if (r < 0)
        return r;
    _cleanup_free_ char *text = NULL;
    size_t size;
    r = yun_read_file(path, 4096, &text, &size);
    if (r < 0)
        return r;
    while (size > 0 && (text[size - 1] == '\n' || text[size - 1] == ' '))
        text[--size] = '\0';
    r = yun_hex_decode(text, ret, YUN_SECRET_SIZE);
    yun_wipe(text, size);
    return r < 0 ? -EBADMSG : 0;
}

int
yun_peer_key_write(const char *path, const struct yun_peer_key *k)
{
    char hex[2 * YUN_KEY_SIZE + 1];
    yun_hex_encode(k->key.bytes, YUN_KEY_SIZE, hex);
    _cleanup_free_ char *text = NULL;
    int n = asprintf(&text,
                     "# yun bus key for '%s'. It speaks for this peer alone: keep it\n"
                     "# readable by its owner only. Revoke it with\n"
                     "# 'yun-scheduler revoke-key %s'.\n"
                     "[peer]\nid = %s\nkind = %s\nepoch = %u\nkey = %s\nscheduler = %s\n",
                     k->id, k->id, k->id, k->kind, k->epoch, hex, k->scheduler);
    yun_wipe(hex, sizeof hex);
    if (n < 0)
        return -ENOMEM;
    int r = yun_write_file_atomic(path, text, (size_t)n, 0600);
    yun_wipe(text, (size_t)n);
    return r;
}

struct load_state {
    struct yun_peer_key *k;
    bool have_key, have_epoch;
    int err;
};

static int
load_pair(void *user, const char *section, const char *name, const char *value)
{
    struct load_state *st = user;
    if (strcmp(section, "peer") != 0)
        return 1;
    char **field = NULL;
    if (strcmp(name, "id") == 0)
        field = &st->k->id;
    else if (strcmp(name, "kind") == 0)
        field = &st->k->kind;
    else if (strcmp(name, "scheduler") == 0)
        field = &st->k->scheduler;
    if (field) {
        free(*field);
        *field = strdup(value);
        if (!*field)
            st->err = -ENOMEM;
    } else if (strcmp(name, "epoch") == 0) {
        if (yun_safe_atou32(value, &st->k->epoch) < 0)
            st->err = YUN_E_CONFIG;
        st->have_epoch = true;
    } else if (strcmp(name, "key") == 0) {
        if (yun_hex_decode(value, st->k->key.bytes, YUN_KEY_SIZE) < 0)
            st->err = YUN_E_CONFIG;
        st->have_key = true;
    }
    return st->err == 0;
}

int
yun_peer_key_load(const char *path, struct yun_peer_key *ret)
{
    int r = yun_check_private_file(path);
    if (r < 0)
        return r;
    struct yun_peer_key k = { 0 };
    struct load_state st = { .k = &k };
    r = ini_parse(path, load_pair, &st);
    if (r < 0) {
        yun_peer_key_done(&k);
        return -errno ? -errno : -EIO;
    }
    if (r > 0 || st.err || !st.have_key || !st.have_epoch || !k.id || !k.kind ||
        !yun_name_is_valid(k.id, 64)) {
        yun_peer_key_done(&k);
        return st.err == -ENOMEM ? -ENOMEM : YUN_E_CONFIG;
    }
    *ret = k;
    return 0;
}

void
yun_peer_key_done(struct yun_peer_key *k)
{
    free(k->id);
    free(k->kind);
    free(k->scheduler);
    yun_wipe(&k->key, sizeof k->key);
    memset(k, 0, sizeof *k);
}
