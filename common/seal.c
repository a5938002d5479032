/* SPDX-License-Identifier: Apache-2.0
 * seal.c: HKDF key derivation and AES-256-GCM sealing (see seal.h). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "err.h"
#include "seal.h"

/* The HKDF salt names the purpose, so that the same cluster secret can later
 * derive keys for other uses (tokens, ...) that never collide with these. */
static const char hkdf_salt[] = "yun bus peer key v1";


int
yun_key_derive(const uint8_t *secret, size_t secret_size, const char *peer_id, uint32_t epoch,
               struct yun_key *ret)
{
    if (!secret || secret_size < 16 || !peer_id || !*peer_id)
        return -EINVAL;

    /* info = peer id, a zero byte, then the epoch big-endian: unambiguous
     * for every id, so ("a", 1) and ("a\x00...", ...) cannot collide. */
    size_t id_len = strlen(peer_id);
    uint8_t info[256 + 5];
    if (id_len > 256)
        return -EINVAL;
    memcpy(info, peer_id, id_len);
    info[id_len] = 0;
    info[id_len + 1] = (uint8_t)(epoch >> 24);
    info[id_len + 2] = (uint8_t)(epoch >> 16);
    info[id_len + 3] = (uint8_t)(epoch >> 8);
    info[id_len + 4] = (uint8_t)epoch;

    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (!kdf)
        return -EIO;
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (!ctx)
        return -ENOMEM;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_size),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)hkdf_salt,
                                          sizeof hkdf_salt - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, id_len + 5),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_KDF_derive(ctx, ret->bytes, sizeof ret->bytes, params);
    EVP_KDF_CTX_free(ctx);
    return ok == 1 ? 0 : -EIO;
}

/* Nonces are an 8-byte random prefix drawn once per thread and a 4-byte
 * counter (the deterministic construction of NIST SP 800-38D, 8.2.1): a
 * draw of 12 fresh random bytes per message costs more than the sealing of
 * a small body. A prefix is never reused with the same counter value: it
 * is drawn anew when the counter wraps, and two threads or processes
 * collide only if their 64-bit prefixes do. */
static __thread struct {
    uint8_t prefix[8];
    uint32_t counter;
    bool ready;
    pid_t pid; /* a forked child draws its own prefix */
} nonce_state;

int
yun_nonce_new(uint8_t nonce[YUN_NONCE_SIZE])
{
    pid_t pid = getpid();
    if (!nonce_state.ready || nonce_state.counter == UINT32_MAX || nonce_state.pid != pid) {
        if (RAND_bytes(nonce_state.prefix, sizeof nonce_state.prefix) != 1)
            return -EIO;
        nonce_state.counter = 0;
        nonce_state.pid = pid;
        nonce_state.ready = true;
    }
    uint32_t c = ++nonce_state.counter;
    memcpy(nonce, nonce_state.prefix, 8);
    nonce[8] = (uint8_t)(c >> 24);
    nonce[9] = (uint8_t)(c >> 16);
    nonce[10] = (uint8_t)(c >> 8);
    nonce[11] = (uint8_t)c;
    return 0;
}

/* Fetched once: EVP_aes_256_gcm() would look the implementation up in the
 * provider on every init. Never freed; it lives as long as the process. */
static EVP_CIPHER *
gcm_cipher(void)
{
    static EVP_CIPHER *cipher;
    if (!cipher)
        cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    return cipher;
}

/* One context per thread and direction that remembers its key: setting a
 * key expands the AES schedule and the GHASH table, which costs more than
 * sealing a small body, and a client (or a busy peer) uses one key for
 * message after message. Only the IV changes then. */
struct gcm_slot {
    EVP_CIPHER_CTX *ctx;
    uint8_t key[YUN_KEY_SIZE];
    bool keyed;
};

static __thread struct gcm_slot gcm_enc, gcm_dec;

/* A thread that seals and exits (a worker, a client thread) must not leave
 * its contexts behind, nor the last key it used: a pthread key's destructor
 * frees and wipes them. Thread-local storage alone has no destructor. */
static pthread_key_t gcm_exit_key;
static pthread_once_t gcm_exit_once = PTHREAD_ONCE_INIT;
static bool gcm_exit_ready;

static void
gcm_slot_clear(struct gcm_slot *slot)
{
    EVP_CIPHER_CTX_free(slot->ctx);
    slot->ctx = NULL;
    yun_wipe(slot->key, sizeof slot->key);
    slot->keyed = false;
}

static void
gcm_thread_exit(void *unused)
{
    gcm_slot_clear(&gcm_enc);
    gcm_slot_clear(&gcm_dec);
}

static void
gcm_exit_init(void)
{
    gcm_exit_ready = pthread_key_create(&gcm_exit_key, gcm_thread_exit) == 0;
}

static EVP_CIPHER_CTX *
gcm_ctx(struct gcm_slot *slot, const struct yun_key *key, const uint8_t *nonce, bool enc)
{
    EVP_CIPHER *cipher = gcm_cipher();
    if (!cipher)
        return NULL;
    if (!slot->ctx) {
        /* Any non-NULL value arms the destructor for this thread. Without
         * one (no pthread key left) sealing still works; only the thread's
         * exit leaks. */
        (void)pthread_once(&gcm_exit_once, gcm_exit_init);
        if (gcm_exit_ready)
            (void)pthread_setspecific(gcm_exit_key, &gcm_enc);
        slot->ctx = EVP_CIPHER_CTX_new();
        if (!slot->ctx)
            return NULL;
    }
    bool same = slot->keyed && CRYPTO_memcmp(slot->key, key->bytes, YUN_KEY_SIZE) == 0;
    int ok = enc ? EVP_EncryptInit_ex2(slot->ctx, same ? NULL : cipher,
                                       same ? NULL : key->bytes, nonce, NULL)
                 : EVP_DecryptInit_ex2(slot->ctx, same ? NULL : cipher,
                                       same ? NULL : key->bytes, nonce, NULL);
    if (ok != 1) {
        slot->keyed = false;
        return NULL;
    }
    if (!same) {
        memcpy(slot->key, key->bytes, YUN_KEY_SIZE);
        slot->keyed = true;
    }
    return slot->ctx;
}

int
yun_seal(const struct yun_key *key, const uint8_t nonce[YUN_NONCE_SIZE], const void *aad,
         size_t aad_size, const void *plain, size_t size, uint8_t *out)
{
    int len;
    if (size > INT32_MAX || aad_size > INT32_MAX)
        return -EINVAL;
    EVP_CIPHER_CTX *ctx = gcm_ctx(&gcm_enc, key, nonce, true);
    if (!ctx)
        return -EIO;
    if (aad_size && EVP_EncryptUpdate(ctx, NULL, &len, aad, (int)aad_size) != 1)
        return -EIO;
    if (size && EVP_EncryptUpdate(ctx, out, &len, plain, (int)size) != 1)
        return -EIO;
    if (EVP_EncryptFinal_ex(ctx, out + size, &len) != 1)
        return -EIO;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, YUN_TAG_SIZE, out + size) != 1)
        return -EIO;
    return 0;
}

int
yun_open(const struct yun_key *key, const uint8_t nonce[YUN_NONCE_SIZE], const void *aad,
         size_t aad_size, const void *sealed, size_t size, uint8_t *out)
{
    int len;
    if (size < YUN_TAG_SIZE)
        return YUN_E_SEAL;
    size_t plain_size = size - YUN_TAG_SIZE;
    if (size > INT32_MAX || aad_size > INT32_MAX)
        return -EINVAL;
    EVP_CIPHER_CTX *ctx = gcm_ctx(&gcm_dec, key, nonce, false);
    if (!ctx)
        return -EIO;
    if (aad_size && EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)aad_size) != 1)
        return -EIO;
    if (plain_size && EVP_DecryptUpdate(ctx, out, &len, sealed, (int)plain_size) != 1)
        return -EIO;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, YUN_TAG_SIZE,
                            (uint8_t *)sealed + plain_size) != 1)
        return -EIO;
    if (EVP_DecryptFinal_ex(ctx, out + plain_size, &len) != 1) {
        yun_wipe(out, plain_size);
        return YUN_E_SEAL;
    }
    return 0;
}

void
yun_wipe(void *p, size_t size)
{
    OPENSSL_cleanse(p, size);
}
