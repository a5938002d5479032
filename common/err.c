/* SPDX-License-Identifier: Apache-2.0
 * err.c: messages and names for yun's error codes (see err.h). */
#include <errno.h>
#include <string.h>

#include "err.h"

static const struct {
    int code;
    const char *name;
    const char *msg;
} yun_errors[] = {
    { YUN_E_SEAL, "YUN_E_SEAL", "authentication failed: the message seal did not open" },
    { YUN_E_STALE, "YUN_E_STALE", "message timestamp is outside the accepted window" },
    { YUN_E_REPLAY, "YUN_E_REPLAY", "message replayed: nonce already seen" },
    { YUN_E_VERSION, "YUN_E_VERSION", "unknown protocol version" },
    { YUN_E_TOOBIG, "YUN_E_TOOBIG", "message larger than the size limit" },
    { YUN_E_DECODE, "YUN_E_DECODE", "message does not decode" },
    { YUN_E_UNKNOWN_PEER, "YUN_E_UNKNOWN_PEER", "authentication failed: unknown or revoked peer" },
    { YUN_E_DENIED, "YUN_E_DENIED", "permission denied" },
    { YUN_E_NOHOST, "YUN_E_NOHOST", "no such host" },
    { YUN_E_UNREACHABLE, "YUN_E_UNREACHABLE", "peer did not answer in time" },
    { YUN_E_SCHEMA, "YUN_E_SCHEMA", "state store schema is newer than this program" },
    { YUN_E_CONFIG, "YUN_E_CONFIG", "invalid configuration" },
    { YUN_E_BADOP, "YUN_E_BADOP", "unknown operation" },
    { YUN_E_INVALID, "YUN_E_INVALID", "invalid request" },
    { YUN_E_NOIMAGE, "YUN_E_NOIMAGE", "no such image" },
    { YUN_E_CONFLICT, "YUN_E_CONFLICT", "conflicts with the object's current state" },
    { YUN_E_CHECKSUM, "YUN_E_CHECKSUM", "data does not match its expected checksum or size" },
    { YUN_E_BADIMAGE, "YUN_E_BADIMAGE", "image content refused by the format inspector" },
    { YUN_E_AUTH, "YUN_E_AUTH", "authentication failed: wrong user name or password" },
    { YUN_E_TOKEN_INVALID, "YUN_E_TOKEN_INVALID",
      "authentication failed: the token is not valid" },
    { YUN_E_TOKEN_KEY, "YUN_E_TOKEN_KEY",
      "token refused: sealed with a key this cloud does not hold (rotated out, or another cloud's)" },
    { YUN_E_TOKEN_EXPIRED, "YUN_E_TOKEN_EXPIRED",
      "authentication failed: the token has expired" },
    { YUN_E_TOKEN_REVOKED, "YUN_E_TOKEN_REVOKED",
      "authentication failed: the token has been revoked" },
    { YUN_E_NOVALIDHOST, "YUN_E_NOVALIDHOST", "no valid host was found" },
    { YUN_E_EXHAUSTED, "YUN_E_EXHAUSTED", "no free address or identifier is left in the pool" },
    { YUN_E_INUSE, "YUN_E_INUSE", "the object is in use" },
    { YUN_E_NETWORK, "YUN_E_NETWORK", "the host could not wire its network" },
};

const char *
yun_strerror(int r)
{
    if (r >= 0)
        return "success";
    for (size_t i = 0; i < sizeof yun_errors / sizeof yun_errors[0]; i++)
        if (yun_errors[i].code == r)
            return yun_errors[i].msg;
    if (r > _YUN_E_FIRST)
        return strerror(-r);
    return "unknown error";
}

const char *
yun_errname(int r)
{
    if (r >= 0)
        return "OK";
    for (size_t i = 0; i < sizeof yun_errors / sizeof yun_errors[0]; i++)
        if (yun_errors[i].code == r)
            return yun_errors[i].name;
    if (r > _YUN_E_FIRST) {
        const char *n = strerrorname_np(-r);
        return n ? n : "EUNKNOWN";
    }
    return "YUN_E_UNKNOWN";
}
