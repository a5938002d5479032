/* SPDX-License-Identifier: Apache-2.0
 * seal.h: the bus's cryptography. Per-peer keys are derived from the
 * cluster secret with HKDF-SHA256 over the peer id and a key epoch, so a
 * stolen key speaks only for its peer and is revoked alone by bumping that
 * peer's epoch. Bodies are sealed with AES-256-GCM (OpenSSL EVP). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define YUN_KEY_SIZE 32
#define YUN_SECRET_SIZE 32
#define YUN_NONCE_SIZE 12
#define YUN_TAG_SIZE 16

struct yun_key {
    uint8_t bytes[YUN_KEY_SIZE];
};

/* Derives the key of 'peer_id' at 'epoch' from the cluster 'secret'.
 * Deterministic: the scheduler re-derives any peer's key from its id. */
int yun_key_derive(const uint8_t *secret, size_t secret_size, const char *peer_id,
                   uint32_t epoch, struct yun_key *ret);

/* Fills 'nonce' with a value never used before by this process (a random
 * per-thread prefix and a counter), as AES-GCM requires. Not a secret and
 * not unpredictable: do not use it as random bytes. */
int yun_nonce_new(uint8_t nonce[YUN_NONCE_SIZE]);

/* Encrypts 'size' bytes of 'plain' into 'out', which must hold
 * size + YUN_TAG_SIZE bytes (ciphertext then tag). 'aad' is authenticated
 * but not encrypted. 'out' may not overlap 'plain'. */
int yun_seal(const struct yun_key *key, const uint8_t nonce[YUN_NONCE_SIZE], const void *aad,
             size_t aad_size, const void *plain, size_t size, uint8_t *out);

/* Decrypts 'size' bytes of 'sealed' (ciphertext then tag) into 'out', which
 * must hold size - YUN_TAG_SIZE bytes. Returns YUN_E_SEAL when the tag does
 * not verify (wrong key, any changed bit in aad, ciphertext or tag), in
 * which case 'out' is wiped. */
int yun_open(const struct yun_key *key, const uint8_t nonce[YUN_NONCE_SIZE], const void *aad,
             size_t aad_size, const void *sealed, size_t size, uint8_t *out);

/* Wipes 'size' bytes in a way the compiler keeps. */
void yun_wipe(void *p, size_t size);
