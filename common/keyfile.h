/* SPDX-License-Identifier: Apache-2.0
 * keyfile.h: the cluster secret (the scheduler's root-only file) and the
 * per-peer key files handed to agents and operator clients. Both must be
 * readable by their owner only: loading refuses a file that group or
 * others can read (-EPERM). */
#pragma once

#include <stdint.h>

#include "seal.h"

struct yun_peer_key {
    char *id;          /* peer id: the agent's host name or the operator's name */
    char *kind;        /* "agent" | "operator" */
    uint32_t epoch;
    struct yun_key key;
    char *scheduler;   /* the scheduler's bus URL */
};

/* Creates a new random cluster secret at 'path' (mode 0600). -EEXIST if a
 * file is there: a secret is never overwritten by accident. */
int yun_secret_create(const char *path);
/* Loads the secret; -EPERM if the file is readable by others, -EBADMSG if
 * malformed. */
int yun_secret_load(const char *path, uint8_t ret[YUN_SECRET_SIZE]);

/* Writes a key file (mode 0600, atomically). */
int yun_peer_key_write(const char *path, const struct yun_peer_key *k);
/* Loads a key file; -EPERM if readable by others, YUN_E_CONFIG when a field
 * is missing or malformed. */
int yun_peer_key_load(const char *path, struct yun_peer_key *ret);
void yun_peer_key_done(struct yun_peer_key *k);
