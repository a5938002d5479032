/* SPDX-License-Identifier: Apache-2.0
 * identity-priv.h: what identity.c, identity-admin.c and keypair.c share
 * (record look-ups, revocations) and the few hooks the unit tests use.
 * Not for other modules. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "identity.pb-c.h"

struct sched;
struct sched_call;
struct yun_txn;
struct yun_password_params;

#define SCHED_DOMAIN "default"
#define SCHED_ADMIN_PROJECT "admin"
#define SCHED_ADMIN_USER "admin"
#define SCHED_NAME_MAX 255          /* bytes of a user, project or keypair name */
#define SCHED_EMAIL_MAX 255
#define SCHED_DESCRIPTION_MAX 1024

static inline void
sched_user_freep(Yun__UserRecord **p)
{
    if (*p)
        yun__user_record__free_unpacked(*p, NULL);
}
static inline void
sched_project_freep(Yun__ProjectRecord **p)
{
    if (*p)
        yun__project_record__free_unpacked(*p, NULL);
}
#define _cleanup_user_ __attribute__((cleanup(sched_user_freep)))
#define _cleanup_project_ __attribute__((cleanup(sched_project_freep)))

/* Replaces the string field '*field' of an unpacked record with a copy of
 * 'value'. protobuf-c leaves empty strings pointing at a shared constant,
 * which must not be freed. */
int sched_pb_set_string(char **field, const char *value);
/* Takes 'value' (malloc'ed) as the field's new string. */
void sched_pb_take_string(char **field, char *value);

/* A user or project name: 1..255 bytes of UTF-8 without control
 * characters, no leading or trailing space, not a UUID (so that a
 * reference is never ambiguous). */
bool sched_identity_name_valid(const char *name);

/* Record look-ups by id or name ('ref'). -ENOENT when absent; the caller
 * frees the record with protobuf_c_message_free_unpacked. */
int sched_user_find(struct yun_txn *txn, const char *ref, Yun__UserRecord **ret);
int sched_project_find(struct yun_txn *txn, const char *ref, Yun__ProjectRecord **ret);
int sched_user_put(struct yun_txn *txn, const Yun__UserRecord *u);
int sched_project_put(struct yun_txn *txn, const Yun__ProjectRecord *p);

/* The SCHED_ROLE_* bits 'user_id' holds on 'project_id', as assigned
 * (without the implied ones). */
int sched_assigned_roles(struct yun_txn *txn, const char *user_id, const char *project_id,
                         unsigned *ret);
/* With the implied ones: admin > member > reader. */
unsigned sched_roles_implied(unsigned assigned);
int sched_assignment_put(struct yun_txn *txn, const char *user_id, const char *project_id,
                         const char *role);

/* Revokes, in 'txn', the tokens of 'user_id' (every project when
 * 'project_id' is empty), or of every user of 'project_id' when 'user_id'
 * is empty, issued up to now. The in-memory list takes it at once, so a
 * transaction that then fails revokes more than it stored, never less
 * (the cron reloads the stored list when they differ). */
int sched_revoke_tokens(struct sched *s, struct yun_txn *txn, const char *user_id,
                        const char *project_id, const char *reason);

/* A copy of a user record fit for a reply: no password hash. */
int sched_user_reply(struct sched_call *call, const Yun__UserRecord *u);

/* Tests: the cost of the password hashes identity makes from now on (NULL
 * = the default). Verification reads the cost from each stored hash. */
void sched_identity_set_hash_params(struct sched *s, const struct yun_password_params *p);
const struct yun_password_params *sched_identity_hash_params(const struct sched *s);
/* Tests: revocations held in memory (audit ids, user and project rules). */
size_t sched_identity_revocations(const struct sched *s);
