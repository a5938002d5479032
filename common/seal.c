/* SPDX-License-Identifier: Apache-2.0
 * seal.c: HKDF key derivation and AES-256-GCM sealing (see seal.h). */
#include <errno.h>
#include <string.h>

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

int
yun_nonce_new(uint8_t nonce[YUN_NONCE_SIZE])
{
    return RAND_bytes(nonce, YUN_NONCE_SIZE) == 1 ? 0 : -EIO;
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

/* One context per thread, reset on every use: allocating a context costs
 * more than the sealing of a small body. */
static EVP_CIPHER_CTX *
gcm_ctx(void)
{
    static __thread EVP_CIPHER_CTX *ctx;
    if (!ctx)
        ctx = EVP_CIPHER_CTX_new();
    else
        EVP_CIPHER_CTX_reset(ctx);
    return ctx;
}

int
yun_seal(const struct yun_key *key, const uint8_t nonce[YUN_NONCE_SIZE], const void *aad,
         size_t aad_size, const void *plain, size_t size, uint8_t *out)
{
    EVP_CIPHER *cipher = gcm_cipher();
    EVP_CIPHER_CTX *ctx = gcm_ctx();
    int len;
    if (!cipher || !ctx || size > INT32_MAX || aad_size > INT32_MAX)
        return -ENOMEM;
    if (EVP_EncryptInit_ex2(ctx, cipher, key->bytes, nonce, NULL) != 1)
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
    EVP_CIPHER *cipher = gcm_cipher();
    EVP_CIPHER_CTX *ctx = gcm_ctx();
    int len;
    if (size < YUN_TAG_SIZE)
        return YUN_E_SEAL;
    size_t plain_size = size - YUN_TAG_SIZE;
    if (!cipher || !ctx || size > INT32_MAX || aad_size > INT32_MAX)
        return -ENOMEM;
    if (EVP_DecryptInit_ex2(ctx, cipher, key->bytes, nonce, NULL) != 1)
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
