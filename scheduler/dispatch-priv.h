/* SPDX-License-Identifier: Apache-2.0
 * dispatch-priv.h: the dispatch table's rows, exported for the policy
 * matrix test (tests/unit/test-identity-policy.c), which walks every row
 * with every kind of caller and checks that each operation of the
 * protocol has a row. Not for other modules: they see sched_dispatch(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "yun.pb-c.h"

struct sched_call;

/* Who may call an operation: any of these bits. The role bits are
 * SCHED_ROLE_* (scheduler.h) of a valid token; the others stand for
 * callers with no token. */
enum sched_allow {
    SCHED_ALLOW_READER = 1 << 0,    /* = SCHED_ROLE_READER */
    SCHED_ALLOW_MEMBER = 1 << 1,    /* = SCHED_ROLE_MEMBER */
    SCHED_ALLOW_ADMIN = 1 << 2,     /* = SCHED_ROLE_ADMIN */
    SCHED_ALLOW_AGENT = 1 << 3,     /* agent peers, by their key alone */
    SCHED_ALLOW_ANONYMOUS = 1 << 4, /* operator peers without a token */
};

typedef int (*sched_handler_fn)(struct sched_call *call, const ProtobufCMessage *req);

struct sched_op {
    Yun__Op op;
    const char *name;
    const ProtobufCMessageDescriptor *request;
    sched_handler_fn handler;
    unsigned allow;           /* enum sched_allow bits; 0 = nobody */
    bool mutating;            /* logged at info (reads at debug) and audited */
    const char *target_field; /* string field of the request naming the object, for audit */
};

extern const struct sched_op sched_ops[];
extern const size_t sched_ops_count;

/* Ops of the protocol that intentionally have no row (OP_UNSPECIFIED). */
extern const Yun__Op sched_ops_unused[];
extern const size_t sched_ops_unused_count;

/* The policy decision alone: may a caller with 'peer_kind', a token or
 * not ('authenticated'), and 'roles' call 'op'? */
bool sched_op_allows(const struct sched_op *op, int peer_kind, bool authenticated,
                     unsigned roles);
