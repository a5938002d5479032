/* SPDX-License-Identifier: Apache-2.0
 * base64.h: RFC 4648 base64, in the three spellings identity needs: the
 * standard alphabet with padding (OpenSSH public keys and PEM bodies), the
 * standard alphabet without padding (password hashes, SSH fingerprints) and
 * the URL-safe alphabet without padding (tokens, audit ids). Used by
 * password.c, token.c and keypair.c.
 *
 * Decoding is strict, so that one text has one meaning: no whitespace, no
 * padding where none is expected and exact padding where it is, and the
 * unused low bits of the last character must be zero. */
#pragma once

#include <stddef.h>

enum {
    YUN_BASE64_URL = 1 << 0,   /* '-' and '_' instead of '+' and '/' */
    YUN_BASE64_NOPAD = 1 << 1, /* no trailing '=' */
};

/* Returns the number of characters (not counting the NUL) that encoding
 * 'size' bytes with 'flags' produces. */
size_t yun_base64_encoded_len(size_t size, unsigned flags);

/* Encodes 'size' bytes of 'data' into 'out', which must hold
 * yun_base64_encoded_len(size, flags) + 1 bytes; 'out' is NUL-terminated.
 * Returns the number of characters written. */
size_t yun_base64_encode(const void *data, size_t size, unsigned flags, char *out);

/* Decodes the 'len' characters of 's' into 'out' (at most 'out_size'
 * bytes) and stores the decoded size in '*ret_size'. Returns 0, -EINVAL on
 * any character outside the alphabet, wrong padding, an impossible length
 * or non-zero unused bits, or -ENOBUFS when 'out' is too small. 'out' may
 * hold partial output on failure. */
int yun_base64_decode(const char *s, size_t len, unsigned flags, void *out, size_t out_size,
                      size_t *ret_size);
