/* SPDX-License-Identifier: Apache-2.0
 * token.h: identity tokens (issue 5), authenticated and encrypted with
 * AES-256-GCM (seal.h), and the key repository that rotates their keys.
 *
 * A token is the base64url text (no padding) of
 *
 *     version (1 byte, 1) | key id (4, big-endian) | nonce (12) |
 *     ciphertext of the payload | GCM tag (16)
 *
 * where version, key id and nonce are the additional authenticated data,
 * so changing any bit of any part makes the token invalid. The payload is
 * a fixed binary layout (token.c) carrying the user id, the project id
 * (empty for an unscoped token), the roles, issued_at, expires_at and a
 * random 16-byte audit id. A token with two UUIDs and three roles is 214
 * characters; the largest possible one is 966. Validation reads no
 * database and allocates nothing: it decodes into a struct yun_token with
 * fixed-size fields (about 700 bytes).
 *
 * Key repository (Keystone's fernet keys): a directory, mode 0700, holding
 * key files named by a decimal index, mode 0600, each 64 hex digits (a
 * 256-bit key) and a newline. Key 0 is the *staged* key, the highest index
 * the *primary* key, the others *secondary* keys. Tokens are issued with
 * the primary key only; every loaded key validates. Files with other names
 * (editor backups, temporary files) are ignored.
 *
 * A token names its key by a key id derived from the key's bytes (not its
 * index), because the staged key changes index when it is promoted: a
 * node whose copy of the repository still has it as key 0 validates the
 * tokens another node already issued with it.
 *
 * Rotation (yun_token_keys_rotate): the staged key 0 becomes the new
 * primary (index = highest + 1), a new random staged key 0 is written, and
 * then the secondary keys with the lowest indexes are deleted until at
 * most 'max_active' keys (staged and primary included) remain. So a token
 * issued with the primary key of the moment survives 'max_active' - 2
 * rotations and is refused (YUN_E_TOKEN_KEY) after 'max_active' - 1.
 * With max_active = 3, starting from {0 staged, 1 primary}:
 *     issue T with key 1;  rotate -> {0, 1, 2 primary}: T validates;
 *                          rotate -> {0, 2, 3 primary}: key 1 is gone,
 *                                     T is invalid.
 * Token lifetimes must therefore not exceed ('max_active' - 2) rotation
 * periods, or live tokens are cut short. Validating processes must reload
 * the repository (yun_token_keys_load) after each rotation.
 *
 * Revocation is the caller's: it matches the audit id, user id, project id
 * and issued_at of a validated token against its revocation list. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define YUN_TOKEN_ID_MAX 64      /* characters of a user or project id */
#define YUN_TOKEN_ROLE_MAX 32    /* characters of a role name */
#define YUN_TOKEN_ROLES_MAX 16   /* roles per token */
#define YUN_TOKEN_AUDIT_ID_LEN 22 /* base64url of 16 random bytes */
#define YUN_TOKEN_MAX_LEN 2048   /* characters of a token's text form */
#define YUN_TOKEN_KEYS_MAX 32    /* key files in a repository */

/* What a token carries. Ids and role names are 1..max characters of
 * [A-Za-z0-9._-], not starting with '.' or '-' (yun_name_is_valid); the
 * project id may be empty (an unscoped token). Times are microseconds since
 * the Unix epoch (yun_wall_us). */
struct yun_token {
    char user_id[YUN_TOKEN_ID_MAX + 1];
    char project_id[YUN_TOKEN_ID_MAX + 1];
    char roles[YUN_TOKEN_ROLES_MAX][YUN_TOKEN_ROLE_MAX + 1];
    size_t n_roles;
    uint64_t issued_at_us;
    uint64_t expires_at_us;                    /* valid while now < expires_at_us */
    char audit_id[YUN_TOKEN_AUDIT_ID_LEN + 1]; /* set by yun_token_issue */
    uint32_t key_id;                           /* set by yun_token_issue */
};

struct yun_token_keys;

/* Creates a key repository in 'dir' (made with mode 0700 if missing, like
 * mkdir -p) with a staged key 0 and a primary key 1. Returns 0, -EEXIST if
 * 'dir' already holds key files, -EPERM if 'dir' is accessible by group or
 * others, or -errno. */
int yun_token_keys_create(const char *dir);

/* Rotates the repository in 'dir' as described at the top of this file,
 * keeping at most 'max_active' keys (at least 2). Holds an exclusive
 * flock on 'dir' meanwhile, so concurrent rotations serialise. If 'dir'
 * has no staged key (a rotation interrupted by a crash), none is promoted
 * and only the new staged key is written. Returns 0, -EINVAL for a
 * 'max_active' below 2, the errors of yun_token_keys_load, or -errno. */
int yun_token_keys_rotate(const char *dir, unsigned max_active);

/* Loads every key of the repository in 'dir' into '*ret' (free with
 * yun_token_keys_free, which wipes the keys). Returns 0, -ENOENT when there
 * is no key, -EPERM when 'dir' or a key file is accessible by group or
 * others, -EBADMSG for a key file that is not 64 hex digits (or two
 * different keys with the same key id), -E2BIG for more than
 * YUN_TOKEN_KEYS_MAX keys, -ELOOP for a key file that is a symbolic link,
 * or -errno. */
int yun_token_keys_load(const char *dir, struct yun_token_keys **ret);

struct yun_token_keys *yun_token_keys_free(struct yun_token_keys *keys);

/* The number of loaded keys, and the index and key id of the 'i'th (in
 * ascending index order; index 0 is the staged key). Returns -ERANGE for
 * 'i' out of range. For status output. */
size_t yun_token_keys_count(const struct yun_token_keys *keys);
int yun_token_keys_get(const struct yun_token_keys *keys, size_t i, uint32_t *ret_index,
                       uint32_t *ret_key_id);

/* Issues a token for 'claims' (user_id, project_id, roles, n_roles,
 * issued_at_us, expires_at_us; its audit_id and key_id are ignored) with
 * the primary key. Stores the malloc'ed token text in '*ret_token' and,
 * when 'ret_issued' is not NULL, a copy of the claims with the new random
 * audit id and the key id. Returns 0, -EINVAL for an invalid claim
 * (bad id or role name, too many roles, expires_at_us <= issued_at_us),
 * -ENOKEY when the repository has no primary key (only key 0), -ENOMEM or
 * -EIO. */
int yun_token_issue(const struct yun_token_keys *keys, const struct yun_token *claims,
                    char **ret_token, struct yun_token *ret_issued);

/* Validates 'token' at the time 'now_us' with the key it names and fills
 * '*ret'. Returns 0; YUN_E_TOKEN_INVALID for anything that is not a token
 * issued with one of 'keys' (garbage, a changed bit, an unknown version or
 * key id, a key rotated out or from another repository);
 * YUN_E_TOKEN_EXPIRED for a genuine token when now_us >= expires_at_us.
 * '*ret' is written on success only. Allocates nothing; costs a few
 * microseconds. */
int yun_token_validate(const struct yun_token_keys *keys, const char *token, uint64_t now_us,
                       struct yun_token *ret);

/* The audit id of a validated token: what a revocation list names to
 * revoke that token alone. */
static inline const char *
yun_token_audit_id(const struct yun_token *t)
{
    return t->audit_id;
}
