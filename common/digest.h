/* SPDX-License-Identifier: Apache-2.0
 * digest.h: streaming MD5 + SHA-512 over bytes that arrive in chunks, in one
 * pass (OpenSSL EVP). The image service hashes uploads with it as they
 * stream (scheduler/image.c), and compute agents verify fetched images
 * with it (agent/image-cache.c).
 *
 * Speed: neither algorithm has a SIMD form for one stream, and on a core
 * where each runs at about 500 MB/s, hashing both in turn halves the rate.
 * A digest hashes large chunks (64 KiB and up) on helper threads of its
 * own, one per algorithm, each touching nothing but the chunk (read-only)
 * and its own state. yun_digest_update_start hands a chunk to them and
 * returns, so that the caller can store the same bytes meanwhile;
 * yun_digest_update_wait joins them. yun_digest_update does both.
 *
 * One digest per stream; a digest is used by one thread at a time. Pure
 * code: no logging. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct yun_digest;

enum {
    YUN_DIGEST_MD5 = 1u << 0,
    YUN_DIGEST_SHA512 = 1u << 1,
    YUN_DIGEST_ALL = YUN_DIGEST_MD5 | YUN_DIGEST_SHA512,
};

#define YUN_MD5_HEX_SIZE 33     /* 32 hex digits and a NUL */
#define YUN_SHA512_HEX_SIZE 129 /* 128 hex digits and a NUL */

struct yun_digest_result {
    uint64_t size;                     /* bytes hashed */
    char md5[YUN_MD5_HEX_SIZE];        /* lowercase hex; "" when not asked for */
    char sha512[YUN_SHA512_HEX_SIZE];  /* lowercase hex; "" when not asked for */
};

/* Starts a digest of the algorithms in 'algos' (YUN_DIGEST_* bits, at
 * least one). Returns 0 and '*ret', -EINVAL, -ENOMEM or -EIO when OpenSSL
 * refuses. */
int yun_digest_new(unsigned algos, struct yun_digest **ret);
/* Frees 'd' (NULL ok), waiting for a pending chunk and stopping its helper
 * threads. Returns NULL. */
struct yun_digest *yun_digest_free(struct yun_digest *d);
static inline void
yun_digest_freep(struct yun_digest **p)
{
    if (*p)
        *p = yun_digest_free(*p);
}

/* Hashes the next 'size' bytes. Returns 0, or -EIO when OpenSSL fails, after
 * which the digest is unusable (every later call returns -EIO). */
int yun_digest_update(struct yun_digest *d, const void *data, size_t size);
/* Starts hashing the next 'size' bytes, in the background for a large
 * chunk. 'data' must stay valid and unchanged until yun_digest_update_wait
 * (or yun_digest_free) returns; one chunk at a time (-EINVAL otherwise). */
int yun_digest_update_start(struct yun_digest *d, const void *data, size_t size);
/* Waits for the chunk of the last yun_digest_update_start; 0 when none is
 * pending. Returns 0 or the sticky -EIO. */
int yun_digest_update_wait(struct yun_digest *d);
/* Ends the digest and writes the hex values (-EINVAL while a chunk is
 * pending). The digest accepts no more updates afterwards (-EINVAL). */
int yun_digest_final(struct yun_digest *d, struct yun_digest_result *ret);

/* Hashes the whole file 'fd' from offset 0 to its end with pread (the file
 * offset is not used or moved), reading ahead while the helpers hash. */
int yun_digest_fd(int fd, unsigned algos, struct yun_digest_result *ret);

/* True when 'hex' is exactly 'len' hex digits, either case. */
bool yun_digest_hex_is_valid(const char *hex, size_t len);
/* Compares two hex digests, ignoring case. */
bool yun_digest_hex_equal(const char *a, const char *b);
