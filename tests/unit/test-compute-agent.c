/* SPDX-License-Identifier: Apache-2.0
 * test-compute-agent.c: the scheduler's client of the agents' command
 * sockets (scheduler/agent-client.c) against a real bus server standing in
 * for an agent, on one loop over ipc:// in the test's directory: requests
 * are sealed with the agent's derived key by sender "scheduler", go one at
 * a time in order, end through their callbacks (never inside the send),
 * time out when the agent is silent (and the next request still goes
 * through), fail cleanly without an address or with a revoked key. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "cleanup.h"
#include "compute.h"
#include "err.h"
#include "loop.h"
#include "rpc.h"
#include "scheduler.h"
#include "seal.h"
#include "store.h"
#include "util.h"
#include "compute.pb-c.h"
#include "host.pb-c.h"
#include "yun.pb-c.h"

#define AGENT "hosta"
#define MAX_DONE 64

enum agent_mode { MODE_ACK, MODE_ERROR, MODE_SILENT, MODE_LATE };

struct done {
    int error;
    char message[256];
    char power[32];
    char instance[64];
};

struct fixture {
    char dir[1024];
    char url[1200];
    struct sched s;
    struct yun_bus_server *agent;
    enum agent_mode mode;
    uint32_t agent_epoch;         /* the epoch the fake agent accepts */
    int served;
    uint64_t late_handle;         /* MODE_LATE: the request answered later */
    char senders[MAX_DONE][YUN_PEER_ID_MAX + 1];
    char served_ids[MAX_DONE][64];
    struct done done[MAX_DONE];
    int n_done;
    char host_id[YUN_UUID_STR_SIZE];
};

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 ? -errno : 0;
}

/* --- the fake agent -------------------------------------------------------- */

static int
agent_key(const char *key_id, uint32_t epoch, struct yun_key *ret, int *ret_role, void *data)
{
    struct fixture *fx = data;
    if (strcmp(key_id, AGENT) != 0 || epoch != fx->agent_epoch)
        return YUN_E_UNKNOWN_PEER;
    *ret_role = 1;
    return yun_key_derive(fx->s.secret, sizeof fx->s.secret, key_id, epoch, ret);
}

static int
agent_serve(const struct yun_bus_peer *peer, const uint8_t *body, size_t size,
            uint8_t **ret_reply, size_t *ret_size, void *data)
{
    struct fixture *fx = data;
    Yun__Request *q = yun__request__unpack(NULL, size, body);
    assert_non_null(q);
    assert_true(fx->served < MAX_DONE);
    snprintf(fx->senders[fx->served], sizeof fx->senders[0], "%s", peer->sender);
    Yun__AgentSpawnRequest *sp = yun__agent_spawn_request__unpack(NULL, q->payload.len,
                                                                  q->payload.data);
    assert_non_null(sp);
    snprintf(fx->served_ids[fx->served], sizeof fx->served_ids[0], "%s",
             sp->instance ? sp->instance->id : "");
    yun__agent_spawn_request__free_unpacked(sp, NULL);
    yun__request__free_unpacked(q, NULL);
    fx->served++;
    if (fx->mode == MODE_SILENT || fx->mode == MODE_LATE) {
        uint64_t handle;
        assert_int_equal(yun_bus_server_defer(fx->agent, &handle), 0);
        fx->late_handle = handle;
        return YUN_BUS_DEFERRED;   /* never answered, or by the test */
    }
    if (fx->mode == MODE_ERROR)
        return yun_rpc_pack_reply(-EIO, "The hypervisor said no.", NULL, ret_reply, ret_size);
    Yun__AgentInstanceState st = YUN__AGENT_INSTANCE_STATE__INIT;
    st.power_state = (char *)"running";
    Yun__AgentAck ack = YUN__AGENT_ACK__INIT;
    ack.state = &st;
    return yun_rpc_pack_reply(0, "", &ack.base, ret_reply, ret_size);
}

static void
on_done(struct sched *s, const struct sched_agent_result *res, void *data)
{
    struct fixture *fx = *(struct fixture **)data;
    assert_true(fx->n_done < MAX_DONE);
    struct done *d = &fx->done[fx->n_done++];
    d->error = res->error;
    snprintf(d->message, sizeof d->message, "%s", res->error_message);
    snprintf(d->instance, sizeof d->instance, "%s", ((char *)data) + sizeof(struct fixture *));
    const Yun__AgentAck *ack = (const Yun__AgentAck *)res->reply;
    snprintf(d->power, sizeof d->power, "%s",
             ack && ack->state ? ack->state->power_state : "");
}

/* Sends a spawn of instance 'id'; the callback's data names it. */
static int
send_spawn(struct fixture *fx, const char *host_id, const char *id)
{
    Yun__InstanceRecord inst = YUN__INSTANCE_RECORD__INIT;
    inst.id = (char *)id;
    Yun__AgentSpawnRequest q = YUN__AGENT_SPAWN_REQUEST__INIT;
    q.instance = &inst;
    char *data = calloc(1, sizeof fx + 64);
    memcpy(data, &fx, sizeof fx);
    snprintf(data + sizeof fx, 64, "%s", id);
    return sched_agent_send(&fx->s, host_id, YUN__OP__OP_AGENT_SPAWN, &q.base,
                            &yun__agent_ack__descriptor, NULL, id, on_done, data, free);
}

static void
pump_until(struct fixture *fx, int n_done, int limit_ms)
{
    int64_t end = yun_now_ms() + limit_ms;
    while (fx->n_done < n_done && yun_now_ms() < end)
        assert_true(yun_loop_run_once(fx->s.loop, 50) >= 0);
    assert_int_equal(fx->n_done, n_done);
}

static void
put_host(struct fixture *fx, const char *id, const char *name, const char *address)
{
    struct yun_txn *txn = NULL;
    assert_int_equal(yun_txn_begin(fx->s.store, true, &txn), 0);
    Yun__HostRecord h = YUN__HOST_RECORD__INIT;
    h.id = (char *)id;
    h.name = (char *)name;
    h.address = (char *)address;
    h.state = (char *)"up";
    assert_int_equal(yun_txn_put_msg(txn, "hosts", id, &h.base), 0);
    assert_int_equal(yun_txn_commit(txn), 0);
}

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *base = getenv("YUN_TEST_DIR");
    if (!base || !*base)
        base = "/tmp";
    if (yun_mkdir_p(base, 0755) < 0)
        return -1;
    snprintf(fx->dir, sizeof fx->dir, "%s/agent-client.XXXXXX", base);
    if (!mkdtemp(fx->dir))
        return -1;
    char *err = NULL;
    if (yun_cfg_load(sched_config_table, sched_config_table_size, &fx->s.cfg, NULL, true, NULL,
                     NULL, &err) < 0) {
        free(err);
        return -1;
    }
    free(fx->s.cfg.state_dir);
    if (asprintf(&fx->s.cfg.state_dir, "%s/state", fx->dir) < 0)
        return -1;
    fx->s.cfg.compute_agent_timeout_ms = 2000;
    fx->s.cron = -1;
    memcpy(fx->s.secret, "compute-agent-test-secret-32byte", YUN_SECRET_SIZE);
    assert_int_equal(sched_store_open(&fx->s), 0);
    assert_int_equal(yun_loop_new(&fx->s.loop), 0);
    assert_int_equal(sched_peer_issue(&fx->s, AGENT, "agent", false, &fx->agent_epoch), 0);
    snprintf(fx->url, sizeof fx->url, "ipc://%s/agent.sock", fx->dir);
    struct yun_bus_server_options o = {
        .url = fx->url, .self_id = AGENT, .key = agent_key, .serve = agent_serve, .data = fx,
    };
    assert_int_equal(yun_bus_server_new(fx->s.loop, &o, &fx->agent), 0);
    assert_int_equal(yun_uuid_new(fx->host_id), 0);
    put_host(fx, fx->host_id, AGENT, fx->url);
    assert_int_equal(sched_compute_init(&fx->s), 0);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    sched_compute_done(&fx->s);
    fx->agent = yun_bus_server_free(fx->agent);
    fx->s.loop = yun_loop_free(fx->s.loop);
    fx->s.store = yun_store_close(fx->s.store);
    yun_cfg_done(sched_config_table, sched_config_table_size, &fx->s.cfg);
    int r = nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return r;
}

/* --- tests ----------------------------------------------------------------------- */

static void
test_in_order_sealed_by_scheduler(void **state)
{
    struct fixture *fx = *state;
    const char *ids[] = { "i-one", "i-two", "i-three" };
    for (size_t k = 0; k < 3; k++)
        assert_int_equal(send_spawn(fx, fx->host_id, ids[k]), 0);
    /* Never inside the send. */
    assert_int_equal(fx->n_done, 0);
    assert_true(sched_agent_busy(&fx->s, fx->host_id, "i-three"));
    assert_false(sched_agent_busy(&fx->s, fx->host_id, "i-four"));
    pump_until(fx, 3, 10000);
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(fx->done[k].error, 0);
        assert_string_equal(fx->done[k].instance, ids[k]);
        assert_string_equal(fx->done[k].power, "running");
        assert_string_equal(fx->served_ids[k], ids[k]);
        assert_string_equal(fx->senders[k], "scheduler");
    }
    assert_false(sched_agent_busy(&fx->s, fx->host_id, "i-three"));
}

static void
test_agent_error(void **state)
{
    struct fixture *fx = *state;
    fx->mode = MODE_ERROR;
    assert_int_equal(send_spawn(fx, fx->host_id, "i-err"), 0);
    pump_until(fx, 1, 10000);
    assert_int_equal(fx->done[0].error, -EIO);
    assert_string_equal(fx->done[0].message, "The hypervisor said no.");
}

static void
test_timeout_then_next(void **state)
{
    struct fixture *fx = *state;
    fx->s.cfg.compute_agent_timeout_ms = 300;
    fx->mode = MODE_SILENT;
    int64_t start = yun_now_ms();
    assert_int_equal(send_spawn(fx, fx->host_id, "i-slow"), 0);
    assert_int_equal(send_spawn(fx, fx->host_id, "i-next"), 0);
    pump_until(fx, 1, 5000);
    assert_int_equal(fx->done[0].error, YUN_E_UNREACHABLE);
    assert_true(strstr(fx->done[0].message, "did not answer") != NULL);
    assert_true(yun_now_ms() - start >= 290);
    /* The agent answers again: the next request goes through. */
    fx->mode = MODE_ACK;
    pump_until(fx, 2, 5000);
    assert_int_equal(fx->done[1].error, 0);
    assert_string_equal(fx->done[1].instance, "i-next");
}

static void
test_late_reply_dropped(void **state)
{
    struct fixture *fx = *state;
    fx->s.cfg.compute_agent_timeout_ms = 300;
    fx->mode = MODE_LATE;
    assert_int_equal(send_spawn(fx, fx->host_id, "i-late"), 0);
    pump_until(fx, 1, 5000);
    assert_int_equal(fx->done[0].error, YUN_E_UNREACHABLE);
    /* The agent answers after the deadline: the reply is read and
     * dropped, and the socket does not stay readable (no busy loop). */
    Yun__AgentAck ack = YUN__AGENT_ACK__INIT;
    uint8_t *body = NULL;
    size_t size = 0;
    assert_int_equal(yun_rpc_pack_reply(0, "", &ack.base, &body, &size), 0);
    assert_int_equal(yun_bus_server_reply(fx->agent, fx->late_handle, body, size), 0);
    free(body);
    int busy = 0;
    int64_t end = yun_now_ms() + 400;
    while (yun_now_ms() < end)
        busy += yun_loop_run_once(fx->s.loop, 50) > 0;
    assert_true(busy < 10);
    assert_int_equal(fx->n_done, 1);
    fx->mode = MODE_ACK;
    assert_int_equal(send_spawn(fx, fx->host_id, "i-after"), 0);
    pump_until(fx, 2, 5000);
    assert_int_equal(fx->done[1].error, 0);
}

static void
test_no_address_no_host_revoked(void **state)
{
    struct fixture *fx = *state;
    char other[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(other), 0);
    put_host(fx, other, "hostb", "");
    assert_int_equal(send_spawn(fx, other, "i-nowhere"), 0);
    assert_int_equal(fx->n_done, 0);
    pump_until(fx, 1, 5000);
    assert_int_equal(fx->done[0].error, YUN_E_UNREACHABLE);
    assert_true(strstr(fx->done[0].message, "no command address") != NULL);

    char ghost[YUN_UUID_STR_SIZE];
    assert_int_equal(yun_uuid_new(ghost), 0);
    assert_int_equal(send_spawn(fx, ghost, "i-ghost"), 0);
    pump_until(fx, 2, 5000);
    assert_int_equal(fx->done[1].error, YUN_E_NOHOST);

    /* A revoked key: the scheduler uses the new epoch at once, which
     * this agent (holding the old key) refuses. */
    uint32_t epoch;
    assert_int_equal(sched_peer_revoke(&fx->s, AGENT, &epoch), 0);
    assert_int_equal(send_spawn(fx, fx->host_id, "i-revoked"), 0);
    pump_until(fx, 3, 5000);
    assert_int_equal(fx->done[2].error, YUN_E_UNKNOWN_PEER);
    fx->agent_epoch = epoch;
    assert_int_equal(send_spawn(fx, fx->host_id, "i-again"), 0);
    pump_until(fx, 4, 5000);
    assert_int_equal(fx->done[3].error, 0);
}

static void
test_queue_limit_and_shutdown(void **state)
{
    struct fixture *fx = *state;
    fx->s.cfg.compute_agent_queue_max = 2;
    fx->mode = MODE_SILENT;
    assert_int_equal(send_spawn(fx, fx->host_id, "q1"), 0);
    assert_int_equal(send_spawn(fx, fx->host_id, "q2"), 0);
    assert_int_equal(send_spawn(fx, fx->host_id, "q3"), -EBUSY);
    /* Teardown drops what is queued or in flight without calling back
     * (and without leaks: the sanitizer checks). */
    assert_true(yun_loop_run_once(fx->s.loop, 100) >= 0);
    assert_int_equal(fx->n_done, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_in_order_sealed_by_scheduler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_then_next, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_reply_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_address_no_host_revoked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_limit_and_shutdown, setup, teardown),
    };
    const char *filter = getenv("YUN_TEST_FILTER");
    if (filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
