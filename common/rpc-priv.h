/* SPDX-License-Identifier: Apache-2.0
 * rpc-priv.h: rpc.c's in-place scan of a Reply, exported for
 * tests/fuzz/fuzz-rpc.c and the unit tests. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Finds a successful Reply's payload in 'body' without copying it, as
 * yun__reply__unpack would decode it. Returns 1 with '*ret' and
 * '*ret_size' (pointing into 'body', or NULL and 0 when there is no
 * payload) when 'body' is a Reply whose error is 0; 0 when it is a Reply
 * with an error, which yun_rpc_unpack_reply leaves to protobuf-c; -1 when
 * it does not decode. '*ret' and '*ret_size' are written only on 1. */
int yun_rpc_scan_reply(const uint8_t *body, size_t size, const uint8_t **ret,
                       size_t *ret_size);
