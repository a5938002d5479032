/* SPDX-License-Identifier: Apache-2.0
 * err.h: yun's error codes. Fallible functions return >= 0 on success and a
 * negative errno or a negative enum yun_err on failure. The yun codes sit far
 * below errno's range and are a stable interface: they travel in replies
 * (Reply.error) and CLI scripts may test them. Append only. */
#pragma once

enum yun_err {
    _YUN_E_FIRST = -10000,
    YUN_E_SEAL = -10001,        /* the envelope's seal did not open */
    YUN_E_STALE = -10002,       /* timestamp outside the accepted window */
    YUN_E_REPLAY = -10003,      /* nonce already seen inside the window */
    YUN_E_VERSION = -10004,     /* unknown envelope version */
    YUN_E_TOOBIG = -10005,      /* message larger than the size limit */
    YUN_E_DECODE = -10006,      /* bytes that do not decode */
    YUN_E_UNKNOWN_PEER = -10007, /* sender not registered or key revoked */
    YUN_E_DENIED = -10008,      /* authenticated but not allowed */
    YUN_E_NOHOST = -10009,      /* no such host */
    YUN_E_UNREACHABLE = -10010, /* peer did not answer in time */
    YUN_E_SCHEMA = -10011,      /* state store schema newer than this build */
    YUN_E_CONFIG = -10012,      /* invalid configuration */
    YUN_E_BADOP = -10013,       /* unknown operation */
    YUN_E_INVALID = -10014,     /* request field failed validation */
    YUN_E_NOIMAGE = -10015,     /* no such image, or not visible to the caller */
    YUN_E_CONFLICT = -10016,    /* the object's state forbids it now (or a name is ambiguous) */
    YUN_E_CHECKSUM = -10017,    /* data does not match its expected checksum or size */
    YUN_E_BADIMAGE = -10018,    /* image content refused by the format inspector */
    YUN_E_AUTH = -10019,        /* wrong user name or password */
    YUN_E_TOKEN_INVALID = -10020, /* not a token, or altered */
    YUN_E_TOKEN_EXPIRED = -10021, /* token past its expiry time */
    YUN_E_TOKEN_REVOKED = -10022, /* token on the revocation list */
    YUN_E_NOVALIDHOST = -10023,  /* no host can take the instance (placement) */
    YUN_E_TOKEN_KEY = -10024,    /* token sealed with a key this cloud does not hold */
    YUN_E_EXHAUSTED = -10025,    /* a pool is used up: addresses of a subnet, segment ids, MACs */
    YUN_E_INUSE = -10026,        /* the object is in use (ports on a network, a group on ports) */
    YUN_E_NETWORK = -10027,      /* a host could not wire (part of) its network state */
    _YUN_E_LAST = -10028,
};

/* Returns a static, human-readable sentence for 'r' (negative errno or
 * enum yun_err). Never returns NULL. */
const char *yun_strerror(int r);

/* Returns the stable symbolic name of 'r' ("YUN_E_SEAL", "ENOENT", ...). */
const char *yun_errname(int r);
