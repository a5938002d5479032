/* SPDX-License-Identifier: Apache-2.0
 * test-pool.c: unit tests of common/pool.c: work runs on the workers, not
 * on the loop's thread; results come back on the loop, each exactly once;
 * the bound refuses jobs beyond it; freeing the pool delivers finished
 * jobs and cancels those never started. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "pool.h"

#define PUMP_LIMIT_MS 30000

struct job {
    int value;
    pthread_t loop_thread;
    atomic_bool ran_off_loop;
    int result;
    int done_calls;
    atomic_bool *gate;   /* when set, the work waits for it */
    int *order;          /* where done writes its value */
    size_t *n_order;
};

static int
work(void *data)
{
    struct job *j = data;
    j->ran_off_loop = !pthread_equal(pthread_self(), j->loop_thread);
    while (j->gate && !atomic_load(j->gate))
        usleep(1000);
    return j->value * 2;
}

static void
done(int result, void *data)
{
    struct job *j = data;
    j->result = result;
    j->done_calls++;
    if (j->order)
        j->order[(*j->n_order)++] = j->value;
}

static void
pump(struct yun_loop *loop, struct job *jobs, size_t n)
{
    int64_t end = yun_now_ms() + PUMP_LIMIT_MS;
    for (;;) {
        size_t finished = 0;
        for (size_t i = 0; i < n; i++)
            finished += jobs[i].done_calls;
        if (finished == n || yun_now_ms() > end)
            break;
        assert_true(yun_loop_run_once(loop, 10) >= 0);
    }
}

static void
test_results_on_loop(void **state)
{
    struct yun_loop *loop = NULL;
    struct yun_pool *pool = NULL;
    assert_int_equal(yun_loop_new(&loop), 0);
    assert_int_equal(yun_pool_new(loop, 2, 64, &pool), 0);
    struct job jobs[40];
    for (int i = 0; i < 40; i++) {
        jobs[i] = (struct job){ .value = i, .loop_thread = pthread_self() };
        assert_int_equal(yun_pool_submit(pool, work, done, &jobs[i]), 0);
    }
    assert_int_equal(yun_pool_jobs(pool), 40);
    /* Nothing comes back before the loop runs. */
    usleep(20000);
    for (int i = 0; i < 40; i++)
        assert_int_equal(jobs[i].done_calls, 0);
    pump(loop, jobs, 40);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].result, 2 * i);
        assert_true(jobs[i].ran_off_loop);
    }
    assert_int_equal(yun_pool_jobs(pool), 0);
    yun_pool_free(pool);
    yun_loop_free(loop);
}

static void *
open_gate(void *arg)
{
    usleep(50000);
    atomic_store((atomic_bool *)arg, true);
    return NULL;
}

static void
test_bound_and_cancel(void **state)
{
    struct yun_loop *loop = NULL;
    struct yun_pool *pool = NULL;
    assert_int_equal(yun_loop_new(&loop), 0);
    assert_int_equal(yun_pool_new(loop, 1, 3, &pool), 0);
    atomic_bool gate = false;
    int order[4];
    size_t n_order = 0;
    struct job jobs[4];
    for (int i = 0; i < 4; i++)
        jobs[i] = (struct job){ .value = i + 1, .loop_thread = pthread_self(), .gate = &gate,
                                .order = order, .n_order = &n_order };
    for (int i = 0; i < 3; i++)
        assert_int_equal(yun_pool_submit(pool, work, done, &jobs[i]), 0);
    /* Three in the pool: a fourth is refused, and never called back. */
    assert_int_equal(yun_pool_submit(pool, work, done, &jobs[3]), -EBUSY);
    assert_int_equal(yun_pool_submit(pool, NULL, done, &jobs[3]), -EINVAL);
    /* The one worker holds the first job: stop the pool while it runs,
     * and let it finish from another thread meanwhile. */
    while (!jobs[0].ran_off_loop)
        usleep(1000);
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, open_gate, &gate), 0);
    pool = yun_pool_free(pool);
    assert_int_equal(pthread_join(opener, NULL), 0);
    /* The first ran and reports its result; the others never started. */
    assert_int_equal(jobs[0].done_calls, 1);
    assert_int_equal(jobs[0].result, 2);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].result, -ECANCELED);
    }
    assert_int_equal(jobs[3].done_calls, 0);
    assert_int_equal(n_order, 3);
    assert_int_equal(order[0], 1);
    yun_loop_free(loop);

    struct yun_pool *bad = NULL;
    assert_int_equal(yun_pool_new(NULL, 1, 1, &bad), -EINVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results_on_loop),
        cmocka_unit_test(test_bound_and_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
