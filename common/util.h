/* SPDX-License-Identifier: Apache-2.0
 * util.h: small checked helpers shared by every part: number parsing,
 * ids, hex, wall-clock time, whole-file reads and atomic writes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define YUN_UUID_STR_SIZE 37

/* Parse a whole decimal string; -EINVAL on junk or empty, -ERANGE on overflow. */
int yun_safe_atou32(const char *s, uint32_t *ret);
int yun_safe_atou64(const char *s, uint64_t *ret);
int yun_safe_atod(const char *s, double *ret);
/* "yes/no/true/false/on/off/1/0". */
int yun_parse_bool(const char *s, bool *ret);

/* A random (v4) UUID in canonical text form. */
int yun_uuid_new(char ret[YUN_UUID_STR_SIZE]);
bool yun_uuid_is_valid(const char *s);

/* Lowercase hex of 'size' bytes into 'out' (2*size+1 bytes). */
void yun_hex_encode(const void *data, size_t size, char *out);
/* Decodes exactly 'size' bytes from 'hex'; -EINVAL unless strlen == 2*size. */
int yun_hex_decode(const char *hex, void *out, size_t size);

/* Wall clock, microseconds since the Unix epoch. */
uint64_t yun_wall_us(void);
/* Formats 'us' as "2026-07-01T12:00:00Z" into 'buf' (at least 21 bytes). */
const char *yun_format_time(uint64_t us, char *buf, size_t size);

/* Reads a whole file of at most 'max_size' bytes (NUL-terminated copy). */
int yun_read_file(const char *path, size_t max_size, char **ret, size_t *ret_size);
/* Writes 'size' bytes to 'path' through a temp file + fsync + rename, with
 * 'mode'. Never leaves a half-written file behind. */
int yun_write_file_atomic(const char *path, const void *data, size_t size, mode_t mode);
/* mkdir -p with 'mode' for each created component. */
int yun_mkdir_p(const char *path, mode_t mode);
/* 0 when 'path' is a regular file not readable or writable by group or
 * others; -EPERM when it is; -errno when it cannot be checked. */
int yun_check_private_file(const char *path);

/* True when 's' is a usable name: 1..max_len bytes of [A-Za-z0-9._-],
 * not starting with '-' or '.'. */
bool yun_name_is_valid(const char *s, size_t max_len);

/* True when 's' is a host name that DNS and dnsmasq take as one: a DNS
 * label (1..63 bytes of [A-Za-z0-9-], not starting or ending with '-')
 * that starts with a letter (a hosts-file field starting with a digit is
 * read as a lease time) and is not "ignore" or "infinite" (keywords
 * there). The one rule for the scheduler's hostnames and the agent's
 * DHCP hosts file. */
bool yun_hostname_is_valid(const char *s);

/* Appends printf-style text to the malloc'd string '*text' (NULL starts
 * an empty one). Returns 0, or -ENOMEM with '*text' unchanged. */
int yun_text_appendf(char **text, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Frees a NULL-terminated vector of strings and the strings; NULL ok.
 * Returns NULL. */
char **yun_strv_free(char **v);
static inline void yun_strv_freep(char ***v)
{
    *v = yun_strv_free(*v);
}

/* True when 's' is 1..'max' bytes of valid UTF-8 with no control
 * characters (C0, DEL, C1) and no overlong forms or surrogates: the rule
 * for names and free text users give (image, server, flavor names). */
bool yun_text_is_valid(const char *s, size_t max);

/* Random request id, 16 hex chars. */
void yun_request_id_new(char ret[17]);
