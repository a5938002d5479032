/* SPDX-License-Identifier: Apache-2.0
 * test-identity.c: identity through the dispatcher (scheduler/identity*.c,
 * keypair.c, dispatch.c): logins on the worker pool; tokens checked on
 * every request, each refusal with its own code (tampered and wrong-key
 * tokens are not valid, expired ones expired, revoked ones revoked) and
 * audited; key rotation keeping a token for one rotation and retiring it
 * at the second (max_active_keys 3, see common/token.h); lockout after
 * failed logins; disabled users; a password change, a disable and a role
 * removal revoking exactly the tokens they should; revocations surviving a
 * restart and reaching a running scheduler from another process; keypairs
 * per user; the init bootstrap. The policy matrix is test-identity-policy.c. */
#include "identity-fixture.h"

#include "keypair.h"

struct people {
    char *p1, *p2, *alice;
};

static void
people_done(struct people *p)
{
    free(p->p1);
    free(p->p2);
    free(p->alice);
}

/* Projects p1 and p2; alice (password "alice-pw", default project p1) is a
 * member of p1. */
static void
make_people(struct idf *fx, struct people *p)
{
    p->p1 = idf_project(fx, "p1");
    p->p2 = idf_project(fx, "p2");
    p->alice = idf_user(fx, "alice", "alice-pw", "p1");
    idf_role(fx, YUN__OP__OP_ROLE_ADD, "member", "alice", "p1");
}

static void
test_login(void **state)
{
    struct idf *fx = *state;
    _cleanup_(people_done) struct people p = { 0 };
    make_people(fx, &p);

    /* The default project, by name and by id. */
    Yun__LoginRequest q = YUN__LOGIN_REQUEST__INIT;
    char pw[] = "alice-pw";
    q.user = (char *)"alice";
    q.password = pw;
    Yun__LoginReply *y = NULL;
    assert_int_equal(idf_call_token(fx, "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, NULL,
                                    YUN__OP__OP_LOGIN, &q.base, &yun__login_reply__descriptor,
                                    &y, NULL), 0);
    assert_string_equal(y->user_id, p.alice);
    assert_string_equal(y->user_name, "alice");
    assert_string_equal(y->project_id, p.p1);
    assert_string_equal(y->project_name, "p1");
    assert_int_equal(y->n_roles, 2);
    assert_string_equal(y->roles[0], "member");
    assert_string_equal(y->roles[1], "reader");
    assert_true(y->expires_us - y->issued_us == 3600ull * 1000000u);
    assert_int_equal(strlen(y->audit_id), YUN_TOKEN_AUDIT_ID_LEN);
    assert_int_equal(idf_use(fx, y->token, NULL), 0);
    idf_free_msg(y);
    _cleanup_free_ char *t = NULL;
    assert_int_equal(idf_login(fx, p.alice, "alice-pw", p.p1, &t, NULL), 0);
    assert_int_equal(idf_use(fx, t, NULL), 0);

    /* A project without a role, an unknown one, and no project at all. */
    _cleanup_free_ char *msg = NULL;
    assert_int_equal(idf_login(fx, "alice", "alice-pw", "p2", NULL, &msg), YUN_E_DENIED);
    idf_assert_contains(msg, "no role on project 'p2'");
    free(TAKE_PTR(msg));
    assert_int_equal(idf_login(fx, "alice", "alice-pw", "nope", NULL, &msg), YUN_E_DENIED);
    free(TAKE_PTR(msg));
    _cleanup_free_ char *bob = idf_user(fx, "bob", "bob-pw", NULL);
    assert_int_equal(idf_login(fx, "bob", "bob-pw", NULL, NULL, &msg), YUN_E_INVALID);
    idf_assert_contains(msg, "no default project");
    free(TAKE_PTR(msg));

    /* Wrong password, unknown user: the same answer, and an unknown user
     * costs a verification too. */
    assert_int_equal(idf_login(fx, "alice", "wrong", NULL, NULL, &msg), YUN_E_AUTH);
    idf_assert_contains(msg, "user name or password is wrong");
    free(TAKE_PTR(msg));
    int64_t t0 = yun_now_ms();
    assert_int_equal(idf_login(fx, "mallory", "whatever", NULL, NULL, &msg), YUN_E_AUTH);
    assert_true(yun_now_ms() - t0 >= 50);
    idf_assert_contains(msg, "user name or password is wrong");

    /* Validation before any work. */
    free(TAKE_PTR(msg));
    assert_int_equal(idf_login(fx, "", "x", NULL, NULL, &msg), YUN_E_INVALID);

    /* Logins are audited, successes and failures. */
    Yun__AuditListRequest aq = YUN__AUDIT_LIST_REQUEST__INIT;
    aq.operation = (char *)"login";
    Yun__AuditListReply *ay = NULL;
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_AUDIT_LIST, &aq.base,
                              &yun__audit_list_reply__descriptor, &ay, NULL), 0);
    size_t ok = 0, failed = 0;
    for (size_t i = 0; i < ay->n_records; i++) {
        if (strcmp(ay->records[i]->result, "ok") == 0)
            ok++;
        else
            failed++;
    }
    assert_int_equal(ok, 2);
    assert_int_equal(failed, 6);
    assert_string_equal(ay->records[0]->user, p.alice);
    assert_string_equal(ay->records[0]->project, p.p1);
    assert_string_equal(ay->records[0]->target, "alice");
    idf_free_msg(ay);
    /* By user name. */
    aq.user = (char *)"alice";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_AUDIT_LIST, &aq.base,
                              &yun__audit_list_reply__descriptor, &ay, NULL), 0);
    assert_true(ay->n_records >= 5);
    idf_free_msg(ay);
}

/* Counts audit records with 'result' for 'operation'. */
static size_t
audited(struct idf *fx, const char *operation, const char *result)
{
    Yun__AuditListRequest q = YUN__AUDIT_LIST_REQUEST__INIT;
    q.operation = (char *)operation;
    Yun__AuditListReply *y = NULL;
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_AUDIT_LIST, &q.base,
                              &yun__audit_list_reply__descriptor, &y, NULL), 0);
    size_t n = 0;
    for (size_t i = 0; i < y->n_records; i++)
        n += strcmp(y->records[i]->result, result) == 0;
    idf_free_msg(y);
    return n;
}

static void
test_token_errors(void **state)
{
    struct idf *fx = *state;
    _cleanup_free_ char *good = idf_mint(fx, "u1", "p1", "member,reader");
    assert_int_equal(idf_use(fx, good, NULL), 0);

    /* One character changed. */
    _cleanup_free_ char *bad = strdup(good);
    size_t mid = strlen(bad) / 2;
    bad[mid] = bad[mid] == 'A' ? 'B' : 'A';
    _cleanup_free_ char *msg = NULL;
    assert_int_equal(idf_use(fx, bad, &msg), YUN_E_TOKEN_INVALID);
    idf_assert_contains(msg, "is not valid");
    free(TAKE_PTR(msg));
    assert_int_equal(idf_use(fx, "garbage!", NULL), YUN_E_TOKEN_INVALID);

    /* Issued with a key of another repository. */
    char other[1300];
    snprintf(other, sizeof other, "%s/other-keys", fx->dir);
    assert_int_equal(yun_token_keys_create(other), 0);
    struct yun_token_keys *ok = NULL;
    assert_int_equal(yun_token_keys_load(other, &ok), 0);
    struct yun_token c = { .user_id = "u1", .project_id = "p1", .n_roles = 1,
                           .roles = { "admin" }, .issued_at_us = yun_wall_us() };
    c.expires_at_us = c.issued_at_us + 60000000;
    _cleanup_free_ char *foreign = NULL;
    assert_int_equal(yun_token_issue(ok, &c, &foreign, NULL), 0);
    yun_token_keys_free(ok);
    assert_int_equal(idf_use(fx, foreign, &msg), YUN_E_TOKEN_KEY);
    idf_assert_contains(msg, "no longer holds");
    free(TAKE_PTR(msg));

    /* Expired: issued two hours ago for one. */
    _cleanup_free_ char *old = idf_mint_at(fx, "u1", "p1", "member", yun_wall_us() - 7200000000ull,
                                           3600);
    assert_int_equal(idf_use(fx, old, &msg), YUN_E_TOKEN_EXPIRED);
    idf_assert_contains(msg, "has expired");
    free(TAKE_PTR(msg));

    /* Revoked: logged out. Another token of the same user stays good. */
    _cleanup_free_ char *other_token = idf_mint(fx, "u1", "p1", "member,reader");
    Yun__LogoutRequest lq = YUN__LOGOUT_REQUEST__INIT;
    assert_int_equal(idf_call_token(fx, "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, good,
                                    YUN__OP__OP_LOGOUT, &lq.base, NULL, NULL, NULL), 0);
    assert_int_equal(idf_use(fx, good, &msg), YUN_E_TOKEN_REVOKED);
    idf_assert_contains(msg, "has been revoked");
    free(TAKE_PTR(msg));
    assert_int_equal(idf_use(fx, other_token, NULL), 0);

    /* No token: only login and ping. */
    assert_int_equal(idf_use(fx, NULL, &msg), YUN_E_DENIED);
    idf_assert_contains(msg, "Authentication required");
    Yun__PingRequest pq = YUN__PING_REQUEST__INIT;
    assert_int_equal(idf_call_token(fx, "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, NULL,
                                    YUN__OP__OP_PING, &pq.base, NULL, NULL, NULL), 0);
    /* A ping with a token must carry a good one. */
    assert_int_equal(idf_call_token(fx, "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, bad,
                                    YUN__OP__OP_PING, &pq.base, NULL, NULL, NULL),
                     YUN_E_TOKEN_INVALID);
    /* An agent's token is not looked at: agents act by their key. */
    assert_int_equal(idf_call_token(fx, "host1", YUN__PEER_RECORD__KIND__KIND_AGENT, bad,
                                    YUN__OP__OP_PING, &pq.base, NULL, NULL, NULL), 0);

    /* Each refusal is audited with its own code. */
    assert_int_equal(audited(fx, "image.list", "YUN_E_TOKEN_INVALID"), 2);
    assert_int_equal(audited(fx, "image.list", "YUN_E_TOKEN_KEY"), 1);
    assert_int_equal(audited(fx, "image.list", "YUN_E_TOKEN_EXPIRED"), 1);
    assert_int_equal(audited(fx, "image.list", "YUN_E_TOKEN_REVOKED"), 1);
    assert_int_equal(audited(fx, "image.list", "YUN_E_DENIED"), 1);
    assert_int_equal(audited(fx, "logout", "ok"), 1);
}

static void
test_rotation(void **state)
{
    struct idf *fx = *state;
    _cleanup_free_ char *t = idf_mint(fx, "u1", "p1", "reader");
    assert_int_equal(idf_use(fx, t, NULL), 0);

    /* One rotation: the token's key is a secondary now, still good. The
     * cron notices the directory changed. */
    assert_int_equal(yun_token_keys_rotate(fx->keys, fx->s.cfg.token_max_active_keys), 0);
    sched_identity_cron(&fx->s);
    idf_reload_keys_copy(fx);
    assert_int_equal(idf_use(fx, t, NULL), 0);
    _cleanup_free_ char *t2 = idf_mint(fx, "u1", "p1", "reader");
    assert_int_equal(idf_use(fx, t2, NULL), 0);

    /* Two: its key is gone; the token of the first rotation lives on. */
    assert_int_equal(yun_token_keys_rotate(fx->keys, fx->s.cfg.token_max_active_keys), 0);
    assert_int_equal(sched_identity_reload_keys(&fx->s), 0);
    assert_int_equal(idf_use(fx, t, NULL), YUN_E_TOKEN_KEY);
    assert_int_equal(idf_use(fx, t2, NULL), 0);

    /* A broken repository keeps the keys loaded. */
    char path[1300];
    snprintf(path, sizeof path, "%s/0", fx->keys);
    assert_int_equal(chmod(path, 0644), 0);
    assert_true(sched_identity_reload_keys(&fx->s) < 0);
    assert_int_equal(idf_use(fx, t2, NULL), 0);
}

/* Moves the lockout of 'user' into the past. */
static void
expire_lockout(struct idf *fx, const char *user)
{
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    Yun__UserRecord *u = NULL;
    assert_int_equal(sched_user_find(txn, user, &u), 0);
    assert_true(u->locked_until_us > yun_wall_us());
    u->locked_until_us = yun_wall_us() - 1;
    assert_int_equal(sched_user_put(txn, u), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
    yun__user_record__free_unpacked(u, NULL);
}

static void
test_lockout(void **state)
{
    struct idf *fx = *state;
    _cleanup_(people_done) struct people p = { 0 };
    make_people(fx, &p);
    fx->s.cfg.lockout_attempts = 3;

    _cleanup_free_ char *msg = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(idf_login(fx, "alice", "wrong", NULL, NULL, &msg), YUN_E_AUTH);
        free(TAKE_PTR(msg));
    }
    /* Locked: the right password is refused too, and says why. */
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, NULL, &msg), YUN_E_AUTH);
    idf_assert_contains(msg, "locked until");
    free(TAKE_PTR(msg));
    Yun__UserRef q = YUN__USER_REF__INIT;
    q.user = (char *)"alice";
    Yun__UserReply *y = NULL;
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_SHOW, &q.base,
                              &yun__user_reply__descriptor, &y, NULL), 0);
    assert_true(y->user->locked_until_us > yun_wall_us() + 14 * 60000000ull);
    assert_int_equal(y->user->failed_logins, 0);
    idf_free_msg(y);

    /* The lockout ends; failures start counting from zero again. */
    expire_lockout(fx, "alice");
    assert_int_equal(idf_login(fx, "alice", "wrong", NULL, NULL, NULL), YUN_E_AUTH);
    _cleanup_free_ char *t = NULL;
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, &t, NULL), 0);
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_SHOW, &q.base,
                              &yun__user_reply__descriptor, &y, NULL), 0);
    assert_int_equal(y->user->failed_logins, 0);
    assert_true(y->user->last_login_us > 0);
    idf_free_msg(y);

    /* An admin can lift a lockout. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(idf_login(fx, "alice", "wrong", NULL, NULL, NULL), YUN_E_AUTH);
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, NULL, NULL), YUN_E_AUTH);
    Yun__UserSetRequest s = YUN__USER_SET_REQUEST__INIT;
    s.user = (char *)"alice";
    s.unlock = true;
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_SET, &s.base, NULL, NULL, NULL),
                     0);
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, NULL, NULL), 0);
}

static void
set_enabled(struct idf *fx, const char *user, bool enabled)
{
    Yun__UserSetRequest s = YUN__USER_SET_REQUEST__INIT;
    s.user = (char *)user;
    s.set_enabled = true;
    s.enabled = enabled;
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_SET, &s.base, NULL, NULL, NULL),
                     0);
}

static void
test_disabled_user(void **state)
{
    struct idf *fx = *state;
    _cleanup_(people_done) struct people p = { 0 };
    make_people(fx, &p);
    _cleanup_free_ char *t = NULL, *msg = NULL;
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, &t, NULL), 0);
    _cleanup_free_ char *other = idf_mint(fx, "someone", p.p1, "member");

    set_enabled(fx, "alice", false);
    assert_int_equal(idf_use(fx, t, NULL), YUN_E_TOKEN_REVOKED);
    assert_int_equal(idf_use(fx, other, NULL), 0);
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, NULL, &msg), YUN_E_AUTH);
    idf_assert_contains(msg, "disabled");
    free(TAKE_PTR(msg));
    /* Without the password, a disabled user looks like any failure. */
    assert_int_equal(idf_login(fx, "alice", "wrong", NULL, NULL, &msg), YUN_E_AUTH);
    idf_assert_contains(msg, "user name or password is wrong");

    set_enabled(fx, "alice", true);
    _cleanup_free_ char *t2 = NULL;
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, &t2, NULL), 0);
    assert_int_equal(idf_use(fx, t2, NULL), 0);
    /* The old token stays revoked. */
    assert_int_equal(idf_use(fx, t, NULL), YUN_E_TOKEN_REVOKED);

    /* An admin cannot disable itself by mistake. */
    Yun__UserSetRequest s = YUN__USER_SET_REQUEST__INIT;
    s.user = (char *)p.alice;
    s.set_enabled = true;
    const struct who alice = { "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, p.alice, p.p1,
                               "admin,member,reader" };
    assert_int_equal(idf_call(fx, &alice, YUN__OP__OP_USER_SET, &s.base, NULL, NULL, NULL),
                     YUN_E_CONFLICT);
}

static void
test_password_change(void **state)
{
    struct idf *fx = *state;
    _cleanup_(people_done) struct people p = { 0 };
    make_people(fx, &p);
    _cleanup_free_ char *t1 = NULL, *t2 = NULL;
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, &t1, NULL), 0);
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, &t2, NULL), 0);
    _cleanup_free_ char *bystander = idf_mint(fx, "bob", p.p1, "member");

    Yun__UserSetRequest s = YUN__USER_SET_REQUEST__INIT;
    char pw[] = "new-alice-pw";
    s.user = (char *)"alice";
    s.password = pw;
    Yun__UserReply *y = NULL;
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_SET, &s.base,
                              &yun__user_reply__descriptor, &y, NULL), 0);
    assert_string_equal(y->user->password_hash, "");
    assert_true(y->user->password_changed_us > 0);
    idf_free_msg(y);

    /* Every token of alice issued before is revoked; others are not. */
    assert_int_equal(idf_use(fx, t1, NULL), YUN_E_TOKEN_REVOKED);
    assert_int_equal(idf_use(fx, t2, NULL), YUN_E_TOKEN_REVOKED);
    assert_int_equal(idf_use(fx, bystander, NULL), 0);
    assert_int_equal(idf_login(fx, "alice", "alice-pw", NULL, NULL, NULL), YUN_E_AUTH);
    _cleanup_free_ char *t3 = NULL;
    assert_int_equal(idf_login(fx, "alice", "new-alice-pw", NULL, &t3, NULL), 0);
    assert_int_equal(idf_use(fx, t3, NULL), 0);
    assert_int_equal(audited(fx, "user.set", "ok"), 1);
}

static void
test_role_removal(void **state)
{
    struct idf *fx = *state;
    _cleanup_(people_done) struct people p = { 0 };
    make_people(fx, &p);
    idf_role(fx, YUN__OP__OP_ROLE_ADD, "reader", "alice", "p2");
    _cleanup_free_ char *t1 = NULL, *t2 = NULL, *msg = NULL;
    assert_int_equal(idf_login(fx, "alice", "alice-pw", "p1", &t1, NULL), 0);
    assert_int_equal(idf_login(fx, "alice", "alice-pw", "p2", &t2, NULL), 0);

    idf_role(fx, YUN__OP__OP_ROLE_REMOVE, "member", "alice", "p1");
    assert_int_equal(idf_use(fx, t1, NULL), YUN_E_TOKEN_REVOKED);
    assert_int_equal(idf_use(fx, t2, NULL), 0);
    assert_int_equal(idf_login(fx, "alice", "alice-pw", "p1", NULL, &msg), YUN_E_DENIED);
    free(TAKE_PTR(msg));

    /* Removing a role that is not there. */
    Yun__RoleAssignmentRequest q = YUN__ROLE_ASSIGNMENT_REQUEST__INIT;
    q.role = (char *)"admin";
    q.user = (char *)"alice";
    q.project = (char *)"p2";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_ROLE_REMOVE, &q.base, NULL, NULL, &msg),
                     -ENOENT);
    free(TAKE_PTR(msg));
    q.role = (char *)"owner";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_ROLE_ADD, &q.base, NULL, NULL, &msg),
                     YUN_E_INVALID);

    /* The assignments left, by user and by project. */
    Yun__RoleAssignmentListRequest lq = YUN__ROLE_ASSIGNMENT_LIST_REQUEST__INIT;
    lq.user = (char *)"alice";
    Yun__RoleAssignmentListReply *y = NULL;
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_ROLE_ASSIGNMENT_LIST, &lq.base,
                              &yun__role_assignment_list_reply__descriptor, &y, NULL), 0);
    assert_int_equal(y->n_assignments, 1);
    assert_string_equal(y->assignments[0]->role, "reader");
    assert_string_equal(y->assignments[0]->project_name, "p2");
    assert_string_equal(y->assignments[0]->user_name, "alice");
    idf_free_msg(y);
    lq.user = (char *)"";
    lq.project = (char *)"p1";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_ROLE_ASSIGNMENT_LIST, &lq.base,
                              &yun__role_assignment_list_reply__descriptor, &y, NULL), 0);
    assert_int_equal(y->n_assignments, 0);
    idf_free_msg(y);

    /* Deleting the project revokes its tokens and drops its roles. */
    Yun__ProjectRef pr = YUN__PROJECT_REF__INIT;
    pr.project = (char *)"p2";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_PROJECT_DELETE, &pr.base, NULL, NULL,
                              NULL), 0);
    assert_int_equal(idf_use(fx, t2, NULL), YUN_E_TOKEN_REVOKED);
    lq.project = (char *)"";
    lq.user = (char *)"alice";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_ROLE_ASSIGNMENT_LIST, &lq.base,
                              &yun__role_assignment_list_reply__descriptor, &y, NULL), 0);
    assert_int_equal(y->n_assignments, 0);
    idf_free_msg(y);
}

static void
test_revocations_persist(void **state)
{
    struct idf *fx = *state;
    _cleanup_free_ char *t = idf_mint(fx, "u1", "p1", "reader");
    _cleanup_free_ char *u = idf_mint(fx, "u2", "p1", "reader");
    Yun__LogoutRequest lq = YUN__LOGOUT_REQUEST__INIT;
    assert_int_equal(idf_call_token(fx, "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, t,
                                    YUN__OP__OP_LOGOUT, &lq.base, NULL, NULL, NULL), 0);
    assert_int_equal(sched_identity_revocations(&fx->s), 1);

    /* A restart loads the stored list. */
    sched_identity_done(&fx->s);
    assert_int_equal(sched_identity_init(&fx->s), 0);
    assert_int_equal(sched_identity_revocations(&fx->s), 1);
    assert_int_equal(idf_use(fx, t, NULL), YUN_E_TOKEN_REVOKED);
    assert_int_equal(idf_use(fx, u, NULL), 0);

    /* Another process (yun-scheduler set-password) stores a revocation:
     * the cron picks it up. */
    _cleanup_free_ char *p1 = idf_project(fx, "p1");
    _cleanup_free_ char *id = idf_user(fx, "carol", "carol-pw", "p1");
    idf_role(fx, YUN__OP__OP_ROLE_ADD, "member", "carol", "p1");
    _cleanup_free_ char *ct = NULL;
    assert_int_equal(idf_login(fx, "carol", "carol-pw", NULL, &ct, NULL), 0);
    struct sched other = { .cfg = fx->s.cfg, .store = fx->s.store };
    assert_int_equal(sched_identity_set_password(&other, "carol", "carol-new"), 0);
    assert_int_equal(idf_use(fx, ct, NULL), 0);
    sched_identity_cron(&fx->s);
    assert_int_equal(idf_use(fx, ct, NULL), YUN_E_TOKEN_REVOKED);
    assert_int_equal(idf_login(fx, "carol", "carol-new", NULL, NULL, NULL), 0);
    assert_int_equal(sched_identity_set_password(&other, "nobody", "x"), -ENOENT);
}

static void
test_keypairs(void **state)
{
    struct idf *fx = *state;
    const struct who u1 = { "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, "u1", "p1",
                            "member,reader" };
    const struct who u2 = { "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, "u2", "p1",
                            "member,reader" };
    Yun__KeypairCreateRequest cq = YUN__KEYPAIR_CREATE_REQUEST__INIT;
    cq.name = (char *)"demo";
    Yun__KeypairReply *y = NULL;
    assert_int_equal(idf_call(fx, &u1, YUN__OP__OP_KEYPAIR_CREATE, &cq.base,
                              &yun__keypair_reply__descriptor, &y, NULL), 0);
    assert_string_equal(y->keypair->type, "ssh-ed25519");
    assert_non_null(strstr(y->keypair->private_key, "BEGIN OPENSSH PRIVATE KEY"));
    assert_int_equal(strncmp(y->keypair->fingerprint, "SHA256:", 7), 0);
    /* The public key's fingerprint is the one recorded. */
    struct yun_keypair back = { 0 };
    assert_int_equal(yun_keypair_import(y->keypair->public_key, &back, NULL), 0);
    assert_string_equal(back.fingerprint, y->keypair->fingerprint);
    idf_free_msg(y);

    /* Shown without the private key; another user has its own namespace. */
    Yun__KeypairRef rq = YUN__KEYPAIR_REF__INIT;
    rq.name = (char *)"demo";
    assert_int_equal(idf_call(fx, &u1, YUN__OP__OP_KEYPAIR_SHOW, &rq.base,
                              &yun__keypair_reply__descriptor, &y, NULL), 0);
    assert_string_equal(y->keypair->private_key, "");
    assert_string_equal(y->keypair->fingerprint, back.fingerprint);
    idf_free_msg(y);
    assert_int_equal(idf_call(fx, &u2, YUN__OP__OP_KEYPAIR_SHOW, &rq.base, NULL, NULL, NULL),
                     -ENOENT);
    Yun__KeypairImportRequest iq = YUN__KEYPAIR_IMPORT_REQUEST__INIT;
    iq.name = (char *)"demo";
    iq.public_key = back.public_key;
    assert_int_equal(idf_call(fx, &u2, YUN__OP__OP_KEYPAIR_IMPORT, &iq.base,
                              &yun__keypair_reply__descriptor, &y, NULL), 0);
    assert_string_equal(y->keypair->fingerprint, back.fingerprint);
    idf_free_msg(y);
    assert_int_equal(idf_call(fx, &u2, YUN__OP__OP_KEYPAIR_IMPORT, &iq.base, NULL, NULL, NULL),
                     -EEXIST);
    iq.name = (char *)"bad";
    iq.public_key = (char *)"ssh-ed25519 AAAAnotakey";
    _cleanup_free_ char *msg = NULL;
    assert_int_equal(idf_call(fx, &u2, YUN__OP__OP_KEYPAIR_IMPORT, &iq.base, NULL, NULL, &msg),
                     YUN_E_INVALID);
    yun_keypair_done(&back);

    /* Naming another user: admins only. */
    rq.user = (char *)"u1";
    assert_int_equal(idf_call(fx, &u2, YUN__OP__OP_KEYPAIR_SHOW, &rq.base, NULL, NULL, NULL),
                     YUN_E_DENIED);

    /* RSA on request; list; delete. */
    cq.name = (char *)"rsa";
    cq.type = (char *)"rsa";
    cq.bits = 2048;
    assert_int_equal(idf_call(fx, &u1, YUN__OP__OP_KEYPAIR_CREATE, &cq.base,
                              &yun__keypair_reply__descriptor, &y, NULL), 0);
    assert_string_equal(y->keypair->type, "ssh-rsa");
    assert_int_equal(y->keypair->bits, 2048);
    idf_free_msg(y);
    cq.bits = 1024;
    assert_int_equal(idf_call(fx, &u1, YUN__OP__OP_KEYPAIR_CREATE, &cq.base, NULL, NULL, NULL),
                     YUN_E_INVALID);
    Yun__KeypairListRequest lq = YUN__KEYPAIR_LIST_REQUEST__INIT;
    Yun__KeypairListReply *ly = NULL;
    assert_int_equal(idf_call(fx, &u1, YUN__OP__OP_KEYPAIR_LIST, &lq.base,
                              &yun__keypair_list_reply__descriptor, &ly, NULL), 0);
    assert_int_equal(ly->n_keypairs, 2);
    assert_string_equal(ly->keypairs[0]->name, "demo");
    assert_string_equal(ly->keypairs[1]->name, "rsa");
    idf_free_msg(ly);
    rq.user = (char *)"";
    assert_int_equal(idf_call(fx, &u1, YUN__OP__OP_KEYPAIR_DELETE, &rq.base, NULL, NULL, NULL),
                     0);
    assert_int_equal(idf_call(fx, &u1, YUN__OP__OP_KEYPAIR_DELETE, &rq.base, NULL, NULL, NULL),
                     -ENOENT);
    assert_int_equal(idf_call(fx, &u2, YUN__OP__OP_KEYPAIR_SHOW, &rq.base, NULL, NULL, NULL),
                     0);
}

static void
test_bootstrap(void **state)
{
    struct idf *fx = *state;
    bool created = false;
    assert_int_equal(sched_identity_bootstrap(&fx->s, NULL, &created), 0);
    assert_false(created);
    assert_int_equal(idf_login(fx, "admin", "root-pw", NULL, NULL, NULL), YUN_E_AUTH);
    assert_int_equal(sched_identity_bootstrap(&fx->s, "root-pw", &created), 0);
    assert_true(created);
    assert_int_equal(sched_identity_bootstrap(&fx->s, "other-pw", &created), 0);
    assert_false(created);
    _cleanup_free_ char *t = NULL;
    assert_int_equal(idf_login(fx, "admin", "root-pw", NULL, &t, NULL), 0);
    /* A real admin: host and identity operations. */
    Yun__ProjectListRequest q = YUN__PROJECT_LIST_REQUEST__INIT;
    Yun__ProjectListReply *y = NULL;
    assert_int_equal(idf_call_token(fx, "ops", YUN__PEER_RECORD__KIND__KIND_OPERATOR, t,
                                    YUN__OP__OP_PROJECT_LIST, &q.base,
                                    &yun__project_list_reply__descriptor, &y, NULL), 0);
    assert_int_equal(y->n_projects, 1);
    assert_string_equal(y->projects[0]->name, "admin");
    idf_free_msg(y);
    /* set-password bootstraps a missing admin too. */
    assert_int_equal(sched_identity_set_password(&fx->s, "admin", "next-pw"), 0);
    assert_int_equal(idf_use(fx, t, NULL), YUN_E_TOKEN_REVOKED);
    assert_int_equal(idf_login(fx, "admin", "next-pw", NULL, NULL, NULL), 0);
    /* The admin project keeps its name and stays. */
    Yun__ProjectRef pr = YUN__PROJECT_REF__INIT;
    pr.project = (char *)"admin";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_PROJECT_DELETE, &pr.base, NULL, NULL,
                              NULL), YUN_E_CONFLICT);
}

static void
test_validation(void **state)
{
    struct idf *fx = *state;
    _cleanup_free_ char *msg = NULL;
    Yun__ProjectCreateRequest pq = YUN__PROJECT_CREATE_REQUEST__INIT;
    static const char *const bad_names[] = {
        "", " lead", "trail ", "tab\there", "0b1c2d3e-0000-4000-8000-000000000000",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
        pq.name = (char *)bad_names[i];
        assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_PROJECT_CREATE, &pq.base, NULL,
                                  NULL, NULL), YUN_E_INVALID);
    }
    pq.name = (char *)"Ünïcode ok";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_PROJECT_CREATE, &pq.base, NULL, NULL,
                              NULL), 0);
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_PROJECT_CREATE, &pq.base, NULL, NULL,
                              NULL), -EEXIST);
    Yun__UserCreateRequest uq = YUN__USER_CREATE_REQUEST__INIT;
    uq.name = (char *)"dave";
    uq.email = (char *)"not-an-address";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_CREATE, &uq.base, NULL, NULL,
                              &msg), YUN_E_INVALID);
    free(TAKE_PTR(msg));
    uq.email = (char *)"";
    uq.default_project = (char *)"nope";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_CREATE, &uq.base, NULL, NULL,
                              &msg), -ENOENT);
    free(TAKE_PTR(msg));
    /* No password: the user exists but cannot log in. */
    uq.default_project = (char *)"Ünïcode ok";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_CREATE, &uq.base, NULL, NULL,
                              NULL), 0);
    assert_int_equal(idf_login(fx, "dave", "anything", NULL, NULL, NULL), YUN_E_AUTH);
    /* Rename, and the name index follows. */
    Yun__UserSetRequest sq = YUN__USER_SET_REQUEST__INIT;
    sq.user = (char *)"dave";
    sq.name = (char *)"david";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_SET, &sq.base, NULL, NULL, NULL),
                     0);
    Yun__UserRef ur = YUN__USER_REF__INIT;
    ur.user = (char *)"dave";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_SHOW, &ur.base, NULL, NULL, NULL),
                     -ENOENT);
    ur.user = (char *)"david";
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_SHOW, &ur.base, NULL, NULL, NULL),
                     0);
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_DELETE, &ur.base, NULL, NULL,
                              NULL), 0);
    assert_int_equal(idf_call(fx, &IDF_ROOT, YUN__OP__OP_USER_SHOW, &ur.base, NULL, NULL, NULL),
                     -ENOENT);
}

int
main(void)
{
    if (!getenv("YUN_TEST_VERBOSE"))
        yun_log_max_level = YUN_LOG_WARN;
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, idf_setup, idf_teardown)
        T(test_login),
        T(test_token_errors),
        T(test_rotation),
        T(test_lockout),
        T(test_disabled_user),
        T(test_password_change),
        T(test_role_removal),
        T(test_revocations_persist),
        T(test_keypairs),
        T(test_bootstrap),
        T(test_validation),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
