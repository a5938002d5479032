/* SPDX-License-Identifier: Apache-2.0
 * password.h: password hashing for identity (issue 5). scrypt (RFC 7914)
 * through OpenSSL 3's EVP_KDF "SCRYPT", a fresh 16-byte random salt per
 * hash, a 32-byte derived key, stored in a self-describing text form
 *
 *     $yun-scrypt$ln=15,r=8,p=3$<salt>$<hash>
 *
 * (salt and hash in standard base64 without padding, as PHC strings do).
 * Verification reads the cost from the string, so the defaults can be
 * raised later: yun_password_needs_rehash() tells the caller to re-hash a
 * password it has just verified, and old hashes keep working meanwhile.
 *
 * Cost: one hash at the defaults takes ~320 ms on the reference machine
 * (2.1 GHz Xeon VM), at least as long as bcrypt cost 12 on the same machine
 * (~300 ms; Keystone's default), and needs 32 MiB of memory, where bcrypt
 * needs 4 KiB; tests/bench/bench-identity prints both figures. So a hash is
 * slow and memory-hard: run verification off the event loop, in a worker
 * pool; the login rate is then about three per second per worker core.
 * Keystone's 3.8 logins/s at an equal cost needs two workers on two cores
 * here, since bcrypt-12 itself runs 3.3 times a second on one of them.
 *
 * Plaintext: these functions never copy the password except into the KDF's
 * own context, which OpenSSL wipes on free, and wipe every derived key they
 * compute. The caller owns its plaintext buffer and wipes it (yun_wipe())
 * as soon as it is done with it. Passwords are 1..YUN_PASSWORD_MAX_SIZE
 * bytes, compared as bytes (no Unicode normalisation).
 *
 * Neighbours: seal.h (yun_wipe), base64.h; the scheduler's identity code
 * stores the encoded form in its user records. Thread-safe. */
#pragma once

#include <stdbool.h>

#define YUN_PASSWORD_MAX_SIZE 1024

/* scrypt cost: N = 2^ln, block size r, parallelism p. Memory per hash is
 * 128 * r * N bytes and time is proportional to N * r * p. Accepted ranges,
 * both when hashing and when reading a stored hash (so that a corrupted
 * record cannot make a worker allocate gigabytes or spin for minutes):
 * ln 1..20, r 1..32, p 1..16, memory at most 256 MiB and N * r * p at most
 * 2^23 (about ten times the default cost). */
struct yun_password_params {
    unsigned ln; /* log2 of N */
    unsigned r;
    unsigned p;
};

/* The cost new hashes get: ln=15, r=8, p=3. See the top of this file. */
extern const struct yun_password_params yun_password_default_params;

/* Hashes 'password' (NUL-terminated, 1..YUN_PASSWORD_MAX_SIZE bytes) with a
 * fresh random salt at the default cost. On success stores a malloc'ed
 * encoded string (no secret in it) in '*ret_encoded'. Returns 0, -EINVAL
 * for an empty or too long password, -ENOMEM, or -EIO when OpenSSL fails. */
int yun_password_hash(const char *password, char **ret_encoded);

/* As yun_password_hash() at the cost 'params'; -EINVAL when 'params' is
 * out of the accepted ranges. Tests use it with a cheap cost. */
int yun_password_hash_with(const char *password, const struct yun_password_params *params,
                           char **ret_encoded);

/* Checks 'password' against the stored 'encoded' hash, at the cost written
 * in 'encoded', comparing in constant time. Returns 0 when it matches,
 * YUN_E_AUTH when it does not, -EINVAL when 'encoded' is malformed (or its
 * cost out of range) or 'password' empty or too long, -ENOMEM or -EIO. */
int yun_password_verify(const char *password, const char *encoded);

/* Spends the time of one verification at the default cost and returns
 * YUN_E_AUTH (or -EINVAL for a bad password length). Call it when the user
 * name is unknown, so that the reply time does not reveal which user names
 * exist. */
int yun_password_verify_dummy(const char *password);

/* True when 'encoded' should be replaced by a fresh yun_password_hash() of
 * the password just verified: when it is malformed, when any of ln, r, p is
 * below the default, or when its salt is shorter than 16 bytes or its hash
 * shorter than 32. A hash stronger on every parameter is kept. */
bool yun_password_needs_rehash(const char *encoded);

/* As yun_password_needs_rehash() against the cost 'current'. */
bool yun_password_needs_rehash_with(const char *encoded,
                                    const struct yun_password_params *current);
