/* SPDX-License-Identifier: Apache-2.0
 * test-identity-policy.c: the policy matrix. Every row of the dispatch
 * table (scheduler/dispatch.c) is called through sched_dispatch() by every
 * kind of caller: an admin, a member of the project that owns the object,
 * a member of another project, a reader of the owning project, an
 * operator client with no token, and an agent. Each call must be allowed
 * or denied as the policy below says, which is written here a second time
 * on purpose: changing who may call an operation takes changing both.
 * A denial must be the dispatcher's (its sentence, YUN_E_DENIED) and must
 * leave an audit record. For image operations on a private image of the
 * owning project, a member of another project must get "not found", never
 * "forbidden".
 *
 * And the table must be whole: every value of the protocol's Op enum has
 * a row or is listed as intentionally unused, and every row has a policy
 * here. */
#include "identity-fixture.h"

#include "dispatch-priv.h"
#include "host.pb-c.h"
#include "keypair.h"

/* The policy, once more. */
enum want {
    W_ANYONE,          /* ping: every caller */
    W_LOGIN,           /* operator clients, with or without a token */
    W_AGENT,           /* agents only */
    W_READER,          /* reader, member, admin */
    W_READER_OR_AGENT, /* ... and agents */
    W_MEMBER,          /* member, admin */
    W_ADMIN,           /* admin */
};

static const struct {
    Yun__Op op;
    enum want want;
} policy[] = {
    { YUN__OP__OP_PING, W_ANYONE },
    { YUN__OP__OP_HOST_REGISTER, W_AGENT },
    { YUN__OP__OP_HOST_HEARTBEAT, W_AGENT },
    { YUN__OP__OP_HOST_LIST, W_ADMIN },
    { YUN__OP__OP_HOST_SHOW, W_ADMIN },
    { YUN__OP__OP_HOST_SET_ENABLED, W_ADMIN },
    { YUN__OP__OP_IMAGE_CREATE, W_MEMBER },
    { YUN__OP__OP_IMAGE_UPLOAD, W_MEMBER },
    { YUN__OP__OP_IMAGE_DOWNLOAD, W_READER_OR_AGENT },
    { YUN__OP__OP_IMAGE_LIST, W_READER },
    { YUN__OP__OP_IMAGE_SHOW, W_READER_OR_AGENT },
    { YUN__OP__OP_IMAGE_UPDATE, W_MEMBER },
    { YUN__OP__OP_IMAGE_DELETE, W_MEMBER },
    { YUN__OP__OP_IMAGE_DEACTIVATE, W_MEMBER },
    { YUN__OP__OP_IMAGE_REACTIVATE, W_MEMBER },
    { YUN__OP__OP_IMAGE_MEMBER_ADD, W_MEMBER },
    { YUN__OP__OP_IMAGE_MEMBER_REMOVE, W_MEMBER },
    { YUN__OP__OP_IMAGE_MEMBER_LIST, W_READER },
    { YUN__OP__OP_IMAGE_MEMBER_SET_STATUS, W_MEMBER },
    { YUN__OP__OP_AUDIT_LIST, W_ADMIN },
    /* Compute (scheduler/compute.h). */
    { YUN__OP__OP_FLAVOR_CREATE, W_ADMIN },
    { YUN__OP__OP_FLAVOR_LIST, W_READER },
    { YUN__OP__OP_FLAVOR_SHOW, W_READER },
    { YUN__OP__OP_FLAVOR_DELETE, W_ADMIN },
    { YUN__OP__OP_SERVER_CREATE, W_MEMBER },
    { YUN__OP__OP_SERVER_LIST, W_READER },
    { YUN__OP__OP_SERVER_SHOW, W_READER },
    { YUN__OP__OP_SERVER_DELETE, W_MEMBER },
    { YUN__OP__OP_SERVER_ACTION, W_MEMBER },
    { YUN__OP__OP_SERVER_CONSOLE, W_READER },
    { YUN__OP__OP_SERVER_METADATA, W_MEMBER },
    { YUN__OP__OP_SERVER_GROUP_CREATE, W_MEMBER },
    { YUN__OP__OP_SERVER_GROUP_LIST, W_READER },
    { YUN__OP__OP_SERVER_GROUP_SHOW, W_READER },
    { YUN__OP__OP_SERVER_GROUP_DELETE, W_MEMBER },
    { YUN__OP__OP_SERVER_SNAPSHOT, W_MEMBER },
    { YUN__OP__OP_INSTANCE_EVENT, W_AGENT },
    { YUN__OP__OP_INSTANCE_SYNC, W_AGENT },
    { YUN__OP__OP_SNAPSHOT_UPLOAD, W_AGENT },
    /* Identity. */
    { YUN__OP__OP_LOGIN, W_LOGIN },
    { YUN__OP__OP_LOGOUT, W_READER },
    { YUN__OP__OP_PROJECT_CREATE, W_ADMIN },
    { YUN__OP__OP_PROJECT_LIST, W_ADMIN },
    { YUN__OP__OP_PROJECT_SHOW, W_ADMIN },
    { YUN__OP__OP_PROJECT_SET, W_ADMIN },
    { YUN__OP__OP_PROJECT_DELETE, W_ADMIN },
    { YUN__OP__OP_USER_CREATE, W_ADMIN },
    { YUN__OP__OP_USER_LIST, W_ADMIN },
    { YUN__OP__OP_USER_SHOW, W_ADMIN },
    { YUN__OP__OP_USER_SET, W_ADMIN },
    { YUN__OP__OP_USER_DELETE, W_ADMIN },
    { YUN__OP__OP_ROLE_ADD, W_ADMIN },
    { YUN__OP__OP_ROLE_REMOVE, W_ADMIN },
    { YUN__OP__OP_ROLE_ASSIGNMENT_LIST, W_ADMIN },
    { YUN__OP__OP_KEYPAIR_CREATE, W_MEMBER },
    { YUN__OP__OP_KEYPAIR_IMPORT, W_MEMBER },
    { YUN__OP__OP_KEYPAIR_LIST, W_READER },
    { YUN__OP__OP_KEYPAIR_SHOW, W_READER },
    { YUN__OP__OP_KEYPAIR_DELETE, W_MEMBER },
    /* Networks. */
    { YUN__OP__OP_NETWORK_CREATE, W_MEMBER },
    { YUN__OP__OP_NETWORK_LIST, W_READER },
    { YUN__OP__OP_NETWORK_SHOW, W_READER },
    { YUN__OP__OP_NETWORK_UPDATE, W_MEMBER },
    { YUN__OP__OP_NETWORK_DELETE, W_MEMBER },
    { YUN__OP__OP_SUBNET_CREATE, W_MEMBER },
    { YUN__OP__OP_SUBNET_LIST, W_READER },
    { YUN__OP__OP_SUBNET_SHOW, W_READER },
    { YUN__OP__OP_SUBNET_UPDATE, W_MEMBER },
    { YUN__OP__OP_SUBNET_DELETE, W_MEMBER },
    { YUN__OP__OP_PORT_CREATE, W_MEMBER },
    { YUN__OP__OP_PORT_LIST, W_READER },
    { YUN__OP__OP_PORT_SHOW, W_READER },
    { YUN__OP__OP_PORT_UPDATE, W_MEMBER },
    { YUN__OP__OP_PORT_DELETE, W_MEMBER },
    { YUN__OP__OP_SECURITY_GROUP_CREATE, W_MEMBER },
    { YUN__OP__OP_SECURITY_GROUP_LIST, W_READER },
    { YUN__OP__OP_SECURITY_GROUP_SHOW, W_READER },
    { YUN__OP__OP_SECURITY_GROUP_UPDATE, W_MEMBER },
    { YUN__OP__OP_SECURITY_GROUP_DELETE, W_MEMBER },
    { YUN__OP__OP_SECURITY_GROUP_RULE_CREATE, W_MEMBER },
    { YUN__OP__OP_SECURITY_GROUP_RULE_DELETE, W_MEMBER },
    { YUN__OP__OP_SECURITY_GROUP_RULE_LIST, W_READER },
};

enum persona {
    P_NONE,         /* operator client, no token */
    P_AGENT,        /* agent peer */
    P_READER,       /* reader of the owning project */
    P_MEMBER_OTHER, /* member of another project */
    P_MEMBER,       /* member of the owning project */
    P_ADMIN,        /* admin */
    _P_MAX,
};

static const char *const persona_names[] = {
    "no token", "agent", "reader", "member of another project", "member", "admin",
};

static bool
wanted(enum want w, enum persona p)
{
    switch (w) {
    case W_ANYONE:
        return true;
    case W_LOGIN:
        return p != P_AGENT;
    case W_AGENT:
        return p == P_AGENT;
    case W_READER:
        return p >= P_READER;
    case W_READER_OR_AGENT:
        return p >= P_READER || p == P_AGENT;
    case W_MEMBER:
        return p >= P_MEMBER_OTHER;
    case W_ADMIN:
        return p == P_ADMIN;
    }
    return false;
}

static const struct sched_op *
row_of(Yun__Op op)
{
    for (size_t i = 0; i < sched_ops_count; i++)
        if (sched_ops[i].op == op)
            return &sched_ops[i];
    return NULL;
}

static bool
is_unused(Yun__Op op)
{
    for (size_t i = 0; i < sched_ops_unused_count; i++)
        if (sched_ops_unused[i] == op)
            return true;
    return false;
}

/* Every op of the protocol has a row or is unused on purpose; every row
 * has its policy here and names somebody. */
static void
test_table_is_whole(void **state)
{
    const ProtobufCEnumDescriptor *d = &yun__op__descriptor;
    for (unsigned i = 0; i < d->n_values; i++) {
        Yun__Op op = (Yun__Op)d->values[i].value;
        const struct sched_op *row = row_of(op);
        if (!row && !is_unused(op))
            fail_msg("%s has no row in the dispatch table (and no policy): add one, or list "
                     "it in sched_ops_unused", d->values[i].name);
        if (row && is_unused(op))
            fail_msg("%s has a row but is listed as unused", d->values[i].name);
    }
    for (size_t i = 0; i < sched_ops_count; i++) {
        const struct sched_op *row = &sched_ops[i];
        if (!row->allow)
            fail_msg("row '%s' lets nobody in", row->name);
        bool known = false;
        for (size_t k = 0; k < ELEMENTSOF(policy); k++)
            known |= policy[k].op == row->op;
        if (!known)
            fail_msg("row '%s' has no policy in this test: state who may call it", row->name);
        for (size_t k = i + 1; k < sched_ops_count; k++)
            if (sched_ops[k].op == row->op)
                fail_msg("op of '%s' has two rows", row->name);
    }
}

/* The callers, and the objects the requests name. */
struct matrix {
    struct idf *fx;
    char *p1, *p2, *pv;  /* owning, other, and a victim project */
    char *pubkey;        /* an OpenSSH public key line to import */
    unsigned n;          /* unique names */
};

static struct who
persona(const struct matrix *m, enum persona p)
{
    const int op = YUN__PEER_RECORD__KIND__KIND_OPERATOR;
    switch (p) {
    case P_NONE:
        return (struct who){ "ops", op, NULL, NULL, NULL };
    case P_AGENT:
        return (struct who){ "host1", YUN__PEER_RECORD__KIND__KIND_AGENT, NULL, NULL, NULL };
    case P_READER:
        return (struct who){ "ops", op, "u-reader", m->p1, "reader" };
    case P_MEMBER_OTHER:
        return (struct who){ "ops", op, "u-other", m->p2, "member,reader" };
    case P_MEMBER:
        return (struct who){ "ops", op, "u-member", m->p1, "member,reader" };
    default:
        return (struct who){ "ops", op, "u-admin", "p-admin", "admin,member,reader" };
    }
}

/* A fresh private image owned by p1 (queued); its id. */
static char *
p1_image(struct matrix *m)
{
    const struct who owner = persona(m, P_MEMBER);
    Yun__ImageCreateRequest q = YUN__IMAGE_CREATE_REQUEST__INIT;
    char name[32];
    snprintf(name, sizeof name, "img-%u", ++m->n);
    q.name = name;
    q.disk_format = (char *)"raw";
    Yun__ImageReply *y = NULL;
    assert_int_equal(idf_call(m->fx, &owner, YUN__OP__OP_IMAGE_CREATE, &q.base,
                              &yun__image_reply__descriptor, &y, NULL), 0);
    char *id = strdup(y->image->id);
    idf_free_msg(y);
    return id;
}

/* Sets the string field 'name' of 'msg' when it has one. */
static void
set_field(ProtobufCMessage *msg, const char *name, char *value)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, name);
    if (f && f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED)
        *(char **)((char *)msg + f->offset) = value;
}

/* Strings a request points at, freed after the call. */
struct strs {
    char *v[4];
};

static char *
keep(struct strs *s, char *v)
{
    for (size_t i = 0; i < ELEMENTSOF(s->v); i++)
        if (!s->v[i])
            return s->v[i] = v;
    fail_msg("too many strings");
    return v;
}

static void
strs_done(struct strs *s)
{
    for (size_t i = 0; i < ELEMENTSOF(s->v); i++)
        free(s->v[i]);
}

/* Fills a request of 'row' that names p1's objects (or the victims). */
static void
build_request(struct matrix *m, const struct sched_op *row, ProtobufCMessage *msg,
              struct strs *s)
{
    char name[32];
    snprintf(name, sizeof name, "n-%u", ++m->n);
    switch (row->op) {
    case YUN__OP__OP_LOGIN:
        set_field(msg, "user", "nobody");
        set_field(msg, "password", keep(s, strdup("not-a-password")));
        break;
    case YUN__OP__OP_HOST_REGISTER:
        set_field(msg, "name", "host1");
        break;
    case YUN__OP__OP_HOST_SHOW:
    case YUN__OP__OP_HOST_SET_ENABLED:
        set_field(msg, "host", "nohost");
        break;
    case YUN__OP__OP_IMAGE_CREATE:
    case YUN__OP__OP_PROJECT_CREATE:
        set_field(msg, "name", keep(s, strdup(name)));
        set_field(msg, "disk_format", "raw");
        break;
    case YUN__OP__OP_USER_CREATE:
        set_field(msg, "name", keep(s, strdup(name)));
        set_field(msg, "password", keep(s, strdup("a-password")));
        break;
    case YUN__OP__OP_PROJECT_SHOW:
    case YUN__OP__OP_PROJECT_SET:
    case YUN__OP__OP_PROJECT_DELETE:
        set_field(msg, "project", "pv");
        break;
    case YUN__OP__OP_USER_SHOW:
    case YUN__OP__OP_USER_SET:
    case YUN__OP__OP_USER_DELETE:
        set_field(msg, "user", "victim");
        break;
    case YUN__OP__OP_ROLE_ADD:
    case YUN__OP__OP_ROLE_REMOVE:
        set_field(msg, "role", "reader");
        set_field(msg, "user", "victim");
        set_field(msg, "project", "pv");
        break;
    case YUN__OP__OP_KEYPAIR_CREATE:
    case YUN__OP__OP_KEYPAIR_IMPORT:
        set_field(msg, "name", keep(s, strdup(name)));
        set_field(msg, "public_key", m->pubkey);
        break;
    case YUN__OP__OP_KEYPAIR_SHOW:
    case YUN__OP__OP_KEYPAIR_DELETE:
        set_field(msg, "name", "k1");
        break;
    default:
        break;
    }
    /* Image operations name a private image of p1; sharing names p2. */
    if (row->target_field && strcmp(row->target_field, "image") == 0) {
        set_field(msg, "image", keep(s, p1_image(m)));
        set_field(msg, "project", m->p2);
        set_field(msg, "status", "accepted");
    }
}

/* The dispatcher's own denials, by their sentence. */
static bool
is_policy_denial(int err, const char *msg)
{
    return err == YUN_E_DENIED && msg &&
           (strstr(msg, "Authentication required") || strstr(msg, "Policy does not allow") ||
            strstr(msg, "may not call"));
}

static void
matrix_setup(struct matrix *m, struct idf *fx)
{
    m->fx = fx;
    m->p1 = idf_project(fx, "p1");
    m->p2 = idf_project(fx, "p2");
    m->pv = idf_project(fx, "pv");
    free(idf_user(fx, "victim", NULL, NULL));
    struct yun_keypair kp = { 0 };
    assert_int_equal(yun_keypair_create(YUN_KEYPAIR_ED25519, 0, "matrix", &kp), 0);
    m->pubkey = strdup(kp.public_key);
    yun_keypair_done(&kp);
}

static void
matrix_done(struct matrix *m)
{
    free(m->p1);
    free(m->p2);
    free(m->pv);
    free(m->pubkey);
}

static void
test_matrix(void **state)
{
    struct idf *fx = *state;
    _cleanup_(matrix_done) struct matrix m = { 0 };
    matrix_setup(&m, fx);

    size_t calls = 0, denials = 0;
    for (size_t k = 0; k < ELEMENTSOF(policy); k++) {
        const struct sched_op *row = row_of(policy[k].op);
        assert_non_null(row);
        for (enum persona p = 0; p < _P_MAX; p++) {
            const struct who w = persona(&m, p);
            bool want = wanted(policy[k].want, p);
            /* The table's decision alone. */
            unsigned roles = 0;
            char list[64];
            snprintf(list, sizeof list, "%s", w.roles ? w.roles : "");
            char *save = NULL;
            for (char *r = strtok_r(list, ",", &save); r; r = strtok_r(NULL, ",", &save))
                roles |= sched_role_from_string(r);
            if (sched_op_allows(row, w.kind, w.roles != NULL, roles) != want)
                fail_msg("table: '%s' by %s should be %s", row->name, persona_names[p],
                         want ? "allowed" : "denied");

            /* And through the dispatcher. */
            ProtobufCMessage *msg = calloc(1, row->request->sizeof_message);
            assert_non_null(msg);
            protobuf_c_message_init(row->request, msg);
            _cleanup_(strs_done) struct strs s = { 0 };
            build_request(&m, row, msg, &s);
            size_t audit_before = idf_audit_count(fx);
            _cleanup_free_ char *err_msg = NULL;
            int err = idf_call(fx, &w, row->op, msg, NULL, NULL, &err_msg);
            free(msg);
            calls++;
            bool denied = is_policy_denial(err, err_msg);
            if (denied == want)
                fail_msg("dispatch: '%s' by %s was %s (%s: %s)", row->name, persona_names[p],
                         denied ? "denied" : "allowed", yun_errname(err),
                         err_msg ? err_msg : "ok");
            if (denied) {
                denials++;
                if (idf_audit_count(fx) <= audit_before)
                    fail_msg("the denial of '%s' to %s left no audit record", row->name,
                             persona_names[p]);
            }
            /* Another project's private image does not exist for it. */
            if (want && row->target_field && strcmp(row->target_field, "image") == 0) {
                if (p == P_MEMBER_OTHER && err != YUN_E_NOIMAGE)
                    fail_msg("'%s' by a member of another project: %s, not 'not found' "
                             "(%s)", row->name, yun_errname(err), err_msg ? err_msg : "ok");
                if ((p == P_MEMBER || p == P_ADMIN) && err == YUN_E_NOIMAGE)
                    fail_msg("'%s' by %s: the image should be visible", row->name,
                             persona_names[p]);
            }
        }
    }
    assert_int_equal(calls, ELEMENTSOF(policy) * _P_MAX);
    print_message("policy matrix: %zu rows x %d callers, %zu denials\n", ELEMENTSOF(policy),
                  _P_MAX, denials);
}

/* Project isolation, the other way round: what a member of p1 made, a
 * member of p2 lists not, shows not, and changes not. */
static void
test_isolation(void **state)
{
    struct idf *fx = *state;
    _cleanup_(matrix_done) struct matrix m = { 0 };
    matrix_setup(&m, fx);
    _cleanup_free_ char *id = p1_image(&m);
    const struct who other = persona(&m, P_MEMBER_OTHER);
    const struct who reader = persona(&m, P_READER);
    Yun__ImageListRequest lq = YUN__IMAGE_LIST_REQUEST__INIT;
    Yun__ImageListReply *ly = NULL;
    assert_int_equal(idf_call(fx, &other, YUN__OP__OP_IMAGE_LIST, &lq.base,
                              &yun__image_list_reply__descriptor, &ly, NULL), 0);
    assert_int_equal(ly->n_images, 0);
    idf_free_msg(ly);
    assert_int_equal(idf_call(fx, &reader, YUN__OP__OP_IMAGE_LIST, &lq.base,
                              &yun__image_list_reply__descriptor, &ly, NULL), 0);
    assert_int_equal(ly->n_images, 1);
    idf_free_msg(ly);
    Yun__ImageRef rq = YUN__IMAGE_REF__INIT;
    rq.image = id;
    _cleanup_free_ char *msg = NULL;
    assert_int_equal(idf_call(fx, &other, YUN__OP__OP_IMAGE_DELETE, &rq.base, NULL, NULL, &msg),
                     YUN_E_NOIMAGE);
    idf_assert_contains(msg, "not found");
    free(TAKE_PTR(msg));
    /* A reader sees it but may not change it: the table says so first. */
    assert_int_equal(idf_call(fx, &reader, YUN__OP__OP_IMAGE_DELETE, &rq.base, NULL, NULL,
                              &msg), YUN_E_DENIED);
    idf_assert_contains(msg, "Policy does not allow");
}

int
main(void)
{
    if (!getenv("YUN_TEST_VERBOSE"))
        yun_log_max_level = YUN_LOG_ERR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_is_whole),
        cmocka_unit_test_setup_teardown(test_matrix, idf_setup, idf_teardown),
        cmocka_unit_test_setup_teardown(test_isolation, idf_setup, idf_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
