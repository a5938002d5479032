/* SPDX-License-Identifier: Apache-2.0
 * keypair.h: SSH keypairs for identity (issue 5), through OpenSSL only.
 *
 * Created keys come as an OpenSSH public key line ("ssh-ed25519 AAAA...
 * comment", the authorized_keys and .pub format) and an unencrypted
 * private key in OpenSSH's own "openssh-key-v1" container ("-----BEGIN
 * OPENSSH PRIVATE KEY-----", PROTOCOL.key), for every type, RSA included
 * (no PKCS#1 PEM), so that one reader handles all of them. OpenSSL writes
 * neither format; keypair.c does.
 *
 * Imported keys are public key lines, parsed and validated: ssh-ed25519,
 * ssh-rsa (at least 2048 bits) and ecdsa-sha2-nistp256 (a point on the
 * curve). Fingerprints are printed as 'ssh-keygen -l' prints them:
 * "SHA256:" and the unpadded base64 of the SHA-256 of the key blob, and
 * the legacy "MD5:" and colon-separated hex ('ssh-keygen -l -E md5').
 *
 * Neighbours: base64.h; the scheduler stores the public line and the
 * fingerprint of a user's keypairs and hands the private key to the user
 * once, at creation. Thread-safe. */
#pragma once

#include <errno.h>

enum yun_keypair_type {
    YUN_KEYPAIR_ED25519,
    YUN_KEYPAIR_RSA,
    YUN_KEYPAIR_ECDSA_P256,
    _YUN_KEYPAIR_TYPE_MAX,
    _YUN_KEYPAIR_TYPE_INVALID = -EINVAL,
};

#define YUN_KEYPAIR_RSA_BITS 3072        /* default size of a created RSA key */
#define YUN_KEYPAIR_RSA_MIN_BITS 2048    /* created and imported */
#define YUN_KEYPAIR_RSA_MAX_BITS 4096    /* created; keygen time grows as bits^4 */
#define YUN_KEYPAIR_RSA_IMPORT_MAX_BITS 16384 /* imported, as OpenSSH's limit */
#define YUN_KEYPAIR_COMMENT_MAX 255      /* bytes */
#define YUN_KEYPAIR_LINE_MAX 8192        /* bytes of an imported line */
#define YUN_KEYPAIR_FINGERPRINT_SIZE 51  /* "SHA256:" + 43 + NUL */
#define YUN_KEYPAIR_FINGERPRINT_MD5_SIZE 52 /* "MD5:" + 47 + NUL */

struct yun_keypair {
    enum yun_keypair_type type;
    unsigned bits;        /* 256 for Ed25519 and P-256, the modulus size for RSA */
    char *public_key;     /* "TYPE BASE64[ COMMENT]", no newline */
    char *comment;        /* "" when there is none */
    char *private_key;    /* OpenSSH PEM text ending in a newline; NULL when
                           * imported. A secret: yun_keypair_done wipes it. */
    char fingerprint[YUN_KEYPAIR_FINGERPRINT_SIZE];         /* "SHA256:..." */
    char fingerprint_md5[YUN_KEYPAIR_FINGERPRINT_MD5_SIZE]; /* "MD5:aa:bb:..." */
};

/* "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256": the names the key lines
 * use. NULL for an invalid type. */
const char *yun_keypair_type_to_string(enum yun_keypair_type type);
enum yun_keypair_type yun_keypair_type_from_string(const char *s);

/* Creates a new keypair of 'type' into '*ret' (release with
 * yun_keypair_done). 'bits' is 0 for the type's default; Ed25519 and
 * P-256 take only 0 or 256, RSA YUN_KEYPAIR_RSA_MIN_BITS..MAX_BITS.
 * 'comment' may be NULL; else at most YUN_KEYPAIR_COMMENT_MAX bytes of
 * printable UTF-8 (no control characters). Returns 0, -EINVAL for a bad
 * argument, -ENOMEM or -EIO. RSA generation takes up to seconds: keep it
 * off the event loop. */
int yun_keypair_create(enum yun_keypair_type type, unsigned bits, const char *comment,
                       struct yun_keypair *ret);

/* Parses and validates one OpenSSH public key line, "TYPE BASE64
 * [COMMENT]" (surrounding whitespace and a final newline allowed,
 * authorized_keys options not), into '*ret' with 'private_key' NULL and
 * 'public_key' in canonical form. Returns 0, or -EINVAL with a malloc'ed
 * sentence saying what is wrong in '*ret_errmsg' (when not NULL), or
 * -ENOMEM or -EIO. */
int yun_keypair_import(const char *line, struct yun_keypair *ret, char **ret_errmsg);

/* Frees the strings of 'kp', wiping the private key, and zeroes 'kp'.
 * Accepts a zeroed or already released struct. */
void yun_keypair_done(struct yun_keypair *kp);
