/* SPDX-License-Identifier: Apache-2.0
 * base64.c: strict RFC 4648 base64 (see base64.h). Written here rather than
 * taken from OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock because those know
 * neither the URL alphabet nor unpadded input, and EVP_DecodeBlock accepts
 * whitespace and returns padding bytes as zeros. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "base64.h"

static const char alphabet_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char alphabet_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t
yun_base64_encoded_len(size_t size, unsigned flags)
{
    if (flags & YUN_BASE64_NOPAD)
        return size / 3 * 4 + (size % 3 ? size % 3 + 1 : 0);
    return (size + 2) / 3 * 4;
}

size_t
yun_base64_encode(const void *data, size_t size, unsigned flags, char *out)
{
    const char *a = flags & YUN_BASE64_URL ? alphabet_url : alphabet_std;
    const uint8_t *p = data;
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= size; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = a[v >> 18];
        *o++ = a[(v >> 12) & 63];
        *o++ = a[(v >> 6) & 63];
        *o++ = a[v & 63];
    }
    size_t rest = size - i;
    if (rest) {
        uint32_t v = (uint32_t)p[i] << 16 | (rest == 2 ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = a[v >> 18];
        *o++ = a[(v >> 12) & 63];
        if (rest == 2)
            *o++ = a[(v >> 6) & 63];
        if (!(flags & YUN_BASE64_NOPAD)) {
            if (rest == 1)
                *o++ = '=';
            *o++ = '=';
        }
    }
    *o = '\0';
    return (size_t)(o - out);
}

static int
decode_char(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

int
yun_base64_decode(const char *s, size_t len, unsigned flags, void *out, size_t out_size,
                  size_t *ret_size)
{
    bool url = flags & YUN_BASE64_URL;
    const unsigned char *u = (const unsigned char *)s;
    size_t data_len = len;
    if (!(flags & YUN_BASE64_NOPAD)) {
        if (len % 4)
            return -EINVAL;
        size_t pad = 0;
        while (pad < 2 && data_len > 0 && s[data_len - 1] == '=') {
            data_len--;
            pad++;
        }
        /* One '=' stands for a 3-character tail, two for a 2-character one. */
        if (pad && data_len % 4 != 4 - pad)
            return -EINVAL;
    }
    if (data_len % 4 == 1)
        return -EINVAL;
    size_t size = data_len / 4 * 3 + (data_len % 4 ? data_len % 4 - 1 : 0);
    if (size > out_size)
        return -ENOBUFS;

    uint8_t *o = out;
    size_t i = 0;
    for (; i + 4 <= data_len; i += 4) {
        int a = decode_char(u[i], url), b = decode_char(u[i + 1], url);
        int c = decode_char(u[i + 2], url), d = decode_char(u[i + 3], url);
        if ((a | b | c | d) < 0)
            return -EINVAL;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        *o++ = (uint8_t)(v >> 16);
        *o++ = (uint8_t)(v >> 8);
        *o++ = (uint8_t)v;
    }
    size_t rest = data_len - i;
    if (rest) {
        int a = decode_char(u[i], url), b = decode_char(u[i + 1], url);
        int c = rest == 3 ? decode_char(u[i + 2], url) : 0;
        if ((a | b | c) < 0)
            return -EINVAL;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
        /* Bits past the last whole byte must be zero, or two texts would
         * decode to the same bytes. */
        if (rest == 2 ? (v & 0xffff) : (v & 0xff))
            return -EINVAL;
        *o++ = (uint8_t)(v >> 16);
        if (rest == 3)
            *o++ = (uint8_t)(v >> 8);
    }
    *ret_size = size;
    return 0;
}
