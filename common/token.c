/* SPDX-License-Identifier: Apache-2.0
 * token.c: AES-256-GCM identity tokens and their key repository (see
 * token.h). Sealing is seal.c's; this file owns the token layout, the
 * payload encoding and the key files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "base64.h"
#include "cleanup.h"
#include "err.h"
#include "seal.h"
#include "token.h"
#include "util.h"

#define TOKEN_VERSION 1
#define HEADER_SIZE (1 + 4 + YUN_NONCE_SIZE)
#define AUDIT_SIZE 16

/* The payload, version 1, all integers big-endian:
 *     issued_at_us u64 | expires_at_us u64 | audit id (16 bytes) |
 *     user id (u8 length 1..64, bytes) | project id (u8 length 0..64, bytes) |
 *     role count (u8 0..16) | each role (u8 length 1..32, bytes)
 * A fixed binary layout rather than a protobuf message: decoding it needs
 * no allocation (protobuf-c unpacking mallocs every string and repeated
 * field) and no generated code, the token version byte already versions
 * it, and it is about a third smaller than the protobuf encoding would
 * be with field tags. Any change of layout takes a new TOKEN_VERSION. */
#define PAYLOAD_MAX                                                            \
    (8 + 8 + AUDIT_SIZE + 1 + YUN_TOKEN_ID_MAX + 1 + YUN_TOKEN_ID_MAX + 1 +   \
     YUN_TOKEN_ROLES_MAX * (1 + YUN_TOKEN_ROLE_MAX))
#define TOKEN_BIN_MAX (HEADER_SIZE + PAYLOAD_MAX + YUN_TAG_SIZE)

_Static_assert(TOKEN_BIN_MAX / 3 * 4 + 4 <= YUN_TOKEN_MAX_LEN, "token text limit too small");

struct token_key {
    uint32_t index;     /* file name; 0 = staged */
    uint32_t id;        /* what tokens carry: derived from the key bytes */
    struct yun_key key;
};

struct yun_token_keys {
    size_t n;
    struct token_key keys[YUN_TOKEN_KEYS_MAX]; /* ascending index */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct yun_token_keys *, yun_token_keys_free);

static void
put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t
get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint64_t
get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* The key id: the first four bytes of SHA-256 over a purpose label and the
 * key. It names a key, it does not reveal it. */
static int
key_id_of(const struct yun_key *key, uint32_t *ret)
{
    static const char label[] = "yun token key id v1";
    uint8_t in[sizeof label + YUN_KEY_SIZE], md[32];
    memcpy(in, label, sizeof label);
    memcpy(in + sizeof label, key->bytes, YUN_KEY_SIZE);
    int ok = EVP_Digest(in, sizeof in, md, NULL, EVP_sha256(), NULL);
    yun_wipe(in, sizeof in);
    if (ok != 1)
        return -EIO;
    *ret = get_be32(md);
    return 0;
}

struct yun_token_keys *
yun_token_keys_free(struct yun_token_keys *keys)
{
    if (!keys)
        return NULL;
    yun_wipe(keys, sizeof *keys);
    free(keys);
    return NULL;
}

size_t
yun_token_keys_count(const struct yun_token_keys *keys)
{
    return keys ? keys->n : 0;
}

int
yun_token_keys_get(const struct yun_token_keys *keys, size_t i, uint32_t *ret_index,
                   uint32_t *ret_key_id)
{
    if (!keys || i >= keys->n)
        return -ERANGE;
    if (ret_index)
        *ret_index = keys->keys[i].index;
    if (ret_key_id)
        *ret_key_id = keys->keys[i].id;
    return 0;
}

/* A key file name: a decimal index without leading zeros. */
static bool
parse_index(const char *name, uint32_t *ret)
{
    size_t n = strlen(name);
    if (n == 0 || n > 10 || (n > 1 && name[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (v > UINT32_MAX)
        return false;
    *ret = (uint32_t)v;
    return true;
}

/* 'fd' must be a directory that only its owner can access: anyone who can
 * list or write it could read or swap keys. */
static int
check_private_dir(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (st.st_mode & 077)
        return -EPERM;
    return 0;
}

static int
open_dir(const char *dir, int *ret)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = check_private_dir(fd);
    if (r < 0) {
        (void)close(fd);
        return r;
    }
    *ret = fd;
    return 0;
}

/* A key file is exactly 64 hex digits and a newline. */
#define KEY_FILE_SIZE (2 * YUN_KEY_SIZE + 1)

static int
read_key_at(int dirfd, const char *name, struct yun_key *ret)
{
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EBADMSG;
    if (st.st_mode & 077)
        return -EPERM;
    if (st.st_size != KEY_FILE_SIZE)
        return -EBADMSG;

    char text[KEY_FILE_SIZE + 1];
    size_t size = 0;
    while (size < KEY_FILE_SIZE) {
        ssize_t n = read(fd, text + size, KEY_FILE_SIZE - size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int r = n < 0 ? -errno : -EBADMSG;
            yun_wipe(text, sizeof text);
            return r;
        }
        size += (size_t)n;
    }
    int r = -EBADMSG;
    if (text[KEY_FILE_SIZE - 1] == '\n') {
        text[KEY_FILE_SIZE - 1] = '\0';
        if (yun_hex_decode(text, ret->bytes, YUN_KEY_SIZE) == 0)
            r = 0;
    }
    yun_wipe(text, sizeof text);
    return r;
}

static int
compare_index(const void *a, const void *b)
{
    const struct token_key *x = a, *y = b;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Loads every key file of the open directory 'dirfd'. An empty repository
 * gives n == 0, not an error: the callers decide. */
static int
load_at(int dirfd, struct yun_token_keys *keys)
{
    int fd = dup(dirfd);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int r = -errno;
        (void)close(fd);
        return r;
    }
    /* The dup shares the offset with 'dirfd': start from the top. */
    rewinddir(d);
    int r = 0;
    keys->n = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            r = errno ? -errno : 0;
            break;
        }
        uint32_t index;
        if (!parse_index(de->d_name, &index))
            continue;
        if (keys->n == YUN_TOKEN_KEYS_MAX) {
            r = -E2BIG;
            break;
        }
        struct token_key *k = &keys->keys[keys->n];
        k->index = index;
        r = read_key_at(dirfd, de->d_name, &k->key);
        if (r == 0)
            r = key_id_of(&k->key, &k->id);
        if (r < 0)
            break;
        keys->n++;
    }
    (void)closedir(d);
    if (r < 0)
        return r;

    qsort(keys->keys, keys->n, sizeof keys->keys[0], compare_index);
    /* Tokens pick their key by id; two different keys under one id would
     * make one of them unusable. Rotation never writes such a pair. */
    for (size_t i = 0; i < keys->n; i++)
        for (size_t j = i + 1; j < keys->n; j++)
            if (keys->keys[i].id == keys->keys[j].id &&
                CRYPTO_memcmp(keys->keys[i].key.bytes, keys->keys[j].key.bytes,
                              YUN_KEY_SIZE) != 0)
                return -EBADMSG;
    return 0;
}

int
yun_token_keys_load(const char *dir, struct yun_token_keys **ret)
{
    _cleanup_close_ int dirfd = -EBADF;
    int r = open_dir(dir, &dirfd);
    if (r < 0)
        return r;
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = calloc(1, sizeof *keys);
    if (!keys)
        return -ENOMEM;
    r = load_at(dirfd, keys);
    if (r < 0)
        return r;
    if (keys->n == 0)
        return -ENOENT;
    *ret = TAKE_PTR(keys);
    return 0;
}

/* A new random key whose id differs from every key in 'keys'. */
static int
key_new(const struct yun_token_keys *keys, struct token_key *ret)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        if (RAND_priv_bytes(ret->key.bytes, YUN_KEY_SIZE) != 1)
            return -EIO;
        int r = key_id_of(&ret->key, &ret->id);
        if (r < 0)
            return r;
        bool clash = false;
        for (size_t i = 0; keys && i < keys->n; i++)
            clash |= keys->keys[i].id == ret->id;
        if (!clash)
            return 0;
    }
    return -EIO;
}

static int
key_write(const char *dir, uint32_t index, const struct yun_key *key)
{
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/%u", dir, index) < 0)
        return -ENOMEM;
    char text[KEY_FILE_SIZE + 1];
    yun_hex_encode(key->bytes, YUN_KEY_SIZE, text);
    text[KEY_FILE_SIZE - 1] = '\n';
    int r = yun_write_file_atomic(path, text, KEY_FILE_SIZE, 0600);
    yun_wipe(text, sizeof text);
    return r;
}

static int
lock_dir(int dirfd)
{
    while (flock(dirfd, LOCK_EX) < 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

int
yun_token_keys_create(const char *dir)
{
    int r = yun_mkdir_p(dir, 0700);
    if (r < 0)
        return r;
    _cleanup_close_ int dirfd = -EBADF;
    r = open_dir(dir, &dirfd);
    if (r < 0)
        return r;
    r = lock_dir(dirfd);
    if (r < 0)
        return r;
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = calloc(1, sizeof *keys);
    if (!keys)
        return -ENOMEM;
    r = load_at(dirfd, keys);
    if (r < 0)
        return r;
    if (keys->n > 0)
        return -EEXIST;

    /* Primary first: a crash in between leaves a usable repository. */
    static const uint32_t order[] = { 1, 0 };
    for (size_t i = 0; i < ELEMENTSOF(order); i++) {
        struct token_key *k = &keys->keys[keys->n];
        r = key_new(keys, k);
        if (r < 0)
            return r;
        k->index = order[i];
        r = key_write(dir, k->index, &k->key);
        if (r < 0)
            return r;
        keys->n++;
    }
    return fsync(dirfd) < 0 ? -errno : 0;
}

int
yun_token_keys_rotate(const char *dir, unsigned max_active)
{
    if (max_active < 2)
        return -EINVAL;
    _cleanup_close_ int dirfd = -EBADF;
    int r = open_dir(dir, &dirfd);
    if (r < 0)
        return r;
    r = lock_dir(dirfd);
    if (r < 0)
        return r;
    _cleanup_(yun_token_keys_freep) struct yun_token_keys *keys = calloc(1, sizeof *keys);
    if (!keys)
        return -ENOMEM;
    r = load_at(dirfd, keys);
    if (r < 0)
        return r;
    if (keys->n == 0)
        return -ENOENT;

    struct token_key staged;
    r = key_new(keys, &staged);
    if (r < 0)
        return r;

    /* Promote: the staged key 0 takes the index after the highest. */
    size_t n = keys->n;
    uint32_t highest = keys->keys[n - 1].index;
    bool have_staged = keys->keys[0].index == 0;
    if (have_staged) {
        char name[16];
        snprintf(name, sizeof name, "%u", highest + 1);
        if (highest == UINT32_MAX)
            r = -EOVERFLOW;
        else if (renameat(dirfd, "0", dirfd, name) < 0)
            r = -errno;
        if (r < 0) {
            yun_wipe(&staged, sizeof staged);
            return r;
        }
    }
    r = key_write(dir, 0, &staged.key);
    yun_wipe(&staged, sizeof staged);
    if (r < 0)
        return r;

    /* There are n + 1 keys now: the new staged key and the n loaded ones,
     * keys[0] renamed to be the primary when it was the staged key. Delete
     * the secondaries with the lowest indexes, never the primary: keys[1]
     * up to the old primary keys[n - 1] after a promotion, else keys[0]
     * up to keys[n - 2], keys[n - 1] staying primary. */
    size_t first = have_staged ? 1 : 0, end = have_staged ? n : n - 1;
    size_t total = n + 1;
    for (size_t i = first; i < end && total > max_active; i++) {
        char name[16];
        snprintf(name, sizeof name, "%u", keys->keys[i].index);
        if (unlinkat(dirfd, name, 0) < 0)
            return -errno;
        total--;
    }
    return fsync(dirfd) < 0 ? -errno : 0;
}

static const struct token_key *
primary_key(const struct yun_token_keys *keys)
{
    if (!keys || keys->n == 0 || keys->keys[keys->n - 1].index == 0)
        return NULL;
    return &keys->keys[keys->n - 1];
}

static const struct token_key *
key_by_id(const struct yun_token_keys *keys, uint32_t id)
{
    for (size_t i = 0; i < keys->n; i++)
        if (keys->keys[i].id == id)
            return &keys->keys[i];
    return NULL;
}

static bool
claims_valid(const struct yun_token *c)
{
    if (strnlen(c->user_id, sizeof c->user_id) == sizeof c->user_id ||
        !yun_name_is_valid(c->user_id, YUN_TOKEN_ID_MAX))
        return false;
    if (strnlen(c->project_id, sizeof c->project_id) == sizeof c->project_id ||
        (c->project_id[0] && !yun_name_is_valid(c->project_id, YUN_TOKEN_ID_MAX)))
        return false;
    if (c->n_roles > YUN_TOKEN_ROLES_MAX)
        return false;
    for (size_t i = 0; i < c->n_roles; i++)
        if (strnlen(c->roles[i], sizeof c->roles[i]) == sizeof c->roles[i] ||
            !yun_name_is_valid(c->roles[i], YUN_TOKEN_ROLE_MAX))
            return false;
    return c->expires_at_us > c->issued_at_us;
}

static size_t
put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return 1 + n;
}

static size_t
payload_encode(const struct yun_token *c, const uint8_t audit[AUDIT_SIZE], uint8_t *out)
{
    uint8_t *p = out;
    put_be64(p, c->issued_at_us);
    put_be64(p + 8, c->expires_at_us);
    memcpy(p + 16, audit, AUDIT_SIZE);
    p += 16 + AUDIT_SIZE;
    p += put_str(p, c->user_id);
    p += put_str(p, c->project_id);
    *p++ = (uint8_t)c->n_roles;
    for (size_t i = 0; i < c->n_roles; i++)
        p += put_str(p, c->roles[i]);
    return (size_t)(p - out);
}

/* Reads a length-prefixed string of min..max bytes into 'out' (max + 1). */
static bool
get_str(const uint8_t **p, const uint8_t *end, size_t min, size_t max, char *out)
{
    if (*p >= end)
        return false;
    size_t n = **p;
    if (n < min || n > max || (size_t)(end - *p - 1) < n)
        return false;
    memcpy(out, *p + 1, n);
    out[n] = '\0';
    *p += 1 + n;
    return n == 0 || yun_name_is_valid(out, max);
}

static bool
payload_decode(const uint8_t *data, size_t size, struct yun_token *t)
{
    const uint8_t *p = data, *end = data + size;
    if (size < 16 + AUDIT_SIZE)
        return false;
    t->issued_at_us = get_be64(p);
    t->expires_at_us = get_be64(p + 8);
    yun_base64_encode(p + 16, AUDIT_SIZE, YUN_BASE64_URL | YUN_BASE64_NOPAD, t->audit_id);
    p += 16 + AUDIT_SIZE;
    if (!get_str(&p, end, 1, YUN_TOKEN_ID_MAX, t->user_id) ||
        !get_str(&p, end, 0, YUN_TOKEN_ID_MAX, t->project_id))
        return false;
    if (p >= end || *p > YUN_TOKEN_ROLES_MAX)
        return false;
    t->n_roles = *p++;
    for (size_t i = 0; i < t->n_roles; i++)
        if (!get_str(&p, end, 1, YUN_TOKEN_ROLE_MAX, t->roles[i]))
            return false;
    return p == end;
}

int
yun_token_issue(const struct yun_token_keys *keys, const struct yun_token *claims,
                char **ret_token, struct yun_token *ret_issued)
{
    if (!keys || !claims || !ret_token || !claims_valid(claims))
        return -EINVAL;
    const struct token_key *k = primary_key(keys);
    if (!k)
        return -ENOKEY;

    uint8_t audit[AUDIT_SIZE];
    if (RAND_bytes(audit, sizeof audit) != 1)
        return -EIO;
    uint8_t plain[PAYLOAD_MAX];
    size_t plain_size = payload_encode(claims, audit, plain);

    uint8_t bin[TOKEN_BIN_MAX];
    bin[0] = TOKEN_VERSION;
    put_be32(bin + 1, k->id);
    int r = yun_nonce_new(bin + 5);
    if (r < 0)
        return r;
    r = yun_seal(&k->key, bin + 5, bin, HEADER_SIZE, plain, plain_size, bin + HEADER_SIZE);
    yun_wipe(plain, sizeof plain);
    if (r < 0)
        return r;
    size_t size = HEADER_SIZE + plain_size + YUN_TAG_SIZE;

    unsigned flags = YUN_BASE64_URL | YUN_BASE64_NOPAD;
    char *text = malloc(yun_base64_encoded_len(size, flags) + 1);
    if (!text)
        return -ENOMEM;
    yun_base64_encode(bin, size, flags, text);
    if (ret_issued) {
        *ret_issued = *claims;
        yun_base64_encode(audit, sizeof audit, flags, ret_issued->audit_id);
        ret_issued->key_id = k->id;
    }
    *ret_token = text;
    return 0;
}

int
yun_token_validate(const struct yun_token_keys *keys, const char *token, uint64_t now_us,
                   struct yun_token *ret)
{
    if (!keys || !token || !ret)
        return -EINVAL;
    size_t len = strnlen(token, YUN_TOKEN_MAX_LEN + 1);
    if (len > YUN_TOKEN_MAX_LEN)
        return YUN_E_TOKEN_INVALID;
    uint8_t bin[TOKEN_BIN_MAX];
    size_t size;
    if (yun_base64_decode(token, len, YUN_BASE64_URL | YUN_BASE64_NOPAD, bin, sizeof bin,
                          &size) < 0)
        return YUN_E_TOKEN_INVALID;
    if (size < HEADER_SIZE + YUN_TAG_SIZE || bin[0] != TOKEN_VERSION)
        return YUN_E_TOKEN_INVALID;
    uint32_t id = get_be32(bin + 1);
    /* A key id we do not hold is a token of another cloud or of a key
     * rotated out: said apart from an altered token, whose key we hold
     * but whose seal does not open. */
    const struct token_key *k = key_by_id(keys, id);
    if (!k)
        return YUN_E_TOKEN_KEY;

    uint8_t plain[PAYLOAD_MAX];
    size_t sealed_size = size - HEADER_SIZE;
    int r = yun_open(&k->key, bin + 5, bin, HEADER_SIZE, bin + HEADER_SIZE, sealed_size, plain);
    if (r == YUN_E_SEAL)
        return YUN_E_TOKEN_INVALID;
    if (r < 0)
        return r;
    struct yun_token t;
    /* A payload that does not decode under a valid tag is a bug of the
     * issuer, not an attack; refuse it all the same. */
    if (!payload_decode(plain, sealed_size - YUN_TAG_SIZE, &t))
        return YUN_E_TOKEN_INVALID;
    t.key_id = id;
    if (now_us >= t.expires_at_us)
        return YUN_E_TOKEN_EXPIRED;
    *ret = t;
    return 0;
}
