/* SPDX-License-Identifier: Apache-2.0
 * keypair.c: SSH key creation, OpenSSH public and private key formats,
 * public key import and fingerprints (see keypair.h). The wire encodings
 * are RFC 4251's (uint32, string, mpint), the key blobs RFC 4253 6.6
 * (ssh-rsa), RFC 5656 3.1 (ecdsa-sha2-*) and RFC 8709 4 (ssh-ed25519),
 * the private key container OpenSSH's PROTOCOL.key. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "base64.h"
#include "cleanup.h"
#include "keypair.h"

#define BLOB_MAX 6144        /* decoded key data of an imported line */
#define PUBLIC_BLOB_CAP 2048 /* created: an RSA-4096 public blob is ~535 bytes */
#define PRIVATE_CAP 8192     /* created: an RSA-4096 container is ~2.4 KiB */

static const char *const type_names[_YUN_KEYPAIR_TYPE_MAX] = {
    [YUN_KEYPAIR_ED25519] = "ssh-ed25519",
    [YUN_KEYPAIR_RSA] = "ssh-rsa",
    [YUN_KEYPAIR_ECDSA_P256] = "ecdsa-sha2-nistp256",
};

static const char ecdsa_curve[] = "nistp256";

const char *
yun_keypair_type_to_string(enum yun_keypair_type type)
{
    if (type < 0 || type >= _YUN_KEYPAIR_TYPE_MAX)
        return NULL;
    return type_names[type];
}

enum yun_keypair_type
yun_keypair_type_from_string(const char *s)
{
    for (int i = 0; s && i < _YUN_KEYPAIR_TYPE_MAX; i++)
        if (strcmp(s, type_names[i]) == 0)
            return (enum yun_keypair_type)i;
    return _YUN_KEYPAIR_TYPE_INVALID;
}

void
yun_keypair_done(struct yun_keypair *kp)
{
    if (!kp)
        return;
    if (kp->private_key) {
        OPENSSL_cleanse(kp->private_key, strlen(kp->private_key));
        free(kp->private_key);
    }
    free(kp->public_key);
    free(kp->comment);
    memset(kp, 0, sizeof *kp);
}

/* A fixed-capacity output buffer: it never reallocates, so secrets are
 * never left behind in freed memory, and it is wiped when released. An
 * overflow is remembered and checked once at the end. */
struct wbuf {
    uint8_t *data;
    size_t size, cap;
    bool overflow;
};

static int
wbuf_init(struct wbuf *b, size_t cap)
{
    b->data = malloc(cap);
    b->size = 0;
    b->cap = cap;
    b->overflow = false;
    return b->data ? 0 : -ENOMEM;
}

static void
wbuf_done(struct wbuf *b)
{
    if (b->data) {
        OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
}

static uint8_t *
wbuf_reserve(struct wbuf *b, size_t n)
{
    if (b->overflow || b->cap - b->size < n) {
        b->overflow = true;
        return NULL;
    }
    uint8_t *p = b->data + b->size;
    b->size += n;
    return p;
}

static void
put_u32(struct wbuf *b, uint32_t v)
{
    uint8_t *p = wbuf_reserve(b, 4);
    if (p) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
    }
}

static void
put_bytes(struct wbuf *b, const void *data, size_t size)
{
    uint8_t *p = wbuf_reserve(b, size);
    if (p && size)
        memcpy(p, data, size);
}

static void
put_string(struct wbuf *b, const void *data, size_t size)
{
    put_u32(b, (uint32_t)size);
    put_bytes(b, data, size);
}

static void
put_cstring(struct wbuf *b, const char *s)
{
    put_string(b, s, strlen(s));
}

/* RFC 4251 mpint of a non-negative number: big-endian two's complement,
 * minimal, with a zero byte in front when the top bit is set. Written in
 * place, so private numbers make no extra copies. */
static void
put_mpint(struct wbuf *b, const BIGNUM *bn)
{
    size_t n = (size_t)BN_num_bytes(bn);
    size_t lead = n > 0 && BN_is_bit_set(bn, (int)(n * 8 - 1));
    put_u32(b, (uint32_t)(n + lead));
    uint8_t *p = wbuf_reserve(b, n + lead);
    if (!p)
        return;
    if (lead)
        *p++ = 0;
    BN_bn2bin(bn, p);
}

struct rbuf {
    const uint8_t *p;
    size_t left;
};

static bool
get_u32(struct rbuf *b, uint32_t *ret)
{
    if (b->left < 4)
        return false;
    *ret = (uint32_t)b->p[0] << 24 | (uint32_t)b->p[1] << 16 | (uint32_t)b->p[2] << 8 | b->p[3];
    b->p += 4;
    b->left -= 4;
    return true;
}

static bool
get_string(struct rbuf *b, const uint8_t **ret, size_t *ret_size)
{
    uint32_t n;
    if (!get_u32(b, &n) || n > b->left)
        return false;
    *ret = b->p;
    *ret_size = n;
    b->p += n;
    b->left -= n;
    return true;
}

static bool
get_string_eq(struct rbuf *b, const char *want)
{
    const uint8_t *s;
    size_t n;
    return get_string(b, &s, &n) && n == strlen(want) && memcmp(s, want, n) == 0;
}

/* A positive mpint in minimal form: a leading zero byte only in front of
 * a set top bit. Non-minimal forms never come from real tools and would
 * give a fingerprint different from OpenSSH's (it re-encodes). */
static bool
get_mpint_positive(struct rbuf *b, const uint8_t **ret, size_t *ret_size)
{
    const uint8_t *s;
    size_t n;
    if (!get_string(b, &s, &n) || n == 0 || (s[0] & 0x80))
        return false;
    if (s[0] == 0) {
        if (n == 1 || !(s[1] & 0x80))
            return false;
        s++;
        n--;
    }
    *ret = s;
    *ret_size = n;
    return true;
}

static size_t
bits_of(const uint8_t *be, size_t size)
{
    if (size == 0)
        return 0;
    size_t bits = size * 8;
    for (uint8_t top = be[0]; !(top & 0x80); top <<= 1)
        bits--;
    return bits;
}

static int
fill_fingerprints(const uint8_t *blob, size_t size, struct yun_keypair *kp)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_size;
    if (EVP_Digest(blob, size, md, &md_size, EVP_sha256(), NULL) != 1 || md_size != 32)
        return -EIO;
    memcpy(kp->fingerprint, "SHA256:", 7);
    yun_base64_encode(md, md_size, YUN_BASE64_NOPAD, kp->fingerprint + 7);

    /* Legacy and best effort: a FIPS-only OpenSSL has no MD5, and then the
     * field stays empty. */
    kp->fingerprint_md5[0] = '\0';
    EVP_MD *md5 = EVP_MD_fetch(NULL, "MD5", NULL);
    if (md5 && EVP_Digest(blob, size, md, &md_size, md5, NULL) == 1 && md_size == 16) {
        char *o = kp->fingerprint_md5;
        o += sprintf(o, "MD5:");
        for (unsigned i = 0; i < md_size; i++)
            o += sprintf(o, i ? ":%02x" : "%02x", md[i]);
    }
    EVP_MD_free(md5);
    return 0;
}

static int
make_public_line(enum yun_keypair_type type, const uint8_t *blob, size_t size,
                 const char *comment, char **ret)
{
    _cleanup_free_ char *b64 = malloc(yun_base64_encoded_len(size, 0) + 1);
    if (!b64)
        return -ENOMEM;
    yun_base64_encode(blob, size, 0, b64);
    if (asprintf(ret, "%s %s%s%s", type_names[type], b64, *comment ? " " : "", comment) < 0)
        return -ENOMEM;
    return 0;
}

/* Comments end up in listings and JSON: printable UTF-8 only. */
static bool
comment_valid(const char *s)
{
    size_t n = strnlen(s, YUN_KEYPAIR_COMMENT_MAX + 1);
    if (n > YUN_KEYPAIR_COMMENT_MAX)
        return false;
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        uint8_t c = u[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return false;
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            len = 3, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((u[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (u[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY_CTX *, EVP_PKEY_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_clear_free);

/* Writes the public blob of 'pkey' to 'pub' and its private fields, as
 * PROTOCOL.key lists them for each type, to 'priv'. */
static int
encode_ed25519(EVP_PKEY *pkey, struct wbuf *pub, struct wbuf *priv)
{
    uint8_t pk[32], sk[32];
    size_t pk_size = sizeof pk, sk_size = sizeof sk;
    if (EVP_PKEY_get_raw_public_key(pkey, pk, &pk_size) != 1 || pk_size != 32 ||
        EVP_PKEY_get_raw_private_key(pkey, sk, &sk_size) != 1 || sk_size != 32) {
        OPENSSL_cleanse(sk, sizeof sk);
        return -EIO;
    }
    put_cstring(pub, type_names[YUN_KEYPAIR_ED25519]);
    put_string(pub, pk, sizeof pk);
    put_cstring(priv, type_names[YUN_KEYPAIR_ED25519]);
    put_string(priv, pk, sizeof pk);
    /* OpenSSH's "private key" is the 32-byte seed followed by the public key. */
    put_u32(priv, 64);
    put_bytes(priv, sk, sizeof sk);
    put_bytes(priv, pk, sizeof pk);
    OPENSSL_cleanse(sk, sizeof sk);
    return 0;
}

static int
encode_rsa(EVP_PKEY *pkey, struct wbuf *pub, struct wbuf *priv)
{
    _cleanup_(BN_clear_freep) BIGNUM *n = NULL;
    _cleanup_(BN_clear_freep) BIGNUM *e = NULL;
    _cleanup_(BN_clear_freep) BIGNUM *d = NULL;
    _cleanup_(BN_clear_freep) BIGNUM *p = NULL;
    _cleanup_(BN_clear_freep) BIGNUM *q = NULL;
    _cleanup_(BN_clear_freep) BIGNUM *iqmp = NULL;
    /* OpenSSH's iqmp is q^-1 mod p, which is OpenSSL's first CRT
     * coefficient with p and q its first and second factors. */
    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
        EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1 ||
        EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &d) != 1 ||
        EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_FACTOR1, &p) != 1 ||
        EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_FACTOR2, &q) != 1 ||
        EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, &iqmp) != 1)
        return -EIO;
    put_cstring(pub, type_names[YUN_KEYPAIR_RSA]);
    put_mpint(pub, e);
    put_mpint(pub, n);
    put_cstring(priv, type_names[YUN_KEYPAIR_RSA]);
    put_mpint(priv, n);
    put_mpint(priv, e);
    put_mpint(priv, d);
    put_mpint(priv, iqmp);
    put_mpint(priv, p);
    put_mpint(priv, q);
    return 0;
}

static int
encode_ecdsa(EVP_PKEY *pkey, struct wbuf *pub, struct wbuf *priv)
{
    uint8_t point[65];
    size_t point_size;
    _cleanup_(BN_clear_freep) BIGNUM *d = NULL;
    if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point,
                                        &point_size) != 1 ||
        point_size != sizeof point || point[0] != 0x04 ||
        EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1)
        return -EIO;
    put_cstring(pub, type_names[YUN_KEYPAIR_ECDSA_P256]);
    put_cstring(pub, ecdsa_curve);
    put_string(pub, point, sizeof point);
    put_cstring(priv, type_names[YUN_KEYPAIR_ECDSA_P256]);
    put_cstring(priv, ecdsa_curve);
    put_string(priv, point, sizeof point);
    put_mpint(priv, d);
    return 0;
}

/* Wraps 'data' as PEM with OpenSSH's label and 70-column lines. */
static int
make_pem(const uint8_t *data, size_t size, char **ret)
{
    static const char begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
    static const char end[] = "-----END OPENSSH PRIVATE KEY-----\n";
    size_t len = yun_base64_encoded_len(size, 0);
    size_t lines = (len + 69) / 70;
    char *b64 = malloc(len + 1);
    char *pem = malloc(sizeof begin - 1 + len + lines + sizeof end);
    if (!b64 || !pem) {
        free(b64);
        free(pem);
        return -ENOMEM;
    }
    yun_base64_encode(data, size, 0, b64);
    char *o = stpcpy(pem, begin);
    for (size_t i = 0; i < len; i += 70) {
        size_t n = len - i < 70 ? len - i : 70;
        memcpy(o, b64 + i, n);
        o += n;
        *o++ = '\n';
    }
    strcpy(o, end);
    OPENSSL_cleanse(b64, len);
    free(b64);
    *ret = pem;
    return 0;
}

static int
make_private(const struct wbuf *pub, const struct wbuf *fields, const char *comment,
             char **ret)
{
    struct wbuf section = { 0 }, container = { 0 };
    int r = wbuf_init(&section, PRIVATE_CAP);
    if (r == 0)
        r = wbuf_init(&container, PRIVATE_CAP + PUBLIC_BLOB_CAP);
    if (r < 0) {
        wbuf_done(&section);
        return r;
    }
    /* The two equal check integers tell a reader that decryption worked;
     * random, as OpenSSH makes them, though nothing is encrypted here. */
    uint32_t check;
    if (RAND_bytes((uint8_t *)&check, sizeof check) != 1)
        r = -EIO;
    put_u32(&section, check);
    put_u32(&section, check);
    put_bytes(&section, fields->data, fields->size);
    put_cstring(&section, comment);
    /* Pad to the cipher block size, 8 for "none", with 1, 2, 3, ... */
    for (uint8_t pad = 1; section.size % 8; pad++)
        put_bytes(&section, &pad, 1);

    static const char magic[] = "openssh-key-v1"; /* with its NUL */
    put_bytes(&container, magic, sizeof magic);
    put_cstring(&container, "none"); /* cipher */
    put_cstring(&container, "none"); /* kdf */
    put_string(&container, "", 0);   /* kdf options */
    put_u32(&container, 1);          /* number of keys */
    put_string(&container, pub->data, pub->size);
    put_string(&container, section.data, section.size);

    if (r == 0 && (section.overflow || container.overflow))
        r = -EIO;
    if (r == 0)
        r = make_pem(container.data, container.size, ret);
    wbuf_done(&section);
    wbuf_done(&container);
    return r;
}

int
yun_keypair_create(enum yun_keypair_type type, unsigned bits, const char *comment,
                   struct yun_keypair *ret)
{
    if (!comment)
        comment = "";
    if (!ret || !comment_valid(comment))
        return -EINVAL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    switch (type) {
    case YUN_KEYPAIR_ED25519:
        if (bits != 0 && bits != 256)
            return -EINVAL;
        bits = 256;
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        break;
    case YUN_KEYPAIR_RSA:
        if (bits == 0)
            bits = YUN_KEYPAIR_RSA_BITS;
        if (bits < YUN_KEYPAIR_RSA_MIN_BITS || bits > YUN_KEYPAIR_RSA_MAX_BITS)
            return -EINVAL;
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
        break;
    case YUN_KEYPAIR_ECDSA_P256:
        if (bits != 0 && bits != 256)
            return -EINVAL;
        bits = 256;
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        break;
    default:
        return -EINVAL;
    }
    if (!pkey)
        return -EIO;

    struct wbuf pub = { 0 }, fields = { 0 };
    int r = wbuf_init(&pub, PUBLIC_BLOB_CAP);
    if (r == 0)
        r = wbuf_init(&fields, PRIVATE_CAP);
    if (r == 0)
        r = type == YUN_KEYPAIR_ED25519 ? encode_ed25519(pkey, &pub, &fields)
            : type == YUN_KEYPAIR_RSA   ? encode_rsa(pkey, &pub, &fields)
                                        : encode_ecdsa(pkey, &pub, &fields);
    if (r == 0 && (pub.overflow || fields.overflow))
        r = -EIO;

    struct yun_keypair kp = { .type = type, .bits = bits };
    if (r == 0)
        r = make_private(&pub, &fields, comment, &kp.private_key);
    if (r == 0)
        r = make_public_line(type, pub.data, pub.size, comment, &kp.public_key);
    if (r == 0)
        r = fill_fingerprints(pub.data, pub.size, &kp);
    if (r == 0 && !(kp.comment = strdup(comment)))
        r = -ENOMEM;
    wbuf_done(&pub);
    wbuf_done(&fields);
    if (r < 0) {
        yun_keypair_done(&kp);
        return r;
    }
    *ret = kp;
    return 0;
}

static int import_error(char **ret_errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
import_error(char **ret_errmsg, const char *fmt, ...)
{
    if (ret_errmsg) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(ret_errmsg, fmt, ap) < 0)
            *ret_errmsg = NULL;
        va_end(ap);
    }
    return -EINVAL;
}

/* A P-256 point is valid when OpenSSL can load it as a public key and its
 * public key check passes (on the curve, not the point at infinity). */
static bool
ecdsa_point_valid(const uint8_t *point, size_t size)
{
    if (size != 65 || point[0] != 0x04)
        return false;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"P-256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point, size),
        OSSL_PARAM_construct_end(),
    };
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC",
                                                                               NULL);
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        return false;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey,
                                                                                 NULL);
    return check && EVP_PKEY_public_check(check) == 1;
}

/* Checks the key blob of 'type' and returns its size in bits. */
static int
parse_blob(enum yun_keypair_type type, const uint8_t *blob, size_t size, unsigned *ret_bits,
           char **ret_errmsg)
{
    struct rbuf b = { blob, size };
    const uint8_t *s;
    size_t n;
    if (!get_string(&b, &s, &n))
        return import_error(ret_errmsg, "the key data is truncated or malformed");
    if (n != strlen(type_names[type]) || memcmp(s, type_names[type], n) != 0) {
        int type_len = n > 40 ? 40 : (int)n;
        for (int i = 0; i < type_len; i++)
            if (s[i] < 0x21 || s[i] > 0x7e)
                return import_error(ret_errmsg, "the key data is truncated or malformed");
        return import_error(ret_errmsg, "the key data is of type '%.*s', not '%s'", type_len,
                            (const char *)s, type_names[type]);
    }

    switch (type) {
    case YUN_KEYPAIR_ED25519:
        if (!get_string(&b, &s, &n) || n != 32 || b.left)
            return import_error(ret_errmsg, "the key data is truncated or malformed");
        *ret_bits = 256;
        return 0;
    case YUN_KEYPAIR_RSA: {
        const uint8_t *e, *mod;
        size_t e_size, mod_size;
        if (!get_mpint_positive(&b, &e, &e_size) || !get_mpint_positive(&b, &mod, &mod_size) ||
            b.left)
            return import_error(ret_errmsg, "the key data is truncated or malformed");
        size_t bits = bits_of(mod, mod_size);
        if (bits < YUN_KEYPAIR_RSA_MIN_BITS)
            return import_error(ret_errmsg, "RSA keys need at least %d bits; this one has %zu",
                                YUN_KEYPAIR_RSA_MIN_BITS, bits);
        if (bits > YUN_KEYPAIR_RSA_IMPORT_MAX_BITS)
            return import_error(ret_errmsg, "RSA keys have at most %d bits; this one has %zu",
                                YUN_KEYPAIR_RSA_IMPORT_MAX_BITS, bits);
        /* Both odd, e at least 3 and shorter than the modulus. Small public
         * exponents (PuTTYgen uses 37) are legal, so no 65537 floor. */
        if (!(mod[mod_size - 1] & 1) || !(e[e_size - 1] & 1) || bits_of(e, e_size) < 2 ||
            bits_of(e, e_size) >= bits)
            return import_error(ret_errmsg, "the RSA key is not valid");
        *ret_bits = (unsigned)bits;
        return 0;
    }
    case YUN_KEYPAIR_ECDSA_P256:
        if (!get_string_eq(&b, ecdsa_curve))
            return import_error(ret_errmsg, "the key data is truncated or malformed");
        if (!get_string(&b, &s, &n) || b.left)
            return import_error(ret_errmsg, "the key data is truncated or malformed");
        if (!ecdsa_point_valid(s, n))
            return import_error(ret_errmsg, "the ECDSA key is not a valid nistp256 point");
        *ret_bits = 256;
        return 0;
    default:
        return -EINVAL;
    }
}

static bool
is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int
yun_keypair_import(const char *line, struct yun_keypair *ret, char **ret_errmsg)
{
    if (!ret)
        return -EINVAL;
    if (!line)
        return import_error(ret_errmsg, "the key is empty");
    size_t len = strnlen(line, YUN_KEYPAIR_LINE_MAX + 1);
    if (len > YUN_KEYPAIR_LINE_MAX)
        return import_error(ret_errmsg, "the key is longer than %d bytes",
                            YUN_KEYPAIR_LINE_MAX);
    const char *s = line, *end = line + len;
    while (s < end && (is_blank(*s) || *s == '\n' || *s == '\r'))
        s++;
    while (end > s && (is_blank(end[-1]) || end[-1] == '\n' || end[-1] == '\r'))
        end--;
    if (s == end)
        return import_error(ret_errmsg, "the key is empty");
    if (strncmp(s, "-----BEGIN", 10) == 0)
        return import_error(ret_errmsg, "this is not a public key line; import the public key "
                                        "(the .pub file), never the private key");
    if (memchr(s, '\n', (size_t)(end - s)) || memchr(s, '\r', (size_t)(end - s)))
        return import_error(ret_errmsg, "the key must be a single line");

    const char *type_start = s;
    while (s < end && !is_blank(*s))
        s++;
    size_t type_len = (size_t)(s - type_start);
    enum yun_keypair_type type = _YUN_KEYPAIR_TYPE_INVALID;
    for (int i = 0; i < _YUN_KEYPAIR_TYPE_MAX; i++)
        if (type_len == strlen(type_names[i]) && memcmp(type_start, type_names[i], type_len) == 0)
            type = (enum yun_keypair_type)i;
    if (type < 0) {
        char shown[41];
        size_t n = type_len < 40 ? type_len : 40;
        for (size_t i = 0; i < n; i++)
            shown[i] = type_start[i] >= 0x20 && type_start[i] < 0x7f ? type_start[i] : '?';
        shown[n] = '\0';
        return import_error(ret_errmsg, "unsupported key type '%s'; the supported types are "
                                        "ssh-ed25519, ssh-rsa and ecdsa-sha2-nistp256", shown);
    }

    while (s < end && is_blank(*s))
        s++;
    const char *b64 = s;
    while (s < end && !is_blank(*s))
        s++;
    size_t b64_len = (size_t)(s - b64);
    while (s < end && is_blank(*s))
        s++;
    _cleanup_free_ char *comment = strndup(s, (size_t)(end - s));
    if (!comment)
        return -ENOMEM;
    if (b64_len == 0)
        return import_error(ret_errmsg, "the key has no data after its type '%s'",
                            type_names[type]);
    if (strlen(comment) > YUN_KEYPAIR_COMMENT_MAX)
        return import_error(ret_errmsg, "the key comment is longer than %d bytes",
                            YUN_KEYPAIR_COMMENT_MAX);
    if (!comment_valid(comment))
        return import_error(ret_errmsg, "the key comment contains control characters or "
                                        "invalid UTF-8");

    _cleanup_free_ uint8_t *blob = malloc(BLOB_MAX);
    if (!blob)
        return -ENOMEM;
    size_t blob_size;
    int r = yun_base64_decode(b64, b64_len, 0, blob, BLOB_MAX, &blob_size);
    if (r == -ENOBUFS)
        return import_error(ret_errmsg, "the key data is too long");
    if (r < 0)
        return import_error(ret_errmsg, "the key data is not valid base64");

    struct yun_keypair kp = { .type = type };
    r = parse_blob(type, blob, blob_size, &kp.bits, ret_errmsg);
    if (r < 0)
        return r;
    r = make_public_line(type, blob, blob_size, comment, &kp.public_key);
    if (r == 0)
        r = fill_fingerprints(blob, blob_size, &kp);
    if (r < 0) {
        yun_keypair_done(&kp);
        return r;
    }
    kp.comment = TAKE_PTR(comment);
    *ret = kp;
    return 0;
}
